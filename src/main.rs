//! `wingflow`: the command-line front end. Parses arguments, draws progress, reads
//! `wingflow.toml`, and calls the stage libraries; training is delegated to `wingflow-train`.

mod config;
mod dag;
mod evaluation;
mod experiment;
mod inference;
mod predict;
mod progress;
mod trainer_bin;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use pipeline::{HashPolicy, RunOptions};
use render::WorkerSplit;

use crate::config::Config;
use crate::progress::RunProgress;

/// Pose-balanced, augmented facial-landmark training shards, and the Wing-loss CNN-6/CNN-7
/// trainer.
///
/// Typical session: `wingflow init DATA_DIR` writes a commented wingflow.toml for the
/// annotation sources found in DATA_DIR; `wingflow run` executes every stale stage
/// (ingest → align → pca → balance → render → train); `wingflow status` says what is stale
/// and exactly why.
#[derive(Parser, Debug)]
#[command(name = "wingflow", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The `--config` flag shared by the commands that read `wingflow.toml`.
#[derive(Args, Debug)]
struct ConfigArg {
    /// The configuration file.
    #[arg(short, long, default_value = "wingflow.toml", env = "WINGFLOW_CONFIG")]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a commented wingflow.toml for the annotation sources found in a folder.
    Init {
        /// Folder holding the annotation sources (300W tree, HRNet CSVs, WFLW lists,
        /// aflw.sqlite), searched three levels deep.
        source_dir: PathBuf,
        /// Where to write the configuration.
        #[arg(short, long, default_value = "wingflow.toml")]
        config: PathBuf,
        /// Output root to put in the configuration.
        #[arg(short, long, default_value = "wingflow-out")]
        output: PathBuf,
        /// Overwrite an existing configuration file.
        #[arg(long)]
        force: bool,
        /// Set a key of the written configuration, e.g. `--set train.steps=200` (repeatable;
        /// the key must exist in the document, the value is TOML or a bare word).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Run every stale stage, in order, and print a summary table.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Stop after this stage (it and everything it depends on).
        #[arg(long, value_name = "STAGE")]
        until: Option<String>,
        /// Run this stage even if it is fresh (repeatable).
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Re-hash every input and output instead of trusting unchanged file stats.
        #[arg(long)]
        verify: bool,
        /// Render only this worker's shards (`I/N`: shards with id % N == I), for a Slurm
        /// array or a Kubernetes Indexed Job on a shared file system. Also read from
        /// SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX with
        /// --workers/WINGFLOW_WORKERS. Stages up to balance must be fresh (run
        /// `wingflow run --until balance` first); `wingflow index` or the next plain run
        /// verifies every shard and writes the indexes.
        #[arg(long, value_name = "I/N")]
        worker: Option<String>,
        /// Worker count for JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs).
        #[arg(long, env = "WINGFLOW_WORKERS")]
        workers: Option<u32>,
    },
    /// Verify every shard's digest and write each shard set's index.json and samples.parquet
    /// (after a worker split).
    Index {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove shards (and their tables) that are no longer in the plan, listing each one.
    Gc {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print a shard set's counts, sizes and checksum status; optionally draw a contact sheet
    /// of rendered samples with their landmarks (image-left points green, image-right red,
    /// midline yellow: a wrong flip shows at a glance).
    Inspect {
        /// A shard set folder, e.g. wingflow-out/shards/stage1/train.
        shard_dir: PathBuf,
        /// Write a contact sheet PNG.
        #[arg(long, value_name = "PNG")]
        contact_sheet: Option<PathBuf>,
        /// Samples on the contact sheet.
        #[arg(long, default_value_t = 64)]
        max: usize,
    },
    /// Say which stages are fresh or stale, and exactly why (which file, parameter or code
    /// version changed). Runs nothing.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Re-hash every input and output instead of trusting unchanged file stats.
        #[arg(long)]
        verify: bool,
    },
    /// Generate a synthetic face dataset in a real on-disk format (300W tree, AFLW HRNet CSV,
    /// aflw.sqlite or COCO keypoint JSON), with ground truth sidecars (poses.csv,
    /// synth-truth.jsonl).
    ///
    /// Faces come from a parametric 3D landmark model under a skewed pose distribution (mostly
    /// frontal, few large yaws), rendered with shading, clutter, occluders, blur and JPEG
    /// artefacts. Same seed → byte-identical files, whatever the thread count.
    Synth(SynthArgs),
    /// Locate the landmarks of faces in images with the trained networks: CNN-6 on the box's
    /// 64² crop, then (with --stage2) CNN-7 on the 128² rotation-normalised crop.
    Predict(predict::PredictArgs),
    /// Experiments that reproduce the Wing-loss paper's studies on synthetic data.
    #[command(subcommand)]
    Experiment(ExperimentCommand),
    /// Check the installation: versions, libtorch, CUDA, threads, and one forward/backward pass
    /// of a small conv net through tch (run by `wingflow-train`).
    Doctor,
}

/// `wingflow experiment …`.
#[derive(Subcommand, Debug)]
enum ExperimentCommand {
    /// The loss study: L2, L1, smooth L1 and Wing for CNN-6, CNN-6 + PDB, CNN-6/7 and
    /// CNN-6/7 + PDB on a synthetic 300W-format benchmark; prints the paper's table.
    Losses(experiment::LossStudyArgs),
}

/// Arguments of `wingflow synth`.
#[derive(Args, Debug)]
struct SynthArgs {
    /// Output folder (must be empty or absent).
    out_dir: PathBuf,
    /// On-disk format: 300w, aflw (HRNet CSV, 19 points), aflw-sqlite (21 points) or coco
    /// (COCO keypoint JSON, 68 points; flavour: the --coco-* options).
    #[arg(long, default_value = "300w")]
    format: String,
    /// coco: the member holding the face, `keypoints` (mmpose) or `face` (COCO-WholeBody's
    /// face_kpts; each image also gets a person without a face).
    #[arg(long, default_value = "keypoints", value_parser = ["keypoints", "face"])]
    coco_field: String,
    /// coco: the pixel rule of the written values.
    #[arg(long, default_value = "zero-based", value_parser = ["one-based", "zero-based", "continuous"])]
    coco_origin: String,
    /// coco: the v flags written: `coco` (2 in view, 1 hidden by the head: labelled but
    /// occluded), `all-1` (mmpose's 300W/AFLW/WFLW files) or `all-2` (300W-LP).
    #[arg(long, default_value = "coco", value_parser = ["coco", "all-1", "all-2"])]
    coco_flags: String,
    /// coco: faces per image (1–4), tiled side by side.
    #[arg(long, default_value_t = 1)]
    faces_per_image: usize,
    /// Number of faces (one per image unless --faces-per-image). For 300w the folders keep
    /// 300W's proportions (3148 train : 554 common : 135 challenging).
    #[arg(long, default_value_t = 600)]
    count: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image side range in pixels, `MIN-MAX` (e.g. `540-640` for ~0.3 MP, `1200-1300` for
    /// ~1.5 MP photo-like images).
    #[arg(long, value_name = "MIN-MAX")]
    size: Option<String>,
    /// Largest |yaw| in degrees (default: 60 for 300w, 90 for AFLW).
    #[arg(long)]
    max_yaw: Option<f32>,
    /// Write a grid of faces with their landmarks to this PNG.
    #[arg(long, value_name = "PNG")]
    preview: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    contract::exit_code(dispatch(Cli::parse()))
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init {
            source_dir,
            config,
            output,
            force,
            overrides,
        } => init(&source_dir, &config, &output, force, &overrides),
        Command::Run {
            config,
            until,
            force,
            verify,
            worker,
            workers,
        } => match worker_split(worker.as_deref(), workers)? {
            Some(split) => run_worker(&config.config, split),
            None => run(&config.config, until, force, verify),
        },
        Command::Index { config } => index(&config.config),
        Command::Gc { config } => gc(&config.config),
        Command::Inspect {
            shard_dir,
            contact_sheet,
            max,
        } => inspect(&shard_dir, contact_sheet.as_deref(), max),
        Command::Status { config, verify } => status(&config.config, verify),
        Command::Synth(args) => synth(&args),
        Command::Predict(args) => predict::predict_command(&args),
        Command::Experiment(ExperimentCommand::Losses(args)) => {
            experiment::loss_study(&args).map(|_| ())
        }
        Command::Doctor => doctor(),
    }
}

fn policy(verify: bool) -> HashPolicy {
    if verify {
        HashPolicy::Rehash
    } else {
        HashPolicy::TrustStat
    }
}

fn init(
    source_dir: &std::path::Path,
    path: &std::path::Path,
    output: &std::path::Path,
    force: bool,
    overrides: &[String],
) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{} already exists (use --force to overwrite)",
            path.display()
        );
    }
    if !source_dir.is_dir() {
        bail!("{} is not a folder", source_dir.display());
    }
    let doc = config::init_document(source_dir, output, overrides)?;
    let text = doc.to_string();
    // A `--set` value `run` would refuse is refused here, before anything is written. (With
    // no source found, the document is written anyway, its comment saying how to add one.)
    let found_sources = doc
        .get("sources")
        .is_some_and(|s| s.as_array_of_tables().is_some());
    if found_sources {
        Config::parse(&text, path)?;
    }
    manifests::write_atomic(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}; edit it, then `wingflow run`", path.display());
    Ok(())
}

fn run(
    path: &std::path::Path,
    until: Option<String>,
    force: Vec<String>,
    verify: bool,
) -> Result<()> {
    let config = Config::load(path)?;
    config.check_sources(path)?;
    let mut pipeline = dag::build(&config)?;
    let display = RunProgress::new();
    let options = RunOptions {
        until,
        force,
        policy: policy(verify),
    };
    let summary = pipeline.run(&options, &|event| display.on_event(event))?;
    println!("{summary}");
    Ok(())
}

/// The worker split from `--worker I/N`, or from the Slurm / Kubernetes environment.
fn worker_split(flag: Option<&str>, workers: Option<u32>) -> Result<Option<WorkerSplit>> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let parse = |what: &str, v: &str| -> Result<u32> {
        v.trim()
            .parse()
            .with_context(|| format!("{what} = {v:?} is not a number"))
    };
    let (index, count) = if let Some(text) = flag {
        let (i, n) = text
            .split_once('/')
            .with_context(|| format!("--worker {text}: expected I/N"))?;
        (parse("--worker I", i)?, parse("--worker N", n)?)
    } else if let (Some(i), Some(n)) = (env("SLURM_ARRAY_TASK_ID"), env("SLURM_ARRAY_TASK_COUNT")) {
        (
            parse("SLURM_ARRAY_TASK_ID", &i)?,
            parse("SLURM_ARRAY_TASK_COUNT", &n)?,
        )
    } else if let Some(i) = env("JOB_COMPLETION_INDEX") {
        let n = workers.context(
            "JOB_COMPLETION_INDEX is set but the worker count is not: pass --workers N or set WINGFLOW_WORKERS",
        )?;
        (parse("JOB_COMPLETION_INDEX", &i)?, n)
    } else {
        return Ok(None);
    };
    if count == 0 || index >= count {
        bail!("worker {index}/{count}: need 0 <= I < N");
    }
    Ok(Some(WorkerSplit { index, count }))
}

fn run_worker(path: &std::path::Path, split: WorkerSplit) -> Result<()> {
    let config = Config::load(path)?;
    config.check_sources(path)?;
    let pipeline = dag::build(&config)?;
    let status = pipeline.status(HashPolicy::TrustStat)?;
    for stage in ["ingest", "align", "pca", "balance"] {
        if let Some(s) = status.get(stage).filter(|s| !s.is_fresh()) {
            let why: Vec<String> = s.reasons.iter().map(|r| r.to_string()).collect();
            bail!(
                "worker {}/{}: stage `{stage}` is stale ({}); run `wingflow run --until balance` once before starting the workers",
                split.index,
                split.count,
                why.join("; ")
            );
        }
    }
    let layout = dag::Layout::new(&config.output);
    let bar = progress::bar("render", 0);
    let report = dag::render_plan(&config, &layout, Some(split), &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    bar.finish_and_clear();
    println!(
        "worker {}/{}: {} shard(s) written, {} fresh, {} images decoded; run `wingflow index` once every worker is done",
        split.index,
        split.count,
        report.rendered.len(),
        report.fresh.len(),
        report.images_decoded
    );
    Ok(())
}

fn index(path: &std::path::Path) -> Result<()> {
    let config = Config::load(path)?;
    let _lock = manifests::RunLock::acquire(&config.output)?;
    if dag::Layout::new(&config.output)
        .existing_shard_sets()
        .is_empty()
    {
        bail!("no shard sets under {}/shards", config.output.display());
    }
    for (set, index) in render::index_all(&config.output, config.render.epochs)? {
        println!(
            "{}: {} shards, {} samples, digests verified",
            set.display(),
            index.shards.len(),
            index.total_samples
        );
    }
    Ok(())
}

fn gc(path: &std::path::Path) -> Result<()> {
    let config = Config::load(path)?;
    let _lock = manifests::RunLock::acquire(&config.output)?;
    let plan_path = dag::Layout::new(&config.output).plan();
    let plan = shapes::plan_table::read_plan_parquet(&plan_path)
        .with_context(|| "gc needs the current plan: run `wingflow run --until balance` first")?;
    let removed = render::gc(&config.output, &plan, config.render.epochs)?;
    for path in &removed {
        println!("removed {}", path.display());
    }
    println!(
        "gc: removed {} file(s) and folder(s) no longer in the plan or beyond {} augmentation epoch(s)",
        removed.len(),
        config.render.epochs
    );
    Ok(())
}

fn inspect(dir: &std::path::Path, sheet: Option<&std::path::Path>, max: usize) -> Result<()> {
    use render::ShardStatus;
    let report = render::inspect(dir)?;
    println!("{}", dir.display());
    if let Some(index) = &report.index {
        println!(
            "  scheme {}  crop {}×{}  split {}  config {}  written by {}",
            index.scheme,
            index.crop_size,
            index.crop_size,
            index.split,
            &index.config_digest[..index.config_digest.len().min(12)],
            index.wingflow_version
        );
    }
    let mut bad = 0;
    for shard in &report.shards {
        let status = match &shard.status {
            ShardStatus::Ok => "ok".to_owned(),
            ShardStatus::Missing => "MISSING".to_owned(),
            ShardStatus::DigestMismatch => "DIGEST MISMATCH".to_owned(),
            ShardStatus::Unreadable(why) => format!("UNREADABLE: {why}"),
        };
        if shard.status != ShardStatus::Ok {
            bad += 1;
        }
        println!(
            "  {:<24} {:>7} samples {:>12} bytes  {status}",
            shard.file, shard.samples, shard.bytes
        );
    }
    println!(
        "  total: {} shards, {} samples, {:.1} MiB",
        report.shards.len(),
        report.total_samples,
        report.total_bytes as f64 / (1u64 << 20) as f64
    );
    if let Some(png) = sheet {
        let png = std::path::absolute(png)?;
        let drawn = render::contact_sheet(dir, &png, max)?;
        println!("contact sheet of {drawn} samples: {}", png.display());
    }
    if bad > 0 {
        bail!("{bad} shard(s) failed their check; `wingflow run` re-renders them");
    }
    Ok(())
}

fn status(path: &std::path::Path, verify: bool) -> Result<()> {
    let config = Config::load(path)?;
    let pipeline = dag::build(&config)?;
    let report = pipeline.status(policy(verify))?;
    print!("{report}");
    Ok(())
}

fn parse_size(text: &str) -> Result<(u32, u32)> {
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let lo: u32 = lo
        .trim()
        .parse()
        .with_context(|| format!("--size {text}: not MIN-MAX"))?;
    let hi: u32 = hi
        .trim()
        .parse()
        .with_context(|| format!("--size {text}: not MIN-MAX"))?;
    if lo == 0 || hi < lo {
        bail!("--size {text}: need 0 < MIN <= MAX");
    }
    Ok((lo, hi))
}

fn synth(args: &SynthArgs) -> Result<()> {
    use synth::{SynthConfig, SynthFormat, generate, write_preview};
    let format = SynthFormat::parse(&args.format)?;
    let mut config = SynthConfig::new(format);
    config.count = args.count;
    config.seed = args.seed;
    if let Some(size) = &args.size {
        config.image_size = parse_size(size)?;
    }
    if let Some(yaw) = args.max_yaw {
        config.max_yaw_deg = yaw;
    }
    {
        use faces::formats::PixelOrigin;
        use faces::formats::coco::CocoField;
        config.coco = synth::CocoOptions {
            field: match args.coco_field.as_str() {
                "face" => CocoField::Face,
                _ => CocoField::Keypoints,
            },
            origin: match args.coco_origin.as_str() {
                "one-based" => PixelOrigin::OneBased,
                "continuous" => PixelOrigin::Continuous,
                _ => PixelOrigin::ZeroBased,
            },
            flags: synth::CocoFlags::parse(&args.coco_flags)?,
            faces_per_image: args.faces_per_image,
        };
    }
    let bar = progress::bar("synth", args.count as u64);
    let started = std::time::Instant::now();
    let summary = generate(&config, &args.out_dir, &|| bar.inc(1))?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let splits: Vec<String> = summary
        .per_split
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "wrote {} {} faces to {} in {:.1}s ({:.1} faces/s): {}",
        summary.faces,
        format.name(),
        args.out_dir.display(),
        seconds,
        summary.faces as f64 / seconds.max(1e-9),
        splits.join(" ")
    );
    if let Some(png) = &args.preview {
        let shown = write_preview(&args.out_dir, png, 16)?;
        println!("preview of {shown} faces: {}", png.display());
    }
    Ok(())
}

fn doctor() -> Result<()> {
    println!("wingflow {}", env!("CARGO_PKG_VERSION"));
    println!("rayon threads: {}", rayon::current_num_threads());
    println!(
        "available parallelism: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    trainer_bin::run_trainer(["doctor"])
}
