//! Known-answer tests: zero-init identity, merge/unmerge, task switching, rank-pattern
//! slicing, invalid settings, k = 0, and exact resume of the allocator state.

mod common;

use adalora_core::{
    mask_to_budget, AdaLoraConfig, AdapterObservation, AllocatorState, BudgetSchedule, CoreError,
    LoraConfig, RankAllocator, ScoreConfig, ScoreKind, SvdAdapterConfig,
};
use burn::tensor::{Distribution, Tensor};
use common::*;

fn input(rows: usize, d_in: usize, seed: u64) -> Tensor<B, 3> {
    let device = Default::default();
    let _rng = seeded_rng(seed);
    Tensor::random([2, rows, d_in], Distribution::Normal(0.0, 1.0), &device)
}

fn max_abs<const D: usize>(t: Tensor<B, D>) -> f32 {
    to_vec(t.abs()).into_iter().fold(0.0, f32::max)
}

fn rel<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    max_abs(a - b.clone()) / max_abs(b).max(1e-30)
}

#[test]
fn lora_and_svd_start_as_identity() {
    let device = Default::default();
    let base = random_linear(7, 5, 1);
    let x = input(3, 7, 2);
    let reference = base.forward(x.clone());
    let lora = LoraConfig::new()
        .with_r(4)
        .init(base.clone(), &device)
        .unwrap();
    assert_eq!(max_abs(lora.delta_weight()), 0.0);
    assert_eq!(to_vec(lora.forward(x.clone())), to_vec(reference.clone()));
    let svd = SvdAdapterConfig::new()
        .with_init_r(3)
        .init(base, &device)
        .unwrap();
    assert_eq!(max_abs(svd.delta_weight()), 0.0);
    assert!(max_abs(svd.lora_a.val()) > 0.0, "Q is Gaussian, not zero");
    assert_eq!(to_vec(svd.forward(x)), to_vec(reference));
}

#[test]
fn lora_scaling_and_rslora() {
    let c = LoraConfig::new().with_r(16).with_alpha(32.0);
    assert_eq!(c.scaling(), 2.0);
    assert_eq!(c.clone().with_use_rslora(true).scaling(), 8.0);
    let base = random_linear(4, 4, 3);
    let err = LoraConfig::new()
        .with_r(0)
        .init(base, &Default::default())
        .unwrap_err();
    assert!(err.to_string().contains("r = 0"), "{err}");
}

#[test]
fn lora_merge_unmerge_and_task_switch() {
    let device = Default::default();
    let base = random_linear(6, 5, 4);
    let w0 = base.weight.val();
    let mut lora = LoraConfig::new()
        .with_r(3)
        .with_alpha(6.0)
        .init(base, &device)
        .unwrap();
    lora.lora_b = lora
        .lora_b
        .map(|b| b.random_like(Distribution::Normal(0.0, 1.0)));
    let x = input(4, 6, 5);
    let unmerged = lora.forward(x.clone());
    let merged = lora.merge();
    assert!(merged.merged);
    assert!(rel(merged.forward(x.clone()), unmerged.clone()) < 1e-5);
    let merged_twice = merged.merge();
    assert!(
        rel(merged_twice.forward(x.clone()), unmerged.clone()) < 1e-5,
        "merge is idempotent"
    );
    let restored = merged_twice.unmerge();
    assert!(rel(restored.base.as_dense().unwrap().weight.val(), w0.clone()) < 1e-6);
    assert!(
        !restored
            .base
            .as_dense()
            .unwrap()
            .weight
            .val()
            .is_require_grad(),
        "W0 stays frozen"
    );

    // Task switching: another adapter's A/B, merged state kept.
    let other_a = Tensor::<B, 2>::random([6, 3], Distribution::Normal(0.0, 1.0), &device);
    let other_b = Tensor::<B, 2>::random([3, 5], Distribution::Normal(0.0, 1.0), &device);
    let expected = x.clone().matmul(w0.clone().unsqueeze())
        + restored.base.bias().unwrap().val().unsqueeze()
        + x.clone()
            .matmul(other_a.clone().matmul(other_b.clone()).unsqueeze())
            .mul_scalar(2.0);
    let switched = restored.merge().swap_adapter(other_a, other_b).unwrap();
    assert!(switched.merged);
    assert!(rel(switched.forward(x), expected) < 1e-5);
    let bad = switched.swap_adapter(
        Tensor::zeros([6, 2], &device),
        Tensor::zeros([2, 5], &device),
    );
    assert!(matches!(bad, Err(CoreError::Shape(_))));
}

fn trained_svd(seed: u64) -> adalora_core::SvdLinear<B> {
    let device = Default::default();
    let base = random_linear(6, 4, seed);
    let mut svd = SvdAdapterConfig::new()
        .with_init_r(5)
        .with_alpha(10.0)
        .init(base, &device)
        .unwrap();
    svd.lora_e = svd
        .lora_e
        .map(|e| e.random_like(Distribution::Normal(0.0, 1.0)));
    svd
}

#[test]
fn svd_merge_equals_unmerged() {
    let svd = trained_svd(6);
    let x = input(3, 6, 7);
    let w0 = svd.base.as_dense().unwrap().weight.val();
    let unmerged = svd.forward(x.clone());
    let merged = svd.merge();
    assert!(rel(merged.forward(x.clone()), unmerged) < 1e-5);
    assert!(rel(merged.unmerge().base.as_dense().unwrap().weight.val(), w0) < 1e-6);
}

#[test]
fn scale_is_alpha_over_initial_rank_and_survives_masking_and_slicing() {
    let mut svd = trained_svd(8);
    assert!((svd.effective_scale() - 10.0 / (5.0 + 1e-5)).abs() < 1e-12);
    let keep = [true, false, true, false, false];
    svd.apply_mask(&keep).unwrap();
    let masked_delta = svd.delta_weight();
    let x = input(2, 6, 9);
    let masked_out = svd.forward(x.clone());
    let sliced = svd.slice_to_pattern(&keep).unwrap();
    assert_eq!(sliced.rank(), 2);
    assert_eq!(sliced.effective_scale(), 10.0 / (5.0 + 1e-5));
    assert!(rel(sliced.delta_weight(), masked_delta) < 1e-6);
    assert!(rel(sliced.forward(x), masked_out) < 1e-6);
}

#[test]
fn slicing_to_rank_zero_leaves_the_base_layer() {
    let svd = trained_svd(10);
    let x = input(2, 6, 11);
    let base_out = svd.base.forward(x.clone());
    let empty = svd.slice_to_pattern(&[false; 5]).unwrap();
    assert_eq!(empty.rank(), 0);
    assert_eq!(max_abs(empty.delta_weight()), 0.0);
    assert_eq!(to_vec(empty.forward(x)), to_vec(base_out));
    let err = trained_svd(12).slice_to_pattern(&[true; 3]).unwrap_err();
    assert!(err.to_string().contains("3 entries"), "{err}");
}

#[test]
fn invalid_schedules_name_the_value_and_why() {
    let check = |r: Result<BudgetSchedule, CoreError>, needle: &str| {
        let msg = r.expect_err("must be rejected").to_string();
        assert!(msg.contains(needle), "'{msg}' should mention '{needle}'");
    };
    check(BudgetSchedule::new(24, 12, 5, 5, 1, 10), "total_step = 10");
    check(BudgetSchedule::new(24, 12, 5, 5, 1, 9), "tinit + tfinal");
    check(
        BudgetSchedule::new(24, 30, 0, 0, 1, 10),
        "target budget = 30",
    );
    check(BudgetSchedule::new(24, 12, 0, 0, 0, 10), "deltaT = 0");
    check(BudgetSchedule::new(24, 12, 0, 0, 1, 0), "total_step = 0");
    check(BudgetSchedule::new(0, 0, 0, 0, 1, 10), "init_budget = 0");
    let cfg = AdaLoraConfig {
        target_r: 16,
        ..AdaLoraConfig::default()
    };
    check(cfg.schedule(4, 100), "target_r = 16");
    let cfg = AdaLoraConfig {
        beta1: 1.0,
        ..AdaLoraConfig::default()
    };
    check(cfg.schedule(4, 100), "beta1 = 1");
    let cfg = AdaLoraConfig {
        orth_reg_weight: -0.1,
        ..AdaLoraConfig::default()
    };
    check(cfg.schedule(4, 100), "orth_reg_weight");
    let ok = AdaLoraConfig {
        target_total_rank: Some(20),
        ..AdaLoraConfig::default()
    }
    .schedule(4, 100)
    .unwrap();
    assert_eq!((ok.init_budget, ok.target_budget), (48, 20));
}

#[test]
fn k_zero_masks_nothing() {
    let scores = vec![vec![0.3, 0.1], vec![0.2, 0.2, 0.5]];
    let pattern = mask_to_budget(&scores, 5);
    assert_eq!(pattern.total_rank(), 5);
    let pattern = mask_to_budget(&scores, 0);
    assert_eq!(pattern.total_rank(), 0, "budget 0 masks everything");
    let pattern = mask_to_budget(&scores, 3);
    assert_eq!(
        pattern.masks,
        vec![vec![true, false], vec![false, false, true]],
        "ties masked"
    );
}

fn random_observations(shapes: &[(usize, usize, usize)], seed: u64) -> Vec<AdapterObservation<B>> {
    let device = Default::default();
    let _rng = seeded_rng(seed);
    let n = Distribution::Normal(0.0, 1.0);
    shapes
        .iter()
        .map(|&(i, r, o)| AdapterObservation {
            a: Tensor::random([i, r], n, &device),
            e: Tensor::random([r], n, &device),
            b: Tensor::random([r, o], n, &device),
            grad_a: Tensor::random([i, r], n, &device),
            grad_e: Tensor::random([r], n, &device),
            grad_b: Tensor::random([r, o], n, &device),
        })
        .collect()
}

#[test]
fn equal_init_and_target_rank_runs_without_masking() {
    let shapes = [(4, 3, 5), (6, 3, 2)];
    let schedule = BudgetSchedule::new(6, 6, 1, 2, 1, 8).unwrap();
    let mut alloc = RankAllocator::<B>::new(
        schedule,
        ScoreConfig::default(),
        &shapes,
        &Default::default(),
    )
    .unwrap();
    for t in 0..10 {
        let out = alloc.step(&random_observations(&shapes, t)).unwrap();
        if let Some(mask) = out.mask {
            assert_eq!(mask.total_rank(), 6, "k = 0 at t={t} must mask nothing");
        }
    }
}

/// Saving the state mid-budget-phase and restoring it continues exactly like the
/// uninterrupted allocator (every score variant).
#[test]
fn allocator_state_round_trips_exactly() {
    let shapes = [(5, 4, 3), (3, 4, 6), (4, 4, 4)];
    for kind in [
        ScoreKind::SensitivityUncertainty,
        ScoreKind::Sensitivity,
        ScoreKind::Magnitude,
    ] {
        let schedule = BudgetSchedule::new(12, 5, 2, 4, 2, 16).unwrap();
        let score = ScoreConfig {
            kind,
            ..ScoreConfig::default()
        };
        let device = Default::default();
        let mut a = RankAllocator::<B>::new(schedule, score, &shapes, &device).unwrap();
        let mut b: Option<RankAllocator<B>> = None;
        for t in 0..18u64 {
            let obs = random_observations(&shapes, 100 + t);
            if t == 7 {
                let json = serde_json::to_string(&a.state()).unwrap();
                let state: AllocatorState = serde_json::from_str(&json).unwrap();
                b = Some(RankAllocator::from_state(&state, &device).unwrap());
            }
            let out_a = a.step(&obs).unwrap();
            if let Some(b) = b.as_mut() {
                assert_eq!(b.step(&obs).unwrap(), out_a, "{kind:?} diverged at t={t}");
            }
        }
        assert_eq!(a.rank_pattern().total_rank(), 5, "{kind:?}");
    }
}
