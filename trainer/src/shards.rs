//! Shard sets (DESIGN.md "Shards"): memory-mapped safetensors shards, a deterministic per-epoch
//! sample order, and a background thread that assembles batches ahead of the model.
//!
//! A shard set is one directory (`shards/stage1/train/`) with `index.json` and
//! `shard-00000.safetensors` …; each shard holds `images` u8 [N,S,S,3], `landmarks` f32 [N,L,2]
//! (crop pixels, pixel centres at +0.5), `visible` u8 [N,L], `in_crop` u8 [N,L] and
//! `sample_index` i64 [N].
//!
//! The order of an epoch is a pure function of (seed, epoch): the shard order is permuted, then
//! the shards' rows stream through a shuffle buffer. A position in the stream is just
//! (epoch, batch), so resuming needs no more state than that.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use memmap2::Mmap;
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::{Result, TrainerError, ensure_config, io_err};

use contract::shards::tensor as tensor_name;
pub use contract::shards::{
    FORMAT_VERSION as SHARD_FORMAT_VERSION, IndexEntry as ShardEntry, ShardIndex,
};

/// One memory-mapped shard with the byte ranges of its tensors.
#[derive(Debug)]
struct Shard {
    map: Mmap,
    samples: usize,
    images: Range<usize>,
    landmarks: Range<usize>,
    visible: Range<usize>,
    in_crop: Range<usize>,
    sample_index: Range<usize>,
}

/// An opened, validated shard set.
#[derive(Debug)]
pub struct ShardSet {
    dir: PathBuf,
    index: ShardIndex,
    num_points: usize,
    flip_permutation: Vec<usize>,
    shards: Vec<Shard>,
}

/// Where a sample lives: shard number (position in `index.json`) and row in that shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRef {
    /// Position of the shard in [`ShardIndex::shards`].
    pub shard: u32,
    /// Row inside the shard.
    pub row: u32,
}

/// How the samples of an epoch are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleOrder {
    /// Shard by shard, row by row (evaluation).
    Sequential,
    /// Shard order permuted, rows mixed through a buffer of `buffer` sample references. The
    /// buffer holds only references (the data stays mapped), so its size bounds how far apart
    /// in the files consecutive reads are, not memory; a buffer of at least the set size is a
    /// uniform shuffle.
    Shuffled {
        /// Seed of the run; epoch e uses ChaCha8 stream e of this seed.
        seed: u64,
        /// Shuffle buffer size in samples (at least 1).
        buffer: usize,
    },
}

fn shard_err(path: &Path, message: impl Into<String>) -> TrainerError {
    TrainerError::Shard {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl ShardSet {
    /// Open the shard set in `dir`: read `index.json`, map every shard, check every tensor's dtype
    /// and shape and every shard's metadata against the index.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("index.json");
        let text = std::fs::read_to_string(&index_path).map_err(io_err(&index_path))?;
        let index: ShardIndex =
            serde_json::from_str(&text).map_err(|source| TrainerError::Json {
                path: index_path.clone(),
                source,
            })?;
        if index.format_version != SHARD_FORMAT_VERSION {
            return Err(shard_err(
                &index_path,
                format!(
                    "format_version {} is not the supported {SHARD_FORMAT_VERSION}",
                    index.format_version
                ),
            ));
        }
        if index.crop_size == 0 {
            return Err(shard_err(&index_path, "crop_size is 0"));
        }
        let listed: u64 = index.shards.iter().map(|s| s.samples).sum();
        if listed != index.total_samples {
            return Err(shard_err(
                &index_path,
                format!(
                    "total_samples {} but the shards list {listed}",
                    index.total_samples
                ),
            ));
        }
        let mut shards = Vec::with_capacity(index.shards.len());
        let mut num_points = None;
        let mut flip_permutation = Vec::new();
        for entry in &index.shards {
            if entry.file.contains(['/', '\\']) || entry.file.starts_with('.') {
                return Err(shard_err(
                    &index_path,
                    format!("shard file `{}` is not a plain file name", entry.file),
                ));
            }
            let path = dir.join(&entry.file);
            let (shard, points, perm) = open_shard(&path, entry, &index)?;
            match num_points {
                None => {
                    num_points = Some(points);
                    flip_permutation = perm;
                }
                Some(n) if n != points => {
                    return Err(shard_err(
                        &path,
                        format!("{points} landmarks, but earlier shards have {n}"),
                    ));
                }
                Some(_) if perm != flip_permutation => {
                    return Err(shard_err(
                        &path,
                        "flip_permutation differs from earlier shards",
                    ));
                }
                Some(_) => {}
            }
            shards.push(shard);
        }
        let num_points = num_points.ok_or_else(|| shard_err(&index_path, "no shards listed"))?;
        Ok(Self {
            dir: dir.to_owned(),
            index,
            num_points,
            flip_permutation,
            shards,
        })
    }

    /// The set's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `index.json`.
    pub fn index(&self) -> &ShardIndex {
        &self.index
    }

    /// Total number of samples.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.samples).sum()
    }

    /// Whether the set holds no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Crop side S in pixels.
    pub fn crop_size(&self) -> usize {
        self.index.crop_size as usize
    }

    /// Number of landmarks L.
    pub fn num_points(&self) -> usize {
        self.num_points
    }

    /// The scheme's flip permutation, as stored in the shards.
    pub fn flip_permutation(&self) -> &[usize] {
        &self.flip_permutation
    }

    /// The samples of `epoch` in the order `order` gives them.
    pub fn epoch_order(&self, order: SampleOrder, epoch: u64) -> Vec<SampleRef> {
        let shard_rows = |shard: usize| {
            (0..self.shards[shard].samples).map(move |row| SampleRef {
                shard: shard as u32,
                row: row as u32,
            })
        };
        match order {
            SampleOrder::Sequential => (0..self.shards.len()).flat_map(shard_rows).collect(),
            SampleOrder::Shuffled { seed, buffer } => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(epoch);
                let mut shard_order: Vec<usize> = (0..self.shards.len()).collect();
                shard_order.shuffle(&mut rng);
                let capacity = buffer.max(1);
                let mut pool: Vec<SampleRef> = Vec::with_capacity(capacity);
                let mut out = Vec::with_capacity(self.len());
                for sample in shard_order.into_iter().flat_map(shard_rows) {
                    if pool.len() == capacity {
                        let pick = rng.gen_range(0..pool.len());
                        out.push(pool.swap_remove(pick));
                    }
                    pool.push(sample);
                }
                while !pool.is_empty() {
                    let pick = rng.gen_range(0..pool.len());
                    out.push(pool.swap_remove(pick));
                }
                out
            }
        }
    }

    /// Copy the given samples into one batch of host tensors (in the order given).
    pub fn gather(&self, samples: &[SampleRef]) -> HostBatch {
        let s = self.crop_size();
        let l = self.num_points;
        let image_bytes = s * s * 3;
        let mut images = Vec::with_capacity(samples.len() * image_bytes);
        let mut landmarks = Vec::with_capacity(samples.len() * l * 2);
        let mut visible = Vec::with_capacity(samples.len() * l);
        let mut in_crop = Vec::with_capacity(samples.len() * l);
        let mut sample_index = Vec::with_capacity(samples.len());
        for r in samples {
            let shard = &self.shards[r.shard as usize];
            let row = r.row as usize;
            let bytes = &shard.map[..];
            images
                .extend_from_slice(&bytes[shard.images.start + row * image_bytes..][..image_bytes]);
            let lm = &bytes[shard.landmarks.start + row * l * 8..][..l * 8];
            landmarks.extend(
                lm.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            visible.extend_from_slice(&bytes[shard.visible.start + row * l..][..l]);
            in_crop.extend_from_slice(&bytes[shard.in_crop.start + row * l..][..l]);
            let si = &bytes[shard.sample_index.start + row * 8..][..8];
            sample_index.push(i64::from_le_bytes(si.try_into().expect("8-byte slice")));
        }
        let n = samples.len() as i64;
        let (s, l) = (s as i64, l as i64);
        HostBatch {
            images: Tensor::from_slice(&images).reshape([n, s, s, 3]),
            landmarks: Tensor::from_slice(&landmarks).reshape([n, l, 2]),
            visible: Tensor::from_slice(&visible).reshape([n, l]),
            in_crop: Tensor::from_slice(&in_crop).reshape([n, l]),
            sample_index: Tensor::from_slice(&sample_index),
        }
    }
}

/// Map one shard and check it against its index entry.
fn open_shard(
    path: &Path,
    entry: &ShardEntry,
    index: &ShardIndex,
) -> Result<(Shard, usize, Vec<usize>)> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    if len != entry.bytes {
        return Err(shard_err(
            path,
            format!("{len} bytes, index.json says {}", entry.bytes),
        ));
    }
    // SAFETY: shards are written once (temporary file + rename) and never modified in place;
    // the map is read-only. Truncating a shard while training reads it is outside the contract.
    let map = unsafe { Mmap::map(&file) }.map_err(io_err(path))?;
    let safetensors_err = |source| TrainerError::Safetensors {
        path: path.to_owned(),
        source,
    };
    // deserialize validates the header: offsets in bounds, contiguous, sizes match shapes.
    SafeTensors::deserialize(&map).map_err(safetensors_err)?;
    let (header_len, header) = SafeTensors::read_metadata(&map).map_err(safetensors_err)?;
    let data_start = 8 + header_len;
    let meta = header.metadata().clone().unwrap_or_default();
    let meta_field = |key: &str| {
        meta.get(key)
            .ok_or_else(|| shard_err(path, format!("__metadata__ lacks `{key}`")))
    };
    let check_meta = |key: &str, expected: &str| -> Result<()> {
        let found = meta_field(key)?;
        if found != expected {
            return Err(shard_err(
                path,
                format!("__metadata__ `{key}` is `{found}`, index.json says `{expected}`"),
            ));
        }
        Ok(())
    };
    check_meta("format_version", &index.format_version.to_string())?;
    check_meta("scheme", &index.scheme)?;
    check_meta("crop_size", &index.crop_size.to_string())?;
    check_meta("split", &index.split)?;
    let perm_text = meta_field("flip_permutation")?;
    let flip: Vec<usize> = serde_json::from_str(perm_text).map_err(|e| {
        shard_err(
            path,
            format!("__metadata__ `flip_permutation` is not a JSON list of indices: {e}"),
        )
    })?;

    let n = entry.samples as usize;
    let s = index.crop_size as usize;
    let tensor = |name: &str, dtype: Dtype| -> Result<(Vec<usize>, Range<usize>)> {
        let info = header
            .info(name)
            .ok_or_else(|| shard_err(path, format!("no tensor `{name}`")))?;
        if info.dtype != dtype {
            return Err(shard_err(
                path,
                format!("tensor `{name}` is {:?}, expected {dtype:?}", info.dtype),
            ));
        }
        if info.shape.first() != Some(&n) {
            return Err(shard_err(
                path,
                format!(
                    "tensor `{name}` has shape {:?}; index.json says {n} samples",
                    info.shape
                ),
            ));
        }
        let (a, b) = info.data_offsets;
        Ok((info.shape.clone(), data_start + a..data_start + b))
    };
    let (image_shape, images) = tensor(tensor_name::IMAGES, Dtype::U8)?;
    if image_shape != [n, s, s, 3] {
        return Err(shard_err(
            path,
            format!("tensor `images` has shape {image_shape:?}, expected [{n}, {s}, {s}, 3]"),
        ));
    }
    let (lm_shape, landmarks) = tensor(tensor_name::LANDMARKS, Dtype::F32)?;
    if lm_shape.len() != 3 || lm_shape[2] != 2 {
        return Err(shard_err(
            path,
            format!("tensor `landmarks` has shape {lm_shape:?}, expected [{n}, L, 2]"),
        ));
    }
    let l = lm_shape[1];
    if l == 0 {
        return Err(shard_err(path, "tensor `landmarks` has no points"));
    }
    for name in [tensor_name::VISIBLE, tensor_name::IN_CROP] {
        let (shape, _) = tensor(name, Dtype::U8)?;
        if shape != [n, l] {
            return Err(shard_err(
                path,
                format!("tensor `{name}` has shape {shape:?}, expected [{n}, {l}]"),
            ));
        }
    }
    let (_, visible) = tensor(tensor_name::VISIBLE, Dtype::U8)?;
    let (_, in_crop) = tensor(tensor_name::IN_CROP, Dtype::U8)?;
    let (si_shape, sample_index) = tensor(tensor_name::SAMPLE_INDEX, Dtype::I64)?;
    if si_shape != [n] {
        return Err(shard_err(
            path,
            format!("tensor `sample_index` has shape {si_shape:?}, expected [{n}]"),
        ));
    }
    let mut sorted = flip.clone();
    sorted.sort_unstable();
    if sorted != (0..l).collect::<Vec<_>>() {
        return Err(shard_err(
            path,
            format!("flip_permutation is not a permutation of 0..{l}"),
        ));
    }
    let shard = Shard {
        map,
        samples: n,
        images,
        landmarks,
        visible,
        in_crop,
        sample_index,
    };
    Ok((shard, l, flip))
}

/// A batch in host memory, as the shards hold it.
#[derive(Debug)]
pub struct HostBatch {
    /// u8 [B,S,S,3], RGB.
    pub images: Tensor,
    /// f32 [B,L,2], crop pixels (may be NaN where a point has no coordinates).
    pub landmarks: Tensor,
    /// u8 [B,L], 1 where the point is annotated and not occluded.
    pub visible: Tensor,
    /// u8 [B,L], 1 where the point lies inside the crop.
    pub in_crop: Tensor,
    /// i64 [B], the sample's row in the set's `samples.parquet`.
    pub sample_index: Tensor,
}

/// The augmentation epochs of the training set `first` (its epoch 0): `first` itself and, when
/// its index lists more (`augmentation_epochs`), each sub-folder `augmentation-epoch-EEE`, which
/// must hold the same samples (count, crop size, points, scheme).
pub fn open_augmentation_epochs(first: Arc<ShardSet>) -> Result<Vec<Arc<ShardSet>>> {
    let count = first.index().augmentation_epochs.max(1);
    let mut sets = vec![first.clone()];
    for epoch in 1..count {
        let dir = contract::layout::epoch_dir(first.dir(), epoch);
        let set = ShardSet::open(&dir)?;
        let same = set.len() == first.len()
            && set.crop_size() == first.crop_size()
            && set.num_points() == first.num_points()
            && set.index().scheme == first.index().scheme;
        if !same {
            return Err(shard_err(
                &dir,
                format!(
                    "augmentation epoch {epoch} ({} samples, {}², {} points, {}) does not match epoch 0 ({} samples, {}², {} points, {})",
                    set.len(),
                    set.crop_size(),
                    set.num_points(),
                    set.index().scheme,
                    first.len(),
                    first.crop_size(),
                    first.num_points(),
                    first.index().scheme
                ),
            ));
        }
        sets.push(Arc::new(set));
    }
    Ok(sets)
}

/// A position in the loader's stream: the next batch to produce is batch `batch` of `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoaderPosition {
    /// Pass number over the training set, from 0 (pass p reads augmentation epoch p mod E).
    pub epoch: u64,
    /// Batch number inside the epoch, from 0.
    pub batch: u64,
}

/// Loader parameters.
#[derive(Debug, Clone, Copy)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Sample order of each epoch.
    pub order: SampleOrder,
    /// Drop the last, incomplete batch of each epoch (training) or keep it (evaluation).
    pub drop_last: bool,
    /// Batches assembled ahead of the consumer (at least 1).
    pub prefetch: usize,
    /// Stop after this many epochs in all (counting from epoch 0); `None` runs forever.
    pub epochs: Option<u64>,
}

impl LoaderConfig {
    /// One pass over a set in file order, keeping the last partial batch: what evaluation and
    /// prediction read.
    pub fn one_ordered_pass(batch_size: usize) -> Self {
        Self {
            batch_size: batch_size.max(1),
            order: SampleOrder::Sequential,
            drop_last: false,
            prefetch: 2,
            epochs: Some(1),
        }
    }

    /// Batches in one epoch of `set`.
    pub fn batches_per_epoch(&self, set: &ShardSet) -> u64 {
        let n = set.len() as u64;
        let b = self.batch_size as u64;
        if self.drop_last { n / b } else { n.div_ceil(b) }
    }
}

/// A batch with its place in the stream.
#[derive(Debug)]
pub struct LoadedBatch {
    /// The data.
    pub batch: HostBatch,
    /// Where this batch is.
    pub position: LoaderPosition,
    /// Where the batch after it is: what a checkpoint taken after this batch stores.
    pub next: LoaderPosition,
}

enum Message {
    Batch(Box<LoadedBatch>),
    Done,
}

/// Background batch assembly: a thread walks the epoch orders from a start position and keeps
/// up to `prefetch` batches ready in a bounded channel. Iterate it to get the batches.
#[derive(Debug)]
pub struct Loader {
    rx: Option<Receiver<Message>>,
    worker: Option<JoinHandle<()>>,
    finished: bool,
}

impl Loader {
    /// Start producing batches of `set` from `from`.
    pub fn start(set: Arc<ShardSet>, config: LoaderConfig, from: LoaderPosition) -> Result<Self> {
        Self::start_epochs(vec![set], config, from)
    }

    /// Start producing batches of a training set's augmentation epochs from `from`: pass p
    /// (`LoaderPosition::epoch`) reads augmentation epoch p mod `sets.len()`, shuffled by
    /// (seed, p) as one set is. The sets must hold the same number of samples
    /// ([`open_augmentation_epochs`] checks it).
    pub fn start_epochs(
        sets: Vec<Arc<ShardSet>>,
        config: LoaderConfig,
        from: LoaderPosition,
    ) -> Result<Self> {
        ensure_config!(config.batch_size > 0, "batch size must be at least 1");
        let set = sets
            .first()
            .cloned()
            .ok_or_else(|| TrainerError::Config("no shard set to load".to_owned()))?;
        ensure_config!(
            sets.iter().all(|s| s.len() == set.len()),
            "the augmentation epochs of {} hold different sample counts",
            set.dir().display()
        );
        let per_epoch = config.batches_per_epoch(&set);
        ensure_config!(
            per_epoch > 0,
            "the shard set {} has {} samples, fewer than one batch of {}",
            set.dir().display(),
            set.len(),
            config.batch_size
        );
        let (tx, rx) = sync_channel(config.prefetch.max(1));
        let worker = std::thread::Builder::new()
            .name("wingflow-loader".into())
            .spawn(move || produce(&sets, config, from, per_epoch, &tx))
            .map_err(io_err("<loader thread>"))?;
        Ok(Self {
            rx: Some(rx),
            worker: Some(worker),
            finished: false,
        })
    }
}

fn produce(
    sets: &[Arc<ShardSet>],
    config: LoaderConfig,
    from: LoaderPosition,
    per_epoch: u64,
    tx: &SyncSender<Message>,
) {
    let mut epoch = from.epoch;
    let mut first = from.batch;
    loop {
        if config.epochs.is_some_and(|limit| epoch >= limit) {
            // The consumer may already be gone; nothing to report then.
            let _ = tx.send(Message::Done);
            return;
        }
        let set = &sets[(epoch % sets.len() as u64) as usize];
        let order = set.epoch_order(config.order, epoch);
        for b in first..per_epoch {
            let start = (b as usize) * config.batch_size;
            let end = (start + config.batch_size).min(order.len());
            let next = if b + 1 == per_epoch {
                LoaderPosition {
                    epoch: epoch + 1,
                    batch: 0,
                }
            } else {
                LoaderPosition {
                    epoch,
                    batch: b + 1,
                }
            };
            let loaded = LoadedBatch {
                batch: set.gather(&order[start..end]),
                position: LoaderPosition { epoch, batch: b },
                next,
            };
            if tx.send(Message::Batch(Box::new(loaded))).is_err() {
                return;
            }
        }
        epoch += 1;
        first = 0;
    }
}

impl Iterator for Loader {
    type Item = Result<LoadedBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.rx.as_ref()?.recv() {
            Ok(Message::Batch(b)) => Some(Ok(*b)),
            Ok(Message::Done) => {
                self.finished = true;
                None
            }
            Err(_) => {
                self.finished = true;
                Some(Err(TrainerError::LoaderDied))
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel first makes a worker blocked on a full channel return.
        self.rx.take();
        if let Some(worker) = self.worker.take() {
            // A panicked worker has already been reported through `LoaderDied`.
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestShardSpec, write_test_shard_set};

    fn spec() -> TestShardSpec {
        TestShardSpec {
            shard_sizes: vec![7, 5, 9],
            ..TestShardSpec::default()
        }
    }

    fn sample_indices(loader: Loader) -> Vec<Vec<i64>> {
        loader
            .map(|b| Vec::<i64>::try_from(&b.unwrap().batch.sample_index).unwrap())
            .collect()
    }

    #[test]
    fn open_reads_what_the_writer_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let index = write_test_shard_set(dir.path(), &spec()).unwrap();
        let set = ShardSet::open(dir.path()).unwrap();
        assert_eq!(set.len(), 21);
        assert_eq!(set.index(), &index);
        assert_eq!(set.num_points(), spec().num_points);
        let batch = set.gather(&[SampleRef { shard: 1, row: 2 }]);
        // The writer numbers samples globally in shard order.
        assert_eq!(Vec::<i64>::try_from(&batch.sample_index).unwrap(), vec![9]);
        assert_eq!(batch.images.size(), vec![1, 32, 32, 3]);
        assert_eq!(batch.landmarks.size(), vec![1, spec().num_points as i64, 2]);
    }

    #[test]
    fn shuffled_order_is_a_seeded_permutation() {
        let dir = tempfile::tempdir().unwrap();
        write_test_shard_set(dir.path(), &spec()).unwrap();
        let set = ShardSet::open(dir.path()).unwrap();
        let order = SampleOrder::Shuffled { seed: 5, buffer: 4 };
        let a = set.epoch_order(order, 0);
        assert_eq!(a, set.epoch_order(order, 0));
        assert_ne!(a, set.epoch_order(order, 1));
        assert_ne!(
            a,
            set.epoch_order(SampleOrder::Shuffled { seed: 6, buffer: 4 }, 0)
        );
        let mut sorted: Vec<_> = a.iter().map(|r| (r.shard, r.row)).collect();
        sorted.sort_unstable();
        let expected: Vec<_> = set
            .epoch_order(SampleOrder::Sequential, 0)
            .iter()
            .map(|r| (r.shard, r.row))
            .collect();
        assert_eq!(sorted, expected);
    }

    #[test]
    fn same_seed_same_batches_and_resume_continues_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        write_test_shard_set(dir.path(), &spec()).unwrap();
        let set = Arc::new(ShardSet::open(dir.path()).unwrap());
        let config = LoaderConfig {
            batch_size: 4,
            order: SampleOrder::Shuffled {
                seed: 11,
                buffer: 6,
            },
            drop_last: true,
            prefetch: 2,
            epochs: Some(3),
        };
        let full =
            sample_indices(Loader::start(set.clone(), config, LoaderPosition::default()).unwrap());
        assert_eq!(full.len(), 3 * 5);
        assert_eq!(
            full,
            sample_indices(Loader::start(set.clone(), config, LoaderPosition::default()).unwrap())
        );
        // Stop after 7 batches, remember `next`, restart there.
        let mut first = Loader::start(set.clone(), config, LoaderPosition::default()).unwrap();
        let mut head = Vec::new();
        let mut resume_at = LoaderPosition::default();
        for _ in 0..7 {
            let b = first.next().unwrap().unwrap();
            head.push(Vec::<i64>::try_from(&b.batch.sample_index).unwrap());
            resume_at = b.next;
        }
        drop(first);
        assert_eq!(resume_at, LoaderPosition { epoch: 1, batch: 2 });
        let tail = sample_indices(Loader::start(set, config, resume_at).unwrap());
        head.extend(tail);
        assert_eq!(head, full);
    }

    #[test]
    fn sequential_keeps_the_last_partial_batch() {
        let dir = tempfile::tempdir().unwrap();
        write_test_shard_set(dir.path(), &spec()).unwrap();
        let set = Arc::new(ShardSet::open(dir.path()).unwrap());
        let config = LoaderConfig {
            batch_size: 8,
            order: SampleOrder::Sequential,
            drop_last: false,
            prefetch: 1,
            epochs: Some(1),
        };
        let batches =
            sample_indices(Loader::start(set, config, LoaderPosition::default()).unwrap());
        assert_eq!(batches.concat(), (0..21).collect::<Vec<i64>>());
        assert_eq!(batches.last().unwrap().len(), 5);
    }

    #[test]
    fn mismatched_metadata_and_sizes_are_reported_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_test_shard_set(dir.path(), &spec()).unwrap();
        let index_path = dir.path().join("index.json");
        let mut index: ShardIndex =
            serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
        index.shards[1].bytes += 1;
        std::fs::write(&index_path, serde_json::to_string(&index).unwrap()).unwrap();
        let err = ShardSet::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("shard-00001.safetensors") && err.contains("bytes"),
            "{err}"
        );

        index.shards[1].bytes -= 1;
        index.scheme = "another-scheme".into();
        std::fs::write(&index_path, serde_json::to_string(&index).unwrap()).unwrap();
        let err = ShardSet::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("shard-00000.safetensors") && err.contains("scheme"),
            "{err}"
        );
    }

    #[test]
    fn a_set_smaller_than_one_batch_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        write_test_shard_set(
            dir.path(),
            &TestShardSpec {
                shard_sizes: vec![3],
                ..TestShardSpec::default()
            },
        )
        .unwrap();
        let set = Arc::new(ShardSet::open(dir.path()).unwrap());
        let config = LoaderConfig {
            batch_size: 4,
            order: SampleOrder::Sequential,
            drop_last: true,
            prefetch: 1,
            epochs: None,
        };
        assert!(matches!(
            Loader::start(set, config, LoaderPosition::default()),
            Err(TrainerError::Config(_))
        ));
    }
}
