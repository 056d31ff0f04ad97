//! Two-stage inference (DESIGN.md "Training"): CNN-6 on the 64² crop of the face box →
//! landmarks in the image → rotation from the eye line and a new box → CNN-7 on the 128²
//! normalised crop → landmarks in the original image.
//!
//! Crops are made by the render stage's own geometry and warp (`stage1_matrix` with no
//! augmentation, `stage2_matrix` with no level-2 noise, `warp`), so an inference crop is the
//! replica-0 crop training saw. The networks run in `wingflow-train predict` (found beside this
//! executable): the crops are written as a small shard set in the shard format, and the
//! predictions come back as safetensors; `wingflow` itself never links libtorch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use contract::layout::shard_set;
use contract::scheme::{self, Scheme};
use faces::face::{BBox, landmarks_bbox};
use rayon::prelude::*;
use render::decode::SourceFile;
use render::engine::{decode_for_crops, source_size};
use render::geometry::{SquareBox, stage1_matrix, stage2_matrix};
use render::shard::{
    FORMAT_VERSION, IndexEntry, RenderedCrop, ShardIndex, ShardLayout, shard_file_name,
};
use render::shard_file::BlockPool;
use render::warp::warp;
use render::{Affine, Augmentation, BoxRule, RenderParams};

use crate::trainer_bin::trainer_path;

/// The trained networks and how to run them.
#[derive(Debug, Clone)]
pub struct Models {
    /// CNN-6 weights (`…/last.safetensors`, with its `last.json` record beside it).
    pub stage1: PathBuf,
    /// CNN-7 weights; `None` stops after stage 1 (single-stage CNN-6).
    pub stage2: Option<PathBuf>,
    /// `wingflow-train --device` value (auto, cpu, cuda, cuda:N).
    pub device: String,
}

impl Models {
    /// The landmark scheme the stage-1 network was trained on (from the record beside its
    /// weights); the stage-2 network, when given, must agree.
    pub fn scheme(&self) -> Result<&'static Scheme> {
        let s1 = checkpoint_scheme(&self.stage1)?;
        if let Some(stage2) = &self.stage2 {
            let s2 = checkpoint_scheme(stage2)?;
            ensure!(
                s1 == s2,
                "stage 1 was trained on scheme {s1} but stage 2 on {s2}"
            );
        }
        Ok(scheme::by_name(&s1)?)
    }
}

/// The scheme named in the training record beside a weights file (`x.safetensors` → `x.json`).
fn checkpoint_scheme(weights: &Path) -> Result<String> {
    let record = weights.with_extension("json");
    let text = std::fs::read_to_string(&record).with_context(|| {
        format!(
            "cannot read {} (the training record beside the weights {})",
            record.display(),
            weights.display()
        )
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}", record.display()))?;
    value
        .get("scheme")
        .and_then(|s| s.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{}: no `scheme` field", record.display()))
}

/// One face to locate: its image and the square stage-1 box (before the box rule's
/// enlargement is applied: see [`face_box`]).
#[derive(Debug, Clone)]
pub struct FaceQuery {
    /// The image file.
    pub image: PathBuf,
    /// The stage-1 crop box in image pixels (already enlarged).
    pub crop_box: SquareBox,
}

/// The stage-1 crop box for a user's face box, by the render parameters' box rule: the box is
/// taken as the landmarks' box (the default rule) or as an annotation box, made square and
/// enlarged by the matching factor, exactly as the render stage does for training crops.
pub fn face_box(b: &BBox, params: &RenderParams) -> SquareBox {
    let enlarge = match params.box_rule {
        BoxRule::Landmarks => params.box_enlarge,
        BoxRule::Annotation => params.annotation_box_enlarge,
    };
    SquareBox::around(b, enlarge)
}

/// The landmarks found for one face, in original image coordinates (internal pixel
/// convention: the top-left pixel's centre is (0.5, 0.5)).
#[derive(Debug, Clone, PartialEq)]
pub struct FacePrediction {
    /// Stage-1 (CNN-6) landmarks, x0, y0, x1, y1, ….
    pub stage1: Vec<f32>,
    /// Final landmarks: stage 2's when it ran for this face, else stage 1's.
    pub landmarks: Vec<f32>,
    /// Whether stage 2 ran (it does not when the stage-1 landmarks give a degenerate box).
    pub refined: bool,
}

/// Map crop coordinates back to the image through the inverse of the crop matrix `m`.
pub fn crop_to_image(m: &Affine, crop_xy: &[f32]) -> Option<Vec<f32>> {
    let inv = m.inverse()?;
    Some(
        crop_xy
            .chunks_exact(2)
            .flat_map(|p| {
                let (x, y) = inv.apply(f64::from(p[0]), f64::from(p[1]));
                [x as f32, y as f32]
            })
            .collect(),
    )
}

/// Map image coordinates into a crop through `m`.
pub fn image_to_crop(m: &Affine, xy: &[f32]) -> Vec<f32> {
    xy.chunks_exact(2)
        .flat_map(|p| {
            let (x, y) = m.apply(f64::from(p[0]), f64::from(p[1]));
            [x as f32, y as f32]
        })
        .collect()
}

/// The stage-2 crop matrix for stage-1 landmarks in image coordinates: the render stage's
/// `stage2_matrix` with no stage-2 noise. `None` when the landmarks give a degenerate box.
pub fn stage2_matrix_for(
    landmarks: &[f32],
    scheme: &Scheme,
    params: &RenderParams,
) -> Option<Affine> {
    let b = landmarks_bbox(landmarks)?;
    stage2_matrix(
        landmarks,
        &b,
        scheme,
        &Augmentation::identity(),
        params.box_enlarge,
        params.stage2_size,
    )
}

/// Decode `image` and warp one crop per matrix (same order), decoding exactly as the render
/// stage does for training shards (reduced-resolution region decodes when
/// [`RenderParams::reduced_decode`] allows them), so the network sees pixels made the same way.
fn render_crops(
    image: &Path,
    matrices: &[Affine],
    size: u32,
    params: &RenderParams,
) -> Result<Vec<Vec<u8>>> {
    let file = SourceFile::read(image)?.with_max_pixels(params.max_image_pixels);
    let (dims, full) = source_size(&file)?;
    let crops: Vec<(Affine, u32)> = matrices.iter().map(|&m| (m, size)).collect();
    let (mut pyramids, serving) = decode_for_crops(&file, full, dims, &crops, params)?;
    matrices
        .iter()
        .zip(serving)
        .map(|(m, serve)| {
            serve
                .and_then(|i| pyramids.get_mut(i))
                .and_then(|pyramid| warp(pyramid, m, size, params.border))
                .with_context(|| format!("{}: degenerate crop matrix {m:?}", image.display()))
        })
        .collect()
}

/// Render the crops of `jobs` (query index, matrix), decoding each image once, in parallel.
fn crops_for(
    queries: &[FaceQuery],
    jobs: &[(usize, Affine)],
    size: u32,
    params: &RenderParams,
) -> Result<Vec<Vec<u8>>> {
    let mut by_image: BTreeMap<&Path, Vec<usize>> = BTreeMap::new();
    for (k, (q, _)) in jobs.iter().enumerate() {
        by_image
            .entry(queries[*q].image.as_path())
            .or_default()
            .push(k);
    }
    let groups: Vec<(&Path, Vec<usize>)> = by_image.into_iter().collect();
    let rendered: Vec<Vec<(usize, Vec<u8>)>> = groups
        .par_iter()
        .map(|(image, ks)| {
            let ms: Vec<Affine> = ks.iter().map(|&k| jobs[k].1).collect();
            let crops = render_crops(image, &ms, size, params)?;
            Ok(ks.iter().copied().zip(crops).collect())
        })
        .collect::<Result<_>>()?;
    let mut out = vec![Vec::new(); jobs.len()];
    for (k, crop) in rendered.into_iter().flatten() {
        out[k] = crop;
    }
    Ok(out)
}

/// Write `crops` (S×S×3 each) as a one-shard set in `dir`, in the shard format the render stage
/// writes, with `sample_index` = position. Landmarks are unknown: NaN, not visible.
pub fn write_crop_set(
    dir: &Path,
    scheme: &Scheme,
    size: u32,
    crops: &[Vec<u8>],
    config_digest: &str,
) -> Result<()> {
    const SPLIT: &str = "predict";
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let l = scheme.num_points();
    let perm: Vec<String> = scheme
        .flip_permutation
        .iter()
        .map(|i| i.to_string())
        .collect();
    let metadata = BTreeMap::from([
        ("format_version".to_owned(), FORMAT_VERSION.to_string()),
        ("scheme".to_owned(), scheme.name.to_owned()),
        ("crop_size".to_owned(), size.to_string()),
        ("split".to_owned(), SPLIT.to_owned()),
        (
            "flip_permutation".to_owned(),
            format!("[{}]", perm.join(",")),
        ),
    ]);
    let layout = ShardLayout::new(crops.len(), size as usize, l, false, &metadata)?;
    let file = shard_file_name(0);
    let path = dir.join(&file);
    let indices: Vec<i64> = (0..crops.len() as i64).collect();
    let pool = BlockPool::default();
    let shard = layout.create(&path, &indices, &pool)?;
    for (row, crop) in crops.iter().enumerate() {
        let sample = RenderedCrop {
            image: crop.clone(),
            landmarks: vec![f32::NAN; 2 * l],
            visible: vec![0; l],
            occluded: vec![0; l],
            in_crop: vec![0; l],
        };
        layout.write_sample(&shard, &pool, row, &sample)?;
    }
    let (blake3, bytes) = shard.finish()?;
    let index = ShardIndex {
        format_version: FORMAT_VERSION,
        scheme: scheme.name.to_owned(),
        crop_size: size,
        split: SPLIT.to_owned(),
        total_samples: crops.len() as u64,
        config_digest: config_digest.to_owned(),
        wingflow_version: format!("wingflow {} (predict)", env!("CARGO_PKG_VERSION")),
        shards: vec![IndexEntry {
            file,
            samples: crops.len() as u64,
            bytes,
            blake3,
        }],
        augmentation_epochs: 1,
    };
    let json = serde_json::to_vec_pretty(&index)?;
    manifests::write_atomic(dir.join(shard_set::INDEX), &json)
        .with_context(|| format!("cannot write {}", dir.join(shard_set::INDEX).display()))?;
    Ok(())
}

/// Run `wingflow-train predict` on the set in `dir` and return the landmarks per sample index
/// (crop pixels, L×2 values each).
fn run_network(
    weights: &Path,
    dir: &Path,
    device: &str,
    num_points: usize,
    count: usize,
) -> Result<Vec<Vec<f32>>> {
    let out = dir.join("predictions.safetensors");
    let trainer = trainer_path()?;
    let output = Command::new(&trainer)
        .arg("predict")
        .arg("--checkpoint")
        .arg(weights)
        .arg("--shards")
        .arg(dir)
        .arg("--out")
        .arg(&out)
        .args(["--device", device])
        .output()
        .with_context(|| format!("cannot start {}", trainer.display()))?;
    if !output.status.success() {
        bail!(
            "{} predict failed ({}):\n{}",
            trainer.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    read_predictions(&out, num_points, count)
}

/// Read a `wingflow-train predict` file: landmarks per sample index `0..count`.
fn read_predictions(path: &Path, num_points: usize, count: usize) -> Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not safetensors", path.display()))?;
    let lm = st
        .tensor("landmarks")
        .with_context(|| format!("{}: no `landmarks`", path.display()))?;
    let si = st
        .tensor("sample_index")
        .with_context(|| format!("{}: no `sample_index`", path.display()))?;
    ensure!(
        lm.dtype() == safetensors::Dtype::F32
            && lm.shape() == [count, num_points, 2]
            && si.dtype() == safetensors::Dtype::I64
            && si.shape() == [count],
        "{}: landmarks {:?} {:?} / sample_index {:?} {:?}, expected F32 [{count}, {num_points}, 2] / I64 [{count}]",
        path.display(),
        lm.dtype(),
        lm.shape(),
        si.dtype(),
        si.shape()
    );
    let values: Vec<f32> = lm
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut out = vec![Vec::new(); count];
    for (row, c) in si.data().chunks_exact(8).enumerate() {
        let index = i64::from_le_bytes(c.try_into().expect("8-byte chunk"));
        let slot = usize::try_from(index)
            .ok()
            .filter(|&i| i < count)
            .with_context(|| format!("{}: sample_index {index} out of range", path.display()))?;
        out[slot] = values[row * 2 * num_points..(row + 1) * 2 * num_points].to_vec();
    }
    ensure!(
        out.iter().all(|v| !v.is_empty()),
        "{}: a sample index is missing",
        path.display()
    );
    Ok(out)
}

/// Locate the landmarks of every query: stage 1, then (when `models.stage2` is set) stage 2.
/// `work` is an empty scratch folder for the temporary shard sets.
pub fn predict_faces(
    queries: &[FaceQuery],
    models: &Models,
    params: &RenderParams,
    work: &Path,
) -> Result<Vec<FacePrediction>> {
    let scheme = models.scheme()?;
    if queries.is_empty() {
        return Ok(Vec::new());
    }
    let l = scheme.num_points();
    let digest = params.digest();
    let stage1: Vec<(usize, Affine)> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            ensure!(
                q.crop_box.side > 0.0 && q.crop_box.side.is_finite(),
                "{}: the face box has no area",
                q.image.display()
            );
            Ok((
                i,
                stage1_matrix(&q.crop_box, &Augmentation::identity(), params.stage1_size),
            ))
        })
        .collect::<Result<_>>()?;
    let crops = crops_for(queries, &stage1, params.stage1_size, params)?;
    let dir1 = work.join("stage1");
    write_crop_set(&dir1, scheme, params.stage1_size, &crops, &digest)?;
    let raw1 = run_network(&models.stage1, &dir1, &models.device, l, queries.len())?;
    let mut out: Vec<FacePrediction> = stage1
        .iter()
        .zip(&raw1)
        .map(|((_, m), xy)| {
            let img = crop_to_image(m, xy).context("singular stage-1 crop matrix")?;
            Ok(FacePrediction {
                stage1: img.clone(),
                landmarks: img,
                refined: false,
            })
        })
        .collect::<Result<_>>()?;
    let Some(stage2_weights) = &models.stage2 else {
        return Ok(out);
    };
    let stage2: Vec<(usize, Affine)> = out
        .iter()
        .enumerate()
        .filter_map(|(i, p)| stage2_matrix_for(&p.stage1, scheme, params).map(|m| (i, m)))
        .collect();
    if stage2.is_empty() {
        return Ok(out);
    }
    let crops = crops_for(queries, &stage2, params.stage2_size, params)?;
    let dir2 = work.join("stage2");
    write_crop_set(&dir2, scheme, params.stage2_size, &crops, &digest)?;
    let raw2 = run_network(stage2_weights, &dir2, &models.device, l, stage2.len())?;
    for ((i, m), xy) in stage2.iter().zip(&raw2) {
        out[*i].landmarks = crop_to_image(m, xy).context("singular stage-2 crop matrix")?;
        out[*i].refined = true;
    }
    Ok(out)
}

/// A scratch folder removed when dropped.
pub fn scratch_dir(parent: Option<&Path>) -> Result<tempfile::TempDir> {
    let builder = tempfile::Builder::new()
        .prefix(".wingflow-predict-")
        .to_owned();
    match parent {
        Some(p) => {
            std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))?;
            builder.tempdir_in(p)
        }
        None => builder.tempdir(),
    }
    .context("cannot create a scratch folder")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stage1_crop_round_trips(
            x in -50.0f32..500.0, y in -50.0f32..500.0, w in 5.0f32..400.0, h in 5.0f32..400.0,
            px in 0.0f32..1.0, py in 0.0f32..1.0,
        ) {
            let params = RenderParams::default();
            let sq = face_box(&BBox { x, y, w, h }, &params);
            let m = stage1_matrix(&sq, &Augmentation::identity(), params.stage1_size);
            let p = [x + px * w, y + py * h];
            let back = crop_to_image(&m, &image_to_crop(&m, &p)).unwrap();
            prop_assert!((back[0] - p[0]).abs() < 1e-3 && (back[1] - p[1]).abs() < 1e-3);
        }

        #[test]
        fn stage2_crop_round_trips_and_levels_the_eyes(
            roll in -40.0f64..40.0, cx in 100.0f64..300.0, cy in 100.0f64..300.0,
            scale in 0.5f64..3.0,
        ) {
            let scheme = scheme::by_name("ibug68").unwrap();
            // A face-like shape: ibug68 mean-ish points from a 3×3 grid pattern rotated by
            // `roll` (only the eyes and the spread matter to the geometry).
            let shape: Vec<f32> = (0..68)
                .flat_map(|i| {
                    let (u, v) = (((i * 7) % 13) as f64 - 6.0, ((i * 5) % 11) as f64 - 5.0);
                    let (u, v) = if (36..42).contains(&i) {
                        (-8.0 + (i - 36) as f64 * 0.5, -4.0)
                    } else if (42..48).contains(&i) {
                        (6.0 + (i - 42) as f64 * 0.5, -4.0)
                    } else {
                        (u, v)
                    };
                    let (s, c) = roll.to_radians().sin_cos();
                    [
                        (cx + scale * (c * u - s * v)) as f32,
                        (cy + scale * (s * u + c * v)) as f32,
                    ]
                })
                .collect();
            let params = RenderParams::default();
            let m = stage2_matrix_for(&shape, scheme, &params).unwrap();
            let crop = image_to_crop(&m, &shape);
            let back = crop_to_image(&m, &crop).unwrap();
            for (a, b) in back.iter().zip(&shape) {
                prop_assert!((a - b).abs() < 1e-3);
            }
            let eye = |pts: &[f32], idx: &[usize]| {
                let n = idx.len() as f32;
                (
                    idx.iter().map(|&i| pts[2 * i]).sum::<f32>() / n,
                    idx.iter().map(|&i| pts[2 * i + 1]).sum::<f32>() / n,
                )
            };
            let (l, r) = (eye(&crop, &scheme.left_eye), eye(&crop, &scheme.right_eye));
            prop_assert!((l.1 - r.1).abs() < 1e-2, "eye line not level: {l:?} {r:?}");
            prop_assert!(l.0 < r.0);
            // Every point lies inside the 128² crop (the box is enlarged ×1.25).
            prop_assert!(crop.iter().all(|&v| (0.0..128.0).contains(&v)));
        }
    }

    #[test]
    fn box_rule_makes_a_square_enlarged_box() {
        let params = RenderParams::default();
        let sq = face_box(
            &BBox {
                x: 10.0,
                y: 20.0,
                w: 40.0,
                h: 80.0,
            },
            &params,
        );
        assert_eq!((sq.cx, sq.cy, sq.side), (30.0, 60.0, 100.0));
        let m = stage1_matrix(&sq, &Augmentation::identity(), 64);
        let near = |(x, y): (f64, f64), (u, v): (f64, f64)| (x - u).abs() + (y - v).abs() < 1e-9;
        assert!(near(m.apply(-20.0, 10.0), (0.0, 0.0)));
        assert!(near(m.apply(80.0, 110.0), (64.0, 64.0)));
    }

    #[test]
    fn crop_set_is_read_back_in_the_shard_format() {
        let dir = tempfile::tempdir().unwrap();
        let scheme = scheme::by_name("aflw19").unwrap();
        let crops: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 16 * 16 * 3]).collect();
        write_crop_set(dir.path(), scheme, 16, &crops, "digest").unwrap();
        let index: ShardIndex =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!((index.total_samples, index.crop_size), (3, 16));
        let bytes = std::fs::read(dir.path().join(&index.shards[0].file)).unwrap();
        assert_eq!(bytes.len() as u64, index.shards[0].bytes);
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let images = st.tensor("images").unwrap();
        assert_eq!(images.shape(), [3, 16, 16, 3]);
        assert!(
            images.data()[16 * 16 * 3..2 * 16 * 16 * 3]
                .iter()
                .all(|&v| v == 1)
        );
        assert_eq!(st.tensor("sample_index").unwrap().data()[8], 1);
    }
}
