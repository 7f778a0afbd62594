//! Reading finished run folders: summary, resolved configuration, rank pattern and metrics log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adalora_train::io::{read_json, RunDir};
use adalora_train::provenance::Provenance;
use adalora_train::{baseline_for_config, Method, Protocol, RunConfig};
use anyhow::Context;
use serde::Deserialize;

/// Module rows in the paper's order (Figure 3), with their paper names.
pub const MODULE_ORDER: [(&str, &str); 7] = [
    ("query", "W_q"),
    ("key", "W_k"),
    ("value", "W_v"),
    ("attention-output", "W_o"),
    ("intermediate", "W_f1"),
    ("output", "W_f2"),
    ("pooler", "pooler"),
];

/// The paper name of a module (`W_q` for `query`).
pub fn paper_name(module: &str) -> &str {
    MODULE_ORDER
        .iter()
        .find(|(k, _)| *k == module)
        .map_or(module, |(_, p)| p)
}

/// Final rank of each adapted matrix (`rank_pattern.json`).
#[derive(Clone, Debug, Default)]
pub struct RankPattern {
    pub step: usize,
    pub budget: usize,
    pub total_rank: usize,
    /// (layer, module key, rank).
    pub modules: Vec<(usize, String, usize)>,
}

impl RankPattern {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let doc: serde_json::Value = read_json(path)?;
        let bad = |what: &str| anyhow::anyhow!("{}: {what}", path.display());
        let modules = doc["modules"]
            .as_array()
            .ok_or_else(|| bad("no `modules` list"))?
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let field = |k: &str| {
                    m[k].as_u64()
                        .ok_or_else(|| bad(&format!("modules[{i}].{k} is not a count")))
                };
                Ok((
                    field("layer")? as usize,
                    m["module"]
                        .as_str()
                        .ok_or_else(|| bad(&format!("modules[{i}].module is not a string")))?
                        .to_string(),
                    field("rank")? as usize,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(RankPattern {
            step: doc["step"].as_u64().unwrap_or(0) as usize,
            budget: doc["budget"].as_u64().unwrap_or(0) as usize,
            total_rank: doc["total_rank"].as_u64().unwrap_or(0) as usize,
            modules,
        })
    }

    pub fn layers(&self) -> usize {
        self.modules.iter().map(|m| m.0 + 1).max().unwrap_or(0)
    }
}

/// A grid of values: rows = module types in the paper's order, columns = layers.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerGrid {
    pub rows: Vec<String>,
    pub values: Vec<Vec<Option<f64>>>,
}

impl LayerGrid {
    /// The mean over `patterns` of each matrix's final rank.
    pub fn mean_of(patterns: &[&RankPattern]) -> Self {
        let layers = patterns.iter().map(|p| p.layers()).max().unwrap_or(0);
        let keys: Vec<&str> = MODULE_ORDER
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| patterns.iter().any(|p| p.modules.iter().any(|m| m.1 == *k)))
            .collect();
        let mut sums = vec![vec![(0.0, 0usize); layers]; keys.len()];
        for p in patterns {
            for (layer, module, rank) in &p.modules {
                if let Some(r) = keys.iter().position(|k| k == module) {
                    sums[r][*layer].0 += *rank as f64;
                    sums[r][*layer].1 += 1;
                }
            }
        }
        LayerGrid {
            rows: keys.iter().map(|k| paper_name(k).to_string()).collect(),
            values: sums
                .into_iter()
                .map(|row| {
                    row.into_iter()
                        .map(|(s, n)| (n > 0).then(|| s / n as f64))
                        .collect()
                })
                .collect(),
        }
    }

    /// Mean over the adapted layers of each module type.
    pub fn row_means(&self) -> Vec<f64> {
        self.values
            .iter()
            .map(|r| mean(r.iter().flatten()))
            .collect()
    }

    /// Mean over the adapted module types of each layer.
    pub fn column_means(&self) -> Vec<f64> {
        let layers = self.values.first().map_or(0, Vec::len);
        (0..layers)
            .map(|l| mean(self.values.iter().filter_map(|r| r[l].as_ref())))
            .collect()
    }
}

fn mean<'a>(v: impl Iterator<Item = &'a f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

/// A row of `metrics.csv`.
#[derive(Clone, Debug, Default)]
pub struct MetricsRow {
    pub step: usize,
    pub split: String,
    pub values: BTreeMap<String, f64>,
}

pub fn read_metrics(path: &Path) -> anyhow::Result<Vec<MetricsRow>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let header = reader
        .headers()
        .with_context(|| format!("{}: no header", path.display()))?
        .clone();
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.with_context(|| format!("{} line {}", path.display(), i + 2))?;
        let mut row = MetricsRow::default();
        for (name, v) in header.iter().zip(rec.iter()) {
            match name {
                "step" => {
                    row.step = v
                        .parse()
                        .with_context(|| format!("{} line {}: step {v:?}", path.display(), i + 2))?
                }
                "split" => row.split = v.to_string(),
                _ => {
                    if let Ok(x) = v.parse::<f64>() {
                        row.values.insert(name.to_string(), x);
                    }
                }
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The fields of `summary.json` a report reads (a view, so summaries written by older builds,
/// which lack newer fields, still report).
#[derive(Clone, Debug, Deserialize)]
pub struct RunSummary {
    pub task: String,
    pub main_metric: String,
    pub final_metrics: BTreeMap<String, BTreeMap<String, f64>>,
    /// Metrics of the evaluation with the best main metric on the first dev split (absent in
    /// summaries written before the trainer kept them).
    #[serde(default)]
    pub best_metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub best_step: Option<usize>,
    pub trainable_params: usize,
    pub final_total_rank: Option<usize>,
    pub train_seconds: f64,
    pub train_examples_per_second: f64,
    /// The selection protocol the run was trained under (runs from before protocols: best-dev).
    #[serde(default = "best_dev")]
    pub protocol: String,
    /// Held-out selection split's metrics at the chosen checkpoint (held-out runs only).
    #[serde(default)]
    pub selection_metrics: BTreeMap<String, f64>,
    /// A constant predictor's metrics on the first dev split (absent in older runs: recomputed).
    #[serde(default)]
    pub baseline_metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub provenance: Option<Provenance>,
}

fn best_dev() -> String {
    Protocol::BestDev.name().to_string()
}

/// Constant-prediction baselines: from each run's summary, or recomputed from its resolved
/// configuration (runs that predate the field), once per distinct data setting.
#[derive(Default)]
pub struct Baselines {
    computed: BTreeMap<String, Option<BTreeMap<String, f64>>>,
}

impl Baselines {
    /// The run's main-metric baseline; None where its data cannot be read (a warning says why).
    pub fn of(&mut self, run: &RunRecord) -> Option<f64> {
        let main = &run.summary.main_metric;
        if let Some(v) = run.summary.baseline_metrics.get(main) {
            return Some(*v);
        }
        let c = &run.config;
        let key = format!(
            "{}|{:?}|{:?}|{:?}|{}",
            run.summary.task,
            c.train.max_train_examples,
            c.train.max_eval_examples,
            c.train.dev_ratio,
            c.seed
        );
        self.computed
            .entry(key)
            .or_insert_with(|| match baseline_for_config(c) {
                Ok(m) => Some(m),
                Err(e) => {
                    eprintln!(
                        "warning: {}: no majority-class baseline ({e:#}); the run is not \
                         checked for learning",
                        run.dir.display()
                    );
                    None
                }
            })
            .as_ref()
            .and_then(|m| m.get(main).copied())
    }
}

/// Which dev evaluation of a run a report reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MetricAt {
    /// The best evaluation of the run on its first dev split (what the paper's tables report).
    #[default]
    Best,
    /// The evaluation at the end of training.
    Final,
}

impl MetricAt {
    pub fn name(self) -> &'static str {
        match self {
            MetricAt::Best => "best",
            MetricAt::Final => "final",
        }
    }
}

/// Everything a report needs about one finished run.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub dir: PathBuf,
    pub summary: RunSummary,
    pub config: RunConfig,
    pub pattern: Option<RankPattern>,
    /// The main metric of a constant predictor on the run's dev split (None: unknown).
    pub baseline: Option<f64>,
}

impl RunRecord {
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let run = RunDir::new(dir);
        let summary: RunSummary = read_json(&run.summary())
            .with_context(|| format!("{} is not a finished run", dir.display()))?;
        let config = RunConfig::load(Some(&run.config()), &[])?;
        let pattern = run
            .rank_pattern()
            .exists()
            .then(|| RankPattern::read(&run.rank_pattern()))
            .transpose()?;
        Ok(RunRecord {
            dir: dir.to_path_buf(),
            summary,
            config,
            pattern,
            baseline: None,
        })
    }

    /// The main metric on the held-out selection split at the chosen checkpoint.
    pub fn selection_value(&self) -> Option<f64> {
        self.summary
            .selection_metrics
            .get(&self.summary.main_metric)
            .copied()
    }

    /// The main metric on the first dev split, at its best evaluation or at the end of training.
    pub fn main_value(&self, at: MetricAt) -> Option<f64> {
        let metrics = match at {
            MetricAt::Best => Some(&self.summary.best_metrics),
            MetricAt::Final => self.summary.final_metrics.values().next(),
        };
        metrics
            .and_then(|m| m.get(&self.summary.main_metric))
            .copied()
    }

    /// Number of adapted matrices (LoRA / AdaLoRA).
    pub fn matrices(&self) -> Option<usize> {
        match (&self.pattern, self.config.method) {
            (Some(p), _) => Some(p.modules.len()),
            // A fixed pattern lists every matrix of the AdaLoRA run it came from, rank 0 included.
            (None, Method::Lora) if !self.config.lora.rank_pattern.is_empty() => {
                Some(self.config.lora.rank_pattern.len())
            }
            (None, Method::Lora) => self
                .summary
                .final_total_rank
                .map(|t| t / self.config.lora.r.max(1)),
            _ => None,
        }
    }

    /// Final total rank divided by the number of adapted matrices.
    pub fn mean_final_rank(&self) -> Option<f64> {
        match (self.summary.final_total_rank, self.matrices()) {
            (Some(t), Some(m)) if m > 0 => Some(t as f64 / m as f64),
            _ => None,
        }
    }

    /// "LoRA r=8" / "AdaLoRA 12→8".
    pub fn method_label(&self) -> String {
        let c = &self.config;
        match c.method {
            Method::Lora if !c.lora.rank_pattern.is_empty() => {
                format!(
                    "LoRA fixed pattern (total {})",
                    c.lora.rank_pattern.values().sum::<usize>()
                )
            }
            Method::Lora => format!("LoRA r={}", c.lora.r),
            Method::AdaLora => match c.adalora.target_total_rank {
                Some(t) => format!("AdaLoRA {}→b(T)={t}", c.adalora.init_r),
                None => format!("AdaLoRA {}→{}", c.adalora.init_r, c.adalora.target_r),
            },
            Method::Full => "Full FT".into(),
            Method::BitFit => "BitFit".into(),
        }
    }
}
