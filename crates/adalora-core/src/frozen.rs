//! Pretrained (frozen) linear layers: freezing, in-place updates, and the quantized base.
//!
//! [`BaseLinear`] is the layer underneath every adapter type: a dense f32 [`Linear`] or a
//! [`QuantizedLinear`] whose weight lives in 4/8 bits ([`crate::quant`]) and is dequantized on
//! the fly for each matmul. LoRA and AdaLoRA do not know which one they sit on.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

use crate::error::CoreError;
use crate::host::to_f32_vec;
use crate::quant::{ComputeDtype, QuantConfig, QuantError, QuantizedMatrix};
use crate::resident::DeviceCodes;

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

/// A linear layer whose weight is stored quantized; only the bias is a (frozen) parameter.
///
/// The quantized weight is not part of the module record: it is rebuilt from the pretrained
/// checkpoint (quantization is deterministic), so checkpoints and adapters stay f32 files.
#[derive(Module, Debug)]
pub struct QuantizedLinear<B: Backend> {
    /// W0 in HF layout `[d_out, d_in]`, shared between clones of the model.
    #[module(skip)]
    pub weight: Arc<QuantizedMatrix>,
    /// Off by default (host dequantization); switched on for GPU backends.
    #[module(skip)]
    pub device_codes: DeviceCodes,
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> QuantizedLinear<B> {
    /// Quantize a dense layer and report the quantization error of its weight; the f32 weight
    /// is dropped. `name` names the tensor in errors.
    pub fn quantize(
        linear: Linear<B>,
        config: QuantConfig,
        name: &str,
    ) -> Result<(Self, QuantError), CoreError> {
        check_compute_dtype::<B>(config.compute_dtype, &linear.weight.device())?;
        let [d_in, d_out] = linear.weight.dims();
        // HF layout, the tensor bitsandbytes quantizes: blocks run along d_in within a row.
        let values = to_f32_vec(linear.weight.val().transpose());
        let weight = QuantizedMatrix::quantize(&values, d_out, d_in, config, name)?;
        let error = QuantError::between(&values, &weight.dequantize());
        let layer = QuantizedLinear {
            weight: Arc::new(weight),
            device_codes: DeviceCodes::default(),
            bias: linear.bias.map(|b| b.set_require_grad(false)),
        };
        Ok((layer, error))
    }

    /// `[d_in, d_out]`, like [`Linear`].
    pub fn dims(&self) -> [usize; 2] {
        [self.weight.cols, self.weight.rows]
    }

    /// `x·deq(q(W0)) (+ b)` in the configured compute dtype, returned in `x`'s dtype.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let device = x.device();
        let w = self
            .device_codes
            .dequantize(&self.weight, &device)
            .unwrap_or_else(|| self.dequantized(&device));
        let bias = self.bias.as_ref().map(|b| b.val());
        match self.weight.config.compute_dtype {
            ComputeDtype::F32 => linear_flat(x, w, bias),
            ComputeDtype::Bf16 => {
                // As bitsandbytes' Linear4bit: input, weight and bias in the compute dtype,
                // the output cast back. Autodiff's cast carries the input gradient back too.
                let activations = FloatDType::from(x.dtype());
                let bf16 = FloatDType::BF16;
                let y = linear_flat(x.cast(bf16), w.cast(bf16), bias.map(|b| b.cast(bf16)));
                y.cast(activations)
            }
        }
    }

    /// deq(q(W0)) in burn layout `[d_in, d_out]`, a constant (no gradient) on `device`.
    pub fn dequantized(&self, device: &B::Device) -> Tensor<B, 2> {
        let q = &self.weight;
        let data = TensorData::new(q.dequantize(), [q.rows, q.cols]);
        Tensor::<B, 2>::from_data(data, device).transpose()
    }
}

/// A bf16 compute dtype needs a backend with bf16 arithmetic (CUDA, burn-flex; not ndarray).
fn check_compute_dtype<B: Backend>(
    dtype: ComputeDtype,
    device: &B::Device,
) -> Result<(), CoreError> {
    if dtype == ComputeDtype::Bf16 && !B::supports_dtype(device, DType::BF16) {
        return Err(CoreError::invalid(
            "compute_dtype",
            dtype.name(),
            "this backend has no bf16 arithmetic; use f32",
        ));
    }
    Ok(())
}

/// The pretrained layer under an adapter (or alone): dense, or quantized and always frozen.
#[derive(Module, Debug)]
pub enum BaseLinear<B: Backend> {
    Dense(Linear<B>),
    Quantized(QuantizedLinear<B>),
}

impl<B: Backend> From<Linear<B>> for BaseLinear<B> {
    fn from(linear: Linear<B>) -> Self {
        BaseLinear::Dense(linear)
    }
}

impl<B: Backend> BaseLinear<B> {
    /// `x·W0 (+ b)`; a quantized weight is dequantized for this product only.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            BaseLinear::Dense(l) => linear_forward(l, x),
            BaseLinear::Quantized(q) => q.forward(x),
        }
    }

    /// `[d_in, d_out]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            BaseLinear::Dense(l) => l.weight.dims(),
            BaseLinear::Quantized(q) => q.dims(),
        }
    }

    /// W0 in burn layout as the forward pass uses it (dequantized for a quantized base).
    pub fn weight(&self, device: &B::Device) -> Tensor<B, 2> {
        match self {
            BaseLinear::Dense(l) => l.weight.val(),
            BaseLinear::Quantized(q) => q.dequantized(device),
        }
    }

    pub fn bias(&self) -> Option<&Param<Tensor<B, 1>>> {
        match self {
            BaseLinear::Dense(l) => l.bias.as_ref(),
            BaseLinear::Quantized(q) => q.bias.as_ref(),
        }
    }

    pub fn as_dense(&self) -> Option<&Linear<B>> {
        match self {
            BaseLinear::Dense(l) => Some(l),
            BaseLinear::Quantized(_) => None,
        }
    }

    pub fn as_quantized(&self) -> Option<&QuantizedLinear<B>> {
        match self {
            BaseLinear::Dense(_) => None,
            BaseLinear::Quantized(q) => Some(q),
        }
    }

    /// Freeze W0 and its bias.
    pub fn freeze(self) -> Self {
        match self {
            BaseLinear::Dense(l) => BaseLinear::Dense(freeze(l)),
            quantized => quantized,
        }
    }

    /// `W0 ← W0 + delta`, frozen. A quantized base becomes dense f32 (deq(q(W0)) + delta):
    /// merging is for export, and re-quantizing would lose the update's precision.
    pub fn add_to_weight(self, delta: Tensor<B, 2>) -> Self {
        match self {
            BaseLinear::Dense(l) => BaseLinear::Dense(add_to_frozen_weight(l, delta)),
            BaseLinear::Quantized(q) => {
                let weight = q.dequantized(&delta.device());
                BaseLinear::Dense(frozen_linear(
                    (weight + delta).detach(),
                    q.bias.map(|b| b.val()),
                ))
            }
        }
    }

    /// The dense f32 layer (dequantized if needed), e.g. for merging into an HF checkpoint.
    pub fn into_dense(self, device: &B::Device) -> Linear<B> {
        match self {
            BaseLinear::Dense(l) => l,
            BaseLinear::Quantized(q) => {
                frozen_linear(q.dequantized(device), q.bias.map(|b| b.val()))
            }
        }
    }

    /// Quantize a dense base (a quantized one is returned as is); `name` names it in errors.
    /// Also reports the quantization error of the weight.
    pub fn quantize(
        self,
        config: QuantConfig,
        name: &str,
    ) -> Result<(Self, QuantError), CoreError> {
        match self {
            BaseLinear::Dense(l) => {
                let (q, error) = QuantizedLinear::quantize(l, config, name)?;
                Ok((BaseLinear::Quantized(q), error))
            }
            quantized => Ok((quantized, QuantError::default())),
        }
    }

    /// Bytes of the weight as stored (f32, or codes + constants), bias excluded.
    pub fn weight_bytes(&self) -> usize {
        match self {
            BaseLinear::Dense(l) => 4 * l.weight.shape().num_elements(),
            BaseLinear::Quantized(q) => q.weight.resident_bytes(),
        }
    }
}
