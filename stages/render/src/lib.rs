//! The render stage: augmented crops of every plan row, written as safetensors shard sets
//! (DESIGN.md "Augmentation and rendering", "Shards").
//!
//! - [`augment`]: per-row augmentation parameters, drawn from the row's seed only.
//! - [`geometry`]: the one affine matrix per crop (box, rotation, scale, shift, flip).
//! - [`decode`]: full decodes, and reduced-resolution JPEG region decodes into coarser levels.
//! - [`warp`]: inverse warp with bilinear sampling from an area-averaged pyramid.
//! - [`photometric`]: colour, blur, occlusion, JPEG on the small crop.
//! - [`recompress`]: the JPEG re-compression (a writer with the `image` crate's bytes, faster).
//! - [`shard`]: the on-disk format (shards, sidecars, `index.json`, `samples.parquet`), `gc`.
//! - [`shard_file`]: one shard file written in blocks as its bytes arrive, hashed on the way.
//! - `simd`: run-time choice of the AVX2 builds of the pixel loops (same bytes either way).
//! - [`engine`]: [`render_shards`], decoding each source image once.
//! - [`inspect`]: shard-set checks and contact sheets.
//!
//! Invariant: a rendered sample is a pure function of (source image, face record, plan row,
//! render params); thread count, worker split and completion order never change output bytes.

pub mod augment;
pub mod decode;
pub mod engine;
pub mod geometry;
pub mod inspect;
pub mod photometric;
pub mod recompress;
pub mod shard;
pub mod shard_file;
mod simd;
pub mod warp;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use augment::{AugmentConfig, Augmentation, Occlusion};
pub use decode::SourceFile;
pub use engine::{
    EpochReport, RenderInputs, RenderProgress, RenderReport, WorkerSplit, crop_matrix, render_crop,
    render_image_crops, render_sample, render_shards,
};
pub use geometry::{Affine, BoxRule};
pub use inspect::{InspectReport, ShardCheck, ShardStatus, contact_sheet, inspect};
pub use shard::{CropLevel, ShardIndex, gc, index_all, index_shard_set};
pub use warp::Border;

/// A render parameter out of its range: the key (relative to `[render]`, e.g.
/// `augment.flip_probability`) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct InvalidParam {
    /// The key, relative to `[render]`.
    pub key: String,
    /// What is wrong with its value.
    pub reason: String,
}

impl InvalidParam {
    /// A problem with `key`.
    pub fn new(key: &str, reason: impl Into<String>) -> Self {
        InvalidParam {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Errors of the render stage. Each carries the file, sample or shard it concerns.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// An atomic write (temporary file, fsync, rename) failed; the message names the file.
    #[error(transparent)]
    Write(#[from] manifests::Error),
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A source image could not be decoded, or a crop could not be (re-)encoded.
    #[error("{path}: {source}")]
    Image {
        /// The image file (or the sample id for an in-memory re-encode).
        path: PathBuf,
        /// The cause.
        source: image::ImageError,
    },
    /// A JSON file could not be written or parsed.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// `samples.parquet` could not be written.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: polars::prelude::PolarsError,
    },
    /// A shard file could not be read as safetensors.
    #[error("{path}: not a valid safetensors shard: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A plan row names a face that is not among the faces given.
    #[error("plan row {row}: sample `{sample_id}` is not in faces.parquet")]
    UnknownSample {
        /// Row of the plan.
        row: usize,
        /// Its sample id.
        sample_id: String,
    },
    /// Two plan rows have the same (sample id, replica).
    #[error("plan rows {first} and {second}: duplicate (sample `{sample_id}`, replica {replica})")]
    DuplicateRow {
        /// Earlier row.
        first: usize,
        /// Later row.
        second: usize,
        /// Sample id.
        sample_id: String,
        /// Replica.
        replica: u32,
    },
    /// A face does not fit the scheme being rendered.
    #[error("sample `{sample_id}`: {reason}")]
    BadFace {
        /// Sample id.
        sample_id: String,
        /// What is wrong (scheme name, point count, degenerate box, image size).
        reason: String,
    },
    /// A source image's header declares more pixels than `[render] max_image_pixels` allows
    /// (refused before any pixel is decoded).
    #[error(
        "{}: the image header declares {width}×{height} = {} pixels, more than \
         [render] max_image_pixels = {limit}",
        path.display(),
        u64::from(*width) * u64::from(*height)
    )]
    ImageTooLarge {
        /// The image file.
        path: PathBuf,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The bound.
        limit: u64,
    },
    /// Render parameters are invalid.
    #[error("invalid render parameters: {0}")]
    Config(String),
    /// A shard set cannot be indexed.
    #[error("{dir}: {reason}")]
    Index {
        /// The shard set directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias of the render stage.
pub type Result<T, E = RenderError> = std::result::Result<T, E>;

/// Parameters of the render stage (part of every shard's key and of `config_digest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderParams {
    /// Side of the stage-1 crop in pixels.
    pub stage1_size: u32,
    /// Side of the stage-2 crop in pixels.
    pub stage2_size: u32,
    /// Stage-1 box rule.
    pub box_rule: BoxRule,
    /// Enlargement of the landmarks' square box (stage 1 with [`BoxRule::Landmarks`], and
    /// always stage 2).
    pub box_enlarge: f64,
    /// Enlargement of the annotation's square box ([`BoxRule::Annotation`]); annotation boxes
    /// usually already include a margin.
    pub annotation_box_enlarge: f64,
    /// What pixels outside the source image read.
    pub border: Border,
    /// Augmentation ranges.
    pub augment: AugmentConfig,
    /// Decode JPEG sources at 1/2, 1/4 or 1/8 resolution, and only the region the crops
    /// reach, for crops whose warp reads pyramid level ≥ 1 (same geometry, a slightly different
    /// low-pass filter than area averaging; much faster). PNG sources, and crops read at full
    /// resolution, always use the full decode.
    pub reduced_decode: bool,
    /// Augmentation epochs of the training sets: each is one full pass over the plan's training
    /// rows with its own draws (epoch 0 in the set's folder, epoch e ≥ 1 in its sub-folder
    /// `augmentation-epoch-EEE`); validation and test sets have one. Not part of any shard's
    /// key or of `config_digest` (never serialised with the other parameters): raising it
    /// renders only the new epochs, lowering it leaves the surplus to `wingflow gc`.
    #[serde(skip_serializing)]
    pub epochs: u32,
    /// The most pixels (width × height) a source image's header may declare; a larger one fails
    /// the render with its path and size before any pixel is decoded (a bound on memory and
    /// time against corrupt or hostile headers). Not part of any shard's key, of
    /// `config_digest` or of the stage's parameters (never serialised): it changes no pixel, and
    /// a render that failed on it has no record, so raising it renders again anyway.
    #[serde(skip_serializing)]
    pub max_image_pixels: u64,
}

/// The default number of augmentation epochs, chosen by measurement (bench/README-losses.md,
/// run 5 step 3: 4 epochs beat 1 on every seed, 8 add nothing to 4 at twice the disk).
pub const DEFAULT_EPOCHS: u32 = 4;

/// The default of [`RenderParams::max_image_pixels`]: 100 megapixels (300 MB decoded), above
/// any face dataset's photos.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 100_000_000;

impl Default for RenderParams {
    fn default() -> Self {
        RenderParams {
            stage1_size: 64,
            stage2_size: 128,
            box_rule: BoxRule::Landmarks,
            box_enlarge: 1.25,
            annotation_box_enlarge: 1.0,
            border: Border::Constant(0),
            augment: AugmentConfig::default(),
            reduced_decode: true,
            epochs: DEFAULT_EPOCHS,
            max_image_pixels: DEFAULT_MAX_IMAGE_PIXELS,
        }
    }
}

impl RenderParams {
    /// Check sizes, enlargements and augmentation ranges.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        for (name, size) in [
            ("stage1_size", self.stage1_size),
            ("stage2_size", self.stage2_size),
        ] {
            if !(1..=4096).contains(&size) {
                return Err(InvalidParam::new(name, "a crop size must lie in 1..=4096"));
            }
        }
        if !(1..=999).contains(&self.epochs) {
            return Err(InvalidParam::new(
                "epochs",
                format!("{} (allowed: 1..=999)", self.epochs),
            ));
        }
        if self.max_image_pixels == 0 {
            return Err(InvalidParam::new(
                "max_image_pixels",
                "0 (allowed: an integer >= 1)",
            ));
        }
        for (name, v) in [
            ("box_enlarge", self.box_enlarge),
            ("annotation_box_enlarge", self.annotation_box_enlarge),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(InvalidParam::new(
                    name,
                    format!("{v} must be finite and > 0"),
                ));
            }
        }
        self.augment.validate().map_err(|e| InvalidParam {
            key: format!("augment.{}", e.key),
            ..e
        })
    }

    /// blake3 of the canonical JSON of these parameters (`config_digest` in `index.json`;
    /// `epochs` and `max_image_pixels` are not part of it).
    pub fn digest(&self) -> String {
        // Serialising plain numbers, strings and enums cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        blake3::hash(&json).to_hex().to_string()
    }

    /// Crop side of a stage.
    pub fn crop_size(&self, stage: CropLevel) -> u32 {
        match stage {
            CropLevel::One => self.stage1_size,
            CropLevel::Two => self.stage2_size,
        }
    }
}
