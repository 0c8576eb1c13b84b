//! Harness for the conformance tests: starts a real `opr-runtime` process with
//! a real Node or Python worker on a fixture function, and talks HTTP to it.
//!
//! Every wait is bounded; ports come from the OS (`--listen 127.0.0.1:0`);
//! the process group of the server is killed when the [`Runtime`] is dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The secret the harness configures by default and sends on every request.
pub const SECRET: &str = "conformance-secret";

pub const TIMEOUT_ERROR: &str =
    "Header \"x-open-runtimes-timeout\" must be an integer greater than 0.";
pub const SECRET_ERROR: &str = "Unauthorized. Provide correct \"x-open-runtimes-secret\" header.";
pub const BODY_LIMIT_ERROR: &str = "Request body size exceeds 20MB limit.";
pub const NATIVE_BANNER: &str =
    "Native logs detected. Use context.log() or context.error() for better experience.";
pub const MISSING_RETURN_ERROR: &str =
    "Return statement missing. return context.res.empty() if no response is expected.";
pub const TRUNCATION_SUFFIX: &str = "... Log truncated due to size limit (8000 characters)";
pub const TIMED_OUT_ERROR: &str = "Execution timed out.";
pub const LOG_ID_HEADER: &str = "x-open-runtimes-log-id";

/// How long the server may take to print its start-up lines.
const STARTUP_WAIT: Duration = Duration::from_secs(20);
/// Upper bound for any single HTTP exchange in the tests.
pub const REQUEST_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Node,
    Python,
    /// Bun runs the Node worker, and the Node fixtures (plain JavaScript)
    /// unless `fixtures/bun/<name>` exists.
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

    /// The entrypoint of the shared fixtures. It is the runtime's default
    /// (docs/runtime.md) except for Bun, whose default is `index.ts`: Bun
    /// runs the Node fixtures with `OPEN_RUNTIMES_ENTRYPOINT=index.js`.
    pub fn entrypoint(self) -> &'static str {
        match self {
            Lang::Node | Lang::Bun => "index.js",
            Lang::Python => "main.py",
        }
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture_dir(lang: Lang, fixture: &str) -> PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let own = fixtures.join(lang.name()).join(fixture);
    if lang == Lang::Bun && !own.is_dir() {
        return fixtures.join(Lang::Node.name()).join(fixture);
    }
    own
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create function dir");
    for entry in std::fs::read_dir(from)
        .unwrap_or_else(|e| panic!("read fixture dir {}: {e}", from.display()))
    {
        let entry = entry.expect("fixture dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// Configuration of one server start.
pub struct RuntimeBuilder {
    lang: Lang,
    fixture: String,
    secret: Option<String>,
    env: Vec<(String, String)>,
    timings: Option<String>,
}

impl RuntimeBuilder {
    /// Sets `OPEN_RUNTIMES_SECRET` (`None`: leave it unset; `Some("")`: empty).
    pub fn secret(mut self, secret: Option<&str>) -> Self {
        self.secret = secret.map(str::to_owned);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn entrypoint(self, entrypoint: &str) -> Self {
        self.env("OPEN_RUNTIMES_ENTRYPOINT", entrypoint)
    }

    /// Writes the timings file with this content before start. Without it
    /// the file does not exist.
    pub fn timings(mut self, content: &str) -> Self {
        self.timings = Some(content.to_owned());
        self
    }

    pub fn start(self) -> Runtime {
        let root = tempfile::tempdir().expect("create temp dir");
        // The folder must be named `function`: Python imports it as a package.
        let function_dir = root.path().join("function");
        copy_dir(&fixture_dir(self.lang, &self.fixture), &function_dir);
        let logs_dir = root.path().join("logs");
        std::fs::create_dir_all(&logs_dir).expect("create logs dir");
        let timings_file = root.path().join("timings.txt");
        if let Some(content) = &self.timings {
            std::fs::write(&timings_file, content).expect("write timings file");
        }

        let mut command = Command::new(env!("CARGO_BIN_EXE_opr-runtime"));
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--language")
            .arg(self.lang.name())
            .arg("--server-dir")
            .arg(repo_root().join("runtimes").join(self.lang.name()))
            .arg("--function-dir")
            .arg(&function_dir)
            .arg("--logs-dir")
            .arg(&logs_dir)
            .arg("--timings-file")
            .arg(&timings_file);
        if self.lang == Lang::Python {
            command.arg("--interpreter").arg("/usr/bin/python3");
        }
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(secret) = &self.secret {
            command.env("OPEN_RUNTIMES_SECRET", secret);
        }
        // A Node fixture run by Bun: its entrypoint is not Bun's default.
        let shared = !fixture_dir(self.lang, &self.fixture).starts_with(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(self.lang.name()),
        );
        if shared {
            command.env("OPEN_RUNTIMES_ENTRYPOINT", self.lang.entrypoint());
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        {
            use std::os::unix::process::CommandExt;
            // Own process group, so drop can kill the server and its workers.
            command.process_group(0);
        }

        let mut child = command.spawn().expect("spawn opr-runtime");
        let output = Arc::new(Mutex::new(Vec::<String>::new()));
        let (lines_tx, lines_rx) = mpsc::channel::<String>();

        let stdout = child.stdout.take().expect("child stdout");
        let stdout_output = Arc::clone(&output);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                stdout_output
                    .lock()
                    .expect("output lock")
                    .push(format!("stdout: {line}"));
                // The receiver goes away after start-up; keep draining.
                let _ = lines_tx.send(line);
            }
        });
        let stderr = child.stderr.take().expect("child stderr");
        let stderr_output = Arc::clone(&output);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                stderr_output
                    .lock()
                    .expect("output lock")
                    .push(format!("stderr: {line}"));
            }
        });

        let mut runtime = Runtime {
            child,
            port: 0,
            lang: self.lang,
            root,
            function_dir,
            logs_dir,
            timings_file,
            secret: self.secret,
            output,
            client: reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(REQUEST_WAIT)
                .build()
                .expect("build HTTP client"),
        };

        let deadline = Instant::now() + STARTUP_WAIT;
        let mut banner = false;
        while runtime.port == 0 || !banner {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("opr-runtime listening on http://") {
                        let port = rest
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.trim().parse::<u16>().ok())
                            .unwrap_or_else(|| panic!("cannot parse port from {line:?}"));
                        runtime.port = port;
                    } else if line.contains("HTTP server successfully started!") {
                        banner = true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "opr-runtime ({}) did not start within {STARTUP_WAIT:?}; output:\n{}",
                    self.lang.name(),
                    runtime.output_text()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Let the stderr thread catch up on the last lines.
                    let status = runtime.child.wait().ok();
                    panic!(
                        "opr-runtime ({}) exited before start-up ({status:?}); output:\n{}",
                        self.lang.name(),
                        runtime.output_text()
                    )
                }
            }
        }
        runtime
    }
}

/// A running `opr-runtime` on one fixture.
pub struct Runtime {
    child: Child,
    pub port: u16,
    pub lang: Lang,
    root: tempfile::TempDir,
    pub function_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub timings_file: PathBuf,
    secret: Option<String>,
    output: Arc<Mutex<Vec<String>>>,
    client: reqwest::blocking::Client,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscall; the group id is the pid of our own child,
        // which leads the process group we created for it.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "--- opr-runtime ({}) output ---\n{}",
                self.lang.name(),
                self.output_text()
            );
        }
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The `x-open-runtimes-log-id` header; panics when absent.
    pub fn log_id(&self) -> String {
        self.header(LOG_ID_HEADER)
            .unwrap_or_else(|| panic!("response has no {LOG_ID_HEADER} header: {self:?}"))
    }
}

impl Runtime {
    pub fn builder(lang: Lang, fixture: &str) -> RuntimeBuilder {
        RuntimeBuilder {
            lang,
            fixture: fixture.to_owned(),
            secret: Some(SECRET.to_owned()),
            env: Vec::new(),
            timings: None,
        }
    }

    /// Starts the fixture with the default secret.
    pub fn start(lang: Lang, fixture: &str) -> Runtime {
        Self::builder(lang, fixture).start()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A request with the configured secret already attached.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        let builder = self.bare(method, path);
        match &self.secret {
            Some(secret) if !secret.is_empty() => builder.header("x-open-runtimes-secret", secret),
            _ => builder,
        }
    }

    /// A request without the secret header.
    pub fn bare(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// `POST /` running the fixture action `action`.
    pub fn action(&self, action: &str) -> reqwest::blocking::RequestBuilder {
        self.request(reqwest::Method::POST, "/")
            .header("x-action", action)
    }

    pub fn output_text(&self) -> String {
        self.output.lock().expect("output lock").join("\n")
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.logs_dir.join(format!("{id}_logs.log"))
    }

    pub fn errors_path(&self, id: &str) -> PathBuf {
        self.logs_dir.join(format!("{id}_errors.log"))
    }

    /// Contents of `<id>_logs.log`; a missing file reads as empty.
    pub fn logs(&self, id: &str) -> String {
        read_or_empty(&self.log_path(id))
    }

    /// Contents of `<id>_errors.log`; a missing file reads as empty.
    pub fn errors(&self, id: &str) -> String {
        read_or_empty(&self.errors_path(id))
    }

    /// Names of the files in the logs directory.
    pub fn log_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.logs_dir)
            .expect("read logs dir")
            .map(|e| {
                e.expect("logs dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    /// Sends raw bytes on a fresh connection and reads one response.
    pub fn raw(&self, request: &[u8]) -> RawResponse {
        raw_exchange(self.port, request)
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A raw request on a fresh connection to the fixture action `action`,
    /// with `Host`, the secret and `Content-Length` added unless `headers`
    /// already has them (or has `Transfer-Encoding`).
    pub fn raw_action(
        &self,
        action: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawResponse {
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let host = format!("127.0.0.1:{}", self.port);
        let length = body.len().to_string();
        let mut all: Vec<(&str, &str)> = Vec::new();
        if !has("host") {
            all.push(("Host", &host));
        }
        all.push(("x-action", action));
        if let Some(secret) = self.secret.as_deref().filter(|s| !s.is_empty()) {
            all.push(("x-open-runtimes-secret", secret));
        }
        if !body.is_empty() && !has("content-length") && !has("transfer-encoding") {
            all.push(("Content-Length", &length));
        }
        all.extend_from_slice(headers);
        self.raw(&raw_request(method, target, &all, body))
    }
}

fn read_or_empty(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("read {}: {e}", path.display()),
    }
}

/// Sends the request and reads the whole response (bounded by REQUEST_WAIT).
pub fn send(builder: reqwest::blocking::RequestBuilder) -> Resp {
    let response = builder.send().expect("send request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().expect("read response body").to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// A response parsed from a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header lines in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.text()))
    }
}

/// Writes the whole request first (like curl does with a body), then reads
/// one response. Both directions are bounded by REQUEST_WAIT.
pub fn raw_exchange(port: u16, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_write_timeout(Some(REQUEST_WAIT))
        .expect("set write timeout");
    stream
        .set_read_timeout(Some(REQUEST_WAIT))
        .expect("set read timeout");
    stream
        .write_all(request)
        .expect("write the whole request before reading (server must keep reading)");
    stream.flush().expect("flush");
    read_response(&mut stream)
}

/// Sends several requests one after another on a single connection, reading
/// each response before sending the next (HTTP/1.1 keep-alive).
pub fn raw_keep_alive(port: u16, requests: &[Vec<u8>]) -> Vec<RawResponse> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_write_timeout(Some(REQUEST_WAIT))
        .expect("set write timeout");
    stream
        .set_read_timeout(Some(REQUEST_WAIT))
        .expect("set read timeout");
    requests
        .iter()
        .map(|request| {
            stream.write_all(request).expect("write request");
            read_response(&mut stream)
        })
        .collect()
}

/// Reads one HTTP/1.1 response with a Content-Length (or up to EOF).
pub fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let header_end = loop {
        if let Some(pos) = find(&buffer, b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut chunk).expect("read response head");
        assert!(
            n > 0,
            "connection closed before the response head was complete: {:?}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {line:?}"));
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let mut body = buffer[header_end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>().expect("numeric content-length"));
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    match length {
        _ if no_body => body.clear(),
        _ if chunked => body = read_chunked(stream, body),
        Some(length) => {
            while body.len() < length {
                let n = stream.read(&mut chunk).expect("read response body");
                assert!(n > 0, "connection closed inside the response body");
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(length);
        }
        None => loop {
            let n = stream.read(&mut chunk).expect("read response body to EOF");
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        },
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Decodes a chunked body; `buffer` holds what was already read after the head.
fn read_chunked(stream: &mut TcpStream, mut buffer: Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let mut fill = |buffer: &mut Vec<u8>| {
        let n = stream.read(&mut chunk).expect("read chunked body");
        assert!(n > 0, "connection closed inside a chunked body");
        buffer.extend_from_slice(&chunk[..n]);
    };
    loop {
        let line_end = loop {
            if let Some(pos) = find(&buffer, b"\r\n") {
                break pos;
            }
            fill(&mut buffer);
        };
        let size_text = String::from_utf8_lossy(&buffer[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|e| panic!("bad chunk size {size_text:?}: {e}"));
        buffer.drain(..line_end + 2);
        while buffer.len() < size + 2 {
            fill(&mut buffer);
        }
        if size == 0 {
            // Trailers are not expected; the last CRLF ends the body.
            return body;
        }
        body.extend_from_slice(&buffer[..size]);
        buffer.drain(..size + 2);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Builds a raw HTTP/1.1 request with `Connection: close`.
pub fn raw_request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// Defines one `#[test]` in module `$module` for each behaviour function
/// `fn name(lang: Lang)` in scope, run with `Lang::$lang`. Use the two
/// macros below, with `#[macro_use] mod common;`.
macro_rules! tests_for_language {
    ($module:ident, $lang:ident, $($name:ident),*) => {
        mod $module {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::common::Lang::$lang);
                }
            )*
        }
    };
}

/// `node::name`, `python::name` and `bun::name` for each `fn name(lang: Lang)`.
macro_rules! for_all_languages {
    ($($name:ident),* $(,)?) => {
        tests_for_language!(node, Node, $($name),*);
        tests_for_language!(python, Python, $($name),*);
        tests_for_language!(bun, Bun, $($name),*);
    };
}

/// `node::name` and `bun::name`: behaviours of the JavaScript worker.
#[allow(unused_macros)] // not every test binary has JavaScript-only tests
macro_rules! for_javascript_runtimes {
    ($($name:ident),* $(,)?) => {
        tests_for_language!(node, Node, $($name),*);
        tests_for_language!(bun, Bun, $($name),*);
    };
}
