//! `tanova-sync service install [--print]`: a service that runs `watch` with the current config file, written where the system looks for it.

use std::path::{Path, PathBuf};

use super::args::{GlobalArgs, ServiceInstallArgs};
use super::{report_error, Exit};
use crate::config::{self, Overrides, DEFAULT_CONFIG_FILE};
use crate::service::{self, ServiceSpec};

pub fn install(global: &GlobalArgs, args: &ServiceInstallArgs) -> Exit {
    let spec = match spec(global) {
        Ok(spec) => spec,
        Err(message) => {
            report_error(global, &message);
            return Exit::Usage;
        }
    };
    write_or_print(global, args, &spec)
}

/// What the service runs: this binary, `watch`, the config file and the state directory, all absolute.
fn spec(global: &GlobalArgs) -> Result<ServiceSpec, String> {
    let file = match &global.config {
        Some(file) => file.clone(),
        None if Path::new(DEFAULT_CONFIG_FILE).is_file() => PathBuf::from(DEFAULT_CONFIG_FILE),
        None => {
            return Err(format!(
                "service install: the service reads its settings from a config file, and there is none: \
                 pass --config FILE or run it where {DEFAULT_CONFIG_FILE} is"
            ))
        }
    };
    let file = absolute(&file)?;
    // The settings as this command line sees them, for the state directory (its log
    // settings are not applied: this command's messages belong on the terminal)…
    let here = Overrides {
        config_file: Some(file.clone()),
        folder: global.folder.clone(),
        state_dir: global.state_dir.clone(),
        state_url: global.state_url.clone(),
        max_workers: global.max_workers,
        concurrency: global.concurrency,
        ..Overrides::default()
    };
    let current = config::load(&here, &|name| std::env::var(name).ok())
        .map_err(|e| format!("config error: {e}"))?;
    for warning in &current.warnings {
        tracing::warn!("{warning}");
    }
    let state_dir = absolute(&current.config.state_dir)?;
    // …and as the service will: the file alone, with no TANOVA_* variables and no other flags.
    let home = |name: &str| {
        matches!(name, "HOME" | "USERPROFILE")
            .then(|| std::env::var(name).ok())
            .flatten()
    };
    let overrides = Overrides {
        config_file: Some(file.clone()),
        state_dir: Some(state_dir.clone()),
        ..Overrides::default()
    };
    let seen = config::load(&overrides, &home).map_err(|e| {
        format!(
            "service install: the service reads only {} (no TANOVA_* variables, no other flags), \
             and with that alone: {e}; put the setting in the file",
            file.display()
        )
    })?;
    let log_dir = match &seen.config.log.file {
        Some(log) => Some(
            absolute(log)?
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
        ),
        None => None,
    };
    let binary = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| format!("service install: cannot tell where this program is: {e}"))?;
    Ok(ServiceSpec {
        binary,
        config_file: file,
        state_dir,
        folder: absolute(&seen.config.folder)?,
        log_dir,
        user: service_user(),
    })
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    let path = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.canonicalize().unwrap_or(path))
}

/// The account the service runs as: the one installing it, unless that is root.
fn service_user() -> Option<String> {
    #[cfg(unix)]
    {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return None;
        }
    }
    ["USER", "LOGNAME"].iter().find_map(|name| {
        std::env::var(name)
            .ok()
            .filter(|u| !u.is_empty() && u != "root")
    })
}

#[cfg(target_os = "macos")]
fn write_or_print(global: &GlobalArgs, args: &ServiceInstallArgs, spec: &ServiceSpec) -> Exit {
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".to_string()));
    let log = home.join("Library/Logs/tanova-sync.log");
    let plist = service::launchd_plist(spec, &log);
    if args.print {
        print!("{plist}");
        return Exit::Ok;
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| home.join("Library/LaunchAgents"));
    let path = dir.join(format!("{}.plist", service::LAUNCHD_LABEL));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, plist)) {
        report_error(global, &format!("cannot write {}: {e}", path.display()));
        return Exit::Usage;
    }
    println!(
        "Wrote {}.\nNext: launchctl load -w {}\nIts output goes to {}.",
        path.display(),
        path.display(),
        log.display()
    );
    Exit::Ok
}

#[cfg(all(unix, not(target_os = "macos")))]
fn write_or_print(global: &GlobalArgs, args: &ServiceInstallArgs, spec: &ServiceSpec) -> Exit {
    let unit = service::systemd_unit(spec);
    if args.print {
        print!("{unit}");
        return Exit::Ok;
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(service::SYSTEMD_DIR));
    let path = dir.join(service::UNIT_NAME);
    if let Err(e) = std::fs::write(&path, &unit) {
        let how = if e.kind() == std::io::ErrorKind::PermissionDenied {
            format!(
                "; installing a system service takes root: run it with sudo, or \
                 `tanova-sync service install --print --config {} | sudo tee {}`",
                spec.config_file.display(),
                path.display()
            )
        } else {
            String::new()
        };
        report_error(
            global,
            &format!("cannot write {}: {e}{how}", path.display()),
        );
        return Exit::Usage;
    }
    // The unit may write only there, and systemd refuses to start it if it does not exist.
    for dir in std::iter::once(&spec.state_dir).chain(&spec.log_dir) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            report_error(global, &format!("cannot create {}: {e}", dir.display()));
            return Exit::Usage;
        }
    }
    println!(
        "Wrote {}.\nNext: systemctl daemon-reload && systemctl enable --now tanova-sync\n\
         Then: systemctl status tanova-sync; its log: journalctl -u tanova-sync -f",
        path.display()
    );
    Exit::Ok
}

#[cfg(not(unix))]
fn write_or_print(global: &GlobalArgs, _args: &ServiceInstallArgs, spec: &ServiceSpec) -> Exit {
    let command = spec
        .args()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(" ");
    report_error(
        global,
        &format!(
            "service install writes systemd units and launchd plists; on Windows run `{command}` \
             with NSSM or Task Scheduler, as the README's Windows section shows"
        ),
    );
    Exit::Usage
}
