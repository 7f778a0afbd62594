//! QLoRA: one pass over the encoder's frozen dense layers after loading, replacing each base
//! weight by its quantized form ([`adalora_core::quant`]). The classifier head stays f32 (it
//! trains); embeddings and LayerNorms stay f32 (they are not linear layers, as in bitsandbytes).

use adalora_core::{DeviceCodes, QuantConfig, QuantError};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::family::SequenceClassifier;

/// What quantization did to the base: memory and error, overall and per matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantReport {
    pub config: QuantConfig,
    /// Bytes of the quantized weights as stored (codes + absmax constants).
    pub base_weight_bytes: usize,
    /// Bytes of the same weights in f32.
    pub base_weight_f32_bytes: usize,
    /// `base_weight_bytes / base_weight_f32_bytes`.
    pub memory_ratio: f64,
    /// Mean over matrices of `mean|W − deq(q(W))| / mean|W|`.
    pub mean_relative_error: f64,
    /// Largest `max|W − deq(q(W))| / max|W|` over matrices.
    pub max_relative_error: f64,
    pub modules: Vec<ModuleQuantError>,
}

impl QuantReport {
    /// One line for the log.
    pub fn summary(&self) -> String {
        let c = &self.config;
        format!(
            "quantized base: {} block {}{}, compute {}: {:.2} MB of weights ({:.3} x f32), relative error mean {:.4}, max {:.4}",
            c.kind,
            c.block_size,
            if c.double_quant { " + double quant" } else { "" },
            c.compute_dtype,
            self.base_weight_bytes as f64 / 1e6,
            self.memory_ratio,
            self.mean_relative_error,
            self.max_relative_error
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleQuantError {
    pub path: String,
    #[serde(flatten)]
    pub error: QuantError,
}

/// Quantize the base of every adaptable dense layer of any family (the encoder's, and BERT's
/// pooler); adapters, if any, are kept.
pub fn quantize_base<B: Backend, M: SequenceClassifier<B>>(
    mut model: M,
    config: QuantConfig,
) -> Result<(M, QuantReport), ModelError> {
    config.validate()?;
    let slots = model.slots();
    let mut modules = Vec::with_capacity(slots.len());
    for (slot, layer) in slots.iter().zip(model.adapted_linears_mut()) {
        let placeholder = layer.clone();
        let (quantized, error) = std::mem::replace(layer, placeholder)
            .quantize_base(config, &format!("{}.weight", slot.path))?;
        *layer = quantized;
        modules.push(ModuleQuantError {
            path: slot.path.clone(),
            error,
        });
    }
    let (bytes, f32_bytes) = base_weight_bytes(&model);
    let n = modules.len().max(1) as f64;
    let report = QuantReport {
        config,
        base_weight_bytes: bytes,
        base_weight_f32_bytes: f32_bytes,
        memory_ratio: bytes as f64 / f32_bytes.max(1) as f64,
        mean_relative_error: modules.iter().map(|m| m.error.mean_relative).sum::<f64>() / n,
        max_relative_error: modules
            .iter()
            .fold(0f64, |m, e| m.max(e.error.max_relative)),
        modules,
    };
    Ok((model, report))
}

/// `(stored, f32)` bytes of the weights of every adaptable dense layer: as held in memory
/// (quantized or f32), and what they take in f32. Biases excluded.
pub fn base_weight_bytes<B: Backend, M: SequenceClassifier<B>>(model: &M) -> (usize, usize) {
    model
        .adapted_linears()
        .iter()
        .fold((0, 0), |(stored, f32_bytes), l| {
            let [d_in, d_out] = l.base().dims();
            (
                stored + l.base().weight_bytes(),
                f32_bytes + 4 * d_in * d_out,
            )
        })
}

/// Dequantize every quantized base on the device the forward runs on, from the 4-bit codes
/// uploaded there once ([`adalora_core::DeviceCodes`]), instead of on the host with an f32
/// upload per matmul: the fast path on a GPU. Bit-identical values. Returns the number of
/// layers switched (int8 bases keep the host path).
pub fn dequantize_on_device<B: Backend, M: SequenceClassifier<B>>(model: &M) -> usize {
    model
        .adapted_linears()
        .into_iter()
        .filter_map(|l| l.base().as_quantized())
        .filter(|q| DeviceCodes::applies_to(&q.weight))
        .map(|q| q.device_codes.enable())
        .count()
}
