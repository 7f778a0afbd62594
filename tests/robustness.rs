//! Reliability of the `adalora` binary, on the tiny BERT fixture (`fixtures/model/tiny-bert`,
//! 2 layers, hidden 48, 512-token vocabulary) so every run takes well under a second: kill -9
//! at random moments (some inside checkpoint writes) and SIGTERM/SIGINT/SIGUSR1 (stop at a
//! step, status 75) then `--resume` equal an uninterrupted run; a full disk stops the run
//! naming the file and keeps the last checkpoint; a second process on a run folder refuses;
//! NaN stops with the step and resumes; the best checkpoint reproduces its metrics; a run
//! whose model moved says what to pass.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// AdaLoRA on 64 examples of the default task with the tiny model; a checkpoint at every
/// evaluation.
fn tiny_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let model = tiny_model();
    let mut args: Vec<String> = [
        "train",
        "--out",
        out.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--task",
        "default",
        "--max-train-examples",
        "64",
        "--max-eval-examples",
        "32",
        "--batch-size",
        "8",
        "--max-seq-len",
        "32",
        "--quiet",
        "--method",
        "adalora",
        "--lr",
        "1e-2",
        "--init-r",
        "4",
        "--target-r",
        "2",
        "--target-modules",
        "query,value,intermediate",
        "--set",
        "train.log_every=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // A flag given in `extra` replaces the default (clap refuses repeated flags).
    for flag in extra
        .iter()
        .filter(|a| a.starts_with("--") && **a != "--set")
    {
        if let Some(at) = args.iter().position(|a| a == flag) {
            args.drain(at..at + 2);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The timing-sensitive tests run one at a time (kill points are fractions of a run's time).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn train(out: &Path, extra: &[&str]) -> Output {
    adalora().args(tiny_args(out, extra)).output().unwrap()
}

fn resume(out: &Path) -> Output {
    run(&[
        "train",
        "--out",
        out.to_str().unwrap(),
        "--resume",
        "--quiet",
    ])
}

const SCHEDULE: &[&str] = &[
    "--max-steps",
    "24",
    "--eval-every",
    "1",
    "--tinit",
    "2",
    "--tfinal",
    "6",
    "--delta-t",
    "3",
];

/// The outputs that must not depend on how often the run was interrupted.
fn assert_same_run(a: &Path, b: &Path) {
    let adapter = |p: &Path| std::fs::read(p.join("adapter/adapter_model.safetensors")).unwrap();
    assert!(adapter(a) == adapter(b), "adapter bytes differ");
    for f in [
        "metrics.csv",
        "rank_pattern.json",
        "rank_pattern_history.jsonl",
        "predictions_dev.csv",
    ] {
        // The rank files are AdaLoRA's: a LoRA run has neither, in both folders.
        let (fa, fb) = (a.join(f), b.join(f));
        assert_eq!(fa.exists(), fb.exists(), "{f} in one run only");
        if fa.exists() || f.ends_with(".csv") {
            assert_eq!(read(&fa), read(&fb), "{f} differs");
        }
    }
    let (sa, sb) = (json(&a.join("summary.json")), json(&b.join("summary.json")));
    for key in [
        "final_metrics",
        "best_metrics",
        "best_step",
        "final_total_rank",
    ] {
        assert_eq!(sa[key], sb[key], "summary.json {key} differs");
    }
}

/// A small deterministic generator (the kill points must be reproducible).
struct Lcg(u64);

impl Lcg {
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The folders a run builds before swapping them in (checkpoint/, best/, adapter/).
const BUILDING: [&str; 3] = [".checkpoint.tmp", ".best.tmp", ".adapter.tmp"];

/// Start the run in `out`: resumed if it has begun, else fresh with `schedule`.
fn start(out: &Path, schedule: &[&str]) -> std::process::Child {
    let mut cmd = adalora();
    if out.join("config.toml").exists() {
        cmd.args([
            "train",
            "--out",
            out.to_str().unwrap(),
            "--resume",
            "--quiet",
        ]);
    } else {
        cmd.args(tiny_args(out, schedule)).arg("--overwrite");
    }
    cmd.stderr(std::process::Stdio::null()).spawn().unwrap()
}

/// Panics once `deadline` has passed: a run that keeps failing early must not hang the suite.
fn before(deadline: Instant, what: &str) {
    assert!(
        Instant::now() < deadline,
        "{what}: still not done at the deadline"
    );
}

#[test]
fn kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run() {
    use std::os::unix::process::ExitStatusExt;
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let started = Instant::now();
    ok(train(&full, SCHEDULE));
    let full_time = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs_f64(120.0 + 60.0 * full_time);

    let killed = dir.path().join("killed");
    let mut rng = Lcg(0x5eed);
    let (mut kills, mut in_checkpoint, mut series) = (0, 0, 0);
    const KILLS: usize = 12;
    const IN_CHECKPOINT: usize = 3;
    while kills < KILLS || in_checkpoint < IN_CHECKPOINT {
        before(deadline, "kill -9 series");
        if killed.join("summary.json").exists() {
            // A series of kills ended in a finished run: it must equal the uninterrupted one.
            assert_same_run(&full, &killed);
            std::fs::remove_dir_all(&killed).unwrap();
            series += 1;
        }
        let mut child = start(&killed, SCHEDULE);
        if kills < KILLS {
            // Anywhere in a run, startup included (resumed runs are shorter than a full one).
            std::thread::sleep(Duration::from_secs_f64(0.5 * full_time * rng.unit()));
        } else {
            // Chance did not land enough kills inside checkpoint writes: wait for one.
            while child.try_wait().unwrap().is_none()
                && !BUILDING.iter().any(|d| killed.join(d).exists())
            {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        if child.try_wait().unwrap().is_none() {
            let building = BUILDING.iter().any(|d| killed.join(d).exists());
            child.kill().unwrap(); // SIGKILL
            kills += 1;
            in_checkpoint += usize::from(building);
        }
        let status = child.wait().unwrap();
        assert!(
            status.success() || status.signal() == Some(9),
            "a run neither finished nor was killed: {status} (a failure or a panic)"
        );
    }
    if !killed.join("summary.json").exists() {
        ok(resume(&killed));
    }
    assert_same_run(&full, &killed);
    assert!(
        in_checkpoint >= IN_CHECKPOINT,
        "{in_checkpoint} kills inside checkpoint writes"
    );
    eprintln!(
        "kill points tried: {kills} in {} series ({in_checkpoint} while a checkpoint or adapter \
         folder was being written)",
        series + 1
    );
}

/// The step of a run's checkpoint.
fn checkpoint_step(run: &Path) -> u64 {
    json(&run.join("checkpoint/state.json"))["step"]
        .as_u64()
        .expect("state.json has a step")
}

/// SIGTERM, SIGINT and SIGUSR1 at random moments, several per run: each stops the run after its
/// current step with a checkpoint of exactly that step, `interrupted.json` and exit status 75;
/// `--resume` then ends in the same files as an uninterrupted run, bit for bit.
fn signals_at_random_moments_then_resume_equals_an_uninterrupted_run(method: &[&str]) {
    use std::os::unix::process::ExitStatusExt;
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let schedule: Vec<&str> = SCHEDULE.iter().chain(method).copied().collect();
    let full = dir.path().join("full");
    let started = Instant::now();
    ok(train(&full, &schedule));
    let full_time = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs_f64(120.0 + 60.0 * full_time);

    let stopped = dir.path().join("stopped");
    let mut rng = Lcg(0x516e);
    let signals = [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1];
    let (mut sent, mut landed) = (0, 0);
    while landed < 6 || !stopped.join("summary.json").exists() {
        before(deadline, "signal series");
        if stopped.join("summary.json").exists() {
            assert_same_run(&full, &stopped);
            std::fs::remove_dir_all(&stopped).unwrap();
        }
        let mut child = start(&stopped, &schedule);
        // After startup (the handlers are installed first thing), anywhere in the run.
        std::thread::sleep(Duration::from_secs_f64(
            full_time * (0.2 + 0.5 * rng.unit()),
        ));
        if child.try_wait().unwrap().is_none() {
            let signal = signals[sent % signals.len()];
            // SAFETY: signals our own child process.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            sent += 1;
        }
        let status = child.wait().unwrap();
        match status.code() {
            Some(0) => {}
            Some(75) => {
                landed += 1;
                let note = json(&stopped.join("interrupted.json"));
                assert_eq!(
                    note["step"].as_u64(),
                    Some(checkpoint_step(&stopped)),
                    "{note}"
                );
                assert!(
                    ["SIGTERM", "SIGINT", "SIGUSR1"].contains(&note["signal"].as_str().unwrap()),
                    "{note}"
                );
            }
            _ => panic!(
                "a signalled run must finish or stop with status 75: {status} (signal {:?})",
                status.signal()
            ),
        }
    }
    assert!(
        !stopped.join("interrupted.json").exists(),
        "a finished run is not interrupted"
    );
    assert_same_run(&full, &stopped);
    eprintln!("signals sent: {sent}, {landed} stopped a run at a step");
}

#[test]
fn signals_stop_an_adalora_run_at_a_step_and_resume_bit_for_bit() {
    signals_at_random_moments_then_resume_equals_an_uninterrupted_run(&[]);
}

#[test]
fn a_full_disk_stops_the_run_naming_the_file_and_keeps_the_checkpoint() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    ok(train(
        &out,
        &[SCHEDULE, &["--stop-after-steps", "4"]].concat(),
    ));
    let checkpoint = |p: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(p.join("checkpoint"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|f| (f.display().to_string(), std::fs::read(&f).unwrap()))
            .collect();
        files.sort();
        files
    };
    let before = checkpoint(&out);
    // Files above 16 KiB fail with EFBIG (SIGXFSZ ignored, as on a full disk: write errors).
    let limited = Command::new("bash")
        .args(["-c", "ulimit -f 16; trap '' XFSZ; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_adalora"))
        .args([
            "train",
            "--out",
            out.to_str().unwrap(),
            "--resume",
            "--quiet",
        ])
        .env("OPENBLAS_NUM_THREADS", "1")
        .output()
        .unwrap();
    let err = fails_with(limited, "File too large");
    assert!(
        err.contains(out.to_str().unwrap()),
        "the message names the file:\n{err}"
    );
    assert_eq!(
        checkpoint(&out),
        before,
        "the last good checkpoint is intact"
    );
    // best/ may have been replaced by a better evaluation, but only by a complete one.
    ok(run(&["eval", "--run", out.to_str().unwrap(), "--best"]));
    assert!(!out.join(".checkpoint.tmp").exists() && !out.join(".best.tmp").exists());
    // With space again, the run continues and matches an uninterrupted one.
    ok(resume(&out));
    let full = dir.path().join("full");
    ok(train(&full, SCHEDULE));
    assert_same_run(&full, &out);
}

#[test]
fn a_second_process_on_the_same_run_refuses() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let mut first = adalora()
        .args(tiny_args(
            &out,
            &["--max-steps", "400", "--eval-every", "100"],
        ))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.join("metrics.csv").exists() {
        assert!(Instant::now() < deadline, "the first run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let config = read(&out.join("config.toml"));
    for second in [
        train(&out, &["--max-steps", "4", "--overwrite"]),
        resume(&out),
    ] {
        fails_with(second, "in use by another adalora process");
    }
    assert_eq!(
        read(&out.join("config.toml")),
        config,
        "nothing was touched"
    );
    assert!(
        first.wait().unwrap().success(),
        "the first run finishes undisturbed"
    );
    assert!(out.join("summary.json").is_file());
}

#[test]
fn overflow_stops_with_the_step_keeps_the_checkpoint_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    // A regression task with one absurd score: its squared error overflows f32 to inf.
    let (train_csv, dev_csv) = (dir.path().join("train.csv"), dir.path().join("dev.csv"));
    let rows = |n: usize, bad: Option<usize>| -> String {
        let mut text = String::from("text,score\n");
        for i in 0..n {
            let score = if Some(i) == bad {
                "1e30".to_string()
            } else {
                format!("{}", i % 5)
            };
            text.push_str(&format!(
                "sentence number {i} is {},{score}\n",
                ["good", "bad", "fine"][i % 3]
            ));
        }
        text
    };
    std::fs::write(&train_csv, rows(64, Some(40))).unwrap();
    std::fs::write(&dev_csv, rows(16, None)).unwrap();
    let out = dir.path().join("r");
    let task = [
        "--task".to_string(),
        "custom".into(),
        "--set".into(),
        format!("custom.train={:?}", train_csv.display().to_string()),
        "--set".into(),
        format!("custom.dev={:?}", dev_csv.display().to_string()),
        "--set".into(),
        "custom.score=\"score\"".into(),
        "--method".into(),
        "lora".into(),
        "--max-steps".into(),
        "8".into(),
        "--eval-every".into(),
        "1".into(),
    ];
    let task: Vec<&str> = task.iter().map(String::as_str).collect();
    let args = tiny_args(&out, &task);
    let err = fails_with(adalora().args(&args).output().unwrap(), "at step");
    assert!(
        err.contains("last good checkpoint") && err.contains("--resume"),
        "{err}"
    );
    let step = json(&out.join("checkpoint/state.json"))["step"]
        .as_u64()
        .unwrap();
    assert!(err.contains(&format!("at step {}", step + 1)), "{err}");
    let metrics = read(&out.join("metrics.csv"));
    // Deterministic: resuming as is stops at the same step again, losing nothing.
    let again = fails_with(resume(&out), &format!("at step {}", step + 1));
    assert!(again.contains(&format!("at step {step}")), "{again}");
    assert_eq!(read(&out.join("metrics.csv")), metrics);
    // With the row fixed, --resume continues from the checkpoint to the end.
    std::fs::write(&train_csv, rows(64, None)).unwrap();
    let done = String::from_utf8(ok(resume(&out)).stderr).unwrap();
    assert!(done.contains(&format!("at step {step}")), "{done}");
    assert_eq!(json(&out.join("summary.json"))["total_steps"], 8);
}

#[test]
fn the_best_checkpoint_reproduces_its_metrics_and_dev_loss_includes_the_orth_term() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    // Masking every 5 steps from step 10 (the first that prunes: 15); the evaluation at step 17
    // sees masked λ that moved since, at a learning rate high enough for them to matter.
    let schedule = [
        "--lr",
        "5e-2",
        "--max-steps",
        "40",
        "--eval-every",
        "17",
        "--tinit",
        "10",
        "--tfinal",
        "8",
        "--delta-t",
        "5",
        "--stop-after-steps",
        "17",
    ];
    ok(train(&out, &schedule));
    let state = json(&out.join("checkpoint/state.json"));
    assert_eq!(state["best_step"], 17);
    let best = &state["best_metrics"];
    // The test only means something if masked λ did move: more triplets act than the mask keeps.
    let budget = json(&out.join("rank_pattern.json"))["total_rank"]
        .as_u64()
        .unwrap();
    let config = json(&out.join("best/adapter_config.json"));
    let active = kept_ranks(&config);
    assert!(
        active as u64 > budget,
        "no masked λ moved ({active} active, budget {budget})"
    );

    let report = ok(run(&["eval", "--run", out.to_str().unwrap(), "--best"]));
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let dev = &report["splits"]["dev"];
    for (name, value) in best.as_object().unwrap() {
        let (want, got) = (value.as_f64().unwrap(), dev[name].as_f64().unwrap());
        if name == "task_loss" {
            assert!(
                (want - got).abs() <= 1e-6 * want.abs().max(1.0),
                "task_loss {got} ≠ {want}"
            );
        } else {
            assert_eq!(got, want, "{name}");
        }
    }
    // Dev rows of metrics.csv: loss = task_loss + γ·orth_reg (γ = 0.5), the terms named.
    let text = read(&out.join("metrics.csv"));
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    let col = |name: &str| rows[0].iter().position(|h| *h == name).unwrap();
    let dev_row = rows.iter().find(|r| r[col("split")] == "dev").unwrap();
    let value = |name: &str| dev_row[col(name)].parse::<f64>().unwrap();
    assert!(value("orth_reg") > 0.0);
    let expected = value("task_loss") + 0.5 * value("orth_reg");
    assert!((value("loss") - expected).abs() < 2e-6, "{dev_row:?}");
    assert!(dev["loss"].as_f64().unwrap() > dev["task_loss"].as_f64().unwrap());
}

#[test]
fn a_run_finds_its_model_from_any_directory_and_says_what_to_pass_when_it_moved() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("models/tiny");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(tiny_model().join(f), model.join(f)).unwrap();
    }
    // Trained from `dir` with a relative --model.
    let mut args = tiny_args(Path::new("run"), &["--max-steps", "2", "--method", "lora"]);
    let at = args.iter().position(|a| a == "--model").unwrap();
    args[at + 1] = "models/tiny".into();
    ok(adalora()
        .args(&args)
        .current_dir(dir.path())
        .output()
        .unwrap());
    let run_dir = dir.path().join("run");
    let r = run_dir.to_str().unwrap();
    ok(run(&["eval", "--run", r])); // from another directory

    let moved = dir.path().join("elsewhere");
    std::fs::rename(&model, &moved).unwrap();
    let err = fails_with(run(&["eval", "--run", r]), "pass --model DIR");
    assert!(err.contains("models/tiny"), "{err}");
    for cmd in [
        vec!["eval", "--run", r, "--model", moved.to_str().unwrap()],
        vec![
            "predict",
            "--run",
            r,
            "--model",
            moved.to_str().unwrap(),
            "--output",
        ],
        vec![
            "merge",
            "--run",
            r,
            "--model",
            moved.to_str().unwrap(),
            "--out",
        ],
    ] {
        let mut cmd = cmd;
        let target = dir.path().join(format!("out-{}", cmd[0]));
        if cmd[0] != "eval" {
            cmd.push(target.to_str().unwrap());
        }
        ok(run(&cmd));
    }
    // Another model is refused by fingerprint.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(moved.join(f), other.join(f)).unwrap();
    }
    let config = read(&moved.join("config.json")).replace(
        "\"hidden_dropout_prob\": 0.1",
        "\"hidden_dropout_prob\": 0.2",
    );
    std::fs::write(other.join("config.json"), config).unwrap();
    fails_with(
        run(&["eval", "--run", r, "--model", other.to_str().unwrap()]),
        "not the base model this run was trained from",
    );
}

#[test]
fn settings_out_of_range_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let cases: &[(&[&str], &str)] = &[
        (&["--max-seq-len", "100"], "train.max_seq_len = 100"),
        (
            &["--set", "train.classifier_dropout=1.5"],
            "train.classifier_dropout = 1.5",
        ),
        (&["--set", "train.lr=-1"], "train.lr = -1"),
        (&["--batch-size", "0"], "train.batch_size = 0"),
        (&["--set", "adalora.beta1=1.0"], "beta1"),
        (&["--set", "adalora.dropout=1"], "adalora.dropout = 1"),
        (
            &["--set", "adalora.orth_reg_weight=-0.5"],
            "orth_reg_weight",
        ),
        (&["--delta-t", "0"], "adalora.delta_t = 0"),
        (
            &["--set", "train.weight_decay=nan"],
            "train.weight_decay = NaN",
        ),
        (&["--set", "train.eval_every=0"], "train.eval_every = 0"),
    ];
    for (extra, needle) in cases {
        let err = fails_with(train(&out, extra), needle);
        assert!(
            err.contains("invalid setting") || err.contains("invalid"),
            "{err}"
        );
    }
    assert!(!out.join("checkpoint").exists());
}

/// `train --method lora --rank-pattern FILE` on the tiny model: every targeted matrix gets the
/// rank the file gives it (0 = not adapted), and a malformed file or one made for another
/// model is refused naming the file.
#[test]
fn lora_trains_with_the_per_module_ranks_of_a_rank_pattern_file() {
    let tmp = tmp();
    let pattern = tmp.path().join("rank_pattern.json");
    let ranks = [
        ("encoder.layer.0.attention.self.query", 3),
        ("encoder.layer.0.attention.self.value", 0),
        ("encoder.layer.1.attention.self.query", 1),
        ("encoder.layer.1.attention.self.value", 2),
    ];
    let write_pattern = |modules: &[(&str, serde_json::Value)]| {
        let modules: Vec<_> = modules
            .iter()
            .map(|(path, rank)| serde_json::json!({ "path": path, "rank": rank }))
            .collect();
        std::fs::write(
            &pattern,
            serde_json::json!({ "modules": modules }).to_string(),
        )
        .unwrap();
    };
    let lora = |out: &Path| {
        train(
            out,
            &[
                "--method",
                "lora",
                "--target-modules",
                "query,value",
                "--max-steps",
                "3",
                "--rank-pattern",
                pattern.to_str().unwrap(),
            ],
        )
    };
    let as_json: Vec<(&str, serde_json::Value)> = ranks
        .iter()
        .map(|(p, r)| (*p, serde_json::json!(r)))
        .collect();
    write_pattern(&as_json);
    let out = tmp.path().join("run");
    ok(lora(&out));
    let bytes = std::fs::read(out.join("adapter/adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (path, rank) in ranks {
        let key = format!("{path}.lora_A.weight");
        let found = st.names().into_iter().find(|n| n.ends_with(&key));
        match found {
            None => assert_eq!(rank, 0, "{path} has no LoRA A; names: {:?}", st.names()),
            Some(name) => {
                assert!(rank > 0, "{path} was adapted although its rank is 0");
                assert_eq!(st.tensor(name).unwrap().shape()[0], rank, "{name}");
            }
        }
    }
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["final_total_rank"], 6, "{summary}");

    // Malformed: a rank that is not a count.
    let mut bad = as_json.clone();
    bad[1].1 = serde_json::json!("two");
    write_pattern(&bad);
    let err = fails_with(lora(&tmp.path().join("bad")), "rank_pattern.json");
    assert!(err.contains("modules[1]"), "{err}");
    // Mismatched: a pattern of a deeper model names a layer the tiny model lacks.
    let mut other_model = as_json.clone();
    other_model.push(("encoder.layer.5.attention.self.query", serde_json::json!(2)));
    write_pattern(&other_model);
    let err = fails_with(lora(&tmp.path().join("mismatch")), "rank_pattern.json");
    assert!(
        err.contains("encoder.layer.5.attention.self.query"),
        "{err}"
    );
    assert!(!tmp.path().join("mismatch/adapter").exists());
}

#[test]
fn labels_with_commas_quotes_newlines_and_accents_round_trip_through_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let labels = ["pos, really", "say \"no\"", "two\nlines", "négatif ✓"];
    let mut w = csv::Writer::from_path(dir.path().join("odd.csv")).unwrap();
    w.write_record(["text", "label"]).unwrap();
    for i in 0..48 {
        let label = labels[i % labels.len()];
        w.write_record([format!("sentence {i} about {}", i % 7).as_str(), label])
            .unwrap();
    }
    w.flush().unwrap();
    let data = dir.path().join("odd.csv");
    let out = dir.path().join("r");
    let task = format!("csv:{}", data.display());
    ok(train(
        &out,
        &[
            "--task",
            &task,
            "--max-steps",
            "3",
            "--method",
            "lora",
            "--r",
            "2",
        ],
    ));
    let predictions = dir.path().join("p.csv");
    ok(run(&[
        "predict",
        "--run",
        out.to_str().unwrap(),
        "--output",
        predictions.to_str().unwrap(),
    ]));
    for file in [predictions, out.join("predictions_dev.csv")] {
        let mut r = csv::Reader::from_path(&file).unwrap();
        let header = r.headers().unwrap().clone();
        assert_eq!(
            header.iter().take(2).collect::<Vec<_>>(),
            ["index", "prediction"]
        );
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert!(!rows.is_empty(), "{}", file.display());
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.len(), header.len(), "{} row {i}", file.display());
            assert_eq!(row[0].parse::<usize>().unwrap(), i);
            assert!(
                labels.contains(&&row[1]),
                "{} row {i}: {:?}",
                file.display(),
                &row[1]
            );
        }
    }
}
