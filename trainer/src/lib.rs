//! The wingflow trainer: CNN-6/CNN-7 landmark regressors in tch (libtorch), the Wing-loss
//! family, a memory-mapped shard loader, training with resumable checkpoints, and evaluation
//! (NME, CED, AUC, failure rate).
//!
//! Module map: [`shards`] reads shard sets and streams batches; [`model`] holds the networks
//! and their input/output contract; [`loss`] the losses; [`optim`] Adam/SGD and schedules;
//! [`train`] the loop; [`checkpoint`] checkpoints as whole generations and the checks of a
//! resume; [`eval`] the metrics; [`predict`] landmarks for a whole shard set; [`tensor_io`]
//! safetensors files with metadata; [`testing`] synthetic shard sets for tests. The crate never
//! links polars or the `stages` crate, so the `wingflow-train` binary stays small enough to ship
//! to a GPU host.

pub mod checkpoint;
pub mod error;
pub mod eval;
pub mod loss;
pub mod model;
pub mod optim;
pub mod predict;
pub mod shards;
pub mod tensor_io;
pub mod testing;
pub mod train;

pub use error::{Result, TrainerError};
