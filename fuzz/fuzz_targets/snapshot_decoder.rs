//! Fuzzes snapshot recovery, the record codec and the operator payload decoder.
//!
//! `cargo +nightly fuzz run snapshot_decoder` (from the crate root, with cargo-fuzz installed).
//!
//! The first input byte picks a mode:
//! - even: the rest is a whole snapshot file, handed to recovery as is, and a record payload;
//! - odd: the rest is a list of `(offset u16, value u8)` edits applied to a valid two-epoch file,
//!   after which the header CRCs are re-sealed, so that the checks behind the CRC (version,
//!   owner, flags, bounds, payload CRC, epoch choice) are reached too.
//!
//! Invariants: no panic, no huge allocation; a recovered snapshot of an edited file is one of
//! the two epochs that were written, byte for byte, unless an edit touched a header (then it
//! must at least be self-consistent: its payload lies inside the file).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringwait::snapshot::format::{HEADER_LEN, HEADER_SLOT_SIZE};
use ringwait::snapshot::{
    decode_records, recover_bytes, SnapshotCodec, SnapshotMeta, SnapshotStore,
};

const OP: u64 = 1;
const PART: u32 = 0;

fn meta(epoch: u64) -> SnapshotMeta {
    SnapshotMeta {
        epoch,
        capacity: 8,
        record_count: 1,
        source_position: epoch,
        sink_position: 0,
        watermark: Some(-1),
    }
}

fn payload(epoch: u64) -> Vec<u8> {
    let mut out = Vec::new();
    ringwait::snapshot::encode_records(&[(epoch, String::from("key"))], &mut out);
    out
}

/// A valid file with epochs 1 and 2, built once through the real store.
fn image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ringwait-fuzz-{}", std::process::id()));
        let mut store = SnapshotStore::open(&dir, OP, PART, 4096).unwrap();
        store.write(meta(1), &payload(1)).unwrap();
        store.write(meta(2), &payload(2)).unwrap();
        drop(store);
        let bytes = std::fs::read(ringwait::snapshot::snapshot_path(&dir, OP, PART)).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    })
}

fn codec(data: &[u8]) {
    let _ = decode_records::<(u64, (i64, (Vec<u8>, String)))>(data);
    // Operator payloads (records with sequences and timestamps, watermarks).
    let _ = ringwait::operator::Restore::<u64>::decode(data);
    let _ = ringwait::operator::Restore::<(Vec<u8>, String)>::decode(data);
    let mut input = data;
    while String::decode(&mut input).is_ok() {}
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(Some(rec)) = recover_bytes(rest, OP, PART) {
            assert!(rec.payload.len() <= rest.len());
        }
        codec(rest);
        return;
    }
    let mut file = image().to_vec();
    let mut header_touched = false;
    for edit in rest.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([edit[0], edit[1]])) % file.len();
        file[at] = edit[2];
        header_touched |= (at as u64) < 2 * HEADER_SLOT_SIZE;
    }
    for slot in 0..2 {
        let h = &mut file[slot * HEADER_SLOT_SIZE as usize..][..HEADER_LEN];
        let crc = crc32fast::hash(&h[..100]);
        h[100..104].copy_from_slice(&crc.to_le_bytes());
    }
    if let Ok(Some(rec)) = recover_bytes(&file, OP, PART) {
        if !header_touched {
            assert!(
                [1, 2]
                    .iter()
                    .any(|&e| rec.meta == meta(e) && rec.payload == payload(e)),
                "wrong data accepted: {:?}",
                rec.meta
            );
        }
        codec(&rec.payload);
    }
});
