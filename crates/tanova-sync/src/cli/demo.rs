//! `tanova-sync demo`: the real sync, over real HTTP, against a local emulator, with no account.

use tokio_util::sync::CancellationToken;

use tanova_emulator::{Emulator, Knobs};

use super::{report_error, samples, sync, Exit, GlobalArgs};
use crate::config::{self, ApiKey, Config};

pub async fn run(
    global: &GlobalArgs,
    args: &super::args::DemoArgs,
    cancel: &CancellationToken,
) -> Exit {
    match demo(global, args, cancel).await {
        Ok(exit) => exit,
        Err(message) => {
            report_error(global, &message);
            Exit::SomeFailed
        }
    }
}

async fn demo(
    global: &GlobalArgs,
    args: &super::args::DemoArgs,
    cancel: &CancellationToken,
) -> Result<Exit, String> {
    let knobs = Knobs {
        upload_latency_ms: args.latency_ms,
        capacity: args.capacity,
        ..Knobs::default()
    };
    let emulator = Emulator::start(knobs.clone())
        .await
        .map_err(|e| format!("cannot start the emulator on 127.0.0.1: {e}"))?;
    let work = tempfile::Builder::new()
        .prefix("tanova-demo-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary folder: {e}"))?;
    let folder = demo_folder(global, args, work.path())?;
    let config = demo_config(global, &emulator, &knobs, folder.clone(), work.path())?;
    eprintln!(
        "Demo: a local Tanova emulator at {} ({} ms per upload, {} at once, 429 beyond).\n\
         Syncing {} with the real agent over HTTP; nothing leaves this machine.\n",
        emulator.url(),
        args.latency_ms,
        args.capacity,
        folder.display()
    );
    let exit = sync(global, &config, cancel).await;
    let stats = emulator.stats();
    if global.json || exit != Exit::Ok {
        return Ok(exit);
    }
    println!(
        "\nThe emulator received {} uploads of {} distinct CVs ({} duplicate uploads), at most {} at once.",
        stats.uploads, stats.unique_checksums, stats.duplicate_uploads, stats.peak_in_flight
    );
    println!(
        "\nRunning the same sync again: every CV is already synced, so nothing is read or sent.\n"
    );
    let again = sync(global, &config, cancel).await;
    println!(
        "\nNext: `tanova-sync init` sets up your folder and key; then `tanova-sync` syncs them and keeps watching.\n\
         See `tanova-sync --help` for every option."
    );
    Ok(again)
}

/// `--folder`, or sample CVs written under `work`.
fn demo_folder(
    global: &GlobalArgs,
    args: &super::args::DemoArgs,
    work: &std::path::Path,
) -> Result<std::path::PathBuf, String> {
    let folder = match &global.settings.folder_path {
        Some(folder) => std::path::PathBuf::from(folder),
        None => {
            let folder = work.join("CV inbox");
            samples::write_samples(&folder, args.files)
                .map_err(|e| format!("cannot write sample CVs in {}: {e}", folder.display()))?;
            folder
        }
    };
    if !folder.is_dir() {
        return Err(format!("--folder: {} is not a directory", folder.display()));
    }
    Ok(folder)
}

/// The defaults for syncing `folder` to the emulator, with the flags that apply
/// and quick retries (the emulator answers at once).
fn demo_config(
    global: &GlobalArgs,
    emulator: &Emulator,
    knobs: &Knobs,
    folder: std::path::PathBuf,
    work: &std::path::Path,
) -> Result<Config, String> {
    let state_dir = global
        .settings
        .state_dir
        .as_ref()
        .map_or_else(|| work.join("state"), std::path::PathBuf::from);
    let url = config::parse_url(&emulator.url(), false)?;
    Ok(Config {
        retry_delay: std::time::Duration::from_millis(200),
        concurrency: config::Concurrency::Adaptive {
            ceiling: global
                .settings
                .max_workers
                .map_or(config::DEFAULT_CEILING, |n| n as usize),
        },
        listen: global
            .settings
            .listen
            .as_deref()
            .map(|addr| crate::serve::parse_listen(addr, false))
            .transpose()?,
        ..Config::for_folder(folder, ApiKey::new(knobs.api_key.clone()), url, state_dir)
    })
}
