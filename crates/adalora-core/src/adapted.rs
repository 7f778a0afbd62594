//! One type for every linear layer of a model that can carry an adapter, and the trait a model
//! implements to hand its adapters to the allocator *structurally* (no parameter-name matching).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::CoreError;
use crate::frozen::BaseLinear;
use crate::lora::LoraLinear;
use crate::quant::{QuantConfig, QuantError};
use crate::svd::SvdLinear;

/// A linear layer as the fine-tuning method sees it.
#[derive(Module, Debug)]
pub enum AdaptedLinear<B: Backend> {
    /// No adapter. Trainability is whatever the layer's parameters say (full FT: all; BitFit:
    /// bias only; LoRA/AdaLoRA on other modules: none; a quantized base: none).
    Plain(BaseLinear<B>),
    Lora(LoraLinear<B>),
    Svd(SvdLinear<B>),
}

impl<B: Backend> AdaptedLinear<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            AdaptedLinear::Plain(l) => l.forward(x),
            AdaptedLinear::Lora(l) => l.forward(x),
            AdaptedLinear::Svd(l) => l.forward(x),
        }
    }

    /// The pretrained layer underneath (W0 in burn layout `[d_in, d_out]`).
    pub fn base(&self) -> &BaseLinear<B> {
        match self {
            AdaptedLinear::Plain(l) => l,
            AdaptedLinear::Lora(l) => &l.base,
            AdaptedLinear::Svd(l) => &l.base,
        }
    }

    /// ΔW in burn layout, or `None` without an adapter.
    pub fn delta_weight(&self) -> Option<Tensor<B, 2>> {
        match self {
            AdaptedLinear::Plain(_) => None,
            AdaptedLinear::Lora(l) => Some(l.delta_weight()),
            AdaptedLinear::Svd(l) => Some(l.delta_weight()),
        }
    }

    /// Adapter rank (0 without an adapter).
    pub fn rank(&self) -> usize {
        match self {
            AdaptedLinear::Plain(_) => 0,
            AdaptedLinear::Lora(l) => l.rank(),
            AdaptedLinear::Svd(l) => l.rank(),
        }
    }

    pub fn is_merged(&self) -> bool {
        match self {
            AdaptedLinear::Plain(_) => false,
            AdaptedLinear::Lora(l) => l.merged,
            AdaptedLinear::Svd(l) => l.merged,
        }
    }

    pub fn merge(self) -> Self {
        match self {
            AdaptedLinear::Plain(l) => AdaptedLinear::Plain(l),
            AdaptedLinear::Lora(l) => AdaptedLinear::Lora(l.merge()),
            AdaptedLinear::Svd(l) => AdaptedLinear::Svd(l.merge()),
        }
    }

    pub fn unmerge(self) -> Self {
        match self {
            AdaptedLinear::Plain(l) => AdaptedLinear::Plain(l),
            AdaptedLinear::Lora(l) => AdaptedLinear::Lora(l.unmerge()),
            AdaptedLinear::Svd(l) => AdaptedLinear::Svd(l.unmerge()),
        }
    }

    /// Merge and drop the adapter: a plain (frozen) dense f32 layer with W0 + ΔW (a quantized
    /// W0 is dequantized first).
    pub fn merge_and_unload(self, device: &B::Device) -> Linear<B> {
        let base = match self.merge() {
            AdaptedLinear::Plain(l) => l,
            AdaptedLinear::Lora(l) => l.base,
            AdaptedLinear::Svd(l) => l.base,
        };
        base.into_dense(device)
    }

    /// Replace the base by its quantized form, keeping the adapter; `name` names it in errors.
    pub fn quantize_base(
        self,
        config: QuantConfig,
        name: &str,
    ) -> Result<(Self, QuantError), CoreError> {
        if self.is_merged() {
            return Err(CoreError::State(format!(
                "{name}: cannot quantize a base with a merged adapter"
            )));
        }
        Ok(match self {
            AdaptedLinear::Plain(l) => {
                let (base, error) = l.quantize(config, name)?;
                (AdaptedLinear::Plain(base), error)
            }
            AdaptedLinear::Lora(mut l) => {
                let (base, error) = l.base.quantize(config, name)?;
                l.base = base;
                (AdaptedLinear::Lora(l), error)
            }
            AdaptedLinear::Svd(mut l) => {
                let (base, error) = l.base.quantize(config, name)?;
                l.base = base;
                (AdaptedLinear::Svd(l), error)
            }
        })
    }

    pub fn as_svd(&self) -> Option<&SvdLinear<B>> {
        match self {
            AdaptedLinear::Svd(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_svd_mut(&mut self) -> Option<&mut SvdLinear<B>> {
        match self {
            AdaptedLinear::Svd(l) => Some(l),
            _ => None,
        }
    }
}

/// Implemented by a model to expose its adapted layers in a fixed structural order
/// (e.g. layer-major, then query, key, value, attention-output, intermediate, output).
///
/// The order is the identity of a matrix for the allocator: index `k` of a rank pattern is the
/// `k`-th SVD adapter returned here. Models enumerate their fields directly — they never search
/// parameter names, so renaming a module cannot silently detach it from the allocator.
pub trait AdapterHost<B: Backend> {
    fn adapted_linears(&self) -> Vec<&AdaptedLinear<B>>;
    fn adapted_linears_mut(&mut self) -> Vec<&mut AdaptedLinear<B>>;

    fn svd_adapters(&self) -> Vec<&SvdLinear<B>> {
        self.adapted_linears()
            .into_iter()
            .filter_map(AdaptedLinear::as_svd)
            .collect()
    }

    /// `(d_in, rank, d_out)` of every SVD adapter, in order: what
    /// [`crate::RankAllocator::new`] takes.
    fn svd_shapes(&self) -> Vec<(usize, usize, usize)> {
        self.svd_adapters()
            .iter()
            .map(|a| {
                let [d_in, d_out] = a.dims();
                (d_in, a.rank(), d_out)
            })
            .collect()
    }

    fn svd_adapters_mut(&mut self) -> Vec<&mut SvdLinear<B>> {
        self.adapted_linears_mut()
            .into_iter()
            .filter_map(AdaptedLinear::as_svd_mut)
            .collect()
    }

    /// Zero the masked-out λ of every SVD adapter (`pattern.masks[k]` for the `k`-th).
    fn apply_rank_pattern(&mut self, pattern: &crate::RankPattern) -> Result<(), CoreError> {
        let adapters = self.svd_adapters_mut();
        if adapters.len() != pattern.masks.len() {
            return Err(CoreError::State(format!(
                "a rank pattern for {} adapters applied to a model with {}",
                pattern.masks.len(),
                adapters.len()
            )));
        }
        for (adapter, keep) in adapters.into_iter().zip(&pattern.masks) {
            adapter.apply_mask(keep)?;
        }
        Ok(())
    }
}
