//! One daemon per data directory: an exclusive `flock(2)` on
//! `{data_dir}/sipbridge.lock`, holding the owner's pid for the error message.
//! The lock is released by the kernel when the process exits, however it exits.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another sipbridge (pid {pid}) is already running with data_dir {dir}; stop it first (systemctl stop sipbridge)"
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The owner's pid as written in the lock file ("unknown" if unreadable).
        pid: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot use lock file {path}: {source}")]
    Io {
        /// Lock file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
}

/// A held data-directory lock; dropping it releases the lock.
pub struct DataDirLock {
    _lock: Flock<File>,
}

/// Takes the lock on `data_dir`, failing at once if another process holds it.
pub fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock, LockError> {
    let path = data_dir.join("sipbridge.lock");
    let io = |source| LockError::Io { path: path.clone(), source };
    let file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0).map_err(io)?;
            lock.rewind().map_err(io)?;
            writeln!(lock, "{}", std::process::id()).map_err(io)?;
            lock.flush().map_err(io)?;
            Ok(DataDirLock { _lock: lock })
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            Err(LockError::Held {
                dir: data_dir.to_path_buf(),
                pid: if pid.is_empty() { "unknown".into() } else { pid.to_string() },
            })
        }
        Err((_, errno)) => Err(io(std::io::Error::from(errno))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_names_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_data_dir(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in the same
        // process conflicts just as another process would.
        match lock_data_dir(dir.path()) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Held, got {:?}", other.err()),
        }
        drop(first);
        assert!(lock_data_dir(dir.path()).is_ok());
    }
}
