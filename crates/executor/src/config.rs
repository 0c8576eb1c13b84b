//! `OPR_EXECUTOR_*` configuration (executor-api §14) plus opr's own
//! settings. Flags of `opr executor` override the environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    pub listen: SocketAddr,
    pub development: bool,
    pub secret: String,
    pub networks: Vec<String>,
    pub images: Vec<String>,
    pub runtime_versions: Vec<String>,
    pub inactive_threshold: Duration,
    pub maintenance_interval: Duration,
    pub retry_attempts: u32,
    pub retry_delay: Duration,
    pub version: String,
    /// Prefix of runtime names (executor-api §1).
    pub hostname: String,
    /// Per-runtime work directories live here (upstream: `/tmp`).
    pub work_dir: PathBuf,
    /// Root of the build cache storage (executor-api §7.11).
    pub build_cache_dir: PathBuf,
    /// Cap on runtimes at once (opr extension).
    pub max_runtimes: usize,
    /// Processes per runtime (fork-bomb guard, opr extension).
    pub pids_limit: u64,
    /// Generic runtimes kept started per image (opr extension, docs/executor.md).
    pub warm_pool: Vec<(String, usize)>,
    /// Build workers (docs/builds.md).
    pub build_workers: usize,
    /// The durable build queue's database.
    pub build_db: PathBuf,
    /// Size cap of the build cache; least recently used artifacts go first.
    pub build_cache_max_bytes: u64,
    /// Process backend: the build folder (`/usr/local/build`) of each
    /// runtime is a tmpfs of this many MiB; 0 keeps it on disk
    /// (docs/builds.md).
    pub build_tmpfs_mb: u64,
}

/// Reads the environment. Unknown or malformed values fall back to the
/// defaults of executor-api §14.
pub fn from_env(env: &BTreeMap<String, String>) -> ExecutorConfig {
    let get = |k: &str| env.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let secs = |k: &str, default: u64| {
        get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let list = |k: &str, default: &str| -> Vec<String> {
        get(k)
            .unwrap_or(default)
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let hostname = get("OPR_EXECUTOR_HOSTNAME")
        .map(str::to_string)
        .unwrap_or_else(system_hostname);
    let work_dir = get("OPR_EXECUTOR_WORK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/opr-executor"));
    let inactive = get("OPR_EXECUTOR_INACTIVE_THRESHOLD")
        .or_else(|| get("OPR_EXECUTOR_INACTIVE_TRESHOLD"))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(60);
    ExecutorConfig {
        listen: get("OPR_EXECUTOR_LISTEN")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9900))),
        development: get("OPR_EXECUTOR_ENV") == Some("development"),
        secret: env.get("OPR_EXECUTOR_SECRET").cloned().unwrap_or_default(),
        networks: list("OPR_EXECUTOR_NETWORK", "openruntimes-runtimes"),
        images: list("OPR_EXECUTOR_IMAGES", ""),
        runtime_versions: list("OPR_EXECUTOR_RUNTIME_VERSIONS", "v5"),
        inactive_threshold: Duration::from_secs(inactive),
        maintenance_interval: Duration::from_secs(
            secs("OPR_EXECUTOR_MAINTENANCE_INTERVAL", 3600).max(1),
        ),
        retry_attempts: secs("OPR_EXECUTOR_RETRY_ATTEMPTS", 5) as u32,
        retry_delay: Duration::from_millis(secs("OPR_EXECUTOR_RETRY_DELAY_MS", 500)),
        version: get("OPR_EXECUTOR_VERSION").unwrap_or("unknown").to_string(),
        hostname,
        build_cache_dir: get("OPR_EXECUTOR_BUILD_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| work_dir.join("build-cache")),
        work_dir: work_dir.clone(),
        max_runtimes: secs("OPR_EXECUTOR_MAX_RUNTIMES", 100).max(1) as usize,
        pids_limit: secs("OPR_EXECUTOR_PIDS_LIMIT", 512).max(16),
        warm_pool: parse_warm_pool(get("OPR_EXECUTOR_WARM_POOL").unwrap_or("")),
        build_workers: get("OPR_EXECUTOR_BUILD_WORKERS")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            })
            .clamp(1, 64),
        build_db: get("OPR_EXECUTOR_BUILD_DB")
            .map(PathBuf::from)
            .unwrap_or_else(|| work_dir.join("builds.db")),
        build_cache_max_bytes: secs("OPR_EXECUTOR_BUILD_CACHE_MAX_BYTES", 2 << 30),
        build_tmpfs_mb: secs("OPR_EXECUTOR_BUILD_TMPFS_MB", 1024),
    }
}

impl ExecutorConfig {
    /// Moves the work folder (a `--work-dir` flag); paths derived from it
    /// follow unless the environment set them.
    pub fn set_work_dir(&mut self, dir: PathBuf, env: &BTreeMap<String, String>) {
        let set = |k: &str| env.get(k).is_some_and(|v| !v.trim().is_empty());
        if !set("OPR_EXECUTOR_BUILD_CACHE_DIR") {
            self.build_cache_dir = dir.join("build-cache");
        }
        if !set("OPR_EXECUTOR_BUILD_DB") {
            self.build_db = dir.join("builds.db");
        }
        self.work_dir = dir;
    }
}

/// `image=count,image=count`; a bare image means one.
pub fn parse_warm_pool(raw: &str) -> Vec<(String, usize)> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter_map(|item| match item.rsplit_once('=') {
            Some((image, n)) => n
                .trim()
                .parse::<usize>()
                .ok()
                .map(|n| (image.trim().to_string(), n.min(64))),
            None => Some((item.to_string(), 1)),
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "opr-executor".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match String::from_utf8_lossy(&buf[..end]).trim() {
        "" => "opr-executor".to_string(),
        h => h.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let c = from_env(&BTreeMap::new());
        assert_eq!(c.inactive_threshold, Duration::from_secs(60));
        assert_eq!(c.maintenance_interval, Duration::from_secs(3600));
        assert_eq!(c.runtime_versions, ["v5"]);
        assert_eq!(c.retry_attempts, 5);
        assert_eq!(c.retry_delay, Duration::from_millis(500));
        assert_eq!(c.version, "unknown");
        assert!(c.secret.is_empty());
        assert_eq!(c.listen.port(), 9900);
    }

    #[test]
    fn old_misspelling_of_threshold_is_accepted() {
        let env = BTreeMap::from([(
            "OPR_EXECUTOR_INACTIVE_TRESHOLD".to_string(),
            "5".to_string(),
        )]);
        assert_eq!(from_env(&env).inactive_threshold, Duration::from_secs(5));
    }

    #[test]
    fn moving_the_work_dir_moves_derived_paths() {
        let mut c = from_env(&BTreeMap::new());
        c.set_work_dir(PathBuf::from("/w"), &BTreeMap::new());
        assert_eq!(
            (c.build_db.as_path(), c.build_cache_dir.as_path()),
            (
                std::path::Path::new("/w/builds.db"),
                std::path::Path::new("/w/build-cache")
            )
        );
    }

    #[test]
    fn warm_pool_list() {
        assert_eq!(
            parse_warm_pool("openruntimes/node:v5-22=2, python-3.12 ,bad=x,zero=0"),
            vec![
                ("openruntimes/node:v5-22".to_string(), 2),
                ("python-3.12".to_string(), 1)
            ]
        );
    }
}
