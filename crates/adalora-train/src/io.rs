//! File output that never loses what was already written: atomic replace for JSON/checkpoints,
//! and run-folder guards.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;

/// Write `bytes` to `path` via a temporary sibling and a rename (atomic on POSIX), with fsync,
/// so a crash leaves either the old or the new file, never a truncated one.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// FNV-1a (64-bit): a stable, dependency-free fingerprint of bytes (base-model identity,
/// sweep settings). Not cryptographic.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

pub fn atomic_write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    atomic_write(path, text.as_bytes())
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The files of a run folder.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.csv")
    }
    pub fn rank_pattern(&self) -> PathBuf {
        self.root.join("rank_pattern.json")
    }
    pub fn rank_history(&self) -> PathBuf {
        self.root.join("rank_pattern_history.jsonl")
    }
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    /// Latest resumable state (adapter + head + optimizer + allocator + progress).
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint")
    }
    /// Best adapter by the task's main metric, in PEFT's layout.
    pub fn best_adapter(&self) -> PathBuf {
        self.root.join("best")
    }
    /// Final adapter in PEFT's layout.
    pub fn final_adapter(&self) -> PathBuf {
        self.root.join("adapter")
    }

    /// Prepare the folder for a new run: refuse one holding a finished run (or any run
    /// state) unless `overwrite`; never deletes anything else in it.
    pub fn prepare_fresh(&self, overwrite: bool) -> anyhow::Result<()> {
        let finished = self.summary().exists();
        let started = self.checkpoint().exists() || self.metrics().exists();
        if (finished || started) && !overwrite {
            if finished {
                bail!(
                    "{} already holds a finished run (summary.json); pass --overwrite to replace it, \
                     or choose another --out",
                    self.root.display()
                );
            }
            bail!(
                "{} holds an unfinished run; pass --resume to continue it or --overwrite to start over",
                self.root.display()
            );
        }
        if overwrite {
            for p in [
                self.summary(),
                self.metrics(),
                self.rank_pattern(),
                self.rank_history(),
            ] {
                if p.exists() {
                    std::fs::remove_file(&p)
                        .with_context(|| format!("removing {}", p.display()))?;
                }
            }
            for d in [self.checkpoint(), self.best_adapter(), self.final_adapter()] {
                if d.exists() {
                    std::fs::remove_dir_all(&d)
                        .with_context(|| format!("removing {}", d.display()))?;
                }
            }
        }
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))
    }
}

/// Replace a directory atomically: build it under a temporary name, then swap.
pub fn replace_dir(
    target: &Path,
    build: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("dir");
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    build(&tmp)?;
    if target.exists() {
        std::fs::rename(target, &old)?;
    }
    std::fs::rename(&tmp, target).with_context(|| format!("installing {}", target.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn finished_run_is_refused_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("r"));
        run.prepare_fresh(false).unwrap();
        atomic_write(&run.summary(), b"{}").unwrap();
        let err = run.prepare_fresh(false).unwrap_err().to_string();
        assert!(
            err.contains("finished run") && err.contains("--overwrite"),
            "{err}"
        );
        run.prepare_fresh(true).unwrap();
        assert!(!run.summary().exists());
    }

    #[test]
    fn replace_dir_swaps_contents() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ckpt");
        replace_dir(&target, |d| atomic_write(&d.join("x"), b"1")).unwrap();
        replace_dir(&target, |d| atomic_write(&d.join("y"), b"2")).unwrap();
        assert!(!target.join("x").exists());
        assert_eq!(std::fs::read(target.join("y")).unwrap(), b"2");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
