//! The process backend (DESIGN §3, executor-api §19.4 "Local processes"):
//! each runtime is a bubblewrap sandbox presenting the container layout,
//! limited by its own cgroup, listening on an allocated port on 127.0.0.1,
//! recorded on disk so a later backend can list and clean it up.
//!
//! - [`sandbox`]: the bwrap argv (pure);
//! - [`cgroup`]: limits on cgroup v1 or v2;
//! - [`state`]: the per-runtime record;
//! - [`ports`]: port allocation;
//! - [`spawn`]: starting bwrap; [`exec`]: `execute`;
//! - [`supervise`]: restart policy; [`output`]: the output log.

pub mod cgroup;
pub mod exec;
pub mod output;
pub mod ports;
pub mod sandbox;
pub mod spawn;
pub mod state;
pub mod supervise;

use crate::{
    language_of_image, ExecOutcome, Orchestrator, OrchestratorError, Result, RuntimeInfo,
    RuntimeSpec, RuntimeStats,
};
use async_trait::async_trait;
use cgroup::{CgroupFs, Hierarchy, HostFs, Limits, RuntimeCgroup};
use ports::PortAllocator;
use sandbox::{Layout, RuntimeDirs, SystemEntry};
use spawn::Spawner;
use state::{RuntimeRecord, StateDir};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long `remove` waits for a sandbox's processes to be gone.
const KILL_DEADLINE: Duration = Duration::from_secs(10);

/// Writable per-runtime folders under `<state_dir>/<name>/`.
const FUNCTION_DIR: &str = "function";
const BUILD_DIR: &str = "build";
const CACHE_DIR: &str = "cache";
const TELEMETRY_DIR: &str = "telemetry";

#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Records, output logs and per-runtime writable folders. Never visible
    /// inside a sandbox.
    pub state_dir: PathBuf,
    /// Holds one folder per language (`node/`, `python/`), each with
    /// `helpers/`, `hooks/` and `src/`.
    pub runtimes_dir: PathBuf,
    /// The `opr-runtime` executable, seen at `/usr/local/bin/opr-runtime`.
    pub runtime_binary: PathBuf,
    /// Recorded with each runtime.
    pub executor_name: String,
    /// When true (the default), `run` fails if the cgroup limits cannot be
    /// set (no usable hierarchy, not root). When false, runtimes then run
    /// without limits.
    pub require_limits: bool,
    /// Folder for runtime cgroups, relative to each hierarchy's root.
    /// Default: `<executor's own cgroup>/opr` on v1, `/opr` on v2.
    pub cgroup_parent: Option<String>,
    /// When non-zero, each runtime's build folder (`/usr/local/build`) is a
    /// tmpfs of at most this many bytes instead of a folder on disk: an
    /// install writes thousands of small files there, which costs far less
    /// in memory, and the folder is thrown away with the runtime. Its pages
    /// count against the runtime's memory limit. 0 (the default here) keeps
    /// it on disk; also when the mount is refused (not root).
    pub build_tmpfs_bytes: u64,
}

impl ProcessConfig {
    pub fn new(
        state_dir: impl Into<PathBuf>,
        runtimes_dir: impl Into<PathBuf>,
        runtime_binary: impl Into<PathBuf>,
        executor_name: impl Into<String>,
    ) -> Self {
        ProcessConfig {
            state_dir: state_dir.into(),
            runtimes_dir: runtimes_dir.into(),
            runtime_binary: runtime_binary.into(),
            executor_name: executor_name.into(),
            require_limits: true,
            cgroup_parent: None,
            build_tmpfs_bytes: 0,
        }
    }
}

/// One known runtime: started by this backend, or found on disk.
struct Entry {
    /// Held by `run` while it starts the runtime and by `remove`: a removal
    /// waits for a start in progress instead of racing it.
    busy: tokio::sync::Mutex<()>,
    record: Mutex<RuntimeRecord>,
    /// Dropping or setting it stops the supervisor.
    stop: Mutex<Option<watch::Sender<bool>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    removing: AtomicBool,
}

impl Entry {
    fn new(record: RuntimeRecord) -> Arc<Self> {
        Arc::new(Entry {
            busy: tokio::sync::Mutex::new(()),
            record: Mutex::new(record),
            stop: Mutex::new(None),
            task: Mutex::new(None),
            removing: AtomicBool::new(false),
        })
    }

    fn record(&self) -> RuntimeRecord {
        lock(&self.record).clone()
    }
}

/// Poisoning only means another thread panicked mid-update; the data (plain
/// records) is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn failed(msg: impl Into<String>) -> OrchestratorError {
    OrchestratorError::Failed(msg.into())
}

pub struct ProcessBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: ProcessConfig,
    bwrap: PathBuf,
    state: StateDir,
    hierarchy: Option<Hierarchy>,
    system: Vec<SystemEntry>,
    ports: PortAllocator,
    spawner: Spawner,
    runtimes: Mutex<HashMap<String, Arc<Entry>>>,
    /// Last CPU sample per runtime: (usage ns, when).
    samples: Mutex<HashMap<String, (u64, Instant)>>,
}

/// `bwrap` from PATH, or the usual place.
fn find_bwrap() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("bwrap"))
            .find(|p| p.is_file())
    });
    from_path.or_else(|| {
        let p = PathBuf::from("/usr/bin/bwrap");
        p.is_file().then_some(p)
    })
}

/// The host's system folders as they are (symlinks stay symlinks).
fn system_entries() -> Vec<SystemEntry> {
    sandbox::SYSTEM_DIRS
        .iter()
        .filter_map(|d| {
            let path = PathBuf::from(d);
            let meta = std::fs::symlink_metadata(&path).ok()?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).ok()?;
                Some(SystemEntry::Symlink { path, target })
            } else if meta.is_dir() {
                Some(SystemEntry::Dir(path))
            } else {
                None
            }
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ProcessBackend {
    /// Checks bubblewrap, detects cgroups and loads the records left in
    /// `state_dir` by an earlier backend (their sandboxes died with it:
    /// they list as `exited` until removed). Must be called within a tokio
    /// runtime.
    pub fn new(config: ProcessConfig) -> Result<Self> {
        const NO_BWRAP: &str = "bubblewrap is not installed: apt-get install bubblewrap";
        let bwrap = find_bwrap().ok_or_else(|| failed(NO_BWRAP))?;
        match std::process::Command::new(&bwrap)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(failed(format!(
                    "{NO_BWRAP} ({} --version failed: {})",
                    bwrap.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
            Err(e) => return Err(failed(format!("{NO_BWRAP} ({e})"))),
        }
        if !config.runtime_binary.is_file() {
            return Err(failed(format!(
                "runtime binary {} not found",
                config.runtime_binary.display()
            )));
        }
        if !config.runtimes_dir.is_dir() {
            return Err(failed(format!(
                "runtimes folder {} not found",
                config.runtimes_dir.display()
            )));
        }
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| failed("ProcessBackend::new must be called within a tokio runtime"))?;
        let spawner = Spawner::start(handle).map_err(|e| failed(format!("spawner thread: {e}")))?;

        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let hierarchy = cgroup::detect(
            &HostFs,
            &mountinfo,
            &self_cgroup,
            config.cgroup_parent.as_deref(),
        );
        if hierarchy.is_none() && config.require_limits {
            return Err(failed(
                "no usable cgroup hierarchy for resource limits: need the memory, cpu and pids \
                 controllers (cgroup v1 mounts, or v2 with them available); set \
                 require_limits = false to run without limits",
            ));
        }

        let state = StateDir::open(&config.state_dir).map_err(|e| {
            failed(format!(
                "cannot open state folder {}: {e}",
                config.state_dir.display()
            ))
        })?;
        let (records, broken) = state
            .load_all()
            .map_err(|e| failed(format!("cannot read state folder: {e}")))?;
        // Folders without a record: a crash in the middle of `run`. Nothing
        // can list them, so clean them now.
        for name in broken {
            if let Some(h) = &hierarchy {
                let _ = cgroup::remove(&HostFs, &h.paths(&name));
            }
            let _ = state.remove(&name);
        }
        let ports = PortAllocator::with_taken(records.iter().map(|r| r.port));
        let runtimes = records
            .into_iter()
            .map(|r| (r.name.clone(), Entry::new(r)))
            .collect();

        Ok(ProcessBackend {
            inner: Arc::new(Inner {
                config,
                bwrap,
                state,
                hierarchy,
                system: system_entries(),
                ports,
                spawner,
                runtimes: Mutex::new(runtimes),
                samples: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Which cgroup version limits runtimes (`None`: no limits).
    pub fn cgroup_version(&self) -> Option<cgroup::Version> {
        self.inner.hierarchy.as_ref().map(Hierarchy::version)
    }
}

impl Inner {
    fn entry(&self, name: &str) -> Result<Arc<Entry>> {
        lock(&self.runtimes)
            .get(name)
            .filter(|e| !e.removing.load(Ordering::Acquire))
            .cloned()
            .ok_or_else(|| OrchestratorError::NotFound(name.to_owned()))
    }

    fn runtime_root(&self, language: &str) -> PathBuf {
        self.config.runtimes_dir.join(language)
    }

    /// Blocking part of `run`: folders, cgroup, argv, record.
    fn prepare(&self, spec: &RuntimeSpec, mut rec: RuntimeRecord) -> Result<RuntimeRecord> {
        let name = &spec.name;
        // A folder without an entry is a leftover: start clean.
        self.state
            .remove(name)
            .map_err(|e| failed(format!("cannot clear old state of {name}: {e}")))?;
        let dir = self
            .state
            .create_runtime_dirs(name, &[FUNCTION_DIR, BUILD_DIR, CACHE_DIR, TELEMETRY_DIR])
            .map_err(|e| failed(format!("cannot create state folder for {name}: {e}")))?;
        if self.config.build_tmpfs_bytes > 0 {
            if let Err(e) = mount_tmpfs(&dir.join(BUILD_DIR), self.config.build_tmpfs_bytes) {
                tracing::warn!(runtime = %name, "build folder stays on disk: cannot mount a tmpfs: {e}");
            }
        }
        // Docker creates missing bind sources; so do we.
        let m = &spec.mounts;
        for p in [&m.tmp, &m.code, &m.logs, &m.logging]
            .into_iter()
            .chain(m.cache.as_ref())
        {
            std::fs::create_dir_all(p)
                .map_err(|e| failed(format!("cannot create mount folder {}: {e}", p.display())))?;
        }

        let root = self.runtime_root(&rec.language);
        let mut src_entries: Vec<String> = match std::fs::read_dir(root.join("src")) {
            Ok(rd) => rd
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n != "function")
                .collect(),
            Err(_) => Vec::new(),
        };
        src_entries.sort();
        let dirs = RuntimeDirs {
            function: dir.join(FUNCTION_DIR),
            build: dir.join(BUILD_DIR),
            cache: dir.join(CACHE_DIR),
            telemetry: dir.join(TELEMETRY_DIR),
        };
        let layout = Layout {
            system: &self.system,
            runtime_root: &root,
            has_helpers: root.join("helpers").is_dir(),
            has_hooks: root.join("hooks").is_dir(),
            src_entries: &src_entries,
            runtime_binary: &self.config.runtime_binary,
            dirs: &dirs,
            mounts: &spec.mounts,
            hostname: &spec.hostname,
        };
        rec.sandbox = sandbox::sandbox_args(&layout).map_err(|e| failed(e.to_string()))?;

        let limits = Limits::from_spec(spec.cpus, spec.memory_mb, spec.pids_limit);
        rec.cgroup = match &self.hierarchy {
            Some(h) => match h.create(&HostFs, name, &limits) {
                Ok(cg) => Some(cg),
                Err(e) if self.config.require_limits => {
                    return Err(failed(format!(
                        "cannot set resource limits for {name} (cgroups need root): {e}"
                    )))
                }
                Err(e) => {
                    tracing::warn!(runtime = %name, "running without limits: {e}");
                    None
                }
            },
            None => None,
        };
        if let Err(e) = self.state.save(&rec) {
            if let Some(cg) = &rec.cgroup {
                let _ = cgroup::remove(&HostFs, cg);
            }
            return Err(failed(format!("cannot write state of {name}: {e}")));
        }
        Ok(rec)
    }

    /// Kills what is left of a runtime, removes its cgroup and state.
    /// Blocking: polls until the processes are gone.
    fn cleanup(&self, rec: &RuntimeRecord) -> std::result::Result<(), String> {
        if let Some(cg) = &rec.cgroup {
            kill_cgroup(&HostFs, cg)?;
        }
        self.state
            .remove(&rec.name)
            .map_err(|e| format!("cannot delete state of {}: {e}", rec.name))
    }

    /// Blocking work off the async threads.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| failed(format!("blocking task: {e}")))?
    }

    /// Undoes a failed `run`.
    async fn abandon(self: &Arc<Self>, rec: RuntimeRecord) {
        let name = rec.name.clone();
        let port = rec.port;
        let r = self
            .blocking(move |inner| inner.cleanup(&rec).map_err(OrchestratorError::Failed))
            .await;
        if let Err(e) = r {
            tracing::warn!(runtime = %name, "cleanup after failed run: {e}");
        }
        lock(&self.runtimes).remove(&name);
        self.ports.release(port);
    }
}

/// Mounts a tmpfs of at most `bytes` on `dir` (an empty folder), world
/// readable like the image folder it stands for. [`StateDir::remove`]
/// detaches it again.
fn mount_tmpfs(dir: &Path, bytes: u64) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let options = std::ffi::CString::new(format!("size={bytes},mode=0755"))?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives
    // the call.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            options.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// SIGKILLs every process in `cg` until it is empty, then removes it.
fn kill_cgroup(fs: &dyn CgroupFs, cg: &RuntimeCgroup) -> std::result::Result<(), String> {
    let deadline = Instant::now() + KILL_DEADLINE;
    let mut pause = Duration::from_millis(1);
    loop {
        if !cgroup::kill_all(fs, cg) {
            for pid in cgroup::procs(fs, cg) {
                spawn::kill_pid(pid);
            }
        }
        match cgroup::remove(fs, cg) {
            Ok(()) => return Ok(()),
            // Busy until the killed processes have exited.
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("cannot remove cgroup: {e}"));
            }
            Err(_) => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Starts the sandbox of `rec` with its output on one pipe.
async fn launch(
    spawner: &Spawner,
    bwrap: &Path,
    state: &StateDir,
    rec: &RuntimeRecord,
) -> std::io::Result<supervise::Started> {
    let (tx, rx) = tokio::net::unix::pipe::pipe()?;
    let w = tx.into_blocking_fd()?;
    let w2 = w.try_clone()?;
    let procs = rec
        .cgroup
        .as_ref()
        .map(RuntimeCgroup::join_files)
        .unwrap_or_default();
    let log = output::open_log(&state.log_path(&rec.name))?;
    let argv = sandbox::with_command(&rec.sandbox, &rec.command);
    let mut cmd = spawn::bwrap_command(bwrap, &argv, &rec.env, &procs)?;
    cmd.stdout(w).stderr(w2);
    let child = spawner.spawn(cmd).await?;
    Ok((child, rx, log))
}

/// Puts the running pid into the record (memory and disk).
fn note_started(state: &StateDir, entry: &Entry, pid: Option<u32>) {
    let pid = pid.and_then(|p| i32::try_from(p).ok());
    let rec = {
        let mut rec = lock(&entry.record);
        rec.pid = pid;
        rec.pid_start = pid.and_then(state::process_start_time);
        rec.clone()
    };
    if let Err(e) = state.save(&rec) {
        tracing::warn!(runtime = %rec.name, "cannot write state: {e}");
    }
}

#[async_trait]
impl Orchestrator for ProcessBackend {
    fn kind(&self) -> &'static str {
        "process"
    }

    async fn ensure_image(&self, image: &str) -> Result<()> {
        match language_of_image(image) {
            Some(lang) if self.inner.runtime_root(lang.name()).is_dir() => Ok(()),
            _ => Err(OrchestratorError::MissingImage(image.to_owned())),
        }
    }

    async fn run(&self, spec: &RuntimeSpec) -> Result<()> {
        let inner = &self.inner;
        if !state::valid_name(&spec.name) {
            return Err(failed(format!("invalid runtime name {:?}", spec.name)));
        }
        let language = language_of_image(&spec.image)
            .filter(|l| inner.runtime_root(l.name()).is_dir())
            .ok_or_else(|| OrchestratorError::MissingImage(spec.image.clone()))?;
        if spec.command.is_empty() {
            return Err(failed("empty command"));
        }

        let port = inner
            .ports
            .allocate()
            .map_err(|e| failed(format!("port: {e}")))?;
        let spec_env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let rec = RuntimeRecord {
            name: spec.name.clone(),
            executor: inner.config.executor_name.clone(),
            labels: spec.labels.clone(),
            image: spec.image.clone(),
            language: language.name().to_owned(),
            hostname: spec.hostname.clone(),
            port,
            restart: spec.restart.as_str().to_owned(),
            created_ms: now_ms(),
            pid: None,
            pid_start: None,
            sandbox: Vec::new(),
            command: spec.command.clone(),
            env: sandbox::merge_env(&sandbox::base_env(port, language.name()), &spec_env),
            cgroup: None,
        };
        // Reserve the name first: concurrent runs of one name conflict.
        let entry = Entry::new(rec.clone());
        let _busy = entry
            .busy
            .try_lock()
            .map_err(|_| failed("new runtime entry is locked"))?;
        {
            let mut map = lock(&inner.runtimes);
            if map.contains_key(&spec.name) {
                inner.ports.release(port);
                return Err(OrchestratorError::AlreadyExists(spec.name.clone()));
            }
            map.insert(spec.name.clone(), entry.clone());
        }

        // Folder and cgroup creation take a few ms of syscalls (cgroup mkdir
        // waits for RCU): off the async threads.
        let prepared = {
            let spec = spec.clone();
            let rec = rec.clone();
            inner.blocking(move |i| i.prepare(&spec, rec)).await
        };
        let rec = match prepared {
            Ok(r) => r,
            Err(e) => {
                inner.abandon(rec).await;
                return Err(e);
            }
        };
        *lock(&entry.record) = rec.clone();

        let started = match launch(&inner.spawner, &inner.bwrap, &inner.state, &rec).await {
            Ok(s) => s,
            Err(e) => {
                inner.abandon(rec).await;
                return Err(failed(format!("failed to start bwrap: {e}")));
            }
        };
        note_started(&inner.state, &entry, started.0.id());

        let (stop_tx, stop_rx) = watch::channel(false);
        let relaunch = {
            let spawner = inner.spawner.clone();
            let bwrap = inner.bwrap.clone();
            let state = inner.state.clone();
            // Weak: a removed runtime is not kept alive by its supervisor.
            let entry = Arc::downgrade(&entry);
            move || {
                let spawner = spawner.clone();
                let bwrap = bwrap.clone();
                let state = state.clone();
                let entry = entry.clone();
                async move {
                    let entry = entry
                        .upgrade()
                        .ok_or_else(|| std::io::Error::other("runtime removed"))?;
                    let rec = entry.record();
                    let started = launch(&spawner, &bwrap, &state, &rec).await?;
                    note_started(&state, &entry, started.0.id());
                    Ok(started)
                }
            }
        };
        let task = tokio::spawn(supervise::supervise(
            started,
            supervise::Supervised {
                policy: spec.restart,
                log: inner.state.log_path(&spec.name),
                stop: stop_rx,
                relaunch,
            },
        ));
        *lock(&entry.stop) = Some(stop_tx);
        *lock(&entry.task) = Some(task);
        Ok(())
    }

    async fn execute(
        &self,
        name: &str,
        argv: &[String],
        env: &[(String, String)],
        timeout: Option<Duration>,
    ) -> Result<ExecOutcome> {
        let inner = &self.inner;
        let rec = inner.entry(name)?.record();
        if !rec.is_alive() {
            return Err(failed(format!("runtime {name} is not running")));
        }
        if argv.is_empty() {
            return Err(failed("empty command"));
        }
        let env = sandbox::merge_env(&rec.env, env);
        let procs = rec
            .cgroup
            .as_ref()
            .map(RuntimeCgroup::join_files)
            .unwrap_or_default();
        let cmd = spawn::bwrap_command(
            &inner.bwrap,
            &sandbox::with_command(&rec.sandbox, argv),
            &env,
            &procs,
        )
        .map_err(|e| failed(format!("exec: {e}")))?;
        exec::run(&inner.spawner, cmd, timeout).await
    }

    async fn remove(&self, name: &str) -> Result<()> {
        let inner = &self.inner;
        let entry = inner.entry(name)?;
        let _busy = entry.busy.lock().await;
        // A failed start has dropped the entry meanwhile.
        let current = lock(&inner.runtimes)
            .get(name)
            .is_some_and(|e| Arc::ptr_eq(e, &entry));
        if !current || entry.removing.swap(true, Ordering::AcqRel) {
            return Err(OrchestratorError::NotFound(name.to_owned()));
        }
        // Stop the supervisor first so nothing restarts the sandbox.
        if let Some(stop) = lock(&entry.stop).take() {
            stop.send_replace(true);
        }
        let rec = entry.record();
        if let (Some(pid), true) = (rec.pid, rec.is_alive()) {
            spawn::kill_group(pid);
        }
        let task = lock(&entry.task).take();
        if let Some(mut task) = task {
            if tokio::time::timeout(KILL_DEADLINE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        let port = rec.port;
        let result = inner
            .blocking(move |i| i.cleanup(&rec).map_err(OrchestratorError::Failed))
            .await;
        lock(&inner.runtimes).remove(name);
        lock(&inner.samples).remove(name);
        inner.ports.release(port);
        result
    }

    async fn list(&self, label: &str, value: &str) -> Result<Vec<RuntimeInfo>> {
        let entries: Vec<Arc<Entry>> = lock(&self.inner.runtimes).values().cloned().collect();
        let mut out: Vec<RuntimeInfo> = entries
            .iter()
            .filter_map(|e| {
                let rec = e.record();
                if rec.labels.get(label).map(String::as_str) != Some(value) {
                    return None;
                }
                let status = if e.removing.load(Ordering::Acquire) {
                    "removing"
                } else if rec.pid.is_none() {
                    // Being prepared, not started yet.
                    "created"
                } else if rec.is_alive() {
                    "running"
                } else {
                    "exited"
                };
                Some(RuntimeInfo {
                    name: rec.name,
                    status: status.to_owned(),
                    labels: rec.labels,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn address(&self, name: &str) -> Result<SocketAddr> {
        let port = lock(&self.inner.entry(name)?.record).port;
        Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    async fn stats(&self) -> Result<Vec<RuntimeStats>> {
        self.inner.blocking(|i| Ok(i.stats())).await
    }

    async fn set_limits(&self, name: &str, cpus: f64, memory_mb: u64) -> Result<()> {
        let entry = self.inner.entry(name)?;
        let rec = lock(&entry.record).clone();
        let Some(cg) = rec.cgroup else {
            return Err(failed(format!("runtime {name} has no cgroup to update")));
        };
        self.inner
            .blocking(move |_| {
                cgroup::update(&HostFs, &cg, cpus, memory_mb)
                    .map_err(|e| failed(format!("cannot change limits: {e}")))
            })
            .await
    }

    /// All images of one language share warm-pool runtimes here.
    fn pool_key(&self, image: &str) -> String {
        crate::language_of_image(image).map_or_else(|| image.to_owned(), |l| l.name().to_owned())
    }

    async fn logs(&self, name: &str, max_bytes: usize) -> Result<String> {
        self.inner.entry(name)?;
        let path = self.inner.state.log_path(name);
        let name = name.to_owned();
        self.inner
            .blocking(move |_| {
                output::tail(&path, max_bytes)
                    .map_err(|e| failed(format!("cannot read logs of {name}: {e}")))
            })
            .await
    }
}

impl Inner {
    /// CPU over the time since the previous call (or since creation) and
    /// memory, from each runtime's cgroup. Blocking (cgroup file reads).
    fn stats(&self) -> Vec<RuntimeStats> {
        let recs: Vec<RuntimeRecord> = lock(&self.runtimes)
            .values()
            .filter(|e| !e.removing.load(Ordering::Acquire))
            .map(|e| e.record())
            .collect();
        let now = Instant::now();
        let wall_now_ms = now_ms();
        let mut out: Vec<RuntimeStats> = recs
            .into_iter()
            .map(|rec| {
                let (cpu_ns, memory_bytes) = match &rec.cgroup {
                    Some(cg) => (
                        cgroup::cpu_usage_ns(&HostFs, cg),
                        cgroup::memory_bytes(&HostFs, cg),
                    ),
                    None => (None, None),
                };
                let cpu_percent = cpu_ns.map(|ns| {
                    let prev = lock(&self.samples).insert(rec.name.clone(), (ns, now));
                    let (prev_ns, elapsed) = match prev {
                        Some((p, at)) => (p, now.duration_since(at)),
                        None => (
                            0,
                            Duration::from_millis(wall_now_ms.saturating_sub(rec.created_ms)),
                        ),
                    };
                    let secs = elapsed.as_secs_f64();
                    if secs <= 0.0 {
                        0.0
                    } else {
                        ns.saturating_sub(prev_ns) as f64 / 1e9 / secs * 100.0
                    }
                });
                RuntimeStats {
                    name: rec.name,
                    cpu_percent,
                    memory_bytes,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

impl Drop for ProcessBackend {
    /// Runtimes live as long as the backend (as `--die-with-parent` ties
    /// them to the executor process): stop the supervisors and kill the
    /// sandboxes now. Records stay on disk for the next backend to list
    /// and remove.
    fn drop(&mut self) {
        let mut killed = Vec::new();
        for entry in lock(&self.inner.runtimes).values() {
            lock(&entry.stop).take();
            let rec = entry.record();
            if let (Some(pid), true) = (rec.pid, rec.is_alive()) {
                spawn::kill_group(pid);
                killed.push(rec);
            }
        }
        // A signal is delivered asynchronously: wait (briefly) until the
        // sandboxes are really dead, so whoever looks next sees them exited.
        let deadline = Instant::now() + Duration::from_secs(2);
        while killed.iter().any(RuntimeRecord::is_alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
