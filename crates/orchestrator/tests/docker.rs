//! The Docker backend against a real engine and the real runtime images.
//!
//! Needs a running Docker engine and the images of `opr images build`
//! (CI runs it before the tests). Fails, never skips, without them.

use opr_orchestrator::docker::{DockerBackend, DockerConfig};
use opr_orchestrator::{
    Mounts, Orchestrator, OrchestratorError, RestartPolicy, RuntimeSpec, LABEL_EXECUTOR,
    LABEL_POOL, LABEL_RUNTIME_ID,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod engine;
use engine::{require_engine, unique};

const NODE_IMAGE: &str = "opr/node:latest";
const PYTHON_IMAGE: &str = "opr/python:latest";
const IDLE: &[&str] = &["tail", "-f", "/dev/null"];

// ------------------------------------------------------------- fixture

struct Fixture {
    tmp: tempfile::TempDir,
    backend: DockerBackend,
    /// Label value shared by this fixture's runtimes.
    executor: String,
}

async fn fixture() -> Fixture {
    require_engine();
    let executor = unique("optest");
    let backend = DockerBackend::connect(DockerConfig::new(&executor))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the Docker engine: {e}"));
    for image in [NODE_IMAGE, PYTHON_IMAGE] {
        backend.ensure_image(image).await.unwrap_or_else(|e| {
            panic!("{e}: these tests need the runtime images; run `opr images build` first")
        });
    }
    Fixture {
        tmp: tempfile::tempdir().expect("tempdir"),
        backend,
        executor,
    }
}

impl Fixture {
    fn b(&self) -> &DockerBackend {
        &self.backend
    }

    fn mounts(&self, name: &str) -> Mounts {
        let root = self.tmp.path().join(name);
        let m = Mounts {
            tmp: root.join("src"),
            code: root.join("builds"),
            logs: root.join("logs"),
            logging: root.join("logging"),
            cache: None,
        };
        for d in [&m.tmp, &m.code, &m.logs, &m.logging] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        m
    }

    fn spec(&self, image: &str, command: &[&str]) -> RuntimeSpec {
        let id = unique("rt");
        let name = format!("{}-{id}", self.executor);
        RuntimeSpec {
            mounts: self.mounts(&name),
            name,
            hostname: format!("{:032x}", fastish_hash(&id)),
            image: image.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            labels: BTreeMap::from([
                (LABEL_EXECUTOR.to_string(), self.executor.clone()),
                (LABEL_RUNTIME_ID.to_string(), id),
            ]),
            cpus: 1.0,
            memory_mb: 256,
            pids_limit: 256,
            restart: RestartPolicy::No,
            network: None,
        }
    }

    async fn exec(&self, name: &str, script: &str) -> opr_orchestrator::ExecOutcome {
        self.b()
            .execute(
                name,
                &["bash".into(), "-c".into(), script.into()],
                &[],
                Some(Duration::from_secs(60)),
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

    fn inspect(&self, name: &str, format: &str) -> String {
        let out = std::process::Command::new("docker")
            .args(["inspect", "--format", format, name])
            .output()
            .expect("docker inspect");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Fixture {
    /// Whatever a failed test left behind goes.
    fn drop(&mut self) {
        let filter = format!("label={LABEL_EXECUTOR}={}", self.executor);
        if let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

fn fastish_hash(s: &str) -> u128 {
    s.bytes()
        .fold(0x6c62272e07bb014262b821756295c58d_u128, |h, b| {
            (h ^ u128::from(b)).wrapping_mul(0x0000000001000000000000000000013B)
        })
}

/// Polls `f` every few ms until it holds or `limit` passes.
async fn wait_until<F: FnMut() -> bool>(limit: Duration, what: &str, mut f: F) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One HTTP/1.0 exchange: (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Container labels also hold the image's labels.
fn is_subset(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

fn get_status(addr: SocketAddr) -> Option<u16> {
    http(addr, "GET", "/", &[], "").map(|(s, _)| s)
}

/// A Node function package (`code.tar`) answering "hello from docker".
fn node_package(dir: &Path) -> PathBuf {
    let path = dir.join("code.tar");
    let file = std::fs::File::create(&path).expect("create code.tar");
    let mut tar = tar::Builder::new(file);
    let src = b"module.exports = async (context) => context.res.send('hello from docker');\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(src.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "index.js", &src[..])
        .expect("append");
    tar.finish().expect("finish");
    path
}

/// The start command Appwrite sends (runtime-protocol §5.3), for a `.tar`.
const START: &str =
    "cp /tmp/code.tar /mnt/code/code.tar && nohup helpers/start.sh \"bash helpers/server.sh\"";

// ------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exec_list_address_logs_stats_remove() {
    let fx = fixture().await;
    let spec = fx.spec(
        PYTHON_IMAGE,
        &[
            "bash",
            "-c",
            "echo started; echo oops >&2; exec python3 -m http.server 3000",
        ],
    );
    fx.b().run(&spec).await.expect("run");
    assert_eq!(fx.status(&spec.name).await.as_deref(), Some("running"));
    let listed = fx
        .b()
        .list(LABEL_RUNTIME_ID, &spec.labels[LABEL_RUNTIME_ID])
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert!(is_subset(&spec.labels, &listed[0].labels), "{listed:?}");

    // Same name twice: the second run is refused.
    assert!(matches!(
        fx.b().run(&spec).await,
        Err(OrchestratorError::AlreadyExists(_))
    ));

    let addr = fx.b().address(&spec.name).await.expect("address");
    assert!(addr.ip().is_loopback(), "{addr}");
    wait_until(Duration::from_secs(20), "HTTP 200", || {
        get_status(addr) == Some(200)
    })
    .await;

    // Output order: stdout, then stderr; exit codes are outcomes.
    let out = fx
        .exec(&spec.name, "echo err >&2; echo out; pwd; exit 3")
        .await;
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.output, "out\n/usr/local/server\nerr\n");
    let out = fx
        .b()
        .execute(
            &spec.name,
            &["sh".into(), "-c".into(), "echo $A-$B".into()],
            &[("A".into(), "1".into()), ("B".into(), "2".into())],
            None,
        )
        .await
        .expect("execute");
    assert_eq!(out.output, "1-2\n");
    let missing = fx
        .b()
        .execute(&spec.name, &["no-such-command".into()], &[], None)
        .await;
    match missing {
        Ok(o) => assert_eq!(o.exit_code, 127, "{}", o.output),
        Err(e) => assert!(e.to_string().contains("no-such-command"), "{e}"),
    }

    let logs = fx.b().logs(&spec.name, 1 << 20).await.expect("logs");
    assert!(logs.contains("started") && logs.contains("oops"), "{logs}");
    let tail = fx.b().logs(&spec.name, 5).await.expect("logs");
    assert!(tail.len() <= 5, "{tail:?}");

    // Some CPU was used; memory is reported.
    fx.exec(&spec.name, "for i in $(seq 20000); do :; done")
        .await;
    let stats = fx.b().stats().await.expect("stats");
    let mine = stats
        .iter()
        .find(|s| s.name == spec.name)
        .unwrap_or_else(|| panic!("no stats for {}: {stats:?}", spec.name));
    assert!(mine.cpu_percent.is_some_and(|c| c > 0.0), "{mine:?}");
    assert!(mine.memory_bytes.is_some_and(|m| m > 0), "{mine:?}");

    fx.b().remove(&spec.name).await.expect("remove");
    assert_eq!(fx.status(&spec.name).await, None);
    assert!(matches!(
        fx.b().remove(&spec.name).await,
        Err(OrchestratorError::NotFound(_))
    ));
    assert!(matches!(
        fx.b().address(&spec.name).await,
        Err(OrchestratorError::NotFound(_))
    ));
    assert!(matches!(
        fx.b()
            .execute(&spec.name, &["true".into()], &[], None)
            .await,
        Err(OrchestratorError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_timeout_kills_the_command() {
    let fx = fixture().await;
    let spec = fx.spec(PYTHON_IMAGE, IDLE);
    fx.b().run(&spec).await.expect("run");
    let t = Instant::now();
    let r = fx
        .b()
        .execute(
            &spec.name,
            &[
                "bash".into(),
                "-c".into(),
                "sleep 300 & sleep 301; echo never".into(),
            ],
            &[],
            Some(Duration::from_millis(800)),
        )
        .await;
    assert!(matches!(r, Err(OrchestratorError::Timeout)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // Neither sleep survives (not even the one in the background).
    let out = fx
        .exec(
            &spec.name,
            "for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done | grep -c '^sleep 30' || true",
        )
        .await;
    assert_eq!(out.output.trim(), "0", "{}", out.output);
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_reach_the_engine_and_can_change() {
    let fx = fixture().await;
    let mut spec = fx.spec(PYTHON_IMAGE, IDLE);
    spec.cpus = 0.5;
    spec.memory_mb = 128;
    spec.pids_limit = 77;
    fx.b().run(&spec).await.expect("run");
    assert_eq!(
        fx.inspect(
            &spec.name,
            "{{.HostConfig.CpuQuota}} {{.HostConfig.CpuPeriod}} {{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.Config.WorkingDir}} {{.Config.Hostname}}"
        ),
        format!("50000 100000 128000000 77 /usr/local/server {}", spec.hostname)
    );
    fx.b()
        .set_limits(&spec.name, 1.5, 300)
        .await
        .expect("set_limits");
    assert_eq!(
        fx.inspect(
            &spec.name,
            "{{.HostConfig.CpuQuota}} {{.HostConfig.Memory}}"
        ),
        "150000 300000000"
    );
    // The new memory limit holds inside: 200 MB fits now.
    let out = fx
        .exec(
            &spec.name,
            "python3 -c 'b=bytearray(200<<20); print(len(b))'",
        )
        .await;
    assert_eq!(
        out.output.trim(),
        (200u64 << 20).to_string(),
        "{}",
        out.output
    );
    assert!(matches!(
        fx.b().set_limits("opr-no-such-runtime", 1.0, 100).await,
        Err(OrchestratorError::NotFound(_))
    ));
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_kills_only_the_offender() {
    let fx = fixture().await;
    let mut spec = fx.spec(PYTHON_IMAGE, IDLE);
    spec.memory_mb = 64;
    let other = fx.spec(PYTHON_IMAGE, IDLE);
    fx.b().run(&spec).await.expect("run");
    fx.b().run(&other).await.expect("run other");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_limit_contains_a_fork_bomb() {
    let fx = fixture().await;
    let mut spec = fx.spec(PYTHON_IMAGE, IDLE);
    spec.pids_limit = 32;
    fx.b().run(&spec).await.expect("run");
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
            Some(Duration::from_secs(30)),
        )
        .await
        .expect("execute");
    assert!(out.output.contains("fork failed after"), "{}", out.output);
    assert!(t.elapsed() < Duration::from_secs(25), "{:?}", t.elapsed());
    // A real bomb, cut short by the timeout: the host still forks.
    let r = fx
        .b()
        .execute(
            &spec.name,
            &["bash".into(), "-c".into(), "b() { b | b & }; b".into()],
            &[],
            Some(Duration::from_secs(3)),
        )
        .await;
    assert!(
        r.is_ok() || matches!(r, Err(OrchestratorError::Timeout)),
        "{r:?}"
    );
    let id = fx.inspect(&spec.name, "{{.Id}}");
    let current = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/docker/{id}/pids.current"))
        .or_else(|_| {
            std::fs::read_to_string(format!(
                "/sys/fs/cgroup/system.slice/docker-{id}.scope/pids.current"
            ))
        })
        .unwrap_or_default();
    if let Ok(n) = current.trim().parse::<u64>() {
        assert!(n <= 32, "pids.current {n}");
    }
    assert!(std::process::Command::new("true")
        .status()
        .expect("host fork")
        .success());
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtimes_are_isolated() {
    let fx = fixture().await;
    let a = fx.spec(PYTHON_IMAGE, IDLE);
    let b = fx.spec(PYTHON_IMAGE, IDLE);
    std::fs::write(a.mounts.tmp.join("a-secret"), "A").expect("write");
    std::fs::write(b.mounts.tmp.join("b-secret"), "B").expect("write");
    fx.b().run(&a).await.expect("run a");
    fx.b().run(&b).await.expect("run b");

    let out = fx.exec(&a.name, "ls /tmp; cat /tmp/a-secret").await;
    assert!(out.output.contains("a-secret"), "{}", out.output);
    assert!(!out.output.contains("b-secret"), "{}", out.output);
    let out = fx.exec(&a.name, "ls /tmp/b-secret 2>&1").await;
    assert!(out.output.contains("No such file"), "{}", out.output);
    // Mounts land where runtime-protocol §5.1 puts them.
    let out = fx
        .exec(
            &a.name,
            "touch /mnt/code/c /mnt/logs/l /tmp/logging/g && echo ok",
        )
        .await;
    assert_eq!(out.output, "ok\n");
    assert!(a.mounts.code.join("c").is_file());
    assert!(a.mounts.logs.join("l").is_file());
    assert!(a.mounts.logging.join("g").is_file());

    // Nothing of the executor's environment, files or engine is inside.
    let host_only = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it");
    let out = fx.exec(&a.name, "env").await;
    assert!(!out.output.contains(&host_only), "{}", out.output);
    assert!(!out.output.contains("CARGO"), "{}", out.output);
    let out = fx
        .exec(
            &a.name,
            &format!(
                "test -e {host_only} && echo host-visible; test -S /var/run/docker.sock && echo socket; hostname"
            ),
        )
        .await;
    assert_eq!(out.output, format!("{}\n", a.hostname));
    // Separate process namespaces: a cannot see b's processes.
    let out = fx.exec(&a.name, "ls -d /proc/[0-9]* | wc -l").await;
    let count: usize = out.output.trim().parse().expect("count");
    assert!(count < 10, "{}", out.output);
    fx.b().remove(&a.name).await.expect("remove");
    fx.b().remove(&b.name).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_adoption_by_a_new_backend() {
    let fx = fixture().await;
    let spec = fx.spec(PYTHON_IMAGE, IDLE);
    fx.b().run(&spec).await.expect("run");
    let first = fx.b().address(&spec.name).await.expect("address");

    // A new backend (an executor restart) finds it by its labels.
    let again = DockerBackend::connect(DockerConfig::new(&fx.executor))
        .await
        .expect("connect");
    let listed = again
        .list(LABEL_EXECUTOR, &fx.executor)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, spec.name);
    assert_eq!(listed[0].status, "running");
    assert!(is_subset(&spec.labels, &listed[0].labels), "{listed:?}");
    assert_eq!(again.address(&spec.name).await.expect("address"), first);
    assert_eq!(
        again
            .execute(&spec.name, &["echo".into(), "hi".into()], &[], None)
            .await
            .expect("exec")
            .output,
        "hi\n"
    );
    again.remove(&spec.name).await.expect("remove");
    assert!(fx
        .b()
        .list(LABEL_EXECUTOR, &fx.executor)
        .await
        .expect("list")
        .is_empty());
    // Stopped runtimes are listed too (any state).
    let mut done = fx.spec(PYTHON_IMAGE, &["true"]);
    done.labels.insert(LABEL_POOL.into(), "x".into());
    fx.b().run(&done).await.expect("run");
    let listed = fx.b().list(LABEL_POOL, "x").await.expect("list");
    let mine: Vec<_> = listed.iter().filter(|r| r.name == done.name).collect();
    assert_eq!(mine.len(), 1);
    fx.b().remove(&done.name).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_runtime_keeps_its_address() {
    let fx = fixture().await;
    // Serves one request, then exits: the engine restarts it.
    let mut spec = fx.spec(
        PYTHON_IMAGE,
        &[
            "python3",
            "-c",
            "import http.server as h; s=h.HTTPServer(('0.0.0.0',3000),h.SimpleHTTPRequestHandler); s.handle_request()",
        ],
    );
    spec.restart = RestartPolicy::Always;
    fx.b().run(&spec).await.expect("run");
    let addr = fx.b().address(&spec.name).await.expect("address");
    wait_until(Duration::from_secs(20), "first answer", || {
        get_status(addr) == Some(200)
    })
    .await;
    wait_until(Duration::from_secs(20), "a restart", || {
        fx.inspect(&spec.name, "{{.RestartCount}}") != "0"
    })
    .await;
    wait_until(
        Duration::from_secs(20),
        "an answer after the restart",
        || get_status(addr) == Some(200),
    )
    .await;
    assert_eq!(fx.b().address(&spec.name).await.expect("address"), addr);
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_networks_and_errors() {
    let fx = fixture().await;
    // Open Runtimes names are aliases made by `opr images build`.
    for image in [
        "openruntimes/node:v5-22",
        "openruntimes/node:v5-18",
        "node-22",
        "openruntimes/python:v5-3.12",
    ] {
        fx.b()
            .ensure_image(image)
            .await
            .unwrap_or_else(|e| panic!("{image}: {e}"));
    }
    let missing = fx.b().ensure_image("openruntimes/nothing:v5-0").await;
    match missing {
        Err(OrchestratorError::MissingImage(i)) => assert_eq!(i, "openruntimes/nothing:v5-0"),
        other => panic!("{other:?}"),
    }
    let mut spec = fx.spec("openruntimes/nothing:v5-0", IDLE);
    assert!(matches!(
        fx.b().run(&spec).await,
        Err(OrchestratorError::MissingImage(_))
    ));
    assert_eq!(fx.status(&spec.name).await, None);

    // A missing network is created (bridge) on first use.
    let network = unique("opr-test-net");
    spec = fx.spec(PYTHON_IMAGE, IDLE);
    spec.network = Some(network.clone());
    fx.b().run(&spec).await.expect("run");
    assert_eq!(
        fx.inspect(&spec.name, "{{.HostConfig.NetworkMode}}"),
        network
    );
    let driver = std::process::Command::new("docker")
        .args([
            "network",
            "inspect",
            "--format",
            "{{.Driver}} {{.Internal}}",
            &network,
        ])
        .output()
        .expect("network inspect");
    assert_eq!(
        String::from_utf8_lossy(&driver.stdout).trim(),
        "bridge false"
    );
    // Another runtime joins the same network.
    let mut second = fx.spec(PYTHON_IMAGE, IDLE);
    second.network = Some(network.clone());
    fx.b().run(&second).await.expect("run second");
    fx.b().remove(&spec.name).await.expect("remove");
    fx.b().remove(&second.name).await.expect("remove");
    let _ = std::process::Command::new("docker")
        .args(["network", "rm", &network])
        .output();

    assert!(fx.b().run(&fx.spec(PYTHON_IMAGE, &[])).await.is_err());
    assert_eq!(
        fx.b().pool_key("openruntimes/node:v5-22"),
        fx.b().pool_key("opr/node:latest")
    );
    assert_ne!(
        fx.b().pool_key("openruntimes/node:v5-22"),
        fx.b().pool_key("openruntimes/python:v5-3.12")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_runtime_serves_a_function() {
    let fx = fixture().await;
    let secret = "s3cret";
    let mut spec = fx.spec("openruntimes/node:v5-22", &["bash", "-c", START]);
    node_package(&spec.mounts.tmp);
    spec.env = BTreeMap::from([
        ("OPEN_RUNTIMES_SECRET".to_string(), secret.to_string()),
        (
            "OPEN_RUNTIMES_ENTRYPOINT".to_string(),
            "index.js".to_string(),
        ),
    ]);
    let t = Instant::now();
    fx.b().run(&spec).await.expect("run");
    let run_ms = t.elapsed().as_millis();
    let addr = fx.b().address(&spec.name).await.expect("address");
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Some((200, body)) = http(addr, "GET", "/", &[("x-open-runtimes-secret", secret)], "")
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no HTTP 200 within 30 s; logs:\n{}",
            fx.b().logs(&spec.name, 4096).await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    eprintln!(
        "docker cold start: run {run_ms} ms, run → HTTP 200 {} ms",
        t.elapsed().as_millis()
    );
    assert_eq!(body, "hello from docker");
    // Without the secret: refused by opr-runtime.
    let (status, _) = http(addr, "GET", "/", &[], "").expect("answer");
    assert_eq!(status, 500);
    fx.b().remove(&spec.name).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_runtime_takes_an_assignment() {
    let fx = fixture().await;
    let token = "control-token-123";
    let mut spec = fx.spec("openruntimes/node:v5-22", &["opr-runtime", "--standby"]);
    spec.env = BTreeMap::from([("OPR_RUNTIME_CONTROL_TOKEN".to_string(), token.to_string())]);
    spec.labels.remove(LABEL_RUNTIME_ID);
    spec.labels.insert(LABEL_POOL.into(), spec.image.clone());
    spec.cpus = 1.0;
    spec.memory_mb = 512;
    node_package(&spec.mounts.tmp);
    fx.b().run(&spec).await.expect("run");
    let addr = fx.b().address(&spec.name).await.expect("address");
    // Not a TCP connect: the engine's userland proxy accepts connections
    // on the published port before anything listens inside.
    wait_until(
        Duration::from_secs(30),
        "the standby runtime to answer",
        || http(addr, "GET", "/", &[], "").is_some(),
    )
    .await;

    // What the warm pool does on a hit: limits, then the assignment.
    let t = Instant::now();
    fx.b()
        .set_limits(&spec.name, 0.5, 256)
        .await
        .expect("set_limits");
    let assign = r#"{"env":{"OPEN_RUNTIMES_SECRET":"pool-secret","OPEN_RUNTIMES_ENTRYPOINT":"index.js"},"archive":"/tmp/code.tar"}"#;
    let (status, body) = http(
        addr,
        "POST",
        "/__opr/assign",
        &[
            ("x-opr-control-token", token),
            ("content-type", "application/json"),
        ],
        assign,
    )
    .expect("assign answer");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        addr,
        "GET",
        "/",
        &[("x-open-runtimes-secret", "pool-secret")],
        "",
    )
    .expect("answer");
    eprintln!(
        "docker pool hit: set_limits + assign → HTTP 200 {} ms",
        t.elapsed().as_millis()
    );
    assert_eq!((status, body.as_str()), (200, "hello from docker"));
    assert_eq!(
        fx.inspect(
            &spec.name,
            "{{.HostConfig.CpuQuota}} {{.HostConfig.Memory}}"
        ),
        "50000 256000000"
    );
    fx.b().remove(&spec.name).await.expect("remove");
}
