//! Run configuration: one TOML file (`--config`) plus `--set section.key=value` overrides (and
//! convenience flags that map onto them). Unknown keys are errors, so a typo never silently
//! falls back to a default. The resolved configuration is written into the run folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adalora_core::{
    AdaLoraConfig, AdaLoraInit, ComputeDtype, LoraConfig, LoraInit, Method, MethodConfig,
    QuantConfig, QuantType,
};
use adalora_data::CustomTaskConfig;
use adalora_model::TargetSpec;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::lr::Decay;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraSection {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub use_rslora: bool,
    /// How A and B start: `kaiming` (default: A Kaiming-uniform, B = 0), `gaussian` (A normal
    /// with std 1/r, B = 0), `pissa` or `olora` (from W0's SVD / QR; the base keeps the residual). Written only when not the default.
    #[serde(skip_serializing_if = "LoraInit::is_default")]
    pub init: LoraInit,
    /// Fixed per-module ranks (HF module path → rank; 0 = not adapted), e.g. the final
    /// allocation of an AdaLoRA run. Unlisted targeted modules keep `r`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Read `rank_pattern` from an AdaLoRA run's `rank_pattern.json` (resolved when the
    /// configuration is loaded, so the run's config.toml holds the ranks themselves).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank_pattern_file: Option<PathBuf>,
    /// The file `rank_pattern` was read from, for errors found once the model is known.
    #[serde(skip)]
    pub rank_pattern_source: Option<PathBuf>,
}

impl Default for LoraSection {
    fn default() -> Self {
        let core = LoraConfig::new();
        LoraSection {
            r: core.r,
            alpha: core.alpha,
            dropout: core.dropout,
            use_rslora: core.use_rslora,
            init: LoraInit::Kaiming,
            rank_pattern: BTreeMap::new(),
            rank_pattern_file: None,
            rank_pattern_source: None,
        }
    }
}

impl LoraSection {
    pub fn to_core(&self) -> LoraConfig {
        LoraConfig::new()
            .with_r(self.r)
            .with_alpha(self.alpha)
            .with_dropout(self.dropout)
            .with_use_rslora(self.use_rslora)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    /// Peak learning rate; absent = the method's default.
    pub lr: Option<f64>,
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides epochs for the schedule length).
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub max_seq_len: usize,
    pub warmup_ratio: f64,
    /// Overrides warmup_ratio.
    pub warmup_steps: Option<usize>,
    pub decay: Decay,
    pub weight_decay: f64,
    /// Apply `weight_decay` to biases and LayerNorm weights too (Hugging Face's Trainer, and
    /// the default here, exempt them).
    pub decay_biases_and_norms: bool,
    /// Global gradient-norm clip; absent = no clipping.
    pub max_grad_norm: Option<f64>,
    /// Evaluate every N optimizer steps; absent = at the end of every epoch. Always at the end.
    pub eval_every: Option<usize>,
    pub log_every: usize,
    /// Length bucketing (sort within chunks of this many batches).
    pub bucket_batches: Option<usize>,
    /// Dev fraction for tasks without a dev file (default task, custom without `dev`).
    pub dev_ratio: f64,
    /// Use only the first N training examples after shuffling (quick experiments, tests).
    pub max_train_examples: Option<usize>,
    pub max_eval_examples: Option<usize>,
    pub skip_bad_rows: bool,
    /// Classifier dropout; absent = the checkpoint's hidden dropout.
    pub classifier_dropout: Option<f64>,
    /// Where the best checkpoint is chosen: `best-dev` (default: the first dev split's main
    /// metric, which is also reported) or `held-out` (a seeded, stratified
    /// `selection_ratio` part of the training set chooses; the dev split is reported at the
    /// chosen step). Written to config.toml only when not the default, so the resolved
    /// configuration (and a sweep's settings hash) of a best-dev run is what it always was.
    #[serde(skip_serializing_if = "Protocol::is_best_dev")]
    pub protocol: Protocol,
    /// The fraction of the (subsampled) training set held out as the `selection` split under
    /// `protocol = "held-out"`, in (0, 0.5]. Written only when not the default (0.1).
    #[serde(skip_serializing_if = "is_default_selection_ratio")]
    pub selection_ratio: f64,
}

/// The default of `train.selection_ratio`.
pub const DEFAULT_SELECTION_RATIO: f64 = 0.1;

fn is_default_selection_ratio(r: &f64) -> bool {
    *r == DEFAULT_SELECTION_RATIO
}

/// Where a run chooses its best checkpoint (and a study its learning rate).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// The best evaluation on the official dev split, which is also reported (the paper's).
    #[default]
    BestDev,
    /// A seeded, stratified part of the training set (`train.selection_ratio`) chooses; the
    /// official dev split is reported at the chosen checkpoint.
    HeldOut,
}

impl Protocol {
    pub const NAMES: [&'static str; 2] = ["best-dev", "held-out"];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::BestDev => "best-dev",
            Protocol::HeldOut => "held-out",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "best-dev" => Ok(Protocol::BestDev),
            "held-out" => Ok(Protocol::HeldOut),
            other => bail!(
                "unknown protocol {other:?}: expected one of {}",
                Self::NAMES.join(", ")
            ),
        }
    }

    fn is_best_dev(&self) -> bool {
        *self == Protocol::BestDev
    }
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            lr: None,
            epochs: 3,
            max_steps: None,
            batch_size: 32,
            eval_batch_size: 64,
            max_seq_len: 128,
            warmup_ratio: 0.06,
            warmup_steps: None,
            decay: Decay::Linear,
            weight_decay: 0.0,
            decay_biases_and_norms: false,
            max_grad_norm: Some(1.0),
            eval_every: None,
            log_every: 10,
            bucket_batches: None,
            dev_ratio: 0.1,
            max_train_examples: None,
            max_eval_examples: None,
            skip_bad_rows: false,
            classifier_dropout: None,
            protocol: Protocol::BestDev,
            selection_ratio: DEFAULT_SELECTION_RATIO,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
}

impl DeviceKind {
    /// The name config files and `--device` use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }

    /// The setting that selects this device.
    pub fn setting(self) -> Setting {
        Setting::new("device", self.name())
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Cpu, Self::Cuda]
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown device {s:?}: expected cpu or cuda"))
    }
}

/// Evaluate `$body` with the type `$b` bound to the burn backend `$kind` names (CPU: ndarray +
/// OpenBLAS; CUDA with the `cuda` feature), so every command runs on the run's device.
#[macro_export]
macro_rules! on_device {
    ($kind:expr, $b:ident => $body:expr) => {
        match $kind {
            $crate::config::DeviceKind::Cpu => {
                type $b = $crate::CpuBackend;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::config::DeviceKind::Cuda => {
                $crate::config::require_cuda_driver()?;
                type $b = burn::backend::Cuda<f32>;
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::config::DeviceKind::Cuda => {
                anyhow::bail!("device = \"cuda\" needs a build with `--features cuda`")
            }
        }
    };
}

/// burn's CUDA backend panics in a device thread when the driver library cannot be loaded;
/// ask first, so `--device cuda` on a machine without one is an ordinary error.
#[cfg(feature = "cuda")]
pub fn require_cuda_driver() -> anyhow::Result<()> {
    // SAFETY: only tries to dlopen the driver library under its usual names.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        bail!(
            "device = \"cuda\": no CUDA driver found (libcuda.so); this needs an NVIDIA GPU with \
             its driver installed and on LD_LIBRARY_PATH"
        )
    }
}

/// Everything a run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// `default` (Rotten Tomatoes), a GLUE task (`sst-2`, `mrpc`, …), `csv:PATH`, `tsv:PATH`,
    /// `jsonl:PATH`, or `custom` (described by the `[custom]` table).
    pub task: String,
    pub custom: Option<CustomTaskConfig>,
    pub method: Method,
    /// Local HF model folder; absent = the fetched all-MiniLM-L6-v2.
    pub model: Option<PathBuf>,
    /// GLUE folder; absent = `$GLUE_DIR`.
    pub glue_dir: Option<PathBuf>,
    pub device: DeviceKind,
    pub seed: u64,
    /// Store every frozen dense weight of the encoder quantized (QLoRA): `nf4`, `fp4` or
    /// `int8`; absent = f32. LoRA and AdaLoRA only.
    pub quantize: Option<QuantType>,
    /// Values per absmax block of the quantized base; must divide every weight row.
    pub quant_block_size: usize,
    /// Quantize the absmax constants again to 8 bits (blocks of 256, mean subtracted).
    pub double_quant: bool,
    /// The quantized base's matmul dtype: `f32` or `bf16` (bitsandbytes' compute dtype).
    pub compute_dtype: ComputeDtype,
    /// Which dense layers get adapters (LoRA / AdaLoRA).
    pub target: TargetSpec,
    pub lora: LoraSection,
    /// AdaLoRA settings; `tinit`/`tfinal` may be fractions of the run's total_step.
    pub adalora: AdaLoraConfig,
    pub train: TrainSection,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            task: "default".into(),
            custom: None,
            method: Method::AdaLora,
            model: None,
            glue_dir: None,
            device: DeviceKind::Cpu,
            seed: 42,
            quantize: None,
            quant_block_size: QuantConfig::qlora().block_size,
            double_quant: false,
            compute_dtype: ComputeDtype::F32,
            // The paper adapts all six matrices of every layer.
            target: TargetSpec::new(
                "query,key,value,attention-output,intermediate,output"
                    .parse()
                    .expect("valid default target"),
            ),
            lora: LoraSection::default(),
            adalora: AdaLoraConfig::default(),
            train: TrainSection::default(),
        }
    }
}

impl RunConfig {
    /// Load `path` (if any), apply `key=value` overrides (`--set` syntax, see
    /// [`Setting::parse`]) in order, and check the result.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> anyhow::Result<Self> {
        let settings = overrides
            .iter()
            .map(|o| Setting::parse(o))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Self::load_settings(path, &settings)
    }

    /// Load `path` (if any), apply `settings` in order, and check the result.
    pub fn load_settings(path: Option<&Path>, settings: &[Setting]) -> anyhow::Result<Self> {
        let mut doc = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("parsing config {}", p.display()))?
            }
            None => toml::Table::new(),
        };
        for setting in settings {
            setting.apply(&mut doc)?;
        }
        let origin = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "command line".into());
        check_protocol(&doc).with_context(|| format!("in {origin}"))?;
        check_inits(&doc).with_context(|| format!("in {origin}"))?;
        let mut cfg: RunConfig = toml::Value::Table(doc)
            .try_into()
            .with_context(|| format!("invalid configuration ({origin})"))?;
        if let Some(file) = cfg.lora.rank_pattern_file.take() {
            cfg.lora.rank_pattern = read_rank_pattern(&file)
                .with_context(|| format!("lora.rank_pattern_file ({origin})"))?;
            cfg.lora.rank_pattern_source = Some(file);
        }
        cfg.validate().with_context(|| format!("in {origin}"))?;
        Ok(cfg)
    }

    /// The method and its settings for a run of `total_steps` optimizer steps (AdaLoRA's
    /// `tinit`/`tfinal` fractions resolved against it): what injection and the PEFT files read.
    pub fn method_config(&self, total_steps: usize) -> anyhow::Result<MethodConfig> {
        let adalora = if self.method == Method::AdaLora {
            self.adalora
                .resolve(total_steps)
                .context("invalid adalora settings")?
        } else {
            self.adalora.clone()
        };
        Ok(MethodConfig {
            method: self.method,
            lora: self.lora.to_core(),
            adalora,
        })
    }

    pub fn lr(&self) -> f64 {
        self.train.lr.unwrap_or_else(|| self.method.default_lr())
    }

    /// The base's quantization, if `quantize` is set.
    pub fn quant_config(&self) -> Option<QuantConfig> {
        self.quantize.map(|kind| QuantConfig {
            kind,
            block_size: self.quant_block_size,
            double_quant: self.double_quant,
            compute_dtype: self.compute_dtype,
        })
    }

    /// Range-check every numeric setting, naming the setting in the error. The model's own
    /// limit on `train.max_seq_len` is checked once the model is known ([`check_max_seq_len`]).
    pub fn validate(&self) -> anyhow::Result<()> {
        let t = &self.train;
        let at_least_one = [
            ("train.batch_size", Some(t.batch_size)),
            ("train.eval_batch_size", Some(t.eval_batch_size)),
            ("train.log_every", Some(t.log_every)),
            ("train.max_steps", t.max_steps),
            ("train.eval_every", t.eval_every),
            ("train.bucket_batches", t.bucket_batches),
            ("train.max_train_examples", t.max_train_examples),
            ("train.max_eval_examples", t.max_eval_examples),
        ];
        for (name, v) in at_least_one {
            require(v != Some(0), name, 0, "must be at least 1")?;
        }
        require(
            t.max_seq_len >= 4,
            "train.max_seq_len",
            t.max_seq_len,
            "must be at least 4",
        )?;
        require(
            t.epochs > 0 || t.max_steps.is_some(),
            "train.epochs",
            t.epochs,
            "give epochs >= 1 or max_steps",
        )?;
        let lr = self.lr();
        require(
            lr > 0.0 && lr.is_finite(),
            "train.lr",
            lr,
            "must be a positive number",
        )?;
        let unit =
            |name: &str, v: f64| require((0.0..1.0).contains(&v), name, v, "must be in [0, 1)");
        unit("train.warmup_ratio", t.warmup_ratio)?;
        unit("lora.dropout", self.lora.dropout)?;
        if let Some(p) = t.classifier_dropout {
            unit("train.classifier_dropout", p)?;
        }
        require(
            t.dev_ratio > 0.0 && t.dev_ratio < 1.0,
            "train.dev_ratio",
            t.dev_ratio,
            "must be in (0, 1)",
        )?;
        require(
            t.selection_ratio > 0.0 && t.selection_ratio <= 0.5,
            "train.selection_ratio",
            t.selection_ratio,
            "must be in (0, 0.5]",
        )?;
        require(
            t.weight_decay >= 0.0 && t.weight_decay.is_finite(),
            "train.weight_decay",
            t.weight_decay,
            "must be a finite number >= 0",
        )?;
        if let Some(n) = t.max_grad_norm {
            require(
                n > 0.0 && n.is_finite(),
                "train.max_grad_norm",
                n,
                "must be positive (omit it to disable clipping)",
            )?;
        }
        require(
            self.lora.alpha > 0.0 && self.lora.alpha.is_finite(),
            "lora.alpha",
            self.lora.alpha,
            "must be a positive number",
        )?;
        if !self.lora.rank_pattern.is_empty() && self.method != Method::Lora {
            bail!(
                "invalid setting lora.rank_pattern: a fixed rank pattern applies to method = \"lora\" only"
            );
        }
        if self.method == Method::Lora {
            require(
                self.lora.r > 0,
                "lora.r",
                0,
                "a LoRA rank must be at least 1",
            )?;
        }
        // Every AdaLoRA setting is range-checked whatever the method (a typo'd table is still
        // an error); the schedule once total_step is known.
        self.adalora
            .validate()
            .context("invalid adalora settings")?;
        if let Some(q) = self.quant_config() {
            let init = match self.method {
                Method::Lora if self.lora.init.from_weights() => {
                    Some(format!("lora.init = \"{}\"", self.lora.init.name()))
                }
                Method::AdaLora if !self.adalora.init.is_default() => {
                    Some(format!("adalora.init = \"{}\"", self.adalora.init.name()))
                }
                _ => None,
            };
            if let Some(init) = init {
                bail!(
                    "invalid setting {init} with quantize = \"{}\": an initialisation from W0's \
                     factors replaces the base by a residual, which a quantized base cannot hold \
                     here (quantizing the residual is not supported); drop quantize or use the \
                     default init",
                    q.kind
                );
            }
            if self.method.trains_base() {
                bail!(
                    "invalid setting quantize = \"{}\" with method = \"{}\": a quantized base is \
                     frozen, but {} trains the base weights; use lora or adalora (QLoRA), or drop \
                     quantize",
                    q.kind,
                    self.method.name(),
                    self.method.name()
                );
            }
            q.validate()?;
        } else if self.compute_dtype != ComputeDtype::F32 {
            bail!(
                "invalid setting compute_dtype = \"{}\": it is the dtype of a quantized base's \
                 matmul; set quantize as well, or drop compute_dtype",
                self.compute_dtype
            );
        }
        if self.device == DeviceKind::Cuda && !cfg!(feature = "cuda") {
            bail!("device = \"cuda\" needs a build with `--features cuda`");
        }
        Ok(())
    }

    /// Checks that need the model: `train.max_seq_len` within its position embeddings.
    pub fn check_against_model(&self, model_dir: &Path) -> anyhow::Result<()> {
        let max_tokens = adalora_model::max_tokens(model_dir)?;
        check_max_seq_len(self.train.max_seq_len, max_tokens)
            .with_context(|| format!("model {}", model_dir.display()))
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

/// `train.protocol`, checked before deserializing so that an unknown name is an error naming
/// the setting and the valid names (serde's "unknown variant" does not name the key).
fn check_protocol(doc: &toml::Table) -> anyhow::Result<()> {
    let Some(value) = doc.get("train").and_then(|t| t.get("protocol")) else {
        return Ok(());
    };
    let name = value.as_str().with_context(|| {
        format!(
            "invalid setting train.protocol = {value}: expected a string, one of {}",
            Protocol::NAMES.join(", ")
        )
    })?;
    Protocol::parse(name).context("invalid setting train.protocol")?;
    Ok(())
}

/// `lora.init` and `adalora.init`, checked before deserializing so that an unknown name is an
/// error naming the setting and the valid names.
fn check_inits(doc: &toml::Table) -> anyhow::Result<()> {
    type Parse = fn(&str) -> anyhow::Result<()>;
    let checks: [(&str, &[&str], Parse); 2] = [
        ("lora", &LoraInit::NAMES, |s| {
            LoraInit::parse(s).map(|_| ()).map_err(Into::into)
        }),
        ("adalora", &AdaLoraInit::NAMES, |s| {
            AdaLoraInit::parse(s).map(|_| ()).map_err(Into::into)
        }),
    ];
    for (section, names, parse) in checks {
        let Some(value) = doc.get(section).and_then(|t| t.get("init")) else {
            continue;
        };
        let name = value.as_str().with_context(|| {
            format!(
                "invalid setting {section}.init = {value}: expected a string, one of {}",
                names.join(", ")
            )
        })?;
        parse(name)?;
    }
    Ok(())
}

fn require(ok: bool, name: &str, value: impl std::fmt::Display, rule: &str) -> anyhow::Result<()> {
    if !ok {
        bail!("invalid setting {name} = {value}: {rule}");
    }
    Ok(())
}

/// `train.max_seq_len` must fit the model's position embeddings (a longer input would index
/// past them); `max_tokens` is what they cover (RoBERTa's start after the padding index).
pub fn check_max_seq_len(max_seq_len: usize, max_tokens: usize) -> anyhow::Result<()> {
    require(
        max_seq_len <= max_tokens,
        "train.max_seq_len",
        max_seq_len,
        &format!("the model's position embeddings cover {max_tokens} tokens"),
    )
}

/// Module path → final rank from a `rank_pattern.json` an AdaLoRA run wrote.
pub fn read_rank_pattern(path: &Path) -> anyhow::Result<BTreeMap<String, usize>> {
    let doc: serde_json::Value = crate::io::read_json(path)?;
    let modules = doc["modules"].as_array().with_context(|| {
        format!(
            "{}: no `modules` list (not a rank_pattern.json)",
            path.display()
        )
    })?;
    modules
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let path_of = m["path"].as_str();
            let rank = m["rank"].as_u64();
            match (path_of, rank) {
                (Some(p), Some(r)) => Ok((p.to_string(), r as usize)),
                _ => bail!(
                    "{}: modules[{i}] needs a string `path` and a count `rank`",
                    path.display()
                ),
            }
        })
        .collect()
}

/// One setting over a configuration: a dotted key (`train.lr`) and its TOML value. Flags
/// build these from typed values; `--set key=value` text goes through [`Setting::parse`].
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub key: String,
    pub value: toml::Value,
}

impl Setting {
    pub fn new(key: &str, value: impl Into<toml::Value>) -> Self {
        Setting {
            key: key.to_string(),
            value: value.into(),
        }
    }

    /// `a.b.c=value`: the value as a TOML literal (number, bool, array, quoted string). A bare
    /// word is taken as a string only where the setting is one (`task=rotten_tomatoes`,
    /// `method=lora`); anywhere else text that is not a TOML value is an error naming the key
    /// and the type it takes — never silently a different setting.
    pub fn parse(assignment: &str) -> anyhow::Result<Self> {
        let (key, raw) = assignment
            .split_once('=')
            .with_context(|| format!("setting {assignment:?} must look like section.key=value"))?;
        let (key, raw) = (key.trim(), raw.trim());
        if key.is_empty() || key.split('.').any(str::is_empty) {
            bail!("setting {assignment:?} has an empty key");
        }
        if let Some(value) = toml_literal(raw) {
            return Ok(Setting::new(key, value));
        }
        let bare = Setting::new(key, raw);
        match bare.check() {
            // serde's wording for a value of the wrong kind: the setting takes no text at all.
            // (A string the setting refuses, e.g. an unknown method, is left to the full check,
            // which lists the allowed values.)
            Err(e) if format!("{e:#}").contains("invalid type: string") => Err(e.context(format!(
                "setting `{key}={raw}`: `{raw}` is not a TOML value (quote text: \"…\")"
            ))),
            _ => Ok(bare),
        }
    }

    /// Does this setting name a real setting with a value of its type? Checked alone on the
    /// defaults (deserialization only: rules across settings are checked with the whole config).
    pub fn check(&self) -> anyhow::Result<()> {
        let mut doc = toml::Table::new();
        self.apply(&mut doc)?;
        toml::Value::Table(doc)
            .try_into::<RunConfig>()
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("setting `{}` = {}: {e}", self.key, self.value))
    }

    /// Set the key in `doc`, creating its tables.
    pub fn apply(&self, doc: &mut toml::Table) -> anyhow::Result<()> {
        let parts: Vec<&str> = self.key.split('.').collect();
        let mut table = doc;
        for part in &parts[..parts.len() - 1] {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry
                .as_table_mut()
                .with_context(|| format!("setting {}: {part} is not a table", self.key))?;
        }
        table.insert(parts[parts.len() - 1].to_string(), self.value.clone());
        Ok(())
    }
}

impl std::fmt::Display for Setting {
    /// `key=value` with the value as TOML: [`Setting::parse`] reads it back unchanged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// `raw` as a TOML value, if it is one.
fn toml_literal(raw: &str) -> Option<toml::Value> {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use adalora_core::Steps;

    #[test]
    fn overrides_reach_every_section_and_typos_fail() {
        let cfg = RunConfig::load(
            None,
            &[
                "method=lora".into(),
                "lora.r=4".into(),
                "train.lr=1e-3".into(),
                "adalora.tinit=0.2".into(),
                "adalora.tfinal=30".into(),
                "target.modules=\"query,value\"".into(),
                "task=csv:data/x.csv".into(),
            ],
        )
        .unwrap();
        assert_eq!(cfg.method, Method::Lora);
        assert_eq!(cfg.lora.r, 4);
        assert_eq!(cfg.lr(), 1e-3);
        assert_eq!(cfg.adalora.tinit, Steps::Fraction(0.2));
        assert_eq!(cfg.adalora.tfinal, Steps::Count(30));
        assert_eq!(cfg.task, "csv:data/x.csv");
        assert_eq!(cfg.target.modules.to_string(), "query,value");
        let err = RunConfig::load(None, &["train.lrr=1".into()]).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `lrr`"),
            "{err:#}"
        );
        let err = RunConfig::load(None, &["adalora.target_r=20".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("target_r = 20"), "{err:#}");
        let err = RunConfig::load(None, &["method=prefix".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("unknown variant"), "{err:#}");
    }

    #[test]
    fn bare_words_are_strings_only_where_the_setting_is_one() {
        assert_eq!(
            Setting::parse("task=rotten_tomatoes").unwrap().value,
            toml::Value::String("rotten_tomatoes".into())
        );
        assert_eq!(
            Setting::parse("method=lora").unwrap().value.as_str(),
            Some("lora")
        );
        assert_eq!(
            Setting::parse("train.lr=2e-3").unwrap().value.as_float(),
            Some(2e-3)
        );
        for (bad, key, expected) in [
            ("train.lr=1e-3x", "train.lr", "f64"),
            ("lora.r=four", "lora.r", "usize"),
            ("target.layers=[0,1", "target.layers", "sequence"),
            ("train.skip_bad_rows=yes", "train.skip_bad_rows", "bool"),
        ] {
            let err = format!("{:#}", Setting::parse(bad).unwrap_err());
            assert!(err.contains(key) && err.contains(expected), "{bad}: {err}");
        }
        for bad in ["=1", "train.=1", "lr"] {
            assert!(Setting::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_setting_round_trips_through_its_text() {
        for text in [
            "csv:a\"b\\c.csv",
            "esc\u{1b}del\u{7f}",
            "naïve, \n two lines",
        ] {
            let s = Setting::new("task", text);
            assert_eq!(Setting::parse(&s.to_string()).unwrap(), s, "{s}");
        }
        let layers = Setting::new(
            "target.layers",
            toml::Value::Array(vec![1.into(), 3.into()]),
        );
        assert_eq!(Setting::parse(&layers.to_string()).unwrap(), layers);
    }

    #[test]
    fn quantization_settings_are_checked() {
        let cfg = RunConfig::load(
            None,
            &[
                "method=lora".into(),
                "quantize=nf4".into(),
                "double_quant=true".into(),
            ],
        )
        .unwrap();
        assert_eq!(cfg.quant_config(), Some(QuantConfig::qlora()));
        let err = RunConfig::load(None, &["quantize=nf3".into()]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("nf3") && msg.contains("quantize"), "{msg}");
        for method in ["full", "bitfit"] {
            let err = RunConfig::load(None, &[format!("method={method}"), "quantize=nf4".into()])
                .unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("quantize") && msg.contains("frozen"), "{msg}");
        }
        let bf16 = RunConfig::load(
            None,
            &["quantize=nf4".into(), "compute_dtype=\"bf16\"".into()],
        )
        .unwrap();
        assert_eq!(
            bf16.quant_config().unwrap().compute_dtype,
            ComputeDtype::Bf16
        );
        let err = RunConfig::load(None, &["compute_dtype=\"bf16\"".into()]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("compute_dtype") && msg.contains("quantize"),
            "{msg}"
        );
        let err = RunConfig::load(None, &["compute_dtype=\"f16\"".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("f16"), "{err:#}");
        let err = RunConfig::load(None, &["quantize=int8".into(), "quant_block_size=7".into()])
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("quant_block_size = 7"),
            "{err:#}"
        );
    }

    #[test]
    fn fractions_resolve_against_total_steps() {
        let cfg = RunConfig::default();
        let core = cfg.method_config(1000).unwrap().adalora;
        assert_eq!(
            (core.tinit, core.tfinal),
            (Steps::Count(100), Steps::Count(400))
        );
        assert_eq!(core.total_step, Some(1000));
        assert!(Steps::Fraction(1.5).resolve(10, "x").is_err());
        assert_eq!(RunConfig::default().lr(), 2e-3);
    }

    /// `total_step` is derived from the data, never a setting (the README says so).
    #[test]
    fn total_step_is_not_a_setting() {
        let err = RunConfig::load(None, &["adalora.total_step=100".into()]).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `total_step`"),
            "{err:#}"
        );
    }

    #[test]
    fn selection_ratio_is_range_checked_by_name() {
        for bad in ["0", "0.6", "-1", "0.0", "nan"] {
            let err = RunConfig::load(None, &[format!("train.selection_ratio={bad}")]).unwrap_err();
            let msg = format!("{err:#}");
            let shown = bad.parse::<f64>().unwrap().to_string();
            assert!(
                msg.contains(&format!("train.selection_ratio = {shown}"))
                    && msg.contains("(0, 0.5]")
                    && msg.contains("command line"),
                "{bad}: {msg}"
            );
        }
        for good in ["0.5", "0.25", "1e-3"] {
            let cfg = RunConfig::load(None, &[format!("train.selection_ratio={good}")]).unwrap();
            assert_eq!(cfg.train.selection_ratio, good.parse::<f64>().unwrap());
        }
        // The file is named when the value comes from one.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[train]\nselection_ratio = 0.6\n").unwrap();
        let msg = format!("{:#}", RunConfig::load(Some(&p), &[]).unwrap_err());
        assert!(
            msg.contains(&p.display().to_string()) && msg.contains("train.selection_ratio = 0.6"),
            "{msg}"
        );
    }

    #[test]
    fn protocol_names_parse_and_an_unknown_one_lists_them() {
        assert_eq!(RunConfig::default().train.protocol, Protocol::BestDev);
        for (name, p) in [
            ("best-dev", Protocol::BestDev),
            ("held-out", Protocol::HeldOut),
        ] {
            assert_eq!(Protocol::parse(name).unwrap(), p);
            assert_eq!(p.name(), name);
            for set in [
                format!("train.protocol={name}"),
                format!("train.protocol=\"{name}\""),
            ] {
                assert_eq!(RunConfig::load(None, &[set]).unwrap().train.protocol, p);
            }
        }
        assert_eq!(Protocol::NAMES, ["best-dev", "held-out"]);
        for bad in [
            "train.protocol=heldout",
            "train.protocol=\"best_dev\"",
            "train.protocol=3",
        ] {
            let msg = format!("{:#}", RunConfig::load(None, &[bad.into()]).unwrap_err());
            assert!(
                msg.contains("train.protocol")
                    && msg.contains("best-dev")
                    && msg.contains("held-out"),
                "{bad}: {msg}"
            );
        }
        let msg = format!("{:#}", Protocol::parse("x").unwrap_err());
        assert_eq!(
            msg,
            "unknown protocol \"x\": expected one of best-dev, held-out"
        );
    }

    /// A sweep's settings hash and a run's config.toml are the TOML of the resolved config:
    /// the new settings appear only when set, so every existing run keeps its hash.
    #[test]
    fn default_protocol_settings_are_not_serialized() {
        let text = RunConfig::default().to_toml().unwrap();
        assert!(
            !text.contains("protocol") && !text.contains("selection_ratio"),
            "{text}"
        );
        // Set to their defaults explicitly: the same text (the same run).
        let explicit = RunConfig::load(
            None,
            &[
                "train.protocol=best-dev".into(),
                "train.selection_ratio=0.1".into(),
            ],
        )
        .unwrap();
        assert_eq!(explicit.to_toml().unwrap(), text);
        let held_out = RunConfig::load(
            None,
            &[
                "train.protocol=held-out".into(),
                "train.selection_ratio=0.2".into(),
            ],
        )
        .unwrap();
        let held_text = held_out.to_toml().unwrap();
        assert!(
            held_text.contains("protocol = \"held-out\"")
                && held_text.contains("selection_ratio = 0.2"),
            "{held_text}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, &held_text).unwrap();
        assert_eq!(RunConfig::load(Some(&p), &[]).unwrap(), held_out);
    }

    /// The default configuration's TOML, as it was before `train.protocol` and
    /// `train.selection_ratio` existed: a sweep's settings hash is the FNV-1a of this text (with
    /// its overrides applied), so any change here renames the run folders of existing sweeps.
    #[test]
    fn default_config_serializes_as_before() {
        let expected = r#"task = "default"
method = "adalora"
device = "cpu"
seed = 42
quant_block_size = 64
double_quant = false
compute_dtype = "f32"

[target]
modules = [
    "query",
    "key",
    "value",
    "attention-output",
    "intermediate",
    "output",
]

[lora]
r = 8
alpha = 16.0
dropout = 0.0
use_rslora = false

[adalora]
init_r = 12
target_r = 8
alpha = 16.0
dropout = 0.0
tinit = 0.1
tfinal = 0.4
delta_t = 10
beta1 = 0.85
beta2 = 0.85
orth_reg_weight = 0.5
orth_form = "reference"
score = "sensitivity-uncertainty"
score_weights = "post-update"

[train]
epochs = 3
batch_size = 32
eval_batch_size = 64
max_seq_len = 128
warmup_ratio = 0.06
decay = "linear"
weight_decay = 0.0
decay_biases_and_norms = false
max_grad_norm = 1.0
log_every = 10
dev_ratio = 0.1
skip_bad_rows = false
"#;
        assert_eq!(RunConfig::default().to_toml().unwrap(), expected);
    }

    /// `lora.init` / `adalora.init`: parsed by name, an unknown one refused naming the key and
    /// the valid names, the defaults never written (sweep hashes), refused on a quantized base.
    #[test]
    fn init_settings_parse_serialize_and_refuse_by_key() {
        let cfg = RunConfig::load(
            None,
            &["lora.init=pissa".into(), "adalora.init=\"svd\"".into()],
        )
        .unwrap();
        assert_eq!(cfg.lora.init, LoraInit::Pissa);
        assert_eq!(cfg.adalora.init, AdaLoraInit::Svd);
        let text = cfg.to_toml().unwrap();
        assert!(
            text.contains("init = \"pissa\"") && text.contains("init = \"svd\""),
            "{text}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, &text).unwrap();
        assert_eq!(RunConfig::load(Some(&p), &[]).unwrap(), cfg);
        assert_eq!(
            RunConfig::load(None, &["lora.init=olora".into()])
                .unwrap()
                .lora
                .init,
            LoraInit::Olora
        );
        // Defaults, explicit or not: the same text as before these settings existed.
        let explicit = RunConfig::load(
            None,
            &["lora.init=kaiming".into(), "adalora.init=zero".into()],
        )
        .unwrap();
        assert_eq!(
            explicit.to_toml().unwrap(),
            RunConfig::default().to_toml().unwrap()
        );
        for (bad, key, names) in [
            (
                "lora.init=normal",
                "lora.init",
                "kaiming, gaussian, pissa, olora",
            ),
            (
                "lora.init=3",
                "lora.init",
                "kaiming, gaussian, pissa, olora",
            ),
            ("adalora.init=pissa", "adalora.init", "zero, svd"),
        ] {
            let msg = format!("{:#}", RunConfig::load(None, &[bad.into()]).unwrap_err());
            assert!(msg.contains(key) && msg.contains(names), "{bad}: {msg}");
        }
        for set in [
            ["method=lora", "lora.init=pissa"],
            ["method=lora", "lora.init=olora"],
            ["method=adalora", "adalora.init=svd"],
        ] {
            let mut all: Vec<String> = set.iter().map(|s| s.to_string()).collect();
            all.push("quantize=nf4".into());
            let msg = format!("{:#}", RunConfig::load(None, &all).unwrap_err());
            assert!(
                msg.contains(set[1].split('=').next().unwrap()) && msg.contains("quantize"),
                "{msg}"
            );
        }
        // The inits that leave W0 alone still work with QLoRA.
        RunConfig::load(None, &["method=lora".into(), "quantize=nf4".into()]).unwrap();
        let gaussian = ["method=lora", "lora.init=gaussian", "quantize=nf4"];
        RunConfig::load(None, &gaussian.map(String::from)).unwrap();
    }

    #[test]
    fn resolved_config_round_trips_through_toml() {
        let cfg =
            RunConfig::load(None, &["method=lora".into(), "train.max_steps=7".into()]).unwrap();
        let text = cfg.to_toml().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        assert_eq!(RunConfig::load(Some(&p), &[]).unwrap(), cfg);
    }
}
