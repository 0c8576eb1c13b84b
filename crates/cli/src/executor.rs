//! `opr executor`: the Open Runtimes executor API on a chosen backend.

use anyhow::{bail, Context};
use clap::Args;
use opr_executor::{config, Executor};
use opr_orchestrator::process::{ProcessBackend, ProcessConfig};
use opr_orchestrator::Orchestrator;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct ExecutorArgs {
    /// Address to serve the API on (default $OPR_EXECUTOR_LISTEN, else 127.0.0.1:9900).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where runtimes run: process (sandboxed processes, the default),
    /// docker (containers) or swarm (services); see docs/docker.md.
    #[arg(long, default_value = "process")]
    backend: String,
    /// Work folder for runtimes (default $OPR_EXECUTOR_WORK_DIR, else /tmp/opr-executor).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// The embedded default: sandboxed processes, with `opr` itself mounted as
/// the runtime server.
pub fn process_backend(cfg: &config::ExecutorConfig) -> anyhow::Result<Arc<dyn Orchestrator>> {
    let mut config = ProcessConfig::new(
        cfg.work_dir.join(".process"),
        crate::runtime_files::runtimes_dir()?,
        std::env::current_exe()?,
        &cfg.hostname,
    );
    config.build_tmpfs_bytes = cfg.build_tmpfs_mb.saturating_mul(1 << 20);
    Ok(Arc::new(ProcessBackend::new(config)?))
}

pub fn main(args: ExecutorArgs) -> anyhow::Result<()> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let mut cfg = config::from_env(&env);
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(w) = args.work_dir {
        cfg.set_work_dir(w, &env);
    }
    std::fs::create_dir_all(&cfg.work_dir)
        .with_context(|| format!("cannot create {}", cfg.work_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let orch: Arc<dyn Orchestrator> = match args.backend.as_str() {
            "process" => process_backend(&cfg)?,
            "docker" => Arc::new(
                opr_orchestrator::docker::DockerBackend::connect(
                    opr_orchestrator::docker::DockerConfig::new(&cfg.hostname),
                )
                .await?,
            ),
            "swarm" => Arc::new(
                opr_orchestrator::swarm::SwarmBackend::connect(
                    opr_orchestrator::swarm::SwarmConfig::new(&cfg.hostname),
                )
                .await?,
            ),
            other => bail!("unknown backend {other:?}: expected process, docker or swarm"),
        };
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let exec = Executor::start(cfg, orch).await?;
        println!(
            "opr executor listening on http://{addr} (backend {})",
            args.backend
        );
        let server = tokio::spawn(opr_executor::api::serve(exec.clone(), listener));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut quit = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::quit())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = quit.recv() => {}
            _ = server => {}
        }
        eprintln!("opr executor: shutting down, removing runtimes");
        exec.shutdown().await;
        Ok(())
    })
}
