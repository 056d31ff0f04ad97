//! Evaluation: NME per face, CED curve, AUC and failure rate, per split and per pose bin.
//!
//! NME of a face = mean over its visible points (annotated, not occluded, finite target) of the
//! Euclidean point error, divided by the face's normaliser; reports give it ×100. The AUC at a
//! threshold t is the area under the CED curve on [0, t] divided by t, which for a step CED is
//! exactly mean(max(0, t − NMEᵢ)) / t; the failure rate is the fraction of faces with NME > t.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use contract::metrics::points;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::error::{Result, TorchContext, TrainerError, io_err};
use crate::model::LandmarkNet;
use crate::predict::ensure_set_fits;
use crate::shards::{Loader, LoaderConfig, LoaderPosition, ShardSet};

pub use contract::metrics::{
    CedCurve, ErrorSummary, Normaliser, THRESHOLDS, ThresholdStats, auc, face_nme, failure_rate,
};

/// One face's error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceNme {
    /// Row in the set's `samples.parquet`.
    pub sample_index: i64,
    /// NME ×100.
    pub nme_percent: f64,
}

/// The evaluation of one shard set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitReport {
    /// Split name from the set's index.
    pub split: String,
    /// The set's directory.
    pub shard_dir: PathBuf,
    /// Normaliser used, as parsed by [`Normaliser::parse`].
    pub normaliser: String,
    /// Faces with no usable point or undefined normaliser (not counted in the statistics).
    pub skipped: usize,
    /// Statistics over all evaluated faces.
    pub summary: ErrorSummary,
    /// Statistics per pose bin, when a bin mapping was given (faces absent from it are left out).
    pub per_bin: BTreeMap<String, ErrorSummary>,
    /// Every evaluated face, in shard order.
    pub per_face: Vec<FaceNme>,
}

/// An evaluation report over several splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Weights evaluated.
    pub checkpoint: PathBuf,
    /// `wingflow-train` version.
    pub trainer_version: String,
    /// One report per shard set.
    pub splits: Vec<SplitReport>,
}

/// Read a mapping sample_index → pose bin: a JSON object `{"<sample_index>": bin, …}`, a JSON
/// list of `{"sample_index": …, "bin": …}`, or a CSV with a header naming `sample_index` and
/// `bin` (or `pose_bin`) columns. Bins may be numbers or strings; they become labels.
pub fn load_bins(path: &Path) -> Result<HashMap<i64, String>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let bad = |message: String| TrainerError::Config(format!("{}: {message}", path.display()));
    let label = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| TrainerError::Json {
                path: path.to_owned(),
                source,
            })?;
        let mut bins = HashMap::new();
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in &map {
                    let index = k
                        .parse()
                        .map_err(|_| bad(format!("key `{k}` is not a sample index")))?;
                    bins.insert(index, label(v));
                }
            }
            serde_json::Value::Array(rows) => {
                for (i, row) in rows.iter().enumerate() {
                    let index = row.get("sample_index").and_then(|v| v.as_i64());
                    let bin = row.get("bin").or_else(|| row.get("pose_bin"));
                    match (index, bin) {
                        (Some(index), Some(bin)) => {
                            bins.insert(index, label(bin));
                        }
                        _ => {
                            return Err(bad(format!(
                                "entry {i} lacks an integer `sample_index` or a `bin`"
                            )));
                        }
                    }
                }
            }
            _ => return Err(bad("expected an object or a list".into())),
        }
        return Ok(bins);
    }
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| bad("empty file".into()))?;
    let columns: Vec<&str> = header
        .split(',')
        .map(|c| c.trim().trim_matches('"'))
        .collect();
    let find = |names: &[&str]| columns.iter().position(|c| names.contains(c));
    let index_col =
        find(&["sample_index"]).ok_or_else(|| bad("header has no `sample_index` column".into()))?;
    let bin_col = find(&["bin", "pose_bin"])
        .ok_or_else(|| bad("header has no `bin` or `pose_bin` column".into()))?;
    let mut bins = HashMap::new();
    for (line_no, line) in lines {
        let fields: Vec<&str> = line
            .split(',')
            .map(|c| c.trim().trim_matches('"'))
            .collect();
        let field = |c: usize| {
            fields
                .get(c)
                .copied()
                .ok_or_else(|| bad(format!("line {}: too few fields", line_no + 1)))
        };
        let index = field(index_col)?.parse().map_err(|_| {
            bad(format!(
                "line {}: `sample_index` is not an integer",
                line_no + 1
            ))
        })?;
        bins.insert(index, field(bin_col)?.to_owned());
    }
    Ok(bins)
}

/// Evaluate `net` on every sample of `set`.
pub fn evaluate_set(
    net: &LandmarkNet,
    set: Arc<ShardSet>,
    normaliser: &Normaliser,
    bins: Option<&HashMap<i64, String>>,
    batch_size: usize,
) -> Result<SplitReport> {
    ensure_set_fits(net, &set)?;
    if let Some(max) = normaliser.max_index().filter(|&m| m >= set.num_points()) {
        return Err(TrainerError::Config(format!(
            "normaliser {normaliser} uses point {max}, but {} has {} points",
            set.dir().display(),
            set.num_points()
        )));
    }
    let config = LoaderConfig::one_ordered_pass(batch_size);
    let l = set.num_points();
    let mut per_face = Vec::with_capacity(set.len());
    let mut skipped = 0;
    let mut by_bin: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for loaded in Loader::start(set.clone(), config, LoaderPosition::default())? {
        let batch = loaded?.batch;
        let pred = net
            .predict(&batch.images)?
            .to_device(Device::Cpu)
            .to_kind(Kind::Float);
        let pred = Vec::<f32>::try_from(pred.flatten(0, -1)).torch("reading predictions")?;
        let target =
            Vec::<f32>::try_from(batch.landmarks.flatten(0, -1)).torch("reading targets")?;
        let visible =
            Vec::<u8>::try_from(batch.visible.flatten(0, -1)).torch("reading visibility")?;
        let indices = Vec::<i64>::try_from(&batch.sample_index).torch("reading sample indices")?;
        for (face, &sample_index) in indices.iter().enumerate() {
            let points = |v: &[f32]| points(&v[face * l * 2..(face + 1) * l * 2]);
            let vis: Vec<bool> = visible[face * l..(face + 1) * l]
                .iter()
                .map(|&v| v != 0)
                .collect();
            match face_nme(&points(&pred), &points(&target), &vis, normaliser) {
                Some(nme) => {
                    per_face.push(FaceNme {
                        sample_index,
                        nme_percent: 100.0 * nme,
                    });
                    if let Some(bin) = bins.and_then(|b| b.get(&sample_index)) {
                        by_bin.entry(bin.clone()).or_default().push(nme);
                    }
                }
                None => skipped += 1,
            }
        }
    }
    let nmes: Vec<f64> = per_face.iter().map(|f| f.nme_percent / 100.0).collect();
    Ok(SplitReport {
        split: set.index().split.clone(),
        shard_dir: set.dir().to_owned(),
        normaliser: normaliser.to_string(),
        skipped,
        summary: ErrorSummary::new(&nmes),
        per_bin: by_bin
            .iter()
            .map(|(bin, v)| (bin.clone(), ErrorSummary::new(v)))
            .collect(),
        per_face,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_from_json_and_csv() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("bins.json");
        std::fs::write(&json, r#"{"0": 3, "5": "frontal"}"#).unwrap();
        let bins = load_bins(&json).unwrap();
        assert_eq!(bins[&0], "3");
        assert_eq!(bins[&5], "frontal");
        let csv = dir.path().join("bins.csv");
        std::fs::write(&csv, "shard,sample_index,pose_bin\r\n0,7,2\r\n1,8,4\r\n").unwrap();
        let bins = load_bins(&csv).unwrap();
        assert_eq!((bins[&7].as_str(), bins[&8].as_str()), ("2", "4"));
        std::fs::write(&csv, "sample_index,bin\nx,1\n").unwrap();
        let err = load_bins(&csv).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
