//! The evaluation of a split through exactly the inference path ([`crate::inference`]), in
//! original image coordinates: NME per face, per split, per pose bin and |yaw| bin, CED plots,
//! and how far CNN-6's level-2 crop is from the one the true landmarks give.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use contract::layout::Layout;
use faces::face::FaceRecord;
use faces::faces_table::read_faces_parquet;
use render::geometry::{stage1_box, stage1_matrix};
use render::{Affine, Augmentation, BoxRule, RenderParams};
use serde::{Deserialize, Serialize};
use shapes::plan_table::{BalanceSummary, read_plan_parquet};

use crate::inference::{
    FaceQuery, Models, crop_to_image, image_to_crop, predict_faces, scratch_dir, stage2_matrix_for,
};
use contract::metrics::{ErrorSummary, Normaliser, face_nme, points, sorted_quantile};
use report::ced::{CedSeries, plot_ced};
use shapes::balance::TRAIN;

/// One face's error in the evaluation report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The mean-shape baseline on the same faces ([`mean_shape_baseline`]): what a network
    /// has to beat to have learnt anything.
    pub mean_shape: ErrorSummary,
    /// Per pose bin of the balance stage's histogram (bins of |coefficient| or of the signed
    /// coefficient, with the training set's edges; outer bins take values beyond the edges).
    pub per_pose_bin: BTreeMap<String, ErrorSummary>,
    /// Per 15° bin of |yaw|, for faces whose yaw is known.
    pub per_yaw_bin: BTreeMap<String, ErrorSummary>,
    /// Every scored face.
    pub per_face: Vec<FaceError>,
    /// Where CNN-6's landmarks put the stage-2 crop, against the true landmarks' crop.
    pub stage2_normalisation: NormalisationError,
    /// The same predictions under the scheme's other named normalisers (e.g. `inter-pupil`
    /// beside the default `inter-ocular`), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other_normalisers: BTreeMap<String, OtherNormaliser>,
}

/// A split's errors under one more normaliser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtherNormaliser {
    /// The normaliser, written out.
    pub normaliser: String,
    /// Over every face it can score.
    pub summary: ErrorSummary,
    /// The mean-shape baseline under it.
    pub mean_shape: ErrorSummary,
}

/// How far CNN-6's landmarks move the stage-2 crop from where the true landmarks put it: the
/// error the stage-2 noise of CNN-7's training crops stands for, and must cover. Percentiles
/// over the faces whose two crops both exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    let faces_path = Layout::new(req.out_root).faces();
    let faces = read_faces_parquet(&faces_path)
        .with_context(|| format!("cannot read {}", faces_path.display()))?;
    let plan_path = Layout::new(req.out_root).plan();
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
    let summary_path = Layout::new(req.out_root).balance_summary();
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
    let normaliser = contract::scheme::resolve_normaliser(scheme.name, req.normaliser)?;
    // The scheme's other named normalisers (box-based ones left out: they are not a landmark
    // normaliser anyone reports), each once.
    let mut others: Vec<(&str, Normaliser)> = Vec::new();
    for name in scheme.normaliser_names() {
        if name.starts_with("box-") {
            continue;
        }
        let n = scheme.resolve_normaliser(Some(name))?;
        if n != normaliser && others.iter().all(|(_, o)| *o != n) {
            others.push((name, n));
        }
    }
    let mut other_nmes: Vec<Vec<f64>> = vec![Vec::new(); others.len()];
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
        for ((_, other), nmes) in others.iter().zip(&mut other_nmes) {
            nmes.extend(face_nme(
                &points(&p.landmarks),
                &points(&f.landmarks),
                &f.visible,
                other,
            ));
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
    // The mean shape of the faces trained on: the plan's `train` split, carve-outs excluded.
    let train: Vec<&FaceRecord> = faces
        .iter()
        .filter(|f| split_of.get(&f.sample_id).is_some_and(|s| s == TRAIN))
        .collect();
    let every: Vec<&Normaliser> = std::iter::once(&normaliser)
        .chain(others.iter().map(|(_, n)| n))
        .collect();
    let mut mean_shapes = mean_shape_baseline(&train, &chosen, req.params, &every)?.into_iter();
    let mean_shape = mean_shapes.next().context("no mean-shape summary")?;
    let mut other_normalisers = BTreeMap::new();
    for (((name, other), nmes), mean_shape) in others.iter().zip(&other_nmes).zip(mean_shapes) {
        other_normalisers.insert(
            (*name).to_owned(),
            OtherNormaliser {
                normaliser: other.to_string(),
                summary: ErrorSummary::new(nmes),
                mean_shape,
            },
        );
    }
    Ok(TwoStageReport {
        split: req.split.to_owned(),
        member_splits: members,
        stage1_checkpoint: req.models.stage1.clone(),
        stage2_checkpoint: req.models.stage2.clone(),
        normaliser: normaliser.to_string(),
        skipped,
        summary: ErrorSummary::new(&nmes),
        mean_shape,
        per_pose_bin: summarise(by_pose),
        per_yaw_bin: summarise(by_yaw),
        per_face,
        stage2_normalisation: NormalisationError::new(&crop_pairs, req.params.stage2_size),
        other_normalisers,
    })
}

/// The mean-shape baseline: the mean of the training faces' (`train`) landmarks in their
/// stage-1 crops, placed in each test face's stage-1 crop and mapped back to the image.
/// One summary per normaliser of `normalisers` (the mean shape and its placements are
/// computed once for all of them).
pub fn mean_shape_baseline(
    train: &[&FaceRecord],
    test: &[&FaceRecord],
    params: &RenderParams,
    normalisers: &[&Normaliser],
) -> Result<Vec<ErrorSummary>> {
    let matrix = |f: &FaceRecord| {
        stage1_box(f, params.box_rule, params.box_enlarge)
            .map(|b| stage1_matrix(&b, &Augmentation::identity(), params.stage1_size))
    };
    let mut sum: Vec<f64> = Vec::new();
    let mut count: Vec<f64> = Vec::new();
    for f in train {
        let Some(m) = matrix(f) else { continue };
        let crop = image_to_crop(&m, &f.landmarks);
        if sum.is_empty() {
            sum = vec![0.0; crop.len()];
            count = vec![0.0; crop.len()];
        }
        for (k, v) in crop.iter().enumerate() {
            if v.is_finite() {
                sum[k] += f64::from(*v);
                count[k] += 1.0;
            }
        }
    }
    ensure!(!sum.is_empty(), "no training faces for the mean shape");
    let mean: Vec<f32> = sum
        .iter()
        .zip(&count)
        .map(|(s, c)| (s / c.max(1.0)) as f32)
        .collect();
    let mut nmes = vec![Vec::new(); normalisers.len()];
    for f in test {
        let Some(m) = matrix(f) else { continue };
        let Some(pred) = crop_to_image(&m, &mean) else {
            continue;
        };
        let (pred, truth) = (points(&pred), points(&f.landmarks));
        for (normaliser, nmes) in normalisers.iter().zip(&mut nmes) {
            nmes.extend(face_nme(&pred, &truth, &f.visible, normaliser));
        }
    }
    Ok(nmes.iter().map(|n| ErrorSummary::new(n)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bins_and_labels() {
        let summary = BalanceSummary {
            histogram_of_absolute: true,
            bin_edges: vec![0.0, 0.1, 0.2, 0.3],
            counts_before: vec![5, 3, 1],
            counts_after: vec![5, 6, 5],
            replication: vec![1, 2, 5],
            val_carved: 0,
            test_carved: None,
            rows_per_split: vec![],
            bytes_per_sample_stage1: 0,
            bytes_per_sample_stage2: 0,
            target_shard_bytes: 1,
            shard_counts: shapes::plan::ShardCounts {
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
}
