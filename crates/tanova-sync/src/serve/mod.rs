//! The status server behind `--listen`: `/health`, `/metrics`, and the console (a live dashboard at `/`, `/events`, and actions under `/api/` behind a per-process token).

mod chart;
mod console;
mod events;
mod health;
mod host;
mod page;
mod prometheus;
pub mod token;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::metrics::{Gauges, Metrics, Problem, Snapshot};

pub use console::{with_csp, Actions, Console, CSS};
pub use health::health_body;
pub use host::AllowedHosts;
pub use page::{banner, dashboard, escape_html, Banner, View};
pub use prometheus::render as prometheus_text;
pub use token::Token;

/// The agent's version, as `/health` and `/metrics` report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the server reads: the figures, the folder (to notice it has gone), and the limiter's gauges;
/// and what the console's actions drive (a watching agent; `None` for a one-shot sync).
#[derive(Clone)]
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub folder: PathBuf,
    pub gauges: Arc<dyn Fn() -> Gauges + Send + Sync>,
    pub actions: Option<Arc<dyn Actions>>,
}

impl Sources {
    /// A snapshot, with a folder that is gone reported as the problem (unless a worse one is known).
    pub(crate) async fn snapshot(&self) -> Snapshot {
        let mut snapshot = self.metrics.snapshot((self.gauges)());
        if snapshot.problem.is_none() {
            let present = tokio::fs::metadata(&self.folder)
                .await
                .is_ok_and(|m| m.is_dir());
            if !present {
                snapshot.problem = Some(Problem::FolderMissing);
                let reason = format!("{} is not there, or is not a folder", self.folder.display());
                snapshot.reason = Some(reason);
            }
        }
        snapshot
    }
}

/// A running status server; dropping it stops it.
pub struct StatusServer {
    addr: SocketAddr,
    token: Token,
    task: JoinHandle<()>,
}

impl StatusServer {
    /// Bind `addr` (port 0 picks a free one) and serve until dropped,
    /// answering only to loopback names, `addr` and `listen_hosts`. The
    /// console's token is new for each server.
    pub async fn start(
        addr: SocketAddr,
        sources: Sources,
        listen_hosts: &[String],
    ) -> std::io::Result<Self> {
        let hosts = AllowedHosts::new(addr, listen_hosts);
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let token = Token::for_process();
        let console = Arc::new(Console {
            sources,
            token: token.clone(),
            port: addr.port(),
            public: !addr.ip().is_loopback(),
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router(console, hosts)).await {
                tracing::warn!("the status server on {addr} stopped: {e}");
            }
        });
        Ok(StatusServer { addr, token, task })
    }

    /// The address it listens on, with the real port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The console's address with its token, as `ui` prints it: the first
    /// visit turns the token into a cookie. A wildcard address is shown as loopback.
    pub fn console_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        format!("http://{addr}/?{}={}", token::QUERY, self.token.expose())
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The routes, for tests that serve them on a listener of their own. No
/// route answers `OPTIONS` or sends CORS headers: other origins read nothing.
pub fn router(console: Arc<Console>, hosts: AllowedHosts) -> Router {
    Router::new()
        .route("/", get(console::page))
        .route("/events", get(events::events))
        .route("/assets/console.js", get(console::script))
        .route("/assets/console.css", get(console::style))
        .route("/api/{action}", post(console::act))
        .route("/health", get(health_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(console)
        .layer(axum::middleware::from_fn_with_state(Arc::new(hosts), guard))
}

/// `router` behind the same Host check and security headers as the status server (the setup page's).
pub fn guarded(router: Router, hosts: AllowedHosts) -> Router {
    router.layer(axum::middleware::from_fn_with_state(Arc::new(hosts), guard))
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
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The console's pages say `same-origin`: with `no-referrer` a browser
    // sends `Origin: null` on their own forms, which the Origin check refuses.
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn health_handler(State(console): State<Arc<Console>>) -> Response {
    let snapshot = console.sources.snapshot().await;
    let code = match snapshot.problem {
        None => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = health_body(&snapshot, VERSION).to_string();
    reply(code, "application/json", body)
}

async fn metrics_handler(State(console): State<Arc<Console>>) -> Response {
    let snapshot = console.sources.snapshot().await;
    reply(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        prometheus_text(&snapshot, VERSION),
    )
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
