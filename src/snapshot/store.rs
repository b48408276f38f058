//! The per-partition snapshot store: a preallocated, memory-mapped, double-buffered file.
#![deny(unsafe_code)]

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use super::error::{FlushStage, Slot, SnapshotError};
use super::format::{
    self, Extent, Header, SnapshotMeta, HEADER_AREA, HEADER_LEN, MAX_PAYLOAD_LEN, REGION_ALIGN,
};
use super::lock::DirLock;
use super::recover::{self, Recovered, SlotScan};
use super::sys;

/// Injects flush failures, to test that a failed flush abandons its epoch (and for chaos runs).
///
/// Called right before each of the two flushes of a [`commit`](SnapshotStore::commit); an `Err`
/// is treated exactly like a failing `msync`. Closures implement it.
///
/// ```
/// use std::io;
/// use ringwait::snapshot::{FlushFault, FlushStage};
/// let mut fail_headers = |stage: FlushStage, _epoch: u64| match stage {
///     FlushStage::Header => Err(io::Error::other("injected")),
///     FlushStage::Payload => Ok(()),
/// };
/// assert!(fail_headers.before_flush(FlushStage::Header, 1).is_err());
/// ```
pub trait FlushFault: Send {
    /// Decides whether the flush of `stage` for `epoch` fails.
    fn before_flush(&mut self, stage: FlushStage, epoch: u64) -> io::Result<()>;
}

impl<F: FnMut(FlushStage, u64) -> io::Result<()> + Send> FlushFault for F {
    fn before_flush(&mut self, stage: FlushStage, epoch: u64) -> io::Result<()> {
        self(stage, epoch)
    }
}

/// The latest committed snapshot, as the writer knows it.
#[derive(Debug, Clone, Copy)]
struct Live {
    slot: Slot,
    meta: SnapshotMeta,
    payload: Extent,
}

/// A staged snapshot: payload copied into the map, header encoded but not yet written.
#[derive(Debug, Clone, Copy)]
struct Pending {
    slot: Slot,
    header: [u8; HEADER_LEN],
    meta: SnapshotMeta,
    payload: Extent,
}

/// The snapshot file of one operator partition: `<dir>/op-<operator_id>-p<partition>.snap`.
///
/// Layout and header format: see [`format`](super::format). Each epoch's payload goes to the half
/// of the payload area that does not hold the latest committed payload, and its header to the
/// slot that does not hold the latest committed header, so a crash at any point leaves the
/// previous epoch intact. A [`commit`](Self::commit) flushes the payload *before* writing and
/// flushing the header.
///
/// A payload larger than a half grows the file (doubling at least); it never fails for size below
/// [`MAX_PAYLOAD_LEN`]. An existing file keeps its size when opened with a smaller capacity.
///
/// The store owns its partition: a second store for the same operator and partition in the same
/// directory, in this process or another, gets [`SnapshotError::Locked`]. Other partitions of the
/// same process share the directory. Processes that write the file while ignoring `<dir>/LOCK`
/// are out of contract (the map would see their writes; truncation would raise SIGBUS).
///
/// The hot path is [`stage`](Self::stage) (copy + CRC); [`commit`](Self::commit) does the
/// `msync`s and may run later, e.g. after the next batch of records. The store is `Send`, so a
/// commit can also be moved to a blocking thread.
///
/// ```
/// use ringwait::snapshot::{SnapshotMeta, SnapshotStore};
/// # let dir = std::env::temp_dir().join(format!("rw-doc-store-{}", std::process::id()));
/// let mut store = SnapshotStore::open(&dir, 7, 0, 64 * 1024)?;
/// let meta = SnapshotMeta { epoch: 1, capacity: 1000, record_count: 1, source_position: 42, ..Default::default() };
/// store.stage(meta, b"one record")?; // cheap: copy into the map
/// store.commit()?;                   // msync payload, then header
/// drop(store);
///
/// let rec = SnapshotStore::recover(&dir, 7, 0)?.expect("epoch 1");
/// assert_eq!(rec.meta, meta);
/// assert_eq!(rec.payload, b"one record");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), ringwait::snapshot::SnapshotError>(())
/// ```
pub struct SnapshotStore {
    path: PathBuf,
    operator_id: u64,
    partition: u32,
    /// Size of each payload half; a multiple of REGION_ALIGN; `HEADER_AREA + 2 * region <= map.len()`.
    region: u64,
    live: Option<Live>,
    pending: Option<Pending>,
    /// The file grew since its size was last made durable: the next commit syncs it before
    /// writing a header that may point past the old end.
    size_dirty: bool,
    fault: Option<Box<dyn FlushFault>>,
    map: MmapMut,
    file: File,
    // Dropped last: the map and the file are closed before the lock is released.
    _lock: DirLock,
}

impl fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("path", &self.path)
            .field("region", &self.region)
            .field("latest", &self.live.map(|l| l.meta.epoch))
            .field("staged", &self.pending.map(|p| p.meta.epoch))
            .finish_non_exhaustive()
    }
}

/// The file name of a partition's snapshot file inside `dir`.
///
/// ```
/// use std::path::Path;
/// use ringwait::snapshot::snapshot_path;
/// assert_eq!(snapshot_path(Path::new("/ckpt"), 7, 2), Path::new("/ckpt/op-7-p2.snap"));
/// ```
pub fn snapshot_path(dir: &Path, operator_id: u64, partition: u32) -> PathBuf {
    dir.join(format!("op-{operator_id}-p{partition}.snap"))
}

impl SnapshotStore {
    /// Opens (creating if needed) the snapshot file of `operator_id`/`partition` in `dir`, with
    /// room for payloads of `payload_capacity` bytes without growing (rounded up to 4 KiB).
    ///
    /// Creates `dir`, takes the directory lock, and creates the file atomically (temporary file,
    /// preallocate, fsync, rename, fsync the directory). An existing file is never shrunk or
    /// rewritten: its latest valid epoch stays intact, and new epochs must be newer. A corrupt
    /// existing file is not an error here (call [`recover`](Self::recover) first to decide);
    /// its contents are overwritten by the next two commits.
    ///
    /// ```
    /// # use ringwait::snapshot::SnapshotStore;
    /// # let dir = std::env::temp_dir().join(format!("rw-doc-open-{}", std::process::id()));
    /// let store = SnapshotStore::open(&dir, 1, 3, 10_000)?;
    /// assert_eq!(store.region_capacity(), 12_288);
    /// assert!(store.path().ends_with("op-1-p3.snap"));
    /// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), ringwait::snapshot::SnapshotError>(())
    /// ```
    pub fn open(
        dir: impl AsRef<Path>,
        operator_id: u64,
        partition: u32,
        payload_capacity: u64,
    ) -> Result<Self, SnapshotError> {
        let dir = dir.as_ref();
        if payload_capacity > MAX_PAYLOAD_LEN {
            return Err(SnapshotError::PayloadTooLarge {
                len: payload_capacity,
                limit: MAX_PAYLOAD_LEN,
            });
        }
        fs::create_dir_all(dir).map_err(|e| SnapshotError::io("create directory", dir, e))?;
        let lock = DirLock::acquire(dir, operator_id, partition)?;
        let path = snapshot_path(dir, operator_id, partition);
        let wanted = format::round_region(payload_capacity);
        let file = open_or_create(&path, HEADER_AREA + 2 * wanted)?;
        let size = file
            .metadata()
            .map_err(|e| SnapshotError::io("stat", &path, e))?
            .len();
        let slots = recover::scan(&file, operator_id, partition)
            .map_err(|e| SnapshotError::io("read", &path, e))?;
        let live = newest_valid(slots);
        let existing = size.saturating_sub(HEADER_AREA) / 2 / REGION_ALIGN * REGION_ALIGN;
        let region = wanted.max(existing);
        if size < HEADER_AREA + 2 * region {
            sys::preallocate(&file, HEADER_AREA + 2 * region)
                .and_then(|()| file.sync_all())
                .map_err(|e| SnapshotError::io("preallocate", &path, e))?;
        }
        let map = sys::map_file(&file).map_err(|e| SnapshotError::io("map", &path, e))?;
        let store = SnapshotStore {
            path,
            operator_id,
            partition,
            region,
            live,
            pending: None,
            size_dirty: false,
            fault: None,
            map,
            file,
            _lock: lock,
        };
        store.prefault_next(wanted);
        Ok(store)
    }

    /// Reads the newest valid snapshot of `operator_id`/`partition` in `dir` with plain `pread`.
    ///
    /// `Ok(None)` when the file does not exist or was never written. The rules (which header
    /// wins, what is checked) are in [`recover`](super::recover): in short, the newest epoch whose
    /// header *and* payload check out, falling back to the other slot's older epoch when the
    /// newest is damaged; [`SnapshotError::Corrupt`] naming each header's problem when neither
    /// is valid.
    ///
    /// Does not take the lock; call it before [`open`](Self::open) or while holding the store.
    ///
    /// ```
    /// # use ringwait::snapshot::SnapshotStore;
    /// # let dir = std::env::temp_dir().join(format!("rw-doc-recover-{}", std::process::id()));
    /// assert_eq!(SnapshotStore::recover(&dir, 1, 0)?, None); // no file yet
    /// # Ok::<(), ringwait::snapshot::SnapshotError>(())
    /// ```
    pub fn recover(
        dir: impl AsRef<Path>,
        operator_id: u64,
        partition: u32,
    ) -> Result<Option<Recovered>, SnapshotError> {
        let path = snapshot_path(dir.as_ref(), operator_id, partition);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SnapshotError::io("open", &path, e)),
        };
        recover::recover_from(&file, &path, operator_id, partition)
    }

    /// Copies `payload` into the free half of the map and prepares its header; nothing is
    /// durable (or visible to recovery as a snapshot) until [`commit`](Self::commit).
    ///
    /// This is the hot-path half of a snapshot: a copy and a CRC, plus a file growth (rare) when
    /// the payload outgrows a half. Fails when `meta.epoch` is not newer than the latest
    /// committed epoch, or when another epoch is staged.
    ///
    /// ```
    /// # use ringwait::snapshot::{SnapshotError, SnapshotMeta, SnapshotStore};
    /// # let dir = std::env::temp_dir().join(format!("rw-doc-stage-{}", std::process::id()));
    /// let mut store = SnapshotStore::open(&dir, 1, 0, 4096)?;
    /// store.stage(SnapshotMeta { epoch: 5, ..Default::default() }, &[0u8; 10_000])?; // grows
    /// assert!(matches!(
    ///     store.stage(SnapshotMeta { epoch: 6, ..Default::default() }, b""),
    ///     Err(SnapshotError::StagePending { epoch: 5 })
    /// ));
    /// store.commit()?;
    /// assert!(matches!(
    ///     store.stage(SnapshotMeta { epoch: 5, ..Default::default() }, b""),
    ///     Err(SnapshotError::EpochNotIncreasing { latest: 5, given: 5 })
    /// ));
    /// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), SnapshotError>(())
    /// ```
    pub fn stage(&mut self, meta: SnapshotMeta, payload: &[u8]) -> Result<(), SnapshotError> {
        if let Some(p) = self.pending {
            return Err(SnapshotError::StagePending {
                epoch: p.meta.epoch,
            });
        }
        if let Some(live) = self.live {
            if meta.epoch <= live.meta.epoch {
                return Err(SnapshotError::EpochNotIncreasing {
                    latest: live.meta.epoch,
                    given: meta.epoch,
                });
            }
        }
        let len = payload.len() as u64;
        if len > MAX_PAYLOAD_LEN {
            return Err(SnapshotError::PayloadTooLarge {
                len,
                limit: MAX_PAYLOAD_LEN,
            });
        }
        let placement = format::place(self.region, self.live.map(|l| l.payload), len);
        if placement.region > self.region {
            self.grow(placement.region)?;
        }
        let start = to_usize(placement.offset);
        self.map[start..start + payload.len()].copy_from_slice(payload);
        let extent = Extent {
            offset: placement.offset,
            len,
        };
        let header = Header {
            operator_id: self.operator_id,
            partition: self.partition,
            meta,
            payload: extent,
            payload_crc: crc32fast::hash(payload),
        };
        self.pending = Some(Pending {
            slot: self
                .live
                .map_or(Slot::for_epoch(meta.epoch), |l| l.slot.other()),
            header: format::encode_header(&header),
            meta,
            payload: extent,
        });
        Ok(())
    }

    /// Makes the staged epoch durable: flushes its payload, then writes and flushes its header.
    /// Returns the committed epoch.
    ///
    /// If a flush fails the epoch is abandoned ([`SnapshotError::Flush`]): the header slot is
    /// restored in memory and the previous epoch stays the latest, on disk and for the next
    /// `stage` (which may retry with the same epoch number). As with any `fsync` failure, the
    /// kernel may have dropped the dirty pages; the previous epoch's data was flushed by its
    /// own commit and is not touched.
    ///
    /// ```
    /// # use ringwait::snapshot::{SnapshotError, SnapshotMeta, SnapshotStore};
    /// # let dir = std::env::temp_dir().join(format!("rw-doc-commit-{}", std::process::id()));
    /// let mut store = SnapshotStore::open(&dir, 1, 0, 4096)?;
    /// assert!(matches!(store.commit(), Err(SnapshotError::NothingStaged)));
    /// store.stage(SnapshotMeta { epoch: 1, ..Default::default() }, b"x")?;
    /// assert_eq!(store.commit()?, 1);
    /// assert_eq!(store.latest().map(|m| m.epoch), Some(1));
    /// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), SnapshotError>(())
    /// ```
    pub fn commit(&mut self) -> Result<u64, SnapshotError> {
        let p = self.pending.take().ok_or(SnapshotError::NothingStaged)?;
        let epoch = p.meta.epoch;
        self.flush(
            FlushStage::Payload,
            epoch,
            p.payload.offset,
            p.payload.len,
            self.size_dirty,
        )?;
        self.size_dirty = false;
        let at = to_usize(format::slot_offset(p.slot));
        let mut previous = [0u8; HEADER_LEN];
        previous.copy_from_slice(&self.map[at..at + HEADER_LEN]);
        self.map[at..at + HEADER_LEN].copy_from_slice(&p.header);
        if let Err(e) = self.flush(
            FlushStage::Header,
            epoch,
            at as u64,
            HEADER_LEN as u64,
            false,
        ) {
            self.map[at..at + HEADER_LEN].copy_from_slice(&previous);
            return Err(e);
        }
        self.live = Some(Live {
            slot: p.slot,
            meta: p.meta,
            payload: p.payload,
        });
        self.prefault_next(p.payload.len);
        Ok(epoch)
    }

    /// [`stage`](Self::stage) then [`commit`](Self::commit).
    ///
    /// ```
    /// # use ringwait::snapshot::{SnapshotMeta, SnapshotStore};
    /// # let dir = std::env::temp_dir().join(format!("rw-doc-write-{}", std::process::id()));
    /// let mut store = SnapshotStore::open(&dir, 1, 0, 4096)?;
    /// for epoch in 1..=3 {
    ///     store.write(SnapshotMeta { epoch, ..Default::default() }, &[epoch as u8; 100])?;
    /// }
    /// assert_eq!(SnapshotStore::recover(&dir, 1, 0)?.unwrap().payload, [3u8; 100]);
    /// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), ringwait::snapshot::SnapshotError>(())
    /// ```
    pub fn write(&mut self, meta: SnapshotMeta, payload: &[u8]) -> Result<u64, SnapshotError> {
        self.stage(meta, payload)?;
        self.commit()
    }

    /// Drops the staged epoch, if any, and returns its number. The latest committed epoch is
    /// untouched.
    pub fn abandon(&mut self) -> Option<u64> {
        self.pending.take().map(|p| p.meta.epoch)
    }

    /// Makes committed `epoch` the latest again and returns it: the newer epoch in the other
    /// slot, if any, belongs to a checkpoint that never completed, and the next commit
    /// overwrites it — so the restored epoch survives until a newer one is committed. Any
    /// staged epoch is dropped. [`SnapshotError::EpochMissing`] when neither valid header
    /// holds `epoch`.
    ///
    /// ```
    /// # use ringwait::snapshot::{SnapshotMeta, SnapshotStore};
    /// # let dir = std::env::temp_dir().join(format!("rw-doc-rollback-{}", std::process::id()));
    /// let mut store = SnapshotStore::open(&dir, 1, 0, 4096)?;
    /// store.write(SnapshotMeta { epoch: 1, ..Default::default() }, b"one")?;
    /// store.write(SnapshotMeta { epoch: 2, ..Default::default() }, b"two")?;
    /// assert_eq!(store.rollback_to(1)?.payload, b"one");
    /// store.write(SnapshotMeta { epoch: 3, ..Default::default() }, b"three")?; // replaces 2
    /// assert!(store.rollback_to(2).is_err());
    /// assert_eq!(store.rollback_to(1)?.payload, b"one");
    /// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), ringwait::snapshot::SnapshotError>(())
    /// ```
    pub fn rollback_to(&mut self, epoch: u64) -> Result<Recovered, SnapshotError> {
        self.pending = None;
        let slots = recover::scan(&self.file, self.operator_id, self.partition)
            .map_err(|e| SnapshotError::io("read", &self.path, e))?;
        let status = [slots[0].status(), slots[1].status()];
        for (slot, scan) in Slot::ALL.into_iter().zip(slots) {
            if let SlotScan::Valid(h, payload) = scan {
                if h.meta.epoch == epoch {
                    self.live = Some(Live {
                        slot,
                        meta: h.meta,
                        payload: h.payload,
                    });
                    return Ok(Recovered {
                        meta: h.meta,
                        payload,
                        slot,
                        other: status[slot.other().index()].clone(),
                    });
                }
            }
        }
        let [a, b] = status;
        Err(SnapshotError::EpochMissing {
            path: self.path.clone(),
            epoch,
            a,
            b,
        })
    }

    /// Installs (or removes) a flush fault injector.
    ///
    /// ```
    /// # use std::io;
    /// # use ringwait::snapshot::{FlushStage, SnapshotError, SnapshotMeta, SnapshotStore};
    /// # let dir = std::env::temp_dir().join(format!("rw-doc-fault-{}", std::process::id()));
    /// let mut store = SnapshotStore::open(&dir, 1, 0, 4096)?;
    /// store.write(SnapshotMeta { epoch: 1, ..Default::default() }, b"old")?;
    /// store.set_flush_fault(Some(Box::new(|_: FlushStage, _: u64| Err(io::Error::other("disk gone")))));
    /// let err = store.write(SnapshotMeta { epoch: 2, ..Default::default() }, b"new").unwrap_err();
    /// assert!(matches!(err, SnapshotError::Flush { epoch: 2, kept: Some(1), .. }));
    /// assert_eq!(SnapshotStore::recover(&dir, 1, 0)?.unwrap().payload, b"old");
    /// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), SnapshotError>(())
    /// ```
    pub fn set_flush_fault(&mut self, fault: Option<Box<dyn FlushFault>>) {
        self.fault = fault;
    }

    /// Metadata of the latest committed epoch (found at open, or committed since).
    pub fn latest(&self) -> Option<SnapshotMeta> {
        self.live.map(|l| l.meta)
    }

    /// Header slot of the latest committed epoch.
    pub fn latest_slot(&self) -> Option<Slot> {
        self.live.map(|l| l.slot)
    }

    /// The staged, not yet committed, epoch.
    pub fn staged_epoch(&self) -> Option<u64> {
        self.pending.map(|p| p.meta.epoch)
    }

    /// Bytes a payload may have without growing the file.
    pub fn region_capacity(&self) -> u64 {
        self.region
    }

    /// Current length of the snapshot file.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// The snapshot file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the first `len` bytes of the half the next [`stage`](Self::stage) will write
    /// writable now, off the hot path: `msync` leaves pages clean and write-protected, and the
    /// first store to each 4 KiB page then faults (a few microseconds each on ext4), and pages
    /// not in the page cache would even be read from disk. Contents are unchanged (the kernel
    /// only faults the pages in, as for a write); best effort: errors (kernels before 5.14)
    /// are ignored. Called after every commit, sized like the payload just committed, and at
    /// open, sized like the requested capacity.
    fn prefault_next(&self, len: u64) {
        let next = format::place(self.region, self.live.map(|l| l.payload), len);
        if next.region != self.region || len == 0 {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            let advice = memmap2::Advice::PopulateWrite;
            let _ = self
                .map
                .advise_range(advice, to_usize(next.offset), to_usize(len));
        }
    }

    /// Grows each half to `region` bytes (preallocated) and remaps.
    fn grow(&mut self, region: u64) -> Result<(), SnapshotError> {
        let len = HEADER_AREA + 2 * region;
        sys::preallocate(&self.file, len).map_err(|e| SnapshotError::io("grow", &self.path, e))?;
        self.map =
            sys::map_file(&self.file).map_err(|e| SnapshotError::io("remap", &self.path, e))?;
        self.region = region;
        self.size_dirty = true;
        Ok(())
    }

    fn flush(
        &mut self,
        stage: FlushStage,
        epoch: u64,
        offset: u64,
        len: u64,
        sync_file_size: bool,
    ) -> Result<(), SnapshotError> {
        let mut result = match self.fault.as_mut() {
            Some(fault) => fault.before_flush(stage, epoch),
            None => Ok(()),
        };
        if result.is_ok() && len > 0 {
            result = self.map.flush_range(to_usize(offset), to_usize(len));
        }
        if result.is_ok() && sync_file_size {
            result = self.file.sync_data();
        }
        result.map_err(|source| SnapshotError::Flush {
            path: self.path.clone(),
            stage,
            epoch,
            kept: self.live.map(|l| l.meta.epoch),
            source,
        })
    }
}

/// Offsets inside the map always fit: the map's length is a `usize`.
fn to_usize(v: u64) -> usize {
    usize::try_from(v).expect("offset inside the mapped file")
}

/// The newest valid slot, for the writer (ties and corruption resolved conservatively: the
/// writer only needs to know which payload and header it must not overwrite).
fn newest_valid(slots: [SlotScan; 2]) -> Option<Live> {
    let mut best: Option<Live> = None;
    for (slot, scan) in Slot::ALL.into_iter().zip(slots) {
        if let SlotScan::Valid(h, _) = scan {
            if best.is_none_or(|b| h.meta.epoch > b.meta.epoch) {
                best = Some(Live {
                    slot,
                    meta: h.meta,
                    payload: h.payload,
                });
            }
        }
    }
    best
}

fn open_or_create(path: &Path, len: u64) -> Result<File, SnapshotError> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => return Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SnapshotError::io("open", path, e)),
    }
    let tmp = path.with_extension("snap.tmp");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| SnapshotError::io("create", &tmp, e))?;
    sys::preallocate(&file, len)
        .and_then(|()| file.sync_all())
        .map_err(|e| SnapshotError::io("preallocate", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| SnapshotError::io("rename", &tmp, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| SnapshotError::io("fsync directory", dir, e))?;
    }
    Ok(file)
}
