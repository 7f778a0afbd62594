//! Loading HF BERT-family checkpoints (`config.json` + `model.safetensors`) and exporting an
//! encoder back to HF layout.
//!
//! Key names follow HF: with or without the `bert.` prefix (detected; a
//! `BertForSequenceClassification` checkpoint has it, a `BertModel` one does not).
//! `*.position_ids` buffers and pretraining heads (`cls.*`) are skipped; `classifier.*` is read
//! only by [`load_for_classification`]. Any other tensor left over, missing or of the wrong
//! shape is reported — all of them at once — in [`ModelError::Weights`].
//! PyTorch `Linear` weights `[d_out, d_in]` are transposed into burn's `[d_in, d_out]`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use adalora_core::AdaptedLinear;
use adalora_data::tokenize::TextTokenizer;
use burn::module::Param;
use burn::nn::{DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::bert::{BertEmbeddings, BertForSequenceClassification, BertLayer, BertModel};
use crate::config::{Activation, BertConfig};
use crate::error::{ModelError, FETCH_HINT};

/// Folder name of the default model in the asset cache.
pub const DEFAULT_MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// Environment variable naming a model folder.
pub const MODEL_DIR_ENV: &str = "ADALORA_MODEL_DIR";
/// Environment variable naming the asset cache (models live in `<cache>/models/`).
pub const CACHE_ENV: &str = "ADALORA_CACHE";

/// Find the model folder: `explicit` > `$ADALORA_MODEL_DIR` >
/// `$ADALORA_CACHE/models/all-MiniLM-L6-v2` > the first `.cache/models/all-MiniLM-L6-v2` found
/// walking up from the current directory. The folder must hold `config.json` and
/// `model.safetensors`.
pub fn resolve_model_dir(explicit: Option<&Path>) -> Result<PathBuf, ModelError> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let (dir, source) = if let Some(p) = explicit {
        (p.to_path_buf(), "--model".to_string())
    } else if let Some(p) = env(MODEL_DIR_ENV) {
        (p, format!("${MODEL_DIR_ENV}"))
    } else if let Some(c) = env(CACHE_ENV) {
        (
            c.join("models").join(DEFAULT_MODEL_NAME),
            format!("${CACHE_ENV}"),
        )
    } else {
        let cwd = std::env::current_dir().map_err(|e| ModelError::io(".", e))?;
        let found = cwd
            .ancestors()
            .map(|d| d.join(".cache").join("models").join(DEFAULT_MODEL_NAME))
            .find(|d| d.is_dir());
        match found {
            Some(d) => (d, "the asset cache".to_string()),
            None => {
                return Err(ModelError::ModelNotFound {
                    what: format!(
                        "no .cache/models/{DEFAULT_MODEL_NAME} in {} or any parent folder \
                         (and neither ${MODEL_DIR_ENV} nor ${CACHE_ENV} is set)",
                        cwd.display()
                    ),
                    hint: FETCH_HINT.into(),
                })
            }
        }
    };
    for f in ["config.json", "model.safetensors"] {
        if !dir.join(f).is_file() {
            return Err(ModelError::ModelNotFound {
                what: format!("{} (from {source}) has no {f}", dir.display()),
                hint: FETCH_HINT.into(),
            });
        }
    }
    Ok(dir)
}

/// The tokenizer of a model folder (`tokenizer.json`), truncating to `max_len` tokens.
pub fn load_tokenizer(model_dir: &Path, max_len: usize) -> Result<TextTokenizer, ModelError> {
    Ok(TextTokenizer::from_file(
        model_dir.join("tokenizer.json"),
        max_len,
    )?)
}

/// A checkpoint's raw tensors, in memory.
pub struct Checkpoint {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Checkpoint {
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        let ck = Checkpoint {
            path: path.to_path_buf(),
            bytes,
        };
        ck.tensors()?;
        Ok(ck)
    }

    fn tensors(&self) -> Result<SafeTensors<'_>, ModelError> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| ModelError::Safetensors {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .tensors()
            .map(|t| t.names().into_iter().map(String::from).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// `"bert."` when the encoder's keys carry that prefix, else `""`.
    pub fn prefix(&self) -> &'static str {
        if self.names().iter().any(|n| n.starts_with("bert.")) {
            "bert."
        } else {
            ""
        }
    }
}

/// Reads tensors by name, collecting every problem instead of stopping at the first.
struct Reader<'a> {
    st: SafeTensors<'a>,
    prefix: &'static str,
    used: BTreeSet<String>,
    problems: Vec<String>,
}

impl Reader<'_> {
    fn has(&self, full: &str) -> bool {
        self.st.tensor(full).is_ok()
    }

    /// The tensor `full` as f32 (row-major), checked against `shape`. On a problem, records it
    /// and returns zeros so that loading can go on and report everything.
    fn take_full(&mut self, full: &str, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let view = match self.st.tensor(full) {
            Ok(v) => v,
            Err(_) => {
                self.problems
                    .push(format!("missing tensor {full} (expected shape {shape:?})"));
                return vec![0.0; n];
            }
        };
        self.used.insert(full.to_string());
        if let Some(marker) = self.quantization_marker(full) {
            self.problems.push(format!(
                "tensor {full} is stored quantized ({marker} present), a format this loader does \
                 not read; load the full-precision checkpoint and quantize it with --quantize"
            ));
            return vec![0.0; n];
        }
        if view.shape() != shape {
            self.problems.push(format!(
                "tensor {full} has shape {:?}, expected {shape:?}",
                view.shape()
            ));
            return vec![0.0; n];
        }
        let data = view.data();
        match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            other => {
                self.problems.push(format!(
                    "tensor {full} has dtype {other:?}, expected F32 (or F64/BF16)"
                ));
                vec![0.0; n]
            }
        }
    }

    /// The first companion tensor of a quantized weight (bitsandbytes writes `W.absmax`,
    /// `W.quant_map`, `W.quant_state.*` or `W.SCB`; other formats similar `W.<stat>` tensors),
    /// marked as used so that it is not reported a second time as unexpected.
    fn quantization_marker(&mut self, full: &str) -> Option<String> {
        let prefix = format!("{full}.");
        let companions: Vec<String> = self
            .st
            .names()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .map(|n| n.to_string())
            .collect();
        let first = companions.iter().min().cloned()?;
        self.used.extend(companions);
        Some(first)
    }

    /// An encoder tensor (the prefix is added).
    fn take(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        let full = format!("{}{name}", self.prefix);
        self.take_full(&full, shape)
    }

    fn tensor<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Param<Tensor<B, D>> {
        let data = self.take(name, &shape);
        Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), device))
    }

    /// A PyTorch `Linear` (`weight [d_out, d_in]`, `bias [d_out]`) as a burn `Linear`.
    fn linear<B: Backend>(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
        full: bool,
    ) -> Linear<B> {
        let (w_name, b_name) = if full {
            (format!("{name}.weight"), format!("{name}.bias"))
        } else {
            (
                format!("{}{name}.weight", self.prefix),
                format!("{}{name}.bias", self.prefix),
            )
        };
        let w = self.take_full(&w_name, &[d_out, d_in]);
        let b = self.take_full(&b_name, &[d_out]);
        Linear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(transpose(&w, d_out, d_in), [d_in, d_out]),
                device,
            )),
            bias: Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(b, [d_out]),
                device,
            ))),
        }
    }

    fn dense<B: Backend>(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> AdaptedLinear<B> {
        AdaptedLinear::Plain(self.linear(name, d_in, d_out, device, false).into())
    }

    fn layer_norm<B: Backend>(
        &mut self,
        name: &str,
        cfg: &BertConfig,
        device: &B::Device,
    ) -> LayerNorm<B> {
        let h = cfg.hidden_size;
        let mut ln = LayerNormConfig::new(h)
            .with_epsilon(cfg.layer_norm_eps)
            .init(device);
        // Old checkpoints name LayerNorm parameters gamma/beta.
        let legacy = !self.has(&format!("{}{name}.weight", self.prefix))
            && self.has(&format!("{}{name}.gamma", self.prefix));
        let (w, b) = if legacy {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        ln.gamma = self.tensor(&format!("{name}.{w}"), [h], device);
        ln.beta = Some(self.tensor(&format!("{name}.{b}"), [h], device));
        ln
    }

    fn embedding<B: Backend>(
        &mut self,
        name: &str,
        n: usize,
        h: usize,
        device: &B::Device,
    ) -> Embedding<B> {
        let mut e = EmbeddingConfig::new(n, h).init(device);
        e.weight = self.tensor(&format!("{name}.weight"), [n, h], device);
        e
    }
}

pub(crate) fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Whether a leftover tensor is expected to be ignored by the encoder loader.
fn ignorable(name: &str) -> bool {
    name.ends_with("position_ids") || name.starts_with("cls.") || name.starts_with("classifier.")
}

fn build_encoder<B: Backend>(
    r: &mut Reader<'_>,
    cfg: &BertConfig,
    device: &B::Device,
) -> BertModel<B> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let gelu_tanh = cfg.activation() == Ok(Activation::GeluTanh);
    let embeddings = BertEmbeddings {
        word_embeddings: r.embedding("embeddings.word_embeddings", cfg.vocab_size, h, device),
        position_embeddings: r.embedding(
            "embeddings.position_embeddings",
            cfg.max_position_embeddings,
            h,
            device,
        ),
        token_type_embeddings: r.embedding(
            "embeddings.token_type_embeddings",
            cfg.type_vocab_size,
            h,
            device,
        ),
        layer_norm: r.layer_norm("embeddings.LayerNorm", cfg, device),
        dropout: DropoutConfig::new(cfg.hidden_dropout_prob).init(),
    };
    let layers = (0..cfg.num_hidden_layers)
        .map(|l| {
            let p = format!("encoder.layer.{l}");
            BertLayer {
                query: r.dense(&format!("{p}.attention.self.query"), h, h, device),
                key: r.dense(&format!("{p}.attention.self.key"), h, h, device),
                value: r.dense(&format!("{p}.attention.self.value"), h, h, device),
                attention_output: r.dense(&format!("{p}.attention.output.dense"), h, h, device),
                attention_layer_norm: r.layer_norm(
                    &format!("{p}.attention.output.LayerNorm"),
                    cfg,
                    device,
                ),
                intermediate: r.dense(&format!("{p}.intermediate.dense"), h, i, device),
                output: r.dense(&format!("{p}.output.dense"), i, h, device),
                output_layer_norm: r.layer_norm(&format!("{p}.output.LayerNorm"), cfg, device),
                attention_dropout: DropoutConfig::new(cfg.attention_probs_dropout_prob).init(),
                hidden_dropout: DropoutConfig::new(cfg.hidden_dropout_prob).init(),
                num_heads: cfg.num_attention_heads,
                gelu_tanh,
            }
        })
        .collect();
    let pooler = r.dense("pooler.dense", h, h, device);
    BertModel {
        embeddings,
        layers,
        pooler,
    }
}

fn finish(r: &Reader<'_>, path: &Path) -> Result<(), ModelError> {
    let mut problems = r.problems.clone();
    let mut names: Vec<&str> = r.st.names();
    names.sort();
    for n in names {
        if !r.used.contains(n) && !ignorable(n) {
            problems.push(format!("unexpected tensor {n}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ModelError::Weights {
            path: path.to_path_buf(),
            problems,
        })
    }
}

/// Load the encoder of a HF BERT-family folder (`config.json` + `model.safetensors`).
pub fn load_bert<B: Backend>(
    model_dir: &Path,
    device: &B::Device,
) -> Result<(BertModel<B>, BertConfig), ModelError> {
    let cfg = BertConfig::from_file(&model_dir.join("config.json"))?;
    let ck = Checkpoint::read(&model_dir.join("model.safetensors"))?;
    let model = load_bert_from(&ck, &cfg, device)?;
    Ok((model, cfg))
}

/// Build the encoder from an already read checkpoint.
pub fn load_bert_from<B: Backend>(
    ck: &Checkpoint,
    cfg: &BertConfig,
    device: &B::Device,
) -> Result<BertModel<B>, ModelError> {
    cfg.validate().map_err(|message| ModelError::Config {
        path: ck.path.with_file_name("config.json"),
        message,
    })?;
    let mut r = Reader {
        st: ck.tensors()?,
        prefix: ck.prefix(),
        used: BTreeSet::new(),
        problems: Vec::new(),
    };
    let model = build_encoder(&mut r, cfg, device);
    finish(&r, &ck.path)?;
    Ok(model)
}

/// Where the classifier head came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadSource {
    /// `classifier.weight/bias` of the checkpoint.
    Checkpoint,
    /// Freshly initialised: N(0, initializer_range²) from the seed, zero bias.
    Initialized { seed: u64 },
}

/// Load a sequence-classification model: the encoder, plus the checkpoint's
/// `classifier.{weight,bias}` when present (its shape must be `[num_labels, hidden]`), else a
/// new head from `seed`. `num_labels == 1` is regression.
pub fn load_for_classification<B: Backend>(
    model_dir: &Path,
    num_labels: usize,
    seed: u64,
    device: &B::Device,
) -> Result<(BertForSequenceClassification<B>, BertConfig, HeadSource), ModelError> {
    let cfg = BertConfig::from_file(&model_dir.join("config.json"))?;
    let ck = Checkpoint::read(&model_dir.join("model.safetensors"))?;
    let mut r = Reader {
        st: ck.tensors()?,
        prefix: ck.prefix(),
        used: BTreeSet::new(),
        problems: Vec::new(),
    };
    let bert = build_encoder(&mut r, &cfg, device);
    let has_head = r.has("classifier.weight");
    let classifier = if has_head {
        Some(r.linear::<B>("classifier", cfg.hidden_size, num_labels, device, true))
    } else {
        None
    };
    finish(&r, &ck.path)?;
    let dropout = cfg.classifier_dropout_prob();
    let mut model = BertForSequenceClassification::with_new_head(
        bert,
        num_labels,
        cfg.initializer_range,
        dropout,
        seed,
        device,
    )?;
    let source = match classifier {
        Some(c) => {
            model.classifier = c;
            HeadSource::Checkpoint
        }
        None => HeadSource::Initialized { seed },
    };
    Ok((model, cfg, source))
}

/// One tensor in HF layout: PyTorch shape and row-major f32 data.
#[derive(Debug, Clone, PartialEq)]
pub struct HfTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("float tensor converts to f32")
}

/// The weight a layer currently applies (W0 + ΔW for an unmerged adapter), burn layout.
fn effective_weight<B: Backend>(l: &AdaptedLinear<B>, device: &B::Device) -> Tensor<B, 2> {
    let w = l.base().weight(device);
    match l.delta_weight() {
        Some(d) if !l.is_merged() => w + d,
        _ => w,
    }
}

fn push_linear<B: Backend>(
    out: &mut Vec<HfTensor>,
    name: &str,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) {
    let [d_in, d_out] = weight.dims();
    out.push(HfTensor {
        name: format!("{name}.weight"),
        shape: vec![d_out, d_in],
        data: transpose(&to_vec(weight), d_in, d_out),
    });
    if let Some(b) = bias {
        out.push(HfTensor {
            name: format!("{name}.bias"),
            shape: vec![d_out],
            data: to_vec(b),
        });
    }
}

fn push_dense<B: Backend>(
    out: &mut Vec<HfTensor>,
    name: &str,
    l: &AdaptedLinear<B>,
    device: &B::Device,
) {
    push_linear(
        out,
        name,
        effective_weight(l, device),
        l.base().bias().map(|b| b.val()),
    );
}

fn push_ln<B: Backend>(out: &mut Vec<HfTensor>, name: &str, ln: &LayerNorm<B>) {
    let g = ln.gamma.val();
    let n = g.dims()[0];
    out.push(HfTensor {
        name: format!("{name}.weight"),
        shape: vec![n],
        data: to_vec(g),
    });
    if let Some(b) = &ln.beta {
        out.push(HfTensor {
            name: format!("{name}.bias"),
            shape: vec![n],
            data: to_vec(b.val()),
        });
    }
}

fn push_emb<B: Backend>(out: &mut Vec<HfTensor>, name: &str, e: &Embedding<B>) {
    let w = e.weight.val();
    out.push(HfTensor {
        name: format!("{name}.weight"),
        shape: w.dims().to_vec(),
        data: to_vec(w),
    });
}

/// The encoder's tensors under HF names (no prefix) in PyTorch layout. Adapters are folded in
/// (the effective weight W0 + ΔW is written), so the result is a plain BERT checkpoint.
pub fn export_hf_tensors<B: Backend>(model: &BertModel<B>) -> Vec<HfTensor> {
    let mut out = Vec::new();
    let e = &model.embeddings;
    let device = e.word_embeddings.weight.device();
    push_emb(&mut out, "embeddings.word_embeddings", &e.word_embeddings);
    push_emb(
        &mut out,
        "embeddings.position_embeddings",
        &e.position_embeddings,
    );
    push_emb(
        &mut out,
        "embeddings.token_type_embeddings",
        &e.token_type_embeddings,
    );
    push_ln(&mut out, "embeddings.LayerNorm", &e.layer_norm);
    for (l, layer) in model.layers.iter().enumerate() {
        let p = format!("encoder.layer.{l}");
        push_dense(
            &mut out,
            &format!("{p}.attention.self.query"),
            &layer.query,
            &device,
        );
        push_dense(
            &mut out,
            &format!("{p}.attention.self.key"),
            &layer.key,
            &device,
        );
        push_dense(
            &mut out,
            &format!("{p}.attention.self.value"),
            &layer.value,
            &device,
        );
        push_dense(
            &mut out,
            &format!("{p}.attention.output.dense"),
            &layer.attention_output,
            &device,
        );
        push_ln(
            &mut out,
            &format!("{p}.attention.output.LayerNorm"),
            &layer.attention_layer_norm,
        );
        push_dense(
            &mut out,
            &format!("{p}.intermediate.dense"),
            &layer.intermediate,
            &device,
        );
        push_dense(
            &mut out,
            &format!("{p}.output.dense"),
            &layer.output,
            &device,
        );
        push_ln(
            &mut out,
            &format!("{p}.output.LayerNorm"),
            &layer.output_layer_norm,
        );
    }
    push_dense(&mut out, "pooler.dense", &model.pooler, &device);
    out
}

/// A classification model in HF `BertForSequenceClassification` naming: `bert.`-prefixed
/// encoder tensors plus `classifier.{weight,bias}`.
pub fn export_hf_classifier_tensors<B: Backend>(
    model: &BertForSequenceClassification<B>,
) -> Vec<HfTensor> {
    let mut out: Vec<HfTensor> = export_hf_tensors(&model.bert)
        .into_iter()
        .map(|mut t| {
            t.name = format!("bert.{}", t.name);
            t
        })
        .collect();
    push_linear(
        &mut out,
        "classifier",
        model.classifier.weight.val(),
        model.classifier.bias.as_ref().map(|b| b.val()),
    );
    out
}

/// Write tensors as a safetensors file (F32), atomically: a temporary file in the same folder
/// is written and then renamed over `path`.
pub fn write_safetensors(tensors: &[HfTensor], path: &Path) -> Result<(), ModelError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| {
            let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (t.name.clone(), t.shape.clone(), b)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let tmp = temp_path(path);
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::serialize_to_file(views, Some(meta), &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ModelError::Safetensors {
            path: tmp.clone(),
            message: e.to_string(),
        }
    })?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}

/// Save a (merged or adapted) encoder as a plain HF `model.safetensors` (no prefix).
pub fn save_hf_safetensors<B: Backend>(
    model: &BertModel<B>,
    path: &Path,
) -> Result<(), ModelError> {
    write_safetensors(&export_hf_tensors(model), path)
}

/// Save a classification model as a HF `BertForSequenceClassification` `model.safetensors`.
pub fn save_hf_classifier_safetensors<B: Backend>(
    model: &BertForSequenceClassification<B>,
    path: &Path,
) -> Result<(), ModelError> {
    write_safetensors(&export_hf_classifier_tensors(model), path)
}

/// `<dir>/.<name>.tmp-<pid>`: same folder (so the rename is atomic), hidden name.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}
