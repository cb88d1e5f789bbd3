//! The library's error for a value it refused: why, in words that name the
//! problem and never repeat a secret. Richer failures have their own types
//! (`ApiError`, `StateError`, `ConfigError`, `EngineError`, `AgentError`).

/// A value that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<Invalid> for String {
    fn from(e: Invalid) -> String {
        e.0
    }
}

/// Read as the message it carries.
impl std::ops::Deref for Invalid {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}
