//! The training loop: batches from the loader, loss, optimiser step, learning-rate schedule,
//! periodic validation NME, checkpoints that resume exactly, and a CSV log.
//!
//! Files in the output directory:
//! - `last.safetensors` (weights), `last.optim.safetensors` (optimiser moments), `last.json`
//!   ([`CheckpointRecord`]): written every `checkpoint_every` steps and at the end.
//! - `best.safetensors` + `best.json`: the weights with the lowest validation NME so far.
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, TrainerError, ensure_config, io_err};
use crate::eval::{Normaliser, evaluate_set};
use crate::loss::{LossKind, TensorLoss};
use crate::model::{Arch, LandmarkNet, ModelConfig, images_to_input};
use crate::optim::{LrSchedule, Optimizer, OptimizerKind};
use crate::shards::{
    LoadedBatch, Loader, LoaderConfig, LoaderPosition, SampleOrder, ShardSet,
    open_augmentation_epochs,
};
use crate::tensor_io::{load_tensors, save_tensors, write_atomic};

/// Version of `wingflow-train`, recorded in checkpoints and reports.
pub const TRAINER_VERSION: &str = env!("CARGO_PKG_VERSION");

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
    /// Defaults that train quickly on small data: Adam, 1e-3 cosine to 1e-5, Wing loss, batch 32.
    pub fn new(train_shards: PathBuf, out_dir: PathBuf, arch: Arch) -> Self {
        Self {
            train_shards,
            val_shards: None,
            out_dir,
            arch,
            batch_norm: false,
            loss: LossKind::WING,
            optimizer: OptimizerKind::ADAM,
            lr: 1e-3,
            schedule: LrSchedule::Cosine { final_lr: 1e-5 },
            length: TrainLength::Epochs(30),
            batch_size: 32,
            seed: 0,
            shuffle_buffer: 65_536,
            prefetch: 4,
            log_every: 50,
            eval_every: 0,
            checkpoint_every: 1000,
            normaliser: None,
        }
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
    /// `last.safetensors`.
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
}

impl Trainer {
    /// Start a fresh run: open the shard sets, check them against the architecture, initialise
    /// the network from `config.seed`, and write the log header.
    pub fn new(mut config: TrainConfig, device: Device) -> Result<Self> {
        ensure_config!(config.batch_size > 0, "batch size must be at least 1");
        ensure_config!(
            config.lr > 0.0 && config.lr.is_finite(),
            "learning rate must be positive, got {}",
            config.lr
        );
        ensure_config!(config.log_every > 0, "log_every must be at least 1");
        ensure_config!(
            !config.out_dir.join("last.json").exists(),
            "{} already holds a run (last.json); resume it or choose another output directory",
            config.out_dir.display()
        );
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
        })
    }

    /// Continue the run whose `last.*` checkpoint is in `out_dir`. `total_steps` may extend (or
    /// shorten) the run; the schedule then stretches to the new length.
    pub fn resume(out_dir: &Path, device: Device, total_steps: Option<u64>) -> Result<Self> {
        let (weights, optim, _) = checkpoint_paths(out_dir, "last");
        let record = read_record(&weights)?;
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
        let net = LandmarkNet::load(&weights, device)?;
        let mut optimizer = Optimizer::new(config.optimizer, net.parameters());
        let state = load_tensors(&optim, device)?;
        let steps: u64 = state
            .metadata
            .get("steps")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| TrainerError::Checkpoint {
                path: optim.clone(),
                message: "metadata lacks `steps`".into(),
            })?;
        optimizer
            .load_state(&state.tensors, steps)
            .map_err(|e| TrainerError::Checkpoint {
                path: optim.clone(),
                message: e.to_string(),
            })?;
        let normaliser = match config.normaliser.clone() {
            Some(n) => n,
            None => contract::scheme::resolve_normaliser(&train_set.index().scheme, None)?,
        };
        truncate_log(&out_dir.join("train_log.csv"), record.step)?;
        let elapsed_before = last_elapsed(&out_dir.join("train_log.csv"));
        let train_epochs = open_augmentation_epochs(train_set.clone())?;
        Ok(Self {
            total_steps: total_steps.unwrap_or(record.total_steps),
            step: record.step,
            position: record.next_position,
            last_loss: record.train_loss,
            best_val: record.best_val_nme_percent,
            config,
            device,
            net,
            optimizer,
            train_set,
            train_epochs,
            val_set,
            normaliser,
            elapsed_before,
        })
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
        let best = checkpoint_paths(&self.config.out_dir, "best").0;
        Ok(TrainSummary {
            steps: self.step,
            final_loss: self.last_loss,
            val_nme_percent: last_val,
            last_checkpoint,
            best_checkpoint: best.exists().then_some(best),
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
            let (weights, _, json) = checkpoint_paths(&self.config.out_dir, "best");
            self.net.save(&weights, &BTreeMap::new())?;
            self.write_record(&json, Some(nme))?;
        }
        Ok(Some(nme))
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

    /// Write `last.*`: weights, optimiser state, then the JSON (last, so a record always
    /// describes complete files).
    fn save_last(&self, val: Option<f64>, progress: &mut dyn FnMut(&Progress)) -> Result<PathBuf> {
        let (weights, optim, json) = checkpoint_paths(&self.config.out_dir, "last");
        let meta = BTreeMap::from([("step".to_owned(), self.step.to_string())]);
        self.net.save(&weights, &meta)?;
        let optim_meta = BTreeMap::from([
            ("steps".to_owned(), self.optimizer.steps().to_string()),
            (
                "optimizer".to_owned(),
                serde_json::to_string(&self.optimizer.kind()).unwrap_or_default(),
            ),
        ]);
        save_tensors(&optim, &self.optimizer.state_tensors(), &optim_meta)?;
        self.write_record(&json, val)?;
        progress(&Progress::Checkpoint {
            step: self.step,
            path: weights.clone(),
        });
        Ok(weights)
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
        let err = Trainer::new(cfg, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("already holds a run"), "{err}");
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
