//! The maintenance loop (executor-api §12.3).

use crate::engine::Executor;
use crate::registry::{now, Phase};
use std::sync::Weak;

pub async fn run(exec: Weak<Executor>) {
    let interval = match exec.upgrade() {
        Some(e) => e.cfg.maintenance_interval,
        None => return,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(exec) = exec.upgrade() else { return };
        reap_idle(&exec).await;
    }
}

/// Removes idle runtimes from the registry first, so no execution is routed
/// to one that is going away, then removes them from the backend.
pub async fn reap_idle(exec: &Executor) {
    let cutoff = now() - exec.cfg.inactive_threshold.as_secs_f64();
    let idle = exec.registry.take_idle(cutoff);
    let mut tasks = Vec::new();
    for rt in idle {
        rt.set_phase(Phase::Gone(None));
        let orch = exec.orch.clone();
        tasks.push(tokio::spawn(async move {
            let _ = orch.remove(&rt.container()).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    exec.sweep_work_dirs().await;
}
