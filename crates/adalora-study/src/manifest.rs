//! The sweep manifest: one row per run (settings hash, settings, status, run folder, wall
//! time, error), shared by every process working on the sweep.
//!
//! Many processes (local children, Slurm array tasks on other nodes) update it at once, so
//! every change is a read-modify-write under an exclusive lock on `manifest.lock` (`flock`,
//! released by the kernel even on kill -9), written with the project's atomic replace: a
//! reader never sees a half-written file and no update is lost.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

use adalora_train::io::{atomic_write_json, read_json};
use adalora_train::provenance::Provenance;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::report_settings::ReportSettings;
use crate::spec::PlannedRun;

pub const MANIFEST_FILE: &str = "manifest.json";
const LOCK_FILE: &str = "manifest.lock";
const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Running,
    Done,
    Failed,
}

/// Which process holds a running row (to tell a live run from one whose process died).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub host: String,
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub since: u64,
}

impl Claim {
    pub fn mine() -> Self {
        Claim {
            host: host_name(),
            pid: std::process::id(),
            since: unix_now(),
        }
    }

    /// Known dead: a process of this host that no longer exists. Claims from other hosts are
    /// assumed alive (their executor, e.g. Slurm, knows better).
    pub fn is_dead_here(&self) -> bool {
        self.host == host_name() && !process_alive(self.pid)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub index: usize,
    /// FNV-1a of the run's resolved configuration.
    pub hash: String,
    pub label: String,
    /// The run's settings on top of the sweep's base configuration (`key=value`).
    pub settings: Vec<String>,
    pub status: Status,
    /// Relative to the sweep folder.
    pub run_dir: String,
    /// Wall time of all attempts that recorded an outcome, in seconds.
    pub wall_seconds: f64,
    pub attempts: u32,
    pub error: Option<String>,
    pub claim: Option<Claim>,
    /// Free-form notes of an executor (e.g. a Slurm job id).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub executor: BTreeMap<String, String>,
    /// The build and machine that finished the run (absent in rows from before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub name: String,
    /// The sweep file the manifest was made from (as given on the command line).
    pub sweep_file: String,
    /// `[report]` of the sweep file at the last sync (absent: the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportSettings>,
    /// The build and machine of the last sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    pub rows: Vec<Row>,
}

impl Manifest {
    /// How the sweep's report selects, compares and summarises (its `[report]`).
    pub fn report_settings(&self) -> ReportSettings {
        self.report.clone().unwrap_or_default()
    }

    pub fn count(&self, status: Status) -> usize {
        self.rows.iter().filter(|r| r.status == status).count()
    }
}

/// The sweep folder and its manifest.
#[derive(Clone, Debug)]
pub struct SweepDir {
    pub root: PathBuf,
}

impl SweepDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SweepDir { root: root.into() }
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.root.join(MANIFEST_FILE)
    }

    pub fn run_path(&self, row: &Row) -> PathBuf {
        self.root.join(&row.run_dir)
    }

    pub fn exists(&self) -> bool {
        self.manifest_path().exists()
    }

    pub fn read(&self) -> anyhow::Result<Manifest> {
        let m: Manifest = read_json(&self.manifest_path())?;
        if m.version != FORMAT_VERSION {
            bail!(
                "{}: manifest format version {} (this build reads {FORMAT_VERSION})",
                self.manifest_path().display(),
                m.version
            );
        }
        Ok(m)
    }

    /// Read, change and write the manifest while holding the lock.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut Manifest) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let _lock = self.lock()?;
        let mut m = self.read()?;
        let out = change(&mut m)?;
        atomic_write_json(&self.manifest_path(), &m)?;
        Ok(out)
    }

    fn lock(&self) -> anyhow::Result<File> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        let path = self.root.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    }

    /// Create the manifest for `runs`, or check an existing one against them: every row it
    /// holds must still be produced by the sweep file (else it belongs to another grid and
    /// nothing is touched); runs the file now adds are appended, so a study can grow.
    pub fn sync(
        &self,
        name: &str,
        sweep_file: &str,
        report: &ReportSettings,
        runs: &[PlannedRun],
    ) -> anyhow::Result<Manifest> {
        let _lock = self.lock()?;
        let path = self.manifest_path();
        let mut m = if path.exists() {
            self.read()?
        } else {
            Manifest {
                version: FORMAT_VERSION,
                name: name.to_string(),
                sweep_file: sweep_file.to_string(),
                report: None,
                provenance: None,
                rows: Vec::new(),
            }
        };
        let planned: BTreeMap<&str, &PlannedRun> =
            runs.iter().map(|r| (r.hash.as_str(), r)).collect();
        if let Some(row) = m
            .rows
            .iter()
            .find(|r| !planned.contains_key(r.hash.as_str()))
        {
            bail!(
                "{} belongs to a different grid: its run #{} ({}, settings {}) is not produced by \
                 {sweep_file}. Nothing was run or changed; use another --out, or restore the \
                 sweep file it was made from ({})",
                path.display(),
                row.index,
                row.label,
                row.settings.join(" "),
                m.sweep_file
            );
        }
        let known: BTreeMap<String, usize> =
            m.rows.iter().map(|r| (r.hash.clone(), r.index)).collect();
        let mut added = false;
        for run in runs.iter().filter(|r| !known.contains_key(&r.hash)) {
            let index = m.rows.len();
            m.rows.push(Row {
                index,
                hash: run.hash.clone(),
                label: run.label.clone(),
                settings: run.overrides(),
                status: Status::Pending,
                run_dir: format!("runs/{index:03}-{}", run.label),
                wall_seconds: 0.0,
                attempts: 0,
                error: None,
                claim: None,
                executor: BTreeMap::new(),
                provenance: None,
            });
            added = true;
        }
        let report = (*report != ReportSettings::default()).then(|| report.clone());
        let provenance = Some(Provenance::current(None));
        let changed = m.report != report || m.provenance != provenance;
        m.report = report;
        m.provenance = provenance;
        if added || changed || !path.exists() {
            atomic_write_json(&path, &m)?;
        }
        Ok(m)
    }
}

/// A process that exists and is not a zombie (a killed child whose parent died stays a zombie
/// until something reaps it, which a container's init may never do).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| !matches!(state, 'Z' | 'X')),
        Err(_) => false,
    }
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into())
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SweepSpec;
    use std::path::Path;

    fn runs(text: &str) -> Vec<PlannedRun> {
        SweepSpec::parse(Path::new("s.toml"), text)
            .unwrap()
            .expand()
            .unwrap()
    }

    #[test]
    fn sync_appends_new_runs_and_refuses_another_grid() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = SweepDir::new(dir.path().join("sw"));
        let two = runs("[sweep]\nseed = [1, 2]\n");
        let m = sweep
            .sync("s", "s.toml", &ReportSettings::default(), &two)
            .unwrap();
        assert_eq!(m.rows.len(), 2);
        assert!(m.rows.iter().all(|r| r.status == Status::Pending));
        // Growing the grid keeps the old rows (and their indices) and appends the new one.
        let three = runs("[sweep]\nseed = [3, 1, 2]\n");
        let m = sweep
            .sync("s", "s.toml", &ReportSettings::default(), &three)
            .unwrap();
        assert_eq!(m.rows.len(), 3);
        assert_eq!(m.rows[2].label, "seed3");
        // A grid that no longer produces row 0 is refused and the manifest is unchanged.
        let before = std::fs::read(sweep.manifest_path()).unwrap();
        let other = runs("[sweep]\nseed = [7]\n");
        let err = format!(
            "{:#}",
            sweep
                .sync("s", "s.toml", &ReportSettings::default(), &other)
                .unwrap_err()
        );
        assert!(
            err.contains("different grid") && err.contains("seed1"),
            "{err}"
        );
        assert_eq!(std::fs::read(sweep.manifest_path()).unwrap(), before);
    }

    #[test]
    fn concurrent_updates_are_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = SweepDir::new(dir.path().join("sw"));
        sweep
            .sync(
                "s",
                "s.toml",
                &ReportSettings::default(),
                &runs("[sweep]\nseed = [1]\n"),
            )
            .unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let sweep = sweep.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        sweep
                            .update(|m| {
                                m.rows[0].attempts += 1;
                                Ok(())
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(sweep.read().unwrap().rows[0].attempts, 200);
    }

    #[test]
    fn dead_claims_on_this_host_are_detected() {
        let mine = Claim::mine();
        assert!(!mine.is_dead_here());
        let gone = Claim {
            pid: u32::MAX - 1,
            ..mine.clone()
        };
        assert!(gone.is_dead_here());
        let elsewhere = Claim {
            host: "another-node".into(),
            ..gone
        };
        assert!(!elsewhere.is_dead_here());
    }
}
