//! The AdaLoRA SVD-form adapter: `h = W0·x + b + s·P·(λ ⊙ (Q·dropout(x)))`.
//!
//! `P` (left singular vectors) and `Q` (right singular vectors) start from N(0, 0.02²) and λ from
//! zero, so ΔW = 0 at init (the opposite of plain LoRA, where B is zero). The scale
//! `s = α / (init_r + 1e-5)` is fixed at the *initial* rank: masking or slicing triplets never
//! changes it (PEFT/original `ranknum`; the authors found adapting it hurts).
//!
//! Layout (burn, input-major): `lora_a = Qᵀ` is `[d_in, r]`, `lora_e = λ` is `[r]`,
//! `lora_b = Pᵀ` is `[r, d_out]`. PEFT stores `lora_A [r, d_in]`, `lora_E [r, 1]`, `lora_B [d_out, r]`.

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::error::CoreError;
use crate::frozen::{linear_flat, BaseLinear};
use std::sync::Arc;

use crate::lora::{check_dropout, replace_keeping_grad, subtract_from_base, InitFactors};

/// PEFT adds this to `ranknum` before dividing; kept for numerical parity.
const RANKNUM_EPS: f64 = 1e-5;

/// Per-layer hyper-parameters of an SVD adapter.
#[derive(Config, Debug, PartialEq)]
pub struct SvdAdapterConfig {
    /// Initial rank r (number of triplets) of this matrix.
    #[config(default = 12)]
    pub init_r: usize,
    /// α; the scale is α/init_r. α ≤ 0 means "use init_r", giving a scale of 1 (reference code).
    #[config(default = 8.0)]
    pub alpha: f64,
    /// Dropout on the adapter input only.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Standard deviation of the Gaussian init of P and Q.
    #[config(default = 0.02)]
    pub init_std: f64,
}

impl SvdAdapterConfig {
    /// Wrap a pretrained linear layer; W0 and bias become frozen.
    pub fn init<B: Backend>(
        &self,
        base: impl Into<BaseLinear<B>>,
        device: &B::Device,
    ) -> Result<SvdLinear<B>, CoreError> {
        if self.init_r == 0 {
            return Err(CoreError::invalid(
                "init_r",
                "0",
                "an SVD adapter starts with at least one triplet",
            ));
        }
        check_dropout(self.dropout)?;
        let base = base.into().freeze();
        let [d_in, d_out] = base.dims();
        let gaussian = Initializer::Normal {
            mean: 0.0,
            std: self.init_std,
        };
        Ok(SvdLinear {
            base,
            lora_a: gaussian.init([d_in, self.init_r], device),
            lora_e: Initializer::Zeros.init([self.init_r], device),
            lora_b: gaussian.init([self.init_r, d_out], device),
            dropout: DropoutConfig::new(self.dropout).init(),
            scaling: if self.alpha > 0.0 {
                self.alpha
            } else {
                self.init_r as f64
            },
            ranknum: self.init_r as f64,
            merged: false,
            init: None,
        })
    }
}

/// A frozen linear layer with an SVD-form update whose triplets can be masked or sliced.
#[derive(Module, Debug)]
pub struct SvdLinear<B: Backend> {
    /// The pretrained layer (weight `[d_in, d_out]`), frozen.
    pub base: BaseLinear<B>,
    /// Qᵀ, `[d_in, r]`.
    pub lora_a: Param<Tensor<B, 2>>,
    /// λ, `[r]`.
    pub lora_e: Param<Tensor<B, 1>>,
    /// Pᵀ, `[r, d_out]`.
    pub lora_b: Param<Tensor<B, 2>>,
    pub dropout: Dropout,
    /// α (PEFT `scaling`).
    pub scaling: f64,
    /// The initial rank; never changed by masking or slicing.
    pub ranknum: f64,
    pub merged: bool,
    /// The triplets this adapter started from when they were taken from W0 (AdaLoRA
    /// `init = "svd"`): `base.weight` then holds the residual W0 − s·Qᵀ₀·diag(λ₀)·Pᵀ₀. `None`
    /// for the ordinary start (λ = 0, base = W0). Not part of the module record.
    #[module(skip)]
    pub init: Option<Arc<InitFactors>>,
}

impl<B: Backend> SvdLinear<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let h = self.base.forward(x.clone());
        if self.merged || self.rank() == 0 {
            return h;
        }
        let q_lambda = self.lora_a.val() * self.lora_e.val().unsqueeze::<2>();
        let z = linear_flat(self.dropout.forward(x), q_lambda, None);
        h + linear_flat(z, self.lora_b.val(), None).mul_scalar(self.effective_scale())
    }

    /// `α / (init_r + 1e-5)`.
    pub fn effective_scale(&self) -> f64 {
        self.scaling / (self.ranknum + RANKNUM_EPS)
    }

    /// Current number of stored triplets (masked ones included).
    pub fn rank(&self) -> usize {
        self.lora_e.dims()[0]
    }

    pub fn dims(&self) -> [usize; 2] {
        self.base.dims()
    }

    /// ΔW = Qᵀ·diag(λ)·Pᵀ·s in burn layout `[d_in, d_out]`.
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        let [d_in, d_out] = self.dims();
        let device = self.lora_e.device();
        if self.rank() == 0 {
            return Tensor::zeros([d_in, d_out], &device);
        }
        let q_lambda = self.lora_a.val() * self.lora_e.val().unsqueeze::<2>();
        q_lambda
            .matmul(self.lora_b.val())
            .mul_scalar(self.effective_scale())
    }

    /// Start from triplets taken from W0 (AdaLoRA `init = "svd"`): Qᵀ ← `a` `[d_in, r]`,
    /// λ ← `e` `[r]`, Pᵀ ← `b` `[r, d_out]`, and the frozen base becomes the residual
    /// W0 − s·Qᵀ·diag(λ)·Pᵀ, so the layer computes what it did before at step 0 (up to
    /// rounding). The triplets are kept ([`SvdLinear::init`]) for export.
    pub fn with_init_factors(
        mut self,
        a: Tensor<B, 2>,
        e: Tensor<B, 1>,
        b: Tensor<B, 2>,
    ) -> Result<Self, CoreError> {
        if a.dims() != self.lora_a.dims()
            || e.dims() != self.lora_e.dims()
            || b.dims() != self.lora_b.dims()
        {
            return Err(CoreError::Shape(format!(
                "initial triplets A {:?} / E {:?} / B {:?} do not match the layer's A {:?} / E {:?} / B {:?}",
                a.dims(),
                e.dims(),
                b.dims(),
                self.lora_a.dims(),
                self.lora_e.dims(),
                self.lora_b.dims()
            )));
        }
        let [d_in, r] = a.dims();
        let d_out = b.dims()[1];
        let delta = (a.clone() * e.clone().unsqueeze::<2>())
            .matmul(b.clone())
            .mul_scalar(self.effective_scale());
        self.base = subtract_from_base(self.base, delta, self.merged)?;
        self.init = Some(Arc::new(InitFactors {
            d_in,
            r,
            d_out,
            a: crate::host::to_f32_vec(a.clone()),
            e: crate::host::to_f32_vec(e.clone()),
            b: crate::host::to_f32_vec(b.clone()),
        }));
        self.lora_a = self.lora_a.map(|old| replace_keeping_grad(old, a));
        self.lora_e = self.lora_e.map(|old| replace_keeping_grad(old, e));
        self.lora_b = self.lora_b.map(|old| replace_keeping_grad(old, b));
        Ok(self)
    }

    /// Fold ΔW into W0; merging twice is a no-op.
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

    /// Zero λ_i where `keep[i]` is false. P and Q are untouched so a masked triplet can recover
    /// (the paper's design); the value stays a trainable leaf.
    pub fn apply_mask(&mut self, keep: &[bool]) -> Result<(), CoreError> {
        self.check_pattern(keep)?;
        if keep.iter().all(|&k| k) {
            return Ok(());
        }
        let device = self.lora_e.device();
        let drop: Tensor<B, 1, Bool> = Tensor::from_data(
            TensorData::new(keep.iter().map(|&k| !k).collect::<Vec<_>>(), [keep.len()]),
            &device,
        );
        let masked = self.lora_e.val().mask_fill(drop, 0.0);
        self.lora_e = self
            .lora_e
            .clone()
            .map(|old| replace_keeping_grad(old, masked));
        Ok(())
    }

    /// Keep only the triplets with `keep[i]` (rank 0 allowed) — PEFT's resize at save/load.
    /// The scale keeps using the initial rank, so ΔW is unchanged when the dropped λ_i are 0.
    pub fn slice_to_pattern(self, keep: &[bool]) -> Result<Self, CoreError> {
        self.check_pattern(keep)?;
        let was_merged = self.merged;
        let mut layer = self.unmerge();
        let kept: Vec<i64> = (0..keep.len())
            .filter(|&i| keep[i])
            .map(|i| i as i64)
            .collect();
        let [d_in, d_out] = layer.dims();
        let device = layer.lora_e.device();
        let (a, e, b) = if kept.is_empty() {
            (
                Tensor::<B, 2>::zeros([d_in, 0], &device),
                Tensor::<B, 1>::zeros([0], &device),
                Tensor::<B, 2>::zeros([0, d_out], &device),
            )
        } else {
            let idx = Tensor::<B, 1, Int>::from_data(
                TensorData::new(kept.clone(), [kept.len()]),
                &device,
            );
            (
                layer.lora_a.val().select(1, idx.clone()),
                layer.lora_e.val().select(0, idx.clone()),
                layer.lora_b.val().select(0, idx),
            )
        };
        layer.lora_a = layer.lora_a.map(|old| replace_keeping_grad(old, a));
        layer.lora_e = layer.lora_e.map(|old| replace_keeping_grad(old, e));
        layer.lora_b = layer.lora_b.map(|old| replace_keeping_grad(old, b));
        Ok(if was_merged { layer.merge() } else { layer })
    }

    fn check_pattern(&self, keep: &[bool]) -> Result<(), CoreError> {
        if keep.len() != self.rank() {
            return Err(CoreError::Shape(format!(
                "rank pattern has {} entries but the adapter has {} triplets",
                keep.len(),
                self.rank()
            )));
        }
        Ok(())
    }
}
