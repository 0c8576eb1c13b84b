//! Executions (executor-api §8): cold start, forwarding, logs, response
//! formats, multipart requests, timeouts — against real Node and Python
//! runtimes built from the fixtures.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

on_backends!(cold_start_then_warm_json_result);
fn cold_start_then_warm_json_result() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("json");
    let r = ex.execute(&id, &pkg.exec("/"));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), ex.output());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let raw = r.text();
    let v = r.json();
    assert_eq!(v["statusCode"], 200);
    assert!(v["statusCode"].is_u64());
    assert_eq!(v["body"], "hello from node");
    assert!(v["headers"].is_object(), "{v}");
    assert_eq!(v["headers"]["content-type"], "text/plain; charset=utf-8");
    assert!(
        v["headers"]
            .as_object()
            .expect("headers")
            .keys()
            .all(|k| !k.starts_with("x-open-runtimes-")),
        "{v}"
    );
    assert_eq!(v["logs"], "");
    assert_eq!(v["errors"], "");
    for key in ["duration", "startTime"] {
        assert!(v[key].is_f64(), "{key}: {v}");
        let i = raw.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
        assert!(
            raw[i..]
                .split([',', '}'])
                .next()
                .expect("number")
                .contains('.'),
            "{key} without decimal point: {raw}"
        );
    }
    let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
    for k in [
        "statusCode",
        "headers",
        "body",
        "logs",
        "errors",
        "duration",
        "startTime",
    ] {
        assert!(keys.iter().any(|x| *x == k), "{k} missing: {v}");
    }
    // The runtime now exists, listening and initialised.
    let rt = ex.runtime(&id).expect("runtime after cold start");
    assert_eq!(rt["listening"], 1);
    assert_eq!(rt["initialised"], 1);
    assert_eq!(rt["image"], NODE_IMAGE);
    // Warm: parameters that only matter at cold start are ignored, even
    // without image and source.
    let v = ex.execute_ok(&id, &json!({ "path": "/", "timeout": 10 }));
    assert_eq!(v["body"], "hello from node");
    assert_eq!(ex.list().len(), 1);
    // Legacy alias.
    let r = ex.request(
        reqwest::Method::POST,
        &format!("/v1/runtimes/{id}/execution"),
        Auth::Secret,
        |r| {
            r.header("accept", "application/json")
                .json(&json!({ "path": "/" }))
        },
    );
    r.expect_status(200);
    assert_eq!(r.json()["body"], "hello from node");
    // `updated` moves with executions.
    let before = ex.runtime(&id).expect("rt")["updated"]
        .as_f64()
        .expect("updated");
    ex.execute_ok(&id, &json!({ "path": "/" }));
    let after = ex.runtime(&id).expect("rt")["updated"]
        .as_f64()
        .expect("updated");
    assert!(after > before, "updated {before} -> {after}");
}

on_backends!(python_runtime_executes_and_logs);
fn python_runtime_executes_and_logs() {
    let ex = executor().start();
    let pkg = package(Lang::Python);
    let id = unique_id("py");
    let v = ex.execute_ok(&id, &pkg.exec("/"));
    assert_eq!(v["body"], "hello from python");
    let v = ex.execute_ok(&id, &json!({ "path": "/log" }));
    assert_eq!(v["logs"], "engine: open-runtimes\n");
    assert_eq!(v["errors"], "engine: open-runtimes\n");
}

// A TypeScript function served by Bun: logs, errors and native output
// reach their files (the worker's Bun-specific paths: socket, console).
on_backends!(bun_runtime_executes_typescript_and_logs);
fn bun_runtime_executes_typescript_and_logs() {
    let ex = executor().start();
    let pkg = package(Lang::Bun);
    let id = unique_id("bun");
    let v = ex.execute_ok(&id, &pkg.exec("/"));
    assert_eq!(v["body"], "hello from bun");
    let v = ex.execute_ok(&id, &json!({ "path": "/log" }));
    assert_eq!(v["body"], "logged");
    assert_eq!(
        v["logs"],
        "engine: open-runtimes\nNative logs detected. Use context.log() or context.error() \
         for better experience.\nnative: bun\n"
    );
    assert_eq!(v["errors"], "engine: open-runtimes\n");
    let v = ex.execute_ok(&id, &json!({ "path": "/runtime" }));
    let body: Value = serde_json::from_str(v["body"].as_str().expect("body")).expect("json");
    assert!(
        body["bun"].as_str().is_some_and(|b| !b.is_empty()),
        "{body}"
    );
    assert_eq!(body["typed"], true);
}

on_backends!(logs_and_errors_exact_and_logging_switch);
fn logs_and_errors_exact_and_logging_switch() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("logs");
    let v = ex.execute_ok(&id, &pkg.exec("/log"));
    assert_eq!(v["body"], "logged");
    assert_eq!(v["logs"], "engine: open-runtimes\n");
    assert_eq!(v["errors"], "engine: open-runtimes\n");
    // Read once: the next execution starts from empty files.
    let v = ex.execute_ok(&id, &json!({ "path": "/" }));
    assert_eq!(
        (v["logs"].as_str(), v["errors"].as_str()),
        (Some(""), Some(""))
    );
    for off in [json!(false), json!("0"), json!(0), json!("false")] {
        let v = ex.execute_ok(&id, &json!({ "path": "/log", "logging": off }));
        assert_eq!(v["logs"], "", "logging {off}");
        assert_eq!(v["errors"], "", "logging {off}");
    }
    // Log files do not pile up in the work folder.
    let logs = ex.runtime_dir(&id).join("logs");
    let left: Vec<_> = std::fs::read_dir(&logs)
        .expect("logs dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "log files left behind: {left:?}");
}

on_backends!(request_details_reach_the_function);
fn request_details_reach_the_function() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("req");
    let mut body = pkg.exec("request?x=1&y=two");
    body["method"] = json!("POST");
    body["headers"] = json!({ "x-test-header": "abc", "content-type": "text/plain", "x-open-runtimes-secret": "forged" });
    body["body"] = json!("hello body");
    let v = ex.execute_ok(&id, &body);
    let req: Value =
        serde_json::from_str(v["body"].as_str().expect("body")).expect("function JSON");
    assert_eq!(req["method"], "POST");
    assert_eq!(req["path"], "/request", "a missing leading / is added");
    assert_eq!(req["query"], json!({ "x": "1", "y": "two" }));
    assert_eq!(req["headers"]["x-test-header"], "abc");
    assert_eq!(req["headers"]["content-type"], "text/plain");
    assert_eq!(req["bodyHex"], hex(b"hello body"));
    // Headers given as JSON text (as in multipart) work too.
    let v = ex.execute_ok(
        &id,
        &json!({ "path": "/request", "headers": "{\"x-from-text\":\"yes\"}" }),
    );
    let req: Value =
        serde_json::from_str(v["body"].as_str().expect("body")).expect("function JSON");
    assert_eq!(req["headers"]["x-from-text"], "yes");
    assert_eq!(req["method"], "GET", "default method");
    assert_eq!(req["bodyHex"], "", "no body by default");
    // A body of exactly "0" is dropped (executor-api §2.5).
    let v = ex.execute_ok(
        &id,
        &json!({ "path": "/request", "method": "POST", "body": "0" }),
    );
    let req: Value =
        serde_json::from_str(v["body"].as_str().expect("body")).expect("function JSON");
    assert_eq!(req["bodyHex"], "");
    // Every method of the whitelist goes through.
    for method in ["PUT", "PATCH", "DELETE", "OPTIONS"] {
        let v = ex.execute_ok(&id, &json!({ "path": "/request", "method": method }));
        let req: Value =
            serde_json::from_str(v["body"].as_str().expect("body")).expect("function JSON");
        assert_eq!(req["method"], method);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

on_backends!(head_has_no_body);
fn head_has_no_body() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("head");
    let mut body = pkg.exec("/");
    body["method"] = json!("HEAD");
    let started = Instant::now();
    let v = ex.execute_ok(&id, &body);
    assert_eq!(v["body"], "");
    // Warm HEAD must not wait for a body that never comes.
    let started_warm = Instant::now();
    let v = ex.execute_ok(
        &id,
        &json!({ "path": "/", "method": "HEAD", "timeout": 10 }),
    );
    assert_eq!(v["body"], "");
    assert!(
        started_warm.elapsed() < Duration::from_secs(3),
        "HEAD took {:?}",
        started_warm.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

on_backends!(response_formats_and_header_lists);
fn response_formats_and_header_lists() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("fmt");
    ex.execute_ok(&id, &pkg.exec("/"));
    let body = json!({ "path": "/cookies" });
    // Default and 0.10.0: repeated headers collapse to the last value.
    for fmt in [None, Some("0.10.0"), Some("0.9.9")] {
        let headers: Vec<(&str, &str)> = fmt
            .map(|f| vec![("x-executor-response-format", f)])
            .unwrap_or_default();
        let r = ex.execute_with(&id, &body, "application/json", &headers);
        r.expect_status(200);
        let v = r.json();
        assert_eq!(
            v["headers"]["set-cookie"], "b=2; Path=/",
            "format {fmt:?}: {v}"
        );
        assert_eq!(v["headers"]["x-custom"], "yes");
    }
    // 0.11.0 and later: lists stay lists, single values stay strings.
    for fmt in ["0.11.0", "0.11.1", "1.0.0"] {
        let r = ex.execute_with(
            &id,
            &body,
            "application/json",
            &[("x-executor-response-format", fmt)],
        );
        let v = r.json();
        assert_eq!(
            v["headers"]["set-cookie"],
            json!(["a=1; Path=/", "b=2; Path=/"]),
            "format {fmt}: {v}"
        );
        assert_eq!(v["headers"]["x-custom"], "yes");
    }
    // Accept negotiation (§8.8).
    for (accept, is_json) in [
        ("application/json", true),
        ("application/*", true),
        ("text/plain, application/json", true),
        ("application/xml", false),
        ("text/plain", false),
        ("*/*", false),
        ("multipart/form-data", false),
    ] {
        let r = ex.execute_with(&id, &json!({ "path": "/" }), accept, &[]);
        r.expect_status(200);
        let ct = r.header("content-type").expect("content type");
        if is_json {
            assert_eq!(ct, "application/json", "accept {accept}");
        } else {
            assert!(
                ct.starts_with("multipart/form-data; boundary="),
                "accept {accept}: {ct}"
            );
        }
    }
    // No Accept header at all means multipart.
    let payload = json!({ "path": "/" }).to_string();
    let req = format!(
        "POST /v1/runtimes/{id}/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        ex.secret,
        payload.len()
    );
    let raw = String::from_utf8_lossy(&raw_http(&ex.addr, req.as_bytes())).into_owned();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("content-type: multipart/form-data; boundary="),
        "{raw}"
    );
}

on_backends!(multipart_result_fields_in_order);
fn multipart_result_fields_in_order() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("mp");
    let r = ex.execute_with(&id, &pkg.exec("/log"), "multipart/form-data", &[]);
    r.expect_status(200);
    let ct = r.header("content-type").expect("content type");
    let boundary = ct
        .strip_prefix("multipart/form-data; boundary=")
        .expect("boundary");
    assert_eq!(boundary.len(), 29 + 13, "boundary {boundary}");
    assert!(
        boundary.starts_with(&"-".repeat(29)) && is_hex(&boundary[29..], 13),
        "boundary {boundary}"
    );
    assert!(
        r.body.ends_with(format!("--{boundary}--\r\n").as_bytes()),
        "end of body"
    );
    let parts = multipart_result(&r);
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "statusCode",
            "headers",
            "body",
            "logs",
            "errors",
            "duration",
            "startTime"
        ]
    );
    for p in &parts {
        let want = (p.name == "headers").then_some("application/json");
        assert_eq!(
            p.content_type.as_deref(),
            want,
            "content type of {}",
            p.name
        );
    }
    assert_eq!(part(&parts, "statusCode").data, b"200");
    let headers: Value =
        serde_json::from_slice(&part(&parts, "headers").data).expect("headers JSON");
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(part(&parts, "body").data, b"logged");
    assert_eq!(part(&parts, "logs").data, b"engine: open-runtimes\n");
    assert_eq!(part(&parts, "errors").data, b"engine: open-runtimes\n");
    for name in ["duration", "startTime"] {
        let text = String::from_utf8(part(&parts, name).data.clone()).expect("utf-8");
        let n: f64 = text.parse().unwrap_or_else(|_| panic!("{name} = {text:?}"));
        assert!(n >= 0.0);
        let significant = text
            .trim_start_matches(['0', '.'])
            .chars()
            .filter(char::is_ascii_digit)
            .count();
        assert!(
            significant <= 14,
            "{name} = {text} has more than 14 significant digits"
        );
        assert!(!text.ends_with(".0"), "{name} = {text}");
    }
    let start: f64 = String::from_utf8_lossy(&part(&parts, "startTime").data)
        .parse()
        .expect("startTime");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (now - start).abs() < 120.0,
        "startTime {start} vs now {now}"
    );
}

on_backends!(binary_bodies_need_multipart);
fn binary_bodies_need_multipart() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("bin");
    ex.execute_ok(&id, &pkg.exec("/"));
    let e = ex
        .execute(&id, &json!({ "path": "/binary" }))
        .expect_error(400, "execution_bad_json");
    assert_eq!(e["message"], BAD_JSON_ERROR);
    let r = ex.execute_with(
        &id,
        &json!({ "path": "/binary" }),
        "multipart/form-data",
        &[],
    );
    r.expect_status(200);
    let parts = multipart_result(&r);
    assert_eq!(part(&parts, "body").data, [0xff, 0x00, 0xfe, 0x0a]);
}

on_backends!(multipart_requests_like_the_main_client);
/// The main client's multipart request: every falsy scalar as `0`, `true`
/// as `1`, objects and arrays as JSON parts (executor-api §17).
fn multipart_requests_like_the_main_client() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("client");
    let source = pkg.path.to_str().expect("path").to_string();
    let send = |path: &str, body: Option<&[u8]>, logging: &[u8], headers: &[u8]| {
        let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![
            ("runtimeId", None, id.as_bytes()),
            ("variables", Some("application/json"), b"[]"),
            ("timeout", None, b"30"),
            ("path", None, path.as_bytes()),
            ("method", None, b"POST"),
            ("headers", Some("application/json"), headers),
            ("image", None, NODE_IMAGE.as_bytes()),
            ("source", None, source.as_bytes()),
            ("entrypoint", None, b"index.js"),
            ("cpus", None, b"1"),
            ("memory", None, b"512"),
            ("version", None, b"v5"),
            ("runtimeEntrypoint", None, RUNTIME_ENTRYPOINT.as_bytes()),
            ("logging", None, logging),
            ("restartPolicy", None, b"always"),
        ];
        if let Some(b) = body {
            parts.push(("body", None, b));
        }
        let (ct, payload) = multipart_body(&parts);
        ex.request(
            reqwest::Method::POST,
            &format!("/v1/runtimes/{id}/executions"),
            Auth::Secret,
            move |r| {
                r.header("content-type", ct)
                    .header("accept", "multipart/form-data")
                    .header("x-executor-response-format", "0.11.0")
                    .body(payload)
            },
        )
    };
    // Binary body round trip: 00 0a ff.
    let r = send(
        "/echo",
        Some(&[0x00, 0x0a, 0xff]),
        b"1",
        b"{\"content-type\":\"application/octet-stream\"}",
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), ex.output());
    let parts = multipart_result(&r);
    assert_eq!(part(&parts, "statusCode").data, b"200");
    assert_eq!(part(&parts, "body").data, [0x00, 0x0a, 0xff]);
    // Falsy values as "0": logging off; an empty header map as `[]` (PHP).
    let r = send("/log", None, b"0", b"[]");
    r.expect_status(200);
    let parts = multipart_result(&r);
    assert_eq!(part(&parts, "body").data, b"logged");
    assert_eq!(part(&parts, "logs").data, b"");
    assert_eq!(part(&parts, "errors").data, b"");
    let r = send("/log", None, b"1", b"{}");
    let parts = multipart_result(&r);
    assert_eq!(part(&parts, "logs").data, b"engine: open-runtimes\n");
    // Headers from a multipart JSON part reach the function.
    let r = send("/request", Some(b"0"), b"1", b"{\"x-multipart\":\"works\"}");
    let parts = multipart_result(&r);
    let req: Value = serde_json::from_slice(&part(&parts, "body").data).expect("function JSON");
    assert_eq!(req["headers"]["x-multipart"], "works");
    assert_eq!(req["bodyHex"], "", "a body of \"0\" is no body");
    assert_eq!(ex.list().len(), 1);
}

on_backends!(unknown_runtime_without_cold_start_parameters_is_404);
fn unknown_runtime_without_cold_start_parameters_is_404() {
    let ex = executor().start();
    let e = ex
        .execute(&unique_id("none"), &json!({ "path": "/" }))
        .expect_error(404, "runtime_not_found");
    assert_eq!(e["message"], NOT_FOUND_COLD);
    let e = ex
        .execute(
            &unique_id("none"),
            &json!({ "image": NODE_IMAGE, "path": "/" }),
        )
        .expect_error(404, "runtime_not_found");
    assert_eq!(e["message"], NOT_FOUND_COLD);
    assert!(ex.list().is_empty());
}

on_backends!(execution_timeout_is_reported_by_the_runtime);
fn execution_timeout_is_reported_by_the_runtime() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("timeout");
    // Warm first: the cold start must not eat the budget.
    ex.execute_ok(&id, &pkg.exec("/"));
    let started = Instant::now();
    let r = ex.execute(&id, &json!({ "path": "/sleep?ms=10000", "timeout": 2 }));
    let took = started.elapsed();
    r.expect_status(200);
    let v = r.json();
    assert_eq!(v["statusCode"], 500, "{v}");
    assert!(
        v["errors"]
            .as_str()
            .expect("errors")
            .contains("Execution timed out."),
        "{v}"
    );
    assert!(took < Duration::from_secs(4), "answer took {took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "answer took only {took:?}"
    );
    // The runtime serves the next request.
    assert_eq!(
        ex.execute_ok(&id, &json!({ "path": "/" }))["body"],
        "hello from node"
    );
    // A sleep within the budget completes.
    let v = ex.execute_ok(&id, &json!({ "path": "/sleep?ms=1500", "timeout": 10 }));
    assert_eq!(v["body"], "slept");
    assert!(v["duration"].as_f64().expect("duration") >= 1.4, "{v}");
}

on_backends!(function_environment_has_its_own_secret_only);
fn function_environment_has_its_own_secret_only() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("env");
    let mut body = pkg.exec("/env");
    body["variables"] = json!({ "MY_VAR": "from-variables", "CPU_COUNT": 2 });
    body["cpus"] = json!(2);
    body["memory"] = json!(256);
    let v = ex.execute_ok(&id, &body);
    let env: Value = serde_json::from_str(v["body"].as_str().expect("body")).expect("env JSON");
    let rt = ex.runtime(&id).expect("runtime");
    assert_eq!(
        env["OPEN_RUNTIMES_SECRET"], rt["key"],
        "the runtime's own secret"
    );
    assert_eq!(env["MY_VAR"], "from-variables");
    assert_eq!(env["CPU_COUNT"], "2");
    assert_eq!(env["OPEN_RUNTIMES_CPUS"], "2");
    assert_eq!(env["OPEN_RUNTIMES_MEMORY"], "256");
    assert_eq!(env["OPEN_RUNTIMES_HOSTNAME"], ex.hostname);
    assert_eq!(env["INERNAL_EXECUTOR_HOSTNAME"], ex.hostname);
    assert_eq!(env["CI"], "true");
    let text = env.to_string();
    assert!(
        !text.contains(&ex.secret),
        "executor secret visible to the function"
    );
    assert!(
        !text.contains(&ex.canary),
        "executor environment visible to the function"
    );
    for key in env.as_object().expect("object").keys() {
        assert!(
            !key.starts_with("OPR_EXECUTOR"),
            "{key} visible to the function"
        );
        assert_ne!(key, "NODE_EXTRA_CA_CERTS");
    }
    // Warm: new variables are ignored.
    let v = ex.execute_ok(
        &id,
        &json!({ "path": "/env", "variables": { "MY_VAR": "changed" } }),
    );
    let env: Value = serde_json::from_str(v["body"].as_str().expect("body")).expect("env JSON");
    assert_eq!(env["MY_VAR"], "from-variables");
}

on_backends!(execution_logs_are_capped_at_5_mib);
fn execution_logs_are_capped_at_5_mib() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("biglog");
    // 1 MiB comes back byte for byte.
    let v = ex.execute_ok(&id, &pkg.exec("/biglog?n=1024&len=1024"));
    let logs = v["logs"].as_str().expect("logs");
    assert_eq!(logs.len(), 1_048_576);
    assert!(logs.bytes().filter(|b| *b == b'\n').count() == 1024);
    // 6 MiB: the first 5 MiB and the notice.
    let v = ex.execute_ok(
        &id,
        &json!({ "path": "/biglog?n=6144&len=1024", "timeout": 60 }),
    );
    let logs = v["logs"].as_str().expect("logs");
    let notice = "\nLog file has been truncated to 5.00MB.";
    assert!(
        logs.ends_with(notice),
        "notice missing; {} bytes",
        logs.len()
    );
    assert_eq!(logs.len(), 5_242_880 + notice.len());
}

/// Kills the runtime server process (opr-runtime) from inside the function.
const KILL_SERVER: &str = "for p in /proc/[0-9]*; do read -r -d '' a0 < $p/cmdline; \
    if [ \"${a0##*/}\" = opr-runtime ]; then kill -9 ${p#/proc/}; fi; done 2>/dev/null; sleep 5";

on_backends!(crashed_server_answers_500_and_restart_policy_brings_it_back);
fn crashed_server_answers_500_and_restart_policy_brings_it_back() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let always = unique_id("always");
    let never = unique_id("never");
    let mut body = pkg.exec("/");
    body["restartPolicy"] = json!("always");
    ex.execute_ok(&always, &body);
    ex.execute_ok(&never, &pkg.exec("/"));
    let crash = json!({ "path": format!("/exec?cmd={}", url_encode(KILL_SERVER)), "timeout": 10 });
    for id in [&always, &never] {
        let started = Instant::now();
        let e = ex.execute(id, &crash).expect_error(500, "general_unknown");
        let msg = e["message"].as_str().expect("message");
        assert!(
            msg.starts_with("Internal curl error has occurred within the executor! Error Number: "),
            "{msg}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "crash answer took {:?}",
            started.elapsed()
        );
        // It stays registered (executor-api §8.9).
        assert!(ex.runtime(id).is_some(), "{id} must stay in the registry");
    }
    // `always`: the next executions reach a restarted server.
    let v = wait_for(
        Duration::from_secs(30),
        "the restarted runtime to answer",
        || {
            let r = ex.execute(&always, &json!({ "path": "/", "timeout": 5 }));
            (r.status == 200 && r.json()["statusCode"] == 200).then(|| r.json())
        },
    );
    assert_eq!(v["body"], "hello from node");
    // `no`: it stays down; the execution fails within its budget.
    let started = Instant::now();
    let r = ex.execute(&never, &json!({ "path": "/", "timeout": 3 }));
    assert!(
        r.status >= 500,
        "a dead runtime answered {}: {}",
        r.status,
        r.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

on_backends!(cold_start_failures_stay_within_the_budget);
fn cold_start_failures_stay_within_the_budget() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    // A start command that never opens the port.
    let mut body = pkg.exec("/");
    body["runtimeEntrypoint"] = json!("sleep 60");
    body["timeout"] = json!(3);
    let started = Instant::now();
    ex.execute(&unique_id("noport"), &body)
        .expect_error(400, "runtime_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(7),
        "took {took:?}"
    );
    // Creation failing with a 5xx (missing source, unknown image) is
    // retried until the budget is spent.
    for (key, value) in [
        ("source", "/nonexistent/code.tar.gz"),
        ("image", "openruntimes/php:v5-8.3"),
    ] {
        let mut body = pkg.exec("/");
        body[key] = json!(value);
        body["timeout"] = json!(2);
        let id = unique_id("fail");
        let started = Instant::now();
        ex.execute(&id, &body).expect_error(400, "runtime_timeout");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
            "{key}: took {took:?}"
        );
        assert!(
            ex.runtime(&id).is_none(),
            "{key}: a failed cold start must not stay registered"
        );
        assert!(!ex.runtime_dir(&id).exists(), "{key}: work folder left");
    }
}

on_backends!(variables_as_json_text_and_long_paths);
fn variables_as_json_text_and_long_paths() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("vars");
    let mut body = pkg.exec("/env");
    body["variables"] = json!("{\"FROM_TEXT\":\"yes\",\"N\":1.5}");
    let env = body_json(&ex.execute_ok(&id, &body));
    assert_eq!(env["FROM_TEXT"], "yes");
    assert_eq!(env["N"], "1.5");
    // A function's own status passes through in a 200 answer.
    let v = ex.execute(&id, &json!({ "path": "/nope" })).json();
    assert_eq!(
        (v["statusCode"].as_u64(), v["body"].as_str()),
        (Some(404), Some("not found")),
        "{v}"
    );
    // Bodies up to 20 MiB; one byte more is invalid.
    let big = "b".repeat(20 * 1024 * 1024 + 1);
    let e = ex
        .execute(&id, &json!({ "path": "/", "body": big }))
        .expect_error(400, "general_unknown");
    assert!(
        e["message"]
            .as_str()
            .expect("msg")
            .starts_with("Invalid `body` param: "),
        "{e}"
    );
    let e = ex
        .execute(&id, &json!({ "path": format!("/{}", "p".repeat(2048)) }))
        .expect_error(400, "general_unknown");
    assert!(
        e["message"]
            .as_str()
            .expect("msg")
            .starts_with("Invalid `path` param: "),
        "{e}"
    );
}

on_backends!(forwarded_request_headers_follow_the_spec);
fn forwarded_request_headers_follow_the_spec() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("fwd");
    let mut body = pkg.exec("/request");
    body["method"] = json!("POST");
    body["body"] = json!("a=1");
    let req = body_json(&ex.execute_ok(&id, &body));
    let rt = ex.runtime(&id).expect("runtime");
    let headers = &req["headers"];
    // Host names the runtime (the function builds its url from it).
    assert_eq!(
        headers["host"],
        format!("{}:3000", rt["hostname"].as_str().expect("hostname")),
        "{headers}"
    );
    assert_eq!(headers["accept"], "*/*", "{headers}");
    assert_eq!(
        headers["content-type"], "application/x-www-form-urlencoded",
        "{headers}"
    );
    // The caller's own values win for these.
    let body = json!({ "path": "/request", "method": "POST", "body": "{}", "headers": { "Content-Type": "application/json", "Accept": "text/html" } });
    let req = body_json(&ex.execute_ok(&id, &body));
    assert_eq!(req["headers"]["content-type"], "application/json");
    assert_eq!(req["headers"]["accept"], "text/html");
}
