//! Building blocks shared by the encoder families (BERT here; RoBERTa/DeBERTa reuse them), in
//! the form that costs the least on the CPU backends. Each is backend-generic and
//! differentiable through burn's own ops, and is tested against the textbook composition
//! (`tests/ops.rs`).

use adalora_core::AdaptedLinear;
use burn::nn::{Dropout, LayerNorm};
use burn::tensor::activation::{gelu, gelu_approximate};
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

/// The post-attention half of a post-LayerNorm encoder layer, the same in BERT (RoBERTa) and
/// DeBERTa-v2: attention output dense → dropout → residual LayerNorm, then the GELU
/// feed-forward (`intermediate.dense`, `output.dense`) → dropout → residual LayerNorm. It
/// borrows the layer's own fields, so each family keeps its module (and checkpoint) layout.
pub struct PostAttention<'a, B: Backend> {
    /// `attention.output.dense` (W_o).
    pub attention_output: &'a AdaptedLinear<B>,
    pub attention_layer_norm: &'a LayerNorm<B>,
    /// `intermediate.dense` (W_f1).
    pub intermediate: &'a AdaptedLinear<B>,
    /// `output.dense` (W_f2).
    pub output: &'a AdaptedLinear<B>,
    pub output_layer_norm: &'a LayerNorm<B>,
    pub hidden_dropout: &'a Dropout,
    /// Tanh-approximate GELU instead of the exact erf form.
    pub gelu_tanh: bool,
}

impl<B: Backend> PostAttention<'_, B> {
    /// `context`: the attention heads merged back, `[batch, seq, hidden]`; `input`: the layer's
    /// input (the first residual).
    pub fn forward(&self, context: Tensor<B, 3>, input: Tensor<B, 3>) -> Tensor<B, 3> {
        let attn = self
            .hidden_dropout
            .forward(self.attention_output.forward(context));
        let x = self.attention_layer_norm.forward(attn + input);
        let inter = self.intermediate.forward(x.clone());
        let inter = if self.gelu_tanh {
            gelu_approximate(inter)
        } else {
            gelu(inter)
        };
        let out = self.hidden_dropout.forward(self.output.forward(inter));
        self.output_layer_norm.forward(out + x)
    }
}
