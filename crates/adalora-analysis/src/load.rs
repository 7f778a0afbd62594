//! Reading what a run (or a PEFT adapter folder) trained: ΔW and W0 of every adapted matrix,
//! taken from the live model after loading, so ΔW is exactly the update the model applies
//! (α/r or α/√r for LoRA, α/(init_r + ε)·P·diag(λ)·Q with the pruned triplets sliced away for
//! AdaLoRA) and no formula is restated here.

use std::path::Path;

use adalora_core::{AdaptedLinear, AdapterHost};
use adalora_model::families::family_of;
use adalora_model::{AnyClassifier, SequenceClassifier};
use adalora_train::init::pytorch_layout;
use adalora_train::ops::{load_model, Source};
use adalora_train::peft::WEIGHTS_FILE;
use anyhow::{bail, Context};
use burn::backend::ndarray::NdArrayDevice;
use burn::backend::NdArray;
use burn::tensor::Tensor;
use ndarray::Array2;
use safetensors::SafeTensors;

type Cpu = NdArray<f32>;

/// One adapted matrix, in PyTorch layout `[d_out, d_in]`.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// `None` outside the layer stack (BERT's pooler).
    pub layer: Option<usize>,
    /// The module kind's name (`query`, `attention-output`, …).
    pub module: String,
    /// HF module path relative to the encoder (`encoder.layer.0.attention.self.query`).
    pub path: String,
    /// The adapter's rank as stored: r for LoRA, the kept triplets for AdaLoRA.
    pub rank: usize,
    pub delta: Array2<f64>,
    pub w0: Array2<f64>,
}

impl Matrix {
    /// `layer.module`, the name `--matrix` takes.
    pub fn name(&self) -> String {
        match self.layer {
            Some(l) => format!("{l}.{}", self.module),
            None => self.module.clone(),
        }
    }
}

/// The adapted matrices of `src` (a PEFT adapter folder with its base model), in structural
/// order. A source without adapters is an error naming its folder.
pub fn load_matrices(src: &Source) -> anyhow::Result<Vec<Matrix>> {
    let weights = &src.weights;
    if !weights.join(adalora_train::peft::CONFIG_FILE).is_file() {
        bail!(
            "{} holds no PEFT adapter (adapter_config.json): only LoRA/AdaLoRA runs have a ΔW \
             to analyse",
            weights.display()
        );
    }
    let num_labels = head_labels(&src.model_dir, weights)?;
    let device = NdArrayDevice::default();
    let model: AnyClassifier<Cpu> = load_model(src, num_labels, &device)
        .with_context(|| format!("loading the adapter in {}", weights.display()))?;
    let matrices: Vec<Matrix> = model
        .slots()
        .into_iter()
        .zip(model.adapted_linears())
        .filter_map(|(slot, layer)| {
            let delta = layer.delta_weight()?;
            Some(Matrix {
                layer: slot.layer,
                module: slot.kind.name().to_string(),
                path: slot.path.clone(),
                rank: layer.rank(),
                delta: pytorch_layout(delta),
                w0: pytorch_layout(base_weight(layer, &device)),
            })
        })
        .collect();
    if matrices.is_empty() {
        bail!("{}: the adapter adapts no matrix", weights.display());
    }
    Ok(matrices)
}

fn base_weight(layer: &AdaptedLinear<Cpu>, device: &NdArrayDevice) -> Tensor<Cpu, 2> {
    layer.base().weight(device)
}

/// The number of labels of the adapter's head: the rows of its output projection, the
/// smallest `…weight` matrix under the family's head modules (RoBERTa's head also has a
/// hidden×hidden dense layer). The analysis needs no task data, so this replaces the task's
/// label count that `eval` takes.
fn head_labels(model_dir: &Path, adapter: &Path) -> anyhow::Result<usize> {
    let config_path = model_dir.join("config.json");
    let config: serde_json::Value = adalora_train::io::read_json(&config_path)?;
    let family = family_of(&config, &config_path)?;
    let file = adapter.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let st = SafeTensors::deserialize(&bytes).with_context(|| format!("{}", file.display()))?;
    let heads: Vec<String> = family
        .head_modules
        .iter()
        .map(|h| format!("base_model.model.{h}."))
        .collect();
    st.iter()
        .filter(|(name, t)| {
            t.shape().len() == 2
                && name.ends_with("weight")
                && heads.iter().any(|h| name.starts_with(h.as_str()))
        })
        .map(|(_, t)| t.shape()[0])
        .min()
        .with_context(|| {
            format!(
                "{}: no head tensor ({}) to tell the number of labels",
                file.display(),
                heads.join(", ")
            )
        })
}
