//! Stopping a run on request: SIGTERM (Slurm's preemption, `scancel`, a time limit), SIGINT
//! (Ctrl-C) and SIGUSR1 (Slurm's warning, `--signal=B:USR1@<grace>`) make a run finish its
//! current optimizer step (and an evaluation due at it), write its checkpoint as at an
//! evaluation, record `interrupted.json` in its folder and return [`Interrupted`]; the CLI
//! exits with [`INTERRUPTED_EXIT`]. `--resume` then continues exactly where it stopped.
//!
//! The handlers only set a flag ([`signal_hook`]): nothing is written from a signal handler,
//! and the step in flight completes. A second Ctrl-C terminates at once, as users expect.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

/// The exit status of a process that stopped on a signal with everything saved: EX_TEMPFAIL,
/// "try again later" (distinct from success, from failures (1) and from a panic (101)).
pub const INTERRUPTED_EXIT: i32 = 75;

/// The file an interrupted run leaves in its folder (removed when the run resumes).
pub const INTERRUPTED_FILE: &str = "interrupted.json";

/// The signals that stop a run, and their names.
pub const STOP_SIGNALS: [(i32, &str); 3] = [
    (SIGTERM, "SIGTERM"),
    (SIGINT, "SIGINT"),
    (SIGUSR1, "SIGUSR1"),
];

/// The number of the first stop signal received (0: none).
fn received() -> &'static Arc<AtomicUsize> {
    static RECEIVED: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    RECEIVED.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// Route the stop signals to [`requested`] for the rest of the process (idempotent). Without
/// it a signal keeps its default action (the process dies, losing work since the last
/// checkpoint), so library users choose.
pub fn install() -> std::io::Result<()> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let interrupted_once = Arc::new(AtomicBool::new(false));
    // Checked before the flag below is set: the second Ctrl-C takes the default action.
    signal_hook::flag::register_conditional_default(SIGINT, Arc::clone(&interrupted_once))?;
    signal_hook::flag::register(SIGINT, interrupted_once)?;
    for (signal, _) in STOP_SIGNALS {
        signal_hook::flag::register_usize(signal, Arc::clone(received()), signal as usize)?;
    }
    let _ = INSTALLED.set(());
    Ok(())
}

/// The stop signal received so far, by name (`None`: keep going).
pub fn requested() -> Option<&'static str> {
    let signal = received().load(Ordering::SeqCst) as i32;
    STOP_SIGNALS
        .iter()
        .find(|(s, _)| *s == signal)
        .map(|(_, name)| *name)
}

/// A run stopped on a signal after saving a checkpoint at `step`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "interrupted by {signal} after step {step} of {total_steps}; the checkpoint is saved: \
     continue with `adalora train --out {} --resume`", .run.display()
)]
pub struct Interrupted {
    pub signal: String,
    pub step: usize,
    pub total_steps: usize,
    pub run: PathBuf,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

impl Interrupted {
    /// Record it in the run folder.
    pub fn write(&self) -> anyhow::Result<()> {
        crate::io::atomic_write_json(&self.run.join(INTERRUPTED_FILE), self)
    }

    /// The record an interrupted run left in `run`, if any.
    pub fn read(run: &Path) -> Option<Interrupted> {
        crate::io::read_json(&run.join(INTERRUPTED_FILE)).ok()
    }
}

/// A process other than a run (a sweep's scheduler) that stopped on a signal after its runs
/// saved their checkpoints.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("stopped by {signal}: {detail}")]
pub struct StopRequested {
    pub signal: String,
    pub detail: String,
}

/// Whether an error chain is a stop on a signal with everything saved, not a failure.
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.is::<Interrupted>() || c.is::<StopRequested>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_is_told_apart_from_failures() {
        let e = anyhow::Error::new(Interrupted {
            signal: "SIGTERM".into(),
            step: 3,
            total_steps: 9,
            run: "runs/x".into(),
            at: 0,
        })
        .context("training");
        assert!(is_interrupted(&e));
        assert!(format!("{e:#}").contains("--resume"));
        assert!(!is_interrupted(&anyhow::anyhow!("disk full")));
    }
}
