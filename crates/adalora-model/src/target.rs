//! Adapter injection by target spec (peft's `target_modules`), fine-tuning methods and the
//! trainable-parameter report.
//!
//! A [`TargetSpec`] selects dense layers of the encoder by *structural* identity
//! ([`ModuleKind`] + layer index, whatever the family calls them); regexes are matched (full
//! match) against the HF module path each slot has in its family
//! (`encoder.layer.3.attention.self.query`, `encoder.layer.3.attention.self.query_proj`,
//! `pooler.dense`, …). The classifier head is never a target.
//!
//! [`apply_method`] freezes everything, then makes trainable what the [`Method`] trains (the
//! method and its settings come in a [`MethodConfig`]):
//!
//! | method    | trainable                                                                    |
//! |-----------|------------------------------------------------------------------------------|
//! | `Full`    | every parameter                                                              |
//! | `BitFit`  | bias terms only: every `bias` of a dense layer and every LayerNorm β         |
//! |           | (embeddings' LayerNorm included) of the encoder (Ben Zaken et al.)            |
//! | `Lora`    | LoRA A and B of the targeted layers                                          |
//! | `AdaLora` | P, λ, Q of the targeted layers                                               |
//!
//! plus, always, the task head (classifier weight and bias). `Full` and `BitFit` ignore the
//! target spec.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use adalora_core::{AdaptedLinear, Method, MethodConfig};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::family::SequenceClassifier;
pub use crate::family::{ModuleKind, ModuleSlot};

/// Which modules a target spec selects.
#[derive(Debug, Clone)]
pub enum TargetModules {
    /// Module kinds by name.
    Names(Vec<ModuleKind>),
    /// `regex:<re>`: full match against the HF module path.
    Regex(Regex),
    /// Every dense layer of the encoder and pooler (never the classifier head).
    AllLinear,
}

impl PartialEq for TargetModules {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl fmt::Display for TargetModules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetModules::Names(v) => {
                let names: Vec<&str> = v.iter().map(|k| k.name()).collect();
                f.write_str(&names.join(","))
            }
            TargetModules::Regex(re) => {
                // Stored anchored as ^(?:re)$; show the user's pattern.
                let s = re.as_str();
                let inner = s
                    .strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(s);
                write!(f, "regex:{inner}")
            }
            TargetModules::AllLinear => f.write_str("all-linear"),
        }
    }
}

impl FromStr for TargetModules {
    type Err = ModelError;

    /// `all-linear`, `regex:<re>`, or a comma-separated list of module names.
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let s = s.trim();
        if let Some(re) = s.strip_prefix("regex:") {
            let anchored = format!("^(?:{re})$");
            return Regex::new(&anchored)
                .map(TargetModules::Regex)
                .map_err(|e| ModelError::TargetSpec(format!("bad regex {re:?}: {e}")));
        }
        if matches!(
            s.to_ascii_lowercase().as_str(),
            "all-linear" | "all_linear" | "all"
        ) {
            return Ok(TargetModules::AllLinear);
        }
        let mut kinds = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let k = ModuleKind::parse(part).ok_or_else(|| {
                ModelError::TargetSpec(format!(
                    "unknown module {part:?}; expected query, key, value, attention-output (attn-out), \
                     intermediate, output, pooler (or Wq, Wk, Wv, Wo, Wf1, Wf2), all-linear, or regex:<re>"
                ))
            })?;
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        if kinds.is_empty() {
            return Err(ModelError::TargetSpec("no target modules given".into()));
        }
        Ok(TargetModules::Names(kinds))
    }
}

impl Serialize for TargetModules {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TargetModules::Names(v) => v.serialize(s),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for TargetModules {
    /// A string (`"query,value"`, `"all-linear"`, `"regex:..."`) or a list of module names.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let s = match Raw::deserialize(d)? {
            Raw::One(s) => s,
            Raw::Many(v) => v.join(","),
        };
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What to adapt: modules plus an optional subset of layer indices (peft's
/// `layers_to_transform`). With `layers` set, only encoder layers in the set match; the
/// pooler, having no layer index, is then never matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSpec {
    pub modules: TargetModules,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<usize>>,
}

impl TargetSpec {
    pub fn new(modules: TargetModules) -> Self {
        TargetSpec {
            modules,
            layers: None,
        }
    }

    pub fn with_layers(mut self, layers: Vec<usize>) -> Self {
        self.layers = Some(layers);
        self
    }

    /// The `slots` (a model's, in structural order) this spec selects; an error listing the
    /// available module paths when it selects nothing, or naming a layer index the model does
    /// not have.
    pub fn select(&self, slots: &[ModuleSlot]) -> Result<Vec<ModuleSlot>, ModelError> {
        let num_layers = slots
            .iter()
            .filter_map(|s| s.layer)
            .max()
            .map_or(0, |l| l + 1);
        if let Some(layers) = &self.layers {
            if let Some(bad) = layers.iter().find(|&&l| l >= num_layers) {
                return Err(ModelError::TargetSpec(format!(
                    "layer {bad} does not exist: the model has layers 0..{num_layers}"
                )));
            }
        }
        let chosen: Vec<ModuleSlot> = slots
            .iter()
            .filter(|s| match &self.layers {
                Some(ls) => s.layer.is_some_and(|l| ls.contains(&l)),
                None => true,
            })
            .filter(|s| match &self.modules {
                TargetModules::Names(kinds) => kinds.contains(&s.kind),
                TargetModules::Regex(re) => re.is_match(&s.path),
                TargetModules::AllLinear => true,
            })
            .cloned()
            .collect();
        if chosen.is_empty() {
            let available: Vec<&str> = slots.iter().map(|s| s.path.as_str()).collect();
            return Err(ModelError::TargetSpec(format!(
                "target spec `{self}` matches no module; available module paths:\n  {}",
                available.join("\n  ")
            )));
        }
        Ok(chosen)
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.modules)?;
        if let Some(ls) = &self.layers {
            let v: Vec<String> = ls.iter().map(|l| l.to_string()).collect();
            write!(f, ";layers={}", v.join(","))?;
        }
        Ok(())
    }
}

impl FromStr for TargetSpec {
    type Err = ModelError;

    /// CLI form: `<modules>[;layers=<i>,<j>,<a>-<b>]`, e.g. `query,value`, `Wq,Wv;layers=0-2`,
    /// `all-linear`, `regex:encoder\.layer\.[0-2]\.attention\.self\.(query|value)`.
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let (modules, layers) = match s.rfind(";layers=") {
            Some(i) => (&s[..i], Some(&s[i + ";layers=".len()..])),
            None => (s, None),
        };
        let mut spec = TargetSpec::new(modules.parse()?);
        if let Some(ls) = layers {
            spec.layers = Some(parse_layers(ls)?);
        }
        Ok(spec)
    }
}

fn parse_layers(s: &str) -> Result<Vec<usize>, ModelError> {
    let bad = |p: &str| ModelError::TargetSpec(format!("bad layer index {p:?} in layers={s}"));
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: usize = a.trim().parse().map_err(|_| bad(part))?;
            let b: usize = b.trim().parse().map_err(|_| bad(part))?;
            if a > b {
                return Err(bad(part));
            }
            v.extend(a..=b);
        } else {
            v.push(part.parse().map_err(|_| bad(part))?);
        }
    }
    if v.is_empty() {
        return Err(ModelError::TargetSpec(format!(
            "empty layer list in layers={s}"
        )));
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// Prepare a model for fine-tuning with `method`: inject adapters into the layers `spec`
/// selects (LoRA/AdaLoRA), set which parameters are trainable, and report. Apply it to a model
/// on the autodiff backend you train with (trainability is a property of autodiff tensors).
pub fn apply_method<B: Backend, M: SequenceClassifier<B>>(
    model: M,
    method: &MethodConfig,
    spec: &TargetSpec,
    device: &B::Device,
) -> Result<(M, ParamReport), ModelError> {
    apply_method_with_ranks(model, method, spec, &BTreeMap::new(), device)
}

/// [`apply_method`] with fixed per-module LoRA ranks (HF module path → rank; e.g. the final
/// rank pattern of an AdaLoRA run): listed modules get their own rank, rank 0 leaves a module
/// unadapted, unlisted ones keep the config's `r`. A path the spec does not select is an error.
pub fn apply_method_with_ranks<B: Backend, M: SequenceClassifier<B>>(
    model: M,
    config: &MethodConfig,
    spec: &TargetSpec,
    ranks: &BTreeMap<String, usize>,
    device: &B::Device,
) -> Result<(M, ParamReport), ModelError> {
    let method = config.method;
    if !ranks.is_empty() && method != Method::Lora {
        return Err(ModelError::Invalid(format!(
            "per-module ranks (a rank pattern) apply to LoRA only, not {}",
            method.name()
        )));
    }
    let quantized = model
        .adapted_linears()
        .iter()
        .any(|l| l.base().as_quantized().is_some());
    if quantized && method.trains_base() {
        return Err(ModelError::Invalid(format!(
            "{} trains the base weights, but this model's base is quantized (frozen); \
             use LoRA or AdaLoRA on a quantized base",
            method.name()
        )));
    }
    let model = match method {
        Method::Full => model.map(&mut SetGrad(true)),
        Method::BitFit => model.no_grad().map(&mut BiasesOnly::default()),
        Method::Lora => {
            let cfg = &config.lora;
            let chosen = spec.select(&model.slots())?;
            if let Some(path) = ranks.keys().find(|p| !chosen.iter().any(|s| &s.path == *p)) {
                return Err(ModelError::TargetSpec(format!(
                    "rank pattern names {path:?}, which target spec `{spec}` does not select"
                )));
            }
            model.no_grad().try_map_adapted(|k, l| {
                let Some(slot) = chosen.iter().find(|s| s.index == k) else {
                    return Ok(l);
                };
                let r = ranks.get(&slot.path).copied().unwrap_or(cfg.r);
                match l {
                    AdaptedLinear::Plain(lin) if r == 0 => Ok(AdaptedLinear::Plain(lin)),
                    AdaptedLinear::Plain(lin) => Ok(AdaptedLinear::Lora(
                        cfg.clone().with_r(r).init(lin, device)?,
                    )),
                    other => Err(already_adapted(k, &other)),
                }
            })?
        }
        Method::AdaLora => {
            let cfg = &config.adalora;
            cfg.validate()?;
            let adapter = cfg.adapter_config();
            let chosen = spec.select(&model.slots())?;
            model.no_grad().try_map_adapted(|k, l| {
                if !chosen.iter().any(|s| s.index == k) {
                    return Ok(l);
                }
                match l {
                    AdaptedLinear::Plain(lin) => Ok(AdaptedLinear::Svd(adapter.init(lin, device)?)),
                    other => Err(already_adapted(k, &other)),
                }
            })?
        }
    };
    let model = model.map_head(&mut SetGrad(true));
    let report = ParamReport::of(&model);
    Ok((model, report))
}

/// BitFit: makes trainable every parameter whose field is a `bias` (dense layers) or a `beta`
/// (LayerNorms), whatever module holds it.
#[derive(Default)]
struct BiasesOnly {
    path: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for BiasesOnly {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let is_bias = matches!(self.path.last().map(String::as_str), Some("bias" | "beta"));
        param.set_require_grad(is_bias)
    }
}

fn already_adapted<B: Backend>(k: usize, l: &AdaptedLinear<B>) -> ModelError {
    ModelError::Invalid(format!(
        "dense layer #{k} already carries an adapter (rank {}); merge_and_unload first",
        l.rank()
    ))
}

struct SetGrad(bool);

impl<B: Backend> burn::module::ModuleMapper<B> for SetGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(self.0)
    }
}

/// Counts (trainable, all) float parameters.
#[derive(Default)]
struct Counter {
    trainable: usize,
    total: usize,
}

impl<B: Backend> ModuleVisitor<B> for Counter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.total += n;
        if t.is_require_grad() {
            self.trainable += n;
        }
    }
}

fn count<B: Backend, M: Module<B>>(m: &M) -> (usize, usize) {
    let mut c = Counter::default();
    m.visit(&mut c);
    (c.trainable, c.total)
}

/// One row of the per-module table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModuleReport {
    /// Index in the `AdapterHost` order.
    pub index: usize,
    pub layer: Option<usize>,
    pub module: ModuleKind,
    pub path: String,
    /// `plain`, `lora` or `adalora`.
    pub method: &'static str,
    /// Adapter rank (0 for a plain layer).
    pub rank: usize,
    /// Trainable parameters of this layer (adapter, or its own weight/bias when trainable).
    pub trainable_params: usize,
    pub params: usize,
}

/// peft's `print_trainable_parameters`, as data. Trainability is read from the tensors, so
/// build it from a model on an autodiff backend (on a plain backend nothing is trainable).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamReport {
    pub trainable_params: usize,
    pub all_params: usize,
    /// Trainable parameters of the task head (included in `trainable_params`).
    pub head_params: usize,
    pub modules: Vec<ModuleReport>,
}

impl ParamReport {
    pub fn of<B: Backend, M: SequenceClassifier<B>>(model: &M) -> Self {
        let (trainable_params, all_params) = count(model);
        let mut head = Counter::default();
        model.visit_head(&mut head);
        let head_params = head.trainable;
        let slots = model.slots();
        let modules = model
            .adapted_linears()
            .into_iter()
            .zip(slots)
            .map(|(l, s)| {
                let (trainable, params) = count(l);
                ModuleReport {
                    index: s.index,
                    layer: s.layer,
                    module: s.kind,
                    path: s.path,
                    method: match l {
                        AdaptedLinear::Plain(_) => "plain",
                        AdaptedLinear::Lora(_) => "lora",
                        AdaptedLinear::Svd(_) => "adalora",
                    },
                    rank: l.rank(),
                    trainable_params: trainable,
                    params,
                }
            })
            .collect();
        ParamReport {
            trainable_params,
            all_params,
            head_params,
            modules,
        }
    }

    /// `100 · trainable / all`.
    pub fn trainable_percent(&self) -> f64 {
        if self.all_params == 0 {
            0.0
        } else {
            100.0 * self.trainable_params as f64 / self.all_params as f64
        }
    }

    /// peft's line: `trainable params: 73,728 || all params: 22,713,216 || trainable%: 0.3246`.
    pub fn summary(&self) -> String {
        format!(
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            thousands(self.trainable_params),
            thousands(self.all_params),
            self.trainable_percent()
        )
    }

    /// The summary line followed by a table of the adapted (or trainable) dense layers.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:>5}  {:<16}  {:<40}  {:<7}  {:>4}  {:>10}\n",
            "layer", "module", "path", "method", "rank", "trainable"
        );
        for m in &self.modules {
            let layer = m.layer.map_or("-".to_string(), |l| l.to_string());
            s.push_str(&format!(
                "{:>5}  {:<16}  {:<40}  {:<7}  {:>4}  {:>10}\n",
                layer,
                m.module.name(),
                m.path,
                m.method,
                m.rank,
                thousands(m.trainable_params)
            ));
        }
        s.push_str(&format!(
            "{:>5}  {:<16}  {:<40}  {:<7}  {:>4}  {:>10}\n",
            "-",
            "head",
            "(task head)",
            "plain",
            0,
            thousands(self.head_params)
        ));
        s
    }
}

impl fmt::Display for ParamReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        f.write_str(&self.table())
    }
}

/// `1234567` → `1,234,567` (Python's `{:,d}`).
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
