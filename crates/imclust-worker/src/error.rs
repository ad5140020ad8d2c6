//! The one error type of imclust-worker.

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Data(#[from] imclust_data::DataError),
    #[error(transparent)]
    Embed(#[from] imclust_embed::EmbedError),
    #[error(transparent)]
    Core(#[from] imclust_core::CoreError),
    /// The coordinator cannot be reached, refused the call, or answered nonsense.
    #[error("{0}")]
    Rpc(String),
    /// A dataset's records cannot be embedded (they are embeddings already, or a shard
    /// came back short).
    #[error("{0}")]
    Input(String),
}

pub type Result<T, E = WorkerError> = std::result::Result<T, E>;
