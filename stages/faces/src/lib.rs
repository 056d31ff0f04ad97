//! Faces in: the [`face::FaceRecord`] row type, the readers of every annotation format
//! ([`formats`]), [`ingest`] (sources, validation, the skip report) and `faces.parquet`
//! ([`faces_table`]). Input is echoed in messages and reports only as a bounded [`excerpt`]
//! (non-UTF-8 names escaped, [`escaped_path`]).
//!
//! Every function is a plain function of (inputs, params) → outputs; nothing here knows about
//! the command line or the DAG.

mod echo;
pub mod face;
pub mod faces_table;
pub mod formats;
pub mod ingest;

pub use echo::{MESSAGE_EXCERPT, VALUE_EXCERPT, escaped_path, excerpt};
