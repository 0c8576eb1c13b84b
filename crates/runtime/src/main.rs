//! `opr-runtime`: see docs/runtime.md.

fn main() -> anyhow::Result<()> {
    opr_runtime::cli::main_with_args(std::env::args_os())
}
