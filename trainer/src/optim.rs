//! Adam and SGD with momentum over tch tensors, with state that checkpoints can hold (tch's
//! built-in optimisers cannot save their moments), and the learning-rate schedules.

use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::fmt;

use contract::training::{OptimizerChoice, Schedule, defaults};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::{Result, TorchContext, TrainerError};

/// Optimiser and its hyper-parameters: the contract's [`OptimizerChoice`] with its values,
/// built from it by [`OptimizerKind::new`] alone. Stored in this tagged form in run records
/// (`run.json`, checkpoints), which resumes read back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// Adam (Kingma & Ba) with bias correction; `weight_decay` adds `wd·p` to the gradient.
    Adam {
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator guard.
        eps: f64,
        /// L2 penalty coefficient.
        weight_decay: f64,
    },
    /// SGD with (heavy-ball) momentum: `buf = μ·buf + g; p -= lr·buf`.
    Sgd {
        /// Momentum μ (0 disables it).
        momentum: f64,
        /// L2 penalty coefficient.
        weight_decay: f64,
    },
}

impl OptimizerKind {
    /// The L2 penalty coefficient: `wd·p` is added to every gradient before the update.
    pub fn weight_decay(self) -> f64 {
        match self {
            Self::Adam { weight_decay, .. } | Self::Sgd { weight_decay, .. } => weight_decay,
        }
    }

    /// The optimiser `choice` names, with SGD's `momentum` (Adam has none) and `weight_decay`.
    pub fn new(choice: OptimizerChoice, momentum: f64, weight_decay: f64) -> Self {
        match choice {
            OptimizerChoice::Adam => Self::adam(weight_decay),
            OptimizerChoice::Sgd => Self::Sgd {
                momentum,
                weight_decay,
            },
        }
    }

    /// Which optimiser this is.
    pub fn choice(self) -> OptimizerChoice {
        match self {
            Self::Adam { .. } => OptimizerChoice::Adam,
            Self::Sgd { .. } => OptimizerChoice::Sgd,
        }
    }

    /// Adam with the usual β1 = 0.9, β2 = 0.999, ε = 1e-8.
    const fn adam(weight_decay: f64) -> Self {
        Self::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    /// Adam with the usual β1 = 0.9, β2 = 0.999, ε = 1e-8, no weight decay.
    pub const ADAM: Self = Self::adam(0.0);
    /// SGD with the default momentum (0.9), no weight decay.
    pub const SGD: Self = Self::Sgd {
        momentum: defaults::MOMENTUM,
        weight_decay: 0.0,
    };

    fn slot_names(self) -> &'static [&'static str] {
        match self {
            Self::Adam { .. } => &["adam.m", "adam.v"],
            Self::Sgd { .. } => &["sgd.momentum"],
        }
    }
}

/// An optimiser bound to a list of named parameters.
#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    steps: u64,
    params: Vec<(String, Tensor)>,
    /// Per parameter, one state tensor per entry of `kind.slot_names()`.
    slots: Vec<Vec<Tensor>>,
}

impl Optimizer {
    /// Bind to `params` (shallow handles to the model's variables), with zeroed state.
    pub fn new(kind: OptimizerKind, params: Vec<(String, Tensor)>) -> Self {
        let slots = params
            .iter()
            .map(|(_, p)| {
                kind.slot_names()
                    .iter()
                    .map(|_| p.zeros_like().detach())
                    .collect()
            })
            .collect();
        Self {
            kind,
            steps: 0,
            params,
            slots,
        }
    }

    /// The optimiser's kind and hyper-parameters.
    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// Updates applied so far (Adam's bias correction depends on it).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Clear the gradients of every parameter.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Apply one update with learning rate `lr` from the gradients accumulated by `backward`.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let t = self.steps as i32;
        let kind = self.kind;
        tch::no_grad(|| {
            for ((_, p), slots) in self.params.iter_mut().zip(&mut self.slots) {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let weight_decay = kind.weight_decay();
                let g = if weight_decay > 0.0 {
                    grad + p.multiply_scalar(weight_decay)
                } else {
                    grad
                };
                match kind {
                    OptimizerKind::Adam {
                        beta1, beta2, eps, ..
                    } => {
                        let [m, v] = slots.as_mut_slice() else {
                            unreachable!("Adam has two slots")
                        };
                        // PyTorch's single-tensor Adam, in place: two temporaries per parameter
                        // ((1−β2)·g and the denominator) instead of one per operation.
                        //   m ← m + (1−β1)(g − m);  v ← β2·v + (1−β2)·g²
                        //   p ← p − lr/(1−β1ᵗ) · m / (√v / √(1−β2ᵗ) + ε)
                        let _ = m.lerp_(&g, 1.0 - beta1);
                        let _ = v.g_mul_scalar_(beta2);
                        let _ = v.addcmul_(&g, &g.multiply_scalar(1.0 - beta2));
                        let step_size = lr / (1.0 - beta1.powi(t));
                        let mut denom = v.sqrt();
                        let _ = denom.g_div_scalar_((1.0 - beta2.powi(t)).sqrt());
                        let _ = denom.g_add_scalar_(eps);
                        // p + m / (denom · (−1/step)) = p − step · m / denom.
                        let _ = denom.g_mul_scalar_(-1.0 / step_size);
                        let _ = p.addcdiv_(m, &denom);
                    }
                    OptimizerKind::Sgd { momentum, .. } => {
                        let [buf] = slots.as_mut_slice() else {
                            unreachable!("SGD has one slot")
                        };
                        let _ = buf.g_mul_scalar_(momentum);
                        let _ = buf.g_add_(&g);
                        let _ = p.g_sub_(&buf.multiply_scalar(lr));
                    }
                }
            }
        });
    }

    /// The state as named tensors (`adam.m.<param>`, `adam.v.<param>` or `sgd.momentum.<param>`).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let names = self.kind.slot_names();
        self.params
            .iter()
            .zip(&self.slots)
            .flat_map(|((name, _), slots)| {
                names
                    .iter()
                    .zip(slots)
                    .map(move |(slot, t)| (format!("{slot}.{name}"), t.shallow_clone()))
            })
            .collect()
    }

    /// Restore state saved by [`Optimizer::state_tensors`] after `steps` updates. Every slot of
    /// every parameter must be present with the parameter's shape.
    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>, steps: u64) -> Result<()> {
        let names = self.kind.slot_names();
        for ((name, p), slots) in self.params.iter().zip(&mut self.slots) {
            for (slot, target) in names.iter().zip(slots.iter_mut()) {
                let key = format!("{slot}.{name}");
                let source = state.get(&key).ok_or_else(|| {
                    TrainerError::Config(format!("optimiser state lacks `{key}`"))
                })?;
                if source.size() != p.size() {
                    return Err(TrainerError::Config(format!(
                        "optimiser state `{key}` has shape {:?}, the parameter {:?}",
                        source.size(),
                        p.size()
                    )));
                }
                tch::no_grad(|| target.f_copy_(source)).torch("restoring optimiser state")?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// How the learning rate moves from its initial value over the run: the contract's
/// [`Schedule`] with its parameters, built from it by [`LrSchedule::new`] alone. Stored in
/// this tagged form in run records (`run.json`, checkpoints), which resumes read back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LrSchedule {
    /// The initial rate throughout.
    Constant,
    /// Half-cosine from the initial rate (step 0) to `final_lr` (last step).
    Cosine {
        /// Rate at the end of the run.
        final_lr: f64,
    },
    /// Multiply by `gamma` every `every` steps.
    Step {
        /// Steps between decays.
        every: u64,
        /// Decay factor.
        gamma: f64,
    },
}

impl LrSchedule {
    /// `schedule` with its parameters: the cosine's `final_lr`, the step schedule's
    /// `step_every` and `gamma` (each ignored by the others).
    pub fn new(schedule: Schedule, final_lr: f64, step_every: u64, gamma: f64) -> Self {
        match schedule {
            Schedule::Cosine => Self::Cosine { final_lr },
            Schedule::Step => Self::Step {
                every: step_every,
                gamma,
            },
            Schedule::Constant => Self::Constant,
        }
    }

    /// Which schedule this is.
    pub fn schedule(self) -> Schedule {
        match self {
            Self::Constant => Schedule::Constant,
            Self::Cosine { .. } => Schedule::Cosine,
            Self::Step { .. } => Schedule::Step,
        }
    }

    /// The rate for update `step` (0-based) of `total`, starting from `initial`.
    pub fn lr_at(self, initial: f64, step: u64, total: u64) -> f64 {
        match self {
            Self::Constant => initial,
            Self::Cosine { final_lr } => {
                let progress = if total <= 1 {
                    1.0
                } else {
                    (step as f64 / (total - 1) as f64).min(1.0)
                };
                final_lr + 0.5 * (initial - final_lr) * (1.0 + (PI * progress).cos())
            }
            Self::Step { every, gamma } => initial * gamma.powi((step / every.max(1)) as i32),
        }
    }
}

impl fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Constant => f.write_str("constant"),
            Self::Cosine { final_lr } => write!(f, "cosine to {final_lr:e}"),
            Self::Step { every, gamma } => write!(f, "×{gamma} every {every} steps"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Minimise Σ (p − 3)² from p = 0.
    fn run(kind: OptimizerKind, lr: f64, steps: usize) -> f64 {
        let p = Tensor::zeros([4], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let mut opt = Optimizer::new(kind, vec![("p".into(), p.shallow_clone())]);
        for _ in 0..steps {
            opt.zero_grad();
            (&p - 3.0).square().sum(Kind::Double).backward();
            opt.step(lr);
        }
        p.mean(Kind::Double).double_value(&[])
    }

    #[test]
    fn first_adam_step_moves_each_parameter_by_lr() {
        // With bias correction, m̂/√v̂ = g/|g| on step 1, whatever the gradient's scale.
        let p = Tensor::from_slice(&[1.0f64, -2.0]).set_requires_grad(true);
        let mut opt = Optimizer::new(OptimizerKind::ADAM, vec![("p".into(), p.shallow_clone())]);
        (&p * Tensor::from_slice(&[100.0f64, -0.01]))
            .sum(Kind::Double)
            .backward();
        opt.step(0.1);
        let after = Vec::<f64>::try_from(&p.detach()).unwrap();
        assert!(
            (after[0] - 0.9).abs() < 1e-6 && (after[1] + 1.9).abs() < 1e-6,
            "{after:?}"
        );
    }

    #[test]
    fn both_optimisers_converge_on_a_quadratic() {
        assert!((run(OptimizerKind::ADAM, 0.1, 300) - 3.0).abs() < 1e-2);
        assert!((run(OptimizerKind::SGD, 0.02, 500) - 3.0).abs() < 1e-6);
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let make = || Tensor::from_slice(&[0.5f64, -1.0, 2.0]).set_requires_grad(true);
        let loss = |p: &Tensor| (p * p * p).sum(Kind::Double);
        let (a, b) = (make(), make());
        let mut opt_a = Optimizer::new(OptimizerKind::ADAM, vec![("w".into(), a.shallow_clone())]);
        for _ in 0..3 {
            opt_a.zero_grad();
            loss(&a).backward();
            opt_a.step(0.01);
        }
        tch::no_grad(|| b.shallow_clone().copy_(&a));
        let mut opt_b = Optimizer::new(OptimizerKind::ADAM, vec![("w".into(), b.shallow_clone())]);
        let state: BTreeMap<String, Tensor> = opt_a
            .state_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        assert!(state.contains_key("adam.m.w") && state.contains_key("adam.v.w"));
        opt_b.load_state(&state, opt_a.steps()).unwrap();
        for (p, opt) in [(&a, &mut opt_a), (&b, &mut opt_b)] {
            opt.zero_grad();
            loss(p).backward();
            opt.step(0.01);
        }
        assert!(a.equal(&b));
    }

    #[test]
    fn kinds_are_built_from_the_contract_choices_and_name_them() {
        for schedule in Schedule::ALL {
            assert_eq!(
                LrSchedule::new(schedule, 1e-5, 10, 0.5).schedule(),
                schedule
            );
        }
        for choice in [OptimizerChoice::Adam, OptimizerChoice::Sgd] {
            assert_eq!(OptimizerKind::new(choice, 0.9, 0.0).choice(), choice);
        }
        assert_eq!(
            OptimizerKind::new(OptimizerChoice::Adam, 0.5, 0.0),
            OptimizerKind::ADAM
        );
    }

    #[test]
    fn schedules() {
        let cos = LrSchedule::Cosine { final_lr: 1e-5 };
        assert_eq!(cos.lr_at(1e-3, 0, 101), 1e-3);
        assert!((cos.lr_at(1e-3, 100, 101) - 1e-5).abs() < 1e-15);
        assert!((cos.lr_at(1e-3, 50, 101) - (1e-5 + 0.5 * (1e-3 - 1e-5))).abs() < 1e-15);
        let step = LrSchedule::Step {
            every: 10,
            gamma: 0.1,
        };
        assert_eq!(step.lr_at(1.0, 9, 100), 1.0);
        assert!((step.lr_at(1.0, 25, 100) - 0.01).abs() < 1e-15);
    }
}
