//! How the executor runs runtimes: one trait (executor-api §19), several
//! backends. The orchestrator is the source of truth for what runs; the
//! executor's registry is a cache of it (DESIGN §3).

#[cfg(feature = "docker")]
pub mod docker;
pub mod image;
pub mod process;
mod spec;
#[cfg(feature = "docker")]
pub mod swarm;

pub use image::{language_of_image, ImageLanguage};
pub use spec::*;

use async_trait::async_trait;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// executor-api §7.5: the image is unknown and cannot be pulled.
    #[error("Missing image \"{0}\" and failed to pull it.")]
    MissingImage(String),
    #[error("runtime {0} already exists")]
    AlreadyExists(String),
    #[error("runtime {0} not found")]
    NotFound(String),
    /// `execute` ran past its timeout (a distinct outcome, executor-api §19.2).
    #[error("Operation timed out.")]
    Timeout,
    #[error("{0}")]
    Failed(String),
}

pub type Result<T> = std::result::Result<T, OrchestratorError>;

#[async_trait]
pub trait Orchestrator: Send + Sync + 'static {
    /// Short name for logs and the health report: `process`, `docker`, …
    fn kind(&self) -> &'static str;

    /// Makes sure `image` can be run (pull or build it, or map it to a
    /// language); `MissingImage` when it cannot.
    async fn ensure_image(&self, image: &str) -> Result<()>;

    /// Creates and starts a runtime. Returns once the process or container
    /// is started, not when its port answers.
    async fn run(&self, spec: &RuntimeSpec) -> Result<()>;

    /// Runs `argv` inside the runtime, from its working directory
    /// (`/usr/local/server`). A non-zero exit is an outcome, not an error.
    async fn execute(
        &self,
        name: &str,
        argv: &[String],
        env: &[(String, String)],
        timeout: Option<Duration>,
    ) -> Result<ExecOutcome>;

    /// Force-removes a runtime; `NotFound` when there is none.
    async fn remove(&self, name: &str) -> Result<()>;

    /// Every runtime carrying `label` = `value`, in any state.
    async fn list(&self, label: &str, value: &str) -> Result<Vec<RuntimeInfo>>;

    /// Where the runtime's port 3000 is reached from the executor.
    async fn address(&self, name: &str) -> Result<SocketAddr>;

    /// CPU use per runtime, for the health report (executor-api §5).
    async fn stats(&self) -> Result<Vec<RuntimeStats>>;

    /// What the runtime printed (its container output), at most `max_bytes`
    /// from the end.
    async fn logs(&self, name: &str, max_bytes: usize) -> Result<String>;

    /// Changes the CPU and memory limits of a running runtime (a warm-pool
    /// runtime gets the function's limits when it is assigned).
    async fn set_limits(&self, name: &str, cpus: f64, memory_mb: u64) -> Result<()> {
        let _ = (name, cpus, memory_mb);
        Err(OrchestratorError::Failed(format!(
            "{} cannot change limits of a running runtime",
            self.kind()
        )))
    }

    /// Images that can share warm-pool runtimes map to the same key.
    fn pool_key(&self, image: &str) -> String {
        image.to_string()
    }
}
