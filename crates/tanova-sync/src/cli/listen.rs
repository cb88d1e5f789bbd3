//! `--listen`: the agent's live figures, and the status server that shows them, wired to the engine.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use super::args::GlobalArgs;
use crate::engine::{Engine, EngineError};
use crate::metrics::{Gauges, Metrics, Problem};
use crate::serve::{Sources, StatusServer};

/// The figures and the server of a run with `--listen`.
pub struct Listening {
    pub metrics: Arc<Metrics>,
    _server: StatusServer,
}

impl Listening {
    /// Serve `metrics` (and the engine's limiter) at `addr`, and say where on stderr.
    pub async fn start(
        global: &GlobalArgs,
        addr: SocketAddr,
        listen_hosts: &[String],
        metrics: Arc<Metrics>,
        engine: &Engine,
        folder: &Path,
    ) -> Result<Self, String> {
        let limiter_of = engine.clone();
        let sources = Sources {
            metrics: metrics.clone(),
            folder: folder.to_path_buf(),
            gauges: Arc::new(move || {
                let limiter = limiter_of.limiter();
                Gauges {
                    in_flight: limiter.in_flight(),
                    limit: limiter.limit(),
                }
            }),
        };
        let server = StatusServer::start(addr, sources, listen_hosts)
            .await
            .map_err(|e| format!("cannot listen on {addr} (--listen): {e}"))?;
        if !global.quiet {
            // Tests and scripts read the port from this line when they asked for port 0.
            eprintln!(
                "listening on http://{} (status page; /health, /metrics)",
                server.addr()
            );
        }
        Ok(Listening {
            metrics,
            _server: server,
        })
    }

    /// The run stopped for `error`: say so on `/health` while the agent exits.
    pub fn stopped_by(&self, error: &EngineError) {
        if matches!(
            error,
            EngineError::KeyRejected(_) | EngineError::NoUploadPermission { .. }
        ) {
            self.metrics.set_problem(Problem::KeyRejected);
        }
    }
}
