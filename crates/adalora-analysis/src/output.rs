//! The CSV files of `analysis/`. Undefined numbers are written "n/a".

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::analysis::{similarity, Analyzed, PhiCell, ENERGY_KS};

pub const SPECTRA: &str = "spectra.csv";
pub const SUMMARY: &str = "summary.csv";
pub const AMPLIFICATION: &str = "amplification.csv";
pub const SIMILARITY: &str = "similarity.csv";

/// A number, or "n/a" where it is undefined.
pub(crate) fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x}"))
}

fn layer_cell(a: &Analyzed) -> String {
    a.matrix.layer.map_or_else(String::new, |l| l.to_string())
}

/// `spectra.csv`: one row per singular value (none for a rank-0 matrix).
pub fn write_spectra(analyzed: &[Analyzed], path: &Path) -> anyhow::Result<()> {
    let mut w = adalora_fs::csv_writer();
    w.write_record(["layer", "module", "index", "singular_value"])?;
    for a in analyzed {
        for (i, s) in a.singular_values().iter().enumerate() {
            w.write_record([
                layer_cell(a),
                a.matrix.module.clone(),
                (i + 1).to_string(),
                s.to_string(),
            ])?;
        }
    }
    Ok(adalora_fs::finish_csv(path, w)?)
}

/// `summary.csv`: rank, stable and effective rank, top-k energy, ‖ΔW‖_F/‖W0‖_F per matrix.
pub fn write_summary(analyzed: &[Analyzed], path: &Path) -> anyhow::Result<()> {
    let mut w = adalora_fs::csv_writer();
    let mut header = vec!["layer".to_string(), "module".into(), "rank".into()];
    header.extend(["stable_rank".into(), "effective_rank".into()]);
    header.extend(ENERGY_KS.map(|k| format!("energy_top{k}")));
    header.push("rel_norm".into());
    w.write_record(&header)?;
    for a in analyzed {
        let s = a.summary();
        let mut row = vec![layer_cell(a), a.matrix.module.clone(), s.rank.to_string()];
        row.extend([cell(s.stable_rank), cell(s.effective_rank)]);
        row.extend(s.energy.map(cell));
        row.push(s.rel_norm.to_string());
        w.write_record(&row)?;
    }
    Ok(adalora_fs::finish_csv(path, w)?)
}

/// `amplification.csv` (LoRA paper Table 7); a rank-0 matrix gets a row of "n/a".
pub fn write_amplification(analyzed: &[Analyzed], seed: u64, path: &Path) -> anyhow::Result<()> {
    let mut w = adalora_fs::csv_writer();
    w.write_record([
        "layer",
        "module",
        "r",
        "delta_norm",
        "w0_norm",
        "w0_along_delta",
        "w0_along_w0",
        "w0_along_random",
        "factor",
    ])?;
    for (k, a) in analyzed.iter().enumerate() {
        let amp = a.amplification(seed.wrapping_add(1000 * k as u64))?;
        let mut row = vec![layer_cell(a), a.matrix.module.clone()];
        match amp {
            Some(x) => row.extend(
                [
                    x.r as f64,
                    x.delta_norm,
                    x.w0_norm,
                    x.along_delta,
                    x.along_w0,
                    x.along_random,
                    x.factor,
                ]
                .map(|v| v.to_string()),
            ),
            None => row.extend(
                ["0".to_string()]
                    .into_iter()
                    .chain(std::iter::repeat_n("n/a".to_string(), 6)),
            ),
        }
        w.write_record(&row)?;
    }
    Ok(adalora_fs::finish_csv(path, w)?)
}

/// Pair the matrices of two adapters by module path; both must adapt the same matrices of
/// the same base model (W0 equal), else an error naming the first difference.
pub fn pair<'a>(
    a: &'a [Analyzed],
    b: &'a [Analyzed],
) -> anyhow::Result<Vec<(&'a Analyzed, &'a Analyzed)>> {
    let paths = |x: &[Analyzed]| x.iter().map(|m| m.matrix.path.clone()).collect::<Vec<_>>();
    if paths(a) != paths(b) {
        let (pa, pb) = (paths(a), paths(b));
        let only_a: Vec<&String> = pa.iter().filter(|p| !pb.contains(p)).collect();
        let only_b: Vec<&String> = pb.iter().filter(|p| !pa.contains(p)).collect();
        bail!("the two adapters adapt different matrices: only in the first {only_a:?}, only in the second {only_b:?}");
    }
    for (x, y) in a.iter().zip(b) {
        if x.matrix.w0 != y.matrix.w0 {
            bail!(
                "{}: the base weights W0 differ: the two adapters are over different models",
                x.matrix.path
            );
        }
    }
    Ok(a.iter().zip(b).collect())
}

/// `similarity.csv`: φ(i, j) per matrix and side with the random baseline; a matrix with
/// rank 0 in either adapter gets one row per side with φ "n/a". Returns the grids.
pub fn write_similarity(
    pairs: &[(&Analyzed, &Analyzed)],
    seed: u64,
    path: &Path,
) -> anyhow::Result<Vec<Vec<PhiCell>>> {
    let mut w = adalora_fs::csv_writer();
    w.write_record([
        "layer",
        "module",
        "side",
        "i",
        "j",
        "phi",
        "random_baseline",
    ])?;
    let mut grids = Vec::new();
    for (k, (a, b)) in pairs.iter().enumerate() {
        let cells = similarity(a, b, seed.wrapping_add(1000 * k as u64))?;
        let head = [layer_cell(a), a.matrix.module.clone()];
        if cells.is_empty() {
            for side in crate::analysis::Side::BOTH {
                w.write_record(head.iter().cloned().chain([
                    side.name().into(),
                    String::new(),
                    String::new(),
                    "n/a".into(),
                    "n/a".into(),
                ]))?;
            }
        }
        for c in &cells {
            w.write_record(head.iter().cloned().chain([
                c.side.name().into(),
                c.i.to_string(),
                c.j.to_string(),
                c.phi.to_string(),
                c.random.to_string(),
            ]))?;
        }
        grids.push(cells);
    }
    adalora_fs::finish_csv(path, w)?;
    Ok(grids)
}

/// Write the per-run CSVs into `dir`; returns their paths.
pub fn write_run(analyzed: &[Analyzed], seed: u64, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = [SPECTRA, SUMMARY, AMPLIFICATION].map(|f| dir.join(f));
    write_spectra(analyzed, &files[0])?;
    write_summary(analyzed, &files[1])?;
    write_amplification(analyzed, seed, &files[2])?;
    Ok(files.to_vec())
}
