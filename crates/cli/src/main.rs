//! `opr`: each subcommand is a thin file over a library crate.

mod run;
mod runtime_files;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run::main(args),
    }
}
