//! The command-line edge: parse, load the config, run a command, map the result to an exit code.

mod args;
mod completions;
mod demo;
mod doctor;
mod exit;
mod init;
mod inspect;
mod listen;
mod progress;
pub mod samples;
mod service;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;

pub use args::{Cli, Command, GlobalArgs, StateCommand, WatchArgs};
pub use exit::Exit;
use progress::{TerminalReporter, Verbosity};

use crate::config::{self, Config, Overrides};
use crate::engine::{Engine, EngineError};
use crate::report::Summary;
use crate::state::lock::{self, InstanceLock};
use crate::state::{Ledger, SqliteStore, Store};

/// Parse the command line and run it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli.global) {
        eprintln!("error: {e}");
        return Exit::Usage.into();
    }
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
        Some(Command::Sync(args)) => match load_config(&cli.global, |o| o.dry_run = args.dry_run) {
            Ok(config) => sync(&cli.global, &config, &cancel).await,
            Err(exit) => exit,
        },
        Some(Command::Watch(args)) => watch_command(&cli.global, &args, &cancel).await,
        Some(Command::Status) => inspect::status(&cli.global),
        Some(Command::Doctor) => match load_config(&cli.global, |_| {}) {
            Ok(config) => doctor::doctor(&cli.global, &config).await,
            Err(exit) => exit,
        },
        Some(Command::Init(args)) => init::init(&cli.global, args.force).await,
        Some(Command::Retry(args)) => inspect::retry(&cli.global, args.path.as_deref()),
        Some(Command::History(args)) => match args.action {
            args::HistoryAction::Export { legacy } => inspect::export_legacy(&cli.global, &legacy),
        },
        Some(Command::State(StateCommand::Push)) => match load_config(&cli.global, |_| {}) {
            Ok(config) => state_push(&cli.global, &config, &cancel).await,
            Err(exit) => exit,
        },
        Some(Command::Service(args::ServiceCommand::Install(args))) => {
            service::install(&cli.global, &args)
        }
        Some(Command::Completions(args)) => completions::completions(args.shell),
        Some(Command::Man) => completions::man(),
        None => watch_command(&cli.global, &WatchArgs::default(), &cancel).await,
    }
}

async fn watch_command(global: &GlobalArgs, args: &WatchArgs, cancel: &CancellationToken) -> Exit {
    match load_config(global, |o| o.poll = args.poll) {
        Ok(config) => watch(global, &config, cancel).await,
        Err(exit) => exit,
    }
}

/// Load the config, with the global flags and `command`'s own over the file and environment.
fn load_config(global: &GlobalArgs, command: impl FnOnce(&mut Overrides)) -> Result<Config, Exit> {
    let mut overrides = global_overrides(global);
    command(&mut overrides);
    match config::load(&overrides, &|name| std::env::var(name).ok()) {
        Ok(loaded) => {
            if let Err(e) = crate::logging::apply(&loaded.config.log) {
                report_error(global, &format!("config error: log_file: {e}"));
                return Err(Exit::Usage);
            }
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

/// What the global flags override in the config.
fn global_overrides(global: &GlobalArgs) -> Overrides {
    Overrides {
        config_file: global.config.clone(),
        folder: global.folder.clone(),
        state_dir: global.state_dir.clone(),
        state_url: global.state_url.clone(),
        max_workers: global.max_workers,
        concurrency: global.concurrency,
        listen: global.listen.clone(),
        log_format: global.log_format.clone(),
        log_file: global.log_file.clone(),
        legacy_history: global.legacy_history.clone(),
        ..Overrides::default()
    }
}

/// The key as the config would give it now: a paused agent reads it again to
/// find a new key in the config file or `api_key_file`.
fn reload_key(overrides: &Overrides) -> Result<crate::config::ApiKey, String> {
    config::load(overrides, &|name| std::env::var(name).ok())
        .map(|loaded| loaded.config.api_key)
        .map_err(|e| e.to_string())
}

/// SIGHUP: read the key again and ask the service at once.
fn reload_on_hangup(engine: Engine, cancel: CancellationToken) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                Some(()) = hangups.recv() => {
                    tracing::info!("SIGHUP: reading the API key again");
                    engine.reload_key();
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (engine, cancel);
}

/// Everything a run needs, set up and checked.
struct Agent {
    engine: Engine,
    reporter: Arc<TerminalReporter>,
    /// The status server and its figures, with `--listen`.
    listening: Option<listen::Listening>,
    _lock: Option<InstanceLock>,
}

impl Agent {
    /// The run stopped for `e`: log it, tell the status server, and pick the exit code.
    fn stopped_by(&self, e: &EngineError) -> Exit {
        if let Some(listening) = &self.listening {
            listening.stopped_by(e);
        }
        // Logged by the engine when it stopped.
        exit_for_error(e)
    }
}

/// Lock and open the state, build the engine, and check the key with the service.
/// A watching agent (`pausing`) starts even when the key is rejected or the
/// service is down: it pauses, says so, and resumes by itself.
async fn start_agent(
    global: &GlobalArgs,
    config: &Config,
    cancel: &CancellationToken,
    pausing: bool,
) -> Result<Agent, Exit> {
    let fail = |message: String, exit: Exit| {
        report_error(global, &message);
        exit
    };
    let (store, lock) = open_state(config).map_err(|m| fail(m, Exit::Usage))?;
    let reporter = Arc::new(TerminalReporter::new(verbosity(global)));
    let ledger = open_ledger(config, cancel)
        .await
        .map_err(|m| fail(m, Exit::SomeFailed))?;
    // With --listen, every report also feeds the status server's figures.
    let metrics = config
        .listen
        .map(|_| Arc::new(crate::metrics::Metrics::new(&config.folder)));
    let reports: Arc<dyn crate::report::Reporter> = match &metrics {
        Some(metrics) => Arc::new(crate::report::Fanout(vec![
            reporter.clone(),
            metrics.clone(),
        ])),
        None => reporter.clone(),
    };
    let mut engine = Engine::new(config, store, reports)
        .map_err(|m| fail(m, Exit::Usage))?
        .with_ledger(ledger);
    if pausing {
        engine = engine.pausing();
        let overrides = global_overrides(global);
        engine.set_key_source(Arc::new(move || reload_key(&overrides)));
    }
    let listening = match (config.listen, metrics) {
        (Some(addr), Some(metrics)) => Some(
            listen::Listening::start(
                global,
                addr,
                &config.listen_hosts,
                metrics,
                &engine,
                &config.folder,
            )
            .await
            .map_err(|m| fail(m, Exit::Usage))?,
        ),
        _ => None,
    };
    tracing::info!(
        "syncing {} to {} (key {}, {})",
        config.folder.display(),
        config.url,
        config.api_key.redacted(),
        engine.concurrency()
    );
    // A dry run sends nothing, not even the key.
    if config.dry_run {
        return Ok(Agent {
            engine,
            reporter,
            listening,
            _lock: lock,
        });
    }
    if let Err(e) = engine.check_access(cancel).await {
        if let Some(listening) = &listening {
            listening.stopped_by(&e);
        }
        return Err(fail(e.to_string(), exit_for_error(&e)));
    }
    Ok(Agent {
        engine,
        reporter,
        listening,
        _lock: lock,
    })
}

/// `tanova-sync sync`: one pass over the folder.
pub async fn sync(global: &GlobalArgs, config: &Config, cancel: &CancellationToken) -> Exit {
    let agent = match start_agent(global, config, cancel, false).await {
        Ok(agent) => agent,
        Err(exit) => return exit,
    };
    let (summary, fatal) = agent.engine.sync_once(cancel).await;
    agent.reporter.done(&summary);
    print_summary(global, &summary);
    match fatal {
        Some(e) => agent.stopped_by(&e),
        None if cancel.is_cancelled() => Exit::Interrupted,
        None if summary.failed > 0 => Exit::SomeFailed,
        None if summary.deferred > 0 => {
            if !global.quiet {
                eprintln!(
                    "{} files were left to other agents that held claims on the same bytes; \
                     run again to check that they were synced",
                    summary.deferred
                );
            }
            Exit::SomeFailed
        }
        None => Exit::Ok,
    }
}

/// `tanova-sync watch`: the initial sync, then events and rescans until a signal.
pub async fn watch(global: &GlobalArgs, config: &Config, cancel: &CancellationToken) -> Exit {
    let agent = match start_agent(global, config, cancel, true).await {
        Ok(agent) => agent,
        Err(exit) => return exit,
    };
    // While the key is rejected or the service is down, probe it until it works again.
    let prober = {
        let (engine, cancel) = (agent.engine.clone(), cancel.clone());
        tokio::spawn(async move { engine.keep_probing(&cancel).await })
    };
    reload_on_hangup(agent.engine.clone(), cancel.clone());
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
        prober.abort();
        return agent.stopped_by(&e);
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
    prober.abort();
    if !global.quiet {
        eprintln!(
            "Stopped. While watching: {} synced, {} duplicates, {} failed.",
            session.synced, session.duplicates, session.failed
        );
    }
    match fatal {
        Some(e) => agent.stopped_by(&e),
        None => Exit::Ok,
    }
}

/// Lock and open the state, and import the Python script's history on first start.
fn open_state(config: &Config) -> Result<(Arc<dyn Store>, Option<InstanceLock>), String> {
    // A dry run changes nothing in the state directory: no lock, no journal, no import.
    if config.dry_run {
        let store = SqliteStore::open_read_only(&config.state_dir)
            .map_err(|e| format!("state error: {e}"))?;
        return Ok((Arc::new(store), None));
    }
    let store = SqliteStore::open(&config.state_dir).map_err(|e| format!("state error: {e}"))?;
    let lock = lock::acquire(&config.state_dir).map_err(|e| e.to_string())?;
    import_histories(&store, config);
    Ok((Arc::new(store), Some(lock)))
}

/// Import every history file of the script that is new, or changed since it was imported.
fn import_histories(store: &SqliteStore, config: &Config) {
    for history in &config.legacy_histories {
        match store.import_legacy(history) {
            Ok(Some(done)) => tracing::info!(
                "imported {} synced checksums from {} ({} in the file, the others were known)",
                done.added,
                done.path.display(),
                done.in_file
            ),
            Ok(None) => {}
            // A broken history must not stop the agent: the server's duplicate check still prevents re-uploads.
            Err(e) => tracing::warn!("legacy history not imported: {e}"),
        }
    }
}

/// The shared ledger when `state_url` is set, once Redis answers; else this machine's state alone.
async fn open_ledger(config: &Config, cancel: &CancellationToken) -> Result<Ledger, String> {
    let ledger = Ledger::connect(
        config.state_url.as_ref(),
        config.lease,
        config.inflight_grace,
        config.retry_count,
        config.retry_delay,
        cancel,
    )
    .await
    .map_err(|e| format!("cannot reach the shared state: {e}"))?;
    if let Ledger::Redis(redis) = &ledger {
        tracing::info!(
            "sharing the synced set with other agents in Redis at {} (this agent is {}; claims last {} ms unrenewed)",
            redis.url(),
            redis.agent(),
            redis.lease().as_millis()
        );
    }
    Ok(ledger)
}

/// `tanova-sync state push`: copy this machine's synced set into the shared ledger.
async fn state_push(global: &GlobalArgs, config: &Config, cancel: &CancellationToken) -> Exit {
    let fail = |message: String, exit: Exit| {
        report_error(global, &message);
        exit
    };
    if config.state_url.is_none() {
        return fail(
            "state push: no shared state to push to: set state_url, TANOVA_STATE_URL or --state-url"
                .to_string(),
            Exit::Usage,
        );
    }
    let store = match SqliteStore::open(&config.state_dir) {
        Ok(store) => store,
        Err(e) => return fail(format!("state error: {e}"), Exit::Usage),
    };
    import_histories(&store, config);
    let records = match store.synced_records() {
        Ok(records) => records,
        Err(e) => return fail(format!("state error: {e}"), Exit::SomeFailed),
    };
    let ledger = match open_ledger(config, cancel).await {
        Ok(Ledger::Redis(redis)) => redis,
        Ok(Ledger::Local) => unreachable!("state_url is set"),
        Err(m) => return fail(m, Exit::SomeFailed),
    };
    let added = match ledger.push(&records).await {
        Ok(added) => added,
        Err(e) => return fail(format!("state push: {e}"), Exit::SomeFailed),
    };
    let total = ledger.synced_count().await.ok();
    if global.json {
        let out = serde_json::json!({
            "pushed": records.len(),
            "new": added,
            "ledger_synced": total,
            "state_url": ledger.url().redacted(),
        });
        println!("{out}");
    } else if !global.quiet {
        println!(
            "Pushed {} synced checksums from {} to Redis at {}: {added} were new to it{}.",
            records.len(),
            store.path().display(),
            ledger.url(),
            total.map_or(String::new(), |n| format!(", which now holds {n}"))
        );
    }
    Exit::Ok
}

fn exit_for_error(e: &EngineError) -> Exit {
    match e {
        EngineError::KeyRejected(_) | EngineError::NoUploadPermission { .. } => Exit::Usage,
        EngineError::Unreachable(_)
        | EngineError::Misdirected(_)
        | EngineError::State(_)
        | EngineError::Ledger(_) => Exit::SomeFailed,
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

/// Start logging as the flags say; the config's `log_format` / `log_file` apply once it is loaded.
fn init_logging(global: &GlobalArgs) -> Result<(), String> {
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
    let settings = crate::logging::LogSettings {
        format: match global.log_format.as_deref() {
            Some(format) => crate::logging::LogFormat::parse(format)?,
            None => crate::logging::LogFormat::Text,
        },
        file: global.log_file.clone(),
    };
    crate::logging::init(filter, &settings).map_err(|e| format!("--log-file: {e}"))
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
