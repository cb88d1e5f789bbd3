//! The one-shot sync end to end: the real binary against the emulator over HTTP on loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[test]
fn first_sync_uploads_everything_and_the_second_nothing() {
    let env = TestEnv::new();
    env.write_many(25);
    let first = env.run(&["sync", "--json"]);
    first.assert_code(0);
    let j = first.json();
    assert_eq!(j["found"], 25);
    assert_eq!(j["synced"], 25);
    assert_eq!(j["hashed"], 25);
    assert_eq!(j["failed"], 0);
    assert!(j["elapsed_s"].as_f64().is_some());
    let stats = env.emulator.stats();
    assert_eq!(
        (
            stats.uploads,
            stats.unique_checksums,
            stats.duplicate_uploads
        ),
        (25, 25, 0)
    );

    let second = env.run(&["sync", "--json"]);
    second.assert_code(0);
    let j = second.json();
    assert_eq!(
        (
            j["found"].as_u64(),
            j["synced"].as_u64(),
            j["skipped"].as_u64()
        ),
        (Some(25), Some(0), Some(25))
    );
    assert_eq!(j["hashed"], 0, "an unchanged file is never read again");
    let after = env.emulator.stats();
    assert_eq!(after.uploads, 25);
    assert_eq!(
        after.check_duplicate_calls, stats.check_duplicate_calls,
        "no API call for synced files"
    );
}

#[test]
fn contract_metadata_names_and_mime_types_arrive_as_specified() {
    let env = TestEnv::new();
    let files = [
        (
            "Sales Manager/john_doe_john@example.com.pdf",
            "application/pdf",
        ),
        (
            "CVs/anna.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        ("Nurse/old_format.DOC", "application/msword"),
        ("root.txt", "text/plain"),
        ("Resumes/x_y@z.io_notes.md", "text/markdown"),
    ];
    for (i, (rel, _)) in files.iter().enumerate() {
        env.write(rel, format!("content {i}"));
    }
    // Not CVs: skipped without a word.
    for rel in [
        "photo.jpg",
        "~$anna.docx",
        ".hidden.pdf",
        "dl.pdf.crdownload",
        "x.pdf.part",
        "y.docx.tmp",
        ".git/z.pdf",
    ] {
        env.write(rel, "not a cv");
    }
    env.run(&["sync", "--json"]).assert_code(0);

    let uploads: BTreeMap<String, _> = env
        .emulator
        .uploads()
        .into_iter()
        .map(|u| (u.filename.clone(), u))
        .collect();
    assert_eq!(uploads.len(), files.len(), "{:?}", uploads.keys());
    let expect = |name: &str, mime: &str, hint: Option<&str>, email: Option<&str>| {
        let u = &uploads[name];
        assert_eq!(u.content_type, mime, "{name}");
        assert_eq!(u.job_hint.as_deref(), hint, "{name}");
        assert_eq!(u.email.as_deref(), email, "{name}");
    };
    expect(
        "john_doe_john@example.com.pdf",
        files[0].1,
        Some("Sales Manager"),
        Some("john@example.com"),
    );
    expect("anna.docx", files[1].1, None, None);
    expect("old_format.DOC", files[2].1, Some("Nurse"), None);
    expect("root.txt", files[3].1, None, None);
    expect("x_y@z.io_notes.md", files[4].1, None, Some("y@z.io"));
    for (i, (rel, _)) in files.iter().enumerate() {
        let name = rel.rsplit('/').next().unwrap();
        assert_eq!(
            uploads[name].checksum,
            sha256_hex(format!("content {i}").as_bytes())
        );
    }
}

#[test]
fn legacy_history_is_imported_and_counts_as_synced() {
    let env = TestEnv::new();
    env.write("a.pdf", "already synced by the Python script");
    env.write("b.pdf", "new");
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let history = json!([sha256_hex(b"already synced by the Python script")]);
    std::fs::write(
        env.state_dir().join("sync_history.json"),
        history.to_string(),
    )
    .unwrap();

    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!((run.count("synced"), run.count("skipped")), (1, 1));
    assert!(
        run.stderr.contains("imported 1 synced checksums"),
        "{}",
        run.stderr
    );
    assert_eq!(env.uploaded_names(), ["b.pdf"]);
}

#[test]
fn a_rejected_key_stops_before_any_upload_with_exit_2() {
    let env = TestEnv::new();
    env.write_many(10);
    let run = env.run_with(
        &[("TANOVA_API_KEY", "tanova_sk_wrong_key_123456")],
        &["sync"],
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("API key was rejected"),
        "{}",
        run.stderr
    );
    let stats = env.emulator.stats();
    assert_eq!(stats.uploads, 0);
    assert_eq!(
        stats.rejected_auth, 1,
        "one health call, not one failure per file"
    );
}

#[test]
fn a_key_revoked_mid_run_stops_the_run_at_once() {
    let env = key_revoked_mid_run(Knobs {
        upload_latency_ms: 100,
        ..Knobs::default()
    });
    // The requests sent while the health check confirmed the first refusal
    // (a round trip, longer on a loaded machine), and that check: far fewer
    // than one refusal per file of the 60.
    assert!(
        env.emulator.stats().rejected_auth < 20,
        "{:?}",
        env.emulator.stats()
    );
}

#[test]
fn server_errors_and_dropped_connections_are_retried_to_success() {
    let env = TestEnv::with_knobs(Knobs {
        error_rate: 0.3,
        drop_rate: 0.2,
        ..Knobs::default()
    });
    env.write_many(40);
    env.config(json!({ "retry_count": 30, "retry_delay": 0.01 }));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.count("synced") + run.count("duplicates"), 40);
    let stats = env.emulator.stats();
    assert!(
        stats.rejected_5xx > 0 && stats.dropped > 0,
        "faults were injected: {stats:?}"
    );
    assert_eq!(stats.unique_checksums, 40);
    assert_eq!(stats.duplicate_uploads, 0);
}

#[test]
fn back_pressure_429_is_honoured_and_retried() {
    let env = TestEnv::with_knobs(Knobs {
        capacity: 2,
        upload_latency_ms: 50,
        retry_after_s: 0,
        ..Knobs::default()
    });
    env.write_many(20);
    env.config(json!({ "retry_count": 50, "retry_delay": 0.01, "max_workers": 6 }));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 20);
    let stats = env.emulator.stats();
    assert!(stats.rejected_429 > 0, "{stats:?}");
    assert_eq!((stats.unique_checksums, stats.duplicate_uploads), (20, 0));
}

#[test]
fn a_permanent_refusal_fails_that_file_with_the_servers_message() {
    let env = TestEnv::with_knobs(Knobs {
        reject_filename_contains: Some("broken".into()),
        ..Knobs::default()
    });
    env.write("good.pdf", "good");
    env.write("broken.pdf", "unparseable");
    let run = env.run(&["sync", "--json"]);
    assert_only_broken_pdf_failed(&run, 1);
    assert_eq!(env.emulator.stats().rejected_other, 1, "not retried");

    // The next run does not send it again, and still reports it.
    let again = env.run(&["sync", "--json"]);
    again.assert_code(1);
    assert!(again.json()["failures"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("Could not parse document"));
    assert_eq!(env.emulator.stats().rejected_other, 1);
}

#[test]
fn bytes_the_server_already_has_are_not_uploaded() {
    let env = TestEnv::new();
    env.write("known.pdf", "known to the server");
    env.write("new.pdf", "new");
    env.emulator.preload([sha256_hex(b"known to the server")]);
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!((run.count("synced"), run.count("duplicates")), (1, 1));
    assert_eq!(env.emulator.stats().uploads, 1);
    // Recorded as synced: the next run asks the server nothing.
    let calls = env.emulator.stats().check_duplicate_calls;
    assert_eq!(env.run(&["sync", "--json"]).count("skipped"), 2);
    assert_eq!(env.emulator.stats().check_duplicate_calls, calls);
}

#[test]
fn the_same_bytes_in_two_files_are_uploaded_once() {
    let env = TestEnv::new();
    env.write("Sales/jane.pdf", "same bytes");
    env.write("Marketing/jane copy.pdf", "same bytes");
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!((run.count("synced"), run.count("skipped")), (1, 1));
    let stats = env.emulator.stats();
    assert_eq!((stats.uploads, stats.duplicate_uploads), (1, 0));
}

#[test]
fn empty_and_oversized_files_are_reported_with_reasons() {
    let env = TestEnv::new();
    env.write("empty.pdf", "");
    env.write("big.pdf", vec![b'x'; 4096]);
    env.write("ok.pdf", "fine");
    env.config(json!({ "max_file_size_mb": 0.001 }));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(1);
    let j = run.json();
    assert_eq!(
        (
            j["synced"].as_u64(),
            j["ignored"].as_u64(),
            j["failed"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(j["ignored_files"][0]["reason"], "empty file");
    assert_eq!(
        j["failures"][0]["reason"],
        "larger than the size limit (4.0 KiB > 1.0 KiB)"
    );
    assert_eq!(env.emulator.stats().uploads, 1);
}

#[test]
fn a_changed_file_is_uploaded_again_as_new_content() {
    let env = TestEnv::new();
    let path = env.write("cv.pdf", "version 1");
    env.run(&["sync", "--json"]).assert_code(0);
    std::fs::write(&path, "version 2, longer").unwrap();
    let run = env.run(&["sync", "--json"]);
    assert_eq!((run.count("synced"), run.count("hashed")), (1, 1));
    let sums: Vec<String> = env
        .emulator
        .uploads()
        .into_iter()
        .map(|u| u.checksum)
        .collect();
    assert_eq!(
        sums,
        [sha256_hex(b"version 1"), sha256_hex(b"version 2, longer")]
    );
}

#[test]
fn global_flags_work_before_and_after_the_command() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    let other_state = env.dir.path().join("elsewhere");
    let state = other_state.to_str().unwrap();
    let before = env.run(&["--json", "--state-dir", state, "sync"]);
    before.assert_code(0);
    assert_eq!(before.count("synced"), 1);
    assert!(other_state.join("tanova-sync.db").exists());
    let after = env.run(&["sync", "--state-dir", state, "--json"]);
    assert_eq!(after.count("skipped"), 1);
    assert!(
        !env.state_dir().exists(),
        "TANOVA_STATE_DIR was overridden by the flag"
    );
}

#[test]
fn json_goes_to_stdout_and_progress_to_stderr() {
    let env = TestEnv::new();
    env.write_many(25);
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.stdout.trim().lines().count(), 1, "{}", run.stdout);
    assert!(run.stderr.contains("Progress: 10/"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Progress: 25/25 processed (25 synced, 0 failed)"),
        "{}",
        run.stderr
    );
}

#[test]
fn plain_output_summarises_for_a_person() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    let run = env.run(&["sync"]);
    run.assert_code(0);
    assert!(run.stdout.starts_with("Synced 1 new CV"), "{}", run.stdout);
    assert!(
        run.stdout.contains("skipped (already synced):"),
        "{}",
        run.stdout
    );
}

#[test]
fn no_command_syncs_then_watches_like_the_script() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    let child = env.spawn(&["--json"]);
    assert!(wait_for_uploads(&env, 1, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    env.write("b.pdf", "b");
    assert!(wait_for_uploads(&env, 2, Duration::from_secs(10)));
    let run = stop(child, Duration::from_secs(5));
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1, "the initial sync's summary");
}

#[test]
fn an_unreachable_service_is_a_clear_error() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.config(json!({ "retry_count": 1, "retry_delay": 0.01 }));
    let run = env.run_with(
        &[("TANOVA_URL", &format!("http://127.0.0.1:{port}"))],
        &["sync"],
    );
    run.assert_code(1);
    assert!(
        run.stderr.contains("cannot reach the Tanova service"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
}

#[test]
fn adaptive_concurrency_finds_the_servers_capacity() {
    let env = TestEnv::with_knobs(Knobs {
        capacity: 8,
        upload_latency_ms: 100,
        retry_after_s: 0,
        ..Knobs::default()
    });
    env.write_many(200);
    env.config(json!({ "retry_count": 20, "retry_delay": 0.05 }));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 200);
    let stats = env.emulator.stats();
    assert_eq!(stats.peak_in_flight, 8, "grew to the capacity: {stats:?}");
    assert_eq!(stats.duplicate_uploads, 0);
}

#[test]
fn pinned_concurrency_is_never_exceeded() {
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 50,
        ..Knobs::default()
    });
    env.write_many(60);
    let run = env.run(&["sync", "--json", "--concurrency", "3"]);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 60);
    assert_eq!(env.emulator.stats().peak_in_flight, 3);
}

/// Regression: the pipeline once gave files still in backoff only the shutdown
/// grace (3 s) after the scan ended, and dropped them from a run that exited 0.
#[test]
fn a_file_in_a_long_backoff_is_waited_for_not_abandoned() {
    let env = TestEnv::with_knobs(Knobs {
        error_rate: 1.0,
        ..Knobs::default()
    });
    env.write("patient.pdf", "patient");
    env.config(json!({ "retry_count": 20, "retry_delay": 1.0 }));
    let child = env.spawn(&["sync", "--json"]);
    std::thread::sleep(Duration::from_millis(4500));
    env.emulator.set_knobs(|k| k.error_rate = 0.0);
    let run = Run::wait(child);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1);
}

#[test]
fn a_dry_run_sends_nothing_and_records_nothing() {
    let env = TestEnv::new();
    env.write_many(5);
    let dry = env.run(&["sync", "--dry-run", "--json"]);
    dry.assert_code(0);
    assert_eq!((dry.count("would_upload"), dry.count("synced")), (5, 0));
    let stats = env.emulator.stats();
    assert_eq!(
        (
            stats.health_calls,
            stats.check_duplicate_calls,
            stats.uploads
        ),
        (0, 0, 0),
        "nothing sent"
    );
    let plain = env.run(&["sync", "--dry-run"]);
    assert!(
        plain.stdout.contains("would upload (dry run):         5"),
        "{}",
        plain.stdout
    );

    let real = env.run(&["sync", "--json"]);
    assert_eq!(real.count("synced"), 5, "the dry run recorded nothing");
    let again = env.run(&["sync", "--dry-run", "--json"]);
    assert!(again.json().get("would_upload").is_none());
    assert_eq!(again.count("skipped"), 5);
}

#[test]
fn a_file_already_synced_is_logged_by_name_only_at_debug() {
    let env = TestEnv::new();
    env.write("Sales/a.pdf", "a");
    env.run(&["sync"]).assert_code(0);
    // The log's events for files already synced (JSON, so the terminal's own lines do not count).
    let events = |verbosity: &str| -> Vec<serde_json::Value> {
        let run = env.run_with(&[("TANOVA_LOG_FORMAT", "json")], &["sync", verbosity]);
        run.assert_code(0);
        run.stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["message"] == "already synced")
            .collect()
    };
    assert_eq!(events("-v"), Vec::<serde_json::Value>::new());
    let debug = events("-vv");
    assert_eq!(debug.len(), 1, "{debug:?}");
    let file = debug[0]["file"].as_str().unwrap_or_default();
    assert!(file.ends_with("Sales/a.pdf"), "{debug:?}");
}
