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
    serde_json::from_str::<Checksums>(text)
        .map(|Checksums(sums)| sums)
        .map_err(|e| StateError::File {
            path: path.to_path_buf(),
            message: format!("expected a JSON array of checksums: {e}"),
        })
}

/// The history's checksums, lowercased, each checked as it is read: the file
/// is never held as a tree of JSON values, which at a million entries would
/// cost twice the memory of the checksums themselves (issue 12).
struct Checksums(Vec<String>);

impl<'de> serde::Deserialize<'de> for Checksums {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_seq(ChecksumsVisitor)
    }
}

struct ChecksumsVisitor;

impl<'de> serde::de::Visitor<'de> for ChecksumsVisitor {
    type Value = Checksums;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of checksums")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Checksums, A::Error> {
        let mut sums = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(entry) = seq.next_element::<serde_json::Value>()? {
            match entry.as_str() {
                Some(s) if is_sha256_hex(s) => sums.push(s.to_ascii_lowercase()),
                _ => {
                    let i = sums.len();
                    let problem = format!("entry {i} is not a SHA-256 checksum: {entry}");
                    return Err(serde::de::Error::custom(problem));
                }
            }
        }
        Ok(Checksums(sums))
    }
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
        for (text, problem) in [
            ("{}", "expected a JSON array of checksums"),
            (
                "[\"nothex\"]",
                "entry 0 is not a SHA-256 checksum: \"nothex\"",
            ),
            (
                &format!("[\"{}\", 1]", "a".repeat(64)),
                "entry 1 is not a SHA-256 checksum: 1",
            ),
            ("not json", "expected a JSON array of checksums"),
        ] {
            std::fs::write(&path, text).unwrap();
            let msg = read(&path).unwrap_err().to_string();
            assert!(msg.contains(HISTORY_FILE), "{text}: {msg}");
            assert!(msg.contains(problem), "{text}: {msg}");
        }
    }
}
