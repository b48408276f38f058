//! Checkpoints of a running pipeline (SPEC S10–S12): barriers, per-partition snapshots, commit.
//!
//! A [`Coordinator`] shared by the partitions (atomics only) drives the protocol:
//! 1. every interval, once the previous checkpoint completed, it *requests* epoch `N`: that is
//!    the barrier, injected at every source at once;
//! 2. each partition, at the top of its next loop iteration (between intake batches, so never
//!    per record), snapshots its operator's unemitted inputs, the restore entries still
//!    waiting and its source position, stages them to its [`SnapshotStore`] (a copy into the
//!    map: the only part on the core), passes the barrier to its sink ([`Sink::barrier`]), and
//!    hands the flush (`msync`) to a helper thread; when it is durable the partition reports
//!    epoch `N` *flushed*;
//! 3. epoch `N` *completes* when every partition flushed it — by the coordinator itself
//!    (`auto_complete`), or by whoever owns the output once it made the outputs before the
//!    barriers durable (e.g. `enrich`'s writer). Sinks then see [`Sink::commit`]. The next
//!    epoch is requested only after `N` completed, so each store always holds the last
//!    completed epoch, whatever happens to the next one.
//!
//! Snapshots never wait for in-flight requests: they copy what the operator holds.
//! When every partition reached the end of its input, a final checkpoint is taken and the
//! partitions stop once it completed; a restart after that restores an empty state at the end.
//!
//! ```
//! use ringwait::runtime::checkpoint::Coordinator;
//! let c = Coordinator::new(2, 1, true);
//! assert_eq!(c.request_next(), Some(1));
//! c.flushed(0, 1);
//! assert!(!c.all_flushed(1));
//! c.flushed(1, 1);
//! assert!(c.all_flushed(1));
//! c.complete(1);
//! assert_eq!(c.completed(), 1);
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::function::AsyncFunction;
use crate::operator::{AsyncWaitOperator, Restore};
use crate::sink::Sink;
use crate::snapshot::{DecodeError, SnapshotError, SnapshotMeta, SnapshotStore};
use crate::source::Source;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::PipelineError;

/// Payload room a partition's snapshot file starts with (it grows when needed).
const INITIAL_PAYLOAD: u64 = 256 * 1024;

/// The cross-core state of the checkpoint protocol (see the [module docs](self)).
#[derive(Debug)]
pub struct Coordinator {
    requested: AtomicU64,
    completed: AtomicU64,
    flushed: Box<[AtomicU64]>,
    finished: AtomicUsize,
    done: AtomicBool,
    cancelled: AtomicBool,
    auto_complete: bool,
}

impl Coordinator {
    /// A coordinator for `partitions` whose first checkpoint is `first_epoch` (≥ 1, above
    /// every epoch in the stores). With `auto_complete`, an epoch completes as soon as every
    /// partition flushed it; otherwise the output's owner calls [`complete`](Self::complete).
    pub fn new(partitions: usize, first_epoch: u64, auto_complete: bool) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self::unshared(partitions, first_epoch, auto_complete))
    }

    /// The coordinator itself, for callers that share it their own way (loom models).
    fn unshared(partitions: usize, first_epoch: u64, auto_complete: bool) -> Self {
        let base = first_epoch.max(1) - 1;
        Coordinator {
            requested: AtomicU64::new(base),
            completed: AtomicU64::new(base),
            flushed: (0..partitions).map(|_| AtomicU64::new(base)).collect(),
            finished: AtomicUsize::new(0),
            done: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            auto_complete,
        }
    }

    /// Partitions taking part.
    pub fn partitions(&self) -> usize {
        self.flushed.len()
    }

    /// The newest epoch requested (the barrier partitions must pass).
    #[inline]
    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::Acquire)
    }

    /// The newest completed epoch.
    #[inline]
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// Requests the next epoch if the last one completed; returns it.
    pub fn request_next(&self) -> Option<u64> {
        let r = self.requested.load(Ordering::Acquire);
        if self.completed() < r {
            return None;
        }
        self.requested.store(r + 1, Ordering::Release);
        Some(r + 1)
    }

    /// Partition `partition` made its snapshot of `epoch` durable.
    pub fn flushed(&self, partition: usize, epoch: u64) {
        self.flushed[partition].fetch_max(epoch, Ordering::AcqRel);
    }

    /// Whether every partition flushed `epoch`.
    pub fn all_flushed(&self, epoch: u64) -> bool {
        self.flushed
            .iter()
            .all(|f| f.load(Ordering::Acquire) >= epoch)
    }

    /// Marks `epoch` completed (its outputs are committed).
    pub fn complete(&self, epoch: u64) {
        self.completed.fetch_max(epoch, Ordering::AcqRel);
    }

    /// A partition reached the end of its input with nothing left in its operator.
    pub fn partition_finished(&self) {
        self.finished.fetch_add(1, Ordering::AcqRel);
    }

    /// The owner of the output failed: no checkpoint will complete any more, and the
    /// partitions stop with [`PipelineError::Aborted`].
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Whether the final checkpoint completed: partitions may stop.
    #[inline]
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// One step of the coordinator's loop: completes (when automatic) and requests epochs;
    /// `due` says whether the interval since the last request has passed. Returns the epoch
    /// it requested, if any.
    pub(crate) fn step(&self, due: bool, final_epoch: &mut Option<u64>) -> Option<u64> {
        let requested = self.requested();
        if self.auto_complete && self.completed() < requested && self.all_flushed(requested) {
            self.complete(requested);
        }
        if self.completed() < requested {
            return None;
        }
        if let Some(f) = *final_epoch {
            if self.completed() >= f {
                self.done.store(true, Ordering::Release);
            }
            return None;
        }
        if self.finished.load(Ordering::Acquire) == self.partitions() {
            *final_epoch = self.request_next();
            return *final_epoch;
        }
        if due {
            return self.request_next();
        }
        None
    }
}

/// Runs the coordinator until `stop`: a request every `interval`, a final one at the end.
pub(crate) fn coordinate(
    c: &Coordinator,
    interval: Duration,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut last = Instant::now();
    let mut final_epoch = None;
    let pause = (interval / 8).clamp(Duration::from_micros(100), Duration::from_millis(2));
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        if c.step(last.elapsed() >= interval, &mut final_epoch)
            .is_some()
        {
            last = Instant::now();
        }
        std::thread::sleep(pause);
    }
}

/// Checkpoint settings of a run ([`super::Pipeline::run_checkpointed`]).
#[derive(Clone, Debug)]
pub struct Checkpointing {
    /// Directory of the snapshot files (one per partition) and their lock.
    pub dir: PathBuf,
    /// Time between checkpoints.
    pub interval: Duration,
    /// The completed epoch to restore, `None` for a fresh start.
    pub restore_epoch: Option<u64>,
    /// The shared protocol state; its first epoch must be above every epoch in the stores.
    pub coordinator: std::sync::Arc<Coordinator>,
}

/// What a restart should do, from the snapshot files in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePlan {
    /// The newest epoch every partition holds (restore it), if any.
    pub complete: Option<u64>,
    /// The first epoch of the next run: above every epoch any store holds.
    pub first_epoch: u64,
}

/// Reads every partition's snapshot file (without locking) and plans a restart for the case
/// where an epoch completes when every partition flushed it (`auto_complete`).
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("rw-doc-plan-{}", std::process::id()));
/// let plan = ringwait::runtime::checkpoint::plan_restore(&dir, 1, 2).unwrap();
/// assert_eq!((plan.complete, plan.first_epoch), (None, 1));
/// ```
pub fn plan_restore(
    dir: &Path,
    operator_id: u64,
    partitions: usize,
) -> Result<RestorePlan, SnapshotError> {
    let mut min: Option<u64> = None;
    let mut max = 0u64;
    let mut all = true;
    for p in 0..partitions {
        match SnapshotStore::recover(dir, operator_id, p as u32)? {
            Some(r) => {
                min = Some(min.map_or(r.meta.epoch, |m| m.min(r.meta.epoch)));
                max = max.max(r.meta.epoch);
            }
            None => all = false,
        }
    }
    Ok(RestorePlan {
        complete: if all { min } else { None },
        first_epoch: max + 1,
    })
}

/// Newest epoch any of the partitions' stores holds (0 when none).
pub fn newest_epoch(dir: &Path, operator_id: u64, partitions: usize) -> Result<u64, SnapshotError> {
    plan_restore(dir, operator_id, partitions).map(|p| p.first_epoch - 1)
}

/// Encodes an operator's snapshot payload (a monomorphised [`crate::operator::encode_snapshot`]).
pub(crate) type EncodeFn<F> =
    fn(&AsyncWaitOperator<F>, &Restore<<F as AsyncFunction>::In>, u64, &mut Vec<u8>) -> u64;
/// Decodes one (a monomorphised [`Restore::decode`]).
pub(crate) type DecodeFn<In> = fn(&[u8]) -> Result<Restore<In>, DecodeError>;

/// A flush running on a helper thread: the epoch, and the store coming back with the result.
type Flushing = (
    u64,
    std::thread::JoinHandle<(SnapshotStore, Result<u64, SnapshotError>)>,
);

/// The checkpoint state of one partition, on its core.
pub(crate) struct PartitionCheckpoint<F: AsyncFunction> {
    pub coordinator: std::sync::Arc<Coordinator>,
    /// `None` while a helper thread flushes it.
    pub store: Option<SnapshotStore>,
    pub flushing: Option<Flushing>,
    pub restore: Restore<F::In>,
    pub encode: EncodeFn<F>,
    pub payload: Vec<u8>,
    pub partition: usize,
    /// Last epoch this partition snapshotted.
    pub epoch: u64,
    /// Last epoch committed to the sink.
    pub committed: u64,
    pub finished: bool,
    /// How long each snapshot took on the core (ns).
    pub snapshot_times: crate::metrics::LatencyRecorder,
}

impl<F: AsyncFunction> PartitionCheckpoint<F> {
    /// Opens the partition's store and restores the operator, source and sink from
    /// `settings.restore_epoch` (or truncates the sink for a fresh start).
    pub fn open<S, K>(
        settings: &Checkpointing,
        decode: DecodeFn<F::In>,
        encode: EncodeFn<F>,
        op: &mut AsyncWaitOperator<F>,
        source: &mut S,
        sink: &mut K,
        partition: usize,
    ) -> Result<Self, PipelineError>
    where
        S: Source<Item = F::In>,
        K: Sink<F::Out, F::In>,
    {
        let error = |error| PipelineError::Checkpoint { partition, error };
        let mut store = SnapshotStore::open(
            &settings.dir,
            op.config().operator_id(),
            partition as u32,
            INITIAL_PAYLOAD,
        )
        .map_err(error)?;
        let restore = match settings.restore_epoch {
            Some(epoch) => {
                let rec = store.rollback_to(epoch).map_err(error)?;
                let restore = decode(&rec.payload).map_err(|error| PipelineError::Restore {
                    partition,
                    path: store.path().to_path_buf(),
                    error,
                })?;
                source
                    .seek(rec.meta.source_position, restore.source_index())
                    .map_err(|cause| PipelineError::Source { partition, cause })?;
                sink.restore(rec.meta.sink_position)
                    .map_err(|cause| PipelineError::Sink { partition, cause })?;
                op.restore_last_watermark(rec.meta.watermark);
                restore
            }
            None => {
                sink.restore(0)
                    .map_err(|cause| PipelineError::Sink { partition, cause })?;
                Restore::empty()
            }
        };
        let base = settings.coordinator.completed();
        Ok(PartitionCheckpoint {
            coordinator: settings.coordinator.clone(),
            store: Some(store),
            flushing: None,
            restore,
            encode,
            payload: Vec::with_capacity(64 * 1024),
            partition,
            epoch: base,
            committed: base,
            finished: false,
            snapshot_times: crate::metrics::LatencyRecorder::new(),
        })
    }

    /// Whether a barrier waits for this partition.
    #[inline]
    pub fn barrier_pending(&self) -> bool {
        self.flushing.is_none() && self.coordinator.requested() > self.epoch
    }

    /// Whether a flush is running.
    #[inline]
    pub fn is_flushing(&self) -> bool {
        self.flushing.is_some()
    }

    /// Collects a finished flush: reports the epoch flushed, or fails the pipeline (the store
    /// kept the previous epoch).
    pub fn poll_flush(&mut self) -> Result<(), PipelineError> {
        let Some((epoch, handle)) = self.flushing.take_if(|(_, h)| h.is_finished()) else {
            return Ok(());
        };
        let partition = self.partition;
        let (store, result) = handle.join().map_err(|_| PipelineError::Panicked {
            partition,
            message: "the snapshot flush thread panicked".into(),
        })?;
        self.store = Some(store);
        result.map_err(|error| PipelineError::Checkpoint { partition, error })?;
        self.coordinator.flushed(partition, epoch);
        Ok(())
    }

    /// Takes the snapshot of the requested epoch: stage (copy) it, pass the barrier on, and
    /// start its flush on a helper thread.
    pub fn snapshot<S, K>(
        &mut self,
        op: &AsyncWaitOperator<F>,
        source: &S,
        sink: &mut K,
    ) -> Result<(), PipelineError>
    where
        S: Source<Item = F::In>,
        K: Sink<F::Out, F::In>,
    {
        let partition = self.partition;
        let started = std::time::Instant::now();
        let epoch = self.coordinator.requested();
        self.payload.clear();
        let count = (self.encode)(op, &self.restore, source.replay_index(), &mut self.payload);
        let meta = SnapshotMeta {
            epoch,
            capacity: op.config().capacity() as u64,
            record_count: count,
            source_position: source.position(),
            sink_position: sink.position(),
            watermark: op.last_watermark(),
        };
        let error = |error| PipelineError::Checkpoint { partition, error };
        let mut store = self.store.take().expect("no flush is running");
        if let Err(e) = store.stage(meta, &self.payload) {
            self.store = Some(store);
            return Err(error(e));
        }
        self.epoch = epoch;
        sink.barrier(epoch)
            .map_err(|cause| PipelineError::Sink { partition, cause })?;
        self.snapshot_times
            .record(started.elapsed().as_nanos() as u64);
        let handle = std::thread::Builder::new()
            .name(format!("ringwait-flush-{partition}"))
            .spawn(move || {
                let result = store.commit();
                if result.is_err() {
                    store.abandon();
                }
                (store, result)
            })
            .map_err(|e| {
                error(SnapshotError::Io {
                    op: "start the flush thread of",
                    path: PathBuf::from("the snapshot"),
                    source: e,
                })
            })?;
        self.flushing = Some((epoch, handle));
        Ok(())
    }
}

impl<F: AsyncFunction> Drop for PartitionCheckpoint<F> {
    /// Waits for a running flush, so the store (and its lock) is released when the partition
    /// ends.
    fn drop(&mut self) {
        if let Some((_, handle)) = self.flushing.take() {
            let _ = handle.join();
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;

    /// Two partitions and a completer: an epoch is never completed before both partitions
    /// flushed it, and what a partition wrote before reporting its flush is visible to the
    /// completer (release/acquire on `flushed`).
    #[test]
    fn an_epoch_completes_only_after_every_partition_flushed_it() {
        loom::model(|| {
            let c = Arc::new(Coordinator::unshared(2, 1, true));
            let state: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
            assert_eq!(c.request_next(), Some(1));
            let handles: Vec<_> = (0..2)
                .map(|p| {
                    let c = c.clone();
                    let state = state.clone();
                    loom::thread::spawn(move || {
                        let epoch = c.requested();
                        if epoch > 0 {
                            state[p].store(epoch, Ordering::Relaxed);
                            c.flushed(p, epoch);
                        }
                    })
                })
                .collect();
            let mut final_epoch = None;
            c.step(false, &mut final_epoch);
            if c.completed() >= 1 {
                assert_eq!(state[0].load(Ordering::Relaxed), 1);
                assert_eq!(state[1].load(Ordering::Relaxed), 1);
                // The next request is allowed only now.
                assert_eq!(c.request_next(), Some(2));
            } else {
                assert_eq!(c.request_next(), None, "no new epoch before completion");
            }
            for h in handles {
                h.join().unwrap();
            }
        });
    }

    /// The final checkpoint: `done` is set only after every partition finished and the final
    /// epoch completed.
    #[test]
    fn done_only_after_all_finished_and_the_final_epoch_completed() {
        loom::model(|| {
            let c = Arc::new(Coordinator::unshared(2, 1, true));
            let handles: Vec<_> = (0..2)
                .map(|p| {
                    let c = c.clone();
                    loom::thread::spawn(move || {
                        c.partition_finished();
                        // Answer whatever barrier is requested.
                        let epoch = c.requested();
                        c.flushed(p, epoch);
                    })
                })
                .collect();
            let mut final_epoch = None;
            for _ in 0..3 {
                c.step(false, &mut final_epoch);
                if c.is_done() {
                    let f = final_epoch.expect("a final epoch");
                    assert!(c.all_flushed(f));
                    assert_eq!(c.finished.load(Ordering::Acquire), 2);
                }
            }
            for h in handles {
                h.join().unwrap();
            }
        });
    }
}
