//! Freezing and in-place updates of pretrained (frozen) linear layers.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Mark W0 and its bias as not trainable: no gradient and therefore no optimizer state.
pub fn freeze<B: Backend>(linear: Linear<B>) -> Linear<B> {
    Linear {
        weight: linear.weight.set_require_grad(false),
        bias: linear.bias.map(|b| b.set_require_grad(false)),
    }
}

/// `W0 ← W0 + delta` for a frozen layer, keeping the parameter id (so optimizer state and
/// records stay attached) and keeping it frozen.
pub fn add_to_frozen_weight<B: Backend>(linear: Linear<B>, delta: Tensor<B, 2>) -> Linear<B> {
    let weight = linear
        .weight
        .map(|w| (w + delta).detach().set_require_grad(false));
    Linear {
        weight,
        bias: linear.bias,
    }
}

/// Convenience for tests and loaders: a frozen linear layer from raw burn-layout tensors.
pub fn frozen_linear<B: Backend>(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Linear<B> {
    freeze(Linear {
        weight: Param::from_tensor(weight),
        bias: bias.map(Param::from_tensor),
    })
}

/// `x·W (+ b)` over the last dimension, computed as one 2-D matrix product.
///
/// burn's `linear` on a `[batch, seq, d_in]` input broadcasts W into a *batched* matmul, and
/// its weight gradient is one `[d_in, d_out]` product per batch element summed afterwards;
/// flattening the leading dimensions first makes both a single large GEMM (several times
/// faster on the CPU backend for transformer-sized layers).
pub fn linear_flat<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    if D <= 2 {
        return burn::tensor::module::linear(x, weight, bias);
    }
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    let y = burn::tensor::module::linear(x.reshape([rows, d_in]), weight, bias);
    let mut out = dims;
    out[D - 1] = y.dims()[1];
    y.reshape(out)
}

/// A (possibly frozen) linear layer applied with [`linear_flat`].
pub fn linear_forward<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    linear_flat(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}
