//! Adapters on disk in PEFT's layout: `adapter_config.json` + `adapter_model.safetensors` with
//! PEFT's key names (`base_model.model.<encoder>.<module>.lora_A.weight` for LoRA, e.g.
//! `bert.encoder.layer.0.attention.self.query`, `…lora_A` / `…lora_E` / `…lora_B` for AdaLoRA,
//! sliced to the rank pattern, and the head's modules as `base_model.model.<head>.*`), so a
//! PEFT user can load what this tool trained, and this tool can load PEFT-trained LoRA/AdaLoRA
//! adapters — for every model family (module paths and head names come from the family).

use std::collections::BTreeMap;
use std::path::Path;

use adalora_core::{
    to_f32_vec, AdaLoraConfig, AdaptedLinear, BaseLinear, LoraConfig, Method, MethodConfig,
    QuantConfig, RankPattern, Steps, SvdAdapterConfig,
};
use adalora_model::family::load_head_from;
use adalora_model::loader::{transpose, Checkpoint};
use adalora_model::{write_safetensors, HfTensor, SequenceClassifier};
use anyhow::{bail, Context};
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;
use serde_json::{json, Value};

use crate::io::atomic_write_json;

const PREFIX: &str = "base_model.model.";
/// adapter_config.json key recording the base's quantization (QLoRA).
const QUANT_KEY: &str = "quantization";
pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// A burn-layout `[rows, cols]` matrix read to the host, where selecting and transposing for
/// PEFT's layout happen. Done on the device, an AdaLoRA save on CUDA died reading back the
/// transposed view of a pruned factor ("strides not supported"); the host has no such limits.
struct HostMatrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl HostMatrix {
    fn read<B: Backend>(t: Tensor<B, 2>) -> Self {
        let [rows, cols] = t.dims();
        HostMatrix {
            rows,
            cols,
            data: to_f32_vec(t),
        }
    }

    /// Keep the rows (`dim = 0`) or columns (`dim = 1`) listed in `keep`, in that order.
    fn select(self, dim: usize, keep: &[usize]) -> Self {
        let HostMatrix { rows, cols, data } = self;
        if dim == 0 {
            let data = keep
                .iter()
                .flat_map(|&r| data[r * cols..(r + 1) * cols].iter().copied())
                .collect();
            HostMatrix {
                rows: keep.len(),
                cols,
                data,
            }
        } else {
            let data = (0..rows)
                .flat_map(|r| keep.iter().map(move |&c| r * cols + c))
                .map(|i| data[i])
                .collect();
            HostMatrix {
                rows,
                cols: keep.len(),
                data,
            }
        }
    }

    /// The PyTorch-layout `[cols, rows]` tensor `name`.
    fn into_hf(self, name: String) -> HfTensor {
        HfTensor {
            name,
            shape: vec![self.cols, self.rows],
            data: transpose(&self.data, self.rows, self.cols),
        }
    }
}

/// burn-layout `[a, b]` matrix → PyTorch-layout `[b, a]` tensor.
fn transposed<B: Backend>(name: String, t: Tensor<B, 2>) -> HfTensor {
    HostMatrix::read(t).into_hf(name)
}

fn kept_indices(mask: &[bool]) -> Vec<usize> {
    (0..mask.len()).filter(|&i| mask[i]).collect()
}

/// Write the model's adapters and head in PEFT's layout into `dir` (which must exist).
/// `pattern` is the AdaLoRA rank pattern (one mask per SVD adapter, in structural order).
pub fn save_peft_adapter<B: Backend, M: SequenceClassifier<B>>(
    model: &M,
    method: &MethodConfig,
    pattern: Option<&RankPattern>,
    base_model: Option<&str>,
    dir: &Path,
) -> anyhow::Result<()> {
    if !method.method.has_adapters() {
        bail!(
            "{}: method {} has no adapter to save in PEFT's layout",
            dir.display(),
            method.method
        );
    }
    let family = model.family();
    let encoder = family.prefix();
    let slots = model.slots();
    let mut tensors = Vec::new();
    let mut targets = Vec::new();
    let mut rank_pattern = serde_json::Map::new();
    let mut lora_ranks = BTreeMap::new();
    let mut svd_index = 0;
    // Per adapter: whether it started from W0's factors and is written converted to W0.
    let mut converted = Vec::new();
    for (slot, layer) in slots.iter().zip(model.adapted_linears()) {
        let key = format!("{PREFIX}{encoder}{}", slot.path);
        match layer {
            AdaptedLinear::Plain(_) => continue,
            AdaptedLinear::Lora(l) => {
                let (a, b, rank) = match &l.init {
                    // PiSSA / OLoRA: ΔW relative to W0 is s·(B·A − B₀·A₀) = s·[B, −B₀]·[A; A₀],
                    // a rank-2r LoRA adapter on the unmodified base (PEFT's
                    // `path_initial_model_for_weight_conversion`).
                    Some(init) => {
                        let device = l.lora_a.device();
                        (
                            Tensor::cat(vec![l.lora_a.val(), init.a(&device)], 1),
                            Tensor::cat(vec![l.lora_b.val(), init.b(&device).neg()], 0),
                            2 * l.rank(),
                        )
                    }
                    None => (l.lora_a.val(), l.lora_b.val(), l.rank()),
                };
                converted.push(l.init.is_some());
                tensors.push(transposed(format!("{key}.lora_A.weight"), a));
                tensors.push(transposed(format!("{key}.lora_B.weight"), b));
                lora_ranks.insert(format!("{encoder}{}", slot.path), rank);
            }
            AdaptedLinear::Svd(s) => {
                let mask = pattern
                    .and_then(|p| p.masks.get(svd_index).cloned())
                    .unwrap_or_else(|| vec![true; s.rank()]);
                svd_index += 1;
                if mask.len() != s.rank() {
                    bail!(
                        "rank pattern for {} has {} entries, the adapter {}",
                        slot.path,
                        mask.len(),
                        s.rank()
                    );
                }
                let mut keep = kept_indices(&mask);
                let mut mask = mask;
                let (a, e, b) = match &s.init {
                    // AdaLoRA svd: the initial triplets appended with λ negated, so that the
                    // adapter on the unmodified W0 gives ΔW − ΔW₀ (init_r doubled, α scaled to
                    // keep α/(init_r + 1e-5)); the appended triplets are always kept.
                    Some(init) => {
                        let device = s.lora_a.device();
                        let r = s.rank();
                        keep.extend(r..r + init.r);
                        mask.extend(std::iter::repeat_n(true, init.r));
                        (
                            Tensor::cat(vec![s.lora_a.val(), init.a(&device)], 1),
                            Tensor::cat(vec![s.lora_e.val(), init.e(&device).neg()], 0),
                            Tensor::cat(vec![s.lora_b.val(), init.b(&device)], 0),
                        )
                    }
                    None => (s.lora_a.val(), s.lora_e.val(), s.lora_b.val()),
                };
                converted.push(s.init.is_some());
                let e = to_f32_vec(e);
                tensors.push(
                    HostMatrix::read(a)
                        .select(1, &keep)
                        .into_hf(format!("{key}.lora_A")),
                );
                tensors.push(
                    HostMatrix::read(b)
                        .select(0, &keep)
                        .into_hf(format!("{key}.lora_B")),
                );
                tensors.push(HfTensor {
                    name: format!("{key}.lora_E"),
                    shape: vec![keep.len(), 1],
                    data: keep.iter().map(|&i| e[i]).collect(),
                });
                rank_pattern.insert(format!("{encoder}{}.lora_E", slot.path), json!(mask));
            }
        }
        targets.push(format!("{encoder}{}", slot.path));
    }
    if targets.is_empty() {
        bail!("the model carries no LoRA/AdaLoRA adapter to save");
    }
    let convert = converted.iter().any(|&c| c);
    if convert && !converted.iter().all(|&c| c) {
        bail!(
            "{}: some adapters started from W0's factors and some did not; one adapter file \
             cannot convert only some of them",
            dir.display()
        );
    }
    tensors.extend(model.head_hf().into_iter().map(|mut t| {
        t.name = format!("{PREFIX}{}", t.name);
        t
    }));
    // PEFT adds "classifier" and "score" for SEQ_CLS itself; a family may have more head
    // modules (DeBERTa's pooler).
    let mut modules_to_save: Vec<&str> = family.head_modules.to_vec();
    for m in ["classifier", "score"] {
        if !modules_to_save.contains(&m) {
            modules_to_save.push(m);
        }
    }
    let mut config = json!({
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "modules_to_save": modules_to_save,
        "target_modules": targets,
        "task_type": "SEQ_CLS",
        "revision": null,
    });
    let obj = config.as_object_mut().expect("object");
    if let Some(q) = base_quantization(model) {
        // Not a PEFT key (PEFT warns and ignores it): how to rebuild the base this adapter was
        // trained on.
        obj.insert(QUANT_KEY.into(), serde_json::to_value(q)?);
    }
    match method.method {
        Method::Lora => {
            let l = &method.lora;
            // A converted PiSSA/OLoRA adapter has rank 2r; α is scaled so that α/r (or
            // α/√r) is unchanged, as PEFT's conversion does.
            let (r, alpha) = match (convert, l.use_rslora) {
                (false, _) => (l.r, l.alpha),
                (true, false) => (2 * l.r, 2.0 * l.alpha),
                (true, true) => (2 * l.r, 2f64.sqrt() * l.alpha),
            };
            obj.insert("peft_type".into(), json!("LORA"));
            obj.insert("r".into(), json!(r));
            obj.insert("lora_alpha".into(), json!(alpha));
            obj.insert("lora_dropout".into(), json!(l.dropout));
            obj.insert("use_rslora".into(), json!(l.use_rslora));
            // Modules trained at another rank than `r` (a fixed rank pattern), as PEFT names them.
            let pattern: serde_json::Map<String, Value> = lora_ranks
                .into_iter()
                .filter(|(_, rank)| *rank != r)
                .map(|(path, r)| (path, json!(r)))
                .collect();
            obj.insert("rank_pattern".into(), Value::Object(pattern));
            obj.insert("alpha_pattern".into(), json!({}));
        }
        Method::AdaLora => {
            let a = &method.adalora;
            let total_step = a
                .total_step
                .context("AdaLoRA settings without total_step")?;
            let (tinit, tfinal) = a.warmups(total_step)?;
            // Converted (adalora.init = "svd"): 2·init_r triplets, and α such that
            // α'/(2·init_r + 1e-5) = α/(init_r + 1e-5), the scale the triplets were trained at.
            let (init_r, alpha) = if convert {
                let r = a.init_r as f64;
                (2 * a.init_r, a.alpha * (2.0 * r + 1e-5) / (r + 1e-5))
            } else {
                (a.init_r, a.alpha)
            };
            obj.insert("peft_type".into(), json!("ADALORA"));
            obj.insert("r".into(), json!(8));
            obj.insert("init_r".into(), json!(init_r));
            obj.insert("target_r".into(), json!(a.target_r));
            obj.insert("lora_alpha".into(), json!(alpha));
            obj.insert("lora_dropout".into(), json!(a.dropout));
            obj.insert("tinit".into(), json!(tinit));
            obj.insert("tfinal".into(), json!(tfinal));
            obj.insert("deltaT".into(), json!(a.delta_t));
            obj.insert("beta1".into(), json!(a.beta1));
            obj.insert("beta2".into(), json!(a.beta2));
            obj.insert("orth_reg_weight".into(), json!(a.orth_reg_weight));
            obj.insert("total_step".into(), json!(total_step));
            obj.insert("rank_pattern".into(), Value::Object(rank_pattern));
        }
        Method::Full | Method::BitFit => {} // refused above
    }
    write_safetensors(&tensors, &dir.join(WEIGHTS_FILE))?;
    atomic_write_json(&dir.join(CONFIG_FILE), &config)
}

struct StTensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn read_tensors(path: &Path) -> anyhow::Result<BTreeMap<String, StTensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st =
        SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            bail!(
                "{}: tensor {name} is {:?}; only F32 adapters are supported",
                path.display(),
                view.dtype()
            );
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(
            name,
            StTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// PyTorch-layout `[a, b]` → burn-layout `[b, a]` parameter.
fn param_t<B: Backend>(t: &StTensor, device: &B::Device) -> Param<Tensor<B, 2>> {
    let m = Tensor::<B, 2>::from_data(
        TensorData::new(t.data.clone(), [t.shape[0], t.shape[1]]),
        device,
    );
    Param::from_tensor(m.transpose())
}

/// Take tensor `name`, checking its PyTorch shape; the error names the file and the tensor.
fn take_shaped(
    tensors: &mut BTreeMap<String, StTensor>,
    name: &str,
    shape: &[usize],
    dir: &Path,
) -> anyhow::Result<StTensor> {
    let file = dir.join(WEIGHTS_FILE);
    let t = tensors
        .remove(name)
        .with_context(|| format!("{}: missing tensor {name}", file.display()))?;
    if t.shape != shape {
        bail!(
            "{}: tensor {name} has shape {:?}, expected {shape:?}",
            file.display(),
            t.shape
        );
    }
    Ok(t)
}

/// Typed reads of `adapter_config.json`: a key of the wrong type is an error naming it, an
/// absent (or null) one takes PEFT's default.
struct AdapterConfigFile<'a> {
    value: &'a Value,
    path: std::path::PathBuf,
}

impl AdapterConfigFile<'_> {
    fn get<T: serde::de::DeserializeOwned>(&self, key: &str, default: T) -> anyhow::Result<T> {
        match self.value.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => serde_json::from_value(v.clone()).with_context(|| {
                format!(
                    "{}: key {key:?} has an invalid value {v}",
                    self.path.display()
                )
            }),
        }
    }

    fn check(&self, ok: bool, key: &str, rule: &str) -> anyhow::Result<()> {
        if !ok {
            bail!(
                "{}: key {key:?} = {}: {rule}",
                self.path.display(),
                self.value.get(key).unwrap_or(&Value::Null)
            );
        }
        Ok(())
    }

    /// The rank `rank_pattern` gives module `path`, else `r` (PEFT's rule).
    fn lora_rank(&self, path: &str, r: usize) -> anyhow::Result<(usize, String)> {
        let patterns: serde_json::Map<String, Value> =
            self.get("rank_pattern", Default::default())?;
        // PEFT matches rank_pattern keys as suffixes of the module name.
        match patterns.iter().find(|(k, _)| path.ends_with(k.as_str())) {
            Some((k, v)) => {
                let rank = v.as_u64().with_context(|| {
                    format!(
                        "{}: rank_pattern[{k:?}] = {v} is not a rank",
                        self.path.display()
                    )
                })?;
                Ok((rank as usize, format!("rank_pattern[{k:?}]")))
            }
            None => Ok((r, "r".into())),
        }
    }
}

/// Read `adapter_config.json`.
pub fn read_adapter_config(dir: &Path) -> anyhow::Result<Value> {
    crate::io::read_json(&dir.join(CONFIG_FILE))
}

/// The quantization an adapter's base was trained with (`quantization` in its config), if any.
pub fn read_adapter_quantization(dir: &Path) -> anyhow::Result<Option<QuantConfig>> {
    let cfg = read_adapter_config(dir)?;
    match cfg.get(QUANT_KEY) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .with_context(|| {
                format!(
                    "{}: bad `{QUANT_KEY}` entry {v}",
                    dir.join(CONFIG_FILE).display()
                )
            }),
    }
}

/// The quantization of the model's base (every dense base shares one setting).
fn base_quantization<B: Backend, M: SequenceClassifier<B>>(model: &M) -> Option<QuantConfig> {
    model
        .adapted_linears()
        .into_iter()
        .find_map(|l| l.base().as_quantized().map(|q| q.weight.config))
}

/// The method and settings an `adapter_config.json` describes; an absent key means PEFT's
/// default for it (PEFT's α is 8, whatever this tool defaults to).
fn method_config(file: &AdapterConfigFile) -> anyhow::Result<MethodConfig> {
    let peft_type: String = file.get("peft_type", String::new())?;
    let dropout: f64 = file.get("lora_dropout", 0.0)?;
    file.check(
        (0.0..1.0).contains(&dropout),
        "lora_dropout",
        "must be in [0, 1)",
    )?;
    let alpha: f64 = file.get("lora_alpha", 8.0)?;
    file.check(alpha.is_finite(), "lora_alpha", "must be a finite number")?;
    Ok(match peft_type.as_str() {
        "LORA" => {
            let alpha_pattern: serde_json::Map<String, Value> =
                file.get("alpha_pattern", Default::default())?;
            file.check(
                alpha_pattern.is_empty(),
                "alpha_pattern",
                "is not supported",
            )?;
            let r: usize = file.get("r", 8)?;
            file.check(r > 0, "r", "a LoRA rank must be at least 1")?;
            MethodConfig::lora(
                LoraConfig::new()
                    .with_r(r)
                    .with_alpha(alpha)
                    .with_dropout(dropout)
                    .with_use_rslora(file.get("use_rslora", false)?),
            )
        }
        "ADALORA" => {
            let init_r: usize = file.get("init_r", 12)?;
            file.check(init_r > 0, "init_r", "must be at least 1")?;
            MethodConfig::adalora(AdaLoraConfig {
                init_r,
                target_r: file.get("target_r", 8)?,
                alpha,
                dropout,
                tinit: Steps::Count(file.get("tinit", 0)?),
                tfinal: Steps::Count(file.get("tfinal", 0)?),
                delta_t: file.get("deltaT", 1)?,
                beta1: file.get("beta1", 0.85)?,
                beta2: file.get("beta2", 0.85)?,
                orth_reg_weight: file.get("orth_reg_weight", 0.5)?,
                total_step: file.get("total_step", None)?,
                ..AdaLoraConfig::default()
            })
        }
        other => bail!(
            "{}: peft_type {other:?} is not supported (LORA or ADALORA)",
            file.path.display()
        ),
    })
}

/// Load a PEFT LoRA/AdaLoRA adapter (this tool's or PEFT's) into a base model: adapters go
/// where the file has tensors, the head is replaced by the file's. Returns the model and the
/// method and its settings. Every tensor must have the shape its config and base layer imply (PEFT
/// refuses the rest too), or α/r would scale a different update than the one trained.
pub fn load_peft_adapter<B: Backend, M: SequenceClassifier<B>>(
    model: M,
    dir: &Path,
    device: &B::Device,
) -> anyhow::Result<(M, MethodConfig)> {
    let value = read_adapter_config(dir)?;
    let file = AdapterConfigFile {
        value: &value,
        path: dir.join(CONFIG_FILE),
    };
    let method = method_config(&file)?;
    let mut tensors = read_tensors(&dir.join(WEIGHTS_FILE))?;
    let encoder = model.family().prefix();
    let slots = model.slots();
    let mut model = model;
    for (slot, layer) in slots.iter().zip(model.adapted_linears_mut()) {
        let key = format!("{PREFIX}{encoder}{}", slot.path);
        let present = |suffix: &str| tensors.contains_key(&format!("{key}.{suffix}"));
        let replaced = match method.method {
            Method::Lora => {
                let lc = &method.lora;
                if !present("lora_A.weight") && !present("lora_B.weight") {
                    continue;
                }
                let base = plain_base(layer, &slot.path)?;
                let [d_in, d_out] = base.dims();
                let (r, source) = file.lora_rank(&format!("{encoder}{}", slot.path), lc.r)?;
                let a = take_shaped(
                    &mut tensors,
                    &format!("{key}.lora_A.weight"),
                    &[r, d_in],
                    dir,
                )
                .with_context(|| format!("the rank comes from {source} = {r}"))?;
                let b = take_shaped(
                    &mut tensors,
                    &format!("{key}.lora_B.weight"),
                    &[d_out, r],
                    dir,
                )
                .with_context(|| format!("the rank comes from {source} = {r}"))?;
                let mut lora = lc.clone().with_r(r).init(base, device)?;
                lora.lora_a = param_t(&a, device);
                lora.lora_b = param_t(&b, device);
                AdaptedLinear::Lora(lora)
            }
            // `method_config` reads LoRA or AdaLoRA only.
            Method::Full | Method::BitFit => continue,
            Method::AdaLora => {
                let ac = &method.adalora;
                if !["lora_A", "lora_E", "lora_B"].iter().any(|s| present(s)) {
                    continue;
                }
                let pattern_key = format!("{encoder}{}.lora_E", slot.path);
                let mask: Vec<bool> = match value["rank_pattern"].get(&pattern_key) {
                    Some(v) => serde_json::from_value(v.clone()).with_context(|| {
                        format!(
                            "{}: rank_pattern[{pattern_key:?}] is not a list of booleans",
                            file.path.display()
                        )
                    })?,
                    None => vec![true; ac.init_r],
                };
                let stored = mask.iter().filter(|&&k| k).count();
                if mask.len() != ac.init_r {
                    bail!(
                        "{}: rank_pattern[{pattern_key:?}] has {} entries, init_r is {}",
                        file.path.display(),
                        mask.len(),
                        ac.init_r
                    );
                }
                let base = plain_base(layer, &slot.path)?;
                let [d_in, d_out] = base.dims();
                let context =
                    || format!("rank_pattern[{pattern_key:?}] / init_r keep {stored} triplets");
                let a = take_shaped(&mut tensors, &format!("{key}.lora_A"), &[stored, d_in], dir)
                    .with_context(context)?;
                let e = take_shaped(&mut tensors, &format!("{key}.lora_E"), &[stored, 1], dir)
                    .with_context(context)?;
                let b = take_shaped(
                    &mut tensors,
                    &format!("{key}.lora_B"),
                    &[d_out, stored],
                    dir,
                )
                .with_context(context)?;
                let svd = SvdAdapterConfig::new()
                    .with_init_r(ac.init_r)
                    .with_alpha(ac.alpha)
                    .with_dropout(ac.dropout)
                    .init(base, device)?;
                let mut svd = svd.slice_to_pattern(&mask)?;
                if stored > 0 {
                    svd.lora_a = param_t(&a, device);
                    svd.lora_b = param_t(&b, device);
                    svd.lora_e = Param::from_tensor(Tensor::from_data(
                        TensorData::new(e.data.clone(), [stored]),
                        device,
                    ));
                }
                AdaptedLinear::Svd(svd)
            }
        };
        *layer = replaced;
    }
    let num_labels = model.num_labels();
    let weights = Checkpoint::read(&dir.join(WEIGHTS_FILE))?;
    let (model, head_names) = load_head_from(model, &weights, PREFIX, device)
        .with_context(|| format!("the adapter's head (is it for a {num_labels}-label task?)"))?;
    for name in head_names {
        tensors.remove(&name);
    }
    if !tensors.is_empty() {
        let names: Vec<&String> = tensors.keys().collect();
        bail!(
            "{}: tensors that match no module of this model (another architecture?): {names:?}",
            dir.join(WEIGHTS_FILE).display()
        );
    }
    Ok((model, method))
}

fn plain_base<B: Backend>(
    layer: &mut AdaptedLinear<B>,
    path: &str,
) -> anyhow::Result<BaseLinear<B>> {
    match layer {
        AdaptedLinear::Plain(l) => Ok(l.clone()),
        _ => bail!("{path} already carries an adapter"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[[0, 1, 2], [3, 4, 5]]` in burn layout.
    fn two_by_three() -> HostMatrix {
        HostMatrix {
            rows: 2,
            cols: 3,
            data: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        }
    }

    #[test]
    fn host_matrix_selects_and_transposes_to_peft_layout() {
        let t = two_by_three().into_hf("w".into());
        assert_eq!(
            (t.shape, t.data),
            (vec![3, 2], vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0])
        );
        let cols = two_by_three().select(1, &[2, 0]).into_hf("a".into());
        assert_eq!(
            (cols.shape, cols.data),
            (vec![2, 2], vec![2.0, 5.0, 0.0, 3.0])
        );
        let rows = two_by_three().select(0, &[1]).into_hf("b".into());
        assert_eq!((rows.shape, rows.data), (vec![3, 1], vec![3.0, 4.0, 5.0]));
        // A matrix pruned to rank 0 writes an empty tensor of the right shape.
        let none = two_by_three().select(1, &[]).into_hf("a".into());
        assert_eq!((none.shape, none.data.len()), (vec![0, 2], 0));
    }
}
