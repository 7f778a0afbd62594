//! `eval` and `merge`: reload what a run (or PEFT) saved and use it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adalora_model::{
    load_for_classification, resolve_model_dir, AnyClassifier, SequenceClassifier,
};
use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use serde::Serialize;

use crate::config::{RunConfig, Setting};
use crate::eval::{evaluate_split, predict_logits};
use crate::io::{read_json, RunDir};
use crate::merge::write_hf_model;
use crate::peft::{load_peft_adapter, read_adapter_quantization, CONFIG_FILE};
use crate::task::{load_tokenizer, prepare_task, PreparedTask};
use crate::trainer::quantize_for_device;

/// Where the weights to evaluate/merge come from.
pub struct Source {
    pub config: RunConfig,
    pub model_dir: PathBuf,
    /// A PEFT adapter folder, or an HF model folder (full fine-tuning / BitFit runs).
    pub weights: PathBuf,
    /// The base model a run was trained from; `model_dir` must match it.
    pub model_fingerprint: Option<String>,
}

impl Source {
    /// A run folder: its config and its final adapter (or `best` with `use_best`). The base
    /// model is the one the run recorded, or `model` (checked against the run's fingerprint)
    /// when it has moved. `overrides` replace the run's settings, e.g. `device = "cpu"` to
    /// evaluate a GPU run on a machine without one.
    pub fn from_run(
        run: &Path,
        use_best: bool,
        model: Option<&Path>,
        overrides: &[Setting],
    ) -> anyhow::Result<Self> {
        let dir = RunDir::new(run);
        let config = RunConfig::load_settings(Some(&dir.config()), overrides)
            .with_context(|| format!("{} is not a run folder", run.display()))?;
        let weights = if use_best {
            dir.best_adapter()
        } else {
            dir.final_adapter()
        };
        if !weights.is_dir() {
            bail!(
                "{} has no saved model ({}); is the run finished?",
                run.display(),
                weights.display()
            );
        }
        let model_fingerprint = recorded_fingerprint(&dir)?;
        let model_dir = match (model, &config.model) {
            (Some(m), _) => resolve_model_dir(Some(m))?,
            (None, Some(recorded)) if !recorded.join("config.json").is_file() => bail!(
                "the base model of run {} is not at {} any more (moved?): pass --model DIR with \
                 the same checkpoint{}",
                run.display(),
                recorded.display(),
                model_fingerprint
                    .as_ref()
                    .map(|f| format!(" (fingerprint {f})"))
                    .unwrap_or_default()
            ),
            (None, recorded) => resolve_model_dir(recorded.as_deref())?,
        };
        Ok(Source {
            config,
            model_dir,
            weights,
            model_fingerprint,
        })
    }
}

/// The base model's fingerprint a run recorded: in summary.json, else in its checkpoint.
fn recorded_fingerprint(dir: &RunDir) -> anyhow::Result<Option<String>> {
    let state = dir.checkpoint().join("state.json");
    let recorded = if dir.summary().is_file() {
        read_json::<crate::trainer::Summary>(&dir.summary())?.model_fingerprint
    } else if state.is_file() {
        read_json::<crate::trainer::TrainState>(&state)?.model_fingerprint
    } else {
        String::new()
    };
    Ok(Some(recorded).filter(|f| !f.is_empty()))
}

/// Load the classification model described by `src` on `device`, with `num_labels` outputs.
pub fn load_model<B: Backend>(
    src: &Source,
    num_labels: usize,
    device: &B::Device,
) -> anyhow::Result<AnyClassifier<B>> {
    if let Some(expected) = &src.model_fingerprint {
        let found = crate::trainer::fingerprint(&src.model_dir, num_labels)?;
        if &found != expected {
            bail!(
                "{} is not the base model this run was trained from (fingerprint {found}, the \
                 run recorded {expected}); pass --model DIR with the run's checkpoint",
                src.model_dir.display()
            );
        }
    }
    let seed = src.config.seed;
    if src.weights.join(CONFIG_FILE).is_file() {
        let (base, _) = load_for_classification::<B>(&src.model_dir, num_labels, seed, device)?;
        // The base the adapter was trained on: quantized as the run (or the adapter) records.
        let quant = match src.config.quant_config() {
            Some(q) => Some(q),
            None => read_adapter_quantization(&src.weights)?,
        };
        let base = match quant {
            Some(q) => quantize_for_device(base, q, src.config.device)?.0,
            None => base,
        };
        let (model, _) = load_peft_adapter(base, &src.weights, device)?;
        Ok(model)
    } else if src.weights.join("model.safetensors").is_file() {
        let (model, _) = load_for_classification::<B>(&src.weights, num_labels, seed, device)?;
        Ok(model)
    } else {
        bail!(
            "{} holds neither a PEFT adapter ({CONFIG_FILE}) nor an HF model (model.safetensors)",
            src.weights.display()
        )
    }
}

fn prepare(src: &Source) -> anyhow::Result<(PreparedTask, adalora_data::tokenize::TextTokenizer)> {
    src.config.check_against_model(&src.model_dir)?;
    let tokenizer = load_tokenizer(&src.model_dir, src.config.train.max_seq_len)?;
    Ok((prepare_task(&src.config, &tokenizer)?, tokenizer))
}

#[derive(Debug, Serialize)]
pub struct EvalReport {
    pub task: String,
    pub weights: String,
    pub splits: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Evaluate on every dev split (and a held-out run's selection split), on the run's device.
pub fn evaluate(src: &Source) -> anyhow::Result<EvalReport> {
    crate::on_device!(src.config.device, B => evaluate_on::<B>(src, &Default::default()))
}

fn evaluate_on<B: Backend>(src: &Source, device: &B::Device) -> anyhow::Result<EvalReport> {
    let (prepared, tokenizer) = prepare(src)?;
    let model = load_model::<B>(src, prepared.task.kind.num_outputs(), device)?;
    let mut splits = BTreeMap::new();
    // The dev splits, and the selection split of a held-out run.
    for (dataset, encoded) in prepared.eval_splits() {
        let r = evaluate_split(
            &model,
            &prepared.task,
            dataset,
            encoded,
            tokenizer.pad_id(),
            src.config.train.eval_batch_size,
            device,
        )?;
        let mut m: BTreeMap<String, f64> = r.metrics.values.into_iter().collect();
        // As in metrics.csv: the task loss, and the loss with γ·R as PEFT reports it.
        let orth = crate::eval::orth_term(&model, src.config.adalora.orth_form, device);
        m.insert("task_loss".into(), r.loss);
        m.insert(
            "loss".into(),
            r.loss + src.config.adalora.orth_reg_weight * orth.unwrap_or(0.0),
        );
        splits.insert(dataset.name.clone(), m);
    }
    Ok(EvalReport {
        task: prepared.task.name.clone(),
        weights: src.weights.display().to_string(),
        splits,
    })
}

#[derive(Debug, Serialize)]
pub struct MergeReport {
    pub out: String,
    pub checked_examples: usize,
    /// max |logit(merged) − logit(unmerged)| over the checked dev examples.
    pub max_abs_logit_diff: f64,
}

/// Merge the adapters into the base weights and write an HF model folder (a quantized base is
/// dequantized first, so the folder is full precision); checks on up to
/// `check_examples` dev examples that merged and unmerged logits agree.
pub fn merge(src: &Source, out: &Path, check_examples: usize) -> anyhow::Result<MergeReport> {
    crate::on_device!(src.config.device, B => {
        merge_on::<B>(src, out, check_examples, &Default::default())
    })
}

fn merge_on<B: Backend>(
    src: &Source,
    out: &Path,
    check_examples: usize,
    device: &B::Device,
) -> anyhow::Result<MergeReport> {
    let (mut prepared, tokenizer) = prepare(src)?;
    let model = load_model::<B>(src, prepared.task.kind.num_outputs(), device)?;
    let merged = model.clone().merge_and_unload();
    let mut encoded = prepared.dev.swap_remove(0);
    encoded.items.truncate(check_examples);
    encoded.targets.truncate(check_examples);
    let (a, _) = predict_logits(&model, &encoded, tokenizer.pad_id(), 32, device)?;
    let (b, _) = predict_logits(&merged, &encoded, tokenizer.pad_id(), 32, device)?;
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64));
    if diff > 1e-3 {
        bail!(
            "merged and unmerged logits differ by {diff:e}; refusing to write {}",
            out.display()
        );
    }
    crate::io::replace_dir(out, |tmp| {
        write_hf_model(&merged, &src.model_dir, &prepared.task, tmp)
    })?;
    Ok(MergeReport {
        out: out.display().to_string(),
        checked_examples: encoded.len(),
        max_abs_logit_diff: diff,
    })
}

/// Examples from a text file: one per line, `text` or `text_a<TAB>text_b`.
fn read_inputs(
    path: &Path,
    kind: &adalora_data::TaskKind,
) -> anyhow::Result<adalora_data::Dataset> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let target = if kind.is_regression() {
        adalora_data::Target::Score(0.0)
    } else {
        adalora_data::Target::Class(0)
    };
    let examples = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (a, b) = match l.split_once('\t') {
                Some((a, b)) => (a.to_string(), Some(b.to_string())),
                None => (l.to_string(), None),
            };
            adalora_data::Example {
                text_a: a,
                text_b: b,
                target,
            }
        })
        .collect();
    Ok(adalora_data::Dataset {
        name: "input".into(),
        examples,
    })
}

/// Logits with the model `src` describes, on the task's first dev split (dataset order) or on
/// the examples of `input`; written as CSV `index,prediction,logit_0,…` when `out` is given.
pub fn predict(
    src: &Source,
    input: Option<&Path>,
    out: Option<&Path>,
) -> anyhow::Result<Vec<Vec<f32>>> {
    crate::on_device!(src.config.device, B => {
        predict_on::<B>(src, input, out, &Default::default())
    })
}

fn predict_on<B: Backend>(
    src: &Source,
    input: Option<&Path>,
    out: Option<&Path>,
    device: &B::Device,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let (mut prepared, tokenizer) = prepare(src)?;
    if let Some(path) = input {
        let data = read_inputs(path, &prepared.task.kind)?;
        prepared.dev = vec![tokenizer.encode_dataset(&data)?];
    }
    let model = load_model::<B>(src, prepared.task.kind.num_outputs(), device)?;
    let k = prepared.task.kind.num_outputs();
    let (logits, _) = predict_logits(
        &model,
        &prepared.dev[0],
        tokenizer.pad_id(),
        src.config.train.eval_batch_size,
        device,
    )?;
    let rows: Vec<Vec<f32>> = logits.chunks(k).map(|c| c.to_vec()).collect();
    if let Some(path) = out {
        crate::eval::write_predictions_csv(path, &logits, &prepared.task.kind)?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeviceKind;
    use crate::peft::save_peft_adapter;
    use crate::trainer::build_model;
    use crate::{CpuBackend, CpuTrain};
    use adalora_core::{AdapterHost, QuantType};

    /// Which quantized bases of `model` dequantize from codes on the device.
    fn on_device_flags(model: &AnyClassifier<CpuBackend>) -> Vec<bool> {
        model
            .adapted_linears()
            .iter()
            .map(|l| l.base().as_quantized().unwrap().device_codes.enabled())
            .collect()
    }

    /// eval and predict rebuild a quantized base the way training did: with the 4-bit codes on
    /// the card for a GPU run, on the host for a CPU run.
    #[test]
    fn a_quantized_adapter_loads_on_the_runs_device_path() {
        let model_dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model/tiny-bert");
        let mut config = RunConfig {
            quantize: Some(QuantType::Nf4),
            quant_block_size: 16,
            ..Default::default()
        };
        let dev = Default::default();
        let (model, _, _) = build_model::<CpuTrain>(&config, &model_dir, 3, 10, &dev).unwrap();
        let adapter = tempfile::tempdir().unwrap();
        let method = config.method_config(10).unwrap();
        save_peft_adapter(&model, &method, None, None, adapter.path()).unwrap();
        for (device, expected) in [(DeviceKind::Cpu, false), (DeviceKind::Cuda, true)] {
            config.device = device;
            let src = Source {
                config: config.clone(),
                model_dir: model_dir.clone(),
                weights: adapter.path().to_path_buf(),
                model_fingerprint: None,
            };
            let flags = on_device_flags(&load_model::<CpuBackend>(&src, 3, &dev).unwrap());
            assert!(!flags.is_empty());
            assert!(
                flags.iter().all(|&f| f == expected),
                "{device:?}: {flags:?}"
            );
        }
    }
}
