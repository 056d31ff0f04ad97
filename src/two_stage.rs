//! Two-stage inference (DESIGN.md "Training"): CNN-6 on the 64² crop of the face box →
//! landmarks in the image → rotation from the eye line and a new box → CNN-7 on the 128²
//! normalised crop → landmarks in the original image. Also the evaluation of a split through
//! exactly this path, in original image coordinates.
//!
//! Crops are made by the render stage's own geometry and warp (`stage1_matrix` with no
//! augmentation, `stage2_matrix` with no stage-2 noise, `warp`), so an inference crop is the
//! replica-0 crop training saw. The networks run in `wingflow-train predict` (found beside this
//! executable): the crops are written as a small shard set in the shard format, and the
//! predictions come back as safetensors; `wingflow` itself never links libtorch.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use rayon::prelude::*;
use serde::Serialize;
use stages::face::{BBox, FaceRecord, landmarks_bbox};
use stages::faces_table::read_faces_parquet;
use stages::formats::pts::write_pts;
use stages::plan_table::{BalanceSummary, read_plan_parquet};
use stages::render::decode::SourceFile;
use stages::render::engine::{decode_for_crops, source_size};
use stages::render::geometry::{SquareBox, stage1_box, stage1_matrix, stage2_matrix};
use stages::render::shard::{
    FORMAT_VERSION, IndexEntry, RenderedCrop, ShardIndex, ShardLayout, file_digest, shard_file_name,
};
use stages::render::warp::warp;
use stages::render::{Affine, Augmentation, BoxRule, RenderParams};
use stages::scheme::{self, Scheme};

use crate::ced::{CedSeries, plot_ced};
use crate::metrics::{ErrorSummary, face_nme, normaliser_for, points, sorted_quantile};
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
    let file = SourceFile::read(image)?;
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
    let layout = ShardLayout::new(crops.len(), size as usize, l, &metadata)?;
    let file = shard_file_name(0);
    let path = dir.join(&file);
    let indices: Vec<i64> = (0..crops.len() as i64).collect();
    layout.create(&path, &indices)?;
    for (row, crop) in crops.iter().enumerate() {
        let sample = RenderedCrop {
            image: crop.clone(),
            landmarks: vec![f32::NAN; 2 * l],
            visible: vec![0; l],
            in_crop: vec![0; l],
        };
        layout.write_sample(&path, row, &sample)?;
    }
    let (blake3, bytes) = file_digest(&path)?;
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
    };
    let json = serde_json::to_vec_pretty(&index)?;
    manifests::write_atomic(dir.join("index.json"), &json)
        .with_context(|| format!("cannot write {}", dir.join("index.json").display()))?;
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

// ---------------------------------------------------------------------------------------------
// Evaluation

/// One face's error in the evaluation report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaceError {
    /// The face's sample id.
    pub sample_id: String,
    /// Its source split.
    pub split: String,
    /// NME ×100, in original image coordinates.
    pub nme_percent: f64,
    /// Pose-histogram bin label, when known.
    pub pose_bin: Option<String>,
    /// |yaw| bin label, when the face has a yaw.
    pub yaw_bin: Option<String>,
}

/// The evaluation of a split through the two-stage path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TwoStageReport {
    /// The split asked for.
    pub split: String,
    /// The source splits it covers (`full` = `common` + `challenging` for 300W).
    pub member_splits: Vec<String>,
    /// CNN-6 weights.
    pub stage1_checkpoint: PathBuf,
    /// CNN-7 weights (`None`: single-stage evaluation).
    pub stage2_checkpoint: Option<PathBuf>,
    /// Normaliser used.
    pub normaliser: String,
    /// Faces without a usable normaliser (not scored).
    pub skipped: usize,
    /// Over every scored face.
    pub summary: ErrorSummary,
    /// Per pose bin of the balance stage's histogram (bins of |coefficient| or of the signed
    /// coefficient, with the training set's edges; outer bins take values beyond the edges).
    pub per_pose_bin: BTreeMap<String, ErrorSummary>,
    /// Per 15° bin of |yaw|, for faces whose yaw is known.
    pub per_yaw_bin: BTreeMap<String, ErrorSummary>,
    /// Every scored face.
    pub per_face: Vec<FaceError>,
    /// Where CNN-6's landmarks put the stage-2 crop, against the true landmarks' crop.
    pub stage2_normalisation: NormalisationError,
}

/// How far CNN-6's landmarks move the stage-2 crop from where the true landmarks put it: the
/// error the stage-2 noise of CNN-7's training crops stands for, and must cover. Percentiles
/// over the faces whose two crops both exist.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NormalisationError {
    /// Faces measured.
    pub faces: usize,
    /// |residual rotation| in degrees at the 50th, 75th, 90th and 99th percentiles.
    pub rotation_deg: [f64; 4],
    /// Shift of the crop centre, the larger of its two axes, as a fraction of the crop side (the
    /// unit of the stage-2 noise's shift), at the same percentiles.
    pub shift: [f64; 4],
    /// Crop side from CNN-6's landmarks over the side from the true ones (the unit of the
    /// stage-2 noise's scale), at the 1st, 10th, 90th and 99th percentiles.
    pub side_ratio: [f64; 4],
}

impl NormalisationError {
    /// From the stage-2 crop matrices of each face: (from CNN-6's landmarks, from the truth).
    pub fn new(pairs: &[(Affine, Affine)], size: u32) -> Self {
        let (mut rotation, mut shift, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        let centre = f64::from(size) / 2.0;
        for (predicted, truth) in pairs {
            // True-crop coordinates → predicted-crop coordinates.
            let Some(d) = truth.inverse().map(|t| predicted.after(&t)) else {
                continue;
            };
            let Some(back) = d.inverse() else { continue };
            let [a, _, _, c, _, _] = d.0;
            rotation.push(c.atan2(a).to_degrees().abs());
            let (x, y) = back.apply(centre, centre);
            shift.push((x - centre).abs().max((y - centre).abs()) / f64::from(size));
            ratio.push(1.0 / d.scale());
        }
        let at = |v: &mut Vec<f64>, qs: [f64; 4]| {
            v.sort_by(f64::total_cmp);
            qs.map(|q| sorted_quantile(v, q).unwrap_or(f64::NAN))
        };
        NormalisationError {
            faces: rotation.len(),
            rotation_deg: at(&mut rotation, [0.5, 0.75, 0.9, 0.99]),
            shift: at(&mut shift, [0.5, 0.75, 0.9, 0.99]),
            side_ratio: at(&mut ratio, [0.01, 0.1, 0.9, 0.99]),
        }
    }
}

impl std::fmt::Display for NormalisationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [r50, r75, r90, r99] = self.rotation_deg;
        let [s50, s75, s90, s99] = self.shift.map(|v| 100.0 * v);
        let [q1, q10, q90, q99] = self.side_ratio;
        write!(
            f,
            "stage-2 crop from CNN-6 vs truth ({} faces): |rotation| p50/75/90/99 \
             {r50:.1}/{r75:.1}/{r90:.1}/{r99:.1}°, shift {s50:.1}/{s75:.1}/{s90:.1}/{s99:.1} % of \
             the side, side ratio p1/10/90/99 {q1:.3}/{q10:.3}/{q90:.3}/{q99:.3}",
            self.faces
        )
    }
}

impl TwoStageReport {
    /// The per-face NMEs as fractions (for CED curves).
    pub fn nmes(&self) -> Vec<f64> {
        self.per_face
            .iter()
            .map(|f| f.nme_percent / 100.0)
            .collect()
    }

    /// Write the JSON report and a CED PNG (0–0.10).
    pub fn write(&self, json: &Path, ced_png: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        manifests::write_atomic(json, text.as_bytes())
            .with_context(|| format!("cannot write {}", json.display()))?;
        let label = if self.stage2_checkpoint.is_some() {
            "CNN-6/7"
        } else {
            "CNN-6"
        };
        plot_ced(
            ced_png,
            &format!("CED, {} ({label}, {})", self.split, self.normaliser),
            &[CedSeries {
                label: label.to_owned(),
                nmes: self.nmes(),
            }],
            0.10,
        )?;
        Ok(())
    }
}

/// The label of the pose bin holding `coefficient`, from the balance summary's edges.
pub fn pose_bin_label(summary: &BalanceSummary, coefficient: f64) -> Option<String> {
    let edges = &summary.bin_edges;
    if edges.len() < 2 || !coefficient.is_finite() {
        return None;
    }
    let v = if summary.histogram_of_absolute {
        coefficient.abs()
    } else {
        coefficient
    };
    let k = edges[1..edges.len() - 1].partition_point(|&e| e <= v);
    Some(format!("{k}: [{:.3}, {:.3}]", edges[k], edges[k + 1]))
}

/// The |yaw| bin label of a yaw in degrees (15° bins, the last one open).
pub fn yaw_bin_label(yaw: f32) -> Option<String> {
    if !yaw.is_finite() {
        return None;
    }
    let lo = ((yaw.abs() / 15.0).floor() as u32 * 15).min(60);
    Some(if lo >= 60 {
        "|yaw| ≥ 60".to_owned()
    } else {
        format!("|yaw| {lo:02}-{}", lo + 15)
    })
}

/// The source splits a split name stands for: a comma-separated list, `full` (= `common` +
/// `challenging` when there is no split called `full`), or one name.
fn member_splits(split: &str, present: &[&str]) -> Vec<String> {
    if split == "full" && !present.contains(&"full") {
        return ["common", "challenging"]
            .iter()
            .filter(|s| present.contains(s))
            .map(|s| s.to_string())
            .collect();
    }
    split.split(',').map(|s| s.trim().to_owned()).collect()
}

/// What [`evaluate_two_stage`] evaluates.
#[derive(Debug, Clone)]
pub struct EvalRequest<'a> {
    /// The output root: `faces.parquet`, and when present `plan.parquet` (split membership
    /// after the validation carve-out, pose coefficients) and `balance.json` (bin edges).
    pub out_root: &'a Path,
    /// The networks.
    pub models: &'a Models,
    /// The split (`test`, `common`, `challenging`, `full`, `val`, or a comma list).
    pub split: &'a str,
    /// NME normaliser (`None`: the scheme's).
    pub normaliser: Option<&'a str>,
    /// Render parameters the networks were trained with (crop sizes, box rule, border).
    pub params: &'a RenderParams,
}

/// Evaluate the two-stage model (or CNN-6 alone when `models.stage2` is `None`) on the faces
/// of a split, through [`predict_faces`] — the path `wingflow predict` takes — with the
/// stage-1 box made from each face's ground-truth landmarks by the training box rule, and the
/// NME computed in original image coordinates against `faces.parquet`.
pub fn evaluate_two_stage(req: &EvalRequest<'_>) -> Result<TwoStageReport> {
    let faces_path = req.out_root.join("faces.parquet");
    let faces = read_faces_parquet(&faces_path)
        .with_context(|| format!("cannot read {}", faces_path.display()))?;
    let plan_path = req.out_root.join("plan.parquet");
    // Without a plan the faces' own splits stand (no validation carve-out, no pose bins).
    let (split_of, coefficient_of): (HashMap<String, String>, HashMap<String, f32>) =
        if plan_path.exists() {
            let plan = read_plan_parquet(&plan_path)
                .with_context(|| format!("cannot read {}", plan_path.display()))?;
            let originals = plan.iter().filter(|r| r.replica == 0);
            (
                originals
                    .clone()
                    .map(|r| (r.sample_id.clone(), r.split.clone()))
                    .collect(),
                originals
                    .filter_map(|r| r.pose_coefficient.map(|c| (r.sample_id.clone(), c)))
                    .collect(),
            )
        } else {
            (
                faces
                    .iter()
                    .map(|f| (f.sample_id.clone(), f.split.clone()))
                    .collect(),
                HashMap::new(),
            )
        };
    let summary_path = req.out_root.join("balance.json");
    let balance: Option<BalanceSummary> = std::fs::read(&summary_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut present: Vec<&str> = split_of.values().map(String::as_str).collect();
    present.sort_unstable();
    present.dedup();
    let members = member_splits(req.split, &present);
    let chosen: Vec<&FaceRecord> = faces
        .iter()
        .filter(|f| {
            split_of
                .get(&f.sample_id)
                .is_some_and(|s| members.contains(s))
        })
        .collect();
    ensure!(
        !chosen.is_empty(),
        "no faces in split `{}` (splits present: {})",
        req.split,
        present.join(", ")
    );
    let scheme = req.models.scheme()?;
    ensure!(
        chosen.iter().all(|f| f.scheme == scheme.name),
        "the faces use scheme {}, the networks {}",
        chosen[0].scheme,
        scheme.name
    );
    let normaliser = normaliser_for(req.normaliser, scheme)?;
    let enlarge = match req.params.box_rule {
        BoxRule::Landmarks => req.params.box_enlarge,
        BoxRule::Annotation => req.params.annotation_box_enlarge,
    };
    let mut queries = Vec::with_capacity(chosen.len());
    for f in &chosen {
        let crop_box = stage1_box(f, req.params.box_rule, enlarge)
            .with_context(|| format!("{}: degenerate face box", f.sample_id))?;
        queries.push(FaceQuery {
            image: PathBuf::from(&f.image_path),
            crop_box,
        });
    }
    let work = scratch_dir(Some(req.out_root))?;
    let predictions = predict_faces(&queries, req.models, req.params, work.path())?;
    let mut per_face = Vec::new();
    let mut skipped = 0;
    let mut by_pose: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut by_yaw: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut crop_pairs = Vec::new();
    for (f, p) in chosen.iter().zip(&predictions) {
        if let (Some(predicted), Some(truth)) = (
            stage2_matrix_for(&p.stage1, scheme, req.params),
            stage2_matrix_for(&f.landmarks, scheme, req.params),
        ) {
            crop_pairs.push((predicted, truth));
        }
        let Some(nme) = face_nme(
            &points(&p.landmarks),
            &points(&f.landmarks),
            &f.visible,
            &normaliser,
        ) else {
            skipped += 1;
            continue;
        };
        let pose_bin = balance.as_ref().and_then(|b| {
            coefficient_of
                .get(&f.sample_id)
                .and_then(|&c| pose_bin_label(b, f64::from(c)))
        });
        let yaw_bin = f.yaw.and_then(yaw_bin_label);
        if let Some(b) = &pose_bin {
            by_pose.entry(b.clone()).or_default().push(nme);
        }
        if let Some(b) = &yaw_bin {
            by_yaw.entry(b.clone()).or_default().push(nme);
        }
        per_face.push(FaceError {
            sample_id: f.sample_id.clone(),
            split: split_of[&f.sample_id].clone(),
            nme_percent: 100.0 * nme,
            pose_bin,
            yaw_bin,
        });
    }
    let nmes: Vec<f64> = per_face.iter().map(|f| f.nme_percent / 100.0).collect();
    let summarise = |m: BTreeMap<String, Vec<f64>>| {
        m.into_iter()
            .map(|(k, v)| (k, ErrorSummary::new(&v)))
            .collect()
    };
    Ok(TwoStageReport {
        split: req.split.to_owned(),
        member_splits: members,
        stage1_checkpoint: req.models.stage1.clone(),
        stage2_checkpoint: req.models.stage2.clone(),
        normaliser: normaliser.to_string(),
        skipped,
        summary: ErrorSummary::new(&nmes),
        per_pose_bin: summarise(by_pose),
        per_yaw_bin: summarise(by_yaw),
        per_face,
        stage2_normalisation: NormalisationError::new(&crop_pairs, req.params.stage2_size),
    })
}

// ---------------------------------------------------------------------------------------------
// `wingflow predict`

/// Parse `x,y,w,h` (internal pixel convention).
pub fn parse_box(text: &str) -> Result<BBox> {
    let v: Vec<f32> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("box `{text}`: expected four numbers x,y,w,h"))?;
    ensure!(v.len() == 4, "box `{text}`: expected four numbers x,y,w,h");
    ensure!(
        v.iter().all(|x| x.is_finite()) && v[2] > 0.0 && v[3] > 0.0,
        "box `{text}`: width and height must be positive"
    );
    Ok(BBox {
        x: v[0],
        y: v[1],
        w: v[2],
        h: v[3],
    })
}

/// Read a list file: one face per line, `IMAGE X Y W H`; blank lines and `#` comments are
/// skipped; relative image paths are taken relative to the list's folder.
pub fn read_list(path: &Path) -> Result<Vec<(PathBuf, BBox)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            fields.len() == 5,
            "{}, line {}: expected `IMAGE X Y W H`, got {} fields",
            path.display(),
            i + 1,
            fields.len()
        );
        let b = parse_box(&fields[1..].join(","))
            .with_context(|| format!("{}, line {}", path.display(), i + 1))?;
        out.push((base.join(fields[0]), b));
    }
    ensure!(!out.is_empty(), "{}: no faces listed", path.display());
    Ok(out)
}

#[derive(Serialize)]
struct JsonFace<'a> {
    image: &'a Path,
    r#box: [f32; 4],
    refined: bool,
    landmarks: Vec<[f32; 2]>,
    stage1_landmarks: Vec<[f32; 2]>,
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    scheme: &'a str,
    coordinates: &'a str,
    faces: Vec<JsonFace<'a>>,
}

fn pairs(xy: &[f32]) -> Vec<[f32; 2]> {
    xy.chunks_exact(2).map(|p| [p[0], p[1]]).collect()
}

/// The JSON document `wingflow predict` writes.
pub fn predictions_json(
    scheme: &Scheme,
    faces: &[(PathBuf, BBox)],
    predictions: &[FacePrediction],
) -> Result<String> {
    let doc = JsonOutput {
        scheme: scheme.name,
        coordinates: "image pixels, continuous; the centre of the top-left pixel is (0.5, 0.5) \
                      (add 0.5 for 300W .pts values)",
        faces: faces
            .iter()
            .zip(predictions)
            .map(|((image, b), p)| JsonFace {
                image,
                r#box: [b.x, b.y, b.w, b.h],
                refined: p.refined,
                landmarks: pairs(&p.landmarks),
                stage1_landmarks: pairs(&p.stage1),
            })
            .collect(),
    };
    Ok(serde_json::to_string_pretty(&doc)?)
}

/// Draw the face boxes (yellow) and landmarks (green; stage 1 in red when refined) on a copy
/// of `image`, written as PNG.
pub fn draw_predictions(
    image: &Path,
    faces: &[(PathBuf, BBox)],
    predictions: &[FacePrediction],
    png: &Path,
) -> Result<()> {
    let mut rgb = image::open(image)
        .with_context(|| format!("cannot decode {}", image.display()))?
        .to_rgb8();
    let (w, h) = (rgb.width() as i64, rgb.height() as i64);
    let mut put = |x: i64, y: i64, c: [u8; 3]| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            rgb.put_pixel(x as u32, y as u32, image::Rgb(c));
        }
    };
    for ((_, b), p) in faces.iter().zip(predictions) {
        let (x0, y0) = (b.x.floor() as i64, b.y.floor() as i64);
        let (x1, y1) = ((b.x + b.w).floor() as i64, (b.y + b.h).floor() as i64);
        for x in x0..=x1 {
            put(x, y0, [255, 220, 0]);
            put(x, y1, [255, 220, 0]);
        }
        for y in y0..=y1 {
            put(x0, y, [255, 220, 0]);
            put(x1, y, [255, 220, 0]);
        }
        let r = (b.w.max(b.h) / 120.0).round().max(1.0) as i64;
        let mut dot = |xy: &[f32], c: [u8; 3], r: i64| {
            for q in xy.chunks_exact(2) {
                // Pixel (i, j) covers [i, i+1)×[j, j+1): the point lies in pixel floor(x).
                let (cx, cy) = (q[0].floor() as i64, q[1].floor() as i64);
                for dy in -r..=r {
                    for dx in -r..=r {
                        if dx * dx + dy * dy <= r * r {
                            put(cx + dx, cy + dy, c);
                        }
                    }
                }
            }
        };
        if p.refined {
            dot(&p.stage1, [230, 40, 40], (r - 1).max(0));
        }
        dot(&p.landmarks, [40, 230, 60], r);
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    rgb.write_to(&mut bytes, image::ImageFormat::Png)
        .with_context(|| format!("cannot encode {}", png.display()))?;
    manifests::write_atomic(png, bytes.get_ref())
        .with_context(|| format!("cannot write {}", png.display()))?;
    Ok(())
}

/// Arguments of `wingflow predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// The image (with --box); omit it with --list.
    #[arg(required_unless_present = "list", conflicts_with = "list")]
    pub image: Option<PathBuf>,
    /// The face box `x,y,w,h` in pixels (the landmarks' box under the default box rule; it is
    /// made square and enlarged ×1.25 as for training crops).
    #[arg(long = "box", value_name = "X,Y,W,H", required_unless_present = "list")]
    pub face_box: Option<String>,
    /// A list of faces, one per line: `IMAGE X Y W H`.
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// CNN-6 weights (a training run's `last.safetensors` or `best.safetensors`).
    #[arg(long, value_name = "W6")]
    pub stage1: PathBuf,
    /// CNN-7 weights; without it only stage 1 runs.
    #[arg(long, value_name = "W7")]
    pub stage2: Option<PathBuf>,
    /// Write the landmarks here: `.pts` (one face, 300W 1-based convention) or `.json`;
    /// default: JSON on stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Draw the boxes and landmarks on the image into this PNG (faces of one image only).
    #[arg(long, value_name = "PNG")]
    pub draw: Option<PathBuf>,
    /// Device for the networks: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Take the crop sizes, box rule and border from this configuration's `[render]` (they
    /// must be those the networks were trained with); default: the built-in render defaults.
    #[arg(long, value_name = "TOML")]
    pub config: Option<PathBuf>,
}

/// `wingflow predict`.
pub fn predict_command(args: &PredictArgs) -> Result<()> {
    let faces: Vec<(PathBuf, BBox)> = match (&args.list, &args.image, &args.face_box) {
        (Some(list), _, _) => read_list(list)?,
        (None, Some(image), Some(b)) => vec![(image.clone(), parse_box(b)?)],
        _ => bail!("give IMAGE --box X,Y,W,H, or --list FILE"),
    };
    let models = Models {
        stage1: args.stage1.clone(),
        stage2: args.stage2.clone(),
        device: args.device.clone(),
    };
    let params = match &args.config {
        Some(path) => crate::config::Config::load(path)?.render,
        None => RenderParams::default(),
    };
    let queries: Vec<FaceQuery> = faces
        .iter()
        .map(|(image, b)| FaceQuery {
            image: image.clone(),
            crop_box: face_box(b, &params),
        })
        .collect();
    let scheme = models.scheme()?;
    let work = scratch_dir(None)?;
    let predictions = predict_faces(&queries, &models, &params, work.path())?;
    match &args.out {
        Some(path)
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("pts")) =>
        {
            ensure!(
                predictions.len() == 1,
                "--out {}: a .pts file holds one face, but {} were predicted (use .json)",
                path.display(),
                predictions.len()
            );
            manifests::write_atomic(path, write_pts(&predictions[0].landmarks, 3).as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Some(path) => {
            let json = predictions_json(scheme, &faces, &predictions)?;
            manifests::write_atomic(path, json.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            let json = predictions_json(scheme, &faces, &predictions)?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{json}")?;
        }
    }
    if let Some(png) = &args.draw {
        let first = &faces[0].0;
        ensure!(
            faces.iter().all(|(image, _)| image == first),
            "--draw needs every face on one image"
        );
        draw_predictions(first, &faces, &predictions, png)?;
    }
    Ok(())
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
    fn normalisation_error_of_a_known_perturbation() {
        // The predicted crop is the true one rotated by 10° about its centre, scaled by 1/1.25
        // and shifted: the measure recovers the rotation, the side ratio and the shift.
        let size = 128;
        let truth = Affine([0.5, 0.0, -10.0, 0.0, 0.5, 4.0]);
        let c = f64::from(size) / 2.0;
        let about_centre = |m: Affine| {
            Affine::translation(c, c)
                .after(&m)
                .after(&Affine::translation(-c, -c))
        };
        let d = about_centre(Affine::rotation_deg(10.0).after(&Affine::scaling(1.25)));
        let d = Affine::translation(-6.4, 0.0).after(&d);
        let e = NormalisationError::new(&[(d.after(&truth), truth)], size);
        assert_eq!(e.faces, 1);
        assert!((e.rotation_deg[0] - 10.0).abs() < 1e-9, "{e:?}");
        assert!((e.side_ratio[0] - 0.8).abs() < 1e-9, "{e:?}");
        // The predicted centre sits 6.4 / 1.25 = 5.12 true-crop pixels away, turned by −10°:
        // its larger axis is 5.12·cos 10° of 128.
        let expected = 5.12 * 10f64.to_radians().cos() / 128.0;
        assert!((e.shift[0] - expected).abs() < 1e-9, "{e:?}");
        assert!(e.to_string().contains("1 faces"));
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

    #[test]
    fn bins_and_labels() {
        let summary = BalanceSummary {
            histogram_of_absolute: true,
            bin_edges: vec![0.0, 0.1, 0.2, 0.3],
            counts_before: vec![5, 3, 1],
            counts_after: vec![5, 6, 5],
            replication: vec![1, 2, 5],
            val_carved: 0,
            rows_per_split: vec![],
            bytes_per_sample_stage1: 0,
            bytes_per_sample_stage2: 0,
            target_shard_bytes: 1,
            shard_counts: stages::plan::ShardCounts {
                stage1: vec![],
                stage2: vec![],
            },
        };
        assert_eq!(
            pose_bin_label(&summary, -0.15).unwrap(),
            "1: [0.100, 0.200]"
        );
        assert!(pose_bin_label(&summary, 0.9).unwrap().starts_with("2:"));
        assert!(pose_bin_label(&summary, 0.0).unwrap().starts_with("0:"));
        assert_eq!(yaw_bin_label(-20.0).unwrap(), "|yaw| 15-30");
        assert_eq!(yaw_bin_label(75.0).unwrap(), "|yaw| ≥ 60");
        assert_eq!(
            member_splits("full", &["challenging", "common", "train"]),
            ["common", "challenging"]
        );
        assert_eq!(member_splits("a,b", &[]), ["a", "b"]);
    }

    #[test]
    fn boxes_and_lists_parse_with_line_numbers() {
        assert_eq!(
            parse_box("1,2,3,4").unwrap(),
            BBox {
                x: 1.0,
                y: 2.0,
                w: 3.0,
                h: 4.0
            }
        );
        assert!(parse_box("1,2,3").is_err());
        assert!(parse_box("1,2,0,4").is_err());
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("faces.txt");
        std::fs::write(&list, "# faces\na.jpg 1 2 30 40\n\nb.png 1 2 x 4\n").unwrap();
        let err = format!("{:#}", read_list(&list).unwrap_err());
        assert!(err.contains("line 4"), "{err}");
        std::fs::write(&list, "a.jpg 1 2 30 40\n").unwrap();
        assert_eq!(read_list(&list).unwrap()[0].0, dir.path().join("a.jpg"));
    }
}
