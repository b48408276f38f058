//! Damaged snapshot files: truncated at every length, every header bit flipped, payload bits
//! flipped. Recovery must return an intact epoch or a typed error; never the damaged epoch,
//! never wrong bytes, never a panic.

mod snapshot_util;
mod tier;

use std::fs::{self, OpenOptions};

use ringwait::snapshot::format::{HEADER_LEN, HEADER_SLOT_SIZE};
use ringwait::snapshot::{
    HeaderProblem, HeaderStatus, Recovered, Slot, SnapshotError, SnapshotStore,
};
use snapshot_util::*;

/// Long tier (`RINGWAIT_LONG_TESTS=1`): every bit of padding and payloads too, not one per byte.
fn long_tier() -> bool {
    tier::size("flip every bit", false, true)
}

/// The bits of bytes `start..end` to flip: all of them in the long tier, else one per byte
/// (rotating through the bit positions) plus every bit of the first and last 16 bytes.
fn bits(start: u64, end: u64) -> Vec<u64> {
    (start * 8..end * 8)
        .filter(|&bit| {
            let byte = bit / 8;
            long_tier() || byte < start + 16 || byte + 16 >= end || bit % 8 == byte % 8
        })
        .collect()
}

const LEN_1: usize = 3000; // epoch 1: slot B, lower half
const LEN_2: usize = 4000; // epoch 2: slot A, upper half

/// Two committed epochs and a staged (uncommitted) third one; returns the file bytes.
fn two_epochs(dir: &TempDir) -> Vec<u8> {
    let mut store = SnapshotStore::open(dir.path(), OP, PART, 4096).unwrap();
    store.write(meta(1), &payload(1, LEN_1)).unwrap();
    store.write(meta(2), &payload(2, LEN_2)).unwrap();
    drop(store);
    read(&dir.file())
}

fn is(rec: &Recovered, epoch: u64, len: usize) -> bool {
    rec.meta == meta(epoch) && rec.payload == payload(epoch, len)
}

#[test]
fn file_truncated_at_every_length_recovers_an_intact_epoch_or_a_typed_error() {
    let dir = TempDir::new("truncate-every");
    let full = two_epochs(&dir);
    let file = dir.file();
    let (off2, len2) = payload_extent(&full[0..HEADER_LEN]);
    let (off1, len1) = payload_extent(&full[HEADER_SLOT_SIZE as usize..][..HEADER_LEN]);
    let epoch2_needs = (off2 + len2).max(HEADER_LEN as u64);
    let epoch1_needs = (off1 + len1).max(HEADER_SLOT_SIZE + HEADER_LEN as u64);
    let handle = OpenOptions::new().write(true).open(&file).unwrap();
    for len in (0..=full.len() as u64).rev() {
        handle.set_len(len).unwrap();
        let got = SnapshotStore::recover(dir.path(), OP, PART);
        if len >= epoch2_needs {
            assert!(is(&got.unwrap().unwrap(), 2, LEN_2), "len {len}");
        } else if len >= epoch1_needs {
            let rec = got.unwrap().unwrap();
            assert!(is(&rec, 1, LEN_1), "len {len}: {rec:?}");
            assert!(matches!(rec.other, HeaderStatus::Invalid(_)), "len {len}");
        } else {
            match got {
                Err(SnapshotError::Corrupt { .. }) => {}
                other => panic!("len {len}: expected Corrupt, got {other:?}"),
            }
        }
    }
}

#[test]
fn every_bit_of_each_header_slot_flipped_falls_back_or_changes_nothing() {
    let dir = TempDir::new("flip-headers");
    let full = two_epochs(&dir);
    let file = dir.file();
    for slot in Slot::ALL {
        let base = slot_offset(slot) * 8;
        let record = 0..HEADER_LEN as u64 * 8;
        for bit in record.chain(bits(HEADER_LEN as u64, HEADER_SLOT_SIZE)) {
            flip_bit(&file, base + bit);
            let rec = SnapshotStore::recover(dir.path(), OP, PART)
                .unwrap_or_else(|e| panic!("slot {slot} bit {bit}: {e}"))
                .unwrap();
            let in_record = bit < HEADER_LEN as u64 * 8;
            match (in_record, slot) {
                // Padding after the record is ignored: nothing changes.
                (false, _) => assert!(is(&rec, 2, LEN_2), "slot {slot} bit {bit}"),
                // Epoch 2 (slot A) damaged: epoch 1, intact.
                (true, Slot::A) => assert!(is(&rec, 1, LEN_1), "slot A bit {bit}"),
                // Epoch 1 (slot B) damaged: epoch 2 still wins, and B is reported.
                (true, Slot::B) => {
                    assert!(is(&rec, 2, LEN_2), "slot B bit {bit}");
                    assert!(
                        matches!(rec.other, HeaderStatus::Invalid(_)),
                        "slot B bit {bit}"
                    );
                }
            }
            flip_bit(&file, base + bit);
        }
    }
    assert_eq!(read(&file), full);
}

#[test]
fn every_header_bit_flipped_with_no_fallback_is_refused() {
    let dir = TempDir::new("flip-only-header");
    let mut store = SnapshotStore::open(dir.path(), OP, PART, 4096).unwrap();
    store.write(meta(1), &payload(1, 64)).unwrap(); // slot B; slot A stays empty
    drop(store);
    let file = dir.file();
    let base = slot_offset(Slot::B) * 8;
    for bit in 0..HEADER_LEN as u64 * 8 {
        flip_bit(&file, base + bit);
        match SnapshotStore::recover(dir.path(), OP, PART) {
            Err(SnapshotError::Corrupt {
                a: HeaderStatus::Empty,
                b: HeaderStatus::Invalid(_),
                ..
            }) => {}
            other => panic!("bit {bit}: expected Corrupt, got {other:?}"),
        }
        flip_bit(&file, base + bit);
    }
}

#[test]
fn payload_bit_flip_is_caught_by_the_crc_and_recovery_falls_back() {
    let dir = TempDir::new("flip-payload");
    let full = two_epochs(&dir);
    let file = dir.file();
    let (off2, len2) = payload_extent(&full[0..HEADER_LEN]);
    let (off1, len1) = payload_extent(&full[HEADER_SLOT_SIZE as usize..][..HEADER_LEN]);
    // Every bit of epoch 2's payload: epoch 1 comes back.
    for bit in bits(off2, off2 + len2) {
        flip_bit(&file, bit);
        let rec = SnapshotStore::recover(dir.path(), OP, PART)
            .unwrap()
            .unwrap();
        assert!(is(&rec, 1, LEN_1), "bit {bit}");
        assert!(
            matches!(
                rec.other,
                HeaderStatus::Invalid(HeaderProblem::PayloadChecksum { .. })
            ),
            "bit {bit}: {:?}",
            rec.other
        );
        flip_bit(&file, bit);
    }
    // A bit of each payload: nothing valid is left, and the error says why for both.
    flip_bit(&file, off1 * 8 + 5);
    flip_bit(&file, (off2 + len2 - 1) * 8);
    let err = SnapshotStore::recover(dir.path(), OP, PART).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("header A: payload checksum mismatch"), "{msg}");
    assert!(msg.contains("header B: payload checksum mismatch"), "{msg}");
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    let _ = len1;
}

#[test]
fn bytes_outside_headers_and_live_payloads_do_not_matter() {
    let dir = TempDir::new("outside");
    let full = two_epochs(&dir);
    let file = dir.file();
    // Scribble over the gap after epoch 1's payload in the lower half.
    let (off1, len1) = payload_extent(&full[HEADER_SLOT_SIZE as usize..][..HEADER_LEN]);
    write_at(&file, off1 + len1, &[0xAB; 512]);
    assert!(is(
        &SnapshotStore::recover(dir.path(), OP, PART)
            .unwrap()
            .unwrap(),
        2,
        LEN_2
    ));
    // Appended garbage does not matter either.
    let mut bytes = read(&file);
    bytes.extend_from_slice(&[0x5A; 10_000]);
    fs::write(&file, &bytes).unwrap();
    assert!(is(
        &SnapshotStore::recover(dir.path(), OP, PART)
            .unwrap()
            .unwrap(),
        2,
        LEN_2
    ));
}
