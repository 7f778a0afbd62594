//! GLUE loading: the real data against MANIFEST.tsv, plus synthetic MNLI/QQP files (absent from
//! the shared data) and the column layouts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use adalora_data::{
    load_glue, load_glue_split, resolve_glue_dir, GlueTask, LoadOptions, MetricKind, Target,
    TaskKind,
};
use common::{glue_dir, write};

struct ManifestRow {
    task: String,
    file: String,
    rows: usize,
}

fn manifest(dir: &Path) -> Vec<ManifestRow> {
    let text = std::fs::read_to_string(dir.join("MANIFEST.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let (t, f, r) = (col("task"), col("file"), col("rows"));
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            ManifestRow {
                task: c[t].to_string(),
                file: c[f].to_string(),
                rows: c[r].parse().unwrap(),
            }
        })
        .collect()
}

#[test]
fn every_manifest_file_loads_with_its_row_count_and_label_set() {
    let dir = glue_dir();
    let rows = manifest(&dir);
    assert!(rows.len() >= 10, "MANIFEST.tsv lists too few files");
    let opts = LoadOptions::default();
    for row in &rows {
        let task = GlueTask::from_name(&row.task).unwrap();
        let split = row.file.strip_suffix(".tsv").unwrap();
        let (ds, skipped) = load_glue_split(task, &dir, split, &opts)
            .unwrap_or_else(|e| panic!("{} {}: {e}", row.task, row.file));
        assert_eq!(skipped, 0);
        assert_eq!(ds.len(), row.rows, "{} {}", row.task, row.file);
        assert_eq!(ds.is_pair(), task.is_pair(), "{}", row.task);
        assert!(ds
            .examples
            .iter()
            .all(|e| e.text_b.is_some() == task.is_pair() && !e.text_a.is_empty()));
        match task.kind() {
            TaskKind::Classification { labels } => {
                let seen: BTreeSet<usize> = ds
                    .examples
                    .iter()
                    .map(|e| match e.target {
                        Target::Class(c) => c,
                        Target::Score(_) => panic!("score in a classification task"),
                    })
                    .collect();
                let all: BTreeSet<usize> = (0..labels.len()).collect();
                assert_eq!(seen, all, "{} {}: label set", row.task, row.file);
            }
            TaskKind::Regression => {
                for e in &ds.examples {
                    match e.target {
                        Target::Score(s) => assert!((0.0..=5.0).contains(&s)),
                        Target::Class(_) => panic!("class in STS-B"),
                    }
                }
            }
        }
    }
}

#[test]
fn full_tasks_load_and_missing_splits_name_the_path() {
    let dir = glue_dir();
    let rows = manifest(&dir);
    let mut files: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for r in &rows {
        files
            .entry(r.task.clone())
            .or_default()
            .insert(r.file.clone(), r.rows);
    }
    let opts = LoadOptions::default();
    for task in GlueTask::ALL {
        let present = files.get(task.name()).cloned().unwrap_or_default();
        let needed: Vec<String> = std::iter::once("train".to_string())
            .chain(task.dev_splits().iter().map(|s| s.to_string()))
            .map(|s| format!("{s}.tsv"))
            .collect();
        match load_glue(task, &dir, &opts) {
            Ok(t) => {
                assert!(needed.iter().all(|f| present.contains_key(f)));
                assert_eq!(t.name, task.name());
                assert_eq!(t.train.len(), present["train.tsv"]);
                assert_eq!(t.dev.len(), task.dev_splits().len());
                for (d, split) in t.dev.iter().zip(task.dev_splits()) {
                    assert_eq!(d.name, *split);
                    assert_eq!(d.len(), present[&format!("{split}.tsv")]);
                }
                assert_eq!(t.metric, task.metric());
                assert_eq!(t.kind, task.kind());
            }
            Err(e) => {
                let missing = needed
                    .iter()
                    .find(|f| !present.contains_key(*f))
                    .unwrap_or_else(|| panic!("{task} failed although listed complete: {e}"));
                let expected = format!("{}/{missing}", task.name());
                assert!(e.to_string().contains(&expected), "{task}: {e}");
                assert!(e.to_string().contains("does not exist"), "{e}");
            }
        }
    }
    // QNLI train is absent from the shared data: that must be a clear error naming the path.
    if !files["QNLI"].contains_key("train.tsv") {
        let e = load_glue(GlueTask::Qnli, &dir, &opts).unwrap_err();
        assert!(e.to_string().contains("QNLI/train.tsv"), "{e}");
    }
}

#[test]
fn real_files_parse_columns_correctly() {
    let dir = glue_dir();
    let opts = LoadOptions::default();
    // CoLA: no header, 4 columns; first dev row.
    let (cola, _) = load_glue_split(GlueTask::Cola, &dir, "dev", &opts).unwrap();
    assert_eq!(
        cola.examples[0].text_a,
        "The sailors rode the breeze clear of the rocks."
    );
    assert_eq!(cola.examples[0].target, Target::Class(1));
    // SST-2: trailing space kept as in the file.
    let (sst, _) = load_glue_split(GlueTask::Sst2, &dir, "dev", &opts).unwrap();
    assert_eq!(
        sst.examples[0].text_a,
        "it 's a charming and often affecting journey . "
    );
    assert_eq!(sst.examples[1].target, Target::Class(0));
    // MRPC: BOM header; quotes are ordinary characters.
    let (mrpc, _) = load_glue_split(GlueTask::Mrpc, &dir, "dev", &opts).unwrap();
    let e = &mrpc.examples[0];
    assert_eq!(e.target, Target::Class(1));
    assert!(e.text_a.starts_with("He said the foodservice pie business"));
    assert!(e
        .text_b
        .as_deref()
        .unwrap()
        .starts_with("\"The foodservice pie business"));
    // STS-B: score is the last column.
    let (sts, _) = load_glue_split(GlueTask::Stsb, &dir, "dev", &opts).unwrap();
    assert_eq!(sts.examples[1].text_a, "A young child is riding a horse.");
    assert_eq!(sts.examples[1].target, Target::Score(4.75));
    // RTE: not_entailment is class 1.
    let (rte, _) = load_glue_split(GlueTask::Rte, &dir, "dev", &opts).unwrap();
    assert_eq!(rte.examples[0].target, Target::Class(1));
    assert_eq!(
        rte.examples[0].text_b.as_deref(),
        Some("Christopher Reeve had an accident.")
    );
}

#[test]
fn synthetic_mnli_and_qqp_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let mnli_header = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n";
    let mnli_row = |i: usize, s1: &str, s2: &str, label: &str| {
        format!("{i}\t1\t1n\tgov\t( a )\t( b )\t(ROOT a)\t(ROOT b)\t{s1}\t{s2}\t{label}\t{label}\n")
    };
    let mut train = mnli_header.to_string();
    train += &mnli_row(0, "A man eats.", "Someone eats.", "entailment");
    train += &mnli_row(1, "A man eats.", "Nobody eats.", "contradiction");
    train += &mnli_row(2, "\"Quoted\" start", "Maybe.", "neutral");
    write(tmp.path(), "MNLI/train.tsv", &train);
    let dev_header = mnli_header.replace(
        "label1\tgold_label",
        "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label",
    );
    let dev_row = |s1: &str, label: &str| {
        format!("0\t1\t1n\tgov\t( a )\t( b )\t(ROOT a)\t(ROOT b)\t{s1}\tx\t{label}\t{label}\t{label}\t{label}\t{label}\t{label}\n")
    };
    write(
        tmp.path(),
        "MNLI/dev_matched.tsv",
        format!("{dev_header}{}", dev_row("m", "neutral")),
    );
    write(
        tmp.path(),
        "MNLI/dev_mismatched.tsv",
        format!(
            "{dev_header}{}{}",
            dev_row("mm1", "contradiction"),
            dev_row("mm2", "entailment")
        ),
    );
    let task = load_glue(GlueTask::Mnli, tmp.path(), &LoadOptions::default()).unwrap();
    assert_eq!(task.train.len(), 3);
    let classes: Vec<Target> = task.train.examples.iter().map(|e| e.target).collect();
    assert_eq!(
        classes,
        [Target::Class(1), Target::Class(0), Target::Class(2)]
    );
    assert_eq!(task.train.examples[2].text_a, "\"Quoted\" start");
    assert_eq!(
        task.train.examples[0].text_b.as_deref(),
        Some("Someone eats.")
    );
    assert_eq!(task.dev.len(), 2);
    assert_eq!(task.dev[0].name, "dev_matched");
    assert_eq!(task.dev[1].name, "dev_mismatched");
    assert_eq!(task.dev[1].len(), 2);
    assert_eq!(task.dev[1].examples[0].text_a, "mm1");
    assert_eq!(task.metric, MetricKind::Accuracy);

    let qqp = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n\
               1\t2\t3\tHow do I cook?\tHow to cook?\t1\n\
               4\t5\t6\tWhy?\tWhen?\t0\n";
    write(tmp.path(), "QQP/train.tsv", qqp);
    write(tmp.path(), "QQP/dev.tsv", qqp);
    let task = load_glue(GlueTask::Qqp, tmp.path(), &LoadOptions::default()).unwrap();
    assert_eq!(task.train.examples[0].text_a, "How do I cook?");
    assert_eq!(
        task.train.examples[0].text_b.as_deref(),
        Some("How to cook?")
    );
    assert_eq!(task.train.examples[0].target, Target::Class(1));
    assert_eq!(task.dev[0].examples[1].target, Target::Class(0));
    assert_eq!(task.metric, MetricKind::AccuracyF1);
}

#[test]
fn task_names_labels_and_metrics() {
    for (name, task) in [
        ("sst-2", GlueTask::Sst2),
        ("SST-2", GlueTask::Sst2),
        ("sst2", GlueTask::Sst2),
        ("STS-B", GlueTask::Stsb),
        ("stsb", GlueTask::Stsb),
        ("CoLA", GlueTask::Cola),
        ("mnli", GlueTask::Mnli),
        ("QQP", GlueTask::Qqp),
    ] {
        assert_eq!(GlueTask::from_name(name).unwrap(), task);
    }
    for task in GlueTask::ALL {
        assert_eq!(GlueTask::from_name(task.name()).unwrap(), task);
        assert_eq!(task.name().parse::<GlueTask>().unwrap(), task);
    }
    assert!(GlueTask::from_name("imdb")
        .unwrap_err()
        .to_string()
        .contains("imdb"));
    assert_eq!(
        GlueTask::Mnli.kind().labels(),
        ["contradiction", "entailment", "neutral"]
    );
    assert_eq!(
        GlueTask::Rte.kind().labels(),
        ["entailment", "not_entailment"]
    );
    assert_eq!(
        GlueTask::Qnli.kind().labels(),
        ["entailment", "not_entailment"]
    );
    assert_eq!(GlueTask::Mrpc.kind().labels(), ["0", "1"]);
    assert_eq!(GlueTask::Stsb.kind(), TaskKind::Regression);
    // main metrics as in the AdaLoRA paper, Table 1
    assert_eq!(GlueTask::Cola.metric().main_name(), "matthews_correlation");
    assert_eq!(GlueTask::Stsb.metric().main_name(), "combined_score");
    assert_eq!(GlueTask::Mrpc.metric().main_name(), "accuracy");
    assert_eq!(GlueTask::Qqp.metric().main_name(), "accuracy");
    assert_eq!(GlueTask::Rte.metric().main_name(), "accuracy");
}

#[test]
fn glue_dir_resolution() {
    let dir = glue_dir();
    assert_eq!(resolve_glue_dir(Some(&dir)).unwrap(), dir);
    let e = resolve_glue_dir(Some(Path::new("/nonexistent/glue"))).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/glue"), "{e}");
    // Without an explicit path the env var decides (not modified here: tests run in parallel).
    match std::env::var_os("GLUE_DIR") {
        Some(v) if !v.is_empty() && Path::new(&v).is_dir() => {
            assert_eq!(resolve_glue_dir(None).unwrap(), Path::new(&v))
        }
        Some(v) if !v.is_empty() => assert!(resolve_glue_dir(None).is_err()),
        _ => {
            let e = resolve_glue_dir(None).unwrap_err().to_string();
            assert!(e.contains("GLUE_DIR"), "{e}");
        }
    }
}
