//! What an HTTP status means for the agent: success, retry later, fail the file, or stop the run.

use std::time::Duration;

/// The longest `Retry-After` honoured, so a confused server cannot park the agent for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// What to do with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Success,
    /// 408, 429, 5xx: retry with backoff; the service is under pressure.
    Transient {
        retry_after: Option<Duration>,
    },
    /// 401, 403: the key is rejected; stop the whole run.
    Rejected,
    /// Other 4xx: the server refuses this file; do not retry automatically.
    Permanent,
}

/// Classify a status code, with the `Retry-After` header's value if any.
pub fn classify(status: u16, retry_after: Option<&str>) -> Disposition {
    match status {
        200..=299 => Disposition::Success,
        401 | 403 => Disposition::Rejected,
        408 | 429 | 500..=599 => Disposition::Transient {
            retry_after: retry_after.and_then(parse_retry_after),
        },
        _ => Disposition::Permanent,
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare for APIs and is ignored).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let secs = |s| Some(Duration::from_secs(s));
        let table = [
            (200, None, Disposition::Success),
            (201, None, Disposition::Success),
            (401, None, Disposition::Rejected),
            (403, None, Disposition::Rejected),
            (408, None, Disposition::Transient { retry_after: None }),
            (
                429,
                Some("3"),
                Disposition::Transient {
                    retry_after: secs(3),
                },
            ),
            (
                429,
                Some("soon"),
                Disposition::Transient { retry_after: None },
            ),
            (
                503,
                Some("100000"),
                Disposition::Transient {
                    retry_after: Some(MAX_RETRY_AFTER),
                },
            ),
            (500, None, Disposition::Transient { retry_after: None }),
            (400, None, Disposition::Permanent),
            (413, None, Disposition::Permanent),
            (422, None, Disposition::Permanent),
            (404, None, Disposition::Permanent),
        ];
        for (status, header, want) in table {
            assert_eq!(classify(status, header), want, "{status} {header:?}");
        }
    }
}
