//! The API key never shows beyond its first 15 characters, travels only where it should, and can live outside the config.

mod common;

use common::*;
use serde_json::json;

fn secret_env() -> TestEnv {
    TestEnv::with_knobs(Knobs {
        api_key: SECRET_KEY.into(),
        ..Knobs::default()
    })
}

#[test]
fn the_key_appears_nowhere_in_any_output_or_the_state() {
    let env = secret_env();
    env.write_many(5);
    env.write("broken.pdf", "x");
    env.emulator
        .set_knobs(|k| k.reject_filename_contains = Some("broken".into()));
    let with_key = |args: &[&str]| {
        let out = env
            .command(args)
            .env("TANOVA_API_KEY", SECRET_KEY)
            .env("TANOVA_LOG", "trace")
            .output()
            .unwrap();
        Run::from(out) // asserts no key in stdout/stderr
    };
    let first = with_key(&["sync", "-vv"]);
    assert!(
        first.stderr.contains("tanova_sk_live_…"),
        "the redacted form is shown: {}",
        first.stderr
    );
    with_key(&["sync", "--json", "-vv"]);
    with_key(&["status"]);
    // Rejected, unreachable and misconfigured runs print errors: still no key.
    env.emulator
        .set_knobs(|k| k.api_key = "tanova_sk_other".into());
    with_key(&["sync", "-vv"]).assert_code(2);
    let out = env
        .command(&["sync"])
        .env("TANOVA_API_KEY", SECRET_KEY)
        .env("TANOVA_URL", "http://0.0.0.0:8080")
        .output()
        .unwrap();
    Run::from(out).assert_code(2);
    env.config(json!({ "api_key": SECRET_KEY, "max_workers": "x" }));
    Run::from(
        env.command(&["sync"])
            .env_remove("TANOVA_API_KEY")
            .output()
            .unwrap(),
    )
    .assert_code(2);

    for entry in walk_files(&env.state_dir()) {
        let bytes = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&SECRET_KEY[10..]),
            "the key is stored in {}",
            entry.display()
        );
    }
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect()
}

#[test]
fn the_key_can_come_from_a_file_or_the_environment() {
    let env = secret_env();
    env.write("a.pdf", "a");
    let key_file = env.dir.path().join("key.txt");
    std::fs::write(&key_file, format!("{SECRET_KEY}\n")).unwrap();
    env.config(json!({ "api_key_file": key_file }));
    let run = Run::from(
        env.command(&["sync", "--json"])
            .env_remove("TANOVA_API_KEY")
            .output()
            .unwrap(),
    );
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1);

    env.write("b.pdf", "b");
    let out = env
        .command(&["sync", "--json"])
        .env_remove("TANOVA_API_KEY")
        .env("TANOVA_API_KEY_FILE", &key_file)
        .output()
        .unwrap();
    assert_eq!(Run::from(out).count("synced"), 1);

    let missing = env.dir.path().join("no-such-key.txt");
    env.config(json!({ "api_key_file": missing }));
    let run = Run::from(
        env.command(&["sync"])
            .env_remove("TANOVA_API_KEY")
            .output()
            .unwrap(),
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("api_key_file") && run.stderr.contains("no-such-key.txt"),
        "{}",
        run.stderr
    );

    env.config(json!({ "api_key": SECRET_KEY, "api_key_file": key_file }));
    let run = Run::from(
        env.command(&["sync"])
            .env_remove("TANOVA_API_KEY")
            .output()
            .unwrap(),
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("set either api_key or api_key_file"),
        "{}",
        run.stderr
    );
}

#[cfg(unix)]
#[test]
fn a_config_file_with_the_key_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let env = secret_env();
    env.write("a.pdf", "a");
    let path = env.config(json!({ "api_key": SECRET_KEY }));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = Run::from(
        env.command(&["sync"])
            .env_remove("TANOVA_API_KEY")
            .output()
            .unwrap(),
    );
    run.assert_code(0);
    assert!(
        run.stderr.contains("is readable by other users (mode 644)"),
        "{}",
        run.stderr
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = Run::from(
        env.command(&["sync"])
            .env_remove("TANOVA_API_KEY")
            .output()
            .unwrap(),
    );
    assert!(
        !run.stderr.contains("readable by other users"),
        "{}",
        run.stderr
    );
}

#[cfg(unix)]
#[test]
fn state_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    env.run(&["sync"]).assert_code(0);
    let mode = |p: std::path::PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(env.state_dir()), 0o700);
    for file in walk_files(&env.state_dir()) {
        assert_eq!(mode(file.clone()), 0o600, "{}", file.display());
    }
}

#[test]
fn plain_http_to_another_host_is_refused_unless_allowed() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    let run = Run::from(
        env.command(&["sync"])
            .env("TANOVA_URL", "http://0.0.0.0:1")
            .output()
            .unwrap(),
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("plain http to a non-loopback host"),
        "{}",
        run.stderr
    );
    // Allowed explicitly: the URL is accepted (nothing listens there: a quick connection error).
    env.config(json!({ "allow_insecure_http": true, "retry_count": 0, "request_timeout": 1 }));
    let out = env
        .command(&["sync"])
        .env("TANOVA_URL", "http://localhost:1")
        .output()
        .unwrap();
    let run = Run::from(out);
    assert!(!run.stderr.contains("plain http"), "{}", run.stderr);
}
