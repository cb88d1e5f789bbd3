//! Months unattended (issue 10): a rejected key, a firewall's 403, an outage,
//! odd clocks, growing files, a crash mid-upload and dry runs, against the real
//! binary and an emulator that misbehaves.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::common::live::{get, LiveAgent, WAIT};
use crate::common::*;
use serde_json::json;
use tanova_emulator::Outage;

/// The key the emulator is rotated to; the agent must pick it up from its config file.
const NEW_KEY: &str = ROTATED_KEY;

/// A watching agent reading its key from the config file only (no TANOVA_API_KEY).
fn watching_with_config_key(env: &TestEnv, extra: serde_json::Value) -> LiveAgent {
    let mut config = json!({
        "api_key": DEFAULT_API_KEY,
        "settle_ms": 100,
        "retry_delay": 0.05,
        "retry_count": 1,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    env.config(config);
    let mut command = env.command(&["watch"]);
    command.env_remove("TANOVA_API_KEY");
    LiveAgent::start_command(command)
}

fn metrics(agent: &LiveAgent) -> String {
    get(&agent.url("/metrics")).2
}

#[test]
fn a_key_revoked_while_watching_pauses_says_so_and_resumes_with_the_new_key() {
    let env = TestEnv::new();
    env.write("first.pdf", "first CV");
    let mut agent = watching_with_config_key(&env, json!({}));
    assert!(wait_for_uploads(&env, 1, WAIT));

    env.emulator.set_knobs(|k| k.api_key = NEW_KEY.to_string());
    env.write("during.pdf", "written while the key is revoked");
    // Within 10 s: an ERROR line, /health 503 with the reason, the metric at 0.
    let mut body = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (status, b) = agent.health();
            body = b;
            status == 503 && body["status"] == "key_rejected"
        }),
        "/health never said key_rejected: {body}\n{}",
        agent.log()
    );
    let text = metrics(&agent);
    assert!(text.contains("\ntanova_healthy 0\n"), "{text}");
    assert!(
        text.contains("tanova_problem{reason=\"key_rejected\"} 1"),
        "{text}"
    );
    assert!(
        agent.log().contains("ERROR") && agent.log().contains("uploads are paused"),
        "{}",
        agent.log()
    );
    assert_eq!(env.emulator.stats().unique_checksums, 1);
    assert!(
        agent.child_alive(),
        "a rejected key must not end a watching agent"
    );

    // The admin puts the new key in the config file: picked up with no restart.
    env.config(json!({
        "api_key": NEW_KEY, "settle_ms": 100, "retry_delay": 0.05, "retry_count": 1,
    }));
    assert!(
        wait_for_uploads(&env, 2, Duration::from_secs(20)),
        "the file queued while paused was not delivered:\n{}",
        agent.log()
    );
    assert!(wait_until(WAIT, || agent.health().0 == 200));
    assert!(metrics(&agent).contains("\ntanova_healthy 1\n"));
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("using the new API key"), "{log}");
    assert!(!log.contains(&NEW_KEY[..16]), "the new key leaked: {log}");
}

#[test]
fn a_firewall_403_fails_one_file_and_the_run_goes_on() {
    let env = TestEnv::new();
    let blocked = env.write("blocked.pdf", "a CV a proxy does not like");
    env.write("fine.pdf", "a CV that goes through");
    let sum = sha256_hex(&std::fs::read(&blocked).unwrap());
    env.emulator.set_knobs(|k| k.forbid_checksums = vec![sum]);
    let run = env.run(&["sync", "--json"]);
    run.assert_code(1);
    let summary = run.json();
    assert_eq!(
        (summary["synced"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(1))
    );
    let reason = summary["failures"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("403") && reason.contains("Access denied"),
        "{reason}"
    );
    assert!(reason.contains("key itself is accepted"), "{reason}");
    assert!(!reason.contains('<'), "HTML reduced to its text: {reason}");
    assert!(
        !run.stderr.contains("API key was rejected"),
        "{}",
        run.stderr
    );
}

#[test]
fn sync_still_stops_at_once_on_a_rejected_key() {
    let env = TestEnv::new();
    env.write_many(3);
    env.emulator.set_knobs(|k| k.api_key = NEW_KEY.to_string());
    let run = env.run(&["sync"]);
    run.assert_code(2);
    assert!(run.stderr.contains("rejected"), "{}", run.stderr);
}

#[test]
fn a_file_with_a_future_mtime_moved_in_is_uploaded_while_watching() {
    let env = TestEnv::new();
    env.write("old.pdf", "old");
    let agent = watching_with_config_key(&env, json!({}));
    assert!(wait_for_uploads(&env, 1, WAIT));
    for (name, offset) in [("future.pdf", 86_400i64), ("past.pdf", -86_400 * 365 * 20)] {
        let outside = env.dir.path().join(name);
        std::fs::write(
            &outside,
            format!("{name} from a machine with another clock"),
        )
        .unwrap();
        let when = if offset > 0 {
            SystemTime::now() + Duration::from_secs(offset as u64)
        } else {
            SystemTime::now() - Duration::from_secs(offset.unsigned_abs())
        };
        let file = std::fs::File::options().write(true).open(&outside).unwrap();
        file.set_times(std::fs::FileTimes::new().set_modified(when))
            .unwrap();
        drop(file);
        std::fs::rename(&outside, env.folder().join(name)).unwrap();
    }
    assert!(
        wait_for_uploads(&env, 3, WAIT),
        "a file from the future or the past was never uploaded:\n{}",
        agent.log()
    );
    agent.stop();
}

#[test]
fn a_file_that_grows_during_its_upload_is_sent_again_whole() {
    let env = TestEnv::with_knobs(Knobs {
        read_bytes_per_sec: 400_000,
        ..Knobs::default()
    });
    let path = env.write("growing.pdf", vec![b'a'; 800_000]);
    env.config(json!({ "settle_ms": 50 }));
    let child = env.spawn(&["sync", "--json"]);
    // Mid-upload (about 2 s of body at 400 kB/s), the writer appends.
    assert!(wait_until(WAIT, || env.emulator.stats().in_flight >= 1));
    std::thread::sleep(Duration::from_millis(500));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, &[b'b'; 1000]).unwrap();
    drop(file);
    let run = Run::wait(child);
    let whole = sha256_hex(&std::fs::read(&path).unwrap());
    let sums: Vec<String> = env
        .emulator
        .uploads()
        .into_iter()
        .map(|u| u.checksum)
        .collect();
    assert!(
        sums.contains(&whole),
        "the final bytes were never sent ({sums:?}):\n{}",
        run.stderr
    );
    run.assert_code(0);
}

/// Start an outage of `kind`, write `files` CVs under `during/`, and wait
/// (15 s at most) until the agent's `/health` says the service is unreachable.
fn outage_begins(env: &TestEnv, agent: &LiveAgent, kind: Outage, files: usize) {
    env.emulator.set_knobs(|k| k.outage = Some(kind));
    for i in 0..files {
        env.write(
            &format!("during/cv{i}.pdf"),
            format!("written during the outage {i}"),
        );
    }
    // And why, in the error's words, naming the URL.
    let reason = agent.problem_within("service_unreachable", Duration::from_secs(15));
    assert!(reason.contains("/api/sync/health"), "{reason:?}");
    if kind == Outage::Html200 {
        assert!(reason.contains("answered with an HTML page"), "{reason:?}");
    }
}

/// A watching agent in poll mode meets an outage of `kind`: files written
/// meanwhile wait, `/health` says why, and all of them go out when it ends.
fn outage_parks_nothing(kind: Outage) {
    let env = TestEnv::new();
    env.write("before.pdf", "before the outage");
    let mut agent = watching_with_config_key(
        &env,
        json!({
            "watch_mode": "poll", "poll_interval": 0.3, "max_attempts": 1, "retry_count": 0,
            // A stalled server is given up on after this long.
            "request_timeout": 1,
        }),
    );
    assert!(wait_for_uploads(&env, 1, WAIT));
    outage_begins(&env, &agent, kind, 5);
    // Many poll rescans (and max_attempts 1) pass while the service is down.
    std::thread::sleep(Duration::from_secs(4));
    assert!(agent.child_alive());
    env.emulator.set_knobs(|k| k.outage = None);
    assert!(
        wait_for_uploads(&env, 6, Duration::from_secs(90)),
        "files parked by the outage:\n{}",
        agent.log()
    );
    assert!(wait_until(WAIT, || agent.health().0 == 200));
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("answers again; resuming uploads"), "{log}");
    let status = env.run(&["status", "--json"]);
    status.assert_code(0);
    assert_eq!(status.json()["failed"], 0, "{}", status.stdout);
}

#[test]
fn an_outage_that_drops_connections_parks_nothing() {
    outage_parks_nothing(Outage::Drop);
}

#[test]
fn a_stalled_server_parks_nothing() {
    outage_parks_nothing(Outage::Hang);
}

#[test]
fn a_proxy_answering_502_pages_parks_nothing() {
    outage_parks_nothing(Outage::Html502);
}

/// Regression: a portal's 200 page was taken for the service's answer, and
/// the files written meanwhile were recorded as synced without reaching it.
#[test]
fn a_portal_answering_200_pages_parks_nothing_and_loses_nothing() {
    outage_parks_nothing(Outage::Html200);
}

/// A watching agent whose service answers uploads with a 404 for a while (a
/// deployment, a proxy's default page) holds none of the files written then:
/// they go out once uploads are taken again, with no `retry`.
#[test]
fn uploads_answered_404_for_a_while_are_sent_once_the_endpoint_is_back() {
    let env = TestEnv::new();
    let front = crate::common::redirect::Front::start(env.emulator.addr());
    env.config(json!({
        "api_key": DEFAULT_API_KEY, "settle_ms": 100, "retry_delay": 0.05, "retry_count": 1,
        "max_attempts": 1,
    }));
    let mut command = env.command(&["watch"]);
    command.env("TANOVA_URL", front.url());
    let agent = LiveAgent::start_command(command);
    front.page(
        "/api/sync/upload",
        404,
        "<html><h1>404 Not Found</h1></html>",
    );
    env.write_many(5);
    let refused = || {
        let requests = front.requests();
        requests
            .iter()
            .filter(|r| r.path == "/api/sync/upload")
            .count()
    };
    assert!(wait_until(WAIT, || refused() >= 5), "{}", agent.log());
    assert_eq!(env.emulator.stats().uploads, 0);
    front.clear();
    assert!(
        wait_for_uploads(&env, 5, Duration::from_secs(90)),
        "files held by the 404s:\n{}",
        agent.log()
    );
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
    let status = env.run(&["status", "--json"]);
    assert_eq!(status.json()["failed"], 0, "{}", status.stdout);
}

/// Regression: a service whose health check answers but whose every upload
/// fails (its processing down behind a healthy front) left `/health` at 200
/// "ok" for as long as it lasted, while nothing was uploaded. Now it says
/// `uploads_failing` with the last error once that has lasted `FAILING_FOR`,
/// and nothing is held: everything goes out once uploads succeed again.
#[test]
fn uploads_that_keep_failing_behind_a_healthy_health_check_are_reported() {
    let env = TestEnv::new();
    let agent = watching_with_config_key(&env, json!({}));
    env.emulator.set_knobs(|k| k.error_rate = 1.0);
    env.write_many(5);
    let limit = tanova_sync::metrics::FAILING_FOR + Duration::from_secs(20);
    let reason = agent.problem_within("uploads_failing", limit);
    assert!(reason.contains("Internal error (injected)"), "{reason:?}");
    // Logged at the first failure past FAILING_FOR (the files' retries back off to a minute).
    assert!(
        wait_until(Duration::from_secs(70), || agent
            .log()
            .contains("no upload has succeeded")),
        "{}",
        agent.log()
    );
    assert_eq!(env.emulator.stats().uploads, 0);
    env.emulator.set_knobs(|k| k.error_rate = 0.0);
    assert!(
        wait_for_uploads(&env, 5, Duration::from_secs(90)),
        "{}",
        agent.log()
    );
    assert!(wait_until(WAIT, || agent.health().0 == 200));
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("uploads succeed again"), "{log}");
    assert_eq!(env.run(&["status", "--json"]).json()["failed"], 0);
}

/// A stalled server is found out by one health check after the first request
/// that got no answer, not after every retry has waited `request_timeout`: with
/// forty tries of a second each, that took the admin's `/health` half a minute
/// (ten minutes with the defaults) to stop saying "ok".
#[test]
fn a_stalled_server_is_reported_after_its_first_timeout_not_after_every_retry() {
    let env = TestEnv::new();
    env.write("before.pdf", "before the stall");
    let agent = watching_with_config_key(
        &env,
        json!({ "request_timeout": 1, "retry_count": 40, "retry_delay": 0.01 }),
    );
    assert!(wait_for_uploads(&env, 1, WAIT));
    outage_begins(&env, &agent, Outage::Hang, 10);
    // The deliveries stopped retrying into the stall (ten files: ten requests
    // a second): they wait at the gate, and only the prober's health checks
    // (one, then two, four… seconds apart) meet the stall.
    let hung = env.emulator.stats().outage_refused;
    std::thread::sleep(Duration::from_secs(3));
    let more = env.emulator.stats().outage_refused - hung;
    assert!(
        more <= 5,
        "{more} more requests went into the stall:\n{}",
        agent.log()
    );
    env.emulator.set_knobs(|k| k.outage = None);
    assert!(
        wait_for_uploads(&env, 11, Duration::from_secs(60)),
        "files written during the stall never went out:\n{}",
        agent.log()
    );
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("cannot reach the Tanova service"), "{log}");
    assert!(log.contains("answers again; resuming uploads"), "{log}");
}

/// A one-shot sync that meets a stalled service ends after one timeout and
/// one health check, its files failed for the next run, instead of every file
/// trying forty times a second each; the next run delivers them.
#[test]
fn a_sync_against_a_stalled_server_ends_after_one_timeout_and_loses_nothing() {
    // Slow duplicate checks: the stall begins before any file is through.
    let env = TestEnv::with_knobs(Knobs {
        check_latency_ms: 2_000,
        ..Knobs::default()
    });
    env.write_many(5);
    env.config(json!({ "request_timeout": 1, "retry_count": 40, "retry_delay": 0.01 }));
    let child = env.spawn(&["sync"]);
    assert!(wait_until(WAIT, || env.emulator.stats().health_calls >= 1));
    env.emulator.set_knobs(|k| k.outage = Some(Outage::Hang));
    let run = Run::wait(child);
    run.assert_code(1);
    assert!(
        run.stderr.contains("cannot reach the Tanova service"),
        "{}",
        run.stderr
    );
    // Forty tries of five files would be two hundred requests into the stall.
    let stalled = env.emulator.stats().outage_refused;
    assert!(
        stalled <= 15,
        "{stalled} requests went into the stall:\n{}",
        run.stderr
    );
    env.emulator.set_knobs(|k| {
        k.outage = None;
        k.check_latency_ms = 0;
    });
    env.run(&["sync"]).assert_code(0);
    assert_eq!(env.emulator.stats().unique_checksums, 5);
}

/// A small tmpfs mounted over a directory for the test's life: a disk that
/// really fills up. Mounting needs root, which CI has.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// `None` (the test is skipped) without root, unless CI requires the test.
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                !tools_required(),
                "a small disk needs root to mount, and CI is set"
            );
            eprintln!("SKIPPED: needs root to mount a small tmpfs; CI runs this test");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(mounted.success(), "mount -t tmpfs on {}", dir.display());
        Some(SmallDisk(dir.to_path_buf()))
    }

    /// Fill the space left with one file, and return its path.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = [0u8; 4096];
        while file
            .write_all(&block)
            .and_then(|()| file.sync_data())
            .is_ok()
        {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: an agent killed by its test may still hold files open there.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The state's disk fills up while watching: uploads wait, so nothing goes out
/// that cannot be recorded; the log and `/health` say why; when space is freed,
/// every file goes out once, by itself. The agent used to stop its pipeline on
/// the first refused write and stay up doing nothing, with files never sent.
#[test]
fn a_full_disk_under_the_state_holds_uploads_until_space_is_freed() {
    let env = TestEnv::new();
    let Some(disk) = SmallDisk::mount(&env.state_dir(), "32m") else {
        return;
    };
    env.write("before.pdf", "before the disk filled");
    let agent = watching_with_config_key(&env, json!({}));
    assert!(wait_for_uploads(&env, 1, WAIT), "{}", agent.log());
    let filler = disk.fill();
    for i in 0..200 {
        env.write(
            &format!("during/cv{i}.pdf"),
            format!("written while the state's disk is full {i}"),
        );
    }
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (status, body) = agent.health();
            status == 503 && body["status"] == "state_unwritable"
        }),
        "/health never said state_unwritable:\n{}",
        agent.log()
    );
    // Uploads hold still (one on the wire as the disk filled may finish).
    std::thread::sleep(Duration::from_secs(1));
    let held = env.emulator.stats().uploads;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(env.emulator.stats().uploads, held, "{}", agent.log());
    assert!(held < 201, "everything went out on a full disk");
    std::fs::remove_file(filler).unwrap();
    assert!(
        wait_for_uploads(&env, 201, Duration::from_secs(90)),
        "files never went out after space was freed:\n{}",
        agent.log()
    );
    assert!(wait_until(WAIT, || agent.health().0 == 200));
    let stats = env.emulator.stats();
    assert_eq!((stats.unique_checksums, stats.duplicate_uploads), (201, 0));
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("free space on its disk"), "{log}");
    assert!(log.contains("the state can be written again"), "{log}");
    // Every outcome was recorded: a sync finds nothing left to send.
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!((run.count("synced"), run.count("skipped")), (0, 201));
    drop(disk);
}

/// A damaged state is not waited out like a full disk: nothing but the admin
/// mends it, so a watching agent stops (exit 1) naming the file and what to
/// do; and, as that says, a fresh state uploads nothing twice.
#[test]
fn a_damaged_state_stops_a_watching_agent_saying_what_to_do() {
    let env = TestEnv::new();
    env.write_many(20);
    env.run(&["sync"]).assert_code(0);
    let db = env.state_dir().join("tanova-sync.db");
    for journal in ["tanova-sync.db-wal", "tanova-sync.db-shm"] {
        let _ = std::fs::remove_file(env.state_dir().join(journal));
    }
    let mut file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(4096)).unwrap();
    file.write_all(&[0xde; 8192]).unwrap();
    drop(file);
    env.write("new.pdf", "a CV written after the damage");
    let agent = LiveAgent::start(&env, &["watch"]);
    let (code, log) = agent.exit_within(WAIT);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains(&db.display().to_string()), "{log}");
    assert!(log.contains("the file is damaged"), "{log}");
    assert!(!log.contains("free space"), "{log}");
    std::fs::rename(&db, env.state_dir().join("damaged.db")).unwrap();
    env.run(&["sync"]).assert_code(0);
    let stats = env.emulator.stats();
    assert_eq!((stats.uploads, stats.duplicate_uploads), (21, 0));
}

/// A service slow to answer an upload but quick to answer its health check is
/// slow, not down: the agent says so, keeps uploading, and never pauses.
#[test]
fn a_slow_upload_with_a_healthy_service_is_retried_and_named_slow_not_down() {
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 2_500,
        ..Knobs::default()
    });
    let agent = watching_with_config_key(
        &env,
        json!({ "request_timeout": 1, "retry_count": 5, "retry_delay": 0.5 }),
    );
    env.write("slow.pdf", "a CV the service is slow to take");
    // The first upload times out on the agent's side; the server keeps it,
    // and a retry's duplicate check finds it there.
    let mut paused = false;
    let done = wait_until(Duration::from_secs(30), || {
        paused |= agent.health().0 == 503;
        let status = env.run(&["status", "--json"]);
        status.json()["synced"] == 1 || status.json()["duplicates"] == 1
    });
    let (code, log) = agent.stop();
    assert!(done, "the slow upload never completed:\n{log}");
    assert_eq!(code, 0, "{log}");
    assert!(!paused, "a slow service was taken for an outage:\n{log}");
    assert!(log.contains("slow, not down"), "{log}");
    assert!(!log.contains("cannot reach the Tanova service"), "{log}");
    assert_eq!(env.emulator.stats().unique_checksums, 1);
}

/// Every file of the state directory with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.map_while(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(entry.path()).unwrap_or_default());
        }
    }
    files
}

#[test]
fn a_dry_run_leaves_the_state_directory_byte_identical() {
    let env = TestEnv::with_knobs(Knobs {
        reject_filename_contains: Some("refused".into()),
        ..Knobs::default()
    });
    env.write_many(5);
    env.write("refused.pdf", "refused");
    env.run(&["sync"]).assert_code(1);
    env.write("new.pdf", "a new CV");
    env.write("empty.pdf", "");
    let before = snapshot(&env.state_dir());
    assert!(
        before.keys().any(|k| k.ends_with(".db")),
        "{:?}",
        before.keys()
    );
    let uploads = env.emulator.stats().uploads;
    let run = env.run(&["sync", "--dry-run", "--json"]);
    assert_eq!(run.json()["would_upload"], 1, "{}", run.stdout);
    assert_eq!(
        snapshot(&env.state_dir()),
        before,
        "the dry run changed the state"
    );
    assert_eq!(env.emulator.stats().uploads, uploads);
    // And on a machine that never synced: nothing is created at all.
    let fresh = TestEnv::new();
    fresh.write("a.pdf", "a");
    let run = fresh.run(&["sync", "--dry-run"]);
    run.assert_code(0);
    assert!(!fresh.state_dir().exists() || snapshot(&fresh.state_dir()).is_empty());
}

#[test]
fn failures_of_deleted_files_are_dropped_at_the_next_scan() {
    let env = TestEnv::with_knobs(Knobs {
        reject_filename_contains: Some("refused".into()),
        ..Knobs::default()
    });
    let refused = env.write("refused.pdf", "refused");
    env.write("fine.pdf", "fine");
    env.run(&["sync"]).assert_code(1);
    env.run(&["status"]).assert_code(1);
    std::fs::remove_file(refused).unwrap();
    env.run(&["sync"]).assert_code(0);
    let status = env.run(&["status", "--json"]);
    status.assert_code(0);
    assert_eq!(status.json()["failed"], 0);
}

/// Regression: `kill -9` while the server was still processing complete bodies,
/// then an immediate restart, uploaded those bytes a second time.
#[test]
fn a_restart_after_a_crash_mid_upload_sends_nothing_twice() {
    let env = TestEnv::with_knobs(Knobs {
        hold_uploads: true,
        ..Knobs::default()
    });
    env.write_many(6);
    env.config(json!({ "inflight_grace": 3, "settle_ms": 50 }));
    let mut child = env.spawn(&["sync"]);
    assert!(
        wait_until(WAIT, || env.emulator.stats().held >= 1),
        "no upload reached the server"
    );
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    let _ = child.wait();
    // The server finishes what it holds a moment after the restart began.
    let releaser = {
        let knobs_url = format!("{}/_emulator/knobs", env.emulator.url());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            crate::common::live::client()
                .post(knobs_url)
                .body(r#"{"hold_uploads":false}"#)
                .send()
                .unwrap();
        })
    };
    let run = env.run(&["sync", "--json"]);
    releaser.join().unwrap();
    run.assert_code(0);
    assert!(
        run.stderr.contains("in flight when the agent last stopped"),
        "{}",
        run.stderr
    );
    let stats = env.emulator.stats();
    assert_eq!(stats.unique_checksums, 6, "{stats:?}");
    assert_eq!(stats.duplicate_uploads, 0, "{stats:?}");
}

/// Bounded memory: what a long watch keeps about a failing file goes with the
/// file, so `/health`'s `failing` counts the folder as it is, not its history.
#[test]
fn a_failing_file_that_is_deleted_stops_counting_as_failing() {
    let env = TestEnv::with_knobs(Knobs {
        reject_filename_contains: Some("refused".into()),
        ..Knobs::default()
    });
    let refused = env.write("refused.pdf", "the server refuses this one");
    env.write("fine.pdf", "fine");
    let agent =
        watching_with_config_key(&env, json!({ "watch_mode": "poll", "poll_interval": 0.3 }));
    let failing = |agent: &LiveAgent| agent.health().1["failing"].as_u64();
    assert!(
        wait_until(WAIT, || failing(&agent) == Some(1)),
        "{}",
        agent.log()
    );
    std::fs::remove_file(refused).unwrap();
    assert!(
        wait_until(WAIT, || failing(&agent) == Some(0)),
        "the deleted file still counts as failing:\n{}",
        agent.log()
    );
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
}

/// A file still being written when `sync` looks at it is neither uploaded
/// half-way, nor failed, nor held: it is reported as still being written.
#[test]
fn a_file_still_growing_at_the_end_of_a_sync_is_reported_as_being_written() {
    let env = TestEnv::new();
    env.write("done.pdf", "a finished CV");
    let growing = env.write("growing.pdf", "the start of a CV\n");
    env.config(json!({ "settle_ms": 100 }));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(growing)
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::io::Write::write_all(&mut file, b"another line\n").unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    let run = env.run(&["sync", "--json"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    run.assert_code(0);
    let summary = run.json();
    assert_eq!(
        (summary["synced"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(0))
    );
    let notes = summary["ignored_files"].to_string();
    assert!(
        notes.contains("growing.pdf") && notes.contains("still being written"),
        "{notes}"
    );
    assert_eq!(env.uploaded_names(), ["done.pdf"]);
    let status = env.run(&["status", "--json"]);
    status.assert_code(0);
}

/// Regression: a file found empty by a scan (caught between its creation and
/// its first write) was ignored as "empty file" at that first look, and a
/// one-shot run never sent it. An empty file is judged by two looks too.
#[test]
fn a_file_empty_at_the_scans_look_and_written_before_the_second_is_uploaded() {
    let env = TestEnv::new();
    let being_written = env.write("being-written.pdf", "");
    env.write("empty.pdf", "");
    env.config(json!({ "settle_ms": 2000 }));
    let child = env.spawn(&["sync", "--json"]);
    // The scan follows the health check at once; the write lands well within settle_ms.
    assert!(wait_until(WAIT, || env.emulator.stats().health_calls >= 1));
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&being_written, "a CV written after the scan saw it empty").unwrap();
    let run = Run::wait(child);
    run.assert_code(0);
    let summary = run.json();
    assert_eq!(summary["synced"], 1, "{}", run.stdout);
    let ignored = summary["ignored_files"].to_string();
    assert!(
        ignored.contains("empty.pdf")
            && ignored.contains("empty file")
            && !ignored.contains("being-written.pdf"),
        "{ignored}"
    );
    assert_eq!(env.uploaded_names(), ["being-written.pdf"]);
}
