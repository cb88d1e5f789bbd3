//! `tanova-sync doctor`: check everything a run depends on and say what to fix.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Exit, GlobalArgs};
use crate::api::{ApiClient, ApiError, Timeouts};
use crate::config::Config;
use crate::state::{lock, Ledger, SqliteStore};

/// One check's verdict.
enum Check {
    Ok(String),
    Warn(String),
    Fail(String),
}

/// Run every check against the loaded config, print them, and exit 1 if any failed.
pub async fn doctor(_global: &GlobalArgs, config: &Config) -> Exit {
    let checks = [
        (
            "config",
            Check::Ok(format!(
                "folder {}, service {}, key {}",
                config.folder.display(),
                config.url,
                config.api_key.redacted()
            )),
        ),
        ("folder", folder(config)),
        ("state", state(config)),
        ("service", service(config).await),
        ("shared ledger", ledger(config).await),
        ("file watching", watching(config)),
    ];
    let mut failed = false;
    for (name, check) in &checks {
        let (mark, text) = match check {
            Check::Ok(t) => ("ok  ", t),
            Check::Warn(t) => ("warn", t),
            Check::Fail(t) => {
                failed = true;
                ("FAIL", t)
            }
        };
        println!("[{mark}] {name}: {text}");
    }
    if failed {
        Exit::SomeFailed
    } else {
        Exit::Ok
    }
}

fn folder(config: &Config) -> Check {
    match std::fs::read_dir(&config.folder) {
        Ok(entries) => Check::Ok(format!(
            "{} is readable ({} entries at the top)",
            config.folder.display(),
            entries.count()
        )),
        Err(e) => Check::Fail(format!("{}: {e}", config.folder.display())),
    }
}

fn state(config: &Config) -> Check {
    let dir = &config.state_dir;
    if let Err(e) = SqliteStore::open(dir) {
        return Check::Fail(e.to_string());
    }
    let probe = dir.join(".doctor-write-test");
    if let Err(e) = std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe)) {
        return Check::Fail(format!("{} is not writable: {e}", dir.display()));
    }
    match lock::acquire(dir) {
        Ok(_) => Check::Ok(format!(
            "{} is writable; no agent is running on it",
            dir.display()
        )),
        // Not a failure: the agent the admin is checking on may well be running.
        Err(e) => Check::Ok(format!("{} is writable; {e}", dir.display())),
    }
}

async fn service(config: &Config) -> Check {
    let timeouts = Timeouts {
        connect: Duration::from_secs(10),
        read: Duration::from_secs(20),
    };
    let api = match ApiClient::with_extra_roots(
        &config.url,
        &config.api_key,
        timeouts,
        &config.extra_roots,
    ) {
        Ok(api) => api,
        Err(e) => return Check::Fail(e.to_string()),
    };
    match api.health().await {
        Ok(health) => {
            let agency = health.agency.map_or_else(
                || "?".to_string(),
                |a| a.as_str().map_or(a.to_string(), str::to_string),
            );
            let (up, read) = health
                .permissions
                .map_or((true, true), |p| (p.can_upload, p.can_read));
            let text = format!(
                "{} answers; key valid for agency {agency} (canUpload: {up}, canRead: {read})",
                config.url
            );
            if up {
                Check::Ok(text)
            } else {
                Check::Fail(format!("{text}: this key may not upload CVs"))
            }
        }
        Err(e @ (ApiError::Rejected { .. } | ApiError::Misdirected { .. })) => {
            Check::Fail(e.to_string())
        }
        Err(e) => Check::Fail(format!("cannot reach the service: {e}")),
    }
}

async fn ledger(config: &Config) -> Check {
    let Some(url) = &config.state_url else {
        return Check::Ok(
            "not shared (no state_url): this agent's SQLite state is the whole truth".to_string(),
        );
    };
    let cancel = CancellationToken::new();
    match Ledger::connect(
        Some(url),
        config.lease,
        config.inflight_grace,
        0,
        Duration::ZERO,
        &cancel,
    )
    .await
    {
        Ok(_) => Check::Ok(format!("Redis at {url} answers")),
        Err(e) => Check::Fail(e.to_string()),
    }
}

/// On Linux, each watched folder takes one inotify watch.
fn watching(config: &Config) -> Check {
    if config.watch.mode == crate::settings::WatchMode::Poll {
        return Check::Ok("poll mode: no file-system events needed".to_string());
    }
    let Ok(limit) = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches") else {
        return Check::Ok("file-system events available".to_string());
    };
    let limit: u64 = limit.trim().parse().unwrap_or(0);
    let folders = walkdir::WalkDir::new(&config.folder)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .count() as u64;
    if folders >= limit {
        Check::Warn(format!(
            "{folders} folders to watch but fs.inotify.max_user_watches is {limit}: raise it with \
             `sudo sysctl fs.inotify.max_user_watches=524288`, or set watch_mode to \"poll\""
        ))
    } else {
        Check::Ok(format!(
            "{folders} folders to watch, inotify allows {limit}"
        ))
    }
}
