//! The agent's memory: which checksums are synced, the path → checksum cache, and failures;
//! the GDPR records (suppression rules, the audit trail); and the ledger that shares
//! the synced set, rules and audit records with other agents.

pub mod ledger;
pub mod legacy;
pub mod lock;
pub mod redis;
pub mod sqlite;
pub mod writer;

use std::path::{Path, PathBuf};

pub use ledger::Ledger;
pub use sqlite::SqliteStore;
pub use writer::{StateWriter, Write};

/// The identity and version of a file on disk: if none of these changed, its bytes did not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

/// What the cache knows about a file whose stamp is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    pub checksum: String,
    pub synced: bool,
    /// Read just now by the walk (see `engine::hash_unknown`), not found in the cache.
    pub hashed: bool,
}

/// A file that could not be delivered, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    pub path: String,
    pub checksum: Option<String>,
    pub reason: String,
    /// Permanent failures (the server refused the file) are not retried automatically.
    pub permanent: bool,
    pub attempts: u32,
}

/// A state store failure, naming the database.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database {path}: {source}{}", damaged_hint(.source))]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// The shared ledger; `url` has no password in it.
    #[error("Redis at {url}: {message}")]
    Redis { url: String, message: String },
}

pub type Result<T> = std::result::Result<T, StateError>;

impl StateError {
    /// Whether the failure is the machine's and may pass by itself or by the
    /// admin's hand without touching the database: a full disk, an I/O error,
    /// a read-only mount, a lock. A damaged file or a refused write is not.
    pub fn may_pass(&self) -> bool {
        use rusqlite::ErrorCode::*;
        match self {
            StateError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => matches!(
                e.code,
                DiskFull
                    | SystemIoFailure
                    | ReadOnly
                    | CannotOpen
                    | DatabaseBusy
                    | DatabaseLocked
                    | PermissionDenied
            ),
            StateError::Redis { .. } => true,
            _ => false,
        }
    }
}

/// What to do about a damaged database, after SQLite's own words.
fn damaged_hint(error: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match error.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => {
            " (the file is damaged: stop the agent and restore it from a backup; or move it \
             aside and start again: every file is read again, and the service's duplicate check \
             keeps each from being uploaded twice, but `forget` rules kept only in that file are \
             lost with it)"
        }
        _ => "",
    }
}

/// Durable state. Calls are short local operations. The pipeline's writes
/// (intents and outcomes) go through [`Store::apply`], committed before it
/// returns; only the path cache, which a crash may lose at the cost of a
/// re-hash, is written later, in batches.
pub trait Store: Send + Sync {
    /// Where the state is kept, for messages.
    fn path(&self) -> &Path;
    /// Apply the pipeline's writes in one transaction: all of them or none
    /// (the group commit of [`StateWriter`]).
    fn apply(&self, writes: &[Write]) -> Result<()>;
    /// The checksum cached for this stamp, and whether it is synced.
    fn lookup(&self, stamp: &FileStamp) -> Result<Option<Cached>>;
    /// [`Store::lookup`] for many stamps at once, in one read.
    fn lookup_many(&self, stamps: &[FileStamp]) -> Result<Vec<Option<Cached>>> {
        stamps.iter().map(|s| self.lookup(s)).collect()
    }
    /// Every row of the path cache whose checksum is a SHA-256, stamp and
    /// checksum's bytes, in one sequential read (a whole walk's lookups, see
    /// `cache_index`). Bytes, not hex: a no-op restart of 20k files spent a
    /// tenth of its time turning them into hex and back.
    fn for_each_cached(&self, each: &mut dyn FnMut(FileStamp, &[u8; 32])) -> Result<()>;
    /// Every synced SHA-256 as its bytes, in one sequential read, in byte order
    /// as far as the store keeps them so.
    fn for_each_synced(&self, each: &mut dyn FnMut(&[u8; 32])) -> Result<()>;
    /// Remember the checksum of a file version so a restart need not re-read
    /// it. May be committed later, with others (see [`Store::flush`]).
    fn remember(&self, stamp: &FileStamp, checksum: &str) -> Result<()>;
    /// Commit what `remember` has batched.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    /// Fold what is committed into the main file, where a reader that does
    /// not see the journal (`--dry-run`) finds it; called when writing goes quiet.
    fn checkpoint(&self) -> Result<()> {
        Ok(())
    }
    /// What planning these bytes needs, in one read: are they synced, and
    /// if not, their recorded failure (permanent first, then the most attempted).
    fn plan_facts(&self, checksum: &str) -> Result<(bool, Option<Failure>)>;
    /// Forget failures so the files are tried again: all of them, or those
    /// whose path is `path` or lies under it. Returns how many were forgotten.
    fn clear_failures(&self, path: Option<&str>) -> Result<usize>;
    /// Drop the failures of paths for which `exists` is false (deleted files); returns those paths.
    fn prune_failures(&self, exists: &dyn Fn(&str) -> bool) -> Result<Vec<String>>;
    /// Uploads that started and have no outcome: (checksum, when, in Unix milliseconds).
    fn intents(&self) -> Result<Vec<(String, i64)>>;
    fn failures(&self) -> Result<Vec<Failure>>;
    fn synced_count(&self) -> Result<u64>;
    /// The suppression rules recorded here (`tanova-sync forget`).
    fn suppression_rules(&self) -> Result<Vec<crate::privacy::Rule>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn sqlite(code: std::os::raw::c_int) -> StateError {
        StateError::Sqlite {
            path: PathBuf::from("/state/tanova-sync.db"),
            source: rusqlite::Error::SqliteFailure(ffi::Error::new(code), None),
        }
    }

    #[test]
    fn the_machine_s_failures_may_pass_a_damaged_file_does_not() {
        let table = [
            (ffi::SQLITE_FULL, true),
            (ffi::SQLITE_IOERR_WRITE, true),
            (ffi::SQLITE_READONLY, true),
            (ffi::SQLITE_CANTOPEN, true),
            (ffi::SQLITE_BUSY, true),
            (ffi::SQLITE_PERM, true),
            (ffi::SQLITE_CORRUPT, false),
            (ffi::SQLITE_NOTADB, false),
            (ffi::SQLITE_CONSTRAINT_PRIMARYKEY, false),
        ];
        for (code, passes) in table {
            assert_eq!(sqlite(code).may_pass(), passes, "{code}");
        }
        let thread_gone = StateError::File {
            path: PathBuf::from("/state/tanova-sync.db"),
            message: "the thread that writes the state stopped".to_string(),
        };
        assert!(!thread_gone.may_pass());
    }

    #[test]
    fn a_damaged_file_is_named_with_what_to_do() {
        let damaged = sqlite(ffi::SQLITE_CORRUPT).to_string();
        assert!(
            damaged.starts_with("state database /state/tanova-sync.db: "),
            "{damaged}"
        );
        assert!(damaged.contains("restore it from a backup"), "{damaged}");
        assert!(!sqlite(ffi::SQLITE_FULL).to_string().contains("backup"));
    }
}
