//! Fingerprints and records for wingflow's incremental runs.
//!
//! This crate is the storage layer of the stage DAG and knows nothing about faces or about the
//! DAG itself:
//!
//! - [`digest`]: blake3 digests of files, directory trees and parameter values (canonical JSON).
//! - [`stat_cache`]: `(path, size, mtime, inode) → digest`, so unchanged files are not re-hashed.
//! - [`atomic`]: atomic file writes (temporary file + fsync + rename + fsync of the directory),
//!   folders swapped in whole, files exported under a second name.
//! - [`record`]: the per-stage [`StageManifest`] and the `wingflow.lock` [`Record`] holding them.
//! - [`run_lock`]: the OS file lock `.wingflow-run.lock` that keeps two runs apart.
//!
//! Architecture invariant: nothing here reads the clock into a fingerprint. The only clock use is
//! the stat cache's guard against "racy" timestamps, which decides whether to *re-hash*, never
//! what a digest is.

pub mod atomic;
pub mod digest;
mod error;
pub mod record;
pub mod run_lock;
pub mod stat_cache;

pub use atomic::{
    AtomicFile, commit_temp, commit_temp_dir, create_temp, create_temp_dir, link_atomic,
    remove_stale_temp_files, write_atomic, write_if_changed,
};
pub use digest::{Digest, canonical_json, digest_bytes, digest_file, digest_value};
pub use error::{Error, Result};
pub use record::{InputRecord, OutputRecord, Record, StageManifest};
pub use run_lock::RunLock;
pub use stat_cache::{FileDigest, HashPolicy, PathDigest, PathKind, StatCache};

/// Name of the record file in the output root (all stage manifests, like `dvc.lock`).
pub const RECORD_FILE_NAME: &str = "wingflow.lock";
/// Name of the OS run-lock file in the output root.
pub const RUN_LOCK_FILE_NAME: &str = ".wingflow-run.lock";
/// Directory in the output root for wingflow's private state (the stat cache).
pub const STATE_DIR_NAME: &str = ".wingflow";
/// Name of the stat cache file inside [`STATE_DIR_NAME`].
pub const STAT_CACHE_FILE_NAME: &str = "stat-cache.json";
