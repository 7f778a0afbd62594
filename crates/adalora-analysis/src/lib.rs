//! Weight-space analyses of trained adapters, after the LoRA paper's §7: the spectrum of each
//! ΔW (stable and effective rank, top-k energy, size relative to W0), subspace similarity φ
//! between two adapters' singular vectors, and how much ΔW amplifies directions of W0.
//! Linear algebra on `ndarray` + `ndarray-linalg` (LAPACK via the system OpenBLAS).

pub mod analysis;
pub mod figures;
pub mod linalg;
pub mod load;
pub mod output;
pub mod sweep;

use std::path::{Path, PathBuf};

use adalora_train::ops::Source;

pub use analysis::{Analyzed, Side};
pub use load::{load_matrices, Matrix};

/// Load and decompose every adapted matrix of `src`.
pub fn analyze_source(src: &Source) -> anyhow::Result<Vec<Analyzed>> {
    adalora_train::init::single_threaded_blas();
    load_matrices(src)?.into_iter().map(Analyzed::new).collect()
}

/// The matrix `--matrix` names (`layer.module`, e.g. `0.query`), or the first query matrix,
/// or the first matrix.
pub fn choose_matrix(analyzed: &[Analyzed], name: Option<&str>) -> anyhow::Result<usize> {
    match name {
        Some(n) => analyzed
            .iter()
            .position(|a| a.matrix.name() == n)
            .ok_or_else(|| {
                let names: Vec<String> = analyzed.iter().map(|a| a.matrix.name()).collect();
                anyhow::anyhow!("no adapted matrix {n:?} (there are: {})", names.join(", "))
            }),
        None => Ok(analyzed
            .iter()
            .position(|a| a.matrix.module == "query")
            .unwrap_or(0)),
    }
}

/// Everything for one adapter, and with `against` the similarity to another: CSVs and
/// figures into `dir`. Returns the files written.
pub fn write_analysis(
    analyzed: &[Analyzed],
    against: Option<&[Analyzed]>,
    matrix: Option<&str>,
    seed: u64,
    title: &str,
    dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = output::write_run(analyzed, seed, dir)?;
    files.extend(figures::run_figures(analyzed, title, dir)?);
    if let Some(other) = against {
        let pairs = output::pair(analyzed, other)?;
        let path = dir.join(output::SIMILARITY);
        let grids = output::write_similarity(&pairs, seed, &path)?;
        files.push(path);
        let k = choose_matrix(analyzed, matrix)?;
        let name = analyzed[k].matrix.name();
        for side in Side::BOTH {
            let t = format!(
                "{title}\nφ(i, j) of {name}, {} singular vectors",
                side.name()
            );
            let fig = dir.join(format!("similarity_{name}_{}.png", side.name()));
            files.extend(figures::phi_figure(&grids[k], side, &t, &fig)?);
        }
    }
    Ok(files)
}
