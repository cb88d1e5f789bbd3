//! The pipeline's side of the GDPR tools: the suppression rules in force (the
//! state's and the shared ledger's, re-read at most every [`REFRESH`], so a rule
//! `forget` sets on any machine holds within a second), and the audit record of a delivery.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::deliver::Delivered;
use crate::privacy::audit::{DUPLICATE, UPLOADED};
use crate::privacy::{AuditEntry, Rules, Subject};
use crate::report::Outcome;
use crate::state::{Ledger, Store};

/// How stale the rules may be.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The rules as last read.
struct Loaded {
    at: Option<Instant>,
    rules: Arc<Rules>,
}

/// Suppression and audit for one folder.
pub struct Gdpr {
    root: PathBuf,
    host: String,
    loaded: Mutex<Loaded>,
    /// One reader at a time; the others use the rules as last read.
    reading: tokio::sync::Mutex<()>,
    /// Audit records of deliveries the server answered, by checksum, until they
    /// are recorded with the synced bytes.
    pending: Mutex<HashMap<String, AuditEntry>>,
}

impl Gdpr {
    pub fn new(root: PathBuf) -> Gdpr {
        Gdpr {
            root,
            host: crate::state::redis::hostname(),
            loaded: Mutex::new(Loaded {
                at: None,
                rules: Arc::new(Rules::default()),
            }),
            reading: tokio::sync::Mutex::new(()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The rules in force, read again when older than [`REFRESH`]. A ledger that
    /// cannot be read leaves its rules as last read (the state's are read anyway).
    pub async fn rules(&self, store: &dyn Store, ledger: &Ledger) -> Arc<Rules> {
        // A ledger that did not answer is asked again no sooner either: each look
        // during an outage would otherwise wait for it.
        let fresh = |l: &Loaded| l.at.is_some_and(|at| at.elapsed() < REFRESH);
        {
            let loaded = self.loaded.lock().unwrap();
            if fresh(&loaded) {
                return loaded.rules.clone();
            }
        }
        let Ok(_reading) = self.reading.try_lock() else {
            return self.loaded.lock().unwrap().rules.clone();
        };
        let mut rules = store.suppression_rules().unwrap_or_else(|e| {
            tracing::warn!("suppression rules: {e}");
            Vec::new()
        });
        let shared = ledger.rules().await;
        let complete = shared.is_ok();
        match shared {
            Ok(shared) => rules.extend(shared),
            Err(e) => tracing::debug!("suppression rules: {e}"),
        }
        let mut loaded = self.loaded.lock().unwrap();
        if !complete {
            // Keep what the ledger said last time.
            rules.extend(loaded.rules.iter().cloned());
        }
        *loaded = Loaded {
            at: Some(Instant::now()),
            rules: Arc::new(Rules::new(rules)),
        };
        loaded.rules.clone()
    }

    /// The outcome of a file a rule covers; `None` when no rule does.
    pub fn suppressed(
        &self,
        rules: &Rules,
        path: &Path,
        checksum: Option<&str>,
    ) -> Option<Outcome> {
        if rules.is_empty() {
            return None;
        }
        let rel = self.relative(path);
        let email = crate::meta::email(path);
        let subject = Subject {
            path: Some(&rel),
            email: email.as_deref(),
            checksum,
        };
        // The rule's id and kind only: its value (an email, a name) stays out of logs and pages.
        rules.matching(&subject).map(|rule| Outcome::Suppressed {
            rule: format!("rule {} ({})", rule.id, rule.kind.as_str()),
        })
    }

    /// What the audit trail keeps of a delivery the server took (or had); `None` otherwise.
    pub fn audit_entry(
        &self,
        path: &Path,
        checksum: &str,
        delivered: &Delivered,
    ) -> Option<AuditEntry> {
        let (outcome, candidate_id, candidate_name) = match delivered {
            Delivered::Uploaded { candidate_id } => (UPLOADED, candidate_id.clone(), None),
            Delivered::AlreadyOnServer { candidate_name } => {
                (DUPLICATE, None, candidate_name.clone())
            }
            _ => return None,
        };
        Some(AuditEntry {
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            path: Some(self.relative(path)),
            checksum: checksum.to_string(),
            candidate_id,
            candidate_name,
            job_hint: crate::meta::job_hint(&self.root, path),
            email: crate::meta::email(path),
            host: self.host.clone(),
            outcome: outcome.to_string(),
        })
    }

    /// Keep `entry` until its bytes are recorded as synced ([`Gdpr::take`]).
    pub fn hold(&self, entry: AuditEntry) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.insert(entry.checksum.clone(), entry);
    }

    /// The audit record of the delivery of these bytes, if one is waiting.
    pub fn take(&self, checksum: &str) -> Option<AuditEntry> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.remove(checksum)
    }

    fn relative(&self, path: &Path) -> String {
        crate::state::sqlite::relative_to(&self.root, &path.display().to_string())
    }
}
