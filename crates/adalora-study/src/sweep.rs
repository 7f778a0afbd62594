//! `adalora sweep`: expand the file, sync the manifest, run what is left, then write the
//! report and the standard figures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adalora_train::config::DeviceKind;
use adalora_train::io::read_json;
use adalora_train::RunConfig;

use crate::estimate::{self, BenchStep};
use crate::runs::RunSummary;
use anyhow::Context;

use crate::executor::{self, Executor, LocalExecutor, Outcome, SweepJob};
use crate::manifest::{Status, SweepDir};
use crate::slurm::{SlurmExecutor, SlurmOptions};
use crate::spec::{PlannedRun, SweepSpec};

/// Training throughput of one process with one BLAS thread on the 2-core development machine
/// (README: MiniLM, batch 16, max length 64): `--dry-run`'s last resort, used only when there is
/// neither a benchmark row of the run's method nor a finished run of the sweep to measure.
pub const FALLBACK_EXAMPLES_PER_SECOND: f64 = 14.0;

#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub file: PathBuf,
    /// Sweep folder; default `sweeps/<name>`.
    pub out: Option<PathBuf>,
    pub jobs: usize,
    pub threads_per_job: Option<usize>,
    pub retry_failed: bool,
    pub dry_run: bool,
    /// `--dry-run`'s step times: a CSV of `adalora bench` (default: the newest
    /// `results/bench/*/summary.csv` taken on the runs' kind of device: `gpu-*` for CUDA runs).
    pub bench_csv: Option<PathBuf>,
    /// Run only this row (the unit of work of every executor).
    pub run_index: Option<usize>,
    /// Print the manifest's state and exit.
    pub status: bool,
    /// Where the runs go: child processes here (default) or a Slurm job array.
    pub executor: ExecutorKind,
    /// `--executor slurm` resources from the command line (over the file's `[slurm]`).
    pub slurm: SlurmOptions,
    /// Cancel the sweep's Slurm arrays and exit.
    pub cancel: bool,
    /// With `--executor slurm`: wait for the array, then write the report.
    pub wait: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecutorKind {
    #[default]
    Local,
    Slurm,
}

impl ExecutorKind {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "local" => Ok(ExecutorKind::Local),
            "slurm" => Ok(ExecutorKind::Slurm),
            other => anyhow::bail!("--executor {other:?}: expected local or slurm"),
        }
    }
}

pub fn default_out(spec: &SweepSpec) -> PathBuf {
    Path::new("sweeps").join(&spec.name)
}

pub fn run(opts: &SweepOptions) -> anyhow::Result<()> {
    let spec = SweepSpec::load(&opts.file)?;
    let runs = spec.expand()?;
    let sweep = SweepDir::new(opts.out.clone().unwrap_or_else(|| default_out(&spec)));
    let job = SweepJob {
        sweep_file: opts.file.clone(),
        sweep: sweep.clone(),
        program: executor::current_program()?,
    };
    let slurm = SlurmExecutor {
        name: spec.name.clone(),
        options: opts.slurm.clone().or(&spec.slurm),
        dry_run: opts.dry_run,
        wait: opts.wait,
    };
    if opts.dry_run {
        return match opts.executor {
            ExecutorKind::Local => print_plan(&spec, &runs, &sweep, opts),
            ExecutorKind::Slurm => slurm.execute(&job, &planned_rows(&sweep, &runs, opts)?),
        };
    }
    let file = opts.file.display().to_string();
    if opts.status {
        print_status(&sweep)?;
        return Ok(());
    }
    if opts.cancel {
        return crate::slurm::cancel(&sweep);
    }
    sweep.sync(&spec.name, &file, &spec.report, &runs)?;
    if let Some(index) = opts.run_index {
        return match executor::run_index(&sweep, &runs, index)? {
            Outcome::Failed { error } => anyhow::bail!("run #{index} failed: {error}"),
            _ => Ok(()),
        };
    }
    let todo = match opts.executor {
        ExecutorKind::Local => executor::rows_to_run(&sweep.read()?, opts.retry_failed),
        ExecutorKind::Slurm => crate::slurm::rows_to_submit(
            &sweep.read()?,
            opts.retry_failed,
            &crate::slurm::live_tasks()?,
        ),
    };
    let m = sweep.read()?;
    eprintln!(
        "sweep {}: {} runs ({} done, {} failed{}), {} to run now in {}",
        spec.name,
        m.rows.len(),
        m.count(Status::Done),
        m.count(Status::Failed),
        if opts.retry_failed {
            ", retrying them"
        } else {
            ""
        },
        todo.len(),
        sweep.root.display()
    );
    if opts.executor == ExecutorKind::Slurm {
        slurm.execute(&job, &todo)?;
        if !opts.wait {
            return Ok(());
        }
    } else {
        let local = LocalExecutor::new(opts.jobs, opts.threads_per_job);
        eprintln!(
            "local executor: {} job(s) × {} thread(s)",
            local.jobs, local.threads_per_job
        );
        local.execute(&job, &todo)?;
    }
    let m = sweep.read()?;
    crate::report::write_all(&sweep).context("writing the report and figures")?;
    print_status(&sweep)?;
    let failed = m.count(Status::Failed);
    if failed > 0 {
        anyhow::bail!(
            "{failed} run(s) failed (errors in {}); rerun with --retry-failed",
            sweep.manifest_path().display()
        );
    }
    Ok(())
}

/// The manifest's rows a `--dry-run` would submit, without writing the manifest: the rows left
/// to run, then the runs the sweep file adds (they will be appended in order).
fn planned_rows(
    sweep: &SweepDir,
    runs: &[PlannedRun],
    opts: &SweepOptions,
) -> anyhow::Result<Vec<usize>> {
    if !sweep.exists() {
        return Ok((0..runs.len()).collect());
    }
    let m = sweep.read()?;
    let known: std::collections::BTreeSet<&str> = m.rows.iter().map(|r| r.hash.as_str()).collect();
    let added = runs
        .iter()
        .filter(|r| !known.contains(r.hash.as_str()))
        .count();
    let mut rows = executor::rows_to_run(&m, opts.retry_failed);
    rows.extend(m.rows.len()..m.rows.len() + added);
    Ok(rows)
}

fn print_status(sweep: &SweepDir) -> anyhow::Result<()> {
    let m = sweep.read()?;
    // Rows that went to Slurm also show their array task and its state (squeue/sacct).
    let slurm = if m
        .rows
        .iter()
        .any(|r| r.executor.contains_key(crate::slurm::JOB_KEY))
    {
        crate::slurm::row_states(&m)?
    } else {
        BTreeMap::new()
    };
    println!(
        "{:>4}  {:<8} {:>8} {:>4}  {:<40} {:<22} error",
        "#", "status", "wall s", "try", "run", "slurm task"
    );
    for r in &m.rows {
        let status = match r.status {
            Status::Running if r.claim.as_ref().is_some_and(|c| c.is_dead_here()) => "stopped",
            s => status_name(s),
        };
        println!(
            "{:>4}  {:<8} {:>8.1} {:>4}  {:<40} {:<22} {}",
            r.index,
            status,
            r.wall_seconds,
            r.attempts,
            r.run_dir,
            slurm.get(&r.index).map_or("", String::as_str),
            r.error
                .as_deref()
                .and_then(|e| e.lines().next())
                .unwrap_or("")
        );
    }
    println!(
        "{} done, {} failed, {} running, {} pending",
        m.count(Status::Done),
        m.count(Status::Failed),
        m.count(Status::Running),
        m.count(Status::Pending)
    );
    Ok(())
}

pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::Running => "running",
        Status::Done => "done",
        Status::Failed => "failed",
    }
}

/// Setting keys whose value is not the same in every run.
fn varying_settings(runs: &[PlannedRun]) -> Vec<String> {
    let mut keys: Vec<String> = runs
        .iter()
        .flat_map(|r| r.settings.iter().map(|(k, _)| k.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    keys.retain(|k| {
        let first = runs[0].value(k);
        runs.iter().any(|r| r.value(k) != first)
    });
    keys
}

/// Optimizer steps of a run, from its data size (the task is loaded, not tokenized).
fn steps_of(cfg: &RunConfig, sizes: &mut BTreeMap<String, usize>) -> anyhow::Result<usize> {
    let key = format!("{}|{}|{:?}", cfg.task, cfg.seed, cfg.glue_dir);
    let n = match sizes.get(&key) {
        Some(n) => *n,
        None => {
            let n = adalora_train::task::load_task(cfg)?.train.len();
            sizes.insert(key, n);
            n
        }
    };
    let n = cfg.train.max_train_examples.map_or(n, |m| m.min(n));
    // Under held-out selection a `selection_ratio` part of the subset leaves training (the
    // stratified split rounds per class; this estimate rounds once).
    let n = match cfg.train.protocol {
        adalora_train::Protocol::HeldOut => {
            n - ((n as f64 * cfg.train.selection_ratio).round() as usize).min(n)
        }
        adalora_train::Protocol::BestDev => n,
    };
    Ok(cfg
        .train
        .max_steps
        .unwrap_or(cfg.train.epochs * n.div_ceil(cfg.train.batch_size)))
}

/// Median examples/s of this sweep's finished runs, if any.
fn measured_throughput(sweep: &SweepDir) -> Option<f64> {
    let m = sweep.read().ok()?;
    let mut v: Vec<f64> = m
        .rows
        .iter()
        .filter(|r| r.status == Status::Done)
        .filter_map(|r| read_json::<RunSummary>(&sweep.run_path(r).join("summary.json")).ok())
        .map(|s| s.train_examples_per_second)
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// The benchmark `--dry-run` estimates from: the file given, else the newest committed one
/// taken on the runs' kind of device.
fn bench_steps(
    opts: &SweepOptions,
    runs: &[PlannedRun],
) -> anyhow::Result<Option<(PathBuf, Vec<BenchStep>)>> {
    let gpu = runs.iter().any(|r| r.config.device == DeviceKind::Cuda);
    let Some(path) = opts
        .bench_csv
        .clone()
        .or_else(|| estimate::newest_bench_summary(Path::new("."), gpu))
    else {
        return Ok(None);
    };
    let steps = estimate::read_bench_steps(&path)?;
    Ok(Some((path, steps)))
}

/// Where a run's estimate came from, shown in the plan's `from` column.
enum Basis<'a> {
    /// A benchmark row, scaled.
    Bench(&'a BenchStep),
    /// Examples per second when no benchmark row fits: the sweep's own runs or the fixed guess.
    Throughput,
}

fn print_plan(
    spec: &SweepSpec,
    runs: &[PlannedRun],
    sweep: &SweepDir,
    opts: &SweepOptions,
) -> anyhow::Result<()> {
    let bench = bench_steps(opts, runs)?;
    let steps_of_bench = bench.as_ref().map_or(&[][..], |(_, s)| s.as_slice());
    let (rate, rate_source) = match measured_throughput(sweep) {
        Some(r) => (r, "median of this sweep's finished runs".to_string()),
        None => (
            FALLBACK_EXAMPLES_PER_SECOND,
            "a fixed guess (README: 1 thread, MiniLM, batch 16 × 64), not a measurement".into(),
        ),
    };
    let done: BTreeMap<String, Status> = sweep
        .read()
        .map(|m| m.rows.into_iter().map(|r| (r.hash, r.status)).collect())
        .unwrap_or_default();
    let mut sizes = BTreeMap::new();
    println!(
        "sweep {} ({}): {} runs -> {}",
        spec.name,
        spec.path.display(),
        runs.len(),
        sweep.root.display()
    );
    let varying = varying_settings(runs);
    println!(
        "{:>4}  {:<36} {:>7} {:>9} {:<6}  {:<8} settings that vary",
        "#", "run", "steps", "est. s", "from", "state"
    );
    let mut total = 0.0;
    let mut problems = Vec::new();
    let mut used: Vec<&BenchStep> = Vec::new();
    let mut used_throughput = false;
    for (i, r) in runs.iter().enumerate() {
        let state = done.get(&r.hash).copied().map(status_name).unwrap_or("new");
        let cfg = &r.config;
        let scale = estimate::model_scale(cfg).unwrap_or_else(|e| {
            problems.push(format!(
                "run {i} ({}): {e:#}; model size not scaled",
                r.label
            ));
            1.0
        });
        let basis = match estimate::estimate_step(
            steps_of_bench,
            cfg.method.name(),
            cfg.train.batch_size,
            cfg.train.max_seq_len,
            scale,
        ) {
            Some(e) => (e.seconds_per_step, Basis::Bench(e.from)),
            None => (cfg.train.batch_size as f64 / rate, Basis::Throughput),
        };
        let from = match basis.1 {
            Basis::Bench(row) => {
                let k = used
                    .iter()
                    .position(|u| std::ptr::eq(*u, row))
                    .unwrap_or_else(|| {
                        used.push(row);
                        used.len() - 1
                    });
                format!("[b{}]", k + 1)
            }
            Basis::Throughput => {
                used_throughput = true;
                "[r]".into()
            }
        };
        let (steps, seconds) = match steps_of(cfg, &mut sizes) {
            Ok(steps) => {
                let seconds = steps as f64 * basis.0;
                if state != "done" {
                    total += seconds;
                }
                (steps.to_string(), format!("{seconds:.0}"))
            }
            Err(e) => {
                problems.push(format!(
                    "run {i} ({}): cannot load its data: {e:#}",
                    r.label
                ));
                ("?".into(), "?".into())
            }
        };
        let shown: Vec<String> = r
            .overrides()
            .into_iter()
            .filter(|o| varying.iter().any(|k| o.starts_with(&format!("{k}="))))
            .collect();
        println!(
            "{i:>4}  {:<36} {steps:>7} {seconds:>9} {from:<6}  {state:<8} {}",
            r.label,
            shown.join(" ")
        );
    }
    for p in &problems {
        println!("{p}");
    }
    match &bench {
        Some((path, _)) => println!("step times from the benchmark {}:", path.display()),
        None => println!(
            "no benchmark: no --bench-csv given and no results/bench/*/summary.csv here \
             (`adalora bench --csv FILE` measures one)"
        ),
    }
    for (k, row) in used.iter().enumerate() {
        println!(
            "  [b{}] {}: train_step {} {}x{}, median {:.2} s/step, scaled to each run's \
             batch × max_seq_len and model size",
            k + 1,
            row.source,
            row.method,
            row.batch,
            row.seq,
            row.seconds
        );
    }
    if used_throughput {
        println!("  [r] no benchmark row of the run's method: {rate:.1} examples/s, {rate_source}");
    }
    let jobs = opts.jobs.max(1) as f64;
    println!(
        "estimated time of the runs left: {:.1} min with -j {} (the benchmark's thread count \
         and load may differ from this sweep's; evaluation not included)",
        total / jobs / 60.0,
        opts.jobs.max(1),
    );
    Ok(())
}
