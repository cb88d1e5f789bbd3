//! Installing the agent: `service install` (the systemd unit, checked by systemd-analyze where it exists), shell completions and the man page.

use std::path::{Path, PathBuf};

use crate::common::*;
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
    let user = ordinary_user();
    let run = env.run(&["service", "install", "--print", "--user", &user]);
    run.assert_code(0);
    let unit = run.stdout;
    let account = account(&user);
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
        &format!("User={user}"),
        &format!("Group={}", account.group),
        "LoadCredential=tanova-api-key:/etc/tanova-sync/api-key",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line:?} in\n{unit}");
    }
    assert!(
        !unit.contains(&format!("ReadWritePaths={}", env.folder().display())),
        "the CV folder is only read"
    );
    assert!(
        !unit.contains(DEFAULT_API_KEY),
        "the key is not in the unit"
    );
    // --print writes nothing, and says how to store the key without showing it.
    assert!(
        run.stderr.contains("/etc/tanova-sync/api-key") && run.stderr.contains("umask 077"),
        "{}",
        run.stderr
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

    // The exposure score README quotes (lower is safer); printed for the record.
    let out = std::process::Command::new(which("systemd-analyze").unwrap())
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(line) = text.lines().find(|l| l.contains("Overall exposure level")) {
        eprintln!("systemd-analyze security: {line}");
        let score: f64 = line
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .expect("a score");
        assert!(score <= 2.0, "the unit got less safe: {line}");
    } else {
        eprintln!(
            "SKIPPED systemd-analyze security: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_unit_is_written_where_asked_with_the_next_steps() {
    let env = TestEnv::new();
    full_config(&env);
    let units = env.dir.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    let key_file = env.dir.path().join("etc/tanova-sync/api-key");
    let run = env.run(&[
        "service",
        "install",
        "--user",
        "nobody",
        "--dir",
        units.to_str().unwrap(),
        "--key-file",
        key_file.to_str().unwrap(),
    ]);
    run.assert_code(0);
    let unit = std::fs::read_to_string(units.join("tanova-sync.service")).unwrap();
    assert!(unit.contains("ProtectSystem=strict"));
    assert!(
        unit.contains(&format!(
            "\nLoadCredential=tanova-api-key:{}\n",
            key_file.display()
        )),
        "{unit}"
    );
    assert!(
        !unit.contains(DEFAULT_API_KEY),
        "the key is not in the unit"
    );
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let key = std::fs::read_to_string(&key_file).unwrap();
        assert_eq!(key.trim(), DEFAULT_API_KEY);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key_file), 0o600, "the key file is its owner's only");
        assert_eq!(mode(key_file.parent().unwrap()), 0o700);
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(std::fs::metadata(&key_file).unwrap().uid(), 0, "root's");
            // The service's user can write its state directory.
            let state = std::fs::metadata(env.state_dir()).unwrap();
            assert_eq!(state.uid(), account("nobody").uid);
        }
    }
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
    let run = env.run(&["service", "install", "--print", "--user", "nobody"]);
    run.assert_code(2);
    assert!(run.stderr.contains("config file"), "{}", run.stderr);
    // The folder only in the environment: the service would not have it.
    env.config(json!({ "api_key": DEFAULT_API_KEY }));
    let run = env.run(&["service", "install", "--print", "--user", "nobody"]);
    run.assert_code(2);
    assert!(run.stderr.contains("folder_path"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    // The key only in the environment is fine: systemd hands it over as a credential.
    env.config(json!({ "folder_path": env.folder() }));
    let run = env.run(&["service", "install", "--print", "--user", "nobody"]);
    run.assert_code(0);
    assert!(run.stdout.contains("LoadCredential=tanova-api-key:"));
}

#[test]
fn as_root_the_service_runs_as_the_sudo_user_or_a_named_one() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root, as `sudo tanova-sync service install` has");
        return;
    }
    let env = TestEnv::new();
    full_config(&env);
    let nobody = account("nobody");
    let install = |extra: &[&str], sudo_user: Option<&str>| {
        let mut args = vec!["service", "install", "--print"];
        args.extend(extra);
        let mut cmd = env.command(&args);
        // The state directory is the service user's, unless the config names one.
        cmd.env_remove("TANOVA_STATE_DIR").env_remove("SUDO_USER");
        if let Some(user) = sudo_user {
            cmd.env("SUDO_USER", user);
        }
        finish(&mut cmd)
    };
    // Root with nobody to run as: refused, naming the way out.
    let run = install(&[], None);
    run.assert_code(2);
    assert!(run.stderr.contains("--user NAME"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    // Under sudo: the user who ran sudo, with the state in their home.
    let run = install(&[], Some("nobody"));
    run.assert_code(0);
    assert!(run.stdout.contains("\nUser=nobody\n"), "{}", run.stdout);
    let state = nobody.home.join(".tanova");
    assert!(
        run.stdout
            .contains(&format!("--state-dir {}\n", state.display())),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("ReadWritePaths={}", state.display())),
        "{}",
        run.stdout
    );
    // Root only when named, with a warning.
    let run = install(&["--user", "root"], Some("nobody"));
    run.assert_code(0);
    assert!(run.stdout.contains("\nUser=root\n"), "{}", run.stdout);
    assert!(run.stderr.contains("run as root"), "{}", run.stderr);
    // A user that does not exist.
    let run = install(&["--user", "no-such-user-tanova"], None);
    run.assert_code(2);
    assert!(run.stderr.contains("no such user"), "{}", run.stderr);
}

#[test]
fn the_agent_reads_the_key_from_its_systemd_credential() {
    let env = TestEnv::new();
    env.write("a.pdf", "a CV");
    let creds = env.dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("tanova-api-key"), format!("{DEFAULT_API_KEY}\n")).unwrap();
    // The credential beats the config file's key...
    env.config(json!({ "api_key": "tanova_sk_wrong_key_123456" }));
    let run = finish(
        env.command(&["sync", "--json"])
            .env_remove("TANOVA_API_KEY")
            .env("CREDENTIALS_DIRECTORY", &creds),
    );
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1);
    // ...and TANOVA_API_KEY beats the credential.
    env.write("b.pdf", "another CV");
    let run = finish(
        env.command(&["sync"])
            .env("TANOVA_API_KEY", "tanova_sk_wrong_key_123456")
            .env("CREDENTIALS_DIRECTORY", &creds),
    );
    run.assert_code(2);
    assert!(run.stderr.contains("rejected"), "{}", run.stderr);
}

/// An account systemd-analyze accepts for a service: a person's (uid 1000 and
/// up, not nobody), else `daemon`. (It calls `User=nobody` unsafe.)
fn ordinary_user() -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| {
            f.len() > 2
                && f[2]
                    .parse::<u32>()
                    .is_ok_and(|u| (1000..65534).contains(&u))
        })
        .map_or_else(|| "daemon".to_string(), |f| f[0].to_string())
}

/// A user of this machine, as the tests need to know it.
struct Account {
    uid: u32,
    group: String,
    home: PathBuf,
}

fn account(name: &str) -> Account {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .unwrap_or_else(|| panic!("no user {name} in /etc/passwd"));
    let fields: Vec<&str> = line.split(':').collect();
    let gid = fields[3];
    let groups = std::fs::read_to_string("/etc/group").unwrap();
    let group = groups
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|g| g.get(2) == Some(&gid))
        .map_or(gid.to_string(), |g| g[0].to_string());
    Account {
        uid: fields[2].parse().unwrap(),
        group,
        home: PathBuf::from(fields[5]),
    }
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
