//! Landmark error metrics, shared by `wingflow` (faces scored in the source image, through the
//! two-stage path) and `wingflow-train` (faces scored on shard crops).
//!
//! NME of a face = mean over its usable points (visible, finite target) of the Euclidean point
//! error, divided by the face's normaliser; reports give it ×100. The AUC at a threshold t is
//! the area under the CED curve on [0, t] divided by t, which for a step CED is exactly
//! mean(max(0, t − NMEᵢ)) / t; the failure rate is the fraction of faces with NME > t.
//!
//! No dependency beyond serde: both the torch-free CLI and the libtorch trainer link it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Thresholds at which AUC and failure rate are reported.
pub const THRESHOLDS: [f64; 2] = [0.08, 0.10];

/// A normaliser specification that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("normaliser `{spec}`: {reason}")]
pub struct NormaliserError {
    /// The specification as given.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

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
    /// Width of the box of the face's usable target points.
    BoxWidth,
    /// sqrt(width × height) of that box.
    BoxSqrtArea,
}

impl Normaliser {
    /// Parse `inter-ocular:A,B`, `inter-pupil:L0-L1,R0-R1`, `box-width` or `box-sqrt` (the
    /// forms [`Display`](fmt::Display) writes). `by_name` resolves the index-free names
    /// (`inter-ocular`, `inter-pupil`, or a scheme's own alternative names) for the caller's
    /// landmark scheme; it returns `None` for a name the scheme does not define.
    pub fn parse(
        spec: &str,
        by_name: impl Fn(&str) -> Option<Normaliser>,
    ) -> Result<Self, NormaliserError> {
        let bad = |reason: &str| NormaliserError {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let index = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| bad("indices must be integers"))
        };
        match spec.split_once(':') {
            None if spec == "box-width" => Ok(Self::BoxWidth),
            None if spec == "box-sqrt" => Ok(Self::BoxSqrtArea),
            None => by_name(spec).ok_or_else(|| {
                bad(
                    "not defined for this landmark scheme; expected inter-ocular[:A,B], \
                     inter-pupil[:L0-L1,R0-R1], box-width or box-sqrt",
                )
            }),
            Some(("inter-ocular", args)) => {
                let (a, b) = args.split_once(',').ok_or_else(|| bad("expected A,B"))?;
                Ok(Self::InterOcular {
                    a: index(a)?,
                    b: index(b)?,
                })
            }
            Some(("inter-pupil", args)) => {
                let range = |s: &str| -> Result<Vec<usize>, NormaliserError> {
                    let (lo, hi) = s
                        .split_once('-')
                        .ok_or_else(|| bad("expected L0-L1,R0-R1"))?;
                    let (lo, hi) = (index(lo)?, index(hi)?);
                    if lo > hi {
                        return Err(bad(&format!(
                            "the range {lo}-{hi} is reversed (expected L0-L1 with L0 <= L1)"
                        )));
                    }
                    Ok((lo..=hi).collect())
                };
                let (l, r) = args
                    .split_once(',')
                    .ok_or_else(|| bad("expected L0-L1,R0-R1"))?;
                Ok(Self::InterPupil {
                    left: range(l)?,
                    right: range(r)?,
                })
            }
            Some(_) => Err(bad(
                "expected inter-ocular[:A,B], inter-pupil[:L0-L1,R0-R1], box-width or box-sqrt",
            )),
        }
    }

    /// Largest point index the normaliser uses (for a check against the scheme's point count).
    pub fn max_index(&self) -> Option<usize> {
        match self {
            Self::InterOcular { a, b } => Some(*a.max(b)),
            Self::InterPupil { left, right } => left.iter().chain(right).copied().max(),
            Self::BoxWidth | Self::BoxSqrtArea => None,
        }
    }

    /// The normalising distance for a face: `target` holds L points, `usable[i]` says whether
    /// point i counts. `None` when the points it needs are not usable or the distance is not
    /// positive.
    pub fn distance(&self, target: &[[f64; 2]], usable: &[bool]) -> Option<f64> {
        let point = |i: usize| usable.get(i).copied().unwrap_or(false).then(|| target[i]);
        let d = match self {
            Self::InterOcular { a, b } => dist(point(*a)?, point(*b)?),
            Self::InterPupil { left, right } => {
                let centroid = |idx: &[usize]| -> Option<[f64; 2]> {
                    let pts: Vec<[f64; 2]> = idx.iter().filter_map(|&i| point(i)).collect();
                    let n = pts.len() as f64;
                    (!pts.is_empty()).then(|| {
                        [
                            pts.iter().map(|p| p[0]).sum::<f64>() / n,
                            pts.iter().map(|p| p[1]).sum::<f64>() / n,
                        ]
                    })
                };
                dist(centroid(left)?, centroid(right)?)
            }
            Self::BoxWidth | Self::BoxSqrtArea => {
                let pts: Vec<[f64; 2]> = (0..target.len()).filter_map(point).collect();
                if pts.is_empty() {
                    return None;
                }
                let extent = |k: usize| {
                    let lo = pts.iter().map(|p| p[k]).fold(f64::INFINITY, f64::min);
                    let hi = pts.iter().map(|p| p[k]).fold(f64::NEG_INFINITY, f64::max);
                    hi - lo
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
        let span = |v: &[usize]| match (v.first(), v.last()) {
            (Some(a), Some(b)) => format!("{a}-{b}"),
            _ => String::new(),
        };
        match self {
            Self::InterOcular { a, b } => write!(f, "inter-ocular:{a},{b}"),
            Self::InterPupil { left, right } => {
                write!(f, "inter-pupil:{},{}", span(left), span(right))
            }
            Self::BoxWidth => f.write_str("box-width"),
            Self::BoxSqrtArea => f.write_str("box-sqrt"),
        }
    }
}

fn dist(p: [f64; 2], q: [f64; 2]) -> f64 {
    (p[0] - q[0]).hypot(p[1] - q[1])
}

/// Points from a flat `x0, y0, x1, y1, …` slice.
pub fn points(flat: &[f32]) -> Vec<[f64; 2]> {
    flat.chunks_exact(2)
        .map(|c| [f64::from(c[0]), f64::from(c[1])])
        .collect()
}

/// NME of one face as a fraction (not ×100). `pred` and `target` hold L points, `visible` L
/// flags; a point counts when it is visible and its target is finite. `None` when no point
/// counts or the normaliser is undefined for this face.
pub fn face_nme(
    pred: &[[f64; 2]],
    target: &[[f64; 2]],
    visible: &[bool],
    normaliser: &Normaliser,
) -> Option<f64> {
    let usable: Vec<bool> = (0..target.len())
        .map(|i| {
            let t = target[i];
            visible.get(i).copied().unwrap_or(false) && t[0].is_finite() && t[1].is_finite()
        })
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

/// The `q`-quantile (q in [0, 1]) of values sorted ascending, by the lower nearest rank: the
/// value at index ⌊q·n⌋, clamped to the last. `None` when there are no values.
pub fn sorted_quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((q * sorted.len() as f64) as usize).min(last)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_quantile_takes_the_lower_nearest_rank() {
        let v: Vec<f64> = (0..10).map(f64::from).collect();
        assert_eq!(sorted_quantile(&v, 0.0), Some(0.0));
        assert_eq!(sorted_quantile(&v, 0.5), Some(5.0));
        assert_eq!(sorted_quantile(&v, 0.9), Some(9.0));
        assert_eq!(sorted_quantile(&v, 0.99), Some(9.0));
        assert_eq!(sorted_quantile(&v, 1.0), Some(9.0));
        assert_eq!(sorted_quantile(&[], 0.5), None);
    }

    #[test]
    fn nme_by_hand() {
        // 3 points; target eyes at (10,10) and (30,10): inter-ocular 20.
        let target = [[10.0, 10.0], [30.0, 10.0], [20.0, 25.0]];
        let pred = [[13.0, 14.0], [30.0, 10.0], [20.0, 23.0]]; // errors 5, 0, 2
        let all = [true, true, true];
        let io = Normaliser::InterOcular { a: 0, b: 1 };
        let close = |v: Option<f64>, want: f64| (v.unwrap() - want).abs() < 1e-12;
        assert!(close(
            face_nme(&pred, &target, &all, &io),
            (7.0 / 3.0) / 20.0
        ));
        // Invisible point 2 leaves errors 5 and 0.
        let some = [true, true, false];
        assert!(close(face_nme(&pred, &target, &some, &io), 2.5 / 20.0));
        // Box of the targets: 20 wide, 15 high.
        let boxed = face_nme(&pred, &target, &all, &Normaliser::BoxWidth);
        assert!(close(boxed, (7.0 / 3.0) / 20.0));
        let sqrt = face_nme(&pred, &target, &all, &Normaliser::BoxSqrtArea);
        assert!(close(sqrt, (7.0 / 3.0) / 300f64.sqrt()));
        // Pupils as centroids of {0} and {1, 2}: (10,10) vs (25,17.5).
        let ip = Normaliser::InterPupil {
            left: vec![0],
            right: vec![1, 2],
        };
        let d = (15.0f64 * 15.0 + 7.5 * 7.5).sqrt();
        assert!(close(face_nme(&pred, &target, &all, &ip), (7.0 / 3.0) / d));
        // A normaliser point that is not visible makes the face unscorable; so does a
        // non-finite target.
        assert_eq!(face_nme(&pred, &target, &[false, true, true], &io), None);
        let mut missing = target;
        missing[1] = [f64::NAN, f64::NAN];
        assert_eq!(face_nme(&pred, &missing, &all, &io), None);
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
        assert_eq!(s.thresholds[1].failure_rate, 0.25);
    }

    #[test]
    fn parse_round_trips_and_resolves_names() {
        let names = |name: &str| match name {
            "inter-ocular" => Some(Normaliser::InterOcular { a: 36, b: 45 }),
            _ => None,
        };
        assert_eq!(
            Normaliser::parse("inter-ocular", names).unwrap(),
            Normaliser::InterOcular { a: 36, b: 45 }
        );
        assert_eq!(
            Normaliser::parse("inter-ocular:1,2", names).unwrap(),
            Normaliser::InterOcular { a: 1, b: 2 }
        );
        let ip = Normaliser::parse("inter-pupil:36-41,42-47", names).unwrap();
        assert_eq!(ip.to_string(), "inter-pupil:36-41,42-47");
        assert_eq!(ip.max_index(), Some(47));
        assert_eq!(Normaliser::parse(&ip.to_string(), names).unwrap(), ip);
        assert_eq!(
            Normaliser::parse("box-sqrt", names).unwrap(),
            Normaliser::BoxSqrtArea
        );
        let err = Normaliser::parse("inter-pupil", names).unwrap_err();
        assert!(err.to_string().contains("not defined"), "{err}");
        assert!(Normaliser::parse("inter-ocular:a,b", names).is_err());
        let reversed = Normaliser::parse("inter-pupil:41-36,47-42", names).unwrap_err();
        assert!(
            reversed.to_string().contains("41-36 is reversed"),
            "{reversed}"
        );
        assert!(Normaliser::parse("median:1", names).is_err());
    }
}
