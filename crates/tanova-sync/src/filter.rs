//! Which files are CVs: supported extensions, and the hidden, lock and partial files to leave alone.

use std::path::Path;

/// Extensions the service accepts, lowercase.
pub const SUPPORTED_EXTENSIONS: &[&str] = &["pdf", "docx", "doc", "txt", "md"];

/// Default size limit: the service refuses larger documents.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 50 * 1024 * 1024;

/// True when the name looks like a CV we should consider: a supported
/// extension (any case), not hidden, not an editor lock or partial download.
pub fn is_candidate_name(name: &str) -> bool {
    if name.starts_with('.') || name.starts_with("~$") {
        return false;
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => {
            let ext = ext.to_ascii_lowercase();
            SUPPORTED_EXTENSIONS.contains(&ext.as_str())
        }
        _ => false,
    }
}

/// True for directories the walk should not enter: hidden ones (`.git`, `.Trash`).
pub fn is_skipped_dir(name: &str) -> bool {
    name.starts_with('.')
}

/// True when the path's file name is a candidate (see [`is_candidate_name`]).
/// A name that is not valid UTF-8 is judged by its lossy form: its extension is still readable.
pub fn is_candidate_path(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| is_candidate_name(&n.to_string_lossy()))
}

/// Why a candidate with this size is not uploaded, if it is not.
pub fn size_problem(size: u64, limit: u64) -> Option<String> {
    if size == 0 {
        Some("empty file".to_string())
    } else if size > limit {
        Some(format!(
            "larger than the size limit ({} > {})",
            human_bytes(size),
            human_bytes(limit)
        ))
    } else {
        None
    }
}

/// Bytes in the largest unit that keeps the number readable (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_names() {
        let table = [
            ("cv.pdf", true),
            ("CV.PDF", true),
            ("letter.Docx", true),
            ("old.doc", true),
            ("notes.txt", true),
            ("readme.md", true),
            ("photo.jpg", false),
            ("archive.pdf.zip", false),
            ("noext", false),
            (".pdf", false),
            (".hidden.pdf", false),
            ("~$draft.docx", false),
            (".~lock.cv.docx#", false),
            ("cv.pdf.tmp", false),
            ("cv.pdf.crdownload", false),
            ("cv.pdf.part", false),
            ("cv.docx~", false),
        ];
        for (name, want) in table {
            assert_eq!(is_candidate_name(name), want, "{name}");
        }
    }

    #[test]
    fn size_problems() {
        assert_eq!(size_problem(0, 10).as_deref(), Some("empty file"));
        assert_eq!(size_problem(10, 10), None);
        assert_eq!(
            size_problem(60 * 1024 * 1024, DEFAULT_MAX_FILE_SIZE).as_deref(),
            Some("larger than the size limit (60.0 MiB > 50.0 MiB)")
        );
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
