//! The executor (executor-api): registry, cold starts, warm pool, builds
//! and maintenance over an `Orchestrator` backend.

pub mod api;
pub mod buildlog;
pub mod builds;
pub mod cache;
pub mod config;
pub mod create;
pub mod engine;
pub mod error;
pub mod execute;
pub mod logs_stream;
pub mod maintenance;
pub mod multipart;
pub mod params;
pub mod readiness;
pub mod registry;
pub mod storage;
pub mod warm_pool;

pub use config::ExecutorConfig;
pub use engine::Executor;
