//! The console's per-process token, and the checks every state-changing request passes: the token (cookie, header or form field) and the Origin.
//!
//! The token is random for each process, printed in the console's URL (as
//! Jupyter does) and kept in a `SameSite=Strict`, `HttpOnly` cookie after the
//! first visit. A page on another site cannot send the cookie (SameSite), nor
//! read the token (no CORS), and a request it forges says its own Origin.

use axum::http::{header, HeaderMap};

/// The query parameter, form field and header that carry the token.
pub const QUERY: &str = "token";
pub const HEADER: &str = "x-tanova-token";

/// A secret of 32 random bytes, as 64 hex digits.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// A new token from the thread's CSPRNG (seeded by the operating system).
    pub fn random() -> Self {
        Token(hex::encode(rand::random::<[u8; 32]>()))
    }

    /// This process's token, made on first use: the setup page and the agent
    /// it starts share it, so the browser's cookie stays good across the switch.
    pub fn for_process() -> Self {
        static TOKEN: std::sync::OnceLock<Token> = std::sync::OnceLock::new();
        TOKEN.get_or_init(Token::random).clone()
    }

    /// The token's text, for the URL the `ui` command prints.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is the token, compared in constant time.
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The cookie's name: one per port, since browsers share cookies across a host's ports.
pub fn cookie_name(port: u16) -> String {
    format!("tanova_console_{port}")
}

/// The `Set-Cookie` value that keeps the token for this port's console.
pub fn set_cookie(port: u16, token: &Token) -> String {
    format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict",
        cookie_name(port),
        token.expose()
    )
}

/// The value of cookie `name` in the request, if it has one.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether the request carries the token: in the cookie, the header, or `form` (a form field).
pub fn carried(headers: &HeaderMap, port: u16, token: &Token, form: Option<&str>) -> bool {
    let header = headers.get(HEADER).and_then(|v| v.to_str().ok());
    [cookie(headers, &cookie_name(port)), header, form]
        .into_iter()
        .flatten()
        .any(|given| token.matches(given))
}

/// Refuse a request a page on another origin made: its `Origin` must be this
/// server as the request names it (`http://` + `Host`), and a browser's
/// `Sec-Fetch-Site` must say same-origin (or none: typed, bookmarked).
/// A request without either header comes from no browser (curl, a script).
pub fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("?"));
    if let Some(site) = text("sec-fetch-site") {
        if site != "same-origin" && site != "none" {
            return Err(format!("a request from another site ({site}) is refused"));
        }
    }
    let Some(origin) = text(header::ORIGIN.as_str()) else {
        return Ok(());
    };
    let host = text(header::HOST.as_str()).unwrap_or("");
    let expected = format!("http://{host}");
    if host.is_empty() || !origin.eq_ignore_ascii_case(&expected) {
        return Err(format!(
            "a request from another origin ({origin}) is refused: the console acts only for its own pages"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let token = Token::random();
        assert_eq!(token.expose().len(), 64);
        assert_ne!(token.expose(), Token::random().expose());
        assert!(token.matches(token.expose()));
        assert!(!token.matches(&token.expose()[..63]));
        assert!(!token.matches(""));
        assert!(!format!("{token:?}").contains(token.expose()));
    }

    #[test]
    fn the_token_comes_from_the_port_s_cookie_the_header_or_the_form() {
        let token = Token::random();
        let t = token.expose();
        let mine = format!("a=b; tanova_console_9898={t}");
        let other_port = format!("tanova_console_9899={t}");
        type Case<'a> = (Vec<(&'static str, &'a str)>, Option<&'a str>, bool);
        let table: &[Case] = &[
            (vec![], None, false),
            (vec![("cookie", &mine)], None, true),
            (vec![("cookie", &other_port)], None, false),
            (vec![("cookie", "tanova_console_9898=nope")], None, false),
            (vec![("x-tanova-token", t)], None, true),
            (vec![("x-tanova-token", "nope")], None, false),
            (vec![], Some(t), true),
            (vec![], Some("nope"), false),
        ];
        for (pairs, form, want) in table {
            let got = carried(&headers(pairs), 9898, &token, *form);
            assert_eq!(got, *want, "{pairs:?} {form:?}");
        }
        assert_eq!(
            set_cookie(9898, &token),
            format!("tanova_console_9898={t}; Path=/; HttpOnly; SameSite=Strict")
        );
    }

    #[test]
    fn only_the_console_s_own_origin_may_act() {
        let table: &[(&[(&'static str, &str)], bool)] = &[
            (&[], true),
            (&[("host", "127.0.0.1:9898")], true),
            (
                &[
                    ("host", "127.0.0.1:9898"),
                    ("origin", "http://127.0.0.1:9898"),
                ],
                true,
            ),
            (
                &[
                    ("host", "localhost:9898"),
                    ("origin", "http://LOCALHOST:9898"),
                ],
                true,
            ),
            (
                &[
                    ("host", "127.0.0.1:9898"),
                    ("origin", "http://evil.example"),
                ],
                false,
            ),
            (
                &[
                    ("host", "127.0.0.1:9898"),
                    ("origin", "http://127.0.0.1:9899"),
                ],
                false,
            ),
            (
                &[
                    ("host", "127.0.0.1:9898"),
                    ("origin", "https://127.0.0.1:9898"),
                ],
                false,
            ),
            (&[("host", "127.0.0.1:9898"), ("origin", "null")], false),
            (&[("origin", "http://127.0.0.1:9898")], false),
            (
                &[("host", "127.0.0.1:9898"), ("sec-fetch-site", "cross-site")],
                false,
            ),
            (
                &[("host", "127.0.0.1:9898"), ("sec-fetch-site", "same-site")],
                false,
            ),
            (
                &[
                    ("host", "127.0.0.1:9898"),
                    ("sec-fetch-site", "same-origin"),
                ],
                true,
            ),
        ];
        for (pairs, want) in table {
            assert_eq!(same_origin(&headers(pairs)).is_ok(), *want, "{pairs:?}");
        }
    }
}
