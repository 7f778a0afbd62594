//! The crate's error type.

use std::path::PathBuf;

/// Every failure of this crate. Row-level problems ([`DataError::BadRow`]) name the file, the
/// 1-based line (header line counted) and, where one applies, the field; they are the only
/// errors that [`crate::LoadOptions::skip_bad_rows`] turns into skipped-and-counted rows.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: cannot read file: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A required input file (a GLUE split, a cache asset, ...) does not exist.
    #[error("{what} not found: {} does not exist{}", .path.display(), hint_suffix(.hint))]
    MissingFile {
        what: String,
        path: PathBuf,
        hint: Option<String>,
    },
    /// The file has no header line (when one is required) or no data rows at all.
    #[error("{}: file is empty ({what})", .path.display())]
    EmptyFile { path: PathBuf, what: String },
    /// A column the task needs is absent from the header line.
    #[error("{}:{line}: column {column:?} is missing from the header (found columns {found:?})", .path.display())]
    MissingColumn {
        path: PathBuf,
        line: u64,
        column: String,
        found: Vec<String>,
    },
    /// One malformed data row (wrong column count, bad label, non-numeric score, invalid UTF-8, ...).
    #[error("{}:{line}: {}{message}", .path.display(), field_prefix(.field))]
    BadRow {
        path: PathBuf,
        line: u64,
        field: Option<String>,
        message: String,
    },
    /// Invalid configuration (task spec, split ratio, batch size, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A GLUE task name that is not known.
    #[error("unknown GLUE task {0:?} (expected one of CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI)")]
    UnknownTask(String),
    /// The tokenizer file could not be loaded or used.
    #[error("tokenizer {}: {message}", .path.display())]
    Tokenizer { path: PathBuf, message: String },
    /// Metric inputs that do not fit together (length or kind mismatch).
    #[error("metric: {0}")]
    Metric(String),
}

fn field_prefix(field: &Option<String>) -> String {
    match field {
        Some(f) => format!("column {f:?}: "),
        None => String::new(),
    }
}

fn hint_suffix(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!(" ({h})"),
        None => String::new(),
    }
}

impl DataError {
    /// Whether this is a row-level error that `skip_bad_rows` may skip.
    pub fn is_bad_row(&self) -> bool {
        matches!(self, DataError::BadRow { .. })
    }

    pub(crate) fn bad_row(
        path: &std::path::Path,
        line: u64,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        DataError::BadRow {
            path: path.to_path_buf(),
            line,
            field: field.map(str::to_string),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
