//! The GLUE benchmark tasks, read from the official TSV layout `<dir>/<TASK>/{train,dev}.tsv`
//! (MNLI: `dev_matched.tsv` and `dev_mismatched.tsv`).
//!
//! Files are read as tab-separated with quoting disabled (fields may start with or contain `"`).
//! Label lists are fixed and ordered as in HF `run_glue` / the GLUE processors, so class indices
//! agree with published checkpoints:
//!
//! | task | columns read | labels | metric (main) |
//! | --- | --- | --- | --- |
//! | CoLA | no header; label col 1, sentence col 3 | `0`,`1` | Matthews (`matthews_correlation`) |
//! | SST-2 | `sentence`, `label` | `0`,`1` | accuracy |
//! | MRPC | `#1 String`, `#2 String`, `Quality` (header may start with a BOM) | `0`,`1` | accuracy, F1 (accuracy) |
//! | STS-B | `sentence1`, `sentence2`, `score` | regression | Pearson, Spearman (their mean, `combined_score`) |
//! | QQP | `question1`, `question2`, `is_duplicate` | `0`,`1` | accuracy, F1 (accuracy) |
//! | MNLI | `sentence1`, `sentence2`, `gold_label` | `contradiction`,`entailment`,`neutral` | accuracy |
//! | QNLI | `question`, `sentence`, `label` | `entailment`,`not_entailment` | accuracy |
//! | RTE | `sentence1`, `sentence2`, `label` | `entailment`,`not_entailment` | accuracy |
//! | WNLI | `sentence1`, `sentence2`, `label` | `0`,`1` | accuracy |
//!
//! Main metrics follow the AdaLoRA paper (Table 1): MCC for CoLA, the average of Pearson and
//! Spearman for STS-B, accuracy for all others (MRPC and QQP included).

use std::path::{Path, PathBuf};

use crate::table::{finish_rows, read_delimited, Columns};
use crate::{DataError, Dataset, LoadOptions, MetricKind, Task, TaskKind};

/// Environment variable naming the GLUE data folder.
pub const GLUE_DIR_ENV: &str = "GLUE_DIR";

/// One of the nine GLUE tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GlueTask {
    Cola,
    Sst2,
    Mrpc,
    Stsb,
    Qqp,
    Mnli,
    Qnli,
    Rte,
    Wnli,
}

const CONTRADICTION_ENTAILMENT_NEUTRAL: [&str; 3] = ["contradiction", "entailment", "neutral"];
const ENTAILMENT_NOT: [&str; 2] = ["entailment", "not_entailment"];
const BINARY: [&str; 2] = ["0", "1"];
const COLA_COLUMNS: [&str; 4] = ["source", "label", "author_mark", "sentence"];

impl GlueTask {
    /// All tasks, in the order of the GLUE paper.
    pub const ALL: [GlueTask; 9] = [
        GlueTask::Cola,
        GlueTask::Sst2,
        GlueTask::Mrpc,
        GlueTask::Stsb,
        GlueTask::Qqp,
        GlueTask::Mnli,
        GlueTask::Qnli,
        GlueTask::Rte,
        GlueTask::Wnli,
    ];

    /// Parse a task name, case-insensitively and ignoring `-`/`_`: `"SST-2"`, `"sst2"`,
    /// `"sst_2"`, `"STS-B"`, `"stsb"`, `"mnli"` ...
    pub fn from_name(name: &str) -> Result<GlueTask, DataError> {
        let norm: String = name
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .flat_map(char::to_lowercase)
            .collect();
        Ok(match norm.as_str() {
            "cola" => GlueTask::Cola,
            "sst2" | "sst" => GlueTask::Sst2,
            "mrpc" => GlueTask::Mrpc,
            "stsb" | "sts" => GlueTask::Stsb,
            "qqp" => GlueTask::Qqp,
            "mnli" => GlueTask::Mnli,
            "qnli" => GlueTask::Qnli,
            "rte" => GlueTask::Rte,
            "wnli" => GlueTask::Wnli,
            _ => return Err(DataError::UnknownTask(name.to_string())),
        })
    }

    /// The official name, which is also the folder name (`"SST-2"`, `"STS-B"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GlueTask::Cola => "CoLA",
            GlueTask::Sst2 => "SST-2",
            GlueTask::Mrpc => "MRPC",
            GlueTask::Stsb => "STS-B",
            GlueTask::Qqp => "QQP",
            GlueTask::Mnli => "MNLI",
            GlueTask::Qnli => "QNLI",
            GlueTask::Rte => "RTE",
            GlueTask::Wnli => "WNLI",
        }
    }

    /// Classification with the fixed, HF-ordered label list, or regression (STS-B).
    pub fn kind(self) -> TaskKind {
        let labels: &[&str] = match self {
            GlueTask::Stsb => return TaskKind::Regression,
            GlueTask::Mnli => &CONTRADICTION_ENTAILMENT_NEUTRAL,
            GlueTask::Qnli | GlueTask::Rte => &ENTAILMENT_NOT,
            GlueTask::Cola | GlueTask::Sst2 | GlueTask::Mrpc | GlueTask::Qqp | GlueTask::Wnli => {
                &BINARY
            }
        };
        TaskKind::Classification {
            labels: labels.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The task's official metric.
    pub fn metric(self) -> MetricKind {
        match self {
            GlueTask::Cola => MetricKind::Matthews,
            GlueTask::Stsb => MetricKind::PearsonSpearman,
            GlueTask::Mrpc | GlueTask::Qqp => MetricKind::AccuracyF1,
            GlueTask::Sst2 | GlueTask::Mnli | GlueTask::Qnli | GlueTask::Rte | GlueTask::Wnli => {
                MetricKind::Accuracy
            }
        }
    }

    /// Whether examples are sentence pairs.
    pub fn is_pair(self) -> bool {
        !matches!(self, GlueTask::Cola | GlueTask::Sst2)
    }

    /// The dev split names (file stems): `["dev"]`, or for MNLI
    /// `["dev_matched", "dev_mismatched"]`.
    pub fn dev_splits(self) -> &'static [&'static str] {
        match self {
            GlueTask::Mnli => &["dev_matched", "dev_mismatched"],
            _ => &["dev"],
        }
    }

    /// The path of a split file: `<glue_dir>/<TASK>/<split>.tsv`.
    pub fn split_path(self, glue_dir: &Path, split: &str) -> PathBuf {
        glue_dir.join(self.name()).join(format!("{split}.tsv"))
    }

    fn columns(self) -> Columns<'static> {
        let named = |a, b, t| Columns::Named {
            text_a: a,
            text_b: b,
            target: t,
        };
        match self {
            GlueTask::Cola => Columns::Fixed {
                names: &COLA_COLUMNS,
                text_a: 3,
                text_b: None,
                target: 1,
            },
            GlueTask::Sst2 => named("sentence", None, "label"),
            GlueTask::Mrpc => named("#1 String", Some("#2 String"), "Quality"),
            GlueTask::Stsb => named("sentence1", Some("sentence2"), "score"),
            GlueTask::Qqp => named("question1", Some("question2"), "is_duplicate"),
            GlueTask::Mnli => named("sentence1", Some("sentence2"), "gold_label"),
            GlueTask::Qnli => named("question", Some("sentence"), "label"),
            GlueTask::Rte | GlueTask::Wnli => named("sentence1", Some("sentence2"), "label"),
        }
    }

    fn target_column(self) -> &'static str {
        match self.columns() {
            Columns::Fixed { .. } => "label",
            Columns::Named { target, .. } => target,
        }
    }
}

impl std::fmt::Display for GlueTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for GlueTask {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GlueTask::from_name(s)
    }
}

/// Resolve the GLUE data folder: `explicit` if given, else the `GLUE_DIR` environment variable.
/// Errors when neither is set, or when the folder does not exist.
pub fn resolve_glue_dir(explicit: Option<&Path>) -> Result<PathBuf, DataError> {
    let (dir, origin) = match explicit {
        Some(p) => (p.to_path_buf(), "given path"),
        None => match std::env::var_os(GLUE_DIR_ENV) {
            Some(v) if !v.is_empty() => (PathBuf::from(v), "GLUE_DIR"),
            _ => {
                return Err(DataError::Config(
                    "no GLUE data folder: pass its path explicitly or set the GLUE_DIR \
                     environment variable (e.g. GLUE_DIR=../shared/glue)"
                        .into(),
                ))
            }
        },
    };
    if !dir.is_dir() {
        return Err(DataError::MissingFile {
            what: format!("GLUE data folder ({origin})"),
            path: dir,
            hint: Some("expected <dir>/<TASK>/{train,dev}.tsv".into()),
        });
    }
    Ok(dir)
}

/// Load one split (`"train"`, `"dev"`, `"dev_matched"`, ...) of a GLUE task.
/// Returns the dataset (named after the split) and the number of skipped malformed rows.
pub fn load_glue_split(
    task: GlueTask,
    glue_dir: &Path,
    split: &str,
    opts: &LoadOptions,
) -> Result<(Dataset, usize), DataError> {
    let path = task.split_path(glue_dir, split);
    if !path.is_file() {
        return Err(DataError::MissingFile {
            what: format!("GLUE {task} {split} split"),
            path,
            hint: None,
        });
    }
    let rows = read_delimited(&path, b'\t', false, &task.columns())?;
    let (examples, skipped) = finish_rows(&path, rows, task.target_column(), &task.kind(), opts)?;
    Ok((
        Dataset {
            name: split.to_string(),
            examples,
        },
        skipped,
    ))
}

/// Load a GLUE task: its train split and all its dev splits. A missing split file is an error
/// naming the path.
pub fn load_glue(task: GlueTask, glue_dir: &Path, opts: &LoadOptions) -> Result<Task, DataError> {
    let (train, mut skipped) = load_glue_split(task, glue_dir, "train", opts)?;
    let mut dev = Vec::new();
    for split in task.dev_splits() {
        let (ds, s) = load_glue_split(task, glue_dir, split, opts)?;
        skipped += s;
        dev.push(ds);
    }
    Ok(Task {
        name: task.name().to_string(),
        kind: task.kind(),
        train,
        dev,
        metric: task.metric(),
        skipped_rows: skipped,
    })
}
