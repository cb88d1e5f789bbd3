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
    /// Another agent holds the claim on these bytes and is delivering them;
    /// a later rescan or event finds them synced, or takes over an expired claim.
    Deferred { reason: String },
    /// Not a CV to upload, and not a failure (empty, vanished).
    Ignored { reason: String },
    /// A suppression rule (`tanova-sync forget`) covers the file: never uploaded.
    /// `rule` names it by id and kind, never by its value.
    Suppressed { rule: String },
    /// `--dry-run`: would be uploaded; nothing was sent.
    WouldUpload { bytes: u64 },
    /// Could not be delivered; the reason is recorded.
    Failed { reason: String, kind: FailKind },
}

/// How a failure counts toward holding the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// The server refused these bytes (a 4xx): held until `tanova-sync retry`.
    Refused,
    /// The file could not be read, or kept changing: counts toward `max_attempts`.
    Counted,
    /// The service or the ledger did not answer: never counts, so an outage holds no file.
    Transient,
}

impl FailKind {
    pub fn is_permanent(self) -> bool {
        self == FailKind::Refused
    }

    /// Whether the failure counts toward `max_attempts`.
    pub fn counts(self) -> bool {
        self != FailKind::Transient
    }
}

/// Something that stops uploads for every file, as `/health` and the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    /// The service refused the API key (or its upload permission).
    KeyRejected,
    /// The service does not answer.
    ServiceUnreachable,
    /// The shared ledger (Redis) does not answer.
    LedgerUnreachable,
    /// An outcome could not be recorded in the state.
    StateUnwritable,
    /// The CV folder is gone or is not a folder.
    FolderMissing,
    /// The service answers its health check, but no delivery has ended well
    /// for a while and attempts keep failing: every upload stops there too.
    UploadsFailing,
}

impl Problem {
    pub const ALL: [Problem; 6] = [
        Problem::KeyRejected,
        Problem::StateUnwritable,
        Problem::FolderMissing,
        Problem::LedgerUnreachable,
        Problem::ServiceUnreachable,
        Problem::UploadsFailing,
    ];

    /// The `status` word of `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::KeyRejected => "key_rejected",
            Problem::ServiceUnreachable => "service_unreachable",
            Problem::LedgerUnreachable => "ledger_unreachable",
            Problem::StateUnwritable => "state_unwritable",
            Problem::FolderMissing => "folder_missing",
            Problem::UploadsFailing => "uploads_failing",
        }
    }

    /// What is wrong and what to do, for people.
    pub fn message(self) -> &'static str {
        match self {
            Problem::KeyRejected => {
                "the service rejected the API key: uploads are paused until a valid key is \
                 put in the config file or api_key_file"
            }
            Problem::ServiceUnreachable => {
                "the Tanova service does not answer: uploads wait and resume when it does"
            }
            Problem::LedgerUnreachable => {
                "the shared Redis ledger does not answer: uploads wait until they can be recorded"
            }
            Problem::StateUnwritable => {
                "the state database cannot be written: check the disk and the state directory"
            }
            Problem::FolderMissing => "the CV folder is gone or is not a folder",
            Problem::UploadsFailing => {
                "the Tanova service answers, but no upload has succeeded for a while: files wait \
                 and are tried again"
            }
        }
    }

    /// A short label for the status page.
    pub fn badge(self) -> &'static str {
        match self {
            Problem::KeyRejected => "paused: API key rejected",
            Problem::ServiceUnreachable => "waiting for the service",
            Problem::LedgerUnreachable => "waiting for Redis",
            Problem::StateUnwritable => "state not writable",
            Problem::FolderMissing => "CV folder missing",
            Problem::UploadsFailing => "uploads failing",
        }
    }
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
    /// Left to another agent that was delivering the same bytes (shared ledger only).
    pub deferred: u64,
    pub failed: u64,
    /// Empty or vanished files.
    pub ignored: u64,
    /// Kept from upload by a suppression rule (`tanova-sync forget`).
    pub suppressed: u64,
    /// `--dry-run`: files that would be uploaded.
    #[serde(skip_serializing_if = "is_zero")]
    pub would_upload: u64,
    pub bytes_uploaded: u64,
    /// Files read to compute their checksum (the rest came from the cache).
    pub hashed: u64,
    pub elapsed_s: f64,
    /// One note per file (its latest reason), so a long watch keeps no more than the folder holds.
    pub failures: Vec<FileNote>,
    pub ignored_files: Vec<FileNote>,
    /// Why the run stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Where each path's note is in `failures` (false) or `ignored_files` (true).
    #[serde(skip)]
    pub(crate) noted: std::collections::HashMap<(bool, String), usize>,
}

impl Summary {
    /// Files that reached an outcome.
    pub fn processed(&self) -> u64 {
        self.synced
            + self.skipped
            + self.duplicates
            + self.deferred
            + self.failed
            + self.ignored
            + self.suppressed
    }

    /// Count an outcome.
    pub fn add(&mut self, path: &Path, outcome: &Outcome) {
        let mut note = |ignored: bool, reason: &str| {
            let shown = crate::privacy::redact::file(path, None);
            let notes = if ignored {
                &mut self.ignored_files
            } else {
                &mut self.failures
            };
            match self.noted.get(&(ignored, shown.clone())) {
                Some(&i) => notes[i].reason = reason.to_string(),
                None => {
                    self.noted.insert((ignored, shown.clone()), notes.len());
                    notes.push(FileNote {
                        path: shown,
                        reason: reason.to_string(),
                    });
                }
            }
        };
        match outcome {
            Outcome::Uploaded { bytes, .. } => {
                self.synced += 1;
                self.bytes_uploaded += bytes;
            }
            Outcome::AlreadySynced | Outcome::SameContent => self.skipped += 1,
            Outcome::OnServer { .. } => self.duplicates += 1,
            Outcome::Deferred { .. } => self.deferred += 1,
            Outcome::WouldUpload { .. } => self.would_upload += 1,
            Outcome::Suppressed { .. } => self.suppressed += 1,
            Outcome::Ignored { reason } => {
                self.ignored += 1;
                note(true, reason);
            }
            Outcome::Failed { reason, .. } => {
                self.failed += 1;
                note(false, reason);
            }
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where the core sends progress. Only the CLI owns the terminal.
pub trait Reporter: Send + Sync {
    /// A candidate was found; `tally` counts it.
    fn found(&self, _tally: &Summary) {}
    /// A file reached its outcome; `tally` includes it.
    fn finished(&self, _path: &Path, _outcome: &Outcome, _tally: &Summary) {}
    /// A transient failure; the file is retried after `delay`.
    fn retrying(&self, _path: &Path, _attempt: u32, _reason: &str, _delay: Duration) {}
    /// The initial pass of a watching agent is over (`initial` is its summary):
    /// from now on it watches the folder as `how` says.
    fn watching(&self, _initial: &Summary, _how: &crate::settings::WatchSettings) {}
    /// A file that failed earlier is gone from the folder: forget what is kept about it.
    fn gone(&self, _path: &Path) {}
    /// A problem that stops every upload began, for `Some(reason)` (its
    /// error, naming the URL or path), or ended (`None`).
    fn problem(&self, _problem: Problem, _reason: Option<&str>) {}
    /// A delivery that ended in an upload took `took`, from its start to the server's answer
    /// (duplicate check, retries and waiting for a slot included).
    fn upload_timed(&self, _path: &Path, _took: Duration) {}
}

/// Sends every report to each of several reporters, in order.
pub struct Fanout(pub Vec<std::sync::Arc<dyn Reporter>>);

impl Reporter for Fanout {
    fn found(&self, tally: &Summary) {
        self.0.iter().for_each(|r| r.found(tally));
    }
    fn finished(&self, path: &Path, outcome: &Outcome, tally: &Summary) {
        self.0.iter().for_each(|r| r.finished(path, outcome, tally));
    }
    fn retrying(&self, path: &Path, attempt: u32, reason: &str, delay: Duration) {
        self.0
            .iter()
            .for_each(|r| r.retrying(path, attempt, reason, delay));
    }
    fn upload_timed(&self, path: &Path, took: Duration) {
        self.0.iter().for_each(|r| r.upload_timed(path, took));
    }
    fn problem(&self, problem: Problem, reason: Option<&str>) {
        self.0.iter().for_each(|r| r.problem(problem, reason));
    }
    fn watching(&self, initial: &Summary, how: &crate::settings::WatchSettings) {
        self.0.iter().for_each(|r| r.watching(initial, how));
    }
    fn gone(&self, path: &Path) {
        self.0.iter().for_each(|r| r.gone(path));
    }
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
            &Outcome::Deferred {
                reason: "another agent".into(),
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
            &Outcome::Suppressed {
                rule: "rule 1".into(),
            },
        );
        s.add(
            p,
            &Outcome::Failed {
                reason: "no".into(),
                kind: FailKind::Refused,
            },
        );
        s.add(
            p,
            &Outcome::Failed {
                reason: "still no".into(),
                kind: FailKind::Refused,
            },
        );
        assert_eq!(
            (s.synced, s.skipped, s.duplicates, s.ignored, s.failed),
            (1, 2, 1, 1, 2)
        );
        assert_eq!(s.bytes_uploaded, 10);
        assert_eq!((s.deferred, s.suppressed, s.processed()), (1, 1, 9));
        assert_eq!(
            s.failures,
            vec![FileNote {
                path: "a.pdf".into(),
                reason: "still no".into()
            }],
            "a file failing again keeps one note, with its latest reason"
        );
    }
}
