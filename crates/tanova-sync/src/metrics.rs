//! Live figures of a running agent (counts, latency histogram, rate, recent files, an hour of per-minute history), fed as a [`Reporter`] and read by the status server.
//!
//! Counters are atomics; the recent files, the failures and the rate window
//! sit behind one mutex that is held for a few pushes at a time. The core
//! never sees this type: the CLI fans the engine's reports out to it.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::report::{Outcome, Reporter, Summary};

/// Upper bounds, in seconds, of the upload duration histogram's buckets (+Inf is implied).
/// The real service parses each CV for seconds, hence the long tail.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];
/// How many recent files the status page shows.
pub const RECENT: usize = 50;
/// How many failing files the status page lists (all of them are counted).
pub const FAILURES: usize = 100;
/// The window the current rate is measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// How many minutes the console's chart shows.
pub const HISTORY_MINUTES: u64 = 60;
/// Attempts that kept failing with no delivery ending well for this long
/// (and at least [`FAILING_ATTEMPTS`] of them) stop every upload as surely as
/// an outage, though the health check answers: `/health` says so.
pub const FAILING_FOR: Duration = Duration::from_secs(30);
pub const FAILING_ATTEMPTS: u64 = 3;

pub use crate::report::Problem;

/// What happened to a file, as the status page lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Uploaded,
    OnServer,
    Failed,
    Ignored,
    Deferred,
    Suppressed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Uploaded => "uploaded",
            EventKind::OnServer => "already in Tanova",
            EventKind::Failed => "failed",
            EventKind::Ignored => "ignored",
            EventKind::Deferred => "left to another agent",
            EventKind::Suppressed => "suppressed (forget rule)",
        }
    }
}

/// One file's outcome, shown relative to the watched folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: SystemTime,
    pub path: String,
    pub kind: EventKind,
    /// Why it failed, was ignored or deferred; empty otherwise.
    pub reason: String,
}

/// Cumulative counts since the agent started (across the initial sync and watching).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub found: u64,
    pub synced: u64,
    pub skipped: u64,
    pub duplicates: u64,
    pub failed: u64,
    pub ignored: u64,
    pub deferred: u64,
    pub suppressed: u64,
}

impl Counts {
    /// Files that reached an outcome.
    pub fn processed(&self) -> u64 {
        self.synced
            + self.skipped
            + self.duplicates
            + self.failed
            + self.ignored
            + self.deferred
            + self.suppressed
    }
}

/// A fixed-bucket histogram; `counts[i]` holds observations in (bound[i-1], bound[i]], the last one the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    /// One per bound, plus the overflow bucket: not cumulative.
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(le, cumulative count)` per bucket, ending with `+Inf` (None) and the total.
    pub fn cumulative(&self) -> Vec<(Option<f64>, u64)> {
        let mut total = 0;
        self.counts
            .iter()
            .enumerate()
            .map(|(i, n)| {
                total += n;
                (self.bounds.get(i).copied(), total)
            })
            .collect()
    }
}

/// Completions per second over a sliding window; `now` is seconds since some start, passed in.
#[derive(Debug, Default)]
pub struct RateWindow {
    /// (second, completions in it), oldest first.
    buckets: VecDeque<(u64, u64)>,
}

impl RateWindow {
    pub fn record(&mut self, now: u64) {
        match self.buckets.back_mut() {
            Some((second, n)) if *second == now => *n += 1,
            _ => self.buckets.push_back((now, 1)),
        }
        self.trim(now);
    }

    /// Completions per minute over the last [`RATE_WINDOW`].
    pub fn per_minute(&self, now: u64) -> f64 {
        let window = RATE_WINDOW.as_secs();
        let n: u64 = self
            .buckets
            .iter()
            .filter(|(second, _)| second + window > now)
            .map(|(_, n)| n)
            .sum();
        n as f64 * 60.0 / window as f64
    }

    fn trim(&mut self, now: u64) {
        let window = RATE_WINDOW.as_secs();
        while self
            .buckets
            .front()
            .is_some_and(|(second, _)| second + window <= now)
        {
            self.buckets.pop_front();
        }
    }
}

/// One minute of history: uploads finished in it, and the backlog (files found
/// and not yet at an outcome) at its peak and at its last look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Minute {
    /// Minutes since the agent started.
    pub minute: u64,
    pub uploads: u64,
    pub backlog: u64,
    /// The backlog last seen in this minute, which a quiet minute after it carries on.
    pub backlog_end: u64,
}

/// A ring of the last [`HISTORY_MINUTES`] minutes: bounded whatever the uptime.
/// Pure: the minute is passed in.
#[derive(Debug, Default)]
pub struct History {
    /// Oldest first; quiet minutes have no slot.
    slots: VecDeque<Minute>,
}

impl History {
    pub fn uploaded(&mut self, minute: u64) {
        self.slot(minute).uploads += 1;
    }

    pub fn backlog(&mut self, minute: u64, backlog: u64) {
        let slot = self.slot(minute);
        slot.backlog = slot.backlog.max(backlog);
        slot.backlog_end = backlog;
    }

    /// The minute `minute`'s slot, made (and the oldest dropped) when new.
    fn slot(&mut self, minute: u64) -> &mut Minute {
        if self.slots.back().map(|m| m.minute) != Some(minute) {
            let carried = self.slots.back().map_or(0, |m| m.backlog_end);
            self.slots.push_back(Minute {
                minute,
                uploads: 0,
                backlog: carried,
                backlog_end: carried,
            });
            while self
                .slots
                .front()
                .is_some_and(|m| m.minute + HISTORY_MINUTES <= minute)
            {
                self.slots.pop_front();
            }
        }
        self.slots.back_mut().expect("pushed above")
    }

    /// One entry per minute up to `now` (at most [`HISTORY_MINUTES`]), oldest
    /// first, quiet minutes filled in: no uploads, the backlog carried on.
    pub fn series(&self, now: u64) -> Vec<Minute> {
        let first = (now + 1).saturating_sub(HISTORY_MINUTES);
        let mut slots = self.slots.iter().peekable();
        let mut carried = 0;
        let mut out = Vec::with_capacity(HISTORY_MINUTES as usize);
        for minute in first..=now {
            while let Some(m) = slots.next_if(|m| m.minute < minute) {
                carried = m.backlog_end;
            }
            match slots.next_if(|m| m.minute == minute) {
                Some(m) => {
                    carried = m.backlog_end;
                    out.push(*m);
                }
                None => out.push(Minute {
                    minute,
                    uploads: 0,
                    backlog: carried,
                    backlog_end: carried,
                }),
            }
        }
        out
    }
}

/// A consistent copy of everything the status server shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub problem: Option<Problem>,
    /// Why: the error behind `problem`, when it gave one.
    pub reason: Option<String>,
    pub counts: Counts,
    pub bytes_uploaded: u64,
    pub last_upload_at: Option<SystemTime>,
    /// Found and not yet at an outcome, less the uploads in flight.
    pub queue: u64,
    pub in_flight: u64,
    pub concurrency_limit: u64,
    /// Uploads per minute over the last minute.
    pub rate_per_min: f64,
    pub uptime: Duration,
    pub durations: Histogram,
    /// Newest first.
    pub recent: Vec<Event>,
    /// How many distinct files' latest outcome is a failure.
    pub failing: u64,
    /// The newest [`FAILURES`] of them, newest first.
    pub failures: Vec<Event>,
    /// The initial pass is over and the agent watches the folder.
    pub watching: bool,
    /// The last hour, one entry per minute, oldest first.
    pub history: Vec<Minute>,
}

/// The uploads in flight and the current limit, read from the engine's limiter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    pub in_flight: usize,
    pub limit: usize,
}

/// The agent's live figures. Share it behind an `Arc`; it is a [`Reporter`].
#[derive(Debug)]
pub struct Metrics {
    root: PathBuf,
    started: Instant,
    found: AtomicU64,
    synced: AtomicU64,
    skipped: AtomicU64,
    duplicates: AtomicU64,
    failed: AtomicU64,
    ignored: AtomicU64,
    deferred: AtomicU64,
    suppressed: AtomicU64,
    bytes_uploaded: AtomicU64,
    /// One bit per active [`Problem`], by its place in [`Problem::ALL`].
    problems: AtomicU8,
    watching: AtomicBool,
    /// The last minute the backlog was recorded in by `found`, so a scan takes the lock once a minute.
    backlog_minute: AtomicU64,
    lists: Mutex<Lists>,
}

#[derive(Debug)]
struct Lists {
    recent: VecDeque<Event>,
    /// Every file whose latest outcome is a failure: bounded by the folder, not by time.
    failures: HashMap<String, Event>,
    rate: RateWindow,
    durations: Histogram,
    last_upload_at: Option<SystemTime>,
    history: History,
    /// Why each active problem is there, as the error said it.
    reasons: HashMap<Problem, String>,
    failing: FailingStreak,
}

/// Failed delivery attempts since the last delivery that ended well. Pure:
/// times are the agent's uptime, passed in.
#[derive(Debug, Default)]
struct FailingStreak {
    since: Option<Duration>,
    attempts: u64,
    last: String,
    /// Said in the log (at the first failure once it stops every upload).
    told: bool,
}

impl FailingStreak {
    /// An attempt failed; true the first time the streak is found to stop every upload.
    fn failed(&mut self, now: Duration, reason: &str) -> bool {
        self.since.get_or_insert(now);
        self.attempts += 1;
        self.last = reason.to_string();
        let tell = !self.told && self.stopping(now).is_some();
        self.told |= tell;
        tell
    }

    /// A delivery ended well; true when that ends a streak the log was told of.
    fn delivered(&mut self) -> bool {
        std::mem::take(self).told
    }

    /// The last failure's reason, once the streak stops every upload.
    fn stopping(&self, now: Duration) -> Option<&str> {
        let since = self.since?;
        let long = now.saturating_sub(since) >= FAILING_FOR && self.attempts >= FAILING_ATTEMPTS;
        long.then_some(self.last.as_str())
    }
}

impl Metrics {
    /// Figures for an agent syncing `root` (paths are shown relative to it).
    pub fn new(root: &Path) -> Self {
        Metrics {
            root: root.to_path_buf(),
            started: Instant::now(),
            found: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            bytes_uploaded: AtomicU64::new(0),
            problems: AtomicU8::new(0),
            watching: AtomicBool::new(false),
            backlog_minute: AtomicU64::new(u64::MAX),
            lists: Mutex::new(Lists {
                recent: VecDeque::with_capacity(RECENT),
                failures: HashMap::new(),
                rate: RateWindow::default(),
                durations: Histogram::new(&DURATION_BUCKETS),
                last_upload_at: None,
                history: History::default(),
                reasons: HashMap::new(),
                failing: FailingStreak::default(),
            }),
        }
    }

    /// Uploads are stopped by `problem`: say so on `/health` and in the metrics.
    pub fn set_problem(&self, problem: Problem) {
        self.problems.fetch_or(bit(problem), Ordering::Relaxed);
    }

    pub fn clear_problem(&self, problem: Problem) {
        self.problems.fetch_and(!bit(problem), Ordering::Relaxed);
    }

    /// The worst active problem, if any.
    pub fn problem(&self) -> Option<Problem> {
        let bits = self.problems.load(Ordering::Relaxed);
        Problem::ALL.into_iter().find(|&p| bits & bit(p) != 0)
    }

    /// Everything at once, with the limiter's figures.
    pub fn snapshot(&self, gauges: Gauges) -> Snapshot {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let lists = self.lists();
        let counts = Counts {
            found: load(&self.found),
            synced: load(&self.synced),
            skipped: load(&self.skipped),
            duplicates: load(&self.duplicates),
            failed: load(&self.failed),
            ignored: load(&self.ignored),
            deferred: load(&self.deferred),
            suppressed: load(&self.suppressed),
        };
        let pending = counts.found.saturating_sub(counts.processed());
        let uptime = self.started.elapsed();
        let (problem, reason) = match self.problem() {
            Some(p) => (Some(p), lists.reasons.get(&p).cloned()),
            None => match lists.failing.stopping(self.started.elapsed()) {
                Some(last) => (Some(Problem::UploadsFailing), Some(last.to_string())),
                None => (None, None),
            },
        };
        Snapshot {
            problem,
            reason,
            counts,
            bytes_uploaded: load(&self.bytes_uploaded),
            last_upload_at: lists.last_upload_at,
            queue: pending.saturating_sub(gauges.in_flight as u64),
            in_flight: gauges.in_flight as u64,
            concurrency_limit: gauges.limit as u64,
            rate_per_min: lists.rate.per_minute(uptime.as_secs()),
            uptime,
            durations: lists.durations.clone(),
            recent: lists.recent.iter().rev().cloned().collect(),
            failing: lists.failures.len() as u64,
            failures: newest_failures(&lists.failures),
            watching: self.watching.load(Ordering::Relaxed),
            history: lists.history.series(uptime.as_secs() / 60),
        }
    }

    /// Files found and not yet at an outcome.
    fn backlog(&self) -> u64 {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let done = load(&self.synced)
            + load(&self.skipped)
            + load(&self.duplicates)
            + load(&self.failed)
            + load(&self.ignored)
            + load(&self.deferred);
        load(&self.found).saturating_sub(done)
    }

    fn minute(&self) -> u64 {
        self.started.elapsed().as_secs() / 60
    }

    fn lists(&self) -> MutexGuard<'_, Lists> {
        // Nothing under the lock panics midway, so a poisoned lock holds consistent lists.
        self.lists.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn shown(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

impl Reporter for Metrics {
    fn found(&self, _tally: &Summary) {
        self.found.fetch_add(1, Ordering::Relaxed);
        let minute = self.minute();
        if self.backlog_minute.swap(minute, Ordering::Relaxed) != minute {
            let backlog = self.backlog();
            self.lists().history.backlog(minute, backlog);
        }
    }

    fn watching(&self, _initial: &Summary, _how: &crate::settings::WatchSettings) {
        self.watching.store(true, Ordering::Relaxed);
    }

    fn finished(&self, path: &Path, outcome: &Outcome, _tally: &Summary) {
        let bump = |n: &AtomicU64| {
            n.fetch_add(1, Ordering::Relaxed);
        };
        let (kind, reason) = match outcome {
            Outcome::Uploaded { bytes, .. } => {
                bump(&self.synced);
                self.bytes_uploaded.fetch_add(*bytes, Ordering::Relaxed);
                (EventKind::Uploaded, String::new())
            }
            // A dry run sends nothing: there is nothing to count yet.
            Outcome::WouldUpload { .. } => return,
            Outcome::AlreadySynced | Outcome::SameContent => {
                // Not listed: a rescan would push every interesting line off the page.
                bump(&self.skipped);
                return;
            }
            Outcome::OnServer { .. } => {
                bump(&self.duplicates);
                (EventKind::OnServer, String::new())
            }
            Outcome::Deferred { reason } => {
                bump(&self.deferred);
                (EventKind::Deferred, reason.clone())
            }
            Outcome::Suppressed { rule } => {
                bump(&self.suppressed);
                (EventKind::Suppressed, rule.clone())
            }
            Outcome::Ignored { reason } => {
                bump(&self.ignored);
                (EventKind::Ignored, reason.clone())
            }
            Outcome::Failed { reason, .. } => {
                bump(&self.failed);
                (EventKind::Failed, reason.clone())
            }
        };
        let key = self.shown(path);
        let event = Event {
            at: SystemTime::now(),
            // `privacy_redact_logs`: the page and /health show the folder and checksum only.
            path: crate::privacy::redact::file_in(&self.root, path),
            kind,
            reason,
        };
        let now = self.started.elapsed().as_secs();
        let backlog = self.backlog();
        let mut lists = self.lists();
        lists.history.backlog(now / 60, backlog);
        // A file's latest outcome replaces an earlier failure of it.
        lists.failures.remove(&key);
        if matches!(kind, EventKind::Uploaded | EventKind::OnServer) && lists.failing.delivered() {
            tracing::info!("uploads succeed again");
        }
        match kind {
            EventKind::Failed => {
                lists.failures.insert(key, event.clone());
            }
            EventKind::Uploaded => {
                lists.rate.record(now);
                lists.history.uploaded(now / 60);
                lists.last_upload_at = Some(event.at);
            }
            _ => {}
        }
        if lists.recent.len() == RECENT {
            lists.recent.pop_front();
        }
        lists.recent.push_back(event);
    }

    fn upload_timed(&self, _path: &Path, took: Duration) {
        self.lists().durations.observe(took.as_secs_f64());
    }

    fn retrying(&self, _path: &Path, _attempt: u32, reason: &str, _delay: Duration) {
        let now = self.started.elapsed();
        if self.lists().failing.failed(now, reason) {
            tracing::error!(
                "no upload has succeeded for {}s though the Tanova service answers its health \
                 check ({reason}); files wait and are tried again",
                FAILING_FOR.as_secs()
            );
        }
    }

    fn gone(&self, path: &Path) {
        let shown = self.shown(path);
        self.lists().failures.remove(&shown);
    }

    fn problem(&self, problem: Problem, reason: Option<&str>) {
        let mut lists = self.lists();
        match reason {
            Some(reason) => {
                lists.reasons.insert(problem, reason.to_string());
                self.set_problem(problem);
            }
            None => {
                lists.reasons.remove(&problem);
                self.clear_problem(problem);
            }
        }
    }
}

fn bit(problem: Problem) -> u8 {
    let place = Problem::ALL
        .iter()
        .position(|&p| p == problem)
        .expect("every problem is in ALL");
    1 << place
}

/// The newest [`FAILURES`] failing files, newest first.
fn newest_failures(failures: &HashMap<String, Event>) -> Vec<Event> {
    let mut newest: Vec<Event> = failures.values().cloned().collect();
    newest.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.path.cmp(&b.path)));
    newest.truncate(FAILURES);
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        static BOUNDS: [f64; 3] = [0.1, 1.0, 10.0];
        let table: &[(&[f64], [u64; 4])] = &[
            (&[], [0, 0, 0, 0]),
            (&[0.1], [1, 1, 1, 1]),
            (&[0.05, 0.5, 5.0, 50.0], [1, 2, 3, 4]),
            (&[1.0, 1.0, 10.0001], [0, 2, 2, 3]),
        ];
        for (values, want) in table {
            let mut h = Histogram::new(&BOUNDS);
            for v in *values {
                h.observe(*v);
            }
            let cumulative: Vec<u64> = h.cumulative().iter().map(|(_, n)| *n).collect();
            assert_eq!(cumulative, want, "{values:?}");
            assert_eq!(h.count(), values.len() as u64);
            assert_eq!(h.cumulative().last().unwrap().0, None, "ends with +Inf");
            assert!((h.sum - values.iter().sum::<f64>()).abs() < 1e-9);
        }
    }

    #[test]
    fn the_rate_counts_the_last_minute_only() {
        let table: &[(&[u64], u64, f64)] = &[
            // (completions at these seconds, now, per minute)
            (&[], 0, 0.0),
            (&[0, 0, 1], 1, 3.0),
            (&[0, 30, 59], 59, 3.0),
            (&[0, 30, 59], 60, 2.0),
            (&[0, 30, 59], 200, 0.0),
            (&[5; 120], 10, 120.0),
        ];
        for (at, now, want) in table {
            let mut rate = RateWindow::default();
            for second in *at {
                rate.record(*second);
            }
            assert_eq!(rate.per_minute(*now), *want, "{at:?} at {now}");
        }
    }

    fn failed(reason: &str) -> Outcome {
        Outcome::Failed {
            reason: reason.into(),
            kind: crate::report::FailKind::Refused,
        }
    }

    #[test]
    fn outcomes_add_up_across_runs_and_lists_keep_the_latest() {
        let m = Metrics::new(Path::new("/cvs"));
        let tally = Summary::default();
        for _ in 0..5 {
            m.found(&tally);
        }
        let uploaded = Outcome::Uploaded {
            candidate_id: None,
            bytes: 100,
        };
        m.finished(Path::new("/cvs/Nurse/a.pdf"), &uploaded, &tally);
        m.upload_timed(Path::new("/cvs/Nurse/a.pdf"), Duration::from_millis(300));
        m.finished(Path::new("/cvs/b.pdf"), &failed("refused (422)"), &tally);
        m.finished(Path::new("/cvs/b.pdf"), &failed("refused again"), &tally);
        m.finished(Path::new("/cvs/c.pdf"), &Outcome::AlreadySynced, &tally);
        let s = m.snapshot(Gauges {
            in_flight: 1,
            limit: 4,
        });
        assert_eq!(
            (s.counts.synced, s.counts.failed, s.counts.skipped),
            (1, 2, 1)
        );
        assert_eq!(s.counts.processed(), 4);
        // 5 found, 4 done, 1 uploading: nothing waits.
        assert_eq!((s.queue, s.in_flight, s.concurrency_limit), (0, 1, 4));
        assert_eq!(s.bytes_uploaded, 100);
        assert!(s.last_upload_at.is_some());
        assert_eq!(s.durations.count(), 1);
        assert_eq!(s.rate_per_min, 1.0);
        let recent: Vec<&str> = s.recent.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(recent, ["b.pdf", "b.pdf", "Nurse/a.pdf"], "newest first");
        assert_eq!(s.failures.len(), 1, "one entry per failing file");
        assert_eq!(s.failures[0].reason, "refused again");
        // Synced after all: no longer listed as failing.
        m.finished(Path::new("/cvs/b.pdf"), &uploaded, &tally);
        assert!(m.snapshot(Gauges::default()).failures.is_empty());
    }

    #[test]
    fn the_lists_are_bounded() {
        let m = Metrics::new(Path::new("/cvs"));
        let tally = Summary::default();
        for i in 0..(FAILURES + RECENT) {
            m.finished(Path::new(&format!("/cvs/{i}.pdf")), &failed("no"), &tally);
        }
        let s = m.snapshot(Gauges::default());
        assert_eq!((s.recent.len(), s.failures.len()), (RECENT, FAILURES));
        assert_eq!(s.failures[0].path, format!("{}.pdf", FAILURES + RECENT - 1));
    }

    #[test]
    fn the_history_keeps_an_hour_and_carries_the_backlog_over_quiet_minutes() {
        let mut h = History::default();
        assert_eq!(h.series(0).len(), 1, "one minute so far");
        h.backlog(0, 10);
        h.uploaded(0);
        h.backlog(0, 4);
        h.uploaded(2);
        h.uploaded(2);
        let s = h.series(3);
        let got: Vec<(u64, u64, u64)> =
            s.iter().map(|m| (m.minute, m.uploads, m.backlog)).collect();
        // Minute 1 was quiet: the backlog last seen (4) carries on, not the peak (10).
        assert_eq!(got, [(0, 1, 10), (1, 0, 4), (2, 2, 4), (3, 0, 4)]);
        // Hours later: a full hour, oldest first, nothing older than an hour kept.
        for minute in 0..500 {
            h.uploaded(minute);
        }
        assert!(h.slots.len() <= HISTORY_MINUTES as usize, "bounded");
        let s = h.series(600);
        assert_eq!(s.len(), HISTORY_MINUTES as usize);
        assert_eq!((s[0].minute, s[59].minute), (541, 600));
        assert!(
            s.iter().all(|m| m.uploads == 0),
            "the last uploads were at minute 499"
        );
        let s = h.series(520);
        assert_eq!(
            s.iter().filter(|m| m.uploads == 1).count(),
            39,
            "minutes 461..=499"
        );
    }

    #[test]
    fn uploads_and_backlog_reach_the_snapshot() {
        let m = Metrics::new(Path::new("/cvs"));
        let tally = Summary::default();
        for _ in 0..3 {
            m.found(&tally);
        }
        let uploaded = Outcome::Uploaded {
            candidate_id: None,
            bytes: 1,
        };
        m.finished(Path::new("/cvs/a.pdf"), &uploaded, &tally);
        let s = m.snapshot(Gauges::default());
        let now = s.history.last().expect("this minute");
        assert_eq!((now.uploads, now.backlog, now.backlog_end), (1, 2, 2));
        assert!(!s.watching);
        m.watching(&tally, &crate::settings::WatchSettings::default());
        assert!(m.snapshot(Gauges::default()).watching);
    }

    #[test]
    fn the_problem_is_remembered() {
        let m = Metrics::new(Path::new("/cvs"));
        assert_eq!(m.problem(), None);
        m.set_problem(Problem::KeyRejected);
        assert_eq!(
            m.snapshot(Gauges::default()).problem,
            Some(Problem::KeyRejected)
        );
        // The worst problem is shown, with its own reason; an ended one leaves none.
        Reporter::problem(&m, Problem::ServiceUnreachable, Some("connection refused"));
        Reporter::problem(&m, Problem::StateUnwritable, Some("disk full"));
        let s = m.snapshot(Gauges::default());
        assert_eq!((s.problem, s.reason), (Some(Problem::KeyRejected), None));
        m.clear_problem(Problem::KeyRejected);
        let s = m.snapshot(Gauges::default());
        assert_eq!(s.problem, Some(Problem::StateUnwritable));
        assert_eq!(s.reason.as_deref(), Some("disk full"));
        Reporter::problem(&m, Problem::StateUnwritable, None);
        let s = m.snapshot(Gauges::default());
        assert_eq!(s.reason.as_deref(), Some("connection refused"));
        Reporter::problem(&m, Problem::ServiceUnreachable, None);
        let s = m.snapshot(Gauges::default());
        assert_eq!((s.problem, s.reason), (None, None));
        assert_eq!(Problem::FolderMissing.as_str(), "folder_missing");
    }

    #[test]
    fn attempts_failing_long_enough_with_no_delivery_stop_every_upload() {
        let s = Duration::from_secs;
        // (uptime, what happens, stopping after it, the step's transition)
        let table: &[(u64, Option<&str>, Option<&str>, bool)] = &[
            (0, Some("503 a"), None, false),
            (10, Some("503 b"), None, false),
            // Long enough, but only two attempts so far.
            (40, None, None, false),
            (41, Some("503 c"), Some("503 c"), true),
            (50, Some("503 d"), Some("503 d"), false),
            // A delivery that ends well ends the streak (and says it did).
            (51, None, None, true),
            (52, Some("503 e"), None, false),
            (60, Some("503 f"), None, false),
            (70, Some("503 g"), None, false),
            // Ended before it was long enough: nothing to say.
            (81, None, None, false),
            (82, Some("503 h"), None, false),
            (112, Some("503 i"), None, false),
            (113, Some("503 j"), Some("503 j"), true),
        ];
        let mut streak = FailingStreak::default();
        let delivered_at = [51, 81];
        for &(at, failed, want, transition) in table {
            let now = s(at);
            let changed = match failed {
                Some(reason) => streak.failed(now, reason),
                None if delivered_at.contains(&at) => streak.delivered(),
                None => false,
            };
            assert_eq!(streak.stopping(now), want, "at {at}");
            assert_eq!(changed, transition, "at {at}");
        }
    }
}
