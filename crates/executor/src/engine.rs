//! The executor itself: registry, backend, HTTP client to runtimes, warm
//! pool; start-up and shutdown (executor-api §12.4).

use crate::config::ExecutorConfig;
use crate::registry::Registry;
use crate::warm_pool::WarmPool;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use opr_orchestrator::{Orchestrator, LABEL_EXECUTOR};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub struct Executor {
    pub cfg: ExecutorConfig,
    pub orch: Arc<dyn Orchestrator>,
    pub registry: Registry,
    pub client: HttpClient,
    pub pool: WarmPool,
    /// Host CPU use in percent, smoothed (executor-api §5).
    pub cpu_usage: Mutex<Option<f64>>,
    /// The durable build queue (set once at start).
    pub builds: std::sync::OnceLock<Arc<opr_build::BuildQueue>>,
    /// Queued builds running now, by runtime name. See
    /// [`Executor::cancel_build`].
    pub running_builds: Mutex<std::collections::HashMap<String, crate::builds::RunningBuild>>,
}

impl Executor {
    /// Cleans what an earlier executor of this name left, then starts the
    /// background loops (maintenance, CPU sampling, warm pool).
    pub async fn start(
        cfg: ExecutorConfig,
        orch: Arc<dyn Orchestrator>,
    ) -> anyhow::Result<Arc<Executor>> {
        tokio::fs::create_dir_all(&cfg.work_dir).await?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector);
        let exec = Arc::new(Executor {
            pool: WarmPool::new(cfg.warm_pool.clone()),
            cfg,
            orch,
            registry: Registry::default(),
            client,
            cpu_usage: Mutex::new(None),
            builds: std::sync::OnceLock::new(),
            running_builds: Mutex::new(std::collections::HashMap::new()),
        });
        exec.remove_orphans().await;
        let store = Arc::new(opr_build::Store::open(&exec.cfg.build_db)?);
        let runner = Arc::new(crate::builds::Runner(Arc::downgrade(&exec)));
        let (queue, recovery) =
            opr_build::BuildQueue::start(store, runner, exec.cfg.build_workers).await?;
        if !recovery.requeued.is_empty() || !recovery.failed.is_empty() {
            eprintln!(
                "opr executor: build queue recovered: {} retried, {} failed after two interruptions, {} queued",
                recovery.requeued.len(),
                recovery.failed.len(),
                recovery.queued
            );
        }
        let _ = exec.builds.set(queue);
        tokio::spawn(crate::maintenance::run(Arc::downgrade(&exec)));
        tokio::spawn(sample_cpu(Arc::downgrade(&exec)));
        WarmPool::start_refill(&exec);
        Ok(exec)
    }

    /// executor-api §12.4 step 5: at start-up nothing of ours may linger.
    async fn remove_orphans(&self) {
        match self.orch.list(LABEL_EXECUTOR, &self.cfg.hostname).await {
            Ok(left) => {
                for rt in left {
                    if let Err(e) = self.orch.remove(&rt.name).await {
                        eprintln!(
                            "opr executor: cannot remove leftover runtime {}: {e}",
                            rt.name
                        );
                    }
                }
            }
            Err(e) => eprintln!("opr executor: cannot list leftover runtimes: {e}"),
        }
        self.sweep_work_dirs().await;
    }

    /// Deletes work directories of ours that nothing uses (executor-api §12.3 step 3).
    pub async fn sweep_work_dirs(&self) {
        let prefix = format!("{}-", self.cfg.hostname);
        let mut used: Vec<PathBuf> = self
            .registry
            .all()
            .iter()
            .map(|r| r.work_dir.clone())
            .collect();
        used.extend(self.pool.work_dirs());
        let Ok(mut dir) = tokio::fs::read_dir(&self.cfg.work_dir).await else {
            return;
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && !used.contains(&entry.path()) {
                let _ = tokio::fs::remove_dir_all(entry.path()).await;
            }
        }
    }

    /// Removes every runtime (graceful shutdown, executor-api §12.4).
    pub async fn shutdown(&self) {
        let runtimes = self.registry.all();
        for rt in &runtimes {
            self.registry.remove(rt);
        }
        let mut names: Vec<String> = runtimes.iter().map(|r| r.container()).collect();
        names.extend(self.pool.drain_names());
        let removals = names.into_iter().map(|n| {
            let orch = self.orch.clone();
            tokio::spawn(async move {
                let _ = orch.remove(&n).await;
            })
        });
        for r in removals.collect::<Vec<_>>() {
            let _ = r.await;
        }
        self.sweep_work_dirs().await;
    }

    pub fn runtime_name(&self, runtime_id: &str) -> String {
        format!("{}-{}", self.cfg.hostname, runtime_id)
    }
}

/// 16 random bytes as 32 hex characters, from the OS generator.
pub fn random_hex() -> String {
    let mut buf = [0u8; 16];
    if getrandom::fill(&mut buf).is_err() {
        // No OS randomness is a broken host; still never reuse a value.
        buf.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

async fn sample_cpu(exec: std::sync::Weak<Executor>) {
    let mut last = read_proc_stat();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(exec) = exec.upgrade() else { return };
        let now = read_proc_stat();
        if let (Some((busy0, total0)), Some((busy1, total1))) = (last, now) {
            if total1 > total0 {
                let sample = (busy1 - busy0) as f64 * 100.0 / (total1 - total0) as f64;
                let mut usage = exec.cpu_usage.lock().unwrap_or_else(|p| p.into_inner());
                // Averaged with the previous sample, as upstream does.
                *usage = Some(match *usage {
                    Some(prev) => (prev + sample) / 2.0,
                    None => sample,
                });
            }
        }
        last = now;
    }
}

/// (busy, total) jiffies from the first line of /proc/stat.
fn read_proc_stat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let nums: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = nums.iter().sum();
    let idle = nums.get(3).copied().unwrap_or(0) + nums.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}
