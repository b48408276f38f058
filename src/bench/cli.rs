//! `ringwait bench` options of the workloads added by the perf harness (redis, latency,
//! soak) and of the outputs shared by every workload; flattened into the `bench` command.

use std::net::SocketAddr;

use super::redis::{run_redis, Measured, RedisOptions};
use super::{BenchConfig, Workload};
use crate::source::BoxError;

/// Options of `ringwait bench` beyond the operator's.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PerfArgs {
    /// redis/latency/soak: a Redis HOST:PORT loaded with k:0..k:999999 (`perf/baseline load`)
    /// instead of the embedded built-in server.
    #[arg(long, value_name = "HOST:PORT")]
    pub redis: Option<SocketAddr>,
    /// redis: connections per partition (requests go round-robin over them).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// redis: send the GETs of one tick as one MGET.
    #[arg(long)]
    pub mget: bool,
    /// redis: most keys in one batched MGET.
    #[arg(long, default_value_t = 128)]
    pub max_batch: usize,
    /// redis: pin the embedded server's thread to this CPU.
    #[arg(long, value_name = "CPU")]
    pub server_cpu: Option<usize>,
}

impl PerfArgs {
    /// The redis options.
    pub fn redis_options(&self) -> RedisOptions {
        RedisOptions {
            redis: self.redis,
            connections: self.connections.max(1),
            mget_batching: self.mget,
            max_batch: self.max_batch.max(1),
            server_cpu: self.server_cpu,
        }
    }

    /// Whether [`run`] handles `workload` with these options (else the plain loop does).
    pub fn handles(&self, workload: Workload) -> bool {
        matches!(workload, Workload::Redis)
    }
}

/// Runs `repeat` times, printing one line each.
pub fn run(cfg: &BenchConfig, args: &PerfArgs, repeat: usize) -> Result<(), BoxError> {
    for _ in 0..repeat.max(1) {
        let m = measure(cfg, args)?;
        println!("{}", m.result);
        if let Some(v) = m.verified {
            eprintln!("redis: hits={} misses={}", v.hits, v.misses);
        }
    }
    Ok(())
}

fn measure(cfg: &BenchConfig, args: &PerfArgs) -> Result<Measured, BoxError> {
    match cfg.workload {
        Workload::Redis => run_redis(cfg, &args.redis_options()),
        other => Err(format!("{other} is not handled here").into()),
    }
}
