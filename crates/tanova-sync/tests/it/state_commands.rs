//! `status`, `retry` and `history export`, and the cap on retries across runs.

use crate::common::*;
use serde_json::json;

/// Regression (issue 10): attempts were counted per run for 5xx too, so a short
/// outage held every pending file until a manual `retry`.
#[test]
fn a_file_failing_in_an_outage_is_tried_on_every_run_and_never_held() {
    let env = TestEnv::with_knobs(Knobs {
        error_rate: 1.0,
        ..Knobs::default()
    });
    env.write("flaky.pdf", "flaky");
    env.config(json!({ "retry_count": 0, "max_attempts": 2 }));
    for run in 1..=4 {
        let failed = env.run(&["sync", "--json"]);
        failed.assert_code(1);
        assert_eq!(
            env.emulator.stats().rejected_5xx,
            run,
            "tried again on run {run}, past max_attempts"
        );
        let reason = failed.json()["failures"][0]["reason"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(reason.starts_with("gave up after 1 attempts"), "{reason}");
    }

    let status = env.run(&["status", "--json"]);
    status.assert_code(1);
    let s = status.json();
    assert_eq!(s["failed"], 1);
    assert_eq!(
        s["failures"][0]["attempts"], 0,
        "an outage counts no attempt"
    );
    assert!(
        s["failures"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("Internal error (injected)"),
        "{s}"
    );

    let retry = env.run(&["retry", "--all"]);
    retry.assert_code(0);
    assert!(
        retry.stdout.contains("1 failed file will be tried again"),
        "{}",
        retry.stdout
    );
    env.emulator.set_knobs(|k| k.error_rate = 0.0);
    let after = env.run(&["sync", "--json"]);
    after.assert_code(0);
    assert_eq!(after.count("synced"), 1);
    let s = env.run(&["status", "--json"]).json();
    assert_eq!(
        (s["failed"].as_u64(), s["synced"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(s["last_upload_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn retry_of_one_path_clears_only_that_file() {
    let env = TestEnv::with_knobs(Knobs {
        reject_filename_contains: Some("bad".into()),
        ..Knobs::default()
    });
    env.write("Sales/bad1.pdf", "1");
    env.write("Sales/bad2.pdf", "2");
    env.write("Other/bad3.pdf", "3");
    env.run(&["sync"]).assert_code(1);
    env.emulator
        .set_knobs(|k| k.reject_filename_contains = None);

    let one = env.folder().join("Sales/bad1.pdf");
    env.run(&["retry", one.to_str().unwrap()]).assert_code(0);
    let run = env.run(&["sync", "--json"]);
    assert_eq!((run.count("synced"), run.count("failed")), (1, 2));

    let folder = env.folder().join("Sales");
    env.run(&["retry", folder.to_str().unwrap()]).assert_code(0);
    let run = env.run(&["sync", "--json"]);
    assert_eq!(
        (run.count("synced"), run.count("failed")),
        (1, 1),
        "Other/ is still held"
    );

    let none = env.run(&["retry", "/no/such/file.pdf"]);
    none.assert_code(1);
    assert!(
        none.stderr
            .contains("no failed file at or under /no/such/file.pdf"),
        "{}",
        none.stderr
    );
    let usage = env.run(&["retry"]);
    usage.assert_code(2);
}

#[test]
fn history_export_round_trips_with_the_python_scripts_format() {
    let env = TestEnv::new();
    env.write_many(12);
    env.run(&["sync"]).assert_code(0);
    let file = env.dir.path().join("exported_history.json");
    let out = env.run(&["history", "export", "--legacy", file.to_str().unwrap()]);
    out.assert_code(0);
    assert!(out.stdout.contains("Wrote 12 checksums"), "{}", out.stdout);
    let mut exported: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    exported.sort();
    let mut uploaded: Vec<String> = env
        .emulator
        .uploads()
        .into_iter()
        .map(|u| u.checksum)
        .collect();
    uploaded.sort();
    assert_eq!(exported, uploaded);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // Switching back and forth: a fresh state that finds the exported history uploads nothing.
    let fresh = env.dir.path().join("fresh-state");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::copy(&file, fresh.join("sync_history.json")).unwrap();
    let run = env.run(&["sync", "--json", "--state-dir", fresh.to_str().unwrap()]);
    assert_eq!((run.count("synced"), run.count("skipped")), (0, 12));
    assert_eq!(env.emulator.stats().uploads, 12);
}

#[test]
fn status_without_state_says_so() {
    let env = TestEnv::new();
    let run = env.run(&["status"]);
    run.assert_code(2);
    assert!(run.stderr.contains("no state in"), "{}", run.stderr);
    assert!(!env.state_dir().exists(), "looking does not create a state");
}

#[test]
fn status_reads_the_state_while_an_agent_runs() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    env.config(json!({ "settle_ms": 100 }));
    let child = env.spawn(&["watch"]);
    assert!(wait_for_uploads(
        &env,
        1,
        std::time::Duration::from_secs(10)
    ));
    let status = env.run(&["status"]);
    status.assert_code(0);
    assert!(status.stdout.contains("Synced CVs: 1"), "{}", status.stdout);
    stop(child, std::time::Duration::from_secs(5)).assert_code(0);
}
