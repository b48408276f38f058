//! Snapshot store: writing, alternating, growing, recovering, failing flushes, forged headers.

mod snapshot_util;

use std::fs;
use std::io;

use ringwait::snapshot::format::{HEADER_AREA, MAX_PAYLOAD_LEN};
use ringwait::snapshot::{
    FlushStage, HeaderProblem, HeaderStatus, Slot, SnapshotError, SnapshotStore,
};
use snapshot_util::*;

fn recover(dir: &TempDir) -> Result<Option<ringwait::snapshot::Recovered>, SnapshotError> {
    SnapshotStore::recover(dir.path(), OP, PART)
}

fn open(dir: &TempDir, capacity: u64) -> SnapshotStore {
    SnapshotStore::open(dir.path(), OP, PART, capacity).unwrap()
}

/// Asserts that recovery returns exactly epoch `epoch` as written by `write_epoch`.
fn assert_recovers(dir: &TempDir, epoch: u64, len: usize) {
    let rec = recover(dir).unwrap().expect("a snapshot");
    assert_eq!(rec.meta, meta(epoch));
    assert_eq!(rec.payload, payload(epoch, len), "payload of epoch {epoch}");
}

fn write_epoch(store: &mut SnapshotStore, epoch: u64, len: usize) {
    store.write(meta(epoch), &payload(epoch, len)).unwrap();
}

#[test]
fn round_trip_returns_meta_and_payload_exactly() {
    let dir = TempDir::new("round-trip");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 3000);
    assert_recovers(&dir, 1, 3000);
    drop(store);
    assert_recovers(&dir, 1, 3000);
}

#[test]
fn missing_file_recovers_to_none() {
    let dir = TempDir::new("missing");
    assert_eq!(recover(&dir).unwrap(), None);
}

#[test]
fn freshly_created_file_with_no_snapshot_recovers_to_none() {
    let dir = TempDir::new("fresh");
    let store = open(&dir, 4096);
    assert_eq!(recover(&dir).unwrap(), None);
    assert_eq!(store.file_len(), HEADER_AREA + 2 * 4096);
    assert_eq!(store.latest(), None);
}

#[test]
fn empty_payload_round_trips() {
    let dir = TempDir::new("empty-payload");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 0);
    write_epoch(&mut store, 2, 0);
    assert_recovers(&dir, 2, 0);
}

#[test]
fn alternating_epochs_use_slot_epoch_mod_2_and_keep_the_previous_one() {
    let dir = TempDir::new("alternating");
    let mut store = open(&dir, 4096);
    for epoch in 1..=7 {
        write_epoch(&mut store, epoch, 1000 + epoch as usize);
        assert_eq!(store.latest_slot(), Some(Slot::for_epoch(epoch)));
        let rec = recover(&dir).unwrap().unwrap();
        assert_eq!(rec.slot, Slot::for_epoch(epoch));
        assert_eq!(rec.meta, meta(epoch));
        let expected_other = if epoch == 1 {
            HeaderStatus::Empty
        } else {
            HeaderStatus::Valid { epoch: epoch - 1 }
        };
        assert_eq!(rec.other, expected_other);
    }
    assert_eq!(store.file_len(), HEADER_AREA + 2 * 4096, "no growth needed");
}

#[test]
fn recover_takes_the_newest_of_two_valid_epochs() {
    let dir = TempDir::new("newest");
    let mut store = open(&dir, 8192);
    write_epoch(&mut store, 10, 500);
    write_epoch(&mut store, 11, 700);
    assert_recovers(&dir, 11, 700);
}

#[test]
fn skipped_epochs_still_keep_the_previous_epoch_intact() {
    let dir = TempDir::new("skipped");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 100);
    write_epoch(&mut store, 3, 100); // same parity: must not overwrite epoch 1's slot
    let rec = recover(&dir).unwrap().unwrap();
    assert_eq!(rec.other, HeaderStatus::Valid { epoch: 1 });
    assert_recovers(&dir, 3, 100);
}

#[test]
fn epoch_not_newer_than_latest_is_refused_even_after_reopen() {
    let dir = TempDir::new("epoch-order");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 5, 10);
    drop(store);
    let mut store = open(&dir, 4096);
    assert_eq!(store.latest(), Some(meta(5)));
    let err = store.write(meta(5), b"again").unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::EpochNotIncreasing {
                latest: 5,
                given: 5
            }
        ),
        "{err}"
    );
    let err = store.write(meta(4), b"older").unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::EpochNotIncreasing {
                latest: 5,
                given: 4
            }
        ),
        "{err}"
    );
    write_epoch(&mut store, 6, 10);
    assert_recovers(&dir, 6, 10);
}

#[test]
fn payload_larger_than_capacity_grows_the_file_and_keeps_the_previous_epoch() {
    let dir = TempDir::new("grow");
    let mut store = open(&dir, 4096);
    let sizes = [1000, 5000, 4096, 20_000, 100, 70_000, 70_001, 3];
    for (i, &len) in sizes.iter().enumerate() {
        let epoch = i as u64 + 1;
        write_epoch(&mut store, epoch, len);
        assert!(store.region_capacity() >= len as u64);
        assert_recovers(&dir, epoch, len);
        if epoch > 1 {
            // The previous epoch must have survived the growth: break the newest header and
            // recovery falls back to it, byte for byte.
            let file = dir.file();
            let saved = header(&file, Slot::for_epoch(epoch));
            flip_bit(&file, slot_offset(Slot::for_epoch(epoch)) * 8 + 300);
            assert_recovers(&dir, epoch - 1, sizes[i - 1]);
            write_at(&file, slot_offset(Slot::for_epoch(epoch)), &saved);
        }
    }
    assert_eq!(fs::metadata(dir.file()).unwrap().len(), store.file_len());
}

#[test]
fn reopening_with_a_smaller_capacity_keeps_the_file_and_its_snapshot() {
    let dir = TempDir::new("reopen-smaller");
    let mut store = open(&dir, 64 * 1024);
    write_epoch(&mut store, 1, 50_000);
    let len = store.file_len();
    drop(store);
    let mut store = open(&dir, 4096);
    assert_eq!(store.file_len(), len);
    assert_eq!(store.region_capacity(), 64 * 1024);
    assert_recovers(&dir, 1, 50_000);
    write_epoch(&mut store, 2, 60_000);
    assert_recovers(&dir, 2, 60_000);
}

#[test]
fn reopening_with_a_larger_capacity_grows_without_losing_the_snapshot() {
    let dir = TempDir::new("reopen-larger");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 100);
    write_epoch(&mut store, 2, 4000); // upper half
    drop(store);
    let mut store = open(&dir, 1 << 20);
    assert_recovers(&dir, 2, 4000);
    for epoch in 3..=5 {
        write_epoch(&mut store, epoch, 900_000);
        assert_recovers(&dir, epoch, 900_000);
    }
}

#[test]
fn crash_between_payload_flush_and_header_write_recovers_previous_epoch() {
    let dir = TempDir::new("crash-before-header");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 2000);
    write_epoch(&mut store, 2, 3000);
    // Epoch 3's payload reaches the file (page cache; flushed or not), its header never does.
    store.stage(meta(3), &payload(3, 4000)).unwrap();
    drop(store); // the process dies here
    assert_recovers(&dir, 2, 3000);

    // The next run continues from epoch 2, and epoch 3 can be retried.
    let mut store = open(&dir, 4096);
    assert_eq!(store.latest(), Some(meta(2)));
    write_epoch(&mut store, 3, 4000);
    assert_recovers(&dir, 3, 4000);
}

#[test]
fn staged_payload_is_invisible_to_recovery_until_commit() {
    let dir = TempDir::new("staged-invisible");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 10);
    store.stage(meta(2), &payload(2, 20)).unwrap();
    assert_eq!(store.staged_epoch(), Some(2));
    assert_recovers(&dir, 1, 10);
    assert_eq!(store.commit().unwrap(), 2);
    assert_eq!(store.staged_epoch(), None);
    assert_recovers(&dir, 2, 20);
}

#[test]
fn abandoned_stage_leaves_the_latest_epoch_and_allows_a_retry() {
    let dir = TempDir::new("abandon");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 10);
    store.stage(meta(2), b"abandoned").unwrap();
    assert_eq!(store.abandon(), Some(2));
    assert_eq!(store.abandon(), None);
    assert!(matches!(store.commit(), Err(SnapshotError::NothingStaged)));
    write_epoch(&mut store, 2, 30);
    assert_recovers(&dir, 2, 30);
}

fn fail_at(stage: FlushStage) -> Box<dyn ringwait::snapshot::FlushFault> {
    Box::new(move |s: FlushStage, _epoch: u64| {
        if s == stage {
            Err(io::Error::other("injected flush failure"))
        } else {
            Ok(())
        }
    })
}

#[test]
fn failed_payload_flush_abandons_the_epoch_and_keeps_the_previous_one() {
    let dir = TempDir::new("fail-payload");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 1000);
    write_epoch(&mut store, 2, 1000);
    store.set_flush_fault(Some(fail_at(FlushStage::Payload)));
    let err = store.write(meta(3), &payload(3, 1000)).unwrap_err();
    match &err {
        SnapshotError::Flush {
            stage, epoch, kept, ..
        } => {
            assert_eq!((*stage, *epoch, *kept), (FlushStage::Payload, 3, Some(2)));
        }
        other => panic!("expected a flush error, got {other}"),
    }
    assert!(err.to_string().contains("injected flush failure"), "{err}");
    assert_eq!(store.latest(), Some(meta(2)));
    assert_recovers(&dir, 2, 1000);

    store.set_flush_fault(None);
    write_epoch(&mut store, 3, 1000);
    assert_recovers(&dir, 3, 1000);
}

#[test]
fn failed_header_flush_abandons_the_epoch_and_keeps_the_previous_one() {
    let dir = TempDir::new("fail-header");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 1000);
    write_epoch(&mut store, 2, 1000);
    store.set_flush_fault(Some(fail_at(FlushStage::Header)));
    let err = store.write(meta(3), &payload(3, 1000)).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Flush {
                stage: FlushStage::Header,
                epoch: 3,
                kept: Some(2),
                ..
            }
        ),
        "{err}"
    );
    // The header slot was restored: epoch 3's header is nowhere, epoch 2 is the latest.
    assert_recovers(&dir, 2, 1000);
    drop(store);
    let mut store = open(&dir, 4096);
    assert_eq!(store.latest(), Some(meta(2)));
    write_epoch(&mut store, 3, 1000);
    assert_recovers(&dir, 3, 1000);
}

#[test]
fn failed_flush_of_a_growing_payload_keeps_the_previous_epoch() {
    let dir = TempDir::new("fail-grow");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 4000);
    store.set_flush_fault(Some(fail_at(FlushStage::Payload)));
    assert!(store.write(meta(2), &payload(2, 50_000)).is_err());
    assert_recovers(&dir, 1, 4000);
    store.set_flush_fault(None);
    write_epoch(&mut store, 2, 50_000);
    assert_recovers(&dir, 2, 50_000);
}

#[test]
fn headers_swapped_between_slots_still_recover_the_newest_with_its_own_payload() {
    let dir = TempDir::new("swapped");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 1111);
    write_epoch(&mut store, 2, 2222);
    drop(store);
    let file = dir.file();
    let (a, b) = (header(&file, Slot::A), header(&file, Slot::B));
    write_at(&file, slot_offset(Slot::A), &b);
    write_at(&file, slot_offset(Slot::B), &a);
    let rec = recover(&dir).unwrap().unwrap();
    assert_eq!(rec.slot, Slot::B);
    assert_eq!((rec.meta, rec.payload), (meta(2), payload(2, 2222)));
    assert_eq!(rec.other, HeaderStatus::Valid { epoch: 1 });
}

#[test]
fn two_different_headers_claiming_the_same_epoch_are_refused() {
    let dir = TempDir::new("ambiguous");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 10);
    write_epoch(&mut store, 2, 10);
    drop(store);
    patch_header(&dir.file(), Slot::B, |h| put_u64(h, 32, 2)); // epoch 1 relabelled 2
    let err = recover(&dir).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Ambiguous { epoch: 2, .. }),
        "{err}"
    );
}

#[test]
fn file_of_another_operator_or_partition_is_refused_naming_both_headers() {
    let dir = TempDir::new("wrong-owner");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 10);
    write_epoch(&mut store, 2, 10);
    drop(store);
    let wrong_op = ringwait::snapshot::snapshot_path(dir.path(), 99, PART);
    fs::copy(dir.file(), &wrong_op).unwrap();
    let err = SnapshotStore::recover(dir.path(), 99, PART).unwrap_err();
    let SnapshotError::Corrupt { a, b, .. } = &err else {
        panic!("{err}")
    };
    let wrong = HeaderStatus::Invalid(HeaderProblem::WrongOperator {
        expected: 99,
        found: OP,
    });
    assert_eq!((a, b), (&wrong, &wrong));
    assert!(
        err.to_string()
            .contains("header A: belongs to operator 1, expected operator 99"),
        "{err}"
    );

    let wrong_part = ringwait::snapshot::snapshot_path(dir.path(), OP, 7);
    fs::copy(dir.file(), &wrong_part).unwrap();
    let err = SnapshotStore::recover(dir.path(), OP, 7).unwrap_err();
    assert!(
        err.to_string()
            .contains("belongs to partition 0, expected partition 7"),
        "{err}"
    );
}

#[test]
fn unsupported_version_is_refused_and_falls_back_to_the_other_header() {
    let dir = TempDir::new("version");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 10);
    write_epoch(&mut store, 2, 20);
    drop(store);
    let file = dir.file();
    patch_header(&file, Slot::A, |h| {
        h[8..12].copy_from_slice(&2u32.to_le_bytes())
    });
    let rec = recover(&dir).unwrap().unwrap();
    assert_eq!(rec.meta, meta(1));
    assert_eq!(
        rec.other,
        HeaderStatus::Invalid(HeaderProblem::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    );
    patch_header(&file, Slot::B, |h| {
        h[8..12].copy_from_slice(&2u32.to_le_bytes())
    });
    let err = recover(&dir).unwrap_err();
    assert!(
        err.to_string()
            .contains("format version 2 is not supported"),
        "{err}"
    );
}

#[test]
fn zero_length_file_is_a_typed_error_and_open_reinitialises_it() {
    let dir = TempDir::new("zero-length");
    fs::File::create(dir.file()).unwrap();
    let err = recover(&dir).unwrap_err();
    let SnapshotError::Corrupt { path, a, b } = &err else {
        panic!("{err}")
    };
    assert_eq!(path, &dir.file());
    assert!(matches!(
        a,
        HeaderStatus::Invalid(HeaderProblem::Truncated { file_size: 0, .. })
    ));
    assert!(matches!(
        b,
        HeaderStatus::Invalid(HeaderProblem::Truncated { file_size: 0, .. })
    ));

    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 10);
    assert_recovers(&dir, 1, 10);
}

#[test]
fn absurd_payload_lengths_are_refused_without_allocating() {
    let dir = TempDir::new("absurd");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 10);
    write_epoch(&mut store, 2, 10);
    drop(store);
    let file = dir.file();
    let size = fs::metadata(&file).unwrap().len();
    patch_header(&file, Slot::A, |h| put_u64(h, 88, 1 << 60));
    patch_header(&file, Slot::B, |h| put_u64(h, 88, size)); // under the limit, past the end
    let err = recover(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "header A: payload length {} exceeds the limit {MAX_PAYLOAD_LEN}",
            1u64 << 60
        )),
        "{msg}"
    );
    assert!(msg.contains(&format!("exceeds file size {size}")), "{msg}");

    // An offset that overflows when the length is added.
    patch_header(&file, Slot::A, |h| {
        put_u64(h, 80, u64::MAX - 3);
        put_u64(h, 88, 10);
    });
    let err = recover(&dir).unwrap_err();
    let SnapshotError::Corrupt { a, .. } = err else {
        panic!()
    };
    assert!(matches!(
        a,
        HeaderStatus::Invalid(HeaderProblem::PayloadOutOfBounds { .. })
    ));
}

#[test]
fn payload_offset_inside_the_headers_is_refused() {
    let dir = TempDir::new("offset-in-headers");
    let mut store = open(&dir, 4096);
    write_epoch(&mut store, 1, 10);
    drop(store);
    patch_header(&dir.file(), Slot::B, |h| put_u64(h, 80, 100));
    let err = recover(&dir).unwrap_err();
    assert!(
        err.to_string()
            .contains("payload offset 100 lies inside the header area"),
        "{err}"
    );
}

#[test]
fn capacity_above_the_format_limit_is_refused_by_open() {
    let dir = TempDir::new("huge-capacity");
    let err = SnapshotStore::open(dir.path(), OP, PART, MAX_PAYLOAD_LEN + 1).unwrap_err();
    assert!(
        matches!(err, SnapshotError::PayloadTooLarge { .. }),
        "{err}"
    );
}

#[test]
fn store_is_send_so_a_commit_can_run_on_another_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<SnapshotStore>();
    let dir = TempDir::new("send");
    let mut store = open(&dir, 4096);
    store.stage(meta(1), &payload(1, 100)).unwrap();
    let store = std::thread::spawn(move || {
        store.commit().unwrap();
        store
    })
    .join()
    .unwrap();
    assert_eq!(store.latest(), Some(meta(1)));
}
