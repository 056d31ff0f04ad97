//! Landmark error metrics in original image coordinates: NME per face, AUC and failure rate at
//! a threshold, per-bin summaries.
//!
//! `wingflow-train` computes the same metrics on shard crops (`trainer::eval`); they are
//! repeated here because `wingflow` must not link the trainer (libtorch), and the two-stage
//! path scores faces in the source image, which only `wingflow` can map back to. The formulas
//! are the same: NME = mean Euclidean error over usable points / normaliser; AUC@t =
//! mean(max(0, t − NME)) / t; failure rate = share of faces with NME > t.

use anyhow::{Result, bail};
use serde::Serialize;
use stages::scheme::{Normaliser as SchemeNormaliser, Scheme};

/// Thresholds at which AUC and failure rate are reported.
pub const THRESHOLDS: [f64; 2] = [0.08, 0.10];

/// What a face's mean point error is divided by.
#[derive(Debug, Clone, PartialEq)]
pub enum Normaliser {
    /// Distance between two points (outer eye corners).
    InterOcular(usize, usize),
    /// Distance between the centroids of two point groups (pupils as eye-point means).
    InterPupil(Vec<usize>, Vec<usize>),
    /// Width of the box of the face's usable target points.
    BoxWidth,
    /// sqrt(width × height) of that box.
    BoxSqrtArea,
}

impl Normaliser {
    /// `None`: the scheme's default; else `inter-ocular`, `inter-pupil` (when the scheme
    /// defines them), `box-width` or `box-sqrt`.
    pub fn parse(spec: Option<&str>, scheme: &Scheme) -> Result<Self> {
        let from_scheme = |n: &SchemeNormaliser| match n {
            SchemeNormaliser::InterOcular { a, b } => Normaliser::InterOcular(*a, *b),
            SchemeNormaliser::InterPupil { left, right } => {
                Normaliser::InterPupil(left.clone(), right.clone())
            }
            SchemeNormaliser::BoxWidth => Normaliser::BoxWidth,
        };
        let Some(spec) = spec else {
            return Ok(from_scheme(&scheme.normaliser));
        };
        match spec {
            "box-width" => return Ok(Normaliser::BoxWidth),
            "box-sqrt" => return Ok(Normaliser::BoxSqrtArea),
            _ => {}
        }
        let wanted = |n: &SchemeNormaliser| {
            matches!(
                (spec, n),
                ("inter-ocular", SchemeNormaliser::InterOcular { .. })
                    | ("inter-pupil", SchemeNormaliser::InterPupil { .. })
            )
        };
        if wanted(&scheme.normaliser) {
            return Ok(from_scheme(&scheme.normaliser));
        }
        if let Some((_, n)) = scheme
            .alternative_normalisers
            .iter()
            .find(|(name, n)| *name == spec || wanted(n))
        {
            return Ok(from_scheme(n));
        }
        bail!(
            "normaliser `{spec}` is not defined for scheme {} (box-width, box-sqrt{})",
            scheme.name,
            scheme
                .alternative_normalisers
                .iter()
                .map(|(n, _)| format!(", {n}"))
                .collect::<String>()
        )
    }

    /// The normalising distance of a face from its target points (`usable[i]`: point i counts);
    /// `None` when a point it needs is unusable or the distance is not positive.
    pub fn distance(&self, target: &[[f64; 2]], usable: &[bool]) -> Option<f64> {
        let point = |i: usize| usable.get(i).copied().unwrap_or(false).then(|| target[i]);
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
        let d = match self {
            Normaliser::InterOcular(a, b) => dist(point(*a)?, point(*b)?),
            Normaliser::InterPupil(l, r) => dist(centroid(l)?, centroid(r)?),
            Normaliser::BoxWidth | Normaliser::BoxSqrtArea => {
                let pts: Vec<[f64; 2]> = (0..target.len()).filter_map(point).collect();
                if pts.is_empty() {
                    return None;
                }
                let extent = |k: usize| {
                    let lo = pts.iter().map(|p| p[k]).fold(f64::INFINITY, f64::min);
                    let hi = pts.iter().map(|p| p[k]).fold(f64::NEG_INFINITY, f64::max);
                    hi - lo
                };
                if matches!(self, Normaliser::BoxWidth) {
                    extent(0)
                } else {
                    (extent(0) * extent(1)).sqrt()
                }
            }
        };
        (d > 0.0 && d.is_finite()).then_some(d)
    }
}

impl std::fmt::Display for Normaliser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let span = |v: &[usize]| match (v.first(), v.last()) {
            (Some(a), Some(b)) => format!("{a}-{b}"),
            _ => String::new(),
        };
        match self {
            Normaliser::InterOcular(a, b) => write!(f, "inter-ocular:{a},{b}"),
            Normaliser::InterPupil(l, r) => write!(f, "inter-pupil:{},{}", span(l), span(r)),
            Normaliser::BoxWidth => f.write_str("box-width"),
            Normaliser::BoxSqrtArea => f.write_str("box-sqrt"),
        }
    }
}

fn dist(p: [f64; 2], q: [f64; 2]) -> f64 {
    (p[0] - q[0]).hypot(p[1] - q[1])
}

/// NME of one face (a fraction, not ×100). `pred` and `target` are flat x0, y0, x1, y1, …;
/// a point counts when it is visible and its target is finite. `None` when no point counts or
/// the normaliser is undefined for the face.
pub fn face_nme(
    pred: &[f32],
    target: &[f32],
    visible: &[bool],
    normaliser: &Normaliser,
) -> Option<f64> {
    let pts = |v: &[f32]| -> Vec<[f64; 2]> {
        v.chunks_exact(2)
            .map(|c| [f64::from(c[0]), f64::from(c[1])])
            .collect()
    };
    let (pred, target) = (pts(pred), pts(target));
    let usable: Vec<bool> = target
        .iter()
        .enumerate()
        .map(|(i, t)| {
            visible.get(i).copied().unwrap_or(false) && t[0].is_finite() && t[1].is_finite()
        })
        .collect();
    let norm = normaliser.distance(&target, &usable)?;
    let errors: Vec<f64> = (0..target.len())
        .filter(|&i| usable[i])
        .map(|i| dist(pred[i], target[i]))
        .collect();
    if errors.is_empty() {
        return None;
    }
    Some(errors.iter().sum::<f64>() / errors.len() as f64 / norm)
}

/// AUC and failure rate at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdStats {
    /// Threshold (fraction).
    pub threshold: f64,
    /// Area under the CED on [0, threshold], over the threshold: in [0, 1].
    pub auc: f64,
    /// Share of faces with NME above the threshold.
    pub failure_rate: f64,
}

/// Error statistics of a set of faces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorSummary {
    /// Faces scored.
    pub faces: usize,
    /// Mean NME ×100.
    pub mean_nme_percent: f64,
    /// Median NME ×100.
    pub median_nme_percent: f64,
    /// At each of [`THRESHOLDS`].
    pub thresholds: Vec<ThresholdStats>,
}

impl ErrorSummary {
    /// Summarise per-face NMEs (fractions).
    pub fn new(nmes: &[f64]) -> Self {
        let mut sorted = nmes.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => 0.0,
            n if n % 2 == 1 => sorted[n / 2],
            n => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
        };
        let mean = if n == 0 {
            0.0
        } else {
            sorted.iter().sum::<f64>() / n as f64
        };
        let thresholds = THRESHOLDS
            .iter()
            .map(|&t| ThresholdStats {
                threshold: t,
                auc: if n == 0 {
                    0.0
                } else {
                    sorted.iter().map(|&e| (t - e).max(0.0)).sum::<f64>() / (t * n as f64)
                },
                failure_rate: if n == 0 {
                    0.0
                } else {
                    sorted.iter().filter(|&&e| e > t).count() as f64 / n as f64
                },
            })
            .collect();
        ErrorSummary {
            faces: n,
            mean_nme_percent: 100.0 * mean,
            median_nme_percent: 100.0 * median,
            thresholds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nme_by_hand() {
        // Targets: eyes at (10,10) and (30,10) → inter-ocular 20; errors 5, 0, 2.
        let target = [10.0, 10.0, 30.0, 10.0, 20.0, 25.0];
        let pred = [13.0, 14.0, 30.0, 10.0, 20.0, 23.0];
        let all = [true; 3];
        let io = Normaliser::InterOcular(0, 1);
        let nme = face_nme(&pred, &target, &all, &io).unwrap();
        assert!((nme - (7.0 / 3.0) / 20.0).abs() < 1e-12);
        let nme = face_nme(&pred, &target, &[true, true, false], &io).unwrap();
        assert!((nme - 2.5 / 20.0).abs() < 1e-12);
        let sqrt = face_nme(&pred, &target, &all, &Normaliser::BoxSqrtArea).unwrap();
        assert!((sqrt - (7.0 / 3.0) / 300f64.sqrt()).abs() < 1e-12);
        let ip = Normaliser::InterPupil(vec![0], vec![1, 2]);
        let d = (15.0f64 * 15.0 + 7.5 * 7.5).sqrt();
        assert!((face_nme(&pred, &target, &all, &ip).unwrap() - (7.0 / 3.0) / d).abs() < 1e-12);
        assert_eq!(face_nme(&pred, &target, &[false, true, true], &io), None);
    }

    #[test]
    fn auc_and_failure_by_hand() {
        let s = ErrorSummary::new(&[0.02, 0.05, 0.09, 0.20]);
        assert!((s.mean_nme_percent - 9.0).abs() < 1e-9);
        assert!((s.median_nme_percent - 7.0).abs() < 1e-9);
        let at = |t: f64| s.thresholds.iter().find(|x| x.threshold == t).unwrap();
        assert!((at(0.10).auc - 0.35).abs() < 1e-12);
        assert!((at(0.08).auc - 0.28125).abs() < 1e-12);
        assert_eq!(at(0.08).failure_rate, 0.5);
        assert_eq!(at(0.10).failure_rate, 0.25);
    }

    #[test]
    fn normalisers_from_the_scheme() {
        let ibug = stages::scheme::by_name("ibug68").unwrap();
        assert_eq!(
            Normaliser::parse(None, ibug).unwrap(),
            Normaliser::InterOcular(36, 45)
        );
        let ip = Normaliser::parse(Some("inter-pupil"), ibug).unwrap();
        assert_eq!(ip.to_string(), "inter-pupil:36-41,42-47");
        let aflw = stages::scheme::by_name("aflw19").unwrap();
        assert_eq!(Normaliser::parse(None, aflw).unwrap(), Normaliser::BoxWidth);
        assert!(Normaliser::parse(Some("inter-pupil"), aflw).is_err());
        assert!(Normaliser::parse(Some("median"), ibug).is_err());
    }
}
