//! Declares wingflow's stages to the generic DAG (`pipeline` crate): which files each stage
//! reads and writes, its parameters and code version, and the closure that does the work by
//! calling the `stages` library.
//!
//! Output layout under the output root:
//! `faces.parquet`, `ingest-report.json` (ingest) · … · `shards/stage{1,2}/<split>/` (render).

use std::path::{Path, PathBuf};

use anyhow::Result;
use pipeline::{BoxError, Pipeline, Stage, StageReport};
use serde_json::json;
use stages::faces_table::write_faces_parquet;
use stages::ingest::{ingest, source_input_paths};

use crate::config::Config;

/// Bump a stage's code version whenever its code would write different outputs for the same
/// inputs and parameters: the DAG then re-runs it (and says so).
mod code_version {
    pub const INGEST: &str = "1";
}

/// Where each stage's outputs live under the output root.
pub struct Layout {
    /// The output root.
    pub root: PathBuf,
}

impl Layout {
    /// The layout of `root`.
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_owned(),
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
}

/// The whole pipeline for `config`.
pub fn build(config: &Config) -> Result<Pipeline<'_>> {
    let layout = Layout::new(&config.output);
    let mut pipeline = Pipeline::new(&config.output);
    pipeline.add(ingest_stage(config, &layout));
    Ok(pipeline)
}

fn ingest_stage<'a>(config: &'a Config, layout: &Layout) -> Stage<'a> {
    let faces_path = layout.faces();
    let report_path = layout.ingest_report();
    let params = json!({ "sources": config.sources, "policy": config.ingest });
    Stage::new("ingest", code_version::INGEST, move |ctx| {
        let output = ingest(&config.sources, &config.ingest)?;
        ctx.progress(output.faces.len() as u64, output.faces.len() as u64);
        write_faces_parquet(&faces_path, &output.faces)?;
        output.report.write_json(&report_path)?;
        if !output.report.skipped.is_empty() {
            eprintln!(
                "    ingest: skipped {} invalid record(s); reasons in {}",
                output.report.skipped.len(),
                report_path.display()
            );
        }
        let mut report = StageReport::new().rows("faces", output.faces.len() as u64);
        for (split, n) in &output.report.splits {
            report = report.rows(format!("faces.{split}"), *n as u64);
        }
        Ok::<_, BoxError>(report)
    })
    .params(params)
    .inputs(source_input_paths(&config.sources))
    .output(layout.faces())
    .output(layout.ingest_report())
}
