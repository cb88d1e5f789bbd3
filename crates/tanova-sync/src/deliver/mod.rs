//! Delivery of one file: check-duplicate, then upload, under the shared limiter, with retries.

pub mod backoff;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError, Upload};
use crate::meta;
use crate::scan::stamp_of;
use crate::state::FileStamp;

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
    limiter: Arc<Semaphore>,
    retry_count: u32,
    retry_delay: Duration,
}

impl Deliverer {
    pub fn new(
        api: Arc<ApiClient>,
        concurrency: usize,
        retry_count: u32,
        retry_delay: Duration,
    ) -> Self {
        Deliverer {
            api,
            limiter: Arc::new(Semaphore::new(concurrency)),
            retry_count,
            retry_delay,
        }
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
                    let _permit = permit.expect("the limiter is never closed");
                    if cancel.is_cancelled() {
                        return Delivered::Cancelled;
                    }
                    self.attempt(&upload).await
                }
            };
            let (message, retry_after) = match result {
                Err(ApiError::Transient {
                    message,
                    retry_after,
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
