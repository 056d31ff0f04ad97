//! PCA of aligned shapes and the pose component (the pca stage, DESIGN.md PDB steps 2–3).
//!
//! The aligned shapes (missing points filled from the mean shape) are decomposed with
//! `linfa_reduction::Pca`. The pose component is the one whose eigenvector is most
//! anti-symmetric under the scheme's mirror (mirroring a face negates its yaw), weighted by
//! its variance (see [`ShapeModel::antisymmetric_variance`]), or the one the user names. The signed projection on it is the pose coefficient.
//!
//! Sign convention (deterministic, so coefficients keep their meaning across runs): the pose
//! eigenvector is signed so that the points on the mirror axis (the fixed points of the flip
//! permutation: nose, mouth centre, chin …) move towards +x along it. Those points stand out
//! of the face, so they shift towards the side the face turns to: a positive coefficient is a
//! face turned towards the image's right, the sign of `yaw` in `faces.parquet`. Without fixed
//! points, and for every other component, the entry of largest magnitude is made positive.

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_reduction::Pca;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::align::{Alignment, fit_similarity};

/// Which component carries the pose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoseComponent {
    /// Of the first [`PcaParams::auto_candidates`] components, the one with the most
    /// mirror-anti-symmetric variance ([`ShapeModel::antisymmetric_variance`]).
    Auto,
    /// This component, 1-based (PC1 = 1), as in the paper's "PC2 for AFLW".
    Index(usize),
}

/// Parameters of [`fit_shape_model`].
#[derive(Debug, Clone, PartialEq)]
pub struct PcaParams {
    /// Components to compute (at most 2L; fewer may come back when the data has lower rank).
    pub components: usize,
    /// How the pose component is chosen.
    pub pose_component: PoseComponent,
    /// `Auto` looks at this many leading components.
    pub auto_candidates: usize,
}

impl Default for PcaParams {
    fn default() -> Self {
        Self {
            components: 10,
            pose_component: PoseComponent::Auto,
            auto_candidates: 5,
        }
    }
}

/// Why the shape model could not be fitted.
#[derive(Debug, thiserror::Error)]
pub enum PcaError {
    /// PCA needs at least two shapes.
    #[error("PCA needs at least 2 aligned shapes, got {count}")]
    TooFewShapes {
        /// Shapes given.
        count: usize,
    },
    /// The flip permutation does not match the number of points.
    #[error("flip permutation has {len} entries for {num_points} points")]
    PermutationLength {
        /// Entries in the permutation.
        len: usize,
        /// Points per shape.
        num_points: usize,
    },
    /// `pose_component = N` names a component that was not computed.
    #[error("pose component {requested} requested, but only {available} component(s) exist")]
    ComponentOutOfRange {
        /// The 1-based component asked for.
        requested: usize,
        /// Components available.
        available: usize,
    },
    /// `components = 0` or no variance at all.
    #[error("no principal component: {reason}")]
    NoComponent {
        /// What went wrong.
        reason: String,
    },
    /// linfa refused the decomposition.
    #[error("PCA of {shapes} shapes × {features} coordinates failed: {source}")]
    Linfa {
        /// Shapes in the decomposition.
        shapes: usize,
        /// Coordinates per shape (2L).
        features: usize,
        /// linfa's error.
        source: linfa_reduction::ReductionError,
    },
}

/// A fitted shape model: mean, modes of variation and the chosen pose component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeModel {
    /// Points per shape (L).
    pub num_points: usize,
    /// The Procrustes mean shape new shapes are aligned to (2L values, unit norm).
    pub reference: Vec<f64>,
    /// The PCA centre: the mean of the filled aligned shapes (2L values).
    pub mean: Vec<f64>,
    /// Unit eigenvectors (each 2L values), by decreasing variance, signs fixed as documented
    /// in the module.
    pub components: Vec<Vec<f64>>,
    /// Variance of the data along each component (eigenvalue of the covariance, divisor n−1).
    pub variances: Vec<f64>,
    /// Share of the total variance (over all 2L directions) each component explains.
    pub explained_variance_ratio: Vec<f64>,
    /// Per component, −cos(v, F·v) with F the mirror (negate x, permute points): 1 for a
    /// perfectly anti-symmetric eigenvector, −1 for a symmetric one.
    pub flip_scores: Vec<f64>,
    /// The pose component, 0-based index into `components`.
    pub pose_component: usize,
    /// Whether the pose component was chosen by the flip score (`false`: user override).
    pub pose_chosen_automatically: bool,
}

impl ShapeModel {
    /// The variance component `k` carries in mirror-anti-symmetric directions:
    /// λₖ·‖½(I − F)vₖ‖² = λₖ·(1 + scoreₖ)/2. `Auto` maximises this rather than the bare flip
    /// score, because small noise components can be as anti-symmetric as the yaw component
    /// (measured on synthetic 68-point faces: yaw PC1 score 0.995 at 62 % of the variance,
    /// PC5 score 0.994 at 0.6 %); weighting by variance picks the mode that carries yaw.
    pub fn antisymmetric_variance(&self, k: usize) -> f64 {
        self.variances[k] * (1.0 + self.flip_scores[k]) / 2.0
    }

    /// The flip score of the pose component.
    pub fn pose_flip_score(&self) -> f64 {
        self.flip_scores[self.pose_component]
    }

    /// Fill the NaN points of an aligned shape from the reference shape.
    fn filled(&self, aligned: &[f64]) -> Vec<f64> {
        aligned
            .chunks_exact(2)
            .zip(self.reference.chunks_exact(2))
            .flat_map(|(p, m)| {
                if p[0].is_finite() && p[1].is_finite() {
                    [p[0], p[1]]
                } else {
                    [m[0], m[1]]
                }
            })
            .collect()
    }

    /// Projections of an aligned shape (in the reference frame; NaN for missing points) on
    /// every component.
    pub fn project_aligned(&self, aligned: &[f64]) -> Vec<f64> {
        let x = self.filled(aligned);
        self.components
            .iter()
            .map(|v| centred_dot(&x, &self.mean, v))
            .collect()
    }

    /// The pose coefficient of an aligned shape.
    pub fn pose_coefficient_aligned(&self, aligned: &[f64]) -> f64 {
        centred_dot(
            &self.filled(aligned),
            &self.mean,
            &self.components[self.pose_component],
        )
    }

    /// The pose coefficient of a raw shape (any frame, e.g. image pixels; NaN for missing
    /// points), after fitting it to the reference. `None` if it cannot be fitted (fewer than
    /// two points with coordinates, or all on one spot).
    pub fn pose_coefficient(&self, shape: &[f32]) -> Option<f64> {
        let shape: Vec<f64> = shape.iter().map(|&v| f64::from(v)).collect();
        let sim = fit_similarity(&shape, &self.reference)?;
        Some(self.pose_coefficient_aligned(&sim.apply(&shape)))
    }
}

fn centred_dot(x: &[f64], mean: &[f64], v: &[f64]) -> f64 {
    x.iter()
        .zip(mean)
        .zip(v)
        .map(|((x, m), v)| (x - m) * v)
        .sum()
}

/// A fitted model and the pose coefficient of every aligned shape (input order).
#[derive(Debug, Clone)]
pub struct PoseFit {
    /// The shape model.
    pub model: ShapeModel,
    /// Pose coefficient per shape.
    pub coefficients: Vec<f64>,
}

/// Fit PCA to the aligned shapes and choose the pose component.
///
/// `explained_variance_ratio` is computed here against the total variance of the data, not
/// taken from linfa, whose ratio is relative to the computed components only.
pub fn fit_shape_model(
    alignment: &Alignment,
    flip_permutation: &[usize],
    params: &PcaParams,
) -> Result<PoseFit, PcaError> {
    let num_points = alignment.num_points;
    let features = 2 * num_points;
    let n = alignment.len();
    if n < 2 {
        return Err(PcaError::TooFewShapes { count: n });
    }
    if flip_permutation.len() != num_points {
        return Err(PcaError::PermutationLength {
            len: flip_permutation.len(),
            num_points,
        });
    }
    // The centred data has rank ≤ n − 1, and linfa's solver needs no more components.
    let wanted = params.components.min(features).min(n - 1);
    if wanted == 0 {
        return Err(PcaError::NoComponent {
            reason: "`components` is 0".to_owned(),
        });
    }
    let mut model = ShapeModel {
        num_points,
        reference: alignment.mean.clone(),
        mean: Vec::new(),
        components: Vec::new(),
        variances: Vec::new(),
        explained_variance_ratio: Vec::new(),
        flip_scores: Vec::new(),
        pose_component: 0,
        pose_chosen_automatically: true,
    };
    let mut records = Array2::<f64>::zeros((n, features));
    for (i, mut row) in records.rows_mut().into_iter().enumerate() {
        for (dst, src) in row.iter_mut().zip(model.filled(alignment.shape(i))) {
            *dst = src;
        }
    }
    let dataset = DatasetBase::from(records);
    let pca = Pca::params(wanted)
        .fit(&dataset)
        .map_err(|source| PcaError::Linfa {
            shapes: n,
            features,
            source,
        })?;
    model.mean = pca.mean().to_vec();

    let records = dataset.records();
    let total: f64 = records
        .rows()
        .into_iter()
        .map(|r| {
            r.iter()
                .zip(&model.mean)
                .map(|(x, m)| (x - m).powi(2))
                .sum::<f64>()
        })
        .sum();
    if total.is_nan() || total <= 0.0 {
        return Err(PcaError::NoComponent {
            reason: "the aligned shapes do not vary".to_owned(),
        });
    }
    for (v, sigma) in pca
        .components()
        .rows()
        .into_iter()
        .zip(pca.singular_values())
    {
        let norm = v.dot(&v).sqrt();
        let mut v: Vec<f64> = v.iter().map(|x| x / norm).collect();
        fix_sign_largest(&mut v);
        model.flip_scores.push(flip_score(&v, flip_permutation));
        model.components.push(v);
        model.variances.push(sigma * sigma / (n - 1) as f64);
        model.explained_variance_ratio.push(sigma * sigma / total);
    }
    if model.components.is_empty() {
        return Err(PcaError::NoComponent {
            reason: "linfa returned no component".to_owned(),
        });
    }
    model.pose_component = match params.pose_component {
        PoseComponent::Index(k) if (1..=model.components.len()).contains(&k) => {
            model.pose_chosen_automatically = false;
            k - 1
        }
        PoseComponent::Index(k) => {
            return Err(PcaError::ComponentOutOfRange {
                requested: k,
                available: model.components.len(),
            });
        }
        PoseComponent::Auto => {
            let candidates = params.auto_candidates.clamp(1, model.components.len());
            // Ties keep the earlier (larger-variance) component.
            (0..candidates).fold(0, |best, k| {
                if model.antisymmetric_variance(k) > model.antisymmetric_variance(best) {
                    k
                } else {
                    best
                }
            })
        }
    };
    let pose = &mut model.components[model.pose_component];
    fix_sign_midline(pose, flip_permutation);
    let coefficients = (0..n)
        .map(|i| model.pose_coefficient_aligned(alignment.shape(i)))
        .collect();
    Ok(PoseFit {
        model,
        coefficients,
    })
}

/// −cos(v, F v), F = negate x and permute points (`new[i] = old[perm[i]]`).
fn flip_score(v: &[f64], perm: &[usize]) -> f64 {
    let mut dot = 0.0;
    for (i, &p) in perm.iter().enumerate() {
        dot += v[2 * i] * -v[2 * p] + v[2 * i + 1] * v[2 * p + 1];
    }
    // F is orthogonal, so |F v| = |v|.
    -dot / v.iter().map(|x| x * x).sum::<f64>()
}

/// Make the entry of largest magnitude positive (the first one on ties).
fn fix_sign_largest(v: &mut [f64]) {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if x.abs() > v[best].abs() {
            best = i;
        }
    }
    if v[best] < 0.0 {
        v.iter_mut().for_each(|x| *x = -*x);
    }
}

/// Make the mirror-axis points move towards +x along `v` (see the module doc).
fn fix_sign_midline(v: &mut [f64], perm: &[usize]) {
    let shift: f64 = (0..perm.len())
        .filter(|&i| perm[i] == i)
        .map(|i| v[2 * i])
        .sum();
    let scale = v.iter().map(|x| x.abs()).fold(0.0, f64::max);
    if shift.abs() > 1e-9 * scale {
        if shift < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
    } else {
        fix_sign_largest(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::{AlignParams, align_shapes, synthetic};
    use contract::scheme;

    fn pearson(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
        let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
        cov / (va * vb).sqrt()
    }

    fn fit(
        name: &str,
        n: usize,
        expression_sd: f64,
        params: &PcaParams,
    ) -> (PoseFit, Vec<f64>, Alignment) {
        let scheme = scheme::by_name(name).expect("registered");
        let perm = &scheme.flip_permutation;
        let set = synthetic::shapes(perm, n, 7, expression_sd, 0.1);
        let a = align_shapes(
            &set.shapes,
            scheme.num_points(),
            &AlignParams::default(),
            Some(perm),
        )
        .expect("aligns");
        (fit_shape_model(&a, perm, params).expect("fits"), set.yaw, a)
    }

    /// Projections of every aligned shape on component `k`.
    fn projections(f: &PoseFit, a: &Alignment, k: usize) -> Vec<f64> {
        (0..a.len())
            .map(|i| f.model.project_aligned(a.shape(i))[k])
            .collect()
    }

    fn check_auto_finds_yaw(name: &str, expression_sd: f64) -> usize {
        let (f, yaw, a) = fit(name, 3000, expression_sd, &PcaParams::default());
        let candidates = 5.min(f.model.components.len());
        let yaw_component = (0..candidates)
            .max_by(|&i, &j| {
                let ri = pearson(&projections(&f, &a, i), &yaw).abs();
                let rj = pearson(&projections(&f, &a, j), &yaw).abs();
                ri.total_cmp(&rj)
            })
            .expect("components");
        assert_eq!(
            f.model.pose_component, yaw_component,
            "{name}: {:?}",
            f.model.flip_scores
        );
        assert!(f.model.pose_chosen_automatically);
        assert!(
            f.model.pose_flip_score() > 0.9,
            "{name}: score {}",
            f.model.pose_flip_score()
        );
        // Signed: the sign convention makes the coefficient grow with yaw.
        let r = pearson(&f.coefficients, &yaw);
        assert!(r >= 0.9, "{name}: Pearson(coefficient, yaw) = {r}");
        f.model.pose_component
    }

    #[test]
    fn auto_picks_the_yaw_component_ibug68() {
        check_auto_finds_yaw("ibug68", 0.1);
    }

    #[test]
    fn auto_picks_the_yaw_component_aflw19() {
        check_auto_finds_yaw("aflw19", 0.1);
    }

    #[test]
    fn auto_finds_yaw_behind_a_larger_symmetric_mode() {
        // A strong expression (a symmetric mode) takes PC1, so yaw is not the first component.
        assert!(check_auto_finds_yaw("aflw19", 0.8) > 0);
        assert!(check_auto_finds_yaw("ibug68", 0.8) > 0);
    }

    #[test]
    fn override_selects_the_named_component() {
        let params = PcaParams {
            pose_component: PoseComponent::Index(2),
            ..PcaParams::default()
        };
        let (f, _, _) = fit("aflw19", 300, 0.1, &params);
        assert_eq!(f.model.pose_component, 1);
        assert!(!f.model.pose_chosen_automatically);
        let scheme = scheme::by_name("aflw19").expect("registered");
        let set = synthetic::shapes(&scheme.flip_permutation, 50, 1, 0.1, 0.0);
        let a = align_shapes(&set.shapes, 19, &AlignParams::default(), None).expect("aligns");
        let params = PcaParams {
            pose_component: PoseComponent::Index(99),
            ..PcaParams::default()
        };
        assert!(matches!(
            fit_shape_model(&a, &scheme.flip_permutation, &params),
            Err(PcaError::ComponentOutOfRange { requested: 99, .. })
        ));
    }

    #[test]
    fn tiny_sets_fit() {
        let scheme = scheme::by_name("aflw19").expect("registered");
        let perm = &scheme.flip_permutation;
        for n in [2, 3, 5, 12] {
            let set = synthetic::shapes(perm, n, 9, 0.1, 0.0);
            let a =
                align_shapes(&set.shapes, 19, &AlignParams::default(), Some(perm)).expect("aligns");
            let f = fit_shape_model(&a, perm, &PcaParams::default()).expect("fits");
            assert!(
                !f.model.components.is_empty() && f.model.components.len() < n,
                "n = {n}"
            );
            assert!(f.coefficients.iter().all(|c| c.is_finite()));
        }
    }

    #[test]
    fn components_are_orthonormal_and_variance_ratios_sensible() {
        let (f, _, _) = fit("ibug68", 500, 0.1, &PcaParams::default());
        let m = &f.model;
        for (i, u) in m.components.iter().enumerate() {
            for (j, v) in m.components.iter().enumerate() {
                let dot: f64 = u.iter().zip(v).map(|(a, b)| a * b).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-8, "components {i}, {j}: {dot}");
            }
        }
        let sum: f64 = m.explained_variance_ratio.iter().sum();
        assert!(sum <= 1.0 + 1e-12 && sum > 0.9, "ratios sum to {sum}");
        assert!(m.explained_variance_ratio.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn raw_shapes_project_like_their_aligned_versions() {
        let scheme = scheme::by_name("ibug68").expect("registered");
        let set = synthetic::shapes(&scheme.flip_permutation, 200, 5, 0.1, 0.2);
        let a = align_shapes(
            &set.shapes,
            68,
            &AlignParams::default(),
            Some(&scheme.flip_permutation),
        )
        .expect("aligns");
        let f = fit_shape_model(&a, &scheme.flip_permutation, &PcaParams::default()).expect("fits");
        for (i, raw) in set.shapes.chunks_exact(136).enumerate().take(20) {
            let c = f.model.pose_coefficient(raw).expect("fits");
            assert!(
                (c - f.coefficients[i]).abs() < 1e-9,
                "shape {i}: {c} vs {}",
                f.coefficients[i]
            );
        }
        assert_eq!(f.model.pose_coefficient(&[f32::NAN; 136]), None);
    }
}
