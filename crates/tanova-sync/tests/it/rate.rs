//! `max_requests_per_minute` through the real binary: the emulator never sees requests faster than the limit.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;
use tanova_emulator::Stats;
use tanova_sync::api::rate::BURST;

/// Every API request the emulator has counted.
fn requests(stats: &Stats) -> u64 {
    stats.health_calls
        + stats.check_duplicate_calls
        + stats.uploads
        + stats.batch_requests
        + stats.rejected_429
        + stats.rejected_5xx
        + stats.rejected_other
        + stats.rejected_checksum
        + stats.dropped
}

/// Run `sync --json` to the end, checking every 10 ms that the requests the
/// emulator has seen are within what `per_minute` allows since the start.
/// Returns the run and how long it took.
fn run_watching_the_rate(
    env: &TestEnv,
    per_minute: u64,
    cmd: std::process::Command,
) -> (Run, Duration) {
    let interval = Duration::from_secs(60).as_secs_f64() / per_minute as f64;
    let mut cmd = cmd;
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("binary starts");
    let mut most = 0;
    while child.try_wait().unwrap().is_none() {
        // Counted after the start: the agent's first request came later still.
        let allowed = u64::from(BURST) + (started.elapsed().as_secs_f64() / interval) as u64;
        let seen = requests(&env.emulator.stats());
        most = most.max(seen);
        assert!(
            seen <= allowed,
            "{seen} requests after {:?}: at most {allowed} allowed at {per_minute}/min",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    let run = Run::wait(child);
    assert!(most > 0, "the run was watched while it sent");
    (run, elapsed)
}

#[test]
fn requests_arrive_no_faster_than_max_requests_per_minute() {
    let env = TestEnv::new();
    env.write_many(6);
    env.config(json!({ "max_requests_per_minute": 120 }));
    let (run, elapsed) = run_watching_the_rate(&env, 120, env.command(&["sync", "--json"]));
    run.assert_code(0);
    assert_eq!(run.count("synced"), 6);
    let stats = env.emulator.stats();
    // One health check, then a duplicate check and an upload per file.
    let total = requests(&stats);
    assert_eq!(total, 1 + 6 + 6, "{stats:?}");
    // After the burst, one request per half second: the limit's own minimum.
    // (Also a regression test: files still in flight 3 s after the scan ended
    // used to be abandoned as if the run had been stopped.)
    let least = Duration::from_millis(500) * (total as u32 - BURST);
    assert!(
        elapsed >= least,
        "{total} requests at 120/min took {elapsed:?}, less than the {least:?} the limit allows"
    );
}

#[test]
fn the_environment_variable_sets_the_limit_too() {
    let env = TestEnv::new();
    env.write_many(2);
    let mut cmd = env.command(&["sync", "--json"]);
    cmd.env("TANOVA_MAX_REQUESTS_PER_MINUTE", "60");
    let (run, elapsed) = run_watching_the_rate(&env, 60, cmd);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 2);
    let total = requests(&env.emulator.stats());
    assert_eq!(total, 5);
    let least = Duration::from_secs(1) * (total as u32 - BURST);
    assert!(elapsed >= least, "{elapsed:?} < {least:?}");
}

#[test]
fn bad_values_name_the_field() {
    let env = TestEnv::new();
    let table = [
        (
            json!({ "max_requests_per_minute": 0 }),
            "max_requests_per_minute: expected 1 to 1000000",
        ),
        (
            json!({ "max_requests_per_minute": "fast" }),
            "max_requests_per_minute: expected a whole number",
        ),
        (json!({ "batch_size": 0 }), "batch_size: expected 1 to 1000"),
        (
            json!({ "batch_size": 1.5 }),
            "batch_size: expected a whole number",
        ),
    ];
    for (config, want) in table {
        env.config(config.clone());
        let run = env.run(&["sync"]);
        run.assert_code(2);
        assert!(run.stderr.contains(want), "{config}: {}", run.stderr);
    }
    std::fs::remove_file(env.dir.path().join("tanova-config.json")).unwrap();
    let run = env.run_with(&[("TANOVA_MAX_REQUESTS_PER_MINUTE", "lots")], &["sync"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("environment variable TANOVA_MAX_REQUESTS_PER_MINUTE: max_requests_per_minute: expected a whole number"),
        "{}",
        run.stderr
    );
}
