//! The state shared by every handler: knobs, counters and the store.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::knobs::Knobs;
use crate::stats::{Counters, Stats};
use crate::store::Store;

#[derive(Debug, Default)]
pub(crate) struct AppState {
    knobs: Mutex<Knobs>,
    pub counters: Arc<Counters>,
    store: Mutex<Store>,
}

pub(crate) type SharedState = Arc<AppState>;

impl AppState {
    pub fn new(knobs: Knobs) -> SharedState {
        Arc::new(AppState {
            knobs: Mutex::new(knobs),
            ..AppState::default()
        })
    }

    /// A copy of the current knobs, so a request sees one consistent set.
    pub fn knobs(&self) -> Knobs {
        lock(&self.knobs).clone()
    }

    pub fn update_knobs(&self, f: impl FnOnce(&mut Knobs)) -> Knobs {
        let mut knobs = lock(&self.knobs);
        f(&mut knobs);
        knobs.clone()
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
