//! `report.tex`: the main table as a booktabs LaTeX table (needs `\usepackage{booktabs}`):
//! centre ± the 95% t-interval's half-width per cell, best per column in bold, the seed counts
//! and the protocol in a footnote below the rule.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::{group_params, main_metric_of, Study};
use crate::report_settings::Center;

/// Escapes the characters LaTeX treats specially in text, and writes the labels' arrows and
/// minus signs as math.
fn escape(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(ch);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            '→' => out.push_str("$\\to$"),
            '−' => out.push_str("$-$"),
            '×' => out.push_str("$\\times$"),
            _ => out.push(ch),
        }
    }
    out
}

fn number(x: f64) -> String {
    if x.is_finite() {
        format!("{:.2}", 100.0 * x)
    } else {
        "--".into()
    }
}

pub fn latex(study: &Study) -> String {
    let cells = study.cells();
    let tasks = study.tasks();
    let averaged = study.averaged_tasks(&cells);
    let best = study.best_per_task(&cells);
    let center = study.settings.center;
    let mut tex = String::new();
    let _ = writeln!(
        tex,
        "% adalora report {} (generated; needs \\usepackage{{booktabs}})",
        study.name
    );
    let _ = writeln!(tex, "\\begin{{table}}[t]\n\\centering\\small");
    let _ = writeln!(
        tex,
        "\\begin{{tabular}}{{l r {} r}}",
        "c ".repeat(tasks.len())
    );
    let _ = writeln!(tex, "\\toprule");
    let mut head = vec!["Method".to_string(), "\\# Params".into()];
    head.extend(
        tasks
            .iter()
            .map(|t| format!("{} ({})", escape(t), escape(&main_metric_of(study, t)))),
    );
    head.push("Avg".into());
    let _ = writeln!(tex, "{} \\\\\n\\midrule", head.join(" & "));
    let mut seeds = BTreeSet::new();
    for g in study.groups() {
        let mut line = vec![escape(&g), escape(&group_params(study, &g))];
        for t in &tasks {
            let Some(c) = cells.get(&(g.clone(), t.clone())) else {
                line.push("--".into());
                continue;
            };
            seeds.insert(c.runs.len());
            let centre = number(c.center(center));
            let centre = if best.get(t) == Some(&g) {
                format!("\\textbf{{{centre}}}")
            } else {
                centre
            };
            line.push(match c.half_width() {
                Some(h) => format!("{centre}$\\pm${:.2}", 100.0 * h),
                None => centre,
            });
        }
        line.push(
            study
                .row_average(&g, &averaged, &cells)
                .map_or("--".into(), number),
        );
        let _ = writeln!(tex, "{} \\\\", line.join(" & "));
    }
    let seeds: Vec<String> = seeds.iter().map(usize::to_string).collect();
    let _ = writeln!(tex, "\\bottomrule");
    let _ = writeln!(
        tex,
        "\\multicolumn{{{}}}{{l}}{{\\footnotesize {} over $n = {}$ seeds per cell $\\pm$ the \
         half-width of the 95\\% Student-$t$ interval; selection: {}; Avg over {}.}}",
        tasks.len() + 3,
        match center {
            Center::Mean => "Mean",
            Center::Median => "Median",
        },
        seeds.join(",\\,"),
        study.protocol.name(),
        if averaged.is_empty() {
            "no task".to_string()
        } else {
            averaged
                .iter()
                .map(|t| escape(t))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let _ = writeln!(tex, "\\end{{tabular}}");
    let _ = writeln!(
        tex,
        "\\caption{{{}: dev-set results ($\\times$100).}}\n\\end{{table}}",
        escape(&study.name)
    );
    tex
}
