//! `wingflow-train`: train, evaluate and check the CNN-6/CNN-7 landmark regressors.
//!
//! Progress goes to stdout one line per event (`step 100/2000 epoch 3 loss … lr … images/s …`,
//! `val step … nme …%`, `checkpoint step … PATH`), so a wrapper can pass it through or parse it.
//! What `train --resume` found (the checkpoint it resumed from, torn ones it passed over, or
//! that it started afresh) goes to stderr, `resume: …`.
//!
//! Testing hook: `WINGFLOW_TRAIN_ABORT_AFTER_WRITE=k` aborts training right after its k-th
//! checkpoint write (see `trainer::train`), as a kill there would stop it.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use tch::{Device, Kind, Tensor};

use contract::scheme::resolve_normaliser;
use contract::training::{DeviceSpec, OptimizerChoice, Schedule, TrainRequest, defaults};
use trainer::eval::{EvalReport, evaluate_set, load_bins};
use trainer::loss::{LossKind, TensorLoss};
use trainer::model::{Arch, LandmarkNet, ModelConfig, images_to_input};
use trainer::optim::{Optimizer, OptimizerKind};
use trainer::predict::{predict_set, save_predictions};
use trainer::shards::{Loader, LoaderConfig, LoaderPosition, SampleOrder, ShardSet};
use trainer::tensor_io::save_tensors;
use trainer::train::{Progress, TRAINER_VERSION, TrainConfig, Trainer, read_record};

#[derive(Parser)]
#[command(
    name = "wingflow-train",
    version,
    about = "Train and evaluate wingflow's CNN-6/CNN-7 landmark regressors"
)]
struct Cli {
    /// libtorch intra-op threads (default: libtorch's choice).
    #[arg(long, global = true)]
    threads: Option<i32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print versions, devices and thread counts, and time one forward + backward pass.
    Doctor {
        /// Device for the test pass.
        #[arg(long, default_value_t = defaults::DEVICE)]
        device: DeviceSpec,
    },
    /// Train a network on a shard set.
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on one or more shard sets and write a JSON report.
    Evaluate(EvaluateArgs),
    /// Predict the landmarks of every crop of a shard set and write them as safetensors
    /// (`landmarks` f32 [N,L,2] in crop pixels, `sample_index` i64 [N], shard order).
    Predict(PredictArgs),
    /// Measure training throughput (images/s) on random data.
    Bench {
        /// Network.
        #[arg(long, default_value_t = defaults::ARCH)]
        arch: Arch,
        /// Batch size (training's default).
        #[arg(long, default_value_t = defaults::BATCH_SIZE as i64)]
        batch_size: i64,
        /// Timed steps (after two warm-up steps).
        #[arg(long, default_value_t = 10)]
        steps: u32,
        /// Device.
        #[arg(long, default_value_t = defaults::DEVICE)]
        device: DeviceSpec,
        /// Also time the shard loader alone on this shard set (batches/s, shuffled, with the
        /// prefetch thread), and the training step fed by it.
        #[arg(long)]
        shards: Option<PathBuf>,
    },
    /// Write weights, a batch and the network's predictions for the PyTorch parity test.
    #[command(hide = true)]
    ExportTestCase {
        /// Output directory.
        dir: PathBuf,
    },
}

/// `train`'s flags: each builds the field of the same name of [`TrainRequest`] (whose docs
/// say what it means), with its default from `contract::training::defaults` and its type
/// from the contract; `--request` reads the whole request from a JSON file instead.
#[derive(clap::Args)]
struct TrainArgs {
    /// Read every setting from this JSON `TrainRequest` (what `wingflow run` writes); no
    /// other training flag may be given with it.
    #[arg(long, value_name = "JSON", exclusive = true)]
    request: Option<PathBuf>,
    /// A shard set (a directory with index.json), or a directory holding `train/` and `val/`
    /// (not needed with --resume: the run's record names its sets).
    #[arg(long, required_unless_present_any = ["resume", "request"])]
    shards: Option<PathBuf>,
    /// Crop level: 1 trains CNN-6 on 64² crops, 2 trains CNN-7 on 128² crops.
    #[arg(long, default_value_t = defaults::ARCH.level())]
    stage: u8,
    /// Override the level's architecture (cnn6, cnn7).
    #[arg(long)]
    arch: Option<Arch>,
    /// Loss: wing, l1, l2, smooth-l1, or wing:W,EPSILON.
    #[arg(long, default_value_t = defaults::LOSS.spelling())]
    loss: String,
    /// Output directory (checkpoints, train_log.csv).
    #[arg(long, required_unless_present = "request")]
    out: Option<PathBuf>,
    /// Validation shard set (default: `val/` beside `train/` when --shards is their parent).
    #[arg(long)]
    val: Option<PathBuf>,
    /// Train without validation even when a `val/` set exists.
    #[arg(long)]
    no_val: bool,
    /// Passes over the training set (ignored when --steps is given).
    #[arg(long, default_value_t = defaults::EPOCHS)]
    epochs: u64,
    /// Optimiser steps (overrides --epochs).
    #[arg(long)]
    steps: Option<u64>,
    /// Samples per batch.
    #[arg(long, default_value_t = defaults::BATCH_SIZE)]
    batch_size: usize,
    /// Initial learning rate.
    #[arg(long, default_value_t = defaults::LR)]
    lr: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = defaults::SCHEDULE)]
    schedule: Schedule,
    /// Final learning rate of the cosine schedule.
    #[arg(long, default_value_t = defaults::FINAL_LR)]
    final_lr: f64,
    /// Steps between decays of the step schedule.
    #[arg(long, default_value_t = defaults::STEP_EVERY)]
    step_every: u64,
    /// Decay factor of the step schedule.
    #[arg(long, default_value_t = defaults::GAMMA)]
    gamma: f64,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t = defaults::OPTIMIZER)]
    optimizer: OptimizerChoice,
    /// SGD momentum.
    #[arg(long, default_value_t = defaults::MOMENTUM)]
    momentum: f64,
    /// L2 weight decay.
    #[arg(long, default_value_t = defaults::WEIGHT_DECAY)]
    weight_decay: f64,
    /// Batch normalisation after each convolution.
    #[arg(long)]
    batch_norm: bool,
    /// Seed of the initialisation and the sample order.
    #[arg(long, default_value_t = defaults::SEED)]
    seed: u64,
    /// Shuffle buffer, in samples.
    #[arg(long, default_value_t = defaults::SHUFFLE_BUFFER)]
    shuffle_buffer: usize,
    /// Print progress every N steps.
    #[arg(long, default_value_t = defaults::LOG_EVERY)]
    log_every: u64,
    /// Validate every N steps (0: only at the end).
    #[arg(long, default_value_t = defaults::EVAL_EVERY)]
    eval_every: u64,
    /// Write the `last` checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = defaults::CHECKPOINT_EVERY)]
    checkpoint_every: u64,
    /// Validation NME normaliser (inter-ocular[:A,B], inter-pupil[:L0-L1,R0-R1], box-width,
    /// box-sqrt; default: the scheme's).
    #[arg(long)]
    normaliser: Option<String>,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value_t = defaults::DEVICE)]
    device: DeviceSpec,
    /// Continue the run in --out from the `last` checkpoint its checkpoint.json names, checked
    /// whole (a torn one falls back to an earlier one; with none the run starts afresh; stderr
    /// says which). Its stored settings win, except that --steps, when given, sets a new total
    /// length (the schedule stretches to it).
    #[arg(long)]
    resume: bool,
}

impl TrainArgs {
    /// The request these flags describe (or the one `--request` names).
    fn into_request(self) -> Result<TrainRequest> {
        if let Some(path) = &self.request {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the training request {}", path.display()))?;
            return serde_json::from_str(&text)
                .with_context(|| format!("{}: not a training request", path.display()));
        }
        Ok(TrainRequest {
            shards: self.shards,
            out: self.out.context("--out is required")?,
            arch: match self.arch {
                Some(arch) => arch,
                None => Arch::for_level(self.stage)?,
            },
            loss: self.loss.parse()?,
            val: self.val,
            no_val: self.no_val,
            epochs: self.epochs,
            steps: self.steps,
            batch_size: self.batch_size,
            lr: self.lr,
            schedule: self.schedule,
            final_lr: self.final_lr,
            step_every: self.step_every,
            gamma: self.gamma,
            optimizer: self.optimizer,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            batch_norm: self.batch_norm,
            seed: self.seed,
            shuffle_buffer: self.shuffle_buffer,
            log_every: self.log_every,
            eval_every: self.eval_every,
            checkpoint_every: self.checkpoint_every,
            normaliser: self.normaliser,
            device: self.device,
            resume: self.resume,
        })
    }
}

#[derive(clap::Args)]
struct EvaluateArgs {
    /// Weights file (`last.safetensors`, `best.safetensors`, …).
    #[arg(long)]
    checkpoint: PathBuf,
    /// A shard set, or a directory of shard sets (each subdirectory with index.json is a split).
    #[arg(long)]
    shards: PathBuf,
    /// Only these splits (repeatable), when --shards holds several.
    #[arg(long = "split")]
    splits: Vec<String>,
    /// NME normaliser (default: the scheme's).
    #[arg(long)]
    normaliser: Option<String>,
    /// sample_index → pose bin mapping (JSON or CSV) for per-bin NME.
    #[arg(long)]
    bins: Option<PathBuf>,
    /// Write the JSON report here (default: print it to stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value_t = defaults::DEVICE)]
    device: DeviceSpec,
}

#[derive(clap::Args)]
struct PredictArgs {
    /// Weights file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The shard set (a directory with index.json).
    #[arg(long)]
    shards: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value_t = defaults::DEVICE)]
    device: DeviceSpec,
}

fn main() -> std::process::ExitCode {
    contract::exit_code(dispatch(Cli::parse()))
}

fn dispatch(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        tch::set_num_threads(n);
    }
    match cli.command {
        Command::Doctor { device } => doctor(device),
        Command::Train(args) => train(args.into_request()?),
        Command::Evaluate(args) => evaluate(args),
        Command::Predict(args) => predict(&args),
        Command::Bench {
            arch,
            batch_size,
            steps,
            device,
            shards,
        } => {
            let device = parse_device(device)?;
            let ips = bench(arch, batch_size, steps, device)?;
            println!(
                "{arch} batch {batch_size}: {ips:.1} images/s (forward + backward + Adam step)"
            );
            if let Some(dir) = shards {
                bench_loader(&dir, arch, batch_size, steps, device)?;
            }
            Ok(())
        }
        Command::ExportTestCase { dir } => export_test_case(&dir),
    }
}

/// The libtorch device of a device setting (`auto`, `cpu`, `cuda`, `cuda:N`), checked against
/// the devices libtorch sees.
fn parse_device(spec: DeviceSpec) -> Result<Device> {
    Ok(match spec {
        DeviceSpec::Auto => Device::cuda_if_available(),
        DeviceSpec::Cpu => Device::Cpu,
        DeviceSpec::Cuda(index) => {
            let count = tch::Cuda::device_count();
            let index = index.unwrap_or(0);
            if index as i64 >= count {
                bail!(
                    "--device {spec}, but libtorch sees {count} CUDA device(s) (run `wingflow-train doctor`)"
                );
            }
            Device::Cuda(index)
        }
    })
}

/// The libtorch version of the library actually loaded: find `libtorch_cpu.so` in this process's
/// mappings and read the version file of its installation.
fn runtime_libtorch() -> Option<(String, PathBuf)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let lib = maps.lines().find_map(|l| {
        l.split_whitespace()
            .last()
            .filter(|p| p.ends_with("/libtorch_cpu.so"))
    })?;
    let dir = Path::new(lib).parent()?.to_owned();
    let version = std::fs::read_to_string(dir.join("../version.py"))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("__version__ = ")
                    .map(|v| v.trim_matches('\'').to_owned())
            })
        })
        .or_else(|| {
            std::fs::read_to_string(dir.join("../build-version"))
                .ok()
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    Some((version, dir))
}

/// GPU model names from the NVIDIA driver's proc files (libtorch's C API has no name query).
fn gpu_names() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc/driver/nvidia/gpus") else {
        return Vec::new();
    };
    let mut names: Vec<(String, String)> = entries
        .flatten()
        .filter_map(|e| {
            let info = std::fs::read_to_string(e.path().join("information")).ok()?;
            let model = info
                .lines()
                .find_map(|l| l.strip_prefix("Model:"))?
                .trim()
                .to_owned();
            Some((e.file_name().to_string_lossy().into_owned(), model))
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|(bus, model)| format!("{model} ({bus})"))
        .collect()
}

fn doctor(device: DeviceSpec) -> Result<()> {
    println!("wingflow-train {TRAINER_VERSION}");
    println!(
        "libtorch (built against): {} in {}",
        option_env!("WINGFLOW_LIBTORCH_VERSION").unwrap_or("unknown"),
        option_env!("WINGFLOW_LIBTORCH_LIB").unwrap_or("unknown")
    );
    match runtime_libtorch() {
        Some((version, dir)) => println!("libtorch (loaded): {version} from {}", dir.display()),
        None => println!("libtorch (loaded): unknown"),
    }
    let cuda = tch::Cuda::is_available();
    // rustc's --as-needed would drop libtorch_cuda (build.rs keeps it): say whether it is loaded.
    let cuda_linked =
        std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("/libtorch_cuda.so"));
    println!("libtorch_cuda loaded: {cuda_linked}");
    println!(
        "CUDA available: {cuda}, devices: {}",
        tch::Cuda::device_count()
    );
    for name in gpu_names() {
        println!("  GPU: {name}");
    }
    if cuda {
        println!(
            "cuDNN available: {}, version: {}",
            tch::Cuda::cudnn_is_available(),
            tch::utils::version_cudnn()
        );
    } else {
        println!("cuDNN available: false");
    }
    println!(
        "threads: intra-op {}, inter-op {}; MKL {}, OpenMP {}, mkldnn {}",
        tch::get_num_threads(),
        tch::get_num_interop_threads(),
        tch::utils::has_mkl(),
        tch::utils::has_openmp(),
        tch::utils::has_mkldnn()
    );
    let device = parse_device(device)?;
    let check = || -> Result<(f64, f64)> {
        tch::manual_seed(0);
        let net = LandmarkNet::new(
            ModelConfig {
                arch: Arch::Cnn6,
                num_points: 68,
                batch_norm: false,
            },
            0,
            device,
        )?;
        let images = Tensor::randint(256, [8, 64, 64, 3], (Kind::Uint8, Device::Cpu));
        let target = Tensor::rand([8, 68, 2], (Kind::Float, device)).multiply_scalar(64.0);
        let visible = Tensor::ones([8, 68], (Kind::Uint8, device));
        let start = Instant::now();
        let pred = net.decode(&net.forward(&images_to_input(&images, device), true));
        let loss = LossKind::WING.batch_loss(&pred, &target, &visible);
        loss.backward();
        let grad_norm = net
            .parameters()
            .iter()
            .map(|(_, p)| p.grad().square().sum(Kind::Double).double_value(&[]))
            .sum::<f64>();
        let value = loss.double_value(&[]);
        if !value.is_finite() || !grad_norm.is_finite() || grad_norm == 0.0 {
            bail!("loss {value}, squared gradient norm {grad_norm}");
        }
        Ok((value, start.elapsed().as_secs_f64() * 1e3))
    };
    match check() {
        Ok((loss, ms)) => {
            println!(
                "forward + backward CNN-6, batch 8, {device:?}: loss {loss:.3}, {ms:.1} ms: OK"
            );
            Ok(())
        }
        Err(e) => {
            println!("forward + backward CNN-6 on {device:?}: FAIL: {e:#}");
            bail!("doctor: the test pass failed")
        }
    }
}

fn train(args: TrainRequest) -> Result<()> {
    let device = parse_device(args.device)?;
    let mut print = |p: &Progress| {
        println!("{p}");
        let _ = std::io::stdout().flush();
    };
    let mut trainer = if args.resume {
        let trainer = Trainer::resume(&args.out, device, args.steps)
            .with_context(|| format!("resuming from {}", args.out.display()))?;
        for note in trainer.resume_notes() {
            eprintln!("resume: {note}");
        }
        trainer
    } else {
        let shards = args.shards.clone().context("--shards is required")?;
        let (train_dir, sibling_val) = if shards.join("index.json").exists() {
            (shards, None)
        } else {
            let val = shards.join("val");
            (
                shards.join("train"),
                val.join("index.json").exists().then_some(val),
            )
        };
        let val_shards = if args.no_val {
            None
        } else {
            args.val.clone().or(sibling_val)
        };
        let scheme = ShardSet::open(&train_dir)?.index().scheme.clone();
        let normaliser = args
            .normaliser
            .as_deref()
            .map(|n| resolve_normaliser(&scheme, Some(n)))
            .transpose()?;
        let config = TrainConfig::from_request(&args, train_dir, val_shards, normaliser);
        Trainer::new(config, device)?
    };
    println!(
        "training {} on {device:?}: {} steps (from step {})",
        trainer.net().config().arch,
        trainer.total_steps(),
        trainer.step()
    );
    let summary = trainer.run(&mut print)?;
    println!(
        "done: {} steps, loss {}, val NME {}, weights {}",
        summary.steps,
        summary
            .final_loss
            .map_or("n/a".into(), |l| format!("{l:.4}")),
        summary
            .val_nme_percent
            .map_or("n/a".into(), |v| format!("{v:.3}%")),
        summary.last_checkpoint.display()
    );
    Ok(())
}

/// The shard sets under `dir`: `dir` itself when it has index.json, else its subdirectories that
/// do (sorted by name).
fn shard_sets(dir: &Path, only: &[String]) -> Result<Vec<PathBuf>> {
    if dir.join("index.json").exists() {
        return Ok(vec![dir.to_owned()]);
    }
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("index.json").exists())
        .filter(|p| {
            only.is_empty()
                || p.file_name()
                    .is_some_and(|n| only.iter().any(|s| n == s.as_str()))
        })
        .collect();
    sets.sort();
    if sets.is_empty() {
        bail!(
            "{} holds no shard set (no index.json in it or its subdirectories)",
            dir.display()
        );
    }
    Ok(sets)
}

fn evaluate(args: EvaluateArgs) -> Result<()> {
    let device = parse_device(args.device)?;
    let net = LandmarkNet::load(&args.checkpoint, device)?;
    let bins: Option<HashMap<i64, String>> = args.bins.as_deref().map(load_bins).transpose()?;
    let trained_scheme = read_record(&args.checkpoint).ok().map(|r| r.scheme);
    let mut report = EvalReport {
        checkpoint: args.checkpoint.clone(),
        trainer_version: TRAINER_VERSION.into(),
        splits: Vec::new(),
    };
    for dir in shard_sets(&args.shards, &args.splits)? {
        let set = Arc::new(ShardSet::open(&dir)?);
        let scheme = set.index().scheme.clone();
        if let Some(trained) = trained_scheme.as_deref().filter(|t| *t != scheme) {
            bail!(
                "{} uses scheme {scheme}, the checkpoint was trained on {trained}",
                dir.display()
            );
        }
        let normaliser = resolve_normaliser(&scheme, args.normaliser.as_deref())?;
        let split = evaluate_set(&net, set, &normaliser, bins.as_ref(), args.batch_size)?;
        let at = |t: f64| {
            split
                .summary
                .thresholds
                .iter()
                .find(|s| s.threshold == t)
                .cloned()
        };
        let (a8, a10) = (at(0.08), at(0.10));
        eprintln!(
            "{}: {} faces ({} skipped), NME {:.3}% ({}), AUC@0.08 {:.4}, failures@0.08 {:.2}%, AUC@0.10 {:.4}, failures@0.10 {:.2}%",
            split.split,
            split.summary.faces,
            split.skipped,
            split.summary.mean_nme_percent,
            split.normaliser,
            a8.as_ref().map_or(0.0, |s| s.auc),
            a8.as_ref().map_or(0.0, |s| 100.0 * s.failure_rate),
            a10.as_ref().map_or(0.0, |s| s.auc),
            a10.as_ref().map_or(0.0, |s| 100.0 * s.failure_rate),
        );
        report.splits.push(split);
    }
    let json = serde_json::to_string_pretty(&report)?;
    match &args.out {
        Some(path) => trainer::tensor_io::write_atomic(path, json.as_bytes())?,
        None => println!("{json}"),
    }
    Ok(())
}

fn predict(args: &PredictArgs) -> Result<()> {
    let device = parse_device(args.device)?;
    let net = LandmarkNet::load(&args.checkpoint, device)?;
    let set = Arc::new(ShardSet::open(&args.shards)?);
    if let Ok(record) = read_record(&args.checkpoint)
        && record.scheme != set.index().scheme
    {
        bail!(
            "{} uses scheme {}, the checkpoint was trained on {}",
            args.shards.display(),
            set.index().scheme,
            record.scheme
        );
    }
    let metadata = BTreeMap::from([
        (
            "checkpoint".to_owned(),
            args.checkpoint.display().to_string(),
        ),
        ("arch".to_owned(), net.config().arch.to_string()),
        ("scheme".to_owned(), set.index().scheme.clone()),
        ("crop_size".to_owned(), set.crop_size().to_string()),
        ("trainer_version".to_owned(), TRAINER_VERSION.to_owned()),
    ]);
    let predictions = predict_set(&net, set, args.batch_size)?;
    save_predictions(&args.out, &predictions, &metadata)?;
    eprintln!(
        "predicted {} samples: {}",
        predictions.sample_index.size()[0],
        args.out.display()
    );
    Ok(())
}

/// Images per second of forward + backward + Adam step on random data.
fn bench(arch: Arch, batch: i64, steps: u32, device: Device) -> Result<f64> {
    tch::manual_seed(0);
    let net = LandmarkNet::new(
        ModelConfig {
            arch,
            num_points: 68,
            batch_norm: false,
        },
        0,
        device,
    )?;
    let mut opt = Optimizer::new(OptimizerKind::ADAM, net.parameters());
    let s = arch.input_size() as i64;
    let images = Tensor::randint(256, [batch, s, s, 3], (Kind::Uint8, Device::Cpu));
    let target = Tensor::rand([batch, 68, 2], (Kind::Float, device)).multiply_scalar(s as f64);
    let visible = Tensor::ones([batch, 68], (Kind::Uint8, device));
    let step = |opt: &mut Optimizer| {
        opt.zero_grad();
        let pred = net.decode(&net.forward(&images_to_input(&images, device), true));
        let loss = LossKind::WING.batch_loss(&pred, &target, &visible);
        loss.backward();
        opt.step(1e-4);
        loss.double_value(&[])
    };
    for _ in 0..2 {
        step(&mut opt);
    }
    let start = Instant::now();
    for _ in 0..steps {
        step(&mut opt);
    }
    Ok(f64::from(steps) * batch as f64 / start.elapsed().as_secs_f64())
}

/// The loader alone (batches/s over at least two epochs' worth of batches, or 200) and the
/// training step fed by the loader (images/s), on a real shard set.
fn bench_loader(dir: &Path, arch: Arch, batch: i64, steps: u32, device: Device) -> Result<()> {
    let set = Arc::new(ShardSet::open(dir)?);
    let config = LoaderConfig {
        batch_size: batch as usize,
        order: SampleOrder::Shuffled {
            seed: defaults::SEED,
            buffer: defaults::SHUFFLE_BUFFER,
        },
        drop_last: true,
        prefetch: 4,
        epochs: None,
    };
    let per_epoch = config.batches_per_epoch(&set).max(1);
    let count = (2 * per_epoch).max(200);
    let start = Instant::now();
    let mut checksum = 0i64;
    for loaded in
        Loader::start(set.clone(), config, LoaderPosition::default())?.take(count as usize)
    {
        checksum += loaded?.batch.sample_index.int64_value(&[0]);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "loader: {:.1} batches/s ({:.0} images/s), batch {batch}, shuffled, {} samples of {}² from {} (checksum {checksum})",
        count as f64 / secs,
        count as f64 * batch as f64 / secs,
        set.len(),
        set.crop_size(),
        dir.display()
    );
    ensure!(
        set.crop_size() == arch.input_size() as usize,
        "{} holds {}² crops; {arch} takes {}²",
        dir.display(),
        set.crop_size(),
        arch.input_size()
    );
    let net = LandmarkNet::new(
        ModelConfig {
            arch,
            num_points: set.num_points(),
            batch_norm: false,
        },
        0,
        device,
    )?;
    let mut opt = Optimizer::new(OptimizerKind::ADAM, net.parameters());
    let mut loader = Loader::start(set, config, LoaderPosition::default())?;
    let mut step = |opt: &mut Optimizer| -> Result<()> {
        let batch = loader.next().context("the loader stopped")??.batch;
        opt.zero_grad();
        let pred = net.decode(&net.forward(&images_to_input(&batch.images, device), true));
        let target = batch.landmarks.to_device(device);
        let visible = batch.visible.to_device(device);
        LossKind::WING
            .batch_loss(&pred, &target, &visible)
            .backward();
        opt.step(1e-4);
        Ok(())
    };
    for _ in 0..2 {
        step(&mut opt)?;
    }
    let start = Instant::now();
    for _ in 0..steps {
        step(&mut opt)?;
    }
    println!(
        "{arch} batch {batch} fed by the loader: {:.1} images/s",
        f64::from(steps) * batch as f64 / start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Cases for `python/tests/test_models.py`: for each, `<name>.safetensors` (weights) and
/// `<name>.case.safetensors` (`images` u8 [B,S,S,3], `predictions` f32 [B,L,2] in pixels).
fn export_test_case(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cases = [
        (
            "cnn6",
            ModelConfig {
                arch: Arch::Cnn6,
                num_points: 68,
                batch_norm: false,
            },
        ),
        (
            "cnn7_bn",
            ModelConfig {
                arch: Arch::Cnn7,
                num_points: 19,
                batch_norm: true,
            },
        ),
    ];
    let mut names = Vec::new();
    for (i, (name, config)) in cases.into_iter().enumerate() {
        tch::manual_seed(100 + i as i64);
        let net = LandmarkNet::new(config, 100 + i as u64, Device::Cpu)?;
        let s = config.arch.input_size() as i64;
        if config.batch_norm {
            // A few training-mode passes move the running statistics off 0/1, so the test
            // checks that they are saved and used.
            let mut opt = Optimizer::new(OptimizerKind::ADAM, net.parameters());
            for _ in 0..3 {
                let images = Tensor::randint(256, [4, s, s, 3], (Kind::Uint8, Device::Cpu));
                let pred = net.decode(&net.forward(&images_to_input(&images, Device::Cpu), true));
                opt.zero_grad();
                pred.square().mean(Kind::Float).backward();
                opt.step(1e-3);
            }
        }
        let images = Tensor::randint(256, [3, s, s, 3], (Kind::Uint8, Device::Cpu));
        let predictions = net.predict(&images)?;
        net.save(
            &dir.join(format!("{name}.safetensors")),
            &Default::default(),
        )?;
        save_tensors(
            &dir.join(format!("{name}.case.safetensors")),
            &[
                ("images".into(), images),
                ("predictions".into(), predictions),
            ],
            &Default::default(),
        )?;
        names.push(name);
    }
    trainer::tensor_io::write_atomic(
        &dir.join("cases.json"),
        serde_json::to_string(&names)?.as_bytes(),
    )?;
    println!("wrote {} cases to {}", names.len(), dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request of `wingflow-train train ARGS`, parsed as `main` parses it.
    fn request(args: &[&str]) -> TrainRequest {
        let argv = ["wingflow-train", "train"].iter().chain(args);
        let Command::Train(train) = Cli::try_parse_from(argv).unwrap().command else {
            unreachable!("a train command")
        };
        train.into_request().unwrap()
    }

    /// Every flag left out takes the request's default (both read `contract::training::
    /// defaults`): fails if a flag grows a default of its own.
    #[test]
    fn train_flags_default_to_the_request_defaults() {
        assert_eq!(
            request(&["--shards", "s", "--out", "o"]),
            TrainRequest {
                shards: Some("s".into()),
                out: "o".into(),
                ..TrainRequest::default()
            }
        );
    }

    #[test]
    fn train_flags_take_the_contract_types() {
        let r = request(&[
            "--shards",
            "s",
            "--out",
            "o",
            "--stage",
            "2",
            "--schedule",
            "step",
            "--optimizer",
            "sgd",
            "--loss",
            "wing:5,1",
            "--device",
            "cuda:1",
        ]);
        assert_eq!(r.arch, Arch::Cnn7);
        assert_eq!(
            (r.schedule, r.optimizer),
            (Schedule::Step, OptimizerChoice::Sgd)
        );
        assert_eq!(r.loss.spelling(), "wing:5,1");
        assert_eq!(r.device, DeviceSpec::Cuda(Some(1)));
        let err = Cli::try_parse_from(["wingflow-train", "train", "--out", "o", "--device", "gpu"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(DeviceSpec::ALLOWED), "{err}");
    }

    /// The run of a default request is `TrainConfig::new`'s: the trainer has no defaults of
    /// its own.
    #[test]
    fn a_default_request_trains_the_default_run() {
        let r = request(&["--shards", "t", "--out", "o"]);
        assert_eq!(
            TrainConfig::from_request(&r, "t".into(), None, None),
            TrainConfig::new("t".into(), "o".into(), Arch::Cnn6)
        );
    }
}
