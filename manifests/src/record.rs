//! Stage manifests and the `wingflow.lock` record that holds them all.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::atomic::write_atomic;
use crate::digest::Digest;
use crate::stat_cache::PathKind;
use crate::{Error, RECORD_FILE_NAME, Result};

/// On-disk format version of `wingflow.lock`.
const FORMAT_VERSION: u32 = 1;

/// A recorded input of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    /// Digest of the file, or of the directory tree.
    pub digest: Digest,
    /// Size in bytes (a directory: sum over its files).
    pub size: u64,
}

/// A recorded output of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// File or directory (with its file count).
    #[serde(flatten)]
    pub kind: PathKind,
    /// Digest of the file, or of the directory tree.
    pub digest: Digest,
    /// Size in bytes (a directory: sum over its files).
    pub size: u64,
    /// Modification time when recorded, ns since the epoch (a directory: latest over its files).
    pub mtime_ns: i64,
}

/// What one successful stage execution recorded.
///
/// Written only after every output of the stage is complete, so a manifest always describes
/// outputs that exist in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageManifest {
    /// The stage's name.
    pub stage: String,
    /// The stage's code version: bump it when the stage's logic changes its outputs.
    pub code_version: String,
    /// Digest of [`params`](Self::params) in canonical JSON.
    pub params_digest: Digest,
    /// The parameters themselves, so a change can be reported by name.
    pub params: Value,
    /// Input path (as declared) → digest and size.
    pub inputs: BTreeMap<String, InputRecord>,
    /// Output path (as declared) → digest, size and mtime.
    pub outputs: BTreeMap<String, OutputRecord>,
    /// Free-form row counts reported by the stage (e.g. `faces`, `samples`).
    pub rows: BTreeMap<String, u64>,
    /// Wall time of the execution in seconds.
    pub duration_s: f64,
}

/// `wingflow.lock`: the manifests of every stage that has run, keyed by stage name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Record {
    /// Format version of the file.
    pub format: u32,
    /// Stage name → its latest successful manifest.
    pub stages: BTreeMap<String, StageManifest>,
}

impl Record {
    /// An empty record (nothing has run).
    pub fn new() -> Record {
        Record {
            format: FORMAT_VERSION,
            stages: BTreeMap::new(),
        }
    }

    /// The record file of an output root.
    pub fn path_in(root: &Path) -> std::path::PathBuf {
        root.join(RECORD_FILE_NAME)
    }

    /// Reads the record at `path`; a missing file is an empty record.
    pub fn load(path: &Path) -> Result<Record> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Record::new()),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        let record: Record = serde_json::from_slice(&bytes).map_err(|source| Error::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        if record.format != FORMAT_VERSION {
            return Err(Error::FormatVersion {
                path: path.to_path_buf(),
                found: record.format,
                expected: FORMAT_VERSION,
            });
        }
        Ok(record)
    }

    /// Writes the record to `path` atomically, as pretty JSON (diffable, like `dvc.lock`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|source| Error::Serialize {
            what: "the record",
            source,
        })?;
        bytes.push(b'\n');
        write_atomic(path, &bytes)
    }

    /// The manifest of a stage, if it has run.
    pub fn stage(&self, name: &str) -> Option<&StageManifest> {
        self.stages.get(name)
    }

    /// Records a stage's manifest, replacing its previous one.
    pub fn insert(&mut self, manifest: StageManifest) {
        self.stages.insert(manifest.stage.clone(), manifest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{digest_bytes, digest_value};
    use serde_json::json;

    fn sample_manifest() -> StageManifest {
        let params = json!({"bins": 9, "target": {"per_bin": 1200}});
        StageManifest {
            stage: "balance".into(),
            code_version: "3".into(),
            params_digest: digest_value(&params).unwrap(),
            params,
            inputs: BTreeMap::from([(
                "pca.parquet".into(),
                InputRecord {
                    digest: digest_bytes(b"pca"),
                    size: 3,
                },
            )]),
            outputs: BTreeMap::from([
                (
                    "plan.parquet".into(),
                    OutputRecord {
                        kind: PathKind::File,
                        digest: digest_bytes(b"plan"),
                        size: 4,
                        mtime_ns: 1_700_000_000_123_456_789,
                    },
                ),
                (
                    "shards".into(),
                    OutputRecord {
                        kind: PathKind::Dir { files: 12 },
                        digest: digest_bytes(b"dir"),
                        size: 1 << 40,
                        mtime_ns: -5,
                    },
                ),
            ]),
            rows: BTreeMap::from([("samples".into(), 40_000)]),
            duration_s: 1.25,
        }
    }

    #[test]
    fn record_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = Record::path_in(dir.path());
        let mut record = Record::new();
        record.insert(sample_manifest());
        record.save(&path).unwrap();
        let loaded = Record::load(&path).unwrap();
        assert_eq!(loaded, record);
        assert_eq!(loaded.stage("balance").unwrap().rows["samples"], 40_000);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"kind\": \"dir\""), "{text}");
    }

    #[test]
    fn missing_record_is_empty_and_bad_ones_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = Record::path_in(dir.path());
        assert_eq!(Record::load(&path).unwrap(), Record::new());

        fs::write(&path, b"{\"format\": 1, \"stages\": [").unwrap();
        let err = Record::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("wingflow.lock") && err.contains("line"),
            "{err}"
        );

        fs::write(&path, b"{\"format\": 99, \"stages\": {}}").unwrap();
        let err = Record::load(&path).unwrap_err().to_string();
        assert!(err.contains("format version 99"), "{err}");
    }
}
