//! The console's routes: the dashboard (with the token's first visit turned into a cookie), its embedded assets, and the actions (retry, pause, resume, rescan), each behind the token and the Origin check.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::page::{dashboard, View};
use super::token::{self, Token};
use super::{Sources, VERSION};

/// What the console can ask of a watching agent; each does what the CLI command does.
pub trait Actions: Send + Sync {
    /// Clear the failure of one file (`path` as the console shows it, relative
    /// to the folder) or of all (`None`), and rescan so they are tried again now.
    /// Returns how many were cleared.
    fn retry(&self, path: Option<&str>) -> Result<usize, String>;
    /// Hold uploads back (`true`) or let them go.
    fn hold(&self, held: bool);
    fn held(&self) -> bool;
    /// Look through the whole folder now.
    fn rescan(&self);
}

/// Everything the status server's handlers share.
pub struct Console {
    pub sources: Sources,
    pub token: Token,
    /// The port the cookie is named after.
    pub port: u16,
    /// Bound to an address other machines reach (`listen_public`): the
    /// console's pages need the token too, not only its actions.
    pub public: bool,
}

impl Console {
    /// What a viewer with (or without) the token sees.
    pub fn view(&self, can_act: bool) -> View {
        let actions = self.sources.actions.as_ref();
        View {
            actions: actions.is_some(),
            can_act,
            held: actions.is_some_and(|a| a.held()),
        }
    }

    /// Whether the request carries the token.
    pub fn carried(&self, headers: &HeaderMap, form: Option<&str>) -> bool {
        token::carried(headers, self.port, &self.token, form)
    }
}

/// The strict policy of every console page: its own script and style, nothing else.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

const JS: &str = include_str!("assets/console.js");
pub const CSS: &str = include_str!("assets/console.css");

/// `/`: the dashboard. `?token=…` with the right token sets the cookie and
/// sends the browser on to `/`, so the token leaves the address bar.
pub async fn page(
    State(console): State<Arc<Console>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(given) = query.get(token::QUERY) {
        if !console.token.matches(given) {
            return refuse(
                StatusCode::FORBIDDEN,
                "this link's token is not this agent's: it changes each time the agent starts; \
                 run `tanova-sync ui` for the current link",
            );
        }
        let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
        if let Ok(cookie) = HeaderValue::from_str(&token::set_cookie(console.port, &console.token))
        {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
        return response;
    }
    let can_act = console.carried(&headers, None);
    if console.public && !can_act {
        return refuse(
            StatusCode::FORBIDDEN,
            "this console listens on a public address: open the link with its token that the \
             agent printed (or `tanova-sync ui`)",
        );
    }
    let snapshot = console.sources.snapshot().await;
    let folder = console.sources.folder.display().to_string();
    let html = dashboard(&snapshot, &folder, VERSION, console.view(can_act));
    with_csp(asset(html, "text/html; charset=utf-8"))
}

/// `/assets/console.js` and `/assets/console.css`, embedded in the binary.
pub async fn script() -> Response {
    asset(JS.to_string(), "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    asset(CSS.to_string(), "text/css; charset=utf-8")
}

/// `POST /api/{action}`: the token and the Origin first, then the action.
/// A form gets a redirect back to the dashboard; `Accept: application/json` gets JSON.
pub async fn act(
    State(console): State<Arc<Console>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(why) = token::same_origin(&headers) {
        return refuse(StatusCode::FORBIDDEN, &why);
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if !console.carried(&headers, form.get(token::QUERY).map(String::as_str)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this request does not carry the console's token: open the link that \
             `tanova-sync ui` prints",
        );
    }
    let Some(actions) = console.sources.actions.as_ref() else {
        return refuse(
            StatusCode::CONFLICT,
            "this agent runs a one-shot sync and takes no actions; run `tanova-sync ui` or `watch`",
        );
    };
    let done = match action.as_str() {
        "retry" => {
            let path = form
                .get("path")
                .map(String::as_str)
                .filter(|p| !p.is_empty());
            match actions.retry(path) {
                Ok(0) if path.is_some() => Err(format!(
                    "no failed file at {}; the dashboard lists them",
                    path.unwrap_or_default()
                )),
                Ok(n) => Ok(format!("{n} failed file(s) will be tried again now")),
                Err(e) => Err(e),
            }
        }
        "pause" => {
            actions.hold(true);
            Ok("uploads paused".to_string())
        }
        "resume" => {
            actions.hold(false);
            Ok("uploads resumed".to_string())
        }
        "rescan" => {
            actions.rescan();
            Ok("rescanning the folder".to_string())
        }
        _ => return refuse(StatusCode::NOT_FOUND, "no such action"),
    };
    let json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    match (done, json) {
        (Ok(message), true) => {
            axum::Json(serde_json::json!({ "ok": true, "message": message })).into_response()
        }
        (Ok(_), false) => (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response(),
        (Err(e), _) => refuse(StatusCode::NOT_FOUND, &e),
    }
}

fn asset(body: String, content_type: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The strict CSP, and a referrer policy under which the page's own forms say
/// their Origin (nothing is sent to other origins either way).
pub fn with_csp(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn refuse(code: StatusCode, why: &str) -> Response {
    (code, format!("{why}\n")).into_response()
}
