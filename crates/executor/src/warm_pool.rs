//! The warm pool (beyond the standard, docs/executor.md): generic runtimes
//! started ahead per image, waiting in standby. A cold start that finds one
//! hands it the function (`POST /__opr/assign`, docs/runtime.md) instead of
//! starting a sandbox.

use crate::create::{CreateRequest, WorkDir};
use crate::engine::{random_hex, Executor};
use crate::error::ApiError;
use crate::registry::{now, Insert, Phase, RuntimeView};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opr_orchestrator::{RestartPolicy, RuntimeSpec, LABEL_EXECUTOR, LABEL_POOL};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Limits a pooled runtime starts with; a function asking for others gets
/// them through `set_limits` at assignment.
const POOL_CPUS: f64 = 1.0;
const POOL_MEMORY_MB: u64 = 512;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after a pool hit its replacement starts.
const REFILL_DELAY: Duration = Duration::from_millis(100);
/// Standby runtimes started at once: a burst of hits must not turn into a
/// burst of sandbox starts competing with the functions being served.
const MAX_CONCURRENT_STARTS: usize = 2;

#[derive(Debug, Clone)]
struct Pooled {
    container: String,
    hostname: String,
    work_dir: PathBuf,
    address: SocketAddr,
    token: String,
}

pub struct WarmPool {
    /// (configured image, wanted count).
    targets: Vec<(String, usize)>,
    /// Ready runtimes by pool key.
    idle: Mutex<HashMap<String, VecDeque<Pooled>>>,
    /// Being started, by pool key.
    starting: Mutex<HashMap<String, usize>>,
    /// Work folders of runtimes still starting, kept from the sweep.
    starting_dirs: Mutex<Vec<PathBuf>>,
    refill: Arc<Notify>,
    /// Bounds standby runtimes starting at once.
    starts: Arc<tokio::sync::Semaphore>,
    /// Set at shutdown: no new standby runtimes from then on.
    stopping: std::sync::atomic::AtomicBool,
}

impl WarmPool {
    pub fn new(targets: Vec<(String, usize)>) -> Self {
        Self {
            targets,
            idle: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashMap::new()),
            starting_dirs: Mutex::new(Vec::new()),
            refill: Arc::new(Notify::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            starts: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_STARTS)),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Pooled>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn work_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .idle()
            .values()
            .flatten()
            .map(|p| p.work_dir.clone())
            .collect();
        dirs.extend(
            self.starting_dirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        dirs
    }

    /// Stops refilling and hands back the ready runtimes' names for removal.
    pub fn drain_names(&self) -> Vec<String> {
        let mut idle = self.idle();
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        idle.drain()
            .flat_map(|(_, q)| q.into_iter().map(|p| p.container))
            .collect()
    }

    /// Ready runtimes per configured image, for the health report and tests.
    pub fn ready_count(&self, key: &str) -> usize {
        self.idle().get(key).map_or(0, VecDeque::len)
    }

    /// Per configured image: runtimes ready, starting, and wanted (the
    /// health report shows it so operators and tests can see the pool).
    pub fn report(&self, exec: &Executor) -> Vec<(String, usize, usize, usize)> {
        self.targets
            .iter()
            .map(|(image, wanted)| {
                let key = exec.orch.pool_key(image);
                let starting = self
                    .starting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key)
                    .copied()
                    .unwrap_or(0);
                (image.clone(), self.ready_count(&key), starting, *wanted)
            })
            .collect()
    }

    pub fn start_refill(exec: &Arc<Executor>) {
        if exec.pool.targets.is_empty() {
            return;
        }
        let weak = Arc::downgrade(exec);
        tokio::spawn(async move {
            loop {
                let Some(exec) = weak.upgrade() else { return };
                let refill = exec.pool.refill.clone();
                let notified = refill.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                exec.pool.fill_once(&exec).await;
                drop(exec);
                // Woken by a pool hit, or every few seconds to replace
                // failed starts.
                let _ = tokio::time::timeout(Duration::from_secs(5), notified).await;
            }
        });
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn fill_once(&self, exec: &Arc<Executor>) {
        if self.is_stopping() {
            return;
        }
        let mut tasks = Vec::new();
        for (image, wanted) in &self.targets {
            let key = exec.orch.pool_key(image);
            let have = self.ready_count(&key)
                + self
                    .starting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key)
                    .copied()
                    .unwrap_or(0);
            for _ in have..*wanted {
                *self
                    .starting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(key.clone())
                    .or_default() += 1;
                let exec = exec.clone();
                let (image, key) = (image.clone(), key.clone());
                let starts = self.starts.clone();
                tasks.push(tokio::spawn(async move {
                    let permit = starts.acquire_owned().await;
                    let started = exec.pool.start_one(&exec, &image).await;
                    drop(permit);
                    if let Some(c) = exec
                        .pool
                        .starting
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(&key)
                    {
                        *c = c.saturating_sub(1);
                    }
                    match started {
                        Ok(p) => {
                            let mut idle = exec.pool.idle();
                            // Checked under the lock `drain_names` takes, so
                            // a runtime is either drained or removed here.
                            if exec.pool.is_stopping() {
                                drop(idle);
                                let _ = exec.orch.remove(&p.container).await;
                            } else {
                                idle.entry(key).or_default().push_back(p);
                            }
                        }
                        Err(e) => {
                            eprintln!("opr executor: warm pool runtime for {image} failed: {e}")
                        }
                    }
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn start_one(&self, exec: &Arc<Executor>, image: &str) -> Result<Pooled, String> {
        let container = format!("{}-pool-{}", exec.cfg.hostname, &random_hex()[..12]);
        let work = WorkDir {
            root: exec.cfg.work_dir.join(&container),
        };
        self.starting_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(work.root.clone());
        let mut result = self.start_sandbox(exec, image, &container, &work).await;
        if result.is_ok() && self.is_stopping() {
            // Shutdown began while it started: it must not outlive us.
            result = Err("the executor is shutting down".into());
        }
        self.starting_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|d| *d != work.root);
        if result.is_err() {
            let _ = exec.orch.remove(&container).await;
            let _ = tokio::fs::remove_dir_all(&work.root).await;
        }
        result
    }

    async fn start_sandbox(
        &self,
        exec: &Arc<Executor>,
        image: &str,
        container: &str,
        work: &WorkDir,
    ) -> Result<Pooled, String> {
        work.create(false).await.map_err(|e| e.to_string())?;
        exec.orch
            .ensure_image(image)
            .await
            .map_err(|e| e.to_string())?;
        let token = random_hex();
        let hostname = random_hex();
        let spec = RuntimeSpec {
            name: container.to_string(),
            hostname: hostname.clone(),
            image: image.to_string(),
            command: vec!["opr-runtime".into(), "--standby".into()],
            env: BTreeMap::from([("OPR_RUNTIME_CONTROL_TOKEN".to_string(), token.clone())]),
            mounts: work.mounts(false),
            labels: BTreeMap::from([
                (LABEL_EXECUTOR.to_string(), exec.cfg.hostname.clone()),
                (LABEL_POOL.to_string(), image.to_string()),
            ]),
            cpus: POOL_CPUS,
            memory_mb: POOL_MEMORY_MB,
            pids_limit: exec.cfg.pids_limit,
            restart: RestartPolicy::No,
            network: exec.cfg.networks.first().cloned(),
        };
        exec.orch.run(&spec).await.map_err(|e| e.to_string())?;
        let address = exec
            .orch
            .address(container)
            .await
            .map_err(|e| e.to_string())?;
        if !crate::readiness::wait_until_serving(address, (Instant::now() + READY_TIMEOUT).into())
            .await
        {
            return Err("standby runtime did not serve within 30 s".into());
        }
        Ok(Pooled {
            container: container.to_string(),
            hostname,
            work_dir: work.root.clone(),
            address,
            token,
        })
    }

    /// `None`: no pool runtime fits (the caller does a full cold start).
    /// `Some(result)`: a pool runtime was used, successfully or not.
    pub async fn try_assign(
        &self,
        exec: &Arc<Executor>,
        req: &CreateRequest,
    ) -> Option<Result<(), ApiError>> {
        if self.targets.is_empty() || !pool_compatible(req) {
            return None;
        }
        if let Err(e) = exec.check_capacity(&exec.runtime_name(&req.runtime_id)) {
            return Some(Err(e));
        }
        let key = exec.orch.pool_key(&req.image);
        let pooled = self.idle().get_mut(&key)?.pop_front()?;
        // The replacement starts a moment later, so that it does not compete
        // for the CPU with this cold start's assignment and first request.
        let refill = self.refill.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REFILL_DELAY).await;
            refill.notify_one();
        });
        if (req.cpus, req.memory) != (POOL_CPUS, POOL_MEMORY_MB)
            && exec
                .orch
                .set_limits(&pooled.container, req.cpus, req.memory)
                .await
                .is_err()
        {
            // This backend cannot adjust limits: do a normal start instead.
            self.idle().entry(key).or_default().push_front(pooled);
            return None;
        }
        Some(self.assign(exec, req, pooled).await)
    }

    async fn assign(
        &self,
        exec: &Arc<Executor>,
        req: &CreateRequest,
        pooled: Pooled,
    ) -> Result<(), ApiError> {
        let started = Instant::now();
        let name = exec.runtime_name(&req.runtime_id);
        let secret = random_hex();
        let created = now();
        let view = RuntimeView {
            version: req.version.clone(),
            created,
            updated: created,
            name: name.clone(),
            hostname: pooled.hostname.clone(),
            status: "pending".into(),
            key: secret.clone(),
            listening: 0,
            image: req.image.clone(),
            initialised: 0,
        };
        let rt = match exec.registry.insert_pending(
            &req.runtime_id,
            &name,
            pooled.work_dir.clone(),
            view,
        ) {
            Insert::Inserted(rt) => rt,
            Insert::Exists(_) => {
                // Someone else is creating it; give the runtime back.
                self.idle()
                    .entry(exec.orch.pool_key(&req.image))
                    .or_default()
                    .push_front(pooled);
                return Err(ApiError::typed(crate::error::ErrorType::RuntimeConflict));
            }
        };
        *rt.container.lock().unwrap_or_else(|p| p.into_inner()) = pooled.container.clone();
        *rt.address.lock().unwrap_or_else(|p| p.into_inner()) = Some(pooled.address);
        let result = self.send_assignment(exec, req, &pooled, &secret).await;
        match result {
            Ok(()) => {
                let secs = started.elapsed().as_secs_f64();
                rt.update(|v| {
                    v.updated = now();
                    v.status = format!("Up {secs:.2}s");
                    v.listening = 1;
                    v.initialised = 1;
                });
                rt.set_phase(Phase::Ready);
                Ok(())
            }
            Err(e) => {
                exec.discard(&rt, &pooled.work_dir, Some(e.clone())).await;
                Err(e)
            }
        }
    }

    async fn send_assignment(
        &self,
        exec: &Arc<Executor>,
        req: &CreateRequest,
        pooled: &Pooled,
        secret: &str,
    ) -> Result<(), ApiError> {
        let work = WorkDir {
            root: pooled.work_dir.clone(),
        };
        let archive_name = if req.source.ends_with(".tar") {
            "code.tar"
        } else {
            "code.tar.gz"
        };
        let target = work.src().join(archive_name);
        // A copy, never a link: the runtime's /tmp is writable, and a
        // function must not be able to change the stored package.
        crate::storage::copy_atomically(std::path::Path::new(&req.source), &target)
            .await
            .map_err(|_| {
                ApiError::untyped(500, "Failed to copy source code to temporary directory")
            })?;
        let body = serde_json::json!({
            "env": exec.runtime_env(req, secret),
            "archive": format!("/tmp/{archive_name}"),
        });
        let request = http::Request::post(format!("http://{}/__opr/assign", pooled.address))
            .header("x-opr-control-token", &pooled.token)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| ApiError::untyped(500, e.to_string()))?;
        let response = tokio::time::timeout(READY_TIMEOUT, exec.client.request(request))
            .await
            .map_err(|_| ApiError::untyped(500, "Warm runtime did not answer its assignment."))?
            .map_err(|e| ApiError::untyped(500, format!("Warm runtime assignment failed: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let text = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(ApiError::untyped(
                500,
                format!(
                    "Warm runtime refused the function: {}",
                    String::from_utf8_lossy(&text)
                ),
            ));
        }
        Ok(())
    }
}

/// A pool runtime serves the standard start (unpack the package, run the
/// server); a custom start command needs its own sandbox.
fn pool_compatible(req: &CreateRequest) -> bool {
    let standard_start = req.runtime_entrypoint.is_empty()
        || (req.runtime_entrypoint.contains("helpers/start.sh")
            && req.runtime_entrypoint.contains("helpers/server.sh"));
    req.command.is_empty() && req.version == "v5" && standard_start && !req.source.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_standard_starts_use_the_pool() {
        let mut req = CreateRequest {
            version: "v5".into(),
            source: "/s/code.tar.gz".into(),
            runtime_entrypoint: "cp /tmp/code.tar.gz /mnt/code/code.tar.gz && nohup helpers/start.sh \"bash helpers/server.sh\"".into(),
            ..Default::default()
        };
        assert!(pool_compatible(&req));
        req.runtime_entrypoint = "node custom.js".into();
        assert!(!pool_compatible(&req));
        req.runtime_entrypoint.clear();
        req.command = "npm install".into();
        assert!(!pool_compatible(&req));
    }
}
