//! Commands that read or tidy the local state without syncing: `status`, `retry`, `history export`.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::{report_error, Exit, GlobalArgs};
use crate::config::{self, Overrides, SettingFlags};
use crate::state::sqlite::DB_FILE;
use crate::state::{legacy, Failure, SqliteStore, Store};

/// Where the state lives, from the flag, the environment or the config file.
fn state_dir(global: &GlobalArgs) -> Result<PathBuf, Exit> {
    let overrides = Overrides {
        config_file: global.config.clone(),
        flags: SettingFlags {
            state_dir: global.settings.state_dir.clone(),
            ..SettingFlags::default()
        },
        ..Overrides::default()
    };
    config::state_dir(&overrides, &|name| std::env::var(name).ok()).map_err(|e| {
        report_error(global, &format!("config error: {e}"));
        Exit::Usage
    })
}

/// Open an existing state; a missing one is not created by a command that only looks.
fn open_existing(global: &GlobalArgs, dir: &Path) -> Result<SqliteStore, Exit> {
    if !dir.join(DB_FILE).exists() {
        report_error(
            global,
            &format!(
                "no state in {} yet: nothing has been synced with this state directory",
                dir.display()
            ),
        );
        return Err(Exit::Usage);
    }
    SqliteStore::open(dir).map_err(|e| {
        report_error(global, &format!("state error: {e}"));
        Exit::Usage
    })
}

#[derive(Serialize)]
struct Status {
    state_dir: String,
    synced: u64,
    last_upload_at: Option<String>,
    failed: usize,
    failures: Vec<Failure>,
    /// Files a suppression rule kept from upload, as last seen.
    suppressed: u64,
    /// Suppression rules in this machine's state (`forget --list` adds the ledger's).
    rules: usize,
}

/// `tanova-sync status`.
pub fn status(global: &GlobalArgs) -> Exit {
    let run = || -> Result<Exit, Exit> {
        let dir = state_dir(global)?;
        let store = open_existing(global, &dir)?;
        let fail = |e: crate::state::StateError| {
            report_error(global, &format!("state error: {e}"));
            Exit::Usage
        };
        let failures = store.failures().map_err(fail)?;
        let status = Status {
            state_dir: dir.display().to_string(),
            synced: store.synced_count().map_err(fail)?,
            last_upload_at: store.last_synced_at().map_err(fail)?.map(|secs| {
                humantime::format_rfc3339_seconds(
                    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64),
                )
                .to_string()
            }),
            failed: failures.len(),
            failures,
            suppressed: store.suppressed_count().map_err(fail)?,
            rules: store.suppression_rules().map_err(fail)?.len(),
        };
        if global.json {
            println!("{}", serde_json::to_string(&status).expect("serializable"));
        } else {
            print_status(&status);
        }
        Ok(if status.failed > 0 {
            Exit::SomeFailed
        } else {
            Exit::Ok
        })
    };
    run().unwrap_or_else(|exit| exit)
}

fn print_status(status: &Status) {
    println!("State: {}", status.state_dir);
    println!(
        "Synced CVs: {} (last upload: {})",
        status.synced,
        status.last_upload_at.as_deref().unwrap_or("none yet")
    );
    if status.suppressed > 0 || status.rules > 0 {
        println!(
            "Suppressed: {} files, by {} rules (`tanova-sync forget --list`)",
            status.suppressed, status.rules
        );
    }
    println!("Failed: {}", status.failed);
    for f in &status.failures {
        let runs = if f.attempts == 1 {
            "1 run".to_string()
        } else {
            format!("{} runs", f.attempts)
        };
        let kind = if f.permanent {
            "refused, held until `tanova-sync retry`"
        } else {
            "retried on the next run"
        };
        println!("  {}: {} ({runs}; {kind})", f.path, f.reason);
    }
    if status.failed > 0 {
        println!("`tanova-sync retry --all` tries every failed file again on the next run.");
    }
}

/// `tanova-sync retry PATH | --all`.
pub fn retry(global: &GlobalArgs, path: Option<&Path>) -> Exit {
    let run = || -> Result<Exit, Exit> {
        let dir = state_dir(global)?;
        let store = open_existing(global, &dir)?;
        let target = path.map(|p| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
                .to_string()
        });
        let cleared = store.clear_failures(target.as_deref()).map_err(|e| {
            report_error(global, &format!("state error: {e}"));
            Exit::Usage
        })?;
        match (&target, cleared) {
            (Some(t), 0) => {
                report_error(
                    global,
                    &format!("no failed file at or under {t}; `tanova-sync status` lists them"),
                );
                return Ok(Exit::SomeFailed);
            }
            _ => println!(
                "{cleared} failed file{} will be tried again on the next run or rescan.",
                if cleared == 1 { "" } else { "s" }
            ),
        }
        Ok(Exit::Ok)
    };
    run().unwrap_or_else(|exit| exit)
}

/// `tanova-sync history export --legacy FILE`.
pub fn export_legacy(global: &GlobalArgs, file: &Path) -> Exit {
    let run = || -> Result<Exit, Exit> {
        let dir = state_dir(global)?;
        let store = open_existing(global, &dir)?;
        let written = store
            .synced_checksums()
            .and_then(|sums| legacy::write(file, &sums).map(|()| sums.len()));
        match written {
            Ok(n) => {
                println!(
                    "Wrote {n} checksums to {} (the Python script's history format).",
                    file.display()
                );
                Ok(Exit::Ok)
            }
            Err(e) => {
                report_error(global, &e.to_string());
                Ok(Exit::SomeFailed)
            }
        }
    };
    run().unwrap_or_else(|exit| exit)
}
