//! The HTTP client for the sync API: one pooled keep-alive client, typed answers, typed errors.

pub mod batch;
mod key;
pub mod rate;
pub mod status;
pub mod tls;
pub mod wire;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::{stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, Response, Url};
use sha2::{Digest, Sha256};

use crate::fence::Fence;
pub use key::ApiKey;
use rate::RateLimiter;
use status::{classify, Disposition};
use wire::{CheckDuplicate, DuplicateAnswer, ErrorBody, Health, UploadAnswer};

pub const API_KEY_HEADER: &str = "X-Tanova-API-Key";
const HEALTH: &str = "api/sync/health";
const CHECK_DUPLICATE: &str = "api/sync/check-duplicate";
const UPLOAD: &str = "api/sync/upload";
/// The most same-origin redirects followed for one call.
const MAX_REDIRECTS: u32 = 5;
/// The longest wait for the health check's answer (at most `request_timeout`).
/// The service answers it without parsing anything, so a longer wait means it
/// is not answering: a probe during an outage, or the check after a timed-out
/// upload, says so within this time instead of `request_timeout`'s minutes.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(15);

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
    /// Worth retrying: 408, 429, 5xx, a dropped connection.
    /// `back_pressure` when the service says it is overloaded (408, 429, 503).
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
        back_pressure: bool,
    },
    /// No answer in time (`request_timeout`, or no connection within the
    /// connect timeout): worth retrying, and back-pressure for the controller.
    /// Apart from [`ApiError::Transient`] because a stalled service is an
    /// outage, not a slow upload: the agent checks the service's health at
    /// once rather than after every retry has waited as long.
    #[error("{message}")]
    NoAnswer { message: String },
    /// Something other than the service answered in its place: a success
    /// status whose body is not the service's JSON (a captive portal's or a
    /// proxy's page, a website at `tanova_url`), or an upload endpoint that
    /// is not there (404, 405, 410: a deployment under way, a wrong path).
    /// No fault of the file's: worth retrying, never proof that an upload
    /// arrived, and a reason to check the service's health at once.
    #[error("{message}")]
    NotTheService { message: String },
    /// The server refused this request for good (other 4xx).
    #[error("refused by the server ({status}): {message}")]
    Permanent { status: u16, message: String },
    /// The file's bytes no longer match the checksum being uploaded, or the
    /// claim on them lapsed (see [`Upload::fence`]): the last byte was not sent.
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

/// Why the HTTP client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("api_key: contains characters not allowed in an HTTP header")]
    KeyNotAHeader,
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// An error with its causes: reqwest's Display stops at the outermost layer.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

/// Why reqwest would not build a client, in words: its own text is
/// "builder error" followed by the cause, if it gives one.
fn build_failure(e: &reqwest::Error, trusted: &tls::Roots) -> String {
    let text = with_causes(e);
    let reason = match text.strip_prefix("builder error") {
        Some(rest) => rest.trim_start_matches(':').trim(),
        None => text.as_str(),
    };
    let reason = if reason.is_empty() {
        "reqwest refused its settings without saying why (check HTTPS_PROXY / HTTP_PROXY and ca_file)"
    } else {
        reason
    };
    format!("{reason} (TLS roots: {trusted})")
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
    /// With a shared ledger: the claim that must still hold when the last byte goes out.
    pub fence: Option<Arc<Fence>>,
    /// A small file's bytes, already read and checked against `checksum`;
    /// `None`: streamed from `path`.
    pub bytes: Option<bytes::Bytes>,
}

/// The client. Cheap to share: it holds one connection pool.
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    /// The key header, swapped in place when the user gives a new key to a paused agent.
    key: RwLock<HeaderValue>,
    /// `max_requests_per_minute`: every request waits for a token first.
    rate: Option<Arc<RateLimiter>>,
    /// The longest wait for a health answer: [`HEALTH_TIMEOUT`] or `request_timeout`, the shorter.
    health_timeout: Duration,
}

/// Timeouts of the HTTP client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// The longest wait for the next bytes of an answer (uploads take seconds server-side).
    pub read: Duration,
}

impl ApiClient {
    pub fn new(base: &Url, key: &ApiKey, timeouts: Timeouts) -> Result<Self, ClientError> {
        Self::with_extra_roots(base, key, timeouts, &[])
    }

    /// A client that also trusts `roots` (a corporate CA, `ca_file`) besides the
    /// system's (or, where the system has none, the bundled Mozilla roots).
    pub fn with_extra_roots(
        base: &Url,
        key: &ApiKey,
        timeouts: Timeouts,
        roots: &[reqwest::Certificate],
    ) -> Result<Self, ClientError> {
        let value = key_header(key)?;
        let builder = reqwest::Client::builder()
            .user_agent(concat!("tanova-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.read)
            .pool_idle_timeout(Duration::from_secs(60))
            // reqwest's own policy sends default headers (the key) to any host it
            // is redirected to; redirects are judged by `ApiClient::redirect` instead.
            .redirect(reqwest::redirect::Policy::none());
        // Through a proxy, a plain-http request hands it the key in clear, and
        // the key goes over plain http only to loopback: that is reached
        // directly (a proxy's "localhost" is not this machine anyway).
        let builder = if base.scheme() == "http" && crate::config::is_loopback(base) {
            builder.no_proxy()
        } else {
            builder
        };
        let (builder, trusted) = tls::with_roots(builder, roots);
        tracing::debug!("TLS: trusting {trusted}");
        let http = builder
            .build()
            .map_err(|e| ClientError::Build(build_failure(&e, &trusted)))?;
        // Joining relative paths onto "https://host/prefix" needs the trailing slash.
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(ApiClient {
            http,
            base,
            key: RwLock::new(value),
            rate: None,
            health_timeout: timeouts.read.min(HEALTH_TIMEOUT),
        })
    }

    /// Use `key` from the next request on (a paused agent given a new key).
    pub fn set_key(&self, key: &ApiKey) -> Result<(), ClientError> {
        let value = key_header(key)?;
        *self.key.write().unwrap_or_else(|p| p.into_inner()) = value;
        Ok(())
    }

    /// A request to `url` carrying the key.
    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let key = self.key.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut headers = HeaderMap::new();
        headers.insert(API_KEY_HEADER, key);
        self.http.request(method, url).headers(headers)
    }

    pub(crate) fn post(&self, url: Url) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, url)
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
            let response = self
                .request(reqwest::Method::GET, url.clone())
                .timeout(self.health_timeout)
                .send()
                .await;
            match self.redirect(&Method::GET, &url, &response, &mut hops)? {
                Some(next) => url = next,
                None => break response,
            }
        };
        let body = read_success(&url, response).await?;
        serde_json::from_slice(&body).map_err(|e| unreadable("GET", &url, &body, &e))
    }

    /// Whether the server already has these bytes.
    pub async fn check_duplicate(&self, checksum: &str) -> Result<DuplicateAnswer, ApiError> {
        let mut url = self.endpoint(CHECK_DUPLICATE);
        let mut hops = 0;
        let response = loop {
            self.throttle().await;
            let response = self
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
        serde_json::from_slice(&body).map_err(|e| unreadable("POST", &url, &body, &e))
    }

    /// Upload one file, from the bytes given or streamed from disk. Returns
    /// the candidate id when the server gives one.
    pub async fn upload(&self, upload: &Upload<'_>) -> Result<Option<String>, ApiError> {
        let mut url = self.endpoint(UPLOAD);
        let mut hops = 0;
        let response = loop {
            self.throttle().await;
            // A followed 307/308 sends the body again: a streamed file is reopened for it.
            let (form, changed) = self.upload_form(upload).await?;
            let response = self.post(url.clone()).multipart(form).send().await;
            if changed.load(Ordering::SeqCst) {
                return Err(ApiError::FileChanged);
            }
            match self.redirect(&Method::POST, &url, &response, &mut hops)? {
                Some(next) => url = next,
                None => break response,
            }
        };
        let body = read_success(&url, response)
            .await
            .map_err(|e| endpoint_missing(&url, e))?;
        // Only the service's JSON says the upload was taken: a 200 page from a
        // captive portal or a proxy is no upload, and counting it as one would
        // lose the file. The next attempt's duplicate check finds the bytes if
        // they did arrive. A JSON answer without the id is still the service's.
        let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            let seen = unreadable("POST", &url, &body, &e);
            ApiError::NotTheService {
                message: format!("{seen}; the upload is not taken as delivered"),
            }
        })?;
        let answer: Option<UploadAnswer> = serde_json::from_value(answer).ok();
        Ok(answer.and_then(|a| a.candidate_id).map(|id| match id {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }))
    }
}

impl ApiClient {
    /// The multipart form of one upload: the bytes given (`Upload::bytes`) or
    /// the file streamed from a fresh open and checked as it goes,
    /// and the flag that says the file turned out not to be the bytes hashed.
    async fn upload_form(&self, upload: &Upload<'_>) -> Result<(Form, Arc<AtomicBool>), ApiError> {
        let changed = Arc::new(AtomicBool::new(false));
        let body = match memory_body(upload, &changed) {
            Some(body) => body,
            None => {
                let path = upload.path.to_path_buf();
                let file = crate::fs_threads::run(move || std::fs::File::open(path))
                    .await
                    .and_then(|opened| opened)
                    .map_err(|e| ApiError::File(e.to_string()))?;
                reqwest::Body::wrap_stream(verified_stream(
                    Source::Open(file),
                    upload.size,
                    upload.checksum.to_string(),
                    upload.fence.clone(),
                    changed.clone(),
                ))
            }
        };
        let part = file_part(upload, body);
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

/// The key as a header value that is never printed in debug output.
fn key_header(key: &ApiKey) -> Result<HeaderValue, ClientError> {
    let mut value = HeaderValue::from_str(key.expose()).map_err(|_| ClientError::KeyNotAHeader)?;
    value.set_sensitive(true);
    Ok(value)
}

/// The body of a file whose bytes were read at its look (`Upload::bytes`),
/// fenced like a streamed one when a claim must hold for its last byte.
fn memory_body(upload: &Upload<'_>, changed: &Arc<AtomicBool>) -> Option<reqwest::Body> {
    let bytes = upload.bytes.clone()?;
    Some(match &upload.fence {
        None => reqwest::Body::from(bytes),
        Some(fence) => {
            reqwest::Body::wrap_stream(fenced_bytes(bytes, fence.clone(), changed.clone()))
        }
    })
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

/// An upload's refusal as the agent takes it: a 404, 405 or 410 says the
/// endpoint is not there (a deployment under way, a proxy's default page, a
/// wrong path in `tanova_url`), for every file alike. Taken as the file's own
/// refusal, it held every CV sent meanwhile until `tanova-sync retry`.
fn endpoint_missing(url: &Url, e: ApiError) -> ApiError {
    match e {
        ApiError::Permanent {
            status: status @ (404 | 405 | 410),
            message,
        } => ApiError::NotTheService {
            message: format!(
                "POST {url} answered {status} ({message}): the service takes no uploads there \
                 now (a deployment under way, or a wrong path in tanova_url); no fault of the \
                 file's, so it is tried again"
            ),
        },
        other => other,
    }
}

/// A success answer to `method url` whose `body` is not the service's JSON,
/// described so that the admin can tell who answered instead.
pub(crate) fn unreadable(method: &str, url: &Url, body: &[u8], e: &serde_json::Error) -> ApiError {
    let what = match body_text(body) {
        None => "an empty body".to_string(),
        Some(text) if looks_like_html(&String::from_utf8_lossy(body)) => {
            format!("an HTML page ({text:?})")
        }
        Some(text) => format!("{text:?} ({e})"),
    };
    ApiError::NotTheService {
        message: format!(
            "{method} {url} answered with {what}, not the Tanova service's JSON: something \
             else answers there (a captive portal, a proxy's sign-in or maintenance page, or \
             a website at the wrong tanova_url)"
        ),
    }
}

/// The most of a server's error text that is kept, so a proxy's page cannot flood the log or the state.
const MAX_MESSAGE: usize = 200;

/// The server's own words when it gave any (an HTML page reduced to its
/// text), else the status's reason phrase.
fn error_message(body: &[u8], status: reqwest::StatusCode) -> String {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    parsed
        .and_then(|b| b.message.or(b.error))
        .map(|m| cap(&m))
        .or_else(|| body_text(body))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string())
}

/// What a body says, as text: an HTML page reduced to its visible text,
/// white space folded, at most [`MAX_MESSAGE`] characters; `None` when empty.
fn body_text(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = if looks_like_html(&text) {
        html_text(&text)
    } else {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    (!text.is_empty()).then(|| cap(&text))
}

/// Proxies and firewalls answer with a page, not JSON.
fn looks_like_html(text: &str) -> bool {
    text.trim_start().starts_with('<')
}

/// The visible text of an HTML page: tags, scripts and styles dropped, entities for the
/// usual characters decoded, white space folded.
fn html_text(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        out.push(' ');
        let tag = &rest[open..];
        let lower = tag.get(..8).unwrap_or(tag).to_ascii_lowercase();
        let skip_to = if lower.starts_with("<script") || lower.starts_with("<style") {
            let name = if lower.starts_with("<script") {
                "</script"
            } else {
                "</style"
            };
            tag.to_ascii_lowercase().find(name).unwrap_or(tag.len())
        } else {
            0
        };
        let after = &tag[skip_to..];
        rest = match after.find('>') {
            Some(close) => &after[close + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most [`MAX_MESSAGE`] characters, marked when cut.
fn cap(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn transport_error(url: &Url, e: &reqwest::Error) -> ApiError {
    // reqwest's Display stops at the outermost layer; the cause is what helps.
    let mut message = format!("{url}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if e.is_timeout() {
        return ApiError::NoAnswer { message };
    }
    if let Some(hint) = tls::refusal_hint(e) {
        message.push_str(&format!(" ({hint})"));
    }
    ApiError::Transient {
        message,
        retry_after: None,
        back_pressure: false,
    }
}

/// Stream a file as the request body, hashing as it goes; if the bytes turn
/// out not to be `checksum` (the file changed since it was hashed), or the
/// `fence` no longer holds, end with an error before the last chunk, so the
/// server never receives a complete body under a stale checksum or a lost claim.
///
/// Why hash the stream rather than compare stats before and after (issue 12):
/// the upload reads every byte anyway, so the guard costs CPU only (SHA-NI,
/// over 1 GB/s a core, far above any upload), no second read. A stat check
/// (size, mtime_ns, ctime_ns, inode) would save that CPU but is not safe:
/// on file systems with coarse timestamps (FAT and SMB shares: 2 s; ext3: 1 s)
/// or after tools that restore mtimes (`cp -p`, `rsync -t`, `touch -r`), a
/// same-size rewrite within one tick is invisible to it, and a stale checksum
/// would be recorded for the bytes sent. The digest cannot be fooled that way.
///
/// The file is read on the file-system threads, a chunk a call, never on the
/// async runtime.
fn verified_stream(
    source: Source,
    size: u64,
    checksum: String,
    fence: Option<Arc<Fence>>,
    changed: Arc<AtomicBool>,
) -> impl futures_util::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
    // Each chunk is one call on the file-system threads; 128 KiB sends most
    // CVs in one, and bounds what an upload in flight holds.
    const CHUNK: u64 = 128 * 1024;
    struct State {
        source: Option<Source>,
        hasher: Sha256,
        seen: u64,
    }
    let state = State {
        source: Some(source),
        hasher: Sha256::new(),
        seen: 0,
    };
    stream::unfold(state, move |mut st| {
        let checksum = checksum.clone();
        let changed = changed.clone();
        let fence = fence.clone();
        async move {
            // Taken for this read and put back only when there is more to send:
            // after the last chunk, or an error, the body ends.
            let source = st.source.take()?;
            // Read no further than the hashed size; a file that grew since is uploaded as hashed.
            let want = (size - st.seen).min(CHUNK);
            let opening = matches!(source, Source::Path(_));
            let read = crate::fs_threads::run(move || -> io::Result<(std::fs::File, Vec<u8>)> {
                let file = match source {
                    Source::Open(file) => file,
                    Source::Path(path) => std::fs::File::open(path)?,
                };
                let mut chunk = Vec::with_capacity(want as usize);
                io::Read::read_to_end(&mut io::Read::take(&file, want), &mut chunk)?;
                Ok((file, chunk))
            })
            .await
            .and_then(|read| read);
            let (file, chunk) = match read {
                Ok(read) => read,
                Err(e) => {
                    // Gone or unreadable before its turn in a batch: looked at
                    // again as a changed file is. A failed read is the transport's error.
                    if opening {
                        changed.store(true, Ordering::SeqCst);
                    }
                    return Some((Err(e), st));
                }
            };
            let fail = |st: State, why: &str| {
                changed.store(true, Ordering::SeqCst);
                Some((Err(io::Error::other(why.to_string())), st))
            };
            // Shorter than hashed: it was truncated or replaced.
            if (chunk.len() as u64) < want {
                return fail(st, "file changed during upload");
            }
            st.seen += want;
            st.hasher.update(&chunk);
            if st.seen == size {
                // Check before sending the last chunk, so a stale body never completes.
                let digest = crate::hash::to_hex(&std::mem::take(&mut st.hasher).finalize());
                if digest != checksum {
                    return fail(st, "file changed during upload");
                }
                if fence.is_some_and(|f| !f.holds()) {
                    return fail(st, "the claim lapsed before the last byte");
                }
            } else {
                st.source = Some(Source::Open(file));
            }
            Some((Ok(bytes::Bytes::from(chunk)), st))
        }
    })
}

/// Where a streamed body's bytes come from.
pub(crate) enum Source {
    /// The file, opened before the request was made.
    Open(std::fs::File),
    /// The file's path, opened when its first chunk is read (one file of a
    /// batch, so that a batch holds one file open at a time). A file that cannot
    /// be opened then ends the body and counts as changed: it is looked at
    /// again (gone, or unreadable) as a changed file is.
    Path(std::path::PathBuf),
}

/// Bytes already read and checked, sent in two pieces so that the claim is
/// checked before the last byte goes out, as [`verified_stream`] does.
fn fenced_bytes(
    bytes: bytes::Bytes,
    fence: Arc<Fence>,
    changed: Arc<AtomicBool>,
) -> impl futures_util::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
    let last = bytes.len().saturating_sub(1);
    let pieces = [bytes.slice(..last), bytes.slice(last..)];
    stream::iter(pieces.into_iter().enumerate()).map(move |(i, piece)| {
        if i == 1 && !fence.holds() {
            changed.store(true, Ordering::SeqCst);
            return Err(io::Error::other("the claim lapsed before the last byte"));
        }
        Ok(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_from_memory_stop_before_the_last_byte_once_the_claim_lapses() {
        let bytes = bytes::Bytes::from_static(b"%PDF a small cv");
        let collect = |fence: Arc<Fence>| {
            let changed = Arc::new(AtomicBool::new(false));
            let pieces = fenced_bytes(bytes.clone(), fence, changed.clone());
            async move {
                let pieces: Vec<io::Result<bytes::Bytes>> = pieces.collect().await;
                (pieces, changed.load(Ordering::SeqCst))
            }
        };
        let later = std::time::Instant::now() + Duration::from_secs(60);
        let (pieces, changed) = collect(Arc::new(Fence::new(later))).await;
        let sent: Vec<u8> = pieces
            .iter()
            .flat_map(|p| p.as_ref().unwrap().to_vec())
            .collect();
        assert_eq!((sent.as_slice(), changed), (&bytes[..], false));

        let lost = Arc::new(Fence::new(later));
        lost.lose();
        let (pieces, changed) = collect(lost).await;
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].as_ref().unwrap().len(), bytes.len() - 1);
        assert!(
            pieces[1].is_err() && changed,
            "the last byte is withheld and the upload fails"
        );
    }

    #[test]
    fn error_bodies_become_short_text() {
        let page = "<!DOCTYPE html><html><head><title>Blocked</title><style>h1{color:red}</style>\
            <script>var x = '<b>';</script></head><body><h1>Access&nbsp;denied</h1>\
            <p>Blocked by policy &amp; rule 1234.</p></body></html>";
        let long = "x".repeat(500);
        let table = [
            (
                r#"{"message":"Invalid API key"}"#.to_string(),
                "Invalid API key".to_string(),
            ),
            (r#"{"error":"nope"}"#.to_string(), "nope".to_string()),
            (
                page.to_string(),
                "Blocked Access denied Blocked by policy & rule 1234.".to_string(),
            ),
            ("  plain\n  text ".to_string(), "plain text".to_string()),
            (String::new(), "Forbidden".to_string()),
            (long.clone(), format!("{}…", &long[..MAX_MESSAGE])),
        ];
        for (body, want) in table {
            assert_eq!(
                error_message(body.as_bytes(), reqwest::StatusCode::FORBIDDEN),
                want,
                "{body}"
            );
        }
    }

    #[test]
    fn a_success_that_is_not_the_services_json_says_who_answered() {
        let url = Url::parse("https://tanova.example/api/sync/upload").unwrap();
        let portal = "<html><head><title>Sign in</title></head><body><h1>Guest network</h1>\
            <p>Please sign in.</p></body></html>";
        let table = [
            (
                portal,
                r#"an HTML page ("Sign in Guest network Please sign in.")"#,
            ),
            ("", "an empty body"),
            ("  \n", "an empty body"),
            ("OK", r#""OK" (expected value at line 1 column 1)"#),
        ];
        for (body, want) in table {
            let e = serde_json::from_slice::<serde_json::Value>(body.as_bytes()).unwrap_err();
            let ApiError::NotTheService { message } = unreadable("POST", &url, body.as_bytes(), &e)
            else {
                panic!("not NotTheService: {body:?}");
            };
            assert!(
                message.starts_with(&format!("POST {url} answered with {want}, not the Tanova")),
                "{body:?}: {message}"
            );
            assert!(message.contains("captive portal"), "{message}");
        }
    }
}
