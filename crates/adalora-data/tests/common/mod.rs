//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The real GLUE folder: `$GLUE_DIR`, else `<workspace>/../shared/glue`. Panics (fails the
/// test) with a clear message when it does not exist.
pub fn glue_dir() -> PathBuf {
    let dir = match std::env::var_os("GLUE_DIR") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/glue")),
    };
    assert!(
        dir.join("MANIFEST.tsv").is_file(),
        "GLUE data not found at {} (set GLUE_DIR or put the GLUE TSVs in <repo>/../shared/glue)",
        dir.display()
    );
    dir
}

/// The workspace's asset cache (`<workspace>/.cache`, or `$ADALORA_CACHE`).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("ADALORA_CACHE") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache")),
    }
}

/// The real tokenizer; fails with a hint to run the fetch script when absent.
pub fn tokenizer_path() -> PathBuf {
    let p = cache_dir().join("models/all-MiniLM-L6-v2/tokenizer.json");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-assets.sh",
        p.display()
    );
    p
}

/// Write `content` to `dir/name` and return the path.
pub fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, content).unwrap();
    p
}
