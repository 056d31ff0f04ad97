//! `plan.parquet` I/O and the balance stage's JSON summary (`balance.json`).
//!
//! Columns of `plan.parquet`, one row per [`PlanRow`]: `sample_id` (str), `split` (str),
//! `replica` (u32), `bin` (u32, null outside `train`), `pose_coefficient` (f32, nullable),
//! `seed` (u64), `shard_stage1` (u32), `shard_stage2` (u32).
//!
//! Writes are atomic: a temporary file beside the target, fsync, rename.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::plan::{PlanRow, ShardCounts};

/// Why the plan table could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PlanTableError {
    /// The atomic write (temporary file, fsync, rename) failed; the message names the file.
    #[error(transparent)]
    Write(#[from] manifests::Error),
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Polars could not encode or decode the table.
    #[error("{path}: {source}")]
    Polars {
        /// The file.
        path: PathBuf,
        /// Polars' error.
        source: PolarsError,
    },
    /// A column is missing or has the wrong type.
    #[error("{path}: column `{column}`: {reason}")]
    Column {
        /// The file.
        path: PathBuf,
        /// The column.
        column: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A required value is null.
    #[error("{path}: row {row}: column `{column}` is null")]
    Null {
        /// The file.
        path: PathBuf,
        /// 0-based row.
        row: usize,
        /// The column.
        column: &'static str,
    },
    /// The summary could not be encoded.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's error.
        source: serde_json::Error,
    },
}

/// What the balance stage did, written as `balance.json` beside `plan.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalanceSummary {
    /// `true`: the histogram bins |coefficient|; `false`: the signed coefficient.
    pub histogram_of_absolute: bool,
    /// K + 1 bin edges (empty without training samples); bins are [eᵢ, eᵢ₊₁), the last one
    /// closed.
    pub bin_edges: Vec<f64>,
    /// Training samples per bin.
    pub counts_before: Vec<u64>,
    /// Training rows per bin after replication.
    pub counts_after: Vec<u64>,
    /// Rows per sample in each bin (0 for an empty bin).
    pub replication: Vec<u32>,
    /// Samples moved from `train` to `val`.
    pub val_carved: u64,
    /// Samples moved from `train` to `test` (carve-outs by photo; absent for carve-outs by
    /// face, which make none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_carved: Option<u64>,
    /// Plan rows per split, by split name.
    pub rows_per_split: Vec<(String, u64)>,
    /// Shard bytes per stage-1 sample (the shard count estimate).
    pub bytes_per_sample_stage1: u64,
    /// Shard bytes per stage-2 sample.
    pub bytes_per_sample_stage2: u64,
    /// The target shard size.
    pub target_shard_bytes: u64,
    /// Shard count of every (crop stage, split) set.
    pub shard_counts: ShardCounts,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PlanTableError + '_ {
    move |source| PlanTableError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Write the plan rows to `path` as Parquet, atomically.
pub fn write_plan_parquet(path: &Path, rows: &[PlanRow]) -> Result<(), PlanTableError> {
    let columns = vec![
        Column::new(
            "sample_id".into(),
            rows.iter()
                .map(|r| r.sample_id.as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "split".into(),
            rows.iter().map(|r| r.split.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "replica".into(),
            rows.iter().map(|r| r.replica).collect::<Vec<_>>(),
        ),
        Column::new("bin".into(), rows.iter().map(|r| r.bin).collect::<Vec<_>>()),
        Column::new(
            "pose_coefficient".into(),
            rows.iter().map(|r| r.pose_coefficient).collect::<Vec<_>>(),
        ),
        Column::new(
            "seed".into(),
            rows.iter().map(|r| r.seed).collect::<Vec<_>>(),
        ),
        Column::new(
            "shard_stage1".into(),
            rows.iter().map(|r| r.shard_stage1).collect::<Vec<_>>(),
        ),
        Column::new(
            "shard_stage2".into(),
            rows.iter().map(|r| r.shard_stage2).collect::<Vec<_>>(),
        ),
    ];
    let polars_error = |source| PlanTableError::Polars {
        path: path.to_owned(),
        source,
    };
    let mut df = DataFrame::new(rows.len(), columns).map_err(polars_error)?;
    // Buffered in memory (a plan is a few MB) so one atomic-write helper serves every file.
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes)
        .finish(&mut df)
        .map_err(polars_error)?;
    Ok(manifests::write_atomic(path, &bytes)?)
}

/// Read `plan.parquet` back into rows (file order).
pub fn read_plan_parquet(path: &Path) -> Result<Vec<PlanRow>, PlanTableError> {
    let polars_error = |source| PlanTableError::Polars {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_error(path))?;
    let df = ParquetReader::new(file).finish().map_err(polars_error)?;
    let column = |name: &'static str| {
        df.column(name).map_err(|e| PlanTableError::Column {
            path: path.to_owned(),
            column: name,
            reason: e.to_string(),
        })
    };
    let typed = |name: &'static str| {
        move |e: PolarsError| PlanTableError::Column {
            path: path.to_owned(),
            column: name,
            reason: e.to_string(),
        }
    };
    let sample_id = column("sample_id")?.str().map_err(typed("sample_id"))?;
    let split = column("split")?.str().map_err(typed("split"))?;
    let replica = column("replica")?.u32().map_err(typed("replica"))?;
    let bin = column("bin")?.u32().map_err(typed("bin"))?;
    let pose = column("pose_coefficient")?
        .f32()
        .map_err(typed("pose_coefficient"))?;
    let seed = column("seed")?.u64().map_err(typed("seed"))?;
    let shard1 = column("shard_stage1")?
        .u32()
        .map_err(typed("shard_stage1"))?;
    let shard2 = column("shard_stage2")?
        .u32()
        .map_err(typed("shard_stage2"))?;
    let null = |row: usize, column: &'static str| PlanTableError::Null {
        path: path.to_owned(),
        row,
        column,
    };
    let mut rows = Vec::with_capacity(df.height());
    for (row, (((((((id, sp), rep), b), p), s), s1), s2)) in sample_id
        .iter()
        .zip(split.iter())
        .zip(replica.iter())
        .zip(bin.iter())
        .zip(pose.iter())
        .zip(seed.iter())
        .zip(shard1.iter())
        .zip(shard2.iter())
        .enumerate()
    {
        rows.push(PlanRow {
            sample_id: id.ok_or_else(|| null(row, "sample_id"))?.to_owned(),
            split: sp.ok_or_else(|| null(row, "split"))?.to_owned(),
            replica: rep.ok_or_else(|| null(row, "replica"))?,
            bin: b,
            pose_coefficient: p,
            seed: s.ok_or_else(|| null(row, "seed"))?,
            shard_stage1: s1.ok_or_else(|| null(row, "shard_stage1"))?,
            shard_stage2: s2.ok_or_else(|| null(row, "shard_stage2"))?,
        });
    }
    Ok(rows)
}

/// Write the summary as pretty JSON, atomically.
pub fn write_summary_json(path: &Path, summary: &BalanceSummary) -> Result<(), PlanTableError> {
    let json = serde_json::to_vec_pretty(summary).map_err(|source| PlanTableError::Json {
        path: path.to_owned(),
        source,
    })?;
    Ok(manifests::write_atomic(path, &json)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, split: &str, replica: u32, bin: Option<u32>, pose: Option<f32>) -> PlanRow {
        PlanRow {
            sample_id: id.to_owned(),
            split: split.to_owned(),
            replica,
            bin,
            pose_coefficient: pose,
            seed: u64::MAX - u64::from(replica),
            shard_stage1: 3,
            shard_stage2: 7,
        }
    }

    #[test]
    fn plan_round_trips_with_nulls_and_extreme_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plan.parquet");
        let rows = vec![
            row("300w/ibug/image_003_1", "challenging", 0, None, Some(-0.25)),
            row("aflw/0001", "train", 0, Some(8), Some(0.5)),
            row("aflw/0001", "train", 1, Some(8), Some(0.5)),
            row("aflw/0002", "val", 0, None, None),
        ];
        write_plan_parquet(&path, &rows).expect("writes");
        assert_eq!(read_plan_parquet(&path).expect("reads"), rows);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("lists").collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn empty_plan_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plan.parquet");
        write_plan_parquet(&path, &[]).expect("writes");
        assert!(read_plan_parquet(&path).expect("reads").is_empty());
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read_plan_parquet(Path::new("/nonexistent/plan.parquet")).expect_err("fails");
        assert!(
            err.to_string().contains("/nonexistent/plan.parquet"),
            "{err}"
        );
    }

    #[test]
    fn summary_serialises() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("balance.json");
        let summary = BalanceSummary {
            histogram_of_absolute: true,
            bin_edges: vec![0.0, 0.5, 1.0],
            counts_before: vec![10, 2],
            counts_after: vec![10, 10],
            replication: vec![1, 5],
            val_carved: 1,
            test_carved: None,
            rows_per_split: vec![("train".into(), 20)],
            bytes_per_sample_stage1: 12_976,
            bytes_per_sample_stage2: 49_840,
            target_shard_bytes: 64 << 20,
            shard_counts: ShardCounts {
                stage1: vec![("train".into(), 1)],
                stage2: vec![("train".into(), 1)],
            },
        };
        write_summary_json(&path, &summary).expect("writes");
        let back: BalanceSummary =
            serde_json::from_slice(&std::fs::read(&path).expect("reads")).expect("parses");
        assert_eq!(back, summary);
    }
}
