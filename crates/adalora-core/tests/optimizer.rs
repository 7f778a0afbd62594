//! The core's AdaLoRA pieces composed by hand on a tiny two-layer model, as a training loop
//! does (the trainer's driver is the one in use): regularized loss → optimizer update →
//! observations → `RankAllocator::step` → mask; the run ends at exactly the target total rank.

mod common;

use adalora_core::{
    adapter_gradients, adapter_weights, observations, orthogonal_regularizer, AdaLoraConfig,
    AdaptedLinear, AdapterHost, OrthRegForm, RankAllocator, StepOutcome,
};
use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

type AB = Autodiff<NdArray<f32>>;

#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    first: AdaptedLinear<B>,
    second: AdaptedLinear<B>,
}

impl<B: Backend> AdapterHost<B> for Tiny<B> {
    fn adapted_linears(&self) -> Vec<&AdaptedLinear<B>> {
        vec![&self.first, &self.second]
    }
    fn adapted_linears_mut(&mut self) -> Vec<&mut AdaptedLinear<B>> {
        vec![&mut self.first, &mut self.second]
    }
}

/// One optimizer update plus one allocator step on the post-update weights.
fn step<O: Optimizer<Tiny<AB>, AB>>(
    optim: &mut O,
    allocator: &mut RankAllocator<NdArray<f32>>,
    lr: f64,
    model: Tiny<AB>,
    grads: GradientsParams,
) -> (Tiny<AB>, StepOutcome) {
    let grad_triplets = adapter_gradients(&model.svd_adapters(), &grads);
    let mut model = optim.step(lr, model, grads);
    let weights = adapter_weights(&model.svd_adapters());
    let outcome = allocator
        .step(&observations(weights, grad_triplets))
        .unwrap();
    if let Some(pattern) = &outcome.mask {
        model.apply_rank_pattern(pattern).unwrap();
    }
    (model, outcome)
}

impl<B: Backend> Tiny<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.second
            .forward(burn::tensor::activation::relu(self.first.forward(x)))
    }
}

fn linear(d_in: usize, d_out: usize) -> burn::nn::Linear<AB> {
    let device = Default::default();
    let w = Tensor::<AB, 2>::random([d_in, d_out], Distribution::Normal(0.0, 0.3), &device);
    adalora_core::frozen_linear(w, Some(Tensor::zeros([d_out], &device)))
}

#[test]
fn one_step_call_trains_and_ends_at_the_target_rank() {
    let device = Default::default();
    // The autodiff backend draws from the inner backend's generator, which this seeds.
    let _rng = common::seeded_rng(7);
    let cfg = AdaLoraConfig {
        init_r: 6,
        target_r: 2,
        alpha: 12.0,
        tinit: 5.into(),
        tfinal: 10.into(),
        delta_t: 3,
        ..AdaLoraConfig::default()
    };
    let total_step = 60;
    let adapter = cfg.adapter_config();
    let model = Tiny {
        first: AdaptedLinear::Svd(adapter.init(linear(8, 10), &device).unwrap()),
        second: AdaptedLinear::Svd(adapter.init(linear(10, 3), &device).unwrap()),
    };
    let w0_before = model.first.base().as_dense().unwrap().weight.val().inner();
    let shapes = model.svd_shapes();
    let schedule = cfg.schedule(shapes.len(), total_step).unwrap();
    let mut allocator =
        RankAllocator::new(schedule.clone(), cfg.score_config(), &shapes, &device).unwrap();
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();

    let x = Tensor::<AB, 2>::random([64, 8], Distribution::Normal(0.0, 1.0), &device);
    let teacher = Tensor::<AB, 2>::random([8, 3], Distribution::Normal(0.0, 1.0), &device);
    let y = x.clone().matmul(teacher).detach();

    let mut model = model;
    let mut losses = Vec::new();
    for t in 0..total_step {
        let task = (model.forward(x.clone()) - y.clone()).powi_scalar(2).mean();
        let reg = orthogonal_regularizer(&model.svd_adapters(), OrthRegForm::Reference, &device);
        let loss = task.clone() + reg.mul_scalar(cfg.orth_reg_weight);
        losses.push(task.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let (next, outcome) = step(&mut optim, &mut allocator, 1e-2, model, grads);
        model = next;
        assert_eq!(outcome.step, t);
        if let Some(mask) = &outcome.mask {
            // λ of every masked triplet is exactly zero right after the step.
            for (adapter, keep) in model.svd_adapters().iter().zip(&mask.masks) {
                let e = common::to_vec(adapter.lora_e.val().inner());
                for (v, k) in e.iter().zip(keep) {
                    assert!(*k || *v == 0.0, "masked λ not zeroed at t={t}");
                }
                assert!(adapter.lora_e.val().is_require_grad(), "λ stays trainable");
            }
        }
    }
    assert!(
        losses[total_step - 1] < 0.5 * losses[0],
        "loss must decrease: {losses:?}"
    );
    let pattern = allocator.rank_pattern();
    assert_eq!(pattern.total_rank(), schedule.target_budget);
    let nonzero: usize = model
        .svd_adapters()
        .iter()
        .map(|a| {
            common::to_vec(a.lora_e.val().inner())
                .iter()
                .filter(|v| **v != 0.0)
                .count()
        })
        .sum();
    assert_eq!(
        nonzero, schedule.target_budget,
        "exactly b(T) live singular values"
    );
    let w0_after = model.first.base().as_dense().unwrap().weight.val().inner();
    assert_eq!(
        common::to_vec(w0_after),
        common::to_vec(w0_before),
        "W0 is frozen"
    );

    // The allocator state (what a checkpoint stores for resume) ends at T with the pattern.
    let state = allocator.state();
    assert_eq!(state.step, total_step);
    assert_eq!(state.rank_pattern, Some(pattern));
}

#[test]
fn frozen_weights_get_no_gradient() {
    let device = Default::default();
    // Every test in this file draws under the guard, so none perturbs another's numbers.
    let _rng = common::seeded_rng(3);
    let model = Tiny {
        first: AdaptedLinear::Svd(
            AdaLoraConfig::default()
                .adapter_config()
                .init(linear(4, 5), &device)
                .unwrap(),
        ),
        second: AdaptedLinear::Plain(linear(5, 2).into()),
    };
    let x = Tensor::<AB, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), &device);
    let grads = model.forward(x).sum().backward();
    assert!(model
        .first
        .base()
        .as_dense()
        .unwrap()
        .weight
        .val()
        .grad(&grads)
        .is_none());
    assert!(model
        .second
        .base()
        .as_dense()
        .unwrap()
        .weight
        .val()
        .grad(&grads)
        .is_none());
    let svd = model.first.as_svd().unwrap();
    assert!(svd.lora_e.val().grad(&grads).is_some());
    let sliced = svd
        .clone()
        .slice_to_pattern(
            &vec![true; svd.rank() - 1]
                .into_iter()
                .chain([false])
                .collect::<Vec<_>>(),
        )
        .unwrap();
    assert!(
        sliced.lora_e.val().is_require_grad(),
        "sliced λ stays trainable"
    );
}

/// Which weights the sensitivity multiplies (`ScoreWeights`) is decided by the trainer's
/// driver, which reads it from `RankAllocator::score_config()` (its own test,
/// `the_driver_scores_the_weights_the_config_names`, checks the scores). The core's part is
/// carrying the setting there: from the config, and through a checkpoint's allocator state.
#[test]
fn score_weights_reach_the_allocator_and_survive_a_checkpoint() {
    use adalora_core::ScoreWeights;
    let device = Default::default();
    let _rng = common::seeded_rng(11);
    let model = Tiny {
        first: AdaptedLinear::Svd(
            AdaLoraConfig::default()
                .adapter_config()
                .init(linear(4, 5), &device)
                .unwrap(),
        ),
        second: AdaptedLinear::Plain(linear(5, 2).into()),
    };
    for weights in [ScoreWeights::PreUpdate, ScoreWeights::PostUpdate] {
        let cfg = AdaLoraConfig {
            score_weights: weights,
            ..AdaLoraConfig::default()
        };
        let schedule = cfg.schedule(1, 10).unwrap();
        let allocator: RankAllocator<NdArray<f32>> =
            RankAllocator::new(schedule, cfg.score_config(), &model.svd_shapes(), &device).unwrap();
        assert_eq!(allocator.score_config().weights, weights, "from the config");
        let resumed: RankAllocator<NdArray<f32>> =
            RankAllocator::from_state(&allocator.state(), &device).unwrap();
        assert_eq!(resumed.score_config().weights, weights, "after a resume");
    }
}
