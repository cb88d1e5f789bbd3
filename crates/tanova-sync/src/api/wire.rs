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

/// The body of an error answer.
#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}
