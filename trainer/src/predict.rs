//! Prediction over a shard set: the model-side primitive of two-stage inference.
//!
//! `wingflow predict` (which owns images and geometry) writes the crops it wants predicted as a
//! small shard set, runs `wingflow-train predict`, and reads back one safetensors file:
//! `landmarks` f32 [N,L,2] in crop pixels (pixel centres at +0.5) and `sample_index` i64 [N],
//! in shard order, with the network and the set described in `__metadata__`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use crate::error::{Result, TrainerError};
use crate::model::LandmarkNet;
use crate::shards::{Loader, LoaderConfig, LoaderPosition, ShardSet};
use crate::tensor_io::save_tensors;

/// Value of the `format` metadata key of a predictions file.
pub const PREDICTIONS_FORMAT: &str = "wingflow-predictions/1";

/// The network's landmarks for every sample of a set, in shard order.
#[derive(Debug)]
pub struct Predictions {
    /// f32 [N,L,2], crop pixels.
    pub landmarks: Tensor,
    /// i64 [N], each sample's `sample_index` from its shard.
    pub sample_index: Tensor,
}

/// Check that `set`'s crops and landmark count are what `net` takes.
pub fn ensure_set_fits(net: &LandmarkNet, set: &ShardSet) -> Result<()> {
    let size = net.config().arch.input_size() as usize;
    if set.crop_size() != size || set.num_points() != net.config().num_points {
        return Err(TrainerError::Config(format!(
            "{} has {s}×{s} crops with {} points; the network takes {size}×{size} with {}",
            set.dir().display(),
            set.num_points(),
            net.config().num_points,
            s = set.crop_size(),
        )));
    }
    Ok(())
}

/// Run `net` over every sample of `set` (sequential order, inference mode).
pub fn predict_set(
    net: &LandmarkNet,
    set: Arc<ShardSet>,
    batch_size: usize,
) -> Result<Predictions> {
    ensure_set_fits(net, &set)?;
    let config = LoaderConfig::one_ordered_pass(batch_size);
    let mut landmarks = Vec::new();
    let mut indices = Vec::new();
    for loaded in Loader::start(set, config, LoaderPosition::default())? {
        let batch = loaded?.batch;
        landmarks.push(
            net.predict(&batch.images)?
                .to_device(Device::Cpu)
                .to_kind(Kind::Float),
        );
        indices.push(batch.sample_index);
    }
    Ok(Predictions {
        landmarks: Tensor::cat(&landmarks, 0),
        sample_index: Tensor::cat(&indices, 0),
    })
}

/// Write predictions with `metadata` (plus `format`) as one safetensors file, atomically.
pub fn save_predictions(
    path: &Path,
    predictions: &Predictions,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut meta = metadata.clone();
    meta.insert("format".into(), PREDICTIONS_FORMAT.into());
    save_tensors(
        path,
        &[
            ("landmarks".into(), predictions.landmarks.shallow_clone()),
            (
                "sample_index".into(),
                predictions.sample_index.shallow_clone(),
            ),
        ],
        &meta,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Arch, ModelConfig};
    use crate::shards::SampleOrder;
    use crate::tensor_io::load_tensors;
    use crate::testing::{TestShardSpec, write_test_shard_set};

    #[test]
    fn predictions_cover_every_sample_in_shard_order_and_match_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let spec = TestShardSpec {
            crop_size: 64,
            shard_sizes: vec![5, 3],
            ..TestShardSpec::default()
        };
        write_test_shard_set(dir.path(), &spec).unwrap();
        let set = Arc::new(ShardSet::open(dir.path()).unwrap());
        let net = LandmarkNet::new(
            ModelConfig {
                arch: Arch::Cnn6,
                num_points: set.num_points(),
                batch_norm: false,
            },
            3,
            Device::Cpu,
        )
        .unwrap();
        let p = predict_set(&net, set.clone(), 3).unwrap();
        assert_eq!(p.landmarks.size(), [8, set.num_points() as i64, 2]);
        let order = set.epoch_order(SampleOrder::Sequential, 0);
        let batch = set.gather(&order);
        assert!(p.sample_index.equal(&batch.sample_index));
        let direct = net.predict(&batch.images).unwrap();
        assert!(p.landmarks.allclose(&direct, 1e-5, 1e-4, false));

        let path = dir.path().join("preds.safetensors");
        save_predictions(&path, &p, &BTreeMap::from([("arch".into(), "cnn6".into())])).unwrap();
        let loaded = load_tensors(&path, Device::Cpu).unwrap();
        assert_eq!(loaded.metadata["format"], PREDICTIONS_FORMAT);
        assert!(loaded.tensors["landmarks"].equal(&p.landmarks));
        assert_eq!(loaded.tensors["sample_index"].kind(), Kind::Int64);
    }
}
