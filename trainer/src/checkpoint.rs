//! Checkpoints as whole generations, a pointer that commits them, and the checks a resume makes.
//!
//! A checkpoint is a folder under `checkpoints/` in the run's output folder (names in
//! [`contract::layout::training_run`]):
//! - `last-<step>/` (step zero-padded to 9 digits): `last.safetensors` (weights, metadata
//!   `step`), `last.optim.safetensors` (optimiser moments, metadata `steps`), `last.json`
//!   (the [`CheckpointRecord`]);
//! - `best-<step>/`: `best.safetensors` (metadata `step`) and `best.json`.
//!
//! Each is written under a temporary name (`.<name>.tmp-<pid>-<n>`, every file fsynced),
//! renamed into place, and then the pointer `checkpoint.json` ([`Pointer`]), written atomically,
//! names it: the pointer is the commit point. A generation the pointer does not name is not
//! part of the run (a writer killed after the rename leaves one; the next commit prunes it or
//! swaps it out). The trainer keeps the previous `last` generation until the next one is
//! committed, and a fallback after it, so a whole one is always there.
//!
//! [`load_last`] and [`check_best`] are the checks a resume makes: every part present, whole,
//! and at one step (the folder's name, the weights' `step`, the optimiser's `steps` — one
//! optimiser update per training step, so it equals the trainer's step — and the record's
//! `step`). What fails them is [`Torn`], said aloud by the resume that falls back.

use std::path::{Path, PathBuf};

use contract::layout::training_run::{CHECKPOINT_POINTER, CHECKPOINTS_DIR};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::{Result, TrainerError, io_err};
use crate::model::LandmarkNet;
use crate::optim::Optimizer;
use crate::tensor_io::{load_tensors, read_metadata};
use crate::train::{CheckpointRecord, checkpoint_paths};

/// The two checkpoints of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The latest state: weights, optimiser moments, record (what a resume continues).
    Last,
    /// The weights with the lowest validation NME so far, and their record.
    Best,
}

impl Slot {
    /// The stem of the slot's files and the prefix of its generations: `last`, `best`.
    pub fn stem(self) -> &'static str {
        match self {
            Self::Last => "last",
            Self::Best => "best",
        }
    }
}

/// The folder name of the generation of `slot` written at `step`: `last-000000020`.
pub fn generation_name(slot: Slot, step: u64) -> String {
    format!("{}-{step:09}", slot.stem())
}

/// The slot and step a generation's folder name stands for (`best-000000003` → best, 3).
pub fn parse_generation_name(name: &str) -> Option<(Slot, u64)> {
    let (stem, step) = name.split_once('-')?;
    let slot = [Slot::Last, Slot::Best]
        .into_iter()
        .find(|s| s.stem() == stem)?;
    (step.len() >= 9 && step.bytes().all(|b| b.is_ascii_digit()))
        .then(|| step.parse().ok())
        .flatten()
        .map(|step| (slot, step))
}

/// The pointer file's contents: the committed generations of each slot (None: none yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pointer {
    /// The current `last` generation.
    pub last: Option<String>,
    /// The current `best` generation.
    pub best: Option<String>,
}

/// The pointer file of the run in `out_dir`.
pub fn pointer_path(out_dir: &Path) -> PathBuf {
    out_dir.join(CHECKPOINT_POINTER)
}

/// The folder of the run's generations.
pub fn checkpoints_dir(out_dir: &Path) -> PathBuf {
    out_dir.join(CHECKPOINTS_DIR)
}

/// The folder of generation `name`.
pub fn generation_dir(out_dir: &Path, name: &str) -> PathBuf {
    checkpoints_dir(out_dir).join(name)
}

/// Read the pointer: None when the run has committed nothing (no pointer file).
pub fn read_pointer(out_dir: &Path) -> Result<Option<Pointer>> {
    let path = pointer_path(out_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| TrainerError::Json { path, source })
}

/// The generations of `slot` in `out_dir`'s `checkpoints/`, newest first, whole or not.
pub fn generations(out_dir: &Path, slot: Slot) -> Result<Vec<(u64, String)>> {
    let mut found: Vec<(u64, String)> = list_generations(out_dir)?
        .into_iter()
        .filter_map(|name| match parse_generation_name(&name) {
            Some((s, step)) if s == slot => Some((step, name)),
            _ => None,
        })
        .collect();
    found.sort_by(|a, b| b.cmp(a));
    Ok(found)
}

/// Every generation folder name in `checkpoints/` (either slot), sorted by name; other entries
/// (temporary folders, anything a user put there) are left out.
pub fn list_generations(out_dir: &Path) -> Result<Vec<String>> {
    let dir = checkpoints_dir(out_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry.map_err(io_err(&dir))?.file_name();
        let name = name.to_string_lossy();
        if parse_generation_name(&name).is_some() {
            names.push(name.into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Why a generation cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum Torn {
    /// A part is not there.
    #[error("{part} missing")]
    Missing {
        /// Which part (`weights`, `optimiser state`, `record`, …).
        part: &'static str,
    },
    /// A part is there but does not read (truncated, malformed, wrong shapes).
    #[error("{part} unreadable: {source}")]
    Unreadable {
        /// Which part.
        part: &'static str,
        /// What reading it said.
        source: Box<TrainerError>,
    },
    /// The parts were written at different steps: each part and its step, the record last.
    #[error("{}", steps_text(.steps))]
    Steps {
        /// The parts that disagree with the record, then the record.
        steps: Vec<(&'static str, u64)>,
    },
}

/// `weights at step 20, record at step 10`.
fn steps_text(steps: &[(&'static str, u64)]) -> String {
    let parts: Vec<String> = steps
        .iter()
        .map(|(part, step)| format!("{part} at step {step}"))
        .collect();
    parts.join(", ")
}

/// A `last` generation read whole and checked: what a resume continues from.
#[derive(Debug)]
pub struct LastGeneration {
    /// Its folder name.
    pub name: String,
    /// Its record.
    pub record: CheckpointRecord,
    /// The network with its weights.
    pub net: LandmarkNet,
    /// The optimiser bound to `net`'s parameters, with its moments and step count restored.
    pub optimizer: Optimizer,
}

/// Read the `last` generation `name` of the run in `out_dir` onto `device` and check it: every
/// part present and readable, and all at one step.
pub fn load_last(
    out_dir: &Path,
    name: &str,
    device: Device,
) -> std::result::Result<LastGeneration, Torn> {
    let dir = generation_dir(out_dir, name);
    let (weights, optim, json) = checkpoint_paths(&dir, Slot::Last.stem());
    present(&weights, "weights")?;
    present(&optim, "optimiser state")?;
    let record = read_part_record(&json)?;
    let weights_step = metadata_step(&weights, "weights", "step")?;
    let unreadable = |part: &'static str| {
        move |e: TrainerError| Torn::Unreadable {
            part,
            source: Box::new(e),
        }
    };
    let state = load_tensors(&optim, device).map_err(unreadable("optimiser state"))?;
    let optim_steps = step_value(state.metadata.get("steps"), "optimiser state", "steps")?;
    agree(
        name,
        &[("weights", weights_step), ("optimiser", optim_steps)],
        record.step,
    )?;
    let net = LandmarkNet::load(&weights, device).map_err(unreadable("weights"))?;
    let mut optimizer = Optimizer::new(record.config.optimizer, net.parameters());
    optimizer
        .load_state(&state.tensors, optim_steps)
        .map_err(unreadable("optimiser state"))?;
    Ok(LastGeneration {
        name: name.to_owned(),
        record,
        net,
        optimizer,
    })
}

/// Check the `best` generation `name` of the run in `out_dir`: weights (whole) and record
/// present, at one step, the record holding the validation NME. Returns the record.
pub fn check_best(out_dir: &Path, name: &str) -> std::result::Result<CheckpointRecord, Torn> {
    let dir = generation_dir(out_dir, name);
    let (weights, _, json) = checkpoint_paths(&dir, Slot::Best.stem());
    present(&weights, "weights")?;
    let record = read_part_record(&json)?;
    let weights_step = metadata_step(&weights, "weights", "step")?;
    agree(name, &[("weights", weights_step)], record.step)?;
    if record.val_nme_percent.is_none() {
        return Err(Torn::Missing {
            part: "the record's validation NME",
        });
    }
    Ok(record)
}

fn present(path: &Path, part: &'static str) -> std::result::Result<(), Torn> {
    if path.is_file() {
        Ok(())
    } else {
        Err(Torn::Missing { part })
    }
}

fn read_part_record(path: &Path) -> std::result::Result<CheckpointRecord, Torn> {
    present(path, "record")?;
    let text = std::fs::read(path).map_err(|e| Torn::Unreadable {
        part: "record",
        source: Box::new(io_err(path)(e)),
    })?;
    serde_json::from_slice(&text).map_err(|source| Torn::Unreadable {
        part: "record",
        source: Box::new(TrainerError::Json {
            path: path.to_owned(),
            source,
        }),
    })
}

/// The step in the metadata `key` of a safetensors file, which must be whole.
fn metadata_step(path: &Path, part: &'static str, key: &str) -> std::result::Result<u64, Torn> {
    let metadata = read_metadata(path).map_err(|e| Torn::Unreadable {
        part,
        source: Box::new(e),
    })?;
    step_value(metadata.get(key), part, key)
}

fn step_value(
    value: Option<&String>,
    part: &'static str,
    key: &str,
) -> std::result::Result<u64, Torn> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Torn::Unreadable {
            part,
            source: Box::new(TrainerError::Config(format!(
                "metadata lacks a numeric `{key}`"
            ))),
        })
}

/// Every part's step equals the record's, and so does the folder name's.
fn agree(name: &str, parts: &[(&'static str, u64)], record: u64) -> std::result::Result<(), Torn> {
    let mut steps: Vec<(&'static str, u64)> = parts
        .iter()
        .copied()
        .filter(|&(_, step)| step != record)
        .collect();
    if steps.is_empty() {
        match parse_generation_name(name) {
            Some((_, named)) if named != record => steps.push(("folder name", named)),
            _ => return Ok(()),
        }
    }
    steps.push(("record", record));
    Err(Torn::Steps { steps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names_round_trip_and_sort_by_step() {
        assert_eq!(generation_name(Slot::Last, 20), "last-000000020");
        assert_eq!(
            parse_generation_name("best-000000003"),
            Some((Slot::Best, 3))
        );
        assert_eq!(
            parse_generation_name(&generation_name(Slot::Last, 12_345_678_901)),
            Some((Slot::Last, 12_345_678_901))
        );
        for bad in [
            "last-20",
            "last",
            "worst-000000001",
            ".last-000000020.tmp-1-0",
            "last-00000002x",
        ] {
            assert_eq!(parse_generation_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn steps_that_disagree_are_named_with_the_record_last() {
        let torn = agree("last-000000020", &[("weights", 20), ("optimiser", 10)], 10).unwrap_err();
        assert_eq!(torn.to_string(), "weights at step 20, record at step 10");
        let torn = agree("last-000000020", &[("weights", 20), ("optimiser", 20)], 10).unwrap_err();
        assert_eq!(
            torn.to_string(),
            "weights at step 20, optimiser at step 20, record at step 10"
        );
        let torn = agree("last-000000020", &[("weights", 10), ("optimiser", 10)], 10).unwrap_err();
        assert_eq!(
            torn.to_string(),
            "folder name at step 20, record at step 10"
        );
        assert!(agree("best-000000003", &[("weights", 3)], 3).is_ok());
    }
}
