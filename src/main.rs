//! The `ringwait` command line: `enrich`, `serve`, `bench`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use ringwait::bench::{BenchConfig, Workload};
use ringwait::OrderMode;

#[derive(Parser)]
#[command(
    name = "ringwait",
    version,
    about = "Thread-per-core, io_uring async I/O operators"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enrich JSON Lines records with lookups, on all cores. SIGINT/SIGTERM stop it
    /// gracefully (exit 130/143); a second signal exits at once.
    Enrich(EnrichArgs),
    /// Run a SPEC section 4 workload and print one line of key=value results.
    Bench(BenchArgs),
    /// Run the built-in RESP lookup server.
    Serve(ringwait::server::ServeArgs),
}

#[derive(clap::Args)]
struct EnrichArgs {
    /// One JSON object per line; `-` for standard input (default: a generated stream of
    /// --records objects {"id":i,"key":"k:<n>"} whose keys the built-in server holds).
    /// Or Redis Streams read through a consumer group (created if missing):
    /// redis-stream://[USER:PW@]HOST:PORT[/DB]/STREAM[,STREAM...]?group=G[&consumer=NAME][&start=0|$];
    /// each entry holds one JSON object in its field --stream-field. The consumer name
    /// defaults to HOSTNAME-HASH, the hash of the input, output and fields, so the same
    /// command on the same host picks up its own pending entries; give two instances on one
    /// host their own consumer=NAME.
    #[arg(long, value_name = "PATH|-|URL")]
    input: Option<String>,
    /// Where the JSON Lines go: each input line, byte for byte, with one field added (or its
    /// value replaced); `-` is stdout. A file
    /// is written as PATH.ringwait-partial and renamed to PATH only when the run is complete:
    /// a failed or stopped run leaves an existing PATH as it was.
    /// A stream input goes to a stream: redis-stream://[USER:PW@]HOST:PORT[/DB]/STREAM[?maxlen=N],
    /// each entry {data: the enriched object, src: the input entry's id} (and stream: its
    /// input stream when there are several), committed exactly once with the input's
    /// progress.
    #[arg(long, value_name = "PATH|-|URL", default_value = "-")]
    output: String,
    /// Records generated when there is no --input.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Field holding the lookup key (a string or an integer).
    #[arg(long = "key", default_value = "key", value_name = "FIELD")]
    key_field: String,
    /// Field that receives the value (see --value-format); null on a miss.
    #[arg(long = "into", default_value = "value", value_name = "FIELD")]
    into_field: String,
    /// What each key is looked up with: get | hget:FIELD | hgetall (the value is then an
    /// object of the hash's fields). The built-in store holds hashes h:0 .. h:N-1 with the
    /// fields id and v.
    #[arg(long, default_value = "get", value_name = "COMMAND")]
    command: ringwait::enrich::Command,
    /// string: the value is written as a JSON string | json: the stored value is JSON and
    /// is inserted as it is, after a check (a value that is not JSON fails its record, see
    /// --on-error).
    #[arg(long, default_value = "string", value_name = "FORMAT")]
    value_format: ringwait::enrich::ValueFormat,
    /// Prepended to the key for the lookup.
    #[arg(long, default_value = "", value_name = "STR")]
    key_prefix: String,
    /// builtin (the in-process store with generated data), or a Redis:
    /// redis://USER:PASSWORD@HOST:PORT/DB, all but the host optional (AUTH with an ACL
    /// user, or a password alone as redis://:PASSWORD@HOST). Without a password in the URL, REDIS_PASSWORD
    /// from the environment is used when set. User and password may be percent-encoded;
    /// the password is never printed. rediss://... for TLS (see --tls-ca). A Redis Cluster:
    /// redis+cluster://USER:PASSWORD@HOST:PORT,HOST:PORT... (seed nodes; MOVED and ASK are
    /// followed; no MGET batching nor coalescing, as keys of one tick live in different
    /// slots).
    #[arg(long, default_value = "builtin", value_name = "URL")]
    lookup: String,
    /// Redis connections per partition (records go round-robin over them).
    #[arg(long, default_value_t = 1, value_name = "N")]
    connections: usize,
    /// GET batching: off (one GET per record, pipelined) | auto (the GETs of one executor
    /// tick go as one MGET of up to 128 keys, so batches grow with the load) | N (the same,
    /// up to N keys). Default auto, by measurement against a local redis-server (1M uniform
    /// keys, 1 partition): 0.75-0.79 M records/s with auto, 0.64-0.75 M with off, the same
    /// output. Note: MGET answers nil for a key holding another type (a hash), where GET
    /// answers WRONGTYPE; with batching such a key can read as a miss. Use --batch off to
    /// have it fail its record.
    #[arg(long, default_value = "auto", value_name = "off|auto|N")]
    batch: ringwait::enrich::Batch,
    /// How long an idle connection holds its first request so that more join its batch
    /// (0: write at the end of the executor tick). Trades latency at light load for fewer,
    /// bigger writes.
    #[arg(long, default_value_t = 0, value_name = "US")]
    batch_wait_us: u64,
    /// Coalescing: a GET of a key already in flight on the connection waits for that
    /// request's reply instead of going out again (on | off). Default on, by measurement
    /// against a local redis-server, 1M records: on uniform keys it costs 0.03-0.05 user CPU
    /// s (same throughput); on Zipf(0.99) keys it spares the store 21-25% of its requests,
    /// and `bench --zipf 0.99` goes from 1.08 to 1.30 M lookups/s.
    #[arg(long, default_value = "on", value_name = "on|off", value_parser = on_off, action = clap::ArgAction::Set)]
    coalesce: bool,
    /// Per-partition lookup cache, in entries (0: no cache, every record asks the store).
    /// A cached value may be up to --cache-ttl-ms old. Off by default, so that the output
    /// holds the store's current values unless asked otherwise.
    #[arg(long, default_value_t = 0, value_name = "N")]
    cache_size: usize,
    /// How long a cached value is used.
    #[arg(long, default_value_t = 60_000, value_name = "MS")]
    cache_ttl_ms: u64,
    /// Also cache misses (a key the store does not hold), for --cache-ttl-ms.
    #[arg(long)]
    cache_misses: bool,
    /// With --lookup rediss://...: the CA certificate(s), PEM, the store's certificate is
    /// checked against (default: Mozilla's roots, as webpki-roots packages them). The
    /// certificate must name the URL's host.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// Keys k:0 .. k:N-1 the built-in server holds.
    #[arg(long, default_value_t = 1_000_000)]
    builtin_keys: u64,
    /// ordered (output order = input order, whatever --partitions) | unordered | key-ordered.
    #[arg(long, default_value = "ordered")]
    mode: OrderMode,
    /// Lookups in flight per partition.
    #[arg(long, default_value_t = 1000)]
    capacity: usize,
    /// Per-record timeout, across all retries.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Retries of a failed lookup (exponential backoff from --retry-backoff-ms).
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// First retry delay; doubles per retry, capped at a quarter of the timeout.
    #[arg(long, default_value_t = 10)]
    retry_backoff_ms: u64,
    /// fail (exit non-zero naming the record) | skip | side-output:PATH. With a stream
    /// output, side-output:STREAM names a stream on the output's server (it may be the
    /// output itself) that receives {error, src, data: the payload as it came}.
    #[arg(long, default_value = "fail", value_name = "POLICY")]
    on_error: ringwait::enrich::OnError,
    /// Stream input: the entry field that holds the record (the output entry's field is
    /// always data).
    #[arg(long, default_value = "data", value_name = "NAME")]
    stream_field: String,
    /// Stream input: `caught-up` exits 0 once every entry that was in the input streams at
    /// the start is processed and committed (by this instance or another of the group); by
    /// default the job runs until SIGINT or SIGTERM.
    #[arg(long, value_name = "caught-up")]
    until: Option<Until>,
    /// Stream input: entries pending in another consumer (a dead instance) for this long are
    /// claimed (XAUTOCLAIM) and processed here.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    claim_idle_ms: u64,
    /// Stream input: entries per read and records per commit (one EVAL), at most 2000.
    /// 1024 moved 200k entries in 0.76-0.87 s against 0.99-1.0 s with 256 (same server).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    stream_batch: usize,
    /// Kafka: a librdkafka setting for every client of the job (repeatable), e.g.
    /// security.protocol=SSL, sasl.mechanisms=PLAIN, session.timeout.ms=6000. The settings
    /// the guarantee rests on (group.id, offsets, idempotence, acks…) are refused.
    #[arg(long, value_name = "KEY=VALUE")]
    kafka_config: Vec<String>,
    /// Partitions, one pinned core each (default: every core but one, left to the reader
    /// and the writer; the built-in store runs inside the partitions).
    #[arg(long)]
    partitions: Option<usize>,
    /// Write a latency-percentile chart (SVG) with the summary to PATH.
    #[arg(long, value_name = "PATH")]
    report: Option<std::path::PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
    /// Serve the operator metrics (Prometheus text format) at http://ADDR/metrics while running.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Do not pin partitions to cores (share the cores with other work).
    #[arg(long)]
    no_pin: bool,
    /// Exactly-once: keep checkpoints in DIR; after a crash (even SIGKILL) or a stop (SIGINT,
    /// SIGTERM), running the same command again resumes, and the finished --output holds
    /// exactly one line per input line. Needs --input PATH (or generated input) and --output
    /// PATH. DIR belongs to one job (input and output-changing flags): another is refused.
    /// One process per DIR.
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<std::path::PathBuf>,
    /// Time between checkpoints (with --checkpoint-dir).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    checkpoint_interval_ms: u64,
}

/// `--until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Until {
    /// Every entry present at the start is committed.
    CaughtUp,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// overhead | delay | redis | latency | soak | checkpoint | stream (needs --redis)
    #[arg(long)]
    workload: Workload,
    /// ordered | unordered | key-ordered
    #[arg(long, default_value = "ordered")]
    mode: OrderMode,
    /// Partitions (cores).
    #[arg(long, default_value_t = 1)]
    partitions: usize,
    /// Records in total (default: 20,000,000 for overhead, 2,000,000 for delay).
    #[arg(long)]
    records: Option<u64>,
    /// Operator capacity per partition.
    #[arg(long, default_value_t = 1000)]
    capacity: usize,
    /// Delay of the delay workload, in microseconds.
    #[arg(long, default_value_t = 1000)]
    delay_us: u64,
    /// Spin this many microseconds before a delay deadline instead of sleeping.
    #[arg(long, default_value_t = 50)]
    spin_us: u64,
    /// Spin this many microseconds before parking an idle executor (0: park at once).
    #[arg(long, default_value_t = 0)]
    spin_before_park_us: u64,
    /// Records taken per driver iteration.
    #[arg(long, default_value_t = 32)]
    intake_batch: usize,
    /// Repeat the run this many times, printing one line each.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// overhead, redis: take a checkpoint of every partition this often (0: none).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    checkpoint_interval_ms: u64,
    #[command(flatten)]
    perf: ringwait::bench::cli::PerfArgs,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringwait: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Enrich(args) => enrich(args),
        Command::Bench(args) => bench(args).map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => {
            let config = args.to_config();
            ringwait::server::run_standalone(config).context("the lookup server failed")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// SIGINT and SIGTERM during `enrich`: the first asks the job to stop (intake stops, what
/// was taken finishes and is written, a final checkpoint is taken, the summary is printed,
/// and the exit code is 130 or 143); a second one exits at once with that code.
struct StopSignals {
    any: Arc<AtomicBool>,
    interrupt: Arc<AtomicBool>,
}

impl StopSignals {
    fn install() -> Result<StopSignals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        let any = Arc::new(AtomicBool::new(false));
        let interrupt = Arc::new(AtomicBool::new(false));
        for (signal, code) in [(SIGINT, 130), (SIGTERM, 143)] {
            // Registered first, so it sees the flag as it was before this signal.
            flag::register_conditional_shutdown(signal, code, any.clone())
                .and_then(|_| flag::register(signal, any.clone()))
                .context("installing the SIGINT and SIGTERM handlers")?;
        }
        flag::register(SIGINT, interrupt.clone()).context("installing the SIGINT handler")?;
        Ok(StopSignals { any, interrupt })
    }

    /// 130 after SIGINT, 143 after SIGTERM (128 + the signal's number, as shells report).
    fn exit_code(&self) -> ExitCode {
        ExitCode::from(if self.interrupt.load(Ordering::Relaxed) {
            130
        } else {
            143
        })
    }
}

/// `on` | `off`.
fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

fn enrich(a: EnrichArgs) -> Result<ExitCode> {
    use ringwait::enrich::{Ending, EnrichConfig, Input, Lookup, Output};
    let signals = StopSignals::install()?;
    let lookup = match a.lookup.as_str() {
        "builtin" => Lookup::Builtin {
            keys: a.builtin_keys,
        },
        url => Lookup::Redis(
            url.parse::<ringwait::lookup::RedisUrl>()
                .map_err(|e| anyhow::anyhow!("--lookup: {e}"))?
                .with_env_password(),
        ),
    };
    let config = EnrichConfig {
        input: match a.input.as_deref() {
            None => Input::Generated(a.records),
            Some("-") => Input::Stdin,
            Some(url) if url.starts_with("redis-stream://") => {
                Input::RedisStream(Box::new(stream_url(url, "--input")?))
            }
            Some(url) if url.starts_with("kafka://") => {
                Input::Kafka(Box::new(kafka_url(url, "--input")?))
            }
            Some(path) => Input::File(path.into()),
        },
        output: match a.output.as_str() {
            "-" => Output::Stdout,
            url if url.starts_with("redis-stream://") => {
                Output::RedisStream(Box::new(stream_url(url, "--output")?))
            }
            url if url.starts_with("kafka://") => {
                Output::Kafka(Box::new(kafka_url(url, "--output")?))
            }
            path => Output::File(path.into()),
        },
        stream: ringwait::enrich::StreamOptions {
            field: a.stream_field,
            until_caught_up: a.until == Some(Until::CaughtUp),
            claim_idle: Duration::from_millis(a.claim_idle_ms),
            batch: a.stream_batch,
            kafka_config: a
                .kafka_config
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .filter(|(k, _)| !k.is_empty())
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| anyhow::anyhow!("--kafka-config: {kv:?}: write KEY=VALUE"))
                })
                .collect::<Result<Vec<_>>>()?,
        },
        key_field: a.key_field,
        into_field: a.into_field,
        key_prefix: a.key_prefix,
        lookup,
        tls_ca: a.tls_ca,
        value: ringwait::enrich::ValueSpec {
            command: a.command,
            format: a.value_format,
        },
        client: ringwait::enrich::ClientOptions {
            connections: a.connections,
            batch: a.batch,
            batch_wait: Duration::from_micros(a.batch_wait_us),
            coalesce: a.coalesce,
            cache: ringwait::lookup::CacheConfig {
                capacity: a.cache_size,
                ttl: Duration::from_millis(a.cache_ttl_ms),
                miss_ttl: a
                    .cache_misses
                    .then(|| Duration::from_millis(a.cache_ttl_ms)),
            },
        },
        mode: a.mode,
        capacity: a.capacity,
        timeout: Duration::from_millis(a.timeout_ms),
        retries: a.retries,
        retry_backoff: Duration::from_millis(a.retry_backoff_ms),
        on_error: a.on_error,
        partitions: a.partitions,
        report: a.report,
        progress: !a.quiet,
        pin: !a.no_pin,
        metrics: a.metrics,
        checkpoint_dir: a.checkpoint_dir,
        checkpoint_interval: Duration::from_millis(a.checkpoint_interval_ms),
        stop: Some(signals.any.clone()),
    };
    let summary = ringwait::enrich::run(config)?;
    eprintln!("{summary}");
    Ok(match summary.ending {
        Ending::Stopped { .. } => signals.exit_code(),
        Ending::Complete | Ending::AlreadyComplete => ExitCode::SUCCESS,
    })
}

/// A `redis-stream://` address, its password from `REDIS_PASSWORD` if it names none.
fn stream_url(url: &str, flag: &str) -> Result<ringwait::enrich::StreamUrl> {
    let mut parsed: ringwait::enrich::StreamUrl =
        url.parse().map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    parsed.server = parsed.server.with_env_password();
    Ok(parsed)
}

fn kafka_url(url: &str, flag: &str) -> Result<ringwait::connect::kafka::KafkaUrl> {
    url.parse().map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

fn bench(a: BenchArgs) -> Result<()> {
    let mut cfg = BenchConfig::new(a.workload);
    cfg.mode = a.mode;
    cfg.partitions = a.partitions;
    if let Some(n) = a.records {
        cfg.records = n;
    }
    cfg.capacity = a.capacity;
    cfg.intake_batch = a.intake_batch;
    cfg.delay = Duration::from_micros(a.delay_us);
    cfg.spin = Duration::from_micros(a.spin_us);
    cfg.spin_before_park =
        (a.spin_before_park_us > 0).then(|| Duration::from_micros(a.spin_before_park_us));
    cfg.checkpoint_interval =
        (a.checkpoint_interval_ms > 0).then(|| Duration::from_millis(a.checkpoint_interval_ms));
    if cfg.checkpoint_interval.is_some()
        && !matches!(cfg.workload, Workload::Overhead | Workload::Redis)
    {
        anyhow::bail!(
            "--checkpoint-interval-ms applies to the overhead and redis workloads, not {}",
            cfg.workload
        );
    }
    if a.perf.handles(cfg.workload) {
        return ringwait::bench::cli::run(&cfg, &a.perf, a.repeat)
            .map_err(|e| anyhow::anyhow!("{} workload failed: {e}", cfg.workload));
    }
    for _ in 0..a.repeat.max(1) {
        if cfg.workload == Workload::Checkpoint {
            for line in ringwait::bench::run_checkpoint().context("checkpoint workload failed")? {
                println!("{line}");
            }
            continue;
        }
        let result = match cfg.workload {
            Workload::Overhead => ringwait::bench::run_overhead(&cfg),
            Workload::Delay => ringwait::bench::run_delay(&cfg),
            Workload::Checkpoint => unreachable!("handled above"),
            other => unreachable!("{other} is run by bench::cli"),
        }
        .with_context(|| format!("{} workload failed", cfg.workload))?;
        println!("{result}");
    }
    Ok(())
}
