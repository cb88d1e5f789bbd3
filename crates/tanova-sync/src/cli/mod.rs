//! The command-line edge: parse, load the config, run a command, map the result to an exit code.

/// A line on stderr that never panics. `eprintln!` panics when stderr is
/// gone (the terminal closed, the pipe's reader dead): a watching agent then
/// lost its Ctrl+C/SIGTERM handler, and with it any way to stop but SIGKILL.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod args;
mod audit;
mod completions;
mod demo;
mod doctor;
mod exit;
mod forget;
mod healthcheck;
mod init;
mod inspect;
mod progress;
pub mod samples;
mod service;
mod setup;
mod ui;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;

pub use args::{Cli, Command, GlobalArgs, StateCommand, WatchArgs};
pub use exit::Exit;
use progress::{TerminalReporter, Verbosity};

use crate::agent::{Agent, AgentError, Mode, PushError};
use crate::config::{self, Config, Overrides};
use crate::engine::{Engine, EngineError};

/// Parse the command line and run it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli.global) {
        say!("error: {e}");
        return Exit::Usage.into();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("error: cannot start the async runtime: {e}");
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
        Some(Command::Ui(args)) => ui::ui(&cli.global, &args, &cancel).await,
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
        Some(Command::Forget(args)) => match load_config(&cli.global, |_| {}) {
            Ok(config) => forget::forget(&cli.global, &config, &args, &cancel).await,
            Err(exit) => exit,
        },
        Some(Command::Audit(args)) => match load_config(&cli.global, |_| {}) {
            Ok(config) => audit::audit(&cli.global, &config, &args, &cancel).await,
            Err(exit) => exit,
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
        Some(Command::Healthcheck(args)) => {
            let listen = cli
                .global
                .settings
                .listen
                .clone()
                .or_else(|| std::env::var("TANOVA_LISTEN").ok());
            healthcheck::healthcheck(args.url.as_deref(), listen.as_deref()).await
        }
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
                let field = match loaded.config.log.file {
                    Some(_) => "log_file",
                    None => "log_target",
                };
                report_error(global, &format!("config error: {field}: {e}"));
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
        flags: global.settings.clone(),
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

/// Open the agent, say where its status server listens (and leave the
/// console's URL for `ui` in the state directory), and check the key.
async fn start_agent(
    global: &GlobalArgs,
    config: &Config,
    mode: Mode,
    reporter: Arc<TerminalReporter>,
    cancel: &CancellationToken,
) -> Result<(Agent, Option<ui::ConsoleUrlFile>), Exit> {
    let fail = |e: AgentError| {
        report_error(global, &e.to_string());
        exit_for_agent_error(&e)
    };
    let agent = Agent::open(config, mode, reporter, cancel)
        .await
        .map_err(fail)?;
    if let (Some(addr), false) = (agent.status_addr(), global.quiet) {
        // Tests and scripts read the port from this line when they asked for port 0.
        say!("listening on http://{addr} (status page; /health, /metrics)");
    }
    let url_file = match (agent.console_url(), config.dry_run) {
        (Some(url), false) => ui::ConsoleUrlFile::write(&config.state_dir, &url),
        _ => None,
    };
    agent.connect(cancel).await.map_err(fail)?;
    Ok((agent, url_file))
}

/// `tanova-sync sync`: one pass over the folder.
pub async fn sync(global: &GlobalArgs, config: &Config, cancel: &CancellationToken) -> Exit {
    let reporter = Arc::new(TerminalReporter::new(verbosity(global), global.json));
    let (agent, _url_file) =
        match start_agent(global, config, Mode::Once, reporter.clone(), cancel).await {
            Ok(started) => started,
            Err(exit) => return exit,
        };
    let (summary, fatal) = agent.sync(cancel).await;
    reporter.summary(&summary);
    match fatal {
        Some(e) => exit_for_error(&e),
        None if cancel.is_cancelled() => Exit::Interrupted,
        None if summary.failed > 0 => Exit::SomeFailed,
        None if summary.deferred > 0 => {
            if !global.quiet {
                say!(
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
    watch_with(global, config, cancel, &|_| {}).await
}

/// `watch`, telling `started` the console's URL (with `listen`) once the agent runs.
async fn watch_with(
    global: &GlobalArgs,
    config: &Config,
    cancel: &CancellationToken,
    started: &dyn Fn(&str),
) -> Exit {
    let reporter = Arc::new(TerminalReporter::new(verbosity(global), global.json));
    let (agent, _url_file) =
        match start_agent(global, config, Mode::Watch, reporter.clone(), cancel).await {
            Ok(started) => started,
            Err(exit) => return exit,
        };
    if let Some(url) = agent.console_url() {
        started(&url);
    }
    let overrides = global_overrides(global);
    agent.set_key_source(Arc::new(move || reload_key(&overrides)));
    reload_on_hangup(agent.engine().clone(), cancel.clone());
    let watched = agent.watch(cancel).await;
    match &watched.session {
        // It never began watching: the initial pass is all there is to say.
        None => reporter.summary(&watched.initial),
        Some(session) if !global.quiet => say!(
            "Stopped. While watching: {} synced, {} duplicates, {} failed.",
            session.synced,
            session.duplicates,
            session.failed
        ),
        Some(_) => {}
    }
    match &watched.fatal {
        Some(e) => exit_for_error(e),
        None => Exit::Ok,
    }
}

/// `tanova-sync state push`: copy this machine's synced set into the shared ledger.
async fn state_push(global: &GlobalArgs, config: &Config, cancel: &CancellationToken) -> Exit {
    let pushed = match crate::agent::push_state(config, cancel).await {
        Ok(pushed) => pushed,
        Err(e) => {
            report_error(global, &e.to_string());
            return match e {
                PushError::NoLedger => Exit::Usage,
                _ => Exit::SomeFailed,
            };
        }
    };
    if global.json {
        match serde_json::to_string(&pushed) {
            Ok(out) => println!("{out}"),
            Err(e) => tracing::error!("cannot print the result: {e}"),
        }
    } else if !global.quiet {
        println!(
            "Pushed {} synced checksums from {} to Redis at {}: {} were new to it{}.",
            pushed.pushed,
            pushed.state_file.display(),
            pushed.state_url,
            pushed.new,
            pushed
                .ledger_synced
                .map_or(String::new(), |n| format!(", which now holds {n}"))
        );
    }
    Exit::Ok
}

fn exit_for_agent_error(e: &AgentError) -> Exit {
    match e {
        AgentError::Access(e) => exit_for_error(e),
        AgentError::Ledger(_) => Exit::SomeFailed,
        AgentError::State(_)
        | AgentError::Lock(_)
        | AgentError::Client(_)
        | AgentError::Listen { .. } => Exit::Usage,
    }
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

/// Errors go to stderr; with `--json`, also as `{"error": …}` on stdout so scripts see them.
fn report_error(global: &GlobalArgs, message: &str) {
    say!("error: {message}");
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
        format: match global.settings.log_format.as_deref() {
            Some(format) => crate::logging::LogFormat::parse(format)?,
            None => crate::logging::LogFormat::Text,
        },
        file: global
            .settings
            .log_file
            .as_ref()
            .map(std::path::PathBuf::from),
        target: crate::logging::LogTarget::Stderr,
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
                say!("stopping: letting uploads in flight finish (press Ctrl+C again to quit now)");
                cancel.cancel();
            } else {
                say!("quitting now");
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
