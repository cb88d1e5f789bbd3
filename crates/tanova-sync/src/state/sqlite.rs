//! The embedded store: one SQLite file (WAL) in the state directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use super::{legacy, Cached, Failure, FileStamp, Result, StateError, Store, Write};
use crate::privacy::Rule;

mod checksum;
mod privacy;
use checksum::{as_hex, as_sha256, Form, Hex, Key};
pub use privacy::{relative_to, Pruned};

/// The database's file name inside the state directory.
pub const DB_FILE: &str = "tanova-sync.db";

/// The tables, as a new state gets them. A checksum column declared TEXT holds
/// bytes where [`Key`] binds bytes (schema version 1, [`checksum`]).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS synced (
    checksum     TEXT PRIMARY KEY,
    candidate_id TEXT,
    path         TEXT,
    synced_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS path_cache (
    dev      INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    PRIMARY KEY (dev, ino)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failures (
    path      TEXT PRIMARY KEY,
    checksum  TEXT,
    reason    TEXT NOT NULL,
    permanent INTEGER NOT NULL,
    attempts  INTEGER NOT NULL,
    last_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_by_checksum ON failures (checksum);
CREATE TABLE IF NOT EXISTS intents (
    checksum TEXT PRIMARY KEY,
    path     TEXT NOT NULL,
    at_ms    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// What importing a legacy history did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The file, canonical.
    pub path: PathBuf,
    /// Checksums in the file.
    pub in_file: usize,
    /// Of those, how many the state did not have yet.
    pub added: usize,
}

/// Path-cache rows are committed together once this many wait…
const CACHE_BATCH: usize = 1000;
/// …or the oldest has waited this long (checked on every remember and lookup).
const CACHE_AGE: Duration = Duration::from_millis(100);

/// The SQLite store. One connection behind a mutex: every call is a short
/// indexed statement, and each outcome is its own committed transaction.
/// Path-cache rows are the exception: a row lost to a crash only costs a
/// re-hash, so they wait in memory (where lookups see them) and are committed
/// many at a time; one transaction per hashed file was most of a migration's
/// per-file cost (issue 12).
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// A second connection for the pipeline's reads (plan, cache lookups): in
    /// WAL mode it reads while the first commits, so a group commit never
    /// holds up the files being planned. `None` for a read-only store.
    reader: Option<Mutex<Connection>>,
    path: PathBuf,
    pending: Mutex<PendingCache>,
    /// How this state keeps checksums: as text only while it cannot be
    /// upgraded (opened read-only, or another agent holds it).
    form: Form,
    /// False only while the failures table is known to be empty (it was at
    /// open, and no failure was written since): planning a file then skips
    /// the failures query, a fifth of a first sync's reads (issue 12). Only
    /// this store writes failures: the lock keeps other agents out.
    failures_held: AtomicBool,
}

/// Path-cache rows not committed yet, by file identity.
#[derive(Default)]
struct PendingCache {
    rows: HashMap<(u64, u64), (FileStamp, String)>,
    since: Option<Instant>,
}

impl PendingCache {
    fn due(&self) -> bool {
        self.rows.len() >= CACHE_BATCH || self.since.is_some_and(|t| t.elapsed() >= CACHE_AGE)
    }

    fn get(&self, stamp: &FileStamp) -> Option<&str> {
        self.rows
            .get(&(stamp.dev, stamp.ino))
            .filter(|(s, _)| s == stamp)
            .map(|(_, sum)| sum.as_str())
    }
}

impl SqliteStore {
    /// Open (or create) the store in `dir`, creating the directory private to the user.
    pub fn open(dir: &Path) -> Result<Self> {
        create_private_dir(dir)?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|source| StateError::Sqlite {
            path: path.clone(),
            source,
        })?;
        restrict_to_owner(&path);
        let mut store = SqliteStore {
            conn: Mutex::new(conn),
            reader: None,
            path,
            pending: Mutex::default(),
            form: Form::Bytes,
            failures_held: AtomicBool::new(true),
        };
        store.with(|c| {
            // WAL + NORMAL: a commit survives the process being killed (it is in
            // the OS cache); after a power cut the server's duplicate check closes the gap.
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "NORMAL")?;
            // A checkpoint every 10,000 WAL pages (40 MB), not 1,000: pages a
            // sync rewrites with every file (the audit trail's last leaf, the
            // intents, upper B-tree levels) reach the database file once per
            // checkpoint, so fewer checkpoints write fewer pages (a first sync
            // of 200k files 14% faster). The state writer folds the WAL in
            // once writing goes quiet (`Store::checkpoint`), and a clean close
            // removes it; a power cut loses no more than the comment above says.
            c.pragma_update(None, "wal_autocheckpoint", 10_000)?;
            c.busy_timeout(std::time::Duration::from_secs(10))?;
            c.execute_batch(SCHEMA)?;
            c.execute_batch(privacy::SCHEMA)
        })?;
        store.upgrade()?;
        store.note_failures_held()?;
        let reader = Connection::open(&store.path).and_then(|c| {
            c.busy_timeout(std::time::Duration::from_secs(10))?;
            Ok(c)
        });
        store.reader = Some(Mutex::new(reader.map_err(|source| StateError::Sqlite {
            path: store.path.clone(),
            source,
        })?));
        Ok(store)
    }

    /// Open the store in `dir` for reading only, changing nothing on disk (`--dry-run`):
    /// no journal, no lock, no file created. A missing store reads as empty.
    pub fn open_read_only(dir: &Path) -> Result<Self> {
        let path = dir.join(DB_FILE);
        let sqlite = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut form = Form::Bytes;
        let conn = if path.exists() {
            if journal_left_by_a_crash(dir) {
                tracing::warn!(
                    "{}: an agent stopped without closing it, and what it last committed is only \
                     in its journal, which a read-only look cannot replay: files it synced at the \
                     end may be listed here as still to upload (the next run replays the journal first)",
                    path.display()
                );
            }
            // immutable: SQLite takes no lock and writes no -wal/-shm beside the file.
            let absolute = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
            let mut uri = url::Url::from_file_path(&absolute).map_err(|()| StateError::File {
                path: path.clone(),
                message: "not an absolute path".to_string(),
            })?;
            uri.set_query(Some("mode=ro&immutable=1"));
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                | rusqlite::OpenFlags::SQLITE_OPEN_URI
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(uri.as_str(), flags).map_err(sqlite)?;
            let version = schema_version(&conn).map_err(sqlite)?;
            newer_refused(&path, version)?;
            if version < checksum::SCHEMA_VERSION {
                form = Form::Text;
            }
            Some(conn).filter(|c| has_tables(c).unwrap_or(true))
        } else {
            None
        };
        // No state yet, or one whose very tables are still only in a killed agent's journal: empty.
        let conn = if let Some(conn) = conn {
            conn
        } else {
            let conn = Connection::open_in_memory().map_err(sqlite)?;
            conn.execute_batch(SCHEMA).map_err(sqlite)?;
            conn.execute_batch(privacy::SCHEMA).map_err(sqlite)?;
            conn
        };
        let store = SqliteStore {
            conn: Mutex::new(conn),
            reader: None,
            path,
            pending: Mutex::default(),
            form,
            failures_held: AtomicBool::new(true),
        };
        store.note_failures_held()?;
        Ok(store)
    }

    /// Whether the failures table holds a row now, for [`SqliteStore::failures_held`].
    fn note_failures_held(&self) -> Result<()> {
        let held =
            self.with(|c| c.query_row("SELECT EXISTS (SELECT 1 FROM failures)", [], |r| r.get(0)))?;
        self.failures_held.store(held, Ordering::SeqCst);
        Ok(())
    }

    /// Bring the state to [`checksum::SCHEMA_VERSION`] in one transaction (a
    /// crash leaves it as it was, to be upgraded at the next start), or refuse
    /// one a newer agent wrote rather than misread it.
    fn upgrade(&mut self) -> Result<()> {
        let version = self.with(|c| schema_version(c))?;
        newer_refused(&self.path, version)?;
        if version == checksum::SCHEMA_VERSION {
            return Ok(());
        }
        // Only under the agents' lock: an agent running on this state, perhaps
        // an older one that reads text, must not find its rows changed under
        // it. Until it is gone, this store keeps the state's form.
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let Ok(_lock) = super::lock::acquire(dir) else {
            self.form = Form::Text;
            tracing::info!(
                "the state {} is in use by another agent: it will be upgraded to schema {} once that agent stops",
                self.path.display(),
                checksum::SCHEMA_VERSION
            );
            return Ok(());
        };
        let started = Instant::now();
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute_batch(checksum::TO_BYTES)?;
            tx.pragma_update(None, "user_version", checksum::SCHEMA_VERSION)?;
            tx.commit()
        })?;
        let took = started.elapsed();
        if took > Duration::from_secs(1) {
            tracing::info!(
                "upgraded the state {} to schema {} (checksums kept as bytes) in {:.1} s",
                self.path.display(),
                checksum::SCHEMA_VERSION,
                took.as_secs_f64()
            );
        }
        Ok(())
    }

    /// A checksum to bind, as this state keeps it.
    fn key<'a>(&self, sum: &'a str) -> Key<'a> {
        self.form.key(sum)
    }

    /// The path-cache lookup for this state's form of checksums.
    fn cached_by_stamp(&self) -> &'static str {
        match self.form {
            Form::Bytes => CACHED_BY_STAMP,
            Form::Text => CACHED_BY_STAMP_TEXT,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Import a legacy history file unless this very file, with these very
    /// bytes, was imported before (recorded by its canonical path and the
    /// SHA-256 of its content: a file the script kept writing is imported
    /// again). `None` when there was nothing to do.
    pub fn import_legacy(&self, history: &Path) -> Result<Option<Imported>> {
        if !history.is_file() {
            return Ok(None);
        }
        let path = history
            .canonicalize()
            .unwrap_or_else(|_| history.to_path_buf());
        let key = format!("legacy_imported:{}", path.display());
        let (checksums, hash) = legacy::read_hashed(&path)?;
        let done: Option<String> = self.with(|c| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
        })?;
        if done.as_deref() == Some(hash.as_str()) {
            return Ok(None);
        }
        let now = unix_now();
        let added = self.with(|c| {
            let tx = c.transaction()?;
            let mut added = 0;
            {
                let mut insert = tx.prepare(
                    "INSERT OR IGNORE INTO synced (checksum, candidate_id, path, synced_at) VALUES (?1, NULL, NULL, ?2)",
                )?;
                for sum in &checksums {
                    added += insert.execute(params![self.key(sum), now])?;
                }
            }
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, hash],
            )?;
            tx.commit()?;
            Ok(added)
        })?;
        Ok(Some(Imported {
            path,
            in_file: checksums.len(),
            added,
        }))
    }

    /// When the last file was synced by this agent (not imported), in Unix
    /// seconds: its last audit record, or a synced record with a path (one
    /// another agent synced, or one from before the audit trail).
    pub fn last_synced_at(&self) -> Result<Option<i64>> {
        self.with(|c| {
            c.query_row(
                "SELECT MAX(at) FROM (
                     SELECT MAX(synced_at) AS at FROM synced WHERE path IS NOT NULL
                     UNION ALL SELECT at FROM (SELECT at FROM audit ORDER BY id DESC LIMIT 1))",
                [],
                |r| r.get(0),
            )
        })
    }

    /// Every synced checksum, for exporting the legacy history.
    pub fn synced_checksums(&self) -> Result<Vec<String>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT checksum FROM synced")?;
            let rows = stmt.query_map([], |r| r.get::<_, Hex>(0).map(|h| h.0))?;
            rows.collect()
        })
        .map(sorted)
    }

    /// Every synced checksum with its candidate id when known, for `state push`.
    pub fn synced_records(&self) -> Result<Vec<(String, Option<String>)>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT checksum, candidate_id FROM synced")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, Hex>(0)?.0, r.get(1)?)))?;
            rows.collect()
        })
        .map(sorted)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, PendingCache> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn flush_if_due(&self) -> Result<()> {
        if self.pending().due() {
            self.flush()?;
        }
        Ok(())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        self.on(&self.conn, f)
    }

    /// A read on the reading connection (the writing one for a read-only store).
    fn reading<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        self.on(self.reader.as_ref().unwrap_or(&self.conn), f)
    }

    fn on<T>(
        &self,
        conn: &Mutex<Connection>,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        // A panic while holding the lock cannot leave SQLite inconsistent, so a poisoned lock is still usable.
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|source| StateError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }
}

impl Store for SqliteStore {
    fn lookup(&self, stamp: &FileStamp) -> Result<Option<Cached>> {
        Ok(self
            .lookup_many(std::slice::from_ref(stamp))?
            .pop()
            .flatten())
    }

    fn lookup_many(&self, stamps: &[FileStamp]) -> Result<Vec<Option<Cached>>> {
        self.flush_if_due()?;
        let pending: Vec<Option<String>> = {
            let pending = self.pending();
            stamps
                .iter()
                .map(|s| pending.get(s).map(str::to_string))
                .collect()
        };
        self.reading(|c| {
            // One read transaction for the lot: one lock, not one per file.
            let tx = c.transaction()?;
            let mut by_stamp = tx.prepare_cached(self.cached_by_stamp())?;
            let found = stamps
                .iter()
                .zip(pending)
                .map(|(stamp, pending)| match pending {
                    Some(checksum) => Ok(Some(Cached {
                        synced: synced_in(&tx, self.key(&checksum))?,
                        checksum,
                        hashed: false,
                    })),
                    None => by_stamp
                        .query_row(
                            params![
                                stamp.dev as i64,
                                stamp.ino as i64,
                                stamp.size as i64,
                                stamp.mtime_ns
                            ],
                            |r| {
                                let mut hex = [0; 64];
                                Ok(Cached {
                                    checksum: as_hex(r.get_ref(0)?, &mut hex)?.to_string(),
                                    synced: r.get(1)?,
                                    hashed: false,
                                })
                            },
                        )
                        .optional(),
                })
                .collect::<rusqlite::Result<Vec<_>>>()?;
            drop(by_stamp);
            tx.commit()?;
            Ok(found)
        })
    }

    fn for_each_cached(&self, each: &mut dyn FnMut(FileStamp, &[u8; 32])) -> Result<()> {
        self.flush()?;
        self.with(|c| {
            let mut rows =
                c.prepare("SELECT dev, ino, size, mtime_ns, checksum FROM path_cache")?;
            let mut rows = rows.query([])?;
            while let Some(row) = rows.next()? {
                let Some(sum) = as_sha256(row.get_ref(4)?) else {
                    continue;
                };
                let stamp = FileStamp {
                    dev: row.get::<_, i64>(0)? as u64,
                    ino: row.get::<_, i64>(1)? as u64,
                    size: row.get::<_, i64>(2)? as u64,
                    mtime_ns: row.get(3)?,
                };
                each(stamp, &sum);
            }
            Ok(())
        })
    }

    fn for_each_synced(&self, each: &mut dyn FnMut(&[u8; 32])) -> Result<()> {
        self.with(|c| {
            // The table's key order: bytes in byte order (and lowercase hex
            // text, in a state not upgraded yet, in the same order).
            let mut rows = c.prepare("SELECT checksum FROM synced")?;
            let mut rows = rows.query([])?;
            while let Some(row) = rows.next()? {
                if let Some(sum) = as_sha256(row.get_ref(0)?) {
                    each(&sum);
                }
            }
            Ok(())
        })
    }

    fn remember(&self, stamp: &FileStamp, checksum: &str) -> Result<()> {
        {
            let mut pending = self.pending();
            pending.since.get_or_insert_with(Instant::now);
            pending
                .rows
                .insert((stamp.dev, stamp.ino), (*stamp, checksum.to_string()));
        }
        self.flush_if_due()
    }

    fn flush(&self) -> Result<()> {
        let rows = std::mem::take(&mut *self.pending()).rows;
        if rows.is_empty() {
            return Ok(());
        }
        self.with(|c| {
            let tx = c.transaction()?;
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO path_cache (dev, ino, size, mtime_ns, checksum) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (stamp, checksum) in rows.values() {
                insert.execute(params![
                    stamp.dev as i64,
                    stamp.ino as i64,
                    stamp.size as i64,
                    stamp.mtime_ns,
                    self.key(checksum)
                ])?;
            }
            drop(insert);
            tx.commit()
        })
    }

    fn checkpoint(&self) -> Result<()> {
        self.flush()?;
        // PASSIVE: copies what no reader still needs, waits for nobody.
        self.with(|c| c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())))
    }

    fn plan_facts(&self, checksum: &str) -> Result<(bool, Option<Failure>)> {
        self.reading(|c| {
            if !self.failures_held.load(Ordering::SeqCst) {
                // One question, one statement in a read transaction of its own.
                return Ok((synced_in(c, self.key(checksum))?, None));
            }
            // One read transaction: one lock for both questions.
            let tx = c.transaction()?;
            let synced = synced_in(&tx, self.key(checksum))?;
            let failure = if synced {
                None
            } else {
                failure_in(&tx, checksum)?
            };
            tx.commit()?;
            Ok((synced, failure))
        })
    }

    fn clear_failures(&self, path: Option<&str>) -> Result<usize> {
        self.with(|c| match path {
            None => c.execute("DELETE FROM failures", []),
            Some(path) => {
                let dir = format!("{}/", path.trim_end_matches('/'));
                // substr, not LIKE: paths may contain % and _.
                c.execute(
                    "DELETE FROM failures WHERE path = ?1 OR substr(path, 1, length(?2)) = ?2",
                    params![path, dir],
                )
            }
        })
    }

    fn prune_failures(&self, exists: &dyn Fn(&str) -> bool) -> Result<Vec<String>> {
        let paths: Vec<String> = self.with(|c| {
            let mut stmt = c.prepare("SELECT path FROM failures")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })?;
        let gone: Vec<String> = paths.into_iter().filter(|p| !exists(p)).collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        self.with(|c| {
            let tx = c.transaction()?;
            for path in &gone {
                tx.prepare_cached("DELETE FROM failures WHERE path = ?1")?
                    .execute([path])?;
            }
            tx.commit()
        })?;
        Ok(gone)
    }

    fn intents(&self) -> Result<Vec<(String, i64)>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT checksum, at_ms FROM intents")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    fn failures(&self) -> Result<Vec<Failure>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT path, checksum, reason, permanent, attempts FROM failures ORDER BY path",
            )?;
            let rows = stmt.query_map([], failure_row)?;
            rows.collect()
        })
    }

    fn synced_count(&self) -> Result<u64> {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM synced", [], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
    }

    fn suppression_rules(&self) -> Result<Vec<Rule>> {
        match self.read_rules() {
            // A state from before `forget` opened read-only (`--dry-run`) has no rules table.
            Err(StateError::Sqlite { source, .. })
                if source.to_string().contains("no such table") =>
            {
                Ok(Vec::new())
            }
            read => read,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn apply(&self, writes: &[Write]) -> Result<()> {
        let now = Now::read();
        // Before the commit, so no plan that could see the row skips the query.
        if writes.iter().any(|w| matches!(w, Write::Failure { .. })) {
            self.failures_held.store(true, Ordering::SeqCst);
        }
        let failures = self.failures_held.load(Ordering::SeqCst);
        self.with(|c| {
            let tx = c.transaction()?;
            for write in writes {
                write_in(&tx, write, now, self.form, failures)?;
            }
            tx.commit()
        })
    }
}

/// One write at a time, for tests: the pipeline writes through [`Store::apply`]
/// (grouped by `state::writer`).
#[cfg(test)]
impl SqliteStore {
    pub(crate) fn record_synced(
        &self,
        checksum: &str,
        candidate: Option<&str>,
        path: &str,
    ) -> Result<()> {
        self.apply(&[Write::Synced {
            checksum: checksum.to_string(),
            candidate: candidate.map(str::to_string),
            path: path.to_string(),
            audit: None,
        }])
    }

    pub(crate) fn record_failure(
        &self,
        path: &str,
        checksum: Option<&str>,
        reason: &str,
        permanent: bool,
        counts: bool,
    ) -> Result<()> {
        self.apply(&[Write::Failure {
            path: path.to_string(),
            checksum: checksum.map(str::to_string),
            reason: reason.to_string(),
            permanent,
            counts,
        }])
    }

    pub(crate) fn record_intent(&self, checksum: &str, path: &str) -> Result<()> {
        self.apply(&[Write::Intent {
            checksum: checksum.to_string(),
            path: path.to_string(),
        }])
    }

    pub(crate) fn clear_intent(&self, checksum: &str) -> Result<()> {
        self.apply(&[Write::ClearIntent {
            checksum: checksum.to_string(),
        }])
    }

    pub(crate) fn record_audit(&self, entry: &crate::privacy::AuditEntry) -> Result<()> {
        self.with(|c| privacy::insert_audit_in(c, entry, self.form))
    }

    pub(crate) fn is_synced(&self, checksum: &str) -> Result<bool> {
        self.reading(|c| synced_in(c, self.key(checksum)))
    }

    pub(crate) fn failure(&self, checksum: &str) -> Result<Option<Failure>> {
        self.reading(|c| failure_in(c, checksum))
    }
}

impl Drop for SqliteStore {
    /// What `remember` batched is committed on the way out.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!("{e}");
        }
    }
}

/// The clock, read once for a whole transaction.
#[derive(Clone, Copy)]
struct Now {
    secs: i64,
    ms: i64,
}

impl Now {
    fn read() -> Self {
        let ms = unix_now_ms();
        Now {
            secs: ms.div_euclid(1000),
            ms,
        }
    }
}

/// One of the pipeline's writes, in the caller's transaction; `failures`:
/// whether the failures table may hold a row to clear.
fn write_in(
    c: &Connection,
    write: &Write,
    now: Now,
    form: Form,
    failures: bool,
) -> rusqlite::Result<()> {
    match write {
        Write::Intent { checksum, path } => {
            c.prepare_cached(
                "INSERT OR REPLACE INTO intents (checksum, path, at_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![checksum, path, now.ms])?;
        }
        Write::ClearIntent { checksum } => {
            c.prepare_cached("DELETE FROM intents WHERE checksum = ?1")?
                .execute([checksum])?;
        }
        Write::Synced {
            checksum,
            candidate,
            path,
            audit,
        } => {
            // The path is kept once: in the delivery's audit record when there
            // is one (retention and `forget --purge` prune it there), else here.
            // Twice, it was a quarter of the state (issue 12).
            let kept = audit.is_none().then_some(path);
            // Synced bytes clear the failures of the path and the intent of the bytes.
            c.prepare_cached(
                "INSERT INTO synced (checksum, candidate_id, path, synced_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (checksum) DO UPDATE SET candidate_id = COALESCE(excluded.candidate_id, candidate_id)",
            )?
            .execute(params![form.key(checksum), candidate, kept, now.secs])?;
            if failures {
                c.prepare_cached("DELETE FROM failures WHERE path = ?1 OR checksum = ?2")?
                    .execute(params![path, checksum])?;
            }
            c.prepare_cached("DELETE FROM intents WHERE checksum = ?1")?
                .execute([checksum])?;
            if let Some(entry) = audit {
                privacy::insert_audit_in(c, entry, form)?;
            }
        }
        Write::Failure {
            path,
            checksum,
            reason,
            permanent,
            counts,
        } => {
            // In an UPDATE every column reads its old value: new bytes at the path start from zero.
            c.prepare_cached(
                "INSERT INTO failures (path, checksum, reason, permanent, attempts, last_at) VALUES (?1, ?2, ?3, ?4, ?6, ?5)
                 ON CONFLICT (path) DO UPDATE SET checksum = excluded.checksum, reason = excluded.reason,
                     permanent = excluded.permanent, last_at = excluded.last_at,
                     attempts = CASE WHEN checksum IS excluded.checksum THEN attempts + ?6 ELSE ?6 END",
            )?
            .execute(params![path, checksum, reason, permanent, now.secs, i64::from(*counts)])?;
            if let Some(sum) = checksum {
                c.prepare_cached("DELETE FROM intents WHERE checksum = ?1")?
                    .execute([sum])?;
            }
        }
        Write::Suppressed {
            path,
            checksum,
            rule,
        } => privacy::insert_suppressed_in(c, path, checksum.as_deref(), rule, now.secs)?,
    }
    Ok(())
}

/// The path-cache row of a stamp and whether its bytes are synced. Both
/// tables keep a checksum in the same form ([`checksum`]), so the join is on
/// the column as stored.
const CACHED_BY_STAMP: &str =
    "SELECT p.checksum, EXISTS (SELECT 1 FROM synced s WHERE s.checksum = p.checksum)
     FROM path_cache p WHERE p.dev = ?1 AND p.ino = ?2 AND p.size = ?3 AND p.mtime_ns = ?4";

/// The same in a version-0 state, whose `synced` holds hex text while its path
/// cache may hold either.
const CACHED_BY_STAMP_TEXT: &str =
    "SELECT p.checksum, EXISTS (SELECT 1 FROM synced s WHERE s.checksum =
         CASE typeof(p.checksum) WHEN 'blob' THEN lower(hex(p.checksum)) ELSE p.checksum END)
     FROM path_cache p WHERE p.dev = ?1 AND p.ino = ?2 AND p.size = ?3 AND p.mtime_ns = ?4";

/// In the order of their hex: SQLite orders text before bytes, and a state may hold both.
fn sorted<T: Ord>(mut rows: Vec<T>) -> Vec<T> {
    rows.sort_unstable();
    rows
}

/// A journal (WAL) that holds commits while no agent runs: the last one was
/// killed (a clean close folds the journal in and removes it; a running agent
/// folds it in whenever it goes quiet). Asks the agents' lock with a shared
/// lock on the file as it is, creating and writing nothing.
fn journal_left_by_a_crash(dir: &Path) -> bool {
    let wal = dir.join(format!("{DB_FILE}-wal"));
    if std::fs::metadata(&wal).map_or(true, |m| m.len() == 0) {
        return false;
    }
    match std::fs::File::open(dir.join(super::lock::LOCK_FILE)) {
        Err(_) => true,
        Ok(lock) => lock.try_lock_shared().is_ok(),
    }
}

/// Whether the main file holds the tables (a new state's may be only in its journal).
fn has_tables(c: &Connection) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'synced')",
        [],
        |r| r.get(0),
    )
}

fn schema_version(c: &Connection) -> rusqlite::Result<i64> {
    c.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// A state a newer agent wrote may keep things in a form this one would misread.
fn newer_refused(path: &Path, version: i64) -> Result<()> {
    if version > checksum::SCHEMA_VERSION {
        return Err(StateError::File {
            path: path.to_path_buf(),
            message: format!(
                "written by a newer tanova-sync (state schema {version}; this agent knows up to {}): \
                 run that version, or move the state directory aside to start afresh",
                checksum::SCHEMA_VERSION
            ),
        });
    }
    Ok(())
}

fn synced_in(c: &Connection, checksum: Key<'_>) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT EXISTS (SELECT 1 FROM synced WHERE checksum = ?1)")?
        .query_row([checksum], |r| r.get(0))
}

/// The failure of these bytes that says most (permanent first, then the most attempted).
fn failure_in(c: &Connection, checksum: &str) -> rusqlite::Result<Option<Failure>> {
    c.prepare_cached(
        "SELECT path, checksum, reason, permanent, attempts FROM failures
         WHERE checksum = ?1 ORDER BY permanent DESC, attempts DESC LIMIT 1",
    )?
    .query_row([checksum], failure_row)
    .optional()
}

fn failure_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Failure> {
    Ok(Failure {
        path: r.get(0)?,
        checksum: r.get(1)?,
        reason: r.get(2)?,
        permanent: r.get(3)?,
        attempts: r.get(4)?,
    })
}

fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let err = |e: std::io::Error| StateError::File {
        path: dir.to_path_buf(),
        message: format!("cannot create the state directory: {e}"),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).map_err(err)
    }
}

/// The state lists what the agency synced: keep it to the owner (best effort).
fn restrict_to_owner(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(ino: u64, size: u64) -> FileStamp {
        FileStamp {
            dev: 1,
            ino,
            size,
            mtime_ns: 42,
        }
    }

    #[test]
    fn cache_hits_only_for_the_same_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.remember(&stamp(7, 100), "abc").unwrap();
        assert_eq!(
            store.lookup(&stamp(7, 100)).unwrap(),
            Some(Cached {
                checksum: "abc".into(),
                synced: false,
                hashed: false,
            })
        );
        assert_eq!(store.lookup(&stamp(7, 101)).unwrap(), None);
        store.record_synced("abc", Some("cand_1"), "a.pdf").unwrap();
        assert!(store.lookup(&stamp(7, 100)).unwrap().unwrap().synced);
    }

    /// A state as an agent of schema 0 left it: a new state set back to
    /// version 0, with the rows `write` puts in by hand.
    fn schema_0_state(dir: &Path, write: impl FnOnce(&Connection) -> rusqlite::Result<()>) {
        let store = SqliteStore::open(dir).unwrap();
        store
            .with(|c| {
                c.execute_batch("PRAGMA user_version = 0")?;
                write(c)
            })
            .unwrap();
    }

    /// A state an older agent wrote (schema 0: hex text in `synced` and
    /// `audit`, either form in the path cache) reads the same read-only, is
    /// left as it was by a read-only open, and is upgraded to bytes, every
    /// row, when opened to write; a state from a newer agent is refused.
    #[test]
    fn an_older_state_reads_the_same_and_is_upgraded_to_bytes_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = ("ab".repeat(32), "0123456789abcdef".repeat(4));
        schema_0_state(dir.path(), |c| {
            for (ino, sum) in [(1, &old), (2, &new)] {
                c.execute(
                    "INSERT INTO synced (checksum, candidate_id, path, synced_at) VALUES (?1, 'cand', 'a.pdf', 1)",
                    [sum],
                )?;
                c.execute(
                    "INSERT INTO audit (at, path, checksum, host, outcome) VALUES (1, 'a.pdf', ?1, 'h', 'uploaded')",
                    [sum],
                )?;
                // An agent of schema 0 since the path cache went to bytes wrote them so.
                let cached = if ino == 1 { "?2" } else { "unhex(?2)" };
                c.execute(
                    &format!("INSERT INTO path_cache (dev, ino, size, mtime_ns, checksum) VALUES (1, ?1, 10, 42, {cached})"),
                    params![ino, sum],
                )?;
            }
            Ok(())
        });
        let kinds = |c: &Connection| -> Vec<String> {
            ["synced", "audit", "path_cache"]
                .iter()
                .map(|t| {
                    c.query_row(
                        &format!("SELECT group_concat(DISTINCT typeof(checksum)) FROM {t}"),
                        [],
                        |r| r.get(0),
                    )
                    .unwrap()
                })
                .collect()
        };
        let db = dir.path().join(DB_FILE);
        let reads_the_same = |store: &SqliteStore| {
            for (ino, sum) in [(1, &old), (2, &new)] {
                let cached = store.lookup(&stamp(ino, 10)).unwrap().unwrap();
                assert_eq!((&cached.checksum, cached.synced), (sum, true), "ino {ino}");
                assert!(store.plan_facts(sum).unwrap().0, "{sum} synced");
            }
            assert!(!store.plan_facts(&"cd".repeat(32)).unwrap().0);
            let mut cached = Vec::new();
            store
                .for_each_cached(&mut |stamp, sum| cached.push((stamp.ino, hex::encode(sum))))
                .unwrap();
            cached.sort();
            assert_eq!(cached, [(1, old.clone()), (2, new.clone())]);
            let index = crate::cache_index::CacheIndex::load(store);
            let found = index.attach(vec![crate::scan::Found::File {
                path: PathBuf::from("new.pdf"),
                stamp: stamp(2, 10),
                seen: None,
            }]);
            let hit = found[0].1.as_ref().unwrap();
            assert_eq!((&hit.checksum, hit.synced), (&new, true));
            assert_eq!(
                store.synced_checksums().unwrap(),
                [new.clone(), old.clone()]
            );
            let mut synced = Vec::new();
            store
                .for_each_synced(&mut |sum| synced.push(hex::encode(sum)))
                .unwrap();
            synced.sort();
            assert_eq!(synced, [new.clone(), old.clone()]);
            let audit = store.audit(&Default::default()).unwrap();
            let sums: Vec<&str> = audit.iter().map(|e| e.checksum.as_str()).collect();
            assert_eq!(sums, [old.as_str(), new.as_str()]);
        };

        reads_the_same(&SqliteStore::open_read_only(dir.path()).unwrap());
        let c = Connection::open(&db).unwrap();
        assert_eq!(
            schema_version(&c).unwrap(),
            0,
            "a read-only open changes nothing"
        );
        assert_eq!(kinds(&c), ["text", "text", "text,blob"]);

        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(schema_version(&c).unwrap(), checksum::SCHEMA_VERSION);
        assert_eq!(kinds(&c), ["blob", "blob", "blob"]);
        reads_the_same(&store);
        // The last connection to close checkpoints the WAL, which a read-only
        // (immutable) open does not read.
        drop((store, c));
        reads_the_same(&SqliteStore::open_read_only(dir.path()).unwrap());

        Connection::open(&db)
            .unwrap()
            .execute_batch("PRAGMA user_version = 2")
            .unwrap();
        for refused in [
            SqliteStore::open(dir.path()).err(),
            SqliteStore::open_read_only(dir.path()).err(),
        ] {
            let message = refused.expect("a newer state is refused").to_string();
            assert!(
                message.contains(&db.display().to_string())
                    && message.contains("newer tanova-sync"),
                "{message}"
            );
        }
    }

    /// An older state that another agent holds (perhaps an older agent, which
    /// reads text) is not upgraded under it: this store reads and writes it in
    /// its own form, and the next open after that agent stops upgrades it.
    #[test]
    fn an_older_state_another_agent_holds_is_kept_as_text_until_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = ("ab".repeat(32), "0123456789abcdef".repeat(4));
        schema_0_state(dir.path(), |c| {
            c.execute(
                "INSERT INTO synced (checksum, candidate_id, path, synced_at) VALUES (?1, NULL, 'old.pdf', 1)",
                [&old],
            )
            .map(drop)
        });
        let kinds = || -> Vec<String> {
            let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
            let mut kinds: Vec<String> = c
                .prepare("SELECT typeof(checksum) FROM synced UNION ALL SELECT typeof(checksum) FROM audit")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            kinds.dedup();
            kinds
        };

        let other_agent = super::super::lock::acquire(dir.path()).unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.form, Form::Text);
        store.record_synced(&new, None, "new.pdf").unwrap();
        store
            .record_audit(&crate::privacy::AuditEntry {
                at: 1,
                path: Some("new.pdf".into()),
                checksum: new.clone(),
                candidate_id: None,
                candidate_name: None,
                job_hint: None,
                email: None,
                host: "h".into(),
                outcome: "uploaded".into(),
            })
            .unwrap();
        store.remember(&stamp(2, 10), &new).unwrap();
        store.flush().unwrap();
        assert!(store.is_synced(&old).unwrap() && store.is_synced(&new).unwrap());
        assert!(store.lookup(&stamp(2, 10)).unwrap().unwrap().synced);
        drop(store);
        assert_eq!(kinds(), ["text"], "written as the other agent reads them");

        drop(other_agent);
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.form, Form::Bytes);
        assert_eq!(kinds(), ["blob"]);
        assert!(store.is_synced(&old).unwrap() && store.is_synced(&new).unwrap());
        assert!(store.lookup(&stamp(2, 10)).unwrap().unwrap().synced);
        assert!(
            super::super::lock::acquire(dir.path()).is_ok(),
            "the upgrade let go of the lock"
        );
    }

    /// A journal left with commits in it while no agent runs is told apart
    /// from one a running agent keeps, and from none.
    #[test]
    fn a_journal_left_by_a_killed_agent_is_told_apart_from_a_running_agents() {
        let dir = tempfile::tempdir().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.record_synced("abc", None, "a.pdf").unwrap();
        let running = super::super::lock::acquire(dir.path()).unwrap();
        assert!(!journal_left_by_a_crash(dir.path()), "an agent holds it");
        // The files as a kill -9 would leave them: the journal not folded in.
        for name in [DB_FILE.to_string(), format!("{DB_FILE}-wal")] {
            std::fs::copy(dir.path().join(&name), crashed.path().join(&name)).unwrap();
        }
        assert!(
            journal_left_by_a_crash(crashed.path()),
            "no lock file: nobody runs"
        );
        let read = SqliteStore::open_read_only(crashed.path()).unwrap();
        assert_eq!(
            (read.synced_count().unwrap(), read.is_synced("abc").unwrap()),
            (0, false),
            "tables only in the journal: read as an empty state, not an error"
        );
        std::fs::write(crashed.path().join(super::super::lock::LOCK_FILE), "1\n").unwrap();
        assert!(
            journal_left_by_a_crash(crashed.path()),
            "a lock file nobody holds"
        );
        drop((store, running));
        assert!(
            !journal_left_by_a_crash(dir.path()),
            "a clean close removes the journal"
        );
    }

    /// Path-cache rows wait in memory, where lookups see them, and reach the
    /// file in one transaction: on `flush`, at CACHE_BATCH rows, or on drop.
    #[test]
    fn the_path_cache_is_written_in_batches_and_never_lost_on_a_clean_close() {
        let dir = tempfile::tempdir().unwrap();
        let on_disk = |ino: u64| -> i64 {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.query_row(
                "SELECT COUNT(*) FROM path_cache WHERE ino <= ?1",
                [ino as i64],
                |r| r.get(0),
            )
            .unwrap()
        };
        let store = SqliteStore::open(dir.path()).unwrap();
        store.remember(&stamp(1, 10), "one").unwrap();
        assert_eq!(on_disk(1), 0, "batched, not committed yet");
        let got = store
            .lookup_many(&[stamp(2, 10), stamp(1, 10), stamp(1, 11)])
            .unwrap();
        assert_eq!(got[0], None);
        assert_eq!(got[1].as_ref().map(|c| c.checksum.as_str()), Some("one"));
        assert_eq!(got[2], None, "another version of the file");
        store.flush().unwrap();
        assert_eq!(on_disk(1), 1);
        for ino in 10..10 + CACHE_BATCH as u64 {
            store.remember(&stamp(ino, 1), "many").unwrap();
        }
        assert_eq!(
            on_disk(i64::MAX as u64),
            1 + CACHE_BATCH as i64,
            "a full batch commits at once"
        );
        store.remember(&stamp(5, 10), "five").unwrap();
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(
            store.lookup(&stamp(5, 10)).unwrap().unwrap().checksum,
            "five"
        );
    }

    #[test]
    fn success_clears_failures_and_attempts_accumulate() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .record_failure("a.pdf", Some("abc"), "server said no", true, true)
            .unwrap();
        store
            .record_failure("a.pdf", Some("abc"), "server said no", true, true)
            .unwrap();
        let failures = store.failures().unwrap();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].attempts, 2);
        let failure = store.failure("abc").unwrap().unwrap();
        assert_eq!(
            (failure.reason.as_str(), failure.permanent),
            ("server said no", true)
        );
        store.record_synced("abc", None, "a.pdf").unwrap();
        assert!(store.failures().unwrap().is_empty());
        assert_eq!(store.synced_count().unwrap(), 1);
    }

    #[test]
    fn a_plan_sees_failures_written_now_or_by_an_earlier_run() {
        // Guards the shortcut that skips the failures query on a state that holds none.
        let dir = tempfile::tempdir().unwrap();
        let failure = |store: &SqliteStore, sum: &str| store.plan_facts(sum).unwrap().1;
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            assert_eq!(failure(&store, "abc"), None);
            store
                .record_failure("a.pdf", Some("abc"), "server said no", true, true)
                .unwrap();
            assert_eq!(failure(&store, "abc").unwrap().reason, "server said no");
        }
        let reopened = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(failure(&reopened, "abc").unwrap().reason, "server said no");
        let looked_at = SqliteStore::open_read_only(dir.path()).unwrap();
        assert_eq!(failure(&looked_at, "abc").unwrap().reason, "server said no");
        // Synced bytes still clear their failure.
        reopened.record_synced("abc", None, "a.pdf").unwrap();
        assert!(reopened.failures().unwrap().is_empty());
    }

    #[test]
    fn state_survives_reopen_and_legacy_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let history = dir.path().join(legacy::HISTORY_FILE);
        legacy::write(&history, &["b".repeat(64)]).unwrap();
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            assert_eq!(
                store.import_legacy(&history).unwrap().map(|i| i.added),
                Some(1)
            );
            store.record_synced("c", None, "c.pdf").unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.import_legacy(&history).unwrap(), None);
        // Changed since: imported again, counting only what is new.
        legacy::write(&history, &["b".repeat(64), "c".repeat(64)]).unwrap();
        let again = store.import_legacy(&history).unwrap().unwrap();
        assert_eq!((again.in_file, again.added), (2, 1));
        assert_eq!(store.import_legacy(&history).unwrap(), None);
        assert!(store.is_synced(&"b".repeat(64)).unwrap());
        assert_eq!(
            store.synced_checksums().unwrap(),
            vec!["b".repeat(64), "c".into(), "c".repeat(64)]
        );
    }

    #[test]
    fn failures_are_cleared_by_path_or_folder() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        for path in [
            "/cvs/a.pdf",
            "/cvs/Sales/b.pdf",
            "/cvs/Sales/c.pdf",
            "/cvs/Sales_old/d.pdf",
        ] {
            store.record_failure(path, None, "no", false, true).unwrap();
        }
        assert_eq!(store.clear_failures(Some("/cvs/a.pdf")).unwrap(), 1);
        assert_eq!(store.clear_failures(Some("/cvs/Sales/")).unwrap(), 2);
        assert_eq!(
            store.failures().unwrap().len(),
            1,
            "Sales_old is not under Sales"
        );
        assert_eq!(store.clear_failures(None).unwrap(), 1);
    }

    #[test]
    fn outages_never_count_and_new_bytes_start_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let attempts = |store: &SqliteStore| store.failures().unwrap()[0].attempts;
        // (checksum, counts, attempts after)
        let table = [
            (Some("abc"), true, 1),
            (Some("abc"), false, 1),
            (Some("abc"), false, 1),
            (Some("abc"), true, 2),
            (Some("def"), true, 1),
            (Some("ghi"), false, 0),
            (None, true, 1),
            (None, true, 2),
        ];
        for (sum, counts, want) in table {
            store
                .record_failure("a.pdf", sum, "down", false, counts)
                .unwrap();
            assert_eq!(attempts(&store), want, "{sum:?} counts={counts}");
        }
    }

    #[test]
    fn intents_last_until_an_outcome_and_failures_of_deleted_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        for sum in ["a", "b", "c"] {
            store.record_intent(sum, &format!("{sum}.pdf")).unwrap();
        }
        store.record_synced("a", None, "a.pdf").unwrap();
        store
            .record_failure("b.pdf", Some("b"), "no", true, true)
            .unwrap();
        let left: Vec<String> = store.intents().unwrap().into_iter().map(|i| i.0).collect();
        assert_eq!(left, ["c"]);
        store.clear_intent("c").unwrap();
        assert!(store.intents().unwrap().is_empty());

        store
            .record_failure("/gone.pdf", None, "no", false, true)
            .unwrap();
        assert_eq!(
            store.prune_failures(&|p| p != "/gone.pdf").unwrap(),
            ["/gone.pdf"]
        );
        let left: Vec<String> = store
            .failures()
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(left, ["b.pdf"]);
    }

    #[cfg(unix)]
    #[test]
    fn database_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = SqliteStore::open(&state).unwrap();
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }
}
