//! Workers that take jobs from the store. Store calls are short blocking
//! SQLite transactions, so they run on the blocking pool.

use crate::store::{Job, JobState, Recovery, Store, StoreError};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// What runs a job; the executor implements it with its build flow.
#[async_trait::async_trait]
pub trait BuildRunner: Send + Sync + 'static {
    /// `Ok` carries the result, `Err` the error body; both are stored.
    async fn run(&self, job: &Job) -> Result<Value, Value>;
    /// Stops a running job (its outcome is then dropped).
    async fn cancel(&self, job: &Job);
}

pub struct BuildQueue {
    store: Arc<Store>,
    runner: Arc<dyn BuildRunner>,
    wake: Arc<Notify>,
    /// Bumped whenever a job reaches a final state.
    finished: watch::Sender<u64>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Corrupt(format!("store task failed: {e}"))))
}

impl BuildQueue {
    /// Recovers what a dead executor left, then starts `workers` workers.
    pub async fn start(
        store: Arc<Store>,
        runner: Arc<dyn BuildRunner>,
        workers: usize,
    ) -> Result<(Arc<BuildQueue>, Recovery), StoreError> {
        let s = store.clone();
        let recovery = blocking(move || s.recover()).await?;
        let queue = Arc::new(BuildQueue {
            store,
            runner,
            wake: Arc::new(Notify::new()),
            finished: watch::channel(0).0,
        });
        for _ in 0..workers.max(1) {
            tokio::spawn(work(Arc::downgrade(&queue)));
        }
        Ok((queue, recovery))
    }

    pub async fn submit(&self, request: Value) -> Result<Job, StoreError> {
        let s = self.store.clone();
        let job = blocking(move || s.submit(&request)).await?;
        self.wake.notify_one();
        Ok(job)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let (s, id) = (self.store.clone(), id.to_string());
        blocking(move || s.get(&id)).await
    }

    pub async fn list(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let s = self.store.clone();
        blocking(move || s.list(limit)).await
    }

    /// Waits until the job is final, or `within` passes (then returns it
    /// as it is).
    pub async fn wait(&self, id: &str, within: Duration) -> Result<Option<Job>, StoreError> {
        let deadline = tokio::time::Instant::now() + within;
        let mut finished = self.finished.subscribe();
        loop {
            let job = self.get(id).await?;
            match &job {
                Some(j) if !j.state.is_final() => {}
                _ => return Ok(job),
            }
            if tokio::time::timeout_at(deadline, finished.changed())
                .await
                .is_err()
            {
                return Ok(job);
            }
        }
    }

    /// Cancels a job; a running one is stopped by the runner.
    pub async fn cancel(&self, id: &str) -> Result<Option<JobState>, StoreError> {
        let Some(job) = self.get(id).await? else {
            return Ok(None);
        };
        let (s, jid) = (self.store.clone(), id.to_string());
        let before = blocking(move || s.cancel(&jid)).await?;
        if before == Some(JobState::Running) {
            self.runner.cancel(&job).await;
        }
        self.finished.send_modify(|n| *n += 1);
        Ok(before)
    }
}

async fn work(queue: std::sync::Weak<BuildQueue>) {
    loop {
        let Some(q) = queue.upgrade() else { return };
        let wake = q.wake.clone();
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let s = q.store.clone();
        match blocking(move || s.claim()).await {
            Ok(Some(job)) => {
                // Another worker may find more work too.
                q.wake.notify_one();
                let outcome = q.runner.run(&job).await;
                let (s, id) = (q.store.clone(), job.id.clone());
                if let Err(e) = blocking(move || s.finish(&id, outcome)).await {
                    eprintln!("opr build queue: cannot record the end of {}: {e}", job.id);
                }
                q.finished.send_modify(|n| *n += 1);
                continue;
            }
            Ok(None) => {}
            Err(e) => eprintln!("opr build queue: {e}"),
        }
        drop(q);
        // Woken by a submission; the timeout is a safety net only.
        let _ = tokio::time::timeout(Duration::from_secs(5), notified).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Echo {
        runs: AtomicUsize,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait::async_trait]
    impl BuildRunner for Echo {
        async fn run(&self, job: &Job) -> Result<Value, Value> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            let _permit = self.gate.acquire().await.map_err(|_| json!("closed"))?;
            if job.request["fail"] == json!(true) {
                Err(json!({"message": "asked to fail"}))
            } else {
                Ok(json!({"echo": job.request}))
            }
        }
        async fn cancel(&self, _job: &Job) {
            self.gate.add_permits(1);
        }
    }

    async fn queue(
        workers: usize,
        permits: usize,
    ) -> (tempfile::TempDir, Arc<BuildQueue>, Arc<Echo>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("q.db")).expect("open"));
        let runner = Arc::new(Echo {
            runs: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(permits),
        });
        let (q, _) = BuildQueue::start(store, runner.clone(), workers)
            .await
            .expect("start");
        (dir, q, runner)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn submitted_jobs_run_and_report() {
        let (_d, q, _r) = queue(2, 100).await;
        let ok = q.submit(json!({"a": 1})).await.expect("submit");
        let bad = q.submit(json!({"fail": true})).await.expect("submit");
        let ok = q
            .wait(&ok.id, Duration::from_secs(10))
            .await
            .expect("wait")
            .expect("job");
        let bad = q
            .wait(&bad.id, Duration::from_secs(10))
            .await
            .expect("wait")
            .expect("job");
        assert_eq!(ok.state, JobState::Succeeded);
        assert_eq!(ok.result, Some(json!({"echo": {"a": 1}})));
        assert_eq!(bad.state, JobState::Failed);
        assert_eq!(bad.error, Some(json!({"message": "asked to fail"})));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelling_a_running_job_stops_it_and_keeps_it_cancelled() {
        let (_d, q, r) = queue(1, 0).await;
        let job = q.submit(json!({})).await.expect("submit");
        // Wait until the only worker holds it (bounded).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while r.runs.load(Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "job never started");
            tokio::task::yield_now().await;
        }
        // The worker is busy, so this one stays queued until cancelled.
        let queued = q.submit(json!({})).await.expect("submit");
        assert_eq!(
            q.cancel(&queued.id).await.expect("cancel"),
            Some(JobState::Queued)
        );
        assert_eq!(
            q.cancel(&job.id).await.expect("cancel"),
            Some(JobState::Running)
        );
        let done = q
            .wait(&job.id, Duration::from_secs(10))
            .await
            .expect("wait")
            .expect("job");
        assert_eq!(done.state, JobState::Cancelled);
        let never = q.get(&queued.id).await.expect("get").expect("job");
        assert_eq!((never.state, never.attempts), (JobState::Cancelled, 0));
        assert_eq!(
            r.runs.load(Ordering::SeqCst),
            1,
            "the cancelled queued job never ran"
        );
    }
}
