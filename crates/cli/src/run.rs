//! `opr run`: the developer's local loop.

use anyhow::{bail, Context};
use clap::Args;
use opr_runtime::worker::WorkerSpec;
use opr_runtime::{Config, Language};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Variables `opr run` takes from its own environment (runtime-protocol §3.2).
const PASSED_THROUGH: [&str; 4] = [
    "OPEN_RUNTIMES_SECRET",
    "OPEN_RUNTIMES_ENTRYPOINT",
    "OPEN_RUNTIMES_HEADERS",
    "OPEN_RUNTIMES_ENV",
];

#[derive(Args)]
pub struct RunArgs {
    /// Folder holding the function.
    folder: PathBuf,
    /// node, python or bun.
    #[arg(long)]
    runtime: String,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Entrypoint file, relative to the folder (default index.js / main.py /
    /// index.ts).
    #[arg(long)]
    entrypoint: Option<String>,
    /// Where per-request log files go (default: a folder under the system temp dir).
    #[arg(long)]
    logs_dir: Option<PathBuf>,
    /// A variable for the function, KEY=VALUE; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Skip installing dependencies.
    #[arg(long)]
    no_install: bool,
}

pub fn main(args: RunArgs) -> anyhow::Result<()> {
    let language = Language::parse(&args.runtime).with_context(|| {
        format!(
            "unknown runtime {:?}: expected node, python or bun",
            args.runtime
        )
    })?;
    let folder = std::path::absolute(&args.folder)?;
    if !folder.is_dir() {
        bail!("{} is not a folder", folder.display());
    }
    if !args.no_install {
        install_dependencies(language, &folder)?;
    }
    let logs_dir = match args.logs_dir {
        Some(d) => d,
        None => std::env::temp_dir().join("opr-logs"),
    };
    std::fs::create_dir_all(&logs_dir)
        .with_context(|| format!("cannot create {}", logs_dir.display()))?;

    let env = runtime_env(language, &args.env, args.entrypoint.as_deref())?;
    let cfg = Config {
        listen: ([127, 0, 0, 1], args.port).into(),
        language,
        function_dir: folder.clone(),
        timings_file: logs_dir.join("timings.txt"),
        logs_dir: logs_dir.clone(),
        workers: language.default_workers(&env),
        standby: false,
        control_token: None,
        worker: WorkerSpec {
            interpreter: language.default_interpreter(),
            script: language.worker_file(&crate::runtime_files::server_dir(language)?),
            cwd: folder
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| folder.clone()),
            env: Some(env.clone().into_iter().collect()),
        },
        env,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let running = opr_runtime::start(cfg).await?;
        println!("opr-runtime listening on http://{}", running.addr);
        println!("HTTP server successfully started!");
        println!(
            "Serving {} ({}); logs in {}",
            folder.display(),
            language.name(),
            logs_dir.display()
        );
        println!("Try: curl -i http://{}/", running.addr);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = running.task => {}
        }
        Ok(())
    })
}

/// A clean environment: the spec variables from ours, the user's `--env`,
/// and nothing else of the caller's (no `NODE_EXTRA_CA_CERTS`, no pyenv).
fn runtime_env(
    language: Language,
    pairs: &[String],
    entrypoint: Option<&str>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::from([
        (
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin".to_string(),
        ),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        (
            "HOME".to_string(),
            std::env::temp_dir().display().to_string(),
        ),
    ]);
    let interpreter = match language {
        Language::Node => Some("node"),
        Language::Bun => Some("bun"),
        Language::Python => None,
    };
    if let Some(program) = interpreter {
        // `node` and `bun` may live outside the default PATH (nvm, ~/.bun).
        if let Some(dir) = which(program).and_then(|p| p.parent().map(Path::to_path_buf)) {
            env.insert(
                "PATH".into(),
                format!("{}:/usr/local/bin:/usr/bin:/bin", dir.display()),
            );
        }
    }
    for key in PASSED_THROUGH {
        if let Ok(v) = std::env::var(key) {
            env.insert(key.to_string(), v);
        }
    }
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--env takes KEY=VALUE, got {pair:?}");
        };
        if k.is_empty() {
            bail!("--env needs a variable name, got {pair:?}");
        }
        env.insert(k.to_string(), v.to_string());
    }
    if let Some(e) = entrypoint {
        env.insert("OPEN_RUNTIMES_ENTRYPOINT".into(), e.to_string());
    }
    Ok(env)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// Installs into the function folder, as a build would.
fn install_dependencies(language: Language, folder: &Path) -> anyhow::Result<()> {
    match language {
        Language::Node if folder.join("package.json").is_file() => {
            let ci = folder.join("package-lock.json").is_file();
            let verb = if ci { "ci" } else { "install" };
            eprintln!("opr: npm {verb} in {}", folder.display());
            run_install(
                Command::new("npm")
                    .args([verb, "--no-audit", "--no-fund"])
                    .current_dir(folder),
            )
        }
        Language::Bun if folder.join("package.json").is_file() => {
            eprintln!("opr: bun install in {}", folder.display());
            run_install(
                Command::new("bun")
                    .arg("install")
                    .env_remove("NODE_EXTRA_CA_CERTS")
                    .current_dir(folder),
            )
        }
        Language::Python if folder.join("requirements.txt").is_file() => {
            let venv = folder.join("runtime-env");
            if !venv.join("bin/pip").is_file() {
                eprintln!("opr: creating {}", venv.display());
                run_install(
                    Command::new("/usr/bin/python3")
                        .args(["-m", "venv"])
                        .arg(&venv),
                )
                .context("python3 -m venv failed (Debian: apt-get install python3-venv)")?;
            }
            eprintln!(
                "opr: pip install -r requirements.txt in {}",
                folder.display()
            );
            run_install(
                Command::new(venv.join("bin/pip"))
                    .args([
                        "install",
                        "--disable-pip-version-check",
                        "-q",
                        "-r",
                        "requirements.txt",
                    ])
                    .current_dir(folder),
            )
        }
        _ => Ok(()),
    }
}

fn run_install(cmd: &mut Command) -> anyhow::Result<()> {
    // The caller's CA settings matter for reaching a registry, so installs
    // keep the environment; only the runtime gets a clean one.
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed with {status}", cmd.get_program());
    }
    Ok(())
}
