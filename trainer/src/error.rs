//! The trainer's error type: every variant names the file, tensor or parameter at fault.

use std::path::PathBuf;

/// Everything that can go wrong in the trainer library.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// An atomic write (temporary file, fsync, rename) failed; the message names the file.
    #[error(transparent)]
    Write(#[from] manifests::Error),
    /// A file could not be read, written or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file (index, config, bins) did not parse or could not be written.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser error (carries line and column).
        source: serde_json::Error,
    },
    /// A safetensors file has an unreadable header or could not be serialised.
    #[error("{path}: safetensors: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The library error.
        source: safetensors::SafeTensorError,
    },
    /// A shard set or shard violates the shard format (DESIGN.md "Shards").
    #[error("{path}: {message}")]
    Shard {
        /// The shard file or `index.json`.
        path: PathBuf,
        /// What is wrong, naming the tensor or field.
        message: String,
    },
    /// A checkpoint is missing a tensor, has the wrong shape, or its config does not fit.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The weights file or its JSON.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting (loss, device, network) is not one of its allowed values.
    #[error(transparent)]
    Setting(#[from] contract::training::InvalidSetting),
    /// A normaliser the shards' landmark scheme does not define.
    #[error(transparent)]
    Normaliser(#[from] contract::metrics::NormaliserError),
    /// The shards name a landmark scheme wingflow does not know.
    #[error(transparent)]
    Scheme(#[from] contract::scheme::UnknownScheme),
    /// A parameter given by the caller is out of range or inconsistent with the data.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A libtorch call failed.
    #[error("libtorch ({context}): {source}")]
    Torch {
        /// What the trainer was doing.
        context: String,
        /// The libtorch error.
        source: tch::TchError,
    },
    /// The background batch loader stopped without reporting an error (it panicked).
    #[error("the batch loader thread stopped unexpectedly")]
    LoaderDied,
    /// The testing hook [`Trainer::stop_after_write`](crate::train::Trainer::stop_after_write)
    /// stopped the run, as a process killed right after that checkpoint write would stop.
    #[error("injected stop after checkpoint write {write}")]
    InjectedStop {
        /// The write's number, counted from 1.
        write: u64,
    },
}

/// Result alias for the trainer library.
pub type Result<T, E = TrainerError> = std::result::Result<T, E>;

/// Return early with [`TrainerError::Config`] when a condition fails.
macro_rules! ensure_config {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::error::TrainerError::Config(format!($($fmt)+)));
        }
    };
}
pub(crate) use ensure_config;

/// Attach context to a libtorch error.
pub(crate) trait TorchContext<T> {
    /// Wrap the error with what the trainer was doing.
    fn torch(self, context: &str) -> Result<T>;
}

impl<T> TorchContext<T> for std::result::Result<T, tch::TchError> {
    fn torch(self, context: &str) -> Result<T> {
        self.map_err(|source| TrainerError::Torch {
            context: context.to_owned(),
            source,
        })
    }
}

/// Attach the path to an I/O error.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainerError {
    let path = path.into();
    move |source| TrainerError::Io { path, source }
}
