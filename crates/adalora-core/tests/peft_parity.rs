//! Parity with PEFT's AdaLoRA on fixtures written by `scripts/fixtures/make_core_fixtures.py`.

mod common;

use adalora_core::{
    mask_to_budget, orthogonal_regularizer, AdapterObservation, BudgetSchedule, OrthRegForm, Phase,
    RankAllocator, ScoreConfig,
};
use burn::tensor::Tensor;
use common::*;
use serde_json::Value;

fn expand_rle(v: &Value) -> Vec<Value> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|pair| {
            let p = pair.as_array().unwrap();
            std::iter::repeat_n(p[0].clone(), p[1].as_u64().unwrap() as usize)
        })
        .collect()
}

#[test]
fn schedule_integers_match_peft_exactly() {
    let fx = fixture("schedule.json");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let get = |k: &str| case[k].as_u64().unwrap() as usize;
        let name = case["name"].as_str().unwrap();
        let (budgets, masks) = if case["encoding"] == "rle" {
            (
                expand_rle(&case["budget_rle"]),
                expand_rle(&case["mask_ind_rle"]),
            )
        } else {
            (
                case["budget"].as_array().unwrap().clone(),
                case["mask_ind"].as_array().unwrap().clone(),
            )
        };
        let schedule = BudgetSchedule::new(
            get("init_bgt"),
            get("target_bgt"),
            get("tinit"),
            get("tfinal"),
            get("deltaT"),
            get("total_step"),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(budgets.len(), get("total_step"), "{name}");
        for (t, (b, m)) in budgets.iter().zip(&masks).enumerate() {
            let (budget, mask_ind) = schedule.budget(t);
            assert_eq!(
                budget as u64,
                b.as_u64().unwrap(),
                "{name}: budget at t={t}"
            );
            assert_eq!(mask_ind, m.as_bool().unwrap(), "{name}: mask_ind at t={t}");
        }
    }
}

fn observation(params: &Value) -> AdapterObservation<B> {
    AdapterObservation {
        a: tensor2_t(&params["A"]),
        e: tensor1(&params["E"]),
        b: tensor2_t(&params["B"]),
        grad_a: tensor2_t(&params["grad_A"]),
        grad_e: tensor1(&params["grad_E"]),
        grad_b: tensor2_t(&params["grad_B"]),
    }
}

/// Replays PEFT's 16-step trajectory: same post-step weights and gradients in, same EMAs,
/// scores, budgets, masks and rank pattern out.
#[test]
fn allocator_trajectory_matches_peft() {
    let fx = fixture("allocator.json");
    let cfg = &fx["config"];
    let get = |k: &str| cfg[k].as_u64().unwrap() as usize;
    let modules: Vec<String> = fx["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    let shapes: Vec<(usize, usize, usize)> = modules
        .iter()
        .map(|m| {
            let pm = &cfg["per_module"][m];
            let g = |k: &str| pm[k].as_u64().unwrap() as usize;
            (g("d_in"), g("r"), g("d_out"))
        })
        .collect();
    let schedule = BudgetSchedule::new(
        get("init_bgt"),
        get("target_bgt"),
        get("tinit"),
        get("tfinal"),
        get("deltaT"),
        get("total_step"),
    )
    .unwrap();
    let score = ScoreConfig {
        beta1: cfg["beta1"].as_f64().unwrap(),
        beta2: cfg["beta2"].as_f64().unwrap(),
        ..ScoreConfig::default()
    };
    let mut alloc = RankAllocator::<B>::new(schedule, score, &shapes, &Default::default()).unwrap();

    let mut masks_checked = 0;
    for step in fx["steps"].as_array().unwrap() {
        let t = step["t"].as_u64().unwrap() as usize;
        let obs: Vec<_> = modules
            .iter()
            .map(|m| observation(&step["params"][m]))
            .collect();
        let scores_before_finalize = alloc.triplet_scores();
        let out = alloc.step(&obs).unwrap();
        assert_eq!(out.step, t);
        assert_eq!(
            out.budget as u64,
            step["budget"].as_u64().unwrap(),
            "budget at t={t}"
        );
        assert_eq!(
            out.mask.is_some(),
            step["mask_applied"].as_bool().unwrap(),
            "mask at t={t}"
        );

        // EMAs (first steps) — PyTorch layout in the fixture, burn layout in the state.
        if let Some(ema) = step.get("ema").filter(|e| !e.is_null()) {
            let state = alloc.state();
            let stats = state
                .stats
                .as_ref()
                .expect("EMA state present before T - tfinal");
            for (k, m) in modules.iter().enumerate() {
                let e = &ema[m];
                let st = &stats[k];
                let transposed = |v: &Value| to_vec(tensor2_t(v));
                assert!(
                    rel_err(&st.a.ipt, &transposed(&e["ipt_A"])) < 1e-6,
                    "ipt_A t={t} {m}"
                );
                assert!(
                    rel_err(&st.a.unc, &transposed(&e["unc_A"])) < 1e-6,
                    "unc_A t={t} {m}"
                );
                assert!(
                    rel_err(&st.b.ipt, &transposed(&e["ipt_B"])) < 1e-6,
                    "ipt_B t={t} {m}"
                );
                assert!(
                    rel_err(&st.b.unc, &transposed(&e["unc_B"])) < 1e-6,
                    "unc_B t={t} {m}"
                );
                assert!(
                    rel_err(&st.e.ipt, &vec1(&e["ipt_E"])) < 1e-6,
                    "ipt_E t={t} {m}"
                );
                assert!(
                    rel_err(&st.e.unc, &vec1(&e["unc_E"])) < 1e-6,
                    "unc_E t={t} {m}"
                );
            }
        }

        // Triplet scores: after this step's update, or (at T − tfinal) the frozen ones.
        if !step["scores"].is_null() {
            let ours = match out.phase {
                Phase::Finalize => scores_before_finalize,
                _ => alloc.triplet_scores(),
            };
            for (k, m) in modules.iter().enumerate() {
                let err = rel_err(&ours[k], &vec1(&step["scores"][m]));
                assert!(err <= 1e-6, "scores t={t} {m}: relative error {err:e}");
            }
        }

        // New masks equal PEFT's rank pattern; every applied mask reproduces E_after.
        if let Some(mask) = &out.mask {
            if !step["rank_pattern"].is_null() {
                for (k, m) in modules.iter().enumerate() {
                    assert_eq!(
                        mask.masks[k],
                        bools(&step["rank_pattern"][m]),
                        "pattern t={t} {m}"
                    );
                }
                masks_checked += 1;
            }
            for (k, m) in modules.iter().enumerate() {
                let e = vec1(&step["params"][m]["E"]);
                let masked: Vec<f32> = e
                    .iter()
                    .zip(&mask.masks[k])
                    .map(|(&v, &keep)| if keep { v } else { 0.0 })
                    .collect();
                assert_eq!(
                    masked,
                    vec1(&step["E_after"][m]),
                    "E after masking t={t} {m}"
                );
            }
        }
    }
    assert!(
        masks_checked >= 5,
        "the trajectory must exercise several masks"
    );
    let final_pattern = alloc.rank_pattern();
    assert_eq!(final_pattern.total_rank(), get("target_bgt"));
}

#[test]
fn ties_at_threshold_are_all_masked_like_peft() {
    let fx = fixture("allocator.json");
    for case in fx["ties"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let modules: Vec<&str> = case["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        let scores: Vec<Vec<f32>> = modules.iter().map(|m| vec1(&case["scores"][*m])).collect();
        let budget = case["budget"].as_u64().unwrap() as usize;
        let pattern = mask_to_budget(&scores, budget);
        for (k, m) in modules.iter().enumerate() {
            assert_eq!(
                pattern.masks[k],
                bools(&case["rank_pattern"][*m]),
                "{name}: {m}"
            );
        }
        let masked: usize = pattern.masks.iter().flatten().filter(|&&k| !k).count();
        assert_eq!(
            masked as u64,
            case["num_masked"].as_u64().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn orthogonality_regularizer_matches_peft() {
    let fx = fixture("orth_reg.json");
    let modules: Vec<&str> = fx["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for point in fx["points"].as_array().unwrap() {
        let label = point["label"].as_str().unwrap();
        let adapters: Vec<_> = modules
            .iter()
            .map(|m| {
                let t = &point["tensors"][*m];
                let (_, [r, d_in]) = mat(&t["A"]);
                let (_, [d_out, _]) = mat(&t["B"]);
                let zeros = Value::Array(vec![Value::from(0.0); r]);
                svd_from_peft(
                    Tensor::zeros([d_in, d_out], &Default::default()),
                    None,
                    &t["A"],
                    &zeros,
                    &t["B"],
                    8.0,
                    r as f64,
                )
            })
            .collect();
        let refs: Vec<_> = adapters.iter().collect();
        let device = Default::default();
        let reference = orthogonal_regularizer(&refs, OrthRegForm::Reference, &device);
        let ours = to_vec(reference)[0] as f64;
        for key in ["reg_peft", "reg_f64"] {
            let expected = point[key].as_f64().unwrap();
            let rel = (ours - expected).abs() / expected.abs();
            assert!(
                rel <= 1e-6,
                "{label}: {key} {expected} vs ours {ours} (rel {rel:e})"
            );
        }
        let paper = to_vec(orthogonal_regularizer(&refs, OrthRegForm::Paper, &device))[0] as f64;
        let expected = point["reg_paper_f64"].as_f64().unwrap();
        assert!(
            (paper - expected).abs() / expected <= 1e-6,
            "{label}: paper form {paper} vs {expected}"
        );
    }
}

#[test]
fn svd_forward_delta_and_resize_match_peft() {
    let fx = fixture("svd_forward.json");
    let w0 = tensor2_t(&fx["W0"]);
    let bias = tensor1(&fx["bias"]);
    let alpha = fx["lora_alpha"].as_f64().unwrap();
    let ranknum = fx["ranknum"].as_f64().unwrap();
    let layer = svd_from_peft(
        w0.clone(),
        Some(bias.clone()),
        &fx["A"],
        &fx["E"],
        &fx["B"],
        alpha,
        ranknum,
    );
    let x = tensor2(&fx["x"]);
    let y = to_vec(layer.forward(x.clone()));
    assert!(rel_err(&y, &mat(&fx["y"]).0) <= 1e-6, "forward");
    let delta = to_vec(layer.delta_weight().transpose());
    assert!(
        rel_err(&delta, &mat(&fx["delta_weight"]).0) <= 1e-6,
        "delta weight"
    );

    let case = &fx["rank_pattern_case"];
    let keep = bools(&case["mask"]);
    let mut masked = layer;
    masked.apply_mask(&keep).unwrap();
    assert_eq!(to_vec(masked.lora_e.val()), vec1(&case["E_masked"]));
    let masked_delta = to_vec(masked.delta_weight().transpose());
    assert!(rel_err(&masked_delta, &mat(&case["delta_weight_masked"]).0) <= 1e-6);
    let resized = masked.slice_to_pattern(&keep).unwrap();
    assert_eq!(
        resized.rank(),
        case["resized"]["r"].as_u64().unwrap() as usize
    );
    assert_eq!(
        resized.ranknum,
        case["resized"]["ranknum"].as_f64().unwrap()
    );
    let resized_delta = to_vec(resized.delta_weight().transpose());
    assert!(rel_err(&resized_delta, &mat(&case["resized"]["delta_weight"]).0) <= 1e-6);
    assert!(
        rel_err(&resized_delta, &masked_delta) <= 1e-6,
        "slicing changed ΔW"
    );
    let y_resized = to_vec(resized.forward(x));
    assert!(rel_err(&y_resized, &mat(&case["resized"]["y"]).0) <= 1e-6);
}
