//! `opr`: each subcommand is a thin file over a library crate.

mod executor;
mod images;
mod run;
mod runtime_files;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "opr", version, about = "Open Runtimes, in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the function in a folder on 127.0.0.1 with the v5 protocol.
    Run(run::RunArgs),
    /// Serve the Open Runtimes executor API.
    Executor(executor::ExecutorArgs),
    /// Start an executor with the example functions deployed (the main job).
    Up(up::UpArgs),
    /// Runtime images for the docker and swarm backends.
    Images(images::ImagesArgs),
}

fn main() -> anyhow::Result<()> {
    // Inside a sandbox, `opr` is mounted as `opr-runtime` and acts as it.
    let invoked_as = std::env::args_os().next().map(std::path::PathBuf::from);
    if invoked_as
        .as_deref()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "opr-runtime")
    {
        return opr_runtime::cli::main_with_args(std::env::args_os());
    }
    match Cli::parse().command {
        Command::Run(args) => run::main(args),
        Command::Executor(args) => executor::main(args),
        Command::Up(args) => up::main(args),
        Command::Images(args) => images::main(args),
    }
}
