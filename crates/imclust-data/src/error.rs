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
    /// An object store operation failed, or a URL cannot be used; `reason` says what to
    /// check. The URL never carries credentials.
    #[error("{url}: {reason}")]
    Storage { url: String, reason: String },
    /// A dataset file is malformed (truncated, wrong magic number, inconsistent sizes).
    #[error("{url}: {reason}")]
    Format { url: String, reason: String },
    /// A dataset spec, list file or option is wrong; `reason` says how to fix it.
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    /// A record could not be read or decoded and the policy is `on_bad_record = "fail"`.
    #[error("record {index} ({id}) of {dataset}: {reason} (set on_bad_record = \"skip\" / --on-bad-record skip to skip bad records and list them in errors.jsonl)")]
    BadRecord { dataset: String, index: u64, id: String, reason: String },
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

impl DataError {
    pub fn storage(url: impl Into<String>, reason: impl Into<String>) -> Self {
        DataError::Storage { url: url.into(), reason: reason.into() }
    }

    pub fn format(url: impl Into<String>, reason: impl Into<String>) -> Self {
        DataError::Format { url: url.into(), reason: reason.into() }
    }

    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        DataError::Invalid { what: what.into(), reason: reason.into() }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
