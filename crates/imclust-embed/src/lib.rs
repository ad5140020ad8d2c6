//! imclust-embed: the embedding engine.
//!
//! - [`runtime`]: loading ONNX Runtime (`libonnxruntime`) and building sessions on the chosen
//!   execution provider (CPU, CUDA, TensorRT), with intra-op threads.
//! - [`bundle`]: model bundles (`bundle.toml` + ONNX towers), validated against the graphs,
//!   identified by a digest.
//! - [`onnx_edit`]: minimal ONNX protobuf edits (exposing an intermediate tensor as an output).
//! - [`preprocess`]: image decoding and preprocessing into model input tensors.
//! - [`text`]: tokenizers (CLIP BPE built in, or a `tokenizer.json`) and prompt templates.
//! - [`engine`]: image and text encoders running batches through sessions.

pub mod bundle;
pub mod engine;
pub mod error;
pub mod onnx_edit;
pub mod preprocess;
pub mod runtime;
pub mod text;

pub use error::{EmbedError, Result};
