//! Batch uploads through the real binary: used when the emulator advertises them, per-file results, and the fallback on 404.

use std::collections::BTreeSet;

use crate::common::*;
use serde_json::json;
use tanova_sync::api::batch::BatchFile;
use tanova_sync::api::{ApiError, Upload};

fn batching(max_files: usize) -> Knobs {
    Knobs {
        batch_max_files: max_files,
        upload_latency_ms: 50,
        ..Knobs::default()
    }
}

/// The checksums the emulator received, each once, and the count of uploads.
fn received(env: &TestEnv) -> (BTreeSet<String>, usize) {
    let uploads = env.emulator.uploads();
    let sums = uploads.iter().map(|u| u.checksum.clone()).collect();
    (sums, uploads.len())
}

fn expected_sums(n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|i| sha256_hex(format!("CV number {i}\n").as_bytes()))
        .collect()
}

#[test]
fn batches_are_used_when_advertised_and_every_file_arrives_once() {
    let env = TestEnv::with_knobs(batching(8));
    env.write_many(30);
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 30);
    let stats = env.emulator.stats();
    assert_eq!(
        (
            stats.uploads,
            stats.unique_checksums,
            stats.duplicate_uploads
        ),
        (30, 30, 0)
    );
    assert!(
        (4..30).contains(&stats.batch_requests),
        "30 files in batches of at most 8: {stats:?}"
    );
    assert_eq!(
        stats.check_duplicate_calls, 30,
        "each file is checked before it joins a batch"
    );
    let (sums, count) = received(&env);
    assert_eq!((sums, count), (expected_sums(30), 30));
    // Metadata travels per file.
    for upload in env.emulator.uploads() {
        let i: usize = upload.filename["cv".len()..upload.filename.len() - ".txt".len()]
            .parse()
            .unwrap();
        assert_eq!(
            upload.job_hint.as_deref(),
            Some(format!("role{}", i % 7).as_str())
        );
        assert_eq!(upload.content_type, "text/plain");
    }

    // Nothing is sent twice on the next run.
    env.run(&["sync", "--json"]).assert_code(0);
    assert_eq!(env.emulator.stats().uploads, 30);
}

#[test]
fn batch_size_caps_the_batch_and_one_disables_it() {
    let env = TestEnv::with_knobs(batching(8));
    env.write_many(12);
    env.config(json!({ "batch_size": 3 }));
    env.run(&["sync", "--json"]).assert_code(0);
    let stats = env.emulator.stats();
    assert_eq!(stats.uploads, 12);
    assert!(stats.batch_requests >= 4, "at most 3 per batch: {stats:?}");

    let env = TestEnv::with_knobs(batching(8));
    env.write_many(12);
    env.config(json!({ "batch_size": 1 }));
    env.run(&["sync", "--json"]).assert_code(0);
    let stats = env.emulator.stats();
    assert_eq!((stats.uploads, stats.batch_requests), (12, 0));
}

#[test]
fn a_file_refused_in_a_batch_fails_alone_with_the_servers_message() {
    let env = TestEnv::with_knobs(Knobs {
        reject_filename_contains: Some("broken".into()),
        ..batching(8)
    });
    env.write_many(5);
    env.write("broken.pdf", "unparseable");
    let run = env.run(&["sync", "--json"]);
    assert_only_broken_pdf_failed(&run, 5);
    let stats = env.emulator.stats();
    assert_eq!((stats.rejected_other, stats.uploads), (1, 5), "not retried");
    assert!(stats.batch_requests >= 1);
}

#[test]
fn transient_failures_of_single_files_in_a_batch_are_retried() {
    let env = TestEnv::with_knobs(Knobs {
        error_rate: 0.3,
        ..batching(8)
    });
    env.write_many(40);
    env.config(json!({ "retry_count": 30, "retry_delay": 0.01 }));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.count("synced") + run.count("duplicates"), 40);
    let stats = env.emulator.stats();
    assert!(stats.rejected_5xx > 0, "faults were injected: {stats:?}");
    assert_eq!((stats.unique_checksums, stats.duplicate_uploads), (40, 0));
    assert_eq!(received(&env).0, expected_sums(40));
}

#[test]
fn a_dropped_batch_is_retried_without_double_uploads() {
    // About 12 batches at a drop rate of one in two: a run without a drop is 1 in 4,000.
    let env = TestEnv::with_knobs(Knobs {
        drop_rate: 0.5,
        ..batching(4)
    });
    env.write_many(48);
    env.config(json!({ "retry_count": 40, "retry_delay": 0.01 }));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.count("synced") + run.count("duplicates"), 48);
    let stats = env.emulator.stats();
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!((stats.unique_checksums, stats.duplicate_uploads), (48, 0));
}

#[test]
fn a_404_on_the_batch_endpoint_falls_back_to_single_uploads() {
    let env = TestEnv::with_knobs(Knobs {
        batch_not_found: true,
        ..batching(8)
    });
    env.write_many(20);
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!((run.count("synced"), run.count("failed")), (20, 0));
    let stats = env.emulator.stats();
    assert_eq!(
        (
            stats.uploads,
            stats.unique_checksums,
            stats.duplicate_uploads
        ),
        (20, 20, 0)
    );
    // Only the batches already on their way when the first 404 came back.
    assert!(
        (1..=4).contains(&stats.batch_requests),
        "the endpoint is not asked again once it said 404: {stats:?}"
    );
    assert!(
        run.stderr
            .contains("refused a batch upload (404: Not found)"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_key_revoked_mid_run_stops_a_batched_run_at_once() {
    key_revoked_mid_run(Knobs {
        upload_latency_ms: 150,
        ..batching(2)
    });
}

/// A PDF to upload, from disk or (`bytes`) from memory.
fn pdf<'a>(
    path: &'a std::path::Path,
    checksum: &'a str,
    size: u64,
    bytes: Option<bytes::Bytes>,
) -> Upload<'a> {
    Upload {
        path,
        checksum,
        size,
        mime: "application/pdf",
        job_hint: None,
        email: None,
        fence: None,
        bytes,
    }
}

/// The stale-checksum guard holds for every file of a batch: a file rewritten
/// since it was hashed never reaches the server whole, and the batch's other
/// files are sent again rather than failed.
#[tokio::test]
async fn a_file_changed_since_hashing_never_arrives_in_a_batch() {
    let emulator = Emulator::start(batching(8)).await.unwrap();
    let api = client(&emulator, DEFAULT_API_KEY);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.pdf");
    let stale = dir.path().join("stale.pdf");
    std::fs::write(&good, b"good bytes").unwrap();
    // Hashed as "version 1", then rewritten with other bytes of the same length.
    std::fs::write(&stale, b"version 2").unwrap();
    let (good_sum, stale_sum) = (sha256_hex(b"good bytes"), sha256_hex(b"version 1"));
    let upload = |path, checksum, size| pdf(path, checksum, size, None);
    let files = [
        upload(good.as_path(), good_sum.as_str(), 10),
        upload(stale.as_path(), stale_sum.as_str(), 9),
    ];
    let results = api.upload_batch(&files).await.unwrap();
    assert!(matches!(results[0], BatchFile::NotSent), "{results:?}");
    assert!(
        matches!(results[1], BatchFile::Failed(ApiError::FileChanged)),
        "{results:?}"
    );
    let stats = emulator.stats();
    assert_eq!(
        (stats.uploads, stats.rejected_checksum),
        (0, 0),
        "no file of the cut batch was taken: {stats:?}"
    );

    // The good file alone goes through.
    let results = api.upload_batch(&files[..1]).await.unwrap();
    assert!(
        matches!(results[0], BatchFile::Uploaded(Some(_))),
        "{results:?}"
    );
    assert_eq!(emulator.uploads()[0].checksum, good_sum);
}

#[tokio::test]
async fn a_small_file_read_at_its_look_goes_into_the_batch_from_memory() {
    let emulator = Emulator::start(batching(8)).await.unwrap();
    let api = client(&emulator, DEFAULT_API_KEY);
    let dir = tempfile::tempdir().unwrap();
    let read = dir.path().join("read at its look.pdf");
    let streamed = dir.path().join("streamed.pdf");
    std::fs::write(&streamed, b"streamed bytes").unwrap();
    // Its bytes were read (and checked) at the delivery's look; the file has
    // gone since, so only those bytes can make it arrive.
    let kept = bytes::Bytes::from_static(b"bytes kept in memory");
    let (read_sum, streamed_sum) = (sha256_hex(&kept), sha256_hex(b"streamed bytes"));
    let files = [
        pdf(&read, &read_sum, kept.len() as u64, Some(kept.clone())),
        pdf(&streamed, &streamed_sum, 14, None),
    ];
    let results = api.upload_batch(&files).await.unwrap();
    assert!(
        results
            .iter()
            .all(|r| matches!(r, BatchFile::Uploaded(Some(_)))),
        "{results:?}"
    );
    let arrived: BTreeSet<String> = emulator
        .uploads()
        .iter()
        .map(|u| u.checksum.clone())
        .collect();
    assert_eq!(arrived, BTreeSet::from([read_sum, streamed_sum]));
}
