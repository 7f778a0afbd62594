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
use std::time::Duration;

use adalora_train::io::{atomic_write_json, read_json};
use adalora_train::provenance::Provenance;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::report_settings::ReportSettings;
use crate::spec::PlannedRun;

pub const MANIFEST_FILE: &str = "manifest.json";
const LOCK_FILE: &str = "manifest.lock";
pub const BACKUP_FILE: &str = "manifest.json.bak";
const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Running,
    Done,
    Failed,
}

/// How often a claiming process refreshes its claim's heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);
/// How old a heartbeat may get before its claim counts as abandoned: ten missed beats (the
/// claiming node died, lost the shared folder, or the process is a zombie nobody reaps).
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// Which process holds a running row (to tell a live run from one whose process died).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub host: String,
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub since: u64,
    /// When the claiming process last said it is working (seconds since the Unix epoch);
    /// absent in claims written before heartbeats were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<u64>,
}

impl Claim {
    pub fn mine() -> Self {
        let now = unix_now();
        Claim {
            host: host_name(),
            pid: std::process::id(),
            since: now,
            heartbeat: Some(now),
        }
    }

    /// Whether the claiming process may still be working on the row at `now`: on this host,
    /// while the process exists and its heartbeat is fresh; on another host (a cluster node
    /// sharing the folder), while its heartbeat is fresh. A claim without a heartbeat (older
    /// manifests) is judged by the process alone here and assumed alive elsewhere.
    pub fn is_live(&self, now: u64) -> bool {
        let fresh = self
            .heartbeat
            .is_none_or(|beat| now.saturating_sub(beat) <= STALE_AFTER.as_secs());
        fresh && (self.host != host_name() || process_alive(self.pid))
    }

    /// No process is working on the row any more: it can be claimed again and resumed.
    pub fn is_abandoned(&self) -> bool {
        !self.is_live(unix_now())
    }

    /// Made by process `pid` of this host.
    pub fn is_by(&self, pid: u32) -> bool {
        self.pid == pid && self.host == host_name()
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

    /// Where the manifest before the last change is kept (it parsed: a good one).
    pub fn backup_path(&self) -> PathBuf {
        self.root.join(BACKUP_FILE)
    }

    pub fn read(&self) -> anyhow::Result<Manifest> {
        let path = self.manifest_path();
        let m: Manifest = read_json(&path).map_err(|e| {
            let backup = self.backup_path();
            if path.exists() && backup.exists() {
                e.context(format!(
                    "{} is damaged; nothing was changed. The manifest before its last change is \
                     {}: check it and restore it with `cp {} {}`",
                    path.display(),
                    backup.display(),
                    backup.display(),
                    path.display()
                ))
            } else {
                e
            }
        })?;
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
        let before = m.clone();
        let out = change(&mut m)?;
        if m != before {
            // The good manifest it replaces stays as the backup.
            atomic_write_json(&self.backup_path(), &before)?;
            atomic_write_json(&self.manifest_path(), &m)?;
        }
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
        let existing = if path.exists() {
            Some(self.read()?)
        } else {
            None
        };
        let mut m = if let Some(m) = existing.clone() {
            m
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
            if let Some(before) = &existing {
                atomic_write_json(&self.backup_path(), before)?;
            }
            atomic_write_json(&path, &m)?;
        }
        Ok(m)
    }
}

/// A process of this host with this id exists (`kill(pid, 0)`: delivers nothing, only checks;
/// EPERM means it exists but belongs to someone else), and is not a zombie.
fn process_alive(pid: u32) -> bool {
    // 0 and ids beyond i32 would address process groups, not a process.
    let Ok(id) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if id <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 has no effect beyond its return value and errno.
    let rc = unsafe { libc::kill(id, 0) };
    let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

/// A killed process whose parent died too stays a zombie until something reaps it, which a
/// container's init may never do; kill(pid, 0) still finds it. Where Linux's /proc tells, such
/// a process is dead at once (elsewhere its heartbeat goes stale after [`STALE_AFTER`]).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state is the first field after the parenthesised command name.
            let (_, rest) = stat.rsplit_once(')')?;
            rest.trim_start().chars().next()
        })
        .is_some_and(|state| matches!(state, 'Z' | 'X'))
}

/// This machine's host name (`gethostname`), as a cluster's nodes tell each other apart.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated when it fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match (rc, std::str::from_utf8(&buf[..end])) {
        (0, Ok(name)) if !name.is_empty() => name.to_string(),
        _ => std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
    }
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
    fn a_damaged_manifest_is_an_error_and_the_last_good_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = SweepDir::new(dir.path().join("sw"));
        let planned = runs("[sweep]\nseed = [1, 2]\n");
        sweep
            .sync("s", "s.toml", &ReportSettings::default(), &planned)
            .unwrap();
        sweep
            .update(|m| {
                m.rows[1].status = Status::Done;
                Ok(())
            })
            .unwrap();
        let good = std::fs::read(sweep.manifest_path()).unwrap();
        sweep
            .update(|m| {
                m.rows[0].attempts = 7;
                Ok(())
            })
            .unwrap();
        // The backup is the manifest before the last change.
        assert_eq!(std::fs::read(sweep.backup_path()).unwrap(), good);
        let text = std::fs::read(sweep.manifest_path()).unwrap();
        std::fs::write(sweep.manifest_path(), &text[..text.len() / 2]).unwrap();
        for err in [
            sweep.read().unwrap_err(),
            sweep.update(|_| Ok(())).unwrap_err(),
            sweep
                .sync("s", "s.toml", &ReportSettings::default(), &planned)
                .unwrap_err(),
        ] {
            let err = format!("{err:#}");
            assert!(
                err.contains("damaged") && err.contains(BACKUP_FILE),
                "{err}"
            );
        }
        assert_eq!(std::fs::read(sweep.backup_path()).unwrap(), good, "kept");
        let restored: Manifest = read_json(&sweep.backup_path()).unwrap();
        assert_eq!(restored.rows[1].status, Status::Done);
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
    fn a_local_claim_is_live_while_its_process_exists() {
        let now = unix_now();
        let mine = Claim::mine();
        assert!(mine.is_live(now) && !mine.is_abandoned());
        // A process that has exited (reaped): dead at once, whatever its heartbeat says.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let exited = child.id();
        child.wait().unwrap();
        let dead = Claim {
            pid: exited,
            ..mine.clone()
        };
        assert!(!dead.is_live(now));
        assert!(!Claim {
            pid: u32::MAX - 1,
            ..mine.clone()
        }
        .is_live(now));
        // Alive but silent for longer than STALE_AFTER (a zombie nobody reaps): abandoned.
        let silent = Claim {
            heartbeat: Some(now - STALE_AFTER.as_secs() - 1),
            ..mine.clone()
        };
        assert!(!silent.is_live(now));
        let old_format = Claim {
            heartbeat: None,
            ..mine
        };
        assert!(old_format.is_live(now));
    }

    #[test]
    fn a_remote_claim_is_live_while_its_heartbeat_is_fresh() {
        let now = unix_now();
        let remote = |beat: Option<u64>| Claim {
            host: format!("{}-another-node", host_name()),
            // No such process here: a remote claim's pid says nothing about this host.
            pid: u32::MAX - 1,
            since: now - 3600,
            heartbeat: beat,
        };
        assert!(remote(Some(now - HEARTBEAT_EVERY.as_secs())).is_live(now));
        assert!(remote(Some(now - STALE_AFTER.as_secs())).is_live(now));
        assert!(!remote(Some(now - STALE_AFTER.as_secs() - 1)).is_live(now));
        assert!(
            remote(None).is_live(now),
            "older claims: left to their executor"
        );
    }

    #[test]
    fn host_name_is_this_machines() {
        let name = host_name();
        assert!(!name.is_empty() && !name.contains('\0'));
        if let Ok(proc_name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            assert_eq!(name, proc_name.trim());
        }
    }
}
