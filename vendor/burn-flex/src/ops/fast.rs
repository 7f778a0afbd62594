//! adalora patch: the element-wise work of a transformer training step, multi-threaded and
//! vectorisable.
//!
//! Upstream burn-flex 0.21.0 runs its generic element-wise loops (`unary_op`, `binary_op`,
//! `scalar_op`) on one thread and calls scalar libm for `exp` and `erf`; a profile of a BERT
//! training step at batch 32 × 128 showed that half of the step was such loops, on one of the
//! machine's cores, while the other idled. This module holds:
//!
//! * chunked parallel maps (`map_inplace`, `map_collect`, `zip_inplace`, `zip_collect`): rayon
//!   over fixed-size chunks, each chunk compiled a second time for AVX2 + FMA and picked at run
//!   time, so that the closures' arithmetic vectorises on machines that have it;
//! * branch-free `exp_f32` and `erf_f32` that LLVM can vectorise (libm's cannot be), accurate to
//!   a few ulp (tested against libm below);
//! * `fill_uniform_f32` / `fill_bernoulli_f32`: a counter-based generator (SplitMix64 over the
//!   element index, keyed by one draw from the backend's seeded RNG), so random tensors fill in
//!   parallel and the result does not depend on the thread count.
//!
//! Chunk boundaries are fixed, not derived from the thread count, so every result is
//! bit-identical whatever rayon's pool size.

use alloc::vec::Vec;
use core::mem::MaybeUninit;

#[cfg(feature = "rayon")]
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;
/// Below this many elements a map runs on the calling thread.
const PAR_MIN: usize = 1 << 16;

#[inline(always)]
fn map_chunk<E: Copy, Op: Fn(E) -> E>(chunk: &mut [E], op: &Op) {
    for x in chunk.iter_mut() {
        *x = op(*x);
    }
}

#[inline(always)]
fn map_chunk_from<E: Copy, R, Op: Fn(E) -> R>(dst: &mut [MaybeUninit<R>], src: &[E], op: &Op) {
    for (d, &s) in dst.iter_mut().zip(src) {
        d.write(op(s));
    }
}

#[inline(always)]
fn zip_chunk<E: Copy, Op: Fn(E, E) -> E>(dst: &mut [E], rhs: &[E], op: &Op) {
    for (d, &r) in dst.iter_mut().zip(rhs) {
        *d = op(*d, r);
    }
}

#[inline(always)]
fn zip_chunk_from<E: Copy, R, Op: Fn(E, E) -> R>(
    dst: &mut [MaybeUninit<R>],
    lhs: &[E],
    rhs: &[E],
    op: &Op,
) {
    for ((d, &l), &r) in dst.iter_mut().zip(lhs).zip(rhs) {
        d.write(op(l, r));
    }
}

/// An output buffer the maps write every element of. Not zero-filled: with glibc keeping
/// freed buffers for reuse, zeroing them first was a visible `memset` in the profile.
fn uninit_vec<R>(n: usize) -> Vec<MaybeUninit<R>> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: `MaybeUninit` needs no initialisation; the capacity is `n`.
    unsafe { v.set_len(n) };
    v
}

/// A new vector of `n` elements that `write` initialises completely, with no zero-fill first.
/// For outputs written by kernels that never read them (gemm with `read_dst = false`).
///
/// # Safety
/// `write` must initialise every element of the slice it is given.
pub(crate) unsafe fn written_vec<E>(n: usize, write: impl FnOnce(&mut [MaybeUninit<E>])) -> Vec<E> {
    let mut out = uninit_vec::<E>(n);
    write(&mut out);
    // SAFETY: the caller guarantees that `write` initialised every element.
    unsafe { assume_init(out) }
}

/// The buffer after every element has been written.
///
/// # Safety
/// Every element of `v` must be initialised.
unsafe fn assume_init<R>(v: Vec<MaybeUninit<R>>) -> Vec<R> {
    let mut v = core::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, length and capacity; `MaybeUninit<R>` has `R`'s layout, and the
    // caller guarantees initialisation.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<R>(), v.len(), v.capacity()) }
}

/// Runs `body` compiled for AVX2 + FMA when the CPU has them, else for the baseline target.
/// `body` is `#[inline(always)]` into both versions, so the element closure inside it is
/// vectorised for the wider registers.
macro_rules! dispatch_avx2 {
    ($body:expr) => {{
        #[cfg(all(target_arch = "x86_64", feature = "std"))]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn wide<T, F: FnOnce() -> T>(f: F) -> T {
                f()
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the features were detected on this CPU just above.
                unsafe { wide(|| $body) }
            } else {
                $body
            }
        }
        #[cfg(not(all(target_arch = "x86_64", feature = "std")))]
        {
            $body
        }
    }};
}

/// `x = op(x)` for every element, in parallel chunks when the slice is large.
pub fn map_inplace<E, Op>(data: &mut [E], op: Op)
where
    E: Copy + Send + Sync,
    Op: Fn(E) -> E + Send + Sync,
{
    #[cfg(feature = "rayon")]
    if data.len() >= PAR_MIN {
        data.par_chunks_mut(CHUNK)
            .for_each(|c| dispatch_avx2!(map_chunk(c, &op)));
        return;
    }
    dispatch_avx2!(map_chunk(data, &op))
}

/// `op(x)` for every element of `src`, collected into a new vector.
pub fn map_collect<E, R, Op>(src: &[E], op: Op) -> Vec<R>
where
    E: Copy + Send + Sync,
    R: Copy + Send + Sync,
    Op: Fn(E) -> R + Send + Sync,
{
    let mut out = uninit_vec(src.len());
    #[cfg(feature = "rayon")]
    if src.len() >= PAR_MIN {
        out.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| dispatch_avx2!(map_chunk_from(d, s, &op)));
    } else {
        dispatch_avx2!(map_chunk_from(&mut out, src, &op));
    }
    #[cfg(not(feature = "rayon"))]
    dispatch_avx2!(map_chunk_from(&mut out, src, &op));
    // SAFETY: the chunks cover `out` and each element was written once.
    unsafe { assume_init(out) }
}

/// `l = op(l, r)` element by element (`rhs` at least as long as `dst`).
pub fn zip_inplace<E, Op>(dst: &mut [E], rhs: &[E], op: Op)
where
    E: Copy + Send + Sync,
    Op: Fn(E, E) -> E + Send + Sync,
{
    let rhs = &rhs[..dst.len()];
    #[cfg(feature = "rayon")]
    if dst.len() >= PAR_MIN {
        dst.par_chunks_mut(CHUNK)
            .zip(rhs.par_chunks(CHUNK))
            .for_each(|(d, r)| dispatch_avx2!(zip_chunk(d, r, &op)));
        return;
    }
    dispatch_avx2!(zip_chunk(dst, rhs, &op))
}

/// Applies a slice kernel (e.g. a SIMD in-place binary op) to matching chunks of `dst` and
/// `rhs`, in parallel when large.
pub fn chunked_inplace<E, K>(dst: &mut [E], rhs: &[E], kernel: K)
where
    E: Send + Sync,
    K: Fn(&mut [E], &[E]) + Send + Sync,
{
    let rhs = &rhs[..dst.len()];
    #[cfg(feature = "rayon")]
    if dst.len() >= PAR_MIN {
        dst.par_chunks_mut(CHUNK)
            .zip(rhs.par_chunks(CHUNK))
            .for_each(|(d, r)| kernel(d, r));
        return;
    }
    kernel(dst, rhs)
}

/// `op(l, r)` element by element, collected into a new vector.
pub fn zip_collect<E, R, Op>(lhs: &[E], rhs: &[E], op: Op) -> Vec<R>
where
    E: Copy + Send + Sync,
    R: Copy + Send + Sync,
    Op: Fn(E, E) -> R + Send + Sync,
{
    let n = lhs.len().min(rhs.len());
    let (lhs, rhs) = (&lhs[..n], &rhs[..n]);
    let mut out = uninit_vec(n);
    #[cfg(feature = "rayon")]
    if n >= PAR_MIN {
        out.par_chunks_mut(CHUNK)
            .zip(lhs.par_chunks(CHUNK).zip(rhs.par_chunks(CHUNK)))
            .for_each(|(d, (l, r))| dispatch_avx2!(zip_chunk_from(d, l, r, &op)));
    } else {
        dispatch_avx2!(zip_chunk_from(&mut out, lhs, rhs, &op));
    }
    #[cfg(not(feature = "rayon"))]
    dispatch_avx2!(zip_chunk_from(&mut out, lhs, rhs, &op));
    // SAFETY: the chunks cover `out` and each element was written once.
    unsafe { assume_init(out) }
}

/// Binary op over two same-shaped views whose last dimension has stride 0 or 1 (contiguous
/// rows or a broadcast row/scalar), written to a new contiguous buffer row by row. Covers the
/// broadcasts a transformer makes (an additive attention mask `[b, 1, 1, s]` against scores
/// `[b, h, s, s]`, a bias row, a per-row statistic) without the per-element index walk.
///
/// `row_offsets(r)` gives the storage offsets of row `r` in `lhs` and `rhs`.
pub fn rows_collect<E, Op, Off>(
    lhs: &[E],
    rhs: &[E],
    rows: usize,
    row_len: usize,
    strides: (usize, usize),
    row_offsets: Off,
    op: Op,
) -> Vec<E>
where
    E: Copy + Default + Send + Sync,
    Op: Fn(E, E) -> E + Send + Sync,
    Off: Fn(usize) -> (usize, usize) + Send + Sync,
{
    let fill_row = |r: usize, dst: &mut [MaybeUninit<E>]| {
        let (lo, ro) = row_offsets(r);
        match strides {
            (1, 1) => zip_chunk_from(dst, &lhs[lo..lo + row_len], &rhs[ro..ro + row_len], &op),
            (1, 0) => {
                let b = rhs[ro];
                map_chunk_from(dst, &lhs[lo..lo + row_len], &|a| op(a, b))
            }
            (0, 1) => {
                let a = lhs[lo];
                map_chunk_from(dst, &rhs[ro..ro + row_len], &|b| op(a, b))
            }
            _ => {
                let v = op(lhs[lo], rhs[ro]);
                dst.iter_mut().for_each(|d| {
                    d.write(v);
                })
            }
        }
    };
    collect_rows(rows, row_len, fill_row)
}

/// Gathers `rows` contiguous runs of `row_len` elements, run `r` starting at `row_offset(r)`
/// in `src`, into a new contiguous vector, in parallel when large. The layout copy of a
/// permuted tensor whose last dimension stays contiguous (attention heads
/// `[b, s, h, d] → [b, h, s, d]`), which upstream walks element by element.
pub fn gather_rows<E, Off>(src: &[E], rows: usize, row_len: usize, row_offset: Off) -> Vec<E>
where
    E: Copy + Send + Sync,
    Off: Fn(usize) -> usize + Send + Sync,
{
    collect_rows(rows, row_len, |r: usize, dst: &mut [MaybeUninit<E>]| {
        let start = row_offset(r);
        for (d, &v) in dst.iter_mut().zip(&src[start..start + row_len]) {
            d.write(v);
        }
    })
}

/// A new `rows × row_len` vector whose row `r` is written by `fill_row(r, row)`, over whole-row
/// blocks in parallel when large (`for_row_blocks`). `fill_row` must write every element.
fn collect_rows<E, F>(rows: usize, row_len: usize, fill_row: F) -> Vec<E>
where
    E: Send + Sync,
    F: Fn(usize, &mut [MaybeUninit<E>]) + Send + Sync,
{
    let mut out = uninit_vec::<E>(rows * row_len);
    let row_len = row_len.max(1);
    for_row_blocks(&mut out, row_len, |first_row, block| {
        dispatch_avx2!(for (i, dst) in block.chunks_mut(row_len).enumerate() {
            fill_row(first_row + i, dst)
        })
    });
    // SAFETY: the blocks of `for_row_blocks` cover `out` in whole rows, and `fill_row` writes
    // every element of each row.
    unsafe { assume_init(out) }
}

/// Applies `kernel` to whole-row blocks of `dst` (block `t` starts at row
/// `t · rows_per_task`), in parallel when large. For upstream's in-place broadcast kernels.
pub fn for_row_blocks<E, K>(dst: &mut [E], row_len: usize, kernel: K)
where
    E: Send + Sync,
    K: Fn(usize, &mut [E]) + Send + Sync,
{
    let row_len = row_len.max(1);
    #[cfg(feature = "rayon")]
    if dst.len() >= PAR_MIN && dst.len() > row_len {
        let rows_per_task = (CHUNK / row_len).max(1);
        dst.par_chunks_mut(rows_per_task * row_len)
            .enumerate()
            .for_each(|(t, block)| kernel(t * rows_per_task, block));
        return;
    }
    kernel(0, dst)
}

/// `e^x` for f32 without a libm call, so loops over it vectorise. Cephes' `expf`: range
/// reduction by `ln 2` in two parts, a degree-5 polynomial, scaling by `2^n` through the
/// exponent bits. Within 2 ulp of libm on normal results; results below `f32::MIN_POSITIVE`
/// flush to 0, and inputs above 88.376 give `+inf` (libm: finite up to 88.72).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const ROUND_MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    const HI: f32 = 88.376_26;
    const LO: f32 = -87.336_55;
    let xc = x.clamp(LO, HI);
    let fx = xc * core::f32::consts::LOG2_E + 0.5;
    // floor(fx) in float arithmetic only: adding and subtracting 1.5 · 2^23 rounds to the
    // nearest integer (|fx| < 2^22 here). An `as i32` cast would not vectorise: Rust's
    // saturating, NaN-to-0 conversion became scalar `cvttss2si` + `cmov` per element.
    let t = (fx + ROUND_MAGIC) - ROUND_MAGIC;
    let n = if t > fx { t - 1.0 } else { t };
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let r2 = r * r;
    let mut y = 1.987_569_1e-4_f32;
    y = y * r + 1.398_199_9e-3;
    y = y * r + 8.333_452e-3;
    y = y * r + 4.166_579_6e-2;
    y = y * r + 1.666_666_5e-1;
    y = y * r + 5.000_000_1e-1;
    y = y * r2 + r + 1.0;
    // 2^n from n's bits: in n + 1.5 · 2^23 the low mantissa bits hold n (two's complement).
    let n_int = (n + ROUND_MAGIC)
        .to_bits()
        .wrapping_sub(ROUND_MAGIC.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    let v = y * scale;
    let v = if x < LO { 0.0 } else { v };
    let v = if x > HI { f32::INFINITY } else { v };
    if x.is_nan() { x } else { v }
}

/// `erf(x)` for f32 without a libm call: the rational approximation Eigen and XLA use for
/// float (odd degree-13 numerator over even degree-8 denominator on [-4, 4], ±1 outside).
/// Within 1e-6 absolute of libm's `erff` (tested below), which is below the float rounding
/// of the GELU built on it.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let xc = x.clamp(-4.0, 4.0);
    let x2 = xc * xc;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_599_8e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= xc;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_4e-3;
    q = x2 * q + -1.426_473_9e-2;
    let v = p / q;
    // |erf| rounds to exactly 1 in f32 from |x| = 3.9 on; the rational form stops just short.
    let v = if xc.abs() >= 3.9 {
        1.0f32.copysign(x)
    } else {
        v
    };
    if x.is_nan() { x } else { v }
}

/// Exact GELU, `x · Φ(x)`, through the vectorisable `erf_f32`.
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * core::f32::consts::FRAC_1_SQRT_2))
}

/// `grad · d/dx[x · Φ(x)] = grad · (Φ(x) + x · φ(x))`.
#[inline(always)]
pub fn gelu_backward_f32(x: f32, grad: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_28;
    let cdf = 0.5 * (1.0 + erf_f32(x * core::f32::consts::FRAC_1_SQRT_2));
    let pdf = INV_SQRT_2PI * exp_f32(-0.5 * x * x);
    grad * (cdf + x * pdf)
}

/// Whole-slice kernels for the heavy f32 functions, with the function called directly in the
/// loop. Through the generic maps above, a closure this large (a rational function plus an
/// exponential) was left un-inlined and the loop stayed scalar: 13% of a step in
/// `gelu_backward` alone.
macro_rules! f32_unary_kernels {
    ($inplace:ident, $collect:ident, $f:path) => {
        /// In place over `data`, in parallel chunks when large.
        pub fn $inplace(data: &mut [f32]) {
            let run = |c: &mut [f32]| {
                dispatch_avx2!(for x in c.iter_mut() {
                    *x = $f(*x);
                })
            };
            #[cfg(feature = "rayon")]
            if data.len() >= PAR_MIN {
                data.par_chunks_mut(CHUNK).for_each(run);
                return;
            }
            run(data)
        }

        /// Into a new vector, in parallel chunks when large.
        pub fn $collect(src: &[f32]) -> Vec<f32> {
            let mut out = uninit_vec::<f32>(src.len());
            let run = |d: &mut [MaybeUninit<f32>], s: &[f32]| {
                dispatch_avx2!(for (d, &x) in d.iter_mut().zip(s) {
                    d.write($f(x));
                })
            };
            #[cfg(feature = "rayon")]
            if src.len() >= PAR_MIN {
                out.par_chunks_mut(CHUNK)
                    .zip(src.par_chunks(CHUNK))
                    .for_each(|(d, s)| run(d, s));
                // SAFETY: the chunks cover `out`.
                return unsafe { assume_init(out) };
            }
            run(&mut out, src);
            // SAFETY: every element was written.
            unsafe { assume_init(out) }
        }
    };
}

f32_unary_kernels!(exp_inplace, exp_collect, exp_f32);
f32_unary_kernels!(gelu_inplace, gelu_collect, gelu_f32);

/// `gelu_backward_f32(x[i], grad[i])` into a new vector (see `f32_unary_kernels`).
pub fn gelu_backward_collect(x: &[f32], grad: &[f32]) -> Vec<f32> {
    let n = x.len().min(grad.len());
    let mut out = uninit_vec::<f32>(n);
    let run = |d: &mut [MaybeUninit<f32>], xs: &[f32], gs: &[f32]| {
        dispatch_avx2!(for ((d, &x), &g) in d.iter_mut().zip(xs).zip(gs) {
            d.write(gelu_backward_f32(x, g));
        })
    };
    #[cfg(feature = "rayon")]
    if n >= PAR_MIN {
        out.par_chunks_mut(CHUNK)
            .zip(x[..n].par_chunks(CHUNK).zip(grad[..n].par_chunks(CHUNK)))
            .for_each(|(d, (xs, gs))| run(d, xs, gs));
        // SAFETY: the chunks cover `out`.
        return unsafe { assume_init(out) };
    }
    run(&mut out, &x[..n], &grad[..n]);
    // SAFETY: every element was written.
    unsafe { assume_init(out) }
}

/// SplitMix64's output function: a bijective mix of a 64-bit counter. Used as a counter-based
/// generator (element `i` of a fill keyed by `key` is `mix(key + (i + 1) · γ)`), which is
/// exactly the SplitMix64 stream seeded with `key`: it passes BigCrush, and any element can be
/// computed independently, so fills parallelise.
#[inline(always)]
fn splitmix64(z: u64) -> u64 {
    let mut z = z;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Fills `out` with `f(u)` for `u` uniform in [0, 1) with 24 random bits (every f32 step in
/// [0.5, 1) reachable), element `i` drawn from counter `i` under `key`.
fn fill_from_uniform<F>(out: &mut [f32], key: u64, f: F)
where
    F: Fn(f32) -> f32 + Send + Sync,
{
    let fill = |start: usize, chunk: &mut [f32]| {
        for (j, v) in chunk.iter_mut().enumerate() {
            let i = (start + j) as u64;
            let bits = splitmix64(key.wrapping_add((i + 1).wrapping_mul(GOLDEN_GAMMA)));
            let u = (bits >> 40) as f32 * (1.0 / (1u32 << 24) as f32);
            *v = f(u);
        }
    };
    #[cfg(feature = "rayon")]
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| fill(c * CHUNK, chunk));
        return;
    }
    fill(0, out)
}

/// `out[i]` uniform in `[low, high)`.
pub fn fill_uniform_f32(out: &mut [f32], key: u64, low: f32, high: f32) {
    let span = high - low;
    fill_from_uniform(out, key, move |u| {
        let v = low + u * span;
        // Rounding can land exactly on `high`; keep the interval half-open.
        if v >= high { low } else { v }
    })
}

/// `out[i]` = 1 with probability `prob`, else 0.
pub fn fill_bernoulli_f32(out: &mut [f32], key: u64, prob: f64) {
    let p = prob as f32;
    fill_from_uniform(out, key, move |u| if u < p { 1.0 } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(lo: f32, hi: f32, n: usize) -> alloc::vec::Vec<f32> {
        (0..=n)
            .map(|i| lo + (hi - lo) * i as f32 / n as f32)
            .collect()
    }

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_2_ulp_of_libm() {
        let mut worst = 0;
        for x in grid(-87.0, 88.3, 400_000) {
            worst = worst.max(ulps(exp_f32(x), libm::expf(x)));
        }
        assert!(worst <= 2, "worst {worst} ulp");
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(1000.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        // The additive attention mask's large negative value.
        assert_eq!(exp_f32(f32::MIN), 0.0);
    }

    #[test]
    fn erf_is_within_1e6_of_libm() {
        let mut worst = 0.0f32;
        for x in grid(-6.0, 6.0, 400_000) {
            worst = worst.max((erf_f32(x) - libm::erff(x)).abs());
        }
        assert!(worst < 1e-6, "worst {worst}");
        assert!(erf_f32(f32::NAN).is_nan());
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
        assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
    }

    #[test]
    fn gelu_and_its_derivative_match_the_libm_formulas() {
        for x in grid(-10.0, 10.0, 100_000) {
            let reference = 0.5 * x * (1.0 + libm::erff(x / core::f32::consts::SQRT_2));
            assert!(
                (gelu_f32(x) - reference).abs() <= 1e-6 * x.abs().max(1.0),
                "x {x}"
            );
            let pdf = (-0.5 * x * x).exp() / (2.0 * core::f32::consts::PI).sqrt();
            let d_ref = 0.5 * (1.0 + libm::erff(x / core::f32::consts::SQRT_2)) + x * pdf;
            assert!((gelu_backward_f32(x, 1.0) - d_ref).abs() <= 2e-6, "x {x}");
        }
    }

    #[test]
    fn bernoulli_fill_has_the_right_rate_and_is_independent_of_chunking() {
        let mut a = alloc::vec![0.0f32; 1 << 20];
        fill_bernoulli_f32(&mut a, 7, 0.9);
        let ones = a.iter().filter(|&&v| v == 1.0).count() as f64 / a.len() as f64;
        assert!((ones - 0.9).abs() < 0.002, "rate {ones}");
        assert!(a.iter().all(|&v| v == 0.0 || v == 1.0));
        // Element i depends on (key, i) only: a short fill is a prefix of a long one.
        let mut b = alloc::vec![0.0f32; 1000];
        fill_bernoulli_f32(&mut b, 7, 0.9);
        assert_eq!(&a[..1000], &b[..]);
        let mut c = alloc::vec![0.0f32; 1000];
        fill_bernoulli_f32(&mut c, 8, 0.9);
        assert_ne!(b, c, "another key gives another mask");
    }

    #[test]
    fn uniform_fill_stays_in_range_and_is_flat() {
        let mut a = alloc::vec![0.0f32; 1 << 18];
        fill_uniform_f32(&mut a, 3, -2.0, 2.0);
        assert!(a.iter().all(|&v| (-2.0..2.0).contains(&v)));
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        let below = a.iter().filter(|&&v| v < -1.0).count() as f64 / a.len() as f64;
        assert!((below - 0.25).abs() < 0.005, "quartile {below}");
    }

    #[test]
    fn parallel_maps_equal_sequential_ones() {
        let src: alloc::vec::Vec<f32> = (0..300_000).map(|i| (i as f32 * 0.001).sin()).collect();
        let par = map_collect(&src, exp_f32);
        let seq: alloc::vec::Vec<f32> = src.iter().map(|&x| exp_f32(x)).collect();
        assert_eq!(par, seq);
        let mut inplace = src.clone();
        zip_inplace(&mut inplace, &src, |a, b| a * b + 1.0);
        let seq: alloc::vec::Vec<f32> = src.iter().map(|&x| x * x + 1.0).collect();
        assert_eq!(inplace, seq);
    }
}
