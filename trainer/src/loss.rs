//! Landmark losses on x = prediction − target, in pixels of the network input, summed over the
//! 2L coordinates of the visible points and averaged over the batch:
//!
//! | loss | f(x) |
//! |---|---|
//! | L2 | ½x² |
//! | L1 | \|x\| |
//! | smooth L1 | ½x² if \|x\| < 1, else \|x\| − ½ |
//! | Wing | w·ln(1 + \|x\|/ε) if \|x\| < w, else \|x\| − C, C = w − w·ln(1 + w/ε) |
//!
//! Wing's defaults are the paper's w = 10, ε = 2; C makes it continuous at \|x\| = w.

use tch::{Kind, Tensor};

pub use contract::training::LossKind;
use contract::training::wing_c;

/// The tensor forms of a [`LossKind`] (the scalar form, [`LossKind::value`], is the reference).
pub trait TensorLoss {
    /// Element-wise loss of a tensor of coordinate errors (pixels), differentiable.
    fn elementwise(self, x: &Tensor) -> Tensor;

    /// The batch loss: `pred` and `target` [B,L,2] in pixels, `visible` [B,L] (any kind;
    /// non-zero means the point counts). Points whose target is not finite never count, so a
    /// NaN for an unannotated point cannot leak into the loss or its gradient.
    fn batch_loss(self, pred: &Tensor, target: &Tensor, visible: &Tensor) -> Tensor;
}

impl TensorLoss for LossKind {
    fn elementwise(self, x: &Tensor) -> Tensor {
        match self {
            Self::L2 => x.square().multiply_scalar(0.5),
            Self::L1 => x.abs(),
            Self::SmoothL1 => {
                let a = x.abs();
                let quadratic = x.square().multiply_scalar(0.5);
                quadratic.where_self(&a.lt(1.0), &a.g_sub_scalar(0.5))
            }
            Self::Wing { w, epsilon } => {
                let a = x.abs();
                let log_part = a.divide_scalar(epsilon).log1p().multiply_scalar(w);
                log_part.where_self(&a.lt(w), &a.g_sub_scalar(wing_c(w, epsilon)))
            }
        }
    }

    fn batch_loss(self, pred: &Tensor, target: &Tensor, visible: &Tensor) -> Tensor {
        let finite = target.isfinite().all_dim(-1, false);
        let mask = visible
            .ne(0)
            .logical_and(&finite)
            .unsqueeze(-1)
            .expand_as(pred);
        let safe_target = target.nan_to_num(0.0, 0.0, 0.0);
        let diff = pred - safe_target;
        let zeros = diff.zeros_like();
        let per_coordinate = self.elementwise(&diff.where_self(&mask, &zeros));
        let batch = pred.size().first().copied().unwrap_or(1).max(1);
        per_coordinate.sum(Kind::Float).divide_scalar(batch as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [LossKind; 4] = [
        LossKind::L2,
        LossKind::L1,
        LossKind::SmoothL1,
        LossKind::WING,
    ];

    fn value_and_grad(kind: LossKind, x: f64) -> (f64, f64) {
        let t = Tensor::from_slice(&[x]).set_requires_grad(true);
        let y = kind.elementwise(&t).sum(Kind::Double);
        y.backward();
        (y.double_value(&[]), t.grad().double_value(&[0]))
    }

    #[test]
    fn closed_form_values_and_gradients() {
        let ln = f64::ln;
        let c = 10.0 - 10.0 * ln(6.0);
        // (loss, x, value, derivative)
        let cases = [
            (LossKind::L2, 3.0, 4.5, 3.0),
            (LossKind::L2, -0.5, 0.125, -0.5),
            (LossKind::L1, -2.5, 2.5, -1.0),
            (LossKind::L1, 0.25, 0.25, 1.0),
            (LossKind::SmoothL1, 0.5, 0.125, 0.5),
            (LossKind::SmoothL1, -0.5, 0.125, -0.5),
            (LossKind::SmoothL1, 3.0, 2.5, 1.0),
            (LossKind::SmoothL1, -3.0, 2.5, -1.0),
            // Wing inside: 10·ln(1 + |x|/2), derivative 10/(2 + |x|)·sign(x).
            (LossKind::WING, 2.0, 10.0 * ln(2.0), 2.5),
            (LossKind::WING, -6.0, 10.0 * ln(4.0), -1.25),
            // Wing outside: |x| − C, derivative sign(x).
            (LossKind::WING, 15.0, 15.0 - c, 1.0),
            (LossKind::WING, -12.0, 12.0 - c, -1.0),
        ];
        for (kind, x, value, derivative) in cases {
            assert!(
                (kind.value(x) - value).abs() < 1e-12,
                "{kind} f({x}) = {} ≠ {value}",
                kind.value(x)
            );
            let (v, g) = value_and_grad(kind, x);
            assert!(
                (v - value).abs() < 1e-9,
                "{kind} tensor f({x}) = {v} ≠ {value}"
            );
            assert!(
                (g - derivative).abs() < 1e-9,
                "{kind} f'({x}) = {g} ≠ {derivative}"
            );
        }
    }

    #[test]
    fn wing_is_continuous_at_w_and_smooth_l1_at_one() {
        let w = LossKind::WING;
        let (below, above) = (w.value(10.0 - 1e-9), w.value(10.0 + 1e-9));
        assert!((below - above).abs() < 1e-8, "{below} vs {above}");
        assert!((w.value(10.0) - 10.0 * 6f64.ln()).abs() < 1e-12);
        let s = LossKind::SmoothL1;
        assert!((s.value(1.0 - 1e-9) - s.value(1.0 + 1e-9)).abs() < 1e-8);
        // Wing's slope just below w is w/(ε + w) = 10/12, not 1: continuous value, kinked slope.
        let (_, g) = value_and_grad(w, 10.0 - 1e-6);
        assert!((g - 10.0 / 12.0).abs() < 1e-6, "{g}");
    }

    #[test]
    fn tensor_and_scalar_versions_agree_everywhere() {
        let xs: Vec<f64> = (-300..=300).map(|i| i as f64 * 0.1).collect();
        let t = Tensor::from_slice(&xs);
        for kind in ALL {
            let values = Vec::<f64>::try_from(kind.elementwise(&t)).unwrap();
            for (x, v) in xs.iter().zip(values) {
                assert!((kind.value(*x) - v).abs() < 1e-9, "{kind} at {x}");
            }
        }
    }

    #[test]
    fn batch_loss_sums_visible_coordinates_and_averages_over_the_batch() {
        // Two faces, two points. Face 0: errors (1, −2) and (3, 0); face 1: point 0 invisible
        // with a NaN target, point 1 error (0, 4).
        let pred =
            Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.0, 5.0, 5.0, 0.0, 4.0]).reshape([2, 2, 2]);
        let target = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 0.0, f32::NAN, f32::NAN, 0.0, 0.0])
            .reshape([2, 2, 2]);
        let visible = Tensor::from_slice(&[1u8, 1, 0, 1]).reshape([2, 2]);
        let pred = pred.set_requires_grad(true);
        let l1 = LossKind::L1.batch_loss(&pred, &target, &visible);
        assert!((l1.double_value(&[]) - (1.0 + 2.0 + 3.0 + 4.0) / 2.0).abs() < 1e-6);
        let l2 = LossKind::L2.batch_loss(&pred, &target, &visible);
        assert!((l2.double_value(&[]) - 0.5 * (1.0 + 4.0 + 9.0 + 16.0) / 2.0).abs() < 1e-6);
        l2.backward();
        let grad = Vec::<f32>::try_from(pred.grad().flatten(0, -1)).unwrap();
        // d/dpred of ½x²/B = x/B; the invisible point gets exactly zero, not NaN.
        assert_eq!(grad, vec![0.5, -1.0, 1.5, 0.0, 0.0, 0.0, 0.0, 2.0]);
    }
}
