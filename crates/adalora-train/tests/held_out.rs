//! `train.protocol = "held-out"` end to end on the tiny BERT fixture (`fixtures/model/tiny-bert`,
//! a second per run on CPU): the best checkpoint is chosen on the selection split carved out of
//! the training set, `best_metrics` are the dev split's metrics at that step, every evaluation
//! logs the selection split, `--resume` gives the same run, and every summary records the
//! protocol, the constant-prediction baseline and its provenance.
//!
//! The dev file's labels are the opposite of the training rule, so the better a model learns,
//! the worse it scores on dev: the step the selection split chooses is not the one dev would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adalora_train::trainer::Summary;
use adalora_train::{RunConfig, TrainOptions};

const POSITIVE: [&str; 4] = ["good", "best", "well", "right"];
const NEGATIVE: [&str; 4] = ["never", "against", "little", "down"];
const FILLER: [&str; 6] = ["with", "that", "from", "they", "when", "there"];

/// `n` rows `text,label`: filler words around a positive word (label 1, every other row) or a
/// negative one (label 0); labels flipped when `flip`.
fn rows(n: usize, offset: usize, flip: bool) -> String {
    let mut text = String::from("text,label\n");
    for i in offset..offset + n {
        let positive = i % 2 == 0;
        let word = if positive {
            POSITIVE[i % 4]
        } else {
            NEGATIVE[i % 4]
        };
        let label = usize::from(positive != flip);
        text.push_str(&format!(
            "{} {word} {} {},{label}\n",
            FILLER[i % 6],
            FILLER[(i / 6) % 6],
            FILLER[(i / 36) % 6]
        ));
    }
    text
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    train: PathBuf,
    dev: PathBuf,
}

/// The tiny BERT fixture without its 3-label head (the tasks here have 2 labels), as the
/// binary's tests use it.
fn tiny_model(into: &Path) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model/tiny-bert");
    let dir = into.join("tiny-bert");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture.join(f), dir.join(f)).unwrap();
    }
    let bytes = std::fs::read(fixture.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let encoder: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("classifier."))
        .collect();
    safetensors::serialize_to_file(encoder, None, &dir.join("model.safetensors")).unwrap();
    dir
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (train, dev) = (root.join("train.csv"), root.join("dev.csv"));
    std::fs::write(&train, rows(96, 0, false)).unwrap();
    std::fs::write(&dev, rows(24, 500, true)).unwrap();
    Fixture {
        _dir: dir,
        model: tiny_model(&root),
        root,
        train,
        dev,
    }
}

fn config(f: &Fixture, extra: &[&str]) -> RunConfig {
    let model = &f.model;
    let mut sets: Vec<String> = vec![
        "task=custom".into(),
        format!("custom.train={:?}", f.train.display().to_string()),
        format!("custom.dev={:?}", f.dev.display().to_string()),
        format!("model={:?}", model.display().to_string()),
        "method=lora".into(),
        "lora.r=4".into(),
        "target.modules=\"query,key,value,attention-output,intermediate,output\"".into(),
        "train.lr=2e-2".into(),
        "train.max_steps=32".into(),
        "train.eval_every=4".into(),
        "train.batch_size=8".into(),
        "train.max_seq_len=16".into(),
        "train.log_every=4".into(),
        "train.warmup_ratio=0.0".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    RunConfig::load(None, &sets).unwrap()
}

/// burn's seeded RNG (weight init, dropout masks) is per process: two runs at once in this test
/// binary would draw from each other's streams, so runs here go one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn train(cfg: &RunConfig, out: &Path, resume: bool, stop: Option<usize>) -> Option<Summary> {
    let _one_at_a_time = serial();
    adalora_train::train(&TrainOptions {
        config: cfg.clone(),
        out: out.to_path_buf(),
        resume,
        overwrite: false,
        progress: false,
        stop_after_steps: stop,
    })
    .unwrap()
}

/// metrics.csv evaluation rows of `split`: step → metric name → value.
fn eval_rows(run: &Path, split: &str) -> BTreeMap<usize, BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let mut out = BTreeMap::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        if fields[2] != split {
            continue;
        }
        let values = header
            .iter()
            .zip(&fields)
            .skip(3)
            .filter_map(|(k, v)| v.parse::<f64>().ok().map(|v| (k.to_string(), v)))
            .collect();
        assert!(
            out.insert(fields[0].parse().unwrap(), values).is_none(),
            "{split} logged twice at one step: {line}"
        );
    }
    out
}

/// The first evaluation step with the highest `metric`.
fn first_best(rows: &BTreeMap<usize, BTreeMap<String, f64>>, metric: &str) -> usize {
    let mut best: Option<(usize, f64)> = None;
    for (&step, m) in rows {
        let v = m[metric];
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((step, v));
        }
    }
    best.unwrap().0
}

/// `summary` metrics equal a metrics.csv row (written with 6 decimals).
fn assert_row(summary: &BTreeMap<String, f64>, row: &BTreeMap<String, f64>, what: &str) {
    for name in ["accuracy", "f1", "combined_score", "task_loss"] {
        let (a, b) = (summary[name], row[name]);
        assert!(
            (a - b).abs() < 1e-6,
            "{what} {name}: summary {a}, metrics.csv {b}"
        );
    }
}

#[test]
fn held_out_chooses_on_the_selection_split_and_reports_dev_there() {
    let f = fixture();
    let cfg = config(
        &f,
        &["train.protocol=held-out", "train.selection_ratio=0.25"],
    );
    let out = f.root.join("held");
    let s = train(&cfg, &out, false, None).unwrap();
    assert_eq!(s.protocol, "held-out");
    // 96 training examples, a quarter held out (stratified: 12 of each class's 48).
    assert_eq!(s.train_examples, 72);

    let selection = eval_rows(&out, "selection");
    let dev = eval_rows(&out, "dev");
    let steps: Vec<usize> = (1..=8).map(|k| 4 * k).collect();
    assert_eq!(selection.keys().copied().collect::<Vec<_>>(), steps);
    assert_eq!(dev.keys().copied().collect::<Vec<_>>(), steps);

    let chosen = first_best(&selection, "accuracy");
    // The fixture separates the two choices (the test would not tell them apart otherwise).
    assert_ne!(
        chosen,
        first_best(&dev, "accuracy"),
        "selection {selection:?}\ndev {dev:?}"
    );
    assert_eq!(s.best_step, Some(chosen));
    assert_row(&s.best_metrics, &dev[&chosen], "best_metrics");
    assert_row(
        &s.selection_metrics,
        &selection[&chosen],
        "selection_metrics",
    );
    // The final evaluation reports the dev split only (the selection split is in metrics.csv).
    assert_eq!(s.final_metrics.keys().collect::<Vec<_>>(), ["dev"]);
    assert_row(&s.final_metrics["dev"], &dev[&32], "final_metrics");

    // The baseline: the 72 training examples are 36/36, the tie goes to class 0; the dev file
    // is half class 0: accuracy 0.5, and no positive prediction: F1 0.
    let expected: BTreeMap<String, f64> =
        [("accuracy", 0.5), ("combined_score", 0.25), ("f1", 0.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    assert_eq!(s.baseline_metrics, expected);
    // Recomputed from the run's config.toml alone, the same numbers.
    let saved = RunConfig::load(Some(&out.join("config.toml")), &[]).unwrap();
    assert_eq!(
        adalora_train::baseline_for_config(&saved).unwrap(),
        s.baseline_metrics
    );

    let p = s.provenance.as_ref().expect("provenance recorded");
    assert!(!p.commit.is_empty() && !p.version.is_empty() && !p.cpu.is_empty());
    assert!(!p.host.is_empty() && p.cores >= 1 && p.gpu.is_none());

    // summary.json holds what train returned.
    let text = std::fs::read_to_string(out.join("summary.json")).unwrap();
    let read: Summary = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (
            &read.protocol,
            read.best_step,
            &read.provenance,
            &read.baseline_metrics
        ),
        (&s.protocol, s.best_step, &s.provenance, &s.baseline_metrics)
    );
    assert_row(
        &read.selection_metrics,
        &s.selection_metrics,
        "summary.json",
    );
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "protocol",
        "selection_metrics",
        "baseline_metrics",
        "provenance",
    ] {
        assert!(json.get(key).is_some(), "summary.json lacks {key}");
    }

    // Interrupted twice (before and after the chosen step) and resumed: the same run.
    let resumed = f.root.join("resumed");
    assert!(train(&cfg, &resumed, false, Some(5)).is_none());
    assert!(train(&cfg, &resumed, true, Some((chosen + 3).clamp(7, 31))).is_none());
    let r = train(&cfg, &resumed, true, None).unwrap();
    for file in [
        "metrics.csv",
        "predictions_dev.csv",
        "adapter/adapter_model.safetensors",
    ] {
        assert!(
            std::fs::read(out.join(file)).unwrap() == std::fs::read(resumed.join(file)).unwrap(),
            "{file} differs after resume"
        );
    }
    assert_eq!(r.best_step, s.best_step);
    assert_eq!(r.best_metrics, s.best_metrics);
    assert_eq!(r.selection_metrics, s.selection_metrics);
    assert_eq!(r.baseline_metrics, s.baseline_metrics);
}

#[test]
fn best_dev_chooses_on_dev_and_logs_no_selection_split() {
    let f = fixture();
    let cfg = config(&f, &[]);
    assert!(!cfg.to_toml().unwrap().contains("protocol"));
    let out = f.root.join("best-dev");
    let s = train(&cfg, &out, false, None).unwrap();
    assert_eq!(s.protocol, "best-dev");
    assert_eq!(s.train_examples, 96);
    assert!(s.selection_metrics.is_empty());
    assert!(eval_rows(&out, "selection").is_empty());
    let dev = eval_rows(&out, "dev");
    let chosen = first_best(&dev, "accuracy");
    assert_eq!(s.best_step, Some(chosen));
    assert_row(&s.best_metrics, &dev[&chosen], "best_metrics");
    // All 96 training examples: 48/48, class 0 again.
    assert_eq!(s.baseline_metrics["accuracy"], 0.5);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["protocol"], "best-dev");
    assert!(!std::fs::read_to_string(out.join("config.toml"))
        .unwrap()
        .contains("selection_ratio"));
}

/// Every committed summary.json (written by older builds, without the new fields) still reads.
#[test]
fn committed_summaries_still_deserialize() {
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../results");
    let mut stack = vec![results];
    let mut n = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "summary.json") {
                let text = std::fs::read_to_string(&path).unwrap();
                let s: Summary = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if !text.contains("\"protocol\"") {
                    assert_eq!(s.protocol, "best-dev", "{}", path.display());
                    assert!(s.provenance.is_none() && s.selection_metrics.is_empty());
                }
                n += 1;
            }
        }
    }
    assert!(n > 0, "no committed summaries found");
}
