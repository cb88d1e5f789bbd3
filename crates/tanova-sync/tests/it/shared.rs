//! Several agents, one folder, one Redis ledger: each CV uploaded once, the work shared,
//! and nothing lost when an agent or Redis dies. Real binaries, a real redis-server, the emulator.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::redis_server::{agent, free_port, RedisServer};
use crate::common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn spawn(env: &TestEnv, mut cmd: Command) -> Child {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    env.track(&child);
    child
}

#[test]
fn three_agents_upload_each_file_once_and_share_the_work() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 20,
        ..Knobs::default()
    });
    env.write_many(1000);
    let agents: Vec<Child> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let args = ["sync", "--json", "--max-workers", "8"];
            spawn(&env, agent(&env, &redis, name, &args))
        })
        .collect();
    let runs: Vec<Run> = agents.into_iter().map(Run::wait).collect();
    let mut uploaded = 0;
    let mut working = 0;
    for run in &runs {
        run.assert_code(0);
        let j = run.json();
        assert_eq!(j["found"], 1000);
        assert_eq!(j["failed"], 0);
        let synced = run.count("synced");
        working += u32::from(synced > 0);
        assert_eq!(
            synced + run.count("skipped") + run.count("duplicates") + run.count("deferred"),
            1000,
            "{j}"
        );
        uploaded += synced;
    }
    let stats = env.emulator.stats();
    assert_eq!(stats.unique_checksums, 1000, "{stats:?}");
    assert_eq!(stats.duplicate_uploads, 0, "{stats:?}");
    assert_eq!(uploaded, 1000, "each file uploaded by exactly one agent");
    // On a loaded machine one agent may start late and find the work done.
    assert!(working >= 2, "the agents shared the work");
    assert_eq!(redis.synced_count(), 1000);

    // Every agent now knows every file: those it did not see synced learn it from Redis once.
    for name in ["a", "b", "c"] {
        let run = finish(&mut agent(&env, &redis, name, &["sync", "--json"]));
        run.assert_code(0);
        assert_eq!(
            (run.count("skipped"), run.count("synced")),
            (1000, 0),
            "{name}"
        );
    }
    // And then asks Redis nothing at all: the local mirror answers.
    let claims = redis.calls("evalsha") + redis.calls("eval");
    let again = finish(&mut agent(&env, &redis, "b", &["sync", "--json"]));
    assert_eq!((again.count("skipped"), again.count("hashed")), (1000, 0));
    assert_eq!(redis.calls("evalsha") + redis.calls("eval"), claims);
    assert_eq!(env.emulator.stats().uploads, 1000);
}

#[test]
fn an_agent_killed_mid_run_leaves_nothing_unsynced_after_the_others_rescan() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 50,
        ..Knobs::default()
    });
    env.write_many(1000);
    env.config(json!({
        "settle_ms": 100,
        "rescan_interval": 1,
        "lease_ms": 1000,
        "retry_delay": 0.05,
        // The dead agent's requests in flight are waited for this long before its files are taken over.
        "inflight_grace": 2,
    }));
    let watch = ["watch", "--max-workers", "4"];
    let mut doomed = spawn(&env, agent(&env, &redis, "a", &watch));
    let others: Vec<Child> = ["b", "c"]
        .iter()
        .map(|name| spawn(&env, agent(&env, &redis, name, &watch)))
        .collect();
    assert!(wait_until(WAIT, || env.emulator.stats().unique_checksums >= 200));
    doomed.kill().expect("SIGKILL");
    doomed.wait().unwrap();
    let at_kill = env.emulator.stats().unique_checksums;
    assert!(at_kill < 1000, "killed mid-run: {at_kill}");

    assert!(
        wait_until(WAIT, || env.emulator.stats().unique_checksums == 1000),
        "{:?}",
        env.emulator.stats()
    );
    assert!(
        wait_until(WAIT, || redis.synced_count() == 1000),
        "all recorded in the ledger: {}",
        redis.synced_count()
    );
    for child in others {
        stop(child, Duration::from_secs(10)).assert_code(0);
    }
    let stats = env.emulator.stats();
    assert_eq!(stats.duplicate_uploads, 0, "{stats:?}");
}

#[test]
fn redis_restarted_mid_run_loses_nothing_and_nothing_is_uploaded_twice() {
    let Some(mut redis) = RedisServer::start_persistent() else {
        return;
    };
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 30,
        ..Knobs::default()
    });
    env.write_many(600);
    env.config(json!({
        "settle_ms": 100,
        "rescan_interval": 1,
        "lease_ms": 3000,
        "retry_delay": 0.05,
        // A claim that lapsed while Redis was down may have had its upload in
        // flight: whoever takes it over waits this long before asking the
        // server (120 s by default, past this test's patience; CI once saw 599 of 600).
        "inflight_grace": 2,
    }));
    let watch = ["watch", "--max-workers", "4"];
    let agents: Vec<Child> = ["a", "b"]
        .iter()
        .map(|name| spawn(&env, agent(&env, &redis, name, &watch)))
        .collect();
    assert!(wait_until(WAIT, || env.emulator.stats().unique_checksums >= 100));
    redis.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let during = env.emulator.stats().unique_checksums;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        env.emulator.stats().unique_checksums,
        during,
        "nothing is uploaded while Redis is down"
    );
    assert!(during < 600);
    redis.restart();

    assert!(
        wait_until(WAIT, || env.emulator.stats().unique_checksums == 600),
        "{:?}",
        env.emulator.stats()
    );
    assert!(
        wait_until(WAIT, || redis.synced_count() == 600),
        "all recorded in the ledger: {}",
        redis.synced_count()
    );
    let url = redis.url();
    for child in agents {
        let run = stop(child, Duration::from_secs(10));
        run.assert_code(0);
        let down = run
            .stderr
            .matches(&format!("Redis at {url} is unreachable"))
            .count();
        assert!(
            (1..=3).contains(&down),
            "said once per outage:\n{}",
            run.stderr
        );
        assert!(run.stderr.contains(&format!("Redis at {url} is back")));
    }
    let stats = env.emulator.stats();
    assert_eq!(stats.duplicate_uploads, 0, "{stats:?}");
}

#[test]
fn state_push_moves_an_installation_to_shared_mode() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let env = TestEnv::new();
    env.write_many(30);
    env.run(&["sync", "--json"]).assert_code(0);

    let push = env.run_with(
        &[("TANOVA_STATE_URL", &redis.url())],
        &["state", "push", "--json"],
    );
    push.assert_code(0);
    assert_eq!((push.count("pushed"), push.count("new")), (30, 30));
    assert_eq!(redis.synced_count(), 30);

    // A new machine on the same folder learns everything from Redis and sends nothing.
    let calls = env.emulator.stats().check_duplicate_calls;
    let newcomer = finish(&mut agent(&env, &redis, "new", &["sync", "--json"]));
    newcomer.assert_code(0);
    assert_eq!(
        (newcomer.count("skipped"), newcomer.count("synced")),
        (30, 0)
    );
    let stats = env.emulator.stats();
    assert_eq!((stats.uploads, stats.check_duplicate_calls), (30, calls));

    let plain = env.run_with(&[("TANOVA_STATE_URL", &redis.url())], &["state", "push"]);
    plain.assert_code(0);
    assert!(
        plain.stdout.contains("Pushed 30 synced checksums") && plain.stdout.contains("0 were new"),
        "{}",
        plain.stdout
    );

    let nowhere = env.run(&["state", "push"]);
    nowhere.assert_code(2);
    assert!(nowhere.stderr.contains("state_url"), "{}", nowhere.stderr);
}

#[test]
fn an_unreachable_redis_is_named_without_its_password() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    env.config(json!({ "retry_count": 1, "retry_delay": 0.01 }));
    let port = free_port();
    let run = env.run_with(
        &[(
            "TANOVA_STATE_URL",
            &format!("redis://:hunter2@127.0.0.1:{port}/0"),
        )],
        &["sync", "--json"],
    );
    run.assert_code(1);
    let shown = format!("redis://:***@127.0.0.1:{port}/0");
    assert!(run.stderr.contains(&shown), "{}", run.stderr);
    assert!(run.json()["error"].as_str().unwrap().contains(&shown));
    assert!(!run.stderr.contains("hunter2") && !run.stdout.contains("hunter2"));
    assert_eq!(env.emulator.stats().uploads, 0);
}

#[test]
fn shared_state_settings_are_validated_naming_the_field() {
    let env = TestEnv::new();
    let table = [
        (json!({ "state_url": "http://:pw@cache:6379" }), "state_url"),
        (
            json!({ "state_url": "rediss://user:pw@cache:6379/x" }),
            "rediss://user:***@cache:6379: the path must be a database number",
        ),
        (
            json!({ "state_url": "redis://cache:6379/x" }),
            "database number",
        ),
        (json!({ "lease_ms": 10 }), "lease_ms"),
        (json!({ "state_url": 6379 }), "state_url"),
    ];
    for (config, want) in table {
        env.config(config.clone());
        let run = env.run(&["sync"]);
        run.assert_code(2);
        assert!(run.stderr.contains(want), "{config}: {}", run.stderr);
        assert!(!run.stderr.contains(":pw@"), "{}", run.stderr);
    }
    // The flag wins over the environment, and names itself.
    env.config(json!({}));
    let run = env.run_with(
        &[("TANOVA_STATE_URL", "redis://127.0.0.1:1/0")],
        &["sync", "--state-url", "memcached://x"],
    );
    run.assert_code(2);
    assert!(run.stderr.contains("flag --state-url"), "{}", run.stderr);
}

/// Fencing (issue 10): an agent frozen (SIGSTOP: a paused VM, a partition) for
/// longer than its lease while its uploads are mid-body. Another agent takes the
/// lapsed claims and uploads the files; the frozen one, woken, must not send
/// its last bytes. No checksum may reach the server twice.
#[test]
fn a_frozen_agent_whose_lease_lapsed_never_completes_its_uploads() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let env = TestEnv::with_knobs(Knobs {
        read_bytes_per_sec: 150_000,
        ..Knobs::default()
    });
    for i in 0..3 {
        env.write(&format!("big{i}.pdf"), vec![b'0' + i as u8; 450_000]);
    }
    env.config(
        json!({ "lease_ms": 1000, "settle_ms": 50, "retry_delay": 0.05, "inflight_grace": 6 }),
    );
    let frozen = spawn(&env, agent(&env, &redis, "a", &["sync", "--json"]));
    assert!(
        wait_until(WAIT, || env.emulator.stats().in_flight >= 1),
        "agent a never started uploading"
    );
    signal(&frozen, libc::SIGSTOP);
    // Its claims lapse (lease 1 s); another agent takes them over.
    std::thread::sleep(Duration::from_millis(2500));
    let taker = spawn(&env, agent(&env, &redis, "b", &["sync", "--json"]));
    std::thread::sleep(Duration::from_millis(1000));
    signal(&frozen, libc::SIGCONT);
    let frozen = Run::wait(frozen);
    let taker = Run::wait(taker);
    taker.assert_code(0);
    let stats = env.emulator.stats();
    assert_eq!(
        stats.duplicate_uploads, 0,
        "a checksum reached the server twice: {stats:?}\na:\n{}\nb:\n{}",
        frozen.stderr, taker.stderr
    );
    assert_eq!(stats.unique_checksums, 3, "{stats:?}");
    // Woken, it finds each file either sent by itself (the server had its whole
    // body) or synced by the other agent: nothing is left deferred.
    frozen.assert_code(0);
}

/// A one-shot `sync` that loses Redis mid-run stops after `ledger_timeout`,
/// exit 1, naming Redis (it used to wait for it forever).
#[test]
fn sync_gives_up_on_a_lost_ledger_after_ledger_timeout_naming_it() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 200,
        ..Knobs::default()
    });
    env.write_many(60);
    env.config(json!({ "ledger_timeout": 2, "retry_delay": 0.05, "settle_ms": 50 }));
    let child = spawn(
        &env,
        agent(&env, &redis, "a", &["sync", "--max-workers", "4"]),
    );
    assert!(wait_until(WAIT, || env.emulator.stats().uploads >= 4));
    redis.kill();
    let started = std::time::Instant::now();
    let run = Run::wait(child);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    run.assert_code(1);
    assert!(
        run.stderr.contains("cannot reach the shared ledger")
            && run.stderr.contains("Redis at redis://127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert_eq!(env.emulator.stats().duplicate_uploads, 0);
}

/// Redis answering with an error (here READONLY, a replica) is an ERROR naming
/// its class, not a debug line; files wait and go out once Redis accepts writes.
#[test]
fn redis_error_replies_are_logged_with_their_class_and_files_wait() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let env = TestEnv::new();
    env.write("first.pdf", "first");
    env.config(json!({ "settle_ms": 50, "retry_delay": 0.05 }));
    let child = spawn(&env, agent(&env, &redis, "a", &["watch"]));
    assert!(wait_for_uploads(&env, 1, WAIT));
    let mut conn = redis.connection().unwrap();
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(1)
        .query::<()>(&mut conn)
        .unwrap();
    env.write("second.pdf", "second");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        env.emulator.stats().unique_checksums,
        1,
        "uploaded without a claim"
    );
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query::<()>(&mut conn)
        .unwrap();
    assert!(wait_for_uploads(&env, 2, WAIT), "the file never went out");
    let run = stop(child, Duration::from_secs(10));
    assert!(
        run.stderr.contains("ERROR") && run.stderr.contains("refused a command (READONLY)"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("use the primary"), "{}", run.stderr);
}
