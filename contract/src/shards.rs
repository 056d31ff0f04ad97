//! The contract between the shard writer (`render`) and its readers (`wingflow-train`,
//! `python/wingflow_shards.py`): the format version, the tensor names of a shard file, and the
//! per-set `index.json`. One definition, so the writer and the Rust reader cannot drift apart;
//! a crate of its own so the trainer can use it without linking the data stages (polars).
//!
//! A shard is a safetensors file holding, for its N samples (crop side S, L landmarks):
//! `images` u8 [N,S,S,3] (RGB), `landmarks` f32 [N,L,2] (crop pixels; NaN where a point has no
//! coordinates), `visible` u8 [N,L], `in_crop` u8 [N,L], `sample_index` i64 [N], and, only in
//! a shard where some sample has a point its source marks as labelled but occluded, `occluded`
//! u8 [N,L] (after `visible` in the file). A shard without the tensor has no occluded point
//! (read it as all zeros), and its bytes are the ones format version 1 had before the tensor
//! existed.

use serde::{Deserialize, Serialize};

/// Version of the shard layout (tensor names, dtypes, metadata keys, index fields), written as
/// `format_version` in `index.json` and in each shard's `__metadata__`.
pub const FORMAT_VERSION: u32 = 1;

/// Tensor names inside a shard file.
pub mod tensor {
    /// u8 [N,S,S,3], RGB crops.
    pub const IMAGES: &str = "images";
    /// f32 [N,L,2], landmark coordinates in crop pixels.
    pub const LANDMARKS: &str = "landmarks";
    /// u8 [N,L], 1 where the point has coordinates the loss and the NME trust (an annotated
    /// point the source marks occluded is visible).
    pub const VISIBLE: &str = "visible";
    /// u8 [N,L], 1 where the source marks the point as labelled but occluded; present only in
    /// shards with at least one such point.
    pub const OCCLUDED: &str = "occluded";
    /// u8 [N,L], 1 where the point lies inside the crop.
    pub const IN_CROP: &str = "in_crop";
    /// i64 [N], the sample's row in the set's `samples.parquet`.
    pub const SAMPLE_INDEX: &str = "sample_index";
}

/// The per-set `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardIndex {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Landmark scheme name, e.g. `ibug68`.
    pub scheme: String,
    /// Side S of the square crops, in pixels.
    pub crop_size: u32,
    /// Split name, e.g. `train`.
    pub split: String,
    /// Sum of the shards' sample counts.
    pub total_samples: u64,
    /// blake3 of the render parameters that produced the set.
    pub config_digest: String,
    /// Version of the wingflow that wrote the set.
    pub wingflow_version: String,
    /// Every shard, in shard-id order.
    pub shards: Vec<IndexEntry>,
    /// How many augmentation epochs the set has (epoch 0 is this folder, epoch e ≥ 1 its
    /// sub-folder `augmentation-epoch-EEE`, see `layout::epoch_dir`), written only in epoch 0's
    /// index and only when more than one: readers take pass p from epoch p mod this.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub augmentation_epochs: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// One shard of a [`ShardIndex`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// File name, relative to the set directory.
    pub file: String,
    /// Number of samples in the shard.
    pub samples: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// blake3 of the file (hex).
    pub blake3: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_json_has_the_documented_keys_and_round_trips() {
        let index = ShardIndex {
            format_version: FORMAT_VERSION,
            scheme: "ibug68".into(),
            crop_size: 64,
            split: "train".into(),
            total_samples: 3,
            config_digest: "c".into(),
            wingflow_version: "0.1.0".into(),
            shards: vec![IndexEntry {
                file: "shard-00000.safetensors".into(),
                samples: 3,
                bytes: 10,
                blake3: "d".into(),
            }],
            augmentation_epochs: 1,
        };
        let value = serde_json::to_value(&index).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "config_digest",
                "crop_size",
                "format_version",
                "scheme",
                "shards",
                "split",
                "total_samples",
                "wingflow_version"
            ]
        );
        let entry = value["shards"][0].as_object().unwrap();
        let entry_keys: Vec<&str> = entry.keys().map(String::as_str).collect();
        assert_eq!(entry_keys, ["blake3", "bytes", "file", "samples"]);
        let back: ShardIndex = serde_json::from_value(value).unwrap();
        assert_eq!(back, index);
        // Several augmentation epochs are listed; an index without the key has one.
        let epochs = ShardIndex {
            augmentation_epochs: 4,
            ..index
        };
        let value = serde_json::to_value(&epochs).unwrap();
        assert_eq!(value["augmentation_epochs"], 4);
        assert_eq!(serde_json::from_value::<ShardIndex>(value).unwrap(), epochs);
    }
}
