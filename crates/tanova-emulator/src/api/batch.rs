//! `POST /api/sync/upload-batch`: several files in one multipart request, a result per file.
//!
//! Offered when the `batch_max_files` knob is not 0, and then advertised in the
//! health answer as `"batch":{"maxFiles":N}`. Otherwise, or with the
//! `batch_not_found` knob, it answers 404 like a server without the route.
//!
//! The form names its parts by file index, `i` from 0 to n-1, in any order:
//! `file_i` (file name, MIME type and bytes), `checksum_i` (the lowercase hex
//! SHA-256 of those bytes), and optionally `job_hint_i` and `email_i`. Each file
//! is hashed as it streams in and never held in memory.
//!
//! The answer is 200 `{"results":[…]}`, one entry per index in index order:
//! `{"index":i,"status":200,"candidateId":…,"candidateName":…}` or
//! `{"index":i,"status":4xx|5xx,"message":…}`. Each file is judged as a single
//! upload would be (413 past `max_upload_bytes`, 403 for `forbid_checksums`
//! (with the proxy page's text as the message), `reject_status` for
//! `reject_filename_contains`, 500/503 at `error_rate`, 400 on a checksum
//! mismatch or a missing part) and counted the same way in the stats, so
//! `uploads`, `duplicate_uploads` and the `rejected_*` counters stay exact.
//!
//! The request as a whole counts once in `batch_requests` and takes one
//! capacity slot, one `hold_uploads` wait and one `upload_latency_ms`, however
//! many files it holds, and is processed to the end even if the client goes: 401
//! on a bad key, 429 past `capacity`, a dropped connection at `drop_rate`, 400
//! when the form is malformed, empty, or names an index of `batch_max_files` or
//! more.

use std::collections::BTreeMap;

use axum::extract::multipart::Field;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::part::{invalid, receive, Received};
use crate::knobs::{chance, Knobs};
use crate::reply;
use crate::state::SharedState;
use crate::stats::bump;
use crate::store::NewUpload;

pub(super) async fn upload_batch(State(state): State<SharedState>, request: Request) -> Response {
    let knobs = state.knobs();
    let counters = &state.counters;
    bump(&counters.batch_requests);
    if knobs.batch_max_files == 0 || knobs.batch_not_found {
        reply::drain(request.into_body()).await;
        return reply::message(StatusCode::NOT_FOUND, "Not found");
    }
    let (in_flight, request) = match super::admit(&state, &knobs, request).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let entries = match read_batch(&state, request, &knobs).await {
        Ok(entries) => entries,
        Err(refusal) => {
            bump(&counters.rejected_other);
            return refusal;
        }
    };
    // One round of (simulated) AI processing for the whole batch, carried on
    // even if the client goes away.
    let (latency_ms, garbage_rate) = (knobs.upload_latency_ms, knobs.garbage_rate);
    let judged = super::process::detached(&state, in_flight, latency_ms, move |state| {
        entries
            .into_iter()
            .map(|(index, entry)| judge(state, &knobs, index, entry))
            .collect::<Vec<Value>>()
    })
    .await;
    let results = match judged {
        Ok(results) => results,
        Err(failure) => return failure,
    };
    if chance(garbage_rate) {
        return reply::garbage();
    }
    Json(json!({ "results": results })).into_response()
}

/// The parts of one index.
#[derive(Default)]
struct Entry {
    file: Option<Received>,
    checksum: Option<String>,
    job_hint: Option<String>,
    email: Option<String>,
}

/// Reads the whole form, hashing each file as it streams in.
async fn read_batch(
    state: &SharedState,
    request: Request,
    knobs: &Knobs,
) -> Result<BTreeMap<usize, Entry>, Response> {
    let bad_request = |text: String| reply::message(StatusCode::BAD_REQUEST, text);
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| bad_request(format!("expected a multipart form: {}", e.body_text())))?;
    let mut entries: BTreeMap<usize, Entry> = BTreeMap::new();
    let mut beyond_limit = None;
    while let Some(field) = multipart.next_field().await.map_err(invalid)? {
        let name = field.name().unwrap_or("").to_owned();
        let Some((kind, index)) = name
            .rsplit_once('_')
            .and_then(|(kind, i)| Some((kind, i.parse::<usize>().ok()?)))
        else {
            skip(field).await?; // Unknown fields are ignored, as a lenient server would.
            continue;
        };
        if index >= knobs.batch_max_files {
            // Read on, so the client hears the 400 rather than a reset connection.
            beyond_limit.get_or_insert(index);
            skip(field).await?;
            continue;
        }
        let entry = entries.entry(index).or_default();
        match kind {
            "file" => entry.file = Some(receive(state, field, knobs.max_upload_bytes).await?),
            "checksum" => entry.checksum = Some(field.text().await.map_err(invalid)?),
            "job_hint" => entry.job_hint = non_empty(field.text().await.map_err(invalid)?),
            "email" => entry.email = non_empty(field.text().await.map_err(invalid)?),
            _ => skip(field).await?,
        }
    }
    if let Some(index) = beyond_limit {
        return Err(bad_request(format!(
            "a batch holds at most {} files (indexes 0 to {}); got index {index}",
            knobs.batch_max_files,
            knobs.batch_max_files - 1
        )));
    }
    if entries.is_empty() {
        return Err(bad_request(
            "no files: expected parts file_0, checksum_0, …".to_owned(),
        ));
    }
    Ok(entries)
}

async fn skip(mut field: Field<'_>) -> Result<(), Response> {
    while field.chunk().await.map_err(invalid)?.is_some() {}
    Ok(())
}

/// One file's result, judged and counted as a single upload of it would be.
fn judge(state: &SharedState, knobs: &Knobs, index: usize, entry: Entry) -> Value {
    let counters = &state.counters;
    let refuse = |status: StatusCode, text: String| json!({ "index": index, "status": status.as_u16(), "message": text });
    let Some(file) = entry.file else {
        bump(&counters.rejected_other);
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("missing field: file_{index}"),
        );
    };
    let Some(claimed) = entry.checksum else {
        bump(&counters.rejected_other);
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("missing field: checksum_{index}"),
        );
    };
    if file.size > knobs.max_upload_bytes {
        bump(&counters.rejected_other);
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "File too large".to_owned());
    }
    if knobs.forbids([claimed.as_str(), file.checksum.as_str()]) {
        bump(&counters.rejected_forbidden);
        return refuse(StatusCode::FORBIDDEN, reply::FORBIDDEN_TEXT.to_owned());
    }
    let needle = knobs.reject_filename_contains.as_deref().unwrap_or("");
    if !needle.is_empty() && file.filename.contains(needle) {
        bump(&counters.rejected_other);
        let status =
            StatusCode::from_u16(knobs.reject_status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
        return refuse(status, "Could not parse document (injected)".to_owned());
    }
    if chance(knobs.error_rate) {
        bump(&counters.rejected_5xx);
        let status = if rand::random::<bool>() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return refuse(status, "Internal error (injected)".to_owned());
    }
    let claimed = claimed.trim().to_ascii_lowercase();
    if claimed != file.checksum {
        bump(&counters.rejected_checksum);
        let text = format!(
            "checksum mismatch: sent {claimed}, received bytes hash to {}",
            file.checksum
        );
        return refuse(StatusCode::BAD_REQUEST, text);
    }
    let (record, name) = {
        let mut store = state.store();
        let record = store.record(NewUpload {
            filename: file.filename,
            content_type: file.content_type,
            checksum: file.checksum,
            size: file.size,
            job_hint: entry.job_hint,
            email: entry.email,
        });
        let name = store.lookup(&record.checksum).map(|c| c.name.clone());
        (record, name)
    };
    bump(&counters.uploads);
    if record.duplicate {
        bump(&counters.duplicate_uploads);
    }
    tracing::debug!(file = %record.filename, id = %record.candidate_id, duplicate = record.duplicate, index, "batch upload stored");
    json!({
        "index": index,
        "status": 200,
        "candidateId": record.candidate_id,
        "candidateName": name,
    })
}

fn non_empty(text: String) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
