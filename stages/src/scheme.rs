//! Landmark schemes: the registry every stage asks for point counts, names, the horizontal
//! flip permutation, eye indices (for roll normalisation) and the NME normaliser.
//!
//! Indices are 0-based. The flip permutation is applied after mirroring x:
//! `new[i] = old[perm[i]]`.

use std::sync::LazyLock;

/// What an NME is divided by for a scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normaliser {
    /// Distance between two points (e.g. the outer eye corners).
    InterOcular { a: usize, b: usize },
    /// Distance between the centroids of two point groups (e.g. the pupils as eye means).
    InterPupil { left: Vec<usize>, right: Vec<usize> },
    /// The face box width (Wing paper, AFLW) — the box is per face, not per scheme.
    BoxWidth,
}

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

    /// Permute a per-point attribute (e.g. visibility) the way [`Scheme::flip_shape`] does.
    pub fn flip_points<T: Copy>(&self, values: &[T]) -> Vec<T> {
        self.flip_permutation.iter().map(|&src| values[src]).collect()
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

static REGISTRY: LazyLock<Vec<Scheme>> = LazyLock::new(|| vec![ibug68(), aflw19()]);

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
            known: REGISTRY.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
        })
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
            Normaliser::InterPupil { left: left_eye.clone(), right: right_eye.clone() },
        )],
        left_eye,
        right_eye,
    }
}

/// The 19-point AFLW-Full scheme (the 21 AFLW points without the ears).
fn aflw19() -> Scheme {
    let names = [
        "brow_l_left", "brow_l_centre", "brow_l_right", "brow_r_left", "brow_r_centre",
        "brow_r_right", "eye_l_left", "eye_l_centre", "eye_l_right", "eye_r_left",
        "eye_r_centre", "eye_r_right", "nose_left", "nose_centre", "nose_right", "mouth_left",
        "mouth_centre", "mouth_right", "chin",
    ];
    Scheme {
        name: "aflw19",
        point_names: names.iter().map(|s| s.to_string()).collect(),
        flip_permutation: vec![5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18],
        left_eye: vec![6, 7, 8],
        right_eye: vec![9, 10, 11],
        normaliser: Normaliser::BoxWidth,
        alternative_normalisers: vec![("inter-ocular", Normaliser::InterOcular { a: 6, b: 11 })],
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
                assert_eq!(s.flip_permutation[p], i, "{}: not an involution at {i}", s.name);
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
    fn unknown_scheme_lists_the_known_ones() {
        let err = by_name("nope").unwrap_err().to_string();
        assert!(err.contains("ibug68") && err.contains("aflw19"), "{err}");
    }
}
