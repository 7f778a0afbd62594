//! Bring-your-own tasks: CSV, TSV or JSON-lines files with one or two text columns and a label
//! (classification) or score (regression) column.
//!
//! * **CSV** is read with standard quoting (RFC 4180, as written by pandas/Excel);
//! * **TSV** is read with quoting disabled (like GLUE: `"` is an ordinary character);
//! * **JSONL** is one JSON object per line; text fields must be strings, labels may be strings,
//!   numbers or booleans (compared by their JSON text, e.g. `1` → `"1"`), scores numbers or
//!   numeric strings. Blank lines are ignored.
//!
//! CSV/TSV files need a header line naming the columns. Labels are compared after trimming
//! surrounding whitespace.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::split::split_train_dev;
use crate::table::{finish_rows, read_delimited, read_jsonl, Columns, RowResult};
use crate::{DataError, Dataset, LoadOptions, MetricKind, Task, TaskKind};

/// Default text column of the compact CLI form ([`parse_task_arg`]) and of [`CustomTaskConfig`].
pub const DEFAULT_TEXT_COLUMN: &str = "text";
/// Default label column of the compact CLI form and of [`CustomTaskConfig`].
pub const DEFAULT_LABEL_COLUMN: &str = "label";
/// Default dev fraction when no dev file is given.
pub const DEFAULT_DEV_RATIO: f64 = 0.1;

/// File format of a custom task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    Tsv,
    Jsonl,
}

impl FileFormat {
    /// Guess from the extension: `.csv`; `.tsv`/`.tab`; `.jsonl`/`.ndjson` (case-insensitive).
    pub fn from_path(path: &Path) -> Result<FileFormat, DataError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("csv") => Ok(FileFormat::Csv),
            Some("tsv") | Some("tab") => Ok(FileFormat::Tsv),
            Some("jsonl") | Some("ndjson") => Ok(FileFormat::Jsonl),
            _ => Err(DataError::Config(format!(
                "cannot tell the format of {} from its extension; set `format` to csv, tsv or jsonl",
                path.display()
            ))),
        }
    }
}

/// A bring-your-own task, deserializable from TOML/JSON, e.g.
///
/// ```toml
/// train = "data/reviews.csv"
/// text_a = "review"
/// label = "sentiment"
/// dev_ratio = 0.1
/// seed = 42
/// ```
///
/// Exactly one of `label` (classification) and `score` (regression) may be set; with neither,
/// the label column is `"label"`. The label list is `labels` if given (its order defines class
/// indices), otherwise the sorted unique labels of the training file (numerically sorted when all
/// are integers, else lexicographically). Without `dev`, a seeded `dev_ratio` split of the
/// training file is used (stratified by label for classification).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomTaskConfig {
    /// Task name (defaults to the training file's stem).
    #[serde(default)]
    pub name: Option<String>,
    pub train: PathBuf,
    #[serde(default)]
    pub dev: Option<PathBuf>,
    /// Defaults to the training file's extension.
    #[serde(default)]
    pub format: Option<FileFormat>,
    #[serde(default = "default_text")]
    pub text_a: String,
    #[serde(default)]
    pub text_b: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub score: Option<String>,
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    #[serde(default = "default_dev_ratio")]
    pub dev_ratio: f64,
    #[serde(default)]
    pub seed: u64,
}

fn default_text() -> String {
    DEFAULT_TEXT_COLUMN.to_string()
}

fn default_dev_ratio() -> f64 {
    DEFAULT_DEV_RATIO
}

impl CustomTaskConfig {
    /// A classification config with default columns (`text`, `label`), dev ratio 0.1, seed 0.
    pub fn new(train: impl Into<PathBuf>) -> Self {
        CustomTaskConfig {
            name: None,
            train: train.into(),
            dev: None,
            format: None,
            text_a: default_text(),
            text_b: None,
            label: None,
            score: None,
            labels: None,
            dev_ratio: DEFAULT_DEV_RATIO,
            seed: 0,
        }
    }

    /// The column holding the target (label or score).
    pub fn target_column(&self) -> &str {
        self.score
            .as_deref()
            .or(self.label.as_deref())
            .unwrap_or(DEFAULT_LABEL_COLUMN)
    }

    fn format_for(&self, path: &Path) -> Result<FileFormat, DataError> {
        match self.format {
            Some(f) => Ok(f),
            None => FileFormat::from_path(path),
        }
    }
}

/// Parse the compact CLI form `csv:PATH`, `tsv:PATH` or `jsonl:PATH` into a config with the
/// default columns `text` (sentence) and `label` (classification, labels inferred), dev ratio
/// 0.1 and seed 0.
pub fn parse_task_arg(arg: &str) -> Result<CustomTaskConfig, DataError> {
    let (prefix, path) = arg.split_once(':').ok_or_else(|| {
        DataError::Config(format!(
            "task {arg:?}: expected csv:PATH, tsv:PATH or jsonl:PATH"
        ))
    })?;
    let format = match prefix.to_ascii_lowercase().as_str() {
        "csv" => FileFormat::Csv,
        "tsv" => FileFormat::Tsv,
        "jsonl" => FileFormat::Jsonl,
        _ => {
            return Err(DataError::Config(format!(
                "task {arg:?}: unknown format {prefix:?}; expected csv, tsv or jsonl"
            )))
        }
    };
    if path.is_empty() {
        return Err(DataError::Config(format!("task {arg:?}: empty path")));
    }
    let mut cfg = CustomTaskConfig::new(path);
    cfg.format = Some(format);
    Ok(cfg)
}

fn read_rows(cfg: &CustomTaskConfig, path: &Path) -> Result<Vec<RowResult>, DataError> {
    let target = cfg.target_column();
    match cfg.format_for(path)? {
        FileFormat::Jsonl => read_jsonl(path, &cfg.text_a, cfg.text_b.as_deref(), target),
        format => {
            let (delim, quoting) = match format {
                FileFormat::Csv => (b',', true),
                _ => (b'\t', false),
            };
            let columns = Columns::Named {
                text_a: &cfg.text_a,
                text_b: cfg.text_b.as_deref(),
                target,
            };
            read_delimited(path, delim, quoting, &columns)
        }
    }
}

/// Sorted unique non-empty labels: numerically when all are integers, else lexicographically.
fn infer_labels(rows: &[RowResult]) -> Vec<String> {
    let mut labels: Vec<String> = rows
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.target.trim())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    labels.sort();
    labels.dedup();
    if labels.iter().all(|l| l.parse::<i64>().is_ok()) {
        labels.sort_by_key(|l| l.parse::<i64>().unwrap_or(0));
    }
    labels
}

/// Load a bring-your-own task.
pub fn load_custom(cfg: &CustomTaskConfig, opts: &LoadOptions) -> Result<Task, DataError> {
    if cfg.label.is_some() && cfg.score.is_some() {
        return Err(DataError::Config(
            "custom task: set either `label` (classification) or `score` (regression), not both"
                .into(),
        ));
    }
    if cfg.score.is_some() && cfg.labels.is_some() {
        return Err(DataError::Config(
            "custom task: `labels` only applies to classification (`label`), not `score`".into(),
        ));
    }
    let target = cfg.target_column().to_string();
    let mut train_rows = read_rows(cfg, &cfg.train)?;
    // Report malformed rows before anything derived from the rows (the inferred label set).
    let bad = train_rows.iter().filter(|r| r.is_err()).count();
    if !opts.skip_bad_rows {
        let first_bad = train_rows.iter().position(|r| r.is_err());
        if let Some(Err(e)) = first_bad.map(|pos| train_rows.swap_remove(pos)) {
            return Err(e);
        }
    }
    if bad == train_rows.len() {
        return Err(DataError::EmptyFile {
            path: cfg.train.clone(),
            what: format!("no valid data rows ({bad} malformed rows skipped)"),
        });
    }
    let kind = if cfg.score.is_some() {
        TaskKind::Regression
    } else {
        let labels = match &cfg.labels {
            Some(l) => {
                let mut sorted = l.clone();
                sorted.sort();
                sorted.dedup();
                if l.is_empty() || sorted.len() != l.len() {
                    return Err(DataError::Config(format!(
                        "custom task: `labels` must be a non-empty list of distinct labels, got {l:?}"
                    )));
                }
                l.clone()
            }
            None => infer_labels(&train_rows),
        };
        if labels.len() < 2 {
            return Err(DataError::Config(format!(
                "custom task: classification needs at least 2 labels, got {labels:?} (column {target:?} of {})",
                cfg.train.display()
            )));
        }
        TaskKind::Classification { labels }
    };
    let metric = match &kind {
        TaskKind::Regression => MetricKind::PearsonSpearman,
        TaskKind::Classification { labels } if labels.len() == 2 => MetricKind::AccuracyF1,
        TaskKind::Classification { .. } => MetricKind::Accuracy,
    };
    let (train_examples, mut skipped) = finish_rows(&cfg.train, train_rows, &target, &kind, opts)?;
    let (train, dev) = match &cfg.dev {
        Some(dev_path) => {
            let rows = read_rows(cfg, dev_path)?;
            let (dev, s) = finish_rows(dev_path, rows, &target, &kind, opts)?;
            skipped += s;
            (train_examples, dev)
        }
        None => split_train_dev(
            train_examples,
            cfg.dev_ratio,
            cfg.seed,
            !kind.is_regression(),
        )
        .map_err(|e| match e {
            // Too few rows to split: name the file they came from.
            DataError::Config(msg) => DataError::Config(format!("{}: {msg}", cfg.train.display())),
            other => other,
        })?,
    };
    let name = cfg.name.clone().unwrap_or_else(|| {
        cfg.train
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custom".into())
    });
    Ok(Task {
        name,
        kind,
        train: Dataset {
            name: "train".into(),
            examples: train,
        },
        dev: vec![Dataset {
            name: "dev".into(),
            examples: dev,
        }],
        metric,
        skipped_rows: skipped,
    })
}
