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
