//! `wingflow`: the command-line front end. Parses arguments, draws progress, reads
//! `wingflow.toml`, and calls the stage libraries; training is delegated to `wingflow-train`.

mod trainer_bin;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Pose-balanced, augmented facial-landmark training shards, and the Wing-loss CNN-6/CNN-7
/// trainer.
#[derive(Parser, Debug)]
#[command(name = "wingflow", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check the installation: versions, libtorch, CUDA, threads, and one forward/backward pass
    /// of a small conv net through tch (run by `wingflow-train`).
    Doctor,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Doctor => doctor(),
    }
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
