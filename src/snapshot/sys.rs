//! The only `unsafe` code of the snapshot store: mapping the file, `flock`, `posix_fallocate`.
//!
//! Everything else in `snapshot/` is `#![deny(unsafe_code)]`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use memmap2::MmapMut;

/// Maps all of `file` shared and writable.
///
/// Only [`SnapshotStore`](super::SnapshotStore) calls this, once per file size, for a file it
/// owns exclusively (see the SAFETY comment).
pub(crate) fn map_file(file: &File) -> io::Result<MmapMut> {
    // SAFETY: memmap2 requires that nobody truncates or writes the mapped file behind the map's
    // back while it lives (that would be a data race on the mapped memory, or SIGBUS on access
    // past the new end). The file is written only through this map, by the single SnapshotStore
    // that holds the directory lock (`lock.rs`: flock across processes, a registry of
    // (operator, partition) within this process), and that store only ever grows the file, and
    // only before it remaps. Recovery reads with pread, which never aliases the mapped memory.
    // Outside processes that ignore the LOCK file are out of contract (documented on the store).
    unsafe { MmapMut::map_mut(file) }
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(true)` when acquired, `Ok(false)` when someone holds it.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: flock takes a descriptor and flags by value and touches no memory of ours; the
        // descriptor is open for the whole call because `file` is borrowed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Makes the file at least `len` bytes long with its blocks allocated, so that a later store
/// through the map cannot hit ENOSPC (which would be SIGBUS, not an error).
///
/// Falls back to a sparse `set_len` where the filesystem cannot preallocate.
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let off = libc::off_t::try_from(len).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "file length exceeds off_t")
        })?;
        loop {
            // SAFETY: posix_fallocate takes a descriptor and two integers by value and touches no
            // memory of ours; the descriptor is open for the whole call because `file` is borrowed.
            let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, off) };
            match rc {
                0 => return Ok(()),
                libc::EINTR => continue,
                libc::EOPNOTSUPP | libc::EINVAL => break,
                e => return Err(io::Error::from_raw_os_error(e)),
            }
        }
    }
    if file.metadata()?.len() < len {
        file.set_len(len)?;
    }
    Ok(())
}
