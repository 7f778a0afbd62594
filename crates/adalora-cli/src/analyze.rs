//! `analyze`: the weight-space analyses of one adapter (or two, `--against`), or of every run
//! of a sweep (logic in `adalora-analysis`).

use std::path::{Path, PathBuf};

use adalora_analysis::sweep::analyze_sweep;
use adalora_analysis::{analyze_source, write_analysis, Analyzed};
use adalora_study::manifest::MANIFEST_FILE;
use adalora_train::config::DeviceKind;
use adalora_train::ops::Source;
use adalora_train::RunConfig;
use anyhow::{bail, Context};
use clap::Args;

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// A sweep folder (with manifest.json): analyse every finished run and the stability
    /// across seeds. Otherwise a run folder, as --run.
    #[arg(conflicts_with_all = ["run", "adapter"])]
    path: Option<PathBuf>,
    /// A run folder (its final adapter).
    #[arg(long, conflicts_with = "adapter")]
    run: Option<PathBuf>,
    /// A PEFT adapter folder (this tool's or PEFT's); needs --out.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The base model folder: an adapter's base, or a run's when its recorded one has moved
    /// (default: the fetched all-MiniLM-L6-v2 for an adapter).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A second run to compare with (subspace similarity φ): same model and adapted matrices.
    #[arg(long, conflicts_with = "against_adapter")]
    against: Option<PathBuf>,
    /// A second PEFT adapter folder to compare with (over --model's base).
    #[arg(long)]
    against_adapter: Option<PathBuf>,
    /// The matrix of the φ grid figure, as layer.module (e.g. 3.value); default: the first
    /// query matrix.
    #[arg(long, value_name = "LAYER.MODULE")]
    matrix: Option<String>,
    /// Output folder (default: RUN/analysis; SWEEP/analysis for a sweep).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the random baselines (random subspaces of φ and of the amplification).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: &AnalyzeArgs) -> anyhow::Result<()> {
    if let Some(p) = args
        .path
        .as_ref()
        .filter(|p| p.join(MANIFEST_FILE).is_file())
    {
        return sweep(args, p);
    }
    match (args.path.as_ref().or(args.run.as_ref()), &args.adapter) {
        (Some(run), None) => {
            let out = args.out.clone().unwrap_or_else(|| run.join("analysis"));
            let src = run_source(run, args.model.as_deref())?;
            one(args, &src, &out, &run.display().to_string())
        }
        (None, Some(adapter)) => {
            let Some(out) = &args.out else {
                bail!("--adapter needs --out DIR (nothing is written into an adapter folder)");
            };
            let src = adapter_source(adapter, args.model.as_deref())?;
            one(args, &src, out, &adapter.display().to_string())
        }
        _ => bail!("give a sweep folder, a run folder (or --run DIR), or --adapter DIR --out DIR"),
    }
}

fn sweep(args: &AnalyzeArgs, path: &Path) -> anyhow::Result<()> {
    let used = [
        args.against.is_some(),
        args.against_adapter.is_some(),
        args.matrix.is_some(),
    ];
    if used.contains(&true) || args.out.is_some() || args.model.is_some() {
        bail!("a sweep is analysed into SWEEP/analysis with --seed only (no --against, --matrix, --out or --model)");
    }
    let done = analyze_sweep(path, args.seed)?;
    for f in &done.files {
        println!("{}", f.display());
    }
    eprintln!(
        "{} runs analysed into {}; {} stability rows",
        done.runs.len(),
        path.join("analysis").display(),
        done.rows.len()
    );
    Ok(())
}

/// One adapter, and with --against / --against-adapter its similarity to a second one.
fn one(args: &AnalyzeArgs, src: &Source, out: &Path, title: &str) -> anyhow::Result<()> {
    let analyzed = analyze(src)?;
    let against = match (&args.against, &args.against_adapter) {
        (Some(r), _) => Some(analyze(&run_source(r, None)?)?),
        (None, Some(a)) => Some(analyze(&adapter_source(a, args.model.as_deref())?)?),
        (None, None) => None,
    };
    let files = write_analysis(
        &analyzed,
        against.as_deref(),
        args.matrix.as_deref(),
        args.seed,
        title,
        out,
    )?;
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

fn analyze(src: &Source) -> anyhow::Result<Vec<Analyzed>> {
    analyze_source(src).with_context(|| format!("analysing {}", src.weights.display()))
}

/// A run's final adapter; the analysis is host-side, so a GPU run is read on the CPU.
fn run_source(run: &Path, model: Option<&Path>) -> anyhow::Result<Source> {
    if !run.is_dir() {
        bail!("{}: no such run folder", run.display());
    }
    Source::from_run(run, false, model, &[DeviceKind::Cpu.setting()])
}

/// A PEFT adapter folder over `model` (default: the fetched MiniLM).
fn adapter_source(adapter: &Path, model: Option<&Path>) -> anyhow::Result<Source> {
    if !adapter.is_dir() {
        bail!("{}: no such adapter folder", adapter.display());
    }
    Ok(Source {
        config: RunConfig::load(None, &[])?,
        model_dir: adalora_train::resolve_model_dir(model)?,
        weights: adapter.to_path_buf(),
        model_fingerprint: None,
    })
}
