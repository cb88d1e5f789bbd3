//! The console's dashboard at `/`: a state banner that tells the truth, counts, the hour's chart, failures and recent files, rendered on the server in sections the live updates replace one by one.
//!
//! Every section reads correctly without JavaScript (times are UTC text, the
//! page reloads itself from a `<noscript>` refresh); with it, `console.js`
//! shows times in the browser's locale and relative form and swaps sections
//! as server-sent events bring them.

use std::fmt::Write;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::chart::chart;
use super::health::rfc3339;
use crate::filter::human_bytes;
use crate::metrics::{Event, Problem, Snapshot};

/// How often the page reloads itself without JavaScript, in seconds.
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

/// What the viewer may do, and what the agent can.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    /// The agent takes actions (it watches; a one-shot sync does not).
    pub actions: bool,
    /// The request carried the token: show the buttons.
    pub can_act: bool,
    /// Uploads are held back by the user.
    pub held: bool,
}

/// The banner's state: a CSS class and `data-state`, a headline and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Banner {
    pub state: &'static str,
    pub title: String,
    pub detail: String,
}

/// The one sentence at the top: why nothing moves, or how far it got. Pure.
pub fn banner(s: &Snapshot, held: bool) -> Banner {
    let make = |state, title: &str, detail: String| Banner {
        state,
        title: title.to_string(),
        detail,
    };
    let pending = s.counts.found.saturating_sub(s.counts.processed());
    // The error behind the problem, for the admin who must mend it.
    let why = s
        .reason
        .as_deref()
        .map_or(String::new(), |r| format!(" (Why: {r}.)"));
    match s.problem {
        Some(Problem::KeyRejected) => {
            return make(
                "paused-key",
                "Paused: the API key was rejected",
                format!(
                    "Tanova refused the API key (or it may not upload CVs), so nothing is \
                     uploaded.{why} Put a valid key in tanova-config.json or the api_key_file: \
                     the agent picks it up within seconds and resumes. New CVs are queued \
                     meanwhile."
                ),
            )
        }
        Some(Problem::ServiceUnreachable) => {
            return make(
                "waiting",
                "Waiting for the server",
                format!(
                    "The Tanova service does not answer.{why} Uploads resume by themselves when \
                     it does; nothing is lost meanwhile."
                ),
            )
        }
        Some(other) => {
            return make(
                "problem",
                other.badge(),
                format!("{}.{why}", other.message()),
            )
        }
        None => {}
    }
    if held {
        return make(
            "paused-user",
            "Paused",
            format!(
                "Uploads are paused from this console. New CVs are still found and queued \
                 ({pending} waiting); press Resume to send them."
            ),
        );
    }
    if pending > 0 || s.in_flight > 0 {
        let eta = match s.rate_per_min {
            r if r > 0.0 => format!(", about {} left", minutes((pending as f64 / r).ceil())),
            _ => String::new(),
        };
        return make(
            "syncing",
            &format!("Syncing {} of {}", s.counts.processed(), s.counts.found),
            format!("{pending} to go{eta}."),
        );
    }
    if !s.watching {
        return make(
            "starting",
            "Looking through the folder",
            "Checking which CVs are new; this takes a moment on a large folder.".to_string(),
        );
    }
    let detail = match s.failing {
        0 => "Every CV found is in Tanova; watching the folder for new ones.".to_string(),
        1 => "Watching the folder for new CVs. One file could not be uploaded: see Failures."
            .to_string(),
        n => format!(
            "Watching the folder for new CVs. {n} files could not be uploaded: see Failures."
        ),
    };
    make("up-to-date", "Up to date", detail)
}

fn minutes(m: f64) -> String {
    match m as u64 {
        0 | 1 => "a minute".to_string(),
        n if n < 120 => format!("{n} minutes"),
        n => format!("{} hours", n / 60),
    }
}

/// `<time>` with the UTC text a browser without scripts shows.
fn time_tag(at: SystemTime) -> String {
    let iso = rfc3339(at);
    let text = iso.replacen('T', " ", 1).replace('Z', " UTC");
    format!("<time datetime=\"{iso}\">{text}</time>")
}

/// The sections live updates replace, by element id, as HTML.
pub fn sections(s: &Snapshot, view: View) -> Vec<(&'static str, String)> {
    vec![
        ("banner", banner_html(s, view)),
        ("counts", counts_html(s)),
        ("chart", chart(&s.history)),
        ("failures", failures_html(s, view)),
        ("recent", recent_html(s)),
    ]
}

/// The sections as one JSON object, the data of one server-sent event.
pub fn sections_json(s: &Snapshot, view: View) -> Value {
    let map: serde_json::Map<String, Value> = sections(s, view)
        .into_iter()
        .map(|(id, html)| (id.to_string(), json!(html)))
        .collect();
    Value::Object(map)
}

fn banner_html(s: &Snapshot, view: View) -> String {
    let b = banner(s, view.held);
    let mut html = format!(
        "<div class=\"banner {state}\" data-state=\"{state}\"><h2 id=\"state\">{title}</h2><p>{detail}</p>",
        state = b.state,
        title = escape_html(&b.title),
        detail = escape_html(&b.detail)
    );
    if view.actions && view.can_act {
        let (action, label) = if view.held {
            ("resume", "Resume uploads")
        } else {
            ("pause", "Pause uploads")
        };
        let _ = write!(
            html,
            "<div class=\"actions\">{}{}</div>",
            button(action, &format!("do-{action}"), label, None),
            button("rescan", "do-rescan", "Rescan now", None)
        );
    } else if view.actions {
        html.push_str(
            "<p class=\"muted\">Read-only: open the link that <code>tanova-sync ui</code> \
             prints to pause, retry or rescan from here.</p>",
        );
    }
    html.push_str("</div>");
    html
}

/// A form with one button that POSTs to `/api/{action}`; works without scripts.
fn button(action: &str, id: &str, label: &str, path: Option<&str>) -> String {
    let field = path.map_or(String::new(), |p| {
        format!(
            "<input type=\"hidden\" name=\"path\" value=\"{}\">",
            escape_html(p)
        )
    });
    let aria = path.map_or(String::new(), |p| {
        format!(" aria-label=\"{} {}\"", escape_html(label), escape_html(p))
    });
    format!(
        "<form method=\"post\" action=\"/api/{action}\">{field}\
         <button type=\"submit\" id=\"{id}\"{aria}>{}</button></form>",
        escape_html(label)
    )
}

fn counts_html(s: &Snapshot) -> String {
    let c = &s.counts;
    let last = s
        .last_upload_at
        .map_or_else(|| "none yet".to_string(), time_tag);
    let rows = [
        ("found", c.found.to_string()),
        ("synced", c.synced.to_string()),
        ("skipped (already synced)", c.skipped.to_string()),
        ("duplicates (already in Tanova)", c.duplicates.to_string()),
        ("failed", c.failed.to_string()),
        ("ignored", c.ignored.to_string()),
        ("suppressed (forget rules)", c.suppressed.to_string()),
        ("uploaded", human_bytes(s.bytes_uploaded)),
        ("current rate", format!("{:.1} CVs/min", s.rate_per_min)),
        (
            "uploads in flight",
            format!("{} (limit {})", s.in_flight, s.concurrency_limit),
        ),
        ("waiting", s.queue.to_string()),
        (
            "running for",
            humantime::format_duration(std::time::Duration::from_secs(s.uptime.as_secs()))
                .to_string(),
        ),
    ];
    let mut html = String::from("<table><caption>Counts since the agent started</caption>");
    for (name, value) in rows {
        let _ = write!(
            html,
            "<tr><th scope=\"row\">{name}</th><td class=\"num\">{}</td></tr>",
            escape_html(&value)
        );
    }
    let _ = write!(
        html,
        "<tr><th scope=\"row\">last upload</th><td class=\"num\">{last}</td></tr></table>"
    );
    html
}

fn failures_html(s: &Snapshot, view: View) -> String {
    let act = view.actions && view.can_act;
    let mut html = format!("<h2>Failures ({})</h2>", s.failing);
    if s.failures.is_empty() {
        html.push_str("<p class=\"muted\">None.</p>");
        return html;
    }
    if act {
        html.push_str(&button(
            "retry",
            "retry-all",
            "Retry all failed files",
            None,
        ));
    }
    html.push_str(
        "<table><tr><th scope=\"col\">when</th><th scope=\"col\">file</th><th scope=\"col\">reason</th>",
    );
    html.push_str(if act {
        "<th scope=\"col\">action</th></tr>"
    } else {
        "</tr>"
    });
    for e in &s.failures {
        let _ = write!(
            html,
            "<tr><td class=\"when\">{}</td><td class=\"file\">{}</td><td class=\"failed\">{}</td>",
            time_tag(e.at),
            escape_html(&e.path),
            escape_html(&e.reason)
        );
        if act {
            let id = format!("retry-{:016x}", fnv(&e.path));
            let _ = write!(
                html,
                "<td>{}</td>",
                button("retry", &id, "Retry", Some(&e.path))
            );
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    html
}

fn recent_html(s: &Snapshot) -> String {
    let mut html = String::from("<h2>Recent files</h2>");
    if s.recent.is_empty() {
        html.push_str("<p class=\"muted\">Nothing yet.</p>");
        return html;
    }
    html.push_str(
        "<table><tr><th scope=\"col\">when</th><th scope=\"col\">file</th><th scope=\"col\">outcome</th></tr>",
    );
    for e in &s.recent {
        let _ = write!(
            html,
            "<tr><td class=\"when\">{}</td><td class=\"file\">{}</td><td>{}</td></tr>",
            time_tag(e.at),
            escape_html(&e.path),
            escape_html(&outcome(e))
        );
    }
    html.push_str("</table>");
    html
}

/// A stable id for a path's button, so focus survives a live update.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn outcome(e: &Event) -> String {
    if e.reason.is_empty() {
        e.kind.as_str().to_string()
    } else {
        format!("{}: {}", e.kind.as_str(), e.reason)
    }
}

/// The whole page for `snapshot` of the agent syncing `folder`.
pub fn dashboard(s: &Snapshot, folder: &str, version: &str, view: View) -> String {
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <noscript><meta http-equiv=\"refresh\" content=\"{REFRESH_S}\"></noscript>\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>tanova-sync status</title>\
         <link rel=\"stylesheet\" href=\"/assets/console.css\">\
         <script src=\"/assets/console.js\" defer></script></head><body>\n\
         <header><h1>tanova-sync</h1><p class=\"muted\">Folder <code>{folder}</code> · version \
         {version} <span id=\"live\" class=\"muted\">· this page reloads every \
         {REFRESH_S}&nbsp;s</span></p></header>\n<main>\n",
        folder = escape_html(folder),
        version = escape_html(version),
    );
    for (id, section) in sections(s, view) {
        let (tag, extra) = match id {
            "banner" => ("section", " aria-live=\"polite\""),
            "chart" => ("figure", ""),
            _ => ("section", ""),
        };
        let _ = writeln!(html, "<{tag} id=\"{id}\"{extra}>{section}</{tag}>");
        if id == "chart" {
            // The legend stays outside the replaced part.
            html.push_str(
                "<p class=\"legend muted\"><span class=\"key bar\"></span> uploads per minute \
                 <span class=\"key backlog\"></span> backlog, over the last hour</p>\n",
            );
        }
    }
    html.push_str("</main></body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::metrics::{Counts, Gauges, Metrics};
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

    fn snapshot(found: u64, synced: u64, in_flight: u64, rate: f64, watching: bool) -> Snapshot {
        let mut s = Metrics::new(Path::new("/cvs")).snapshot(Gauges::default());
        s.counts = Counts {
            found,
            synced,
            ..Counts::default()
        };
        s.in_flight = in_flight;
        s.rate_per_min = rate;
        s.watching = watching;
        s
    }

    #[test]
    fn the_banner_tells_the_truth() {
        let idle = snapshot(10, 10, 0, 0.0, true);
        let mut rejected = snapshot(10, 4, 0, 0.0, true);
        rejected.problem = Some(Problem::KeyRejected);
        let mut down = snapshot(10, 4, 0, 0.0, true);
        down.problem = Some(Problem::ServiceUnreachable);
        let mut portal = down.clone();
        portal.reason = Some("GET …/health answered with an HTML page".to_string());
        let mut gone = idle.clone();
        gone.problem = Some(Problem::FolderMissing);
        let mut failing = idle.clone();
        failing.failing = 2;
        let table: &[(&Snapshot, bool, &str, &str, &str)] = &[
            // (snapshot, held, state, title, in the detail)
            (
                &idle,
                false,
                "up-to-date",
                "Up to date",
                "watching the folder",
            ),
            (
                &failing,
                false,
                "up-to-date",
                "Up to date",
                "2 files could not",
            ),
            (
                &snapshot(0, 0, 0, 0.0, false),
                false,
                "starting",
                "Looking through the folder",
                "",
            ),
            (
                &snapshot(10, 4, 2, 0.0, true),
                false,
                "syncing",
                "Syncing 4 of 10",
                "6 to go.",
            ),
            (
                &snapshot(10, 4, 2, 3.0, true),
                false,
                "syncing",
                "Syncing 4 of 10",
                "about 2 minutes left",
            ),
            (
                &snapshot(300, 0, 2, 1.0, false),
                false,
                "syncing",
                "Syncing 0 of 300",
                "about 5 hours left",
            ),
            (
                &snapshot(5, 5, 1, 1.0, true),
                false,
                "syncing",
                "Syncing 5 of 5",
                "0 to go",
            ),
            (
                &rejected,
                false,
                "paused-key",
                "Paused: the API key was rejected",
                "tanova-config.json",
            ),
            (
                &rejected,
                true,
                "paused-key",
                "Paused: the API key was rejected",
                "within seconds",
            ),
            (
                &down,
                false,
                "waiting",
                "Waiting for the server",
                "resume by themselves",
            ),
            (
                &portal,
                false,
                "waiting",
                "Waiting for the server",
                "does not answer. (Why: GET …/health answered with an HTML page.) Uploads",
            ),
            (&gone, false, "problem", "CV folder missing", "gone"),
            (
                &snapshot(10, 4, 0, 0.0, true),
                true,
                "paused-user",
                "Paused",
                "6 waiting",
            ),
            (&idle, true, "paused-user", "Paused", "Resume"),
        ];
        for (s, held, state, title, detail) in table {
            let b = banner(s, *held);
            assert_eq!((b.state, b.title.as_str()), (*state, *title), "{b:?}");
            assert!(b.detail.contains(detail), "{detail:?} not in {b:?}");
        }
    }

    #[test]
    fn the_page_lists_files_and_failures_escaped_with_buttons_only_for_the_token() {
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
            Path::new("/cvs/bad \"one\".pdf"),
            &Outcome::Failed {
                reason: "refused by the server (422): <b>no</b>".into(),
                kind: crate::report::FailKind::Refused,
            },
            &tally,
        );
        let s = m.snapshot(Gauges::default());
        let view = View {
            actions: true,
            can_act: true,
            held: false,
        };
        let page = dashboard(&s, "/cvs & co", "1.0", view);
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;.pdf"),
            "{page}"
        );
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("refused by the server (422): &lt;b&gt;no&lt;/b&gt;"));
        assert!(page.contains("/cvs &amp; co"));
        assert!(page.contains("<noscript><meta http-equiv=\"refresh\""));
        assert!(
            page.contains("name=\"path\" value=\"bad &quot;one&quot;.pdf\""),
            "{page}"
        );
        assert!(page.contains("id=\"retry-all\"") && page.contains("id=\"do-pause\""));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "self-contained"
        );
        let read_only = dashboard(
            &s,
            "/cvs",
            "1.0",
            View {
                can_act: false,
                ..view
            },
        );
        assert!(!read_only.contains("<form") && read_only.contains("Read-only"));
        let held = dashboard(&s, "/cvs", "1.0", View { held: true, ..view });
        assert!(held.contains("id=\"do-resume\"") && !held.contains("id=\"do-pause\""));
        let sync = dashboard(&s, "/cvs", "1.0", View::default());
        assert!(
            !sync.contains("<form") && !sync.contains("Read-only"),
            "a one-shot sync takes no actions"
        );
        let json = sections_json(&s, view);
        assert!(json["failures"].as_str().unwrap().contains("retry-"));
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            time_tag(at),
            "<time datetime=\"2023-11-14T22:13:20Z\">2023-11-14 22:13:20 UTC</time>"
        );
    }
}
