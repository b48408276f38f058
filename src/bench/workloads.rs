//! The overhead and delay workloads.

use std::future::Future;

use crate::function::{from_fn, AsyncFunction, ResultFuture};
use crate::runtime::checkpoint::{Checkpointing, Coordinator};
use crate::runtime::{
    DelayLine, FunctionFactory, Pipeline, PipelineError, RunReport, SinkFactory, SourceFactory,
};
use crate::sink::{CountingSink, Sink};
use crate::snapshot::SnapshotCodec;
use crate::source::{BoxError, GeneratorSource, Source};
use crate::OperatorConfig;

use super::{BenchConfig, BenchResult};

pub(super) fn pipeline(cfg: &BenchConfig) -> Result<Pipeline, PipelineError> {
    let operator = OperatorConfig::builder()
        .mode(cfg.mode)
        .capacity(cfg.capacity)
        .build()?;
    let mut b = Pipeline::builder()
        .partitions(cfg.partitions)
        .intake_batch(cfg.intake_batch)
        .operator(operator);
    if let Some(spin) = cfg.spin_before_park {
        b = b.spin_before_park(spin);
    }
    Ok(b.build()?)
}

/// overhead: records `0..N`, the function completes at once. With
/// `cfg.checkpoint_interval`, a checkpoint of every partition is taken that often (to a
/// temporary directory, removed afterwards).
pub fn run_overhead(cfg: &BenchConfig) -> Result<BenchResult, PipelineError> {
    let report = overhead_report(cfg)?;
    Ok(BenchResult::from_report("overhead", cfg.mode, &report))
}

/// The overhead workload's run report (latency histogram and all).
pub(super) fn overhead_report(cfg: &BenchConfig) -> Result<RunReport<CountingSink>, PipelineError> {
    let records = cfg.records;
    run_maybe_checkpointed(
        cfg,
        "overhead",
        move |p| Ok(GeneratorSource::new(p.index, p.partitions, records, |i| i)),
        |_p| async {
            Ok(from_fn(|x: &u64, r: ResultFuture<u64>| {
                let _ = r.complete_one(*x);
            }))
        },
        |_p| Ok(CountingSink::default()),
    )
}

/// Runs a workload's pipeline; with `cfg.checkpoint_interval`, takes a checkpoint of every
/// partition that often, into a temporary directory removed afterwards (what checkpoints
/// cost is then in the figures).
pub(super) fn run_maybe_checkpointed<S, F, K, SF, FF, Fut, KF>(
    cfg: &BenchConfig,
    workload: &str,
    sources: SF,
    functions: FF,
    sinks: KF,
) -> Result<RunReport<K::Output>, PipelineError>
where
    S: Source,
    S::Item: SnapshotCodec,
    F: AsyncFunction<In = S::Item>,
    K: Sink<F::Out, F::In>,
    SF: SourceFactory<S>,
    FF: FunctionFactory<Fut>,
    Fut: Future<Output = Result<F, BoxError>> + 'static,
    KF: SinkFactory<K>,
{
    let pipeline = pipeline(cfg)?;
    let Some(interval) = cfg.checkpoint_interval else {
        return pipeline.run(sources, functions, sinks);
    };
    let dir = std::env::temp_dir().join(format!(
        "ringwait-bench-{workload}-ckpt-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let ckpt = Checkpointing {
        dir: dir.clone(),
        interval,
        restore_epoch: None,
        coordinator: Coordinator::new(cfg.partitions, 1, true),
    };
    let report = pipeline.run_checkpointed(&ckpt, sources, functions, sinks, None);
    let _ = std::fs::remove_dir_all(&dir);
    report
}

/// The delay workload's function: completes each record `delay` later from one delay line.
struct Delayed(DelayLine<u64>);

impl AsyncFunction for Delayed {
    type In = u64;
    type Out = u64;

    #[inline]
    fn invoke(&self, x: &u64, r: ResultFuture<u64>) {
        self.0.push(r, *x);
    }
}

/// delay: records `0..N`, each completes `delay` (1 ms) later from a timer.
pub fn run_delay(cfg: &BenchConfig) -> Result<BenchResult, PipelineError> {
    let report = delay_report(cfg)?;
    Ok(BenchResult::from_report("delay", cfg.mode, &report))
}

/// The delay workload's run report.
pub(super) fn delay_report(cfg: &BenchConfig) -> Result<RunReport<CountingSink>, PipelineError> {
    let records = cfg.records;
    let (delay, spin, capacity) = (cfg.delay, cfg.spin, cfg.capacity);
    pipeline(cfg)?.run(
        move |p| Ok(GeneratorSource::new(p.index, p.partitions, records, |i| i)),
        move |_p| async move { Ok(Delayed(DelayLine::start(delay, spin, capacity))) },
        |_p| Ok(CountingSink::default()),
    )
}
