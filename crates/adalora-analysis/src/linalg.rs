//! The linear algebra of the analyses, on `ndarray` + `ndarray-linalg` (LAPACK), in f64.
//! Matrices are in PyTorch layout `[d_out, d_in]`: left singular vectors live in the output
//! space, right ones in the input space (the LoRA paper's U and V).

use anyhow::Context;
use ndarray::{s, Array1, Array2, ArrayView2};
use ndarray_linalg::{JobSvd, QR, SVDDC};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A thin SVD truncated to the matrix's rank: `u` `[m, k]`, `s` (descending), `vt` `[k, n]`.
#[derive(Debug, Clone)]
pub struct Svd {
    pub u: Array2<f64>,
    pub s: Array1<f64>,
    pub vt: Array2<f64>,
}

impl Svd {
    /// Thin SVD of `m`, keeping the first `rank` triplets (the update's rank: the rest are
    /// rounding noise of an exactly rank-`rank` product).
    pub fn of(m: ArrayView2<f64>, rank: usize) -> anyhow::Result<Svd> {
        let (rows, cols) = m.dim();
        let k = rank.min(rows).min(cols);
        if k == 0 {
            return Ok(Svd {
                u: Array2::zeros((rows, 0)),
                s: Array1::zeros(0),
                vt: Array2::zeros((0, cols)),
            });
        }
        let (u, s, vt) = m
            .to_owned()
            .svddc(JobSvd::Some)
            .with_context(|| format!("SVD of a {rows}×{cols} matrix"))?;
        let (u, vt) = (u.context("SVD gave no U")?, vt.context("SVD gave no Vᵀ")?);
        Ok(Svd {
            u: u.slice(s![.., ..k]).to_owned(),
            s: s.slice(s![..k]).to_owned(),
            vt: vt.slice(s![..k, ..]).to_owned(),
        })
    }

    /// The right singular vectors as columns `[n, k]`.
    pub fn v(&self) -> Array2<f64> {
        self.vt.t().to_owned()
    }
}

/// Frobenius norm.
pub fn frobenius(m: ArrayView2<f64>) -> f64 {
    m.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Stable rank ‖M‖²_F / ‖M‖²₂ from the singular values; `None` for a zero spectrum.
pub fn stable_rank(s: &[f64]) -> Option<f64> {
    let top = *s.first().filter(|&&t| t > 0.0)?;
    Some(s.iter().map(|x| x * x).sum::<f64>() / (top * top))
}

/// Roy & Vetterli's effective rank: exp of the Shannon entropy of p_i = σ_i / Σσ.
pub fn effective_rank(s: &[f64]) -> Option<f64> {
    let total: f64 = s.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let entropy: f64 = s
        .iter()
        .map(|x| x / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    Some(entropy.exp())
}

/// Share of the energy Σσ² in the top `k` singular values (1 when `k` ≥ the rank).
pub fn energy_top(s: &[f64], k: usize) -> Option<f64> {
    let total: f64 = s.iter().map(|x| x * x).sum();
    (total > 0.0).then(|| s.iter().take(k).map(|x| x * x).sum::<f64>() / total)
}

/// The LoRA paper's subspace similarity φ(i, j) = ‖U_iᵀ V_j‖²_F / min(i, j) of the first `i`
/// columns of `u` and the first `j` of `v` (both orthonormal). `None` when either is empty.
pub fn phi(u: ArrayView2<f64>, v: ArrayView2<f64>, i: usize, j: usize) -> Option<f64> {
    let k = i.min(j);
    if k == 0 || i > u.ncols() || j > v.ncols() {
        return None;
    }
    let m = u.slice(s![.., ..i]).t().dot(&v.slice(s![.., ..j]));
    Some(m.iter().map(|x| x * x).sum::<f64>() / k as f64)
}

/// A seeded random `n × k` matrix with orthonormal columns: the Q of a Gaussian matrix's QR,
/// a uniformly (Haar) distributed subspace.
pub fn random_orthonormal(n: usize, k: usize, seed: u64) -> anyhow::Result<Array2<f64>> {
    if k == 0 {
        return Ok(Array2::zeros((n, 0)));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g = Array2::from_shape_simple_fn((n, k), || gaussian(&mut rng));
    let (q, _) = g.qr().with_context(|| format!("QR of a {n}×{k} matrix"))?;
    Ok(q.slice(s![.., ..k]).to_owned())
}

/// A standard normal draw (Box–Muller; rand 0.9 has no normal distribution of its own).
fn gaussian(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// ‖Uᵀ W V‖_F: how much of `w` lies in the subspaces spanned by `u` `[m, r]` and `v` `[n, r]`
/// (LoRA paper §7.3).
pub fn projected_norm(w: ArrayView2<f64>, u: ArrayView2<f64>, v: ArrayView2<f64>) -> f64 {
    frobenius(u.t().dot(&w).dot(&v).view())
}
