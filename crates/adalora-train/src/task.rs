//! From a run configuration to tokenized train/dev data.

use adalora_data::tokenize::{EncodedDataset, TextTokenizer};
use adalora_data::{
    load_custom, load_default_task, load_glue, parse_task_arg, resolve_glue_dir, GlueTask,
    LoadOptions, Task,
};
use anyhow::{bail, Context};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::RunConfig;

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

/// Load, subset (`max_train_examples` / `max_eval_examples`: a seeded random subset) and
/// tokenize.
pub fn prepare_task(cfg: &RunConfig, tokenizer: &TextTokenizer) -> anyhow::Result<PreparedTask> {
    let mut task = load_task(cfg)?;
    if let Some(n) = cfg.train.max_train_examples {
        subsample(&mut task.train.examples, n, cfg.seed);
    }
    if let Some(n) = cfg.train.max_eval_examples {
        for d in &mut task.dev {
            subsample(&mut d.examples, n, cfg.seed.wrapping_add(1));
        }
    }
    let train = tokenizer.encode_dataset(&task.train)?;
    let dev = task
        .dev
        .iter()
        .map(|d| tokenizer.encode_dataset(d))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PreparedTask { task, train, dev })
}
