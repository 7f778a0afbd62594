//! Initialisations from the pretrained weight (`lora.init = "pissa" | "olora"`,
//! `adalora.init = "svd"`): the factors against PEFT's own on committed fixtures
//! (`scripts/fixtures/make_init_fixtures.py`), the residual base, and a trained-then-exported
//! adapter: the PEFT file (converted to the unmodified W0) loads to the live model's function,
//! and merging it gives the same function again.

use std::path::PathBuf;

use adalora_core::{
    frozen_linear, AdaptedLinear, AdapterHost, LoraConfig, RankPattern, SvdAdapterConfig,
};
use adalora_model::loader::load_for_classification;
use adalora_model::{apply_method, AnyClassifier, ModelInput, SequenceClassifier};
use adalora_train::init::{adalora_svd, apply_weight_init, olora, pissa, Factors};
use adalora_train::io::replace_dir;
use adalora_train::peft::{load_peft_adapter, read_adapter_config, save_peft_adapter};
use adalora_train::RunConfig;
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use ndarray::Array2;
use serde_json::Value;

type B = NdArray<f32>;

const TOL: f64 = 1e-5;

fn fixture() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/init/init.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture")).unwrap()
}

fn mat(v: &Value) -> Array2<f64> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    let (m, n) = (rows.len(), rows[0].len());
    Array2::from_shape_vec((m, n), rows.into_iter().flatten().collect()).unwrap()
}

fn max_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    (a - b).iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Fix the sign ambiguity of index i (row i of `a`, column i of `b`, and nothing in λ):
/// the largest-magnitude entry of row i of `a` becomes positive.
fn fix_signs(a: &Array2<f64>, b: &Array2<f64>) -> (Array2<f64>, Array2<f64>) {
    let (mut a, mut b) = (a.clone(), b.clone());
    for i in 0..a.nrows() {
        let row = a.row(i);
        let big = row
            .iter()
            .copied()
            .fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
        if big < 0.0 {
            a.row_mut(i).mapv_inplace(|x| -x);
            b.column_mut(i).mapv_inplace(|x| -x);
        }
    }
    (a, b)
}

/// burn-layout `[rows, cols]` tensor from a PyTorch-layout `[cols, rows]` matrix.
fn burn_t(m: &Array2<f64>) -> Tensor<B, 2> {
    let t = m.t();
    let data: Vec<f32> = t.iter().map(|&x| x as f32).collect();
    Tensor::from_data(
        TensorData::new(data, [t.nrows(), t.ncols()]),
        &Default::default(),
    )
}

/// A burn-layout `[d_in, d_out]` tensor as a PyTorch-layout `[d_out, d_in]` matrix.
fn hf(t: Tensor<B, 2>) -> Array2<f64> {
    let [r, c] = t.dims();
    let v: Vec<f64> = adalora_core::to_f32_vec(t)
        .into_iter()
        .map(f64::from)
        .collect();
    Array2::from_shape_vec((r, c), v).unwrap().reversed_axes()
}

#[test]
fn lora_factors_and_residual_match_peft() {
    let doc = fixture();
    let cases = doc["lora"].as_array().unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let w = mat(&case["w"]);
        let r = case["r"].as_u64().unwrap() as usize;
        let alpha = case["alpha"].as_f64().unwrap();
        let rslora = case["use_rslora"].as_bool().unwrap();
        let cfg = LoraConfig::new()
            .with_r(r)
            .with_alpha(alpha)
            .with_use_rslora(rslora);
        let s = cfg.scaling();
        assert!((s - case["scaling"].as_f64().unwrap()).abs() < 1e-12);
        let name = format!("{} {:?} r={r} rslora={rslora}", case["init"], w.dim());
        let f: Factors = match case["init"].as_str().unwrap() {
            "pissa" => pissa(&w, r, s).unwrap(),
            "olora" => olora(&w, r).unwrap(),
            other => panic!("{other}"),
        };
        let delta = f.b.dot(&f.a) * s;
        let d = max_diff(&delta, &mat(&case["delta"]));
        assert!(d < TOL, "{name}: s·B·A differs from PEFT's by {d:e}");
        let (a, b) = fix_signs(&f.a, &f.b);
        let (pa, pb) = fix_signs(&mat(&case["lora_A"]), &mat(&case["lora_B"]));
        let (da, db) = (max_diff(&a, &pa), max_diff(&b, &pb));
        assert!(da < TOL && db < TOL, "{name}: A by {da:e}, B by {db:e}");
        // The core's layer: the base becomes PEFT's residual, computed in f32.
        let layer = cfg
            .init::<B>(frozen_linear(burn_t(&w), None), &Default::default())
            .unwrap()
            .with_init_factors(burn_t(&f.a), burn_t(&f.b))
            .unwrap();
        let residual = hf(layer.base.weight(&Default::default()));
        let d = max_diff(&residual, &mat(&case["residual"]));
        assert!(d < TOL, "{name}: residual differs from PEFT's by {d:e}");
        // And the layer's W0-equivalent (residual + ΔW) is W0.
        let live = &residual + &hf(layer.delta_weight());
        assert!(max_diff(&live, &w) < TOL, "{name}");
    }
}

#[test]
fn adalora_svd_triplets_match_numpy() {
    let doc = fixture();
    for case in doc["adalora"].as_array().unwrap() {
        let w = mat(&case["w"]);
        let init_r = case["init_r"].as_u64().unwrap() as usize;
        let alpha = case["alpha"].as_f64().unwrap();
        let layer = SvdAdapterConfig::new()
            .with_init_r(init_r)
            .with_alpha(alpha)
            .init::<B>(frozen_linear(burn_t(&w), None), &Default::default())
            .unwrap();
        let s = layer.effective_scale();
        assert!((s - alpha / (init_r as f64 + 1e-5)).abs() < 1e-12);
        let f = adalora_svd(&w, init_r, s).unwrap();
        let lam: Vec<f64> = serde_json::from_value(case["lora_E"].clone()).unwrap();
        for (x, y) in f.e.iter().zip(&lam) {
            assert!((x - y).abs() < TOL * y.abs().max(1.0), "λ {x} vs {y}");
        }
        let (q, p) = fix_signs(&f.a, &f.b);
        let (fq, fp) = fix_signs(&mat(&case["lora_A"]), &mat(&case["lora_B"]));
        assert!(max_diff(&q, &fq) < TOL && max_diff(&p, &fp) < TOL);
        let e: Vec<f32> = f.e.iter().map(|&x| x as f32).collect();
        let e = Tensor::from_data(TensorData::new(e, [init_r]), &Default::default());
        let layer = layer
            .with_init_factors(burn_t(&f.a), e, burn_t(&f.b))
            .unwrap();
        let residual = hf(layer.base.weight(&Default::default()));
        let d = max_diff(&residual, &mat(&case["residual"]));
        assert!(d < TOL, "residual by {d:e}");
        let d = max_diff(&hf(layer.delta_weight()), &mat(&case["delta"]));
        assert!(d < TOL, "ΔW at step 0 by {d:e}");
    }
}

fn tiny_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model/tiny-bert")
}

fn base_model() -> AnyClassifier<B> {
    load_for_classification::<B>(&tiny_model_dir(), 3, 0, &Default::default())
        .unwrap()
        .0
}

fn input() -> ModelInput<B> {
    let ids = [2i64, 7, 11, 5, 3, 0, 2, 9, 4, 13, 8, 3];
    let types = [0i64; 12];
    let mask = [1i64, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1];
    ModelInput::from_rows(&ids, &types, &mask, 2, 6, &Default::default()).unwrap()
}

fn logits(m: &AnyClassifier<B>) -> Vec<f32> {
    adalora_core::to_f32_vec(m.forward(input()))
}

fn max_gap(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// A deterministic nudge, standing in for training.
fn nudge(t: Tensor<B, 2>, k: f32) -> Tensor<B, 2> {
    let [r, c] = t.dims();
    let v: Vec<f32> = (0..r * c)
        .map(|i| 0.5 * ((i as f32 * 0.7 + k).sin()))
        .collect();
    t + Tensor::from_data(TensorData::new(v, [r, c]), &Default::default())
}

fn nudge1(t: Tensor<B, 1>) -> Tensor<B, 1> {
    let n = t.dims()[0];
    let v: Vec<f32> = (0..n).map(|i| 3.0 * ((i as f32 * 1.3).cos())).collect();
    t + Tensor::from_data(TensorData::new(v, [n]), &Default::default())
}

/// Train (nudge), export, reload on the unmodified base, merge: one function throughout.
fn round_trip(settings: &[&str]) -> Value {
    let mut all: Vec<String> = vec!["target.modules=\"query,value,intermediate\"".into()];
    all.extend(settings.iter().map(|s| s.to_string()));
    let cfg = RunConfig::load(None, &all).unwrap();
    let method = cfg.method_config(100).unwrap();
    let before = logits(&base_model());
    let (model, _) = apply_method(base_model(), &method, &cfg.target, &Default::default()).unwrap();
    let mut model = apply_weight_init(model, &cfg).unwrap();
    // At step 0 the model computes what the pretrained one does.
    let gap = max_gap(&logits(&model), &before);
    assert!(
        gap < 1e-4,
        "{settings:?}: step 0 differs from W0 by {gap:e}"
    );
    for (k, layer) in model.adapted_linears_mut().into_iter().enumerate() {
        match layer {
            AdaptedLinear::Plain(_) => {}
            AdaptedLinear::Lora(l) => {
                assert!(l.init.is_some());
                let (a, b) = (l.lora_a.val(), l.lora_b.val());
                *l = l
                    .clone()
                    .swap_adapter(nudge(a, k as f32), nudge(b, 2.0 + k as f32))
                    .unwrap();
            }
            AdaptedLinear::Svd(s) => {
                assert!(s.init.is_some());
                let a = nudge(s.lora_a.val(), k as f32);
                let b = nudge(s.lora_b.val(), 1.0 + k as f32);
                let e = nudge1(s.lora_e.val());
                s.lora_a = burn::module::Param::from_tensor(a);
                s.lora_b = burn::module::Param::from_tensor(b);
                s.lora_e = burn::module::Param::from_tensor(e);
            }
        }
    }
    // AdaLoRA: mask one triplet per matrix, as the allocator would.
    let n = model.svd_adapters().len();
    let pattern = (n > 0).then(|| RankPattern {
        masks: vec![vec![true, false, true, true]; n],
    });
    if let Some(p) = &pattern {
        model.apply_rank_pattern(p).unwrap();
    }
    let live = logits(&model);
    let moved = max_gap(&live, &before);
    assert!(
        moved > 2e-3,
        "{settings:?}: the nudge moved the logits by only {moved:e}"
    );
    // Merging the live model (residual base + ΔW) gives the live model.
    let gap = max_gap(&logits(&model.clone().merge_and_unload()), &live);
    assert!(gap < 1e-4, "{settings:?}: merged live model by {gap:e}");
    // The exported adapter loads on the *unmodified* base to the live function, and merges.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adapter");
    replace_dir(&out, |d| {
        save_peft_adapter(&model, &method, pattern.as_ref(), None, d)
    })
    .unwrap();
    let (loaded, _) = load_peft_adapter(base_model(), &out, &Default::default()).unwrap();
    let gap = max_gap(&logits(&loaded), &live);
    assert!(gap < 1e-4, "{settings:?}: exported adapter by {gap:e}");
    let gap = max_gap(&logits(&loaded.merge_and_unload()), &live);
    assert!(gap < 1e-4, "{settings:?}: merged export by {gap:e}");
    read_adapter_config(&out).unwrap()
}

#[test]
fn pissa_trains_merges_and_exports_to_the_original_base() {
    let cfg = round_trip(&["method=lora", "lora.r=4", "lora.alpha=8", "lora.init=pissa"]);
    // PEFT's conversion: rank 2r, α doubled (α/r unchanged), a plain LoRA adapter.
    assert_eq!(cfg["r"], 8);
    assert_eq!(cfg["lora_alpha"], 16.0);
    assert_eq!(cfg["init_lora_weights"], true);
    let rs = round_trip(&[
        "method=lora",
        "lora.r=4",
        "lora.alpha=8",
        "lora.use_rslora=true",
        "lora.init=pissa",
    ]);
    assert_eq!(rs["r"], 8);
    assert!((rs["lora_alpha"].as_f64().unwrap() - 8.0 * 2f64.sqrt()).abs() < 1e-12);
}

#[test]
fn olora_trains_merges_and_exports_to_the_original_base() {
    let cfg = round_trip(&["method=lora", "lora.r=4", "lora.alpha=8", "lora.init=olora"]);
    assert_eq!(cfg["r"], 8);
}

#[test]
fn adalora_svd_trains_merges_and_exports_to_the_original_base() {
    let cfg = round_trip(&[
        "method=adalora",
        "adalora.init_r=4",
        "adalora.target_r=2",
        "adalora.init=svd",
    ]);
    assert_eq!(cfg["init_r"], 8);
    let masks = cfg["rank_pattern"].as_object().unwrap();
    for m in masks.values() {
        let m: Vec<bool> = serde_json::from_value(m.clone()).unwrap();
        assert_eq!(m, [true, false, true, true, true, true, true, true]);
    }
}

/// The default initialisations leave the base untouched and record no factors.
#[test]
fn default_inits_leave_the_base_alone() {
    for method in ["lora", "adalora"] {
        let cfg = RunConfig::load(
            None,
            &[
                format!("method={method}"),
                "target.modules=\"query\"".into(),
            ],
        )
        .unwrap();
        let mc = cfg.method_config(100).unwrap();
        let (model, _) = apply_method(base_model(), &mc, &cfg.target, &Default::default()).unwrap();
        let model = apply_weight_init(model, &cfg).unwrap();
        let reference = base_model();
        for (l, r) in model
            .adapted_linears()
            .into_iter()
            .zip(reference.adapted_linears())
        {
            let (w, w0) = (
                adalora_core::to_f32_vec(l.base().weight(&Default::default())),
                adalora_core::to_f32_vec(r.base().weight(&Default::default())),
            );
            assert_eq!(w, w0, "{method}: the base changed");
            match l {
                AdaptedLinear::Lora(x) => assert!(x.init.is_none()),
                AdaptedLinear::Svd(x) => assert!(x.init.is_none()),
                AdaptedLinear::Plain(_) => {}
            }
        }
    }
}

/// `lora.init = "gaussian"` (PEFT's): A ~ N(0, (1/r)²), B = 0, the base untouched, no factors.
#[test]
fn gaussian_init_draws_a_with_std_one_over_r() {
    let r = 4;
    let cfg = RunConfig::load(
        None,
        &[
            "method=lora".into(),
            format!("lora.r={r}"),
            "lora.init=gaussian".into(),
        ],
    )
    .unwrap();
    let mc = cfg.method_config(100).unwrap();
    let (model, _) = apply_method(base_model(), &mc, &cfg.target, &Default::default()).unwrap();
    let before = logits(&model);
    let model = apply_weight_init(model, &cfg).unwrap();
    let reference = base_model();
    let mut a_all = Vec::new();
    for (l, w0) in model
        .adapted_linears()
        .into_iter()
        .zip(reference.adapted_linears())
    {
        let AdaptedLinear::Lora(x) = l else { continue };
        assert!(x.init.is_none());
        assert!(adalora_core::to_f32_vec(x.lora_b.val())
            .iter()
            .all(|&b| b == 0.0));
        let w = adalora_core::to_f32_vec(x.base.weight(&Default::default()));
        assert_eq!(
            w,
            adalora_core::to_f32_vec(w0.base().weight(&Default::default()))
        );
        a_all.extend(adalora_core::to_f32_vec(x.lora_a.val()));
    }
    assert!(a_all.len() > 500, "{} entries of A", a_all.len());
    let n = a_all.len() as f64;
    let mean = a_all.iter().map(|&x| x as f64).sum::<f64>() / n;
    let sd = (a_all
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    // Kaiming-uniform's sd here would be 1/√(3·d_in) ≈ 0.08 (d_in = 48): far from 1/r = 0.25.
    assert!((sd - 1.0 / r as f64).abs() < 0.02, "sd {sd}");
    assert!(mean.abs() < 0.02, "mean {mean}");
    assert_eq!(before, logits(&model), "ΔW must still be zero at step 0");
}
