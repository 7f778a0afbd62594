//! `sweep`, `report` and `plot`: studies made of many runs (logic in `adalora-study`).

use std::path::PathBuf;

use adalora_study::figures::{self, Kind};
use adalora_study::report::{self, Study};
use adalora_study::report_settings::ReportSettings;
use adalora_study::runs::MetricAt;
use adalora_study::slurm::SlurmOptions;
use adalora_study::sweep::ExecutorKind;
use adalora_study::{SweepDir, SweepOptions};
use clap::Args;

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Sweep file (see experiments/*.toml with a [sweep] table).
    file: PathBuf,
    /// Sweep folder (manifest, runs/, report, figures); default: sweeps/<name>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Runs in parallel (child processes).
    #[arg(short = 'j', long, default_value_t = 1)]
    jobs: usize,
    /// BLAS/OpenMP/rayon threads per run (default: cores / jobs).
    #[arg(long)]
    threads_per_job: Option<usize>,
    /// Also rerun the runs that failed.
    #[arg(long)]
    retry_failed: bool,
    /// Print the grid, step counts and an estimated time; run nothing.
    #[arg(long)]
    dry_run: bool,
    /// --dry-run's step times: a CSV of `adalora bench --csv` or compare.py's summary.csv
    /// (default: the newest results/bench/*/summary.csv of the runs' device kind: gpu-* for cuda).
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    bench_csv: Option<PathBuf>,
    /// Run only row I of the manifest (claim it, train or resume it, record the outcome).
    #[arg(long, value_name = "I")]
    run_index: Option<usize>,
    /// Show the manifest's runs and their state (with their Slurm job states, if submitted).
    #[arg(long, conflicts_with_all = ["dry_run", "run_index", "retry_failed"])]
    status: bool,
    /// local: child processes on this machine; slurm: one job array (see [slurm] below).
    #[arg(long, default_value = "local", value_parser = ExecutorKind::parse)]
    executor: ExecutorKind,
    /// Cancel the sweep's queued and running Slurm tasks (runs keep their checkpoints).
    #[arg(long, conflicts_with_all = ["dry_run", "run_index", "retry_failed", "status"])]
    cancel: bool,
    /// With --executor slurm: wait until the array has finished, then write the report.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    slurm: SlurmArgs,
}

/// Resources of each run for `--executor slurm`; each overrides the sweep file's `[slurm]`.
#[derive(Args, Debug)]
struct SlurmArgs {
    #[arg(long)]
    partition: Option<String>,
    #[arg(long)]
    account: Option<String>,
    /// Time limit per run (sbatch --time: 30, 2:00:00, 1-00:00:00).
    #[arg(long)]
    time: Option<String>,
    /// GPUs per run; the run trains on the GPU Slurm allocates (needs a cuda build).
    #[arg(long)]
    gpus_per_run: Option<u32>,
    /// CPUs per run (also its BLAS thread count).
    #[arg(long)]
    cpus_per_run: Option<u32>,
    /// Memory per run (sbatch --mem: 8G, 16000M).
    #[arg(long)]
    mem: Option<String>,
    /// At most this many runs at once (the array's %K throttle).
    #[arg(long)]
    max_parallel: Option<usize>,
    /// Seconds of warning before Slurm kills a task (SIGUSR1: checkpoint and exit; default 120).
    #[arg(long)]
    signal_grace: Option<u32>,
}

impl SlurmArgs {
    fn options(&self) -> SlurmOptions {
        SlurmOptions {
            partition: self.partition.clone(),
            account: self.account.clone(),
            time: self.time.clone(),
            gpus_per_run: self.gpus_per_run,
            cpus_per_run: self.cpus_per_run,
            mem: self.mem.clone(),
            max_parallel: self.max_parallel,
            signal_grace: self.signal_grace,
        }
    }
}

pub fn sweep(args: &SweepArgs) -> anyhow::Result<()> {
    adalora_study::sweep::run(&SweepOptions {
        file: args.file.clone(),
        out: args.out.clone(),
        jobs: args.jobs,
        threads_per_job: args.threads_per_job,
        retry_failed: args.retry_failed,
        dry_run: args.dry_run,
        bench_csv: args.bench_csv.clone(),
        run_index: args.run_index,
        status: args.status,
        executor: args.executor,
        slurm: args.slurm.options(),
        cancel: args.cancel,
        wait: args.wait,
    })
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Sweep folder (holding manifest.json).
    sweep: PathBuf,
    /// Also redraw the sweep's standard figures.
    #[arg(long)]
    figures: bool,
    /// Cells from each run's last dev evaluation instead of its best one.
    #[arg(long = "final")]
    final_metric: bool,
    /// markdown (report.md + report.csv) | latex (also report.tex, a booktabs table).
    #[arg(long, default_value = "markdown")]
    format: String,
    /// A TOML file whose [report] table (margins, comparisons, centre) replaces the one the
    /// manifest recorded — e.g. the sweep file after adding comparisons to a finished study.
    #[arg(long)]
    settings: Option<PathBuf>,
}

pub fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let sweep = SweepDir::new(&args.sweep);
    let at = if args.final_metric {
        MetricAt::Final
    } else {
        MetricAt::Best
    };
    let format = report::Format::parse(&args.format)?;
    let mut study = Study::read(&sweep)?.at(at);
    if let Some(path) = &args.settings {
        study = study.with_settings(ReportSettings::from_file(path)?)?;
    }
    let md = report::write_report(&sweep, &study, format)?;
    if args.figures {
        figures::sweep_figures(&study, &sweep.root.join("figures"))?;
    }
    println!("{md}");
    eprintln!(
        "wrote {0}/report.md and {0}/report.csv{1}",
        sweep.root.display(),
        if format == report::Format::Latex {
            format!(" and {}/report.tex", sweep.root.display())
        } else {
            String::new()
        }
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run folder(s) or one sweep folder. Several runs are overlaid (--kind curves).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// heatmap | budget | curves | metric-vs-budget | bars | all.
    #[arg(long, default_value = "all")]
    kind: String,
    /// Output folder (default: the run folder, or <sweep>/figures).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn plot(args: &PlotArgs) -> anyhow::Result<()> {
    let kind = Kind::parse(&args.kind)?;
    let first = &args.paths[0];
    let written = if SweepDir::new(first).exists() {
        if args.paths.len() > 1 {
            anyhow::bail!("give one sweep folder, or several run folders");
        }
        let study = Study::read(&SweepDir::new(first))?;
        let out = args.out.clone().unwrap_or_else(|| first.join("figures"));
        figures::sweep_figures_of(&study, kind, &out)?
    } else if args.paths.len() > 1 {
        if kind != Kind::Curves {
            anyhow::bail!("several run folders are overlaid with --kind curves only");
        }
        let out = args.out.clone().unwrap_or_else(|| PathBuf::from("."));
        let runs: Vec<(String, PathBuf)> = args
            .paths
            .iter()
            .map(|p| {
                (
                    p.file_name()
                        .map_or("run".into(), |n| n.to_string_lossy().into_owned()),
                    p.clone(),
                )
            })
            .collect();
        figures::curves(&runs, &out.join("curves.png"), "runs")?
    } else {
        let out = args.out.clone().unwrap_or_else(|| first.clone());
        figures::run_figures(first, kind, &out)?
    };
    for w in written {
        eprintln!("wrote {}", w.display());
    }
    Ok(())
}
