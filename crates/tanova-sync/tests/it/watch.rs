//! Watch mode end to end: events, settling, rescans, polling and clean stops, with the real binary.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::common::live::LiveAgent;
use crate::common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

/// A watching agent with a short settle time, after its initial sync of `initial` files.
fn start_watching(env: &TestEnv, initial: u64, extra: &[&str]) -> std::process::Child {
    if !env.dir.path().join("tanova-config.json").exists() {
        env.config(json!({ "settle_ms": 100, "retry_delay": 0.05 }));
    }
    let mut args = vec!["watch"];
    args.extend_from_slice(extra);
    let child = env.spawn(&args);
    assert!(
        wait_for_uploads(env, initial, WAIT),
        "initial sync of {initial}"
    );
    // Let the watcher settle in after the initial sync.
    std::thread::sleep(Duration::from_millis(300));
    child
}

#[test]
fn a_new_file_is_delivered_quickly_with_its_metadata() {
    let env = TestEnv::new();
    env.write("old.pdf", "old");
    let child = start_watching(&env, 1, &[]);
    let written = Instant::now();
    env.write("Nurse/jane_jane@example.com.pdf", "new cv");
    assert!(wait_for_uploads(&env, 2, WAIT));
    assert!(
        written.elapsed() < Duration::from_secs(3),
        "took {:?}",
        written.elapsed()
    );
    let up = env
        .emulator
        .uploads()
        .into_iter()
        .find(|u| u.filename.starts_with("jane"))
        .unwrap();
    assert_eq!(up.job_hint.as_deref(), Some("Nurse"));
    assert_eq!(up.email.as_deref(), Some("jane@example.com"));
    let run = stop(child, Duration::from_secs(5));
    run.assert_code(0);
    assert!(run.stderr.contains("Watching"), "{}", run.stderr);
}

#[test]
fn a_file_written_slowly_is_uploaded_once_complete() {
    let env = TestEnv::new();
    env.write("first.pdf", "first");
    let child = start_watching(&env, 1, &[]);
    let path = env.folder().join("slow.pdf");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut all = Vec::new();
    for i in 0..5 {
        let chunk = format!("part {i} of a CV written slowly\n").repeat(50);
        file.write_all(chunk.as_bytes()).unwrap();
        file.flush().unwrap();
        all.extend_from_slice(chunk.as_bytes());
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(
            env.emulator.stats().uploads,
            1,
            "nothing uploaded while still being written"
        );
    }
    drop(file);
    assert!(wait_for_uploads(&env, 2, WAIT));
    let up = env
        .emulator
        .uploads()
        .into_iter()
        .find(|u| u.filename == "slow.pdf")
        .unwrap();
    assert_eq!(up.checksum, sha256_hex(&all), "the complete file");
    assert_eq!(env.emulator.stats().uploads, 2);
    stop(child, Duration::from_secs(5)).assert_code(0);
}

#[test]
fn renames_and_deletes_upload_nothing_and_moves_in_upload_once() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    env.write("b.pdf", "b");
    let child = start_watching(&env, 2, &[]);
    std::fs::rename(
        env.folder().join("a.pdf"),
        env.folder().join("a-renamed.pdf"),
    )
    .unwrap();
    std::fs::create_dir_all(env.folder().join("Moved")).unwrap();
    std::fs::rename(env.folder().join("b.pdf"), env.folder().join("Moved/b.pdf")).unwrap();
    std::fs::remove_file(env.folder().join("Moved/b.pdf")).unwrap();
    // Moved in from outside the folder, whole.
    let outside = env.dir.path().join("outside.pdf");
    std::fs::write(&outside, "from outside").unwrap();
    std::fs::rename(&outside, env.folder().join("inbox.pdf")).unwrap();
    assert!(wait_for_uploads(&env, 3, WAIT));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.uploaded_names(), ["a.pdf", "b.pdf", "inbox.pdf"]);
    assert_eq!(env.emulator.stats().duplicate_uploads, 0);
    stop(child, Duration::from_secs(5)).assert_code(0);
}

#[test]
fn changed_bytes_are_uploaded_again_as_new_content() {
    let env = TestEnv::new();
    let path = env.write("cv.pdf", "version 1");
    let child = start_watching(&env, 1, &[]);
    std::fs::write(&path, "version 2").unwrap();
    assert!(wait_for_uploads(&env, 2, WAIT));
    let sums: Vec<String> = env
        .emulator
        .uploads()
        .into_iter()
        .map(|u| u.checksum)
        .collect();
    assert_eq!(sums, [sha256_hex(b"version 1"), sha256_hex(b"version 2")]);
    stop(child, Duration::from_secs(5)).assert_code(0);
}

#[test]
fn a_new_subfolder_and_its_files_are_watched() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    let child = start_watching(&env, 1, &[]);
    for i in 0..5 {
        env.write(&format!("New Role/cv{i}.pdf"), format!("new role {i}"));
    }
    assert!(
        wait_for_uploads(&env, 6, WAIT),
        "{:?}",
        env.uploaded_names()
    );
    std::thread::sleep(Duration::from_millis(200));
    env.write("New Role/later.pdf", "later");
    assert!(
        wait_for_uploads(&env, 7, WAIT),
        "{:?}",
        env.uploaded_names()
    );
    assert!(env
        .emulator
        .uploads()
        .iter()
        .filter(|u| u.filename != "a.pdf")
        .all(|u| u.job_hint.as_deref() == Some("New Role")));
    stop(child, Duration::from_secs(5)).assert_code(0);
}

#[test]
fn a_burst_is_delivered_concurrently() {
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 50,
        ..Knobs::default()
    });
    env.write("a.pdf", "a");
    let child = start_watching(&env, 1, &[]);
    let staging = env.dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    for i in 0..300 {
        std::fs::write(
            staging.join(format!("burst{i}.txt")),
            format!("burst cv {i}"),
        )
        .unwrap();
    }
    for i in 0..300 {
        std::fs::copy(
            staging.join(format!("burst{i}.txt")),
            env.folder().join(format!("burst{i}.txt")),
        )
        .unwrap();
    }
    assert!(wait_for_uploads(&env, 301, Duration::from_secs(30)));
    let stats = env.emulator.stats();
    assert!(
        stats.peak_in_flight >= 8,
        "the burst was delivered concurrently: {stats:?}"
    );
    assert_eq!(stats.duplicate_uploads, 0);
    stop(child, Duration::from_secs(5)).assert_code(0);
}

#[test]
fn sigterm_mid_upload_exits_cleanly_and_loses_nothing() {
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 1500,
        ..Knobs::default()
    });
    env.write_many(30);
    env.config(json!({ "settle_ms": 100 }));
    let child = env.spawn(&["watch"]);
    assert!(wait_until(WAIT, || env.emulator.stats().in_flight >= 4));
    let started = Instant::now();
    let run = stop(child, Duration::from_secs(5));
    run.assert_code(0);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The uploads in flight finished and were recorded: a restart sends only the rest.
    let done = env.emulator.stats().unique_checksums;
    assert!(done >= 4, "in-flight uploads completed: {done}");
    env.emulator.set_knobs(|k| k.upload_latency_ms = 0);
    let after = env.run(&["sync", "--json"]);
    after.assert_code(0);
    assert_eq!(after.count("synced") + after.count("duplicates"), 30 - done);
    assert_eq!(env.emulator.stats().duplicate_uploads, 0);
}

#[test]
fn a_second_signal_exits_at_once() {
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 20_000,
        ..Knobs::default()
    });
    env.write_many(5);
    let child = env.spawn(&["watch"]);
    assert!(wait_until(WAIT, || env.emulator.stats().in_flight >= 1));
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    let run = stop(child, Duration::from_secs(2));
    assert_eq!(run.code, 130, "{}", run.stderr);
}

#[test]
fn a_second_instance_on_the_same_state_is_refused() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    let child = start_watching(&env, 1, &[]);
    let second = env.run(&["sync"]);
    second.assert_code(2);
    assert!(
        second.stderr.contains(&format!("pid {}", child.id())),
        "{}",
        second.stderr
    );
    stop(child, Duration::from_secs(5)).assert_code(0);
}

#[test]
fn poll_mode_finds_new_files_without_events() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    env.config(json!({ "settle_ms": 100, "poll_interval": 0.3 }));
    let child = start_watching(&env, 1, &["--poll"]);
    env.write("b.pdf", "b");
    assert!(wait_for_uploads(&env, 2, WAIT));
    let run = stop(child, Duration::from_secs(5));
    run.assert_code(0);
    assert!(run.stderr.contains("polling every 0.3s"), "{}", run.stderr);
}

#[test]
fn a_file_that_fails_on_a_live_service_is_tried_again_while_watching() {
    let env = TestEnv::with_knobs(Knobs {
        error_rate: 1.0,
        ..Knobs::default()
    });
    env.config(json!({ "settle_ms": 100, "rescan_interval": 0.5, "retry_count": 0 }));
    let child = env.spawn(&["watch"]);
    std::thread::sleep(Duration::from_millis(500));
    env.write("a.pdf", "a");
    assert!(wait_until(WAIT, || env.emulator.stats().rejected_5xx >= 1));
    env.emulator.set_knobs(|k| k.error_rate = 0.0);
    assert!(wait_for_uploads(&env, 1, WAIT), "the rescan sent it again");
    let run = stop(child, Duration::from_secs(5));
    run.assert_code(0);
    assert!(
        run.stderr.contains("a.pdf: gave up after 1 attempts")
            && run.stderr.contains("trying again in"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("FAILED"),
        "a watching agent waits out a failing service, it does not fail the file: {}",
        run.stderr
    );
}

#[test]
fn a_hard_link_without_close_events_is_uploaded_soon() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    let child = start_watching(&env, 1, &[]);
    // A hidden folder is not watched; the link appears with a create event only.
    let hidden = env.folder().join(".staging");
    std::fs::create_dir_all(&hidden).unwrap();
    std::fs::write(hidden.join("x.pdf"), "linked in").unwrap();
    std::fs::hard_link(hidden.join("x.pdf"), env.folder().join("linked.pdf")).unwrap();
    assert!(
        wait_for_uploads(&env, 2, WAIT),
        "{:?}",
        env.uploaded_names()
    );
    assert_eq!(env.uploaded_names(), ["a.pdf", "linked.pdf"]);
    stop(child, Duration::from_secs(5)).assert_code(0);
}

#[test]
fn a_vanished_folder_is_retried_and_picked_up_again() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    env.config(json!({ "settle_ms": 100, "rescan_interval": 0.3 }));
    let child = start_watching(&env, 1, &[]);
    let away = env.dir.path().join("away");
    std::fs::rename(env.folder(), &away).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(away.join("while-away.pdf"), "written while away").unwrap();
    std::fs::rename(&away, env.folder()).unwrap();
    assert!(
        wait_for_uploads(&env, 2, Duration::from_secs(15)),
        "{:?}",
        env.uploaded_names()
    );
    env.write("after.pdf", "after");
    assert!(
        wait_for_uploads(&env, 3, WAIT),
        "{:?}",
        env.uploaded_names()
    );
    // Let the backoff's next check (at most 2 s away) see the folder back.
    std::thread::sleep(Duration::from_millis(2500));
    let run = stop(child, Duration::from_secs(5));
    run.assert_code(0);
    let gone = run.stderr.matches("is gone or unreadable").count();
    assert!(
        (1..=3).contains(&gone),
        "a clear error, retried with backoff, not a busy loop:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("is back"), "{}", run.stderr);
}

/// Regression: a stop during the initial pass, while rescans had filled the
/// queue of what discovery found, left the agent waiting on that full queue.
#[test]
fn a_stop_during_the_initial_pass_exits_even_with_rescans_queued() {
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 400,
        ..Knobs::default()
    });
    env.write_many(700);
    env.config(json!({ "settle_ms": 50, "rescan_interval": 0.1 }));
    let child = env.spawn(&["watch", "--max-workers", "2"]);
    // Long enough for several rescans of 700 files to fill the queue of 1024.
    assert!(wait_until(WAIT, || env.emulator.stats().uploads >= 4));
    std::thread::sleep(Duration::from_secs(2));
    let run = stop(child, Duration::from_secs(8));
    run.assert_code(0);
}

#[test]
fn an_agent_left_running_by_its_test_ends_with_the_test_env_and_no_other() {
    // Guards `TestEnv`'s drop: a test that fails mid-watch leaves no agent
    // behind, and kills no other test's (`cargo test` runs them in one process).
    let (env, other) = (TestEnv::new(), TestEnv::new());
    env.write("cv.pdf", "cv");
    other.write("cv.pdf", "another cv");
    let child = start_watching(&env, 1, &[]);
    let others = start_watching(&other, 1, &[]);
    let state_of = |pid| process_state(pid).unwrap_or_else(|| "gone".to_string());
    let pid = child.id();
    drop(env);
    // Killed, not yet waited for: a zombie (or gone) within moments.
    let since = Instant::now();
    while !matches!(state_of(pid).as_str(), "Z" | "gone") {
        assert!(
            since.elapsed() < WAIT,
            "the agent still runs ({})",
            state_of(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(Run::wait(child).code, -1, "killed by a signal, not exited");
    assert!(
        matches!(state_of(others.id()).as_str(), "S" | "R"),
        "the other test's agent was stopped too"
    );
    stop(others, WAIT).assert_code(0);
}

#[test]
fn a_live_agent_left_running_by_its_test_is_killed_with_it() {
    // Guards `LiveAgent`'s drop: one started from a command of its own (no
    // `TestEnv` tracks it) by a test that fails before `stop`.
    let env = TestEnv::new();
    let agent = LiveAgent::start_command(env.command(&["watch"]));
    let pid = agent.child.id();
    assert!(process_state(pid).is_some(), "running");
    drop(agent);
    assert_eq!(
        process_state(pid),
        None,
        "killed and reaped with its LiveAgent"
    );
}

/// Regression: with its stderr gone (the terminal closed, the reader of its
/// pipe dead), the agent's first line after it panicked (`eprintln!`): the
/// Ctrl+C/SIGTERM handler died with it, and nothing but SIGKILL stopped it.
#[test]
fn an_agent_whose_stderr_is_gone_still_syncs_and_stops_on_sigterm() {
    let env = TestEnv::new();
    env.write("before.pdf", "before the terminal closed");
    let mut child = env
        .command(&["watch", "-v"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary starts");
    env.track(&child);
    drop(child.stderr.take());
    assert!(wait_for_uploads(&env, 1, WAIT));
    env.write("after.pdf", "after the terminal closed");
    assert!(wait_for_uploads(&env, 2, WAIT));
    signal(&child, libc::SIGTERM);
    assert!(
        wait_until(WAIT, || child.try_wait().unwrap().is_some()),
        "SIGTERM did not stop it"
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// Files written into folders the moment they are created all go out without
/// a rescan (the periodic one is an hour away): forty folders of twenty-five
/// files, written as fast as the test can. A new folder is scanned when it is
/// reported and again a second later, because notify reports it before it
/// watches it, and a file written in between makes no event. That race is
/// rare (seen once in about forty runs of the stall test under load, as half
/// a folder missing), so this test may pass without the second scan; it
/// guards the rest of the path.
#[test]
fn files_written_into_new_folders_at_once_all_go_out_without_a_rescan() {
    let env = TestEnv::new();
    env.write("old.pdf", "old");
    env.config(json!({ "settle_ms": 100, "retry_delay": 0.05, "rescan_interval": 3600 }));
    // Its log is read as it comes: a thousand lines would fill a pipe read only at the end.
    let agent = crate::common::live::LiveAgent::start(&env, &["watch"]);
    assert!(wait_for_uploads(&env, 1, WAIT), "initial sync");
    std::thread::sleep(Duration::from_millis(300));
    for folder in 0..40 {
        for file in 0..25 {
            env.write(
                &format!("new{folder}/cv{file}.pdf"),
                format!("folder {folder} file {file}"),
            );
        }
    }
    let all = wait_for_uploads(&env, 1_001, Duration::from_secs(60));
    let (code, log) = agent.stop();
    let uploaded: std::collections::HashSet<String> = env
        .emulator
        .uploads()
        .into_iter()
        .map(|u| u.checksum)
        .collect();
    let missing: Vec<String> = (0..40)
        .flat_map(|folder| (0..25).map(move |file| (folder, file)))
        .filter(|(folder, file)| {
            let bytes = format!("folder {folder} file {file}");
            !uploaded.contains(&sha256_hex(bytes.as_bytes()))
        })
        .map(|(folder, file)| format!("new{folder}/cv{file}.pdf"))
        .collect();
    assert!(all, "never uploaded: {missing:?}\n{log}");
    assert_eq!(code, 0, "{log}");
    // Found twice (by a scan and by its events), a file is still delivered once:
    // the copy found while the first was being recorded is not sent to the server's check.
    assert!(!log.contains("already in Tanova"), "{log}");
}

/// A burst bigger than the agent's event queue while the pipeline cannot take
/// files (the server holds every upload): the events that did not fit are
/// dropped, the log says so, and a rescan at once (not the periodic one, an
/// hour away) makes up for them once the server lets go.
#[test]
fn events_dropped_while_the_pipeline_is_full_are_made_up_by_a_rescan() {
    let env = TestEnv::with_knobs(Knobs {
        hold_uploads: true,
        ..Knobs::default()
    });
    env.config(json!({ "settle_ms": 100, "retry_delay": 0.05, "rescan_interval": 3600 }));
    let agent = crate::common::live::LiveAgent::start(&env, &["watch"]);
    assert!(
        wait_until(WAIT, || agent.health().0 == 200),
        "{}",
        agent.log()
    );
    // Three thousand files: about four events each, against a queue of 4,096.
    for i in 0..3_000 {
        env.write(&format!("cv{i}.pdf"), format!("burst {i}"));
    }
    assert!(
        wait_until(WAIT, || agent
            .log()
            .contains("file-system events were dropped")),
        "the queue never overflowed:\n{}",
        agent.log()
    );
    env.emulator.set_knobs(|k| k.hold_uploads = false);
    let all = wait_for_uploads(&env, 3_000, Duration::from_secs(120));
    let (code, log) = agent.stop();
    assert!(
        all,
        "{} of 3,000 uploaded:\n{log}",
        env.emulator.stats().unique_checksums
    );
    assert_eq!(code, 0, "{log}");
}
