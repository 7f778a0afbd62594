//! The patched CPU kernels of `vendor/burn-flex` (what `adalora train` runs on) against burn's
//! ndarray backend (upstream's plain ops with libm math) on the operations a transformer step
//! spends its time in: values and gradients, padded attention positions included, at sizes
//! that take the parallel paths (≥ 65,536 elements) and below them.

use adalora_train::CpuBackend as Flex;
use burn::backend::{Autodiff, NdArray};
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};

type Fast = Autodiff<Flex>;
type Plain = Autodiff<NdArray<f32>>;

/// Deterministic pseudo-random values in roughly [-scale, scale], the same on both backends.
fn values(n: usize, scale: f32, salt: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            let h = (i ^ salt).wrapping_mul(2_654_435_761).rotate_left(13) ^ salt;
            (h as f32 / u32::MAX as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn tensor<B: Backend, const D: usize>(data: &[f32], shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), &Default::default())
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// Largest |a − b| / max(1, |b|).
fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// `f(x)` on one backend: (value, gradient of Σ f(x)·upstream with respect to x).
fn value_and_grad<B: AutodiffBackend, const D: usize>(
    shape: [usize; D],
    input: &[f32],
    upstream: &[f32],
    f: impl Fn(Tensor<B, D>) -> Tensor<B, D>,
) -> (Vec<f32>, Vec<f32>) {
    let x = tensor::<B, D>(input, shape).require_grad();
    let y = f(x.clone());
    let grads = (y.clone() * tensor::<B, D>(upstream, shape))
        .sum()
        .backward();
    (to_vec(y.inner()), to_vec(x.grad(&grads).unwrap()))
}

/// `f` on both backends with the same input and upstream gradient: (value, input gradient).
fn forward_backward<const D: usize>(
    shape: [usize; D],
    input: &[f32],
    f: impl Fn(Tensor<Fast, D>) -> Tensor<Fast, D>,
    g: impl Fn(Tensor<Plain, D>) -> Tensor<Plain, D>,
) -> [(Vec<f32>, Vec<f32>); 2] {
    let upstream = values(input.len(), 1.0, 99);
    [
        value_and_grad(shape, input, &upstream, f),
        value_and_grad(shape, input, &upstream, g),
    ]
}

/// GELU's value against the plain backend; its gradient against the exact derivative
/// Φ(x) + x·φ(x) in f64, because burn's default `gelu_backward` (what ndarray uses) is the
/// derivative of the tanh approximation, off by up to 8e-4 here.
#[test]
fn gelu_values_and_gradients_match_the_plain_backend_and_the_exact_derivative() {
    // Large (parallel, vectorised) and small (single-thread) tensors; |x| up to 8 covers the
    // erf approximation's clamp.
    for shape in [[64, 1536], [3, 7]] {
        let n = shape[0] * shape[1];
        let input = values(n, 8.0, 1);
        let [(y, gx), (y_ref, _)] = forward_backward(shape, &input, gelu, gelu);
        let dy = max_rel_diff(&y, &y_ref);
        assert!(dy < 2e-6, "gelu {shape:?}: {dy}");
        let upstream = values(n, 1.0, 99);
        let exact: Vec<f32> = input
            .iter()
            .zip(&upstream)
            .map(|(&x, &u)| {
                let x = f64::from(x);
                let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                (f64::from(u) * (cdf + x * pdf)) as f32
            })
            .collect();
        let dg = max_rel_diff(&gx, &exact);
        assert!(dg < 2e-6, "gelu grad {shape:?}: {dg}");
    }
}

#[test]
fn exp_values_and_gradients_match_the_plain_backend() {
    let shape = [128, 1024];
    let input = values(shape[0] * shape[1], 40.0, 2);
    let [(y, gx), (y_ref, gx_ref)] = forward_backward(shape, &input, |x| x.exp(), |x| x.exp());
    let rel = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| ((x - y) / y.abs().max(f32::MIN_POSITIVE)).abs())
            .fold(0.0, f32::max)
    };
    // 2 ulp for the value; one more rounding (× upstream) for the gradient.
    assert!(
        rel(&y, &y_ref) < 2.5e-7,
        "exp relative error {}",
        rel(&y, &y_ref)
    );
    assert!(
        rel(&gx, &gx_ref) < 4e-7,
        "exp grad relative error {}",
        rel(&gx, &gx_ref)
    );
}

/// Scores `[b, h, s, s]` plus HF's additive mask `[b, 1, 1, s]` (f32::MIN on padding), then
/// softmax: the broadcast add (the row-wise path), exp and the reductions, forward and backward.
#[test]
fn masked_softmax_matches_the_plain_backend_with_padding() {
    let (b, h, s) = (4, 12, 64);
    let shape = [b, h, s, s];
    let scores = values(b * h * s * s, 6.0, 3);
    // Sequence i has 64 − 9·i real tokens; the rest is padding.
    let keep: Vec<i64> = (0..b)
        .flat_map(|i| (0..s).map(move |j| i64::from(j < s - 9 * i)))
        .collect();
    let mask = |device: &_| {
        let ids = Tensor::<Fast, 2, Int>::from_data(TensorData::new(keep.clone(), [b, s]), device);
        adalora_model::bert::additive_mask(ids)
    };
    let mask_plain = |device: &_| {
        let ids = Tensor::<Plain, 2, Int>::from_data(TensorData::new(keep.clone(), [b, s]), device);
        adalora_model::bert::additive_mask(ids)
    };
    let [(p, gx), (p_ref, gx_ref)] = forward_backward(
        shape,
        &scores,
        |x| softmax(x.clone() + mask(&x.device()), 3),
        |x| softmax(x.clone() + mask_plain(&x.device()), 3),
    );
    assert!(max_rel_diff(&p, &p_ref) < 1e-6);
    assert!(max_rel_diff(&gx, &gx_ref) < 1e-6);
    // Padded keys get exactly zero probability and zero gradient.
    for (idx, (&pv, &gv)) in p.iter().zip(&gx).enumerate() {
        let (batch, key) = (idx / (h * s * s), idx % s);
        if keep[batch * s + key] == 0 {
            assert_eq!((pv, gv), (0.0, 0.0), "padded position {idx}");
        }
    }
}

#[test]
fn layer_norm_matches_the_plain_backend() {
    let shape = [32, 128, 384];
    let input = values(shape.iter().product(), 3.0, 4);
    let ln_fast: LayerNorm<Fast> = LayerNormConfig::new(384).init(&Default::default());
    let ln_plain: LayerNorm<Plain> = LayerNormConfig::new(384).init(&Default::default());
    let [(y, gx), (y_ref, gx_ref)] = forward_backward(
        shape,
        &input,
        |x| ln_fast.forward(x),
        |x| ln_plain.forward(x),
    );
    assert!(max_rel_diff(&y, &y_ref) < 1e-5);
    assert!(max_rel_diff(&gx, &gx_ref) < 1e-5);
}

/// Dropout draws its mask from the patched generator: the keep rate is 1 − p, kept values are
/// scaled by 1/(1 − p), the gradient flows through exactly the kept positions, and a reseeded
/// backend repeats the mask bit for bit (what exact resume relies on).
#[test]
fn dropout_keeps_the_right_share_is_reproducible_and_routes_gradients() {
    let p = 0.1;
    let dropout: Dropout = DropoutConfig::new(p).init();
    let shape = [64, 128, 32];
    let n: usize = shape.iter().product();
    let run = |seed: u64| {
        Fast::seed(&Default::default(), seed);
        let x = Tensor::<Fast, 3>::ones(shape, &Default::default()).require_grad();
        let y = dropout.forward(x.clone());
        let grads = y.clone().sum().backward();
        (to_vec(y.inner()), to_vec(x.grad(&grads).unwrap()))
    };
    let (y, g) = run(5);
    let scale = (1.0 / (1.0 - p)) as f32;
    let kept = y.iter().filter(|&&v| v != 0.0).count();
    assert!(y.iter().all(|&v| v == 0.0 || (v - scale).abs() < 1e-6));
    let rate = kept as f64 / n as f64;
    assert!((rate - 0.9).abs() < 0.003, "keep rate {rate}");
    assert_eq!(y, g, "d(sum y)/dx is the scaled mask");
    assert_eq!(run(5).0, y, "same seed, same mask");
    assert_ne!(run(6).0, y, "another seed, another mask");
}

/// The attention-head layout changes `[b, s, h, d] → [b, h, s, d]` and back: a permuted
/// tensor's copy to contiguous memory (the row-wise gather), forward and backward.
#[test]
fn head_permutations_copy_like_the_plain_backend() {
    let (b, s, h, d) = (8, 64, 12, 32);
    let shape = [b, s, h * d];
    let input = values(b * s * h * d, 1.0, 5);
    let heads = |x: Tensor<Fast, 3>| {
        let y = x.reshape([b, s, h, d]).swap_dims(1, 2);
        (y.clone() * y).swap_dims(1, 2).reshape([b, s, h * d])
    };
    let heads_plain = |x: Tensor<Plain, 3>| {
        let y = x.reshape([b, s, h, d]).swap_dims(1, 2);
        (y.clone() * y).swap_dims(1, 2).reshape([b, s, h * d])
    };
    let [(y, gx), (y_ref, gx_ref)] = forward_backward(shape, &input, heads, heads_plain);
    assert_eq!(y, y_ref);
    assert_eq!(gx, gx_ref);
}
