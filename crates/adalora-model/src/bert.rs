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
use adalora_data::batch::{Batch, Targets};
use burn::module::{Initializer, Module, Param};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::tensor::activation::{gelu, gelu_approximate, log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::config::{Activation, BertConfig};
use crate::error::ModelError;

/// Token ids, token types and the padding mask (1 = token, 0 = padding), all `[batch, seq]`.
#[derive(Debug, Clone)]
pub struct BertInput<B: Backend> {
    pub input_ids: Tensor<B, 2, Int>,
    pub token_type_ids: Tensor<B, 2, Int>,
    pub attention_mask: Tensor<B, 2, Int>,
}

impl<B: Backend> BertInput<B> {
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
        Ok(BertInput {
            input_ids: t(input_ids),
            token_type_ids: t(token_type_ids),
            attention_mask: t(attention_mask),
        })
    }

    /// From a padded [`adalora_data::batch::Batch`].
    pub fn from_batch(batch: &Batch, device: &B::Device) -> Result<Self, ModelError> {
        Self::from_rows(
            &batch.input_ids,
            &batch.token_type_ids,
            &batch.attention_mask,
            batch.batch_size,
            batch.seq_len,
            device,
        )
    }

    pub fn dims(&self) -> [usize; 2] {
        self.input_ids.dims()
    }
}

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
        let x = self.word_embeddings.forward(input_ids)
            + self.token_type_embeddings.forward(token_type_ids)
            + positions;
        self.dropout.forward(self.layer_norm.forward(x))
    }
}

/// One post-LayerNorm transformer layer. Field order is the structural adapter order.
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
        let attn = self
            .hidden_dropout
            .forward(self.attention_output.forward(context));
        let x = self.attention_layer_norm.forward(attn + x);

        let inter = self.intermediate.forward(x.clone());
        let inter = if self.gelu_tanh {
            gelu_approximate(inter)
        } else {
            gelu(inter)
        };
        let out = self.hidden_dropout.forward(self.output.forward(inter));
        self.output_layer_norm.forward(out + x)
    }

    /// The six dense layers in structural order.
    pub fn dense_layers(&self) -> [&AdaptedLinear<B>; 6] {
        [
            &self.query,
            &self.key,
            &self.value,
            &self.attention_output,
            &self.intermediate,
            &self.output,
        ]
    }

    pub fn dense_layers_mut(&mut self) -> [&mut AdaptedLinear<B>; 6] {
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

impl<B: Backend> BertModel<B> {
    /// A randomly initialised model (HF init: N(0, initializer_range²) weights, zero biases,
    /// unit LayerNorms) — used for tests and as the shape reference of the loader.
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

    pub fn max_positions(&self) -> usize {
        self.embeddings.position_embeddings.weight.dims()[0]
    }

    pub fn forward(&self, input: BertInput<B>) -> BertOutput<B> {
        let [b, _] = input.dims();
        let mask = additive_mask(input.attention_mask);
        let mut x = self
            .embeddings
            .forward(input.input_ids, input.token_type_ids);
        for layer in &self.layers {
            x = layer.forward(x, mask.clone());
        }
        let h = x.dims()[2];
        let cls = x.clone().slice([0..b, 0..1, 0..h]).reshape([b, h]);
        let pooled = self.pooler.forward(cls).tanh();
        BertOutput {
            last_hidden_state: x,
            pooled,
        }
    }

    /// Fold every adapter into its base weight and drop it: a plain model whose forward equals
    /// the adapted one.
    pub fn merge_and_unload(self) -> Self {
        let device = self.embeddings.word_embeddings.weight.device();
        let plain = |l: AdaptedLinear<B>| AdaptedLinear::Plain(l.merge_and_unload(&device).into());
        BertModel {
            embeddings: self.embeddings,
            layers: self
                .layers
                .into_iter()
                .map(|l| BertLayer {
                    query: plain(l.query),
                    key: plain(l.key),
                    value: plain(l.value),
                    attention_output: plain(l.attention_output),
                    attention_layer_norm: l.attention_layer_norm,
                    intermediate: plain(l.intermediate),
                    output: plain(l.output),
                    output_layer_norm: l.output_layer_norm,
                    attention_dropout: l.attention_dropout,
                    hidden_dropout: l.hidden_dropout,
                    num_heads: l.num_heads,
                    gelu_tanh: l.gelu_tanh,
                })
                .collect(),
            pooler: plain(self.pooler),
        }
    }

    /// Apply `f` to every adapted layer, in structural order, rebuilding the model.
    pub(crate) fn try_map_adapted<F>(mut self, mut f: F) -> Result<Self, ModelError>
    where
        F: FnMut(usize, AdaptedLinear<B>) -> Result<AdaptedLinear<B>, ModelError>,
    {
        let mut k = 0;
        let device = self.embeddings.word_embeddings.weight.device();
        let mut take = |slot: &mut AdaptedLinear<B>| -> Result<(), ModelError> {
            // Swap in a cheap placeholder, transform, and put the result back.
            let placeholder = AdaptedLinear::Plain(
                Linear {
                    weight: Param::from_tensor(Tensor::zeros([1, 1], &device)),
                    bias: None,
                }
                .into(),
            );
            let old = std::mem::replace(slot, placeholder);
            *slot = f(k, old)?;
            k += 1;
            Ok(())
        };
        for layer in &mut self.layers {
            for slot in layer.dense_layers_mut() {
                take(slot)?;
            }
        }
        take(&mut self.pooler)?;
        Ok(self)
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
        let mut v: Vec<&AdaptedLinear<B>> =
            self.layers.iter().flat_map(|l| l.dense_layers()).collect();
        v.push(&self.pooler);
        v
    }

    fn adapted_linears_mut(&mut self) -> Vec<&mut AdaptedLinear<B>> {
        let mut v: Vec<&mut AdaptedLinear<B>> = self
            .layers
            .iter_mut()
            .flat_map(|l| l.dense_layers_mut())
            .collect();
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
        let weight = seeded_normal(seed, h * num_labels, std);
        let classifier = Linear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(weight, [h, num_labels]),
                device,
            )),
            bias: Some(Param::from_tensor(Tensor::zeros([num_labels], device))),
        };
        Ok(BertForSequenceClassification {
            bert,
            dropout: DropoutConfig::new(dropout).init(),
            classifier,
        })
    }

    pub fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    pub fn is_regression(&self) -> bool {
        self.num_labels() == 1
    }

    /// Logits `[batch, num_labels]`.
    pub fn forward(&self, input: BertInput<B>) -> Tensor<B, 2> {
        let pooled = self.bert.forward(input).pooled;
        self.classifier.forward(self.dropout.forward(pooled))
    }

    /// Logits of a padded data batch.
    pub fn forward_batch(
        &self,
        batch: &Batch,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>, ModelError> {
        Ok(self.forward(BertInput::from_batch(batch, device)?))
    }

    /// Mean cross-entropy (class targets) or mean squared error (score targets, 1 output) —
    /// HF's `BertForSequenceClassification` loss.
    pub fn loss(
        &self,
        logits: Tensor<B, 2>,
        targets: &Targets,
    ) -> Result<Tensor<B, 1>, ModelError> {
        let [b, k] = logits.dims();
        let device = logits.device();
        match targets {
            Targets::Class(classes) => {
                if k < 2 {
                    return Err(ModelError::Invalid(format!(
                        "class targets need a classification head (num_labels >= 2), this head has {k} output(s)"
                    )));
                }
                check_len(classes.len(), b)?;
                if let Some(c) = classes.iter().find(|&&c| c < 0 || c as usize >= k) {
                    return Err(ModelError::Invalid(format!(
                        "class target {c} is outside 0..{k}"
                    )));
                }
                let idx = Tensor::<B, 2, Int>::from_data(
                    TensorData::new(classes.clone(), [b, 1]),
                    &device,
                );
                Ok(log_softmax(logits, 1).gather(1, idx).mean().neg())
            }
            Targets::Score(scores) => {
                if k != 1 {
                    return Err(ModelError::Invalid(format!(
                        "score targets need a regression head (num_labels = 1), this head has {k} outputs"
                    )));
                }
                check_len(scores.len(), b)?;
                let t = Tensor::<B, 2>::from_data(TensorData::new(scores.clone(), [b, 1]), &device);
                Ok((logits - t).powi_scalar(2).mean())
            }
        }
    }

    /// Merge every adapter of the encoder (the head is already plain).
    pub fn merge_and_unload(self) -> Self {
        BertForSequenceClassification {
            bert: self.bert.merge_and_unload(),
            dropout: self.dropout,
            classifier: self.classifier,
        }
    }
}

fn check_len(n: usize, b: usize) -> Result<(), ModelError> {
    if n != b {
        return Err(ModelError::Invalid(format!(
            "{n} targets for a batch of {b}"
        )));
    }
    Ok(())
}

impl<B: Backend> AdapterHost<B> for BertForSequenceClassification<B> {
    fn adapted_linears(&self) -> Vec<&AdaptedLinear<B>> {
        self.bert.adapted_linears()
    }

    fn adapted_linears_mut(&mut self) -> Vec<&mut AdaptedLinear<B>> {
        self.bert.adapted_linears_mut()
    }
}

/// `n` samples of N(0, std²) from a SplitMix64 stream and Box–Muller: deterministic for a
/// seed on every backend and platform.
pub fn seeded_normal(seed: u64, n: usize, std: f64) -> Vec<f32> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 53 random bits in (0, 1].
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (next(), next());
            let r = (-2.0 * u1.ln()).sqrt();
            (r * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect()
}
