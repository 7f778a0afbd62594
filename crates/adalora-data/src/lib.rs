//! Data for AdaLoRA fine-tuning experiments: GLUE tasks, bring-your-own tasks and an embedded
//! default task, their official metrics, tokenization and host-side batching.
//!
//! This crate is backend-free: a [`batch::Batch`] holds plain `Vec<i64>`/`Vec<f32>` buffers
//! (row-major `[batch, seq_len]`) that the model crate turns into tensors.
//!
//! * [`glue`]: the nine GLUE tasks from the official TSV layout ([`load_glue`]).
//! * [`custom`]: CSV/TSV/JSONL tasks described by a [`CustomTaskConfig`] ([`load_custom`],
//!   [`parse_task_arg`]).
//! * [`default_task`]: Rotten Tomatoes sentences from the fetched asset cache
//!   ([`load_default_task`]).
//! * [`metrics`]: accuracy, F1, Matthews correlation, Pearson, Spearman and per-task
//!   evaluation ([`evaluate`]) with scikit-learn/scipy conventions.
//! * [`tokenize`]: [`tokenize::TextTokenizer`], BERT-style single/pair encoding with
//!   longest-first truncation.
//! * [`batch`]: [`batch::Batcher`], dynamic padding, length bucketing, seeded per-epoch
//!   shuffling and resumable epochs.
//!
//! Malformed input is always an error naming file, line and field ([`DataError::BadRow`]),
//! unless [`LoadOptions::skip_bad_rows`] is set, in which case such rows are skipped and counted
//! in [`Task::skipped_rows`].

pub mod batch;
pub mod custom;
pub mod default_task;
mod error;
pub mod glue;
pub mod metrics;
mod split;
mod table;
pub mod tokenize;

pub use custom::{load_custom, parse_task_arg, CustomTaskConfig, FileFormat};
pub use default_task::{
    default_tokenizer_path, load_default_task, load_movie_reviews, resolve_cache_dir,
};
pub use error::DataError;
pub use glue::{load_glue, load_glue_split, resolve_glue_dir, GlueTask};
pub use metrics::{evaluate, MetricKind, Metrics, Predictions};
pub use split::split_train_dev;

/// The target of one example: a class index into [`TaskKind::Classification::labels`], or a
/// regression score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Class(usize),
    Score(f32),
}

/// One example: a single sentence (`text_b == None`) or a sentence pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text_a: String,
    pub text_b: Option<String>,
    pub target: Target,
}

/// A named split (`train`, `dev`, `dev_matched`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub name: String,
    pub examples: Vec<Example>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Whether the examples are sentence pairs (judged by the first example).
    pub fn is_pair(&self) -> bool {
        self.examples.first().is_some_and(|e| e.text_b.is_some())
    }

    /// The gold targets in dataset order, in the form [`evaluate`] takes.
    /// Classification datasets give [`Predictions::Class`], regression ones [`Predictions::Score`].
    pub fn gold(&self) -> Predictions {
        match self.examples.first().map(|e| e.target) {
            Some(Target::Score(_)) => Predictions::Score(
                self.examples
                    .iter()
                    .map(|e| match e.target {
                        Target::Score(s) => s as f64,
                        Target::Class(c) => c as f64,
                    })
                    .collect(),
            ),
            _ => Predictions::Class(
                self.examples
                    .iter()
                    .map(|e| match e.target {
                        Target::Class(c) => c,
                        Target::Score(s) => s as usize,
                    })
                    .collect(),
            ),
        }
    }
}

/// Classification with an ordered label set (class index = position), or regression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskKind {
    Classification { labels: Vec<String> },
    Regression,
}

impl TaskKind {
    /// Number of model outputs: the number of labels, or 1 for regression.
    pub fn num_outputs(&self) -> usize {
        match self {
            TaskKind::Classification { labels } => labels.len(),
            TaskKind::Regression => 1,
        }
    }

    pub fn is_regression(&self) -> bool {
        matches!(self, TaskKind::Regression)
    }

    /// The label list (empty for regression).
    pub fn labels(&self) -> &[String] {
        match self {
            TaskKind::Classification { labels } => labels,
            TaskKind::Regression => &[],
        }
    }
}

/// A loaded task: training split, one or more dev splits (MNLI has two; the first one is used
/// for best-checkpoint selection), its metric and how many malformed rows were skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub name: String,
    pub kind: TaskKind,
    pub train: Dataset,
    pub dev: Vec<Dataset>,
    pub metric: MetricKind,
    /// Rows skipped because they were malformed (only non-zero with
    /// [`LoadOptions::skip_bad_rows`]); the caller should log a warning when it is non-zero.
    pub skipped_rows: usize,
}

/// Options shared by all loaders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct LoadOptions {
    /// Skip (and count) malformed rows instead of failing on the first one. Structural
    /// problems (missing file, empty file, missing header column) are always errors.
    #[serde(default)]
    pub skip_bad_rows: bool,
}
