//! The executor on the Docker and Swarm backends: the same API calls as on
//! the process backend, against a real engine and the images of
//! `opr images build` (scripts/setup-tests.sh makes both). No engine is a
//! failure, never a skip.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

/// A cold start, a warm call with logs, the runtime listed, then removed.
fn cold_start_warm_call_and_delete(backend: &str, lang: Lang) {
    require_docker();
    let mut ex = executor().backend(backend).start();
    assert!(
        ex.output().contains(&format!("(backend {backend})")),
        "{}",
        ex.output()
    );
    let pkg = package(lang);
    let id = unique_id(backend);
    let first = ex.execute_ok(&id, &pkg.exec("/"));
    // The runtime is a container (Docker) or a service's task (Swarm).
    let name = format!("{}-{id}", ex.hostname);
    let ps = std::process::Command::new("docker")
        .args(["ps", "--format", "{{.Names}}"])
        .output()
        .expect("docker ps");
    assert!(
        String::from_utf8_lossy(&ps.stdout).contains(&name),
        "no container for {name}"
    );
    assert_eq!(first["statusCode"], 200, "{first}\n{}", ex.output());
    assert_eq!(first["body"], format!("hello from {}", lang.name()));
    let logged = ex.execute_ok(&id, &json!({ "path": "/log" }));
    assert_eq!(logged["logs"], "engine: open-runtimes\n", "{logged}");
    assert_eq!(logged["errors"], "engine: open-runtimes\n", "{logged}");
    assert_eq!(ex.list_ids(), vec![id.clone()]);
    ex.delete(&format!("/v1/runtimes/{id}")).expect_status(200);
    assert!(ex.list_ids().is_empty());
    assert!(ex.stop(), "executor did not stop cleanly:\n{}", ex.output());
}

#[test]
fn docker_node_cold_start_warm_call_and_delete() {
    cold_start_warm_call_and_delete("docker", Lang::Node);
}

#[test]
fn docker_python_cold_start_warm_call_and_delete() {
    cold_start_warm_call_and_delete("docker", Lang::Python);
}

#[test]
fn swarm_node_cold_start_warm_call_and_delete() {
    cold_start_warm_call_and_delete("swarm", Lang::Node);
}

#[test]
fn docker_build_produces_a_package_that_runs() {
    require_docker();
    let ex = executor().backend("docker").start();
    let dest = tempfile::tempdir().expect("dest");
    let src_dir = tempfile::tempdir().expect("src");
    let source = source_archive(Lang::Node, src_dir.path());
    let built = ex.create(&build_request(
        Lang::Node,
        &unique_id("dbuild"),
        &source,
        dest.path(),
    ));
    assert_eq!(built.status, 201, "{}\n{}", built.text(), ex.output());
    let v = built.json();
    let path = v["path"].as_str().expect("path").to_string();
    assert_eq!(
        std::fs::metadata(&path).expect("package").len(),
        v["size"].as_u64().expect("size")
    );
    let body = with(
        json!({
            "image": Lang::Node.image(),
            "source": path,
            "entrypoint": Lang::Node.entrypoint(),
            "runtimeEntrypoint": "cp /tmp/code.tar.gz /mnt/code/code.tar.gz && nohup helpers/start.sh \"bash helpers/server.sh\"",
        }),
        json!({ "path": "/", "timeout": 30 }),
    );
    let r = ex.execute_ok(&unique_id("drun"), &body);
    assert_eq!(r["body"], "hello from node", "{r}");
}

/// GET /__opr/health answered 200 (a bare connect is not enough behind
/// Docker's userland proxy).
fn health_ok(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /__opr/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out.starts_with(b"HTTP/1.1 200")
}

#[test]
fn docker_warm_pool_serves_a_cold_start() {
    require_docker();
    let ex = executor()
        .backend("docker")
        .env(
            "OPR_EXECUTOR_WARM_POOL",
            &format!("{}=1", Lang::Node.image()),
        )
        .start();
    let pkg = package(Lang::Node);
    // A standby container of this executor serves its health path...
    let label = format!("label=openruntimes-executor={}", ex.hostname);
    wait_for(
        Duration::from_secs(90),
        "a serving standby container",
        || {
            let out = std::process::Command::new("docker")
                .args(["ps", "-q", "--filter", &label, "--filter", "label=opr-pool"])
                .output()
                .ok()?;
            let id = String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()?
                .trim()
                .to_string();
            let port = std::process::Command::new("docker")
                .args(["port", &id, "3000/tcp"])
                .output()
                .ok()?;
            let addr = String::from_utf8_lossy(&port.stdout)
                .lines()
                .next()?
                .trim()
                .to_string();
            health_ok(&addr).then_some(())
        },
    );
    // ...and the cold start takes it: no work folder of its own appears.
    let id = unique_id("dpool");
    let r = ex.execute_ok(&id, &pkg.exec("/"));
    assert_eq!(r["body"], "hello from node", "{r}\n{}", ex.output());
    assert!(
        !ex.runtime_dir(&id).exists(),
        "the cold start did not use the pool:\n{}",
        ex.output()
    );
}
