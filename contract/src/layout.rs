//! The output folder's layout: where every stage's outputs live under the output root. Every
//! caller (the DAG, render and `gc`, evaluation, `predict`, the loss study, the CLI's
//! `index`/`gc`/`inspect`) asks here instead of spelling the paths itself.
//!
//! ```text
//! <root>/faces.parquet, ingest-report.json        ingest
//! <root>/shapes/aligned.safetensors, pca.json     align, pca
//! <root>/plan.parquet, balance.json               balance
//! <root>/plots/*.png                              plots
//! <root>/shards/stage{1,2}/<split>/               render (crop levels 1 and 2)
//! <root>/shards/stage{1,2}/train/augmentation-epoch-EEE/   render (augmentation epochs ≥ 1)
//! <root>/models/stage{1,2}/                       train1, train2 (see [`training_run`])
//! <root>/reports/                                 evaluate
//! <root>/models/<run>/stage{1,2}/, reports/<run>/ the same for a named training run
//! ```
//!
//! A named training run (`[train] run`) trains and evaluates on the same shards as every other
//! run of the root; only its models and reports live apart.

use std::path::{Path, PathBuf};

/// The crop levels: 1 (the face box, CNN-6) and 2 (the box of CNN-6's landmarks, CNN-7).
pub const LEVELS: [u8; 2] = [1, 2];

/// The folder name of a crop level's shard sets and model (`stage1`, `stage2`): user-facing
/// and kept as it has always been.
pub fn level_dir_name(level: u8) -> String {
    format!("stage{level}")
}

/// Where each stage's outputs live under an output root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The output root.
    pub root: PathBuf,
    /// The named training run whose models and reports this layout locates (None: the
    /// root's unnamed run, `models/stageN` and `reports/`).
    pub run: Option<String>,
}

impl Layout {
    /// The layout of `root` (its unnamed training run).
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_owned(),
            run: None,
        }
    }

    /// The same root, locating the models and reports of training run `run`.
    pub fn for_run(self, run: Option<&str>) -> Layout {
        Layout {
            run: run.map(str::to_owned),
            ..self
        }
    }

    /// `dir`, or `dir/<run>` for a named run.
    fn run_dir(&self, dir: &str) -> PathBuf {
        let dir = self.root.join(dir);
        match &self.run {
            Some(run) => dir.join(run),
            None => dir,
        }
    }

    /// One row per annotated face.
    pub fn faces(&self) -> PathBuf {
        self.root.join("faces.parquet")
    }

    /// What ingest read and skipped.
    pub fn ingest_report(&self) -> PathBuf {
        self.root.join("ingest-report.json")
    }

    /// Procrustes-aligned training shapes and the mean shape.
    pub fn aligned(&self) -> PathBuf {
        self.root.join("shapes").join("aligned.safetensors")
    }

    /// The shape model and every face's pose coefficient.
    pub fn pca(&self) -> PathBuf {
        self.root.join("shapes").join("pca.json")
    }

    /// The replication plan.
    pub fn plan(&self) -> PathBuf {
        self.root.join("plan.parquet")
    }

    /// Histogram, replication and shard counts of the plan.
    pub fn balance_summary(&self) -> PathBuf {
        self.root.join("balance.json")
    }

    /// The plots folder.
    pub fn plots(&self) -> PathBuf {
        self.root.join("plots")
    }

    /// Every shard set (`stage1/<split>`, `stage2/<split>`).
    pub fn shards(&self) -> PathBuf {
        self.root.join("shards")
    }

    /// The shard sets of one crop level (1: 64², 2: 128²).
    pub fn level_shards(&self, level: u8) -> PathBuf {
        self.shards().join(level_dir_name(level))
    }

    /// One shard set: a crop level's split.
    pub fn shard_set(&self, level: u8, split: &str) -> PathBuf {
        self.level_shards(level).join(split)
    }

    /// One augmentation epoch of a shard set: epoch 0 is the set's own folder (as it has always
    /// been), epoch e ≥ 1 the sub-folder `augmentation-epoch-EEE` of it. Each is a complete
    /// shard set (shards, sidecars, `index.json`, `samples.parquet`).
    pub fn shard_set_epoch(&self, level: u8, split: &str, epoch: u32) -> PathBuf {
        epoch_dir(&self.shard_set(level, split), epoch)
    }

    /// Every shard set folder that exists, level by level, splits sorted by name.
    pub fn existing_shard_sets(&self) -> Vec<PathBuf> {
        let mut sets = Vec::new();
        for level in LEVELS {
            if let Ok(entries) = std::fs::read_dir(self.level_shards(level)) {
                let mut dirs: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect();
                dirs.sort();
                sets.extend(dirs);
            }
        }
        sets
    }

    /// The training run of one crop level's network (checkpoints, log, loss curve).
    pub fn model(&self, level: u8) -> PathBuf {
        self.run_dir("models").join(level_dir_name(level))
    }

    /// Evaluation reports.
    pub fn reports(&self) -> PathBuf {
        self.run_dir("reports")
    }
}

/// The folder of augmentation epoch `epoch` of the shard set in `set` (see
/// [`Layout::shard_set_epoch`]).
pub fn epoch_dir(set: &Path, epoch: u32) -> PathBuf {
    if epoch == 0 {
        set.to_owned()
    } else {
        set.join(epoch_dir_name(epoch))
    }
}

/// The sub-folder name of augmentation epoch `epoch` ≥ 1: `augmentation-epoch-001`.
pub fn epoch_dir_name(epoch: u32) -> String {
    format!("{EPOCH_DIR_PREFIX}{epoch:03}")
}

/// The augmentation epoch a sub-folder name stands for (`augmentation-epoch-007` → 7).
pub fn parse_epoch_dir_name(name: &str) -> Option<u32> {
    name.strip_prefix(EPOCH_DIR_PREFIX)?
        .parse()
        .ok()
        .filter(|&e| e >= 1)
}

const EPOCH_DIR_PREFIX: &str = "augmentation-epoch-";

/// The files of a training run's folder (`models/stageN/`, and the work folder beside it that
/// the CLI trains in and resumes) that the CLI and `wingflow-train` both name.
///
/// A run's checkpoints are whole generations, folders in `checkpoints/` (`last-<step>/`:
/// weights, optimiser state and record; `best-<step>/`: weights and record), each written under
/// a temporary name and renamed in; the pointer file `checkpoint.json` names the current ones
/// and is the commit point. `last.safetensors`/`last.json` and `best.safetensors`/`best.json`
/// in the run's folder are exports of the current generations, for users and the CLI; resuming
/// reads the pointer and the generations only.
pub mod training_run {
    /// The pointer (JSON) naming the run's current `last` and `best` generations, written
    /// atomically after each generation: a folder holds a resumable run when it exists.
    pub const CHECKPOINT_POINTER: &str = "checkpoint.json";
    /// The folder of the run's checkpoint generations.
    pub const CHECKPOINTS_DIR: &str = "checkpoints";
}

/// The files of one shard set folder.
pub mod shard_set {
    /// The set's index (`shards::ShardIndex`).
    pub const INDEX: &str = "index.json";
    /// Every sample's row, in shard order.
    pub const SAMPLES: &str = "samples.parquet";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_paths() {
        let l = Layout::new(Path::new("/out"));
        assert_eq!(l.faces(), Path::new("/out/faces.parquet"));
        assert_eq!(l.aligned(), Path::new("/out/shapes/aligned.safetensors"));
        assert_eq!(l.shard_set(2, "val"), Path::new("/out/shards/stage2/val"));
        assert_eq!(l.model(1), Path::new("/out/models/stage1"));
        let run = l.clone().for_run(Some("wing-s1"));
        assert_eq!(run.model(2), Path::new("/out/models/wing-s1/stage2"));
        assert_eq!(run.reports(), Path::new("/out/reports/wing-s1"));
        assert_eq!(run.plan(), l.plan(), "runs share the data");
        assert_eq!(l.shard_set_epoch(1, "train", 0), l.shard_set(1, "train"));
        assert_eq!(
            l.shard_set_epoch(1, "train", 12),
            Path::new("/out/shards/stage1/train/augmentation-epoch-012")
        );
        assert_eq!(parse_epoch_dir_name("augmentation-epoch-012"), Some(12));
        assert_eq!(parse_epoch_dir_name("augmentation-epoch-000"), None);
        assert_eq!(parse_epoch_dir_name("epoch-1"), None);
        assert_eq!(
            l.model(1).join(training_run::CHECKPOINT_POINTER),
            Path::new("/out/models/stage1/checkpoint.json")
        );
    }
}
