//! Helpers shared by the end-to-end tests of the `adalora` binary (each test file includes
//! this module and uses the part it needs).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `adalora` binary with one BLAS/rayon thread (tests run side by side) and the
/// repository's model and data cache, also for runs started outside the repository.
pub fn adalora() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adalora"));
    c.env("OPENBLAS_NUM_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1");
    if std::env::var_os("ADALORA_CACHE").is_none() {
        c.env(
            "ADALORA_CACHE",
            std::path::absolute(root().join(".cache")).unwrap(),
        );
    }
    c
}

/// `adalora ARGS`, waited for.
pub fn run(args: &[&str]) -> Output {
    adalora().args(args).output().expect("run adalora")
}

/// `adalora ARGS` in `dir`, waited for.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    adalora()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run adalora")
}

/// Exit status, stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The output of a command that must have succeeded.
pub fn ok(out: Output) -> Output {
    assert!(out.status.success(), "adalora failed:\n{}", text(&out));
    out
}

/// The stdout of a command that must have succeeded.
pub fn ok_stdout(out: Output) -> String {
    stdout(&ok(out))
}

/// The stderr of a command that must have failed with a message (not a panic) containing
/// `needle`.
pub fn fails_with(out: Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "expected a failure mentioning {needle:?}:\n{}",
        text(&out)
    );
    assert!(
        err.contains(needle),
        "stderr should mention {needle:?}:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "a panic is not an error message:\n{err}"
    );
    err
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A CSV without quoted fields, split into cells (header included).
pub fn read_csv(path: &Path) -> Vec<Vec<String>> {
    read(path)
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

/// The tiny BERT fixture (`fixtures/model/tiny-bert`: 2 layers, hidden 48, 512-token
/// vocabulary) without its 3-label head, so any task's head is new; built once per test
/// binary.
pub fn tiny_model() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let fixture = root().join("fixtures/model/tiny-bert");
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(fixture.join(f), dir.path().join(f)).unwrap();
        }
        let bytes = std::fs::read(fixture.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let encoder: Vec<_> = st
            .tensors()
            .into_iter()
            .filter(|(name, _)| !name.starts_with("classifier."))
            .collect();
        safetensors::serialize_to_file(encoder, None, &dir.path().join("model.safetensors"))
            .unwrap();
        dir
    });
    dir.path().to_path_buf()
}

/// A sweep folder's `manifest.json`.
pub fn manifest(sweep: &Path) -> serde_json::Value {
    json(&sweep.join("manifest.json"))
}

pub fn rows(sweep: &Path) -> Vec<serde_json::Value> {
    manifest(sweep)["rows"].as_array().unwrap().clone()
}

/// The run folder of a manifest row.
pub fn run_dir(sweep: &Path, row: &serde_json::Value) -> PathBuf {
    sweep.join(row["run_dir"].as_str().unwrap())
}

/// Steps of the training rows of a run's metrics.csv, in file order.
pub fn train_steps(run: &Path) -> Vec<usize> {
    let path = run.join("metrics.csv");
    let mut reader =
        csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    reader
        .records()
        .map(|r| r.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|r| &r[2] == "train")
        .map(|r| r[0].parse().unwrap())
        .collect()
}

/// Ranks an AdaLoRA `adapter_config.json` keeps: the true entries of its `rank_pattern` masks.
pub fn kept_ranks(adapter_config: &serde_json::Value) -> usize {
    adapter_config["rank_pattern"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| {
            m.as_array()
                .unwrap()
                .iter()
                .filter(|b| b.as_bool().unwrap())
                .count()
        })
        .sum()
}
