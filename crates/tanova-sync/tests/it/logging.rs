//! Log output: JSON lines for log shippers, a daily-rotated log file, the config keys that choose them, and no API key in any of it.

use crate::common::*;
use serde_json::{json, Value};

/// Parse every line as a JSON log event with a level and a message.
fn events(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
            assert!(
                ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                    .contains(&event["level"].as_str().unwrap_or("")),
                "no level: {line}"
            );
            assert!(event["message"].is_string(), "no message: {line}");
            assert!(event["timestamp"].is_string(), "no timestamp: {line}");
            event
        })
        .collect()
}

fn only_log_file(dir: &std::path::Path, prefix: &str) -> String {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    // Rotated daily: the date goes between the name and the extension.
    let date = name
        .strip_prefix(&format!("{prefix}."))
        .and_then(|rest| rest.strip_suffix(".log"))
        .unwrap_or_else(|| panic!("{name}"));
    assert!(date.len() == 10 && date.as_bytes()[4] == b'-', "{name}");
    std::fs::read_to_string(&files[0]).unwrap()
}

#[test]
fn json_logs_on_stderr_parse_and_never_show_the_key() {
    let env = TestEnv::new();
    env.write_many(3);
    // A warning too: an unknown key in the config file.
    env.config(json!({ "no_such_key": 1 }));
    let run = env.run(&["sync", "-vv", "--log-format", "json"]);
    run.assert_code(0);
    let lines: String = run
        .stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| format!("{l}\n"))
        .collect();
    let events = events(&lines);
    let messages: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.iter().any(|m| m.starts_with("syncing ")),
        "{messages:?}"
    );
    assert!(
        events.iter().any(|e| e["level"] == "WARN" && e["message"].as_str().unwrap().contains("no_such_key")),
        "{messages:?}"
    );
    assert!(!run.stderr.contains(DEFAULT_API_KEY), "{}", run.stderr);
    assert!(!run.stdout.contains(DEFAULT_API_KEY));
}

#[test]
fn a_log_file_gets_every_line_and_is_rotated_daily() {
    let env = TestEnv::with_knobs(Knobs {
        reject_filename_contains: Some("bad".into()),
        ..Knobs::default()
    });
    env.write_many(3);
    env.write("bad.pdf", "refused");
    let logs = env.dir.path().join("logs");
    let file = logs.join("tanova.log");
    let run = env.run(&[
        "sync",
        "-vv",
        "--log-format",
        "json",
        "--log-file",
        file.to_str().unwrap(),
    ]);
    run.assert_code(1);
    let text = only_log_file(&logs, "tanova");
    let events = events(&text);
    assert!(events
        .iter()
        .any(|e| e["message"].as_str().unwrap().starts_with("syncing ")));
    assert!(!text.contains(DEFAULT_API_KEY), "{text}");
    assert!(!run.stderr.contains(DEFAULT_API_KEY));
    assert!(
        !run.stderr.lines().any(|l| l.starts_with('{')),
        "log lines go to the file only:\n{}",
        run.stderr
    );
    // The summary still reaches the terminal.
    assert!(run.stdout.contains("bad.pdf"), "{}", run.stdout);
}

#[test]
fn config_keys_choose_the_format_and_the_file() {
    let env = TestEnv::new();
    env.write_many(2);
    env.config(json!({ "log_format": "json", "log_file": "agent-logs/agent.log" }));
    env.run(&["sync"]).assert_code(0);
    let text = only_log_file(&env.dir.path().join("agent-logs"), "agent");
    assert!(!events(&text).is_empty());

    // Flags win over the file: plain text on stderr again.
    let run = env.run(&["sync", "--log-format", "text", "--log-file", "plain.log"]);
    run.assert_code(0);
    let text = only_log_file(&env.dir.path().join("agent-logs"), "agent");
    assert_eq!(text.lines().count(), events(&text).len());
    let plain = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("plain."))
        .expect("the flag's log file");
    let plain = std::fs::read_to_string(env.dir.path().join(plain)).unwrap();
    assert!(plain.contains("INFO") && !plain.starts_with('{'), "{plain}");
}

#[test]
fn a_wrong_log_format_is_a_config_error() {
    let env = TestEnv::new();
    env.config(json!({ "log_format": "xml" }));
    let run = env.run(&["sync"]);
    run.assert_code(2);
    assert!(run.stderr.contains("log_format"), "{}", run.stderr);
    let run = env.run(&["sync", "--log-format", "xml"]);
    run.assert_code(2);
}
