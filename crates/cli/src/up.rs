//! `opr up`: the main job. Starts the executor on the process backend,
//! builds and deploys the example functions, and prints how to call them.

use anyhow::Context;
use clap::Args;
use opr_executor::create::CreateRequest;
use opr_executor::execute::ExecRequest;
use opr_executor::{config, Executor};
use opr_orchestrator::RestartPolicy;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct UpArgs {
    /// Address of the executor API.
    #[arg(long, default_value = "127.0.0.1:9900")]
    listen: SocketAddr,
    /// Work folder (runtimes, builds, the demo's packages).
    #[arg(long, default_value = "/tmp/opr-up")]
    work_dir: PathBuf,
}

struct Example {
    id: &'static str,
    language: &'static str,
    image: &'static str,
    entrypoint: &'static str,
}

const EXAMPLES: [Example; 3] = [
    Example {
        id: "node-example",
        language: "node",
        image: "openruntimes/node:v5-22",
        entrypoint: "index.js",
    },
    Example {
        id: "python-example",
        language: "python",
        image: "openruntimes/python:v5-3.12",
        entrypoint: "main.py",
    },
    Example {
        id: "bun-example",
        language: "bun",
        image: "openruntimes/bun:v5-1.1",
        entrypoint: "index.ts",
    },
];

const START: &str = "cp /tmp/code.tar.gz /mnt/code/code.tar.gz && nohup helpers/start.sh \"bash helpers/server.sh\"";

pub fn main(args: UpArgs) -> anyhow::Result<()> {
    let mut env: BTreeMap<String, String> = std::env::vars().collect();
    let secret = match env.get("OPR_EXECUTOR_SECRET").filter(|s| !s.is_empty()) {
        Some(s) => s.clone(),
        None => opr_executor::engine::random_hex(),
    };
    env.insert("OPR_EXECUTOR_SECRET".into(), secret.clone());
    env.entry("OPR_EXECUTOR_WARM_POOL".into())
        .or_insert_with(|| "openruntimes/node:v5-22=1,openruntimes/python:v5-3.12=1".into());
    env.entry("OPR_EXECUTOR_WORK_DIR".into())
        .or_insert_with(|| args.work_dir.display().to_string());
    let mut cfg = config::from_env(&env);
    cfg.listen = args.listen;
    let work_dir = cfg.work_dir.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let runtimes_dir = crate::runtime_files::runtimes_dir()?;
        let orch = crate::executor::process_backend(&cfg)?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {} (another opr up running? use --listen)", cfg.listen))?;
        let addr = listener.local_addr()?;
        let exec = Executor::start(cfg, orch).await?;
        tokio::spawn(opr_executor::api::serve(exec.clone(), listener));
        println!("opr executor listening on http://{addr} (backend process)");

        let demo = work_dir.join("demo");
        let mut lines = Vec::new();
        for ex in &EXAMPLES {
            let source = demo.join(format!("{}-source.tar.gz", ex.id));
            pack_folder(&runtimes_dir.join(ex.language).join("example"), &source)?;
            let built = exec
                .create_runtime(CreateRequest {
                    runtime_id: format!("{}-build", ex.id),
                    image: ex.image.into(),
                    entrypoint: ex.entrypoint.into(),
                    source: source.display().to_string(),
                    destination: demo.join("builds").display().to_string(),
                    command: "tar -zxf /tmp/code.tar.gz -C /mnt/code && bash helpers/build.sh \"\"".into(),
                    timeout: 300,
                    remove: true,
                    cpus: 1.0,
                    memory: 512,
                    version: "v5".into(),
                    restart: RestartPolicy::No,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("building {} failed: {}", ex.id, e.message))?;
            let package = built.path.unwrap_or_default();
            let first = exec
                .execute(ExecRequest {
                    runtime_id: ex.id.into(),
                    body: Vec::new(),
                    path: "/".into(),
                    method: "GET".into(),
                    headers: BTreeMap::new(),
                    timeout: 30,
                    image: ex.image.into(),
                    source: package.clone(),
                    entrypoint: ex.entrypoint.into(),
                    variables: BTreeMap::new(),
                    cpus: 1.0,
                    memory: 512,
                    version: "v5".into(),
                    runtime_entrypoint: START.into(),
                    logging: true,
                    restart: RestartPolicy::No,
                })
                .await
                .map_err(|e| anyhow::anyhow!("first execution of {} failed: {}", ex.id, e.message))?;
            println!(
                "deployed {:<15} built in {:.2} s, first execution {} in {:.1} ms: {}",
                ex.id,
                built.duration,
                first.status_code,
                first.duration * 1000.0,
                String::from_utf8_lossy(&first.body)
            );
            let body = serde_json::json!({
                "image": ex.image,
                "source": package,
                "entrypoint": ex.entrypoint,
                "runtimeEntrypoint": START,
                "path": "/json?name=opr",
                "method": "GET",
            });
            lines.push(format!(
                "curl -s -X POST http://{addr}/v1/runtimes/{}/executions -H 'Authorization: Bearer {secret}' -H 'Content-Type: application/json' -H 'Accept: application/json' -d '{}'",
                ex.id,
                body.to_string().replace('\'', "'\\''")
            ));
        }
        println!("\nCall them (the image/source fields let the executor cold-start them again after idle reaping):\n");
        for l in &lines {
            println!("{l}\n");
        }
        println!("List runtimes:\n\ncurl -s http://{addr}/v1/runtimes -H 'Authorization: Bearer {secret}'\n");
        println!("Press Ctrl-C to stop; runtimes are removed on exit.");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        exec.shutdown().await;
        Ok(())
    })
}

/// A gzip tar of a folder's contents, as a platform would upload it.
fn pack_folder(folder: &Path, out: &Path) -> anyhow::Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all(".", folder)?;
    tar.into_inner()?.finish()?;
    Ok(())
}
