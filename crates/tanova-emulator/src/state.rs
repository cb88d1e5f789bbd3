//! The state shared by every handler: knobs, counters and the store.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::knobs::Knobs;
use crate::stats::{Counters, Stats};
use crate::store::Store;

#[derive(Debug)]
pub(crate) struct AppState {
    /// A watch channel rather than a mutex, so a request can wait for a knob
    /// to change (a held upload, a hanging outage) without polling.
    knobs: watch::Sender<Knobs>,
    pub counters: Arc<Counters>,
    store: Mutex<Store>,
}

pub(crate) type SharedState = Arc<AppState>;

impl AppState {
    pub fn new(knobs: Knobs) -> SharedState {
        Arc::new(AppState {
            knobs: watch::Sender::new(knobs),
            counters: Arc::default(),
            store: Mutex::default(),
        })
    }

    /// A copy of the current knobs, so a request sees one consistent set.
    pub fn knobs(&self) -> Knobs {
        self.knobs.borrow().clone()
    }

    pub fn update_knobs(&self, f: impl FnOnce(&mut Knobs)) -> Knobs {
        let mut updated = None;
        self.knobs.send_modify(|knobs| {
            f(knobs);
            updated = Some(knobs.clone());
        });
        updated.unwrap_or_else(|| self.knobs())
    }

    /// Waits until the knobs satisfy `ready` (at once if they already do).
    pub async fn knobs_until(&self, ready: impl FnMut(&Knobs) -> bool) {
        let mut knobs = self.knobs.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we wait.
        let _ = knobs.wait_for(ready).await;
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    pub fn stats(&self) -> Stats {
        let unique = self.store().unique_checksums();
        self.counters.snapshot(unique)
    }

    pub fn reset(&self) {
        *self.store() = Store::default();
        self.counters.reset();
    }
}

/// Locks a mutex; critical sections never panic midway, so a poisoned lock is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
