//! Paired comparisons between table rows: which rows a report compares (equal final rank,
//! equal trainable parameters, or named in `[report] compare`), and on each task the paired
//! differences over the seeds both rows have, with 95% intervals (Student t and a seeded
//! paired bootstrap), the paired t-test and Wilcoxon signed-rank p-values, Holm-adjusted
//! p-values across every comparison of the report, and a TOST where a margin is configured.

use adalora_train::io::fnv1a64;
use adalora_train::Method;
use anyhow::bail;

use super::Study;
use crate::stats::{self, Paired, Tost};

/// How two rows were matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pairing {
    /// LoRA r and AdaLoRA with the same mean final rank (the paper's Table 1 pairing).
    EqualRank,
    /// LoRA and AdaLoRA training the same number of parameters (within 1%): AdaLoRA 3→2
    /// trains as many as LoRA r=3, 1.5× LoRA r=2.
    EqualParams,
    /// Named in `[report] compare`.
    Configured,
}

impl Pairing {
    pub fn name(self) -> &'static str {
        match self {
            Pairing::EqualRank => "equal final rank",
            Pairing::EqualParams => "equal trainable parameters",
            Pairing::Configured => "configured",
        }
    }
}

/// Two rows compared as left − right.
#[derive(Clone, Debug, PartialEq)]
pub struct Arms {
    pub left: String,
    pub right: String,
    pub pairing: Pairing,
}

/// An equal-final-rank pair: LoRA and AdaLoRA rows with the same final mean rank and otherwise
/// the same settings.
pub struct Pair {
    pub lora: String,
    pub adalora: String,
    pub mean_final_rank: f64,
}

/// The varying settings of a row label beyond method and budget.
fn extras(group: &str) -> Option<&str> {
    group.split_once(" (").map(|(_, x)| x)
}

/// (LoRA row, AdaLoRA row) combinations with equal extra settings, in table order.
fn lora_adalora_rows(study: &Study) -> Vec<(String, String)> {
    let groups = study.groups();
    let method_of = |g: &str| {
        study
            .entries
            .iter()
            .find(|e| e.group == g)
            .map(|e| e.run.config.method)
    };
    let mut out = Vec::new();
    for l in groups.iter().filter(|g| method_of(g) == Some(Method::Lora)) {
        for a in groups
            .iter()
            .filter(|g| method_of(g) == Some(Method::AdaLora))
        {
            if extras(l) == extras(a) {
                out.push((l.clone(), a.clone()));
            }
        }
    }
    out
}

pub fn pairs(study: &Study) -> Vec<Pair> {
    let rank = |g: &str| {
        study
            .entries
            .iter()
            .find(|e| e.group == g)
            .and_then(|e| e.run.mean_final_rank())
    };
    lora_adalora_rows(study)
        .into_iter()
        .filter_map(|(l, a)| match (rank(&l), rank(&a)) {
            (Some(lr), Some(ar)) if (lr - ar).abs() < 1e-9 => Some(Pair {
                lora: l,
                adalora: a,
                mean_final_rank: lr,
            }),
            _ => None,
        })
        .collect()
}

/// LoRA and AdaLoRA rows whose trainable parameter counts agree within 1%.
fn param_pairs(study: &Study) -> Vec<(String, String)> {
    let params = |g: &str| {
        study
            .entries
            .iter()
            .find(|e| e.group == g)
            .map(|e| e.run.summary.trainable_params as f64)
    };
    lora_adalora_rows(study)
        .into_iter()
        .filter(|(l, a)| match (params(l), params(a)) {
            (Some(p), Some(q)) => (p - q).abs() <= 0.01 * p.max(q),
            _ => false,
        })
        .collect()
}

/// Every pair of rows the report compares: AdaLoRA − LoRA at equal final rank and at equal
/// trainable parameters, then the configured ones. A configured label that is no row is an
/// error listing the rows.
pub fn arms(study: &Study) -> anyhow::Result<Vec<Arms>> {
    let mut out: Vec<Arms> = pairs(study)
        .into_iter()
        .map(|p| Arms {
            left: p.adalora,
            right: p.lora,
            pairing: Pairing::EqualRank,
        })
        .collect();
    for (l, a) in param_pairs(study) {
        if !out.iter().any(|x| x.left == a && x.right == l) {
            out.push(Arms {
                left: a,
                right: l,
                pairing: Pairing::EqualParams,
            });
        }
    }
    let groups = study.groups();
    for [left, right] in &study.settings.compare {
        for label in [left, right] {
            if !groups.contains(label) {
                bail!(
                    "[report] compare names the row {label:?}, which this sweep does not have \
                     (its rows: {})",
                    groups.join("; ")
                );
            }
        }
        out.push(Arms {
            left: left.clone(),
            right: right.clone(),
            pairing: Pairing::Configured,
        });
    }
    Ok(out)
}

/// One comparison on one task. Differences are in points (metric × 100), left − right.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub task: String,
    pub arms: Arms,
    /// The seeds both rows have (at their chosen learning rates), ascending.
    pub seeds: Vec<u64>,
    /// Seeds only one of the rows has (left out of the pairing).
    pub unpaired: usize,
    pub diffs: Vec<f64>,
    pub stats: Paired,
    /// The paired t-test's p, Holm-adjusted over every comparison of the report.
    pub p_holm: Option<f64>,
    pub tost: Option<Tost>,
}

impl Comparison {
    pub fn n(&self) -> usize {
        self.diffs.len()
    }
}

/// Every comparison of the report, with Holm's correction applied across all of them.
pub fn comparisons(study: &Study) -> anyhow::Result<Vec<Comparison>> {
    let mut out = Vec::new();
    for arms in arms(study)? {
        for task in study.tasks() {
            if let Some(c) = compare(study, &arms, &task)? {
                out.push(c);
            }
        }
    }
    let p: Vec<Option<f64>> = out.iter().map(|c| c.stats.p_t).collect();
    for (c, adjusted) in out.iter_mut().zip(stats::holm(&p)) {
        c.p_holm = adjusted;
    }
    Ok(out)
}

fn compare(study: &Study, arms: &Arms, task: &str) -> anyhow::Result<Option<Comparison>> {
    let (Some(l), Some(r)) = (study.cell(&arms.left, task), study.cell(&arms.right, task)) else {
        return Ok(None);
    };
    let (l, r) = (l.by_seed(), r.by_seed());
    let seeds: Vec<u64> = l.keys().filter(|s| r.contains_key(s)).copied().collect();
    let diffs: Vec<f64> = seeds.iter().map(|s| 100.0 * (l[s] - r[s])).collect();
    let unpaired = l.len() + r.len() - 2 * seeds.len();
    // The bootstrap is seeded by what is compared, so a report is reproducible.
    let seed = fnv1a64(format!("{task}\u{0}{}\u{0}{}", arms.left, arms.right).as_bytes());
    let tost = match study.settings.equivalence_margin {
        Some(m) => stats::tost(&diffs, m).map_err(anyhow::Error::msg)?,
        None => None,
    };
    Ok(Some(Comparison {
        task: task.to_string(),
        arms: arms.clone(),
        seeds,
        unpaired,
        stats: stats::paired(&diffs, seed),
        diffs,
        p_holm: None,
        tost,
    }))
}
