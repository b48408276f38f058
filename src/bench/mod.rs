//! The SPEC section 4 workloads, run by `ringwait bench` and by the perf harness.
//!
//! Every workload prints one line of `key=value` pairs (see [`BenchResult`]), the format the
//! baseline in `perf/baseline` prints too, so the two can be compared in one table.

mod checkpoint;
#[cfg(feature = "cli")]
pub mod cli;
pub mod hist;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod latency;
pub mod redis;
pub mod soak;
pub mod stream;
mod workloads;

use std::fmt;
use std::time::Duration;

pub use checkpoint::{run_checkpoint, run_checkpoint_size, CheckpointResult};
pub use workloads::{run_delay, run_overhead};

use crate::config::OrderMode;
use crate::metrics::OperatorMetrics;
use crate::runtime::RunReport;

/// What a log → enrich → log workload (stream, kafka) measured: the job against its
/// ceiling in the same run, and its end-to-end latency at 10% of its rate.
pub struct JobRun {
    /// The job's throughput line (and its end-to-end latency at 10% of its rate).
    pub result: BenchResult,
    /// End-to-end latencies (ns) at 10% of the job's rate.
    pub latency: hdrhistogram::Histogram<u64>,
    /// The ceiling's line, the ratio, and the latency run's lines.
    pub lines: Vec<String>,
}

/// The `enrich` job those workloads run: `input` → built-in lookup → `output`, with the
/// benchmark's mode, capacity and partitions, unpinned and quiet.
fn enrich_job(
    cfg: &BenchConfig,
    input: crate::enrich::Input,
    output: crate::enrich::Output,
    stream: crate::enrich::StreamOptions,
) -> crate::enrich::EnrichConfig {
    crate::enrich::EnrichConfig {
        input,
        output,
        lookup: crate::enrich::Lookup::Builtin { keys: 1_000_000 },
        mode: cfg.mode,
        capacity: cfg.capacity,
        partitions: Some(cfg.partitions),
        progress: false,
        pin: false,
        stream,
        ..crate::enrich::EnrichConfig::default()
    }
}

/// Which workload.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// The function completes at once: the operator's own cost.
    Overhead,
    /// The function completes 1 ms later from a timer.
    Delay,
    /// Snapshot and restore cost at 0, 1k and 64k in flight.
    Checkpoint,
    /// `GET k:<key_of(i)>` per record through the ringwait Redis client.
    Redis,
    /// Open-loop redis lookups at a fixed rate; latency from the intended arrival, against
    /// the raw round trip of a minimal client.
    Latency,
    /// Steady load for a set time while RSS and descriptors are sampled.
    Soak,
    /// Redis stream → `enrich` (built-in lookup) → Redis stream, exactly once, against the
    /// server's ceiling for the same traffic.
    Stream,
    /// Kafka → `enrich` (built-in lookup) → Kafka, against a plain consume→produce loop on
    /// the same broker.
    Kafka,
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "overhead" => Ok(Workload::Overhead),
            "delay" => Ok(Workload::Delay),
            "checkpoint" => Ok(Workload::Checkpoint),
            "redis" => Ok(Workload::Redis),
            "latency" => Ok(Workload::Latency),
            "soak" => Ok(Workload::Soak),
            "stream" => Ok(Workload::Stream),
            "kafka" => Ok(Workload::Kafka),
            other => Err(format!(
                "unknown workload {other:?}: use overhead, delay, redis, latency, soak, checkpoint, stream or kafka"
            )),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::Overhead => "overhead",
            Workload::Delay => "delay",
            Workload::Checkpoint => "checkpoint",
            Workload::Redis => "redis",
            Workload::Latency => "latency",
            Workload::Soak => "soak",
            Workload::Stream => "stream",
            Workload::Kafka => "kafka",
        })
    }
}

/// Settings of one benchmark run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Workload.
    pub workload: Workload,
    /// Output order.
    pub mode: OrderMode,
    /// Partitions (cores).
    pub partitions: usize,
    /// Records in total (split over the partitions).
    pub records: u64,
    /// Operator capacity per partition.
    pub capacity: usize,
    /// Delay of the delay workload.
    pub delay: Duration,
    /// How long before a deadline the delay line stops sleeping and spins.
    pub spin: Duration,
    /// Spin before parking idle executors.
    pub spin_before_park: Option<Duration>,
    /// Records taken per driver iteration (latency granularity vs per-iteration cost).
    pub intake_batch: usize,
    /// Take checkpoints this often (overhead and redis workloads), to a temporary directory.
    pub checkpoint_interval: Option<Duration>,
}

impl BenchConfig {
    /// The SPEC defaults for `workload`: 1 partition, capacity 1000, ordered, 1 ms delay.
    pub fn new(workload: Workload) -> Self {
        BenchConfig {
            workload,
            mode: OrderMode::Ordered,
            partitions: 1,
            records: match workload {
                Workload::Delay => 2_000_000,
                Workload::Redis => 1_000_000,
                Workload::Stream | Workload::Kafka => 200_000,
                // 0: rate × duration.
                Workload::Latency | Workload::Soak => 0,
                Workload::Overhead | Workload::Checkpoint => 20_000_000,
            },
            capacity: 1000,
            delay: Duration::from_millis(1),
            spin: Duration::from_micros(50),
            spin_before_park: None,
            intake_batch: 32,
            checkpoint_interval: None,
        }
    }
}

/// The one-line result of a benchmark.
///
/// ```
/// use ringwait::bench::BenchResult;
/// let r = BenchResult {
///     workload: "overhead".into(), mode: "ordered".into(), partitions: 1, records: 10,
///     records_per_s: 1.5e7, p50_us: 0.1, p99_us: 0.2, p999_us: 0.3, max_us: 4.0,
/// };
/// assert_eq!(r.to_string(), "workload=overhead mode=ordered partitions=1 records=10 \
///     records_per_s=15000000.0 p50_us=0.100 p99_us=0.200 p999_us=0.300 max_us=4.000 impl=ringwait");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    /// Workload name.
    pub workload: String,
    /// Mode name.
    pub mode: String,
    /// Partitions.
    pub partitions: usize,
    /// Records processed.
    pub records: u64,
    /// Records per second, over all partitions.
    pub records_per_s: f64,
    /// Median latency.
    pub p50_us: f64,
    /// 99th percentile latency.
    pub p99_us: f64,
    /// 99.9th percentile latency.
    pub p999_us: f64,
    /// Largest latency.
    pub max_us: f64,
}

impl BenchResult {
    /// From a run's report.
    pub fn from_report<O>(workload: &str, mode: OrderMode, report: &RunReport<O>) -> Self {
        let m: &OperatorMetrics = &report.merged;
        BenchResult {
            workload: workload.to_string(),
            mode: mode.to_string(),
            partitions: report.partitions.len(),
            records: m.records_in,
            records_per_s: report.records_per_sec(),
            p50_us: m.latency_us(50.0),
            p99_us: m.latency_us(99.0),
            p999_us: m.latency_us(99.9),
            max_us: m.latency.max() as f64 / 1_000.0,
        }
    }
}

impl BenchResult {
    /// A workload measured outside the operator's own metrics: its rate and a histogram of
    /// its latencies (ns).
    pub fn from_histogram(
        workload: &str,
        cfg: &BenchConfig,
        records: u64,
        records_per_s: f64,
        latency: &hdrhistogram::Histogram<u64>,
    ) -> Self {
        let us = |q: f64| latency.value_at_quantile(q) as f64 / 1_000.0;
        BenchResult {
            workload: workload.to_string(),
            mode: cfg.mode.to_string(),
            partitions: cfg.partitions,
            records,
            records_per_s,
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: latency.max() as f64 / 1_000.0,
        }
    }
}

impl fmt::Display for BenchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "workload={} mode={} partitions={} records={} records_per_s={:.1} p50_us={:.3} \
             p99_us={:.3} p999_us={:.3} max_us={:.3} impl=ringwait",
            self.workload,
            self.mode,
            self.partitions,
            self.records,
            self.records_per_s,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us
        )
    }
}
