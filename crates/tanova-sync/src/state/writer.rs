//! Group commit: the pipeline's state writes, many files to a transaction.
//!
//! Every outcome and every upload intent must be committed before the
//! pipeline goes on (counts the file, sends its bytes). One transaction each
//! was about a fifth of a first sync's CPU (issue 12): its locks, its WAL
//! frames and its page writes, paid per file, on the async threads. Here one
//! thread owns the writing: it takes every write waiting, commits them in one
//! transaction, then answers each. Under load the writes of many files share a
//! commit; alone, a write is committed at once, with no timer and no wait.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Result, StateError, Store};
use crate::privacy::AuditEntry;

/// Most writes in one transaction: enough to share a commit among every
/// upload in flight, few enough that one commit stays short.
const MAX_GROUP: usize = 512;

/// One write of the pipeline's, as [`Store::apply`] takes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// An upload of these bytes is about to start; its outcome clears it.
    Intent { checksum: String, path: String },
    /// It ended without reaching the server whole, or long enough ago.
    ClearIntent { checksum: String },
    /// The bytes are synced (uploaded, or found on the server), with the
    /// audit record of the delivery when there was one; clears the path's
    /// failures and the bytes' intent.
    Synced {
        checksum: String,
        candidate: Option<String>,
        path: String,
        audit: Option<AuditEntry>,
    },
    /// A failure of a path. Attempts count across runs when `counts` (an
    /// outage never counts), and start again for new bytes at the path.
    Failure {
        path: String,
        checksum: Option<String>,
        reason: String,
        permanent: bool,
        counts: bool,
    },
    /// A rule kept the file back (`status` counts them).
    Suppressed {
        path: String,
        checksum: Option<String>,
        rule: String,
    },
}

type Job = (Write, oneshot::Sender<Result<()>>);

/// The writing thread and the queue to it. Dropping it lets the thread commit
/// what is queued and waits for it to end.
pub struct StateWriter {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    store: Arc<dyn Store>,
}

impl StateWriter {
    /// Start the thread that writes to `store`. Should the system refuse a
    /// thread, each write is committed on its own by its caller instead.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (queue, jobs) = mpsc::channel::<Job>();
        let writing = store.clone();
        let spawned = std::thread::Builder::new()
            .name("state-writer".to_string())
            .spawn(move || write_groups(writing.as_ref(), &jobs));
        match spawned {
            Ok(thread) => StateWriter {
                queue: Some(queue),
                thread: Some(thread),
                store,
            },
            Err(e) => {
                tracing::warn!("cannot start the state's writing thread ({e}): each outcome is committed on its own");
                StateWriter {
                    queue: None,
                    thread: None,
                    store,
                }
            }
        }
    }

    /// Write, and return once it is committed (with the writes of other files
    /// that waited at the same time).
    pub async fn write(&self, write: Write) -> Result<()> {
        let Some(queue) = &self.queue else {
            return self.store.apply(std::slice::from_ref(&write));
        };
        let (answer, answered) = oneshot::channel();
        if queue.send((write, answer)).is_err() {
            return Err(self.stopped());
        }
        answered.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    /// The thread is gone (it panicked): say so, naming the database.
    fn stopped(&self) -> StateError {
        StateError::File {
            path: self.store.path().to_path_buf(),
            message: "the thread that writes the state stopped".to_string(),
        }
    }
}

impl Drop for StateWriter {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// After this long with nothing to write, what was written is folded into
/// the main file ([`Store::checkpoint`]): SQLite itself does so only every
/// 10,000 journal pages, which a quiet watch may take days to fill.
const QUIET: Duration = Duration::from_secs(1);

/// The thread: wait for a write, take every other one waiting, commit them
/// together, answer each. When the group cannot be committed, each write is
/// tried alone, so one bad write fails only itself.
fn write_groups(store: &dyn Store, jobs: &mpsc::Receiver<Job>) {
    let mut unfolded = false;
    loop {
        // Nothing to fold in: wait for ever (std waits without a deadline for Duration::MAX).
        let wait = if unfolded { QUIET } else { Duration::MAX };
        let first = match jobs.recv_timeout(wait) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = store.checkpoint() {
                    tracing::debug!("checkpoint: {e}");
                }
                unfolded = false;
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        unfolded = true;
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let (writes, answers): (Vec<Write>, Vec<_>) = group.into_iter().unzip();
        if writes.len() == 1 || store.apply(&writes).is_err() {
            for (write, answer) in writes.iter().zip(answers) {
                let _ = answer.send(store.apply(std::slice::from_ref(write)));
            }
        } else {
            for answer in answers {
                let _ = answer.send(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SqliteStore;

    fn intent(path: &str) -> Write {
        Write::Intent {
            checksum: format!("sum of {path}"),
            path: path.to_string(),
        }
    }

    /// Once writing goes quiet, what was written is in the main file, where a
    /// reader that does not see the journal (`--dry-run`) finds it; SQLite
    /// alone would leave it in the journal until 10,000 pages had gathered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_was_written_reaches_the_main_file_once_writing_goes_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let writer = StateWriter::start(store.clone());
        writer.write(intent("quiet.pdf")).await.unwrap();
        // Before the checkpoint even the tables are only in the journal.
        let seen_without_the_journal = || {
            SqliteStore::open_read_only(dir.path())
                .and_then(|s| s.intents())
                .is_ok_and(|intents| intents.len() == 1)
        };
        let patience = Duration::from_secs(10);
        let deadline = std::time::Instant::now() + patience;
        while !seen_without_the_journal() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            seen_without_the_journal(),
            "still only in the WAL after {patience:?}"
        );
        assert_eq!(store.intents().unwrap().len(), 1);
    }

    /// Writes from many files at once are all committed before they are
    /// answered, and one the database refuses fails alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_write_is_committed_before_its_answer_and_a_refused_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        rusqlite::Connection::open(store.path())
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON intents WHEN NEW.path = 'bad.pdf'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        let writer = Arc::new(StateWriter::start(store.clone()));
        let paths: Vec<String> = (0..200)
            .map(|i| match i {
                100 => "bad.pdf".to_string(),
                i => format!("cv{i}.pdf"),
            })
            .collect();
        let writes = paths.iter().map(|path| {
            let writer = writer.clone();
            let write = intent(path);
            async move { writer.write(write).await }
        });
        let answers = futures_util::future::join_all(writes).await;
        let refused: Vec<&str> = paths
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| answer.is_err())
            .map(|(path, _)| path.as_str())
            .collect();
        assert_eq!(refused, ["bad.pdf"]);
        let recorded = store.intents().unwrap();
        assert_eq!(recorded.len(), 199);
        assert!(!recorded.iter().any(|(sum, _)| sum == "sum of bad.pdf"));
    }

    #[tokio::test]
    async fn a_dropped_writer_has_committed_what_it_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let writer = StateWriter::start(store.clone());
        writer.write(intent("cv.pdf")).await.unwrap();
        drop(writer);
        let reopened = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(reopened.intents().unwrap().len(), 1);
    }
}
