//! Initialisations other than the default (`lora.init = "gaussian"`, PEFT's normal A with
//! std 1/r, and the ones from the pretrained weight: `lora.init = "pissa" | "olora"`,
//! `adalora.init = "svd"`): the SVD / QR of each adapted W0, on the host in f64 with LAPACK
//! (`ndarray-linalg` on the system OpenBLAS). It runs once, outside the training graph; the
//! factors go into the core's layers ([`adalora_core::LoraLinear::with_init_factors`],
//! [`adalora_core::SvdLinear::with_init_factors`]), which replace the frozen base by the
//! residual so that the model computes the same function at step 0.
//!
//! Formulas follow PEFT (`peft/tuners/lora/layer.py`, `pissa_init` / `olora_init`), in
//! PyTorch layout (W0 `[d_out, d_in]`, `lora_A [r, d_in]`, `lora_B [d_out, r]`):
//! - PiSSA: W0 = U·S·Vᵀ, `A = diag(√(S_r/s))·Vᵀ_r`, `B = U_r·diag(√(S_r/s))`;
//! - OLoRA: W0 = Q·R (reduced), `A = R[:r]`, `B = Q[:, :r]` (no division by s, as PEFT);
//! - AdaLoRA svd: `P = U_r`, `Q = Vᵀ_r`, `λ = S_r / s` with s = α/(init_r + 1e-5);
//!
//! and in every case the base becomes `W0 − s·B·A` (resp. `W0 − s·P·diag(λ)·Q`).
//! A model is rebuilt from W0 whenever it is needed (resume recomputes the same factors from the
//! same W0); only exported adapters carry the conversion back to W0 ([`crate::peft`]).

use adalora_core::{to_f32_vec, AdaLoraInit, AdaptedLinear, LoraInit, Method};
use adalora_model::SequenceClassifier;
use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ndarray::{s, Array1, Array2};
use ndarray_linalg::{JobSvd, QR, SVDDC};

use crate::config::RunConfig;

unsafe extern "C" {
    /// OpenBLAS's setter of its thread-pool size (the system library `ndarray-linalg` links).
    fn openblas_set_num_threads(num_threads: std::ffi::c_int);
}

/// Run the host linear algebra (here and in `adalora analyze`) on one OpenBLAS thread unless
/// `OPENBLAS_NUM_THREADS` says otherwise: these matrices (≤ 4096 per side) gain nothing from
/// OpenBLAS's pool, whose spinning threads made an analysis 7× slower on a loaded 2-core
/// machine (51.9 s against 7.2 s for one run of `experiments/analysis_rt.toml` next to a
/// sweep), and it would compete with the training's own threads.
pub fn single_threaded_blas() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("OPENBLAS_NUM_THREADS").is_none() {
            // SAFETY: a plain setter of the library's global thread count, called before any
            // other thread of ours uses BLAS (Once), with a valid count.
            unsafe { openblas_set_num_threads(1) }
        }
    });
}

/// Factors in PyTorch/PEFT layout: `a [r, d_in]`, `e [r]` (SVD adapters; empty for LoRA),
/// `b [d_out, r]`.
#[derive(Clone, Debug)]
pub struct Factors {
    pub a: Array2<f64>,
    pub e: Array1<f64>,
    pub b: Array2<f64>,
}

/// The top-`r` thin SVD of `w` (`[m, n]`): `(U_r [m, r], S_r [r], Vᵀ_r [r, n])`, singular
/// values descending (LAPACK `gesdd`, as `torch.linalg.svd` on CPU).
pub fn top_svd(
    w: &Array2<f64>,
    r: usize,
) -> anyhow::Result<(Array2<f64>, Array1<f64>, Array2<f64>)> {
    single_threaded_blas();
    let k = w.nrows().min(w.ncols());
    if r > k {
        bail!("rank {r} exceeds the matrix's {k} singular values");
    }
    let (u, s, vt) = w
        .svddc(JobSvd::Some)
        .context("SVD of the pretrained weight (LAPACK gesdd)")?;
    let (u, vt) = (u.context("SVD without U")?, vt.context("SVD without Vᵀ")?);
    Ok((
        u.slice(s![.., ..r]).to_owned(),
        s.slice(s![..r]).to_owned(),
        vt.slice(s![..r, ..]).to_owned(),
    ))
}

/// PiSSA factors of `w` (`[d_out, d_in]`) for rank `r` and scale `s`.
pub fn pissa(w: &Array2<f64>, r: usize, scaling: f64) -> anyhow::Result<Factors> {
    let (u, sv, vt) = top_svd(w, r)?;
    let root = sv.mapv(|x| (x / scaling).sqrt());
    let a = &vt * &root.view().insert_axis(ndarray::Axis(1));
    let b = &u * &root.view().insert_axis(ndarray::Axis(0));
    Ok(Factors {
        a,
        e: Array1::zeros(0),
        b,
    })
}

/// OLoRA factors of `w` (`[d_out, d_in]`) for rank `r` (PEFT does not divide by the scale).
pub fn olora(w: &Array2<f64>, r: usize) -> anyhow::Result<Factors> {
    let k = w.nrows().min(w.ncols());
    if r > k {
        bail!("rank {r} exceeds the matrix's rank bound min(d_out, d_in) = {k}");
    }
    single_threaded_blas();
    let (q, rr) = w
        .qr()
        .context("QR of the pretrained weight (LAPACK geqrf/orgqr)")?;
    Ok(Factors {
        a: rr.slice(s![..r, ..]).to_owned(),
        e: Array1::zeros(0),
        b: q.slice(s![.., ..r]).to_owned(),
    })
}

/// AdaLoRA triplets of `w` (`[d_out, d_in]`): `a = Q = Vᵀ_r`, `e = λ = S_r / s`, `b = P = U_r`.
pub fn adalora_svd(w: &Array2<f64>, r: usize, scaling: f64) -> anyhow::Result<Factors> {
    let (u, sv, vt) = top_svd(w, r)?;
    Ok(Factors {
        a: vt,
        e: sv.mapv(|x| x / scaling),
        b: u,
    })
}

/// A burn-layout `[d_in, d_out]` weight in PyTorch layout `[d_out, d_in]`, f64, for the host
/// linear algebra (here and in the adapter analyses).
pub fn pytorch_layout<B: Backend>(w: Tensor<B, 2>) -> Array2<f64> {
    let [d_in, d_out] = w.dims();
    let data: Vec<f64> = to_f32_vec(w).into_iter().map(f64::from).collect();
    Array2::from_shape_vec((d_in, d_out), data)
        .expect("tensor data matches its shape")
        .reversed_axes()
        .as_standard_layout()
        .to_owned()
}

/// A PyTorch-layout `[rows, cols]` factor as a burn-layout `[cols, rows]` f32 tensor.
fn burn_t<B: Backend>(m: &Array2<f64>, device: &B::Device) -> Tensor<B, 2> {
    let t = m.t();
    let data: Vec<f32> = t.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(data, [t.nrows(), t.ncols()]), device)
}

/// Whether `cfg` asks for an initialisation other than the default Kaiming/zero start.
pub fn uses_weight_init(cfg: &RunConfig) -> bool {
    match cfg.method {
        Method::Lora => !cfg.lora.init.is_default(),
        Method::AdaLora => cfg.adalora.init == AdaLoraInit::Svd,
        Method::Full | Method::BitFit => false,
    }
}

/// Apply `cfg`'s initialisation from W0 to every adapter of `model` (a no-op for the default
/// initialisations, so those runs are untouched bit for bit). Errors name the module.
pub fn apply_weight_init<B: Backend, M: SequenceClassifier<B>>(
    mut model: M,
    cfg: &RunConfig,
) -> anyhow::Result<M> {
    if !uses_weight_init(cfg) {
        return Ok(model);
    }
    let slots = model.slots();
    for (slot, layer) in slots.iter().zip(model.adapted_linears_mut()) {
        let name = &slot.path;
        let replaced = match &*layer {
            AdaptedLinear::Plain(_) => continue,
            AdaptedLinear::Lora(l) if cfg.lora.init == LoraInit::Gaussian => {
                AdaptedLinear::Lora(l.clone().with_gaussian_a())
            }
            AdaptedLinear::Lora(l) => {
                let device = l.lora_a.device();
                let w = pytorch_layout(l.base.weight(&device));
                let f = match cfg.lora.init {
                    LoraInit::Pissa => pissa(&w, l.rank(), l.scaling),
                    LoraInit::Olora => olora(&w, l.rank()),
                    LoraInit::Kaiming | LoraInit::Gaussian => {
                        unreachable!("handled above / by uses_weight_init")
                    }
                }
                .with_context(|| format!("lora.init = \"{}\" on {name}", cfg.lora.init.name()))?;
                let (a, b) = (burn_t::<B>(&f.a, &device), burn_t::<B>(&f.b, &device));
                AdaptedLinear::Lora(
                    l.clone()
                        .with_init_factors(a, b)
                        .with_context(|| name.clone())?,
                )
            }
            AdaptedLinear::Svd(l) => {
                let device = l.lora_a.device();
                let w = pytorch_layout(l.base.weight(&device));
                let f = adalora_svd(&w, l.rank(), l.effective_scale())
                    .with_context(|| format!("adalora.init = \"svd\" on {name}"))?;
                let e: Vec<f32> = f.e.iter().map(|&x| x as f32).collect();
                let e = Tensor::from_data(TensorData::new(e, [f.e.len()]), &device);
                let (a, b) = (burn_t::<B>(&f.a, &device), burn_t::<B>(&f.b, &device));
                AdaptedLinear::Svd(
                    l.clone()
                        .with_init_factors(a, e, b)
                        .with_context(|| name.clone())?,
                )
            }
        };
        *layer = replaced;
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(m: usize, n: usize) -> Array2<f64> {
        Array2::from_shape_fn((m, n), |(i, j)| {
            ((i * 7 + j * 3) as f64 * 0.37).sin() + 0.1 * (i as f64 - j as f64)
        })
    }

    fn max_abs(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        (a - b).iter().fold(0.0, |m, x| m.max(x.abs()))
    }

    #[test]
    fn factors_rebuild_the_weight_they_come_from() {
        let w = matrix(6, 9);
        // Full rank: s·B·A = W exactly (up to rounding) for every method.
        let p = pissa(&w, 6, 2.0).unwrap();
        assert!(max_abs(&(p.b.dot(&p.a) * 2.0), &w) < 1e-12);
        let o = olora(&w, 6).unwrap();
        assert!(max_abs(&o.b.dot(&o.a), &w) < 1e-12);
        let s = adalora_svd(&w, 6, 0.5).unwrap();
        let delta = (&s.b * &s.e.view().insert_axis(ndarray::Axis(0))).dot(&s.a) * 0.5;
        assert!(max_abs(&delta, &w) < 1e-12);
        // The SVD is ordered and P, Q orthonormal.
        assert!(s.e.windows(2).into_iter().all(|w| w[0] >= w[1]));
        let eye = Array2::<f64>::eye(3);
        let t = adalora_svd(&w, 3, 1.0).unwrap();
        assert!(max_abs(&t.b.t().dot(&t.b), &eye) < 1e-12);
        assert!(max_abs(&t.a.dot(&t.a.t()), &eye) < 1e-12);
        assert!(pissa(&w, 7, 1.0).is_err() && olora(&w, 7).is_err());
    }
}
