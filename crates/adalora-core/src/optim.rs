//! `AdaLoraOptimizer`: wraps any burn optimizer so that a single `step` call does the
//! optimizer update *and* the AdaLoRA allocation (scores → schedule → mask). A training loop
//! therefore cannot forget the allocator step — PEFT's most common AdaLoRA pitfall.

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, LearningRate, MultiGradientsParams, Optimizer};
use burn::record::{PrecisionSettings, Record};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

use crate::adapted::AdapterHost;
use crate::allocator::{
    AdapterObservation, AllocatorState, RankAllocator, ScoreWeights, StepOutcome,
};
use crate::error::CoreError;
use crate::svd::SvdLinear;

/// Any optimizer plus the rank allocator.
#[derive(Clone)]
pub struct AdaLoraOptimizer<O, B: AutodiffBackend> {
    inner: O,
    allocator: RankAllocator<B::InnerBackend>,
    last: Option<StepOutcome>,
    /// Wall time of the latest step's allocator work (gradient/weight gathering, scores,
    /// masking), without the inner optimizer: what `adalora bench` reports as allocator time.
    allocation_time: Duration,
}

impl<O, B: AutodiffBackend> AdaLoraOptimizer<O, B> {
    pub fn new(inner: O, allocator: RankAllocator<B::InnerBackend>) -> Self {
        AdaLoraOptimizer {
            inner,
            allocator,
            last: None,
            allocation_time: Duration::ZERO,
        }
    }

    pub fn allocator(&self) -> &RankAllocator<B::InnerBackend> {
        &self.allocator
    }

    /// What the allocator did in the latest step (budget, phase, mask).
    pub fn last_outcome(&self) -> Option<&StepOutcome> {
        self.last.as_ref()
    }

    /// Wall time of the latest step's allocation work (excludes the inner optimizer). On a
    /// lazily executing backend (GPU) this is the time to enqueue it.
    pub fn last_allocation_time(&self) -> Duration {
        self.allocation_time
    }

    /// Optimizer step, then allocation; returns the updated (and possibly masked) module.
    pub fn try_step<M>(
        &mut self,
        lr: LearningRate,
        module: M,
        grads: GradientsParams,
    ) -> Result<M, CoreError>
    where
        M: AutodiffModule<B> + AdapterHost<B>,
        O: Optimizer<M, B>,
    {
        let gather_started = Instant::now();
        let adapter_grads: Vec<_> = module
            .svd_adapters()
            .iter()
            .map(|a| adapter_grads(a, &grads))
            .collect();
        let pre_update = match self.allocator.score_config().weights {
            ScoreWeights::PreUpdate => Some(adapter_values(&module)),
            ScoreWeights::PostUpdate => None,
        };
        let gather_time = gather_started.elapsed();
        let mut module = self.inner.step(lr, module, grads);
        let allocate_started = Instant::now();
        let weights = pre_update.unwrap_or_else(|| adapter_values(&module));
        let observations: Vec<_> = weights
            .into_iter()
            .zip(adapter_grads)
            .map(|((a, e, b), (grad_a, grad_e, grad_b))| AdapterObservation {
                a,
                e,
                b,
                grad_a,
                grad_e,
                grad_b,
            })
            .collect();
        let outcome = self.allocator.step(&observations)?;
        if let Some(pattern) = &outcome.mask {
            for (adapter, keep) in module.svd_adapters_mut().into_iter().zip(&pattern.masks) {
                adapter.apply_mask(keep)?;
            }
        }
        self.last = Some(outcome);
        self.allocation_time = gather_time + allocate_started.elapsed();
        Ok(module)
    }

    pub fn state(&self) -> AllocatorState {
        self.allocator.state()
    }
}

type Values<B> = (Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 2>);

fn adapter_values<B: AutodiffBackend, M: AdapterHost<B>>(
    module: &M,
) -> Vec<Values<B::InnerBackend>> {
    module
        .svd_adapters()
        .iter()
        .map(|a| {
            (
                a.lora_a.val().inner(),
                a.lora_e.val().inner(),
                a.lora_b.val().inner(),
            )
        })
        .collect()
}

/// A parameter outside the graph has no gradient: its sensitivity is zero (PEFT raises a
/// `TypeError` on `p.grad is None` instead).
fn adapter_grads<B: AutodiffBackend>(
    adapter: &SvdLinear<B>,
    grads: &GradientsParams,
) -> Values<B::InnerBackend> {
    let (a, e, b) = (
        adapter.lora_a.val().inner(),
        adapter.lora_e.val().inner(),
        adapter.lora_b.val().inner(),
    );
    (
        grads
            .get::<B::InnerBackend, 2>(adapter.lora_a.id)
            .unwrap_or_else(|| a.zeros_like()),
        grads
            .get::<B::InnerBackend, 1>(adapter.lora_e.id)
            .unwrap_or_else(|| e.zeros_like()),
        grads
            .get::<B::InnerBackend, 2>(adapter.lora_b.id)
            .unwrap_or_else(|| b.zeros_like()),
    )
}

/// Optimizer state plus allocator state, so a resumed run continues exactly.
pub struct AdaLoraOptimizerRecord<R> {
    pub inner: R,
    pub allocator: AllocatorState,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(bound = "I: Serialize + serde::de::DeserializeOwned")]
pub struct AdaLoraOptimizerItem<I> {
    inner: I,
    allocator: AllocatorState,
}

impl<B: Backend, R: Record<B>> Record<B> for AdaLoraOptimizerRecord<R> {
    type Item<S: PrecisionSettings> = AdaLoraOptimizerItem<R::Item<S>>;

    fn into_item<S: PrecisionSettings>(self) -> Self::Item<S> {
        AdaLoraOptimizerItem {
            inner: self.inner.into_item(),
            allocator: self.allocator,
        }
    }

    fn from_item<S: PrecisionSettings>(item: Self::Item<S>, device: &B::Device) -> Self {
        AdaLoraOptimizerRecord {
            inner: R::from_item(item.inner, device),
            allocator: item.allocator,
        }
    }
}

impl<M, B, O> Optimizer<M, B> for AdaLoraOptimizer<O, B>
where
    M: AutodiffModule<B> + AdapterHost<B>,
    B: AutodiffBackend,
    O: Optimizer<M, B>,
{
    type Record = AdaLoraOptimizerRecord<O::Record>;

    /// Panics only when the model and the allocator disagree on the adapters (a construction
    /// bug); use [`AdaLoraOptimizer::try_step`] to handle that as an error.
    fn step(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> M {
        self.try_step(lr, module, grads)
            .unwrap_or_else(|e| panic!("AdaLoRA allocation failed: {e}"))
    }

    /// Multi-device gradients are first accumulated into one set, then stepped as usual.
    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        let single = accumulate::<B, M>(&module, grads);
        self.step(lr, module, single)
    }

    fn to_record(&self) -> Self::Record {
        AdaLoraOptimizerRecord {
            inner: self.inner.to_record(),
            allocator: self.allocator.state(),
        }
    }

    fn load_record(self, record: Self::Record) -> Self {
        let device = self.allocator_device();
        let allocator = RankAllocator::from_state(&record.allocator, &device)
            .unwrap_or_else(|e| panic!("cannot restore the AdaLoRA allocator: {e}"));
        AdaLoraOptimizer {
            inner: self.inner.load_record(record.inner),
            allocator,
            last: None,
            allocation_time: Duration::ZERO,
        }
    }
}

impl<O, B: AutodiffBackend> AdaLoraOptimizer<O, B> {
    /// Restore both states (fallible version of `load_record`).
    pub fn restore_allocator(&mut self, state: &AllocatorState) -> Result<(), CoreError> {
        self.allocator = RankAllocator::from_state(state, &self.allocator_device())?;
        Ok(())
    }

    fn allocator_device(&self) -> burn::tensor::Device<B::InnerBackend> {
        Default::default()
    }
}

fn accumulate<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    mut multi: MultiGradientsParams,
) -> GradientsParams {
    use burn::module::{ModuleVisitor, Param, ParamId};
    struct Collect<'a, B: AutodiffBackend> {
        multi: &'a mut MultiGradientsParams,
        out: GradientsParams,
        _b: core::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let id: ParamId = param.id;
            if let Some((grad, _)) = self.multi.remove::<B::InnerBackend, D>(id) {
                self.out.register::<B::InnerBackend, D>(id, grad);
            }
        }
    }
    let mut visitor = Collect::<B> {
        multi: &mut multi,
        out: GradientsParams::new(),
        _b: core::marker::PhantomData,
    };
    module.visit(&mut visitor);
    visitor.out
}
