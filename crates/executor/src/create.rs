//! `POST /v1/runtimes`: create a runtime, run its build, store the package
//! (executor-api §7).

use crate::buildlog::{self, Chunk};
use crate::engine::{random_hex, Executor};
use crate::error::{ApiError, ErrorType};
use crate::params::{format_float, is_empty};
use crate::registry::{now, Insert, Phase, Runtime, RuntimeView};
use crate::storage;
use opr_orchestrator::{
    Mounts, OrchestratorError, RestartPolicy, RuntimeSpec, LABEL_EXECUTOR, LABEL_RUNTIME_ID,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const CACHE_KEY_ERROR: &str =
    "Cache key must start with a letter or number and may only contain letters, numbers, dots, underscores, and hyphens.";
/// Grace before a finished build is removed, for log-stream readers.
const REMOVE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    pub runtime_id: String,
    pub image: String,
    pub entrypoint: String,
    pub source: String,
    pub destination: String,
    pub output_directory: String,
    pub variables: BTreeMap<String, String>,
    pub runtime_entrypoint: String,
    pub command: String,
    pub cache_key: String,
    pub timeout: u64,
    pub remove: bool,
    pub cpus: f64,
    pub memory: u64,
    pub version: String,
    pub restart: RestartPolicy,
    /// Remove at once, without the 2 s grace for log-stream readers: for
    /// jobs of the asynchronous build API, which has its own log endpoint.
    #[serde(default)]
    pub remove_at_once: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateResult {
    pub output: Vec<Chunk>,
    pub start_time: f64,
    pub duration: f64,
    pub path: Option<String>,
    pub size: Option<u64>,
}

/// executor-api §7.2 step 1.
pub fn valid_cache_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && key.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Variable names keep only `[A-Za-z0-9_.-]` (executor-api §7.3).
pub fn sanitize_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .collect()
}

/// The per-runtime work directory and its sub-folders (executor-api §7.4).
pub struct WorkDir {
    pub root: PathBuf,
}

impl WorkDir {
    pub fn src(&self) -> PathBuf {
        self.root.join("src")
    }
    pub fn builds(&self) -> PathBuf {
        self.root.join("builds")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn logging(&self) -> PathBuf {
        self.root.join("logging")
    }
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    pub async fn create(&self, with_cache: bool) -> std::io::Result<()> {
        for d in [self.src(), self.builds(), self.logs(), self.logging()] {
            tokio::fs::create_dir_all(d).await?;
        }
        if with_cache {
            tokio::fs::create_dir_all(self.cache()).await?;
        }
        Ok(())
    }

    pub fn mounts(&self, with_cache: bool) -> Mounts {
        Mounts {
            tmp: self.src(),
            code: self.builds(),
            logs: self.logs(),
            logging: self.logging(),
            cache: with_cache.then(|| self.cache()),
        }
    }
}

impl Executor {
    /// The environment of executor-api §7.3.
    pub fn runtime_env(&self, req: &CreateRequest, secret: &str) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = req
            .variables
            .iter()
            .map(|(k, v)| (sanitize_name(k), v.clone()))
            .filter(|(k, _)| !k.is_empty())
            .collect();
        // The names of the caller's own variables, so a build can tell
        // them from what the executor adds (upstream's build keys).
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        let build_keys = keys.join(",");
        env.insert("OPEN_RUNTIMES_BUILD_KEYS".into(), build_keys);
        env.insert("OPEN_RUNTIMES_SECRET".into(), secret.to_string());
        env.insert("OPEN_RUNTIMES_ENTRYPOINT".into(), req.entrypoint.clone());
        env.insert("OPEN_RUNTIMES_HOSTNAME".into(), self.cfg.hostname.clone());
        env.insert("OPEN_RUNTIMES_CPUS".into(), format_float(req.cpus));
        env.insert("OPEN_RUNTIMES_MEMORY".into(), req.memory.to_string());
        if !is_empty(&req.output_directory) {
            env.insert(
                "OPEN_RUNTIMES_OUTPUT_DIRECTORY".into(),
                req.output_directory.clone(),
            );
        }
        env.insert("CI".into(), "true".into());
        env
    }

    /// `OPR_EXECUTOR_MAX_RUNTIMES`: a new runtime past the cap is refused.
    pub fn check_capacity(&self, name: &str) -> Result<(), ApiError> {
        if self.registry.len() >= self.cfg.max_runtimes && self.registry.get(name).is_none() {
            return Err(ApiError::untyped(
                503,
                format!(
                    "Runtime limit reached: {} runtimes are running (OPR_EXECUTOR_MAX_RUNTIMES). Delete a runtime or raise the limit.",
                    self.cfg.max_runtimes
                ),
            ));
        }
        Ok(())
    }

    /// Inserts the pending entry, then does the work; on failure the entry,
    /// container and work directory are gone (executor-api §7.10).
    pub async fn create_runtime(
        self: &Arc<Self>,
        req: CreateRequest,
    ) -> Result<CreateResult, ApiError> {
        if !is_empty(&req.cache_key) && !valid_cache_key(&req.cache_key) {
            return Err(ApiError::with_message(
                ErrorType::ExecutionBadRequest,
                CACHE_KEY_ERROR,
            ));
        }
        let started = Instant::now();
        let start_time = now();
        let secret = random_hex();
        let name = self.runtime_name(&req.runtime_id);
        self.check_capacity(&name)?;
        let work = WorkDir {
            root: self.cfg.work_dir.join(&name),
        };
        let view = RuntimeView {
            version: req.version.clone(),
            created: start_time,
            updated: start_time,
            name: name.clone(),
            hostname: random_hex(),
            status: "pending".into(),
            key: secret.clone(),
            listening: 0,
            image: req.image.clone(),
            initialised: 0,
        };
        let rt = match self
            .registry
            .insert_pending(&req.runtime_id, &name, work.root.clone(), view)
        {
            Insert::Inserted(rt) => rt,
            Insert::Exists(existing) => {
                return Err(if existing.view().status == "pending" {
                    ApiError::with_message(
                        ErrorType::RuntimeConflict,
                        "A runtime with the same ID is already being created. Attempt a execution soon.",
                    )
                } else {
                    ApiError::typed(ErrorType::RuntimeConflict)
                });
            }
        };
        let mut output = Vec::new();
        let result = self
            .create_steps(&rt, &req, &secret, &work, &mut output)
            .await;
        match result {
            Ok((path, size)) => {
                let duration = started.elapsed().as_secs_f64();
                rt.update(|v| {
                    v.updated = now();
                    v.status = format!("Up {duration:.2}s");
                    v.initialised = 1;
                });
                rt.set_phase(Phase::Ready);
                if req.remove {
                    if !req.remove_at_once {
                        tokio::time::sleep(REMOVE_GRACE).await;
                    }
                    self.discard(&rt, &work.root, None).await;
                }
                Ok(CreateResult {
                    output,
                    start_time,
                    duration: started.elapsed().as_secs_f64(),
                    path,
                    size,
                })
            }
            Err(err) => {
                if req.remove && !req.remove_at_once {
                    tokio::time::sleep(REMOVE_GRACE).await;
                }
                self.discard(&rt, &work.root, Some(err.clone())).await;
                if err.kind != ErrorType::GeneralUnknown {
                    return Err(err);
                }
                // Untyped: the message is the failure output (executor-api §7.10).
                let text: String = if output.is_empty() {
                    err.message.clone()
                } else {
                    output.iter().map(|c| c.content.as_str()).collect()
                };
                Err(ApiError::untyped(err.code, text))
            }
        }
    }

    /// Removes a runtime's container, work directory and entry.
    pub async fn discard(&self, rt: &Arc<Runtime>, work_dir: &Path, why: Option<ApiError>) {
        self.registry.remove(rt);
        rt.set_phase(Phase::Gone(why));
        let _ = self.orch.remove(&rt.container()).await;
        let _ = tokio::fs::remove_dir_all(work_dir).await;
    }

    async fn create_steps(
        self: &Arc<Self>,
        rt: &Arc<Runtime>,
        req: &CreateRequest,
        secret: &str,
        work: &WorkDir,
        output: &mut Vec<Chunk>,
    ) -> Result<(Option<String>, Option<u64>), ApiError> {
        self.check_build_cancelled(&rt.name)?;
        let cache_on = !is_empty(&req.cache_key) && !is_empty(&req.command);
        let cache_artifact = if cache_on {
            Some(self.cache_artifact(&req.cache_key)?)
        } else {
            None
        };
        work.create(cache_on).await.map_err(|e| {
            ApiError::untyped(500, format!("Failed to create the work directory: {e}"))
        })?;
        if !is_empty(&req.source) {
            let name = if req.source.ends_with(".tar") {
                "code.tar"
            } else {
                "code.tar.gz"
            };
            storage::copy_atomically(Path::new(&req.source), &work.src().join(name))
                .await
                .map_err(|_| {
                    ApiError::untyped(500, "Failed to copy source code to temporary directory")
                })?;
        }
        let command = if !is_empty(&req.runtime_entrypoint) {
            vec![
                "bash".to_string(),
                "-c".to_string(),
                req.runtime_entrypoint.clone(),
            ]
        } else {
            vec![
                "tail".to_string(),
                "-f".to_string(),
                "/dev/null".to_string(),
            ]
        };
        self.orch
            .ensure_image(&req.image)
            .await
            .map_err(backend_error)?;
        let spec = RuntimeSpec {
            name: rt.container(),
            hostname: rt.view().hostname,
            image: req.image.clone(),
            command,
            env: self.runtime_env(req, secret),
            mounts: work.mounts(cache_on),
            labels: BTreeMap::from([
                (LABEL_EXECUTOR.to_string(), self.cfg.hostname.clone()),
                (LABEL_RUNTIME_ID.to_string(), req.runtime_id.clone()),
            ]),
            cpus: req.cpus,
            memory_mb: req.memory,
            pids_limit: self.cfg.pids_limit,
            restart: req.restart,
            network: self.cfg.networks.first().cloned(),
        };
        self.orch.run(&spec).await.map_err(backend_error)?;
        // A cancel that came while the sandbox started found nothing to
        // remove: it is seen here instead.
        self.check_build_cancelled(&rt.name)?;
        if let Ok(addr) = self.orch.address(&spec.name).await {
            *rt.address.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
        }
        if !is_empty(&req.command) {
            self.run_build(rt, req, work, cache_artifact.as_deref(), output)
                .await?;
        }
        if is_empty(&req.destination) {
            return Ok((None, None));
        }
        let package = work.builds().join("code.tar.gz");
        let size = tokio::fs::metadata(&package)
            .await
            .map_err(|_| ApiError::untyped(500, "Something went wrong when starting runtime."))?
            .len();
        let path = storage::build_path(&req.destination);
        storage::copy_atomically(&package, &path)
            .await
            .map_err(|_| ApiError::untyped(500, "Failed to move built code to storage"))?;
        Ok((Some(path.display().to_string()), Some(size)))
    }

    fn cache_artifact(&self, key: &str) -> Result<PathBuf, ApiError> {
        if key.contains('\0')
            || key.starts_with('/')
            || key.contains('\\')
            || key.split('/').any(|s| s == "..")
        {
            return Err(ApiError::untyped(400, "Invalid build cache key"));
        }
        Ok(self
            .cfg
            .build_cache_dir
            .join(key)
            .join("lz4-b1M/stores.sqfs"))
    }

    async fn run_build(
        &self,
        rt: &Arc<Runtime>,
        req: &CreateRequest,
        work: &WorkDir,
        artifact: Option<&Path>,
        output: &mut Vec<Chunk>,
    ) -> Result<(), ApiError> {
        let mut warnings = Vec::new();
        if let Some(artifact) = artifact {
            if tokio::fs::try_exists(artifact).await.unwrap_or(false) {
                // A restore is a use: the LRU clock is the file's mtime.
                crate::cache::touch(artifact);
                if let Err(e) =
                    storage::copy_atomically(artifact, &work.cache().join("stores.sqfs")).await
                {
                    warnings.push(chunk(format!(
                        "[build cache] Warning: Failed to restore cache artifact: {e}\n"
                    )));
                }
            }
        }
        let exec_start = SystemTime::now();
        let env = vec![("OPR_BUILD_COMMAND".to_string(), req.command.clone())];
        let outcome = self
            .orch
            .execute(
                &rt.container(),
                &buildlog::wrapper_argv(),
                &env,
                Some(Duration::from_secs(req.timeout)),
            )
            .await;
        let logs = tokio::fs::read(work.logging().join("logs.txt"))
            .await
            .unwrap_or_default();
        let timings = tokio::fs::read_to_string(work.logging().join("timings.txt"))
            .await
            .unwrap_or_default();
        output.extend(warnings);
        output.extend(buildlog::parse_chunks(&logs, &timings, exec_start));
        if let Some(artifact) = artifact {
            let produced = work.cache().join("stores.sqfs");
            if tokio::fs::try_exists(&produced).await.unwrap_or(false) {
                if let Err(e) = storage::copy_atomically(&produced, artifact).await {
                    output.push(chunk(format!(
                        "[build cache] Warning: Failed to store cache artifact: {e}"
                    )));
                }
                // Keep the cache under its cap, least recently used first.
                let (root, cap) = (
                    self.cfg.build_cache_dir.clone(),
                    self.cfg.build_cache_max_bytes,
                );
                let _ = tokio::task::spawn_blocking(move || crate::cache::evict(&root, cap)).await;
            }
        }
        match outcome {
            Ok(o) if o.exit_code == 0 => Ok(()),
            Ok(o) => {
                let message = buildlog::cut(&o.output, buildlog::MAX_BUILD_LOG);
                let message = if message.is_empty() {
                    "Build command failed.".to_string()
                } else {
                    message
                };
                Err(ApiError::with_message(ErrorType::BuildFailed, message))
            }
            Err(e) => Err(ApiError::with_message(
                ErrorType::RuntimeFailed,
                e.to_string(),
            )),
        }
    }
}

fn chunk(content: String) -> Chunk {
    Chunk {
        timestamp: buildlog::format_timestamp(SystemTime::now()),
        content,
    }
}

fn backend_error(e: OrchestratorError) -> ApiError {
    ApiError::untyped(500, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys() {
        assert!(valid_cache_key("abc-1.2_x"));
        assert!(!valid_cache_key("-abc"));
        assert!(!valid_cache_key("a/b"));
        assert!(!valid_cache_key(&"a".repeat(129)));
        assert!(valid_cache_key(&"a".repeat(128)));
    }

    #[tokio::test]
    async fn build_keys_name_only_the_callers_variables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env: BTreeMap<String, String> = [(
            "OPR_EXECUTOR_WORK_DIR".to_string(),
            dir.path().display().to_string(),
        )]
        .into();
        let cfg = crate::config::from_env(&env);
        let orch = std::sync::Arc::new(NoBackend);
        let exec = Executor::start(cfg, orch).await.expect("start");
        let req = CreateRequest {
            variables: [
                ("TEST_VAR".to_string(), "x".to_string()),
                ("B$AD".to_string(), "y".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let e = exec.runtime_env(&req, "secret");
        assert_eq!(e["OPEN_RUNTIMES_BUILD_KEYS"], "BAD,TEST_VAR");
        assert_eq!(e["OPEN_RUNTIMES_SECRET"], "secret");
        assert_eq!(e["CI"], "true");
    }

    /// A backend with nothing in it, for tests of the executor's own logic.
    struct NoBackend;

    #[async_trait::async_trait]
    impl opr_orchestrator::Orchestrator for NoBackend {
        fn kind(&self) -> &'static str {
            "none"
        }
        async fn ensure_image(&self, _: &str) -> opr_orchestrator::Result<()> {
            Ok(())
        }
        async fn run(&self, _: &RuntimeSpec) -> opr_orchestrator::Result<()> {
            Ok(())
        }
        async fn execute(
            &self,
            _: &str,
            _: &[String],
            _: &[(String, String)],
            _: Option<Duration>,
        ) -> opr_orchestrator::Result<opr_orchestrator::ExecOutcome> {
            Err(OrchestratorError::Failed("none".into()))
        }
        async fn remove(&self, n: &str) -> opr_orchestrator::Result<()> {
            Err(OrchestratorError::NotFound(n.into()))
        }
        async fn list(
            &self,
            _: &str,
            _: &str,
        ) -> opr_orchestrator::Result<Vec<opr_orchestrator::RuntimeInfo>> {
            Ok(Vec::new())
        }
        async fn address(&self, n: &str) -> opr_orchestrator::Result<std::net::SocketAddr> {
            Err(OrchestratorError::NotFound(n.into()))
        }
        async fn stats(&self) -> opr_orchestrator::Result<Vec<opr_orchestrator::RuntimeStats>> {
            Ok(Vec::new())
        }
        async fn logs(&self, _: &str, _: usize) -> opr_orchestrator::Result<String> {
            Ok(String::new())
        }
    }

    #[test]
    fn variable_names_are_sanitised() {
        assert_eq!(sanitize_name("MY VAR$1.x-y"), "MYVAR1.x-y");
    }
}
