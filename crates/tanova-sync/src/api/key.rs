//! The API key: a secret that prints only its first 15 characters.

use std::fmt;

/// An API key that prints only its first 15 characters.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }
    /// The full key, for the request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The first 15 characters followed by an ellipsis: safe to print.
    pub fn redacted(&self) -> String {
        let shown: String = self.0.chars().take(15).collect();
        format!("{shown}…")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}
