//! Plain LoRA (Hu et al., 2021): `h = W0·x + b + s·B·A·dropout(x)` with `s = α/r` (or `α/√r`, rsLoRA).
//!
//! Tensors are stored in burn's input-major layout (like `burn::nn::Linear`): `A` is `[d_in, r]`
//! and `B` is `[r, d_out]`, i.e. the transposes of PyTorch/PEFT's `lora_A [r, d_in]` and
//! `lora_B [d_out, r]`. Conversion to PEFT's layout happens only at the file boundary.

use std::sync::Arc;

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};

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
            init: None,
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

/// How a LoRA adapter's factors start (`lora.init`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraInit {
    /// A Kaiming-uniform, B zero, base = W0 (PEFT's `init_lora_weights=True`; the default).
    #[default]
    Kaiming,
    /// A ~ N(0, (1/r)²), B zero, base = W0 (PEFT's `init_lora_weights="gaussian"`).
    Gaussian,
    /// PiSSA (Meng et al., 2024; PEFT's `init_lora_weights="pissa"`): from W0's top-r singular
    /// triplets, A = √(S_r/s)·Vᵀ_r, B = U_r·√(S_r/s); the base keeps the residual W0 − s·B·A.
    Pissa,
    /// OLoRA (Büyükakyüz, 2024; PEFT's `"olora"`): W0 = Q·R, A = R[:r], B = Q[:, :r]; the base
    /// keeps W0 − s·B·A.
    Olora,
}

impl LoraInit {
    pub const NAMES: [&'static str; 4] = ["kaiming", "gaussian", "pissa", "olora"];

    pub fn name(self) -> &'static str {
        match self {
            LoraInit::Kaiming => "kaiming",
            LoraInit::Gaussian => "gaussian",
            LoraInit::Pissa => "pissa",
            LoraInit::Olora => "olora",
        }
    }

    pub fn parse(s: &str) -> Result<Self, CoreError> {
        [
            LoraInit::Kaiming,
            LoraInit::Gaussian,
            LoraInit::Pissa,
            LoraInit::Olora,
        ]
        .into_iter()
        .find(|i| i.name() == s)
        .ok_or_else(|| {
            CoreError::invalid(
                "lora.init",
                s,
                &format!(
                    "unknown initialisation; expected one of {}",
                    Self::NAMES.join(", ")
                ),
            )
        })
    }

    pub fn is_default(&self) -> bool {
        *self == LoraInit::Kaiming
    }

    /// Whether the factors come from W0 (and the base becomes a residual).
    pub fn from_weights(self) -> bool {
        matches!(self, LoraInit::Pissa | LoraInit::Olora)
    }
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
    /// The factors A₀, B₀ this adapter started from when they were taken from W0 (PiSSA,
    /// OLoRA): `base.weight` then holds the residual W0 − s·A₀·B₀. `None` for the ordinary
    /// Kaiming/zero start, where the base is W0 itself. Not part of the module record: a model
    /// is rebuilt from W0 and recomputes them.
    #[module(skip)]
    pub init: Option<Arc<InitFactors>>,
}

/// An adapter's starting factors in burn layout, on the host: LoRA's `A₀ [d_in, r]` and
/// `B₀ [r, d_out]`, and for an SVD adapter also `λ₀ [r]` (empty for LoRA).
#[derive(Clone, Debug, PartialEq)]
pub struct InitFactors {
    pub d_in: usize,
    pub r: usize,
    pub d_out: usize,
    pub a: Vec<f32>,
    pub e: Vec<f32>,
    pub b: Vec<f32>,
}

impl InitFactors {
    pub fn a<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(self.a.clone(), [self.d_in, self.r]), device)
    }

    pub fn b<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        Tensor::from_data(
            TensorData::new(self.b.clone(), [self.r, self.d_out]),
            device,
        )
    }

    pub fn e<B: Backend>(&self, device: &B::Device) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(self.e.clone(), [self.e.len()]), device)
    }
}

/// W0 ← W0 − delta for an adapter starting from factors of W0; only a dense, unmerged f32 base.
pub(crate) fn subtract_from_base<B: Backend>(
    base: BaseLinear<B>,
    delta: Tensor<B, 2>,
    merged: bool,
) -> Result<BaseLinear<B>, CoreError> {
    if merged {
        return Err(CoreError::State(
            "cannot start a merged adapter from factors of W0".into(),
        ));
    }
    if base.as_quantized().is_some() {
        return Err(CoreError::State(
            "an initialisation from W0's factors (PiSSA, OLoRA, AdaLoRA svd) needs a dense base; \
             this one is quantized"
                .into(),
        ));
    }
    Ok(base.add_to_weight(delta.neg()))
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

    /// Redraw A from N(0, (1/r)²) (PEFT's `init_lora_weights="gaussian"`), from the backend's
    /// seeded generator; B stays zero, so ΔW = 0 still and the base is untouched.
    pub fn with_gaussian_a(mut self) -> Self {
        let device = self.lora_a.device();
        let std = 1.0 / self.rank() as f64;
        let a = Tensor::random(self.lora_a.dims(), Distribution::Normal(0.0, std), &device);
        self.lora_a = Param::from_tensor(a);
        self
    }

    /// Start from factors taken from W0 (PiSSA, OLoRA): A ← `a` `[d_in, r]`, B ← `b`
    /// `[r, d_out]` (trainable as before), and the frozen base becomes the residual
    /// W0 − s·A·B, so the layer computes exactly what it did before at step 0 (up to
    /// rounding). The factors are kept ([`LoraLinear::init`]) for export.
    pub fn with_init_factors(
        mut self,
        a: Tensor<B, 2>,
        b: Tensor<B, 2>,
    ) -> Result<Self, CoreError> {
        if a.dims() != self.lora_a.dims() || b.dims() != self.lora_b.dims() {
            return Err(CoreError::Shape(format!(
                "initial factors A {:?} / B {:?} do not match the layer's A {:?} / B {:?}",
                a.dims(),
                b.dims(),
                self.lora_a.dims(),
                self.lora_b.dims()
            )));
        }
        let [d_in, r] = a.dims();
        let d_out = b.dims()[1];
        let delta = a.clone().matmul(b.clone()).mul_scalar(self.scaling);
        self.base = subtract_from_base(self.base, delta, self.merged)?;
        self.init = Some(Arc::new(InitFactors {
            d_in,
            r,
            d_out,
            a: crate::host::to_f32_vec(a.clone()),
            e: Vec::new(),
            b: crate::host::to_f32_vec(b.clone()),
        }));
        self.lora_a = self.lora_a.map(|old| replace_keeping_grad(old, a));
        self.lora_b = self.lora_b.map(|old| replace_keeping_grad(old, b));
        Ok(self)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frozen::frozen_linear;
    use crate::quant::QuantConfig;
    use crate::svd::SvdAdapterConfig;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    fn weight() -> Tensor<B, 2> {
        let v: Vec<f32> = (0..64 * 8)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.05)
            .collect();
        Tensor::from_data(TensorData::new(v, [64, 8]), &Default::default())
    }

    fn factor(rows: usize, cols: usize, k: f32) -> Tensor<B, 2> {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| (i as f32 * 0.3 + k).sin() * 0.2)
            .collect();
        Tensor::from_data(TensorData::new(v, [rows, cols]), &Default::default())
    }

    fn max_gap(a: Tensor<B, 2>, b: Tensor<B, 2>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// Any factors: the base becomes W0 − ΔW₀, the output stays W0's, the factors are kept;
    /// a quantized base is refused.
    #[test]
    fn init_factors_move_delta_out_of_the_base() {
        let dev = Default::default();
        let x = factor(5, 64, 1.0);
        let plain = frozen_linear(weight(), None);
        let expected = burn::tensor::module::linear(x.clone(), weight(), None);
        let cfg = LoraConfig::new().with_r(2);
        let layer = cfg.init::<B>(plain.clone(), &dev).unwrap();
        let (a, b) = (factor(64, 2, 0.0), factor(2, 8, 2.0));
        let layer = layer.with_init_factors(a.clone(), b.clone()).unwrap();
        assert!(max_gap(layer.forward(x.clone()), expected.clone()) < 1e-5);
        let residual = weight() - a.clone().matmul(b.clone()).mul_scalar(cfg.scaling());
        assert!(max_gap(layer.base.weight(&dev), residual) < 1e-6);
        let init = layer.init.as_ref().unwrap();
        assert_eq!((init.d_in, init.r, init.d_out), (64, 2, 8));
        assert!(max_gap(init.a(&dev), a.clone()) == 0.0 && max_gap(init.b(&dev), b.clone()) == 0.0);
        // The merged layer is the live one.
        assert!(max_gap(layer.clone().merge().forward(x.clone()), expected.clone()) < 1e-5);
        let svd = SvdAdapterConfig::new()
            .with_init_r(2)
            .init::<B>(plain.clone(), &dev)
            .unwrap();
        let e = Tensor::from_data(TensorData::new(vec![3.0f32, -1.5], [2]), &dev);
        let svd = svd.with_init_factors(a.clone(), e, b.clone()).unwrap();
        assert!(max_gap(svd.forward(x.clone()), expected) < 1e-5);
        assert!(cfg
            .init::<B>(plain.clone(), &dev)
            .unwrap()
            .with_init_factors(b.clone(), a.clone())
            .is_err());
        let (q, _) = BaseLinear::from(plain)
            .quantize(QuantConfig::qlora(), "w")
            .unwrap();
        let err = cfg
            .init::<B>(q, &dev)
            .unwrap()
            .with_init_factors(a, b)
            .unwrap_err();
        assert!(err.to_string().contains("quantized"), "{err}");
    }

    #[test]
    fn init_names_parse_and_refuse_by_key() {
        for name in LoraInit::NAMES {
            assert_eq!(LoraInit::parse(name).unwrap().name(), name);
        }
        let err = LoraInit::parse("normal").unwrap_err().to_string();
        assert!(err.contains("lora.init") && err.contains("pissa"), "{err}");
        assert!(LoraInit::default().is_default() && !LoraInit::Pissa.is_default());
    }
}
