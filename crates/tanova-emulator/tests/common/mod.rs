//! Helpers shared by the integration tests: a client that speaks the contract.

#![allow(dead_code)] // Each test binary uses a different subset.

use reqwest::multipart::{Form, Part};
use reqwest::{Client, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tanova_emulator::{Emulator, DEFAULT_API_KEY};

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
    Client::new()
        .post(format!("{}/api/sync/upload", emulator.url()))
        .header("X-Tanova-API-Key", DEFAULT_API_KEY)
        .multipart(form)
        .send()
        .await
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
    let response = Client::new()
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
    Client::new()
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
