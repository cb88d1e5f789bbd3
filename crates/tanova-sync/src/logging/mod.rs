//! Where log lines go and how they look: plain text on stderr (journald takes it as is), JSON lines for log shippers, a file rotated daily, the journal's native fields, or syslog (RFC 5424).
//!
//! Logging starts from the flags, before the config is read, so that config
//! errors are logged as asked; once the config is loaded, [`apply`] switches to
//! its `log_format` / `log_file` / `log_target` if they differ.
//!
//! Each file's outcome is also an event of its own ([`file_event`], target
//! [`FILE_TARGET`], fields `file` and `checksum`), so that a collector gets one
//! record per CV; on a terminal the progress reporter prints those lines
//! instead, so the plain-text stderr output leaves them out.

mod syslog;

use crate::error::Invalid;
use crate::report::Outcome;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

pub use syslog::SyslogAddr;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// The target of the one event per file outcome.
pub const FILE_TARGET: &str = "tanova_sync::file";

/// How many daily log files are kept.
pub const KEEP_LOG_FILES: usize = 14;

/// How each log line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (with timestamps when written to a file).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message` and the event's fields.
    Json,
}

impl LogFormat {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        Self::parse_text(text).map_err(Invalid)
    }

    fn parse_text(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("expected \"text\" or \"json\", got {other:?}")),
        }
    }
}

/// Where log lines go besides a file (`log_target`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error (what a service manager or a container runtime collects).
    #[default]
    Stderr,
    /// Standard output (`docker logs` and log drivers that read only stdout).
    Stdout,
    /// The systemd journal, with native fields (`PRIORITY`, `FILE`, `CHECKSUM`, `CODE_FILE`, …).
    Journald,
    /// RFC 5424 syslog, to the local socket or a collector.
    Syslog(SyslogAddr),
}

impl LogTarget {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        Self::parse_text(text).map_err(Invalid)
    }

    fn parse_text(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        match trimmed.to_ascii_lowercase().as_str() {
            "stderr" => Ok(LogTarget::Stderr),
            "stdout" => Ok(LogTarget::Stdout),
            "journald" => Ok(LogTarget::Journald),
            "syslog" => Ok(LogTarget::Syslog(SyslogAddr::local())),
            _ if trimmed.contains("://") => SyslogAddr::parse(trimmed).map(LogTarget::Syslog),
            _ => Err(format!(
                "expected \"stderr\", \"stdout\", \"journald\", \"syslog\" (the local /dev/log), \
                 or a syslog collector as udp://HOST:PORT, tcp://HOST:PORT or unix:///PATH; got {trimmed:?}"
            )),
        }
    }
}

/// The log's format and destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// Rotated daily: `DIR/NAME.log` is written as `DIR/NAME.YYYY-MM-DD.log`. None: `target`.
    pub file: Option<PathBuf>,
    /// Where lines go when there is no `file`.
    pub target: LogTarget,
}

type Inner = Layered<EnvFilter, Registry>;
type BoxedLayer = Box<dyn Layer<Inner> + Send + Sync>;

/// The installed output layer and the settings it was built from.
struct Installed {
    handle: reload::Handle<BoxedLayer, Inner>,
    settings: Mutex<LogSettings>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Install the process's logger: `filter` decides what is logged, `settings` where and how.
/// On an error (a log file that cannot be created) nothing is installed.
pub fn init(filter: EnvFilter, settings: &LogSettings) -> Result<(), Invalid> {
    install(filter, settings).map_err(Invalid)
}

fn install(filter: EnvFilter, settings: &LogSettings) -> Result<(), String> {
    let (layer, handle) = reload::Layer::new(output(settings)?);
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    let _ = INSTALLED.set(Installed {
        handle,
        settings: Mutex::new(settings.clone()),
    });
    Ok(())
}

/// Switch to `settings` (from the config) if they differ from those in force.
pub fn apply(settings: &LogSettings) -> Result<(), Invalid> {
    switch(settings).map_err(Invalid)
}

fn switch(settings: &LogSettings) -> Result<(), String> {
    let Some(installed) = INSTALLED.get() else {
        return Ok(());
    };
    let mut current = installed
        .settings
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *current == *settings {
        return Ok(());
    }
    let layer = output(settings)?;
    installed
        .handle
        .reload(layer)
        .map_err(|e| format!("cannot switch the log output: {e}"))?;
    *current = settings.clone();
    Ok(())
}

/// The output layer for `settings`.
fn output(settings: &LogSettings) -> Result<BoxedLayer, String> {
    let to_file = settings.file.is_some();
    let writer = match (&settings.file, &settings.target) {
        (Some(path), _) => BoxMakeWriter::new(rotating(path)?),
        (None, LogTarget::Stderr) => BoxMakeWriter::new(std::io::stderr),
        (None, LogTarget::Stdout) => BoxMakeWriter::new(std::io::stdout),
        (None, LogTarget::Journald) => return journald(),
        (None, LogTarget::Syslog(addr)) => {
            return Ok(Box::new(syslog::SyslogLayer::connect(addr)?));
        }
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    Ok(match settings.format {
        LogFormat::Json => Box::new(
            layer
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false),
        ),
        // Timestamps in a file; none on stderr: a terminal user does not need them and journald adds its own.
        LogFormat::Text if to_file => Box::new(layer.with_ansi(false)),
        // The progress reporter prints each file's line on the terminal itself.
        LogFormat::Text => Box::new(
            layer
                .with_ansi(settings.target == LogTarget::Stderr && std::io::stderr().is_terminal())
                .without_time()
                .with_filter(filter_fn(|meta| meta.target() != FILE_TARGET)),
        ),
    })
}

/// The journal's native protocol: PRIORITY from the level, the event's fields
/// as journal fields (`FILE`, `CHECKSUM`), `SYSLOG_IDENTIFIER=tanova-sync`.
#[cfg(target_os = "linux")]
fn journald() -> Result<BoxedLayer, String> {
    let layer = tracing_journald::layer()
        .map_err(|e| format!("cannot reach the journal at /run/systemd/journal/socket: {e}"))?
        .with_field_prefix(None)
        .with_syslog_identifier("tanova-sync".to_string());
    Ok(Box::new(layer))
}

#[cfg(not(target_os = "linux"))]
fn journald() -> Result<BoxedLayer, String> {
    Err("journald is only on Linux: use stderr, a log_file, or a syslog URL".to_string())
}

/// One event for a file's outcome: `file` and `checksum` as fields, at INFO
/// for a delivery, WARN for a failure, DEBUG for a skip.
pub fn file_event(path: &Path, checksum: Option<&str>, outcome: &Outcome) {
    // The outcomes logged at DEBUG below. (`file` stays a `&str` field: as a
    // lazy `Display` value the text format would print it without its quotes.)
    let quiet = matches!(
        outcome,
        Outcome::AlreadySynced
            | Outcome::SameContent
            | Outcome::Deferred { .. }
            | Outcome::Ignored { .. }
            | Outcome::WouldUpload { .. }
    );
    // Most files of a restart are already synced: no name formatted for a line nobody logs.
    if quiet && !tracing::enabled!(target: FILE_TARGET, tracing::Level::DEBUG) {
        return;
    }
    // `privacy_redact_logs`: the folder and the checksum's start, never the name.
    let file = crate::privacy::redact::file(path, checksum);
    let checksum = checksum.unwrap_or("");
    match outcome {
        Outcome::Uploaded { candidate_id, .. } => tracing::info!(
            target: FILE_TARGET,
            file, checksum, candidate_id = candidate_id.as_deref().unwrap_or(""),
            "uploaded"
        ),
        Outcome::OnServer { .. } => tracing::info!(
            target: FILE_TARGET, file, checksum, "already on the server"
        ),
        Outcome::Failed { reason, .. } => tracing::warn!(
            target: FILE_TARGET, file, checksum, "failed: {reason}"
        ),
        Outcome::AlreadySynced => {
            tracing::debug!(target: FILE_TARGET, file, checksum, "already synced")
        }
        Outcome::SameContent => tracing::debug!(
            target: FILE_TARGET, file, checksum, "same bytes as another file"
        ),
        Outcome::Deferred { reason } => tracing::debug!(
            target: FILE_TARGET, file, checksum, "deferred: {reason}"
        ),
        Outcome::Suppressed { rule } => tracing::info!(
            target: FILE_TARGET, file, checksum, "suppressed by {rule}: not uploaded"
        ),
        Outcome::Ignored { reason } => tracing::debug!(
            target: FILE_TARGET, file, checksum, "ignored: {reason}"
        ),
        Outcome::WouldUpload { .. } => tracing::debug!(
            target: FILE_TARGET, file, checksum, "would be uploaded (dry run)"
        ),
    }
}

/// A daily-rotated appender for `path`: `tanova.log` becomes `tanova.2024-05-01.log`.
fn rotating(path: &Path) -> Result<RollingFileAppender, String> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (prefix, suffix) =
        split_name(path).ok_or_else(|| format!("{}: not a file name to log to", path.display()))?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut builder = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(prefix)
        .max_log_files(KEEP_LOG_FILES);
    if let Some(suffix) = suffix {
        builder = builder.filename_suffix(suffix);
    }
    builder
        .build(&dir)
        .map_err(|e| format!("cannot write the log file in {}: {e}", dir.display()))
}

/// `tanova.log` → (`tanova`, `log`); `tanova` → (`tanova`, none).
fn split_name(path: &Path) -> Option<(String, Option<String>)> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    Some(match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() => {
            (stem.to_string(), Some(ext.to_string()))
        }
        _ => (name, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let table = [
            ("text", Ok(LogFormat::Text)),
            ("JSON", Ok(LogFormat::Json)),
            (" json ", Ok(LogFormat::Json)),
            ("xml", Err(())),
            ("", Err(())),
        ];
        for (text, want) in table {
            assert_eq!(LogFormat::parse(text).map_err(|_| ()), want, "{text:?}");
        }
    }

    #[test]
    fn targets() {
        let table = [
            ("stderr", Some(LogTarget::Stderr)),
            (" STDOUT ", Some(LogTarget::Stdout)),
            ("journald", Some(LogTarget::Journald)),
            ("syslog", Some(LogTarget::Syslog(SyslogAddr::local()))),
            (
                "udp://127.0.0.1:514",
                Some(LogTarget::Syslog(SyslogAddr::Udp("127.0.0.1:514".into()))),
            ),
            (
                "tcp://[::1]:601",
                Some(LogTarget::Syslog(SyslogAddr::Tcp("[::1]:601".into()))),
            ),
            (
                "unix:///run/log",
                Some(LogTarget::Syslog(SyslogAddr::Unix("/run/log".into()))),
            ),
            ("udp://127.0.0.1", None),
            ("http://127.0.0.1:80", None),
            ("eventlog", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(LogTarget::parse(text).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn file_names_split_for_rotation() {
        let table = [
            ("/var/log/tanova.log", Some(("tanova", Some("log")))),
            ("tanova-sync", Some(("tanova-sync", None))),
            ("logs/a.b.txt", Some(("a.b", Some("txt")))),
            (".hidden", Some((".hidden", None))),
            ("/", None),
        ];
        for (path, want) in table {
            let got = split_name(Path::new(path));
            let want = want.map(|(p, s)| (p.to_string(), s.map(str::to_string)));
            assert_eq!(got, want, "{path}");
        }
    }
}
