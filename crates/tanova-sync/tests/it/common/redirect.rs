//! Fixtures on loopback: a front that forwards to the emulator or answers chosen paths itself
//! (a redirect, a page), and a "foreign host" that records whether a request carried the API key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;

/// One request a fixture saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub had_key: bool,
}

fn seen(request: &Request) -> Seen {
    Seen {
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
        had_key: request.headers().contains_key("x-tanova-api-key"),
    }
}

fn serve(router: Router) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, router).await.unwrap();
        });
    });
    port
}

/// A host that is not the configured origin. It answers every request as a
/// friendly service would, so a client that followed a redirect here would succeed.
pub struct Foreign {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Foreign {
    pub fn start() -> Self {
        let seen_log = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new()
            .fallback(
                |State(log): State<Arc<Mutex<Vec<Seen>>>>, request: Request| async move {
                    log.lock().unwrap().push(seen(&request));
                    axum::Json(serde_json::json!({
                        "success": true, "authenticated": true, "exists": false,
                        "candidateId": "foreign-1"
                    }))
                },
            )
            .with_state(seen_log.clone());
        Foreign {
            port: serve(router),
            seen: seen_log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// What the front answers on one path instead of the service: this status,
/// with a Location (a redirect) or an HTML page (a proxy's, a portal's).
#[derive(Debug, Clone)]
struct Canned {
    status: u16,
    location: Option<String>,
    page: Option<String>,
}

#[derive(Clone)]
struct FrontState {
    backend: SocketAddr,
    rules: Arc<Mutex<HashMap<String, Canned>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    client: reqwest::Client,
}

/// The configured origin: redirects the paths it has rules for, and forwards
/// everything else to the emulator (a path under `/moved` without that prefix).
pub struct Front {
    pub port: u16,
    rules: Arc<Mutex<HashMap<String, Canned>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Front {
    pub fn start(backend: SocketAddr) -> Self {
        tanova_sync::api::tls::install_provider();
        let state = FrontState {
            backend,
            rules: Arc::default(),
            seen: Arc::default(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        };
        let (rules, seen_log) = (state.rules.clone(), state.seen.clone());
        let router = Router::new().fallback(front).with_state(state);
        Front {
            port: serve(router),
            rules,
            seen: seen_log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answer `path` with a redirect from now on.
    pub fn redirect(&self, path: &str, status: u16, location: &str) {
        let rule = Canned {
            status,
            location: Some(location.to_string()),
            page: None,
        };
        self.rules.lock().unwrap().insert(path.to_string(), rule);
    }

    /// Answer `path` with `status` and an HTML page from now on; the service never sees it.
    pub fn page(&self, path: &str, status: u16, html: &str) {
        let rule = Canned {
            status,
            location: None,
            page: Some(html.to_string()),
        };
        self.rules.lock().unwrap().insert(path.to_string(), rule);
    }

    /// Forward every path again.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn front(State(state): State<FrontState>, request: Request) -> Response {
    state.seen.lock().unwrap().push(seen(&request));
    let path = request.uri().path().to_string();
    let rule = state.rules.lock().unwrap().get(&path).cloned();
    if let Some(rule) = rule {
        // Read the request's body first, as a real server (nginx) discards it:
        // hyper would otherwise close the connection while the client is still
        // streaming the upload, and the client would see a broken pipe, not the redirect.
        let _ = axum::body::to_bytes(request.into_body(), 64 << 20).await;
        let mut response = Response::new(Body::from(rule.page.clone().unwrap_or_default()));
        *response.status_mut() = StatusCode::from_u16(rule.status).unwrap();
        let headers = response.headers_mut();
        if let Some(location) = &rule.location {
            headers.insert("location", HeaderValue::from_str(location).unwrap());
        }
        if rule.page.is_some() {
            headers.insert("content-type", HeaderValue::from_static("text/html"));
        }
        return response;
    }
    let target_path = path.strip_prefix("/moved").unwrap_or(&path);
    let url = format!("http://{}{target_path}", state.backend);
    let method = request.method().clone();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 64 << 20)
        .await
        .unwrap();
    let mut forward = state.client.request(method, url).body(body);
    for name in ["content-type", "x-tanova-api-key"] {
        if let Some(value) = headers.get(name) {
            forward = forward.header(name, value.as_bytes());
        }
    }
    let answer = forward.send().await.unwrap();
    let status = answer.status().as_u16();
    let content_type = answer.headers().get("content-type").cloned();
    let bytes = answer.bytes().await.unwrap();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    if let Some(ct) = content_type {
        response.headers_mut().insert(
            "content-type",
            HeaderValue::from_bytes(ct.as_bytes()).unwrap(),
        );
    }
    response
}
