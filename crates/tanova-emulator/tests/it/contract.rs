//! The sync API contract, exercised over real HTTP on loopback.

use crate::common::*;
use serde_json::{json, Value};
use tanova_emulator::{Emulator, Knobs, UploadRecord, DEFAULT_API_KEY};

async fn emulator() -> Emulator {
    Emulator::start(Knobs::default()).await.unwrap()
}

#[tokio::test]
async fn health_needs_the_right_key() {
    let emulator = emulator().await;
    let ok = health(&emulator, DEFAULT_API_KEY).await;
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(body["authenticated"], true);
    assert_eq!(body["agency"], "Emulator Agency");
    assert_eq!(
        body["permissions"],
        json!({"canUpload": true, "canRead": true})
    );

    let bad = health(&emulator, "tanova_sk_wrong").await;
    assert_eq!(bad.status(), 401);
    assert_eq!(message(bad).await, "Invalid API key");

    let missing = crate::common::client()
        .get(format!("{}/api/sync/health", emulator.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);

    let stats = emulator.stats();
    assert_eq!((stats.health_calls, stats.rejected_auth), (1, 2));
}

#[tokio::test]
async fn upload_then_check_duplicate_says_exists() {
    let emulator = emulator().await;
    let bytes = b"%PDF-1.4 Jane Smith".to_vec();
    let checksum = sha256_hex(&bytes);
    assert_eq!(
        check_duplicate(&emulator, &checksum).await,
        json!({"exists": false})
    );

    let response = upload_with(
        &emulator,
        "jane_smith_jane@example.com.pdf",
        bytes.clone(),
        &checksum,
        Some("Backend Engineer"),
        Some("jane@example.com"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["candidateId"], "cand_1");
    assert_eq!(body["candidateName"], "Jane Smith");

    assert_eq!(
        check_duplicate(&emulator, &checksum).await,
        json!({"exists": true, "candidateName": "Jane Smith"})
    );

    // The inspection endpoints report exactly what was received.
    let uploads: Vec<UploadRecord> = crate::common::client()
        .get(format!("{}/_emulator/uploads", emulator.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = UploadRecord {
        filename: "jane_smith_jane@example.com.pdf".into(),
        content_type: "application/pdf".into(),
        checksum: checksum.clone(),
        size: bytes.len() as u64,
        job_hint: Some("Backend Engineer".into()),
        email: Some("jane@example.com".into()),
        candidate_id: "cand_1".into(),
        duplicate: false,
    };
    assert_eq!(uploads, vec![expected]);
    assert_eq!(emulator.uploads(), uploads);

    let stats: Value = crate::common::client()
        .get(format!("{}/_emulator/stats", emulator.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["uploads"], 1);
    assert_eq!(stats["unique_checksums"], 1);
    assert_eq!(stats["check_duplicate_calls"], 2);
    assert_eq!(stats["bytes_received"], bytes.len());
    assert_eq!(stats["in_flight"], 0);
    assert_eq!(stats["peak_in_flight"], 1);
}

#[tokio::test]
async fn duplicate_upload_succeeds_and_is_counted() {
    let emulator = emulator().await;
    let first: Value = upload(&emulator, "a.pdf", b"same bytes")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again = upload(&emulator, "b.pdf", b"same bytes").await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["candidateId"], first["candidateId"]);

    let stats = emulator.stats();
    assert_eq!(
        (
            stats.uploads,
            stats.unique_checksums,
            stats.duplicate_uploads
        ),
        (2, 1, 1)
    );
    let flags: Vec<bool> = emulator.uploads().iter().map(|u| u.duplicate).collect();
    assert_eq!(flags, [false, true]);
}

#[tokio::test]
async fn checksum_mismatch_is_refused_and_not_stored() {
    let emulator = emulator().await;
    let wrong = sha256_hex(b"other bytes");
    let response = upload_with(&emulator, "a.pdf", b"bytes".to_vec(), &wrong, None, None)
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(message(response).await.starts_with("checksum mismatch: "));
    assert!(emulator.uploads().is_empty());
    assert_eq!(
        check_duplicate(&emulator, &sha256_hex(b"bytes")).await["exists"],
        false
    );
    let stats = emulator.stats();
    assert_eq!((stats.rejected_checksum, stats.uploads), (1, 0));
}

#[tokio::test]
async fn missing_fields_are_named() {
    let emulator = emulator().await;
    let send = |form: reqwest::multipart::Form| {
        crate::common::client()
            .post(format!("{}/api/sync/upload", emulator.url()))
            .header("X-Tanova-API-Key", DEFAULT_API_KEY)
            .multipart(form)
            .send()
    };
    let no_file = send(reqwest::multipart::Form::new().text("checksum", "abc"))
        .await
        .unwrap();
    assert_eq!(no_file.status(), 400);
    assert_eq!(message(no_file).await, "missing field: file");

    let part = reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("a.pdf");
    let no_checksum = send(reqwest::multipart::Form::new().part("file", part))
        .await
        .unwrap();
    assert_eq!(no_checksum.status(), 400);
    assert_eq!(message(no_checksum).await, "missing field: checksum");

    let not_json = crate::common::client()
        .post(format!("{}/api/sync/check-duplicate", emulator.url()))
        .header("X-Tanova-API-Key", DEFAULT_API_KEY)
        .body("{\"sum\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    assert!(message(not_json).await.contains("checksum"));
}

#[tokio::test]
async fn large_uploads_work_and_oversized_ones_get_413() {
    let emulator = emulator().await;
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let response = upload(&emulator, "big.pdf", &big).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(emulator.uploads()[0].size, big.len() as u64);
    assert_eq!(emulator.uploads()[0].checksum, sha256_hex(&big));

    emulator.set_knobs(|k| k.max_upload_bytes = 1024 * 1024);
    let response = upload(&emulator, "big.pdf", &big).await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(message(response).await, "File too large");
    assert_eq!(emulator.stats().uploads, 1);
}

#[tokio::test]
async fn preload_and_reset_over_http() {
    let emulator = emulator().await;
    let control = |path: &str, body: Value| {
        crate::common::client()
            .post(format!("{}/_emulator/{path}", emulator.url()))
            .json(&body)
            .send()
    };
    let known = sha256_hex(b"known");
    let response = control("preload", json!({"checksums": [known.to_uppercase()]}))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(check_duplicate(&emulator, &known).await["exists"], true);

    // Uploading preloaded bytes is a duplicate of the existing candidate.
    let body: Value = upload(&emulator, "k.pdf", b"known")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["candidateId"], "cand_1");
    assert_eq!(emulator.stats().duplicate_uploads, 1);

    assert_eq!(control("reset", json!({})).await.unwrap().status(), 200);
    assert_eq!(emulator.stats(), Default::default());
    assert!(emulator.uploads().is_empty());
    assert_eq!(check_duplicate(&emulator, &known).await["exists"], false);
}

#[tokio::test]
async fn unknown_paths_get_json_404() {
    let emulator = emulator().await;
    let response = crate::common::client()
        .get(format!("{}/nope", emulator.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(message(response).await, "Not found");
}
