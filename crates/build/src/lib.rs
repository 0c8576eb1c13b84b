//! Builds as jobs in an embedded store, run by a pool of workers. A crash
//! loses nothing: queued jobs run after a restart, and a job that was
//! running is retried once or failed with a stated reason.

mod queue;
mod store;

pub use queue::{BuildQueue, BuildRunner};
pub use store::{Job, JobState, Recovery, Store, StoreError};
