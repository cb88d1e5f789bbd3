//! The agent: one folder's state, ledger, engine and status server, assembled
//! and checked; it syncs once or watches until shut down. The CLI, `demo` and
//! tests drive it; it never prints (progress goes to its [`Reporter`]). A
//! watching agent takes the console's actions through [`Controls`].

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Notify;

use tokio_util::sync::CancellationToken;

use crate::access::KeySource;
use crate::config::Config;
pub use crate::engine::EngineError;
use crate::engine::{Engine, ITEM_QUEUE};
use crate::metrics::{Gauges, Metrics};
use crate::report::{Reporter, Summary};
use crate::serve::{Actions, Sources, StatusServer};
use crate::state::lock::{self, InstanceLock};
use crate::state::redis::RedisLedger;
use crate::state::{Ledger, SqliteStore, StateError, Store};

/// How the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One pass over the folder: a rejected key or an outage ends it.
    Once,
    /// Initial pass, then events and rescans: a rejected key or an outage pauses it.
    Watch,
}

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state cannot be opened, or another agent holds it.
    #[error("state error: {0}")]
    State(StateError),
    #[error("{0}")]
    Lock(StateError),
    /// The shared ledger does not answer.
    #[error("cannot reach the shared state: {0}")]
    Ledger(StateError),
    /// The HTTP client cannot be built (a key that is not a header value, a TLS setup).
    #[error(transparent)]
    Client(#[from] crate::api::ClientError),
    #[error("cannot listen on {addr} (--listen): {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The service refused the key or could not be reached (one-shot runs only).
    #[error(transparent)]
    Access(EngineError),
}

/// A running agent: drop it to release the state and stop the status server.
pub struct Agent {
    engine: Engine,
    config: Config,
    reporter: Arc<dyn Reporter>,
    status: Option<StatusServer>,
    /// The console asks for a rescan now.
    rescan: Arc<Notify>,
    /// The state, for pruning personal data (`privacy_retain_days`); `None` in a dry run.
    retained: Option<Arc<SqliteStore>>,
    _lock: Option<InstanceLock>,
}

impl Agent {
    /// Lock and open the state (importing the script's history), connect the
    /// ledger, build the engine, and start the status server with `listen`.
    /// Nothing is sent to the service yet: see [`Agent::connect`].
    pub async fn open(
        config: &Config,
        mode: Mode,
        reporter: Arc<dyn Reporter>,
        shutdown: &CancellationToken,
    ) -> Result<Agent, AgentError> {
        crate::privacy::redact::set_redact_logs(config.privacy.redact_logs);
        let (store, retained, lock) = open_state(config)?;
        if let Some(state) = &retained {
            prune_personal(state, config);
        }
        let store_for_actions = store.clone();
        let ledger = open_ledger(config, shutdown)
            .await
            .map_err(AgentError::Ledger)?;
        if retained.is_some() {
            prune_shared(&ledger, config).await;
        }
        // With --listen, every report also feeds the status server's figures.
        let metrics = config
            .listen
            .map(|_| Arc::new(Metrics::new(&config.folder)));
        // The agent's own reports (watching) go the same way, so the figures hear them too.
        let reports: Arc<dyn Reporter> = match &metrics {
            Some(metrics) => Arc::new(crate::report::Fanout(vec![
                reporter.clone(),
                metrics.clone(),
            ])),
            None => reporter.clone(),
        };
        let mut engine = Engine::new(config, store, reports.clone())
            .map_err(AgentError::Client)?
            .with_ledger(ledger);
        if mode == Mode::Watch {
            engine = engine.pausing();
        }
        let rescan = Arc::new(Notify::new());
        // Only a watching agent acts: a one-shot sync ends before a retry or a rescan would run.
        let actions = (mode == Mode::Watch && !config.dry_run).then(|| {
            Arc::new(Controls {
                engine: engine.clone(),
                store: store_for_actions,
                root: config.folder.clone(),
                rescan: rescan.clone(),
            }) as Arc<dyn Actions>
        });
        let status = match (config.listen, metrics) {
            (Some(addr), Some(metrics)) => {
                Some(serve_status(addr, config, metrics, &engine, actions).await?)
            }
            _ => None,
        };

        tracing::info!(
            "syncing {} to {} (key {}, {})",
            config.folder.display(),
            config.url,
            config.api_key.redacted(),
            engine.concurrency()
        );
        Ok(Agent {
            engine,
            config: config.clone(),
            reporter: reports,
            status,
            rescan,
            retained,
            _lock: lock,
        })
    }

    /// The console's URL with its token (`--listen`), as `ui` prints it.
    pub fn console_url(&self) -> Option<String> {
        self.status.as_ref().map(StatusServer::console_url)
    }

    /// Check the key with the service. A watching agent starts even when it is
    /// rejected or the service is down: it pauses, says so, and resumes by itself.
    /// A dry run sends nothing, not even the key.
    pub async fn connect(&self, shutdown: &CancellationToken) -> Result<(), AgentError> {
        if self.config.dry_run {
            return Ok(());
        }
        self.engine
            .check_access(shutdown)
            .await
            .map_err(AgentError::Access)
    }

    /// Where the status server listens, with `listen`.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status.as_ref().map(StatusServer::addr)
    }

    /// Where a paused agent reads a new key (the config file, `api_key_file`).
    pub fn set_key_source(&self, source: KeySource) {
        self.engine.set_key_source(source);
    }

    /// Read the key again and ask the service at once (SIGHUP).
    pub fn reload_key(&self) {
        self.engine.reload_key();
    }

    /// One pass over the folder. Returns the summary, and why the run stopped
    /// early if it did.
    pub async fn sync(&self, shutdown: &CancellationToken) -> (Summary, Option<EngineError>) {
        self.engine.sync_once(shutdown).await
    }

    /// The initial pass, then events and rescans until `shutdown`. The reporter
    /// hears the initial summary through [`Reporter::watching`] when watching begins.
    pub async fn watch(&self, shutdown: &CancellationToken) -> Watched {
        // While the key is rejected or the service is down, probe it until it works again.
        let prober = {
            let (engine, shutdown) = (self.engine.clone(), shutdown.clone());
            tokio::spawn(async move { engine.keep_probing(&shutdown).await })
        };
        // Watch from before the initial scan, so nothing written meanwhile is missed;
        // what it finds waits in the channel until the initial sync is done.
        let (tx, rx) = tokio::sync::mpsc::channel(ITEM_QUEUE);
        let (watching, watched) = tokio::sync::oneshot::channel();
        let discovery = tokio::spawn(crate::watch::run(
            self.engine.clone(),
            self.config.folder.clone(),
            self.config.watch.clone(),
            tx,
            self.rescan.clone(),
            watching,
            shutdown.clone(),
        ));
        let pruner = self.retained.clone().map(|state| {
            let (config, shutdown) = (self.config.clone(), shutdown.clone());
            tokio::spawn(async move { prune_daily(&state, &config, &shutdown).await })
        });
        // The watch is in place before the walk starts (or could not be, and polling covers it).
        let _ = watched.await;
        let (initial, fatal) = self.engine.sync_once(shutdown).await;
        let watched = if fatal.is_some() || shutdown.is_cancelled() {
            shutdown.cancel();
            // Nobody takes what discovery found meanwhile: let its sends fail
            // rather than wait on a full queue (a stop during the first pass hung so).
            drop(rx);
            Watched {
                initial,
                session: None,
                fatal,
            }
        } else {
            self.reporter.watching(&initial, &self.config.watch);
            let (session, fatal) = self.engine.pipeline(rx, shutdown).await;
            if fatal.is_some() {
                // Discovery waits for events until shut down: without this, an
                // agent whose pipeline stopped (a redirect to another host)
                // stayed up doing nothing, and its service manager never knew.
                shutdown.cancel();
            }
            Watched {
                initial,
                session: Some(session),
                fatal,
            }
        };
        let _ = discovery.await;
        prober.abort();
        if let Some(pruner) = pruner {
            pruner.abort();
        }
        watched
    }

    /// The engine, for what drives it from outside (a SIGHUP handler).
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Why uploads cannot go out now (a rejected key, an unreachable service), if they cannot.
    pub fn blocked(&self) -> Option<crate::access::Blocked> {
        self.engine.blocked()
    }
}

/// How a watch ended.
#[derive(Debug)]
pub struct Watched {
    /// The initial pass over the folder.
    pub initial: Summary,
    /// What was done while watching; `None` when watching never began.
    pub session: Option<Summary>,
    /// Why it stopped, if not by shutdown.
    pub fatal: Option<EngineError>,
}

/// Serve the figures and the engine's limiter at `addr`.
async fn serve_status(
    addr: SocketAddr,
    config: &Config,
    metrics: Arc<Metrics>,
    engine: &Engine,
    actions: Option<Arc<dyn Actions>>,
) -> Result<StatusServer, AgentError> {
    let limiter_of = engine.clone();
    let sources = Sources {
        metrics,
        folder: config.folder.clone(),
        gauges: Arc::new(move || {
            let limiter = limiter_of.limiter();
            Gauges {
                in_flight: limiter.in_flight(),
                limit: limiter.limit(),
            }
        }),
        actions,
    };
    StatusServer::start(addr, sources, &config.listen_hosts)
        .await
        .map_err(|source| AgentError::Listen { addr, source })
}

/// The console's actions on a watching agent, through the library code the
/// CLI uses (`retry` clears failures in the store, as `tanova-sync retry` does).
struct Controls {
    engine: Engine,
    store: Arc<dyn Store>,
    root: PathBuf,
    rescan: Arc<Notify>,
}

impl Controls {
    /// The file at `shown` (relative to the folder, as the console lists it),
    /// refused when it would leave the folder.
    fn within(&self, shown: &str) -> Result<String, String> {
        let rel = Path::new(shown);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(format!("{shown:?} is not a file in the folder"));
        }
        Ok(self.root.join(rel).display().to_string())
    }
}

impl Actions for Controls {
    fn retry(&self, shown: Option<&str>) -> Result<usize, String> {
        let target = shown.map(|s| self.within(s)).transpose()?;
        let cleared = self
            .store
            .clear_failures(target.as_deref())
            .map_err(|e| format!("state error: {e}"))?;
        tracing::info!("the console cleared {cleared} failure(s); rescanning to try them again");
        self.rescan.notify_one();
        Ok(cleared)
    }

    fn hold(&self, held: bool) {
        self.engine.hold(held);
    }

    fn held(&self) -> bool {
        self.engine.held()
    }

    fn rescan(&self) {
        tracing::info!("the console asked for a rescan");
        self.rescan.notify_one();
    }
}

/// The state as the engine uses it, the same store for pruning (not in a dry run), and its lock.
type Opened = (
    Arc<dyn Store>,
    Option<Arc<SqliteStore>>,
    Option<InstanceLock>,
);

/// Lock and open the state, and import the Python script's history on first start.
/// A dry run changes nothing in the state directory: no lock, no journal, no import.
fn open_state(config: &Config) -> Result<Opened, AgentError> {
    if config.dry_run {
        let store = SqliteStore::open_read_only(&config.state_dir).map_err(AgentError::State)?;
        return Ok((Arc::new(store), None, None));
    }
    let store = SqliteStore::open(&config.state_dir).map_err(AgentError::State)?;
    let lock = lock::acquire(&config.state_dir).map_err(AgentError::Lock)?;
    import_histories(&store, config);
    let store = Arc::new(store);
    Ok((store.clone(), Some(store), Some(lock)))
}

/// How often a watching agent prunes personal data (`privacy_retain_days`).
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `privacy_retain_days`: delete the path, name and email of records older than
/// that, and of files gone from the folder that long. Checksums and candidate ids stay.
pub fn prune_personal(state: &SqliteStore, config: &Config) {
    let Some(days) = config.privacy.retain_days else {
        return;
    };
    let cutoff = retain_cutoff(days);
    match state.prune_personal(&config.folder, cutoff, &|p| {
        std::path::Path::new(p).exists()
    }) {
        Ok(pruned) if pruned != Default::default() => tracing::info!(
            "privacy_retain_days = {days}: deleted the paths of {} synced files and the \
             personal details of {} audit records",
            pruned.synced,
            pruned.audit
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("privacy_retain_days: personal data not pruned: {e}"),
    }
}

/// `privacy_retain_days` in the shared ledger: the audit records older than that
/// lose their path, name and email (every agent does this when it starts).
async fn prune_shared(ledger: &Ledger, config: &Config) {
    let (Ledger::Redis(redis), Some(days)) = (ledger, config.privacy.retain_days) else {
        return;
    };
    let cutoff = retain_cutoff(days);
    match redis.purge_audit_where(|e| e.at < cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            "privacy_retain_days = {days}: deleted the personal details of {n} audit records in Redis"
        ),
        Err(e) => tracing::warn!("privacy_retain_days: the shared audit records were not pruned: {e}"),
    }
}

/// The Unix second before which records are older than `days`.
fn retain_cutoff(days: u32) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    now - i64::from(days) * 86_400
}

/// Prune once a day until `shutdown`, off the async threads.
async fn prune_daily(state: &Arc<SqliteStore>, config: &Config, shutdown: &CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
        let (state, config) = (state.clone(), config.clone());
        let _ = tokio::task::spawn_blocking(move || prune_personal(&state, &config)).await;
    }
}

/// Import every history file of the script that is new, or changed since it was imported.
pub fn import_histories(store: &SqliteStore, config: &Config) {
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
pub(crate) async fn open_ledger(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Ledger, StateError> {
    let ledger = Ledger::connect(
        config.state_url.as_ref(),
        config.lease,
        config.inflight_grace,
        config.retry_count,
        config.retry_delay,
        shutdown,
    )
    .await?;
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

/// What `state push` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pushed {
    /// Synced checksums this machine knows.
    pub pushed: usize,
    /// How many of them were new to the ledger.
    pub new: u64,
    /// How many the ledger holds now, if it said.
    pub ledger_synced: Option<u64>,
    /// The ledger's URL, without its password.
    pub state_url: String,
    #[serde(skip)]
    pub state_file: std::path::PathBuf,
}

/// Why `state push` failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(
        "state push: no shared state to push to: set state_url, TANOVA_STATE_URL or --state-url"
    )]
    NoLedger,
    #[error("state error: {0}")]
    State(StateError),
    #[error("cannot reach the shared state: {0}")]
    Ledger(StateError),
    #[error("state push: {0}")]
    Push(StateError),
}

/// `state push`: copy this machine's synced set into the shared ledger, keeping what it has.
pub async fn push_state(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Pushed, PushError> {
    if config.state_url.is_none() {
        return Err(PushError::NoLedger);
    }
    let store = SqliteStore::open(&config.state_dir).map_err(PushError::State)?;
    import_histories(&store, config);
    let records = store.synced_records().map_err(PushError::State)?;
    let ledger: Box<RedisLedger> = match open_ledger(config, shutdown).await {
        Ok(Ledger::Redis(redis)) => redis,
        Ok(Ledger::Local) => return Err(PushError::NoLedger),
        Err(e) => return Err(PushError::Ledger(e)),
    };
    let new = ledger.push(&records).await.map_err(PushError::Push)?;
    Ok(Pushed {
        pushed: records.len(),
        new,
        ledger_synced: ledger.synced_count().await.ok(),
        state_url: ledger.url().redacted(),
        state_file: store.path().to_path_buf(),
    })
}
