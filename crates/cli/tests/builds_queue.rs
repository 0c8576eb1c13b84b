//! The durable build queue under stress (docs/builds.md): cancelling queued
//! and running jobs, and `kill -9` of the executor with jobs running and
//! queued, restarted on the same work folder and database.

mod builds_support;
mod common;

use builds_support::*;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// A build of the plain Node fixture whose install step is `command`.
fn job_body(runtime_id: &str, command: &str, dest: &Path) -> Value {
    let mut body = build_body(NODE_IMAGE, "index.js", folder(&fixture("node-plain")), dest);
    body["runtimeId"] = json!(runtime_id);
    body["command"] = json!(command);
    body
}

/// Processes of this executor's runtimes (every sandbox gets
/// `OPEN_RUNTIMES_HOSTNAME=<executor hostname>`).
fn sandbox_processes(hostname: &str) -> Vec<u32> {
    processes_with_env(&format!("OPEN_RUNTIMES_HOSTNAME={hostname}"))
}

#[test]
fn cancelled_jobs_never_run_or_stop_promptly() {
    let ex = executor().env("OPR_EXECUTOR_BUILD_WORKERS", "1").start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("out");
    let long_id = unique_id("long");
    let long = id_of(&submit(
        &ex,
        &job_body(
            &long_id,
            "echo long-job-started; sleep 30; echo long-job-finished",
            &dest,
        ),
    ));
    let queued_id = unique_id("queued");
    let queued = id_of(&submit(
        &ex,
        &job_body(&queued_id, "echo the-queued-job-ran", &dest),
    ));
    // The live log shows the running build; the other job waits.
    wait_running_with(&ex, &long, "long-job-started");
    assert!(
        ex.list_ids().contains(&long_id),
        "the running build is a runtime"
    );
    assert_eq!(job(&ex, &queued)["state"], "queued");

    // Cancel the queued job: it never runs.
    let r = ex.delete(&format!("/v1/builds/{queued}"));
    r.expect_status(200);
    let v = r.json();
    assert_eq!(
        (v["previousState"].clone(), v["state"].clone()),
        (json!("queued"), json!("cancelled")),
        "{v}"
    );

    // Cancel the running job: its sandbox goes within seconds.
    let asked = Instant::now();
    let r = ex.delete(&format!("/v1/builds/{long}"));
    r.expect_status(200);
    let v = r.json();
    assert_eq!(
        (v["previousState"].clone(), v["state"].clone()),
        (json!("running"), json!("cancelled")),
        "{v}"
    );
    wait_for(
        Duration::from_secs(10),
        "the cancelled build's runtime to go",
        || (!ex.list_ids().contains(&long_id) && !ex.runtime_dir(&long_id).exists()).then_some(()),
    );
    wait_for(
        Duration::from_secs(10),
        "the cancelled build's processes to end",
        || sandbox_processes(&ex.hostname).is_empty().then_some(()),
    );
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(5), "cancel took {took:?}");

    // The worker is free again: a new job runs and succeeds, the cancelled
    // queued job stays untouched.
    build_ok(
        &ex,
        &job_body(&unique_id("after"), "echo after-cancel", &dest),
    );
    let q = job(&ex, &queued);
    assert_eq!(q["state"], "cancelled", "{q}");
    assert_eq!(q["attempts"], 0, "the queued job must never start: {q}");
    assert!(q["started"].is_null(), "{q}");
    assert!(!output_text(&logs(&ex, &queued)["output"]).contains("the-queued-job-ran"));
    let l = job(&ex, &long);
    assert_eq!(
        l["state"], "cancelled",
        "the outcome of a cancelled job is dropped: {l}"
    );
    assert!(l["result"].is_null(), "{l}");
    assert!(
        l["reason"].as_str().is_some_and(|r| r.contains("cancel")),
        "{l}"
    );
    // Cancelling a final job changes nothing.
    let v = ex.delete(&format!("/v1/builds/{long}")).json();
    assert_eq!(
        (v["previousState"].clone(), v["state"].clone()),
        (json!("cancelled"), json!("cancelled")),
        "{v}"
    );
}

/// Starts an executor on a given work folder and hostname (restarts).
fn start_on(dir: &Path, hostname: &str) -> Executor {
    executor()
        .work_dir(dir)
        .hostname(hostname)
        .env("OPR_EXECUTOR_BUILD_WORKERS", "1")
        .start()
}

#[test]
fn a_job_interrupted_by_kill_9_is_retried_and_queued_jobs_still_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    let dest = tmp.path().join("out");
    let hostname = format!("t-{}", random_hex(8));
    let mut ex = start_on(&work, &hostname);
    let long = id_of(&submit(
        &ex,
        &job_body(
            &unique_id("long"),
            "echo long-started; sleep 8 && echo long-done",
            &dest,
        ),
    ));
    let quick: Vec<String> = (0..2)
        .map(|i| {
            id_of(&submit(
                &ex,
                &job_body(&unique_id("quick"), &format!("echo quick-{i}"), &dest),
            ))
        })
        .collect();
    wait_running_with(&ex, &long, "long-started");
    for q in &quick {
        assert_eq!(job(&ex, q)["state"], "queued");
    }
    ex.kill9();
    drop(ex);

    let ex = start_on(&work, &hostname);
    let retried = job(&ex, &long);
    assert!(
        retried["reason"]
            .as_str()
            .is_some_and(|r| r.contains("retried")),
        "{retried}"
    );
    let done = wait_final(&ex, &long);
    assert_eq!(done["state"], "succeeded", "{done}\n{}", ex.output());
    assert_eq!(done["attempts"], 2, "{done}");
    assert!(
        done["reason"]
            .as_str()
            .is_some_and(|r| r.contains("retried")),
        "{done}"
    );
    assert!(build_log(&done).contains("long-done"), "{done}");
    assert!(package_path(&done).is_file());
    for (i, q) in quick.iter().enumerate() {
        let j = wait_final(&ex, q);
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(j["attempts"], 1, "{j}");
        assert!(build_log(&j).contains(&format!("quick-{i}")), "{j}");
    }
    let stuck: Vec<Value> = list_jobs(&ex)
        .into_iter()
        .filter(|j| !is_final(&j["state"]))
        .collect();
    assert!(stuck.is_empty(), "jobs left behind: {stuck:?}");
    assert!(
        ex.output().contains("build queue recovered: 1 retried"),
        "{}",
        ex.output()
    );
    // What the killed executor ran is gone too.
    wait_for(
        Duration::from_secs(10),
        "no leftover sandbox processes",
        || sandbox_processes(&hostname).is_empty().then_some(()),
    );
}

#[test]
fn a_job_interrupted_twice_fails_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    let dest = tmp.path().join("out");
    let hostname = format!("t-{}", random_hex(8));
    let mut ex = start_on(&work, &hostname);
    let long = id_of(&submit(
        &ex,
        &job_body(&unique_id("long"), "echo long-started; sleep 60", &dest),
    ));
    wait_running_with(&ex, &long, "long-started");
    ex.kill9();
    drop(ex);

    let mut ex = start_on(&work, &hostname);
    let again = wait_running_with(&ex, &long, "long-started");
    assert_eq!(again["state"], "running");
    assert_eq!(job(&ex, &long)["attempts"], 2);
    ex.kill9();
    drop(ex);

    let ex = start_on(&work, &hostname);
    let j = job(&ex, &long);
    assert_eq!(j["state"], "failed", "{j}");
    assert!(
        j["reason"].as_str().is_some_and(|r| r.contains("twice")),
        "{j}"
    );
    assert_eq!(j["error"]["type"], "build_failed", "{j}");
    assert!(j["finished"].as_f64().is_some(), "{j}");
    // The queue keeps working.
    build_ok(
        &ex,
        &job_body(&unique_id("after"), "echo after-restarts", &dest),
    );
    wait_for(
        Duration::from_secs(10),
        "no leftover sandbox processes",
        || sandbox_processes(&hostname).is_empty().then_some(()),
    );
}

/// A cancel while the source is still being fetched stops the fetch at
/// once (git is killed), no runtime is ever created, and the worker is free
/// for the next job. The "remote" is a local TCP server that accepts and
/// never answers, so git is certainly still fetching when the cancel comes.
#[test]
fn cancel_during_a_git_fetch_stops_it_and_creates_nothing() {
    require_tool(
        "git",
        "git sources are cloned with it (apt-get install git)",
    );
    let ex = executor().env("OPR_EXECUTOR_BUILD_WORKERS", "1").start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("out");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (accepted, connected) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = accepted.send(());
            // Holds the connection open until git goes away.
            let _ = std::io::Read::read_to_end(&mut stream, &mut Vec::new());
            let _ = accepted.send(());
        }
    });
    let runtime_id = unique_id("gitcancel");
    let mut body = build_body(
        NODE_IMAGE,
        "index.js",
        json!({"type": "git", "url": format!("http://127.0.0.1:{port}/repo.git"), "ref": "main"}),
        &dest,
    );
    body["runtimeId"] = json!(runtime_id);
    let id = id_of(&submit(&ex, &body));
    connected
        .recv_timeout(Duration::from_secs(30))
        .expect("git never connected to the fake remote");
    assert_eq!(job(&ex, &id)["state"], "running");

    let asked = Instant::now();
    let v = ex.delete(&format!("/v1/builds/{id}")).json();
    assert_eq!(v["previousState"], "running", "{v}");
    assert_eq!(v["state"], "cancelled", "{v}");
    // git is gone: its connection closes well before git's own timeout.
    connected
        .recv_timeout(Duration::from_secs(10))
        .expect("git kept fetching after the cancel");
    assert!(asked.elapsed() < Duration::from_secs(10));

    // The worker is free: the next job runs and succeeds. Nothing of the
    // cancelled one was created, and no source leftovers stay behind.
    build_ok(&ex, &job_body(&unique_id("next"), "echo next", &dest));
    assert!(!ex.list_ids().contains(&runtime_id));
    assert!(!ex.runtime_dir(&runtime_id).exists());
    let j = job(&ex, &id);
    assert_eq!(j["state"], "cancelled", "{j}");
    assert!(j["result"].is_null(), "{j}");
    let leftovers: Vec<_> = std::fs::read_dir(ex.work_dir.join("build-sources"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&id))
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
