//! One error type for every reader and kernel; the bindings turn it into a Python exception.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file's bytes do not make a valid model of its format.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    /// The operating system refused to open or map the file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A request that does not fit the loaded data (unknown tensor name, bad argument).
    #[error("{0}")]
    Invalid(String),
    /// The run was cancelled from outside (Ctrl-C in Python).
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn format(path: &Path, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
