//! The Tanova sync API contract: API-key check, health and check-duplicate.
//!
//! Uploads are in [`upload`] (one file per request) and [`batch`] (several
//! files per request, offered when the `batch_max_files` knob is not 0); both
//! finish in [`process`]. In front of everything stands [`outage`].
//!
//! The API key is judged once, when a request arrives: a key rotated while an
//! upload's body is still coming in (or while it is held or processed) does
//! not fail that upload, as a real server checks the key of a request once.

mod batch;
mod outage;
mod part;
mod process;
mod throttle;
mod upload;

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::knobs::chance;
use crate::reply;
use crate::state::SharedState;
use crate::stats::bump;

/// Header carrying the account's API key.
const API_KEY_HEADER: &str = "x-tanova-api-key";

/// Routes under `/api/sync`, all behind the API-key check.
pub(crate) fn routes(state: SharedState) -> Router<SharedState> {
    Router::new()
        .route("/api/sync/health", get(health))
        .route("/api/sync/check-duplicate", post(check_duplicate))
        // Uploads are streamed and bounded by the `max_upload_bytes` knob instead.
        .route(
            "/api/sync/upload",
            post(upload::upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/sync/upload-batch",
            post(batch::upload_batch).layer(DefaultBodyLimit::disable()),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ))
        // Added last, so it runs first: an outage answers before any key check.
        .route_layer(middleware::from_fn_with_state(state, outage::outage))
}

/// Capacity, then connection drops: the knobs every upload request meets first,
/// single or batch. Gives the in-flight guard and the request, its body now
/// read at `read_bytes_per_sec`, or the answer to send.
pub(super) async fn admit(
    state: &SharedState,
    knobs: &crate::knobs::Knobs,
    request: Request,
) -> Result<(crate::stats::InFlight, Request), Response> {
    let counters = &state.counters;
    let Some(in_flight) = counters.try_enter(knobs.capacity) else {
        bump(&counters.rejected_429);
        reply::drain(request.into_body()).await;
        return Err(reply::too_many_requests(knobs.retry_after_s));
    };
    if chance(knobs.drop_rate) {
        bump(&counters.dropped);
        reply::drain(request.into_body()).await;
        return Err(reply::dropped_connection());
    }
    Ok((
        in_flight,
        throttle::throttled(request, knobs.read_bytes_per_sec),
    ))
}

/// Wait `ms` like a server at work. Zero is no wait at all: tokio rounds every
/// timer up to its next millisecond tick, so even a zero sleep would add up to
/// a millisecond to each request and make "zero latency" a latency of its own.
pub(super) async fn simulated_latency(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

async fn require_api_key(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let expected = state.knobs().api_key;
    let given = request.headers().get(API_KEY_HEADER);
    if given.is_some_and(|key| key.as_bytes() == expected.as_bytes()) {
        return next.run(request).await;
    }
    bump(&state.counters.rejected_auth);
    reply::drain(request.into_body()).await;
    reply::message(StatusCode::UNAUTHORIZED, "Invalid API key")
}

async fn health(State(state): State<SharedState>) -> Response {
    bump(&state.counters.health_calls);
    let mut answer = json!({
        "success": true,
        "authenticated": true,
        "message": "Connected to Tanova emulator",
        "agency": "Emulator Agency",
        "permissions": { "canUpload": true, "canRead": true },
    });
    let batch_max_files = state.knobs().batch_max_files;
    if batch_max_files > 0 {
        answer["batch"] = json!({ "maxFiles": batch_max_files });
    }
    Json(answer).into_response()
}

#[derive(Deserialize)]
struct CheckRequest {
    checksum: String,
}

async fn check_duplicate(State(state): State<SharedState>, body: Bytes) -> Response {
    bump(&state.counters.check_duplicate_calls);
    let knobs = state.knobs();
    // Parsed by hand so a wrong or missing Content-Type is not a failure, and errors stay JSON.
    let request: CheckRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            bump(&state.counters.rejected_other);
            return reply::message(StatusCode::BAD_REQUEST, format!("invalid request: {e}"));
        }
    };
    if knobs.forbids([request.checksum.as_str()]) {
        bump(&state.counters.rejected_forbidden);
        return reply::forbidden_page();
    }
    if chance(knobs.check_error_rate) {
        bump(&state.counters.rejected_5xx);
        return reply::injected_server_error();
    }
    simulated_latency(knobs.check_latency_ms).await;
    let checksum = request.checksum.trim().to_ascii_lowercase();
    if chance(knobs.garbage_rate) {
        return reply::garbage();
    }
    match state.store().lookup(&checksum) {
        Some(candidate) => Json(json!({ "exists": true, "candidateName": candidate.name })),
        None => Json(json!({ "exists": false })),
    }
    .into_response()
}
