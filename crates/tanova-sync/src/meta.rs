//! Metadata sent with an upload, derived from the path: job hint, email and MIME type.

use std::path::Path;

/// Parent folder names that say nothing about the job.
const GENERIC_FOLDERS: &[&str] = &["CVs", "Resumes", "Candidates"];

/// The name of the file's parent folder, unless it is generic or is the
/// watched folder itself (the Python script sent the root's own name, which
/// says nothing about the job).
pub fn job_hint(root: &Path, path: &Path) -> Option<String> {
    let parent = path.parent()?;
    if parent == root {
        return None;
    }
    let name = parent.file_name()?.to_str()?;
    if GENERIC_FOLDERS.contains(&name) {
        return None;
    }
    Some(name.to_string())
}

/// The first `_`-separated part of the file stem that contains `@`:
/// `john_doe_john@example.com.pdf` → `john@example.com`.
pub fn email(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    stem.split('_')
        .find(|part| part.contains('@'))
        .map(str::to_string)
}

/// The MIME type the service expects for a supported extension.
pub fn mime_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("pdf") => "application/pdf",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Some("doc") => "application/msword",
        Some("txt") => "text/plain",
        Some("md") => "text/markdown",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn job_hints() {
        let root = PathBuf::from("/data/cvs-root");
        let table = [
            ("/data/cvs-root/cv.pdf", None),
            ("/data/cvs-root/Sales Manager/cv.pdf", Some("Sales Manager")),
            ("/data/cvs-root/Engineering/CVs/cv.pdf", None),
            ("/data/cvs-root/Resumes/cv.pdf", None),
            ("/data/cvs-root/Candidates/cv.pdf", None),
            ("/data/cvs-root/2026/Nurse/cv.pdf", Some("Nurse")),
        ];
        for (path, want) in table {
            assert_eq!(job_hint(&root, Path::new(path)).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn emails() {
        let table = [
            ("john_doe_john@example.com.pdf", Some("john@example.com")),
            ("a@b.co_second@c.org.docx", Some("a@b.co")),
            ("jane doe.pdf", None),
            ("jane_doe.pdf", None),
        ];
        for (name, want) in table {
            assert_eq!(email(Path::new(name)).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn mime_types() {
        let table = [
            ("a.pdf", "application/pdf"),
            ("a.PDF", "application/pdf"),
            (
                "a.docx",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            ),
            ("a.doc", "application/msword"),
            ("a.txt", "text/plain"),
            ("a.md", "text/markdown"),
        ];
        for (name, want) in table {
            assert_eq!(mime_type(Path::new(name)), want, "{name}");
        }
    }
}
