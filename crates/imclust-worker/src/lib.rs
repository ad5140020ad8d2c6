//! imclust-worker: what a worker does.
//!
//! - [`embed`]: a shard's records through each model's image tower, with the embedding
//!   cache and the bad-record policy; and the alignment of several models' rows for fusion.
//! - [`shards`]: the job context and resident shards, and each stage's computation on them
//!   (statistics, samples, zero-shot sums, partial sums, assignments).
//! - [`task`]: the task loop that dials the coordinator (register, heartbeat, lease, report).
//! - [`error`]: the crate's error type, [`WorkerError`](error::WorkerError).

pub mod embed;
pub mod error;
pub mod metrics;
pub mod shards;
pub mod task;

pub use error::{Result, WorkerError};
