//! The unit's action lock: one snapshot or restore at a time. An advisory
//! `flock` on a file under the charm's state dir; the kernel drops it when
//! the process dies, so a killed action never leaves the unit locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another {holder} is running on this unit; wait for it to finish, then run this action again")]
    Busy { holder: String },
    #[error("cannot open the action lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct ActionLock {
    _file: File,
}

impl ActionLock {
    /// Takes the lock at once or fails; never waits.
    pub fn acquire(state_dir: &Path, what: &str) -> Result<Self, LockError> {
        let path = state_dir.join("action.lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        fsutil::create_private_dir(state_dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Busy {
                    holder: if holder.is_empty() {
                        "snapshot or restore".to_string()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Record who holds it, for the message a second caller gets.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{what} (pid {})", std::process::id());
        Ok(ActionLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_is_refused_with_the_holder_named() {
        let dir = std::env::temp_dir().join(format!("lock-test-{}", std::process::id()));
        let first = ActionLock::acquire(&dir, "snapshot").unwrap();
        let err = ActionLock::acquire(&dir, "restore").unwrap_err();
        assert!(err.to_string().contains("another snapshot (pid"), "{err}");
        drop(first);
        ActionLock::acquire(&dir, "restore").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
