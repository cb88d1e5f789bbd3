//! The Docker image, for real: built from the repository's Dockerfile on a base image made from debootstrap, run against the emulator on the host's loopback; CVs arrive, health turns healthy, non-root, read-only root, JSON logs on stdout, and a restart uploads nothing twice.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::docker::{Cleanup, Docker};
use crate::common::redis_server::free_port;
use crate::common::*;

fn wait_for(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    assert!(
        wait_until(timeout, &mut cond),
        "{what}; container log:\n{}",
        log()
    );
}

#[test]
fn the_image_syncs_read_only_as_non_root_turns_healthy_and_a_restart_uploads_nothing_twice() {
    let Some(docker) = Docker::find() else {
        return;
    };
    let tag = format!("tanova-sync-test:{}", std::process::id());
    let image = docker.build_image(&tag);
    let name = format!("tanova-sync-test-{}", std::process::id());
    let volume = format!("{name}-state");
    let cleanup = Cleanup {
        docker: &docker,
        containers: vec![name.clone()],
        volumes: vec![volume.clone()],
    };

    let env = TestEnv::new();
    env.write_many(5);
    // The container's user (uid 10001) reads the folder through the bind mount.
    for dir in [env.dir.path().to_path_buf(), env.folder()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for entry in walk(&env.folder()) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let listen = format!("127.0.0.1:{}", free_port());
    let url = env.emulator.url();
    let mount = format!("{}:/cvs:ro", env.folder().display());
    let state = format!("{volume}:/var/lib/tanova");
    docker.ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-v",
        &mount,
        "-v",
        &state,
        "-e",
        &format!("TANOVA_URL={url}"),
        "-e",
        &format!("TANOVA_API_KEY={DEFAULT_API_KEY}"),
        "-e",
        &format!("TANOVA_LISTEN={listen}"),
        "-e",
        "TANOVA_LOG_FORMAT=json",
        "-e",
        "TANOVA_LOG_TARGET=stdout",
        "--health-interval",
        "1s",
        "--health-start-period",
        "30s",
        &image.tag,
    ]);
    let logs = || {
        let out = docker.run(&["logs", &name]);
        let health = docker.run(&["inspect", "-f", "{{json .State.Health}}", &name]);
        format!(
            "{}{}\nhealth: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&health.stdout)
        )
    };
    wait_for(
        "the 5 CVs arrive",
        Duration::from_secs(60),
        || env.emulator.uploads().len() >= 5,
        logs,
    );
    let health = || docker.ok(&["inspect", "-f", "{{.State.Health.Status}}", &name]);
    wait_for(
        "the health check turns healthy",
        Duration::from_secs(60),
        || health() == "healthy",
        logs,
    );

    // Non-root, and nothing can be written outside the volume and /tmp.
    let uid = docker.ok(&[
        "exec",
        &name,
        "sh",
        "-c",
        "awk '/^Uid:/ {print $2}' /proc/1/status",
    ]);
    assert_eq!(uid, "10001", "the agent's uid");
    let write_root = docker.run(&["exec", &name, "touch", "/usr/local/bin/x"]);
    assert!(!write_root.status.success());
    assert!(
        String::from_utf8_lossy(&write_root.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&write_root.stderr)
    );
    let write_cvs = docker.run(&["exec", &name, "touch", "/cvs/x"]);
    assert!(!write_cvs.status.success(), "the CV folder is read-only");
    docker.ok(&["exec", &name, "touch", "/var/lib/tanova/writable"]);

    // JSON on stdout: one event per uploaded file, with its checksum (the
    // first pass's summary, which the CLI prints on stdout, is left aside).
    let stdout = String::from_utf8_lossy(&docker.run(&["logs", &name]).stdout).into_owned();
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        events
            .iter()
            .filter(|e| e["message"] == "uploaded")
            .all(|e| e["checksum"].as_str().is_some_and(|c| c.len() == 64)),
        "{stdout}"
    );
    let uploaded = events.iter().filter(|e| e["message"] == "uploaded").count();
    assert_eq!(uploaded, 5, "{stdout}");
    assert!(events.iter().all(|e| e["level"].is_string()), "{stdout}");

    // A restart: the state is on the volume, so the five are not even
    // checked with the server again; only the new CV goes up.
    let checks_before = env.emulator.stats().check_duplicate_calls;
    docker.ok(&["restart", "-t", "20", &name]);
    env.write(
        "after-restart/new.txt",
        "a CV written while the agent restarted\n",
    );
    std::fs::set_permissions(
        env.folder().join("after-restart"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    wait_for(
        "the new CV arrives after the restart",
        Duration::from_secs(60),
        || env.emulator.uploads().len() >= 6,
        logs,
    );
    wait_for(
        "healthy again",
        Duration::from_secs(60),
        || health() == "healthy",
        logs,
    );
    // Give a second pass time to send anything twice before counting.
    std::thread::sleep(Duration::from_secs(2));
    let uploads = env.emulator.uploads();
    let distinct: HashSet<_> = uploads.iter().map(|u| u.checksum.clone()).collect();
    assert_eq!((uploads.len(), distinct.len()), (6, 6), "{}", logs());
    let stats = env.emulator.stats();
    assert_eq!(stats.duplicate_uploads, 0);
    assert_eq!(
        stats.check_duplicate_calls - checks_before,
        1,
        "only the new CV is checked after the restart: {}",
        logs()
    );
    assert_no_key(&logs());
    drop(cleanup);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn compose_yaml_runs_the_image_with_the_key_from_a_docker_secret() {
    let Some(docker) = Docker::find() else {
        return;
    };
    let Some(compose) = require_tool(&["docker-compose"], "apt-get install docker-compose") else {
        return;
    };
    let tag = format!("tanova-sync-compose-test:{}", std::process::id());
    let image = docker.build_image(&tag);
    let project = format!("tanova-compose-test-{}", std::process::id());

    let env = TestEnv::new();
    env.write_many(3);
    for dir in [env.dir.path().to_path_buf(), env.folder()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for entry in walk(&env.folder()) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // The repository's compose.yaml as is, beside the key file it names; the
    // override only puts it on the host's network (the emulator is on loopback).
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        crate::common::docker::repo_root().join("compose.yaml"),
        dir.path().join("compose.yaml"),
    )
    .unwrap();
    let key_file = dir.path().join("tanova_api_key.txt");
    std::fs::write(&key_file, format!("{DEFAULT_API_KEY}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        dir.path().join("host-network.yaml"),
        format!(
            "services:\n  tanova-sync:\n    network_mode: host\n    environment:\n      \
             TANOVA_LISTEN: {listen}\n    healthcheck:\n      interval: 1s\n"
        ),
    )
    .unwrap();
    let compose_cmd = |args: &[&str]| {
        let mut cmd = std::process::Command::new(&compose);
        cmd.current_dir(dir.path())
            .args([
                "-p",
                &project,
                "-f",
                "compose.yaml",
                "-f",
                "host-network.yaml",
            ])
            .args(args)
            .env("TANOVA_IMAGE", &image.tag)
            .env("TANOVA_URL", env.emulator.url())
            .env("TANOVA_CV_FOLDER", env.folder())
            .env_remove("TANOVA_API_KEY");
        cmd.output().expect("docker-compose runs")
    };
    struct Down<F: Fn(&[&str]) -> std::process::Output>(F);
    impl<F: Fn(&[&str]) -> std::process::Output> Drop for Down<F> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down", "-v", "--timeout", "5"]);
        }
    }
    let down = Down(compose_cmd);
    let up = (down.0)(&["up", "-d", "--no-build"]);
    assert!(
        up.status.success(),
        "docker-compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let logs = || {
        let out = (down.0)(&["logs", "--no-color"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for(
        "the 3 CVs arrive, sent with the key from the secret",
        Duration::from_secs(60),
        || env.emulator.uploads().len() >= 3,
        logs,
    );
    let id = String::from_utf8_lossy(&(down.0)(&["ps", "-q", "tanova-sync"]).stdout)
        .trim()
        .to_string();
    assert!(!id.is_empty(), "{}", logs());
    wait_for(
        "the health check turns healthy",
        Duration::from_secs(60),
        || docker.ok(&["inspect", "-f", "{{.State.Health.Status}}", &id]) == "healthy",
        logs,
    );
    assert_eq!(
        docker.ok(&["inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", &id]),
        "true"
    );
    let uid = docker.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "awk '/^Uid:/ {print $2}' /proc/1/status",
    ]);
    assert_eq!(uid, "10001");
    assert_no_key(&logs());
    drop(down);
}
