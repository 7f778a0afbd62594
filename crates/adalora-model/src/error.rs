//! Errors of the model crate. Every message names the file, tensor or setting at fault.

use std::path::PathBuf;

use thiserror::Error;

/// Hint appended to "model not found" errors.
pub const FETCH_HINT: &str =
    "run scripts/fetch-assets.sh (downloads all-MiniLM-L6-v2 into .cache/models) or pass --model DIR";

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model not found: {what}; {hint}")]
    ModelNotFound { what: String, hint: String },
    #[error("bad model config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("cannot read safetensors file {path}: {message}")]
    Safetensors { path: PathBuf, message: String },
    /// Missing, unexpected or mis-shaped tensors; one line per problem.
    #[error("checkpoint {path} does not match the model:\n  {}", problems.join("\n  "))]
    Weights {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("invalid target spec: {0}")]
    TargetSpec(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error(transparent)]
    Core(#[from] adalora_core::CoreError),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}
