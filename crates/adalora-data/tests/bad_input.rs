//! Malformed input: every case is an error naming file, line (1-based, header counted) and
//! field; with `skip_bad_rows` the rows are skipped and counted.

mod common;

use adalora_data::{
    load_custom, load_glue_split, CustomTaskConfig, DataError, GlueTask, LoadOptions, Target,
};
use common::write;

const STRICT: LoadOptions = LoadOptions {
    skip_bad_rows: false,
};
const SKIP: LoadOptions = LoadOptions {
    skip_bad_rows: true,
};

fn cfg(path: &std::path::Path) -> CustomTaskConfig {
    let mut c = CustomTaskConfig::new(path);
    c.dev_ratio = 0.5;
    c
}

fn assert_bad_row(e: &DataError, path: &std::path::Path, line: u64, field: Option<&str>) {
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{}:{line}: ", path.display())),
        "expected {}:{line}: prefix in {msg:?}",
        path.display()
    );
    if let Some(f) = field {
        assert!(msg.contains(&format!("column \"{f}\"")), "{msg}");
    }
    match e {
        DataError::BadRow {
            line: l, field: fl, ..
        } => {
            assert_eq!(*l, line);
            assert_eq!(fl.as_deref(), field);
        }
        other => panic!("expected BadRow, got {other:?}"),
    }
}

#[test]
fn label_outside_label_set() {
    let tmp = tempfile::tempdir().unwrap();
    let mut body = String::from("text,label\n");
    for i in 0..15 {
        body += &format!(
            "t{i},{}\n",
            if i % 2 == 0 { "negative" } else { "positive" }
        );
    }
    body += "oops,positve\n"; // line 17
    body += "fine,negative\n";
    let p = write(tmp.path(), "x.csv", &body);
    let mut c = cfg(&p);
    c.labels = Some(vec!["negative".into(), "positive".into()]);
    let e = load_custom(&c, &STRICT).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:17: column \"label\": value \"positve\" is not in the label set [\"negative\",\"positive\"]",
            p.display()
        )
    );
    let t = load_custom(&c, &SKIP).unwrap();
    assert_eq!(t.skipped_rows, 1);
    assert_eq!(t.train.len() + t.dev[0].len(), 16);
}

#[test]
fn dev_label_outside_inferred_set() {
    let tmp = tempfile::tempdir().unwrap();
    let train = write(tmp.path(), "train.tsv", "text\tlabel\na\tx\nb\ty\n");
    let dev = write(tmp.path(), "dev.tsv", "text\tlabel\na\tx\nb\tz\n");
    let mut c = cfg(&train);
    c.dev = Some(dev.clone());
    let e = load_custom(&c, &STRICT).unwrap_err();
    assert_bad_row(&e, &dev, 3, Some("label"));
    assert!(e.to_string().contains("[\"x\",\"y\"]"), "{e}");
}

#[test]
fn wrong_column_count() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "x.tsv",
        "text\tlabel\tsource\na\t0\ts\nb\t1\ts\nc\t1\nd\t0\ts\te\ne\t0\ts\nf\t1\ts\n",
    );
    let e = load_custom(&cfg(&p), &STRICT).unwrap_err();
    assert_bad_row(&e, &p, 4, Some("source"));
    assert!(
        e.to_string().contains("row has 2 columns, expected 3"),
        "{e}"
    );
    let t = load_custom(&cfg(&p), &SKIP).unwrap();
    assert_eq!(t.skipped_rows, 2); // short row and long row
    assert_eq!(t.train.len() + t.dev[0].len(), 4);

    // GLUE CoLA has no header: line numbers start at the first row.
    let cola = write(
        tmp.path(),
        "glue/CoLA/dev.tsv",
        "gj04\t1\t\tGood.\ngj04\t0\tBad.\n",
    );
    let e = load_glue_split(GlueTask::Cola, &tmp.path().join("glue"), "dev", &STRICT).unwrap_err();
    assert_bad_row(&e, &cola, 2, Some("sentence"));
}

#[test]
fn non_numeric_score() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "s.jsonl",
        "{\"a\": \"x\", \"b\": \"y\", \"sim\": 1.5}\n\n{\"a\": \"x\", \"b\": \"y\", \"sim\": \"high\"}\n{\"a\": \"u\", \"b\": \"v\", \"sim\": \"2.5\"}\n",
    );
    let mut c = cfg(&p);
    c.text_a = "a".into();
    c.text_b = Some("b".into());
    c.score = Some("sim".into());
    let e = load_custom(&c, &STRICT).unwrap_err();
    assert_bad_row(&e, &p, 3, Some("sim"));
    assert!(
        e.to_string().contains("\"high\" is not a finite number"),
        "{e}"
    );
    let t = load_custom(&c, &SKIP).unwrap();
    assert_eq!(t.skipped_rows, 1);

    // GLUE STS-B
    let header =
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n";
    let sts = write(
        tmp.path(),
        "glue/STS-B/dev.tsv",
        format!("{header}0\tg\tf\ty\t0\tn\tn\ta\tb\t4.000\n1\tg\tf\ty\t1\tn\tn\ta\tb\tNaN\n"),
    );
    let e = load_glue_split(GlueTask::Stsb, &tmp.path().join("glue"), "dev", &STRICT).unwrap_err();
    assert_bad_row(&e, &sts, 3, Some("score"));
    let (ds, skipped) =
        load_glue_split(GlueTask::Stsb, &tmp.path().join("glue"), "dev", &SKIP).unwrap();
    assert_eq!((ds.len(), skipped), (1, 1));
    assert_eq!(ds.examples[0].target, Target::Score(4.0));
}

#[test]
fn invalid_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = b"text,label\nok,0\nfine,1\n".to_vec();
    bytes.extend_from_slice(b"bad \xff\xfe text,1\n");
    bytes.extend_from_slice(b"also ok,0\n");
    let p = write(tmp.path(), "u.csv", &bytes);
    let e = load_custom(&cfg(&p), &STRICT).unwrap_err();
    assert_bad_row(&e, &p, 4, Some("text"));
    assert!(e.to_string().contains("invalid UTF-8"), "{e}");
    let t = load_custom(&cfg(&p), &SKIP).unwrap();
    assert_eq!(t.skipped_rows, 1);

    // JSONL: the line is reported (the field cannot be known before decoding)
    let mut bytes = b"{\"text\": \"a\", \"label\": 0}\n".to_vec();
    bytes.extend_from_slice(b"{\"text\": \"\xff\", \"label\": 1}\n");
    let p = write(tmp.path(), "u.jsonl", &bytes);
    let e = load_custom(&cfg(&p), &STRICT).unwrap_err();
    assert_bad_row(&e, &p, 2, None);
    assert!(e.to_string().contains("invalid UTF-8"), "{e}");
}

#[test]
fn empty_files() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("empty.csv", ""),
        ("header_only.csv", "text,label\n"),
        ("empty.jsonl", "\n\n"),
        ("empty.tsv", ""),
    ] {
        let p = write(tmp.path(), name, content);
        let e = load_custom(&cfg(&p), &SKIP).unwrap_err();
        assert!(matches!(e, DataError::EmptyFile { .. }), "{name}: {e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("{}: file is empty", p.display())),
            "{e}"
        );
    }
    // GLUE CoLA (no header) empty file
    write(tmp.path(), "glue/CoLA/dev.tsv", "");
    let e = load_glue_split(GlueTask::Cola, &tmp.path().join("glue"), "dev", &STRICT).unwrap_err();
    assert!(e.to_string().contains("CoLA/dev.tsv: file is empty"), "{e}");
    // all rows bad with skip_bad_rows: still an error, not an empty dataset
    let p = write(tmp.path(), "allbad.csv", "text,label\na\nb\n");
    let e = load_custom(&cfg(&p), &SKIP).unwrap_err();
    assert!(e.to_string().contains("2 malformed rows skipped"), "{e}");
}

#[test]
fn missing_column_in_header() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), "m.csv", "sentence,label\na,0\n");
    let e = load_custom(&cfg(&p), &SKIP).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:1: column \"text\" is missing from the header (found columns [\"sentence\", \"label\"])",
            p.display()
        )
    );
    // GLUE: SST-2 file whose header lacks `label`
    let sst = write(
        tmp.path(),
        "glue/SST-2/train.tsv",
        "sentence\tlabl\nfoo \t0\n",
    );
    let e = load_glue_split(GlueTask::Sst2, &tmp.path().join("glue"), "train", &SKIP).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}:1: column \"label\" is missing", sst.display())),
        "{e}"
    );
    // JSONL: a missing key is a row error naming the field
    let p = write(
        tmp.path(),
        "k.jsonl",
        "{\"text\": \"a\", \"label\": \"x\"}\n{\"txt\": \"b\", \"label\": \"y\"}\n{\"text\": \"c\", \"label\": \"y\"}\n{\"text\": \"d\", \"label\": \"x\"}\n{\"text\": \"e\", \"label\": \"y\"}\n",
    );
    let e = load_custom(&cfg(&p), &STRICT).unwrap_err();
    assert_bad_row(&e, &p, 2, Some("text"));
    let t = load_custom(&cfg(&p), &SKIP).unwrap();
    assert_eq!(t.skipped_rows, 1);
}

#[test]
fn invalid_json_and_wrong_types() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "j.jsonl",
        "{\"text\": \"a\", \"label\": 0}\n{not json\n[1, 2]\n{\"text\": 5, \"label\": 1}\n{\"text\": \"b\", \"label\": 1}\n{\"text\": \"c\", \"label\": 0}\n{\"text\": \"d\", \"label\": 1}\n",
    );
    let e = load_custom(&cfg(&p), &STRICT).unwrap_err();
    assert_bad_row(&e, &p, 2, None);
    assert!(e.to_string().contains("invalid JSON"), "{e}");
    let t = load_custom(&cfg(&p), &SKIP).unwrap();
    assert_eq!(t.skipped_rows, 3);
    assert_eq!(t.kind.labels(), ["0", "1"]);
}

#[test]
fn missing_file_and_bad_config() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("nope.csv");
    let e = load_custom(&cfg(&p), &STRICT).unwrap_err();
    assert!(e.to_string().contains("nope.csv does not exist"), "{e}");
    let p = write(tmp.path(), "x.txt", "text,label\na,0\n");
    let e = load_custom(&cfg(&p), &STRICT).unwrap_err();
    assert!(e.to_string().contains("set `format`"), "{e}");
    let p = write(tmp.path(), "one.csv", "text,label\na,0\nb,0\n");
    let e = load_custom(&cfg(&p), &STRICT).unwrap_err();
    assert!(e.to_string().contains("at least 2 labels"), "{e}");
    let mut c = cfg(&p);
    c.score = Some("label".into());
    c.label = Some("label".into());
    assert!(matches!(
        load_custom(&c, &STRICT),
        Err(DataError::Config(_))
    ));
}
