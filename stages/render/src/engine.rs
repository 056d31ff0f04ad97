//! The render engine: decode each source image once, render every replica of every face on it
//! at both crop sizes, and write the samples straight into their shards.
//!
//! Design (decode once, bounded memory, byte-identical for any thread count): before rendering,
//! every stale shard's rows are sorted by (sample id, replica), which fixes each sample's row,
//! and the shard file is created at its final size with its header. Rayon then runs over
//! source images; each rendered crop is written at its row's offset in its shard's temporary
//! file, and the thread that writes a shard's last sample commits it (fsync, rename, sidecar).
//! Memory holds only the images being processed and the small per-sample tables; the price is
//! one small positioned write per sample and that every stale shard is open on disk (as a
//! temporary file) until its last image is done. Rendering per shard instead would keep files
//! sequential but decode a multi-face image once per shard and each image once per crop size.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use super::augment::{AugmentConfig, Augmentation, epoch_seed, perturbed};
use super::decode::{self, SourceFile};
use super::geometry::{self, Affine, BoxRule};
use super::photometric;
use super::shard::{
    self, CropLevel, FORMAT_VERSION, PIXEL_VERSION, RenderedCrop, SampleRecord, ShardDigest,
    ShardIndex, ShardLayout, Sidecar, epoch_set_dir, io_err,
};
use super::shard_file::{BlockPool, ShardFile};
use super::warp::{self, Pyramid};
use super::{RenderError, RenderParams, Result};
use contract::scheme::Scheme;
use faces::face::FaceRecord;
use shapes::balance::TRAIN;
use shapes::plan::PlanRow;

/// Everything a render needs besides the output location.
#[derive(Clone, Copy)]
pub struct RenderInputs<'a> {
    /// The faces (rows of `faces.parquet`); plan rows refer to them by `sample_id`.
    pub faces: &'a [FaceRecord],
    /// The plan (rows of `plan.parquet`).
    pub plan: &'a [PlanRow],
    /// The landmark scheme of every face.
    pub scheme: &'a Scheme,
    /// Render parameters.
    pub params: &'a RenderParams,
    /// Digest of a source image by its `image_path` (e.g. from the stat cache); part of each
    /// shard's key, so an edited image re-renders exactly the shards holding its faces.
    pub source_digest: &'a (dyn Fn(&str) -> String + Sync),
}

/// Render only the shards with `shard_id % count == index` (one worker of a job array).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSplit {
    /// This worker, 0-based.
    pub index: u32,
    /// Number of workers.
    pub count: u32,
}

/// Progress events of [`render_shards`].
#[derive(Debug, Clone, PartialEq)]
pub enum RenderProgress {
    /// Freshness checked: how much work there is.
    Planned {
        /// Shards to render.
        stale_shards: usize,
        /// Shards already up to date.
        fresh_shards: usize,
        /// Source images to decode.
        images: usize,
    },
    /// One more source image is done.
    ImageDone {
        /// Images done so far.
        done: usize,
        /// Images in total.
        total: usize,
    },
    /// A shard was committed.
    ShardWritten(PathBuf),
}

/// What one run did for one augmentation epoch of the training sets (both crop levels).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochReport {
    /// The augmentation epoch.
    pub epoch: u32,
    /// Its shards rendered by this run.
    pub shards_rendered: usize,
    /// Its shards found up to date.
    pub shards_fresh: usize,
    /// Its shard files' bytes on disk.
    pub bytes: u64,
}

/// What [`render_shards`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderReport {
    /// Shard files (re)written, sorted.
    pub rendered: Vec<PathBuf>,
    /// Shard files found up to date and left alone, sorted.
    pub fresh: Vec<PathBuf>,
    /// blake3 and size of every shard file rendered (computed from the bytes written) or
    /// found fresh (checked against its sidecar) by this call.
    pub digests: BTreeMap<PathBuf, ShardDigest>,
    /// Source images decoded.
    pub images_decoded: usize,
    /// Crops rendered (one plan row gives up to two per augmentation epoch: stage 1 and 2).
    pub crops_rendered: usize,
    /// Source images whose decode raised a harmless libjpeg-turbo warning (e.g. extraneous
    /// bytes before a marker); warnings that mean lost image data fail the render instead.
    pub images_with_decoder_warnings: usize,
    /// The training sets' augmentation epochs, in order.
    pub epochs: Vec<EpochReport>,
    /// The indexes written (one-machine runs only; a worker split leaves indexing to
    /// [`super::index_shard_set`] once every worker is done).
    pub indexes: Vec<(PathBuf, ShardIndex)>,
}

/// Render one crop of one face: the crop matrix, the warped and photometrically augmented
/// image, and the transformed landmarks.
pub fn render_sample(
    pyramid: &mut Pyramid,
    face: &FaceRecord,
    scheme: &Scheme,
    params: &RenderParams,
    aug: &Augmentation,
    stage: CropLevel,
) -> Result<(RenderedCrop, Affine)> {
    let m = crop_matrix(face, scheme, params, aug, stage)?;
    let crop = render_crop(pyramid, &m, face, scheme, params, aug, stage)?;
    Ok((crop, m))
}

fn degenerate(face: &FaceRecord) -> RenderError {
    RenderError::BadFace {
        sample_id: face.sample_id.clone(),
        reason: "degenerate crop box".to_owned(),
    }
}

/// The matrix from source to crop coordinates of one crop of one face.
pub fn crop_matrix(
    face: &FaceRecord,
    scheme: &Scheme,
    params: &RenderParams,
    aug: &Augmentation,
    stage: CropLevel,
) -> Result<Affine> {
    let size = params.crop_size(stage);
    match stage {
        CropLevel::One => {
            let enlarge = match params.box_rule {
                BoxRule::Landmarks => params.box_enlarge,
                BoxRule::Annotation => params.annotation_box_enlarge,
            };
            let base = geometry::stage1_box(face, params.box_rule, enlarge)
                .ok_or_else(|| degenerate(face))?;
            Ok(geometry::stage1_matrix(&base, aug, size))
        }
        CropLevel::Two => geometry::stage2_matrix(
            &face.landmarks,
            &face.bbox,
            scheme,
            aug,
            params.box_enlarge,
            size,
        )
        .ok_or_else(|| degenerate(face)),
    }
}

/// Render the crop of matrix `m` from `pyramid` (which must hold the level the warp reads).
pub fn render_crop(
    pyramid: &mut Pyramid,
    m: &Affine,
    face: &FaceRecord,
    scheme: &Scheme,
    params: &RenderParams,
    aug: &Augmentation,
    stage: CropLevel,
) -> Result<RenderedCrop> {
    let size = params.crop_size(stage);
    let mut image = warp::warp(pyramid, m, size, params.border).ok_or_else(|| degenerate(face))?;
    photometric::apply(&mut image, size, aug).map_err(|source| RenderError::Image {
        path: PathBuf::from(&face.sample_id),
        source,
    })?;
    let lm = geometry::transform_landmarks(face, scheme, m, aug.flip, size);
    Ok(RenderedCrop {
        image,
        landmarks: lm.xy,
        visible: lm.visible,
        occluded: lm.occluded,
        in_crop: lm.in_crop,
    })
}

/// The size of a source image, and its full decode when the file allows no reduced decode (so
/// that [`decode_for_crops`] need not decode it again).
pub fn source_size(file: &SourceFile) -> Result<((u32, u32), Option<Pyramid>)> {
    match file.reduced_jpeg() {
        Some(info) => Ok(((info.width, info.height), None)),
        None => {
            let p = file.decode_full()?;
            Ok(((p.base().width, p.base().height), Some(p)))
        }
    }
}

/// The decodes of one `size.0`×`size.1` source that serve `crops` ((matrix, side) each), made
/// the way [`RenderParams::reduced_decode`] allows ([`decode::plan_decodes`]): one pyramid per
/// decode and, per crop, the index of the pyramid serving it (`None` for a singular matrix).
/// Each crop's bytes depend only on its own matrix and side, never on the other crops. `full`
/// is the full decode [`source_size`] returned, if any.
pub fn decode_for_crops(
    file: &SourceFile,
    mut full: Option<Pyramid>,
    size: (u32, u32),
    crops: &[(Affine, u32)],
    params: &RenderParams,
) -> Result<(Vec<Pyramid>, Vec<Option<usize>>)> {
    let reduced = params.reduced_decode && file.reduced_jpeg().is_some();
    let (requests, serving) = decode::plan_decodes(crops, size.0, size.1, reduced);
    let mut pyramids = Vec::with_capacity(requests.len());
    for req in &requests {
        // Only a file that allows no reduced decode was decoded already: one level-0 request.
        pyramids.push(match (req.level, full.take()) {
            (0, Some(mut p)) => {
                p.limit_halving(req.region);
                p
            }
            _ => req.decode(file)?,
        });
    }
    Ok((pyramids, serving))
}

/// Every crop of one source image, decoded by [`decode_for_crops`] (training shards and the
/// two-stage inference path decode the same way).
pub fn render_image_crops(
    file: &SourceFile,
    crops: &[(&FaceRecord, &Augmentation, CropLevel)],
    scheme: &Scheme,
    params: &RenderParams,
) -> Result<Vec<(RenderedCrop, Affine)>> {
    let ((w, h), full) = source_size(file)?;
    let mut matrices = Vec::with_capacity(crops.len());
    for &(face, aug, stage) in crops {
        if (face.image_width, face.image_height) != (w, h) {
            return Err(RenderError::BadFace {
                sample_id: face.sample_id.clone(),
                reason: format!(
                    "faces.parquet says {}×{}, {} is {w}×{h}",
                    face.image_width, face.image_height, face.image_path
                ),
            });
        }
        let m = crop_matrix(face, scheme, params, aug, stage)?;
        matrices.push((m, params.crop_size(stage)));
    }
    let (mut pyramids, serving) = decode_for_crops(file, full, (w, h), &matrices, params)?;
    let mut out = Vec::with_capacity(crops.len());
    for (&(face, aug, stage), ((m, _), serve)) in crops.iter().zip(matrices.iter().zip(serving)) {
        let pyramid = &mut pyramids[serve.ok_or_else(|| degenerate(face))?];
        let crop = render_crop(pyramid, m, face, scheme, params, aug, stage)?;
        out.push((crop, *m));
    }
    Ok(out)
}

/// One shard of the plan: its set, augmentation epoch, id, rows (plan indices sorted by
/// (sample id, replica)).
struct PlannedShard<'a> {
    stage: CropLevel,
    split: &'a str,
    /// The augmentation epoch (0 for validation and test sets, which have one).
    epoch: u32,
    id: u32,
    rows: Vec<usize>,
    /// `sample_index` of the shard's first row (samples in lower shards of the set).
    offset: i64,
    /// The whole set as (id, count).
    set_shards: std::sync::Arc<Vec<(u32, u32)>>,
}

/// A shard being rendered.
struct ShardJob<'a> {
    shard: &'a PlannedShard<'a>,
    key: String,
    layout: ShardLayout,
    file: ShardFile,
    tmp: PathBuf,
    path: PathBuf,
    remaining: AtomicUsize,
    records: Mutex<Vec<Option<SampleRecord>>>,
}

#[derive(Serialize)]
struct KeyRow<'a> {
    row: &'a PlanRow,
    face: &'a FaceRecord,
    source_digest: String,
}

fn check_face(face: &FaceRecord, scheme: &Scheme) -> Result<()> {
    let bad = |reason: String| {
        Err(RenderError::BadFace {
            sample_id: face.sample_id.clone(),
            reason,
        })
    };
    if face.scheme != scheme.name {
        return bad(format!(
            "scheme `{}`, rendering `{}`",
            face.scheme, scheme.name
        ));
    }
    let l = scheme.num_points();
    if face.landmarks.len() != 2 * l || face.visible.len() != l {
        return bad(format!(
            "{} coordinates and {} visibility flags, scheme `{}` has {l} points",
            face.landmarks.len(),
            face.visible.len(),
            scheme.name
        ));
    }
    Ok(())
}

fn metadata(scheme: &Scheme, size: u32, split: &str) -> BTreeMap<String, String> {
    let perm: Vec<String> = scheme
        .flip_permutation
        .iter()
        .map(|i| i.to_string())
        .collect();
    BTreeMap::from([
        ("format_version".to_owned(), FORMAT_VERSION.to_string()),
        ("scheme".to_owned(), scheme.name.to_owned()),
        ("crop_size".to_owned(), size.to_string()),
        ("split".to_owned(), split.to_owned()),
        (
            "flip_permutation".to_owned(),
            format!("[{}]", perm.join(",")),
        ),
    ])
}

/// Render every shard of `inputs.plan` that is stale (or, with `worker`, every stale shard of
/// that worker) under `<out_root>/shards/<stage>/<split>/`, using the current rayon pool.
/// Without a worker split, every shard set is then indexed ([`super::index_shard_set`]).
///
/// A shard is fresh when its sidecar holds the same key (render params, its plan rows and
/// faces, its source images' digests) and its file still has the recorded blake3; fresh
/// shards are not touched, truncated or corrupted ones are rendered again.
pub fn render_shards(
    inputs: &RenderInputs<'_>,
    out_root: &Path,
    worker: Option<WorkerSplit>,
    progress: &(dyn Fn(RenderProgress) + Sync),
) -> Result<RenderReport> {
    let RenderInputs {
        faces,
        plan,
        scheme,
        params,
        source_digest,
    } = *inputs;
    params
        .validate()
        .map_err(|e| RenderError::Config(format!("[render] {e}")))?;
    if let Some(w) = worker
        && (w.count == 0 || w.index >= w.count)
    {
        return Err(RenderError::Config(format!(
            "worker {}/{} is not a valid split",
            w.index, w.count
        )));
    }
    let face_of: HashMap<&str, &FaceRecord> =
        faces.iter().map(|f| (f.sample_id.as_str(), f)).collect();
    let mut seen: HashMap<(&str, u32), usize> = HashMap::new();
    for (i, row) in plan.iter().enumerate() {
        let face =
            face_of
                .get(row.sample_id.as_str())
                .ok_or_else(|| RenderError::UnknownSample {
                    row: i,
                    sample_id: row.sample_id.clone(),
                })?;
        check_face(face, scheme)?;
        if let Some(first) = seen.insert((row.sample_id.as_str(), row.replica), i) {
            return Err(RenderError::DuplicateRow {
                first,
                second: i,
                sample_id: row.sample_id.clone(),
                replica: row.replica,
            });
        }
    }

    let shards = plan_shards(plan, params.epochs);
    let config_digest = params.digest();
    let selected: Vec<&PlannedShard> = shards
        .iter()
        .filter(|s| worker.is_none_or(|w| s.id % w.count == w.index))
        .collect();

    // The rows' part of the shard keys, shared by every augmentation epoch of a shard.
    let mut row_sets: BTreeMap<(CropLevel, &str, u32), &PlannedShard> = BTreeMap::new();
    for s in &selected {
        row_sets.entry((s.stage, s.split, s.id)).or_insert(s);
    }
    let key_rows: HashMap<(CropLevel, &str, u32), Vec<u8>> = row_sets
        .into_par_iter()
        .map(|(set, s)| (set, key_rows(s, plan, &face_of, source_digest)))
        .collect();
    // Freshness: compare keys and file digests (parallel: hashing shards is I/O + blake3). A
    // fresh shard's digest, just checked, is not computed again when its set is indexed.
    let checked: Vec<(&PlannedShard, String, Option<ShardDigest>)> = selected
        .par_iter()
        .map(|s| {
            let key = shard_key(s, scheme, params, &key_rows[&(s.stage, s.split, s.id)]);
            let dir = epoch_set_dir(out_root, s.stage, s.split, s.epoch);
            let fresh = shard::read_sidecar(&dir.join(shard::sidecar_file_name(s.id)))
                .filter(|sc| sc.key == key)
                .and_then(|sc| {
                    let digest = shard::file_digest(&dir.join(&sc.file)).ok()?;
                    (digest.0 == sc.blake3 && digest.1 == sc.bytes).then_some(digest)
                });
            (*s, key, fresh)
        })
        .collect();

    let mut report = RenderReport::default();
    let mut digests: BTreeMap<PathBuf, ShardDigest> = BTreeMap::new();
    let pool = BlockPool::with_writer_thread();
    let mut jobs: Vec<ShardJob> = Vec::new();
    for (s, key, fresh) in checked {
        let dir = epoch_set_dir(out_root, s.stage, s.split, s.epoch);
        let path = dir.join(shard::shard_file_name(s.id));
        if let Some(digest) = fresh {
            digests.insert(path.clone(), digest);
            report.fresh.push(path);
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let size = params.crop_size(s.stage);
        // The `occluded` tensor only where a face of the shard has an occluded point.
        let occluded = s
            .rows
            .iter()
            .any(|&r| face_of[plan[r].sample_id.as_str()].any_occluded());
        let layout = ShardLayout::new(
            s.rows.len(),
            size as usize,
            scheme.num_points(),
            occluded,
            &metadata(scheme, size, s.split),
        )?;
        let tmp = shard::temp_path(&path)?;
        let index: Vec<i64> = (0..s.rows.len() as i64).map(|r| s.offset + r).collect();
        let file = layout.create(&tmp, &index, &pool)?;
        jobs.push(ShardJob {
            shard: s,
            key,
            layout,
            file,
            tmp,
            path,
            remaining: AtomicUsize::new(s.rows.len()),
            records: Mutex::new(vec![None; s.rows.len()]),
        });
    }

    // Which (job, row) each plan row feeds, per augmentation epoch and crop level (in that
    // order); and the images that feed any job. Every pending epoch of an image's rows is
    // rendered from one decode of it.
    let mut targets: Vec<Vec<Target>> = vec![Vec::new(); plan.len()];
    for (j, job) in jobs.iter().enumerate() {
        for (pos, &r) in job.shard.rows.iter().enumerate() {
            targets[r].push(Target {
                epoch: job.shard.epoch,
                stage: job.shard.stage,
                job: j,
                pos,
            });
        }
    }
    for t in &mut targets {
        t.sort_by_key(|t| (t.epoch, t.stage));
    }
    let mut by_image: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (r, t) in targets.iter().enumerate() {
        if !t.is_empty() {
            by_image
                .entry(face_of[plan[r].sample_id.as_str()].image_path.as_str())
                .or_default()
                .push(r);
        }
    }
    // Images in the order of their first plan row: a shard's rows are in plan order, so its
    // blocks complete (and are written and freed) as rendering goes, not all at the end.
    let mut images: Vec<(&str, Vec<usize>)> = by_image.into_iter().collect();
    images.sort_by_key(|(_, rows)| rows[0]);
    progress(RenderProgress::Planned {
        stale_shards: jobs.len(),
        fresh_shards: report.fresh.len(),
        images: images.len(),
    });

    let done = AtomicUsize::new(0);
    let crops_done = AtomicUsize::new(0);
    let warned = AtomicUsize::new(0);
    let written = Mutex::new(Vec::new());
    let result = images
        .par_iter()
        .try_for_each(|(image_path, rows)| -> Result<()> {
            let file =
                SourceFile::read(Path::new(image_path))?.with_max_pixels(params.max_image_pixels);
            // One draw per (row, epoch): both crop levels of it share the augmentation.
            let mut draws: Vec<(usize, u32, u64, Augmentation)> = Vec::new();
            for &r in rows {
                for t in &targets[r] {
                    if draws.last().is_none_or(|d| (d.0, d.1) != (r, t.epoch)) {
                        let (seed, aug) = draw_for(&plan[r], t.epoch, &params.augment);
                        draws.push((r, t.epoch, seed, aug));
                    }
                }
            }
            let mut wanted = Vec::new();
            let mut crops = Vec::new();
            for (r, epoch, seed, aug) in &draws {
                let face = face_of[plan[*r].sample_id.as_str()];
                for t in targets[*r].iter().filter(|t| t.epoch == *epoch) {
                    wanted.push((*r, *seed, aug, t));
                    crops.push((face, aug, t.stage));
                }
            }
            let rendered = render_image_crops(&file, &crops, scheme, params)?;
            if file.decoder_warnings() > 0 {
                warned.fetch_add(1, Ordering::Relaxed);
            }
            for ((r, seed, aug, t), (crop, affine)) in wanted.into_iter().zip(rendered) {
                let row = &plan[r];
                let (job, pos) = (&jobs[t.job], t.pos);
                job.layout.write_sample(&job.file, &pool, pos, &crop)?;
                crops_done.fetch_add(1, Ordering::Relaxed);
                let record = SampleRecord {
                    shard: job.shard.id,
                    row: pos as u32,
                    sample_id: row.sample_id.clone(),
                    replica: row.replica,
                    seed,
                    augmentation: aug.clone(),
                    affine,
                    pose_coefficient: row.pose_coefficient,
                    bin: row.bin,
                };
                job.records.lock().unwrap_or_else(|e| e.into_inner())[pos] = Some(record);
                if job.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    let digest = finish_job(job, scheme, params, &config_digest)?;
                    progress(RenderProgress::ShardWritten(job.path.clone()));
                    written
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((job.path.clone(), digest));
                }
            }
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            progress(RenderProgress::ImageDone {
                done: n,
                total: images.len(),
            });
            Ok(())
        });
    if let Err(e) = result {
        for job in &jobs {
            if job.remaining.load(Ordering::Acquire) > 0 {
                // Best effort: a leftover temporary file is also removed by `gc`.
                let _ = std::fs::remove_file(&job.tmp);
            }
        }
        return Err(e);
    }
    for (path, digest) in written.into_inner().unwrap_or_else(|e| e.into_inner()) {
        report.rendered.push(path.clone());
        digests.insert(path, digest);
    }
    report.rendered.sort();
    report.fresh.sort();
    report.images_decoded = images.len();
    report.crops_rendered = crops_done.into_inner();
    report.images_with_decoder_warnings = warned.into_inner();

    report.epochs = epoch_reports(&shards, &report, out_root);
    report.digests = digests;
    if worker.is_none() {
        let mut sets: Vec<(CropLevel, &str, u32)> =
            shards.iter().map(|s| (s.stage, s.split, s.epoch)).collect();
        sets.dedup();
        report.indexes = sets
            .into_par_iter()
            .map(|(stage, split, epoch)| {
                let dir = epoch_set_dir(out_root, stage, split, epoch);
                let epochs = if epoch == 0 && split == TRAIN {
                    params.epochs
                } else {
                    1
                };
                let index = shard::index_checked_shard_set(&dir, epochs, &report.digests)?;
                Ok((dir, index))
            })
            .collect::<Result<_>>()?;
    }
    Ok(report)
}

/// Commit a finished shard and write its sidecar (after the file, so a crash in between leaves
/// a sidecar that no longer matches, and the shard is rendered again). Returns the shard's
/// blake3 and size.
fn finish_job(
    job: &ShardJob<'_>,
    scheme: &Scheme,
    params: &RenderParams,
    config_digest: &str,
) -> Result<ShardDigest> {
    let (blake3, bytes) = job.file.finish()?;
    shard::commit(&job.tmp, &job.path)?;
    let records = std::mem::take(&mut *job.records.lock().unwrap_or_else(|e| e.into_inner()));
    let samples: Vec<SampleRecord> = records.into_iter().flatten().collect();
    let sidecar = Sidecar {
        format_version: FORMAT_VERSION,
        key: job.key.clone(),
        config_digest: config_digest.to_owned(),
        scheme: scheme.name.to_owned(),
        crop_size: params.crop_size(job.shard.stage),
        split: job.shard.split.to_owned(),
        file: shard::shard_file_name(job.shard.id),
        bytes,
        blake3: blake3.clone(),
        set_shards: job.shard.set_shards.to_vec(),
        samples,
    };
    let path = job
        .path
        .with_file_name(shard::sidecar_file_name(job.shard.id));
    let json = serde_json::to_vec(&sidecar).map_err(|source| RenderError::Json {
        path: path.clone(),
        source,
    })?;
    shard::write_atomic(&path, &json)?;
    Ok((blake3, bytes))
}

/// Group plan rows into shards of each (stage, split) set, rows sorted by (sample id, replica);
/// the training sets' shards once per augmentation epoch (same rows, own draws).
fn plan_shards(plan: &[PlanRow], epochs: u32) -> Vec<PlannedShard<'_>> {
    let mut sets: BTreeMap<(CropLevel, &str), BTreeMap<u32, Vec<usize>>> = BTreeMap::new();
    for (i, row) in plan.iter().enumerate() {
        for stage in CropLevel::ALL {
            sets.entry((stage, row.split.as_str()))
                .or_default()
                .entry(stage.shard_of(row))
                .or_default()
                .push(i);
        }
    }
    let mut out = Vec::new();
    for ((stage, split), shards) in sets {
        let set_shards: std::sync::Arc<Vec<(u32, u32)>> = std::sync::Arc::new(
            shards
                .iter()
                .map(|(&id, rows)| (id, rows.len() as u32))
                .collect(),
        );
        let set_epochs = if split == TRAIN { epochs } else { 1 };
        for epoch in 0..set_epochs {
            let mut offset = 0i64;
            for (&id, rows) in &shards {
                let mut rows = rows.clone();
                rows.sort_by(|&a, &b| {
                    (&plan[a].sample_id, plan[a].replica)
                        .cmp(&(&plan[b].sample_id, plan[b].replica))
                });
                let n = rows.len() as i64;
                out.push(PlannedShard {
                    stage,
                    split,
                    epoch,
                    id,
                    rows,
                    offset,
                    set_shards: set_shards.clone(),
                });
                offset += n;
            }
        }
    }
    out
}

/// Where a (row, epoch) crop goes: its crop level and the job and position in it.
#[derive(Debug, Clone, Copy)]
struct Target {
    epoch: u32,
    stage: CropLevel,
    job: usize,
    pos: usize,
}

/// The seed and augmentation of a plan row's crops in augmentation epoch `epoch`.
fn draw_for(row: &PlanRow, epoch: u32, config: &AugmentConfig) -> (u64, Augmentation) {
    let seed = epoch_seed(row.seed, epoch);
    let perturb = perturbed(row.split == TRAIN, row.replica, epoch, config.keep_original);
    (seed, Augmentation::draw(seed, perturb, config))
}

/// What the run did for each augmentation epoch of the training sets: shards rendered and
/// fresh, and the epoch's bytes on disk (every level, all of its shards).
fn epoch_reports(
    shards: &[PlannedShard<'_>],
    report: &RenderReport,
    out_root: &Path,
) -> Vec<EpochReport> {
    let mut out: BTreeMap<u32, EpochReport> = BTreeMap::new();
    let paths = |list: &[PathBuf]| -> HashSet<PathBuf> { list.iter().cloned().collect() };
    let (rendered, fresh) = (paths(&report.rendered), paths(&report.fresh));
    for s in shards.iter().filter(|s| s.split == TRAIN) {
        let entry = out.entry(s.epoch).or_insert(EpochReport {
            epoch: s.epoch,
            ..EpochReport::default()
        });
        let path =
            epoch_set_dir(out_root, s.stage, s.split, s.epoch).join(shard::shard_file_name(s.id));
        if rendered.contains(&path) {
            entry.shards_rendered += 1;
        } else if fresh.contains(&path) {
            entry.shards_fresh += 1;
        }
        if let Ok(meta) = std::fs::metadata(&path) {
            entry.bytes += meta.len();
        }
    }
    out.into_values().collect()
}

/// The rows' part of a shard's key: each row with its face and its source image's digest, as
/// one JSON line each (plain data serialises infallibly; the newline separates rows
/// unambiguously).
fn key_rows(
    s: &PlannedShard<'_>,
    plan: &[PlanRow],
    face_of: &HashMap<&str, &FaceRecord>,
    source_digest: &(dyn Fn(&str) -> String + Sync),
) -> Vec<u8> {
    let mut out = Vec::new();
    for &r in &s.rows {
        let face = face_of[plan[r].sample_id.as_str()];
        let row = KeyRow {
            row: &plan[r],
            face,
            source_digest: source_digest(&face.image_path),
        };
        out.extend(serde_json::to_vec(&row).unwrap_or_default());
        out.push(b'\n');
    }
    out
}

/// A shard's incremental key: blake3 of its head (render params, set, shard, epoch) and its
/// [`key_rows`].
fn shard_key(s: &PlannedShard<'_>, scheme: &Scheme, params: &RenderParams, rows: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    let head = serde_json::json!({
        "format_version": FORMAT_VERSION,
        "pixel_version": PIXEL_VERSION,
        "params": params,
        "stage": s.stage,
        "split": s.split,
        "scheme": scheme.name,
        "flip_permutation": scheme.flip_permutation,
        "set_shards": *s.set_shards,
        "shard": s.id,
    });
    let mut head = head;
    if s.epoch > 0 {
        // Epoch 0's key is the key shards had before augmentation epochs existed.
        head["augmentation_epoch"] = serde_json::json!(s.epoch);
    }
    h.update(head.to_string().as_bytes());
    h.update(rows);
    h.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests;
