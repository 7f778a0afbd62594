//! `train`, `eval`, `merge` and `encode`.

use std::path::PathBuf;

use adalora_train::config::{DeviceKind, Setting};
use adalora_train::encode::{encode_file, EncodeOptions, Pooling};
use adalora_train::ops::{self, Source};
use adalora_train::{RunConfig, TrainOptions};
use anyhow::{bail, Context};
use clap::Args;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Task: default (Rotten Tomatoes), a GLUE task (sst-2, mrpc, cola, sts-b, rte, qnli, mnli,
    /// qqp, wnli), csv:PATH, tsv:PATH, jsonl:PATH, or custom (with a [custom] table).
    #[arg(long)]
    task: Option<String>,
    /// full | bitfit | lora | adalora.
    #[arg(long)]
    method: Option<String>,
    /// Local HF model folder (config.json, model.safetensors, tokenizer.json); default: the
    /// fetched all-MiniLM-L6-v2.
    #[arg(long)]
    model: Option<PathBuf>,
    /// TOML run configuration (see experiments/); flags and --set override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run folder.
    #[arg(long)]
    out: PathBuf,
    /// Any setting as section.key=value (e.g. --set adalora.beta1=0.9 --set train.warmup_ratio=0.1).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    max_steps: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    max_seq_len: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// LoRA rank.
    #[arg(long)]
    r: Option<usize>,
    /// LoRA with fixed per-module ranks from an AdaLoRA run's rank_pattern.json (no schedule;
    /// rank-0 modules stay unadapted).
    #[arg(long, value_name = "FILE")]
    rank_pattern: Option<PathBuf>,
    /// α of LoRA or AdaLoRA (whichever --method is).
    #[arg(long)]
    alpha: Option<f64>,
    #[arg(long)]
    init_r: Option<usize>,
    #[arg(long)]
    target_r: Option<usize>,
    #[arg(long)]
    target_total_rank: Option<usize>,
    /// Steps, or a fraction of total steps (e.g. 0.1).
    #[arg(long)]
    tinit: Option<String>,
    /// Steps, or a fraction of total steps (e.g. 0.4).
    #[arg(long)]
    tfinal: Option<String>,
    #[arg(long)]
    delta_t: Option<usize>,
    /// Orthogonality-regularizer coefficient γ.
    #[arg(long)]
    gamma: Option<f64>,
    /// Target modules: query,key,value,attention-output,intermediate,output,pooler | Wq,… |
    /// all-linear | regex:<re>.
    #[arg(long)]
    target_modules: Option<String>,
    /// Layer subset, e.g. 0,1 or 3-5.
    #[arg(long)]
    layers: Option<String>,
    /// QLoRA: store the frozen base weights as nf4 | fp4 | int8 (LoRA and AdaLoRA only).
    #[arg(long)]
    quantize: Option<String>,
    /// Values per absmax block of the quantized base (default 64); must divide every row.
    #[arg(long)]
    quant_block_size: Option<usize>,
    /// Quantize the absmax constants again to 8 bits (blocks of 256).
    #[arg(long)]
    double_quant: bool,
    /// The quantized base's matmul dtype: f32 (default) | bf16 (the QLoRA paper's; native on
    /// CUDA, emulated on CPU; refused where the backend has no bf16).
    #[arg(long)]
    compute_dtype: Option<String>,
    /// Evaluate every N steps (default: every epoch).
    #[arg(long)]
    eval_every: Option<usize>,
    #[arg(long)]
    glue_dir: Option<PathBuf>,
    /// cpu | cuda (needs the `cuda` feature).
    #[arg(long)]
    device: Option<String>,
    #[arg(long)]
    max_train_examples: Option<usize>,
    #[arg(long)]
    max_eval_examples: Option<usize>,
    /// Skip (and count) malformed data rows instead of failing.
    #[arg(long)]
    skip_bad_rows: bool,
    /// Continue the unfinished run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Replace a finished (or unfinished) run in --out.
    #[arg(long)]
    overwrite: bool,
    /// Stop after this many optimizer steps, leaving a checkpoint to --resume from.
    #[arg(long)]
    stop_after_steps: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl TrainArgs {
    /// Flags as settings, applied after the config file and before --set; `--alpha` goes to
    /// `alpha_key` when given. Typed flags become TOML values directly (no text round trip).
    fn overrides(&self, alpha_key: Option<&str>) -> anyhow::Result<Vec<Setting>> {
        let method = self
            .method
            .as_deref()
            .map(adalora_train::Method::parse)
            .transpose()?;
        let text = |s: &str| toml::Value::String(s.to_string());
        let path = |p: &PathBuf| toml::Value::String(p.display().to_string());
        let count = |v: usize| toml::Value::Integer(v as i64);
        let mut o = Vec::new();
        let mut push = |k: &str, v: Option<toml::Value>| {
            if let Some(v) = v {
                o.push(Setting::new(k, v));
            }
        };
        push("task", self.task.as_deref().map(text));
        push("method", method.map(|m| text(m.name())));
        push("model", self.model.as_ref().map(path));
        push("glue_dir", self.glue_dir.as_ref().map(path));
        push("device", self.device.as_deref().map(text));
        push("seed", self.seed.map(|v| toml::Value::Integer(v as i64)));
        push("quantize", self.quantize.as_deref().map(text));
        push("quant_block_size", self.quant_block_size.map(count));
        push("double_quant", self.double_quant.then_some(true.into()));
        push("compute_dtype", self.compute_dtype.as_deref().map(text));
        push("train.lr", self.lr.map(toml::Value::Float));
        push("train.epochs", self.epochs.map(count));
        push("train.max_steps", self.max_steps.map(count));
        push("train.batch_size", self.batch_size.map(count));
        push("train.max_seq_len", self.max_seq_len.map(count));
        push("train.eval_every", self.eval_every.map(count));
        push(
            "train.max_train_examples",
            self.max_train_examples.map(count),
        );
        push("train.max_eval_examples", self.max_eval_examples.map(count));
        push(
            "train.skip_bad_rows",
            self.skip_bad_rows.then_some(true.into()),
        );
        push("lora.r", self.r.map(count));
        push(
            "lora.rank_pattern_file",
            self.rank_pattern.as_ref().map(path),
        );
        if let Some(key) = alpha_key {
            push(key, self.alpha.map(toml::Value::Float));
        }
        push("adalora.init_r", self.init_r.map(count));
        push("adalora.target_r", self.target_r.map(count));
        push(
            "adalora.target_total_rank",
            self.target_total_rank.map(count),
        );
        push("adalora.delta_t", self.delta_t.map(count));
        push(
            "adalora.orth_reg_weight",
            self.gamma.map(toml::Value::Float),
        );
        push("target.modules", self.target_modules.as_deref().map(text));
        if let Some(layers) = &self.layers {
            let parsed = parse_layers(layers)?.into_iter().map(count).collect();
            push("target.layers", Some(toml::Value::Array(parsed)));
        }
        // A step count or a fraction of the run: the flag's text is read as TOML (30 or 0.2).
        for (key, flag, v) in [
            ("adalora.tinit", "--tinit", &self.tinit),
            ("adalora.tfinal", "--tfinal", &self.tfinal),
        ] {
            if let Some(v) = v {
                o.push(
                    Setting::parse(&format!("{key}={v}")).with_context(|| format!("{flag} {v}"))?,
                );
            }
        }
        for s in &self.set {
            o.push(Setting::parse(s).with_context(|| format!("--set {s}"))?);
        }
        Ok(o)
    }
}

fn parse_layers(s: &str) -> anyhow::Result<Vec<usize>> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || anyhow::anyhow!("--layers {s:?}: {part:?} is not a layer index or range a-b");
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (usize, usize) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            if a > b {
                return Err(bad());
            }
            v.extend(a..=b);
        } else {
            v.push(part.parse().map_err(|_| bad())?);
        }
    }
    Ok(v)
}

/// The run configuration the flags describe. `--alpha` is α of the method in effect, wherever
/// the method was chosen (`--method`, the `--config` file or `--set method=…`).
fn run_config(args: &TrainArgs) -> anyhow::Result<RunConfig> {
    let without_alpha = RunConfig::load_settings(args.config.as_deref(), &args.overrides(None)?)?;
    if args.alpha.is_none() {
        return Ok(without_alpha);
    }
    let alpha_key = match without_alpha.method {
        adalora_train::Method::Lora => "lora.alpha",
        _ => "adalora.alpha",
    };
    RunConfig::load_settings(args.config.as_deref(), &args.overrides(Some(alpha_key))?)
}

pub fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let config = if args.resume {
        if !args.overrides(Some("alpha"))?.is_empty() || args.config.is_some() {
            bail!("--resume continues the run with its saved config.toml; drop the other settings");
        }
        RunConfig::default()
    } else {
        run_config(args)?
    };
    let opts = TrainOptions {
        config,
        out: args.out.clone(),
        resume: args.resume,
        overwrite: args.overwrite,
        progress: !args.quiet,
        stop_after_steps: args.stop_after_steps,
    };
    let Some(summary) = adalora_train::train(&opts)? else {
        return Ok(());
    };
    println!("run: {}", summary.run_dir);
    println!(
        "task {} | method {} | {} steps | trainable {} of {} ({:.4}%)",
        summary.task,
        summary.method,
        summary.total_steps,
        summary.trainable_params,
        summary.all_params,
        summary.trainable_percent
    );
    for (split, metrics) in &summary.final_metrics {
        let shown: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
        println!("final {split}: {}", shown.join(" "));
    }
    if let Some(step) = summary.best_step {
        let shown: Vec<String> = summary
            .best_metrics
            .iter()
            .map(|(k, v)| format!("{k}={v:.4}"))
            .collect();
        println!("best (step {step}): {}", shown.join(" "));
    }
    if let (Some(r), Some(t)) = (summary.final_total_rank, summary.target_total_rank) {
        println!("total rank {r} (target {t})");
    }
    println!(
        "wall time {:.1}s, {:.1} examples/s",
        summary.train_seconds, summary.train_examples_per_second
    );
    Ok(())
}

/// Where the weights come from: a run folder, or an adapter / model folder plus a task.
#[derive(Args, Debug)]
pub struct SourceArgs {
    /// A run folder (uses its config and final adapter).
    #[arg(long, conflicts_with_all = ["adapter"])]
    run: Option<PathBuf>,
    /// Use the run's best checkpoint instead of the final one.
    #[arg(long, requires = "run")]
    best: bool,
    /// A PEFT adapter folder (this tool's or PEFT's) or an HF model folder, with --task
    /// (and --model for an adapter's base model).
    #[arg(long, requires = "task")]
    adapter: Option<PathBuf>,
    /// The base model folder: an adapter's base, or a run's when its recorded one has moved.
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long)]
    task: Option<String>,
    #[arg(long)]
    glue_dir: Option<PathBuf>,
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// cpu | cuda (needs the `cuda` feature); default: the run's device (cpu for an adapter).
    #[arg(long)]
    device: Option<DeviceKind>,
}

impl SourceArgs {
    fn resolve(&self) -> anyhow::Result<Source> {
        // Settings that replace the run's (or the defaults, for an adapter), applied before the
        // config is validated: a GPU run's `device = "cuda"` can be evaluated on a CPU build.
        let mut settings: Vec<Setting> = self
            .glue_dir
            .iter()
            .map(|g| Setting::new("glue_dir", g.display().to_string()))
            .collect();
        settings.extend(self.device.map(DeviceKind::setting));
        let mut src = match (&self.run, &self.adapter) {
            (Some(run), None) => {
                Source::from_run(run, self.best, self.model.as_deref(), &settings)?
            }
            (None, Some(adapter)) => {
                settings.push(Setting::new("task", self.task.clone().unwrap_or_default()));
                Source {
                    config: RunConfig::load_settings(None, &settings)?,
                    model_dir: adalora_train::resolve_model_dir(self.model.as_deref())?,
                    weights: adapter.clone(),
                    model_fingerprint: None,
                }
            }
            _ => bail!("give --run DIR, or --adapter DIR with --task (and optionally --model)"),
        };
        if let Some(n) = self.max_seq_len {
            src.config.train.max_seq_len = n;
        }
        Ok(src)
    }
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    source: SourceArgs,
}

pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let report = ops::evaluate(&args.source.resolve()?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Output folder for the merged HF model.
    #[arg(long)]
    out: PathBuf,
    /// Dev examples used to check merged == unmerged.
    #[arg(long, default_value_t = 64)]
    check_examples: usize,
}

pub fn merge(args: &MergeArgs) -> anyhow::Result<()> {
    let report = ops::merge(&args.source.resolve()?, &args.out, args.check_examples)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Predict these examples instead of the dev split: one per line, `text` or
    /// `text_a<TAB>text_b`.
    #[arg(long)]
    input: Option<PathBuf>,
    /// CSV to write (index,prediction,logit_0,…).
    #[arg(long)]
    output: PathBuf,
}

pub fn predict(args: &PredictArgs) -> anyhow::Result<()> {
    let rows = ops::predict(
        &args.source.resolve()?,
        args.input.as_deref(),
        Some(&args.output),
    )?;
    eprintln!(
        "{} predictions written to {}",
        rows.len(),
        args.output.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct EncodeArgs {
    #[arg(long)]
    model: Option<PathBuf>,
    /// One sentence per line.
    #[arg(long)]
    input: PathBuf,
    /// mean (sentence-transformers) or cls.
    #[arg(long, default_value = "mean")]
    pooling: String,
    /// L2-normalise the embeddings.
    #[arg(long)]
    normalize: bool,
    #[arg(long)]
    output: PathBuf,
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

pub fn encode(args: &EncodeArgs) -> anyhow::Result<()> {
    let model_dir = adalora_train::resolve_model_dir(args.model.as_deref())?;
    let mut opts = EncodeOptions::new(&args.input, &args.output);
    opts.model_dir = Some(model_dir);
    opts.pooling = args
        .pooling
        .parse::<Pooling>()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("--pooling")?;
    opts.normalize = args.normalize;
    opts.max_len = args.max_len;
    opts.batch_size = args.batch_size;
    let report = encode_file(&opts)?;
    eprintln!("{report:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    fn config_of(args: &[&str]) -> RunConfig {
        let cli = Cli::try_parse_from(std::iter::once("adalora").chain(args.iter().copied()))
            .expect("valid flags");
        run_config(&cli.train).expect("valid configuration")
    }

    #[test]
    fn alpha_goes_to_the_method_chosen_by_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lora.toml");
        std::fs::write(&file, "method = \"lora\"\n").unwrap();
        let file = file.to_str().unwrap();
        let cfg = config_of(&["--out", "r", "--config", file, "--alpha", "3"]);
        assert_eq!((cfg.lora.alpha, cfg.adalora.alpha), (3.0, 16.0));
        let cfg = config_of(&[
            "--out", "r", "--config", file, "--method", "adalora", "--alpha", "3",
        ]);
        assert_eq!((cfg.lora.alpha, cfg.adalora.alpha), (16.0, 3.0));
        let cfg = config_of(&["--out", "r", "--set", "method=lora", "--alpha", "5"]);
        assert_eq!(cfg.lora.alpha, 5.0);
        let cfg = config_of(&["--out", "r", "--alpha", "2"]);
        assert_eq!(cfg.adalora.alpha, 2.0, "the default method is AdaLoRA");
    }

    #[test]
    fn path_and_text_flags_reach_the_config_verbatim() {
        // Characters Rust's `{:?}` quotes differently from TOML (escape, unicode, quote,
        // backslash): a flag's text must arrive unchanged, not re-parsed.
        let odd = "dir \u{1b} \"q\" back\\slash é\u{7f}";
        let cfg = config_of(&["--out", "r", "--glue-dir", odd, "--task", odd]);
        assert_eq!(cfg.glue_dir.as_deref(), Some(std::path::Path::new(odd)));
        assert_eq!(cfg.task, odd);
    }

    #[test]
    fn a_set_value_of_the_wrong_type_names_the_flag_and_the_type() {
        let cli =
            Cli::try_parse_from(["adalora", "--out", "r", "--set", "train.lr=1e-3x"]).unwrap();
        let err = format!("{:#}", run_config(&cli.train).unwrap_err());
        assert!(
            err.contains("--set train.lr=1e-3x") && err.contains("f64"),
            "{err}"
        );
    }
}
