//! `adalora analyze SWEEP`: the per-run analysis of every finished LoRA/AdaLoRA run of a sweep
//! into `SWEEP/analysis/<run>/`, and how stable the result is across seeds:
//! `SWEEP/analysis/stability.csv` and `stability.md`.
//!
//! A cell is a set of runs with the same settings except the seed: the report's table row
//! (method @ budget plus the varying settings), task and learning rate. Per pair of seeds of a
//! cell: the Spearman correlation of the per-matrix final ranks, the Jaccard overlap of the
//! matrices that kept at least one triplet, and the mean φ(k, k) of the left singular vectors
//! for k = 1 and 4 — and the same between a LoRA and an AdaLoRA cell of one task, for runs of
//! the same seed at equal final budget (total rank).

use std::path::{Path, PathBuf};

use adalora_study::report::{write_report, Entry, Format, Study, ANALYSIS_SECTION};
use adalora_study::SweepDir;
use adalora_train::ops::Source;
use adalora_train::Method;
use anyhow::{bail, Context};
use ndarray::Array2;

use crate::linalg::phi;
use crate::output::cell;
use crate::{analyze_source, write_analysis};

pub const STABILITY_CSV: &str = "stability.csv";

/// The φ(k, k) the stability table reports.
pub const PHI_KS: [usize; 2] = [1, 4];

/// What stability needs of one matrix of a run (its W0 and ΔW are dropped: a sweep's runs
/// would not fit in memory at once).
struct Kept {
    path: String,
    rank: usize,
    /// Left singular vectors of ΔW, `[d_out, rank]`.
    u: Array2<f64>,
}

/// One analysed run of the sweep.
struct RunSubspaces {
    cell: String,
    task: String,
    method: Method,
    seed: u64,
    budget: Option<usize>,
    matrices: Vec<Kept>,
}

/// The stability numbers of one pair of runs (None: undefined, e.g. constant LoRA ranks
/// have no rank correlation, φ(4, 4) needs rank ≥ 4 in both).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairStats {
    pub spearman: Option<f64>,
    pub jaccard: Option<f64>,
    pub phi: [Option<f64>; 2],
}

/// A row of `stability.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct StabilityRow {
    /// `seeds` (pairs of seeds of one cell) or `lora-vs-adalora`.
    pub kind: &'static str,
    pub task: String,
    pub cell: String,
    /// The AdaLoRA cell of a `lora-vs-adalora` row; empty for `seeds`.
    pub other: String,
    pub pairs: usize,
    /// Means over the pairs where each is defined.
    pub mean: PairStats,
}

/// What `analyze_sweep` wrote.
pub struct SweepAnalysis {
    pub runs: Vec<PathBuf>,
    pub rows: Vec<StabilityRow>,
    pub files: Vec<PathBuf>,
}

/// Analyse every finished adapter run of `sweep` into `sweep/analysis/`; `seed` draws the
/// random baselines. A folder without a manifest, or with no finished adapter run, is an error.
pub fn analyze_sweep(sweep: &Path, seed: u64) -> anyhow::Result<SweepAnalysis> {
    let dir = SweepDir::new(sweep);
    if !dir.exists() {
        bail!(
            "{} is not a sweep folder (no manifest.json)",
            sweep.display()
        );
    }
    let study = Study::read(&dir)?;
    let entries: Vec<&Entry> = study
        .entries
        .iter()
        .filter(|e| matches!(e.run.config.method, Method::Lora | Method::AdaLora))
        .collect();
    if entries.is_empty() {
        bail!(
            "{}: no finished LoRA or AdaLoRA run to analyse ({} finished runs, {} unfinished)",
            sweep.display(),
            study.entries.len(),
            study.unfinished
        );
    }
    let out = sweep.join("analysis");
    let mut runs = Vec::new();
    let mut analysed = Vec::new();
    for e in entries {
        let (run_dir, subspaces) = analyze_entry(e, seed, &out)?;
        runs.push(run_dir);
        analysed.push(subspaces);
    }
    let rows = stability_rows(&analysed);
    let mut files = write_stability(&rows, &study.name, sweep)?;
    // report.md includes stability.md as a section: rewrite it now.
    write_report(&dir, &study, Format::Markdown)?;
    files.push(dir.root.join("report.md"));
    Ok(SweepAnalysis { runs, rows, files })
}

/// The cell of a run: its table row, task and learning rate (every setting but the seed).
fn cell_of(e: &Entry) -> String {
    format!("{} · lr {:e}", e.group, e.run.config.lr())
}

/// One run's analysis into `out/<run name>/`; returns that folder and what stability needs.
fn analyze_entry(e: &Entry, seed: u64, out: &Path) -> anyhow::Result<(PathBuf, RunSubspaces)> {
    let name = e
        .run
        .dir
        .file_name()
        .map_or_else(|| e.row.label.clone(), |n| n.to_string_lossy().into_owned());
    // The analysis is host-side linear algebra: a GPU run is read on the CPU.
    let src = Source::from_run(&e.run.dir, false, None, &["device=\"cpu\"".to_string()])?;
    let analyzed =
        analyze_source(&src).with_context(|| format!("analysing {}", e.run.dir.display()))?;
    let title = format!(
        "{} · {} · seed {}",
        e.run.summary.task, e.group, e.run.config.seed
    );
    let dir = out.join(&name);
    write_analysis(&analyzed, None, None, seed, &title, &dir)?;
    let matrices = analyzed
        .into_iter()
        .map(|a| Kept {
            path: a.matrix.path,
            rank: a.matrix.rank,
            u: a.svd.u,
        })
        .collect();
    let subspaces = RunSubspaces {
        cell: cell_of(e),
        task: e.run.summary.task.clone(),
        method: e.run.config.method,
        seed: e.run.config.seed,
        budget: e.run.summary.final_total_rank,
        matrices,
    };
    Ok((dir, subspaces))
}

/// The stability of two runs over the matrices both adapt.
fn pair_stats(a: &RunSubspaces, b: &RunSubspaces) -> PairStats {
    let common: Vec<(&Kept, &Kept)> = a
        .matrices
        .iter()
        .filter_map(|x| b.matrices.iter().find(|y| y.path == x.path).map(|y| (x, y)))
        .collect();
    let ranks = |pick: fn(&(&Kept, &Kept)) -> usize| -> Vec<f64> {
        common.iter().map(|p| pick(p) as f64).collect()
    };
    let phi_at = |k: usize| {
        let values: Vec<f64> = common
            .iter()
            .filter_map(|(x, y)| phi(x.u.view(), y.u.view(), k, k))
            .collect();
        mean(&values)
    };
    PairStats {
        spearman: spearman(&ranks(|p| p.0.rank), &ranks(|p| p.1.rank)),
        jaccard: jaccard(common.iter().map(|(x, y)| (x.rank > 0, y.rank > 0))),
        phi: PHI_KS.map(phi_at),
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Ranks 1..n with ties at their average rank (Spearman's convention).
fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
    let mut ranks = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && x[order[end]] == x[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) share the mean of ranks start+1..=end.
        let shared = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = shared;
        }
        start = end;
    }
    ranks
}

/// Spearman's ρ: Pearson's correlation of the average ranks; None for fewer than two values
/// or a constant side (LoRA's equal ranks).
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let var = |r: &[f64], m: f64| r.iter().map(|x| (x - m) * (x - m)).sum::<f64>();
    let denom = (var(&ra, ma) * var(&rb, mb)).sqrt();
    (denom > 0.0).then(|| cov / denom)
}

/// |A ∩ B| / |A ∪ B| of two sets given as membership pairs; None when both are empty.
pub fn jaccard(members: impl Iterator<Item = (bool, bool)>) -> Option<f64> {
    let (both, either) = members.fold((0usize, 0usize), |(b, e), (x, y)| {
        (b + usize::from(x && y), e + usize::from(x || y))
    });
    (either > 0).then(|| both as f64 / either as f64)
}

/// Means over pairs, each number over the pairs where it is defined.
fn mean_stats(pairs: &[PairStats]) -> PairStats {
    let over = |pick: &dyn Fn(&PairStats) -> Option<f64>| {
        mean(&pairs.iter().filter_map(pick).collect::<Vec<_>>())
    };
    PairStats {
        spearman: over(&|p| p.spearman),
        jaccard: over(&|p| p.jaccard),
        phi: [over(&|p| p.phi[0]), over(&|p| p.phi[1])],
    }
}

/// Cells in first-appearance order, with their runs.
fn cells(runs: &[RunSubspaces]) -> Vec<(&str, Vec<&RunSubspaces>)> {
    let mut out: Vec<(&str, Vec<&RunSubspaces>)> = Vec::new();
    for r in runs {
        match out.iter_mut().find(|(c, _)| *c == r.cell) {
            Some((_, v)) => v.push(r),
            None => out.push((&r.cell, vec![r])),
        }
    }
    out
}

/// Seed pairs within each cell, then LoRA × AdaLoRA cells of one task at equal budget.
fn stability_rows(runs: &[RunSubspaces]) -> Vec<StabilityRow> {
    let cells = cells(runs);
    let mut rows: Vec<StabilityRow> = cells.iter().map(|(c, r)| seed_row(c, r)).collect();
    for (lc, lruns) in cells.iter().filter(|(_, r)| r[0].method == Method::Lora) {
        for (ac, aruns) in cells.iter().filter(|(_, r)| r[0].method == Method::AdaLora) {
            if let Some(row) = cross_row(lc, lruns, ac, aruns) {
                rows.push(row);
            }
        }
    }
    rows
}

fn seed_row(cell: &str, runs: &[&RunSubspaces]) -> StabilityRow {
    let mut pairs = Vec::new();
    for (i, a) in runs.iter().enumerate() {
        for b in runs.iter().skip(i + 1).filter(|b| b.seed != a.seed) {
            pairs.push(pair_stats(a, b));
        }
    }
    StabilityRow {
        kind: "seeds",
        task: runs[0].task.clone(),
        cell: cell.to_string(),
        other: String::new(),
        pairs: pairs.len(),
        mean: mean_stats(&pairs),
    }
}

/// A LoRA and an AdaLoRA cell of one task: runs of the same seed at the same final total
/// rank. None when they share no such pair.
fn cross_row(
    lora: &str,
    lruns: &[&RunSubspaces],
    adalora: &str,
    aruns: &[&RunSubspaces],
) -> Option<StabilityRow> {
    let mut pairs = Vec::new();
    for l in lruns {
        for a in aruns {
            if l.task == a.task && l.seed == a.seed && l.budget.is_some() && l.budget == a.budget {
                pairs.push(pair_stats(l, a));
            }
        }
    }
    (!pairs.is_empty()).then(|| StabilityRow {
        kind: "lora-vs-adalora",
        task: lruns[0].task.clone(),
        cell: lora.to_string(),
        other: adalora.to_string(),
        pairs: pairs.len(),
        mean: mean_stats(&pairs),
    })
}

/// `stability.csv` and `stability.md` into `sweep/analysis/`.
fn write_stability(
    rows: &[StabilityRow],
    name: &str,
    sweep: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let csv_path = sweep.join("analysis").join(STABILITY_CSV);
    let mut w = csv::Writer::from_path(&csv_path)
        .with_context(|| format!("creating {}", csv_path.display()))?;
    w.write_record([
        "kind",
        "task",
        "cell",
        "other_cell",
        "pairs",
        "spearman_rank",
        "jaccard_kept",
        "phi_1",
        "phi_4",
    ])?;
    for r in rows {
        w.write_record(
            [
                r.kind.to_string(),
                r.task.clone(),
                r.cell.clone(),
                r.other.clone(),
            ]
            .into_iter()
            .chain([r.pairs.to_string()])
            .chain(numbers(&r.mean)),
        )?;
    }
    w.flush()?;
    let md_path = sweep.join(ANALYSIS_SECTION);
    std::fs::write(&md_path, markdown(rows, name))
        .with_context(|| format!("writing {}", md_path.display()))?;
    Ok(vec![csv_path, md_path])
}

fn numbers(s: &PairStats) -> [String; 4] {
    [
        cell(s.spearman),
        cell(s.jaccard),
        cell(s.phi[0]),
        cell(s.phi[1]),
    ]
}

/// `stability.md`: the table of `stability.csv` with what each column means.
pub fn markdown(rows: &[StabilityRow], name: &str) -> String {
    let mut md = format!(
        "## Stability of the adapters across seeds ({name})\n\n\
         Written by `adalora analyze`. Per cell (same settings except the seed), the mean over \
         pairs of seeds of: Spearman ρ of the per-matrix final ranks, Jaccard overlap of the \
         matrices that kept ≥ 1 triplet, and the mean over matrices of φ(k, k) between the \
         top-k left singular vectors of the two ΔW (LoRA paper §7.2; 1 = same subspace). \
         `lora-vs-adalora` rows pair a LoRA and an AdaLoRA run of the same task and seed at \
         equal final total rank. n/a: undefined (one seed, equal LoRA ranks, rank < k).\n\n\
         | comparison | task | cell | against | pairs | Spearman ρ | Jaccard | φ(1,1) | φ(4,4) |\n\
         |---|---|---|---|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        let [s, j, p1, p4] = numbers(&r.mean).map(|v| short(&v));
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {s} | {j} | {p1} | {p4} |\n",
            r.kind, r.task, r.cell, r.other, r.pairs
        ));
    }
    md
}

/// Three decimals for the table (the CSV keeps full precision).
fn short(v: &str) -> String {
    v.parse::<f64>()
        .map_or_else(|_| v.to_string(), |x| format!("{x:.3}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_uses_average_ranks_and_is_undefined_for_constant_ranks() {
        // scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]) = 0.9486832980505138
        let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((rho - 0.9486832980505138).abs() < 1e-12, "{rho}");
        assert_eq!(spearman(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(spearman(&[3.0, 2.0, 1.0], &[1.0, 2.0, 3.0]), Some(-1.0));
    }

    #[test]
    fn jaccard_of_kept_matrices() {
        let m = [(true, true), (true, false), (false, false), (false, true)];
        assert_eq!(jaccard(m.into_iter()), Some(1.0 / 3.0));
        assert_eq!(jaccard([(false, false)].into_iter()), None);
    }
}
