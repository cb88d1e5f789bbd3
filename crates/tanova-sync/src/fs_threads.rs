//! A few threads of their own for the pipeline's short file-system calls.
//!
//! Each delivered file costs a few such calls: the delivery's look (a stat,
//! and for a small file the read of its bytes), the reads of a larger file as
//! it is sent, and the stat after its upload. On tokio's blocking pool each
//! call woke one of dozens of idle threads, which then fought over the pool's
//! lock: three futex calls and two context switches a call, a fifth of a first
//! sync's CPU (issue 12). Two threads a core taking calls from one channel
//! cost a wake-up only when they are all idle. They stay off the async
//! runtime, so a share that hangs a stat holds up the files waiting for it,
//! never the runtime's timers, the status server or a stop.

use std::sync::OnceLock;

type Call = Box<dyn FnOnce() + Send>;

/// Run `f` on one of the file-system threads and wait for its answer. An
/// error: `f` panicked (the panic is logged by the hook), or no thread could
/// be started and the blocking pool failed it.
pub async fn run<T, F>(f: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let Some(calls) = threads() else {
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

/// The channel to the threads, started on first use; `None` if the system
/// refused every one of them (calls then go to tokio's blocking pool).
fn threads() -> Option<&'static crossbeam_channel::Sender<Call>> {
    static CALLS: OnceLock<Option<crossbeam_channel::Sender<Call>>> = OnceLock::new();
    CALLS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let (tx, rx) = crossbeam_channel::unbounded::<Call>();
            let started = (0..cores * 2)
                .filter(|i| {
                    let rx = rx.clone();
                    std::thread::Builder::new()
                        .name(format!("fs-{i}"))
                        .spawn(move || {
                            for call in rx {
                                // A call that panics answers nobody (its caller
                                // sees an error); the thread goes on with the next.
                                let _ =
                                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
                            }
                        })
                        .is_ok()
                })
                .count();
            (started > 0).then_some(tx)
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_run_off_the_runtime_and_answer_each_caller() {
        let runtime_thread = std::thread::current().id();
        let answers = futures_util::future::join_all((0..64).map(|i| async move {
            run(move || (i * 2, std::thread::current().id()))
                .await
                .unwrap()
        }))
        .await;
        for (i, (doubled, ran_on)) in answers.into_iter().enumerate() {
            assert_eq!(doubled, i * 2);
            assert_ne!(ran_on, runtime_thread);
        }
    }

    #[tokio::test]
    async fn a_call_that_panics_fails_alone() {
        let failed = run(|| -> u32 { panic!("a failing call") }).await;
        assert!(failed.is_err());
        // Every thread takes its turn; none of them died.
        for _ in 0..16 {
            assert_eq!(run(|| 7).await.unwrap(), 7);
        }
    }
}
