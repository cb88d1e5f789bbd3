//! Access to the service: whether uploads may go out now. A 401/403 is
//! confirmed with `GET /api/sync/health` before the key counts as rejected; a
//! watching agent then pauses, probes with backoff, takes a new key from its
//! config, and resumes by itself. The user may also hold uploads back
//! ([`Access::set_held`], the console's pause button): the gate then stays
//! closed until they are released, whatever the service says.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::api::wire::Health;
use crate::api::{ApiClient, ApiError};
use crate::config::ApiKey;

/// Why no upload can go out now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// The service refused the key on its health check, in its words.
    KeyRejected(String),
    /// The key is valid but may not upload (`permissions.canUpload` is false).
    NoUploadPermission,
    /// The service did not answer its health check; the last error.
    Unreachable(String),
}

impl Blocked {
    /// What the admin reads in the log: what is wrong and what to do.
    pub fn explain(&self, url: &str) -> String {
        match self {
            Blocked::KeyRejected(message) => format!(
                "the API key was rejected by {url} ({message}); uploads are paused. Put a valid \
                 key in the config file or api_key_file (it is picked up within seconds), or send \
                 SIGHUP; new CVs are queued meanwhile"
            ),
            Blocked::NoUploadPermission => format!(
                "the API key is valid for {url} but may not upload CVs (permissions.canUpload is \
                 false); uploads are paused until the key's permissions change"
            ),
            Blocked::Unreachable(message) => format!(
                "cannot reach the Tanova service at {url} ({message}); nothing is lost: what is \
                 not sent goes out once it answers again (a watching agent waits for it, `sync` \
                 leaves it to its next run)"
            ),
        }
    }

    /// Why, in a few words: the service's or the connection's own.
    pub fn reason(&self) -> String {
        match self {
            Blocked::KeyRejected(message) | Blocked::Unreachable(message) => message.clone(),
            Blocked::NoUploadPermission => {
                "the key may not upload CVs (permissions.canUpload is false)".to_string()
            }
        }
    }

    pub fn is_key_problem(&self) -> bool {
        !matches!(self, Blocked::Unreachable(_))
    }
}

/// What a 401/403 on one request turned out to mean.
#[derive(Debug)]
pub enum Verdict {
    /// The health check accepts the key: only this request was refused (a firewall, a proxy).
    RequestRefused(ApiError),
    /// The health check refuses the key too (or it may not upload).
    KeyRejected(ApiError),
    /// The health check did not answer: treat the refusal as passing.
    Unknown(ApiError),
}

/// Reads the key again from where the user keeps it (config file, `api_key_file`).
pub type KeySource = Arc<dyn Fn() -> Result<ApiKey, String> + Send + Sync>;
/// Hears every change of [`Access::blocked`], for the status server.
pub type OnChange = Arc<dyn Fn(Option<&Blocked>) + Send + Sync>;

/// The first wait before probing a rejected key again; it doubles up to [`KEY_PROBE_MAX`].
pub const KEY_PROBE_FIRST: Duration = Duration::from_secs(5);
pub const KEY_PROBE_MAX: Duration = Duration::from_secs(300);
/// The same for a service that does not answer.
pub const DOWN_PROBE_FIRST: Duration = Duration::from_secs(1);
/// Short: a probe is one cheap health call, and a passing outage should cost little delay.
pub const DOWN_PROBE_MAX: Duration = Duration::from_secs(15);
/// How often a paused agent reads its key source for a new key.
pub const KEY_RELOAD_EVERY: Duration = Duration::from_secs(2);

/// How long to wait before the `attempt`-th probe (from 0) while `blocked`. Pure.
pub fn probe_delay(blocked: &Blocked, attempt: u32) -> Duration {
    let (first, max) = if blocked.is_key_problem() {
        (KEY_PROBE_FIRST, KEY_PROBE_MAX)
    } else {
        (DOWN_PROBE_FIRST, DOWN_PROBE_MAX)
    };
    first.saturating_mul(1 << attempt.min(16)).min(max)
}

/// The gate every delivery passes. Cheap to share behind an `Arc`.
pub struct Access {
    api: Arc<ApiClient>,
    state: watch::Sender<Option<Blocked>>,
    /// Uploads held back by the user (the console's pause), apart from what the service says.
    held: watch::Sender<bool>,
    /// One health check at a time, so a burst of 401s costs one check.
    confirming: tokio::sync::Mutex<()>,
    reload: std::sync::OnceLock<KeySource>,
    /// The key in use, to notice a new one.
    key: Mutex<ApiKey>,
    /// SIGHUP: read the key again and probe now.
    wake: Notify,
    on_change: Option<OnChange>,
}

impl Access {
    pub fn new(api: Arc<ApiClient>, key: ApiKey) -> Self {
        Access {
            api,
            state: watch::Sender::new(None),
            held: watch::Sender::new(false),
            confirming: tokio::sync::Mutex::new(()),
            reload: std::sync::OnceLock::new(),
            key: Mutex::new(key),
            wake: Notify::new(),
            on_change: None,
        }
    }

    /// Where a paused agent looks for a new key; only the first call counts.
    pub fn set_key_source(&self, source: KeySource) {
        let _ = self.reload.set(source);
    }

    pub fn with_on_change(mut self, on_change: OnChange) -> Self {
        self.on_change = Some(on_change);
        self
    }

    pub fn blocked(&self) -> Option<Blocked> {
        self.state.borrow().clone()
    }

    /// Read the key again and probe at once (SIGHUP).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Ask the service about the key once: open the gate, or close it with the reason.
    pub async fn check(&self) -> Result<Health, ApiError> {
        match self.api.health().await {
            Ok(health) => {
                if health.permissions.as_ref().is_some_and(|p| !p.can_upload) {
                    self.close(Blocked::NoUploadPermission);
                } else {
                    self.open();
                }
                Ok(health)
            }
            Err(e) => {
                match &e {
                    ApiError::Rejected { message, .. } => {
                        self.close(Blocked::KeyRejected(message.clone()))
                    }
                    other => self.close(Blocked::Unreachable(other.to_string())),
                }
                Err(e)
            }
        }
    }

    /// A request was refused with 401/403: is it the key, or only this request?
    pub async fn confirm_refusal(&self, refusal: ApiError) -> Verdict {
        let _one = self.confirming.lock().await;
        if self.blocked().is_some_and(|b| b.is_key_problem()) {
            return Verdict::KeyRejected(refusal);
        }
        match self.check().await {
            Ok(_) if self.blocked().is_none() => Verdict::RequestRefused(refusal),
            Ok(_) => Verdict::KeyRejected(refusal),
            Err(ApiError::Rejected { .. }) => Verdict::KeyRejected(refusal),
            Err(e) => Verdict::Unknown(e),
        }
    }

    /// A delivery ran out of retries: is the service down for everyone? Closes the gate if so.
    pub async fn confirm_outage(&self) -> bool {
        let _one = self.confirming.lock().await;
        if self.blocked().is_some() {
            return true;
        }
        self.check().await.is_err() || self.blocked().is_some()
    }

    /// A request got no answer within `request_timeout`, or an answer that is
    /// not the service's ([`ApiError::NotTheService`]: a portal's page): check
    /// the service's health now, in the background, instead of after every
    /// retry has waited as long. If it does not answer either, the gate
    /// closes (logged, and `/health` says the service is unreachable); if it
    /// does, the log says what that means. One check at a time: a burst of
    /// timeouts costs one.
    pub fn suspect_outage(self: &Arc<Self>, error: &ApiError) {
        let access = self.clone();
        let what = match error {
            ApiError::NotTheService { message } => format!(
                "{message}; but the service answers its health check, so only some requests \
                 meet it: retrying"
            ),
            other => format!(
                "no answer in time ({other}), but the service answers its health check: it is \
                 slow, not down; retrying (raise request_timeout if this keeps happening)"
            ),
        };
        tokio::spawn(async move {
            let Ok(_one) = access.confirming.try_lock() else {
                return;
            };
            if access.blocked().is_some() {
                return;
            }
            if access.check().await.is_ok() && access.blocked().is_none() {
                tracing::warn!("{what}");
            }
        });
    }

    /// Hold uploads back (`true`) or let them go again: no new delivery starts
    /// while held; uploads already on the wire finish. Logged when it changes.
    pub fn set_held(&self, held: bool) {
        if self.held.send_replace(held) != held {
            tracing::info!(
                "{}",
                if held {
                    "uploads paused by the user"
                } else {
                    "uploads resumed by the user"
                }
            );
        }
    }

    /// Whether the user holds uploads back.
    pub fn held(&self) -> bool {
        *self.held.borrow()
    }

    /// Wait until uploads may go out (the service accepts the key and answers,
    /// and the user does not hold them back); false when `cancel` fired first.
    pub async fn wait_open(&self, cancel: &CancellationToken) -> bool {
        let mut state = self.state.subscribe();
        let mut held = self.held.subscribe();
        loop {
            if state.borrow_and_update().is_none() && !*held.borrow_and_update() {
                return true;
            }
            let alive = tokio::select! {
                _ = cancel.cancelled() => return false,
                changed = state.changed() => changed.is_ok(),
                changed = held.changed() => changed.is_ok(),
            };
            if !alive {
                return false;
            }
        }
    }

    /// While watching: whenever the gate is closed, probe with backoff (and read
    /// the key source for a new key) until it opens. `on_open` hears each health
    /// answer that opened it. Returns when `cancel` fires.
    pub async fn keep_probing(&self, cancel: &CancellationToken, on_open: impl Fn(&Health)) {
        let mut state = self.state.subscribe();
        loop {
            let closed = tokio::select! {
                _ = cancel.cancelled() => return,
                closed = state.wait_for(Option::is_some) => match closed {
                    Ok(closed) => closed.clone(),
                    Err(_) => return,
                },
            };
            let Some(mut blocked) = closed else { continue };
            let mut attempt = 0;
            let mut next_probe = tokio::time::Instant::now() + probe_delay(&blocked, attempt);
            while self.blocked().is_some() {
                let reload_at = tokio::time::Instant::now() + KEY_RELOAD_EVERY;
                let woken = tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.wake.notified() => true,
                    _ = tokio::time::sleep_until(next_probe.min(reload_at)) => false,
                };
                let new_key = self.reload_key();
                let due = woken || new_key || tokio::time::Instant::now() >= next_probe;
                if !due {
                    continue;
                }
                if let Ok(health) = self.check().await {
                    if self.blocked().is_none() {
                        on_open(&health);
                        break;
                    }
                }
                let now_blocked = self.blocked().unwrap_or(blocked.clone());
                attempt = if now_blocked == blocked {
                    attempt + 1
                } else {
                    0
                };
                blocked = now_blocked;
                next_probe = tokio::time::Instant::now() + probe_delay(&blocked, attempt);
            }
        }
    }

    /// Read the key source; true when it holds a new key, which is then in use.
    fn reload_key(&self) -> bool {
        let Some(source) = self.reload.get() else {
            return false;
        };
        let key = match source() {
            Ok(key) => key,
            Err(e) => {
                tracing::debug!("reading the key again: {e}");
                return false;
            }
        };
        let mut current = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if current.expose() == key.expose() {
            return false;
        }
        if let Err(e) = self.api.set_key(&key) {
            tracing::error!("the new key cannot be used: {e}");
            return false;
        }
        tracing::info!("using the new API key {}", key.redacted());
        *current = key;
        true
    }

    fn open(&self) {
        let was = self.state.send_replace(None);
        if let Some(was) = was {
            let what = if was.is_key_problem() {
                "the API key is accepted again"
            } else {
                "the Tanova service answers again"
            };
            tracing::info!("{what}; resuming uploads");
            self.changed(None);
        }
    }

    fn close(&self, blocked: Blocked) {
        let was = self.state.send_replace(Some(blocked.clone()));
        // Logged on each new reason, not on every probe that finds it unchanged.
        if was.as_ref() != Some(&blocked) {
            let url = self.api.endpoint("");
            tracing::error!("{}", blocked.explain(url.as_str()));
            self.changed(Some(&blocked));
        }
    }

    fn changed(&self, blocked: Option<&Blocked>) {
        if let Some(on_change) = &self.on_change {
            on_change(blocked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_back_off_to_a_cap() {
        let key = Blocked::KeyRejected("no".into());
        let down = Blocked::Unreachable("refused".into());
        let s = Duration::from_secs;
        let table = [
            (&key, 0, s(5)),
            (&key, 1, s(10)),
            (&key, 5, s(160)),
            (&key, 6, s(300)),
            (&key, 1000, s(300)),
            (&down, 0, s(1)),
            (&down, 3, s(8)),
            (&down, 4, s(15)),
            (&down, u32::MAX, s(15)),
        ];
        for (blocked, attempt, want) in table {
            assert_eq!(probe_delay(blocked, attempt), want, "{blocked:?} {attempt}");
        }
    }

    #[test]
    fn explanations_say_what_to_do() {
        let url = "https://tanova.example/";
        let key = Blocked::KeyRejected("Invalid API key".into()).explain(url);
        assert!(
            key.contains("paused") && key.contains("SIGHUP") && key.contains(url),
            "{key}"
        );
        let down = Blocked::Unreachable("connection refused".into()).explain(url);
        assert!(
            down.contains("connection refused") && down.contains("next run"),
            "{down}"
        );
        assert!(!Blocked::Unreachable(String::new()).is_key_problem());
        assert!(Blocked::NoUploadPermission.is_key_problem());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_closes_the_gate_until_released_whatever_the_service_says() {
        let key = ApiKey::new("tanova_sk_test_0000000000");
        let url = url::Url::parse("http://127.0.0.1:9/").unwrap();
        let timeouts = crate::api::Timeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
        };
        let access = Arc::new(Access::new(
            Arc::new(ApiClient::new(&url, &key, timeouts).unwrap()),
            key,
        ));
        let cancel = CancellationToken::new();
        assert!(access.wait_open(&cancel).await, "open at first");
        access.set_held(true);
        assert!(access.held());
        let waiter = {
            let (access, cancel) = (access.clone(), cancel.clone());
            tokio::spawn(async move { access.wait_open(&cancel).await })
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished(), "held: no delivery may start");
        // The service answering again does not lift the user's hold.
        access.open();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        access.set_held(false);
        assert!(waiter.await.unwrap(), "released: deliveries go on");
        access.set_held(true);
        cancel.cancel();
        assert!(!access.wait_open(&cancel).await, "a stop ends the wait");
    }
}
