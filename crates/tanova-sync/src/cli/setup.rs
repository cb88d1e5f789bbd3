//! The console's setup page, served by `ui` when there is no config: the folder checked, the key tested live against `GET /api/sync/health`, and `tanova-config.json` written (0600) as `init` writes it; then `ui` starts watching on the same address.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::init::{check_folder, check_key, write_config};
use crate::config::{ApiKey, DEFAULT_URL};
use crate::serve::token::{self, Token};
use crate::serve::{escape_html, guarded, with_csp, AllowedHosts, CSS};

const JS: &str = include_str!("setup.js");

struct Setup {
    token: Token,
    port: u16,
    /// Where the config is written.
    target: PathBuf,
    saved: Mutex<Option<oneshot::Sender<()>>>,
}

/// Serve the setup page on loopback until the config is saved (the address
/// to start the agent on) or `cancel` fires (`None`). `announce` hears its URL.
pub(super) async fn run(
    target: PathBuf,
    cancel: &CancellationToken,
    announce: &dyn Fn(&str),
) -> std::io::Result<Option<SocketAddr>> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let (saved_tx, saved_rx) = oneshot::channel();
    let setup = Arc::new(Setup {
        token: Token::for_process(),
        port: addr.port(),
        target,
        saved: Mutex::new(Some(saved_tx)),
    });
    let url = format!("http://{addr}/?{}={}", token::QUERY, setup.token.expose());
    let router = Router::new()
        .route("/", get(page))
        .route(
            "/assets/console.css",
            get(|| async { asset(CSS, "text/css") }),
        )
        .route(
            "/assets/setup.js",
            get(|| async { asset(JS, "text/javascript") }),
        )
        .route("/setup/{step}", post(step))
        .with_state(setup);
    let router = guarded(router, AllowedHosts::new(addr, &[]));
    let stop = CancellationToken::new();
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };
    say!("listening on http://{addr} (setup page)");
    announce(&url);
    let saved = tokio::select! {
        _ = cancel.cancelled() => false,
        done = saved_rx => done.is_ok(),
    };
    // Idle keep-alive connections close too, so the browser's next request reaches the agent.
    stop.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), server).await;
    Ok(saved.then_some(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        addr.port(),
    )))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn page(
    State(setup): State<Arc<Setup>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(given) = query.get(token::QUERY) {
        if !setup.token.matches(given) {
            return (
                StatusCode::FORBIDDEN,
                "this link's token is not this setup's\n",
            )
                .into_response();
        }
        let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
        if let Ok(cookie) = HeaderValue::from_str(&token::set_cookie(setup.port, &setup.token)) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
        return response;
    }
    if !token::carried(&headers, setup.port, &setup.token, None) {
        return (
            StatusCode::FORBIDDEN,
            "open the link that `tanova-sync ui` printed (it carries a token)\n",
        )
            .into_response();
    }
    html(form_page(&Form::default(), &[]))
}

/// What the user typed (never the key: it is not sent back to the browser).
#[derive(Default)]
struct Form {
    folder: String,
    url: String,
}

/// `POST /setup/folder`, `/setup/key` (JSON answers for the page's buttons) and
/// `/setup/save` (the form; works without scripts): each behind the token and the Origin check.
async fn step(
    State(setup): State<Arc<Setup>>,
    axum::extract::Path(step): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(why) = token::same_origin(&headers) {
        return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
    }
    let fields: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
    if !token::carried(
        &headers,
        setup.port,
        &setup.token,
        fields.get(token::QUERY).map(String::as_str),
    ) {
        return (StatusCode::FORBIDDEN, "the setup page's token is needed\n").into_response();
    }
    let url_text = Some(field("tanova_url")).filter(|u| !u.trim().is_empty());
    let url_text = url_text.unwrap_or_else(|| DEFAULT_URL.to_string());
    let key = ApiKey::new(field("api_key").trim());
    let answer = match step.as_str() {
        "folder" => check_folder(&field("folder"))
            .map(|(folder, cvs)| format!("{} holds {cvs} CVs.", folder.display())),
        "key" => check_key(&url_text, &key)
            .await
            .map(|(_, agency)| format!("The key is valid for {agency}.")),
        "save" => return save(&setup, &field("folder"), &key, &url_text).await,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let (ok, message) = match answer {
        Ok(m) => (true, m),
        Err(m) => (false, m),
    };
    axum::Json(json!({ "ok": ok, "message": message })).into_response()
}

/// Check both, write the config, and hand over to the agent; or show the form again with what is wrong.
async fn save(setup: &Setup, folder: &str, key: &ApiKey, url_text: &str) -> Response {
    let form = Form {
        folder: folder.to_string(),
        url: url_text.to_string(),
    };
    let mut problems = Vec::new();
    let checked_folder = check_folder(folder).map_err(|e| problems.push(e)).ok();
    let checked_key = check_key(url_text, key)
        .await
        .map_err(|e| problems.push(e))
        .ok();
    let (Some((folder, _)), Some((url, agency))) = (checked_folder, checked_key) else {
        return html(form_page(&form, &problems));
    };
    if let Err(e) = write_config(&setup.target, &folder, key, &url) {
        return html(form_page(&form, &[e]));
    }
    tracing::info!("the setup page wrote {}", setup.target.display());
    if let Some(saved) = setup.saved.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = saved.send(());
    }
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"2;url=/\"><title>tanova-sync setup</title>\
         <link rel=\"stylesheet\" href=\"/assets/console.css\"></head><body><main>\
         <h1>Saved</h1><p id=\"saved\">The key is valid for {}. Wrote {} (readable only by you). \
         Starting to sync <code>{}</code>; the dashboard opens in a moment, or \
         <a href=\"/\">open it now</a>.</p></main></body></html>\n",
        escape_html(&agency),
        escape_html(&setup.target.display().to_string()),
        escape_html(&folder.display().to_string())
    );
    html(body)
}

fn html(body: String) -> Response {
    with_csp(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
}

/// The form: folder, key, and the URL under advanced settings.
fn form_page(form: &Form, problems: &[String]) -> String {
    let mut errors = String::new();
    for p in problems {
        let _ = write!(errors, "<li>{}</li>", escape_html(p));
    }
    if !errors.is_empty() {
        errors = format!("<div class=\"banner problem\" role=\"alert\"><h2>Not saved</h2><ul>{errors}</ul></div>");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\"><title>tanova-sync setup</title>\
         <link rel=\"stylesheet\" href=\"/assets/console.css\">\
         <script src=\"/assets/setup.js\" defer></script></head><body><main>\
         <h1>Set up tanova-sync</h1>{errors}\
         <form id=\"setup\" method=\"post\" action=\"/setup/save\" class=\"setup\">\
         <p><label for=\"folder\">Folder of CVs</label><br>\
         <input id=\"folder\" name=\"folder\" required size=\"60\" value=\"{folder}\" autocomplete=\"off\"> \
         <button type=\"button\" id=\"check-folder\" hidden>Check folder</button><br>\
         <output id=\"folder-result\" for=\"folder\" aria-live=\"polite\"></output></p>\
         <p><label for=\"api_key\">API key (tanova_sk_…)</label><br>\
         <input id=\"api_key\" name=\"api_key\" type=\"password\" required size=\"60\" autocomplete=\"off\"> \
         <button type=\"button\" id=\"test-key\" hidden>Test key</button><br>\
         <output id=\"key-result\" for=\"api_key\" aria-live=\"polite\"></output></p>\
         <details><summary>Advanced settings</summary><p><label for=\"tanova_url\">Tanova URL</label><br>\
         <input id=\"tanova_url\" name=\"tanova_url\" size=\"60\" value=\"{url}\"></p></details>\
         <p><button type=\"submit\" id=\"save\">Save and start syncing</button></p>\
         </form><p class=\"muted\">Saving checks the folder and the key with Tanova, writes \
         tanova-config.json readable only by you (as <code>tanova-sync init</code> does), and starts \
         watching the folder.</p></main></body></html>\n",
        folder = escape_html(&form.folder),
        url = escape_html(if form.url.is_empty() { DEFAULT_URL } else { &form.url }),
    )
}
