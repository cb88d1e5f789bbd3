//! `tanova-sync audit`: every upload and duplicate about a person, from the state and
//! every agent's records in the shared ledger, as a table, JSON, or a CSV file.

use std::time::UNIX_EPOCH;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::args::AuditArgs;
use super::forget::Records;
use super::{report_error, Exit, GlobalArgs};
use crate::config::Config;
use crate::privacy::audit::{self, rfc3339, AuditEntry, Filter};
use crate::privacy::rules::parse_date;
use crate::privacy::{Rule, RuleKind};

/// `tanova-sync audit …`.
pub async fn audit(
    global: &GlobalArgs,
    config: &Config,
    args: &AuditArgs,
    cancel: &CancellationToken,
) -> Exit {
    let filter = match filter_of(args) {
        Ok(filter) => filter,
        Err(e) => {
            report_error(global, &format!("audit: {e}"));
            return Exit::Usage;
        }
    };
    let records = match Records::open(config, false, cancel).await {
        Ok(records) => records,
        Err((exit, e)) => {
            report_error(global, &e);
            return exit;
        }
    };
    let mut entries = match records.store.audit(&filter) {
        Ok(entries) => entries,
        Err(e) => {
            report_error(global, &format!("state error: {e}"));
            return Exit::SomeFailed;
        }
    };
    if let Some(redis) = &records.shared {
        match redis.audit_entries().await {
            Ok(shared) => entries.extend(shared.into_iter().filter(|e| filter.selects(e))),
            Err(e) => {
                report_error(global, &e.to_string());
                return Exit::SomeFailed;
            }
        }
    }
    let entries = audit::merge(entries);
    if let Some(file) = &args.export {
        if let Err(e) = export(file, &entries) {
            report_error(global, &format!("audit --export {}: {e}", file.display()));
            return Exit::SomeFailed;
        }
        if !global.quiet {
            eprintln!("Wrote {} records to {}.", entries.len(), file.display());
        }
    }
    if global.json {
        let shown: Vec<Shown> = entries.iter().map(Shown::from).collect();
        let out = serde_json::json!({ "count": shown.len(), "records": shown });
        println!("{out}");
    } else if args.export.is_none() {
        print_table(&entries);
    }
    Exit::Ok
}

fn export(file: &std::path::Path, entries: &[AuditEntry]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(file)?);
    audit::write_csv(&mut out, entries)?;
    std::io::Write::flush(&mut out)
}

/// The filters the flags give, each checked.
fn filter_of(args: &AuditArgs) -> Result<Filter, String> {
    let mut rules = Vec::new();
    for (kind, value) in [
        (RuleKind::Email, &args.email),
        (RuleKind::Name, &args.name),
        (RuleKind::Path, &args.path),
    ] {
        if let Some(value) = value {
            rules.push(Rule::new(kind, value, "", "1970-01-01", 0).map_err(String::from)?);
        }
    }
    Ok(Filter {
        rules,
        since: args
            .since
            .as_deref()
            .map(|w| instant(w, "--since", false))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|w| instant(w, "--until", true))
            .transpose()?,
    })
}

/// A day (`YYYY-MM-DD`: its start, or with `day_end` the next day's) or an RFC 3339 instant, in Unix seconds.
fn instant(when: &str, flag: &str, day_end: bool) -> Result<i64, String> {
    if let Some(days) = parse_date(when.trim()) {
        return Ok((days + i64::from(day_end)) * 86_400);
    }
    humantime::parse_rfc3339_weak(when.trim())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .ok_or_else(|| format!("{flag} {when:?}: expected YYYY-MM-DD or 2026-12-01T09:30:00Z"))
}

/// A record as `--json` prints it: the time as RFC 3339.
#[derive(Serialize)]
struct Shown<'a> {
    time: String,
    path: Option<&'a str>,
    checksum: &'a str,
    candidate_id: Option<&'a str>,
    candidate_name: Option<&'a str>,
    job_hint: Option<&'a str>,
    email: Option<&'a str>,
    host: &'a str,
    outcome: &'a str,
}

impl<'a> From<&'a AuditEntry> for Shown<'a> {
    fn from(e: &'a AuditEntry) -> Self {
        Shown {
            time: rfc3339(e.at),
            path: e.path.as_deref(),
            checksum: &e.checksum,
            candidate_id: e.candidate_id.as_deref(),
            candidate_name: e.candidate_name.as_deref(),
            job_hint: e.job_hint.as_deref(),
            email: e.email.as_deref(),
            host: &e.host,
            outcome: &e.outcome,
        }
    }
}

fn print_table(entries: &[AuditEntry]) {
    if entries.is_empty() {
        println!("No uploads or duplicates match.");
        return;
    }
    for e in entries {
        let candidate = match (&e.candidate_id, &e.candidate_name) {
            (Some(id), _) => format!("candidate {id}"),
            (None, Some(name)) => format!("candidate {name:?}"),
            (None, None) => "candidate unknown".to_string(),
        };
        println!(
            "{}  {:<9}  {}  {}  {candidate}  job {}  on {}",
            rfc3339(e.at),
            e.outcome,
            e.path.as_deref().unwrap_or("(path deleted)"),
            &e.checksum,
            e.job_hint.as_deref().unwrap_or("-"),
            e.host
        );
    }
    println!("{} records.", entries.len());
}
