//! `wingflow.toml`: one file that declares the sources, the output root and every stage's
//! parameters. Relative paths are taken relative to the folder of the file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use stages::ingest::{IngestPolicy, SourceConfig};

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
         [ingest]\n{ingest}",
        output = output.display().to_string(),
    )
}
