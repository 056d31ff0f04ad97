//! The shard format on disk: safetensors files written at fixed offsets, per-shard sidecars,
//! the per-set `index.json` and `samples.parquet`, atomic writes, and garbage collection.
//!
//! A shard file is laid out before any sample is rendered (its header only depends on the
//! sample count, crop size and point count), so each rendered sample is written straight to its
//! final position: output bytes never depend on the order in which threads finish.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::augment::Augmentation;
use super::geometry::Affine;
use super::shard_file::{BlockPool, ShardFile};
use super::{RenderError, Result};
use shapes::balance::TRAIN;
use shapes::plan::PlanRow;

use contract::layout::{Layout, epoch_dir, parse_epoch_dir_name, shard_set};
use contract::shards::tensor;
pub use contract::shards::{FORMAT_VERSION, IndexEntry, ShardIndex};

/// Version of the pixel code (decode, warp, photometric operations): part of every shard's key,
/// so shards rendered by code that computes different pixels for the same parameters are stale.
/// Bump it with any such change. 2: fixed-point warp, fused colour map, symmetric blur taps;
/// 3: fixed-point colour map, integer blur; 4: 7-bit warp weights (a 16-bit multiply-add
/// blend), the blur rounds to bytes between its passes (16-bit lanes throughout).
pub const PIXEL_VERSION: u32 = 4;

/// Which crop a shard set holds: level 1 (the face box, for CNN-6) or level 2 (the
/// rotation-normalised box of CNN-6's landmarks, for CNN-7). The serialised names (`stage1`,
/// `stage2`, hashed into shard keys) and the folder names are the user-facing ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CropLevel {
    /// The level-1 crop (64×64 by default).
    #[serde(rename = "stage1")]
    One,
    /// The level-2, rotation-normalised crop (128×128 by default).
    #[serde(rename = "stage2")]
    Two,
}

impl CropLevel {
    /// The level's number (1 or 2), as the output layout names it.
    pub fn number(self) -> u8 {
        match self {
            CropLevel::One => 1,
            CropLevel::Two => 2,
        }
    }

    /// Both levels.
    pub const ALL: [CropLevel; 2] = [CropLevel::One, CropLevel::Two];

    /// The shard id of a plan row in this level's set.
    pub fn shard_of(self, row: &PlanRow) -> u32 {
        match self {
            CropLevel::One => row.shard_stage1,
            CropLevel::Two => row.shard_stage2,
        }
    }
}

/// The directory of one augmentation epoch of a shard set: `<out_root>/shards/<stage>/<split>`
/// for epoch 0, its sub-folder `augmentation-epoch-EEE` for the others.
pub fn epoch_set_dir(out_root: &Path, stage: CropLevel, split: &str, epoch: u32) -> PathBuf {
    Layout::new(out_root).shard_set_epoch(stage.number(), split, epoch)
}

/// File name of shard `id`.
pub fn shard_file_name(id: u32) -> String {
    format!("shard-{id:05}.safetensors")
}

/// File name of the sidecar of shard `id`.
pub fn sidecar_file_name(id: u32) -> String {
    format!("shard-{id:05}.json")
}

fn parse_shard_id(name: &str) -> Option<(u32, &'static str)> {
    let rest = name.strip_prefix("shard-")?;
    for ext in [".safetensors", ".json"] {
        // Names are zero-padded to five digits; longer ids carry no padding.
        if let Some(num) = rest.strip_suffix(ext)
            && (num.len() == 5 || num.len() > 5 && !num.starts_with('0'))
        {
            return num.parse().ok().map(|id| (id, ext));
        }
    }
    None
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RenderError + '_ {
    move |source| RenderError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where each tensor of a shard lies in the file.
#[derive(Debug, Clone)]
pub struct ShardLayout {
    /// Number of samples N.
    pub samples: usize,
    /// Crop side S.
    pub size: usize,
    /// Landmarks per sample L.
    pub points: usize,
    /// Whether the shard has the `occluded` tensor (written only when one of its samples has
    /// an occluded point: a shard without one has the bytes it had before the tensor existed).
    pub occluded: bool,
    /// Absolute file offset of the first tensor byte (8 + padded header length).
    pub data_start: u64,
    /// The complete prefix: 8-byte little-endian header length + padded JSON header.
    pub prefix: Vec<u8>,
}

impl ShardLayout {
    /// Lay out a shard. `metadata` goes to `__metadata__` (keys sorted, so bytes are stable).
    /// Tensors are ordered by decreasing alignment (i64, f32, then u8) so that every tensor is
    /// naturally aligned in a memory map; `occluded` (when `occluded` is set) comes last.
    pub fn new(
        samples: usize,
        size: usize,
        points: usize,
        occluded: bool,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let (n, s, l) = (samples, size, points);
        let mut tensors: Vec<(&str, &str, Vec<usize>, usize)> = vec![
            (tensor::SAMPLE_INDEX, "I64", vec![n], 8 * n),
            (tensor::LANDMARKS, "F32", vec![n, l, 2], 4 * n * l * 2),
            (tensor::IMAGES, "U8", vec![n, s, s, 3], n * s * s * 3),
            (tensor::IN_CROP, "U8", vec![n, l], n * l),
            (tensor::VISIBLE, "U8", vec![n, l], n * l),
        ];
        if occluded {
            tensors.push((tensor::OCCLUDED, "U8", vec![n, l], n * l));
        }
        let meta = serde_json::to_string(metadata).map_err(|source| RenderError::Json {
            path: PathBuf::new(),
            source,
        })?;
        let mut header = format!("{{\"__metadata__\":{meta}");
        let mut offset = 0usize;
        for (name, dtype, shape, len) in tensors {
            let shape: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            header.push_str(&format!(
                ",\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
                shape.join(","),
                offset + len
            ));
            offset += len;
        }
        header.push('}');
        let padded = header.len().next_multiple_of(8);
        let mut prefix = Vec::with_capacity(8 + padded);
        prefix.extend((padded as u64).to_le_bytes());
        prefix.extend(header.as_bytes());
        prefix.resize(8 + padded, b' ');
        Ok(ShardLayout {
            samples,
            size,
            points,
            occluded,
            data_start: prefix.len() as u64,
            prefix,
        })
    }

    fn landmarks_offset(&self) -> u64 {
        self.data_start + 8 * self.samples as u64
    }
    fn images_offset(&self) -> u64 {
        self.landmarks_offset() + 8 * (self.samples * self.points) as u64
    }
    fn in_crop_offset(&self) -> u64 {
        self.images_offset() + (self.samples * self.size * self.size * 3) as u64
    }
    fn visible_offset(&self) -> u64 {
        self.in_crop_offset() + (self.samples * self.points) as u64
    }

    fn occluded_offset(&self) -> u64 {
        self.visible_offset() + (self.samples * self.points) as u64
    }

    /// Total file size in bytes.
    pub fn file_len(&self) -> u64 {
        let flags = (self.samples * self.points) as u64;
        self.occluded_offset() + if self.occluded { flags } else { 0 }
    }

    /// Open the (temporary) shard file at `path` for writing and write its header and the
    /// `sample_index` tensor, which is known before rendering.
    pub fn create(&self, path: &Path, sample_index: &[i64], pool: &BlockPool) -> Result<ShardFile> {
        let file = ShardFile::open(path, self.file_len())?;
        let mut head = self.prefix.clone();
        head.extend(sample_index.iter().flat_map(|v| v.to_le_bytes()));
        file.write_at(pool, 0, &head)?;
        Ok(file)
    }

    /// Write one rendered sample at row `row` of `file`.
    pub fn write_sample(
        &self,
        file: &ShardFile,
        pool: &BlockPool,
        row: usize,
        sample: &RenderedCrop,
    ) -> Result<()> {
        let (s, l) = (self.size, self.points);
        let xy: Vec<u8> = sample
            .landmarks
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut parts: Vec<(u64, &[u8])> = vec![
            (self.landmarks_offset() + (row * l * 8) as u64, &xy),
            (
                self.images_offset() + (row * s * s * 3) as u64,
                &sample.image,
            ),
            (self.in_crop_offset() + (row * l) as u64, &sample.in_crop),
            (self.visible_offset() + (row * l) as u64, &sample.visible),
        ];
        if self.occluded {
            parts.push((self.occluded_offset() + (row * l) as u64, &sample.occluded));
        }
        for (offset, bytes) in parts {
            file.write_at(pool, offset, bytes)?;
        }
        Ok(())
    }
}

/// One rendered crop, ready to be written into a shard.
#[derive(Debug, Clone)]
pub struct RenderedCrop {
    /// S×S×3 RGB bytes.
    pub image: Vec<u8>,
    /// L×2 output coordinates.
    pub landmarks: Vec<f32>,
    /// L annotation-visibility flags.
    pub visible: Vec<u8>,
    /// L occlusion flags (written only by a layout with the `occluded` tensor).
    pub occluded: Vec<u8>,
    /// L in-crop flags.
    pub in_crop: Vec<u8>,
}

/// One output sample's row of `samples.parquet` (also kept in the shard's sidecar).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// Shard id within the set.
    pub shard: u32,
    /// Row within the shard.
    pub row: u32,
    /// Source face id.
    pub sample_id: String,
    /// Replica index (0 = original).
    pub replica: u32,
    /// The plan row's augmentation seed.
    pub seed: u64,
    /// The augmentation drawn from the seed.
    pub augmentation: Augmentation,
    /// The crop matrix: source pixel coordinates → output pixel coordinates (maps predictions
    /// back to the source image through its inverse).
    pub affine: Affine,
    /// Signed pose coefficient from the plan.
    pub pose_coefficient: Option<f32>,
    /// Pose-histogram bin from the plan.
    pub bin: Option<u32>,
}

/// A shard's sidecar (`shard-NNNNN.json`): the incremental key, the digest of the finished
/// file, the set it belongs to, and the shard's rows of `samples.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// Layout version.
    pub format_version: u32,
    /// blake3 of (render params, the shard's plan rows and faces, its source images' digests).
    pub key: String,
    /// blake3 of the render parameters.
    pub config_digest: String,
    /// Scheme name.
    pub scheme: String,
    /// Crop side.
    pub crop_size: u32,
    /// Split name.
    pub split: String,
    /// Shard file name.
    pub file: String,
    /// Shard file size.
    pub bytes: u64,
    /// blake3 of the shard file.
    pub blake3: String,
    /// Every shard of the set as (id, sample count), in id order, from the plan.
    pub set_shards: Vec<(u32, u32)>,
    /// The shard's rows of `samples.parquet`, in row order.
    pub samples: Vec<SampleRecord>,
}

/// A shard file's blake3 (hex, as sidecars and `index.json` record it) and size in bytes.
pub type ShardDigest = (String, u64);

/// blake3 and size of a file.
pub fn file_digest(path: &Path) -> Result<ShardDigest> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hasher.finalize().to_hex().to_string(), len))
}

/// Reserve the temporary file a shard at `path` is rendered into (the one temporary-name rule
/// of [`manifests::create_temp`], so `gc` and every later run recognise a leftover).
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    Ok(manifests::create_temp(path)?.1)
}

/// Make a finished temporary file durable and move it to `path`.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    Ok(manifests::commit_temp(tmp, path)?)
}

/// Write `bytes` to `path` atomically (temporary file + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(manifests::write_atomic(path, bytes)?)
}

/// Like [`write_atomic`], but leaves the file (and its mtime) alone when it already holds
/// `bytes`. Returns whether it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool> {
    Ok(manifests::write_if_changed(path, bytes)?)
}

/// Read a sidecar, or `None` when it is missing or unreadable (the shard is then re-rendered).
pub fn read_sidecar(path: &Path) -> Option<Sidecar> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn list_sidecars(dir: &Path) -> Result<BTreeMap<u32, Sidecar>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((id, ".json")) = parse_shard_id(&name) {
            let path = entry.path();
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let sidecar: Sidecar =
                serde_json::from_slice(&bytes).map_err(|source| RenderError::Json {
                    path: path.clone(),
                    source,
                })?;
            out.insert(id, sidecar);
        }
    }
    Ok(out)
}

/// Verify every shard of the set in `dir` (sidecar present, file size and blake3 as recorded,
/// all sidecars agreeing on the set) and write `index.json` and `samples.parquet`. Sidecars of
/// shards that the current set no longer lists (left over from an older plan) are ignored; `gc`
/// removes them. Files are rewritten only when their content changes. `augmentation_epochs` is
/// recorded in the index (a training set's epoch 0 lists how many it has; every other set has
/// one).
pub fn index_shard_set(dir: &Path, augmentation_epochs: u32) -> Result<ShardIndex> {
    index_checked_shard_set(dir, augmentation_epochs, &BTreeMap::new())
}

/// Like [`index_shard_set`], but the shard files in `checked` (path → blake3, size), whose
/// digests the caller has just computed from the bytes it wrote or read, are not read again.
pub(crate) fn index_checked_shard_set(
    dir: &Path,
    augmentation_epochs: u32,
    checked: &BTreeMap<PathBuf, ShardDigest>,
) -> Result<ShardIndex> {
    let sidecars = list_sidecars(dir)?;
    let bad = |reason: String| RenderError::Index {
        dir: dir.to_owned(),
        reason,
    };
    // The current set is the one whose listed shards all have sidecars that list the same set.
    let groups: BTreeSet<&Vec<(u32, u32)>> = sidecars.values().map(|s| &s.set_shards).collect();
    let complete: Vec<&Vec<(u32, u32)>> = groups
        .into_iter()
        .filter(|set| {
            set.iter()
                .all(|(id, _)| sidecars.get(id).is_some_and(|s| &s.set_shards == *set))
        })
        .collect();
    let set = match complete.as_slice() {
        [one] => (*one).clone(),
        [] if sidecars.is_empty() => return Err(bad("no shard sidecars found".to_owned())),
        [] => {
            let first = sidecars
                .values()
                .next()
                .map(|s| s.set_shards.clone())
                .unwrap_or_default();
            let missing: Vec<String> = first
                .iter()
                .filter(|(id, _)| !sidecars.contains_key(id))
                .map(|(id, _)| shard_file_name(*id))
                .collect();
            return Err(bad(format!(
                "incomplete shard set; missing or out of date: {}",
                missing.join(", ")
            )));
        }
        _ => {
            return Err(bad(
                "sidecars describe more than one complete shard set; run gc".to_owned(),
            ));
        }
    };
    let first = &sidecars[&set[0].0];
    let mut entries = Vec::with_capacity(set.len());
    let mut records: Vec<&SampleRecord> = Vec::new();
    for (id, count) in &set {
        let sc = &sidecars[id];
        if (&sc.scheme, sc.crop_size, &sc.split, &sc.config_digest)
            != (
                &first.scheme,
                first.crop_size,
                &first.split,
                &first.config_digest,
            )
        {
            return Err(bad(format!(
                "{} disagrees with {} on scheme, crop size, split or config",
                sc.file, first.file
            )));
        }
        if sc.samples.len() != *count as usize {
            return Err(bad(format!(
                "{} lists {} samples, the set expects {count}",
                sc.file,
                sc.samples.len()
            )));
        }
        let path = dir.join(&sc.file);
        let (digest, bytes) = match checked.get(&path) {
            Some(known) => known.clone(),
            None => file_digest(&path)?,
        };
        if digest != sc.blake3 || bytes != sc.bytes {
            return Err(bad(format!(
                "{} does not match its recorded digest (truncated or corrupted)",
                sc.file
            )));
        }
        entries.push(IndexEntry {
            file: sc.file.clone(),
            samples: *count as u64,
            bytes,
            blake3: digest,
        });
        records.extend(&sc.samples);
    }
    let index = ShardIndex {
        format_version: FORMAT_VERSION,
        scheme: first.scheme.clone(),
        crop_size: first.crop_size,
        split: first.split.clone(),
        total_samples: records.len() as u64,
        config_digest: first.config_digest.clone(),
        wingflow_version: env!("CARGO_PKG_VERSION").to_owned(),
        shards: entries,
        augmentation_epochs,
    };
    let parquet_path = dir.join(shard_set::SAMPLES);
    let parquet = samples_parquet(&records).map_err(|source| RenderError::Parquet {
        path: parquet_path.clone(),
        source,
    })?;
    write_if_changed(&parquet_path, &parquet)?;
    let index_path = dir.join(shard_set::INDEX);
    let mut json = serde_json::to_vec_pretty(&index).map_err(|source| RenderError::Json {
        path: index_path.clone(),
        source,
    })?;
    json.push(b'\n');
    write_if_changed(&index_path, &json)?;
    Ok(index)
}

/// Encode the per-sample table as Parquet bytes.
fn samples_parquet(records: &[&SampleRecord]) -> PolarsResult<Vec<u8>> {
    fn col<T, P: ?Sized>(name: &str, values: T) -> Column
    where
        Series: NamedFrom<T, P>,
    {
        Column::from(Series::new(name.into(), values))
    }
    let aug = |f: fn(&Augmentation) -> f64| {
        records
            .iter()
            .map(|r| f(&r.augmentation))
            .collect::<Vec<f64>>()
    };
    let affine = |k: usize| records.iter().map(|r| r.affine.0[k]).collect::<Vec<f64>>();
    let occlusions: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(&r.augmentation.occlusions).unwrap_or_default())
        .collect();
    let mut df = DataFrame::new_infer_height(vec![
        col(
            "shard",
            records.iter().map(|r| r.shard).collect::<Vec<u32>>(),
        ),
        col("row", records.iter().map(|r| r.row).collect::<Vec<u32>>()),
        col(
            "sample_id",
            records
                .iter()
                .map(|r| r.sample_id.as_str())
                .collect::<Vec<&str>>(),
        ),
        col(
            "replica",
            records.iter().map(|r| r.replica).collect::<Vec<u32>>(),
        ),
        col("seed", records.iter().map(|r| r.seed).collect::<Vec<u64>>()),
        col(
            "flip",
            records
                .iter()
                .map(|r| r.augmentation.flip)
                .collect::<Vec<bool>>(),
        ),
        col("rotation_deg", aug(|a| a.rotation_deg)),
        col("translate_x", aug(|a| a.translate_x)),
        col("translate_y", aug(|a| a.translate_y)),
        col("scale", aug(|a| a.scale)),
        col("brightness", aug(|a| a.brightness)),
        col("contrast", aug(|a| a.contrast)),
        col("saturation", aug(|a| a.saturation)),
        col(
            "grey",
            records
                .iter()
                .map(|r| r.augmentation.grey)
                .collect::<Vec<bool>>(),
        ),
        col("blur_sigma", aug(|a| a.blur_sigma)),
        col(
            "occlusion_count",
            records
                .iter()
                .map(|r| r.augmentation.occlusions.len() as u32)
                .collect::<Vec<u32>>(),
        ),
        col("occlusions", occlusions),
        col(
            "jpeg_quality",
            records
                .iter()
                .map(|r| r.augmentation.jpeg_quality.map(u32::from))
                .collect::<Vec<Option<u32>>>(),
        ),
        col("stage2_translate_x", aug(|a| a.stage2_translate_x)),
        col("stage2_translate_y", aug(|a| a.stage2_translate_y)),
        col("stage2_scale", aug(|a| a.stage2_scale)),
        col("stage2_rotation_deg", aug(|a| a.stage2_rotation_deg)),
        col("affine_a", affine(0)),
        col("affine_b", affine(1)),
        col("affine_c", affine(2)),
        col("affine_d", affine(3)),
        col("affine_e", affine(4)),
        col("affine_f", affine(5)),
        col(
            "pose_coefficient",
            records
                .iter()
                .map(|r| r.pose_coefficient)
                .collect::<Vec<Option<f32>>>(),
        ),
        col(
            "bin",
            records.iter().map(|r| r.bin).collect::<Vec<Option<u32>>>(),
        ),
    ])?;
    let mut out = Vec::new();
    ParquetWriter::new(&mut out)
        .set_parallel(false)
        .finish(&mut df)?;
    Ok(out)
}

/// Remove every shard file, sidecar and shard set under `<out_root>/shards` that `plan` no
/// longer has, the training sets' augmentation epochs from `epochs` on, and temporary files
/// left by a killed run. Returns what was removed, sorted.
pub fn gc(out_root: &Path, plan: &[PlanRow], epochs: u32) -> Result<Vec<PathBuf>> {
    let mut wanted: BTreeMap<(CropLevel, &str), BTreeSet<u32>> = BTreeMap::new();
    for row in plan {
        for stage in CropLevel::ALL {
            wanted
                .entry((stage, row.split.as_str()))
                .or_default()
                .insert(stage.shard_of(row));
        }
    }
    let mut removed = Vec::new();
    for stage in CropLevel::ALL {
        let stage_dir = Layout::new(out_root).level_shards(stage.number());
        for dir in subdirs(&stage_dir)? {
            let split = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let keep = wanted.get(&(stage, split.as_str()));
            let set_epochs = if split == TRAIN { epochs } else { 1 };
            for epoch_dir in subdirs(&dir)? {
                let name = epoch_dir.file_name().unwrap_or_default().to_string_lossy();
                let Some(epoch) = parse_epoch_dir_name(&name) else {
                    continue; // not ours: never removed
                };
                let surplus = keep.is_none() || epoch >= set_epochs;
                gc_files(&epoch_dir, if surplus { None } else { keep }, &mut removed)?;
                // Only succeeds when nothing unknown is left in it: never removes a user's files.
                if surplus && fs::remove_dir(&epoch_dir).is_ok() {
                    removed.push(epoch_dir);
                }
            }
            gc_files(&dir, keep, &mut removed)?;
            if keep.is_none() && fs::remove_dir(&dir).is_ok() {
                removed.push(dir);
            }
        }
    }
    removed.sort();
    Ok(removed)
}

/// The sub-folders of `dir`, sorted (none when it does not exist).
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Remove the files of one shard set folder that are not shards (or sidecars) of `keep`, and
/// temporary files; with `keep` `None`, every file of the set.
fn gc_files(dir: &Path, keep: Option<&BTreeSet<u32>>, removed: &mut Vec<PathBuf>) -> Result<()> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stale = match keep {
            None => true,
            Some(ids) => {
                manifests::atomic::is_temp_file_name(&name)
                    || parse_shard_id(&name).is_some_and(|(id, _)| !ids.contains(&id))
            }
        };
        if stale {
            fs::remove_file(&file).map_err(io_err(&file))?;
            removed.push(file);
        }
    }
    Ok(())
}

/// Verify and index every shard set under `<out_root>/shards` and each augmentation epoch of
/// the training sets (epoch 0's index records `epochs`); returns each set's folder and index.
pub fn index_all(out_root: &Path, epochs: u32) -> Result<Vec<(PathBuf, ShardIndex)>> {
    let mut out = Vec::new();
    for set in Layout::new(out_root).existing_shard_sets() {
        let is_train = set.file_name().is_some_and(|n| n == TRAIN);
        let set_epochs = if is_train { epochs } else { 1 };
        for epoch in 0..set_epochs {
            let dir = epoch_dir(&set, epoch);
            let listed = if epoch == 0 { set_epochs } else { 1 };
            out.push((dir.clone(), index_shard_set(&dir, listed)?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_a_valid_safetensors_file() {
        let meta = BTreeMap::from([
            ("scheme".to_owned(), "x".to_owned()),
            ("a".to_owned(), "[1,2]".to_owned()),
        ]);
        let layout = ShardLayout::new(2, 4, 3, false, &meta).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.safetensors");
        let pool = BlockPool::default();
        let file = layout.create(&path, &[5, 6], &pool).unwrap();
        let crop = RenderedCrop {
            image: (0..48).collect(),
            landmarks: vec![1.5, 2.5, 3.0, 4.0, -1.0, 9.0],
            visible: vec![1, 0, 1],
            occluded: vec![0, 0, 1],
            in_crop: vec![1, 1, 0],
        };
        let blank = RenderedCrop {
            image: vec![0; 48],
            landmarks: vec![0.0; 6],
            visible: vec![0; 3],
            occluded: vec![0; 3],
            in_crop: vec![0; 3],
        };
        layout.write_sample(&file, &pool, 1, &crop).unwrap();
        layout.write_sample(&file, &pool, 0, &blank).unwrap();
        let (digest, len) = file.finish().unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!((digest, len), file_digest(&path).unwrap());
        assert_eq!(bytes.len() as u64, layout.file_len());
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let images = st.tensor("images").unwrap();
        assert_eq!(images.shape(), &[2, 4, 4, 3]);
        assert_eq!(&images.data()[48..], &crop.image[..]);
        assert!(images.data()[..48].iter().all(|&b| b == 0));
        let idx = st.tensor("sample_index").unwrap();
        assert_eq!(&idx.data()[8..16], &6i64.to_le_bytes());
        let lm = st.tensor("landmarks").unwrap();
        assert_eq!(&lm.data()[24..28], &1.5f32.to_le_bytes());
        assert_eq!(st.tensor("in_crop").unwrap().data(), &[0, 0, 0, 1, 1, 0]);
        let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(md.metadata().as_ref().unwrap()["a"], "[1,2]");
        // The header is 8-byte aligned, so the i64 tensor is aligned in a memory map.
        assert_eq!(layout.data_start % 8, 0);
        assert!(
            st.tensor("occluded").is_err(),
            "no occluded tensor unless asked"
        );

        // With occlusion flags: the same tensors at the same offsets, `occluded` appended.
        let with = ShardLayout::new(2, 4, 3, true, &meta).unwrap();
        let path = dir.path().join("o.safetensors");
        let file = with.create(&path, &[5, 6], &pool).unwrap();
        with.write_sample(&file, &pool, 0, &blank).unwrap();
        with.write_sample(&file, &pool, 1, &crop).unwrap();
        file.finish().unwrap();
        let bytes_with = fs::read(&path).unwrap();
        assert_eq!(bytes_with.len() as u64, with.file_len());
        let st_with = safetensors::SafeTensors::deserialize(&bytes_with).unwrap();
        assert_eq!(
            st_with.tensor("occluded").unwrap().data(),
            &[0, 0, 0, 0, 0, 1]
        );
        for name in ["images", "landmarks", "visible", "in_crop", "sample_index"] {
            assert_eq!(
                st_with.tensor(name).unwrap().data(),
                st.tensor(name).unwrap().data()
            );
        }
    }

    #[test]
    fn shard_names_round_trip() {
        assert_eq!(
            parse_shard_id(&shard_file_name(42)),
            Some((42, ".safetensors"))
        );
        assert_eq!(
            parse_shard_id(&sidecar_file_name(123456)),
            Some((123456, ".json"))
        );
        assert_eq!(parse_shard_id("shard-1.json"), None);
        assert_eq!(parse_shard_id("index.json"), None);
    }
}
