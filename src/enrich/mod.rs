//! `ringwait enrich`: enrich JSON Lines records with a Redis lookup each, one partition per core.
//!
//! ```text
//! reader thread ──(queue per partition)──► core k: operator + RedisLookup ──(queue)──► writer
//! ```
//! The reader parses each line and deals it to a partition (round robin, or by key in
//! key-ordered mode); each core runs an operator whose function issues a pipelined `GET` on
//! the core's own connection; the writer merges the partitions (in input order in ordered
//! mode: record `i` went to partition `i % P`, and each partition emits in order) and writes
//! each object with the looked-up value added.
//!
//! Failed records (after retries, or timed out) reach the writer in their place, which
//! applies `--on-error`: `fail` stops with an error naming the line, `skip` drops it,
//! `side-output:PATH` writes it to PATH with its error.
//!
//! ```no_run
//! use ringwait::enrich::{self, EnrichConfig, Input, Output};
//! let mut config = EnrichConfig::default();
//! config.input = Input::Generated(10_000);
//! config.output = Output::File("/tmp/out.jsonl".into());
//! let summary = enrich::run(config).unwrap();
//! assert_eq!(summary.records, 10_000);
//! ```

mod checkpoint;
mod chunk;
mod files;
mod input;
mod intake;
mod job;
#[cfg(feature = "kafka")]
pub(crate) mod kafka;
mod lookup;
mod output;
mod record;
mod routing;
pub mod scan;
pub(crate) mod stream;
mod summary;
mod value;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use files::PARTIAL_SUFFIX;
pub use input::Input;
#[cfg(feature = "kafka")]
pub use kafka::{KafkaCounters, KafkaStats, BROKER_DOWN_LIMIT};
pub use lookup::{
    is_permanent, Batch, ClientOptions, CompleteRecord, EmbeddedLookup, Enriched, JobLookup,
    LookupStats, LookupTotals, RedisLookup, Value,
};
pub use output::WriterStats;
pub use record::{parse_line, Line, LineError, LineFields};
pub use routing::{key_hash, partition_of_key, ROUTING_VERSION};
pub use stream::{
    EntryId, GroupStart, StreamConnError, StreamCounters, StreamOptions, StreamStats, StreamUrl,
    StreamUrlError, COMMIT_SCRIPT, PROGRESS_RETENTION, SERVER_DOWN_LIMIT,
};
pub use summary::{Ending, EnrichSummary, Resumed};
pub use value::{Command, NotJson, ValueFormat, ValueSpec};

use crate::config::{ConfigError, ErrorPolicy, OperatorConfig, OrderMode, RetryStrategy};
use crate::lookup::{Connection, ConnectionConfig, RedisUrl};
use crate::queue;
use crate::runtime::checkpoint::Checkpointing;
use crate::runtime::{Pipeline, PipelineError};
use crate::server::GeneratedData;
use crate::snapshot::SnapshotError;
use crate::source::{BatchQueueSource, StopSource};
use crate::StreamElement;
use files::JobFiles;
use input::{LineSource, ReaderSettings, Routing};
use intake::Intake;
use output::{MarkedSink, WriterCheckpoint, WriterSettings};

/// Where the lookups go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// An in-process built-in server with generated data (`k:0 .. k:{keys-1}`).
    Builtin {
        /// Keys it holds.
        keys: u64,
    },
    /// A Redis server.
    Redis(RedisUrl),
}

/// Where the enriched lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Standard output.
    Stdout,
    /// A file (created or truncated).
    File(PathBuf),
    /// A Redis stream (`redis-stream://…/STREAM`), committed exactly once.
    RedisStream(Box<StreamUrl>),
    /// A Kafka topic (`kafka://…/TOPIC`): no loss, no duplicates through a crash.
    Kafka(Box<crate::connect::kafka::KafkaUrl>),
}

/// What to do with a record whose lookup failed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop with an error naming the line (the default).
    #[default]
    Fail,
    /// Drop the record and count it.
    Skip,
    /// Write `{"line":N,"error":"...","record":{...}}` to this file.
    SideOutput(PathBuf),
}

impl std::str::FromStr for OnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fail" => Ok(OnError::Fail),
            "skip" => Ok(OnError::Skip),
            _ => match s.strip_prefix("side-output:") {
                Some(path) if !path.is_empty() => Ok(OnError::SideOutput(path.into())),
                _ => Err(format!("{s:?}: use fail, skip or side-output:PATH")),
            },
        }
    }
}

/// Everything `enrich` needs; the fields mirror the command-line flags.
#[derive(Clone, Debug)]
pub struct EnrichConfig {
    /// `--input` (default: `--records` generated records).
    pub input: Input,
    /// `--output`.
    pub output: Output,
    /// `--key`: field holding the lookup key.
    pub key_field: String,
    /// `--into`: field that receives the value.
    pub into_field: String,
    /// `--key-prefix`.
    pub key_prefix: String,
    /// `--lookup`.
    pub lookup: Lookup,
    /// `--tls-ca`: the PEM file of the CA a `rediss://` store's certificate is checked
    /// against (default: Mozilla's roots).
    pub tls_ca: Option<PathBuf>,
    /// `--command` and `--value-format`: what is asked, and how the answer is written.
    pub value: ValueSpec,
    /// How each partition uses the lookup client (`--connections`, `--batch`,
    /// `--batch-wait-us`, `--coalesce`, `--cache-*`); ignored by the built-in store.
    pub client: ClientOptions,
    /// `--mode`.
    pub mode: OrderMode,
    /// `--capacity` (per partition).
    pub capacity: usize,
    /// `--timeout-ms`.
    pub timeout: Duration,
    /// `--retries`.
    pub retries: u32,
    /// `--retry-backoff-ms`: first retry delay (doubling, capped at a quarter of the timeout).
    pub retry_backoff: Duration,
    /// `--on-error`. With a stream output, `side-output:NAME` names a stream on the
    /// output's server.
    pub on_error: OnError,
    /// `--stream-field`, `--until`, `--claim-idle-ms`: how a stream input and output are used.
    pub stream: StreamOptions,
    /// `--partitions` (default: [`default_partitions`]).
    pub partitions: Option<usize>,
    /// `--report`: SVG chart with the summary.
    pub report: Option<PathBuf>,
    /// Show progress on stderr (only when it is a terminal).
    pub progress: bool,
    /// Pin each partition to its own core.
    pub pin: bool,
    /// `--metrics`: serve the operator metrics in the Prometheus text format while running.
    pub metrics: Option<std::net::SocketAddr>,
    /// `--checkpoint-dir`: exactly-once output across crashes (needs a file input or generated
    /// input, and a file output); running the same command again resumes.
    pub checkpoint_dir: Option<PathBuf>,
    /// `--checkpoint-interval-ms`.
    pub checkpoint_interval: Duration,
    /// A stop request (the binary sets it on SIGINT and SIGTERM): once set, intake stops,
    /// the records already taken finish within their timeout and are written, a checkpointed
    /// run commits a final checkpoint, and [`run`] returns a summary whose
    /// [`ending`](EnrichSummary::ending) is [`Ending::Stopped`].
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            input: Input::Generated(1_000_000),
            output: Output::Stdout,
            key_field: "key".into(),
            into_field: "value".into(),
            key_prefix: String::new(),
            lookup: Lookup::Builtin { keys: 1_000_000 },
            tls_ca: None,
            value: ValueSpec::default(),
            client: ClientOptions::default(),
            mode: OrderMode::Ordered,
            capacity: 1000,
            timeout: Duration::from_millis(1000),
            retries: 0,
            retry_backoff: Duration::from_millis(10),
            on_error: OnError::Fail,
            stream: StreamOptions::default(),
            partitions: None,
            report: None,
            progress: true,
            pin: true,
            metrics: None,
            checkpoint_dir: None,
            checkpoint_interval: Duration::from_millis(1000),
            stop: None,
        }
    }
}

/// Why `enrich` stopped.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    /// A flag has a value the job refuses.
    #[error("{flag}: {reason}")]
    Flag {
        /// The flag, e.g. `--capacity`.
        flag: &'static str,
        /// What is wrong and what to change.
        reason: String,
    },
    /// A malformed input line.
    #[error(transparent)]
    Input(#[from] LineError),
    /// A stream's server failed in a way waiting cannot mend, or stayed away longer than
    /// [`SERVER_DOWN_LIMIT`]; the entries not committed stay pending for the next run.
    #[error("{0}")]
    Stream(String),
    /// A Kafka broker or client failed in a way waiting cannot mend, or the brokers stayed
    /// away too long; what is not committed is read again by the next run.
    #[error("{0}")]
    Kafka(String),
    /// A stream entry failed under `--on-error fail` (it stays pending in the group).
    #[error(
        "entry {entry}: {error} (it stays pending; use --on-error skip or side-output:STREAM to go on)"
    )]
    EntryFailed {
        /// `STREAM/ID`.
        entry: String,
        /// Why.
        error: String,
    },
    /// A record failed under `--on-error fail`.
    #[error(
        "line {line}: lookup failed: {error} (use --on-error skip or side-output:PATH to go on)"
    )]
    RecordFailed {
        /// The line.
        line: u64,
        /// Why.
        error: String,
    },
    /// Reading or writing a file failed.
    #[error("could not {what} ({path}): {cause}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Which file.
        path: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The pipeline failed (e.g. the store is unreachable).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The checkpoint directory cannot be used (locked by another process, corrupt, …).
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] SnapshotError),
    /// The store did not answer before the job started (nothing was written).
    #[error("--lookup: {0}")]
    Store(crate::lookup::ProbeError),
    /// A broken internal invariant (a bug).
    #[error("internal error: {0}")]
    Internal(String),
    /// The run failed after it began writing: the output so far stays at `partial`, and the
    /// output's own name was not touched.
    #[error("{error}; the output so far is in {}{}{}", partial.display(), side_partial.as_ref().map(|p| format!(", the side output so far in {}", p.display())).unwrap_or_default(), if *resumable { " (the same command resumes from the last checkpoint)" } else { "" })]
    Incomplete {
        /// Why the run failed.
        error: Box<EnrichError>,
        /// Where the output so far is.
        partial: PathBuf,
        /// Where the side output so far is, if there is one.
        side_partial: Option<PathBuf>,
        /// Whether the same command resumes (checkpointed runs).
        resumable: bool,
    },
}

impl EnrichConfig {
    /// Refuses lookup-client settings that cannot work, naming the flag.
    pub fn check_client(&self) -> Result<(), EnrichError> {
        let c = &self.client;
        if c.connections == 0 {
            return Err(EnrichError::flag("--connections", "must be at least 1"));
        }
        if c.connections > 64 {
            return Err(EnrichError::flag(
                "--connections",
                format!("{} per partition is more than 64", c.connections),
            ));
        }
        if c.cache.capacity > 0 && c.cache.ttl.is_zero() {
            return Err(EnrichError::flag(
                "--cache-ttl-ms",
                "must be at least 1 when --cache-size is not 0",
            ));
        }
        if c.batch_wait > Duration::from_millis(100) {
            return Err(EnrichError::flag(
                "--batch-wait-us",
                format!("{} µs is more than 100 ms", c.batch_wait.as_micros()),
            ));
        }
        Ok(())
    }

    /// The operator configuration, refusing bad values with the flag that carries them.
    pub fn operator_config(&self) -> Result<OperatorConfig, EnrichError> {
        let flag_of = |e: &ConfigError| match e {
            ConfigError::ZeroCapacity | ConfigError::CapacityTooLarge(_) => "--capacity",
            ConfigError::ZeroTimeout => "--timeout-ms",
            ConfigError::RetryDelayNotBelowTimeout { .. } => "--retry-backoff-ms",
            ConfigError::TooManyRetries(_) => "--retries",
            _ => "configuration",
        };
        let retry = if self.retries == 0 {
            RetryStrategy::none()
        } else {
            let max = (self.timeout / 4).max(self.retry_backoff);
            RetryStrategy::exponential(self.retries, self.retry_backoff, 2.0, max)
        };
        OperatorConfig::builder()
            .mode(self.mode)
            .capacity(self.capacity)
            .timeout(self.timeout)
            .retry(retry)
            // Failures reach the writer in their place; it applies --on-error.
            .on_error(ErrorPolicy::SideOutput)
            .build()
            .map_err(|e| EnrichError::flag(flag_of(&e), e.to_string()))
    }
}

impl EnrichError {
    /// An I/O error doing `what` on `path`.
    pub(crate) fn io(
        what: &'static str,
        path: impl std::fmt::Display,
        cause: std::io::Error,
    ) -> EnrichError {
        EnrichError::Io {
            what,
            path: path.to_string(),
            cause,
        }
    }

    /// A flag that cannot be used, and why.
    pub(crate) fn flag(flag: &'static str, reason: impl Into<String>) -> EnrichError {
        EnrichError::Flag {
            flag,
            reason: reason.into(),
        }
    }
}

/// Partitions when `--partitions` is not given: every core but one, which the reader, the
/// writer (and the embedded store, if used) need. A pinned partition on every core fights
/// those threads for the CPU: on 2 cores, `enrich --records 1000000` against the embedded
/// store ran at 396-484k records/s with one partition and 174-295k with two (3
/// interleaved runs each).
pub fn default_partitions() -> usize {
    crate::runtime::available_cores()
        .len()
        .saturating_sub(1)
        .max(1)
}

/// How long the store may take to accept a connection and answer `PING` before the job
/// starts (a Redis lookup): past it, the job refuses to start and writes nothing.
pub const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the job to the end of its input, or until [`EnrichConfig::stop`] is set.
///
/// Nothing is written before everything is checked: the flags, the files (the same file
/// under two flags, an output inside the checkpoint directory, a missing input or output
/// directory), the checkpoint's job record, and the store (a Redis server must answer `PING` within [`STORE_PROBE_TIMEOUT`]). A file output is written beside
/// its name (`<output>.ringwait-partial`) and renamed over it only when the run is complete.
pub fn run(config: EnrichConfig) -> Result<EnrichSummary, EnrichError> {
    let partitions = config.partitions.unwrap_or_else(default_partitions);
    config.check_client()?;
    let pipeline = build_pipeline(&config, partitions)?;
    if is_kafka_job(&config) {
        return run_kafka(&config, &pipeline);
    }
    if stream::is_stream_job(&config) {
        return run_stream(&config, &pipeline);
    }
    if config.stream.until_caught_up {
        return Err(EnrichError::flag(
            "--until",
            "caught-up is for a stream input (redis-stream://… or kafka://…)",
        ));
    }
    let d = StreamOptions::default();
    for (changed, name) in [
        (config.stream.field != d.field, "--stream-field"),
        (config.stream.claim_idle != d.claim_idle, "--claim-idle-ms"),
        (config.stream.batch != d.batch, "--stream-batch"),
        (
            config.stream.kafka_config != d.kafka_config,
            "--kafka-config",
        ),
    ] {
        if changed {
            return Err(EnrichError::flag(
                name,
                "is for a stream input (redis-stream://… or kafka://…)",
            ));
        }
    }
    let mut files = files::check(&config)?;
    let job = match &config.checkpoint_dir {
        Some(dir) => {
            let operator = pipeline.operator_config();
            let job = checkpoint::check_job(&config, dir, partitions, operator, &files)?;
            if let Some(records) = job.completed {
                let mode = config.mode;
                return Ok(EnrichSummary::already_complete(records, partitions, mode));
            }
            Some((dir.as_path(), job))
        }
        None => None,
    };
    let store = Store::start(&config.lookup, config.tls_ca.as_deref())?;
    let _metrics_server = start_metrics(config.metrics, pipeline.live_metrics().cloned())?;
    // Everything is checked: from here on the job writes.
    let result = match job {
        Some((dir, job)) => run_checkpointed(&config, &pipeline, store, &files, dir, job),
        None => files::open_plain(&config, &mut files).and_then(|writers| {
            let summary = run_pipeline(&config, &pipeline, store, Ends::Files(writers, None))?;
            finish(&config, &files, None, summary)
        }),
    };
    result.map_err(|e| files.incomplete(e, config.checkpoint_dir.is_some()))
}

/// A stream job: checked (addresses, servers, key types, Cluster slots) before the group
/// is created and anything is read; then it runs until caught up (`--until caught-up`) or
/// stopped.
fn run_stream(config: &EnrichConfig, pipeline: &Pipeline) -> Result<EnrichSummary, EnrichError> {
    let plan = Arc::new(stream::prepare(config)?);
    let store = Store::start(&config.lookup, config.tls_ca.as_deref())?;
    let _metrics_server = start_metrics(config.metrics, pipeline.live_metrics().cloned())?;
    run_pipeline(config, pipeline, store, Ends::Stream(plan))
}

fn is_kafka_job(config: &EnrichConfig) -> bool {
    matches!(config.input, Input::Kafka(_)) || matches!(config.output, Output::Kafka(_))
}

/// A Kafka job: checked (addresses, brokers, topics) before anything is read or produced;
/// then it runs until caught up (`--until caught-up`) or stopped.
#[cfg(feature = "kafka")]
fn run_kafka(config: &EnrichConfig, pipeline: &Pipeline) -> Result<EnrichSummary, EnrichError> {
    let plan = Arc::new(kafka::prepare(config)?);
    let store = Store::start(&config.lookup, config.tls_ca.as_deref())?;
    let _metrics_server = start_metrics(config.metrics, pipeline.live_metrics().cloned())?;
    run_pipeline(config, pipeline, store, Ends::Kafka(plan))
}

#[cfg(not(feature = "kafka"))]
fn run_kafka(_: &EnrichConfig, _: &Pipeline) -> Result<EnrichSummary, EnrichError> {
    Err(EnrichError::flag(
        "--input",
        "this build has no Kafka support (build with the `kafka` feature)",
    ))
}

/// Where a run's records come from and go.
enum Ends {
    /// Files (or standard streams, or generated input), with the writer's part of the
    /// checkpoints for a checkpointed run.
    Files(
        files::Writers,
        Option<Box<(WriterCheckpoint, Checkpointing)>>,
    ),
    /// Redis Streams.
    Stream(Arc<stream::StreamPlan>),
    /// Kafka.
    #[cfg(feature = "kafka")]
    Kafka(Arc<kafka::KafkaPlan>),
}

/// The pipeline of `partitions` partitions, with live metrics when `--metrics` is on.
fn build_pipeline(config: &EnrichConfig, partitions: usize) -> Result<Pipeline, EnrichError> {
    let operator = config.operator_config()?;
    let live = config
        .metrics
        .filter(|_| (1..=crate::runtime::MAX_PARTITIONS).contains(&partitions))
        .map(|_| crate::metrics::live::LiveMetrics::new(partitions));
    let mut builder = Pipeline::builder()
        .operator(operator)
        .pin(config.pin)
        .partitions(partitions);
    if let Some(live) = live {
        builder = builder.live_metrics(live);
    }
    builder
        .build()
        .map_err(|e| EnrichError::flag("--partitions", e.to_string()))
}

fn start_metrics(
    addr: Option<std::net::SocketAddr>,
    live: Option<Arc<crate::metrics::live::LiveMetrics>>,
) -> Result<Option<crate::metrics_http::MetricsServer>, EnrichError> {
    let (Some(addr), Some(live)) = (addr, live) else {
        return Ok(None);
    };
    crate::metrics_http::MetricsServer::start(addr, live)
        .map(Some)
        .map_err(|e| EnrichError::flag("--metrics", format!("cannot listen on {addr}: {e}")))
}

/// A checkpointed run: take the directory, resume (or start) the job, and finish it.
fn run_checkpointed(
    config: &EnrichConfig,
    pipeline: &Pipeline,
    store: Store,
    files: &JobFiles,
    dir: &std::path::Path,
    job: checkpoint::JobCheck,
) -> Result<EnrichSummary, EnrichError> {
    let operator = pipeline.operator_config();
    let partitions = pipeline.partitions();
    let ck = checkpoint::prepare(config, dir, partitions, operator, files, job)?;
    if let Some(r) = ck.resumed {
        eprintln!(
            "ringwait enrich: resuming from checkpoint {} ({} records committed)",
            r.epoch, r.records
        );
    }
    let mut record = ck.job;
    let checkpoint = Some(Box::new((ck.writer, ck.checkpointing)));
    let ends = Ends::Files((ck.out, ck.side), checkpoint);
    let mut summary = run_pipeline(config, pipeline, store, ends)?;
    summary.resumed = ck.resumed;
    finish(config, files, Some((&mut record, dir)), summary)
}

/// The end of a run: a complete one is made durable and renamed into place (a checkpointed
/// job's record is marked complete first, so a crash between the two finishes the rename at
/// the next run); a stopped one stays at its partial name.
fn finish(
    config: &EnrichConfig,
    files: &JobFiles,
    job: Option<(&mut job::JobRecord, &std::path::Path)>,
    mut summary: EnrichSummary,
) -> Result<EnrichSummary, EnrichError> {
    if let Some(path) = &config.report {
        write_report(path, &summary)?;
    }
    if let Ending::Stopped { .. } = summary.ending {
        summary.ending = Ending::Stopped {
            partial: files.partial_of(&files.output),
            side_partial: files.partial_of(&files.side),
            resumable: job.is_some(),
        };
        return Ok(summary);
    }
    files.sync_staged()?;
    if let Some((job, dir)) = job {
        job.save_complete(dir, summary.total())?;
    }
    files.publish()?;
    Ok(summary)
}

/// The lookup store of a run.
#[derive(Clone)]
enum Store {
    /// The built-in store, answered in each partition's executor.
    Embedded(GeneratedData),
    /// A Redis server that answered the start-up probe, and how its connections use TLS.
    Redis(RedisUrl, Option<crate::lookup::TlsSettings>),
}

impl Store {
    /// The built-in store's data, or a Redis server that answers `PING` (over TLS, its
    /// certificate checked against `tls_ca` or Mozilla's roots, for `rediss://`).
    fn start(lookup: &Lookup, tls_ca: Option<&std::path::Path>) -> Result<Store, EnrichError> {
        let rediss =
            matches!(lookup, Lookup::Redis(u) if u.scheme == crate::lookup::Scheme::Rediss);
        if tls_ca.is_some() && !rediss {
            return Err(EnrichError::flag(
                "--tls-ca",
                "is for a TLS store: give --lookup rediss://HOST:PORT",
            ));
        }
        match lookup {
            Lookup::Builtin { keys } => Ok(Store::Embedded(GeneratedData {
                keys: *keys,
                // As `ringwait serve` holds them: a `GET` on `h:i` is a WRONGTYPE error.
                hashes: true,
            })),
            Lookup::Redis(url) => {
                let tls = url
                    .tls_settings(tls_ca)
                    .map_err(|e| EnrichError::flag("--tls-ca", e.to_string()))?;
                crate::lookup::probe(url, tls.as_ref(), STORE_PROBE_TIMEOUT)
                    .map_err(EnrichError::Store)?;
                Ok(Store::Redis(url.clone(), tls))
            }
        }
    }
}

/// The queues between the reader, the partitions and the writer; records cross them in
/// batches.
struct Queues {
    to_partitions: Vec<queue::BatchSender<StreamElement<Line>>>,
    partition_inputs: Vec<Option<queue::BatchReceiver<StreamElement<Line>>>>,
    partition_outputs: Vec<Option<queue::BatchSender<output::Marked>>>,
    to_writer: Vec<output::Inbox>,
}

/// Batches in a queue from the reader to a partition (each up to
/// [`input::INPUT_BATCH`] records).
const INPUT_BATCHES: usize = 4;

impl Queues {
    fn new(partitions: usize, capacity: usize) -> Queues {
        let mut q = Queues {
            to_partitions: vec![],
            partition_inputs: vec![],
            partition_outputs: vec![],
            to_writer: vec![],
        };
        // About as many outputs may wait for the writer as records fit in the operator.
        let output_batches = (capacity / output::OUTPUT_BATCH).clamp(4, 32);
        for _ in 0..partitions {
            let (tx, rx) = queue::batched(INPUT_BATCHES, input::INPUT_BATCH);
            q.to_partitions.push(tx);
            q.partition_inputs.push(Some(rx));
            let (tx, rx) = queue::batched(output_batches, output::OUTPUT_BATCH);
            q.partition_outputs.push(Some(tx));
            q.to_writer.push(rx);
        }
        q
    }
}

fn run_pipeline(
    config: &EnrichConfig,
    pipeline: &Pipeline,
    store: Store,
    ends: Ends,
) -> Result<EnrichSummary, EnrichError> {
    let started = Instant::now();
    #[cfg(feature = "kafka")]
    let mut kafka_plan = None;
    let ((out, side), checkpoint, plan) = match ends {
        Ends::Files(writers, checkpoint) => (writers, checkpoint.map(|c| *c), None),
        Ends::Stream(plan) => {
            let sink: Box<dyn std::io::Write + Send> = Box::new(std::io::sink());
            ((sink, None), None, Some(plan))
        }
        #[cfg(feature = "kafka")]
        Ends::Kafka(plan) => {
            kafka_plan = Some(plan);
            let sink: Box<dyn std::io::Write + Send> = Box::new(std::io::sink());
            ((sink, None), None, None)
        }
    };
    let partitions = pipeline.partitions();
    let queues = Queues::new(partitions, config.capacity);
    let readers = if checkpoint.is_some() { partitions } else { 1 };
    let intake = Arc::new(Intake::new(
        partitions,
        config.mode == OrderMode::Ordered,
        config.stop.clone(),
    ));
    // Set when intake must stop at once: a record failed under --on-error fail, or the
    // pipeline failed.
    let halt = intake.halt.clone();
    let done = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let settings = Arc::new(ReaderSettings {
        fields: LineFields {
            key: config.key_field.clone(),
            key_prefix: config.key_prefix.clone(),
            into: config.into_field.clone(),
        },
        routing: Routing {
            partitions,
            by: if is_kafka_job(config) {
                input::RouteBy::Origin
            } else if config.mode == OrderMode::KeyOrdered {
                input::RouteBy::Key
            } else {
                input::RouteBy::Index
            },
        },
        intake: intake.clone(),
        generated_key_json: serde_json::to_string(&config.key_field).expect("a string serialises"),
    });
    let (writer_ck, checkpointing) = checkpoint.unzip();
    // Checkpointed runs read the input in each partition (a replayable source); otherwise a
    // reader thread deals the lines.
    let counters = Arc::new(stream::StreamCounters::default());
    let mut writer_settings = writer_settings(config, progress.clone(), halt.clone());
    writer_settings.live = pipeline.live_metrics().cloned();
    if let Some(plan) = &plan {
        // Connected before anything is read, so a server gone since the checks stops the
        // job with nothing taken.
        let committer = stream::StreamCommitter::open(
            plan.clone(),
            intake.clone(),
            counters.clone(),
            writer_settings.live.clone(),
        )?;
        writer_settings.committer = Some(output::Committer::Stream(Box::new(committer)));
    }
    #[cfg(feature = "kafka")]
    let kafka_shared = Arc::new(kafka::Shared::new(writer_settings.live.clone()));
    #[cfg(feature = "kafka")]
    if let Some(plan) = &kafka_plan {
        let committer = kafka::KafkaCommitter::open(plan.clone(), kafka_shared.clone())?;
        writer_settings.committer = Some(output::Committer::Kafka(Box::new(committer)));
    }
    let (reader, settings) = match (checkpointing.is_some(), &plan) {
        #[cfg(feature = "kafka")]
        (false, None) if kafka_plan.is_some() => {
            let plan = kafka_plan.clone().expect("a Kafka plan");
            let reader =
                kafka::spawn_reader(plan, kafka_shared.clone(), settings, queues.to_partitions);
            (Some(reader), None)
        }
        (true, _) => (None, Some(settings)),
        (false, Some(plan)) => {
            let reader = stream::spawn_reader(
                plan.clone(),
                settings,
                queues.to_partitions,
                counters.clone(),
            );
            (Some(reader), None)
        }
        (false, None) => {
            let reader = input::spawn_reader(config.input.clone(), settings, queues.to_partitions);
            (Some(reader), None)
        }
    };
    let writer = output::spawn_writer(queues.to_writer, out, side, writer_settings, writer_ck);
    let ticker = (config.progress && std::io::stderr().is_terminal())
        .then(|| spawn_progress(progress, done.clone()));
    let partitioned = Partitioned {
        inputs: queues.partition_inputs,
        outputs: queues.partition_outputs,
        settings,
        halt: halt.clone(),
    };
    let totals = Arc::new(LookupTotals::default());
    let lookups = matches!(store, Store::Redis(..)).then(|| totals.clone());
    let report = run_partitions(config, pipeline, store, partitioned, checkpointing, totals);
    if report.is_err() {
        halt.store(true, Ordering::Relaxed);
    }
    // The reader stops within 50 ms of a halt or a stop request, even when it waits on a
    // pipe (see `intake`).
    let read = reader.map_or(Ok(()), |r| join_thread(r, "reader"));
    let written = join_thread(writer, "writer");
    done.store(true, Ordering::Relaxed);
    if let Some(t) = ticker {
        let _ = t.join();
    }
    let written = written?;
    read?;
    let ending = if intake.took_everything(readers) {
        Ending::Complete
    } else {
        Ending::Stopped {
            partial: None,
            side_partial: None,
            resumable: false,
        }
    };
    let mut summary = summarise(config, started, written, ending, &report?);
    summary.lookups = lookups.map(|t| t.stats());
    summary.stream = plan.map(|p| counters.stats(&p.consumer));
    #[cfg(feature = "kafka")]
    {
        summary.kafka = kafka_plan.map(|_| kafka_shared.counters.stats());
    }
    Ok(summary)
}

fn writer_settings(
    config: &EnrichConfig,
    progress: Arc<AtomicU64>,
    halt: Arc<AtomicBool>,
) -> WriterSettings {
    WriterSettings {
        mode: config.mode,
        global_order: !is_kafka_job(config),
        out_path: match &config.output {
            Output::File(p) => Some(p.clone()),
            Output::Stdout | Output::RedisStream(_) | Output::Kafka(_) => None,
        },
        side_path: match &config.on_error {
            OnError::SideOutput(p) => Some(p.clone()),
            _ => None,
        },
        into_key: {
            let mut k = serde_json::to_vec(&config.into_field).expect("a string serialises");
            k.push(b':');
            k
        },
        on_error: config.on_error.clone(),
        json_values: config.value.is_json(),
        progress,
        stop: halt,
        live: None,
        committer: None,
    }
}

/// What the partitions read from and write to.
struct Partitioned {
    /// Each partition's queue from the reader (runs without checkpoints).
    inputs: Vec<Option<queue::BatchReceiver<StreamElement<Line>>>>,
    /// Each partition's queue to the writer.
    outputs: Vec<Option<queue::BatchSender<output::Marked>>>,
    /// Checkpointed runs: how each partition reads the input itself.
    settings: Option<Arc<ReaderSettings>>,
    halt: Arc<AtomicBool>,
}

/// Runs the operators: one partition per core, each with its own connection to the store.
fn run_partitions(
    config: &EnrichConfig,
    pipeline: &Pipeline,
    store: Store,
    partitioned: Partitioned,
    checkpointing: Option<Checkpointing>,
    totals: Arc<LookupTotals>,
) -> Result<crate::runtime::RunReport<()>, PipelineError> {
    let conn_config = ConnectionConfig {
        // A server that stops answering (a black hole) holds every later request of the
        // connection hostage, since replies match requests in order: give up on the
        // connection, and reconnect, once nothing arrived for two record timeouts.
        response_timeout: Some((config.timeout * 2).max(Duration::from_millis(50))),
        ..ConnectionConfig::default()
    };
    let client = config.client.clone();
    let spec = config.value.clone();
    let function_of = move |_p: &crate::runtime::PartitionContext| {
        let cfg = client.connection_config(conn_config.clone());
        let store = store.clone();
        let (client, spec, totals) = (client.clone(), spec.clone(), totals.clone());
        async move {
            Ok(match store {
                Store::Embedded(data) => JobLookup::Embedded(EmbeddedLookup::new(data, spec)),
                Store::Redis(url, tls) => {
                    let cfg = url.connection_config(cfg, tls);
                    if url.scheme == crate::lookup::Scheme::Cluster {
                        let config = crate::lookup::ClusterConfig {
                            connection: cfg,
                            ..crate::lookup::ClusterConfig::default()
                        };
                        let cluster =
                            crate::lookup::ClusterClient::connect(&url.seeds, config).await?;
                        return Ok(JobLookup::Redis(RedisLookup::cluster(
                            cluster,
                            client.cache,
                            spec,
                            Some(totals),
                        )));
                    }
                    let mut conns = Vec::with_capacity(client.connections.max(1));
                    for _ in 0..client.connections.max(1) {
                        conns.push(Connection::connect(url.addr, cfg.clone()).await?);
                    }
                    JobLookup::Redis(RedisLookup::new(conns, client.cache, spec, Some(totals)))
                }
            })
        }
    };
    let sinks = Mutex::new(partitioned.outputs);
    let sink_of = move |p: &crate::runtime::PartitionContext| {
        let tx = sinks.lock().expect("queue list")[p.index]
            .take()
            .expect("each partition takes its queue once");
        Ok(MarkedSink::new(tx))
    };
    let key: Option<crate::runtime::SharedKeyFn<Line>> = (config.mode == OrderMode::KeyOrdered)
        .then(|| {
            let f: crate::runtime::SharedKeyFn<Line> =
                Arc::new(|l: &Line| routing::key_hash(l.key()));
            f
        });
    if let (Some(ckpt), Some(settings)) = (checkpointing, partitioned.settings) {
        let input = config.input.clone();
        let line_source = move |p: &crate::runtime::PartitionContext| {
            LineSource::open(&input, p.index, settings.clone())
                .map_err(|e| Box::new(e) as crate::source::BoxError)
        };
        return pipeline.run_checkpointed(&ckpt, line_source, function_of, sink_of, key);
    }
    let sources = Mutex::new(partitioned.inputs);
    let halt = partitioned.halt;
    let source_of = move |p: &crate::runtime::PartitionContext| {
        let rx = sources.lock().expect("queue list")[p.index]
            .take()
            .expect("each partition takes its queue once");
        Ok(StopSource::new(BatchQueueSource::new(rx), halt.clone()))
    };
    match key {
        Some(key) => pipeline.run_keyed(source_of, function_of, sink_of, key),
        None => pipeline.run(source_of, function_of, sink_of),
    }
}

fn summarise(
    config: &EnrichConfig,
    started: Instant,
    written: WriterStats,
    ending: Ending,
    report: &crate::runtime::RunReport<()>,
) -> EnrichSummary {
    EnrichSummary {
        records: written.accounted(),
        written,
        resumed: None,
        ending,
        partitions: report.partitions.len(),
        mode: config.mode,
        elapsed: started.elapsed(),
        records_per_s: report.records_per_sec(),
        latency: report.merged.latency.clone(),
        timeouts: report.merged.timeouts,
        retries: report.merged.retries,
        errors: report.merged.errors,
        lookups: None,
        stream: None,
        #[cfg(feature = "kafka")]
        kafka: None,
    }
}

/// A thread's result, or its panic as an error naming the thread and the panic's message.
fn join_thread<T>(
    handle: std::thread::JoinHandle<Result<T, EnrichError>>,
    name: &str,
) -> Result<T, EnrichError> {
    handle.join().unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(EnrichError::Internal(format!(
            "the {name} thread panicked: {message}"
        )))
    })
}

fn spawn_progress(done: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            let n = done.load(Ordering::Relaxed);
            let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprint!("\r  {n} records, {rate:.0}/s   ");
        }
        eprint!("\r");
    })
}

fn write_report(path: &PathBuf, summary: &EnrichSummary) -> Result<(), EnrichError> {
    let notes: Vec<String> = summary.to_string().lines().map(str::to_string).collect();
    let svg = crate::report::percentile_chart(
        "ringwait enrich: latency by percentile (intake to emit)",
        &[crate::report::Series {
            name: &format!("{} x{}", summary.mode, summary.partitions),
            histogram: &summary.latency,
        }],
        &notes,
    );
    std::fs::write(path, svg)
        .map_err(|cause| EnrichError::io("write the report", path.display(), cause))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_panics_becomes_an_error_naming_it() {
        let handle = std::thread::spawn(|| -> Result<(), EnrichError> {
            panic!("slot {} out of range", 3);
        });
        let e = join_thread(handle, "writer").unwrap_err().to_string();
        assert_eq!(
            e,
            "internal error: the writer thread panicked: slot 3 out of range"
        );
        let ok = std::thread::spawn(|| -> Result<u8, EnrichError> { Ok(7) });
        assert_eq!(join_thread(ok, "reader").unwrap(), 7);
    }
}
