//! The `outage` knob: every API request meets a down service instead of the contract.
//!
//! It sits in front of the API-key check, as a proxy or a dead server would:
//! the request never reaches the service, so it counts only in
//! `outage_refused` (not in `health_calls`, `rejected_auth`, …).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::knobs::Outage;
use crate::reply;
use crate::state::SharedState;
use crate::stats::bump;

pub(super) async fn outage(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(outage) = state.knobs().outage else {
        return next.run(request).await;
    };
    bump(&state.counters.outage_refused);
    match outage {
        Outage::Drop => {
            reply::drain(request.into_body()).await;
            reply::dropped_connection()
        }
        Outage::Html502 => {
            reply::drain(request.into_body()).await;
            reply::bad_gateway_page()
        }
        Outage::Html200 => {
            reply::drain(request.into_body()).await;
            reply::sign_in_page()
        }
        Outage::Hang => {
            // A stalled server reads nothing and says nothing; the client's timeout decides.
            state
                .knobs_until(|knobs| knobs.outage != Some(Outage::Hang))
                .await;
            reply::drain(request.into_body()).await;
            reply::message(StatusCode::SERVICE_UNAVAILABLE, "service restarting")
        }
    }
}
