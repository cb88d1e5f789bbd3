//! The `/health` answer: the agent's state as one JSON object.

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::metrics::{Problem, Snapshot};

/// RFC 3339 in UTC, to the second.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// `{status, version, last_upload_at, counts, queue, in_flight, concurrency_limit, …}`;
/// `status` is `ok`, or the problem that makes it answer 503.
pub fn health_body(s: &Snapshot, version: &str) -> Value {
    let message = s.problem.map_or("syncing", Problem::message);
    json!({
        "status": s.problem.map_or("ok", Problem::as_str),
        "message": message,
        // The error behind it, naming the URL or path (null while syncing).
        "reason": s.reason,
        "version": version,
        "last_upload_at": s.last_upload_at.map(rfc3339),
        "counts": {
            "found": s.counts.found,
            "synced": s.counts.synced,
            "skipped": s.counts.skipped,
            "duplicates": s.counts.duplicates,
            "failed": s.counts.failed,
            "ignored": s.counts.ignored,
            "deferred": s.counts.deferred,
            "suppressed": s.counts.suppressed,
        },
        // Distinct files whose latest outcome is a failure; `counts.failed` counts outcomes,
        // and a rescan reports a file that still fails again.
        "failing": s.failing,
        "queue": s.queue,
        "in_flight": s.in_flight,
        "concurrency_limit": s.concurrency_limit,
        "bytes_uploaded": s.bytes_uploaded,
        "rate_per_min": s.rate_per_min,
        "uptime_s": s.uptime.as_secs(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::metrics::{Gauges, Metrics};

    #[test]
    fn status_follows_the_problem() {
        let table = [
            (None, "ok"),
            (Some(Problem::KeyRejected), "key_rejected"),
            (Some(Problem::ServiceUnreachable), "service_unreachable"),
            (Some(Problem::LedgerUnreachable), "ledger_unreachable"),
            (Some(Problem::StateUnwritable), "state_unwritable"),
            (Some(Problem::FolderMissing), "folder_missing"),
            (Some(Problem::UploadsFailing), "uploads_failing"),
        ];
        for (problem, want) in table {
            let mut s = Metrics::new(Path::new("/cvs")).snapshot(Gauges {
                in_flight: 2,
                limit: 8,
            });
            s.problem = problem;
            let body = health_body(&s, "9.9.9");
            assert_eq!(body["status"], want);
            assert_eq!(body["version"], "9.9.9");
            assert_eq!(body["last_upload_at"], Value::Null);
            assert_eq!(body["counts"]["synced"], 0);
            assert_eq!(
                (
                    body["in_flight"].as_u64(),
                    body["concurrency_limit"].as_u64()
                ),
                (Some(2), Some(8))
            );
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(250);
        assert_eq!(rfc3339(at), "2023-11-14T22:13:20Z");
    }
}
