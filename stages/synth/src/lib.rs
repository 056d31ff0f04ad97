//! Synthetic face datasets in the real on-disk formats (300W tree, HRNet-style AFLW CSV,
//! `aflw.sqlite`), with a ground-truth sidecar, for tests, demos and benchmarks: the real
//! datasets are licence-gated.
//!
//! Each face is a parametric 3D head (identity and expression variation, see `model`) rotated,
//! projected with a mild perspective and rendered by a small software rasteriser (skin shading,
//! eyes, brows, nose, lips, ears, hair, neck and shoulders) over background clutter, with
//! occluders, lighting, blur and sensor noise. Landmarks of both schemes come from the same
//! model, so they sit on the drawn structures; a landmark hidden by the head itself (far side
//! of a turned face) is marked not visible.
//!
//! Output is a pure function of the [`SynthConfig`]: each face draws from its own ChaCha stream
//! keyed by (seed, face index), so the bytes do not depend on the thread count. Files are
//! written under a temporary name and renamed, so an interrupted run leaves no partial file
//! under a final name.
//!
//! Sidecars written for every format, relative to the output directory:
//! - `poses.csv`: `sample_id,image_path,split,yaw,pitch,roll` (degrees; yaw > 0 when the face
//!   turns towards the image's right, pitch > 0 when it looks up, roll > 0 clockwise);
//! - `synth-truth.jsonl`: one [`TruthFace`] per line.

mod formats;
mod model;
mod preview;
mod raster;
mod scene;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use preview::write_preview;

/// Name of the ground-truth sidecar in an output directory.
pub const TRUTH_FILE: &str = "synth-truth.jsonl";
/// Name of the pose sidecar in an output directory.
pub const POSES_FILE: &str = "poses.csv";

/// Which on-disk dataset layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SynthFormat {
    /// 300W: `afw`, `helen/{trainset,testset}`, `lfpw/{trainset,testset}`, `ibug` folders of
    /// images beside 68-point `.pts` files, in 300W's 3148 : 554 : 135 proportions.
    W300,
    /// AFLW as HRNet ships it: `flickr/0/*.jpg` and `face_landmarks_aflw_{train,test}.csv` with
    /// 19 points per face.
    Aflw,
    /// AFLW as the original `aflw.sqlite` (21 points, self-occluded points have no row) with
    /// images under `flickr/0/`.
    AflwSqlite,
    /// COCO-style keypoint JSON as mmpose ships faces (or COCO-WholeBody's `face_kpts`), 68
    /// points: `images/*.jpg` and `annotations/face_landmarks_synth_{train,test}.json`
    /// (`coco_wholebody_face_{train,test}.json` for the WholeBody field); the flavour is
    /// [`SynthConfig::coco`].
    Coco,
}

/// The `v` flags a synthetic COCO file writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CocoFlags {
    /// COCO's meaning: 2 for a point in view, 1 for a point the head itself hides (labelled but
    /// occluded), as COFW's files do.
    Coco,
    /// 1 for every point, as mmpose's 300W, AFLW and WFLW files do.
    AllOne,
    /// 2 for every point, as 300W-LP's file does.
    AllTwo,
}

impl CocoFlags {
    /// Every choice, with its command-line name.
    pub const ALL: [(CocoFlags, &'static str); 3] = [
        (CocoFlags::Coco, "coco"),
        (CocoFlags::AllOne, "all-1"),
        (CocoFlags::AllTwo, "all-2"),
    ];

    /// Parse a command-line name (`coco`, `all-1`, `all-2`).
    pub fn parse(name: &str) -> Result<Self, SynthError> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(f, _)| *f)
            .ok_or_else(|| {
                SynthError::Config(format!("coco flags `{name}` (allowed: coco, all-1, all-2)"))
            })
    }
}

/// The flavour of a synthetic COCO file ([`SynthFormat::Coco`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CocoOptions {
    /// `keypoints` (mmpose's files) or WholeBody's `face` (`face_kpts`, `face_box`,
    /// `face_valid`; every image also gets a person without a face, `face_valid = false`).
    pub field: faces::formats::coco::CocoField,
    /// The pixel rule the values are written in (the box corner moves with the points under
    /// the one-based rule only, as the reader expects).
    pub origin: faces::formats::PixelOrigin,
    /// The `v` flags written.
    pub flags: CocoFlags,
    /// Faces per image (1–4): the faces of an image are rendered separately and tiled side by
    /// side into one image, their landmarks moved with their tile.
    pub faces_per_image: usize,
}

impl Default for CocoOptions {
    fn default() -> Self {
        CocoOptions {
            field: faces::formats::coco::CocoField::Keypoints,
            origin: faces::formats::PixelOrigin::ZeroBased,
            flags: CocoFlags::Coco,
            faces_per_image: 1,
        }
    }
}

impl SynthFormat {
    /// Every format.
    pub const ALL: [SynthFormat; 4] = [
        SynthFormat::W300,
        SynthFormat::Aflw,
        SynthFormat::AflwSqlite,
        SynthFormat::Coco,
    ];

    /// Command-line name: `300w`, `aflw`, `aflw-sqlite`, `coco`.
    pub fn name(self) -> &'static str {
        match self {
            SynthFormat::W300 => "300w",
            SynthFormat::Aflw => "aflw",
            SynthFormat::AflwSqlite => "aflw-sqlite",
            SynthFormat::Coco => "coco",
        }
    }

    /// Parse a command-line name.
    pub fn parse(name: &str) -> Result<Self, SynthError> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| SynthError::UnknownFormat(name.to_owned()))
    }

    /// Landmark scheme of the faces written in this format (`ibug68`, `aflw19`, `aflw21`).
    pub fn scheme(self) -> &'static str {
        match self {
            SynthFormat::W300 | SynthFormat::Coco => "ibug68",
            SynthFormat::Aflw => "aflw19",
            SynthFormat::AflwSqlite => "aflw21",
        }
    }
}

/// Everything that determines a synthetic dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Output layout.
    pub format: SynthFormat,
    /// Number of faces (one face per image).
    pub count: usize,
    /// Seed; equal configs give byte-identical trees.
    pub seed: u64,
    /// Range of image sides in pixels (min, max); each side is drawn from it (aspect ratio kept
    /// within 2:3 … 3:2).
    pub image_size: (u32, u32),
    /// Face height (brow to chin) as a fraction of the shorter image side (min, max); faces are
    /// shrunk further when needed to keep every landmark inside the image.
    pub face_fraction: (f32, f32),
    /// Largest |yaw| in degrees.
    pub max_yaw_deg: f32,
    /// Largest |pitch| in degrees.
    pub max_pitch_deg: f32,
    /// Largest |roll| in degrees.
    pub max_roll_deg: f32,
    /// Probability that a face gets occluders (bars, blobs, hands); the challenging subset
    /// (300W `ibug`) gets 2.5× as much.
    pub occlusion_probability: f32,
    /// JPEG quality range (inclusive).
    pub jpeg_quality: (u8, u8),
    /// The flavour of a [`SynthFormat::Coco`] file (ignored by the other formats).
    pub coco: CocoOptions,
}

impl SynthConfig {
    /// Defaults for `format`: 300W poses up to ±60° yaw, AFLW up to ±90°.
    pub fn new(format: SynthFormat) -> Self {
        let aflw = matches!(format, SynthFormat::Aflw | SynthFormat::AflwSqlite);
        SynthConfig {
            format,
            count: 100,
            seed: 0,
            image_size: (320, 640),
            face_fraction: (0.3, 0.7),
            max_yaw_deg: if aflw { 90.0 } else { 60.0 },
            max_pitch_deg: if aflw { 40.0 } else { 30.0 },
            max_roll_deg: if aflw { 40.0 } else { 30.0 },
            occlusion_probability: 0.25,
            jpeg_quality: (70, 95),
            coco: CocoOptions::default(),
        }
    }

    /// Faces per image: [`CocoOptions::faces_per_image`] for COCO files, else 1.
    fn faces_per_image(&self) -> usize {
        match self.format {
            SynthFormat::Coco => self.coco.faces_per_image,
            _ => 1,
        }
    }

    fn validate(&self) -> Result<(), SynthError> {
        let bad = |msg: String| Err(SynthError::Config(msg));
        let (lo, hi) = self.image_size;
        if lo < 48 || lo > hi || hi > 8192 {
            return bad(format!("image_size {lo}..{hi}: need 48 ≤ min ≤ max ≤ 8192"));
        }
        let (f0, f1) = self.face_fraction;
        if !(0.05..=1.0).contains(&f0) || !(f0..=1.0).contains(&f1) {
            return bad(format!(
                "face_fraction {f0}..{f1}: need 0.05 ≤ min ≤ max ≤ 1"
            ));
        }
        for (name, v, max) in [
            ("max_yaw_deg", self.max_yaw_deg, 90.0),
            ("max_pitch_deg", self.max_pitch_deg, 60.0),
            ("max_roll_deg", self.max_roll_deg, 90.0),
        ] {
            if !(0.0..=max).contains(&v) {
                return bad(format!("{name} = {v}: need 0 ≤ value ≤ {max}"));
            }
        }
        if !(0.0..=1.0).contains(&self.occlusion_probability) {
            return bad(format!(
                "occlusion_probability = {}: need 0 ≤ p ≤ 1",
                self.occlusion_probability
            ));
        }
        let (q0, q1) = self.jpeg_quality;
        if q0 == 0 || q0 > q1 || q1 > 100 {
            return bad(format!("jpeg_quality {q0}..{q1}: need 1 ≤ min ≤ max ≤ 100"));
        }
        if !(1..=4).contains(&self.coco.faces_per_image) {
            return bad(format!(
                "faces_per_image = {}: need 1 ≤ value ≤ 4",
                self.coco.faces_per_image
            ));
        }
        Ok(())
    }
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self::new(SynthFormat::W300)
    }
}

/// One face of `synth-truth.jsonl`: the exact ground truth the format readers are tested
/// against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthFace {
    /// Sample id as a reader should produce it: `300w/<folder>/<stem>` (e.g.
    /// `300w/helen/trainset/synth_000123`), `aflw/<image_name without extension>` for the CSV
    /// format (e.g. `aflw/flickr/0/image00002`), `aflw/<face_id>` for `aflw.sqlite`,
    /// `300w/<annotation id>` for COCO files.
    pub sample_id: String,
    /// Image path relative to the output directory, `/`-separated.
    pub image_path: String,
    /// `train`, `common`, `challenging` (300W), `train`/`test` (AFLW CSV); `train` for every
    /// face of `aflw.sqlite`, which has no split.
    pub split: String,
    /// `ibug68`, `aflw19` or `aflw21`.
    pub scheme: String,
    /// Image width in pixels.
    pub image_width: u32,
    /// Image height in pixels.
    pub image_height: u32,
    /// x0, y0, x1, y1, … in the internal pixel convention (centre of the top-left pixel at
    /// (0.5, 0.5)), full precision, for every point (hidden ones included). Files hold them
    /// rounded: `.pts` to 3–6 decimals; the AFLW test CSV to 0.001 px.
    pub landmarks: Vec<f32>,
    /// Per point: not hidden by the head itself (external occluders do not count).
    pub visible: Vec<bool>,
    /// Per point: the written file holds coordinates for it (false only for self-occluded points
    /// in `aflw.sqlite`).
    pub annotated: Vec<bool>,
    /// The annotated face box (x, y, w, h, internal convention) where the format has one (AFLW,
    /// COCO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    /// Degrees, > 0 when the face turns towards the image's right.
    pub yaw: f32,
    /// Degrees, > 0 when the face looks up.
    pub pitch: f32,
    /// Degrees, > 0 when the face is turned clockwise in the image.
    pub roll: f32,
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSummary {
    /// Faces (= images) written.
    pub faces: usize,
    /// Faces per split.
    pub per_split: BTreeMap<String, usize>,
    /// Landmarks hidden by the head itself, over all faces.
    pub hidden_points: usize,
}

/// Errors of the synthetic data generator.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// An atomic write (temporary file, fsync, rename) failed; the message names the file.
    #[error(transparent)]
    Write(#[from] manifests::Error),
    /// A config value out of range.
    #[error("invalid synth config: {0}")]
    Config(String),
    /// An unknown `--format` name.
    #[error("unknown synth format `{0}` (known: 300w, aflw, aflw-sqlite, coco)")]
    UnknownFormat(String),
    /// The output directory already holds files.
    #[error("output directory {} is not empty; remove it or choose another", .0.display())]
    OutputNotEmpty(PathBuf),
    /// A file system error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Image encoding or decoding failed.
    #[error("{}: {source}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The cause.
        source: image::ImageError,
    },
    /// Writing `aflw.sqlite` failed.
    #[error("{}: sqlite: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// A line of `synth-truth.jsonl` is not a valid [`TruthFace`].
    #[error("{}, line {line}: {source}", path.display())]
    Truth {
        /// The truth file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The cause.
        source: serde_json::Error,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The random stream of face `index`: keyed by (seed, index) only, never by thread or order.
fn face_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new();
    h.update(b"wingflow-synth-face");
    h.update(&seed.to_le_bytes());
    h.update(&(index as u64).to_le_bytes());
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

/// Generate `config.count` faces under `out_dir` (created; it must not hold files yet), in
/// parallel on the current rayon pool. `on_face_done` is called once per finished face, from
/// worker threads (drive a progress bar with it).
pub fn generate(
    config: &SynthConfig,
    out_dir: &Path,
    on_face_done: &(dyn Fn() + Sync),
) -> Result<SynthSummary, SynthError> {
    config.validate()?;
    if out_dir.exists() {
        let mut entries = fs::read_dir(out_dir).map_err(io_err(out_dir))?;
        if entries.next().is_some() {
            return Err(SynthError::OutputNotEmpty(out_dir.to_owned()));
        }
    }
    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let plan = formats::plan(config);
    let mut dirs: Vec<PathBuf> = plan
        .iter()
        .filter_map(|f| out_dir.join(&f.image_path).parent().map(Path::to_path_buf))
        .collect();
    dirs.dedup();
    for d in &dirs {
        fs::create_dir_all(d).map_err(io_err(d))?;
    }
    // The faces of one image (one face, except in COCO files with several per image).
    let groups: Vec<Vec<formats::WrittenFace>> = plan
        .par_chunks(config.faces_per_image())
        .map(|items| {
            let mut rendered: Vec<_> = items
                .iter()
                .map(|item| {
                    let mut rng = face_rng(config.seed, item.index);
                    (scene::render_face(config, item.request, &mut rng), rng)
                })
                .collect();
            if rendered.len() > 1 {
                formats::tile(&mut rendered);
            }
            items
                .iter()
                .zip(rendered)
                .map(|(item, (face, mut rng))| {
                    let written = formats::write_face(config, out_dir, item, face, &mut rng);
                    on_face_done();
                    written
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()?;
    let faces: Vec<formats::WrittenFace> = groups.into_iter().flatten().collect();
    formats::write_tables(config, out_dir, &faces)?;
    let mut per_split = BTreeMap::new();
    for f in &faces {
        *per_split.entry(f.truth.split.clone()).or_insert(0) += 1;
    }
    Ok(SynthSummary {
        faces: faces.len(),
        per_split,
        hidden_points: faces
            .iter()
            .map(|f| f.truth.visible.iter().filter(|v| !**v).count())
            .sum(),
    })
}

/// Read `synth-truth.jsonl` of a generated tree.
pub fn read_truth(out_dir: &Path) -> Result<Vec<TruthFace>, SynthError> {
    let path = out_dir.join(TRUTH_FILE);
    let file = fs::File::open(&path).map_err(io_err(&path))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io_err(&path))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|source| SynthError::Truth {
                path: path.clone(),
                line: i + 1,
                source,
            })?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
