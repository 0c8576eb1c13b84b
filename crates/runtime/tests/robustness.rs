//! Timeouts and worker crashes (runtime-protocol §3.11, §4.5;
//! docs/worker-protocol.md): the request that hits them gets a 500, and the
//! server goes on serving.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;

for_all_languages!(
    endless_cpu_loop_times_out_with_500_and_next_request_succeeds,
    async_sleep_past_timeout_gets_500_keeping_earlier_logs,
    native_capture_is_released_after_a_timeout,
    process_exit_gets_500_and_next_request_succeeds,
    segfault_gets_500_and_next_request_succeeds,
    exception_does_not_break_later_requests,
);

mod javascript {
    use super::*;

    for_javascript_runtimes!(background_failures_are_logged_and_do_not_replace_the_worker);

    /// An exception thrown from a timer and a rejection nobody handles, both
    /// outside any request: written to the container output, and the same
    /// worker process goes on serving.
    fn background_failures_are_logged_and_do_not_replace_the_worker(lang: Lang) {
        let rt = Runtime::start(lang, "basic");
        let resp = send(rt.action("background-failures"));
        assert_eq!(resp.status, 200, "{}", resp.text());
        let pid = resp.text();
        let deadline = Instant::now() + REQUEST_WAIT;
        while !(rt.output_text().contains("background exception")
            && rt.output_text().contains("background rejection"))
        {
            assert!(
                Instant::now() < deadline,
                "no report of the background failures:\n{}",
                rt.output_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let resp = send(rt.action("pid"));
        assert_eq!(
            (resp.status, resp.text()),
            (200, pid),
            "worker was replaced"
        );
        assert_serving(&rt);
    }
}

/// The deadline is 1 s; the answer must come soon after it, not at the
/// client's own timeout.
fn assert_timed_out_quickly(resp: &Resp, elapsed: Duration) {
    assert_eq!(resp.status, 500, "body {:?}", resp.text());
    assert_eq!(resp.text(), "", "timeout responses have an empty body");
    assert!(
        elapsed >= Duration::from_millis(900),
        "answered after {elapsed:?}, before the 1 s deadline"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}, expected about 1 s"
    );
}

fn assert_serving(rt: &Runtime) {
    let resp = send(rt.action("res-text"));
    let id = resp.header(LOG_ID_HEADER).unwrap_or_default();
    assert_eq!(
        resp.status,
        200,
        "next request failed: body {:?}, errors log {:?}",
        resp.text(),
        rt.errors(&id)
    );
    assert_eq!(resp.text(), "Hello, World! ✓");
}

fn endless_cpu_loop_times_out_with_500_and_next_request_succeeds(lang: Lang) {
    let rt = Runtime::start(lang, "basic");
    let started = Instant::now();
    let resp = send(
        rt.action("cpu-loop")
            .header("x-open-runtimes-timeout", "1")
            .header(LOG_ID_HEADER, "cpu"),
    );
    assert_timed_out_quickly(&resp, started.elapsed());
    assert_eq!(resp.log_id(), "cpu");
    let errors = rt.errors("cpu");
    assert!(errors.contains(TIMED_OUT_ERROR), "errors: {errors:?}");
    assert_serving(&rt);
    assert_serving(&rt);
}

fn async_sleep_past_timeout_gets_500_keeping_earlier_logs(lang: Lang) {
    let rt = Runtime::start(lang, "basic");
    let started = Instant::now();
    let resp = send(
        rt.action("sleep-past-timeout")
            .header("x-open-runtimes-timeout", "1")
            .header(LOG_ID_HEADER, "sleepy"),
    );
    assert_timed_out_quickly(&resp, started.elapsed());
    assert_eq!(resp.log_id(), "sleepy");
    assert_eq!(
        rt.logs("sleepy"),
        format!("before the deadline\n{NATIVE_BANNER}\nnative before the deadline\n"),
        "lines logged before the deadline are kept"
    );
    let errors = rt.errors("sleepy");
    assert!(
        errors.starts_with("error before the deadline\n"),
        "errors: {errors:?}"
    );
    assert!(errors.contains(TIMED_OUT_ERROR), "errors: {errors:?}");
    assert_serving(&rt);
}

fn native_capture_is_released_after_a_timeout(lang: Lang) {
    let rt = Runtime::start(lang, "basic");
    let resp = send(
        rt.action("sleep-past-timeout")
            .header("x-open-runtimes-timeout", "1")
            .header(LOG_ID_HEADER, "abandoned"),
    );
    assert_eq!(resp.status, 500);
    // The abandoned function may still be sleeping; a later request must
    // still capture its own native output.
    let resp = send(rt.action("native-log").header(LOG_ID_HEADER, "after"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        rt.logs("after"),
        format!("{NATIVE_BANNER}\nnative stdout line\nnative stderr line\n")
    );
}

fn process_exit_gets_500_and_next_request_succeeds(lang: Lang) {
    let rt = Runtime::start(lang, "basic");
    let resp = send(rt.action("exit").header(LOG_ID_HEADER, "exited"));
    assert_eq!(resp.status, 500, "body {:?}", resp.text());
    assert_eq!(resp.text(), "");
    assert_eq!(resp.log_id(), "exited");
    assert!(
        !rt.errors("exited").is_empty(),
        "the failure must be written to the errors log"
    );
    assert_serving(&rt);
    // And again: the replacement worker can be replaced too.
    let resp = send(rt.action("exit"));
    assert_eq!(resp.status, 500);
    assert_serving(&rt);
}

fn segfault_gets_500_and_next_request_succeeds(lang: Lang) {
    let rt = Runtime::start(lang, "basic");
    let resp = send(rt.action("segfault").header(LOG_ID_HEADER, "crashed"));
    assert_eq!(resp.status, 500, "body {:?}", resp.text());
    assert_eq!(resp.text(), "");
    assert_eq!(resp.log_id(), "crashed");
    assert!(
        !rt.errors("crashed").is_empty(),
        "the failure must be written to the errors log"
    );
    assert_serving(&rt);
}

fn exception_does_not_break_later_requests(lang: Lang) {
    let rt = Runtime::start(lang, "basic");
    for _ in 0..3 {
        assert_eq!(send(rt.action("exception")).status, 500);
        assert_eq!(send(rt.action("missing-return")).status, 500);
        assert_serving(&rt);
    }
}

/// A synchronous Python function blocks its thread past the deadline: the
/// request still ends on time and the server keeps serving.
#[test]
fn python_sync_function_past_timeout_gets_500_and_next_request_succeeds() {
    let rt = Runtime::start(Lang::Python, "sync");
    let started = Instant::now();
    let resp = send(
        rt.request(reqwest::Method::GET, "/")
            .header("x-sleep", "5")
            .header("x-open-runtimes-timeout", "1")
            .header(LOG_ID_HEADER, "sync-timeout"),
    );
    assert_timed_out_quickly(&resp, started.elapsed());
    assert!(rt.errors("sync-timeout").contains(TIMED_OUT_ERROR));
    let resp = send(rt.request(reqwest::Method::GET, "/"));
    let id = resp.header(LOG_ID_HEADER).unwrap_or_default();
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "sync GET"),
        "next request failed; errors log {:?}",
        rt.errors(&id)
    );
}
