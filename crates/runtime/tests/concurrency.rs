//! Concurrent requests (runtime-protocol §3.14, docs/worker-protocol.md):
//! many invocations in flight at once, each writing only its own log files.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;

for_all_languages!(
    two_hundred_concurrent_requests_each_log_only_their_own_lines,
    concurrent_requests_on_two_workers_each_log_only_their_own_lines,
    slow_async_requests_run_concurrently,
);

fn expected_log(marker: &str) -> String {
    let mut expected = format!("{NATIVE_BANNER}\n");
    for i in 0..5 {
        expected.push_str(&format!("native {marker} {i}\ncontext {marker} {i}\n"));
    }
    expected
}

fn hammer(rt: &Runtime, requests: usize) {
    let results: Vec<(usize, Resp)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..requests)
            .map(|i| {
                scope.spawn(move || {
                    let resp = send(
                        rt.action("concurrent-log")
                            .header("x-marker", format!("m{i}"))
                            .header(LOG_ID_HEADER, format!("concurrent-{i}")),
                    );
                    (i, resp)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("request thread panicked"))
            .collect()
    });
    let mut failures = Vec::new();
    for (i, resp) in &results {
        let marker = format!("m{i}");
        let id = format!("concurrent-{i}");
        if resp.status != 200 || resp.text() != marker {
            failures.push(format!(
                "request {i}: status {} body {:?}",
                resp.status,
                resp.text()
            ));
            continue;
        }
        if resp.header(LOG_ID_HEADER).as_deref() != Some(id.as_str()) {
            failures.push(format!(
                "request {i}: log id {:?}",
                resp.header(LOG_ID_HEADER)
            ));
        }
        let logs = rt.logs(&id);
        if logs != expected_log(&marker) {
            failures.push(format!("request {i}: {id}_logs.log is {logs:?}"));
        }
        let errors = rt.errors(&id);
        if !errors.is_empty() {
            failures.push(format!("request {i}: {id}_errors.log is {errors:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn two_hundred_concurrent_requests_each_log_only_their_own_lines(lang: Lang) {
    let rt = Runtime::start(lang, "basic");
    hammer(&rt, 200);
}

fn concurrent_requests_on_two_workers_each_log_only_their_own_lines(lang: Lang) {
    let rt = Runtime::builder(lang, "basic")
        .env("OPR_RUNTIME_WORKERS", "2")
        .start();
    hammer(&rt, 100);
}

/// Ten requests that each wait 500 ms finish together well before the
/// 5 s they would take one after another.
fn slow_async_requests_run_concurrently(lang: Lang) {
    let rt = Runtime::start(lang, "basic");
    // Warm up: the first request loads the function.
    assert_eq!(send(rt.action("res-text")).status, 200);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|_| scope.spawn(|| send(rt.action("sleep-500ms"))))
            .collect();
        for handle in handles {
            let resp = handle.join().expect("request thread panicked");
            assert_eq!((resp.status, resp.text().as_str()), (200, "slept 500ms"));
        }
    });
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(2500),
        "10 concurrent 500 ms requests took {elapsed:?}"
    );
}

#[test]
fn python_sync_functions_run_concurrently_on_threads() {
    let rt = Runtime::start(Lang::Python, "sync");
    assert_eq!(send(rt.request(reqwest::Method::GET, "/")).status, 200);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    send(
                        rt.request(reqwest::Method::GET, "/")
                            .header("x-sleep", "0.5"),
                    )
                })
            })
            .collect();
        for handle in handles {
            let resp = handle.join().expect("request thread panicked");
            assert_eq!((resp.status, resp.text().as_str()), (200, "sync GET"));
        }
    });
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "4 concurrent blocking 500 ms requests took {elapsed:?}"
    );
}
