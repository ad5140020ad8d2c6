//! imclust-core: the pure, synchronous math of imclust.
//!
//! Nothing here does I/O, async, ONNX or networking. Data is passed as row-major `f32`
//! slices (`rows x dim`). The pieces:
//! - [`kernel`]: the blocked assignment kernel (GEMM through the `gemm` crate) fused with the
//!   accumulation of [`kernel::PartialSums`], whose merge is exact and associative.
//! - [`update`]: Lloyd and mini-batch centroid updates, Euclidean and spherical.
//! - [`init`]: seeds, random, k-means++ (greedy), k-means|| (Bahmani et al.).
//! - [`kmeans`]: the single-process driver (`fit`) built from the pieces above.
//! - [`metrics`]: contingency table, ACC (Hungarian), NMI, ARI, zero-shot accuracy.
//! - [`rng`]: a small portable, counter-based RNG.

pub mod error;
pub mod fixed;
pub mod fusion;
pub mod init;
pub mod kernel;
pub mod kmeans;
pub mod linalg;
pub mod metrics;
#[cfg(test)] mod proptests;
pub mod rng;
pub mod smallk;
pub mod update;

pub use error::{CoreError, Result};
