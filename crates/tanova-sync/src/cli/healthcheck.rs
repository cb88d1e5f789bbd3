//! `tanova-sync healthcheck [URL]`: GET the running agent's `/health` and exit 0 only on 200, for a container's HEALTHCHECK (the image has no curl).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;

use super::Exit;

/// Where the status server listens when nothing says otherwise.
const DEFAULT_LISTEN: &str = "127.0.0.1:9898";
/// A health check that takes longer than this has failed.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Check `url`, or the `/health` of `listen` (`--listen`, TANOVA_LISTEN) on this machine.
pub async fn healthcheck(url: Option<&str>, listen: Option<&str>) -> Exit {
    let url = match target(url, listen) {
        Ok(url) => url,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    let builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    // The same roots as the agent's, so that it builds in an image without a CA store.
    let (builder, _) = crate::api::tls::with_roots(builder, &[]);
    let client = match builder.build() {
        Ok(client) => client,
        Err(e) => {
            eprintln!(
                "error: cannot build the HTTP client: {}",
                crate::api::with_causes(&e)
            );
            return Exit::Usage;
        }
    };
    match client.get(url.clone()).send().await {
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            let said = summary(&body);
            if status.is_success() {
                println!("{url}: {status}: {said}");
                Exit::Ok
            } else {
                eprintln!("{url}: {status}: {said}");
                Exit::SomeFailed
            }
        }
        Err(e) => {
            eprintln!("{url}: no answer: {}", crate::api::with_causes(&e));
            Exit::SomeFailed
        }
    }
}

/// The URL to check: `url` as given (a bare `HOST:PORT` gets `http://` and
/// `/health`), else `listen` with an unspecified address (0.0.0.0, ::) taken as loopback.
fn target(url: Option<&str>, listen: Option<&str>) -> Result<Url, String> {
    if let Some(text) = url {
        let text = text.trim();
        let full = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}/health")
        };
        let parsed = Url::parse(&full).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        if parsed.scheme() != "http" && parsed.scheme() != "https" {
            return Err(format!("{text:?}: expected an http:// URL"));
        }
        return Ok(parsed);
    }
    let text = listen.map(str::trim).unwrap_or(DEFAULT_LISTEN);
    let addr: SocketAddr = match text.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            .map_err(|_| format!("listen {text:?}: the port must be a number from 1 to 65535"))?,
        None => text
            .parse()
            .map_err(|_| format!("listen {text:?}: expected IP:PORT, like 127.0.0.1:9898"))?,
    };
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    if addr.port() == 0 {
        return Err(format!(
            "listen {text:?}: port 0 picks a free port at start; give the URL it printed"
        ));
    }
    Url::parse(&format!(
        "http://{}/health",
        SocketAddr::new(ip, addr.port())
    ))
    .map_err(|e| format!("listen {text:?}: {e}"))
}

/// What /health said: its `status` word and `message`, or the start of any other body.
fn summary(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    match (field("status"), field("message")) {
        (Some(status), Some(message)) => format!("{status}: {message}"),
        (Some(status), None) => status,
        _ => body.trim().chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let table = [
            (r#"{"status":"ok","counts":{}}"#, "ok"),
            (
                r#"{"status":"key_rejected","message":"paused"}"#,
                "key_rejected: paused",
            ),
            ("  <html>bad gateway</html> ", "<html>bad gateway</html>"),
        ];
        for (body, want) in table {
            assert_eq!(summary(body), want);
        }
    }

    #[test]
    fn targets() {
        // (URL argument, TANOVA_LISTEN, the URL checked or an error)
        type Row = (
            Option<&'static str>,
            Option<&'static str>,
            Result<&'static str, ()>,
        );
        let table: [Row; 9] = [
            (None, None, Ok("http://127.0.0.1:9898/health")),
            (
                None,
                Some("127.0.0.1:7000"),
                Ok("http://127.0.0.1:7000/health"),
            ),
            (
                None,
                Some("0.0.0.0:7000"),
                Ok("http://127.0.0.1:7000/health"),
            ),
            (None, Some("[::]:7000"), Ok("http://[::1]:7000/health")),
            (
                None,
                Some("localhost:7001"),
                Ok("http://127.0.0.1:7001/health"),
            ),
            (None, Some("127.0.0.1:0"), Err(())),
            (None, Some("nonsense"), Err(())),
            (
                Some("127.0.0.1:7002"),
                Some("0.0.0.0:1"),
                Ok("http://127.0.0.1:7002/health"),
            ),
            (Some("ftp://127.0.0.1/health"), None, Err(())),
        ];
        for (url, listen, want) in table {
            let got = target(url, listen).map(|u| u.to_string()).map_err(|_| ());
            assert_eq!(got, want.map(str::to_string), "{url:?} {listen:?}");
        }
    }
}
