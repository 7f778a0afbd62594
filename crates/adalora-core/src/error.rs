//! Errors of the method core. Every invalid setting names the value and says why.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CoreError {
    #[error("invalid setting {name} = {value}: {why}")]
    Invalid {
        name: String,
        value: String,
        why: String,
    },
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("allocator state does not match the model: {0}")]
    State(String),
}

impl CoreError {
    pub(crate) fn invalid(name: &str, value: &str, why: &str) -> Self {
        CoreError::Invalid {
            name: name.to_string(),
            value: value.to_string(),
            why: why.to_string(),
        }
    }
}
