//! Declares wingflow's stages to the generic DAG (`pipeline` crate): which files each stage
//! reads and writes, its parameters and code version, and the closure that does the work by
//! calling the `stages` library.
//!
//! The output layout under the output root is `contract::layout`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Result;
use contract::scheme::{self, Scheme};
use faces::face::{FaceRecord, landmarks_bbox};
use faces::faces_table::{read_faces_parquet, write_faces_parquet};
use faces::ingest::{ingest, source_input_paths};
use manifests::{HashPolicy, StatCache};
use pipeline::{BoxError, Pipeline, Stage, StageReport};
use render::{RenderInputs, RenderProgress, WorkerSplit, render_shards};
use report::{BinExamples, plot_pose_histogram, plot_shape_modes, plot_thumbnail_strip};
use serde_json::json;
use shapes::align::align_shapes;
use shapes::balance::{BalanceSample, TRAIN, balance, photo_of};
use shapes::pca::fit_shape_model;
use shapes::plan_table::{
    BalanceSummary, read_plan_parquet, write_plan_parquet, write_summary_json,
};
use shapes::shape_store::{
    PoseTable, StoredAlignment, read_alignment, read_pose_table, write_alignment, write_pose_table,
};

use crate::config::Config;
pub use contract::layout::Layout;
use contract::training::TrainRequest;

/// Bump a stage's code version whenever its code would write different outputs for the same
/// inputs and parameters: the DAG then re-runs it (and says so).
mod code_version {
    pub const INGEST: &str = "2";
    pub const ALIGN: &str = "1";
    pub const PCA: &str = "1";
    pub const BALANCE: &str = "1";
    pub const PLOTS: &str = "1";
    pub const RENDER: &str = "3";
    pub const TRAIN: &str = "3";
    pub const EVALUATE: &str = "2";
}

/// The whole pipeline for `config`.
pub fn build(config: &Config) -> Result<Pipeline<'_>> {
    let layout = Layout::new(&config.output);
    let mut pipeline = Pipeline::new(&config.output);
    pipeline.add(ingest_stage(config, &layout));
    pipeline.add(align_stage(config, &layout));
    pipeline.add(pca_stage(config, &layout));
    pipeline.add(balance_stage(config, &layout));
    pipeline.add(plots_stage(&layout));
    pipeline.add(render_stage(config, &layout, None));
    if config.train.enabled {
        let run = layout.for_run(config.train.run.as_deref());
        for &level in config.train.levels() {
            pipeline.add(train_stage(config, &run, level));
        }
        pipeline.add(evaluate_stage(config, &run));
    }
    Ok(pipeline)
}

/// A training run's stage: `base` (train1, train2, evaluate) for the unnamed run, `base@run`
/// for a named one, so each run has its own entry in `wingflow.lock`.
pub fn run_stage_name(base: &str, run: Option<&str>) -> String {
    match run {
        Some(run) => format!("{base}@{run}"),
        None => base.to_owned(),
    }
}

/// The scheme shared by every face (ingest refuses mixed schemes).
fn faces_scheme(faces: &[FaceRecord]) -> Result<&'static Scheme, BoxError> {
    let name = faces
        .first()
        .map(|f| f.scheme.as_str())
        .ok_or("faces.parquet holds no faces")?;
    Ok(scheme::by_name(name)?)
}

fn align_stage<'a>(config: &'a Config, layout: &Layout) -> Stage<'a> {
    let (faces_path, out) = (layout.faces(), layout.aligned());
    Stage::new("align", code_version::ALIGN, move |_ctx| {
        let faces = read_faces_parquet(&faces_path)?;
        let scheme = faces_scheme(&faces)?;
        // The shape model is fitted on the source's training faces (PDB balances those).
        let train: Vec<&FaceRecord> = faces.iter().filter(|f| f.split == TRAIN).collect();
        let flat: Vec<f32> = train
            .iter()
            .flat_map(|f| f.landmarks.iter().copied())
            .collect();
        let alignment = align_shapes(
            &flat,
            scheme.num_points(),
            &config.align.params(),
            Some(&scheme.flip_permutation),
        )?;
        let report = StageReport::new()
            .rows("shapes", alignment.len() as u64)
            .rows("iterations", alignment.iterations as u64);
        if !alignment.converged {
            eprintln!(
                "    align: not converged after {} iterations (change {:.2e}); raise \
                 [align] max_iterations or tolerance",
                alignment.iterations, alignment.change
            );
        }
        let sample_ids = train.iter().map(|f| f.sample_id.clone()).collect();
        write_alignment(
            &out,
            &StoredAlignment {
                sample_ids,
                alignment,
            },
        )?;
        Ok::<_, BoxError>(report)
    })
    .params(json!(config.align))
    .input(layout.faces())
    .output(layout.aligned())
}

fn pca_stage<'a>(config: &'a Config, layout: &Layout) -> Stage<'a> {
    let (faces_path, aligned_path, out) = (layout.faces(), layout.aligned(), layout.pca());
    Stage::new("pca", code_version::PCA, move |_ctx| {
        let faces = read_faces_parquet(&faces_path)?;
        let scheme = faces_scheme(&faces)?;
        let stored = read_alignment(&aligned_path)?;
        let params = config.pca.params().map_err(|e| e.to_string())?;
        let fit = fit_shape_model(&stored.alignment, &scheme.flip_permutation, &params)?;
        let fitted: HashMap<&str, f64> =
            stored.sample_ids.iter().map(String::as_str).zip(fit.coefficients.iter().copied()).collect();
        // Faces outside the fit (val/test splits) are projected onto the same model.
        let coefficients = faces
            .iter()
            .map(|f| {
                let c = fitted.get(f.sample_id.as_str()).copied().or_else(|| fit.model.pose_coefficient(&f.landmarks));
                (f.sample_id.clone(), c)
            })
            .collect();
        let model = fit.model;
        let k = model.pose_component;
        eprintln!(
            "    pca: pose component PC{} ({}), flip anti-symmetry score {:.3}, explains {:.1}% of the variance",
            k + 1,
            if model.pose_chosen_automatically { "auto" } else { "override" },
            model.pose_flip_score(),
            100.0 * model.explained_variance_ratio.get(k).copied().unwrap_or(f64::NAN)
        );
        write_pose_table(&out, &PoseTable { model, coefficients })?;
        Ok::<_, BoxError>(StageReport::new().rows("faces", faces.len() as u64))
    })
    .params(json!(config.pca))
    .input(layout.faces())
    .input(layout.aligned())
    .output(layout.pca())
}

fn balance_stage<'a>(config: &'a Config, layout: &Layout) -> Stage<'a> {
    let (faces_path, pca_path) = (layout.faces(), layout.pca());
    let (plan_path, summary_path) = (layout.plan(), layout.balance_summary());
    let params = json!({
        "balance": config.balance,
        "seed": config.seed,
        "crops": [config.render.stage1_size, config.render.stage2_size],
    });
    Stage::new("balance", code_version::BALANCE, move |_ctx| {
        let faces = read_faces_parquet(&faces_path)?;
        let scheme = faces_scheme(&faces)?;
        let table = read_pose_table(&pca_path)?;
        let samples: Vec<BalanceSample> = table
            .coefficients
            .iter()
            .zip(&faces)
            .map(|((id, c), f)| BalanceSample {
                sample_id: id.clone(),
                split: f.split.clone(),
                photo: photo_of(&f.image_path),
                pose_coefficient: *c,
            })
            .collect();
        let params = config
            .balance
            .params(scheme.num_points(), config.seed, &config.render);
        let plan = balance(&samples, &params)?;
        write_plan_parquet(&plan_path, &plan.rows)?;
        write_summary_json(&summary_path, &plan.summary)?;
        let mut report = StageReport::new().rows("plan", plan.rows.len() as u64);
        for (split, n) in &plan.summary.rows_per_split {
            report = report.rows(format!("plan.{split}"), *n);
        }
        Ok::<_, BoxError>(report)
    })
    .params(params)
    .input(layout.faces())
    .input(layout.pca())
    .output(layout.plan())
    .output(layout.balance_summary())
}

/// Up to `per_bin` example faces of each pose bin (replica 0 of training samples).
fn bin_examples(
    faces: &[FaceRecord],
    plan: &[shapes::plan::PlanRow],
    summary: &BalanceSummary,
    per_bin: usize,
) -> Vec<BinExamples> {
    let by_id: HashMap<&str, &FaceRecord> =
        faces.iter().map(|f| (f.sample_id.as_str(), f)).collect();
    let mut bins: BTreeMap<u32, Vec<&FaceRecord>> = BTreeMap::new();
    for row in plan.iter().filter(|r| r.replica == 0) {
        if let (Some(bin), Some(face)) = (row.bin, by_id.get(row.sample_id.as_str())) {
            let list = bins.entry(bin).or_default();
            if list.len() < per_bin {
                list.push(face);
            }
        }
    }
    bins.into_iter()
        .map(|(bin, faces)| {
            let edges = &summary.bin_edges;
            let label = match (edges.get(bin as usize), edges.get(bin as usize + 1)) {
                (Some(lo), Some(hi)) => format!("bin {bin}: [{lo:.3}, {hi:.3})"),
                _ => format!("bin {bin}"),
            };
            let examples = faces
                .iter()
                .filter_map(|f| {
                    landmarks_bbox(&f.landmarks).map(|b| (PathBuf::from(&f.image_path), b))
                })
                .collect();
            BinExamples { label, examples }
        })
        .collect()
}

fn plots_stage<'a>(layout: &Layout) -> Stage<'a> {
    let (faces_path, pca_path, plan_path, summary_path) = (
        layout.faces(),
        layout.pca(),
        layout.plan(),
        layout.balance_summary(),
    );
    let plots = layout.plots();
    let outputs = [
        plots.join("pose-histogram.png"),
        plots.join("shape-modes.png"),
        plots.join("pose-bins.png"),
    ];
    let written = outputs.clone();
    Stage::new("plots", code_version::PLOTS, move |_ctx| {
        let summary: BalanceSummary = serde_json::from_slice(&std::fs::read(&summary_path)?)?;
        let table = read_pose_table(&pca_path)?;
        let faces = read_faces_parquet(&faces_path)?;
        let plan = read_plan_parquet(&plan_path)?;
        plot_pose_histogram(&written[0], &summary)?;
        plot_shape_modes(&written[1], &table.model)?;
        let strip =
            plot_thumbnail_strip(&written[2], &bin_examples(&faces, &plan, &summary, 6), 72)?;
        for path in &strip.unreadable {
            eprintln!(
                "    plots: could not draw a thumbnail of {}",
                path.display()
            );
        }
        for path in &written {
            eprintln!("    plot: {}", path.display());
        }
        Ok::<_, BoxError>(StageReport::new().rows("plots", written.len() as u64))
    })
    .input(layout.faces())
    .input(layout.pca())
    .input(layout.plan())
    .input(layout.balance_summary())
    .outputs(outputs)
}

/// Render the plan's shards (all of them, or one worker's share).
pub fn render_plan(
    config: &Config,
    layout: &Layout,
    worker: Option<WorkerSplit>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<render::RenderReport, BoxError> {
    let faces = read_faces_parquet(&layout.faces())?;
    let plan = read_plan_parquet(&layout.plan())?;
    let scheme = faces_scheme(&faces)?;
    let cache = StatCache::for_root(&layout.root)?;
    let digest = |path: &str| {
        cache
            .digest_file(Path::new(path), HashPolicy::TrustStat)
            .map(|d| d.digest.to_hex())
            // An unreadable image fails its shard in the renderer with a precise error.
            .unwrap_or_default()
    };
    let inputs = RenderInputs {
        faces: &faces,
        plan: &plan,
        scheme,
        params: &config.render,
        source_digest: &digest,
    };
    let report = render_shards(&inputs, &layout.root, worker, &|event| match event {
        RenderProgress::Planned { images, .. } => progress(0, images as u64),
        RenderProgress::ImageDone { done, total } => progress(done as u64, total as u64),
        RenderProgress::ShardWritten { .. } => {}
    })?;
    cache.save()?;
    Ok(report)
}

fn render_stage<'a>(config: &'a Config, layout: &Layout, worker: Option<WorkerSplit>) -> Stage<'a> {
    let stage_layout = Layout::new(&layout.root);
    Stage::new("render", code_version::RENDER, move |ctx| {
        let started = std::time::Instant::now();
        let report = render_plan(config, &stage_layout, worker, &|done, total| {
            ctx.progress(done, total)
        })?;
        let seconds = started.elapsed().as_secs_f64();
        for e in &report.epochs {
            eprintln!(
                "    render: augmentation epoch {}: {} shard(s) rendered, {} fresh, {:.1} MB",
                e.epoch,
                e.shards_rendered,
                e.shards_fresh,
                e.bytes as f64 / 1e6
            );
        }
        if report.images_with_decoder_warnings > 0 {
            // Harmless libjpeg warnings (extraneous bytes, unknown markers: common in web
            // JPEGs); damaged data fails the stage instead.
            eprintln!(
                "    render: {} image(s) decoded with harmless decoder warnings",
                report.images_with_decoder_warnings
            );
        }
        let rendered = report
            .epochs
            .iter()
            .filter(|e| e.shards_rendered > 0)
            .count();
        if rendered > 1 {
            // Pending epochs share one decode per image, so only their total time exists.
            eprintln!(
                "    render: {rendered} augmentation epochs rendered together in {seconds:.1}s \
                 (one decode per image; {:.2}s an epoch)",
                seconds / rendered as f64
            );
        }
        let mut stage_report = StageReport::new()
            .rows("shards_written", report.rendered.len() as u64)
            .rows("shards_fresh", report.fresh.len() as u64)
            .rows("crops", report.crops_rendered as u64)
            .rows("images", report.images_decoded as u64);
        // The shards' digests are known: the runner need not read them back.
        for (path, (blake3, _)) in &report.digests {
            stage_report = stage_report.written_file(path, blake3.parse()?);
        }
        Ok::<_, BoxError>(stage_report)
    })
    // `epochs` is not serialised with the render parameters (it is in no shard key): listed
    // here so that changing it re-runs the stage (which renders only the missing epochs).
    .params(json!({ "render": config.render, "epochs": config.render.epochs }))
    .input(layout.faces())
    .input(layout.plan())
    .inputs(source_input_paths(&config.sources))
    .output(layout.shards())
}

fn ingest_stage<'a>(config: &'a Config, layout: &Layout) -> Stage<'a> {
    let faces_path = layout.faces();
    let report_path = layout.ingest_report();
    let params = json!({ "sources": config.sources, "policy": config.ingest });
    Stage::new("ingest", code_version::INGEST, move |ctx| {
        let output = ingest(&config.sources, &config.ingest)?;
        ctx.progress(output.faces.len() as u64, output.faces.len() as u64);
        write_faces_parquet(&faces_path, &output.faces)?;
        output.report.write_json(&report_path)?;
        if !output.report.skipped.is_empty() {
            eprintln!(
                "    ingest: skipped {} invalid record(s); reasons in {}",
                output.report.skipped.len(),
                report_path.display()
            );
        }
        let mut report = StageReport::new().rows("faces", output.faces.len() as u64);
        for (split, n) in &output.report.splits {
            report = report.rows(format!("faces.{split}"), *n as u64);
        }
        Ok::<_, BoxError>(report)
    })
    .params(params)
    .inputs(source_input_paths(&config.sources))
    .output(layout.faces())
    .output(layout.ingest_report())
}

/// The training stage of crop level `level` (train1: CNN-6, train2: CNN-7).
fn train_stage<'a>(config: &'a Config, layout: &Layout, level: u8) -> Stage<'a> {
    let shards = layout.level_shards(level);
    let out = layout.model(level);
    let name = run_stage_name(&format!("train{level}"), layout.run.as_deref());
    // What this network's training depends on: not the other network's budget (changing CNN-7's
    // steps retrains CNN-7 alone), nor the run's name or thread count.
    let t = &config.train;
    let params = json!({
        "loss": t.loss,
        "budget": t.budget(level).ok().map(crate::config::NetworkSettings::from),
        "device": t.device,
        "batch_norm": t.batch_norm,
        "normaliser": t.normaliser,
        "validation": t.validation,
        "seed": t.seed.unwrap_or(config.seed),
    });
    let seed = config.seed;
    Stage::new(name.clone(), code_version::TRAIN, move |_ctx| {
        // Train into a work folder beside the model and swap it in when done, so an
        // interrupted run never leaves a half-trained model where a finished one is expected.
        // The work folder survives a kill: the next run resumes it from its last checkpoint
        // when it was started by the same request on the same shards, and starts afresh
        // otherwise.
        let parent = out.parent().ok_or("model folder has no parent")?;
        std::fs::create_dir_all(parent)?;
        let work = work_dir(&out);
        let t = &config.train;
        let request = t
            .request(level, shards.clone(), work.clone(), seed)
            .map_err(|e| format!("{e:#}"))?;
        let inputs = shard_indexes_digest(&shards)?;
        let resumable = resumable(&work, &request, &inputs);
        if !resumable && work.exists() {
            std::fs::remove_dir_all(&work)?;
        }
        std::fs::create_dir_all(&work)?;
        if resumable {
            eprintln!(
                "    {name}: resuming the interrupted run in {}",
                work.display()
            );
        } else {
            manifests::write_atomic(work.join(RUN_INPUTS), inputs.as_bytes())?;
        }
        let run = TrainRequest {
            resume: resumable,
            ..request
        };
        crate::trainer_bin::train(&run, &work.join(RUN_REQUEST), t.threads)
            .map_err(|e| format!("{e:#}"))?;
        let tmp = work;
        manifests::commit_temp_dir(&tmp, &out)?;
        let curve = out.join("loss-curve.png");
        report::loss_curve::plot_loss_curve(&out.join("train_log.csv"), &curve)
            .map_err(|e| format!("{e:#}"))?;
        eprintln!("    {name}: loss curve {}", curve.display());
        let steps = t.budget(level).map_err(|e| format!("{e:#}"))?.steps;
        Ok::<_, BoxError>(StageReport::new().rows("steps", steps))
    })
    .params(params)
    .input(layout.level_shards(level))
    .output(layout.model(level))
}

/// The request a training stage's work folder was started with (`request.json`).
const RUN_REQUEST: &str = "request.json";
/// The digest of the shard sets' indexes a training stage's work folder was started on.
const RUN_INPUTS: &str = "inputs.blake3";

/// Where the training stage that writes `model` trains: `.<name>.partial` beside it.
fn work_dir(model: &Path) -> PathBuf {
    let name = model.file_name().unwrap_or_default().to_string_lossy();
    model.with_file_name(format!(".{name}.partial"))
}

/// blake3 over every `index.json` under a crop level's shard sets (every split and
/// augmentation epoch; each lists its shards' digests), in path order.
fn shard_indexes_digest(level_shards: &Path) -> Result<String, BoxError> {
    let mut indexes = Vec::new();
    let mut stack = vec![level_shards.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "index.json") {
                indexes.push(path);
            }
        }
    }
    indexes.sort();
    let mut h = blake3::Hasher::new();
    for path in indexes {
        h.update(path.to_string_lossy().as_bytes());
        h.update(&std::fs::read(&path)?);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Whether the work folder holds a checkpointed run of `request` on the same shards.
fn resumable(work: &Path, request: &TrainRequest, inputs: &str) -> bool {
    let same_request = std::fs::read(work.join(RUN_REQUEST))
        .ok()
        .and_then(|b| serde_json::from_slice::<TrainRequest>(&b).ok())
        .is_some_and(|r| TrainRequest { resume: false, ..r } == *request);
    let same_inputs = std::fs::read_to_string(work.join(RUN_INPUTS)).is_ok_and(|s| s == inputs);
    same_request
        && same_inputs
        && work
            .join(contract::layout::training_run::CHECKPOINT_POINTER)
            .exists()
}

/// The checkpoint to evaluate: the best by validation NME, else the last.
fn checkpoint_of(model: &Path) -> PathBuf {
    let best = model.join("best.safetensors");
    if best.exists() {
        best
    } else {
        model.join("last.safetensors")
    }
}

/// The splits to evaluate: every evaluation split that has faces (val, and the source's own
/// test splits), plus `full` (= common + challenging) for 300W.
fn evaluation_splits(plan: &[shapes::plan::PlanRow]) -> Vec<String> {
    let mut splits: Vec<String> = plan
        .iter()
        .filter(|r| r.split != TRAIN)
        .map(|r| r.split.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if splits.iter().any(|s| s == "common") && splits.iter().any(|s| s == "challenging") {
        splits.push("full".into());
    }
    splits
}

fn evaluate_stage<'a>(config: &'a Config, layout: &Layout) -> Stage<'a> {
    let stage_layout = layout.clone();
    let name = run_stage_name("evaluate", layout.run.as_deref());
    Stage::new(name, code_version::EVALUATE, move |_ctx| {
        use crate::evaluation::{EvalRequest, evaluate_two_stage};
        use crate::inference::Models;
        let layout = &stage_layout;
        let reports = layout.reports();
        std::fs::create_dir_all(&reports)?;
        let plan = read_plan_parquet(&layout.plan())?;
        let stage1 = checkpoint_of(&layout.model(1));
        let device = config.train.device.to_string();
        let mut variants =
            vec![("cnn6", Models { stage1: stage1.clone(), stage2: None, device: device.clone() })];
        if config.train.second_stage {
            let stage2 = Some(checkpoint_of(&layout.model(2)));
            variants.push(("cnn6-7", Models { stage1, stage2, device }));
        }
        let mut table = String::from(
            "NME ×100 in original image coordinates (two-stage inference path):\n  split          model    faces    NME  median  fail@0.08 fail@0.10\n",
        );
        let mut results: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        let mut other_rows = Vec::new();
        for split in evaluation_splits(&plan) {
            let mut mean_shape = None;
            for (name, models) in &variants {
                let report = evaluate_two_stage(&EvalRequest {
                    out_root: &layout.root,
                    models,
                    split: &split,
                    normaliser: config.train.normaliser.as_deref(),
                    params: &config.render,
                })
                .map_err(|e| format!("{e:#}"))?;
                let json = reports.join(format!("{name}-{split}.json"));
                let ced = reports.join(format!("ced-{name}-{split}.png"));
                report.write(&json, &ced).map_err(|e| format!("{e:#}"))?;
                let s = &report.summary;
                let fail = |k: usize| s.thresholds.get(k).map_or(f64::NAN, |t| 100.0 * t.failure_rate);
                table.push_str(&format!(
                    "  {split:<14} {name:<7} {:>6} {:>6.2} {:>7.2} {:>9.1}% {:>8.1}%\n",
                    s.faces, s.mean_nme_percent, s.median_nme_percent, fail(0), fail(1)
                ));
                results.insert(format!("{name}/{split}"), serde_json::to_value(s)?);
                for (other, o) in &report.other_normalisers {
                    results.insert(format!("{name}/{split}@{other}"), serde_json::to_value(&o.summary)?);
                    other_rows.push(format!(
                        "  {:<26} {name:<7} {:>6} {:>6.2} {:>7.2}\n",
                        format!("{split}@{other}"), o.summary.faces, o.summary.mean_nme_percent, o.summary.median_nme_percent
                    ));
                    if name == &variants[variants.len() - 1].0 {
                        results.insert(format!("mean-shape/{split}@{other}"), serde_json::to_value(&o.mean_shape)?);
                        other_rows.push(format!(
                            "  {:<26} {:<7} {:>6} {:>6.2} {:>7.2}\n",
                            format!("{split}@{other}"), "mean", o.mean_shape.faces, o.mean_shape.mean_nme_percent, o.mean_shape.median_nme_percent
                        ));
                    }
                }
                mean_shape = Some(report.mean_shape.clone());
            }
            if let Some(s) = mean_shape {
                let fail = |k: usize| s.thresholds.get(k).map_or(f64::NAN, |t| 100.0 * t.failure_rate);
                table.push_str(&format!(
                    "  {split:<14} {:<7} {:>6} {:>6.2} {:>7.2} {:>9.1}% {:>8.1}%\n",
                    "mean", s.faces, s.mean_nme_percent, s.median_nme_percent, fail(0), fail(1)
                ));
                results.insert(format!("mean-shape/{split}"), serde_json::to_value(&s)?);
            }
        }
        if !other_rows.is_empty() {
            table.push_str("The same predictions under the scheme's other normalisers:\n");
            table.extend(other_rows);
        }
        eprint!("{table}");
        manifests::write_atomic(reports.join("evaluation.txt"), table.as_bytes())?;
        manifests::write_atomic(reports.join("evaluation.json"), serde_json::to_string_pretty(&results)?.as_bytes())?;
        Ok::<_, BoxError>(StageReport::new().rows("reports", results.len() as u64))
    })
    .params(json!({ "normaliser": config.train.normaliser, "device": config.train.device, "render": config.render }))
    .inputs(config.train.levels().iter().map(|&level| layout.model(level)))
    .input(layout.faces())
    .input(layout.plan())
    .input(layout.balance_summary())
    .output(layout.reports())
}
