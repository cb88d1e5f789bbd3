//! Settings of one part of the agent, validated from the config into plain
//! values: a leaf that the parts depend on, so the config depends on none of them.

use std::time::Duration;

/// How changes are discovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// File-system events, with a rescan every `rescan_every`.
    Events,
    /// Only rescans, every `poll_every`: for SMB/NFS shares that deliver no events.
    Poll,
}

/// How watch mode discovers changes.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub mode: WatchMode,
    /// How long a file must be left alone before it counts as complete (where there is no close event).
    pub settle: Duration,
    pub rescan_every: Duration,
    pub poll_every: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            mode: WatchMode::Events,
            settle: DEFAULT_SETTLE,
            rescan_every: DEFAULT_RESCAN_EVERY,
            poll_every: DEFAULT_POLL_EVERY,
        }
    }
}

pub const DEFAULT_SETTLE: Duration = Duration::from_millis(300);
pub const DEFAULT_RESCAN_EVERY: Duration = Duration::from_secs(600);
pub const DEFAULT_POLL_EVERY: Duration = Duration::from_secs(10);

/// What the agent keeps and shows of personal data (`privacy_redact_logs`, `privacy_retain_days`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrivacySettings {
    /// Name a file in logs, the status page and `/health` by its folder and checksum only.
    pub redact_logs: bool,
    /// Delete paths, names and emails from the local state after this many days; `None`: keep them.
    pub retain_days: Option<u32>,
}

/// The longest `privacy_retain_days` accepted (a hundred years).
pub const MAX_RETAIN_DAYS: u64 = 36_500;
