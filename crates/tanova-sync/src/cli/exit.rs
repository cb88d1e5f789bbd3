//! Exit codes, defined in one place.

use std::process::ExitCode;

/// How a run ended, as the shell sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every file synced (or already was).
    Ok = 0,
    /// Some files failed; each is listed with its reason.
    SomeFailed = 1,
    /// Usage or configuration error, or the API key was rejected.
    Usage = 2,
    /// Stopped by Ctrl+C before the end.
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}
