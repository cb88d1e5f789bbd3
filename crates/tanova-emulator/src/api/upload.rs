//! `POST /api/sync/upload`: the knobs (capacity, drops, errors, rejections), the
//! checksum, then the hold, the latency and the record (see [`super::process`]).

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::part::{invalid, receive, Received};
use crate::knobs::{chance, Knobs};
use crate::reply;
use crate::state::SharedState;
use crate::stats::bump;
use crate::store::NewUpload;

pub(super) async fn upload(State(state): State<SharedState>, request: Request) -> Response {
    let knobs = state.knobs();
    let counters = &state.counters;
    let (in_flight, request) = match super::admit(&state, &knobs, request).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    if chance(knobs.error_rate) {
        bump(&counters.rejected_5xx);
        reply::drain(request.into_body()).await;
        return reply::injected_server_error();
    }
    let form = match read_form(&state, request, knobs.max_upload_bytes).await {
        Ok(form) => form,
        Err(refusal) => {
            bump(&counters.rejected_other);
            return refusal;
        }
    };
    if let Some(refused) = refusal(&state, &knobs, &form) {
        return refused;
    }
    let stored = super::process::detached(&state, in_flight, knobs.upload_latency_ms, |state| {
        record(state, form.file)
    })
    .await;
    let (candidate_id, name) = match stored {
        Ok(stored) => stored,
        Err(failure) => return failure,
    };
    if chance(knobs.garbage_rate) {
        return reply::garbage();
    }
    Json(json!({ "candidateId": candidate_id, "candidateName": name })).into_response()
}

/// The answer refusing a whole form, if any: a blocked checksum, an injected
/// rejection, a checksum mismatch.
fn refusal(state: &SharedState, knobs: &Knobs, form: &Form) -> Option<Response> {
    let counters = &state.counters;
    if knobs.forbids([form.claimed_checksum.as_str(), form.file.checksum.as_str()]) {
        bump(&counters.rejected_forbidden);
        return Some(reply::forbidden_page());
    }
    let needle = knobs.reject_filename_contains.as_deref().unwrap_or("");
    if !needle.is_empty() && form.file.filename.contains(needle) {
        bump(&counters.rejected_other);
        let status =
            StatusCode::from_u16(knobs.reject_status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
        return Some(reply::message(
            status,
            "Could not parse document (injected)",
        ));
    }
    if form.claimed_checksum != form.file.checksum {
        bump(&counters.rejected_checksum);
        let text = format!(
            "checksum mismatch: sent {}, received bytes hash to {}",
            form.claimed_checksum, form.file.checksum
        );
        return Some(reply::message(StatusCode::BAD_REQUEST, text));
    }
    None
}

/// Stores the upload and counts it; gives its candidate's id and name.
fn record(state: &SharedState, file: NewUpload) -> (String, Option<String>) {
    let (record, name) = {
        let mut store = state.store();
        let record = store.record(file);
        let name = store.lookup(&record.checksum).map(|c| c.name.clone());
        (record, name)
    };
    let counters = &state.counters;
    bump(&counters.uploads);
    if record.duplicate {
        bump(&counters.duplicate_uploads);
    }
    tracing::debug!(file = %record.filename, id = %record.candidate_id, duplicate = record.duplicate, "upload stored");
    (record.candidate_id, name)
}

/// A parsed upload form: the file as received, and the checksum the client claimed.
struct Form {
    file: NewUpload,
    claimed_checksum: String,
}

/// Reads the multipart form, hashing the file as it streams in so it is never held in memory.
async fn read_form(
    state: &SharedState,
    request: Request,
    max_bytes: u64,
) -> Result<Form, Response> {
    let bad_request = |text: String| reply::message(StatusCode::BAD_REQUEST, text);
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| bad_request(format!("expected a multipart form: {}", e.body_text())))?;
    let mut file = None;
    let (mut checksum, mut job_hint, mut email) = (None, None, None);
    while let Some(field) = multipart.next_field().await.map_err(invalid)? {
        match field.name().unwrap_or("") {
            "file" => file = Some(receive(state, field, max_bytes).await?),
            "checksum" => checksum = Some(field.text().await.map_err(invalid)?),
            "job_hint" => job_hint = non_empty(field.text().await.map_err(invalid)?),
            "email" => email = non_empty(field.text().await.map_err(invalid)?),
            _ => {} // Unknown fields are ignored, as a lenient server would.
        }
    }
    let Received {
        filename,
        content_type,
        size,
        checksum: actual,
    } = file.ok_or_else(|| bad_request("missing field: file".to_owned()))?;
    if size > max_bytes {
        return Err(reply::message(
            StatusCode::PAYLOAD_TOO_LARGE,
            "File too large",
        ));
    }
    let claimed = checksum.ok_or_else(|| bad_request("missing field: checksum".to_owned()))?;
    Ok(Form {
        file: NewUpload {
            filename,
            content_type,
            checksum: actual,
            size,
            job_hint,
            email,
        },
        claimed_checksum: claimed.trim().to_ascii_lowercase(),
    })
}

fn non_empty(text: String) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
