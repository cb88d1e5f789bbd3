//! The batch endpoint `POST /api/sync/upload-batch`, exercised over real HTTP on loopback.

use std::time::{Duration, Instant};

use crate::common::*;
use reqwest::multipart::{Form, Part};
use reqwest::Response;
use serde_json::{json, Value};
use tanova_emulator::{Emulator, Knobs, DEFAULT_API_KEY};

/// One file of a batch: name, bytes, the checksum to claim, and a job hint.
struct File<'a> {
    name: &'a str,
    bytes: &'a [u8],
    checksum: String,
    job_hint: Option<&'a str>,
}

fn file<'a>(name: &'a str, bytes: &'a [u8]) -> File<'a> {
    File {
        name,
        bytes,
        checksum: sha256_hex(bytes),
        job_hint: None,
    }
}

fn form(files: &[File<'_>]) -> Form {
    let mut form = Form::new();
    for (i, f) in files.iter().enumerate() {
        form = form.text(format!("checksum_{i}"), f.checksum.clone());
        if let Some(hint) = f.job_hint {
            form = form.text(format!("job_hint_{i}"), hint.to_owned());
        }
        let part = Part::bytes(f.bytes.to_vec())
            .file_name(f.name.to_owned())
            .mime_str("application/pdf")
            .unwrap();
        form = form.part(format!("file_{i}"), part);
    }
    form
}

async fn send(emulator: &Emulator, form: Form) -> Response {
    crate::common::client()
        .post(format!("{}/api/sync/upload-batch", emulator.url()))
        .header("X-Tanova-API-Key", DEFAULT_API_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn results(response: Response) -> Vec<Value> {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["results"].as_array().unwrap().clone()
}

fn batching(max_files: usize) -> Knobs {
    Knobs {
        batch_max_files: max_files,
        ..Knobs::default()
    }
}

#[tokio::test]
async fn not_offered_by_default_like_an_older_server() {
    let emulator = Emulator::start(Knobs::default()).await.unwrap();
    let body: Value = health(&emulator, DEFAULT_API_KEY)
        .await
        .json()
        .await
        .unwrap();
    assert!(body.get("batch").is_none(), "{body}");
    let response = send(&emulator, form(&[file("a.pdf", b"a")])).await;
    assert_eq!(response.status(), 404);
    let stats = emulator.stats();
    assert_eq!((stats.batch_requests, stats.uploads), (1, 0));
}

#[tokio::test]
async fn advertised_in_health_and_a_404_when_told_to() {
    let emulator = Emulator::start(batching(8)).await.unwrap();
    let body: Value = health(&emulator, DEFAULT_API_KEY)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["batch"], json!({"maxFiles": 8}));

    emulator.set_knobs(|k| k.batch_not_found = true);
    let body: Value = health(&emulator, DEFAULT_API_KEY)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["batch"], json!({"maxFiles": 8}), "still advertised");
    let response = send(&emulator, form(&[file("a.pdf", b"a")])).await;
    assert_eq!(response.status(), 404);
    assert_eq!(message(response).await, "Not found");
}

#[tokio::test]
async fn each_file_is_judged_and_counted_as_a_single_upload_would_be() {
    let emulator = Emulator::start(Knobs {
        reject_filename_contains: Some("broken".into()),
        ..batching(8)
    })
    .await
    .unwrap();
    emulator.preload([sha256_hex(b"known")]);
    let mut stale = file("stale.pdf", b"version 2");
    stale.checksum = sha256_hex(b"version 1");
    let files = [
        File {
            job_hint: Some("Nurse"),
            ..file("jane_smith.pdf", b"jane")
        },
        file("known.pdf", b"known"),
        stale,
        file("broken.pdf", b"unparseable"),
        file("again.pdf", b"jane"),
    ];
    let results = results(send(&emulator, form(&files)).await).await;
    let statuses: Vec<(u64, u64)> = results
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(statuses, [(0, 200), (1, 200), (2, 400), (3, 422), (4, 200)]);
    assert_eq!(results[0]["candidateName"], "Jane Smith");
    assert_eq!(
        results[1]["candidateId"], "cand_1",
        "the preloaded candidate"
    );
    assert_eq!(results[4]["candidateId"], results[0]["candidateId"]);
    assert!(results[2]["message"]
        .as_str()
        .unwrap()
        .starts_with("checksum mismatch: "));
    assert_eq!(results[3]["message"], "Could not parse document (injected)");

    let stats = emulator.stats();
    assert_eq!(stats.batch_requests, 1);
    assert_eq!(
        (
            stats.uploads,
            stats.unique_checksums,
            stats.duplicate_uploads
        ),
        (3, 2, 2)
    );
    assert_eq!((stats.rejected_checksum, stats.rejected_other), (1, 1));
    assert_eq!(
        stats.bytes_received,
        files.iter().map(|f| f.bytes.len() as u64).sum::<u64>()
    );
    let uploads = emulator.uploads();
    assert_eq!(uploads[0].filename, "jane_smith.pdf");
    assert_eq!(uploads[0].job_hint.as_deref(), Some("Nurse"));
    assert_eq!(uploads[0].content_type, "application/pdf");
}

#[tokio::test]
async fn a_batch_takes_one_slot_and_one_latency() {
    let emulator = Emulator::start(Knobs {
        capacity: 1,
        upload_latency_ms: 300,
        ..batching(16)
    })
    .await
    .unwrap();
    let names: Vec<String> = (0..10).map(|i| format!("cv{i}.pdf")).collect();
    let contents: Vec<Vec<u8>> = (0..10).map(|i| format!("cv {i}").into_bytes()).collect();
    let files: Vec<File<'_>> = names
        .iter()
        .zip(&contents)
        .map(|(n, c)| file(n, c))
        .collect();
    let started = Instant::now();
    let (first, second) = tokio::join!(
        send(&emulator, form(&files[..5])),
        send(&emulator, form(&files[5..]))
    );
    let elapsed = started.elapsed();
    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 429], "capacity 1: one batch at a time");
    assert!(
        elapsed < Duration::from_millis(5 * 300),
        "five files in one latency, not five: {elapsed:?}"
    );
    let stats = emulator.stats();
    assert_eq!((stats.uploads, stats.rejected_429), (5, 1));
    assert_eq!((stats.batch_requests, stats.peak_in_flight), (2, 1));
}

#[tokio::test]
async fn malformed_batches_are_refused_whole() {
    let emulator = Emulator::start(batching(2)).await.unwrap();
    let files = [
        file("a.pdf", b"a"),
        file("b.pdf", b"b"),
        file("c.pdf", b"c"),
    ];
    let too_many = send(&emulator, form(&files)).await;
    assert_eq!(too_many.status(), 400);
    assert!(message(too_many).await.contains("at most 2 files"));

    let empty = send(&emulator, Form::new().text("note", "hi")).await;
    assert_eq!(empty.status(), 400);

    // A missing part fails that file only.
    let part = Part::bytes(b"x".to_vec()).file_name("x.pdf");
    let form = Form::new()
        .part("file_0", part)
        .text("checksum_1", sha256_hex(b"y"));
    let results = results(send(&emulator, form).await).await;
    assert_eq!(results[0]["message"], "missing field: checksum_0");
    assert_eq!(results[1]["message"], "missing field: file_1");
    let stats = emulator.stats();
    assert_eq!((stats.uploads, stats.rejected_other), (0, 4));
}

#[tokio::test]
async fn a_bad_key_is_refused_before_anything_is_read() {
    let emulator = Emulator::start(batching(4)).await.unwrap();
    let response = crate::common::client()
        .post(format!("{}/api/sync/upload-batch", emulator.url()))
        .header("X-Tanova-API-Key", "tanova_sk_wrong")
        .multipart(form(&[file("a.pdf", b"a")]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let stats = emulator.stats();
    assert_eq!((stats.rejected_auth, stats.batch_requests), (1, 0));
}
