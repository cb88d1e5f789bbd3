//! How the SQLite store keeps a checksum: a SHA-256 in lowercase hex as its
//! 32 bytes, anything else (tests, hand-made states) as the text it is.
//!
//! Bytes halve the key of `synced` and the checksum of every `audit` and
//! `path_cache` row: a state of a million files is about 80 MB smaller, and
//! the B-tree the plan descends for every file is shallower (issue 12).

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// The schema this agent writes, in `PRAGMA user_version`. 0: checksums as
/// hex text (agents before 2026-12-02; their `path_cache` may hold either).
/// 1: checksums as bytes wherever [`Key`] would bind them so.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// Brings a version-0 state to version 1, in the caller's transaction: every
/// text checksum [`Key`] would bind as bytes becomes those bytes.
pub(super) const TO_BYTES: &str = "
UPDATE synced SET checksum = unhex(checksum) WHERE typeof(checksum) = 'text'
    AND length(checksum) = 64 AND checksum NOT GLOB '*[^0-9a-f]*';
UPDATE audit SET checksum = unhex(checksum) WHERE typeof(checksum) = 'text'
    AND length(checksum) = 64 AND checksum NOT GLOB '*[^0-9a-f]*';
UPDATE path_cache SET checksum = unhex(checksum) WHERE typeof(checksum) = 'text'
    AND length(checksum) = 64 AND checksum NOT GLOB '*[^0-9a-f]*';
";

/// How a state keeps its checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Form {
    /// Version 1: a SHA-256 as its bytes.
    Bytes,
    /// Version 0, not upgraded yet: it is opened read-only (`--dry-run`), or
    /// another agent, perhaps an older one, holds it.
    Text,
}

impl Form {
    /// `sum` as a state of this form keeps it.
    pub(super) fn key(self, sum: &str) -> Key<'_> {
        match self {
            Form::Bytes => Key::new(sum),
            Form::Text => Key::text(sum),
        }
    }
}

/// A checksum bound to a statement, as the schema keeps it.
pub(super) struct Key<'a> {
    text: &'a str,
    bytes: Option<[u8; 32]>,
}

impl<'a> Key<'a> {
    /// As version 1 keeps it.
    fn new(text: &'a str) -> Self {
        let mut bytes = [0; 32];
        let lower_hex = text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let is_sha256 = lower_hex && hex::decode_to_slice(text, &mut bytes).is_ok();
        Key {
            text,
            bytes: is_sha256.then_some(bytes),
        }
    }

    /// As version 0 keeps it.
    fn text(text: &'a str) -> Self {
        Key { text, bytes: None }
    }
}

impl ToSql for Key<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match &self.bytes {
            Some(bytes) => ValueRef::Blob(bytes),
            None => ValueRef::Text(self.text.as_bytes()),
        }))
    }
}

/// A stored checksum as hex, whichever way the row holds it, without allocating.
pub(super) fn as_hex<'a>(stored: ValueRef<'a>, buf: &'a mut [u8; 64]) -> FromSqlResult<&'a str> {
    match stored {
        ValueRef::Blob(bytes) => {
            hex::encode_to_slice(bytes, buf).map_err(|_| FromSqlError::InvalidBlobSize {
                expected_size: 32,
                blob_size: bytes.len(),
            })?;
            std::str::from_utf8(buf.as_slice()).map_err(|e| FromSqlError::Other(e.into()))
        }
        other => other.as_str(),
    }
}

/// A stored checksum as the 32 bytes of a SHA-256: a blob as it is, text when
/// it is 64 hex digits; `None` for anything else (tests, hand-made states).
pub(super) fn as_sha256(stored: ValueRef<'_>) -> Option<[u8; 32]> {
    let mut bytes = [0; 32];
    match stored {
        ValueRef::Blob(blob) => bytes = blob.try_into().ok()?,
        ValueRef::Text(text) => hex::decode_to_slice(text, &mut bytes).ok()?,
        _ => return None,
    }
    Some(bytes)
}

/// A stored checksum read back as an owned hex string.
pub(super) struct Hex(pub String);

impl FromSql for Hex {
    fn column_result(stored: ValueRef<'_>) -> FromSqlResult<Self> {
        let mut buf = [0; 64];
        as_hex(stored, &mut buf).map(|s| Hex(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    const SUM: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn only_a_sha256_reads_back_as_its_bytes() {
        let bytes: [u8; 32] = hex::decode(SUM).unwrap().try_into().unwrap();
        let upper = SUM.to_ascii_uppercase();
        let table: [(ValueRef<'_>, Option<[u8; 32]>); 7] = [
            (ValueRef::Blob(&bytes), Some(bytes)),
            (ValueRef::Text(SUM.as_bytes()), Some(bytes)),
            (ValueRef::Text(upper.as_bytes()), Some(bytes)),
            (ValueRef::Blob(&bytes[1..]), None),
            (ValueRef::Text(b"abc"), None),
            (ValueRef::Null, None),
            (ValueRef::Integer(7), None),
        ];
        for (stored, want) in table {
            assert_eq!(as_sha256(stored), want, "{stored:?}");
        }
    }

    /// What each kind of checksum is stored as, and that it reads back unchanged.
    #[test]
    fn a_sha256_is_stored_as_bytes_and_anything_else_as_text_and_each_reads_back_as_it_was() {
        let upper = SUM.to_ascii_uppercase();
        let cases: [(&str, &str); 5] = [
            (SUM, "blob"),
            (&upper, "text"),
            (&SUM[1..], "text"),
            ("abc", "text"),
            ("", "text"),
        ];
        let c = Connection::open_in_memory().unwrap();
        for (sum, stored_as) in cases {
            let (kind, back): (String, Hex) = c
                .query_row("SELECT typeof(?1), ?1", [Form::Bytes.key(sum)], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            assert_eq!(
                (kind.as_str(), back.0.as_str()),
                (stored_as, sum),
                "{sum:?}"
            );
            let kind: String = c
                .query_row("SELECT typeof(?1)", [Form::Text.key(sum)], |r| r.get(0))
                .unwrap();
            assert_eq!(kind, "text", "{sum:?} bound as text");
        }
    }

    /// The upgrade turns exactly the checksums `Key::new` would bind as bytes
    /// into those bytes, so a lookup after it finds every row.
    #[test]
    fn the_upgrade_converts_what_a_key_would_bind_as_bytes_and_nothing_else() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE synced (checksum TEXT PRIMARY KEY) WITHOUT ROWID;
             CREATE TABLE audit (checksum TEXT NOT NULL);
             CREATE TABLE path_cache (checksum TEXT NOT NULL);",
        )
        .unwrap();
        let upper = SUM.to_ascii_uppercase();
        let sums = [SUM, upper.as_str(), "abc", &SUM[2..]];
        for table in ["synced", "audit", "path_cache"] {
            for sum in sums {
                c.execute(&format!("INSERT INTO {table} VALUES (?1)"), [sum])
                    .unwrap();
            }
        }
        c.execute_batch(TO_BYTES).unwrap();
        for table in ["synced", "audit", "path_cache"] {
            for sum in sums {
                let found: bool = c
                    .query_row(
                        &format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE checksum = ?1)"),
                        [Form::Bytes.key(sum)],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert!(found, "{table}: {sum:?} not found after the upgrade");
            }
            let blobs: i64 = c
                .query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE typeof(checksum) = 'blob'"),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(blobs, 1, "{table}");
        }
    }

    #[test]
    fn a_blob_that_is_not_32_bytes_is_an_error_not_a_panic() {
        let c = Connection::open_in_memory().unwrap();
        let read = c.query_row("SELECT x'0102'", [], |r| r.get::<_, Hex>(0));
        assert!(read.is_err());
    }
}
