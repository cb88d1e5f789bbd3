//! `log_target`: syslog (RFC 5424) to a real rsyslogd over UDP, TCP and a local socket, one message per uploaded file with its path and checksum; an unreachable target is a config error naming it.

use crate::common::rsyslog::Rsyslogd;
use crate::common::*;
use serde_json::json;
use std::time::Duration;

/// Sync three CVs with `target` as log_target and check what rsyslogd received.
fn three_files_arrive_as_messages(syslog: &Rsyslogd, target: &str) {
    let env = TestEnv::new();
    let mut checksums = Vec::new();
    for i in 0..3 {
        let bytes = format!("CV {i} for {target}\n");
        env.write(&format!("cv{i}.txt"), &bytes);
        checksums.push(sha256_hex(bytes.as_bytes()));
    }
    env.config(json!({ "log_target": target }));
    let run = env.run(&["sync"]);
    run.assert_code(0);
    let files = |received: &[[String; 5]]| -> Vec<[String; 5]> {
        received
            .iter()
            .filter(|m| m[2] == "file" && m[3].contains(&env.folder().display().to_string()))
            .cloned()
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(10), || files(&syslog.received()).len()
            >= 3),
        "{target}: rsyslogd received {:?}",
        syslog.received()
    );
    let got = files(&syslog.received());
    assert_eq!(got.len(), 3, "{target}: one message per file: {got:?}");
    for (i, checksum) in checksums.iter().enumerate() {
        let path = env.folder().join(format!("cv{i}.txt"));
        let message = got
            .iter()
            .find(|m| m[3].contains(&format!("file=\"{}\"", path.display())))
            .unwrap_or_else(|| panic!("{target}: no message for {}: {got:?}", path.display()));
        assert_eq!(message[0], "info", "{target}: {message:?}");
        assert!(
            message[3].starts_with("[tanova@32473 ")
                && message[3].contains(&format!("checksum=\"{checksum}\"")),
            "{target}: structured data: {message:?}"
        );
        assert_eq!(message[4].trim(), "uploaded", "{target}: {message:?}");
    }
    // The agent's own lines come too, and the key never does.
    assert!(
        syslog
            .received()
            .iter()
            .any(|m| m[2] == "-" && m[4].contains("syncing ")),
        "{target}: {:?}",
        syslog.received()
    );
    assert_no_key(&syslog.raw());
}

#[test]
fn syslog_reaches_a_real_rsyslogd_over_udp_tcp_and_a_local_socket() {
    let Some(syslog) = Rsyslogd::start() else {
        return;
    };
    three_files_arrive_as_messages(&syslog, &format!("udp://127.0.0.1:{}", syslog.udp_port));
    three_files_arrive_as_messages(&syslog, &format!("tcp://127.0.0.1:{}", syslog.tcp_port));
    three_files_arrive_as_messages(&syslog, &format!("unix://{}", syslog.socket().display()));
}

#[test]
fn an_unreachable_log_target_is_a_config_error_naming_it() {
    let env = TestEnv::new();
    env.write_many(1);
    let closed = crate::common::redis_server::free_port();
    let socket = env.dir.path().join("no-such-socket");
    let table = [
        (
            format!("tcp://127.0.0.1:{closed}"),
            format!("log_target: cannot reach syslog at tcp://127.0.0.1:{closed}"),
        ),
        (
            format!("unix://{}", socket.display()),
            format!(
                "log_target: cannot reach syslog at unix://{}",
                socket.display()
            ),
        ),
        ("udp://127.0.0.1".to_string(), "log_target".to_string()),
        ("eventlog".to_string(), "log_target".to_string()),
    ];
    for (target, want) in table {
        env.config(json!({ "log_target": target }));
        let run = env.run(&["sync"]);
        run.assert_code(2);
        assert!(run.stderr.contains(&want), "{target}: {}", run.stderr);
        assert!(
            env.emulator.uploads().is_empty(),
            "{target}: nothing is sent"
        );
    }
}

#[test]
fn journald_without_a_journal_says_so_and_with_one_logs_there() {
    let env = TestEnv::new();
    env.write_many(1);
    env.config(json!({ "log_target": "journald" }));
    let run = env.run(&["sync"]);
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        run.assert_code(0);
    } else {
        run.assert_code(2);
        assert!(
            run.stderr
                .contains("log_target: cannot reach the journal at /run/systemd/journal/socket"),
            "{}",
            run.stderr
        );
    }
}
