//! The Slurm executor: the rows a sweep still needs become one job array whose task index is
//! the manifest row, each task running `adalora sweep FILE --out DIR --run-index
//! $SLURM_ARRAY_TASK_ID` (claim the row, train or resume it, record the outcome under the
//! manifest lock). Slurm is driven through its commands (`sbatch`, `squeue`, `sacct`,
//! `scontrol`, `scancel`), which find the cluster through `SLURM_CONF` as usual.
//!
//! The manifest is the one of the local executor; a row only gains the id of its array task
//! (`executor.slurm_job = "<array id>_<row>"`), so a sweep moves between executors freely.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use adalora_train::config::DeviceKind;
use adalora_train::io::atomic_write;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::executor::{Executor, SweepJob, THREAD_VARS};
use crate::manifest::{Manifest, Row, Status, SweepDir};

/// The key of a row's executor notes that holds its array task (`<array job id>_<row>`).
pub const JOB_KEY: &str = "slurm_job";

/// Resources of one run (one array task): the sweep file's `[slurm]` table, overridden by
/// the command line's flags.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Time limit of one run, as `sbatch --time` takes it (`30`, `2:00:00`, `1-00:00:00`).
    pub time: Option<String>,
    /// GPUs per run; a run with a GPU trains on it (`--device cuda` is implied).
    pub gpus_per_run: Option<u32>,
    /// CPUs per run; also the BLAS thread count of the run.
    pub cpus_per_run: Option<u32>,
    /// Memory per run, as `sbatch --mem` takes it (`8G`, `16000M`).
    pub mem: Option<String>,
    /// At most this many runs at once (the array's `%K` throttle).
    pub max_parallel: Option<usize>,
    /// Seconds before the time limit (or a preemption's kill) at which Slurm sends SIGUSR1: the
    /// run finishes its step, checkpoints and exits; default [`DEFAULT_SIGNAL_GRACE`].
    pub signal_grace: Option<u32>,
}

/// Seconds of warning a task gets before Slurm kills it (`--signal=B:USR1@120`): time to
/// finish one optimizer step, or an evaluation, and write the checkpoint.
pub const DEFAULT_SIGNAL_GRACE: u32 = 120;

impl SlurmOptions {
    /// A `[slurm]` table of a sweep file; an unknown key or a wrong type names the key.
    pub fn from_toml(value: &toml::Value, file: &str) -> anyhow::Result<Self> {
        value.clone().try_into().map_err(|e: toml::de::Error| {
            // serde names an unknown key, but not the key of a mistyped value: find it.
            let mistyped = value.as_table().and_then(|table| {
                table.iter().find_map(|(key, v)| {
                    let one = toml::Table::from_iter([(key.clone(), v.clone())]);
                    let parsed: Result<SlurmOptions, _> = toml::Value::Table(one).try_into();
                    parsed.is_err().then_some(key)
                })
            });
            match mistyped {
                Some(key) => anyhow::anyhow!("sweep file {file}: [slurm] {key}: {}", e.message()),
                None => anyhow::anyhow!("sweep file {file}: [slurm]: {}", e.message()),
            }
        })
    }

    /// These options where set, `base` elsewhere (flags over the sweep file).
    pub fn or(self, base: &SlurmOptions) -> SlurmOptions {
        SlurmOptions {
            partition: self.partition.or_else(|| base.partition.clone()),
            account: self.account.or_else(|| base.account.clone()),
            time: self.time.or_else(|| base.time.clone()),
            gpus_per_run: self.gpus_per_run.or(base.gpus_per_run),
            cpus_per_run: self.cpus_per_run.or(base.cpus_per_run),
            mem: self.mem.or_else(|| base.mem.clone()),
            max_parallel: self.max_parallel.or(base.max_parallel),
            signal_grace: self.signal_grace.or(base.signal_grace),
        }
    }

    /// The `#SBATCH` lines for the resources that are set, and the warning signal.
    fn directives(&self) -> Vec<String> {
        // B: the signal goes to the batch shell, which `exec`s adalora, so adalora receives it.
        let grace = self.signal_grace.unwrap_or(DEFAULT_SIGNAL_GRACE);
        let mut lines = vec![format!("#SBATCH --signal=B:USR1@{grace}")];
        let mut add = |flag: &str, value: Option<String>| {
            if let Some(v) = value {
                lines.push(format!("#SBATCH --{flag}={v}"));
            }
        };
        add("partition", self.partition.clone());
        add("account", self.account.clone());
        add("time", self.time.clone());
        add("cpus-per-task", self.cpus_per_run.map(|n| n.to_string()));
        add("mem", self.mem.clone());
        add(
            "gres",
            self.gpus_per_run
                .filter(|&n| n > 0)
                .map(|n| format!("gpu:{n}")),
        );
        lines
    }
}

/// Submits the rows as a job array (or, for `--dry-run`, prints the script).
#[derive(Clone, Debug)]
pub struct SlurmExecutor {
    /// The sweep's name (the job name is `adalora-<name>`).
    pub name: String,
    pub options: SlurmOptions,
    /// Print the script instead of submitting it.
    pub dry_run: bool,
    /// After submitting, wait until no task of the array is queued or running.
    pub wait: bool,
}

impl Executor for SlurmExecutor {
    fn execute(&self, job: &SweepJob, rows: &[usize]) -> anyhow::Result<()> {
        if rows.is_empty() {
            eprintln!("slurm: nothing to submit");
            return Ok(());
        }
        let script = array_script(job, &self.name, rows, &self.options)?;
        if self.dry_run {
            print!("{script}");
            return Ok(());
        }
        let dir = job.sweep.root.join("slurm");
        let path = dir.join(format!("array-{}.sh", crate::manifest::unix_now()));
        atomic_write(&path, script.as_bytes())?;
        let id = sbatch(&path)?;
        // A row that was left running by a task that no longer exists gives its claim up to
        // the new task, which resumes it from its checkpoint.
        job.sweep.update(|m| {
            for &i in rows {
                let row = &mut m.rows[i];
                if row.status == Status::Running {
                    row.claim = None;
                }
                row.executor.insert(JOB_KEY.into(), task_id(&id, i));
            }
            Ok(())
        })?;
        println!(
            "submitted job array {id}: {} run(s) of {} (script {}, logs {}/<job>_<row>.log)",
            rows.len(),
            job.sweep.root.display(),
            path.display(),
            dir.display()
        );
        if self.wait {
            wait_for(&id)?;
        }
        Ok(())
    }
}

/// `<array job id>_<row>`, the way Slurm names an array task.
fn task_id(array: &str, row: usize) -> String {
    format!("{array}_{row}")
}

/// The array job id of a row's task, if it was ever submitted.
fn array_of(row: &Row) -> Option<&str> {
    row.executor
        .get(JOB_KEY)
        .and_then(|t| t.split_once('_'))
        .map(|(array, _)| array)
}

/// The sbatch script of a job array over `rows` (array index = manifest row).
pub fn array_script(
    job: &SweepJob,
    name: &str,
    rows: &[usize],
    opts: &SlurmOptions,
) -> anyhow::Result<String> {
    let absolute = |p: &Path| -> anyhow::Result<PathBuf> {
        std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
    };
    let sweep_dir = absolute(&job.sweep.root)?;
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let mut s = String::new();
    s.push_str("#!/bin/bash\n");
    s.push_str(&format!(
        "# adalora sweep {name}: {} run(s) as one Slurm job array; the array index is the row of \
         {}/manifest.json.\n",
        rows.len(),
        sweep_dir.display()
    ));
    s.push_str(&format!("#SBATCH --job-name=adalora-{name}\n"));
    s.push_str(&format!(
        "#SBATCH --array={}\n",
        array_spec(rows, opts.max_parallel)
    ));
    s.push_str(&format!("#SBATCH --chdir={}\n", cwd.display()));
    s.push_str(&format!(
        "#SBATCH --output={}/slurm/%A_%a.log\n",
        sweep_dir.display()
    ));
    // A requeued or preempted task appends to its log and resumes its run's checkpoint.
    s.push_str("#SBATCH --open-mode=append\n#SBATCH --requeue\n");
    for line in opts.directives() {
        s.push_str(&line);
        s.push('\n');
    }
    s.push_str("set -eu\n");
    // BLAS uses the CPUs Slurm allocated to the task, no more.
    let threads: Vec<String> = THREAD_VARS
        .iter()
        .map(|v| format!("{v}=\"${{SLURM_CPUS_PER_TASK:-1}}\""))
        .collect();
    s.push_str(&format!("export {}\n", threads.join(" ")));
    let argv = [
        absolute(&job.program)?,
        PathBuf::from("sweep"),
        absolute(&job.sweep_file)?,
        PathBuf::from("--out"),
        sweep_dir.clone(),
        PathBuf::from("--run-index"),
    ];
    let argv: Vec<String> = argv
        .iter()
        .map(|a| sh_quote(&a.display().to_string()))
        .collect();
    s.push_str(&format!(
        "exec {} \"$SLURM_ARRAY_TASK_ID\"\n",
        argv.join(" ")
    ));
    Ok(s)
}

/// `0-3,7,9-10%K`: the rows as ranges, throttled to K tasks at once.
pub fn array_spec(rows: &[usize], max_parallel: Option<usize>) -> String {
    let mut sorted: Vec<usize> = rows.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        let end = sorted[i];
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    let mut spec = parts.join(",");
    if let Some(k) = max_parallel.filter(|&k| k > 0) {
        spec.push_str(&format!("%{k}"));
    }
    spec
}

/// Single-quote for the shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Run a Slurm command, returning its stdout; a failure names the command and its stderr.
fn slurm_command(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| {
        format!("running {program} (is Slurm installed? scripts/slurm-up.sh starts a local one)")
    })?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submit a script; the job id.
fn sbatch(script: &Path) -> anyhow::Result<String> {
    let path = script.display().to_string();
    let out = slurm_command("sbatch", &["--parsable", &path])?;
    // `--parsable` prints `<id>` or `<id>;<cluster>`.
    let id = out.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch {path}: unexpected output {:?}", out.trim());
    }
    Ok(id)
}

/// The tasks Slurm still has queued or running, by task id (`<array>_<row>`) → state.
pub fn live_tasks() -> anyhow::Result<BTreeMap<String, String>> {
    let out = slurm_command(
        "squeue",
        &["--me", "--array", "--noheader", "--format=%i|%T"],
    )?;
    Ok(parse_task_lines(&out))
}

/// `<job id>|<state>` lines (squeue, sacct) → task id → state. A record of several tasks of
/// an array (`5_[2-3%2]`, the never-started remainder) counts for each of them; `CANCELLED by
/// 0` counts as `CANCELLED`.
fn parse_task_lines(text: &str) -> BTreeMap<String, String> {
    let mut states = BTreeMap::new();
    for (id, state) in text.lines().filter_map(|l| l.trim().split_once('|')) {
        let Some((array, tasks)) = id.trim().split_once('_') else {
            continue;
        };
        let state = state.split_whitespace().next().unwrap_or("");
        for task in expand_tasks(tasks) {
            states.insert(task_id(array, task), state.to_string());
        }
    }
    states
}

/// `3`, `[2-3%2]`, `2-3%2`, `[0,4-5]` → the task indices.
fn expand_tasks(spec: &str) -> Vec<usize> {
    let spec = spec.trim_end_matches(']').trim_start_matches('[');
    let spec = spec.split('%').next().unwrap_or("");
    spec.split(',')
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) => (a..=b).collect(),
                _ => Vec::new(),
            },
            None => part.parse().ok().into_iter().collect(),
        })
        .collect()
}

/// Final (or current) states of the tasks of these arrays: from `sacct` where the cluster
/// keeps accounting, else from `scontrol` (which remembers finished jobs for `MinJobAge`).
pub fn task_states(arrays: &BTreeSet<String>) -> BTreeMap<String, String> {
    if arrays.is_empty() {
        return BTreeMap::new();
    }
    let list = arrays.iter().cloned().collect::<Vec<_>>().join(",");
    if let Ok(out) = slurm_command(
        "sacct",
        &[
            "--noheader",
            "--parsable2",
            "--allocations",
            "--format=JobID,State",
            "--jobs",
            &list,
        ],
    ) {
        return parse_task_lines(&out);
    }
    let mut states = BTreeMap::new();
    for array in arrays {
        if let Ok(out) = slurm_command("scontrol", &["--oneliner", "show", "job", array]) {
            states.extend(parse_scontrol(&out));
        }
    }
    states
}

/// `scontrol -o show job` lines → task id → state (array tasks only).
fn parse_scontrol(text: &str) -> BTreeMap<String, String> {
    let field = |line: &str, key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    let lines = text.lines().filter_map(|line| {
        Some(format!(
            "{}_{}|{}",
            field(line, "ArrayJobId=")?,
            field(line, "ArrayTaskId=")?,
            field(line, "JobState=")?
        ))
    });
    parse_task_lines(&lines.collect::<Vec<_>>().join("\n"))
}

/// The Slurm state of every row that has a task, live tasks first.
pub fn row_states(m: &Manifest) -> anyhow::Result<BTreeMap<usize, String>> {
    let live = live_tasks()?;
    let arrays: BTreeSet<String> = m
        .rows
        .iter()
        .filter_map(|r| array_of(r).map(str::to_string))
        .collect();
    let past = task_states(&arrays);
    Ok(m.rows
        .iter()
        .filter_map(|r| {
            let task = r.executor.get(JOB_KEY)?;
            let state = live
                .get(task)
                .or_else(|| past.get(task))
                .map_or("-", String::as_str);
            Some((r.index, format!("{task} {state}")))
        })
        .collect())
}

/// The rows to submit: those the local executor would run, except rows whose task Slurm still
/// has queued or running, plus running rows whose task is gone (cancelled, timed out, node
/// lost: they resume from their checkpoint).
pub fn rows_to_submit(
    m: &Manifest,
    retry_failed: bool,
    live: &BTreeMap<String, String>,
) -> Vec<usize> {
    let queued = |r: &Row| {
        r.executor
            .get(JOB_KEY)
            .is_some_and(|t| live.contains_key(t))
    };
    let mut rows: BTreeSet<usize> = crate::executor::rows_to_run(m, retry_failed)
        .into_iter()
        .filter(|&i| !queued(&m.rows[i]))
        .collect();
    rows.extend(
        m.rows
            .iter()
            .filter(|r| {
                r.status == Status::Running && r.executor.contains_key(JOB_KEY) && !queued(r)
            })
            .map(|r| r.index),
    );
    rows.into_iter().collect()
}

/// Cancel every array that still has tasks of this sweep queued or running.
pub fn cancel(sweep: &SweepDir) -> anyhow::Result<()> {
    let m = sweep.read()?;
    let live = live_tasks()?;
    let arrays: BTreeSet<&str> = m
        .rows
        .iter()
        .filter(|r| {
            r.executor
                .get(JOB_KEY)
                .is_some_and(|t| live.contains_key(t))
        })
        .filter_map(array_of)
        .collect();
    if arrays.is_empty() {
        println!(
            "slurm: no task of {} is queued or running",
            sweep.root.display()
        );
        return Ok(());
    }
    let ids: Vec<&str> = arrays.into_iter().collect();
    slurm_command("scancel", &ids)?;
    // Until its tasks have left the queue a row still counts as queued and is not resubmitted.
    for id in &ids {
        wait_for(id)?;
    }
    println!(
        "cancelled job array(s) {}; unfinished runs keep their checkpoints (resubmit to continue)",
        ids.join(", ")
    );
    Ok(())
}

/// Wait until no task of `array` is queued or running, reporting changes of its task counts.
fn wait_for(array: &str) -> anyhow::Result<()> {
    let prefix = format!("{array}_");
    let mut last = (usize::MAX, usize::MAX);
    loop {
        let live = live_tasks()?;
        let states: Vec<&String> = live
            .iter()
            .filter(|(t, _)| t.starts_with(&prefix))
            .map(|(_, s)| s)
            .collect();
        let running = states.iter().filter(|s| s.as_str() == "RUNNING").count();
        let counts = (running, states.len() - running);
        if counts != last {
            eprintln!(
                "slurm: job array {array}: {} running, {} queued",
                counts.0, counts.1
            );
            last = counts;
        }
        if states.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Whether this process is row `row`'s own array task (a requeued or restarted task may find
/// its row claimed by its own earlier, dead incarnation on another node).
pub fn is_own_task(row: &Row, env: impl Fn(&str) -> Option<String>) -> bool {
    let (Some(array), Some(task)) = (env("SLURM_ARRAY_JOB_ID"), env("SLURM_ARRAY_TASK_ID")) else {
        return false;
    };
    row.executor.get(JOB_KEY) == Some(&format!("{array}_{task}")) && task.parse() == Ok(row.index)
}

/// The device of a run inside a Slurm task: the GPU Slurm allocated (it is the only one the
/// process sees, as device 0, through `CUDA_VISIBLE_DEVICES`), else the configured one. A run
/// configured for CUDA in a task without a GPU is an error naming the fix.
pub fn task_device(
    configured: DeviceKind,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<DeviceKind> {
    if env("SLURM_JOB_ID").is_none() {
        return Ok(configured);
    }
    let gpus = env("CUDA_VISIBLE_DEVICES").filter(|v| !v.trim().is_empty() && v.trim() != "-1");
    match (gpus, configured) {
        (Some(_), _) => Ok(DeviceKind::Cuda),
        (None, DeviceKind::Cuda) => bail!(
            "the run is configured for device cuda, but its Slurm task has no GPU \
             (CUDA_VISIBLE_DEVICES is unset): submit with --gpus-per-run 1 (or gpus_per_run in [slurm])"
        ),
        (None, other) => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_spec_compresses_rows_into_ranges_with_a_throttle() {
        assert_eq!(array_spec(&[0, 1, 2, 3], None), "0-3");
        assert_eq!(array_spec(&[9, 0, 1, 5, 10, 3], Some(2)), "0-1,3,5,9-10%2");
        assert_eq!(array_spec(&[4], Some(0)), "4");
    }

    #[test]
    fn flags_override_the_slurm_table_and_bad_keys_are_named() {
        let table: toml::Value =
            toml::from_str("partition = \"gpu\"\nmem = \"8G\"\nmax_parallel = 4").unwrap();
        let file_opts = SlurmOptions::from_toml(&table, "s.toml").unwrap();
        let flags = SlurmOptions {
            partition: Some("debug".into()),
            gpus_per_run: Some(1),
            ..Default::default()
        };
        let merged = flags.or(&file_opts);
        assert_eq!(merged.partition.as_deref(), Some("debug"));
        assert_eq!(merged.mem.as_deref(), Some("8G"));
        assert_eq!(merged.max_parallel, Some(4));
        assert_eq!(
            merged.directives(),
            [
                "#SBATCH --signal=B:USR1@120",
                "#SBATCH --partition=debug",
                "#SBATCH --mem=8G",
                "#SBATCH --gres=gpu:1"
            ]
        );
        let bad: toml::Value = toml::from_str("gpus = 1").unwrap();
        let err = SlurmOptions::from_toml(&bad, "s.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s.toml") && err.contains("[slurm]") && err.contains("gpus"),
            "{err}"
        );
        let wrong: toml::Value = toml::from_str("max_parallel = \"four\"").unwrap();
        let err = SlurmOptions::from_toml(&wrong, "s.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_parallel"), "{err}");
    }

    #[test]
    fn scontrol_and_squeue_lines_become_task_states() {
        let text = "JobId=7 ArrayJobId=5 ArrayTaskId=2 JobName=x JobState=COMPLETED Reason=None\n\
                    JobId=5 ArrayJobId=5 ArrayTaskId=3-6%2 JobName=x JobState=PENDING Reason=None\n\
                    JobId=9 JobName=plain JobState=RUNNING\n";
        let states = parse_scontrol(text);
        assert_eq!(states.len(), 5);
        assert_eq!(states["5_2"], "COMPLETED");
        assert_eq!(states["5_6"], "PENDING");
        // sacct: the never-started remainder of a cancelled array is one record.
        let past = parse_task_lines("5_0|CANCELLED by 0\n5_[2-3%2]|CANCELLED by 0\n9|COMPLETED\n");
        assert_eq!(past.keys().collect::<Vec<_>>(), ["5_0", "5_2", "5_3"]);
        assert!(past.values().all(|s| s == "CANCELLED"));
        assert_eq!(expand_tasks("[0,4-5]"), [0, 4, 5]);
    }

    #[test]
    fn the_task_device_follows_the_gpu_slurm_allocated() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        // Outside Slurm the configured device stands.
        assert_eq!(
            task_device(DeviceKind::Cpu, env(&[("CUDA_VISIBLE_DEVICES", "0")])).unwrap(),
            DeviceKind::Cpu
        );
        // A task with a GPU trains on it.
        let gpu = env(&[("SLURM_JOB_ID", "3"), ("CUDA_VISIBLE_DEVICES", "2")]);
        assert_eq!(task_device(DeviceKind::Cpu, gpu).unwrap(), DeviceKind::Cuda);
        // Without one, a CUDA run is refused with the fix; a CPU run stays on the CPU.
        let cpu = env(&[("SLURM_JOB_ID", "3")]);
        let err = task_device(DeviceKind::Cuda, cpu).unwrap_err().to_string();
        assert!(err.contains("--gpus-per-run"), "{err}");
        assert_eq!(task_device(DeviceKind::Cpu, cpu).unwrap(), DeviceKind::Cpu);
    }

    fn manifest(rows: &[(&str, Option<&str>)]) -> Manifest {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .enumerate()
            .map(|(i, (status, task))| {
                serde_json::json!({
                    "index": i, "hash": format!("h{i}"), "label": format!("r{i}"),
                    "settings": [], "status": status, "run_dir": format!("runs/{i}"),
                    "wall_seconds": 0.0, "attempts": 1, "error": null,
                    // A claim from another host: only Slurm can tell whether it is alive.
                    "claim": (*status == "running")
                        .then(|| serde_json::json!({"host": "node-b", "pid": 1, "since": 0})),
                    "executor": task
                        .map(|t| serde_json::json!({ JOB_KEY: t }))
                        .unwrap_or_else(|| serde_json::json!({})),
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "version": 1, "name": "s", "sweep_file": "s.toml", "rows": rows
        }))
        .unwrap()
    }

    #[test]
    fn only_rows_without_a_live_task_are_submitted() {
        let m = manifest(&[
            ("pending", None),        // never submitted
            ("pending", Some("7_1")), // queued
            ("running", Some("7_2")), // running
            ("running", Some("6_3")), // its task was cancelled: resume it
            ("running", None),        // a local run on another host: leave it
            ("done", Some("6_5")),
            ("failed", Some("6_6")),
        ]);
        let live = parse_task_lines("7_1|PENDING\n7_2|RUNNING\n");
        assert_eq!(rows_to_submit(&m, false, &live), [0, 3]);
        assert_eq!(rows_to_submit(&m, true, &live), [0, 3, 6]);
    }

    #[test]
    fn a_requeued_task_recognises_its_own_row() {
        let m = manifest(&[("running", Some("7_0")), ("running", Some("7_1"))]);
        let env = |k: &str| match k {
            "SLURM_ARRAY_JOB_ID" => Some("7".to_string()),
            "SLURM_ARRAY_TASK_ID" => Some("1".to_string()),
            _ => None,
        };
        assert!(is_own_task(&m.rows[1], env));
        assert!(!is_own_task(&m.rows[0], env));
        assert!(!is_own_task(&m.rows[1], |_| None));
    }

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
