//! From a run configuration to tokenized train/dev data.

use adalora_data::batch::{BatchConfig, Batcher};
use adalora_data::tokenize::{EncodedDataset, TextTokenizer};
use adalora_data::{
    load_custom, load_default_task, load_glue, parse_task_arg, resolve_glue_dir, split_train_dev,
    Dataset, GlueTask, LoadOptions, Task,
};
use anyhow::{bail, Context};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::{Protocol, RunConfig};

/// The tokenizer of a model folder (`tokenizer.json`), truncating to `max_len` tokens.
pub fn load_tokenizer(
    model_dir: &std::path::Path,
    max_len: usize,
) -> anyhow::Result<TextTokenizer> {
    Ok(TextTokenizer::from_file(
        model_dir.join("tokenizer.json"),
        max_len,
    )?)
}

/// A task with its tokenized splits (tokenized once, kept in memory).
pub struct PreparedTask {
    pub task: Task,
    pub train: EncodedDataset,
    pub dev: Vec<EncodedDataset>,
    /// The held-out `selection` split (`train.protocol = "held-out"`), carved out of the
    /// training examples: it is not in `task.train`.
    pub selection: Option<(Dataset, EncodedDataset)>,
}

impl PreparedTask {
    /// Every split an evaluation covers: the dev splits, then the selection split if any.
    pub fn eval_splits(&self) -> impl Iterator<Item = (&Dataset, &EncodedDataset)> {
        self.task
            .dev
            .iter()
            .zip(&self.dev)
            .chain(self.selection.as_ref().map(|(d, e)| (d, e)))
    }
}

/// The name of the held-out split in metrics.csv, `eval` output and the checkpoint choice.
pub const SELECTION_SPLIT: &str = "selection";

/// The selection split's seed is the run's seed XOR this ("SELECTIO" in ASCII), so it differs
/// from the seed of the `dev_ratio` split (the run's seed itself) and of the subsets.
pub const SELECTION_SEED_XOR: u64 = 0x5345_4C45_4354_494F;

/// A run's examples before tokenization: the task with its training set subsampled
/// (`max_train_examples`) and, under `held-out`, the selection split removed from it; its dev
/// splits subsampled (`max_eval_examples`).
pub struct RunExamples {
    pub task: Task,
    pub selection: Option<Dataset>,
}

/// Resolve `cfg.task`: `default`, a GLUE name, `csv:/tsv:/jsonl:PATH`, or `custom`.
pub fn load_task(cfg: &RunConfig) -> anyhow::Result<Task> {
    let opts = LoadOptions {
        skip_bad_rows: cfg.train.skip_bad_rows,
    };
    let name = cfg.task.trim();
    let task =
        if name.eq_ignore_ascii_case("default") {
            load_default_task(None, cfg.seed, cfg.train.dev_ratio)?
        } else if name.eq_ignore_ascii_case("custom") {
            let custom = cfg.custom.as_ref().context(
                "task = \"custom\" needs a [custom] table (train, text_a, label/score, …)",
            )?;
            load_custom(custom, &opts)?
        } else if name.contains(':') {
            let mut custom = parse_task_arg(name)?;
            custom.dev_ratio = cfg.train.dev_ratio;
            custom.seed = cfg.seed;
            load_custom(&custom, &opts)?
        } else {
            let glue = GlueTask::from_name(name).map_err(|_| {
                anyhow::anyhow!(
                "unknown task {name:?}: expected default, a GLUE task ({}), csv:PATH, tsv:PATH, \
                 jsonl:PATH or custom",
                GlueTask::ALL.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
            )
            })?;
            let dir = resolve_glue_dir(cfg.glue_dir.as_deref())?;
            load_glue(glue, &dir, &opts)?
        };
    if task.skipped_rows > 0 {
        eprintln!(
            "warning: skipped {} malformed rows (--skip-bad-rows)",
            task.skipped_rows
        );
    }
    if task.train.is_empty() {
        bail!("task {name}: the training split is empty");
    }
    Ok(task)
}

/// A seeded random subset of `n` examples, kept in their original order. Files are often
/// sorted by label, so "the first n" would be a one-class subset.
fn subsample(examples: &mut Vec<adalora_data::Example>, n: usize, seed: u64) {
    if examples.len() <= n {
        return;
    }
    let mut idx: Vec<usize> = (0..examples.len()).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut keep = vec![false; examples.len()];
    for &i in &idx[..n] {
        keep[i] = true;
    }
    let mut k = keep.into_iter();
    examples.retain(|_| k.next().unwrap_or(false));
}

/// The examples a run trains and evaluates on: [`load_task`], then [`select_examples`]. The
/// trainer and [`crate::baseline::baseline_for_config`] both come through here.
pub fn load_run_examples(cfg: &RunConfig) -> anyhow::Result<RunExamples> {
    select_examples(load_task(cfg)?, cfg)
}

/// Subset a loaded task as a run does: a seeded random `max_train_examples` subset of the
/// training set (seed = the run's seed) and `max_eval_examples` of every dev split (seed + 1);
/// then, under `protocol = "held-out"`, a seeded `selection_ratio` split of the subsampled
/// training set (stratified by class for classification; seed = the run's seed XOR
/// [`SELECTION_SEED_XOR`]) becomes the `selection` split and leaves the training set.
pub fn select_examples(mut task: Task, cfg: &RunConfig) -> anyhow::Result<RunExamples> {
    if let Some(n) = cfg.train.max_train_examples {
        subsample(&mut task.train.examples, n, cfg.seed);
    }
    if let Some(n) = cfg.train.max_eval_examples {
        for d in &mut task.dev {
            subsample(&mut d.examples, n, cfg.seed.wrapping_add(1));
        }
    }
    let selection = match cfg.train.protocol {
        Protocol::BestDev => None,
        Protocol::HeldOut => {
            if task.dev.iter().any(|d| d.name == SELECTION_SPLIT) {
                bail!(
                    "task {}: a dev split is named {SELECTION_SPLIT:?}, the name of the held-out \
                     split of protocol = \"held-out\"",
                    task.name
                );
            }
            let ratio = cfg.train.selection_ratio;
            let n = task.train.examples.len();
            let stratify = !task.kind.is_regression();
            let (train, selection) = split_train_dev(
                std::mem::take(&mut task.train.examples),
                ratio,
                cfg.seed ^ SELECTION_SEED_XOR,
                stratify,
            )
            .with_context(|| {
                format!(
                    "train.selection_ratio = {ratio}: holding out the selection split of {n} \
                     training examples"
                )
            })?;
            task.train.examples = train;
            Some(Dataset {
                name: SELECTION_SPLIT.into(),
                examples: selection,
            })
        }
    };
    Ok(RunExamples { task, selection })
}

/// Load, subset ([`select_examples`]) and tokenize.
pub fn prepare_task(cfg: &RunConfig, tokenizer: &TextTokenizer) -> anyhow::Result<PreparedTask> {
    let RunExamples { task, selection } = load_run_examples(cfg)?;
    let train = tokenizer.encode_dataset(&task.train)?;
    let dev = task
        .dev
        .iter()
        .map(|d| tokenizer.encode_dataset(d))
        .collect::<Result<Vec<_>, _>>()?;
    let selection = match selection {
        Some(d) => {
            let encoded = tokenizer.encode_dataset(&d)?;
            Some((d, encoded))
        }
        None => None,
    };
    Ok(PreparedTask {
        task,
        train,
        dev,
        selection,
    })
}

/// The padded sizes that a run's time depends on: batches are padded to their longest
/// sequence, so tokens per batch follow the data, not `max_seq_len`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchTokens {
    pub batches_per_epoch: usize,
    /// Mean padded tokens (rows × longest sequence) of a training batch, over epoch 0's order.
    pub train_tokens_per_batch: f64,
    /// Padded tokens of one evaluation pass over every evaluated split (dev and selection).
    pub eval_tokens: f64,
}

/// [`BatchTokens`] of `cfg`'s run: its task loaded, subset and tokenized with its model's
/// tokenizer exactly as the run will be, and batched as the trainer batches.
pub fn batch_tokens(cfg: &RunConfig) -> anyhow::Result<BatchTokens> {
    let model_dir = adalora_model::loader::resolve_model_dir(cfg.model.as_deref())?;
    let tokenizer = load_tokenizer(&model_dir, cfg.train.max_seq_len)?;
    let prepared = prepare_task(cfg, &tokenizer)?;
    let batcher = Batcher::new(
        &prepared.train,
        tokenizer.pad_id(),
        BatchConfig {
            batch_size: cfg.train.batch_size,
            bucket_batches: cfg.train.bucket_batches,
            seed: cfg.seed,
        },
    )?;
    let padded = |data: &EncodedDataset, batch: &[usize]| {
        let longest = batch
            .iter()
            .map(|&i| data.items[i].len())
            .max()
            .unwrap_or(0);
        (batch.len() * longest) as f64
    };
    let order = batcher.epoch_order(0);
    let train_tokens: f64 = order.iter().map(|b| padded(&prepared.train, b)).sum();
    let eval_size = cfg.train.eval_batch_size.max(1);
    let eval_tokens = prepared
        .eval_splits()
        .map(|(_, data)| {
            let indices: Vec<usize> = (0..data.len()).collect();
            indices
                .chunks(eval_size)
                .map(|b| padded(data, b))
                .sum::<f64>()
        })
        .sum();
    Ok(BatchTokens {
        batches_per_epoch: order.len(),
        train_tokens_per_batch: train_tokens / order.len().max(1) as f64,
        eval_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use adalora_data::{Example, MetricKind, Target, TaskKind};
    use std::collections::BTreeSet;

    /// 100 training examples, 70 of class 0 and 30 of class 1 (sorted by class, as files often
    /// are); 10 dev examples.
    fn task() -> Task {
        let ex = |i: usize, c: usize| Example {
            text_a: format!("sentence {i}"),
            text_b: None,
            target: Target::Class(c),
        };
        Task {
            name: "t".into(),
            kind: TaskKind::Classification {
                labels: vec!["0".into(), "1".into()],
            },
            train: Dataset {
                name: "train".into(),
                examples: (0..100).map(|i| ex(i, usize::from(i >= 70))).collect(),
            },
            dev: vec![Dataset {
                name: "dev".into(),
                examples: (100..110).map(|i| ex(i, i % 2)).collect(),
            }],
            metric: MetricKind::AccuracyF1,
            skipped_rows: 0,
        }
    }

    fn held_out(seed: u64, ratio: f64, max_train: Option<usize>) -> RunConfig {
        let mut cfg = RunConfig {
            seed,
            ..RunConfig::default()
        };
        cfg.train.protocol = Protocol::HeldOut;
        cfg.train.selection_ratio = ratio;
        cfg.train.max_train_examples = max_train;
        cfg
    }

    fn texts(examples: &[Example]) -> BTreeSet<String> {
        examples.iter().map(|e| e.text_a.clone()).collect()
    }

    fn class_counts(examples: &[Example]) -> [usize; 2] {
        let mut n = [0; 2];
        for e in examples {
            if let Target::Class(c) = e.target {
                n[c] += 1;
            }
        }
        n
    }

    #[test]
    fn best_dev_holds_nothing_out() {
        let run = select_examples(task(), &RunConfig::default()).unwrap();
        assert!(run.selection.is_none());
        assert_eq!(run.task, task());
    }

    #[test]
    fn the_selection_split_is_disjoint_stratified_and_seeded() {
        let run = select_examples(task(), &held_out(7, 0.2, None)).unwrap();
        let sel = run.selection.as_ref().unwrap();
        assert_eq!(sel.name, SELECTION_SPLIT);
        // Stratified: 20% of each class (14 of 70, 6 of 30).
        assert_eq!(class_counts(&sel.examples), [14, 6]);
        assert_eq!(class_counts(&run.task.train.examples), [56, 24]);
        // Disjoint from the training examples, and together they are the training set.
        let (train, held) = (texts(&run.task.train.examples), texts(&sel.examples));
        assert!(train.is_disjoint(&held));
        assert_eq!(
            train.union(&held).cloned().collect::<BTreeSet<_>>(),
            texts(&task().train.examples)
        );
        // Dev untouched.
        assert_eq!(run.task.dev, task().dev);
        // Deterministic for a seed, another for another seed.
        let again = select_examples(task(), &held_out(7, 0.2, None)).unwrap();
        assert_eq!(again.selection.as_ref(), Some(sel));
        assert_eq!(again.task, run.task);
        let other = select_examples(task(), &held_out(8, 0.2, None)).unwrap();
        assert_ne!(texts(&other.selection.unwrap().examples), held);
        // Not the split the run's own seed gives (that is the dev_ratio split's seed).
        let (_, same_seed) = split_train_dev(task().train.examples, 0.2, 7, true).unwrap();
        assert_ne!(texts(&same_seed), held);
    }

    #[test]
    fn the_selection_split_comes_out_of_the_subsampled_training_set() {
        let run = select_examples(task(), &held_out(3, 0.25, Some(40))).unwrap();
        let sel = run.selection.unwrap();
        let subset = {
            let mut t = task();
            subsample(&mut t.train.examples, 40, 3);
            texts(&t.train.examples)
        };
        let (train, held) = (texts(&run.task.train.examples), texts(&sel.examples));
        assert_eq!(train.len() + held.len(), 40);
        assert!(train.is_disjoint(&held));
        assert!(held.is_subset(&subset) && train.is_subset(&subset));
        // The best-dev run of the same settings trains on the whole subset.
        let mut best_dev = held_out(3, 0.25, Some(40));
        best_dev.train.protocol = Protocol::BestDev;
        let all = select_examples(task(), &best_dev).unwrap();
        assert_eq!(texts(&all.task.train.examples), subset);
    }

    #[test]
    fn an_impossible_selection_split_names_the_setting() {
        let mut t = task();
        t.train.examples.truncate(1);
        let msg = format!(
            "{:#}",
            select_examples(t, &held_out(1, 0.5, None))
                .err()
                .expect("one example cannot be split")
        );
        assert!(msg.contains("train.selection_ratio = 0.5"), "{msg}");
    }
}
