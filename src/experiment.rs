//! `wingflow experiment losses`: the Wing-loss paper's loss study on a synthetic 300W-format
//! benchmark, run through the same DAG as `wingflow run`.
//!
//! `synth` writes a 300W tree once (`data/`; its `ibug` folder, the challenging split, gets the
//! hardest poses). Every data variant, an augmentation setting × a balance, is an output root
//! `work/<variant>/`:
//! - augmentation `static`: the shards as before augmentation epochs (one epoch, replica 0 of
//!   every face unperturbed, every duplicate rotated), the setting of the published tables;
//!   `fresh`: the render defaults (every training crop augmented, `[render] epochs`
//!   augmentation epochs);
//! - balance `pdb`: pose-based data balancing; `no-pdb`: no pose balance, every training face
//!   replicated uniformly to the PDB set's training size (`--no-pdb-rows equal`, so that "PDB"
//!   means pose balance alone) or once (`original`).
//!
//! Every cell (variant, loss, seed) is a `wingflow.toml` in its variant's root,
//! `work/<variant>/<run>.toml` with `[train] run = "<loss>-s<seed>"`: the cells of a variant
//! share its data stages (fresh through `wingflow.lock` after the first) and each trains CNN-6
//! and CNN-7 and evaluates them as its own named run (`models/<run>/`, `reports/<run>/`). The
//! training seed varies by cell (`[train] seed`); the data and its augmentation draws are the
//! same for every seed. Run again, the study reuses what has finished and resumes an
//! interrupted training from its last checkpoint; `wingflow run -c work/<variant>/<run>.toml`
//! redoes or inspects one cell by hand.
//!
//! Outputs in OUT_DIR: `results.json` (every run's NMEs on `full` = common + challenging, and on
//! each), `results.md` (the paper's table layout, one set of tables per augmentation setting:
//! rows CNN-6, CNN-6 + PDB, CNN-6/7, CNN-6/7 + PDB; columns L2, L1, smooth L1, Wing; NME ×100
//! mean ± std over seeds), one CED PNG per row.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::ValueEnum;
use contract::layout::Layout;
use contract::metrics::{ErrorSummary, sorted_quantile};
use contract::scheme;
use faces::face::FaceRecord;
use faces::faces_table::read_faces_parquet;
use pipeline::{Event, HashPolicy, RunOptions};
use render::RenderParams;
use report::ced::{CedSeries, plot_ced};
use serde::{Deserialize, Serialize};
use shapes::balance::TRAIN;
use shapes::plan_table::BalanceSummary;
use synth::{SynthConfig, SynthFormat, generate};

use crate::config::Config;
use crate::dag::run_stage_name;
use crate::evaluation::{TwoStageReport, mean_shape_baseline};

/// How much compute the study spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Budget {
    /// Minutes on a 2-core CPU (about 8): 240 faces, 150 CNN-6 / 25 CNN-7 steps, one seed. Its differences are
    /// within noise; it shows the machinery, not the result.
    Quick,
    /// 3 seeds, 1500 faces, 1000 CNN-6 / 1500 CNN-7 steps of batch 16: about 25 minutes a cell
    /// (one variant, loss and seed) on 2 CPU cores (CNN-6 trains at ≈ 110 images/s there,
    /// CNN-7 at ≈ 20), so hours for a table; minutes on a GPU. Finished cells are reused and an
    /// interrupted training resumes from its last checkpoint, so it can be run in several
    /// sittings.
    Full,
}

/// The settings a budget stands for (each can be overridden on the command line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Batch size of every run: the study's own (8, 16), smaller than the pipeline's default.
    pub batch_size: usize,
    /// Initial learning rate (Adam, cosine to 1/100 of it) of the CNN-6 runs: the pipeline's
    /// CNN-6 default.
    pub lr: f64,
    /// Initial learning rate of the CNN-7 runs. The full budget's is the pipeline's CNN-7
    /// default, lower than CNN-6's: at 1e-3 CNN-7 sticks near the mean shape for hundreds of
    /// steps (bench/README-losses.md, run 3). The quick budget keeps CNN-6's, its rate from
    /// before CNN-7 had one of its own (its 25 steps show the machinery, not the result).
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
        // The rates are the pipeline's per-network defaults (contract::training); the sizes,
        // lengths and batch sizes are the study's own.
        use contract::training::{Arch, default_budget};
        let (cnn6, cnn7) = (default_budget(Arch::Cnn6), default_budget(Arch::Cnn7));
        match budget {
            Budget::Quick => StudySettings {
                budget,
                faces: 240,
                image_size: (160, 220),
                seeds: 1,
                stage1_steps: 150,
                stage2_steps: 25,
                batch_size: 8,
                lr: cnn6.lr,
                stage2_lr: cnn6.lr,
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
                lr: cnn6.lr,
                stage2_lr: cnn7.lr,
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
    /// Balances compared (comma-separated): `pdb` (pose-based data balancing) and/or
    /// `no-pdb` (see `--no-pdb-rows`).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "pdb,no-pdb")]
    pub balance: Vec<Balance>,
    /// Augmentation settings compared (comma-separated): `fresh` (the render defaults: every
    /// training crop augmented, augmentation epochs) and/or `static` (the shards as before
    /// augmentation epochs, the published tables' setting).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fresh")]
    pub augmentation: Vec<Augmentation>,
    /// Augmentation epochs of the `fresh` variants (comma-separated: one variant each;
    /// default: the render default).
    #[arg(long, value_delimiter = ',')]
    pub epochs: Vec<u32>,
    /// Training rows of the variant without PDB: `equal` (the PDB set's count, every face
    /// replicated uniformly: the two differ in pose balance alone) or `original` (every face
    /// once, as in the published tables).
    #[arg(long, value_enum, default_value = "equal")]
    pub no_pdb_rows: NoPdbRows,
    /// libtorch threads of each training run.
    #[arg(long)]
    pub threads: Option<u32>,
    /// Cells run at once (each a seed, loss and data variant: CNN-6 then CNN-7); cells of one
    /// data variant take turns (they share its output root). On a CPU, use `--jobs N
    /// --threads T` with N·T = cores; on a GPU, several small runs share it.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Device of the training runs: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Train nothing: read the cells that have finished (a study still running elsewhere,
    /// or stopped) and write an interim table, `results-interim.md` and `.json`, whose cells
    /// say over how many seeds they are. The final `results.*` and CED plots are not touched.
    #[arg(long)]
    pub finished_only: bool,
    /// Runs of an earlier sitting to carry over: its `results.json` or `results-interim.json`
    /// (e.g. one kept from another machine). A cell whose runs it holds is not trained again.
    /// The file must be of this study: the same settings (seeds and losses aside), no-PDB rows,
    /// normaliser, test faces, mean-shape baseline and training rows, else it is refused.
    #[arg(long)]
    pub reuse: Vec<PathBuf>,
}

/// The augmentation setting of a data variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Augmentation {
    /// The shards as before augmentation epochs: one epoch, replica 0 of every face
    /// unperturbed, every duplicate rotated (the published tables' setting).
    Static,
    /// The render defaults: every training crop of every augmentation epoch augmented.
    Fresh,
}

/// The balance of a data variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Balance {
    /// Pose-based data balancing.
    Pdb,
    /// No pose balance (`--no-pdb-rows` says how many rows).
    NoPdb,
}

/// How many training rows the variant without PDB has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoPdbRows {
    /// As many as the PDB set, every face replicated uniformly (`[balance]
    /// uniform_train_rows`): the two differ in pose balance alone.
    Equal,
    /// Every face once (`max_replication = 1`): the published tables' baseline, which also has
    /// fewer training rows.
    Original,
}

/// One data variant: an output root whose cells share its data stages.
struct Variant {
    augmentation: Augmentation,
    /// Augmentation epochs of a `fresh` variant (1 for `static`).
    epochs: u32,
    pdb: bool,
    root: PathBuf,
}

impl Variant {
    fn new(out: &Path, augmentation: Augmentation, epochs: u32, pdb: bool) -> Variant {
        let mut v = Variant {
            augmentation,
            epochs,
            pdb,
            root: PathBuf::new(),
        };
        v.root = out.join("work").join(v.name());
        v
    }

    /// `static` or `fresh-eE`: the augmentation setting, as the tables name it.
    fn setting(&self) -> String {
        match self.augmentation {
            Augmentation::Static => "static".to_owned(),
            Augmentation::Fresh => format!("fresh-e{}", self.epochs),
        }
    }

    /// The setting and the balance (`fresh-e4-pdb`): the variant's folder under `work/`.
    fn name(&self) -> String {
        format!(
            "{}-{}",
            self.setting(),
            if self.pdb { "pdb" } else { "no-pdb" }
        )
    }
}

/// One evaluated model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Table row: `CNN-6`, `CNN-6 + PDB`, `CNN-6/7`, `CNN-6/7 + PDB`.
    pub method: String,
    /// The augmentation setting of its data: `static`, or `fresh-eE` (E augmentation epochs).
    pub augmentation: String,
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
    /// Per-face NMEs on `full` (fractions), for the CED (and so that a later sitting that
    /// reuses this run, `--reuse`, plots it too).
    pub nmes: Vec<f64>,
}

/// Everything `results.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyResults {
    /// For an interim table (`--finished-only`): how many runs the whole study has; the
    /// table holds only the finished ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interim: Option<usize>,
    /// The settings used.
    pub settings: StudySettings,
    /// The training rows of the variants without PDB.
    pub no_pdb_rows: NoPdbRows,
    /// NME normaliser.
    pub normaliser: String,
    /// Test faces per split.
    pub test_faces: BTreeMap<String, usize>,
    /// Training rows of each data variant.
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
    let s = settings(args)?;
    let started = Instant::now();
    let out = &std::path::absolute(&args.out_dir)?;
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

    let mut augmentations = args.augmentation.clone();
    augmentations.sort();
    augmentations.dedup();
    let mut epochs = if args.epochs.is_empty() {
        vec![RenderParams::default().epochs]
    } else {
        args.epochs.clone()
    };
    epochs.sort();
    epochs.dedup();
    let mut variants = Vec::new();
    for &augmentation in &augmentations {
        let epochs: &[u32] = match augmentation {
            Augmentation::Static => &[1],
            Augmentation::Fresh => &epochs,
        };
        for &e in epochs {
            for pdb in [true, false] {
                let balance = if pdb { Balance::Pdb } else { Balance::NoPdb };
                if args.balance.contains(&balance) {
                    variants.push(Variant::new(out, augmentation, e, pdb));
                }
            }
        }
    }
    let mut study = Study {
        args,
        settings: &s,
        data: &data,
        pdb_rows: 0,
    };
    study.pdb_rows = study.pdb_training_rows(&Variant::new(
        out,
        variants[0].augmentation,
        variants[0].epochs,
        true,
    ))?;
    // The data stages of every variant first, one variant at a time (render takes every core).
    let mut train_rows = BTreeMap::new();
    for v in &variants {
        let config = study.write_config(v, None, 0)?;
        let t = Instant::now();
        if !args.finished_only {
            run_pipeline(&config, Some("render"), &v.name())?;
        }
        let rows = training_rows(&Layout::new(&v.root))?;
        println!(
            "{}: {rows} training rows, data ready in {:.1}s",
            v.name(),
            t.elapsed().as_secs_f64()
        );
        train_rows.insert(v.name(), rows);
    }

    let first = Layout::new(&variants[0].root);
    let faces = read_faces_parquet(&first.faces())?;
    let scheme = scheme::by_name(&faces.first().context("the study has no faces")?.scheme)?;
    let normaliser = contract::scheme::resolve_normaliser(scheme.name, None)?;
    let test: Vec<&FaceRecord> = faces
        .iter()
        .filter(|f| f.split == "common" || f.split == "challenging")
        .collect();
    ensure!(!test.is_empty(), "the synthetic set has no test faces");
    let train: Vec<&FaceRecord> = faces.iter().filter(|f| f.split == TRAIN).collect();
    let baseline = mean_shape_baseline(
        &train,
        &test,
        &study.render_params(Augmentation::Static, 1),
        &[&normaliser],
    )?
    .remove(0);
    println!(
        "mean-shape baseline on full: NME {:.2} (×100)",
        baseline.mean_nme_percent
    );

    let mut test_faces = BTreeMap::new();
    for f in &test {
        *test_faces.entry(f.split.clone()).or_insert(0) += 1;
    }
    let mut results = StudyResults {
        interim: None,
        settings: s.clone(),
        no_pdb_rows: args.no_pdb_rows,
        normaliser: normaliser.to_string(),
        test_faces,
        train_rows,
        mean_shape_baseline: baseline,
        runs: Vec::new(),
    };
    let mut reused = Vec::new();
    for path in &args.reuse {
        reused.extend(reusable_runs(path, &results)?);
    }

    // One cell = one (seed, loss, data variant): its configuration run through the DAG. Cells
    // of different variants run at once (`--jobs`); cells of one variant share its output root
    // and its run lock, so they take turns. Results keep the cells' order.
    let mut cells: Vec<(u32, &String, usize)> = Vec::new();
    for seed in 0..s.seeds {
        for loss in &s.losses {
            cells.extend((0..variants.len()).map(|v| (seed, loss, v)));
        }
    }
    let run_cell = |&(seed, loss, v): &(u32, &String, usize)| -> Result<Vec<RunResult>> {
        let variant = &variants[v];
        let carried: Vec<RunResult> = study
            .methods(variant)
            .iter()
            .filter_map(|method| {
                reused.iter().find(|r| {
                    &r.method == method
                        && r.augmentation == variant.setting()
                        && &r.loss == loss
                        && r.seed == seed
                })
            })
            .cloned()
            .collect();
        if carried.len() == study.methods(variant).len() {
            println!(
                "  {} {}: reused from an earlier sitting (--reuse)",
                variant.name(),
                run_name(loss, seed)
            );
            return Ok(carried);
        }
        study.cell(variant, loss, seed)
    };
    results.runs = run_parallel(&cells, |c| c.2, args.jobs.max(1), run_cell)?
        .into_iter()
        .flatten()
        .collect();
    let planned_runs = cells.len() * if args.stage1_only { 1 } else { 2 };
    results.interim = args.finished_only.then_some(planned_runs);
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
    let mut settings: Vec<String> = variants.iter().map(Variant::setting).collect();
    settings.dedup();
    for setting in &settings {
        for method in METHODS {
            let series: Vec<CedSeries> = results
                .settings
                .losses
                .iter()
                .filter_map(|loss| {
                    let nmes: Vec<f64> = results
                        .runs
                        .iter()
                        .filter(|r| {
                            r.method == method && &r.loss == loss && &r.augmentation == setting
                        })
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
            let png = out.join(format!("ced-{setting}-{}.png", slug(method)));
            plot_ced(
                &png,
                &format!("CED on full, {method}, {setting} augmentation (all seeds pooled)"),
                &series,
                ced_range(&series),
            )?;
        }
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

/// The budget's settings with the command line's overrides.
fn settings(args: &LossStudyArgs) -> Result<StudySettings> {
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
    ensure!(
        !args.augmentation.is_empty(),
        "--augmentation names no setting"
    );
    for loss in &s.losses {
        loss.parse::<contract::training::LossKind>()?;
    }
    Ok(s)
}

/// What every cell's configuration is made from.
struct Study<'a> {
    args: &'a LossStudyArgs,
    settings: &'a StudySettings,
    /// The synthetic 300W tree.
    data: &'a Path,
    /// The training rows of the PDB set (what the variants without PDB are replicated to with
    /// `--no-pdb-rows equal`).
    pdb_rows: u64,
}

impl Study<'_> {
    /// The render parameters of an augmentation setting, with the study's stage-2 noise.
    fn render_params(&self, augmentation: Augmentation, epochs: u32) -> RenderParams {
        let mut params = RenderParams {
            epochs,
            ..RenderParams::default()
        };
        if augmentation == Augmentation::Static {
            params.epochs = 1;
            params.augment.keep_original = true;
            params.augment.rotation_probability = 1.0;
        }
        let (shift, scale, rotation) = self.settings.stage2_noise;
        params.augment.stage2_translation_max = shift;
        params.augment.stage2_scale_range = scale;
        params.augment.stage2_rotation_max_deg = rotation;
        params
    }

    /// Write the configuration of variant `v` with the training run of `loss` and `seed`
    /// (`work/<variant>/<run>.toml`; with no loss, the variant's data stages alone:
    /// `work/<variant>/data.toml`) and load it back, checked like any `wingflow.toml`.
    fn write_config(&self, v: &Variant, loss: Option<&str>, seed: u32) -> Result<Config> {
        let s = self.settings;
        let params = self.render_params(v.augmentation, v.epochs);
        let mut doc = crate::config::init_document(self.data, &v.root, &[])?;
        let mut set = |key: &str, value: toml_edit::Value| set_key(&mut doc, key, value);
        set("render.epochs", i64::from(params.epochs).into())?;
        let a = &params.augment;
        set("render.augment.keep_original", a.keep_original.into())?;
        set(
            "render.augment.rotation_probability",
            a.rotation_probability.into(),
        )?;
        set(
            "render.augment.stage2_translation_max",
            a.stage2_translation_max.into(),
        )?;
        let (lo, hi) = a.stage2_scale_range;
        set(
            "render.augment.stage2_scale_range",
            toml_edit::Array::from_iter([lo, hi]).into(),
        )?;
        set(
            "render.augment.stage2_rotation_max_deg",
            a.stage2_rotation_max_deg.into(),
        )?;
        if !v.pdb {
            match self.args.no_pdb_rows {
                NoPdbRows::Equal => set(
                    "balance.uniform_train_rows",
                    i64::try_from(self.pdb_rows)?.into(),
                )?,
                NoPdbRows::Original => set("balance.max_replication", 1i64.into())?,
            }
        }
        let file = match loss {
            None => {
                set("train.enabled", false.into())?;
                v.root.join("data.toml")
            }
            Some(loss) => {
                let run = run_name(loss, seed);
                set("train.run", run.as_str().into())?;
                set("train.seed", i64::from(seed).into())?;
                set("train.loss", loss.into())?;
                set("train.device", self.args.device.as_str().into())?;
                set("train.validation", false.into())?;
                if self.args.stage1_only {
                    set("train.second_stage", false.into())?;
                }
                if let Some(threads) = self.args.threads {
                    set("train.threads", i64::from(threads).into())?;
                }
                for (net, steps, lr) in [
                    ("cnn6", s.stage1_steps, s.lr),
                    ("cnn7", s.stage2_steps.max(1), s.stage2_lr),
                ] {
                    set(&format!("train.{net}.steps"), i64::try_from(steps)?.into())?;
                    set(
                        &format!("train.{net}.batch_size"),
                        i64::try_from(s.batch_size)?.into(),
                    )?;
                    set(&format!("train.{net}.lr"), lr.into())?;
                    set(&format!("train.{net}.final_lr"), (lr / 100.0).into())?;
                }
                v.root.join(format!("{run}.toml"))
            }
        };
        std::fs::create_dir_all(&v.root)?;
        manifests::write_if_changed(&file, doc.to_string().as_bytes())?;
        Config::load(&file)
    }

    /// The training rows of the PDB set: the balance stage of variant `pdb` (the balance does
    /// not depend on the augmentation).
    fn pdb_training_rows(&self, pdb: &Variant) -> Result<u64> {
        let config = self.write_config(pdb, None, 0)?;
        if !self.args.finished_only {
            run_pipeline(&config, Some("balance"), &pdb.name())?;
        }
        Ok(training_rows(&Layout::new(&pdb.root))? as u64)
    }

    /// Train and evaluate one cell (or, with `--finished-only`, read it if it has finished).
    fn cell(&self, v: &Variant, loss: &str, seed: u32) -> Result<Vec<RunResult>> {
        let config = self.write_config(v, Some(loss), seed)?;
        let run = run_name(loss, seed);
        let label = format!("{} {run}", v.name());
        let evaluate = run_stage_name("evaluate", Some(&run));
        if self.args.finished_only {
            let pipeline = crate::dag::build(&config)?;
            let status = pipeline.status(HashPolicy::TrustStat)?;
            if !status.get(&evaluate).is_some_and(|s| s.is_fresh()) {
                return Ok(Vec::new());
            }
        } else {
            let t = Instant::now();
            let summary = run_pipeline(&config, None, &label)?;
            if summary.ran().is_empty() {
                println!("  {label}: finished earlier, reused");
            } else {
                println!("  {label}: done in {:.0}s", t.elapsed().as_secs_f64());
            }
        }
        let reports = Layout::new(&v.root).for_run(Some(&run)).reports();
        let files = ["cnn6-full.json", "cnn6-7-full.json"];
        self.methods(v)
            .iter()
            .zip(files)
            .map(|(method, file)| {
                read_result(&reports.join(file), method, &v.setting(), loss, seed)
            })
            .collect()
    }

    /// The table rows a cell of variant `v` yields: CNN-6, then CNN-6/7 (unless
    /// `--stage1-only`), with ` + PDB` on a PDB variant.
    fn methods(&self, v: &Variant) -> Vec<String> {
        let suffix = if v.pdb { " + PDB" } else { "" };
        let mut methods = vec![format!("CNN-6{suffix}")];
        if !self.args.stage1_only {
            methods.push(format!("CNN-6/7{suffix}"));
        }
        methods
    }
}

/// The runs of an earlier sitting's results file (`--reuse`), once it is shown to be of the
/// study `current` (whose runs are not read): the same settings but for seeds and losses, the
/// same no-PDB rows, normaliser and test faces, the same mean-shape baseline (so the same
/// faces) and the same training rows in every variant both have.
fn reusable_runs(path: &Path, current: &StudyResults) -> Result<Vec<RunResult>> {
    let earlier: StudyResults = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a loss study's results file", path.display()))?;
    let refuse = |what: &str, was: String, is: String| {
        anyhow::anyhow!(
            "{}: not runs of this study: its {what}: {was}; this study's: {is}",
            path.display()
        )
    };
    let mut settings = earlier.settings.clone();
    settings.seeds = current.settings.seeds;
    settings.losses = current.settings.losses.clone();
    if settings != current.settings {
        return Err(refuse(
            "settings",
            serde_json::to_string(&settings)?,
            serde_json::to_string(&current.settings)?,
        ));
    }
    if earlier.no_pdb_rows != current.no_pdb_rows {
        return Err(refuse(
            "no-PDB rows",
            format!("{:?}", earlier.no_pdb_rows),
            format!("{:?}", current.no_pdb_rows),
        ));
    }
    if earlier.normaliser != current.normaliser || earlier.test_faces != current.test_faces {
        return Err(refuse(
            "normaliser and test set",
            format!("{} {:?}", earlier.normaliser, earlier.test_faces),
            format!("{} {:?}", current.normaliser, current.test_faces),
        ));
    }
    // Read back from JSON, a mean may differ from its computed value in the last bit.
    let (was, is) = (
        earlier.mean_shape_baseline.mean_nme_percent,
        current.mean_shape_baseline.mean_nme_percent,
    );
    if (was - is).abs() > 1e-9 * is.abs() {
        return Err(refuse("mean-shape NME", was.to_string(), is.to_string()));
    }
    for (variant, rows) in &earlier.train_rows {
        if let Some(now) = current.train_rows.get(variant)
            && now != rows
        {
            return Err(refuse(
                &format!("{variant} training-row count"),
                rows.to_string(),
                now.to_string(),
            ));
        }
    }
    println!(
        "reusing {} finished run(s) of {}",
        earlier.runs.len(),
        path.display()
    );
    Ok(earlier.runs)
}

/// A cell's training run name: loss and seed (its budget is in its configuration; a cell run
/// again with another budget retrains, as any DAG stage whose parameters changed).
fn run_name(loss: &str, seed: u32) -> String {
    format!("{}-s{seed}", loss.replace([':', ','], "_"))
}

/// Set `key` (dotted: `train.cnn6.steps`) in `doc`, creating the tables on its path.
fn set_key(doc: &mut toml_edit::DocumentMut, key: &str, value: toml_edit::Value) -> Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let leaf = parts.pop().context("empty key")?;
    let mut table = doc.as_table_mut();
    for part in parts {
        table = table
            .entry(part)
            .or_insert_with(toml_edit::table)
            .as_table_mut()
            .with_context(|| format!("{key}: `{part}` is not a table"))?;
    }
    table.insert(leaf, toml_edit::Item::Value(value));
    Ok(())
}

/// Run `config`'s pipeline (up to stage `until`), printing each stage that runs, prefixed by
/// `label`.
fn run_pipeline(config: &Config, until: Option<&str>, label: &str) -> Result<pipeline::RunSummary> {
    let mut pipeline = crate::dag::build(config)?;
    let options = RunOptions {
        until: until.map(str::to_owned),
        ..RunOptions::default()
    };
    let on_event = |event: &Event<'_>| match event {
        Event::Started { stage, .. } => println!("  {label}: {stage} running"),
        Event::Finished {
            stage, duration, ..
        } => println!("  {label}: {stage} done in {:.1}s", duration.as_secs_f64()),
        _ => {}
    };
    pipeline.run(&options, &on_event).with_context(|| {
        format!(
            "{label}: the pipeline of {} failed",
            config.output.display()
        )
    })
}

/// The training rows of the plan in `layout` (from `balance.json`).
fn training_rows(layout: &Layout) -> Result<usize> {
    let path = layout.balance_summary();
    let summary: BalanceSummary = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a balance summary", path.display()))?;
    Ok(summary
        .rows_per_split
        .iter()
        .find(|(split, _)| split == TRAIN)
        .map_or(0, |(_, n)| *n as usize))
}

/// One model's result from the evaluate stage's report on `full`, split by source split.
fn read_result(
    path: &Path,
    method: &str,
    augmentation: &str,
    loss: &str,
    seed: u32,
) -> Result<RunResult> {
    let report: TwoStageReport = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is not an evaluation report", path.display()))?;
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
        augmentation: augmentation.to_owned(),
        loss: loss.to_owned(),
        seed,
        full: report.summary.clone(),
        common: ErrorSummary::new(&of("common")),
        challenging: ErrorSummary::new(&of("challenging")),
        per_yaw_bin: report.per_yaw_bin.clone(),
        nmes: report.nmes(),
    };
    println!(
        "  {method:<14} {augmentation:<9} {loss:<9} seed {seed}: NME full {:.2}, common {:.2}, challenging {:.2}",
        result.full.mean_nme_percent,
        result.common.mean_nme_percent,
        result.challenging.mean_nme_percent
    );
    if report.stage2_checkpoint.is_none() {
        // What CNN-7's stage-2 noise has to cover (the same for every CNN-7 on this CNN-6).
        println!("  {:<14} {}", "", report.stage2_normalisation);
    }
    Ok(result)
}

/// `f` over `items` on `jobs` threads; the results in the items' order. Workers take the next
/// item whose key (`key_of`) no running item has, so items of one key never run at once; after
/// a failure no new item starts, and the first error (in item order) is returned once the
/// running items end.
fn run_parallel<T: Sync, K: PartialEq + Send, R: Send>(
    items: &[T],
    key_of: impl Fn(&T) -> K + Sync,
    jobs: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    struct Queue<K> {
        started: Vec<bool>,
        running: Vec<K>,
        failed: bool,
    }
    let queue = std::sync::Mutex::new(Queue {
        started: vec![false; items.len()],
        running: Vec::new(),
        failed: false,
    });
    let changed = std::sync::Condvar::new();
    let slots: Vec<std::sync::Mutex<Option<Result<R>>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let lock = || queue.lock().expect("no worker panics holding the queue");
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(items.len()) {
            scope.spawn(|| {
                loop {
                    let mut q = lock();
                    let i = loop {
                        if q.failed || q.started.iter().all(|&s| s) {
                            return;
                        }
                        let free = (0..items.len())
                            .find(|&i| !q.started[i] && !q.running.contains(&key_of(&items[i])));
                        match free {
                            Some(i) => break i,
                            None => {
                                q = changed.wait(q).expect("no worker panics holding the queue")
                            }
                        }
                    };
                    q.started[i] = true;
                    q.running.push(key_of(&items[i]));
                    drop(q);
                    let result = f(&items[i]);
                    let mut q = lock();
                    if result.is_err() {
                        q.failed = true;
                    }
                    let key = key_of(&items[i]);
                    if let Some(k) = q.running.iter().position(|r| *r == key) {
                        q.running.swap_remove(k);
                    }
                    drop(q);
                    *slots[i].lock().expect("no worker panics holding a slot") = Some(result);
                    changed.notify_all();
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
         Adam with cosine decay to 1/100 of the initial learning rate ({}). Training rows: {} \
         (without PDB: {}). NME ×100, normalised by {}, in original \
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
        match r.no_pdb_rows {
            NoPdbRows::Equal => "every face replicated uniformly to the PDB set's size",
            NoPdbRows::Original => "every face once",
        },
        r.normaliser,
        r.mean_shape_baseline.mean_nme_percent
    );
    // Seeds per cell; when every cell has the same number, it is said once, not per cell.
    let mut seeds_per_cell: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
    for run in &r.runs {
        *seeds_per_cell
            .entry((
                run.augmentation.as_str(),
                run.method.as_str(),
                run.loss.as_str(),
            ))
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
    let mut settings: Vec<&str> = r.runs.iter().map(|x| x.augmentation.as_str()).collect();
    settings.sort();
    settings.dedup();
    for setting in settings {
        let _ = writeln!(
            md,
            "# Augmentation `{setting}`\n\n{}\n",
            match setting.strip_prefix("fresh-e") {
                None => "One epoch; replica 0 of every face unperturbed, every duplicate rotated \
                         (the shards as before augmentation epochs)."
                    .to_owned(),
                Some(e) => format!(
                    "Every training crop augmented, in each of {e} augmentation epoch(s) (the \
                     render defaults)."
                ),
            }
        );
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
                let of_row = |x: &&RunResult| x.method == method && x.augmentation == setting;
                if !r.runs.iter().any(|x| of_row(&x)) {
                    continue;
                }
                let cells: Vec<String> = s
                    .losses
                    .iter()
                    .map(|loss| {
                        let v: Vec<f64> = r
                            .runs
                            .iter()
                            .filter(|x| of_row(x) && &x.loss == loss)
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
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_key_creates_the_tables_on_its_path() {
        let mut doc: toml_edit::DocumentMut = "[train]\nloss = \"wing\"\n".parse().unwrap();
        set_key(&mut doc, "train.cnn6.steps", 5i64.into()).unwrap();
        set_key(&mut doc, "train.loss", "l1".into()).unwrap();
        set_key(&mut doc, "balance.uniform_train_rows", 9i64.into()).unwrap();
        let text = doc.to_string();
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            parsed["train"]["cnn6"]["steps"].as_integer(),
            Some(5),
            "{text}"
        );
        assert_eq!(parsed["train"]["loss"].as_str(), Some("l1"), "{text}");
        assert_eq!(
            parsed["balance"]["uniform_train_rows"].as_integer(),
            Some(9)
        );
        assert!(set_key(&mut doc, "train.loss.x", 1i64.into()).is_err());
        assert_eq!(run_name("wing:10,2", 1), "wing_10_2-s1");
    }

    #[test]
    fn parallel_cells_keep_their_order_and_stop_on_failure() {
        let items: Vec<u64> = (0..9).collect();
        let slow_first = |&i: &u64| -> Result<u64> {
            std::thread::sleep(std::time::Duration::from_millis(20 * (9 - i)));
            Ok(i * i)
        };
        assert_eq!(
            run_parallel(&items, |&i| i, 3, slow_first).unwrap(),
            items.iter().map(|i| i * i).collect::<Vec<_>>()
        );
        // Items of one key never run at once, however many workers are free.
        let running = std::sync::Mutex::new(Vec::new());
        let exclusive = |&i: &u64| -> Result<u64> {
            let key = i % 2;
            {
                let mut r = running.lock().unwrap();
                assert!(!r.contains(&key), "two items of key {key} at once");
                r.push(key);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            running.lock().unwrap().retain(|&k| k != key);
            Ok(i)
        };
        assert_eq!(
            run_parallel(&items, |&i| i % 2, 4, exclusive).unwrap(),
            items
        );
        let started = std::sync::atomic::AtomicUsize::new(0);
        let fail_at_two = |&i: &u64| -> Result<u64> {
            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if i == 2 {
                bail!("cell {i} failed");
            }
            Ok(i)
        };
        let err = run_parallel(&items, |&i| i, 1, fail_at_two).unwrap_err();
        assert_eq!(err.to_string(), "cell 2 failed");
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn an_earlier_sittings_runs_are_reused_only_if_they_are_of_this_study() {
        let summary = |v: f64| ErrorSummary::new(&[v / 100.0]);
        let current = StudyResults {
            interim: None,
            settings: StudySettings::for_budget(Budget::Full),
            no_pdb_rows: NoPdbRows::Equal,
            normaliser: "inter-ocular:36,45".into(),
            test_faces: BTreeMap::from([("common".into(), 10)]),
            train_rows: BTreeMap::from([("fresh-e4-pdb".into(), 2961)]),
            mean_shape_baseline: summary(20.0),
            runs: Vec::new(),
        };
        let mut earlier = current.clone();
        earlier.interim = Some(24);
        earlier.settings.seeds = 1;
        earlier.settings.losses = vec!["wing".into()];
        earlier.runs = vec![RunResult {
            method: "CNN-6 + PDB".into(),
            augmentation: "fresh-e4".into(),
            loss: "wing".into(),
            seed: 0,
            full: summary(8.5),
            common: summary(7.0),
            challenging: summary(14.0),
            per_yaw_bin: BTreeMap::new(),
            nmes: vec![0.085, 0.09],
        }];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results-interim.json");
        let write = |r: &StudyResults| {
            std::fs::write(&path, serde_json::to_string_pretty(r).unwrap()).unwrap()
        };
        // Other seeds and losses: the same study, its runs come back whole.
        write(&earlier);
        let runs = reusable_runs(&path, &current).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].nmes, vec![0.085, 0.09]);
        // (serde_json reads a float back to within an ulp, not always to the bit.)
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
        assert!(close(
            runs[0].full.mean_nme_percent,
            earlier.runs[0].full.mean_nme_percent
        ));
        assert!(close(
            runs[0].challenging.mean_nme_percent,
            earlier.runs[0].challenging.mean_nme_percent
        ));
        assert_eq!((&*runs[0].method, runs[0].seed), ("CNN-6 + PDB", 0));
        // Another budget, another data set, other training rows: refused, naming what differs.
        let refused = || reusable_runs(&path, &current).unwrap_err().to_string();
        let mut other = earlier.clone();
        other.settings.stage2_steps = 1000;
        write(&other);
        let err = refused();
        assert!(
            err.contains("its settings: ") && err.contains("\"stage2_steps\":1000"),
            "{err}"
        );
        let mut other = earlier.clone();
        other.mean_shape_baseline = summary(21.0);
        write(&other);
        assert!(refused().contains("its mean-shape NME: 21"));
        let mut other = earlier.clone();
        other.train_rows.insert("fresh-e4-pdb".into(), 1085);
        write(&other);
        assert!(refused().contains("fresh-e4-pdb training-row count: 1085"));
        let mut other = earlier.clone();
        other.no_pdb_rows = NoPdbRows::Original;
        write(&other);
        assert!(refused().contains("no-PDB rows"));
        std::fs::write(&path, "{}").unwrap();
        assert!(refused().contains("is not a loss study's results file"));
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
            augmentation: "fresh-e4".into(),
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
            no_pdb_rows: NoPdbRows::Equal,
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
