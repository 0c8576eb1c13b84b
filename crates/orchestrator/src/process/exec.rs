//! `execute`: one command in a fresh sandbox of the runtime's layout, its
//! output captured with a memory bound, a timeout that kills it.

use super::spawn::{kill_group, Spawner};
use crate::{ExecOutcome, OrchestratorError, Result};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

/// Output kept in memory per exec; the rest is read and dropped.
pub const OUTPUT_CAP: usize = 8 << 20;

/// Docker's convention: a signal `n` shows as exit code 128 + n.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Reads `r` to the end, keeping the first `cap` bytes.
async fn read_capped(r: Option<impl AsyncRead + Unpin>, cap: usize) -> Vec<u8> {
    let Some(mut r) = r else { return Vec::new() };
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

/// Runs `cmd` (a bwrap command line) to completion or to `timeout`.
pub async fn run(
    spawner: &Spawner,
    mut cmd: Command,
    timeout: Option<Duration>,
) -> Result<ExecOutcome> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawner
        .spawn(cmd)
        .await
        .map_err(|e| OrchestratorError::Failed(format!("failed to start bwrap: {e}")))?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let finished = match timeout {
        Some(t) => tokio::time::timeout(t, collect(&mut child)).await.ok(),
        None => Some(collect(&mut child).await),
    };
    match finished {
        Some((status, out, err)) => {
            let status =
                status.map_err(|e| OrchestratorError::Failed(format!("exec wait: {e}")))?;
            let mut output = String::from_utf8_lossy(&out).into_owned();
            output.push_str(&String::from_utf8_lossy(&err));
            if output.len() > OUTPUT_CAP {
                let mut end = OUTPUT_CAP;
                while !output.is_char_boundary(end) {
                    end -= 1;
                }
                output.truncate(end);
            }
            Ok(ExecOutcome {
                exit_code: exit_code(status),
                output,
            })
        }
        None => {
            // bwrap and its pid 1 share the group; the pid namespace dies
            // with its pid 1, taking every process of the exec along.
            if let Some(pgid) = pgid {
                kill_group(pgid);
            }
            let _ = child.kill().await;
            Err(OrchestratorError::Timeout)
        }
    }
}

async fn collect(child: &mut Child) -> (std::io::Result<ExitStatus>, Vec<u8>, Vec<u8>) {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // The pipes reach end of file when the sandbox is gone: its pid 1
    // exits with the command and takes background processes along.
    let (out, err, status) = tokio::join!(
        read_capped(stdout, OUTPUT_CAP),
        read_capped(stderr, OUTPUT_CAP),
        child.wait()
    );
    (status, out, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caps_what_it_keeps() {
        let data = vec![b'x'; 100_000];
        let kept = read_capped(Some(&data[..]), 10).await;
        assert_eq!(kept.len(), 10);
        assert!(read_capped(None::<&[u8]>, 10).await.is_empty());
    }

    #[test]
    fn signals_map_to_128_plus() {
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
    }
}
