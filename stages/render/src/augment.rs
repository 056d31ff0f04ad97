//! Augmentation parameters: what one output sample's perturbation is, drawn only from its plan
//! row's seed (never global state, never thread order).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::InvalidParam;

/// Ranges of the random augmentation applied to every training crop (see [`perturbed`]), and of
/// the stage-2 normalisation noise applied to every crop. Every range is inclusive; a
/// probability of 0 switches a transform off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Largest absolute in-plane rotation of the stage-1 crop, degrees (uniform in ±value).
    pub rotation_max_deg: f64,
    /// Probability that a perturbed crop is rotated at all (HRNet: 0.6).
    #[serde(skip_serializing_if = "is_one")]
    pub rotation_probability: f64,
    /// Keep replica 0 of augmentation epoch 0 unperturbed (stage-2 noise only), as wingflow
    /// did before augmentation epochs: one untouched crop of each training face.
    #[serde(skip_serializing_if = "is_true")]
    pub keep_original: bool,
    /// Largest absolute shift of the stage-1 box centre along each axis, as a fraction of the
    /// box side (uniform in ±value).
    pub translation_max: f64,
    /// Range of the stage-1 box side multiplier: > 1 shows more context (a smaller face).
    pub scale_range: (f64, f64),
    /// Probability of a horizontal flip (with the scheme's point permutation); applies to both
    /// crops of the sample.
    pub flip_probability: f64,
    /// Range of the brightness factor (pixel values are multiplied by it).
    pub brightness_range: (f64, f64),
    /// Range of the contrast factor (distance from the crop's mean grey level is multiplied).
    pub contrast_range: (f64, f64),
    /// Range of the saturation factor (distance from each pixel's grey level is multiplied).
    pub saturation_range: (f64, f64),
    /// Probability of converting the crop to grey (after the colour factors).
    pub grey_probability: f64,
    /// Probability of a Gaussian blur.
    pub blur_probability: f64,
    /// Range of the blur's sigma, in pixels of the 64×64 crop (scaled with the crop size so both
    /// crops of a sample are blurred alike).
    pub blur_sigma_range: (f64, f64),
    /// Probability that the sample gets occlusion patches at all.
    pub occlusion_probability: f64,
    /// Largest number of occlusion patches (at least one when occluded).
    pub occlusion_max_count: u32,
    /// Range of a patch's side, as a fraction of the crop side.
    pub occlusion_size_range: (f64, f64),
    /// Probability of a JPEG re-compression of the crop.
    pub jpeg_probability: f64,
    /// Range of the JPEG quality (1–100).
    pub jpeg_quality_range: (u8, u8),
    /// Largest absolute shift of the stage-2 box centre along each axis, as a fraction of the
    /// box side: stands for the stage-1 localisation error (every replica, 0 included).
    pub stage2_translation_max: f64,
    /// Range of the stage-2 box side multiplier (stage-1 scale error).
    pub stage2_scale_range: (f64, f64),
    /// Largest absolute residual rotation of the stage-2 crop, degrees (stage-1 roll error).
    pub stage2_rotation_max_deg: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        // Rotation ±30° and a ±10 % box perturbation follow the Wing paper's augmentation; the
        // photometric ranges are moderate defaults that keep faces recognisable.
        AugmentConfig {
            rotation_max_deg: 30.0,
            rotation_probability: 0.6,
            keep_original: false,
            translation_max: 0.1,
            scale_range: (0.9, 1.1),
            flip_probability: 0.5,
            brightness_range: (0.75, 1.25),
            contrast_range: (0.75, 1.25),
            saturation_range: (0.7, 1.3),
            grey_probability: 0.1,
            blur_probability: 0.2,
            blur_sigma_range: (0.3, 1.2),
            occlusion_probability: 0.3,
            occlusion_max_count: 2,
            occlusion_size_range: (0.1, 0.3),
            jpeg_probability: 0.3,
            jpeg_quality_range: (40, 95),
            stage2_translation_max: 0.05,
            stage2_scale_range: (0.95, 1.05),
            stage2_rotation_max_deg: 5.0,
        }
    }
}

impl AugmentConfig {
    /// Check that every range is ordered and every probability lies in [0, 1].
    pub fn validate(&self) -> Result<(), InvalidParam> {
        let probabilities = [
            ("rotation_probability", self.rotation_probability),
            ("flip_probability", self.flip_probability),
            ("grey_probability", self.grey_probability),
            ("blur_probability", self.blur_probability),
            ("occlusion_probability", self.occlusion_probability),
            ("jpeg_probability", self.jpeg_probability),
        ];
        for (name, p) in probabilities {
            if !(0.0..=1.0).contains(&p) {
                return Err(InvalidParam::new(
                    name,
                    format!("{p} is not a probability in [0, 1]"),
                ));
            }
        }
        let ranges = [
            ("scale_range", self.scale_range),
            ("brightness_range", self.brightness_range),
            ("contrast_range", self.contrast_range),
            ("saturation_range", self.saturation_range),
            ("blur_sigma_range", self.blur_sigma_range),
            ("occlusion_size_range", self.occlusion_size_range),
            ("stage2_scale_range", self.stage2_scale_range),
        ];
        for (name, (lo, hi)) in ranges {
            if !(lo.is_finite() && hi.is_finite() && lo <= hi && lo >= 0.0) {
                return Err(InvalidParam::new(
                    name,
                    format!("({lo}, {hi}) must be finite, ≥ 0 and ordered"),
                ));
            }
        }
        let maxima = [
            ("rotation_max_deg", self.rotation_max_deg),
            ("translation_max", self.translation_max),
            ("stage2_translation_max", self.stage2_translation_max),
            ("stage2_rotation_max_deg", self.stage2_rotation_max_deg),
        ];
        for (name, m) in maxima {
            if !(m.is_finite() && m >= 0.0) {
                return Err(InvalidParam::new(
                    name,
                    format!("{m} must be finite and ≥ 0"),
                ));
            }
        }
        for (name, (lo, _)) in [
            ("scale_range", self.scale_range),
            ("stage2_scale_range", self.stage2_scale_range),
        ] {
            if lo <= 0.0 {
                return Err(InvalidParam::new(name, "a scale must be > 0"));
            }
        }
        let (q0, q1) = self.jpeg_quality_range;
        if !(1 <= q0 && q0 <= q1 && q1 <= 100) {
            return Err(InvalidParam::new(
                "jpeg_quality_range",
                format!("({q0}, {q1}) must be ordered in 1..=100"),
            ));
        }
        Ok(())
    }
}

/// An occlusion patch in crop-relative coordinates (fractions of the crop side), so that both
/// crop sizes of a sample hide the same part of the output frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Occlusion {
    /// Left edge / crop side.
    pub x: f32,
    /// Top edge / crop side.
    pub y: f32,
    /// Width / crop side.
    pub w: f32,
    /// Height / crop side.
    pub h: f32,
    /// Fill colour (RGB).
    pub rgb: [u8; 3],
}

/// The perturbation of one output sample: geometry of the stage-1 crop, stage-2 noise, flip and
/// photometric parameters. [`Augmentation::identity`] is the unperturbed crop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Stage-1 rotation, degrees (counter-clockwise in the image as displayed).
    pub rotation_deg: f64,
    /// Stage-1 box centre shift along x, fraction of the box side.
    pub translate_x: f64,
    /// Stage-1 box centre shift along y, fraction of the box side.
    pub translate_y: f64,
    /// Stage-1 box side multiplier.
    pub scale: f64,
    /// Horizontal flip of both crops.
    pub flip: bool,
    /// Brightness factor.
    pub brightness: f64,
    /// Contrast factor.
    pub contrast: f64,
    /// Saturation factor.
    pub saturation: f64,
    /// Convert to grey.
    pub grey: bool,
    /// Gaussian blur sigma in 64×64-crop pixels; 0 = no blur.
    pub blur_sigma: f64,
    /// Occlusion patches.
    pub occlusions: Vec<Occlusion>,
    /// JPEG re-compression quality, if any.
    pub jpeg_quality: Option<u8>,
    /// Stage-2 box centre shift along x, fraction of the box side.
    pub stage2_translate_x: f64,
    /// Stage-2 box centre shift along y, fraction of the box side.
    pub stage2_translate_y: f64,
    /// Stage-2 box side multiplier.
    pub stage2_scale: f64,
    /// Stage-2 residual rotation, degrees.
    pub stage2_rotation_deg: f64,
}

impl Augmentation {
    /// No perturbation at all (also no stage-2 noise).
    pub fn identity() -> Self {
        Augmentation {
            rotation_deg: 0.0,
            translate_x: 0.0,
            translate_y: 0.0,
            scale: 1.0,
            flip: false,
            brightness: 1.0,
            contrast: 1.0,
            saturation: 1.0,
            grey: false,
            blur_sigma: 0.0,
            occlusions: Vec::new(),
            jpeg_quality: None,
            stage2_translate_x: 0.0,
            stage2_translate_y: 0.0,
            stage2_scale: 1.0,
            stage2_rotation_deg: 0.0,
        }
    }

    /// Whether any photometric operation is active.
    pub fn has_photometric(&self) -> bool {
        self.brightness != 1.0
            || self.contrast != 1.0
            || self.saturation != 1.0
            || self.grey
            || self.blur_sigma > 0.0
            || !self.occlusions.is_empty()
            || self.jpeg_quality.is_some()
    }

    /// Draw the augmentation of one crop from its `seed` alone (the plan row's seed for
    /// augmentation epoch 0, [`epoch_seed`] for the others). An unperturbed crop (`perturb`
    /// false, see [`perturbed`]) gets only the stage-2 noise (it stands for stage-1 error at
    /// inference).
    ///
    /// Every value is drawn in a fixed order whatever the probabilities, so switching one
    /// transform off does not change the values of the others; values added later (the
    /// rotation's probability) are drawn after the older ones, so settings that switch them off
    /// reproduce the older crops byte for byte.
    pub fn draw(seed: u64, perturb: bool, config: &AugmentConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let symmetric = |rng: &mut ChaCha8Rng, max: f64| max * (2.0 * rng.r#gen::<f64>() - 1.0);
        let within =
            |rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)| lo + (hi - lo) * rng.r#gen::<f64>();
        let happens = |rng: &mut ChaCha8Rng, p: f64| rng.r#gen::<f64>() < p;

        let rotation_deg = symmetric(&mut rng, config.rotation_max_deg);
        let translate_x = symmetric(&mut rng, config.translation_max);
        let translate_y = symmetric(&mut rng, config.translation_max);
        let scale = within(&mut rng, config.scale_range);
        let flip = happens(&mut rng, config.flip_probability);
        let brightness = within(&mut rng, config.brightness_range);
        let contrast = within(&mut rng, config.contrast_range);
        let saturation = within(&mut rng, config.saturation_range);
        let grey = happens(&mut rng, config.grey_probability);
        let blurred = happens(&mut rng, config.blur_probability);
        let sigma = within(&mut rng, config.blur_sigma_range);
        let occluded = happens(&mut rng, config.occlusion_probability);
        let count = rng.gen_range(1..=config.occlusion_max_count.max(1));
        let mut occlusions = Vec::new();
        for _ in 0..config.occlusion_max_count.max(1) {
            let w = within(&mut rng, config.occlusion_size_range) as f32;
            let h = within(&mut rng, config.occlusion_size_range) as f32;
            let x = rng.r#gen::<f32>() * (1.0 - w).max(0.0);
            let y = rng.r#gen::<f32>() * (1.0 - h).max(0.0);
            let rgb = [rng.r#gen::<u8>(), rng.r#gen::<u8>(), rng.r#gen::<u8>()];
            occlusions.push(Occlusion { x, y, w, h, rgb });
        }
        occlusions.truncate(if occluded && config.occlusion_max_count > 0 {
            count as usize
        } else {
            0
        });
        let compressed = happens(&mut rng, config.jpeg_probability);
        let quality = rng.gen_range(config.jpeg_quality_range.0..=config.jpeg_quality_range.1);
        let stage2_translate_x = symmetric(&mut rng, config.stage2_translation_max);
        let stage2_translate_y = symmetric(&mut rng, config.stage2_translation_max);
        let stage2_scale = within(&mut rng, config.stage2_scale_range);
        let stage2_rotation_deg = symmetric(&mut rng, config.stage2_rotation_max_deg);
        let rotated = happens(&mut rng, config.rotation_probability);

        let noise = Augmentation {
            stage2_translate_x,
            stage2_translate_y,
            stage2_scale,
            stage2_rotation_deg,
            ..Augmentation::identity()
        };
        if !perturb {
            return noise;
        }
        Augmentation {
            rotation_deg: if rotated { rotation_deg } else { 0.0 },
            translate_x,
            translate_y,
            scale,
            flip,
            brightness,
            contrast,
            saturation,
            grey,
            blur_sigma: if blurred { sigma } else { 0.0 },
            occlusions,
            jpeg_quality: compressed.then_some(quality),
            ..noise
        }
    }
}

fn is_one(p: &f64) -> bool {
    *p == 1.0
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Whether a crop is perturbed: every training crop is, in every augmentation epoch, except
/// replica 0 of epoch 0 when `keep_original` is set; validation and test crops (replica 0 of
/// other splits) never are (they get the stage-2 noise only). Duplicates (replica ≥ 1) always
/// are.
pub fn perturbed(is_train: bool, replica: u32, epoch: u32, keep_original: bool) -> bool {
    replica > 0 || (is_train && !(keep_original && epoch == 0))
}

/// The seed of a plan row's crop in augmentation epoch `epoch`: the row's own seed for epoch 0
/// (so epoch 0 is what wingflow rendered before epochs), a blake3-derived one for the others.
pub fn epoch_seed(row_seed: u64, epoch: u32) -> u64 {
    if epoch == 0 {
        return row_seed;
    }
    let mut h = blake3::Hasher::new();
    h.update(b"wingflow augmentation epoch");
    h.update(&row_seed.to_le_bytes());
    h.update(&epoch.to_le_bytes());
    let bytes = h.finalize();
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draw_and_replica_zero_is_unperturbed() {
        let config = AugmentConfig::default();
        assert_eq!(
            Augmentation::draw(7, true, &config),
            Augmentation::draw(7, true, &config)
        );
        assert_ne!(
            Augmentation::draw(7, true, &config),
            Augmentation::draw(8, true, &config)
        );
        let zero = Augmentation::draw(7, false, &config);
        assert!(!zero.has_photometric() && !zero.flip);
        assert_eq!(
            (zero.rotation_deg, zero.translate_x, zero.scale),
            (0.0, 0.0, 1.0)
        );
        // Stage-2 noise is present on replica 0.
        assert_ne!(zero.stage2_scale, 1.0);
        assert_eq!(
            zero.stage2_scale,
            Augmentation::draw(7, true, &config).stage2_scale
        );
    }

    #[test]
    fn stage2_noise_settings_leave_the_stage1_draws_alone() {
        // The stage-2 noise is drawn last, so changing its ranges keeps every stage-1 crop (and
        // so the stage-1 shards) byte for byte.
        let wide = AugmentConfig {
            stage2_translation_max: 0.06,
            stage2_scale_range: (0.92, 1.08),
            stage2_rotation_max_deg: 12.0,
            ..AugmentConfig::default()
        };
        let without_noise = |a: Augmentation| Augmentation {
            stage2_translate_x: 0.0,
            stage2_translate_y: 0.0,
            stage2_scale: 1.0,
            stage2_rotation_deg: 0.0,
            ..a
        };
        for seed in 0..200 {
            for replica in 0..3 {
                let a = Augmentation::draw(seed, replica > 0, &AugmentConfig::default());
                let b = Augmentation::draw(seed, replica > 0, &wide);
                assert_ne!(a.stage2_rotation_deg, b.stage2_rotation_deg);
                assert_eq!(without_noise(a), without_noise(b), "seed {seed}");
            }
        }
    }

    #[test]
    fn draws_stay_in_their_ranges() {
        let config = AugmentConfig::default();
        assert!(config.validate().is_ok());
        let mut flips = 0;
        for seed in 0..500 {
            let a = Augmentation::draw(seed, true, &config);
            assert!(a.rotation_deg.abs() <= config.rotation_max_deg);
            assert!(a.translate_x.abs() <= config.translation_max);
            assert!((config.scale_range.0..=config.scale_range.1).contains(&a.scale));
            assert!(a.occlusions.len() <= config.occlusion_max_count as usize);
            for o in &a.occlusions {
                assert!(o.x >= 0.0 && o.x + o.w <= 1.0 + 1e-6);
            }
            if let Some(q) = a.jpeg_quality {
                assert!((40..=95).contains(&q));
            }
            flips += a.flip as u32;
        }
        assert!(
            (200..300).contains(&flips),
            "flip rate far from 0.5: {flips}/500"
        );
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let bad = AugmentConfig {
            flip_probability: 1.5,
            ..AugmentConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "flip_probability");
        let bad = AugmentConfig {
            jpeg_quality_range: (90, 10),
            ..AugmentConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn the_static_setting_draws_what_wingflow_drew_before_epochs() {
        // rotation_probability = 1 rotates every perturbed crop by the value drawn first: the
        // older draws are untouched by the newer one, drawn last.
        let config = AugmentConfig {
            rotation_probability: 1.0,
            keep_original: true,
            ..AugmentConfig::default()
        };
        let json = serde_json::to_value(&config).unwrap();
        assert!(json.get("rotation_probability").is_none() && json.get("keep_original").is_none());
        let some = AugmentConfig {
            rotation_probability: 0.0,
            ..config.clone()
        };
        for seed in 0..50 {
            let all = Augmentation::draw(seed, true, &config);
            let none = Augmentation::draw(seed, true, &some);
            assert_eq!(none.rotation_deg, 0.0);
            assert_eq!(
                Augmentation {
                    rotation_deg: 0.0,
                    ..all
                },
                none
            );
        }
    }

    #[test]
    fn which_crops_are_perturbed_and_with_which_seed() {
        // Every training crop of every epoch, unless it is the kept original.
        assert!(perturbed(true, 0, 0, false));
        assert!(!perturbed(true, 0, 0, true));
        assert!(perturbed(true, 0, 1, true));
        assert!(perturbed(true, 2, 0, true));
        // Validation and test crops never.
        assert!(!perturbed(false, 0, 0, false));
        assert!(!perturbed(false, 0, 3, false));
        assert_eq!(epoch_seed(42, 0), 42);
        assert_ne!(epoch_seed(42, 1), epoch_seed(42, 2));
        assert_ne!(epoch_seed(42, 1), epoch_seed(43, 1));
        // Two epochs of one row draw different augmentations.
        let config = AugmentConfig::default();
        assert_ne!(
            Augmentation::draw(epoch_seed(42, 1), true, &config),
            Augmentation::draw(epoch_seed(42, 2), true, &config)
        );
    }
}
