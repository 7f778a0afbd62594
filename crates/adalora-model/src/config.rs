//! `config.json` of a Hugging Face BERT or RoBERTa checkpoint (they share the fields).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// The BERT fields of a HF `config.json` (unknown fields are ignored; missing ones take
/// `transformers.BertConfig`'s defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// Must be gelu-family: `gelu` (exact erf), or `gelu_new` / `gelu_pytorch_tanh` (tanh
    /// approximation).
    pub hidden_act: String,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub initializer_range: f64,
    pub layer_norm_eps: f64,
    pub pad_token_id: usize,
    /// Only `absolute` is supported.
    pub position_embedding_type: String,
    /// Dropout before the classifier; `None` means `hidden_dropout_prob` (HF rule).
    pub classifier_dropout: Option<f64>,
}

impl Default for BertConfig {
    fn default() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: "absolute".into(),
            classifier_dropout: None,
        }
    }
}

/// The feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x·Φ(x)` with the exact erf (HF `"gelu"`).
    Gelu,
    /// The tanh approximation (HF `"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
}

impl Activation {
    /// A `hidden_act` value of `config.json`.
    pub fn parse(hidden_act: &str) -> Result<Self, String> {
        match hidden_act {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            other => Err(format!(
                "hidden_act = {other:?} is not supported (expected a gelu-family activation: \
                 \"gelu\", \"gelu_new\" or \"gelu_pytorch_tanh\")"
            )),
        }
    }
}

impl BertConfig {
    /// Read and validate a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let cfg: BertConfig = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|message| ModelError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    pub fn activation(&self) -> Result<Activation, String> {
        Activation::parse(&self.hidden_act)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Dropout probability in front of the classifier.
    pub fn classifier_dropout_prob(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    /// Check the settings this implementation relies on.
    pub fn validate(&self) -> Result<(), String> {
        self.activation()?;
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type = {:?} is not supported (only \"absolute\")",
                self.position_embedding_type
            ));
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (name, v) in positive {
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
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
            ("classifier_dropout", self.classifier_dropout_prob()),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{name} = {p} must be in [0, 1)"));
            }
        }
        Ok(())
    }
}
