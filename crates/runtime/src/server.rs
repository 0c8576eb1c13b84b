//! The HTTP side: the request pipeline of runtime-protocol §3.4.

use crate::language::Language;
use crate::logs::{generate_log_id, LogSink};
use crate::pool::Pool;
use crate::request::{self, AUTH_ERROR, TIMEOUT_ERROR};
use crate::response::build_headers;
use crate::settings::{read_dotenv, Settings};
use crate::worker::{Event, Outcome, WorkerSpec};
use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde::Serialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// runtime-protocol §3.7: 20 MiB.
pub const MAX_BODY: usize = 20 * 1024 * 1024;
/// How much of an oversized body is read and discarded before the
/// connection is closed anyway.
const MAX_DRAIN: u64 = 1 << 30;
const OVERSIZE_ERROR: &str = "Request body size exceeds 20MB limit.";
const MISSING_RETURN: &str =
    "Return statement missing. return context.res.empty() if no response is expected.";
const TIMED_OUT: &str = "Execution timed out.";
/// Without a timeout header, how long a request may wait for a worker to
/// come back after a crash.
const WORKER_WAIT: Duration = Duration::from_secs(30);
/// How long a worker has to confirm a cancellation before it is replaced.
const CANCEL_GRACE: Duration = Duration::from_millis(250);
const LOG_ID_HEADER: &str = "x-open-runtimes-log-id";

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub language: Language,
    pub function_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub timings_file: PathBuf,
    pub workers: usize,
    pub standby: bool,
    /// Required by `POST /__opr/assign`; assignment is off without it.
    pub control_token: Option<String>,
    pub worker: WorkerSpec,
    /// Where the spec variables are read from (the server's environment, or
    /// the clean one `opr run` builds).
    pub env: BTreeMap<String, String>,
}

struct State {
    cfg: Config,
    settings: RwLock<Arc<Settings>>,
    pool: Arc<Pool>,
    assigned: AtomicBool,
    assign_lock: tokio::sync::Mutex<()>,
}

/// A started server.
pub struct Running {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigurePayload<'a> {
    function_dir: &'a std::path::Path,
    entrypoint: &'a str,
    env: &'a BTreeMap<String, String>,
}

/// Starts the workers, waits until they are ready, then binds and serves.
pub async fn start(mut cfg: Config) -> anyhow::Result<Running> {
    // Workers run in another directory: relative paths would break there.
    for path in [
        &mut cfg.function_dir,
        &mut cfg.logs_dir,
        &mut cfg.timings_file,
        &mut cfg.worker.script,
        &mut cfg.worker.cwd,
    ] {
        *path = std::path::absolute(&*path)?;
    }
    if cfg.worker.interpreter.components().count() > 1 {
        cfg.worker.interpreter = std::path::absolute(&cfg.worker.interpreter)?;
    }
    let dotenv = read_dotenv(&cfg.function_dir.join(".open-runtimes"));
    let mut env = cfg.env.clone();
    env.extend(dotenv.clone());
    let settings = Settings::from_env(&env, cfg.language.default_entrypoint());
    let configure = if cfg.standby {
        None
    } else {
        Some(serde_json::to_vec(&ConfigurePayload {
            function_dir: &cfg.function_dir,
            entrypoint: &settings.entrypoint,
            env: &dotenv,
        })?)
    };
    let pool = Pool::start(cfg.worker.clone(), cfg.workers, configure);
    if !pool
        .wait_all_ready(Instant::now() + Duration::from_secs(30))
        .await
    {
        anyhow::bail!(
            "{} worker did not start within 30 s ({} {})",
            cfg.language.name(),
            cfg.worker.interpreter.display(),
            cfg.worker.script.display()
        );
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(State {
        assigned: AtomicBool::new(!cfg.standby),
        settings: RwLock::new(Arc::new(settings)),
        pool,
        cfg,
        assign_lock: tokio::sync::Mutex::new(()),
    });
    let task = tokio::spawn(accept_loop(listener, state));
    Ok(Running { addr, task })
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: keep serving.
                eprintln!("opr-runtime: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(60))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

type Resp = Response<Full<Bytes>>;

fn plain(status: StatusCode, body: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// An empty-bodied answer that carries the log id (§3.12 step 4).
fn with_log_id(status: StatusCode, log_id: &HeaderValue, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(LOG_ID_HEADER, log_id.clone());
    r
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    // 1. Reserved paths, before anything else (§3.3).
    match req.uri().path() {
        "/__opr/health" => return Ok(plain(StatusCode::OK, "OK")),
        "/__opr/timings" => return Ok(timings(&state).await),
        "/__opr/assign" if state.cfg.standby && control_token_ok(&state, &req) => {
            return Ok(assign(state, req).await)
        }
        _ => {}
    }
    if !state.assigned.load(Ordering::Acquire) {
        return Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "Runtime is on standby: no function assigned yet.",
        ));
    }
    let settings = state
        .settings
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let headers = req.headers();

    // 2. Logging setup: fix the id, create no file yet (§3.13).
    let logging = match headers.get("x-open-runtimes-logging").map(|v| v.as_bytes()) {
        None | Some(b"") | Some(b"enabled") => true,
        Some(_) => false,
    };
    let log_id = if !logging {
        String::new()
    } else {
        match headers.get(LOG_ID_HEADER).map(|v| v.as_bytes()) {
            Some(id) if !id.is_empty() => String::from_utf8_lossy(id).into_owned(),
            _ if settings.development => "dev".to_string(),
            _ => generate_log_id(),
        }
    };

    // 3. Timeout header (§3.5), 4. authentication (§3.6).
    let Ok(timeout) =
        request::parse_timeout(headers.get("x-open-runtimes-timeout").map(|v| v.as_bytes()))
    else {
        return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, TIMEOUT_ERROR));
    };
    if !settings.secret.is_empty()
        && !request::secret_matches(
            headers.get("x-open-runtimes-secret").map(|v| v.as_bytes()),
            &settings.secret,
        )
    {
        return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, AUTH_ERROR));
    }
    let deadline = timeout.map(|s| Instant::now() + Duration::from_secs(s.min(86_400 * 365)));
    let header_id = HeaderValue::from_str(&log_id).unwrap_or_else(|_| HeaderValue::from_static(""));
    let mut sink = LogSink::new(&state.cfg.logs_dir, logging.then_some(log_id.as_str()));

    // 5. Body, with the 20 MiB limit (§3.7).
    let (parts, body) = req.into_parts();
    let body = match read_body(body, &parts.headers).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            sink.error(OVERSIZE_ERROR);
            sink.flush();
            let mut r = with_log_id(
                StatusCode::PAYLOAD_TOO_LARGE,
                &header_id,
                Bytes::from_static(OVERSIZE_ERROR.as_bytes()),
            );
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return Ok(r);
        }
        Err(BodyError::Broken) => {
            sink.error("Request body could not be read.");
            sink.flush();
            return Ok(with_log_id(
                StatusCode::INTERNAL_SERVER_ERROR,
                &header_id,
                Bytes::new(),
            ));
        }
    };

    // 6–7. What the function sees (§3.8, §3.9).
    let host = parts
        .headers
        .get(HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let proto = parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok());
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = request::url_parts(&host, proto, target);
    let fheaders = request::function_headers(&parts.headers, &settings.enforced_headers);
    let meta = serde_json::to_vec(&InvokeMeta {
        method: parts.method.as_str(),
        url: &url,
        headers: &fheaders,
        logging,
    })
    .unwrap_or_default();

    // 8–11. Invoke on a worker, racing the deadline.
    let outcome = invoke(&state, &mut sink, &meta, body, deadline).await;

    // 12–14. Respond after the log files are complete.
    let response = match outcome {
        Some(Outcome::Ok {
            status,
            headers,
            body,
        }) => {
            let mut invalid = Vec::new();
            let mut wire = build_headers(&headers, &mut invalid);
            for line in &invalid {
                sink.error(line);
            }
            match StatusCode::from_u16(status) {
                Ok(code) => {
                    wire.insert(LOG_ID_HEADER, header_id.clone());
                    let mut r = Response::new(Full::new(body));
                    *r.status_mut() = code;
                    *r.headers_mut() = wire;
                    r
                }
                Err(_) => {
                    sink.error(&format!(
                        "Invalid status code {status} returned by the function."
                    ));
                    with_log_id(StatusCode::INTERNAL_SERVER_ERROR, &header_id, Bytes::new())
                }
            }
        }
        Some(other) => {
            let status = match &other {
                Outcome::LoadError { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            sink.error(&failure_message(&other, &settings.entrypoint));
            with_log_id(status, &header_id, Bytes::new())
        }
        None => with_log_id(StatusCode::INTERNAL_SERVER_ERROR, &header_id, Bytes::new()),
    };
    sink.flush();
    Ok(response)
}

fn failure_message(outcome: &Outcome, entrypoint: &str) -> String {
    match outcome {
        Outcome::Exception(msg) => msg.clone(),
        Outcome::MissingReturn => MISSING_RETURN.to_string(),
        Outcome::LoadError { reason, detail } => match reason.as_str() {
            "missing" => format!("Failed to load entrypoint, file {entrypoint} does not exist."),
            "syntax" => format!("Syntax error in {entrypoint}: {detail}"),
            "signature" => {
                "Function signature invalid. Did you forget to export a 'main' function?"
                    .to_string()
            }
            _ => format!("Failed to load module: {detail}"),
        },
        Outcome::Invalid(detail) => format!("Invalid function output: {detail}"),
        Outcome::Ok { .. } => String::new(),
    }
}

#[derive(Serialize)]
struct InvokeMeta<'a> {
    method: &'a str,
    #[serde(flatten)]
    url: &'a request::UrlParts,
    headers: &'a BTreeMap<String, String>,
    logging: bool,
}

/// Runs one invocation. `None` means the request already got its error line
/// (timeout, dead worker) and ends with an empty 500.
async fn invoke(
    state: &State,
    sink: &mut LogSink,
    meta: &[u8],
    body: Bytes,
    deadline: Option<Instant>,
) -> Option<Outcome> {
    let wait_until = deadline.unwrap_or_else(|| Instant::now() + WORKER_WAIT);
    let Some(worker) = state.pool.pick(wait_until).await else {
        sink.error(if deadline.is_some() {
            TIMED_OUT
        } else {
            "No runtime worker is available."
        });
        return None;
    };
    let (guard, mut rx) = match worker.invoke(meta, body).await {
        Ok(x) => x,
        Err(e) => {
            sink.error(&format!(
                "Runtime worker failed before the execution started: {e}"
            ));
            return None;
        }
    };
    loop {
        let event = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), rx.recv()).await {
                Ok(ev) => ev,
                Err(_) => {
                    sink.error(TIMED_OUT);
                    // Stop it in the background; the answer need not wait.
                    tokio::spawn(guard.cancel(rx, CANCEL_GRACE));
                    return None;
                }
            },
            None => rx.recv().await,
        };
        match event {
            Some(Event::Log(stream, text)) => sink.write(stream, &String::from_utf8_lossy(&text)),
            Some(Event::Result(outcome)) => return Some(outcome),
            Some(Event::Died(status)) => {
                sink.error(&format!(
                    "Runtime worker {status} during the execution; it has been replaced."
                ));
                return None;
            }
            Some(Event::Cancelled(_)) => {}
            None => {
                sink.error("Runtime worker stopped during the execution; it has been replaced.");
                return None;
            }
        }
    }
}

enum BodyError {
    TooLarge,
    Broken,
}

/// Reads the whole body; past the limit, reads and discards the rest so a
/// client that sends everything before reading still gets the 413.
async fn read_body(mut body: Incoming, headers: &http::HeaderMap) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut too_large = declared.is_some_and(|n| n > MAX_BODY as u64);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(if too_large {
                BodyError::TooLarge
            } else {
                BodyError::Broken
            });
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > MAX_BODY as u64 {
            too_large = true;
        }
        if too_large {
            chunks.clear();
            if total > MAX_DRAIN {
                break;
            }
        } else {
            chunks.push(data);
        }
    }
    if too_large {
        return Err(BodyError::TooLarge);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(total as usize);
            chunks.iter().for_each(|c| all.extend_from_slice(c));
            all.freeze()
        }
    })
}

async fn timings(state: &State) -> Resp {
    match tokio::fs::read(&state.cfg.timings_file).await {
        Ok(data) => {
            let mut r = Response::new(Full::new(Bytes::from(data)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        Err(_) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}

fn control_token_ok(state: &State, req: &Request<Incoming>) -> bool {
    let Some(expected) = state.cfg.control_token.as_deref().filter(|t| !t.is_empty()) else {
        return false;
    };
    req.method() == Method::POST
        && request::secret_matches(
            req.headers()
                .get("x-opr-control-token")
                .map(|v| v.as_bytes()),
            expected,
        )
}

#[derive(serde::Deserialize)]
struct AssignRequest {
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    archive: Option<PathBuf>,
}

/// Turns a standby runtime into one serving a function (docs/runtime.md).
async fn assign(state: Arc<State>, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let _guard = state.assign_lock.lock().await;
    if state.assigned.load(Ordering::Acquire) {
        return plain(
            StatusCode::CONFLICT,
            "Runtime already has a function assigned.",
        );
    }
    let body = match http_body_util::Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Assignment body is over 1 MiB.",
            )
        }
    };
    let request: AssignRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "Assignment body must be JSON: {\"env\": {...}, \"archive\": \"/path\"}.",
            )
        }
    };
    let function_dir = state.cfg.function_dir.clone();
    if let Some(archive) = request.archive {
        let dir = function_dir.clone();
        let unpacked = tokio::task::spawn_blocking(move || {
            clear_dir(&dir)?;
            // This runs inside the runtime's sandbox, whose root is its own:
            // absolute links (a virtualenv's python) resolve there.
            let limits = opr_archive::Limits {
                allow_absolute_symlinks: true,
                ..opr_archive::Limits::default()
            };
            opr_archive::extract_file(&archive, &dir, limits).map_err(|e| e.to_string())
        })
        .await;
        match unpacked {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return text_response(
                    StatusCode::BAD_REQUEST,
                    format!("Cannot unpack the archive: {e}"),
                )
            }
            Err(_) => {
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Unpacking the archive failed.",
                )
            }
        }
    }
    let mut function_env = request.env;
    function_env.extend(read_dotenv(&function_dir.join(".open-runtimes")));
    let mut env = state.cfg.env.clone();
    env.extend(function_env.clone());
    let settings = Settings::from_env(&env, state.cfg.language.default_entrypoint());
    let payload = serde_json::to_vec(&ConfigurePayload {
        function_dir: &function_dir,
        entrypoint: &settings.entrypoint,
        env: &function_env,
    })
    .unwrap_or_default();
    if let Err(e) = state.pool.configure_all(payload).await {
        return text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("A worker did not take the function: {e}"),
        );
    }
    *state.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    state.assigned.store(true, Ordering::Release);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut r = Response::new(Full::new(Bytes::from(format!(
        "{{\"assignedMs\":{ms:.3}}}"
    ))));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn text_response(status: StatusCode, text: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn clear_dir(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let result = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        result.map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
