//! `wingflow experiment losses`: the Wing-loss paper's loss study on a synthetic 300W-format
//! benchmark.
//!
//! Steps, all as library calls except training: `synth` writes a 300W tree (its `ibug`
//! folder, the challenging split, gets the hardest poses) → ingest → align (GPA of the training
//! shapes) → pca (pose component) → balance twice, with pose-based data balancing and without
//! it (replication off: `max_replication = 1`) → render both plans → `wingflow-train train`
//! subprocesses for CNN-6 and CNN-7 with L2, L1, smooth L1 and Wing, the same steps, batch and
//! seeds for all → evaluation of every CNN-6 alone and of every CNN-6/7 pair through the
//! two-stage inference path ([`crate::evaluation::evaluate_two_stage`]) on the `full` test split
//! (common + challenging), in original image coordinates.
//!
//! Outputs in OUT_DIR: `results.json` (every run's NMEs), `results.md` (the paper's table
//! layout: rows CNN-6, CNN-6 + PDB, CNN-6/7, CNN-6/7 + PDB; columns L2, L1, smooth L1, Wing;
//! NME ×100 mean ± std over seeds), one CED PNG per row, and the data, shards and runs under
//! `data/`, `work/`, `runs/`. Finished training runs are reused when the command is run again
//! (a long full-budget run can be interrupted and continued).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::ValueEnum;
use contract::scheme::{self, Scheme};
use faces::face::FaceRecord;
use faces::faces_table::write_faces_parquet;
use faces::ingest::{IngestPolicy, SourceConfig, SourceKind, ingest};
use render::{RenderInputs, RenderParams, render_shards};
use serde::Serialize;
use shapes::align::{AlignParams, align_shapes};
use shapes::balance::{BalanceParams, BalanceSample, TRAIN, balance};
use shapes::pca::{PcaParams, fit_shape_model};
use shapes::plan_table::{write_plan_parquet, write_summary_json};
use synth::{SynthConfig, SynthFormat, generate};

use crate::evaluation::{EvalRequest, evaluate_two_stage, mean_shape_baseline};
use crate::inference::Models;
use crate::trainer_bin::train_command;
use contract::layout::Layout;
use contract::metrics::{ErrorSummary, sorted_quantile};
use contract::training::{Arch, TrainRequest};
use report::ced::{CedSeries, plot_ced};

/// How much compute the study spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum Budget {
    /// Minutes on a 2-core CPU (about 8): 240 faces, 150 CNN-6 / 25 CNN-7 steps, one seed. Its differences are
    /// within noise; it shows the machinery, not the result.
    Quick,
    /// 3 seeds, 1500 faces, 1000 CNN-6 / 1500 CNN-7 steps of batch 16: about 10 hours on 2 CPU
    /// cores (CNN-6 trains at ≈ 110 images/s there, CNN-7 at ≈ 20), minutes on a GPU. Finished
    /// runs are reused and unfinished ones resume from their last checkpoint, so it can be run
    /// in several sittings.
    Full,
}

/// The settings a budget stands for (each can be overridden on the command line).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudySettings {
    /// The budget named.
    pub budget: Budget,
    /// Synthetic faces (all splits).
    pub faces: usize,
    /// Image side range of the synthetic images.
    pub image_size: (u32, u32),
    /// Seeds (training seeds 0..seeds; the data is the same for all).
    pub seeds: u32,
    /// CNN-6 optimiser steps per run.
    pub stage1_steps: u64,
    /// CNN-7 optimiser steps per run.
    pub stage2_steps: u64,
    /// Batch size of every run.
    pub batch_size: usize,
    /// Initial learning rate (Adam, cosine to 1/100 of it) of the CNN-6 runs.
    pub lr: f64,
    /// Initial learning rate of the CNN-7 runs. Lower than CNN-6's: at 1e-3 CNN-7 sticks near
    /// the mean shape for hundreds of steps (bench/README-losses.md, run 3).
    pub stage2_lr: f64,
    /// Losses compared (`l2`, `l1`, `smooth-l1`, `wing`).
    pub losses: Vec<String>,
    /// The stage-2 normalisation noise CNN-7 trains with: largest box-centre shift (fraction of
    /// the box side), box-side multiplier range, largest residual rotation (degrees). It stands
    /// for CNN-6's error at inference, so it must cover that error; a CNN-6 trained on a study
    /// budget errs more than the paper's (bench/README-losses.md, run 4).
    pub stage2_noise: (f64, (f64, f64), f64),
}

impl StudySettings {
    /// The defaults of a budget.
    pub fn for_budget(budget: Budget) -> Self {
        let losses = ["l2", "l1", "smooth-l1", "wing"]
            .map(str::to_owned)
            .to_vec();
        match budget {
            Budget::Quick => StudySettings {
                budget,
                faces: 240,
                image_size: (160, 220),
                seeds: 1,
                stage1_steps: 150,
                stage2_steps: 25,
                batch_size: 8,
                lr: 1e-3,
                stage2_lr: 1e-3,
                losses,
                stage2_noise: (0.05, (0.95, 1.05), 5.0),
            },
            Budget::Full => StudySettings {
                budget,
                faces: 1500,
                image_size: (240, 400),
                seeds: 3,
                stage1_steps: 1000,
                stage2_steps: 1500,
                batch_size: 16,
                lr: 1e-3,
                stage2_lr: 3e-4,
                losses,
                stage2_noise: (0.06, (0.92, 1.08), 12.0),
            },
        }
    }
}

/// Arguments of `wingflow experiment losses`.
#[derive(clap::Args, Debug)]
pub struct LossStudyArgs {
    /// Output folder (data, shards, runs, results.json, results.md, CED plots).
    pub out_dir: PathBuf,
    /// Compute budget.
    #[arg(long, value_enum, default_value = "quick")]
    pub budget: Budget,
    /// Seeds (default: 1 for quick, 3 for full).
    #[arg(long)]
    pub seeds: Option<u32>,
    /// Synthetic faces (overrides the budget's).
    #[arg(long)]
    pub faces: Option<usize>,
    /// CNN-6 steps per run (overrides the budget's).
    #[arg(long)]
    pub stage1_steps: Option<u64>,
    /// CNN-7 steps per run (overrides the budget's).
    #[arg(long)]
    pub stage2_steps: Option<u64>,
    /// Batch size (overrides the budget's).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Initial learning rate of the CNN-6 runs (overrides the budget's).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Initial learning rate of the CNN-7 runs (overrides the budget's).
    #[arg(long)]
    pub stage2_lr: Option<f64>,
    /// Only these losses (comma-separated: l2,l1,smooth-l1,wing).
    #[arg(long, value_delimiter = ',')]
    pub losses: Vec<String>,
    /// Skip CNN-7 (rows CNN-6 and CNN-6 + PDB only).
    #[arg(long)]
    pub stage1_only: bool,
    /// Skip the PDB variant (rows without PDB only).
    #[arg(long)]
    pub no_pdb_variant: bool,
    /// libtorch threads of each training run.
    #[arg(long)]
    pub threads: Option<u32>,
    /// Training chains run at once (each a seed, loss and data variant: CNN-6 then CNN-7).
    /// On a CPU, use `--jobs N --threads T` with N·T = cores; on a GPU, several small runs
    /// share it.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Device of the training runs: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Train nothing: evaluate the runs that have finished (a study still running elsewhere,
    /// or stopped) and write an interim table, `results-interim.md` and `.json`, whose cells
    /// say over how many seeds they are. The final `results.*` and CED plots are not touched.
    #[arg(long)]
    pub finished_only: bool,
}

/// One prepared data variant (with or without PDB): its output root and what it holds.
struct Variant {
    pdb: bool,
    root: PathBuf,
    train_rows: usize,
    /// The training sets of stage 1 and stage 2 (read once, after rendering).
    training_sets: [TrainingSet; 2],
}

/// A stage's shard folder and the identity of its training set: a digest of every training
/// shard's name and digest (from the set's index). A run is reused, resumed or evaluated only on
/// the very shards it was trained on: its folder name holds the settings, a file in it this
/// identity (the render settings that made the shards do not count, only their bytes).
struct TrainingSet {
    shards: PathBuf,
    id: String,
}

impl TrainingSet {
    fn read(root: &Path, stage: u8) -> Result<Self> {
        let shards = Layout::new(root).level_shards(stage);
        let index = shards.join("train").join("index.json");
        let set: render::ShardIndex = serde_json::from_slice(
            &std::fs::read(&index).with_context(|| format!("cannot read {}", index.display()))?,
        )
        .with_context(|| format!("{} is not a shard index", index.display()))?;
        let content: Vec<(&str, &str)> = set
            .shards
            .iter()
            .map(|e| (e.file.as_str(), e.blake3.as_str()))
            .collect();
        let id = manifests::digest_value(&content)?.to_string();
        Ok(TrainingSet { shards, id })
    }
}

impl Variant {
    fn name(&self) -> &'static str {
        if self.pdb { "pdb" } else { "no-pdb" }
    }
}

/// One evaluated model.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Table row: `CNN-6`, `CNN-6 + PDB`, `CNN-6/7`, `CNN-6/7 + PDB`.
    pub method: String,
    /// Loss name.
    pub loss: String,
    /// Training seed.
    pub seed: u32,
    /// NME ×100 on `full` (common + challenging).
    pub full: ErrorSummary,
    /// NME ×100 on `common`.
    pub common: ErrorSummary,
    /// NME ×100 on `challenging` (the large poses).
    pub challenging: ErrorSummary,
    /// NME ×100 per |yaw| bin.
    pub per_yaw_bin: BTreeMap<String, ErrorSummary>,
    /// Per-face NMEs on `full` (fractions), for the CED.
    #[serde(skip)]
    pub nmes: Vec<f64>,
}

/// Everything `results.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct StudyResults {
    /// For an interim table (`--finished-only`): how many runs the whole study has; the
    /// table holds only the finished ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interim: Option<usize>,
    /// The settings used.
    pub settings: StudySettings,
    /// NME normaliser.
    pub normaliser: String,
    /// Test faces per split.
    pub test_faces: BTreeMap<String, usize>,
    /// Training rows without and with PDB.
    pub train_rows: BTreeMap<String, usize>,
    /// The mean-shape baseline (mean training shape placed in each test face's stage-1 box).
    pub mean_shape_baseline: ErrorSummary,
    /// Every evaluated model.
    pub runs: Vec<RunResult>,
}

/// The paper's rows, in order.
pub const METHODS: [&str; 4] = ["CNN-6", "CNN-6 + PDB", "CNN-6/7", "CNN-6/7 + PDB"];

/// `wingflow experiment losses`.
pub fn loss_study(args: &LossStudyArgs) -> Result<StudyResults> {
    let mut s = StudySettings::for_budget(args.budget);
    if let Some(v) = args.seeds {
        s.seeds = v;
    }
    if let Some(v) = args.faces {
        s.faces = v;
    }
    if let Some(v) = args.stage1_steps {
        s.stage1_steps = v;
    }
    if let Some(v) = args.stage2_steps {
        s.stage2_steps = v;
    }
    if let Some(v) = args.batch_size {
        s.batch_size = v;
    }
    if let Some(v) = args.lr {
        s.lr = v;
    }
    if let Some(v) = args.stage2_lr {
        s.stage2_lr = v;
    }
    if !args.losses.is_empty() {
        s.losses = args.losses.clone();
    }
    if args.stage1_only {
        s.stage2_steps = 0; // No CNN-7 is trained (the report says so).
    }
    ensure!(s.seeds >= 1, "--seeds must be at least 1");
    ensure!(s.faces >= 40, "--faces must be at least 40");
    let started = Instant::now();
    let out = &args.out_dir;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    if s.budget == Budget::Quick {
        println!(
            "quick budget: {} faces, {} CNN-6 / {} CNN-7 steps, {} seed(s). Differences between \
             losses at this budget are within noise: it shows the machinery, not the result \
             (use --budget full).",
            s.faces, s.stage1_steps, s.stage2_steps, s.seeds
        );
    }

    let data = out.join("data");
    ensure!(
        !args.finished_only || data.join(synth::TRUTH_FILE).exists(),
        "--finished-only: {} holds no study (no synthetic set in {})",
        out.display(),
        data.display()
    );
    if data.join(synth::TRUTH_FILE).exists() {
        println!("reusing the synthetic set in {}", data.display());
    } else {
        let mut config = SynthConfig::new(SynthFormat::W300);
        config.count = s.faces;
        config.seed = 2018;
        config.image_size = s.image_size;
        let t = Instant::now();
        let summary = generate(&config, &data, &|| {})?;
        println!(
            "synth: {} faces in {:.1}s ({:?})",
            summary.faces,
            t.elapsed().as_secs_f64(),
            summary.per_split
        );
    }
    let source = SourceConfig::new(SourceKind::W300, std::path::absolute(&data)?);
    let faces = ingest(&[source], &IngestPolicy::default())?.faces;
    let scheme = scheme::by_name(&faces[0].scheme)?;
    // The study's shards are rendered as before augmentation epochs (one epoch, replica 0 of
    // every face unperturbed, every duplicate rotated): its tables stay comparable with the
    // published ones until the study itself gains augmentation epochs.
    let mut params = RenderParams {
        epochs: 1,
        ..RenderParams::default()
    };
    params.augment.keep_original = true;
    params.augment.rotation_probability = 1.0;
    let (shift, scale, rotation) = s.stage2_noise;
    params.augment.stage2_translation_max = shift;
    params.augment.stage2_scale_range = scale;
    params.augment.stage2_rotation_max_deg = rotation;
    let coefficients = pose_coefficients(&faces, scheme)?;
    let mut variants = Vec::new();
    for pdb in [false, true] {
        if pdb && args.no_pdb_variant {
            continue;
        }
        variants.push(prepare_variant(
            out,
            &faces,
            &coefficients,
            scheme,
            &params,
            pdb,
        )?);
    }
    let normaliser = contract::scheme::resolve_normaliser(scheme.name, None)?;
    let test: Vec<&FaceRecord> = faces
        .iter()
        .filter(|f| f.split == "common" || f.split == "challenging")
        .collect();
    ensure!(!test.is_empty(), "the synthetic set has no test faces");
    let baseline = mean_shape_baseline(&faces, &test, &params, &normaliser)?;
    println!(
        "mean-shape baseline on full: NME {:.2} (×100)",
        baseline.mean_nme_percent
    );

    // One cell = one (seed, loss, data variant): CNN-6, its evaluation, then CNN-7 and the
    // two-stage evaluation. Cells are independent (own run folders, own scratch folders), so
    // `--jobs` of them run at once; results keep the cells' order whatever finishes first.
    let mut cells: Vec<(u32, &String, &Variant)> = Vec::new();
    for seed in 0..s.seeds {
        for loss in &s.losses {
            cells.extend(variants.iter().map(|v| (seed, loss, v)));
        }
    }
    let run_cell = |&(seed, loss, v): &(u32, &String, &Variant)| -> Result<Vec<RunResult>> {
        let suffix = if v.pdb { " + PDB" } else { "" };
        let run_dir = |stage| {
            out.join("runs")
                .join(v.name())
                .join(run_name(stage, loss, &s, seed))
        };
        let run6 = run_dir(1);
        if !trained(args, &s, v, 1, loss, seed, &run6)? {
            return Ok(Vec::new());
        }
        let w6 = run6.join("last.safetensors");
        let evaluate = |stage2: Option<&Path>, method: &str| {
            evaluate(args, v, &params, &w6, stage2, method, loss, seed)
        };
        let mut results = vec![evaluate(None, &format!("CNN-6{suffix}"))?];
        if !args.stage1_only {
            let run7 = run_dir(2);
            if trained(args, &s, v, 2, loss, seed, &run7)? {
                let w7 = run7.join("last.safetensors");
                results.push(evaluate(Some(&w7), &format!("CNN-6/7{suffix}"))?);
            }
        }
        Ok(results)
    };
    let runs = run_parallel(&cells, args.jobs.max(1), run_cell)?
        .into_iter()
        .flatten()
        .collect();
    let mut test_faces = BTreeMap::new();
    for f in &test {
        *test_faces.entry(f.split.clone()).or_insert(0) += 1;
    }
    let planned_runs = cells.len() * if args.stage1_only { 1 } else { 2 };
    let results = StudyResults {
        interim: args.finished_only.then_some(planned_runs),
        settings: s,
        normaliser: normaliser.to_string(),
        test_faces,
        train_rows: variants
            .iter()
            .map(|v| (v.name().to_owned(), v.train_rows))
            .collect(),
        mean_shape_baseline: baseline,
        runs,
    };
    let json = serde_json::to_string_pretty(&results)?;
    let table = results_markdown(&results);
    if args.finished_only {
        let (json_path, md_path) = (
            out.join("results-interim.json"),
            out.join("results-interim.md"),
        );
        manifests::write_atomic(&json_path, json.as_bytes())?;
        manifests::write_atomic(&md_path, table.as_bytes())?;
        println!("{table}");
        println!(
            "interim results ({} of {planned_runs} runs finished): {} and {}",
            results.runs.len(),
            json_path.display(),
            md_path.display()
        );
        return Ok(results);
    }
    manifests::write_atomic(out.join("results.json"), json.as_bytes())?;
    manifests::write_atomic(out.join("results.md"), table.as_bytes())?;
    for method in METHODS {
        let series: Vec<CedSeries> = results
            .settings
            .losses
            .iter()
            .filter_map(|loss| {
                let nmes: Vec<f64> = results
                    .runs
                    .iter()
                    .filter(|r| r.method == method && &r.loss == loss)
                    .flat_map(|r| r.nmes.iter().copied())
                    .collect();
                (!nmes.is_empty()).then(|| CedSeries {
                    label: loss.clone(),
                    nmes,
                })
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        let png = out.join(format!("ced-{}.png", slug(method)));
        plot_ced(
            &png,
            &format!("CED on full, {method} (all seeds pooled)"),
            &series,
            ced_range(&series),
        )?;
    }
    println!("{table}");
    println!(
        "results: {} and {}; CED plots: {}/ced-*.png ({:.0}s in all)",
        out.join("results.json").display(),
        out.join("results.md").display(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(results)
}

/// `f` over `items` on `jobs` threads; the results in the items' order. Workers take the next
/// item as they finish one; after a failure no new item starts, and the first error (in item
/// order) is returned once the running items end.
fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let slots: Vec<std::sync::Mutex<Option<Result<R>>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(items.len()) {
            scope.spawn(|| {
                use std::sync::atomic::Ordering::SeqCst;
                while !failed.load(SeqCst) {
                    let i = next.fetch_add(1, SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let result = f(item);
                    if result.is_err() {
                        failed.store(true, SeqCst);
                    }
                    *slots[i].lock().expect("no worker panics holding a slot") = Some(result);
                }
            });
        }
    });
    let mut out = Vec::with_capacity(items.len());
    for slot in slots {
        match slot.into_inner().expect("no worker panics holding a slot") {
            Some(result) => out.push(result?),
            None => bail!("stopped after an earlier failure"),
        }
    }
    Ok(out)
}

/// The NME range of a CED plot: the field's usual 0–0.10, widened (up to 0.5) when most faces
/// lie beyond it, as they do after a quick budget.
fn ced_range(series: &[CedSeries]) -> f64 {
    let mut all: Vec<f64> = series.iter().flat_map(|s| s.nmes.iter().copied()).collect();
    all.sort_by(f64::total_cmp);
    let p90 = sorted_quantile(&all, 0.9).unwrap_or(0.0);
    (p90 * 1.1).clamp(0.10, 0.5)
}

fn slug(method: &str) -> String {
    method
        .to_ascii_lowercase()
        .replace(" + ", "-")
        .replace(['/', ' '], "-")
}

/// The pose coefficient of every face: GPA + PCA of the training shapes, then the projection of
/// every face (training or not) on the pose component.
fn pose_coefficients(faces: &[FaceRecord], scheme: &Scheme) -> Result<Vec<f64>> {
    let l = scheme.num_points();
    let train: Vec<usize> = (0..faces.len())
        .filter(|&i| faces[i].split == TRAIN)
        .collect();
    let shapes: Vec<f32> = train
        .iter()
        .flat_map(|&i| faces[i].landmarks.iter().copied())
        .collect();
    let alignment = align_shapes(
        &shapes,
        l,
        &AlignParams::default(),
        Some(&scheme.flip_permutation),
    )?;
    let fit = fit_shape_model(&alignment, &scheme.flip_permutation, &PcaParams::default())?;
    println!(
        "pca: pose component PC{} (flip score {:.3}, {:.0}% of the variance)",
        fit.model.pose_component + 1,
        fit.model.pose_flip_score(),
        100.0 * fit.model.explained_variance_ratio[fit.model.pose_component]
    );
    let mut out: Vec<f64> = faces
        .iter()
        .map(|f| fit.model.pose_coefficient(&f.landmarks).unwrap_or(f64::NAN))
        .collect();
    for (k, &i) in train.iter().enumerate() {
        out[i] = fit.coefficients[k];
    }
    Ok(out)
}

/// Balance (with or without PDB) and render one data variant under `out/work/<name>/`, in the
/// DAG's layout (faces.parquet, plan.parquet, balance.json, shards/).
fn prepare_variant(
    out: &Path,
    faces: &[FaceRecord],
    coefficients: &[f64],
    scheme: &Scheme,
    params: &RenderParams,
    pdb: bool,
) -> Result<Variant> {
    let root = out.join("work").join(if pdb { "pdb" } else { "no-pdb" });
    std::fs::create_dir_all(&root)?;
    let samples: Vec<BalanceSample> = faces
        .iter()
        .zip(coefficients)
        .map(|(f, &c)| BalanceSample {
            sample_id: f.sample_id.clone(),
            split: f.split.clone(),
            pose_coefficient: c.is_finite().then_some(c),
        })
        .collect();
    let balance_params = BalanceParams {
        max_replication: if pdb { None } else { Some(1) },
        num_points: scheme.num_points(),
        crop_stage1: params.stage1_size,
        crop_stage2: params.stage2_size,
        ..BalanceParams::default()
    };
    let plan = balance(&samples, &balance_params)?;
    let layout = Layout::new(&root);
    write_faces_parquet(&layout.faces(), faces)?;
    write_plan_parquet(&layout.plan(), &plan.rows)?;
    write_summary_json(&layout.balance_summary(), &plan.summary)?;
    let train_rows = plan.rows.iter().filter(|r| r.split == TRAIN).count();
    let t = Instant::now();
    // The benchmark's images never change inside one output folder, so the path stands for
    // the content in the shards' incremental keys.
    let digest = |path: &str| path.to_owned();
    let report = render_shards(
        &RenderInputs {
            faces,
            plan: &plan.rows,
            scheme,
            params,
            source_digest: &digest,
        },
        &root,
        None,
        &|_| {},
    )?;
    println!(
        "{}: {} training rows; rendered {} crops ({} shards, {} fresh) in {:.1}s",
        if pdb { "PDB" } else { "no PDB" },
        train_rows,
        report.crops_rendered,
        report.rendered.len(),
        report.fresh.len(),
        t.elapsed().as_secs_f64()
    );
    let training_sets = [TrainingSet::read(&root, 1)?, TrainingSet::read(&root, 2)?];
    Ok(Variant {
        pdb,
        root,
        train_rows,
        training_sets,
    })
}

/// A training run's folder name: network, loss, steps × batch, learning rate and seed. Runs
/// with other settings (another budget) get other folders, so a finished run is reused, or an
/// unfinished one resumed, only for exactly the settings it was started with.
fn run_name(stage: u8, loss: &str, s: &StudySettings, seed: u32) -> String {
    let (arch, steps, lr) = if stage == 1 {
        ("cnn6", s.stage1_steps, s.lr)
    } else {
        ("cnn7", s.stage2_steps, s.stage2_lr)
    };
    format!("{arch}-{loss}-{steps}x{}-lr{lr}-s{seed}", s.batch_size)
}

/// The file in a run folder naming the training set it was trained on (a digest of its shards'
/// names and digests).
const RUN_DATA_FILE: &str = "train-shards.id";

/// Refuse a run folder trained on other shards than `data_id` names. A run folder without the
/// record (from before it existed) is taken as trained on these shards and gets it.
fn check_run_data(run: &Path, data_id: &str, shards: &Path) -> Result<()> {
    let id_file = run.join(RUN_DATA_FILE);
    match std::fs::read_to_string(&id_file) {
        Ok(recorded) if recorded.trim() != data_id => bail!(
            "{} was trained on other shards than {} now holds (the data or its render settings \
             changed); move that run away or use a new output folder",
            run.display(),
            shards.display()
        ),
        Ok(_) => Ok(()),
        Err(_) if run.is_dir() => Ok(manifests::write_atomic(&id_file, data_id.as_bytes())?),
        Err(_) => Ok(()),
    }
}

/// Whether a run folder holds a finished run (its `last.json` says step = total_steps).
fn finished(run: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(run.join("last.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(v.get("step")? == v.get("total_steps")?)
}

/// Make `run` ready for evaluation: train one network with `wingflow-train train` (stdout to
/// `<run>/train.out`), resuming an unfinished run and reusing a finished one. With
/// `--finished-only`, train nothing and say whether it has finished. A run trained on other
/// shards is refused either way.
#[allow(clippy::too_many_arguments)]
fn trained(
    args: &LossStudyArgs,
    s: &StudySettings,
    v: &Variant,
    stage: u8,
    loss: &str,
    seed: u32,
    run: &Path,
) -> Result<bool> {
    let set = &v.training_sets[stage as usize - 1];
    let state = finished(run);
    // With `--finished-only`, unfinished runs (perhaps being trained elsewhere) are left alone.
    if args.finished_only && state != Some(true) {
        return Ok(false);
    }
    check_run_data(run, &set.id, &set.shards)?;
    if args.finished_only {
        return Ok(true);
    }
    let label = format!("{} stage {stage} {loss} seed {seed}", v.name());
    match state {
        Some(true) => {
            println!("  {label}: finished earlier, reused");
            return Ok(true);
        }
        Some(false) => println!("  {label}: resuming"),
        None => {}
    }
    std::fs::create_dir_all(run)?;
    manifests::write_atomic(run.join(RUN_DATA_FILE), set.id.as_bytes())?;
    let (steps, lr) = if stage == 1 {
        (s.stage1_steps, s.lr)
    } else {
        (s.stage2_steps, s.stage2_lr)
    };
    let request = if state == Some(false) {
        TrainRequest {
            out: run.to_owned(),
            steps: Some(steps),
            device: args.device.parse()?,
            resume: true,
            ..TrainRequest::default()
        }
    } else {
        TrainRequest {
            shards: Some(set.shards.clone()),
            out: run.to_owned(),
            arch: Arch::for_level(stage)?,
            loss: loss.parse()?,
            steps: Some(steps),
            batch_size: s.batch_size,
            lr,
            final_lr: lr / 100.0,
            seed: u64::from(seed),
            no_val: true,
            log_every: (steps / 10).max(1),
            checkpoint_every: (steps / 4).max(1),
            device: args.device.parse()?,
            ..TrainRequest::default()
        }
    };
    std::fs::create_dir_all(run)?;
    let mut cmd = train_command(&request, &run.join("request.json"), args.threads)?;
    let log = std::fs::File::create(run.join("train.out"))?;
    let t = Instant::now();
    let status = cmd
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!(
            "training {label} failed ({status}); see {}",
            run.join("train.out").display()
        );
    }
    println!(
        "  {label}: {steps} steps in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    Ok(true)
}

/// Evaluate one model on `full` through the two-stage path and split the result by split.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    args: &LossStudyArgs,
    v: &Variant,
    params: &RenderParams,
    stage1: &Path,
    stage2: Option<&Path>,
    method: &str,
    loss: &str,
    seed: u32,
) -> Result<RunResult> {
    let models = Models {
        stage1: stage1.to_owned(),
        stage2: stage2.map(Path::to_owned),
        device: args.device.clone(),
    };
    let report = evaluate_two_stage(&EvalRequest {
        out_root: &v.root,
        models: &models,
        split: "full",
        normaliser: None,
        params,
    })?;
    let name = format!("eval-{}", slug(method));
    let dir = stage2.unwrap_or(stage1).parent().unwrap_or(Path::new("."));
    report.write(
        &dir.join(format!("{name}.json")),
        &dir.join(format!("{name}-ced.png")),
    )?;
    let of = |split: &str| -> Vec<f64> {
        report
            .per_face
            .iter()
            .filter(|f| f.split == split)
            .map(|f| f.nme_percent / 100.0)
            .collect()
    };
    let result = RunResult {
        method: method.to_owned(),
        loss: loss.to_owned(),
        seed,
        full: report.summary.clone(),
        common: ErrorSummary::new(&of("common")),
        challenging: ErrorSummary::new(&of("challenging")),
        per_yaw_bin: report.per_yaw_bin.clone(),
        nmes: report.nmes(),
    };
    println!(
        "  {method:<14} {loss:<9} seed {seed}: NME full {:.2}, common {:.2}, challenging {:.2}",
        result.full.mean_nme_percent,
        result.common.mean_nme_percent,
        result.challenging.mean_nme_percent
    );
    if stage2.is_none() {
        // What CNN-7's stage-2 noise has to cover (the same for every CNN-7 on this CNN-6).
        println!("  {:<14} {}", "", report.stage2_normalisation);
    }
    Ok(result)
}

/// Mean and sample standard deviation.
fn mean_std(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    let std = (values.len() > 1)
        .then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, std)
}

/// The results as markdown: one table per test split in the paper's layout.
pub fn results_markdown(r: &StudyResults) -> String {
    let s = &r.settings;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Loss study on a synthetic 300W-format benchmark\n\n\
         Budget `{:?}`: {} faces ({}), {} seed(s); CNN-6 {} steps, {}, batch {}, \
         Adam with cosine decay to 1/100 of the initial learning rate ({}). Training rows: {}. NME ×100, normalised by {}, in original \
         image coordinates, mean ± std over seeds. Mean-shape baseline (full): {:.2}.\n",
        s.budget,
        s.faces,
        r.test_faces
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
            + " test",
        s.seeds,
        s.stage1_steps,
        match s.stage2_steps {
            0 => "CNN-7 not trained".to_owned(),
            n => {
                let (shift, (lo, hi), rotation) = s.stage2_noise;
                format!(
                    "CNN-7 {n} steps (stage-2 noise: shift ±{:.0} %, scale {lo}–{hi}, \
                     rotation ±{rotation}°)",
                    100.0 * shift
                )
            }
        },
        s.batch_size,
        match s.stage2_steps {
            0 => format!("CNN-6 {}", s.lr),
            _ => format!("CNN-6 {}, CNN-7 {}", s.lr, s.stage2_lr),
        },
        r.train_rows
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.normaliser,
        r.mean_shape_baseline.mean_nme_percent
    );
    // Seeds per cell; when every cell has the same number, it is said once, not per cell.
    let mut seeds_per_cell: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for run in &r.runs {
        *seeds_per_cell
            .entry((run.method.as_str(), run.loss.as_str()))
            .or_default() += 1;
    }
    let mut counts = seeds_per_cell.values();
    let uniform = counts.next().copied().filter(|&n| counts.all(|&m| m == n));
    if let Some(planned) = r.interim {
        let cells = match uniform {
            Some(n) => format!("Every cell is over {n} of the {} seed(s)", s.seeds),
            None => format!(
                "A cell over fewer than {} seed(s) says how many in brackets",
                s.seeds
            ),
        };
        let _ = writeln!(
            md,
            "**Interim table: {} of the study's {planned} runs have finished.** {cells}; a \
             dash is a cell with no finished run.\n",
            r.runs.len(),
        );
    }
    if s.budget == Budget::Quick {
        md.push_str(
            "**Quick budget: the differences below are within noise.** It shows that the \
             machinery runs end to end; use `--budget full` for an ordering that means \
             something.\n\n",
        );
    }
    let names = |l: &str| match l {
        "l2" => "L2".to_owned(),
        "l1" => "L1".to_owned(),
        "smooth-l1" => "smooth L1".to_owned(),
        "wing" => "Wing".to_owned(),
        other => other.to_owned(),
    };
    type Pick = fn(&RunResult) -> f64;
    let tables: [(&str, Pick); 3] = [
        ("full (common + challenging)", |r| r.full.mean_nme_percent),
        ("common", |r| r.common.mean_nme_percent),
        ("challenging (large poses)", |r| {
            r.challenging.mean_nme_percent
        }),
    ];
    for (title, pick) in tables {
        let _ = writeln!(md, "## {title}\n");
        let _ = writeln!(
            md,
            "| method | {} |",
            s.losses
                .iter()
                .map(|l| names(l))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let _ = writeln!(md, "|---|{}", "---|".repeat(s.losses.len()));
        for method in METHODS {
            if !r.runs.iter().any(|x| x.method == method) {
                continue;
            }
            let cells: Vec<String> = s
                .losses
                .iter()
                .map(|loss| {
                    let v: Vec<f64> = r
                        .runs
                        .iter()
                        .filter(|x| x.method == method && &x.loss == loss)
                        .map(pick)
                        .collect();
                    let seeds = if v.len() < s.seeds as usize && uniform.is_none() {
                        format!(" ({} of {} seeds)", v.len(), s.seeds)
                    } else {
                        String::new()
                    };
                    match mean_std(&v) {
                        _ if v.is_empty() => "–".to_owned(),
                        (m, Some(sd)) => format!("{m:.2} ± {sd:.2}{seeds}"),
                        (m, None) => format!("{m:.2}{seeds}"),
                    }
                })
                .collect();
            let _ = writeln!(md, "| {method} | {} |", cells.join(" | "));
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_reused_only_on_the_shards_it_was_trained_on() {
        let tmp = tempfile::tempdir().unwrap();
        let (run, shards) = (tmp.path().join("run"), tmp.path().join("shards"));
        check_run_data(&run, "a", &shards).unwrap();
        assert!(
            !run.exists(),
            "no folder is made for a run that has not started"
        );
        std::fs::create_dir(&run).unwrap();
        check_run_data(&run, "a", &shards).unwrap();
        assert_eq!(
            std::fs::read_to_string(run.join(RUN_DATA_FILE)).unwrap(),
            "a"
        );
        check_run_data(&run, "a", &shards).unwrap();
        let err = check_run_data(&run, "b", &shards).unwrap_err().to_string();
        assert!(err.contains("other shards") && err.contains("run"), "{err}");
    }

    #[test]
    fn parallel_cells_keep_their_order_and_stop_on_failure() {
        let items: Vec<u64> = (0..9).collect();
        let slow_first = |&i: &u64| -> Result<u64> {
            std::thread::sleep(std::time::Duration::from_millis(20 * (9 - i)));
            Ok(i * i)
        };
        assert_eq!(
            run_parallel(&items, 3, slow_first).unwrap(),
            items.iter().map(|i| i * i).collect::<Vec<_>>()
        );
        let started = std::sync::atomic::AtomicUsize::new(0);
        let fail_at_two = |&i: &u64| -> Result<u64> {
            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if i == 2 {
                bail!("cell {i} failed");
            }
            Ok(i)
        };
        let err = run_parallel(&items, 1, fail_at_two).unwrap_err();
        assert_eq!(err.to_string(), "cell 2 failed");
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn mean_and_std_over_seeds() {
        let (m, sd) = mean_std(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((sd.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(mean_std(&[4.0]), (4.0, None));
        assert_eq!(slug("CNN-6/7 + PDB"), "cnn-6-7-pdb");
    }

    #[test]
    fn table_has_the_papers_layout() {
        let summary = |v: f64| ErrorSummary::new(&[v / 100.0]);
        let run = |method: &str, loss: &str, seed: u32, v: f64| RunResult {
            method: method.into(),
            loss: loss.into(),
            seed,
            full: summary(v),
            common: summary(v - 1.0),
            challenging: summary(v + 1.0),
            per_yaw_bin: BTreeMap::new(),
            nmes: vec![],
        };
        let mut settings = StudySettings::for_budget(Budget::Full);
        settings.losses = vec!["l2".into(), "wing".into()];
        settings.seeds = 2;
        let mut r = StudyResults {
            interim: None,
            settings,
            normaliser: "inter-ocular:36,45".into(),
            test_faces: BTreeMap::from([("common".into(), 10)]),
            train_rows: BTreeMap::new(),
            mean_shape_baseline: summary(20.0),
            runs: vec![
                run("CNN-6", "l2", 0, 5.0),
                run("CNN-6", "l2", 1, 7.0),
                run("CNN-6", "wing", 0, 4.0),
                run("CNN-6/7 + PDB", "wing", 0, 3.0),
            ],
        };
        let md = results_markdown(&r);
        assert!(md.contains("| method | L2 | Wing |"), "{md}");
        // A cell over fewer seeds than the study has says so.
        assert!(
            md.contains("| CNN-6 | 6.00 ± 1.41 | 4.00 (1 of 2 seeds) |"),
            "{md}"
        );
        assert!(
            md.contains("| CNN-6/7 + PDB | – | 3.00 (1 of 2 seeds) |"),
            "{md}"
        );
        assert!(!md.contains("| CNN-6 + PDB |"));
        assert!(!md.contains("within noise"));
        assert!(!md.contains("Interim"));
        r.interim = Some(16);
        let md = results_markdown(&r);
        assert!(
            md.contains("**Interim table: 4 of the study's 16 runs have finished.** A cell"),
            "{md}"
        );
        // Every cell over one seed: said once, not in every cell.
        r.runs.remove(1);
        let md = results_markdown(&r);
        assert!(md.contains("Every cell is over 1 of the 2 seed(s)"), "{md}");
        assert!(md.contains("| CNN-6 | 5.00 | 4.00 |"), "{md}");
    }
}
