//! `wingflow`: the command-line front end. Parses arguments, draws progress, reads
//! `wingflow.toml`, and calls the stage libraries; training is delegated to `wingflow-train`.

mod ced;
mod config;
mod dag;
mod experiment;
mod metrics;
mod progress;
mod trainer_bin;
mod two_stage;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use pipeline::{HashPolicy, RunOptions};

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
    /// or aflw.sqlite), with ground truth sidecars (poses.csv, synth-truth.jsonl).
    ///
    /// Faces come from a parametric 3D landmark model under a skewed pose distribution (mostly
    /// frontal, few large yaws), rendered with shading, clutter, occluders, blur and JPEG
    /// artefacts. Same seed → byte-identical files, whatever the thread count.
    Synth(SynthArgs),
    /// Locate the landmarks of faces in images with the trained networks: CNN-6 on the box's
    /// 64² crop, then (with --stage2) CNN-7 on the 128² rotation-normalised crop.
    Predict(two_stage::PredictArgs),
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
    /// On-disk format: 300w, aflw (HRNet CSV, 19 points) or aflw-sqlite (21 points).
    #[arg(long, default_value = "300w")]
    format: String,
    /// Number of faces (one per image). For 300w the folders keep 300W's proportions
    /// (3148 train : 554 common : 135 challenging).
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Init {
            source_dir,
            config,
            output,
            force,
        } => init(&source_dir, &config, &output, force),
        Command::Run {
            config,
            until,
            force,
            verify,
        } => run(&config.config, until, force, verify),
        Command::Status { config, verify } => status(&config.config, verify),
        Command::Synth(args) => synth(&args),
        Command::Predict(args) => two_stage::predict_command(&args),
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
    let text = config::init_text(source_dir, output);
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
    use stages::synth::{SynthConfig, SynthFormat, generate, write_preview};
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
