//! imclust-data: the inputs and outputs of imclust.
//!
//! - [`storage`]: one URL type over object stores (local, s3, gs, az, http).
//! - [`dataset`]: the [`Dataset`](dataset::Dataset) trait, `KIND:URL` specs, fingerprints;
//!   [`datasets`]: the formats (CIFAR-10/100, STL-10, IDX, folders and MIT Indoor-67,
//!   manifests, npy).
//! - [`shard`]: shard plans.
//! - [`cache`]: the embedding cache, keyed by shard, model and preprocessing.
//! - [`bad`]: the bad-record policy and `errors.jsonl`.
//! - [`npy`]: reading and writing NumPy `.npy` arrays, from files or bytes, atomically.
//! - [`fsutil`]: atomic file writes (temporary file, fsync, rename).
//! - [`output`]: a job's output under `<output>/<job-id>/` (Parquet assignments, npy
//!   centroids and embeddings, JSON), committed by writing `manifest.json` last, and its
//!   reader, which trusts only committed outputs.
//! - [`error`]: [`DataError`], the crate's one error type, whose messages name the file
//!   or URL concerned and say what to do.

pub mod bad;
pub mod cache;
pub mod dataset;
pub mod datasets;
pub mod error;
pub mod fsutil;
pub mod npy;
pub mod output;
pub mod shard;
pub mod storage;

pub use error::{DataError, Result};
