//! `wingflow.toml`: one file that declares the sources, the output root and every stage's
//! parameters. Relative paths are taken relative to the folder of the file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use contract::layout::{LEVELS, level_dir_name};
use contract::training::{
    Arch, DeviceSpec, LossKind, Schedule, Spelled, TrainRequest, default_budget, defaults,
};
use faces::ingest::{IngestPolicy, SourceConfig};
use render::RenderParams;
use serde::{Deserialize, Serialize};
use shapes::align::AlignParams;
use shapes::balance::{BalanceParams, HistogramOf, Holdout};
use shapes::pca::{PcaParams, PoseComponent};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Output root (faces.parquet, plan.parquet, shards/, plots/, wingflow.lock, …).
    #[serde(default = "default_output")]
    pub output: PathBuf,
    /// The run seed: every random choice of every stage derives from it.
    #[serde(default)]
    pub seed: u64,
    /// The annotation sources (`[[sources]]` tables).
    pub sources: Vec<SourceConfig>,
    /// Ingest policy (`[ingest]`).
    #[serde(default)]
    pub ingest: IngestPolicy,
    /// Generalised Procrustes alignment (`[align]`).
    #[serde(default)]
    pub align: AlignSection,
    /// PCA and the pose component (`[pca]`).
    #[serde(default)]
    pub pca: PcaSection,
    /// Validation split, pose histogram, replication, shard sizes (`[balance]`).
    #[serde(default)]
    pub balance: BalanceSection,
    /// Crops and augmentation (`[render]`, `[render.augment]`).
    #[serde(default)]
    pub render: RenderParams,
    /// Two-stage training and evaluation (`[train]`), run by `wingflow-train`.
    #[serde(default)]
    pub train: TrainSection,
}

/// `[train]`: the train1 (CNN-6, 64²) and train2 (CNN-7, 128²) stages and evaluate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Declare the training stages at all (false: the pipeline ends with render).
    pub enabled: bool,
    /// Loss: `wing` (w = 10, ε = 2), `l1`, `l2`, `smooth-l1`, or `wing:W,EPSILON`; parsed at
    /// load, serialised as written.
    pub loss: Spelled<LossKind>,
    /// CNN-6's budget (`[train.cnn6]`, the train1 stage).
    pub cnn6: NetworkSettings,
    /// CNN-7's budget (`[train.cnn7]`, the train2 stage): CNN-7 needs a lower learning rate
    /// than CNN-6 and trains about 5× slower per step.
    pub cnn7: NetworkSettings,
    /// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`; parsed at load, serialised as
    /// written.
    pub device: Spelled<DeviceSpec>,
    /// Batch normalisation after each convolution (off in the paper).
    pub batch_norm: bool,
    /// NME normaliser for evaluation (default: the scheme's, e.g. inter-ocular for ibug68).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normaliser: Option<String>,
    /// A named training run: its models and reports go to `models/<run>/` and
    /// `reports/<run>/`, and its stages are `train1@<run>`, `train2@<run>`, `evaluate@<run>`,
    /// so runs with other losses, budgets or seeds share the root's shards and keep each
    /// other's results (none: `models/`, `reports/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The networks' initialisation and sample-order seed (default: the run's `seed`, which
    /// also seeds the augmentation: set this to vary the training alone on the same shards).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Score the validation split during training and evaluate the best checkpoint by it
    /// (false: no validation passes; evaluation takes the last checkpoint).
    #[serde(skip_serializing_if = "is_true")]
    pub validation: bool,
    /// Train CNN-7 (train2) after CNN-6 (false: CNN-6 alone is trained and evaluated).
    #[serde(skip_serializing_if = "is_true")]
    pub second_stage: bool,
    /// libtorch threads of each training (default: libtorch's, one per core). How fast, not
    /// what, a run trains: it is in no stage's parameters, so changing it retrains nothing.
    #[serde(skip_serializing)]
    pub threads: Option<u32>,
}

/// For `skip_serializing_if`: a `true` default is left out, so settings files and stage
/// parameters from before the key existed stay as they were.
fn is_true(value: &bool) -> bool {
    *value
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            enabled: true,
            loss: Spelled::parse(defaults::LOSS.spelling()),
            cnn6: NetworkSettings::resolved_default(Arch::Cnn6).into(),
            cnn7: NetworkSettings::resolved_default(Arch::Cnn7).into(),
            device: Spelled::parse(defaults::DEVICE.to_string()),
            batch_norm: false,
            normaliser: None,
            run: None,
            seed: None,
            validation: true,
            second_stage: true,
            threads: None,
        }
    }
}

/// One network's training budget (`[train.cnn6]`, `[train.cnn7]`); a key left out takes the
/// network's default ([`NetworkSettings::resolved_default`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSettings {
    /// Optimiser steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// Samples per batch (the paper: 8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Initial learning rate (cosine decay to `final_lr`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Final learning rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_lr: Option<f64>,
    /// Learning-rate schedule: `"cosine"` (from `lr` to `final_lr`, the default) or
    /// `"constant"` (`lr` throughout): one of [`NETWORK_SCHEDULES`].
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "network_schedule"
    )]
    pub schedule: Option<Schedule>,
    /// L2 weight decay (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
}

/// The `schedule` values `[train.cnnN]` takes: those without parameters of their own (the
/// step schedule's `step_every` and `gamma` are no keys there).
pub const NETWORK_SCHEDULES: [Schedule; 2] = [Schedule::Cosine, Schedule::Constant];

/// A `[train.cnnN] schedule`: one of [`NETWORK_SCHEDULES`], by name; any other name is refused
/// with the allowed ones.
fn network_schedule<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Schedule>, D::Error> {
    let name = String::deserialize(deserializer)?;
    match NETWORK_SCHEDULES.into_iter().find(|s| s.name() == name) {
        Some(schedule) => Ok(Some(schedule)),
        None => Err(serde::de::Error::custom(format!(
            "schedule `{name}` is not allowed (allowed: {})",
            NETWORK_SCHEDULES.map(Schedule::name).join(", ")
        ))),
    }
}

/// A network's budget with every value filled in (the contract's, whose
/// [`default_budget`] is each network's default).
pub use contract::training::Budget;

impl From<Budget> for NetworkSettings {
    /// Every value written, but the schedule and weight decay only where they differ from
    /// their defaults: a training stage's identity (this, serialised) stays what it was
    /// before they were keys.
    fn from(b: Budget) -> Self {
        NetworkSettings {
            steps: Some(b.steps),
            batch_size: Some(b.batch_size),
            lr: Some(b.lr),
            final_lr: Some(b.final_lr),
            schedule: (b.schedule != defaults::SCHEDULE).then_some(b.schedule),
            weight_decay: (b.weight_decay != defaults::WEIGHT_DECAY).then_some(b.weight_decay),
        }
    }
}

impl NetworkSettings {
    /// The default budget of a network, the contract's [`default_budget`]: 2000 steps of 32,
    /// learning rate 1e-3 (CNN-6) or 3e-4 (CNN-7, which diverges or stalls at CNN-6's rate:
    /// bench/README-losses.md, run 3), cosine-decayed to 1e-5.
    pub fn resolved_default(arch: Arch) -> Budget {
        default_budget(arch)
    }

    /// This budget, with the network's defaults where a key is left out.
    pub fn resolved(&self, arch: Arch) -> Budget {
        let d = Self::resolved_default(arch);
        Budget {
            steps: self.steps.unwrap_or(d.steps),
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            lr: self.lr.unwrap_or(d.lr),
            final_lr: self.final_lr.unwrap_or(d.final_lr),
            schedule: self.schedule.unwrap_or(d.schedule),
            weight_decay: self.weight_decay.unwrap_or(d.weight_decay),
        }
    }
}

impl TrainSection {
    /// The budget of the network of crop level `level` (1: CNN-6, 2: CNN-7).
    pub fn budget(&self, level: u8) -> Result<Budget> {
        Ok(match Arch::for_level(level)? {
            Arch::Cnn6 => self.cnn6.resolved(Arch::Cnn6),
            Arch::Cnn7 => self.cnn7.resolved(Arch::Cnn7),
        })
    }

    /// The crop levels trained: 1, and 2 unless `second_stage` is off.
    pub fn levels(&self) -> &'static [u8] {
        if self.second_stage { &[1, 2] } else { &[1] }
    }

    /// The training request of crop level `level` (1: CNN-6, 2: CNN-7) on `shards`, into
    /// `out`; `run_seed` is the config's `seed`, used unless `[train] seed` is set.
    pub fn request(
        &self,
        level: u8,
        shards: PathBuf,
        out: PathBuf,
        run_seed: u64,
    ) -> Result<TrainRequest> {
        let budget = self.budget(level)?;
        Ok(TrainRequest {
            shards: Some(shards),
            out,
            arch: Arch::for_level(level)?,
            loss: self.loss.value()?,
            steps: Some(budget.steps),
            // About 20 checkpoints a run: what a killed run resumes from.
            checkpoint_every: (budget.steps / 20).clamp(1, 500),
            batch_size: budget.batch_size,
            lr: budget.lr,
            final_lr: budget.final_lr,
            schedule: budget.schedule,
            weight_decay: budget.weight_decay,
            device: self.device.value()?,
            seed: self.seed.unwrap_or(run_seed),
            batch_norm: self.batch_norm,
            normaliser: self.normaliser.clone(),
            no_val: !self.validation,
            ..TrainRequest::default()
        })
    }
}

/// `[align]`: Generalised Procrustes Analysis of the training shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlignSection {
    /// Stop when the unit-norm mean shape moves less than this between iterations.
    pub tolerance: f64,
    /// Stop after this many iterations even if the mean still moves.
    pub max_iterations: usize,
}

impl Default for AlignSection {
    fn default() -> Self {
        let p = AlignParams::default();
        AlignSection {
            tolerance: p.tolerance,
            max_iterations: p.max_iterations,
        }
    }
}

impl AlignSection {
    /// The library parameters.
    pub fn params(&self) -> AlignParams {
        AlignParams {
            tolerance: self.tolerance,
            max_iterations: self.max_iterations,
        }
    }
}

/// `pose_component = "auto"` or a 1-based component number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PoseChoice {
    /// `"auto"`.
    Named(String),
    /// A 1-based component number (PC1 = 1).
    Index(usize),
}

/// `[pca]`: PCA of the aligned shapes and the choice of the pose component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PcaSection {
    /// Components to compute.
    pub components: usize,
    /// `"auto"` (the leading component whose eigenvector is most anti-symmetric under the
    /// scheme's mirror, weighted by its variance) or a 1-based component number.
    pub pose_component: PoseChoice,
    /// How many leading components `"auto"` considers.
    pub auto_candidates: usize,
}

impl Default for PcaSection {
    fn default() -> Self {
        let p = PcaParams::default();
        PcaSection {
            components: p.components,
            pose_component: PoseChoice::Named("auto".into()),
            auto_candidates: p.auto_candidates,
        }
    }
}

impl PcaSection {
    /// The library parameters, or an error naming the bad value.
    pub fn params(&self) -> Result<PcaParams> {
        let pose_component = match &self.pose_component {
            PoseChoice::Named(name) if name == "auto" => PoseComponent::Auto,
            PoseChoice::Index(n) if *n >= 1 => PoseComponent::Index(*n),
            other => bail!("[pca] pose_component = {other:?}: expected \"auto\" or a number >= 1"),
        };
        Ok(PcaParams {
            components: self.components,
            pose_component,
            auto_candidates: self.auto_candidates,
        })
    }
}

/// `[balance]`: validation carve-out, pose histogram and replication (PDB), shard sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceSection {
    /// How `val` (and `test`) are carved out of `train`: `"photo"` (faces of one photo
    /// together, stratified by pose; what `init` writes) or `"face"` (by a hash of the sample
    /// id, `val` only). Absent means `"face"`, the rule of files written before photo groups,
    /// so their outputs stay as they were (and it is not serialised then: same stage identity).
    #[serde(skip_serializing_if = "is_by_face")]
    pub holdout: Holdout,
    /// Fraction of `train` moved to `val` (stable across runs).
    pub val_fraction: f64,
    /// Fraction of `train` moved to `test` (by photo only; 0: none).
    #[serde(skip_serializing_if = "is_zero")]
    pub test_fraction: f64,
    /// Seed of the photo carve-out, apart from `seed` so that runs with other seeds hold out
    /// the same faces.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub holdout_seed: u64,
    /// Number of pose-histogram bins K (the paper's example: 9).
    pub bins: usize,
    /// `"absolute"` (histogram of |coefficient|, as in the paper) or `"signed"`.
    pub histogram: HistogramOf,
    /// Cap on the rows per training sample (replica 0 included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replication: Option<u32>,
    /// Cap on the total training rows; duplicates are scaled down to meet it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_train_rows: Option<u64>,
    /// Replicate uniformly instead of by pose: this many training rows, every training face
    /// the same number of times (±1). The pose-free baseline of a PDB set's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uniform_train_rows: Option<u64>,
    /// Target shard size in bytes; fixes each shard set's shard count.
    pub target_shard_bytes: u64,
}

impl Default for BalanceSection {
    fn default() -> Self {
        let p = BalanceParams::default();
        BalanceSection {
            holdout: p.holdout,
            val_fraction: p.val_fraction,
            test_fraction: p.test_fraction,
            holdout_seed: p.holdout_seed,
            bins: p.bins,
            histogram: p.histogram,
            max_replication: p.max_replication,
            max_train_rows: p.max_train_rows,
            uniform_train_rows: p.uniform_train_rows,
            target_shard_bytes: p.target_shard_bytes,
        }
    }
}

impl BalanceSection {
    /// The library parameters for `num_points` landmarks, the run seed and the crop sizes.
    pub fn params(&self, num_points: usize, seed: u64, render: &RenderParams) -> BalanceParams {
        BalanceParams {
            holdout: self.holdout,
            val_fraction: self.val_fraction,
            test_fraction: self.test_fraction,
            holdout_seed: self.holdout_seed,
            bins: self.bins,
            histogram: self.histogram,
            max_replication: self.max_replication,
            max_train_rows: self.max_train_rows,
            uniform_train_rows: self.uniform_train_rows,
            seed,
            target_shard_bytes: self.target_shard_bytes,
            num_points,
            crop_stage1: render.stage1_size,
            crop_stage2: render.stage2_size,
        }
    }
}

fn is_by_face(holdout: &Holdout) -> bool {
    *holdout == Holdout::Face
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

fn is_zero_u64(value: &u64) -> bool {
    *value == 0
}

fn default_output() -> PathBuf {
    PathBuf::from("wingflow-out")
}

/// `path` without `.` components and with each `..` taking the component before it away
/// (`/a/sub/../data` → `/a/data`), as the shell's `cd -L` does; a `..` at the root stays at
/// the root. Symbolic links are not resolved (the output folder need not exist yet).
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else if !out.has_root() {
                    out.push(component);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Most pose-histogram bins `[balance] bins` takes (the paper uses 9; more bins than faces
/// only leaves bins empty, and each bin costs memory in balance and its plots).
const MAX_BINS: usize = 10_000;

/// Most training rows `[balance] uniform_train_rows`/`max_train_rows` take: 10 million rows
/// (300W-LP, among the largest face-landmark sets, has 122k faces) is 120 GB of 64² shards.
const MAX_TRAIN_ROWS: u64 = 10_000_000;

/// One step of a key's path in the file: a table key or an array index.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A value the configuration must not have: where it is and what is wrong (with the allowed
/// values).
#[derive(Debug, Clone, PartialEq)]
struct Problem {
    key: Vec<Step>,
    message: String,
}

impl Problem {
    fn new(key: &[&'static str], message: impl Into<String>) -> Self {
        Problem {
            key: key.iter().map(|k| Step::Key((*k).to_owned())).collect(),
            message: message.into(),
        }
    }

    fn source(index: usize, key: &'static str, message: impl Into<String>) -> Self {
        Problem {
            key: vec![
                Step::Key("sources".to_owned()),
                Step::Index(index),
                Step::Key(key.to_owned()),
            ],
            message: message.into(),
        }
    }

    /// The key as a user writes it: `train.loss`, `sources[1].path`.
    fn dotted(&self) -> String {
        let mut out = String::new();
        for step in &self.key {
            match step {
                Step::Key(k) if out.is_empty() => out.push_str(k),
                Step::Key(k) => {
                    out.push('.');
                    out.push_str(k)
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    /// The 1-based line of the key's value in `text`, or of the nearest enclosing table that is
    /// written there (a key left at its default has no line of its own).
    fn line(&self, text: &str) -> Option<usize> {
        let root = toml::de::DeTable::parse(text).ok()?;
        let root = toml::de::DeValue::Table(root.into_inner());
        let mut value = &root;
        let mut span = None;
        for step in &self.key {
            let next = match step {
                Step::Key(k) => value.get(k.as_str()),
                Step::Index(i) => value.get(*i),
            };
            let Some(next) = next else { break };
            span = Some(next.span());
            value = next.get_ref();
        }
        span.map(|s| text[..s.start].matches('\n').count() + 1)
    }
}

/// Every problem found, one per line: `FILE:LINE: KEY: what is wrong (allowed: …)`.
fn problems_error(path: &Path, text: &str, problems: &[Problem]) -> anyhow::Error {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| match p.line(text) {
            Some(line) => format!("{}:{line}: {}: {}", path.display(), p.dotted(), p.message),
            None => format!(
                "{}: {} (not set, default): {}",
                path.display(),
                p.dotted(),
                p.message
            ),
        })
        .collect();
    anyhow::anyhow!(
        "invalid configuration ({} problem{}):\n  {}",
        lines.len(),
        if lines.len() == 1 { "" } else { "s" },
        lines.join("\n  ")
    )
}

impl Config {
    /// Read and check `path`, resolving relative paths against its folder. Every setting is
    /// checked here, before any stage runs: an error names the file, the line, the key and the
    /// allowed values. Whether the sources exist is checked by [`Config::check_sources`].
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// The settings `text` holds, checked as [`Config::load`] checks them, as if it were the
    /// file `path` (which need not exist yet: relative paths resolve against its folder).
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // Absolute, so that no later step resolves them against another folder.
        let base = std::path::absolute(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .with_context(|| format!("cannot resolve the folder of {}", path.display()))?;
        let base = base.as_path();
        // Lexically normal too (no `.` or `..`): `-c ../wingflow.toml` from a subfolder names
        // the same files, so the same stage identities, as `-c wingflow.toml` from the folder.
        config.output = lexically_normal(&base.join(&config.output));
        config.sources = config
            .sources
            .iter()
            .map(|s| {
                let mut s = s.resolved(base);
                s.path = lexically_normal(&s.path);
                s.images = s.images.as_deref().map(lexically_normal);
                s
            })
            .collect();
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(problems_error(path, text, &problems));
        }
        Ok(config)
    }

    /// Refuse sources whose `path` (or `images` folder) does not exist: `run` calls this
    /// before any stage runs (`status` and `gc` do not need the sources).
    pub fn check_sources(&self, path: &Path) -> Result<()> {
        let mut problems = Vec::new();
        for (i, source) in self.sources.iter().enumerate() {
            if !source.path.exists() {
                problems.push(Problem::source(
                    i,
                    "path",
                    format!(
                        "{} does not exist (allowed: an existing {})",
                        source.path.display(),
                        source.kind.path_kind()
                    ),
                ));
            }
            if let Some(images) = source.images.as_ref().filter(|p| !p.is_dir()) {
                problems.push(Problem::source(
                    i,
                    "images",
                    format!(
                        "{} is not a folder (allowed: an existing image folder)",
                        images.display()
                    ),
                ));
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Err(problems_error(path, &text, &problems))
    }

    /// Everything wrong with the settings, in file order.
    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.sources.is_empty() {
            problems.push(Problem::new(
                &["sources"],
                "no [[sources]] declared (run `wingflow init DIR` to write some)",
            ));
        }
        for (i, source) in self.sources.iter().enumerate() {
            if let Some(name) = &source.scheme
                && let Err(e) = contract::scheme::by_name(name)
            {
                problems.push(Problem::source(i, "scheme", e.to_string()));
            }
            for (key, problem) in source.setting_problems() {
                problems.push(Problem::source(i, key, problem));
            }
        }
        let outside = self.ingest.max_outside_fraction;
        if !(outside.is_finite() && outside >= 0.0) {
            problems.push(Problem::new(
                &["ingest", "max_outside_fraction"],
                format!("{outside} (allowed: a finite number >= 0)"),
            ));
        }
        let a = &self.align;
        if !(a.tolerance.is_finite() && a.tolerance > 0.0) {
            problems.push(Problem::new(
                &["align", "tolerance"],
                format!("{} (allowed: a finite number > 0)", a.tolerance),
            ));
        }
        if a.max_iterations == 0 {
            problems.push(Problem::new(
                &["align", "max_iterations"],
                "0 (allowed: an integer >= 1)",
            ));
        }
        if let Err(e) = self.pca.params() {
            problems.push(Problem::new(&["pca", "pose_component"], e.to_string()));
        }
        // A shape of L points has 2L coordinates, so at most 2L components: the smallest
        // scheme among the sources bounds them (a source whose scheme is unknown is refused
        // above or by its kind's own checks).
        let coordinates = self
            .sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.scheme(i).ok())
            .map(|scheme| 2 * scheme.num_points())
            .min();
        let most = coordinates.unwrap_or(usize::MAX);
        if self.pca.components == 0 || self.pca.components > most {
            problems.push(Problem::new(
                &["pca", "components"],
                format!(
                    "{} (allowed: an integer from 1 to {})",
                    self.pca.components,
                    coordinates.map_or("2 × the scheme's points".to_owned(), |c| c.to_string())
                ),
            ));
        }
        if let PoseChoice::Index(k) = self.pca.pose_component
            && k > self.pca.components
        {
            problems.push(Problem::new(
                &["pca", "pose_component"],
                format!(
                    "{k}, but [pca] computes {} components (allowed: \"auto\" or 1 to {})",
                    self.pca.components, self.pca.components
                ),
            ));
        }
        if self.pca.auto_candidates == 0 {
            problems.push(Problem::new(
                &["pca", "auto_candidates"],
                "0 (allowed: an integer >= 1)",
            ));
        }
        let b = &self.balance;
        if !(0.0..1.0).contains(&b.val_fraction) {
            problems.push(Problem::new(
                &["balance", "val_fraction"],
                format!("{} (allowed: a fraction in [0, 1))", b.val_fraction),
            ));
        }
        if !(0.0..1.0).contains(&b.test_fraction) {
            problems.push(Problem::new(
                &["balance", "test_fraction"],
                format!("{} (allowed: a fraction in [0, 1))", b.test_fraction),
            ));
        } else if b.val_fraction + b.test_fraction >= 1.0 {
            problems.push(Problem::new(
                &["balance", "test_fraction"],
                format!(
                    "{}, with val_fraction {}, leaves no training faces (allowed: val_fraction + test_fraction < 1)",
                    b.test_fraction, b.val_fraction
                ),
            ));
        } else if b.test_fraction > 0.0 && b.holdout != Holdout::Photo {
            problems.push(Problem::new(
                &["balance", "test_fraction"],
                format!(
                    "{} needs holdout = \"photo\" (allowed: 0 with holdout = \"face\")",
                    b.test_fraction
                ),
            ));
        }
        if !(1..=MAX_BINS).contains(&b.bins) {
            problems.push(Problem::new(
                &["balance", "bins"],
                format!("{} (allowed: an integer from 1 to {MAX_BINS})", b.bins),
            ));
        }
        for (key, rows) in [
            ("uniform_train_rows", b.uniform_train_rows),
            ("max_train_rows", b.max_train_rows),
        ] {
            if let Some(rows) = rows.filter(|&r| r > MAX_TRAIN_ROWS) {
                problems.push(Problem::new(
                    &["balance", key],
                    format!(
                        "{rows} (allowed: at most {MAX_TRAIN_ROWS} rows; a plan row takes memory \
                         in every stage from balance on)"
                    ),
                ));
            }
        }
        if b.max_replication == Some(0) {
            problems.push(Problem::new(
                &["balance", "max_replication"],
                "0 (allowed: an integer >= 1, replica 0 included)",
            ));
        }
        if b.target_shard_bytes == 0 {
            problems.push(Problem::new(
                &["balance", "target_shard_bytes"],
                "0 (allowed: a byte count >= 1)",
            ));
        }
        if b.uniform_train_rows.is_some()
            && (b.max_replication.is_some() || b.max_train_rows.is_some())
        {
            problems.push(Problem::new(
                &["balance", "uniform_train_rows"],
                "replaces pose balancing (allowed: without max_replication and max_train_rows)",
            ));
        }
        if let Err(e) = self.render.validate() {
            // `augment.x` is `x` of [render.augment].
            let key = std::iter::once("render")
                .chain(e.key.split('.'))
                .map(|k| Step::Key(k.to_owned()))
                .collect();
            problems.push(Problem {
                key,
                message: e.reason,
            });
        }
        problems.extend(self.train.problems(&self.render, &self.sources));
        problems
    }
}

impl TrainSection {
    /// What is wrong with `[train]`: loss, device, numbers, the normaliser against every
    /// source's scheme, and (when enabled) each crop size against the network that takes it.
    fn problems(&self, render: &RenderParams, sources: &[SourceConfig]) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Err(e) = self.loss.value() {
            problems.push(Problem::new(
                &["train", "loss"],
                format!("`{}` (allowed: {})", e.value, e.allowed),
            ));
        }
        if let Err(e) = self.device.value() {
            problems.push(Problem::new(
                &["train", "device"],
                format!("`{}` (allowed: {})", e.value, e.allowed),
            ));
        }
        for (net, arch, settings) in [
            ("cnn6", Arch::Cnn6, &self.cnn6),
            ("cnn7", Arch::Cnn7, &self.cnn7),
        ] {
            let b = settings.resolved(arch);
            if b.steps == 0 {
                problems.push(Problem::new(
                    &["train", net, "steps"],
                    "0 (allowed: an integer >= 1)",
                ));
            }
            if b.batch_size == 0 {
                problems.push(Problem::new(
                    &["train", net, "batch_size"],
                    "0 (allowed: an integer >= 1)",
                ));
            }
            for (key, lr) in [("lr", b.lr), ("final_lr", b.final_lr)] {
                if !(lr.is_finite() && lr > 0.0) {
                    problems.push(Problem::new(
                        &["train", net, key],
                        format!("{lr} (allowed: a finite number > 0)"),
                    ));
                }
            }
            if !(b.weight_decay.is_finite() && b.weight_decay >= 0.0) {
                problems.push(Problem::new(
                    &["train", net, "weight_decay"],
                    format!("{} (allowed: a finite number >= 0)", b.weight_decay),
                ));
            }
        }
        if self.threads == Some(0) {
            problems.push(Problem::new(
                &["train", "threads"],
                "0 (allowed: an integer >= 1)",
            ));
        }
        if let Some(run) = &self.run {
            let well_formed = !run.is_empty()
                && run
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !run.starts_with('.');
            if !well_formed || LEVELS.iter().any(|&level| level_dir_name(level) == *run) {
                problems.push(Problem::new(
                    &["train", "run"],
                    format!(
                        "`{run}` (allowed: letters, digits, `-`, `_`, `.`, not first, and not \
                         a crop level's folder name stage1 or stage2)"
                    ),
                ));
            }
        }
        if let Some(spec) = &self.normaliser {
            // The scheme of each source; a source whose scheme needs its (missing) file is
            // checked when `run` refuses the missing file.
            for (i, source) in sources.iter().enumerate() {
                let Ok(scheme) = source.scheme(i) else {
                    continue;
                };
                if let Err(e) = contract::scheme::resolve_normaliser(scheme.name, Some(spec)) {
                    problems.push(Problem::new(&["train", "normaliser"], e.to_string()));
                    break;
                }
            }
        }
        if self.enabled {
            for (key, level, size) in [
                ("stage1_size", 1, render.stage1_size),
                ("stage2_size", 2, render.stage2_size),
            ] {
                let arch = Arch::for_level(level).expect("levels 1 and 2 have networks");
                if size != arch.input_size() {
                    problems.push(Problem::new(
                        &["render", key],
                        format!(
                            "{size}, but [train] is enabled and {} takes {}² crops (allowed: {}; or set [train] enabled = false)",
                            arch.display_name(),
                            arch.input_size(),
                            arch.input_size()
                        ),
                    ));
                }
            }
        }
        problems
    }
}

/// What each section of a new `wingflow.toml` is for (written above it by `wingflow init`).
const SECTION_COMMENTS: [(&str, &str); 6] = [
    (
        "ingest",
        "What ingest does with an invalid record: on_invalid = \"fail\" (stop, naming file and\n\
         line) or \"skip\" (leave it out and list it in ingest-report.json).",
    ),
    (
        "align",
        "Generalised Procrustes alignment of the training shapes.",
    ),
    (
        "pca",
        "PCA of the aligned shapes; pose_component = \"auto\" or a 1-based number (PC1 = 1).",
    ),
    (
        "balance",
        "Pose-based data balancing: held-out splits, histogram of the pose coefficient\n\
         (histogram = \"absolute\" | \"signed\"), optional caps max_replication and\n\
         max_train_rows, and the target shard size in bytes.\n\
         holdout = \"photo\": val_fraction (and test_fraction) of the training faces are held out\n\
         whole photos at a time (faces `<photo>_<n>` of one photo, or listed on one image file),\n\
         stratified by pose and drawn with holdout_seed; \"face\" (the default of files without\n\
         the key): val only, each face by a hash of its id. Fix them before any tuning.",
    ),
    (
        "render",
        "Crops (level 1: stage1_size, level 2: stage2_size), box rule, border, augmentation\n\
         epochs and ranges. Every training crop of every augmentation epoch draws from the\n\
         ranges ([render.augment]; keep_original = true keeps replica 0 of epoch 0 unperturbed;\n\
         rotation_probability: how often a crop is rotated); validation and test crops never do.",
    ),
    (
        "train",
        "Two-stage training (train1: CNN-6 on 64² crops, train2: CNN-7 on 128² crops) and\n\
         evaluation, run by wingflow-train; enabled = false ends the pipeline at render.\n\
         Optional: normaliser = the NME normaliser (default: the scheme's): inter-ocular,\n\
         inter-pupil, box-width, box-sqrt, inter-ocular:A,B or inter-pupil:L0-L1,R0-R1.",
    ),
];

/// Comments on single keys whose values are a choice (written above the key).
fn key_comment(section: &str, key: &str) -> Option<String> {
    Some(match (section, key) {
        ("train", "loss") => format!("One of: {}.", LossKind::ALLOWED),
        ("train", "device") => format!("One of: {}.", DeviceSpec::ALLOWED),
        ("render", "max_image_pixels") => "Largest image (width × height, as its header declares) that is decoded:\n\
             a larger one fails the run, naming the file, before any memory is taken for it."
            .to_owned(),
        ("render", "epochs") => "Augmentation epochs of the training sets: each a full pass over the\n\
             training rows with its own draws (the trainer reads epoch pass mod epochs).\n\
             Raising it renders only the new epochs; lowering it leaves the surplus to `wingflow gc`."
            .to_owned(),
        _ => return None,
    })
}

/// `# `-prefixed lines of `text`, ending with a newline.
fn comment_lines(text: &str) -> String {
    text.lines().map(|l| format!("# {}\n", l.trim())).collect()
}

/// A new, commented `wingflow.toml` (a `toml_edit` document) for the sources found in
/// `source_dir`, with every section at its defaults and then each `KEY=VALUE` of `overrides`
/// applied (`train.steps=200`): a key the document does not have, or a value that is not TOML,
/// is refused.
pub fn init_document(
    source_dir: &Path,
    output: &Path,
    overrides: &[String],
) -> Result<toml_edit::DocumentMut> {
    use toml_edit::{ArrayOfTables, DocumentMut, Item, value};
    let found = faces::ingest::discover_sources(source_dir);
    let mut doc = DocumentMut::new();
    doc["output"] = value(output.display().to_string());
    doc["seed"] = value(0i64);
    if let Some(mut key) = doc.key_mut("output") {
        key.leaf_decor_mut().set_prefix(comment_lines(
            "wingflow configuration, written by `wingflow init`.\n\
             Relative paths are taken relative to the folder of this file.\n\
             \n\
             Output root: faces.parquet, plan.parquet, shards/, plots/, wingflow.lock.",
        ));
    }
    if let Some(mut key) = doc.key_mut("seed") {
        key.leaf_decor_mut().set_prefix(comment_lines(
            "The run seed: every random choice of every stage derives from it.",
        ));
    }
    let mut sources = ArrayOfTables::new();
    for (i, source) in found.sources.iter().enumerate() {
        let mut table = toml_edit::ser::to_document(source)?.as_table().clone();
        let mut prefix = String::from("\n");
        if i == 0 {
            prefix.push_str(&comment_lines(&format!(
                "Annotation sources found in {} by `wingflow init`.\n\
                 kind = \"300w\" | \"hrnet-csv\" | \"wflw\" | \"aflw-sqlite\" | \"coco\"; every source of one\n\
                 run must use the same landmark scheme ({}).\n\
                 A coco source also takes field = \"keypoints\" | \"face\" (COCO-WholeBody's face_kpts), and needs\n\
                 origin = \"one-based\" | \"zero-based\" | \"continuous\" (the .pts rule, the COCO rule,\n\
                 wingflow's own) and visibility = \"coco\" | \"labelled\" (v = 1 labelled but occluded,\n\
                 or every v > 0 labelled and not occluded).",
                source_dir.display(),
                contract::scheme::all()
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
            for note in &found.notes {
                prefix.push_str(&comment_lines(&format!("Note: {note}")));
            }
        }
        prefix.push_str(&comment_lines(source.kind.describe()));
        if let Some(advice) = found.advice.get(&source.path) {
            prefix.push_str(&comment_lines(advice));
        }
        table.decor_mut().set_prefix(prefix);
        sources.push(table);
    }
    if found.sources.is_empty() {
        // An empty array keeps the key (and the comment) visible: `run` refuses it, naming it.
        doc["sources"] = value(toml_edit::Array::new());
        if let Some(mut key) = doc.key_mut("sources") {
            let mut prefix = String::from("\n");
            for note in &found.notes {
                prefix.push_str(&comment_lines(&format!("Note: {note}")));
            }
            prefix.push_str(&comment_lines(
                "No known annotation source was found; declare one, e.g.\n\
                 [[sources]]\n\
                 kind = \"300w\"\n\
                 path = \"data/300W\"",
            ));
            key.leaf_decor_mut().set_prefix(prefix);
        }
    } else {
        doc["sources"] = Item::ArrayOfTables(sources);
    }
    let sections: [(&str, toml_edit::DocumentMut); 6] = [
        (
            "ingest",
            toml_edit::ser::to_document(&IngestPolicy::default())?,
        ),
        (
            "align",
            toml_edit::ser::to_document(&AlignSection::default())?,
        ),
        ("pca", toml_edit::ser::to_document(&PcaSection::default())?),
        (
            "balance",
            toml_edit::ser::to_document(&BalanceSection::default())?,
        ),
        (
            "render",
            toml_edit::ser::to_document(&RenderParams::default())?,
        ),
        (
            "train",
            toml_edit::ser::to_document(&TrainSection::default())?,
        ),
    ];
    for (name, section) in sections {
        let mut table = section.as_table().clone();
        table.set_implicit(false);
        // A long nested table reads better as its own section (`[render.augment]`).
        let nested: Vec<String> = table
            .iter()
            .filter(|(_, item)| item.as_inline_table().is_some_and(|t| t.len() > 3))
            .map(|(k, _)| k.to_owned())
            .collect();
        for key in nested {
            if let Some(item) = table.get_mut(&key) {
                let inline = std::mem::take(item);
                if let Ok(t) = inline.into_table() {
                    *item = Item::Table(t);
                }
            }
        }
        if name == "balance" {
            // Not serialised at their defaults (the rule of older files, whose stage identity
            // must not change): a new file holds out by photo, so written here.
            table.insert("holdout", toml_edit::value("photo"));
            table.insert("test_fraction", toml_edit::value(0.0));
            table.insert("holdout_seed", toml_edit::value(0i64));
        }
        if name == "render" {
            // Not serialised with the render parameters (it is in no shard key): written here.
            let epochs = RenderParams::default().epochs;
            table.insert("epochs", toml_edit::value(i64::from(epochs)));
            // A bound on declared image sizes, checked before decoding; it changes no pixel,
            // so it is in no stage identity either.
            let max_pixels = RenderParams::default().max_image_pixels;
            table.insert("max_image_pixels", toml_edit::value(max_pixels as i64));
        }
        let comment = SECTION_COMMENTS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(String::new(), |(_, c)| comment_lines(c));
        table.decor_mut().set_prefix(format!("\n{comment}"));
        let keys: Vec<String> = table.iter().map(|(k, _)| k.to_owned()).collect();
        for key in keys {
            if let (Some(text), Some(mut k)) = (key_comment(name, &key), table.key_mut(&key)) {
                k.leaf_decor_mut().set_prefix(comment_lines(&text));
            }
        }
        doc[name] = Item::Table(table);
    }
    for assignment in overrides {
        apply_override(&mut doc, assignment)?;
    }
    Ok(doc)
}

/// Set `KEY=VALUE` (a dotted key the document already has, a TOML value) in `doc`.
fn apply_override(doc: &mut toml_edit::DocumentMut, assignment: &str) -> Result<()> {
    let (key, text) = assignment
        .split_once('=')
        .with_context(|| format!("--set {assignment}: expected KEY=VALUE, e.g. train.steps=200"))?;
    let (key, text) = (key.trim(), text.trim());
    // A bare word is taken as a string (`train.device=cpu`), anything else as TOML.
    let parsed: toml_edit::Value = text
        .parse()
        .or_else(|_| format!("{text:?}").parse())
        .map_err(|e| anyhow::anyhow!("--set {assignment}: `{text}` is not a TOML value: {e}"))?;
    let path: Vec<&str> = key.split('.').collect();
    let (last, tables) = path.split_last().context("--set: empty key")?;
    let mut table: &mut dyn toml_edit::TableLike = doc.as_table_mut();
    for (depth, name) in tables.iter().enumerate() {
        table = table
            .get_mut(name)
            .and_then(|item| item.as_table_like_mut())
            .with_context(|| {
                format!(
                    "--set {assignment}: no table [{}] in wingflow.toml",
                    path[..=depth].join(".")
                )
            })?;
    }
    let known: Vec<String> = table.iter().map(|(k, _)| k.to_owned()).collect();
    let item = table.get_mut(last).with_context(|| {
        format!(
            "--set {assignment}: `{last}` is not a key of {} (keys: {})",
            if tables.is_empty() {
                "the top level".to_owned()
            } else {
                format!("[{}]", tables.join("."))
            },
            known.join(", ")
        )
    })?;
    let decor = item.as_value().map(|v| v.decor().clone());
    *item = toml_edit::Item::Value(parsed);
    if let (Some(decor), Some(v)) = (decor, item.as_value_mut()) {
        *v.decor_mut() = decor;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexically_normal_paths_drop_dots_and_resolve_parents() {
        use super::lexically_normal;
        use std::path::Path;
        let n = |p: &str| lexically_normal(Path::new(p)).display().to_string();
        assert_eq!(n("/a/sub/../data"), "/a/data");
        assert_eq!(n("/a/sub/../../b/./c"), "/b/c");
        assert_eq!(n("/../a"), "/a");
        assert_eq!(n("a/../../b"), "../b");
        assert_eq!(n("/a/b/"), "/a/b");
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("wingflow.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn init(dir: &Path, overrides: &[&str]) -> String {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        init_document(dir, Path::new("out"), &overrides)
            .unwrap()
            .to_string()
    }

    #[test]
    fn init_writes_a_commented_document_that_loads_with_its_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let text = init(
            dir.path(),
            &["train.cnn6.steps=200", "train.cnn7.batch_size=8"],
        );
        assert!(text.contains("# wingflow configuration"), "{text}");
        assert!(text.contains("# One of: wing, l1"), "{text}");
        assert!(text.contains("steps = 200"), "{text}");
        // No source was found: the document says so, and loading refuses the empty list.
        assert!(text.contains("No known annotation source"), "{text}");
        let err = Config::load(&write(dir.path(), &text))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sources"), "{err}");
        let with_source = text.replace(
            "sources = []",
            "[[sources]]\nkind = \"300w\"\npath = \"data\"",
        );
        let config = Config::load(&write(dir.path(), &with_source))
            .unwrap_or_else(|e| panic!("{e:#}\n{with_source}"));
        let (six, seven) = (
            config.train.budget(1).unwrap(),
            config.train.budget(2).unwrap(),
        );
        assert_eq!((six.steps, six.batch_size, six.lr), (200, 32, 1e-3));
        assert_eq!((seven.steps, seven.batch_size, seven.lr), (2000, 8, 3e-4));
        assert_eq!(config.render, RenderParams::default());
    }

    #[test]
    fn overrides_of_unknown_keys_or_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let overrides = |o: &str| init_document(dir.path(), Path::new("out"), &[o.to_owned()]);
        let err = overrides("train.cnn6.stepz=3").unwrap_err().to_string();
        assert!(err.contains("stepz") && err.contains("steps"), "{err}");
        assert!(overrides("trian.cnn6.steps=3").is_err());
        assert!(overrides("train.cnn6.steps").is_err());
        assert!(overrides("train.device=cpu").is_ok());
    }

    #[test]
    fn each_bad_setting_names_its_line_key_and_allowed_values() {
        let dir = tempfile::tempdir().unwrap();
        let base = "[[sources]]\nkind = \"300w\"\npath = \"data\"\n";
        let cases = [
            (
                "[train]\nloss = \"wingg\"\n",
                "train.loss",
                LossKind::ALLOWED,
            ),
            (
                "[train]\ndevice = \"gpu\"\n",
                "train.device",
                DeviceSpec::ALLOWED,
            ),
            (
                "[render]\nstage1_size = 48\n",
                "render.stage1_size",
                "allowed: 64",
            ),
            (
                "[train]\nnormaliser = \"inter-pupil\"\n",
                "train.normaliser",
                "box-width",
            ),
            (
                "[render.augment]\nflip_probability = 2.0\n",
                "render.augment.flip_probability",
                "[0, 1]",
            ),
            ("[train]\nrun = \"stage1\"\n", "train.run", "not"),
            ("[train]\nrun = \"a/b\"\n", "train.run", "letters, digits"),
            ("[train]\nthreads = 0\n", "train.threads", ">= 1"),
            (
                "[balance]\nmax_replication = 2\nuniform_train_rows = 900\n",
                "balance.uniform_train_rows",
                "without max_replication",
            ),
        ];
        for (section, key, allowed) in cases {
            let scheme = if key == "train.normaliser" {
                "scheme = \"aflw19\"\n"
            } else {
                ""
            };
            let text = format!("{base}{scheme}\n{section}");
            let path = write(dir.path(), &text);
            let err = format!("{:#}", Config::load(&path).unwrap_err());
            let line = text.lines().count();
            assert!(
                err.contains(&format!("wingflow.toml:{line}: {key}:")) && err.contains(allowed),
                "{key}: {err}"
            );
        }
        // Crop sizes are free when nothing trains on them.
        let path = write(
            dir.path(),
            &format!("{base}\n[render]\nstage1_size = 48\n[train]\nenabled = false\n"),
        );
        assert!(Config::load(&path).is_ok());
    }

    #[test]
    fn coco_keys_are_checked_at_load_with_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let load =
            |text: &str| Config::load(&write(dir.path(), text)).map_err(|e| format!("{e:#}"));
        // origin and visibility have no default: the table's line, and how to choose.
        let err = load(
            "seed = 1\n[[sources]]\nkind = \"coco\"\npath = \"f.json\"\nscheme = \"cofw29\"\n",
        )
        .unwrap_err();
        assert!(
            err.contains("wingflow.toml:2: sources[0].origin: required for kind = \"coco\"")
                && err.contains("\"one-based\" (the .pts rule")
                && err.contains("`wingflow init`"),
            "{err}"
        );
        assert!(
            err.contains("wingflow.toml:2: sources[0].visibility: required")
                && err.contains("\"labelled\""),
            "{err}"
        );
        // A keypoints file needs its scheme; WholeBody's face is ibug68.
        let base = "[[sources]]\nkind = \"coco\"\npath = \"f.json\"\norigin = \"zero-based\"\nvisibility = \"coco\"\n";
        let err = load(base).unwrap_err();
        assert!(
            err.contains(
                "wingflow.toml:1: sources[0].scheme: required for a kind = \"coco\" keypoints"
            ),
            "{err}"
        );
        assert!(load(&format!("{base}field = \"face\"\n")).is_ok());
        assert!(load(&format!("{base}scheme = \"cofw29\"\n")).is_ok());
        // A value outside the allowed ones is refused by the parser, with its line and the values.
        let err = load(&format!("{base}scheme = \"cofw29\"\nfield = \"body\"\n")).unwrap_err();
        assert!(
            err.contains("line 7") && err.contains("`keypoints` or `face`"),
            "{err}"
        );
        let err = load(&base.replace("zero-based", "zero")).unwrap_err();
        assert!(
            err.contains("line 4") && err.contains("`one-based`") && err.contains("`continuous`"),
            "{err}"
        );
        // Only coco takes them.
        let err = load("[[sources]]\nkind = \"300w\"\npath = \"data\"\norigin = \"one-based\"\n")
            .unwrap_err();
        assert!(
            err.contains("wingflow.toml:4: sources[0].origin: only kind = \"coco\" takes it"),
            "{err}"
        );
    }

    /// The pipeline's defaults are the contract's: fails if `[train]` grows a default of its
    /// own.
    #[test]
    fn train_defaults_are_the_contracts() {
        for arch in [Arch::Cnn6, Arch::Cnn7] {
            assert_eq!(
                NetworkSettings::resolved_default(arch),
                default_budget(arch)
            );
        }
        let empty: TrainSection = toml::from_str("").unwrap();
        assert_eq!(empty, TrainSection::default());
        for level in [1, 2] {
            let arch = Arch::for_level(level).unwrap();
            let b = default_budget(arch);
            let request = empty.request(level, "s".into(), "o".into(), 7).unwrap();
            assert_eq!(
                request,
                TrainRequest {
                    shards: Some("s".into()),
                    out: "o".into(),
                    arch,
                    steps: Some(b.steps),
                    checkpoint_every: 100,
                    batch_size: b.batch_size,
                    lr: b.lr,
                    final_lr: b.final_lr,
                    schedule: b.schedule,
                    weight_decay: b.weight_decay,
                    seed: 7,
                    ..TrainRequest::default()
                }
            );
        }
    }

    /// `[train] loss` and `device` are parsed at load and serialised as written: the training
    /// stages' parameters (`json!` of them in `wingflow.lock`) keep their bytes.
    #[test]
    fn loss_and_device_are_typed_at_load_and_serialised_as_written() {
        let t: TrainSection = toml::from_str(
            "loss = \"wing:5.0,1\"\ndevice = \"cuda:0\"\n[cnn7]\nschedule = \"constant\"\n",
        )
        .unwrap();
        assert_eq!(
            t.loss.value().unwrap(),
            LossKind::Wing {
                w: 5.0,
                epsilon: 1.0
            }
        );
        assert_eq!(t.device.value().unwrap(), DeviceSpec::Cuda(Some(0)));
        assert_eq!(
            serde_json::json!({ "loss": t.loss, "device": t.device, "cnn7": t.cnn7 }).to_string(),
            r#"{"cnn7":{"schedule":"constant"},"device":"cuda:0","loss":"wing:5.0,1"}"#
        );
        let default = serde_json::json!({ "loss": TrainSection::default().loss, "device":
            TrainSection::default().device });
        assert_eq!(default.to_string(), r#"{"device":"auto","loss":"wing"}"#);
        let budget = t.budget(2).unwrap();
        assert_eq!(budget.schedule, Schedule::Constant);
        assert_eq!(
            serde_json::to_string(&NetworkSettings::from(budget)).unwrap(),
            r#"{"steps":2000,"batch_size":32,"lr":0.0003,"final_lr":0.00001,"schedule":"constant"}"#
        );
    }

    #[test]
    fn a_network_schedule_with_parameters_is_refused_with_the_allowed_ones() {
        for bad in ["step", "cosin"] {
            let err = toml::from_str::<TrainSection>(&format!("[cnn6]\nschedule = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("`{bad}`")) && err.contains("(allowed: cosine, constant)"),
                "{err}"
            );
        }
    }

    #[test]
    fn missing_sources_are_refused_by_check_sources() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[[sources]]\nkind = \"300w\"\npath = \"nowhere\"\n";
        let path = write(dir.path(), text);
        let config = Config::load(&path).unwrap();
        let err = format!("{:#}", config.check_sources(&path).unwrap_err());
        assert!(
            err.contains("wingflow.toml:3: sources[0].path:") && err.contains("300W folder"),
            "{err}"
        );
    }
}
