//! Checkpoints of the operator (SPEC S10, S11): ports of Flink's `AsyncWaitOperatorTest`
//! restore scenarios, driven with explicit time. A snapshot is taken while everything is in
//! flight; restoring it re-triggers the inputs in order, into the same, a larger or a smaller
//! capacity, and gives the same output every time.

mod support;

use ringwait::operator::{encode_snapshot, Restore, RestoredEntry};
use ringwait::snapshot::{DecodeError, SnapshotMeta, SnapshotStore};
use ringwait::time::Nanos;
use ringwait::{AsyncWaitOperator, Emitted, OrderMode, StreamElement};
use support::long_timeout_config as config;
use support::*;

fn snapshot(op: &AsyncWaitOperator<Manual>, restore: &Restore<i64>) -> Vec<u8> {
    let mut payload = Vec::new();
    encode_snapshot(op, restore, 0, &mut payload);
    payload
}

/// Restores `payload` into a fresh operator of `capacity`, completes every request (in reverse
/// order of invocation, to exercise the ordering), feeding waiting entries as capacity frees,
/// and returns the outputs and the sequence numbers of the invocations.
fn restore_and_finish(mode: OrderMode, capacity: usize, payload: &[u8]) -> (Vec<Out>, Vec<u64>) {
    let (mut op, reqs) = operator(config(mode, capacity));
    let mut restore = Restore::<i64>::decode(payload).unwrap();
    let mut out = Vec::new();
    let mut sequences = Vec::new();
    let mut now = 1;
    loop {
        restore.feed(&mut op, ms(now)).unwrap();
        let pending: Vec<_> = reqs.borrow_mut().drain(..).collect();
        if pending.is_empty() && restore.is_done() {
            out.extend(drain(&mut op, ms(now)));
            break;
        }
        for r in pending.iter().rev() {
            sequences.push(r.handle.id().sequence);
            let _ = r.handle.complete_one(r.input * 2);
        }
        now += 1;
        op.advance(ms(now)).unwrap();
        out.extend(drain(&mut op, ms(now)));
    }
    op.advance(ms(now + 1)).unwrap();
    out.extend(drain(&mut op, ms(now + 1)));
    assert!(op.is_empty(), "everything restored was emitted");
    sequences.sort();
    (out, sequences)
}

/// Records 1..=5 with timestamps and a watermark after the third, none completed.
fn everything_in_flight(mode: OrderMode, capacity: usize) -> (AsyncWaitOperator<Manual>, Vec<u8>) {
    let (mut op, _reqs) = operator(config(mode, capacity));
    for i in 1..=3 {
        op.process(at(i, i * 10), ms(0)).unwrap();
    }
    op.process(StreamElement::Watermark(30), ms(0)).unwrap();
    for i in 4..=5 {
        op.process(at(i, i * 10), ms(0)).unwrap();
    }
    let payload = snapshot(&op, &Restore::empty());
    (op, payload)
}

fn expected() -> Vec<Out> {
    vec![
        Out::Rec(2, Some(10)),
        Out::Rec(4, Some(20)),
        Out::Rec(6, Some(30)),
        Out::Wm(30),
        Out::Rec(8, Some(40)),
        Out::Rec(10, Some(50)),
    ]
}

/// Unordered output, checked as: the same multiset, and the watermark as a boundary.
fn check_unordered(out: &[Out]) {
    let wm = out
        .iter()
        .position(|o| *o == Out::Wm(30))
        .expect("watermark");
    let mut before: Vec<_> = out[..wm].to_vec();
    let mut after: Vec<_> = out[wm + 1..].to_vec();
    before.sort();
    after.sort();
    assert_eq!(before, expected()[..3].to_vec());
    assert_eq!(after, expected()[4..].to_vec());
}

/// Flink `testStateSnapshotAndRestore`: a snapshot taken with everything in flight holds every
/// input, and a restored operator emits exactly what the original would have.
#[test]
fn snapshot_with_everything_in_flight_restores_every_input() {
    for mode in [OrderMode::Ordered, OrderMode::Unordered] {
        let (op, payload) = everything_in_flight(mode, 10);
        assert_eq!(op.in_flight(), 5, "the snapshot did not wait for anything");
        let restore = Restore::<i64>::decode(&payload).unwrap();
        assert_eq!(restore.waiting(), 6);
        assert_eq!(restore.next_sequence(), 5);
        let entries: Vec<_> = restore.entries().cloned().collect();
        assert_eq!(
            entries[3],
            RestoredEntry::Watermark(30),
            "watermark in its place"
        );
        assert_eq!(
            entries[0],
            RestoredEntry::Record {
                sequence: 0,
                value: 1,
                timestamp: Some(10)
            }
        );
        let (out, sequences) = restore_and_finish(mode, 10, &payload);
        if mode == OrderMode::Ordered {
            assert_eq!(out, expected());
        } else {
            check_unordered(&out);
        }
        assert_eq!(
            sequences,
            vec![0, 1, 2, 3, 4],
            "request ids keep their sequence"
        );
    }
}

/// Completed-but-unemitted records are in the snapshot too (ordered: waiting behind the head).
#[test]
fn snapshot_holds_done_records_waiting_behind_the_head() {
    let (mut op, reqs) = operator(config(OrderMode::Ordered, 10));
    for i in 1..=3 {
        op.process(rec(i), ms(0)).unwrap();
    }
    double(&reqs, 2);
    double(&reqs, 3);
    op.advance(ms(1)).unwrap();
    assert_eq!(drain(&mut op, ms(1)), vec![]);
    let payload = snapshot(&op, &Restore::empty());
    let (out, _) = restore_and_finish(OrderMode::Ordered, 10, &payload);
    assert_eq!(
        out,
        vec![Out::Rec(2, None), Out::Rec(4, None), Out::Rec(6, None)]
    );
}

/// Flink: restore into a larger capacity.
#[test]
fn restore_into_a_larger_capacity() {
    for mode in [OrderMode::Ordered, OrderMode::Unordered] {
        let (_op, payload) = everything_in_flight(mode, 6);
        let (out, _) = restore_and_finish(mode, 64, &payload);
        if mode == OrderMode::Ordered {
            assert_eq!(out, expected());
        } else {
            check_unordered(&out);
        }
    }
}

/// Flink: restore into a smaller capacity — the excess waits as backpressure and is admitted
/// in order as capacity frees; nothing is lost.
#[test]
fn restore_into_a_smaller_capacity_admits_the_excess_as_capacity_frees() {
    for mode in [OrderMode::Ordered, OrderMode::Unordered] {
        for capacity in [1, 2, 3] {
            let (_op, payload) = everything_in_flight(mode, 10);
            let (mut op, _reqs) = operator(config(mode, capacity));
            let mut restore = Restore::<i64>::decode(&payload).unwrap();
            assert!(!restore.feed(&mut op, ms(1)).unwrap());
            assert_eq!(op.occupancy(), capacity);
            assert_eq!(restore.waiting(), 6 - capacity);
            let (out, _) = restore_and_finish(mode, capacity, &payload);
            if mode == OrderMode::Ordered {
                assert_eq!(out, expected(), "capacity {capacity}");
            } else {
                check_unordered(&out);
            }
        }
    }
}

/// Flink: a snapshot taken right after a restore (nothing completed, part of it still waiting
/// for capacity) holds everything again, in order.
#[test]
fn snapshot_right_after_restore_holds_everything() {
    let (_op, payload) = everything_in_flight(OrderMode::Ordered, 10);
    let (mut op, _reqs) = operator(config(OrderMode::Ordered, 2));
    let mut restore = Restore::<i64>::decode(&payload).unwrap();
    restore.feed(&mut op, ms(1)).unwrap();
    let again = snapshot(&op, &restore);
    assert_eq!(
        Restore::<i64>::decode(&again)
            .unwrap()
            .entries()
            .collect::<Vec<_>>(),
        Restore::<i64>::decode(&payload)
            .unwrap()
            .entries()
            .collect::<Vec<_>>()
    );
    assert_eq!(Restore::<i64>::decode(&again).unwrap().next_sequence(), 5);
    let (out, _) = restore_and_finish(OrderMode::Ordered, 10, &again);
    assert_eq!(out, expected());
}

/// Flink `testRestartWithFullQueue`: the queue is full and one more record waits for capacity;
/// the snapshot holds both, and the restored operator emits all of them.
#[test]
fn restart_with_a_full_queue_and_the_record_waiting_for_capacity() {
    for mode in [OrderMode::Ordered, OrderMode::Unordered] {
        let (mut op, _reqs) = operator(config(mode, 3));
        let mut waiting = Restore::empty();
        for i in 1..=3 {
            op.process(rec(i), ms(0)).unwrap();
        }
        match op.process(rec(4), ms(0)) {
            Err(ringwait::ProcessError::Full(e)) => waiting.hold(e, &op),
            other => panic!("expected Full, got {other:?}"),
        }
        let payload = snapshot(&op, &waiting);
        let restore = Restore::<i64>::decode(&payload).unwrap();
        assert_eq!(restore.waiting(), 4);
        assert_eq!(restore.next_sequence(), 4);
        let (mut out, sequences) = restore_and_finish(mode, 3, &payload);
        assert_eq!(sequences, vec![0, 1, 2, 3]);
        if mode == OrderMode::Unordered {
            out.sort();
        }
        assert_eq!(
            out,
            (1..=4).map(|i| Out::Rec(i * 2, None)).collect::<Vec<_>>()
        );
    }
}

/// SPEC S11: restoring the same snapshot twice gives the same output.
#[test]
fn restoring_the_same_snapshot_twice_gives_the_same_output() {
    for capacity in [2, 10] {
        let (_op, payload) = everything_in_flight(OrderMode::Ordered, 10);
        let first = restore_and_finish(OrderMode::Ordered, capacity, &payload);
        let second = restore_and_finish(OrderMode::Ordered, capacity, &payload);
        assert_eq!(first, second);
    }
}

/// New records after a restore continue the snapshot's sequence (stable request ids), and the
/// restored watermark still refuses a regression.
#[test]
fn after_restore_sequences_continue_and_watermarks_cannot_regress() {
    let (op, payload) = everything_in_flight(OrderMode::Ordered, 10);
    let last = op.last_watermark();
    let (mut op2, reqs) = operator(config(OrderMode::Ordered, 10));
    let mut restore = Restore::<i64>::decode(&payload).unwrap();
    op2.restore_last_watermark(last);
    assert!(restore.feed(&mut op2, ms(1)).unwrap());
    op2.process(rec(6), ms(1)).unwrap();
    let seq = reqs.borrow().last().unwrap().handle.id().sequence;
    assert_eq!(seq, 5);
    assert!(op2.process(StreamElement::Watermark(29), ms(1)).is_err());
}

/// An operator snapshot survives the snapshot store; its request ids on emit are the
/// original ones.
#[test]
fn operator_snapshot_round_trips_through_the_store() {
    let dir = std::env::temp_dir().join(format!("rw-opckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (op, payload) = everything_in_flight(OrderMode::Ordered, 10);
    let mut store = SnapshotStore::open(&dir, 1, 0, 4096).unwrap();
    let meta = SnapshotMeta {
        epoch: 1,
        capacity: 10,
        record_count: 6,
        source_position: 5,
        sink_position: 0,
        watermark: op.last_watermark(),
    };
    store.write(meta, &payload).unwrap();
    drop(store);
    let rec = SnapshotStore::recover(&dir, 1, 0).unwrap().unwrap();
    assert_eq!(rec.meta.watermark, Some(30));
    let (mut op2, reqs) = operator(config(OrderMode::Ordered, 10));
    let mut restore = Restore::<i64>::decode(&rec.payload).unwrap();
    restore.feed(&mut op2, Nanos(0)).unwrap();
    for r in reqs.borrow().iter() {
        let _ = r.handle.complete_one(r.input);
    }
    op2.advance(Nanos(1)).unwrap();
    let mut sequences = Vec::new();
    while let Some(e) = op2.pop_output(Nanos(1)) {
        if let Emitted::Record { sequence, .. } = e {
            sequences.push(sequence);
        }
    }
    assert_eq!(sequences, vec![0, 1, 2, 3, 4]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A payload of another format, truncated, or with an absurd count is refused, never panics.
#[test]
fn malformed_operator_payloads_are_refused() {
    let (_op, payload) = everything_in_flight(OrderMode::Ordered, 10);
    for cut in 0..payload.len() {
        assert!(
            Restore::<i64>::decode(&payload[..cut]).is_err(),
            "cut {cut}"
        );
    }
    let mut other = payload.clone();
    other[0] ^= 1;
    assert!(matches!(
        Restore::<i64>::decode(&other),
        Err(DecodeError::UnknownFormat { .. })
    ));
    for bit in 0..payload.len() * 8 {
        let mut flipped = payload.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let _ = Restore::<i64>::decode(&flipped); // refused or a different value; no panic
    }
}
