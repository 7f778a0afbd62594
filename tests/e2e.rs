//! End-to-end tests of the `adalora` binary on a tiny subset of the default task with the
//! real all-MiniLM-L6-v2 (fetched by `scripts/fetch-assets.sh`): training reduces the loss,
//! AdaLoRA ends at exactly the target total rank, resume equals an uninterrupted run, saved
//! adapters reload to identical predictions, merged equals unmerged, QLoRA and QAdaLoRA train
//! on a 4-bit base and merge into a full-precision model, and bad input fails clearly without
//! losing what was written.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::*;

/// A small, fast run: 96 training and 48 dev examples of the default task, short sequences.
const SMALL: &[&str] = &[
    "--task",
    "default",
    "--max-train-examples",
    "96",
    "--max-eval-examples",
    "48",
    "--batch-size",
    "16",
    "--max-seq-len",
    "48",
    "--quiet",
    "--set",
    "train.log_every=2",
];

fn train(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--out", out.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    common::run(&args)
}

const ADALORA: &[&str] = &[
    "--method",
    "adalora",
    "--init-r",
    "4",
    "--target-r",
    "2",
    "--target-modules",
    "query,value",
    "--tinit",
    "2",
    "--tfinal",
    "4",
    "--delta-t",
    "2",
    "--max-steps",
    "12",
    "--eval-every",
    "6",
];

fn logits(path: &Path) -> Vec<Vec<f64>> {
    read_csv(path)[1..]
        .iter()
        .map(|r| r[2..].iter().map(|v| v.parse().unwrap()).collect())
        .collect()
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .fold(0.0, |m, (x, y)| f64::max(m, (x - y).abs()))
}

/// The least drop of the mean training loss, first three logged steps to last three, that the
/// LoRA run below must show. Measured on this run (96 examples, 4 epochs, lr 2e-3, 24 steps):
/// 0.050 with its seed (42; 0.693 → 0.644), 0.070 / 0.124 / 0.102 with seeds 1 / 2 / 3. The
/// same run with lr 1e-9 (nothing learnt) moves the two means by 0.001, and all its logged
/// losses lie within 0.006 of each other: batch noise. 0.02 is over 3× that noise and under
/// half the smallest drop measured, so a run that learns passes and one that does not fails.
const MIN_LOSS_DROP: f64 = 0.02;

/// The mean of the last three losses is at least `min_drop` below the mean of the first three.
fn assert_loss_drops_by(losses: &[f64], min_drop: f64) {
    assert!(losses.len() >= 6, "too few logged losses: {losses:?}");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (first, last) = (mean(&losses[..3]), mean(&losses[losses.len() - 3..]));
    assert!(
        first - last >= min_drop,
        "training loss must drop by at least {min_drop}: {first:.4} -> {last:.4} \
         (drop {:.4}) in {losses:?}",
        first - last
    );
}

/// A bad value for a setting: an error (exit status 1; a panic exits with 101) that names the
/// setting's key, the value given and every value it takes.
fn refuses_setting(out: Output, key: &str, value: &str, allowed: &[&str]) {
    let code = out.status.code();
    let err = fails_with(out, value);
    assert_eq!(
        code,
        Some(1),
        "exit status of an error, not a panic:\n{err}"
    );
    assert!(
        err.contains(&format!("`{key}`")),
        "the error must name `{key}`:\n{err}"
    );
    for v in allowed {
        assert!(
            err.contains(&format!("`{v}`")),
            "the error must list `{v}`:\n{err}"
        );
    }
}

#[test]
fn lora_training_reduces_the_loss_and_writes_a_complete_run() {
    let dir = tmp();
    let run = dir.path().join("lora");
    ok(train(
        &run,
        &["--method", "lora", "--epochs", "4", "--lr", "2e-3"],
    ));
    for f in [
        "config.toml",
        "metrics.csv",
        "summary.json",
        "predictions_dev.csv",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        assert!(run.join("adapter").join(f).is_file(), "adapter/{f} missing");
        assert!(run.join("best").join(f).is_file(), "best/{f} missing");
    }
    let rows = read_csv(&run.join("metrics.csv"));
    let header = &rows[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let train_losses: Vec<f64> = rows[1..]
        .iter()
        .filter(|r| r[col("split")] == "train")
        .map(|r| r[col("task_loss")].parse().unwrap())
        .collect();
    assert_loss_drops_by(&train_losses, MIN_LOSS_DROP);
    let evals = rows[1..]
        .iter()
        .filter(|r| r[col("split")] == "dev")
        .count();
    assert_eq!(evals, 4, "one evaluation per epoch");
    let summary = json(&run.join("summary.json"));
    assert_eq!(summary["total_steps"], 24);
    assert!(summary["trainable_params"].as_u64().unwrap() > 0);
}

#[test]
fn adalora_ends_at_exactly_the_target_total_rank() {
    let dir = tmp();
    let run = dir.path().join("ada");
    ok(train(&run, ADALORA));
    // 6 layers x {query, value} = 12 matrices: b(0) = 48, b(T) = 24.
    let summary = json(&run.join("summary.json"));
    assert_eq!(summary["target_total_rank"], 24);
    assert_eq!(summary["final_total_rank"], 24);
    let pattern = json(&run.join("rank_pattern.json"));
    assert_eq!(pattern["total_rank"], 24);
    let ranks: u64 = pattern["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["rank"].as_u64().unwrap())
        .sum();
    assert_eq!(ranks, 24);
    // The PEFT-layout adapter holds exactly the kept triplets.
    let config = json(&run.join("adapter/adapter_config.json"));
    assert_eq!(config["peft_type"], "ADALORA");
    assert_eq!(kept_ranks(&config), 24);
    let bytes = std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let stored: usize = st
        .tensors()
        .iter()
        .filter(|(n, _)| n.ends_with("lora_E"))
        .map(|(_, v)| v.shape()[0])
        .sum();
    assert_eq!(stored, 24);
    // The budget column of metrics.csv follows the schedule down to b(T).
    let rows = read_csv(&run.join("metrics.csv"));
    let b = rows[0].iter().position(|h| h == "budget").unwrap();
    assert_eq!(rows[1][b], "48");
    assert_eq!(rows.last().unwrap()[b], "24");
    // The per-layer rank heatmap (paper Fig. 3) is drawn from rank_pattern.json.
    let png = run.join("ranks.png");
    ok(common::run(&[
        "plot-ranks",
        "--run",
        run.to_str().unwrap(),
        "--output",
        png.to_str().unwrap(),
    ]));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
}

const NF4_DQ: &[&str] = &["--quantize", "nf4", "--double-quant"];

#[test]
fn qlora_and_qadalora_train_on_a_quantized_base_and_merge_to_full_precision() {
    let dir = tmp();
    let run = dir.path().join("qlora");
    let mut args = vec!["--method", "lora", "--r", "4", "--max-steps", "6"];
    args.extend_from_slice(NF4_DQ);
    ok(train(&run, &args));
    let summary = json(&run.join("summary.json"));
    let q = &summary["quantization"];
    assert_eq!(q["config"]["kind"], "nf4");
    let ratio = q["memory_ratio"].as_f64().unwrap();
    assert!(ratio <= 0.30, "NF4 + double quant base is {ratio} x f32");
    let error = q["mean_relative_error"].as_f64().unwrap();
    assert!(error > 0.0 && error < 0.2, "mean relative error {error}");
    assert_eq!(q["modules"].as_array().unwrap().len(), 37);
    let adapter = json(&run.join("adapter/adapter_config.json"));
    assert_eq!(adapter["peft_type"], "LORA");
    assert_eq!(adapter["quantization"]["double_quant"], true);
    // Reloading rebuilds the same quantized base: identical predictions.
    let run_s = run.to_str().unwrap();
    let reloaded = dir.path().join("reloaded.csv");
    let out = reloaded.to_str().unwrap();
    ok(common::run(&["predict", "--run", run_s, "--output", out]));
    let live = logits(&run.join("predictions_dev.csv"));
    let diff = max_diff(&live, &logits(&reloaded));
    assert!(
        diff <= 1e-6,
        "reloaded QLoRA adapter predicts differently: {diff}"
    );
    // merge dequantizes: an f32 HF model predicting like the quantized base + adapter.
    let merged = dir.path().join("merged");
    ok(common::run(&[
        "merge",
        "--run",
        run_s,
        "--out",
        merged.to_str().unwrap(),
    ]));
    let bytes = std::fs::read(merged.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = st
        .tensor("bert.encoder.layer.0.attention.self.query.weight")
        .unwrap();
    assert_eq!(w.dtype(), safetensors::Dtype::F32);
    let input = dir.path().join("input.txt");
    std::fs::write(
        &input,
        "a gorgeous, witty, seductive movie.\nit was fine\tnot great\n",
    )
    .unwrap();
    let inp = input.to_str().unwrap();
    let (quantized_preds, merged_preds) = (dir.path().join("q.csv"), dir.path().join("m.csv"));
    let (q_out, m_out) = (
        quantized_preds.to_str().unwrap(),
        merged_preds.to_str().unwrap(),
    );
    ok(common::run(&[
        "predict", "--run", run_s, "--input", inp, "--output", q_out,
    ]));
    let merged_s = merged.to_str().unwrap();
    ok(common::run(&[
        "predict",
        "--adapter",
        merged_s,
        "--task",
        "default",
        "--input",
        inp,
        "--output",
        m_out,
    ]));
    let diff = max_diff(&logits(&quantized_preds), &logits(&merged_preds));
    assert!(diff <= 1e-4, "merged and quantized logits differ by {diff}");

    // QAdaLoRA with the base's matmul in bf16 (the QLoRA paper's compute dtype; emulated by
    // burn-flex here): trains, and the adapter records the dtype for whoever reloads it.
    let run = dir.path().join("qadalora");
    let mut args = ADALORA.to_vec();
    args.extend_from_slice(NF4_DQ);
    args.extend(["--compute-dtype", "bf16"]);
    ok(train(&run, &args));
    let summary = json(&run.join("summary.json"));
    assert_eq!(summary["final_total_rank"], 24);
    assert_eq!(summary["quantization"]["config"]["kind"], "nf4");
    assert_eq!(summary["quantization"]["config"]["compute_dtype"], "bf16");
    let adapter = json(&run.join("adapter/adapter_config.json"));
    assert_eq!(adapter["quantization"]["compute_dtype"], "bf16");
    let loss = summary["final_metrics"]["dev"]["task_loss"]
        .as_f64()
        .unwrap();
    assert!(loss.is_finite(), "bf16 QAdaLoRA dev loss {loss}");
}

#[test]
fn resume_equals_an_uninterrupted_run() {
    let dir = tmp();
    let full = dir.path().join("full");
    let parts = dir.path().join("parts");
    ok(train(&full, ADALORA));
    let mut first = ADALORA.to_vec();
    first.extend(["--stop-after-steps", "5"]);
    ok(train(&parts, &first));
    assert!(
        !parts.join("summary.json").exists(),
        "a stopped run is not finished"
    );
    let refused = train(&parts, ADALORA);
    fails_with(refused, "unfinished run");
    ok(common::run(&[
        "train",
        "--out",
        parts.to_str().unwrap(),
        "--resume",
        "--quiet",
    ]));
    let a = std::fs::read(full.join("adapter/adapter_model.safetensors")).unwrap();
    let b = std::fs::read(parts.join("adapter/adapter_model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
    let (sa, sb) = (
        json(&full.join("summary.json")),
        json(&parts.join("summary.json")),
    );
    assert_eq!(sa["final_metrics"], sb["final_metrics"]);
    assert_eq!(
        std::fs::read_to_string(full.join("rank_pattern.json")).unwrap(),
        std::fs::read_to_string(parts.join("rank_pattern.json")).unwrap()
    );
    let history =
        |p: &PathBuf| std::fs::read_to_string(p.join("rank_pattern_history.jsonl")).unwrap();
    assert_eq!(
        history(&full),
        history(&parts),
        "rank-pattern history logged once per change"
    );
    let metrics = |p: &PathBuf| read_csv(&p.join("metrics.csv"));
    assert_eq!(
        metrics(&full),
        metrics(&parts),
        "same logged steps and metrics"
    );
}

#[test]
fn saved_adapter_reloads_and_merge_equals_unmerged() {
    let dir = tmp();
    let run = dir.path().join("ada");
    // A high learning rate, so the adapter moves the logits far more than the tolerance.
    ok(train(&run, &[ADALORA, &["--lr", "5e-2"]].concat()));
    let run_s = run.to_str().unwrap();
    let reloaded = dir.path().join("reloaded.csv");
    ok(common::run(&[
        "predict",
        "--run",
        run_s,
        "--output",
        reloaded.to_str().unwrap(),
    ]));
    let live = logits(&run.join("predictions_dev.csv"));
    let diff = max_diff(&live, &logits(&reloaded));
    assert!(
        diff <= 1e-6,
        "reloaded adapter predicts differently: {diff}"
    );

    let merged = dir.path().join("merged");
    ok(common::run(&[
        "merge",
        "--run",
        run_s,
        "--out",
        merged.to_str().unwrap(),
    ]));
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert!(merged.join(f).is_file(), "merged/{f} missing");
    }
    let config = json(&merged.join("config.json"));
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    let input = dir.path().join("input.txt");
    std::fs::write(
        &input,
        "a gorgeous, witty, seductive movie.\nthe plot is nothing but boilerplate cliches .\nit was fine\tnot great\n",
    )
    .unwrap();
    let (adapter_preds, merged_preds) = (dir.path().join("a.csv"), dir.path().join("m.csv"));
    let inp = input.to_str().unwrap();
    ok(common::run(&[
        "predict",
        "--run",
        run_s,
        "--input",
        inp,
        "--output",
        adapter_preds.to_str().unwrap(),
    ]));
    ok(common::run(&[
        "predict",
        "--adapter",
        merged.to_str().unwrap(),
        "--task",
        "default",
        "--input",
        inp,
        "--output",
        merged_preds.to_str().unwrap(),
    ]));
    let diff = max_diff(&logits(&adapter_preds), &logits(&merged_preds));
    assert!(diff <= 1e-4, "merged and unmerged logits differ by {diff}");
    // A merge that dropped the adapter must fail that check: the same head without the
    // adapter (λ = 0) predicts logits far outside the tolerance.
    let dropped = dir.path().join("dropped");
    std::fs::create_dir_all(&dropped).unwrap();
    std::fs::copy(
        run.join("adapter/adapter_config.json"),
        dropped.join("adapter_config.json"),
    )
    .unwrap();
    zero_lambdas(
        &run.join("adapter/adapter_model.safetensors"),
        &dropped.join("adapter_model.safetensors"),
    );
    let dropped_preds = dir.path().join("d.csv");
    ok(common::run(&[
        "predict",
        "--adapter",
        dropped.to_str().unwrap(),
        "--task",
        "default",
        "--input",
        inp,
        "--output",
        dropped_preds.to_str().unwrap(),
    ]));
    let effect = max_diff(&logits(&adapter_preds), &logits(&dropped_preds));
    assert!(
        effect > 100.0 * 1e-4,
        "the adapter barely moves the logits ({effect}); the merge check would not notice it missing"
    );
    // The merged model was evaluated on the whole dev split; compare the run's subset rows.
    let eval = json(&run.join("summary.json"));
    assert!(eval["final_metrics"]["dev"]["accuracy"].as_f64().is_some());
    let reeval = ok(common::run(&["eval", "--run", run_s]));
    let report: serde_json::Value = serde_json::from_slice(&reeval.stdout).unwrap();
    assert_eq!(
        report["splits"]["dev"]["accuracy"],
        eval["final_metrics"]["dev"]["accuracy"]
    );
    // A run trained on a GPU evaluates on a machine without one with --device cpu; without
    // it, a CPU-only build says why it cannot run there.
    let config = run.join("config.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(toml.contains("device = \"cpu\""), "{toml}");
    std::fs::write(
        &config,
        toml.replace("device = \"cpu\"", "device = \"cuda\""),
    )
    .unwrap();
    common::fails_with(common::run(&["eval", "--run", run_s]), "--features cuda");
    let on_cpu = ok(common::run(&["eval", "--run", run_s, "--device", "cpu"]));
    let on_cpu: serde_json::Value = serde_json::from_slice(&on_cpu.stdout).unwrap();
    assert_eq!(on_cpu, report);
    common::fails_with(
        common::run(&["eval", "--run", run_s, "--device", "gpu"]),
        "unknown device \"gpu\"",
    );
}

#[test]
fn bad_input_fails_clearly() {
    let dir = tmp();
    let run = dir.path().join("r");
    let r = run.to_str().unwrap();
    fails_with(
        common::run(&["train", "--out", r, "--task", "nope", "--quiet"]),
        "unknown task \"nope\"",
    );
    fails_with(
        common::run(&["train", "--out", r, "--method", "prefix", "--quiet"]),
        "unknown method",
    );
    refuses_setting(
        common::run(&["train", "--out", r, "--quantize", "nf3", "--quiet"]),
        "quantize",
        "nf3",
        &["nf4", "fp4", "int8"],
    );
    fails_with(
        common::run(&[
            "train",
            "--out",
            r,
            "--method",
            "bitfit",
            "--quantize",
            "nf4",
            "--quiet",
        ]),
        "a quantized base is frozen",
    );
    let mut args = vec!["train", "--out", r];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&[
        "--method",
        "lora",
        "--quantize",
        "int8",
        "--quant-block-size",
        "256",
    ]);
    fails_with(
        common::run(&args),
        "quant_block_size = 256: it does not divide the rows of encoder.layer.0.attention.self.query.weight",
    );
    fails_with(
        common::run(&[
            "train",
            "--out",
            r,
            "--target-modules",
            "query,mlp",
            "--quiet",
        ]),
        "unknown module \"mlp\"",
    );
    fails_with(
        common::run(&[
            "train",
            "--out",
            r,
            "--init-r",
            "4",
            "--target-r",
            "8",
            "--quiet",
        ]),
        "target_r = 8",
    );
    fails_with(
        common::run(&["train", "--out", r, "--set", "train.lrr=1", "--quiet"]),
        "unknown field `lrr`",
    );
    // NaN/Inf loss stops with the step number; the last checkpoint is kept.
    let nan = train(
        &run,
        &[
            "--method",
            "lora",
            "--lr",
            "1e30",
            "--eval-every",
            "1",
            "--max-steps",
            "6",
        ],
    );
    let err = fails_with(nan, "at step");
    assert!(err.contains("last good checkpoint"), "{err}");
    assert!(
        run.join("checkpoint/state.json").is_file(),
        "checkpoint kept"
    );
    // A finished run is refused without --overwrite.
    let fin = dir.path().join("fin");
    ok(train(&fin, &["--method", "lora", "--max-steps", "2"]));
    let before = std::fs::read(fin.join("summary.json")).unwrap();
    fails_with(
        train(&fin, &["--method", "lora", "--max-steps", "2"]),
        "already holds a finished run",
    );
    assert_eq!(
        std::fs::read(fin.join("summary.json")).unwrap(),
        before,
        "nothing lost"
    );
    // A checkpoint from another base model is refused on resume.
    let stopped = dir.path().join("stopped");
    ok(train(
        &stopped,
        &[
            "--method",
            "lora",
            "--max-steps",
            "4",
            "--stop-after-steps",
            "2",
        ],
    ));
    let cfg_path = stopped.join("config.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let other = dir.path().join("other-model");
    std::fs::create_dir_all(&other).unwrap();
    let minilm = adalora_model_dir();
    for f in ["model.safetensors", "tokenizer.json", "vocab.txt"] {
        std::fs::copy(minilm.join(f), other.join(f)).unwrap();
    }
    let config = std::fs::read_to_string(minilm.join("config.json")).unwrap();
    std::fs::write(
        other.join("config.json"),
        config.replace(
            "\"hidden_dropout_prob\": 0.1",
            "\"hidden_dropout_prob\": 0.2",
        ),
    )
    .unwrap();
    let cfg: String = cfg
        .lines()
        .map(|l| {
            if l.starts_with("model = ") {
                format!("model = {:?}\n", other.display().to_string())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&cfg_path, cfg).unwrap();
    fails_with(
        common::run(&[
            "train",
            "--out",
            stopped.to_str().unwrap(),
            "--resume",
            "--quiet",
        ]),
        "another base model",
    );
}

/// Copy an AdaLoRA adapter file with every λ (`lora_E`) set to zero.
fn zero_lambdas(src: &Path, dst: &Path) {
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = if name.ends_with("lora_E") {
                vec![0u8; view.data().len()]
            } else {
                view.data().to_vec()
            };
            (name, view.shape().to_vec(), data)
        })
        .collect();
    let views = tensors.iter().map(|(n, shape, data)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .unwrap();
        (n.clone(), view)
    });
    safetensors::serialize_to_file(views, None, dst).unwrap();
}

fn adalora_model_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::var_os("ADALORA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache"))
        .join("models/all-MiniLM-L6-v2");
    assert!(
        dir.is_dir(),
        "{} missing: run scripts/fetch-assets.sh",
        dir.display()
    );
    dir
}

#[test]
fn encode_writes_normalized_sentence_embeddings() {
    let dir = tmp();
    let input = dir.path().join("s.txt");
    std::fs::write(
        &input,
        "A man is eating food.\n\nA man is riding a horse.\nThe cat sleeps.\n",
    )
    .unwrap();
    let out = dir.path().join("emb.csv");
    ok(common::run(&[
        "encode",
        "--input",
        input.to_str().unwrap(),
        "--pooling",
        "mean",
        "--normalize",
        "--output",
        out.to_str().unwrap(),
    ]));
    let rows = read_csv(&out);
    assert_eq!(
        rows.len(),
        4,
        "header + 3 sentences (the blank line is skipped)"
    );
    assert_eq!(rows[0].len(), 1 + 384);
    for row in &rows[1..] {
        let norm: f64 = row[1..]
            .iter()
            .map(|v| v.parse::<f64>().unwrap().powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "L2-normalised: {norm}");
    }
    let bad = common::run(&[
        "encode",
        "--input",
        input.to_str().unwrap(),
        "--pooling",
        "max",
        "--output",
        out.to_str().unwrap(),
    ]);
    fails_with(bad, "pooling");
}

/// A copy of a fixture model folder without its task head (as a pretrained checkpoint).
fn headless_copy(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("classifier.") && !n.starts_with("pooler."))
        .collect();
    safetensors::serialize_to_file(kept, None, &dst.join("model.safetensors")).unwrap();
}

/// RoBERTa and DeBERTa-v3 folders train with no flag naming the family (`model_type` picks
/// it); their adapters name the family's modules, reload to the live predictions, and merge
/// into the family's HF class.
#[test]
fn roberta_and_deberta_train_reload_and_merge() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model");
    for (name, first_module, architecture) in [
        (
            "tiny-roberta",
            "roberta.encoder.layer.0.attention.self.query",
            "RobertaForSequenceClassification",
        ),
        (
            "tiny-deberta-v3",
            "deberta.encoder.layer.0.attention.self.query_proj",
            "DebertaV2ForSequenceClassification",
        ),
    ] {
        let dir = tmp();
        let run = dir.path().join("run");
        let model = dir.path().join(name);
        headless_copy(&fixtures.join(name), &model);
        let mut args = vec!["--model", model.to_str().unwrap()];
        args.extend_from_slice(ADALORA);
        ok(train(&run, &args));
        let run_s = run.to_str().unwrap();

        let adapter = json(&run.join("adapter/adapter_config.json"));
        assert_eq!(adapter["target_modules"][0], first_module, "{name}");
        let pattern = json(&run.join("rank_pattern.json"));
        assert_eq!(
            pattern["total_rank"],
            2 * 2 * 2,
            "{name}: 2 layers x 2 matrices x r 2"
        );
        let path = format!("{}", pattern["modules"][0]["path"]);
        assert!(
            first_module.ends_with(path.trim_matches('"')),
            "{name}: {path}"
        );

        let reloaded = dir.path().join("reloaded.csv");
        ok(common::run(&[
            "predict",
            "--run",
            run_s,
            "--output",
            reloaded.to_str().unwrap(),
        ]));
        let live = logits(&run.join("predictions_dev.csv"));
        let diff = max_diff(&live, &logits(&reloaded));
        assert!(diff <= 1e-6, "{name}: reloaded adapter differs by {diff}");

        let merged = dir.path().join("merged");
        ok(common::run(&[
            "merge",
            "--run",
            run_s,
            "--out",
            merged.to_str().unwrap(),
        ]));
        let config = json(&merged.join("config.json"));
        assert_eq!(config["architectures"][0], architecture);
        assert!(merged.join("tokenizer.json").is_file());
    }
}
