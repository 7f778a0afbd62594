//! The registry of encoder families. Adding a family is one file (its structs, its
//! [`Family`] description, [`SequenceClassifier`] and [`LoadFamily`]) plus one line in
//! [`families!`] below.

use adalora_core::{AdaptedLinear, AdapterHost};
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::ModelError;
use crate::family::{Family, HeadSource, LoadFamily, ModelInput, ModuleKind, SequenceClassifier};
use crate::loader::{HfTensor, Reader};

macro_rules! families {
    ($($module:ident :: $variant:ident ( $ty:ident )),* $(,)?) => {
        /// A sequence classifier of any registered family (the one `config.json` names).
        #[derive(Module, Debug)]
        pub enum AnyClassifier<B: Backend> {
            $($variant(crate::$module::$ty<B>)),*
        }

        /// Every registered family.
        pub fn all() -> Vec<&'static Family> {
            vec![$(&crate::$module::FAMILY),*]
        }

        impl<B: Backend> AnyClassifier<B> {
            /// Load `family`'s classifier (see [`LoadFamily::load`]).
            pub fn load(
                family: &'static Family,
                config: &serde_json::Value,
                config_path: &std::path::Path,
                reader: &mut Reader<'_>,
                num_labels: usize,
                seed: u64,
                device: &B::Device,
            ) -> Result<(Self, HeadSource), ModelError> {
                $(
                    if std::ptr::eq(family, &crate::$module::FAMILY) {
                        let (m, head) = crate::$module::$ty::load(
                            config, config_path, reader, num_labels, seed, device,
                        )?;
                        return Ok((AnyClassifier::$variant(m), head));
                    }
                )*
                unreachable!("family_of only returns registered families")
            }
        }

        /// The longest input (special tokens included) `family`'s position embeddings cover,
        /// from its `config.json`.
        pub fn max_tokens(
            family: &'static Family,
            config: &serde_json::Value,
            config_path: &std::path::Path,
        ) -> Result<usize, ModelError> {
            $(
                if std::ptr::eq(family, &crate::$module::FAMILY) {
                    return crate::$module::max_tokens(config, config_path);
                }
            )*
            unreachable!("family_of only returns registered families")
        }

        impl<B: Backend> AdapterHost<B> for AnyClassifier<B> {
            fn adapted_linears(&self) -> Vec<&AdaptedLinear<B>> {
                match self { $(AnyClassifier::$variant(m) => m.adapted_linears()),* }
            }

            fn adapted_linears_mut(&mut self) -> Vec<&mut AdaptedLinear<B>> {
                match self { $(AnyClassifier::$variant(m) => m.adapted_linears_mut()),* }
            }
        }

        impl<B: Backend> SequenceClassifier<B> for AnyClassifier<B> {
            fn family(&self) -> &'static Family {
                match self { $(AnyClassifier::$variant(m) => m.family()),* }
            }

            fn num_layers(&self) -> usize {
                match self { $(AnyClassifier::$variant(m) => m.num_layers()),* }
            }

            fn num_labels(&self) -> usize {
                match self { $(AnyClassifier::$variant(m) => m.num_labels()),* }
            }

            fn hidden_states(&self, input: ModelInput<B>) -> Tensor<B, 3> {
                match self { $(AnyClassifier::$variant(m) => m.hidden_states(input)),* }
            }

            fn forward(&self, input: ModelInput<B>) -> Tensor<B, 2> {
                match self { $(AnyClassifier::$variant(m) => m.forward(input)),* }
            }

            fn head_linears(&self) -> Vec<(&'static str, &Linear<B>)> {
                match self { $(AnyClassifier::$variant(m) => m.head_linears()),* }
            }

            fn head_linears_mut(&mut self) -> Vec<(&'static str, &mut Linear<B>)> {
                match self { $(AnyClassifier::$variant(m) => m.head_linears_mut()),* }
            }

            fn with_classifier_dropout(self, p: f64) -> Self {
                match self { $(AnyClassifier::$variant(m) => AnyClassifier::$variant(m.with_classifier_dropout(p))),* }
            }

            fn export_hf(&self) -> Vec<HfTensor> {
                match self { $(AnyClassifier::$variant(m) => m.export_hf()),* }
            }

        }
    };
}

families! {
    bert::Bert(BertForSequenceClassification),
    roberta::Roberta(RobertaForSequenceClassification),
    deberta_v2::DebertaV2(DebertaV2ForSequenceClassification),
}

/// The family `config.json`'s `model_type` names; an error naming it when none does.
pub fn family_of(
    config: &serde_json::Value,
    path: &std::path::Path,
) -> Result<&'static Family, ModelError> {
    let supported: Vec<&str> = all()
        .iter()
        .flat_map(|f| f.model_types.iter().copied())
        .collect();
    let err = |message: String| ModelError::Config {
        path: path.to_path_buf(),
        message,
    };
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            err(format!(
                "no \"model_type\" (supported: {})",
                supported.join(", ")
            ))
        })?;
    all()
        .into_iter()
        .find(|f| f.model_types.contains(&model_type))
        .ok_or_else(|| {
            err(format!(
                "model_type {model_type:?} is not supported (supported: {})",
                supported.join(", ")
            ))
        })
}

/// The kind of a dense layer some family names `name`: its HF name (`attention.self.query`,
/// `output.dense`) or, when unambiguous, the end of it (`query_proj`).
pub fn kind_of_hf_name(name: &str) -> Option<ModuleKind> {
    let names: Vec<(ModuleKind, &str)> = all()
        .into_iter()
        .flat_map(|f| f.layer_slots.iter().chain(f.extra_slots).copied())
        .collect();
    if let Some((kind, _)) = names.iter().find(|(_, leaf)| *leaf == name) {
        return Some(*kind);
    }
    let suffix = format!(".{name}");
    let mut kinds: Vec<ModuleKind> = names
        .iter()
        .filter(|(_, leaf)| leaf.ends_with(&suffix))
        .map(|(kind, _)| *kind)
        .collect();
    kinds.sort();
    kinds.dedup();
    match kinds.as_slice() {
        [kind] => Some(*kind),
        _ => None,
    }
}
