//! `report.csv`: one row per table cell (`kind = cell`: metric values as fractions, like the
//! run files) and one per paired comparison (`kind = comparison`: differences in points, ×100,
//! like the Markdown table). Columns that do not apply to a kind are empty.

use super::compare::Comparison;
use super::{Cell, Study};
use crate::runs::MetricAt;

const COLUMNS: [&str; 31] = [
    "kind",
    "method",
    "row",
    "trainable_params",
    "mean_final_rank",
    "task",
    "metric",
    "lr",
    "lr_grid",
    "lr_at_edge",
    "n",
    "at",
    "mean",
    "median",
    "std",
    "mean_ci_low",
    "mean_ci_high",
    "values_by_seed",
    "best_mean",
    "final_mean",
    "baseline",
    "runs_at_baseline",
    "left",
    "right",
    "pairing",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p_t",
    "p_wilcoxon",
    "p_holm",
];

fn opt(x: Option<f64>) -> String {
    x.map_or(String::new(), |v| format!("{v:.6}"))
}

/// A record with the named columns filled and the rest empty.
fn record(fields: &[(&str, String)]) -> Vec<String> {
    COLUMNS
        .iter()
        .map(|c| {
            fields
                .iter()
                .find(|(k, _)| k == c)
                .map_or(String::new(), |(_, v)| v.clone())
        })
        .collect()
}

fn cell_record(study: &Study, group: &str, task: &str, c: &Cell) -> Vec<String> {
    let first = &c.runs[0].run;
    let seeds: Vec<String> = c
        .by_seed()
        .iter()
        .map(|(s, v)| format!("{s}:{v:.6}"))
        .collect();
    let grid: Vec<String> = c.lr_grid.iter().map(|lr| format!("{lr:e}")).collect();
    record(&[
        ("kind", "cell".into()),
        ("method", first.config.method.name().to_string()),
        ("row", group.to_string()),
        (
            "trainable_params",
            first.summary.trainable_params.to_string(),
        ),
        (
            "mean_final_rank",
            first
                .mean_final_rank()
                .map_or(String::new(), |r| format!("{r:.4}")),
        ),
        ("task", task.to_string()),
        ("metric", first.summary.main_metric.clone()),
        ("lr", format!("{:e}", c.lr())),
        ("lr_grid", grid.join(" ")),
        ("lr_at_edge", c.lr_at_edge().to_string()),
        ("n", c.runs.len().to_string()),
        ("at", c.at.name().to_string()),
        ("mean", format!("{:.6}", c.mean)),
        ("median", format!("{:.6}", c.median)),
        ("std", opt(c.std)),
        ("mean_ci_low", opt(c.ci.map(|ci| ci.0))),
        ("mean_ci_high", opt(c.ci.map(|ci| ci.1))),
        ("values_by_seed", seeds.join(" ")),
        ("best_mean", format!("{:.6}", c.at(MetricAt::Best).mean)),
        ("final_mean", format!("{:.6}", c.at(MetricAt::Final).mean)),
        ("baseline", opt(study.baseline_of(task))),
        ("runs_at_baseline", c.runs_at_baseline(study).to_string()),
    ])
}

fn comparison_record(c: &Comparison) -> Vec<String> {
    let s = &c.stats;
    record(&[
        ("kind", "comparison".into()),
        ("task", c.task.clone()),
        ("left", c.arms.left.clone()),
        ("right", c.arms.right.clone()),
        ("pairing", c.arms.pairing.name().to_string()),
        ("n", c.n().to_string()),
        ("mean_diff", opt(s.mean_diff)),
        ("ci_low", opt(s.t_ci.map(|ci| ci.0))),
        ("ci_high", opt(s.t_ci.map(|ci| ci.1))),
        ("p_t", opt(s.p_t)),
        ("p_wilcoxon", opt(s.p_wilcoxon)),
        ("p_holm", opt(c.p_holm)),
    ])
}

pub fn csv_text(study: &Study, comparisons: &[Comparison]) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    for ((g, t), c) in study.cells_in_table_order() {
        w.write_record(cell_record(study, &g, &t, &c))?;
    }
    for c in comparisons {
        w.write_record(comparison_record(c))?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}
