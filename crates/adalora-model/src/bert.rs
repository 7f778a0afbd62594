//! A BERT encoder (Devlin et al., 2019) in burn, following HF `transformers`' `BertModel` and
//! `BertForSequenceClassification` operation by operation (cf. candle-transformers' `bert.rs`).
//!
//! * embeddings: word + absolute position + token type, LayerNorm, dropout;
//! * `N` post-LayerNorm layers: self-attention (query, key, value, attention-output dense) with
//!   an additive padding mask of `f32::MIN` (HF's `torch.finfo(float32).min`, so padded keys get
//!   probability exactly 0), dropout on the attention probabilities and on the hidden states,
//!   then the FFN (intermediate dense, erf GELU, output dense);
//! * pooler: dense + tanh on the `[CLS]` state;
//! * head ([`BertForSequenceClassification`]): dropout + classifier on the pooled output.
//!
//! Every dense layer of the encoder and pooler is an [`AdaptedLinear`] (plain after loading);
//! the classifier head is a plain, always-trainable [`Linear`]. Linear weights are in burn's
//! layout `[d_in, d_out]`.
//!
//! Dropout is only active on an autodiff backend (burn's rule), i.e. during training; use
//! `model.valid()` for evaluation.

use adalora_core::{AdaptedLinear, AdapterHost};
use burn::module::{Initializer, Module, Param};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::config::{Activation, BertConfig};
use crate::error::ModelError;
use crate::family::{
    layer_adapters, layer_adapters_mut, EncoderLayer, Family, HeadSource, LoadFamily, ModelInput,
    ModuleKind, SequenceClassifier,
};
use crate::loader::{parse_config, seeded_linear, Exporter, HfTensor, Reader};
use crate::ops::PostAttention;

/// BERT in the registry ([`crate::families`]).
pub static FAMILY: Family = Family {
    model_types: &["bert"],
    base_prefix: "bert",
    architecture: "BertForSequenceClassification",
    head_modules: &["classifier"],
    layer_list: "encoder.layer",
    layer_slots: &LAYER_SLOTS,
    extra_slots: &[(ModuleKind::Pooler, POOLER)],
    ignored_prefixes: &["cls."],
};

/// HF names of a layer's dense layers, in the order of [`EncoderLayer::dense_layers`] (the
/// structural adapter order). RoBERTa shares them.
pub const LAYER_SLOTS: [(ModuleKind, &str); 6] = [
    (ModuleKind::Query, "attention.self.query"),
    (ModuleKind::Key, "attention.self.key"),
    (ModuleKind::Value, "attention.self.value"),
    (ModuleKind::AttentionOutput, "attention.output.dense"),
    (ModuleKind::Intermediate, "intermediate.dense"),
    (ModuleKind::Output, "output.dense"),
];
/// HF names of a layer's LayerNorms (after attention, after the FFN).
const LAYER_NORMS: [&str; 2] = ["attention.output.LayerNorm", "output.LayerNorm"];
const POOLER: &str = "pooler.dense";
/// HF names of the embedding tables and their LayerNorm.
pub const EMBEDDINGS: [&str; 4] = [
    "embeddings.word_embeddings",
    "embeddings.position_embeddings",
    "embeddings.token_type_embeddings",
    "embeddings.LayerNorm",
];

/// Word, position and token-type embeddings, LayerNorm and dropout.
#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    pub word_embeddings: Embedding<B>,
    pub position_embeddings: Embedding<B>,
    pub token_type_embeddings: Embedding<B>,
    pub layer_norm: LayerNorm<B>,
    pub dropout: Dropout,
}

impl<B: Backend> BertEmbeddings<B> {
    /// Absolute positions `0..seq`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let [_, seq_len] = input_ids.dims();
        let positions = self
            .position_embeddings
            .weight
            .val()
            .narrow(0, 0, seq_len)
            .unsqueeze::<3>();
        self.finish(input_ids, token_type_ids, positions)
    }

    /// Word + token-type + the given position embeddings (`[batch or 1, seq, hidden]`), then
    /// LayerNorm and dropout.
    pub fn finish(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Tensor<B, 2, Int>,
        positions: Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let x = self.word_embeddings.forward(input_ids)
            + self.token_type_embeddings.forward(token_type_ids)
            + positions;
        self.dropout.forward(self.layer_norm.forward(x))
    }

    pub fn load(r: &mut Reader<'_>, cfg: &BertConfig, device: &B::Device) -> Self {
        let h = cfg.hidden_size;
        let [word, position, token_type, norm] = EMBEDDINGS;
        BertEmbeddings {
            word_embeddings: r.embedding(word, cfg.vocab_size, h, device),
            position_embeddings: r.embedding(position, cfg.max_position_embeddings, h, device),
            token_type_embeddings: r.embedding(token_type, cfg.type_vocab_size, h, device),
            layer_norm: r.layer_norm(norm, h, cfg.layer_norm_eps, device),
            dropout: DropoutConfig::new(cfg.hidden_dropout_prob).init(),
        }
    }

    pub fn export(&self, ex: &mut Exporter) {
        let [word, position, token_type, norm] = EMBEDDINGS;
        ex.embedding(word, &self.word_embeddings);
        ex.embedding(position, &self.position_embeddings);
        ex.embedding(token_type, &self.token_type_embeddings);
        ex.layer_norm(norm, &self.layer_norm);
    }
}

/// One post-LayerNorm transformer layer. Field order is the structural adapter order
/// ([`LAYER_SLOTS`]).
#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    pub query: AdaptedLinear<B>,
    pub key: AdaptedLinear<B>,
    pub value: AdaptedLinear<B>,
    /// `attention.output.dense` (the paper's W_o).
    pub attention_output: AdaptedLinear<B>,
    pub attention_layer_norm: LayerNorm<B>,
    /// `intermediate.dense` (W_f1).
    pub intermediate: AdaptedLinear<B>,
    /// `output.dense` (W_f2).
    pub output: AdaptedLinear<B>,
    pub output_layer_norm: LayerNorm<B>,
    pub attention_dropout: Dropout,
    pub hidden_dropout: Dropout,
    pub num_heads: usize,
    /// Tanh-approximate GELU instead of the exact erf form.
    pub gelu_tanh: bool,
}

impl<B: Backend> EncoderLayer<B> for BertLayer<B> {
    fn dense_layers(&self) -> [&AdaptedLinear<B>; 6] {
        [
            &self.query,
            &self.key,
            &self.value,
            &self.attention_output,
            &self.intermediate,
            &self.output,
        ]
    }

    fn dense_layers_mut(&mut self) -> [&mut AdaptedLinear<B>; 6] {
        [
            &mut self.query,
            &mut self.key,
            &mut self.value,
            &mut self.attention_output,
            &mut self.intermediate,
            &mut self.output,
        ]
    }
}

impl<B: Backend> BertLayer<B> {
    /// `mask` is the additive attention mask `[batch, 1, 1, seq]`.
    pub fn forward(&self, x: Tensor<B, 3>, mask: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, t, h] = x.dims();
        let nh = self.num_heads;
        let hd = h / nh;
        let heads = |y: Tensor<B, 3>| y.reshape([b, t, nh, hd]).swap_dims(1, 2);
        let q = heads(self.query.forward(x.clone()));
        let k = heads(self.key.forward(x.clone()));
        let v = heads(self.value.forward(x.clone()));
        let scores = crate::ops::attention_scores(q, k, mask);
        let probs = self.attention_dropout.forward(softmax(scores, 3));
        let context = probs.matmul(v).swap_dims(1, 2).reshape([b, t, h]);
        self.post_attention().forward(context, x)
    }

    fn post_attention(&self) -> PostAttention<'_, B> {
        PostAttention {
            attention_output: &self.attention_output,
            attention_layer_norm: &self.attention_layer_norm,
            intermediate: &self.intermediate,
            output: &self.output,
            output_layer_norm: &self.output_layer_norm,
            hidden_dropout: &self.hidden_dropout,
            gelu_tanh: self.gelu_tanh,
        }
    }

    /// Layer `prefix` (`encoder.layer.3`) of a checkpoint.
    pub fn load(r: &mut Reader<'_>, prefix: &str, cfg: &BertConfig, device: &B::Device) -> Self {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let [query, key, value, attention_output, intermediate, output] =
            LAYER_SLOTS.map(|(kind, leaf)| {
                let (d_in, d_out) = match kind {
                    ModuleKind::Intermediate => (h, i),
                    ModuleKind::Output => (i, h),
                    _ => (h, h),
                };
                r.dense(&format!("{prefix}.{leaf}"), d_in, d_out, device)
            });
        let [attention_layer_norm, output_layer_norm] = LAYER_NORMS
            .map(|leaf| r.layer_norm(&format!("{prefix}.{leaf}"), h, cfg.layer_norm_eps, device));
        BertLayer {
            query,
            key,
            value,
            attention_output,
            attention_layer_norm,
            intermediate,
            output,
            output_layer_norm,
            attention_dropout: DropoutConfig::new(cfg.attention_probs_dropout_prob).init(),
            hidden_dropout: DropoutConfig::new(cfg.hidden_dropout_prob).init(),
            num_heads: cfg.num_attention_heads,
            gelu_tanh: cfg.activation() == Ok(Activation::GeluTanh),
        }
    }

    /// The layer's tensors under `prefix`, adapters folded in.
    pub fn export(&self, ex: &mut Exporter, prefix: &str) {
        for (layer, (_, leaf)) in self.dense_layers().into_iter().zip(LAYER_SLOTS) {
            ex.dense(&format!("{prefix}.{leaf}"), layer);
        }
        let norms = [&self.attention_layer_norm, &self.output_layer_norm];
        for (ln, leaf) in norms.into_iter().zip(LAYER_NORMS) {
            ex.layer_norm(&format!("{prefix}.{leaf}"), ln);
        }
    }
}

/// The encoder's outputs.
#[derive(Debug, Clone)]
pub struct BertOutput<B: Backend> {
    /// `[batch, seq, hidden]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// `tanh(dense(h[CLS]))`, `[batch, hidden]`.
    pub pooled: Tensor<B, 2>,
}

/// HF `BertModel`: embeddings, encoder layers and pooler.
#[derive(Module, Debug)]
pub struct BertModel<B: Backend> {
    pub embeddings: BertEmbeddings<B>,
    pub layers: Vec<BertLayer<B>>,
    /// `pooler.dense`.
    pub pooler: AdaptedLinear<B>,
}

/// The additive attention mask `[batch, 1, 1, seq]`: 0 for tokens, `f32::MIN` for padding.
pub fn additive_mask<B: Backend>(attention_mask: Tensor<B, 2, Int>) -> Tensor<B, 4> {
    let [b, t] = attention_mask.dims();
    let pad = attention_mask.equal_elem(0);
    Tensor::<B, 2>::zeros([b, t], &pad.device())
        .mask_fill(pad, f32::MIN)
        .reshape([b, 1, 1, t])
}

/// `[CLS]` (first token) states `[batch, hidden]`.
pub fn first_token<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 2> {
    let [b, _, h] = x.dims();
    x.slice([0..b, 0..1, 0..h]).reshape([b, h])
}

impl<B: Backend> BertModel<B> {
    /// A randomly initialised model (HF init: N(0, initializer_range²) weights, zero biases,
    /// unit LayerNorms) — used for tests.
    pub fn init(cfg: &BertConfig, device: &B::Device) -> Result<Self, ModelError> {
        cfg.validate().map_err(ModelError::Invalid)?;
        let std = cfg.initializer_range;
        let normal = Initializer::Normal { mean: 0.0, std };
        let dense = |d_in: usize, d_out: usize| {
            AdaptedLinear::Plain(
                LinearConfig::new(d_in, d_out)
                    .with_initializer(normal.clone())
                    .init(device)
                    .pipe_zero_bias(device)
                    .into(),
            )
        };
        let emb = |n: usize| {
            EmbeddingConfig::new(n, cfg.hidden_size)
                .with_initializer(normal.clone())
                .init(device)
        };
        let ln = || {
            LayerNormConfig::new(cfg.hidden_size)
                .with_epsilon(cfg.layer_norm_eps)
                .init(device)
        };
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let gelu_tanh = cfg.activation().map_err(ModelError::Invalid)? == Activation::GeluTanh;
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| BertLayer {
                query: dense(h, h),
                key: dense(h, h),
                value: dense(h, h),
                attention_output: dense(h, h),
                attention_layer_norm: ln(),
                intermediate: dense(h, i),
                output: dense(i, h),
                output_layer_norm: ln(),
                attention_dropout: DropoutConfig::new(cfg.attention_probs_dropout_prob).init(),
                hidden_dropout: DropoutConfig::new(cfg.hidden_dropout_prob).init(),
                num_heads: cfg.num_attention_heads,
                gelu_tanh,
            })
            .collect();
        Ok(BertModel {
            embeddings: BertEmbeddings {
                word_embeddings: emb(cfg.vocab_size),
                position_embeddings: emb(cfg.max_position_embeddings),
                token_type_embeddings: emb(cfg.type_vocab_size),
                layer_norm: ln(),
                dropout: DropoutConfig::new(cfg.hidden_dropout_prob).init(),
            },
            layers,
            pooler: dense(h, h),
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.embeddings.word_embeddings.weight.dims()[1]
    }

    pub fn forward(&self, input: ModelInput<B>) -> BertOutput<B> {
        let mask = additive_mask(input.attention_mask);
        let mut x = self
            .embeddings
            .forward(input.input_ids, input.token_type_ids);
        for layer in &self.layers {
            x = layer.forward(x, mask.clone());
        }
        let pooled = self.pooler.forward(first_token(x.clone())).tanh();
        BertOutput {
            last_hidden_state: x,
            pooled,
        }
    }

    /// The encoder of a checkpoint (names relative to the encoder).
    pub fn load(r: &mut Reader<'_>, cfg: &BertConfig, device: &B::Device) -> Self {
        r.encoder(|r| BertModel {
            embeddings: BertEmbeddings::load(r, cfg, device),
            layers: (0..cfg.num_hidden_layers)
                .map(|l| BertLayer::load(r, &FAMILY.layer_prefix(l), cfg, device))
                .collect(),
            pooler: r.dense(POOLER, cfg.hidden_size, cfg.hidden_size, device),
        })
    }

    /// The encoder's tensors under HF names (relative to the exporter's prefix), adapters
    /// folded in: a plain BERT checkpoint.
    pub fn export(&self, ex: &mut Exporter) {
        self.embeddings.export(ex);
        for (l, layer) in self.layers.iter().enumerate() {
            layer.export(ex, &FAMILY.layer_prefix(l));
        }
        ex.dense(POOLER, &self.pooler);
    }
}

trait ZeroBias<B: Backend> {
    fn pipe_zero_bias(self, device: &B::Device) -> Self;
}

impl<B: Backend> ZeroBias<B> for Linear<B> {
    fn pipe_zero_bias(mut self, device: &B::Device) -> Self {
        if let Some(b) = &self.bias {
            let n = b.dims()[0];
            self.bias = Some(Param::from_tensor(Tensor::zeros([n], device)));
        }
        self
    }
}

impl<B: Backend> AdapterHost<B> for BertModel<B> {
    /// Layer-major: query, key, value, attention-output, intermediate, output of layer 0, then
    /// layer 1, …, then the pooler.
    fn adapted_linears(&self) -> Vec<&AdaptedLinear<B>> {
        let mut v = layer_adapters(&self.layers);
        v.push(&self.pooler);
        v
    }

    fn adapted_linears_mut(&mut self) -> Vec<&mut AdaptedLinear<B>> {
        let mut v = layer_adapters_mut(&mut self.layers);
        v.push(&mut self.pooler);
        v
    }
}

/// HF `BertForSequenceClassification`: encoder, dropout and a classifier on the pooled output.
/// `num_labels == 1` is regression (MSE), more labels are classification (cross-entropy).
#[derive(Module, Debug)]
pub struct BertForSequenceClassification<B: Backend> {
    pub bert: BertModel<B>,
    pub dropout: Dropout,
    /// `classifier`: weight `[hidden, num_labels]`; always trainable.
    pub classifier: Linear<B>,
}

const CLASSIFIER: &str = "classifier";

impl<B: Backend> BertForSequenceClassification<B> {
    /// Wrap an encoder with a fresh head: N(0, std²) weight from `seed`, zero bias.
    pub fn with_new_head(
        bert: BertModel<B>,
        num_labels: usize,
        std: f64,
        dropout: f64,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        if num_labels == 0 {
            return Err(ModelError::Invalid("num_labels must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&dropout) {
            return Err(ModelError::Invalid(format!(
                "classifier dropout {dropout} must be in [0, 1)"
            )));
        }
        let h = bert.hidden_size();
        Ok(BertForSequenceClassification {
            bert,
            dropout: DropoutConfig::new(dropout).init(),
            classifier: seeded_linear(h, num_labels, std, seed, device),
        })
    }
}

impl<B: Backend> AdapterHost<B> for BertForSequenceClassification<B> {
    fn adapted_linears(&self) -> Vec<&AdaptedLinear<B>> {
        self.bert.adapted_linears()
    }

    fn adapted_linears_mut(&mut self) -> Vec<&mut AdaptedLinear<B>> {
        self.bert.adapted_linears_mut()
    }
}

impl<B: Backend> SequenceClassifier<B> for BertForSequenceClassification<B> {
    fn family(&self) -> &'static Family {
        &FAMILY
    }

    fn num_layers(&self) -> usize {
        self.bert.layers.len()
    }

    fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    fn hidden_states(&self, input: ModelInput<B>) -> Tensor<B, 3> {
        self.bert.forward(input).last_hidden_state
    }

    fn forward(&self, input: ModelInput<B>) -> Tensor<B, 2> {
        let pooled = self.bert.forward(input).pooled;
        self.classifier.forward(self.dropout.forward(pooled))
    }

    fn head_linears(&self) -> Vec<(&'static str, &Linear<B>)> {
        vec![(CLASSIFIER, &self.classifier)]
    }

    fn head_linears_mut(&mut self) -> Vec<(&'static str, &mut Linear<B>)> {
        vec![(CLASSIFIER, &mut self.classifier)]
    }

    fn with_classifier_dropout(mut self, p: f64) -> Self {
        self.dropout = DropoutConfig::new(p).init();
        self
    }

    fn export_hf(&self) -> Vec<HfTensor> {
        let mut ex = Exporter::new(&FAMILY.prefix());
        self.bert.export(&mut ex);
        ex.prefix.clear();
        ex.linear(CLASSIFIER, &self.classifier);
        ex.tensors
    }
}

/// The longest input BERT's absolute positions cover.
pub fn max_tokens(config: &serde_json::Value, path: &std::path::Path) -> Result<usize, ModelError> {
    let cfg: BertConfig = parse_config(config, path, BertConfig::validate)?;
    Ok(cfg.max_position_embeddings)
}

impl<B: Backend> LoadFamily<B> for BertForSequenceClassification<B> {
    fn load(
        config: &serde_json::Value,
        config_path: &std::path::Path,
        r: &mut Reader<'_>,
        num_labels: usize,
        seed: u64,
        device: &B::Device,
    ) -> Result<(Self, HeadSource), ModelError> {
        let cfg: BertConfig = parse_config(config, config_path, BertConfig::validate)?;
        let bert = BertModel::load(r, &cfg, device);
        let model = Self::with_new_head(
            bert,
            num_labels,
            cfg.initializer_range,
            cfg.classifier_dropout_prob(),
            seed,
            device,
        )?;
        if r.has(&format!("{CLASSIFIER}.weight")) {
            Ok((model.read_head(r, device), HeadSource::Checkpoint))
        } else {
            Ok((model, HeadSource::Initialized { seed }))
        }
    }
}
