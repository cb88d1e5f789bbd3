//! Service definitions that run `watch` unattended: a hardened systemd unit and a launchd plist, as pure text; the CLI writes them.

use std::path::{Path, PathBuf};

/// The unit's file name.
pub const UNIT_NAME: &str = "tanova-sync.service";
/// Where system units go.
pub const SYSTEMD_DIR: &str = "/etc/systemd/system";
/// The launchd job's label, and its plist's name with `.plist`.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub const LAUNCHD_LABEL: &str = "ai.tanova.sync";

/// What a service runs, every path absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub binary: PathBuf,
    pub config_file: PathBuf,
    /// The only place the service writes (besides `log_dir`).
    pub state_dir: PathBuf,
    /// The CV folder: only read.
    pub folder: PathBuf,
    /// The folder of `log_file`, when the config writes one.
    pub log_dir: Option<PathBuf>,
    /// The account to run as; None: root (or, for launchd, the logged-in user).
    pub user: Option<String>,
    /// Its primary group.
    pub group: Option<String>,
    /// The root-only file systemd hands the service as the credential
    /// `tanova-api-key` (`LoadCredential=`), so the key need not sit in a
    /// file the service's user can read at rest.
    pub key_file: Option<PathBuf>,
}

impl ServiceSpec {
    /// The command line: `BINARY watch --config FILE --state-dir DIR`.
    pub fn args(&self) -> Vec<String> {
        vec![
            self.binary.display().to_string(),
            "watch".to_string(),
            "--config".to_string(),
            self.config_file.display().to_string(),
            "--state-dir".to_string(),
            self.state_dir.display().to_string(),
        ]
    }

    /// The folder the service starts in, so paths relative to the config file still resolve.
    fn working_dir(&self) -> &Path {
        self.config_file.parent().unwrap_or(Path::new("/"))
    }
}

/// A hardened systemd unit: it may read the whole system (the CV folder among it) and write only the state (and log) directory.
pub fn systemd_unit(spec: &ServiceSpec) -> String {
    let exec: Vec<String> = spec.args().iter().map(|a| quote(a, true)).collect();
    let mut writable = vec![quote(&spec.state_dir.display().to_string(), false)];
    if let Some(dir) = &spec.log_dir {
        writable.push(quote(&dir.display().to_string(), false));
    }
    let in_tmp = [
        Some(&spec.folder),
        Some(&spec.state_dir),
        spec.log_dir.as_ref(),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.starts_with("/tmp") || p.starts_with("/var/tmp"));
    let private_tmp = match in_tmp {
        None => "PrivateTmp=yes".to_string(),
        Some(p) => format!(
            "# PrivateTmp=yes is left out: {} is under a temporary folder the service must see",
            escape_specifiers(&p.display().to_string())
        ),
    };
    let mut user = String::new();
    if let Some(u) = &spec.user {
        user.push_str(&format!("User={}\n", escape_specifiers(u)));
    }
    if let Some(g) = &spec.group {
        user.push_str(&format!("Group={}\n", escape_specifiers(g)));
    }
    if let Some(file) = &spec.key_file {
        // systemd reads it as root and hands the service a private copy in
        // $CREDENTIALS_DIRECTORY, which the agent reads (crate::config).
        user.push_str(&format!(
            "LoadCredential={}:{}\n",
            crate::config::CREDENTIAL_NAME,
            quote(&file.display().to_string(), false)
        ));
    }
    format!(
        "# Written by `tanova-sync service install`; install it with\n\
         #   systemctl daemon-reload && systemctl enable --now tanova-sync\n\
         [Unit]\n\
         Description=tanova-sync: uploads every CV in {folder} to Tanova\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         # Never give up restarting: a failure at start (Redis down) is transient.\n\
         StartLimitIntervalSec=0\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exec}\n\
         WorkingDirectory={workdir}\n\
         {user}\
         Restart=on-failure\n\
         RestartSec=10\n\
         # Exit 2 is a config error: only an edit fixes it. A rejected key or an outage never\n\
         # ends a watching agent (it pauses and resumes by itself); any other exit is restarted.\n\
         RestartPreventExitStatus=2\n\
         UMask=0077\n\
         \n\
         # Hardening: the CV folder and the config are only read; only the state (and log) directory is written.\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=read-only\n\
         ReadWritePaths={writable}\n\
         {private_tmp}\n\
         PrivateDevices=yes\n\
         PrivateMounts=yes\n\
         ProtectProc=invisible\n\
         RemoveIPC=yes\n\
         ProtectKernelTunables=yes\n\
         ProtectKernelModules=yes\n\
         ProtectKernelLogs=yes\n\
         ProtectControlGroups=yes\n\
         ProtectClock=yes\n\
         ProtectHostname=yes\n\
         RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n\
         RestrictNamespaces=yes\n\
         RestrictRealtime=yes\n\
         RestrictSUIDSGID=yes\n\
         LockPersonality=yes\n\
         MemoryDenyWriteExecute=yes\n\
         SystemCallArchitectures=native\n\
         SystemCallFilter=@system-service\n\
         SystemCallErrorNumber=EPERM\n\
         CapabilityBoundingSet=\n\
         AmbientCapabilities=\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        folder = escape_specifiers(&spec.folder.display().to_string()),
        exec = exec.join(" "),
        workdir = quote(&spec.working_dir().display().to_string(), false),
        writable = writable.join(" "),
    )
}

/// A launchd agent that starts at login and is restarted when it fails; its output goes to `log`.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub fn launchd_plist(spec: &ServiceSpec, log: &Path) -> String {
    let args: String = spec
        .args()
        .iter()
        .map(|a| format!("    <string>{}</string>\n", xml_escape(a)))
        .collect();
    let log = xml_escape(&log.display().to_string());
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n\
         <dict>\n\
         \x20 <key>Label</key>\n  <string>{LAUNCHD_LABEL}</string>\n\
         \x20 <key>ProgramArguments</key>\n  <array>\n{args}  </array>\n\
         \x20 <key>WorkingDirectory</key>\n  <string>{workdir}</string>\n\
         \x20 <key>RunAtLoad</key>\n  <true/>\n\
         \x20 <key>KeepAlive</key>\n  <dict>\n    <key>SuccessfulExit</key>\n    <false/>\n  </dict>\n\
         \x20 <key>ThrottleInterval</key>\n  <integer>10</integer>\n\
         \x20 <key>ProcessType</key>\n  <string>Background</string>\n\
         \x20 <key>StandardOutPath</key>\n  <string>{log}</string>\n\
         \x20 <key>StandardErrorPath</key>\n  <string>{log}</string>\n\
         </dict>\n\
         </plist>\n",
        workdir = xml_escape(&spec.working_dir().display().to_string()),
    )
}

/// One word of a unit file: `%` is doubled (specifiers), and a word with
/// spaces, quotes or backslashes is double-quoted with C escapes. In
/// `ExecStart` (`exec`), `$` is doubled too (variable expansion).
fn quote(word: &str, exec: bool) -> String {
    let mut text = escape_specifiers(word);
    if exec {
        text = text.replace('$', "$$");
    }
    let plain = !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    if plain {
        return text;
    }
    let mut quoted = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn escape_specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            binary: "/usr/local/bin/tanova-sync".into(),
            config_file: "/etc/tanova/tanova-config.json".into(),
            state_dir: "/var/lib/tanova".into(),
            folder: "/srv/share/CVs".into(),
            log_dir: None,
            user: Some("tanova".into()),
            group: Some("tanova".into()),
            key_file: Some("/etc/tanova-sync/api-key".into()),
        }
    }

    #[test]
    fn words_are_quoted_for_systemd() {
        let table = [
            ("/usr/bin/tanova-sync", true, "/usr/bin/tanova-sync"),
            ("/srv/My CVs", false, "\"/srv/My CVs\""),
            ("/srv/100%", false, "/srv/100%%"),
            ("/srv/$HOME", true, "/srv/$$HOME"),
            ("/srv/$HOME", false, "/srv/$HOME"),
            ("/srv/a\"b", false, "\"/srv/a\\\"b\""),
            ("/srv/a\\b", false, "\"/srv/a\\\\b\""),
            ("", true, "\"\""),
        ];
        for (word, exec, want) in table {
            assert_eq!(quote(word, exec), want, "{word:?}");
        }
    }

    #[test]
    fn the_unit_runs_watch_with_the_config_and_writes_only_the_state() {
        let unit = systemd_unit(&spec());
        let want = [
            "ExecStart=/usr/local/bin/tanova-sync watch --config /etc/tanova/tanova-config.json --state-dir /var/lib/tanova",
            "WorkingDirectory=/etc/tanova",
            "User=tanova",
            "Group=tanova",
            "LoadCredential=tanova-api-key:/etc/tanova-sync/api-key",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=read-only",
            "ReadWritePaths=/var/lib/tanova",
            "PrivateTmp=yes",
            "WantedBy=multi-user.target",
        ];
        for line in want {
            assert!(unit.lines().any(|l| l == line), "no {line:?} in\n{unit}");
        }
        assert!(
            !unit.contains("ReadWritePaths=/srv"),
            "the CV folder is only read"
        );
    }

    #[test]
    fn the_unit_adapts_to_logs_temp_folders_and_root() {
        let mut s = spec();
        s.log_dir = Some("/var/log/tanova".into());
        s.folder = "/tmp/cvs".into();
        s.user = None;
        s.group = None;
        s.key_file = None;
        let unit = systemd_unit(&s);
        assert!(
            unit.contains("\nReadWritePaths=/var/lib/tanova /var/log/tanova\n"),
            "{unit}"
        );
        assert!(!unit.contains("\nPrivateTmp=yes"), "{unit}");
        assert!(
            unit.contains("# PrivateTmp=yes is left out: /tmp/cvs"),
            "{unit}"
        );
        assert!(!unit.contains("User="), "{unit}");
        assert!(!unit.contains("LoadCredential="), "{unit}");
    }

    #[test]
    fn the_plist_lists_the_arguments_escaped() {
        let mut s = spec();
        s.config_file = "/Users/a&b/tanova-config.json".into();
        let plist = launchd_plist(&s, Path::new("/Users/a&b/Library/Logs/tanova-sync.log"));
        assert!(plist.contains("<string>ai.tanova.sync</string>"));
        assert!(plist.contains("    <string>watch</string>\n    <string>--config</string>\n    <string>/Users/a&amp;b/tanova-config.json</string>"), "{plist}");
        assert!(plist.contains("<key>StandardErrorPath</key>\n  <string>/Users/a&amp;b/Library/Logs/tanova-sync.log</string>"), "{plist}");
    }
}
