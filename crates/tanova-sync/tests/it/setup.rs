//! `init` writes a working private config after checking the key; `doctor` says what is wrong.

use std::io::Write;
use std::process::Stdio;

use crate::common::*;

fn init_with(env: &TestEnv, answers: &str, extra: &[&str]) -> Run {
    let mut args = vec!["init"];
    args.extend_from_slice(extra);
    let mut child = env
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answers.as_bytes())
        .unwrap();
    Run::wait(child)
}

#[test]
fn init_checks_the_key_and_writes_a_private_config_that_works() {
    let env = TestEnv::new();
    env.write("Sales/a.pdf", "a");
    let answers = format!(
        "{}\n{}\n{}\n",
        env.folder().display(),
        DEFAULT_API_KEY,
        env.emulator.url()
    );
    let run = init_with(&env, &answers, &[]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("The key is valid for Emulator Agency"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("upload the 1 CVs found"),
        "{}",
        run.stdout
    );
    let path = env.dir.path().join("tanova-config.json");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(written["api_key"], DEFAULT_API_KEY);
    assert_eq!(written["folder_path"], env.folder().display().to_string());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // The written config is enough on its own.
    let sync = env.run_without(
        &["TANOVA_FOLDER_PATH", "TANOVA_API_KEY", "TANOVA_URL"],
        &["sync", "--json"],
    );
    sync.assert_code(0);
    assert_eq!(sync.count("synced"), 1);

    let again = init_with(&env, &answers, &[]);
    again.assert_code(2);
    assert!(
        again.stderr.contains("already exists; use --force"),
        "{}",
        again.stderr
    );
    init_with(&env, &answers, &["--force"]).assert_code(0);
}

#[test]
fn init_with_a_rejected_key_writes_nothing() {
    let env = TestEnv::new();
    let answers = format!(
        "{}\ntanova_sk_wrong_key_123456\n{}\n",
        env.folder().display(),
        env.emulator.url()
    );
    let run = init_with(&env, &answers, &[]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("API key was rejected") && run.stderr.contains("nothing was written"),
        "{}",
        run.stderr
    );
    assert!(!env.dir.path().join("tanova-config.json").exists());
}

#[test]
fn doctor_reports_each_check() {
    let env = TestEnv::new();
    let run = env.run(&["doctor"]);
    run.assert_code(0);
    for line in ["[ok  ] folder:", "[ok  ] state:", "[ok  ] file watching:"] {
        assert!(run.stdout.contains(line), "{line} in\n{}", run.stdout);
    }
    assert!(
        run.stdout
            .contains("key valid for agency Emulator Agency (canUpload: true, canRead: true)"),
        "{}",
        run.stdout
    );

    let bad = env.run_with(
        &[("TANOVA_API_KEY", "tanova_sk_wrong_key_123456")],
        &["doctor"],
    );
    bad.assert_code(1);
    assert!(
        bad.stdout
            .contains("[FAIL] service: the API key was rejected"),
        "{}",
        bad.stdout
    );
}
