//! Embeds the git commit this crate is built from and whether the work tree had uncommitted
//! changes to tracked files (`ADALORA_GIT_COMMIT`, `ADALORA_GIT_DIRTY`), for the provenance
//! every run records (`src/provenance.rs`). Without git or a `.git` (a source tarball, a
//! packaged crate) both are "unknown"; nothing here can fail the build.
//!
//! Re-run when `.git/HEAD`, `.git/index` or the ref HEAD points to changes (a commit, a
//! checkout, `git add`). Editing a tracked file without touching the index does not re-run it,
//! so the dirty flag can lag until the next `git add`/`git status` refreshes the index.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_default();
    println!("cargo:rerun-if-changed=build.rs");
    let root = manifest
        .ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf);
    let (commit, dirty) = match &root {
        Some(root) => {
            if let Some(git_dir) = git_dir(root) {
                watch(&git_dir);
            }
            (commit(root), dirty(root))
        }
        None => (None, None),
    };
    let commit = commit.unwrap_or_else(|| "unknown".into());
    let dirty = match dirty {
        Some(true) => "true",
        Some(false) => "false",
        None => "unknown",
    };
    println!("cargo:rustc-env=ADALORA_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=ADALORA_GIT_DIRTY={dirty}");
}

/// `.git` itself, or where a `.git` file (`gitdir: PATH`, worktrees and submodules) points.
fn git_dir(root: &Path) -> Option<PathBuf> {
    let dot_git = root.join(".git");
    if dot_git.is_dir() {
        return Some(dot_git);
    }
    let text = std::fs::read_to_string(&dot_git).ok()?;
    let target = text.lines().find_map(|l| l.strip_prefix("gitdir:"))?.trim();
    let path = root.join(target);
    path.is_dir().then_some(path)
}

/// `rerun-if-changed` on HEAD, the index and the branch ref, for the ones that exist (a path
/// that does not exist would re-run the script on every build).
fn watch(git_dir: &Path) {
    let mut paths = vec![git_dir.join("HEAD"), git_dir.join("index")];
    // A worktree keeps its refs in the common directory.
    let common = std::fs::read_to_string(git_dir.join("commondir"))
        .ok()
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or_else(|| git_dir.to_path_buf());
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) {
        if let Some(reference) = head.trim().strip_prefix("ref:") {
            let reference = reference.trim();
            paths.push(git_dir.join(reference));
            paths.push(common.join(reference));
            // A packed ref lives here until the branch moves again.
            paths.push(common.join("packed-refs"));
        }
    }
    paths.sort();
    paths.dedup();
    for p in paths.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        // Never rewrite the index (that would change a watched file and re-run this script).
        .arg("--no-optional-locks")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn commit(root: &Path) -> Option<String> {
    let hash = git(root, &["rev-parse", "HEAD"])?.trim().to_string();
    (!hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit())).then_some(hash)
}

fn dirty(root: &Path) -> Option<bool> {
    git(root, &["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.trim().is_empty())
}
