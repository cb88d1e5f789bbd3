//! Assembles the routes and serves them until told to stop.

use axum::http::StatusCode;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::state::SharedState;
use crate::{api, control, reply};

pub(crate) fn app(state: SharedState) -> Router {
    Router::new()
        .merge(api::routes(state.clone()))
        .merge(control::routes())
        .fallback(|| async { reply::message(StatusCode::NOT_FOUND, "Not found") })
        .with_state(state)
}

/// Serves until `stop` fires or its sender is dropped, then finishes in-flight requests.
pub(crate) async fn serve(listener: TcpListener, state: SharedState, stop: watch::Receiver<()>) {
    // Small JSON answers must not wait on Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let result = axum::serve(listener, app(state))
        .with_graceful_shutdown(stopped(stop))
        .await;
    if let Err(e) = result {
        tracing::error!("emulator server failed: {e}");
    }
}

/// Resolves when a stop is signalled or the `Emulator` owning the sender is dropped.
pub(crate) async fn stopped(mut stop: watch::Receiver<()>) {
    let _ = stop.changed().await;
}
