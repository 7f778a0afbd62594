//! Block-wise quantization of frozen weights (QLoRA, Dettmers et al. 2023), following
//! bitsandbytes' `quantize_4bit` / `dequantize_4bit` / `quantize_blockwise` bit for bit.
//!
//! A matrix is quantized in Hugging Face layout (`[d_out, d_in]`, row-major — the tensor
//! bitsandbytes sees), in blocks of `block_size` consecutive values of a row, with one absmax
//! per block. Every value is scaled into [−1, 1] by its block's absmax and replaced by the index
//! of the nearest code value:
//!
//! * **NF4**: the 16 NormalFloat values (quantiles of N(0, 1) normalised to [−1, 1], exact 0);
//! * **FP4**: bitsandbytes' 4-bit float code (1 sign, 2 exponent, 1 mantissa bit);
//! * **int8**: symmetric linear int8, `round(127·x/absmax)`, absmax per block (not per row).
//!
//! 4-bit indices are packed two per byte, first value in the high nibble (bitsandbytes'
//! layout). With double quantization the absmax constants are themselves quantized to 8 bits
//! with bitsandbytes' signed dynamic code, in blocks of 256, after subtracting their mean.
//!
//! Plain Rust data: no backend, no I/O. The full-precision matrix is not kept.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// bitsandbytes' NF4 code (`CODE["nf4"]`, the paper's Appendix E values).
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.6961928,
    -0.52507305,
    -0.3949175,
    -0.28444138,
    -0.18477343,
    -0.091050036,
    0.0,
    0.0795803,
    0.1609302,
    0.2461123,
    0.33791524,
    0.44070983,
    0.562617,
    0.72295684,
    1.0,
];

/// bitsandbytes' FP4 code (`CODE["fp4"]`): index bit 3 is the sign; 0 and 8 are both zero.
pub const FP4_CODE: [f32; 16] = [
    0.0,
    0.0052083335,
    0.6666667,
    1.0,
    0.33333334,
    0.5,
    0.16666667,
    0.25,
    0.0,
    -0.0052083335,
    -0.6666667,
    -1.0,
    -0.33333334,
    -0.5,
    -0.16666667,
    -0.25,
];

/// Block size of the second quantization of the absmax constants (bitsandbytes, the paper).
pub const DOUBLE_QUANT_BLOCK: usize = 256;

/// The number format of a quantized base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantType {
    Nf4,
    Fp4,
    Int8,
}

impl QuantType {
    pub fn name(self) -> &'static str {
        match self {
            QuantType::Nf4 => "nf4",
            QuantType::Fp4 => "fp4",
            QuantType::Int8 => "int8",
        }
    }

    /// Bits per stored value.
    pub fn bits(self) -> usize {
        match self {
            QuantType::Nf4 | QuantType::Fp4 => 4,
            QuantType::Int8 => 8,
        }
    }

    pub(crate) fn code(self) -> Option<&'static [f32; 16]> {
        match self {
            QuantType::Nf4 => Some(&NF4_CODE),
            QuantType::Fp4 => Some(&FP4_CODE),
            QuantType::Int8 => None,
        }
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuantType {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nf4" => Ok(QuantType::Nf4),
            "fp4" => Ok(QuantType::Fp4),
            "int8" => Ok(QuantType::Int8),
            _ => Err(CoreError::invalid(
                "quantize",
                s,
                "expected nf4, fp4 or int8",
            )),
        }
    }
}

/// The dtype the quantized base's matmul runs in (bitsandbytes' `bnb_4bit_compute_dtype`):
/// the input and deq(q(W0)) are cast to it, the product and bias are computed in it, and the
/// result is cast back to the activations' dtype. The adapters always compute in f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDtype {
    /// Exact with respect to deq(q(W0)); the default, and the fast one on CPU.
    #[default]
    #[serde(alias = "float32")]
    F32,
    /// The QLoRA paper's setting, native on CUDA; on burn-flex (CPU) it reproduces the numerics
    /// only (bf16 inputs, products accumulated in f32, result rounded to bf16).
    #[serde(alias = "bfloat16")]
    Bf16,
}

impl ComputeDtype {
    pub fn name(self) -> &'static str {
        match self {
            ComputeDtype::F32 => "f32",
            ComputeDtype::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for ComputeDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ComputeDtype {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(ComputeDtype::F32),
            "bf16" | "bfloat16" => Ok(ComputeDtype::Bf16),
            _ => Err(CoreError::invalid(
                "compute_dtype",
                s,
                "expected f32 or bf16",
            )),
        }
    }
}

/// How the frozen base is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantConfig {
    pub kind: QuantType,
    /// Values per absmax block (bitsandbytes' `blocksize`); must divide every row.
    pub block_size: usize,
    /// Quantize the absmax constants to 8 bits (blocks of 256, mean subtracted).
    pub double_quant: bool,
    /// The dtype of the base's matmul; absent in files written before it existed (= f32).
    #[serde(default)]
    pub compute_dtype: ComputeDtype,
}

impl QuantConfig {
    /// QLoRA's storage setting: NF4, block 64, double quantization (compute in f32).
    pub fn qlora() -> Self {
        QuantConfig {
            kind: QuantType::Nf4,
            block_size: 64,
            double_quant: true,
            compute_dtype: ComputeDtype::F32,
        }
    }

    pub fn validate(&self) -> Result<(), CoreError> {
        // Packing pairs values, so a 4-bit block must hold an even number of them.
        if self.block_size < 2 || !self.block_size.is_multiple_of(2) {
            return Err(CoreError::invalid(
                "quant_block_size",
                &self.block_size.to_string(),
                "a block holds an even number (>= 2) of values",
            ));
        }
        Ok(())
    }
}

/// bitsandbytes' signed dynamic 8-bit code (`create_dynamic_map(signed=True)`), used for the
/// absmax constants under double quantization: 7 decades of exponent (5.5e-7 … 1), sorted.
///
/// The published table, not recomputed: bitsandbytes builds it from `torch.linspace`, whose
/// float32 rounding depends on the CPU's vector width. Checked value for value against
/// bitsandbytes by the fixture test.
pub const DYNAMIC_CODE: [f32; 256] = [
    -0.99296874,
    -0.9789063,
    -0.96484375,
    -0.9507812,
    -0.93671876,
    -0.92265624,
    -0.9085938,
    -0.89453125,
    -0.8804687,
    -0.86640626,
    -0.85234374,
    -0.8382813,
    -0.82421875,
    -0.8101562,
    -0.79609376,
    -0.78203124,
    -0.7679688,
    -0.75390625,
    -0.7398437,
    -0.72578126,
    -0.7117188,
    -0.6976563,
    -0.68359375,
    -0.6695312,
    -0.65546876,
    -0.6414063,
    -0.6273438,
    -0.61328125,
    -0.5992187,
    -0.58515626,
    -0.5710938,
    -0.5570313,
    -0.54296875,
    -0.5289062,
    -0.5148437,
    -0.50078124,
    -0.4867187,
    -0.47265625,
    -0.45859373,
    -0.44453126,
    -0.43046874,
    -0.41640624,
    -0.40234375,
    -0.38828123,
    -0.37421876,
    -0.36015624,
    -0.34609374,
    -0.33203125,
    -0.31796873,
    -0.30390626,
    -0.28984374,
    -0.27578127,
    -0.26171875,
    -0.24765624,
    -0.23359375,
    -0.21953125,
    -0.20546874,
    -0.19140625,
    -0.17734376,
    -0.16328125,
    -0.14921875,
    -0.13515624,
    -0.12109375,
    -0.107031256,
    -0.09859375,
    -0.09578126,
    -0.092968754,
    -0.09015625,
    -0.08734375,
    -0.08453125,
    -0.08171876,
    -0.07890625,
    -0.07609375,
    -0.07328125,
    -0.070468746,
    -0.067656256,
    -0.06484375,
    -0.06203125,
    -0.059218753,
    -0.05640625,
    -0.05359375,
    -0.05078125,
    -0.04796875,
    -0.04515625,
    -0.042343747,
    -0.03953125,
    -0.036718752,
    -0.03390625,
    -0.03109375,
    -0.028281251,
    -0.02546875,
    -0.02265625,
    -0.019843752,
    -0.01703125,
    -0.01421875,
    -0.01140625,
    -0.00971875,
    -0.009156249,
    -0.00859375,
    -0.00803125,
    -0.00746875,
    -0.00690625,
    -0.00634375,
    -0.00578125,
    -0.0052187503,
    -0.0046562497,
    -0.00409375,
    -0.0035312497,
    -0.00296875,
    -0.00240625,
    -0.00184375,
    -0.0012812499,
    -0.0009437501,
    -0.00083125,
    -0.00071875006,
    -0.0006062501,
    -0.00049375003,
    -0.00038125002,
    -0.00026875004,
    -0.00015625001,
    -8.875e-05,
    -6.625e-05,
    -4.375e-05,
    -2.1249998e-05,
    -7.75e-06,
    -3.2500002e-06,
    -5.5000004e-07,
    0.0,
    5.5000004e-07,
    3.2500002e-06,
    7.75e-06,
    2.1249998e-05,
    4.375e-05,
    6.625e-05,
    8.875e-05,
    0.00015625001,
    0.00026875004,
    0.00038125002,
    0.00049375003,
    0.0006062501,
    0.00071875006,
    0.00083125,
    0.0009437501,
    0.0012812499,
    0.00184375,
    0.00240625,
    0.00296875,
    0.0035312497,
    0.00409375,
    0.0046562497,
    0.0052187503,
    0.00578125,
    0.00634375,
    0.00690625,
    0.00746875,
    0.00803125,
    0.00859375,
    0.009156249,
    0.00971875,
    0.01140625,
    0.01421875,
    0.01703125,
    0.019843752,
    0.02265625,
    0.02546875,
    0.028281251,
    0.03109375,
    0.03390625,
    0.036718752,
    0.03953125,
    0.042343747,
    0.04515625,
    0.04796875,
    0.05078125,
    0.05359375,
    0.05640625,
    0.059218753,
    0.06203125,
    0.06484375,
    0.067656256,
    0.070468746,
    0.07328125,
    0.07609375,
    0.07890625,
    0.08171876,
    0.08453125,
    0.08734375,
    0.09015625,
    0.092968754,
    0.09578126,
    0.09859375,
    0.107031256,
    0.12109375,
    0.13515624,
    0.14921875,
    0.16328125,
    0.17734376,
    0.19140625,
    0.20546874,
    0.21953125,
    0.23359375,
    0.24765624,
    0.26171875,
    0.27578127,
    0.28984374,
    0.30390626,
    0.31796873,
    0.33203125,
    0.34609374,
    0.36015624,
    0.37421876,
    0.38828123,
    0.40234375,
    0.41640624,
    0.43046874,
    0.44453126,
    0.45859373,
    0.47265625,
    0.4867187,
    0.50078124,
    0.5148437,
    0.5289062,
    0.54296875,
    0.5570313,
    0.5710938,
    0.58515626,
    0.5992187,
    0.61328125,
    0.6273438,
    0.6414063,
    0.65546876,
    0.6695312,
    0.68359375,
    0.6976563,
    0.7117188,
    0.72578126,
    0.7398437,
    0.75390625,
    0.7679688,
    0.78203124,
    0.79609376,
    0.8101562,
    0.82421875,
    0.8382813,
    0.85234374,
    0.86640626,
    0.8804687,
    0.89453125,
    0.9085938,
    0.92265624,
    0.93671876,
    0.9507812,
    0.96484375,
    0.9789063,
    0.99296874,
    1.0,
];

/// Index of the code value nearest to `x`, the lower one on a tie (the 8-bit path of
/// bitsandbytes' CPU kernel: binary search, then the closer neighbour).
fn nearest(code: &[f32], x: f32) -> u8 {
    let mut best = 0;
    let mut best_d = f32::INFINITY;
    for (j, &c) in code.iter().enumerate() {
        let d = (x - c).abs();
        if d < best_d {
            best = j;
            best_d = d;
        }
    }
    best as u8
}

/// The 4-bit quantizer of bitsandbytes (`torch.bucketize` against the float32 midpoints of the
/// sorted code, then back to code indices): ties between neighbours go to the lower value.
struct Bucketizer {
    /// Code indices in ascending value order (stable: FP4's two zeros keep index order).
    order: [u8; 16],
    midpoints: [f32; 15],
}

impl Bucketizer {
    fn new(code: &[f32; 16]) -> Self {
        let mut order: [u8; 16] = std::array::from_fn(|i| i as u8);
        order.sort_by(|&a, &b| {
            code[a as usize]
                .partial_cmp(&code[b as usize])
                .expect("finite code")
                .then(a.cmp(&b))
        });
        let midpoints =
            std::array::from_fn(|i| (code[order[i] as usize] + code[order[i + 1] as usize]) / 2.0);
        Bucketizer { order, midpoints }
    }

    /// `order[#midpoints < x]`.
    fn index(&self, x: f32) -> u8 {
        self.order[self.midpoints.iter().take_while(|&&m| m < x).count()]
    }
}
/// Largest |x| of each block (the last block may be shorter).
fn block_absmax(values: &[f32], block: usize) -> Vec<f32> {
    values
        .chunks(block)
        .map(|b| b.iter().fold(0f32, |m, v| m.max(v.abs())))
        .collect()
}

/// `clamp(x · (1/absmax), −1, 1)` — bitsandbytes' 4-bit path multiplies by the reciprocal.
/// An all-zero block scales to 0.
fn scaled(x: f32, absmax: f32) -> f32 {
    if absmax == 0.0 {
        return 0.0;
    }
    (x * (1.0 / absmax)).clamp(-1.0, 1.0)
}

/// `x / absmax` — bitsandbytes' 8-bit CPU kernel divides.
fn divided(x: f32, absmax: f32) -> f32 {
    if absmax == 0.0 {
        return 0.0;
    }
    x / absmax
}

/// Eight f32 lanes: one AVX2 vector of torch's CPU kernels.
type Lanes = [f32; 8];

fn add_lanes(acc: &mut Lanes, v: &Lanes) {
    for (a, b) in acc.iter_mut().zip(v) {
        *a += *b;
    }
}

/// `torch.mean` of a contiguous float32 vector on the CPU, bit for bit: the sum runs over
/// 8-lane vectors with 4 interleaved partial sums, each a 4-level cascade
/// (`multi_row_sum` / `row_sum` / `vectorized_inner_sum` in ATen's SumKernel.cpp); then the
/// scalar tail, then the lanes in order; then one float32 division. bitsandbytes takes the
/// double-quantization offset this way, and a 1-ulp offset moves every dequantized absmax.
fn torch_mean_f32(values: &[f32]) -> f32 {
    const ILP: usize = 4;
    let vectors = values.len() / 8;
    let vector = |i: usize| -> Lanes { std::array::from_fn(|k| values[8 * i + k]) };
    let groups = vectors / ILP;
    let mut partial = cascade_sum(groups, |g| std::array::from_fn(|k| vector(ILP * g + k)));
    for i in groups * ILP..vectors {
        add_lanes(&mut partial[0], &vector(i));
    }
    for k in 1..ILP {
        let p = partial[k];
        add_lanes(&mut partial[0], &p);
    }
    let mut sum = 0f32;
    for &v in &values[vectors * 8..] {
        sum += v;
    }
    for v in partial[0] {
        sum += v;
    }
    sum / values.len() as f32
}

/// ATen's `multi_row_sum` over `size` elements of 4 vectors each: level 0 adds `2^p`
/// elements, then carries into the levels above (p = max(4, ⌈log2 size⌉ / 4)).
fn cascade_sum(size: usize, element: impl Fn(usize) -> [Lanes; 4]) -> [Lanes; 4] {
    const LEVELS: usize = 4;
    let ceil_log2 = if size <= 2 {
        1
    } else {
        (usize::BITS - (size - 1).leading_zeros()) as usize
    };
    let level_power = 4.max(ceil_log2 / LEVELS);
    let level_step = 1usize << level_power;
    let level_mask = level_step - 1;
    let add = |acc: &mut [Lanes; 4], e: &[Lanes; 4]| {
        for (a, v) in acc.iter_mut().zip(e) {
            add_lanes(a, v);
        }
    };
    let mut acc = [[[0f32; 8]; 4]; LEVELS];
    let mut i = 0;
    while i + level_step <= size {
        for _ in 0..level_step {
            add(&mut acc[0], &element(i));
            i += 1;
        }
        for j in 1..LEVELS {
            let lower = std::mem::replace(&mut acc[j - 1], [[0f32; 8]; 4]);
            add(&mut acc[j], &lower);
            if i & (level_mask << (j * level_power)) != 0 {
                break;
            }
        }
    }
    while i < size {
        add(&mut acc[0], &element(i));
        i += 1;
    }
    for j in 1..LEVELS {
        let upper = acc[j];
        add(&mut acc[0], &upper);
    }
    acc[0]
}

/// The per-block absmax constants as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum BlockScales {
    /// One f32 per block.
    Full(Vec<f32>),
    /// Double quantization: 8-bit dynamic-code indices of `absmax − offset`, one f32 scale per
    /// 256 of them, and the subtracted mean.
    Double {
        codes: Vec<u8>,
        scales: Vec<f32>,
        offset: f32,
    },
}

impl BlockScales {
    fn new(absmax: Vec<f32>, double_quant: bool) -> Self {
        if !double_quant {
            return BlockScales::Full(absmax);
        }
        // bitsandbytes: offset = absmax.mean() (float32), then quantize_blockwise(absmax − offset).
        let offset = torch_mean_f32(&absmax);
        let centred: Vec<f32> = absmax.iter().map(|&v| v - offset).collect();
        let scales = block_absmax(&centred, DOUBLE_QUANT_BLOCK);
        let code = &DYNAMIC_CODE;
        let codes = centred
            .chunks(DOUBLE_QUANT_BLOCK)
            .zip(&scales)
            .flat_map(|(b, &s)| b.iter().map(move |&v| nearest(code, divided(v, s))))
            .collect();
        BlockScales::Double {
            codes,
            scales,
            offset,
        }
    }

    /// The absmax of every block as dequantization uses it.
    pub fn absmax(&self) -> Vec<f32> {
        match self {
            BlockScales::Full(v) => v.clone(),
            BlockScales::Double {
                codes,
                scales,
                offset,
            } => {
                let code = &DYNAMIC_CODE;
                codes
                    .chunks(DOUBLE_QUANT_BLOCK)
                    .zip(scales)
                    .flat_map(|(b, &s)| b.iter().map(move |&q| code[q as usize] * s + *offset))
                    .collect()
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            BlockScales::Full(v) => 4 * v.len(),
            BlockScales::Double { codes, scales, .. } => codes.len() + 4 * scales.len() + 4,
        }
    }
}

/// A quantized matrix in HF layout `[rows, cols]` (`rows = d_out`, `cols = d_in`).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedMatrix {
    pub config: QuantConfig,
    pub rows: usize,
    pub cols: usize,
    /// Packed 4-bit indices (high nibble first) or int8 values stored as bytes.
    pub codes: Vec<u8>,
    pub scales: BlockScales,
}

impl QuantizedMatrix {
    /// Quantize a row-major `[rows, cols]` matrix. `name` (a tensor name) is only used in errors.
    pub fn quantize(
        values: &[f32],
        rows: usize,
        cols: usize,
        config: QuantConfig,
        name: &str,
    ) -> Result<Self, CoreError> {
        config.validate()?;
        if values.len() != rows * cols {
            return Err(CoreError::Shape(format!(
                "{name}: {} values for a [{rows}, {cols}] matrix",
                values.len()
            )));
        }
        if !cols.is_multiple_of(config.block_size) {
            return Err(CoreError::invalid(
                "quant_block_size",
                &config.block_size.to_string(),
                &format!("it does not divide the rows of {name} ({cols} values each)"),
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(CoreError::Shape(format!(
                "{name}: value #{i} is {} and cannot be quantized",
                values[i]
            )));
        }
        let absmax = block_absmax(values, config.block_size);
        let codes = match config.kind.code() {
            Some(code) => pack_nibbles(values, &absmax, config.block_size, code),
            None => int8_codes(values, &absmax, config.block_size),
        };
        Ok(QuantizedMatrix {
            config,
            rows,
            cols,
            codes,
            scales: BlockScales::new(absmax, config.double_quant),
        })
    }

    /// The dequantized matrix, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.dequantize_into(&mut out);
        out
    }

    /// Dequantize into `out` (`rows · cols` values): one table lookup and one multiply per value.
    pub fn dequantize_into(&self, out: &mut [f32]) {
        let block = self.config.block_size;
        let absmax = self.scales.absmax();
        match self.config.kind.code() {
            Some(code) => {
                let bytes_per_block = block / 2;
                for ((o, packed), &s) in out
                    .chunks_mut(block)
                    .zip(self.codes.chunks(bytes_per_block))
                    .zip(&absmax)
                {
                    for (pair, &byte) in o.chunks_mut(2).zip(packed) {
                        pair[0] = code[(byte >> 4) as usize] * s;
                        pair[1] = code[(byte & 0x0f) as usize] * s;
                    }
                }
            }
            None => {
                for ((o, q), &s) in out
                    .chunks_mut(block)
                    .zip(self.codes.chunks(block))
                    .zip(&absmax)
                {
                    let step = s / 127.0;
                    for (v, &b) in o.iter_mut().zip(q) {
                        *v = (b as i8) as f32 * step;
                    }
                }
            }
        }
    }

    /// Bytes this matrix occupies in memory (codes + absmax constants).
    pub fn resident_bytes(&self) -> usize {
        self.codes.len() + self.scales.bytes()
    }

    /// Bytes of the same matrix in f32.
    pub fn f32_bytes(&self) -> usize {
        4 * self.rows * self.cols
    }
}

fn pack_nibbles(values: &[f32], absmax: &[f32], block: usize, code: &[f32; 16]) -> Vec<u8> {
    let bucketizer = Bucketizer::new(code);
    let bucketizer = &bucketizer;
    values
        .chunks(block)
        .zip(absmax)
        .flat_map(|(b, &s)| {
            b.chunks(2).map(move |pair| {
                let hi = bucketizer.index(scaled(pair[0], s));
                let lo = bucketizer.index(scaled(pair[1], s));
                (hi << 4) | lo
            })
        })
        .collect()
}

fn int8_codes(values: &[f32], absmax: &[f32], block: usize) -> Vec<u8> {
    values
        .chunks(block)
        .zip(absmax)
        .flat_map(|(b, &s)| {
            b.iter()
                .map(move |&x| ((scaled(x, s) * 127.0).round() as i8) as u8)
        })
        .collect()
}

/// Quantization error of one matrix: `mean|W − Ŵ| / mean|W|` and `max|W − Ŵ| / max|W|`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QuantError {
    pub mean_relative: f64,
    pub max_relative: f64,
}

impl QuantError {
    pub fn between(original: &[f32], dequantized: &[f32]) -> Self {
        let (mut sum_err, mut sum_abs, mut max_err, mut max_abs) = (0f64, 0f64, 0f64, 0f64);
        for (&w, &d) in original.iter().zip(dequantized) {
            let e = (w as f64 - d as f64).abs();
            sum_err += e;
            sum_abs += (w as f64).abs();
            max_err = max_err.max(e);
            max_abs = max_abs.max((w as f64).abs());
        }
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        QuantError {
            mean_relative: ratio(sum_err, sum_abs),
            max_relative: ratio(max_err, max_abs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: QuantType, double_quant: bool) -> QuantConfig {
        QuantConfig {
            kind,
            block_size: 4,
            double_quant,
            compute_dtype: ComputeDtype::F32,
        }
    }

    #[test]
    fn code_values_round_trip_exactly_and_pack_high_nibble_first() {
        // A block whose absmax is 1 holds code values exactly.
        let w = [-1.0, 0.0, NF4_CODE[8], 1.0];
        let q = QuantizedMatrix::quantize(&w, 1, 4, config(QuantType::Nf4, false), "w").unwrap();
        assert_eq!(q.codes, vec![0x07, 0x8f]);
        assert_eq!(q.dequantize(), w.to_vec());
        assert_eq!(q.resident_bytes(), 2 + 4);
    }

    #[test]
    fn int8_is_absmax_per_block() {
        let w = [0.5, -0.25, 0.0, 1.0, 2.0, -2.0, 1.0, 0.0];
        let q = QuantizedMatrix::quantize(&w, 2, 4, config(QuantType::Int8, false), "w").unwrap();
        assert_eq!(q.scales, BlockScales::Full(vec![1.0, 2.0]));
        assert_eq!(q.codes[..4], [64, (-32i8) as u8, 0, 127]);
        let d = q.dequantize();
        assert!(QuantError::between(&w, &d).max_relative < 0.5 / 127.0);
    }

    #[test]
    fn dynamic_code_is_sorted_signed_and_spans_seven_decades() {
        let c = DYNAMIC_CODE;
        assert!(c.windows(2).all(|w| w[0] <= w[1]));
        assert!(c[0] > -1.0 && c[0] < -0.99 && c[255] == 1.0);
        assert!(c.contains(&0.0));
        let smallest = c.iter().filter(|v| **v > 0.0).fold(1f32, |m, v| m.min(*v));
        assert!((smallest - 5.5e-7).abs() < 1e-9, "{smallest}");
    }

    #[test]
    fn double_quant_keeps_absmax_close_and_saves_bytes() {
        let w: Vec<f32> = (0..4096)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let single =
            QuantizedMatrix::quantize(&w, 4, 1024, config(QuantType::Nf4, false), "w").unwrap();
        let double =
            QuantizedMatrix::quantize(&w, 4, 1024, config(QuantType::Nf4, true), "w").unwrap();
        assert_eq!(single.codes, double.codes);
        let (a, b) = (single.scales.absmax(), double.scales.absmax());
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst < 0.01, "{worst}");
        assert!(double.resident_bytes() < single.resident_bytes());
    }

    #[test]
    fn bad_settings_name_the_setting_and_tensor() {
        let err =
            QuantizedMatrix::quantize(&[0.0; 12], 2, 6, config(QuantType::Nf4, false), "l0.q")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("quant_block_size = 4") && err.contains("l0.q"),
            "{err}"
        );
        let err = "nf3".parse::<QuantType>().unwrap_err().to_string();
        assert!(err.contains("quantize = nf3"), "{err}");
        let odd = QuantConfig {
            block_size: 3,
            ..QuantConfig::qlora()
        };
        assert!(odd.validate().is_err());
        let err = QuantizedMatrix::quantize(
            &[0.0, f32::NAN, 0.0, 0.0],
            1,
            4,
            config(QuantType::Nf4, false),
            "w",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("value #1"), "{err}");
    }
}
