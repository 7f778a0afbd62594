//! Plain LoRA (Hu et al., 2021): `h = W0·x + b + s·B·A·dropout(x)` with `s = α/r` (or `α/√r`, rsLoRA).
//!
//! Tensors are stored in burn's input-major layout (like `burn::nn::Linear`): `A` is `[d_in, r]`
//! and `B` is `[r, d_out]`, i.e. the transposes of PyTorch/PEFT's `lora_A [r, d_in]` and
//! `lora_B [d_out, r]`. Conversion to PEFT's layout happens only at the file boundary.

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::CoreError;
use crate::frozen::{linear_flat, BaseLinear};

/// Hyper-parameters of a LoRA adapter (PEFT's `LoraConfig` defaults, except α: see
/// [`crate::DEFAULT_ALPHA`]).
#[derive(Config, Debug, PartialEq)]
pub struct LoraConfig {
    /// Rank r of the update.
    #[config(default = 8)]
    pub r: usize,
    /// α: the update is scaled by α/r (or α/√r with rsLoRA).
    #[config(default = "crate::method::DEFAULT_ALPHA")]
    pub alpha: f64,
    /// Dropout probability on the adapter input only (never on the base path).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// rsLoRA: scale by α/√r, which keeps the update's magnitude stable as r grows.
    #[config(default = false)]
    pub use_rslora: bool,
}

impl LoraConfig {
    /// The constant factor multiplying `B·A`.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Wrap a pretrained linear layer: W0 and its bias are frozen, A is Kaiming-uniform
    /// (PEFT's `kaiming_uniform_(a=√5)`, bound 1/√d_in) and B is zero, so ΔW = 0 at start.
    pub fn init<B: Backend>(
        &self,
        base: impl Into<BaseLinear<B>>,
        device: &B::Device,
    ) -> Result<LoraLinear<B>, CoreError> {
        if self.r == 0 {
            return Err(CoreError::invalid(
                "r",
                "0",
                "a LoRA rank must be at least 1",
            ));
        }
        check_dropout(self.dropout)?;
        let base = base.into().freeze();
        let [d_in, d_out] = base.dims();
        let kaiming = Initializer::KaimingUniform {
            gain: 1.0 / 3.0f64.sqrt(),
            fan_out_only: false,
        };
        Ok(LoraLinear {
            base,
            lora_a: kaiming.init_with([d_in, self.r], Some(d_in), Some(self.r), device),
            lora_b: Initializer::Zeros.init([self.r, d_out], device),
            dropout: DropoutConfig::new(self.dropout).init(),
            scaling: self.scaling(),
            merged: false,
        })
    }
}

pub(crate) fn check_dropout(p: f64) -> Result<(), CoreError> {
    if !(0.0..1.0).contains(&p) {
        return Err(CoreError::invalid(
            "dropout",
            &p.to_string(),
            "a dropout probability must be in [0, 1)",
        ));
    }
    Ok(())
}

/// A frozen linear layer with a low-rank trainable update.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// The pretrained layer (weight `[d_in, d_out]`, bias `[d_out]`), frozen.
    pub base: BaseLinear<B>,
    /// A, `[d_in, r]`.
    pub lora_a: Param<Tensor<B, 2>>,
    /// B, `[r, d_out]`.
    pub lora_b: Param<Tensor<B, 2>>,
    pub dropout: Dropout,
    /// α/r (or α/√r).
    pub scaling: f64,
    /// True while ΔW is folded into `base.weight`; the adapter path is then skipped.
    pub merged: bool,
}

impl<B: Backend> LoraLinear<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let h = self.base.forward(x.clone());
        if self.merged {
            return h;
        }
        let z = linear_flat(self.dropout.forward(x), self.lora_a.val(), None);
        h + linear_flat(z, self.lora_b.val(), None).mul_scalar(self.scaling)
    }

    pub fn rank(&self) -> usize {
        self.lora_a.dims()[1]
    }

    /// ΔW in burn layout `[d_in, d_out]`.
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        self.lora_a
            .val()
            .matmul(self.lora_b.val())
            .mul_scalar(self.scaling)
    }

    /// Fold ΔW into W0 (no extra latency at inference). Merging twice is a no-op, so the
    /// state can never drift; merging is explicit and independent of train/eval mode.
    pub fn merge(mut self) -> Self {
        if !self.merged {
            let delta = self.delta_weight();
            self.base = self.base.add_to_weight(delta);
            self.merged = true;
        }
        self
    }

    /// Subtract ΔW from W0 again (no-op when not merged).
    pub fn unmerge(mut self) -> Self {
        if self.merged {
            let delta = self.delta_weight().neg();
            self.base = self.base.add_to_weight(delta);
            self.merged = false;
        }
        self
    }

    /// Task switching: replace this adapter's A and B (burn layout) with another task's,
    /// keeping the merge state (a merged layer is unmerged first, then re-merged).
    pub fn swap_adapter(
        self,
        lora_a: Tensor<B, 2>,
        lora_b: Tensor<B, 2>,
    ) -> Result<Self, CoreError> {
        let shape_ok = lora_a.dims() == self.lora_a.dims() && lora_b.dims() == self.lora_b.dims();
        if !shape_ok {
            return Err(CoreError::Shape(format!(
                "adapter shapes A {:?} / B {:?} do not match the layer's A {:?} / B {:?}",
                lora_a.dims(),
                lora_b.dims(),
                self.lora_a.dims(),
                self.lora_b.dims()
            )));
        }
        let was_merged = self.merged;
        let mut layer = self.unmerge();
        layer.lora_a = layer.lora_a.map(|old| replace_keeping_grad(old, lora_a));
        layer.lora_b = layer.lora_b.map(|old| replace_keeping_grad(old, lora_b));
        Ok(if was_merged { layer.merge() } else { layer })
    }
}

/// New value for a parameter, trainable iff the old one was.
pub(crate) fn replace_keeping_grad<B: Backend, const D: usize>(
    old: Tensor<B, D>,
    new: Tensor<B, D>,
) -> Tensor<B, D> {
    let new = new.detach();
    if old.is_require_grad() {
        new.require_grad()
    } else {
        new
    }
}
