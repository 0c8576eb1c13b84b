//! A fixed number of worker slots, each kept filled by a supervisor task that
//! replaces a worker as soon as it dies.

use crate::worker::{Worker, WorkerSpec};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How long a new worker may take to acknowledge its configuration.
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Pool {
    spec: WorkerSpec,
    slots: Vec<watch::Sender<Option<Arc<Worker>>>>,
    /// Signalled whenever a slot gains or loses a worker, or a worker
    /// becomes usable again.
    changed: Arc<Notify>,
    /// The `CONFIGURE` payload every worker gets; `None` in standby.
    config: RwLock<Option<Arc<Vec<u8>>>>,
    /// Serialises "configure and publish" against "reconfigure all".
    config_lock: tokio::sync::Mutex<()>,
}

impl Pool {
    /// Starts `size` supervisors. Workers come up in the background.
    pub fn start(spec: WorkerSpec, size: usize, config: Option<Vec<u8>>) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            spec,
            slots: (0..size.max(1)).map(|_| watch::channel(None).0).collect(),
            changed: Arc::new(Notify::new()),
            config: RwLock::new(config.map(Arc::new)),
            config_lock: tokio::sync::Mutex::new(()),
        });
        for index in 0..pool.slots.len() {
            let p = Arc::downgrade(&pool);
            tokio::spawn(supervise(p, index));
        }
        pool
    }

    fn current_config(&self) -> Option<Arc<Vec<u8>>> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The live worker with the fewest invocations in flight, waiting for one
    /// to come up until `deadline`.
    pub async fn pick(&self, deadline: Instant) -> Option<Arc<Worker>> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let best = self
                .slots
                .iter()
                .filter_map(|s| s.borrow().clone())
                .filter(|w| w.is_usable())
                .min_by_key(|w| w.load());
            if best.is_some() {
                return best;
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Waits until every slot holds a live worker (used at start-up, so the
    /// banner is printed only once the runtime can serve).
    pub async fn wait_all_ready(&self, deadline: Instant) -> bool {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self
                .slots
                .iter()
                .all(|s| s.borrow().as_ref().is_some_and(|w| !w.is_dead()))
            {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Gives every worker, present and future, a new configuration.
    pub async fn configure_all(&self, payload: Vec<u8>) -> Result<(), String> {
        let _guard = self.config_lock.lock().await;
        let payload = Arc::new(payload);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Some(payload.clone());
        let workers: Vec<_> = self
            .slots
            .iter()
            .filter_map(|s| s.borrow().clone())
            .collect();
        for w in &workers {
            if let Err(e) = w.configure(&payload, CONFIGURE_TIMEOUT).await {
                // The supervisor will start a fresh one with the new config.
                w.kill();
                return Err(e.to_string());
            }
        }
        Ok(())
    }
}

async fn supervise(pool: std::sync::Weak<Pool>, index: usize) {
    let mut quick_failures = 0u32;
    loop {
        let Some(p) = pool.upgrade() else { return };
        let started = Instant::now();
        let standby = p.current_config().is_none();
        match Worker::spawn(&p.spec, index, standby, p.changed.clone()).await {
            Ok((worker, exited)) => {
                let published = {
                    let _guard = p.config_lock.lock().await;
                    let ok = match p.current_config() {
                        Some(cfg) => worker.configure(&cfg, CONFIGURE_TIMEOUT).await.is_ok(),
                        None => true,
                    };
                    if ok {
                        p.slots[index].send_replace(Some(worker.clone()));
                        p.changed.notify_waiters();
                    } else {
                        worker.kill();
                    }
                    ok
                };
                drop(p);
                let status = exited.await.unwrap_or_default();
                let Some(p) = pool.upgrade() else { return };
                if published {
                    p.slots[index].send_replace(None);
                    p.changed.notify_waiters();
                }
                if started.elapsed() > Duration::from_secs(2) {
                    quick_failures = 0;
                }
                eprintln!("opr-runtime: worker {index} {status}; starting a new one");
            }
            Err(e) => eprintln!("opr-runtime: worker {index}: {e}"),
        }
        if started.elapsed() < Duration::from_secs(2) {
            // A worker that dies at once (bad interpreter, broken code of
            // ours) must not turn into a fork loop.
            quick_failures += 1;
            if quick_failures > 1 {
                tokio::time::sleep(Duration::from_millis(25u64 << quick_failures.min(7))).await;
            }
        }
    }
}
