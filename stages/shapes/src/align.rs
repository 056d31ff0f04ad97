//! Generalised Procrustes Analysis (the align stage, DESIGN.md PDB step 1).
//!
//! Every shape is brought onto a common mean shape by a similarity transform (translation,
//! scale, rotation; reflections excluded), the mean is re-estimated from the aligned shapes,
//! and the two steps alternate until the mean stops moving. Points without coordinates (NaN)
//! get zero weight: each shape is fitted on the points it has, and each mean point is the
//! average over the shapes that have it.
//!
//! Shapes are flat `x0, y0, x1, y1, …` buffers. Each iteration costs O(n·L) for n shapes of
//! L points; there is no quadratic step.
//!
//! The mean shape is normalised: centred on the origin, unit Frobenius norm, and in a fixed
//! orientation (see [`align_shapes`]), so the result does not depend on where, how large or
//! how rotated the input shapes are.

use nalgebra::{Matrix2, SVD, Vector2};
use rayon::prelude::*;

/// Parameters of [`align_shapes`].
#[derive(Debug, Clone, PartialEq)]
pub struct AlignParams {
    /// Stop when the mean shape (unit norm) moves less than this between two iterations
    /// (Frobenius norm of the change).
    pub tolerance: f64,
    /// Stop after this many iterations even if the mean still moves.
    pub max_iterations: usize,
}

impl Default for AlignParams {
    fn default() -> Self {
        Self {
            tolerance: 1e-10,
            max_iterations: 100,
        }
    }
}

/// Why shapes could not be aligned.
#[derive(Debug, thiserror::Error)]
pub enum AlignError {
    /// Nothing to align.
    #[error("no shapes to align")]
    Empty,
    /// A scheme needs at least two points.
    #[error("a shape needs at least 2 points, got {num_points}")]
    TooFewPoints {
        /// Points per shape.
        num_points: usize,
    },
    /// The flat buffer does not hold whole shapes.
    #[error(
        "shape buffer has {len} values, not a multiple of {per_shape} (2 × {num_points} points)"
    )]
    RaggedBuffer {
        /// Values in the buffer.
        len: usize,
        /// Values per shape.
        per_shape: usize,
        /// Points per shape.
        num_points: usize,
    },
    /// A shape cannot be fitted: fewer than two points with coordinates, or all of them on
    /// one spot.
    #[error(
        "shape {index} cannot be aligned: {valid} point(s) with coordinates (at least 2 \
         distinct points are needed, shared with the mean shape)"
    )]
    Degenerate {
        /// Index of the shape in the input.
        index: usize,
        /// Its number of points with coordinates.
        valid: usize,
    },
    /// No shape has coordinates for this point, so the mean has none either.
    #[error("landmark {point} has no coordinates in any shape")]
    PointNeverObserved {
        /// The point index.
        point: usize,
    },
    /// The flip permutation does not match the number of points.
    #[error("flip permutation has {len} entries for {num_points} points")]
    PermutationLength {
        /// Entries in the permutation.
        len: usize,
        /// Points per shape.
        num_points: usize,
    },
}

/// A 2D similarity transform `p ↦ scale · rotation · p + translation`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// Isotropic scale (> 0).
    pub scale: f64,
    /// Proper rotation (determinant +1).
    pub rotation: Matrix2<f64>,
    /// Translation applied after scaling and rotating.
    pub translation: Vector2<f64>,
}

impl Similarity {
    /// The identity transform.
    pub fn identity() -> Self {
        Self {
            scale: 1.0,
            rotation: Matrix2::identity(),
            translation: Vector2::zeros(),
        }
    }

    /// Map one point.
    pub fn apply_point(&self, p: Vector2<f64>) -> Vector2<f64> {
        self.rotation * p * self.scale + self.translation
    }

    /// Map a flat shape; NaN points stay NaN.
    pub fn apply(&self, xy: &[f64]) -> Vec<f64> {
        let mut out = vec![f64::NAN; xy.len()];
        self.apply_into(xy, &mut out);
        out
    }

    fn apply_into(&self, xy: &[f64], out: &mut [f64]) {
        for (src, dst) in xy.chunks_exact(2).zip(out.chunks_exact_mut(2)) {
            if src[0].is_finite() && src[1].is_finite() {
                let q = self.apply_point(Vector2::new(src[0], src[1]));
                dst[0] = q.x;
                dst[1] = q.y;
            } else {
                dst[0] = f64::NAN;
                dst[1] = f64::NAN;
            }
        }
    }
}

/// The least-squares similarity taking `source` onto `target` (flat shapes of equal length),
/// using only the points that have coordinates in both (weighted Procrustes with 0/1
/// weights). The rotation comes from the SVD of the 2×2 cross-covariance with the sign of
/// the smaller singular direction fixed so the determinant is +1 (no reflection).
///
/// `None` when fewer than two shared points exist or the shared source points coincide.
pub fn fit_similarity(source: &[f64], target: &[f64]) -> Option<Similarity> {
    let mut count = 0usize;
    let mut cs = Vector2::zeros();
    let mut ct = Vector2::zeros();
    for (s, t) in source.chunks_exact(2).zip(target.chunks_exact(2)) {
        if is_point(s) && is_point(t) {
            count += 1;
            cs += Vector2::new(s[0], s[1]);
            ct += Vector2::new(t[0], t[1]);
        }
    }
    if count < 2 {
        return None;
    }
    cs /= count as f64;
    ct /= count as f64;
    let mut h = Matrix2::zeros();
    let mut ss = 0.0;
    for (s, t) in source.chunks_exact(2).zip(target.chunks_exact(2)) {
        if is_point(s) && is_point(t) {
            let a = Vector2::new(s[0], s[1]) - cs;
            let b = Vector2::new(t[0], t[1]) - ct;
            h += a * b.transpose();
            ss += a.norm_squared();
        }
    }
    let scale_of_source = ss.sqrt();
    // Coincident source points: any rotation and scale fit, so none is the answer.
    if scale_of_source.is_nan() || scale_of_source <= 1e-12 * (cs.norm() + 1.0) {
        return None;
    }
    let (rotation, trace) = best_rotation(h)?;
    let scale = trace / ss;
    if !(scale > 0.0 && scale.is_finite()) {
        return None;
    }
    let translation = ct - rotation * cs * scale;
    Some(Similarity {
        scale,
        rotation,
        translation,
    })
}

/// The proper rotation R maximising trace(R·H) for H = Σ source·targetᵀ, and that maximum.
fn best_rotation(h: Matrix2<f64>) -> Option<(Matrix2<f64>, f64)> {
    let svd = SVD::new(h, true, true);
    let (u, v_t) = (svd.u?, svd.v_t?);
    let v = v_t.transpose();
    // SVD::new sorts singular values in descending order, so the reflection fix goes on the
    // second (smaller) one, which costs the least.
    let d = (v * u.transpose()).determinant().signum();
    let d = if d == 0.0 { 1.0 } else { d };
    let rotation = v * Matrix2::new(1.0, 0.0, 0.0, d) * u.transpose();
    let trace = svd.singular_values[0] + d * svd.singular_values[1];
    Some((rotation, trace))
}

fn is_point(p: &[f64]) -> bool {
    p[0].is_finite() && p[1].is_finite()
}

/// The result of [`align_shapes`].
#[derive(Debug, Clone)]
pub struct Alignment {
    /// Points per shape (L).
    pub num_points: usize,
    /// Aligned shapes, `n × 2L` values in input order, in the mean shape's frame; NaN where
    /// the input had no coordinates.
    pub aligned: Vec<f64>,
    /// The mean shape (2L values): centred, unit Frobenius norm, orientation fixed as
    /// documented on [`align_shapes`]. Every point has coordinates.
    pub mean: Vec<f64>,
    /// Per input shape, the similarity that maps it onto its aligned shape.
    pub transforms: Vec<Similarity>,
    /// Iterations run (mean re-estimations).
    pub iterations: usize,
    /// How far the mean moved in the last iteration (Frobenius norm, unit-norm mean).
    pub change: f64,
    /// Whether `change` fell below the tolerance within the iteration cap.
    pub converged: bool,
}

impl Alignment {
    /// Number of shapes.
    pub fn len(&self) -> usize {
        self.transforms.len()
    }

    /// Whether there are no shapes (never true for a successful alignment).
    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty()
    }

    /// The aligned shape `i` (2L values).
    pub fn shape(&self, i: usize) -> &[f64] {
        &self.aligned[2 * self.num_points * i..2 * self.num_points * (i + 1)]
    }
}

/// Align `shapes` (a flat `n × 2L` buffer of `x0, y0, …`, NaN for points without
/// coordinates) by Generalised Procrustes Analysis.
///
/// The first reference is the shape with the most points (the first such in input order).
/// Each iteration fits every shape to the reference, averages the aligned shapes point by
/// point, normalises the average (centre, unit norm) and rotates it onto the previous
/// reference, so that `change` measures shape change rather than drift of orientation.
///
/// Orientation of the result, deterministic and independent of any single shape: the mean is
/// first rotated to the average orientation of the input shapes (the circular mean of the
/// fitted rotations), so a set of upright image shapes gives an upright mean in the same
/// y-down image frame. If `flip_permutation` is given (`new[i] = old[perm[i]]` after mirroring
/// x, see [`contract::scheme`]), the mean is then rotated by the smaller angle that makes its
/// mirror axis vertical, so that mirroring a face is exactly `x ↦ −x` plus the permutation.
/// All shapes are finally fitted once more to this mean.
pub fn align_shapes(
    shapes: &[f32],
    num_points: usize,
    params: &AlignParams,
    flip_permutation: Option<&[usize]>,
) -> Result<Alignment, AlignError> {
    let per_shape = 2 * num_points;
    if num_points < 2 {
        return Err(AlignError::TooFewPoints { num_points });
    }
    if shapes.is_empty() {
        return Err(AlignError::Empty);
    }
    if !shapes.len().is_multiple_of(per_shape) {
        return Err(AlignError::RaggedBuffer {
            len: shapes.len(),
            per_shape,
            num_points,
        });
    }
    if let Some(perm) = flip_permutation
        && perm.len() != num_points
    {
        return Err(AlignError::PermutationLength {
            len: perm.len(),
            num_points,
        });
    }
    let input: Vec<f64> = shapes
        .iter()
        .map(|&v| {
            if v.is_finite() {
                f64::from(v)
            } else {
                f64::NAN
            }
        })
        .collect();
    // A point with one finite coordinate is as good as missing.
    let input: Vec<f64> = input
        .chunks_exact(2)
        .flat_map(|p| {
            if is_point(p) {
                [p[0], p[1]]
            } else {
                [f64::NAN, f64::NAN]
            }
        })
        .collect();
    let n = input.len() / per_shape;

    let valid: Vec<usize> = input
        .chunks_exact(per_shape)
        .map(|s| s.chunks_exact(2).filter(|p| is_point(p)).count())
        .collect();
    if let Some(index) = valid.iter().position(|&v| v < 2) {
        return Err(AlignError::Degenerate {
            index,
            valid: valid[index],
        });
    }
    for point in 0..num_points {
        if !input
            .chunks_exact(per_shape)
            .any(|s| is_point(&s[2 * point..2 * point + 2]))
        {
            return Err(AlignError::PointNeverObserved { point });
        }
    }

    let mut best = 0;
    for (i, &v) in valid.iter().enumerate() {
        if v > valid[best] {
            best = i;
        }
    }
    let mut reference = input[best * per_shape..(best + 1) * per_shape].to_vec();
    normalise(&mut reference);

    let mut aligned = vec![f64::NAN; input.len()];
    let mut transforms = vec![Similarity::identity(); n];
    let mut iterations = 0;
    let mut change = f64::INFINITY;
    let mut converged = false;
    while iterations < params.max_iterations {
        iterations += 1;
        let fitted = fit_all(&input, &reference, per_shape, &mut aligned, &mut transforms);
        let reference_complete = reference.iter().all(|v| v.is_finite());
        if let Some(index) = fitted.iter().position(|ok| !ok)
            && reference_complete
        {
            return Err(AlignError::Degenerate {
                index,
                valid: valid[index],
            });
        }
        let mut mean = pointwise_mean(&aligned, &fitted, per_shape);
        normalise(&mut mean);
        if let Some(sim) = fit_similarity(&mean, &reference) {
            // Rotation only: both are centred and of unit norm already.
            mean = Similarity {
                scale: 1.0,
                translation: Vector2::zeros(),
                ..sim
            }
            .apply(&mean);
        }
        change = frobenius_change(&mean, &reference);
        let complete = mean.iter().all(|v| v.is_finite());
        reference = mean;
        if complete && change < params.tolerance {
            converged = true;
            break;
        }
    }
    // Only possible when the cap stopped the loop before the mean had every point: shapes
    // sharing < 2 points with the first reference were skipped and never caught up.
    if let Some(point) = reference.chunks_exact(2).position(|p| !is_point(p)) {
        return Err(AlignError::PointNeverObserved { point });
    }

    orient_canonically(&mut reference, &transforms, flip_permutation);
    let fitted = fit_all(&input, &reference, per_shape, &mut aligned, &mut transforms);
    if let Some(index) = fitted.iter().position(|ok| !ok) {
        return Err(AlignError::Degenerate {
            index,
            valid: valid[index],
        });
    }
    Ok(Alignment {
        num_points,
        aligned,
        mean: reference,
        transforms,
        iterations,
        change,
        converged,
    })
}

/// Fit every shape onto `reference`, writing aligned shapes and transforms; returns per
/// shape whether it could be fitted (unfitted shapes are left NaN).
fn fit_all(
    input: &[f64],
    reference: &[f64],
    per_shape: usize,
    aligned: &mut [f64],
    transforms: &mut [Similarity],
) -> Vec<bool> {
    input
        .par_chunks_exact(per_shape)
        .zip(aligned.par_chunks_exact_mut(per_shape))
        .zip(transforms.par_iter_mut())
        .map(
            |((shape, out), transform)| match fit_similarity(shape, reference) {
                Some(sim) => {
                    sim.apply_into(shape, out);
                    *transform = sim;
                    true
                }
                None => {
                    out.fill(f64::NAN);
                    false
                }
            },
        )
        .collect()
}

/// Per-point average over the fitted shapes that have the point; NaN where none has it.
/// Summed in input order so the result does not depend on the thread count.
fn pointwise_mean(aligned: &[f64], fitted: &[bool], per_shape: usize) -> Vec<f64> {
    let mut sum = vec![0.0; per_shape];
    let mut count = vec![0usize; per_shape / 2];
    for (shape, _) in aligned
        .chunks_exact(per_shape)
        .zip(fitted)
        .filter(|(_, ok)| **ok)
    {
        for (j, p) in shape.chunks_exact(2).enumerate() {
            if is_point(p) {
                sum[2 * j] += p[0];
                sum[2 * j + 1] += p[1];
                count[j] += 1;
            }
        }
    }
    for (j, &c) in count.iter().enumerate() {
        if c == 0 {
            sum[2 * j] = f64::NAN;
            sum[2 * j + 1] = f64::NAN;
        } else {
            sum[2 * j] /= c as f64;
            sum[2 * j + 1] /= c as f64;
        }
    }
    sum
}

/// Centre on the centroid of the points that have coordinates and scale to unit norm.
fn normalise(shape: &mut [f64]) {
    let mut c = Vector2::zeros();
    let mut count = 0usize;
    for p in shape.chunks_exact(2).filter(|p| is_point(p)) {
        c += Vector2::new(p[0], p[1]);
        count += 1;
    }
    if count == 0 {
        return;
    }
    c /= count as f64;
    let mut norm2 = 0.0;
    for p in shape.chunks_exact_mut(2).filter(|p| is_point(p)) {
        p[0] -= c.x;
        p[1] -= c.y;
        norm2 += p[0] * p[0] + p[1] * p[1];
    }
    let norm = norm2.sqrt();
    if norm > 0.0 {
        shape.iter_mut().for_each(|v| *v /= norm);
    }
}

/// Frobenius norm of `a − b` over the points both have; infinite if their point sets differ
/// (the mean is still filling in, so it has not converged).
fn frobenius_change(a: &[f64], b: &[f64]) -> f64 {
    let mut sum = 0.0;
    for (p, q) in a.chunks_exact(2).zip(b.chunks_exact(2)) {
        match (is_point(p), is_point(q)) {
            (true, true) => sum += (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2),
            (false, false) => {}
            _ => return f64::INFINITY,
        }
    }
    sum.sqrt()
}

/// Rotate the (centred) mean to the inputs' average orientation, then, given a flip
/// permutation, by the smaller angle that makes its mirror axis vertical.
fn orient_canonically(
    mean: &mut [f64],
    transforms: &[Similarity],
    flip_permutation: Option<&[usize]>,
) {
    // Each transform rotates its input by θᵢ into the mean frame; the inputs' orientation
    // seen from the mean frame is −θᵢ, averaged on the circle.
    let (mut c, mut s) = (0.0, 0.0);
    for t in transforms {
        c += t.rotation[(0, 0)];
        s -= t.rotation[(1, 0)];
    }
    if c.hypot(s) > 1e-9 * transforms.len() as f64 {
        rotate(mean, s.atan2(c));
    }
    if let Some(perm) = flip_permutation {
        // Reflection about an axis at angle φ is [[cos 2φ, sin 2φ], [sin 2φ, −cos 2φ]]; the
        // mirror image (with the permutation) best matches the shape at 2φ = atan2(b, a).
        let (mut a, mut b) = (0.0, 0.0);
        for (j, &p) in perm.iter().enumerate() {
            let (xj, yj, xp, yp) = (mean[2 * j], mean[2 * j + 1], mean[2 * p], mean[2 * p + 1]);
            a += xj * xp - yj * yp;
            b += xj * yp + yj * xp;
        }
        if a.hypot(b) > 1e-12 {
            let axis = 0.5 * b.atan2(a);
            // Turn the axis to ±90°, whichever is nearer; the two differ by a half turn.
            let mut turn = std::f64::consts::FRAC_PI_2 - axis;
            while turn > std::f64::consts::FRAC_PI_2 {
                turn -= std::f64::consts::PI;
            }
            while turn <= -std::f64::consts::FRAC_PI_2 {
                turn += std::f64::consts::PI;
            }
            rotate(mean, turn);
        }
    }
}

fn rotate(shape: &mut [f64], angle: f64) {
    let (s, c) = angle.sin_cos();
    for p in shape.chunks_exact_mut(2) {
        let (x, y) = (p[0], p[1]);
        p[0] = c * x - s * y;
        p[1] = s * x + c * y;
    }
}

/// Synthetic landmark shapes for tests: a mirror-symmetric 3D point set of a scheme's size,
/// projected under random yaw (skewed towards frontal), pitch and a symmetric "expression",
/// with noise, placed in an image by a random similarity.
pub mod synthetic {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    /// Shapes and the yaw (radians, > 0 when the face turns towards +x) that made each one.
    pub struct SynthSet {
        pub shapes: Vec<f32>,
        pub yaw: Vec<f64>,
    }

    /// A 3D point set symmetric under `perm`: fixed points on the x = 0 plane and standing
    /// out (larger z, like nose and chin), pairs mirrored in x.
    fn symmetric_points(perm: &[usize], rng: &mut ChaCha8Rng) -> Vec<[f64; 3]> {
        let mut pts = vec![[0.0; 3]; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            if p == i {
                pts[i] = [0.0, rng.gen_range(-1.0..1.0), rng.gen_range(0.5..0.9)];
            } else if i < p {
                let x = rng.gen_range(0.3..1.0);
                let (y, z) = (rng.gen_range(-1.0..1.0), rng.gen_range(-0.4..0.3));
                pts[i] = [-x, y, z];
                pts[p] = [x, y, z];
            }
        }
        pts
    }

    /// The 3D point set behind [`shapes`] with the same seed.
    pub fn face(perm: &[usize], seed: u64) -> Vec<[f64; 3]> {
        symmetric_points(perm, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    /// `n` shapes of the scheme with flip permutation `perm`.
    pub fn shapes(
        perm: &[usize],
        n: usize,
        seed: u64,
        expression_sd: f64,
        missing_rate: f64,
    ) -> SynthSet {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let face = symmetric_points(perm, &mut rng);
        assert_eq!(face, self::face(perm, seed));
        let noise = Normal::new(0.0, 0.01).expect("valid sd");
        let expression = Normal::new(0.0, expression_sd.max(1e-12)).expect("valid sd");
        let mut out = SynthSet {
            shapes: Vec::with_capacity(2 * perm.len() * n),
            yaw: Vec::new(),
        };
        for _ in 0..n {
            let u: f64 = rng.gen_range(0.0..1.0);
            let sign = if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
            let yaw = sign * 75f64.to_radians() * u * u;
            let pitch = rng.gen_range(-10f64..10.0).to_radians();
            let stretch = 1.0 + expression.sample(&mut rng);
            let roll = rng.gen_range(-15f64..15.0).to_radians();
            let scale = rng.gen_range(50.0..150.0);
            let (tx, ty) = (rng.gen_range(0.0..100.0), rng.gen_range(0.0..100.0));
            let first = out.shapes.len();
            for &[x, y, z] in &face {
                let y = if y > 0.0 { y * stretch } else { y };
                let (y, z) = (
                    y * pitch.cos() - z * pitch.sin(),
                    y * pitch.sin() + z * pitch.cos(),
                );
                let x = x * yaw.cos() + z * yaw.sin();
                let (x, y) = (x + noise.sample(&mut rng), y + noise.sample(&mut rng));
                let (x, y) = (
                    x * roll.cos() - y * roll.sin(),
                    x * roll.sin() + y * roll.cos(),
                );
                out.shapes.push((scale * x + tx) as f32);
                out.shapes.push((scale * y + ty) as f32);
            }
            if rng.gen_bool(missing_rate) {
                for _ in 0..rng.gen_range(1..=3) {
                    let j = first + 2 * rng.gen_range(0..perm.len());
                    out.shapes[j] = f32::NAN;
                    out.shapes[j + 1] = f32::NAN;
                }
            }
            out.yaw.push(yaw);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::scheme;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn similarity(angle: f64, scale: f64, tx: f64, ty: f64) -> Similarity {
        let (s, c) = angle.sin_cos();
        Similarity {
            scale,
            rotation: Matrix2::new(c, -s, s, c),
            translation: Vector2::new(tx, ty),
        }
    }

    /// Each shape moved by its own random similarity.
    fn scramble(shapes: &[f32], num_points: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        shapes
            .chunks_exact(2 * num_points)
            .flat_map(|s| {
                let sim = similarity(
                    rng.gen_range(-3.0..3.0),
                    rng.gen_range(0.3..3.0),
                    rng.gen_range(-100.0..100.0),
                    rng.gen_range(-100.0..100.0),
                );
                let s: Vec<f64> = s.iter().map(|&v| f64::from(v)).collect();
                sim.apply(&s)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn max_deviation(a: &[f64], b: &[f64]) -> f64 {
        a.chunks_exact(2)
            .zip(b.chunks_exact(2))
            .filter(|(p, _)| is_point(p))
            .map(|(p, q)| (p[0] - q[0]).hypot(p[1] - q[1]))
            .fold(0.0, f64::max)
    }

    #[test]
    fn fit_similarity_recovers_a_known_transform_and_ignores_missing_points() {
        let source = [0.0, 0.0, 2.0, 0.0, 2.0, 1.0, f64::NAN, f64::NAN, 0.0, 1.0];
        let sim = similarity(0.7, 2.5, 3.0, -4.0);
        let mut target = sim.apply(&source);
        target[6] = 99.0;
        target[7] = 99.0;
        let fit = fit_similarity(&source, &target).expect("fits");
        assert!((fit.scale - 2.5).abs() < 1e-12);
        assert!((fit.rotation - sim.rotation).norm() < 1e-12);
        assert!((fit.translation - sim.translation).norm() < 1e-12);
    }

    #[test]
    fn fit_similarity_never_reflects() {
        let source = [0.0, 0.0, 1.0, 0.0, 0.0, 2.0];
        let mirrored = [0.0, 0.0, -1.0, 0.0, 0.0, 2.0];
        let fit = fit_similarity(&source, &mirrored).expect("fits");
        assert!((fit.rotation.determinant() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn degenerate_inputs_are_reported_with_the_shape_index() {
        let p = AlignParams::default();
        let one_point = [0.0, 0.0, 1.0, 1.0, 5.0, 5.0, f32::NAN, f32::NAN];
        assert!(matches!(
            align_shapes(&one_point, 2, &p, None),
            Err(AlignError::Degenerate { index: 1, valid: 1 })
        ));
        let never = [
            0.0,
            0.0,
            f32::NAN,
            f32::NAN,
            1.0,
            1.0,
            2.0,
            0.0,
            f32::NAN,
            f32::NAN,
            3.0,
            3.0,
        ];
        assert!(matches!(
            align_shapes(&never, 3, &p, None),
            Err(AlignError::PointNeverObserved { point: 1 })
        ));
        assert!(matches!(
            align_shapes(&[0.0; 5], 2, &p, None),
            Err(AlignError::RaggedBuffer { .. })
        ));
        assert!(matches!(
            align_shapes(&[], 2, &p, None),
            Err(AlignError::Empty)
        ));
    }

    #[test]
    fn mean_is_normalised_upright_and_mirror_symmetric() {
        let scheme = scheme::by_name("ibug68").expect("registered");
        let perm = &scheme.flip_permutation;
        let set = synthetic::shapes(perm, 400, 3, 0.1, 0.2);
        let a = align_shapes(&set.shapes, 68, &AlignParams::default(), Some(perm)).expect("aligns");
        assert!(
            a.converged,
            "change {} after {} iterations",
            a.change, a.iterations
        );
        let norm: f64 = a.mean.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-12);
        let cx: f64 = a.mean.iter().step_by(2).sum();
        let cy: f64 = a.mean.iter().skip(1).step_by(2).sum();
        assert!(cx.abs() < 1e-12 && cy.abs() < 1e-12);
        // Symmetric 3D face under symmetric yaw: the mean is nearly its own mirror image.
        let mut asym = 0.0f64;
        for (i, &p) in perm.iter().enumerate() {
            asym = asym.max((a.mean[2 * i] + a.mean[2 * p]).abs());
            asym = asym.max((a.mean[2 * i + 1] - a.mean[2 * p + 1]).abs());
        }
        assert!(asym < 0.02, "mirror asymmetry {asym}");
        // Rolls are symmetric about 0, so the mean keeps the frontal face's orientation.
        let frontal: Vec<f64> = synthetic::face(perm, 3)
            .iter()
            .flat_map(|p| [p[0], p[1]])
            .collect();
        let fit = fit_similarity(&frontal, &a.mean).expect("fits");
        let angle = fit.rotation[(1, 0)].atan2(fit.rotation[(0, 0)]);
        assert!(
            angle.abs() < 2f64.to_radians(),
            "mean turned by {angle} rad"
        );
    }

    #[test]
    fn mean_is_a_fixed_point() {
        let scheme = scheme::by_name("aflw19").expect("registered");
        let perm = &scheme.flip_permutation;
        let set = synthetic::shapes(perm, 300, 11, 0.1, 0.3);
        let params = AlignParams::default();
        let a = align_shapes(&set.shapes, 19, &params, Some(perm)).expect("aligns");
        // The mean is the normalised pointwise average of the shapes aligned to it.
        let ok = vec![true; a.len()];
        let mut avg = pointwise_mean(&a.aligned, &ok, 38);
        normalise(&mut avg);
        assert!(
            max_deviation(&avg, &a.mean) < 1e-8,
            "{}",
            max_deviation(&avg, &a.mean)
        );
        // Aligning the aligned shapes again changes nothing.
        let again: Vec<f32> = a.aligned.iter().map(|&v| v as f32).collect();
        let b = align_shapes(&again, 19, &params, Some(perm)).expect("aligns");
        assert!(max_deviation(&a.mean, &b.mean) < 1e-6);
        assert!(max_deviation(&a.aligned, &b.aligned) < 1e-6);
        for t in &b.transforms {
            assert!((t.scale - 1.0).abs() < 1e-5 && t.translation.norm() < 1e-6);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Independent random similarities on the inputs change the aligned shapes by one
        /// global similarity at most, and the pose coefficients by a global sign at most.
        #[test]
        fn result_is_invariant_to_input_similarities(
            data_seed in any::<u64>(),
            move_seed in any::<u64>(),
            use_aflw in any::<bool>(),
        ) {
            let scheme = scheme::by_name(if use_aflw { "aflw19" } else { "ibug68" }).expect("registered");
            let (perm, l) = (&scheme.flip_permutation, scheme.num_points());
            let set = synthetic::shapes(perm, 120, data_seed, 0.1, 0.2);
            let moved = scramble(&set.shapes, l, move_seed);
            let params = AlignParams::default();
            let a = align_shapes(&set.shapes, l, &params, Some(perm)).expect("aligns");
            let b = align_shapes(&moved, l, &params, Some(perm)).expect("aligns");
            let global = fit_similarity(&b.aligned, &a.aligned).expect("fits");
            let radius = 1.0 / (l as f64).sqrt();
            let dev = max_deviation(&global.apply(&b.aligned), &a.aligned);
            prop_assert!(dev <= 1e-6 * radius, "deviation {dev}");

            let pca = crate::pca::PcaParams::default();
            let pa = crate::pca::fit_shape_model(&a, perm, &pca).expect("pca");
            let pb = crate::pca::fit_shape_model(&b, perm, &pca).expect("pca");
            prop_assert_eq!(pa.model.pose_component, pb.model.pose_component);
            let (ca, cb) = (&pa.coefficients, &pb.coefficients);
            let dot: f64 = ca.iter().zip(cb).map(|(x, y)| x * y).sum();
            let sign = dot.signum();
            let mean = ca.iter().sum::<f64>() / ca.len() as f64;
            let sd = (ca.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / ca.len() as f64).sqrt();
            let worst = ca.iter().zip(cb).map(|(x, y)| (x - sign * y).abs()).fold(0.0, f64::max);
            prop_assert!(worst <= 1e-6 * sd, "coefficient deviation {worst}, sd {sd}");
        }
    }
}
