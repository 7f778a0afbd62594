//! `adalora sweep` under concurrency, signals and a full disk, on the tiny BERT fixture (runs
//! of a second or two): two sweeps on one folder claim different rows and none twice while
//! `report` reads alongside; SIGTERM to a sweep stops its runs at a step (status 75) and the
//! next sweep resumes them to the same bytes as an uninterrupted sweep; a full disk marks the
//! run failed with the reason and leaves a valid manifest.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// LoRA on two matrices per layer: small files, checkpoints every 4 steps.
const LORA: &str = r#"method = "lora"
"lora.r" = 2
"target.modules" = "query,value"
"train.eval_every" = 4"#;

/// AdaLoRA as in tests/robustness.rs (a checkpoint at every step; files above 16 KiB).
const ADALORA: &str = r#"method = "adalora"
"adalora.init_r" = 4
"adalora.target_r" = 2
"adalora.tinit" = 2
"adalora.tfinal" = 6
"adalora.delta_t" = 3
"target.modules" = "query,value,intermediate"
"train.eval_every" = 1"#;

/// `runs` runs (seeds 1..=runs) of `steps` steps with `method`'s settings on the tiny model.
fn sweep_file(dir: &Path, runs: usize, steps: usize, method: &str) -> std::path::PathBuf {
    let seeds: Vec<String> = (1..=runs).map(|s| s.to_string()).collect();
    let text = format!(
        r#"
name = "tiny"
[set]
task = "default"
model = "{}"
{method}
"train.max_train_examples" = 64
"train.max_eval_examples" = 32
"train.batch_size" = 8
"train.max_seq_len" = 32
"train.max_steps" = {steps}
[sweep]
seed = [{}]
"#,
        tiny_model().display(),
        seeds.join(", ")
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn sweep(file: &Path, out: &Path) -> Command {
    let mut c = adalora();
    c.args([
        "sweep",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn adapter(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap()
}

#[test]
fn two_sweeps_on_one_folder_claim_different_rows_and_report_reads_alongside() {
    let tmp = tempfile::tempdir().unwrap();
    let file = sweep_file(tmp.path(), 6, 8, LORA);
    let out = tmp.path().join("sw");
    let a = sweep(&file, &out).args(["-j", "1"]).spawn().unwrap();
    let b = sweep(&file, &out).args(["-j", "1"]).spawn().unwrap();
    // `report` while both run: it reads finished rows only, never a half-written file.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut reports = 0;
    while !out.join("manifest.json").exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..5 {
        let r = run(&["report", out.to_str().unwrap()]);
        assert!(
            r.status.code() == Some(0) || r.status.code() == Some(1),
            "report must succeed or fail with a message, not panic:\n{}",
            text(&r)
        );
        reports += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rows = rows(&out);
    assert_eq!(rows.len(), 6);
    for r in &rows {
        assert_eq!(r["status"], "done", "{r}");
        assert_eq!(r["attempts"], 1, "a row was run twice: {r}");
    }
    ok(run(&["report", out.to_str().unwrap()]));
    assert!(reports > 0);
}

#[test]
fn sigterm_stops_a_sweeps_runs_at_a_step_and_the_next_sweep_resumes_them_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let file = sweep_file(tmp.path(), 2, 200, ADALORA);
    let reference = tmp.path().join("reference");
    ok(sweep(&file, &reference).args(["-j", "2"]).output().unwrap());

    let out = tmp.path().join("sw");
    let child = sweep(&file, &out).args(["-j", "2"]).spawn().unwrap();
    // Both runs past their first checkpoint, then a signal to the sweep process alone.
    let deadline = Instant::now() + Duration::from_secs(600);
    let checkpointed = |m: &Path| {
        m.join("manifest.json").exists()
            && rows(m).iter().all(|r| {
                m.join(r["run_dir"].as_str().unwrap())
                    .join("checkpoint/state.json")
                    .exists()
            })
    };
    while !checkpointed(&out) {
        assert!(Instant::now() < deadline, "the runs never checkpointed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signals our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let stopped = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&stopped.stderr).to_string();
    let rows_now = rows(&out);
    if stopped.status.code() == Some(75) {
        assert!(log.contains("SIGTERM"), "{log}");
        for r in rows_now.iter().filter(|r| r["status"] != "done") {
            assert_eq!(r["status"], "pending", "{r}");
            assert!(
                r["executor"]["interrupted"]
                    .as_str()
                    .unwrap()
                    .starts_with("SIGTERM after step"),
                "{r}"
            );
            let run = out.join(r["run_dir"].as_str().unwrap());
            let note = json(&run.join("interrupted.json"));
            let state = json(&run.join("checkpoint/state.json"));
            assert_eq!(
                note["step"], state["step"],
                "no training lost beyond the step"
            );
        }
        assert!(
            rows_now.iter().any(|r| r["status"] == "pending"),
            "{rows_now:?}"
        );
    } else {
        // The runs were faster than the signal: nothing to resume, but nothing lost either.
        assert!(stopped.status.success(), "{log}");
    }
    ok(sweep(&file, &out).args(["-j", "2"]).output().unwrap());
    for (r, reference_row) in rows(&out).iter().zip(rows(&reference)) {
        assert_eq!(r["status"], "done", "{r}");
        let run = out.join(r["run_dir"].as_str().unwrap());
        assert!(!run.join("interrupted.json").exists());
        let other = reference.join(reference_row["run_dir"].as_str().unwrap());
        assert!(
            adapter(&run) == adapter(&other),
            "{}: adapter differs",
            r["label"]
        );
        assert_eq!(
            read(&run.join("metrics.csv")),
            read(&other.join("metrics.csv"))
        );
    }
    assert_eq!(
        stopped.status.code(),
        Some(75),
        "the signal did not land:\n{log}"
    );
}

#[test]
fn a_full_disk_marks_the_run_failed_with_the_reason_and_the_manifest_stays_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let file = sweep_file(tmp.path(), 1, 24, ADALORA);
    let out = tmp.path().join("sw");
    // Files above 16 KiB fail with EFBIG (SIGXFSZ ignored, as on a full disk: write errors);
    // the manifest is smaller, the checkpoint is not.
    let limited = Command::new("bash")
        .args(["-c", "ulimit -f 16; trap '' XFSZ; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_adalora"))
        .args([
            "sweep",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .env("OPENBLAS_NUM_THREADS", "1")
        .env(
            "ADALORA_CACHE",
            std::path::absolute(root().join(".cache")).unwrap(),
        )
        .output()
        .unwrap();
    assert_ne!(limited.status.code(), Some(101), "{}", text(&limited));
    let row = &rows(&out)[0];
    assert_eq!(row["status"], "failed", "{row}");
    assert!(
        row["error"].as_str().unwrap().contains("File too large"),
        "{row}"
    );
    ok(sweep(&file, &out).arg("--retry-failed").output().unwrap());
    assert_eq!(rows(&out)[0]["status"], "done");
    assert!(out.join("manifest.json.bak").exists());
}
