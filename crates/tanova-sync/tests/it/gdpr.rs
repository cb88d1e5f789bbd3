//! GDPR tools end to end: `forget` rules keep a person's CVs from upload in every mode and
//! on every agent, `audit` finds what was sent about them, `--purge`, redacted logs and
//! retention. Real binaries, the emulator, a real SQLite file and a real redis-server.

use std::time::Duration;

use crate::common::live::{get, LiveAgent};
use crate::common::redis_server::{agent, RedisServer};
use crate::common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
const JANE: &str = "Nurse/jane_doe_jane@example.com.pdf";

/// Names of the files the emulator received whose name contains `part`.
fn uploaded_with(env: &TestEnv, part: &str) -> usize {
    env.uploaded_names()
        .iter()
        .filter(|n| n.contains(part))
        .count()
}

/// Check counts of a `--json` summary, showing it when one is off.
fn assert_counts(run: &Run, want: &[(&str, u64)]) {
    let got: Vec<(&str, u64)> = want.iter().map(|(k, _)| (*k, run.count(k))).collect();
    assert_eq!(got, want, "{}\n{}", run.stdout, run.stderr);
}

/// Wait until a watching agent's `/health` counts a suppressed file.
fn wait_for_a_suppressed_file(agent: &LiveAgent) {
    let suppressed = || agent.health().1["counts"]["suppressed"].as_u64();
    assert!(
        wait_until(WAIT, || suppressed() >= Some(1)),
        "suppressed: {:?}\n{}",
        suppressed(),
        agent.log()
    );
}

/// The `audit --json` records.
fn audit_records(run: &Run) -> Vec<Value> {
    run.assert_code(0);
    run.json()["records"].as_array().expect("records").clone()
}

#[test]
fn a_forgotten_email_is_never_uploaded_again_whatever_its_bytes() {
    let env = TestEnv::new();
    env.write(JANE, "Jane's CV, version 1");
    env.write("Nurse/john.pdf", "John's CV");
    let forget = env.run(&[
        "forget",
        "--email",
        "JANE@example.com",
        "--reason",
        "erasure request #12",
        "--date",
        "2026-11-30",
    ]);
    forget.assert_code(0);
    assert!(
        forget.stdout.contains("erasure request #12"),
        "{}",
        forget.stdout
    );

    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_counts(&run, &[("synced", 1), ("suppressed", 1)]);
    assert_eq!(uploaded_with(&env, "jane"), 0);
    // The walk read her file (small files are hashed as found), but the
    // state keeps no checksum of it: only John's version is remembered.
    let db = rusqlite::Connection::open(env.state_dir().join("tanova-sync.db")).unwrap();
    let remembered: Vec<String> = db
        .prepare("SELECT lower(hex(checksum)) FROM path_cache")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(remembered, [sha256_hex(b"John's CV")]);

    // Re-saved with new bytes, and a copy elsewhere: still never uploaded.
    env.write(JANE, "Jane's CV, version 2, re-exported");
    env.write("Archive/jane_doe_jane@example.com.docx", "another copy");
    let again = env.run(&["sync", "--json"]);
    assert_counts(&again, &[("suppressed", 2), ("synced", 0)]);
    assert_eq!(uploaded_with(&env, "jane"), 0);

    let status = env.run(&["status", "--json"]);
    assert_eq!(status.json()["suppressed"], 2, "{}", status.stdout);

    // Listed with its reason and date, and removable: then the files go up.
    let listed = env.run(&["forget", "--list", "--json"]);
    listed.assert_code(0);
    let rules = listed.json()["rules"].as_array().unwrap().clone();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        (&rules[0]["kind"], &rules[0]["value"], &rules[0]["date"]),
        (
            &json!("email"),
            &json!("jane@example.com"),
            &json!("2026-11-30")
        )
    );
    let id = rules[0]["id"].as_str().unwrap();
    env.run(&["forget", "--remove", id]).assert_code(0);
    env.run(&["forget", "--remove", id]).assert_code(1);
    let after = env.run(&["sync", "--json"]);
    assert_counts(&after, &[("synced", 2), ("suppressed", 0)]);
}

#[test]
fn name_path_and_checksum_rules_each_hold_with_single_and_batch_uploads() {
    for batch_max_files in [0, 8] {
        let env = TestEnv::with_knobs(Knobs {
            batch_max_files,
            ..Knobs::default()
        });
        env.write("Sales/jose_garcia_cv.txt", "José's CV");
        env.write("Old/2019/anyone.txt", "old CV");
        env.write("keep.txt", "kept CV");
        env.write("keep2.txt", "kept CV 2");
        let refused_bytes = "a CV the agency was asked to forget";
        env.write("Misc/renamed.txt", refused_bytes);
        env.run(&["forget", "--name", "JOSÉ García"]).assert_code(0);
        env.run(&["forget", "--path", "Old/**/*.txt"])
            .assert_code(0);
        let sum = sha256_hex(refused_bytes.as_bytes());
        env.run(&["forget", "--checksum", &sum]).assert_code(0);
        let run = env.run(&["sync", "--json"]);
        run.assert_code(0);
        assert_counts(&run, &[("synced", 2), ("suppressed", 3)]);
        assert_eq!(env.uploaded_names(), ["keep.txt", "keep2.txt"]);
        assert_eq!(env.emulator.stats().batch_requests > 0, batch_max_files > 0);
    }
}

#[test]
fn a_held_file_forgotten_then_retried_is_suppressed_not_sent() {
    let env = TestEnv::with_knobs(Knobs {
        reject_filename_contains: Some("jane".into()),
        ..Knobs::default()
    });
    env.write(JANE, "Jane's CV");
    env.run(&["sync"]).assert_code(1);
    env.run(&["forget", "--email", "jane@example.com"])
        .assert_code(0);
    env.run(&["retry", "--all"]).assert_code(0);
    env.emulator
        .set_knobs(|k| k.reject_filename_contains = None);
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_counts(&run, &[("suppressed", 1), ("failed", 0)]);
    assert_eq!(uploaded_with(&env, "jane"), 0);
}

#[test]
fn bad_rules_are_refused_naming_the_flag_and_value() {
    let env = TestEnv::new();
    let table: [(&[&str], &str); 4] = [
        (
            &["forget", "--email", "not-an-email"],
            "--email \"not-an-email\"",
        ),
        (&["forget", "--checksum", "abc"], "--checksum \"abc\""),
        (
            &["forget", "--path", "/elsewhere/x.pdf"],
            "not inside the CV folder",
        ),
        (
            &["forget", "--name", "x", "--date", "2026-02-30"],
            "2026-02-30",
        ),
    ];
    for (args, want) in table {
        let run = env.run(args);
        run.assert_code(2);
        assert!(run.stderr.contains(want), "{args:?}: {}", run.stderr);
    }
    assert!(env.run(&["forget", "--list", "--json"]).json()["rules"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn audit_before_any_sync_says_so_and_creates_no_state() {
    let env = TestEnv::new();
    let run = env.run(&["audit"]);
    run.assert_code(2);
    assert!(run.stderr.contains("no state in"), "{}", run.stderr);
    assert!(!env.state_dir().join("tanova-sync.db").exists());
}

#[test]
fn a_rule_set_while_watching_holds_within_seconds_and_shows_in_metrics() {
    let env = TestEnv::new();
    env.config(json!({ "settle_ms": 100, "retry_delay": 0.05 }));
    env.write("first.pdf", "first");
    let agent = LiveAgent::start(&env, &["watch"]);
    assert!(wait_for_uploads(&env, 1, WAIT));
    env.run(&["forget", "--email", "jane@example.com"])
        .assert_code(0);
    std::thread::sleep(Duration::from_millis(1500));
    env.write(JANE, "Jane's CV");
    env.write("after.pdf", "after");
    assert!(wait_for_uploads(&env, 2, WAIT));
    wait_for_a_suppressed_file(&agent);
    let (_, _, metrics) = get(&agent.url("/metrics"));
    let suppressed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tanova_files_suppressed_total "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(suppressed >= Some(1), "{metrics}");
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    assert_eq!(uploaded_with(&env, "jane"), 0);
}

#[test]
fn audit_lists_uploads_and_duplicates_and_purge_forgets_the_person() {
    let env = TestEnv::new();
    env.write(JANE, "Jane's CV");
    env.write("Sales/john.pdf", "John's CV");
    // Already on the server: a duplicate, audited too.
    env.emulator.preload([sha256_hex(b"John's CV")]);
    env.run(&["sync"]).assert_code(0);
    let all = audit_records(&env.run(&["audit", "--json"]));
    assert_eq!(all.len(), 2);
    let jane = audit_records(&env.run(&["audit", "--json", "--email", "Jane@Example.com"]));
    assert_eq!(jane.len(), 1);
    let r = &jane[0];
    assert_eq!(r["path"], JANE);
    assert_eq!(r["checksum"], sha256_hex(b"Jane's CV"));
    assert_eq!(r["job_hint"], "Nurse");
    assert_eq!(r["outcome"], "uploaded");
    assert!(
        r["candidate_id"].is_string() && r["host"].is_string() && r["time"].is_string(),
        "{r}"
    );
    let john = audit_records(&env.run(&["audit", "--json", "--path", "Sales"]));
    assert_eq!(john[0]["outcome"], "duplicate");
    assert!(audit_records(&env.run(&["audit", "--json", "--until", "2000-01-01"])).is_empty());

    let csv = env.dir.path().join("jane.csv");
    env.run(&[
        "audit",
        "--name",
        "jane doe",
        "--export",
        csv.to_str().unwrap(),
    ])
    .assert_code(0);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().nth(1).unwrap().contains(JANE), "{text}");

    env.run(&["forget", "--email", "jane@example.com", "--purge"])
        .assert_code(0);
    assert!(
        audit_records(&env.run(&["audit", "--json", "--email", "jane@example.com"])).is_empty()
    );
    let kept = audit_records(&env.run(&["audit", "--json"]));
    assert_eq!(kept.len(), 2, "the record stays, without the person");
    let purged = kept
        .iter()
        .find(|r| r["checksum"] == sha256_hex(b"Jane's CV"))
        .unwrap();
    assert!(
        purged["path"].is_null() && purged["email"].is_null(),
        "{purged}"
    );
    assert!(purged["candidate_id"].is_string());
    // Nor does the state keep the path elsewhere.
    let db = rusqlite::Connection::open(env.state_dir().join("tanova-sync.db")).unwrap();
    let left: i64 = db
        .query_row(
            "SELECT (SELECT COUNT(*) FROM synced WHERE path LIKE '%jane%')
                  + (SELECT COUNT(*) FROM audit WHERE path LIKE '%jane%' OR email IS NOT NULL)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn two_agents_share_rules_both_ways_and_audit_sees_both() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let env = TestEnv::new();
    env.write(JANE, "Jane's CV");
    finish(&mut agent(&env, &redis, "a", &["sync"])).assert_code(0);
    env.write("Archive/jane_doe_jane@example.com.docx", "Jane's older CV");
    let b = finish(&mut agent(&env, &redis, "b", &["sync", "--json"]));
    assert_counts(&b, &[("synced", 1)]);

    // Each agent's uploads, from either agent: the ledger holds them all.
    for name in ["a", "b"] {
        let run = finish(&mut agent(
            &env,
            &redis,
            name,
            &["audit", "--json", "--email", "jane@example.com"],
        ));
        let records = audit_records(&run);
        assert_eq!(records.len(), 2, "{name}: {}", run.stdout);
    }
    // A machine that never synced sees them too, and its state is not created by looking.
    let c = finish(&mut agent(&env, &redis, "c", &["audit", "--json"]));
    assert_eq!(audit_records(&c).len(), 2, "{}", c.stdout);
    assert!(!env
        .dir
        .path()
        .join("state-c")
        .join("tanova-sync.db")
        .exists());
    let local = env.run_with(
        &[(
            "TANOVA_STATE_DIR",
            env.dir.path().join("state-a").to_str().unwrap(),
        )],
        &["audit", "--json"],
    );
    assert_eq!(
        audit_records(&local).len(),
        1,
        "without the ledger: this machine's only"
    );

    // A rule set on b holds on a: the re-saved file is not uploaded.
    finish(&mut agent(
        &env,
        &redis,
        "b",
        &["forget", "--email", "jane@example.com"],
    ))
    .assert_code(0);
    env.write(JANE, "Jane's CV, re-saved with new bytes");
    let a = finish(&mut agent(&env, &redis, "a", &["sync", "--json"]));
    assert_counts(&a, &[("suppressed", 2), ("synced", 0)]);

    // A rule set on a holds on b.
    finish(&mut agent(
        &env,
        &redis,
        "a",
        &["forget", "--name", "Peter Pan"],
    ))
    .assert_code(0);
    env.write("peter_pan.txt", "Peter's CV");
    let b = finish(&mut agent(&env, &redis, "b", &["sync", "--json"]));
    assert_counts(&b, &[("suppressed", 3), ("synced", 0)]);
    assert_eq!(uploaded_with(&env, "peter"), 0);
    assert_eq!(env.emulator.stats().uploads, 2);

    let listed = finish(&mut agent(
        &env,
        &redis,
        "b",
        &["forget", "--list", "--json"],
    ));
    assert_eq!(listed.json()["rules"].as_array().unwrap().len(), 2);
}

#[test]
fn redacted_logs_name_files_by_folder_and_checksum_only() {
    let env = TestEnv::new();
    env.config(json!({ "privacy_redact_logs": true, "settle_ms": 100 }));
    env.write(JANE, "Jane's CV");
    env.write("Nurse/jane_empty.pdf", "");
    // A suppressed file is reported by the rule's id, not its value.
    env.write("Nurse/peter_pan_peter@example.com.pdf", "Peter's CV");
    env.run(&["forget", "--email", "peter@example.com"])
        .assert_code(0);
    let agent = LiveAgent::start(&env, &["watch", "-v"]);
    assert!(wait_for_uploads(&env, 1, WAIT));
    wait_for_a_suppressed_file(&agent);
    let (_, _, page) = get(&agent.url("/"));
    let (_, health) = agent.health();
    let (code, log) = agent.stop();
    assert_eq!(code, 0);
    let prefix = &sha256_hex(b"Jane's CV")[..12];
    assert!(log.contains(&format!("Nurse/[#{prefix}]")), "{log}");
    for (what, text) in [
        ("log", log.as_str()),
        ("page", page.as_str()),
        ("health", &health.to_string()),
    ] {
        assert!(
            !text.to_lowercase().contains("jane") && !text.to_lowercase().contains("peter"),
            "{what} names the file:\n{text}"
        );
    }
    assert!(page.contains("Nurse/[#"), "{page}");

    // The JSON log's event per file (what a collector keeps) is redacted too.
    env.write("Nurse/jane_new_jane@example.com.pdf", "Jane's new CV");
    let run = env.run(&["sync", "--log-format", "json"]);
    run.assert_code(0);
    let prefix = &sha256_hex(b"Jane's new CV")[..12];
    assert!(
        run.stderr.contains(&format!("Nurse/[#{prefix}]")),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.to_lowercase().contains("jane"),
        "{}",
        run.stderr
    );
}

#[test]
fn retention_deletes_old_paths_and_keeps_what_stops_a_second_upload() {
    let env = TestEnv::new();
    env.write(JANE, "Jane's CV");
    env.write("gone.pdf", "a CV deleted later");
    env.run(&["sync"]).assert_code(0);
    std::fs::remove_file(env.folder().join("gone.pdf")).unwrap();
    env.config(json!({ "privacy_retain_days": 30 }));
    // The first run with retention starts the gone file's clock; nothing is old yet.
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        audit_records(&env.run(&["audit", "--json", "--path", "gone.pdf"])).len(),
        1
    );
    // A month and a day later (the state's clock moved back instead).
    let db = rusqlite::Connection::open(env.state_dir().join("tanova-sync.db")).unwrap();
    let back = 31 * 86_400;
    db.execute_batch(&format!("UPDATE gone_paths SET since = since - {back};"))
        .unwrap();
    drop(db);
    let run = env.run(&["sync", "--json"]);
    assert_counts(&run, &[("skipped", 1), ("synced", 0)]);
    let records = audit_records(&env.run(&["audit", "--json"]));
    let gone = records
        .iter()
        .find(|r| r["checksum"] == sha256_hex(b"a CV deleted later"))
        .unwrap();
    assert!(gone["path"].is_null(), "{gone}");
    let jane = records
        .iter()
        .find(|r| r["checksum"] == sha256_hex(b"Jane's CV"))
        .unwrap();
    assert_eq!(jane["path"], JANE, "still there and recent: kept");
    // Old records lose their details too, but their bytes stay known.
    let db = rusqlite::Connection::open(env.state_dir().join("tanova-sync.db")).unwrap();
    db.execute_batch(&format!(
        "UPDATE audit SET at = at - {back}; UPDATE synced SET synced_at = synced_at - {back};"
    ))
    .unwrap();
    drop(db);
    let run = env.run(&["sync", "--json"]);
    assert_counts(&run, &[("skipped", 1), ("synced", 0)]);
    let records = audit_records(&env.run(&["audit", "--json"]));
    assert!(
        records
            .iter()
            .all(|r| r["path"].is_null() && r["email"].is_null()),
        "{records:?}"
    );
    assert!(records.iter().all(|r| r["candidate_id"].is_string()));
    assert!(!env.folder().join("gone.pdf").exists());
}

#[test]
fn retention_also_prunes_the_shared_audit_records() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let env = TestEnv::new();
    env.write(JANE, "Jane's CV");
    finish(&mut agent(&env, &redis, "a", &["sync"])).assert_code(0);
    // Forty days pass (the record's clock moved back instead).
    let mut conn = redis.connection().unwrap();
    let json: String = redis::cmd("LINDEX")
        .arg("tanova:audit")
        .arg(0)
        .query(&mut conn)
        .unwrap();
    let mut record: Value = serde_json::from_str(&json).unwrap();
    record["at"] = json!(record["at"].as_i64().unwrap() - 40 * 86_400);
    redis::cmd("LSET")
        .arg("tanova:audit")
        .arg(0)
        .arg(record.to_string())
        .query::<()>(&mut conn)
        .unwrap();
    env.config(json!({ "privacy_retain_days": 30 }));
    finish(&mut agent(&env, &redis, "b", &["sync"])).assert_code(0);
    let run = finish(&mut agent(&env, &redis, "b", &["audit", "--json"]));
    let records = audit_records(&run);
    assert_eq!(records.len(), 1, "{}", run.stdout);
    assert!(
        records[0]["path"].is_null() && records[0]["email"].is_null(),
        "{}",
        run.stdout
    );
    assert_eq!(records[0]["checksum"], sha256_hex(b"Jane's CV"));
}
