//! Builds through `POST /v1/runtimes` (executor-api §7) and the live build
//! log stream (§9), with real Node and Python runtimes.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::{Duration, Instant};

fn output_text(body: &Value) -> String {
    body["output"]
        .as_array()
        .expect("output array")
        .iter()
        .map(|c| c["content"].as_str().expect("content string"))
        .collect()
}

fn assert_chunks(body: &Value) {
    for c in body["output"].as_array().expect("output array") {
        let ts = c["timestamp"].as_str().expect("timestamp string");
        assert!(is_timestamp(ts), "timestamp {ts:?}");
        assert!(c["content"].is_string(), "{c}");
    }
}

/// Raw JSON text: `startTime` and `duration` always carry a decimal point.
fn assert_float_fields(raw: &str) {
    for key in ["\"startTime\":", "\"duration\":"] {
        let i = raw
            .find(key)
            .unwrap_or_else(|| panic!("{key} missing in {raw}"))
            + key.len();
        let num: String = raw[i..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+'))
            .collect();
        assert!(
            num.contains('.'),
            "{key} must be written with a decimal point: {num}"
        );
    }
}

fn files_in_gz(path: &Path) -> Vec<String> {
    let file = std::fs::File::open(path).expect("open package");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .expect("tar entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string()
        })
        .collect()
}

fn build_once(lang: Lang) {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = source_archive(lang, tmp.path());
    let dest = tmp.path().join("out");
    let id = unique_id("build");
    let mut req = build_request(lang, &id, &source, &dest);
    req["command"] = json!(format!(
        "echo BUILD-MARKER-{} && {}",
        lang.name(),
        lang.build_command()
    ));
    let r = ex.create(&req);
    assert_eq!(r.status, 201, "build failed: {}\n{}", r.text(), ex.output());
    assert_float_fields(&r.text());
    let body = r.json();
    assert_chunks(&body);
    let out = output_text(&body);
    assert!(
        out.contains(&format!("BUILD-MARKER-{}", lang.name())),
        "output: {out}"
    );
    // The package.
    let path = body["path"].as_str().expect("path");
    let prefix = format!("{}/", dest.display());
    let name = path
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("path {path} not under {prefix}"));
    let stem = name
        .strip_suffix(".gz")
        .unwrap_or_else(|| panic!("extension of {name}"));
    assert!(is_hex(stem, 13), "file name {name}");
    let size = body["size"].as_u64().expect("size integer");
    assert_eq!(std::fs::metadata(path).expect("package exists").len(), size);
    let files = files_in_gz(Path::new(path));
    assert!(
        files.iter().any(|f| f == lang.entrypoint()),
        "package files: {files:?}"
    );
    // remove: true — gone once the call returned.
    assert!(ex.runtime(&id).is_none(), "build runtime must be removed");
    assert!(ex.list().is_empty());
    assert!(!ex.runtime_dir(&id).exists(), "work folder must be deleted");
}

on_backends!(node_build_produces_a_package);
fn node_build_produces_a_package() {
    build_once(Lang::Node);
}

on_backends!(python_build_produces_a_package);
fn python_build_produces_a_package() {
    build_once(Lang::Python);
}

on_backends!(bun_build_produces_a_package);
fn bun_build_produces_a_package() {
    build_once(Lang::Bun);
}

on_backends!(kept_build_runtime_stays_listed);
fn kept_build_runtime_stays_listed() {
    let ex = executor().start();
    let id = unique_id("kept");
    let body =
        json!({ "runtimeId": id, "image": NODE_IMAGE, "command": "echo kept", "remove": false });
    let r = ex.create(&body);
    r.expect_status(201);
    assert!(r.json().get("path").is_none(), "no destination, no path");
    assert!(output_text(&r.json()).contains("kept"));
    let rt = ex.runtime(&id).expect("kept runtime");
    assert_eq!(rt["initialised"], 1);
    assert!(ex.runtime_dir(&id).is_dir());
}

on_backends!(failing_build_is_build_failed_and_cleaned_up);
fn failing_build_is_build_failed_and_cleaned_up() {
    let ex = executor().start();
    for remove in [true, false] {
        let id = unique_id("fail");
        let body = json!({
            "runtimeId": id, "image": NODE_IMAGE, "remove": remove, "timeout": 60,
            "command": "echo first-line-of-failure; exit 3",
        });
        let started = Instant::now();
        let e = ex.create(&body).expect_error(400, "build_failed");
        let msg = e["message"].as_str().expect("message");
        assert!(
            msg.contains("Build command exited with code 3."),
            "message: {msg}"
        );
        assert!(msg.contains("first-line-of-failure"), "message: {msg}");
        assert!(started.elapsed() < Duration::from_secs(20));
        // Whatever `remove` says, a failed build leaves nothing behind.
        assert!(ex.runtime(&id).is_none(), "remove={remove}");
        assert!(!ex.runtime_dir(&id).exists(), "remove={remove}");
    }
    // A silent failure still explains itself.
    let e = ex
        .create(
            &json!({ "runtimeId": unique_id("silent"), "image": NODE_IMAGE, "command": "exit 1" }),
        )
        .expect_error(400, "build_failed");
    assert!(
        e["message"]
            .as_str()
            .expect("msg")
            .contains("Build command exited with code 1."),
        "{e}"
    );
}

on_backends!(build_timeout_is_runtime_failed);
fn build_timeout_is_runtime_failed() {
    let ex = executor().start();
    let id = unique_id("slow");
    let started = Instant::now();
    let body = json!({ "runtimeId": id, "image": NODE_IMAGE, "command": "sleep 30", "timeout": 2, "remove": true });
    let e = ex.create(&body).expect_error(400, "runtime_failed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(12),
        "took {took:?}: {e}"
    );
    assert!(ex.runtime(&id).is_none());
}

on_backends!(build_environment_has_limits_ci_and_variables);
fn build_environment_has_limits_ci_and_variables() {
    let ex = executor().start();
    let body = json!({
        "runtimeId": unique_id("env"), "image": NODE_IMAGE, "remove": true,
        "entrypoint": "index.js", "cpus": 2.5, "memory": 256, "command": "env; echo pwd=$(pwd)",
        "variables": { "MY_VAR": "hello world", "NUM": 7, "FLAG": true, "BAD NAME$": "x" },
    });
    let r = ex.create(&body);
    r.expect_status(201);
    let out = output_text(&r.json()).replace("\r\n", "\n");
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        "OPEN_RUNTIMES_CPUS=2.5",
        "OPEN_RUNTIMES_MEMORY=256",
        "OPEN_RUNTIMES_ENTRYPOINT=index.js",
        &format!("OPEN_RUNTIMES_HOSTNAME={}", ex.hostname),
        "CI=true",
        "MY_VAR=hello world",
        "NUM=7",
        "FLAG=1",
        "BADNAME=x",
        "pwd=/usr/local/server",
    ] {
        assert!(
            lines.contains(&want),
            "{want:?} missing in build env:\n{out}"
        );
    }
    let secret_line = lines
        .iter()
        .find(|l| l.starts_with("OPEN_RUNTIMES_SECRET="))
        .expect("secret");
    assert!(
        is_hex(&secret_line["OPEN_RUNTIMES_SECRET=".len()..], 32),
        "{secret_line}"
    );
    assert!(
        !out.contains(&ex.secret),
        "the executor secret leaked into the build"
    );
    assert!(
        !out.contains(&ex.canary),
        "the executor environment leaked into the build"
    );
    assert!(
        !out.contains("OPR_EXECUTOR_"),
        "executor variables leaked:\n{out}"
    );
    // Integral cpus lose the fraction.
    let r = ex.create(&json!({ "runtimeId": unique_id("env1"), "image": NODE_IMAGE, "remove": true, "cpus": 1.0, "command": "echo cpus=$OPEN_RUNTIMES_CPUS" }));
    assert!(
        output_text(&r.json()).contains("cpus=1\r\n"),
        "{}",
        r.text()
    );
}

/// Prints `count` lines of 100 bytes (with the pty's CRLF, 101), then a
/// marker line.
fn big_build(ex: &Executor, count: usize, fail: bool) -> Resp {
    let cmd = format!(
        "for i in $(seq -w 1 {count}); do printf 'line-%s-%090d\\n' $i 0; done; echo LAST-LINE-MARKER{}",
        if fail { "; exit 7" } else { "" }
    );
    ex.create(&json!({ "runtimeId": unique_id("big"), "image": NODE_IMAGE, "remove": true, "timeout": 120, "command": cmd }))
}

on_backends!(build_output_is_capped_near_one_megabyte);
fn build_output_is_capped_near_one_megabyte() {
    let ex = executor().start();
    // ~1.8 MB: at least 1,000,000 bytes, the notice, and not the end.
    let r = big_build(&ex, 18_000, false);
    r.expect_status(201);
    let body = r.json();
    assert_chunks(&body);
    let out = output_text(&body);
    assert!(out.len() >= 1_000_000, "only {} bytes of output", out.len());
    assert!(out.len() < 1_300_000, "{} bytes of output", out.len());
    assert!(out.contains("line-00001-"), "first line missing");
    assert!(
        !out.contains("LAST-LINE-MARKER"),
        "the last line must be cut"
    );
    let last = body["output"]
        .as_array()
        .expect("array")
        .last()
        .expect("chunk")["content"]
        .clone();
    assert_eq!(last, "Logs truncated due to size exceeding 5.00MB.");

    // ~900 KB: everything.
    let r = big_build(&ex, 9_000, false);
    r.expect_status(201);
    let out = output_text(&r.json());
    assert!(
        out.contains("line-0001-") && out.contains("line-9000-"),
        "lines missing"
    );
    assert!(
        out.contains("LAST-LINE-MARKER"),
        "the last line must be there"
    );
    assert!(!out.contains("Logs truncated"));
}

on_backends!(failed_build_message_is_capped_near_one_megabyte);
fn failed_build_message_is_capped_near_one_megabyte() {
    let ex = executor().start();
    let e = big_build(&ex, 18_000, true).expect_error(400, "build_failed");
    let msg = e["message"].as_str().expect("message");
    assert!(
        msg.len() >= 999_000 && msg.len() <= 1_000_000,
        "message of {} bytes",
        msg.len()
    );
    assert!(msg.contains("line-00001-"));
    assert!(!msg.contains("LAST-LINE-MARKER"));
    let e = big_build(&ex, 9_000, true).expect_error(400, "build_failed");
    let msg = e["message"].as_str().expect("message");
    assert!(
        msg.contains("line-0001-") && msg.contains("LAST-LINE-MARKER"),
        "{} bytes",
        msg.len()
    );
    assert!(msg.contains("Build command exited with code 7."));
}

/// Reads the log stream in a thread: (lines, when the stream ended).
fn open_stream(
    ex: &Executor,
    id: &str,
) -> std::thread::JoinHandle<(Vec<String>, Instant, Option<String>)> {
    let url = ex.url(&format!("/v1/runtimes/{id}/logs"));
    let secret = ex.secret.clone();
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let resp = client
            .get(url)
            .header("authorization", format!("Bearer {secret}"))
            .header("accept", "text/event-stream")
            .send()
            .expect("open log stream");
        assert_eq!(resp.status().as_u16(), 200);
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_string());
        let mut lines = Vec::new();
        let mut reader = BufReader::new(resp);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => lines.push(line.trim_end_matches('\n').to_string()),
                Err(e) => panic!("log stream broke: {e}"),
            }
        }
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        (lines, Instant::now(), ct)
    })
}

on_backends!(log_stream_follows_a_build_and_ends_promptly);
fn log_stream_follows_a_build_and_ends_promptly() {
    let ex = executor().start();
    let id = unique_id("stream");
    let stream = open_stream(&ex, &id);
    let body = json!({
        "runtimeId": id, "image": NODE_IMAGE, "remove": false, "timeout": 60,
        "command": "for i in 1 2 3 4 5 6 7 8; do echo \"step $i\"; sleep 0.25; done; sleep 1.3; echo final",
    });
    let r = ex.create(&body);
    let created_at = Instant::now();
    r.expect_status(201);
    let (lines, ended, ct) = stream.join().expect("stream thread");
    assert_eq!(ct.as_deref(), Some("text/event-stream"));
    let gap = ended.saturating_duration_since(created_at);
    assert!(
        gap <= Duration::from_millis(1200),
        "stream ended {gap:?} after the create response"
    );
    assert!(lines.len() >= 3, "several chunks expected: {lines:?}");
    let mut last_ts = String::new();
    let mut text = String::new();
    for line in &lines {
        let (ts, content) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("no space in {line:?}"));
        assert!(is_timestamp(ts), "timestamp {ts:?}");
        assert!(!content.is_empty(), "empty content in {line:?}");
        assert!(
            ts >= last_ts.as_str(),
            "timestamps must not decrease: {lines:?}"
        );
        last_ts = ts.to_string();
        text.push_str(&content.replace("\\n", "\n"));
    }
    for i in 1..=8 {
        assert!(
            text.contains(&format!("step {i}")),
            "step {i} missing from {text:?}"
        );
    }
    // Relative spacing is real (§7.7, §9 step 5): "final" came 1.3 s after
    // the previous output.
    let stamp = |needle: &str| -> f64 {
        let line = lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} missing: {lines:?}"));
        seconds_of_day(&line[..29])
    };
    let gap = stamp("final") - stamp("step 8");
    assert!(
        (1.0..2.5).contains(&gap),
        "final is stamped {gap:.3} s after step 8: {lines:?}"
    );
}

/// Seconds since midnight of a `YYYY-MM-DDTHH:MM:SS.mmm+00:00` timestamp.
fn seconds_of_day(ts: &str) -> f64 {
    let h: f64 = ts[11..13].parse().expect("hours");
    let m: f64 = ts[14..16].parse().expect("minutes");
    let s: f64 = ts[17..23].parse().expect("seconds");
    h * 3600.0 + m * 60.0 + s
}

on_backends!(log_stream_of_a_failed_build_ends_promptly);
fn log_stream_of_a_failed_build_ends_promptly() {
    let ex = executor().start();
    let id = unique_id("streamfail");
    let opened = Instant::now();
    let stream = open_stream(&ex, &id);
    let body = json!({
        "runtimeId": id, "image": NODE_IMAGE, "remove": false, "timeout": 60,
        "command": "echo before-failure; sleep 1; exit 4",
    });
    ex.create(&body).expect_error(400, "build_failed");
    let (lines, ended, _) = stream.join().expect("stream thread");
    assert!(
        ended.duration_since(opened) < Duration::from_secs(10),
        "stream took {:?}",
        ended.duration_since(opened)
    );
    assert!(
        lines.iter().any(|l| l.contains("before-failure")),
        "{lines:?}"
    );
}

on_backends!(create_failures_are_reported_and_cleaned_up);
fn create_failures_are_reported_and_cleaned_up() {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    // Unknown image.
    let id = unique_id("noimage");
    let r = ex.create(
        &json!({ "runtimeId": id, "image": "openruntimes/php:v5-8.3", "command": "echo hi" }),
    );
    assert_eq!(r.status, 500, "{}", r.text());
    let msg = r.json()["message"].as_str().expect("message").to_string();
    assert!(
        msg.contains("Missing image \"openruntimes/php:v5-8.3\" and failed to pull it."),
        "{msg}"
    );
    assert!(ex.runtime(&id).is_none() && !ex.runtime_dir(&id).exists());
    // Missing source.
    let id = unique_id("nosource");
    let r = ex.create(&json!({ "runtimeId": id, "image": NODE_IMAGE, "source": "/nonexistent/code.tar.gz", "command": "true" }));
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(
        r.json()["message"],
        "Failed to copy source code to temporary directory"
    );
    assert!(ex.runtime(&id).is_none() && !ex.runtime_dir(&id).exists());
    // A destination but no package written by the build.
    let id = unique_id("nopkg");
    let dest = tmp.path().join("dest");
    let r = ex.create(&json!({ "runtimeId": id, "image": NODE_IMAGE, "destination": dest.to_str().expect("utf-8"), "command": "true" }));
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(
        r.json()["message"],
        "Something went wrong when starting runtime."
    );
    assert!(ex.runtime(&id).is_none());
    assert!(ex.list().is_empty());
}

on_backends!(tar_sources_arrive_as_code_tar);
fn tar_sources_arrive_as_code_tar() {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar_path = tmp.path().join("source.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&tar_path).expect("create"));
    builder
        .append_dir_all(".", fixture_dir(Lang::Node))
        .expect("tar");
    builder.finish().expect("finish");
    let r = ex.create(&json!({
        "runtimeId": unique_id("tar"), "image": NODE_IMAGE, "remove": true,
        "source": tar_path.to_str().expect("utf-8"),
        "command": "ls -1 /tmp; tar -tf /tmp/code.tar | sort | head -5",
    }));
    r.expect_status(201);
    let out = output_text(&r.json());
    assert!(out.contains("code.tar\r\n"), "{out}");
    assert!(!out.contains("code.tar.gz"), "{out}");
    assert!(out.contains("index.js"), "{out}");
    // Anything else (a .zip, say) is stored as code.tar.gz whatever it holds.
    let zip = tmp.path().join("source.zip");
    std::fs::write(&zip, b"PK\x03\x04not really").expect("write");
    let r = ex.create(&json!({
        "runtimeId": unique_id("zip"), "image": NODE_IMAGE, "remove": true,
        "source": zip.to_str().expect("utf-8"), "command": "ls -1 /tmp; head -c 4 /tmp/code.tar.gz; echo",
    }));
    r.expect_status(201);
    let out = output_text(&r.json());
    assert!(out.contains("code.tar.gz") && out.contains("PK"), "{out}");
}
