//! Running the rows of a manifest.
//!
//! [`run_index`] is the unit of work every executor uses: claim one row, train it (resuming
//! from its checkpoint when an earlier attempt left one) and record the outcome. The local
//! executor runs it in child processes (`adalora sweep FILE --run-index I`) with a thread
//! budget each; a cluster executor submits the same command as array tasks.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use adalora_train::io::RunDir;
use adalora_train::provenance::Provenance;
use adalora_train::signals::{self, Interrupted, StopRequested};
use adalora_train::TrainOptions;
use anyhow::{bail, Context};

use crate::manifest::{unix_now, Claim, Manifest, Row, Status, SweepDir, HEARTBEAT_EVERY};
use crate::spec::PlannedRun;

/// Environment variables that size the BLAS / thread pools of a child process.
pub const THREAD_VARS: [&str; 4] = [
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "RAYON_NUM_THREADS",
];

/// The executor note of a row's last stop on a signal (`SIGUSR1 after step 40 of 125`).
pub const INTERRUPTED_KEY: &str = "interrupted";

/// What happened to a claimed row.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Done {
        wall_seconds: f64,
    },
    Failed {
        error: String,
    },
    /// Finished earlier; nothing was run.
    AlreadyDone,
    /// Stopped on a signal with its checkpoint saved: pending again, resumed by the next run.
    Interrupted(Interrupted),
}

/// Which rows an executor should start.
pub fn rows_to_run(m: &Manifest, retry_failed: bool) -> Vec<usize> {
    m.rows
        .iter()
        .filter(|r| match r.status {
            Status::Pending => true,
            // A row whose process died (kill -9, OOM) continues from its checkpoint.
            Status::Running => r.claim.as_ref().is_none_or(Claim::is_abandoned),
            Status::Failed => retry_failed,
            Status::Done => false,
        })
        .map(|r| r.index)
        .collect()
}

/// Claim row `index`, run it and record the outcome. `runs` is the sweep file's expansion;
/// the row's hash must match it (the manifest was synced against the same file).
pub fn run_index(sweep: &SweepDir, runs: &[PlannedRun], index: usize) -> anyhow::Result<Outcome> {
    let row = claim(sweep, index)?;
    let Some(row) = row else {
        return Ok(Outcome::AlreadyDone);
    };
    let planned = runs
        .iter()
        .find(|r| r.hash == row.hash)
        .with_context(|| format!("run #{index} ({}) is not in the sweep file", row.label))?;
    let started = Instant::now();
    let result = {
        let _beating = Heartbeat::start(sweep, index);
        train_row(sweep, &row, planned)
    };
    let wall = started.elapsed().as_secs_f64();
    let outcome = match result {
        Ok(()) => Outcome::Done { wall_seconds: wall },
        Err(e) => match e.chain().find_map(|c| c.downcast_ref::<Interrupted>()) {
            Some(stop) => Outcome::Interrupted(stop.clone()),
            None => Outcome::Failed {
                error: format!("{e:#}"),
            },
        },
    };
    record(sweep, index, &outcome, wall, std::process::id())?;
    Ok(outcome)
}

/// Refreshes this process's claim on a row every [`HEARTBEAT_EVERY`] while it lives, so other
/// nodes can tell a working claim from an abandoned one.
struct Heartbeat {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(sweep: &SweepDir, index: usize) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let sweep = sweep.clone();
        let pid = std::process::id();
        let thread = std::thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT_EVERY) {
                let beat = sweep.update(|m| {
                    if let Some(c) = m.rows[index].claim.as_mut().filter(|c| c.is_by(pid)) {
                        c.heartbeat = Some(unix_now());
                    }
                    Ok(())
                });
                if let Err(e) = beat {
                    eprintln!("run #{index}: could not refresh its claim: {e:#}");
                }
            }
        });
        Heartbeat {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Mark the row running under this process. `None` if it is already done.
fn claim(sweep: &SweepDir, index: usize) -> anyhow::Result<Option<Row>> {
    sweep.update(|m| {
        let n = m.rows.len();
        let row = m
            .rows
            .get_mut(index)
            .with_context(|| format!("--run-index {index}: the sweep has {n} runs (0..{n})"))?;
        match (&row.status, &row.claim) {
            (Status::Done, _) => return Ok(None),
            // A requeued Slurm task may find its row claimed by its own earlier incarnation.
            (Status::Running, Some(c))
                if !c.is_abandoned()
                    && !c.is_by(std::process::id())
                    && !crate::slurm::is_own_task(row, |k| std::env::var(k).ok()) =>
            {
                bail!(
                    "run #{index} ({}) is already running (host {}, pid {})",
                    row.label,
                    c.host,
                    c.pid
                )
            }
            _ => {}
        }
        row.status = Status::Running;
        row.claim = Some(Claim::mine());
        row.attempts += 1;
        row.error = None;
        Ok(Some(row.clone()))
    })
}

fn train_row(sweep: &SweepDir, row: &Row, planned: &PlannedRun) -> anyhow::Result<()> {
    let out = sweep.run_path(row);
    let dir = RunDir::new(&out);
    if dir.summary().exists() {
        // Finished, but the process died before recording it.
        return Ok(());
    }
    let resume = dir.checkpoint().join("state.json").exists();
    if resume {
        eprintln!(
            "run #{}: resuming {} from its checkpoint",
            row.index,
            out.display()
        );
    }
    let mut config = planned.config.clone();
    config.device = crate::slurm::task_device(config.device, |k| std::env::var(k).ok())?;
    let opts = TrainOptions {
        config,
        out: out.clone(),
        resume,
        // A started run without a checkpoint has nothing worth keeping.
        overwrite: !resume,
        progress: false,
        stop_after_steps: None,
    };
    adalora_train::train(&opts)?;
    Ok(())
}

/// Write the outcome of row `index` if `pid` still holds it.
pub fn record(
    sweep: &SweepDir,
    index: usize,
    outcome: &Outcome,
    wall: f64,
    pid: u32,
) -> anyhow::Result<()> {
    sweep.update(|m| {
        let row = &mut m.rows[index];
        if row.claim.as_ref().is_some_and(|c| !c.is_by(pid)) {
            // Someone else claimed it meanwhile; their outcome counts.
            return Ok(());
        }
        row.wall_seconds += wall;
        row.claim = None;
        match outcome {
            Outcome::Done { .. } | Outcome::AlreadyDone => {
                row.status = Status::Done;
                row.error = None;
                // The build that trained it (a run found finished keeps what it had).
                if matches!(outcome, Outcome::Done { .. }) {
                    row.provenance = Some(Provenance::current(None));
                }
            }
            Outcome::Failed { error } => {
                row.status = Status::Failed;
                row.error = Some(error.clone());
            }
            Outcome::Interrupted(stop) => {
                row.status = Status::Pending;
                row.error = None;
                row.executor.insert(
                    INTERRUPTED_KEY.into(),
                    format!(
                        "{} after step {} of {}",
                        stop.signal, stop.step, stop.total_steps
                    ),
                );
            }
        }
        Ok(())
    })
}

/// How rows get run. The local executor is the default; a cluster executor (Slurm) submits
/// `adalora sweep FILE --out DIR --run-index I` for each row instead.
pub trait Executor {
    /// Run (or submit) `rows` of the sweep; returns when the executor is done with them.
    fn execute(&self, job: &SweepJob, rows: &[usize]) -> anyhow::Result<()>;
}

/// Everything needed to re-invoke `adalora sweep` for one row.
#[derive(Clone, Debug)]
pub struct SweepJob {
    pub sweep_file: PathBuf,
    pub sweep: SweepDir,
    /// The `adalora` binary.
    pub program: PathBuf,
}

impl SweepJob {
    /// The command that runs row `index`.
    pub fn row_command(&self, index: usize) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.arg("sweep")
            .arg(&self.sweep_file)
            .arg("--out")
            .arg(&self.sweep.root)
            .arg("--run-index")
            .arg(index.to_string());
        cmd
    }
}

/// Parallel child processes on this machine, `jobs` at a time, each with a thread budget.
#[derive(Clone, Debug)]
pub struct LocalExecutor {
    pub jobs: usize,
    pub threads_per_job: usize,
}

impl LocalExecutor {
    /// `threads_per_job` defaults to the machine's cores shared evenly among the jobs.
    pub fn new(jobs: usize, threads_per_job: Option<usize>) -> Self {
        let jobs = jobs.max(1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        LocalExecutor {
            jobs,
            threads_per_job: threads_per_job.unwrap_or((cores / jobs).max(1)),
        }
    }

    fn spawn(&self, job: &SweepJob, row: &Row) -> anyhow::Result<Child> {
        let run_dir = job.sweep.run_path(row);
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let log_path = run_dir.join("sweep.log");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut cmd = job.row_command(row.index);
        for var in THREAD_VARS {
            cmd.env(var, self.threads_per_job.to_string());
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", job.program.display()))
    }
}

impl Executor for LocalExecutor {
    fn execute(&self, job: &SweepJob, rows: &[usize]) -> anyhow::Result<()> {
        let mut queue: std::collections::VecDeque<usize> = rows.iter().copied().collect();
        let mut active: Vec<(usize, Child)> = Vec::new();
        let mut stopping = None;
        while !queue.is_empty() || !active.is_empty() {
            if let (None, Some(signal)) = (stopping, signals::requested()) {
                // Start nothing more; the running children checkpoint and record themselves
                // (a signal sent to this process alone is passed on to them).
                stopping = Some(signal);
                queue.clear();
                eprintln!(
                    "[{}] {signal}: stopping {} run(s) at their next step",
                    clock(),
                    active.len()
                );
                for (_, child) in &active {
                    forward_stop(child);
                }
            }
            while active.len() < self.jobs {
                let Some(index) = queue.pop_front() else {
                    break;
                };
                let row = job.sweep.read()?.rows[index].clone();
                eprintln!("[{}] start #{index} {}", clock(), row.label);
                active.push((index, self.spawn(job, &row)?));
            }
            std::thread::sleep(Duration::from_millis(200));
            let mut still = Vec::new();
            for (index, mut child) in active {
                match child.try_wait()? {
                    None => still.push((index, child)),
                    Some(status) => finished(job, index, child.id(), status)?,
                }
            }
            active = still;
        }
        match stopping {
            Some(signal) => Err(StopRequested {
                signal: signal.into(),
                detail:
                    "the runs in flight saved their checkpoints; run the sweep again to continue"
                        .into(),
            }
            .into()),
            None => Ok(()),
        }
    }
}

/// Ask a child run to stop at its next step (SIGTERM: it checkpoints and records itself).
fn forward_stop(child: &Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: sends a signal to our own child process; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

/// A child exited: report it, and record a failure if it died before recording anything.
fn finished(
    job: &SweepJob,
    index: usize,
    pid: u32,
    status: std::process::ExitStatus,
) -> anyhow::Result<()> {
    let row = job.sweep.read()?.rows[index].clone();
    let orphaned =
        row.status == Status::Running && row.claim.as_ref().is_some_and(|c| c.is_by(pid));
    if orphaned && status.code().is_none() {
        // Killed by a signal (Ctrl-C, kill, OOM killer): interrupted, not failed. The row
        // stays claimed by a dead process, so the next `adalora sweep` resumes it.
        eprintln!(
            "[{}] #{index} {} interrupted ({status})",
            clock(),
            row.label
        );
        return Ok(());
    }
    if orphaned {
        let log = job.sweep.run_path(&row).join("sweep.log");
        let error = format!(
            "the run's process exited ({status}) without recording an outcome; see {}",
            log.display()
        );
        record(&job.sweep, index, &Outcome::Failed { error }, 0.0, pid)?;
    }
    let row = job.sweep.read()?.rows[index].clone();
    let detail = match (&row.status, &row.error) {
        (Status::Failed, Some(e)) => format!(": {}", e.lines().next().unwrap_or("")),
        (Status::Pending, _) => row
            .executor
            .get(INTERRUPTED_KEY)
            .map(|note| format!(": interrupted ({note}), resumes on the next sweep"))
            .unwrap_or_default(),
        _ => String::new(),
    };
    eprintln!(
        "[{}] {:?} #{index} {} ({:.0} s){detail}",
        clock(),
        row.status,
        row.label,
        row.wall_seconds
    );
    Ok(())
}

fn clock() -> String {
    let s = crate::manifest::unix_now() % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The binary running now (children are started with the same one).
pub fn current_program() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locating the adalora binary")
}
