//! Adapters on disk in PEFT's layout: `adapter_config.json` + `adapter_model.safetensors` with
//! PEFT's key names (`base_model.model.bert.<module>.lora_A.weight` for LoRA,
//! `…lora_A` / `…lora_E` / `…lora_B` for AdaLoRA, sliced to the rank pattern, and the head as
//! `base_model.model.classifier.{weight,bias}`), so a PEFT user can load what this tool
//! trained, and this tool can load PEFT-trained LoRA/AdaLoRA adapters of a BERT model.

use std::collections::BTreeMap;
use std::path::Path;

use adalora_core::{
    AdaLoraConfig, AdaptedLinear, AdapterHost, LoraConfig, RankPattern, SvdAdapterConfig,
};
use adalora_model::loader::{write_safetensors, HfTensor};
use adalora_model::target::module_slots;
use adalora_model::BertForSequenceClassification;
use anyhow::{bail, Context};
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;
use serde_json::{json, Value};

use crate::io::atomic_write_json;

const PREFIX: &str = "base_model.model.";
pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// What kind of adapter a folder holds, with the settings needed to rebuild it.
#[derive(Clone, Debug, PartialEq)]
pub enum AdapterKind {
    Lora(LoraConfig),
    /// The AdaLoRA settings and the run's total_step (PEFT requires it in the config).
    AdaLora(AdaLoraConfig, usize),
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data")
}

/// burn-layout `[a, b]` matrix → PyTorch-layout `[b, a]` tensor.
fn transposed<B: Backend>(name: String, t: Tensor<B, 2>) -> HfTensor {
    let t = t.transpose();
    HfTensor {
        name,
        shape: t.dims().to_vec(),
        data: to_vec(t),
    }
}

fn kept_indices(mask: &[bool]) -> Vec<usize> {
    (0..mask.len()).filter(|&i| mask[i]).collect()
}

/// Select columns (`dim = 1`) or rows (`dim = 0`) of a matrix on the host.
fn select<B: Backend>(t: Tensor<B, 2>, dim: usize, keep: &[usize]) -> Tensor<B, 2> {
    let [rows, cols] = t.dims();
    let device = t.device();
    let data = to_vec(t);
    let (out, shape) = if dim == 0 {
        let v: Vec<f32> = keep
            .iter()
            .flat_map(|&r| data[r * cols..(r + 1) * cols].to_vec())
            .collect();
        (v, [keep.len(), cols])
    } else {
        let v: Vec<f32> = (0..rows)
            .flat_map(|r| keep.iter().map(|&c| data[r * cols + c]).collect::<Vec<_>>())
            .collect();
        (v, [rows, keep.len()])
    };
    Tensor::from_data(TensorData::new(out, shape), &device)
}

/// Write the model's adapters and head in PEFT's layout into `dir` (which must exist).
/// `pattern` is the AdaLoRA rank pattern (one mask per SVD adapter, in structural order).
pub fn save_peft_adapter<B: Backend>(
    model: &BertForSequenceClassification<B>,
    kind: &AdapterKind,
    pattern: Option<&RankPattern>,
    base_model: Option<&str>,
    dir: &Path,
) -> anyhow::Result<()> {
    let slots = module_slots(model.bert.layers.len());
    let mut tensors = Vec::new();
    let mut targets = Vec::new();
    let mut rank_pattern = serde_json::Map::new();
    let mut lora_ranks = BTreeMap::new();
    let mut svd_index = 0;
    for (slot, layer) in slots.iter().zip(model.adapted_linears()) {
        let key = format!("{PREFIX}bert.{}", slot.path);
        match layer {
            AdaptedLinear::Plain(_) => continue,
            AdaptedLinear::Lora(l) => {
                tensors.push(transposed(format!("{key}.lora_A.weight"), l.lora_a.val()));
                tensors.push(transposed(format!("{key}.lora_B.weight"), l.lora_b.val()));
                lora_ranks.insert(format!("bert.{}", slot.path), l.rank());
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
                let keep = kept_indices(&mask);
                let e = to_vec(s.lora_e.val());
                tensors.push(transposed(
                    format!("{key}.lora_A"),
                    select(s.lora_a.val(), 1, &keep),
                ));
                tensors.push(transposed(
                    format!("{key}.lora_B"),
                    select(s.lora_b.val(), 0, &keep),
                ));
                tensors.push(HfTensor {
                    name: format!("{key}.lora_E"),
                    shape: vec![keep.len(), 1],
                    data: keep.iter().map(|&i| e[i]).collect(),
                });
                rank_pattern.insert(format!("bert.{}.lora_E", slot.path), json!(mask));
            }
        }
        targets.push(format!("bert.{}", slot.path));
    }
    if targets.is_empty() {
        bail!("the model carries no LoRA/AdaLoRA adapter to save");
    }
    let c = &model.classifier;
    tensors.push(transposed(
        format!("{PREFIX}classifier.weight"),
        c.weight.val(),
    ));
    if let Some(b) = &c.bias {
        let b = b.val();
        tensors.push(HfTensor {
            name: format!("{PREFIX}classifier.bias"),
            shape: b.dims().to_vec(),
            data: to_vec(b),
        });
    }
    let mut config = json!({
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "modules_to_save": ["classifier", "score"],
        "target_modules": targets,
        "task_type": "SEQ_CLS",
        "revision": null,
    });
    let obj = config.as_object_mut().expect("object");
    match kind {
        AdapterKind::Lora(l) => {
            obj.insert("peft_type".into(), json!("LORA"));
            obj.insert("r".into(), json!(l.r));
            obj.insert("lora_alpha".into(), json!(l.alpha));
            obj.insert("lora_dropout".into(), json!(l.dropout));
            obj.insert("use_rslora".into(), json!(l.use_rslora));
            // Modules trained at another rank than `r` (a fixed rank pattern), as PEFT names them.
            let pattern: serde_json::Map<String, Value> = lora_ranks
                .into_iter()
                .filter(|(_, r)| *r != l.r)
                .map(|(path, r)| (path, json!(r)))
                .collect();
            obj.insert("rank_pattern".into(), Value::Object(pattern));
            obj.insert("alpha_pattern".into(), json!({}));
        }
        AdapterKind::AdaLora(a, total_step) => {
            obj.insert("peft_type".into(), json!("ADALORA"));
            obj.insert("r".into(), json!(8));
            obj.insert("init_r".into(), json!(a.init_r));
            obj.insert("target_r".into(), json!(a.target_r));
            obj.insert("lora_alpha".into(), json!(a.alpha));
            obj.insert("lora_dropout".into(), json!(a.dropout));
            obj.insert("tinit".into(), json!(a.tinit));
            obj.insert("tfinal".into(), json!(a.tfinal));
            obj.insert("deltaT".into(), json!(a.delta_t));
            obj.insert("beta1".into(), json!(a.beta1));
            obj.insert("beta2".into(), json!(a.beta2));
            obj.insert("orth_reg_weight".into(), json!(a.orth_reg_weight));
            obj.insert("total_step".into(), json!(total_step));
            obj.insert("rank_pattern".into(), Value::Object(rank_pattern));
        }
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
fn param_t<B: Backend>(t: &StTensor, device: &B::Device) -> anyhow::Result<Param<Tensor<B, 2>>> {
    if t.shape.len() != 2 {
        bail!("expected a matrix, found shape {:?}", t.shape);
    }
    let m = Tensor::<B, 2>::from_data(
        TensorData::new(t.data.clone(), [t.shape[0], t.shape[1]]),
        device,
    );
    Ok(Param::from_tensor(m.transpose()))
}

fn take(
    tensors: &mut BTreeMap<String, StTensor>,
    name: &str,
    dir: &Path,
) -> anyhow::Result<StTensor> {
    tensors.remove(name).with_context(|| {
        format!(
            "{}: missing tensor {name}",
            dir.join(WEIGHTS_FILE).display()
        )
    })
}

/// Read `adapter_config.json`.
pub fn read_adapter_config(dir: &Path) -> anyhow::Result<Value> {
    crate::io::read_json(&dir.join(CONFIG_FILE))
}

/// Load a PEFT LoRA/AdaLoRA adapter (this tool's or PEFT's) into a base model: adapters go
/// where the file has tensors, the head is replaced by the file's. Returns the model and the
/// adapter kind.
pub fn load_peft_adapter<B: Backend>(
    model: BertForSequenceClassification<B>,
    dir: &Path,
    device: &B::Device,
) -> anyhow::Result<(BertForSequenceClassification<B>, AdapterKind)> {
    let cfg = read_adapter_config(dir)?;
    let peft_type = cfg["peft_type"].as_str().unwrap_or_default().to_string();
    let get_f = |k: &str, d: f64| cfg[k].as_f64().unwrap_or(d);
    let get_u = |k: &str, d: usize| cfg[k].as_u64().map(|v| v as usize).unwrap_or(d);
    let mut tensors = read_tensors(&dir.join(WEIGHTS_FILE))?;
    let kind = match peft_type.as_str() {
        "LORA" => {
            if cfg["alpha_pattern"]
                .as_object()
                .is_some_and(|m| !m.is_empty())
            {
                bail!(
                    "{}: alpha_pattern is not supported",
                    dir.join(CONFIG_FILE).display()
                );
            }
            AdapterKind::Lora(
                LoraConfig::new()
                    .with_r(get_u("r", 8))
                    .with_alpha(get_f("lora_alpha", 8.0))
                    .with_dropout(get_f("lora_dropout", 0.0))
                    .with_use_rslora(cfg["use_rslora"].as_bool().unwrap_or(false)),
            )
        }
        "ADALORA" => AdapterKind::AdaLora(
            AdaLoraConfig {
                init_r: get_u("init_r", 12),
                target_r: get_u("target_r", 8),
                alpha: get_f("lora_alpha", 8.0),
                dropout: get_f("lora_dropout", 0.0),
                tinit: get_u("tinit", 0),
                tfinal: get_u("tfinal", 0),
                delta_t: get_u("deltaT", 1),
                beta1: get_f("beta1", 0.85),
                beta2: get_f("beta2", 0.85),
                orth_reg_weight: get_f("orth_reg_weight", 0.5),
                ..AdaLoraConfig::default()
            },
            get_u("total_step", 0),
        ),
        other => bail!(
            "{}: peft_type {other:?} is not supported (LORA or ADALORA)",
            dir.join(CONFIG_FILE).display()
        ),
    };
    let slots = module_slots(model.bert.layers.len());
    let mut model = model;
    for (slot, layer) in slots.iter().zip(model.adapted_linears_mut()) {
        let key = format!("{PREFIX}bert.{}", slot.path);
        let replaced = match &kind {
            AdapterKind::Lora(lc) => {
                let (Some(_), Some(_)) = (
                    tensors.get(&format!("{key}.lora_A.weight")),
                    tensors.get(&format!("{key}.lora_B.weight")),
                ) else {
                    continue;
                };
                let a = take(&mut tensors, &format!("{key}.lora_A.weight"), dir)?;
                let b = take(&mut tensors, &format!("{key}.lora_B.weight"), dir)?;
                let r = a.shape[0];
                let base = plain_base(layer, &slot.path)?;
                let mut lora = lc.clone().with_r(r).init(base, device)?;
                lora.lora_a =
                    param_t(&a, device).with_context(|| format!("{key}.lora_A.weight"))?;
                lora.lora_b =
                    param_t(&b, device).with_context(|| format!("{key}.lora_B.weight"))?;
                check_shape(&lora.lora_a, &lora.lora_b, &slot.path)?;
                AdaptedLinear::Lora(lora)
            }
            AdapterKind::AdaLora(ac, _) => {
                if !tensors.contains_key(&format!("{key}.lora_A")) {
                    continue;
                }
                let a = take(&mut tensors, &format!("{key}.lora_A"), dir)?;
                let e = take(&mut tensors, &format!("{key}.lora_E"), dir)?;
                let b = take(&mut tensors, &format!("{key}.lora_B"), dir)?;
                let stored = e.shape[0];
                let mask: Vec<bool> =
                    match cfg["rank_pattern"].get(format!("bert.{}.lora_E", slot.path)) {
                        Some(v) => serde_json::from_value(v.clone())?,
                        None => (0..ac.init_r).map(|i| i < stored).collect(),
                    };
                if mask.iter().filter(|&&k| k).count() != stored || mask.len() != ac.init_r {
                    bail!(
                        "{}: rank pattern of {} keeps {} of {} triplets but {stored} are stored",
                        dir.display(),
                        slot.path,
                        mask.iter().filter(|&&k| k).count(),
                        mask.len()
                    );
                }
                let base = plain_base(layer, &slot.path)?;
                let svd = SvdAdapterConfig::new()
                    .with_init_r(ac.init_r)
                    .with_alpha(ac.alpha)
                    .with_dropout(ac.dropout)
                    .init(base, device)?;
                let mut svd = svd.slice_to_pattern(&mask)?;
                if stored > 0 {
                    svd.lora_a = param_t(&a, device)?;
                    svd.lora_b = param_t(&b, device)?;
                    svd.lora_e = Param::from_tensor(Tensor::from_data(
                        TensorData::new(e.data.clone(), [stored]),
                        device,
                    ));
                    check_shape(&svd.lora_a, &svd.lora_b, &slot.path)?;
                }
                AdaptedLinear::Svd(svd)
            }
        };
        *layer = replaced;
    }
    let w = take(&mut tensors, &format!("{PREFIX}classifier.weight"), dir)?;
    let mut classifier = Linear {
        weight: param_t(&w, device)?,
        bias: None,
    };
    if let Some(b) = tensors.remove(&format!("{PREFIX}classifier.bias")) {
        classifier.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b.data, [b.shape[0]]),
            device,
        )));
    }
    if classifier.weight.dims() != model.classifier.weight.dims() {
        bail!(
            "{}: the adapter's head has {} labels, the task has {}",
            dir.display(),
            classifier.weight.dims()[1],
            model.num_labels()
        );
    }
    model.classifier = classifier;
    if !tensors.is_empty() {
        let names: Vec<&String> = tensors.keys().collect();
        bail!(
            "{}: tensors that match no module of this model (another architecture?): {names:?}",
            dir.join(WEIGHTS_FILE).display()
        );
    }
    Ok((model, kind))
}

fn plain_base<B: Backend>(layer: &mut AdaptedLinear<B>, path: &str) -> anyhow::Result<Linear<B>> {
    match layer {
        AdaptedLinear::Plain(l) => Ok(l.clone()),
        _ => bail!("{path} already carries an adapter"),
    }
}

fn check_shape<B: Backend>(
    a: &Param<Tensor<B, 2>>,
    b: &Param<Tensor<B, 2>>,
    path: &str,
) -> anyhow::Result<()> {
    let ([_, ra], [rb, _]) = (a.dims(), b.dims());
    if ra != rb {
        bail!("{path}: lora_A has rank {ra}, lora_B has rank {rb}");
    }
    Ok(())
}
