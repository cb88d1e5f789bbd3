//! When is a file seen changing due for a look? Close-after-write where the OS says so, else a quiet
//! settle time; the pipeline's settle check then compares two looks at it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A writer that keeps a file open without writing for this long is given up on
/// waiting for, and the file is treated as settled once quiet.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(300);
/// A file created but neither written nor closed for this long (a hard link,
/// a copy by a tool that does not write through the page cache) is treated as
/// whole once quiet; a writer that writes at all makes it `Written`.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(2);

/// What an event says about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Created; writes may follow.
    Created,
    /// Written to; more may follow.
    Written,
    /// Closed after writing: complete (Linux `IN_CLOSE_WRITE`).
    Closed,
    /// Appeared whole (moved or renamed in), or found by a rescan.
    Appeared,
}

#[derive(Debug)]
struct Pending {
    /// Written and not yet closed, where close events exist.
    open_for_write: bool,
    closed: bool,
    due: Instant,
}

/// Pending files and when each is due for a look. Pure: time is passed in.
#[derive(Debug)]
pub struct Debouncer {
    settle: Duration,
    /// True where the platform reports close-after-write (Linux inotify).
    close_events: bool,
    pending: HashMap<PathBuf, Pending>,
}

impl Debouncer {
    pub fn new(settle: Duration, close_events: bool) -> Self {
        Debouncer {
            settle,
            close_events,
            pending: HashMap::new(),
        }
    }

    /// Note an event for `path`.
    pub fn change(&mut self, path: PathBuf, change: Change, now: Instant) {
        let settle = self.settle;
        let entry = self.pending.entry(path).or_insert(Pending {
            open_for_write: false,
            closed: false,
            due: now + settle,
        });
        match change {
            Change::Created if self.close_events => {
                entry.open_for_write = true;
                entry.closed = false;
                entry.due = now + CREATE_TIMEOUT.max(settle);
            }
            Change::Created | Change::Written => {
                entry.open_for_write = self.close_events;
                entry.closed = false;
                entry.due = now
                    + if self.close_events {
                        OPEN_TIMEOUT
                    } else {
                        settle
                    };
            }
            Change::Closed => {
                entry.open_for_write = false;
                entry.closed = true;
                entry.due = now;
            }
            Change::Appeared if !entry.open_for_write => entry.due = entry.due.max(now + settle),
            Change::Appeared => {}
        }
    }

    /// Forget a path (deleted, or moved away).
    pub fn forget(&mut self, path: &Path) {
        self.pending.remove(path);
    }

    /// True while a path waits here: a rescan leaves it to the debouncer.
    pub fn is_pending(&self, path: &Path) -> bool {
        self.pending.contains_key(path)
    }

    /// When the next path falls due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.due).min()
    }

    /// Take the paths due by `now`, each with whether it was closed after writing.
    pub fn take_due(&mut self, now: Instant) -> Vec<(PathBuf, bool)> {
        let due: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|path| self.pending.remove(&path).map(|p| (path, p.closed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_millis(300);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn with_close_events_a_written_file_waits_for_its_close() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(SETTLE, true);
        let p = PathBuf::from("a.pdf");
        d.change(p.clone(), Change::Written, t0);
        d.change(p.clone(), Change::Written, t0 + ms(900));
        assert!(
            d.take_due(t0 + ms(5_000)).is_empty(),
            "still open for writing"
        );
        assert!(d.is_pending(&p));
        d.change(p.clone(), Change::Closed, t0 + ms(5_100));
        assert_eq!(d.take_due(t0 + ms(5_100)), vec![(p.clone(), true)]);
        assert!(!d.is_pending(&p));
    }

    #[test]
    fn a_created_file_that_is_never_written_is_due_after_a_short_wait() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(SETTLE, true);
        let p = PathBuf::from("linked.pdf");
        d.change(p.clone(), Change::Created, t0);
        assert_eq!(d.next_due(), Some(t0 + CREATE_TIMEOUT));
        d.change(p.clone(), Change::Written, t0 + ms(10));
        assert_eq!(
            d.next_due(),
            Some(t0 + ms(10) + OPEN_TIMEOUT),
            "a write makes it wait for the close"
        );
        let mut plain = Debouncer::new(SETTLE, false);
        plain.change(p, Change::Created, t0);
        assert_eq!(plain.next_due(), Some(t0 + SETTLE));
    }

    #[test]
    fn a_writer_that_never_closes_is_given_up_on() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(SETTLE, true);
        d.change(PathBuf::from("a.pdf"), Change::Written, t0);
        assert_eq!(d.next_due(), Some(t0 + OPEN_TIMEOUT));
        assert_eq!(d.take_due(t0 + OPEN_TIMEOUT).len(), 1);
    }

    #[test]
    fn without_close_events_a_file_is_due_after_the_settle_time() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(SETTLE, false);
        let p = PathBuf::from("a.pdf");
        d.change(p.clone(), Change::Written, t0);
        d.change(p.clone(), Change::Written, t0 + ms(200));
        assert!(
            d.take_due(t0 + ms(400)).is_empty(),
            "the second write restarted the clock"
        );
        assert_eq!(d.take_due(t0 + ms(500)), vec![(p, false)]);
    }

    #[test]
    fn appearing_does_not_cut_short_a_pending_write() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(SETTLE, true);
        let p = PathBuf::from("a.pdf");
        d.change(p.clone(), Change::Written, t0);
        d.change(p.clone(), Change::Appeared, t0);
        assert!(d.take_due(t0 + ms(1_000)).is_empty());
        let q = PathBuf::from("moved-in.pdf");
        d.change(q.clone(), Change::Appeared, t0);
        assert_eq!(d.next_due(), Some(t0 + SETTLE));
        assert_eq!(d.take_due(t0 + SETTLE), vec![(q, false)]);
    }

    #[test]
    fn forget_drops_a_deleted_file() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(SETTLE, false);
        let p = PathBuf::from("a.pdf");
        d.change(p.clone(), Change::Written, t0);
        d.forget(&p);
        assert_eq!(d.next_due(), None);
    }
}
