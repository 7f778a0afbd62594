//! Merged full models in Hugging Face layout (`model.safetensors` + `config.json` + tokenizer),
//! loadable by `transformers.AutoModelForSequenceClassification.from_pretrained` (the family's
//! `*ForSequenceClassification`).

use std::path::Path;

use adalora_data::{Task, TaskKind};
use adalora_model::{write_safetensors, SequenceClassifier};
use anyhow::Context;
use burn::tensor::backend::Backend;
use serde_json::{json, Value};

use crate::io::{atomic_write, atomic_write_json};

/// Tokenizer files copied next to the weights when present in the base model folder.
const TOKENIZER_FILES: [&str; 7] = [
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spm.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Write `model` (adapters must already be merged, or absent) as an HF checkpoint into `dir`.
pub fn write_hf_model<B: Backend, M: SequenceClassifier<B>>(
    model: &M,
    base_model_dir: &Path,
    task: &Task,
    dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_safetensors(&model.export_hf(), &dir.join("model.safetensors"))?;
    let config_path = base_model_dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let mut config: Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", config_path.display()))?;
    let obj = config
        .as_object_mut()
        .context("config.json is not an object")?;
    obj.insert("architectures".into(), json!([model.family().architecture]));
    obj.insert("num_labels".into(), json!(task.kind.num_outputs()));
    match &task.kind {
        TaskKind::Regression => {
            obj.insert("problem_type".into(), json!("regression"));
            obj.insert("id2label".into(), json!({"0": "LABEL_0"}));
            obj.insert("label2id".into(), json!({"LABEL_0": 0}));
        }
        TaskKind::Classification { labels } => {
            obj.insert("problem_type".into(), json!("single_label_classification"));
            let id2label: serde_json::Map<String, Value> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), json!(l)))
                .collect();
            let label2id: serde_json::Map<String, Value> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), json!(i)))
                .collect();
            obj.insert("id2label".into(), Value::Object(id2label));
            obj.insert("label2id".into(), Value::Object(label2id));
        }
    }
    atomic_write_json(&dir.join("config.json"), &config)?;
    for f in TOKENIZER_FILES {
        let src = base_model_dir.join(f);
        if src.is_file() {
            atomic_write(&dir.join(f), &std::fs::read(&src)?)?;
        }
    }
    Ok(())
}
