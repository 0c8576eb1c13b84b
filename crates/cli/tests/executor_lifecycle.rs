//! Runtime lifecycle (executor-api §8.2, §12): cold-start coalescing, the
//! warm pool, idle reaping, shutdown and restart of the executor.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn env_of(v: &Value) -> Value {
    serde_json::from_str(v["body"].as_str().expect("body")).expect("env JSON")
}

on_backends!(concurrent_cold_starts_coalesce_into_one_runtime);
fn concurrent_cold_starts_coalesce_into_one_runtime() {
    let ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("coalesce");
    let n = 20;
    let barrier = Arc::new(Barrier::new(n));
    let results: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let barrier = barrier.clone();
                let (ex, pkg, id) = (&ex, &pkg, &id);
                s.spawn(move || {
                    barrier.wait();
                    let r = ex.execute(id, &pkg.exec("/env"));
                    (r.status, r.text())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut secrets = Vec::new();
    for (status, text) in &results {
        assert_eq!(*status, 200, "{text}\n{}", ex.output());
        let v: Value = serde_json::from_str(text).expect("json");
        assert_eq!(v["statusCode"], 200, "{v}");
        secrets.push(
            env_of(&v)["OPEN_RUNTIMES_SECRET"]
                .as_str()
                .expect("secret")
                .to_string(),
        );
    }
    let list = ex.list();
    assert_eq!(list.len(), 1, "exactly one runtime: {list:?}");
    let key = list[0]["key"].as_str().expect("key");
    assert!(
        secrets.iter().all(|s| s == key),
        "every execution must hit the one runtime: {secrets:?} vs {key}"
    );
    // Created once, before any of the executions started billing.
    let created = list[0]["created"].as_f64().expect("created");
    for (_, text) in &results {
        let v: Value = serde_json::from_str(text).expect("json");
        let start = v["startTime"].as_f64().expect("startTime");
        assert!(
            created <= start,
            "runtime created at {created}, after an execution started at {start}"
        );
    }
}

/// Cold start wall time of a fresh runtime id.
fn timed_cold_start(ex: &Executor, pkg: &Package) -> (Duration, String) {
    let id = unique_id("cold");
    let started = Instant::now();
    let v = ex.execute_ok(&id, &pkg.exec("/"));
    assert_eq!(v["body"], "hello from node");
    (started.elapsed(), id)
}

on_backends!(warm_pool_makes_cold_starts_faster);
fn warm_pool_makes_cold_starts_faster() {
    let pkg = package(Lang::Node);
    let plain = executor().start();
    let pooled = executor()
        .env("OPR_EXECUTOR_WARM_POOL", &format!("{NODE_IMAGE}=1"))
        .start();
    // Without a pool (the first start of an executor also warms caches);
    // the best of two of each, against noise.
    let _ = timed_cold_start(&plain, &pkg);
    let without = timed_cold_start(&plain, &pkg)
        .0
        .min(timed_cold_start(&plain, &pkg).0);
    let with = pool_cold_start(&pooled, &pkg.exec("/"))
        .1
        .min(pool_cold_start(&pooled, &pkg.exec("/")).1);
    eprintln!("cold start without pool {without:?}, with pool {with:?}");
    assert!(
        with.as_secs_f64() < without.as_secs_f64() * 0.8,
        "warm pool cold start {with:?} is not clearly faster than {without:?}"
    );
    // The health report shows the pool per configured image.
    wait_for_pool(&pooled);
    let pool = pooled.get("/v1/health").json()["pool"].clone();
    assert_eq!(pool[NODE_IMAGE]["wanted"], 1, "{pool}");
    assert_eq!(pool[NODE_IMAGE]["ready"], 1, "{pool}");
    assert_eq!(pool.as_object().map(|o| o.len()), Some(1), "{pool}");
    // A pooled runtime behaves like any other: logs, env, warm calls.
    let mut body = pkg.exec("/env");
    body["variables"] = json!({ "POOL_VAR": "assigned" });
    body["memory"] = json!(256);
    let (id, _, v) = pool_cold_start(&pooled, &body);
    let env = env_of(&v);
    assert_eq!(env["POOL_VAR"], "assigned");
    assert!(
        env.get("OPR_WORKER_STANDBY").is_none(),
        "the standby hint leaked into the function: {env}"
    );
    assert_eq!(env["OPEN_RUNTIMES_MEMORY"], "256");
    assert_eq!(
        env["OPEN_RUNTIMES_SECRET"],
        pooled.runtime(&id).expect("runtime")["key"]
    );
    let v = pooled.execute_ok(&id, &json!({ "path": "/log" }));
    assert_eq!(v["logs"], "engine: open-runtimes\n");
}

// A pooled Bun runtime (a standby worker under bun) assigned a TypeScript
// package: the assignment's CONFIGURE reaches the worker, the variables
// apply, the standby hint is gone, and logs belong to the request.
on_backends!(bun_warm_pool_runtime_serves_typescript: process, docker);
fn bun_warm_pool_runtime_serves_typescript() {
    let pkg = package(Lang::Bun);
    let pooled = executor()
        .env("OPR_EXECUTOR_WARM_POOL", &format!("{BUN_IMAGE}=1"))
        .start();
    let mut body = pkg.exec("/env");
    body["variables"] = json!({ "POOL_VAR": "assigned to bun" });
    let (id, _, v) = pool_cold_start(&pooled, &body);
    let env = env_of(&v);
    assert_eq!(env["POOL_VAR"], "assigned to bun", "{env}");
    assert!(
        env.get("OPR_WORKER_STANDBY").is_none(),
        "the standby hint leaked into the function: {env}"
    );
    let v = pooled.execute_ok(&id, &json!({ "path": "/runtime" }));
    let runtime = body_json(&v);
    assert!(
        runtime["bun"].as_str().is_some_and(|b| !b.is_empty()),
        "{runtime}"
    );
    let v = pooled.execute_ok(&id, &json!({ "path": "/log" }));
    assert_eq!(v["errors"], "engine: open-runtimes\n");
    assert!(
        v["logs"].as_str().is_some_and(
            |l| l.starts_with("engine: open-runtimes\n") && l.ends_with("native: bun\n")
        ),
        "{v}"
    );
}

on_backends!(idle_runtimes_are_reaped);
fn idle_runtimes_are_reaped() {
    let ex = executor()
        .env("OPR_EXECUTOR_INACTIVE_THRESHOLD", "1")
        .env("OPR_EXECUTOR_MAINTENANCE_INTERVAL", "1")
        .start();
    let pkg = package(Lang::Node);
    let id = unique_id("idle");
    ex.execute_ok(&id, &pkg.exec("/"));
    // A build that stays pending longer than the threshold is not reaped.
    let slow = unique_id("slowbuild");
    let slow_body =
        json!({ "runtimeId": slow, "image": NODE_IMAGE, "command": "sleep 3", "timeout": 30 });
    let build = std::thread::spawn({
        let (url, secret) = (ex.url("/v1/runtimes"), ex.secret.clone());
        move || {
            reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client")
                .post(url)
                .header("authorization", format!("Bearer {secret}"))
                .json(&slow_body)
                .send()
                .expect("create")
                .status()
                .as_u16()
        }
    });
    let key = ex
        .runtime(&id)
        .map(|r| r["key"].as_str().unwrap_or_default().to_string());
    wait_for(
        Duration::from_secs(15),
        "the idle runtime to be reaped",
        || ex.runtime(&id).is_none().then_some(()),
    );
    wait_for(
        Duration::from_secs(10),
        "its work folder to be deleted",
        || (!ex.runtime_dir(&id).exists()).then_some(()),
    );
    if let Some(key) = key {
        let needle = format!("OPEN_RUNTIMES_SECRET={key}");
        wait_for(Duration::from_secs(10), "its processes to end", || {
            processes_with_env(&needle).is_empty().then_some(())
        });
    }
    assert_eq!(
        build.join().expect("build thread"),
        201,
        "the pending build was disturbed"
    );
    // A new execution cold-starts it again.
    ex.execute_ok(&id, &pkg.exec("/"));
}

on_backends!(runtime_with_execution_in_flight_is_not_reaped);
fn runtime_with_execution_in_flight_is_not_reaped() {
    let ex = executor()
        .env("OPR_EXECUTOR_INACTIVE_THRESHOLD", "1")
        .env("OPR_EXECUTOR_MAINTENANCE_INTERVAL", "1")
        .start();
    let pkg = package(Lang::Node);
    let id = unique_id("busy");
    let mut body = pkg.exec("/sleep?ms=4000");
    body["timeout"] = json!(30);
    std::thread::scope(|s| {
        let call = s.spawn(|| ex.execute(&id, &body));
        // Once the runtime is up, it must stay listed while the call runs.
        wait_for(Duration::from_secs(20), "the runtime to be up", || {
            ex.runtime(&id)
                .filter(|r| r["status"] != "pending")
                .map(|_| ())
        });
        let mut checks = 0;
        while !call.is_finished() {
            if ex.runtime(&id).is_none() {
                // It may only vanish after the call is done.
                assert!(
                    call.is_finished(),
                    "runtime reaped while an execution was in flight"
                );
            }
            checks += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            checks >= 10,
            "the execution ended too early to tell ({checks} checks)"
        );
        let r = call.join().expect("thread");
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["statusCode"], 200, "{v}");
        assert_eq!(v["body"], "slept");
    });
    // Idle afterwards: reaped.
    wait_for(
        Duration::from_secs(15),
        "the runtime to be reaped after the call",
        || ex.runtime(&id).is_none().then_some(()),
    );
}

on_backends!(sigterm_removes_runtimes);
fn sigterm_removes_runtimes() {
    let mut ex = executor().start();
    let pkg = package(Lang::Node);
    let id = unique_id("term");
    ex.execute_ok(&id, &pkg.exec("/"));
    let key = ex.runtime(&id).expect("runtime")["key"]
        .as_str()
        .expect("key")
        .to_string();
    let needle = format!("OPEN_RUNTIMES_SECRET={key}");
    assert!(
        !processes_with_env(&needle).is_empty(),
        "the runtime's processes should be visible on the host"
    );
    let dir = ex.runtime_dir(&id);
    assert!(dir.is_dir());
    assert!(
        ex.stop(),
        "the executor did not exit on SIGTERM:\n{}",
        ex.output()
    );
    wait_for(
        Duration::from_secs(10),
        "the runtime's processes to end",
        || processes_with_env(&needle).is_empty().then_some(()),
    );
    assert!(!dir.exists(), "work folder left after shutdown");

    // Warm-pool runtimes go too: no sandbox of the executor is left.
    let mut pooled = executor()
        .env("OPR_EXECUTOR_WARM_POOL", &format!("{NODE_IMAGE}=1"))
        .start();
    wait_for_pool(&pooled);
    assert!(
        sandboxes_of(&pooled) > 0,
        "the pool's sandbox should be visible on the backend"
    );
    assert!(
        pooled.stop(),
        "the executor did not exit on SIGTERM:\n{}",
        pooled.output()
    );
    wait_for(
        Duration::from_secs(10),
        "every sandbox of the executor to end",
        || (sandboxes_of(&pooled) == 0).then_some(()),
    );
}

on_backends!(restart_after_kill_cleans_leftovers);
fn restart_after_kill_cleans_leftovers() {
    let work = tempfile::Builder::new()
        .prefix("opr-exec-restart-")
        .tempdir()
        .expect("tempdir");
    let hostname = format!("t-{}", random_hex(8));
    let pkg = package(Lang::Node);
    let id = unique_id("restart");
    let mut first = executor().hostname(&hostname).work_dir(work.path()).start();
    first.execute_ok(&id, &pkg.exec("/"));
    let key = first.runtime(&id).expect("runtime")["key"]
        .as_str()
        .expect("key")
        .to_string();
    let dir = first.runtime_dir(&id);
    assert!(dir.is_dir());
    first.kill9();

    let second = executor().hostname(&hostname).work_dir(work.path()).start();
    assert!(
        second.list().is_empty(),
        "a new executor starts with an empty registry"
    );
    wait_for(
        Duration::from_secs(10),
        "the old work folder to be removed",
        || (!dir.exists()).then_some(()),
    );
    let needle = format!("OPEN_RUNTIMES_SECRET={key}");
    wait_for(
        Duration::from_secs(10),
        "the old runtime's processes to end",
        || processes_with_env(&needle).is_empty().then_some(()),
    );
    // The same id cold-starts fine, as a new runtime.
    let v = second.execute_ok(&id, &pkg.exec("/env"));
    let env = env_of(&v);
    assert_ne!(env["OPEN_RUNTIMES_SECRET"], key.as_str());
    assert_eq!(second.list().len(), 1);
}

on_backends!(maintenance_keeps_the_pool_and_reaps_pooled_runtimes);
fn maintenance_keeps_the_pool_and_reaps_pooled_runtimes() {
    let ex = executor()
        .env("OPR_EXECUTOR_WARM_POOL", &format!("{NODE_IMAGE}=1"))
        .env("OPR_EXECUTOR_INACTIVE_THRESHOLD", "1")
        .env("OPR_EXECUTOR_MAINTENANCE_INTERVAL", "1")
        .start();
    let pkg = package(Lang::Node);
    wait_for_pool(&ex);
    // Several maintenance runs pass; the idle pool runtime is not theirs.
    let prefix = format!("{}-pool-", ex.hostname);
    let pool_dirs = || -> Vec<String> {
        std::fs::read_dir(&ex.work_dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = pool_dirs();
    let until = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < until {
        let now = pool_dirs();
        assert!(
            before.iter().all(|d| now.contains(d)),
            "maintenance removed a pool folder: {before:?} -> {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The pool still serves, and the pooled runtime is reaped when idle.
    let (id, _, _) = pool_cold_start(&ex, &pkg.exec("/"));
    let key = ex.runtime(&id).expect("runtime")["key"]
        .as_str()
        .expect("key")
        .to_string();
    wait_for(
        Duration::from_secs(15),
        "the idle pooled runtime to be reaped",
        || ex.runtime(&id).is_none().then_some(()),
    );
    let needle = format!("OPEN_RUNTIMES_SECRET={key}");
    wait_for(Duration::from_secs(10), "its processes to end", || {
        processes_with_env(&needle).is_empty().then_some(())
    });
}

on_backends!(runtime_limit_also_holds_for_pool_hits_and_cold_starts);
fn runtime_limit_also_holds_for_pool_hits_and_cold_starts() {
    let pkg = package(Lang::Node);
    for pool in [false, true] {
        let mut b = executor().env("OPR_EXECUTOR_MAX_RUNTIMES", "1");
        if pool {
            b = b.env("OPR_EXECUTOR_WARM_POOL", &format!("{NODE_IMAGE}=1"));
        }
        let ex = b.start();
        let first = if pool {
            pool_cold_start(&ex, &pkg.exec("/")).0
        } else {
            let id = unique_id("first");
            ex.execute_ok(&id, &pkg.exec("/"));
            id
        };
        if pool {
            wait_for_pool(&ex);
        }
        let mut body = pkg.exec("/");
        body["timeout"] = json!(2);
        let r = ex.execute(&unique_id("second"), &body);
        assert!(
            r.status >= 400,
            "pool={pool}: a second runtime started past the limit of 1: {}",
            r.text()
        );
        let msg = r.json()["message"].as_str().unwrap_or("").to_lowercase();
        assert!(
            msg.contains("limit"),
            "pool={pool}: message must mention the limit: {}",
            r.text()
        );
        assert_eq!(ex.list_ids(), vec![first], "pool={pool}");
    }
}
