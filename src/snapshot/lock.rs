//! Exclusive ownership of a snapshot directory.
//!
//! Two layers:
//! - across processes, `flock(LOCK_EX | LOCK_NB)` on `<dir>/LOCK`, held while any store of this
//!   process uses the directory (a restarted pipeline cannot write next to a live one);
//! - within the process, a registry of the `(operator, partition)` pairs open per directory, so
//!   that the stores of all partitions of a thread-per-core pipeline share one directory while
//!   a second store for the *same* partition is refused.
//!
//! `flock` locks belong to an open file description, so opening `LOCK` twice in one process
//! would already conflict; the registry shares one description per directory instead.
#![deny(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use super::error::{LockHolder, SnapshotError};
use super::sys;

/// Name of the lock file inside a snapshot directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

#[derive(Default)]
struct DirState {
    file: Weak<File>,
    claimed: HashSet<(u64, u32)>,
}

fn registry() -> MutexGuard<'static, HashMap<PathBuf, DirState>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, DirState>>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Proof that this store owns `(operator_id, partition)` in `dir`. Released on drop.
#[derive(Debug)]
pub(crate) struct DirLock {
    dir: PathBuf,
    key: (u64, u32),
    file: Option<Arc<File>>,
}

impl DirLock {
    /// Claims `(operator_id, partition)` in `dir` (which must exist).
    pub(crate) fn acquire(
        dir: &Path,
        operator_id: u64,
        partition: u32,
    ) -> Result<DirLock, SnapshotError> {
        let dir = dir
            .canonicalize()
            .map_err(|e| SnapshotError::io("canonicalize", dir, e))?;
        let key = (operator_id, partition);
        let mut reg = registry();
        let state = reg.entry(dir.clone()).or_default();
        if state.claimed.contains(&key) {
            return Err(SnapshotError::Locked {
                dir,
                holder: LockHolder::ThisProcess {
                    operator_id,
                    partition,
                },
            });
        }
        let file = match state.file.upgrade() {
            Some(file) => file,
            None => {
                let file = lock_file(&dir)?;
                state.file = Arc::downgrade(&file);
                file
            }
        };
        state.claimed.insert(key);
        Ok(DirLock {
            dir,
            key,
            file: Some(file),
        })
    }
}

fn lock_file(dir: &Path) -> Result<Arc<File>, SnapshotError> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| SnapshotError::io("open", &path, e))?;
    match sys::try_lock_exclusive(&file) {
        Ok(true) => Ok(Arc::new(file)),
        Ok(false) => Err(SnapshotError::Locked {
            dir: dir.to_path_buf(),
            holder: LockHolder::OtherProcess,
        }),
        Err(e) => Err(SnapshotError::io("flock", &path, e)),
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let mut reg = registry();
        if let Some(state) = reg.get_mut(&self.dir) {
            state.claimed.remove(&self.key);
            if state.claimed.is_empty() {
                reg.remove(&self.dir);
            }
        }
        // Closing the last handle (and so releasing the flock) happens under the registry lock,
        // so a concurrent `acquire` never sees a dead Weak while the old lock is still held.
        self.file.take();
        drop(reg);
    }
}
