//! The training loop: AdamW with linear warm-up/decay and global gradient clipping; for
//! AdaLoRA the driver ([`crate::adalora`]) adds the orthogonality term to the loss and steps
//! the rank allocator with every optimizer step, so it can't be skipped. Evaluation at
//! intervals, best-checkpoint tracking, atomic checkpoints and exact resume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use adalora_core::{AdapterHost, Method, MethodConfig, QuantConfig, RankAllocator, RankPattern};
use adalora_data::batch::{BatchConfig, Batcher};
use adalora_data::tokenize::TextTokenizer;
use adalora_model::{
    apply_method_with_ranks, AnyClassifier, ParamReport, QuantReport, SequenceClassifier,
};
use anyhow::{bail, Context};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ElementConversion;
use serde::{Deserialize, Serialize};

use crate::adalora::{AdaLoraDriver, AdaLoraRecord};
use crate::batch::{forward_batch, task_loss};
use crate::clip::clip_global_norm;
use crate::config::{DeviceKind, Protocol, RunConfig};
use crate::decay::{bias_and_norm_ids, GroupedAdamW};
use crate::eval::evaluate_split;
use crate::io::{atomic_write, atomic_write_json, read_json, replace_dir, RunDir};
use crate::lr::LrSchedule;
use crate::params::{load_trainable, renumber_params, save_trainable};
use crate::peft::save_peft_adapter;
use crate::provenance::Provenance;
use crate::signals::{Interrupted, INTERRUPTED_FILE};
use crate::task::{prepare_task, PreparedTask, SELECTION_SPLIT};

pub type Model<B> = AnyClassifier<B>;
type Adam<B> = GroupedAdamW<Model<B>, B>;

/// AdamW, plus the AdaLoRA driver for AdaLoRA runs.
pub(crate) struct TrainOptimizer<B: AutodiffBackend> {
    adam: Adam<B>,
    adalora: Option<AdaLoraDriver<B>>,
}

impl<B: AutodiffBackend> TrainOptimizer<B> {
    fn step(
        &mut self,
        lr: f64,
        model: Model<B>,
        grads: GradientsParams,
    ) -> anyhow::Result<Model<B>> {
        match &mut self.adalora {
            Some(driver) => driver.step(&mut self.adam, lr, model, grads),
            None => Ok(self.adam.step(lr, model, grads)),
        }
    }

    /// The allocator's share of the latest step (AdaLoRA only).
    pub(crate) fn last_allocation_time(&self) -> Option<std::time::Duration> {
        self.adalora
            .as_ref()
            .map(AdaLoraDriver::last_allocation_time)
    }

    fn allocator(&self) -> Option<&RankAllocator<B::InnerBackend>> {
        self.adalora.as_ref().map(AdaLoraDriver::allocator)
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        let adam = self.adam.to_record();
        match &self.adalora {
            None => recorder.record(adam, path.to_path_buf()),
            Some(driver) => recorder.record(
                AdaLoraRecord {
                    inner: adam,
                    allocator: driver.state(),
                },
                path.to_path_buf(),
            ),
        }
        .with_context(|| format!("writing optimizer state {}", path.display()))
    }

    fn load(self, path: &Path, device: &B::Device) -> anyhow::Result<Self> {
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        let path = path.to_path_buf();
        let reading = || format!("reading {}", path.display());
        let TrainOptimizer { adam, adalora } = self;
        Ok(match adalora {
            None => {
                let record = recorder.load(path.clone(), device).with_context(reading)?;
                TrainOptimizer {
                    adam: adam.load_record(record),
                    adalora: None,
                }
            }
            Some(mut driver) => {
                let record: AdaLoraRecord<_> =
                    recorder.load(path.clone(), device).with_context(reading)?;
                // Validates the allocator state (a clear error instead of a panic).
                driver.restore(&record.allocator, device)?;
                TrainOptimizer {
                    adam: Optimizer::<Model<B>, B>::load_record(adam, record.inner),
                    adalora: Some(driver),
                }
            }
        })
    }
}

/// What a run folder remembers between invocations.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    pub epoch: usize,
    /// Batches of `epoch` already consumed.
    pub batch_in_epoch: usize,
    /// The main metric the best checkpoint was chosen by: the first dev split's (best-dev) or
    /// the selection split's (held-out).
    pub best_metric: Option<f64>,
    pub best_step: Option<usize>,
    /// The first dev split's metrics at `best_step`.
    pub best_metrics: BTreeMap<String, f64>,
    /// The selection split's metrics at `best_step` (held-out; empty under best-dev, and then
    /// not written, so such a state.json reads as before).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selection_metrics: BTreeMap<String, f64>,
    /// Running sums of the current logging window.
    pub window: Window,
    pub model_fingerprint: String,
    pub train_seconds: f64,
    pub examples_seen: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Window {
    pub loss: f64,
    pub task_loss: f64,
    pub orth_reg: f64,
    pub grad_norm: f64,
    pub steps: usize,
}

/// Per dev split: (mean loss, metrics by name).
type SplitResults = BTreeMap<String, (f64, BTreeMap<String, f64>)>;

/// The final report (`summary.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub task: String,
    pub method: String,
    pub model_dir: String,
    /// [`fingerprint`] of the base model: `eval --run … --model DIR` checks DIR against it
    /// (empty in runs from before it was recorded: nothing to check).
    #[serde(default)]
    pub model_fingerprint: String,
    pub run_dir: String,
    pub total_steps: usize,
    pub epochs: usize,
    pub lr: f64,
    pub train_examples: usize,
    pub trainable_params: usize,
    pub all_params: usize,
    pub trainable_percent: f64,
    pub main_metric: String,
    /// The last evaluation, per dev split (the selection split is in metrics.csv).
    pub final_metrics: BTreeMap<String, BTreeMap<String, f64>>,
    /// The evaluation the best checkpoint (`best/`) was chosen at: the best main metric of the
    /// first dev split (`best-dev`) or of the selection split (`held-out`).
    pub best_step: Option<usize>,
    /// The first dev split's metrics at `best_step`.
    pub best_metrics: BTreeMap<String, f64>,
    /// `train.protocol` of the run ("best-dev" in summaries from before it existed).
    #[serde(default = "best_dev_name")]
    pub protocol: String,
    /// The selection split's metrics at `best_step` (held-out runs; empty otherwise).
    #[serde(default)]
    pub selection_metrics: BTreeMap<String, f64>,
    /// The first dev split's metrics of a constant predictor
    /// ([`crate::baseline::baseline_metrics`]; empty in summaries from before it existed:
    /// [`crate::baseline::baseline_for_config`] recomputes it from the run's config.toml).
    #[serde(default)]
    pub baseline_metrics: BTreeMap<String, f64>,
    pub final_total_rank: Option<usize>,
    pub target_total_rank: Option<usize>,
    pub train_seconds: f64,
    pub train_examples_per_second: f64,
    /// The quantized base (QLoRA): bytes in memory and quantization error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantReport>,
    /// The build and machine that finished the run (absent in older summaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

fn best_dev_name() -> String {
    Protocol::BestDev.name().into()
}

pub struct TrainOptions {
    pub config: RunConfig,
    pub out: PathBuf,
    pub resume: bool,
    pub overwrite: bool,
    pub progress: bool,
    /// Stop after this many optimizer steps (in total), leaving a resumable checkpoint.
    pub stop_after_steps: Option<usize>,
}

/// Train on the CPU (ndarray + OpenBLAS) or, with the `cuda` feature, on a GPU.
pub fn train(opts: &TrainOptions) -> anyhow::Result<Option<Summary>> {
    crate::on_device!(opts.config.device, B => {
        train_on::<burn::backend::Autodiff<B>>(opts, &Default::default())
    })
}

/// FNV-1a of the model's config.json and the run's label count: identifies "the same base model".
pub fn fingerprint(model_dir: &Path, num_labels: usize) -> anyhow::Result<String> {
    let mut bytes = std::fs::read(model_dir.join("config.json"))
        .with_context(|| format!("reading {}", model_dir.join("config.json").display()))?;
    bytes.extend_from_slice(&num_labels.to_le_bytes());
    Ok(crate::io::fnv1a(&bytes))
}

/// Quantize the frozen base as `q` says, for a forward on `device`: on a GPU the 4-bit codes
/// live on the card; on CPU the host loop is faster. Training, eval and predict all build their
/// quantized base here, so each runs the same path on the same device.
pub fn quantize_for_device<B: Backend, M: SequenceClassifier<B>>(
    model: M,
    q: QuantConfig,
    device: DeviceKind,
) -> anyhow::Result<(M, QuantReport)> {
    let (model, report) = adalora_model::quantize_base(model, q)?;
    if device == DeviceKind::Cuda {
        adalora_model::dequantize_on_device(&model);
    }
    Ok((model, report))
}

/// Base model (quantized if the config says so) + task head + method, with deterministic
/// parameter ids.
pub fn build_model<B: AutodiffBackend>(
    cfg: &RunConfig,
    model_dir: &Path,
    num_labels: usize,
    total_steps: usize,
    device: &B::Device,
) -> anyhow::Result<(Model<B>, ParamReport, Option<QuantReport>)> {
    B::seed(device, cfg.seed);
    let (mut model, _) =
        adalora_model::load_for_classification::<B>(model_dir, num_labels, cfg.seed, device)?;
    if let Some(p) = cfg.train.classifier_dropout {
        model = model.with_classifier_dropout(p);
    }
    let (model, quant) = match cfg.quant_config() {
        Some(q) => {
            let (model, report) = quantize_for_device(model, q, cfg.device)?;
            (model, Some(report))
        }
        None => (model, None),
    };
    let (model, report) = apply_method_with_ranks(
        model,
        &cfg.method_config(total_steps)?,
        &cfg.target,
        &cfg.lora.rank_pattern,
        device,
    )
    .with_context(|| match &cfg.lora.rank_pattern_source {
        Some(file) => format!("applying the rank pattern of {}", file.display()),
        None => "applying the method".into(),
    })?;
    // PiSSA / OLoRA / AdaLoRA-SVD: factors from W0, the base keeps the residual (a no-op for
    // the default initialisations). Deterministic, so resume rebuilds the same residual.
    let model = crate::init::apply_weight_init(model, cfg)?;
    Ok((renumber_params(model), report, quant))
}

/// The device a model's parameters live on: evaluation runs where training does.
pub(crate) fn device_of<B: Backend, M: Module<B>>(model: &M) -> B::Device {
    model.devices().into_iter().next().unwrap_or_default()
}

fn step_seed(seed: u64, step: usize) -> u64 {
    seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

struct MetricsLog {
    path: PathBuf,
    metric_names: Vec<String>,
}

/// The columns of `metrics.csv` before the task metrics (one definition for the writer here and
/// the readers in the studies crate).
pub const FIXED_COLUMNS: [&str; 10] = [
    "step",
    "epoch",
    "split",
    "loss",
    "task_loss",
    "orth_reg",
    "lr",
    "grad_norm",
    "budget",
    "total_rank",
];

impl MetricsLog {
    /// Create (fresh run) or trim rows after `keep_until` (resume), keeping the header.
    fn open(
        path: PathBuf,
        metric_names: Vec<String>,
        keep_until: Option<usize>,
    ) -> anyhow::Result<Self> {
        let header: Vec<String> = FIXED_COLUMNS
            .iter()
            .map(|s| s.to_string())
            .chain(metric_names.iter().cloned())
            .collect();
        let kept = match (keep_until, path.exists()) {
            (Some(limit), true) => read_metrics_rows(&path)?
                .into_iter()
                // A row torn by a kill has fewer fields (and a step after the checkpoint).
                .filter(|r| r.len() == header.len())
                .filter(|r| r[0].parse::<usize>().is_ok_and(|step| step <= limit))
                .collect(),
            _ => Vec::new(),
        };
        adalora_fs::write_csv(&path, |w| {
            w.write_record(&header)?;
            kept.iter().try_for_each(|r| w.write_record(r))
        })?;
        Ok(MetricsLog { path, metric_names })
    }

    fn append(&self, fixed: [String; 10], metrics: &BTreeMap<String, f64>) -> anyhow::Result<()> {
        let mut row: Vec<String> = fixed.to_vec();
        for name in &self.metric_names {
            row.push(
                metrics
                    .get(name)
                    .map(|v| format!("{v:.6}"))
                    .unwrap_or_default(),
            );
        }
        // An append, not a replace: a kill can tear only this last row, which the resume drops.
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("appending to {}", self.path.display()))?;
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(file);
        w.write_record(&row)
            .and_then(|()| Ok(w.flush()?))
            .with_context(|| format!("appending to {}", self.path.display()))
    }
}

/// The data rows of a `metrics.csv` as written so far (a torn last row included, with fewer
/// fields; the caller decides what to keep).
fn read_metrics_rows(path: &Path) -> anyhow::Result<Vec<csv::StringRecord>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("reading {}", path.display()))?;
    reader
        .records()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("{} line {}", path.display(), i + 2)))
        .collect()
}

/// Drop history lines logged after `step` (they will be logged again by the resumed run).
fn trim_history(path: &Path, step: usize) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path)?;
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    atomic_write(path, kept.as_bytes())
}

fn opt(v: Option<usize>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// Everything the loop needs that does not change during it.
struct Run<'a> {
    cfg: &'a RunConfig,
    dir: RunDir,
    model_dir: PathBuf,
    prepared: PreparedTask,
    tokenizer: TextTokenizer,
    total_steps: usize,
    batches_per_epoch: usize,
    metrics: MetricsLog,
    report: ParamReport,
    quant: Option<QuantReport>,
    /// The constant-prediction baseline on the first dev split.
    baseline: BTreeMap<String, f64>,
}

pub fn train_on<B: AutodiffBackend>(
    opts: &TrainOptions,
    device: &B::Device,
) -> anyhow::Result<Option<Summary>> {
    let dir = RunDir::new(&opts.out);
    let _lock = dir.lock()?;
    for folder in [dir.checkpoint(), dir.best_adapter(), dir.final_adapter()] {
        crate::io::recover_dir(&folder)?;
    }
    // A run killed before its first checkpoint restarts from its saved config.toml.
    let resume = opts.resume && dir.checkpoint().join("state.json").exists();
    let cfg = if opts.resume {
        if dir.summary().exists() {
            bail!(
                "{} already holds a finished run; nothing to resume",
                dir.root.display()
            );
        }
        if !dir.config().exists() {
            bail!(
                "{} has no run to resume (config.toml missing)",
                dir.root.display()
            );
        }
        let cfg =
            RunConfig::load(Some(&dir.config()), &[]).context("the run's saved config.toml")?;
        if !resume {
            eprintln!(
                "{} has no checkpoint yet: starting it again from its config.toml",
                dir.root.display()
            );
            dir.prepare_fresh(true)?;
        }
        cfg
    } else {
        dir.prepare_fresh(opts.overwrite)?;
        opts.config.clone()
    };
    cfg.validate()?;
    // Recorded absolute, so eval/predict/merge of the run work from any directory.
    let model_dir = std::path::absolute(adalora_model::loader::resolve_model_dir(
        cfg.model.as_deref(),
    )?)?;
    let cfg = RunConfig {
        model: Some(model_dir.clone()),
        ..cfg
    };
    cfg.check_against_model(&model_dir)?;
    let tokenizer = crate::task::load_tokenizer(&model_dir, cfg.train.max_seq_len)?;
    let prepared = prepare_task(&cfg, &tokenizer)?;
    let baseline = crate::baseline::baseline_metrics(&prepared.task)?;
    let batches_per_epoch = prepared.train.len().div_ceil(cfg.train.batch_size);
    let total_steps = cfg
        .train
        .max_steps
        .unwrap_or(cfg.train.epochs * batches_per_epoch);
    let num_labels = prepared.task.kind.num_outputs();
    let (model, report, quant) =
        build_model::<B>(&cfg, &model_dir, num_labels, total_steps, device)?;
    if !resume {
        let mut text = format!(
            "# Resolved configuration of this run (lr = {}, total_steps = {total_steps}).\n",
            cfg.lr()
        );
        text.push_str(&cfg.to_toml()?);
        atomic_write(&dir.config(), text.as_bytes())?;
    }
    eprintln!("{}", report.table());
    if let Some(q) = &quant {
        eprintln!("{}", q.summary());
    }
    let names: Vec<String> = adalora_data::evaluate(
        prepared.task.metric,
        &prepared.task.dev[0].gold(),
        &prepared.task.dev[0].gold(),
    )
    .map(|m| m.values.iter().map(|(n, _)| n.clone()).collect())
    .unwrap_or_default();
    let mut state = TrainState {
        model_fingerprint: fingerprint(&model_dir, num_labels)?,
        ..TrainState::default()
    };
    let mut optimizer = make_optimizer::<B>(&cfg, &model, total_steps, device)?;
    let mut model = model;
    if resume {
        crate::io::verify_manifest(&dir.checkpoint())?;
        let saved: TrainState = read_json(&dir.checkpoint().join("state.json"))?;
        if saved.model_fingerprint != state.model_fingerprint {
            bail!(
                "checkpoint in {} was trained from another base model or label set (fingerprint {} ≠ {})",
                dir.checkpoint().display(),
                saved.model_fingerprint,
                state.model_fingerprint
            );
        }
        model = load_trainable(model, &dir.checkpoint().join("trainable.safetensors"))?;
        optimizer = optimizer.load(&dir.checkpoint().join("optimizer"), device)?;
        state = saved;
        eprintln!("resuming {} at step {}", dir.root.display(), state.step);
    }
    let metrics = MetricsLog::open(dir.metrics(), names, resume.then_some(state.step))?;
    if resume {
        trim_history(&dir.rank_history(), state.step)?;
    }
    let run = Run {
        cfg: &cfg,
        dir,
        model_dir,
        prepared,
        tokenizer,
        total_steps,
        batches_per_epoch,
        metrics,
        report,
        quant,
        baseline,
    };
    run.train_loop(model, optimizer, state, opts, device)
}

pub(crate) fn make_optimizer<B: AutodiffBackend>(
    cfg: &RunConfig,
    model: &Model<B>,
    total_steps: usize,
    device: &B::Device,
) -> anyhow::Result<TrainOptimizer<B>> {
    // HF's AdamW defaults (betas 0.9/0.999, eps 1e-8).
    let adam_config = AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(cfg.train.weight_decay as f32);
    // Hugging Face's Trainer exempts biases and LayerNorm weights from weight decay.
    let exempt = if cfg.train.decay_biases_and_norms {
        Default::default()
    } else {
        bias_and_norm_ids(model)
    };
    let adam = GroupedAdamW::new(&adam_config, exempt);
    let method = cfg.method_config(total_steps)?;
    let adalora = match method.method {
        Method::AdaLora => Some(AdaLoraDriver::new(&method.adalora, model, device)?),
        _ => None,
    };
    Ok(TrainOptimizer { adam, adalora })
}

/// A NaN/Inf loss: the step stops before the update (the loop names the step and checkpoint).
#[derive(Debug)]
pub(crate) struct NonFiniteLoss(pub f64);

impl std::fmt::Display for NonFiniteLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "loss is {}", self.0)
    }
}

impl std::error::Error for NonFiniteLoss {}

/// Host values of one optimizer step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLosses {
    pub loss: f64,
    pub task_loss: f64,
    /// The orthogonality term (AdaLoRA), before its weight; 0 otherwise.
    pub orth_reg: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// One training step, as the loop and `adalora bench` both run it: forward, loss (+ the
/// weighted orthogonality term for AdaLoRA), backward, global clipping, and the optimizer
/// step (with the allocator inside for AdaLoRA). The losses are read back only after
/// `backward`, so the host never waits on the forward pass; a non-finite loss is a
/// [`NonFiniteLoss`] error before the update, which is never applied.
pub(crate) fn train_step<B: AutodiffBackend>(
    cfg: &RunConfig,
    model: Model<B>,
    optim: &mut TrainOptimizer<B>,
    batch: &adalora_data::batch::Batch,
    lr: f64,
    device: &B::Device,
) -> anyhow::Result<(Model<B>, StepLosses)> {
    let logits = forward_batch(&model, batch, device)?;
    let task_loss = task_loss(logits, &batch.labels)?;
    let orth = optim
        .adalora
        .as_ref()
        .map(|driver| driver.orthogonality_term(&model, device));
    let loss = match (&optim.adalora, &orth) {
        (Some(driver), Some(term)) => driver.regularized(task_loss.clone(), term.clone()),
        _ => task_loss.clone(),
    };
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    let value = |t: burn::tensor::Tensor<B, 1>| t.into_scalar().elem::<f64>();
    let losses = StepLosses {
        loss: value(loss),
        task_loss: value(task_loss),
        orth_reg: orth.map(value).unwrap_or(0.0),
        grad_norm: 0.0,
    };
    if !losses.loss.is_finite() {
        return Err(NonFiniteLoss(losses.loss).into());
    }
    let grad_norm = clip_global_norm(&model, &mut grads, cfg.train.max_grad_norm);
    let model = optim.step(lr, model, grads)?;
    Ok((
        model,
        StepLosses {
            grad_norm,
            ..losses
        },
    ))
}

impl Run<'_> {
    fn lr_schedule(&self) -> LrSchedule {
        let t = &self.cfg.train;
        LrSchedule {
            base: self.cfg.lr(),
            warmup_steps: t
                .warmup_steps
                .unwrap_or((t.warmup_ratio * self.total_steps as f64).ceil() as usize),
            total_steps: self.total_steps,
            decay: t.decay,
        }
    }

    fn total_rank<B: AutodiffBackend>(
        &self,
        model: &Model<B>,
        optim: &TrainOptimizer<B>,
    ) -> Option<usize> {
        match optim.allocator() {
            Some(a) => Some(a.rank_pattern().total_rank()),
            None if self.cfg.method == Method::Lora => {
                Some(model.adapted_linears().iter().map(|l| l.rank()).sum())
            }
            None => None,
        }
    }

    fn train_loop<B: AutodiffBackend>(
        &self,
        mut model: Model<B>,
        mut optim: TrainOptimizer<B>,
        mut state: TrainState,
        opts: &TrainOptions,
        device: &B::Device,
    ) -> anyhow::Result<Option<Summary>> {
        let cfg = self.cfg;
        let lr = self.lr_schedule();
        let pad = self.tokenizer.pad_id();
        let batcher = Batcher::new(
            &self.prepared.train,
            pad,
            BatchConfig {
                batch_size: cfg.train.batch_size,
                bucket_batches: cfg.train.bucket_batches,
                seed: cfg.seed,
            },
        )?;
        let bar = progress_bar(opts.progress, self.total_steps, state.step);
        let mut last_pattern: Option<RankPattern> = optim.allocator().map(|a| a.rank_pattern());
        if let (Some(a), true) = (optim.allocator(), state.step > 0) {
            // On resume, rank_pattern.json may describe steps past the checkpoint: restate it.
            self.write_rank_pattern_file(&model, &a.rank_pattern(), state.step, a.budget())?;
        }
        // Resumed: no longer interrupted (the record of an earlier stop goes).
        let interrupted = self.dir.root.join(INTERRUPTED_FILE);
        if interrupted.exists() {
            std::fs::remove_file(&interrupted)
                .with_context(|| format!("removing {}", interrupted.display()))?;
        }
        let started = Instant::now();
        let time_before = state.train_seconds;
        while state.step < self.total_steps {
            let epoch = state.epoch;
            for batch in batcher.train_epoch(epoch as u64, state.batch_in_epoch) {
                if state.step >= self.total_steps {
                    break;
                }
                B::seed(device, step_seed(cfg.seed, state.step));
                let lr_now = lr.lr(state.step);
                let (next, losses) = train_step(cfg, model, &mut optim, &batch, lr_now, device)
                    .map_err(|e| match e.downcast_ref::<NonFiniteLoss>() {
                        Some(NonFiniteLoss(loss_value)) => anyhow::anyhow!(
                            "loss is {loss_value} at step {} (epoch {epoch}); stopping. The last \
                             good checkpoint is kept in {}: fix the cause (the data, or e.g. a \
                             lower train.lr in {}) and continue with --resume",
                            state.step + 1,
                            self.dir.checkpoint().display(),
                            self.dir.config().display()
                        ),
                        None => e,
                    })?;
                model = next;
                let loss_value = losses.loss;
                state.step += 1;
                state.batch_in_epoch += 1;
                state.examples_seen += batch.batch_size;
                let w = &mut state.window;
                w.loss += losses.loss;
                w.task_loss += losses.task_loss;
                w.orth_reg += losses.orth_reg;
                w.grad_norm += losses.grad_norm;
                w.steps += 1;

                let budget = optim.allocator().map(|a| a.budget());
                let total_rank = self.total_rank(&model, &optim);
                if let Some(a) = optim.allocator() {
                    let pattern = a.rank_pattern();
                    if last_pattern.as_ref() != Some(&pattern) {
                        self.write_rank_pattern(&model, &pattern, state.step, a.budget())?;
                        last_pattern = Some(pattern);
                    }
                }
                if state.step.is_multiple_of(cfg.train.log_every) || state.step == self.total_steps
                {
                    self.log_window(&mut state, epoch, lr_now, budget, total_rank)?;
                }
                bar.set_position(state.step as u64);
                bar.set_message(format!(
                    "loss {:.4} lr {:.2e}{}",
                    loss_value,
                    lr_now,
                    match (budget, total_rank) {
                        (Some(b), Some(r)) => format!(" b(t) {b} rank {r}"),
                        (None, Some(r)) => format!(" rank {r}"),
                        _ => String::new(),
                    }
                ));
                let end_of_epoch = state.batch_in_epoch == self.batches_per_epoch;
                let eval_due = match cfg.train.eval_every {
                    Some(n) => state.step.is_multiple_of(n),
                    None => end_of_epoch,
                };
                if eval_due && state.step < self.total_steps {
                    state.train_seconds = time_before + started.elapsed().as_secs_f64();
                    self.evaluate_and_track(&model, &mut state, epoch, &optim, &bar)?;
                    self.save_checkpoint(&model, &optim, &state)?;
                }
                let signal = crate::signals::requested();
                let asked = opts.stop_after_steps == Some(state.step);
                if (asked || signal.is_some()) && state.step < self.total_steps {
                    state.train_seconds = time_before + started.elapsed().as_secs_f64();
                    if end_of_epoch {
                        state.epoch += 1;
                        state.batch_in_epoch = 0;
                    }
                    self.save_checkpoint(&model, &optim, &state)?;
                    bar.finish_and_clear();
                    if let Some(signal) = signal {
                        let stop = Interrupted {
                            signal: signal.into(),
                            step: state.step,
                            total_steps: self.total_steps,
                            run: self.dir.root.clone(),
                            at: std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_secs()),
                        };
                        stop.write()?;
                        return Err(stop.into());
                    }
                    eprintln!(
                        "stopped after step {} as asked; continue with --resume",
                        state.step
                    );
                    return Ok(None);
                }
            }
            if state.step < self.total_steps || state.batch_in_epoch == self.batches_per_epoch {
                state.epoch += 1;
                state.batch_in_epoch = 0;
            }
        }
        bar.finish_and_clear();
        state.train_seconds = time_before + started.elapsed().as_secs_f64();
        self.finish(model, optim, state)
    }

    fn log_window(
        &self,
        state: &mut TrainState,
        epoch: usize,
        lr: f64,
        budget: Option<usize>,
        total_rank: Option<usize>,
    ) -> anyhow::Result<()> {
        let w = std::mem::take(&mut state.window);
        let n = w.steps.max(1) as f64;
        self.metrics.append(
            [
                state.step.to_string(),
                epoch.to_string(),
                "train".into(),
                format!("{:.6}", w.loss / n),
                format!("{:.6}", w.task_loss / n),
                format!("{:.6}", w.orth_reg / n),
                format!("{lr:.6e}"),
                format!("{:.6}", w.grad_norm / n),
                opt(budget),
                opt(total_rank),
            ],
            &BTreeMap::new(),
        )
    }

    /// Evaluate every dev split (and the selection split); track the best by the main metric
    /// of the first dev split (best-dev) or of the selection split (held-out). Returns the dev
    /// splits' metrics.
    fn evaluate_and_track<B: AutodiffBackend>(
        &self,
        model: &Model<B>,
        state: &mut TrainState,
        epoch: usize,
        optim: &TrainOptimizer<B>,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<BTreeMap<String, BTreeMap<String, f64>>> {
        let budget = optim.allocator().map(|a| a.budget());
        let total_rank = self.total_rank(model, optim);
        let pattern = optim.allocator().map(|a| a.rank_pattern());
        let pattern = pattern.as_ref();
        let results = self.evaluate_all(model)?;
        let orth = crate::eval::orth_term(
            &model.valid(),
            self.cfg.adalora.orth_form,
            &Default::default(),
        );
        for (split, (task_loss, metrics)) in &results {
            // Like the train rows: loss = task loss + γ·R (PEFT's eval loss), both reported.
            let loss = task_loss + self.cfg.adalora.orth_reg_weight * orth.unwrap_or(0.0);
            self.metrics.append(
                [
                    state.step.to_string(),
                    epoch.to_string(),
                    split.clone(),
                    format!("{loss:.6}"),
                    format!("{task_loss:.6}"),
                    orth.map(|r| format!("{r:.6}")).unwrap_or_default(),
                    String::new(),
                    String::new(),
                    opt(budget),
                    opt(total_rank),
                ],
                metrics,
            )?;
            bar.suspend(|| {
                let shown: Vec<String> =
                    metrics.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
                eprintln!(
                    "step {} {split}: loss={loss:.4} {}",
                    state.step,
                    shown.join(" ")
                );
            });
        }
        let main_name = self.prepared.task.metric.main_name();
        let first = &self.prepared.task.dev[0].name;
        let held_out = self.prepared.selection.is_some();
        let chooser = if held_out { SELECTION_SPLIT } else { first };
        let main = results[chooser]
            .1
            .get(main_name)
            .copied()
            .unwrap_or(f64::NAN);
        if state.best_metric.is_none_or(|b| b.is_nan() || main > b) {
            state.best_metric = Some(main);
            state.best_step = Some(state.step);
            state.best_metrics = results[first].1.clone();
            state.selection_metrics = match held_out {
                true => results[SELECTION_SPLIT].1.clone(),
                false => BTreeMap::new(),
            };
            self.save_model_dir(model, pattern, &self.dir.best_adapter())?;
        }
        Ok(results
            .into_iter()
            .filter(|(k, _)| !(held_out && k == SELECTION_SPLIT))
            .map(|(k, (_, m))| (k, m))
            .collect())
    }

    fn evaluate_all<B: AutodiffBackend>(&self, model: &Model<B>) -> anyhow::Result<SplitResults> {
        let inner = model.valid();
        let device = device_of(&inner);
        let mut out = BTreeMap::new();
        for (dataset, encoded) in self.prepared.eval_splits() {
            let r = evaluate_split::<B::InnerBackend, _>(
                &inner,
                &self.prepared.task,
                dataset,
                encoded,
                self.tokenizer.pad_id(),
                self.cfg.train.eval_batch_size,
                &device,
            )?;
            let mut metrics: BTreeMap<String, f64> = r.metrics.values.into_iter().collect();
            metrics.insert("task_loss".into(), r.loss);
            out.insert(dataset.name.clone(), (r.loss, metrics));
        }
        Ok(out)
    }

    /// The method and its settings, as the PEFT files record them.
    fn method_config(&self) -> anyhow::Result<MethodConfig> {
        self.cfg.method_config(self.total_steps)
    }

    /// The model as a loadable folder: a PEFT adapter (LoRA/AdaLoRA) or, for full fine-tuning
    /// and BitFit, an HF `*ForSequenceClassification` checkpoint of the model's family.
    /// `pattern` is the allocator's rank pattern (AdaLoRA): PEFT slices saved triplets by it.
    fn save_model_dir<B: AutodiffBackend>(
        &self,
        model: &Model<B>,
        pattern: Option<&RankPattern>,
        target: &Path,
    ) -> anyhow::Result<()> {
        let base = self.model_dir.display().to_string();
        let active = pattern.map(|p| active_pattern(model, p));
        let method = self.method_config()?;
        replace_dir(target, |tmp| match method.method.has_adapters() {
            true => save_peft_adapter(model, &method, active.as_ref(), Some(&base), tmp),
            false => crate::merge::write_hf_model(
                &model.clone().merge_and_unload(),
                &self.model_dir,
                &self.prepared.task,
                tmp,
            ),
        })
    }

    /// `predictions_<split>.csv`: the final model's logits on every dev split (dataset order),
    /// the reference for checking that a reloaded adapter predicts the same.
    fn write_predictions<B: AutodiffBackend>(&self, model: &Model<B>) -> anyhow::Result<()> {
        let inner = model.valid();
        let kind = &self.prepared.task.kind;
        for (dataset, encoded) in self.prepared.task.dev.iter().zip(&self.prepared.dev) {
            let (logits, _) = crate::eval::predict_logits(
                &inner,
                encoded,
                self.tokenizer.pad_id(),
                self.cfg.train.eval_batch_size,
                &device_of(&inner),
            )?;
            let path = self
                .dir
                .root
                .join(format!("predictions_{}.csv", dataset.name));
            crate::eval::write_predictions_csv(&path, &logits, kind)?;
        }
        Ok(())
    }

    fn save_checkpoint<B: AutodiffBackend>(
        &self,
        model: &Model<B>,
        optim: &TrainOptimizer<B>,
        state: &TrainState,
    ) -> anyhow::Result<()> {
        replace_dir(&self.dir.checkpoint(), |tmp| {
            save_trainable(model, &tmp.join("trainable.safetensors"))?;
            optim.save(&tmp.join("optimizer"))?;
            atomic_write_json(&tmp.join("state.json"), state)?;
            crate::io::write_manifest(tmp)
        })
    }

    fn write_rank_pattern_file<B: AutodiffBackend>(
        &self,
        model: &Model<B>,
        pattern: &RankPattern,
        step: usize,
        budget: usize,
    ) -> anyhow::Result<()> {
        let slots = model.slots();
        let svd_slots: Vec<_> = slots
            .iter()
            .zip(model.adapted_linears())
            .filter(|(_, l)| l.as_svd().is_some())
            .map(|(s, _)| s)
            .collect();
        let modules: Vec<serde_json::Value> = svd_slots
            .iter()
            .zip(&pattern.masks)
            .map(|(s, m)| {
                serde_json::json!({
                    "layer": s.layer,
                    "module": s.kind.name(),
                    "path": s.path,
                    "init_rank": m.len(),
                    "rank": m.iter().filter(|&&k| k).count(),
                    "mask": m,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "step": step,
            "budget": budget,
            "total_rank": pattern.total_rank(),
            "modules": modules,
        });
        atomic_write_json(&self.dir.rank_pattern(), &doc)
    }

    /// `rank_pattern.json` (current mask) plus a line in `rank_pattern_history.jsonl`.
    fn write_rank_pattern<B: AutodiffBackend>(
        &self,
        model: &Model<B>,
        pattern: &RankPattern,
        step: usize,
        budget: usize,
    ) -> anyhow::Result<()> {
        self.write_rank_pattern_file(model, pattern, step, budget)?;
        use std::io::Write;
        let path = self.dir.rank_history();
        let line = serde_json::json!({"step": step, "budget": budget, "ranks": pattern.ranks()});
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"))
            .with_context(|| format!("appending to {}", path.display()))
    }

    fn finish<B: AutodiffBackend>(
        &self,
        model: Model<B>,
        optim: TrainOptimizer<B>,
        mut state: TrainState,
    ) -> anyhow::Result<Option<Summary>> {
        let total_rank = self.total_rank(&model, &optim);
        let bar = indicatif::ProgressBar::hidden();
        // The epoch of the last optimizer step (the loop may have ended mid-epoch).
        let epoch = state.step.saturating_sub(1) / self.batches_per_epoch;
        let final_metrics = self.evaluate_and_track(&model, &mut state, epoch, &optim, &bar)?;
        if let Some(a) = optim.allocator() {
            self.write_rank_pattern(&model, &a.rank_pattern(), state.step, a.budget())?;
        }
        let pattern = optim.allocator().map(|a| a.rank_pattern());
        // No checkpoint here: a run killed before summary.json resumes from the last mid-run
        // checkpoint and redoes the final evaluation once, so metrics.csv logs it once.
        self.save_model_dir(&model, pattern.as_ref(), &self.dir.final_adapter())?;
        self.write_predictions(&model)?;
        let target_total_rank = optim.allocator().map(|a| a.schedule().target_budget);
        let summary = Summary {
            task: self.prepared.task.name.clone(),
            method: self.cfg.method.name().into(),
            model_dir: self.model_dir.display().to_string(),
            model_fingerprint: state.model_fingerprint.clone(),
            run_dir: self.dir.root.display().to_string(),
            total_steps: self.total_steps,
            epochs: self.total_steps.div_ceil(self.batches_per_epoch),
            lr: self.cfg.lr(),
            train_examples: self.prepared.train.len(),
            trainable_params: self.report.trainable_params,
            all_params: self.report.all_params,
            trainable_percent: self.report.trainable_percent(),
            main_metric: self.prepared.task.metric.main_name().into(),
            final_metrics,
            best_step: state.best_step,
            best_metrics: state.best_metrics.clone(),
            protocol: self.cfg.train.protocol.name().into(),
            selection_metrics: state.selection_metrics.clone(),
            baseline_metrics: self.baseline.clone(),
            final_total_rank: total_rank,
            target_total_rank,
            train_seconds: state.train_seconds,
            train_examples_per_second: state.examples_seen as f64 / state.train_seconds.max(1e-9),
            quantization: self.quant.clone(),
            provenance: Some(Provenance::current(crate::provenance::gpu_name(
                self.cfg.device,
            ))),
        };
        // Written last: its presence marks the run as finished.
        atomic_write_json(&self.dir.summary(), &summary)?;
        Ok(Some(summary))
    }
}

/// The triplets that act on the output now: the allocator's mask plus masked triplets whose λ
/// moved off zero since the last masking step (between masking steps, every ΔT, the optimizer
/// updates masked λ too, and an evaluation sees them). Slicing a saved adapter by this keeps
/// exactly the model that was evaluated; zero λ contribute nothing, so dropping them is exact.
fn active_pattern<B: AutodiffBackend>(model: &Model<B>, pattern: &RankPattern) -> RankPattern {
    let masks = model
        .svd_adapters()
        .iter()
        .zip(&pattern.masks)
        .map(|(adapter, mask)| {
            let lambda = adapter.lora_e.val().into_data().convert::<f32>();
            let lambda = lambda.as_slice::<f32>().unwrap_or(&[]);
            mask.iter()
                .enumerate()
                .map(|(i, &kept)| kept || lambda.get(i).is_some_and(|&v| v != 0.0))
                .collect()
        })
        .collect();
    RankPattern { masks }
}

fn progress_bar(show: bool, total: usize, position: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} ({eta}) {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_position(position as u64);
    bar
}
