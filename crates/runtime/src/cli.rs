//! The runtime server's command line (docs/runtime.md). The `opr` binary
//! runs this too when invoked under the name `opr-runtime`.

use crate::worker::WorkerSpec;
use crate::{Config, Language};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "opr-runtime", about = "Open Runtimes v5 runtime server")]
struct Args {
    #[arg(long, env = "OPR_RUNTIME_LISTEN", default_value = "0.0.0.0:3000")]
    listen: SocketAddr,
    #[arg(long, env = "OPR_RUNTIME_LANGUAGE")]
    language: String,
    #[arg(long, default_value = "/usr/local/server")]
    server_dir: PathBuf,
    #[arg(long)]
    function_dir: Option<PathBuf>,
    #[arg(long)]
    worker: Option<PathBuf>,
    #[arg(long)]
    interpreter: Option<PathBuf>,
    #[arg(long, default_value = "/mnt/logs")]
    logs_dir: PathBuf,
    #[arg(long, default_value = "/mnt/telemetry/timings.txt")]
    timings_file: PathBuf,
    #[arg(long)]
    workers: Option<usize>,
    #[arg(long)]
    standby: bool,
}

/// Parses `args` (including the program name) and serves until a signal.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> anyhow::Result<()> {
    let args = Args::parse_from(args);
    let language = Language::parse(&args.language).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown language {:?}: expected node, python or bun",
            args.language
        )
    })?;
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let function_dir = args
        .function_dir
        .unwrap_or_else(|| args.server_dir.join("src/function"));
    let cwd = function_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| args.server_dir.clone());
    let cfg = Config {
        listen: args.listen,
        language,
        workers: args
            .workers
            .unwrap_or_else(|| language.default_workers(&env)),
        worker: WorkerSpec {
            interpreter: args
                .interpreter
                .unwrap_or_else(|| language.default_interpreter()),
            script: args
                .worker
                .unwrap_or_else(|| language.worker_file(&args.server_dir)),
            cwd,
            // Workers get the server's environment, less its control token:
            // user code must not be able to re-assign its own runtime.
            env: Some(
                env.iter()
                    .filter(|(k, _)| k.as_str() != "OPR_RUNTIME_CONTROL_TOKEN")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        },
        function_dir,
        logs_dir: args.logs_dir,
        timings_file: args.timings_file,
        standby: args.standby,
        control_token: env.get("OPR_RUNTIME_CONTROL_TOKEN").cloned(),
        env,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let running = crate::start(cfg).await?;
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "opr-runtime listening on http://{}", running.addr)?;
        writeln!(out, "HTTP server successfully started!")?;
        out.flush()?;
        drop(out);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = running.task => {}
        }
        Ok(())
    })
}
