//! Shared helpers for the core tests: fixture loading and PEFT-layout conversion.
#![allow(dead_code)]

use adalora_core::SvdLinear;
use burn::backend::NdArray;
use burn::module::Param;
use burn::nn::{DropoutConfig, Linear};
use burn::tensor::{Tensor, TensorData};
use serde_json::Value;

pub type B = NdArray<f32>;

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/../../fixtures/core/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {path}: {e} (regenerate with scripts/fixtures/make_core_fixtures.py)"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {path}: {e}"))
}

pub fn vec1(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

pub fn mat(v: &Value) -> (Vec<f32>, [usize; 2]) {
    let rows = v.as_array().expect("matrix");
    let cols = rows
        .first()
        .map(|r| r.as_array().unwrap().len())
        .unwrap_or(0);
    let data: Vec<f32> = rows.iter().flat_map(vec1).collect();
    (data, [rows.len(), cols])
}

pub fn tensor1(v: &Value) -> Tensor<B, 1> {
    let data = vec1(v);
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), &Default::default())
}

/// A matrix exactly as stored (PyTorch layout).
pub fn tensor2(v: &Value) -> Tensor<B, 2> {
    let (data, shape) = mat(v);
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

/// A PyTorch-layout matrix transposed into burn's input-major layout.
pub fn tensor2_t(v: &Value) -> Tensor<B, 2> {
    tensor2(v).transpose()
}

pub fn to_vec<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

pub fn bools(v: &Value) -> Vec<bool> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_bool().unwrap())
        .collect()
}

/// max |a − b| / max(|b|_∞, floor).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b
        .iter()
        .fold(0f64, |m, &x| m.max((x as f64).abs()))
        .max(1e-30);
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    diff / scale
}

/// An SVD adapter from PEFT-layout tensors (A `[r, d_in]`, E `[r]`, B `[d_out, r]`).
pub fn svd_from_peft(
    w0: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    a: &Value,
    e: &Value,
    b: &Value,
    alpha: f64,
    ranknum: f64,
) -> SvdLinear<B> {
    SvdLinear {
        base: adalora_core::frozen_linear(w0, bias).into(),
        lora_a: Param::from_tensor(tensor2_t(a)),
        lora_e: Param::from_tensor(tensor1(e)),
        lora_b: Param::from_tensor(tensor2_t(b)),
        dropout: DropoutConfig::new(0.0).init(),
        scaling: alpha,
        ranknum,
        merged: false,
        init: None,
    }
}

/// Seeds the backend's random generator and holds it until the guard drops.
///
/// The generator is one process-wide state and the test harness runs tests on parallel
/// threads: a test that seeds and then draws would otherwise interleave its draws with another
/// test's and see different numbers from run to run (a loss threshold that passed here failed
/// on a 2-core CI). Hold the guard for as long as the test draws: tensors, adapter inits.
#[must_use = "the generator is only yours while the guard lives"]
pub fn seeded_rng(seed: u64) -> std::sync::MutexGuard<'static, ()> {
    use burn::tensor::backend::Backend;
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that panicked while holding the guard poisons it; its draws are over, so the
    // state is still usable by the next test.
    let guard = RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(&Default::default(), seed);
    guard
}

pub fn random_linear(d_in: usize, d_out: usize, seed: u64) -> Linear<B> {
    use burn::tensor::Distribution;
    let device = Default::default();
    let _rng = seeded_rng(seed);
    let w = Tensor::<B, 2>::random([d_in, d_out], Distribution::Normal(0.0, 0.5), &device);
    let b = Tensor::<B, 1>::random([d_out], Distribution::Normal(0.0, 0.5), &device);
    adalora_core::frozen_linear(w, Some(b))
}
