//! The checkpoint workload (SPEC section 4): snapshot and restore cost against the number of
//! records in flight (0, 1k, 64k).
//!
//! For each size, an operator of that capacity (at least 1) holds that many records in flight
//! (a function that never completes). Measured, each many times:
//! - *snapshot*: encode every unemitted input ([`encode_snapshot`]) and stage it in the
//!   memory-mapped [`SnapshotStore`] — the part on the partition's path, before the flush;
//! - *flush*: the commit (`msync` of payload, then header);
//! - *restore*: read the newest snapshot back (`pread`, CRC checks), decode it, and re-trigger
//!   every record in a fresh operator.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::function::{from_fn, ResultFuture};
use crate::operator::{encode_snapshot, Restore};
use crate::snapshot::{SnapshotError, SnapshotMeta, SnapshotStore};
use crate::time::Nanos;
use crate::{AsyncWaitOperator, OperatorConfig, StreamElement};

/// Records in flight measured by default.
pub const IN_FLIGHT: [usize; 3] = [0, 1_000, 65_536];

/// One line of the checkpoint workload.
///
/// ```
/// let r = ringwait::bench::CheckpointResult {
///     in_flight: 1000, payload_bytes: 17_000, snapshot_p50_us: 9.0, snapshot_p99_us: 12.0,
///     flush_p50_us: 300.0, restore_p50_us: 80.0, restore_max_us: 95.0,
/// };
/// assert!(r.to_string().starts_with("workload=checkpoint in_flight=1000 "));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointResult {
    /// Records in flight when the snapshot is taken.
    pub in_flight: usize,
    /// Snapshot payload size.
    pub payload_bytes: usize,
    /// Encode + stage, median.
    pub snapshot_p50_us: f64,
    /// Encode + stage, 99th percentile.
    pub snapshot_p99_us: f64,
    /// Commit (flush payload, then header), median.
    pub flush_p50_us: f64,
    /// Read back + decode + re-trigger everything, median.
    pub restore_p50_us: f64,
    /// Same, largest.
    pub restore_max_us: f64,
}

impl std::fmt::Display for CheckpointResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "workload=checkpoint in_flight={} payload_bytes={} snapshot_p50_us={:.3} \
             snapshot_p99_us={:.3} flush_p50_us={:.3} restore_p50_us={:.3} restore_max_us={:.3} \
             impl=ringwait",
            self.in_flight,
            self.payload_bytes,
            self.snapshot_p50_us,
            self.snapshot_p99_us,
            self.flush_p50_us,
            self.restore_p50_us,
            self.restore_max_us
        )
    }
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

type Held = Rc<RefCell<Vec<ResultFuture<u64>>>>;

fn holding_operator(
    capacity: usize,
) -> (
    AsyncWaitOperator<impl crate::AsyncFunction<In = u64, Out = u64>>,
    Held,
) {
    let held: Held = Rc::default();
    let h = held.clone();
    let config = OperatorConfig::builder()
        .capacity(capacity.max(1))
        .build()
        .expect("valid capacity");
    let f = from_fn(move |_: &u64, r: ResultFuture<u64>| h.borrow_mut().push(r));
    (
        AsyncWaitOperator::new(config, f, 0).expect("operator"),
        held,
    )
}

/// Measures one size; `rounds` snapshots and restores.
pub fn run_checkpoint_size(
    dir: &std::path::Path,
    in_flight: usize,
    rounds: usize,
) -> Result<CheckpointResult, SnapshotError> {
    let (mut op, held) = holding_operator(in_flight);
    for i in 0..in_flight as u64 {
        // A random-looking u64 payload per record, as a key would be.
        let _ = op.process(
            StreamElement::timed(crate::dataset::key_of(i), i as i64),
            Nanos(0),
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    let mut store = SnapshotStore::open(dir, 0, 0, (in_flight as u64 * 32).max(4096))?;
    let mut payload = Vec::with_capacity(in_flight * 32 + 64);
    let empty = Restore::empty();
    let mut snapshots = Vec::with_capacity(rounds);
    let mut flushes = Vec::with_capacity(rounds);
    let mut epoch = 0;
    for round in 0..rounds {
        epoch += 1;
        let t = Instant::now();
        payload.clear();
        let count = encode_snapshot(&op, &empty, 0, &mut payload);
        let meta = SnapshotMeta {
            epoch,
            capacity: in_flight as u64,
            record_count: count,
            ..SnapshotMeta::default()
        };
        store.stage(meta, &payload)?;
        snapshots.push(t.elapsed());
        // Flush only every few rounds: msync dominates and is not on the partition's path.
        if round % 8 == 0 || round + 1 == rounds {
            let t = Instant::now();
            store.commit()?;
            flushes.push(t.elapsed());
        } else {
            store.abandon();
            epoch -= 1;
        }
    }
    let mut restores = Vec::with_capacity(rounds.min(20));
    for _ in 0..rounds.clamp(1, 20) {
        let (mut fresh, fresh_held) = holding_operator(in_flight);
        let t = Instant::now();
        let rec = SnapshotStore::recover(dir, 0, 0)?.expect("a committed snapshot");
        let mut restore = Restore::<u64>::decode(&rec.payload).expect("own payload decodes");
        restore
            .feed(&mut fresh, Nanos(0))
            .expect("restore into the same capacity");
        restores.push(t.elapsed());
        assert_eq!(fresh.in_flight(), in_flight);
        drop(fresh);
        drop(fresh_held);
    }
    drop(store);
    drop(op);
    drop(held);
    let _ = std::fs::remove_dir_all(dir);
    snapshots.sort();
    flushes.sort();
    restores.sort();
    Ok(CheckpointResult {
        in_flight,
        payload_bytes: payload.len(),
        snapshot_p50_us: quantile(&snapshots, 0.5),
        snapshot_p99_us: quantile(&snapshots, 0.99),
        flush_p50_us: quantile(&flushes, 0.5),
        restore_p50_us: quantile(&restores, 0.5),
        restore_max_us: restores.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
    })
}

/// The checkpoint workload at 0, 1k and 64k in flight, in a temporary directory.
pub fn run_checkpoint() -> Result<Vec<CheckpointResult>, SnapshotError> {
    let dir = std::env::temp_dir().join(format!("ringwait-bench-ckpt-{}", std::process::id()));
    IN_FLIGHT
        .iter()
        .map(|&n| run_checkpoint_size(&dir, n, if n > 10_000 { 100 } else { 400 }))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_size_measures_and_restores_everything() {
        let dir = std::env::temp_dir().join(format!("rw-bench-ckpt-test-{}", std::process::id()));
        for n in [0, 10, 1000] {
            let r = super::run_checkpoint_size(&dir, n, 10).unwrap();
            assert_eq!(r.in_flight, n);
            assert!(r.payload_bytes >= 32 + n * 25);
        }
    }
}
