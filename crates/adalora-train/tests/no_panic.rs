//! Bad input is refused by name and good input loads to its values, never a panic: random and
//! mutated run configs, data rows, adapter configs, truncated and bit-flipped safetensors and
//! checkpoints go through the loaders. Each property knows, for every input it makes, what the
//! loader owes it:
//! * input that is well formed must load (`Ok`) to the values it holds;
//! * input that is broken must be refused with an error naming the file and the line, key or
//!   tensor at fault;
//! * where random damage leaves it open (a changed digit may still be in range), either will
//!   do, but a refusal must still name the file and a line, key or tensor of it.
//!
//! Plus the malformed PEFT adapters of issue 9 (wrong shapes for `r`, a missing `lora_B`, a
//! rank pattern or `r` that disagrees with the tensors), each refused by name.
//!
//! Inputs tried per run: see `CASES` (the test names print their counts with --nocapture).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use adalora_core::{AdaLoraConfig, LoraConfig, Method, MethodConfig, RankPattern, Steps};
use adalora_data::{load_custom, CustomTaskConfig, Example, LoadOptions, Target, TaskKind};
use adalora_model::loader::load_for_classification;
use adalora_model::{apply_method, AnyClassifier, SequenceClassifier, TargetSpec};
use adalora_train::io::{replace_dir, verify_manifest, write_manifest};
use adalora_train::params::{load_trainable, save_trainable};
use adalora_train::peft::{load_peft_adapter, save_peft_adapter, CONFIG_FILE, WEIGHTS_FILE};
use adalora_train::RunConfig;
use burn::backend::NdArray;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

type B = NdArray<f32>;
type Model = AnyClassifier<B>;
/// Trainability lives on autodiff tensors: on `B` a model has no trainable parameter, and its
/// trainable checkpoint would hold no tensor at all.
type Trainable = AnyClassifier<burn::backend::Autodiff<B>>;

/// Cases per property: 7 properties × 256 = 1,792 inputs per run.
const CASES: u32 = 256;

fn tiny_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model/tiny-bert")
}

fn base_model_on<BK: burn::tensor::backend::Backend>() -> AnyClassifier<BK> {
    // The fixture's head has 3 labels.
    load_for_classification::<BK>(&tiny_model_dir(), 3, 0, &Default::default())
        .unwrap()
        .0
}

fn adapted_on<BK: burn::tensor::backend::Backend>(method: MethodConfig) -> AnyClassifier<BK> {
    let target = TargetSpec::new("query,value,intermediate".parse().unwrap());
    apply_method(base_model_on::<BK>(), &method, &target, &Default::default())
        .unwrap()
        .0
}

fn base_model() -> Model {
    base_model_on::<B>()
}

fn adapted(method: MethodConfig) -> Model {
    adapted_on::<B>(method)
}

/// An AdaLoRA model whose adapters and head are trainable, numbered as the trainer numbers them.
fn trainable_model() -> Trainable {
    adalora_train::params::renumber_params(adapted_on(adalora_kind()))
}

fn lora_kind() -> MethodConfig {
    let cfg = LoraConfig::new().with_r(4).with_alpha(8.0);
    MethodConfig::lora(cfg)
}

fn adalora_kind() -> MethodConfig {
    let cfg = AdaLoraConfig {
        init_r: 4,
        target_r: 2,
        ..AdaLoraConfig::default()
    };
    MethodConfig::adalora(cfg.resolve(100).unwrap())
}

/// AdaLoRA's rank pattern for `n` SVD adapters: 3 of 4 triplets kept (2 of 4 in the first
/// module), so that rank patterns are exercised; none for LoRA (`n == 0`).
fn rank_pattern(n: usize) -> Option<RankPattern> {
    (n > 0).then(|| {
        let mut masks = vec![vec![true, false, true, true]; n];
        masks[0] = vec![false, true, false, true];
        RankPattern { masks }
    })
}

fn pattern_of(model: &Model) -> Option<RankPattern> {
    rank_pattern(adalora_core::AdapterHost::svd_adapters(model).len())
}

/// A valid adapter folder of `kind`.
fn saved_adapter(dir: &Path, kind: MethodConfig) -> PathBuf {
    let model = adapted(kind.clone());
    let out = dir.join("adapter");
    let pattern = pattern_of(&model);
    replace_dir(&out, |d| {
        save_peft_adapter(&model, &kind, pattern.as_ref(), None, d)
    })
    .unwrap();
    out
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Where in a file a refusal may point.
#[derive(Clone, Debug)]
enum Place {
    /// `line N` (TOML and JSON parse errors).
    Line,
    /// A key, column, setting or tensor, as a whole name (`r` is not found inside `error`).
    Name(String),
    /// Verbatim text, e.g. `data.csv:3:` (a file and line).
    Text(String),
}

impl Place {
    fn name(n: impl Into<String>) -> Place {
        Place::Name(n.into())
    }

    fn is_in(&self, msg: &str) -> bool {
        match self {
            Place::Line => msg
                .match_indices("line ")
                .any(|(i, _)| msg[i + 5..].starts_with(|c: char| c.is_ascii_digit())),
            Place::Name(n) => names_whole(msg, n),
            Place::Text(t) => msg.contains(t.as_str()),
        }
    }
}

/// `word` occurs in `msg` not as part of a longer identifier.
fn names_whole(msg: &str, word: &str) -> bool {
    let in_identifier = |c: char| c.is_alphanumeric() || c == '_';
    !word.is_empty()
        && msg.match_indices(word).any(|(i, _)| {
            let before = msg[..i].chars().next_back();
            let after = msg[i + word.len()..].chars().next();
            !before.is_some_and(in_identifier) && !after.is_some_and(in_identifier)
        })
}

/// The message names one of `files` and one of `places`.
fn names_file_and_place(msg: &str, files: &[&Path], places: &[Place]) -> Result<(), TestCaseError> {
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    prop_assert!(
        files.iter().any(|f| msg.contains(f.as_str())),
        "error names none of the files {files:?}: {msg}"
    );
    prop_assert!(
        places.iter().any(|p| p.is_in(msg)),
        "error names none of {places:?}: {msg}"
    );
    Ok(())
}

thread_local! {
    /// Inputs loaded and refused so far by the property running on this thread.
    static TALLY: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

fn count(loaded: bool) {
    TALLY.with(|t| {
        let (ok, err) = t.get();
        t.set(if loaded { (ok + 1, err) } else { (ok, err + 1) });
    });
}

/// Print what a property saw, and check that it saw both sides of its claim (an oracle that
/// never lets anything load tests half of it).
fn report(what: &str, need_loaded: bool) {
    let (loaded, refused) = TALLY.with(|t| t.replace((0, 0)));
    eprintln!("{what} tried: {CASES} ({loaded} loaded, {refused} refused)");
    assert!(refused > 0, "{what}: no input was refused");
    assert!(loaded > 0 || !need_loaded, "{what}: no input loaded");
}

/// `result` must be a refusal naming `file` and one of `places`.
fn refused<T>(
    result: anyhow::Result<T>,
    file: &Path,
    places: &[Place],
) -> Result<(), TestCaseError> {
    count(result.is_ok());
    match result {
        Ok(_) => Err(TestCaseError::fail(format!(
            "{} was accepted; expected an error naming one of {places:?}",
            file.display()
        ))),
        Err(e) => names_file_and_place(&format!("{e:#}"), &[file], places),
    }
}

/// `result` must load; its value is checked by `check`.
fn accepted<T>(
    result: anyhow::Result<T>,
    check: impl FnOnce(T) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    count(result.is_ok());
    match result {
        Ok(value) => check(value),
        Err(e) => Err(TestCaseError::fail(format!("refused good input: {e:#}"))),
    }
}

/// `result` may load (checked by `check`) or be refused naming one of `files` and `places`:
/// for input whose damage the property cannot judge.
fn either<T>(
    result: anyhow::Result<T>,
    files: &[&Path],
    places: &[Place],
    check: impl FnOnce(T) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    count(result.is_ok());
    match result {
        Ok(value) => check(value),
        Err(e) => names_file_and_place(&format!("{e:#}"), files, places),
    }
}

/// Byte-level damage: truncate, flip a bit, or overwrite a span.
#[derive(Clone, Debug)]
enum Damage {
    Truncate(prop::sample::Index),
    FlipBit(prop::sample::Index, u8),
    Overwrite(prop::sample::Index, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Damage::FlipBit(i, b)),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Damage::Overwrite(i, v)),
    ]
}

fn apply(bytes: &[u8], d: &Damage) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match d {
        Damage::Truncate(i) => out.truncate(i.index(bytes.len())),
        Damage::FlipBit(i, b) => out[i.index(bytes.len())] ^= 1 << b,
        Damage::Overwrite(i, v) => {
            let at = i.index(bytes.len());
            for (k, x) in v.iter().enumerate() {
                if let Some(slot) = out.get_mut(at + k) {
                    *slot = *x;
                }
            }
        }
    }
    out
}

/// Damage that lands in the safetensors header (its first bytes) half of the time.
fn header_damage() -> impl Strategy<Value = (bool, Damage)> {
    (any::<bool>(), damage())
}

fn damaged(bytes: &[u8], (in_header, d): &(bool, Damage)) -> Vec<u8> {
    if *in_header {
        let header =
            (bytes.len()).min(8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize);
        let mut head = apply(&bytes[..header], d);
        if head.len() < header {
            return head; // truncated inside the header
        }
        head.extend_from_slice(&bytes[header..]);
        head
    } else {
        apply(bytes, d)
    }
}

// ---------------------------------------------------------------------------------------------
// Run configs

/// Settings with a value in range for every run config of experiments/: applied as given.
const GOOD_SETTINGS: &[(&str, &str)] = &[
    ("seed", "7"),
    ("train.lr", "0.001"),
    ("train.batch_size", "8"),
    ("train.log_every", "3"),
    ("train.weight_decay", "0.01"),
    ("train.warmup_ratio", "0.1"),
    ("train.max_seq_len", "32"),
    ("lora.alpha", "4.0"),
    ("lora.dropout", "0.05"),
    ("adalora.beta1", "0.9"),
];

/// A setting that must be refused: out of range, of the wrong type, or not a setting at all.
#[derive(Clone, Copy, Debug)]
struct BadSetting {
    key: &'static str,
    value: &'static str,
    /// What the refusal must name: the setting, or the part of it that does not exist.
    culprit: &'static str,
}

const fn bad(key: &'static str, value: &'static str) -> BadSetting {
    BadSetting {
        key,
        value,
        culprit: key,
    }
}

const BAD_SETTINGS: &[BadSetting] = &[
    bad("train.lr", "-1"),
    bad("train.lr", "nan"),
    bad("train.lr", "\"fast\""),
    bad("train.batch_size", "0"),
    bad("train.batch_size", "-1"),
    bad("train.max_seq_len", "2"),
    bad("train.warmup_ratio", "1.5"),
    bad("train.dev_ratio", "1"),
    bad("lora.dropout", "-0.5"),
    bad("lora.alpha", "inf"),
    bad("adalora.dropout", "1.5"),
    bad("lora.r", "[1, -2]"),
    BadSetting {
        culprit: "nope",
        ..bad("train.nope", "1")
    },
    BadSetting {
        culprit: "nope",
        ..bad("nope.key", "1")
    },
];

/// A config file the property starts from.
#[derive(Clone, Debug)]
struct Seed {
    text: String,
    /// A run config (loads as it is), not a sweep spec (which `RunConfig::load` refuses).
    run_config: bool,
}

fn config_seeds() -> Vec<Seed> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut seeds: Vec<Seed> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .map(|text| Seed {
            run_config: !text.lines().any(|l| l.trim() == "[sweep]"),
            text,
        })
        .collect();
    seeds.push(Seed {
        text: RunConfig::default().to_toml().unwrap(),
        run_config: true,
    });
    assert!(seeds.iter().filter(|s| s.run_config).count() >= 3);
    seeds
}

#[derive(Clone, Debug)]
enum ConfigCase {
    /// A run config with in-range overrides: it loads, every override applied.
    Overridden(Seed, Vec<(&'static str, &'static str)>),
    /// The same plus one bad override: refused, naming that setting.
    BadOverride(Seed, Vec<(&'static str, &'static str)>, BadSetting),
    /// Any config file, damaged byte-wise, no overrides.
    Damaged(Seed, Damage),
}

fn config_cases(seeds: Vec<Seed>) -> impl Strategy<Value = ConfigCase> {
    let run_configs: Vec<Seed> = seeds.iter().filter(|s| s.run_config).cloned().collect();
    let good = || prop::sample::subsequence(GOOD_SETTINGS.to_vec(), 0..=3);
    let bad = prop::sample::select(BAD_SETTINGS.to_vec());
    prop_oneof![
        (prop::sample::select(run_configs.clone()), good())
            .prop_map(|(s, g)| ConfigCase::Overridden(s, g)),
        (prop::sample::select(run_configs), good(), bad)
            .prop_map(|(s, g, b)| ConfigCase::BadOverride(s, g, b)),
        (prop::sample::select(seeds), damage()).prop_map(|(s, d)| ConfigCase::Damaged(s, d)),
    ]
}

fn assignments(settings: &[(&str, &str)]) -> Vec<String> {
    settings.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn toml_value(literal: &str) -> toml::Value {
    let mut table: toml::Table = format!("v = {literal}").parse().unwrap();
    table.remove("v").unwrap()
}

/// The value at dotted `key` of a config, as its TOML form writes it.
fn setting_of(cfg: &RunConfig, key: &str) -> Option<toml::Value> {
    let table: toml::Table = cfg.to_toml().unwrap().parse().unwrap();
    let mut value = toml::Value::Table(table);
    for part in key.split('.') {
        value = value.get(part)?.clone();
    }
    Some(value)
}

fn overrides_applied(cfg: &RunConfig, settings: &[(&str, &str)]) -> Result<(), TestCaseError> {
    for (key, literal) in settings {
        let want = toml_value(literal);
        prop_assert_eq!(setting_of(cfg, key), Some(want), "setting {}", key);
    }
    Ok(())
}

/// Every key of a TOML document, at any depth (what a refusal of it may name).
fn toml_keys(value: &toml::Value, out: &mut Vec<Place>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                out.push(Place::name(k.clone()));
                toml_keys(v, out);
            }
        }
        toml::Value::Array(items) => items.iter().for_each(|v| toml_keys(v, out)),
        _ => {}
    }
}

fn places_of_toml(table: &toml::Table) -> Vec<Place> {
    let mut places = vec![Place::Line];
    toml_keys(&toml::Value::Table(table.clone()), &mut places);
    places
}

fn check_damaged_config(path: &Path, seed: &Seed, text: &str) -> Result<(), TestCaseError> {
    let result = RunConfig::load(Some(path), &[]);
    let original: toml::Table = seed.text.parse().unwrap();
    match text.parse::<toml::Table>() {
        // Not TOML any more: the parser's line must be in the error.
        Err(_) => refused(result, path, &[Place::Line]),
        // Damage that kept the document's meaning (a dropped final newline) is no damage.
        Ok(table) if table == original && seed.run_config => accepted(result, |cfg| {
            let undamaged = path.with_file_name("undamaged.toml");
            std::fs::write(&undamaged, &seed.text).unwrap();
            let want = RunConfig::load(Some(&undamaged), &[]).unwrap();
            prop_assert_eq!(cfg, want);
            Ok(())
        }),
        // A sweep spec is no run config: its own keys are what the refusal names.
        Ok(table) if table == original => refused(result, path, &places_of_toml(&table)),
        Ok(table) => either(result, &[path], &places_of_toml(&table), |_| Ok(())),
    }
}

#[test]
fn run_configs_mutated_or_with_random_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.toml");
    runner()
        .run(&config_cases(config_seeds()), |case| match case {
            ConfigCase::Overridden(seed, good) => {
                std::fs::write(&path, &seed.text).unwrap();
                let result = RunConfig::load(Some(&path), &assignments(&good));
                accepted(result, |cfg| overrides_applied(&cfg, &good))
            }
            ConfigCase::BadOverride(seed, mut settings, bad) => {
                std::fs::write(&path, &seed.text).unwrap();
                settings.push((bad.key, bad.value));
                let result = RunConfig::load(Some(&path), &assignments(&settings));
                refused(result, &path, &[Place::name(bad.culprit)])
            }
            ConfigCase::Damaged(seed, d) => {
                let text = String::from_utf8_lossy(&apply(seed.text.as_bytes(), &d)).into_owned();
                std::fs::write(&path, &text).unwrap();
                check_damaged_config(&path, &seed, &text)
            }
        })
        .unwrap();
    report("run configs", true);
}

// ---------------------------------------------------------------------------------------------
// Data rows

const LABELS: [&str; 2] = ["neg", "pos"];
/// Label cells and the class each names (cells are trimmed).
const GOOD_LABELS: [(&str, usize); 3] = [("neg", 0), ("pos", 1), (" pos ", 1)];
const BAD_LABELS: [&str; 4] = ["maybe", "", "POS", "1"];
/// Score cells and the score each holds.
const GOOD_SCORES: [(&str, f32); 4] = [
    ("0", 0.0),
    ("2.5", 2.5),
    (" -1e3", -1000.0),
    ("4.75 ", 4.75),
];
const BAD_SCORES: [&str; 5] = ["abc", "", "nan", "inf", "1e40"];

/// One data row: its text and what is in its target cell or its shape.
#[derive(Clone, Debug)]
enum Row {
    /// A well-formed row; the index picks a good label or score.
    Good(String, usize),
    /// A target that is no label of the set or no finite number.
    BadTarget(String, usize),
    /// Too many or too few columns; for JSON lines, no JSON object with a string text.
    Malformed(String, usize),
}

fn row() -> impl Strategy<Value = Row> {
    // Quotes, separators, backslashes, NUL and non-ASCII text; no tab or line break (a TSV
    // cell cannot hold them).
    let text = "[a-z ,;\"'{}\\[\\]:\\\\0-9.\\-é\u{0}]{0,10}";
    prop_oneof![
        6 => (text, 0usize..4).prop_map(|(t, k)| Row::Good(t, k)),
        1 => (text, 0usize..5).prop_map(|(t, k)| Row::BadTarget(t, k)),
        1 => (text, 0usize..4).prop_map(|(t, k)| Row::Malformed(t, k)),
    ]
}

/// The cell text and expected target of good target `k`.
fn good_target(k: usize, regression: bool) -> (&'static str, Target) {
    if regression {
        let (cell, score) = GOOD_SCORES[k % GOOD_SCORES.len()];
        (cell, Target::Score(score))
    } else {
        let (cell, class) = GOOD_LABELS[k % GOOD_LABELS.len()];
        (cell, Target::Class(class))
    }
}

fn bad_target(k: usize, regression: bool) -> &'static str {
    if regression {
        BAD_SCORES[k % BAD_SCORES.len()]
    } else {
        BAD_LABELS[k % BAD_LABELS.len()]
    }
}

fn csv_quoted(cell: &str) -> String {
    format!("\"{}\"", cell.replace('"', "\"\""))
}

/// A row of `text` and `target` in format `ext`.
fn line_of(ext: &str, text: &str, target: &str) -> String {
    match ext {
        "csv" => format!("{},{}", csv_quoted(text), csv_quoted(target)),
        "tsv" => format!("{text}\t{target}"),
        _ => serde_json::json!({"text": text, "label": target}).to_string(),
    }
}

fn malformed_line(ext: &str, text: &str, k: usize) -> String {
    let text = format!("x{text}"); // never an empty line (those are skipped)
    match (ext, k) {
        ("csv", k) if k % 2 == 0 => format!("{},pos,extra", csv_quoted(&text)),
        ("csv", _) => csv_quoted(&text),
        ("tsv", k) if k % 2 == 0 => format!("{text}\tpos\textra"),
        ("tsv", _) => text,
        (_, 0) => "{".to_string(),
        (_, 1) => "[1, 2]".to_string(),
        (_, 2) => serde_json::json!({"text": 5, "label": "pos"}).to_string(),
        _ => serde_json::json!({"label": "pos"}).to_string(),
    }
}

fn data_file(ext: &str, rows: &[Row], regression: bool) -> String {
    let mut text = match ext {
        "csv" => "text,label\n".to_string(),
        "tsv" => "text\tlabel\n".to_string(),
        _ => String::new(),
    };
    for row in rows {
        let line = match row {
            Row::Good(t, k) => line_of(ext, t, good_target(*k, regression).0),
            Row::BadTarget(t, k) => line_of(ext, t, bad_target(*k, regression)),
            Row::Malformed(t, k) => malformed_line(ext, t, *k),
        };
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// The loader's 1-based line of row `i` (a CSV/TSV header is line 1).
fn line_no(ext: &str, i: usize) -> usize {
    if ext == "jsonl" {
        i + 1
    } else {
        i + 2
    }
}

fn first_row(rows: &[Row], wanted: fn(&Row) -> bool) -> Option<usize> {
    rows.iter().position(wanted)
}

fn expected_examples(rows: &[Row], regression: bool) -> Vec<Example> {
    let good = rows.iter().filter_map(|r| match r {
        Row::Good(t, k) => Some((t, *k)),
        _ => None,
    });
    good.map(|(text, k)| Example {
        text_a: text.clone(),
        text_b: None,
        target: good_target(k, regression).1,
    })
    .collect()
}

/// Rows with a bad shape are reported before bad targets (the label set is found first).
fn check_data(
    path: &Path,
    ext: &str,
    rows: &[Row],
    regression: bool,
    result: anyhow::Result<adalora_data::Task>,
) -> Result<(), TestCaseError> {
    let at_line = |i: usize| Place::Text(format!("{}:{}:", path.display(), line_no(ext, i)));
    if rows.is_empty() {
        return refused(result, path, &[Place::name("empty")]);
    }
    if let Some(i) = first_row(rows, |r| matches!(r, Row::Malformed(..))) {
        return refused(result, path, &[at_line(i)]);
    }
    if let Some(i) = first_row(rows, |r| matches!(r, Row::BadTarget(..))) {
        let (file, line) = (path.display(), line_no(ext, i));
        let cell = Place::Text(format!("{file}:{line}: column \"label\""));
        return refused(result, path, &[cell]);
    }
    accepted(result, |task| {
        prop_assert_eq!(task.train.examples, expected_examples(rows, regression));
        if !regression {
            let labels = LABELS.map(String::from).to_vec();
            prop_assert_eq!(task.kind, TaskKind::Classification { labels });
        }
        Ok(())
    })
}

#[test]
fn data_rows_of_csv_tsv_and_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let rows = prop::collection::vec(row(), 0..12);
    let formats = prop::sample::select(vec!["csv", "tsv", "jsonl"]);
    let regression = any::<bool>();
    runner()
        .run(&(formats, rows, regression), |(ext, rows, regression)| {
            let path = dir.path().join(format!("data.{ext}"));
            std::fs::write(&path, data_file(ext, &rows, regression)).unwrap();
            // A separate good dev file: no split, so every train row is in `train`.
            let dev = dir.path().join(format!("dev.{ext}"));
            let dev_rows = [Row::Good("a".into(), 0), Row::Good("b".into(), 1)];
            std::fs::write(&dev, data_file(ext, &dev_rows, regression)).unwrap();
            let mut cfg = CustomTaskConfig::new(&path);
            cfg.dev = Some(dev);
            if regression {
                cfg.score = Some("label".into());
            } else {
                cfg.labels = Some(LABELS.map(String::from).to_vec());
            }
            let result = load_custom(&cfg, &LoadOptions::default()).map_err(anyhow::Error::from);
            check_data(&path, ext, &rows, regression, result)
        })
        .unwrap();
    report("data files", true);
}

// ---------------------------------------------------------------------------------------------
// Adapter configs

fn json_value() -> impl Strategy<Value = Value> {
    use serde_json::json;
    prop_oneof![
        Just(json!(null)),
        Just(json!(true)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(3)),
        Just(json!(16)),
        Just(json!(1e300)),
        Just(json!(-0.5)),
        Just(json!(2.5)),
        Just(json!("LORA")),
        Just(json!("ADALORA")),
        Just(json!("x")),
        Just(json!([true, false])),
        Just(json!([1, 2])),
        Just(json!({"bert.encoder.layer.0.attention.self.query": 2})),
        Just(json!({"bert.encoder.layer.0.attention.self.query.lora_E": [true]})),
        Just(json!({"query": "a"})),
        any::<i32>().prop_map(|v| json!(v)),
    ]
}

/// Keys whose value alone makes the config invalid, checked before any tensor is read.
fn invalid_keys(cfg: &Value) -> Vec<&'static str> {
    let number = |k: &str| cfg.get(k).filter(|v| !v.is_null()).map(Value::as_f64);
    let mut bad = vec![];
    if !matches!(cfg["peft_type"].as_str(), Some("LORA" | "ADALORA")) {
        bad.push("peft_type");
    }
    if matches!(number("lora_dropout"), Some(None))
        || number("lora_dropout")
            .flatten()
            .is_some_and(|p| !(0.0..1.0).contains(&p))
    {
        bad.push("lora_dropout");
    }
    if matches!(number("lora_alpha"), Some(None)) {
        bad.push("lora_alpha");
    }
    bad
}

/// The config's `key` as the loader must read it: PEFT's `default` when absent or null.
fn config_value<T: serde::de::DeserializeOwned>(
    cfg: &Value,
    key: &str,
    default: T,
) -> Result<T, TestCaseError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| TestCaseError::fail(format!("accepted {key} = {v} ({e})"))),
    }
}

/// An accepted config's settings are the file's (PEFT's defaults for absent keys).
fn method_matches_config(method: &MethodConfig, cfg: &Value) -> Result<(), TestCaseError> {
    let alpha = config_value::<f64>(cfg, "lora_alpha", 8.0)?;
    let dropout = config_value::<f64>(cfg, "lora_dropout", 0.0)?;
    match cfg["peft_type"].as_str() {
        Some("LORA") => {
            let l = &method.lora;
            prop_assert_eq!(method.method, Method::Lora);
            prop_assert_eq!(l.r, config_value::<usize>(cfg, "r", 8)?);
            prop_assert_eq!(l.alpha, alpha);
            prop_assert_eq!(l.dropout, dropout);
            prop_assert_eq!(
                l.use_rslora,
                config_value::<bool>(cfg, "use_rslora", false)?
            );
        }
        Some("ADALORA") => {
            let a = &method.adalora;
            prop_assert_eq!(method.method, Method::AdaLora);
            prop_assert_eq!(a.init_r, config_value::<usize>(cfg, "init_r", 12)?);
            prop_assert_eq!(a.target_r, config_value::<usize>(cfg, "target_r", 8)?);
            prop_assert_eq!(a.alpha, alpha);
            prop_assert_eq!(a.dropout, dropout);
            prop_assert_eq!(
                a.tinit,
                Steps::Count(config_value::<usize>(cfg, "tinit", 0)?)
            );
            prop_assert_eq!(
                a.tfinal,
                Steps::Count(config_value::<usize>(cfg, "tfinal", 0)?)
            );
            prop_assert_eq!(a.delta_t, config_value::<usize>(cfg, "deltaT", 1)?);
            prop_assert_eq!(a.beta1, config_value::<f64>(cfg, "beta1", 0.85)?);
            prop_assert_eq!(a.beta2, config_value::<f64>(cfg, "beta2", 0.85)?);
            prop_assert_eq!(
                a.orth_reg_weight,
                config_value::<f64>(cfg, "orth_reg_weight", 0.5)?
            );
            prop_assert_eq!(
                a.total_step,
                config_value::<Option<usize>>(cfg, "total_step", None)?
            );
        }
        other => prop_assert!(false, "accepted peft_type {:?}", other),
    }
    Ok(())
}

fn tensor_places(weights: &Path) -> Vec<Place> {
    let tensors = read_tensors(&std::fs::read(weights).unwrap()).unwrap();
    tensors.into_keys().map(Place::Name).collect()
}

#[test]
fn adapter_configs_with_random_values() {
    let dir = tempfile::tempdir().unwrap();
    let lora = saved_adapter(&dir.path().join("l"), lora_kind());
    let ada = saved_adapter(&dir.path().join("a"), adalora_kind());
    let keys = [
        "peft_type",
        "r",
        "lora_alpha",
        "lora_dropout",
        "use_rslora",
        "rank_pattern",
        "alpha_pattern",
        "init_r",
        "target_r",
        "tinit",
        "tfinal",
        "deltaT",
        "beta1",
        "beta2",
        "orth_reg_weight",
        "total_step",
        "target_modules",
    ];
    let edits = prop::collection::vec((prop::sample::select(keys.to_vec()), json_value()), 1..4);
    let base = base_model();
    runner()
        .run(&(any::<bool>(), edits), |(use_lora, edits)| {
            let src = if use_lora { &lora } else { &ada };
            let case = dir.path().join("case");
            let _ = std::fs::remove_dir_all(&case);
            std::fs::create_dir_all(&case).unwrap();
            std::fs::copy(src.join(WEIGHTS_FILE), case.join(WEIGHTS_FILE)).unwrap();
            let mut cfg: Value =
                serde_json::from_str(&std::fs::read_to_string(src.join(CONFIG_FILE)).unwrap())
                    .unwrap();
            let mut places = tensor_places(&case.join(WEIGHTS_FILE));
            for (k, v) in edits {
                cfg[k] = v;
                places.push(Place::name(k));
            }
            std::fs::write(case.join(CONFIG_FILE), cfg.to_string()).unwrap();
            let result = load_peft_adapter(base.clone(), &case, &Default::default());
            let config_file = case.join(CONFIG_FILE);
            let invalid: Vec<Place> = invalid_keys(&cfg).into_iter().map(Place::name).collect();
            if !invalid.is_empty() {
                return refused(result, &config_file, &invalid);
            }
            // Refused for a value of the config or a tensor it disagrees with.
            let files = [config_file.as_path(), &case.join(WEIGHTS_FILE)];
            either(result, &files, &places, |(_, method)| {
                method_matches_config(&method, &cfg)
            })
        })
        .unwrap();
    report("adapter configs", true);
}

// ---------------------------------------------------------------------------------------------
// Damaged safetensors files

/// A tensor as a file holds it; values only for F32 (the one dtype these files use).
#[derive(Clone, Debug, PartialEq)]
struct StTensor {
    dtype: String,
    shape: Vec<usize>,
    values: Vec<f32>,
}

impl StTensor {
    fn f32(shape: Vec<usize>, values: Vec<f32>) -> Self {
        let dtype = format!("{:?}", safetensors::Dtype::F32);
        StTensor {
            dtype,
            shape,
            values,
        }
    }
}

type Tensors = BTreeMap<String, StTensor>;

/// The file's tensors as safetensors reads them; `None` when it cannot.
fn read_tensors(bytes: &[u8]) -> Option<Tensors> {
    let st = safetensors::SafeTensors::deserialize(bytes).ok()?;
    let tensors = st.tensors().into_iter().map(|(name, view)| {
        let values = match view.dtype() {
            safetensors::Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            _ => Vec::new(),
        };
        let dtype = format!("{:?}", view.dtype());
        let shape = view.shape().to_vec();
        (
            name,
            StTensor {
                dtype,
                shape,
                values,
            },
        )
    });
    Some(tensors.collect())
}

/// A damaged safetensors file, judged by safetensors itself against the original.
enum Judged {
    /// safetensors cannot read it: the loader must refuse it.
    Unreadable,
    /// The original's tensors (names, dtypes, shapes), values perhaps changed: they must load.
    SameTensors(Tensors),
    /// Tensors renamed, reshaped or retyped: refused, naming one of these.
    OtherTensors(Vec<String>),
}

/// Names, dtypes and shapes: what a loader checks against the model.
fn layout(t: &Tensors) -> BTreeSet<(String, String, Vec<usize>)> {
    let entries = t
        .iter()
        .map(|(n, t)| (n.clone(), t.dtype.clone(), t.shape.clone()));
    entries.collect()
}

fn judge(original: &[u8], bytes: &[u8]) -> Judged {
    let want = read_tensors(original).unwrap();
    let Some(got) = read_tensors(bytes) else {
        return Judged::Unreadable;
    };
    let (a, b) = (layout(&want), layout(&got));
    if a == b {
        return Judged::SameTensors(got);
    }
    Judged::OtherTensors(
        a.symmetric_difference(&b)
            .map(|(n, ..)| n.clone())
            .collect(),
    )
}

/// What a refusal of an unreadable file may point at: the header (its JSON line, or the word),
/// or a tensor by name. One safetensors message names no tensor for an entry whose offsets
/// disagree with its shape and dtype; the loaders pass it on as it is, so it is accepted here.
fn unreadable_places(original: &[u8]) -> Vec<Place> {
    let mut places = vec![
        Place::Line,
        Place::name("header"),
        Place::name("metadata"),
        Place::Text("invalid shape, data type, or offset for tensor".into()),
    ];
    places.extend(read_tensors(original).unwrap().into_keys().map(Place::Name));
    places
}

/// Equal values, NaN equal to NaN (a flipped exponent bit may make one).
fn same_values(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

fn tensors_equal(got: &Tensors, want: &Tensors) -> Result<(), TestCaseError> {
    prop_assert_eq!(layout(got), layout(want));
    for (name, t) in want {
        prop_assert!(
            same_values(&got[name].values, &t.values),
            "{} holds other values",
            name
        );
    }
    Ok(())
}

/// The loader's outcome for damaged `bytes` (written to `file`), and `loaded_tensors` of what it
/// loaded, under the file's names.
fn check_damaged_file<T>(
    file: &Path,
    original: &[u8],
    bytes: &[u8],
    result: anyhow::Result<T>,
    loaded_tensors: impl FnOnce(T) -> Tensors,
) -> Result<(), TestCaseError> {
    match judge(original, bytes) {
        Judged::Unreadable => refused(result, file, &unreadable_places(original)),
        Judged::SameTensors(want) => accepted(result, |v| tensors_equal(&loaded_tensors(v), &want)),
        Judged::OtherTensors(names) => {
            let places: Vec<Place> = names.iter().flat_map(|n| tensor_names(n)).collect();
            refused(result, file, &places)
        }
    }
}

/// A tensor's name, and for a trainable checkpoint's `param.<id>` also the id as the loader
/// reads it (`param.07` is parameter 7, which is how its refusal names it).
fn tensor_names(name: &str) -> Vec<Place> {
    let mut names = vec![Place::name(name)];
    let id = name
        .strip_prefix("param.")
        .and_then(|d| d.parse::<u64>().ok());
    names.extend(id.map(|id| Place::Name(format!("param.{id}"))));
    names
}

fn tensors_in(file: &Path) -> Tensors {
    read_tensors(&std::fs::read(file).unwrap()).unwrap()
}

/// The adapter (and head) tensors of `model`, saved again in PEFT's layout. A loaded AdaLoRA
/// adapter holds only the triplets its rank pattern kept, so it is saved without one.
fn resaved_adapter(model: &Model, method: &MethodConfig, scratch: &Path) -> Tensors {
    replace_dir(scratch, |d| save_peft_adapter(model, method, None, None, d)).unwrap();
    tensors_in(&scratch.join(WEIGHTS_FILE))
}

#[test]
fn adapter_weights_truncated_or_bit_flipped() {
    let dir = tempfile::tempdir().unwrap();
    let lora = saved_adapter(&dir.path().join("l"), lora_kind());
    let ada = saved_adapter(&dir.path().join("a"), adalora_kind());
    let base = base_model();
    let scratch = dir.path().join("resaved");
    runner()
        .run(&(any::<bool>(), header_damage()), |(use_lora, d)| {
            let src = if use_lora { &lora } else { &ada };
            let case = dir.path().join("case");
            let _ = std::fs::remove_dir_all(&case);
            std::fs::create_dir_all(&case).unwrap();
            std::fs::copy(src.join(CONFIG_FILE), case.join(CONFIG_FILE)).unwrap();
            let bytes = std::fs::read(src.join(WEIGHTS_FILE)).unwrap();
            let changed = damaged(&bytes, &d);
            let file = case.join(WEIGHTS_FILE);
            std::fs::write(&file, &changed).unwrap();
            let result = load_peft_adapter(base.clone(), &case, &Default::default());
            check_damaged_file(&file, &bytes, &changed, result, |(model, method)| {
                resaved_adapter(&model, &method, &scratch)
            })
        })
        .unwrap();
    report("adapter weight files", true);
}

/// The model's weights under their HF names.
fn exported(model: &Model) -> Tensors {
    let tensors = model.export_hf().into_iter();
    tensors
        .map(|t| (t.name, StTensor::f32(t.shape, t.data)))
        .collect()
}

#[test]
fn model_checkpoints_truncated_or_bit_flipped() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("model");
    std::fs::create_dir_all(&case).unwrap();
    std::fs::copy(
        tiny_model_dir().join("config.json"),
        case.join("config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(tiny_model_dir().join("model.safetensors")).unwrap();
    let file = case.join("model.safetensors");
    runner()
        .run(&header_damage(), |d| {
            let changed = damaged(&bytes, &d);
            std::fs::write(&file, &changed).unwrap();
            let result = load_for_classification::<B>(&case, 3, 0, &Default::default())
                .map_err(anyhow::Error::from);
            check_damaged_file(&file, &bytes, &changed, result, |(model, _)| {
                exported(&model)
            })
        })
        .unwrap();
    report("model weight files", true);
}

#[test]
fn trainable_checkpoints_truncated_or_bit_flipped() {
    let dir = tempfile::tempdir().unwrap();
    let model = trainable_model();
    let good = dir.path().join("good.safetensors");
    let stored = save_trainable(&model, &good).unwrap();
    assert!(stored > 0, "the checkpoint must hold the adapters and head");
    let bytes = std::fs::read(&good).unwrap();
    let file = dir.path().join("trainable.safetensors");
    let resaved = dir.path().join("resaved.safetensors");
    runner()
        .run(&header_damage(), |d| {
            let changed = damaged(&bytes, &d);
            std::fs::write(&file, &changed).unwrap();
            let result = load_trainable(model.clone(), &file);
            check_damaged_file(&file, &bytes, &changed, result, |loaded| {
                save_trainable(&loaded, &resaved).unwrap();
                tensors_in(&resaved)
            })
        })
        .unwrap();
    report("trainable checkpoints", true);
}

/// What a refusal of a damaged checkpoint file must name besides it: for the manifest, the
/// parser's line or one of its entries; for a file it vouches for, that it is corrupted.
fn checkpoint_places(name: &str, manifest: &[u8]) -> Vec<Place> {
    if name != "manifest.json" {
        return vec![Place::name("corrupted")];
    }
    let mut places = vec![
        Place::Line,
        Place::name("corrupted"),
        Place::Text("valid UTF-8".into()),
    ];
    if let Ok(Value::Object(entries)) = serde_json::from_slice::<Value>(manifest) {
        places.extend(entries.keys().cloned().map(Place::Name));
    }
    places
}

#[test]
fn checkpoint_folders_with_a_damaged_file_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("checkpoint");
    let model = trainable_model();
    replace_dir(&ckpt, |d| {
        save_trainable(&model, &d.join("trainable.safetensors"))?;
        std::fs::write(d.join("optimizer.bin"), vec![7u8; 300])?;
        std::fs::write(d.join("state.json"), "{\"step\": 3}\n")?;
        write_manifest(d)
    })
    .unwrap();
    verify_manifest(&ckpt).unwrap();
    let files = [
        "trainable.safetensors",
        "optimizer.bin",
        "state.json",
        "manifest.json",
    ];
    runner()
        .run(
            &(prop::sample::select(files.to_vec()), damage()),
            |(name, d)| {
                let path = ckpt.join(name);
                let original = std::fs::read(&path).unwrap();
                let changed = apply(&original, &d);
                std::fs::write(&path, &changed).unwrap();
                let result = verify_manifest(&ckpt);
                std::fs::write(&path, &original).unwrap();
                // Damage that leaves the manifest's JSON meaning intact (say, a dropped final
                // newline) is no damage: the files it vouches for are still checked.
                let same_meaning = name == "manifest.json"
                    && serde_json::from_slice::<Value>(&changed).ok()
                        == serde_json::from_slice::<Value>(&original).ok();
                if changed == original || same_meaning {
                    accepted(result, |()| Ok(()))
                } else {
                    refused(result, &path, &checkpoint_places(name, &changed))
                }
            },
        )
        .unwrap();
    report("checkpoint folders", false);
}

/// Rewrite tensors of a saved adapter through `edit` (name → (shape, data)).
fn edit_weights(
    dir: &Path,
    edit: impl FnOnce(&mut std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>),
) {
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: std::collections::BTreeMap<_, _> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (n, (v.shape().to_vec(), data))
        })
        .collect();
    edit(&mut tensors);
    let list: Vec<_> = tensors
        .into_iter()
        .map(|(name, (shape, data))| adalora_model::loader::HfTensor { name, shape, data })
        .collect();
    adalora_model::loader::write_safetensors(&list, &path).unwrap();
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(CONFIG_FILE);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, cfg.to_string()).unwrap();
}

fn load_error(dir: &Path) -> String {
    match load_peft_adapter(base_model(), dir, &Default::default()) {
        Ok(_) => panic!("{} was accepted", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

const QUERY: &str = "base_model.model.bert.encoder.layer.0.attention.self.query";

#[test]
fn an_adapter_config_r_that_disagrees_with_the_tensors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = saved_adapter(dir.path(), lora_kind());
    load_peft_adapter(base_model(), &adapter, &Default::default()).unwrap();
    edit_config(&adapter, |c| c["r"] = 16.into());
    let err = load_error(&adapter);
    assert!(
        err.contains(&format!("{QUERY}.lora_A.weight")) && err.contains("r = 16"),
        "{err}"
    );
    edit_config(&adapter, |c| {
        c["r"] = 4.into();
        c["rank_pattern"] = serde_json::json!({"encoder.layer.1.attention.self.value": 2});
    });
    let err = load_error(&adapter);
    assert!(
        err.contains("rank_pattern") && err.contains("layer.1.attention.self.value.lora_A"),
        "{err}"
    );
}

#[test]
fn malformed_adapters_are_refused_by_tensor() {
    let dir = tempfile::tempdir().unwrap();
    // LoRA: lora_A with a wrong input size for its r, then a missing lora_B.
    let lora = saved_adapter(&dir.path().join("l"), lora_kind());
    edit_weights(&lora, |t| {
        *t.get_mut(&format!("{QUERY}.lora_A.weight")).unwrap() = (vec![4, 12], vec![0.1; 48]);
    });
    let err = load_error(&lora);
    assert!(
        err.contains(&format!(
            "{QUERY}.lora_A.weight has shape [4, 12], expected [4, 48]"
        )),
        "{err}"
    );
    let lora = saved_adapter(&dir.path().join("l2"), lora_kind());
    edit_weights(&lora, |t| {
        t.remove(&format!("{QUERY}.lora_B.weight"));
    });
    let err = load_error(&lora);
    assert!(
        err.contains(&format!("missing tensor {QUERY}.lora_B.weight")),
        "{err}"
    );
    // AdaLoRA: a rank pattern that keeps more triplets than are stored; a lora_E of the wrong shape.
    let ada = saved_adapter(&dir.path().join("a"), adalora_kind());
    edit_config(&ada, |c| {
        c["rank_pattern"]["bert.encoder.layer.0.attention.self.query.lora_E"] =
            serde_json::json!([true, true, true, true]);
    });
    let err = load_error(&ada);
    assert!(
        err.contains(&format!(
            "{QUERY}.lora_A has shape [2, 48], expected [4, 48]"
        )),
        "{err}"
    );
    let ada = saved_adapter(&dir.path().join("a2"), adalora_kind());
    edit_weights(&ada, |t| {
        let e = t.get_mut(&format!("{QUERY}.lora_E")).unwrap();
        *e = (vec![1, 2], vec![0.5, 0.5]);
    });
    let err = load_error(&ada);
    assert!(
        err.contains(&format!("{QUERY}.lora_E has shape [1, 2], expected [2, 1]")),
        "{err}"
    );
}
