//! `wingflow.toml`: one file that declares the sources, the output root and every stage's
//! parameters. Relative paths are taken relative to the folder of the file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use stages::align::AlignParams;
use stages::balance::{BalanceParams, HistogramOf};
use stages::ingest::{IngestPolicy, SourceConfig};
use stages::pca::{PcaParams, PoseComponent};
use stages::render::RenderParams;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Output root (faces.parquet, plan.parquet, shards/, plots/, wingflow.lock, …).
    #[serde(default = "default_output")]
    pub output: PathBuf,
    /// The run seed: every random choice of every stage derives from it.
    #[serde(default)]
    pub seed: u64,
    /// The annotation sources (`[[sources]]` tables).
    pub sources: Vec<SourceConfig>,
    /// Ingest policy (`[ingest]`).
    #[serde(default)]
    pub ingest: IngestPolicy,
    /// Generalised Procrustes alignment (`[align]`).
    #[serde(default)]
    pub align: AlignSection,
    /// PCA and the pose component (`[pca]`).
    #[serde(default)]
    pub pca: PcaSection,
    /// Validation split, pose histogram, replication, shard sizes (`[balance]`).
    #[serde(default)]
    pub balance: BalanceSection,
    /// Crops and augmentation (`[render]`, `[render.augment]`).
    #[serde(default)]
    pub render: RenderParams,
}

/// `[align]`: Generalised Procrustes Analysis of the training shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlignSection {
    /// Stop when the unit-norm mean shape moves less than this between iterations.
    pub tolerance: f64,
    /// Stop after this many iterations even if the mean still moves.
    pub max_iterations: usize,
}

impl Default for AlignSection {
    fn default() -> Self {
        let p = AlignParams::default();
        AlignSection { tolerance: p.tolerance, max_iterations: p.max_iterations }
    }
}

impl AlignSection {
    /// The library parameters.
    pub fn params(&self) -> AlignParams {
        AlignParams { tolerance: self.tolerance, max_iterations: self.max_iterations }
    }
}

/// `pose_component = "auto"` or a 1-based component number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PoseChoice {
    /// `"auto"`.
    Named(String),
    /// A 1-based component number (PC1 = 1).
    Index(usize),
}

/// `[pca]`: PCA of the aligned shapes and the choice of the pose component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PcaSection {
    /// Components to compute.
    pub components: usize,
    /// `"auto"` (the leading component whose eigenvector is most anti-symmetric under the
    /// scheme's mirror, weighted by its variance) or a 1-based component number.
    pub pose_component: PoseChoice,
    /// How many leading components `"auto"` considers.
    pub auto_candidates: usize,
}

impl Default for PcaSection {
    fn default() -> Self {
        let p = PcaParams::default();
        PcaSection {
            components: p.components,
            pose_component: PoseChoice::Named("auto".into()),
            auto_candidates: p.auto_candidates,
        }
    }
}

impl PcaSection {
    /// The library parameters, or an error naming the bad value.
    pub fn params(&self) -> Result<PcaParams> {
        let pose_component = match &self.pose_component {
            PoseChoice::Named(name) if name == "auto" => PoseComponent::Auto,
            PoseChoice::Index(n) if *n >= 1 => PoseComponent::Index(*n),
            other => bail!("[pca] pose_component = {other:?}: expected \"auto\" or a number >= 1"),
        };
        Ok(PcaParams { components: self.components, pose_component, auto_candidates: self.auto_candidates })
    }
}

/// `[balance]`: validation carve-out, pose histogram and replication (PDB), shard sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceSection {
    /// Fraction of `train` moved to `val` (by a hash of the sample id: stable across runs).
    pub val_fraction: f64,
    /// Number of pose-histogram bins K (the paper's example: 9).
    pub bins: usize,
    /// `"absolute"` (histogram of |coefficient|, as in the paper) or `"signed"`.
    pub histogram: HistogramOf,
    /// Cap on the rows per training sample (replica 0 included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replication: Option<u32>,
    /// Cap on the total training rows; duplicates are scaled down to meet it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_train_rows: Option<u64>,
    /// Target shard size in bytes; fixes each shard set's shard count.
    pub target_shard_bytes: u64,
}

impl Default for BalanceSection {
    fn default() -> Self {
        let p = BalanceParams::default();
        BalanceSection {
            val_fraction: p.val_fraction,
            bins: p.bins,
            histogram: p.histogram,
            max_replication: p.max_replication,
            max_train_rows: p.max_train_rows,
            target_shard_bytes: p.target_shard_bytes,
        }
    }
}

impl BalanceSection {
    /// The library parameters for `num_points` landmarks, the run seed and the crop sizes.
    pub fn params(&self, num_points: usize, seed: u64, render: &RenderParams) -> BalanceParams {
        BalanceParams {
            val_fraction: self.val_fraction,
            bins: self.bins,
            histogram: self.histogram,
            max_replication: self.max_replication,
            max_train_rows: self.max_train_rows,
            seed,
            target_shard_bytes: self.target_shard_bytes,
            num_points,
            crop_stage1: render.stage1_size,
            crop_stage2: render.stage2_size,
        }
    }
}

fn default_output() -> PathBuf {
    PathBuf::from("wingflow-out")
}

impl Config {
    /// Read and check `path`, resolving relative paths against its folder.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        let mut config: Config = toml::from_str(&text)
            .with_context(|| format!("{}: invalid configuration", path.display()))?;
        // Absolute, so that no later step resolves them against another folder.
        let base = std::path::absolute(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .with_context(|| format!("cannot resolve the folder of {}", path.display()))?;
        let base = base.as_path();
        config.output = base.join(&config.output);
        config.sources = config.sources.iter().map(|s| s.resolved(base)).collect();
        config.pca.params().with_context(|| format!("{}", path.display()))?;
        config
            .render
            .validate()
            .with_context(|| format!("{}: [render]", path.display()))?;
        if config.sources.is_empty() {
            bail!(
                "{}: no [[sources]] declared (run `wingflow init DIR` to write some)",
                path.display()
            );
        }
        Ok(config)
    }
}

/// The text of a new, commented `wingflow.toml` for the sources found in `source_dir`.
pub fn init_text(source_dir: &Path, output: &Path) -> String {
    let sources = stages::ingest::init_toml(source_dir);
    let ingest = toml::to_string(&IngestPolicy::default()).unwrap_or_default();
    let section = |value: Result<String, toml::ser::Error>| value.unwrap_or_default();
    let align = section(toml::to_string(&AlignSection::default()));
    let pca = section(toml::to_string(&PcaSection::default()));
    let balance = section(toml::to_string(&BalanceSection::default()));
    let render = section(toml::to_string(&RenderParams::default()));
    format!(
        "# wingflow configuration, written by `wingflow init`.\n\
         # Relative paths are taken relative to the folder of this file.\n\n\
         # Output root: faces.parquet, plan.parquet, shards/, plots/, wingflow.lock.\n\
         output = {output:?}\n\
         # The run seed: every random choice of every stage derives from it.\n\
         seed = 0\n\n\
         {sources}\n\
         # What ingest does with an invalid record: \"fail\" (stop, naming file and line) or\n\
         # \"skip\" (leave it out and list it in ingest-report.json).\n\
         [ingest]\n{ingest}\n\
         # Generalised Procrustes alignment of the training shapes.\n\
         [align]\n{align}\n\
         # PCA of the aligned shapes; pose_component = \"auto\" or a 1-based number (PC1 = 1).\n\
         [pca]\n{pca}\n\
         # Pose-based data balancing: val carve-out, histogram of the pose coefficient\n\
         # (histogram = \"absolute\" | \"signed\"), optional caps max_replication and\n\
         # max_train_rows, and the target shard size in bytes.\n\
         [balance]\n{balance}\n\
         # Crops (stage 1 and 2), box rule, border, and augmentation ranges. Replica 0 of each\n\
         # sample is the unperturbed crop; duplicates draw from these ranges.\n\
         [render]\n{render}",
        output = output.display().to_string(),
    )
}
