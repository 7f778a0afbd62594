//! From data batches to the model seam: padded [`Batch`]es become [`ModelInput`] tensors, and
//! logits meet the batch's targets in the task loss.

use adalora_data::batch::{Batch, Targets};
use adalora_model::{ModelInput, SequenceClassifier};
use anyhow::{bail, ensure};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// The model input of a padded batch.
pub fn model_input<B: Backend>(batch: &Batch, device: &B::Device) -> anyhow::Result<ModelInput<B>> {
    Ok(ModelInput::from_rows(
        &batch.input_ids,
        &batch.token_type_ids,
        &batch.attention_mask,
        batch.batch_size,
        batch.seq_len,
        device,
    )?)
}

/// Logits `[batch, num_labels]` of a padded batch.
pub fn forward_batch<B: Backend, M: SequenceClassifier<B>>(
    model: &M,
    batch: &Batch,
    device: &B::Device,
) -> anyhow::Result<Tensor<B, 2>> {
    Ok(model.forward(model_input(batch, device)?))
}

/// Mean cross-entropy (class targets) or mean squared error (score targets, one output) —
/// HF's `*ForSequenceClassification` loss.
pub fn task_loss<B: Backend>(
    logits: Tensor<B, 2>,
    targets: &Targets,
) -> anyhow::Result<Tensor<B, 1>> {
    let [b, k] = logits.dims();
    let device = logits.device();
    match targets {
        Targets::Class(classes) => {
            ensure!(
                k >= 2,
                "class targets need a classification head (num_labels >= 2), this head has {k} output(s)"
            );
            ensure!(
                classes.len() == b,
                "{} targets for a batch of {b}",
                classes.len()
            );
            if let Some(c) = classes.iter().find(|&&c| c < 0 || c as usize >= k) {
                bail!("class target {c} is outside 0..{k}");
            }
            let idx =
                Tensor::<B, 2, Int>::from_data(TensorData::new(classes.clone(), [b, 1]), &device);
            Ok(log_softmax(logits, 1).gather(1, idx).mean().neg())
        }
        Targets::Score(scores) => {
            ensure!(
                k == 1,
                "score targets need a regression head (num_labels = 1), this head has {k} outputs"
            );
            ensure!(
                scores.len() == b,
                "{} targets for a batch of {b}",
                scores.len()
            );
            let t = Tensor::<B, 2>::from_data(TensorData::new(scores.clone(), [b, 1]), &device);
            Ok((logits - t).powi_scalar(2).mean())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Cpu = burn::backend::NdArray<f32>;

    fn logits(rows: &[&[f32]]) -> Tensor<Cpu, 2> {
        let k = rows[0].len();
        let data: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(data, [rows.len(), k]), &Default::default())
    }

    fn value(t: Tensor<Cpu, 1>) -> f32 {
        t.into_data().to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let rows: [&[f32]; 2] = [&[0.5, -1.0, 2.0], &[1.5, 0.25, -0.75]];
        let ce = |row: &[f32], c: usize| {
            let lse = row.iter().map(|x| x.exp()).sum::<f32>().ln();
            lse - row[c]
        };
        let want = (ce(rows[0], 0) + ce(rows[1], 2)) / 2.0;
        let got = value(task_loss(logits(&rows), &Targets::Class(vec![0, 2])).unwrap());
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn regression_uses_mse_and_heads_must_fit_the_targets() {
        let l = logits(&[&[0.5], &[-1.0]]);
        let got = value(task_loss(l.clone(), &Targets::Score(vec![1.0, -2.0])).unwrap());
        assert!((got - (0.25 + 1.0) / 2.0).abs() < 1e-6, "{got}");
        let err = task_loss(l, &Targets::Class(vec![0, 1])).unwrap_err();
        assert!(err.to_string().contains("classification head"), "{err}");
        let err = task_loss(logits(&[&[0.0, 1.0]]), &Targets::Class(vec![2])).unwrap_err();
        assert!(err.to_string().contains("outside 0..2"), "{err}");
        let err = task_loss(logits(&[&[0.0, 1.0]]), &Targets::Score(vec![1.0])).unwrap_err();
        assert!(err.to_string().contains("regression head"), "{err}");
    }
}
