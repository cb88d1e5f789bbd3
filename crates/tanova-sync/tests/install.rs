//! Installing the agent: `service install` (the systemd unit, checked by systemd-analyze where it exists), shell completions and the man page.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// A config file holding everything the service needs, as `service install` requires.
fn full_config(env: &TestEnv) -> PathBuf {
    env.config(json!({
        "folder_path": env.folder(),
        "api_key": DEFAULT_API_KEY,
        "tanova_url": env.emulator.url(),
    }))
}

#[test]
fn the_printed_unit_runs_watch_with_the_absolute_paths() {
    let env = TestEnv::new();
    let file = full_config(&env);
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let run = env.run(&["service", "install", "--print"]);
    run.assert_code(0);
    let unit = run.stdout;
    let exec = format!(
        "ExecStart={} watch --config {} --state-dir {}",
        canonical(Path::new(BIN)).display(),
        canonical(&file).display(),
        canonical(&env.state_dir()).display()
    );
    for line in [
        exec.as_str(),
        &format!("ReadWritePaths={}", canonical(&env.state_dir()).display()),
        &format!("WorkingDirectory={}", canonical(env.dir.path()).display()),
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line:?} in\n{unit}");
    }
    assert!(
        !unit.contains(&format!("ReadWritePaths={}", env.folder().display())),
        "the CV folder is only read"
    );
    assert!(
        !unit.contains(DEFAULT_API_KEY),
        "the key stays in the config file"
    );

    let Some(analyze) = which("systemd-analyze") else {
        eprintln!("SKIPPED systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tanova-sync.service");
    std::fs::write(&path, &unit).unwrap();
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("System has not been booted with systemd") {
        eprintln!("SKIPPED systemd-analyze verify: {stderr}");
        return;
    }
    assert!(
        out.status.success(),
        "systemd-analyze verify:\n{stderr}\n{unit}"
    );
    // Warnings about the unit itself (not about others it names) fail the test too.
    let own: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tanova-sync.service"))
        .collect();
    assert!(own.is_empty(), "systemd-analyze verify:\n{stderr}\n{unit}");
}

#[test]
fn the_unit_is_written_where_asked_with_the_next_steps() {
    let env = TestEnv::new();
    full_config(&env);
    let units = env.dir.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    let run = env.run(&["service", "install", "--dir", units.to_str().unwrap()]);
    run.assert_code(0);
    let unit = std::fs::read_to_string(units.join("tanova-sync.service")).unwrap();
    assert!(unit.contains("ProtectSystem=strict"));
    assert!(
        run.stdout
            .contains("systemctl daemon-reload && systemctl enable --now tanova-sync"),
        "{}",
        run.stdout
    );
    assert!(env.state_dir().is_dir(), "the one writable path exists");
}

#[test]
fn the_service_needs_a_config_file_with_everything_in_it() {
    let env = TestEnv::new();
    let run = env.run(&["service", "install", "--print"]);
    run.assert_code(2);
    assert!(run.stderr.contains("config file"), "{}", run.stderr);
    // The key only in the environment: the service would not have it.
    env.config(json!({ "folder_path": env.folder() }));
    let run = env.run(&["service", "install", "--print"]);
    run.assert_code(2);
    assert!(run.stderr.contains("api_key"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

#[test]
fn completions_for_every_shell_know_the_commands() {
    let env = TestEnv::new();
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let run = env.run(&["completions", shell]);
        run.assert_code(0);
        assert!(
            run.stdout.len() > 2000,
            "{shell}: {} bytes",
            run.stdout.len()
        );
        // Flags as fish spells them too (`-l listen`).
        for word in ["sync", "watch", "demo", "service", "listen", "log-format"] {
            assert!(run.stdout.contains(word), "{shell} completions lack {word}");
        }
    }
    env.run(&["completions", "tcsh"]).assert_code(2);
}

#[test]
fn the_man_page_describes_the_commands_and_flags() {
    let env = TestEnv::new();
    let run = env.run(&["man"]);
    run.assert_code(0);
    let page = run.stdout;
    assert!(
        page.starts_with(".ie") || page.contains(".TH tanova-sync"),
        "{page}"
    );
    for word in [
        "sync",
        "watch",
        "service",
        "completions",
        "listen",
        "log\\-format",
    ] {
        assert!(page.contains(word), "the man page lacks {word}:\n{page}");
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}
