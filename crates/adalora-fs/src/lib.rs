//! The one file layer of the adalora crates.
//!
//! Every file any crate writes goes through [`replace_file`]: the new contents go to a hidden
//! temporary sibling (same folder, so the rename stays on one file system), the file is
//! fsynced, renamed over the target, and the folder is fsynced so the rename itself survives a
//! power cut. A crash, kill -9 or full disk at any point leaves the old file or the new one,
//! never a truncated one, and a failed write removes its temporary file.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// A file operation that failed, with the file it was about and what was being done to it.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {message}", path.display())]
pub struct FsError {
    pub path: PathBuf,
    pub action: &'static str,
    pub message: String,
    /// The OS error's kind, when there was one (e.g. `StorageFull` for a full disk).
    pub kind: Option<io::ErrorKind>,
}

impl FsError {
    pub fn io(action: &'static str, path: &Path, e: io::Error) -> Self {
        FsError {
            path: path.to_path_buf(),
            action,
            message: e.to_string(),
            kind: Some(e.kind()),
        }
    }

    fn other(action: &'static str, path: &Path, e: impl std::fmt::Display) -> Self {
        FsError {
            path: path.to_path_buf(),
            action,
            message: e.to_string(),
            kind: None,
        }
    }
}

/// Replace `path` with the file `fill` writes to the temporary path it is given (for
/// libraries that write to a path themselves: safetensors, plotters). Creates the folder.
pub fn replace_file<E: std::fmt::Display>(
    path: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), FsError> {
    let dir = parent(path);
    std::fs::create_dir_all(dir).map_err(|e| FsError::io("creating", dir, e))?;
    let tmp = temp_sibling(path);
    let written = fill(&tmp)
        .map_err(|e| FsError::other("writing", path, e))
        .and_then(|()| sync_file(&tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| FsError::io("replacing", path, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// Replace `path` with `bytes`.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    replace_file(path, |tmp| std::fs::write(tmp, bytes))
}

/// Replace `path` with the CSV that `fill` writes (quoted by the `csv` crate, so fields holding
/// commas, quotes or newlines round-trip).
pub fn write_csv(
    path: &Path,
    fill: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>,
) -> Result<(), FsError> {
    let mut w = csv_writer();
    fill(&mut w).map_err(|e| FsError::other("formatting", path, e))?;
    finish_csv(path, w)
}

/// A CSV built in memory, for writers whose rows can fail for other reasons than CSV; the
/// file appears only at [`finish_csv`].
pub fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::Writer::from_writer(Vec::new())
}

/// Replace `path` with the CSV built in `w`.
pub fn finish_csv(path: &Path, w: csv::Writer<Vec<u8>>) -> Result<(), FsError> {
    let bytes = w
        .into_inner()
        .map_err(|e| FsError::other("formatting", path, e))?;
    write(path, &bytes)
}

/// fsync a folder: makes the renames and creations inside it durable.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| FsError::io("syncing", dir, e))
}

/// fsync a file's contents.
pub fn sync_file(path: &Path) -> Result<(), FsError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| FsError::io("syncing", path, e))
}

/// `<dir>/.tmp-<pid>-<name>`: hidden, in the target's folder (so the rename is atomic), one
/// per process (two processes writing the same file do not share a temporary), and with the
/// target's extension (plotters picks the image format from it).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    parent(path).join(format!(".tmp-{}-{name}", std::process::id()))
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/x.json");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(entries(&dir.path().join("sub")), ["x.json"]);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        write(&p, b"old").unwrap();
        let err = replace_file(&p, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err::<(), _>(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["x.csv"]);
        let text = err.to_string();
        assert!(
            text.contains("x.csv") && text.contains("disk full"),
            "{text}"
        );
    }

    #[test]
    fn a_fill_that_writes_nothing_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("y.png");
        let err = replace_file(&p, |_| Ok::<(), String>(())).unwrap_err();
        assert!(err.to_string().contains("y.png"), "{err}");
        assert!(!p.exists());
    }

    #[test]
    fn csv_fields_with_commas_quotes_and_newlines_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.csv");
        let fields = ["a,b", "say \"hi\"", "two\nlines", "naïve"];
        write_csv(&p, |w| w.write_record(fields)).unwrap();
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_path(&p)
            .unwrap();
        let back: Vec<String> = r
            .records()
            .next()
            .unwrap()
            .unwrap()
            .iter()
            .map(String::from)
            .collect();
        assert_eq!(back, fields);
    }

    #[test]
    fn a_path_without_a_folder_writes_in_the_working_directory() {
        assert_eq!(parent(Path::new("x")), Path::new("."));
        let tmp = temp_sibling(Path::new("a/b.png"));
        assert_eq!(tmp.parent(), Some(Path::new("a")));
        assert_eq!(tmp.extension().and_then(|e| e.to_str()), Some("png"));
    }
}
