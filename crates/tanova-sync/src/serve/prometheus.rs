//! The `/metrics` answer in Prometheus' text exposition format (version 0.0.4), written by hand.

use std::fmt::Write;
use std::time::UNIX_EPOCH;

use crate::metrics::Snapshot;

/// All metrics of `s`, each with its HELP and TYPE lines.
pub fn render(s: &Snapshot, version: &str) -> String {
    let mut out = String::new();
    let c = &s.counts;
    let counters = [
        (
            "tanova_files_found_total",
            "Candidate files found (a file found again by a rescan counts again).",
            c.found,
        ),
        ("tanova_files_synced_total", "CVs uploaded.", c.synced),
        (
            "tanova_files_skipped_total",
            "Files skipped: already synced, or the same bytes as another file.",
            c.skipped,
        ),
        (
            "tanova_files_duplicate_total",
            "Files the service already had (check-duplicate).",
            c.duplicates,
        ),
        (
            "tanova_files_failed_total",
            "Files that could not be delivered.",
            c.failed,
        ),
        (
            "tanova_files_ignored_total",
            "Files ignored: empty, or gone before upload.",
            c.ignored,
        ),
        (
            "tanova_files_deferred_total",
            "Files left to another agent delivering the same bytes.",
            c.deferred,
        ),
        (
            "tanova_files_suppressed_total",
            "Files a suppression rule (tanova-sync forget) kept from upload.",
            c.suppressed,
        ),
        (
            "tanova_bytes_uploaded_total",
            "Bytes of CVs uploaded.",
            s.bytes_uploaded,
        ),
    ];
    for (name, help, value) in counters {
        metric(&mut out, name, help, "counter", value);
    }
    let gauges = [
        (
            "tanova_uploads_in_flight",
            "Uploads in flight now.",
            s.in_flight,
        ),
        (
            "tanova_concurrency_limit",
            "How many uploads may be in flight at once (the adaptive limit, or the pinned one).",
            s.concurrency_limit,
        ),
        (
            "tanova_queue_depth",
            "Files found and waiting to be hashed, checked or uploaded.",
            s.queue,
        ),
        (
            "tanova_files_failing",
            "Distinct files whose latest outcome is a failure.",
            s.failing,
        ),
        (
            "tanova_healthy",
            "1 when the agent can upload, 0 when something stops every upload (see tanova_problem).",
            u64::from(s.problem.is_none()),
        ),
    ];
    for (name, help, value) in gauges {
        metric(&mut out, name, help, "gauge", value);
    }
    if let Some(at) = s.last_upload_at {
        let seconds = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        header(
            &mut out,
            "tanova_last_upload_timestamp_seconds",
            "When the last CV was uploaded, in seconds since the Unix epoch.",
            "gauge",
        );
        let _ = writeln!(out, "tanova_last_upload_timestamp_seconds {seconds:.3}");
    }
    header(
        &mut out,
        "tanova_problem",
        "1 for each problem that stops every upload now (the reason is the /health status word).",
        "gauge",
    );
    for problem in crate::report::Problem::ALL {
        let active = u64::from(s.problem == Some(problem));
        let _ = writeln!(
            out,
            "tanova_problem{{reason=\"{}\"}} {active}",
            problem.as_str()
        );
    }
    header(
        &mut out,
        "tanova_build_info",
        "The agent's version.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "tanova_build_info{{version=\"{}\"}} 1",
        label_value(version)
    );

    let name = "tanova_upload_duration_seconds";
    header(
        &mut out,
        name,
        "Time to deliver one CV, from the start of its delivery to the service's answer to the upload (duplicate check, retries and waiting for a slot included).",
        "histogram",
    );
    for (le, n) in s.durations.cumulative() {
        let le = le.map_or_else(|| "+Inf".to_string(), |b| b.to_string());
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_sum {}", s.durations.sum);
    let _ = writeln!(out, "{name}_count {}", s.durations.count());
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn metric(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    header(out, name, help, kind);
    let _ = writeln!(out, "{name} {value}");
}

/// A label value with `\`, `"` and newlines escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::metrics::{Gauges, Metrics};
    use crate::report::{Outcome, Reporter, Summary};

    #[test]
    fn every_metric_is_there_with_its_value() {
        let m = Metrics::new(Path::new("/cvs"));
        let tally = Summary::default();
        m.found(&tally);
        m.finished(
            Path::new("/cvs/a.pdf"),
            &Outcome::Uploaded {
                candidate_id: None,
                bytes: 2048,
            },
            &tally,
        );
        m.upload_timed(Path::new("/cvs/a.pdf"), Duration::from_millis(700));
        let text = render(
            &m.snapshot(Gauges {
                in_flight: 3,
                limit: 16,
            }),
            "0.1.0",
        );
        let table = [
            "tanova_files_synced_total 1",
            "tanova_files_skipped_total 0",
            "tanova_files_failed_total 0",
            "tanova_files_duplicate_total 0",
            "tanova_bytes_uploaded_total 2048",
            "tanova_uploads_in_flight 3",
            "tanova_concurrency_limit 16",
            "tanova_queue_depth 0",
            "tanova_healthy 1",
            "tanova_build_info{version=\"0.1.0\"} 1",
            "# TYPE tanova_upload_duration_seconds histogram",
            "tanova_upload_duration_seconds_bucket{le=\"0.5\"} 0",
            "tanova_upload_duration_seconds_bucket{le=\"1\"} 1",
            "tanova_upload_duration_seconds_bucket{le=\"+Inf\"} 1",
            "tanova_upload_duration_seconds_sum 0.7",
            "tanova_upload_duration_seconds_count 1",
        ];
        for line in table {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        assert!(text.contains("tanova_last_upload_timestamp_seconds "));
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
