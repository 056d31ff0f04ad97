//! Landmark schemes: the registry every stage asks for point counts, names, the horizontal
//! flip permutation, eye indices (for roll normalisation) and the NME normaliser.
//!
//! This is the one scheme table of wingflow: the CLI (readers, render, evaluation) and the
//! trainer (validation NME) both resolve a scheme's normalisers here.
//!
//! Indices are 0-based. The flip permutation is applied after mirroring x:
//! `new[i] = old[perm[i]]`.

use std::sync::LazyLock;

use crate::metrics::{Normaliser, NormaliserError};

/// A landmark scheme: everything a stage needs to know about a set of points.
#[derive(Debug, Clone)]
pub struct Scheme {
    /// Registry name, e.g. `ibug68`.
    pub name: &'static str,
    /// Human-readable point names, one per landmark, in index order.
    pub point_names: Vec<String>,
    /// `new[i] = old[flip_permutation[i]]` after mirroring x; an involution.
    pub flip_permutation: Vec<usize>,
    /// Points of the eye on the image's left in a frontal face (the subject's right eye).
    pub left_eye: Vec<usize>,
    /// Points of the eye on the image's right in a frontal face (the subject's left eye).
    pub right_eye: Vec<usize>,
    /// The default NME normaliser.
    pub normaliser: Normaliser,
    /// Other normalisers users may ask for by name (e.g. `inter-pupil`).
    pub alternative_normalisers: Vec<(&'static str, Normaliser)>,
}

impl Scheme {
    /// Number of landmarks.
    pub fn num_points(&self) -> usize {
        self.point_names.len()
    }

    /// Mirror a shape of a `width`-wide image: x → width − x, then permute the points.
    /// `xy` holds x0, y0, x1, y1, …; NaN stays NaN.
    pub fn flip_shape(&self, xy: &[f32], width: f32) -> Vec<f32> {
        let mut out = vec![0.0; xy.len()];
        for (i, &src) in self.flip_permutation.iter().enumerate() {
            out[2 * i] = width - xy[2 * src];
            out[2 * i + 1] = xy[2 * src + 1];
        }
        out
    }

    /// The normaliser a user asked for: `None` gives the scheme's default; else
    /// `inter-ocular` or `inter-pupil` (when the scheme defines them), one of the scheme's
    /// alternative names, `box-width`, `box-sqrt`, or an explicit `inter-ocular:A,B` /
    /// `inter-pupil:L0-L1,R0-R1` whose indices the scheme has.
    pub fn resolve_normaliser(&self, spec: Option<&str>) -> Result<Normaliser, NormaliserError> {
        let Some(spec) = spec else {
            return Ok(self.normaliser.clone());
        };
        let normaliser =
            Normaliser::parse(spec, |name| self.named_normaliser(name)).map_err(|e| {
                NormaliserError {
                    reason: format!(
                        "{} (scheme {} allows {})",
                        e.reason,
                        self.name,
                        self.normaliser_names().join(", ")
                    ),
                    ..e
                }
            })?;
        if let Some(max) = normaliser.max_index().filter(|&m| m >= self.num_points()) {
            return Err(NormaliserError {
                spec: spec.to_owned(),
                reason: format!(
                    "uses point {max}, but scheme {} has {} points (0..={})",
                    self.name,
                    self.num_points(),
                    self.num_points() - 1
                ),
            });
        }
        Ok(normaliser)
    }

    /// The index-free normaliser names this scheme accepts, default first (e.g. `inter-ocular`,
    /// `inter-pupil`, `box-width`, `box-sqrt` for ibug68).
    pub fn normaliser_names(&self) -> Vec<&'static str> {
        let mut names = vec![kind_name(&self.normaliser)];
        for (name, n) in &self.alternative_normalisers {
            for candidate in [*name, kind_name(n)] {
                if !names.contains(&candidate) {
                    names.push(candidate);
                }
            }
        }
        for generic in ["box-width", "box-sqrt"] {
            if !names.contains(&generic) {
                names.push(generic);
            }
        }
        names
    }

    /// The normaliser an index-free name stands for in this scheme: the default's kind, an
    /// alternative's name or kind; `None` when the scheme does not define it.
    fn named_normaliser(&self, name: &str) -> Option<Normaliser> {
        if kind_name(&self.normaliser) == name {
            return Some(self.normaliser.clone());
        }
        self.alternative_normalisers
            .iter()
            .find(|(alt, n)| *alt == name || kind_name(n) == name)
            .map(|(_, n)| n.clone())
    }

    /// Permute a per-point attribute (e.g. visibility) the way [`Scheme::flip_shape`] does.
    pub fn flip_points<T: Copy>(&self, values: &[T]) -> Vec<T> {
        self.flip_permutation
            .iter()
            .map(|&src| values[src])
            .collect()
    }
}

/// The index-free name of a normaliser's kind (`inter-ocular`, `inter-pupil`, `box-width`,
/// `box-sqrt`).
fn kind_name(n: &Normaliser) -> &'static str {
    match n {
        Normaliser::InterOcular { .. } => "inter-ocular",
        Normaliser::InterPupil { .. } => "inter-pupil",
        Normaliser::BoxWidth => "box-width",
        Normaliser::BoxSqrtArea => "box-sqrt",
    }
}

/// Error for an unknown scheme name.
#[derive(Debug, thiserror::Error)]
#[error("unknown landmark scheme `{name}` (known: {known})")]
pub struct UnknownScheme {
    /// The name asked for.
    pub name: String,
    /// Comma-separated registry names.
    pub known: String,
}

static REGISTRY: LazyLock<Vec<Scheme>> =
    LazyLock::new(|| vec![ibug68(), aflw19(), aflw21(), wflw98(), cofw29()]);

/// Every registered scheme.
pub fn all() -> &'static [Scheme] {
    &REGISTRY
}

/// Look a scheme up by name.
pub fn by_name(name: &str) -> Result<&'static Scheme, UnknownScheme> {
    REGISTRY
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| UnknownScheme {
            name: name.to_owned(),
            known: REGISTRY
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The normaliser `spec` asks for on shards or faces of the scheme named `scheme`: the one
/// resolution both the CLI and the trainer use. A registered scheme resolves through
/// [`Scheme::resolve_normaliser`]; a scheme wingflow does not know (shards written elsewhere)
/// defaults to `box-width` and takes only the explicit forms (`box-width`, `box-sqrt`,
/// `inter-ocular:A,B`, `inter-pupil:L0-L1,R0-R1`).
pub fn resolve_normaliser(scheme: &str, spec: Option<&str>) -> Result<Normaliser, NormaliserError> {
    match by_name(scheme) {
        Ok(s) => s.resolve_normaliser(spec),
        Err(_) => match spec {
            None => Ok(Normaliser::BoxWidth),
            Some(spec) => Normaliser::parse(spec, |_| None).map_err(|e| NormaliserError {
                reason: format!(
                    "{} (scheme `{scheme}` is not registered: only explicit indices or box-width, box-sqrt)",
                    e.reason
                ),
                ..e
            }),
        },
    }
}

fn named(prefix: &str, count: usize) -> impl Iterator<Item = String> + '_ {
    (0..count).map(move |i| format!("{prefix}_{i}"))
}

/// The 68-point iBUG scheme of 300W.
fn ibug68() -> Scheme {
    let mut names: Vec<String> = Vec::with_capacity(68);
    names.extend(named("jaw", 17));
    names.extend(named("brow_image_left", 5));
    names.extend(named("brow_image_right", 5));
    names.extend(named("nose_bridge", 4));
    names.extend(named("nostril", 5));
    names.extend(named("eye_image_left", 6));
    names.extend(named("eye_image_right", 6));
    names.extend(named("outer_lip", 12));
    names.extend(named("inner_lip", 8));
    let mut perm: Vec<usize> = (0..=16).rev().collect();
    perm.extend((17..=26).rev());
    perm.extend([27, 28, 29, 30, 35, 34, 33, 32, 31]);
    perm.extend([45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]);
    perm.extend([54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]);
    perm.extend([64, 63, 62, 61, 60, 67, 66, 65]);
    let left_eye: Vec<usize> = (36..=41).collect();
    let right_eye: Vec<usize> = (42..=47).collect();
    Scheme {
        name: "ibug68",
        point_names: names,
        flip_permutation: perm,
        normaliser: Normaliser::InterOcular { a: 36, b: 45 },
        alternative_normalisers: vec![(
            "inter-pupil",
            Normaliser::InterPupil {
                left: left_eye.clone(),
                right: right_eye.clone(),
            },
        )],
        left_eye,
        right_eye,
    }
}

/// The 19-point AFLW-Full scheme (the 21 AFLW points without the ears).
fn aflw19() -> Scheme {
    let names = [
        "brow_l_left",
        "brow_l_centre",
        "brow_l_right",
        "brow_r_left",
        "brow_r_centre",
        "brow_r_right",
        "eye_l_left",
        "eye_l_centre",
        "eye_l_right",
        "eye_r_left",
        "eye_r_centre",
        "eye_r_right",
        "nose_left",
        "nose_centre",
        "nose_right",
        "mouth_left",
        "mouth_centre",
        "mouth_right",
        "chin",
    ];
    Scheme {
        name: "aflw19",
        point_names: names.iter().map(|s| s.to_string()).collect(),
        flip_permutation: vec![
            5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18,
        ],
        left_eye: vec![6, 7, 8],
        right_eye: vec![9, 10, 11],
        normaliser: Normaliser::BoxWidth,
        alternative_normalisers: vec![("inter-ocular", Normaliser::InterOcular { a: 6, b: 11 })],
    }
}

/// The AFLW sqlite feature names, in `feature_id` order (1..=21).
pub const AFLW21_FEATURES: [&str; 21] = [
    "LeftBrowLeftCorner",
    "LeftBrowCenter",
    "LeftBrowRightCorner",
    "RightBrowLeftCorner",
    "RightBrowCenter",
    "RightBrowRightCorner",
    "LeftEyeLeftCorner",
    "LeftEyeCenter",
    "LeftEyeRightCorner",
    "RightEyeLeftCorner",
    "RightEyeCenter",
    "RightEyeRightCorner",
    "LeftEar",
    "NoseLeft",
    "NoseCenter",
    "NoseRight",
    "RightEar",
    "MouthLeftCorner",
    "MouthCenter",
    "MouthRightCorner",
    "ChinCenter",
];

/// The 0-based AFLW-21 indices of the two ears (feature ids 13 and 17), which AFLW-19 drops.
pub const AFLW21_EARS: [usize; 2] = [12, 16];

/// The flip permutation of a scheme whose point names say the side: a point's mirror image
/// is the point whose name has `left` and `right` exchanged (mid-line names contain neither).
fn permutation_from_names(names: &[String], left: &str, right: &str) -> Vec<usize> {
    names
        .iter()
        .map(|n| {
            // A placeholder keeps the two replacements from undoing each other.
            let mirrored = n
                .replace(left, "\u{0}")
                .replace(right, left)
                .replace('\u{0}', right);
            names
                .iter()
                .position(|m| *m == mirrored)
                .expect("built-in scheme names are closed under left/right exchange")
        })
        .collect()
}

/// The 21-point scheme of `aflw.sqlite` (feature ids 1..=21 in order).
///
/// The flip permutation comes from the names alone: mirroring turns every `Left` into `Right`
/// and back, on the feature (LeftBrow ↔ RightBrow) and on the corner (LeftCorner ↔
/// RightCorner), so `LeftBrowLeftCorner` ↔ `RightBrowRightCorner` and `NoseLeft` ↔ `NoseRight`.
fn aflw21() -> Scheme {
    let names: Vec<String> = AFLW21_FEATURES.iter().map(|s| s.to_string()).collect();
    let flip_permutation = permutation_from_names(&names, "Left", "Right");
    Scheme {
        name: "aflw21",
        point_names: names,
        flip_permutation,
        left_eye: vec![6, 7, 8],
        right_eye: vec![9, 10, 11],
        normaliser: Normaliser::BoxWidth,
        alternative_normalisers: vec![("inter-ocular", Normaliser::InterOcular { a: 6, b: 11 })],
    }
}

/// Record that `a[k]` and `b[k]` are each other's mirror image, for every k.
fn pair_up(perm: &mut [usize], a: &[usize], b: &[usize]) {
    for (&i, &j) in a.iter().zip(b) {
        perm[i] = j;
        perm[j] = i;
    }
}

/// Record that a run listed from the image's left to its right mirrors onto itself reversed.
fn pair_reversed(perm: &mut [usize], run: std::ops::RangeInclusive<usize>) {
    let fwd: Vec<usize> = run.collect();
    let rev: Vec<usize> = fwd.iter().rev().copied().collect();
    pair_up(perm, &fwd, &rev);
}

/// The 98-point WFLW scheme.
///
/// Layout (image left/right in a frontal face): 0–32 contour from the left ear round the chin
/// to the right ear; 33–37 upper edge of the left brow from its outer end inwards, 38–41 its
/// lower edge from the inner end back outwards; 42–46 upper edge of the right brow from its
/// inner end outwards, 47–50 its lower edge from the outer end back inwards; 51–54 nose bridge
/// top to tip; 55–59 nostril base left to right; 60–67 left eye: 60 outer corner, 61–63 upper
/// lid, 64 inner corner, 65–67 lower lid back towards 60; 68–75 right eye: 68 inner corner,
/// 69–71 upper lid, 72 outer corner, 73–75 lower lid back towards 68; 76–87 outer lip: 76 left
/// corner, 77–81 upper edge, 82 right corner, 83–87 lower edge back; 88–95 inner lip: 88 left
/// corner, 89–91 upper, 92 right corner, 93–95 lower back; 96 left pupil, 97 right pupil.
///
/// Mirroring maps a point to the point at the same place on the other side, so each pair
/// below is two runs walked "outer to inner" (or left to right against right to left).
fn wflw98() -> Scheme {
    let mut perm: Vec<usize> = (0..98).collect();
    pair_reversed(&mut perm, 0..=32);
    // Brows, walked outer end → inner end: upper edge, then lower edge.
    pair_up(&mut perm, &[33, 34, 35, 36, 37], &[46, 45, 44, 43, 42]);
    pair_up(&mut perm, &[41, 40, 39, 38], &[47, 48, 49, 50]);
    // Nose bridge 51–54 is on the mid line; the nostril base is listed left to right.
    pair_reversed(&mut perm, 55..=59);
    // Eyes, walked outer corner → inner corner: upper lid, then lower lid.
    pair_up(&mut perm, &[60, 61, 62, 63, 64], &[72, 71, 70, 69, 68]);
    pair_up(&mut perm, &[67, 66, 65], &[73, 74, 75]);
    // Lips, walked left corner → right corner along the upper edge, then back along the lower.
    pair_reversed(&mut perm, 76..=82);
    pair_up(&mut perm, &[83, 84], &[87, 86]);
    pair_reversed(&mut perm, 88..=92);
    pair_up(&mut perm, &[93], &[95]);
    pair_up(&mut perm, &[96], &[97]);

    let mut names: Vec<String> = Vec::with_capacity(98);
    names.extend(named("contour", 33));
    names.extend(named("brow_image_left", 9));
    names.extend(named("brow_image_right", 9));
    names.extend(named("nose_bridge", 4));
    names.extend(named("nostril", 5));
    names.extend(named("eye_image_left", 8));
    names.extend(named("eye_image_right", 8));
    names.extend(named("outer_lip", 12));
    names.extend(named("inner_lip", 8));
    names.push("pupil_image_left".into());
    names.push("pupil_image_right".into());
    Scheme {
        name: "wflw98",
        point_names: names,
        flip_permutation: perm,
        left_eye: (60..=67).collect(),
        right_eye: (68..=75).collect(),
        normaliser: Normaliser::InterOcular { a: 60, b: 72 },
        alternative_normalisers: vec![(
            "inter-pupil",
            Normaliser::InterPupil {
                left: vec![96],
                right: vec![97],
            },
        )],
    }
}

/// The 29-point COFW scheme (the LFPW 29-point definition COFW inherits).
///
/// Point layout, 0-based, "left" = the image's left in a frontal face: 0/1 left/right brow
/// outer end, 2/3 left/right brow inner end, 4/5 left brow upper/lower middle, 6/7 right brow
/// upper/lower middle, 8/9 left/right eye outer corner, 10/11 left/right eye inner corner,
/// 12/13 left eye upper/lower lid, 14/15 right eye upper/lower lid, 16/17 left/right pupil,
/// 18/19 left/right nostril, 20 nose tip, 21 nose base (subnasale), 22/23 left/right mouth
/// corner, 24/25 upper lip top/bottom, 26/27 lower lip top/bottom, 28 chin.
///
/// Mirroring swaps each left point with the right point of the same name and keeps the six
/// mid-line points (20, 21, 24–28); the inter-ocular normaliser is the outer corners 8–9.
fn cofw29() -> Scheme {
    let names = [
        "brow_left_outer",
        "brow_right_outer",
        "brow_left_inner",
        "brow_right_inner",
        "brow_left_upper_mid",
        "brow_left_lower_mid",
        "brow_right_upper_mid",
        "brow_right_lower_mid",
        "eye_left_outer",
        "eye_right_outer",
        "eye_left_inner",
        "eye_right_inner",
        "eye_left_upper_lid",
        "eye_left_lower_lid",
        "eye_right_upper_lid",
        "eye_right_lower_lid",
        "pupil_left",
        "pupil_right",
        "nostril_left",
        "nostril_right",
        "nose_tip",
        "nose_base",
        "mouth_left",
        "mouth_right",
        "upper_lip_top",
        "upper_lip_bottom",
        "lower_lip_top",
        "lower_lip_bottom",
        "chin",
    ];
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    // The names carry the geometry, so the permutation is read off them.
    let flip_permutation = permutation_from_names(&names, "left", "right");
    Scheme {
        name: "cofw29",
        point_names: names,
        flip_permutation,
        left_eye: vec![8, 10, 12, 13, 16],
        right_eye: vec![9, 11, 14, 15, 17],
        normaliser: Normaliser::InterOcular { a: 8, b: 9 },
        alternative_normalisers: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flip_permutation_is_an_involution_and_a_permutation() {
        for s in all() {
            assert_eq!(s.flip_permutation.len(), s.num_points(), "{}", s.name);
            let mut seen = vec![false; s.num_points()];
            for (i, &p) in s.flip_permutation.iter().enumerate() {
                assert!(!seen[p], "{}: {p} twice", s.name);
                seen[p] = true;
                assert_eq!(
                    s.flip_permutation[p], i,
                    "{}: not an involution at {i}",
                    s.name
                );
            }
        }
    }

    #[test]
    fn flip_swaps_the_eyes() {
        for s in all() {
            let mapped: Vec<usize> = s.left_eye.iter().map(|&i| s.flip_permutation[i]).collect();
            let mut mapped_sorted = mapped;
            mapped_sorted.sort();
            let mut right = s.right_eye.clone();
            right.sort();
            assert_eq!(mapped_sorted, right, "{}", s.name);
        }
    }

    #[test]
    fn normalisers_resolve_by_name_and_by_indices() {
        let ibug = by_name("ibug68").unwrap();
        assert_eq!(
            ibug.resolve_normaliser(None).unwrap(),
            Normaliser::InterOcular { a: 36, b: 45 }
        );
        let ip = ibug.resolve_normaliser(Some("inter-pupil")).unwrap();
        assert_eq!(ip.to_string(), "inter-pupil:36-41,42-47");
        let aflw = by_name("aflw19").unwrap();
        assert_eq!(aflw.resolve_normaliser(None).unwrap(), Normaliser::BoxWidth);
        assert_eq!(
            aflw.resolve_normaliser(Some("inter-ocular")).unwrap(),
            Normaliser::InterOcular { a: 6, b: 11 }
        );
        let err = aflw.resolve_normaliser(Some("inter-pupil")).unwrap_err();
        assert!(
            err.to_string()
                .contains("aflw19 allows box-width, inter-ocular, box-sqrt"),
            "{err}"
        );
        assert!(ibug.resolve_normaliser(Some("median")).is_err());
        assert!(ibug.resolve_normaliser(Some("inter-ocular:3,68")).is_err());
        assert_eq!(
            ibug.resolve_normaliser(Some("inter-ocular:3,67")).unwrap(),
            Normaliser::InterOcular { a: 3, b: 67 }
        );
    }

    #[test]
    fn every_listed_name_resolves_and_nothing_else_does() {
        let names = ["inter-ocular", "inter-pupil", "box-width", "box-sqrt"];
        for s in all() {
            let allowed = s.normaliser_names();
            for name in names {
                assert_eq!(
                    s.resolve_normaliser(Some(name)).is_ok(),
                    allowed.contains(&name),
                    "{} {name}",
                    s.name
                );
            }
            let default = s.resolve_normaliser(None).unwrap();
            assert_eq!(s.resolve_normaliser(Some(allowed[0])).unwrap(), default);
        }
    }

    #[test]
    fn unknown_scheme_lists_the_known_ones() {
        let err = by_name("nope").unwrap_err().to_string();
        assert!(err.contains("ibug68") && err.contains("aflw19"), "{err}");
    }

    #[test]
    fn aflw21_mirrors_corners_across_features() {
        let s = by_name("aflw21").unwrap();
        let idx = |n: &str| s.point_names.iter().position(|m| m == n).unwrap();
        assert_eq!(
            s.flip_permutation[idx("LeftBrowLeftCorner")],
            idx("RightBrowRightCorner")
        );
        assert_eq!(
            s.flip_permutation[idx("LeftEyeRightCorner")],
            idx("RightEyeLeftCorner")
        );
        assert_eq!(s.flip_permutation[idx("LeftEar")], idx("RightEar"));
        assert_eq!(s.flip_permutation[idx("NoseLeft")], idx("NoseRight"));
        assert_eq!(s.flip_permutation[idx("ChinCenter")], idx("ChinCenter"));
    }

    #[test]
    fn aflw21_without_ears_flips_like_aflw19() {
        let s21 = by_name("aflw21").unwrap();
        let s19 = by_name("aflw19").unwrap();
        let kept: Vec<usize> = (0..21).filter(|i| !AFLW21_EARS.contains(i)).collect();
        let derived: Vec<usize> = kept
            .iter()
            .map(|&i| {
                kept.iter()
                    .position(|&k| k == s21.flip_permutation[i])
                    .unwrap()
            })
            .collect();
        assert_eq!(derived, s19.flip_permutation);
    }

    #[test]
    fn new_schemes_have_their_point_counts_and_normalisers() {
        assert_eq!(by_name("aflw21").unwrap().num_points(), 21);
        let wflw = by_name("wflw98").unwrap();
        assert_eq!(wflw.num_points(), 98);
        assert_eq!(wflw.normaliser, Normaliser::InterOcular { a: 60, b: 72 });
        // Outer eye corners, brow ends and mouth corners swap; the mid line stays.
        for (a, b) in [
            (60, 72),
            (64, 68),
            (33, 46),
            (76, 82),
            (96, 97),
            (0, 32),
            (55, 59),
        ] {
            assert_eq!(wflw.flip_permutation[a], b, "wflw98 {a}");
        }
        for m in [16, 51, 52, 53, 54, 57, 79, 85, 90, 94] {
            assert_eq!(wflw.flip_permutation[m], m, "wflw98 {m}");
        }
        let cofw = by_name("cofw29").unwrap();
        assert_eq!(cofw.num_points(), 29);
        assert_eq!(cofw.normaliser, Normaliser::InterOcular { a: 8, b: 9 });
        let fixed: Vec<usize> = (0..29).filter(|&i| cofw.flip_permutation[i] == i).collect();
        assert_eq!(fixed, vec![20, 21, 24, 25, 26, 27, 28]);
    }
}
