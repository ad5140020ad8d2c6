//! The one error type of imclust-embed. Messages name the thing (file, bundle, tensor) and say
//! what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// ONNX Runtime could not be found or loaded.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// A bundle's files or configuration are wrong.
    #[error("bundle '{bundle}': {reason}")]
    Bundle { bundle: String, reason: String },
    /// An ONNX model is unreadable or does not match what the bundle says.
    #[error("model '{path}': {reason}")]
    Model { path: PathBuf, reason: String },
    /// An image could not be decoded or preprocessed.
    #[error("image '{name}': {reason}")]
    Image { name: String, reason: String },
    /// Tokenizer or prompt problems.
    #[error("text: {0}")]
    Text(String),
    #[error("I/O error on '{path}'")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    /// An error from ONNX Runtime while running a session.
    #[error("inference with '{model}': {source}")]
    Inference { model: String, #[source] source: ort::Error },
    #[error(transparent)]
    Core(#[from] imclust_core::CoreError),
}

impl EmbedError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EmbedError::Io { path: path.into(), source }
    }
}

pub type Result<T, E = EmbedError> = std::result::Result<T, E>;
