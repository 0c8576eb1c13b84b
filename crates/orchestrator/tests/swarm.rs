//! The Swarm backend against a real engine (made a single-node swarm
//! manager if it is not one) and the real runtime images.
//!
//! Needs a running Docker engine and the images of `opr images build`
//! (CI runs it before the tests). Fails, never skips, without them. The
//! swarm is left active: other tests may be using it.

use opr_orchestrator::swarm::{SwarmBackend, SwarmConfig};
use opr_orchestrator::{
    Mounts, Orchestrator, OrchestratorError, RestartPolicy, RuntimeSpec, LABEL_EXECUTOR,
    LABEL_RUNTIME_ID,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod engine;
use engine::{require_engine, unique};

const PYTHON_IMAGE: &str = "opr/python:latest";
const IDLE: &[&str] = &["tail", "-f", "/dev/null"];

struct Fixture {
    tmp: tempfile::TempDir,
    backend: SwarmBackend,
    executor: String,
}

async fn fixture() -> Fixture {
    require_engine();
    let executor = unique("swtest");
    let backend = SwarmBackend::connect(SwarmConfig::new(&executor))
        .await
        .unwrap_or_else(|e| panic!("cannot use the engine as a swarm: {e}"));
    for image in ["opr/node:latest", PYTHON_IMAGE] {
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
    fn b(&self) -> &SwarmBackend {
        &self.backend
    }

    fn spec(&self, image: &str, command: &[&str]) -> RuntimeSpec {
        let id = unique("rt");
        let name = format!("{}-{id}", self.executor);
        let root = self.tmp.path().join(&name);
        RuntimeSpec {
            mounts: Mounts {
                tmp: root.join("src"),
                code: root.join("builds"),
                logs: root.join("logs"),
                logging: root.join("logging"),
                cache: None,
            },
            name,
            hostname: format!("{:032x}", u128::from(std::process::id()) << 64 | 0xabc),
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

    fn docker(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("docker")
            .args(args)
            .output()
            .expect("docker");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The task container of a service.
    fn task_container(&self, name: &str) -> String {
        self.docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={name}"),
        ])
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let filter = format!("label={LABEL_EXECUTOR}={}", self.executor);
        let services = self.docker(&["service", "ls", "-q", "--filter", &filter]);
        let ids: Vec<&str> = services.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["service", "rm"];
            args.extend(ids);
            self.docker(&args);
        }
    }
}

async fn wait_until<F: FnMut() -> bool>(limit: Duration, what: &str, mut f: F) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn http(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: x\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_owned()))
}

fn node_package(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let path = dir.join("code.tar");
    let file = std::fs::File::create(&path).expect("create code.tar");
    let mut tar = tar::Builder::new(file);
    let src = b"module.exports = async (context) => context.res.send('hello from swarm');\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(src.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "index.js", &src[..])
        .expect("append");
    tar.finish().expect("finish");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_lifecycle() {
    let fx = fixture().await;
    let spec = fx.spec(
        PYTHON_IMAGE,
        &[
            "bash",
            "-c",
            "echo started; exec python3 -m http.server 3000",
        ],
    );
    fx.b().run(&spec).await.expect("run");
    let listed = fx
        .b()
        .list(LABEL_EXECUTOR, &fx.executor)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, spec.name);
    assert_eq!(listed[0].status, "running");
    assert_eq!(listed[0].labels, spec.labels);
    assert!(matches!(
        fx.b().run(&spec).await,
        Err(OrchestratorError::AlreadyExists(_))
    ));

    let addr = fx.b().address(&spec.name).await.expect("address");
    wait_until(Duration::from_secs(20), "HTTP 200", || {
        http(addr, "/", &[]).map(|r| r.0) == Some(200)
    })
    .await;

    let out = fx
        .exec(&spec.name, "echo err >&2; echo out; pwd; hostname; exit 4")
        .await;
    assert_eq!(out.exit_code, 4);
    assert_eq!(
        out.output,
        format!("out\n/usr/local/server\n{}\nerr\n", spec.hostname)
    );
    let r = fx
        .b()
        .execute(
            &spec.name,
            &["sleep".into(), "30".into()],
            &[],
            Some(Duration::from_millis(500)),
        )
        .await;
    assert!(matches!(r, Err(OrchestratorError::Timeout)), "{r:?}");
    let logs = fx.b().logs(&spec.name, 4096).await.expect("logs");
    assert!(logs.contains("started"), "{logs}");
    let stats = fx.b().stats().await.expect("stats");
    assert!(stats.iter().any(|s| s.name == spec.name), "{stats:?}");

    // A new backend finds it by its labels and its published port.
    let again = SwarmBackend::connect(SwarmConfig::new(&fx.executor))
        .await
        .expect("connect");
    assert_eq!(
        again
            .list(LABEL_RUNTIME_ID, &spec.labels[LABEL_RUNTIME_ID])
            .await
            .expect("list")
            .len(),
        1
    );
    assert_eq!(again.address(&spec.name).await.expect("address"), addr);

    let t = Instant::now();
    again.remove(&spec.name).await.expect("remove");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(fx
        .b()
        .list(LABEL_EXECUTOR, &fx.executor)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(fx.task_container(&spec.name), "");
    assert!(matches!(
        fx.b().remove(&spec.name).await,
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
async fn limits_and_restart_policy() {
    let fx = fixture().await;
    let mut spec = fx.spec(PYTHON_IMAGE, IDLE);
    spec.memory_mb = 64;
    spec.cpus = 0.5;
    spec.pids_limit = 40;
    spec.restart = RestartPolicy::OnFailure;
    fx.b().run(&spec).await.expect("run");
    let id = fx.task_container(&spec.name);
    assert_eq!(
        fx.docker(&[
            "inspect",
            "--format",
            "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}",
            &id
        ]),
        "500000000 64000000 40"
    );
    assert_eq!(
        fx.docker(&[
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.RestartPolicy.Condition}}",
            &spec.name
        ]),
        "on-failure"
    );
    let out = fx
        .exec(
            &spec.name,
            "python3 -c 'b=bytearray(300<<20); print(len(b))'",
        )
        .await;
    assert_eq!(out.exit_code, 137, "{}", out.output);
    assert_eq!(fx.exec(&spec.name, "echo alive").await.output, "alive\n");

    // A warm runtime takes new limits in place: same container.
    fx.b()
        .set_limits(&spec.name, 1.0, 400)
        .await
        .expect("set_limits");
    assert_eq!(fx.task_container(&spec.name), id);
    let out = fx
        .exec(
            &spec.name,
            "python3 -c 'b=bytearray(300<<20); print(len(b))'",
        )
        .await;
    assert_eq!(
        out.output.trim(),
        (300u64 << 20).to_string(),
        "{}",
        out.output
    );
    fx.b().remove(&spec.name).await.expect("remove");

    // A command that fails at once still counts as started (as `docker
    // run` does), and lists as exited.
    let quick = fx.spec(PYTHON_IMAGE, &["bash", "-c", "exit 3"]);
    fx.b().run(&quick).await.expect("run");
    let r = fx
        .b()
        .list(LABEL_RUNTIME_ID, &quick.labels[LABEL_RUNTIME_ID])
        .await
        .expect("list");
    assert_eq!(r.len(), 1);
    fx.b().remove(&quick.name).await.expect("remove");

    // Missing images are reported as such.
    assert!(matches!(
        fx.b().ensure_image("openruntimes/nothing:v5-0").await,
        Err(OrchestratorError::MissingImage(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_runtime_serves_a_function() {
    let fx = fixture().await;
    let mut spec = fx.spec(
        "openruntimes/node:v5-22",
        &[
            "bash",
            "-c",
            "cp /tmp/code.tar /mnt/code/code.tar && nohup helpers/start.sh \"bash helpers/server.sh\"",
        ],
    );
    node_package(&spec.mounts.tmp);
    // Its network: an attachable overlay, made on first use.
    let network = unique("opr-swtest-net");
    spec.network = Some(network.clone());
    spec.env = BTreeMap::from([
        ("OPEN_RUNTIMES_SECRET".to_string(), "sw".to_string()),
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
        if let Some((200, body)) = http(addr, "/", &[("x-open-runtimes-secret", "sw")]) {
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
        "swarm cold start: run {run_ms} ms, run → HTTP 200 {} ms",
        t.elapsed().as_millis()
    );
    assert_eq!(body, "hello from swarm");
    assert_eq!(
        fx.docker(&[
            "network",
            "inspect",
            "--format",
            "{{.Driver}} {{.Scope}} {{.Attachable}}",
            &network
        ]),
        "overlay swarm true"
    );
    let id = fx.task_container(&spec.name);
    let attached = fx.docker(&[
        "inspect",
        "--format",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        &id,
    ]);
    assert!(attached.contains(&network), "{attached}");
    fx.b().remove(&spec.name).await.expect("remove");
    fx.docker(&["network", "rm", &network]);
}
