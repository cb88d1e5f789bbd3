//! The pipeline: discover → hash → plan → deliver → record, one path for every mode.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::access::{Access, Blocked, KeySource, Verdict};
use crate::api::{ApiClient, ApiError, Timeouts};
use crate::cache_index::CacheIndex;
use crate::config::{Concurrency, Config};
use crate::deliver::{Delivered, Deliverer, Job};
use crate::fence::Fence;
use crate::filter;
use crate::gdpr::Gdpr;
use crate::hash::{self, HashError};
use crate::plan::{plan, Plan};
use crate::report::{FailKind, Outcome, Problem, Reporter, Summary};
use crate::retry;
use crate::scan::{self, stamp_of, Found};
use crate::state::redis::Claim;
use crate::state::{Cached, FileStamp, Ledger, StateError, StateWriter, Store, Write};

/// How many times a changing file is re-read before it is reported as still being written.
const MAX_REHASH: u32 = 3;
/// How many looks, `settle` apart, a file gets to stop changing before it is
/// reported as still being written (and left for the next event, rescan or run).
const MAX_LOOKS: u32 = 10;
/// While watching: how long a file that keeps failing transiently, on a service
/// that answers its health check, waits before it is tried again. It is never held.
const FILE_RETRY: Duration = Duration::from_secs(60);
/// How long the ledger may fail to answer before `/health` says so.
const LEDGER_PROBLEM_AFTER: Duration = Duration::from_secs(5);
/// How long uploads in flight may take to finish after a stop was asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// The first wait before asking an unreachable ledger again; it doubles up to [`LEDGER_MAX_WAIT`].
const LEDGER_RETRY: Duration = Duration::from_millis(200);
const LEDGER_MAX_WAIT: Duration = Duration::from_secs(10);
/// Watching: the first wait before writing to a state that refused a write
/// (a full disk, a read-only mount); it doubles up to [`STATE_MAX_WAIT`].
const STATE_RETRY: Duration = Duration::from_secs(1);
const STATE_MAX_WAIT: Duration = Duration::from_secs(30);
/// Batches queued between discovery and the pipeline.
pub const ITEM_QUEUE: usize = 64;
/// Walk batches queued ahead of a full sync's pipeline (4,096 files, about
/// 1.1 MB). A file waits in the queue for its settle check's second look, so
/// the queue must hold `settle_ms` of the pipeline's pace, or files wait in
/// the pipeline's slots instead: 4,096 files are 0.6 s at 7,000 files a
/// second, the zero-latency emulator's pace here. With 8 batches a first sync
/// of 20k files took 5% longer, with 4 batches 50%; more only holds more of a
/// large folder in memory (64 batches: 4.5 MB at 20k files; issue 12).
const SCAN_QUEUE: usize = 16;
/// Files a walk hands over at a time: one cache read and one hand-off per
/// batch, not per file (issue 12).
const SCAN_BATCH: usize = 256;
/// …or fewer, once they hold this many bytes: the walk hashes the files the
/// cache does not know before it hands their batch over, so the first uploads
/// of a folder of large files wait for at most this much reading.
const SCAN_BATCH_BYTES: u64 = 64 << 20;
/// A walk batch with more bytes than this to hash is hashed on one thread per
/// core; with fewer, on the walk's own thread, where starting threads would
/// cost more than the reads (a batch of small CVs is about 1 MB).
const HASHED_IN_PARALLEL: u64 = 4 << 20;

/// Where one pass over a file leads.
enum Step {
    /// Record this outcome under the file's checksum, then count it.
    Record(Outcome),
    /// Counted already, or the run is stopping: nothing more to do.
    Done,
    /// The file changed: hash this version again.
    Rehash(FileStamp),
    /// Deliver the same bytes again (the key works again, the service is back).
    Again,
}

/// A discovered file with what the cache knows about it.
pub type Item = (Found, Option<Cached>);
/// Items handed to the pipeline together.
pub type Batch = Vec<Item>;

/// Why a run stopped early. Per-file failures are not errors: they are in the summary.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    KeyRejected(ApiError),
    #[error(
        "the API key is valid for {url} but may not upload CVs (permissions.canUpload is false)"
    )]
    NoUploadPermission { url: String },
    #[error("cannot reach the Tanova service: {0}")]
    Unreachable(String),
    #[error("cannot reach the shared ledger, stopping so nothing is uploaded that cannot be recorded: {0}")]
    Ledger(StateError),
    /// `tanova_url` answers with a redirect the agent refuses to follow.
    #[error("{0}")]
    Misdirected(ApiError),
    #[error("cannot record an outcome, stopping so nothing is uploaded twice: {0}")]
    State(#[from] StateError),
}

/// The agent's pipeline over one folder. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    max_file_size: u64,
    max_attempts: u32,
    follow_symlinks: bool,
    /// Hash and plan only: nothing is sent and no outcome is recorded.
    dry_run: bool,
    retry_count: u32,
    retry_delay: Duration,
    concurrency: Concurrency,
    /// Two looks at a file this far apart must agree before it is read.
    settle: Duration,
    /// Watching: a rejected key or an outage pauses deliveries instead of ending the run.
    pausing: bool,
    /// One-shot runs give up on an unreachable ledger after this long.
    ledger_timeout: Duration,
    /// The ledger has been failing long enough for `/health` to say so.
    ledger_problem: AtomicBool,
    /// Watching: the state refused a write, and no write has gone in since.
    state_problem: AtomicBool,
    /// Uploads in flight when the agent last stopped: their bytes wait until
    /// this instant before the server is asked about them again.
    earlier_uploads: Mutex<HashMap<String, tokio::time::Instant>>,
    api: Arc<ApiClient>,
    access: Arc<Access>,
    deliverer: Deliverer,
    store: Arc<dyn Store>,
    /// Outcomes and intents, committed many files to a transaction.
    writer: StateWriter,
    /// Where the synced set and claims are shared with other agents, if they are.
    ledger: Ledger,
    reporter: Arc<dyn Reporter>,
    /// The pipeline's hashes in progress (files from watch events, files seen
    /// changing; a walk hashes what it finds itself): two per core, so a
    /// hashing thread that finishes a file finds the next one queued instead
    /// of parking until it is handed one.
    hashers: Semaphore,
    /// Threads a walk hashes a batch of many bytes on.
    cores: usize,
    /// One read buffer per hash in progress, kept between files.
    read_buffers: Arc<hash::ReadBuffers>,
    /// Checksums being delivered in this run, so equal files are sent once.
    claims: Mutex<HashSet<String>>,
    /// Suppression rules in force, and audit records.
    gdpr: Gdpr,
}

/// A file's place among those the pipeline has in flight (its slots bound the
/// memory and the work started); given up while it waits for another agent.
struct Slot {
    slots: Arc<Semaphore>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Slot {
    fn give_up(&mut self) {
        self.permit = None;
    }

    /// Hold a slot again before going on. False: the run was stopped meanwhile.
    async fn take_again(&mut self, cancel: &CancellationToken) -> bool {
        if self.permit.is_none() {
            tokio::select! {
                _ = cancel.cancelled() => return false,
                p = self.slots.clone().acquire_owned() => self.permit = Some(p.expect("never closed")),
            }
        }
        true
    }
}

/// One run's shared bookkeeping.
struct Run {
    tally: Mutex<Summary>,
    fatal: Mutex<Option<EngineError>>,
    cancel: CancellationToken,
}

impl Engine {
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Self, crate::api::ClientError> {
        let timeouts = Timeouts {
            connect: Duration::from_secs(10),
            read: config.request_timeout,
        };
        let rate = config
            .max_requests_per_minute
            .map(|n| Arc::new(crate::api::rate::RateLimiter::per_minute(n)));
        let api = Arc::new(
            ApiClient::with_extra_roots(
                &config.url,
                &config.api_key,
                timeouts,
                &config.extra_roots,
            )?
            .with_rate_limit(rate),
        );
        let problems = reporter.clone();
        let access = Access::new(api.clone(), config.api_key.clone()).with_on_change(Arc::new(
            move |blocked: Option<&Blocked>| {
                let reason = blocked.map(Blocked::reason);
                let key = blocked.is_some_and(Blocked::is_key_problem);
                let (key, down) = if key { (reason, None) } else { (None, reason) };
                problems.problem(Problem::KeyRejected, key.as_deref());
                problems.problem(Problem::ServiceUnreachable, down.as_deref());
            },
        ));
        let earlier_uploads = if config.dry_run {
            HashMap::new()
        } else {
            earlier_uploads(store.as_ref(), config.inflight_grace)
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let access = Arc::new(access);
        let deliverer = Deliverer::new(
            api.clone(),
            access.clone(),
            config.concurrency,
            config.retry_count,
            config.retry_delay,
        )
        .with_batch_size(config.batch_size);
        Ok(Engine {
            inner: Arc::new(Inner {
                root: config.folder.clone(),
                max_file_size: config.max_file_size,
                max_attempts: config.max_attempts,
                follow_symlinks: config.follow_symlinks,
                dry_run: config.dry_run,
                retry_count: config.retry_count,
                retry_delay: config.retry_delay,
                concurrency: config.concurrency,
                settle: config.watch.settle,
                pausing: false,
                ledger_timeout: config.ledger_timeout,
                ledger_problem: AtomicBool::new(false),
                state_problem: AtomicBool::new(false),
                earlier_uploads: Mutex::new(earlier_uploads),
                deliverer,
                api,
                access,
                writer: StateWriter::start(store.clone()),
                store,
                ledger: Ledger::Local,
                reporter,
                hashers: Semaphore::new(cores * 2),
                cores,
                read_buffers: Arc::default(),
                claims: Mutex::new(HashSet::new()),
                gdpr: Gdpr::new(config.folder.clone()),
            }),
        })
    }

    /// Watching: pause on a rejected key or an outage, and resume by itself,
    /// instead of ending the run. Call it on a new engine, before it is cloned.
    pub fn pausing(mut self) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("set before the engine is shared")
            .pausing = true;
        self
    }

    /// Where a paused agent reads a new key (the config file, `api_key_file`).
    pub fn set_key_source(&self, source: KeySource) {
        self.inner.access.set_key_source(source);
    }

    /// SIGHUP: read the key again and ask the service at once.
    pub fn reload_key(&self) {
        self.inner.access.wake();
    }

    /// While the service refuses the key or does not answer, probe it with
    /// backoff until it works again; returns when `cancel` fires.
    pub async fn keep_probing(&self, cancel: &CancellationToken) {
        let deliverer = &self.inner.deliverer;
        self.inner
            .access
            .keep_probing(cancel, |health| {
                deliverer.use_batches(health.batch_max_files())
            })
            .await;
    }

    /// Why uploads cannot go out now, if they cannot.
    pub fn blocked(&self) -> Option<Blocked> {
        self.inner.access.blocked()
    }

    /// Hold uploads back (the console's pause) or let them go: see [`Access::set_held`].
    pub fn hold(&self, held: bool) {
        self.inner.access.set_held(held);
    }

    pub fn held(&self) -> bool {
        self.inner.access.held()
    }

    /// Share the synced set and claims with other agents through `ledger`.
    /// Call it on a new engine, before it is cloned.
    pub fn with_ledger(mut self, ledger: Ledger) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("the ledger is set before the engine is shared")
            .ledger = ledger;
        self
    }

    /// Check the key and its permissions, retrying while the service is
    /// unreachable. A pausing engine never fails here: it starts paused.
    pub async fn check_access(&self, cancel: &CancellationToken) -> Result<(), EngineError> {
        let inner = &self.inner;
        let policy = retry::Policy::retries(inner.retry_count, inner.retry_delay);
        let checked = retry::with_backoff(
            &policy,
            cancel,
            |_| async {
                match inner.access.check().await {
                    Ok(health) => Ok(Ok(health)),
                    // A watching agent starts paused at once: its prober takes over.
                    Err(e) if inner.pausing => Ok(Err(e)),
                    Err(e @ ApiError::Rejected { .. }) => Ok(Err(e)),
                    Err(e) => Err(retry::Again {
                        after: match &e {
                            ApiError::Transient { retry_after, .. } => *retry_after,
                            _ => None,
                        },
                        error: e,
                    }),
                }
            },
            |_, e, delay| tracing::warn!("{e}; retrying in {:.1}s", delay.as_secs_f64()),
        )
        .await;
        match checked {
            // Starts paused, and resumes by itself (see `keep_probing`).
            _ if inner.pausing && inner.access.blocked().is_some() => Ok(()),
            Ok(Ok(health)) if inner.access.blocked().is_none() => {
                inner.deliverer.use_batches(health.batch_max_files());
                Ok(())
            }
            Ok(Ok(_)) => Err(EngineError::NoUploadPermission {
                url: inner.api.endpoint("").to_string(),
            }),
            Ok(Err(rejected)) => Err(EngineError::KeyRejected(rejected)),
            Err(retry::Ended::GaveUp(e) | retry::Ended::Stopped(e)) => {
                Err(EngineError::Unreachable(e.to_string()))
            }
        }
    }

    /// How uploads are limited.
    pub fn concurrency(&self) -> Concurrency {
        self.inner.concurrency
    }

    /// The upload limiter, for metrics: its current limit and uploads in flight.
    pub fn limiter(&self) -> &crate::deliver::limiter::Limiter {
        self.inner.deliverer.limiter()
    }

    /// Sync the whole folder once. Returns the summary, and the reason the
    /// run stopped early if it did (a rejected key, a state that cannot be written).
    pub async fn sync_once(&self, cancel: &CancellationToken) -> (Summary, Option<EngineError>) {
        let (tx, rx) = mpsc::channel(SCAN_QUEUE);
        let walker = self.scan_into(self.inner.root.clone(), tx);
        let result = self.pipeline(rx, cancel).await;
        let _ = walker.await;
        result
    }

    /// Walk `dir` (the folder or part of it) on a blocking thread, sending the
    /// candidates in batches with what the cache knows about each. Stops when
    /// the receiver is gone.
    pub fn scan_into(&self, dir: PathBuf, tx: mpsc::Sender<Batch>) -> tokio::task::JoinHandle<()> {
        let store = self.inner.store.clone();
        let reporter = self.inner.reporter.clone();
        let follow_links = self.inner.follow_symlinks;
        let root = self.inner.root.clone();
        let whole_folder = dir == root && !self.inner.dry_run;
        let buffers = self.inner.read_buffers.clone();
        let max_file_size = self.inner.max_file_size;
        let cores = self.inner.cores;
        tokio::task::spawn_blocking(move || {
            let mut complete = true;
            let mut found = Vec::with_capacity(SCAN_BATCH);
            // Looked up here, off the async threads: for the whole folder in
            // the cache read whole beforehand, for part of it one read per batch.
            let index = (dir == root).then(|| CacheIndex::load(store.as_ref()));
            let send = |found: &mut Vec<Found>| {
                let found = std::mem::take(found);
                let mut batch = match &index {
                    Some(index) => index.attach(found),
                    None => with_cache(store.as_ref(), found),
                };
                hash_unknown(&mut batch, &buffers, max_file_size, cores, &|| {
                    tx.is_closed()
                });
                tx.blocking_send(batch).is_ok()
            };
            let mut bytes = 0;
            scan::walk(&dir, follow_links, |f| {
                if let Found::File { stamp, .. } = &f {
                    bytes += stamp.size;
                }
                found.push(f);
                if found.len() == SCAN_BATCH || bytes >= SCAN_BATCH_BYTES {
                    bytes = 0;
                    complete = send(&mut found);
                }
                complete
            });
            if complete && !found.is_empty() {
                complete = send(&mut found);
            }
            // A whole walk has seen every file: failures of files now gone are dropped,
            // so `status` stops listing them.
            if whole_folder && complete {
                match store.prune_failures(&|path| Path::new(path).exists()) {
                    Ok(gone) => {
                        // Nothing that reports on files keeps them once they are gone.
                        for path in &gone {
                            reporter.gone(Path::new(path));
                        }
                    }
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        })
    }

    /// The item for one path, as the scan would produce it; `None` when it is
    /// not a candidate file (a folder, a lock file) or no longer exists.
    /// `closed`: its writer closed it (Linux close-after-write), so it is complete
    /// without the settle check.
    pub fn item_for(&self, path: &Path, closed: bool) -> Option<Item> {
        if !filter::is_candidate_path(path) {
            return None;
        }
        let meta = std::fs::symlink_metadata(path)
            .ok()
            .filter(|m| m.is_file())?;
        let stamp = stamp_of(path, &meta);
        let cached = lookup(self.inner.store.as_ref(), &stamp);
        Some((
            Found::File {
                path: path.to_path_buf(),
                stamp,
                seen: (!closed).then(Instant::now),
            },
            cached,
        ))
    }

    /// Process items until the channel closes or `cancel` fires. After a
    /// cancel, uploads in flight get [`SHUTDOWN_GRACE`] to finish and be recorded.
    pub async fn pipeline(
        &self,
        mut rx: mpsc::Receiver<Batch>,
        cancel: &CancellationToken,
    ) -> (Summary, Option<EngineError>) {
        let started = Instant::now();
        let run = Arc::new(Run {
            tally: Mutex::new(Summary::default()),
            fatal: Mutex::new(None),
            cancel: cancel.child_token(),
        });
        // Enough files in flight to keep both the hashers and the uploads busy, and no more:
        // every upload slot filled, two files per hasher. Twice the uploads measured no
        // faster (first syncs of 20k small files and of 20k CVs) and held 3 MB more.
        let slots = Arc::new(Semaphore::new(
            self.inner.concurrency.ceiling() * self.inner.deliverer.files_per_request()
                + self.inner.hashers.available_permits() * 2,
        ));
        let mut tasks = JoinSet::new();
        'batches: loop {
            let next = tokio::select! {
                _ = run.cancel.cancelled() => None,
                next = rx.recv() => next,
            };
            let Some(batch) = next else { break };
            for (found, cached) in batch {
                {
                    let mut tally = run.tally.lock().unwrap();
                    tally.found += 1;
                    tally.hashed += u64::from(cached.as_ref().is_some_and(|c| c.hashed));
                    self.inner.reporter.found(&tally);
                }
                match found {
                    Found::Unreadable { path, reason } => {
                        self.inner.unreadable(&run, &path, reason).await
                    }
                    Found::File { path, stamp, seen } => {
                        if self
                            .inner
                            .settled_early(&run, &path, &stamp, seen, cached.as_ref())
                            .await
                        {
                            continue;
                        }
                        let permit = tokio::select! {
                            _ = run.cancel.cancelled() => break 'batches,
                            p = slots.clone().acquire_owned() => p.expect("never closed"),
                        };
                        let mut slot = Slot {
                            slots: slots.clone(),
                            permit: Some(permit),
                        };
                        let inner = self.inner.clone();
                        let run = run.clone();
                        tasks.spawn(async move {
                            inner
                                .process(&run, path, stamp, seen, cached, &mut slot)
                                .await;
                        });
                    }
                }
            }
            while let Some(done) = tasks.try_join_next() {
                log_panic(done);
            }
        }
        drop(rx);
        drain(&run, tasks).await;
        if let Err(e) = self.inner.store.flush() {
            tracing::warn!("{e}");
        }
        let fatal = run.fatal.lock().unwrap().take();
        let mut summary = std::mem::take(&mut *run.tally.lock().unwrap());
        summary.elapsed_s = started.elapsed().as_secs_f64();
        if let Some(e) = &fatal {
            summary.stopped = Some(e.to_string());
        } else if cancel.is_cancelled() {
            summary.stopped = Some("interrupted".to_string());
        }
        (summary, fatal)
    }
}

/// See every file started through, however long the service takes; only after
/// a stop do uploads in flight get no more than [`SHUTDOWN_GRACE`].
async fn drain(run: &Run, mut tasks: JoinSet<()>) {
    let drained = {
        let drain = async {
            while let Some(done) = tasks.join_next().await {
                log_panic(done);
            }
        };
        let grace = async {
            run.cancel.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            _ = drain => true,
            _ = grace => false,
        }
    };
    if !drained {
        tracing::warn!(
            "{} uploads still in flight were abandoned; they are sent again on the next start",
            tasks.len()
        );
        tasks.shutdown().await;
    }
}

/// Hash the files of a batch that the cache knew nothing about, each checked
/// against the walk's look as any hash is. Hashed here, a batch at a time,
/// they cost the pipeline no hand-off to a hashing thread and back per file:
/// that was a tenth of a migration's CPU, and left the cores idle between
/// files (issue 12). Many bytes are spread over `threads` threads, each taking
/// the next file in turn, so one large file does not hold up the others. One
/// that cannot be read as found is left to the pipeline, which reads it again
/// and says what is wrong; so are the rest once `stopped`.
fn hash_unknown(
    batch: &mut Batch,
    buffers: &hash::ReadBuffers,
    max_file_size: u64,
    threads: usize,
    stopped: &(dyn Fn() -> bool + Sync),
) {
    let unknown: Vec<(usize, &Path, &FileStamp)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, item)| match item {
            (Found::File { path, stamp, .. }, None)
                if stamp.size > 0 && stamp.size <= max_file_size =>
            {
                Some((i, path.as_path(), stamp))
            }
            _ => None,
        })
        .collect();
    let bytes: u64 = unknown.iter().map(|(_, _, stamp)| stamp.size).sum();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let hash_in_turn = || {
        let mut hashed = Vec::new();
        while let Some(&(i, path, stamp)) = unknown.get(next.fetch_add(1, Ordering::Relaxed)) {
            // Nobody takes the batch any more: a stop waits for no more reading.
            if stopped() {
                break;
            }
            if let Ok(checksum) = buffers.hash_file(path, stamp) {
                hashed.push((i, checksum));
            }
        }
        hashed
    };
    let hashed: Vec<(usize, String)> = if bytes <= HASHED_IN_PARALLEL || threads < 2 {
        hash_in_turn()
    } else {
        std::thread::scope(|scope| {
            // Should the system refuse a thread, the others (and this one) hash its share.
            let helpers: Vec<_> = (1..threads)
                .filter_map(|_| {
                    std::thread::Builder::new()
                        .spawn_scoped(scope, hash_in_turn)
                        .ok()
                })
                .collect();
            let mut hashed = hash_in_turn();
            for helper in helpers {
                hashed.extend(helper.join().unwrap_or_default());
            }
            hashed
        })
    };
    for (i, checksum) in hashed {
        batch[i].1 = Some(Cached {
            checksum,
            synced: false,
            hashed: true,
        });
    }
}

/// A cache miss when the state cannot be read: the file is then hashed, which is safe.
fn lookup(store: &dyn Store, stamp: &FileStamp) -> Option<Cached> {
    store.lookup(stamp).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        None
    })
}

/// What the cache knows about each file found, in one read (all misses when
/// the state cannot be read).
fn with_cache(store: &dyn Store, found: Vec<Found>) -> Batch {
    let stamps: Vec<FileStamp> = found
        .iter()
        .filter_map(|f| match f {
            Found::File { stamp, .. } => Some(*stamp),
            Found::Unreadable { .. } => None,
        })
        .collect();
    let mut cached = store
        .lookup_many(&stamps)
        .unwrap_or_else(|e| {
            tracing::warn!("{e}");
            vec![None; stamps.len()]
        })
        .into_iter();
    found
        .into_iter()
        .map(|f| match f {
            Found::File { .. } => {
                let c = cached.next().flatten();
                (f, c)
            }
            Found::Unreadable { .. } => (f, None),
        })
        .collect()
}

/// Uploads that were in flight when the agent last stopped, with when their
/// bytes may be asked about again: once the earlier request can no longer be in
/// progress (`grace` after it started, measured from now if the clock is off).
/// Intents older than that are forgotten.
fn earlier_uploads(store: &dyn Store, grace: Duration) -> HashMap<String, tokio::time::Instant> {
    let intents = store.intents().unwrap_or_else(|e| {
        tracing::warn!("{e}");
        Vec::new()
    });
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut waiting = HashMap::new();
    let mut lapsed = Vec::new();
    for (checksum, at_ms) in intents {
        let age = Duration::from_millis(now_ms.saturating_sub(at_ms).max(0) as u64);
        match grace.checked_sub(age).filter(|left| !left.is_zero()) {
            Some(left) => {
                waiting.insert(checksum, tokio::time::Instant::now() + left);
            }
            None => lapsed.push(Write::ClearIntent { checksum }),
        }
    }
    if !lapsed.is_empty() {
        if let Err(e) = store.apply(&lapsed) {
            tracing::warn!("{e}");
        }
    }
    if !waiting.is_empty() {
        tracing::info!(
            "{} uploads were in flight when the agent last stopped; their files wait (up to {}s) \
             until those requests can no longer be in progress, then the server is asked about them again",
            waiting.len(),
            grace.as_secs()
        );
    }
    waiting
}

/// A file's stamp as it is now, looked at on the file-system threads.
async fn stamp_now(path: &Path) -> std::io::Result<FileStamp> {
    let path = path.to_path_buf();
    crate::fs_threads::run(move || std::fs::metadata(&path).map(|meta| stamp_of(&path, &meta)))
        .await?
}

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!("a file task failed: {e}");
    }
}

impl Inner {
    /// Record and count the outcome of a file known without reading it (a
    /// suppression rule, an empty or oversized file, bytes already synced); false when there is none.
    async fn settled_early(
        &self,
        run: &Run,
        path: &Path,
        stamp: &FileStamp,
        seen: Option<Instant>,
        cached: Option<&Cached>,
    ) -> bool {
        if stamp.size == 0 && seen.is_some() {
            // Empty at a first look: maybe caught between its creation and
            // its first write. Only a second look tells (`Inner::process`).
            return false;
        }
        let known = cached.map(|c| c.checksum.as_str());
        if let Some(sum) = known {
            crate::privacy::redact::note(path, sum);
        }
        let (outcome, sum) = match self.suppressed(path, known).await {
            Some(outcome) => (outcome, known),
            None => match self.quick_outcome(stamp, cached) {
                Some(outcome) => (outcome, None),
                None => return false,
            },
        };
        self.record_and_finish(run, path, sum, outcome).await;
        true
    }

    /// Outcomes known without reading the file.
    fn quick_outcome(&self, stamp: &FileStamp, cached: Option<&Cached>) -> Option<Outcome> {
        if let Some(problem) = filter::size_problem(stamp.size, self.max_file_size) {
            return Some(if stamp.size == 0 {
                Outcome::Ignored { reason: problem }
            } else {
                Outcome::Failed {
                    reason: problem,
                    kind: FailKind::Refused,
                }
            });
        }
        cached.filter(|c| c.synced).map(|_| Outcome::AlreadySynced)
    }

    /// Take one file from its (maybe cached) checksum to its outcome.
    async fn process(
        &self,
        run: &Run,
        path: PathBuf,
        mut stamp: FileStamp,
        mut seen: Option<Instant>,
        cached: Option<Cached>,
        slot: &mut Slot,
    ) {
        let (mut looks, mut rehashes, mut rounds) = (0, 0, 0);
        // Hashed by the walk: remembered once no rule holds the file back.
        let mut unremembered = cached.as_ref().is_some_and(|c| c.hashed);
        let mut checksum = cached.map(|c| c.checksum);
        loop {
            let sum = match checksum.take() {
                Some(sum) => sum,
                None => {
                    // Read at once when first found: most files are complete,
                    // and only a delivery needs them settled (below). One seen
                    // changing is read again only once it has been still for
                    // `settle`, so a file being written is not read in a loop.
                    let seen_changing = looks > 0 || rehashes > 0;
                    if seen_changing && !self.settle(run, seen).await {
                        return;
                    }
                    if stamp.size == 0 {
                        match self.second_look(run, &path, &stamp, seen).await {
                            Ok(new) if looks < MAX_LOOKS => {
                                (stamp, seen, looks) = (new, Some(Instant::now()), looks + 1);
                                continue;
                            }
                            Ok(_) => return self.still_writing(run, &path),
                            Err(()) => return,
                        }
                    }
                    match self.checksum_of(run, &path, &stamp).await {
                        Ok(sum) => sum,
                        Err(Step::Rehash(new)) if looks < MAX_LOOKS => {
                            (stamp, seen, looks) = (new, Some(Instant::now()), looks + 1);
                            continue;
                        }
                        Err(Step::Rehash(_)) => return self.still_writing(run, &path),
                        Err(_) => return,
                    }
                }
            };
            crate::privacy::redact::note(&path, &sum);
            if let Some(outcome) = self.suppressed(&path, Some(&sum)).await {
                return self
                    .record_and_finish(run, &path, Some(&sum), outcome)
                    .await;
            }
            if std::mem::take(&mut unremembered) {
                self.remember(&stamp, &sum);
            }
            let plan = match self.decide(&sum) {
                Ok(plan) => plan,
                Err(e) => return self.stop(run, e.into()),
            };
            let step = match plan {
                Plan::Skip => Step::Record(Outcome::AlreadySynced),
                Plan::SameContent => Step::Record(Outcome::SameContent),
                Plan::Held(reason) => {
                    // Already recorded when it failed; only counted here.
                    let outcome = Outcome::Failed {
                        reason,
                        kind: FailKind::Refused,
                    };
                    self.finish(run, &path, outcome);
                    Step::Done
                }
                Plan::Deliver if self.dry_run => {
                    self.claims.lock().unwrap().remove(&sum);
                    self.finish(run, &path, Outcome::WouldUpload { bytes: stamp.size });
                    Step::Done
                }
                Plan::Deliver => {
                    // Nothing leaves before the settle check: `settle` after
                    // the first look, the delivery's own look at the file
                    // (`Deliverer::try_once`) is the second.
                    let step = if self.settle(run, seen).await {
                        self.deliver_planned(run, &path, stamp, &sum, rounds, slot)
                            .await
                    } else {
                        Step::Done
                    };
                    // The claim is let go once the outcome is recorded (below):
                    // let go before, a copy of the file found meanwhile (by a
                    // scan and by its events) saw neither the claim nor the
                    // synced record, and asked the server, which said "already
                    // in Tanova" of bytes this run had just sent.
                    if let Step::Record(outcome) = step {
                        self.record_and_finish(run, &path, Some(&sum), outcome)
                            .await;
                        self.claims.lock().unwrap().remove(&sum);
                        return;
                    }
                    self.claims.lock().unwrap().remove(&sum);
                    step
                }
            };
            match step {
                Step::Record(outcome) => {
                    return self
                        .record_and_finish(run, &path, Some(&sum), outcome)
                        .await
                }
                Step::Done => return,
                Step::Rehash(_) if rehashes >= MAX_REHASH => return self.still_writing(run, &path),
                Step::Rehash(new) => {
                    (stamp, seen, rehashes) = (new, Some(Instant::now()), rehashes + 1);
                }
                Step::Again => (checksum, rounds) = (Some(sum), rounds + 1),
            }
        }
    }

    /// The settle check's wait: nothing is delivered until two looks at the
    /// file, `settle` apart, agree on its size, mtime and identity, and the
    /// bytes hashed are those of that version. The first look is the one that
    /// found it (`seen`; `None` when it is known complete); the hash compares
    /// the open file with it before and after reading; the second look is the
    /// delivery's stat (`Deliverer::try_once`), taken after this wait. So a
    /// file that is never delivered (already synced, as in a migration from
    /// the script) is never waited for, and a settled file costs no extra
    /// stat. Never judged by comparing its mtime with the clock, so a file
    /// from the future settles like any other. False: stopped.
    async fn settle(&self, run: &Run, seen: Option<Instant>) -> bool {
        let Some(seen) = seen else {
            return true;
        };
        let due = seen + self.settle;
        if Instant::now() >= due {
            // Found long enough ago (most of a big scan): no timer, no wake-up.
            return true;
        }
        let due = tokio::time::Instant::from_std(due);
        tokio::select! {
            _ = run.cancel.cancelled() => false,
            _ = tokio::time::sleep_until(due) => true,
        }
    }

    /// A file found empty, looked at again once it has been left alone for
    /// `settle`: still empty, it is ignored as empty (and over the size limit
    /// once written, failed as such); `Ok(stamp)`: it has changed, and is
    /// taken from there. `Err`: its outcome is recorded, or the run stopped.
    async fn second_look(
        &self,
        run: &Run,
        path: &Path,
        stamp: &FileStamp,
        seen: Option<Instant>,
    ) -> Result<FileStamp, ()> {
        if !self.settle(run, seen).await {
            return Err(());
        }
        let now = match stamp_now(path).await {
            Ok(now) => now,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.vanished(run, path).await;
                return Err(());
            }
            Err(e) => {
                self.unreadable(run, path, e.to_string()).await;
                return Err(());
            }
        };
        let outcome = match self.quick_outcome(&now, None) {
            Some(outcome) if now == *stamp || now.size > 0 => outcome,
            _ => return Ok(now),
        };
        self.record_and_finish(run, path, None, outcome).await;
        Err(())
    }

    /// The walk could not look at `path`: a failure, unless it is simply gone
    /// (renamed or deleted between the listing and the look).
    async fn unreadable(&self, run: &Run, path: &Path, reason: String) {
        if !path.exists() && path != self.root {
            return self.vanished(run, path).await;
        }
        let outcome = Outcome::Failed {
            reason: format!("cannot read: {reason}"),
            kind: FailKind::Counted,
        };
        self.record_and_finish(run, path, None, outcome).await;
    }

    /// A file that kept changing: neither failed nor held, it is looked at again
    /// on its next event, rescan or run.
    fn still_writing(&self, run: &Run, path: &Path) {
        let outcome = Outcome::Ignored {
            reason: "still being written; it is synced once it stops changing".to_string(),
        };
        self.finish(run, path, outcome);
    }

    /// Hash the file and cache its checksum; the step to take instead when that fails.
    async fn checksum_of(&self, run: &Run, path: &Path, stamp: &FileStamp) -> Result<String, Step> {
        match self.hash(path, stamp).await {
            Ok(sum) => {
                run.tally.lock().unwrap().hashed += 1;
                self.remember(stamp, &sum);
                Ok(sum)
            }
            Err(HashError::Changed) => Err(self.changed(run, path).await),
            // Deleted or renamed between its discovery and its reading: not a failure.
            Err(HashError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                self.vanished(run, path).await;
                Err(Step::Done)
            }
            Err(HashError::Io(e)) => {
                let outcome = Outcome::Failed {
                    reason: format!("cannot read: {e}"),
                    kind: FailKind::Counted,
                };
                self.record_and_finish(run, path, None, outcome).await;
                Err(Step::Done)
            }
        }
    }

    /// Keep the checksum of this version of a file, so a restart need not read it again.
    fn remember(&self, stamp: &FileStamp, sum: &str) {
        if self.dry_run {
            return;
        }
        if let Err(e) = self.store.remember(stamp, sum) {
            tracing::warn!("{e}");
        }
    }

    /// Claim the checksum in the ledger, deliver it while the claim is held,
    /// and share the result with the other agents.
    /// `round` counts the deliveries of these bytes in this pass, for the wait before the next.
    async fn deliver_planned(
        &self,
        run: &Run,
        path: &Path,
        stamp: FileStamp,
        sum: &str,
        round: u32,
        slot: &mut Slot,
    ) -> Step {
        if self.pausing && !self.access.wait_open(&run.cancel).await {
            return Step::Done;
        }
        if !self.wait_for_earlier_upload(run, path, sum).await {
            return Step::Done;
        }
        let (earlier, fence) = match self.claim_for_delivery(run, path, sum, slot).await {
            Ok(claimed) => claimed,
            Err(step) => return step,
        };
        // A rule set while the file waited (for the service, a slot, the claim) holds too.
        if let Some(outcome) = self.suppressed(path, Some(sum)).await {
            self.release(sum).await;
            return Step::Record(outcome);
        }
        let delivered = self
            .deliver_claimed(run, path, stamp, sum, fence, earlier)
            .await;
        self.settle_delivery(run, path, sum, &delivered).await;
        self.step_after(run, path, stamp, sum, round, delivered)
            .await
    }

    /// Claim the bytes in the ledger: how long to wait for an earlier upload
    /// and the fence to deliver under, or the step to take instead.
    async fn claim_for_delivery(
        &self,
        run: &Run,
        path: &Path,
        sum: &str,
        slot: &mut Slot,
    ) -> Result<(Duration, Option<Arc<Fence>>), Step> {
        match self.claim(run, sum).await {
            Ok((Claim::Claimed { wait }, fence)) => Ok((wait, fence)),
            Ok((Claim::Synced { candidate }, _)) => {
                self.mirror_synced(run, path, sum, candidate.as_deref())
                    .await;
                Err(Step::Done)
            }
            Ok((Claim::Busy { holder }, _)) => {
                // Watching, a rescan looks again; a one-shot run waits for the
                // other agent, giving up its slot meanwhile: the files after
                // this one go on (to this agent, where the other has not reached
                // them yet), rather than every agent trailing the first one's claims.
                if !self.pausing {
                    slot.give_up();
                    if self.await_other_agent(run, sum).await {
                        let taken = slot.take_again(&run.cancel).await;
                        return Err(if taken { Step::Again } else { Step::Done });
                    }
                }
                let reason = format!("being uploaded by another agent ({holder})");
                self.finish(run, path, Outcome::Deferred { reason });
                Err(Step::Done)
            }
            Err(Some(e)) => {
                self.stop(run, EngineError::Ledger(e));
                Err(Step::Done)
            }
            // Stopped while waiting for the ledger.
            Err(None) => Err(Step::Done),
        }
    }

    /// Tell the ledger how the delivery ended, and drop the intent of an
    /// upload the server has nothing more to do with.
    async fn settle_delivery(&self, run: &Run, path: &Path, sum: &str, delivered: &Delivered) {
        self.audit(path, sum, delivered).await;
        match delivered {
            Delivered::Uploaded { candidate_id } => {
                self.share_synced(run, sum, candidate_id.as_deref()).await
            }
            Delivered::AlreadyOnServer { .. } => self.share_synced(run, sum, None).await,
            _ => self.release(sum).await,
        }
        // Cut short before the last byte, or answered: the server has nothing to finish.
        // (A cancelled or timed-out upload keeps its intent: the server may still be processing it.)
        let answered = match delivered {
            Delivered::Failed { kind, .. } => *kind != FailKind::Transient,
            Delivered::Changed | Delivered::LeaseLost | Delivered::Vanished => true,
            Delivered::Rejected(_) => true,
            _ => false,
        };
        if answered {
            let clear = Write::ClearIntent {
                checksum: sum.to_string(),
            };
            if let Err(e) = self.writer.write(clear).await {
                tracing::warn!("{e}");
            }
        }
    }

    /// Keep an upload or a duplicate in the audit trail: in the shared ledger when
    /// there is one, and in the state with the synced bytes ([`Inner::record_synced`]).
    async fn audit(&self, path: &Path, sum: &str, delivered: &Delivered) {
        let Some(entry) = self.gdpr.audit_entry(path, sum, delivered) else {
            return;
        };
        if let Err(e) = self.ledger.record_audit(&entry).await {
            tracing::warn!("audit record of {sum} kept on this machine only: {e}");
        }
        self.gdpr.hold(entry);
    }

    /// Record bytes as synced, in one transaction with the audit record of the
    /// delivery that synced them, when there was one.
    async fn record_synced(
        &self,
        run: &Run,
        sum: &str,
        candidate: Option<&str>,
        shown: &str,
    ) -> Result<(), StateError> {
        let synced = Write::Synced {
            checksum: sum.to_string(),
            candidate: candidate.map(str::to_string),
            path: shown.to_string(),
            audit: self.gdpr.take(sum),
        };
        self.commit(run, synced).await
    }

    /// Commit one of the pipeline's writes. A one-shot run gets a refusal back
    /// and stops, so nothing goes out that cannot be recorded. A watching
    /// engine waits instead until the state can be written again (a full disk
    /// freed, a read-only mount made writable), trying the write from 1 s up to
    /// every 30 s: its deliveries hold still, each waiting for its intent or
    /// its outcome, and the log and `/health` say why. Stopping it ends the
    /// wait with the last refusal. A damaged database is not waited out:
    /// nothing mends it but the admin, so the agent stops and says what to do.
    async fn commit(&self, run: &Run, write: Write) -> Result<(), StateError> {
        if !self.pausing {
            return self.writer.write(write).await;
        }
        let policy = retry::Policy::forever(STATE_RETRY, STATE_MAX_WAIT);
        let written = retry::with_backoff(
            &policy,
            &run.cancel,
            |_| {
                let write = write.clone();
                async move {
                    match self.writer.write(write).await {
                        Err(e) if e.may_pass() => Err(retry::Again::new(e)),
                        done => Ok(done),
                    }
                }
            },
            |_, error, _| self.state_failing(error),
        )
        .await;
        match written {
            Ok(Ok(())) => {
                self.state_written();
                Ok(())
            }
            Ok(Err(e)) | Err(retry::Ended::Stopped(e) | retry::Ended::GaveUp(e)) => Err(e),
        }
    }

    /// Watching, the state refused a write: say so once.
    fn state_failing(&self, error: &StateError) {
        if !self.state_problem.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "{error}: uploads wait until the state can be written again, so nothing is \
                 uploaded that cannot be recorded; free space on its disk or make the state \
                 directory writable, and the agent goes on by itself"
            );
            self.reporter
                .problem(Problem::StateUnwritable, Some(&error.to_string()));
        }
    }

    fn state_written(&self) {
        if self.state_problem.load(Ordering::Relaxed)
            && self.state_problem.swap(false, Ordering::Relaxed)
        {
            tracing::info!("the state can be written again; uploads go on");
            self.reporter.problem(Problem::StateUnwritable, None);
        }
    }

    /// The outcome of a file a suppression rule covers, with the rules re-read when stale.
    async fn suppressed(&self, path: &Path, checksum: Option<&str>) -> Option<Outcome> {
        let rules = self.gdpr.rules(self.store.as_ref(), &self.ledger).await;
        self.gdpr.suppressed(&rules, path, checksum)
    }

    /// Where a delivery leads.
    async fn step_after(
        &self,
        run: &Run,
        path: &Path,
        stamp: FileStamp,
        sum: &str,
        round: u32,
        delivered: Delivered,
    ) -> Step {
        match delivered {
            Delivered::Uploaded { candidate_id } => {
                self.uploaded(run, path, stamp, sum, candidate_id).await
            }
            Delivered::AlreadyOnServer { candidate_name } => {
                Step::Record(Outcome::OnServer { candidate_name })
            }
            Delivered::Failed {
                reason,
                kind: FailKind::Transient,
            } if self.pausing => self.wait_out(run, path, &reason, round).await,
            Delivered::Failed { reason, kind } => Step::Record(Outcome::Failed { reason, kind }),
            Delivered::Changed => self.changed(run, path).await,
            // A one-shot run waits for the agent that took the claim over.
            Delivered::LeaseLost if !self.pausing && self.await_other_agent(run, sum).await => {
                Step::Again
            }
            Delivered::LeaseLost => {
                let reason = "the claim on its bytes lapsed during the upload (is lease_ms long \
                              enough?); the upload was stopped before its last byte"
                    .to_string();
                self.finish(run, path, Outcome::Deferred { reason });
                Step::Done
            }
            Delivered::Vanished => {
                self.vanished(run, path).await;
                Step::Done
            }
            Delivered::Rejected(e @ ApiError::Misdirected { .. }) => {
                self.stop(run, EngineError::Misdirected(e));
                Step::Done
            }
            Delivered::Rejected(e) => self.refused(run, path, e, round).await,
            Delivered::Cancelled => Step::Done,
        }
    }

    /// The server took the bytes. One more look: a file that grew or was
    /// rewritten while it was sent has new bytes to send, which go next.
    async fn uploaded(
        &self,
        run: &Run,
        path: &Path,
        stamp: FileStamp,
        sum: &str,
        candidate_id: Option<String>,
    ) -> Step {
        let Some(new) = self.changed_after_upload(path, &stamp).await else {
            return Step::Record(Outcome::Uploaded {
                candidate_id,
                bytes: stamp.size,
            });
        };
        let shown = path.display().to_string();
        match self
            .record_synced(run, sum, candidate_id.as_deref(), &shown)
            .await
        {
            Ok(()) => Step::Rehash(new),
            Err(e) => {
                self.stop(run, e.into());
                Step::Done
            }
        }
    }

    /// One-shot run: wait (at most `ledger_timeout`) for another agent's claim
    /// on these bytes to end, synced or lapsed. True when it did: plan them again.
    async fn await_other_agent(&self, run: &Run, sum: &str) -> bool {
        let policy = retry::Policy {
            jitter: false,
            ..retry::Policy::forever(LEDGER_RETRY, Duration::from_secs(2))
                .within(Some(self.ledger_timeout))
        };
        let ended = retry::with_backoff(
            &policy,
            &run.cancel,
            |attempt| async move {
                if attempt == 0 {
                    // Only just found busy: give the other agent a moment first.
                    return Err(retry::Again::new(()));
                }
                match self.ledger.claim(sum).await {
                    Ok(Claim::Busy { .. }) => Err(retry::Again::new(())),
                    // Taken here (the next pass claims it again, extending this claim);
                    // when taken over from a lapsed claim, its request may still be in flight.
                    Ok(Claim::Claimed { wait }) => Ok(Some(wait)),
                    Ok(Claim::Synced { .. }) => Ok(Some(Duration::ZERO)),
                    Err(_) => Ok(None),
                }
            },
            |_, _, _| {},
        )
        .await;
        let Ok(Some(wait)) = ended else {
            return false;
        };
        tokio::select! {
            _ = run.cancel.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }

    /// A 401/403: the health check says whether the key is rejected or only this request.
    async fn refused(&self, run: &Run, path: &Path, refusal: ApiError, round: u32) -> Step {
        match self.access.confirm_refusal(refusal).await {
            Verdict::RequestRefused(e) => {
                let (status, message) = match &e {
                    ApiError::Rejected {
                        status, message, ..
                    } => (*status, message.clone()),
                    other => (0, other.to_string()),
                };
                let reason = format!(
                    "refused by the server ({status}): {message} (the API key itself is \
                     accepted: a firewall or proxy may be blocking this file)"
                );
                Step::Record(Outcome::Failed {
                    reason,
                    kind: FailKind::Refused,
                })
            }
            Verdict::KeyRejected(_) if self.pausing => {
                if self.access.wait_open(&run.cancel).await {
                    Step::Again
                } else {
                    Step::Done
                }
            }
            Verdict::KeyRejected(e) => {
                self.stop(run, EngineError::KeyRejected(e));
                Step::Done
            }
            Verdict::Unknown(e) if self.pausing => {
                self.wait_out(run, path, &e.to_string(), round).await
            }
            Verdict::Unknown(e) => Step::Record(Outcome::Failed {
                reason: e.to_string(),
                kind: FailKind::Transient,
            }),
        }
    }

    /// Watching, a delivery ran out of retries on transient errors: wait for the
    /// service (if it is down for everyone) or a while, then try again. Never held.
    async fn wait_out(&self, run: &Run, path: &Path, reason: &str, round: u32) -> Step {
        let resumed = if self.access.confirm_outage().await {
            self.access.wait_open(&run.cancel).await
        } else {
            let wait = retry::delay(
                round,
                self.retry_delay.max(Duration::from_secs(1)),
                None,
                1.0,
            )
            .min(FILE_RETRY);
            tracing::warn!(
                "{}: {reason}; trying again in {}s",
                crate::privacy::redact::file(path, None),
                wait.as_secs()
            );
            tokio::select! {
                _ = run.cancel.cancelled() => false,
                _ = tokio::time::sleep(wait) => true,
            }
        };
        if resumed {
            Step::Again
        } else {
            Step::Done
        }
    }

    /// An upload of these bytes was in flight when the agent last stopped: wait
    /// until it can no longer be in progress. False when the run stopped meanwhile.
    async fn wait_for_earlier_upload(&self, run: &Run, path: &Path, sum: &str) -> bool {
        let until = self.earlier_uploads.lock().unwrap().get(sum).copied();
        let Some(until) = until else {
            return true;
        };
        tracing::info!(
            "{}: its upload was in flight when the agent stopped; asking the server again in {}s",
            crate::privacy::redact::file(path, None),
            until
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs()
        );
        tokio::select! {
            _ = run.cancel.cancelled() => return false,
            _ = tokio::time::sleep_until(until) => {}
        }
        self.earlier_uploads.lock().unwrap().remove(sum);
        true
    }

    /// After an upload, one more look: a file that grew or was rewritten while
    /// it was sent has new bytes to send. `None` when it is as it was (or gone).
    async fn changed_after_upload(&self, path: &Path, stamp: &FileStamp) -> Option<FileStamp> {
        let now = stamp_now(path).await.ok()?;
        (now != *stamp).then_some(now)
    }

    /// The file is not the version found: look at it again, unless it is gone.
    async fn changed(&self, run: &Run, path: &Path) -> Step {
        match stamp_now(path).await {
            Ok(stamp) => Step::Rehash(stamp),
            Err(_) => {
                self.vanished(run, path).await;
                Step::Done
            }
        }
    }

    /// Plan the checksum, claiming it for this run when it is to be delivered.
    fn decide(&self, sum: &str) -> Result<Plan, StateError> {
        let (synced, failure) = self.store.plan_facts(sum)?;
        let mut claims = self.claims.lock().unwrap();
        let decision = plan(
            synced,
            failure.as_ref(),
            self.max_attempts,
            claims.contains(sum),
        );
        if decision == Plan::Deliver {
            claims.insert(sum.to_string());
        }
        Ok(decision)
    }

    /// Claim the checksum in the ledger, waiting with backoff while the ledger
    /// cannot be reached: nothing is uploaded that cannot be recorded. With a
    /// shared ledger, the claim comes with its fence. `Err(None)` when the run
    /// was stopped meanwhile; `Err(Some(_))` when a one-shot run waited `ledger_timeout`.
    async fn claim(
        &self,
        run: &Run,
        sum: &str,
    ) -> Result<(Claim, Option<Arc<Fence>>), Option<StateError>> {
        let claimed = self
            .with_ledger(run, "claiming", sum, || async {
                let sent = Instant::now();
                self.ledger.claim(sum).await.map(|claim| (claim, sent))
            })
            .await;
        match claimed {
            Ok((claim, sent)) => {
                let fence = self
                    .ledger
                    .lease()
                    .filter(|_| matches!(claim, Claim::Claimed { .. }))
                    .map(|lease| Arc::new(Fence::new(sent + lease)));
                Ok((claim, fence))
            }
            Err(retry::Ended::GaveUp(e)) => Err(Some(e)),
            Err(retry::Ended::Stopped(_)) => Err(None),
        }
    }

    /// Record delivered bytes in the shared ledger (which releases the claim),
    /// retrying while it is unreachable, until it works, the run is stopped, or
    /// a one-shot run waited `ledger_timeout`. If it never does, the server's
    /// duplicate check tells other agents.
    async fn share_synced(&self, run: &Run, sum: &str, candidate: Option<&str>) {
        let shared = self
            .with_ledger(run, "recording", sum, || {
                self.ledger.record_synced(sum, candidate)
            })
            .await;
        match shared {
            Ok(()) => {}
            Err(retry::Ended::GaveUp(e) | retry::Ended::Stopped(e)) => tracing::warn!(
                "{e}: {sum} is recorded as synced on this machine only; \
                 another agent will find it on the server"
            ),
        }
    }

    /// One ledger call, retried under [`Inner::ledger_policy`] while the ledger
    /// does not answer; `/health` hears when it has failed for a while and when it answers.
    async fn with_ledger<T, F, Fut>(
        &self,
        run: &Run,
        doing: &str,
        sum: &str,
        op: F,
    ) -> Result<T, retry::Ended<StateError>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StateError>>,
    {
        let started = Instant::now();
        let done = retry::with_backoff(
            &self.ledger_policy(),
            &run.cancel,
            |_| async {
                op().await.map_err(|e| {
                    // Logged by the ledger when an outage starts and ends.
                    tracing::debug!("{doing} {sum}: {e}");
                    self.ledger_failing(&e, started.elapsed());
                    retry::Again::new(e)
                })
            },
            |_, _, _| {},
        )
        .await;
        if done.is_ok() {
            self.ledger_answered();
        }
        done
    }

    /// Waits for an unreachable ledger: from 200 ms up to 10 s apart; a one-shot
    /// run gives up after `ledger_timeout`, a watching one waits as long as it takes.
    fn ledger_policy(&self) -> retry::Policy {
        retry::Policy::forever(LEDGER_RETRY, LEDGER_MAX_WAIT)
            .within((!self.pausing).then_some(self.ledger_timeout))
    }

    /// The ledger has failed for `waited`: past [`LEDGER_PROBLEM_AFTER`], say so once.
    fn ledger_failing(&self, error: &StateError, waited: Duration) {
        if waited >= LEDGER_PROBLEM_AFTER && !self.ledger_problem.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "{error}: uploads wait until the shared ledger answers, so nothing is uploaded \
                 that cannot be recorded; check that Redis is running and reachable"
            );
            self.reporter
                .problem(Problem::LedgerUnreachable, Some(&error.to_string()));
        }
    }

    fn ledger_answered(&self) {
        if self.ledger_problem.swap(false, Ordering::Relaxed) {
            self.reporter.problem(Problem::LedgerUnreachable, None);
        }
    }

    /// Give a claim back after a delivery that synced nothing; best effort, as the lease expires anyway.
    async fn release(&self, sum: &str) {
        if let Err(e) = self.ledger.release(sum).await {
            tracing::debug!("releasing {sum}: {e}");
        }
    }

    /// Another agent synced these bytes: mirror that here, so this machine never asks again.
    async fn mirror_synced(&self, run: &Run, path: &Path, sum: &str, candidate: Option<&str>) {
        let shown = path.display().to_string();
        if let Err(e) = self.record_synced(run, sum, candidate, &shown).await {
            return self.stop(run, e.into());
        }
        self.finish(run, path, Outcome::AlreadySynced);
    }

    /// Deliver while keeping the claim on the bytes alive; the fence stops the
    /// upload before its last byte if the claim cannot be renewed in time.
    /// `earlier`: how long another agent's upload of these bytes may still be in
    /// flight (its claim lapsed mid-upload); the server is asked only after it.
    async fn deliver_claimed(
        &self,
        run: &Run,
        path: &Path,
        stamp: FileStamp,
        sum: &str,
        fence: Option<Arc<Fence>>,
        earlier: Duration,
    ) -> Delivered {
        let on_lost = |_: &str| {
            tracing::warn!(
                "{}: the claim on its bytes passed to another agent during the upload \
                 (is lease_ms long enough?); the upload stops before its last byte",
                crate::privacy::redact::file(path, None)
            )
        };
        let deliver = async {
            if !earlier.is_zero() {
                tracing::info!(
                    "{}: another agent's claim on these bytes lapsed mid-upload; asking the \
                     server about them in {}s, once that upload can no longer be in flight",
                    crate::privacy::redact::file(path, None),
                    earlier.as_secs()
                );
                tokio::select! {
                    _ = run.cancel.cancelled() => return Delivered::Cancelled,
                    _ = tokio::time::sleep(earlier) => {}
                }
            }
            self.deliver(run, path, stamp, sum, fence.clone()).await
        };
        tokio::select! {
            delivered = deliver => delivered,
            never = self.ledger.keep_claim(sum, fence.clone(), on_lost) => match never {},
        }
    }

    async fn deliver(
        &self,
        run: &Run,
        path: &Path,
        stamp: FileStamp,
        sum: &str,
        fence: Option<Arc<Fence>>,
    ) -> Delivered {
        let job = Job {
            root: &self.root,
            path,
            stamp,
            checksum: sum,
            fence,
        };
        let reporter = &self.reporter;
        let started = Instant::now();
        // Recorded before the bytes go out: after a crash, they wait until this
        // request can no longer be in progress before the server is asked again.
        let shown = path.display().to_string();
        let intent = || -> BoxFuture<'_, ()> {
            let intent = Write::Intent {
                checksum: sum.to_string(),
                path: shown.clone(),
            };
            Box::pin(async move {
                if let Err(e) = self.commit(run, intent).await {
                    tracing::warn!("{e}");
                }
            })
        };
        let delivered = self
            .deliverer
            .deliver(&job, &run.cancel, |attempt, reason, delay| {
                tracing::debug!(path = %crate::privacy::redact::file(path, Some(sum)), attempt, "retrying in {:.1}s: {reason}", delay.as_secs_f64());
                reporter.retrying(path, attempt, reason, delay);
            }, intent)
            .await;
        if matches!(delivered, Delivered::Uploaded { .. }) {
            reporter.upload_timed(path, started.elapsed());
        }
        delivered
    }

    /// Hash off the async threads, at most two files per core at a time.
    async fn hash(&self, path: &Path, stamp: &FileStamp) -> Result<String, HashError> {
        let _permit = self.hashers.acquire().await.expect("never closed");
        let (path, stamp) = (path.to_path_buf(), *stamp);
        let buffers = self.read_buffers.clone();
        tokio::task::spawn_blocking(move || buffers.hash_file(&path, &stamp))
            .await
            .unwrap_or_else(|e| Err(HashError::Io(std::io::Error::other(e))))
    }

    async fn vanished(&self, run: &Run, path: &Path) {
        let outcome = Outcome::Ignored {
            reason: "disappeared before it could be uploaded".to_string(),
        };
        self.record_and_finish(run, path, None, outcome).await;
    }

    /// Record the outcome durably, then count and report it. A dry run records nothing.
    async fn record_and_finish(&self, run: &Run, path: &Path, sum: Option<&str>, outcome: Outcome) {
        // Formatted only for an outcome that is written (not for each file already synced).
        let shown = || path.display().to_string();
        let recorded = match (&outcome, sum) {
            _ if self.dry_run => Ok(()),
            (Outcome::Uploaded { candidate_id, .. }, Some(sum)) => {
                self.record_synced(run, sum, candidate_id.as_deref(), &shown())
                    .await
            }
            (Outcome::OnServer { .. }, Some(sum)) => {
                self.record_synced(run, sum, None, &shown()).await
            }
            (Outcome::Suppressed { rule }, sum) => {
                let suppressed = Write::Suppressed {
                    path: shown(),
                    checksum: sum.map(str::to_string),
                    rule: rule.clone(),
                };
                self.commit(run, suppressed).await
            }
            (Outcome::Failed { reason, kind }, sum) => {
                let failure = Write::Failure {
                    path: shown(),
                    checksum: sum.map(str::to_string),
                    reason: reason.clone(),
                    permanent: kind.is_permanent(),
                    counts: kind.counts(),
                };
                self.commit(run, failure).await
            }
            _ => Ok(()),
        };
        if let Err(e) = recorded {
            return self.stop(run, e.into());
        }
        crate::logging::file_event(path, sum, &outcome);
        self.finish(run, path, outcome);
    }

    /// Count and report an outcome.
    fn finish(&self, run: &Run, path: &Path, outcome: Outcome) {
        let mut tally = run.tally.lock().unwrap();
        tally.add(path, &outcome);
        self.reporter.finished(path, &outcome, &tally);
    }

    /// Stop the run: the first fatal error wins, and nothing new starts.
    fn stop(&self, run: &Run, error: EngineError) {
        if let EngineError::State(e) = &error {
            self.reporter
                .problem(Problem::StateUnwritable, Some(&e.to_string()));
        }
        let mut fatal = run.fatal.lock().unwrap();
        if fatal.is_none() {
            tracing::error!("{error}");
            *fatal = Some(error);
        }
        run.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(path: &Path) -> Item {
        let meta = std::fs::symlink_metadata(path).unwrap();
        let file = Found::File {
            path: path.to_path_buf(),
            stamp: stamp_of(path, &meta),
            seen: Some(Instant::now()),
        };
        (file, None)
    }

    /// A batch of 40 files of 200 KB (8 MB: hashed on several threads) and,
    /// beside them, the ones the walk must leave to the pipeline.
    #[test]
    fn the_walk_hashes_every_unknown_file_as_found_on_one_thread_or_several() {
        for threads in [1, 2, 3] {
            let dir = tempfile::tempdir().unwrap();
            let mut batch = Batch::new();
            let mut contents = Vec::new();
            for i in 0..40u8 {
                let path = dir.path().join(format!("cv{i}.pdf"));
                let bytes = vec![i; 200_000 + usize::from(i)];
                std::fs::write(&path, &bytes).unwrap();
                batch.push(found(&path));
                contents.push(Some(hash::sha256_hex(&bytes)));
            }
            // Known to the cache: kept as it is, not read again.
            let known = Cached {
                checksum: "c".repeat(64),
                synced: true,
                hashed: false,
            };
            batch[3].1 = Some(known.clone());
            contents[3] = Some(known.checksum.clone());
            // Rewritten after the walk's look, empty, or over the size limit: left to the pipeline.
            std::fs::write(dir.path().join("cv5.pdf"), vec![9u8; 10]).unwrap();
            contents[5] = None;
            let empty = dir.path().join("empty.pdf");
            std::fs::write(&empty, b"").unwrap();
            batch.push(found(&empty));
            contents.push(None);
            let large = dir.path().join("large.pdf");
            std::fs::write(&large, vec![1u8; 300_000]).unwrap();
            batch.push(found(&large));
            contents.push(None);
            batch.push((
                Found::Unreadable {
                    path: dir.path().join("locked"),
                    reason: "permission denied".to_string(),
                },
                None,
            ));
            contents.push(None);

            hash_unknown(
                &mut batch,
                &hash::ReadBuffers::default(),
                250_000,
                threads,
                &|| false,
            );

            for (i, ((_, cached), wanted)) in batch.iter().zip(&contents).enumerate() {
                let got = cached.as_ref().map(|c| c.checksum.clone());
                assert_eq!(&got, wanted, "file {i}, {threads} threads");
                let by_walk = cached.as_ref().is_some_and(|c| c.hashed);
                assert_eq!(
                    by_walk,
                    wanted.is_some() && i != 3,
                    "file {i}, {threads} threads"
                );
            }
        }
    }

    #[test]
    fn a_walk_nobody_takes_from_reads_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let mut batch = Batch::new();
        for i in 0..30u8 {
            let path = dir.path().join(format!("cv{i}.pdf"));
            std::fs::write(&path, vec![i; 200_000]).unwrap();
            batch.push(found(&path));
        }
        let asked = std::sync::atomic::AtomicUsize::new(0);
        // Taken for the first 4 files, then the receiver is gone.
        let stopped = || asked.fetch_add(1, Ordering::Relaxed) >= 4;
        hash_unknown(
            &mut batch,
            &hash::ReadBuffers::default(),
            u64::MAX,
            1,
            &stopped,
        );
        let hashed = batch.iter().filter(|(_, cached)| cached.is_some()).count();
        assert_eq!(hashed, 4);
    }
}
