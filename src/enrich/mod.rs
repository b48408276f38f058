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

mod input;
mod lookup;
mod output;
mod record;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub use input::Input;
pub use lookup::{CompleteRecord, Enriched, RedisLookup};
pub use output::WriterStats;
pub use record::{parse_line, Line, LineError};

use crate::config::{ConfigError, ErrorPolicy, OperatorConfig, OrderMode, RetryStrategy};
use crate::lookup::{Connection, ConnectionConfig, RedisUrl};
use crate::queue;
use crate::runtime::checkpoint::{Checkpointing, Coordinator};
use crate::runtime::{Pipeline, PipelineError};
use crate::server::{BuiltinServer, ServerConfig};
use crate::snapshot::{SnapshotError, SnapshotStore};
use crate::source::QueueSource;
use input::{LineSource, ReaderSettings, Routing};
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
    /// `--on-error`.
    pub on_error: OnError,
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
            mode: OrderMode::Ordered,
            capacity: 1000,
            timeout: Duration::from_millis(1000),
            retries: 0,
            retry_backoff: Duration::from_millis(10),
            on_error: OnError::Fail,
            partitions: None,
            report: None,
            progress: true,
            pin: true,
            metrics: None,
            checkpoint_dir: None,
            checkpoint_interval: Duration::from_millis(1000),
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
    /// The built-in server could not start.
    #[error("the built-in lookup server could not start: {0}")]
    Server(String),
    /// The pipeline failed (e.g. the store is unreachable).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The checkpoint directory cannot be used (locked by another process, corrupt, …).
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] SnapshotError),
    /// A broken internal invariant (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct EnrichSummary {
    /// Records read.
    pub records: u64,
    /// What the writer wrote.
    pub written: WriterStats,
    /// Partitions used.
    pub partitions: usize,
    /// Order mode.
    pub mode: OrderMode,
    /// Wall time.
    pub elapsed: Duration,
    /// Records per second over the operators' active time.
    pub records_per_s: f64,
    /// Operator latency, intake to emit (ns).
    pub latency: Histogram<u64>,
    /// Timeouts.
    pub timeouts: u64,
    /// Retries started.
    pub retries: u64,
    /// Records that failed (before the error policy).
    pub errors: u64,
}

impl std::fmt::Display for EnrichSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "ringwait enrich: {} records in {:.3} s ({:.0} records/s), {} partition(s), {}",
            self.records,
            self.elapsed.as_secs_f64(),
            self.records_per_s,
            self.partitions,
            self.mode
        )?;
        writeln!(
            f,
            "  latency µs: {}",
            crate::report::percentile_line(&self.latency)
        )?;
        write!(
            f,
            "  written {}, misses {}, timeouts {}, retries {}, errors {}, skipped {}, side-output {}",
            self.written.lines,
            self.written.misses,
            self.timeouts,
            self.retries,
            self.errors,
            self.written.skipped,
            self.written.side_output
        )
    }
}

impl EnrichConfig {
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
            .map_err(|e| EnrichError::Flag {
                flag: flag_of(&e),
                reason: e.to_string(),
            })
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

/// Runs the job to the end of its input.
pub fn run(config: EnrichConfig) -> Result<EnrichSummary, EnrichError> {
    let operator = config.operator_config()?;
    let partitions = config.partitions.unwrap_or_else(default_partitions);
    let mut builder = Pipeline::builder()
        .operator(operator)
        .pin(config.pin)
        .partitions(partitions);
    let _metrics_server = match config.metrics {
        Some(addr) if (1..=crate::runtime::MAX_PARTITIONS).contains(&partitions) => {
            let live = crate::runtime::LiveMetrics::new(partitions);
            builder = builder.live_metrics(live.clone());
            let server = crate::metrics_http::MetricsServer::start(addr, live).map_err(|e| {
                EnrichError::Flag {
                    flag: "--metrics",
                    reason: format!("cannot listen on {addr}: {e}"),
                }
            })?;
            Some(server)
        }
        _ => None,
    };
    let pipeline = builder.build().map_err(|e| EnrichError::Flag {
        flag: "--partitions",
        reason: e.to_string(),
    })?;
    let (out, side, checkpoint) = match &config.checkpoint_dir {
        Some(dir) => {
            let (out, side, ck) =
                prepare_checkpoint(&config, dir, partitions, pipeline.operator_config())?;
            (out, side, Some(ck))
        }
        None => {
            let out = open_output(&config.output)?;
            let side = match &config.on_error {
                OnError::SideOutput(path) => Some(create_file(path, "create the side output")?),
                _ => None,
            };
            (out, side, None)
        }
    };
    let server = match &config.lookup {
        Lookup::Builtin { keys } => Some(
            BuiltinServer::start(ServerConfig {
                keys: *keys,
                ..ServerConfig::default()
            })
            .map_err(|e| EnrichError::Server(e.to_string()))?,
        ),
        Lookup::Redis(_) => None,
    };
    let url = match (&config.lookup, &server) {
        (Lookup::Redis(url), _) => *url,
        (_, Some(s)) => RedisUrl {
            addr: s.addr(),
            db: 0,
        },
        _ => unreachable!("a built-in lookup has a server"),
    };
    let result = run_pipeline(&config, &pipeline, url, out, side, checkpoint);
    if let Some(s) = server {
        let _ = s.shutdown();
    }
    result
}

fn run_pipeline(
    config: &EnrichConfig,
    pipeline: &Pipeline,
    url: RedisUrl,
    out: Box<dyn Write + Send>,
    side: Option<Box<dyn Write + Send>>,
    checkpoint: Option<(WriterCheckpoint, Checkpointing)>,
) -> Result<EnrichSummary, EnrichError> {
    let started = Instant::now();
    let partitions = pipeline.partitions();
    let capacity = config.capacity;
    let (mut in_tx, mut in_rx, mut out_tx, mut out_rx) = (vec![], vec![], vec![], vec![]);
    for _ in 0..partitions {
        let (tx, rx) = queue::bounded(capacity.clamp(256, 8192));
        in_tx.push(tx);
        in_rx.push(Some(rx));
        let (tx, rx) = queue::bounded(capacity.clamp(256, 8192));
        out_tx.push(Some(tx));
        out_rx.push(rx);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let reader_settings = ReaderSettings {
        key_field: config.key_field.clone(),
        key_prefix: config.key_prefix.clone(),
        routing: Routing {
            partitions,
            by_key: config.mode == OrderMode::KeyOrdered,
        },
        stop: stop.clone(),
    };
    let (writer_ck, checkpointing) = match checkpoint {
        Some((w, c)) => (Some(w), Some(c)),
        None => (None, None),
    };
    // Checkpointed runs read the input in each partition (a replayable source); otherwise a
    // reader thread deals the lines.
    let (reader, reader_settings) = if checkpointing.is_some() {
        drop(in_tx);
        (None, Some(Arc::new(reader_settings)))
    } else {
        (
            Some(input::spawn_reader(
                config.input.clone(),
                reader_settings,
                in_tx,
            )),
            None,
        )
    };
    let writer = output::spawn_writer(
        out_rx,
        out,
        side,
        WriterSettings {
            mode: config.mode,
            into: config.into_field.clone(),
            on_error: config.on_error.clone(),
            progress: progress.clone(),
            stop: stop.clone(),
        },
        writer_ck,
    );
    let ticker = (config.progress && std::io::stderr().is_terminal())
        .then(|| spawn_progress(progress.clone(), stop.clone()));

    let sources = Mutex::new(in_rx);
    let sinks = Mutex::new(out_tx);
    let conn_config = ConnectionConfig {
        db: url.db,
        // A server that stops answering (a black hole) holds every later request of the
        // connection hostage, since replies match requests in order: give up on the
        // connection, and reconnect, once nothing arrived for two record timeouts.
        response_timeout: Some((config.timeout * 2).max(Duration::from_millis(50))),
        ..ConnectionConfig::default()
    };
    let addr = url.addr;
    let source_of = move |p: &crate::runtime::PartitionContext| {
        let rx = sources.lock().expect("queue list")[p.index]
            .take()
            .expect("each partition takes its queue once");
        Ok(QueueSource::new(rx))
    };
    let function_of = move |_p: &crate::runtime::PartitionContext| {
        let cfg = conn_config.clone();
        async move {
            let conn = Connection::connect(addr, cfg).await?;
            Ok(RedisLookup::new(conn))
        }
    };
    let sink_of = move |p: &crate::runtime::PartitionContext| {
        let tx = sinks.lock().expect("queue list")[p.index]
            .take()
            .expect("each partition takes its queue once");
        Ok(MarkedSink::new(tx))
    };
    let key: Option<crate::runtime::SharedKeyFn<Arc<Line>>> =
        (config.mode == OrderMode::KeyOrdered).then(|| {
            let f: crate::runtime::SharedKeyFn<Arc<Line>> = Arc::new(|l: &Arc<Line>| {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                l.key.hash(&mut h);
                h.finish()
            });
            f
        });
    let report = match (&checkpointing, reader_settings) {
        (Some(ckpt), Some(settings)) => {
            let input = config.input.clone();
            let line_source = move |p: &crate::runtime::PartitionContext| {
                LineSource::open(&input, p.index, settings.clone())
                    .map_err(|e| Box::new(e) as crate::source::BoxError)
            };
            pipeline.run_checkpointed(ckpt, line_source, function_of, sink_of, key)
        }
        _ => match key {
            Some(key) => pipeline.run_keyed(source_of, function_of, sink_of, key),
            None => pipeline.run(source_of, function_of, sink_of),
        },
    };
    if report.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    let read = match reader {
        Some(r) => r.join().expect("reader thread"),
        None => Ok(report.as_ref().map_or(0, |r| r.merged.records_in)),
    };
    let written = writer.join().expect("writer thread");
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = ticker {
        let _ = t.join();
    }
    let records = read?;
    let written = written?;
    let report = report?;
    let summary = EnrichSummary {
        records,
        written,
        partitions,
        mode: config.mode,
        elapsed: started.elapsed(),
        records_per_s: report.records_per_sec(),
        latency: report.merged.latency.clone(),
        timeouts: report.merged.timeouts,
        retries: report.merged.retries,
        errors: report.merged.errors,
    };
    if let Some(path) = &config.report {
        write_report(path, &summary)?;
    }
    Ok(summary)
}

/// Opens the checkpoint directory (its lock refuses a second process), reads the writer's
/// last commit, truncates the output (and side output) back to it, and plans the restore.
#[allow(clippy::type_complexity)]
fn prepare_checkpoint(
    config: &EnrichConfig,
    dir: &std::path::Path,
    partitions: usize,
    operator: &OperatorConfig,
) -> Result<
    (
        Box<dyn Write + Send>,
        Option<Box<dyn Write + Send>>,
        (WriterCheckpoint, Checkpointing),
    ),
    EnrichError,
> {
    let Output::File(out_path) = &config.output else {
        return Err(EnrichError::Flag {
            flag: "--checkpoint-dir",
            reason: "needs --output PATH (standard output cannot be truncated back on restore)"
                .into(),
        });
    };
    if config.input == Input::Stdin {
        return Err(EnrichError::Flag {
            flag: "--checkpoint-dir",
            reason: "standard input cannot be replayed: use --input PATH".into(),
        });
    }
    if config.checkpoint_interval.is_zero() {
        return Err(EnrichError::Flag {
            flag: "--checkpoint-interval-ms",
            reason: "must be at least 1".into(),
        });
    }
    let op_id = operator.operator_id();
    let store = SnapshotStore::open(dir, op_id, output::WRITER_PARTITION, 4096)?;
    let committed = SnapshotStore::recover(dir, op_id, output::WRITER_PARTITION)?;
    let (epoch, out_len, side_len, next_index) = match &committed {
        None => (None, 0, 0, 0),
        Some(rec) => {
            let (side, parts) = output::decode_commit(&rec.payload).ok_or_else(|| {
                EnrichError::Internal(format!(
                    "the commit record in {} has an unknown layout",
                    dir.display()
                ))
            })?;
            if parts != partitions as u64 {
                return Err(EnrichError::Flag {
                    flag: "--partitions",
                    reason: format!(
                        "the checkpoint in {} was taken with {parts} partition(s): resume with --partitions {parts}, or use another --checkpoint-dir",
                        dir.display()
                    ),
                });
            }
            (
                Some(rec.meta.epoch),
                rec.meta.sink_position,
                side,
                rec.meta.source_position,
            )
        }
    };
    if let Some(epoch) = epoch {
        eprintln!(
            "ringwait enrich: resuming from checkpoint {epoch} ({out_len} bytes of output committed)"
        );
    }
    let newest = crate::runtime::checkpoint::newest_epoch(dir, op_id, partitions)?;
    let first_epoch = newest.max(epoch.unwrap_or(0)) + 1;
    let (out, out_file) = open_truncated(out_path, out_len, "open the output")?;
    let (side, side_file) = match &config.on_error {
        OnError::SideOutput(path) => {
            let (w, f) = open_truncated(path, side_len, "open the side output")?;
            (Some(w), Some(f))
        }
        _ => (None, None),
    };
    let coordinator = Coordinator::new(partitions, first_epoch, false);
    let writer = WriterCheckpoint {
        store,
        coordinator: coordinator.clone(),
        out_file,
        side_file,
        written: out_len,
        side_written: side_len,
        next_index,
        partitions: partitions as u64,
    };
    let ckpt = Checkpointing {
        dir: dir.to_path_buf(),
        interval: config.checkpoint_interval,
        restore_epoch: epoch,
        coordinator,
    };
    Ok((out, side, (writer, ckpt)))
}

/// Opens `path` for writing at `len`, dropping anything after it (creating it when `len` is 0).
fn open_truncated(
    path: &PathBuf,
    len: u64,
    what: &'static str,
) -> Result<(Box<dyn Write + Send>, std::fs::File), EnrichError> {
    use std::io::Seek;
    let io = |cause| EnrichError::Io {
        what,
        path: path.display().to_string(),
        cause,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    let actual = f.metadata().map_err(io)?.len();
    if actual < len {
        return Err(EnrichError::Io {
            what,
            path: path.display().to_string(),
            cause: std::io::Error::other(format!(
                "it is {actual} bytes long, shorter than its committed length {len}: it was changed outside ringwait"
            )),
        });
    }
    f.set_len(len).map_err(io)?;
    f.seek(std::io::SeekFrom::Start(len)).map_err(io)?;
    let handle = f.try_clone().map_err(io)?;
    Ok((
        Box::new(std::io::BufWriter::with_capacity(1 << 16, f)),
        handle,
    ))
}

fn open_output(output: &Output) -> Result<Box<dyn Write + Send>, EnrichError> {
    Ok(match output {
        Output::Stdout => Box::new(std::io::BufWriter::with_capacity(
            1 << 16,
            std::io::stdout(),
        )),
        Output::File(path) => create_file(path, "create the output")?,
    })
}

fn create_file(path: &PathBuf, what: &'static str) -> Result<Box<dyn Write + Send>, EnrichError> {
    let f = std::fs::File::create(path).map_err(|cause| EnrichError::Io {
        what,
        path: path.display().to_string(),
        cause,
    })?;
    Ok(Box::new(std::io::BufWriter::with_capacity(1 << 16, f)))
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
    std::fs::write(path, svg).map_err(|cause| EnrichError::Io {
        what: "write the report",
        path: path.display().to_string(),
        cause,
    })
}
