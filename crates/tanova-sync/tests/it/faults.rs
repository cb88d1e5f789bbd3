//! The fault suite: each injected fault ends in the right outcome, and the summary agrees with what the emulator saw.

use crate::common::redirect::Front;
use crate::common::*;
use serde_json::json;
use tanova_emulator::Outage;

/// The summary's uploads are exactly the emulator's first-time uploads.
fn assert_summary_agrees(run: &Run, env: &TestEnv) {
    let stats = env.emulator.stats();
    assert_eq!(
        run.count("synced"),
        stats.uploads - stats.duplicate_uploads,
        "{stats:?}\n{}",
        run.stdout
    );
    assert_eq!(stats.duplicate_uploads, 0, "{stats:?}");
}

#[test]
fn errors_and_drops_together_are_retried_and_the_summary_agrees() {
    let env = TestEnv::with_knobs(Knobs {
        error_rate: 0.2,
        drop_rate: 0.05,
        check_error_rate: 0.1,
        ..Knobs::default()
    });
    env.write_many(150);
    env.config(json!({ "retry_count": 40, "retry_delay": 0.005 }));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.count("synced") + run.count("duplicates"), 150);
    assert_summary_agrees(&run, &env);
    assert_eq!(env.emulator.stats().unique_checksums, 150);
}

#[test]
fn answers_slower_than_the_timeout_are_retried_then_reported() {
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 3000,
        ..Knobs::default()
    });
    env.write("slow.pdf", "slow");
    env.config(json!({ "request_timeout": 0.3, "retry_count": 1, "retry_delay": 0.01 }));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(1);
    let reason = run.json()["failures"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.starts_with("gave up after 2 attempts"), "{reason}");
    assert!(
        reason.contains("timed out") || reason.contains("timeout"),
        "{reason}"
    );

    env.emulator.set_knobs(|k| k.upload_latency_ms = 0);
    let again = env.run(&["sync", "--json"]);
    again.assert_code(0);
    assert_eq!(again.count("synced") + again.count("duplicates"), 1);
    assert_eq!(env.emulator.stats().duplicate_uploads, 0);
}

#[test]
fn malformed_json_answers_do_not_lose_or_repeat_uploads() {
    // The emulator records a file, then answers with a page instead of JSON:
    // the garbled answer is no proof, so the next attempt's duplicate check
    // finds the bytes (a garbled check ends its attempt), and the file counts
    // as uploaded by this run, once.
    let env = TestEnv::with_knobs(Knobs {
        garbage_rate: 0.5,
        ..Knobs::default()
    });
    env.write_many(20);
    env.config(json!({ "retry_count": 40, "retry_delay": 0.005 }));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 20, "{}", run.stdout);
    assert_summary_agrees(&run, &env);
    let again = env.run(&["sync", "--json"]);
    assert_eq!(again.count("skipped"), 20);
    assert_eq!(env.emulator.stats().uploads, 20);
}

/// Three CVs synced through a front that answers `path` with `status` and an
/// HTML `page` in the service's place, case by case: nothing is delivered,
/// every file fails with a reason that says each of `says`, and none is held:
/// once the front forwards again, the next run sends all three.
fn pages_in_the_services_place_hold_nothing(cases: &[(&str, u16, &str, Vec<String>)]) {
    let env = TestEnv::new();
    env.write_many(3);
    env.config(json!({ "retry_count": 1, "retry_delay": 0.01 }));
    let front = Front::start(env.emulator.addr());
    let url = front.url();
    let through_front = [("TANOVA_URL", url.as_str())];
    for (path, status, page, says) in cases {
        front.clear();
        front.page(path, *status, page);
        let run = env.run_with(&through_front, &["sync", "--json"]);
        let case = format!("{status} on {path}\n{}\n{}", run.stdout, run.stderr);
        assert_eq!(run.code, 1, "{case}");
        assert_eq!((run.count("synced"), run.count("failed")), (0, 3), "{case}");
        let reason = run.json()["failures"][0]["reason"].to_string();
        assert!(says.iter().all(|s| reason.contains(s)), "{says:?}: {case}");
        assert_eq!(env.emulator.stats().uploads, 0, "{case}");
    }
    front.clear();
    let run = env.run_with(&through_front, &["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 3, "{}", run.stdout);
    assert_eq!(env.emulator.stats().uploads, 3);
}

/// Regression: a 200 answer that is not the service's JSON (a captive
/// portal's sign-in page, a proxy's maintenance page, a website at the wrong
/// URL) was taken as an accepted upload: the file was recorded as synced,
/// though the service never saw it, and no later run sent it.
#[test]
fn a_200_page_in_the_services_place_delivers_nothing_and_holds_nothing() {
    const PAGE: &str = "<html><head><title>Sign in</title></head><body>\
        <h1>Guest network</h1><p>Please sign in to continue.</p></body></html>";
    let cases = ["/api/sync/check-duplicate", "/api/sync/upload"].map(|path| {
        let says = [
            format!("{path} answered with an HTML page"),
            "Please sign in to continue".to_string(),
            "captive portal".to_string(),
        ];
        (path, 200, PAGE, says.to_vec())
    });
    pages_in_the_services_place_hold_nothing(&cases);
}

/// Regression: an upload endpoint answering 404, 405 or 410 (a deployment
/// under way, a proxy's default page) was taken as the file's own refusal,
/// and every CV sent meanwhile was held until `tanova-sync retry`.
#[test]
fn an_upload_endpoint_that_is_not_there_holds_no_file() {
    let cases = [404, 405, 410].map(|status| {
        let says = [
            format!("/api/sync/upload answered {status}"),
            "no fault of the file's".to_string(),
        ];
        let page = "<html><h1>Not Found</h1></html>";
        ("/api/sync/upload", status, page, says.to_vec())
    });
    pages_in_the_services_place_hold_nothing(&cases);
}

/// The same page from the start: the run stops at the health check, saying
/// what answered instead of the service.
#[test]
fn a_sync_meeting_a_sign_in_page_says_what_answered() {
    let env = TestEnv::with_knobs(Knobs {
        outage: Some(Outage::Html200),
        ..Knobs::default()
    });
    env.write_many(2);
    env.config(json!({ "retry_count": 0 }));
    let run = env.run(&["sync"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("/api/sync/health answered with an HTML page")
            && run.stderr.contains("Guest network")
            && run.stderr.contains("captive portal"),
        "{}",
        run.stderr
    );
    env.emulator.set_knobs(|k| k.outage = None);
    let again = env.run(&["sync", "--json"]);
    again.assert_code(0);
    assert_eq!(again.count("synced"), 2);
}

#[test]
fn too_large_for_the_server_is_a_permanent_failure_with_its_message() {
    let env = TestEnv::with_knobs(Knobs {
        max_upload_bytes: 100,
        ..Knobs::default()
    });
    env.write("big.pdf", vec![b'x'; 1000]);
    env.write("small.pdf", "small");
    let run = env.run(&["sync", "--json"]);
    run.assert_code(1);
    let j = run.json();
    assert_eq!(
        (j["synced"].as_u64(), j["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        j["failures"][0]["reason"],
        "refused by the server (413): File too large"
    );
    assert_summary_agrees(&run, &env);
    let again = env.run(&["sync", "--json"]);
    assert_eq!(again.count("failed"), 1);
    assert_eq!(
        env.emulator.stats().rejected_other,
        1,
        "a 413 is not sent again"
    );
}

#[test]
fn service_back_pressure_with_retry_after_is_waited_out() {
    let env = TestEnv::with_knobs(Knobs {
        capacity: 1,
        upload_latency_ms: 200,
        retry_after_s: 1,
        ..Knobs::default()
    });
    env.write_many(4);
    env.config(json!({ "retry_count": 10, "retry_delay": 0.01, "concurrency": 4 }));
    let started = std::time::Instant::now();
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 4);
    let stats = env.emulator.stats();
    assert!(stats.rejected_429 >= 3, "{stats:?}");
    // Retry-After: 1 was honoured: the three refused files waited at least a second.
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_summary_agrees(&run, &env);
}
