//! Counters of what the emulator saw, the in-flight guard, and the `Stats` snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A point-in-time copy of the counters, as served by `GET /_emulator/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Successful upload answers, duplicates included.
    pub uploads: u64,
    /// Distinct checksums among successful uploads.
    pub unique_checksums: u64,
    /// Successful uploads whose checksum the server already knew.
    pub duplicate_uploads: u64,
    pub check_duplicate_calls: u64,
    pub health_calls: u64,
    /// Requests to the batch endpoint with a valid key, whatever the answer
    /// (404s included). Their files count in `uploads` and the `rejected_*`
    /// counters one by one, exactly as single uploads do.
    pub batch_requests: u64,
    pub rejected_429: u64,
    pub rejected_5xx: u64,
    pub rejected_auth: u64,
    pub rejected_checksum: u64,
    /// Other refusals: injected 4xx, oversized files, malformed requests.
    pub rejected_other: u64,
    /// Check-duplicates and uploads (in a batch: files) answered 403 because
    /// their checksum is in the `forbid_checksums` knob.
    pub rejected_forbidden: u64,
    /// Connections dropped by the `drop_rate` knob.
    pub dropped: u64,
    /// API requests met by the `outage` knob instead of the service.
    pub outage_refused: u64,
    /// Upload requests (single or batch) admitted and not finished: being
    /// received (until the client goes away), held, or processing (which goes
    /// on after the client went away, and so does this count).
    pub in_flight: u64,
    pub peak_in_flight: u64,
    /// Uploads (single or batch requests) fully received and waiting now for
    /// the `hold_uploads` knob to be cleared. A gauge, like `in_flight`.
    pub held: u64,
    /// Uploads (single or batch requests) whose processing finished after the
    /// client had gone; they are recorded all the same.
    pub completed_after_disconnect: u64,
    /// Bytes of file content received by the upload endpoint.
    pub bytes_received: u64,
}

/// The live counters. `unique_checksums` lives in the store, not here.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub uploads: AtomicU64,
    pub duplicate_uploads: AtomicU64,
    pub check_duplicate_calls: AtomicU64,
    pub health_calls: AtomicU64,
    pub batch_requests: AtomicU64,
    pub rejected_429: AtomicU64,
    pub rejected_5xx: AtomicU64,
    pub rejected_auth: AtomicU64,
    pub rejected_checksum: AtomicU64,
    pub rejected_other: AtomicU64,
    pub rejected_forbidden: AtomicU64,
    pub dropped: AtomicU64,
    pub outage_refused: AtomicU64,
    pub completed_after_disconnect: AtomicU64,
    pub bytes_received: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    held: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

impl Counters {
    /// Admits one more upload unless `capacity` (0 = unlimited) are already in flight.
    /// The returned guard keeps it counted until dropped, even if the client goes away.
    pub fn try_enter(self: &Arc<Self>, capacity: usize) -> Option<InFlight> {
        let limit = if capacity == 0 {
            u64::MAX
        } else {
            capacity as u64
        };
        let now = self
            .in_flight
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .ok()?
            + 1;
        self.peak_in_flight.fetch_max(now, Relaxed);
        Some(InFlight(Arc::clone(self)))
    }

    /// Counts one more held upload until the returned guard is dropped.
    pub fn hold(self: &Arc<Self>) -> Held {
        self.held.fetch_add(1, Relaxed);
        Held(Arc::clone(self))
    }

    pub fn snapshot(&self, unique_checksums: u64) -> Stats {
        Stats {
            uploads: self.uploads.load(Relaxed),
            unique_checksums,
            duplicate_uploads: self.duplicate_uploads.load(Relaxed),
            check_duplicate_calls: self.check_duplicate_calls.load(Relaxed),
            health_calls: self.health_calls.load(Relaxed),
            batch_requests: self.batch_requests.load(Relaxed),
            rejected_429: self.rejected_429.load(Relaxed),
            rejected_5xx: self.rejected_5xx.load(Relaxed),
            rejected_auth: self.rejected_auth.load(Relaxed),
            rejected_checksum: self.rejected_checksum.load(Relaxed),
            rejected_other: self.rejected_other.load(Relaxed),
            rejected_forbidden: self.rejected_forbidden.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            outage_refused: self.outage_refused.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            peak_in_flight: self.peak_in_flight.load(Relaxed),
            held: self.held.load(Relaxed),
            completed_after_disconnect: self.completed_after_disconnect.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
        }
    }

    /// Zeroes every counter; uploads still running stay in flight (and held)
    /// and set the new peak.
    pub fn reset(&self) {
        for counter in [
            &self.uploads,
            &self.duplicate_uploads,
            &self.check_duplicate_calls,
            &self.health_calls,
            &self.batch_requests,
            &self.rejected_429,
            &self.rejected_5xx,
            &self.rejected_auth,
            &self.rejected_checksum,
            &self.rejected_other,
            &self.rejected_forbidden,
            &self.dropped,
            &self.outage_refused,
            &self.completed_after_disconnect,
            &self.bytes_received,
        ] {
            counter.store(0, Relaxed);
        }
        self.peak_in_flight
            .store(self.in_flight.load(Relaxed), Relaxed);
    }
}

/// One upload counted as in flight; dropping it (normally or on disconnect) uncounts it.
pub(crate) struct InFlight(Arc<Counters>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// One upload counted as held; dropping it uncounts it.
pub(crate) struct Held(Arc<Counters>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_and_peak() {
        let counters = Arc::new(Counters::default());
        let a = counters.try_enter(2).unwrap();
        let b = counters.try_enter(2).unwrap();
        assert!(counters.try_enter(2).is_none());
        drop(a);
        let c = counters.try_enter(2).unwrap();
        drop((b, c));
        let stats = counters.snapshot(0);
        assert_eq!((stats.in_flight, stats.peak_in_flight), (0, 2));
        assert!(counters.try_enter(0).is_some());
    }

    #[test]
    fn held_is_a_gauge_that_survives_reset() {
        let counters = Arc::new(Counters::default());
        let held = counters.hold();
        counters.reset();
        assert_eq!(counters.snapshot(0).held, 1);
        drop(held);
        assert_eq!(counters.snapshot(0).held, 0);
    }
}
