//! Discovery: walk the folder and yield every candidate CV with its stamp, streaming.

use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::Instant;

use walkdir::WalkDir;

use crate::filter;
use crate::state::FileStamp;

/// One thing the walk found.
#[derive(Debug)]
pub enum Found {
    /// A file whose name makes it a candidate CV, with when its stamp was taken
    /// (`None`: known complete, as when its writer closed it).
    File {
        path: PathBuf,
        stamp: FileStamp,
        seen: Option<Instant>,
    },
    /// Something that could not be read (a folder without permission, a vanished entry).
    Unreadable { path: PathBuf, reason: String },
}

/// Walk `root` recursively, calling `emit` for each candidate, without
/// collecting the tree. Symlinks are not followed unless `follow_links`, so by
/// default a link cannot lead the agent outside the folder; when followed, a
/// link loop is reported as unreadable, not walked forever. Stops early when
/// `emit` returns false.
pub fn walk(root: &Path, follow_links: bool, mut emit: impl FnMut(Found) -> bool) {
    let entries = WalkDir::new(root)
        .follow_links(follow_links)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !(e.file_type().is_dir() && is_hidden(e.file_name())));
    for entry in entries {
        let found = match entry {
            Err(e) => {
                let path = e.path().unwrap_or(root).to_path_buf();
                let reason = e
                    .io_error()
                    .map_or_else(|| e.to_string(), |io| io.to_string());
                Found::Unreadable { path, reason }
            }
            Ok(entry) => {
                if !entry.file_type().is_file() || !filter::is_candidate_path(entry.path()) {
                    continue;
                }
                match entry.metadata() {
                    Ok(meta) => Found::File {
                        stamp: stamp_of(entry.path(), &meta),
                        path: entry.into_path(),
                        seen: Some(Instant::now()),
                    },
                    Err(e) => Found::Unreadable {
                        path: entry.into_path(),
                        reason: e.to_string(),
                    },
                }
            }
        };
        if !emit(found) {
            return;
        }
    }
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(filter::is_skipped_dir)
}

/// The stamp of a file from its metadata.
#[cfg(unix)]
pub fn stamp_of(_path: &Path, meta: &Metadata) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    FileStamp {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.len(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
    }
}

/// Portable fallback: no inode, so the path stands in for the file's identity.
#[cfg(not(unix))]
pub fn stamp_of(path: &Path, meta: &Metadata) -> FileStamp {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);
    FileStamp {
        dev: 0,
        ino: h.finish(),
        size: meta.len(),
        mtime_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_candidates_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("Sales/deep")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        for name in [
            "a.pdf",
            "Sales/b.DOCX",
            "Sales/deep/c.md",
            "x.jpg",
            "~$d.docx",
            ".git/e.pdf",
        ] {
            std::fs::write(root.join(name), b"x").unwrap();
        }
        let mut names = Vec::new();
        walk(root, false, |f| {
            if let Found::File { path, stamp, .. } = f {
                assert_eq!(stamp.size, 1);
                names.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            true
        });
        names.sort();
        assert_eq!(names, ["Sales/b.DOCX", "Sales/deep/c.md", "a.pdf"]);
    }
}
