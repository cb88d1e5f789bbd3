//! `POST /api/sync/upload-batch`: several files in one multipart request, a result per file.
//!
//! The form names its parts by index: for file `i`, `checksum_i`, the optional
//! `job_hint_i` and `email_i`, then `file_i`. A small file goes from the bytes
//! read and checked at its look (`Upload::bytes`), as in a single upload; a
//! larger one is streamed from disk, opened only when its turn in the body
//! comes (so a batch holds one file open at a time), and guarded like a single
//! upload: if its bytes no longer hash to its checksum the body ends before
//! its last byte, so the server never receives a complete file under a stale
//! checksum.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::multipart::Form;
use reqwest::{Method, Url};

use super::status::{classify, Disposition};
use super::wire::BatchAnswer;
use super::{memory_body, read_success, verified_stream, ApiClient, ApiError, Source, Upload};

pub const UPLOAD_BATCH: &str = "api/sync/upload-batch";

/// How one file of a batch fared.
#[derive(Debug, Clone)]
pub enum BatchFile {
    /// Accepted; the candidate id when the server gave one.
    Uploaded(Option<String>),
    /// This file's own failure, classified as a single upload's answer would be.
    Failed(ApiError),
    /// Not delivered because another file of the batch changed while it was
    /// being sent (which cut the request short): send it again.
    NotSent,
}

impl ApiClient {
    /// Upload `files` in one request. `Err` is the fate of the batch as a whole
    /// (every file shares it); `Ok` holds one result per file, in order.
    pub async fn upload_batch(&self, files: &[Upload<'_>]) -> Result<Vec<BatchFile>, ApiError> {
        let mut url = self.endpoint(UPLOAD_BATCH);
        let mut hops = 0;
        let response = loop {
            self.throttle().await;
            // Built afresh per request: a followed 307/308 reads every file again.
            let (form, changed) = batch_form(files);
            let response = self.post(url.clone()).multipart(form).send().await;
            if changed.iter().any(|f| f.load(Ordering::SeqCst)) {
                return Ok(changed
                    .iter()
                    .map(|f| {
                        if f.load(Ordering::SeqCst) {
                            BatchFile::Failed(ApiError::FileChanged)
                        } else {
                            BatchFile::NotSent
                        }
                    })
                    .collect());
            }
            match self.redirect(&Method::POST, &url, &response, &mut hops)? {
                Some(next) => url = next,
                None => break response,
            }
        };
        let body = read_success(&url, response).await?;
        let answer: BatchAnswer = serde_json::from_slice(&body)
            .map_err(|e| super::unreadable("POST", &url, &body, &e))?;
        Ok(results_by_index(&url, files.len(), answer))
    }
}

/// The form of a batch, and each file's "changed while sent" flag.
fn batch_form(files: &[Upload<'_>]) -> (Form, Vec<Arc<AtomicBool>>) {
    let mut form = Form::new();
    let mut changed = Vec::with_capacity(files.len());
    for (i, upload) in files.iter().enumerate() {
        form = form.text(format!("checksum_{i}"), upload.checksum.to_string());
        if let Some(hint) = &upload.job_hint {
            form = form.text(format!("job_hint_{i}"), hint.clone());
        }
        if let Some(email) = &upload.email {
            form = form.text(format!("email_{i}"), email.clone());
        }
        let flag = Arc::new(AtomicBool::new(false));
        let body = memory_body(upload, &flag).unwrap_or_else(|| {
            reqwest::Body::wrap_stream(verified_stream(
                Source::Path(upload.path.to_path_buf()),
                upload.size,
                upload.checksum.to_string(),
                upload.fence.clone(),
                flag.clone(),
            ))
        });
        let part = super::file_part(upload, body);
        form = form.part(format!("file_{i}"), part);
        changed.push(flag);
    }
    (form, changed)
}

/// One result per file `0..n`, from the answer's entries. A file the answer
/// does not mention failed transiently: its fate is unknown, and the next
/// attempt's duplicate check finds it if it did arrive.
fn results_by_index(url: &Url, n: usize, answer: BatchAnswer) -> Vec<BatchFile> {
    let mut files: Vec<Option<BatchFile>> = vec![None; n];
    for result in answer.results {
        let Some(slot) = files.get_mut(result.index) else {
            continue;
        };
        if slot.is_some() {
            continue; // The first word on a file counts.
        }
        let message = result.message.unwrap_or_else(|| {
            reqwest::StatusCode::from_u16(result.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_string()
        });
        *slot = Some(match classify(result.status, None) {
            Disposition::Success => BatchFile::Uploaded(result.candidate_id.map(|id| match id {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })),
            Disposition::Rejected => BatchFile::Failed(ApiError::Rejected {
                url: url.to_string(),
                status: result.status,
                message,
            }),
            Disposition::Transient { retry_after } => BatchFile::Failed(ApiError::Transient {
                message: format!("{url}: file {}: {}: {message}", result.index, result.status),
                retry_after,
                back_pressure: matches!(result.status, 408 | 429 | 503),
            }),
            Disposition::Permanent => BatchFile::Failed(ApiError::Permanent {
                status: result.status,
                message,
            }),
        });
    }
    files
        .into_iter()
        .enumerate()
        .map(|(i, file)| {
            file.unwrap_or_else(|| {
                BatchFile::Failed(ApiError::Transient {
                    message: format!("{url}: the answer has no result for file {i}"),
                    retry_after: None,
                    back_pressure: false,
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A result as a short string, for comparing tables.
    fn show(file: &BatchFile) -> String {
        match file {
            BatchFile::Uploaded(id) => format!("uploaded {id:?}"),
            BatchFile::NotSent => "not sent".to_string(),
            BatchFile::Failed(ApiError::Transient {
                back_pressure,
                message,
                ..
            }) => format!("transient bp={back_pressure} {message}"),
            BatchFile::Failed(ApiError::Permanent { status, message }) => {
                format!("permanent {status} {message}")
            }
            BatchFile::Failed(ApiError::Rejected { status, .. }) => format!("rejected {status}"),
            BatchFile::Failed(other) => format!("{other}"),
        }
    }

    #[test]
    fn results_map_back_to_files_by_index() {
        let url = Url::parse("http://127.0.0.1:1/api/sync/upload-batch").unwrap();
        let table = [
            (
                "in order, ids as strings or numbers",
                2,
                json!({"results": [
                    {"index": 0, "status": 200, "candidateId": "cand_1"},
                    {"index": 1, "status": 201, "candidateId": 7},
                ]}),
                vec!["uploaded Some(\"cand_1\")", "uploaded Some(\"7\")"],
            ),
            (
                "out of order, each status classified like a single upload",
                5,
                json!({"results": [
                    {"index": 4, "status": 403, "message": "revoked"},
                    {"index": 3, "status": 503},
                    {"index": 2, "status": 500, "message": "boom"},
                    {"index": 1, "status": 429, "message": "busy"},
                    {"index": 0, "status": 422, "message": "Could not parse document"},
                ]}),
                vec![
                    "permanent 422 Could not parse document",
                    "transient bp=true http://127.0.0.1:1/api/sync/upload-batch: file 1: 429: busy",
                    "transient bp=false http://127.0.0.1:1/api/sync/upload-batch: file 2: 500: boom",
                    "transient bp=true http://127.0.0.1:1/api/sync/upload-batch: file 3: 503: Service Unavailable",
                    "rejected 403",
                ],
            ),
            (
                "a file without a result is unknown: transient; strays and repeats are ignored",
                2,
                json!({"results": [
                    {"index": 1, "status": 200},
                    {"index": 1, "status": 500},
                    {"index": 9, "status": 200},
                ]}),
                vec![
                    "transient bp=false http://127.0.0.1:1/api/sync/upload-batch: the answer has no result for file 0",
                    "uploaded None",
                ],
            ),
        ];
        for (name, n, answer, want) in table {
            let answer: BatchAnswer = serde_json::from_value(answer).unwrap();
            let got: Vec<String> = results_by_index(&url, n, answer).iter().map(show).collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
