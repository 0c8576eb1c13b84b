//! Builds through the durable queue (opr-build): the executor's build flow
//! of executor-api §7 as the job, plus the asynchronous API of
//! docs/builds.md (submit, status, logs, cancel) with folder, archive and
//! git sources.

use crate::buildlog::{self, Chunk};
use crate::create::{CreateRequest, CreateResult};
use crate::engine::Executor;
use crate::error::{ApiError, ErrorType};
use opr_build::{BuildRunner, Job};
use opr_orchestrator::{language_of_image, ImageLanguage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

/// How long `git clone` may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(300);
/// A folder or repository packed for a build may hold at most this much.
const MAX_SOURCE_BYTES: u64 = 1 << 30;

/// Where an asynchronous build's source comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Source {
    /// An archive in storage (tar.gz, tar, tar.zst or zip).
    Archive { path: String },
    /// A folder on the executor's filesystem.
    Folder { path: String },
    /// A git repository at a branch, tag or commit.
    Git {
        url: String,
        #[serde(default, rename = "ref")]
        reference: Option<String>,
    },
}

/// One job: the create request, and for asynchronous builds a source to
/// prepare first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildJob {
    pub create: CreateRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

pub struct Runner(pub Weak<Executor>);

/// A queued build in progress: its job, whether it was cancelled, and a
/// wake-up for a source preparation to stop at once.
pub struct RunningBuild {
    job_id: String,
    cancelled: bool,
    wake: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl BuildRunner for Runner {
    async fn run(&self, job: &Job) -> Result<Value, Value> {
        let Some(exec) = self.0.upgrade() else {
            return Err(error_json(&ApiError::untyped(
                500,
                "The executor is shutting down.",
            )));
        };
        let spec: BuildJob = serde_json::from_value(job.request.clone()).map_err(|e| {
            error_json(&ApiError::untyped(500, format!("Malformed build job: {e}")))
        })?;
        let name = exec.runtime_name(&spec.create.runtime_id);
        let wake = exec.build_started(&name, &job.id);
        // A cancel between the queue handing the job out and the line above
        // found no running build to stop: the stored state tells.
        if let Some(queue) = exec.builds.get() {
            if let Ok(Some(stored)) = queue.get(&job.id).await {
                if stored.state == opr_build::JobState::Cancelled {
                    exec.cancel_build(&name, &job.id).await;
                }
            }
        }
        let result = exec
            .run_queued_build(job, &name, spec.source.as_ref(), spec.create, &wake)
            .await;
        exec.build_ended(&name, &job.id);
        match result {
            Ok(r) => serde_json::to_value(r)
                .map_err(|e| error_json(&ApiError::untyped(500, e.to_string()))),
            Err(e) => Err(error_json(&e)),
        }
    }

    async fn cancel(&self, job: &Job) {
        let Some(exec) = self.0.upgrade() else { return };
        let Some(id) = job
            .request
            .pointer("/create/runtimeId")
            .and_then(Value::as_str)
        else {
            return;
        };
        exec.cancel_build(&exec.runtime_name(id), &job.id).await;
    }
}

impl Executor {
    fn running_builds(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, RunningBuild>> {
        self.running_builds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Records that job `job_id` builds runtime `name` from now on.
    fn build_started(&self, name: &str, job_id: &str) -> Arc<tokio::sync::Notify> {
        let wake = Arc::new(tokio::sync::Notify::new());
        let entry = RunningBuild {
            job_id: job_id.to_owned(),
            cancelled: false,
            wake: wake.clone(),
        };
        self.running_builds().insert(name.to_owned(), entry);
        wake
    }

    fn build_ended(&self, name: &str, job_id: &str) {
        let mut running = self.running_builds();
        if running.get(name).is_some_and(|b| b.job_id == job_id) {
            running.remove(name);
        }
    }

    /// The source prepared, then the runtime created, unless cancelled.
    async fn run_queued_build(
        self: &Arc<Self>,
        job: &Job,
        name: &str,
        source: Option<&Source>,
        mut create: CreateRequest,
        wake: &tokio::sync::Notify,
    ) -> Result<CreateResult, ApiError> {
        let prepared = match source {
            Some(source) => tokio::select! {
                prepared = prepare_source(self, &job.id, source) => Some(prepared?),
                // Cancelled: git (kill_on_drop) goes with the dropped future.
                () = wake.notified() => {
                    let dir = self.cfg.work_dir.join("build-sources");
                    let _ = tokio::fs::remove_dir_all(dir.join(format!("{}.git", job.id))).await;
                    let _ = tokio::fs::remove_file(dir.join(format!("{}.tar.gz", job.id))).await;
                    return Err(cancelled_error());
                }
            },
            None => None,
        };
        if let Some(p) = &prepared {
            create.source = p.display().to_string();
        }
        // A cancel during a long source preparation (git clone) ends here.
        let result = match self.check_build_cancelled(name) {
            Ok(()) => self.create_runtime(create).await,
            Err(e) => Err(e),
        };
        if let Some(p) = prepared {
            let _ = tokio::fs::remove_file(p).await;
        }
        result
    }

    /// Stops the running queued build `job_id` of runtime `name`. The
    /// cancel is recorded first, then the sandbox removed if it exists; the
    /// build checks the record after registering its runtime and again
    /// after its sandbox started. Whichever comes second sees the other, so
    /// a cancel at any moment stops the build: before the runtime exists,
    /// while its sandbox starts, or while the build command runs (its exec
    /// fails once the sandbox is gone, and the create path cleans up). A
    /// cancel for a job that already ended records nothing.
    pub async fn cancel_build(&self, name: &str, job_id: &str) {
        {
            let mut running = self.running_builds();
            match running.get_mut(name) {
                Some(b) if b.job_id == job_id => {
                    b.cancelled = true;
                    // Stored as a permit if nobody waits yet.
                    b.wake.notify_one();
                }
                // Another job builds this runtime now; or this one has not
                // started its run yet (it checks the stored state first) or
                // has ended.
                _ => return,
            }
        }
        if let Some(rt) = self.registry.get(name) {
            let _ = self.orch.remove(&rt.container()).await;
        }
    }

    /// `Err` when the queued build of runtime `name` was cancelled.
    pub fn check_build_cancelled(&self, name: &str) -> Result<(), ApiError> {
        if self.running_builds().get(name).is_some_and(|b| b.cancelled) {
            Err(cancelled_error())
        } else {
            Ok(())
        }
    }
}

fn cancelled_error() -> ApiError {
    ApiError::with_message(ErrorType::BuildFailed, "Build was cancelled.")
}

pub fn error_json(e: &ApiError) -> Value {
    json!({ "type": e.kind.name(), "code": e.code, "message": e.message })
}

/// Turns a stored error back into the API error it was.
pub fn error_from_json(v: &Value) -> ApiError {
    let message = v["message"].as_str().unwrap_or("Build failed.").to_string();
    let code = v["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(500);
    let kind = match v["type"].as_str().unwrap_or("") {
        "build_failed" => ErrorType::BuildFailed,
        "runtime_failed" => ErrorType::RuntimeFailed,
        "runtime_timeout" => ErrorType::RuntimeTimeout,
        "runtime_conflict" => ErrorType::RuntimeConflict,
        "execution_bad_request" => ErrorType::ExecutionBadRequest,
        _ => return ApiError::untyped(code, message),
    };
    ApiError::with_message(kind, message)
}

impl Executor {
    /// `POST /v1/runtimes` with a build command: a queue job, waited for.
    pub async fn create_through_queue(
        self: &Arc<Self>,
        req: CreateRequest,
    ) -> Result<CreateResult, ApiError> {
        let Some(queue) = self.builds.get() else {
            return self.create_runtime(req).await;
        };
        // Checks that must answer before anything is queued.
        if !crate::params::is_empty(&req.cache_key)
            && !crate::create::valid_cache_key(&req.cache_key)
        {
            return self.create_runtime(req).await;
        }
        let wait = Duration::from_secs(req.timeout) + Duration::from_secs(3600);
        let request = serde_json::to_value(BuildJob {
            create: req,
            source: None,
        })
        .map_err(|e| ApiError::untyped(500, e.to_string()))?;
        let job = queue.submit(request).await.map_err(store_error)?;
        let job = queue
            .wait(&job.id, wait)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::untyped(500, "Build job vanished."))?;
        match job.state {
            opr_build::JobState::Succeeded => job
                .result
                .and_then(|r| serde_json::from_value(r).ok())
                .ok_or_else(|| ApiError::untyped(500, "Build result is malformed.")),
            opr_build::JobState::Failed => Err(job
                .error
                .as_ref()
                .map(error_from_json)
                .unwrap_or_else(|| ApiError::typed(ErrorType::BuildFailed))),
            opr_build::JobState::Cancelled => Err(ApiError::with_message(
                ErrorType::BuildFailed,
                "Build was cancelled.",
            )),
            _ => Err(ApiError::untyped(
                500,
                "Timed out waiting for the build job.",
            )),
        }
    }

    /// Live or final output of a build job.
    pub async fn build_output(&self, job: &Job) -> Vec<Chunk> {
        if let Some(r) = &job.result {
            return serde_json::from_value(r["output"].clone()).unwrap_or_default();
        }
        if let Some(e) = &job.error {
            return vec![Chunk {
                timestamp: buildlog::format_timestamp(SystemTime::now()),
                content: e["message"].as_str().unwrap_or_default().to_string(),
            }];
        }
        let Some(id) = job
            .request
            .pointer("/create/runtimeId")
            .and_then(Value::as_str)
        else {
            return Vec::new();
        };
        let logging = self
            .cfg
            .work_dir
            .join(self.runtime_name(id))
            .join("logging");
        let logs = tokio::fs::read(logging.join("logs.txt"))
            .await
            .unwrap_or_default();
        let timings = tokio::fs::read_to_string(logging.join("timings.txt"))
            .await
            .unwrap_or_default();
        let start = job
            .started
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s))
            .unwrap_or_else(SystemTime::now);
        buildlog::parse_chunks(&logs, &timings, start)
    }
}

fn store_error(e: opr_build::StoreError) -> ApiError {
    ApiError::untyped(500, e.to_string())
}

/// The install step when a build names none: `npm ci` with a lockfile,
/// else `npm install`; `bun install` for Bun; `pip install -r
/// requirements.txt` into the package.
/// The step prints the command it chose, so the build log says which.
///
/// `npm ci --prefer-offline`: a lockfile pins versions and integrity, so a
/// tarball in the restored build cache is used without asking the registry
/// again. `npm install` keeps revalidating (without a lockfile a cached
/// package list could be stale). No audit or funding requests: they cost a
/// registry round trip per build and change nothing in the package.
///
/// When the helpers restored the dependency folder of an earlier build of
/// this cacheKey made from the same inputs (the dependency files, this
/// command, the toolchain: `OPR_DEPENDENCIES_REUSED=1`, runtime helpers
/// lib.sh), the step has nothing to do and says so. `npm ci` would delete
/// that folder and install it again.
pub fn default_install(image: &str) -> &'static str {
    match language_of_image(image) {
        Some(ImageLanguage::Node) => concat!(
            "if [ -f package.json ]; then ",
            "if [ \"${OPR_DEPENDENCIES_REUSED:-}\" = 1 ]; then ",
            "echo 'Install step skipped: node_modules restored from the build cache, ",
            "package files unchanged.'; ",
            "else ",
            "if [ -f package-lock.json ]; then set -- npm ci --prefer-offline; ",
            "else set -- npm install; fi; ",
            "set -- \"$@\" --no-audit --no-fund; ",
            "echo \"Install step: $*\"; \"$@\"; fi; fi"
        ),
        // Bun reads its own lockfile, else npm's or yarn's, and installs
        // into node_modules like npm.
        Some(ImageLanguage::Bun) => concat!(
            "if [ -f package.json ]; then ",
            "if [ \"${OPR_DEPENDENCIES_REUSED:-}\" = 1 ]; then ",
            "echo 'Install step skipped: node_modules restored from the build cache, ",
            "package files unchanged.'; ",
            "else ",
            "echo 'Install step: bun install'; ",
            "bun install; fi; fi"
        ),
        Some(ImageLanguage::Python) => concat!(
            "if [ -f requirements.txt ]; then ",
            "if [ \"${OPR_DEPENDENCIES_REUSED:-}\" = 1 ]; then ",
            "echo 'Install step skipped: runtime-env restored from the build cache, ",
            "requirements.txt unchanged.'; ",
            "else ",
            "echo 'Install step: pip install -r requirements.txt'; ",
            "pip install -r requirements.txt; fi; fi"
        ),
        None => "",
    }
}

/// The full build command: unpack the source, then the helpers' build.
pub fn build_command(archive_name: &str, install: &str) -> String {
    let unpack = if archive_name.ends_with(".zip") {
        "unzip -q /tmp/code.tar.gz -d /mnt/code"
    } else {
        "tar -xf /tmp/code.tar.gz -C /mnt/code"
    };
    let quoted = install
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('$', "\\$")
        .replace('`', "\\`");
    format!("{unpack} && bash helpers/build.sh \"{quoted}\"")
}

/// Packs a folder or a git checkout into an archive the build can use.
async fn prepare_source(
    exec: &Executor,
    job_id: &str,
    source: &Source,
) -> Result<PathBuf, ApiError> {
    let dir = exec.cfg.work_dir.join("build-sources");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::untyped(500, format!("Cannot prepare the source: {e}")))?;
    let out = dir.join(format!("{job_id}.tar.gz"));
    match source {
        Source::Archive { path } => {
            crate::storage::copy_atomically(Path::new(path), &out)
                .await
                .map_err(|_| {
                    ApiError::untyped(500, "Failed to copy source code to temporary directory")
                })?;
        }
        Source::Folder { path } => pack(PathBuf::from(path), out.clone()).await?,
        Source::Git { url, reference } => {
            let checkout = dir.join(format!("{job_id}.git"));
            let result = git_checkout(url, reference.as_deref(), &checkout).await;
            let packed = match result {
                Ok(()) => pack(checkout.clone(), out.clone()).await,
                Err(e) => Err(e),
            };
            let _ = tokio::fs::remove_dir_all(&checkout).await;
            packed?;
        }
    }
    Ok(out)
}

/// SIGKILLs a process group when dropped, unless disarmed (`.0 = None`):
/// git runs helpers (git-remote-http, ssh) as its children, which
/// `kill_on_drop` alone would leave holding the connection.
struct ProcessGroupGuard(Option<u32>);

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a negative pid signals that group only.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

async fn git_checkout(url: &str, reference: Option<&str>, into: &Path) -> Result<(), ApiError> {
    let run = |args: Vec<String>| async move {
        let cannot_run = |e: std::io::Error| {
            ApiError::with_message(ErrorType::BuildFailed, format!("Cannot run git: {e}"))
        };
        let child = tokio::process::Command::new("git")
            .args(&args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(cannot_run)?;
        // Declared before the wait, so dropped after it: a timeout or a
        // cancel (this future dropped) kills git's helpers too.
        let mut group = ProcessGroupGuard(child.id());
        let out = tokio::time::timeout(GIT_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                ApiError::with_message(ErrorType::BuildFailed, "git timed out fetching the source.")
            })?
            .map_err(cannot_run)?;
        group.0 = None; // ended by itself: its group id may be reused now
        if out.status.success() {
            Ok(())
        } else {
            Err(ApiError::with_message(
                ErrorType::BuildFailed,
                format!(
                    "git {} failed: {}",
                    args.first().map(String::as_str).unwrap_or(""),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ))
        }
    };
    if url.starts_with('-') || reference.is_some_and(|r| r.starts_with('-')) {
        return Err(ApiError::with_message(
            ErrorType::ExecutionBadRequest,
            "Invalid git source.",
        ));
    }
    let into_s = into.display().to_string();
    run(vec![
        "clone".into(),
        "--quiet".into(),
        "--".into(),
        url.into(),
        into_s.clone(),
    ])
    .await?;
    if let Some(r) = reference.filter(|r| !r.is_empty()) {
        run(vec![
            "-C".into(),
            into_s,
            "checkout".into(),
            "--quiet".into(),
            "--detach".into(),
            r.into(),
        ])
        .await?;
    }
    let _ = tokio::fs::remove_dir_all(into.join(".git")).await;
    Ok(())
}

async fn pack(folder: PathBuf, out: PathBuf) -> Result<(), ApiError> {
    tokio::task::spawn_blocking(move || pack_blocking(&folder, &out))
        .await
        .map_err(|_| ApiError::untyped(500, "Packing the source failed."))?
}

fn pack_blocking(folder: &Path, out: &Path) -> Result<(), ApiError> {
    let fail = |e: std::io::Error| {
        ApiError::with_message(
            ErrorType::BuildFailed,
            format!("Cannot pack {}: {e}", folder.display()),
        )
    };
    if !folder.is_dir() {
        return Err(ApiError::with_message(
            ErrorType::BuildFailed,
            format!("Source folder {} does not exist.", folder.display()),
        ));
    }
    let size = folder_size(folder);
    if size > MAX_SOURCE_BYTES {
        return Err(ApiError::with_message(
            ErrorType::BuildFailed,
            format!("Source folder is larger than {MAX_SOURCE_BYTES} bytes."),
        ));
    }
    let file = std::fs::File::create(out).map_err(fail)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    // Links are stored as links, never followed out of the folder.
    tar.follow_symlinks(false);
    tar.append_dir_all(".", folder).map_err(fail)?;
    tar.into_inner().map_err(fail)?.finish().map_err(fail)?;
    Ok(())
}

fn folder_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_from_json() {
        let s: Source =
            serde_json::from_value(json!({"type": "git", "url": "file:///r", "ref": "v1"}))
                .expect("git");
        assert_eq!(
            s,
            Source::Git {
                url: "file:///r".into(),
                reference: Some("v1".into())
            }
        );
        let s: Source =
            serde_json::from_value(json!({"type": "folder", "path": "/f"})).expect("folder");
        assert_eq!(s, Source::Folder { path: "/f".into() });
        assert!(serde_json::from_value::<Source>(json!({"type": "ftp"})).is_err());
    }

    #[test]
    fn build_commands_quote_the_install_step() {
        assert_eq!(
            build_command("code.tar.gz", "npm install"),
            "tar -xf /tmp/code.tar.gz -C /mnt/code && bash helpers/build.sh \"npm install\""
        );
        assert!(build_command("a.zip", "x").starts_with("unzip -q"));
        assert!(build_command("code.tar.gz", "echo \"$HOME\"").contains("\\\"\\$HOME\\\""));
    }

    #[test]
    fn default_install_steps_by_language() {
        assert!(default_install("openruntimes/node:v5-22").contains("npm ci"));
        assert!(default_install("python-3.12").contains("pip install -r requirements.txt"));
        assert!(default_install("openruntimes/bun:v5-1.1").contains("bun install"));
        // All skip themselves when the helpers restored the dependencies.
        for image in [
            "openruntimes/node:v5-22",
            "openruntimes/python:v5-3.12",
            "openruntimes/bun:v5-1.1",
        ] {
            assert!(
                default_install(image).contains("\"${OPR_DEPENDENCIES_REUSED:-}\" = 1"),
                "{image}"
            );
        }
        assert_eq!(default_install("php-8"), "");
    }

    #[test]
    fn errors_survive_the_store() {
        let e = ApiError::with_message(ErrorType::BuildFailed, "Build command exited with code 3.");
        let back = error_from_json(&error_json(&e));
        assert_eq!(
            (back.kind, back.code, back.message),
            (ErrorType::BuildFailed, 400, e.message)
        );
        let u = error_from_json(&error_json(&ApiError::untyped(503, "limit")));
        assert_eq!((u.kind, u.code), (ErrorType::GeneralUnknown, 503));
    }
}
