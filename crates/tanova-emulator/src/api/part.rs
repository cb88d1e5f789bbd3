//! A multipart file part as received: streamed through SHA-256 and counted, never held whole.

use axum::extract::multipart::{Field, MultipartError};
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::reply;
use crate::state::SharedState;
use crate::stats::add;

/// A file part as received: its name, type, size and the hash of its bytes.
pub(super) struct Received {
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub checksum: String,
}

/// Streams one file part through SHA-256, counting its bytes; past the size limit it stops hashing.
pub(super) async fn receive(
    state: &SharedState,
    mut field: Field<'_>,
    max_bytes: u64,
) -> Result<Received, Response> {
    let filename = field.file_name().unwrap_or("").to_owned();
    let content_type = field.content_type().unwrap_or("").to_owned();
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(invalid)? {
        size += chunk.len() as u64;
        add(&state.counters.bytes_received, chunk.len() as u64);
        // Past the limit keep reading (so the client hears the 413) but stop hashing.
        if size <= max_bytes {
            hasher.update(&chunk);
        }
    }
    Ok(Received {
        filename,
        content_type,
        size,
        checksum: hex::encode(hasher.finalize()),
    })
}

/// A broken multipart body, answered with the status axum chose for it.
pub(super) fn invalid(e: MultipartError) -> Response {
    reply::message(
        e.status(),
        format!("invalid multipart body: {}", e.body_text()),
    )
}
