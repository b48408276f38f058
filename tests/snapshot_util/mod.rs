//! Helpers shared by the `snapshot_*` integration tests.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ringwait::snapshot::format::{HEADER_LEN, HEADER_SLOT_SIZE};
use ringwait::snapshot::{snapshot_path, Slot, SnapshotMeta};

/// A directory under cargo's target tmp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("snap-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The snapshot file of operator 1, partition 0 (what most tests use).
    pub fn file(&self) -> PathBuf {
        snapshot_path(&self.0, OP, PART)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub const OP: u64 = 1;
pub const PART: u32 = 0;

/// Distinct, recognisable metadata for `epoch`.
pub fn meta(epoch: u64) -> SnapshotMeta {
    SnapshotMeta {
        epoch,
        capacity: 1000,
        record_count: epoch * 3,
        source_position: epoch * 100,
        sink_position: epoch * 90,
        watermark: if epoch % 3 == 0 {
            None
        } else {
            Some(epoch as i64 * 10 - 25)
        },
    }
}

/// Distinct, recognisable payload bytes for `epoch`.
pub fn payload(epoch: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (epoch as usize * 131 + i * 7 + i / 251) as u8)
        .collect()
}

pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap()
}

pub fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

pub fn flip_bit(path: &Path, bit: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, bit / 8).unwrap();
    b[0] ^= 1 << (bit % 8);
    f.write_all_at(&b, bit / 8).unwrap();
}

pub fn slot_offset(slot: Slot) -> u64 {
    slot.index() as u64 * HEADER_SLOT_SIZE
}

/// The header record of `slot`.
pub fn header(path: &Path, slot: Slot) -> [u8; HEADER_LEN] {
    let f = fs::File::open(path).unwrap();
    let mut h = [0u8; HEADER_LEN];
    f.read_exact_at(&mut h, slot_offset(slot)).unwrap();
    h
}

/// Edits the header record of `slot` and re-seals its CRC, to forge a header that is
/// well-formed but says something else.
pub fn patch_header(path: &Path, slot: Slot, edit: impl FnOnce(&mut [u8; HEADER_LEN])) {
    let mut h = header(path, slot);
    edit(&mut h);
    let crc = crc32fast::hash(&h[..100]);
    h[100..104].copy_from_slice(&crc.to_le_bytes());
    write_at(path, slot_offset(slot), &h);
}

pub fn put_u64(h: &mut [u8; HEADER_LEN], at: usize, v: u64) {
    h[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

pub fn get_u64(h: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(h[at..at + 8].try_into().unwrap())
}

/// (offset, len) of the payload a header record points to.
pub fn payload_extent(h: &[u8]) -> (u64, u64) {
    (get_u64(h, 80), get_u64(h, 88))
}
