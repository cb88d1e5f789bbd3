//! A state written by an older agent (checksums as hex text) is read as it
//! was, upgraded in place on the first run that may write, and never costs a
//! second upload; a state from a newer agent is refused, not misread.

use std::time::Duration;

use crate::common::*;

/// What an agent from before schema 1 left: hex text in `synced` and `audit`.
fn as_an_older_agent_left_it(db: &rusqlite::Connection) {
    db.execute_batch(
        "UPDATE synced SET checksum = lower(hex(checksum)) WHERE typeof(checksum) = 'blob';
         UPDATE audit SET checksum = lower(hex(checksum)) WHERE typeof(checksum) = 'blob';
         PRAGMA user_version = 0;",
    )
    .unwrap();
}

/// `(user_version, the forms of the checksums in synced, audit and path_cache)`.
fn schema(db: &rusqlite::Connection) -> (i64, Vec<String>) {
    let version = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let forms = ["synced", "audit", "path_cache"]
        .iter()
        .map(|table| {
            db.query_row(
                &format!("SELECT group_concat(DISTINCT typeof(checksum)) FROM {table}"),
                [],
                |r| r.get(0),
            )
            .unwrap()
        })
        .collect();
    (version, forms)
}

#[test]
fn an_older_agents_state_is_upgraded_in_place_and_nothing_is_sent_twice() {
    let env = TestEnv::new();
    env.write_many(3);
    env.run(&["sync", "--json"]).assert_code(0);
    let db_path = env.state_dir().join("tanova-sync.db");
    {
        let db = rusqlite::Connection::open(&db_path).unwrap();
        assert_eq!(schema(&db), (1, vec!["blob".to_string(); 3]));
        as_an_older_agent_left_it(&db);
        assert_eq!(schema(&db).1, ["text", "text", "blob"]);
    }
    env.write("new/cv-after-the-upgrade.txt", "a CV that arrived later");

    let dry = env.run(&["sync", "--dry-run", "--json"]);
    dry.assert_code(0);
    assert_eq!(
        (dry.count("would_upload"), dry.count("skipped")),
        (1, 3),
        "the older state reads as it was\n{}",
        dry.stdout
    );
    let db = rusqlite::Connection::open(&db_path).unwrap();
    assert_eq!(schema(&db).0, 0, "a dry run upgrades nothing");

    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(
        (run.count("synced"), run.count("skipped")),
        (1, 3),
        "{}",
        run.stdout
    );
    let stats = env.emulator.stats();
    assert_eq!(stats.uploads, 4, "nothing uploaded twice");
    assert_eq!(schema(&db), (1, vec!["blob".to_string(); 3]));
    let audit = env.run(&["audit", "--json"]);
    audit.assert_code(0);
    assert!(
        audit
            .stdout
            .contains(&tanova_sync::hash::sha256_hex(b"CV number 0\n")),
        "the audit trail shows checksums in hex as before\n{}",
        audit.stdout
    );

    db.execute_batch("PRAGMA user_version = 7").unwrap();
    drop(db);
    let refused = env.run(&["sync"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&db_path.display().to_string())
            && refused.stderr.contains("newer tanova-sync (state schema 7"),
        "{}",
        refused.stderr
    );
    assert_eq!(env.emulator.stats().uploads, 4);
}

/// A dry run reads the state without its journal (it writes nothing, not even
/// the journal's index), so a watching agent folds what it wrote into the
/// main file once it goes quiet: the dry run beside it sees what it synced.
#[test]
fn a_dry_run_beside_a_watching_agent_sees_what_the_agent_synced() {
    let env = TestEnv::new();
    env.write_many(5);
    let agent = crate::common::live::LiveAgent::start(&env, &["watch"]);
    assert!(wait_for_uploads(&env, 5, Duration::from_secs(20)));
    let mut dry = env.run(&["sync", "--dry-run", "--json"]);
    let seen = wait_until(Duration::from_secs(10), || {
        dry = env.run(&["sync", "--dry-run", "--json"]);
        dry.code == 0 && dry.count("skipped") == 5
    });
    assert!(seen, "{}\n{}", dry.stdout, dry.stderr);
    assert!(dry.json().get("would_upload").is_none(), "{}", dry.stdout);
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
    assert_eq!(env.emulator.stats().uploads, 5);
}
