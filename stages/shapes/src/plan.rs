//! The replication plan: the balance stage's output and the render stage's input
//! (`plan.parquet`, one row per output sample).

use serde::{Deserialize, Serialize};

/// One output sample of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRow {
    /// The source face's `sample_id` (row of `faces.parquet`).
    pub sample_id: String,
    /// Split after the validation carve-out (`train`, `val`, `common`, …).
    pub split: String,
    /// 0 for the original; 1.. for augmented duplicates (train only).
    pub replica: u32,
    /// Pose-histogram bin of the sample (train only; `None` for other splits).
    pub bin: Option<u32>,
    /// Signed pose coefficient (projection on the pose component); `None` if not computed.
    pub pose_coefficient: Option<f32>,
    /// 64-bit augmentation seed derived from (run seed, sample id, replica).
    pub seed: u64,
    /// Shard id within the (stage-1 crop, split) shard set: hash(sample id) mod count.
    pub shard_stage1: u32,
    /// Shard id within the (stage-2 crop, split) shard set: hash(sample id) mod count.
    pub shard_stage2: u32,
}

/// The number of shards of each (crop stage, split) shard set, fixed by the balance stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardCounts {
    /// (split, shard count) for the stage-1 crops.
    pub stage1: Vec<(String, u32)>,
    /// (split, shard count) for the stage-2 crops.
    pub stage2: Vec<(String, u32)>,
}
