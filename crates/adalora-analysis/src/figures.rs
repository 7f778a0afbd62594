//! Figures of `analysis/`: spectra per module type over layers, heatmaps of effective rank and
//! rank (layer × module), and the φ grid of a chosen matrix (LoRA paper Fig. 3).

use std::path::{Path, PathBuf};

use adalora_plots::{save, LinePlot, RankHeatmap, Series};
use adalora_study::runs::paper_name;

use crate::analysis::{Analyzed, PhiCell, Side};

/// Module names in first-appearance (structural) order.
fn modules(analyzed: &[Analyzed]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in analyzed {
        if !out.contains(&a.matrix.module) {
            out.push(a.matrix.module.clone());
        }
    }
    out
}

/// One line per layer of this module type: σ_i against i.
fn spectra_of(analyzed: &[Analyzed], module: &str) -> Vec<Series> {
    analyzed
        .iter()
        .filter(|a| a.matrix.module == module && !a.svd.s.is_empty())
        .map(|a| Series {
            name: a
                .matrix
                .layer
                .map_or_else(|| module.to_string(), |l| format!("layer {l}")),
            points: (1..)
                .map(f64::from)
                .zip(a.singular_values().iter().copied())
                .collect(),
            markers: true,
            ..Default::default()
        })
        .collect()
}

/// A layer × module grid of `value` (None where a matrix is not adapted or undefined).
fn grid(
    analyzed: &[Analyzed],
    value: impl Fn(&Analyzed) -> Option<f64>,
) -> (Vec<String>, Vec<Vec<Option<f64>>>) {
    let modules = modules(analyzed);
    let layers = analyzed
        .iter()
        .filter_map(|a| a.matrix.layer)
        .max()
        .map_or(0, |l| l + 1);
    let mut values = vec![vec![None; layers]; modules.len()];
    for a in analyzed {
        if let (Some(l), Some(m)) = (
            a.matrix.layer,
            modules.iter().position(|m| *m == a.matrix.module),
        ) {
            values[m][l] = value(a);
        }
    }
    (modules, values)
}

/// The heatmaps number layers from 1; the CSVs and `--matrix` from 0.
const LAYER_DESC: &str = "layer (from 1; the CSVs count from 0)";

/// What a heatmap shows of one matrix.
type CellValue = fn(&Analyzed) -> Option<f64>;

/// The per-run figures, into `dir`; returns the files written.
pub fn run_figures(analyzed: &[Analyzed], title: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for module in modules(analyzed) {
        let series = spectra_of(analyzed, &module);
        if series.is_empty() {
            continue;
        }
        let t = format!("{title}\nsingular values of ΔW · {module}");
        let plot = LinePlot {
            title: &t,
            x_desc: "index i",
            y_desc: "σ_i",
            series: &series,
            integer_x: true,
            ..Default::default()
        };
        files.extend(save(&plot, &dir.join(format!("spectra_{module}.png")))?);
    }
    // (file, colour bar, title line, value)
    let heatmaps: [(&str, &str, &str, CellValue); 2] = [
        (
            "effective_rank",
            "effective rank",
            "entropy effective rank of ΔW (-: rank 0 or not adapted)",
            |a| a.summary().effective_rank,
        ),
        ("rank", "rank", "adapter rank (-: not adapted)", |a| {
            Some(a.matrix.rank as f64)
        }),
    ];
    for (file, what, line, value) in heatmaps {
        let (modules, values) = grid(analyzed, value);
        // The paper's short names (W_q, W_f1, …) fit beside the grid; the CSVs keep the keys.
        let modules: Vec<String> = modules.iter().map(|m| paper_name(m).to_string()).collect();
        if values.first().is_none_or(Vec::is_empty) {
            continue;
        }
        let t = format!("{title}\n{line}");
        let fig = RankHeatmap {
            modules: &modules,
            values: &values,
            title: &t,
            vmax: None,
            x_desc: Some(LAYER_DESC),
            bar_desc: Some(what),
        };
        files.extend(save(&fig, &dir.join(format!("{file}.png")))?);
    }
    Ok(files)
}

/// φ(i, j) of one matrix and side as a grid: rows i (top: i = 1), columns j.
pub fn phi_figure(
    cells: &[PhiCell],
    side: Side,
    title: &str,
    path: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let cells: Vec<&PhiCell> = cells.iter().filter(|c| c.side == side).collect();
    let (ri, rj) = cells
        .iter()
        .fold((0, 0), |(a, b), c| (a.max(c.i), b.max(c.j)));
    if ri == 0 {
        return Ok(Vec::new());
    }
    let rows: Vec<String> = (1..=ri).map(|i| format!("i={i}")).collect();
    let mut values = vec![vec![None; rj]; ri];
    for c in cells {
        values[c.i - 1][c.j - 1] = Some(c.phi);
    }
    let fig = RankHeatmap {
        modules: &rows,
        values: &values,
        title,
        vmax: Some(1.0),
        x_desc: Some("j"),
        bar_desc: Some("φ(i, j)"),
    };
    Ok(save(&fig, path)?)
}
