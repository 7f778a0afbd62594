//! The quantized (QLoRA) frozen base.
//!
//! 1. Quantize → dequantize of real all-MiniLM-L6-v2 weights matches bitsandbytes' CPU
//!    `quantize_4bit` / `dequantize_4bit`, for NF4 and FP4, block sizes 64 and 128, with and
//!    without double quantization: packed codes, absmax (or its 8-bit codes, second-level
//!    scales and offset) and the dequantized float32 matrix, all bit for bit. Fixtures:
//!    `scripts/fixtures/make_quant_fixtures.py` (bitsandbytes 0.50.2, CPU).
//! 2. LoRA and AdaLoRA on a quantized base: forward and gradients equal those of the same
//!    adapters on a dense base holding deq(q(W0)); only adapter parameters get gradients.
//! 3. A bf16 compute dtype rounds the base's product to bf16 (on burn-flex, which has bf16)
//!    and is refused by name on ndarray, which has not.

use adalora_core::quant::{BlockScales, DYNAMIC_CODE, FP4_CODE, NF4_CODE};
use adalora_core::{
    frozen_linear, to_f32_vec, AdaptedLinear, BaseLinear, ComputeDtype, LoraConfig, QuantConfig,
    QuantType, QuantizedLinear, QuantizedMatrix, SvdAdapterConfig,
};
use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor};
use safetensors::{Dtype, SafeTensors};

type AB = Autodiff<NdArray<f32>>;

fn fixture_bytes() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/quant/minilm_bnb.safetensors");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("fixture has no {name}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (v, t.shape().to_vec())
}

fn bytes(st: &SafeTensors<'_>, name: &str) -> Vec<u8> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("fixture has no {name}"));
    assert_eq!(t.dtype(), Dtype::U8, "{name}");
    t.data().to_vec()
}

/// Distance in units in the last place between two finite f32 of the same sign.
fn ulps(a: f32, b: f32) -> u32 {
    if a == b {
        return 0;
    }
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

/// Every value within `max_ulps` of the reference (0: bitwise equal).
fn assert_ulps(ours: &[f32], reference: &[f32], max_ulps: u32, what: &str) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let worst = (0..ours.len())
        .max_by_key(|&i| ulps(ours[i], reference[i]))
        .unwrap_or(0);
    let off = ours
        .iter()
        .zip(reference)
        .filter(|(a, b)| ulps(**a, **b) > max_ulps)
        .count();
    assert!(
        off == 0,
        "{what}: {off} of {} values differ by more than {max_ulps} ulp; worst #{worst}: ours {:e}, \
         bitsandbytes {:e}",
        ours.len(),
        ours[worst],
        reference[worst]
    );
}

fn assert_bits(ours: &[f32], reference: &[f32], what: &str) {
    assert_ulps(ours, reference, 0, what);
}

fn assert_same_bytes(ours: &[u8], reference: &[u8], what: &str) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let diffs: Vec<usize> = (0..ours.len())
        .filter(|&i| ours[i] != reference[i])
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: {} of {} bytes differ; first at #{}: ours {:#04x}, bitsandbytes {:#04x}",
        diffs.len(),
        ours.len(),
        diffs[0],
        ours[diffs[0]],
        reference[diffs[0]]
    );
}

#[test]
fn code_tables_are_bitsandbytes_tables() {
    let data = fixture_bytes();
    let st = SafeTensors::deserialize(&data).unwrap();
    assert_bits(&NF4_CODE, &f32s(&st, "code.nf4").0, "NF4 code");
    assert_bits(&FP4_CODE, &f32s(&st, "code.fp4").0, "FP4 code");
    assert_bits(
        &DYNAMIC_CODE,
        &f32s(&st, "code.dynamic").0,
        "dynamic 8-bit code",
    );
}

#[test]
fn quantize_dequantize_matches_bitsandbytes_on_minilm_weights() {
    let data = fixture_bytes();
    let st = SafeTensors::deserialize(&data).unwrap();
    let mut checked = 0;
    for slice in ["query", "output"] {
        let (w, shape) = f32s(&st, &format!("{slice}.weight"));
        let (rows, cols) = (shape[0], shape[1]);
        for kind in [QuantType::Nf4, QuantType::Fp4] {
            for block_size in [64, 128] {
                for double_quant in [false, true] {
                    let key = format!(
                        "{slice}.{kind}.b{block_size}.{}",
                        if double_quant { "dq" } else { "plain" }
                    );
                    let config = QuantConfig {
                        kind,
                        block_size,
                        double_quant,
                        ..QuantConfig::qlora()
                    };
                    let q = QuantizedMatrix::quantize(&w, rows, cols, config, &key).unwrap();
                    assert_same_bytes(&q.codes, &bytes(&st, &format!("{key}.codes")), &key);
                    match &q.scales {
                        BlockScales::Full(absmax) => {
                            let reference = f32s(&st, &format!("{key}.absmax")).0;
                            assert_bits(absmax, &reference, &format!("{key} absmax"));
                        }
                        BlockScales::Double {
                            codes,
                            scales,
                            offset,
                        } => {
                            let what = format!("{key} absmax codes");
                            let reference = bytes(&st, &format!("{key}.absmax_codes"));
                            assert_same_bytes(codes, &reference, &what);
                            let reference = f32s(&st, &format!("{key}.absmax_scales")).0;
                            assert_bits(scales, &reference, &format!("{key} absmax scales"));
                            let reference = f32s(&st, &format!("{key}.absmax_offset")).0;
                            assert_bits(&[*offset], &reference, &format!("{key} offset"));
                        }
                    }
                    let (reference, shape) = f32s(&st, &format!("{key}.dequantized"));
                    assert_eq!(shape, vec![rows, cols]);
                    let what = format!("{key} dequantized");
                    assert_bits(&q.dequantize(), &reference, &what);
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 16);
}

fn random<const D: usize>(shape: [usize; D]) -> Tensor<AB, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
}

/// A frozen `[64, 6]` layer quantized with NF4 + double quantization (block 32), and the
/// same layer as a dense f32 base holding exactly deq(q(W0)).
fn quantized_and_dequantized() -> (BaseLinear<AB>, BaseLinear<AB>) {
    let dense = frozen_linear(random([64, 6]), Some(random([6])));
    let config = QuantConfig {
        block_size: 32,
        ..QuantConfig::qlora()
    };
    let (quantized, error) = BaseLinear::from(dense.clone())
        .quantize(config, "w")
        .unwrap();
    assert!(
        error.mean_relative > 0.0 && error.mean_relative < 0.2,
        "{error:?}"
    );
    let device = Default::default();
    let reference = frozen_linear(
        quantized.weight(&device),
        dense.bias.as_ref().map(|b| b.val()),
    );
    (quantized, BaseLinear::Dense(reference))
}

/// Names (by shape) of the parameters that receive a gradient.
struct Trainable(Vec<Vec<usize>>);

impl<B: Backend> ModuleVisitor<B> for Trainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if param.val().is_require_grad() {
            self.0.push(param.val().dims().to_vec());
        }
    }
}

/// Adapters with non-zero updates on both bases, identical parameters.
fn adapters(base: BaseLinear<AB>) -> [AdaptedLinear<AB>; 2] {
    let device = Default::default();
    let mut lora = LoraConfig::new()
        .with_r(3)
        .init(base.clone(), &device)
        .unwrap();
    lora.lora_b = lora.lora_b.map(|b| (b + 0.5).detach().require_grad());
    let mut svd = SvdAdapterConfig::new()
        .with_init_r(3)
        .init(base, &device)
        .unwrap();
    svd.lora_e = svd.lora_e.map(|e| (e + 0.7).detach().require_grad());
    [AdaptedLinear::Lora(lora), AdaptedLinear::Svd(svd)]
}

fn same_params(from: &AdaptedLinear<AB>, onto: AdaptedLinear<AB>) -> AdaptedLinear<AB> {
    match (from, onto) {
        (AdaptedLinear::Lora(a), AdaptedLinear::Lora(mut b)) => {
            b.lora_a = Param::from_tensor(a.lora_a.val().detach().require_grad());
            b.lora_b = Param::from_tensor(a.lora_b.val().detach().require_grad());
            AdaptedLinear::Lora(b)
        }
        (AdaptedLinear::Svd(a), AdaptedLinear::Svd(mut b)) => {
            b.lora_a = Param::from_tensor(a.lora_a.val().detach().require_grad());
            b.lora_e = Param::from_tensor(a.lora_e.val().detach().require_grad());
            b.lora_b = Param::from_tensor(a.lora_b.val().detach().require_grad());
            AdaptedLinear::Svd(b)
        }
        _ => unreachable!("same adapter kinds"),
    }
}

fn max_abs_diff<const D: usize>(a: Tensor<AB, D>, b: Tensor<AB, D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

#[test]
fn adapters_on_a_quantized_base_equal_dequantize_then_linear_and_train_only_adapters() {
    let (quantized, dense) = quantized_and_dequantized();
    for (on_quantized, on_dense) in adapters(quantized).into_iter().zip(adapters(dense)) {
        let on_dense = same_params(&on_quantized, on_dense);
        let mut trainable = Trainable(Vec::new());
        on_quantized.visit(&mut trainable);
        let adapter_only = match &on_quantized {
            AdaptedLinear::Lora(_) => vec![vec![64, 3], vec![3, 6]],
            _ => vec![vec![64, 3], vec![3], vec![3, 6]],
        };
        assert_eq!(trainable.0, adapter_only, "only the adapter trains");

        let x = random::<3>([2, 5, 64]).require_grad();
        let (yq, yd) = (on_quantized.forward(x.clone()), on_dense.forward(x.clone()));
        assert_eq!(max_abs_diff(yq.clone(), yd.clone()), 0.0, "forward");
        let (gq, gd) = (
            yq.powf_scalar(2.0).sum().backward(),
            yd.powf_scalar(2.0).sum().backward(),
        );
        let grad = |g: &_, p: &Param<Tensor<AB, 2>>| p.val().grad(g).expect("adapter gradient");
        let pairs = match (&on_quantized, &on_dense) {
            (AdaptedLinear::Lora(q), AdaptedLinear::Lora(d)) => vec![
                (grad(&gq, &q.lora_a), grad(&gd, &d.lora_a)),
                (grad(&gq, &q.lora_b), grad(&gd, &d.lora_b)),
            ],
            (AdaptedLinear::Svd(q), AdaptedLinear::Svd(d)) => vec![
                (grad(&gq, &q.lora_a), grad(&gd, &d.lora_a)),
                (grad(&gq, &q.lora_b), grad(&gd, &d.lora_b)),
            ],
            _ => unreachable!(),
        };
        for (a, b) in pairs {
            let scale = b.clone().abs().max().into_scalar().max(1.0);
            let diff = (a - b).abs().max().into_scalar();
            assert!(diff <= 1e-5 * scale, "adapter gradient differs by {diff}");
        }
        let (xq, xd) = (x.grad(&gq).unwrap(), x.grad(&gd).unwrap());
        assert!(
            (xq - xd).abs().max().into_scalar() <= 1e-4,
            "input gradient"
        );
        let bias = on_quantized.base().bias().unwrap();
        assert!(
            bias.val().grad(&gq).is_none(),
            "the quantized base's bias is frozen"
        );
    }
}

#[test]
fn merging_a_quantized_base_gives_dense_deq_plus_delta() {
    let (quantized, dense) = quantized_and_dequantized();
    let device = Default::default();
    for (on_quantized, on_dense) in adapters(quantized).into_iter().zip(adapters(dense)) {
        let on_dense = same_params(&on_quantized, on_dense);
        let x = random::<2>([4, 64]);
        let expected = on_dense.forward(x.clone());
        let merged = on_quantized.merge_and_unload(&device);
        let diff = max_abs_diff(merged.forward(x), expected);
        assert!(diff <= 1e-4, "merged differs by {diff}");
    }
}

type FlexAB = Autodiff<burn_flex::Flex>;

fn flex_random<const D: usize>(shape: [usize; D]) -> Tensor<FlexAB, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
}

/// One random `[64, 6]` layer quantized (NF4 + double quant, block 32) on burn-flex, once per
/// compute dtype.
fn flex_quantized(dtypes: [ComputeDtype; 2]) -> [BaseLinear<FlexAB>; 2] {
    let dense = frozen_linear(flex_random([64, 6]), Some(flex_random([6])));
    dtypes.map(|compute_dtype| {
        let config = QuantConfig {
            block_size: 32,
            compute_dtype,
            ..QuantConfig::qlora()
        };
        let (base, _) = BaseLinear::from(dense.clone())
            .quantize(config, "w")
            .unwrap();
        base
    })
}

fn low_bits_zero(t: &Tensor<FlexAB, 3>) -> Vec<bool> {
    let values: Vec<f32> = t.to_data().to_vec().unwrap();
    values.iter().map(|v| v.to_bits() & 0xffff == 0).collect()
}

#[test]
fn bf16_compute_dtype_rounds_the_base_product_and_keeps_the_input_gradient() {
    let [bf16, f32_base] = flex_quantized([ComputeDtype::Bf16, ComputeDtype::F32]);
    let x = flex_random([2, 5, 64]).require_grad();
    let (y16, y32) = (bf16.forward(x.clone()), f32_base.forward(x.clone()));
    // The activations stay f32; their values are bf16 numbers (the low 16 bits are zero).
    assert_eq!(y16.dtype(), DType::F32);
    assert!(
        low_bits_zero(&y16).iter().all(|&z| z),
        "the bf16 product is rounded to bf16"
    );
    assert!(
        !low_bits_zero(&y32).iter().all(|&z| z),
        "the f32 product is not"
    );
    // bf16 keeps 8 significant bits: inputs and result are off by at most ~2^-8 relative.
    let scale = y32.clone().abs().max().into_scalar();
    let diff = (y16.clone() - y32.clone()).abs().max().into_scalar();
    assert!(
        diff > 0.0 && diff <= 2e-2 * scale,
        "bf16 vs f32 product: {diff} (scale {scale})"
    );
    let (g16, g32) = (
        y16.powf_scalar(2.0).sum().backward(),
        y32.powf_scalar(2.0).sum().backward(),
    );
    let (x16, x32) = (x.grad(&g16).unwrap(), x.grad(&g32).unwrap());
    let scale = x32.clone().abs().max().into_scalar();
    let diff = (x16 - x32).abs().max().into_scalar();
    assert!(
        diff <= 3e-2 * scale,
        "input gradient through the casts: {diff} (scale {scale})"
    );
}

#[test]
fn bf16_compute_dtype_is_refused_by_name_where_the_backend_has_no_bf16() {
    let dense = frozen_linear(random([64, 6]), None);
    let config = QuantConfig {
        compute_dtype: ComputeDtype::Bf16,
        ..QuantConfig::qlora()
    };
    let err = BaseLinear::from(dense)
        .quantize(config, "w")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("compute_dtype") && err.contains("bf16"),
        "{err}"
    );
}

/// Uploaded once: two more calls give the first call's values bit for bit without a new upload.
fn assert_reuses_the_upload<B: Backend>(
    q: &QuantizedLinear<B>,
    device: &B::Device,
    first: &[f32],
    what: &str,
) {
    for _ in 0..2 {
        let again = q.device_codes.dequantize::<B>(&q.weight, device).unwrap();
        assert_bits(&to_f32_vec(again), first, &format!("{what}, again"));
    }
    assert_eq!(q.device_codes.uploads(), 1, "{what}: codes uploaded once");
}

/// The device path (codes uploaded once, unpacked and scaled with tensor ops) gives the host
/// path's values bit for bit, on both CPU backends, for both 4-bit codes with and without
/// double quantization, including a matrix whose value count is not a multiple of eight.
fn device_codes_match_the_host_on<B: Backend>() {
    let device = Default::default();
    for (d_in, d_out, block_size) in [(6, 5, 6), (96, 64, 32)] {
        for kind in [QuantType::Nf4, QuantType::Fp4] {
            for double_quant in [false, true] {
                let weight =
                    Tensor::<B, 2>::random([d_in, d_out], Distribution::Normal(0.0, 1.0), &device);
                let config = QuantConfig {
                    kind,
                    block_size,
                    double_quant,
                    ..QuantConfig::qlora()
                };
                let (base, _) = BaseLinear::from(frozen_linear(weight, None))
                    .quantize(config, "w")
                    .unwrap();
                let q = base.as_quantized().unwrap();
                assert!(
                    q.device_codes.dequantize::<B>(&q.weight, &device).is_none(),
                    "off by default"
                );
                assert_eq!(q.device_codes.uploads(), 0, "nothing uploaded while off");
                q.device_codes.enable();
                let on_device = q.device_codes.dequantize::<B>(&q.weight, &device).unwrap();
                let host = q.dequantized(&device);
                let what = format!("{kind} d_in {d_in} block {block_size} dq {double_quant}");
                assert_eq!(on_device.dims(), host.dims(), "{what}");
                let on_device = to_f32_vec(on_device);
                assert_bits(&on_device, &to_f32_vec(host), &what);
                assert_reuses_the_upload(q, &device, &on_device, &what);
            }
        }
    }
    // int8 has no 4-bit code: it stays on the host path.
    let dense = frozen_linear(
        Tensor::<B, 2>::random([8, 4], Distribution::Normal(0.0, 1.0), &device),
        None,
    );
    let config = QuantConfig {
        kind: QuantType::Int8,
        block_size: 8,
        ..QuantConfig::qlora()
    };
    let (base, _) = BaseLinear::from(dense).quantize(config, "w").unwrap();
    let q = base.as_quantized().unwrap();
    q.device_codes.enable();
    assert!(q.device_codes.dequantize::<B>(&q.weight, &device).is_none());
}

#[test]
fn device_dequantization_equals_the_host_path_bit_for_bit() {
    device_codes_match_the_host_on::<NdArray<f32>>();
    device_codes_match_the_host_on::<burn_flex::Flex>();
}
