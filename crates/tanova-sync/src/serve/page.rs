//! The status page at `/`: one self-contained HTML document (no scripts, no external assets) that reloads itself.

use std::fmt::Write;
use std::time::SystemTime;

use super::health::rfc3339;
use crate::filter::human_bytes;
use crate::metrics::{Event, Snapshot};

/// How often the page reloads itself, in seconds.
pub const REFRESH_S: u32 = 5;

/// Escape text for an HTML element or a quoted attribute.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25em .6em;border-bottom:1px solid #ddd;vertical-align:top}\
.num{text-align:right;font-variant-numeric:tabular-nums}.when{white-space:nowrap}.badge{padding:.1em .5em;border-radius:.3em;color:#fff}\
.ok{background:#2a7}.bad{background:#c33}.muted{color:#777}.failed{color:#c33}";

/// The whole page for `snapshot` of the agent syncing `folder`.
pub fn status_page(s: &Snapshot, folder: &str, version: &str) -> String {
    let mut html = String::new();
    let (badge, class) = match s.problem {
        None => ("syncing".to_string(), "ok"),
        Some(problem) => (problem.badge().to_string(), "bad"),
    };
    let last = s
        .last_upload_at
        .map_or_else(|| "none yet".to_string(), rfc3339);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>tanova-sync status</title><style>{STYLE}</style></head><body>\n\
         <h1>tanova-sync <span id=\"status\" class=\"badge {class}\">{badge}</span></h1>\n\
         <p class=\"muted\">Folder <code>{folder}</code> · version {version} · up {uptime} · \
         this page reloads every {REFRESH_S}&nbsp;s</p>\n",
        folder = escape_html(folder),
        version = escape_html(version),
        uptime = humantime::format_duration(std::time::Duration::from_secs(s.uptime.as_secs())),
    );
    let c = &s.counts;
    let rows = [
        ("found", c.found.to_string()),
        ("synced", c.synced.to_string()),
        ("skipped (already synced)", c.skipped.to_string()),
        ("duplicates (already in Tanova)", c.duplicates.to_string()),
        ("failed", c.failed.to_string()),
        ("ignored", c.ignored.to_string()),
        ("uploaded", human_bytes(s.bytes_uploaded)),
        ("current rate", format!("{:.1} CVs/min", s.rate_per_min)),
        (
            "uploads in flight",
            format!("{} (limit {})", s.in_flight, s.concurrency_limit),
        ),
        ("waiting", s.queue.to_string()),
        ("last upload", last),
    ];
    html.push_str("<table id=\"counts\">\n");
    for (name, value) in rows {
        let _ = writeln!(
            html,
            "<tr><th>{name}</th><td class=\"num\">{}</td></tr>",
            escape_html(&value)
        );
    }
    html.push_str("</table>\n");

    let _ = writeln!(html, "<h2>Failures ({})</h2>", s.failures.len());
    if s.failures.is_empty() {
        html.push_str("<p class=\"muted\">None.</p>\n");
    } else {
        html.push_str(
            "<table id=\"failures\"><tr><th>when</th><th>file</th><th>reason</th></tr>\n",
        );
        for e in &s.failures {
            let _ = writeln!(
                html,
                "<tr><td class=\"when\">{}</td><td>{}</td><td class=\"failed\">{}</td></tr>",
                when(e.at),
                escape_html(&e.path),
                escape_html(&e.reason)
            );
        }
        html.push_str("</table>\n");
    }

    html.push_str("<h2>Recent files</h2>\n");
    if s.recent.is_empty() {
        html.push_str("<p class=\"muted\">Nothing yet.</p>\n");
    } else {
        html.push_str("<table id=\"recent\"><tr><th>when</th><th>file</th><th>outcome</th></tr>\n");
        for e in &s.recent {
            let _ = writeln!(
                html,
                "<tr><td class=\"when\">{}</td><td>{}</td><td>{}</td></tr>",
                when(e.at),
                escape_html(&e.path),
                escape_html(&outcome(e))
            );
        }
        html.push_str("</table>\n");
    }
    html.push_str("</body></html>\n");
    html
}

fn when(at: SystemTime) -> String {
    rfc3339(at)
}

fn outcome(e: &Event) -> String {
    if e.reason.is_empty() {
        e.kind.as_str().to_string()
    } else {
        format!("{}: {}", e.kind.as_str(), e.reason)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::metrics::{Gauges, Metrics};
    use crate::report::{Outcome, Reporter, Summary};

    #[test]
    fn escaping() {
        let table = [
            ("plain.pdf", "plain.pdf"),
            (
                "<img src=x onerror=alert(1)>.pdf",
                "&lt;img src=x onerror=alert(1)&gt;.pdf",
            ),
            ("a&b \"c\" 'd'", "a&amp;b &quot;c&quot; &#39;d&#39;"),
            ("Zoë – CV.pdf", "Zoë – CV.pdf"),
        ];
        for (text, want) in table {
            assert_eq!(escape_html(text), want);
        }
    }

    #[test]
    fn the_page_lists_files_and_failures_escaped() {
        let m = Metrics::new(Path::new("/cvs"));
        let tally = Summary::default();
        let evil = "/cvs/<script>alert(1)</script>.pdf";
        m.finished(
            Path::new(evil),
            &Outcome::Uploaded {
                candidate_id: None,
                bytes: 1,
            },
            &tally,
        );
        m.finished(
            Path::new("/cvs/bad.pdf"),
            &Outcome::Failed {
                reason: "refused by the server (422): <b>no</b>".into(),
                kind: crate::report::FailKind::Refused,
            },
            &tally,
        );
        let page = status_page(&m.snapshot(Gauges::default()), "/cvs & co", "1.0");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;.pdf"),
            "{page}"
        );
        assert!(!page.contains("<script"), "{page}");
        assert!(page.contains("refused by the server (422): &lt;b&gt;no&lt;/b&gt;"));
        assert!(page.contains("/cvs &amp; co"));
        assert!(page.contains("http-equiv=\"refresh\""));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "self-contained"
        );
    }
}
