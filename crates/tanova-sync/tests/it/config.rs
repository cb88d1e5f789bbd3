//! Bad configuration gives one line naming the field, exit 2, and no panic.

use crate::common::*;
use serde_json::{json, Value};

/// Run `sync` with this config file (and the env's folder, key and URL removed where the config provides them).
fn run_with_config(env: &TestEnv, config: &Value, unset: &[&str]) -> Run {
    env.config(config.clone());
    env.run_without(unset, &["sync"])
}

#[test]
fn malformed_configs_name_the_field() {
    let env = TestEnv::new();
    let folder = env.folder().to_string_lossy().into_owned();
    let a_file = env
        .write("not-a-dir.pdf", "x")
        .to_string_lossy()
        .into_owned();
    let all = ["TANOVA_FOLDER_PATH", "TANOVA_API_KEY", "TANOVA_URL"];
    let url = env.emulator.url();
    let table: Vec<(Value, &[&str], &str)> = vec![
        (
            json!({ "max_workers": "five" }),
            &[],
            "max_workers: expected a whole number",
        ),
        (
            json!({ "max_workers": 0 }),
            &[],
            "max_workers: expected 1 to 1024",
        ),
        (
            json!({ "retry_count": -1 }),
            &[],
            "retry_count: expected a whole number",
        ),
        (
            json!({ "retry_delay": "soon" }),
            &[],
            "retry_delay: expected a number",
        ),
        (json!({ "api_key": 42 }), &[], "api_key: expected a string"),
        (
            json!({ "allow_insecure_http": "yes" }),
            &[],
            "allow_insecure_http: expected true or false",
        ),
        (
            json!({ "privacy_redact_logs": "yes" }),
            &[],
            "privacy_redact_logs: expected true or false",
        ),
        (
            json!({ "privacy_retain_days": 0 }),
            &[],
            "privacy_retain_days: 0 days: expected 1 to 36500",
        ),
        (
            json!({ "api_key": "k", "tanova_url": url }),
            &all,
            "folder_path: missing",
        ),
        (
            json!({ "folder_path": folder, "tanova_url": url }),
            &all,
            "api_key: missing",
        ),
        (
            json!({ "folder_path": folder, "api_key": "  ", "tanova_url": url }),
            &all,
            "api_key: is empty",
        ),
        (
            json!({ "folder_path": "/no/such/folder", "api_key": "k" }),
            &all,
            "folder_path: /no/such/folder",
        ),
        (
            json!({ "folder_path": a_file, "api_key": "k" }),
            &all,
            "is not a directory",
        ),
        (
            json!({ "folder_path": folder, "api_key": "k", "tanova_url": "not a url" }),
            &all,
            "tanova_url: not a valid URL",
        ),
        (
            json!({ "folder_path": folder, "api_key": "k", "tanova_url": "http://0.0.0.0:8080" }),
            &all,
            "tanova_url: uses plain http to a non-loopback host",
        ),
        (
            json!({ "folder_path": folder, "api_key": "k", "tanova_url": "ftp://127.0.0.1" }),
            &all,
            "tanova_url: unsupported scheme \"ftp\"",
        ),
        (
            json!(["not", "an", "object"]),
            &[],
            "file: expected a JSON object",
        ),
    ];
    for (config, unset, want) in table {
        let run = run_with_config(&env, &config, unset);
        assert_eq!(run.code, 2, "{config}: {}", run.stderr);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{config}: one line, got:\n{}", run.stderr);
        assert!(
            lines[0].starts_with("error: config error: "),
            "{config}: {}",
            lines[0]
        );
        assert!(
            lines[0].contains(want),
            "{config}: want {want:?} in {:?}",
            lines[0]
        );
        assert!(!run.stderr.contains("panicked"), "{config}");
    }
    assert_eq!(env.emulator.stats().uploads, 0);
}

#[test]
fn invalid_json_names_the_file() {
    let env = TestEnv::new();
    std::fs::write(env.dir.path().join("tanova-config.json"), "{ \"api_key\": ").unwrap();
    let run = env.run(&["sync"]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("tanova-config.json: file: not valid JSON"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_config_flag_file_is_an_error() {
    let env = TestEnv::new();
    let run = env.run(&["sync", "--config", "nope.json"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("nope.json: file: cannot read"),
        "{}",
        run.stderr
    );
}

#[test]
fn unknown_keys_and_odd_keys_warn_but_run() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    let config = json!({ "folder_pth": "typo", "api_key": "not_the_usual_prefix" });
    env.config(config);
    // TANOVA_API_KEY, the emulator's key, overrides the file's.
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("unknown key `folder_pth` is ignored"),
        "{}",
        run.stderr
    );

    // A key without the usual prefix warns (and is then rejected by the emulator).
    let run = env.run_without(&["TANOVA_API_KEY"], &["sync"]);
    assert!(
        run.stderr.contains("does not start with `tanova_sk_`"),
        "{}",
        run.stderr
    );
    run.assert_code(2);
}

#[test]
fn the_python_scripts_config_file_works_as_is() {
    let env = TestEnv::new();
    env.write("Sales/a.pdf", "a");
    let path = env.dir.path().join("custom.json");
    let config = json!({
        "folder_path": env.folder(),
        "api_key": DEFAULT_API_KEY,
        "tanova_url": env.emulator.url(),
        "retry_count": 3,
        "retry_delay": 5,
        "max_workers": 5
    });
    std::fs::write(&path, config.to_string()).unwrap();
    let run = env.run_without(
        &["TANOVA_FOLDER_PATH", "TANOVA_API_KEY", "TANOVA_URL"],
        &["sync", "--json", "--config", path.to_str().unwrap()],
    );
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1);
}

#[test]
fn environment_overrides_the_file() {
    let env = TestEnv::new();
    env.write("a.pdf", "a");
    // The file points at a folder that does not exist; TANOVA_FOLDER_PATH wins.
    env.config(json!({ "folder_path": "/no/such/folder", "api_key": "tanova_sk_wrong" }));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1);
}

#[test]
fn privacy_variables_are_read_and_checked() {
    let env = TestEnv::new();
    env.write("Nurse/jane_jane@example.com.pdf", "Jane");
    let bad = env.run_with(&[("TANOVA_PRIVACY_REDACT_LOGS", "maybe")], &["sync"]);
    bad.assert_code(2);
    assert!(
        bad.stderr
            .contains("environment variable TANOVA_PRIVACY_REDACT_LOGS: privacy_redact_logs"),
        "{}",
        bad.stderr
    );
    let bad = env.run_with(&[("TANOVA_PRIVACY_RETAIN_DAYS", "-3")], &["sync"]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("privacy_retain_days"), "{}", bad.stderr);
    let run = env.run_with(
        &[
            ("TANOVA_PRIVACY_REDACT_LOGS", "true"),
            ("TANOVA_PRIVACY_RETAIN_DAYS", "30"),
        ],
        &["sync", "-v"],
    );
    run.assert_code(0);
    assert!(run.stderr.contains("Nurse/[#"), "{}", run.stderr);
    assert!(!run.stderr.contains("jane"), "{}", run.stderr);
}
