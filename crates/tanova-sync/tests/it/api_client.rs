//! The HTTP client against the emulator: the contract's calls, and the stale-checksum guard.

use std::time::Duration;

use crate::common::client;
use tanova_emulator::{Emulator, Knobs, DEFAULT_API_KEY};
use tanova_sync::api::{ApiError, Upload};
use tanova_sync::hash::sha256_hex;

fn upload<'a>(path: &'a std::path::Path, checksum: &'a str, size: u64) -> Upload<'a> {
    Upload {
        path,
        checksum,
        size,
        mime: "application/pdf",
        job_hint: Some("Nurse".into()),
        email: None,
        fence: None,
        bytes: None,
    }
}

#[tokio::test]
async fn health_check_duplicate_and_upload_follow_the_contract() {
    let emulator = Emulator::start(Knobs::default()).await.unwrap();
    let api = client(&emulator, DEFAULT_API_KEY);
    let health = api.health().await.unwrap();
    assert!(health.authenticated && health.permissions.unwrap().can_upload);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cv.pdf");
    std::fs::write(&path, b"%PDF cv").unwrap();
    let sum = sha256_hex(b"%PDF cv");
    assert!(!api.check_duplicate(&sum).await.unwrap().exists);
    let id = api.upload(&upload(&path, &sum, 7)).await.unwrap();
    assert_eq!(id.as_deref(), Some("cand_1"));
    assert!(api.check_duplicate(&sum).await.unwrap().exists);
    let rec = &emulator.uploads()[0];
    assert_eq!(
        (rec.filename.as_str(), rec.job_hint.as_deref(), rec.size),
        ("cv.pdf", Some("Nurse"), 7)
    );
}

#[tokio::test]
async fn a_file_changed_since_hashing_is_never_uploaded_under_the_old_checksum() {
    let emulator = Emulator::start(Knobs::default()).await.unwrap();
    let api = client(&emulator, DEFAULT_API_KEY);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cv.pdf");
    // Hashed as "version 1", then rewritten with other bytes of the same length.
    let stale = sha256_hex(b"version 1");
    std::fs::write(&path, b"version 2").unwrap();
    let err = api.upload(&upload(&path, &stale, 9)).await.unwrap_err();
    assert!(matches!(err, ApiError::FileChanged), "{err:?}");
    // Truncated since hashing.
    std::fs::write(&path, b"ver").unwrap();
    let err = api.upload(&upload(&path, &stale, 9)).await.unwrap_err();
    assert!(matches!(err, ApiError::FileChanged), "{err:?}");
    let stats = emulator.stats();
    assert_eq!(
        (stats.uploads, stats.rejected_checksum),
        (0, 0),
        "the server never got a complete stale body"
    );
}

#[tokio::test]
async fn a_file_that_grew_is_uploaded_as_hashed() {
    let emulator = Emulator::start(Knobs::default()).await.unwrap();
    let api = client(&emulator, DEFAULT_API_KEY);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cv.txt");
    std::fs::write(&path, b"hashed part, then appended").unwrap();
    let sum = sha256_hex(b"hashed part");
    api.upload(&upload(&path, &sum, 11)).await.unwrap();
    assert_eq!(emulator.uploads()[0].checksum, sum);
}

#[tokio::test]
async fn statuses_map_to_errors_that_say_what_to_do() {
    let emulator = Emulator::start(Knobs {
        error_rate: 1.0,
        ..Knobs::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cv.pdf");
    std::fs::write(&path, b"x").unwrap();
    let sum = sha256_hex(b"x");

    let api = client(&emulator, DEFAULT_API_KEY);
    let err = api.upload(&upload(&path, &sum, 1)).await.unwrap_err();
    assert!(
        matches!(&err, ApiError::Transient { message, .. } if message.contains("Internal error (injected)")),
        "{err:?}"
    );

    let wrong = client(&emulator, "tanova_sk_wrong");
    let err = wrong.health().await.unwrap_err();
    assert!(
        matches!(&err, ApiError::Rejected { status: 401, message, .. } if message == "Invalid API key"),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("tanova_sk_wrong"),
        "the key is not in the message: {err}"
    );

    emulator.set_knobs(|k| {
        k.error_rate = 0.0;
        k.capacity = 1;
        k.upload_latency_ms = 300;
        k.retry_after_s = 7;
    });
    let job = upload(&path, &sum, 1);
    let (a, b) = tokio::join!(api.upload(&job), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.upload(&job).await
    });
    assert!(a.is_ok(), "{a:?}");
    assert!(
        matches!(b, Err(ApiError::Transient { retry_after: Some(d), .. }) if d == Duration::from_secs(7)),
        "{b:?}"
    );
}
