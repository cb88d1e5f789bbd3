//! The knobs for months-unattended runs, over real HTTP on loopback: key
//! rotation, a proxy's HTML 403, outages, held uploads and slow body reads.

use std::time::{Duration, Instant};

use crate::common::*;
use reqwest::multipart::{Form, Part};
use reqwest::{Client, Response};
use serde_json::{json, Value};
use tanova_emulator::{Emulator, Knobs, Outage, DEFAULT_API_KEY};

const NEW_KEY: &str = "tanova_sk_rotated_1111111111111111";

async fn started(knobs: Knobs) -> Emulator {
    Emulator::start(knobs).await.unwrap()
}

fn with_batches() -> Knobs {
    Knobs {
        batch_max_files: 4,
        ..Knobs::default()
    }
}

/// An upload on a task of its own, so a test can abort it like a killed client.
fn spawn_upload(
    emulator: &Emulator,
    filename: &str,
    bytes: Vec<u8>,
) -> tokio::task::JoinHandle<reqwest::Result<Response>> {
    let url = format!("{}/api/sync/upload", emulator.url());
    let checksum = sha256_hex(&bytes);
    let part = Part::bytes(bytes).file_name(filename.to_owned());
    let form = Form::new().part("file", part).text("checksum", checksum);
    let request = crate::common::client()
        .post(url)
        .header("X-Tanova-API-Key", DEFAULT_API_KEY)
        .multipart(form);
    tokio::spawn(request.send())
}

/// Asserts an HTML answer with `status` whose page contains each of `needles`.
async fn assert_html(response: Response, status: u16, needles: &[&str]) {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    for needle in needles {
        assert!(page.contains(needle), "{needle:?} not in {page}");
    }
}

/// The three calls of the contract with the default key, whatever they answer.
async fn every_endpoint(emulator: &Emulator) -> [reqwest::Result<Response>; 3] {
    let health = crate::common::client()
        .get(format!("{}/api/sync/health", emulator.url()))
        .header("X-Tanova-API-Key", DEFAULT_API_KEY)
        .send()
        .await;
    [
        health,
        check_duplicate_as(emulator, DEFAULT_API_KEY, "00").await,
        upload(emulator, "a.pdf", b"cv").await,
    ]
}

#[tokio::test]
async fn a_rotated_key_refuses_the_old_one_on_every_endpoint() {
    let emulator = started(Knobs::default()).await;
    let knobs = patch_knobs(&emulator, json!({ "api_key": NEW_KEY })).await;
    assert_eq!(knobs["api_key"], NEW_KEY);

    for refusal in every_endpoint(&emulator).await {
        let refusal = refusal.unwrap();
        assert_eq!(refusal.status(), 401);
        assert_eq!(message(refusal).await, "Invalid API key");
    }
    assert_eq!(health(&emulator, NEW_KEY).await.status(), 200);
    let checked = check_duplicate_as(&emulator, NEW_KEY, "00").await.unwrap();
    assert_eq!(checked.status(), 200);
    let uploaded = upload_as(&emulator, NEW_KEY, "a.pdf", b"cv").await.unwrap();
    assert_eq!(uploaded.status(), 200);
    let stats = emulator.stats();
    assert_eq!((stats.rejected_auth, stats.uploads), (3, 1));
}

#[tokio::test]
async fn an_upload_under_way_when_the_key_rotates_is_judged_by_its_starting_key() {
    // 40 kB at 20 kB/s: two seconds mid-body, time enough to rotate the key.
    let emulator = started(Knobs {
        read_bytes_per_sec: 20_000,
        ..Knobs::default()
    })
    .await;
    let under_way = spawn_upload(&emulator, "long.pdf", vec![3u8; 40_000]);
    assert!(eventually(|| emulator.stats().bytes_received > 0).await);
    emulator.set_knobs(|k| k.api_key = NEW_KEY.to_owned());

    let answer = under_way.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200, "judged by the key it started with");
    assert_eq!(emulator.stats().uploads, 1);
    let later = upload(&emulator, "b.pdf", b"x").await.unwrap();
    assert_eq!(later.status(), 401);
}

#[tokio::test]
async fn forbidden_checksums_get_a_proxy_page_and_health_stays_up() {
    let emulator = started(with_batches()).await;
    let blocked = sha256_hex(b"blocked cv");
    let patch = json!({ "forbid_checksums": [blocked.to_uppercase()] });
    patch_knobs(&emulator, patch).await;
    let page = [
        "<title>",
        "<style>",
        "<h1>Access denied</h1>",
        "The request was blocked by the security policy (rule 1234).",
    ];

    let checked = check_duplicate_as(&emulator, DEFAULT_API_KEY, &blocked).await;
    assert_html(checked.unwrap(), 403, &page).await;
    let uploaded = upload(&emulator, "blocked.pdf", b"blocked cv").await;
    assert_html(uploaded.unwrap(), 403, &page).await;
    assert_eq!(health(&emulator, DEFAULT_API_KEY).await.status(), 200);
    let fine = check_duplicate(&emulator, &sha256_hex(b"fine")).await;
    assert_eq!(fine["exists"], false);

    let files: [(&str, &[u8]); 2] = [("blocked.pdf", b"blocked cv"), ("fine.pdf", b"fine")];
    let batch = upload_batch(&emulator, &files).await.unwrap();
    let batch: Value = batch.json().await.unwrap();
    let results = &batch["results"];
    assert_eq!(
        (results[0]["status"].as_u64(), results[1]["status"].as_u64()),
        (Some(403), Some(200))
    );
    assert!(results[0]["message"]
        .as_str()
        .unwrap()
        .contains("rule 1234"));

    let stats = emulator.stats();
    assert_eq!((stats.rejected_forbidden, stats.uploads), (3, 1));
    assert_eq!(emulator.uploads()[0].filename, "fine.pdf");
}

#[tokio::test]
async fn a_drop_outage_closes_every_api_connection_unanswered() {
    let emulator = started(Knobs::default()).await;
    let knobs = patch_knobs(&emulator, json!({ "outage": "drop" })).await;
    assert_eq!(knobs["outage"], "drop");

    for dropped in every_endpoint(&emulator).await {
        let error = dropped.unwrap_err();
        assert!(error.status().is_none(), "expected no status: {error:?}");
    }
    let stats = emulator.stats();
    assert_eq!((stats.outage_refused, stats.health_calls), (3, 0));
    assert_eq!((stats.check_duplicate_calls, stats.uploads), (0, 0));

    patch_knobs(&emulator, json!({ "outage": null })).await;
    assert_eq!(health(&emulator, DEFAULT_API_KEY).await.status(), 200);
}

#[tokio::test]
async fn an_html502_outage_answers_a_proxy_page_even_to_a_bad_key() {
    let emulator = started(Knobs {
        outage: Some(Outage::Html502),
        ..Knobs::default()
    })
    .await;
    for answer in every_endpoint(&emulator).await {
        assert_html(answer.unwrap(), 502, &["<title>", "Bad Gateway"]).await;
    }
    assert_html(health(&emulator, "wrong").await, 502, &["Bad Gateway"]).await;
    let stats = emulator.stats();
    assert_eq!((stats.outage_refused, stats.rejected_auth), (4, 0));
}

#[tokio::test]
async fn an_html200_outage_answers_a_sign_in_page_with_a_success_status() {
    let emulator = started(Knobs {
        outage: Some(Outage::Html200),
        ..Knobs::default()
    })
    .await;
    for answer in every_endpoint(&emulator).await {
        assert_html(answer.unwrap(), 200, &["<title>Sign in", "Guest network"]).await;
    }
    let stats = emulator.stats();
    assert_eq!((stats.outage_refused, stats.uploads), (3, 0));
    assert_eq!(stats.check_duplicate_calls, 0, "never reached the service");
}

#[tokio::test]
async fn a_hang_outage_answers_nothing_until_cleared_then_503() {
    let emulator = started(Knobs::default()).await;
    emulator.set_knobs(|k| k.outage = Some(Outage::Hang));
    let impatient = {
        crate::common::install_tls();
        Client::builder()
    }
    .timeout(Duration::from_millis(300))
    .build()
    .unwrap()
    .get(format!("{}/api/sync/health", emulator.url()))
    .header("X-Tanova-API-Key", DEFAULT_API_KEY)
    .send()
    .await;
    assert!(impatient.unwrap_err().is_timeout(), "a stalled server");

    let patient = spawn_upload(&emulator, "a.pdf", b"cv".to_vec());
    assert!(eventually(|| emulator.stats().outage_refused == 2).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!patient.is_finished(), "still hanging");
    assert_eq!(emulator.stats().in_flight, 0, "never reached the service");

    emulator.set_knobs(|k| k.outage = None);
    let answer = patient.await.unwrap().unwrap();
    assert_eq!(answer.status(), 503);
    assert_eq!(message(answer).await, "service restarting");
    assert_eq!(emulator.stats().uploads, 0);
    assert_eq!(health(&emulator, DEFAULT_API_KEY).await.status(), 200);
}

#[tokio::test]
async fn held_uploads_wait_for_the_release_then_answer() {
    let emulator = started(Knobs {
        hold_uploads: true,
        ..with_batches()
    })
    .await;
    let single = spawn_upload(&emulator, "single.pdf", b"single".to_vec());
    let files: [(&str, &[u8]); 2] = [("a.pdf", b"a"), ("b.pdf", b"b")];
    let batch = upload_batch(&emulator, &files);
    let release = async {
        assert!(eventually(|| emulator.stats().held == 2).await, "both held");
        let stats = emulator.stats();
        assert_eq!((stats.uploads, stats.in_flight), (0, 2));
        assert!(emulator.uploads().is_empty());
        patch_knobs(&emulator, json!({ "hold_uploads": false })).await;
    };
    let (batch, ()) = tokio::join!(batch, release);
    assert_eq!(batch.unwrap().status(), 200);
    assert_eq!(single.await.unwrap().unwrap().status(), 200);
    let stats = emulator.stats();
    assert_eq!((stats.uploads, stats.held, stats.in_flight), (3, 0, 0));
    assert_eq!(stats.completed_after_disconnect, 0);
}

#[tokio::test]
async fn a_held_upload_is_recorded_though_its_client_was_killed() {
    let emulator = started(Knobs {
        hold_uploads: true,
        ..Knobs::default()
    })
    .await;
    let bytes = b"the whole body arrived".to_vec();
    let checksum = sha256_hex(&bytes);
    let client = spawn_upload(&emulator, "orphan.pdf", bytes);
    assert!(eventually(|| emulator.stats().held == 1).await);
    client.abort();
    assert!(client.await.unwrap_err().is_cancelled());
    // Give the server time to notice the closed connection and drop the handler.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(emulator.stats().uploads, 0, "still held");

    emulator.set_knobs(|k| k.hold_uploads = false);
    assert!(eventually(|| emulator.stats().uploads == 1).await);
    assert_eq!(check_duplicate(&emulator, &checksum).await["exists"], true);
    let stats = emulator.stats();
    assert_eq!((stats.held, stats.in_flight), (0, 0));
    assert_eq!(stats.completed_after_disconnect, 1);
}

#[tokio::test]
async fn bodies_are_read_no_faster_than_read_bytes_per_sec() {
    let emulator = started(Knobs::default()).await;
    patch_knobs(&emulator, json!({ "read_bytes_per_sec": 20_000 })).await;
    let started_at = Instant::now();
    let answer = upload(&emulator, "slow.pdf", &[5u8; 30_000]).await.unwrap();
    assert_eq!(answer.status(), 200);
    let took = started_at.elapsed();
    assert!(
        took >= Duration::from_millis(1_400),
        "30 kB at 20 kB/s took {took:?}"
    );
}

#[tokio::test]
async fn a_client_killed_mid_body_leaves_nothing_recorded() {
    let emulator = started(Knobs {
        read_bytes_per_sec: 10_000,
        ..Knobs::default()
    })
    .await;
    let client = spawn_upload(&emulator, "cut.pdf", vec![9u8; 50_000]);
    assert!(eventually(|| emulator.stats().bytes_received > 0).await);
    client.abort();
    assert!(eventually(|| emulator.stats().in_flight == 0).await);
    let stats = emulator.stats();
    assert!(stats.bytes_received < 50_000, "cut mid-body: {stats:?}");
    assert_eq!((stats.uploads, stats.completed_after_disconnect), (0, 0));
}

#[tokio::test]
async fn dropping_the_emulator_releases_held_and_hanging_requests() {
    // Otherwise a test that forgets to clear them waits out the shutdown grace.
    let emulator = Emulator::start_in_thread(Knobs {
        hold_uploads: true,
        ..Knobs::default()
    })
    .unwrap();
    let held = spawn_upload(&emulator, "held.pdf", b"cv".to_vec());
    assert!(eventually(|| emulator.stats().held == 1).await);
    let started_at = Instant::now();
    drop(emulator);
    assert_eq!(held.await.unwrap().unwrap().status(), 200);
    assert!(started_at.elapsed() < Duration::from_secs(2));
}
