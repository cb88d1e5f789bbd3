//! A local server that speaks the Tanova sync API, with knobs for latency, capacity and faults.
//!
//! Used by integration tests, benchmarks and the agent's `demo` command over real HTTP on loopback.
//!
//! Besides the contract's health, check-duplicate and upload calls, it offers
//! batch uploads when [`Knobs::batch_max_files`] is above 0, and then
//! advertises them in the health answer as `"batch":{"maxFiles":N}`:
//! `POST /api/sync/upload-batch` takes a multipart form with, for each file
//! index `i` from 0, the parts `file_i`, `checksum_i` and optionally
//! `job_hint_i` and `email_i`, and answers
//! `{"results":[{"index":i,"status":200,"candidateId":…} | {"index":i,"status":4xx|5xx,"message":…}]}`.
//! Each file is judged and counted in [`Stats`] as a single upload of it would
//! be; the request takes one capacity slot and one `upload_latency_ms`, and
//! counts once in [`Stats::batch_requests`].
//!
//! For long unattended runs the knobs can also stage what months bring: a
//! rotated [`Knobs::api_key`], a proxy that blocks some files with an HTML 403
//! ([`Knobs::forbid_checksums`]), an [`Outage`] (dropped connections, an HTML
//! 502, or a server that hangs), uploads held after their body arrived
//! ([`Knobs::hold_uploads`]) and slow body reads ([`Knobs::read_bytes_per_sec`]).
//! A fully received upload is processed and recorded even if its client
//! disconnects meanwhile, as on a real server.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tanova_emulator::{Emulator, Knobs};
//! let emulator = Emulator::start(Knobs { capacity: 4, upload_latency_ms: 500, ..Knobs::default() }).await?;
//! println!("point the agent at {}", emulator.url());
//! // … run uploads …
//! assert_eq!(emulator.stats().rejected_auth, 0);
//! # Ok(()) }
//! ```

mod api;
mod control;
mod knobs;
mod reply;
mod server;
mod state;
mod stats;
mod store;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use knobs::{Knobs, Outage, DEFAULT_API_KEY};
pub use stats::Stats;
pub use store::UploadRecord;

use state::{AppState, SharedState};

/// How long a threaded emulator lets requests finish after it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running emulator. Dropping it shuts the server down.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    state: SharedState,
    /// Dropping this sender is the shutdown signal.
    _stop: watch::Sender<()>,
}

impl Emulator {
    /// Starts on `127.0.0.1` with a free port, on the current tokio runtime.
    pub async fn start(knobs: Knobs) -> std::io::Result<Emulator> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), knobs).await
    }

    /// Starts on `addr` (port 0 picks a free one), on the current tokio runtime.
    pub async fn start_on(addr: SocketAddr, knobs: Knobs) -> std::io::Result<Emulator> {
        let listener = TcpListener::bind(addr).await?;
        let (emulator, stop) = Emulator::new(listener.local_addr()?, knobs);
        tokio::spawn(server::serve(listener, emulator.state.clone(), stop));
        Ok(emulator)
    }

    /// Starts on `127.0.0.1` with a free port, on its own runtime in a background
    /// thread, for plain `#[test]`s and synchronous code.
    pub fn start_in_thread(knobs: Knobs) -> std::io::Result<Emulator> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tanova-emulator")
            .enable_all()
            .build()?;
        let (emulator, stop) = Emulator::new(listener.local_addr()?, knobs);
        let state = emulator.state.clone();
        std::thread::Builder::new()
            .name("tanova-emulator".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => return tracing::error!("emulator cannot listen: {e}"),
                    };
                    let server = tokio::spawn(server::serve(listener, state, stop.clone()));
                    server::stopped(stop).await;
                    // Bounded, so a client holding a request open cannot keep the thread alive.
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, server).await;
                });
            })?;
        Ok(emulator)
    }

    fn new(addr: SocketAddr, knobs: Knobs) -> (Emulator, watch::Receiver<()>) {
        let (stop_tx, stop_rx) = watch::channel(());
        let emulator = Emulator {
            addr,
            state: AppState::new(knobs),
            _stop: stop_tx,
        };
        (emulator, stop_rx)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give a client, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// Every successful upload so far, oldest first.
    pub fn uploads(&self) -> Vec<UploadRecord> {
        self.state.store().uploads().to_vec()
    }

    /// The current knobs.
    pub fn knobs(&self) -> Knobs {
        self.state.knobs()
    }

    /// Changes knobs at run time; requests that start afterwards see the change.
    pub fn set_knobs(&self, f: impl FnOnce(&mut Knobs)) {
        self.state.update_knobs(f);
    }

    /// Makes the server already know these checksums, so check-duplicate says they exist.
    pub fn preload(&self, checksums: impl IntoIterator<Item = String>) {
        let mut store = self.state.store();
        for checksum in checksums {
            store.preload(checksum.trim().to_ascii_lowercase());
        }
    }

    /// Forgets every upload and zeroes the counters.
    pub fn reset(&self) {
        self.state.reset();
    }
}

impl Drop for Emulator {
    /// Releases held uploads and hanging requests, so shutting down does not
    /// wait on a knob nobody will clear any more.
    fn drop(&mut self) {
        self.state.update_knobs(|knobs| {
            knobs.hold_uploads = false;
            if knobs.outage == Some(Outage::Hang) {
                knobs.outage = None;
            }
        });
    }
}
