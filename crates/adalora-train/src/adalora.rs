//! The AdaLoRA driver: the one place a training step does AdaLoRA's work around the optimizer.
//! Before `backward`, the loss gains γ·R(P, Q) (the orthogonality term); after the optimizer
//! update, the allocator observes every adapter's weights and gradients, steps the budget
//! schedule, and its mask (if any) zeroes the pruned λ. The core provides the pieces
//! (regularizer, `RankAllocator::step`, schedule); the order is decided here.

use std::time::{Duration, Instant};

use adalora_core::{
    adapter_gradients, adapter_weights, observations, orthogonal_regularizer, AdaLoraConfig,
    AdapterHost, AllocatorState, OrthRegForm, RankAllocator, ScoreWeights,
};
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::record::{PrecisionSettings, Record};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

pub(crate) struct AdaLoraDriver<B: AutodiffBackend> {
    allocator: RankAllocator<B::InnerBackend>,
    orth_form: OrthRegForm,
    /// γ.
    orth_reg_weight: f64,
    /// Wall time of the latest step's allocator work (gathering, scores, masking), without the
    /// optimizer update: what `adalora bench` reports as allocator time.
    allocation_time: Duration,
}

impl<B: AutodiffBackend> AdaLoraDriver<B> {
    /// The driver for `model`'s SVD adapters; `cfg` must be resolved (it carries total_step).
    pub(crate) fn new<M: AdapterHost<B>>(
        cfg: &AdaLoraConfig,
        model: &M,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        let total_step = cfg
            .total_step
            .ok_or_else(|| anyhow::anyhow!("AdaLoRA settings without total_step"))?;
        let shapes = model.svd_shapes();
        let schedule = cfg.schedule(shapes.len(), total_step)?;
        Ok(AdaLoraDriver {
            allocator: RankAllocator::new(schedule, cfg.score_config(), &shapes, device)?,
            orth_form: cfg.orth_form,
            orth_reg_weight: cfg.orth_reg_weight,
            allocation_time: Duration::ZERO,
        })
    }

    pub(crate) fn allocator(&self) -> &RankAllocator<B::InnerBackend> {
        &self.allocator
    }

    pub(crate) fn last_allocation_time(&self) -> Duration {
        self.allocation_time
    }

    /// R(P, Q) of `model`'s adapters (before γ): the loss gets `γ·R` added.
    pub(crate) fn orthogonality_term<M: AdapterHost<B>>(
        &self,
        model: &M,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        orthogonal_regularizer(&model.svd_adapters(), self.orth_form, device)
    }

    /// `task_loss + γ·term`.
    pub(crate) fn regularized(&self, task_loss: Tensor<B, 1>, term: Tensor<B, 1>) -> Tensor<B, 1> {
        task_loss + term.mul_scalar(self.orth_reg_weight)
    }

    /// The optimizer update, then one allocator step on what it observed; returns the updated
    /// (and possibly masked) model.
    pub(crate) fn step<M, O>(
        &mut self,
        optimizer: &mut O,
        lr: f64,
        model: M,
        grads: GradientsParams,
    ) -> anyhow::Result<M>
    where
        M: AutodiffModule<B> + AdapterHost<B>,
        O: Optimizer<M, B>,
    {
        let gather_started = Instant::now();
        let adapter_grads = adapter_gradients(&model.svd_adapters(), &grads);
        // The paper's variant scores the weights the gradient was computed at; PEFT (the
        // default) scores the weights after the update.
        let pre_update = match self.allocator.score_config().weights {
            ScoreWeights::PreUpdate => Some(adapter_weights(&model.svd_adapters())),
            ScoreWeights::PostUpdate => None,
        };
        let gather_time = gather_started.elapsed();
        let mut model = optimizer.step(lr, model, grads);
        let allocate_started = Instant::now();
        let weights = pre_update.unwrap_or_else(|| adapter_weights(&model.svd_adapters()));
        let outcome = self.allocator.step(&observations(weights, adapter_grads))?;
        if let Some(pattern) = &outcome.mask {
            model.apply_rank_pattern(pattern)?;
        }
        self.allocation_time = gather_time + allocate_started.elapsed();
        Ok(model)
    }

    /// Continue from a checkpoint's allocator state (validated against the model's adapters).
    pub(crate) fn restore(
        &mut self,
        state: &AllocatorState,
        device: &B::Device,
    ) -> anyhow::Result<()> {
        self.allocator = RankAllocator::from_state(state, device)?;
        Ok(())
    }

    pub(crate) fn state(&self) -> AllocatorState {
        self.allocator.state()
    }
}

/// The optimizer state of an AdaLoRA run's checkpoint: the optimizer's record plus the
/// allocator's state, so a resumed run continues exactly. (Field order is the on-disk format
/// of checkpoints written since the first release.)
pub(crate) struct AdaLoraRecord<R> {
    pub inner: R,
    pub allocator: AllocatorState,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(bound = "I: Serialize + serde::de::DeserializeOwned")]
pub(crate) struct AdaLoraRecordItem<I> {
    inner: I,
    allocator: AllocatorState,
}

impl<B: Backend, R: Record<B>> Record<B> for AdaLoraRecord<R> {
    type Item<S: PrecisionSettings> = AdaLoraRecordItem<R::Item<S>>;

    fn into_item<S: PrecisionSettings>(self) -> Self::Item<S> {
        AdaLoraRecordItem {
            inner: self.inner.into_item(),
            allocator: self.allocator,
        }
    }

    fn from_item<S: PrecisionSettings>(item: Self::Item<S>, device: &B::Device) -> Self {
        AdaLoraRecord {
            inner: R::from_item(item.inner, device),
            allocator: item.allocator,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adalora_core::to_f32_vec;
    use adalora_core::{frozen_linear, AdaptedLinear, Steps};
    use burn::backend::{Autodiff, NdArray};
    use burn::module::Module;
    use burn::optim::AdamWConfig;
    use burn::tensor::Distribution;

    type AB = Autodiff<NdArray<f32>>;

    #[derive(Module, Debug)]
    struct One<B: Backend> {
        layer: AdaptedLinear<B>,
    }

    impl<B: Backend> AdapterHost<B> for One<B> {
        fn adapted_linears(&self) -> Vec<&AdaptedLinear<B>> {
            vec![&self.layer]
        }
        fn adapted_linears_mut(&mut self) -> Vec<&mut AdaptedLinear<B>> {
            vec![&mut self.layer]
        }
    }

    /// The paper's variant scores the weights the gradient was computed at; PEFT's (the
    /// default) the weights after the update. First step from zero EMAs: Ī = (1 − β1)·|λ·g|.
    #[test]
    fn the_driver_scores_the_weights_the_config_names() {
        let device = Default::default();
        for weights in [ScoreWeights::PreUpdate, ScoreWeights::PostUpdate] {
            AB::seed(&device, 11);
            let cfg = AdaLoraConfig {
                init_r: 3,
                target_r: 2,
                score_weights: weights,
                tinit: Steps::Count(0),
                tfinal: Steps::Count(0),
                delta_t: 1,
                ..AdaLoraConfig::default()
            }
            .resolve(10)
            .unwrap();
            let w = Tensor::<AB, 2>::random([4, 5], Distribution::Normal(0.0, 0.3), &device);
            let base = frozen_linear(w, Some(Tensor::zeros([5], &device)));
            let model = One {
                layer: AdaptedLinear::Svd(cfg.adapter_config().init(base, &device).unwrap()),
            };
            let mut driver = AdaLoraDriver::new(&cfg, &model, &device).unwrap();
            let mut adam = AdamWConfig::new().init();
            let x = Tensor::<AB, 2>::random([6, 4], Distribution::Normal(0.0, 1.0), &device);
            let loss = model.layer.forward(x).powi_scalar(2).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let lora_e = model.svd_adapters()[0].lora_e.clone();
            let grad_e = grads.get::<NdArray<f32>, 1>(lora_e.id).unwrap();
            let before = lora_e.val().inner();
            let model = driver.step(&mut adam, 0.1, model, grads).unwrap();
            let after = model.svd_adapters()[0].lora_e.val().inner();
            let moved = to_f32_vec(before.clone())
                .iter()
                .zip(to_f32_vec(after.clone()))
                .all(|(b, a)| *b != a);
            assert!(moved, "every λ must move, or both variants score the same");
            let scored = match weights {
                ScoreWeights::PreUpdate => before,
                ScoreWeights::PostUpdate => after,
            };
            let expected = to_f32_vec((scored * grad_e).abs().mul_scalar(1.0 - cfg.beta1));
            let state = driver.state();
            let stats = state
                .stats
                .as_ref()
                .expect("the driver stepped the allocator");
            assert_eq!(stats.len(), 1, "one adapter, one set of EMAs");
            assert_eq!(expected.len(), cfg.init_r, "one λ score per triplet");
            assert_close(&stats[0].e.ipt, &expected, &format!("{weights:?}"));
        }
    }

    /// Same length (so an empty or truncated result fails) and each value within 1e-5 of the
    /// expected one, relative to its magnitude (floored at 1e-12, so a zero must stay zero).
    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            let err = (g - w).abs() / w.abs().max(1e-12);
            assert!(err < 1e-5, "{what}: {got:?} vs {want:?}");
        }
    }
}
