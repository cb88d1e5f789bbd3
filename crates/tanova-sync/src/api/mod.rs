//! The HTTP client for the sync API: one pooled keep-alive client, typed answers, typed errors.

pub mod batch;
pub mod status;
pub mod wire;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream;
use reqwest::header::{HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, Response, Url};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::config::ApiKey;
use crate::deliver::rate::RateLimiter;
use status::{classify, Disposition};
use wire::{CheckDuplicate, DuplicateAnswer, ErrorBody, Health, UploadAnswer};

pub const API_KEY_HEADER: &str = "X-Tanova-API-Key";
const HEALTH: &str = "api/sync/health";
const CHECK_DUPLICATE: &str = "api/sync/check-duplicate";
const UPLOAD: &str = "api/sync/upload";
/// The most same-origin redirects followed for one call.
const MAX_REDIRECTS: u32 = 5;

/// An API call that did not succeed, with what the agent should do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 401/403: the key is not accepted. Fatal for the whole run.
    #[error("the API key was rejected by {url} ({status}): {message}")]
    Rejected {
        url: String,
        status: u16,
        message: String,
    },
    /// Worth retrying: 408, 429, 5xx, a dropped connection, a timeout.
    /// `back_pressure` when the service says it is overloaded (408, 429, 503, a timeout).
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
        back_pressure: bool,
    },
    /// The server refused this request for good (other 4xx).
    #[error("refused by the server ({status}): {message}")]
    Permanent { status: u16, message: String },
    /// The file's bytes no longer match the checksum being uploaded.
    #[error("the file changed while it was being uploaded")]
    FileChanged,
    #[error("cannot read the file: {0}")]
    File(String),
    /// A redirect the agent will not follow: to another origin (the key would
    /// go there), or one that would turn a POST into a GET. Fatal for the run:
    /// `tanova_url` needs fixing, no file is to blame.
    #[error("{message}")]
    Misdirected {
        from: String,
        to: String,
        message: String,
    },
}

/// One file to upload, with its metadata.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    pub path: &'a Path,
    pub checksum: &'a str,
    pub size: u64,
    pub mime: &'static str,
    pub job_hint: Option<String>,
    pub email: Option<String>,
}

/// The client. Cheap to share: it holds one connection pool.
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    /// `max_requests_per_minute`: every request waits for a token first.
    rate: Option<Arc<RateLimiter>>,
}

/// Timeouts of the HTTP client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// The longest wait for the next bytes of an answer (uploads take seconds server-side).
    pub read: Duration,
}

impl ApiClient {
    pub fn new(base: &Url, key: &ApiKey, timeouts: Timeouts) -> Result<Self, String> {
        Self::with_extra_roots(base, key, timeouts, &[])
    }

    /// A client that also trusts `roots` (a corporate CA, `ca_file`) besides the system's.
    pub fn with_extra_roots(
        base: &Url,
        key: &ApiKey,
        timeouts: Timeouts,
        roots: &[reqwest::Certificate],
    ) -> Result<Self, String> {
        let mut value = HeaderValue::from_str(key.expose()).map_err(|_| {
            "api_key: contains characters not allowed in an HTTP header".to_string()
        })?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(API_KEY_HEADER, value);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("tanova-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.read)
            .pool_idle_timeout(Duration::from_secs(60))
            // reqwest's own policy sends default headers (the key) to any host it
            // is redirected to; redirects are judged by `ApiClient::redirect` instead.
            .redirect(reqwest::redirect::Policy::none())
            .tls_certs_merge(roots.iter().cloned())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        // Joining relative paths onto "https://host/prefix" needs the trailing slash.
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(ApiClient {
            http,
            base,
            rate: None,
        })
    }

    /// Make every request (health, check-duplicate, upload, batch) wait for a
    /// token of `limiter` before it is sent.
    pub fn with_rate_limit(mut self, limiter: Option<Arc<RateLimiter>>) -> Self {
        self.rate = limiter;
        self
    }

    /// Wait until the rate limit, if any, lets the next request go.
    async fn throttle(&self) {
        if let Some(rate) = &self.rate {
            rate.wait().await;
        }
    }

    pub fn endpoint(&self, path: &str) -> Url {
        self.base.join(path).expect("endpoint paths are valid")
    }

    /// Who the key belongs to and what it may do.
    pub async fn health(&self) -> Result<Health, ApiError> {
        let mut url = self.endpoint(HEALTH);
        let mut hops = 0;
        let response = loop {
            self.throttle().await;
            let response = self.http.get(url.clone()).send().await;
            match self.redirect(&Method::GET, &url, &response, &mut hops)? {
                Some(next) => url = next,
                None => break response,
            }
        };
        let body = read_success(&url, response).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Transient {
            message: format!("GET {url}: unreadable answer: {e}"),
            retry_after: None,
            back_pressure: false,
        })
    }

    /// Whether the server already has these bytes.
    pub async fn check_duplicate(&self, checksum: &str) -> Result<DuplicateAnswer, ApiError> {
        let mut url = self.endpoint(CHECK_DUPLICATE);
        let mut hops = 0;
        let response = loop {
            self.throttle().await;
            let response = self
                .http
                .post(url.clone())
                .json(&CheckDuplicate { checksum })
                .send()
                .await;
            match self.redirect(&Method::POST, &url, &response, &mut hops)? {
                Some(next) => url = next,
                None => break response,
            }
        };
        let body = read_success(&url, response).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Transient {
            message: format!("POST {url}: unreadable answer: {e}"),
            retry_after: None,
            back_pressure: false,
        })
    }

    /// Upload one file, streamed from disk. Returns the candidate id when the server gives one.
    pub async fn upload(&self, upload: &Upload<'_>) -> Result<Option<String>, ApiError> {
        let mut url = self.endpoint(UPLOAD);
        let mut hops = 0;
        let response = loop {
            self.throttle().await;
            // A followed 307/308 sends the body again: the file is reopened for it.
            let (form, changed) = self.upload_form(upload).await?;
            let response = self.http.post(url.clone()).multipart(form).send().await;
            if changed.load(Ordering::SeqCst) {
                return Err(ApiError::FileChanged);
            }
            match self.redirect(&Method::POST, &url, &response, &mut hops)? {
                Some(next) => url = next,
                None => break response,
            }
        };
        let body = read_success(&url, response).await?;
        // The upload was accepted; an unreadable answer only costs us the candidate id.
        let answer: Option<UploadAnswer> = serde_json::from_slice(&body).ok();
        Ok(answer.and_then(|a| a.candidate_id).map(|id| match id {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }))
    }
}

impl ApiClient {
    /// The multipart form of one upload, streaming the file from a fresh open,
    /// and the flag that says the file turned out not to be the bytes hashed.
    async fn upload_form(&self, upload: &Upload<'_>) -> Result<(Form, Arc<AtomicBool>), ApiError> {
        let file = tokio::fs::File::open(upload.path)
            .await
            .map_err(|e| ApiError::File(e.to_string()))?;
        let changed = Arc::new(AtomicBool::new(false));
        let body = verified_stream(
            file,
            upload.size,
            upload.checksum.to_string(),
            changed.clone(),
        );
        let part = file_part(upload, reqwest::Body::wrap_stream(body));
        let mut form = Form::new()
            .part("file", part)
            .text("checksum", upload.checksum.to_string());
        if let Some(hint) = &upload.job_hint {
            form = form.text("job_hint", hint.clone());
        }
        if let Some(email) = &upload.email {
            form = form.text("email", email.clone());
        }
        Ok((form, changed))
    }

    /// Judge a redirect answer to `method url`: `Ok(None)` when `response` is
    /// not a redirect (read it as the answer), `Ok(Some(next))` to send the
    /// same request to `next`, or `Misdirected` when following would send the
    /// key to another origin, turn a POST into a GET, or loop.
    pub(crate) fn redirect(
        &self,
        method: &Method,
        url: &Url,
        response: &reqwest::Result<Response>,
        hops: &mut u32,
    ) -> Result<Option<Url>, ApiError> {
        let Ok(response) = response else {
            return Ok(None);
        };
        let status = response.status().as_u16();
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            return Ok(None);
        }
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok());
        let target = location.and_then(|l| url.join(l).ok());
        let Some(target) = target else {
            return Err(ApiError::Misdirected {
                from: url.to_string(),
                to: location.unwrap_or("").to_string(),
                message: format!(
                    "{method} {url} answered {status} without a usable Location ({:?}); \
                     is tanova_url ({}) right?",
                    location.unwrap_or(""),
                    self.base
                ),
            });
        };
        let misdirected = |why: String| ApiError::Misdirected {
            from: url.to_string(),
            to: target.to_string(),
            message: why,
        };
        if target.origin() != self.base.origin() {
            return Err(misdirected(format!(
                "{method} {url} answered {status}, a redirect to {target}, which is another \
                 origin than tanova_url ({}): not followed, and the API key was not sent there. \
                 If the service really moved, set tanova_url to the new address",
                self.base
            )));
        }
        if *method == Method::POST && matches!(status, 301..=303) {
            return Err(misdirected(format!(
                "POST {url} answered {status}, a redirect to {target} that would turn the \
                 request into a GET: not followed. tanova_url ({}) is probably wrong \
                 (http instead of https, or a missing www?)",
                self.base
            )));
        }
        *hops += 1;
        if *hops > MAX_REDIRECTS {
            return Err(misdirected(format!(
                "{method} {url}: more than {MAX_REDIRECTS} redirects, the last to {target}; \
                 is tanova_url ({}) right?",
                self.base
            )));
        }
        Ok(Some(target))
    }
}

/// The multipart part carrying a file's bytes, its name and its MIME type.
pub(crate) fn file_part(upload: &Upload<'_>, body: reqwest::Body) -> Part {
    let file_name = upload
        .path
        .file_name()
        .map_or_else(|| "cv".into(), |n| n.to_string_lossy().into_owned());
    Part::stream_with_length(body, upload.size)
        .file_name(file_name)
        .mime_str(upload.mime)
        .expect("MIME types are valid")
}

/// Turn a response into its body on 2xx, or into the matching [`ApiError`].
async fn read_success(
    url: &Url,
    response: reqwest::Result<Response>,
) -> Result<bytes::Bytes, ApiError> {
    let response = response.map_err(|e| transport_error(url, &e))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_error(url, &e))?;
    let disposition = classify(status.as_u16(), retry_after.as_deref());
    if disposition == Disposition::Success {
        return Ok(body);
    }
    let message = error_message(&body, status);
    Err(match disposition {
        Disposition::Success => unreachable!("handled above"),
        Disposition::Rejected => ApiError::Rejected {
            url: url.to_string(),
            status: status.as_u16(),
            message,
        },
        Disposition::Transient { retry_after } => ApiError::Transient {
            message: format!("{url}: {status}: {message}"),
            retry_after,
            back_pressure: matches!(status.as_u16(), 408 | 429 | 503),
        },
        Disposition::Permanent => ApiError::Permanent {
            status: status.as_u16(),
            message,
        },
    })
}

/// The server's own words when it gave any, else the status's reason phrase.
fn error_message(body: &[u8], status: reqwest::StatusCode) -> String {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    parsed
        .and_then(|b| b.message.or(b.error))
        .or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            (!text.is_empty() && text.len() <= 200).then(|| text.to_string())
        })
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string())
}

fn transport_error(url: &Url, e: &reqwest::Error) -> ApiError {
    // reqwest's Display stops at the outermost layer; the cause is what helps.
    let mut message = format!("{url}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    ApiError::Transient {
        message,
        retry_after: None,
        back_pressure: e.is_timeout(),
    }
}

/// Stream a file as the request body, hashing as it goes; if the bytes turn
/// out not to be `checksum` (the file changed since it was hashed), end with
/// an error so the server never receives a complete body under a stale checksum.
fn verified_stream(
    file: tokio::fs::File,
    size: u64,
    checksum: String,
    changed: Arc<AtomicBool>,
) -> impl futures_util::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
    const CHUNK: usize = 64 * 1024;
    struct State {
        file: tokio::fs::File,
        hasher: Sha256,
        seen: u64,
        finished: bool,
    }
    let state = State {
        file,
        hasher: Sha256::new(),
        seen: 0,
        finished: false,
    };
    stream::unfold(state, move |mut st| {
        let checksum = checksum.clone();
        let changed = changed.clone();
        async move {
            if st.finished {
                return None;
            }
            let fail = |st: State, changed: &AtomicBool| {
                changed.store(true, Ordering::SeqCst);
                Some((
                    Err(io::Error::other("file changed during upload")),
                    State {
                        finished: true,
                        ..st
                    },
                ))
            };
            // Read no further than the hashed size; a file that grew since is uploaded as hashed.
            let want = (size - st.seen).min(CHUNK as u64) as usize;
            let mut buf = BytesMut::with_capacity(want.max(1));
            match st.file.read_buf(&mut buf).await {
                Err(e) => Some((
                    Err(e),
                    State {
                        finished: true,
                        ..st
                    },
                )),
                // Shorter than hashed: it was truncated or replaced.
                Ok(0) if st.seen < size => fail(st, &changed),
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(want.min(n));
                    st.seen += buf.len() as u64;
                    st.hasher.update(&buf);
                    if st.seen == size {
                        // Check before sending the last chunk, so a stale body never completes.
                        let digest = hex::encode(std::mem::take(&mut st.hasher).finalize());
                        if digest != checksum {
                            return fail(st, &changed);
                        }
                        st.finished = true;
                    }
                    Some((Ok(buf.freeze()), st))
                }
            }
        }
    })
}
