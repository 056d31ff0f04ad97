//! Faces in: the [`face::FaceRecord`] row type, the readers of every annotation format
//! ([`formats`]), [`ingest`] (sources, validation, the skip report) and `faces.parquet`
//! ([`faces_table`]).
//!
//! Every function is a plain function of (inputs, params) → outputs; nothing here knows about
//! the command line or the DAG.

pub mod face;
pub mod faces_table;
pub mod formats;
pub mod ingest;
