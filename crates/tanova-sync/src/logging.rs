//! Where log lines go and how they look: plain text on stderr (journald takes it as is), JSON lines for log shippers, or a file rotated daily.
//!
//! Logging starts from the flags, before the config is read, so that config
//! errors are logged as asked; once the config is loaded, [`apply`] switches to
//! its `log_format` / `log_file` if they differ.

use crate::error::Invalid;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

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

/// The log's format and destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// Rotated daily: `DIR/NAME.log` is written as `DIR/NAME.YYYY-MM-DD.log`. None: stderr.
    pub file: Option<PathBuf>,
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

/// The formatting layer for `settings`.
fn output(settings: &LogSettings) -> Result<BoxedLayer, String> {
    let to_file = settings.file.is_some();
    let writer = match &settings.file {
        None => BoxMakeWriter::new(std::io::stderr),
        Some(path) => BoxMakeWriter::new(rotating(path)?),
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
        LogFormat::Text => Box::new(
            layer
                .with_ansi(std::io::stderr().is_terminal())
                .without_time(),
        ),
    })
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
