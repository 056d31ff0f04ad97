//! The crate's error type.

use std::path::PathBuf;

/// Errors of fingerprinting, records, atomic writes and the run lock.
///
/// Every variant names the file involved, so a message is actionable on its own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a file or directory failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done, as a verb phrase ("read", "rename into place", …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (record, stat cache) could not be parsed.
    #[error("{} is not a valid wingflow file: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error (carries line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A file was written by a different, incompatible format version.
    #[error("{} has format version {found}; this wingflow reads version {expected}", path.display())]
    FormatVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build understands.
        expected: u32,
    },
    /// A value could not be serialised to JSON (e.g. a map with non-string keys).
    #[error("cannot serialise {what} to JSON: {source}")]
    Serialize {
        /// What was being serialised.
        what: &'static str,
        /// The serialiser's error.
        #[source]
        source: serde_json::Error,
    },
    /// Another process (or another handle in this process) holds the run lock.
    #[error("another wingflow run holds {} (pid {holder})", path.display())]
    RunLocked {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid as written in the lock file, or "unknown".
        holder: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the operation and path it concerns.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
