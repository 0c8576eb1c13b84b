//! The HTTP layer: each request becomes an `Action` (after authentication
//! and validation, executor-api §2.4), which the engine performs.

use crate::create::CreateRequest;
use crate::engine::Executor;
use crate::error::{ApiError, ErrorType};
use crate::execute::{ExecRequest, ExecResult};
use crate::multipart;
use crate::params::{is_empty, stringify, Params};
use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use opr_orchestrator::RestartPolicy;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// executor-api §2.1.
pub const MAX_REQUEST_BODY: usize = 22 * 1024 * 1024;
const MAX_EXEC_BODY: usize = 20 * 1024 * 1024;

pub type Body = BoxBody<Bytes, Infallible>;

/// What a request asks for, once parsed and validated.
#[derive(Debug)]
pub enum Action {
    Health,
    ListRuntimes,
    GetRuntime(String),
    CreateRuntime(CreateRequest),
    DeleteRuntime(String),
    Execute(ExecRequest, ResponseFormat),
    StreamLogs(String, Duration),
    Command {
        runtime_id: String,
        command: String,
        timeout: u64,
    },
    SubmitBuild(crate::builds::BuildJob),
    ListBuilds,
    GetBuild(String),
    BuildLogs(String),
    CancelBuild(String),
}

#[derive(Debug, Clone, Copy)]
pub struct ResponseFormat {
    pub json: bool,
    /// `x-executor-response-format` ≥ 0.11.0: repeated headers stay lists.
    pub header_lists: bool,
}

pub async fn serve(exec: Arc<Executor>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let exec = exec.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(exec.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(60))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(exec: Arc<Executor>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let mut response = match route(&exec, req).await {
        Ok(action) => perform(&exec, action)
            .await
            .unwrap_or_else(|e| error_response(&exec, &e)),
        Err(e) => error_response(&exec, &e),
    };
    response
        .headers_mut()
        .insert("server", HeaderValue::from_static("Executor"));
    Ok(response)
}

/// Matches the route, checks the Bearer token, reads and validates the
/// parameters, in that order.
async fn route(exec: &Executor, req: Request<Incoming>) -> Result<Action, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let route = match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "health"]) => Route::Health,
        (&Method::GET, ["v1", "runtimes"]) => Route::List,
        (&Method::POST, ["v1", "runtimes"]) => Route::Create,
        (&Method::GET, ["v1", "runtimes", id]) => Route::Get(decode(id)),
        (&Method::DELETE, ["v1", "runtimes", id]) => Route::Delete(decode(id)),
        (&Method::POST, ["v1", "runtimes", id, "executions" | "execution"]) => {
            Route::Execute(decode(id))
        }
        (&Method::GET, ["v1", "runtimes", id, "logs"]) => Route::StreamLogs(decode(id)),
        (&Method::POST, ["v1", "runtimes", id, "commands"]) => Route::Command(decode(id)),
        (&Method::POST, ["v1", "builds"]) => Route::SubmitBuild,
        (&Method::GET, ["v1", "builds"]) => Route::ListBuilds,
        (&Method::GET, ["v1", "builds", id]) => Route::GetBuild(decode(id)),
        (&Method::GET, ["v1", "builds", id, "logs"]) => Route::BuildLogs(decode(id)),
        (&Method::DELETE, ["v1", "builds", id]) => Route::CancelBuild(decode(id)),
        _ => return Err(ApiError::untyped(404, "Not Found")),
    };
    if matches!(route, Route::Health) {
        return Ok(Action::Health);
    }
    authenticate(exec, req.headers())?;
    let headers = req.headers().clone();
    let params = if method == Method::GET {
        Params::from_query(req.uri().query().unwrap_or(""))
    } else {
        let body = Limited::new(req.into_body(), MAX_REQUEST_BODY)
            .collect()
            .await
            .map_err(|_| ApiError::untyped(413, "Request body is larger than 22 MiB."))?
            .to_bytes();
        Params::from_body(
            headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            &body,
        )
    };
    let runtime_id = |id: &String| -> Result<String, ApiError> {
        let mut p = Params::default();
        p.insert(
            "runtimeId",
            crate::params::Param::Json(Value::String(id.clone())),
        );
        p.text("runtimeId", true, 64, 1, "")
    };
    Ok(match route {
        Route::Health => Action::Health,
        Route::List => Action::ListRuntimes,
        Route::Get(id) => Action::GetRuntime(runtime_id(&id)?),
        Route::Delete(id) => Action::DeleteRuntime(runtime_id(&id)?),
        Route::Create => Action::CreateRuntime(create_request(exec, &params)?),
        Route::Execute(id) => {
            let req = exec_request(exec, runtime_id(&id)?, &params)?;
            Action::Execute(req, response_format(&headers))
        }
        Route::StreamLogs(id) => {
            let id = runtime_id(&id)?;
            let timeout = params.text("timeout", false, 16, 0, "600")?;
            let secs = timeout.trim().parse::<u64>().unwrap_or(600);
            Action::StreamLogs(id, Duration::from_secs(secs))
        }
        Route::Command(id) => Action::Command {
            runtime_id: runtime_id(&id)?,
            command: params.text("command", true, 1024, 1, "")?,
            timeout: non_negative(params.integer("timeout", false, 600)?),
        },
        Route::SubmitBuild => Action::SubmitBuild(build_job(exec, &params)?),
        Route::ListBuilds => Action::ListBuilds,
        Route::GetBuild(id) => Action::GetBuild(id),
        Route::BuildLogs(id) => Action::BuildLogs(id),
        Route::CancelBuild(id) => Action::CancelBuild(id),
    })
}

/// `POST /v1/builds` (docs/builds.md).
fn build_job(exec: &Executor, p: &Params) -> Result<crate::builds::BuildJob, ApiError> {
    use crate::builds::{build_command, default_install, BuildJob, Source};
    let source: Source = match p.json("source") {
        Some(v) => serde_json::from_value(v).map_err(|e| {
            ApiError::untyped(400, format!("Invalid `source` param: {e}; expected {{\"type\": \"archive\"|\"folder\"|\"git\", ...}}"))
        })?,
        None => return Err(ApiError::untyped(400, "Param \"source\" is not optional.")),
    };
    let image = p.text("image", true, 128, 1, "")?;
    let install = match p.text("command", false, 1024, 0, "")? {
        c if is_empty(&c) => default_install(&image).to_string(),
        c => c,
    };
    let archive_name = match &source {
        Source::Archive { path } if path.ends_with(".zip") => "code.zip",
        _ => "code.tar.gz",
    };
    let runtime_id = match p.text("runtimeId", false, 64, 1, "")? {
        id if id.is_empty() => format!("build-{}", &crate::engine::random_hex()[..16]),
        id => id,
    };
    let create = CreateRequest {
        runtime_id,
        image,
        entrypoint: p.text("entrypoint", false, 256, 0, "")?,
        source: String::new(),
        destination: p.text("destination", true, 0, 1, "")?,
        output_directory: empty_to_blank(p.text("outputDirectory", false, 0, 0, "")?),
        variables: string_map(p.assoc("variables")?),
        runtime_entrypoint: String::new(),
        command: build_command(archive_name, &install),
        cache_key: empty_to_blank(p.text("cacheKey", false, 128, 0, "")?),
        timeout: non_negative(p.integer("timeout", true, 600)?),
        remove: true,
        cpus: p.float("cpus", 1.0)?,
        memory: non_negative(p.integer("memory", true, 512)?),
        version: p.whitelist("version", &versions(exec), false, "v5")?,
        restart: RestartPolicy::No,
        remove_at_once: true,
    };
    if !create.cache_key.is_empty() && !crate::create::valid_cache_key(&create.cache_key) {
        return Err(ApiError::with_message(
            ErrorType::ExecutionBadRequest,
            "Cache key must start with a letter or number and may only contain letters, numbers, dots, underscores, and hyphens.",
        ));
    }
    Ok(BuildJob {
        create,
        source: Some(source),
    })
}

enum Route {
    Health,
    List,
    Create,
    Get(String),
    Delete(String),
    Execute(String),
    StreamLogs(String),
    Command(String),
    SubmitBuild,
    ListBuilds,
    GetBuild(String),
    BuildLogs(String),
    CancelBuild(String),
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn non_negative(n: i64) -> u64 {
    n.max(0) as u64
}

/// executor-api §2.6: Bearer token, constant-time, fail closed.
fn authenticate(exec: &Executor, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(' ').nth(1))
        .unwrap_or("");
    let expected = exec.cfg.secret.as_bytes();
    let ok = !expected.is_empty()
        && !given.is_empty()
        && given != "0"
        && given.len() == expected.len()
        && given
            .bytes()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if ok {
        Ok(())
    } else {
        Err(ApiError::with_message(
            ErrorType::GeneralUnauthorized,
            "Missing executor key",
        ))
    }
}

fn versions(exec: &Executor) -> Vec<String> {
    exec.cfg.runtime_versions.clone()
}

fn restart_policy(params: &Params) -> Result<RestartPolicy, ApiError> {
    let allowed: Vec<String> = ["no", "always", "on-failure", "unless-stopped"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let v = params.whitelist("restartPolicy", &allowed, true, "no")?;
    Ok(RestartPolicy::parse(&v).unwrap_or_default())
}

fn string_map(map: serde_json::Map<String, Value>) -> BTreeMap<String, String> {
    map.into_iter().map(|(k, v)| (k, stringify(&v))).collect()
}

fn create_request(exec: &Executor, p: &Params) -> Result<CreateRequest, ApiError> {
    let req = CreateRequest {
        runtime_id: p.text("runtimeId", true, 64, 1, "")?,
        image: p.text("image", true, 128, 1, "")?,
        entrypoint: p.text("entrypoint", false, 256, 0, "")?,
        source: p.text("source", false, 0, 0, "")?,
        destination: p.text("destination", false, 0, 0, "")?,
        output_directory: p.text("outputDirectory", false, 0, 0, "")?,
        variables: string_map(p.assoc("variables")?),
        runtime_entrypoint: p.text("runtimeEntrypoint", false, 1024, 0, "")?,
        command: p.text("command", false, 1024, 0, "")?,
        cache_key: p.text("cacheKey", false, 128, 0, "")?,
        timeout: non_negative(p.integer("timeout", false, 600)?),
        remove: p.boolean("remove", false, false)?,
        cpus: p.float("cpus", 1.0)?,
        memory: non_negative(p.integer("memory", false, 512)?),
        version: p.whitelist("version", &versions(exec), false, "v5")?,
        restart: restart_policy(p)?,
        remove_at_once: false,
    };
    check_version(&req.version)?;
    Ok(CreateRequest {
        source: empty_to_blank(req.source),
        destination: empty_to_blank(req.destination),
        command: empty_to_blank(req.command),
        runtime_entrypoint: empty_to_blank(req.runtime_entrypoint),
        output_directory: empty_to_blank(req.output_directory),
        cache_key: empty_to_blank(req.cache_key),
        ..req
    })
}

/// `"0"` is how the main client writes an empty value (executor-api §2.5).
fn empty_to_blank(s: String) -> String {
    if is_empty(&s) {
        String::new()
    } else {
        s
    }
}

fn check_version(version: &str) -> Result<(), ApiError> {
    if version.eq_ignore_ascii_case("v2") {
        return Err(ApiError::untyped(
            400,
            "Protocol v2 is not supported by this executor; use v5.",
        ));
    }
    Ok(())
}

fn exec_request(exec: &Executor, runtime_id: String, p: &Params) -> Result<ExecRequest, ApiError> {
    let methods: Vec<String> = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let body = p.bytes("body", MAX_EXEC_BODY, 1)?;
    let req = ExecRequest {
        runtime_id,
        body: if body == b"0" { Vec::new() } else { body },
        path: p.text("path", false, 2048, 1, "/")?,
        method: p.whitelist("method", &methods, true, "GET")?,
        headers: string_map(p.text_or_assoc("headers")?),
        timeout: non_negative(p.integer("timeout", true, 15)?),
        image: empty_to_blank(p.text("image", false, 128, 1, "")?),
        source: empty_to_blank(p.text("source", false, 0, 1, "")?),
        entrypoint: empty_to_blank(p.text("entrypoint", false, 256, 0, "")?),
        variables: string_map(p.text_or_assoc("variables")?),
        cpus: p.float("cpus", 1.0)?,
        memory: non_negative(p.integer("memory", true, 512)?),
        version: p.whitelist("version", &versions(exec), false, "v5")?,
        runtime_entrypoint: empty_to_blank(p.text("runtimeEntrypoint", false, 1024, 0, "")?),
        logging: p.boolean("logging", true, true)?,
        restart: restart_policy(p)?,
    };
    check_version(&req.version)?;
    Ok(req)
}

/// executor-api §8.8.
fn response_format(headers: &http::HeaderMap) -> ResponseFormat {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json = accept
        .split(", ")
        .any(|item| item.starts_with("application/json") || item.starts_with("application/*"));
    let version = headers
        .get("x-executor-response-format")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0.10.0");
    ResponseFormat {
        json,
        header_lists: version_at_least(version, &[0, 11, 0]),
    }
}

fn version_at_least(version: &str, min: &[u64]) -> bool {
    let parts: Vec<u64> = version
        .split('.')
        .map(|p| p.trim().parse().unwrap_or(0))
        .collect();
    for (i, m) in min.iter().enumerate() {
        let v = parts.get(i).copied().unwrap_or(0);
        if v != *m {
            return v > *m;
        }
    }
    true
}

async fn perform(exec: &Arc<Executor>, action: Action) -> Result<Response<Body>, ApiError> {
    match action {
        Action::Health => Ok(json_response(200, &health(exec).await)),
        Action::ListRuntimes => {
            let list: Vec<_> = exec.registry.all().iter().map(|r| r.view()).collect();
            Ok(json_response(200, &json!(list)))
        }
        Action::GetRuntime(id) => {
            let rt = exec
                .registry
                .get(&exec.runtime_name(&id))
                .ok_or_else(|| ApiError::typed(ErrorType::RuntimeNotFound))?;
            Ok(json_response(200, &json!(rt.view())))
        }
        Action::CreateRuntime(req) => {
            let has_destination = !req.destination.is_empty();
            // A task of its own, so a client hanging up cannot leave a
            // half-created runtime behind.
            let e = exec.clone();
            let result = tokio::spawn(async move {
                if req.command.is_empty() {
                    e.create_runtime(req).await
                } else {
                    e.create_through_queue(req).await
                }
            })
            .await
            .map_err(|_| ApiError::untyped(500, "Runtime creation was interrupted."))??;
            let mut body = json!({
                "output": result.output,
                "startTime": result.start_time,
                "duration": result.duration,
            });
            if has_destination {
                body["path"] = json!(result.path);
                body["size"] = json!(result.size);
            }
            Ok(json_response(201, &body))
        }
        Action::DeleteRuntime(id) => {
            let rt = exec
                .registry
                .get(&exec.runtime_name(&id))
                .ok_or_else(|| ApiError::typed(ErrorType::RuntimeNotFound))?;
            exec.orch
                .remove(&rt.container())
                .await
                .map_err(|e| ApiError::untyped(500, format!("Failed to remove runtime: {e}")))?;
            exec.registry.remove(&rt);
            rt.set_phase(crate::registry::Phase::Gone(None));
            Ok(with_body(200, None, Bytes::new()))
        }
        Action::Execute(req, format) => {
            let result = exec.execute(req).await?;
            execution_response(&result, format)
        }
        Action::StreamLogs(id, timeout) => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
            tokio::spawn(crate::logs_stream::follow(exec.clone(), id, timeout, tx));
            let stream = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::ReceiverStream::new(rx),
                |b| Ok(Frame::data(b)),
            );
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            Ok(r)
        }
        a @ (Action::SubmitBuild(_)
        | Action::ListBuilds
        | Action::GetBuild(_)
        | Action::BuildLogs(_)
        | Action::CancelBuild(_)) => perform_build(exec, a).await,
        Action::Command {
            runtime_id,
            command,
            timeout,
        } => {
            let rt = exec
                .registry
                .get(&exec.runtime_name(&runtime_id))
                .ok_or_else(|| ApiError::typed(ErrorType::RuntimeNotFound))?;
            let argv = vec!["bash".to_string(), "-c".to_string(), command];
            let limit = (timeout > 0).then(|| Duration::from_secs(timeout));
            match exec.orch.execute(&rt.container(), &argv, &[], limit).await {
                Ok(o) if o.exit_code == 0 => Ok(json_response(200, &json!({ "output": o.output }))),
                Ok(_) => Err(ApiError::typed(ErrorType::CommandFailed)),
                Err(opr_orchestrator::OrchestratorError::Timeout) => {
                    Err(ApiError::typed(ErrorType::CommandTimeout))
                }
                Err(_) => Err(ApiError::typed(ErrorType::CommandFailed)),
            }
        }
    }
}

async fn perform_build(exec: &Arc<Executor>, action: Action) -> Result<Response<Body>, ApiError> {
    let queue = exec
        .builds
        .get()
        .ok_or_else(|| ApiError::untyped(503, "The build queue is not running."))?;
    let store = |e: opr_build::StoreError| ApiError::untyped(500, e.to_string());
    let not_found = || ApiError::untyped(404, "Build not found");
    match action {
        Action::SubmitBuild(job) => {
            let value =
                serde_json::to_value(&job).map_err(|e| ApiError::untyped(500, e.to_string()))?;
            let job = queue.submit(value).await.map_err(store)?;
            Ok(json_response(202, &json!(job)))
        }
        Action::ListBuilds => Ok(json_response(
            200,
            &json!(queue.list(100).await.map_err(store)?),
        )),
        Action::GetBuild(id) => {
            let job = queue.get(&id).await.map_err(store)?.ok_or_else(not_found)?;
            Ok(json_response(200, &json!(job)))
        }
        Action::BuildLogs(id) => {
            let job = queue.get(&id).await.map_err(store)?.ok_or_else(not_found)?;
            let output = exec.build_output(&job).await;
            Ok(json_response(
                200,
                &json!({ "id": job.id, "state": job.state, "output": output }),
            ))
        }
        Action::CancelBuild(id) => {
            let before = queue
                .cancel(&id)
                .await
                .map_err(store)?
                .ok_or_else(not_found)?;
            let job = queue.get(&id).await.map_err(store)?.ok_or_else(not_found)?;
            Ok(json_response(
                200,
                &json!({ "id": id, "previousState": before, "state": job.state }),
            ))
        }
        _ => Err(ApiError::untyped(500, "Not a build action.")),
    }
}

async fn health(exec: &Executor) -> Value {
    let stats = exec.orch.stats().await.unwrap_or_default();
    let prefix = format!("{}-", exec.cfg.hostname);
    let mut runtimes = serde_json::Map::new();
    for rt in exec.registry.all() {
        let container = rt.container();
        let usage = stats
            .iter()
            .find(|s| s.name == container)
            .and_then(|s| s.cpu_percent);
        let id = rt
            .name
            .strip_prefix(&prefix)
            .unwrap_or(&rt.name)
            .to_string();
        runtimes.insert(id, json!({ "status": "pass", "usage": usage }));
    }
    let usage = *exec.cpu_usage.lock().unwrap_or_else(|p| p.into_inner());
    let mut pool = serde_json::Map::new();
    for (image, ready, starting, wanted) in exec.pool.report(exec) {
        pool.insert(
            image,
            json!({ "ready": ready, "starting": starting, "wanted": wanted }),
        );
    }
    json!({ "status": "pass", "usage": usage, "runtimes": runtimes, "pool": pool })
}

fn headers_json(result: &ExecResult, lists: bool) -> Value {
    let mut map = serde_json::Map::new();
    for (name, values) in &result.headers {
        let v = match (lists, values.as_slice()) {
            (true, [single]) => json!(single),
            (true, many) => json!(many),
            (false, many) => json!(many.last().cloned().unwrap_or_default()),
        };
        map.insert(name.clone(), v);
    }
    Value::Object(map)
}

fn execution_response(
    result: &ExecResult,
    format: ResponseFormat,
) -> Result<Response<Body>, ApiError> {
    let headers = headers_json(result, format.header_lists);
    if format.json {
        let body = std::str::from_utf8(&result.body)
            .map_err(|_| ApiError::typed(ErrorType::ExecutionBadJson))?;
        let value = json!({
            "statusCode": result.status_code,
            "headers": headers,
            "body": body,
            "logs": result.logs,
            "errors": result.errors,
            "duration": result.duration,
            "startTime": result.start_time,
        });
        let mut r = with_body(200, None, Bytes::from(value.to_string()));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(r);
    }
    let boundary = format!("{}{}", "-".repeat(29), crate::storage::unique_id());
    let status = result.status_code.to_string();
    let headers_text = headers.to_string();
    let duration = multipart_number(result.duration);
    let start = multipart_number(result.start_time);
    let body = multipart::build(
        &boundary,
        &[
            ("statusCode", None, status.as_bytes()),
            ("headers", Some("application/json"), headers_text.as_bytes()),
            ("body", None, &result.body),
            ("logs", None, result.logs.as_bytes()),
            ("errors", None, result.errors.as_bytes()),
            ("duration", None, duration.as_bytes()),
            ("startTime", None, start.as_bytes()),
        ],
    );
    let ct = format!("multipart/form-data; boundary={boundary}");
    Ok(with_body(200, Some(&ct), Bytes::from(body)))
}

/// At most 14 significant digits, no trailing `.0` (executor-api §8.8).
pub fn multipart_number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".to_string();
    }
    let int_digits = (v.abs().log10().floor() as i32 + 1).max(1);
    let decimals = (14 - int_digits).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn with_body(status: u16, content_type: Option<&str>, body: Bytes) -> Response<Body> {
    let mut r = Response::new(BodyExt::boxed(Full::new(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(c).ok()) {
        r.headers_mut().insert(CONTENT_TYPE, ct);
    }
    r
}

fn json_response(status: u16, value: &Value) -> Response<Body> {
    with_body(
        status,
        Some("application/json"),
        Bytes::from(value.to_string()),
    )
}

fn error_response(exec: &Executor, e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.body(&exec.cfg.version, exec.cfg.development));
    let h = r.headers_mut();
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("expires", HeaderValue::from_static("0"));
    h.insert("pragma", HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation_table() {
        let fmt = |accept: Option<&str>| {
            let mut h = http::HeaderMap::new();
            if let Some(a) = accept {
                h.insert(
                    http::header::ACCEPT,
                    HeaderValue::from_str(a).expect("value"),
                );
            }
            response_format(&h).json
        };
        assert!(fmt(Some("application/json")));
        assert!(fmt(Some("application/*")));
        assert!(fmt(Some("text/plain, application/json")));
        assert!(!fmt(Some("application/xml")));
        assert!(!fmt(Some("text/plain")));
        assert!(!fmt(Some("*/*")));
        assert!(!fmt(None));
    }

    #[test]
    fn response_format_versions() {
        assert!(!version_at_least("0.10.0", &[0, 11, 0]));
        assert!(version_at_least("0.11.0", &[0, 11, 0]));
        assert!(version_at_least("1.0", &[0, 11, 0]));
    }

    #[test]
    fn multipart_numbers() {
        assert_eq!(multipart_number(0.0123), "0.0123");
        assert_eq!(multipart_number(1751364000.123456), "1751364000.1235");
        assert_eq!(multipart_number(12.0), "12");
    }
}
