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
