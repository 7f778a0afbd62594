//! Where a run's numbers come from: the build (git commit, uncommitted changes, crate version,
//! cargo features) and the machine (CPU model, cores, GPU, host name). Every new run records it
//! in `summary.json`; reports print [`Provenance::short`] in their header.
//!
//! The commit and dirtiness are embedded at build time by `build.rs` ("unknown" where git or
//! `.git` is unavailable, e.g. a source tarball); the machine is read when the run finishes.

use serde::{Deserialize, Serialize};

/// The build and machine a run was produced by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// `git rev-parse HEAD` of the build, or "unknown".
    pub commit: String,
    /// Tracked files differed from `commit` at build time (false when unknown).
    pub dirty: bool,
    /// The crate version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// Cargo features the build was made with that change results (`cuda`).
    pub features: Vec<String>,
    /// `/proc/cpuinfo`'s first "model name", or "unknown".
    pub cpu: String,
    /// `std::thread::available_parallelism` (what rayon uses by default).
    pub cores: usize,
    /// The GPU the run trained on (its model name where the driver tells it, else "cuda");
    /// `None` for a CPU run.
    pub gpu: Option<String>,
    /// `/proc/sys/kernel/hostname`, or "unknown".
    pub host: String,
}

const UNKNOWN: &str = "unknown";

impl Provenance {
    /// This build on this machine; `gpu` is the device the run used (`None` on CPU). Never
    /// panics: anything unreadable is "unknown".
    pub fn current(gpu: Option<String>) -> Self {
        let commit = option_env!("ADALORA_GIT_COMMIT")
            .filter(|c| !c.is_empty())
            .unwrap_or(UNKNOWN)
            .to_string();
        let mut features = Vec::new();
        if cfg!(feature = "cuda") {
            features.push("cuda".to_string());
        }
        Provenance {
            commit,
            dirty: option_env!("ADALORA_GIT_DIRTY") == Some("true"),
            version: env!("CARGO_PKG_VERSION").to_string(),
            features,
            cpu: cpu_model().unwrap_or_else(|| UNKNOWN.into()),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            gpu,
            host: host_name().unwrap_or_else(|| UNKNOWN.into()),
        }
    }

    /// One line for a report header, e.g. `abc1234 (dirty) · adalora 0.1.0 [cuda] · AMD EPYC
    /// 9454 ×2 cores · no GPU · devbox`.
    pub fn short(&self) -> String {
        let commit = if self.commit == UNKNOWN {
            "unknown commit".to_string()
        } else {
            self.commit.chars().take(7).collect()
        };
        let dirty = if self.dirty { " (dirty)" } else { "" };
        let features = if self.features.is_empty() {
            String::new()
        } else {
            format!(" [{}]", self.features.join(","))
        };
        let gpu = self.gpu.as_deref().unwrap_or("no GPU");
        format!(
            "{commit}{dirty} · adalora {}{features} · {} ×{} cores · {gpu} · {}",
            self.version, self.cpu, self.cores, self.host
        )
    }
}

/// The name of the GPU a run on `device` uses: the first NVIDIA GPU's model as the driver
/// reports it (`/proc/driver/nvidia/gpus/*/information`), else "cuda"; `None` on CPU.
pub fn gpu_name(device: crate::config::DeviceKind) -> Option<String> {
    match device {
        crate::config::DeviceKind::Cpu => None,
        crate::config::DeviceKind::Cuda => Some(nvidia_model().unwrap_or_else(|| "cuda".into())),
    }
}

fn nvidia_model() -> Option<String> {
    let mut gpus: Vec<_> = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    gpus.sort();
    let text = std::fs::read_to_string(gpus.first()?.join("information")).ok()?;
    field(&text, "Model")
}

fn cpu_model() -> Option<String> {
    field(
        &std::fs::read_to_string("/proc/cpuinfo").ok()?,
        "model name",
    )
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The value of the first `key: value` line (whitespace around both trimmed), if non-empty.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        let v = v.trim();
        (k.trim() == key && !v.is_empty()).then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_fills_every_field() {
        let p = Provenance::current(None);
        for (name, value) in [
            ("commit", &p.commit),
            ("version", &p.version),
            ("cpu", &p.cpu),
            ("host", &p.host),
        ] {
            assert!(!value.trim().is_empty(), "{name} is empty: {p:?}");
        }
        assert!(p.cores >= 1);
        assert_eq!(p.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(
            p.features.contains(&"cuda".to_string()),
            cfg!(feature = "cuda")
        );
        // Built from this repository's checkout: a full commit hash (CI clones with .git).
        if std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.git")).exists()
            && p.commit != UNKNOWN
        {
            assert_eq!(p.commit.len(), 40, "{}", p.commit);
            assert!(p.commit.chars().all(|c| c.is_ascii_hexdigit()));
        }
        if std::path::Path::new("/proc/cpuinfo").exists() && cfg!(target_arch = "x86_64") {
            assert_ne!(p.cpu, UNKNOWN);
        }
        let gpu = Provenance::current(Some("NVIDIA H100".into()));
        assert_eq!(gpu.gpu.as_deref(), Some("NVIDIA H100"));
        assert_eq!(gpu_name(crate::config::DeviceKind::Cpu), None);
        assert!(gpu_name(crate::config::DeviceKind::Cuda).is_some_and(|g| !g.is_empty()));
    }

    #[test]
    fn short_names_commit_build_and_machine() {
        let p = Provenance {
            commit: "abc1234def5678abc1234def5678abc1234def56".into(),
            dirty: true,
            version: "0.1.0".into(),
            features: vec!["cuda".into()],
            cpu: "AMD EPYC 9454 48-Core Processor".into(),
            cores: 2,
            gpu: None,
            host: "devbox".into(),
        };
        assert_eq!(
            p.short(),
            "abc1234 (dirty) · adalora 0.1.0 [cuda] · AMD EPYC 9454 48-Core Processor ×2 cores \
             · no GPU · devbox"
        );
        let clean = Provenance {
            commit: UNKNOWN.into(),
            dirty: false,
            features: vec![],
            gpu: Some("NVIDIA H200".into()),
            ..p
        };
        assert_eq!(
            clean.short(),
            "unknown commit · adalora 0.1.0 · AMD EPYC 9454 48-Core Processor ×2 cores · NVIDIA \
             H200 · devbox"
        );
    }

    #[test]
    fn fields_are_read_from_key_value_lines() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9454\n\
                    model name\t: other\n";
        assert_eq!(field(info, "model name").as_deref(), Some("AMD EPYC 9454"));
        assert_eq!(field(info, "missing"), None);
        assert_eq!(
            field("Model: \t NVIDIA H100 80GB HBM3\n", "Model").as_deref(),
            Some("NVIDIA H100 80GB HBM3")
        );
        assert_eq!(field("model name\t:\n", "model name"), None);
    }
}
