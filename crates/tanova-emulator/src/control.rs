//! `/_emulator/*`: inspection and control for tests and benchmarks (no API key).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::reply;
use crate::state::SharedState;

pub(crate) fn routes() -> Router<SharedState> {
    Router::new()
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/uploads", get(uploads))
        .route("/_emulator/knobs", get(knobs).post(set_knobs))
        .route("/_emulator/preload", post(preload))
        .route("/_emulator/reset", post(reset))
}

async fn stats(State(state): State<SharedState>) -> Response {
    Json(state.stats()).into_response()
}

async fn uploads(State(state): State<SharedState>) -> Response {
    Json(state.store().uploads().to_vec()).into_response()
}

async fn knobs(State(state): State<SharedState>) -> Response {
    Json(state.knobs()).into_response()
}

/// Applies a partial knobs object, e.g. `{"api_key":"revoked"}`, and answers the full knobs.
async fn set_knobs(State(state): State<SharedState>, body: Bytes) -> Response {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(e) => return reply::message(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    let mut outcome = Ok(());
    let knobs = state.update_knobs(|knobs| match knobs.patched(&patch) {
        Ok(patched) => *knobs = patched,
        Err(e) => outcome = Err(e),
    });
    match outcome {
        Ok(()) => Json(knobs).into_response(),
        Err(e) => reply::message(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
struct Preload {
    checksums: Vec<String>,
}

async fn preload(State(state): State<SharedState>, body: Bytes) -> Response {
    let request: Preload = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return reply::message(StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
    };
    let count = request.checksums.len();
    let mut store = state.store();
    for checksum in request.checksums {
        store.preload(checksum.trim().to_ascii_lowercase());
    }
    Json(json!({ "preloaded": count })).into_response()
}

async fn reset(State(state): State<SharedState>) -> Response {
    state.reset();
    Json(json!({ "reset": true })).into_response()
}
