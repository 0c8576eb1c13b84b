//! `opr images build`: the runtime images of the Docker and Swarm backends,
//! made without a registry (docs/docker.md).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use opr_orchestrator::docker::build::{self, BuildConfig};
use opr_orchestrator::docker::client;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct ImagesArgs {
    #[command(subcommand)]
    command: ImagesCommand,
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Build opr/base:bookworm (if missing) and one image per
    /// runtimes/<lang>/Dockerfile, tagged with the Open Runtimes names.
    Build(BuildArgs),
}

#[derive(Args)]
struct BuildArgs {
    /// Folder holding <lang>/Dockerfile.
    #[arg(long, default_value = "runtimes")]
    runtimes_dir: PathBuf,
    /// Build context of the runtime images (default: the folder above
    /// --runtimes-dir, the repository root). Must hold
    /// target/release/opr-runtime (cargo build --release -p opr-runtime).
    #[arg(long)]
    context: Option<PathBuf>,
    /// Where the base root filesystem tarball is cached (default
    /// $XDG_CACHE_HOME/opr/images, else ~/.cache/opr/images).
    #[arg(long)]
    base_dir: Option<PathBuf>,
    /// Only these languages (comma-separated, e.g. node,python).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Ignore the engine's layer cache.
    #[arg(long)]
    no_cache: bool,
    /// Docker engine (default $DOCKER_HOST, else the local socket).
    #[arg(long)]
    docker_host: Option<String>,
    /// Print only the summary, not the build output.
    #[arg(short, long)]
    quiet: bool,
}

fn default_base_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("opr/images");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache/opr/images");
    }
    std::env::temp_dir().join("opr-images")
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    p.canonicalize()
        .with_context(|| format!("{} not found", p.display()))
}

pub fn main(args: ImagesArgs) -> anyhow::Result<()> {
    match args.command {
        ImagesCommand::Build(b) => build_images(b),
    }
}

fn build_images(args: BuildArgs) -> anyhow::Result<()> {
    let runtimes_dir = absolute(&args.runtimes_dir)?;
    let context_dir = match &args.context {
        Some(c) => absolute(c)?,
        None => runtimes_dir
            .parent()
            .map(Path::to_path_buf)
            .context("the runtimes folder has no parent to use as build context")?,
    };
    let base_script = context_dir.join("images/build-base.sh");
    if !base_script.is_file() {
        bail!(
            "{} not found: run from the opr repository or pass --context",
            base_script.display()
        );
    }
    let base_dir = args.base_dir.clone().unwrap_or_else(default_base_dir);
    let cfg = BuildConfig {
        context_dir,
        runtimes_dir,
        base_script,
        base_dir,
        languages: args.only.clone(),
        no_cache: args.no_cache,
    };
    let quiet = args.quiet;
    let log = move |line: &str| {
        if !quiet || !line.contains("] | ") {
            eprintln!("opr images: {line}");
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let built = rt.block_on(async {
        let docker = client::connect(args.docker_host.as_deref(), Duration::from_secs(600)).await?;
        build::build_all(&docker, &cfg, &log).await
    })?;
    for b in &built {
        println!(
            "{:<20} {}  {:>6.1} s  {}",
            b.image,
            b.id.strip_prefix("sha256:")
                .unwrap_or(&b.id)
                .get(..12)
                .unwrap_or(""),
            b.seconds,
            b.aliases.join(" ")
        );
    }
    println!(
        "{} image(s) ready in {:.1} s",
        built.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
