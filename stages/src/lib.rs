//! The face-specific stages of wingflow: landmark schemes, readers of the annotation formats,
//! the synthetic dataset generator, shape alignment, PCA, pose balancing, rendering, reports.
//!
//! Every stage is a plain function of (inputs, params) → outputs; nothing here knows about the
//! command line or the DAG.

pub mod align;
pub mod balance;
pub mod face;
pub mod faces_table;
pub mod formats;
pub mod ingest;
pub mod pca;
pub mod plan;
pub mod plan_table;
pub mod render;
pub mod report;
pub mod scheme;
pub mod shape_store;
pub mod synth;
