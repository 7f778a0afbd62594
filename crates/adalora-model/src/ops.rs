//! Building blocks shared by the encoder families (BERT here; RoBERTa/DeBERTa reuse them), in
//! the form that costs the least on the CPU backends. Each is backend-generic and
//! differentiable through burn's own ops, and is tested against the textbook composition
//! (`tests/ops.rs`).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Attention scores `q·kᵀ/√d + mask` for `q`, `k` of shape `[batch, heads, seq, d]` and an
/// additive `mask` broadcastable to `[batch, heads, seq, seq]`.
///
/// The `1/√d` scale is applied to `q` (`seq·d` elements per head) instead of to the product
/// (`seq·seq`): at seq 128 and d 32 that is 4× fewer multiplications forward and backward, and
/// one full pass over the largest activation of the layer less. Equal to HF's order up to
/// float rounding.
pub fn attention_scores<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    mask: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let d = q.dims()[3];
    q.mul_scalar(1.0 / (d as f64).sqrt())
        .matmul(k.swap_dims(2, 3))
        + mask
}
