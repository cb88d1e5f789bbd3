//! The terminal reporter: a progress bar on a terminal, periodic lines otherwise, and the final summary.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::filter::human_bytes;
use crate::privacy::redact;
use crate::report::{Outcome, Reporter, Summary};

/// Lines are printed every this many uploaded or failed files, or this often, when stderr is not a terminal.
const LINE_EVERY_FILES: u64 = 10;
const LINE_EVERY: Duration = Duration::from_secs(2);

/// How much the reporter says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    /// A line for each file.
    Files,
}

pub struct TerminalReporter {
    bar: Option<ProgressBar>,
    /// Watching: a line per upload or failure instead of progress.
    live: AtomicBool,
    verbosity: Verbosity,
    lines: Mutex<LineClock>,
    /// `--json`: summaries go to stdout as JSON.
    json: bool,
    /// Watching: the failure or note last printed per file, so a rescan that
    /// finds the same problem again prints nothing new.
    printed: Mutex<HashMap<PathBuf, String>>,
}

struct LineClock {
    last_at: Instant,
    last_processed: u64,
    /// Files that needed work (not skipped) since the last line.
    worked_since: u64,
}

impl TerminalReporter {
    pub fn new(verbosity: Verbosity, json: bool) -> Self {
        let bar = (verbosity != Verbosity::Quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {msg} ({per_sec}, ETA {eta})",
                )
                .expect("the template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        TerminalReporter {
            bar,
            live: AtomicBool::new(false),
            verbosity,
            lines: Mutex::new(LineClock {
                last_at: Instant::now(),
                last_processed: 0,
                worked_since: 0,
            }),
            json,
            printed: Mutex::new(HashMap::new()),
        }
    }

    /// The run is over: finish the progress and print its summary on stdout.
    pub fn summary(&self, summary: &Summary) {
        self.done(summary);
        let mut out = std::io::stdout().lock();
        let written = if self.json {
            serde_json::to_writer(&mut out, summary)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
        } else if self.verbosity == Verbosity::Quiet {
            Ok(())
        } else {
            write_summary(&mut out, summary)
        };
        if let Err(e) = written {
            tracing::error!("cannot print the summary: {e}");
        }
    }

    /// Remove the bar, or print the last progress line, before the summary.
    pub fn done(&self, tally: &Summary) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None if self.verbosity != Verbosity::Quiet => {
                let last = self.lines.lock().unwrap().last_processed;
                if last != tally.processed() {
                    say!("{}", progress_line(tally));
                }
            }
            None => {}
        }
    }

    /// Switch to reporting each upload or failure as it happens (watch mode).
    pub fn go_live(&self) {
        self.live.store(true, Ordering::Relaxed);
    }

    fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => say!("{line}"),
        }
    }
}

impl Reporter for TerminalReporter {
    fn gone(&self, path: &Path) {
        self.printed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path);
    }

    fn watching(&self, initial: &Summary, how: &crate::settings::WatchSettings) {
        self.summary(initial);
        let how = match how.mode {
            crate::settings::WatchMode::Events => "file-system events".to_string(),
            crate::settings::WatchMode::Poll => {
                format!("polling every {}s", how.poll_every.as_secs_f64())
            }
        };
        say!("Watching for new CVs ({how}); press Ctrl+C to stop.");
        self.go_live();
    }

    fn found(&self, tally: &Summary) {
        if let Some(bar) = &self.bar {
            bar.set_length(tally.found);
        }
    }

    fn finished(&self, path: &Path, outcome: &Outcome, tally: &Summary) {
        if self.live.load(Ordering::Relaxed) {
            let worth_a_line = !matches!(
                outcome,
                Outcome::AlreadySynced | Outcome::SameContent | Outcome::Deferred { .. }
            );
            let line = describe(outcome);
            if self.verbosity >= Verbosity::Files
                || (worth_a_line
                    && self.verbosity == Verbosity::Normal
                    && self.is_news(path, outcome, &line))
            {
                say!("{}: {line}", redact::file(path, None));
            }
            return;
        }
        if self.verbosity >= Verbosity::Files {
            self.say(&format!(
                "{}: {}",
                redact::file(path, None),
                describe(outcome)
            ));
        }
        if let Some(bar) = &self.bar {
            bar.set_position(tally.processed());
            bar.set_message(format!(
                "({} synced, {} failed)",
                tally.synced, tally.failed
            ));
            return;
        }
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        let mut clock = self.lines.lock().unwrap();
        // Skipped files only count towards the clock, so a no-op run over
        // thousands of files prints a line every 2 s, not one per 10 files.
        if !matches!(outcome, Outcome::AlreadySynced | Outcome::SameContent) {
            clock.worked_since += 1;
        }
        if clock.worked_since >= LINE_EVERY_FILES || clock.last_at.elapsed() >= LINE_EVERY {
            clock.last_at = Instant::now();
            clock.last_processed = tally.processed();
            clock.worked_since = 0;
            say!("{}", progress_line(tally));
        }
    }

    fn retrying(&self, path: &Path, attempt: u32, reason: &str, delay: Duration) {
        if self.verbosity >= Verbosity::Files {
            self.say(&format!(
                "{}: retry {attempt} in {:.1}s: {reason}",
                redact::file(path, None),
                delay.as_secs_f64()
            ));
        }
    }
}

/// `Progress: 50/237 processed (45 synced, 5 failed)`, as the Python script printed it.
pub fn progress_line(tally: &Summary) -> String {
    format!(
        "Progress: {}/{} processed ({} synced, {} failed)",
        tally.processed(),
        tally.found,
        tally.synced,
        tally.failed
    )
}

/// The most files whose last printed failure is remembered.
const MAX_PRINTED: usize = 100_000;

impl TerminalReporter {
    /// A failure or note is news when it is new for the file or its reason changed.
    fn is_news(&self, path: &Path, outcome: &Outcome, line: &str) -> bool {
        let mut printed = self.printed.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Outcome::Failed { .. } | Outcome::Ignored { .. } => {
                if printed.get(path).is_some_and(|last| last == line) {
                    return false;
                }
                // Files deleted while failing leave entries behind: forget them all
                // now and then (reprinting once) rather than grow with time.
                if printed.len() >= MAX_PRINTED {
                    printed.clear();
                }
                printed.insert(path.to_path_buf(), line.to_string());
                true
            }
            _ => {
                printed.remove(path);
                true
            }
        }
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Uploaded {
            candidate_id: Some(id),
            ..
        } => format!("uploaded (candidate {id})"),
        Outcome::Uploaded { .. } => "uploaded".to_string(),
        Outcome::AlreadySynced => "already synced".to_string(),
        Outcome::SameContent => "same content as another file, synced once".to_string(),
        Outcome::OnServer {
            candidate_name: Some(name),
        } => format!("already in Tanova ({name})"),
        Outcome::OnServer { .. } => "already in Tanova".to_string(),
        Outcome::Deferred { reason } => format!("left for now: {reason}"),
        Outcome::Ignored { reason } => format!("ignored: {reason}"),
        Outcome::WouldUpload { bytes } => format!("would upload ({})", human_bytes(*bytes)),
        Outcome::Suppressed { rule } => format!("suppressed by {rule}: not uploaded"),
        Outcome::Failed { reason, .. } => format!("FAILED: {reason}"),
    }
}

/// The human summary at the end of a run.
pub fn write_summary(out: &mut dyn Write, s: &Summary) -> std::io::Result<()> {
    writeln!(
        out,
        "Synced {} new CV{} ({}) in {:.1}s; {} found.",
        s.synced,
        if s.synced == 1 { "" } else { "s" },
        human_bytes(s.bytes_uploaded),
        s.elapsed_s,
        s.found
    )?;
    if s.would_upload > 0 {
        writeln!(out, "  would upload (dry run):         {}", s.would_upload)?;
    }
    writeln!(out, "  skipped (already synced):       {}", s.skipped)?;
    writeln!(out, "  duplicates (already in Tanova): {}", s.duplicates)?;
    if s.deferred > 0 {
        writeln!(out, "  deferred (to another agent):    {}", s.deferred)?;
    }
    if s.suppressed > 0 {
        writeln!(out, "  suppressed (`forget` rules):    {}", s.suppressed)?;
    }
    if s.ignored > 0 {
        writeln!(out, "  ignored:                        {}", s.ignored)?;
        for note in &s.ignored_files {
            writeln!(out, "    {}: {}", note.path, note.reason)?;
        }
    }
    writeln!(out, "  failed:                         {}", s.failed)?;
    for note in &s.failures {
        writeln!(out, "    {}: {}", note.path, note.reason)?;
    }
    if let Some(why) = &s.stopped {
        writeln!(out, "Stopped early: {why}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_reads_like_the_script() {
        let tally = Summary {
            found: 237,
            synced: 45,
            failed: 5,
            ..Summary::default()
        };
        assert_eq!(
            progress_line(&tally),
            "Progress: 50/237 processed (45 synced, 5 failed)"
        );
    }

    #[test]
    fn summary_lists_failures_with_reasons() {
        let mut s = Summary {
            found: 2,
            ..Summary::default()
        };
        s.add(
            Path::new("a.pdf"),
            &Outcome::Uploaded {
                candidate_id: None,
                bytes: 2048,
            },
        );
        s.add(
            Path::new("b.pdf"),
            &Outcome::Failed {
                reason: "refused (422): bad".into(),
                kind: crate::report::FailKind::Refused,
            },
        );
        let mut out = Vec::new();
        write_summary(&mut out, &s).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("Synced 1 new CV (2.0 KiB)"), "{text}");
        assert!(text.contains("    b.pdf: refused (422): bad"), "{text}");
    }
}
