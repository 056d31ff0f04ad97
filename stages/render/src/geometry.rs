//! Crop geometry: one 2×3 affine matrix per crop, from source continuous coordinates to output
//! continuous coordinates (pixel centres at +0.5 on both sides), composed from the crop box,
//! rotation, scale, translation and flip.

use serde::{Deserialize, Serialize};

use super::augment::Augmentation;
use contract::scheme::Scheme;
use faces::face::{BBox, FaceRecord, landmarks_bbox};

/// A 2-D affine map `(x, y) → (a·x + b·y + c, d·x + e·y + f)`, stored as `[a, b, c, d, e, f]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Affine(pub [f64; 6]);

impl Affine {
    /// The identity map.
    pub const IDENTITY: Affine = Affine([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);

    /// Translation by (tx, ty).
    pub fn translation(tx: f64, ty: f64) -> Self {
        Affine([1.0, 0.0, tx, 0.0, 1.0, ty])
    }

    /// Uniform scaling about the origin.
    pub fn scaling(s: f64) -> Self {
        Affine([s, 0.0, 0.0, 0.0, s, 0.0])
    }

    /// Rotation about the origin by `deg` degrees, counter-clockwise as displayed (y points down,
    /// so this is a clockwise rotation in the mathematical frame).
    pub fn rotation_deg(deg: f64) -> Self {
        let (s, c) = deg.to_radians().sin_cos();
        Affine([c, s, 0.0, -s, c, 0.0])
    }

    /// Mirror of a `width`-wide frame: x → width − x.
    pub fn mirror(width: f64) -> Self {
        Affine([-1.0, 0.0, width, 0.0, 1.0, 0.0])
    }

    /// `self` applied after `first`: `(self ∘ first)(p) = self(first(p))`.
    pub fn after(&self, first: &Affine) -> Affine {
        let [a, b, c, d, e, f] = self.0;
        let [p, q, r, s, t, u] = first.0;
        Affine([
            a * p + b * s,
            a * q + b * t,
            a * r + b * u + c,
            d * p + e * s,
            d * q + e * t,
            d * r + e * u + f,
        ])
    }

    /// Map a point.
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let [a, b, c, d, e, f] = self.0;
        (a * x + b * y + c, d * x + e * y + f)
    }

    /// The inverse map, or `None` when the matrix is singular.
    pub fn inverse(&self) -> Option<Affine> {
        let [a, b, c, d, e, f] = self.0;
        let det = a * e - b * d;
        if det.abs() < 1e-12 || !det.is_finite() {
            return None;
        }
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        Some(Affine([
            ia,
            ib,
            -(ia * c + ib * f),
            id,
            ie,
            -(id * c + ie * f),
        ]))
    }

    /// Linear scale factor: output units per source unit (√|det|).
    pub fn scale(&self) -> f64 {
        let [a, b, _, d, e, _] = self.0;
        (a * e - b * d).abs().sqrt()
    }
}

/// How the stage-1 crop box is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxRule {
    /// The landmarks' bounding box made square (side = max(w, h), same centre), enlarged.
    #[default]
    Landmarks,
    /// The face record's own box made square (side = max(w, h), same centre), enlarged.
    Annotation,
}

/// A square box: centre and side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SquareBox {
    /// Centre x.
    pub cx: f64,
    /// Centre y.
    pub cy: f64,
    /// Side length.
    pub side: f64,
}

impl SquareBox {
    /// The square with the same centre as `b`, side = max(w, h) × `enlarge`.
    pub fn around(b: &BBox, enlarge: f64) -> SquareBox {
        let (w, h) = (b.w as f64, b.h as f64);
        SquareBox {
            cx: b.x as f64 + w / 2.0,
            cy: b.y as f64 + h / 2.0,
            side: w.max(h) * enlarge,
        }
    }
}

/// The stage-1 crop box of a face (before augmentation): landmarks' box by default, falling
/// back to the annotation box when no point has coordinates. `None` when the box is degenerate.
pub fn stage1_box(face: &FaceRecord, rule: BoxRule, enlarge: f64) -> Option<SquareBox> {
    let b = match rule {
        BoxRule::Landmarks => landmarks_bbox(&face.landmarks).unwrap_or(face.bbox),
        BoxRule::Annotation => face.bbox,
    };
    let sq = SquareBox::around(&b, enlarge);
    (sq.side > 0.0 && sq.side.is_finite() && sq.cx.is_finite() && sq.cy.is_finite()).then_some(sq)
}

/// The matrix that maps `sq` (rotated by `rotation_deg` about its centre) onto a `size`×`size`
/// output, optionally mirrored in the output frame.
fn box_to_crop(sq: &SquareBox, rotation_deg: f64, size: u32, flip: bool) -> Affine {
    let s = size as f64;
    let to_output = Affine::translation(s / 2.0, s / 2.0)
        .after(&Affine::scaling(s / sq.side))
        .after(&Affine::rotation_deg(rotation_deg))
        .after(&Affine::translation(-sq.cx, -sq.cy));
    if flip {
        Affine::mirror(s).after(&to_output)
    } else {
        to_output
    }
}

/// The stage-1 crop matrix: the face box shifted by (translate_x, translate_y)·side, its side
/// multiplied by `scale`, rotated by `rotation_deg` about its centre, then flipped if asked.
pub fn stage1_matrix(base: &SquareBox, aug: &Augmentation, size: u32) -> Affine {
    let sq = SquareBox {
        cx: base.cx + aug.translate_x * base.side,
        cy: base.cy + aug.translate_y * base.side,
        side: base.side * aug.scale,
    };
    box_to_crop(&sq, aug.rotation_deg, size, aug.flip)
}

fn mean_point(landmarks: &[f32], indices: &[usize]) -> Option<(f64, f64)> {
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0usize);
    for &i in indices {
        let (x, y) = (landmarks.get(2 * i)?, landmarks.get(2 * i + 1)?);
        if x.is_finite() && y.is_finite() {
            sx += *x as f64;
            sy += *y as f64;
            n += 1;
        }
    }
    (n > 0).then(|| (sx / n as f64, sy / n as f64))
}

/// The stage-2 crop matrix: rotate so that the eye line (means of the scheme's left and right
/// eye points) is horizontal, take the landmarks' square box (× `enlarge`) in that frame, then
/// perturb it by the stage-2 noise and flip if asked. Without eye points the roll is taken as 0;
/// without any point that has coordinates, `fallback_box` (the annotation box) stands in for
/// the landmarks' box.
pub fn stage2_matrix(
    landmarks: &[f32],
    fallback_box: &BBox,
    scheme: &Scheme,
    aug: &Augmentation,
    enlarge: f64,
    size: u32,
) -> Option<Affine> {
    let roll_deg = match (
        mean_point(landmarks, &scheme.left_eye),
        mean_point(landmarks, &scheme.right_eye),
    ) {
        (Some(l), Some(r)) => (r.1 - l.1).atan2(r.0 - l.0).to_degrees(),
        _ => 0.0,
    };
    // Rotating by +roll (counter-clockwise as displayed) levels an eye line that descends to
    // the right by `roll` degrees.
    let level = Affine::rotation_deg(roll_deg);
    let mut levelled = Vec::with_capacity(landmarks.len());
    for p in landmarks.chunks_exact(2) {
        let (x, y) = level.apply(p[0] as f64, p[1] as f64);
        levelled.extend([x as f32, y as f32]);
    }
    let b = match landmarks_bbox(&levelled) {
        Some(b) => b,
        None => {
            // No landmarks: level the annotation box's centre instead.
            let sq = SquareBox::around(fallback_box, 1.0);
            let (cx, cy) = level.apply(sq.cx, sq.cy);
            BBox {
                x: (cx - sq.side / 2.0) as f32,
                y: (cy - sq.side / 2.0) as f32,
                w: sq.side as f32,
                h: sq.side as f32,
            }
        }
    };
    let base = SquareBox::around(&b, enlarge);
    if !(base.side > 0.0 && base.side.is_finite()) {
        return None;
    }
    let sq = SquareBox {
        cx: base.cx + aug.stage2_translate_x * base.side,
        cy: base.cy + aug.stage2_translate_y * base.side,
        side: base.side * aug.stage2_scale,
    };
    Some(box_to_crop(&sq, aug.stage2_rotation_deg, size, aug.flip).after(&level))
}

/// Landmarks mapped into a crop: coordinates, annotation visibility, occlusion and whether each
/// point lies inside the crop, permuted by the scheme's flip permutation when the crop is mirrored.
#[derive(Debug, Clone, PartialEq)]
pub struct CropLandmarks {
    /// x0, y0, x1, y1, … in output pixel coordinates; NaN where the source has none.
    pub xy: Vec<f32>,
    /// Annotation visibility (permuted with the points).
    pub visible: Vec<u8>,
    /// Labelled but occluded in the source (permuted with the points).
    pub occluded: Vec<u8>,
    /// 1 when the point lies in [0, size)² of the crop.
    pub in_crop: Vec<u8>,
}

/// Apply `m` to a face's landmarks (and the flip permutation when `flip`).
pub fn transform_landmarks(
    face: &FaceRecord,
    scheme: &Scheme,
    m: &Affine,
    flip: bool,
    size: u32,
) -> CropLandmarks {
    let n = face.num_points();
    let mut xy = Vec::with_capacity(2 * n);
    for p in face.landmarks.chunks_exact(2) {
        let (x, y) = m.apply(p[0] as f64, p[1] as f64);
        xy.extend([x as f32, y as f32]);
    }
    let flags = |of: &[bool]| -> Vec<u8> {
        (0..n)
            .map(|i| of.get(i).copied().unwrap_or(false) as u8)
            .collect()
    };
    let mut visible = flags(&face.visible);
    let mut occluded = flags(&face.occluded);
    if flip {
        let flipped: Vec<f32> = scheme
            .flip_permutation
            .iter()
            .flat_map(|&src| [xy[2 * src], xy[2 * src + 1]])
            .collect();
        xy = flipped;
        visible = scheme.flip_points(&visible);
        occluded = scheme.flip_points(&occluded);
    }
    let s = size as f32;
    let in_crop = xy
        .chunks_exact(2)
        .map(|p| {
            (p[0].is_finite()
                && p[1].is_finite()
                && (0.0..s).contains(&p[0])
                && (0.0..s).contains(&p[1])) as u8
        })
        .collect();
    CropLandmarks {
        xy,
        visible,
        occluded,
        in_crop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn inverse_and_composition_agree(
            deg in -180.0f64..180.0, s in 0.1f64..10.0, tx in -100.0f64..100.0,
            ty in -100.0f64..100.0, flip in any::<bool>(), x in -500.0f64..500.0,
            y in -500.0f64..500.0,
        ) {
            let mut m = Affine::translation(tx, ty)
                .after(&Affine::scaling(s))
                .after(&Affine::rotation_deg(deg));
            if flip {
                m = Affine::mirror(64.0).after(&m);
            }
            let (u, v) = m.apply(x, y);
            let (bx, by) = m.inverse().unwrap().apply(u, v);
            prop_assert!((bx - x).abs() < 1e-6 && (by - y).abs() < 1e-6);
            prop_assert!((m.scale() - s).abs() < 1e-9 * s.max(1.0));
        }
    }

    #[test]
    fn rotation_is_counter_clockwise_as_displayed() {
        // With y down, a point to the right of the origin moves up (y decreases).
        let (x, y) = Affine::rotation_deg(90.0).apply(1.0, 0.0);
        assert!(x.abs() < 1e-12 && (y + 1.0).abs() < 1e-12);
    }

    #[test]
    fn unperturbed_box_fills_the_crop() {
        let sq = SquareBox {
            cx: 100.0,
            cy: 50.0,
            side: 40.0,
        };
        let m = stage1_matrix(&sq, &Augmentation::identity(), 64);
        assert_eq!(m.apply(80.0, 30.0), (0.0, 0.0));
        assert_eq!(m.apply(120.0, 70.0), (64.0, 64.0));
        let mut flipped = Augmentation::identity();
        flipped.flip = true;
        let m = stage1_matrix(&sq, &flipped, 64);
        assert_eq!(m.apply(80.0, 30.0), (64.0, 0.0));
    }
}
