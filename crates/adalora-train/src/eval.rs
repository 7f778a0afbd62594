//! Evaluation on a dev split with the task's official metrics.

use adalora_data::batch::{BatchConfig, Batcher};
use adalora_data::tokenize::EncodedDataset;
use adalora_data::{evaluate, Dataset, Metrics, Predictions, TaskKind};
use adalora_model::SequenceClassifier;

use crate::batch::{forward_batch, task_loss};
use burn::tensor::backend::Backend;
use burn::tensor::ElementConversion;

/// Predictions (dataset order) and the mean task loss.
pub struct EvalOutput {
    pub predictions: Predictions,
    pub loss: f64,
    pub metrics: Metrics,
}

/// Logits for every example of `data`, in dataset order (row-major `[n, num_labels]`).
pub fn predict_logits<B: Backend, M: SequenceClassifier<B>>(
    model: &M,
    data: &EncodedDataset,
    pad_id: u32,
    batch_size: usize,
    device: &B::Device,
) -> anyhow::Result<(Vec<f32>, f64)> {
    let k = model.num_labels();
    let batcher = Batcher::new(data, pad_id, BatchConfig::new(batch_size, 0))?;
    let mut logits = vec![0f32; data.len() * k];
    let mut loss_sum = 0.0;
    for batch in batcher.eval_batches() {
        let out = forward_batch(model, &batch, device)?;
        let loss = task_loss(out.clone(), &batch.labels)?;
        loss_sum += loss.into_scalar().elem::<f64>() * batch.batch_size as f64;
        let values = adalora_core::to_f32_vec(out);
        for (row, &i) in batch.indices.iter().enumerate() {
            logits[i * k..(i + 1) * k].copy_from_slice(&values[row * k..(row + 1) * k]);
        }
    }
    Ok((logits, loss_sum / data.len().max(1) as f64))
}

/// Argmax classes or regression scores from row-major logits.
pub fn to_predictions(logits: &[f32], kind: &TaskKind) -> Predictions {
    let k = kind.num_outputs();
    match kind {
        TaskKind::Regression => Predictions::Score(logits.iter().map(|&v| v as f64).collect()),
        TaskKind::Classification { .. } => Predictions::Class(
            logits
                .chunks(k)
                .map(|row| {
                    // First maximum, as torch.argmax.
                    let mut best = 0;
                    for (j, &v) in row.iter().enumerate() {
                        if v > row[best] {
                            best = j;
                        }
                    }
                    best
                })
                .collect(),
        ),
    }
}

pub fn evaluate_split<B: Backend, M: SequenceClassifier<B>>(
    model: &M,
    task: &adalora_data::Task,
    dataset: &Dataset,
    encoded: &EncodedDataset,
    pad_id: u32,
    batch_size: usize,
    device: &B::Device,
) -> anyhow::Result<EvalOutput> {
    let (logits, loss) = predict_logits(model, encoded, pad_id, batch_size, device)?;
    let predictions = to_predictions(&logits, &task.kind);
    let metrics = evaluate(task.metric, &predictions, &dataset.gold())?;
    Ok(EvalOutput {
        predictions,
        loss,
        metrics,
    })
}

/// The orthogonality term R(P, Q) of the model's SVD adapters (no γ), `None` without any:
/// dev losses report it next to the task loss, as PEFT's eval loss includes γ·R.
pub fn orth_term<B: Backend, M: SequenceClassifier<B>>(
    model: &M,
    form: adalora_core::OrthRegForm,
    device: &B::Device,
) -> Option<f64> {
    let adapters = model.svd_adapters();
    if adapters.is_empty() {
        return None;
    }
    let r = adalora_core::orthogonal_regularizer(&adapters, form, device);
    Some(r.into_scalar().elem::<f64>())
}

/// CSV `index,prediction,logit_0,…` (prediction = label name, or the score for regression),
/// quoted by the `csv` crate: a label is user data and may hold commas, quotes or newlines.
pub fn write_predictions_csv(
    path: &std::path::Path,
    logits: &[f32],
    kind: &TaskKind,
) -> anyhow::Result<()> {
    let k = kind.num_outputs();
    let preds = to_predictions(logits, kind);
    let header = ["index".to_string(), "prediction".to_string()]
        .into_iter()
        .chain((0..k).map(|j| format!("logit_{j}")));
    adalora_fs::write_csv(path, |w| {
        w.write_record(header)?;
        for (i, row) in logits.chunks(k).enumerate() {
            let p = match &preds {
                Predictions::Class(c) => kind.labels()[c[i]].clone(),
                Predictions::Score(s) => format!("{}", s[i]),
            };
            let fields = [i.to_string(), p]
                .into_iter()
                .chain(row.iter().map(|v| format!("{v:.7}")));
            w.write_record(fields)?;
        }
        Ok(())
    })?;
    Ok(())
}
