//! Hugging Face checkpoints: finding a model folder, reading `config.json` + `model.safetensors`
//! into the family its `model_type` names, and writing tensors back in HF layout.
//!
//! Tensor names follow HF: the encoder's with or without the family's prefix (`bert.`,
//! `roberta.`, `deberta.`; detected), the head's without. `*.position_ids` buffers and the
//! pretraining heads a family lists are skipped. Any other tensor left over, missing or of the
//! wrong shape is reported — all of them at once — in [`ModelError::Weights`]. PyTorch `Linear`
//! weights `[d_out, d_in]` are transposed into burn's `[d_in, d_out]`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use adalora_core::{to_f32_vec, AdaptedLinear};
use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, FETCH_HINT};
use crate::families::AnyClassifier;
use crate::family::{Family, HeadSource};

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

/// `config.json` as JSON, with the path for messages.
pub fn read_config(model_dir: &Path) -> Result<(serde_json::Value, PathBuf), ModelError> {
    let path = model_dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok((value, path))
}

/// Parse a family's typed config out of `config.json` and validate it.
pub fn parse_config<C: serde::de::DeserializeOwned>(
    config: &serde_json::Value,
    path: &Path,
    validate: impl FnOnce(&C) -> Result<(), String>,
) -> Result<C, ModelError> {
    let err = |message: String| ModelError::Config {
        path: path.to_path_buf(),
        message,
    };
    let cfg: C = serde_json::from_value(config.clone()).map_err(|e| err(e.to_string()))?;
    validate(&cfg).map_err(err)?;
    Ok(cfg)
}

/// Load a sequence-classification model from a HF folder: `config.json`'s `model_type` picks
/// the family (an unknown one is an error naming it); the head is the checkpoint's when it
/// has one (its shape must be `[num_labels, hidden]`), else new from `seed`. `num_labels == 1`
/// is regression.
pub fn load_for_classification<B: Backend>(
    model_dir: &Path,
    num_labels: usize,
    seed: u64,
    device: &B::Device,
) -> Result<(AnyClassifier<B>, HeadSource), ModelError> {
    if num_labels == 0 {
        return Err(ModelError::Invalid("num_labels must be at least 1".into()));
    }
    let (config, config_path) = read_config(model_dir)?;
    let family = crate::families::family_of(&config, &config_path)?;
    let ck = Checkpoint::read(&model_dir.join("model.safetensors"))?;
    let mut reader = Reader::new(&ck, "")?;
    reader.encoder_prefix = if ck.names().iter().any(|n| n.starts_with(&family.prefix())) {
        family.prefix()
    } else {
        String::new()
    };
    let loaded = AnyClassifier::load(
        family,
        &config,
        &config_path,
        &mut reader,
        num_labels,
        seed,
        device,
    )?;
    reader.finish(family)?;
    Ok(loaded)
}

/// The longest input (special tokens included) the folder's model takes, from `config.json`.
pub fn max_tokens(model_dir: &Path) -> Result<usize, ModelError> {
    let (config, config_path) = read_config(model_dir)?;
    let family = crate::families::family_of(&config, &config_path)?;
    crate::families::max_tokens(family, &config, &config_path)
}

/// Load a model folder for its hidden states (`adalora encode`): the head is the checkpoint's
/// when `config.json` declares its labels, else a throw-away one.
pub fn load_for_embedding<B: Backend>(
    model_dir: &Path,
    device: &B::Device,
) -> Result<AnyClassifier<B>, ModelError> {
    let (config, _) = read_config(model_dir)?;
    let num_labels = config
        .get("id2label")
        .and_then(|m| m.as_object())
        .map_or(2, |m| m.len().max(1));
    Ok(load_for_classification(model_dir, num_labels, 0, device)?.0)
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
}

/// Reads tensors by HF name, collecting every problem instead of stopping at the first.
/// Names are relative to `root` (`base_model.model.` in PEFT files); inside
/// [`Reader::encoder`] they are relative to the encoder (`root` + `bert.`).
pub struct Reader<'a> {
    st: SafeTensors<'a>,
    path: PathBuf,
    root: String,
    /// The encoder's prefix in this file (`bert.` or empty).
    pub encoder_prefix: String,
    in_encoder: bool,
    used: BTreeSet<String>,
    problems: Vec<String>,
}

impl<'a> Reader<'a> {
    pub fn new(ck: &'a Checkpoint, root: &str) -> Result<Self, ModelError> {
        Ok(Reader {
            st: ck.tensors()?,
            path: ck.path.clone(),
            root: root.to_string(),
            encoder_prefix: String::new(),
            in_encoder: false,
            used: BTreeSet::new(),
            problems: Vec::new(),
        })
    }

    /// Run `f` with names relative to the encoder.
    pub fn encoder<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        self.in_encoder = true;
        let out = f(self);
        self.in_encoder = false;
        out
    }

    fn full(&self, name: &str) -> String {
        let enc = if self.in_encoder {
            self.encoder_prefix.as_str()
        } else {
            ""
        };
        format!("{}{enc}{name}", self.root)
    }

    /// Whether the file holds `name` (relative, as every method here).
    pub fn has(&self, name: &str) -> bool {
        self.st.tensor(&self.full(name)).is_ok()
    }

    pub fn used_names(&self) -> Vec<String> {
        self.used.iter().cloned().collect()
    }

    /// The tensor `name` as f32 (row-major), checked against `shape`. On a problem, records it
    /// and returns zeros so that loading can go on and report everything.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        let full = self.full(name);
        let n: usize = shape.iter().product();
        let view = match self.st.tensor(&full) {
            Ok(v) => v,
            Err(_) => {
                self.problems
                    .push(format!("missing tensor {full} (expected shape {shape:?})"));
                return vec![0.0; n];
            }
        };
        self.used.insert(full.clone());
        if let Some(marker) = self.quantization_marker(&full) {
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

    pub fn tensor<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Param<Tensor<B, D>> {
        let data = self.take(name, &shape);
        Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), device))
    }

    /// A PyTorch `Linear` (`weight [d_out, d_in]`, `bias [d_out]`) as a burn `Linear`.
    pub fn linear<B: Backend>(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Linear<B> {
        let w = self.take(&format!("{name}.weight"), &[d_out, d_in]);
        let b = self.take(&format!("{name}.bias"), &[d_out]);
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

    /// A plain (not yet adapted) dense layer.
    pub fn dense<B: Backend>(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> AdaptedLinear<B> {
        AdaptedLinear::Plain(self.linear(name, d_in, d_out, device).into())
    }

    /// A LayerNorm (`weight`/`bias`, or the legacy `gamma`/`beta`).
    pub fn layer_norm<B: Backend>(
        &mut self,
        name: &str,
        h: usize,
        eps: f64,
        device: &B::Device,
    ) -> LayerNorm<B> {
        let mut ln = LayerNormConfig::new(h).with_epsilon(eps).init(device);
        // Old checkpoints name LayerNorm parameters gamma/beta.
        let legacy = !self.has(&format!("{name}.weight")) && self.has(&format!("{name}.gamma"));
        let (w, b) = if legacy {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        ln.gamma = self.tensor(&format!("{name}.{w}"), [h], device);
        ln.beta = Some(self.tensor(&format!("{name}.{b}"), [h], device));
        ln
    }

    pub fn embedding<B: Backend>(
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

    /// The recorded problems as one error, if any.
    pub fn problems_to_error(&self) -> Result<(), ModelError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Weights {
                path: self.path.clone(),
                problems: self.problems.clone(),
            })
        }
    }

    /// Every problem, plus every tensor left unread that `family` does not ignore.
    fn finish(&mut self, family: &Family) -> Result<(), ModelError> {
        let mut names: Vec<&str> = self.st.names();
        names.sort();
        for n in names {
            let relative = n.strip_prefix(&self.encoder_prefix).unwrap_or(n);
            if !self.used.contains(n) && !family.ignores(n) && !family.ignores(relative) {
                self.problems.push(format!("unexpected tensor {n}"));
            }
        }
        self.problems_to_error()
    }
}

/// A row-major `[rows, cols]` matrix's data as row-major `[cols, rows]`: burn layout to
/// PyTorch layout and back, on the host.
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// A new linear layer `[d_in → d_out]`: N(0, std²) weight from a SplitMix64 stream seeded by
/// `seed` (deterministic on every backend), zero bias — HF's init of a new head.
pub fn seeded_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    std: f64,
    seed: u64,
    device: &B::Device,
) -> Linear<B> {
    let weight = seeded_normal(seed, d_in * d_out, std);
    Linear {
        weight: Param::from_tensor(Tensor::from_data(
            TensorData::new(weight, [d_in, d_out]),
            device,
        )),
        bias: Some(Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

/// `n` samples of N(0, std²) from a SplitMix64 stream and Box–Muller: deterministic for a
/// seed on every backend and platform.
pub fn seeded_normal(seed: u64, n: usize, std: f64) -> Vec<f32> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 53 random bits in (0, 1].
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (next(), next());
            let r = (-2.0 * u1.ln()).sqrt();
            (r * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect()
}

/// One tensor in HF layout: PyTorch shape and row-major f32 data.
#[derive(Debug, Clone, PartialEq)]
pub struct HfTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The weight a layer currently applies (W0 + ΔW for an unmerged adapter), burn layout.
fn effective_weight<B: Backend>(l: &AdaptedLinear<B>, device: &B::Device) -> Tensor<B, 2> {
    let w = l.base().weight(device);
    match l.delta_weight() {
        Some(d) if !l.is_merged() => w + d,
        _ => w,
    }
}

/// Collects tensors in HF layout under a name prefix.
#[derive(Default)]
pub struct Exporter {
    pub prefix: String,
    pub tensors: Vec<HfTensor>,
}

impl Exporter {
    pub fn new(prefix: &str) -> Self {
        Exporter {
            prefix: prefix.to_string(),
            tensors: Vec::new(),
        }
    }

    pub fn push(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) {
        self.tensors.push(HfTensor {
            name: format!("{}{name}", self.prefix),
            shape,
            data,
        });
    }

    pub fn tensor<B: Backend, const D: usize>(&mut self, name: &str, t: Tensor<B, D>) {
        let shape = t.dims().to_vec();
        self.push(name, shape, to_f32_vec(t));
    }

    pub fn linear<B: Backend>(&mut self, name: &str, l: &Linear<B>) {
        self.weight_and_bias(name, l.weight.val(), l.bias.as_ref().map(|b| b.val()));
    }

    fn weight_and_bias<B: Backend>(
        &mut self,
        name: &str,
        weight: Tensor<B, 2>,
        bias: Option<Tensor<B, 1>>,
    ) {
        let [d_in, d_out] = weight.dims();
        self.push(
            &format!("{name}.weight"),
            vec![d_out, d_in],
            transpose(&to_f32_vec(weight), d_in, d_out),
        );
        if let Some(b) = bias {
            self.tensor(&format!("{name}.bias"), b);
        }
    }

    /// A dense layer with its adapter folded in (the effective weight W0 + ΔW).
    pub fn dense<B: Backend>(&mut self, name: &str, l: &AdaptedLinear<B>) {
        let device = crate::family::device_of(l);
        self.weight_and_bias(
            name,
            effective_weight(l, &device),
            l.base().bias().map(|b| b.val()),
        );
    }

    pub fn layer_norm<B: Backend>(&mut self, name: &str, ln: &LayerNorm<B>) {
        self.tensor(&format!("{name}.weight"), ln.gamma.val());
        if let Some(b) = &ln.beta {
            self.tensor(&format!("{name}.bias"), b.val());
        }
    }

    pub fn embedding<B: Backend>(&mut self, name: &str, e: &Embedding<B>) {
        self.tensor(&format!("{name}.weight"), e.weight.val());
    }
}

/// Write tensors as a safetensors file (F32), atomically (the project's file layer).
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
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    adalora_fs::replace_file(path, |tmp| {
        safetensors::serialize_to_file(views, Some(meta), tmp)
    })
    .map_err(|e| ModelError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
