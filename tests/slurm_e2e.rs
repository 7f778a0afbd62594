//! End-to-end tests of `adalora sweep --executor slurm` against a real single-node Slurm
//! (`scripts/slurm-up.sh`; `scripts/test.sh` brings it up before `cargo test` and down after).
//! Without a reachable Slurm these tests fail with the reason: they never skip.
//!
//! Runs are tiny (MiniLM on a few dozen examples of the default task, a handful of steps) so a
//! whole sweep takes well under a minute on two cores.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::*;

/// The node has two CPUs: the tests take turns so each one's timing is its own.
static CLUSTER: Mutex<()> = Mutex::new(());

/// Slurm must be up; if it is not, the test fails saying so (and how to start it).
fn require_slurm() {
    let conf = std::env::var("SLURM_CONF").unwrap_or_else(|_| {
        panic!(
            "SLURM_CONF is not set: these tests need the local Slurm of scripts/slurm-up.sh \
             (scripts/test.sh starts it and sets SLURM_CONF)"
        )
    });
    let out = Command::new("sinfo")
        .args(["--noheader", "--format=%T"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run sinfo ({e}): is slurm-wlm installed? (scripts/slurm-up.sh)")
        });
    let states = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success()
            && ["idle", "mixed", "allocated"]
                .iter()
                .any(|s| states.contains(s)),
        "the Slurm of {conf} is not up (sinfo: {}{}); start it with scripts/slurm-up.sh",
        states.trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A fifth run whose data file does not exist: it fails at once, recorded with its error.
const FAILING_RUN: &str = "[[include]]\nseed = 5\ntask = \"csv:missing.csv\"\n";

/// A 4-run sweep (LoRA, four seeds) of `steps` steps each, checkpointing every 2 steps, plus
/// `extra` TOML.
fn write_sweep(dir: &Path, name: &str, steps: usize, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"name = "{name}"
[set]
task = "default"
method = "lora"
"lora.r" = 2
"target.modules" = "query,value"
"train.max_train_examples" = 64
"train.max_eval_examples" = 16
"train.batch_size" = 8
"train.max_seq_len" = 32
"train.max_steps" = {steps}
"train.eval_every" = 2
"train.log_every" = 1
[sweep]
seed = [1, 2, 3, 4]
[slurm]
cpus_per_run = 1
mem = "2G"
max_parallel = 2
time = "10"
{extra}"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Poll until `done` holds, failing with the sweep's state after `limit`.
fn wait_until(sweep: &Path, limit: Duration, what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}; manifest: {}",
            serde_json::to_string_pretty(&manifest(sweep)).unwrap()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn job_id(row: &Value) -> String {
    row["executor"]["slurm_job"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn dry_run_prints_the_array_script_without_submitting() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_sweep(dir.path(), "dry", 4, "");
    let sweep = dir.path().join("sw");
    let script = ok_stdout(run(&[
        "sweep",
        file.to_str().unwrap(),
        "--out",
        sweep.to_str().unwrap(),
        "--executor",
        "slurm",
        "--dry-run",
        "--partition",
        "local",
        "--max-parallel",
        "3",
    ]));
    for line in [
        "#SBATCH --array=0-3%3",
        "#SBATCH --partition=local",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=2G",
        "#SBATCH --time=10",
        "#SBATCH --job-name=adalora-dry",
        "'--run-index' \"$SLURM_ARRAY_TASK_ID\"",
    ] {
        assert!(script.contains(line), "script lacks {line:?}:\n{script}");
    }
    assert!(
        !sweep.join("manifest.json").exists(),
        "a dry run writes nothing"
    );
}

#[test]
fn sweep_runs_as_a_job_array() {
    let _turn = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let file = write_sweep(dir.path(), "array", 4, FAILING_RUN);
    let sweep = dir.path().join("sw");
    let (f, s) = (file.to_str().unwrap(), sweep.to_str().unwrap());
    let submit = |extra: &[&str]| {
        let mut args = vec!["sweep", f, "--out", s, "--executor", "slurm"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = submit(&["--wait"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("1 run(s) failed"),
        "{err}"
    );

    let first = rows(&sweep);
    assert_eq!(first.len(), 5);
    let array = job_id(&first[0]).split('_').next().unwrap().to_string();
    for (i, row) in first.iter().enumerate().take(4) {
        assert_eq!(row["status"], "done", "row {i}: {row}");
        assert_eq!(row["attempts"], 1, "row {i} ran once: {row}");
        // One array for the sweep; array index = manifest row.
        assert_eq!(job_id(row), format!("{array}_{i}"));
        let run = sweep.join(row["run_dir"].as_str().unwrap());
        assert!(
            run.join("summary.json").is_file(),
            "{} has no summary",
            run.display()
        );
        assert!(run.join("adapter/adapter_model.safetensors").is_file());
        assert_eq!(train_steps(&run), vec![1, 2, 3, 4]);
        assert!(sweep.join(format!("slurm/{array}_{i}.log")).is_file());
    }
    assert_eq!(first[4]["status"], "failed");
    assert!(
        first[4]["error"].as_str().unwrap().contains("missing.csv"),
        "{}",
        first[4]
    );
    let status = ok_stdout(run(&["sweep", f, "--out", s, "--status"]));
    assert!(status.contains(&format!("{array}_0 COMPLETED")), "{status}");
    assert!(status.contains(&format!("{array}_4 FAILED")), "{status}");
    assert!(status.contains("4 done, 1 failed"), "{status}");
    // --wait wrote the report of the finished runs.
    let report = std::fs::read_to_string(sweep.join("report.md")).unwrap();
    assert!(
        report.contains("| LoRA r=2 |") && report.contains("4 finished runs, 1 not finished"),
        "{report}"
    );

    // Without --retry-failed nothing is left to submit; with it, only the failed row goes.
    let again = submit(&[]);
    let text = String::from_utf8_lossy(&again.stderr).to_string() + &ok_stdout(again);
    assert!(text.contains("nothing to submit"), "{text}");
    let script = ok_stdout(submit(&["--retry-failed", "--dry-run"]));
    assert!(script.contains("#SBATCH --array=4%2\n"), "{script}");
    assert!(!submit(&["--retry-failed", "--wait"]).status.success());
    let second = rows(&sweep);
    assert_eq!(second[4]["attempts"], 2, "{}", second[4]);
    assert_ne!(job_id(&second[4]), job_id(&first[4]));
    for i in 0..4 {
        assert_eq!(second[i], first[i], "row {i} was not touched by the retry");
    }
}

#[test]
fn cancelled_array_resumes_without_losing_or_repeating_runs() {
    let _turn = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let file = write_sweep(dir.path(), "cancel", 24, "");
    let sweep = dir.path().join("sw");
    let (f, s) = (file.to_str().unwrap(), sweep.to_str().unwrap());
    ok_stdout(run(&["sweep", f, "--out", s, "--executor", "slurm"]));

    // Cancel while the first two runs are past a checkpoint, before any has finished.
    wait_until(
        &sweep,
        Duration::from_secs(240),
        "two runs checkpointed",
        || {
            rows(&sweep)
                .iter()
                .filter(|r| {
                    sweep
                        .join(r["run_dir"].as_str().unwrap())
                        .join("checkpoint/state.json")
                        .is_file()
                })
                .count()
                >= 2
        },
    );
    ok_stdout(run(&["sweep", f, "--out", s, "--cancel"]));
    let before = rows(&sweep);
    let run_of = |r: &Value| sweep.join(r["run_dir"].as_str().unwrap());
    let midway: Vec<usize> = before
        .iter()
        .filter(|r| r["status"] != "done" && run_of(r).join("checkpoint/state.json").is_file())
        .map(|r| r["index"].as_u64().unwrap() as usize)
        .collect();
    assert!(
        !midway.is_empty(),
        "no run was cancelled part-way: {before:?}"
    );
    let unfinished = before.iter().filter(|r| r["status"] != "done").count();
    assert!(unfinished >= 2, "cancelled too late: {before:?}");
    let done_before: Vec<(String, std::time::SystemTime)> = before
        .iter()
        .filter(|r| r["status"] == "done")
        .map(|r| {
            let dir = r["run_dir"].as_str().unwrap().to_string();
            let t = std::fs::metadata(sweep.join(&dir).join("summary.json"))
                .unwrap()
                .modified()
                .unwrap();
            (dir, t)
        })
        .collect();

    let status = ok_stdout(run(&["sweep", f, "--out", s, "--status"]));
    assert!(status.contains("CANCELLED"), "{status}");

    // Resubmit: only the unfinished rows go, and they finish from their checkpoints.
    ok_stdout(run(&[
        "sweep",
        f,
        "--out",
        s,
        "--executor",
        "slurm",
        "--wait",
    ]));
    let after = rows(&sweep);
    assert_eq!(after.len(), 4);
    for row in &after {
        assert_eq!(row["status"], "done", "{row}");
        let run = sweep.join(row["run_dir"].as_str().unwrap());
        // Every step logged exactly once, in order: nothing lost, nothing repeated.
        assert_eq!(
            train_steps(&run),
            (1..=24).collect::<Vec<_>>(),
            "{}",
            run.display()
        );
    }
    let resubmitted = after
        .iter()
        .filter(|r| job_id(r) != job_id(&before[r["index"].as_u64().unwrap() as usize]))
        .count();
    assert_eq!(
        resubmitted, unfinished,
        "only unfinished rows are resubmitted"
    );
    // The runs cancelled part-way continued from their checkpoints in the new array.
    for &i in &midway {
        assert_eq!(after[i]["attempts"], 2, "{}", after[i]);
        let log = sweep.join(format!("slurm/{}.log", job_id(&after[i])));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("resuming"), "{}: {text}", log.display());
    }
    for (dir, t) in done_before {
        let now = std::fs::metadata(sweep.join(&dir).join("summary.json"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            now, t,
            "{dir} finished before the cancel and must not run again"
        );
    }
}

/// Run `cmd` (scancel / scontrol), which must succeed.
fn slurm_cmd(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn preempted_and_requeued_tasks_resume_their_runs_without_losing_a_step() {
    let _turn = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let file = write_sweep(dir.path(), "preempt", 300, "signal_grace = 30\n");
    let sweep = dir.path().join("sw");
    let (f, s) = (file.to_str().unwrap(), sweep.to_str().unwrap());
    let script = ok_stdout(run(&[
        "sweep",
        f,
        "--out",
        s,
        "--executor",
        "slurm",
        "--dry-run",
    ]));
    assert!(script.contains("#SBATCH --signal=B:USR1@30\n"), "{script}");
    assert!(script.contains("#SBATCH --requeue\n"), "{script}");
    ok_stdout(run(&["sweep", f, "--out", s, "--executor", "slurm"]));
    let run_of = |i: usize| sweep.join(rows(&sweep)[i]["run_dir"].as_str().unwrap());
    let checkpointed = |i: usize| run_of(i).join("checkpoint/state.json").is_file();
    wait_until(
        &sweep,
        Duration::from_secs(240),
        "rows 0 and 1 checkpointed",
        || checkpointed(0) && checkpointed(1),
    );
    let tasks: Vec<String> = rows(&sweep)[..2].iter().map(job_id).collect();
    // Row 0: Slurm's warning signal (as at a time limit or a preemption), then a requeue of
    // the stopped task. Row 1: `scontrol requeue` of the running task (SIGTERM, then requeued).
    // scancel may report an error for an array task's batch step even when the signal was
    // delivered: the effect (the row stopped at a step) is what is checked.
    let _ = Command::new("scancel")
        .args(["--batch", "--signal=USR1", &tasks[0]])
        .output()
        .unwrap();
    wait_until(
        &sweep,
        Duration::from_secs(120),
        "row 0 stopped at a step",
        || rows(&sweep)[0]["status"] == "pending" || rows(&sweep)[0]["status"] == "done",
    );
    let stopped = rows(&sweep)[0].clone();
    slurm_cmd("scontrol", &["requeue", &tasks[1]]);
    if stopped["status"] == "pending" {
        assert!(
            stopped["executor"]["interrupted"]
                .as_str()
                .is_some_and(|n| n.starts_with("SIGUSR1 after step")),
            "{stopped}"
        );
        let note = json(&run_of(0).join("interrupted.json"));
        let state = json(&run_of(0).join("checkpoint/state.json"));
        assert_eq!(
            note["step"], state["step"],
            "no training lost beyond the step"
        );
        slurm_cmd("scontrol", &["requeue", &tasks[0]]);
    }
    wait_until(&sweep, Duration::from_secs(600), "every row done", || {
        rows(&sweep).iter().all(|r| r["status"] == "done")
    });
    for (i, row) in rows(&sweep).iter().enumerate() {
        let run = sweep.join(row["run_dir"].as_str().unwrap());
        assert_eq!(
            train_steps(&run),
            (1..=300).collect::<Vec<_>>(),
            "row {i}: every step once, in order"
        );
        assert!(!run.join("interrupted.json").exists());
        // The same array task, requeued: no second submission.
        if i < 2 {
            assert_eq!(job_id(row), tasks[i], "{row}");
        }
    }
    assert_eq!(
        stopped["status"], "pending",
        "the USR1 landed after the run finished"
    );
    assert!(
        rows(&sweep)[0]["attempts"].as_u64() >= Some(2),
        "{}",
        rows(&sweep)[0]
    );
}
