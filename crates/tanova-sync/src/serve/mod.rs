//! The status server behind `--listen`: `/health`, `/metrics` and a status page, read from [`Metrics`] and never writing anything.

mod health;
mod host;
mod page;
mod prometheus;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::metrics::{Gauges, Metrics, Problem, Snapshot};

pub use health::health_body;
pub use host::AllowedHosts;
pub use page::{escape_html, status_page};
pub use prometheus::render as prometheus_text;

/// The agent's version, as `/health` and `/metrics` report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the server reads: the figures, the folder (to notice it has gone), and the limiter's gauges.
#[derive(Clone)]
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub folder: PathBuf,
    pub gauges: Arc<dyn Fn() -> Gauges + Send + Sync>,
}

impl Sources {
    /// A snapshot, with a folder that is gone reported as the problem (unless a worse one is known).
    async fn snapshot(&self) -> Snapshot {
        let mut snapshot = self.metrics.snapshot((self.gauges)());
        if snapshot.problem.is_none() {
            let present = tokio::fs::metadata(&self.folder)
                .await
                .is_ok_and(|m| m.is_dir());
            if !present {
                snapshot.problem = Some(Problem::FolderMissing);
            }
        }
        snapshot
    }
}

/// A running status server; dropping it stops it.
pub struct StatusServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl StatusServer {
    /// Bind `addr` (port 0 picks a free one) and serve until dropped,
    /// answering only to loopback names, `addr` and `listen_hosts`.
    pub async fn start(
        addr: SocketAddr,
        sources: Sources,
        listen_hosts: &[String],
    ) -> std::io::Result<Self> {
        let hosts = AllowedHosts::new(addr, listen_hosts);
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router(sources, hosts)).await {
                tracing::warn!("the status server on {addr} stopped: {e}");
            }
        });
        Ok(StatusServer { addr, task })
    }

    /// The address it listens on, with the real port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The routes, for tests that serve them on a listener of their own.
pub fn router(sources: Sources, hosts: AllowedHosts) -> Router {
    Router::new()
        .route("/", get(page_handler))
        .route("/health", get(health_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(sources)
        .layer(axum::middleware::from_fn_with_state(Arc::new(hosts), guard))
}

/// Refuse a `Host` the server is not bound for (421, nothing else said), and
/// give every answer, refusals and 404s too, the headers that keep browsers
/// from sniffing, caching or leaking it.
async fn guard(
    State(hosts): State<Arc<AllowedHosts>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or(""));
    let mut response = if hosts.allows(host) {
        next.run(request).await
    } else {
        (
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected request: this status server answers only to its own host names \
             (see listen_hosts)\n",
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn health_handler(State(sources): State<Sources>) -> Response {
    let snapshot = sources.snapshot().await;
    let code = match snapshot.problem {
        None => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = health_body(&snapshot, VERSION).to_string();
    reply(code, "application/json", body)
}

async fn metrics_handler(State(sources): State<Sources>) -> Response {
    let snapshot = sources.snapshot().await;
    reply(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        prometheus_text(&snapshot, VERSION),
    )
}

async fn page_handler(State(sources): State<Sources>) -> Response {
    let snapshot = sources.snapshot().await;
    let mut response = reply(
        StatusCode::OK,
        "text/html; charset=utf-8",
        status_page(&snapshot, &sources.folder.display().to_string(), VERSION),
    );
    // No scripts at all, nothing from elsewhere: a file name that slipped through escaping still runs nothing.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    response
}

fn reply(code: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = (code, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Parse `listen` (`127.0.0.1:9898`, `[::1]:9898`, `localhost:9898`), refusing an
/// address other machines can reach unless `public` (`listen_public: true`).
pub fn parse_listen(text: &str, public: bool) -> Result<SocketAddr, crate::error::Invalid> {
    listen_addr(text, public).map_err(crate::error::Invalid)
}

fn listen_addr(text: &str, public: bool) -> Result<SocketAddr, String> {
    let text = text.trim();
    let addr = match text.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            .map_err(|_| format!("{text:?}: the port must be a number from 0 to 65535")),
        None => text.parse::<SocketAddr>().map_err(|_| {
            format!(
                "{text:?} is not an address to listen on: expected IP:PORT, like 127.0.0.1:9898"
            )
        }),
    }?;
    if !addr.ip().is_loopback() && !public {
        return Err(format!(
            "{addr} can be reached from other machines, and the status page shows file names: \
             listen on 127.0.0.1, or set listen_public: true in the config file"
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let table: &[(&str, bool, Result<&str, &str>)] = &[
            ("127.0.0.1:9898", false, Ok("127.0.0.1:9898")),
            (" 127.0.0.1:0 ", false, Ok("127.0.0.1:0")),
            ("[::1]:9898", false, Ok("[::1]:9898")),
            ("localhost:9898", false, Ok("127.0.0.1:9898")),
            ("127.1.2.3:80", false, Ok("127.1.2.3:80")),
            ("0.0.0.0:9898", false, Err("listen_public")),
            ("192.168.1.5:9898", false, Err("other machines")),
            ("[::]:9898", false, Err("listen_public")),
            ("0.0.0.0:9898", true, Ok("0.0.0.0:9898")),
            ("9898", false, Err("expected IP:PORT")),
            ("localhost:http", false, Err("port must be a number")),
            ("example.com:80", false, Err("expected IP:PORT")),
        ];
        for (text, public, want) in table {
            let got = parse_listen(text, *public).map(|a| a.to_string());
            match (got, want) {
                (Ok(addr), Ok(want)) => assert_eq!(&addr, want, "{text}"),
                (Err(e), Err(want)) => assert!(e.contains(want), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }
}
