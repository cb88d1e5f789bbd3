//! The Python script's history file: a JSON array of checksum strings.

use sha2::Digest;
use std::path::Path;

use super::{Result, StateError};

/// The legacy history's file name inside the state directory.
pub const HISTORY_FILE: &str = "sync_history.json";

/// Read the checksums of a legacy history file, lowercased; entries that are
/// not SHA-256 hex are an error naming the file, since a wrong file would
/// otherwise be taken for an empty history.
pub fn read(path: &Path) -> Result<Vec<String>> {
    read_hashed(path).map(|(sums, _)| sums)
}

/// [`read`], with the SHA-256 of the file's bytes: a file is imported again only when they change.
pub fn read_hashed(path: &Path) -> Result<(Vec<String>, String)> {
    let err = |message: String| StateError::File {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    // Not crate::hash: the state stays a leaf that the pipeline depends on.
    let hash = hex::encode(sha2::Sha256::digest(&bytes));
    let text = String::from_utf8(bytes).map_err(|_| err("is not UTF-8 text".to_string()))?;
    parse(path, &text).map(|sums| (sums, hash))
}

fn parse(path: &Path, text: &str) -> Result<Vec<String>> {
    let err = |message: String| StateError::File {
        path: path.to_path_buf(),
        message,
    };
    let entries: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| err(format!("expected a JSON array of checksums: {e}")))?;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v.as_str() {
            Some(s) if is_sha256_hex(s) => Ok(s.to_ascii_lowercase()),
            _ => Err(err(format!("entry {i} is not a SHA-256 checksum: {v}"))),
        })
        .collect()
}

/// Write checksums as a legacy history file, so a user can switch back to the script.
pub fn write(path: &Path, checksums: &[String]) -> Result<()> {
    let text = serde_json::to_string_pretty(checksums).expect("strings serialize");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .map_err(|e| StateError::File {
            path: path.to_path_buf(),
            message: format!("cannot write: {e}"),
        })
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HISTORY_FILE);
        let sums = vec!["a".repeat(64), "0123456789abcdef".repeat(4)];
        write(&path, &sums).unwrap();
        assert_eq!(read(&path).unwrap(), sums);
    }

    #[test]
    fn uppercase_is_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HISTORY_FILE);
        std::fs::write(&path, format!("[\"{}\"]", "AB".repeat(32))).unwrap();
        assert_eq!(read(&path).unwrap(), vec!["ab".repeat(32)]);
    }

    #[test]
    fn bad_entries_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HISTORY_FILE);
        for text in ["{}", "[\"nothex\"]", "[1]", "not json"] {
            std::fs::write(&path, text).unwrap();
            let msg = read(&path).unwrap_err().to_string();
            assert!(msg.contains(HISTORY_FILE), "{text}: {msg}");
        }
    }
}
