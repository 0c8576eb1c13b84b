//! Isolation on every backend: memory and process limits, file system and
//! environment separation between runtimes and from the executor.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

on_backends!(memory_hog_fails_alone);
fn memory_hog_fails_alone() {
    let mut ex = executor().start();
    let pkg = package(Lang::Node);
    let hog = unique_id("hog");
    let other = unique_id("other");
    ex.execute_ok(&other, &pkg.exec("/"));
    let mut body = pkg.exec("/");
    body["memory"] = json!(128);
    ex.execute_ok(&hog, &body);
    let started = Instant::now();
    let r = ex.execute(&hog, &json!({ "path": "/alloc?mb=2048", "timeout": 30 }));
    let failed = r.status >= 400 || r.json()["statusCode"].as_u64() != Some(200);
    assert!(
        failed,
        "allocating 2 GB under a 128 MB limit succeeded: {}",
        r.text()
    );
    assert!(started.elapsed() < Duration::from_secs(35));
    ex.assert_healthy();
    assert_eq!(
        ex.execute_ok(&other, &json!({ "path": "/" }))["body"],
        "hello from node"
    );
    // Without the limit's pressure, the same runtime id still works (it may
    // have been restarted) or reports an error, but the executor is fine.
    ex.assert_healthy();
}

on_backends!(fork_loop_hits_the_process_limit);
fn fork_loop_hits_the_process_limit() {
    let mut ex = executor().start();
    let py = package(Lang::Python);
    let node = package(Lang::Node);
    let other = unique_id("other");
    ex.execute_ok(&other, &node.exec("/"));
    let id = unique_id("forks");
    let body = py.exec("/forks?seconds=15");
    let v = ex.execute_ok(&id, &body);
    let result = body_json(&v);
    let count = result["count"].as_u64().expect("count");
    assert!(
        !result["refused"].is_null(),
        "fork was never refused ({count} children): {result}"
    );
    assert!(count < 5000, "{count} processes before fork was refused");
    ex.assert_healthy();
    assert_eq!(
        ex.execute_ok(&other, &json!({ "path": "/" }))["body"],
        "hello from node"
    );
}

on_backends!(fork_bomb_is_contained_and_removed_with_its_runtime);
fn fork_bomb_is_contained_and_removed_with_its_runtime() {
    let mut ex = executor().start();
    let pkg = package(Lang::Node);
    let other = unique_id("other");
    ex.execute_ok(&other, &pkg.exec("/"));
    let bomb = unique_id("bomb");
    let mut body = pkg.exec("/");
    body["cpus"] = json!(0.5);
    ex.execute_ok(&bomb, &body);
    let key = ex.runtime(&bomb).expect("runtime")["key"]
        .as_str()
        .expect("key")
        .to_string();
    // The classic bomb; spawnSync gives up on its direct child after 3 s,
    // the rest keeps forking until the runtime is removed.
    let v = ex.execute_ok(&bomb, &json!({ "path": format!("/exec?timeout=3000&cmd={}", url_encode(":(){ :|:& };:")), "timeout": 20 }));
    let out = body_json(&v);
    assert!(
        out["stderr"]
            .as_str()
            .unwrap_or("")
            .contains("Resource temporarily unavailable"),
        "the bomb should run into the process limit: {out}"
    );
    // While it rages: the executor and the other runtime answer promptly.
    for _ in 0..3 {
        let started = Instant::now();
        ex.assert_healthy();
        assert_eq!(
            ex.execute_ok(&other, &json!({ "path": "/", "timeout": 10 }))["body"],
            "hello from node"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
    }
    // Removing the runtime ends every process of it.
    let started = Instant::now();
    ex.delete(&format!("/v1/runtimes/{bomb}"))
        .expect_status(200);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "delete took {:?}",
        started.elapsed()
    );
    let needle = format!("OPEN_RUNTIMES_SECRET={key}");
    wait_for(
        Duration::from_secs(15),
        "the bomb's processes to end",
        || {
            let left = processes_with_env(&needle);
            left.is_empty().then_some(())
        },
    );
    ex.assert_healthy();
}

/// Host processes whose environment holds `needle`.
fn processes_with_env(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(env) = std::fs::read(entry.path().join("environ")) {
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                found.push(pid);
            }
        }
    }
    found
}

on_backends!(runtimes_cannot_see_each_other_or_the_executor);
fn runtimes_cannot_see_each_other_or_the_executor() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let a = unique_id("a");
    let b = unique_id("b");
    ex.execute_ok(&a, &pkg.exec("/"));
    ex.execute_ok(&b, &pkg.exec("/"));
    let key_b = ex.runtime(&b).expect("b")["key"]
        .as_str()
        .expect("key")
        .to_string();
    let b_dir = ex.runtime_dir(&b);
    assert!(
        b_dir.join("src").is_dir(),
        "b's work folder exists on the host"
    );

    // The probes work: a reads its own archive.
    let own = body_json(&ex.execute_ok(&a, &json!({ "path": "/read?path=/tmp/code.tar.gz" })));
    assert_eq!(
        own["ok"], true,
        "a cannot read its own /tmp/code.tar.gz: {own}"
    );
    let key_a = ex.runtime(&a).expect("a")["key"]
        .as_str()
        .expect("key")
        .to_string();
    // B's files by their host paths.
    for path in [
        b_dir.join("src/code.tar.gz"),
        b_dir.join("src"),
        b_dir.clone(),
        ex.work_dir.clone(),
        ex.work_dir.join(".process"),
    ] {
        let p = path.to_str().expect("utf-8");
        let read = body_json(&ex.execute_ok(
            &a,
            &json!({ "path": format!("/read?path={}", url_encode(p)) }),
        ));
        assert_eq!(read["ok"], false, "a read {p}: {read}");
        let ls = body_json(&ex.execute_ok(
            &a,
            &json!({ "path": format!("/ls?path={}", url_encode(p)) }),
        ));
        assert_eq!(ls["ok"], false, "a listed {p}: {ls}");
    }
    // /tmp holds only a's own files.
    let ls = body_json(&ex.execute_ok(&a, &json!({ "path": "/ls?path=/tmp" })));
    let entries: Vec<String> = ls["value"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e.as_str().unwrap_or("").to_string())
        .collect();
    let host_tmp: Vec<String> = std::fs::read_dir("/tmp")
        .expect("host /tmp")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("opr-exec-test-") || n.starts_with(".tmp"))
        .collect();
    for e in &entries {
        assert!(
            !host_tmp.contains(e),
            "a sees host /tmp entry {e}: {entries:?}"
        );
    }
    assert!(
        entries.iter().any(|e| e == "code.tar.gz"),
        "a's own archive: {entries:?}"
    );
    // No process of b or of the executor, and no secret, through /proc.
    let out = sh(
        &ex,
        &a,
        "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done 2>/dev/null; ls /proc",
    );
    let text = out["stdout"].as_str().expect("stdout");
    assert!(
        text.contains(&format!("OPEN_RUNTIMES_SECRET={key_a}")),
        "a's own environment should be readable: {out}"
    );
    assert!(
        !text.contains(&ex.secret),
        "executor secret visible through /proc"
    );
    assert!(
        !text.contains(&ex.canary),
        "executor environment visible through /proc"
    );
    assert!(!text.contains(&key_b), "b's secret visible from a");
    let host_pid = ex.pid().to_string();
    let environ = body_json(&ex.execute_ok(
        &a,
        &json!({ "path": format!("/read?path=/proc/{host_pid}/environ") }),
    ));
    if environ["ok"] == true {
        let bytes = decode_b64(environ["value"].as_str().expect("base64"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&ex.secret) && !text.contains(&ex.canary),
            "executor environ readable by pid"
        );
    }
    let one = body_json(&ex.execute_ok(&a, &json!({ "path": "/read?path=/proc/1/environ" })));
    if one["ok"] == true {
        let text = String::from_utf8_lossy(&decode_b64(one["value"].as_str().expect("base64")))
            .into_owned();
        assert!(
            !text.contains(&ex.secret) && !text.contains(&ex.canary),
            "executor environment in /proc/1/environ"
        );
    }
    // The function's own environment.
    let env = body_json(&ex.execute_ok(&a, &json!({ "path": "/env" })));
    assert!(env.get("OPR_EXECUTOR_SECRET").is_none(), "{env}");
    assert!(!env.to_string().contains(&ex.secret));
    // Signals cannot reach the executor: its host pid is not in the
    // runtime's pid namespace (a fresh one never hands out pids that high
    // in a test, so `kill -0` there finds no process).
    let kill = sh(&ex, &a, &format!("kill -0 {host_pid} 2>&1; echo rc=$?"));
    assert!(
        !kill["stdout"].as_str().unwrap_or("").contains("rc=0"),
        "{kill}"
    );
    ex.execute_ok(&b, &json!({ "path": "/" }));
}

fn decode_b64(s: &str) -> Vec<u8> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let Some(v) = T.iter().position(|&x| x == c) else {
            continue;
        };
        buf = (buf << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

on_backends!(function_cannot_modify_the_stored_package);
fn function_cannot_modify_the_stored_package() {
    let pkg = package(Lang::Node);
    let original = std::fs::read(&pkg.path).expect("package");
    for pool in [false, true] {
        let mut b = executor();
        if pool {
            b = b.env("OPR_EXECUTOR_WARM_POOL", &format!("{NODE_IMAGE}=1"));
        }
        let ex = b.start();
        let id = if pool {
            pool_cold_start(&ex, &pkg.exec("/")).0
        } else {
            let id = unique_id("tamper");
            ex.execute_ok(&id, &pkg.exec("/"));
            id
        };
        // Whether the write is allowed inside or not, storage must not change.
        ex.execute_ok(&id, &json!({ "path": "/append?path=/tmp/code.tar.gz" }));
        let now = std::fs::read(&pkg.path).expect("package");
        assert!(
            now == original,
            "pool={pool}: a function changed the stored build package through /tmp/code.tar.gz"
        );
    }
}

on_backends!(pooled_runtime_gets_the_function_memory_limit);
fn pooled_runtime_gets_the_function_memory_limit() {
    let mut ex = executor()
        .env("OPR_EXECUTOR_WARM_POOL", &format!("{NODE_IMAGE}=1"))
        .start();
    let pkg = package(Lang::Node);
    let mut body = pkg.exec("/");
    body["memory"] = json!(128);
    let (id, _, _) = pool_cold_start(&ex, &body);
    let r = ex.execute(&id, &json!({ "path": "/alloc?mb=2048", "timeout": 30 }));
    let failed = r.status >= 400 || r.json()["statusCode"].as_u64() != Some(200);
    assert!(
        failed,
        "a pooled runtime allocated 2 GB under a 128 MB limit: {}",
        r.text()
    );
    ex.assert_healthy();
    let env = body_json(&ex.execute_ok(&id, &json!({ "path": "/env" })));
    assert_eq!(env["OPEN_RUNTIMES_MEMORY"], "128");
    assert_eq!(env["CI"], "true");
    assert_eq!(env["OPEN_RUNTIMES_HOSTNAME"], ex.hostname);
    assert_eq!(env["INERNAL_EXECUTOR_HOSTNAME"], ex.hostname);
    eprintln!(
        "pooled env keys: {:?}",
        env.as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
    );
}
