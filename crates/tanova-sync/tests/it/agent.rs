//! The library's `Agent` in process, against the emulator on loopback: the
//! logic the binary tests exercise slowly, driven directly.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tanova_emulator::{Emulator, Knobs, DEFAULT_API_KEY};
use tanova_sync::access::Blocked;
use tanova_sync::agent::{Agent, Mode};
use tanova_sync::config::{parse_url, ApiKey, Config};
use tanova_sync::report::Silent;
use tokio_util::sync::CancellationToken;

fn config(root: &Path, emulator: &Emulator) -> Config {
    let url = parse_url(&emulator.url(), false).unwrap();
    Config {
        retry_delay: Duration::from_millis(20),
        ..Config::for_folder(
            root.join("cvs"),
            ApiKey::new(DEFAULT_API_KEY),
            url,
            root.join("state"),
        )
    }
}

fn write(root: &Path, name: &str, text: &str) {
    let path = root.join("cvs").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

async fn until(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_uploads_each_file_once_and_a_second_finds_them_synced() {
    let emulator = Emulator::start(Knobs::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        write(
            dir.path(),
            &format!("role{}/cv{i}.txt", i % 3),
            &format!("CV {i}"),
        );
    }
    let config = config(dir.path(), &emulator);
    let shutdown = CancellationToken::new();
    for (pass, synced, skipped) in [(1, 20, 0), (2, 0, 20)] {
        let agent = Agent::open(&config, Mode::Once, Arc::new(Silent), &shutdown)
            .await
            .unwrap();
        agent.connect(&shutdown).await.unwrap();
        let (summary, fatal) = agent.sync(&shutdown).await;
        assert!(fatal.is_none(), "pass {pass}: {fatal:?}");
        assert_eq!(
            (summary.synced, summary.skipped),
            (synced, skipped),
            "pass {pass}"
        );
        // Dropped here: the state is unlocked for the next pass.
    }
    let stats = emulator.stats();
    assert_eq!((stats.uploads, stats.duplicate_uploads), (20, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_agent_refuses_a_rejected_key_before_it_starts() {
    let emulator = Emulator::start(Knobs {
        api_key: "tanova_sk_another_key_entirely".into(),
        ..Knobs::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.pdf", "a");
    let shutdown = CancellationToken::new();
    let agent = Agent::open(
        &config(dir.path(), &emulator),
        Mode::Once,
        Arc::new(Silent),
        &shutdown,
    )
    .await
    .unwrap();
    let err = agent.connect(&shutdown).await.unwrap_err();
    assert!(err.to_string().contains("rejected"), "{err}");
    assert_eq!(emulator.stats().uploads, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watching_agent_pauses_on_a_revoked_key_and_resumes_when_it_works_again() {
    let emulator = Emulator::start(Knobs::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "first.pdf", "first");
    let mut config = config(dir.path(), &emulator);
    config.watch.settle = Duration::from_millis(50);
    let shutdown = CancellationToken::new();
    let agent = Arc::new(
        Agent::open(&config, Mode::Watch, Arc::new(Silent), &shutdown)
            .await
            .unwrap(),
    );
    agent.connect(&shutdown).await.unwrap();
    let watching = {
        let (agent, shutdown) = (agent.clone(), shutdown.clone());
        tokio::spawn(async move { agent.watch(&shutdown).await })
    };
    assert!(until(|| emulator.stats().uploads == 1).await);

    emulator.set_knobs(|k| k.api_key = "tanova_sk_rotated_in_process_1".into());
    write(dir.path(), "second.pdf", "second");
    assert!(
        until(|| matches!(agent.blocked(), Some(Blocked::KeyRejected(_)))).await,
        "the agent never paused"
    );
    assert_eq!(emulator.stats().uploads, 1, "nothing goes out while paused");

    // The key works again (the account restored it); SIGHUP's path asks at once.
    emulator.set_knobs(|k| k.api_key = DEFAULT_API_KEY.into());
    agent.reload_key();
    assert!(
        until(|| emulator.stats().uploads == 2).await,
        "never resumed"
    );
    assert!(agent.blocked().is_none());

    shutdown.cancel();
    let watched = watching.await.unwrap();
    assert!(watched.fatal.is_none(), "{:?}", watched.fatal);
    assert_eq!(watched.initial.synced, 1);
    assert_eq!(watched.session.map(|s| s.synced), Some(1));
}
