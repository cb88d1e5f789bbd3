//! One agent per state directory: an exclusive lock on a file holding the owner's pid.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Result, StateError};

pub const LOCK_FILE: &str = "agent.lock";

/// Held for the agent's lifetime; the OS releases it when the process ends, even on kill -9.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    pub path: PathBuf,
}

/// Take the state directory's lock, or say which process holds it.
pub fn acquire(dir: &Path) -> Result<InstanceLock> {
    let path = dir.join(LOCK_FILE);
    let err = |message: String| StateError::File {
        path: path.clone(),
        message,
    };
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|e| err(format!("cannot open the lock file: {e}")))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another process".to_string()
            } else {
                format!("pid {holder}")
            };
            return Err(err(format!(
                "another tanova-sync ({who}) is already running with the state directory {}; \
                 stop it first, or give this one its own --state-dir",
                dir.display()
            )));
        }
        Err(TryLockError::Error(e)) => return Err(err(format!("cannot lock: {e}"))),
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()));
    written.map_err(|e| err(format!("cannot write the lock file: {e}")))?;
    Ok(InstanceLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        let err = acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        acquire(dir.path()).expect("free again once dropped");
    }
}
