//! The GDPR tables of the SQLite store: suppression rules, the audit trail, files
//! a rule kept back, and when files left the folder (for `privacy_retain_days`).
//! Added by `CREATE TABLE IF NOT EXISTS`: an older state gains them on open.

use std::collections::BTreeSet;
use std::path::Path;

use rusqlite::{params, OptionalExtension};

use super::{unix_now, SqliteStore};
use crate::privacy::audit::{AuditEntry, Filter};
use crate::privacy::{Rule, RuleKind};
use crate::state::Result;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS suppression_rules (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    date       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id             INTEGER PRIMARY KEY,
    at             INTEGER NOT NULL,
    path           TEXT,
    checksum       TEXT NOT NULL,
    candidate_id   TEXT,
    candidate_name TEXT,
    job_hint       TEXT,
    email          TEXT,
    host           TEXT NOT NULL,
    outcome        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS suppressed_files (
    path     TEXT PRIMARY KEY,
    checksum TEXT,
    rule     TEXT NOT NULL,
    at       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gone_paths (
    path  TEXT PRIMARY KEY,
    since INTEGER NOT NULL
);
";

/// What pruning personal data removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Synced records whose path was deleted.
    pub synced: usize,
    /// Audit records whose path, email and candidate name were deleted.
    pub audit: usize,
}

fn kind_of(text: &str) -> RuleKind {
    match text {
        "email" => RuleKind::Email,
        "checksum" => RuleKind::Checksum,
        "name" => RuleKind::Name,
        _ => RuleKind::Path,
    }
}

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, AuditEntry)> {
    Ok((
        r.get(0)?,
        AuditEntry {
            at: r.get(1)?,
            path: r.get(2)?,
            checksum: r.get::<_, super::Hex>(3)?.0,
            candidate_id: r.get(4)?,
            candidate_name: r.get(5)?,
            job_hint: r.get(6)?,
            email: r.get(7)?,
            host: r.get(8)?,
            outcome: r.get(9)?,
        },
    ))
}

const AUDIT_COLUMNS: &str =
    "id, at, path, checksum, candidate_id, candidate_name, job_hint, email, host, outcome";

/// Note a suppressed file, in the caller's transaction.
pub(super) fn insert_suppressed_in(
    c: &rusqlite::Connection,
    path: &str,
    sum: Option<&str>,
    rule: &str,
    now: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO suppressed_files (path, checksum, rule, at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![path, sum, rule, now])
    .map(drop)
}

/// Add an audit record, in the caller's transaction (or on its own).
pub(super) fn insert_audit_in(
    c: &rusqlite::Connection,
    e: &AuditEntry,
    form: super::Form,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO audit (at, path, checksum, candidate_id, candidate_name, job_hint, email, host, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        e.at, e.path, form.key(&e.checksum), e.candidate_id, e.candidate_name, e.job_hint, e.email, e.host, e.outcome
    ])
    .map(drop)
}

/// `path` (as the state keeps it) relative to the folder `root`, `/`-separated.
pub fn relative_to(root: &Path, path: &str) -> String {
    let rel = Path::new(path)
        .strip_prefix(root)
        .unwrap_or(Path::new(path));
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.join("/")
}

impl SqliteStore {
    /// Record a rule; it is committed when this returns.
    pub fn add_rule(&self, rule: &Rule) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO suppression_rules (id, kind, value, reason, date, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![rule.id, rule.kind.as_str(), rule.value, rule.reason, rule.date, rule.created_at],
            )
            .map(drop)
        })
    }

    /// Remove a rule; false when there was none with this id.
    pub fn remove_rule(&self, id: &str) -> Result<bool> {
        self.with(|c| c.execute("DELETE FROM suppression_rules WHERE id = ?1", [id]))
            .map(|n| n > 0)
    }

    pub(super) fn read_rules(&self) -> Result<Vec<Rule>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, kind, value, reason, date, created_at FROM suppression_rules",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Rule {
                    id: r.get(0)?,
                    kind: kind_of(&r.get::<_, String>(1)?),
                    value: r.get(2)?,
                    reason: r.get(3)?,
                    date: r.get(4)?,
                    created_at: r.get(5)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The audit records `filter` selects, oldest first.
    pub fn audit(&self, filter: &Filter) -> Result<Vec<AuditEntry>> {
        let rows = self.audit_rows()?;
        Ok(rows
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| filter.selects(e))
            .collect())
    }

    fn audit_rows(&self) -> Result<Vec<(i64, AuditEntry)>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit ORDER BY at, id"
            ))?;
            let rows = stmt.query_map([], audit_row)?;
            rows.collect()
        })
    }

    /// Files a rule kept back, as last seen.
    pub fn suppressed_count(&self) -> Result<u64> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM suppressed_files", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|n| n as u64)
    }

    /// `forget --purge`: delete the path, email and candidate name of the audit
    /// records `rule` matches, the paths of its synced files, and its failures and
    /// suppressed files. Checksums and candidate ids stay. Returns the audit records purged.
    pub fn purge(&self, rule: &Rule, root: &Path) -> Result<usize> {
        let hits: Vec<i64> = self
            .audit_rows()?
            .into_iter()
            .filter(|(_, e)| rule.matches(&e.subject()))
            .map(|(id, _)| id)
            .collect();
        let paths = |sql: &str| -> Result<Vec<String>> {
            let all: Vec<String> = self.with(|c| {
                let mut stmt = c.prepare(sql)?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect()
            })?;
            Ok(all
                .into_iter()
                .filter(|p| {
                    let rel = relative_to(root, p);
                    let email = crate::meta::email(Path::new(&rel));
                    rule.matches(&crate::privacy::Subject {
                        path: Some(&rel),
                        email: email.as_deref(),
                        checksum: None,
                    })
                })
                .collect())
        };
        let synced = paths("SELECT path FROM synced WHERE path IS NOT NULL AND path != ''")?;
        let failed = paths("SELECT path FROM failures")?;
        let suppressed = paths("SELECT path FROM suppressed_files")?;
        self.with(|c| {
            let tx = c.transaction()?;
            for id in &hits {
                tx.execute(
                    "UPDATE audit SET path = NULL, email = NULL, candidate_name = NULL WHERE id = ?1",
                    [id],
                )?;
            }
            for p in &synced {
                tx.execute("UPDATE synced SET path = '' WHERE path = ?1", [p])?;
            }
            for p in &failed {
                tx.execute("DELETE FROM failures WHERE path = ?1", [p])?;
            }
            for p in &suppressed {
                tx.execute("DELETE FROM suppressed_files WHERE path = ?1", [p])?;
            }
            tx.commit()
        })?;
        Ok(hits.len())
    }

    /// `privacy_retain_days`: delete the path, name and email of records older than
    /// `cutoff` (Unix seconds), and of files gone from the folder since before it
    /// (`exists` says whether a path is still there; the first look that misses a
    /// file starts its clock). Checksums and candidate ids stay, so nothing is uploaded twice.
    pub fn prune_personal(
        &self,
        root: &Path,
        cutoff: i64,
        exists: &dyn Fn(&str) -> bool,
    ) -> Result<Pruned> {
        let now = unix_now();
        let paths = |sql: &str| -> Result<Vec<String>> {
            self.with(|c| {
                let mut stmt = c.prepare(sql)?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect()
            })
        };
        let mut tracked: BTreeSet<String> = paths(
            "SELECT path FROM synced WHERE path IS NOT NULL AND path != ''
             UNION SELECT path FROM suppressed_files",
        )?
        .into_iter()
        .collect();
        // A delivered file's path is in its audit record, relative to the folder.
        for rel in paths("SELECT DISTINCT path FROM audit WHERE path IS NOT NULL")? {
            tracked.insert(root.join(rel).display().to_string());
        }
        let (here, gone): (Vec<String>, Vec<String>) = tracked.into_iter().partition(|p| exists(p));
        let mut pruned = Pruned::default();
        self.with(|c| {
            let tx = c.transaction()?;
            for p in &here {
                tx.execute("DELETE FROM gone_paths WHERE path = ?1", [p])?;
            }
            for p in &gone {
                tx.execute("INSERT OR IGNORE INTO gone_paths (path, since) VALUES (?1, ?2)", params![p, now])?;
            }
            let long_gone: Vec<String> = {
                let mut stmt = tx.prepare("SELECT path FROM gone_paths WHERE since < ?1")?;
                let rows = stmt.query_map([cutoff], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for p in &long_gone {
                pruned.synced += tx.execute("UPDATE synced SET path = '' WHERE path = ?1", [p])?;
                pruned.audit += tx.execute(
                    "UPDATE audit SET path = NULL, email = NULL, candidate_name = NULL WHERE path = ?1",
                    [relative_to(root, p)],
                )?;
                tx.execute("DELETE FROM suppressed_files WHERE path = ?1", [p])?;
                tx.execute("DELETE FROM gone_paths WHERE path = ?1", [p])?;
            }
            pruned.synced += tx.execute(
                "UPDATE synced SET path = '' WHERE synced_at < ?1 AND path IS NOT NULL AND path != ''",
                [cutoff],
            )?;
            pruned.audit += tx.execute(
                "UPDATE audit SET path = NULL, email = NULL, candidate_name = NULL
                 WHERE at < ?1 AND (path IS NOT NULL OR email IS NOT NULL OR candidate_name IS NOT NULL)",
                [cutoff],
            )?;
            tx.execute("DELETE FROM suppressed_files WHERE at < ?1", [cutoff])?;
            tx.commit()
        })?;
        Ok(pruned)
    }

    /// When a path was first found gone, if it is tracked as gone.
    pub fn gone_since(&self, path: &str) -> Result<Option<i64>> {
        self.with(|c| {
            c.query_row(
                "SELECT since FROM gone_paths WHERE path = ?1",
                [path],
                |r| r.get(0),
            )
            .optional()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Store;

    fn entry(at: i64, path: &str, email: Option<&str>) -> AuditEntry {
        AuditEntry {
            at,
            path: Some(path.into()),
            checksum: format!("{at:064}"),
            candidate_id: Some(format!("cand_{at}")),
            candidate_name: Some("Jane Doe".into()),
            job_hint: None,
            email: email.map(str::to_string),
            host: "h".into(),
            outcome: "uploaded".into(),
        }
    }

    #[test]
    fn rules_survive_reopen_and_are_removed_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let rule = Rule::new(RuleKind::Email, "a@b.org", "erasure #12", "2026-11-30", 7).unwrap();
        SqliteStore::open(dir.path())
            .unwrap()
            .add_rule(&rule)
            .unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.suppression_rules().unwrap(), vec![rule.clone()]);
        assert!(store.remove_rule(&rule.id).unwrap());
        assert!(!store.remove_rule(&rule.id).unwrap());
        assert!(store.suppression_rules().unwrap().is_empty());
    }

    #[test]
    fn purge_keeps_checksums_and_ids_and_drops_the_person() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let root = Path::new("/cvs");
        store
            .record_audit(&entry(1, "N/jo_jo@x.org.pdf", Some("jo@x.org")))
            .unwrap();
        store.record_audit(&entry(2, "N/al.pdf", None)).unwrap();
        store
            .record_synced("s1", Some("cand_1"), "/cvs/N/jo_jo@x.org.pdf")
            .unwrap();
        store
            .record_failure("/cvs/N/jo_jo@x.org.docx", None, "no", true, true)
            .unwrap();
        let rule = Rule::new(RuleKind::Email, "JO@x.org", "", "2026-11-30", 0).unwrap();
        assert_eq!(store.purge(&rule, root).unwrap(), 1);
        let all = store.audit(&Filter::default()).unwrap();
        assert_eq!(
            (all[0].path.as_deref(), all[0].email.as_deref()),
            (None, None)
        );
        assert_eq!(all[0].candidate_id.as_deref(), Some("cand_1"));
        assert_eq!(all[1].path.as_deref(), Some("N/al.pdf"));
        assert!(store.is_synced("s1").unwrap());
        assert!(store.failures().unwrap().is_empty());
    }

    /// A delivery's path is kept in its audit record only, and retention
    /// still finds the file gone through it and prunes it there.
    #[test]
    fn a_delivered_path_is_kept_once_and_pruned_when_long_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let root = Path::new("/cvs");
        let now = unix_now();
        // Recorded "later" than the cutoffs below, so only its being gone prunes it.
        let audit = entry(now + 100, "N/gone.pdf", None);
        let sum = audit.checksum.clone();
        store
            .apply(&[crate::state::Write::Synced {
                checksum: sum.clone(),
                candidate: Some("cand_1".into()),
                path: "/cvs/N/gone.pdf".into(),
                audit: Some(audit),
            }])
            .unwrap();
        let synced_path: Option<String> = store
            .with(|c| c.query_row("SELECT path FROM synced", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(synced_path, None);
        assert_eq!(store.last_synced_at().unwrap(), Some(now + 100));
        let gone = |p: &str| p != "/cvs/N/gone.pdf";
        store.prune_personal(root, now - 50, &gone).unwrap();
        assert!(store.gone_since("/cvs/N/gone.pdf").unwrap().is_some());
        let later = store.prune_personal(root, now - 50, &|_| true).unwrap();
        assert_eq!(later.audit, 0, "back in the folder: its clock stops");
        assert_eq!(store.gone_since("/cvs/N/gone.pdf").unwrap(), None);
        store.prune_personal(root, now - 50, &gone).unwrap();
        let pruned = store.prune_personal(root, now + 1, &gone).unwrap();
        assert_eq!(pruned.audit, 1);
        let records = store.audit(&Filter::default()).unwrap();
        assert_eq!(records[0].path, None);
        assert!(store.is_synced(&sum).unwrap());
    }

    #[test]
    fn retention_prunes_old_records_and_long_gone_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let root = Path::new("/cvs");
        let now = unix_now();
        store
            .record_audit(&entry(now - 100, "old.pdf", Some("o@x.org")))
            .unwrap();
        store.record_audit(&entry(now, "new.pdf", None)).unwrap();
        store.record_audit(&entry(now, "gone.pdf", None)).unwrap();
        store.record_synced("new", None, "/cvs/new.pdf").unwrap();
        store.record_synced("gone", None, "/cvs/gone.pdf").unwrap();
        let here = |p: &str| p != "/cvs/gone.pdf";
        // The first look finds gone.pdf gone: its clock starts, nothing of it goes yet.
        let first = store.prune_personal(root, now - 50, &here).unwrap();
        assert_eq!(
            first,
            Pruned {
                synced: 0,
                audit: 1
            }
        );
        assert!(store.gone_since("/cvs/gone.pdf").unwrap().is_some());
        // Later (a cutoff past the day it went): its path goes too.
        let later = store.prune_personal(root, now + 1, &here).unwrap();
        assert_eq!(later.audit, 2, "gone.pdf's record, then new.pdf's by age");
        let paths: Vec<Option<String>> = store
            .audit(&Filter::default())
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, [None, None, None]);
        assert!(store.is_synced("gone").unwrap() && store.is_synced("new").unwrap());
        assert_eq!(store.gone_since("/cvs/gone.pdf").unwrap(), None);
    }
}
