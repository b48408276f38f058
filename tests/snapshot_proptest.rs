//! Random snapshot histories (writes, crashes between stage and commit, failed flushes,
//! reopens, growth) followed by random damage (a bit flip or a truncation anywhere): recovery
//! returns the newest epoch that is still intact, byte for byte, or a typed error.

mod snapshot_util;
mod tier;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io;
use std::ops::Range;

use proptest::prelude::*;
use ringwait::snapshot::format::HEADER_LEN;
use ringwait::snapshot::{
    decode_records, recover_bytes, FlushStage, HeaderStatus, Recovered, Slot, SnapshotMeta,
    SnapshotStore,
};
use snapshot_util::*;

#[derive(Debug, Clone)]
enum Op {
    /// A successful snapshot of `len` bytes.
    Write(usize),
    /// Stage `len` bytes, then the process dies before commit.
    Crash(usize),
    /// A snapshot whose flush at `stage` fails.
    FailFlush(FlushStage, usize),
    /// Close and reopen the store (a clean restart).
    Reopen,
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    None,
    /// Flip one bit, chosen as `x % (file bits)`.
    Flip(u64),
    /// Truncate to `x % (file length + 1)`.
    Truncate(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![0usize..64, 64usize..6000, 6000usize..40_000];
    prop_oneof![
        5 => len.clone().prop_map(Op::Write),
        1 => len.clone().prop_map(Op::Crash),
        1 => (prop_oneof![Just(FlushStage::Payload), Just(FlushStage::Header)], len)
            .prop_map(|(s, l)| Op::FailFlush(s, l)),
        1 => Just(Op::Reopen),
    ]
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        1 => Just(Damage::None),
        3 => any::<u64>().prop_map(Damage::Flip),
        2 => any::<u64>().prop_map(Damage::Truncate),
    ]
}

type Committed = BTreeMap<u64, (SnapshotMeta, Vec<u8>)>;

/// Runs the history; returns what was committed.
fn run(dir: &TempDir, ops: &[Op]) -> Committed {
    let open = || SnapshotStore::open(dir.path(), OP, PART, 4096).unwrap();
    let mut store = open();
    let mut committed = Committed::new();
    let mut epoch = 1;
    for op in ops {
        match *op {
            Op::Write(len) => {
                store.write(meta(epoch), &payload(epoch, len)).unwrap();
                committed.insert(epoch, (meta(epoch), payload(epoch, len)));
                epoch += 1;
            }
            Op::Crash(len) => {
                store.stage(meta(epoch), &payload(epoch, len)).unwrap();
                drop(store);
                store = open();
            }
            Op::FailFlush(stage, len) => {
                store.set_flush_fault(Some(Box::new(move |s: FlushStage, _: u64| {
                    if s == stage {
                        Err(io::Error::other("injected"))
                    } else {
                        Ok(())
                    }
                })));
                assert!(store.write(meta(epoch), &payload(epoch, len)).is_err());
                store.set_flush_fault(None);
            }
            Op::Reopen => {
                drop(store);
                store = open();
            }
        }
        let latest = committed.last_key_value().map(|(_, (m, _))| *m);
        assert_eq!(store.latest(), latest);
    }
    committed
}

/// The file ranges a recovered snapshot depends on: its header record and its payload.
fn ranges(file: &[u8], slot: Slot) -> [Range<u64>; 2] {
    let at = slot_offset(slot);
    let (off, len) = payload_extent(&file[at as usize..][..HEADER_LEN]);
    [at..at + HEADER_LEN as u64, off..off + len]
}

fn touched(damage: Damage, file_len: u64, ranges: &[Range<u64>; 2]) -> bool {
    match damage {
        Damage::None => false,
        Damage::Flip(x) => {
            let byte = x % (file_len * 8) / 8;
            ranges.iter().any(|r| r.contains(&byte))
        }
        Damage::Truncate(x) => {
            let len = x % (file_len + 1);
            ranges.iter().any(|r| r.end > len)
        }
    }
}

fn apply(damage: Damage, dir: &TempDir, file_len: u64) {
    match damage {
        Damage::None => {}
        Damage::Flip(x) => flip_bit(&dir.file(), x % (file_len * 8)),
        Damage::Truncate(x) => {
            let f = OpenOptions::new().write(true).open(dir.file()).unwrap();
            f.set_len(x % (file_len + 1)).unwrap();
        }
    }
}

fn matches(rec: &Recovered, snap: &(SnapshotMeta, Vec<u8>)) -> bool {
    rec.meta == snap.0 && rec.payload == snap.1
}

fn check(ops: &[Op], damage: Damage) -> Result<(), TestCaseError> {
    let dir = TempDir::new("prop");
    let committed = run(&dir, ops);
    let file = read(&dir.file());
    let file_len = file.len() as u64;
    let before = SnapshotStore::recover(dir.path(), OP, PART).unwrap();
    let Some(before) = before else {
        prop_assert!(committed.is_empty());
        apply(damage, &dir, file_len);
        let after = SnapshotStore::recover(dir.path(), OP, PART);
        prop_assert!(matches!(after, Ok(None) | Err(_)), "{:?}", after);
        return Ok(());
    };
    let newest = committed.last_key_value().unwrap().1;
    prop_assert!(
        matches(&before, newest),
        "undamaged file must give the newest epoch"
    );
    let newest_ranges = ranges(&file, before.slot);
    let previous = match before.other {
        HeaderStatus::Valid { epoch } => Some((epoch, ranges(&file, before.slot.other()))),
        _ => None,
    };

    apply(damage, &dir, file_len);
    let after = SnapshotStore::recover(dir.path(), OP, PART);
    if !touched(damage, file_len, &newest_ranges) {
        let rec = after.unwrap().unwrap();
        prop_assert!(matches(&rec, newest), "intact newest epoch not returned");
        return Ok(());
    }
    if let Some((epoch, _)) = previous.filter(|(_, r)| !touched(damage, file_len, r)) {
        let rec = after.unwrap().unwrap();
        prop_assert!(
            matches(&rec, &committed[&epoch]),
            "intact previous epoch {} not returned",
            epoch
        );
        return Ok(());
    }
    match after {
        Err(_) => {}
        Ok(Some(rec)) => {
            let snap = committed.get(&rec.meta.epoch);
            prop_assert!(
                snap.is_some_and(|s| matches(&rec, s)),
                "wrong data accepted"
            );
        }
        Ok(None) => prop_assert!(false, "damage made a written file look empty"),
    }
    Ok(())
}

fn cases() -> u32 {
    tier::size("proptest cases", 64, 1024)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_histories_with_random_damage_recover_the_newest_intact_epoch_or_an_error(
        ops in proptest::collection::vec(op(), 1..14),
        damage in damage(),
    ) {
        check(&ops, damage)?;
    }
}

/// A valid two-epoch file image, built once.
fn image() -> &'static [u8] {
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = TempDir::new("image");
        let mut store = SnapshotStore::open(dir.path(), OP, PART, 4096).unwrap();
        store.write(meta(1), &payload(1, 300)).unwrap();
        store.write(meta(2), &payload(2, 500)).unwrap();
        drop(store);
        read(&dir.file())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases() * 4, ..ProptestConfig::default() })]

    /// What the `snapshot_decoder` fuzz target does, on every `cargo test`.
    #[test]
    fn arbitrary_bytes_as_a_snapshot_file_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..20_000)) {
        let _ = recover_bytes(&bytes, OP, PART);
        let _ = decode_records::<(u64, (i64, (Vec<u8>, String)))>(&bytes);
    }

    #[test]
    fn mutated_valid_images_give_an_epoch_byte_for_byte_or_an_error(
        edits in proptest::collection::vec((any::<u64>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<u64>()),
    ) {
        let mut bytes = image().to_vec();
        for (at, value) in edits {
            let i = (at % bytes.len() as u64) as usize;
            bytes[i] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate((cut % (bytes.len() as u64 + 1)) as usize);
        }
        match recover_bytes(&bytes, OP, PART) {
            Ok(Some(rec)) => {
                let ok = [(1, 300), (2, 500)]
                    .iter()
                    .any(|&(e, len)| rec.meta == meta(e) && rec.payload == payload(e, len));
                prop_assert!(ok, "wrong data accepted: {:?}", rec.meta);
            }
            Ok(None) => prop_assert!(false, "a written image looked empty"),
            Err(_) => {}
        }
    }
}
