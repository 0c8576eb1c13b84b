//! The process backend against real bubblewrap and real cgroups. Needs root
//! and `bwrap`; fails (never skips) without them.
//!
//! The runtime files are a fake language layout and the "runtime binary"
//! is a shell script: these tests exercise the backend, not `opr-runtime`.

use opr_orchestrator::process::{ProcessBackend, ProcessConfig};
use opr_orchestrator::{
    Mounts, Orchestrator, OrchestratorError, RestartPolicy, RuntimeSpec, LABEL_EXECUTOR,
    LABEL_RUNTIME_ID,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// ------------------------------------------------------------- fixture

struct Fixture {
    tmp: tempfile::TempDir,
    config: ProcessConfig,
    /// `None` only between a "crash" and the next backend.
    backend: Option<ProcessBackend>,
    /// Label value shared by this fixture's runtimes.
    executor: String,
}

fn write_file(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn fixture() -> Fixture {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests set real cgroup limits and must run as root"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tmp.path().join("runtimes");
    write_file(&rt.join("node/helpers/x.sh"), "echo helper\n");
    write_file(
        &rt.join("node/hooks/runtime.sh"),
        "OPR_RUNTIME_LANGUAGE=node\n",
    );
    write_file(&rt.join("node/src/worker.js"), "// node worker\n");
    write_file(&rt.join("python/helpers/y.sh"), "echo helper\n");
    write_file(&rt.join("python/src/worker.py"), "# python worker\n");
    let bin = tmp.path().join("bin/opr-runtime");
    write_file(&bin, "#!/bin/sh\necho opr-runtime-stub \"$@\"\n");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let executor = unique("exec");
    let config = ProcessConfig::new(tmp.path().join("state"), rt, bin, executor.clone());
    let backend = ProcessBackend::new(config.clone())
        .expect("ProcessBackend::new (is bubblewrap installed? apt-get install bubblewrap)");
    Fixture {
        tmp,
        config,
        backend: Some(backend),
        executor,
    }
}

/// A failed test leaves no processes or cgroups behind: kill what is in
/// the recorded cgroups and remove them.
impl Drop for Fixture {
    fn drop(&mut self) {
        let Ok(dirs) = std::fs::read_dir(&self.config.state_dir) else {
            return;
        };
        let cgroups: Vec<PathBuf> = dirs
            .filter_map(|d| {
                let text = std::fs::read_to_string(d.ok()?.path().join("runtime.json")).ok()?;
                serde_json::from_str::<serde_json::Value>(&text).ok()
            })
            .flat_map(|v| {
                ["memory", "cpu", "pids", "cpuacct"]
                    .iter()
                    .filter_map(|k| v["cgroup"][k].as_str().map(PathBuf::from))
                    .collect::<Vec<_>>()
            })
            .collect();
        self.backend.take();
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in cgroups {
            while dir.exists() && Instant::now() < deadline {
                for pid in cgroup_pids(&dir) {
                    // SAFETY: plain syscall.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                if std::fs::remove_dir(&dir).is_err() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

impl Fixture {
    fn b(&self) -> &ProcessBackend {
        self.backend.as_ref().expect("backend")
    }

    /// A spec with its own executor folders under the fixture's tempdir.
    fn spec(&self, image: &str, command: &[&str]) -> RuntimeSpec {
        let id = unique("rt");
        let work = self.tmp.path().join("work").join(&id);
        let mounts = Mounts {
            tmp: work.join("src"),
            code: work.join("builds"),
            logs: work.join("logs"),
            logging: work.join("logging"),
            cache: None,
        };
        for d in [&mounts.tmp, &mounts.code, &mounts.logs, &mounts.logging] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        RuntimeSpec {
            name: format!("{}-{id}", self.executor),
            hostname: format!("{:032x}", fastish_hash(&id)),
            image: image.to_owned(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::from([
                ("OPEN_RUNTIMES_SECRET".to_owned(), "s3cret".to_owned()),
                ("CI".to_owned(), "true".to_owned()),
            ]),
            mounts,
            labels: BTreeMap::from([
                (LABEL_EXECUTOR.to_owned(), self.executor.clone()),
                (LABEL_RUNTIME_ID.to_owned(), id),
            ]),
            cpus: 1.0,
            memory_mb: 256,
            pids_limit: 128,
            restart: RestartPolicy::No,
            network: None,
        }
    }

    fn state_dir(&self, name: &str) -> PathBuf {
        self.config.state_dir.join(name)
    }

    /// The cgroup folders from the runtime's record.
    fn cgroup_dirs(&self, name: &str) -> Vec<PathBuf> {
        let text = std::fs::read_to_string(self.state_dir(name).join("runtime.json"))
            .expect("runtime.json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let cg = &v["cgroup"];
        let mut dirs: Vec<PathBuf> = ["memory", "cpu", "pids", "cpuacct"]
            .iter()
            .filter_map(|k| cg[k].as_str().map(PathBuf::from))
            .collect();
        dirs.dedup();
        assert!(!dirs.is_empty(), "no cgroup in record: {text}");
        dirs
    }

    fn pids_dir(&self, name: &str) -> PathBuf {
        let text = std::fs::read_to_string(self.state_dir(name).join("runtime.json"))
            .expect("runtime.json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        PathBuf::from(v["cgroup"]["pids"].as_str().expect("pids dir"))
    }

    fn memory_dir(&self, name: &str) -> PathBuf {
        let text = std::fs::read_to_string(self.state_dir(name).join("runtime.json"))
            .expect("runtime.json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        PathBuf::from(v["cgroup"]["memory"].as_str().expect("memory dir"))
    }

    async fn exec(&self, name: &str, script: &str) -> opr_orchestrator::ExecOutcome {
        self.b()
            .execute(
                name,
                &["bash".into(), "-c".into(), script.into()],
                &[],
                Some(Duration::from_secs(30)),
            )
            .await
            .expect("execute")
    }

    async fn status(&self, name: &str) -> Option<String> {
        self.b()
            .list(LABEL_EXECUTOR, &self.executor)
            .await
            .expect("list")
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.status)
    }
}

fn fastish_hash(s: &str) -> u128 {
    s.bytes()
        .fold(0x6c62272e07bb014262b821756295c58d_u128, |h, b| {
            (h ^ u128::from(b)).wrapping_mul(0x0000000001000000000000000000013B)
        })
}

const IDLE: &[&str] = &["tail", "-f", "/dev/null"];

/// Polls `f` every few ms until it holds or `limit` passes.
async fn wait_until<F: FnMut() -> bool>(limit: Duration, what: &str, mut f: F) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn http_get_status(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

fn pid_exists(pid: i32) -> bool {
    // Zombies count as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|st| st != "Z")
        })
        .unwrap_or(false)
}

fn cgroup_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

// ------------------------------------------------------------- tests

#[tokio::test]
async fn layout_inside_the_sandbox() {
    let fx = fixture();
    let spec = fx.spec("openruntimes/node:v5-22", IDLE);
    std::fs::write(spec.mounts.tmp.join("code.tar.gz"), "pkg").expect("write");
    fx.b().run(&spec).await.expect("run");

    let script = format!(
        r#"
check() {{ if eval "$2" >/dev/null 2>&1; then echo "ok $1"; else echo "FAIL $1"; fi; }}
check mounts 'test -d /mnt/code -a -d /mnt/logs -a -d /tmp/logging -a -d /mnt/telemetry'
check local-dirs 'test -d /usr/local/build -a -d /usr/local/cache'
check binary 'test -x /usr/local/bin/opr-runtime && /usr/local/bin/opr-runtime --x | grep -q stub'
check helpers 'test -f /usr/local/server/helpers/x.sh -a -f /usr/local/server/hooks/runtime.sh'
check worker 'test -f /usr/local/server/src/worker.js'
check server-ro '! touch /usr/local/server/nope'
check helpers-ro '! touch /usr/local/server/helpers/nope'
check src-ro '! touch /usr/local/server/src/nope'
check usr-ro '! touch /usr/nope'
check etc-ro '! touch /etc/nope'
check function-rw 'touch /usr/local/server/src/function/made-inside'
check build-rw 'touch /usr/local/build/b /usr/local/cache/c /mnt/telemetry/t'
check tmp-is-spec 'test "$(cat /tmp/code.tar.gz)" = pkg'
check tmp-rw 'touch /tmp/made-inside /mnt/code/made-inside /mnt/logs/l /tmp/logging/g'
check cwd 'test "$PWD" = /usr/local/server -a "$(pwd -P)" = /usr/local/server'
check hostname 'test "$(hostname)" = {hostname}'
check no-root 'test ! -e /root -a ! -e /home'
check no-state 'test ! -e {state}'
check no-runtimes 'test ! -e {runtimes}'
check server-only-own 'test "$(ls -A /usr/local/server | tr "\n" " ")" = "helpers hooks src "'
check src-only-own 'test "$(ls -A /usr/local/server/src | tr "\n" " ")" = "function worker.js "'
check no-python-worker 'test ! -e /usr/local/server/src/worker.py'
check local-only 'test "$(ls -A /usr/local | tr "\n" " ")" = "bin build cache server "'
check pid-ns 'test "$(ls /proc | grep -cE "^[0-9]+$")" -le 6'
check pid1-is-bwrap 'grep -q bwrap /proc/1/cmdline'
check no-sysadmin-cap 'test $(( 0x$(grep CapEff /proc/self/status | cut -f2) >> 21 & 1 )) = 0'
check chown-cap 'touch /tmp/own && chown 1000:1000 /tmp/own'
check python 'python3 -c "print(1)"'
"#,
        hostname = spec.hostname,
        state = fx.config.state_dir.display(),
        runtimes = fx.config.runtimes_dir.display(),
    );
    let out = fx.exec(&spec.name, &script).await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    assert!(!out.output.contains("FAIL"), "{}", out.output);
    let checks = script.lines().filter(|l| l.starts_with("check ")).count();
    assert_eq!(out.output.matches("ok ").count(), checks, "{}", out.output);
    // Writes inside land in the runtime's and the executor's host folders.
    assert!(fx
        .state_dir(&spec.name)
        .join("function/made-inside")
        .exists());
    assert!(spec.mounts.tmp.join("made-inside").exists());
    assert!(spec.mounts.code.join("made-inside").exists());
    assert!(spec.mounts.logging.join("g").exists());
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test]
async fn clean_environment() {
    let fx = fixture();
    let spec = fx.spec("node-22", IDLE);
    fx.b().run(&spec).await.expect("run");
    // env itself, not a shell: exactly the sandbox's environment.
    let out = fx
        .b()
        .execute(
            &spec.name,
            &["env".into()],
            &[("EXTRA".into(), "1".into()), ("CI".into(), "false".into())],
            Some(Duration::from_secs(10)),
        )
        .await
        .expect("execute");
    assert_eq!(out.exit_code, 0, "{}", out.output);
    let vars: BTreeMap<&str, &str> = out
        .output
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
    let port = fx.b().address(&spec.name).await.expect("address").port();
    let listen = format!("127.0.0.1:{port}");
    let expected = BTreeMap::from([
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/tmp"),
        ("LANG", "C.UTF-8"),
        ("OPR_RUNTIME_LISTEN", listen.as_str()),
        ("OPR_RUNTIME_LANGUAGE", "node"),
        ("OPEN_RUNTIMES_SECRET", "s3cret"),
        ("CI", "false"),
        ("EXTRA", "1"),
        // Set by bwrap's --chdir.
        ("PWD", "/usr/local/server"),
    ]);
    assert_eq!(vars, expected);
    // Nothing of this process's environment (cargo's variables,
    // NODE_EXTRA_CA_CERTS, ...) got in.
    for (k, _) in std::env::vars() {
        assert!(
            !vars.contains_key(k.as_str()) || expected.contains_key(k.as_str()),
            "{k} leaked"
        );
    }
    // Secrets are not on bwrap's world-readable command line.
    let record =
        std::fs::read_to_string(fx.state_dir(&spec.name).join("runtime.json")).expect("record");
    let v: serde_json::Value = serde_json::from_str(&record).expect("json");
    let pid = v["pid"].as_i64().expect("pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(!String::from_utf8_lossy(&cmdline).contains("s3cret"));
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test]
async fn runtimes_do_not_see_each_other() {
    let fx = fixture();
    let a = fx.spec("node", IDLE);
    let b = fx.spec("python-3.12", IDLE);
    fx.b().run(&a).await.expect("run a");
    fx.b().run(&b).await.expect("run b");
    let out = fx
        .exec(
            &a.name,
            "echo a > /tmp/a-secret; echo a > /usr/local/build/a; echo a > /usr/local/server/src/function/a",
        )
        .await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    let out = fx
        .exec(
            &b.name,
            "test ! -e /tmp/a-secret && test ! -e /usr/local/build/a \
             && test ! -e /usr/local/server/src/function/a \
             && test -f /usr/local/server/src/worker.py && test ! -e /usr/local/server/src/worker.js \
             && test ! -e /usr/local/server/hooks && echo isolated",
        )
        .await;
    assert_eq!(out.output, "isolated\n");
    assert!(a.mounts.tmp.join("a-secret").exists());
    fx.b().remove(&a.name).await.expect("remove");
    fx.b().remove(&b.name).await.expect("remove");
}

#[tokio::test]
async fn execute_output_exit_code_and_timeout() {
    let fx = fixture();
    let spec = fx.spec("node", IDLE);
    fx.b().run(&spec).await.expect("run");

    let out = fx.exec(&spec.name, "echo err >&2; echo out; exit 3").await;
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.output, "out\nerr\n");

    // A background process does not hold the exec open: the sandbox's pid
    // namespace ends with the command.
    let t = Instant::now();
    let out = fx.exec(&spec.name, "sleep 100 & echo started").await;
    assert_eq!(out.output, "started\n");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    let baseline = cgroup_pids(&fx.pids_dir(&spec.name)).len();
    let t = Instant::now();
    let r = fx
        .b()
        .execute(
            &spec.name,
            &["bash".into(), "-c".into(), "sleep 30 & sleep 30".into()],
            &[],
            Some(Duration::from_millis(300)),
        )
        .await;
    assert!(matches!(r, Err(OrchestratorError::Timeout)), "{r:?}");
    // Far below the 30 s the command would take (generous: the machine
    // is shared).
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // The exec's processes are gone; the runtime's remain.
    let dir = fx.pids_dir(&spec.name);
    wait_until(Duration::from_secs(5), "exec processes to go", || {
        cgroup_pids(&dir).len() <= baseline
    })
    .await;
    assert_eq!(fx.status(&spec.name).await.as_deref(), Some("running"));

    // Non-UTF-8 output is kept, lossily.
    let out = fx.exec(&spec.name, "printf 'a\\377b'").await;
    assert_eq!(out.output, "a\u{fffd}b");
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test]
async fn execute_sees_what_the_runtime_wrote() {
    let fx = fixture();
    let spec = fx.spec(
        "node",
        &[
            "bash",
            "-c",
            "echo hello > /mnt/code/from-runtime; touch /usr/local/build/from-runtime; exec tail -f /dev/null",
        ],
    );
    fx.b().run(&spec).await.expect("run");
    let marker = spec.mounts.code.join("from-runtime");
    wait_until(Duration::from_secs(5), "runtime to write", || {
        marker.exists()
    })
    .await;
    let out = fx
        .exec(
            &spec.name,
            "cat /mnt/code/from-runtime; ls /usr/local/build",
        )
        .await;
    assert_eq!(out.output, "hello\nfrom-runtime\n");
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test]
async fn memory_limit_kills_only_the_offender() {
    let fx = fixture();
    let mut spec = fx.spec("python", IDLE);
    spec.memory_mb = 64;
    let other = fx.spec("python", IDLE);
    fx.b().run(&spec).await.expect("run");
    fx.b().run(&other).await.expect("run other");
    let mem = fx.memory_dir(&spec.name);
    let limit = std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(mem.join("memory.max")))
        .expect("limit");
    assert_eq!(limit.trim(), "64000000");

    let out = fx
        .exec(
            &spec.name,
            "python3 -c 'b=bytearray(300<<20); print(len(b))'",
        )
        .await;
    assert_eq!(out.exit_code, 137, "{}", out.output);
    // The runtime and its neighbour carry on.
    assert_eq!(fx.status(&spec.name).await.as_deref(), Some("running"));
    assert_eq!(fx.exec(&spec.name, "echo alive").await.output, "alive\n");
    let out = fx
        .exec(
            &other.name,
            "python3 -c 'b=bytearray(100<<20); print(len(b))'",
        )
        .await;
    assert_eq!(out.output.trim(), (100u64 << 20).to_string());
    fx.b().remove(&spec.name).await.expect("remove");
    fx.b().remove(&other.name).await.expect("remove");
}

#[tokio::test]
async fn set_limits_applies_to_a_running_runtime() {
    let fx = fixture();
    let spec = fx.spec("python", IDLE);
    fx.b().run(&spec).await.expect("run");
    let out = fx
        .exec(
            &spec.name,
            "python3 -c 'b=bytearray(150<<20); print(len(b))'",
        )
        .await;
    assert_eq!(
        out.output.trim(),
        (150u64 << 20).to_string(),
        "fits before the change"
    );
    fx.b()
        .set_limits(&spec.name, 0.5, 64)
        .await
        .expect("set_limits");
    let mem = fx.memory_dir(&spec.name);
    let limit = std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(mem.join("memory.max")))
        .expect("limit");
    assert_eq!(limit.trim(), "64000000");
    let out = fx
        .exec(
            &spec.name,
            "python3 -c 'b=bytearray(150<<20); print(len(b))'",
        )
        .await;
    assert_eq!(out.exit_code, 137, "{}", out.output);
    assert!(fx.b().set_limits("no-such-runtime", 1.0, 64).await.is_err());
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test]
async fn host_password_hashes_are_hidden() {
    let fx = fixture();
    let spec = fx.spec("python", IDLE);
    fx.b().run(&spec).await.expect("run");
    // Masked with /dev/null on a nodev mount: unreadable, or empty.
    let out = fx.exec(&spec.name, "cat /etc/shadow /etc/gshadow 2>/dev/null | wc -c; test -r /etc/passwd && echo passwd-readable").await;
    assert_eq!(out.output, "0\npasswd-readable\n", "{}", out.output);
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test]
async fn pids_limit_stops_a_fork_bomb() {
    let fx = fixture();
    let mut spec = fx.spec("python", IDLE);
    spec.pids_limit = 32;
    fx.b().run(&spec).await.expect("run");
    let pids = fx.pids_dir(&spec.name);
    assert_eq!(
        std::fs::read_to_string(pids.join("pids.max"))
            .expect("pids.max")
            .trim(),
        "32"
    );
    let bomb = r#"
import os, time
n = 0
for i in range(200):
    try:
        pid = os.fork()
    except OSError as e:
        print("fork failed after", n, "children:", e.strerror, flush=True)
        break
    if pid == 0:
        time.sleep(20)
        os._exit(0)
    n += 1
else:
    print("no limit: forked", n)
"#;
    let t = Instant::now();
    let out = fx
        .b()
        .execute(
            &spec.name,
            &["python3".into(), "-c".into(), bomb.into()],
            &[],
            Some(Duration::from_secs(20)),
        )
        .await
        .expect("execute");
    assert!(out.output.contains("fork failed after"), "{}", out.output);
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let events = std::fs::read_to_string(pids.join("pids.events")).expect("pids.events");
    let max: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|v| v.trim().parse().ok())
        .expect("max line");
    assert!(max > 0, "{events}");
    // The children died with the exec's sandbox; the host still forks.
    wait_until(Duration::from_secs(5), "bomb children to go", || {
        cgroup_pids(&pids).len() <= 4
    })
    .await;
    assert!(std::process::Command::new("true")
        .status()
        .expect("host fork")
        .success());
    assert_eq!(fx.exec(&spec.name, "echo alive").await.output, "alive\n");
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test]
async fn remove_kills_everything_and_cleans_up() {
    let fx = fixture();
    let spec = fx.spec(
        "node",
        &[
            "bash",
            "-c",
            "sleep 1000 & sleep 1000 & exec tail -f /dev/null",
        ],
    );
    fx.b().run(&spec).await.expect("run");
    let dirs = fx.cgroup_dirs(&spec.name);
    let pids_dir = fx.pids_dir(&spec.name);
    // bwrap, its pid 1, two sleeps and tail.
    wait_until(Duration::from_secs(5), "processes to start", || {
        cgroup_pids(&pids_dir).len() >= 5
    })
    .await;
    let pids = cgroup_pids(&pids_dir);
    fx.b().remove(&spec.name).await.expect("remove");
    for pid in &pids {
        assert!(!pid_exists(*pid), "pid {pid} survived");
    }
    for d in &dirs {
        assert!(!d.exists(), "cgroup {} left", d.display());
    }
    assert!(!fx.state_dir(&spec.name).exists());
    // The executor's folders are the executor's.
    assert!(spec.mounts.tmp.exists() && spec.mounts.code.exists());
    assert_eq!(fx.status(&spec.name).await, None);
    assert!(matches!(
        fx.b().remove(&spec.name).await,
        Err(OrchestratorError::NotFound(_))
    ));
    assert!(matches!(
        fx.b().address(&spec.name).await,
        Err(OrchestratorError::NotFound(_))
    ));
    // The name can be used again.
    fx.b().run(&spec).await.expect("run again");
    fx.b().remove(&spec.name).await.expect("remove again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_during_run_waits_for_it() {
    let fx = fixture();
    let spec = fx.spec("node", IDLE);
    let (run, remove) = tokio::join!(fx.b().run(&spec), async {
        // Let run reserve the name first.
        tokio::task::yield_now().await;
        fx.b().remove(&spec.name).await
    });
    run.expect("run");
    match remove {
        // Removed after the start completed: nothing is left.
        Ok(()) => {
            assert_eq!(fx.status(&spec.name).await, None);
            assert!(!fx.state_dir(&spec.name).exists());
        }
        // Looked before the name was reserved.
        Err(OrchestratorError::NotFound(_)) => fx.b().remove(&spec.name).await.expect("remove"),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn list_by_label_and_status() {
    let fx = fixture();
    let a = fx.spec("node", IDLE);
    let b = fx.spec("node", &["true"]);
    let mut c = fx.spec("node", IDLE);
    c.labels
        .insert(LABEL_EXECUTOR.into(), "someone-else".into());
    for s in [&a, &b, &c] {
        fx.b().run(s).await.expect("run");
    }
    let b_name = b.name.clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if fx.status(&b_name).await.as_deref() == Some("exited") {
            break;
        }
        assert!(Instant::now() < deadline, "b never exited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mine = fx
        .b()
        .list(LABEL_EXECUTOR, &fx.executor)
        .await
        .expect("list");
    let got: Vec<(&str, &str)> = mine
        .iter()
        .map(|r| (r.name.as_str(), r.status.as_str()))
        .collect();
    let mut want = vec![(a.name.as_str(), "running"), (b.name.as_str(), "exited")];
    want.sort();
    assert_eq!(got, want);
    assert!(mine[0].labels.contains_key(LABEL_RUNTIME_ID));
    let by_id = fx
        .b()
        .list(LABEL_RUNTIME_ID, &c.labels[LABEL_RUNTIME_ID])
        .await
        .expect("list");
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].name, c.name);
    // An exited runtime refuses exec, like a stopped container.
    assert!(matches!(
        fx.b().execute(&b.name, &["true".into()], &[], None).await,
        Err(OrchestratorError::Failed(_))
    ));
    for s in [&a, &b, &c] {
        fx.b().remove(&s.name).await.expect("remove");
    }
}

#[tokio::test]
async fn http_server_reachable_at_address() {
    let fx = fixture();
    let spec = fx.spec(
        "python",
        &[
            "bash",
            "-c",
            "exec python3 -m http.server --bind 127.0.0.1 ${OPR_RUNTIME_LISTEN##*:}",
        ],
    );
    let t0 = Instant::now();
    fx.b().run(&spec).await.expect("run");
    let ran = t0.elapsed();
    let addr = fx.b().address(&spec.name).await.expect("address");
    assert!(addr.ip().is_loopback());
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get_status(addr) != Some(200) {
        assert!(Instant::now() < deadline, "no HTTP 200 from {addr}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!(
        "run returned after {ran:?}; HTTP 200 after {:?}",
        t0.elapsed()
    );
    fx.b().remove(&spec.name).await.expect("remove");
    assert_eq!(http_get_status(addr), None);
}

#[tokio::test]
async fn output_goes_to_logs() {
    let fx = fixture();
    let spec = fx.spec(
        "node",
        &[
            "bash",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exec tail -f /dev/null",
        ],
    );
    fx.b().run(&spec).await.expect("run");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = fx.b().logs(&spec.name, 1 << 20).await.expect("logs");
        if logs.contains("to-stdout\n") && logs.contains("to-stderr\n") {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {logs:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        fx.b().logs(&spec.name, 10).await.expect("logs"),
        "to-stderr\n"
    );
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test]
async fn restart_policies() {
    let fx = fixture();
    let count = |s: &RuntimeSpec| {
        std::fs::read_to_string(s.mounts.tmp.join("starts"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let script = |code: u8| format!("echo start >> /tmp/starts; exit {code}");
    let mut always = fx.spec("node", &["bash", "-c", &script(0)]);
    always.restart = RestartPolicy::Always;
    let mut on_failure = fx.spec("node", &["bash", "-c", &script(1)]);
    on_failure.restart = RestartPolicy::OnFailure;
    let mut on_failure_ok = fx.spec("node", &["bash", "-c", &script(0)]);
    on_failure_ok.restart = RestartPolicy::OnFailure;
    let no = fx.spec("node", &["bash", "-c", &script(1)]);
    for s in [&always, &on_failure, &on_failure_ok, &no] {
        fx.b().run(s).await.expect("run");
    }
    // Backoff 100, 200 ms: three starts within a second or so.
    wait_until(Duration::from_secs(10), "always to restart", || {
        count(&always) >= 3
    })
    .await;
    wait_until(Duration::from_secs(10), "on-failure to restart", || {
        count(&on_failure) >= 3
    })
    .await;
    // By now the others would have restarted too, had they been going to.
    assert_eq!(count(&on_failure_ok), 1);
    assert_eq!(count(&no), 1);

    // A long-running sandbox that is killed comes back with a new pid.
    let mut killed = fx.spec(
        "node",
        &[
            "bash",
            "-c",
            "echo start >> /tmp/starts; exec tail -f /dev/null",
        ],
    );
    killed.restart = RestartPolicy::Always;
    fx.b().run(&killed).await.expect("run");
    wait_until(Duration::from_secs(5), "first start", || {
        count(&killed) == 1
    })
    .await;
    let pids = fx.pids_dir(&killed.name);
    let find_tail = || {
        cgroup_pids(&pids).into_iter().find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "tail")
        })
    };
    wait_until(Duration::from_secs(5), "tail to run", || {
        find_tail().is_some()
    })
    .await;
    let tail_pid = find_tail().expect("tail pid");
    // SAFETY: plain syscall.
    unsafe { libc::kill(tail_pid, libc::SIGKILL) };
    wait_until(Duration::from_secs(10), "restart after kill", || {
        count(&killed) == 2
    })
    .await;
    let name = killed.name.clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fx.status(&name).await.as_deref() != Some("running") {
        assert!(Instant::now() < deadline, "not running again");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Removal ends the restarts.
    fx.b().remove(&always.name).await.expect("remove");
    let after = count(&always);
    tokio::time::sleep(Duration::from_millis(1500)).await; // observation window, not sync
    assert_eq!(count(&always), after);
    for s in [&on_failure, &on_failure_ok, &no, &killed] {
        fx.b().remove(&s.name).await.expect("remove");
    }
}

#[tokio::test]
async fn adoption_after_backend_restart() {
    let fx = fixture();
    let spec = fx.spec(
        "node",
        &["bash", "-c", "sleep 1000 & exec tail -f /dev/null"],
    );
    fx.b().run(&spec).await.expect("run");
    let dirs = fx.cgroup_dirs(&spec.name);
    let pids_dir = fx.pids_dir(&spec.name);
    wait_until(Duration::from_secs(5), "processes to start", || {
        cgroup_pids(&pids_dir).len() >= 4
    })
    .await;
    let pids = cgroup_pids(&pids_dir);
    let mut fx = fx;
    // The executor "crashes": its runtimes die with it, the records stay.
    fx.backend.take();
    fx.backend = Some(ProcessBackend::new(fx.config.clone()).expect("new backend"));
    assert_eq!(fx.status(&spec.name).await.as_deref(), Some("exited"));
    wait_until(Duration::from_secs(5), "sandbox to die", || {
        pids.iter().all(|p| !pid_exists(*p))
    })
    .await;
    fx.b().remove(&spec.name).await.expect("remove adopted");
    for d in &dirs {
        assert!(!d.exists(), "cgroup {} left", d.display());
    }
    assert!(!fx.state_dir(&spec.name).exists());
    assert_eq!(fx.status(&spec.name).await, None);
}

#[tokio::test]
async fn adopted_live_runtime_is_killed_on_remove() {
    // Two backends over one state folder at once (not a supported setup,
    // but remove must still clean up a sandbox it did not start).
    let fx = fixture();
    let spec = fx.spec("node", IDLE);
    fx.b().run(&spec).await.expect("run");
    let second = ProcessBackend::new(fx.config.clone()).expect("second backend");
    let mine = second
        .list(LABEL_EXECUTOR, &fx.executor)
        .await
        .expect("list");
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].status, "running");
    let dirs = fx.cgroup_dirs(&spec.name);
    second.remove(&spec.name).await.expect("remove");
    for d in &dirs {
        assert!(!d.exists(), "cgroup {} left", d.display());
    }
    assert_eq!(fx.status(&spec.name).await.as_deref(), Some("exited"));
}

#[tokio::test]
async fn stats_report_cpu_and_memory() {
    let fx = fixture();
    let mut spec = fx.spec("node", &["bash", "-c", "while :; do :; done"]);
    spec.cpus = 0.5;
    fx.b().run(&spec).await.expect("run");
    let first = fx.b().stats().await.expect("stats");
    let s = first.iter().find(|s| s.name == spec.name).expect("entry");
    assert!(s.memory_bytes.is_some_and(|m| m > 0), "{s:?}");
    // Sample over ~1 s of wall time; the quota keeps it at most 50 %.
    let deadline = Instant::now() + Duration::from_secs(10);
    let start = Instant::now();
    let mut last = None;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if start.elapsed() < Duration::from_millis(1000) {
            continue;
        }
        let st = fx.b().stats().await.expect("stats");
        last = st
            .into_iter()
            .find(|s| s.name == spec.name)
            .and_then(|s| s.cpu_percent);
        break;
    }
    let cpu = last.expect("cpu percent");
    // Above zero (it spins), under the 50 % quota plus sampling noise. No
    // tighter lower bound: on a shared 2-core machine the loop may get
    // little CPU.
    assert!(cpu > 0.0 && cpu < 65.0, "cpu {cpu}");
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test]
async fn images_and_errors() {
    let fx = fixture();
    fx.b()
        .ensure_image("openruntimes/node:v5-22")
        .await
        .expect("node");
    fx.b().ensure_image("python-3.12").await.expect("python");
    let e = fx
        .b()
        .ensure_image("openruntimes/php:v5-8.3")
        .await
        .expect_err("php");
    assert_eq!(
        e.to_string(),
        "Missing image \"openruntimes/php:v5-8.3\" and failed to pull it."
    );
    let spec = fx.spec("openruntimes/php:v5-8.3", IDLE);
    assert!(matches!(
        fx.b().run(&spec).await,
        Err(OrchestratorError::MissingImage(_))
    ));
    let spec = fx.spec("node", IDLE);
    fx.b().run(&spec).await.expect("run");
    assert!(matches!(
        fx.b().run(&spec).await,
        Err(OrchestratorError::AlreadyExists(_))
    ));
    for r in [
        fx.b()
            .execute("nope", &["true".into()], &[], None)
            .await
            .err(),
        fx.b().remove("nope").await.err(),
        fx.b().logs("nope", 10).await.err(),
    ] {
        assert!(matches!(r, Some(OrchestratorError::NotFound(_))), "{r:?}");
    }
    let mut bad = fx.spec("node", IDLE);
    bad.name = "../escape".into();
    assert!(matches!(
        fx.b().run(&bad).await,
        Err(OrchestratorError::Failed(_))
    ));
    assert_eq!(fx.b().kind(), "process");
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test]
async fn limits_required_or_optional() {
    // A parent under a file: creating the cgroup fails (as it would for a
    // user without write access to the cgroup tree).
    let mut fx = fixture();
    let mut config = fx.config.clone();
    config.cgroup_parent = Some("cgroup.procs/opr".into());
    let strict = ProcessBackend::new(config.clone()).expect("backend");
    let spec = fx.spec("node", IDLE);
    let e = strict.run(&spec).await.expect_err("limits required");
    assert!(e.to_string().contains("cannot set resource limits"), "{e}");
    assert!(!fx.state_dir(&spec.name).exists());
    assert!(strict
        .list(LABEL_EXECUTOR, &fx.executor)
        .await
        .expect("list")
        .is_empty());
    drop(strict);

    config.require_limits = false;
    fx.backend = Some(ProcessBackend::new(config).expect("backend"));
    fx.b().run(&spec).await.expect("run without limits");
    assert_eq!(fx.exec(&spec.name, "echo ok").await.output, "ok\n");
    let stats = fx.b().stats().await.expect("stats");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].cpu_percent, None);
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test]
async fn startup_latency() {
    // Numbers for the docs: run → first instruction of the command, and
    // run → HTTP 200 from a trivial Python server.
    let fx = fixture();
    let mut started = Vec::new();
    let mut http = Vec::new();
    let mut ran = Vec::new();
    for _ in 0..10 {
        let spec = fx.spec(
            "python",
            &[
                "bash",
                "-c",
                "echo > /tmp/started; exec python3 -m http.server --bind 127.0.0.1 ${OPR_RUNTIME_LISTEN##*:}",
            ],
        );
        let marker = spec.mounts.tmp.join("started");
        let t0 = Instant::now();
        fx.b().run(&spec).await.expect("run");
        ran.push(t0.elapsed());
        let addr = fx.b().address(&spec.name).await.expect("address");
        let deadline = t0 + Duration::from_secs(10);
        while !marker.exists() {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        started.push(t0.elapsed());
        while http_get_status(addr) != Some(200) {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        http.push(t0.elapsed());
        fx.b().remove(&spec.name).await.expect("remove");
    }
    let p50 = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    eprintln!(
        "p50 over 10: run() returned {:?}, command started {:?}, HTTP 200 {:?}",
        p50(&mut ran),
        p50(&mut started),
        p50(&mut http)
    );
    assert!(p50(&mut http) < Duration::from_secs(2));
}
