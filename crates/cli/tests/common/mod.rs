//! Harness of the executor integration tests: starts a real `opr executor`
//! process (process backend, real Node and Python runtimes) and talks to it
//! the way its clients do (executor-api §17).
//!
//! Every wait is bounded; the port comes from the OS (`--listen
//! 127.0.0.1:0`); each executor has its own hostname (runtime name prefix)
//! and work folder, so tests running side by side never touch each other's
//! runtimes. Dropping an [`Executor`] stops it with SIGTERM (it removes its
//! runtimes), then SIGKILL after a bounded wait.
//!
//! Built packages are shared between test processes (nextest runs each test
//! in its own process): the first test that needs one builds it through an
//! executor, under a file lock, into `CARGO_TARGET_TMPDIR`; later tests copy
//! it.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const NODE_IMAGE: &str = "openruntimes/node:v5-22";
pub const PYTHON_IMAGE: &str = "openruntimes/python:v5-3.12";
pub const BUN_IMAGE: &str = "openruntimes/bun:v5-1.1";
/// The build command Appwrite sends (runtime-protocol §5.3), Node.
pub const NODE_BUILD: &str =
    "tar -zxf /tmp/code.tar.gz -C /mnt/code && bash helpers/build.sh \"npm install --no-audit --no-fund\"";
/// Python: the install command of the fixture.
pub const PYTHON_BUILD: &str =
    "tar -zxf /tmp/code.tar.gz -C /mnt/code && bash helpers/build.sh \"pip install -r requirements.txt\"";
/// Bun: the install command Open Runtimes' Bun runtime uses.
pub const BUN_BUILD: &str =
    "tar -zxf /tmp/code.tar.gz -C /mnt/code && bash helpers/build.sh \"bun install\"";
/// The start command Appwrite sends (runtime-protocol §5.3).
pub const RUNTIME_ENTRYPOINT: &str =
    "cp /tmp/code.tar.gz /mnt/code/code.tar.gz && nohup helpers/start.sh \"bash helpers/server.sh\"";

pub const MISSING_KEY: &str = "Missing executor key";
pub const NOT_FOUND_COLD: &str =
    "Runtime not found. Please start it first or provide runtime-related parameters.";
pub const CACHE_KEY_ERROR: &str = "Cache key must start with a letter or number and may only contain letters, numbers, dots, underscores, and hyphens.";
pub const BAD_JSON_ERROR: &str = "Execution resulted in binary response, but JSON response does not allow binaries. Use \"Accept: multipart/form-data\" header to support binaries.";

/// How long `opr executor` may take to print its listening line.
const STARTUP_WAIT: Duration = Duration::from_secs(30);
/// How long a stopped executor may take to remove its runtimes and exit.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);
/// Upper bound of one HTTP exchange unless a test says otherwise.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(120);

// ------------------------------------------------------------------ basics

pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n.div_ceil(2)];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    let s: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    s[..n].to_string()
}

/// A runtime id no other test uses.
pub fn unique_id(prefix: &str) -> String {
    format!("{prefix}-{}", random_hex(8))
}

fn suite_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("executor-tests");
    std::fs::create_dir_all(&dir).expect("create suite dir");
    dir
}

/// Runtime files are written once per content hash by `opr`; sharing the
/// cache between tests saves the write (the write is atomic).
fn shared_cache_home() -> PathBuf {
    let dir = suite_dir().join("xdg-cache");
    std::fs::create_dir_all(&dir).expect("create cache home");
    dir
}

/// The process backend needs bubblewrap: fail loudly, never skip.
pub fn require_bwrap() {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("bwrap").is_file()))
        .unwrap_or(false)
        || Path::new("/usr/bin/bwrap").is_file();
    assert!(
        found,
        "bubblewrap (bwrap) is not installed: the executor tests need the process backend \
         (apt-get install bubblewrap)"
    );
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- backends

thread_local! {
    /// The backend `executor()` starts on unless a test names one.
    static BACKEND: std::cell::Cell<&'static str> = const { std::cell::Cell::new("process") };
}

/// The backend the running test's executors use by default.
pub fn current_backend() -> &'static str {
    BACKEND.with(std::cell::Cell::get)
}

/// Runs `test` with `backend` as the default of `executor()`. Docker and
/// Swarm need an engine: without one the test fails, never skips.
pub fn with_backend(backend: &'static str, test: fn()) {
    if backend != "process" {
        require_docker();
    }
    BACKEND.with(|b| b.set(backend));
    test();
}

/// A Docker engine answers, or the test fails.
pub fn require_docker() {
    let ok = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "no Docker engine answers `docker info`: run scripts/setup-tests.sh"
    );
}

/// `on_backends!(name)` makes the plain function `name` a test per backend:
/// `name::process`, `name::docker`, `name::swarm` (or only those listed, as
/// in `on_backends!(name: process, docker)`).
#[macro_export]
macro_rules! on_backends {
    ($name:ident) => {
        $crate::on_backends!($name: process, docker, swarm);
    };
    ($name:ident: $($backend:ident),+) => {
        mod $name {
            $(
                #[test]
                fn $backend() {
                    $crate::common::with_backend(stringify!($backend), super::$name)
                }
            )+
        }
    };
}

// ---------------------------------------------------------------- executor

pub struct ExecutorBuilder {
    env: Vec<(String, String)>,
    secret: String,
    hostname: String,
    work_dir: Option<PathBuf>,
    backend: Option<String>,
}

pub fn executor() -> ExecutorBuilder {
    ExecutorBuilder {
        env: Vec::new(),
        secret: format!("secret-{}", random_hex(24)),
        hostname: format!("t-{}", random_hex(8)),
        work_dir: None,
        backend: Some(current_backend().to_string()),
    }
}

impl ExecutorBuilder {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = secret.to_string();
        self
    }

    pub fn hostname(mut self, hostname: &str) -> Self {
        self.hostname = hostname.to_string();
        self
    }

    /// `--backend` (default: [`current_backend`]).
    pub fn backend(mut self, backend: &str) -> Self {
        self.backend = Some(backend.to_string());
        self
    }

    /// A work folder that outlives the executor (restart tests).
    pub fn work_dir(mut self, dir: &Path) -> Self {
        self.work_dir = Some(dir.to_path_buf());
        self
    }

    pub fn start(self) -> Executor {
        require_bwrap();
        let (tmp, work_dir) = match self.work_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("opr-exec-test-")
                    .tempdir()
                    .expect("work tempdir");
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let canary = format!("canary-{}", random_hex(16));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_opr"));
        cmd.arg("executor").arg("--listen").arg("127.0.0.1:0");
        if let Some(b) = &self.backend {
            cmd.arg("--backend").arg(b);
        }
        // The machine's environment may carry settings of its own.
        for (k, _) in std::env::vars() {
            if k.starts_with("OPR_") || k == "NODE_EXTRA_CA_CERTS" || k == "NODE_OPTIONS" {
                cmd.env_remove(k);
            }
        }
        cmd.env("OPR_EXECUTOR_SECRET", &self.secret)
            .env("OPR_EXECUTOR_ENV", "development")
            .env("OPR_EXECUTOR_HOSTNAME", &self.hostname)
            .env("OPR_EXECUTOR_WORK_DIR", &work_dir)
            .env("XDG_CACHE_HOME", shared_cache_home())
            // Something no runtime may see (isolation tests).
            .env("OPR_TEST_CANARY", &canary);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn opr executor");
        let output = Arc::new(Mutex::new(Vec::<String>::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout");
        let out = output.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                out.lock().expect("lock").push(format!("stdout: {line}"));
                let _ = tx.send(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let err = output.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut o = err.lock().expect("lock");
                // Bounded: a noisy executor must not eat the test's memory.
                if o.len() < 5000 {
                    o.push(format!("stderr: {line}"));
                }
            }
        });
        let deadline = Instant::now() + STARTUP_WAIT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("opr executor listening on http://") {
                        break rest.split_whitespace().next().expect("address").to_string();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Ok(Some(status)) = child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "opr executor exited ({status}) before listening:\n{}",
                    output.lock().expect("lock").join("\n")
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!(
                    "opr executor did not print its listening line within {STARTUP_WAIT:?}:\n{}",
                    output.lock().expect("lock").join("\n")
                );
            }
        };
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("http client");
        Executor {
            child: Some(child),
            addr,
            secret: self.secret,
            hostname: self.hostname,
            work_dir,
            canary,
            output,
            client,
            _tmp: tmp,
        }
    }
}

pub struct Executor {
    child: Option<Child>,
    pub addr: String,
    pub secret: String,
    pub hostname: String,
    pub work_dir: PathBuf,
    /// Value of `OPR_TEST_CANARY` in the executor's environment.
    pub canary: String,
    output: Arc<Mutex<Vec<String>>>,
    pub client: reqwest::blocking::Client,
    _tmp: Option<tempfile::TempDir>,
}

/// One HTTP answer, fully read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}), status {}: {}",
                self.status,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Asserts the status, showing the body otherwise.
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self
    }

    /// Asserts an error body of executor-api §3.1 and returns it.
    #[track_caller]
    pub fn expect_error(&self, status: u16, kind: &str) -> Value {
        self.expect_status(status);
        let body = self.json();
        assert_eq!(body["type"], kind, "error type; body: {body}");
        assert_eq!(body["code"], status, "error code; body: {body}");
        assert!(body["message"].is_string(), "message; body: {body}");
        assert!(body["version"].is_string(), "version; body: {body}");
        assert_eq!(
            self.header("cache-control").as_deref(),
            Some("no-cache, no-store, must-revalidate")
        );
        assert_eq!(self.header("expires").as_deref(), Some("0"));
        assert_eq!(self.header("pragma").as_deref(), Some("no-cache"));
        assert_eq!(self.header("server").as_deref(), Some("Executor"));
        body
    }
}

/// Which token a request carries.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    Secret,
    None,
    Token(&'a str),
    Raw(&'a str),
}

impl Executor {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// What the executor printed so far (for failure messages).
    pub fn output(&self) -> String {
        self.output.lock().expect("lock").join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Auth<'_>,
        build: impl FnOnce(reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder,
    ) -> Resp {
        let mut rb = self.client.request(method.clone(), self.url(path));
        rb = match auth {
            Auth::Secret => rb.header("authorization", format!("Bearer {}", self.secret)),
            Auth::None => rb,
            Auth::Token(t) => rb.header("authorization", format!("Bearer {t}")),
            Auth::Raw(v) => rb.header("authorization", v),
        };
        let resp = build(rb).send().unwrap_or_else(|e| {
            panic!(
                "{method} {path} failed: {e}\nexecutor output:\n{}",
                self.output()
            )
        });
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .unwrap_or_else(|e| panic!("{method} {path}: reading body: {e}"))
            .to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request(reqwest::Method::GET, path, Auth::Secret, |r| r)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Resp {
        let body = body.clone();
        self.request(reqwest::Method::POST, path, Auth::Secret, move |r| {
            r.json(&body)
        })
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.request(reqwest::Method::DELETE, path, Auth::Secret, |r| r)
    }

    /// `POST /v1/runtimes`.
    pub fn create(&self, body: &Value) -> Resp {
        self.post_json("/v1/runtimes", body)
    }

    /// `POST /v1/runtimes/{id}/executions` answered as JSON.
    pub fn execute(&self, id: &str, body: &Value) -> Resp {
        self.execute_with(id, body, "application/json", &[])
    }

    pub fn execute_with(
        &self,
        id: &str,
        body: &Value,
        accept: &str,
        headers: &[(&str, &str)],
    ) -> Resp {
        let body = body.clone();
        let accept = accept.to_string();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.request(
            reqwest::Method::POST,
            &format!("/v1/runtimes/{id}/executions"),
            Auth::Secret,
            move |mut r| {
                r = r.header("accept", accept).json(&body);
                for (k, v) in headers {
                    r = r.header(k, v);
                }
                r
            },
        )
    }

    /// An execution that must succeed with a 200 from the function; returns
    /// the JSON result object.
    #[track_caller]
    pub fn execute_ok(&self, id: &str, body: &Value) -> Value {
        let r = self.execute(id, body);
        assert_eq!(
            r.status,
            200,
            "execution of {id} failed: {}\nexecutor output:\n{}",
            r.text(),
            self.output()
        );
        let v = r.json();
        assert_eq!(v["statusCode"], 200, "function status; result: {v}");
        v
    }

    /// `GET /v1/runtimes`.
    pub fn list(&self) -> Vec<Value> {
        let r = self.get("/v1/runtimes");
        r.expect_status(200);
        match r.json() {
            Value::Array(a) => a,
            other => panic!("list is not an array: {other}"),
        }
    }

    pub fn list_ids(&self) -> Vec<String> {
        let prefix = format!("{}-", self.hostname);
        self.list()
            .iter()
            .map(|r| {
                let name = r["name"].as_str().expect("name");
                name.strip_prefix(&prefix).unwrap_or(name).to_string()
            })
            .collect()
    }

    /// `GET /v1/runtimes/{id}`: `None` on 404.
    pub fn runtime(&self, id: &str) -> Option<Value> {
        let r = self.get(&format!("/v1/runtimes/{id}"));
        match r.status {
            200 => Some(r.json()),
            404 => None,
            s => panic!("GET runtime {id}: status {s}: {}", r.text()),
        }
    }

    /// Health answers 200 with `status: pass` within a few seconds.
    pub fn assert_healthy(&mut self) {
        assert!(self.is_running(), "executor died:\n{}", self.output());
        let r = self.request(reqwest::Method::GET, "/v1/health", Auth::None, |r| {
            r.timeout(Duration::from_secs(10))
        });
        r.expect_status(200);
        assert_eq!(r.json()["status"], "pass");
    }

    /// The per-runtime work folder (executor-api §7.4).
    pub fn runtime_dir(&self, id: &str) -> PathBuf {
        self.work_dir.join(format!("{}-{id}", self.hostname))
    }

    /// Stops the executor without letting it clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, bounded wait, then SIGKILL. Returns whether it exited by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        loop {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- packages

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    Node,
    Python,
    Bun,
}

impl Lang {
    pub fn name(self) -> &'static str {
        match self {
            Lang::Node => "node",
            Lang::Python => "python",
            Lang::Bun => "bun",
        }
    }
    pub fn image(self) -> &'static str {
        match self {
            Lang::Node => NODE_IMAGE,
            Lang::Python => PYTHON_IMAGE,
            Lang::Bun => BUN_IMAGE,
        }
    }
    pub fn entrypoint(self) -> &'static str {
        match self {
            Lang::Node => "index.js",
            Lang::Python => "main.py",
            Lang::Bun => "index.ts",
        }
    }
    pub fn build_command(self) -> &'static str {
        match self {
            Lang::Node => NODE_BUILD,
            Lang::Python => PYTHON_BUILD,
            Lang::Bun => BUN_BUILD,
        }
    }
}

pub fn fixture_dir(lang: Lang) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(lang.name())
        .join("app")
}

/// A `.tar.gz` of the fixture folder (what a platform uploads), in `dir`.
pub fn source_archive(lang: Lang, dir: &Path) -> PathBuf {
    let path = dir.join(format!("{}-source-{}.tar.gz", lang.name(), random_hex(6)));
    let file = std::fs::File::create(&path).expect("create source archive");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all(".", fixture_dir(lang))
        .expect("archive fixture");
    tar.into_inner()
        .expect("tar")
        .finish()
        .expect("gzip")
        .flush()
        .expect("flush");
    path
}

/// The request of a build as Appwrite sends it.
pub fn build_request(lang: Lang, runtime_id: &str, source: &Path, destination: &Path) -> Value {
    json!({
        "runtimeId": runtime_id,
        "image": lang.image(),
        "source": source.to_str().expect("utf-8 path"),
        "destination": destination.to_str().expect("utf-8 path"),
        "entrypoint": lang.entrypoint(),
        "command": lang.build_command(),
        "remove": true,
        "timeout": 120,
        "variables": {},
    })
}

/// A built package owned by one test (a private copy of the shared one).
pub struct Package {
    pub lang: Lang,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Package {
    /// Execution parameters that cold-start this package (executor-api §17).
    pub fn exec(&self, path: &str) -> Value {
        json!({
            "image": self.lang.image(),
            "source": self.path.to_str().expect("utf-8 path"),
            "entrypoint": self.lang.entrypoint(),
            "runtimeEntrypoint": RUNTIME_ENTRYPOINT,
            "path": path,
            "method": "GET",
            "headers": {},
            "timeout": 30,
        })
    }
}

/// Extends a JSON object with more fields.
pub fn with(mut base: Value, extra: Value) -> Value {
    let (Value::Object(b), Value::Object(e)) = (&mut base, extra) else {
        panic!("objects expected")
    };
    for (k, v) in e {
        b.insert(k, v);
    }
    base
}

/// What a built package depends on: the fixture and the runtime's
/// helpers and hooks (they unpack, build and pack).
fn fixture_hash(lang: Lang) -> u64 {
    fn walk(dir: &Path, h: &mut DefaultHasher) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            p.file_name().hash(h);
            if p.is_dir() {
                walk(&p, h);
            } else if let Ok(bytes) = std::fs::read(&p) {
                bytes.hash(h);
            }
        }
    }
    let mut h = DefaultHasher::new();
    walk(&fixture_dir(lang), &mut h);
    let runtime = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../runtimes")
        .join(lang.name());
    walk(&runtime.join("helpers"), &mut h);
    walk(&runtime.join("hooks"), &mut h);
    h.finish()
}

struct FileLock(std::fs::File);

impl FileLock {
    fn acquire(path: &Path) -> FileLock {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .expect("open lock file");
        // SAFETY: flock on a descriptor we own; blocks until granted.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        FileLock(f)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// The fixture of `lang`, built once for the whole suite through a real
/// executor, then copied for this test.
pub fn package(lang: Lang) -> Package {
    let dir = suite_dir().join("packages");
    std::fs::create_dir_all(&dir).expect("packages dir");
    let cached = dir.join(format!("{}-{:016x}.gz", lang.name(), fixture_hash(lang)));
    let (own, path) = {
        let _lock = FileLock::acquire(&dir.join(format!("{}.lock", lang.name())));
        if !cached.is_file() {
            let ex = executor().start();
            let tmp = tempfile::tempdir().expect("tempdir");
            let source = source_archive(lang, tmp.path());
            let dest = tmp.path().join("builds");
            let r = ex.create(&build_request(lang, &unique_id("pkg"), &source, &dest));
            assert_eq!(
                r.status,
                201,
                "building the {} fixture failed: {}\nexecutor output:\n{}",
                lang.name(),
                r.text(),
                ex.output()
            );
            let built = PathBuf::from(r.json()["path"].as_str().expect("path"));
            let part = cached.with_extension("part");
            std::fs::copy(&built, &part).expect("copy package");
            std::fs::rename(&part, &cached).expect("publish package");
            // Packages of older fixtures or binaries are of no further use.
            let prefix = format!("{}-", lang.name());
            for entry in std::fs::read_dir(&dir)
                .expect("packages dir")
                .filter_map(Result::ok)
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && entry.path() != cached {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        // Copied under the lock: a later build may delete this version.
        let own = tempfile::tempdir().expect("tempdir");
        let path = own.path().join("package.gz");
        std::fs::copy(&cached, &path).expect("copy package");
        (own, path)
    };
    Package {
        lang,
        path,
        _dir: own,
    }
}

// ---------------------------------------------------------------- multipart

/// One part of a multipart body.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

/// Builds a `multipart/form-data` body; returns (content type, body).
pub fn multipart_body(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = format!("----opr-test-{}", random_hex(16));
    let mut body = Vec::new();
    for (name, ct, data) in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n")
                .as_bytes(),
        );
        if let Some(ct) = ct {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// Parses a multipart answer strictly: `--B`, then parts separated by
/// `\r\n--B`, ending with `--`.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<Part> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
        .unwrap_or_else(|| panic!("no boundary in {content_type:?}"))
        .trim_matches('"')
        .to_string();
    let open = format!("--{boundary}");
    assert!(
        body.starts_with(open.as_bytes()),
        "multipart body does not start with the boundary"
    );
    let delim = format!("\r\n--{boundary}");
    let mut parts = Vec::new();
    let mut pos = open.len();
    loop {
        if body[pos..].starts_with(b"--") {
            break;
        }
        assert!(
            body[pos..].starts_with(b"\r\n"),
            "no CRLF after boundary at {pos}"
        );
        pos += 2;
        let head_end = find(body, b"\r\n\r\n", pos).expect("end of part headers");
        let head = String::from_utf8_lossy(&body[pos..head_end]).into_owned();
        let data_start = head_end + 4;
        let data_end = find(body, delim.as_bytes(), data_start).expect("closing boundary");
        let mut name = None;
        let mut ct = None;
        for line in head.split("\r\n") {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                let i = line.find("name=\"").expect("name") + 6;
                let j = line[i..].find('"').expect("name end") + i;
                name = Some(line[i..j].to_string());
            } else if lower.starts_with("content-type:") {
                ct = Some(line["content-type:".len()..].trim().to_string());
            }
        }
        parts.push(Part {
            name: name.expect("part name"),
            content_type: ct,
            data: body[data_start..data_end].to_vec(),
        });
        pos = data_end + delim.len();
    }
    parts
}

/// A multipart execution result as a map of part name → part.
pub fn multipart_result(r: &Resp) -> Vec<Part> {
    let ct = r.header("content-type").expect("content type");
    assert!(
        ct.starts_with("multipart/form-data; boundary="),
        "content type {ct}"
    );
    parse_multipart(&ct, &r.body)
}

pub fn part<'a>(parts: &'a [Part], name: &str) -> &'a Part {
    parts
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no part {name}"))
}

// ---------------------------------------------------------------- misc

/// Reads a whole HTTP response from a raw socket (for requests reqwest
/// would alter, such as one without `Accept`).
pub fn raw_http(addr: &str, request: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(HTTP_TIMEOUT)).expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// `YYYY-MM-DDTHH:MM:SS.mmm+00:00` (executor-api §7.7).
pub fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 29 {
        return false;
    }
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22];
    digits.iter().all(|&i| b[i].is_ascii_digit())
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && &s[23..] == "+00:00"
}

pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Host processes whose environment holds `needle` (e.g. a runtime's
/// `OPEN_RUNTIMES_SECRET=<key>`).
pub fn processes_with_env(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(env) = std::fs::read(entry.path().join("environ")) {
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                found.push(pid);
            }
        }
    }
    found
}

/// Waits until the executor's health report shows a warm-pool runtime
/// ready to be assigned (any backend).
pub fn wait_for_pool(ex: &Executor) {
    wait_for(Duration::from_secs(90), "a ready warm-pool runtime", || {
        let r = ex.get("/v1/health");
        (r.status == 200).then_some(())?;
        let pool = r.json()["pool"].as_object()?.clone();
        pool.values()
            .any(|p| p["ready"].as_u64().unwrap_or(0) > 0)
            .then_some(())
    });
}

/// The JSON a fixture function answered with.
pub fn body_json(v: &Value) -> Value {
    serde_json::from_str(v["body"].as_str().expect("body")).expect("function JSON")
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `cmd` with bash inside the runtime through the fixture.
pub fn sh(ex: &Executor, id: &str, cmd: &str) -> Value {
    let v = ex.execute_ok(
        id,
        &json!({ "path": format!("/exec?cmd={}", url_encode(cmd)), "timeout": 30 }),
    );
    body_json(&v)
}

/// Cold-starts a fresh runtime id with `body` (execution parameters) on an
/// executor with a warm pool, and makes sure the pool served it: waits for
/// a ready pool runtime, and retries (bounded) when the start was not a
/// pool hit (a hit leaves no `<hostname>-<id>` work folder; the runtime
/// lives in the pool's). Returns (id, wall time, result).
pub fn pool_cold_start(ex: &Executor, body: &Value) -> (String, Duration, Value) {
    for _ in 0..5 {
        wait_for_pool(ex);
        let id = unique_id("pooled");
        let started = Instant::now();
        let v = ex.execute_ok(&id, body);
        let took = started.elapsed();
        if !ex.runtime_dir(&id).exists() {
            return (id, took, v);
        }
        // Not a hit: remove it, so a runtime limit is not spent on it.
        ex.delete(&format!("/v1/runtimes/{id}")).expect_status(200);
    }
    panic!(
        "no cold start was served by the warm pool:\n{}",
        ex.output()
    );
}

/// How many sandboxes of executor `ex` exist on the current backend:
/// bubblewrap processes naming its work folder (process), its labelled
/// containers (docker) or services (swarm).
pub fn sandboxes_of(ex: &Executor) -> usize {
    let label = format!("label=openruntimes-executor={}", ex.hostname);
    let args: &[&str] = match current_backend() {
        "docker" => &["ps", "-aq", "--filter", &label],
        "swarm" => &["service", "ls", "-q", "--filter", &label],
        _ => return processes_with_cmdline(&ex.work_dir.to_string_lossy()).len(),
    };
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(out.status.success(), "docker {args:?} failed");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Host processes whose command line mentions `needle` (bwrap's command
/// line names the runtime's host folders).
pub fn processes_with_cmdline(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                found.push(pid);
            }
        }
    }
    found
}
