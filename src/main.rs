//! `wingflow`: the command-line front end. Parses arguments, draws progress, reads
//! `wingflow.toml`, and calls the stage libraries; training is delegated to `wingflow-train`.

mod config;
mod dag;
mod progress;
mod trainer_bin;

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
    /// Check the installation: versions, libtorch, CUDA, threads, and one forward/backward pass
    /// of a small conv net through tch (run by `wingflow-train`).
    Doctor,
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

fn doctor() -> Result<()> {
    println!("wingflow {}", env!("CARGO_PKG_VERSION"));
    println!("rayon threads: {}", rayon::current_num_threads());
    println!(
        "available parallelism: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    trainer_bin::run_trainer(["doctor"])
}
