//! What the emulated server knows: candidates by checksum, and the log of uploads.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One successful upload, as served by `GET /_emulator/uploads`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub filename: String,
    /// The file part's MIME type as sent; empty when the client sent none.
    pub content_type: String,
    pub checksum: String,
    pub size: u64,
    pub job_hint: Option<String>,
    pub email: Option<String>,
    pub candidate_id: String,
    /// The server already knew this checksum.
    pub duplicate: bool,
}

/// A candidate the server holds.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub id: String,
    pub name: String,
    /// Created by an upload rather than by a preload.
    uploaded: bool,
}

/// The fields of an accepted upload, before it is assigned a candidate.
pub(crate) struct NewUpload {
    pub filename: String,
    pub content_type: String,
    pub checksum: String,
    pub size: u64,
    pub job_hint: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    candidates: HashMap<String, Candidate>,
    uploads: Vec<UploadRecord>,
    last_id: u64,
}

impl Store {
    pub fn lookup(&self, checksum: &str) -> Option<&Candidate> {
        self.candidates.get(checksum)
    }

    /// Makes the server already know `checksum`, as if uploaded in an earlier run.
    pub fn preload(&mut self, checksum: String) {
        if !self.candidates.contains_key(&checksum) {
            let id = self.next_id();
            let name = "Existing Candidate".to_owned();
            let candidate = Candidate {
                id,
                name,
                uploaded: false,
            };
            self.candidates.insert(checksum, candidate);
        }
    }

    /// Stores an upload; a known checksum reuses its candidate, as the real server dedupes.
    pub fn record(&mut self, upload: NewUpload) -> UploadRecord {
        let (candidate_id, duplicate) = match self.candidates.get_mut(&upload.checksum) {
            Some(known) => {
                known.uploaded = true;
                (known.id.clone(), true)
            }
            None => {
                let id = self.next_id();
                let candidate = Candidate {
                    id: id.clone(),
                    name: candidate_name(&upload.filename),
                    uploaded: true,
                };
                self.candidates.insert(upload.checksum.clone(), candidate);
                (id, false)
            }
        };
        let record = UploadRecord {
            filename: upload.filename,
            content_type: upload.content_type,
            checksum: upload.checksum,
            size: upload.size,
            job_hint: upload.job_hint,
            email: upload.email,
            candidate_id,
            duplicate,
        };
        self.uploads.push(record.clone());
        record
    }

    pub fn uploads(&self) -> &[UploadRecord] {
        &self.uploads
    }

    /// Distinct checksums that arrived by upload (preloads excluded).
    pub fn unique_checksums(&self) -> u64 {
        self.candidates.values().filter(|c| c.uploaded).count() as u64
    }

    fn next_id(&mut self) -> String {
        self.last_id += 1;
        format!("cand_{}", self.last_id)
    }
}

/// A plausible person's name from a CV filename: the stem's words, without
/// email addresses or numbers, capitalised (`john_doe_john@x.com.pdf` → `John Doe`).
pub(crate) fn candidate_name(filename: &str) -> String {
    let stem = Path::new(filename)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(filename);
    let words: Vec<String> = stem
        .split(['_', '-', ' '])
        .filter(|w| !w.is_empty() && !w.contains('@') && w.chars().all(char::is_alphabetic))
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |first| {
                first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect()
            })
        })
        .collect();
    if words.is_empty() {
        "Unnamed Candidate".to_owned()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(name: &str, checksum: &str) -> NewUpload {
        NewUpload {
            filename: name.to_owned(),
            content_type: "application/pdf".to_owned(),
            checksum: checksum.to_owned(),
            size: 1,
            job_hint: None,
            email: None,
        }
    }

    #[test]
    fn names_from_filenames() {
        assert_eq!(candidate_name("john_doe_john@example.com.pdf"), "John Doe");
        assert_eq!(candidate_name("MARIA-lopez CV 2024.docx"), "Maria Lopez Cv");
        assert_eq!(candidate_name("1234.pdf"), "Unnamed Candidate");
    }

    #[test]
    fn duplicates_reuse_the_candidate() {
        let mut store = Store::default();
        store.preload("p".to_owned());
        let first = store.record(upload("a.pdf", "x"));
        let again = store.record(upload("b.pdf", "x"));
        let known = store.record(upload("c.pdf", "p"));
        assert!(!first.duplicate && again.duplicate && known.duplicate);
        assert_eq!(first.candidate_id, again.candidate_id);
        assert_eq!(known.candidate_id, "cand_1");
        assert_eq!(store.unique_checksums(), 2);
        assert_eq!(store.lookup("x").unwrap().name, "A");
    }
}
