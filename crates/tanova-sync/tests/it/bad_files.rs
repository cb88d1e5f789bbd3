//! Bad files: none crashes the agent, each is reported with its reason, and the rest sync.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[cfg(unix)]
#[test]
fn symlinks_are_not_followed_unless_configured_and_loops_do_not_hang() {
    let env = TestEnv::new();
    env.write("inside.pdf", "inside");
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.pdf"), "outside the folder").unwrap();
    std::os::unix::fs::symlink(&outside, env.folder().join("link-out")).unwrap();
    std::os::unix::fs::symlink(env.folder(), env.folder().join("loop")).unwrap();
    std::os::unix::fs::symlink(
        outside.join("secret.pdf"),
        env.folder().join("file-link.pdf"),
    )
    .unwrap();

    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!((run.count("found"), run.count("synced")), (1, 1));

    env.config(json!({ "follow_symlinks": true }));
    let run = env.run(&["sync", "--json"]);
    // The loop is reported, not walked forever; the linked CVs arrive once.
    let failures = run.json()["failures"].to_string();
    assert!(failures.contains("loop"), "{failures}");
    let names = env.uploaded_names();
    // The outside file is reached through two links with the same bytes: it is
    // uploaded once, under whichever name the pipeline took first.
    assert_eq!(names.len(), 2, "{names:?}");
    let (inside, linked): (Vec<&String>, Vec<&String>) =
        names.iter().partition(|n| n.as_str() == "inside.pdf");
    assert_eq!(inside.len(), 1, "{names:?}");
    assert!(
        ["secret.pdf", "file-link.pdf"].contains(&linked[0].as_str()),
        "{names:?}"
    );
    assert_eq!(env.emulator.stats().duplicate_uploads, 0);
}

#[cfg(unix)]
#[test]
fn a_name_that_is_not_utf8_is_uploaded() {
    use std::os::unix::ffi::OsStrExt;
    let env = TestEnv::new();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9 cv.pdf");
    std::fs::write(env.folder().join(name), "latin-1 name").unwrap();
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1);
    assert_eq!(env.emulator.uploads()[0].filename, "caf\u{fffd} cv.pdf");
}

#[test]
fn a_tree_100_levels_deep_syncs() {
    let env = TestEnv::new();
    let deep: String = (0..100).map(|i| format!("l{i}/")).collect();
    env.write(&format!("{deep}deep.pdf"), "at the bottom");
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1);
    assert_eq!(env.emulator.uploads()[0].job_hint.as_deref(), Some("l99"));
}

#[test]
fn ten_thousand_files_in_one_folder_sync() {
    let env = TestEnv::new();
    for i in 0..10_000 {
        env.write(&format!("inbox/cv{i}.txt"), format!("cv {i}"));
    }
    let run = env.run(&["sync", "--json", "-q"]);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 10_000);
    assert_eq!(env.emulator.stats().unique_checksums, 10_000);
}

#[test]
fn a_file_that_vanishes_before_upload_is_reported_and_the_rest_sync() {
    let env = TestEnv::with_knobs(Knobs {
        error_rate: 1.0,
        ..Knobs::default()
    });
    let doomed = env.write("doomed.pdf", "doomed");
    env.config(json!({ "retry_count": 5, "retry_delay": 1.0 }));
    let child = env.spawn(&["sync", "--json"]);
    assert!(wait_until(Duration::from_secs(10), || env
        .emulator
        .stats()
        .rejected_5xx
        >= 1));
    std::fs::remove_file(&doomed).unwrap();
    env.write("later.pdf", "later");
    env.emulator.set_knobs(|k| k.error_rate = 0.0);
    let run = Run::wait(child);
    run.assert_code(0);
    let j = run.json();
    assert_eq!(
        j["ignored_files"][0]["reason"],
        "disappeared before it could be uploaded"
    );
    assert_eq!(
        env.emulator.stats().uploads,
        0,
        "later.pdf was not there at the scan"
    );
}

#[test]
fn a_file_that_grows_before_its_upload_is_sent_as_its_new_content() {
    let env = TestEnv::with_knobs(Knobs {
        error_rate: 1.0,
        ..Knobs::default()
    });
    let path = env.write("growing.pdf", "first part");
    env.config(json!({ "retry_count": 5, "retry_delay": 1.0 }));
    let child = env.spawn(&["sync", "--json"]);
    assert!(wait_until(Duration::from_secs(10), || env
        .emulator
        .stats()
        .rejected_5xx
        >= 1));
    std::fs::write(&path, "first part, and a second part").unwrap();
    env.emulator.set_knobs(|k| k.error_rate = 0.0);
    let run = Run::wait(child);
    run.assert_code(0);
    let uploads = env.emulator.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        uploads[0].checksum,
        sha256_hex(b"first part, and a second part")
    );
    assert_eq!(env.emulator.stats().rejected_checksum, 0);
}

/// Root reads everything, so permission tests drop to `nobody` with setpriv.
#[cfg(unix)]
#[test]
fn unreadable_files_and_folders_are_reported_and_the_rest_sync() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let as_root = unsafe { libc::geteuid() } == 0;
    if as_root && !std::path::Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: running as root and setpriv is not installed to drop privileges");
        return;
    }
    env.write("ok.pdf", "readable");
    let secret = env.write("locked.pdf", "unreadable");
    std::fs::create_dir_all(env.folder().join("Private")).unwrap();
    env.write("Private/hidden-away.pdf", "in a locked folder");
    let open = |p: &std::path::Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(env.dir.path(), 0o755);
    open(&env.folder(), 0o755);
    open(&env.folder().join("ok.pdf"), 0o644);
    open(&secret, 0o000);
    open(&env.folder().join("Private"), 0o000);
    let state = env.dir.path().join("nobody-state");
    std::fs::create_dir_all(&state).unwrap();
    open(&state, 0o777);

    let mut cmd = if as_root {
        let mut c = std::process::Command::new("/usr/bin/setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        std::process::Command::new(BIN)
    };
    cmd.args(["sync", "--json"])
        .current_dir(env.dir.path())
        .env_clear()
        .env("HOME", &state)
        .env("TANOVA_FOLDER_PATH", env.folder())
        .env("TANOVA_API_KEY", DEFAULT_API_KEY)
        .env("TANOVA_URL", env.emulator.url())
        .env("TANOVA_STATE_DIR", state.join("s"));
    let run = finish(&mut cmd);
    run.assert_code(1);
    let j = run.json();
    assert_eq!(j["synced"], 1);
    let failures = j["failures"].to_string();
    assert!(
        failures.contains("locked.pdf") && failures.contains("Permission denied"),
        "{failures}"
    );
    assert!(failures.contains("Private"), "{failures}");
    open(&secret, 0o644);
    open(&env.folder().join("Private"), 0o755);
}
