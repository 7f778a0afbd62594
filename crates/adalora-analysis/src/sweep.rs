//! `adalora analyze SWEEP`: the per-run analysis of every finished LoRA/AdaLoRA run of a sweep
//! into `SWEEP/analysis/<run>/`, and how stable the result is across seeds:
//! `SWEEP/analysis/stability.csv` and `stability.md`.
//!
//! A cell is a set of runs with the same settings except the seed: the report's table row
//! (method @ budget plus the varying settings), task and learning rate. Per pair of seeds of a
//! cell: the Spearman correlation of the per-matrix final ranks, the Jaccard overlap of the
//! matrices that kept at least one triplet, and the mean φ(k, k) of the left singular vectors
//! for k = 1 and 4 (left and right singular vectors) — and the same between a LoRA and an
//! AdaLoRA cell of one task, for runs of the same seed at equal final budget (total rank), and
//! between two cells of one method and task at different budgets (the LoRA paper's r = 8
//! against r = 64), again for runs of the same seed.

use std::path::{Path, PathBuf};

use adalora_study::report::{write_report, Entry, Format, Study, ANALYSIS_SECTION};
use adalora_study::SweepDir;
use adalora_train::config::DeviceKind;
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
    /// Right singular vectors of ΔW, `[d_in, rank]` (the input-side subspace: the row space of
    /// LoRA's A, which the LoRA paper's §7.2 compares).
    v: Array2<f64>,
}

/// One analysed run of the sweep.
struct RunSubspaces {
    cell: String,
    task: String,
    method: Method,
    seed: u64,
    lr: f64,
    budget: Option<usize>,
    matrices: Vec<Kept>,
}

/// The stability numbers of one pair of runs (None: undefined, e.g. constant LoRA ranks
/// have no rank correlation, φ(4, 4) needs rank ≥ 4 in both).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairStats {
    pub spearman: Option<f64>,
    pub jaccard: Option<f64>,
    /// Mean φ(k, k) over the common matrices for k in [`PHI_KS`], left singular vectors.
    pub phi: [Option<f64>; 2],
    /// The same for the right singular vectors.
    pub phi_right: [Option<f64>; 2],
}

/// A row of `stability.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct StabilityRow {
    /// `seeds` (pairs of seeds of one cell), `lora-vs-adalora` or `ranks` (one method at two
    /// budgets).
    pub kind: &'static str,
    pub task: String,
    pub cell: String,
    /// The second cell of a `lora-vs-adalora` or `ranks` row; empty for `seeds`.
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
    let src = Source::from_run(&e.run.dir, false, None, &[DeviceKind::Cpu.setting()])?;
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
            v: a.svd.vt.reversed_axes(),
        })
        .collect();
    let subspaces = RunSubspaces {
        cell: cell_of(e),
        task: e.run.summary.task.clone(),
        method: e.run.config.method,
        seed: e.run.config.seed,
        lr: e.run.config.lr(),
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
    let phi_at = |side: fn(&Kept) -> &Array2<f64>, k: usize| {
        let values: Vec<f64> = common
            .iter()
            .filter_map(|(x, y)| phi(side(x).view(), side(y).view(), k, k))
            .collect();
        mean(&values)
    };
    PairStats {
        spearman: spearman(&ranks(|p| p.0.rank), &ranks(|p| p.1.rank)),
        jaccard: jaccard(common.iter().map(|(x, y)| (x.rank > 0, y.rank > 0))),
        phi: PHI_KS.map(|k| phi_at(|m| &m.u, k)),
        phi_right: PHI_KS.map(|k| phi_at(|m| &m.v, k)),
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
        phi_right: [over(&|p| p.phi_right[0]), over(&|p| p.phi_right[1])],
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

/// Seed pairs within each cell, then LoRA × AdaLoRA cells of one task at equal budget, then
/// pairs of cells of one method and task at different budgets.
fn stability_rows(runs: &[RunSubspaces]) -> Vec<StabilityRow> {
    let cells = cells(runs);
    let mut rows: Vec<StabilityRow> = cells.iter().map(|(c, r)| seed_row(c, r)).collect();
    let equal_budget =
        |l: &RunSubspaces, a: &RunSubspaces| l.budget.is_some() && l.budget == a.budget;
    for lora in cells.iter().filter(|(_, r)| r[0].method == Method::Lora) {
        for ada in cells.iter().filter(|(_, r)| r[0].method == Method::AdaLora) {
            rows.extend(paired_row("lora-vs-adalora", lora, ada, equal_budget));
        }
    }
    // Same learning rate too: cells that also differ in it say nothing about the rank.
    let other_budget = |x: &RunSubspaces, y: &RunSubspaces| x.budget != y.budget && x.lr == y.lr;
    for (i, first) in cells.iter().enumerate() {
        for second in cells.iter().skip(i + 1) {
            if first.1[0].method == second.1[0].method {
                rows.extend(paired_row("ranks", first, second, other_budget));
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

/// Two cells compared run by run: the pairs of the same task and seed that `matches` accepts.
/// None when they share no such pair.
fn paired_row(
    kind: &'static str,
    (first, first_runs): &(&str, Vec<&RunSubspaces>),
    (second, second_runs): &(&str, Vec<&RunSubspaces>),
    matches: impl Fn(&RunSubspaces, &RunSubspaces) -> bool,
) -> Option<StabilityRow> {
    let mut pairs = Vec::new();
    for x in first_runs {
        for y in second_runs {
            if x.task == y.task && x.seed == y.seed && matches(x, y) {
                pairs.push(pair_stats(x, y));
            }
        }
    }
    (!pairs.is_empty()).then(|| StabilityRow {
        kind,
        task: first_runs[0].task.clone(),
        cell: first.to_string(),
        other: second.to_string(),
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
    let mut w = adalora_fs::csv_writer();
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
        "phi_1_right",
        "phi_4_right",
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
    adalora_fs::finish_csv(&csv_path, w)?;
    let md_path = sweep.join(ANALYSIS_SECTION);
    adalora_fs::write(&md_path, markdown(rows, name).as_bytes())?;
    Ok(vec![csv_path, md_path])
}

fn numbers(s: &PairStats) -> [String; 6] {
    [
        cell(s.spearman),
        cell(s.jaccard),
        cell(s.phi[0]),
        cell(s.phi[1]),
        cell(s.phi_right[0]),
        cell(s.phi_right[1]),
    ]
}

/// `stability.md`: the table of `stability.csv` with what each column means.
pub fn markdown(rows: &[StabilityRow], name: &str) -> String {
    let mut md = format!(
        "## Stability of the adapters across seeds ({name})\n\n\
         Written by `adalora analyze`. Per cell (same settings except the seed), the mean over \
         pairs of seeds of: Spearman ρ of the per-matrix final ranks, Jaccard overlap of the \
         matrices that kept ≥ 1 triplet, and the mean over matrices of φ(k, k) between the \
         top-k left (output-side) and right (input-side) singular vectors of the two ΔW (LoRA \
         paper §7.2; 1 = same subspace, a random pair of k-dimensional subspaces of ℝ^d gives \
         about k/d). `lora-vs-adalora` rows pair a LoRA and an AdaLoRA run of the same task and \
         seed at equal final total rank; `ranks` rows one method's runs of the same task and \
         seed at two budgets. n/a: undefined (one seed, equal LoRA ranks, rank < k).\n\n\
         | comparison | task | cell | against | pairs | Spearman ρ | Jaccard | φ(1,1) left | \
         φ(4,4) left | φ(1,1) right | φ(4,4) right |\n\
         |---|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        let [s, j, p1, p4, q1, q4] = numbers(&r.mean).map(|v| short(&v));
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {s} | {j} | {p1} | {p4} | {q1} | {q4} |\n",
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

    /// A run over one matrix whose ΔW spans the first `rank` axes (left and right).
    fn run(cell: &str, method: Method, seed: u64, rank: usize) -> RunSubspaces {
        let axes =
            |n: usize| Array2::from_shape_fn((n, rank), |(i, j)| f64::from(u8::from(i == j)));
        RunSubspaces {
            cell: cell.into(),
            task: "t".into(),
            method,
            seed,
            lr: 1e-3,
            budget: Some(rank),
            matrices: vec![Kept {
                path: "m".into(),
                rank,
                u: axes(6),
                v: axes(5),
            }],
        }
    }

    #[test]
    fn rows_pair_seeds_methods_at_equal_budget_and_ranks_of_one_method() {
        let runs = [
            run("LoRA r=2", Method::Lora, 1, 2),
            run("LoRA r=2", Method::Lora, 2, 2),
            run("LoRA r=4", Method::Lora, 1, 4),
            run("AdaLoRA 3→2", Method::AdaLora, 1, 2),
        ];
        let rows = stability_rows(&runs);
        let kinds: Vec<(&str, &str, &str, usize)> = rows
            .iter()
            .map(|r| (r.kind, r.cell.as_str(), r.other.as_str(), r.pairs))
            .collect();
        assert_eq!(
            kinds,
            [
                ("seeds", "LoRA r=2", "", 1),
                ("seeds", "LoRA r=4", "", 0),
                ("seeds", "AdaLoRA 3→2", "", 0),
                ("lora-vs-adalora", "LoRA r=2", "AdaLoRA 3→2", 1),
                ("ranks", "LoRA r=2", "LoRA r=4", 1),
            ]
        );
        // Nested subspaces: the top direction is shared on both sides; φ(4,4) needs rank 4.
        let ranks = &rows[4].mean;
        assert_eq!(ranks.phi, [Some(1.0), None]);
        assert_eq!(ranks.phi_right, [Some(1.0), None]);
    }

    #[test]
    fn jaccard_of_kept_matrices() {
        let m = [(true, true), (true, false), (false, false), (false, true)];
        assert_eq!(jaccard(m.into_iter()), Some(1.0 / 3.0));
        assert_eq!(jaccard([(false, false)].into_iter()), None);
    }
}
