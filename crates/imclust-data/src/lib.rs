//! imclust-data: the inputs and outputs of imclust.
//!
//! - [`npy`]: reading and writing NumPy `.npy` arrays (feature matrices, labels,
//!   centroids), from files or from bytes in memory, with atomic writes.
//! - [`fsutil`]: atomic file writes (temporary file, fsync, rename).
//! - [`error`]: [`DataError`], the crate's one error type, whose messages name the file
//!   concerned and say what to do.

pub mod error;
pub mod fsutil;
pub mod npy;

pub use error::{DataError, Result};
