//! Where AdaLoRA's rank went, as a measured claim: over the runs of a cell that learned (a run
//! within the learned margin of its task's constant-prediction baseline says nothing about
//! which modules matter), per module type and per layer the mean final rank with a 95%
//! interval over seeds, the seed-to-seed stability of the allocation (Spearman correlation of
//! per-matrix final ranks between seeds), and the paper's two Figure-3 statements tested
//! directly: the FFN gets more rank per matrix than attention, and the top layers more than
//! the bottom ones.

use super::{Entry, Study};
use crate::runs::{paper_name, RankPattern, MODULE_ORDER};
use crate::stats;

const ATTENTION: [&str; 4] = ["query", "key", "value", "attention-output"];
const FFN: [&str; 2] = ["intermediate", "output"];

/// A mean over runs with its 95% Student-t interval (none for fewer than two runs) and, for
/// a difference, the t-test's p against zero.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub n: usize,
    pub mean: f64,
    pub ci: Option<(f64, f64)>,
    pub p: Option<f64>,
}

impl Estimate {
    fn of(values: &[f64]) -> Option<Self> {
        Some(Estimate {
            n: values.len(),
            mean: stats::mean(values)?,
            ci: stats::t_interval(values, stats::LEVEL),
            p: stats::paired_t_test(values).map(|t| t.p),
        })
    }
}

/// Seed-to-seed agreement of the per-matrix final ranks.
#[derive(Clone, Debug, PartialEq)]
pub struct Stability {
    /// Pairs of runs with a defined correlation (neither allocation constant).
    pub pairs: usize,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

/// The allocation summary of one AdaLoRA cell (row × task, or a row over all its tasks).
#[derive(Clone, Debug)]
pub struct Allocation {
    pub group: String,
    /// None: pooled over every task of the row.
    pub task: Option<String>,
    /// Runs summarised (learned, with a rank pattern).
    pub n: usize,
    /// Runs left out: at their task's baseline.
    pub not_learned: usize,
    /// Runs left out: baseline unknown (their data could not be read).
    pub unchecked: usize,
    /// (paper name, mean final rank over the module type's matrices).
    pub per_module: Vec<(String, Estimate)>,
    /// Per layer (0-based), mean final rank over its matrices.
    pub per_layer: Vec<(usize, Estimate)>,
    pub stability: Option<Stability>,
    /// FFN's share of the final total rank (0–1).
    pub ffn_share: Option<Estimate>,
    /// Mean rank per FFN matrix − per attention matrix.
    pub ffn_minus_attention: Option<Estimate>,
    /// Mean rank per matrix of the top third of layers − the bottom third.
    pub top_minus_bottom: Option<Estimate>,
}

/// Mean final rank of the matrices of `pattern` that pass `keep(layer, module)`.
fn mean_rank(pattern: &RankPattern, keep: impl Fn(usize, &str) -> bool) -> Option<f64> {
    let ranks: Vec<f64> = pattern
        .modules
        .iter()
        .filter(|(l, m, _)| keep(*l, m))
        .map(|(_, _, r)| *r as f64)
        .collect();
    stats::mean(&ranks)
}

fn total_rank(pattern: &RankPattern, keep: impl Fn(&str) -> bool) -> f64 {
    pattern
        .modules
        .iter()
        .filter(|(_, m, _)| keep(m))
        .map(|(_, _, r)| *r as f64)
        .sum()
}

/// One value per pattern where `f` has one.
fn over<F: Fn(&RankPattern) -> Option<f64>>(patterns: &[&RankPattern], f: F) -> Option<Estimate> {
    let values: Vec<f64> = patterns.iter().filter_map(|p| f(p)).collect();
    Estimate::of(&values)
}

fn ffn_share(p: &RankPattern) -> Option<f64> {
    let adapted = total_rank(p, |m| ATTENTION.contains(&m) || FFN.contains(&m));
    (adapted > 0.0).then(|| total_rank(p, |m| FFN.contains(&m)) / adapted)
}

fn ffn_minus_attention(p: &RankPattern) -> Option<f64> {
    let ffn = mean_rank(p, |_, m| FFN.contains(&m))?;
    let attention = mean_rank(p, |_, m| ATTENTION.contains(&m))?;
    Some(ffn - attention)
}

/// The pooler sits above the layers: it is not part of any layer's share.
fn in_a_layer(module: &str) -> bool {
    module != "pooler"
}

/// Thirds by layer index; needs at least three layers.
fn top_minus_bottom(p: &RankPattern) -> Option<f64> {
    let layers = p.layers();
    let third = layers / 3;
    if third == 0 {
        return None;
    }
    let top = mean_rank(p, |l, m| l >= layers - third && in_a_layer(m))?;
    let bottom = mean_rank(p, |l, m| l < third && in_a_layer(m))?;
    Some(top - bottom)
}

/// Per-matrix ranks keyed by (layer, module), for correlating two runs over the matrices both
/// adapt.
fn stability(patterns: &[&RankPattern]) -> Option<Stability> {
    let mut rhos = Vec::new();
    for (i, a) in patterns.iter().enumerate() {
        for b in &patterns[i + 1..] {
            let (x, y): (Vec<f64>, Vec<f64>) = a
                .modules
                .iter()
                .filter_map(|(l, m, r)| {
                    b.modules
                        .iter()
                        .find(|(l2, m2, _)| l2 == l && m2 == m)
                        .map(|(_, _, r2)| (*r as f64, *r2 as f64))
                })
                .unzip();
            if let Some(rho) = stats::spearman(&x, &y) {
                rhos.push(rho);
            }
        }
    }
    Some(Stability {
        pairs: rhos.len(),
        mean: stats::mean(&rhos)?,
        min: rhos.iter().copied().fold(f64::INFINITY, f64::min),
        max: rhos.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

fn summarise(study: &Study, group: &str, task: Option<&str>, runs: &[&Entry]) -> Allocation {
    let mut kept = Vec::new();
    let (mut not_learned, mut unchecked) = (0, 0);
    for e in runs.iter().filter(|e| e.run.pattern.is_some()) {
        match study.learned(e) {
            Some(true) => kept.push(e.run.pattern.as_ref().expect("filtered")),
            Some(false) => not_learned += 1,
            None => unchecked += 1,
        }
    }
    let layers = kept.iter().map(|p| p.layers()).max().unwrap_or(0);
    let per_module = MODULE_ORDER
        .iter()
        .filter_map(|(key, _)| {
            over(&kept, |p| mean_rank(p, |_, m| m == *key))
                .map(|e| (paper_name(key).to_string(), e))
        })
        .collect();
    let per_layer = (0..layers)
        .filter_map(|layer| {
            over(&kept, |p| mean_rank(p, |l, m| l == layer && in_a_layer(m))).map(|e| (layer, e))
        })
        .collect();
    Allocation {
        group: group.to_string(),
        task: task.map(str::to_string),
        n: kept.len(),
        not_learned,
        unchecked,
        per_module,
        per_layer,
        stability: stability(&kept),
        ffn_share: over(&kept, ffn_share),
        ffn_minus_attention: over(&kept, ffn_minus_attention),
        top_minus_bottom: over(&kept, top_minus_bottom),
    }
}

/// Every AdaLoRA cell's allocation (the runs at its chosen learning rate), then each row's
/// pooled over its tasks where it has more than one.
pub fn allocations(study: &Study) -> Vec<Allocation> {
    let tasks = study.tasks();
    let mut out = Vec::new();
    for group in study.groups() {
        let mut pooled: Vec<&Entry> = Vec::new();
        for task in &tasks {
            let Some(cell) = study.cell(&group, task) else {
                continue;
            };
            if cell.runs.iter().all(|e| e.run.pattern.is_none()) {
                continue;
            }
            out.push(summarise(study, &group, Some(task), &cell.runs));
            pooled.extend(cell.runs);
        }
        let tasks_with_runs = out.iter().filter(|a| a.group == group).count();
        if tasks_with_runs > 1 {
            out.push(summarise(study, &group, None, &pooled));
        }
    }
    out
}
