//! Finding and running `wingflow-train`, the libtorch half of wingflow.
//!
//! `wingflow` itself never links libtorch, so it starts instantly and users who train elsewhere
//! never need it; everything that trains or runs a model is delegated to the `wingflow-train`
//! binary that sits beside the `wingflow` executable.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use anyhow::{Context, Result, bail};
use contract::training::TrainRequest;

/// The path of `wingflow-train` beside the running `wingflow` executable
/// (or `$WINGFLOW_TRAIN_BIN` when set, e.g. on a cluster with a separate install).
pub fn trainer_path() -> Result<PathBuf> {
    if let Some(explicit) = std::env::var_os("WINGFLOW_TRAIN_BIN") {
        return Ok(PathBuf::from(explicit));
    }
    let exe = std::env::current_exe().context("cannot locate the running wingflow executable")?;
    let dir = exe
        .parent()
        .context("the wingflow executable has no parent folder")?;
    let candidate = dir.join(format!("wingflow-train{}", std::env::consts::EXE_SUFFIX));
    if !candidate.exists() {
        bail!(
            "`wingflow-train` was not found beside {} (build it with `make build`, or set \
             WINGFLOW_TRAIN_BIN to its path)",
            exe.display()
        );
    }
    Ok(candidate)
}

/// Write `request` as JSON to `file` and return the command that trains it:
/// `wingflow-train [--threads N] train --request FILE`.
pub fn train_command(request: &TrainRequest, file: &Path, threads: Option<u32>) -> Result<Command> {
    manifests::write_atomic(file, serde_json::to_string_pretty(request)?.as_bytes())?;
    let mut cmd = Command::new(trainer_path()?);
    if let Some(t) = threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    cmd.arg("train").arg("--request").arg(file);
    Ok(cmd)
}

/// Train `request` with `wingflow-train` on `threads` libtorch threads (None: its default),
/// inheriting stdio, and fail if it fails; the request is written to `file` first (for a
/// resumed run, `file` keeps the request it started with).
pub fn train(request: &TrainRequest, file: &Path, threads: Option<u32>) -> Result<()> {
    let mut cmd = train_command(request, file, threads)?;
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed ({status})", cmd.get_program());
    }
    Ok(())
}

/// Run `wingflow-train` with `args`, inheriting stdio, and fail if it fails.
pub fn run_trainer<I, S>(args: I) -> Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let path = trainer_path()?;
    let status: ExitStatus = Command::new(&path)
        .args(args)
        .status()
        .with_context(|| format!("cannot start {}", path.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", path.display());
    }
    Ok(())
}
