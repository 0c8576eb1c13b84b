//! Builds through the durable queue (docs/builds.md) with real package
//! managers: the asynchronous API (`POST /v1/builds`, polling, logs), the
//! synchronous `POST /v1/runtimes` path that waits for a queue job, default
//! install steps, folder/archive/git sources, package compression, failures
//! and the queue's own overhead. Every built package is started and asked
//! for its answer.

mod builds_support;
mod common;

use builds_support::*;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// Node with a real npm dependency, default install step: `npm ci` with the
/// lockfile (pins is-odd 3.0.0), `npm install` without it (newest 3.x).
#[test]
fn node_default_install_uses_npm_ci_with_a_lockfile_and_npm_install_without() {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let with_lock = tmp.path().join("with-lock");
    let without_lock = tmp.path().join("without-lock");
    copy_dir(&fixture("node-npm"), &with_lock, &[]);
    copy_dir(&fixture("node-npm"), &without_lock, &["package-lock.json"]);
    let dest = tmp.path().join("out");

    let ci = build_ok(
        &ex,
        &build_body(NODE_IMAGE, "index.js", folder(&with_lock), &dest),
    );
    let log = build_log(&ci);
    assert!(
        log.contains("Install step: npm ci") && !log.contains("npm install"),
        "the lockfile build must run npm ci:\n{log}"
    );
    let install = build_ok(
        &ex,
        &build_body(NODE_IMAGE, "index.js", folder(&without_lock), &dest),
    );
    let log = build_log(&install);
    assert!(
        log.contains("Install step: npm install") && !log.contains("npm ci"),
        "the build without lockfile must run npm install:\n{log}"
    );
    // Both packages hold the dependency and answer with it.
    let a = serve_json(
        &ex,
        &unique_id("npm-ci"),
        NODE_IMAGE,
        "index.js",
        &package_path(&ci),
        "/?n=3",
    );
    assert_eq!(a["odd"], true, "{a}");
    assert_eq!(
        a["isOddVersion"], "3.0.0",
        "npm ci follows the lockfile: {a}"
    );
    let b = serve_json(
        &ex,
        &unique_id("npm-install"),
        NODE_IMAGE,
        "index.js",
        &package_path(&install),
        "/?n=4",
    );
    assert_eq!(b["odd"], false, "{b}");
    let v = b["isOddVersion"].as_str().expect("version");
    assert!(
        v.starts_with("3.") && v != "3.0.0",
        "npm install resolves ^3.0.0 to the newest 3.x: {b}"
    );
    // The job record of the asynchronous API.
    assert_eq!(ci["attempts"], 1, "{ci}");
    assert!(ci["reason"].is_null(), "{ci}");
    let (created, started, finished) = (
        ci["created"].as_f64().expect("created"),
        ci["started"].as_f64().expect("started"),
        ci["finished"].as_f64().expect("finished"),
    );
    assert!(created <= started && started <= finished, "{ci}");
    assert!(ci["error"].is_null());
    let size = ci["result"]["size"].as_u64().expect("size");
    assert_eq!(
        std::fs::metadata(package_path(&ci)).expect("package").len(),
        size
    );
    assert_eq!(
        package_format(&package_path(&ci)),
        "gzip",
        "gzip by default"
    );
    // The finished job's logs are the build output.
    let l = logs(&ex, &id_of(&ci));
    assert_eq!(l["state"], "succeeded");
    assert!(output_text(&l["output"]).contains("npm ci"), "{l}");
}

/// Python with a real pip dependency, default install step into the
/// package's virtualenv, through polling of the asynchronous API.
#[test]
fn python_default_install_puts_a_pip_dependency_into_the_package() {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let job = build_ok(
        &ex,
        &build_body(
            PYTHON_IMAGE,
            "main.py",
            folder(&fixture("python-pip")),
            &tmp.path().join("out"),
        ),
    );
    let log = build_log(&job);
    assert!(
        log.contains("Install step: pip install -r requirements.txt"),
        "default install step:\n{log}"
    );
    assert!(log.contains("idna"), "{log}");
    let a = serve_json(
        &ex,
        &unique_id("pip"),
        PYTHON_IMAGE,
        "main.py",
        &package_path(&job),
        "/",
    );
    assert_eq!(a["encoded"], "xn--bcher-kva.example", "{a}");
    // Imported from the package's own virtualenv, not from the host.
    let file = a["idnaFile"].as_str().expect("idna file");
    assert!(file.contains("runtime-env"), "idna imported from {file}");
}

/// Bun with a real npm dependency, default install step `bun install`:
/// it follows bun.lock (is-odd 3.0.0), and the TypeScript entrypoint
/// imports the installed package when the package is served.
#[test]
fn bun_default_install_puts_an_npm_dependency_into_the_package() {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let with_lock = tmp.path().join("with-lock");
    let without_lock = tmp.path().join("without-lock");
    copy_dir(&fixture("bun-npm"), &with_lock, &[]);
    copy_dir(&fixture("bun-npm"), &without_lock, &["bun.lock"]);
    let dest = tmp.path().join("out");

    let locked = build_ok(
        &ex,
        &build_body(BUN_IMAGE, "index.ts", folder(&with_lock), &dest),
    );
    let log = build_log(&locked);
    assert!(
        log.contains("Install step: bun install") && !log.contains("npm "),
        "default install step:\n{log}"
    );
    let files = tar_entries(&package_path(&locked));
    assert!(
        files
            .iter()
            .any(|f| f == "node_modules/is-odd/package.json"),
        "the package holds the installed dependency: {files:?}"
    );
    let a = serve_json(
        &ex,
        &unique_id("bun-lock"),
        BUN_IMAGE,
        "index.ts",
        &package_path(&locked),
        "/?n=3",
    );
    assert_eq!(a["odd"], true, "{a}");
    assert_eq!(
        a["isOddVersion"], "3.0.0",
        "bun install follows bun.lock: {a}"
    );
    assert!(
        a["runtime"].as_str().is_some_and(|r| r.starts_with("bun ")),
        "{a}"
    );

    let unlocked = build_ok(
        &ex,
        &build_body(BUN_IMAGE, "index.ts", folder(&without_lock), &dest),
    );
    let b = serve_json(
        &ex,
        &unique_id("bun-nolock"),
        BUN_IMAGE,
        "index.ts",
        &package_path(&unlocked),
        "/?n=4",
    );
    assert_eq!(b["odd"], false, "{b}");
    let v = b["isOddVersion"].as_str().expect("version");
    assert!(
        v.starts_with("3.") && v != "3.0.0",
        "bun install resolves ^3.0.0 to the newest 3.x: {b}"
    );
}

/// `POST /v1/runtimes` with a `command` is a queue job the call waits for;
/// the job shows up in `GET /v1/builds`.
#[test]
fn synchronous_create_with_a_command_runs_as_a_queue_job() {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    copy_dir(&fixture("node-npm"), &src, &[]);
    let source = tmp.path().join("code.tar.gz");
    tar_of(&src, &source, true);
    let id = unique_id("sync");
    let r = ex.create(&json!({
        "runtimeId": id,
        "image": NODE_IMAGE,
        "source": source.to_str().expect("utf-8"),
        "destination": tmp.path().join("out").to_str().expect("utf-8"),
        "entrypoint": "index.js",
        "command": "tar -zxf /tmp/code.tar.gz -C /mnt/code && bash helpers/build.sh \"npm ci --no-audit --no-fund\"",
        "remove": true,
        "timeout": 300,
    }));
    assert_eq!(r.status, 201, "{}\n{}", r.text(), ex.output());
    let body = r.json();
    let path = body["path"].as_str().expect("path").to_string();
    let a = serve_json(
        &ex,
        &unique_id("sync-run"),
        NODE_IMAGE,
        "index.js",
        Path::new(&path),
        "/?n=7",
    );
    assert_eq!(
        (a["odd"].clone(), a["isOddVersion"].clone()),
        (json!(true), json!("3.0.0"))
    );
    let jobs = list_jobs(&ex);
    let job = jobs
        .iter()
        .find(|j| j["request"]["create"]["runtimeId"] == id.as_str())
        .unwrap_or_else(|| panic!("no queue job for {id}: {jobs:?}"));
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["result"]["path"], path.as_str());
}

/// Failed builds end as `failed` jobs with the build's own explanation.
#[test]
fn failing_builds_fail_their_job_with_the_reason() {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("out");
    let plain = fixture("node-plain");

    // A failing install step.
    let mut body = build_body(NODE_IMAGE, "index.js", folder(&plain), &dest);
    body["command"] = json!("echo before-the-failure; exit 3");
    let j = build_failed(&ex, &body);
    assert_eq!(j["error"]["type"], "build_failed", "{j}");
    assert_eq!(j["error"]["code"], 400, "{j}");
    let msg = j["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("Build command exited with code 3.") && msg.contains("before-the-failure"),
        "{msg}"
    );
    assert!(j["result"].is_null());
    let l = logs(&ex, &id_of(&j));
    assert_eq!(l["state"], "failed");
    assert!(
        output_text(&l["output"]).contains("Build command exited with code 3."),
        "{l}"
    );

    // A dependency that does not exist in the registry (default install).
    let missing = tmp.path().join("missing");
    std::fs::create_dir_all(&missing).expect("mkdir");
    std::fs::copy(plain.join("index.js"), missing.join("index.js")).expect("copy");
    std::fs::write(
        missing.join("package.json"),
        r#"{"name":"opr-missing","version":"1.0.0","dependencies":{"opr-no-such-package-4f1c9e2a7b":"1.0.0"}}"#,
    )
    .expect("package.json");
    let j = build_failed(
        &ex,
        &build_body(NODE_IMAGE, "index.js", folder(&missing), &dest),
    );
    let msg = j["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("Build command exited with code") && msg.contains("404"),
        "{msg}"
    );

    // A source that is not there.
    let j = build_failed(
        &ex,
        &build_body(
            NODE_IMAGE,
            "index.js",
            folder(&tmp.path().join("nowhere")),
            &dest,
        ),
    );
    assert!(
        j["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist")),
        "{j}"
    );
    // No failed build leaves a runtime or a package behind.
    assert!(ex.list().is_empty(), "{:?}", ex.list_ids());
    assert!(!dest.exists() || std::fs::read_dir(&dest).expect("dest").next().is_none());

    // The API itself: authentication, unknown ids, bad sources.
    let r = ex.request(reqwest::Method::GET, "/v1/builds", Auth::None, |r| r);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(ex.get("/v1/builds/0000000000").status, 404);
    assert_eq!(ex.delete("/v1/builds/0000000000").status, 404);
    let bad = ex.post_json(
        "/v1/builds",
        &json!({"image": NODE_IMAGE, "destination": "/tmp/x", "source": {"type": "ftp"}}),
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
}

/// Folder, tar.gz, tar, tar.zst and zip sources give the same function.
#[test]
fn folder_and_archive_sources_build_the_same_function() {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = fixture("node-plain");
    let tgz = tmp.path().join("code.tar.gz");
    tar_of(&dir, &tgz, true);
    let tar = tmp.path().join("code.tar");
    tar_of(&dir, &tar, false);
    let zst = tmp.path().join("code.tar.zst");
    tar_zst_of(&dir, &zst);
    let zip = tmp.path().join("code.zip");
    zip_of(&dir, &zip);
    let sources: Vec<(&str, Value)> = vec![
        ("folder", folder(&dir)),
        ("tar.gz", archive(&tgz)),
        ("tar", archive(&tar)),
        ("tar.zst", archive(&zst)),
        ("zip", archive(&zip)),
    ];
    let dest = tmp.path().join("out");
    // All submitted at once: the queue runs them in turn (or side by side).
    let ids: Vec<(String, String)> = sources
        .iter()
        .map(|(name, source)| {
            let j = submit(
                &ex,
                &build_body(NODE_IMAGE, "index.js", source.clone(), &dest),
            );
            (name.to_string(), id_of(&j))
        })
        .collect();
    for (name, id) in ids {
        let j = wait_final(&ex, &id);
        assert_eq!(
            j["state"],
            "succeeded",
            "{name} source: {j}\n{}",
            output_text(&logs(&ex, &id)["output"])
        );
        let a = serve_json(
            &ex,
            &unique_id(&name.replace('.', "-")),
            NODE_IMAGE,
            "index.js",
            &package_path(&j),
            "/",
        );
        assert_eq!(a["answer"], "from lib/answer.js", "{name} source: {a}");
    }
    // Packed sources are temporary.
    let leftovers: Vec<_> = std::fs::read_dir(ex.work_dir.join("build-sources"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "left in build-sources: {leftovers:?}");
}

fn git(repo: &Path, args: &[&str]) -> String {
    run(Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "opr test")
        .env("GIT_AUTHOR_EMAIL", "opr@example.invalid")
        .env("GIT_COMMITTER_NAME", "opr test")
        .env("GIT_COMMITTER_EMAIL", "opr@example.invalid"))
    .trim()
    .to_string()
}

fn commit_answer(repo: &Path, answer: &str) -> String {
    std::fs::write(
        repo.join("index.js"),
        format!(
            "module.exports = async (context) => context.res.json({{ answer: '{answer}' }});\n"
        ),
    )
    .expect("write index.js");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", answer]);
    git(repo, &["rev-parse", "HEAD"])
}

/// A git source at a tag, a commit and a branch: each package answers as
/// its revision does; a bad ref fails with git's message.
#[test]
fn git_sources_build_the_requested_revision() {
    require_tool(
        "git",
        "git sources are cloned with it (apt-get install git)",
    );
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir repo");
    git(&repo, &["init", "-q", "-b", "main"]);
    commit_answer(&repo, "one");
    git(&repo, &["tag", "v1"]);
    let second = commit_answer(&repo, "two");
    commit_answer(&repo, "three");
    let url = format!("file://{}", repo.display());
    let dest = tmp.path().join("out");
    let cases = [("v1", "one"), (second.as_str(), "two"), ("main", "three")];
    let ids: Vec<String> = cases
        .iter()
        .map(|(r, _)| {
            id_of(&submit(
                &ex,
                &build_body(
                    NODE_IMAGE,
                    "index.js",
                    json!({"type": "git", "url": url, "ref": r}),
                    &dest,
                ),
            ))
        })
        .collect();
    for ((r, want), id) in cases.iter().zip(ids) {
        let j = wait_final(&ex, &id);
        assert_eq!(j["state"], "succeeded", "ref {r}: {j}");
        let a = serve_json(
            &ex,
            &unique_id("git"),
            NODE_IMAGE,
            "index.js",
            &package_path(&j),
            "/",
        );
        assert_eq!(a["answer"], *want, "ref {r}: {a}");
        // The checkout's .git is not packed.
        let entries = tar_entries(&package_path(&j));
        assert!(
            !entries
                .iter()
                .any(|e| e.starts_with(".git/") || e == ".git"),
            "ref {r}: {entries:?}"
        );
    }
    let j = build_failed(
        &ex,
        &build_body(
            NODE_IMAGE,
            "index.js",
            json!({"type": "git", "url": url, "ref": "no-such-ref"}),
            &dest,
        ),
    );
    let msg = j["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("git") && msg.contains("no-such-ref"),
        "bad ref: {msg}"
    );
    let j = build_failed(
        &ex,
        &build_body(
            NODE_IMAGE,
            "index.js",
            json!({"type": "git", "url": format!("file://{}/missing-repo", tmp.path().display()), "ref": "main"}),
            &dest,
        ),
    );
    let msg = j["error"]["message"].as_str().expect("message");
    assert!(msg.contains("git clone failed"), "bad url: {msg}");
}

fn tar_entries(package: &Path) -> Vec<String> {
    let file = std::fs::File::open(package).expect("open package");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .expect("entries")
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

/// `OPEN_RUNTIMES_BUILD_COMPRESSION` chooses the package format
/// (runtime-protocol §5.10); every format starts and serves.
#[test]
fn compression_variable_chooses_the_package_format() {
    require_tool("zstd", "zstd packages are written with it");
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("out");
    // auto: a package under 5 MiB is not compressed.
    let cases = [("zstd", "zstd"), ("none", "tar"), ("auto", "tar")];
    let ids: Vec<String> = cases
        .iter()
        .map(|(method, _)| {
            let mut body = build_body(
                NODE_IMAGE,
                "index.js",
                folder(&fixture("node-plain")),
                &dest,
            );
            body["variables"] = json!({ "OPEN_RUNTIMES_BUILD_COMPRESSION": method });
            id_of(&submit(&ex, &body))
        })
        .collect();
    for ((method, format), id) in cases.iter().zip(ids) {
        let j = wait_final(&ex, &id);
        assert_eq!(j["state"], "succeeded", "{method}: {j}");
        let p = package_path(&j);
        assert!(
            p.to_string_lossy().ends_with(".gz"),
            "the name stays .gz: {p:?}"
        );
        assert_eq!(
            package_format(&p),
            *format,
            "{method}: package starts with {:02x?}",
            head(&p, 8)
        );
        let a = serve_json(&ex, &unique_id(method), NODE_IMAGE, "index.js", &p, "/");
        assert_eq!(a["answer"], "from lib/answer.js", "{method}: {a}");
    }
}

/// Submit → worker start on an idle queue, from the job's own timestamps.
#[test]
fn queue_overhead_is_small_on_an_idle_queue() {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("out");
    let mut delays = Vec::new();
    for _ in 0..5 {
        let mut body = build_body(
            NODE_IMAGE,
            "index.js",
            folder(&fixture("node-plain")),
            &dest,
        );
        body["command"] = json!("true");
        let j = build_ok(&ex, &body);
        let delay =
            j["started"].as_f64().expect("started") - j["created"].as_f64().expect("created");
        delays.push(delay * 1000.0);
    }
    delays.sort_by(f64::total_cmp);
    println!("queue overhead (submit -> started), ms: {delays:.2?}");
    assert!(delays.iter().all(|d| *d >= 0.0), "{delays:?}");
    assert!(
        delays.iter().all(|d| *d < 100.0),
        "submit -> started took {delays:.2?} ms"
    );
}
