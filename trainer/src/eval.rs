//! Evaluation: NME per face, CED curve, AUC and failure rate, per split and per pose bin.
//!
//! NME of a face = mean over its visible points (annotated, not occluded, finite target) of the
//! Euclidean point error, divided by the face's normaliser; reports give it ×100. The AUC at a
//! threshold t is the area under the CED curve on [0, t] divided by t, which for a step CED is
//! exactly mean(max(0, t − NMEᵢ)) / t; the failure rate is the fraction of faces with NME > t.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::error::{Result, TorchContext, TrainerError, io_err};
use crate::model::LandmarkNet;
use crate::predict::ensure_set_fits;
use crate::shards::{Loader, LoaderConfig, LoaderPosition, SampleOrder, ShardSet};

/// Thresholds at which AUC and failure rate are reported.
pub const THRESHOLDS: [f64; 2] = [0.08, 0.10];

/// What a face's mean point error is divided by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Normaliser {
    /// Distance between points `a` and `b` (outer eye corners).
    InterOcular {
        /// First point.
        a: usize,
        /// Second point.
        b: usize,
    },
    /// Distance between the centroids of two point groups (pupils as eye-point means).
    InterPupil {
        /// Points of one eye.
        left: Vec<usize>,
        /// Points of the other eye.
        right: Vec<usize>,
    },
    /// Width of the box of the face's visible target points.
    BoxWidth,
    /// sqrt(width × height) of that box.
    BoxSqrtArea,
}

impl Normaliser {
    /// The default normaliser of a scheme (DESIGN.md's scheme table; the trainer does not link
    /// the `stages` crate, so the few index pairs it needs are repeated here), box width for an
    /// unknown scheme.
    pub fn default_for_scheme(scheme: &str) -> Self {
        match scheme {
            "ibug68" => Self::InterOcular { a: 36, b: 45 },
            "wflw98" => Self::InterOcular { a: 60, b: 72 },
            "cofw29" => Self::InterOcular { a: 8, b: 9 },
            _ => Self::BoxWidth,
        }
    }

    /// Parse `inter-ocular[:A,B]`, `inter-pupil[:L0-L1,R0-R1]`, `box-width`, `box-sqrt`. Without
    /// indices the scheme's points are used (ibug68: corners 36, 45; eyes 36–41, 42–47; aflw19:
    /// corners 6, 11; eyes 6–8, 9–11).
    pub fn parse(spec: &str, scheme: &str) -> Result<Self> {
        let bad = |why: &str| TrainerError::Config(format!("normaliser `{spec}`: {why}"));
        let (name, args) = match spec.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (spec, None),
        };
        let index = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| bad("indices must be integers"))
        };
        match (name, args) {
            ("box-width", None) => Ok(Self::BoxWidth),
            ("box-sqrt", None) => Ok(Self::BoxSqrtArea),
            ("inter-ocular", Some(args)) => {
                let (a, b) = args.split_once(',').ok_or_else(|| bad("expected A,B"))?;
                Ok(Self::InterOcular {
                    a: index(a)?,
                    b: index(b)?,
                })
            }
            ("inter-ocular", None) => match scheme {
                "aflw19" => Ok(Self::InterOcular { a: 6, b: 11 }),
                _ => match Self::default_for_scheme(scheme) {
                    n @ Self::InterOcular { .. } => Ok(n),
                    _ => Err(bad(&format!(
                        "no eye corners known for scheme `{scheme}`; give inter-ocular:A,B"
                    ))),
                },
            },
            ("inter-pupil", Some(args)) => {
                let range = |s: &str| -> Result<Vec<usize>> {
                    let (lo, hi) = s
                        .split_once('-')
                        .ok_or_else(|| bad("expected L0-L1,R0-R1"))?;
                    Ok((index(lo)?..=index(hi)?).collect())
                };
                let (l, r) = args
                    .split_once(',')
                    .ok_or_else(|| bad("expected L0-L1,R0-R1"))?;
                Ok(Self::InterPupil {
                    left: range(l)?,
                    right: range(r)?,
                })
            }
            ("inter-pupil", None) => match scheme {
                "ibug68" => Ok(Self::InterPupil {
                    left: (36..=41).collect(),
                    right: (42..=47).collect(),
                }),
                "aflw19" => Ok(Self::InterPupil {
                    left: (6..=8).collect(),
                    right: (9..=11).collect(),
                }),
                _ => Err(bad(&format!(
                    "no eye points known for scheme `{scheme}`; give inter-pupil:L0-L1,R0-R1"
                ))),
            },
            _ => Err(bad(
                "expected inter-ocular[:A,B], inter-pupil[:L0-L1,R0-R1], box-width or box-sqrt",
            )),
        }
    }

    /// Largest point index the normaliser uses (for a check against L).
    fn max_index(&self) -> Option<usize> {
        match self {
            Self::InterOcular { a, b } => Some(*a.max(b)),
            Self::InterPupil { left, right } => left.iter().chain(right).copied().max(),
            Self::BoxWidth | Self::BoxSqrtArea => None,
        }
    }

    /// The normalising distance for a face: `target` holds L points, `usable[i]` says whether
    /// point i counts. `None` when the points it needs are not usable or the distance is 0.
    pub fn distance(&self, target: &[[f32; 2]], usable: &[bool]) -> Option<f64> {
        let point = |i: usize| usable.get(i).copied().unwrap_or(false).then(|| target[i]);
        let d = match self {
            Self::InterOcular { a, b } => dist(point(*a)?, point(*b)?),
            Self::InterPupil { left, right } => {
                let centroid = |idx: &[usize]| -> Option<[f32; 2]> {
                    let pts: Vec<[f32; 2]> = idx.iter().filter_map(|&i| point(i)).collect();
                    if pts.is_empty() {
                        return None;
                    }
                    let n = pts.len() as f32;
                    Some([
                        pts.iter().map(|p| p[0]).sum::<f32>() / n,
                        pts.iter().map(|p| p[1]).sum::<f32>() / n,
                    ])
                };
                dist(centroid(left)?, centroid(right)?)
            }
            Self::BoxWidth | Self::BoxSqrtArea => {
                let pts: Vec<[f32; 2]> = (0..target.len()).filter_map(point).collect();
                if pts.is_empty() {
                    return None;
                }
                let extent = |k: usize| {
                    let lo = pts.iter().map(|p| p[k]).fold(f32::INFINITY, f32::min);
                    let hi = pts.iter().map(|p| p[k]).fold(f32::NEG_INFINITY, f32::max);
                    f64::from(hi - lo)
                };
                if matches!(self, Self::BoxWidth) {
                    extent(0)
                } else {
                    (extent(0) * extent(1)).sqrt()
                }
            }
        };
        (d > 0.0 && d.is_finite()).then_some(d)
    }
}

impl fmt::Display for Normaliser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InterOcular { a, b } => write!(f, "inter-ocular:{a},{b}"),
            Self::InterPupil { left, right } => {
                let span = |v: &[usize]| match (v.first(), v.last()) {
                    (Some(a), Some(b)) => format!("{a}-{b}"),
                    _ => String::new(),
                };
                write!(f, "inter-pupil:{},{}", span(left), span(right))
            }
            Self::BoxWidth => f.write_str("box-width"),
            Self::BoxSqrtArea => f.write_str("box-sqrt"),
        }
    }
}

fn dist(p: [f32; 2], q: [f32; 2]) -> f64 {
    f64::from(p[0] - q[0]).hypot(f64::from(p[1] - q[1]))
}

/// NME of one face as a fraction (not ×100). `pred`/`target` are L points, `visible` L flags.
/// `None` when no point is usable or the normaliser is undefined for this face.
pub fn face_nme(
    pred: &[[f32; 2]],
    target: &[[f32; 2]],
    visible: &[bool],
    normaliser: &Normaliser,
) -> Option<f64> {
    let usable: Vec<bool> = target
        .iter()
        .zip(visible)
        .map(|(t, &v)| v && t[0].is_finite() && t[1].is_finite())
        .collect();
    let norm = normaliser.distance(target, &usable)?;
    let errors: Vec<f64> = (0..target.len())
        .filter(|&i| usable[i])
        .map(|i| dist(pred[i], target[i]))
        .collect();
    if errors.is_empty() {
        return None;
    }
    Some(errors.iter().sum::<f64>() / errors.len() as f64 / norm)
}

/// AUC at threshold `t`: the CED's area on [0, t] over t, in [0, 1].
pub fn auc(nmes: &[f64], t: f64) -> f64 {
    if nmes.is_empty() {
        return 0.0;
    }
    nmes.iter().map(|&e| (t - e).max(0.0)).sum::<f64>() / (t * nmes.len() as f64)
}

/// Fraction of faces with NME above `t`.
pub fn failure_rate(nmes: &[f64], t: f64) -> f64 {
    if nmes.is_empty() {
        return 0.0;
    }
    nmes.iter().filter(|&&e| e > t).count() as f64 / nmes.len() as f64
}

/// Cumulative error distribution: `fraction[i]` of faces have NME ≤ `nme[i]` (fractions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CedCurve {
    /// NME values (fractions, not ×100), evenly spaced from 0.
    pub nme: Vec<f64>,
    /// Fraction of faces at or below each value.
    pub fraction: Vec<f64>,
}

impl CedCurve {
    /// The CED at `steps + 1` evenly spaced points on [0, max].
    pub fn new(nmes: &[f64], max: f64, steps: usize) -> Self {
        let mut sorted = nmes.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len().max(1) as f64;
        let nme: Vec<f64> = (0..=steps)
            .map(|i| max * i as f64 / steps.max(1) as f64)
            .collect();
        let fraction = nme
            .iter()
            .map(|&t| sorted.partition_point(|&e| e <= t) as f64 / n)
            .collect();
        Self { nme, fraction }
    }
}

/// AUC and failure rate at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdStats {
    /// Threshold (fraction, e.g. 0.08).
    pub threshold: f64,
    /// AUC in [0, 1].
    pub auc: f64,
    /// Fraction of faces with NME above the threshold.
    pub failure_rate: f64,
}

/// Error statistics of a set of faces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorSummary {
    /// Faces evaluated.
    pub faces: usize,
    /// Mean NME ×100.
    pub mean_nme_percent: f64,
    /// Median NME ×100.
    pub median_nme_percent: f64,
    /// AUC and failure rate at each of [`THRESHOLDS`].
    pub thresholds: Vec<ThresholdStats>,
    /// CED on [0, 0.10] (101 points).
    pub ced: CedCurve,
}

impl ErrorSummary {
    /// Summarise per-face NMEs (fractions).
    pub fn new(nmes: &[f64]) -> Self {
        let mut sorted = nmes.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = match sorted.len() {
            0 => 0.0,
            n if n % 2 == 1 => sorted[n / 2],
            n => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
        };
        let mean = if nmes.is_empty() {
            0.0
        } else {
            nmes.iter().sum::<f64>() / nmes.len() as f64
        };
        Self {
            faces: nmes.len(),
            mean_nme_percent: 100.0 * mean,
            median_nme_percent: 100.0 * median,
            thresholds: THRESHOLDS
                .iter()
                .map(|&t| ThresholdStats {
                    threshold: t,
                    auc: auc(nmes, t),
                    failure_rate: failure_rate(nmes, t),
                })
                .collect(),
            ced: CedCurve::new(nmes, 0.10, 100),
        }
    }
}

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
    let config = LoaderConfig {
        batch_size: batch_size.max(1),
        order: SampleOrder::Sequential,
        drop_last: false,
        prefetch: 2,
        epochs: Some(1),
    };
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
            let points = |v: &[f32]| -> Vec<[f32; 2]> {
                v[face * l * 2..(face + 1) * l * 2]
                    .chunks_exact(2)
                    .map(|c| [c[0], c[1]])
                    .collect()
            };
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
    fn nme_by_hand() {
        // 3 points; target eyes at (10,10) and (30,10): inter-ocular 20.
        let target = [[10.0, 10.0], [30.0, 10.0], [20.0, 25.0]];
        let pred = [[13.0, 14.0], [30.0, 10.0], [20.0, 23.0]]; // errors 5, 0, 2
        let all = [true, true, true];
        let io = Normaliser::InterOcular { a: 0, b: 1 };
        assert!((face_nme(&pred, &target, &all, &io).unwrap() - (7.0 / 3.0) / 20.0).abs() < 1e-12);
        // Invisible point 2 leaves errors 5 and 0.
        let some = [true, true, false];
        assert!((face_nme(&pred, &target, &some, &io).unwrap() - 2.5 / 20.0).abs() < 1e-12);
        // Box of the targets: 20 wide, 15 high.
        assert!(
            (face_nme(&pred, &target, &all, &Normaliser::BoxWidth).unwrap() - (7.0 / 3.0) / 20.0)
                .abs()
                < 1e-12
        );
        let sqrt = (20.0f64 * 15.0).sqrt();
        assert!(
            (face_nme(&pred, &target, &all, &Normaliser::BoxSqrtArea).unwrap()
                - (7.0 / 3.0) / sqrt)
                .abs()
                < 1e-12
        );
        // Pupils as centroids of {0} and {1, 2}: (10,10) vs (25,17.5).
        let ip = Normaliser::InterPupil {
            left: vec![0],
            right: vec![1, 2],
        };
        let d = (15.0f64 * 15.0 + 7.5 * 7.5).sqrt();
        assert!((face_nme(&pred, &target, &all, &ip).unwrap() - (7.0 / 3.0) / d).abs() < 1e-12);
        // A normaliser point that is not visible makes the face unscorable.
        assert_eq!(face_nme(&pred, &target, &[false, true, true], &io), None);
    }

    #[test]
    fn auc_failure_and_ced_by_hand() {
        let nmes = [0.02, 0.05, 0.09, 0.20];
        // AUC@0.10 = mean(0.08, 0.05, 0.01, 0) / 0.10 = 0.35.
        assert!((auc(&nmes, 0.10) - 0.35).abs() < 1e-12);
        // AUC@0.08 = mean(0.06, 0.03, 0, 0) / 0.08 = 0.28125.
        assert!((auc(&nmes, 0.08) - 0.28125).abs() < 1e-12);
        assert_eq!(failure_rate(&nmes, 0.08), 0.5);
        assert_eq!(failure_rate(&nmes, 0.10), 0.25);
        let ced = CedCurve::new(&nmes, 0.10, 100);
        assert_eq!(ced.nme.len(), 101);
        assert_eq!(ced.fraction[0], 0.0);
        assert_eq!(ced.fraction[50], 0.5);
        assert_eq!(ced.fraction[100], 0.75);
        // The CED's trapezoid area over [0, 0.1] approaches the exact AUC.
        let area: f64 = ced
            .fraction
            .windows(2)
            .map(|w| 0.5 * (w[0] + w[1]) * 0.001)
            .sum();
        assert!((area / 0.10 - 0.35).abs() < 0.01);
        let s = ErrorSummary::new(&nmes);
        assert!((s.mean_nme_percent - 9.0).abs() < 1e-9);
        assert!((s.median_nme_percent - 7.0).abs() < 1e-9);
    }

    #[test]
    fn parse_normalisers() {
        assert_eq!(
            Normaliser::parse("inter-ocular", "ibug68").unwrap(),
            Normaliser::InterOcular { a: 36, b: 45 }
        );
        assert_eq!(
            Normaliser::parse("inter-ocular:1,2", "x").unwrap(),
            Normaliser::InterOcular { a: 1, b: 2 }
        );
        let ip = Normaliser::parse("inter-pupil", "ibug68").unwrap();
        assert_eq!(ip.to_string(), "inter-pupil:36-41,42-47");
        assert_eq!(Normaliser::parse(&ip.to_string(), "x").unwrap(), ip);
        assert_eq!(
            Normaliser::parse("box-sqrt", "x").unwrap(),
            Normaliser::BoxSqrtArea
        );
        assert!(Normaliser::parse("inter-ocular", "synthetic5").is_err());
        assert!(Normaliser::parse("median", "ibug68").is_err());
        assert_eq!(
            Normaliser::default_for_scheme("aflw19"),
            Normaliser::BoxWidth
        );
    }

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
