//! Helpers of the build-queue tests (`builds_*.rs`): the asynchronous build
//! API of docs/builds.md (`/v1/builds`), fixtures, archives and running a
//! built package. Used beside `common` (the executor harness).

#![allow(dead_code)]

use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A build job reaches a final state within this (npm and pip downloads
/// included, on a loaded 2-core machine).
pub const BUILD_WAIT: Duration = Duration::from_secs(180);

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/builds")
        .join(name)
}

/// Copies a folder (recursively), leaving out top-level entries in `skip`.
pub fn copy_dir(src: &Path, dst: &Path, skip: &[&str]) {
    std::fs::create_dir_all(dst).expect("create copy");
    for e in std::fs::read_dir(src).expect("read fixture") {
        let e = e.expect("entry");
        let name = e.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let (from, to) = (e.path(), dst.join(&name));
        if e.file_type().expect("type").is_dir() {
            copy_dir(&from, &to, &[]);
        } else {
            std::fs::copy(&from, &to).expect("copy file");
        }
    }
}

/// Runs a host tool, panicking with its output when it fails.
#[track_caller]
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A host tool the test cannot do without: fail loudly, never skip.
pub fn require_tool(tool: &str, why: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "{tool} is not installed; {why}");
}

// ------------------------------------------------------------ build API

/// `POST /v1/builds`: asserts `202` and a queued job; returns the job.
#[track_caller]
pub fn submit(ex: &Executor, body: &Value) -> Value {
    let r = ex.post_json("/v1/builds", body);
    assert_eq!(
        r.status,
        202,
        "submit failed: {}\nexecutor output:\n{}",
        r.text(),
        ex.output()
    );
    let job = r.json();
    assert_eq!(job["state"], "queued", "{job}");
    assert!(job["id"].is_string(), "{job}");
    job
}

/// `GET /v1/builds/{id}`.
#[track_caller]
pub fn job(ex: &Executor, id: &str) -> Value {
    let r = ex.get(&format!("/v1/builds/{id}"));
    assert_eq!(r.status, 200, "GET build {id}: {}", r.text());
    r.json()
}

/// `GET /v1/builds/{id}/logs`.
#[track_caller]
pub fn logs(ex: &Executor, id: &str) -> Value {
    let r = ex.get(&format!("/v1/builds/{id}/logs"));
    assert_eq!(r.status, 200, "GET build logs {id}: {}", r.text());
    r.json()
}

/// `GET /v1/builds`.
pub fn list_jobs(ex: &Executor) -> Vec<Value> {
    let r = ex.get("/v1/builds");
    r.expect_status(200);
    match r.json() {
        Value::Array(a) => a,
        other => panic!("build list is not an array: {other}"),
    }
}

pub fn id_of(job: &Value) -> String {
    job["id"].as_str().expect("job id").to_string()
}

pub fn is_final(state: &Value) -> bool {
    matches!(state.as_str(), Some("succeeded" | "failed" | "cancelled"))
}

/// Polls the job until it is final (bounded).
#[track_caller]
pub fn wait_final(ex: &Executor, id: &str) -> Value {
    let deadline = Instant::now() + BUILD_WAIT;
    loop {
        let j = job(ex, id);
        if is_final(&j["state"]) {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "build {id} not final after {BUILD_WAIT:?}: {j}\nexecutor output:\n{}",
            ex.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls until `pred` holds for the job (bounded).
#[track_caller]
pub fn wait_job(ex: &Executor, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(Duration::from_secs(60), what, || {
        let j = job(ex, id);
        pred(&j).then_some(j)
    })
}

/// Waits until the job runs and its build printed `marker` (the live log of
/// `GET /v1/builds/{id}/logs`).
#[track_caller]
pub fn wait_running_with(ex: &Executor, id: &str, marker: &str) -> Value {
    wait_for(
        Duration::from_secs(90),
        &format!("build {id} running and printing {marker:?}"),
        || {
            let l = logs(ex, id);
            assert!(
                !is_final(&l["state"]),
                "build {id} ended before printing {marker:?}: {}",
                job(ex, id)
            );
            (l["state"] == "running" && output_text(&l["output"]).contains(marker)).then_some(l)
        },
    )
}

/// The text of an `output` array of `{timestamp, content}` chunks.
pub fn output_text(output: &Value) -> String {
    output
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["content"].as_str().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// Submits a build and waits for success; returns the job (its `result`
/// holds `path`, `size` and `output`).
#[track_caller]
pub fn build_ok(ex: &Executor, body: &Value) -> Value {
    let id = id_of(&submit(ex, body));
    let j = wait_final(ex, &id);
    assert_eq!(
        j["state"],
        "succeeded",
        "build {id} did not succeed: {}\nlogs: {}\nexecutor output:\n{}",
        j,
        output_text(&logs(ex, &id)["output"]),
        ex.output()
    );
    assert!(j["result"]["path"].is_string(), "{j}");
    j
}

/// Submits a build and waits for it to fail; returns the job.
#[track_caller]
pub fn build_failed(ex: &Executor, body: &Value) -> Value {
    let id = id_of(&submit(ex, body));
    let j = wait_final(ex, &id);
    assert_eq!(j["state"], "failed", "build {id} should fail: {j}");
    j
}

/// The body of `POST /v1/builds` for a folder/archive/git `source`.
pub fn build_body(image: &str, entrypoint: &str, source: Value, dest: &Path) -> Value {
    json!({
        "image": image,
        "entrypoint": entrypoint,
        "source": source,
        "destination": dest.to_str().expect("utf-8 path"),
        "timeout": 300,
    })
}

pub fn folder(path: &Path) -> Value {
    json!({"type": "folder", "path": path.to_str().expect("utf-8 path")})
}

pub fn archive(path: &Path) -> Value {
    json!({"type": "archive", "path": path.to_str().expect("utf-8 path")})
}

pub fn package_path(job: &Value) -> PathBuf {
    PathBuf::from(job["result"]["path"].as_str().expect("result path"))
}

pub fn build_log(job: &Value) -> String {
    output_text(&job["result"]["output"])
}

// ------------------------------------------------------------ running

/// Cold-starts `package` as runtime `runtime_id` and returns the JSON the
/// function answered at `path`.
#[track_caller]
pub fn serve_json(
    ex: &Executor,
    runtime_id: &str,
    image: &str,
    entrypoint: &str,
    package: &Path,
    path: &str,
) -> Value {
    let body = json!({
        "image": image,
        "source": package.to_str().expect("utf-8 path"),
        "entrypoint": entrypoint,
        "runtimeEntrypoint": RUNTIME_ENTRYPOINT,
        "path": path,
        "method": "GET",
        "headers": {},
        "timeout": 60,
    });
    let result = ex.execute_ok(runtime_id, &body);
    let text = result["body"].as_str().expect("body string");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("function answered {text:?}: {e}"))
}

// ------------------------------------------------------------ archives

/// tar of `dir` (paths relative to it), optionally gzip-compressed.
pub fn tar_of(dir: &Path, out: &Path, gzip: bool) {
    let file = std::fs::File::create(out).expect("create archive");
    if gzip {
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        t.append_dir_all(".", dir).expect("tar");
        t.into_inner().expect("tar").finish().expect("gzip");
    } else {
        let mut t = tar::Builder::new(file);
        t.append_dir_all(".", dir).expect("tar");
        t.into_inner().expect("tar");
    }
}

/// zip of `dir` with python's zipfile (entries relative to `dir`).
pub fn zip_of(dir: &Path, out: &Path) {
    require_tool("python3", "zip sources are made with python's zipfile");
    run(Command::new("python3")
        .arg("-c")
        .arg(
            "import os, sys, zipfile\n\
             root, out = sys.argv[1], sys.argv[2]\n\
             with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as z:\n\
             \x20   for d, _, files in os.walk(root):\n\
             \x20       for f in files:\n\
             \x20           p = os.path.join(d, f)\n\
             \x20           z.write(p, os.path.relpath(p, root))\n",
        )
        .arg(dir)
        .arg(out));
}

/// tar.zst of `dir` with the zstd tool.
pub fn tar_zst_of(dir: &Path, out: &Path) {
    require_tool("zstd", "tar.zst sources are compressed with it");
    let plain = out.with_extension("plain-tar");
    tar_of(dir, &plain, false);
    run(Command::new("zstd")
        .arg("-q")
        .arg("-f")
        .arg(&plain)
        .arg("-o")
        .arg(out));
    std::fs::remove_file(&plain).expect("remove plain tar");
}

/// First bytes of a file.
pub fn head(path: &Path, n: usize) -> Vec<u8> {
    let data = std::fs::read(path).expect("read package");
    data[..n.min(data.len())].to_vec()
}

/// The format of a package from its first bytes (runtime-protocol §5.10):
/// `squashfs`, `gzip`, `zstd`, `tar` (a plain tar: `ustar` at offset 257)
/// or `unknown`.
pub fn package_format(path: &Path) -> &'static str {
    let h = head(path, 262);
    match h.as_slice() {
        [0x68, 0x73, 0x71, 0x73, ..] => "squashfs",
        [0x1f, 0x8b, ..] => "gzip",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd",
        _ if h.len() == 262 && &h[257..262] == b"ustar" => "tar",
        _ => "unknown",
    }
}
