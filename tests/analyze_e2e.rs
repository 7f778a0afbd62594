//! `adalora analyze` end to end on the tiny BERT fixture (`fixtures/model/tiny-bert`, 2
//! layers, hidden 48), so every run trains in about a second: the files of a run and of a
//! comparison of two, a sweep's per-run analyses and stability table, and bad input — a run
//! without an adapter, a missing folder, `--against` over other matrices or another base model,
//! a matrix AdaLoRA pruned to rank 0, an empty sweep — failing clearly or stating "n/a".
//! (The numbers themselves are checked against numpy in crates/adalora-analysis/tests.)

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::*;

/// A tiny run's flags on `model`, then `extra` (which must not repeat a flag given here).
fn tiny_args(out: &Path, model: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--out",
        out.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--task",
        "default",
        "--max-train-examples",
        "32",
        "--max-eval-examples",
        "16",
        "--batch-size",
        "8",
        "--max-seq-len",
        "32",
        "--max-steps",
        "8",
        "--lr",
        "1e-2",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// AdaLoRA 4 → `target_total_rank` over query and value (4 matrices), pruning from step 2.
fn adalora_flags(total: &str) -> Vec<&str> {
    vec![
        "--method",
        "adalora",
        "--init-r",
        "4",
        "--target-total-rank",
        total,
        "--target-modules",
        "query,value",
        "--tinit",
        "2",
        "--tfinal",
        "2",
        "--delta-t",
        "2",
    ]
}

fn train_on(out: &Path, model: &Path, extra: &[&str]) {
    ok(adalora()
        .args(tiny_args(out, model, extra))
        .output()
        .unwrap());
}

fn analyze(args: &[&str]) -> Output {
    let mut all = vec!["analyze"];
    all.extend_from_slice(args);
    run(&all)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A copy of the tiny model with one attention weight changed: same shapes, another W0.
fn other_model(into: &Path) -> PathBuf {
    let src = tiny_model();
    let dir = into.join("tiny-other");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let key = "encoder.layer.0.attention.self.query.weight";
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n.clone(), t.data().to_vec(), t.shape().to_vec(), t.dtype()))
        .collect();
    let found = tensors.iter_mut().find(|t| t.0.ends_with(key)).expect(key);
    let mut first = f32::from_le_bytes(found.1[..4].try_into().unwrap());
    first += 0.5;
    found.1[..4].copy_from_slice(&first.to_le_bytes());
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, shape, dt)| {
            let view = safetensors::tensor::TensorView::new(*dt, shape.clone(), d).unwrap();
            (n.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    dir
}

#[test]
fn a_run_and_its_comparison_with_a_second_seed_write_every_file() {
    let dir = tmp();
    let model = tiny_model();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    train_on(
        &a,
        &model,
        &[adalora_flags("4").as_slice(), &["--seed", "1"]].concat(),
    );
    train_on(
        &b,
        &model,
        &[adalora_flags("4").as_slice(), &["--seed", "2"]].concat(),
    );
    let printed = ok_stdout(analyze(&[
        "--run",
        s(&a),
        "--against",
        s(&b),
        "--matrix",
        "1.value",
        "--seed",
        "3",
    ]));
    let out = a.join("analysis");
    for f in [
        "spectra.csv",
        "summary.csv",
        "amplification.csv",
        "similarity.csv",
        "rank.png",
        "similarity_1.value_left.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing; printed:\n{printed}");
    }
    let summary = read_csv(&out.join("summary.csv"));
    assert_eq!(
        summary[0],
        [
            "layer",
            "module",
            "rank",
            "stable_rank",
            "effective_rank",
            "energy_top1",
            "energy_top2",
            "energy_top4",
            "energy_top8",
            "rel_norm"
        ]
    );
    assert_eq!(summary.len(), 1 + 4, "one row per adapted matrix");
    let ranks: usize = summary[1..]
        .iter()
        .map(|r| r[2].parse::<usize>().unwrap())
        .sum();
    assert_eq!(
        ranks, 4,
        "the kept triplets add up to the target total rank"
    );
    let spectra = read_csv(&out.join("spectra.csv"));
    assert_eq!(spectra[0], ["layer", "module", "index", "singular_value"]);
    assert_eq!(spectra.len(), 1 + ranks, "one row per kept singular value");
    let sim = read_csv(&out.join("similarity.csv"));
    assert_eq!(
        sim[0],
        [
            "layer",
            "module",
            "side",
            "i",
            "j",
            "phi",
            "random_baseline"
        ]
    );
    // --out elsewhere; a LoRA run also analyses.
    let lora = dir.path().join("lora");
    train_on(&lora, &model, &["--method", "lora", "--r", "2"]);
    let elsewhere = dir.path().join("elsewhere");
    ok(analyze(&[s(&lora), "--out", s(&elsewhere)]));
    let summary = read_csv(&elsewhere.join("summary.csv"));
    assert!(summary[1..].iter().all(|r| r[2] == "2"), "{summary:?}");
}

#[test]
fn a_matrix_pruned_to_rank_zero_is_stated_as_na_by_name() {
    let dir = tmp();
    let model = tiny_model();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // A budget of 1 over 4 matrices: at least three end at rank 0.
    train_on(&a, &model, &adalora_flags("1"));
    train_on(
        &b,
        &model,
        &[adalora_flags("1").as_slice(), &["--seed", "9"]].concat(),
    );
    ok(analyze(&["--run", s(&a), "--against", s(&b)]));
    let out = a.join("analysis");
    let summary = read_csv(&out.join("summary.csv"));
    let zero: Vec<&Vec<String>> = summary[1..].iter().filter(|r| r[2] == "0").collect();
    assert!(zero.len() >= 3, "{summary:?}");
    for row in &zero {
        assert!(["query", "value"].contains(&row[1].as_str()), "{row:?}");
        assert!(row[3..9].iter().all(|c| c == "n/a"), "{row:?}");
        let amp = read_csv(&out.join("amplification.csv"));
        let amp_row = amp.iter().find(|r| r[..2] == row[..2]).unwrap();
        assert!(amp_row[3..].iter().all(|c| c == "n/a"), "{amp_row:?}");
        let sim = read_csv(&out.join("similarity.csv"));
        let sim_rows: Vec<_> = sim.iter().filter(|r| r[..2] == row[..2]).collect();
        assert!(
            sim_rows.len() == 2 && sim_rows.iter().all(|r| r[5] == "n/a"),
            "{sim_rows:?}"
        );
    }
    for f in ["summary.csv", "amplification.csv", "similarity.csv"] {
        assert!(!read(&out.join(f)).to_lowercase().contains("nan"), "{f}");
    }
}

#[test]
fn runs_without_an_adapter_and_missing_folders_fail_clearly() {
    let dir = tmp();
    let full = dir.path().join("full");
    train_on(&full, &tiny_model(), &["--method", "full"]);
    let err = fails_with(analyze(&["--run", s(&full)]), "holds no PEFT adapter");
    assert!(err.contains(s(&full)), "{err}");
    fails_with(
        analyze(&["--run", s(&dir.path().join("missing"))]),
        "no such run folder",
    );
    fails_with(
        analyze(&["--adapter", s(&dir.path().join("missing")), "--out", "x"]),
        "no such adapter folder",
    );
    // A folder that is neither a sweep nor a run.
    fails_with(analyze(&[s(dir.path())]), "is not a run folder");
    fails_with(analyze(&[]), "give a sweep folder");
}

#[test]
fn against_over_other_matrices_or_another_base_model_is_an_error() {
    let dir = tmp();
    let model = tiny_model();
    let (a, wider, moved) = (
        dir.path().join("a"),
        dir.path().join("wider"),
        dir.path().join("moved"),
    );
    let lora = ["--method", "lora", "--r", "2", "--target-modules"];
    train_on(&a, &model, &[&lora[..], &["query,value"]].concat());
    train_on(&wider, &model, &[&lora[..], &["query,value,key"]].concat());
    let err = fails_with(
        analyze(&["--run", s(&a), "--against", s(&wider)]),
        "adapt different matrices",
    );
    assert!(err.contains("encoder.layer.0.attention.self.key"), "{err}");
    let other = other_model(dir.path());
    train_on(&moved, &other, &[&lora[..], &["query,value"]].concat());
    let err = fails_with(
        analyze(&["--run", s(&a), "--against", s(&moved)]),
        "base weights W0 differ",
    );
    assert!(
        err.contains("encoder.layer.0.attention.self.query"),
        "{err}"
    );
}

const SWEEP: &str = r#"
name = "tiny-analysis"
[set]
task = "default"
model = "MODEL"
"train.max_train_examples" = 32
"train.max_eval_examples" = 16
"train.batch_size" = 8
"train.max_seq_len" = 32
"train.max_steps" = 8
"train.lr" = 1e-2
"target.modules" = "query,value"
"lora.r" = 2
"adalora.init_r" = 4
"adalora.target_r" = 2
"adalora.tinit" = 2
"adalora.tfinal" = 2
"adalora.delta_t" = 2
[sweep]
method = ["lora", "adalora"]
seed = [1, 2]
"#;

#[test]
fn a_sweep_gets_every_run_analysed_and_a_stability_table() {
    let dir = tmp();
    let file = dir.path().join("tiny.toml");
    std::fs::write(&file, SWEEP.replace("MODEL", s(&tiny_model()))).unwrap();
    let sweep = dir.path().join("sw");
    ok(run(&["sweep", s(&file), "--out", s(&sweep)]));
    ok(analyze(&[s(&sweep), "--seed", "4"]));
    let out = sweep.join("analysis");
    for r in rows(&sweep) {
        let name = Path::new(r["run_dir"].as_str().unwrap())
            .file_name()
            .unwrap();
        assert!(out.join(name).join("summary.csv").is_file(), "{name:?}");
    }
    let table = read_csv(&out.join("stability.csv"));
    assert_eq!(
        table[0],
        [
            "kind",
            "task",
            "cell",
            "other_cell",
            "pairs",
            "spearman_rank",
            "jaccard_kept",
            "phi_1",
            "phi_4",
            "phi_1_right",
            "phi_4_right"
        ]
    );
    let seeds: Vec<&Vec<String>> = table.iter().filter(|r| r[0] == "seeds").collect();
    assert_eq!(seeds.len(), 2, "one row per cell: {table:?}");
    assert!(seeds.iter().all(|r| r[4] == "1"), "one pair of seeds each");
    // LoRA's ranks are all equal: no rank correlation; every matrix kept: Jaccard 1.
    let lora = seeds.iter().find(|r| r[2].starts_with("LoRA")).unwrap();
    assert_eq!(
        (lora[5].as_str(), lora[6].as_str()),
        ("n/a", "1"),
        "{lora:?}"
    );
    let phi1: f64 = lora[7].parse().unwrap();
    assert!((0.0..=1.0).contains(&phi1), "{lora:?}");
    assert_eq!(lora[8], "n/a", "φ(4, 4) needs rank 4: {lora:?}");
    let phi1_right: f64 = lora[9].parse().unwrap();
    assert!((0.0..=1.0).contains(&phi1_right), "{lora:?}");
    assert_eq!(lora[10], "n/a", "{lora:?}");
    // LoRA r=2 and AdaLoRA →2 over the same 4 matrices end at the same total rank 8.
    let cross: Vec<_> = table.iter().filter(|r| r[0] == "lora-vs-adalora").collect();
    assert_eq!(cross.len(), 1, "{table:?}");
    assert_eq!(cross[0][4], "2", "one pair per seed: {:?}", cross[0]);
    let md = read(&out.join("stability.md"));
    assert!(md.contains("| lora-vs-adalora |"), "{md}");
    let report = read(&sweep.join("report.md"));
    assert!(
        report.contains("## Stability of the adapters across seeds"),
        "{report}"
    );
}

#[test]
fn a_sweep_without_finished_adapter_runs_is_an_error() {
    let dir = tmp();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(
        empty.join("manifest.json"),
        r#"{"version": 1, "name": "empty", "sweep_file": "empty.toml", "rows": []}"#,
    )
    .unwrap();
    let err = fails_with(analyze(&[s(&empty)]), "no finished LoRA or AdaLoRA run");
    assert!(err.contains(s(&empty)), "{err}");
}
