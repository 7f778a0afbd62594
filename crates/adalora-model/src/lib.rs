//! # adalora-model
//!
//! BERT-family encoders on burn for AdaLoRA experiments:
//!
//! * [`bert`]: the encoder ([`BertModel`]) and the sequence-classification/regression model
//!   ([`BertForSequenceClassification`]); every dense layer is an
//!   [`adalora_core::AdaptedLinear`], enumerated structurally through
//!   [`adalora_core::AdapterHost`].
//! * [`loader`]: HF checkpoints (`config.json` + `model.safetensors`, with or without the
//!   `bert.` prefix), model-folder resolution, export back to HF layout.
//! * [`target`]: adapter injection by target spec (peft's `target_modules`), fine-tuning
//!   methods (full, BitFit, LoRA, AdaLoRA) and the trainable-parameter report.
//! * [`encode`]: sentence embeddings (mean/CLS pooling) to CSV for the CLI.

pub mod bert;
pub mod config;
pub mod encode;
pub mod error;
pub mod loader;
pub mod target;

pub use bert::{BertForSequenceClassification, BertInput, BertModel, BertOutput};
pub use config::{Activation, BertConfig};
pub use encode::{embed_sentences, encode_file, EncodeOptions, EncodeReport, Pooling};
pub use error::{ModelError, FETCH_HINT};
pub use loader::{
    export_hf_classifier_tensors, export_hf_tensors, load_bert, load_for_classification,
    load_tokenizer, resolve_model_dir, save_hf_classifier_safetensors, save_hf_safetensors,
    HeadSource, HfTensor,
};
pub use target::{
    apply_method, apply_method_with_ranks, Method, ModuleKind, ParamReport, TargetSpec,
};
