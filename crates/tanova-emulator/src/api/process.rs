//! Processing of a fully received upload: the hold, the simulated AI latency,
//! then recording, in a task of its own.
//!
//! A real server goes on processing a body it has whole even if the client
//! disconnects or is killed meanwhile; axum, though, drops a handler's future
//! when its client goes away. So the work runs in a spawned task that the
//! handler merely awaits: the upload is recorded whether or not anybody is
//! still waiting for the answer.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use tokio::sync::oneshot;

use crate::reply;
use crate::state::SharedState;
use crate::stats::{bump, InFlight};

/// Waits while `hold_uploads` is set, sleeps `latency_ms`, then runs `record`,
/// all in a spawned task that keeps the upload `in_flight` until it is done.
/// Gives `record`'s outcome, or a 500 if the task failed.
pub(super) async fn detached<T, F>(
    state: &SharedState,
    in_flight: InFlight,
    latency_ms: u64,
    record: F,
) -> Result<T, Response>
where
    T: Send + 'static,
    F: FnOnce(&SharedState) -> T + Send + 'static,
{
    let (answer, outcome) = oneshot::channel();
    let state = Arc::clone(state);
    tokio::spawn(async move {
        wait_while_held(&state).await;
        // The real service parses the CV with AI here; this is what makes uploads slow.
        super::simulated_latency(latency_ms).await;
        let result = record(&state);
        // Released before the answer goes out, so a client that has its answer
        // never sees the slot still taken.
        drop(in_flight);
        if answer.send(result).is_err() {
            bump(&state.counters.completed_after_disconnect);
        }
    });
    outcome.await.map_err(|_| {
        reply::message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "upload processing failed (emulator bug)",
        )
    })
}

/// Waits, counted in `held`, until the `hold_uploads` knob is false.
async fn wait_while_held(state: &SharedState) {
    if !state.knobs().hold_uploads {
        return;
    }
    let _held = state.counters.hold();
    state.knobs_until(|knobs| !knobs.hold_uploads).await;
}
