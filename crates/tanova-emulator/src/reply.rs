//! Canned answers: JSON error messages, injected faults, a proxy's HTML pages,
//! and draining unread request bodies.

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

/// What a corporate proxy's "blocked by policy" page says, for a batch's per-file result.
pub(crate) const FORBIDDEN_TEXT: &str =
    "Access denied: the request was blocked by the security policy (rule 1234).";

/// A 403 from a corporate proxy: an HTML page, not the contract's JSON.
pub(crate) fn forbidden_page() -> Response {
    html(
        StatusCode::FORBIDDEN,
        "Access denied",
        "Access denied",
        "The request was blocked by the security policy (rule 1234).",
    )
}

/// A 502 from a proxy in front of a service that is down: an HTML page.
pub(crate) fn bad_gateway_page() -> Response {
    html(
        StatusCode::BAD_GATEWAY,
        "502 Bad Gateway",
        "Bad Gateway",
        "The proxy server received an invalid response from an upstream server.",
    )
}

/// A captive portal's (or a proxy's maintenance) page: 200, and HTML.
pub(crate) fn sign_in_page() -> Response {
    html(
        StatusCode::OK,
        "Sign in",
        "Guest network",
        "Please sign in to continue to the Internet.",
    )
}

/// A small but complete HTML document, as proxies serve them.
fn html(status: StatusCode, title: &str, heading: &str, text: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
         <style>body {{ font-family: sans-serif; margin: 4em; color: #333; }} h1 {{ color: #b00; }}</style>\n\
         </head>\n<body>\n<h1>{heading}</h1>\n<p>{text}</p>\n</body>\n</html>\n"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
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
