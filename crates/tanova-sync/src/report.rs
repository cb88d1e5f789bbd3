//! What happened to each file, the running tally, and the reporter trait the core reports through.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

/// The end of one file's journey through the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Uploaded in this run.
    Uploaded {
        candidate_id: Option<String>,
        bytes: u64,
    },
    /// Already synced by an earlier run (or the legacy script).
    AlreadySynced,
    /// The same bytes as another file of this run, which carries them.
    SameContent,
    /// The server already had these bytes.
    OnServer { candidate_name: Option<String> },
    /// Not a CV to upload, and not a failure (empty, vanished).
    Ignored { reason: String },
    /// Could not be delivered; the reason is recorded.
    Failed { reason: String, permanent: bool },
}

/// A file that was not uploaded, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileNote {
    pub path: String,
    pub reason: String,
}

/// Counts of one run; `--json` prints it as is.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Candidate files found (supported extension, not hidden or partial).
    pub found: u64,
    /// Uploaded in this run.
    pub synced: u64,
    /// Already synced before, or the same bytes as another file of this run.
    pub skipped: u64,
    /// Known to the server already (check-duplicate said so).
    pub duplicates: u64,
    pub failed: u64,
    /// Empty or vanished files.
    pub ignored: u64,
    pub bytes_uploaded: u64,
    /// Files read to compute their checksum (the rest came from the cache).
    pub hashed: u64,
    pub elapsed_s: f64,
    pub failures: Vec<FileNote>,
    pub ignored_files: Vec<FileNote>,
    /// Why the run stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl Summary {
    /// Files that reached an outcome.
    pub fn processed(&self) -> u64 {
        self.synced + self.skipped + self.duplicates + self.failed + self.ignored
    }

    /// Count an outcome.
    pub fn add(&mut self, path: &Path, outcome: &Outcome) {
        let note = |reason: &str| FileNote {
            path: path.display().to_string(),
            reason: reason.to_string(),
        };
        match outcome {
            Outcome::Uploaded { bytes, .. } => {
                self.synced += 1;
                self.bytes_uploaded += bytes;
            }
            Outcome::AlreadySynced | Outcome::SameContent => self.skipped += 1,
            Outcome::OnServer { .. } => self.duplicates += 1,
            Outcome::Ignored { reason } => {
                self.ignored += 1;
                self.ignored_files.push(note(reason));
            }
            Outcome::Failed { reason, .. } => {
                self.failed += 1;
                self.failures.push(note(reason));
            }
        }
    }
}

/// Where the core sends progress. Only the CLI owns the terminal.
pub trait Reporter: Send + Sync {
    /// A candidate was found; `tally` counts it.
    fn found(&self, _tally: &Summary) {}
    /// A file reached its outcome; `tally` includes it.
    fn finished(&self, _path: &Path, _outcome: &Outcome, _tally: &Summary) {}
    /// A transient failure; the file is retried after `delay`.
    fn retrying(&self, _path: &Path, _attempt: u32, _reason: &str, _delay: Duration) {}
}

/// A reporter that reports nothing.
pub struct Silent;

impl Reporter for Silent {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_land_in_their_counts() {
        let mut s = Summary::default();
        let p = Path::new("a.pdf");
        s.add(
            p,
            &Outcome::Uploaded {
                candidate_id: None,
                bytes: 10,
            },
        );
        s.add(p, &Outcome::AlreadySynced);
        s.add(p, &Outcome::SameContent);
        s.add(
            p,
            &Outcome::OnServer {
                candidate_name: None,
            },
        );
        s.add(
            p,
            &Outcome::Ignored {
                reason: "empty file".into(),
            },
        );
        s.add(
            p,
            &Outcome::Failed {
                reason: "no".into(),
                permanent: true,
            },
        );
        assert_eq!(
            (s.synced, s.skipped, s.duplicates, s.ignored, s.failed),
            (1, 2, 1, 1, 1)
        );
        assert_eq!(s.bytes_uploaded, 10);
        assert_eq!(s.processed(), 6);
        assert_eq!(
            s.failures,
            vec![FileNote {
                path: "a.pdf".into(),
                reason: "no".into()
            }]
        );
    }
}
