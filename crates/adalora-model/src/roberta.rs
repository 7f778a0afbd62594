//! RoBERTa (Liu et al., 2019) as HF `transformers`' `RobertaForSequenceClassification`.
//!
//! The encoder is BERT's ([`BertEmbeddings`], [`BertLayer`]: same tensors, same HF names under
//! `roberta.`) with two differences that matter:
//!
//! * position ids count only real tokens and start after the padding index
//!   (`create_position_ids_from_input_ids`: `cumsum(id != pad) · (id != pad) + pad`), so a
//!   padded position gets the padding index's embedding;
//! * token types are not used: RoBERTa's tokenizer returns none and HF then embeds type 0
//!   everywhere (`type_vocab_size` is 1), whatever the batch carries.
//!
//! There is no pooler in the classification model; the head ([`RobertaClassificationHead`],
//! HF `classifier`) is dropout → dense → tanh → dropout → `out_proj` on the `<s>` state.

use adalora_core::{AdaptedLinear, AdapterHost};
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::bert::{additive_mask, first_token, BertEmbeddings, BertLayer, LAYER_SLOTS};
use crate::config::BertConfig;
use crate::error::ModelError;
use crate::family::{
    layer_adapters, layer_adapters_mut, Family, HeadSource, LoadFamily, ModelInput,
    SequenceClassifier,
};
use crate::loader::{parse_config, seeded_linear, Exporter, HfTensor, Reader};

/// RoBERTa in the registry ([`crate::families`]).
pub static FAMILY: Family = Family {
    model_types: &["roberta"],
    base_prefix: "roberta",
    architecture: "RobertaForSequenceClassification",
    head_modules: &["classifier"],
    layer_list: "encoder.layer",
    layer_slots: &LAYER_SLOTS,
    extra_slots: &[],
    // The MLM head of pretrained checkpoints, and the pooler the classifier does not use.
    ignored_prefixes: &["lm_head.", "pooler."],
};

/// HF names of the head's two linear layers.
const HEAD_DENSE: &str = "classifier.dense";
const HEAD_OUT: &str = "classifier.out_proj";

/// HF `RobertaClassificationHead`.
#[derive(Module, Debug)]
pub struct RobertaClassificationHead<B: Backend> {
    pub dense: Linear<B>,
    pub out_proj: Linear<B>,
    pub dropout: Dropout,
}

impl<B: Backend> RobertaClassificationHead<B> {
    pub fn forward(&self, features: Tensor<B, 3>) -> Tensor<B, 2> {
        let x = self.dropout.forward(first_token(features));
        let x = self.dense.forward(x).tanh();
        self.out_proj.forward(self.dropout.forward(x))
    }
}

/// HF `RobertaForSequenceClassification` (`RobertaModel` without pooler + head).
#[derive(Module, Debug)]
pub struct RobertaForSequenceClassification<B: Backend> {
    pub embeddings: BertEmbeddings<B>,
    pub layers: Vec<BertLayer<B>>,
    pub classifier: RobertaClassificationHead<B>,
    pub padding_idx: usize,
}

/// `create_position_ids_from_input_ids`: real tokens get `pad + 1, pad + 2, …`, padding gets
/// `pad`.
pub fn position_ids<B: Backend>(input_ids: Tensor<B, 2, Int>, pad: usize) -> Tensor<B, 2, Int> {
    let real = input_ids.not_equal_elem(pad as i64).int();
    (real.clone().cumsum(1) * real).add_scalar(pad as i64)
}

impl<B: Backend> RobertaForSequenceClassification<B> {
    fn encode(&self, input: ModelInput<B>) -> Tensor<B, 3> {
        let [b, t] = input.dims();
        let device = input.input_ids.device();
        let positions = self
            .embeddings
            .position_embeddings
            .forward(position_ids(input.input_ids.clone(), self.padding_idx));
        let token_types = Tensor::<B, 2, Int>::zeros([b, t], &device);
        let mut x = self
            .embeddings
            .finish(input.input_ids, token_types, positions);
        let mask = additive_mask(input.attention_mask);
        for layer in &self.layers {
            x = layer.forward(x, mask.clone());
        }
        x
    }
}

impl<B: Backend> AdapterHost<B> for RobertaForSequenceClassification<B> {
    /// Layer-major, [`LAYER_SLOTS`] order within a layer.
    fn adapted_linears(&self) -> Vec<&AdaptedLinear<B>> {
        layer_adapters(&self.layers)
    }

    fn adapted_linears_mut(&mut self) -> Vec<&mut AdaptedLinear<B>> {
        layer_adapters_mut(&mut self.layers)
    }
}

impl<B: Backend> SequenceClassifier<B> for RobertaForSequenceClassification<B> {
    fn family(&self) -> &'static Family {
        &FAMILY
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn num_labels(&self) -> usize {
        self.classifier.out_proj.weight.dims()[1]
    }

    fn hidden_states(&self, input: ModelInput<B>) -> Tensor<B, 3> {
        self.encode(input)
    }

    fn forward(&self, input: ModelInput<B>) -> Tensor<B, 2> {
        self.classifier.forward(self.encode(input))
    }

    fn head_linears(&self) -> Vec<(&'static str, &Linear<B>)> {
        vec![
            (HEAD_DENSE, &self.classifier.dense),
            (HEAD_OUT, &self.classifier.out_proj),
        ]
    }

    fn head_linears_mut(&mut self) -> Vec<(&'static str, &mut Linear<B>)> {
        vec![
            (HEAD_DENSE, &mut self.classifier.dense),
            (HEAD_OUT, &mut self.classifier.out_proj),
        ]
    }

    fn with_classifier_dropout(mut self, p: f64) -> Self {
        self.classifier.dropout = DropoutConfig::new(p).init();
        self
    }

    fn export_hf(&self) -> Vec<HfTensor> {
        let mut ex = Exporter::new(&FAMILY.prefix());
        self.embeddings.export(&mut ex);
        for (l, layer) in self.layers.iter().enumerate() {
            layer.export(&mut ex, &FAMILY.layer_prefix(l));
        }
        ex.prefix.clear();
        ex.tensors.extend(self.head_hf());
        ex.tensors
    }
}

fn validate(cfg: &BertConfig) -> Result<(), String> {
    cfg.validate()?;
    if cfg.max_position_embeddings <= cfg.pad_token_id + 1 {
        return Err(format!(
            "max_position_embeddings = {} leaves no position after pad_token_id = {}",
            cfg.max_position_embeddings, cfg.pad_token_id
        ));
    }
    Ok(())
}

/// The longest input RoBERTa's positions cover: they start after the padding index.
pub fn max_tokens(config: &serde_json::Value, path: &std::path::Path) -> Result<usize, ModelError> {
    let cfg: BertConfig = parse_config(config, path, validate)?;
    Ok(cfg.max_position_embeddings - (cfg.pad_token_id + 1))
}

impl<B: Backend> LoadFamily<B> for RobertaForSequenceClassification<B> {
    fn load(
        config: &serde_json::Value,
        config_path: &std::path::Path,
        r: &mut Reader<'_>,
        num_labels: usize,
        seed: u64,
        device: &B::Device,
    ) -> Result<(Self, HeadSource), ModelError> {
        let cfg: BertConfig = parse_config(config, config_path, validate)?;
        let (embeddings, layers) = r.encoder(|r| {
            let embeddings = BertEmbeddings::load(r, &cfg, device);
            let layers = (0..cfg.num_hidden_layers)
                .map(|l| BertLayer::load(r, &FAMILY.layer_prefix(l), &cfg, device))
                .collect();
            (embeddings, layers)
        });
        let h = cfg.hidden_size;
        let std = cfg.initializer_range;
        let dropout = cfg.classifier_dropout_prob();
        let model = RobertaForSequenceClassification {
            embeddings,
            layers,
            classifier: RobertaClassificationHead {
                dense: seeded_linear(h, h, std, seed, device),
                out_proj: seeded_linear(h, num_labels, std, seed.wrapping_add(1), device),
                dropout: DropoutConfig::new(dropout).init(),
            },
            padding_idx: cfg.pad_token_id,
        };
        if r.has(&format!("{HEAD_OUT}.weight")) {
            Ok((model.read_head(r, device), HeadSource::Checkpoint))
        } else {
            Ok((model, HeadSource::Initialized { seed }))
        }
    }
}
