//! The audit trail (`tanova-sync audit`): one record per upload or duplicate, what
//! filters select, and the CSV written for a subject access request.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::rules::{Rule, Subject};

/// What the server did with the bytes.
pub const UPLOADED: &str = "uploaded";
pub const DUPLICATE: &str = "duplicate";

/// One upload or duplicate, as the state and the ledger keep it. Personal parts
/// (path, email, candidate name) may have been pruned (`privacy_retain_days`) or
/// purged (`forget --purge`); the checksum and candidate id stay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, in Unix seconds.
    pub at: i64,
    /// Relative to the folder, `/`-separated.
    pub path: Option<String>,
    pub checksum: String,
    pub candidate_id: Option<String>,
    pub candidate_name: Option<String>,
    pub job_hint: Option<String>,
    pub email: Option<String>,
    /// The machine whose agent sent it.
    pub host: String,
    /// [`UPLOADED`] or [`DUPLICATE`].
    pub outcome: String,
}

impl AuditEntry {
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            path: self.path.as_deref(),
            email: self.email.as_deref(),
            checksum: Some(&self.checksum),
        }
    }

    /// Forget the personal parts, keeping what stops a second upload.
    pub fn purge(&mut self) {
        self.path = None;
        self.email = None;
        self.candidate_name = None;
    }

    /// The same event, seen in the state and in the ledger.
    fn key(&self) -> (i64, &str, &str, &str) {
        (self.at, &self.checksum, &self.host, &self.outcome)
    }
}

/// Which records `audit` shows: every given filter must match.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub rules: Vec<Rule>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
}

impl Filter {
    pub fn selects(&self, entry: &AuditEntry) -> bool {
        self.since.is_none_or(|s| entry.at >= s)
            && self.until.is_none_or(|u| entry.at < u)
            && self.rules.iter().all(|r| r.matches(&entry.subject()))
    }
}

/// The records of the state and the ledger, each event once, oldest first.
pub fn merge(mut entries: Vec<AuditEntry>) -> Vec<AuditEntry> {
    entries.sort_by(|a, b| a.key().cmp(&b.key()).then(a.path.cmp(&b.path)));
    // A purged copy and a full one of the same event: keep one (the full one sorts after None).
    entries.dedup_by(|later, earlier| {
        if later.key() == earlier.key() {
            if earlier.path.is_none() {
                std::mem::swap(later, earlier);
            }
            true
        } else {
            false
        }
    });
    entries
}

/// The CSV header and one row per record; every field quoted when it must be,
/// and text a spreadsheet would run as a formula made inert.
pub fn write_csv(out: &mut dyn Write, entries: &[AuditEntry]) -> std::io::Result<()> {
    writeln!(
        out,
        "time,path,checksum,candidate_id,candidate_name,job_hint,email,host,outcome"
    )?;
    for e in entries {
        let fields = [
            rfc3339(e.at),
            e.path.clone().unwrap_or_default(),
            e.checksum.clone(),
            e.candidate_id.clone().unwrap_or_default(),
            e.candidate_name.clone().unwrap_or_default(),
            e.job_hint.clone().unwrap_or_default(),
            e.email.clone().unwrap_or_default(),
            e.host.clone(),
            e.outcome.clone(),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        writeln!(out, "{}", row.join(","))?;
    }
    Ok(())
}

fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// Unix seconds as `2026-12-01T00:50:01Z`.
pub fn rfc3339(secs: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::rules::RuleKind;

    fn entry(at: i64, path: Option<&str>, email: Option<&str>, host: &str) -> AuditEntry {
        AuditEntry {
            at,
            path: path.map(str::to_string),
            checksum: "ab".repeat(32),
            candidate_id: Some("cand_1".into()),
            candidate_name: None,
            job_hint: Some("Nurse".into()),
            email: email.map(str::to_string),
            host: host.into(),
            outcome: UPLOADED.into(),
        }
    }

    #[test]
    fn filters_combine_and_bound_time() {
        let email = Rule::new(RuleKind::Email, "jo@x.org", "", "2026-01-01", 0).unwrap();
        let name = Rule::new(RuleKind::Name, "Jó jo", "", "2026-01-01", 0).unwrap();
        let filter = Filter {
            rules: vec![email, name],
            since: Some(100),
            until: Some(200),
        };
        // (entry, selected)
        let table = [
            (
                entry(150, Some("N/jo_jo@x.org.pdf"), Some("jo@x.org"), "a"),
                true,
            ),
            (
                entry(99, Some("N/jo_jo@x.org.pdf"), Some("jo@x.org"), "a"),
                false,
            ),
            (
                entry(200, Some("N/jo_jo@x.org.pdf"), Some("jo@x.org"), "a"),
                false,
            ),
            (
                entry(150, Some("N/al_jo@x.org.pdf"), Some("jo@x.org"), "a"),
                false,
            ),
            (entry(150, None, None, "a"), false),
        ];
        for (e, want) in table {
            assert_eq!(filter.selects(&e), want, "{e:?}");
        }
    }

    #[test]
    fn an_event_in_both_stores_is_listed_once_with_its_details() {
        let full = entry(5, Some("a.pdf"), None, "h1");
        let mut purged = full.clone();
        purged.purge();
        let other = entry(5, Some("a.pdf"), None, "h2");
        let merged = merge(vec![
            full.clone(),
            other.clone(),
            purged,
            entry(1, None, None, "h1"),
        ]);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[1], full);
        assert_eq!(merged[2], other);
    }

    #[test]
    fn csv_quotes_and_defuses() {
        let mut e = entry(0, Some("Sales, North/=cmd|x.pdf"), None, "h");
        e.candidate_name = Some("Jane \"JJ\" Doe".into());
        let mut out = Vec::new();
        write_csv(&mut out, &[e]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let row = text.lines().nth(1).unwrap();
        assert!(
            row.starts_with("1970-01-01T00:00:00Z,\"Sales, North/=cmd|x.pdf\","),
            "{row}"
        );
        assert!(row.contains(",\"Jane \"\"JJ\"\" Doe\","), "{row}");
        assert_eq!(csv_field("=HYPERLINK()"), "'=HYPERLINK()");
    }
}
