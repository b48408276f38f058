//! Reading a snapshot file back: validate both headers and payloads, pick the newest valid epoch.
//!
//! Rules:
//! - an all-zero header record is *empty* (never written), not corruption;
//! - a header is valid when its magic, CRC, version, operator id, partition, flags, payload bounds
//!   (inside the file, past the headers, below [`MAX_PAYLOAD_LEN`]) and payload CRC all check;
//! - both valid: the higher epoch wins; equal epochs must describe the same snapshot, else
//!   [`SnapshotError::Ambiguous`];
//! - exactly one valid: it wins, whatever the other holds (an older epoch whose newer sibling
//!   was torn, bit-flipped or never flushed is exactly what double buffering is for);
//! - none valid: both empty gives `Ok(None)`, anything else [`SnapshotError::Corrupt`] naming
//!   what is wrong with each header.
//!
//! Reads use `pread` (or a byte slice), never the map, and allocate a payload buffer only after
//! its length has been checked against the actual file size.
#![deny(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::error::{HeaderProblem, HeaderStatus, Slot, SnapshotError};
use super::format::{self, Header, HEADER_LEN, MAX_PAYLOAD_LEN};
use super::SnapshotMeta;

/// The newest valid snapshot of a file.
///
/// ```
/// # use ringwait::snapshot::{SnapshotStore, SnapshotMeta};
/// # let dir = std::env::temp_dir().join(format!("rw-doc-recovered-{}", std::process::id()));
/// let mut store = SnapshotStore::open(&dir, 1, 0, 4096)?;
/// store.write(SnapshotMeta { epoch: 1, ..Default::default() }, b"state")?;
/// let rec = SnapshotStore::recover(&dir, 1, 0)?.expect("a snapshot");
/// assert_eq!((rec.meta.epoch, rec.payload.as_slice()), (1, &b"state"[..]));
/// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), ringwait::snapshot::SnapshotError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The header's metadata.
    pub meta: SnapshotMeta,
    /// The payload bytes, CRC-checked.
    pub payload: Vec<u8>,
    /// The slot the snapshot was found in.
    pub slot: Slot,
    /// What the other slot holds (an older epoch, empty, or why it was rejected): worth logging
    /// when it is [`HeaderStatus::Invalid`].
    pub other: HeaderStatus,
}

/// Positional reads from a file or from memory.
pub(crate) trait ReadAt {
    fn size(&self) -> io::Result<u64>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// What one slot holds after full validation.
#[derive(Debug)]
pub(crate) enum SlotScan {
    Empty,
    Invalid(HeaderProblem),
    Valid(Header, Vec<u8>),
}

impl SlotScan {
    pub(crate) fn status(&self) -> HeaderStatus {
        match self {
            SlotScan::Empty => HeaderStatus::Empty,
            SlotScan::Invalid(p) => HeaderStatus::Invalid(p.clone()),
            SlotScan::Valid(h, _) => HeaderStatus::Valid {
                epoch: h.meta.epoch,
            },
        }
    }
}

/// Validates one slot: header record, bounds against the file size, payload CRC.
fn scan_slot<R: ReadAt + ?Sized>(
    src: &R,
    file_size: u64,
    slot: Slot,
    operator_id: u64,
    partition: u32,
) -> io::Result<SlotScan> {
    let at = format::slot_offset(slot);
    let needed = at + HEADER_LEN as u64;
    if file_size < needed {
        return Ok(SlotScan::Invalid(HeaderProblem::Truncated {
            file_size,
            needed,
        }));
    }
    let mut raw = [0u8; HEADER_LEN];
    src.read_exact_at(&mut raw, at)?;
    let header = match format::decode_header(&raw, operator_id, partition) {
        Ok(None) => return Ok(SlotScan::Empty),
        Ok(Some(h)) => h,
        Err(p) => return Ok(SlotScan::Invalid(p)),
    };
    let extent = header.payload;
    let in_bounds = matches!(extent.offset.checked_add(extent.len), Some(end) if end <= file_size);
    if !in_bounds {
        return Ok(SlotScan::Invalid(HeaderProblem::PayloadOutOfBounds {
            offset: extent.offset,
            len: extent.len,
            file_size,
        }));
    }
    debug_assert!(extent.len <= MAX_PAYLOAD_LEN);
    let len = usize::try_from(extent.len).map_err(|_| io::ErrorKind::OutOfMemory)?;
    let mut payload = vec![0u8; len];
    src.read_exact_at(&mut payload, extent.offset)?;
    let computed = crc32fast::hash(&payload);
    if computed != header.payload_crc {
        return Ok(SlotScan::Invalid(HeaderProblem::PayloadChecksum {
            stored: header.payload_crc,
            computed,
        }));
    }
    Ok(SlotScan::Valid(header, payload))
}

/// Validates both slots of `src`.
pub(crate) fn scan<R: ReadAt + ?Sized>(
    src: &R,
    operator_id: u64,
    partition: u32,
) -> io::Result<[SlotScan; 2]> {
    let size = src.size()?;
    Ok([
        scan_slot(src, size, Slot::A, operator_id, partition)?,
        scan_slot(src, size, Slot::B, operator_id, partition)?,
    ])
}

/// The newest valid snapshot among scanned slots, per the module rules.
pub(crate) fn select(
    path: &Path,
    slots: [SlotScan; 2],
) -> Result<Option<Recovered>, SnapshotError> {
    let status = [slots[0].status(), slots[1].status()];
    let [a, b] = slots;
    let winner = match (a, b) {
        (SlotScan::Valid(ha, pa), SlotScan::Valid(hb, pb)) => {
            if ha.meta.epoch == hb.meta.epoch && (ha != hb || pa != pb) {
                return Err(SnapshotError::Ambiguous {
                    path: path.to_path_buf(),
                    epoch: ha.meta.epoch,
                });
            }
            if hb.meta.epoch > ha.meta.epoch {
                (Slot::B, hb, pb)
            } else {
                (Slot::A, ha, pa)
            }
        }
        (SlotScan::Valid(h, p), _) => (Slot::A, h, p),
        (_, SlotScan::Valid(h, p)) => (Slot::B, h, p),
        (SlotScan::Empty, SlotScan::Empty) => return Ok(None),
        _ => {
            let [a, b] = status;
            return Err(SnapshotError::Corrupt {
                path: path.to_path_buf(),
                a,
                b,
            });
        }
    };
    let (slot, header, payload) = winner;
    Ok(Some(Recovered {
        meta: header.meta,
        payload,
        slot,
        other: status[slot.other().index()].clone(),
    }))
}

/// Recovers from an open file or a byte slice.
pub(crate) fn recover_from<R: ReadAt + ?Sized>(
    src: &R,
    path: &Path,
    operator_id: u64,
    partition: u32,
) -> Result<Option<Recovered>, SnapshotError> {
    let slots =
        scan(src, operator_id, partition).map_err(|e| SnapshotError::io("read", path, e))?;
    select(path, slots)
}

/// Recovers a snapshot from the bytes of a whole snapshot file, as [`SnapshotStore::recover`]
/// does from disk (same validation, same errors, with the path `<memory>`). Meant for fuzzing,
/// tools and tests.
///
/// [`SnapshotStore::recover`]: super::SnapshotStore::recover
///
/// ```
/// use ringwait::snapshot::{recover_bytes, SnapshotError};
/// assert_eq!(recover_bytes(&[0u8; 8192], 1, 0)?, None); // never written
/// assert!(matches!(recover_bytes(&[], 1, 0), Err(SnapshotError::Corrupt { .. })));
/// # Ok::<(), SnapshotError>(())
/// ```
pub fn recover_bytes(
    bytes: &[u8],
    operator_id: u64,
    partition: u32,
) -> Result<Option<Recovered>, SnapshotError> {
    recover_from(bytes, Path::new("<memory>"), operator_id, partition)
}
