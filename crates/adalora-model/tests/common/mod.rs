//! Shared helpers of the adalora-model integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use adalora_core::AdaptedLinear;
use adalora_model::ModelInput;
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// The parity tests run on the backend `adalora train` uses: burn-flex with the project's
/// patched kernels (vendor/burn-flex).
pub type Cpu = burn_flex::Flex;
pub type Ad = burn::backend::Autodiff<Cpu>;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn fixture_dir() -> PathBuf {
    repo_root().join("fixtures/model")
}

pub fn tiny_dir() -> PathBuf {
    fixture_dir().join("tiny-bert")
}

/// The real all-MiniLM-L6-v2 folder; fails with the fetch instructions when absent.
pub fn real_model_dir() -> PathBuf {
    match adalora_model::resolve_model_dir(None) {
        Ok(d) => d,
        Err(e) => panic!(
            "the real model is needed for this test and was not found ({e}).\n\
             Run scripts/fetch-assets.sh from the repository root first."
        ),
    }
}

/// A reference tensor file written by scripts/fixtures/make_model_fixtures.py.
pub struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    pub fn open(name: &str) -> Self {
        let path = fixture_dir().join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (regenerate with python3 scripts/fixtures/make_model_fixtures.py)",
                path.display()
            )
        });
        Fixture { bytes }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.st()
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture tensor {name}"))
            .shape()
            .to_vec()
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        let st = self.st();
        let v = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture tensor {name}"));
        assert_eq!(v.dtype(), Dtype::F32, "{name}");
        v.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub fn i64(&self, name: &str) -> Vec<i64> {
        let st = self.st();
        let v = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture tensor {name}"));
        assert_eq!(v.dtype(), Dtype::I64, "{name}");
        v.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// The model input stored under `prefix` (`single.`, `pair.` or ``).
    pub fn input<B: Backend>(&self, prefix: &str, device: &B::Device) -> ModelInput<B> {
        let shape = self.shape(&format!("{prefix}input_ids"));
        ModelInput::from_rows(
            &self.i64(&format!("{prefix}input_ids")),
            &self.i64(&format!("{prefix}token_type_ids")),
            &self.i64(&format!("{prefix}attention_mask")),
            shape[0],
            shape[1],
            device,
        )
        .unwrap()
    }
}

pub fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn max_abs(a: &[f32]) -> f32 {
    a.iter().map(|x| x.abs()).fold(0.0, f32::max)
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let d = max_abs_diff(got, want);
    assert!(d <= tol, "{what}: max abs diff {d} > {tol}");
}

/// Give every adapter non-zero weights (LoRA B and AdaLoRA λ start at zero).
pub fn perturb_adapters<B: Backend>(layers: Vec<&mut AdaptedLinear<B>>) {
    for l in layers {
        match l {
            AdaptedLinear::Lora(a) => {
                let dims = a.lora_b.dims();
                let dev = a.lora_b.device();
                a.lora_b =
                    Param::from_tensor(Tensor::random(dims, Distribution::Normal(0.0, 0.05), &dev));
            }
            AdaptedLinear::Svd(a) => {
                let dims = a.lora_e.dims();
                let dev = a.lora_e.device();
                a.lora_e =
                    Param::from_tensor(Tensor::random(dims, Distribution::Normal(0.0, 0.5), &dev));
            }
            AdaptedLinear::Plain(_) => {}
        }
    }
}

/// A classifier Linear from a PyTorch-layout weight `[k, h]` and bias `[k]`.
pub fn classifier_from_torch<B: Backend>(
    w: &[f32],
    b: &[f32],
    k: usize,
    h: usize,
    device: &B::Device,
) -> burn::nn::Linear<B> {
    let mut t = vec![0.0; w.len()];
    for r in 0..k {
        for c in 0..h {
            t[c * k + r] = w[r * h + c];
        }
    }
    burn::nn::Linear {
        weight: Param::from_tensor(Tensor::from_data(TensorData::new(t, [h, k]), device)),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b.to_vec(), [k]),
            device,
        ))),
    }
}
