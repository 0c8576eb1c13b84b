//! One task per runtime: pumps the sandbox's output into its log, waits for
//! it to exit and re-runs it according to the restart policy
//! (executor-api §7.5, §19.1), with a bounded backoff. It ends when told to
//! stop (removal) or when its stop channel is dropped (backend dropped),
//! killing the sandbox on the way out.

use super::exec::exit_code;
use super::output;
use super::spawn::kill_group;
use crate::RestartPolicy;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio::sync::watch;

/// Whether a sandbox that exited with `code` is started again.
pub fn should_restart(policy: RestartPolicy, code: Option<i32>) -> bool {
    match policy {
        RestartPolicy::No => false,
        // No "stopped by the user" state exists here (remove is final), so
        // unless-stopped behaves like always.
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        RestartPolicy::OnFailure => code != Some(0),
    }
}

/// Doubling delays between restarts, reset once a run lasted a while.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const MIN: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(10);
    /// A run this long counts as healthy.
    pub const RESET_AFTER: Duration = Duration::from_secs(10);

    pub fn new() -> Self {
        Backoff { next: Self::MIN }
    }

    /// Delay before the next start, given how long the last run lasted.
    pub fn delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= Self::RESET_AFTER {
            self.next = Self::MIN;
        }
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// True once a stop was asked for or the asking side is gone.
pub fn stop_requested(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// One started sandbox: the process, the read end of its output pipe and
/// the log file it goes to.
pub type Started = (Child, pipe::Receiver, std::fs::File);

/// What the supervisor needs from the backend.
pub struct Supervised<L> {
    pub policy: RestartPolicy,
    pub log: PathBuf,
    pub stop: watch::Receiver<bool>,
    /// Starts the sandbox again and records its new pid.
    pub relaunch: L,
}

pub async fn supervise<L, F>(first: Started, mut s: Supervised<L>)
where
    L: FnMut() -> F,
    F: Future<Output = io::Result<Started>>,
{
    let (mut child, mut out, mut log) = first;
    let mut backoff = Backoff::new();
    loop {
        let started = Instant::now();
        let mut pump = tokio::spawn(output::pump(out, log, s.log.clone(), output::ROTATE_AT));
        let pgid = child.id().and_then(|p| i32::try_from(p).ok());
        let status = tokio::select! {
            st = child.wait() => st.ok(),
            () = stopped(&mut s.stop) => None,
        };
        if status.is_none() {
            // Stop: the whole sandbox goes (its pid 1 is in bwrap's group).
            if let Some(pgid) = pgid {
                kill_group(pgid);
            }
            let _ = child.kill().await;
        }
        // The pipe ends when the sandbox is gone; do not hang on it.
        if tokio::time::timeout(Duration::from_secs(1), &mut pump)
            .await
            .is_err()
        {
            pump.abort();
        }
        let code = status.map(exit_code);
        if status.is_none() || stop_requested(&s.stop) || !should_restart(s.policy, code) {
            return;
        }
        tracing::info!(log = %s.log.display(), ?code, "runtime exited; restarting");
        loop {
            let delay = backoff.delay(started.elapsed());
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stopped(&mut s.stop) => return,
            }
            match (s.relaunch)().await {
                Ok((c, o, l)) => {
                    (child, out, log) = (c, o, l);
                    break;
                }
                Err(e) => tracing::warn!(log = %s.log.display(), "restart failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        use RestartPolicy::*;
        assert!(!should_restart(No, Some(1)));
        assert!(should_restart(Always, Some(0)));
        assert!(should_restart(UnlessStopped, Some(0)));
        assert!(should_restart(OnFailure, Some(137)));
        assert!(should_restart(OnFailure, None));
        assert!(!should_restart(OnFailure, Some(0)));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new();
        let short = Duration::from_millis(1);
        let seq: Vec<u128> = (0..9).map(|_| b.delay(short).as_millis()).collect();
        assert_eq!(seq, [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000]);
        assert_eq!(b.delay(Backoff::RESET_AFTER), Backoff::MIN);
    }

    #[test]
    fn stop_flag_and_dropped_sender() {
        let (tx, rx) = watch::channel(false);
        assert!(!stop_requested(&rx));
        tx.send_replace(true);
        assert!(stop_requested(&rx));
        let (tx, rx) = watch::channel(false);
        drop(tx);
        assert!(stop_requested(&rx));
    }
}
