//! The command-line edge: parse, load the config, run a command, map the result to an exit code.

mod args;
mod demo;
mod exit;
mod progress;
pub mod samples;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;

pub use args::{Cli, Command, GlobalArgs, WatchArgs};
pub use exit::Exit;
use progress::{TerminalReporter, Verbosity};

use crate::config::{self, Config, Overrides};
use crate::engine::{Engine, EngineError};
use crate::report::Summary;
use crate::state::lock::{self, InstanceLock};
use crate::state::{legacy, SqliteStore, Store};

/// Parse the command line and run it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Usage.into();
        }
    };
    let exit = runtime.block_on(run(cli));
    // In-flight blocking reads (hashing) need not finish once the run is over.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    exit.into()
}

async fn run(cli: Cli) -> Exit {
    let cancel = CancellationToken::new();
    watch_for_interrupt(cancel.clone());
    match cli.command {
        Some(Command::Demo(args)) => demo::run(&cli.global, &args, &cancel).await,
        Some(Command::Sync) => match load_config(&cli.global, false) {
            Ok(config) => sync(&cli.global, &config, &cancel).await,
            Err(exit) => exit,
        },
        Some(Command::Watch(args)) => watch_command(&cli.global, &args, &cancel).await,
        None => watch_command(&cli.global, &WatchArgs::default(), &cancel).await,
    }
}

async fn watch_command(global: &GlobalArgs, args: &WatchArgs, cancel: &CancellationToken) -> Exit {
    match load_config(global, args.poll) {
        Ok(config) => watch(global, &config, cancel).await,
        Err(exit) => exit,
    }
}

fn load_config(global: &GlobalArgs, poll: bool) -> Result<Config, Exit> {
    let overrides = Overrides {
        config_file: global.config.clone(),
        folder: global.folder.clone(),
        state_dir: global.state_dir.clone(),
        max_workers: global.max_workers,
        concurrency: global.concurrency,
        poll,
    };
    match config::load(&overrides, &|name| std::env::var(name).ok()) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                tracing::warn!("{warning}");
            }
            Ok(loaded.config)
        }
        Err(e) => {
            report_error(global, &format!("config error: {e}"));
            Err(Exit::Usage)
        }
    }
}

/// Everything a run needs, set up and checked.
struct Agent {
    engine: Engine,
    reporter: Arc<TerminalReporter>,
    _lock: InstanceLock,
}

/// Lock and open the state, build the engine, and check the key with the service.
async fn start_agent(
    global: &GlobalArgs,
    config: &Config,
    cancel: &CancellationToken,
) -> Result<Agent, Exit> {
    let fail = |message: String, exit: Exit| {
        report_error(global, &message);
        exit
    };
    let (store, lock) = open_state(config).map_err(|m| fail(m, Exit::Usage))?;
    let reporter = Arc::new(TerminalReporter::new(verbosity(global)));
    let engine = Engine::new(config, store, reporter.clone()).map_err(|m| fail(m, Exit::Usage))?;
    tracing::info!(
        "syncing {} to {} (key {}, {})",
        config.folder.display(),
        config.url,
        config.api_key.redacted(),
        engine.concurrency()
    );
    if let Err(e) = engine.check_access(cancel).await {
        return Err(fail(e.to_string(), exit_for_error(&e)));
    }
    Ok(Agent {
        engine,
        reporter,
        _lock: lock,
    })
}

/// `tanova-sync sync`: one pass over the folder.
pub async fn sync(global: &GlobalArgs, config: &Config, cancel: &CancellationToken) -> Exit {
    let agent = match start_agent(global, config, cancel).await {
        Ok(agent) => agent,
        Err(exit) => return exit,
    };
    let (summary, fatal) = agent.engine.sync_once(cancel).await;
    agent.reporter.done(&summary);
    print_summary(global, &summary);
    match fatal {
        Some(e) => {
            tracing::error!("{e}");
            exit_for_error(&e)
        }
        None if cancel.is_cancelled() => Exit::Interrupted,
        None if summary.failed > 0 => Exit::SomeFailed,
        None => Exit::Ok,
    }
}

/// `tanova-sync watch`: the initial sync, then events and rescans until a signal.
pub async fn watch(global: &GlobalArgs, config: &Config, cancel: &CancellationToken) -> Exit {
    let agent = match start_agent(global, config, cancel).await {
        Ok(agent) => agent,
        Err(exit) => return exit,
    };
    // Watch from before the initial scan, so nothing written meanwhile is missed;
    // what it finds waits in the channel until the initial sync is done.
    let (tx, rx) = tokio::sync::mpsc::channel(crate::engine::ITEM_QUEUE);
    let discovery = tokio::spawn(crate::watch::run(
        agent.engine.clone(),
        config.folder.clone(),
        config.watch.clone(),
        tx,
        cancel.clone(),
    ));
    let (initial, fatal) = agent.engine.sync_once(cancel).await;
    agent.reporter.done(&initial);
    print_summary(global, &initial);
    if let Some(e) = fatal {
        cancel.cancel();
        let _ = discovery.await;
        tracing::error!("{e}");
        return exit_for_error(&e);
    }
    if !cancel.is_cancelled() {
        let how = match config.watch.mode {
            crate::watch::WatchMode::Events => "file-system events".to_string(),
            crate::watch::WatchMode::Poll => {
                format!("polling every {}s", config.watch.poll_every.as_secs_f64())
            }
        };
        eprintln!(
            "Watching {} for new CVs ({how}); press Ctrl+C to stop.",
            config.folder.display()
        );
    }
    agent.reporter.go_live();
    let (session, fatal) = agent.engine.pipeline(rx, cancel).await;
    let _ = discovery.await;
    if !global.quiet {
        eprintln!(
            "Stopped. While watching: {} synced, {} duplicates, {} failed.",
            session.synced, session.duplicates, session.failed
        );
    }
    match fatal {
        Some(e) => {
            tracing::error!("{e}");
            exit_for_error(&e)
        }
        None => Exit::Ok,
    }
}

/// Lock and open the state, and import the Python script's history on first start.
fn open_state(config: &Config) -> Result<(Arc<dyn Store>, InstanceLock), String> {
    let store = SqliteStore::open(&config.state_dir).map_err(|e| format!("state error: {e}"))?;
    let lock = lock::acquire(&config.state_dir).map_err(|e| e.to_string())?;
    let history = config.state_dir.join(legacy::HISTORY_FILE);
    match store.import_legacy_once(&history) {
        Ok(Some(n)) => tracing::info!("imported {n} synced checksums from {}", history.display()),
        Ok(None) => {}
        // A broken history must not stop the agent: the server's duplicate check still prevents re-uploads.
        Err(e) => tracing::warn!("legacy history not imported: {e}"),
    }
    Ok((Arc::new(store), lock))
}

fn exit_for_error(e: &EngineError) -> Exit {
    match e {
        EngineError::KeyRejected(_) | EngineError::NoUploadPermission { .. } => Exit::Usage,
        EngineError::Unreachable(_) | EngineError::State(_) => Exit::SomeFailed,
    }
}

fn print_summary(global: &GlobalArgs, summary: &Summary) {
    let mut out = std::io::stdout().lock();
    let written = if global.json {
        serde_json::to_writer(&mut out, summary)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else if global.quiet {
        Ok(())
    } else {
        progress::write_summary(&mut out, summary)
    };
    if let Err(e) = written {
        tracing::error!("cannot print the summary: {e}");
    }
}

/// Errors go to stderr; with `--json`, also as `{"error": …}` on stdout so scripts see them.
fn report_error(global: &GlobalArgs, message: &str) {
    eprintln!("error: {message}");
    if global.json {
        println!("{}", serde_json::json!({ "error": message }));
    }
}

fn verbosity(global: &GlobalArgs) -> Verbosity {
    match (global.quiet, global.verbose) {
        (true, _) => Verbosity::Quiet,
        (false, 0) => Verbosity::Normal,
        (false, _) => Verbosity::Files,
    }
}

fn init_logging(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_env("TANOVA_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!("warn,tanova_sync={level},tanova_emulator=warn"))
    });
    // No timestamps: a terminal user does not need them and journald adds its own.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
}

/// First Ctrl+C (or SIGTERM): stop taking new work. Second: exit at once.
fn watch_for_interrupt(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            if !wait_for_signal().await {
                return;
            }
            signals += 1;
            if signals == 1 {
                eprintln!(
                    "stopping: letting uploads in flight finish (press Ctrl+C again to quit now)"
                );
                cancel.cancel();
            } else {
                eprintln!("quitting now");
                std::process::exit(Exit::Interrupted as i32);
            }
        }
    });
}

/// Wait for SIGINT or SIGTERM; false when signals cannot be watched.
async fn wait_for_signal() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return false;
        };
        tokio::select! {
            _ = int.recv() => true,
            _ = term.recv() => true,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.is_ok()
    }
}
