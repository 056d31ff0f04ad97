//! Inspection of a shard set: per-shard counts, sizes and checksum status, and a contact sheet
//! of rendered samples with their landmarks drawn.

use std::fs;
use std::path::{Path, PathBuf};

use image::codecs::png::PngEncoder;
use image::{ImageEncoder, Rgb, RgbImage};
use imageproc::drawing::draw_filled_rect_mut;
use imageproc::rect::Rect;

use super::shard::{self, IndexEntry, ShardIndex, io_err};
use super::{RenderError, Result};
use contract::layout::shard_set;

/// Checksum status of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardStatus {
    /// The file matches its recorded size and blake3.
    Ok,
    /// The file is listed but absent.
    Missing,
    /// The file's size or blake3 differs from the record (truncated, corrupted, or rewritten
    /// without re-indexing).
    DigestMismatch,
    /// The file's safetensors header cannot be read.
    Unreadable(String),
}

/// One shard in an [`InspectReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCheck {
    /// File name.
    pub file: String,
    /// Sample count on record.
    pub samples: u64,
    /// Size on disk (0 when missing).
    pub bytes: u64,
    /// Checksum status.
    pub status: ShardStatus,
}

/// The state of one shard set directory.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectReport {
    /// The directory.
    pub dir: PathBuf,
    /// Its `index.json`, if present and readable (otherwise the sidecars are checked).
    pub index: Option<ShardIndex>,
    /// Every shard on record, in id order.
    pub shards: Vec<ShardCheck>,
    /// Samples on record.
    pub total_samples: u64,
    /// Bytes on disk over all shards.
    pub total_bytes: u64,
}

impl InspectReport {
    /// Whether every shard is present and matches its digest.
    pub fn all_ok(&self) -> bool {
        self.shards.iter().all(|s| s.status == ShardStatus::Ok)
    }
}

/// The records to check: `index.json` when present, else every sidecar.
fn records(dir: &Path) -> Result<(Option<ShardIndex>, Vec<IndexEntry>)> {
    if let Ok(bytes) = fs::read(dir.join(shard_set::INDEX)) {
        let index: ShardIndex =
            serde_json::from_slice(&bytes).map_err(|source| RenderError::Json {
                path: dir.join(shard_set::INDEX),
                source,
            })?;
        let entries = index.shards.clone();
        return Ok((Some(index), entries));
    }
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("shard-") && n.ends_with(".json"))
        .collect();
    names.sort();
    let entries = names
        .iter()
        .filter_map(|n| shard::read_sidecar(&dir.join(n)))
        .map(|sc| IndexEntry {
            file: sc.file,
            samples: sc.samples.len() as u64,
            bytes: sc.bytes,
            blake3: sc.blake3,
        })
        .collect();
    Ok((None, entries))
}

/// Check every shard of the set in `shard_dir` against its recorded size and blake3.
pub fn inspect(shard_dir: &Path) -> Result<InspectReport> {
    let (index, entries) = records(shard_dir)?;
    let mut shards = Vec::with_capacity(entries.len());
    for e in entries {
        let path = shard_dir.join(&e.file);
        let (bytes, status) = if !path.exists() {
            (0, ShardStatus::Missing)
        } else {
            let (digest, bytes) = shard::file_digest(&path)?;
            let status = if digest != e.blake3 || bytes != e.bytes {
                ShardStatus::DigestMismatch
            } else {
                match read_header(&path) {
                    Ok(_) => ShardStatus::Ok,
                    Err(reason) => ShardStatus::Unreadable(reason),
                }
            };
            (bytes, status)
        };
        shards.push(ShardCheck {
            file: e.file,
            samples: e.samples,
            bytes,
            status,
        });
    }
    Ok(InspectReport {
        dir: shard_dir.to_owned(),
        total_samples: shards.iter().map(|s| s.samples).sum(),
        total_bytes: shards.iter().map(|s| s.bytes).sum(),
        index,
        shards,
    })
}

fn read_header(path: &Path) -> std::result::Result<(), String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    safetensors::SafeTensors::read_metadata(&bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A decoded shard: crop side, flip permutation and the samples' tensors.
struct ShardData {
    size: usize,
    points: usize,
    flip_permutation: Vec<usize>,
    images: Vec<u8>,
    landmarks: Vec<f32>,
    in_crop: Vec<u8>,
}

fn load_shard(path: &Path) -> Result<ShardData> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let bad = |reason: String| RenderError::Safetensors {
        path: path.to_owned(),
        reason,
    };
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let flip_permutation: Vec<usize> = meta
        .get("flip_permutation")
        .and_then(|p| serde_json::from_str(p).ok())
        .ok_or_else(|| bad("missing flip_permutation metadata".to_owned()))?;
    let images = st.tensor("images").map_err(|e| bad(e.to_string()))?;
    let landmarks = st.tensor("landmarks").map_err(|e| bad(e.to_string()))?;
    let in_crop = st.tensor("in_crop").map_err(|e| bad(e.to_string()))?;
    let (size, points) = match (images.shape(), landmarks.shape()) {
        ([_, s, _, 3], [_, l, 2]) => (*s, *l),
        _ => return Err(bad("unexpected tensor shapes".to_owned())),
    };
    let landmarks = landmarks
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(ShardData {
        size,
        points,
        flip_permutation,
        images: images.data().to_vec(),
        landmarks,
        in_crop: in_crop.data().to_vec(),
    })
}

/// Colour of landmark `i`: points whose mirror partner has a higher index (one side of the
/// face) green, a lower index (the other side) red, self-symmetric points (on the midline)
/// yellow.
fn point_colour(perm: &[usize], i: usize) -> [u8; 3] {
    match perm.get(i).map(|&p| p.cmp(&i)) {
        Some(std::cmp::Ordering::Greater) => [0, 255, 0],
        Some(std::cmp::Ordering::Less) => [255, 0, 0],
        _ => [255, 255, 0],
    }
}

/// Draw up to `max` samples of the set in `shard_dir` (in shard and row order) on a square grid
/// with their in-crop landmarks, and write it to `png`. Returns the number of samples drawn.
pub fn contact_sheet(shard_dir: &Path, png: &Path, max: usize) -> Result<usize> {
    let mut files: Vec<PathBuf> = fs::read_dir(shard_dir)
        .map_err(io_err(shard_dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    let mut tiles: Vec<(usize, RgbImage)> = Vec::new();
    for file in files {
        if tiles.len() >= max {
            break;
        }
        let shard = load_shard(&file)?;
        let (s, l) = (shard.size, shard.points);
        let n = shard.images.len() / (s * s * 3).max(1);
        for k in 0..n.min(max - tiles.len()) {
            let pixels = shard.images[k * s * s * 3..(k + 1) * s * s * 3].to_vec();
            let mut tile = RgbImage::from_raw(s as u32, s as u32, pixels)
                .expect("a shard crop holds S×S×3 bytes");
            let radius = (s / 64).max(1) as i32;
            for i in 0..l {
                let (x, y) = (
                    shard.landmarks[(k * l + i) * 2],
                    shard.landmarks[(k * l + i) * 2 + 1],
                );
                if shard.in_crop[k * l + i] == 0 || !x.is_finite() || !y.is_finite() {
                    continue;
                }
                // A (2r+1)² square on the pixel the point lies in.
                let (cx, cy) = (x.floor() as i32, y.floor() as i32);
                let square = Rect::at(cx - radius, cy - radius)
                    .of_size(2 * radius as u32 + 1, 2 * radius as u32 + 1);
                let colour = Rgb(point_colour(&shard.flip_permutation, i));
                draw_filled_rect_mut(&mut tile, square, colour);
            }
            tiles.push((s, tile));
        }
    }
    let Some(&(s, _)) = tiles.first() else {
        return Err(RenderError::Index {
            dir: shard_dir.to_owned(),
            reason: "no samples to draw".to_owned(),
        });
    };
    let cols = (tiles.len() as f64).sqrt().ceil() as usize;
    let rows = tiles.len().div_ceil(cols);
    let (w, h) = (cols * s, rows * s);
    let mut sheet = RgbImage::new(w as u32, h as u32);
    for (t, (_, tile)) in tiles.iter().enumerate() {
        let (ox, oy) = ((t % cols) * s, (t / cols) * s);
        image::imageops::replace(&mut sheet, tile, ox as i64, oy as i64);
    }
    let mut encoded = Vec::new();
    PngEncoder::new(&mut encoded)
        .write_image(&sheet, w as u32, h as u32, image::ExtendedColorType::Rgb8)
        .map_err(|source| RenderError::Image {
            path: png.to_owned(),
            source,
        })?;
    shard::write_atomic(png, &encoded)?;
    Ok(tiles.len())
}
