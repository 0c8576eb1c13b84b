//! What the Docker and Swarm tests share: unique names and the check that
//! an engine answers (a missing engine fails the tests, never skips them).

use std::sync::atomic::{AtomicU32, Ordering};

pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{:x}{:x}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The engine must answer: `docker info` first, for a message that says
/// what is wrong.
pub fn require_engine() {
    let out = std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "no Docker engine answers (`docker info` failed: {}): start dockerd \
             (CI: .ci/run does), then run `opr images build`",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("the docker CLI cannot run ({e}): apt-get install docker.io"),
    }
}
