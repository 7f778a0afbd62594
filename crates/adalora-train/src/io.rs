//! File output that never loses what was already written: atomic replace for JSON/checkpoints,
//! and run-folder guards.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;

/// Replace `path` with `bytes` atomically, with fsync of the file and its folder: the
/// project's one file layer ([`adalora_fs::write`]), with the training code's error type.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(adalora_fs::write(path, bytes)?)
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

/// [`fnv1a64`] as 16 hex digits: cheap, and enough to catch a torn or bit-flipped file.
pub fn fnv1a(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a64(bytes))
}

const MANIFEST: &str = "manifest.json";

/// Record the size and hash of every file of `dir` in `dir/manifest.json` (written last).
pub fn write_manifest(dir: &Path) -> anyhow::Result<()> {
    let mut files = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if path.is_file() && name != MANIFEST {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            files.insert(name, (bytes.len(), fnv1a(&bytes)));
        }
    }
    atomic_write_json(&dir.join(MANIFEST), &files)
}

/// Check `dir` against its manifest before anything parses its files: a corrupted or
/// replaced file is an error naming it (decoders of binary state may abort on garbage).
pub fn verify_manifest(dir: &Path) -> anyhow::Result<()> {
    check_manifest(dir).with_context(|| format!("checking {}", dir.join(MANIFEST).display()))
}

fn check_manifest(dir: &Path) -> anyhow::Result<()> {
    let files: std::collections::BTreeMap<String, (usize, String)> =
        read_json(&dir.join(MANIFEST))?;
    for (name, (len, hash)) in files {
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if bytes.len() != len || fnv1a(&bytes) != hash {
            bail!(
                "{} is corrupted: {} bytes with hash {}, recorded {len} bytes with hash {hash}",
                path.display(),
                bytes.len(),
                fnv1a(&bytes)
            );
        }
    }
    Ok(())
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

/// `.<name>.<what>` next to `target`: where [`replace_dir`] builds and parks folders. Fixed
/// names (no process id), so leftovers of a killed process are found and cleaned up; the run
/// lock keeps two processes from using them at once.
fn sibling(target: &Path, what: &str) -> PathBuf {
    let parent = target.parent().unwrap_or(Path::new("."));
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("dir");
    parent.join(format!(".{name}.{what}"))
}

/// fsync every file of a (flat) folder and the folder itself, so a rename that publishes it
/// publishes complete files.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() {
            adalora_fs::sync_file(&path)?;
        }
    }
    Ok(adalora_fs::sync_dir(dir)?)
}

/// Undo what a process killed inside [`replace_dir`] left behind: if it died between parking
/// the old folder and installing the new one, the old one goes back; half-built folders go.
pub fn recover_dir(target: &Path) -> anyhow::Result<()> {
    let (tmp, old) = (sibling(target, "tmp"), sibling(target, "old"));
    if !target.exists() && old.exists() {
        std::fs::rename(&old, target)
            .with_context(|| format!("restoring {} from {}", target.display(), old.display()))?;
    }
    for leftover in [tmp, old] {
        if leftover.exists() {
            std::fs::remove_dir_all(&leftover)
                .with_context(|| format!("removing {}", leftover.display()))?;
        }
    }
    Ok(())
}

/// Replace a directory atomically: build it under a temporary name, fsync, then swap. Until
/// the swap the previous folder stays complete; a failed build leaves it untouched and
/// removes the partial one.
pub fn replace_dir(
    target: &Path,
    build: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    recover_dir(target)?;
    let (tmp, old) = (sibling(target, "tmp"), sibling(target, "old"));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    if let Err(e) = build(&tmp).and_then(|_| sync_dir(&tmp)) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!(
            "writing {} (the previous version, if any, is intact)",
            target.display()
        )));
    }
    if target.exists() {
        std::fs::rename(target, &old).with_context(|| format!("moving {}", target.display()))?;
    }
    std::fs::rename(&tmp, target).with_context(|| format!("installing {}", target.display()))?;
    sync_dir(parent)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}

/// An exclusive lock on a run folder (`<run>/.lock`), held while the value lives. The OS drops
/// it when the process ends, even by kill -9, so a stale lock never blocks a later run.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunDir {
    /// Create the folder if needed and lock it; a second process on the same run refuses.
    pub fn lock(&self) -> anyhow::Result<RunLock> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        let path = self.root.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "{} is in use by another adalora process (lock {}); wait for it to finish or \
                 choose another --out",
                self.root.display(),
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_failed_build_keeps_the_previous_folder() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ckpt");
        replace_dir(&target, |d| atomic_write(&d.join("x"), b"1")).unwrap();
        let err = replace_dir(&target, |d| {
            atomic_write(&d.join("y"), b"2")?;
            bail!("disk full")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("ckpt"), "{err:#}");
        assert_eq!(std::fs::read(target.join("x")).unwrap(), b"1");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no leftovers"
        );
    }

    #[test]
    fn a_kill_between_the_two_renames_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ckpt");
        replace_dir(&target, |d| atomic_write(&d.join("x"), b"1")).unwrap();
        // What a process killed after parking the old folder leaves: no target, a parked
        // complete old one and a complete new one that never got installed.
        std::fs::rename(&target, sibling(&target, "old")).unwrap();
        std::fs::create_dir(sibling(&target, "tmp")).unwrap();
        recover_dir(&target).unwrap();
        assert_eq!(std::fs::read(target.join("x")).unwrap(), b"1");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_second_lock_on_a_run_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("r"));
        let held = run.lock().unwrap();
        let err = run.lock().unwrap_err().to_string();
        assert!(err.contains("in use by another adalora process"), "{err}");
        drop(held);
        run.lock().unwrap();
    }
}
