//! `GET /v1/runtimes/{id}/logs`: follows a build's capture files as they
//! grow (executor-api §9).

use crate::buildlog::{format_timestamp, log_body, parse_timing, valid_utf8};
use crate::engine::Executor;
use crate::registry::Runtime;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// executor-api §9 step 2: ten checks half a second apart.
const ENTRY_WAIT: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(200);

/// Feeds `tx` until the build ends, the client leaves or `timeout` passes.
pub async fn follow(
    exec: Arc<Executor>,
    runtime_id: String,
    timeout: Duration,
    tx: mpsc::Sender<Bytes>,
) {
    let started = Instant::now();
    let deadline = started + timeout;
    let name = exec.runtime_name(&runtime_id);
    let Some(rt) = wait_for_entry(&exec, &name, started + ENTRY_WAIT.min(timeout)).await else {
        return;
    };
    if rt.view().version == "v2" {
        return;
    }
    let logging = rt.work_dir.join("logging");
    let mut follower = Follower {
        clock: SystemTime::now(),
        timings_read: 0,
        content_offset: 0,
    };
    loop {
        let finished = !still_registered(&exec, &rt)
            || rt.view().initialised == 1
            || Instant::now() >= deadline;
        let lines = follower.read_new(&logging).await;
        if !lines.is_empty() && tx.send(Bytes::from(lines)).await.is_err() {
            return;
        }
        if finished {
            return;
        }
        let mut phase = rt.phase();
        // Woken by the end of the build, or every tick for new output.
        let _ = tokio::time::timeout(TICK, phase.changed()).await;
    }
}

fn still_registered(exec: &Executor, rt: &Arc<Runtime>) -> bool {
    exec.registry
        .get(&rt.name)
        .is_some_and(|cur| Arc::ptr_eq(&cur, rt))
}

async fn wait_for_entry(exec: &Executor, name: &str, until: Instant) -> Option<Arc<Runtime>> {
    loop {
        if let Some(rt) = exec.registry.get(name) {
            return Some(rt);
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Follower {
    clock: SystemTime,
    /// Bytes of timings.txt already turned into lines.
    timings_read: usize,
    /// Bytes of log content (after the header line) already sent.
    content_offset: usize,
}

impl Follower {
    /// Lines for every complete timing line written since the last call.
    async fn read_new(&mut self, logging: &std::path::Path) -> String {
        let Ok(timings) = tokio::fs::read(logging.join("timings.txt")).await else {
            return String::new();
        };
        if timings.len() <= self.timings_read {
            return String::new();
        }
        let Ok(logs) = tokio::fs::read(logging.join("logs.txt")).await else {
            return String::new();
        };
        let body = log_body(&logs);
        let fresh = &timings[self.timings_read..];
        // Only whole lines: the last one may still be being written.
        let Some(last_newline) = memchr::memrchr(b'\n', fresh) else {
            return String::new();
        };
        let mut out = String::new();
        let mut consumed = 0;
        // Each complete line with its newline; nothing after the last one.
        for line in fresh[..last_newline].split(|&b| b == b'\n') {
            if line.is_empty() {
                consumed += 1;
                continue;
            }
            let Some((delay, len)) = std::str::from_utf8(line).ok().and_then(parse_timing) else {
                consumed += line.len() + 1;
                continue;
            };
            let end = self.content_offset + len;
            if end > body.len() {
                break; // content not flushed yet; retry next tick
            }
            self.clock += delay;
            let content = valid_utf8(&body[self.content_offset..end]).replace('\n', "\\n");
            out.push_str(&format_timestamp(self.clock));
            out.push(' ');
            out.push_str(&content);
            out.push('\n');
            self.content_offset = end;
            consumed += line.len() + 1;
        }
        self.timings_read += consumed;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn follower_emits_new_lines_once_and_escapes_newlines() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("logs.txt"),
            b"Script started\nStep 1\nStep 2\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("timings.txt"), b"0.1 7\n").expect("write");
        let mut f = Follower {
            clock: SystemTime::now(),
            timings_read: 0,
            content_offset: 0,
        };
        let first = f.read_new(dir.path()).await;
        assert!(first.ends_with(" Step 1\\n\n"), "{first:?}");
        assert_eq!(f.read_new(dir.path()).await, "");
        std::fs::write(dir.path().join("timings.txt"), b"0.1 7\n1.2 7\n0.3 9").expect("write");
        let second = f.read_new(dir.path()).await;
        assert!(second.ends_with(" Step 2\\n\n"), "{second:?}");
        assert_eq!(second.lines().count(), 1);
        // Whole seconds of a later delay survive (the line is read from its
        // first character): 0.1 s + 1.2 s after the clock start.
        let first_ts = humantime::parse_rfc3339(
            &first[..first.find(' ').expect("space")].replace("+00:00", "Z"),
        )
        .expect("ts");
        let second_ts = humantime::parse_rfc3339(
            &second[..second.find(' ').expect("space")].replace("+00:00", "Z"),
        )
        .expect("ts");
        assert_eq!(
            second_ts.duration_since(first_ts).expect("later"),
            Duration::from_millis(1200)
        );
    }
}
