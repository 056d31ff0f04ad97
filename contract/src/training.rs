//! Training settings both sides of the process boundary agree on: the loss kinds, the device
//! syntax, the two networks and the crop size each takes, and the [`TrainRequest`] that the
//! `wingflow` CLI writes as JSON and `wingflow-train train --request` reads (the trainer's own
//! flags build the same request, so there is one set of settings, not two argument lists).
//!
//! **Every training setting's default is written once, here**: [`defaults`] (what a request
//! leaves out, and what `wingflow-train train`'s flags default to) and [`default_budget`] (each
//! network's budget in the pipeline's `[train.cnn6]`/`[train.cnn7]`). The two differ on purpose,
//! and say so. The allowed values are the enums' (with their `ALLOWED` texts); with the `clap`
//! feature (the trainer's) [`Schedule`] and [`OptimizerChoice`] are also `clap::ValueEnum`s,
//! so the trainer's flags take these types, not copies.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A setting whose value is not one of those allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{setting} `{value}` is not allowed (allowed: {allowed})")]
pub struct InvalidSetting {
    /// The setting, e.g. `loss`.
    pub setting: &'static str,
    /// The value as given.
    pub value: String,
    /// The allowed values, in words.
    pub allowed: String,
}

impl InvalidSetting {
    fn new(setting: &'static str, value: &str, allowed: &str) -> Self {
        InvalidSetting {
            setting,
            value: value.to_owned(),
            allowed: allowed.to_owned(),
        }
    }
}

/// Which loss, with its parameters (`f(x)` of one coordinate error x, in pixels).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LossKind {
    /// ½x².
    L2,
    /// |x|.
    L1,
    /// ½x² below 1, |x| − ½ above.
    SmoothL1,
    /// Logarithmic near zero (width `w`, curvature `epsilon`), L1 beyond `w`.
    Wing {
        /// Width of the non-linear part, in pixels.
        w: f64,
        /// Curvature of the non-linear part, in pixels.
        epsilon: f64,
    },
}

impl LossKind {
    /// What `loss` may be, in words (for error messages and `--help`).
    pub const ALLOWED: &'static str = "wing, l1, l2, smooth-l1, wing:W,EPSILON";

    /// Wing loss with the paper's w = 10, ε = 2.
    pub const WING: Self = Self::Wing {
        w: 10.0,
        epsilon: 2.0,
    };

    /// The text that parses back to this loss (`wing`, `l1`, `l2`, `smooth-l1`,
    /// `wing:W,EPSILON`): what a flag's default or a settings file shows. (Display is the
    /// descriptive `wing(w=10,epsilon=2)`.)
    pub fn spelling(self) -> String {
        if self == Self::WING {
            return "wing".to_owned();
        }
        match self {
            Self::L2 => "l2".to_owned(),
            Self::L1 => "l1".to_owned(),
            Self::SmoothL1 => "smooth-l1".to_owned(),
            Self::Wing { w, epsilon } => format!("wing:{w},{epsilon}"),
        }
    }

    /// The loss of one coordinate error `x` (pixels): the reference the trainer's tensor
    /// version follows.
    pub fn value(self, x: f64) -> f64 {
        let a = x.abs();
        match self {
            Self::L2 => 0.5 * x * x,
            Self::L1 => a,
            Self::SmoothL1 => {
                if a < 1.0 {
                    0.5 * x * x
                } else {
                    a - 0.5
                }
            }
            Self::Wing { w, epsilon } => {
                if a < w {
                    w * (a / epsilon).ln_1p()
                } else {
                    a - wing_c(w, epsilon)
                }
            }
        }
    }
}

/// Wing's offset C = w − w·ln(1 + w/ε), which makes it continuous at |x| = w.
pub fn wing_c(w: f64, epsilon: f64) -> f64 {
    w - w * (w / epsilon).ln_1p()
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::L2 => f.write_str("l2"),
            Self::L1 => f.write_str("l1"),
            Self::SmoothL1 => f.write_str("smooth-l1"),
            Self::Wing { w, epsilon } => write!(f, "wing(w={w},epsilon={epsilon})"),
        }
    }
}

impl FromStr for LossKind {
    type Err = InvalidSetting;
    /// `l2`, `l1`, `smooth-l1`, `wing` (w = 10, ε = 2) or `wing:W,EPSILON` (both > 0).
    fn from_str(s: &str) -> Result<Self, InvalidSetting> {
        let bad = || InvalidSetting::new("loss", s, Self::ALLOWED);
        match s {
            "l2" => Ok(Self::L2),
            "l1" => Ok(Self::L1),
            "smooth-l1" | "smooth_l1" => Ok(Self::SmoothL1),
            "wing" => Ok(Self::WING),
            _ => {
                let params = s.strip_prefix("wing:").ok_or_else(bad)?;
                let (w, e) = params.split_once(',').ok_or_else(bad)?;
                let w: f64 = w.trim().parse().map_err(|_| bad())?;
                let epsilon: f64 = e.trim().parse().map_err(|_| bad())?;
                if !(w > 0.0 && epsilon > 0.0) {
                    return Err(InvalidSetting::new(
                        "loss",
                        s,
                        "wing:W,EPSILON with W > 0 and EPSILON > 0",
                    ));
                }
                Ok(Self::Wing { w, epsilon })
            }
        }
    }
}

/// Where the trainer runs: `auto` (CUDA when available), `cpu`, `cuda` (device 0) or `cuda:N`.
///
/// The syntax only: whether the device exists is for the trainer to find out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// CUDA device 0 when libtorch sees one, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// A CUDA device; `None` for plain `cuda` (device 0).
    Cuda(Option<usize>),
}

impl DeviceSpec {
    /// What `device` may be, in words.
    pub const ALLOWED: &'static str = "auto, cpu, cuda, cuda:N";
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(None) => f.write_str("cuda"),
            Self::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = InvalidSetting;
    fn from_str(s: &str) -> Result<Self, InvalidSetting> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(None)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(|n| Self::Cuda(Some(n)))
                .ok_or_else(|| InvalidSetting::new("device", s, Self::ALLOWED)),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = InvalidSetting;
    fn try_from(s: String) -> Result<Self, InvalidSetting> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

/// A setting as a person wrote it in a settings file (`[train] loss`, `[train] device`), and
/// its value, parsed once, when the file is read.
///
/// It serialises as the text, byte for byte: a record made from the settings (the training
/// stages' parameters in `wingflow.lock`) keeps the spelling written (`smooth_l1`,
/// `wing:5.0,1`), which re-spelling the value would change. It deserialises from the text
/// whatever it holds: a text that does not parse keeps its error, for the loader to report
/// with the file, line and key (which a deserialiser does not know), beside the file's other
/// problems.
#[derive(Debug, Clone, PartialEq)]
pub struct Spelled<T> {
    text: String,
    value: Result<T, InvalidSetting>,
}

impl<T: FromStr<Err = InvalidSetting> + Clone> Spelled<T> {
    /// `text` and what it parses to.
    pub fn parse(text: impl Into<String>) -> Self {
        let text = text.into();
        let value = text.parse();
        Spelled { text, value }
    }

    /// The text as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value, or why the text is not one.
    pub fn value(&self) -> Result<T, InvalidSetting> {
        self.value.clone()
    }
}

impl<T> Serialize for Spelled<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de, T: FromStr<Err = InvalidSetting> + Clone> Deserialize<'de> for Spelled<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::parse)
    }
}

impl<T> fmt::Display for Spelled<T> {
    /// The text as written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Which network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// CNN-6: 64×64 input, five conv blocks; trained on crop level 1 (the face box).
    Cnn6,
    /// CNN-7: 128×128 input, six conv blocks; trained on crop level 2 (the box CNN-6's
    /// landmarks give).
    Cnn7,
}

impl Arch {
    /// What an architecture may be, in words.
    pub const ALLOWED: &'static str = "cnn6, cnn7";

    /// The network of a crop level (1 → CNN-6, 2 → CNN-7).
    pub fn for_level(level: u8) -> Result<Self, InvalidSetting> {
        match level {
            1 => Ok(Self::Cnn6),
            2 => Ok(Self::Cnn7),
            other => Err(InvalidSetting::new(
                "crop level",
                &other.to_string(),
                "1, 2",
            )),
        }
    }

    /// The crop level the network trains on (CNN-6 → 1, CNN-7 → 2): [`Arch::for_level`]'s
    /// inverse.
    pub fn level(self) -> u8 {
        match self {
            Self::Cnn6 => 1,
            Self::Cnn7 => 2,
        }
    }

    /// The paper's name: `CNN-6`, `CNN-7`.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Cnn6 => "CNN-6",
            Self::Cnn7 => "CNN-7",
        }
    }

    /// The side S of the square crop the network takes, in pixels.
    pub fn input_size(self) -> u32 {
        match self {
            Self::Cnn6 => 64,
            Self::Cnn7 => 128,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cnn6 => "cnn6",
            Self::Cnn7 => "cnn7",
        })
    }
}

impl FromStr for Arch {
    type Err = InvalidSetting;
    fn from_str(s: &str) -> Result<Self, InvalidSetting> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "cnn6" => Ok(Self::Cnn6),
            "cnn7" => Ok(Self::Cnn7),
            _ => Err(InvalidSetting::new("architecture", s, Self::ALLOWED)),
        }
    }
}

/// The learning-rate schedule (its parameters are the request's `final_lr`, `step_every`,
/// `gamma`). Spelt `cosine`, `step`, `constant` in JSON, TOML and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Cosine decay from `lr` to `final_lr`.
    Cosine,
    /// `lr` × `gamma` every `step_every` steps.
    Step,
    /// `lr` throughout.
    Constant,
}

impl Schedule {
    /// Every schedule.
    pub const ALL: [Self; 3] = [Self::Cosine, Self::Step, Self::Constant];

    /// The schedule's name, as serde and the command line spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cosine => "cosine",
            Self::Step => "step",
            Self::Constant => "constant",
        }
    }
}

/// The optimiser. Spelt `adam`, `sgd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerChoice {
    /// Adam (β = 0.9, 0.999; ε = 1e-8).
    Adam,
    /// SGD with momentum.
    Sgd,
}

/// The default of every training setting, written once: what a [`TrainRequest`] leaves out
/// ([`TrainRequest::default`]), what `wingflow-train train`'s flags default to, and the
/// trainer's `TrainConfig::new`. The pipeline's per-network budgets are [`default_budget`]'s
/// (they share the batch size and the rates, not the length).
///
/// Changing one changes what existing settings train (and, for those the pipeline uses, every
/// output root's training stages): `tests::defaults_are_the_values_runs_were_trained_with` pins
/// them.
pub mod defaults {
    use super::{Arch, DeviceSpec, LossKind, OptimizerChoice, Schedule};

    /// The network (crop level 1).
    pub const ARCH: Arch = Arch::Cnn6;
    /// Wing loss, w = 10, ε = 2.
    pub const LOSS: LossKind = LossKind::WING;
    /// Passes over the training set of a run given no `steps` (`wingflow-train train` without
    /// `--steps`). The pipeline always gives steps ([`PIPELINE_STEPS`]).
    pub const EPOCHS: u64 = 30;
    /// Optimiser steps of each network in the pipeline (`[train.cnnN] steps`): a fixed budget,
    /// where the trainer's own default is [`EPOCHS`] passes.
    pub const PIPELINE_STEPS: u64 = 2000;
    /// Samples per batch.
    pub const BATCH_SIZE: usize = 32;
    /// Initial learning rate (CNN-6's in the pipeline).
    pub const LR: f64 = 1e-3;
    /// CNN-7's initial learning rate in the pipeline: at [`LR`] CNN-7 diverges or stalls near the
    /// mean shape (bench/README-losses.md, run 3).
    pub const CNN7_LR: f64 = 3e-4;
    /// Learning-rate schedule.
    pub const SCHEDULE: Schedule = Schedule::Cosine;
    /// Final learning rate of the cosine schedule.
    pub const FINAL_LR: f64 = 1e-5;
    /// Steps between decays of the step schedule.
    pub const STEP_EVERY: u64 = 10_000;
    /// Decay factor of the step schedule.
    pub const GAMMA: f64 = 0.1;
    /// Optimiser.
    pub const OPTIMIZER: OptimizerChoice = OptimizerChoice::Adam;
    /// SGD momentum.
    pub const MOMENTUM: f64 = 0.9;
    /// L2 weight decay.
    pub const WEIGHT_DECAY: f64 = 0.0;
    /// Seed of the initialisation and the sample order (the pipeline gives the run's seed).
    pub const SEED: u64 = 0;
    /// Shuffle buffer, in samples.
    pub const SHUFFLE_BUFFER: usize = 65_536;
    /// Print progress every N steps.
    pub const LOG_EVERY: u64 = 50;
    /// Validate every N steps (0: only at the end).
    pub const EVAL_EVERY: u64 = 0;
    /// Write the `last` checkpoint every N steps (0: only at the end). The pipeline sets its
    /// own, about 20 a run.
    pub const CHECKPOINT_EVERY: u64 = 1000;
    /// Device.
    pub const DEVICE: DeviceSpec = DeviceSpec::Auto;
}

/// A network's training budget in the pipeline (`[train.cnn6]`, `[train.cnn7]` of
/// `wingflow.toml`), every value filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Optimiser steps.
    pub steps: u64,
    /// Samples per batch.
    pub batch_size: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// Final learning rate.
    pub final_lr: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// L2 weight decay.
    pub weight_decay: f64,
}

/// The pipeline's default budget of a network: [`defaults::PIPELINE_STEPS`] steps of
/// [`defaults::BATCH_SIZE`], learning rate [`defaults::LR`] (CNN-6) or [`defaults::CNN7_LR`]
/// (CNN-7), [`defaults::SCHEDULE`] to [`defaults::FINAL_LR`], weight decay
/// [`defaults::WEIGHT_DECAY`].
pub fn default_budget(arch: Arch) -> Budget {
    Budget {
        steps: defaults::PIPELINE_STEPS,
        batch_size: defaults::BATCH_SIZE,
        lr: match arch {
            Arch::Cnn6 => defaults::LR,
            Arch::Cnn7 => defaults::CNN7_LR,
        },
        final_lr: defaults::FINAL_LR,
        schedule: defaults::SCHEDULE,
        weight_decay: defaults::WEIGHT_DECAY,
    }
}

/// One training run: what `wingflow` asks of `wingflow-train train`.
///
/// Written as JSON by the CLI's train stages and its loss study, read by
/// `wingflow-train train --request FILE`; the trainer's flags build the same struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainRequest {
    /// A shard set (a directory with index.json), or a directory holding `train/` and `val/`
    /// (not needed with `resume`: the run's record names its sets).
    pub shards: Option<PathBuf>,
    /// Output directory (checkpoints, train_log.csv).
    pub out: PathBuf,
    /// The network.
    pub arch: Arch,
    /// Loss.
    pub loss: LossKind,
    /// Validation shard set (default: `val/` beside `train/` when `shards` is their parent).
    pub val: Option<PathBuf>,
    /// Train without validation even when a `val/` set exists.
    pub no_val: bool,
    /// Passes over the training set (ignored when `steps` is given).
    pub epochs: u64,
    /// Optimiser steps (overrides `epochs`).
    pub steps: Option<u64>,
    /// Samples per batch.
    pub batch_size: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Final learning rate of the cosine schedule.
    pub final_lr: f64,
    /// Steps between decays of the step schedule.
    pub step_every: u64,
    /// Decay factor of the step schedule.
    pub gamma: f64,
    /// Optimiser.
    pub optimizer: OptimizerChoice,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Batch normalisation after each convolution (off in the paper).
    pub batch_norm: bool,
    /// Seed of the initialisation and the sample order.
    pub seed: u64,
    /// Shuffle buffer, in samples.
    pub shuffle_buffer: usize,
    /// Print progress every N steps.
    pub log_every: u64,
    /// Validate every N steps (0: only at the end).
    pub eval_every: u64,
    /// Write the `last` checkpoint every N steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Validation NME normaliser, resolved against the shards' scheme (default: the scheme's).
    pub normaliser: Option<String>,
    /// Device.
    pub device: DeviceSpec,
    /// Continue the run in `out` from its `last` checkpoint. Its stored settings win, except
    /// that `steps`, when given, sets a new total length (the schedule stretches to it).
    pub resume: bool,
}

impl Default for TrainRequest {
    /// Every setting at its [`defaults`] value; no shards, output folder, validation set or
    /// normaliser.
    fn default() -> Self {
        TrainRequest {
            shards: None,
            out: PathBuf::new(),
            arch: defaults::ARCH,
            loss: defaults::LOSS,
            val: None,
            no_val: false,
            epochs: defaults::EPOCHS,
            steps: None,
            batch_size: defaults::BATCH_SIZE,
            lr: defaults::LR,
            schedule: defaults::SCHEDULE,
            final_lr: defaults::FINAL_LR,
            step_every: defaults::STEP_EVERY,
            gamma: defaults::GAMMA,
            optimizer: defaults::OPTIMIZER,
            momentum: defaults::MOMENTUM,
            weight_decay: defaults::WEIGHT_DECAY,
            batch_norm: false,
            seed: defaults::SEED,
            shuffle_buffer: defaults::SHUFFLE_BUFFER,
            log_every: defaults::LOG_EVERY,
            eval_every: defaults::EVAL_EVERY,
            checkpoint_every: defaults::CHECKPOINT_EVERY,
            normaliser: None,
            device: defaults::DEVICE,
            resume: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_parse_and_refuse_with_the_allowed_values() {
        assert_eq!("wing".parse::<LossKind>().unwrap(), LossKind::WING);
        assert_eq!("smooth-l1".parse::<LossKind>().unwrap(), LossKind::SmoothL1);
        assert_eq!(
            "wing:5,1".parse::<LossKind>().unwrap(),
            LossKind::Wing {
                w: 5.0,
                epsilon: 1.0
            }
        );
        assert!("wing:0,1".parse::<LossKind>().is_err());
        let err = "wingg".parse::<LossKind>().unwrap_err().to_string();
        assert!(
            err.contains("`wingg`") && err.contains(LossKind::ALLOWED),
            "{err}"
        );
    }

    #[test]
    fn losses_spell_back_to_themselves() {
        for text in ["wing", "l1", "l2", "smooth-l1", "wing:5,1", "wing:0.5,2.25"] {
            let loss: LossKind = text.parse().unwrap();
            assert_eq!(loss.spelling(), text);
            assert_eq!(loss.spelling().parse::<LossKind>().unwrap(), loss);
        }
        assert_eq!(
            LossKind::Wing {
                w: 10.0,
                epsilon: 2.0
            }
            .spelling(),
            "wing"
        );
    }

    #[test]
    fn a_spelled_setting_keeps_its_text_and_its_error() {
        let loss: Spelled<LossKind> = serde_json::from_str(r#""smooth_l1""#).unwrap();
        assert_eq!(loss.value().unwrap(), LossKind::SmoothL1);
        assert_eq!(serde_json::to_string(&loss).unwrap(), r#""smooth_l1""#);
        let loss: Spelled<LossKind> = serde_json::from_str(r#""wing:5.0,1""#).unwrap();
        assert_eq!(loss.to_string(), "wing:5.0,1");
        let bad: Spelled<DeviceSpec> = serde_json::from_str(r#""gpu""#).unwrap();
        let err = bad.value().unwrap_err();
        assert_eq!(
            (err.value.as_str(), err.allowed.as_str()),
            ("gpu", DeviceSpec::ALLOWED)
        );
        assert_eq!(serde_json::to_string(&bad).unwrap(), r#""gpu""#);
    }

    #[test]
    fn schedules_are_named_as_serde_spells_them() {
        for schedule in Schedule::ALL {
            assert_eq!(
                serde_json::to_string(&schedule).unwrap(),
                format!("\"{}\"", schedule.name())
            );
        }
    }

    /// The defaults existing settings were trained with: a change here changes what every
    /// `wingflow-train train` without the flag trains, and (for the pipeline's budget) makes
    /// every output root's training stages stale. Change them on purpose only.
    #[test]
    fn defaults_are_the_values_runs_were_trained_with() {
        assert_eq!(
            serde_json::to_value(TrainRequest::default()).unwrap(),
            serde_json::json!({
                "shards": null, "out": "", "arch": "cnn6", "loss": {"kind": "wing", "w": 10.0,
                "epsilon": 2.0}, "val": null, "no_val": false, "epochs": 30, "steps": null,
                "batch_size": 32, "lr": 1e-3, "schedule": "cosine", "final_lr": 1e-5,
                "step_every": 10_000, "gamma": 0.1, "optimizer": "adam", "momentum": 0.9,
                "weight_decay": 0.0, "batch_norm": false, "seed": 0, "shuffle_buffer": 65_536,
                "log_every": 50, "eval_every": 0, "checkpoint_every": 1000, "normaliser": null,
                "device": "auto", "resume": false
            })
        );
        for (arch, lr) in [(Arch::Cnn6, 1e-3), (Arch::Cnn7, 3e-4)] {
            assert_eq!(
                default_budget(arch),
                Budget {
                    steps: 2000,
                    batch_size: 32,
                    lr,
                    final_lr: 1e-5,
                    schedule: Schedule::Cosine,
                    weight_decay: 0.0
                }
            );
        }
    }

    #[test]
    fn levels_and_networks_are_inverse() {
        for arch in [Arch::Cnn6, Arch::Cnn7] {
            assert_eq!(Arch::for_level(arch.level()).unwrap(), arch);
        }
    }

    #[test]
    fn wing_is_continuous_at_w() {
        let w = LossKind::WING;
        let (below, above) = (w.value(10.0 - 1e-9), w.value(10.0 + 1e-9));
        assert!((below - above).abs() < 1e-8, "{below} vs {above}");
    }

    #[test]
    fn devices_round_trip_through_their_text() {
        for text in ["auto", "cpu", "cuda", "cuda:3"] {
            let d: DeviceSpec = text.parse().unwrap();
            assert_eq!(d.to_string(), text);
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<DeviceSpec>(&json).unwrap(), d);
        }
        for bad in ["gpu", "cuda:", "cuda:x", "CPU"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains(DeviceSpec::ALLOWED), "{err}");
        }
    }

    #[test]
    fn networks_take_their_crop_sizes() {
        assert_eq!(Arch::for_level(1).unwrap().input_size(), 64);
        assert_eq!(Arch::for_level(2).unwrap().input_size(), 128);
        assert!(Arch::for_level(3).is_err());
        assert_eq!("CNN-7".parse::<Arch>().unwrap(), Arch::Cnn7);
    }

    #[test]
    fn a_request_round_trips_and_refuses_unknown_keys() {
        let request = TrainRequest {
            shards: Some("/s".into()),
            out: "/o".into(),
            arch: Arch::Cnn7,
            loss: "wing:5,1".parse().unwrap(),
            steps: Some(200),
            normaliser: Some("inter-pupil".into()),
            device: DeviceSpec::Cuda(Some(1)),
            ..TrainRequest::default()
        };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(
            serde_json::from_str::<TrainRequest>(&json).unwrap(),
            request
        );
        let err = serde_json::from_str::<TrainRequest>(r#"{"stepz": 3}"#).unwrap_err();
        assert!(err.to_string().contains("stepz"), "{err}");
    }
}
