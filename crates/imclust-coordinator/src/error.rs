//! The coordinator's errors: each names what failed and what to do.

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("{source_name}: {reason}")]
    Config { source_name: String, reason: String },
    #[error(transparent)]
    Data(#[from] imclust_data::DataError),
    #[error(transparent)]
    Embed(#[from] imclust_embed::EmbedError),
    #[error(transparent)]
    Core(#[from] imclust_core::CoreError),
    /// The job cannot go on (a shard failed every attempt, a worker reported a bad record).
    #[error("{0}")]
    JobFailed(String),
    #[error("{0}")]
    Server(String),
}

pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;
