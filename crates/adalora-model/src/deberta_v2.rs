//! DeBERTa-v2 / DeBERTa-v3 (He et al., 2021) as HF `transformers`' `DebertaV2ForSequenceClassification`
//! (`modeling_deberta_v2.py`), the AdaLoRA paper's encoder.
//!
//! * embeddings: word (+ absolute positions when `position_biased_input`, + token types when
//!   `type_vocab_size > 0`), LayerNorm, then padded positions are zeroed (× mask), dropout;
//! * disentangled self-attention: `QKᵀ` plus content→position (`c2p`: queries against
//!   relative-position keys) and position→content (`p2c`: keys against relative-position
//!   queries) terms, all scaled by `√(d_head · (1 + #terms))`. Relative distances are
//!   log-bucketed (`position_buckets`, `max_relative_positions`); the relative embeddings are
//!   LayerNorm-ed when `norm_rel_ebd` says `layer_norm`, and projected by the layer's own
//!   query/key projections when `share_att_key` (else by `pos_query_proj`/`pos_key_proj`).
//!   The attention mask is 2-D (`m_i·m_j`) and *replaces* scores by `f32::MIN`, so a padded
//!   query attends uniformly — as HF does;
//! * no ConvLayer (`conv_kernel_size` must be 0) and no enhanced mask decoder: the EMD belongs
//!   to the MLM pretraining head, the classifier reads the last layer;
//! * head: `ContextPooler` (dropout → dense → gelu on the first token) → dropout → `classifier`.

use adalora_core::{AdaptedLinear, AdapterHost};
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, Linear};
use burn::tensor::activation::{gelu, gelu_approximate, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use serde::Deserialize;

use crate::bert::first_token;
use crate::config::Activation;
use crate::error::ModelError;
use crate::family::{
    layer_adapters, layer_adapters_mut, EncoderLayer, Family, HeadSource, LoadFamily, ModelInput,
    ModuleKind, SequenceClassifier,
};
use crate::loader::{parse_config, seeded_linear, Exporter, HfTensor, Reader};
use crate::ops::PostAttention;

/// DeBERTa-v2/v3 in the registry ([`crate::families`]).
pub static FAMILY: Family = Family {
    model_types: &["deberta-v2"],
    base_prefix: "deberta",
    architecture: "DebertaV2ForSequenceClassification",
    head_modules: &["pooler", "classifier"],
    layer_list: "encoder.layer",
    layer_slots: &LAYER_SLOTS,
    extra_slots: &[],
    // MLM heads of pretrained checkpoints (legacy `cls.`, v3 `lm_predictions.`, the EMD's
    // `mask_predictions.`) and absolute positions a `position_biased_input = false` model
    // does not use (HF ignores them too).
    ignored_prefixes: &[
        "cls.",
        "lm_predictions.",
        "mask_predictions.",
        "embeddings.position_embeddings",
    ],
};

/// HF names of a layer's dense layers, in the order of [`EncoderLayer::dense_layers`].
pub const LAYER_SLOTS: [(ModuleKind, &str); 6] = [
    (ModuleKind::Query, "attention.self.query_proj"),
    (ModuleKind::Key, "attention.self.key_proj"),
    (ModuleKind::Value, "attention.self.value_proj"),
    (ModuleKind::AttentionOutput, "attention.output.dense"),
    (ModuleKind::Intermediate, "intermediate.dense"),
    (ModuleKind::Output, "output.dense"),
];
/// HF names of a layer's LayerNorms (after attention, after the FFN).
const LAYER_NORMS: [&str; 2] = ["attention.output.LayerNorm", "output.LayerNorm"];
/// Separate relative-position projections (only without `share_att_key`).
const POS_KEY_PROJ: &str = "attention.self.pos_key_proj";
const POS_QUERY_PROJ: &str = "attention.self.pos_query_proj";
const WORD: &str = "embeddings.word_embeddings";
const POSITION: &str = "embeddings.position_embeddings";
const TOKEN_TYPE: &str = "embeddings.token_type_embeddings";
const EMBEDDING_NORM: &str = "embeddings.LayerNorm";
const REL_EMBEDDINGS: &str = "encoder.rel_embeddings";
const REL_NORM: &str = "encoder.LayerNorm";
const POOLER: &str = "pooler.dense";
const CLASSIFIER: &str = "classifier";

/// `pos_att_type`: `"p2c|c2p"` (v3 configs), a list, or null.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum PosAttType {
    #[default]
    None,
    Joined(String),
    List(Vec<String>),
}

impl PosAttType {
    fn terms(&self) -> Vec<String> {
        match self {
            PosAttType::None => Vec::new(),
            PosAttType::Joined(s) => s.split('|').map(|t| t.trim().to_lowercase()).collect(),
            PosAttType::List(v) => v.iter().map(|t| t.trim().to_lowercase()).collect(),
        }
    }
}

/// The fields of a DeBERTa-v2/v3 `config.json` (defaults: `transformers.DebertaV2Config`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DebertaV2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub initializer_range: f64,
    pub layer_norm_eps: f64,
    pub relative_attention: bool,
    /// `< 1` means `max_position_embeddings`.
    pub max_relative_positions: i64,
    /// `<= 0` means no bucketing.
    pub position_buckets: i64,
    pub position_biased_input: bool,
    pub pos_att_type: PosAttType,
    pub share_att_key: bool,
    pub norm_rel_ebd: String,
    pub conv_kernel_size: usize,
    pub pooler_dropout: f64,
    pub pooler_hidden_act: String,
    pub pooler_hidden_size: Option<usize>,
    pub embedding_size: Option<usize>,
    pub attention_head_size: Option<usize>,
    /// Dropout before the classifier; `None` means `hidden_dropout_prob`.
    pub cls_dropout: Option<f64>,
}

impl Default for DebertaV2Config {
    fn default() -> Self {
        DebertaV2Config {
            vocab_size: 128100,
            hidden_size: 1536,
            num_hidden_layers: 24,
            num_attention_heads: 24,
            intermediate_size: 6144,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 0,
            initializer_range: 0.02,
            layer_norm_eps: 1e-7,
            relative_attention: false,
            max_relative_positions: -1,
            position_buckets: -1,
            position_biased_input: true,
            pos_att_type: PosAttType::None,
            share_att_key: false,
            norm_rel_ebd: "none".into(),
            conv_kernel_size: 0,
            pooler_dropout: 0.0,
            pooler_hidden_act: "gelu".into(),
            pooler_hidden_size: None,
            embedding_size: None,
            attention_head_size: None,
            cls_dropout: None,
        }
    }
}

impl DebertaV2Config {
    pub fn validate(&self) -> Result<(), String> {
        Activation::parse(&self.hidden_act)?;
        Activation::parse(&self.pooler_hidden_act).map_err(|e| format!("pooler_{e}"))?;
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size = {} is not a multiple of num_attention_heads = {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        let same_width = [
            ("embedding_size", self.embedding_size),
            ("pooler_hidden_size", self.pooler_hidden_size),
            (
                "attention_head_size x num_attention_heads",
                self.attention_head_size
                    .map(|d| d * self.num_attention_heads),
            ),
        ];
        for (name, v) in same_width {
            if v.is_some_and(|v| v != self.hidden_size) {
                return Err(format!(
                    "{name} = {} differs from hidden_size = {} (not supported)",
                    v.unwrap_or_default(),
                    self.hidden_size
                ));
            }
        }
        if self.conv_kernel_size > 0 {
            return Err(format!(
                "conv_kernel_size = {} (the ConvLayer after the first layer) is not supported",
                self.conv_kernel_size
            ));
        }
        if let Some(t) = self
            .pos_att_type
            .terms()
            .into_iter()
            .find(|t| t != "c2p" && t != "p2c")
        {
            return Err(format!(
                "pos_att_type term {t:?} is not supported (c2p, p2c)"
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
            ("pooler_dropout", self.pooler_dropout),
            ("cls_dropout", self.classifier_dropout_prob()),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{name} = {p} must be in [0, 1)"));
            }
        }
        Ok(())
    }

    pub fn classifier_dropout_prob(&self) -> f64 {
        self.cls_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    /// `max_relative_positions`, defaulted as HF does.
    fn max_relative(&self) -> i64 {
        if self.max_relative_positions < 1 {
            self.max_position_embeddings as i64
        } else {
            self.max_relative_positions
        }
    }

    /// Half the relative-embedding table (`pos_ebd_size`).
    fn att_span(&self) -> usize {
        if self.position_buckets > 0 {
            self.position_buckets as usize
        } else {
            self.max_relative() as usize
        }
    }

    fn relative(&self) -> Option<RelativeAttention> {
        let terms = self.pos_att_type.terms();
        self.relative_attention.then(|| RelativeAttention {
            c2p: terms.iter().any(|t| t == "c2p"),
            p2c: terms.iter().any(|t| t == "p2c"),
            att_span: self.att_span(),
            position_buckets: self.position_buckets,
            max_relative_positions: self.max_relative(),
            share_att_key: self.share_att_key,
        })
    }
}

/// The relative-attention settings every layer shares.
#[derive(Debug, Clone)]
pub struct RelativeAttention {
    pub c2p: bool,
    pub p2c: bool,
    pub att_span: usize,
    pub position_buckets: i64,
    pub max_relative_positions: i64,
    pub share_att_key: bool,
}

impl RelativeAttention {
    /// HF `make_log_bucket_position`, in f32 as torch computes it.
    fn bucket(&self, rel: i64) -> i64 {
        let (buckets, max_pos) = (self.position_buckets, self.max_relative_positions);
        if buckets <= 0 || max_pos <= 0 {
            return rel;
        }
        let mid = buckets / 2;
        let abs = if rel < mid && rel > -mid {
            mid - 1
        } else {
            rel.abs()
        };
        if abs <= mid {
            return rel;
        }
        let ratio = ((max_pos - 1) as f64 / mid as f64) as f32;
        let log_pos =
            ((abs as f32 / mid as f32).ln() / ratio.ln() * (mid - 1) as f32).ceil() + mid as f32;
        log_pos as i64 * rel.signum()
    }

    /// The `c2p` and `p2c` gather indices `[n, n]` (query i, key j):
    /// `clamp(±bucket(i − j) + span, 0, 2·span − 1)`.
    fn indices(&self, n: usize) -> (Vec<i64>, Vec<i64>) {
        let span = self.att_span as i64;
        let clamp = |v: i64| v.clamp(0, 2 * span - 1);
        let mut c2p = Vec::with_capacity(n * n);
        let mut p2c = Vec::with_capacity(n * n);
        for i in 0..n as i64 {
            for j in 0..n as i64 {
                let rel = self.bucket(i - j);
                c2p.push(clamp(rel + span));
                p2c.push(clamp(-rel + span));
            }
        }
        (c2p, p2c)
    }
}

/// Word (+ position, + token type) embeddings, LayerNorm, padding zeroed, dropout.
#[derive(Module, Debug)]
pub struct DebertaV2Embeddings<B: Backend> {
    pub word_embeddings: Embedding<B>,
    pub position_embeddings: Option<Embedding<B>>,
    pub token_type_embeddings: Option<Embedding<B>>,
    pub layer_norm: LayerNorm<B>,
    pub dropout: Dropout,
}

impl<B: Backend> DebertaV2Embeddings<B> {
    pub fn forward(&self, input: &ModelInput<B>) -> Tensor<B, 3> {
        let [_, n] = input.dims();
        let mut x = self.word_embeddings.forward(input.input_ids.clone());
        if let Some(p) = &self.position_embeddings {
            x = x + p.weight.val().narrow(0, 0, n).unsqueeze::<3>();
        }
        if let Some(t) = &self.token_type_embeddings {
            x = x + t.forward(input.token_type_ids.clone());
        }
        let mask = input.attention_mask.clone().float().unsqueeze_dim::<3>(2);
        self.dropout.forward(self.layer_norm.forward(x) * mask)
    }

    fn load(r: &mut Reader<'_>, cfg: &DebertaV2Config, device: &B::Device) -> Self {
        let h = cfg.hidden_size;
        DebertaV2Embeddings {
            word_embeddings: r.embedding(WORD, cfg.vocab_size, h, device),
            position_embeddings: cfg
                .position_biased_input
                .then(|| r.embedding(POSITION, cfg.max_position_embeddings, h, device)),
            token_type_embeddings: (cfg.type_vocab_size > 0)
                .then(|| r.embedding(TOKEN_TYPE, cfg.type_vocab_size, h, device)),
            layer_norm: r.layer_norm(EMBEDDING_NORM, h, cfg.layer_norm_eps, device),
            dropout: DropoutConfig::new(cfg.hidden_dropout_prob).init(),
        }
    }

    fn export(&self, ex: &mut Exporter) {
        ex.embedding(WORD, &self.word_embeddings);
        if let Some(p) = &self.position_embeddings {
            ex.embedding(POSITION, p);
        }
        if let Some(t) = &self.token_type_embeddings {
            ex.embedding(TOKEN_TYPE, t);
        }
        ex.layer_norm(EMBEDDING_NORM, &self.layer_norm);
    }
}

/// What the layers share per forward: the relative embeddings and gather indices.
struct RelativeInputs<B: Backend> {
    /// `[1, 2·span, hidden]`, normalised and dropped out.
    embeddings: Tensor<B, 3>,
    /// `[batch, heads, n, n]`.
    c2p: Tensor<B, 4, Int>,
    p2c: Tensor<B, 4, Int>,
}

/// One DeBERTa layer (disentangled attention + FFN, post-LayerNorm). Field order of the dense
/// layers is the structural adapter order ([`LAYER_SLOTS`]).
#[derive(Module, Debug)]
pub struct DebertaV2Layer<B: Backend> {
    pub query_proj: AdaptedLinear<B>,
    pub key_proj: AdaptedLinear<B>,
    pub value_proj: AdaptedLinear<B>,
    pub attention_output: AdaptedLinear<B>,
    pub attention_layer_norm: LayerNorm<B>,
    pub intermediate: AdaptedLinear<B>,
    pub output: AdaptedLinear<B>,
    pub output_layer_norm: LayerNorm<B>,
    /// Without `share_att_key`: the relative-position projections (not adapter targets).
    pub pos_key_proj: Option<Linear<B>>,
    pub pos_query_proj: Option<Linear<B>>,
    pub attention_dropout: Dropout,
    pub hidden_dropout: Dropout,
    pub num_heads: usize,
    /// `1 + #pos_att_type terms`, with or without relative attention (as HF).
    pub scale_factor: usize,
    pub gelu_tanh: bool,
}

impl<B: Backend> EncoderLayer<B> for DebertaV2Layer<B> {
    fn dense_layers(&self) -> [&AdaptedLinear<B>; 6] {
        [
            &self.query_proj,
            &self.key_proj,
            &self.value_proj,
            &self.attention_output,
            &self.intermediate,
            &self.output,
        ]
    }

    fn dense_layers_mut(&mut self) -> [&mut AdaptedLinear<B>; 6] {
        [
            &mut self.query_proj,
            &mut self.key_proj,
            &mut self.value_proj,
            &mut self.attention_output,
            &mut self.intermediate,
            &mut self.output,
        ]
    }
}

impl<B: Backend> DebertaV2Layer<B> {
    /// `mask`: true where query i may **not** attend key j, `[batch, heads, n, n]`.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        mask: Tensor<B, 4, Bool>,
        rel: Option<(&RelativeAttention, &RelativeInputs<B>)>,
    ) -> Tensor<B, 3> {
        let [b, n, h] = x.dims();
        let nh = self.num_heads;
        let hd = h / nh;
        let heads = |y: Tensor<B, 3>| {
            let [bb, t, _] = y.dims();
            y.reshape([bb, t, nh, hd]).swap_dims(1, 2)
        };
        let q = heads(self.query_proj.forward(x.clone()));
        let k = heads(self.key_proj.forward(x.clone()));
        let v = heads(self.value_proj.forward(x.clone()));
        // torch: sqrt(tensor(d_head, float32) * scale_factor).
        let scale = ((hd * self.scale_factor) as f32).sqrt() as f64;
        let mut scores = q
            .clone()
            .matmul(k.clone().swap_dims(2, 3).div_scalar(scale));
        if let Some((settings, inputs)) = rel {
            let span2 = inputs.embeddings.dims()[1];
            let expand = |p: Tensor<B, 4>| p.expand([b, nh, span2, hd]);
            let project = |shared: &AdaptedLinear<B>, own: &Option<Linear<B>>| {
                let e = inputs.embeddings.clone();
                expand(heads(match own {
                    Some(l) if !settings.share_att_key => l.forward(e),
                    _ => shared.forward(e),
                }))
            };
            if settings.c2p {
                let pos_key = project(&self.key_proj, &self.pos_key_proj);
                let c2p = q.matmul(pos_key.swap_dims(2, 3));
                scores = scores + c2p.gather(3, inputs.c2p.clone()).div_scalar(scale);
            }
            if settings.p2c {
                let pos_query = project(&self.query_proj, &self.pos_query_proj);
                let p2c = k.matmul(pos_query.swap_dims(2, 3));
                let p2c = p2c.gather(3, inputs.p2c.clone()).swap_dims(2, 3);
                scores = scores + p2c.div_scalar(scale);
            }
        }
        let scores = scores.mask_fill(mask, f32::MIN);
        let probs = self.attention_dropout.forward(softmax(scores, 3));
        let context = probs.matmul(v).swap_dims(1, 2).reshape([b, n, h]);
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

    fn load(r: &mut Reader<'_>, prefix: &str, cfg: &DebertaV2Config, device: &B::Device) -> Self {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let [query_proj, key_proj, value_proj, attention_output, intermediate, output] =
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
        let own = cfg.relative().filter(|rel| !rel.share_att_key);
        let mut pos_proj = |used: bool, leaf: &str| {
            used.then(|| r.linear(&format!("{prefix}.{leaf}"), h, h, device))
        };
        let pos_key_proj = pos_proj(own.as_ref().is_some_and(|r| r.c2p), POS_KEY_PROJ);
        let pos_query_proj = pos_proj(own.as_ref().is_some_and(|r| r.p2c), POS_QUERY_PROJ);
        DebertaV2Layer {
            query_proj,
            key_proj,
            value_proj,
            attention_output,
            attention_layer_norm,
            intermediate,
            output,
            output_layer_norm,
            pos_key_proj,
            pos_query_proj,
            attention_dropout: DropoutConfig::new(cfg.attention_probs_dropout_prob).init(),
            hidden_dropout: DropoutConfig::new(cfg.hidden_dropout_prob).init(),
            num_heads: cfg.num_attention_heads,
            scale_factor: 1 + ["c2p", "p2c"]
                .iter()
                .filter(|t| cfg.pos_att_type.terms().iter().any(|u| u == *t))
                .count(),
            gelu_tanh: Activation::parse(&cfg.hidden_act) == Ok(Activation::GeluTanh),
        }
    }

    fn export(&self, ex: &mut Exporter, prefix: &str) {
        for (layer, (_, leaf)) in self.dense_layers().into_iter().zip(LAYER_SLOTS) {
            ex.dense(&format!("{prefix}.{leaf}"), layer);
        }
        let norms = [&self.attention_layer_norm, &self.output_layer_norm];
        for (ln, leaf) in norms.into_iter().zip(LAYER_NORMS) {
            ex.layer_norm(&format!("{prefix}.{leaf}"), ln);
        }
        for (proj, leaf) in [
            (&self.pos_key_proj, POS_KEY_PROJ),
            (&self.pos_query_proj, POS_QUERY_PROJ),
        ] {
            if let Some(p) = proj {
                ex.linear(&format!("{prefix}.{leaf}"), p);
            }
        }
    }
}

/// HF `DebertaV2ForSequenceClassification`: `DebertaV2Model`, `ContextPooler`, classifier.
#[derive(Module, Debug)]
pub struct DebertaV2ForSequenceClassification<B: Backend> {
    pub embeddings: DebertaV2Embeddings<B>,
    pub layers: Vec<DebertaV2Layer<B>>,
    /// `encoder.rel_embeddings` (relative attention only).
    pub rel_embeddings: Option<Embedding<B>>,
    /// `encoder.LayerNorm` on the relative embeddings (`norm_rel_ebd = "layer_norm"`).
    pub rel_layer_norm: Option<LayerNorm<B>>,
    /// `pooler.dense` (part of the head: pretrained checkpoints do not have it).
    pub pooler: Linear<B>,
    pub pooler_dropout: Dropout,
    pub pooler_gelu_tanh: bool,
    pub dropout: Dropout,
    pub classifier: Linear<B>,
    #[module(skip)]
    pub relative: Option<RelativeAttention>,
}

impl<B: Backend> DebertaV2ForSequenceClassification<B> {
    fn relative_inputs(&self, b: usize, n: usize, device: &B::Device) -> Option<RelativeInputs<B>> {
        let (settings, table) = (self.relative.as_ref()?, self.rel_embeddings.as_ref()?);
        let mut embeddings = table.weight.val();
        if let Some(ln) = &self.rel_layer_norm {
            embeddings = ln.forward(embeddings);
        }
        let nh = self.layers.first().map_or(1, |l| l.num_heads);
        let (c2p, p2c) = settings.indices(n);
        let index = |v: Vec<i64>| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(v, [n, n]), device)
                .reshape([1, 1, n, n])
                .expand([b, nh, n, n])
        };
        // HF applies each layer's `pos_dropout` (hidden dropout) to the shared table.
        let dropout = &self.layers.first()?.hidden_dropout;
        Some(RelativeInputs {
            embeddings: dropout.forward(embeddings.unsqueeze::<3>()),
            c2p: index(c2p),
            p2c: index(p2c),
        })
    }

    fn encode(&self, input: ModelInput<B>) -> Tensor<B, 3> {
        let [b, n] = input.dims();
        let device = input.input_ids.device();
        let nh = self.layers.first().map_or(1, |l| l.num_heads);
        let mut x = self.embeddings.forward(&input);
        // Query i may attend key j when both are tokens (HF `get_attention_mask`).
        let m = input.attention_mask.clone().equal_elem(1).int();
        let pair = m.clone().reshape([b, 1, n, 1]) * m.reshape([b, 1, 1, n]);
        let mask = pair.equal_elem(0).expand([b, nh, n, n]);
        let rel = self.relative_inputs(b, n, &device);
        let rel = self.relative.as_ref().zip(rel.as_ref());
        for layer in &self.layers {
            x = layer.forward(x, mask.clone(), rel);
        }
        x
    }
}

impl<B: Backend> AdapterHost<B> for DebertaV2ForSequenceClassification<B> {
    /// Layer-major, [`LAYER_SLOTS`] order within a layer.
    fn adapted_linears(&self) -> Vec<&AdaptedLinear<B>> {
        layer_adapters(&self.layers)
    }

    fn adapted_linears_mut(&mut self) -> Vec<&mut AdaptedLinear<B>> {
        layer_adapters_mut(&mut self.layers)
    }
}

impl<B: Backend> SequenceClassifier<B> for DebertaV2ForSequenceClassification<B> {
    fn family(&self) -> &'static Family {
        &FAMILY
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    fn hidden_states(&self, input: ModelInput<B>) -> Tensor<B, 3> {
        self.encode(input)
    }

    fn forward(&self, input: ModelInput<B>) -> Tensor<B, 2> {
        let context = self.pooler_dropout.forward(first_token(self.encode(input)));
        let pooled = self.pooler.forward(context);
        let pooled = if self.pooler_gelu_tanh {
            gelu_approximate(pooled)
        } else {
            gelu(pooled)
        };
        self.classifier.forward(self.dropout.forward(pooled))
    }

    fn head_linears(&self) -> Vec<(&'static str, &Linear<B>)> {
        vec![(POOLER, &self.pooler), (CLASSIFIER, &self.classifier)]
    }

    fn head_linears_mut(&mut self) -> Vec<(&'static str, &mut Linear<B>)> {
        vec![
            (POOLER, &mut self.pooler),
            (CLASSIFIER, &mut self.classifier),
        ]
    }

    fn with_classifier_dropout(mut self, p: f64) -> Self {
        self.dropout = DropoutConfig::new(p).init();
        self
    }

    fn export_hf(&self) -> Vec<HfTensor> {
        let mut ex = Exporter::new(&FAMILY.prefix());
        self.embeddings.export(&mut ex);
        for (l, layer) in self.layers.iter().enumerate() {
            layer.export(&mut ex, &FAMILY.layer_prefix(l));
        }
        if let Some(e) = &self.rel_embeddings {
            ex.embedding(REL_EMBEDDINGS, e);
        }
        if let Some(ln) = &self.rel_layer_norm {
            ex.layer_norm(REL_NORM, ln);
        }
        ex.prefix.clear();
        ex.tensors.extend(self.head_hf());
        ex.tensors
    }
}

/// The longest input: absolute positions limit it; relative ones alone (v3) do not.
pub fn max_tokens(config: &serde_json::Value, path: &std::path::Path) -> Result<usize, ModelError> {
    let cfg: DebertaV2Config = parse_config(config, path, DebertaV2Config::validate)?;
    Ok(if cfg.position_biased_input {
        cfg.max_position_embeddings
    } else {
        usize::MAX
    })
}

impl<B: Backend> LoadFamily<B> for DebertaV2ForSequenceClassification<B> {
    fn load(
        config: &serde_json::Value,
        config_path: &std::path::Path,
        r: &mut Reader<'_>,
        num_labels: usize,
        seed: u64,
        device: &B::Device,
    ) -> Result<(Self, HeadSource), ModelError> {
        let cfg: DebertaV2Config = parse_config(config, config_path, DebertaV2Config::validate)?;
        let h = cfg.hidden_size;
        let relative = cfg.relative();
        let norm_rel = cfg
            .norm_rel_ebd
            .to_lowercase()
            .split('|')
            .any(|t| t.trim() == "layer_norm");
        let (embeddings, layers, rel_embeddings, rel_layer_norm) = r.encoder(|r| {
            let embeddings = DebertaV2Embeddings::load(r, &cfg, device);
            let layers = (0..cfg.num_hidden_layers)
                .map(|l| DebertaV2Layer::load(r, &FAMILY.layer_prefix(l), &cfg, device))
                .collect();
            let rel_embeddings = relative
                .as_ref()
                .map(|rel| r.embedding(REL_EMBEDDINGS, 2 * rel.att_span, h, device));
            let rel_layer_norm =
                norm_rel.then(|| r.layer_norm(REL_NORM, h, cfg.layer_norm_eps, device));
            (embeddings, layers, rel_embeddings, rel_layer_norm)
        });
        let std = cfg.initializer_range;
        let model = DebertaV2ForSequenceClassification {
            embeddings,
            layers,
            rel_embeddings,
            rel_layer_norm,
            pooler: seeded_linear(h, h, std, seed.wrapping_add(1), device),
            pooler_dropout: DropoutConfig::new(cfg.pooler_dropout).init(),
            pooler_gelu_tanh: Activation::parse(&cfg.pooler_hidden_act) == Ok(Activation::GeluTanh),
            dropout: DropoutConfig::new(cfg.classifier_dropout_prob()).init(),
            classifier: seeded_linear(h, num_labels, std, seed, device),
            relative,
        };
        if r.has(&format!("{CLASSIFIER}.weight")) {
            Ok((model.read_head(r, device), HeadSource::Checkpoint))
        } else {
            Ok((model, HeadSource::Initialized { seed }))
        }
    }
}
