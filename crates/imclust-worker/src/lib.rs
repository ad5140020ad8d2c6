//! imclust-worker: what a worker does with a shard.
//!
//! - [`embed`]: a shard's records through each model's image tower, with the embedding
//!   cache and the bad-record policy; and the alignment of several models' rows for fusion.
//! - [`error`]: the crate's error type, [`WorkerError`](error::WorkerError).

pub mod embed;
pub mod error;

pub use error::{Result, WorkerError};
