//! The batcher: files ready to upload are grouped and sent in one request under one limiter permit, and each file hears its own result.
//!
//! A batch closes when it holds `max` files or [`LINGER`] after its first file
//! arrived, whichever comes first; it then waits for a limiter slot, taking in
//! (up to `max`) whatever else became ready meanwhile, so batches fill up by
//! themselves when the service is the bottleneck. A file whose run was
//! cancelled before its batch was sent is left out; one already sent waits for
//! its answer, so that it can be recorded.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::aimd::Signal;
use super::limiter::{Limiter, Permit};
use crate::api::batch::BatchFile;
use crate::api::{ApiClient, ApiError, Upload};

/// The longest a ready file waits for others to share its request.
pub const LINGER: Duration = Duration::from_millis(20);

/// What the batcher tells one file.
#[derive(Debug, Clone)]
pub enum Answer {
    Uploaded {
        candidate_id: Option<String>,
    },
    /// The file's own failure, or the whole batch's (transient, or the key rejected).
    Failed(ApiError),
    /// Not delivered because another file of its batch changed while it was sent: send it again.
    NotSent,
    /// The server refused the batch as a whole (404, or another 4xx that names
    /// no file): send files one per request from now on.
    Unavailable(String),
}

/// An [`Upload`] that owns its fields, to wait in the batcher.
#[derive(Debug, Clone)]
pub struct OwnedUpload {
    pub path: PathBuf,
    pub checksum: String,
    pub size: u64,
    pub mime: &'static str,
    pub job_hint: Option<String>,
    pub email: Option<String>,
    pub fence: Option<Arc<crate::fence::Fence>>,
    /// A small file's bytes as read at its look: sent from memory, not read again.
    pub bytes: Option<bytes::Bytes>,
}

impl OwnedUpload {
    pub fn of(upload: &Upload<'_>) -> Self {
        OwnedUpload {
            path: upload.path.to_path_buf(),
            checksum: upload.checksum.to_string(),
            size: upload.size,
            mime: upload.mime,
            job_hint: upload.job_hint.clone(),
            email: upload.email.clone(),
            fence: upload.fence.clone(),
            bytes: upload.bytes.clone(),
        }
    }

    fn as_upload(&self) -> Upload<'_> {
        Upload {
            path: &self.path,
            checksum: &self.checksum,
            size: self.size,
            mime: self.mime,
            job_hint: self.job_hint.clone(),
            email: self.email.clone(),
            fence: self.fence.clone(),
            bytes: self.bytes.clone(),
        }
    }
}

/// Whether a queued file was sent or given up: whoever moves it first wins.
#[derive(Debug, Default)]
struct Ticket(AtomicU8);

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

impl Ticket {
    /// The batcher takes the file into a request; false if it was given up.
    fn take(&self) -> bool {
        self.move_to(TAKEN)
    }

    /// The file gives up waiting; false if it is already on its way.
    fn abandon(&self) -> bool {
        self.move_to(ABANDONED)
    }

    fn move_to(&self, state: u8) -> bool {
        self.0
            .compare_exchange(QUEUED, state, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

/// A file waiting in the batcher.
struct Queued {
    upload: OwnedUpload,
    ticket: Arc<Ticket>,
    reply: oneshot::Sender<Answer>,
}

/// A file's place in the batcher, to wait for its answer.
pub struct Pending {
    ticket: Arc<Ticket>,
    answer: oneshot::Receiver<Answer>,
}

impl Pending {
    /// The file's answer. When `cancel` fires first, `None` if the file was not
    /// sent yet (it never will be); once sent, its answer is still awaited.
    pub async fn answer(self, cancel: &CancellationToken) -> Option<Answer> {
        let mut answer = self.answer;
        tokio::select! {
            biased;
            got = &mut answer => return Some(got.unwrap_or(Answer::NotSent)),
            _ = cancel.cancelled() => {}
        }
        if self.ticket.abandon() {
            return None;
        }
        Some(answer.await.unwrap_or(Answer::NotSent))
    }
}

/// Groups files into batch requests. Its task ends when the batcher is dropped
/// and the batches in flight have been answered.
#[derive(Debug)]
pub struct Batcher {
    queue: mpsc::UnboundedSender<Queued>,
    max: usize,
}

impl Batcher {
    /// Start the batcher's task on the current runtime: batches of up to `max`
    /// files, each sent through `api` under one permit of `limiter`. Its queue
    /// is unbounded because the engine already bounds the files in flight.
    pub fn start(api: Arc<ApiClient>, limiter: Arc<Limiter>, max: usize) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let max = max.max(1);
        tokio::spawn(run(api, limiter, rx, max));
        Batcher { queue, max }
    }

    /// The most files in one request.
    pub fn max_files(&self) -> usize {
        self.max
    }

    /// Queue a file for the next batch; `None` if the batcher has stopped.
    pub fn submit(&self, upload: OwnedUpload) -> Option<Pending> {
        let ticket = Arc::new(Ticket::default());
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            upload,
            ticket: ticket.clone(),
            reply,
        };
        self.queue.send(queued).ok()?;
        Some(Pending { ticket, answer })
    }
}

async fn run(
    api: Arc<ApiClient>,
    limiter: Arc<Limiter>,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    max: usize,
) {
    // Set by the first refusal of a batch as a whole: later batches are answered without being sent.
    let refused = OnceLock::new();
    let mut sending = FuturesUnordered::new();
    loop {
        let gathered = gather(&mut queue, &limiter, max, LINGER);
        tokio::pin!(gathered);
        // Batches in flight make progress while the next one gathers.
        let next = loop {
            tokio::select! {
                next = &mut gathered => break next,
                Some(()) = sending.next(), if !sending.is_empty() => {}
            }
        };
        let Some((mut batch, permit)) = next else {
            break;
        };
        batch.retain(|queued: &Queued| queued.ticket.take());
        if batch.is_empty() {
            drop(permit);
            continue;
        }
        if let Some(reason) = refused.get() {
            drop(permit);
            for queued in batch {
                let _ = queued
                    .reply
                    .send(Answer::Unavailable(String::clone(reason)));
            }
            continue;
        }
        sending.push(send(&api, batch, permit, &refused));
    }
    while sending.next().await.is_some() {}
}

/// The next batch and the permit to send it: the first item, then more until
/// there are `max` or `linger` has passed, then a slot of `limiter`, then more
/// (up to `max`) that arrived while waiting for it. `None` once the queue is
/// closed and empty.
async fn gather<'l, T>(
    queue: &mut mpsc::UnboundedReceiver<T>,
    limiter: &'l Limiter,
    max: usize,
    linger: Duration,
) -> Option<(Vec<T>, Permit<'l>)> {
    let first = queue.recv().await?;
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, queue.recv()).await {
            Ok(Some(item)) => batch.push(item),
            Ok(None) | Err(_) => break,
        }
    }
    let permit = limiter.acquire().await;
    while batch.len() < max {
        match queue.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some((batch, permit))
}

/// Send one batch and tell each file how it went.
async fn send(api: &ApiClient, batch: Vec<Queued>, permit: Permit<'_>, refused: &OnceLock<String>) {
    let uploads: Vec<Upload<'_>> = batch.iter().map(|q| q.upload.as_upload()).collect();
    tracing::debug!(files = uploads.len(), "sending a batch");
    let result = api.upload_batch(&uploads).await;
    permit.done(signal_of(&result));
    drop(uploads);
    match result {
        Ok(files) => {
            for (queued, file) in batch.into_iter().zip(files) {
                let answer = match file {
                    BatchFile::Uploaded(candidate_id) => Answer::Uploaded { candidate_id },
                    BatchFile::Failed(e) => Answer::Failed(e),
                    BatchFile::NotSent => Answer::NotSent,
                };
                // A file that stopped waiting has nobody to tell.
                let _ = queued.reply.send(answer);
            }
        }
        Err(e) => {
            let answer = match e {
                ApiError::Permanent { status, message } => {
                    let reason = refused.get_or_init(|| format!("{status}: {message}"));
                    Answer::Unavailable(reason.clone())
                }
                other => Answer::Failed(other),
            };
            for queued in batch {
                let _ = queued.reply.send(answer.clone());
            }
        }
    }
}

/// What a batch tells the concurrency controller: back-pressure if the
/// service pushed back on it or on any of its files, a served request if any
/// file was taken, otherwise nothing.
fn signal_of(result: &Result<Vec<BatchFile>, ApiError>) -> Signal {
    let pushed_back = |e: &ApiError| {
        matches!(
            e,
            ApiError::Transient {
                back_pressure: true,
                ..
            } | ApiError::NoAnswer { .. }
        )
    };
    match result {
        Err(e) if pushed_back(e) => Signal::Refused,
        Err(_) => Signal::Neutral,
        Ok(files)
            if files
                .iter()
                .any(|f| matches!(f, BatchFile::Failed(e) if pushed_back(e))) =>
        {
            Signal::Refused
        }
        Ok(files) if files.iter().any(|f| matches!(f, BatchFile::Uploaded(_))) => Signal::Accepted,
        Ok(_) => Signal::Neutral,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items sent at (ms after start, item); the batches gathered, with the
    /// ms at which each got its permit. Each permit is held for `hold` ms.
    async fn batches(
        max: usize,
        slots: usize,
        hold: u64,
        arrivals: &[(u64, u32)],
    ) -> Vec<(u64, Vec<u32>)> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t0 = tokio::time::Instant::now();
        let arrivals = arrivals.to_vec();
        tokio::spawn(async move {
            for (at, item) in arrivals {
                tokio::time::sleep_until(t0 + Duration::from_millis(at)).await;
                tx.send(item).unwrap();
            }
            // Closing the queue ends a gathering early; stay open well past the last batch.
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let limiter = Limiter::fixed(slots);
        let mut held = FuturesUnordered::new();
        let mut out = Vec::new();
        loop {
            let gathered = gather(&mut rx, &limiter, max, LINGER);
            tokio::pin!(gathered);
            let next = loop {
                tokio::select! {
                    next = &mut gathered => break next,
                    Some(()) = held.next(), if !held.is_empty() => {}
                }
            };
            let Some((batch, permit)) = next else { break };
            out.push((t0.elapsed().as_millis() as u64, batch));
            held.push(async move {
                tokio::time::sleep(Duration::from_millis(hold)).await;
                drop(permit);
            });
        }
        out
    }

    /// (name, max files, limiter slots, ms each permit is held, arrivals, batches wanted)
    type Case = (
        &'static str,
        usize,
        usize,
        u64,
        Vec<(u64, u32)>,
        Vec<(u64, Vec<u32>)>,
    );

    #[tokio::test(start_paused = true)]
    async fn gathering_table() {
        let table: Vec<Case> = vec![
            (
                "a lone file goes after the linger",
                4,
                1,
                100,
                vec![(0, 1)],
                vec![(20, vec![1])],
            ),
            (
                "a full batch goes at once",
                3,
                4,
                100,
                vec![(0, 1), (1, 2), (2, 3), (3, 4)],
                vec![(2, vec![1, 2, 3]), (23, vec![4])],
            ),
            (
                "the linger counts from the first file, not the last",
                8,
                4,
                100,
                vec![(0, 1), (15, 2), (30, 3)],
                vec![(20, vec![1, 2]), (50, vec![3])],
            ),
            (
                "files that arrive while waiting for a slot join the batch",
                3,
                1,
                100,
                vec![(0, 1), (0, 2), (30, 3), (40, 4), (55, 5), (60, 6)],
                // Slot busy until 120: [3] waits for it, joined by 4 and 5; 6 waits for the next.
                vec![(20, vec![1, 2]), (120, vec![3, 4, 5]), (220, vec![6])],
            ),
        ];
        for (name, max, slots, hold, arrivals, want) in table {
            let got = batches(max, slots, hold, &arrivals).await;
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_ticket_is_taken_or_abandoned_never_both() {
        let t = Ticket::default();
        assert!(t.take());
        assert!(!t.abandon());
        let t = Ticket::default();
        assert!(t.abandon());
        assert!(!t.take());
    }

    #[test]
    fn signals() {
        let transient = |bp| ApiError::Transient {
            message: String::new(),
            retry_after: None,
            back_pressure: bp,
        };
        let up = || BatchFile::Uploaded(None);
        let table = [
            (Ok(vec![up(), up()]), Signal::Accepted),
            (
                Ok(vec![up(), BatchFile::Failed(transient(true))]),
                Signal::Refused,
            ),
            (
                Ok(vec![up(), BatchFile::Failed(transient(false))]),
                Signal::Accepted,
            ),
            (Ok(vec![BatchFile::NotSent]), Signal::Neutral),
            (Err(transient(true)), Signal::Refused),
            (Err(transient(false)), Signal::Neutral),
            (
                Err(ApiError::Permanent {
                    status: 404,
                    message: String::new(),
                }),
                Signal::Neutral,
            ),
        ];
        for (result, want) in table {
            assert_eq!(signal_of(&result), want, "{result:?}");
        }
    }

    #[test]
    fn a_queued_file_keeps_the_bytes_read_at_its_look() {
        let bytes = bytes::Bytes::from_static(b"a small cv");
        let upload = Upload {
            path: std::path::Path::new("cv.pdf"),
            checksum: "sum",
            size: 10,
            mime: "application/pdf",
            job_hint: Some("hint".to_string()),
            email: None,
            fence: None,
            bytes: Some(bytes.clone()),
        };
        let queued = OwnedUpload::of(&upload);
        let again = queued.as_upload();
        assert_eq!(
            (again.bytes, again.job_hint),
            (Some(bytes), upload.job_hint)
        );
    }
}
