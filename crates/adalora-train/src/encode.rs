//! Sentence embeddings for `adalora encode`: one sentence per input line → one CSV row.
//!
//! Pooling follows sentence-transformers: `mean` averages the last hidden states over the
//! attention mask (`Σ h·m / max(Σ m, 1e-9)`), `cls` takes the `[CLS]` state; `normalize`
//! divides by the L2 norm (`max(‖x‖, 1e-12)`, torch's `F.normalize`).
//!
//! Output CSV: header `index,dim_0,dim_1,…,dim_{d-1}`, then one row per encoded line, where
//! `index` is the 0-based line number in the input file; values are written with Rust's
//! shortest round-trip `f32` formatting. Blank (whitespace-only) lines are skipped (their
//! index is simply absent). The file is written to a temporary file next to the output and
//! renamed into place, so a failed run never leaves a partial CSV.

use std::fmt;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use adalora_data::tokenize::TextTokenizer;
use adalora_model::{load_for_embedding, resolve_model_dir, ModelInput, SequenceClassifier};
use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::io::atomic_write;
use crate::task::load_tokenizer;

/// How token states become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mask-weighted mean of the last hidden states (sentence-transformers).
    #[default]
    Mean,
    /// The `[CLS]` token's last hidden state.
    Cls,
}

impl FromStr for Pooling {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            other => bail!("unknown pooling {other:?}; expected mean or cls"),
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        })
    }
}

/// Options of `adalora encode` (clap-free).
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeOptions {
    /// Model folder; `None` resolves the default (see [`resolve_model_dir`]).
    pub model_dir: Option<PathBuf>,
    /// Text file, one sentence per line (UTF-8).
    pub input: PathBuf,
    /// CSV to write.
    pub output: PathBuf,
    pub pooling: Pooling,
    pub normalize: bool,
    /// Maximum tokens per sentence, specials included (capped at the model's
    /// `max_position_embeddings`). sentence-transformers uses 256 for all-MiniLM-L6-v2.
    pub max_len: usize,
    pub batch_size: usize,
}

impl EncodeOptions {
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        EncodeOptions {
            model_dir: None,
            input: input.into(),
            output: output.into(),
            pooling: Pooling::Mean,
            normalize: false,
            max_len: 256,
            batch_size: 32,
        }
    }
}

/// What [`encode_file`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeReport {
    pub model_dir: PathBuf,
    pub output: PathBuf,
    /// Sentences encoded (rows written).
    pub sentences: usize,
    /// Blank lines skipped.
    pub skipped_blank: usize,
    /// Sentences cut to `max_len` tokens.
    pub truncated: usize,
    /// Embedding size.
    pub dim: usize,
}

/// Embed sentences with `model` (evaluation mode: use a non-autodiff backend or
/// `model.valid()`), `batch_size` at a time. Returns one vector per sentence.
pub fn embed_sentences<B: Backend, M: SequenceClassifier<B>>(
    model: &M,
    tokenizer: &TextTokenizer,
    sentences: &[&str],
    pooling: Pooling,
    normalize: bool,
    batch_size: usize,
    device: &B::Device,
) -> anyhow::Result<Vec<Vec<f32>>> {
    if batch_size == 0 {
        bail!("batch size must be at least 1");
    }
    let mut out = Vec::with_capacity(sentences.len());
    for chunk in sentences.chunks(batch_size) {
        let enc = chunk
            .iter()
            .map(|s| tokenizer.encode(s, None))
            .collect::<Result<Vec<_>, _>>()?;
        let (b, t) = (enc.len(), enc.iter().map(|e| e.len()).max().unwrap_or(0));
        let pad = tokenizer.pad_id() as i64;
        let (mut ids, mut types, mut mask) =
            (vec![pad; b * t], vec![0i64; b * t], vec![0i64; b * t]);
        for (r, e) in enc.iter().enumerate() {
            for (j, (&id, &tt)) in e.input_ids.iter().zip(&e.token_type_ids).enumerate() {
                ids[r * t + j] = id as i64;
                types[r * t + j] = tt as i64;
                mask[r * t + j] = 1;
            }
        }
        let input = ModelInput::<B>::from_rows(&ids, &types, &mask, b, t, device)?;
        let m = input.attention_mask.clone().float();
        let h = model.hidden_states(input);
        let pooled = pool(h, m, pooling);
        let pooled = if normalize {
            l2_normalize(pooled)
        } else {
            pooled
        };
        let d = pooled.dims()[1];
        let data = adalora_core::to_f32_vec(pooled);
        out.extend(data.chunks(d).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// Pool `[b, t, d]` states with the float mask `[b, t]`.
pub fn pool<B: Backend>(h: Tensor<B, 3>, mask: Tensor<B, 2>, pooling: Pooling) -> Tensor<B, 2> {
    let [b, _, d] = h.dims();
    match pooling {
        Pooling::Cls => h.slice([0..b, 0..1]).reshape([b, d]),
        Pooling::Mean => {
            let m = mask.unsqueeze_dim::<3>(2);
            let sum = (h * m.clone()).sum_dim(1).reshape([b, d]);
            let count = m.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
            sum / count
        }
    }
}

/// Row-wise `x / max(‖x‖₂, 1e-12)`.
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// `adalora encode`: read sentences, embed them on the CPU (ndarray backend), write the CSV
/// atomically.
pub fn encode_file(opts: &EncodeOptions) -> anyhow::Result<EncodeReport> {
    type Cpu = burn::backend::NdArray;
    let device = Default::default();
    let model_dir = resolve_model_dir(opts.model_dir.as_deref())?;
    let text = std::fs::read_to_string(&opts.input)
        .with_context(|| format!("reading {}", opts.input.display()))?;
    let model = load_for_embedding::<Cpu>(&model_dir, &device)?;
    let max_len = opts.max_len.min(adalora_model::max_tokens(&model_dir)?);
    let tokenizer = load_tokenizer(&model_dir, max_len)?;

    let mut indices = Vec::new();
    let mut sentences = Vec::new();
    let mut skipped_blank = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            skipped_blank += 1;
        } else {
            indices.push(i);
            sentences.push(line);
        }
    }
    let mut truncated = 0;
    for s in &sentences {
        if tokenizer.content_ids(s)?.len() + tokenizer.added_tokens(false) > max_len {
            truncated += 1;
        }
    }
    let vectors = embed_sentences(
        &model,
        &tokenizer,
        &sentences,
        opts.pooling,
        opts.normalize,
        opts.batch_size,
        &device,
    )?;
    let dim = vectors.first().map_or(0, Vec::len);
    write_embeddings_csv(&opts.output, &indices, &vectors, dim)?;
    Ok(EncodeReport {
        model_dir,
        output: opts.output.clone(),
        sentences: sentences.len(),
        skipped_blank,
        truncated,
        dim,
    })
}

/// Write `index,dim_0,…` rows atomically (temporary file + rename).
pub fn write_embeddings_csv(
    path: &Path,
    indices: &[usize],
    vectors: &[Vec<f32>],
    dim: usize,
) -> anyhow::Result<()> {
    let mut text = String::from("index");
    for j in 0..dim {
        write!(text, ",dim_{j}")?;
    }
    text.push('\n');
    for (i, v) in indices.iter().zip(vectors) {
        write!(text, "{i}")?;
        for x in v {
            write!(text, ",{x}")?;
        }
        text.push('\n');
    }
    atomic_write(path, text.as_bytes())
}
