//! The parametric 3D face: a mean head with identity and expression parameters, the landmark
//! definitions of both schemes on its surface, and the pose/camera that project it.
//!
//! Head frame: x towards the image's right in a frontal view, y down, z out of the face towards
//! the camera; the origin lies on the eye line midway between the eyes. The mean face's outer eye
//! corners are 1.06 head units apart and its chin is 1.45 units below the eye line.
//!
//! The head surface is a stack of horizontal super-elliptic sections (half width `w(y)`, front
//! and back depth) plus a height field of facial relief (nose, lips, brow ridge, cheekbones) on
//! the front. Facial features (eyes, brows, lips, nostrils) are curves in the frontal (x, y)
//! plane painted onto that surface, and every landmark is defined from the same curves, so a
//! landmark always sits on the structure it names. The mean face is built so that its image-left
//! half is the exact mirror of its image-right half.

use std::f32::consts::{FRAC_PI_2, PI};

use rand::Rng;
use rand_distr::StandardNormal;

pub(crate) type V2 = [f32; 2];
pub(crate) type V3 = [f32; 3];
pub(crate) type M3 = [[f32; 3]; 3];

pub(crate) fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

pub(crate) fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// Unnormalised 2D Gaussian; exactly zero beyond 4 standard deviations so most mesh vertices
/// skip the exponential.
pub(crate) fn gauss2(x: f32, y: f32, c: V2, sx: f32, sy: f32) -> f32 {
    let dx = (x - c[0]) / sx;
    let dy = (y - c[1]) / sy;
    let r = dx * dx + dy * dy;
    if r > 16.0 { 0.0 } else { (-0.5 * r).exp() }
}

pub(crate) fn dot(a: V3, b: V3) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub(crate) fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// Unit vector along `v`; `fallback` when `v` is (nearly) zero.
pub(crate) fn normalize_or(v: V3, fallback: V3) -> V3 {
    let n = dot(v, v).sqrt();
    if n > 1e-12 {
        [v[0] / n, v[1] / n, v[2] / n]
    } else {
        fallback
    }
}

pub(crate) fn mat_vec(m: &M3, v: V3) -> V3 {
    [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
}

fn mat_mul(a: &M3, b: &M3) -> M3 {
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            *cell = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

fn n01<R: Rng>(rng: &mut R) -> f32 {
    rng.sample::<f32, _>(StandardNormal)
}

/// `mean · (1 + rel_sd · N(0,1))`, clamped.
fn vary<R: Rng>(rng: &mut R, mean: f32, rel_sd: f32, lo: f32, hi: f32) -> f32 {
    (mean * (1.0 + rel_sd * n01(rng))).clamp(lo, hi)
}

/// Identity (shape) and expression of one face, in head units.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FaceParams {
    /// Half width of the head at the eye line.
    pub head_width: f32,
    /// Height of the skull above the eye line.
    pub skull_height: f32,
    /// Eye line to chin with the mouth closed.
    pub jaw_length: f32,
    /// Super-ellipse exponent of the jaw outline (larger = squarer jaw).
    pub jaw_power: f32,
    /// Extra narrowing of the lower jaw.
    pub jaw_taper: f32,
    /// Depth of the face front in front of the head's vertical axis.
    pub face_depth: f32,
    /// Super-ellipse exponent of the horizontal sections (larger = flatter face).
    pub section_power: f32,
    /// Distance of each eye centre from the midline.
    pub eye_x: f32,
    /// Corner-to-corner eye width.
    pub eye_width: f32,
    /// Eye height multiplier.
    pub eye_height: f32,
    /// Outer corners this much higher than the inner ones.
    pub eye_tilt: f32,
    /// 0 = closed, 1 = normally open.
    pub eye_open: f32,
    /// Per-eye vertical offset (image-left, image-right): a small asymmetry.
    pub eye_dy: [f32; 2],
    /// Iris offset in eye-size units (x towards the image right, y down).
    pub gaze: V2,
    /// Height of the inner upper corner of the brows.
    pub brow_y: f32,
    /// Per-brow vertical offset (image-left, image-right).
    pub brow_dy: [f32; 2],
    /// Inner brow end, distance from the midline.
    pub brow_inner_x: f32,
    /// Outer brow end, distance from the midline.
    pub brow_outer_x: f32,
    /// Height of the brow arch above its chord.
    pub brow_arch: f32,
    /// Brow thickness at its inner end.
    pub brow_thickness: f32,
    /// Expression: 0 = neutral, 1 = raised brows.
    pub brow_raise: f32,
    /// Height of the nose tip.
    pub nose_tip_y: f32,
    /// Height of the nose base (subnasale).
    pub nose_base_y: f32,
    /// Half width of the nose base at the alae.
    pub nose_width: f32,
    /// How far the nose tip stands out of the face.
    pub nose_height: f32,
    /// Height of the lip line at the mouth centre.
    pub mouth_y: f32,
    /// Half width of the mouth (corner to midline).
    pub mouth_width: f32,
    /// Upper lip thickness.
    pub upper_lip: f32,
    /// Lower lip thickness.
    pub lower_lip: f32,
    /// Expression: 0 = closed, 1 = wide open (the jaw drops with it).
    pub mouth_open: f32,
    /// Expression: mouth corners out and up; negative = down.
    pub smile: f32,
    /// Height of the ear centre.
    pub ear_y: f32,
    /// Ear size multiplier.
    pub ear_size: f32,
}

impl FaceParams {
    /// The mean, neutral, exactly symmetric face.
    pub fn mean() -> Self {
        FaceParams {
            head_width: 0.88,
            skull_height: 1.65,
            jaw_length: 1.45,
            jaw_power: 2.25,
            jaw_taper: 0.0,
            face_depth: 0.72,
            section_power: 2.6,
            eye_x: 0.38,
            eye_width: 0.30,
            eye_height: 1.0,
            eye_tilt: 0.0,
            eye_open: 1.0,
            eye_dy: [0.0, 0.0],
            gaze: [0.0, 0.0],
            brow_y: -0.20,
            brow_dy: [0.0, 0.0],
            brow_inner_x: 0.15,
            brow_outer_x: 0.74,
            brow_arch: 0.10,
            brow_thickness: 0.065,
            brow_raise: 0.0,
            nose_tip_y: 0.44,
            nose_base_y: 0.60,
            nose_width: 0.17,
            nose_height: 0.28,
            mouth_y: 0.82,
            mouth_width: 0.34,
            upper_lip: 0.075,
            lower_lip: 0.10,
            mouth_open: 0.0,
            smile: 0.0,
            ear_y: 0.2,
            ear_size: 1.0,
        }
    }

    /// A random identity and expression. `expressive` in [0, 1] widens the expressions (the
    /// challenging subset uses more).
    pub fn sample<R: Rng>(rng: &mut R, expressive: f32) -> Self {
        let m = Self::mean();
        let nose_tip_y = m.nose_tip_y + 0.03 * n01(rng).clamp(-2.0, 2.0);
        let nose_base_y = nose_tip_y + 0.16 + 0.015 * n01(rng).clamp(-2.0, 2.0);
        let mouth_y = (m.mouth_y + 0.03 * n01(rng).clamp(-2.0, 2.0)).max(nose_base_y + 0.16);
        let open_p = 0.35 + 0.3 * expressive;
        let mouth_open = if rng.r#gen::<f32>() < open_p {
            rng.r#gen::<f32>().powf(1.5 - 0.7 * expressive)
        } else {
            0.0
        };
        let brow_raise = if rng.r#gen::<f32>() < 0.2 + 0.3 * expressive {
            rng.gen_range(0.0..1.0)
        } else {
            (0.15 * n01(rng)).clamp(-0.4, 0.4)
        };
        let eye_open = if rng.r#gen::<f32>() < 0.08 + 0.1 * expressive {
            rng.gen_range(0.0..0.5)
        } else {
            rng.gen_range(0.7..1.15)
        };
        FaceParams {
            head_width: vary(rng, m.head_width, 0.05, 0.76, 1.0),
            skull_height: vary(rng, m.skull_height, 0.05, 1.45, 1.85),
            jaw_length: vary(rng, m.jaw_length, 0.06, 1.25, 1.65),
            jaw_power: rng.gen_range(1.9..2.9),
            jaw_taper: rng.gen_range(0.0..0.15),
            face_depth: vary(rng, m.face_depth, 0.06, 0.6, 0.84),
            section_power: rng.gen_range(2.2..3.0),
            eye_x: vary(rng, m.eye_x, 0.05, 0.33, 0.43),
            eye_width: vary(rng, m.eye_width, 0.07, 0.24, 0.36),
            eye_height: vary(rng, m.eye_height, 0.12, 0.7, 1.3),
            eye_tilt: (0.015 * n01(rng)).clamp(-0.03, 0.03),
            eye_open,
            eye_dy: [
                0.008 * n01(rng).clamp(-2.0, 2.0),
                0.008 * n01(rng).clamp(-2.0, 2.0),
            ],
            gaze: [
                (0.35 * n01(rng)).clamp(-0.8, 0.8),
                (0.25 * n01(rng)).clamp(-0.6, 0.6),
            ],
            brow_y: m.brow_y + 0.025 * n01(rng).clamp(-2.0, 2.0),
            brow_dy: [
                0.01 * n01(rng).clamp(-2.0, 2.0),
                0.01 * n01(rng).clamp(-2.0, 2.0),
            ],
            brow_inner_x: vary(rng, m.brow_inner_x, 0.1, 0.11, 0.2),
            brow_outer_x: vary(rng, m.brow_outer_x, 0.05, 0.64, 0.82),
            brow_arch: vary(rng, m.brow_arch, 0.25, 0.04, 0.16),
            brow_thickness: vary(rng, m.brow_thickness, 0.2, 0.04, 0.095),
            brow_raise,
            nose_tip_y,
            nose_base_y,
            nose_width: vary(rng, m.nose_width, 0.1, 0.13, 0.22),
            nose_height: vary(rng, m.nose_height, 0.12, 0.18, 0.38),
            mouth_y,
            mouth_width: vary(rng, m.mouth_width, 0.08, 0.26, 0.42),
            upper_lip: vary(rng, m.upper_lip, 0.2, 0.045, 0.11),
            lower_lip: vary(rng, m.lower_lip, 0.2, 0.06, 0.14),
            mouth_open,
            smile: (0.15 + (0.3 + 0.2 * expressive) * n01(rng)).clamp(-0.3, 1.0),
            ear_y: m.ear_y + 0.03 * n01(rng).clamp(-2.0, 2.0),
            ear_size: vary(rng, m.ear_size, 0.1, 0.75, 1.25),
        }
    }
}

/// An eye: two corners and two eyelid curves over the corner-to-corner parameter s
/// (0 = inner corner, 1 = outer corner).
#[derive(Debug, Clone)]
pub(crate) struct Eye {
    pub inner: V2,
    pub outer: V2,
    up_h: f32,
    lo_h: f32,
    open: f32,
    /// Iris centre (the AFLW eye centre).
    pub iris: V2,
    pub iris_r: f32,
}

impl Eye {
    fn lid_up(s: f32) -> f32 {
        // Peak slightly towards the inner corner, as on real upper lids.
        let s = s.clamp(0.0, 1.0).powf(0.85);
        (4.0 * s * (1.0 - s)).max(0.0).powf(0.6)
    }

    fn lid_lo(s: f32) -> f32 {
        let s = s.clamp(0.0, 1.0).powf(1.15);
        (4.0 * s * (1.0 - s)).max(0.0).powf(0.75)
    }

    fn base(&self, s: f32) -> V2 {
        [
            lerp(self.inner[0], self.outer[0], s),
            lerp(self.inner[1], self.outer[1], s),
        ]
    }

    /// Upper lid margin at s; a closed eye's upper lid lies on the lower one.
    pub fn upper(&self, s: f32) -> V2 {
        let b = self.base(s);
        let open_y = b[1] - self.up_h * Self::lid_up(s);
        [b[0], lerp(self.lower(s)[1], open_y, self.open)]
    }

    /// Lower lid margin at s.
    pub fn lower(&self, s: f32) -> V2 {
        let b = self.base(s);
        [b[0], b[1] + self.lo_h * Self::lid_lo(s)]
    }

    /// (s, upper lid y, lower lid y) at `x`, when `x` lies between the corners.
    pub fn span_at(&self, x: f32) -> Option<(f32, f32, f32)> {
        let s = (x - self.inner[0]) / (self.outer[0] - self.inner[0]);
        if s <= 0.0 || s >= 1.0 {
            return None;
        }
        Some((s, self.upper(s)[1], self.lower(s)[1]))
    }

    /// Width corner to corner.
    pub fn width(&self) -> f32 {
        (self.outer[0] - self.inner[0]).abs()
    }
}

/// A brow: a band over the inner-to-outer parameter s whose upper edge carries the iBUG points.
#[derive(Debug, Clone)]
pub(crate) struct Brow {
    pub inner: V2,
    pub outer: V2,
    arch: f32,
    thick: f32,
}

impl Brow {
    /// Upper edge at s.
    pub fn upper(&self, s: f32) -> V2 {
        let x = lerp(self.inner[0], self.outer[0], s);
        let y =
            lerp(self.inner[1], self.outer[1], s) - self.arch * (PI * s.max(0.0).powf(0.8)).sin();
        [x, y]
    }

    /// Thickness at s: blunt inner end, tapering to a point at the outer end.
    pub fn thickness(&self, s: f32) -> f32 {
        self.thick * (1.0 - 0.45 * s) * ((1.0 - s) / 0.18).clamp(0.0, 1.0).powf(0.7)
    }

    /// Middle of the band at s (AFLW's brow points).
    pub fn middle(&self, s: f32) -> V2 {
        let u = self.upper(s);
        [u[0], u[1] + 0.5 * self.thickness(s)]
    }

    /// (s, upper y, lower y) at `x` within the brow's x-span.
    pub fn span_at(&self, x: f32) -> Option<(f32, f32, f32)> {
        let s = (x - self.inner[0]) / (self.outer[0] - self.inner[0]);
        if !(0.0..=1.0).contains(&s) {
            return None;
        }
        let up = self.upper(s)[1];
        Some((s, up, up + self.thickness(s)))
    }
}

/// A function y(x) through control points with increasing x: cubic Hermite with
/// central-difference slopes, so it passes exactly through every control point.
#[derive(Debug, Clone)]
pub(crate) struct Curve {
    pts: Vec<V2>,
    slopes: Vec<f32>,
}

impl Curve {
    fn through(pts: Vec<V2>) -> Self {
        let n = pts.len();
        let slopes = (0..n)
            .map(|i| {
                let (a, b) = (pts[i.saturating_sub(1)], pts[(i + 1).min(n - 1)]);
                let dx = b[0] - a[0];
                if dx.abs() < 1e-9 {
                    0.0
                } else {
                    (b[1] - a[1]) / dx
                }
            })
            .collect();
        Curve { pts, slopes }
    }

    /// y at x (clamped to the end points outside the span).
    pub fn at(&self, x: f32) -> f32 {
        let p = &self.pts;
        if x <= p[0][0] {
            return p[0][1];
        }
        for i in 0..p.len() - 1 {
            let (a, b) = (p[i], p[i + 1]);
            if x <= b[0] {
                let h = b[0] - a[0];
                if h <= 1e-9 {
                    return b[1];
                }
                let t = (x - a[0]) / h;
                let (t2, t3) = (t * t, t * t * t);
                return (2.0 * t3 - 3.0 * t2 + 1.0) * a[1]
                    + (t3 - 2.0 * t2 + t) * h * self.slopes[i]
                    + (-2.0 * t3 + 3.0 * t2) * b[1]
                    + (t3 - t2) * h * self.slopes[i + 1];
            }
        }
        p[p.len() - 1][1]
    }
}

/// The lips: the 20 iBUG lip points (48..=67 in order) and the four boundary curves.
#[derive(Debug, Clone)]
pub(crate) struct Lips {
    pub points: [V2; 20],
    pub outer_upper: Curve,
    pub inner_upper: Curve,
    pub inner_lower: Curve,
    pub outer_lower: Curve,
    /// Gap between the inner lips at the centre (0 = closed).
    pub gap: f32,
}

impl Lips {
    /// x-span corner to corner.
    pub fn x_span(&self) -> (f32, f32) {
        (self.points[0][0], self.points[6][0])
    }
}

/// The nose: ridge from the bridge to the tip, base curve with the nostrils above it.
#[derive(Debug, Clone)]
pub(crate) struct Nose {
    pub bridge_y: f32,
    pub tip_y: f32,
    pub base_y: f32,
    pub half_width: f32,
    pub height: f32,
}

impl Nose {
    /// The nose base (where the nose meets the upper lip): lowest at the midline.
    pub fn base_at(&self, x: f32) -> f32 {
        let u = (x / self.half_width).clamp(-1.0, 1.0);
        self.base_y - 0.06 * u * u
    }

    /// Centre of the nostril on `side` (−1 image-left, +1 image-right).
    pub fn nostril(&self, side: f32) -> V2 {
        let x = side * 0.5 * self.half_width;
        [x, self.base_at(x) - 0.024]
    }

    /// Nostril semi-axes.
    pub fn nostril_radii(&self) -> V2 {
        [0.24 * self.half_width, 0.014]
    }

    /// Centre and radius of the alar crease arc on `side`; its outermost point is AFLW's
    /// NoseLeft/NoseRight.
    pub fn ala(&self, side: f32) -> (V2, f32) {
        ([side * (self.half_width - 0.05), self.base_y - 0.11], 0.07)
    }
}

/// An ear: an elliptic disc standing out from the side of the head.
#[derive(Debug, Clone)]
pub(crate) struct Ear {
    pub centre: V3,
    /// Half-height vector, pointing down.
    pub down: V3,
    /// Half-depth vector, pointing back and outwards.
    pub back: V3,
    pub normal: V3,
}

impl Ear {
    /// The point at disc coordinates (u along `down`, v along `back`), both in [−1, 1].
    pub fn point(&self, u: f32, v: f32) -> V3 {
        [
            self.centre[0] + u * self.down[0] + v * self.back[0],
            self.centre[1] + u * self.down[1] + v * self.back[1],
            self.centre[2] + u * self.down[2] + v * self.back[2],
        ]
    }

    /// AFLW's ear point: the lower front of the ear, by the lobe.
    pub fn landmark(&self) -> V3 {
        self.point(0.55, -0.3)
    }
}

/// Which landmark set to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// The 68 iBUG points (300W).
    Ibug68,
    /// The 21 AFLW points (feature ids 1..=21 in order).
    Aflw21,
}

/// A landmark on the head surface.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SurfacePoint {
    pub p: V3,
    /// On or near the occluding contour (the jaw line and chin): its depth test needs more
    /// tolerance because the surface there is seen nearly edge-on.
    pub contour: bool,
}

/// A face built from its parameters: head outline functions, features, ears.
#[derive(Debug, Clone)]
pub(crate) struct FaceModel {
    pub p: FaceParams,
    /// Chin height, including the jaw drop of an open mouth.
    pub chin_y: f32,
    pub eyes: [Eye; 2],
    pub brows: [Brow; 2],
    pub lips: Lips,
    pub nose: Nose,
    pub ears: [Ear; 2],
    /// Heights of the jaw points from the top (0) to the chin (8), evenly spaced along the
    /// frontal jaw outline.
    jaw_heights: [f32; 9],
}

/// Sides: index 0 = image-left (x < 0), 1 = image-right.
const SIDES: [f32; 2] = [-1.0, 1.0];

impl FaceModel {
    pub fn new(p: FaceParams) -> Self {
        let gap = 0.26 * p.mouth_open;
        let chin_y = p.jaw_length + 0.8 * gap;
        let eyes = SIDES.map(|side| {
            let i = usize::from(side > 0.0);
            let cy = p.eye_dy[i];
            let half = 0.5 * p.eye_width;
            let iris_x = side * p.eye_x + p.gaze[0] * p.eye_width * 0.18;
            Eye {
                inner: [side * (p.eye_x - half), cy + 0.5 * p.eye_tilt],
                outer: [side * (p.eye_x + half), cy - 0.5 * p.eye_tilt],
                up_h: 0.062 * p.eye_height,
                lo_h: 0.042 * p.eye_height,
                open: p.eye_open.clamp(0.0, 1.2),
                iris: [iris_x, cy - 0.006 + p.gaze[1] * 0.02],
                iris_r: 0.19 * p.eye_width,
            }
        });
        let brows = SIDES.map(|side| {
            let i = usize::from(side > 0.0);
            let y = p.brow_y + p.brow_dy[i];
            Brow {
                inner: [side * p.brow_inner_x, y - 0.07 * p.brow_raise],
                outer: [side * p.brow_outer_x, y + 0.03 - 0.05 * p.brow_raise],
                arch: p.brow_arch + 0.02 * p.brow_raise,
                thick: p.brow_thickness,
            }
        });
        let nose = Nose {
            bridge_y: -0.02,
            tip_y: p.nose_tip_y,
            base_y: p.nose_base_y,
            half_width: p.nose_width,
            height: p.nose_height,
        };
        let lips = Self::make_lips(&p, gap);
        let mut model = FaceModel {
            chin_y,
            eyes,
            brows,
            lips,
            nose,
            ears: SIDES.map(|_| Ear {
                centre: [0.0; 3],
                down: [0.0; 3],
                back: [0.0; 3],
                normal: [0.0; 3],
            }),
            jaw_heights: [0.0; 9],
            p,
        };
        model.jaw_heights = model.compute_jaw_heights();
        model.ears = SIDES.map(|side| model.make_ear(side));
        model
    }

    fn make_lips(p: &FaceParams, gap: f32) -> Lips {
        let mw = p.mouth_width + 0.03 * p.smile;
        let ym = p.mouth_y;
        let yc = ym - 0.05 * p.smile;
        // The lip line bends from the centre to the corners (up in a smile).
        let line = |x: f32| ym + (yc - ym) * (x / mw) * (x / mw);
        let (ul, ll) = (p.upper_lip, p.lower_lip);
        let half: [V2; 20] = {
            // Image-right half in iBUG order; left entries are filled by mirroring below.
            let mut h = [[0.0f32; 2]; 20];
            let at = |x: f32, dy: f32| [x, line(x) + dy];
            h[6] = [mw, yc]; // 54
            h[5] = at(0.62 * mw, -0.80 * ul); // 53
            h[4] = at(0.24 * mw, -ul); // 52
            h[3] = at(0.0, -0.86 * ul); // 51
            h[7] = at(0.68 * mw, 0.70 * ll + 0.75 * gap); // 55
            h[8] = at(0.30 * mw, 0.97 * ll + 0.97 * gap); // 56
            h[9] = at(0.0, ll + gap); // 57
            let xi = mw - 0.045;
            h[16] = at(xi, 0.002); // 64
            h[15] = at(0.45 * mw, 0.004 - 0.06 * gap); // 63
            h[14] = at(0.0, 0.004 - 0.08 * gap); // 62
            h[17] = at(0.45 * mw, 0.004 + 0.85 * gap); // 65
            h[18] = at(0.0, 0.004 + gap); // 66
            h
        };
        let mut pts = half;
        let mirror = |v: V2| [-v[0], v[1]];
        // (left index, right index) pairs under the iBUG flip permutation, lips part (−48).
        for (l, r) in [
            (0, 6),
            (1, 5),
            (2, 4),
            (11, 7),
            (10, 8),
            (12, 16),
            (13, 15),
            (19, 17),
        ] {
            pts[l] = mirror(half[r]);
        }
        let sel = |idx: &[usize]| Curve::through(idx.iter().map(|&i| pts[i]).collect());
        Lips {
            outer_upper: sel(&[0, 1, 2, 3, 4, 5, 6]),
            inner_upper: sel(&[0, 12, 13, 14, 15, 16, 6]),
            inner_lower: sel(&[0, 12, 19, 18, 17, 16, 6]),
            outer_lower: sel(&[0, 11, 10, 9, 8, 7, 6]),
            points: pts,
            gap,
        }
    }

    fn make_ear(&self, side: f32) -> Ear {
        let s = self.p.ear_size;
        let y = self.p.ear_y;
        let w = self.half_width(y);
        let (zf, zb) = (self.front_z(y), self.back_z(y));
        let c = 0.5 * (zf + zb);
        let flare = 0.45f32;
        Ear {
            centre: [side * (w + 0.04 * s), y, c - 0.05],
            down: [0.0, 0.3 * s, 0.0],
            back: [side * flare.sin() * 0.17 * s, 0.0, -flare.cos() * 0.17 * s],
            normal: [side * flare.cos(), 0.0, flare.sin()],
        }
    }

    /// Half width of the head section at height y.
    pub fn half_width(&self, y: f32) -> f32 {
        let p = &self.p;
        if y < 0.0 {
            let u = (-y / p.skull_height).min(1.0);
            p.head_width * (1.0 - u.powf(2.1)).max(0.0).powf(1.0 / 2.1)
        } else {
            let u = (y / self.chin_y).min(1.0);
            p.head_width
                * (1.0 - u.powf(p.jaw_power)).max(0.0).powf(1.0 / p.jaw_power)
                * (1.0 - p.jaw_taper * u * u)
        }
    }

    /// Depth of the face front (without relief) at height y.
    pub fn front_z(&self, y: f32) -> f32 {
        let p = &self.p;
        let dome_start = -0.85;
        if y < dome_start {
            let u = ((y - dome_start) / (p.skull_height + dome_start)).clamp(-1.0, 0.0);
            p.face_depth * (1.0 - u * u).max(0.0).sqrt()
        } else {
            let c0 = self.chin_y - 0.3;
            let u = ((y - c0) / 0.3).clamp(0.0, 1.0);
            p.face_depth - 0.08 * u * u
        }
    }

    /// Depth of the back of the section at height y (the skull, then the underside of the jaw).
    pub fn back_z(&self, y: f32) -> f32 {
        let p = &self.p;
        let back = 1.0 + 0.4 * (p.face_depth - 0.72);
        if y <= 0.0 {
            let u = (y / p.skull_height).clamp(-1.0, 0.0);
            -back * (1.0 - u * u).max(0.0).sqrt()
        } else {
            let u = (y / self.chin_y).clamp(0.0, 1.0);
            let chin_back = self.front_z(self.chin_y) - 0.2;
            -back + (chin_back + back) * u.powf(1.5)
        }
    }

    fn section(&self, t: f32) -> (f32, f32, f32) {
        let e = 2.0 / self.p.section_power;
        let (st, ct) = t.sin_cos();
        let sx = st.signum() * st.abs().powf(e);
        let cz = ct.signum() * ct.abs().powf(e);
        (sx, cz, ct)
    }

    /// The surface point at section angle t (0 = front, ±π/2 = the sides, positive towards
    /// the image right) and height y.
    pub fn surface(&self, t: f32, y: f32) -> V3 {
        let (sx, cz, ct) = self.section(t);
        let w = self.half_width(y);
        let (zf, zb) = (self.front_z(y), self.back_z(y));
        let (c, d) = (0.5 * (zf + zb), 0.5 * (zf - zb));
        let x = w * sx;
        let relief = if ct > 0.0 {
            self.relief(x, y) * smoothstep(0.0, 0.5, ct)
        } else {
            0.0
        };
        [x, y, c + d * cz + relief]
    }

    /// Section angle of the front surface point with abscissa x at height y.
    pub fn front_t(&self, x: f32, y: f32) -> f32 {
        let w = self.half_width(y);
        if w <= 1e-6 {
            return 0.0;
        }
        let s = (x / w).clamp(-1.0, 1.0);
        let sin_t = s.signum() * s.abs().powf(0.5 * self.p.section_power);
        sin_t.asin()
    }

    /// The front surface point over frontal coordinates (x, y).
    pub fn front_point(&self, xy: V2) -> V3 {
        self.surface(self.front_t(xy[0], xy[1]), xy[1])
    }

    /// Facial relief on the front of the head: a height field over frontal (x, y).
    fn relief(&self, x: f32, y: f32) -> f32 {
        let p = &self.p;
        let mut h = 0.0;
        // Brow ridge.
        h += 0.035
            * gauss2(0.0, y, [0.0, p.brow_y + 0.06], 1.0, 0.09)
            * smoothstep(0.85, 0.5, x.abs());
        for side in SIDES {
            // Eye sockets, cheekbones.
            h -= 0.05 * gauss2(x, y, [side * p.eye_x, -0.01], 0.17, 0.09);
            h += 0.05 * gauss2(x, y, [side * 0.5, 0.32 - 0.04 * p.smile], 0.16, 0.14);
        }
        // Lips and chin.
        let mw = p.mouth_width;
        h += 0.04 * gauss2(x, y, [0.0, p.mouth_y - 0.03], 0.8 * mw, 0.06);
        h += 0.045
            * gauss2(
                x,
                y,
                [0.0, p.mouth_y + self.lips.gap + 0.05],
                0.7 * mw,
                0.055,
            );
        h += 0.05 * gauss2(x, y, [0.0, self.chin_y - 0.17], 0.2, 0.12);
        h + self.nose_relief(x, y)
    }

    fn nose_relief(&self, x: f32, y: f32) -> f32 {
        let n = &self.nose;
        if y < n.bridge_y - 0.3 || y > n.base_y + 0.01 || x.abs() > n.half_width + 0.3 {
            return 0.0;
        }
        let len = n.tip_y - n.bridge_y;
        let u = (y - n.bridge_y) / len;
        let (along, sigma) = if y <= n.tip_y {
            let uc = u.max(0.0);
            (
                n.height
                    * (0.22 + 0.78 * uc.powf(1.7))
                    * smoothstep(n.bridge_y - 0.25, n.bridge_y, y),
                0.045 + 0.06 * uc,
            )
        } else {
            let v = (y - n.tip_y) / (n.base_y - n.tip_y);
            (n.height * (1.0 - 0.35 * v * v), 0.105)
        };
        let ridge = along * (-x * x / (2.0 * sigma * sigma)).exp();
        let mut alae = 0.0f32;
        for side in SIDES {
            let (c, _) = n.ala(side);
            alae = alae.max(0.5 * n.height * gauss2(x, y, [c[0], c[1] + 0.02], 0.065, 0.06));
        }
        // The nose ends at its base curve: a short steep drop (the underside) onto the lip.
        let fall = smoothstep(0.0, 0.06, n.base_at(x) - y);
        ridge.max(alae) * fall
    }

    fn compute_jaw_heights(&self) -> [f32; 9] {
        const N: usize = 600;
        let mut cum = Vec::with_capacity(N + 1);
        let mut ys = Vec::with_capacity(N + 1);
        let mut prev = [self.half_width(0.0), 0.0];
        let mut total = 0.0f32;
        for i in 0..=N {
            let y = self.chin_y * i as f32 / N as f32;
            let cur = [self.half_width(y), y];
            total += ((cur[0] - prev[0]).powi(2) + (cur[1] - prev[1]).powi(2)).sqrt();
            cum.push(total);
            ys.push(y);
            prev = cur;
        }
        let mut out = [0.0; 9];
        for (j, o) in out.iter_mut().enumerate() {
            let target = total * j as f32 / 8.0;
            let k = cum.partition_point(|&c| c < target).min(N);
            *o = if k == 0 {
                0.0
            } else {
                let (c0, c1) = (cum[k - 1], cum[k]);
                let f = if c1 > c0 {
                    (target - c0) / (c1 - c0)
                } else {
                    0.0
                };
                lerp(ys[k - 1], ys[k], f)
            };
        }
        out[8] = self.chin_y;
        out
    }

    /// The jaw point of the section at height y on `side`: the point of the front half-section
    /// (|t| ≤ π/2) that reaches furthest out to that side in the image (along the image direction
    /// of the head's x axis, with the camera's perspective). On the far side of a turned face, and
    /// on both sides under perspective, this is the occluding contour, where annotators put the
    /// jaw line; on the near side of a turned face it stays at the frontal outline (t = ±π/2).
    fn jaw_point(&self, side: f32, y: f32, cam: &Camera) -> V3 {
        let ex = mat_vec(&cam.rot, [1.0, 0.0, 0.0]);
        let norm = ex[0].hypot(ex[1]).max(1e-9);
        let dir = [ex[0] / norm, ex[1] / norm];
        let score = |t: f32| {
            let q = cam.in_camera_frame(self.surface(side * t, y));
            let f = cam.distance / (cam.distance - q[2]);
            side * f * (q[0] * dir[0] + q[1] * dir[1])
        };
        // Coarse scan then golden-section refinement of the maximum over t in [0, π/2].
        const STEPS: usize = 48;
        let mut best = (0usize, f32::MIN);
        for i in 0..=STEPS {
            let s = score(FRAC_PI_2 * i as f32 / STEPS as f32);
            if s > best.1 {
                best = (i, s);
            }
        }
        let step = FRAC_PI_2 / STEPS as f32;
        let (mut a, mut b) = (
            (best.0 as f32 - 1.0).max(0.0) * step,
            (best.0 as f32 + 1.0).min(STEPS as f32) * step,
        );
        let g = 0.618_034f32;
        for _ in 0..40 {
            let c = b - g * (b - a);
            let d = a + g * (b - a);
            if score(c) > score(d) {
                b = d;
            } else {
                a = c;
            }
        }
        self.surface(side * 0.5 * (a + b), y)
    }

    /// Landmarks of `layout` on the surface, seen through `cam` (the jaw contour depends on the
    /// view, as 300W annotators place it; scale and image position of `cam` do not matter).
    pub fn landmarks(&self, layout: Layout, cam: &Camera) -> Vec<SurfacePoint> {
        match layout {
            Layout::Ibug68 => self.ibug68(cam),
            Layout::Aflw21 => self.aflw21(),
        }
    }

    fn fixed(p: V3) -> SurfacePoint {
        SurfacePoint { p, contour: false }
    }

    fn ibug68(&self, cam: &Camera) -> Vec<SurfacePoint> {
        let mut out = Vec::with_capacity(68);
        for k in 0..17usize {
            if k == 8 {
                out.push(SurfacePoint {
                    p: self.surface(0.0, self.chin_y),
                    contour: true,
                });
                continue;
            }
            let (side, j) = if k < 8 { (-1.0f32, k) } else { (1.0, 16 - k) };
            out.push(SurfacePoint {
                p: self.jaw_point(side, self.jaw_heights[j], cam),
                contour: true,
            });
        }
        let front = |xy: V2| Self::fixed(self.front_point(xy));
        for s in [1.0, 0.75, 0.5, 0.25, 0.0] {
            out.push(front(self.brows[0].upper(s)));
        }
        for s in [0.0, 0.25, 0.5, 0.75, 1.0] {
            out.push(front(self.brows[1].upper(s)));
        }
        let n = &self.nose;
        for k in 0..4 {
            out.push(front([0.0, lerp(n.bridge_y, n.tip_y, k as f32 / 3.0)]));
        }
        for f in [-1.0, -0.5, 0.0, 0.5, 1.0] {
            let x = f * n.half_width;
            out.push(front([x, n.base_at(x)]));
        }
        let (le, re) = (&self.eyes[0], &self.eyes[1]);
        for xy in [
            le.outer,
            le.upper(2.0 / 3.0),
            le.upper(1.0 / 3.0),
            le.inner,
            le.lower(1.0 / 3.0),
            le.lower(2.0 / 3.0),
        ] {
            out.push(front(xy));
        }
        for xy in [
            re.inner,
            re.upper(1.0 / 3.0),
            re.upper(2.0 / 3.0),
            re.outer,
            re.lower(2.0 / 3.0),
            re.lower(1.0 / 3.0),
        ] {
            out.push(front(xy));
        }
        for xy in self.lips.points {
            out.push(front(xy));
        }
        out
    }

    fn aflw21(&self) -> Vec<SurfacePoint> {
        let front = |xy: V2| Self::fixed(self.front_point(xy));
        let (lb, rb) = (&self.brows[0], &self.brows[1]);
        let (le, re) = (&self.eyes[0], &self.eyes[1]);
        let n = &self.nose;
        let ala = |side: f32| {
            let (c, r) = n.ala(side);
            front([c[0] + side * r, c[1]])
        };
        let l = &self.lips.points;
        vec![
            front(lb.upper(1.0)),
            front(lb.middle(0.5)),
            front(lb.middle(0.0)),
            front(rb.middle(0.0)),
            front(rb.middle(0.5)),
            front(rb.upper(1.0)),
            front(le.outer),
            front(le.iris),
            front(le.inner),
            front(re.inner),
            front(re.iris),
            front(re.outer),
            Self::fixed(self.ears[0].landmark()),
            ala(-1.0),
            front([0.0, n.tip_y]),
            ala(1.0),
            Self::fixed(self.ears[1].landmark()),
            front(l[0]),
            front([0.0, 0.5 * (l[14][1] + l[18][1])]),
            front(l[6]),
            SurfacePoint {
                p: self.surface(0.0, self.chin_y),
                contour: true,
            },
        ]
    }
}

/// Head pose in radians. Yaw > 0 turns the face towards the image's right (the nose tip moves
/// right), pitch > 0 raises the face (the nose tip moves up), roll > 0 turns the face clockwise
/// in the image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pose {
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
}

impl Pose {
    /// Head-to-camera rotation `Rz(roll) · Rx(pitch) · Ry(yaw)` (camera frame: x right, y down,
    /// z towards the viewer).
    pub fn rotation(&self) -> M3 {
        let (sy, cy) = self.yaw.sin_cos();
        let (sp, cp) = self.pitch.sin_cos();
        let (sr, cr) = self.roll.sin_cos();
        let ry = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]];
        let rx = [[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]];
        let rz = [[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]];
        mat_mul(&rz, &mat_mul(&rx, &ry))
    }
}

/// Mild-perspective camera: the head rotates about `pivot`, the camera sits `distance` head
/// units in front of it, `scale` pixels per head unit at the pivot's depth, pivot at (cx, cy).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Camera {
    pub rot: M3,
    pub pivot: V3,
    pub distance: f32,
    pub scale: f32,
    pub cx: f32,
    pub cy: f32,
}

impl Camera {
    /// An unrotated camera 10 head units away, one pixel per head unit, pivot at the origin.
    pub fn frontal() -> Self {
        let rot = Pose {
            yaw: 0.0,
            pitch: 0.0,
            roll: 0.0,
        }
        .rotation();
        Camera {
            rot,
            pivot: [0.0, 0.4, -0.25],
            distance: 10.0,
            scale: 1.0,
            cx: 0.0,
            cy: 0.0,
        }
    }

    /// Rotate a head-frame point into the camera frame (relative to the pivot).
    pub fn in_camera_frame(&self, p: V3) -> V3 {
        mat_vec(&self.rot, sub(p, self.pivot))
    }

    /// Screen position (internal pixel convention) and depth (head units, larger = nearer).
    pub fn project(&self, p: V3) -> V3 {
        let q = self.in_camera_frame(p);
        let f = self.scale * self.distance / (self.distance - q[2]);
        [self.cx + q[0] * f, self.cy + q[1] * f, q[2]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_pass_through_their_control_points() {
        let m = FaceModel::new(FaceParams::mean());
        let l = &m.lips;
        for (curve, idx) in [
            (&l.outer_upper, [0usize, 1, 2, 3, 4, 5, 6]),
            (&l.inner_upper, [0, 12, 13, 14, 15, 16, 6]),
            (&l.inner_lower, [0, 12, 19, 18, 17, 16, 6]),
            (&l.outer_lower, [0, 11, 10, 9, 8, 7, 6]),
        ] {
            for i in idx {
                let p = l.points[i];
                assert!((curve.at(p[0]) - p[1]).abs() < 1e-6, "lip point {i}");
            }
        }
    }

    #[test]
    fn front_point_keeps_its_frontal_coordinates() {
        let m = FaceModel::new(FaceParams::sample(
            &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(7),
            0.5,
        ));
        for xy in [[0.3f32, 0.1f32], [-0.5, 0.6], [0.0, 0.44], [0.7, -0.3]] {
            let p = m.front_point(xy);
            assert!(
                (p[0] - xy[0]).abs() < 1e-4 && p[1] == xy[1],
                "{xy:?} → {p:?}"
            );
        }
    }

    #[test]
    fn jaw_heights_run_from_the_eye_line_to_the_chin() {
        let m = FaceModel::new(FaceParams::mean());
        assert_eq!(m.jaw_heights[0], 0.0);
        assert_eq!(m.jaw_heights[8], m.chin_y);
        assert!(
            m.jaw_heights.windows(2).all(|w| w[0] < w[1]),
            "{:?}",
            m.jaw_heights
        );
    }

    #[test]
    fn jaw_contour_moves_only_on_the_far_side() {
        let m = FaceModel::new(FaceParams::mean());
        let rot = Pose {
            yaw: 0.6,
            pitch: 0.0,
            roll: 0.0,
        }
        .rotation();
        let cam = Camera {
            rot,
            pivot: [0.0, 0.4, -0.25],
            distance: 10.0,
            scale: 1.0,
            cx: 0.0,
            cy: 0.0,
        };
        let pts = m.landmarks(Layout::Ibug68, &cam);
        for (k, p) in pts.iter().enumerate().take(17) {
            let fixed = m.surface(if k < 8 { -FRAC_PI_2 } else { FRAC_PI_2 }, p.p[1]);
            if k < 8 {
                let d =
                    p.p.iter()
                        .zip(fixed)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max);
                assert!(
                    d < 1e-4,
                    "near-side jaw {k} stays on the frontal outline: {:?} vs {fixed:?}",
                    p.p
                );
            } else if k > 8 {
                assert!(
                    p.p[0] > 0.0 && p.p[2] > fixed[2] + 0.05,
                    "far-side jaw {k} moves to the front: {:?}",
                    p.p
                );
            }
        }
    }
}
