//! `POST /v1/runtimes/{id}/executions`: cold start if needed, wait for the
//! runtime, forward, collect logs (executor-api §8).

use crate::create::CreateRequest;
use crate::engine::Executor;
use crate::error::{ApiError, ErrorType};
use crate::params::is_empty;
use crate::registry::{now, InFlight, Phase, Runtime};
use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use http_body_util::{BodyExt, Full, Limited};
use opr_orchestrator::RestartPolicy;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Each log file is passed on up to 5 MiB (executor-api §8.6).
pub const MAX_LOG_FILE: usize = 5 * 1024 * 1024;
/// A function response larger than this is refused rather than buffered.
const MAX_RESPONSE: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub runtime_id: String,
    pub body: Vec<u8>,
    pub path: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    pub timeout: u64,
    pub image: String,
    pub source: String,
    pub entrypoint: String,
    pub variables: BTreeMap<String, String>,
    pub cpus: f64,
    pub memory: u64,
    pub version: String,
    pub runtime_entrypoint: String,
    pub logging: bool,
    pub restart: RestartPolicy,
}

#[derive(Debug, Clone)]
pub struct ExecResult {
    pub status_code: u16,
    /// Lower-cased names in arrival order, each with its values.
    pub headers: Vec<(String, Vec<String>)>,
    pub body: Bytes,
    pub logs: String,
    pub errors: String,
    pub duration: f64,
    pub start_time: f64,
}

struct Budget {
    until: Instant,
}

impl Budget {
    fn remaining(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }
    fn exhausted(&self) -> bool {
        self.remaining().is_zero()
    }
}

impl Executor {
    pub async fn execute(self: &Arc<Self>, mut req: ExecRequest) -> Result<ExecResult, ApiError> {
        let budget = Budget {
            until: Instant::now() + Duration::from_secs(req.timeout),
        };
        req.variables.insert(
            "INERNAL_EXECUTOR_HOSTNAME".into(),
            self.cfg.hostname.clone(),
        );
        let name = self.runtime_name(&req.runtime_id);
        let inflight = self.acquire(&name, &req, &budget).await?;
        let rt = inflight.runtime().clone();
        rt.touch();

        // Billing starts here: after creation, before the port wait (§8.3).
        let start_time = now();
        let started = Instant::now();
        let view = rt.view();
        let addr = self.address_of(&rt).await?;
        if view.listening == 0 {
            wait_for_port(addr, &budget).await?;
            rt.update(|v| v.listening = 1);
        }
        let result = self
            .forward(&rt, &req, addr, &budget, start_time, started)
            .await;
        rt.touch();
        drop(inflight);
        result
    }

    /// Finds the runtime or cold-starts it; concurrent callers for one id
    /// share a single creation (§8.2, §8.3).
    async fn acquire(
        self: &Arc<Self>,
        name: &str,
        req: &ExecRequest,
        budget: &Budget,
    ) -> Result<InFlight, ApiError> {
        let mut last_error = String::new();
        loop {
            if let Some(inflight) = self.registry.enter(name) {
                let mut phase = inflight.runtime().phase();
                let outcome = tokio::time::timeout(
                    budget.remaining(),
                    phase.wait_for(|p| *p != Phase::Pending),
                )
                .await;
                match outcome {
                    Err(_) => return Err(ApiError::typed(ErrorType::RuntimeTimeout)),
                    Ok(Err(_)) => {
                        return Err(ApiError::with_message(
                            ErrorType::RuntimeNotFound,
                            "Runtime no longer exists.",
                        ))
                    }
                    Ok(Ok(p)) if *p == Phase::Ready => {
                        drop(p);
                        return Ok(inflight);
                    }
                    Ok(Ok(_)) => {
                        // Creation failed or it was removed: a fresh cold start
                        // may be asked for with the same parameters.
                        drop(inflight);
                        if is_empty(&req.image) || is_empty(&req.source) {
                            return Err(ApiError::with_message(
                                ErrorType::RuntimeNotFound,
                                "Runtime no longer exists.",
                            ));
                        }
                        if budget.exhausted() {
                            return Err(ApiError::typed(ErrorType::RuntimeTimeout));
                        }
                        continue;
                    }
                }
            }
            if is_empty(&req.image) || is_empty(&req.source) {
                return Err(ApiError::with_message(
                    ErrorType::RuntimeNotFound,
                    "Runtime not found. Please start it first or provide runtime-related parameters.",
                ));
            }
            if budget.exhausted() {
                return Err(ApiError::with_message(
                    ErrorType::RuntimeTimeout,
                    non_empty(last_error, "Timed out waiting for runtime."),
                ));
            }
            // A separate task: a client that hangs up must not abandon a
            // half-created runtime that others are waiting for.
            let exec = self.clone();
            let create = cold_start_request(req);
            let created = tokio::spawn(async move { exec.cold_start(create).await }).await;
            match created {
                Ok(Ok(())) => continue,
                Ok(Err(e)) if e.kind == ErrorType::RuntimeConflict => continue,
                Ok(Err(e)) if e.code >= 500 => {
                    last_error = e.message;
                    tokio::time::sleep(Duration::from_millis(500).min(budget.remaining())).await;
                }
                Ok(Err(e)) => {
                    return Err(ApiError::untyped(
                        500,
                        format!(
                        "An internal curl error has occurred while starting runtime! Error Msg: {}",
                        e.message
                    ),
                    ))
                }
                Err(_) => return Err(ApiError::untyped(500, "Runtime start was interrupted.")),
            }
        }
    }

    /// A pool hit only assigns the function; otherwise a full creation.
    async fn cold_start(self: &Arc<Self>, req: CreateRequest) -> Result<(), ApiError> {
        if let Some(result) = self.pool.try_assign(self, &req).await {
            return result;
        }
        self.create_runtime(req).await.map(|_| ())
    }

    async fn address_of(&self, rt: &Runtime) -> Result<SocketAddr, ApiError> {
        if let Some(a) = *rt.address.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(a);
        }
        let addr = self.orch.address(&rt.container()).await.map_err(|_| {
            ApiError::untyped(
                500,
                "Runtime secret not found. Please re-create the runtime.",
            )
        })?;
        *rt.address.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
        Ok(addr)
    }

    async fn forward(
        &self,
        rt: &Runtime,
        req: &ExecRequest,
        addr: SocketAddr,
        budget: &Budget,
        start_time: f64,
        started: Instant,
    ) -> Result<ExecResult, ApiError> {
        let view = rt.view();
        let method = http::Method::from_bytes(req.method.as_bytes()).unwrap_or(http::Method::GET);
        let path = if req.path.starts_with('/') {
            req.path.clone()
        } else {
            format!("/{}", req.path)
        };
        let send_body = !req.body.is_empty() && method != http::Method::HEAD;
        let mut attempts = 0u32;
        let response = loop {
            let remaining_secs = budget.remaining().as_secs().max(1);
            let request = build_request(
                &method,
                &addr,
                &path,
                req,
                &view.hostname,
                &view.key,
                remaining_secs,
                send_body,
            )?;
            let transport_timeout = Duration::from_secs(budget.remaining().as_secs() + 5);
            match tokio::time::timeout(transport_timeout, self.client.request(request)).await {
                Err(_) => return Err(curl_error(28)),
                Ok(Ok(resp)) => break resp,
                Ok(Err(e)) if e.is_connect() => {
                    attempts += 1;
                    let within_budget = started.elapsed() < Duration::from_secs(req.timeout);
                    if attempts < self.cfg.retry_attempts || within_budget {
                        tokio::time::sleep(self.cfg.retry_delay).await;
                        continue;
                    }
                    return Err(curl_error(7));
                }
                Ok(Err(e)) => {
                    let incomplete = std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<hyper::Error>())
                        .is_some_and(|h| h.is_incomplete_message());
                    return Err(curl_error(if incomplete { 52 } else { 56 }));
                }
            }
        };
        let status_code = response.status().as_u16();
        let mut headers: Vec<(String, Vec<String>)> = Vec::new();
        let mut log_id = String::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
            let name = name.as_str();
            if name == "x-open-runtimes-log-id" {
                log_id = percent_encoding::percent_decode_str(&value)
                    .decode_utf8_lossy()
                    .into_owned();
            }
            if name.starts_with("x-open-runtimes-") {
                continue;
            }
            match headers.iter_mut().find(|(n, _)| n == name) {
                Some((_, values)) => values.push(value),
                None => headers.push((name.to_string(), vec![value])),
            }
        }
        let body = if method == http::Method::HEAD {
            Bytes::new()
        } else {
            let remaining = budget.remaining() + Duration::from_secs(5);
            match tokio::time::timeout(
                remaining,
                Limited::new(response.into_body(), MAX_RESPONSE).collect(),
            )
            .await
            {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(_)) => return Err(curl_error(56)),
                Err(_) => return Err(curl_error(28)),
            }
        };
        let (logs, errors) = if !is_empty(&log_id) && req.logging {
            let dir = rt.work_dir.join("logs");
            let safe = log_file_stem(&log_id);
            (
                read_log(
                    &dir.join(format!("{safe}_logs.log")),
                    "\nLog file has been truncated to 5.00MB.",
                )
                .await,
                read_log(
                    &dir.join(format!("{safe}_errors.log")),
                    "\nError file has been truncated to 5.00MB.",
                )
                .await,
            )
        } else {
            (String::new(), String::new())
        };
        Ok(ExecResult {
            status_code,
            headers,
            body,
            logs,
            errors,
            duration: started.elapsed().as_secs_f64(),
            start_time,
        })
    }
}

fn non_empty(s: String, fallback: &str) -> String {
    if s.is_empty() {
        fallback.to_string()
    } else {
        s
    }
}

fn cold_start_request(req: &ExecRequest) -> CreateRequest {
    CreateRequest {
        runtime_id: req.runtime_id.clone(),
        image: req.image.clone(),
        entrypoint: req.entrypoint.clone(),
        source: req.source.clone(),
        variables: req.variables.clone(),
        runtime_entrypoint: req.runtime_entrypoint.clone(),
        timeout: 600,
        cpus: req.cpus,
        memory: req.memory,
        version: req.version.clone(),
        restart: req.restart,
        ..Default::default()
    }
}

fn curl_error(n: u32) -> ApiError {
    ApiError::untyped(
        500,
        format!("Internal curl error has occurred within the executor! Error Number: {n}"),
    )
}

/// The runtime writes `<id>_logs.log` with these characters replaced; the
/// executor must name the same file, and never one outside the folder.
pub fn log_file_stem(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if matches!(c, '/' | '\\' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect();
    if safe == "." || safe == ".." {
        "_".to_string()
    } else {
        safe
    }
}

/// Reads a log file (capped, with the truncation notice) and deletes it.
async fn read_log(path: &Path, notice: &str) -> String {
    use std::io::Read;
    // Most executions log little or nothing: a failed open of a missing
    // file, or a read of a few bytes from the page cache, costs
    // microseconds, less than handing it to the blocking pool. Only a large
    // file is read there.
    let Ok(file) = std::fs::File::open(path) else {
        return String::new();
    };
    let big = file.metadata().map(|m| m.len() > 256 << 10).unwrap_or(true);
    let mut buf = Vec::new();
    let read = move |file: std::fs::File, mut buf: Vec<u8>| {
        let _ = file.take(MAX_LOG_FILE as u64 + 1).read_to_end(&mut buf);
        buf
    };
    buf = if big {
        tokio::task::spawn_blocking(move || read(file, Vec::new()))
            .await
            .unwrap_or_default()
    } else {
        read(file, std::mem::take(&mut buf))
    };
    let _ = std::fs::remove_file(path);
    let truncated = buf.len() > MAX_LOG_FILE;
    buf.truncate(MAX_LOG_FILE);
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if truncated {
        text.push_str(notice);
    }
    text
}

#[allow(clippy::too_many_arguments)]
fn build_request(
    method: &http::Method,
    addr: &SocketAddr,
    path: &str,
    req: &ExecRequest,
    hostname: &str,
    key: &str,
    timeout_secs: u64,
    send_body: bool,
) -> Result<http::Request<Full<Bytes>>, ApiError> {
    let uri: http::Uri = format!("http://{addr}{path}").parse().map_err(|_| {
        ApiError::with_message(
            ErrorType::ExecutionBadRequest,
            "Invalid `path` for the execution.",
        )
    })?;
    let mut builder = http::Request::builder().method(method.clone()).uri(uri);
    let headers = builder
        .headers_mut()
        .ok_or_else(|| ApiError::untyped(500, "Cannot build the request."))?;
    for (k, v) in &req.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(name, value);
        }
    }
    let set = |headers: &mut http::HeaderMap, name: HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    let logging = if req.logging { "enabled" } else { "disabled" };
    set(
        headers,
        HeaderName::from_static("x-open-runtimes-logging"),
        logging.into(),
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("opr:{key}"));
    set(headers, AUTHORIZATION, format!("Basic {basic}"));
    set(
        headers,
        HeaderName::from_static("x-open-runtimes-secret"),
        key.into(),
    );
    set(
        headers,
        HeaderName::from_static("x-open-runtimes-timeout"),
        timeout_secs.to_string(),
    );
    if !headers.contains_key(HOST) {
        set(headers, HOST, format!("{hostname}:3000"));
    }
    if !headers.contains_key(ACCEPT) {
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    }
    if send_body && !headers.contains_key(CONTENT_TYPE) {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    }
    let body = if send_body {
        Bytes::from(req.body.clone())
    } else {
        Bytes::new()
    };
    builder
        .body(Full::new(body))
        .map_err(|_| ApiError::untyped(500, "Cannot build the request."))
}

async fn wait_for_port(addr: SocketAddr, budget: &Budget) -> Result<(), ApiError> {
    if crate::readiness::wait_until_serving(addr, budget.until.into()).await {
        Ok(())
    } else {
        Err(ApiError::typed(ErrorType::RuntimeTimeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_stems_match_the_runtime_and_stay_inside() {
        assert_eq!(log_file_stem("abc"), "abc");
        assert_eq!(log_file_stem("../x"), ".._x");
        assert_eq!(log_file_stem(".."), "_");
    }

    #[tokio::test]
    async fn log_reads_cap_at_5_mib_with_notice_and_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x_logs.log");
        std::fs::write(&p, vec![b'a'; MAX_LOG_FILE + 10]).expect("write");
        let text = read_log(&p, "\nLog file has been truncated to 5.00MB.").await;
        assert_eq!(
            text.len(),
            MAX_LOG_FILE + "\nLog file has been truncated to 5.00MB.".len()
        );
        assert!(!p.exists());
        let q = dir.path().join("y_logs.log");
        std::fs::write(&q, vec![b'b'; 1 << 20]).expect("write");
        assert_eq!(read_log(&q, "!").await.len(), 1 << 20);
    }
}
