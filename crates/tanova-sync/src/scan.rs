//! Discovery: walk the folder and yield every candidate CV with its stamp, streaming.

use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

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
///
/// A folder's files are looked at while it is open, each relative to it
/// (`DirEntry::metadata`: `statx` on the open folder and the bare name, where
/// a stat by full path, as `walkdir` took, looks up every folder on the way
/// again), then its subfolders are walked, one folder open at a time.
pub fn walk(root: &Path, follow_links: bool, mut emit: impl FnMut(Found) -> bool) {
    let mut pending = vec![Folder {
        path: root.to_path_buf(),
        above: None,
    }];
    while let Some(folder) = pending.pop() {
        let mut subfolders = Vec::new();
        if !read_folder(&folder, follow_links, &mut subfolders, &mut emit) {
            return;
        }
        // Popped in the order listed.
        pending.extend(subfolders.into_iter().rev());
    }
}

/// A folder still to read. When links are followed, with the folders above it
/// (as reached, canonical), to tell a link loop.
struct Folder {
    path: PathBuf,
    above: Option<Rc<Above>>,
}

struct Above {
    canonical: PathBuf,
    parent: Option<Rc<Above>>,
}

/// Emit the candidates in `folder` and list its subfolders; false: `emit` said stop.
fn read_folder(
    folder: &Folder,
    follow_links: bool,
    subfolders: &mut Vec<Folder>,
    emit: &mut impl FnMut(Found) -> bool,
) -> bool {
    let unreadable = |path: &Path, e: std::io::Error| Found::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let above = match follow_links.then(|| here(folder)).transpose() {
        Ok(above) => above,
        Err(found) => return emit(found),
    };
    let entries = match std::fs::read_dir(&folder.path) {
        Ok(entries) => entries,
        Err(e) => return emit(unreadable(&folder.path, e)),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            // The listing itself failed: report the folder, keep what was found.
            Err(e) => return emit(unreadable(&folder.path, e)),
        };
        let name = entry.file_name();
        let path = path_in(&folder.path, &name);
        // The listing gives the kind (a stat only where the file system does
        // not say); a followed link is looked at through.
        let looked = entry.file_type().and_then(|kind| match kind.is_symlink() {
            true if follow_links => std::fs::metadata(&path).map(|m| (m.file_type(), Some(m))),
            _ => Ok((kind, None)),
        });
        let (kind, linked) = match looked {
            Ok(looked) => looked,
            Err(e) => {
                if !emit(unreadable(&path, e)) {
                    return false;
                }
                continue;
            }
        };
        if kind.is_dir() {
            if !is_hidden(&name) {
                subfolders.push(Folder {
                    path,
                    above: above.clone(),
                });
            }
            continue;
        }
        if !kind.is_file() || !filter::is_candidate_path(&path) {
            continue;
        }
        let found = match linked.map_or_else(|| entry.metadata(), Ok) {
            Ok(meta) => Found::File {
                stamp: stamp_of(&path, &meta),
                path,
                seen: Some(Instant::now()),
            },
            Err(e) => unreadable(&path, e),
        };
        if !emit(found) {
            return false;
        }
    }
    true
}

/// `folder`/`name`, allocated once at its length: `Path::join` grows its
/// buffer as it goes, and each growth (a `realloc` on the walk's thread)
/// contended with the pipeline freeing the paths of the files before it.
fn path_in(folder: &Path, name: &std::ffi::OsStr) -> PathBuf {
    let mut path = PathBuf::with_capacity(folder.as_os_str().len() + 1 + name.len());
    path.push(folder);
    path.push(name);
    path
}

/// `folder` among the folders above it, or the loop it closes: a folder
/// reached again through a link inside itself.
fn here(folder: &Folder) -> Result<Rc<Above>, Found> {
    let canonical = std::fs::canonicalize(&folder.path).map_err(|e| Found::Unreadable {
        path: folder.path.clone(),
        reason: e.to_string(),
    })?;
    let mut up = folder.above.as_deref();
    while let Some(above) = up {
        if above.canonical == canonical {
            return Err(Found::Unreadable {
                path: folder.path.clone(),
                reason: format!(
                    "a link loop: it leads back to {}, a folder above it",
                    canonical.display()
                ),
            });
        }
        up = above.parent.as_deref();
    }
    Ok(Rc::new(Above {
        canonical,
        parent: folder.above.clone(),
    }))
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

    #[test]
    fn a_file_found_has_the_stamp_its_full_path_gives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Sales/2024/cv.pdf");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"a cv").unwrap();
        let mut found = Vec::new();
        walk(dir.path(), false, |f| {
            found.push(f);
            true
        });
        let by_path = stamp_of(&path, &std::fs::symlink_metadata(&path).unwrap());
        assert!(
            matches!(&found[..], [Found::File { path: p, stamp, .. }] if *p == path && *stamp == by_path),
            "{found:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn links_are_followed_only_when_asked_and_a_loop_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("cvs"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("Sales")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("Sales/a.pdf"), b"a").unwrap();
        std::fs::write(outside.join("b.pdf"), b"b").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("Sales/out")).unwrap();
        std::os::unix::fs::symlink(&root, root.join("Sales/loop")).unwrap();
        std::os::unix::fs::symlink(root.join("gone.pdf"), root.join("broken.pdf")).unwrap();
        let walked = |follow| {
            let (mut files, mut unreadable) = (Vec::new(), Vec::new());
            walk(&root, follow, |f| {
                match f {
                    Found::File { path, .. } => files.push(path),
                    Found::Unreadable { path, reason } => unreadable.push((path, reason)),
                }
                true
            });
            files.sort();
            (files, unreadable)
        };
        assert_eq!(walked(false), (vec![root.join("Sales/a.pdf")], vec![]));
        let (files, unreadable) = walked(true);
        assert_eq!(
            files,
            [root.join("Sales/a.pdf"), root.join("Sales/out/b.pdf")]
        );
        let mut unreadable: Vec<_> = unreadable
            .into_iter()
            .map(|(path, reason)| (path, reason.contains("loop")))
            .collect();
        unreadable.sort();
        assert_eq!(
            unreadable,
            [
                (root.join("Sales/loop"), true),
                (root.join("broken.pdf"), false)
            ]
        );
    }

    #[test]
    fn the_walk_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.pdf", "b.pdf", "sub/c.pdf"] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        let mut seen = 0;
        walk(dir.path(), false, |_| {
            seen += 1;
            false
        });
        assert_eq!(seen, 1);
    }
}
