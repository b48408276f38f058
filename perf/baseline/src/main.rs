//! `ringwait-baseline`: what a Rust user would write instead of ringwait — tokio +
//! `futures::StreamExt::buffered` / `buffer_unordered` + `tokio::time::sleep` + the `redis`
//! crate's `MultiplexedConnection` — on SPEC section 4's workloads. Prints one line of key=value
//! pairs in the format of `ringwait bench`. See `perf/README.md`.

mod data;
mod enrich;
mod load;
mod runner;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use redis::AsyncCommands;

use runner::{merge, partition_records, run_partition, Mode, PartitionStats, Summary};

#[derive(Parser)]
#[command(
    name = "ringwait-baseline",
    about = "tokio + futures buffered/buffer_unordered baseline for ringwait's section 4 workloads",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Fill Redis with k:<i> -> 64-byte value (pipelined SETs), unless DBSIZE already equals --keys.
    Load(load::LoadArgs),
    /// The plain tokio + serde_json program doing `ringwait enrich`'s job: JSON Lines in, GET
    /// per line's key, each line out with one field added (ordered, buffered(capacity)).
    Enrich(enrich::EnrichArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// The async fn returns immediately.
    Overhead,
    /// The async fn sleeps --delay-us with tokio::time::sleep, then returns.
    Delay,
    /// The async fn does GET k:<key_of(i)> on the partition's MultiplexedConnection.
    Redis,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Overhead => "overhead",
            Workload::Delay => "delay",
            Workload::Redis => "redis",
        }
    }
}

#[derive(Args)]
struct BenchArgs {
    /// Workload to run.
    #[arg(long, value_enum, required = true)]
    workload: Option<Workload>,
    /// ordered = buffered(C), unordered = buffer_unordered(C).
    #[arg(long, value_enum, default_value = "ordered")]
    mode: Mode,
    /// Partitions; each is one task. P=1: current_thread runtime; P>1: multi-thread with P workers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    partitions: u64,
    /// Total records over all partitions (partition p gets i with i % P == p).
    /// Default: 2,000,000 for overhead, 1,000,000 for delay and redis.
    #[arg(long)]
    records: Option<u64>,
    /// Concurrency per partition: the C of buffered(C) / buffer_unordered(C).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    capacity: u64,
    /// Wrap each partition's task in tokio::task::unconstrained (no coop budget).
    #[arg(long)]
    unconstrained: bool,
    /// Redis URL for the redis workload.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Delay of the delay workload, in microseconds.
    #[arg(long, default_value_t = 1000)]
    delay_us: u64,
    /// Write the latency distribution to FILE: HdrHistogram percentile distribution text,
    /// values in µs (the format of `ringwait bench --hist-out`).
    #[arg(long, value_name = "FILE")]
    hist_out: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Load(args)) => load::run(&args),
        Some(Command::Enrich(args)) => enrich::run(&args),
        None => bench(&cli.bench),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringwait-baseline: error: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn bench(args: &BenchArgs) -> Result<(), BoxError> {
    let workload = args.workload.expect("clap requires --workload");
    let records = args.records.unwrap_or(match workload {
        Workload::Overhead => 2_000_000,
        Workload::Delay | Workload::Redis => 1_000_000,
    });
    let rt = build_runtime(args.partitions)?;
    let summary = rt.block_on(run_all(args, workload, records))?;
    if summary.records != records {
        return Err(format!("{} of {records} records came out", summary.records).into());
    }
    if summary.bad > 0 {
        return Err(format!("{} records got a Redis error or a miss", summary.bad).into());
    }
    println!("{}", report_line(args, workload, &summary));
    if let Some(path) = &args.hist_out {
        std::fs::write(path, percentile_distribution(&summary.hist))?;
    }
    Ok(())
}

/// P=1: a current_thread runtime (one thread, like one ringwait core; the redis connection's
/// driver task and the timer run on the same thread). P>1: the multi-thread runtime with P
/// workers, which is how a tokio user spreads work over P cores (work stealing, no pinning).
fn build_runtime(partitions: u64) -> std::io::Result<tokio::runtime::Runtime> {
    if partitions == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(partitions as usize)
            .enable_all()
            .build()
    }
}

async fn run_all(args: &BenchArgs, workload: Workload, total: u64) -> Result<Summary, BoxError> {
    if workload == Workload::Redis {
        load::require_loaded(&args.redis).await?;
    }
    let mut handles = Vec::new();
    for p in 0..args.partitions {
        let part = partition(args, workload, total, p);
        handles.push(if args.unconstrained {
            tokio::spawn(tokio::task::unconstrained(part))
        } else {
            tokio::spawn(part)
        });
    }
    let mut parts = Vec::new();
    for h in handles {
        parts.push(h.await??);
    }
    Ok(merge(parts))
}

/// One partition's task: its own records, and for redis its own MultiplexedConnection.
fn partition(
    args: &BenchArgs,
    workload: Workload,
    total: u64,
    p: u64,
) -> impl std::future::Future<Output = Result<PartitionStats, BoxError>> + Send + 'static {
    let records = partition_records(total, args.partitions, p);
    let (mode, cap) = (args.mode, args.capacity as usize);
    let delay = Duration::from_micros(args.delay_us);
    let url = args.redis.clone();
    async move {
        Ok(match workload {
            Workload::Overhead => {
                run_partition(records, mode, cap, |x| async move { x }, |_| true).await
            }
            Workload::Delay => {
                let f = move |x| async move {
                    tokio::time::sleep(delay).await;
                    x
                };
                run_partition(records, mode, cap, f, |_| true).await
            }
            Workload::Redis => {
                let conn = redis::Client::open(url.as_str())?
                    .get_multiplexed_async_connection()
                    .await?;
                let f = move |i| {
                    let mut c = conn.clone();
                    let key = data::key_name(data::key_of(i));
                    async move { c.get::<_, Option<Vec<u8>>>(key).await }
                };
                let ok = |r: &redis::RedisResult<Option<Vec<u8>>>| matches!(r, Ok(Some(v)) if v.len() == data::VALUE_LEN);
                run_partition(records, mode, cap, f, ok).await
            }
        })
    }
}

fn report_line(args: &BenchArgs, workload: Workload, s: &Summary) -> String {
    let us = |q: f64| s.hist.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "workload={} mode={} partitions={} records={} records_per_s={:.1} p50_us={:.3} \
         p99_us={:.3} p999_us={:.3} max_us={:.3} impl={}",
        workload.name(),
        args.mode.name(),
        args.partitions,
        s.records,
        s.records_per_s,
        us(0.50),
        us(0.99),
        us(0.999),
        s.hist.max() as f64 / 1000.0,
        if args.unconstrained {
            "tokio-buffered-unconstrained"
        } else {
            "tokio-buffered"
        }
    )
}

/// HdrHistogram's percentile distribution of `h` (ns) in µs, 5 ticks per half distance;
/// the same text `ringwait bench --hist-out` writes.
fn percentile_distribution(h: &hdrhistogram::Histogram<u64>) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let value = h.highest_equivalent(v.value_iterated_to()) as f64 / 1_000.0;
        total += v.count_since_last_iteration();
        let _ = write!(s, "{value:12.3} {q:14.12} {total:10}");
        if q < 1.0 {
            let _ = write!(s, " {:14.2}", 1.0 / (1.0 - q));
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / 1_000.0,
        h.stdev() / 1_000.0
    );
    let _ = writeln!(
        s,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / 1_000.0,
        h.len()
    );
    s
}
