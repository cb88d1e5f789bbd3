//! `privacy_redact_logs`: how a file is named in logs, the status page and `/health` —
//! its folder and the first 12 hex characters of its checksum, never its name or email.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Set once from the config when the agent starts; read wherever a file is named.
static REDACT: AtomicBool = AtomicBool::new(false);
/// While redacting: the checksum prefix of each file hashed, so that reports which
/// carry only the path can still name the file by it.
static KNOWN: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);
/// The most files [`KNOWN`] holds before it starts again (files come and go for months).
const MAX_KNOWN: usize = 100_000;

/// Turn redaction on or off for this process (`privacy_redact_logs`).
pub fn set_redact_logs(on: bool) {
    REDACT.store(on, Ordering::Relaxed);
}

pub fn redacting() -> bool {
    REDACT.load(Ordering::Relaxed)
}

/// While redacting, remember the checksum of the file at `path`.
pub fn note(path: &Path, checksum: &str) {
    if !redacting() {
        return;
    }
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    let known = known.get_or_insert_with(HashMap::new);
    if known.len() >= MAX_KNOWN {
        known.clear();
    }
    let prefix = checksum.get(..12).unwrap_or(checksum);
    known.insert(path.to_path_buf(), prefix.to_string());
}

/// `path` as logs show it: whole, or redacted as [`redacted`] says (with the
/// checksum [`note`]d for it when none is given).
pub fn file(path: &Path, checksum: Option<&str>) -> String {
    if !redacting() {
        return path.display().to_string();
    }
    let noted = checksum.is_none().then(|| known(path)).flatten();
    redacted(path, checksum.or(noted.as_deref()))
}

/// `path` relative to `root`, as the status page shows it: whole, or redacted.
pub fn file_in(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    if redacting() {
        redacted(rel, known(path).as_deref())
    } else {
        rel.display().to_string()
    }
}

fn known(path: &Path) -> Option<String> {
    let known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    known.as_ref().and_then(|k| k.get(path).cloned())
}

/// The folder, then `[` the checksum's first 12 hex characters `]` (or `[file]`
/// when it is not known yet).
pub fn redacted(path: &Path, checksum: Option<&str>) -> String {
    let folder = path
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let id = checksum
        .and_then(|s| s.get(..12))
        .filter(|s| s.len() == 12)
        .map_or_else(|| "file".to_string(), |s| format!("#{s}"));
    if folder.is_empty() {
        format!("[{id}]")
    } else {
        format!("{folder}/[{id}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_emails_never_show() {
        let sum = "0123456789abcdef".repeat(4);
        let table = [
            (
                "/cvs/Nurse/jane_jane@x.org.pdf",
                Some(sum.as_str()),
                "/cvs/Nurse/[#0123456789ab]",
            ),
            ("/cvs/Nurse/jane_jane@x.org.pdf", None, "/cvs/Nurse/[file]"),
            ("Nurse/jane.pdf", Some("short"), "Nurse/[file]"),
            ("jane.pdf", Some(sum.as_str()), "[#0123456789ab]"),
        ];
        for (path, sum, want) in table {
            assert_eq!(redacted(Path::new(path), sum), want, "{path}");
        }
    }
}
