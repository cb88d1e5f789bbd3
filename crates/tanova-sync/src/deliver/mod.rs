//! Delivery of one file: check-duplicate, then upload, under the shared limiter, with retries.
//!
//! When the service takes batch uploads, the upload goes through the
//! [`batch::Batcher`] instead: the duplicate check runs under its own limiter
//! slot, then the file waits (at most [`batch::LINGER`]) to share one request,
//! and one slot, with other ready files. Each file's result comes back to its
//! own retry loop here, so retries, refusals and a rejected key are handled
//! exactly as for single uploads.

pub mod aimd;
pub mod batch;
pub mod limiter;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::api::wire::DuplicateAnswer;
use crate::api::{ApiClient, ApiError, Upload};
use crate::config::Concurrency;
use crate::fence::Fence;
use crate::hash::{self, HashError};
use crate::meta;
use crate::report::FailKind;
use crate::retry;
use crate::scan::stamp_of;
use crate::state::FileStamp;
use aimd::{AimdConfig, Signal};
use batch::{Answer, Batcher, OwnedUpload};
use limiter::Limiter;

/// How many times in a row a file may be sent again at once, without counting
/// an attempt, because another file of its batch changed under it.
const MAX_RESENDS: u32 = 3;

/// How a delivery ended.
#[derive(Debug)]
pub enum Delivered {
    Uploaded {
        candidate_id: Option<String>,
    },
    AlreadyOnServer {
        candidate_name: Option<String>,
    },
    Failed {
        reason: String,
        kind: FailKind,
    },
    /// The file is no longer the version hashed: hash it again.
    Changed,
    /// The claim on the bytes lapsed or passed to another agent: the last byte was not sent.
    LeaseLost,
    /// The file is gone.
    Vanished,
    /// A 401/403 (the key may be rejected: confirm it with the health check), or
    /// `tanova_url` redirects where the agent will not follow ([`ApiError::Misdirected`]).
    Rejected(ApiError),
    Cancelled,
}

/// One file to deliver.
pub struct Job<'a> {
    pub root: &'a Path,
    pub path: &'a Path,
    pub stamp: FileStamp,
    pub checksum: &'a str,
    /// The shared ledger's claim on the bytes, which must hold for the last byte to go out.
    pub fence: Option<Arc<Fence>>,
}

/// Delivers files through one concurrency limit, shared by every file of the run.
pub struct Deliverer {
    api: Arc<ApiClient>,
    limiter: Arc<Limiter>,
    retry_count: u32,
    retry_delay: Duration,
    /// The most files per batch the config allows; 1: no batches.
    batch_size: usize,
    /// Started once the service advertises batch uploads.
    batcher: OnceLock<Batcher>,
    /// The service refused a batch as a whole: one file per request from then on.
    batches_off: AtomicBool,
    /// The engine's gate: a request that got no answer in time has the
    /// service's health checked at once ([`Access::suspect_outage`]), and while
    /// the gate is closed for a service that does not answer, a delivery stops
    /// retrying and ends as a transient failure: a watching engine waits it
    /// out at the gate, a one-shot run reports it (the next run tries again).
    /// Retried as before, each try would hang for `request_timeout`.
    gate: Arc<Access>,
}

impl Deliverer {
    pub fn new(
        api: Arc<ApiClient>,
        gate: Arc<Access>,
        concurrency: Concurrency,
        retry_count: u32,
        retry_delay: Duration,
    ) -> Self {
        let limiter = match concurrency {
            Concurrency::Fixed(n) => Limiter::fixed(n),
            Concurrency::Adaptive { ceiling } => Limiter::adaptive(AimdConfig::new(Some(ceiling))),
        };
        Deliverer {
            api,
            limiter: Arc::new(limiter),
            retry_count,
            retry_delay,
            batch_size: 1,
            batcher: OnceLock::new(),
            batches_off: AtomicBool::new(false),
            gate,
        }
    }

    /// Allow batches of up to `n` files (config `batch_size`; 1 disables them).
    /// They are used only once [`Deliverer::use_batches`] hears the service offers them.
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Use batch uploads if the service offers them (`max_files` from its
    /// health answer): up to the smaller of `batch_size` and `max_files` per
    /// request. Call it within the runtime; only the first call counts.
    pub fn use_batches(&self, max_files: Option<usize>) {
        let n = self.batch_size.min(max_files.unwrap_or(0));
        if n < 2 || self.batcher.get().is_some() {
            return;
        }
        let batcher = self
            .batcher
            .get_or_init(|| Batcher::start(self.api.clone(), self.limiter.clone(), n));
        tracing::info!(
            "the service takes batch uploads: up to {} files per request",
            batcher.max_files()
        );
    }

    /// How many files one upload request carries at most: the batch size in use, else 1.
    pub fn files_per_request(&self) -> usize {
        self.batcher().map_or(1, Batcher::max_files)
    }

    fn batcher(&self) -> Option<&Batcher> {
        if self.batches_off.load(Ordering::Relaxed) {
            return None;
        }
        self.batcher.get()
    }

    /// Fall back to single uploads for the rest of the run.
    fn stop_batches(&self, reason: &str) {
        if !self.batches_off.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the service refused a batch upload ({reason}); uploading one file per request from now on"
            );
        }
    }

    /// The shared limiter, for metrics.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Deliver one file. `on_retry(attempt, reason, delay)` hears of each
    /// transient failure; `on_send()` hears, before each upload request, that
    /// the file's bytes are about to go out, and is awaited before they do.
    pub async fn deliver<'f>(
        &self,
        job: &Job<'_>,
        cancel: &CancellationToken,
        on_retry: impl Fn(u32, &str, Duration),
        on_send: impl Fn() -> BoxFuture<'f, ()>,
    ) -> Delivered {
        let upload = Upload {
            path: job.path,
            checksum: job.checksum,
            size: job.stamp.size,
            mime: meta::mime_type(job.path),
            job_hint: meta::job_hint(job.root, job.path),
            email: meta::email(job.path),
            fence: job.fence.clone(),
            bytes: None,
        };
        let policy = retry::Policy::retries(self.retry_count, self.retry_delay);
        let sent = AtomicBool::new(false);
        let on_send = || {
            sent.store(true, Ordering::Relaxed);
            on_send()
        };
        let delivered = retry::with_backoff(
            &policy,
            cancel,
            |_| self.try_once(job, &upload, cancel, &on_send),
            |attempt, message: &String, delay| on_retry(attempt, message, delay),
        )
        .await;
        match delivered {
            // The bytes went out on an earlier attempt whose answer was lost (a
            // dropped connection, no answer in time, a portal's page), and the
            // server has them now: that was this upload, not someone else's.
            Ok(Delivered::AlreadyOnServer { .. }) if sent.load(Ordering::Relaxed) => {
                Delivered::Uploaded { candidate_id: None }
            }
            Ok(done) => done,
            Err(retry::Ended::Stopped(_)) => Delivered::Cancelled,
            Err(retry::Ended::GaveUp(last_error)) => Delivered::Failed {
                reason: format!(
                    "gave up after {} attempts: {last_error}",
                    self.retry_count + 1
                ),
                kind: FailKind::Transient,
            },
        }
    }

    /// One try at delivering the file: its outcome, or the transient error to retry after.
    /// The file is reopened and re-checked on every try, like uv-publish.
    async fn try_once<'f>(
        &self,
        job: &Job<'_>,
        upload: &Upload<'_>,
        cancel: &CancellationToken,
        on_send: &impl Fn() -> BoxFuture<'f, ()>,
    ) -> Result<Delivered, retry::Again<String>> {
        // A rejected key is the engine's to handle (a one-shot run stops, a
        // watching one waits): the next try's 401 says so.
        if let Some(blocked) = self.gate.blocked().filter(|b| !b.is_key_problem()) {
            return Ok(Delivered::Failed {
                reason: blocked.explain(self.api.endpoint("").as_str()),
                kind: FailKind::Transient,
            });
        }
        if job.fence.as_ref().is_some_and(|f| !f.holds()) {
            return Ok(Delivered::LeaseLost);
        }
        let (path, stamp, sum) = (job.path.to_path_buf(), job.stamp, job.checksum.to_string());
        let look = crate::fs_threads::run(move || look_again(&path, &stamp, &sum))
            .await
            .unwrap_or_else(|e| Err(HashError::Io(e)));
        let bytes = match look {
            Ok(bytes) => bytes,
            Err(HashError::Changed) => return Ok(Delivered::Changed),
            Err(HashError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Delivered::Vanished)
            }
            Err(HashError::Io(e)) => {
                return Ok(Delivered::Failed {
                    reason: format!("cannot read: {e}"),
                    kind: FailKind::Counted,
                })
            }
        };
        let upload = &Upload {
            bytes,
            ..upload.clone()
        };
        let result = match self.send(upload, cancel, on_send).await {
            Some(result) => result,
            None => return Ok(Delivered::Cancelled),
        };
        Ok(match result {
            Err(ApiError::Transient {
                message,
                retry_after,
                ..
            }) => {
                return Err(retry::Again {
                    error: message,
                    after: retry_after,
                })
            }
            Err(e @ (ApiError::NoAnswer { .. } | ApiError::NotTheService { .. })) => {
                self.gate.suspect_outage(&e);
                return Err(retry::Again::new(e.to_string()));
            }
            Err(e @ (ApiError::Rejected { .. } | ApiError::Misdirected { .. })) => {
                Delivered::Rejected(e)
            }
            Err(ApiError::Permanent { status, message }) => Delivered::Failed {
                reason: format!("refused by the server ({status}): {message}"),
                kind: FailKind::Refused,
            },
            Err(ApiError::FileChanged) if job.fence.as_ref().is_some_and(|f| !f.holds()) => {
                Delivered::LeaseLost
            }
            Err(ApiError::FileChanged) => Delivered::Changed,
            // Deleted or renamed since the check above (found by the soak).
            Err(ApiError::File(_)) if !job.path.exists() => Delivered::Vanished,
            Err(ApiError::File(e)) => Delivered::Failed {
                reason: format!("cannot read: {e}"),
                kind: FailKind::Counted,
            },
            Ok(done) => done,
        })
    }

    /// Send the file once, through the batcher when batches are on, else on its
    /// own ([`Deliverer::attempt`]). `None` when cancelled first. A file whose
    /// batch was cut short by another file is sent again at once, a few times,
    /// without counting a try.
    async fn send<'f>(
        &self,
        upload: &Upload<'_>,
        cancel: &CancellationToken,
        on_send: &impl Fn() -> BoxFuture<'f, ()>,
    ) -> Option<Result<Delivered, ApiError>> {
        let mut resends = 0;
        loop {
            let Some(batcher) = self.batcher() else {
                return self.attempt(upload, cancel, on_send).await;
            };
            match self.attempt_batched(batcher, upload, cancel, on_send).await {
                Batched::Done(result) => return Some(result),
                Batched::Cancelled => return None,
                Batched::Resend if resends < MAX_RESENDS => resends += 1,
                Batched::Resend => {
                    return Some(Err(ApiError::Transient {
                        message: "not sent: another file of its batch kept changing".to_string(),
                        retry_after: None,
                        back_pressure: false,
                    }))
                }
                Batched::Unavailable(reason) => self.stop_batches(&reason),
            }
        }
    }

    /// One attempt on its own: the duplicate check, then the upload, each
    /// under a limiter slot of its own, as through the batcher, so that no
    /// slot waits for the intent's commit in between, and the limiter times
    /// the upload alone. The duplicate check runs every time: after a lost
    /// answer the bytes may be on the server already, and then there is
    /// nothing to send. `on_send` hears that the bytes are about to go out.
    /// `None` when cancelled first.
    async fn attempt<'f>(
        &self,
        upload: &Upload<'_>,
        cancel: &CancellationToken,
        on_send: &impl Fn() -> BoxFuture<'f, ()>,
    ) -> Option<Result<Delivered, ApiError>> {
        let check = self.api.check_duplicate(upload.checksum);
        let check = self.limited(cancel, check, |_| Signal::Neutral).await?;
        if let Some(answered) = answered_by_check(upload, check) {
            return Some(answered);
        }
        on_send().await;
        // Stopped while waiting for the upload's slot: the intent stays, so a
        // restart waits out `inflight_grace` before asking about these bytes.
        let uploaded = self
            .limited(cancel, self.api.upload(upload), signal_of)
            .await?;
        Some(uploaded.map(|candidate_id| Delivered::Uploaded { candidate_id }))
    }

    /// `request` under a limiter slot, its end told to the limiter as
    /// `signal` reads it; `None` when cancelled first.
    async fn limited<T>(
        &self,
        cancel: &CancellationToken,
        request: impl std::future::Future<Output = Result<T, ApiError>>,
        signal: impl FnOnce(&Result<T, ApiError>) -> Signal,
    ) -> Option<Result<T, ApiError>> {
        tokio::select! {
            _ = cancel.cancelled() => None,
            permit = self.limiter.acquire() => {
                if cancel.is_cancelled() {
                    return None;
                }
                let result = request.await;
                permit.done(signal(&result));
                Some(result)
            }
        }
    }

    /// One attempt through the batcher: the duplicate check under its own
    /// slot, then the upload in a batch under the batch's slot.
    async fn attempt_batched<'f>(
        &self,
        batcher: &Batcher,
        upload: &Upload<'_>,
        cancel: &CancellationToken,
        on_send: &impl Fn() -> BoxFuture<'f, ()>,
    ) -> Batched {
        let check = self.api.check_duplicate(upload.checksum);
        let Some(check) = self.limited(cancel, check, |_| Signal::Neutral).await else {
            return Batched::Cancelled;
        };
        if let Some(answered) = answered_by_check(upload, check) {
            return Batched::Done(answered);
        }
        on_send().await;
        let Some(pending) = batcher.submit(OwnedUpload::of(upload)) else {
            return Batched::Unavailable("the batcher stopped".to_string());
        };
        match pending.answer(cancel).await {
            None => Batched::Cancelled,
            Some(Answer::Uploaded { candidate_id }) => {
                Batched::Done(Ok(Delivered::Uploaded { candidate_id }))
            }
            Some(Answer::Failed(e)) => Batched::Done(Err(e)),
            Some(Answer::NotSent) => Batched::Resend,
            Some(Answer::Unavailable(reason)) => Batched::Unavailable(reason),
        }
    }
}

/// Files at most this size are read whole at the delivery's look and sent
/// from memory: one hand-off to a blocking thread instead of three (stat,
/// open, read), which on small files cost more than the bytes (issue 12).
/// Larger files are streamed from disk. A file waiting for an upload slot
/// holds its bytes too, so the cost is bounded by the pipeline's files in
/// flight (`Engine::pipeline`'s slots, about 130 by default): 4 MiB at most.
const IN_MEMORY: u64 = 32 * 1024;

/// The delivery's look at the file, on a blocking thread: the settle check's
/// second look (its stamp is still the one hashed), and for a small file its
/// bytes as hashed (`hash::read_as_hashed`), so that what goes out is what was
/// hashed. `Ok(None)`: a larger file, to stream from disk.
fn look_again(
    path: &Path,
    stamp: &FileStamp,
    checksum: &str,
) -> Result<Option<bytes::Bytes>, HashError> {
    if stamp.size <= IN_MEMORY {
        return hash::read_as_hashed(path, stamp, checksum).map(|bytes| Some(bytes.into()));
    }
    if stamp_of(path, &std::fs::metadata(path)?) != *stamp {
        return Err(HashError::Changed);
    }
    Ok(None)
}

/// How an attempt through the batcher ended.
enum Batched {
    /// As a single attempt would have.
    Done(Result<Delivered, ApiError>),
    Cancelled,
    /// Another file of the batch changed while it was sent: send this one again.
    Resend,
    /// The service refused the batch as a whole.
    Unavailable(String),
}

/// What the duplicate check says of the attempt: over when the bytes are on
/// the server already or the key is refused; else the upload goes ahead (a
/// failing check never blocks it: the server dedupes anyway). Except a check
/// with no answer in time, or one answered by something that is not the
/// service (a portal's page): what does not answer a few bytes of JSON will
/// not take a CV either, so the attempt ends there and is retried (and the
/// service's health is checked at once, `Deliverer::try_once`).
fn answered_by_check(
    upload: &Upload<'_>,
    check: Result<DuplicateAnswer, ApiError>,
) -> Option<Result<Delivered, ApiError>> {
    match check {
        Ok(answer) if answer.exists => Some(Ok(Delivered::AlreadyOnServer {
            candidate_name: answer.candidate_name,
        })),
        Ok(_) => None,
        Err(
            e @ (ApiError::Rejected { .. }
            | ApiError::Misdirected { .. }
            | ApiError::NoAnswer { .. }
            | ApiError::NotTheService { .. }),
        ) => Some(Err(e)),
        Err(e) => {
            tracing::debug!(path = %crate::privacy::redact::file(upload.path, Some(upload.checksum)), "duplicate check failed, uploading anyway: {e}");
            None
        }
    }
}

/// What an upload's end tells the concurrency controller. Only uploads
/// measure the service's round trip (the duplicate check is timed by no one),
/// and errors that are not overload say nothing about capacity.
fn signal_of<T>(result: &Result<T, ApiError>) -> Signal {
    match result {
        Ok(_) => Signal::Accepted,
        Err(
            ApiError::Transient {
                back_pressure: true,
                ..
            }
            | ApiError::NoAnswer { .. },
        ) => Signal::Refused,
        Err(_) => Signal::Neutral,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delivery's look at a small file: its bytes only when they are the
    /// version hashed, read no further than the hashed size.
    #[test]
    fn the_look_before_an_upload_reads_a_small_file_only_as_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cv.txt");
        std::fs::write(&path, b"hashed part").unwrap();
        let stamp = |path: &Path| stamp_of(path, &std::fs::metadata(path).unwrap());
        let hashed = stamp(&path);
        let sum = crate::hash::sha256_hex(b"hashed part");
        let bytes = |look: Result<Option<bytes::Bytes>, HashError>| match look {
            Ok(bytes) => Ok(bytes),
            Err(HashError::Changed) => Err("changed"),
            Err(HashError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Err("vanished"),
            Err(HashError::Io(_)) => Err("unreadable"),
        };
        assert_eq!(
            bytes(look_again(&path, &hashed, &sum)),
            Ok(Some(bytes::Bytes::from_static(b"hashed part")))
        );
        // Other bytes under a stamp that looks as hashed (a same-size rewrite
        // within the clock's tick): the digest tells.
        std::fs::write(&path, b"other bytes").unwrap();
        let restamped = stamp(&path);
        assert_eq!(bytes(look_again(&path, &restamped, &sum)), Err("changed"));
        // A stamp that moved on is a change, whatever the bytes.
        std::fs::write(&path, b"hashed part, then more").unwrap();
        assert_eq!(bytes(look_again(&path, &hashed, &sum)), Err("changed"));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(bytes(look_again(&path, &hashed, &sum)), Err("vanished"));
        // A large file is only looked at: it is streamed from disk.
        let big = dir.path().join("big.pdf");
        std::fs::write(&big, vec![7u8; IN_MEMORY as usize + 1]).unwrap();
        assert_eq!(bytes(look_again(&big, &stamp(&big), "unused")), Ok(None));
    }
}
