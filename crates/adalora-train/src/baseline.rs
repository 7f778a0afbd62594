//! The constant-prediction baseline of a run: what a model that learned nothing but the label
//! distribution scores on the dev split the run reports. A run close to it did not learn.

use std::collections::BTreeMap;

use adalora_data::{evaluate, Dataset, Predictions, Target, Task, TaskKind};
use anyhow::{bail, Context};

use crate::config::RunConfig;
use crate::task::{load_run_examples, RunExamples};

/// The task's metrics (the names its evaluation reports: `accuracy`, `f1`, `combined_score`,
/// `matthews_correlation`, `pearson`, `spearmanr`, …; no `task_loss`) of a constant predictor
/// on the first dev split of `task`, fitted on `task.train`: the majority class of the
/// training examples for classification (a tie goes to the lowest class index), their mean
/// score for regression. Correlations with a constant are undefined (scipy gives NaN): they are
/// reported as 0.0, as is any other NaN. `task` is the run's, as [`load_run_examples`] gives
/// it: subsampled, and under `held-out` without the selection split.
pub fn baseline_metrics(task: &Task) -> anyhow::Result<BTreeMap<String, f64>> {
    let dev = task
        .dev
        .first()
        .with_context(|| format!("task {} has no dev split", task.name))?;
    if task.train.is_empty() {
        bail!(
            "task {}: no training examples to fit the baseline on",
            task.name
        );
    }
    let preds = constant_predictions(&task.kind, &task.train, dev.len());
    let metrics = evaluate(task.metric, &preds, &dev.gold())
        .with_context(|| format!("the constant-prediction baseline of task {}", task.name))?;
    Ok(metrics
        .values
        .into_iter()
        .map(|(name, v)| (name, if v.is_nan() { 0.0 } else { v }))
        .collect())
}

/// [`baseline_metrics`] of the run `cfg` describes (e.g. an old run's resolved config.toml):
/// its examples loaded and subsampled as the trainer does, without a tokenizer or the model.
pub fn baseline_for_config(cfg: &RunConfig) -> anyhow::Result<BTreeMap<String, f64>> {
    let RunExamples { task, .. } = load_run_examples(cfg)?;
    baseline_metrics(&task)
}

fn constant_predictions(kind: &TaskKind, train: &Dataset, n: usize) -> Predictions {
    match kind {
        TaskKind::Classification { labels } => {
            let mut counts = vec![0usize; labels.len()];
            for e in &train.examples {
                if let Target::Class(c) = e.target {
                    if c >= counts.len() {
                        counts.resize(c + 1, 0);
                    }
                    counts[c] += 1;
                }
            }
            // The first maximum: ties go to the lowest class index.
            let majority = counts
                .iter()
                .enumerate()
                .fold(
                    (0, 0),
                    |best, (c, &k)| if k > best.1 { (c, k) } else { best },
                )
                .0;
            Predictions::Class(vec![majority; n])
        }
        TaskKind::Regression => {
            let scores: Vec<f64> = train
                .examples
                .iter()
                .filter_map(|e| match e.target {
                    Target::Score(s) => Some(s as f64),
                    Target::Class(_) => None,
                })
                .collect();
            let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
            Predictions::Score(vec![mean; n])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adalora_data::{Example, MetricKind};

    fn dataset(name: &str, targets: &[Target]) -> Dataset {
        Dataset {
            name: name.into(),
            examples: targets
                .iter()
                .enumerate()
                .map(|(i, &target)| Example {
                    text_a: format!("{name} {i}"),
                    text_b: None,
                    target,
                })
                .collect(),
        }
    }

    fn classes(v: &[usize]) -> Vec<Target> {
        v.iter().map(|&c| Target::Class(c)).collect()
    }

    fn task(metric: MetricKind, train: &[Target], dev: &[Target]) -> Task {
        let kind = if metric.is_regression() {
            TaskKind::Regression
        } else {
            TaskKind::Classification {
                labels: vec!["0".into(), "1".into()],
            }
        };
        Task {
            name: "t".into(),
            kind,
            train: dataset("train", train),
            dev: vec![dataset("dev", dev), dataset("dev_other", &classes(&[0, 0]))],
            metric,
            skipped_rows: 0,
        }
    }

    fn close(a: &BTreeMap<String, f64>, b: &[(&str, f64)]) {
        let b: BTreeMap<String, f64> = b.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (k, v) in &b {
            assert!((a[k] - v).abs() < 1e-12, "{k}: {} vs {v}", a[k]);
        }
    }

    #[test]
    fn majority_class_on_the_first_dev_split() {
        // Train majority 1; dev [1, 1, 0]: accuracy 2/3, F1 of class 1 = 2·(2/3·1)/(2/3+1) = 0.8.
        let t = task(
            MetricKind::AccuracyF1,
            &classes(&[1, 0, 1, 1]),
            &classes(&[1, 1, 0]),
        );
        let acc = 2.0 / 3.0;
        close(
            &baseline_metrics(&t).unwrap(),
            &[
                ("accuracy", acc),
                ("f1", 0.8),
                ("combined_score", (acc + 0.8) / 2.0),
            ],
        );
        // Constant predictions: Matthews is 0 (sklearn), never NaN.
        let t = task(
            MetricKind::Matthews,
            &classes(&[1, 0, 1, 1]),
            &classes(&[1, 1, 0]),
        );
        close(
            &baseline_metrics(&t).unwrap(),
            &[("matthews_correlation", 0.0)],
        );
        // Train majority 0 predicts 0: accuracy 1/3, no true positive, F1 0.
        let t = task(
            MetricKind::AccuracyF1,
            &classes(&[0, 0, 1]),
            &classes(&[1, 1, 0]),
        );
        close(
            &baseline_metrics(&t).unwrap(),
            &[
                ("accuracy", 1.0 / 3.0),
                ("f1", 0.0),
                ("combined_score", 1.0 / 6.0),
            ],
        );
        // A tie goes to the lowest class.
        let t = task(
            MetricKind::Accuracy,
            &classes(&[1, 0, 0, 1]),
            &classes(&[0, 0, 0, 1]),
        );
        close(&baseline_metrics(&t).unwrap(), &[("accuracy", 0.75)]);
    }

    #[test]
    fn regression_correlations_of_a_constant_are_zero() {
        let scores = |v: &[f32]| v.iter().map(|&s| Target::Score(s)).collect::<Vec<_>>();
        let t = task(
            MetricKind::PearsonSpearman,
            &scores(&[1.0, 2.0, 4.5]),
            &scores(&[0.0, 5.0, 2.5]),
        );
        close(
            &baseline_metrics(&t).unwrap(),
            &[
                ("pearson", 0.0),
                ("spearmanr", 0.0),
                ("combined_score", 0.0),
            ],
        );
        assert_eq!(
            constant_predictions(&t.kind, &t.train, 2),
            Predictions::Score(vec![2.5, 2.5])
        );
    }
}
