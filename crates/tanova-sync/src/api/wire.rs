//! The JSON bodies of the sync API, as the client reads and writes them.

use serde::{Deserialize, Serialize};

/// `GET /api/sync/health`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Health {
    pub success: bool,
    pub authenticated: bool,
    pub message: Option<String>,
    pub agency: Option<serde_json::Value>,
    pub permissions: Option<Permissions>,
    /// Present when the server takes several files per upload request.
    /// Read leniently: a malformed value means no batches, not an unreadable answer.
    #[serde(deserialize_with = "lenient", skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSupport>,
}

impl Health {
    /// How many files the server takes in one batch upload, if it takes batches at all.
    pub fn batch_max_files(&self) -> Option<usize> {
        self.batch.as_ref().map(|b| b.max_files).filter(|&n| n > 0)
    }
}

/// `batch` in the health answer: `{"maxFiles": N}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BatchSupport {
    pub max_files: usize,
}

/// `None` instead of an error when the value is not what it should be.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Permissions {
    pub can_upload: bool,
    pub can_read: bool,
}

/// `POST /api/sync/check-duplicate` request.
#[derive(Debug, Serialize)]
pub struct CheckDuplicate<'a> {
    pub checksum: &'a str,
}

/// `POST /api/sync/check-duplicate` answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateAnswer {
    pub exists: bool,
    #[serde(default)]
    pub candidate_name: Option<String>,
}

/// `POST /api/sync/upload` answer. The id may be a number or a string.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadAnswer {
    #[serde(default)]
    pub candidate_id: Option<serde_json::Value>,
}

/// `POST /api/sync/upload-batch` answer: a result per file.
#[derive(Debug, Deserialize)]
pub struct BatchAnswer {
    pub results: Vec<BatchResult>,
}

/// One file's result in a batch answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResult {
    /// The file's index in the request (`file_<index>`).
    pub index: usize,
    /// The HTTP status a single upload of this file would have had.
    pub status: u16,
    #[serde(default)]
    pub candidate_id: Option<serde_json::Value>,
    #[serde(default)]
    pub message: Option<String>,
}

/// The body of an error answer.
#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}
