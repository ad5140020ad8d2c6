//! The one error type of imclust-core.

/// Errors of the clustering core. Each names what was wrong and what to do about it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CoreError {
    #[error("invalid shape: {0}")]
    Shape(String),
    #[error("invalid parameter: {0}")]
    Param(String),
    #[error("invalid data: {0}")]
    Data(String),
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
