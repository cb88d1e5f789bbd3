//! The fence between a claim and an upload: the last byte of an upload goes
//! out only while this agent's claim on those bytes is known to hold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Until when a claim is known to hold. Shared by the renewer and the upload stream.
#[derive(Debug)]
pub struct Fence {
    valid_until: Mutex<Instant>,
    lost: AtomicBool,
}

impl Fence {
    /// A claim taken now that lives until `until` unless renewed.
    pub fn new(until: Instant) -> Self {
        Fence {
            valid_until: Mutex::new(until),
            lost: AtomicBool::new(false),
        }
    }

    /// A renewal, sent before `until - lease`, succeeded.
    pub fn extend(&self, until: Instant) {
        let mut valid = self.valid_until.lock().unwrap_or_else(|p| p.into_inner());
        *valid = (*valid).max(until);
    }

    /// Another agent holds the claim now: never valid again.
    pub fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    /// Whether the claim holds at `now`.
    pub fn holds_at(&self, now: Instant) -> bool {
        !self.lost.load(Ordering::SeqCst)
            && now < *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn holds_until_it_lapses_or_is_lost() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let fence = Fence::new(t0 + s(30));
        assert!(fence.holds_at(t0 + s(29)));
        assert!(!fence.holds_at(t0 + s(30)), "a lapsed lease does not hold");
        fence.extend(t0 + s(40));
        fence.extend(t0 + s(35));
        assert!(
            fence.holds_at(t0 + s(39)),
            "a late renewal never shortens it"
        );
        fence.lose();
        assert!(!fence.holds_at(t0 + s(1)), "lost is lost");
    }
}
