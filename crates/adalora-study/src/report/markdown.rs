//! `report.md`: a header that says how the numbers were made (protocol, centre, interval,
//! provenance, wall time), the main table, the learning-rate choices, the paired comparisons
//! and the rank allocation.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::allocation::{allocations, Allocation, Estimate};
use super::compare::Comparison;
use super::{group_final_rank, group_params, main_metric_of, pct, Cell, Study};
use crate::report_settings::{Center, Protocol};
use crate::runs::MetricAt;

pub fn markdown(study: &Study, comparisons: &[Comparison]) -> String {
    let cells = study.cells();
    let mut md = String::new();
    header(study, &mut md);
    main_table(study, &cells, &mut md);
    notes(study, &cells, &mut md);
    lr_section(study, &cells, &mut md);
    comparison_section(comparisons, study, &mut md);
    allocation_section(&allocations(study), study, &mut md);
    md
}

fn header(study: &Study, md: &mut String) {
    let _ = writeln!(md, "# Sweep `{}`\n", study.name);
    let protocol = match study.protocol {
        Protocol::HeldOut => {
            "**held-out**: each run holds out a seeded, stratified part of its training set \
             (`train.selection_ratio`); the learning rate and the checkpoint are chosen on it, \
             and the official dev split is reported once, at that checkpoint"
        }
        Protocol::BestDev => {
            "**best-dev** (the paper's): the learning rate and the checkpoint are chosen on the \
             same dev split that is reported, which favours every method by its selection noise"
        }
    };
    let center = match study.settings.center {
        Center::Mean => "mean",
        Center::Median => "median",
    };
    let at = match study.at {
        MetricAt::Best => "at the chosen checkpoint",
        MetricAt::Final => "at the end of training (`--final`)",
    };
    let _ = writeln!(
        md,
        "- Selection protocol: {protocol}.\n- Each cell: the task's main metric on the (first) \
         dev split {at}, ×100, {center} over seeds ± the half-width of the 95% Student-t \
         interval of the mean, (n = seeds); each method's learning rate is chosen per cell \
         from the sweep's grid by the mean selection metric over the tuning seeds every rate \
         has. Best per column in bold. # Params = trainable parameters as trained (AdaLoRA \
         counts its initial rank).\n- {} finished runs{}; {} of wall time recorded in the \
         manifest.",
        study.entries.len(),
        if study.unfinished > 0 {
            format!(", {} not finished (not shown)", study.unfinished)
        } else {
            String::new()
        },
        hours(study.wall_seconds)
    );
    let (provenances, missing) = study.provenances();
    for p in &provenances {
        let _ = writeln!(md, "- Built and run by: {}", p.short());
    }
    if missing > 0 {
        let _ = writeln!(
            md,
            "- {missing} runs predate provenance records (their build and machine are not \
             known from the run files; see the page that introduces the study)."
        );
    }
    let _ = writeln!(md);
}

fn hours(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{:.0} min", seconds / 60.0)
    }
}

/// "85.12 ± 1.30 (n=5)", with ‡ for a learning rate at the grid's edge and †k for k runs at
/// the task's baseline.
pub(super) fn cell_text(study: &Study, c: &Cell) -> String {
    let centre = pct(c.center(study.settings.center));
    let mut text = match c.half_width() {
        Some(h) => format!("{centre} ± {:.2} (n={})", 100.0 * h, c.runs.len()),
        None => format!("{centre} (n={}, no interval)", c.runs.len()),
    };
    if c.lr_at_edge() {
        text.push_str(" ‡");
    }
    let at_baseline = c.runs_at_baseline(study);
    if at_baseline > 0 {
        let _ = write!(text, " †{at_baseline}");
    }
    text
}

fn main_table(study: &Study, cells: &BTreeMap<(String, String), Cell>, md: &mut String) {
    let tasks = study.tasks();
    let averaged = study.averaged_tasks(cells);
    let best = study.best_per_task(cells);
    let mut header = vec![
        "Method".to_string(),
        "# Params".into(),
        "mean final rank".into(),
    ];
    header.extend(
        tasks
            .iter()
            .map(|t| format!("{t} ({})", main_metric_of(study, t))),
    );
    header.push("Avg".into());
    table_header(md, &header);
    for g in study.groups() {
        let mut line = vec![
            g.clone(),
            group_params(study, &g),
            group_final_rank(study, &g).map_or("-".into(), |r| format!("{r:.2}")),
        ];
        for t in &tasks {
            line.push(match cells.get(&(g.clone(), t.clone())) {
                Some(c) if best.get(t) == Some(&g) => format!("**{}**", cell_text(study, c)),
                Some(c) => cell_text(study, c),
                None => "-".into(),
            });
        }
        line.push(
            study
                .row_average(&g, &averaged, cells)
                .map_or("-".into(), pct),
        );
        let _ = writeln!(md, "| {} |", line.join(" | "));
    }
}

fn notes(study: &Study, cells: &BTreeMap<(String, String), Cell>, md: &mut String) {
    let tasks = study.tasks();
    let averaged = study.averaged_tasks(cells);
    let _ = writeln!(md);
    let left_out: Vec<&String> = tasks.iter().filter(|t| !averaged.contains(t)).collect();
    let _ = writeln!(
        md,
        "Avg: over {} (tasks where every row has a cell that learned){}.",
        if averaged.is_empty() {
            "no task".to_string()
        } else {
            averaged.join(", ")
        },
        if left_out.is_empty() {
            String::new()
        } else {
            format!(
                "; left out: {}",
                left_out
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let baselines: Vec<String> = tasks
        .iter()
        .filter_map(|t| study.baseline_of(t).map(|b| format!("{t} {}", pct(b))))
        .collect();
    if !baselines.is_empty() {
        let _ = writeln!(
            md,
            "\nConstant-prediction baselines (majority class of the training set, or its mean \
             for regression) on the dev split: {}. † marks runs within {} points of it: they \
             did not learn, and the allocation summaries leave them out.",
            baselines.join(", "),
            study.settings.learned_margin
        );
    }
    let at_edge = cells.values().filter(|c| c.lr_at_edge()).count();
    if at_edge > 0 {
        let _ = writeln!(
            md,
            "\n‡ {at_edge} of {} cells chose a learning rate at an end of its grid: the optimum \
             may lie outside it (extend the grid).",
            cells.len()
        );
    }
    let most = cells.values().map(|c| c.runs.len()).max().unwrap_or(0);
    let short: Vec<String> = cells
        .iter()
        .filter(|(_, c)| c.runs.len() < most)
        .map(|((g, t), c)| format!("{g} on {t} (n={})", c.runs.len()))
        .collect();
    if !short.is_empty() {
        let _ = writeln!(
            md,
            "\nFewer seeds than the other cells ({most}): {}.",
            short.join("; ")
        );
    }
    let missing: Vec<String> = study
        .groups()
        .iter()
        .flat_map(|g| tasks.iter().map(move |t| (g, t)))
        .filter(|(g, t)| !cells.contains_key(&((*g).clone(), (*t).clone())))
        .map(|(g, t)| format!("{g} on {t}"))
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(md, "\nNo finished runs: {}.", missing.join("; "));
    }
}

fn lr_section(study: &Study, cells: &BTreeMap<(String, String), Cell>, md: &mut String) {
    if cells.values().all(|c| c.lr_grid.len() < 2) {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Learning rates\n\nChosen per cell on the {} by the mean over the tuning seeds.\n",
        match study.protocol {
            Protocol::HeldOut => "held-out selection split",
            Protocol::BestDev => "dev split",
        }
    );
    table_header(
        md,
        &[
            "row".into(),
            "task".into(),
            "grid".into(),
            "chosen".into(),
            "tuning seeds".into(),
        ],
    );
    for ((g, t), c) in cells {
        let grid: Vec<String> = c.lr_grid.iter().map(|lr| format!("{lr:e}")).collect();
        let seeds: Vec<String> = c.tuning_seeds.iter().map(u64::to_string).collect();
        let _ = writeln!(
            md,
            "| {g} | {t} | {} | {:e}{} | {} |",
            grid.join(", "),
            c.lr(),
            if c.lr_at_edge() { " (edge)" } else { "" },
            if seeds.is_empty() {
                "-".into()
            } else {
                seeds.join(", ")
            }
        );
    }
}

fn interval(ci: Option<(f64, f64)>) -> String {
    ci.map_or("-".into(), |(lo, hi)| format!("[{lo:+.2}, {hi:+.2}]"))
}

fn p_value(p: Option<f64>) -> String {
    match p {
        Some(p) if p < 0.001 => format!("{p:.1e}"),
        Some(p) => format!("{p:.3}"),
        None => "-".into(),
    }
}

fn comparison_section(comparisons: &[Comparison], study: &Study, md: &mut String) {
    if comparisons.is_empty() {
        return;
    }
    let margin = study.settings.equivalence_margin;
    let _ = writeln!(
        md,
        "\n## Paired comparisons\n\nLeft − right in points (×100), paired by seed at each row's \
         chosen learning rate; positive = left better. 95% intervals: Student t over the \
         paired differences and a seeded paired bootstrap ({} resamples); p: paired t-test and \
         Wilcoxon signed-rank (two-sided); Holm: the t-test's p adjusted across all {} \
         comparisons of this report.{}\n",
        crate::stats::RESAMPLES,
        comparisons.len(),
        margin.map_or(String::new(), |m| format!(
            " TOST: two one-sided t-tests against ±{m} points (equivalent at the 5% level \
             when p < 0.05)."
        ))
    );
    let mut header: Vec<String> = [
        "task",
        "left",
        "right",
        "pairing",
        "n",
        "mean Δ",
        "95% t-CI",
        "95% bootstrap CI",
        "p (t)",
        "p (Wilcoxon)",
        "p (Holm)",
    ]
    .map(String::from)
    .to_vec();
    if margin.is_some() {
        header.push("TOST".into());
    }
    table_header(md, &header);
    for c in comparisons {
        let s = &c.stats;
        let mut line = vec![
            c.task.clone(),
            c.arms.left.clone(),
            c.arms.right.clone(),
            c.arms.pairing.name().to_string(),
            c.n().to_string(),
        ];
        if c.n() < 2 {
            line.push(s.mean_diff.map_or("-".into(), |d| format!("{d:+.2}")));
            line.push(format!(
                "n={}: too few paired seeds for an interval or a test",
                c.n()
            ));
            line.extend(std::iter::repeat_n("-".to_string(), 4));
        } else {
            line.extend([
                s.mean_diff.map_or("-".into(), |d| format!("{d:+.2}")),
                interval(s.t_ci),
                interval(s.boot_ci),
                p_value(s.p_t),
                p_value(s.p_wilcoxon),
                p_value(c.p_holm),
            ]);
        }
        if margin.is_some() {
            line.push(match &c.tost {
                Some(t) if t.equivalent_at_05 => format!("equivalent (p = {})", p_value(Some(t.p))),
                Some(t) => format!("not shown (p = {})", p_value(Some(t.p))),
                None => "n too small or no spread".into(),
            });
        }
        let _ = writeln!(md, "| {} |", line.join(" | "));
    }
    let unpaired: usize = comparisons.iter().map(|c| c.unpaired).sum();
    if unpaired > 0 {
        let _ = writeln!(
            md,
            "\n{unpaired} runs have no partner seed in the other row and are left out of the \
             pairings."
        );
    }
}

fn estimate(e: &Estimate, scale: f64, signed: bool) -> String {
    let m = scale * e.mean;
    let centre = if signed {
        format!("{m:+.2}")
    } else {
        format!("{m:.2}")
    };
    match e.ci {
        Some((lo, hi)) => format!("{centre} [{:.2}, {:.2}]", scale * lo, scale * hi),
        None => format!("{centre} (n={})", e.n),
    }
}

fn allocation_section(allocs: &[Allocation], study: &Study, md: &mut String) {
    if allocs.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Rank allocation (AdaLoRA)\n\nOver the runs of each AdaLoRA cell (its chosen \
         learning rate) that learned — runs within {} points of the task's baseline are left \
         out — the mean final rank with its 95% Student-t interval over seeds. Stability: \
         Spearman correlation of the per-matrix final ranks between every two seeds (mean and \
         range). The paper's Figure 3 reading, tested: FFN − attention = mean rank per FFN \
         matrix (W_f1, W_f2) − per attention matrix (W_q, W_k, W_v, W_o); top − bottom = \
         mean rank per matrix of the top third of layers − the bottom third; p: t-test \
         against 0 over runs.\n",
        study.settings.learned_margin
    );
    table_header(
        md,
        &[
            "row".into(),
            "task".into(),
            "runs (left out)".into(),
            "FFN share of rank".into(),
            "FFN − attention".into(),
            "p".into(),
            "top − bottom third".into(),
            "p".into(),
            "stability ρ".into(),
        ],
    );
    for a in allocs {
        let na = || "-".to_string();
        let _ = writeln!(
            md,
            "| {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} |",
            a.group,
            a.task.as_deref().unwrap_or("all tasks"),
            a.n,
            left_out(a),
            a.ffn_share
                .as_ref()
                .map_or_else(na, |e| format!("{}%", estimate(e, 100.0, false))),
            a.ffn_minus_attention
                .as_ref()
                .map_or_else(na, |e| estimate(e, 1.0, true)),
            p_value(a.ffn_minus_attention.as_ref().and_then(|e| e.p)),
            a.top_minus_bottom
                .as_ref()
                .map_or_else(na, |e| estimate(e, 1.0, true)),
            p_value(a.top_minus_bottom.as_ref().and_then(|e| e.p)),
            a.stability.as_ref().map_or_else(na, |s| format!(
                "{:.2} [{:.2}, {:.2}] ({} pairs)",
                s.mean, s.min, s.max, s.pairs
            )),
        );
    }
    per_module_table(allocs, md);
    per_layer_table(allocs, md);
}

fn left_out(a: &Allocation) -> String {
    let mut parts = vec![format!("{} at baseline", a.not_learned)];
    if a.unchecked > 0 {
        parts.push(format!("{} unchecked", a.unchecked));
    }
    parts.join(", ")
}

fn per_module_table(allocs: &[Allocation], md: &mut String) {
    let mut modules: Vec<&str> = Vec::new();
    for a in allocs {
        for (m, _) in &a.per_module {
            if !modules.contains(&m.as_str()) {
                modules.push(m);
            }
        }
    }
    let _ = writeln!(
        md,
        "\nMean final rank per module type (over layers), 95% CI over seeds; – where the row \
         does not adapt it.\n"
    );
    let mut header = vec!["row".to_string(), "task".into(), "n".into()];
    header.extend(modules.iter().map(|m| m.to_string()));
    table_header(md, &header);
    for a in allocs {
        let cells = modules.iter().map(|m| {
            a.per_module
                .iter()
                .find(|(name, _)| name == m)
                .map_or("–".into(), |(_, e)| estimate(e, 1.0, false))
        });
        allocation_line(md, a, cells);
    }
}

fn per_layer_table(allocs: &[Allocation], md: &mut String) {
    let layers = allocs
        .iter()
        .flat_map(|a| a.per_layer.iter().map(|(l, _)| l + 1))
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        md,
        "\nMean final rank per layer (over its adapted matrices), 95% CI over seeds.\n"
    );
    let mut header = vec!["row".to_string(), "task".into(), "n".into()];
    header.extend((1..=layers).map(|l| format!("layer {l}")));
    table_header(md, &header);
    for a in allocs {
        let cells = (0..layers).map(|l| {
            a.per_layer
                .iter()
                .find(|(layer, _)| *layer == l)
                .map_or("–".into(), |(_, e)| estimate(e, 1.0, false))
        });
        allocation_line(md, a, cells);
    }
}

fn allocation_line(md: &mut String, a: &Allocation, cells: impl Iterator<Item = String>) {
    let line: Vec<String> = [
        a.group.clone(),
        a.task.clone().unwrap_or_else(|| "all tasks".into()),
        a.n.to_string(),
    ]
    .into_iter()
    .chain(cells)
    .collect();
    let _ = writeln!(md, "| {} |", line.join(" | "));
}

pub(super) fn table_header(md: &mut String, cols: &[String]) {
    let _ = writeln!(md, "| {} |", cols.join(" | "));
    let sep: Vec<&str> = cols
        .iter()
        .enumerate()
        .map(|(i, _)| if i == 0 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(md, "| {} |", sep.join(" | "));
}
