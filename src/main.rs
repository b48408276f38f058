//! The `ringwait` command line: `enrich`, `serve`, `bench`.

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
    /// Run a SPEC section 4 workload and print one line of key=value results.
    Bench(BenchArgs),
    /// Run the built-in RESP lookup server.
    Serve(ringwait::server::ServeArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// overhead | delay
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
    /// Repeat the run this many times, printing one line each.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("ringwait: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bench(args) => bench(args),
        Command::Serve(args) => {
            let config = args.to_config();
            ringwait::server::run_standalone(config).context("the lookup server failed")
        }
    }
}

fn bench(a: BenchArgs) -> Result<()> {
    let mut cfg = BenchConfig::new(a.workload);
    cfg.mode = a.mode;
    cfg.partitions = a.partitions;
    if let Some(n) = a.records {
        cfg.records = n;
    }
    cfg.capacity = a.capacity;
    cfg.delay = Duration::from_micros(a.delay_us);
    cfg.spin = Duration::from_micros(a.spin_us);
    cfg.spin_before_park =
        (a.spin_before_park_us > 0).then(|| Duration::from_micros(a.spin_before_park_us));
    for _ in 0..a.repeat.max(1) {
        let result = match cfg.workload {
            Workload::Overhead => ringwait::bench::run_overhead(&cfg),
            Workload::Delay => ringwait::bench::run_delay(&cfg),
        }
        .with_context(|| format!("{} workload failed", cfg.workload))?;
        println!("{result}");
    }
    Ok(())
}
