//! The CNN-6 and CNN-7 landmark regressors of the Wing-loss paper.
//!
//! Input contract: RGB u8 images [B,S,S,3] become f32 [B,3,S,S] as `v / 255 − 0.5`
//! ([`images_to_input`]); the batch moves to the device as u8 and is converted there.
//!
//! Output contract: the last layer produces 2L numbers `o`; the landmark in crop pixels (pixel
//! centres at +0.5) is `(o + 0.5) · S`, x before y per point ([`LandmarkNet::decode`]). Working
//! in units of the crop keeps the targets near [−0.5, 0.5] whatever S is, so one learning rate
//! suits both stages; the loss is still computed in pixels, as the paper's Wing parameters
//! (w = 10, ε = 2) assume.
//!
//! Tensor names in checkpoints (stable; the PyTorch twin in `python/wingflow_models.py` uses the
//! same): `blocks.{i}.conv.weight` [C_out,C_in,3,3], `blocks.{i}.conv.bias`, with batch norm also
//! `blocks.{i}.bn.{weight,bias,running_mean,running_var}`, then `fc1.weight` [1024, 512·2·2],
//! `fc1.bias`, `out.weight` [2L,1024], `out.bias`.

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, TorchContext, TrainerError};
use crate::tensor_io::{load_tensors, save_tensors};

/// Width of the hidden fully connected layer.
pub const FC_WIDTH: i64 = 1024;

/// Value of the `format` metadata key of a weights file.
pub const WEIGHTS_FORMAT: &str = "wingflow-landmark-net/1";

pub use contract::training::Arch;

/// Filters of each conv block of a network.
pub fn filters(arch: Arch) -> &'static [i64] {
    match arch {
        Arch::Cnn6 => &[32, 64, 128, 256, 512],
        Arch::Cnn7 => &[64, 64, 128, 256, 512, 512],
    }
}

/// Side of the feature map after the last block (each block halves it).
fn final_map_size(arch: Arch) -> i64 {
    i64::from(arch.input_size() >> filters(arch).len())
}

/// Everything needed to build a network; stored in every weights file's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// CNN-6 or CNN-7.
    pub arch: Arch,
    /// Number of landmarks L (the output has 2L values).
    pub num_points: usize,
    /// Batch normalisation after each convolution (off in the paper).
    pub batch_norm: bool,
}

#[derive(Debug)]
struct ConvBlock {
    conv: nn::Conv2D,
    bn: Option<nn::BatchNorm>,
}

/// A CNN-6/CNN-7 network with its parameters (owned in a tch `VarStore`).
#[derive(Debug)]
pub struct LandmarkNet {
    config: ModelConfig,
    vs: nn::VarStore,
    blocks: Vec<ConvBlock>,
    fc1: nn::Linear,
    out: nn::Linear,
}

impl LandmarkNet {
    /// Build a network on `device` initialised from `seed` alone (He-uniform weights drawn from
    /// ChaCha8, zero biases, batch norm at identity): the same seed gives the same weights on
    /// every device and whatever else touches libtorch's global generator.
    pub fn new(config: ModelConfig, seed: u64, device: Device) -> Result<Self> {
        if config.num_points == 0 {
            return Err(TrainerError::Config(
                "a network needs at least one landmark".into(),
            ));
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mut blocks = Vec::new();
        let mut in_channels = 3;
        for (i, &filters) in filters(config.arch).iter().enumerate() {
            let p = &root / "blocks" / i;
            let conv_cfg = nn::ConvConfig {
                padding: 1,
                ..Default::default()
            };
            let conv = nn::conv2d(&p / "conv", in_channels, filters, 3, conv_cfg);
            let bn = config
                .batch_norm
                .then(|| nn::batch_norm2d(&p / "bn", filters, Default::default()));
            blocks.push(ConvBlock { conv, bn });
            in_channels = filters;
        }
        let side = final_map_size(config.arch);
        let flat = in_channels * side * side;
        let fc1 = nn::linear(&root / "fc1", flat, FC_WIDTH, Default::default());
        let out = nn::linear(
            &root / "out",
            FC_WIDTH,
            2 * config.num_points as i64,
            Default::default(),
        );
        let net = Self {
            config,
            vs,
            blocks,
            fc1,
            out,
        };
        net.initialise(seed)?;
        Ok(net)
    }

    /// Overwrite the convolution and linear layers with seeded values: weights
    /// U(±√(6/fan_in)) (He-uniform, suited to ReLU), biases 0.
    fn initialise(&self, seed: u64) -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        tch::no_grad(|| {
            for (name, mut tensor) in self.parameters() {
                if name.contains(".bn.") {
                    continue;
                }
                let size = tensor.size();
                let values: Vec<f32> = if name.ends_with(".bias") {
                    vec![0.0; tensor.numel()]
                } else {
                    let fan_in: i64 = size[1..].iter().product();
                    let bound = (6.0 / fan_in as f64).sqrt() as f32;
                    (0..tensor.numel())
                        .map(|_| rng.gen_range(-bound..bound))
                        .collect()
                };
                let source = Tensor::from_slice(&values)
                    .reshape(&size)
                    .to_device(tensor.device());
                tensor.f_copy_(&source).torch("initialising weights")?;
            }
            Ok(())
        })
    }

    /// The network's configuration.
    pub fn config(&self) -> ModelConfig {
        self.config
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Raw outputs [B, 2L] for an input [B,3,S,S] from [`images_to_input`]. `train` selects
    /// batch statistics (and updates the running ones) when batch norm is on.
    pub fn forward(&self, input: &Tensor, train: bool) -> Tensor {
        let mut x = input.shallow_clone();
        for block in &self.blocks {
            x = block.conv.forward(&x);
            if let Some(bn) = &block.bn {
                x = bn.forward_t(&x, train);
            }
            x = x.relu().max_pool2d_default(2);
        }
        let x = x.flatten(1, -1);
        self.out.forward(&self.fc1.forward(&x).relu())
    }

    /// Landmarks in crop pixels [B,L,2] from raw outputs [B,2L].
    pub fn decode(&self, raw: &Tensor) -> Tensor {
        let s = self.config.arch.input_size() as f64;
        (raw + 0.5)
            .multiply_scalar(s)
            .reshape([-1, self.config.num_points as i64, 2])
    }

    /// Landmarks in crop pixels [B,L,2] for u8 images [B,S,S,3] (inference mode, no gradient).
    pub fn predict(&self, images: &Tensor) -> Result<Tensor> {
        self.check_images(images)?;
        let input = images_to_input(images, self.device());
        Ok(tch::no_grad(|| self.decode(&self.forward(&input, false))))
    }

    fn check_images(&self, images: &Tensor) -> Result<()> {
        let s = self.config.arch.input_size() as i64;
        let size = images.size();
        if size.len() != 4
            || size[1] != s
            || size[2] != s
            || size[3] != 3
            || images.kind() != Kind::Uint8
        {
            return Err(TrainerError::Config(format!(
                "{} expects u8 images [B, {s}, {s}, 3], got {:?} {size:?}",
                self.config.arch,
                images.kind()
            )));
        }
        Ok(())
    }

    /// Every tensor of the network by checkpoint name (parameters and batch-norm statistics),
    /// sorted by name.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut all: Vec<_> = self.vs.variables().into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The trainable parameters by checkpoint name, sorted by name.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.named_tensors()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect()
    }

    /// Metadata written into a weights file: the config, and the input/output contract in words.
    pub fn weights_metadata(&self) -> BTreeMap<String, String> {
        let c = self.config;
        BTreeMap::from([
            ("format".into(), WEIGHTS_FORMAT.into()),
            ("arch".into(), c.arch.to_string()),
            ("num_points".into(), c.num_points.to_string()),
            ("batch_norm".into(), c.batch_norm.to_string()),
            ("input_size".into(), c.arch.input_size().to_string()),
            (
                "input".into(),
                "RGB u8 [B,S,S,3] -> f32 [B,3,S,S] as v/255 - 0.5".into(),
            ),
            (
                "output".into(),
                "[B,2L] o; pixel (x,y) of point i = (o[2i], o[2i+1]) + 0.5, times S".into(),
            ),
        ])
    }

    /// Save the weights (with [`LandmarkNet::weights_metadata`] and `extra` metadata) as one
    /// safetensors file, atomically.
    pub fn save(&self, path: &Path, extra: &BTreeMap<String, String>) -> Result<()> {
        let mut metadata = self.weights_metadata();
        metadata.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        save_tensors(path, &self.named_tensors(), &metadata)
    }

    /// Load a weights file written by [`LandmarkNet::save`]; the architecture comes from its
    /// metadata. Every tensor must be present with the expected shape, and no other.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let loaded = load_tensors(path, device)?;
        let bad = |message: String| TrainerError::Checkpoint {
            path: path.to_owned(),
            message,
        };
        let field = |key: &str| {
            loaded
                .metadata
                .get(key)
                .ok_or_else(|| bad(format!("metadata lacks `{key}`")))
        };
        if field("format")? != WEIGHTS_FORMAT {
            return Err(bad(format!(
                "format is `{}`, expected `{WEIGHTS_FORMAT}`",
                field("format")?
            )));
        }
        let config = ModelConfig {
            arch: field("arch")?.parse()?,
            num_points: field("num_points")?
                .parse()
                .map_err(|e| bad(format!("num_points: {e}")))?,
            batch_norm: field("batch_norm")?
                .parse()
                .map_err(|e| bad(format!("batch_norm: {e}")))?,
        };
        let net = Self::new(config, 0, device)?;
        let expected = net.named_tensors();
        if let Some(extra) = loaded
            .tensors
            .keys()
            .find(|k| !expected.iter().any(|(n, _)| n == *k))
        {
            return Err(bad(format!("unexpected tensor `{extra}` for {config:?}")));
        }
        tch::no_grad(|| -> Result<()> {
            for (name, mut target) in expected {
                let source = loaded
                    .tensors
                    .get(&name)
                    .ok_or_else(|| bad(format!("missing tensor `{name}`")))?;
                if source.size() != target.size() {
                    return Err(bad(format!(
                        "tensor `{name}` has shape {:?}, expected {:?}",
                        source.size(),
                        target.size()
                    )));
                }
                target.f_copy_(source).torch("copying checkpoint weights")?;
            }
            Ok(())
        })?;
        Ok(net)
    }
}

/// Turn u8 images [B,S,S,3] (host or device) into the network input f32 [B,3,S,S] on `device`:
/// the u8 batch is moved first (a quarter of the bytes), then converted there.
pub fn images_to_input(images: &Tensor, device: Device) -> Tensor {
    images
        .to_device(device)
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        .divide_scalar(255.0)
        .g_sub_scalar(0.5)
}

/// A network for tests: seed 0, on the CPU.
#[cfg(test)]
pub(crate) fn test_net(arch: Arch, num_points: usize, batch_norm: bool) -> LandmarkNet {
    let config = ModelConfig {
        arch,
        num_points,
        batch_norm,
    };
    LandmarkNet::new(config, 0, Device::Cpu).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_shapes_and_names() {
        for (arch, blocks) in [(Arch::Cnn6, 5), (Arch::Cnn7, 6)] {
            let net = test_net(arch, 19, false);
            let s = arch.input_size() as i64;
            let images = Tensor::zeros([2, s, s, 3], (Kind::Uint8, Device::Cpu));
            assert_eq!(net.predict(&images).unwrap().size(), vec![2, 19, 2]);
            let names: Vec<String> = net.named_tensors().into_iter().map(|(n, _)| n).collect();
            assert_eq!(names.len(), 2 * blocks + 4);
            assert!(names.contains(&"blocks.0.conv.weight".to_owned()));
            assert!(names.contains(&format!("blocks.{}.conv.bias", blocks - 1)));
            let fc1 = net
                .named_tensors()
                .into_iter()
                .find(|(n, _)| n == "fc1.weight")
                .unwrap()
                .1;
            assert_eq!(fc1.size(), vec![1024, 2048]);
        }
    }

    #[test]
    fn batch_norm_adds_statistics_but_they_are_not_trained() {
        let net = test_net(Arch::Cnn6, 5, true);
        let names: Vec<String> = net.named_tensors().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"blocks.4.bn.running_var".to_owned()));
        assert!(net.parameters().iter().all(|(n, _)| !n.contains("running")));
        assert_eq!(net.parameters().len(), 5 * 4 + 4);
    }

    #[test]
    fn initialisation_depends_on_the_seed_only() {
        let config = ModelConfig {
            arch: Arch::Cnn6,
            num_points: 5,
            batch_norm: false,
        };
        let a = LandmarkNet::new(config, 7, Device::Cpu).unwrap();
        tch::manual_seed(12345);
        let b = LandmarkNet::new(config, 7, Device::Cpu).unwrap();
        let c = LandmarkNet::new(config, 8, Device::Cpu).unwrap();
        let weights = |n: &LandmarkNet| {
            n.named_tensors()
                .into_iter()
                .map(|(_, t)| t)
                .collect::<Vec<_>>()
        };
        assert!(
            weights(&a)
                .iter()
                .zip(weights(&b))
                .all(|(x, y)| x.equal(&y))
        );
        assert!(!weights(&a)[1].equal(&weights(&c)[1]));
        let (name, conv0) = &a.named_tensors()[1];
        assert_eq!(name, "blocks.0.conv.weight");
        let bound = (6.0f64 / 27.0).sqrt();
        assert!(conv0.abs().max().double_value(&[]) <= bound);
    }

    #[test]
    fn wrong_image_size_is_an_error() {
        let net = test_net(Arch::Cnn6, 5, false);
        let images = Tensor::zeros([1, 128, 128, 3], (Kind::Uint8, Device::Cpu));
        assert!(net.predict(&images).is_err());
    }

    #[test]
    fn save_then_load_gives_identical_predictions() {
        tch::manual_seed(3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let net = test_net(Arch::Cnn6, 7, true);
        // Move the batch-norm statistics off their initial values so their saving is tested.
        let warm = Tensor::rand([4, 3, 64, 64], (Kind::Float, Device::Cpu));
        let _ = tch::no_grad(|| net.forward(&warm, true));
        net.save(&path, &BTreeMap::new()).unwrap();
        let loaded = LandmarkNet::load(&path, Device::Cpu).unwrap();
        assert_eq!(loaded.config(), net.config());
        let images = Tensor::randint(256, [3, 64, 64, 3], (Kind::Uint8, Device::Cpu));
        assert!(
            net.predict(&images)
                .unwrap()
                .equal(&loaded.predict(&images).unwrap())
        );
    }

    #[test]
    fn load_rejects_a_shape_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let net = test_net(Arch::Cnn6, 7, false);
        let mut meta = BTreeMap::new();
        meta.insert("num_points".to_owned(), "8".to_owned());
        net.save(&path, &meta).unwrap();
        let err = LandmarkNet::load(&path, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`out.") && err.contains("w.safetensors"),
            "{err}"
        );
    }
}
