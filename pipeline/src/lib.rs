//! The stage DAG: declaration, staleness with reasons, incremental execution.
//!
//! A [`Pipeline`] is a set of [`Stage`]s, each a named closure with a code version, JSON
//! parameters, input paths and output paths. [`Pipeline::run`] executes the stale stages in
//! topological order and records a manifest per stage in `wingflow.lock`;
//! [`Pipeline::status`] says which stages are stale and exactly why, without running anything.
//!
//! Staleness is decided by content, like a build system with early cut-off: a stage is fresh when
//! its code version, parameters and input digests equal the recorded ones and its outputs still
//! have their recorded digests. A stage whose upstream re-ran but wrote byte-identical outputs
//! therefore stays fresh.
//!
//! Architecture invariants: this crate knows nothing of faces (or of any stage's meaning); it
//! holds no global state; no fingerprint depends on the clock.

mod error;
mod graph;
mod runner;
mod stage;
mod staleness;

pub use error::{Error, Result};
pub use manifests::HashPolicy;
pub use runner::{
    Event, Outcome, Pipeline, RunOptions, RunSummary, StageOutcome, StageStatus, StatusReport,
};
pub use stage::{BoxError, Stage, StageContext, StageReport};
pub use staleness::{InputChange, OutputChange, StaleReason};

#[cfg(test)]
mod tests;
