//! The script's history (`sync_history.json`) is imported wherever the script kept it: the user's
//! `~/.tanova` whatever the state directory, or a file named; each file again when its content changes.

use crate::common::*;
use serde_json::json;

const A: &str = "already synced by the Python script";
const C: &str = "synced by the script after the first import";

#[test]
fn the_history_in_home_is_imported_whatever_the_state_dir_and_again_when_it_changes() {
    let env = TestEnv::new();
    // TestEnv points TANOVA_STATE_DIR away from $HOME/.tanova, as a service or --state-dir does.
    let home_history = env.dir.path().join("home/.tanova/sync_history.json");
    std::fs::create_dir_all(home_history.parent().unwrap()).unwrap();
    std::fs::write(&home_history, json!([sha256_hex(A.as_bytes())]).to_string()).unwrap();
    env.write("a.pdf", A);
    env.write("b.pdf", "new");

    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!((run.count("synced"), run.count("skipped")), (1, 1));
    assert!(
        run.stderr.contains(&format!(
            "imported 1 synced checksums from {}",
            home_history.canonicalize().unwrap().display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(env.uploaded_names(), ["b.pdf"]);

    // The script ran again meanwhile and recorded one more CV.
    env.write("c.pdf", C);
    let both = json!([sha256_hex(A.as_bytes()), sha256_hex(C.as_bytes())]);
    std::fs::write(&home_history, both.to_string()).unwrap();
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("imported 1 synced checksums") && run.stderr.contains("(2 in the file"),
        "only the new checksum counts: {}",
        run.stderr
    );
    assert_eq!(run.count("synced"), 0);
    assert_eq!(
        env.uploaded_names(),
        ["b.pdf"],
        "c.pdf was synced by the script"
    );

    // Unchanged: not imported again.
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert!(!run.stderr.contains("imported"), "{}", run.stderr);
}

#[test]
fn a_history_file_can_be_named_by_flag_or_config() {
    let env = TestEnv::new();
    let elsewhere = env.dir.path().join("old-machine/sync_history.json");
    std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    std::fs::write(&elsewhere, json!([sha256_hex(A.as_bytes())]).to_string()).unwrap();
    env.write("a.pdf", A);

    let run = env.run(&[
        "sync",
        "--json",
        "--legacy-history",
        elsewhere.to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert_eq!(run.count("skipped"), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("imported 1 synced checksums"),
        "{}",
        run.stderr
    );
    assert!(env.uploaded_names().is_empty());

    // In the config file; one that does not exist is an error naming it.
    let missing = env.dir.path().join("nowhere/sync_history.json");
    env.config(json!({ "legacy_history": missing }));
    let run = env.run(&["sync"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("legacy_history") && run.stderr.contains("nowhere/sync_history.json"),
        "{}",
        run.stderr
    );
}
