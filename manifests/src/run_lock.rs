//! The OS run lock: `.wingflow-run.lock` in the output root keeps two runs apart.
//!
//! The lock is an advisory whole-file lock (`flock` on Unix, `LockFileEx` on Windows) held for as
//! long as the [`RunLock`] lives; the OS drops it when the process dies, so a killed run never
//! leaves a stale lock behind. The holder's pid is written into the file for the error message.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{Error, RUN_LOCK_FILE_NAME, Result};

/// Exclusive ownership of an output root for one run; released on drop.
#[derive(Debug)]
pub struct RunLock {
    // Held only for its lock; closing the handle releases it.
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the run lock of `root` (creating the directory and the lock file as needed) without
    /// waiting.
    ///
    /// Fails with [`Error::RunLocked`] ("another wingflow run holds <path> (pid N)") if another
    /// process, or another handle in this process, holds it.
    pub fn acquire(root: &Path) -> Result<RunLock> {
        fs::create_dir_all(root).map_err(|e| Error::io("create directory", root, e))?;
        let path = root.join(RUN_LOCK_FILE_NAME);
        // No truncation on open: until we hold the lock the pid inside belongs to the holder.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::RunLocked {
                    holder: if holder.is_empty() {
                        "unknown".to_owned()
                    } else {
                        holder.to_owned()
                    },
                    path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(|e| Error::io("write the pid into", &path, e))?;
        Ok(RunLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_is_refused_with_the_holder_pid_until_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description, so a second handle in the same
        // process contends exactly like a second process would.
        let err = RunLock::acquire(dir.path()).unwrap_err();
        let message = err.to_string();
        let expected = format!(
            "another wingflow run holds {} (pid {})",
            first.path().display(),
            std::process::id()
        );
        assert_eq!(message, expected);
        assert!(matches!(err, Error::RunLocked { .. }));

        drop(first);
        let again = RunLock::acquire(dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(again.path()).unwrap().trim(),
            std::process::id().to_string()
        );
    }
}
