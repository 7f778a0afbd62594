//! # adalora-model
//!
//! Transformer encoders on burn for AdaLoRA experiments, one file per family, behind one seam:
//!
//! * [`family`]: the seam — [`SequenceClassifier`] (forward on input tensors, the adapted
//!   slots with their layer, kind and HF path, HF tensor export, the head) and the
//!   [`Family`] description each family declares;
//! * [`families`]: the registry; `config.json`'s `model_type` picks the family;
//! * [`bert`] (BERT), [`roberta`] (RoBERTa), [`deberta_v2`] (DeBERTa-v2/v3): the families;
//! * [`loader`]: HF folders and checkpoints (`config.json` + `model.safetensors`), tensor
//!   reading with every problem reported, export back to HF layout;
//! * [`target`]: adapter injection by target spec (peft's `target_modules`), fine-tuning
//!   methods (full, BitFit, LoRA, AdaLoRA) and the trainable-parameter report.
//! * [`ops`]: attention building blocks shared by the encoder families;
//! * [`quantize`]: the QLoRA pass that stores every frozen dense weight of any family in
//!   NF4/FP4/int8.
//!
//! Tokenization, batches and the task loss belong to the application (`adalora-train`); the
//! seam takes tensors ([`ModelInput`]).

pub mod bert;
pub mod config;
pub mod deberta_v2;
pub mod error;
pub mod families;
pub mod family;
pub mod loader;
pub mod ops;
pub mod quantize;
pub mod roberta;
pub mod target;

pub use bert::{BertForSequenceClassification, BertModel, BertOutput};
pub use config::{Activation, BertConfig};
pub use error::{ModelError, FETCH_HINT};
pub use families::AnyClassifier;
pub use family::{Family, HeadSource, ModelInput, ModuleKind, ModuleSlot, SequenceClassifier};
pub use loader::{
    load_for_classification, load_for_embedding, max_tokens, resolve_model_dir, write_safetensors,
    HfTensor,
};
pub use quantize::{dequantize_on_device, quantize_base, QuantReport};
pub use target::{apply_method, apply_method_with_ranks, ParamReport, TargetSpec};
