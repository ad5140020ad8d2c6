//! The one error type of imclust-data.

use std::path::PathBuf;

/// Errors of imclust-data. Each names the file (or object) concerned and, where
/// there is one, what to do about it.
///
/// `Io` keeps the underlying [`std::io::Error`] as its [`source`](std::error::Error::source)
/// and does not repeat it in its own message; print errors with their chain (for example
/// `anyhow`'s `{:#}` or `{:?}`) to see the operating-system reason.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading, writing, renaming or syncing a file failed.
    #[error("I/O error on '{}'", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A .npy file (or in-memory .npy object) is malformed, or holds an array this
    /// program cannot use; `reason` says what was found and how to fix it.
    #[error("npy file '{}': {reason}", path.display())]
    Npy { path: PathBuf, reason: String },
}

impl DataError {
    /// A [`DataError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`DataError::Npy`] for `path`.
    pub fn npy(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::Npy {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
