//! Delivery of one file: check-duplicate, then upload, under the shared limiter, with retries.

pub mod aimd;
pub mod backoff;
pub mod limiter;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError, Upload};
use crate::config::Concurrency;
use crate::meta;
use crate::scan::stamp_of;
use crate::state::FileStamp;
use aimd::{AimdConfig, Outcome as Signal};
use limiter::Limiter;

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
        permanent: bool,
    },
    /// The file is no longer the version hashed: hash it again.
    Changed,
    /// The file is gone.
    Vanished,
    /// The key was rejected: the whole run must stop.
    Rejected(ApiError),
    Cancelled,
}

/// One file to deliver.
pub struct Job<'a> {
    pub root: &'a Path,
    pub path: &'a Path,
    pub stamp: FileStamp,
    pub checksum: &'a str,
}

/// Delivers files through one concurrency limit, shared by every file of the run.
pub struct Deliverer {
    api: Arc<ApiClient>,
    limiter: Arc<Limiter>,
    retry_count: u32,
    retry_delay: Duration,
}

impl Deliverer {
    pub fn new(
        api: Arc<ApiClient>,
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
        }
    }

    /// The shared limiter, for metrics.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Deliver one file. `on_retry(attempt, reason, delay)` hears of each transient failure.
    pub async fn deliver(
        &self,
        job: &Job<'_>,
        cancel: &CancellationToken,
        on_retry: impl Fn(u32, &str, Duration),
    ) -> Delivered {
        let upload = Upload {
            path: job.path,
            checksum: job.checksum,
            size: job.stamp.size,
            mime: meta::mime_type(job.path),
            job_hint: meta::job_hint(job.root, job.path),
            email: meta::email(job.path),
        };
        let mut last_error = String::new();
        for attempt in 0..=self.retry_count {
            // Reopened and re-checked on every attempt, like uv-publish.
            match tokio::fs::metadata(job.path).await {
                Ok(m) if stamp_of(job.path, &m) != job.stamp => return Delivered::Changed,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Delivered::Vanished,
                Err(e) => {
                    return Delivered::Failed {
                        reason: format!("cannot read: {e}"),
                        permanent: false,
                    }
                }
            }
            let result = tokio::select! {
                _ = cancel.cancelled() => return Delivered::Cancelled,
                permit = self.limiter.acquire() => {
                    if cancel.is_cancelled() {
                        return Delivered::Cancelled;
                    }
                    let result = self.attempt(&upload).await;
                    permit.done(signal_of(&result));
                    result
                }
            };
            let (message, retry_after) = match result {
                Err(ApiError::Transient {
                    message,
                    retry_after,
                    ..
                }) => (message, retry_after),
                Err(ApiError::Rejected { .. }) => return Delivered::Rejected(result.unwrap_err()),
                Err(ApiError::Permanent { status, message }) => {
                    return Delivered::Failed {
                        reason: format!("refused by the server ({status}): {message}"),
                        permanent: true,
                    }
                }
                Err(ApiError::FileChanged) => return Delivered::Changed,
                Err(ApiError::File(e)) => {
                    return Delivered::Failed {
                        reason: format!("cannot read: {e}"),
                        permanent: false,
                    }
                }
                Ok(done) => return done,
            };
            if attempt == self.retry_count {
                last_error = message;
                break;
            }
            let delay = backoff::delay(
                attempt,
                self.retry_delay,
                retry_after,
                rand::random::<f64>(),
            );
            on_retry(attempt + 1, &message, delay);
            tokio::select! {
                _ = cancel.cancelled() => return Delivered::Cancelled,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        Delivered::Failed {
            reason: format!(
                "gave up after {} attempts: {last_error}",
                self.retry_count + 1
            ),
            permanent: false,
        }
    }

    /// One attempt. The duplicate check runs every time: after a lost answer
    /// the bytes may be on the server already, and then there is nothing to send.
    async fn attempt(&self, upload: &Upload<'_>) -> Result<Delivered, ApiError> {
        match self.api.check_duplicate(upload.checksum).await {
            Ok(answer) if answer.exists => {
                return Ok(Delivered::AlreadyOnServer {
                    candidate_name: answer.candidate_name,
                })
            }
            Ok(_) => {}
            Err(e @ ApiError::Rejected { .. }) => return Err(e),
            // A failing check never blocks the upload: the server dedupes anyway.
            Err(e) => {
                tracing::debug!(path = %upload.path.display(), "duplicate check failed, uploading anyway: {e}")
            }
        }
        let candidate_id = self.api.upload(upload).await?;
        Ok(Delivered::Uploaded { candidate_id })
    }
}

/// What an attempt tells the concurrency controller. Only full uploads
/// measure the service's round trip; a quick "already there" or a refusal would
/// skew it, and errors that are not overload say nothing about capacity.
fn signal_of(result: &Result<Delivered, ApiError>) -> Signal {
    match result {
        Ok(Delivered::Uploaded { .. }) => Signal::Ok,
        Err(ApiError::Transient {
            back_pressure: true,
            ..
        }) => Signal::BackPressure,
        _ => Signal::Failed,
    }
}
