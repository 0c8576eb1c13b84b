//! Executor API without function code: health, authentication, the error
//! model, parameter validation, runtime objects, commands and limits
//! (executor-api §2–§7, §10, §11).

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// An idle runtime: no source, no command (executor-api §10: a valid target).
fn idle(id: &str) -> Value {
    json!({ "runtimeId": id, "image": NODE_IMAGE })
}

on_backends!(health_needs_no_auth_and_reports_pass);
fn health_needs_no_auth_and_reports_pass() {
    let ex = executor().start();
    for auth in [Auth::None, Auth::Token("wrong"), Auth::Secret] {
        let r = ex.request(reqwest::Method::GET, "/v1/health", auth, |r| r);
        r.expect_status(200);
        assert_eq!(r.header("server").as_deref(), Some("Executor"));
        assert!(r
            .header("content-type")
            .expect("content type")
            .starts_with("application/json"));
        let body = r.json();
        assert_eq!(body["status"], "pass", "{body}");
        assert!(
            body["runtimes"].is_object(),
            "runtimes must be an object: {body}"
        );
        assert!(
            body["usage"].is_number() || body["usage"].is_null(),
            "{body}"
        );
    }
    // CPU usage is sampled every second: a number in 0..=100 soon.
    let usage = wait_for(Duration::from_secs(5), "a CPU usage figure", || {
        let body = ex
            .request(reqwest::Method::GET, "/v1/health", Auth::None, |r| r)
            .json();
        body["usage"].as_f64()
    });
    assert!((0.0..=100.0).contains(&usage), "usage {usage}");
    // A runtime shows up in the health map under its id.
    let id = unique_id("h");
    ex.create(&idle(&id)).expect_status(201);
    let body = ex
        .request(reqwest::Method::GET, "/v1/health", Auth::None, |r| r)
        .json();
    assert_eq!(body["runtimes"][&id]["status"], "pass", "{body}");
}

on_backends!(missing_wrong_or_zero_token_is_401);
fn missing_wrong_or_zero_token_is_401() {
    let ex = executor().start();
    let routes: [(reqwest::Method, String); 7] = [
        (reqwest::Method::GET, "/v1/runtimes".into()),
        (reqwest::Method::POST, "/v1/runtimes".into()),
        (reqwest::Method::GET, "/v1/runtimes/x".into()),
        (reqwest::Method::DELETE, "/v1/runtimes/x".into()),
        (reqwest::Method::POST, "/v1/runtimes/x/executions".into()),
        (reqwest::Method::GET, "/v1/runtimes/x/logs".into()),
        (reqwest::Method::POST, "/v1/runtimes/x/commands".into()),
    ];
    let wrong = format!("{}x", ex.secret);
    let prefix = &ex.secret[..ex.secret.len() - 1];
    for (method, path) in &routes {
        for auth in [
            Auth::None,
            Auth::Token("wrong"),
            Auth::Token(&wrong),
            Auth::Token(prefix),
            Auth::Token("0"),
            Auth::Token(""),
            Auth::Raw(&ex.secret),
        ] {
            // Authentication runs before validation: an empty body would
            // otherwise be a 400.
            let r = ex.request(method.clone(), path, auth, |r| r.json(&json!({})));
            let body = r.expect_error(401, "general_unauthorized");
            assert_eq!(body["message"], MISSING_KEY, "{method} {path}");
        }
    }
    // The right token passes.
    ex.get("/v1/runtimes").expect_status(200);
}

on_backends!(empty_secret_fails_closed);
fn empty_secret_fails_closed() {
    let ex = executor().secret("").start();
    for auth in [
        Auth::None,
        Auth::Token(""),
        Auth::Token("0"),
        Auth::Raw("Bearer "),
        Auth::Token("anything"),
    ] {
        let r = ex.request(reqwest::Method::GET, "/v1/runtimes", auth, |r| r);
        assert_eq!(
            r.expect_error(401, "general_unauthorized")["message"],
            MISSING_KEY
        );
    }
    ex.request(reqwest::Method::GET, "/v1/health", Auth::None, |r| r)
        .expect_status(200);
}

on_backends!(unknown_routes_are_404_without_auth);
fn unknown_routes_are_404_without_auth() {
    let ex = executor().start();
    for (method, path) in [
        (reqwest::Method::GET, "/v1/nothing"),
        (reqwest::Method::GET, "/"),
        (reqwest::Method::PUT, "/v1/runtimes"),
        (reqwest::Method::GET, "/v1/runtimes/x/executions"),
        (reqwest::Method::POST, "/v1/health"),
    ] {
        for auth in [Auth::None, Auth::Token("wrong"), Auth::Secret] {
            let r = ex.request(method.clone(), path, auth, |r| r);
            let body = r.expect_error(404, "general_unknown");
            assert_eq!(body["message"], "Not Found", "{method} {path}");
        }
    }
}

on_backends!(error_bodies_carry_details_only_in_development);
fn error_bodies_carry_details_only_in_development() {
    let dev = executor().env("OPR_EXECUTOR_VERSION", "9.8.7-test").start();
    let body = dev
        .get("/v1/runtimes/nope")
        .expect_error(404, "runtime_not_found");
    assert_eq!(body["message"], "Runtime not found");
    assert_eq!(body["version"], "9.8.7-test");
    assert!(
        body["file"].as_str().is_some_and(|f| !f.is_empty()),
        "file: {body}"
    );
    assert!(body["line"].as_u64().is_some_and(|l| l > 0), "line: {body}");
    assert!(body["trace"].is_array(), "trace: {body}");

    let prod = executor().env("OPR_EXECUTOR_ENV", "production").start();
    let body = prod
        .get("/v1/runtimes/nope")
        .expect_error(404, "runtime_not_found");
    assert_eq!(body["version"], "unknown", "default version");
    for key in ["file", "line", "trace"] {
        assert!(
            body.get(key).is_none(),
            "{key} must not be in production errors: {body}"
        );
    }
    // Untyped errors keep their own status and message in production (§3.3).
    let body = prod
        .create(&json!({ "image": NODE_IMAGE }))
        .expect_error(400, "general_unknown");
    assert_eq!(body["message"], "Param \"runtimeId\" is not optional.");
    let body = prod
        .request(reqwest::Method::GET, "/v1/unknown", Auth::None, |r| r)
        .expect_error(404, "general_unknown");
    assert_eq!(body["message"], "Not Found");
}

on_backends!(missing_required_parameters);
fn missing_required_parameters() {
    let ex = executor().start();
    for (body, name) in [
        (json!({ "image": NODE_IMAGE }), "runtimeId"),
        (json!({ "runtimeId": "x" }), "image"),
        (json!({}), "runtimeId"),
        (
            json!({ "runtimeId": null, "image": NODE_IMAGE }),
            "runtimeId",
        ),
    ] {
        let e = ex.create(&body).expect_error(400, "general_unknown");
        assert_eq!(
            e["message"],
            format!("Param \"{name}\" is not optional."),
            "{body}"
        );
    }
    let e = ex
        .post_json("/v1/runtimes/x/commands", &json!({}))
        .expect_error(400, "general_unknown");
    assert_eq!(e["message"], "Param \"command\" is not optional.");
    // Not a JSON object: no parameters at all.
    let r = ex.request(reqwest::Method::POST, "/v1/runtimes", Auth::Secret, |r| {
        r.header("content-type", "application/json")
            .body("{not json")
    });
    assert_eq!(
        r.expect_error(400, "general_unknown")["message"],
        "Param \"runtimeId\" is not optional."
    );
    assert!(ex.list().is_empty());
}

on_backends!(invalid_parameters_are_400_with_the_parameter_named);
fn invalid_parameters_are_400_with_the_parameter_named() {
    let ex = executor().start();
    let base = idle("valid-id");
    for (extra, name) in [
        (json!({ "timeout": "abc" }), "timeout"),
        // Strict integer on create: a numeric string is refused too.
        (json!({ "timeout": "45" }), "timeout"),
        (json!({ "timeout": 1.5 }), "timeout"),
        (json!({ "timeout": 3_000_000_000u64 }), "timeout"),
        (json!({ "memory": "x" }), "memory"),
        (json!({ "remove": "yes" }), "remove"),
        (json!({ "remove": "true" }), "remove"),
        (json!({ "remove": 1 }), "remove"),
        (json!({ "version": "v9" }), "version"),
        (json!({ "restartPolicy": "sometimes" }), "restartPolicy"),
        (json!({ "restartPolicy": "Always" }), "restartPolicy"),
        (json!({ "cpus": "many" }), "cpus"),
        (json!({ "variables": ["a", "b"] }), "variables"),
        (json!({ "variables": "text" }), "variables"),
        (json!({ "runtimeId": "" }), "runtimeId"),
        (json!({ "runtimeId": "a".repeat(65) }), "runtimeId"),
        (json!({ "image": "" }), "image"),
        (json!({ "image": "i".repeat(129) }), "image"),
        (json!({ "entrypoint": "e".repeat(257) }), "entrypoint"),
        (json!({ "command": "c".repeat(1025) }), "command"),
        (json!({ "runtimeEntrypoint": 5 }), "runtimeEntrypoint"),
    ] {
        let body = with(base.clone(), extra.clone());
        let e = ex.create(&body).expect_error(400, "general_unknown");
        let msg = e["message"].as_str().expect("message");
        assert!(
            msg.starts_with(&format!("Invalid `{name}` param: ")),
            "{extra}: {msg}"
        );
    }
    let e = ex
        .create(&with(base.clone(), json!({ "version": "v9" })))
        .expect_error(400, "general_unknown");
    assert_eq!(
        e["message"],
        "Invalid `version` param: Value must be one of (v5)"
    );
    // Nothing was created by any of them.
    assert!(ex.list().is_empty(), "{:?}", ex.list());
    // A 64-character id is fine; accepted values of loose/strict validators.
    let ok = with(
        idle(&"b".repeat(64)),
        json!({ "version": "V5", "cpus": "0.5", "memory": 256, "remove": false, "restartPolicy": "no", "variables": [] }),
    );
    ex.create(&ok).expect_status(201);
    // Path ids over 64 characters are invalid too, before the 404.
    let long = "c".repeat(65);
    let e = ex
        .get(&format!("/v1/runtimes/{long}"))
        .expect_error(400, "general_unknown");
    assert!(
        e["message"]
            .as_str()
            .expect("msg")
            .starts_with("Invalid `runtimeId` param: "),
        "{e}"
    );
}

on_backends!(execution_validation_comes_before_the_404);
fn execution_validation_comes_before_the_404() {
    let ex = executor().start();
    let id = unique_id("unknown");
    for (body, name) in [
        (json!({ "method": "FOO" }), "method"),
        (json!({ "method": "get" }), "method"),
        (json!({ "headers": ["a", "b"] }), "headers"),
        (json!({ "timeout": "soon" }), "timeout"),
        (json!({ "memory": "lots" }), "memory"),
        (json!({ "logging": "maybe" }), "logging"),
        (json!({ "version": "v9" }), "version"),
        (json!({ "restartPolicy": "sometimes" }), "restartPolicy"),
        (json!({ "path": "" }), "path"),
        (json!({ "image": "" }), "image"),
        (
            json!({ "runtimeEntrypoint": "r".repeat(1025) }),
            "runtimeEntrypoint",
        ),
    ] {
        let e = ex.execute(&id, &body).expect_error(400, "general_unknown");
        let msg = e["message"].as_str().expect("message");
        assert!(
            msg.starts_with(&format!("Invalid `{name}` param: ")),
            "{body}: {msg}"
        );
    }
    // headers as JSON text that is not an object (§8.1 decoding).
    let e = ex
        .execute(&id, &json!({ "headers": "[1,2]" }))
        .expect_error(400, "execution_bad_request");
    assert_eq!(e["message"], "Value must be a valid object.");
    // Valid loose values reach the 404 (§8.2) with its exact message.
    let e = ex
        .execute(&id, &json!({ "timeout": "5", "memory": "128", "logging": "0", "headers": "not json", "body": "0" }))
        .expect_error(404, "runtime_not_found");
    assert_eq!(e["message"], NOT_FOUND_COLD);
    // image without source (and "0" meaning empty) is still not enough.
    let e = ex
        .execute(&id, &json!({ "image": NODE_IMAGE, "source": "0" }))
        .expect_error(404, "runtime_not_found");
    assert_eq!(e["message"], NOT_FOUND_COLD);
    assert!(ex.list().is_empty());
}

on_backends!(invalid_cache_key_is_rejected_before_anything_else);
fn invalid_cache_key_is_rejected_before_anything_else() {
    let ex = executor().start();
    for key in [
        "-starts-with-dash",
        "has/slash",
        "has space",
        ".dot",
        "ü-umlaut",
        "../up",
    ] {
        let id = unique_id("ck");
        let body = with(idle(&id), json!({ "cacheKey": key, "command": "echo hi" }));
        let e = ex.create(&body).expect_error(400, "execution_bad_request");
        assert_eq!(e["message"], CACHE_KEY_ERROR, "key {key:?}");
        assert!(ex.runtime(&id).is_none());
    }
    // Over 128 characters the Text validator answers first.
    let body = with(
        idle("ck-long"),
        json!({ "cacheKey": "k".repeat(129), "command": "echo hi" }),
    );
    let e = ex.create(&body).expect_error(400, "general_unknown");
    assert!(
        e["message"]
            .as_str()
            .expect("msg")
            .starts_with("Invalid `cacheKey` param: "),
        "{e}"
    );
    assert!(ex.list().is_empty());
    assert!(
        std::fs::read_dir(&ex.work_dir)
            .expect("work dir")
            .filter_map(Result::ok)
            .all(|e| !e.file_name().to_string_lossy().starts_with(&ex.hostname)),
        "no work folder may be created"
    );
}

on_backends!(runtime_object_fields_and_types);
fn runtime_object_fields_and_types() {
    let ex = executor().start();
    let id = unique_id("obj");
    let before = now();
    let r = ex.create(&idle(&id));
    r.expect_status(201);
    let created = r.json();
    assert_eq!(
        created["output"],
        json!([]),
        "no command means no output: {created}"
    );
    assert!(
        created.get("path").is_none() && created.get("size").is_none(),
        "{created}"
    );
    assert!(
        created["startTime"].is_f64() && created["duration"].is_f64(),
        "{created}"
    );
    let rt = ex.runtime(&id).expect("runtime exists");
    let obj = rt.as_object().expect("object");
    for key in [
        "version",
        "created",
        "updated",
        "name",
        "hostname",
        "status",
        "key",
        "listening",
        "image",
        "initialised",
    ] {
        assert!(obj.contains_key(key), "missing {key}: {rt}");
    }
    assert_eq!(rt["version"], "v5");
    assert_eq!(rt["name"], format!("{}-{id}", ex.hostname));
    assert_eq!(rt["image"], NODE_IMAGE);
    assert!(
        is_hex(rt["hostname"].as_str().expect("hostname"), 32),
        "{rt}"
    );
    assert!(is_hex(rt["key"].as_str().expect("key"), 32), "{rt}");
    assert_ne!(rt["hostname"], rt["key"]);
    let created_at = rt["created"].as_f64().expect("created number");
    let updated = rt["updated"].as_f64().expect("updated number");
    assert!(
        created_at >= before - 1.0 && created_at <= now() + 1.0,
        "created {created_at}"
    );
    assert!(
        updated >= created_at,
        "updated {updated} < created {created_at}"
    );
    let status = rt["status"].as_str().expect("status");
    let secs = status
        .strip_prefix("Up ")
        .and_then(|s| s.strip_suffix('s'))
        .expect(status);
    assert!(
        secs.parse::<f64>().is_ok() && secs.split('.').nth(1).map(str::len) == Some(2),
        "status {status}"
    );
    assert!(
        rt["listening"].is_u64() && rt["listening"].as_u64() <= Some(1),
        "{rt}"
    );
    assert_eq!(rt["initialised"], 1);
    // "0" means empty for the text parameters (§2.5): no build, no package.
    let zero = unique_id("zero");
    let r = ex.create(&json!({
        "runtimeId": zero, "image": NODE_IMAGE, "command": "0", "destination": "0",
        "source": "0", "runtimeEntrypoint": "0", "outputDirectory": "0", "cacheKey": "0",
    }));
    r.expect_status(201);
    assert_eq!(r.json()["output"], json!([]), "{}", r.text());
    assert!(r.json().get("path").is_none(), "{}", r.text());
    ex.delete(&format!("/v1/runtimes/{zero}"))
        .expect_status(200);
    // The list holds the same object.
    let list = ex.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], rt["name"]);
    assert_eq!(list[0]["key"], rt["key"]);
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

on_backends!(list_order_get_delete);
fn list_order_get_delete() {
    let ex = executor().start();
    assert!(ex.list().is_empty());
    let ids: Vec<String> = (0..3).map(|i| unique_id(&format!("l{i}"))).collect();
    for id in &ids {
        ex.create(&idle(id)).expect_status(201);
    }
    assert_eq!(ex.list_ids(), ids, "registry order");
    // Delete the middle one.
    let r = ex.delete(&format!("/v1/runtimes/{}", ids[1]));
    r.expect_status(200);
    assert!(
        r.body.is_empty(),
        "delete answers an empty body: {}",
        r.text()
    );
    assert!(ex.runtime(&ids[1]).is_none());
    let e = ex
        .get(&format!("/v1/runtimes/{}", ids[1]))
        .expect_error(404, "runtime_not_found");
    assert_eq!(e["message"], "Runtime not found");
    assert_eq!(ex.list_ids(), vec![ids[0].clone(), ids[2].clone()]);
    let e = ex
        .delete(&format!("/v1/runtimes/{}", ids[1]))
        .expect_error(404, "runtime_not_found");
    assert_eq!(e["message"], "Runtime not found");
    // The id can be used again.
    ex.create(&idle(&ids[1])).expect_status(201);
    assert_eq!(
        ex.list_ids(),
        vec![ids[0].clone(), ids[2].clone(), ids[1].clone()]
    );
}

on_backends!(conflicts_pending_and_default_message);
fn conflicts_pending_and_default_message() {
    let ex = executor().start();
    let id = unique_id("conflict");
    let slow = with(idle(&id), json!({ "command": "sleep 3", "timeout": 30 }));
    std::thread::scope(|s| {
        let first = s.spawn(|| ex.create(&slow));
        wait_for(Duration::from_secs(10), "the pending runtime", || {
            ex.runtime(&id).filter(|r| r["status"] == "pending")
        });
        let e = ex.create(&idle(&id)).expect_error(409, "runtime_conflict");
        assert_eq!(
            e["message"],
            "A runtime with the same ID is already being created. Attempt a execution soon."
        );
        let rt = ex.runtime(&id).expect("still there");
        assert_eq!(
            rt["status"], "pending",
            "a conflict leaves the entry untouched"
        );
        assert_eq!(rt["initialised"], 0);
        first.join().expect("first create").expect_status(201);
    });
    let e = ex.create(&idle(&id)).expect_error(409, "runtime_conflict");
    assert_eq!(e["message"], "Runtime already exists ");
    assert_eq!(ex.runtime(&id).expect("kept")["initialised"], 1);
}

on_backends!(commands_output_failure_timeout_and_auth);
fn commands_output_failure_timeout_and_auth() {
    let ex = executor().start();
    let id = unique_id("cmd");
    ex.create(&idle(&id)).expect_status(201);
    let path = format!("/v1/runtimes/{id}/commands");
    let r = ex.post_json(&path, &json!({ "command": "echo hi" }));
    r.expect_status(200);
    assert_eq!(r.json(), json!({ "output": "hi\n" }));
    // Runs in the runtime's working directory (executor-api §7.4).
    let r = ex.post_json(&path, &json!({ "command": "pwd; ls helpers/start.sh" }));
    r.expect_status(200);
    assert_eq!(r.json()["output"], "/usr/local/server\nhelpers/start.sh\n");
    // stdout then stderr.
    let r = ex.post_json(&path, &json!({ "command": "echo err >&2; echo out" }));
    assert_eq!(r.json()["output"], "out\nerr\n");

    let e = ex
        .post_json(&path, &json!({ "command": "exit 3" }))
        .expect_error(500, "command_failed");
    assert_eq!(e["message"], "Failed to execute command.");

    let started = Instant::now();
    let e = ex
        .post_json(&path, &json!({ "command": "sleep 20", "timeout": 1 }))
        .expect_error(500, "command_timeout");
    assert_eq!(e["message"], "Operation timed out.");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "timeout took {:?}",
        started.elapsed()
    );
    // The runtime still takes commands afterwards.
    assert_eq!(
        ex.post_json(&path, &json!({ "command": "echo again" }))
            .json()["output"],
        "again\n"
    );

    let e = ex
        .post_json(&path, &json!({ "command": "echo hi", "timeout": "5" }))
        .expect_error(400, "general_unknown");
    assert!(
        e["message"]
            .as_str()
            .expect("msg")
            .starts_with("Invalid `timeout` param: "),
        "{e}"
    );

    let e = ex
        .post_json(
            &format!("/v1/runtimes/{}/commands", unique_id("none")),
            &json!({ "command": "echo hi" }),
        )
        .expect_error(404, "runtime_not_found");
    assert_eq!(e["message"], "Runtime not found");

    let r = ex.request(reqwest::Method::POST, &path, Auth::None, |r| {
        r.json(&json!({ "command": "echo hi" }))
    });
    assert_eq!(
        r.expect_error(401, "general_unauthorized")["message"],
        MISSING_KEY
    );
}

on_backends!(max_runtimes_limit_gives_a_clear_error);
fn max_runtimes_limit_gives_a_clear_error() {
    let ex = executor().env("OPR_EXECUTOR_MAX_RUNTIMES", "1").start();
    let a = unique_id("a");
    let b = unique_id("b");
    ex.create(&idle(&a)).expect_status(201);
    let r = ex.create(&idle(&b));
    assert!(
        r.status >= 400,
        "second runtime must be refused, got {}: {}",
        r.status,
        r.text()
    );
    let body = r.json();
    let msg = body["message"].as_str().expect("message").to_lowercase();
    assert!(
        msg.contains("limit") || msg.contains("max"),
        "message must mention the limit: {body}"
    );
    assert_eq!(
        ex.list_ids(),
        vec![a.clone()],
        "the refused runtime must not linger"
    );
    // Freeing the slot lets the next one in.
    ex.delete(&format!("/v1/runtimes/{a}")).expect_status(200);
    ex.create(&idle(&b)).expect_status(201);
}

on_backends!(every_response_names_the_server);
fn every_response_names_the_server() {
    let ex = executor().start();
    let id = unique_id("srv");
    let responses = [
        ex.request(reqwest::Method::GET, "/v1/health", Auth::None, |r| r),
        ex.get("/v1/runtimes"),
        ex.create(&idle(&id)),
        ex.get(&format!("/v1/runtimes/{id}")),
        ex.post_json(
            &format!("/v1/runtimes/{id}/commands"),
            &json!({ "command": "true" }),
        ),
        ex.delete(&format!("/v1/runtimes/{id}")),
        ex.get("/v1/runtimes/missing"),
        ex.request(reqwest::Method::GET, "/nope", Auth::None, |r| r),
        ex.request(reqwest::Method::GET, "/v1/runtimes", Auth::None, |r| r),
    ];
    for r in &responses {
        assert_eq!(
            r.header("server").as_deref(),
            Some("Executor"),
            "status {} {}",
            r.status,
            r.text()
        );
        if r.status < 400 && !r.body.is_empty() {
            assert!(r
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json")));
        }
    }
}

on_backends!(token_is_the_second_word_of_the_header);
fn token_is_the_second_word_of_the_header() {
    let ex = executor().start();
    for (header, ok) in [
        (format!("Bearer {}", ex.secret), true),
        (format!("Token {}", ex.secret), true),
        (format!("Bearer {} trailing", ex.secret), true),
        (format!("Bearer  {}", ex.secret), false),
        (ex.secret.to_string(), false),
        (format!("Bearer {}", ex.secret.to_uppercase()), false),
    ] {
        let r = ex.request(
            reqwest::Method::GET,
            "/v1/runtimes",
            Auth::Raw(&header),
            |r| r,
        );
        if ok {
            r.expect_status(200);
        } else {
            r.expect_error(401, "general_unauthorized");
        }
    }
}

on_backends!(executions_wait_for_a_pending_runtime);
fn executions_wait_for_a_pending_runtime() {
    let ex = executor().start();
    // Budget spent while the runtime is still being created.
    let id = unique_id("pending");
    let slow = with(idle(&id), json!({ "command": "sleep 3", "timeout": 30 }));
    std::thread::scope(|s| {
        let create = s.spawn(|| ex.create(&slow));
        wait_for(Duration::from_secs(10), "the pending runtime", || {
            ex.runtime(&id).filter(|r| r["status"] == "pending")
        });
        let started = Instant::now();
        ex.execute(&id, &json!({ "path": "/", "timeout": 1 }))
            .expect_error(400, "runtime_timeout");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "took {took:?}"
        );
        create.join().expect("create").expect_status(201);
    });
    // The entry vanishes while an execution waits for it (failed build).
    let id = unique_id("vanish");
    let failing = with(
        idle(&id),
        json!({ "command": "sleep 1; exit 1", "timeout": 30 }),
    );
    std::thread::scope(|s| {
        let create = s.spawn(|| ex.create(&failing));
        wait_for(Duration::from_secs(10), "the pending runtime", || {
            ex.runtime(&id).filter(|r| r["status"] == "pending")
        });
        let e = ex
            .execute(&id, &json!({ "path": "/", "timeout": 20 }))
            .expect_error(404, "runtime_not_found");
        assert_eq!(e["message"], "Runtime no longer exists.");
        create
            .join()
            .expect("create")
            .expect_error(400, "build_failed");
    });
}

on_backends!(log_stream_ends_at_its_timeout_and_for_unknown_runtimes);
fn log_stream_ends_at_its_timeout_and_for_unknown_runtimes() {
    let ex = executor().start();
    let read_all = |path: &str| {
        let started = Instant::now();
        let r = ex.request(reqwest::Method::GET, path, Auth::Secret, |r| {
            r.timeout(Duration::from_secs(30))
        });
        (r, started.elapsed())
    };
    // `timeout` (seconds) bounds a stream whose build runs longer.
    let id = unique_id("long");
    let body = with(
        idle(&id),
        json!({ "command": "echo started; sleep 5", "timeout": 30 }),
    );
    std::thread::scope(|s| {
        let create = s.spawn(|| ex.create(&body));
        // Once the build has printed its first line.
        let timings = ex.runtime_dir(&id).join("logging/timings.txt");
        wait_for(Duration::from_secs(20), "the build's first output", || {
            std::fs::metadata(&timings).ok().filter(|m| m.len() > 0)
        });
        let (r, took) = read_all(&format!("/v1/runtimes/{id}/logs?timeout=2"));
        r.expect_status(200);
        assert!(
            took < Duration::from_millis(3500),
            "stream with timeout=2 lasted {took:?}"
        );
        assert!(r.text().contains("started"), "{}", r.text());
        create.join().expect("create").expect_status(201);
    });
    // Nothing to follow: the stream ends after the container wait (§9 step 2).
    let (r, took) = read_all(&format!("/v1/runtimes/{}/logs", unique_id("ghost")));
    r.expect_status(200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert!(r.body.is_empty(), "{}", r.text());
    assert!(
        took < Duration::from_secs(7),
        "stream of an unknown runtime lasted {took:?}"
    );
}
