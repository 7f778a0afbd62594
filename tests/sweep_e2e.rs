//! End-to-end test of `adalora sweep` on a tiny grid (4 runs of the default task with the real
//! all-MiniLM-L6-v2, a few steps each, plus one run with bad data): kill -9 of the sweep and
//! its children mid-way, resume, and check that no run is lost or repeated; failed runs are
//! recorded and `--retry-failed` reruns only them; the report and figures are written.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SWEEP: &str = r#"
name = "tiny"
[set]
task = "default"
"train.max_train_examples" = 96
"train.max_eval_examples" = 32
"train.batch_size" = 8
"train.max_seq_len" = 32
"train.max_steps" = 12
"train.eval_every" = 1
"train.log_every" = 2
"target.modules" = "query,value"
"lora.r" = 2
"adalora.init_r" = 3
"adalora.target_r" = 2
"adalora.tinit" = 2
"adalora.tfinal" = 4
"adalora.delta_t" = 2
[sweep]
method = ["lora", "adalora"]
seed = [1, 2]
[[include]]
method = "lora"
task = "csv:missing.csv"
"#;

mod common;
use common::*;

#[test]
fn killed_sweep_resumes_without_losing_or_repeating_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sweep_dir = dir.join("sw");
    std::fs::write(dir.join("tiny.toml"), SWEEP).unwrap();

    // Dry run: the grid with step counts and an estimate; nothing is created. Without a
    // benchmark the estimate says so.
    let out = run_in(dir, &["sweep", "tiny.toml", "--out", "sw", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan = stdout(&out);
    assert!(
        plan.contains("5 runs") && plan.contains("estimated time") && plan.contains("no benchmark"),
        "{plan}"
    );
    assert!(!dir.join("sw").exists());
    // With a benchmark: LoRA's 8 × 32 step of 2 s × 12 steps; AdaLoRA has no row here, so its
    // runs fall back to a labelled guess.
    std::fs::write(
        dir.join("bench.csv"),
        "workload,method,variant,batch,seq,unit,median,min,max,n\n\
         train_step,full,,8,32,s,5.0,5,5,1\n\
         train_step,lora,,8,32,s,2.0,2,2,1\n",
    )
    .unwrap();
    let args = ["sweep", "tiny.toml", "--out", "sw", "--dry-run"];
    let plan = ok_stdout(run_in(
        dir,
        &[&args[..], &["--bench-csv", "bench.csv"]].concat(),
    ));
    let lora_row = plan
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("lora-seed1"))
        .unwrap_or_default();
    assert!(
        lora_row.split_whitespace().collect::<Vec<_>>()[2..5] == ["12", "24", "[b1]"],
        "{plan}"
    );
    assert!(
        plan.contains("[b1] bench.csv line 3: train_step lora 8x32"),
        "{plan}"
    );
    assert!(
        plan.contains("[r] no benchmark row of the run's method"),
        "{plan}"
    );
    fails_with(
        run_in(
            dir,
            &[&args[..], &["--bench-csv", "missing-bench.csv"]].concat(),
        ),
        "missing-bench.csv",
    );

    // Start with two parallel runs and kill -9 the sweep and its children once one run has
    // finished and another is part-way with a checkpoint.
    let mut sweep = adalora()
        .current_dir(dir)
        .args(["sweep", "tiny.toml", "--out", "sw", "-j", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let interrupted = loop {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "sweep made no progress"
        );
        assert!(
            sweep.try_wait().unwrap().is_none(),
            "the sweep finished before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(50));
        let Ok(text) = std::fs::read_to_string(dir.join("sw/manifest.json")) else {
            continue;
        };
        let Ok(m) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let rows = m["rows"].as_array().unwrap().clone();
        let done = rows.iter().filter(|r| r["status"] == "done").count();
        let midway: Vec<_> = rows
            .iter()
            .filter(|r| r["status"] == "running")
            .filter(|r| {
                run_dir(&sweep_dir, r)
                    .join("checkpoint/state.json")
                    .exists()
            })
            .filter(|r| !run_dir(&sweep_dir, r).join("summary.json").exists())
            .cloned()
            .collect();
        if done >= 1 && !midway.is_empty() {
            // The sweep first, so it cannot record its children's deaths; then the children.
            Command::new("kill")
                .args(["-9", &sweep.id().to_string()])
                .status()
                .unwrap();
            sweep.wait().unwrap();
            for r in rows.iter().filter(|r| r["status"] == "running") {
                let pid = r["claim"]["pid"].as_u64().unwrap().to_string();
                let _ = Command::new("kill").args(["-9", &pid]).status();
            }
            break midway;
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = rows(&sweep_dir);
    let finished_before: Vec<(usize, Vec<u8>)> = before
        .iter()
        .filter(|r| r["status"] == "done")
        .map(|r| {
            let summary = std::fs::read(run_dir(&sweep_dir, r).join("summary.json")).unwrap();
            (r["index"].as_u64().unwrap() as usize, summary)
        })
        .collect();

    // A different grid is refused; nothing changes.
    std::fs::write(
        dir.join("other.toml"),
        SWEEP.replace("seed = [1, 2]", "seed = [7]"),
    )
    .unwrap();
    let out = run_in(dir, &["sweep", "other.toml", "--out", "sw"]);
    assert!(
        !out.status.success() && text(&out).contains("different grid"),
        "{}",
        text(&out)
    );
    assert_eq!(rows(&sweep_dir), before);

    // Resume: the finished runs are skipped, the interrupted ones continue from their
    // checkpoints, the bad run is recorded as failed and the command says so.
    let out = run_in(dir, &["sweep", "tiny.toml", "--out", "sw", "-j", "2"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("--retry-failed"), "{}", text(&out));
    let after = rows(&sweep_dir);
    assert_eq!(after.len(), 5);
    for r in &after[..4] {
        assert_eq!(r["status"], "done", "{r}");
        // Every logged step exactly once: nothing lost or repeated across the kill.
        let steps = train_steps(&run_dir(&sweep_dir, r));
        assert_eq!(steps, (1..=6).map(|s| 2 * s).collect::<Vec<_>>(), "{r}");
    }
    for (index, summary) in &finished_before {
        let r = &after[*index];
        assert_eq!(r["attempts"], 1, "finished run #{index} was run again");
        assert_eq!(
            &std::fs::read(run_dir(&sweep_dir, r).join("summary.json")).unwrap(),
            summary
        );
    }
    for r in &interrupted {
        let i = r["index"].as_u64().unwrap() as usize;
        assert_eq!(after[i]["attempts"], 2, "{}", after[i]);
        let log =
            std::fs::read_to_string(run_dir(&sweep_dir, &after[i]).join("sweep.log")).unwrap();
        assert!(
            log.contains("resuming"),
            "run #{i} restarted instead of resuming:\n{log}"
        );
    }
    let bad = &after[4];
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["attempts"], 1);
    assert!(
        bad["error"].as_str().unwrap().contains("missing.csv"),
        "{bad}"
    );

    // With finished LoRA runs, the dry run also calibrates the benchmark's estimate by what
    // they took (every run is done or failed, so nothing is left to estimate: 0 min).
    let plan = ok_stdout(run_in(
        dir,
        &[&args[..], &["--bench-csv", "bench.csv"]].concat(),
    ));
    assert!(
        plan.contains("calibrated by this sweep's 2 finished run(s)"),
        "{plan}"
    );

    // The report and the standard figures.
    let report = std::fs::read_to_string(dir.join("sw/report.md")).unwrap();
    for needle in [
        "LoRA r=2",
        "AdaLoRA 3→2",
        "equal final rank",
        "Rank allocation (AdaLoRA)",
        "Built and run by: ",
    ] {
        assert!(
            report.contains(needle),
            "report lacks {needle:?}:\n{report}"
        );
    }
    let csv = std::fs::read_to_string(dir.join("sw/report.csv")).unwrap();
    // Two cells and the one AdaLoRA − LoRA comparison.
    assert_eq!(csv.lines().count(), 4, "{csv}");
    for fig in [
        "lora_vs_adalora",
        "curves_rotten_tomatoes_dev",
        "rank_heatmap_AdaLoRA_3_2_rotten_tomatoes",
    ] {
        for ext in ["png", "svg"] {
            let p = dir.join(format!("sw/figures/{fig}.{ext}"));
            let listing: Vec<_> = std::fs::read_dir(dir.join("sw/figures"))
                .map(|d| d.map(|e| e.unwrap().file_name()).collect())
                .unwrap_or_default();
            assert!(p.exists(), "{} missing; figures: {listing:?}", p.display());
        }
    }

    // --retry-failed reruns only the failed run.
    let out = run_in(
        dir,
        &["sweep", "tiny.toml", "--out", "sw", "--retry-failed"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let retried = rows(&sweep_dir);
    assert_eq!(retried[4]["attempts"], 2);
    for (a, b) in retried[..4].iter().zip(&after[..4]) {
        assert_eq!(a["attempts"], b["attempts"]);
    }
}
