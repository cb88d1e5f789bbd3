//! The .deb made with `cargo deb`, installed for real with apt in a container from the local Debian base image: the binary, the man page, a unit systemd-analyze accepts, the tanova user, the conffile 0640 root:tanova, and a clean `dpkg -r`.

use std::path::PathBuf;

use crate::common::docker::{Cleanup, Docker, BASE_IMAGE};
use crate::common::tools_required;

/// The .deb that .ci/run built (`packaging/deb/build.sh --profile dev`), named by
/// TANOVA_TEST_DEB: cargo cannot build it from inside a running `cargo test`.
fn built_deb() -> Option<PathBuf> {
    match std::env::var_os("TANOVA_TEST_DEB") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "TANOVA_TEST_DEB={}: no such file",
                path.display()
            );
            Some(path)
        }
        None => {
            assert!(
                !tools_required(),
                "TANOVA_TEST_DEB is not set, and CI is set: .ci/run builds the .deb first"
            );
            eprintln!(
                "SKIPPED: set TANOVA_TEST_DEB to a .deb from packaging/deb/build.sh; CI runs this test"
            );
            None
        }
    }
}

#[test]
fn the_deb_installs_the_binary_man_page_unit_user_and_config_and_removes_cleanly() {
    let Some(deb) = built_deb() else {
        return;
    };
    let Some(docker) = Docker::find() else {
        return;
    };
    docker.ensure_base_image();
    let name = format!("tanova-sync-deb-test-{}", std::process::id());
    let _cleanup = Cleanup {
        docker: &docker,
        containers: vec![name.clone()],
        volumes: vec![],
    };
    let mount = format!("{}:/deb/tanova-sync.deb:ro", deb.display());
    // The host's network: apt reaches Debian's mirror for the package's dependencies.
    docker.ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "-v",
        &mount,
        BASE_IMAGE,
        "sleep",
        "infinity",
    ]);
    let sh = |script: &str| docker.run(&["exec", &name, "sh", "-c", script]);
    let ok = |script: &str| {
        let out = sh(script);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{script}:\n{text}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // apt installs it the way an admin would, with its dependencies; man-db and
    // systemd only for the checks below.
    ok(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends man-db systemd /deb/tanova-sync.deb >/dev/null",
    );

    let version = ok("tanova-sync --version");
    assert_eq!(
        version,
        format!("tanova-sync {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        ok("man -w tanova-sync"),
        "/usr/share/man/man1/tanova-sync.1.gz"
    );
    ok("test -s /usr/share/bash-completion/completions/tanova-sync");
    ok("systemd-analyze verify /lib/systemd/system/tanova-sync.service");
    let user = ok("getent passwd tanova");
    assert!(
        user.starts_with("tanova:x:") && user.ends_with(":/usr/sbin/nologin"),
        "a system user without a login shell: {user}"
    );
    let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    assert!(uid < 1000, "a system uid: {user}");
    assert_eq!(
        ok("stat -c '%a %U:%G' /etc/tanova-sync/tanova-config.json"),
        "640 root:tanova"
    );
    assert_eq!(
        ok("stat -c '%a %U:%G' /var/lib/tanova-sync"),
        "700 tanova:tanova"
    );
    assert_eq!(
        ok("dpkg-query -W -f='${Conffiles}' tanova-sync | awk '{print $1}'"),
        "/etc/tanova-sync/tanova-config.json"
    );
    // The service's user reads the config; nobody else does.
    ok("su -s /bin/sh tanova -c 'cat /etc/tanova-sync/tanova-config.json' >/dev/null");
    assert!(
        !sh("su -s /bin/sh nobody -c 'cat /etc/tanova-sync/tanova-config.json'")
            .status
            .success()
    );

    ok("dpkg -r tanova-sync >/dev/null");
    for gone in [
        "/usr/bin/tanova-sync",
        "/usr/share/man/man1/tanova-sync.1.gz",
        "/lib/systemd/system/tanova-sync.service",
        "/usr/share/bash-completion/completions/tanova-sync",
    ] {
        assert!(
            !sh(&format!("test -e {gone}")).status.success(),
            "{gone} stays after dpkg -r"
        );
    }
    // Removed, not purged: the config (a conffile) stays, as Debian does it.
    assert_eq!(
        ok("dpkg-query -W -f='${db:Status-Abbrev}' tanova-sync"),
        "rc"
    );
    ok("dpkg --purge tanova-sync >/dev/null");
    assert!(!sh("test -e /etc/tanova-sync/tanova-config.json")
        .status
        .success());
    assert!(
        !sh("getent passwd tanova").status.success(),
        "purge removes the user"
    );
}
