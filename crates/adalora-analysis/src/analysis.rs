//! The per-matrix numbers: spectrum and its summaries (§1 of `adalora analyze`), amplification
//! (LoRA paper §7.3) and subspace similarity between two adapters (§7.2). Undefined values
//! (a matrix AdaLoRA pruned to rank 0) are `None`, written as "n/a", never NaN.

use anyhow::bail;
use ndarray::Array2;

use crate::linalg::{
    effective_rank, energy_top, frobenius, phi, projected_norm, random_orthonormal, stable_rank,
    Svd,
};
use crate::load::Matrix;

/// The k of the `energy_top<k>` columns.
pub const ENERGY_KS: [usize; 4] = [1, 2, 4, 8];

/// One matrix's ΔW, its SVD and W0.
pub struct Analyzed {
    pub matrix: Matrix,
    pub svd: Svd,
}

impl Analyzed {
    pub fn new(matrix: Matrix) -> anyhow::Result<Self> {
        let svd = Svd::of(matrix.delta.view(), matrix.rank)?;
        Ok(Analyzed { matrix, svd })
    }

    pub fn singular_values(&self) -> &[f64] {
        self.svd.s.as_slice().expect("a fresh Array1 is contiguous")
    }

    pub fn summary(&self) -> Summary {
        let s = self.singular_values();
        Summary {
            rank: self.matrix.rank,
            stable_rank: stable_rank(s),
            effective_rank: effective_rank(s),
            energy: ENERGY_KS.map(|k| energy_top(s, k)),
            rel_norm: frobenius(self.matrix.delta.view()) / frobenius(self.matrix.w0.view()),
        }
    }

    /// Amplification of W0 by ΔW over its r = rank top directions; `seed` draws the random
    /// directions.
    pub fn amplification(&self, seed: u64) -> anyhow::Result<Option<Amplification>> {
        let r = self.svd.s.len();
        if r == 0 {
            return Ok(None);
        }
        let w0 = self.matrix.w0.view();
        let (m, n) = w0.dim();
        let own = Svd::of(w0, r)?;
        let delta_norm = frobenius(self.matrix.delta.view());
        let along_delta = projected_norm(w0, self.svd.u.view(), self.svd.v().view());
        let ru = random_orthonormal(m, r, seed)?;
        let rv = random_orthonormal(n, r, seed.wrapping_add(1))?;
        Ok(Some(Amplification {
            r,
            delta_norm,
            w0_norm: frobenius(w0),
            along_delta,
            along_w0: projected_norm(w0, own.u.view(), own.v().view()),
            along_random: projected_norm(w0, ru.view(), rv.view()),
            factor: delta_norm / along_delta,
        }))
    }
}

/// A row of `summary.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub rank: usize,
    pub stable_rank: Option<f64>,
    pub effective_rank: Option<f64>,
    /// Energy share of the top k for k in [`ENERGY_KS`].
    pub energy: [Option<f64>; 4],
    /// ‖ΔW‖_F / ‖W0‖_F.
    pub rel_norm: f64,
}

/// A row of `amplification.csv`: ‖Uᵀ W0 V‖_F for ΔW's, W0's own and random top-r directions.
#[derive(Debug, Clone, PartialEq)]
pub struct Amplification {
    pub r: usize,
    pub delta_norm: f64,
    pub w0_norm: f64,
    pub along_delta: f64,
    pub along_w0: f64,
    pub along_random: f64,
    /// ‖ΔW‖_F / ‖Uᵀ W0 V‖_F with U, V from ΔW.
    pub factor: f64,
}

/// Which singular vectors φ compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Left, Side::Right];

    pub fn name(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }

    fn vectors(self, svd: &Svd) -> Array2<f64> {
        match self {
            Side::Left => svd.u.clone(),
            Side::Right => svd.v(),
        }
    }
}

/// φ(i, j) of one matrix in two adapters, for i ≤ rank of `a`, j ≤ rank of `b`.
#[derive(Debug, Clone, PartialEq)]
pub struct PhiCell {
    pub side: Side,
    pub i: usize,
    pub j: usize,
    pub phi: f64,
    /// φ of seeded random orthonormal subspaces of the same sizes.
    pub random: f64,
}

/// The φ grid of both sides; empty when either adapter has rank 0 there (φ undefined).
/// `seed` draws the random baseline. Shapes must agree.
pub fn similarity(a: &Analyzed, b: &Analyzed, seed: u64) -> anyhow::Result<Vec<PhiCell>> {
    if a.matrix.delta.dim() != b.matrix.delta.dim() {
        bail!(
            "{}: ΔW is {:?} in one adapter and {:?} in the other",
            a.matrix.path,
            a.matrix.delta.dim(),
            b.matrix.delta.dim()
        );
    }
    let (ra, rb) = (a.svd.s.len(), b.svd.s.len());
    let mut cells = Vec::new();
    for (k, side) in Side::BOTH.into_iter().enumerate() {
        let (u, v) = (side.vectors(&a.svd), side.vectors(&b.svd));
        let n = u.nrows();
        let ru = random_orthonormal(n, ra, seed.wrapping_add(2 * k as u64))?;
        let rv = random_orthonormal(n, rb, seed.wrapping_add(2 * k as u64 + 1))?;
        for i in 1..=ra {
            for j in 1..=rb {
                cells.push(PhiCell {
                    side,
                    i,
                    j,
                    phi: phi(u.view(), v.view(), i, j).expect("i, j within both ranks"),
                    random: phi(ru.view(), rv.view(), i, j).expect("i, j within both ranks"),
                });
            }
        }
    }
    Ok(cells)
}
