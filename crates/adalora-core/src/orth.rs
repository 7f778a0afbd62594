//! The orthogonality regularizer R(P, Q) that keeps P and Q close to orthonormal, so that
//! λ behaves like singular values and masking a triplet is a meaningful rank reduction.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::svd::SvdLinear;

/// Which formula to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrthRegForm {
    /// Reference code (original and PEFT): mean over the 2n tensors of the *unsquared*
    /// Frobenius norms `‖PᵀP − I‖_F` and `‖QQᵀ − I‖_F`.
    #[default]
    Reference,
    /// Paper Eq. (4): sum over the n matrices of the *squared* norms.
    Paper,
}

/// Keeps the gradient of `‖·‖_F = sqrt(s)` finite when `s` is exactly 0 (sqrt's derivative is
/// infinite there; PyTorch's norm returns a zero subgradient). Negligible against any real `s`.
const SQRT_EPS: f32 = 1e-30;

/// R(P, Q) over all SVD adapters, including masked triplets (as the reference does).
/// Returns a one-element tensor; zero when there are no adapters.
pub fn orthogonal_regularizer<B: Backend>(
    adapters: &[&SvdLinear<B>],
    form: OrthRegForm,
    device: &B::Device,
) -> Tensor<B, 1> {
    let mut total = Tensor::<B, 1>::zeros([1], device);
    for adapter in adapters.iter().filter(|a| a.rank() > 0) {
        let q_t = adapter.lora_a.val(); // Qᵀ: [d_in, r] → QQᵀ = (Qᵀ)ᵀ·Qᵀ
        let p_t = adapter.lora_b.val(); // Pᵀ: [r, d_out] → PᵀP = Pᵀ·(Pᵀ)ᵀ
        let qqt = q_t.clone().transpose().matmul(q_t);
        let ptp = p_t.clone().matmul(p_t.transpose());
        let squared = [gram_deviation_sq(qqt), gram_deviation_sq(ptp)];
        for sq in squared {
            total = total
                + match form {
                    OrthRegForm::Reference => sq.add_scalar(SQRT_EPS).sqrt(),
                    OrthRegForm::Paper => sq,
                };
        }
    }
    match form {
        OrthRegForm::Reference if !adapters.is_empty() => {
            total.div_scalar(2.0 * adapters.len() as f64)
        }
        _ => total,
    }
}

/// `‖C − I‖²_F` for a square Gram matrix C.
fn gram_deviation_sq<B: Backend>(gram: Tensor<B, 2>) -> Tensor<B, 1> {
    let [r, _] = gram.dims();
    let eye = Tensor::<B, 2>::eye(r, &gram.device());
    (gram - eye).powi_scalar(2).sum()
}
