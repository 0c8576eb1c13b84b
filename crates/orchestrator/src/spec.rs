//! The values that cross the Orchestrator trait.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Labels every runtime carries (executor-api §7.5).
pub const LABEL_EXECUTOR: &str = "openruntimes-executor";
pub const LABEL_RUNTIME_ID: &str = "openruntimes-runtime-id";
/// Set on warm-pool runtimes (value: the image) until they are assigned.
pub const LABEL_POOL: &str = "opr-pool";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    Always,
    OnFailure,
    UnlessStopped,
}

impl RestartPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "no" => Some(Self::No),
            "always" => Some(Self::Always),
            "on-failure" => Some(Self::OnFailure),
            "unless-stopped" => Some(Self::UnlessStopped),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::Always => "always",
            Self::OnFailure => "on-failure",
            Self::UnlessStopped => "unless-stopped",
        }
    }
}

/// Host folders shared with the runtime (executor-api §7.4).
#[derive(Debug, Clone)]
pub struct Mounts {
    /// Seen at `/tmp`: holds `code.tar.gz` / `code.tar`.
    pub tmp: PathBuf,
    /// Seen at `/mnt/code`.
    pub code: PathBuf,
    /// Seen at `/mnt/logs`.
    pub logs: PathBuf,
    /// Seen at `/tmp/logging`.
    pub logging: PathBuf,
    /// Seen at `/cache` when the build cache is on.
    pub cache: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct RuntimeSpec {
    /// `<executor hostname>-<runtimeId>`: unique per backend.
    pub name: String,
    /// 32 hex characters (executor-api §6.3).
    pub hostname: String,
    pub image: String,
    /// argv; run from `/usr/local/server`.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub mounts: Mounts,
    pub labels: BTreeMap<String, String>,
    pub cpus: f64,
    pub memory_mb: u64,
    /// Processes allowed in the runtime (fork-bomb guard).
    pub pids_limit: u64,
    pub restart: RestartPolicy,
    pub network: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub exit_code: i32,
    /// stdout followed by stderr.
    pub output: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeInfo {
    pub name: String,
    /// `running`, `exited`, …
    pub status: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeStats {
    pub name: String,
    /// Fraction of one CPU × 100.
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
}
