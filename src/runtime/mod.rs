//! The thread-per-core runtime: one pinned glommio executor per partition.
//!
//! Each partition's source, operator, function and sink are created *on* its core by the
//! factories given to [`Pipeline::run`], so they can hold `Rc`s, sockets and timers that never
//! cross threads. Partitions share nothing but an abort flag; anything that must cross cores
//! goes through the bounded lock-free [`crate::queue`]. End of input drains everything in
//! flight; the executors' threads are joined before `run` returns.
//!
//! ```
//! use ringwait::runtime::Pipeline;
//! use ringwait::source::GeneratorSource;
//! use ringwait::sink::CountingSink;
//! use ringwait::function::from_fn;
//! use ringwait::OperatorConfig;
//!
//! let pipeline = Pipeline::builder()
//!     .partitions(2)
//!     .operator(OperatorConfig::builder().capacity(100).build().unwrap())
//!     .build()
//!     .unwrap();
//! let report = pipeline
//!     .run(
//!         |p| Ok(GeneratorSource::new(p.index, p.partitions, 10_000, |i| i)),
//!         |_p| async { Ok(from_fn(|x: &u64, r| { let _ = r.complete_one(x + 1); })) },
//!         |_p| Ok(CountingSink::default()),
//!     )
//!     .unwrap();
//! assert_eq!(report.merged.records_in, 10_000);
//! assert_eq!(report.outputs().map(|c| c.records).sum::<u64>(), 10_000);
//! ```

mod async_fn;
pub mod checkpoint;
mod delay;
mod driver;
mod executor;
mod factory;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

pub use crate::metrics::live::{LiveMetrics, PartitionGauges, PartitionSample, PUBLISH_EVERY};
pub use async_fn::{async_fn, AsyncFn};
pub use delay::DelayLine;
pub(crate) use executor::register_membarrier;
pub use executor::{available_cores, keep_awake, KEEP_AWAKE_PERIOD};
pub use factory::{FunctionFactory, SinkFactory, SourceFactory};

use crate::config::{ConfigError, OperatorConfig};
use crate::function::AsyncFunction;
use crate::metrics::OperatorMetrics;
use crate::operator::{AsyncWaitOperator, KeyFn, OperatorError};
use crate::sink::Sink;
use crate::source::{BoxError, Source};
use crate::sync::{Arc, AtomicBool, Ordering};
use crate::time::{MonotonicClock, Nanos};
use driver::{DriveTimes, DriverSettings};
use executor::ExecutorSettings;

/// Most partitions a pipeline accepts.
pub const MAX_PARTITIONS: usize = 1024;

/// Where a partition runs; handed to every factory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionContext {
    /// Partition index, `0..partitions`.
    pub index: usize,
    /// Number of partitions.
    pub partitions: usize,
    /// CPU the partition is pinned to, if pinned.
    pub core: Option<usize>,
    /// The operator id from the configuration.
    pub operator_id: u64,
}

/// Why a pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Invalid configuration (refused before anything starts).
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// `RLIMIT_MEMLOCK` is too low for the executors.
    #[error("the locked-memory limit (ulimit -l) is {limit_kib} KiB but {executors} executor(s) need about {needed_kib} KiB: raise it (ulimit -l {needed_kib}, or memlock in /etc/security/limits.conf), or use fewer partitions or a smaller io_memory")]
    MemLockLimit {
        /// Current soft limit.
        limit_kib: u64,
        /// What is needed.
        needed_kib: u64,
        /// Executors to start.
        executors: usize,
    },
    /// An executor could not start.
    #[error("partition {partition}: the executor could not start: {message}")]
    Executor {
        /// Partition.
        partition: usize,
        /// glommio's message.
        message: String,
    },
    /// A factory failed to create the partition's source, function or sink.
    #[error("partition {partition}: could not create its {what}: {cause}")]
    Setup {
        /// Partition.
        partition: usize,
        /// "source", "function" or "sink".
        what: &'static str,
        /// Why.
        cause: BoxError,
    },
    /// The source failed.
    #[error("partition {partition}: input failed: {cause}")]
    Source {
        /// Partition.
        partition: usize,
        /// Why.
        cause: BoxError,
    },
    /// The sink failed when finishing.
    #[error("partition {partition}: output failed: {cause}")]
    Sink {
        /// Partition.
        partition: usize,
        /// Why.
        cause: BoxError,
    },
    /// The operator failed (a record failed under the fail policy, a watermark regressed).
    #[error("partition {partition}: {error}")]
    Operator {
        /// Partition.
        partition: usize,
        /// What failed.
        error: OperatorError,
    },
    /// Code outside the user's function (a source or sink) panicked.
    #[error("partition {partition} panicked: {message}")]
    Panicked {
        /// Partition.
        partition: usize,
        /// Panic message.
        message: String,
    },
    /// A snapshot could not be opened, restored or made durable (the checkpoint fails the
    /// pipeline, as Flink does with no tolerated checkpoint failures).
    #[error("partition {partition}: checkpoint failed: {error}")]
    Checkpoint {
        /// Partition.
        partition: usize,
        /// What went wrong.
        error: crate::snapshot::SnapshotError,
    },
    /// A snapshot payload could not be decoded.
    #[error("partition {partition}: cannot restore from {}: {error}", path.display())]
    Restore {
        /// Partition.
        partition: usize,
        /// The snapshot file.
        path: std::path::PathBuf,
        /// What is wrong with the payload.
        error: crate::snapshot::DecodeError,
    },
    /// Stopped because another partition failed.
    #[error("partition {partition} stopped because another partition failed")]
    Aborted {
        /// Partition.
        partition: usize,
    },
}

/// What one partition did.
#[derive(Debug)]
pub struct PartitionReport<O> {
    /// Partition index.
    pub partition: usize,
    /// CPU it was pinned to.
    pub core: Option<usize>,
    /// Operator metrics at the end.
    pub metrics: OperatorMetrics,
    /// What the sink returned from `finish`.
    pub output: O,
    /// Source position at the end.
    pub source_position: u64,
    /// First intake, in nanoseconds since the run started.
    pub first_intake: Option<Nanos>,
    /// Last emit, in nanoseconds since the run started.
    pub last_emit: Option<Nanos>,
}

/// What a run did: per partition and merged.
#[derive(Debug)]
pub struct RunReport<O> {
    /// One report per partition, by index.
    pub partitions: Vec<PartitionReport<O>>,
    /// Metrics of all partitions merged.
    pub merged: OperatorMetrics,
    /// Wall time of the whole run, including executor start-up and shutdown.
    pub wall: Duration,
}

impl<O> RunReport<O> {
    /// The sinks' outputs, by partition.
    pub fn outputs(&self) -> impl Iterator<Item = &O> {
        self.partitions.iter().map(|p| &p.output)
    }

    /// Time from the first intake to the last emit over all partitions.
    pub fn active_time(&self) -> Duration {
        let first = self.partitions.iter().filter_map(|p| p.first_intake).min();
        let last = self.partitions.iter().filter_map(|p| p.last_emit).max();
        match (first, last) {
            (Some(f), Some(l)) => l.saturating_since(f),
            _ => Duration::ZERO,
        }
    }

    /// Records taken per second of [`active_time`](Self::active_time) (SPEC section 4).
    pub fn records_per_sec(&self) -> f64 {
        let secs = self.active_time().as_secs_f64();
        if secs == 0.0 {
            0.0
        } else {
            self.merged.records_in as f64 / secs
        }
    }
}

/// A configured pipeline; [`run`](Pipeline::run) it over factories for each partition's
/// source, function and sink. See the [module docs](self) for an example.
#[derive(Clone, Debug)]
pub struct Pipeline {
    partitions: usize,
    operator: OperatorConfig,
    executor: ExecutorSettings,
    intake_batch: usize,
    live: Option<std::sync::Arc<LiveMetrics>>,
}

/// Builds a [`Pipeline`]; every setting is validated by [`build`](PipelineBuilder::build).
#[derive(Clone, Debug)]
pub struct PipelineBuilder {
    partitions: Option<usize>,
    operator: Option<OperatorConfig>,
    executor: ExecutorSettings,
    intake_batch: usize,
    live: Option<std::sync::Arc<LiveMetrics>>,
}

impl Pipeline {
    /// A builder with defaults: one partition per available core, pinned, 256 KiB of io_uring
    /// memory per executor, intake batches of 32.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder {
            partitions: None,
            operator: None,
            executor: ExecutorSettings {
                pin: true,
                io_memory: 256 * 1024,
                spin_before_park: None,
            },
            intake_batch: 32,
            live: None,
        }
    }

    /// Number of partitions.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// The live metrics the partitions publish into, if any.
    pub fn live_metrics(&self) -> Option<&std::sync::Arc<LiveMetrics>> {
        self.live.as_ref()
    }

    /// The operator configuration every partition runs with.
    pub fn operator_config(&self) -> &OperatorConfig {
        &self.operator
    }
}

impl PipelineBuilder {
    /// Number of partitions (cores); default: every core this process may run on.
    pub fn partitions(mut self, n: usize) -> Self {
        self.partitions = Some(n);
        self
    }
    /// The operator configuration.
    pub fn operator(mut self, config: OperatorConfig) -> Self {
        self.operator = Some(config);
        self
    }
    /// Pin each partition to its own core (default true).
    pub fn pin(mut self, pin: bool) -> Self {
        self.executor.pin = pin;
        self
    }
    /// io_uring buffer memory per executor, in bytes (locked memory; default 256 KiB).
    pub fn io_memory(mut self, bytes: usize) -> Self {
        self.executor.io_memory = bytes;
        self
    }
    /// Spin this long before parking an idle executor: lower wake-up latency for dedicated
    /// cores, at the price of burning the core while idle.
    pub fn spin_before_park(mut self, spin: Duration) -> Self {
        self.executor.spin_before_park = Some(spin);
        self
    }
    /// Records taken from the source per loop iteration (default 32: a batch is taken, invoked and emitted before the next, so its duration bounds the latency the loop adds).
    pub fn intake_batch(mut self, n: usize) -> Self {
        self.intake_batch = n;
        self
    }

    /// Publish each partition's metrics into `live` every [`PUBLISH_EVERY`] while running
    /// (it must have one slot per partition).
    pub fn live_metrics(mut self, live: std::sync::Arc<LiveMetrics>) -> Self {
        self.live = Some(live);
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<Pipeline, ConfigError> {
        let partitions = self
            .partitions
            .unwrap_or_else(|| available_cores().len().max(1));
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(ConfigError::BadPartitions {
                got: partitions,
                max: MAX_PARTITIONS,
            });
        }
        if self.executor.io_memory < 64 * 1024 || self.executor.io_memory > 1 << 30 {
            return Err(ConfigError::Invalid {
                setting: "io_memory",
                reason: format!(
                    "{} bytes is outside 64 KiB ..= 1 GiB",
                    self.executor.io_memory
                ),
            });
        }
        if self.intake_batch == 0 || self.intake_batch > 1 << 16 {
            return Err(ConfigError::Invalid {
                setting: "intake_batch",
                reason: format!("{} is outside 1 ..= 65536", self.intake_batch),
            });
        }
        let operator = match self.operator {
            Some(c) => c,
            None => OperatorConfig::builder().build()?,
        };
        if let Some(live) = &self.live {
            if live.partitions() != partitions {
                return Err(ConfigError::Invalid {
                    setting: "live_metrics",
                    reason: format!(
                        "it has {} partition slots but the pipeline has {partitions} partitions",
                        live.partitions()
                    ),
                });
            }
        }
        Ok(Pipeline {
            partitions,
            operator,
            executor: self.executor,
            intake_batch: self.intake_batch,
            live: self.live,
        })
    }
}

/// A key function shared by every partition (key-ordered mode).
pub type SharedKeyFn<In> = std::sync::Arc<dyn Fn(&In) -> u64 + Send + Sync>;

impl Pipeline {
    /// Runs the pipeline to the end of every partition's input and returns the report, or the
    /// first error (the other partitions are stopped).
    ///
    /// `sources`, `functions` and `sinks` are called once per partition, on that partition's
    /// core; the function factory is async so it can connect to a store first.
    pub fn run<S, F, K, SF, FF, Fut, KF>(
        &self,
        sources: SF,
        functions: FF,
        sinks: KF,
    ) -> Result<RunReport<K::Output>, PipelineError>
    where
        S: Source,
        F: AsyncFunction<In = S::Item>,
        K: Sink<F::Out, F::In>,
        SF: SourceFactory<S>,
        FF: FunctionFactory<Fut>,
        Fut: Future<Output = Result<F, BoxError>> + 'static,
        KF: SinkFactory<K>,
    {
        self.run_inner(sources, functions, sinks, None, None)
    }

    /// As [`run`](Self::run), with a key function for key-ordered mode.
    pub fn run_keyed<S, F, K, SF, FF, Fut, KF>(
        &self,
        sources: SF,
        functions: FF,
        sinks: KF,
        key: SharedKeyFn<S::Item>,
    ) -> Result<RunReport<K::Output>, PipelineError>
    where
        S: Source,
        F: AsyncFunction<In = S::Item>,
        K: Sink<F::Out, F::In>,
        SF: SourceFactory<S>,
        FF: FunctionFactory<Fut>,
        Fut: Future<Output = Result<F, BoxError>> + 'static,
        KF: SinkFactory<K>,
    {
        self.run_inner(sources, functions, sinks, Some(key), None)
    }

    /// As [`run`](Self::run) (or [`run_keyed`](Self::run_keyed) with `key`), with
    /// checkpoints (SPEC S10–S12; see [`checkpoint`]): each partition restores
    /// `checkpointing.restore_epoch` from its snapshot file (re-triggering the snapshotted
    /// inputs in order before reading its source from the saved position, and truncating its
    /// sink back to the saved position) and snapshots every epoch the coordinator requests.
    /// The source must replay ([`Source::seek`]); the sink should commit ([`Sink::position`],
    /// [`Sink::barrier`], [`Sink::restore`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ringwait::runtime::{Pipeline, checkpoint::{Checkpointing, Coordinator, plan_restore}};
    /// use ringwait::source::GeneratorSource;
    /// use ringwait::sink::CountingSink;
    /// use ringwait::function::from_fn;
    /// use ringwait::OperatorConfig;
    /// # let dir = std::env::temp_dir().join(format!("rw-doc-ckpt-run-{}", std::process::id()));
    /// let pipeline = Pipeline::builder().partitions(1).pin(false).build().unwrap();
    /// let plan = plan_restore(&dir, pipeline.operator_config().operator_id(), 1).unwrap();
    /// let ckpt = Checkpointing {
    ///     dir: dir.clone(),
    ///     interval: Duration::from_millis(5),
    ///     restore_epoch: plan.complete,
    ///     coordinator: Coordinator::new(1, plan.first_epoch, true),
    /// };
    /// let report = pipeline.run_checkpointed(
    ///     &ckpt,
    ///     |p| Ok(GeneratorSource::new(p.index, p.partitions, 1000, |i| i)),
    ///     |_p| async { Ok(from_fn(|x: &u64, r| { let _ = r.complete_one(*x); })) },
    ///     |_p| Ok(CountingSink::default()),
    ///     None,
    /// ).unwrap();
    /// assert_eq!(report.outputs().map(|c| c.records).sum::<u64>(), 1000);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn run_checkpointed<S, F, K, SF, FF, Fut, KF>(
        &self,
        checkpointing: &checkpoint::Checkpointing,
        sources: SF,
        functions: FF,
        sinks: KF,
        key: Option<SharedKeyFn<S::Item>>,
    ) -> Result<RunReport<K::Output>, PipelineError>
    where
        S: Source,
        S::Item: crate::snapshot::SnapshotCodec,
        F: AsyncFunction<In = S::Item>,
        K: Sink<F::Out, F::In>,
        SF: SourceFactory<S>,
        FF: FunctionFactory<Fut>,
        Fut: Future<Output = Result<F, BoxError>> + 'static,
        KF: SinkFactory<K>,
    {
        if checkpointing.coordinator.partitions() != self.partitions {
            return Err(ConfigError::Invalid {
                setting: "checkpointing",
                reason: format!(
                    "the coordinator has {} partitions but the pipeline has {}",
                    checkpointing.coordinator.partitions(),
                    self.partitions
                ),
            }
            .into());
        }
        if checkpointing.interval.is_zero() {
            return Err(ConfigError::Invalid {
                setting: "checkpoint interval",
                reason: "must be above zero".into(),
            }
            .into());
        }
        let fns = CheckpointFns::<F> {
            encode: crate::operator::encode_snapshot::<F>,
            decode: crate::operator::Restore::<F::In>::decode,
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let coordinator = {
            let c = checkpointing.coordinator.clone();
            let stop = stop.clone();
            let interval = checkpointing.interval;
            std::thread::Builder::new()
                .name("ringwait-checkpoints".into())
                .spawn(move || checkpoint::coordinate(&c, interval, &stop))
                .map_err(|e| PipelineError::Executor {
                    partition: 0,
                    message: format!("cannot start the checkpoint coordinator: {e}"),
                })?
        };
        let result = self.run_inner(
            sources,
            functions,
            sinks,
            key,
            Some((checkpointing.clone(), fns)),
        );
        stop.store(true, std::sync::atomic::Ordering::Release);
        let _ = coordinator.join();
        result
    }

    fn run_inner<S, F, K, SF, FF, Fut, KF>(
        &self,
        sources: SF,
        functions: FF,
        sinks: KF,
        key: Option<SharedKeyFn<S::Item>>,
        checkpoint: Option<(checkpoint::Checkpointing, CheckpointFns<F>)>,
    ) -> Result<RunReport<K::Output>, PipelineError>
    where
        S: Source,
        F: AsyncFunction<In = S::Item>,
        K: Sink<F::Out, F::In>,
        SF: SourceFactory<S>,
        FF: FunctionFactory<Fut>,
        Fut: Future<Output = Result<F, BoxError>> + 'static,
        KF: SinkFactory<K>,
    {
        if self.operator.mode() == crate::OrderMode::KeyOrdered && key.is_none() {
            return Err(ConfigError::MissingKeyFunction.into());
        }
        executor::ensure_memlock(self.partitions, self.executor.io_memory)?;
        let started = Instant::now();
        let clock = MonotonicClock::with_origin(started);
        let abort = Arc::new(AtomicBool::new(false));
        let factories = std::sync::Arc::new((sources, functions, sinks));
        let cores = available_cores();
        let mut handles = Vec::with_capacity(self.partitions);
        for index in 0..self.partitions {
            let ctx = PartitionContext {
                index,
                partitions: self.partitions,
                core: self.executor.pin.then(|| cores[index % cores.len()]),
                operator_id: self.operator.operator_id(),
            };
            let task = PartitionTask {
                ctx: ctx.clone(),
                config: self.operator.clone(),
                factories: factories.clone(),
                key: key.clone(),
                clock,
                abort: abort.clone(),
                intake_batch: self.intake_batch,
                live: self.live.clone(),
                checkpoint: checkpoint.clone(),
            };
            let spawned = executor::builder(index, ctx.core, &self.executor)
                .spawn(move || task.run::<S, K, Fut>());
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    abort.store(true, Ordering::Relaxed);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(executor::start_error(index, e));
                }
            }
        }
        let results: Vec<Result<PartitionReport<K::Output>, PipelineError>> = handles
            .into_iter()
            .enumerate()
            .map(|(partition, h)| match h.join() {
                Ok(r) => r,
                Err(e) => Err(PipelineError::Panicked {
                    partition,
                    message: e.to_string(),
                }),
            })
            .collect();
        collect_reports(results, started.elapsed())
    }
}

fn collect_reports<O>(
    results: Vec<Result<PartitionReport<O>, PipelineError>>,
    wall: Duration,
) -> Result<RunReport<O>, PipelineError> {
    let mut reports = Vec::with_capacity(results.len());
    let mut first_error: Option<PipelineError> = None;
    for r in results {
        match r {
            Ok(report) => reports.push(report),
            Err(e) => {
                let replace = match (&first_error, &e) {
                    (None, _) => true,
                    (Some(PipelineError::Aborted { .. }), PipelineError::Aborted { .. }) => false,
                    (Some(PipelineError::Aborted { .. }), _) => true,
                    _ => false,
                };
                if replace {
                    first_error = Some(e);
                }
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut merged = OperatorMetrics::default();
    for r in &reports {
        merged.merge(&r.metrics);
    }
    Ok(RunReport {
        partitions: reports,
        merged,
        wall,
    })
}

/// The monomorphised snapshot codec of a checkpointed run.
struct CheckpointFns<F: AsyncFunction> {
    encode: checkpoint::EncodeFn<F>,
    decode: checkpoint::DecodeFn<F::In>,
}

impl<F: AsyncFunction> Clone for CheckpointFns<F> {
    fn clone(&self) -> Self {
        CheckpointFns {
            encode: self.encode,
            decode: self.decode,
        }
    }
}

/// Everything one partition needs, moved to its executor thread.
struct PartitionTask<SF, FF, KF, In, F: AsyncFunction> {
    ctx: PartitionContext,
    config: OperatorConfig,
    factories: std::sync::Arc<(SF, FF, KF)>,
    key: Option<SharedKeyFn<In>>,
    clock: MonotonicClock,
    abort: Arc<AtomicBool>,
    intake_batch: usize,
    live: Option<std::sync::Arc<LiveMetrics>>,
    checkpoint: Option<(checkpoint::Checkpointing, CheckpointFns<F>)>,
}

impl<SF, FF, KF, In: 'static, F: AsyncFunction<In = In>> PartitionTask<SF, FF, KF, In, F> {
    async fn run<S, K, Fut>(self) -> Result<PartitionReport<K::Output>, PipelineError>
    where
        S: Source<Item = In>,
        K: Sink<F::Out, F::In>,
        SF: SourceFactory<S>,
        FF: FunctionFactory<Fut>,
        Fut: Future<Output = Result<F, BoxError>>,
        KF: SinkFactory<K>,
    {
        let partition = self.ctx.index;
        let abort = self.abort.clone();
        let outcome = AssertUnwindSafe(self.run_partition::<S, K, Fut>())
            .catch_unwind()
            .await;
        let result = match outcome {
            Ok(r) => r,
            Err(payload) => Err(PipelineError::Panicked {
                partition,
                message: crate::operator::RecordError::from_panic(payload).to_string(),
            }),
        };
        if let Err(e) = &result {
            if !matches!(e, PipelineError::Aborted { .. }) {
                abort.store(true, Ordering::Relaxed);
            }
        }
        result
    }

    async fn run_partition<S, K, Fut>(self) -> Result<PartitionReport<K::Output>, PipelineError>
    where
        S: Source<Item = In>,
        K: Sink<F::Out, F::In>,
        SF: SourceFactory<S>,
        FF: FunctionFactory<Fut>,
        Fut: Future<Output = Result<F, BoxError>>,
        KF: SinkFactory<K>,
    {
        let ctx = &self.ctx;
        let partition = ctx.index;
        let setup = |what: &'static str| {
            move |cause| PipelineError::Setup {
                partition,
                what,
                cause,
            }
        };
        keep_awake();
        let (sources, functions, sinks) = &*self.factories;
        let mut source = sources(ctx).map_err(setup("source"))?;
        let function = functions(ctx).await.map_err(setup("function"))?;
        let mut sink = sinks(ctx).map_err(setup("sink"))?;
        let mut op = match self.key {
            Some(k) => {
                let key_fn: KeyFn<In> = Box::new(move |x: &In| k(x));
                AsyncWaitOperator::with_key_fn(self.config, function, key_fn, partition as u32)?
            }
            None => AsyncWaitOperator::new(self.config, function, partition as u32)?,
        };
        let settings = DriverSettings {
            partition,
            intake_batch: self.intake_batch,
            abort: self.abort.clone(),
            live: self.live.clone(),
        };
        let mut ckpt = match &self.checkpoint {
            Some((c, fns)) => Some(checkpoint::PartitionCheckpoint::open(
                c,
                fns.decode,
                fns.encode,
                &mut op,
                &mut source,
                &mut sink,
                partition,
            )?),
            None => None,
        };
        let times: DriveTimes = driver::drive(
            &mut op,
            &mut source,
            &mut sink,
            self.clock,
            &settings,
            ckpt.as_mut(),
        )
        .await?;
        let output = sink
            .finish()
            .map_err(|cause| PipelineError::Sink { partition, cause })?;
        Ok(PartitionReport {
            partition,
            core: ctx.core,
            metrics: op.metrics(self.clock.now()),
            output,
            source_position: source.position(),
            first_intake: times.first_intake,
            last_emit: times.last_emit,
        })
    }
}
