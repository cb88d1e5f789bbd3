//! The pipeline: discover → hash → plan → deliver → record, one path for every mode.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::wire::Health;
use crate::api::{ApiClient, ApiError, Timeouts};
use crate::config::{Concurrency, Config};
use crate::deliver::{backoff, Delivered, Deliverer, Job};
use crate::filter;
use crate::hash::{self, HashError};
use crate::plan::{plan, Plan};
use crate::report::{Outcome, Reporter, Summary};
use crate::scan::{self, stamp_of, Found};
use crate::state::redis::Claim;
use crate::state::{Cached, FileStamp, Ledger, StateError, Store};

/// How long a file that changed while being read is left to settle before it is read again.
const SETTLE: Duration = Duration::from_millis(500);
/// How many times a changing file is re-read before it is left for the next run.
const MAX_REHASH: u32 = 3;
/// How long uploads in flight may take to finish after a stop was asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// The first wait before asking an unreachable ledger again; it doubles up to [`LEDGER_MAX_WAIT`].
const LEDGER_RETRY: Duration = Duration::from_millis(200);
const LEDGER_MAX_WAIT: Duration = Duration::from_secs(10);
/// Items queued between discovery and the pipeline.
pub const ITEM_QUEUE: usize = 1024;

/// Where one pass over a file leads.
enum Step {
    /// Record this outcome under the file's checksum, then count it.
    Record(Outcome),
    /// Counted already, or the run is stopping: nothing more to do.
    Done,
    /// The file changed: hash this version again.
    Rehash(FileStamp),
}

/// A discovered file with what the cache knows about it.
pub type Item = (Found, Option<Cached>);

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
    api: Arc<ApiClient>,
    deliverer: Deliverer,
    store: Arc<dyn Store>,
    /// Where the synced set and claims are shared with other agents, if they are.
    ledger: Ledger,
    reporter: Arc<dyn Reporter>,
    hashers: Semaphore,
    /// Checksums being delivered in this run, so equal files are sent once.
    claims: Mutex<HashSet<String>>,
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
    ) -> Result<Self, String> {
        let timeouts = Timeouts {
            connect: Duration::from_secs(10),
            read: config.request_timeout,
        };
        let rate = config
            .max_requests_per_minute
            .map(|n| Arc::new(crate::deliver::rate::RateLimiter::per_minute(n)));
        let api = Arc::new(
            ApiClient::with_extra_roots(
                &config.url,
                &config.api_key,
                timeouts,
                &config.extra_roots,
            )?
            .with_rate_limit(rate),
        );
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
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
                deliverer: Deliverer::new(
                    api.clone(),
                    config.concurrency,
                    config.retry_count,
                    config.retry_delay,
                )
                .with_batch_size(config.batch_size),
                api,
                store,
                ledger: Ledger::Local,
                reporter,
                hashers: Semaphore::new(cores),
                claims: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// Share the synced set and claims with other agents through `ledger`.
    /// Call it on a new engine, before it is cloned.
    pub fn with_ledger(mut self, ledger: Ledger) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("the ledger is set before the engine is shared")
            .ledger = ledger;
        self
    }

    /// Check the key and its permissions, retrying while the service is unreachable.
    pub async fn check_access(&self, cancel: &CancellationToken) -> Result<Health, EngineError> {
        let inner = &self.inner;
        let mut attempt = 0;
        loop {
            match inner.api.health().await {
                Ok(health) => {
                    let can_upload = health.permissions.as_ref().is_none_or(|p| p.can_upload);
                    if !can_upload {
                        return Err(EngineError::NoUploadPermission {
                            url: inner.api.endpoint("").to_string(),
                        });
                    }
                    inner.deliverer.use_batches(health.batch_max_files());
                    return Ok(health);
                }
                Err(e @ ApiError::Rejected { .. }) => return Err(EngineError::KeyRejected(e)),
                // Retrying cannot help: the address itself is wrong.
                Err(e @ ApiError::Misdirected { .. }) => return Err(EngineError::Misdirected(e)),
                Err(e) if attempt >= inner.retry_count => {
                    return Err(EngineError::Unreachable(e.to_string()))
                }
                Err(e) => {
                    let retry_after = match &e {
                        ApiError::Transient { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let delay = backoff::delay(
                        attempt,
                        inner.retry_delay,
                        retry_after,
                        rand::random::<f64>(),
                    );
                    tracing::warn!("{e}; retrying in {:.1}s", delay.as_secs_f64());
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(EngineError::Unreachable(e.to_string())),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    attempt += 1;
                }
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
        let (tx, rx) = mpsc::channel(ITEM_QUEUE);
        let walker = self.scan_into(self.inner.root.clone(), tx);
        let result = self.pipeline(rx, cancel).await;
        let _ = walker.await;
        result
    }

    /// Walk `dir` (the folder or part of it) on a blocking thread, sending each
    /// candidate with what the cache knows about it. Stops when the receiver is gone.
    pub fn scan_into(&self, dir: PathBuf, tx: mpsc::Sender<Item>) -> tokio::task::JoinHandle<()> {
        let store = self.inner.store.clone();
        let follow_links = self.inner.follow_symlinks;
        tokio::task::spawn_blocking(move || {
            scan::walk(&dir, follow_links, |found| {
                // Looked up here, off the async threads: a no-op rescan is one walk plus one indexed read per file.
                let cached = match &found {
                    Found::File { stamp, .. } => lookup(store.as_ref(), stamp),
                    Found::Unreadable { .. } => None,
                };
                tx.blocking_send((found, cached)).is_ok()
            })
        })
    }

    /// The item for one path, as the scan would produce it; `None` when it is
    /// not a candidate file (a folder, a lock file) or no longer exists.
    pub fn item_for(&self, path: &Path) -> Option<Item> {
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
            },
            cached,
        ))
    }

    /// Process items until the channel closes or `cancel` fires. After a
    /// cancel, uploads in flight get [`SHUTDOWN_GRACE`] to finish and be recorded.
    pub async fn pipeline(
        &self,
        mut rx: mpsc::Receiver<Item>,
        cancel: &CancellationToken,
    ) -> (Summary, Option<EngineError>) {
        let started = Instant::now();
        let run = Arc::new(Run {
            tally: Mutex::new(Summary::default()),
            fatal: Mutex::new(None),
            cancel: cancel.child_token(),
        });
        // Enough files in flight to keep both the hashers and the uploads busy, and no more.
        let slots = Arc::new(Semaphore::new(
            self.inner.concurrency.ceiling() * self.inner.deliverer.files_per_request() * 2
                + self.inner.hashers.available_permits() * 2,
        ));
        let mut tasks = JoinSet::new();
        loop {
            let next = tokio::select! {
                _ = run.cancel.cancelled() => None,
                next = rx.recv() => next,
            };
            let Some((found, cached)) = next else { break };
            {
                let mut tally = run.tally.lock().unwrap();
                tally.found += 1;
                self.inner.reporter.found(&tally);
            }
            match found {
                Found::Unreadable { path, reason } => {
                    let outcome = Outcome::Failed {
                        reason: format!("cannot read: {reason}"),
                        permanent: false,
                    };
                    self.inner.record_and_finish(&run, &path, None, outcome);
                }
                Found::File { path, stamp } => {
                    if let Some(outcome) = self.inner.quick_outcome(&stamp, cached.as_ref()) {
                        self.inner.record_and_finish(&run, &path, None, outcome);
                        continue;
                    }
                    let permit = tokio::select! {
                        _ = run.cancel.cancelled() => break,
                        p = slots.clone().acquire_owned() => p.expect("never closed"),
                    };
                    let inner = self.inner.clone();
                    let run = run.clone();
                    let checksum = cached.map(|c| c.checksum);
                    tasks.spawn(async move {
                        let _permit = permit;
                        inner.process(&run, path, stamp, checksum).await;
                    });
                }
            }
            while let Some(done) = tasks.try_join_next() {
                log_panic(done);
            }
        }
        drop(rx);
        // Every file started is seen through, however long the service takes;
        // only after a stop do uploads in flight get no more than SHUTDOWN_GRACE.
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

/// A cache miss when the state cannot be read: the file is then hashed, which is safe.
fn lookup(store: &dyn Store, stamp: &FileStamp) -> Option<Cached> {
    store.lookup(stamp).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        None
    })
}

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!("a file task failed: {e}");
    }
}

impl Inner {
    /// Outcomes known without reading the file.
    fn quick_outcome(&self, stamp: &FileStamp, cached: Option<&Cached>) -> Option<Outcome> {
        if let Some(problem) = filter::size_problem(stamp.size, self.max_file_size) {
            return Some(if stamp.size == 0 {
                Outcome::Ignored { reason: problem }
            } else {
                Outcome::Failed {
                    reason: problem,
                    permanent: true,
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
        mut checksum: Option<String>,
    ) {
        for _ in 0..=MAX_REHASH {
            let sum = match checksum.take() {
                Some(sum) => sum,
                None => match self.checksum_of(run, &path, &stamp).await {
                    Ok(sum) => sum,
                    Err(Step::Rehash(new)) => {
                        stamp = new;
                        continue;
                    }
                    Err(_) => return,
                },
            };
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
                        permanent: true,
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
                    let step = self.deliver_planned(run, &path, stamp, &sum).await;
                    self.claims.lock().unwrap().remove(&sum);
                    step
                }
            };
            match step {
                Step::Record(outcome) => {
                    return self.record_and_finish(run, &path, Some(&sum), outcome)
                }
                Step::Done => return,
                Step::Rehash(new) => stamp = new,
            }
        }
        let outcome = Outcome::Failed {
            reason: "kept changing while being read; it will be tried again on the next run"
                .to_string(),
            permanent: false,
        };
        self.record_and_finish(run, &path, None, outcome)
    }

    /// Hash the file and cache its checksum; the step to take instead when that fails.
    async fn checksum_of(&self, run: &Run, path: &Path, stamp: &FileStamp) -> Result<String, Step> {
        match self.hash(path, stamp).await {
            Ok(sum) => {
                run.tally.lock().unwrap().hashed += 1;
                if let Err(e) = self.store.remember(stamp, &sum) {
                    tracing::warn!("{e}");
                }
                Ok(sum)
            }
            Err(HashError::Changed) => Err(self.changed(run, path).await),
            Err(HashError::Io(e)) => {
                let outcome = Outcome::Failed {
                    reason: format!("cannot read: {e}"),
                    permanent: false,
                };
                self.record_and_finish(run, path, None, outcome);
                Err(Step::Done)
            }
        }
    }

    /// Claim the checksum in the ledger, deliver it while the claim is held,
    /// and share the result with the other agents.
    async fn deliver_planned(&self, run: &Run, path: &Path, stamp: FileStamp, sum: &str) -> Step {
        match self.claim(run, sum).await {
            Some(Claim::Claimed) => {}
            Some(Claim::Synced { candidate }) => {
                self.mirror_synced(run, path, sum, candidate.as_deref());
                return Step::Done;
            }
            Some(Claim::Busy { holder }) => {
                let reason = format!("being uploaded by another agent ({holder})");
                self.finish(run, path, Outcome::Deferred { reason });
                return Step::Done;
            }
            // Stopped while waiting for the ledger.
            None => return Step::Done,
        }
        let delivered = self.deliver_claimed(run, path, stamp, sum).await;
        match &delivered {
            Delivered::Uploaded { candidate_id } => {
                self.share_synced(run, sum, candidate_id.as_deref()).await
            }
            Delivered::AlreadyOnServer { .. } => self.share_synced(run, sum, None).await,
            _ => self.release(sum).await,
        }
        match delivered {
            Delivered::Uploaded { candidate_id } => Step::Record(Outcome::Uploaded {
                candidate_id,
                bytes: stamp.size,
            }),
            Delivered::AlreadyOnServer { candidate_name } => {
                Step::Record(Outcome::OnServer { candidate_name })
            }
            Delivered::Failed { reason, permanent } => {
                Step::Record(Outcome::Failed { reason, permanent })
            }
            Delivered::Changed => self.changed(run, path).await,
            Delivered::Vanished => {
                self.vanished(run, path);
                Step::Done
            }
            Delivered::Rejected(e @ ApiError::Misdirected { .. }) => {
                self.stop(run, EngineError::Misdirected(e));
                Step::Done
            }
            Delivered::Rejected(e) => {
                self.stop(run, EngineError::KeyRejected(e));
                Step::Done
            }
            Delivered::Cancelled => Step::Done,
        }
    }

    /// The file is not the version found: wait for it to settle and hash it again, unless it is gone.
    async fn changed(&self, run: &Run, path: &Path) -> Step {
        match self.resettle(path).await {
            Some(new) => Step::Rehash(new),
            None => {
                self.vanished(run, path);
                Step::Done
            }
        }
    }

    /// Plan the checksum, claiming it for this run when it is to be delivered.
    fn decide(&self, sum: &str) -> Result<Plan, StateError> {
        let synced = self.store.is_synced(sum)?;
        let failure = if synced {
            None
        } else {
            self.store.failure(sum)?
        };
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
    /// cannot be reached: nothing is uploaded that cannot be recorded.
    /// `None` when the run was stopped meanwhile.
    async fn claim(&self, run: &Run, sum: &str) -> Option<Claim> {
        let mut attempt = 0;
        loop {
            match self.ledger.claim(sum).await {
                Ok(claim) => return Some(claim),
                // Logged by the ledger once per outage.
                Err(e) => tracing::debug!("claiming {sum}: {e}"),
            }
            tokio::select! {
                _ = run.cancel.cancelled() => return None,
                _ = tokio::time::sleep(self.ledger_wait(attempt)) => {}
            }
            attempt += 1;
        }
    }

    /// Record delivered bytes in the shared ledger (which releases the claim),
    /// retrying while it is unreachable, until it works or the run is stopped.
    /// If it never does, the server's duplicate check tells other agents.
    async fn share_synced(&self, run: &Run, sum: &str, candidate: Option<&str>) {
        let mut attempt = 0;
        loop {
            let error = match self.ledger.record_synced(sum, candidate).await {
                Ok(()) => return,
                Err(e) => e,
            };
            if run.cancel.is_cancelled() {
                tracing::warn!(
                    "{error}: {sum} is recorded as synced on this machine only; \
                     another agent will find it on the server"
                );
                return;
            }
            tracing::debug!("recording {sum}: {error}");
            tokio::select! {
                _ = run.cancel.cancelled() => {}
                _ = tokio::time::sleep(self.ledger_wait(attempt)) => {}
            }
            attempt += 1;
        }
    }

    /// Give a claim back after a delivery that synced nothing; best effort, as the lease expires anyway.
    async fn release(&self, sum: &str) {
        if let Err(e) = self.ledger.release(sum).await {
            tracing::debug!("releasing {sum}: {e}");
        }
    }

    fn ledger_wait(&self, attempt: u32) -> Duration {
        backoff::delay(attempt, LEDGER_RETRY, None, rand::random::<f64>()).min(LEDGER_MAX_WAIT)
    }

    /// Another agent synced these bytes: mirror that here, so this machine never asks again.
    fn mirror_synced(&self, run: &Run, path: &Path, sum: &str, candidate: Option<&str>) {
        let shown = path.display().to_string();
        if let Err(e) = self.store.record_synced(sum, candidate, &shown) {
            return self.stop(run, e.into());
        }
        self.finish(run, path, Outcome::AlreadySynced);
    }

    /// Deliver while keeping the claim on the bytes alive.
    async fn deliver_claimed(
        &self,
        run: &Run,
        path: &Path,
        stamp: FileStamp,
        sum: &str,
    ) -> Delivered {
        let on_lost = |_: &str| {
            tracing::warn!(
                "{}: the claim on its bytes passed to another agent during the upload \
                 (is lease_ms long enough?); the server's duplicate check still applies",
                path.display()
            )
        };
        tokio::select! {
            delivered = self.deliver(run, path, stamp, sum) => delivered,
            never = self.ledger.keep_claim(sum, on_lost) => match never {},
        }
    }

    async fn deliver(&self, run: &Run, path: &Path, stamp: FileStamp, sum: &str) -> Delivered {
        let job = Job {
            root: &self.root,
            path,
            stamp,
            checksum: sum,
        };
        let reporter = &self.reporter;
        let started = Instant::now();
        let delivered = self
            .deliverer
            .deliver(&job, &run.cancel, |attempt, reason, delay| {
                tracing::debug!(path = %path.display(), attempt, "retrying in {:.1}s: {reason}", delay.as_secs_f64());
                reporter.retrying(path, attempt, reason, delay);
            })
            .await;
        if matches!(delivered, Delivered::Uploaded { .. }) {
            reporter.upload_timed(path, started.elapsed());
        }
        delivered
    }

    /// Hash off the async threads, at most one file per core at a time.
    async fn hash(&self, path: &Path, stamp: &FileStamp) -> Result<String, HashError> {
        let _permit = self.hashers.acquire().await.expect("never closed");
        let (path, stamp) = (path.to_path_buf(), *stamp);
        tokio::task::spawn_blocking(move || hash::hash_file(&path, &stamp))
            .await
            .unwrap_or_else(|e| Err(HashError::Io(std::io::Error::other(e))))
    }

    /// Wait for a changing file to settle, and return its new stamp (None if it is gone).
    async fn resettle(&self, path: &Path) -> Option<FileStamp> {
        tokio::time::sleep(SETTLE).await;
        let meta = tokio::fs::metadata(path).await.ok()?;
        Some(stamp_of(path, &meta))
    }

    fn vanished(&self, run: &Run, path: &Path) {
        let outcome = Outcome::Ignored {
            reason: "disappeared before it could be uploaded".to_string(),
        };
        self.record_and_finish(run, path, None, outcome);
    }

    /// Record the outcome durably, then count and report it.
    fn record_and_finish(&self, run: &Run, path: &Path, sum: Option<&str>, outcome: Outcome) {
        let shown = path.display().to_string();
        let recorded = match (&outcome, sum) {
            (Outcome::Uploaded { candidate_id, .. }, Some(sum)) => {
                self.store
                    .record_synced(sum, candidate_id.as_deref(), &shown)
            }
            (Outcome::OnServer { .. }, Some(sum)) => self.store.record_synced(sum, None, &shown),
            (Outcome::Failed { reason, permanent }, sum) => {
                self.store.record_failure(&shown, sum, reason, *permanent)
            }
            _ => Ok(()),
        };
        if let Err(e) = recorded {
            return self.stop(run, e.into());
        }
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
        let mut fatal = run.fatal.lock().unwrap();
        if fatal.is_none() {
            *fatal = Some(error);
        }
        run.cancel.cancel();
    }
}
