//! `opr-runtime`: the v5 runtime server (runtime-protocol §3) in front of
//! language workers (docs/worker-protocol.md).

pub mod cli;
pub mod frame;
pub mod language;
pub mod logs;
pub mod pool;
pub mod request;
pub mod response;
pub mod server;
pub mod settings;
pub mod worker;

pub use language::Language;
pub use server::{start, Config, Running};
