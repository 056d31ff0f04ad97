//! Small synthetic shard sets for tests of the trainer (and of crates that drive it).
//!
//! Not the renderer: these images are dark squares with a bright dot at each landmark, enough
//! for a network to learn something in a few hundred steps and for the loader to be checked.

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::Dtype;

use crate::error::{Result, TrainerError};
use crate::shards::{SHARD_FORMAT_VERSION, ShardEntry, ShardIndex};
use crate::tensor_io::{HostView, write_atomic, write_views};

/// What [`write_test_shard_set`] writes.
#[derive(Debug, Clone)]
pub struct TestShardSpec {
    /// Crop side S.
    pub crop_size: usize,
    /// Landmarks per face (at most 5 distinct base points are repeated with offsets beyond that).
    pub num_points: usize,
    /// Samples in each shard.
    pub shard_sizes: Vec<usize>,
    /// Split name written into the index and metadata.
    pub split: String,
    /// Scheme name written into the index and metadata.
    pub scheme: String,
    /// Seed of the synthetic shapes.
    pub seed: u64,
    /// Every this-many-th sample gets point 0 marked invisible with NaN coordinates (0: never).
    pub invisible_every: usize,
}

impl Default for TestShardSpec {
    fn default() -> Self {
        Self {
            crop_size: 32,
            num_points: 5,
            shard_sizes: vec![8, 8],
            split: "train".into(),
            scheme: "synthetic5".into(),
            seed: 1,
            invisible_every: 7,
        }
    }
}

/// Base shape in the unit square: eyes, nose tip, mouth corners.
const BASE: [(f32, f32); 5] = [
    (0.3, 0.35),
    (0.7, 0.35),
    (0.5, 0.55),
    (0.35, 0.75),
    (0.65, 0.75),
];

/// The synthetic scheme's flip permutation for `num_points` points (mirror pairs swapped).
fn flip_permutation(num_points: usize) -> Vec<usize> {
    (0..num_points)
        .map(|i| {
            let base = i % 5;
            let mirrored = [1, 0, 2, 4, 3][base];
            let candidate = i - base + mirrored;
            if candidate < num_points { candidate } else { i }
        })
        .collect()
}

/// Write a shard set in `dir` (created if needed): shards `shard-00000.safetensors` … with
/// samples numbered 0.. in shard order, and `index.json`. Returns the index written.
pub fn write_test_shard_set(dir: &Path, spec: &TestShardSpec) -> Result<ShardIndex> {
    if spec.crop_size < 8 || spec.num_points == 0 {
        return Err(TrainerError::Config(
            "test shard set needs crop_size ≥ 8 and ≥ 1 point".into(),
        ));
    }
    let s = spec.crop_size;
    let l = spec.num_points;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut entries = Vec::new();
    let mut next_index = 0i64;
    let perm = flip_permutation(l);
    for (shard_no, &n) in spec.shard_sizes.iter().enumerate() {
        let mut images = vec![0u8; n * s * s * 3];
        let mut landmarks = Vec::with_capacity(n * l * 2);
        let mut visible = vec![1u8; n * l];
        let mut in_crop = vec![1u8; n * l];
        let mut sample_index = Vec::with_capacity(n);
        for i in 0..n {
            let scale = rng.gen_range(0.6..0.9) * s as f32;
            let cx = rng.gen_range(0.4..0.6) * s as f32;
            let cy = rng.gen_range(0.4..0.6) * s as f32;
            let image = &mut images[i * s * s * 3..][..s * s * 3];
            for (p, px) in image.iter_mut().enumerate() {
                *px = 20 + (p % 7) as u8;
            }
            for k in 0..l {
                let (bx, by) = BASE[k % 5];
                let ring = (k / 5) as f32 * 0.04;
                let x = cx + (bx - 0.5 + ring) * scale + rng.gen_range(-0.5..0.5);
                let y = cy + (by - 0.5 + ring) * scale + rng.gen_range(-0.5..0.5);
                let invisible = spec.invisible_every > 0
                    && k == 0
                    && (next_index as usize).is_multiple_of(spec.invisible_every);
                if invisible {
                    landmarks.extend([f32::NAN, f32::NAN]);
                    visible[i * l + k] = 0;
                    in_crop[i * l + k] = 0;
                    continue;
                }
                landmarks.extend([x, y]);
                let inside = (0.0..s as f32).contains(&x) && (0.0..s as f32).contains(&y);
                in_crop[i * l + k] = u8::from(inside);
                // A 3×3 dot centred on the pixel that contains (x, y).
                let (col, row) = (x.floor() as i64, y.floor() as i64);
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let (c, r) = (col + dx, row + dy);
                        if (0..s as i64).contains(&c) && (0..s as i64).contains(&r) {
                            let at = (r as usize * s + c as usize) * 3;
                            image[at..at + 3].copy_from_slice(&[250, 240 - 30 * (k % 5) as u8, 60]);
                        }
                    }
                }
            }
            sample_index.push(next_index);
            next_index += 1;
        }
        let view = |dtype, shape: Vec<usize>, data: Vec<u8>| HostView { dtype, shape, data };
        let views = vec![
            (
                "images".to_owned(),
                view(Dtype::U8, vec![n, s, s, 3], images),
            ),
            (
                "landmarks".to_owned(),
                view(
                    Dtype::F32,
                    vec![n, l, 2],
                    landmarks.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
            ),
            ("visible".to_owned(), view(Dtype::U8, vec![n, l], visible)),
            ("in_crop".to_owned(), view(Dtype::U8, vec![n, l], in_crop)),
            (
                "sample_index".to_owned(),
                view(
                    Dtype::I64,
                    vec![n],
                    sample_index.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
            ),
        ];
        let metadata = BTreeMap::from([
            (
                "format_version".to_owned(),
                SHARD_FORMAT_VERSION.to_string(),
            ),
            ("scheme".to_owned(), spec.scheme.clone()),
            ("crop_size".to_owned(), s.to_string()),
            ("split".to_owned(), spec.split.clone()),
            (
                "flip_permutation".to_owned(),
                serde_json::to_string(&perm).unwrap_or_default(),
            ),
        ]);
        let file = format!("shard-{shard_no:05}.safetensors");
        let path = dir.join(&file);
        write_views(&path, &views, &metadata)?;
        let bytes = std::fs::metadata(&path)
            .map_err(crate::error::io_err(&path))?
            .len();
        entries.push(ShardEntry {
            file,
            samples: n as u64,
            bytes,
            blake3: String::new(),
        });
    }
    let index = ShardIndex {
        format_version: SHARD_FORMAT_VERSION,
        scheme: spec.scheme.clone(),
        crop_size: s as u32,
        split: spec.split.clone(),
        total_samples: next_index as u64,
        config_digest: "test".into(),
        wingflow_version: "test".into(),
        shards: entries,
        augmentation_epochs: 1,
    };
    let index_path = dir.join("index.json");
    let json = serde_json::to_vec_pretty(&index).map_err(|source| TrainerError::Json {
        path: index_path.clone(),
        source,
    })?;
    write_atomic(&index_path, &json)?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_permutation_is_an_involution() {
        for l in 1..13 {
            let p = flip_permutation(l);
            assert!((0..l).all(|i| p[p[i]] == i), "{l}: {p:?}");
        }
    }
}
