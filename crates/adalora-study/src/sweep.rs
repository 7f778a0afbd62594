//! `adalora sweep`: expand the file, sync the manifest, run what is left, then write the
//! report and the standard figures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adalora_train::config::DeviceKind;
use adalora_train::io::read_json;
use adalora_train::RunConfig;

use crate::estimate::{self, BenchStep, Workload};
use crate::runs::RunSummary;
use anyhow::Context;

use crate::executor::{self, Executor, LocalExecutor, Outcome, SweepJob};
use crate::manifest::{Claim, Status, SweepDir};
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
            Outcome::Interrupted(stop) => Err(stop.into()),
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
            Status::Running if r.claim.as_ref().is_some_and(Claim::is_abandoned) => "stopped",
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
        .flat_map(|r| r.settings.iter().map(|s| s.key.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    keys.retain(|k| {
        let first = runs[0].value(k);
        runs.iter().any(|r| r.value(k) != first)
    });
    keys
}

/// What a run's time depends on: its optimizer steps, the padded tokens of a training batch
/// and of one evaluation pass, and how many evaluations it makes.
#[derive(Clone, Copy, Debug)]
struct RunSize {
    steps: usize,
    train_tokens_per_batch: f64,
    eval_tokens: f64,
    evaluations: usize,
}

/// [`RunSize`] of a run, from its tokenized data (each distinct data setting is loaded and
/// tokenized once per dry run).
fn run_size(
    cfg: &RunConfig,
    cache: &mut BTreeMap<String, adalora_train::task::BatchTokens>,
) -> anyhow::Result<RunSize> {
    let t = &cfg.train;
    let key = format!(
        "{}|{}|{:?}|{:?}|{:?}|{}|{}|{:?}|{:?}|{}|{}",
        cfg.task,
        cfg.seed,
        cfg.glue_dir,
        cfg.model,
        t.max_train_examples,
        t.max_seq_len,
        t.batch_size,
        t.bucket_batches,
        t.protocol,
        t.selection_ratio,
        t.eval_batch_size
    );
    let tokens = match cache.get(&key) {
        Some(b) => *b,
        None => {
            let b = adalora_train::task::batch_tokens(cfg)?;
            cache.insert(key, b);
            b
        }
    };
    let steps = t.max_steps.unwrap_or(t.epochs * tokens.batches_per_epoch);
    // As the trainer: every `eval_every` steps (else at each epoch's end) before the last
    // step, and once at the end.
    let periodic = match t.eval_every {
        Some(n) => steps.saturating_sub(1) / n.max(1),
        None => steps.saturating_sub(1) / tokens.batches_per_epoch.max(1),
    };
    Ok(RunSize {
        steps,
        train_tokens_per_batch: tokens.train_tokens_per_batch,
        eval_tokens: tokens.eval_tokens,
        evaluations: periodic + 1,
    })
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

/// Seconds each finished run of this sweep took from its first step to its last (training,
/// evaluations and checkpoints: `train_seconds` of its summary), by run hash.
fn measured_seconds(sweep: &SweepDir) -> BTreeMap<String, f64> {
    let Ok(m) = sweep.read() else {
        return BTreeMap::new();
    };
    m.rows
        .iter()
        .filter(|r| r.status == Status::Done)
        .filter_map(|r| {
            let s = read_json::<RunSummary>(&sweep.run_path(r).join("summary.json")).ok()?;
            (s.train_seconds.is_finite() && s.train_seconds > 0.0)
                .then(|| (r.hash.clone(), s.train_seconds))
        })
        .collect()
}

/// The median of measured / estimated seconds over the finished runs: how far the benchmark's
/// step times are from what this sweep's runs see (threads per job, concurrent jobs, other
/// load on the machine, evaluation and checkpoints, padding), applied to the runs left.
fn calibration(pairs: &[(f64, f64)]) -> Option<f64> {
    let mut ratios: Vec<f64> = pairs
        .iter()
        .filter(|(_, est)| *est > 0.0)
        .map(|(measured, est)| measured / est)
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    Some(if n % 2 == 1 {
        ratios[n / 2]
    } else {
        (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0
    })
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

/// The plan's `bN` tag of a benchmark row, numbering rows in order of first use.
fn bench_tag<'a>(used: &mut Vec<&'a BenchStep>, row: &'a BenchStep) -> String {
    let k = used
        .iter()
        .position(|u| std::ptr::eq(*u, row))
        .unwrap_or_else(|| {
            used.push(row);
            used.len() - 1
        });
    format!("b{}", k + 1)
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
    let measured = measured_seconds(sweep);
    let mut measured_vs_estimated = Vec::new();
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
    let mut evaluation_left_out = false;
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
        let size = run_size(cfg, &mut sizes).map_err(|e| {
            problems.push(format!(
                "run {i} ({}): cannot load its data: {e:#}",
                r.label
            ));
        });
        let method = cfg.method.name();
        let (steps, seconds, from) = match size {
            Ok(size) => {
                let train = estimate::estimate_step(
                    steps_of_bench,
                    Workload::Train,
                    method,
                    size.train_tokens_per_batch,
                    scale,
                );
                let eval = estimate::estimate_step(
                    steps_of_bench,
                    Workload::Eval,
                    method,
                    size.eval_tokens,
                    scale,
                );
                let (seconds, from) = match train {
                    Some(e) => {
                        let mut from = bench_tag(&mut used, e.from);
                        let mut seconds = size.steps as f64 * e.seconds_per_step;
                        match eval {
                            Some(v) => {
                                seconds += size.evaluations as f64 * v.seconds_per_step;
                                from = format!("{from},{}", bench_tag(&mut used, v.from));
                            }
                            None => evaluation_left_out = true,
                        }
                        if let Some(m) = measured.get(&r.hash) {
                            measured_vs_estimated.push((*m, seconds));
                        }
                        (seconds, format!("[{from}]"))
                    }
                    None => {
                        used_throughput = true;
                        let examples = size.steps * cfg.train.batch_size;
                        (examples as f64 / rate, "[r]".to_string())
                    }
                };
                if state != "done" {
                    total += seconds;
                }
                (size.steps.to_string(), format!("{seconds:.0}"), from)
            }
            Err(()) => ("?".into(), "?".into(), "?".into()),
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
        let what = match row.workload {
            Workload::Train => "train_step",
            Workload::Eval => "eval (unmerged)",
        };
        println!(
            "  [b{}] {}: {what} {} {}x{}, median {:.2} s a batch, scaled to each run's padded \
             tokens per batch (per evaluation pass) and model size",
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
        "estimated time of the runs left: {:.1} min with -j {} (training{}; the benchmark's \
         thread count and load may differ from this sweep's)",
        total / jobs / 60.0,
        opts.jobs.max(1),
        if evaluation_left_out {
            ", and evaluations where the benchmark has an unmerged eval row of the method"
        } else {
            " and evaluations"
        },
    );
    if let Some(k) = calibration(&measured_vs_estimated) {
        println!(
            "calibrated by this sweep's {} finished run(s) (median measured/estimated = {k:.2}, \
             which includes their evaluations, checkpoints, threads and machine load): \
             {:.1} min ({:.1} h) with -j {}",
            measured_vs_estimated.len(),
            total * k / jobs / 60.0,
            total * k / jobs / 3600.0,
            opts.jobs.max(1),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::calibration;

    #[test]
    fn calibration_is_the_median_ratio_of_measured_to_estimated() {
        assert_eq!(calibration(&[]), None);
        assert_eq!(calibration(&[(30.0, 10.0)]), Some(3.0));
        // Ratios 2, 4, 1 → median 2; an estimate of 0 is left out.
        assert_eq!(
            calibration(&[(20.0, 10.0), (40.0, 10.0), (5.0, 5.0), (9.0, 0.0)]),
            Some(2.0)
        );
        assert_eq!(calibration(&[(20.0, 10.0), (40.0, 10.0)]), Some(3.0));
    }
}
