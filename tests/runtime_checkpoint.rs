//! Checkpoints in the runtime (SPEC S10–S12): a pipeline that dies mid-run (its source fails,
//! leaving output written after the last checkpoint in the files) is restored from its
//! checkpoint directory and finishes with every record exactly once, in order, per partition.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringwait::runtime::checkpoint::{plan_restore, Checkpointing, Coordinator};
use ringwait::runtime::{DelayLine, Pipeline, PipelineError};
use ringwait::sink::FileSink;
use ringwait::source::{BoxError, GeneratorSource, Source, SourceEvent};
use ringwait::{OperatorConfig, OrderMode};
use support::Delayed;

const TOTAL: u64 = 30_000;

/// A generator that slows down (so checkpoints happen) and fails after `fail_after` records:
/// the crash.
struct Crashing {
    inner: GeneratorSource<fn(u64) -> u64>,
    taken: u64,
    fail_after: Option<u64>,
}

impl Source for Crashing {
    type Item = u64;
    fn next(&mut self) -> Result<SourceEvent<u64>, BoxError> {
        if Some(self.taken) == self.fail_after {
            return Err("simulated crash".into());
        }
        self.taken += 1;
        if self.taken % 500 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.inner.next()
    }
    fn position(&self) -> u64 {
        self.inner.position()
    }
    fn seek(&mut self, position: u64, index: u64) -> Result<(), BoxError> {
        self.inner.seek(position, index)
    }
}

fn identity(i: u64) -> u64 {
    i
}

fn out_path(dir: &Path, p: usize) -> PathBuf {
    dir.join(format!("out-{p}.txt"))
}

fn run(dir: &Path, mode: OrderMode, fail_after: Option<u64>) -> Result<(), PipelineError> {
    run_with(dir, mode, fail_after, 64)
}

fn run_with(
    dir: &Path,
    mode: OrderMode,
    fail_after: Option<u64>,
    capacity: usize,
) -> Result<(), PipelineError> {
    let partitions = 2;
    let config = OperatorConfig::builder()
        .mode(mode)
        .capacity(capacity)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let pipeline = Pipeline::builder()
        .partitions(partitions)
        .pin(false)
        .operator(config)
        .build()
        .unwrap();
    let ckpt_dir = dir.join("ckpt");
    let plan = plan_restore(
        &ckpt_dir,
        pipeline.operator_config().operator_id(),
        partitions,
    )
    .unwrap();
    let ckpt = Checkpointing {
        dir: ckpt_dir,
        interval: Duration::from_millis(5),
        restore_epoch: plan.complete,
        coordinator: Coordinator::new(partitions, plan.first_epoch, true),
    };
    let out_dir = dir.to_path_buf();
    pipeline
        .run_checkpointed(
            &ckpt,
            move |p| {
                Ok(Crashing {
                    inner: GeneratorSource::new(
                        p.index,
                        p.partitions,
                        TOTAL,
                        identity as fn(u64) -> u64,
                    ),
                    taken: 0,
                    fail_after,
                })
            },
            |_p| async {
                Ok(Delayed(DelayLine::start(
                    Duration::from_micros(200),
                    Duration::from_micros(100),
                    256,
                )))
            },
            move |p| {
                FileSink::create(out_path(&out_dir, p.index), |v: &u64, out: &mut Vec<u8>| {
                    out.extend_from_slice(v.to_string().as_bytes())
                })
                .map_err(BoxError::from)
            },
            None,
        )
        .map(|_| ())
}

fn check(dir: &Path, mode: OrderMode) {
    for p in 0..2u64 {
        let text = std::fs::read_to_string(out_path(dir, p as usize)).unwrap();
        let mut got: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
        let want: Vec<u64> = (0..TOTAL).filter(|i| i % 2 == p).collect();
        if mode == OrderMode::Unordered {
            got.sort();
        }
        assert_eq!(got.len(), want.len(), "partition {p}: lost or duplicated");
        assert_eq!(got, want, "partition {p}");
    }
}

#[test]
fn a_pipeline_killed_mid_run_resumes_from_its_checkpoint_exactly_once() {
    for mode in [OrderMode::Ordered, OrderMode::Unordered] {
        let dir = std::env::temp_dir().join(format!("rw-rt-ckpt-{}-{mode}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Two crashes at different points, then a run to the end.
        for fail_after in [4_000, 7_000] {
            let err = run(&dir, mode, Some(fail_after)).unwrap_err();
            assert!(err.to_string().contains("simulated crash"), "{err}");
            let plan = plan_restore(&dir.join("ckpt"), 0, 2).unwrap();
            assert!(
                plan.complete.is_some(),
                "a checkpoint completed before the crash"
            );
        }
        run(&dir, mode, None).unwrap();
        check(&dir, mode);
        // Running again after the end changes nothing.
        run(&dir, mode, None).unwrap();
        check(&dir, mode);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Restore into a smaller capacity (the excess waits and is admitted in order) and then a
/// larger one, with crashes in between.
#[test]
fn restores_into_smaller_and_larger_capacities_lose_nothing() {
    let mode = OrderMode::Ordered;
    let dir = std::env::temp_dir().join(format!("rw-rt-ckpt-cap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    run_with(&dir, mode, Some(5_000), 256).unwrap_err();
    run_with(&dir, mode, Some(3_000), 3).unwrap_err();
    run_with(&dir, mode, None, 200).unwrap();
    check(&dir, mode);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_pipeline_on_the_same_directory_is_refused() {
    let dir = std::env::temp_dir().join(format!("rw-rt-ckpt-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = ringwait::snapshot::SnapshotStore::open(dir.join("ckpt"), 0, 0, 4096);
    if let Ok(_held) = store {
        let err = run(&dir, OrderMode::Ordered, None).unwrap_err();
        assert!(
            matches!(err, PipelineError::Checkpoint { .. }),
            "expected a lock error, got {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
