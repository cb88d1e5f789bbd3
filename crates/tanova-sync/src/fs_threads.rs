//! A few threads of its own for the pipeline's short file-system calls.
//!
//! Each delivered file costs two such calls: the delivery's look (a stat, and
//! for a small file the read of its bytes) and the stat after its upload. On
//! tokio's blocking pool each call woke one of dozens of idle threads, which
//! then fought over the pool's lock: three futex calls and two context
//! switches a call, a fifth of a first sync's CPU at a million files
//! (issue 12). A handful of threads taking calls from one channel costs a
//! wake-up only when they are all idle. They stay off the async runtime, so a
//! share that hangs a stat holds up the files waiting for it, never the
//! runtime's timers, the status server or a stop.

use std::sync::Arc;

type Call = Box<dyn FnOnce() + Send>;

/// The threads, and the channel they take calls from. Dropped: they finish
/// the calls queued and end.
pub struct FsThreads {
    calls: Option<crossbeam_channel::Sender<Call>>,
}

impl FsThreads {
    /// Start `threads` threads (at least one). Should the system refuse every
    /// one of them, calls go to tokio's blocking pool instead.
    pub fn start(threads: usize) -> Arc<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<Call>();
        let started = (0..threads.max(1))
            .filter(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("fs-{i}"))
                    // A call that panics answers nobody (its caller sees an
                    // error); the thread goes on with the next.
                    .spawn(move || {
                        for call in rx {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
                        }
                    })
                    .is_ok()
            })
            .count();
        Arc::new(FsThreads {
            calls: (started > 0).then_some(tx),
        })
    }

    /// Run `f` on one of the threads and wait for its answer.
    pub async fn run<T, F>(&self, f: F) -> std::io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let Some(calls) = &self.calls else {
            return tokio::task::spawn_blocking(f)
                .await
                .map_err(std::io::Error::other);
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        let call: Call = Box::new(move || {
            // The caller may have stopped waiting: nobody to tell.
            let _ = answer.send(f());
        });
        calls
            .send(call)
            .map_err(|_| std::io::Error::other("the file-system threads are gone"))?;
        answered
            .await
            .map_err(|_| std::io::Error::other("a file-system call panicked"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_run_off_the_runtime_and_answer_each_caller() {
        let threads = FsThreads::start(2);
        let runtime_thread = std::thread::current().id();
        let answers = futures_util::future::join_all((0..64).map(|i| {
            let threads = threads.clone();
            async move {
                threads
                    .run(move || (i * 2, std::thread::current().id()))
                    .await
                    .unwrap()
            }
        }))
        .await;
        for (i, (doubled, ran_on)) in answers.into_iter().enumerate() {
            assert_eq!(doubled, i * 2);
            assert_ne!(ran_on, runtime_thread);
        }
    }

    #[tokio::test]
    async fn a_call_that_panics_fails_alone() {
        let threads = FsThreads::start(1);
        let failed = threads.run(|| -> u32 { panic!("boom") }).await;
        assert!(failed.is_err());
        assert_eq!(threads.run(|| 7).await.unwrap(), 7);
    }
}
