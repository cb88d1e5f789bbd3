//! The fault and capacity knobs, exercised over real HTTP on loopback.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use tanova_emulator::{Emulator, Knobs, DEFAULT_API_KEY};

#[tokio::test]
async fn capacity_one_answers_429_with_retry_after() {
    let knobs = Knobs {
        capacity: 1,
        upload_latency_ms: 300,
        retry_after_s: 7,
        ..Knobs::default()
    };
    let emulator = Emulator::start(knobs).await.unwrap();
    let (a, b) = tokio::join!(
        upload(&emulator, "a.pdf", b"first"),
        upload(&emulator, "b.pdf", b"second")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 429]);
    let rejected = if a.status() == 429 { a } else { b };
    assert_eq!(rejected.headers()["retry-after"], "7");
    assert!(!message(rejected).await.is_empty());

    let stats = emulator.stats();
    assert_eq!((stats.uploads, stats.rejected_429), (1, 1));
    assert_eq!((stats.in_flight, stats.peak_in_flight), (0, 1));
}

#[tokio::test]
async fn error_rate_one_answers_5xx() {
    let emulator = Emulator::start(Knobs {
        error_rate: 1.0,
        ..Knobs::default()
    })
    .await
    .unwrap();
    for _ in 0..4 {
        let response = upload(&emulator, "a.pdf", b"bytes").await.unwrap();
        assert!([500, 503].contains(&response.status().as_u16()));
        assert_eq!(message(response).await, "Internal error (injected)");
    }
    let stats = emulator.stats();
    assert_eq!((stats.rejected_5xx, stats.uploads), (4, 0));
}

#[tokio::test]
async fn check_error_rate_applies_to_check_duplicate() {
    let emulator = Emulator::start(Knobs {
        check_error_rate: 1.0,
        ..Knobs::default()
    })
    .await
    .unwrap();
    let response = crate::common::client()
        .post(format!("{}/api/sync/check-duplicate", emulator.url()))
        .header("X-Tanova-API-Key", DEFAULT_API_KEY)
        .json(&json!({"checksum": "00"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_server_error());
    assert_eq!(emulator.stats().rejected_5xx, 1);
}

#[tokio::test]
async fn drop_rate_one_gives_a_transport_error() {
    let emulator = Emulator::start(Knobs {
        drop_rate: 1.0,
        ..Knobs::default()
    })
    .await
    .unwrap();
    for _ in 0..3 {
        let error = upload(&emulator, "a.pdf", b"bytes").await.unwrap_err();
        assert!(error.status().is_none(), "expected no status: {error:?}");
    }
    let stats = emulator.stats();
    assert_eq!((stats.dropped, stats.uploads, stats.in_flight), (3, 0, 0));
}

#[tokio::test]
async fn filenames_can_be_rejected() {
    let emulator = Emulator::start(Knobs {
        reject_filename_contains: Some("corrupt".into()),
        ..Knobs::default()
    })
    .await
    .unwrap();
    let response = upload(&emulator, "a_corrupt_cv.pdf", b"bytes")
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(
        message(response).await,
        "Could not parse document (injected)"
    );
    let fine = upload(&emulator, "fine.pdf", b"bytes").await.unwrap();
    assert_eq!(fine.status(), 200);

    emulator.set_knobs(|k| k.reject_status = 415);
    let response = upload(&emulator, "corrupt.pdf", b"bytes").await.unwrap();
    assert_eq!(response.status(), 415);
    let stats = emulator.stats();
    assert_eq!((stats.rejected_other, stats.uploads), (2, 1));
}

#[tokio::test]
async fn api_key_can_be_revoked_at_run_time() {
    let emulator = Emulator::start(Knobs::default()).await.unwrap();
    assert_eq!(health(&emulator, DEFAULT_API_KEY).await.status(), 200);

    let knobs: Value = crate::common::client()
        .post(format!("{}/_emulator/knobs", emulator.url()))
        .json(&json!({"api_key": "tanova_sk_new"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(knobs["api_key"], "tanova_sk_new");
    assert_eq!(knobs["reject_status"], 422, "other knobs keep their values");

    assert_eq!(health(&emulator, DEFAULT_API_KEY).await.status(), 401);
    assert_eq!(
        upload(&emulator, "a.pdf", b"x").await.unwrap().status(),
        401
    );
    assert_eq!(health(&emulator, "tanova_sk_new").await.status(), 200);
    assert_eq!(emulator.stats().rejected_auth, 2);

    emulator.set_knobs(|k| k.api_key = DEFAULT_API_KEY.into());
    assert_eq!(health(&emulator, DEFAULT_API_KEY).await.status(), 200);

    let typo = crate::common::client()
        .post(format!("{}/_emulator/knobs", emulator.url()))
        .json(&json!({"capacty": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(typo.status(), 400);
    assert_eq!(message(typo).await, "unknown knob: capacty");
}

#[tokio::test]
async fn processing_goes_on_and_is_recorded_when_the_client_gives_up() {
    // A real server finishes a body it has whole; the agent's crash tests rely on that.
    let emulator = Emulator::start(Knobs {
        upload_latency_ms: 600,
        capacity: 1,
        ..Knobs::default()
    })
    .await
    .unwrap();
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        upload(&emulator, "slow.pdf", b"bytes"),
    )
    .await;
    assert!(abandoned.is_err(), "the upload should still be processing");
    assert_eq!(emulator.stats().in_flight, 1, "still processing");

    assert!(eventually(|| emulator.stats().in_flight == 0).await);
    let stats = emulator.stats();
    assert_eq!((stats.uploads, stats.peak_in_flight), (1, 1));
    assert_eq!(stats.completed_after_disconnect, 1);
    assert_eq!(emulator.uploads()[0].filename, "slow.pdf");
}

#[tokio::test]
async fn refusals_of_big_uploads_are_heard_not_reset() {
    // A refused client must hear the status even while it is still sending a big body.
    let emulator = Emulator::start(Knobs {
        capacity: 1,
        upload_latency_ms: 1_000,
        ..Knobs::default()
    })
    .await
    .unwrap();
    let big = vec![7u8; 24 * 1024 * 1024];
    let slow = upload(&emulator, "slow.pdf", b"small");
    let refused = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        upload(&emulator, "big.pdf", &big).await
    };
    let (slow, refused) = tokio::join!(slow, refused);
    assert_eq!(slow.unwrap().status(), 200);
    assert_eq!(refused.unwrap().status(), 429);

    emulator.set_knobs(|k| k.api_key = "revoked".into());
    assert_eq!(
        upload(&emulator, "big.pdf", &big).await.unwrap().status(),
        401
    );
}
