//! Canned answers: JSON error messages, injected faults, and draining unread request bodies.

use std::io;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::json;

/// Most bytes read from a refused request before giving up and letting the connection reset.
const DRAIN_LIMIT: usize = 1 << 30;

/// An error answer with the contract's `{"message": …}` body.
pub(crate) fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({ "message": text.into() }))).into_response()
}

/// A 429 that tells the client when to come back.
pub(crate) fn too_many_requests(retry_after_s: u64) -> Response {
    let mut response = message(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many uploads in progress, retry later",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after_s.into());
    response
}

/// An injected server failure, 500 or 503 at random.
pub(crate) fn injected_server_error() -> Response {
    let status = if rand::random::<bool>() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    message(status, "Internal error (injected)")
}

/// A 200 whose body is not the JSON the contract promises (a proxy's error page, say).
pub(crate) fn garbage() -> Response {
    (StatusCode::OK, "<html>502 Bad Gateway (injected)</html>").into_response()
}

/// A response whose body fails at once: hyper then aborts the connection
/// and the client sees a transport error instead of a status.
pub(crate) fn dropped_connection() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<Bytes, _>(io::Error::other("connection dropped (injected)"))
    });
    Response::new(Body::from_stream(failing))
}

/// Reads and discards a request body we refuse. Closing a socket with unread
/// data makes the kernel reset the connection, and a client still sending a big
/// file could then see a transport error instead of our status.
pub(crate) async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let mut read = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len();
        if read > DRAIN_LIMIT {
            break;
        }
    }
}
