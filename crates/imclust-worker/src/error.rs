//! The one error type of imclust-worker.

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Data(#[from] imclust_data::DataError),
    #[error(transparent)]
    Embed(#[from] imclust_embed::EmbedError),
    /// A dataset's records cannot be embedded (they are embeddings already, or a shard
    /// came back short).
    #[error("{0}")]
    Input(String),
}

pub type Result<T, E = WorkerError> = std::result::Result<T, E>;
