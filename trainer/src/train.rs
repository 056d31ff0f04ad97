//! The training loop: batches from the loader, loss, optimiser step, learning-rate schedule,
//! periodic validation NME, checkpoints that resume exactly, and a CSV log.
//!
//! Files in the output directory:
//! - `checkpoints/last-<step>/` (weights, optimiser moments, [`CheckpointRecord`]; every
//!   `checkpoint_every` steps and at the end) and `checkpoints/best-<step>/` (weights and record
//!   of the lowest validation NME so far): whole generations, each written under a temporary
//!   name and renamed in, then committed by the pointer `checkpoint.json`, written atomically
//!   (see [`crate::checkpoint`]). The previous `last` generation is kept until the next one is
//!   committed; older ones, and the previous one once the run is finished, are pruned after the
//!   pointer moves.
//! - `last.safetensors` + `last.json`, `best.safetensors` + `best.json`: exports of the current
//!   generations (hard links, copies where the file system has none, each swapped in
//!   atomically) for users, `wingflow-train evaluate`/`predict` and the CLI. A resume never
//!   reads them, and exports the generations it continues from again (a stopped run's exports
//!   may lag its pointer).
//! - `run.json`: the run's [`TrainConfig`] as started, what a resume that finds no whole
//!   checkpoint starts afresh from.
//! - `train_log.csv`: one row per logged step (`step,epoch,loss,lr,images_per_sec,
//!   val_nme_percent,elapsed_s,augmentation_epoch`; `epoch` is the pass over the training set,
//!   `augmentation_epoch` the shard set it read (pass mod E); `val_nme_percent` is empty on rows
//!   without validation).
//!
//! Pass p over the training set reads its augmentation epoch p mod E (`train/` for epoch 0,
//! `train/augmentation-epoch-EEE/` for the others). Resuming restores weights, optimiser
//! moments and step count, and restarts the loader at the stored (pass, batch); the sample order
//! is a function of (seed, pass), and nothing else in training draws random numbers, so a
//! resumed run repeats the uninterrupted one, across augmentation epochs too.
//!
//! [`Trainer::resume`] reads the pointer and checks the `last` generation it names (every part
//! present and whole; the weights' `step`, the optimiser's `steps` and the record's `step`
//! equal). One that fails is torn: the resume falls back to the newest earlier whole
//! generation, else starts afresh from `run.json`. A torn `best` generation is dropped and the
//! best so far starts again at the next validation. What it found is in
//! [`Trainer::resume_notes`] (`wingflow-train` prints them). A folder written before
//! checkpoints were generations (`last.json`, no pointer) is not resumed: the run starts afresh
//! from that record's settings, and says so.
//!
//! **Testing hook:** the trainer counts its checkpoint writes (each file written into a
//! generation, each generation renamed in, each pointer, each export, each generation pruned).
//! With the environment variable `WINGFLOW_TRAIN_ABORT_AFTER_WRITE=k` ([`ABORT_AFTER_WRITE_ENV`])
//! the process aborts right after the k-th, as a process killed there would stop;
//! [`Trainer::stop_after_write`] does the same in-process with an error. Tests use both to stop
//! a run between every two writes and check that it resumes to the uninterrupted run's bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use contract::layout::training_run::CHECKPOINT_POINTER;
use contract::training::TrainRequest;

use crate::checkpoint::{
    LastGeneration, Pointer, Slot, check_best, checkpoints_dir, generation_dir, generation_name,
    generations, list_generations, load_last, parse_generation_name, pointer_path, read_pointer,
};
use crate::error::{Result, TrainerError, ensure_config, io_err};
use crate::eval::{Normaliser, evaluate_set};
use crate::loss::{LossKind, TensorLoss};
use crate::model::{Arch, LandmarkNet, ModelConfig, images_to_input};
use crate::optim::{LrSchedule, Optimizer, OptimizerKind};
use crate::shards::{
    LoadedBatch, Loader, LoaderConfig, LoaderPosition, SampleOrder, ShardSet,
    open_augmentation_epochs,
};
use crate::tensor_io::{save_tensors, write_atomic};

/// Version of `wingflow-train`, recorded in checkpoints and reports.
pub const TRAINER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The testing hook's environment variable: `k` makes the trainer abort the process right after
/// its k-th checkpoint write (see the module docs).
pub const ABORT_AFTER_WRITE_ENV: &str = "WINGFLOW_TRAIN_ABORT_AFTER_WRITE";

/// The run's settings as started, in its output folder (what a resume without a whole
/// checkpoint starts afresh from).
const RUN_CONFIG: &str = "run.json";
/// The record of a run written before checkpoints were generations (no pointer beside it).
const OLD_STYLE_RECORD: &str = "last.json";

/// How long to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainLength {
    /// This many optimiser steps.
    Steps(u64),
    /// This many passes over the training set (drop-last batches).
    Epochs(u64),
}

/// Everything that defines a training run (stored in each checkpoint's JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Training shard set directory.
    pub train_shards: PathBuf,
    /// Validation shard set directory, if any.
    pub val_shards: Option<PathBuf>,
    /// Output directory for checkpoints and the log.
    pub out_dir: PathBuf,
    /// Network.
    pub arch: Arch,
    /// Batch norm after each convolution.
    pub batch_norm: bool,
    /// Loss.
    pub loss: LossKind,
    /// Optimiser.
    pub optimizer: OptimizerKind,
    /// Initial learning rate.
    pub lr: f64,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// Length of the run.
    pub length: TrainLength,
    /// Samples per batch.
    pub batch_size: usize,
    /// Seed of the weight initialisation and of the sample order.
    pub seed: u64,
    /// Loader shuffle buffer, in samples.
    pub shuffle_buffer: usize,
    /// Batches prepared ahead by the loader thread.
    pub prefetch: usize,
    /// Report progress every this many steps.
    pub log_every: u64,
    /// Validate every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Write `last.*` every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Validation NME normaliser (`None`: the scheme's default).
    pub normaliser: Option<Normaliser>,
}

impl TrainConfig {
    /// The run `request` asks for, on the training set `train_shards` and the validation set
    /// `val_shards` (the request's `shards`, `val` and `no_val` resolved by the caller), with
    /// `normaliser` (the request's, resolved against the shards' scheme). The one place a
    /// request's settings become a run's.
    pub fn from_request(
        request: &TrainRequest,
        train_shards: PathBuf,
        val_shards: Option<PathBuf>,
        normaliser: Option<Normaliser>,
    ) -> Self {
        Self {
            train_shards,
            val_shards,
            out_dir: request.out.clone(),
            arch: request.arch,
            batch_norm: request.batch_norm,
            loss: request.loss,
            optimizer: OptimizerKind::new(
                request.optimizer,
                request.momentum,
                request.weight_decay,
            ),
            lr: request.lr,
            schedule: LrSchedule::new(
                request.schedule,
                request.final_lr,
                request.step_every,
                request.gamma,
            ),
            length: match request.steps {
                Some(steps) => TrainLength::Steps(steps),
                None => TrainLength::Epochs(request.epochs),
            },
            batch_size: request.batch_size,
            seed: request.seed,
            shuffle_buffer: request.shuffle_buffer,
            prefetch: 4,
            log_every: request.log_every,
            eval_every: request.eval_every,
            checkpoint_every: request.checkpoint_every,
            normaliser,
        }
    }

    /// The defaults of a request ([`TrainRequest::default`], from
    /// `contract::training::defaults`: Adam, 1e-3 cosine to 1e-5, Wing loss, batch 32, 30
    /// epochs), without validation.
    pub fn new(train_shards: PathBuf, out_dir: PathBuf, arch: Arch) -> Self {
        let request = TrainRequest {
            out: out_dir,
            arch,
            ..TrainRequest::default()
        };
        Self::from_request(&request, train_shards, None, None)
    }
}

/// The JSON written beside a checkpoint's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// `wingflow-train` version that wrote it.
    pub trainer_version: String,
    /// The run's configuration.
    pub config: TrainConfig,
    /// The network (also in the weights' metadata).
    pub model: ModelConfig,
    /// Landmark scheme of the training set.
    pub scheme: String,
    /// Flip permutation of the training set (for predict-time flip tests).
    pub flip_permutation: Vec<usize>,
    /// Optimiser steps done.
    pub step: u64,
    /// Total steps of the run.
    pub total_steps: u64,
    /// Where the loader continues.
    pub next_position: LoaderPosition,
    /// Mean training loss over the last logged window.
    pub train_loss: Option<f64>,
    /// Validation NME ×100 of these weights, if measured.
    pub val_nme_percent: Option<f64>,
    /// Lowest validation NME ×100 so far.
    pub best_val_nme_percent: Option<f64>,
}

/// What the loop reports to its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Every `log_every` steps.
    Step {
        /// Steps done.
        step: u64,
        /// Steps in the run.
        total: u64,
        /// Epoch of the last batch.
        epoch: u64,
        /// Mean loss over the window.
        loss: f64,
        /// Learning rate of the last step.
        lr: f64,
        /// Training throughput over the window (data wait included).
        images_per_sec: f64,
    },
    /// After each validation.
    Validation {
        /// Steps done.
        step: u64,
        /// Mean NME ×100 on the validation set.
        nme_percent: f64,
    },
    /// After a checkpoint is written.
    Checkpoint {
        /// Steps done.
        step: u64,
        /// The weights file.
        path: PathBuf,
    },
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Step {
                step,
                total,
                epoch,
                loss,
                lr,
                images_per_sec,
            } => write!(
                f,
                "step {step}/{total} epoch {epoch} loss {loss:.4} lr {lr:.3e} images/s {images_per_sec:.1}"
            ),
            Self::Validation { step, nme_percent } => {
                write!(f, "val step {step} nme {nme_percent:.3}%")
            }
            Self::Checkpoint { step, path } => {
                write!(f, "checkpoint step {step} {}", path.display())
            }
        }
    }
}

/// The outcome of [`Trainer::run`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Steps done in total.
    pub steps: u64,
    /// Mean loss over the last logged window.
    pub final_loss: Option<f64>,
    /// Final validation NME ×100.
    pub val_nme_percent: Option<f64>,
    /// `last.safetensors` (the export of the final `last` generation).
    pub last_checkpoint: PathBuf,
    /// `best.safetensors`, when validation ran.
    pub best_checkpoint: Option<PathBuf>,
}

/// Paths of a checkpoint named `stem` in `dir`: weights, optimiser state, JSON record.
pub fn checkpoint_paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.safetensors")),
        dir.join(format!("{stem}.optim.safetensors")),
        dir.join(format!("{stem}.json")),
    )
}

/// Read the JSON record beside a weights file (`x.safetensors` → `x.json`).
pub fn read_record(weights: &Path) -> Result<CheckpointRecord> {
    let path = weights.with_extension("json");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    serde_json::from_str(&text).map_err(|source| TrainerError::Json { path, source })
}

const LOG_HEADER: &str =
    "step,epoch,loss,lr,images_per_sec,val_nme_percent,elapsed_s,augmentation_epoch\n";

/// A training run in progress.
#[derive(Debug)]
pub struct Trainer {
    config: TrainConfig,
    device: Device,
    net: LandmarkNet,
    optimizer: Optimizer,
    train_set: Arc<ShardSet>,
    /// The training set's augmentation epochs (`train_set` first): pass p reads epoch p mod E.
    train_epochs: Vec<Arc<ShardSet>>,
    val_set: Option<Arc<ShardSet>>,
    normaliser: Normaliser,
    total_steps: u64,
    step: u64,
    position: LoaderPosition,
    last_loss: Option<f64>,
    best_val: Option<f64>,
    elapsed_before: f64,
    /// The generations this run has committed (or resumed from).
    committed: Committed,
    /// Counts checkpoint writes for the testing hook.
    writes: WriteCounter,
    /// What [`Trainer::resume`] found, one line each.
    resume_notes: Vec<String>,
}

/// The generations a run keeps: what the pointer names, and the fallback behind it.
#[derive(Debug, Clone, Default)]
struct Committed {
    /// The `last` generation the pointer names.
    last: Option<String>,
    /// The `last` generation before it, kept until the next commit (none once the run is
    /// finished).
    previous_last: Option<String>,
    /// The `best` generation the pointer names.
    best: Option<String>,
}

impl Committed {
    fn pointer(&self) -> Pointer {
        Pointer {
            last: self.last.clone(),
            best: self.best.clone(),
        }
    }

    fn keeps(&self, name: &str) -> bool {
        [&self.last, &self.previous_last, &self.best]
            .into_iter()
            .any(|kept| kept.as_deref() == Some(name))
    }
}

/// Counts a run's checkpoint writes and stops it right after the k-th when asked (the testing
/// hook of the module docs).
#[derive(Debug, Default)]
struct WriteCounter {
    done: u64,
    stop: Option<(u64, StopBy)>,
}

/// How the testing hook stops a run.
#[derive(Debug, Clone, Copy)]
enum StopBy {
    /// `std::process::abort()` ([`ABORT_AFTER_WRITE_ENV`]).
    Abort,
    /// [`TrainerError::InjectedStop`] ([`Trainer::stop_after_write`]).
    Error,
}

impl WriteCounter {
    /// A counter that aborts after the write [`ABORT_AFTER_WRITE_ENV`] names, when it is set.
    fn from_env() -> Result<Self> {
        let Some(value) = std::env::var_os(ABORT_AFTER_WRITE_ENV) else {
            return Ok(Self::default());
        };
        let k = value
            .to_str()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&k| k >= 1)
            .ok_or_else(|| {
                TrainerError::Config(format!(
                    "{ABORT_AFTER_WRITE_ENV}={}: expected a write number (1, 2, …)",
                    value.to_string_lossy()
                ))
            })?;
        Ok(Self {
            done: 0,
            stop: Some((k, StopBy::Abort)),
        })
    }

    /// Count one write; stop here if it is the one asked for.
    fn wrote(&mut self) -> Result<()> {
        self.done += 1;
        match self.stop {
            Some((k, StopBy::Abort)) if k == self.done => {
                eprintln!(
                    "wingflow-train: {ABORT_AFTER_WRITE_ENV}={k}: aborting after checkpoint write {k}"
                );
                std::process::abort()
            }
            Some((k, StopBy::Error)) if k == self.done => {
                Err(TrainerError::InjectedStop { write: k })
            }
            _ => Ok(()),
        }
    }
}

impl Trainer {
    /// Start a fresh run: open the shard sets, check them against the architecture, initialise
    /// the network from `config.seed`, and write `run.json` and the log header. Refuses a folder
    /// that holds a run (a checkpoint pointer, or a `last.json` from before generations);
    /// uncommitted generations a killed run left behind are removed.
    pub fn new(config: TrainConfig, device: Device) -> Result<Self> {
        for held in [
            pointer_path(&config.out_dir),
            config.out_dir.join(OLD_STYLE_RECORD),
        ] {
            ensure_config!(
                !held.exists(),
                "{} already holds a run ({}); resume it or choose another output directory",
                config.out_dir.display(),
                held.file_name().unwrap_or_default().to_string_lossy()
            );
        }
        Self::start(config, device)
    }

    /// [`Trainer::new`] without its refusal: also what a resume that starts afresh runs before
    /// it removes the old run's pointer and exports.
    fn start(mut config: TrainConfig, device: Device) -> Result<Self> {
        ensure_config!(config.batch_size > 0, "batch size must be at least 1");
        ensure_config!(
            config.lr > 0.0 && config.lr.is_finite(),
            "learning rate must be positive, got {}",
            config.lr
        );
        ensure_config!(config.log_every > 0, "log_every must be at least 1");
        // Absolute paths in the record let `--resume` work from any working directory.
        std::fs::create_dir_all(&config.out_dir).map_err(io_err(&config.out_dir))?;
        config.out_dir = absolute(&config.out_dir)?;
        config.train_shards = absolute(&config.train_shards)?;
        config.val_shards = config.val_shards.as_deref().map(absolute).transpose()?;
        let train_set = Arc::new(ShardSet::open(&config.train_shards)?);
        let size = config.arch.input_size() as usize;
        ensure_config!(
            train_set.crop_size() == size,
            "{} holds {}×{} crops but {} takes {size}×{size} (level 1 is 64², level 2 is 128²)",
            config.train_shards.display(),
            train_set.crop_size(),
            train_set.crop_size(),
            config.arch
        );
        let val_set = match &config.val_shards {
            Some(dir) => {
                let set = ShardSet::open(dir)?;
                ensure_config!(
                    set.crop_size() == size && set.num_points() == train_set.num_points(),
                    "validation set {} ({}², {} points) does not match the training set ({size}², {} points)",
                    dir.display(),
                    set.crop_size(),
                    set.num_points(),
                    train_set.num_points()
                );
                Some(Arc::new(set))
            }
            None => None,
        };
        let normaliser = match config.normaliser.clone() {
            Some(n) => n,
            None => contract::scheme::resolve_normaliser(&train_set.index().scheme, None)?,
        };
        let loader = loader_config(&config, None);
        let total_steps = match config.length {
            TrainLength::Steps(n) => n,
            TrainLength::Epochs(e) => e * loader.batches_per_epoch(&train_set),
        };
        ensure_config!(
            total_steps > 0,
            "the run has no steps (is the training set smaller than one batch?)"
        );
        let model = ModelConfig {
            arch: config.arch,
            num_points: train_set.num_points(),
            batch_norm: config.batch_norm,
        };
        let net = LandmarkNet::new(model, config.seed, device)?;
        let optimizer = Optimizer::new(config.optimizer, net.parameters());
        let writes = WriteCounter::from_env()?;
        // Whatever generations are here are not this run's (or were never committed).
        remove_generations(&config.out_dir)?;
        let run = config.out_dir.join(RUN_CONFIG);
        let json = serde_json::to_vec_pretty(&config).map_err(|source| TrainerError::Json {
            path: run.clone(),
            source,
        })?;
        write_atomic(&run, &json)?;
        let log = config.out_dir.join("train_log.csv");
        write_atomic(&log, LOG_HEADER.as_bytes())?;
        let train_epochs = open_augmentation_epochs(train_set.clone())?;
        Ok(Self {
            config,
            device,
            net,
            optimizer,
            train_set,
            train_epochs,
            val_set,
            normaliser,
            total_steps,
            step: 0,
            position: LoaderPosition::default(),
            last_loss: None,
            best_val: None,
            elapsed_before: 0.0,
            committed: Committed::default(),
            writes,
            resume_notes: Vec::new(),
        })
    }

    /// Continue the run in `out_dir` from the `last` generation its checkpoint pointer names,
    /// after checking it whole (see the module docs); a torn one falls back to the newest
    /// earlier whole generation, and with none the run starts afresh from its `run.json`. What
    /// was found is in [`Trainer::resume_notes`]. `total_steps` may extend (or shorten) the run;
    /// the schedule then stretches to the new length.
    pub fn resume(out_dir: &Path, device: Device, total_steps: Option<u64>) -> Result<Self> {
        remove_temporaries(out_dir)?;
        let mut notes = Vec::new();
        let Some((generation, best)) = choose_generation(out_dir, device, &mut notes)? else {
            return Self::afresh(out_dir, device, total_steps, notes);
        };
        let LastGeneration {
            name,
            record,
            net,
            optimizer,
        } = generation;
        let best = best.and_then(|b| match check_best(out_dir, &b) {
            Ok(best) => Some((b, best.val_nme_percent)),
            Err(torn) => {
                notes.push(format!(
                    "best checkpoint {b} is torn ({torn}); dropped: the best so far starts again \
                     at the next validation"
                ));
                None
            }
        });
        if best.is_none() {
            // Exports of a best generation no longer trusted (or no longer named).
            for path in export_paths(out_dir, Slot::Best) {
                remove_file_if_present(&path)?;
            }
        }
        let weights = generation_dir(out_dir, &name).join("last.safetensors");
        let mut config = record.config.clone();
        config.out_dir = out_dir.to_owned();
        let train_set = Arc::new(ShardSet::open(&config.train_shards)?);
        let val_set = match &config.val_shards {
            Some(dir) => Some(Arc::new(ShardSet::open(dir)?)),
            None => None,
        };
        if train_set.num_points() != record.model.num_points {
            return Err(TrainerError::Checkpoint {
                path: weights,
                message: format!(
                    "trained on {} points, {} now has {}",
                    record.model.num_points,
                    config.train_shards.display(),
                    train_set.num_points()
                ),
            });
        }
        let normaliser = match config.normaliser.clone() {
            Some(n) => n,
            None => contract::scheme::resolve_normaliser(&train_set.index().scheme, None)?,
        };
        truncate_log(&out_dir.join("train_log.csv"), record.step)?;
        let elapsed_before = last_elapsed(&out_dir.join("train_log.csv"));
        let train_epochs = open_augmentation_epochs(train_set.clone())?;
        // The fallback behind the resumed generation stays until the next commit.
        let previous_last = generations(out_dir, Slot::Last)?
            .into_iter()
            .find(|&(step, _)| step < record.step)
            .map(|(_, name)| name);
        let (best, best_val) = match best {
            Some((name, val)) => (Some(name), val),
            None => (None, None),
        };
        let mut trainer = Self {
            total_steps: total_steps.unwrap_or(record.total_steps),
            step: record.step,
            position: record.next_position,
            last_loss: record.train_loss,
            best_val,
            config,
            device,
            net,
            optimizer,
            train_set,
            train_epochs,
            val_set,
            normaliser,
            elapsed_before,
            committed: Committed {
                last: Some(name.clone()),
                previous_last,
                best: best.clone(),
            },
            writes: WriteCounter::from_env()?,
            resume_notes: notes,
        };
        // The exports may lag the pointer (a run stopped before it exported) or lead it (one
        // resumed from an earlier generation): make them the generations continued from.
        trainer.export(Slot::Last, &name)?;
        if let Some(best) = best {
            trainer.export(Slot::Best, &best)?;
        }
        Ok(trainer)
    }

    /// Start the run in `out_dir` again from step 0 with the settings it was started with
    /// (`run.json`; for a folder from before generations, its `last.json`), after removing its
    /// checkpoints: what [`Trainer::resume`] does when no whole generation is committed.
    fn afresh(
        out_dir: &Path,
        device: Device,
        total_steps: Option<u64>,
        notes: Vec<String>,
    ) -> Result<Self> {
        let mut config = fresh_config(out_dir)?;
        config.out_dir = out_dir.to_owned();
        // Started (the shards checked) before the old run's files go.
        let mut trainer = Self::start(config, device)?;
        remove_file_if_present(&pointer_path(out_dir))?;
        for path in export_paths(out_dir, Slot::Last)
            .into_iter()
            .chain(export_paths(out_dir, Slot::Best))
            .chain([out_dir.join("last.optim.safetensors")])
        {
            remove_file_if_present(&path)?;
        }
        if let Some(total) = total_steps {
            ensure_config!(total > 0, "the run has no steps");
            trainer.total_steps = total;
        }
        trainer.resume_notes = notes;
        Ok(trainer)
    }

    /// What [`Trainer::resume`] found, one line each, to be said aloud: the generation it
    /// resumed from, torn generations it passed over, a dropped best, or that it started
    /// afresh and why. Empty for a run made by [`Trainer::new`].
    pub fn resume_notes(&self) -> &[String] {
        &self.resume_notes
    }

    /// Testing hook: make the run fail with [`TrainerError::InjectedStop`] right after its
    /// `k`-th checkpoint write (counted from this trainer's creation, a resume's exports
    /// included; see the module docs), as a process killed there would stop.
    /// [`ABORT_AFTER_WRITE_ENV`] does the same with an abort.
    pub fn stop_after_write(&mut self, k: u64) {
        self.writes.stop = Some((k, StopBy::Error));
    }

    /// Checkpoint writes done so far by this trainer (what [`Trainer::stop_after_write`]
    /// counts).
    pub fn checkpoint_writes(&self) -> u64 {
        self.writes.done
    }

    /// The network being trained.
    pub fn net(&self) -> &LandmarkNet {
        &self.net
    }

    /// Steps done so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Steps in the whole run.
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// Train to the end of the run, then validate and checkpoint.
    pub fn run(&mut self, progress: &mut dyn FnMut(&Progress)) -> Result<TrainSummary> {
        self.run_until(self.total_steps, progress)
    }

    /// Train until `stop` steps are done (at most the run's total), then validate (if a
    /// validation set is configured) and write `last.*`.
    pub fn run_until(
        &mut self,
        stop: u64,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<TrainSummary> {
        let stop = stop.min(self.total_steps);
        let started = Instant::now();
        let mut window_start = Instant::now();
        let mut window_loss = Tensor::zeros([], (Kind::Double, self.device));
        let mut window_steps = 0u64;
        let mut window_images = 0usize;
        let mut epoch = self.position.epoch;
        let mut last_val = None;
        if self.step < stop {
            let loader = Loader::start_epochs(
                self.train_epochs.clone(),
                loader_config(&self.config, None),
                self.position,
            )?;
            for loaded in loader {
                let LoadedBatch {
                    batch,
                    position,
                    next,
                } = loaded?;
                let lr = self
                    .config
                    .schedule
                    .lr_at(self.config.lr, self.step, self.total_steps);
                let input = images_to_input(&batch.images, self.device);
                let target = batch.landmarks.to_device(self.device);
                let visible = batch.visible.to_device(self.device);
                self.optimizer.zero_grad();
                let pred = self.net.decode(&self.net.forward(&input, true));
                let loss = self.config.loss.batch_loss(&pred, &target, &visible);
                loss.backward();
                self.optimizer.step(lr);
                window_loss += loss.detach().to_kind(Kind::Double);
                window_steps += 1;
                window_images += batch.images.size()[0] as usize;
                self.step += 1;
                self.position = next;
                epoch = position.epoch;

                let at_end = self.step == stop;
                let mut val = None;
                if self.config.eval_every > 0
                    && self.step.is_multiple_of(self.config.eval_every)
                    && !at_end
                {
                    val = self.validate(progress)?;
                }
                if self.step.is_multiple_of(self.config.log_every) || at_end {
                    let loss = window_loss.double_value(&[]) / window_steps.max(1) as f64;
                    let secs = window_start.elapsed().as_secs_f64().max(1e-9);
                    let images_per_sec = window_images as f64 / secs;
                    if !loss.is_finite() {
                        return Err(TrainerError::Config(format!(
                            "training diverged at step {} (loss {loss}); lower the learning rate",
                            self.step
                        )));
                    }
                    self.last_loss = Some(loss);
                    progress(&Progress::Step {
                        step: self.step,
                        total: self.total_steps,
                        epoch,
                        loss,
                        lr,
                        images_per_sec,
                    });
                    let elapsed = self.elapsed_before + started.elapsed().as_secs_f64();
                    self.append_log(epoch, loss, lr, images_per_sec, val, elapsed)?;
                    window_loss = Tensor::zeros([], (Kind::Double, self.device));
                    window_steps = 0;
                    window_images = 0;
                    window_start = Instant::now();
                } else if let Some(v) = val {
                    let elapsed = self.elapsed_before + started.elapsed().as_secs_f64();
                    self.append_log(epoch, f64::NAN, lr, f64::NAN, Some(v), elapsed)?;
                }
                if self.config.checkpoint_every > 0
                    && self.step.is_multiple_of(self.config.checkpoint_every)
                    && !at_end
                {
                    self.save_last(None, progress)?;
                }
                if at_end {
                    break;
                }
            }
        }
        if self.val_set.is_some() {
            last_val = self.validate(progress)?;
            if let Some(v) = last_val {
                let elapsed = self.elapsed_before + started.elapsed().as_secs_f64();
                let lr = self.config.schedule.lr_at(
                    self.config.lr,
                    self.step.saturating_sub(1),
                    self.total_steps,
                );
                self.append_log(epoch, f64::NAN, lr, f64::NAN, Some(v), elapsed)?;
            }
        }
        self.elapsed_before += started.elapsed().as_secs_f64();
        let last_checkpoint = self.save_last(last_val, progress)?;
        let best = export_paths(&self.config.out_dir, Slot::Best)[0].clone();
        Ok(TrainSummary {
            steps: self.step,
            final_loss: self.last_loss,
            val_nme_percent: last_val,
            last_checkpoint,
            best_checkpoint: self.committed.best.is_some().then_some(best),
        })
    }

    /// Mean validation NME ×100, also saving `best.*` when it improves.
    fn validate(&mut self, progress: &mut dyn FnMut(&Progress)) -> Result<Option<f64>> {
        let Some(set) = self.val_set.clone() else {
            return Ok(None);
        };
        let report = evaluate_set(
            &self.net,
            set,
            &self.normaliser,
            None,
            self.config.batch_size.max(64),
        )?;
        let nme = report.summary.mean_nme_percent;
        progress(&Progress::Validation {
            step: self.step,
            nme_percent: nme,
        });
        if report.summary.faces > 0 && self.best_val.is_none_or(|b| nme < b) {
            self.best_val = Some(nme);
            self.save_best(nme)?;
        }
        Ok(Some(nme))
    }

    /// Commit a `best` generation of the current weights (validation NME ×100 `nme`).
    fn save_best(&mut self, nme: f64) -> Result<()> {
        let name = generation_name(Slot::Best, self.step);
        let (dest, temp) = self.begin_generation(&name)?;
        let (weights, _, json) = checkpoint_paths(&temp, Slot::Best.stem());
        self.net.save(&weights, &self.step_metadata())?;
        self.writes.wrote()?;
        self.write_record(&json, Some(nme))?;
        self.writes.wrote()?;
        self.commit_generation(&temp, &dest)?;
        self.committed.best = Some(name.clone());
        self.commit_pointer()?;
        self.export(Slot::Best, &name)?;
        self.prune()
    }

    /// `checkpoints/<name>` and a fresh temporary folder to write it in.
    fn begin_generation(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        let dir = checkpoints_dir(&self.config.out_dir);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let dest = dir.join(name);
        let temp = manifests::create_temp_dir(&dest)?;
        Ok((dest, temp))
    }

    /// Rename a written generation into place (replacing an uncommitted one of the same name
    /// a killed run left).
    fn commit_generation(&mut self, temp: &Path, dest: &Path) -> Result<()> {
        manifests::commit_temp_dir(temp, dest)?;
        self.writes.wrote()
    }

    /// Write the pointer naming the committed generations: the commit point.
    fn commit_pointer(&mut self) -> Result<()> {
        let path = pointer_path(&self.config.out_dir);
        let json = serde_json::to_vec_pretty(&self.committed.pointer()).map_err(|source| {
            TrainerError::Json {
                path: path.clone(),
                source,
            }
        })?;
        write_atomic(&path, &json)?;
        self.writes.wrote()
    }

    /// Export generation `name` of `slot` as `<stem>.safetensors` and `<stem>.json` in the
    /// output folder.
    fn export(&mut self, slot: Slot, name: &str) -> Result<()> {
        let generation = generation_dir(&self.config.out_dir, name);
        for (source, export) in export_paths(&generation, slot)
            .into_iter()
            .zip(export_paths(&self.config.out_dir, slot))
        {
            manifests::link_atomic(&source, &export)?;
            self.writes.wrote()?;
        }
        Ok(())
    }

    /// Remove the generations the run no longer keeps (in name order).
    fn prune(&mut self) -> Result<()> {
        for name in list_generations(&self.config.out_dir)? {
            if !self.committed.keeps(&name) {
                let dir = generation_dir(&self.config.out_dir, &name);
                std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
                self.writes.wrote()?;
            }
        }
        Ok(())
    }

    /// The weights' metadata of a checkpoint: the step.
    fn step_metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("step".to_owned(), self.step.to_string())])
    }

    fn record(&self, val: Option<f64>) -> CheckpointRecord {
        CheckpointRecord {
            trainer_version: TRAINER_VERSION.into(),
            config: self.config.clone(),
            model: self.net.config(),
            scheme: self.train_set.index().scheme.clone(),
            flip_permutation: self.train_set.flip_permutation().to_vec(),
            step: self.step,
            total_steps: self.total_steps,
            next_position: self.position,
            train_loss: self.last_loss,
            val_nme_percent: val,
            best_val_nme_percent: self.best_val,
        }
    }

    fn write_record(&self, path: &Path, val: Option<f64>) -> Result<()> {
        let json =
            serde_json::to_vec_pretty(&self.record(val)).map_err(|source| TrainerError::Json {
                path: path.to_owned(),
                source,
            })?;
        write_atomic(path, &json)
    }

    /// Commit a `last` generation: weights, optimiser state and record written into a
    /// temporary folder, renamed in, the pointer moved to it, the exports replaced, and the
    /// generations no longer kept pruned (the previous `last` stays until the next commit,
    /// unless the run is finished).
    fn save_last(
        &mut self,
        val: Option<f64>,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<PathBuf> {
        let name = generation_name(Slot::Last, self.step);
        let (dest, temp) = self.begin_generation(&name)?;
        let (weights, optim, json) = checkpoint_paths(&temp, Slot::Last.stem());
        self.net.save(&weights, &self.step_metadata())?;
        self.writes.wrote()?;
        let optim_meta = BTreeMap::from([
            ("steps".to_owned(), self.optimizer.steps().to_string()),
            (
                "optimizer".to_owned(),
                serde_json::to_string(&self.optimizer.kind()).unwrap_or_default(),
            ),
        ]);
        save_tensors(&optim, &self.optimizer.state_tensors(), &optim_meta)?;
        self.writes.wrote()?;
        self.write_record(&json, val)?;
        self.writes.wrote()?;
        self.commit_generation(&temp, &dest)?;
        let previous = self.committed.last.replace(name.clone());
        if previous.as_ref() != Some(&name) {
            self.committed.previous_last = previous;
        }
        if self.step >= self.total_steps {
            self.committed.previous_last = None;
        }
        self.commit_pointer()?;
        self.export(Slot::Last, &name)?;
        self.prune()?;
        let export = export_paths(&self.config.out_dir, Slot::Last)[0].clone();
        progress(&Progress::Checkpoint {
            step: self.step,
            path: export.clone(),
        });
        Ok(export)
    }

    fn append_log(
        &self,
        epoch: u64,
        loss: f64,
        lr: f64,
        ips: f64,
        val: Option<f64>,
        elapsed: f64,
    ) -> Result<()> {
        use std::io::Write;
        let path = self.config.out_dir.join("train_log.csv");
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v}")
            } else {
                String::new()
            }
        };
        let mut line = String::new();
        let _ = writeln!(
            line,
            "{},{epoch},{},{lr:e},{},{},{elapsed:.3},{}",
            self.step,
            num(loss),
            num(ips),
            val.map(num).unwrap_or_default(),
            epoch % self.train_epochs.len() as u64
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all(line.as_bytes()).map_err(io_err(&path))
    }
}

/// The loader settings of a run; `epochs` bounds evaluation-style use, training runs forever.
fn loader_config(config: &TrainConfig, epochs: Option<u64>) -> LoaderConfig {
    LoaderConfig {
        batch_size: config.batch_size,
        order: SampleOrder::Shuffled {
            seed: config.seed,
            buffer: config.shuffle_buffer,
        },
        drop_last: true,
        prefetch: config.prefetch,
        epochs,
    }
}

/// The `last` generation a resume continues from, with the `best` generation to keep (None:
/// start afresh). What it finds is pushed onto `notes`.
fn choose_generation(
    out_dir: &Path,
    device: Device,
    notes: &mut Vec<String>,
) -> Result<Option<(LastGeneration, Option<String>)>> {
    let pointer = match read_pointer(out_dir) {
        Ok(Some(pointer)) => pointer,
        Ok(None) => {
            notes.push(if out_dir.join(OLD_STYLE_RECORD).exists() {
                format!(
                    "{} holds a checkpoint from an older wingflow-train ({OLD_STYLE_RECORD} \
                     without {CHECKPOINT_POINTER}), which resume does not read; starting afresh",
                    out_dir.display()
                )
            } else {
                format!("no checkpoint committed yet (no {CHECKPOINT_POINTER}); starting afresh")
            });
            return Ok(None);
        }
        Err(unreadable) => {
            // Which generations were committed is unknown: the newest whole one, and no best.
            let (found, passed) = fall_back(out_dir, device, None, None)?;
            let what = format!("{unreadable}");
            notes.push(match &found {
                Some(g) => format!(
                    "{what}; resuming from {} (step {}), the newest whole checkpoint, without \
                     a best so far",
                    g.name, g.record.step
                ),
                None => format!("{what}, and no whole checkpoint remains; starting afresh"),
            });
            notes.extend(passed);
            return Ok(found.map(|g| (g, None)));
        }
    };
    let Some(name) = pointer.last else {
        notes.push(format!(
            "{CHECKPOINT_POINTER} names no last checkpoint yet; starting afresh"
        ));
        return Ok(None);
    };
    match load_last(out_dir, &name, device) {
        Ok(generation) => {
            notes.push(format!(
                "resuming from {name} (step {})",
                generation.record.step
            ));
            Ok(Some((generation, pointer.best)))
        }
        Err(torn) => {
            let below = parse_generation_name(&name).map(|(_, step)| step);
            let (found, passed) = fall_back(out_dir, device, Some(&name), below)?;
            let what = format!("checkpoint {name} is torn ({torn})");
            notes.push(match &found {
                Some(g) => format!("{what}; resuming from {} (step {})", g.name, g.record.step),
                None => format!("{what}, and no earlier whole checkpoint remains; starting afresh"),
            });
            notes.extend(passed);
            Ok(found.map(|g| (g, pointer.best)))
        }
    }
}

/// The newest whole `last` generation other than `failed` (and before step `below`), with a
/// note for each torn one passed over.
fn fall_back(
    out_dir: &Path,
    device: Device,
    failed: Option<&str>,
    below: Option<u64>,
) -> Result<(Option<LastGeneration>, Vec<String>)> {
    let mut passed = Vec::new();
    for (step, name) in generations(out_dir, Slot::Last)? {
        if Some(name.as_str()) == failed || below.is_some_and(|b| step >= b) {
            continue;
        }
        match load_last(out_dir, &name, device) {
            Ok(generation) => return Ok((Some(generation), passed)),
            Err(torn) => passed.push(format!("passed over checkpoint {name}: torn ({torn})")),
        }
    }
    Ok((None, passed))
}

/// The settings a run in `out_dir` was started with: its `run.json`, or for a folder from
/// before generations (no `run.json`), its `last.json` record's.
fn fresh_config(out_dir: &Path) -> Result<TrainConfig> {
    let run = out_dir.join(RUN_CONFIG);
    match std::fs::read(&run) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|source| TrainerError::Json { path: run, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let old = out_dir.join(OLD_STYLE_RECORD);
            if !old.exists() {
                return Err(TrainerError::Checkpoint {
                    path: out_dir.to_owned(),
                    message: format!(
                        "nothing to resume: no {CHECKPOINT_POINTER}, {RUN_CONFIG} or {OLD_STYLE_RECORD}"
                    ),
                });
            }
            Ok(read_record(&old.with_extension("safetensors"))?.config)
        }
        Err(e) => Err(io_err(run)(e)),
    }
}

/// The exports of `slot` in `dir` (or a generation's own files): `<stem>.safetensors`,
/// `<stem>.json`.
fn export_paths(dir: &Path, slot: Slot) -> [PathBuf; 2] {
    let (weights, _, json) = checkpoint_paths(dir, slot.stem());
    [weights, json]
}

fn remove_file_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Remove a killed writer's leftovers: temporary files (a pointer, an export) and half-written
/// generation folders. A generation renamed in holds only whole files.
fn remove_temporaries(out_dir: &Path) -> Result<()> {
    manifests::remove_stale_temp_files(out_dir, false)?;
    manifests::remove_stale_temp_files(&checkpoints_dir(out_dir), false)?;
    Ok(())
}

/// Remove every generation folder and temporary leftover of the run in `out_dir` (other
/// entries of `checkpoints/` are left alone).
fn remove_generations(out_dir: &Path) -> Result<()> {
    remove_temporaries(out_dir)?;
    for name in list_generations(out_dir)? {
        let dir = generation_dir(out_dir, &name);
        std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(io_err(path))
}

/// Drop log rows after `step` (written after the checkpoint a run resumes from).
fn truncate_log(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return write_atomic(path, LOG_HEADER.as_bytes());
    };
    let mut kept = String::from(LOG_HEADER);
    for line in text.lines().skip(1) {
        let row_step = line.split(',').next().and_then(|s| s.parse::<u64>().ok());
        if row_step.is_some_and(|s| s <= step) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    write_atomic(path, kept.as_bytes())
}

/// The `elapsed_s` of the log's last row (0 when absent).
fn last_elapsed(path: &Path) -> f64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .last()
                .and_then(|l| l.rsplit(',').next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_net;
    use crate::testing::{TestShardSpec, write_test_shard_set};

    fn tiny_sets(dir: &Path) -> (PathBuf, PathBuf) {
        let train = dir.join("train");
        let val = dir.join("val");
        let spec = TestShardSpec {
            crop_size: 64,
            shard_sizes: vec![10, 6],
            ..TestShardSpec::default()
        };
        write_test_shard_set(&train, &spec).unwrap();
        let val_spec = TestShardSpec {
            shard_sizes: vec![6],
            split: "val".into(),
            seed: 9,
            ..spec
        };
        write_test_shard_set(&val, &val_spec).unwrap();
        (train, val)
    }

    fn config(train: PathBuf, val: PathBuf, out: PathBuf) -> TrainConfig {
        TrainConfig {
            val_shards: Some(val),
            length: TrainLength::Steps(6),
            batch_size: 4,
            seed: 4,
            shuffle_buffer: 5,
            log_every: 2,
            eval_every: 3,
            checkpoint_every: 0,
            ..TrainConfig::new(train, out, Arch::Cnn6)
        }
    }

    /// Give the training set in `train` a second augmentation epoch (other shapes, same size).
    fn add_augmentation_epoch(train: &Path) {
        let spec = TestShardSpec {
            crop_size: 64,
            shard_sizes: vec![10, 6],
            seed: 77,
            ..TestShardSpec::default()
        };
        write_test_shard_set(&contract::layout::epoch_dir(train, 1), &spec).unwrap();
        let path = train.join("index.json");
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        index["augmentation_epochs"] = serde_json::json!(2);
        std::fs::write(&path, index.to_string()).unwrap();
    }

    #[test]
    fn resumed_run_equals_uninterrupted_run() {
        resume_matches(false);
    }

    #[test]
    fn resume_across_an_augmentation_epoch_boundary_matches_the_uninterrupted_run() {
        resume_matches(true);
    }

    /// Train 6 steps of 4 from 16 samples (a pass is 4 steps) whole, and 4 + resume + 2: the
    /// weights are equal; with two augmentation epochs, pass 1 (after the resume) reads epoch 1.
    fn resume_matches(two_epochs: bool) {
        let dir = tempfile::tempdir().unwrap();
        let (train, val) = tiny_sets(dir.path());
        if two_epochs {
            add_augmentation_epoch(&train);
        }
        let mut quiet = |_: &Progress| {};

        let mut whole = Trainer::new(
            config(train.clone(), val.clone(), dir.path().join("a")),
            Device::Cpu,
        )
        .unwrap();
        let summary = whole.run(&mut quiet).unwrap();
        assert_eq!(summary.steps, 6);
        assert!(summary.best_checkpoint.is_some());

        let out_b = dir.path().join("b");
        let mut first = Trainer::new(config(train, val, out_b.clone()), Device::Cpu).unwrap();
        first.run_until(4, &mut quiet).unwrap();
        drop(first);
        let mut second = Trainer::resume(&out_b, Device::Cpu, None).unwrap();
        assert_eq!(second.step(), 4);
        second.run(&mut quiet).unwrap();

        for ((na, ta), (nb, tb)) in whole
            .net()
            .named_tensors()
            .into_iter()
            .zip(second.net().named_tensors())
        {
            assert_eq!(na, nb);
            assert!(ta.equal(&tb), "{na} differs after resume");
        }
        let log = std::fs::read_to_string(out_b.join("train_log.csv")).unwrap();
        let steps: Vec<&str> = log
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        // Rows: 2, 3 (val), 4, val at the stop, then after resume 6 and the final val.
        assert_eq!(steps, ["2", "3", "4", "4", "6", "6"], "{log}");
        let record = read_record(&out_b.join("last.safetensors")).unwrap();
        assert_eq!(record.step, 6);
        assert_eq!(record.next_position, LoaderPosition { epoch: 1, batch: 2 });
        let augmentation_epochs: Vec<&str> = log
            .lines()
            .skip(1)
            .filter_map(|l| l.split(',').nth(7))
            .collect();
        let after_resume = if two_epochs { "1" } else { "0" };
        assert_eq!(
            augmentation_epochs,
            ["0", "0", "0", "0", after_resume, after_resume],
            "{log}"
        );
        if two_epochs {
            // Epoch 1 was really read: one epoch alone trains other weights.
            let (train_1, val_1) = tiny_sets(&dir.path().join("one"));
            let mut one =
                Trainer::new(config(train_1, val_1, dir.path().join("c")), Device::Cpu).unwrap();
            one.run(&mut quiet).unwrap();
            let differs = one
                .net()
                .named_tensors()
                .into_iter()
                .zip(second.net().named_tensors())
                .any(|((_, a), (_, b))| !a.equal(&b));
            assert!(differs, "the second augmentation epoch was not read");
        }
    }

    #[test]
    fn a_fresh_run_refuses_to_overwrite_a_finished_one() {
        let dir = tempfile::tempdir().unwrap();
        let (train, val) = tiny_sets(dir.path());
        let cfg = TrainConfig {
            length: TrainLength::Steps(1),
            ..config(train, val, dir.path().join("o"))
        };
        Trainer::new(cfg.clone(), Device::Cpu)
            .unwrap()
            .run(&mut |_| {})
            .unwrap();
        let err = Trainer::new(cfg.clone(), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("already holds a run (checkpoint.json)"),
            "{err}"
        );
        // A folder from before generations: its last.json alone.
        make_old_style(&cfg.out_dir);
        let err = Trainer::new(cfg, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("already holds a run (last.json)"), "{err}");
    }

    /// Turn a run's folder into one as wingflow-train wrote it before checkpoints were
    /// generations: `last.*` and `best.*` files, no pointer, no generations, no `run.json`.
    fn make_old_style(out: &Path) {
        let pointer = read_pointer(out).unwrap().unwrap();
        std::fs::copy(
            generation_dir(out, &pointer.last.unwrap()).join("last.optim.safetensors"),
            out.join("last.optim.safetensors"),
        )
        .unwrap();
        std::fs::remove_file(pointer_path(out)).unwrap();
        std::fs::remove_dir_all(checkpoints_dir(out)).unwrap();
        std::fs::remove_file(out.join(RUN_CONFIG)).unwrap();
        assert!(out.join(OLD_STYLE_RECORD).exists());
    }

    /// The six-step run of [`config`] with a checkpoint and a validation every 2 steps: `last`
    /// generations at 2, 4 and 6, a `best` one at each validation that improves. Stopped by
    /// `run_until(4)` it validates and checkpoints at 4 as the whole run does.
    fn checkpointed(train: &Path, val: &Path, out: PathBuf) -> TrainConfig {
        TrainConfig {
            checkpoint_every: 2,
            eval_every: 2,
            ..config(train.to_owned(), val.to_owned(), out)
        }
    }

    /// What a finished run leaves that must not depend on where it was stopped: the exported
    /// weights' bytes, the `last` generation's files, the pointer, the generations kept, and the
    /// records (but for the folder they name).
    fn finished_state(out: &Path) -> Vec<(String, Vec<u8>)> {
        let mut state: Vec<(String, Vec<u8>)> = ["last.safetensors", "best.safetensors"]
            .into_iter()
            .map(|f| (f.to_owned(), std::fs::read(out.join(f)).unwrap()))
            .collect();
        let pointer = read_pointer(out).unwrap().unwrap();
        let last = generation_dir(out, pointer.last.as_deref().unwrap());
        for file in ["last.safetensors", "last.optim.safetensors"] {
            state.push((
                format!("generation {file}"),
                std::fs::read(last.join(file)).unwrap(),
            ));
        }
        state.push(("pointer".into(), std::fs::read(pointer_path(out)).unwrap()));
        state.push((
            "generations".into(),
            list_generations(out).unwrap().join(",").into_bytes(),
        ));
        for stem in ["last", "best"] {
            let mut record = read_record(&out.join(format!("{stem}.safetensors"))).unwrap();
            record.config.out_dir = PathBuf::new();
            state.push((format!("{stem}.json"), serde_json::to_vec(&record).unwrap()));
        }
        state
    }

    fn assert_same_state(out: &Path, whole: &[(String, Vec<u8>)], context: &str) {
        for ((name, got), (_, want)) in finished_state(out).iter().zip(whole) {
            assert!(
                got == want,
                "{context}: {name} differs from the uninterrupted run's"
            );
        }
    }

    /// What a resume is expected to say about a folder, read from its pointer alone.
    fn expected_note(out: &Path) -> String {
        match read_pointer(out).unwrap() {
            None => "no checkpoint committed yet (no checkpoint.json); starting afresh".into(),
            Some(Pointer { last: None, .. }) => {
                "checkpoint.json names no last checkpoint yet; starting afresh".into()
            }
            Some(Pointer {
                last: Some(name), ..
            }) => {
                let (_, step) = parse_generation_name(&name).unwrap();
                format!("resuming from {name} (step {step})")
            }
        }
    }

    /// Stop a run right after each of its checkpoint writes in turn (the in-process form of
    /// `WINGFLOW_TRAIN_ABORT_AFTER_WRITE`), resume it, finish it: every time the result is the
    /// uninterrupted run's, byte for byte, and the resume said where it started from.
    #[test]
    fn a_run_stopped_after_any_checkpoint_write_resumes_to_the_uninterrupted_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (train, val) = tiny_sets(dir.path());
        let mut quiet = |_: &Progress| {};
        let whole_dir = dir.path().join("whole");
        let mut whole =
            Trainer::new(checkpointed(&train, &val, whole_dir.clone()), Device::Cpu).unwrap();
        whole.run(&mut quiet).unwrap();
        let writes = whole.checkpoint_writes();
        // 3 last generations × 7 writes, at least one best × 6, and the prunes.
        assert!(writes >= 28, "{writes} writes");
        let expected = finished_state(&whole_dir);
        let mut notes = std::collections::BTreeSet::new();
        for k in 1..=writes {
            let out = dir.path().join(format!("stopped-{k}"));
            let mut first =
                Trainer::new(checkpointed(&train, &val, out.clone()), Device::Cpu).unwrap();
            first.stop_after_write(k);
            let err = first.run(&mut quiet).unwrap_err();
            assert!(
                matches!(err, TrainerError::InjectedStop { write } if write == k),
                "write {k}: {err}"
            );
            drop(first);
            let note = expected_note(&out);
            let mut resumed = Trainer::resume(&out, Device::Cpu, None).unwrap();
            assert_eq!(
                resumed.resume_notes(),
                std::slice::from_ref(&note),
                "write {k}"
            );
            notes.insert(note.split(' ').next().unwrap().to_owned());
            resumed.run(&mut quiet).unwrap();
            assert_same_state(&out, &expected, &format!("stopped after write {k}"));
        }
        // Stops before the first commit, before the first `last` one, and after commits.
        assert_eq!(
            notes.into_iter().collect::<Vec<_>>(),
            ["checkpoint.json", "no", "resuming"]
        );
    }

    #[test]
    fn a_torn_last_generation_falls_back_to_the_previous_one_then_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let (train, val) = tiny_sets(dir.path());
        let mut quiet = |_: &Progress| {};
        let whole_dir = dir.path().join("whole");
        Trainer::new(checkpointed(&train, &val, whole_dir.clone()), Device::Cpu)
            .unwrap()
            .run(&mut quiet)
            .unwrap();
        let expected = finished_state(&whole_dir);
        let stopped_at_4 = |name: &str| {
            let out = dir.path().join(name);
            Trainer::new(checkpointed(&train, &val, out.clone()), Device::Cpu)
                .unwrap()
                .run_until(4, &mut |_| {})
                .unwrap();
            let pointer = read_pointer(&out).unwrap().unwrap();
            assert_eq!(pointer.last.as_deref(), Some("last-000000004"));
            assert!(generation_dir(&out, "last-000000002").exists());
            out
        };
        let last = |out: &Path, step: u64| generation_dir(out, &generation_name(Slot::Last, step));

        // The record of step 2 beside the weights and moments of step 4.
        let out = stopped_at_4("record");
        std::fs::copy(
            last(&out, 2).join("last.json"),
            last(&out, 4).join("last.json"),
        )
        .unwrap();
        let mut resumed = Trainer::resume(&out, Device::Cpu, None).unwrap();
        assert_eq!(
            resumed.resume_notes(),
            [
                "checkpoint last-000000004 is torn (weights at step 4, optimiser at step 4, \
              record at step 2); resuming from last-000000002 (step 2)"
            ]
        );
        assert_eq!(resumed.step(), 2);
        resumed.run(&mut quiet).unwrap();
        assert_same_state(&out, &expected, "torn record");

        // The optimiser state missing, and the weights of the previous generation truncated:
        // nothing whole is left, so the run starts again from run.json.
        let out = stopped_at_4("missing");
        std::fs::remove_file(last(&out, 4).join("last.optim.safetensors")).unwrap();
        let weights = last(&out, 2).join("last.safetensors");
        let bytes = std::fs::read(&weights).unwrap();
        std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
        let mut resumed = Trainer::resume(&out, Device::Cpu, None).unwrap();
        let notes = resumed.resume_notes().to_vec();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(
            notes[0],
            "checkpoint last-000000004 is torn (optimiser state missing), and no earlier whole \
             checkpoint remains; starting afresh"
        );
        assert!(
            notes[1]
                .starts_with("passed over checkpoint last-000000002: torn (weights unreadable: "),
            "{notes:?}"
        );
        assert_eq!(resumed.step(), 0);
        assert!(read_pointer(&out).unwrap().is_none());
        resumed.run(&mut quiet).unwrap();
        assert_same_state(&out, &expected, "nothing whole");

        // An unreadable pointer: the newest whole generation, and no best.
        let out = stopped_at_4("pointer");
        std::fs::write(pointer_path(&out), b"{\"last\": ").unwrap();
        let mut resumed = Trainer::resume(&out, Device::Cpu, None).unwrap();
        let notes = resumed.resume_notes().to_vec();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("checkpoint.json: invalid JSON")
                && notes[0].ends_with(
                    "; resuming from last-000000004 (step 4), the newest whole checkpoint, \
                     without a best so far"
                ),
            "{notes:?}"
        );
        assert!(!out.join("best.safetensors").exists());
        resumed.run(&mut quiet).unwrap();
        assert!(
            std::fs::read(out.join("last.safetensors")).unwrap() == expected[0].1,
            "unreadable pointer: the weights differ"
        );

        // A torn best is dropped (and its exports with it); the run finishes with a best again.
        let out = stopped_at_4("best");
        let best = read_pointer(&out).unwrap().unwrap().best.unwrap();
        std::fs::remove_file(generation_dir(&out, &best).join("best.json")).unwrap();
        let mut resumed = Trainer::resume(&out, Device::Cpu, None).unwrap();
        assert_eq!(
            resumed.resume_notes(),
            [
                "resuming from last-000000004 (step 4)".to_owned(),
                format!(
                    "best checkpoint {best} is torn (record missing); dropped: the best so far \
                     starts again at the next validation"
                )
            ]
        );
        assert!(!out.join("best.safetensors").exists());
        let summary = resumed.run(&mut quiet).unwrap();
        assert!(summary.best_checkpoint.is_some());
        assert!(out.join("best.safetensors").exists());
    }

    #[test]
    fn a_folder_from_before_generations_starts_afresh_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (train, val) = tiny_sets(dir.path());
        let mut quiet = |_: &Progress| {};
        let whole_dir = dir.path().join("whole");
        Trainer::new(checkpointed(&train, &val, whole_dir.clone()), Device::Cpu)
            .unwrap()
            .run(&mut quiet)
            .unwrap();
        let expected = finished_state(&whole_dir);
        let out = dir.path().join("old");
        Trainer::new(checkpointed(&train, &val, out.clone()), Device::Cpu)
            .unwrap()
            .run_until(4, &mut quiet)
            .unwrap();
        make_old_style(&out);
        let mut resumed = Trainer::resume(&out, Device::Cpu, None).unwrap();
        assert_eq!(
            resumed.resume_notes(),
            [format!(
                "{} holds a checkpoint from an older wingflow-train (last.json without \
                 checkpoint.json), which resume does not read; starting afresh",
                out.display()
            )]
        );
        assert_eq!(resumed.step(), 0);
        resumed.run(&mut quiet).unwrap();
        assert_same_state(&out, &expected, "old-style folder");
        assert!(!out.join("last.optim.safetensors").exists());
    }

    #[test]
    fn crop_size_must_match_the_architecture() {
        let dir = tempfile::tempdir().unwrap();
        let (train, val) = tiny_sets(dir.path());
        let cfg = TrainConfig {
            arch: Arch::Cnn7,
            ..config(train, val, dir.path().join("o"))
        };
        let err = Trainer::new(cfg, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("64×64") && err.contains("cnn7"), "{err}");
    }

    #[test]
    fn training_on_a_fixed_batch_cuts_the_loss_tenfold() {
        let dir = tempfile::tempdir().unwrap();
        let train = dir.path().join("train");
        let spec = TestShardSpec {
            crop_size: 64,
            shard_sizes: vec![8],
            ..TestShardSpec::default()
        };
        write_test_shard_set(&train, &spec).unwrap();
        let set = ShardSet::open(&train).unwrap();
        let batch = set.gather(&set.epoch_order(SampleOrder::Sequential, 0));
        let net = test_net(Arch::Cnn6, 5, false);
        let mut opt = Optimizer::new(OptimizerKind::ADAM, net.parameters());
        let input = images_to_input(&batch.images, Device::Cpu);
        let loss_now = |net: &LandmarkNet| {
            LossKind::WING
                .batch_loss(
                    &net.decode(&net.forward(&input, false)),
                    &batch.landmarks,
                    &batch.visible,
                )
                .double_value(&[])
        };
        let initial = loss_now(&net);
        // Without batch norm the training-mode forward is the evaluation one, so the loss of
        // each step is the loss of the current weights: stop as soon as it is 10× lower.
        let mut trained = initial;
        for step in 0..300 {
            opt.zero_grad();
            let loss = LossKind::WING.batch_loss(
                &net.decode(&net.forward(&input, true)),
                &batch.landmarks,
                &batch.visible,
            );
            trained = loss.double_value(&[]);
            if trained * 10.0 < initial {
                eprintln!("loss {initial} → {trained} in {step} steps");
                break;
            }
            loss.backward();
            opt.step(1e-3);
        }
        assert_eq!(trained, loss_now(&net));
        assert!(trained * 10.0 < initial, "loss {initial} → {trained}");
    }
}
