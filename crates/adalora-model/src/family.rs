//! The model seam: what the trainer, evaluation, PEFT files, merge and the rank-pattern
//! writer know about an encoder family, and nothing more.
//!
//! A family (one file: `bert.rs`, `roberta.rs`, `deberta_v2.rs`) declares
//!
//! * a [`Family`] description: the `model_type` values of `config.json` it accepts, the HF
//!   attribute holding its encoder, its head's HF modules and — next to its layer struct — the
//!   HF name of every adaptable dense layer ([`Family::layer_slots`]);
//! * a sequence classifier implementing [`SequenceClassifier`] (forward on [`ModelInput`]
//!   tensors, the adapted slots in [`AdapterHost`] order, HF tensor export, the head) and
//!   [`LoadFamily`].
//!
//! Batches, tokenization and the task loss live with the application (`adalora-train`): this
//! crate sees tensors only.
//!
//! The registry ([`crate::families`]) lists the families; everything else is generic.

use std::fmt;

use adalora_core::{AdaptedLinear, AdapterHost};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::loader::{Checkpoint, Exporter, HfTensor, Reader};

/// Token ids, token types and the padding mask (1 = token, 0 = padding), all `[batch, seq]`.
#[derive(Debug, Clone)]
pub struct ModelInput<B: Backend> {
    pub input_ids: Tensor<B, 2, Int>,
    pub token_type_ids: Tensor<B, 2, Int>,
    pub attention_mask: Tensor<B, 2, Int>,
}

impl<B: Backend> ModelInput<B> {
    /// From row-major host buffers of `batch_size · seq_len` entries.
    pub fn from_rows(
        input_ids: &[i64],
        token_type_ids: &[i64],
        attention_mask: &[i64],
        batch_size: usize,
        seq_len: usize,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let n = batch_size * seq_len;
        if n == 0 {
            return Err(ModelError::Invalid("empty batch".into()));
        }
        for (name, buf) in [
            ("input_ids", input_ids),
            ("token_type_ids", token_type_ids),
            ("attention_mask", attention_mask),
        ] {
            if buf.len() != n {
                return Err(ModelError::Invalid(format!(
                    "{name} has {} entries, expected batch_size {batch_size} x seq_len {seq_len} = {n}",
                    buf.len()
                )));
            }
        }
        let t = |v: &[i64]| {
            Tensor::<B, 2, Int>::from_data(
                TensorData::new(v.to_vec(), [batch_size, seq_len]),
                device,
            )
        };
        Ok(ModelInput {
            input_ids: t(input_ids),
            token_type_ids: t(token_type_ids),
            attention_mask: t(attention_mask),
        })
    }

    pub fn dims(&self) -> [usize; 2] {
        self.input_ids.dims()
    }
}

/// A dense layer's role in a transformer encoder (the paper's names in brackets). Each family
/// maps these onto its own HF module names in [`Family::layer_slots`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModuleKind {
    /// W_q.
    Query,
    /// W_k.
    Key,
    /// W_v.
    Value,
    /// W_o, the attention output projection.
    AttentionOutput,
    /// W_f1, the first FFN layer.
    Intermediate,
    /// W_f2, the FFN output — not the attention output.
    Output,
    /// BERT's pooler.
    Pooler,
}

impl ModuleKind {
    pub fn name(self) -> &'static str {
        match self {
            ModuleKind::Query => "query",
            ModuleKind::Key => "key",
            ModuleKind::Value => "value",
            ModuleKind::AttentionOutput => "attention-output",
            ModuleKind::Intermediate => "intermediate",
            ModuleKind::Output => "output",
            ModuleKind::Pooler => "pooler",
        }
    }

    /// Accepts the names above, `attn-out`, the paper's `Wq, Wk, Wv, Wo, Wf1, Wf2`
    /// (case-insensitive) and any family's HF module name (`attention.self.query`,
    /// `query_proj`, `output.dense`, …).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let k = match s.to_ascii_lowercase().as_str() {
            "query" | "q" | "wq" => ModuleKind::Query,
            "key" | "k" | "wk" => ModuleKind::Key,
            "value" | "v" | "wv" => ModuleKind::Value,
            "attention-output" | "attn-out" | "attention_output" | "wo" => {
                ModuleKind::AttentionOutput
            }
            "intermediate" | "wf1" => ModuleKind::Intermediate,
            "output" | "wf2" => ModuleKind::Output,
            "pooler" => ModuleKind::Pooler,
            _ => return crate::families::kind_of_hf_name(s),
        };
        Some(k)
    }
}

impl fmt::Display for ModuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One adaptable dense layer: its index in the structural (`AdapterHost`) order, its layer
/// (`None` outside the layer stack), kind and HF module path relative to the encoder
/// (`encoder.layer.3.attention.self.query`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSlot {
    pub index: usize,
    pub layer: Option<usize>,
    pub kind: ModuleKind,
    pub path: String,
}

/// What the rest of the project needs to know about an encoder family, as data.
#[derive(Debug)]
pub struct Family {
    /// `config.json` `model_type` values this family loads.
    pub model_types: &'static [&'static str],
    /// Attribute holding the encoder in HF's `*ForSequenceClassification` (`bert`): the prefix
    /// of encoder tensors in checkpoints and of module paths in PEFT files.
    pub base_prefix: &'static str,
    /// HF class written to `architectures` of a merged model.
    pub architecture: &'static str,
    /// HF modules of the task head (PEFT's `modules_to_save`).
    pub head_modules: &'static [&'static str],
    /// HF path of the layer list (`encoder.layer`).
    pub layer_list: &'static str,
    /// The adaptable dense layers of one layer, in structural order, with their HF names
    /// relative to the layer.
    pub layer_slots: &'static [(ModuleKind, &'static str)],
    /// Adaptable dense layers after the layer stack (BERT's pooler), with their HF paths.
    pub extra_slots: &'static [(ModuleKind, &'static str)],
    /// Checkpoint tensors this family does not use (pretraining heads, buffers), by prefix.
    pub ignored_prefixes: &'static [&'static str],
}

impl Family {
    /// All adaptable slots of a `num_layers`-layer model, in `AdapterHost` order.
    pub fn slots(&self, num_layers: usize) -> Vec<ModuleSlot> {
        let mut v = Vec::new();
        for layer in 0..num_layers {
            for &(kind, leaf) in self.layer_slots {
                v.push(ModuleSlot {
                    index: v.len(),
                    layer: Some(layer),
                    kind,
                    path: self.layer_path(layer, leaf),
                });
            }
        }
        for &(kind, path) in self.extra_slots {
            v.push(ModuleSlot {
                index: v.len(),
                layer: None,
                kind,
                path: path.to_string(),
            });
        }
        v
    }

    /// `encoder.layer.{layer}`.
    pub fn layer_prefix(&self, layer: usize) -> String {
        format!("{}.{layer}", self.layer_list)
    }

    /// `encoder.layer.{layer}.{leaf}`.
    pub fn layer_path(&self, layer: usize, leaf: &str) -> String {
        format!("{}.{leaf}", self.layer_prefix(layer))
    }

    /// The HF name of `kind` inside a layer.
    pub fn leaf(&self, kind: ModuleKind) -> &'static str {
        self.layer_slots
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, leaf)| *leaf)
            .expect("every family declares all per-layer kinds it uses")
    }

    /// `bert.` — the encoder prefix in classification checkpoints and PEFT paths.
    pub fn prefix(&self) -> String {
        format!("{}.", self.base_prefix)
    }

    pub fn ignores(&self, tensor: &str) -> bool {
        tensor.ends_with("position_ids")
            || self.ignored_prefixes.iter().any(|p| tensor.starts_with(p))
    }
}

/// A sequence-classification (or regression, `num_labels == 1`) model of some family.
pub trait SequenceClassifier<B: Backend>: Module<B> + AdapterHost<B> + Sized {
    fn family(&self) -> &'static Family;

    fn num_layers(&self) -> usize;

    /// `[hidden, num_labels]` classifier output width.
    fn num_labels(&self) -> usize;

    /// The last encoder layer's states `[batch, seq, hidden]`.
    fn hidden_states(&self, input: ModelInput<B>) -> Tensor<B, 3>;

    /// Logits `[batch, num_labels]`.
    fn forward(&self, input: ModelInput<B>) -> Tensor<B, 2>;

    /// The task head's dense layers with their HF names (`classifier`, `pooler.dense`, …), in
    /// forward order. The head's plumbing below (mapping, visiting, saving and reading it) is
    /// derived from this list.
    fn head_linears(&self) -> Vec<(&'static str, &Linear<B>)>;

    fn head_linears_mut(&mut self) -> Vec<(&'static str, &mut Linear<B>)>;

    /// Replace the dropout in front of the classifier.
    fn with_classifier_dropout(self, p: f64) -> Self;

    /// The whole model as an HF `*ForSequenceClassification` checkpoint (adapters folded in).
    fn export_hf(&self) -> Vec<HfTensor>;

    /// Apply `mapper` to the task head only (it is always trainable).
    fn map_head<M: ModuleMapper<B>>(mut self, mapper: &mut M) -> Self {
        for (_, linear) in self.head_linears_mut() {
            *linear = linear.clone().map(mapper);
        }
        self
    }

    fn visit_head<V: ModuleVisitor<B>>(&self, visitor: &mut V) {
        for (_, linear) in self.head_linears() {
            linear.visit(visitor);
        }
    }

    /// The head's tensors under their HF names.
    fn head_hf(&self) -> Vec<HfTensor> {
        let mut ex = Exporter::new("");
        for (name, linear) in self.head_linears() {
            ex.linear(name, linear);
        }
        ex.tensors
    }

    /// Replace the head by the one `reader` holds (HF names, every head tensor required, each
    /// of the shape the current head has).
    fn read_head(mut self, reader: &mut Reader<'_>, device: &B::Device) -> Self {
        for (name, linear) in self.head_linears_mut() {
            let [d_in, d_out] = linear.weight.dims();
            *linear = reader.linear(name, d_in, d_out, device);
        }
        self
    }

    fn is_regression(&self) -> bool {
        self.num_labels() == 1
    }

    /// The adaptable slots, in `AdapterHost` order.
    fn slots(&self) -> Vec<ModuleSlot> {
        self.family().slots(self.num_layers())
    }

    /// Apply `f` to every adapted layer, in structural order.
    fn try_map_adapted<F>(mut self, mut f: F) -> Result<Self, ModelError>
    where
        F: FnMut(usize, AdaptedLinear<B>) -> Result<AdaptedLinear<B>, ModelError>,
    {
        for (k, slot) in self.adapted_linears_mut().into_iter().enumerate() {
            // Swap in a cheap placeholder, transform, and put the result back.
            let placeholder = AdaptedLinear::Plain(
                Linear {
                    weight: Param::from_tensor(Tensor::zeros([1, 1], &device_of(slot))),
                    bias: None,
                }
                .into(),
            );
            let old = std::mem::replace(slot, placeholder);
            *slot = f(k, old)?;
        }
        Ok(self)
    }

    /// Fold every adapter into its base weight and drop it: a plain model whose forward equals
    /// the adapted one.
    fn merge_and_unload(self) -> Self {
        self.try_map_adapted(|_, l| {
            let device = device_of(&l);
            Ok(AdaptedLinear::Plain(l.merge_and_unload(&device).into()))
        })
        .expect("merging cannot fail")
    }

    /// Drop every adapter and keep the pretrained weights (peft's `unload`): the base model the
    /// adapters were trained on.
    fn unload(self) -> Self {
        self.try_map_adapted(|_, l| Ok(AdaptedLinear::Plain(l.unmerge().base().clone())))
            .expect("unloading cannot fail")
    }
}

/// One encoder layer of a family: its six adaptable dense layers in structural order
/// (query, key, value, attention-output, intermediate, output).
pub trait EncoderLayer<B: Backend> {
    fn dense_layers(&self) -> [&AdaptedLinear<B>; 6];
    fn dense_layers_mut(&mut self) -> [&mut AdaptedLinear<B>; 6];
}

/// The adapted layers of an encoder's layers, layer-major: the [`AdapterHost`] order every
/// family uses (BERT appends its pooler).
pub fn layer_adapters<B: Backend, L: EncoderLayer<B>>(layers: &[L]) -> Vec<&AdaptedLinear<B>> {
    layers.iter().flat_map(L::dense_layers).collect()
}

pub fn layer_adapters_mut<B: Backend, L: EncoderLayer<B>>(
    layers: &mut [L],
) -> Vec<&mut AdaptedLinear<B>> {
    layers.iter_mut().flat_map(L::dense_layers_mut).collect()
}

/// Where a dense layer's parameters live. A quantized base keeps its weight off-device, so
/// this is the device of its bias (every family's dense layers have one) or its adapter.
pub(crate) fn device_of<B: Backend>(l: &AdaptedLinear<B>) -> B::Device {
    l.devices().into_iter().next().unwrap_or_default()
}

/// How a family is built from a checkpoint.
pub trait LoadFamily<B: Backend>: SequenceClassifier<B> {
    /// Build the model from `config.json` (already parsed) and the checkpoint; the head comes
    /// from the checkpoint when present there, else it is new (from `seed`).
    fn load(
        config: &serde_json::Value,
        config_path: &std::path::Path,
        reader: &mut Reader<'_>,
        num_labels: usize,
        seed: u64,
        device: &B::Device,
    ) -> Result<(Self, HeadSource), ModelError>;
}

/// Where the classifier head came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadSource {
    /// The checkpoint's head tensors.
    Checkpoint,
    /// Freshly initialised: N(0, initializer_range²) from the seed, zero bias.
    Initialized { seed: u64 },
}

/// Read a checkpoint's head into `model` (used for PEFT adapter files, whose head tensors sit
/// under `prefix`). Returns the model and the names of the tensors it consumed.
pub fn load_head_from<B: Backend, M: SequenceClassifier<B>>(
    model: M,
    ck: &Checkpoint,
    prefix: &str,
    device: &B::Device,
) -> Result<(M, Vec<String>), ModelError> {
    let mut reader = Reader::new(ck, prefix)?;
    let model = model.read_head(&mut reader, device);
    reader.problems_to_error()?;
    Ok((model, reader.used_names()))
}
