//! Helpers shared by the integration tests: a client that speaks the contract.

use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use reqwest::{Client, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tanova_emulator::{Emulator, DEFAULT_API_KEY};

/// A plain-HTTP client. The workspace's reqwest is built on rustls without a
/// provider of its own (the agent picks ring), so ring is installed first.
pub fn client() -> Client {
    install_tls();
    Client::new()
}

/// Make ring the process's rustls provider (any reqwest client needs one).
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Uploads `bytes` as `filename` with the given checksum and optional metadata.
pub async fn upload_with(
    emulator: &Emulator,
    filename: &str,
    bytes: Vec<u8>,
    checksum: &str,
    job_hint: Option<&str>,
    email: Option<&str>,
) -> reqwest::Result<Response> {
    let part = Part::bytes(bytes)
        .file_name(filename.to_owned())
        .mime_str("application/pdf")?;
    let mut form = Form::new()
        .part("file", part)
        .text("checksum", checksum.to_owned());
    if let Some(job_hint) = job_hint {
        form = form.text("job_hint", job_hint.to_owned());
    }
    if let Some(email) = email {
        form = form.text("email", email.to_owned());
    }
    post_upload(emulator, DEFAULT_API_KEY, form).await
}

/// Uploads `bytes` as `filename` with their correct checksum and the given API key.
pub async fn upload_as(
    emulator: &Emulator,
    key: &str,
    filename: &str,
    bytes: &[u8],
) -> reqwest::Result<Response> {
    let part = Part::bytes(bytes.to_vec())
        .file_name(filename.to_owned())
        .mime_str("application/pdf")?;
    let form = Form::new()
        .part("file", part)
        .text("checksum", sha256_hex(bytes));
    post_upload(emulator, key, form).await
}

async fn post_upload(emulator: &Emulator, key: &str, form: Form) -> reqwest::Result<Response> {
    client()
        .post(format!("{}/api/sync/upload", emulator.url()))
        .header("X-Tanova-API-Key", key)
        .multipart(form)
        .send()
        .await
}

/// Uploads `files` (name, bytes) in one batch request, with their correct checksums.
pub async fn upload_batch(
    emulator: &Emulator,
    files: &[(&str, &[u8])],
) -> reqwest::Result<Response> {
    let mut form = Form::new();
    for (i, (name, bytes)) in files.iter().enumerate() {
        let part = Part::bytes(bytes.to_vec())
            .file_name((*name).to_owned())
            .mime_str("application/pdf")?;
        form = form
            .text(format!("checksum_{i}"), sha256_hex(bytes))
            .part(format!("file_{i}"), part);
    }
    client()
        .post(format!("{}/api/sync/upload-batch", emulator.url()))
        .header("X-Tanova-API-Key", DEFAULT_API_KEY)
        .multipart(form)
        .send()
        .await
}

/// A check-duplicate with the given key, whatever the answer.
pub async fn check_duplicate_as(
    emulator: &Emulator,
    key: &str,
    checksum: &str,
) -> reqwest::Result<Response> {
    client()
        .post(format!("{}/api/sync/check-duplicate", emulator.url()))
        .header("X-Tanova-API-Key", key)
        .json(&json!({ "checksum": checksum }))
        .send()
        .await
}

/// Changes knobs over HTTP, as a script would, and gives the full knobs back.
pub async fn patch_knobs(emulator: &Emulator, patch: Value) -> Value {
    let response = client()
        .post(format!("{}/_emulator/knobs", emulator.url()))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "knobs {patch} refused");
    response.json().await.unwrap()
}

/// Polls `condition` until it holds (true) or five seconds pass (false).
pub async fn eventually(condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Uploads `bytes` as `filename` with their correct checksum.
pub async fn upload(
    emulator: &Emulator,
    filename: &str,
    bytes: &[u8],
) -> reqwest::Result<Response> {
    let checksum = sha256_hex(bytes);
    upload_with(emulator, filename, bytes.to_vec(), &checksum, None, None).await
}

pub async fn check_duplicate(emulator: &Emulator, checksum: &str) -> Value {
    let response = client()
        .post(format!("{}/api/sync/check-duplicate", emulator.url()))
        .header("X-Tanova-API-Key", DEFAULT_API_KEY)
        .json(&serde_json::json!({ "checksum": checksum }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

pub async fn health(emulator: &Emulator, key: &str) -> Response {
    client()
        .get(format!("{}/api/sync/health", emulator.url()))
        .header("X-Tanova-API-Key", key)
        .send()
        .await
        .unwrap()
}

/// An error answer's `message`.
pub async fn message(response: Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["message"].as_str().unwrap().to_owned()
}
