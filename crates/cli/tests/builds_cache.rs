//! The dependency cache of builds (executor-api §7.11, runtime-protocol
//! §5.12, docs/builds.md): one artifact per `cacheKey`, restored into the
//! package managers' cache folders, never shared between keys, and capped
//! by `OPR_EXECUTOR_BUILD_CACHE_MAX_BYTES` with least-recently-used
//! eviction.

mod builds_support;
mod common;

use builds_support::*;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn artifact(ex: &Executor, key: &str) -> PathBuf {
    ex.work_dir
        .join("build-cache")
        .join(key)
        .join("lz4-b1M/stores.sqfs")
}

fn cached_build(src: &Path, key: &str, command: &str, dest: &Path) -> Value {
    let mut body = build_body(NODE_IMAGE, "index.js", folder(src), dest);
    body["cacheKey"] = json!(key);
    body["command"] = json!(command);
    body
}

#[test]
fn same_key_restores_the_npm_cache_and_other_keys_never_see_it() {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    copy_dir(&fixture("node-npm"), &src, &[]);
    let dest = tmp.path().join("out");
    let key_a = format!("deps-a-{}", random_hex(6));
    let key_b = format!("deps-b-{}", random_hex(6));

    // A, first build: a real npm install fills npm's cache, plus a marker.
    let first = build_ok(
        &ex,
        &cached_build(
            &src,
            &key_a,
            "npm ci --no-audit --no-fund && echo from-build-a > \"$npm_config_cache/opr-marker\"",
            &dest,
        ),
    );
    let log = build_log(&first);
    assert!(log.contains("Build cache miss."), "{log}");
    assert!(log.contains("Build cache saved."), "{log}");
    assert_eq!(
        head(&artifact(&ex, &key_a), 4),
        b"hsqs",
        "squashfs artifact"
    );

    // A again: the cache is back, complete enough for an offline install.
    let check = "cat \"$npm_config_cache/opr-marker\" 2>/dev/null || echo marker-absent; \
                 test -d \"$npm_config_cache/_cacache\" && echo npm-cache-present || echo npm-cache-absent";
    let second = build_ok(
        &ex,
        &cached_build(
            &src,
            &key_a,
            &format!("{check}; npm ci --offline --no-audit --no-fund"),
            &dest,
        ),
    );
    let log = build_log(&second);
    assert!(log.contains("Build cache hit."), "{log}");
    assert!(log.contains("from-build-a"), "{log}");
    assert!(log.contains("npm-cache-present"), "{log}");
    let a = serve_json(
        &ex,
        &unique_id("cached"),
        NODE_IMAGE,
        "index.js",
        &package_path(&second),
        "/?n=5",
    );
    assert_eq!(a["odd"], true, "{a}");

    // B: another key starts empty and never sees A's files.
    let other = build_ok(&ex, &cached_build(&src, &key_b, check, &dest));
    let log = build_log(&other);
    assert!(log.contains("Build cache miss."), "{log}");
    assert!(
        log.contains("marker-absent") && log.contains("npm-cache-absent"),
        "{log}"
    );
    assert!(!log.contains("from-build-a"), "{log}");
    assert!(artifact(&ex, &key_a).is_file() && artifact(&ex, &key_b).is_file());
}

#[test]
fn cache_cap_evicts_the_least_recently_used_key() {
    // Each artifact holds ~300 KB of random data; the cap fits two.
    let ex = executor()
        .env("OPR_EXECUTOR_BUILD_CACHE_MAX_BYTES", "700000")
        .start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("out");
    let src = fixture("node-plain");
    let fill = "mkdir -p \"$npm_config_cache\" && head -c 300000 /dev/urandom > \"$npm_config_cache/blob\"";
    let tag = random_hex(6);
    let key = |n: u32| format!("lru-{n}-{tag}");

    let log1 = build_log(&build_ok(&ex, &cached_build(&src, &key(1), fill, &dest)));
    assert!(log1.contains("Build cache saved."), "{log1}");
    build_ok(&ex, &cached_build(&src, &key(2), fill, &dest));
    // Key 1 is used again (restored, unchanged): now key 2 is the oldest.
    let log = build_log(&build_ok(&ex, &cached_build(&src, &key(1), "true", &dest)));
    assert!(log.contains("Build cache hit."), "{log}");
    // Key 3 pushes the total past the cap: key 2 goes.
    build_ok(&ex, &cached_build(&src, &key(3), fill, &dest));
    let present = |n: u32| artifact(&ex, &key(n)).is_file();
    assert!(
        present(1) && present(3),
        "recently used keys must stay: 1={} 3={}",
        present(1),
        present(3)
    );
    assert!(
        !present(2),
        "the least recently used key must be evicted past OPR_EXECUTOR_BUILD_CACHE_MAX_BYTES"
    );
    let total: u64 = [1, 2, 3]
        .iter()
        .filter(|n| present(**n))
        .map(|n| {
            std::fs::metadata(artifact(&ex, &key(*n)))
                .expect("meta")
                .len()
        })
        .sum();
    assert!(total <= 700_000, "cache holds {total} bytes");
    let log = build_log(&build_ok(&ex, &cached_build(&src, &key(2), "true", &dest)));
    assert!(log.contains("Build cache miss."), "{log}");
}

// ------------------------------------------------ installed dependencies

const RESTORED_NODE: &str =
    "Installed dependencies: node_modules restored from the build cache (inputs unchanged).";
const RESTORED_PYTHON: &str =
    "Installed dependencies: runtime-env restored from the build cache (inputs unchanged).";
const NOTHING_CACHED: &str = "Installed dependencies: none cached yet.";

/// A build of `src` with the executor's default install step.
fn default_step_build(image: &str, entrypoint: &str, src: &Path, key: &str, dest: &Path) -> Value {
    let mut body = build_body(image, entrypoint, folder(src), dest);
    body["cacheKey"] = json!(key);
    body
}

fn write_json(path: &Path, v: &Value) {
    let text = serde_json::to_string_pretty(v).expect("json");
    std::fs::write(path, text + "\n").expect("write json");
}

/// Adds `ms` 2.1.3 (no dependencies of its own) to the fixture's
/// package.json and lockfile, and makes the function report it.
fn add_ms_dependency(src: &Path) {
    let pkg_path = src.join("package.json");
    let mut pkg: Value =
        serde_json::from_slice(&std::fs::read(&pkg_path).expect("package.json")).expect("json");
    pkg["dependencies"]["ms"] = json!("^2.1.3");
    write_json(&pkg_path, &pkg);
    let lock_path = src.join("package-lock.json");
    let mut lock: Value =
        serde_json::from_slice(&std::fs::read(&lock_path).expect("lockfile")).expect("json");
    lock["packages"][""]["dependencies"]["ms"] = json!("^2.1.3");
    lock["packages"]["node_modules/ms"] = json!({
        "version": "2.1.3",
        "resolved": "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz",
        "integrity": "sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA==",
        "license": "MIT"
    });
    write_json(&lock_path, &lock);
    let index = src.join("index.js");
    let code = std::fs::read_to_string(&index).expect("index.js").replace(
        "odd: isOdd(n),",
        "odd: isOdd(n), twoHours: require('ms')('2h'),",
    );
    std::fs::write(&index, code).expect("write index.js");
}

/// Rewrites the answer of the node fixture so a package shows which source
/// it was built from (a first call adds `mark`, later ones change it).
fn mark_node_source(src: &Path, mark: &str) {
    let index = src.join("index.js");
    let code = std::fs::read_to_string(&index).expect("index.js");
    let code = match code.find("mark: '") {
        Some(start) => {
            let value = start + "mark: '".len();
            let len = code[value..].find('\'').expect("closing quote");
            format!("{}{}{}", &code[..value], mark, &code[value + len..])
        }
        None => code.replace(
            "  return context.res.json({ n,",
            &format!("  return context.res.json({{ mark: '{mark}', n,"),
        ),
    };
    assert!(
        code.contains(&format!("mark: '{mark}'")),
        "fixture changed: {code}"
    );
    std::fs::write(&index, code).expect("write index.js");
}

#[test]
fn same_lockfile_reuses_node_modules_and_a_changed_lockfile_reinstalls() {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    copy_dir(&fixture("node-npm"), &src, &[]);
    let dest = tmp.path().join("out");
    let key = format!("installed-{}", random_hex(6));

    // Cold: nothing to reuse; npm ci runs and its node_modules is kept.
    mark_node_source(&src, "first");
    let cold = build_ok(
        &ex,
        &default_step_build(NODE_IMAGE, "index.js", &src, &key, &dest),
    );
    let log = build_log(&cold);
    assert!(log.contains(NOTHING_CACHED), "{log}");
    assert!(log.contains("Install step: npm ci"), "{log}");
    assert!(
        log.contains("Installed dependencies: node_modules saved to the build cache."),
        "{log}"
    );

    // Same lockfile, edited code: node_modules comes back, npm never runs,
    // and the package serves the new code with its dependency.
    mark_node_source(&src, "second");
    let warm = build_ok(
        &ex,
        &default_step_build(NODE_IMAGE, "index.js", &src, &key, &dest),
    );
    let log = build_log(&warm);
    assert!(log.contains(RESTORED_NODE), "{log}");
    assert!(log.contains("Install step skipped"), "{log}");
    assert!(!log.contains("Install step: npm"), "{log}");
    let answer = serve_json(
        &ex,
        &unique_id("reused"),
        NODE_IMAGE,
        "index.js",
        &package_path(&warm),
        "/?n=3",
    );
    assert_eq!(
        (&answer["mark"], &answer["odd"], &answer["isOddVersion"]),
        (&json!("second"), &json!(true), &json!("3.0.0")),
        "{answer}"
    );

    // A changed lockfile (one more dependency): installed from scratch, and
    // the package has the new dependency.
    add_ms_dependency(&src);
    let changed = build_ok(
        &ex,
        &default_step_build(NODE_IMAGE, "index.js", &src, &key, &dest),
    );
    let log = build_log(&changed);
    assert!(
        log.contains(
            "Installed dependencies: not reused, changed: package-lock.json, package.json."
        ),
        "{log}"
    );
    assert!(log.contains("Install step: npm ci"), "{log}");
    assert!(!log.contains("Install step skipped"), "{log}");
    let answer = serve_json(
        &ex,
        &unique_id("changed"),
        NODE_IMAGE,
        "index.js",
        &package_path(&changed),
        "/?n=4",
    );
    assert_eq!(answer["twoHours"], 7_200_000, "{answer}");
    assert_eq!(answer["odd"], false, "{answer}");

    // Another key never sees this key's installed tree.
    let other = build_ok(
        &ex,
        &default_step_build(
            NODE_IMAGE,
            "index.js",
            &src,
            &format!("installed-other-{}", random_hex(6)),
            &dest,
        ),
    );
    let log = build_log(&other);
    assert!(log.contains("Build cache miss."), "{log}");
    assert!(log.contains(NOTHING_CACHED), "{log}");
    assert!(log.contains("Install step: npm ci"), "{log}");
}

/// Bun with its lockfile (bun.lock, whose `workspaces` table refers to no
/// local files): same inputs reuse node_modules, `bun install` is skipped
/// and the edited TypeScript is served with the restored dependency.
#[test]
fn same_bun_lockfile_reuses_node_modules() {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    copy_dir(&fixture("bun-npm"), &src, &[]);
    let dest = tmp.path().join("out");
    let key = format!("bun-installed-{}", random_hex(6));

    let cold = build_ok(
        &ex,
        &default_step_build(BUN_IMAGE, "index.ts", &src, &key, &dest),
    );
    let log = build_log(&cold);
    assert!(log.contains(NOTHING_CACHED), "{log}");
    assert!(log.contains("Install step: bun install"), "{log}");
    assert!(
        log.contains("Installed dependencies: node_modules saved to the build cache."),
        "{log}"
    );

    let index = src.join("index.ts");
    let code = std::fs::read_to_string(&index).expect("index.ts");
    let edited = code.replace("runtime: `bun ", "runtime: `edited bun ");
    assert_ne!(code, edited, "fixture changed");
    std::fs::write(&index, edited).expect("write index.ts");
    let warm = build_ok(
        &ex,
        &default_step_build(BUN_IMAGE, "index.ts", &src, &key, &dest),
    );
    let log = build_log(&warm);
    assert!(log.contains(RESTORED_NODE), "{log}");
    assert!(log.contains("Install step skipped"), "{log}");
    assert!(!log.contains("Install step: bun"), "{log}");
    let answer = serve_json(
        &ex,
        &unique_id("bun-reused"),
        BUN_IMAGE,
        "index.ts",
        &package_path(&warm),
        "/?n=5",
    );
    assert_eq!(
        (&answer["odd"], &answer["isOddVersion"]),
        (&json!(true), &json!("3.0.0")),
        "{answer}"
    );
    assert!(
        answer["runtime"]
            .as_str()
            .is_some_and(|r| r.starts_with("edited bun ")),
        "{answer}"
    );
}

#[test]
fn a_user_npm_install_runs_on_the_restored_tree() {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    copy_dir(&fixture("node-npm"), &src, &[]);
    let dest = tmp.path().join("out");
    let key = format!("user-install-{}", random_hex(6));
    // The caller's own command always runs; the restored tree leaves npm
    // nothing to add (it counts what it added).
    let command = "npm install --no-audit --no-fund && ls node_modules > installed.txt";
    let first = build_ok(&ex, &cached_build(&src, &key, command, &dest));
    let log = build_log(&first);
    assert!(log.contains(NOTHING_CACHED), "{log}");
    assert!(log.contains("added 2 packages"), "{log}");
    let second = build_ok(&ex, &cached_build(&src, &key, command, &dest));
    let log = build_log(&second);
    assert!(log.contains(RESTORED_NODE), "{log}");
    assert!(log.contains("up to date"), "{log}");
    assert!(!log.contains("added 2 packages"), "{log}");
    let answer = serve_json(
        &ex,
        &unique_id("user"),
        NODE_IMAGE,
        "index.js",
        &package_path(&second),
        "/?n=7",
    );
    assert_eq!(answer["odd"], true, "{answer}");
}

#[test]
fn same_requirements_reuse_the_virtualenv_and_changed_ones_reinstall() {
    let ex = executor().start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    copy_dir(&fixture("python-pip"), &src, &[]);
    let dest = tmp.path().join("out");
    let key = format!("venv-{}", random_hex(6));
    let build = |src: &Path| {
        build_ok(
            &ex,
            &default_step_build(PYTHON_IMAGE, "main.py", src, &key, &dest),
        )
    };

    let cold = build(&src);
    let log = build_log(&cold);
    assert!(log.contains(NOTHING_CACHED), "{log}");
    assert!(
        log.contains("Install step: pip install -r requirements.txt"),
        "{log}"
    );

    // Edited code, same requirements: the virtualenv comes back as it was.
    let main = src.join("main.py");
    let code = std::fs::read_to_string(&main).expect("main.py");
    std::fs::write(
        &main,
        code.replace(
            "\"idnaFile\": idna.__file__,",
            "\"idnaFile\": idna.__file__, \"edit\": 2,",
        ),
    )
    .expect("write main.py");
    let warm = build(&src);
    let log = build_log(&warm);
    assert!(log.contains(RESTORED_PYTHON), "{log}");
    assert!(log.contains("Install step skipped"), "{log}");
    let answer = serve_json(
        &ex,
        &unique_id("venv"),
        PYTHON_IMAGE,
        "main.py",
        &package_path(&warm),
        "/",
    );
    assert_eq!(answer["encoded"], "xn--bcher-kva.example", "{answer}");
    assert_eq!(answer["edit"], 2, "{answer}");

    // One more requirement: pip runs again and the package has it.
    std::fs::write(src.join("requirements.txt"), "idna==3.10\nsix==1.17.0\n")
        .expect("requirements");
    let code = std::fs::read_to_string(&main).expect("main.py");
    std::fs::write(
        &main,
        code.replace("import idna\n", "import idna\nimport six\n")
            .replace("\"edit\": 2,", "\"edit\": 3, \"six\": six.__version__,"),
    )
    .expect("write main.py");
    let changed = build(&src);
    let log = build_log(&changed);
    assert!(
        log.contains("Installed dependencies: not reused, changed: requirements.txt."),
        "{log}"
    );
    assert!(
        log.contains("Install step: pip install -r requirements.txt"),
        "{log}"
    );
    let answer = serve_json(
        &ex,
        &unique_id("venv2"),
        PYTHON_IMAGE,
        "main.py",
        &package_path(&changed),
        "/",
    );
    assert_eq!(
        (&answer["edit"], &answer["six"]),
        (&json!(3), &json!("1.17.0")),
        "{answer}"
    );
}

#[test]
fn installed_dependencies_are_evicted_with_their_key() {
    // Past the cap every artifact goes at once: the tree inside it too.
    let ex = executor()
        .env("OPR_EXECUTOR_BUILD_CACHE_MAX_BYTES", "1")
        .start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    copy_dir(&fixture("node-npm"), &src, &[]);
    let dest = tmp.path().join("out");
    let key = format!("evicted-{}", random_hex(6));
    let first = build_ok(
        &ex,
        &default_step_build(NODE_IMAGE, "index.js", &src, &key, &dest),
    );
    assert!(
        build_log(&first).contains("Installed dependencies: node_modules saved"),
        "{}",
        build_log(&first)
    );
    assert!(!artifact(&ex, &key).exists(), "artifact kept past the cap");
    let second = build_ok(
        &ex,
        &default_step_build(NODE_IMAGE, "index.js", &src, &key, &dest),
    );
    let log = build_log(&second);
    assert!(log.contains("Build cache miss."), "{log}");
    assert!(log.contains(NOTHING_CACHED), "{log}");
    assert!(log.contains("Install step: npm ci"), "{log}");
}

// ------------------------------------------------ build folder in memory

#[test]
fn the_build_folder_is_a_bounded_tmpfs_and_a_build_too_big_for_it_moves_to_disk() {
    let ex = executor().env("OPR_EXECUTOR_BUILD_TMPFS_MB", "16").start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("out");
    let src = fixture("node-plain");
    let probe = "stat -f -c 'build-folder-fs=%T size=%b*%S' /usr/local/build";
    let mut body = build_body(NODE_IMAGE, "index.js", folder(&src), &dest);
    body["command"] = json!(probe);
    let ok = build_ok(&ex, &body);
    let log = build_log(&ok);
    assert!(log.contains("build-folder-fs=tmpfs"), "{log}");
    assert!(log.contains(&format!("size={}*4096", 16 * 256)), "{log}");

    // Past the bound the install fails with ENOSPC; the log says why, and
    // the build starts again with its folder on disk, and succeeds.
    let key = unique_id("bigbuild");
    let mut body = build_body(NODE_IMAGE, "index.js", folder(&src), &dest);
    let probe_here = "stat -f -c 'build-folder-fs=%T' .";
    body["command"] = json!(format!(
        "head -c 20000000 /dev/zero > big.bin && {probe_here}"
    ));
    body["cacheKey"] = json!(key);
    let retried = build_ok(&ex, &body);
    let log = build_log(&retried);
    for line in [
        "No space left on device",
        "Error: the build folder /usr/local/build is full: it is held in memory, at most 16 MiB",
        "Retrying the build with the build folder on disk (/tmp/opr-build).",
    ] {
        assert!(log.contains(line), "missing {line:?}:\n{log}");
    }
    let on_disk = log.rsplit("build-folder-fs=").next().unwrap_or_default();
    assert!(!on_disk.starts_with("tmpfs"), "{log}");
    let package = package_path(&retried);
    let listing = run(std::process::Command::new("tar").arg("-tzf").arg(&package));
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start_matches("./") == "big.bin"),
        "{listing}"
    );
    // The next build of this cache key goes to disk at once.
    let again = build_log(&build_ok(&ex, &body));
    assert!(
        again.contains("Build folder on disk (/tmp/opr-build): an earlier build of this cache key did not fit in memory.")
            && !again.contains("is full"),
        "{again}"
    );
    // A build that fails on disk too still fails, after one retry.
    let mut body = build_body(NODE_IMAGE, "index.js", folder(&src), &dest);
    body["command"] = json!("head -c 20000000 /dev/zero > big.bin && exit 7");
    let failed = build_failed(&ex, &body);
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("exited with code 7"), "{failed}");
    assert_eq!(message.matches("Retrying the build").count(), 1, "{failed}");

    // 0 keeps the build folder on disk.
    let disk = executor().env("OPR_EXECUTOR_BUILD_TMPFS_MB", "0").start();
    let mut body = build_body(NODE_IMAGE, "index.js", folder(&src), &dest);
    body["command"] = json!(probe);
    let log = build_log(&build_ok(&disk, &body));
    assert!(
        log.contains("build-folder-fs=") && !log.contains("build-folder-fs=tmpfs"),
        "{log}"
    );
}
