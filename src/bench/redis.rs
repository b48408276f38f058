//! The redis workload: every record does `GET k:<key_of(i)>` through the ringwait Redis
//! client inside the operator, against the embedded built-in server (default) or a real Redis
//! loaded with the same keys (`perf/baseline load`). Every reply is checked against
//! [`value_of`]: a miss is counted, a wrong value fails the run.

use std::cell::Cell;
use std::net::SocketAddr;

use hdrhistogram::Histogram;

use crate::dataset::value_of;
use crate::function::{AsyncError, AsyncFunction, ResultFuture};
use crate::lookup::{Connection, ConnectionConfig, LookupError, ReplyHandler, ReplyView};
use crate::runtime::{PipelineError, RunReport};
use crate::server::{BuiltinServer, ServerConfig, ServerHandle};
use crate::sink::Sink;
use crate::source::{BoxError, GeneratorSource};
use crate::Emitted;

use super::workloads::run_maybe_checkpointed;
use super::{BenchConfig, BenchResult};
use crate::dataset::key_of;

/// Keys of the redis workload: `k:0 .. k:999999`.
pub const REDIS_KEYS: u64 = 1_000_000;

/// Options of the redis workload (and of the latency and soak workloads that reuse it).
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// A Redis to use instead of the embedded built-in server.
    pub redis: Option<crate::lookup::RedisUrl>,
    /// Connections per partition (requests go round-robin over them). Default 1.
    pub connections: usize,
    /// Send the GETs of one tick as one `MGET`. Default false.
    pub mget_batching: bool,
    /// Most keys in one batched `MGET`.
    pub max_batch: usize,
    /// Pin the embedded server's thread to this CPU.
    pub server_cpu: Option<usize>,
    /// Keys drawn Zipf(s) ([`crate::dataset::zipf_key_of`]) instead of uniformly.
    pub zipf: Option<f64>,
    /// A `GET` of a key in flight shares its reply.
    pub coalescing: bool,
    /// TLS settings of a `rediss://` store.
    pub tls: Option<crate::lookup::TlsSettings>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            redis: None,
            connections: 1,
            mget_batching: false,
            max_batch: 128,
            server_cpu: None,
            zipf: None,
            coalescing: false,
            tls: None,
        }
    }
}

/// The lookup target of a run: an embedded server (kept alive while this lives) or an address.
pub struct Target {
    /// Where the lookups go.
    pub addr: SocketAddr,
    server: Option<ServerHandle>,
}

impl Target {
    /// Starts the embedded server unless `opts.redis` names one.
    pub fn start(opts: &RedisOptions) -> Result<Target, BoxError> {
        match &opts.redis {
            Some(url) => Ok(Target {
                addr: url.addr,
                server: None,
            }),
            None => {
                let server = BuiltinServer::start(ServerConfig {
                    keys: REDIS_KEYS,
                    hashes: false,
                    cpu: opts.server_cpu,
                    ..ServerConfig::default()
                })?;
                Ok(Target {
                    addr: server.addr(),
                    server: Some(server),
                })
            }
        }
    }

    /// Whether this is the embedded built-in server.
    pub fn is_builtin(&self) -> bool {
        self.server.is_some()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.shutdown();
        }
    }
}

/// Writes `k:<n>` into `buf` and returns its length (no allocation).
pub fn key_name(n: u64, buf: &mut [u8; 24]) -> usize {
    buf[0] = b'k';
    buf[1] = b':';
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut m = n;
    loop {
        digits[len] = b'0' + (m % 10) as u8;
        len += 1;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    for (k, d) in digits[..len].iter().rev().enumerate() {
        buf[2 + k] = *d;
    }
    2 + len
}

/// What a record's lookup found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// The expected value.
    Hit,
    /// No such key.
    Miss,
}

/// A mismatching value: the run fails.
#[derive(Debug, thiserror::Error)]
#[error("GET k:{key} returned a value that is not value_of({key})")]
pub struct Mismatch {
    /// The key index.
    pub key: u64,
}

/// Completes a record with the checked reply of its `GET`.
pub struct Verify {
    result: ResultFuture<Found>,
    key: u64,
}

impl ReplyHandler for Verify {
    #[inline]
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
        let _ = match reply {
            Ok(ReplyView::Nil) => self.result.complete_one(Found::Miss),
            Ok(view) => match view.value() {
                Some(v) if v == value_of(self.key) => self.result.complete_one(Found::Hit),
                _ => self
                    .result
                    .fail(AsyncError::new(Mismatch { key: self.key })),
            },
            Err(e) => self.result.fail(AsyncError::new(e)),
        };
    }
}

/// Requests and `write` calls of every [`RedisGet`] dropped so far in this process (for the
/// requests-per-write figure `bench` prints).
pub static REQUESTS_WRITES: [std::sync::atomic::AtomicU64; 2] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];

impl Drop for RedisGet {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        for c in &self.conns {
            let s = c.stats();
            REQUESTS_WRITES[0].fetch_add(s.requests, Relaxed);
            REQUESTS_WRITES[1].fetch_add(s.writes, Relaxed);
        }
    }
}

/// `opts.connections` connections to `addr` (on the current executor).
pub async fn connect_all<H: ReplyHandler>(
    addr: SocketAddr,
    opts: &RedisOptions,
) -> Result<Vec<Connection<H>>, LookupError> {
    let base = ConnectionConfig {
        mget_batching: opts.mget_batching,
        max_batch: opts.max_batch,
        coalescing: opts.coalescing,
        ..ConnectionConfig::default()
    };
    let config = match &opts.redis {
        Some(url) => url.connection_config(base, opts.tls.clone()),
        None => base,
    };
    let mut conns = Vec::with_capacity(opts.connections.max(1));
    for _ in 0..opts.connections.max(1) {
        conns.push(Connection::connect(addr, config.clone()).await?);
    }
    Ok(conns)
}

pub use crate::lookup::round_robin;

/// `GET k:<key_of(i)>` for record `i`, over the partition's connections.
pub struct RedisGet {
    /// Keys drawn Zipf(s) instead of uniformly.
    zipf: Option<f64>,
    conns: Vec<Connection<Verify>>,
    next: Cell<usize>,
}

impl RedisGet {
    /// Connects `opts.connections` connections to `addr` (on the current executor).
    pub async fn connect(addr: SocketAddr, opts: &RedisOptions) -> Result<Self, LookupError> {
        Ok(RedisGet {
            zipf: opts.zipf,
            conns: connect_all(addr, opts).await?,
            next: Cell::new(0),
        })
    }

    /// The connections (for their counters).
    pub fn connections(&self) -> &[Connection<Verify>] {
        &self.conns
    }
}

impl AsyncFunction for RedisGet {
    type In = u64;
    type Out = Found;

    #[inline]
    fn invoke(&self, i: &u64, result: ResultFuture<Found>) {
        let key = match self.zipf {
            Some(s) => crate::dataset::zipf_key_of(*i, s),
            None => key_of(*i),
        };
        let mut buf = [0u8; 24];
        let len = key_name(key, &mut buf);
        let conn = round_robin(&self.conns, &self.next);
        if let Err(rejected) = conn.get(&buf[..len], Verify { result, key }) {
            rejected.fail();
        }
    }
}

/// Counts hits and misses; what a partition of the redis workload hands back.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifySink {
    /// Records whose value was right.
    pub hits: u64,
    /// Records whose key was missing.
    pub misses: u64,
    /// Failed records (side output).
    pub failed: u64,
}

impl<In: 'static> Sink<Found, In> for VerifySink {
    type Output = VerifySink;

    #[inline]
    fn accept(&mut self, item: Emitted<Found, In>) {
        match item {
            Emitted::Record {
                value: Found::Hit, ..
            } => self.hits += 1,
            Emitted::Record {
                value: Found::Miss, ..
            } => self.misses += 1,
            Emitted::Watermark(_) => {}
            Emitted::Failed { .. } => self.failed += 1,
        }
    }

    fn finish(&mut self) -> Result<VerifySink, BoxError> {
        Ok(*self)
    }
}

/// A finished run of a workload: its line, its latency histogram and, for redis, what the
/// replies were.
pub struct Measured {
    /// The one-line result.
    pub result: BenchResult,
    /// Latency per record (ns).
    pub latency: Histogram<u64>,
    /// Hits and misses summed over the partitions (redis).
    pub verified: Option<VerifySink>,
    /// More lines to print after the result (latency: the raw client, the added latency).
    pub extra_lines: Vec<String>,
    /// More series for the chart (latency: the raw client).
    pub extra_series: Vec<(String, Histogram<u64>)>,
}

impl From<super::JobRun> for Measured {
    fn from(run: super::JobRun) -> Measured {
        Measured {
            result: run.result,
            latency: run.latency,
            verified: None,
            extra_lines: run.lines,
            extra_series: Vec::new(),
        }
    }
}

/// Runs the redis workload against `addr`.
pub fn redis_report(
    cfg: &BenchConfig,
    opts: &RedisOptions,
    addr: SocketAddr,
) -> Result<RunReport<VerifySink>, PipelineError> {
    let records = cfg.records;
    let opts = opts.clone();
    run_maybe_checkpointed(
        cfg,
        "redis",
        move |p| Ok(GeneratorSource::new(p.index, p.partitions, records, |i| i)),
        move |_p| {
            let opts = opts.clone();
            async move { Ok(RedisGet::connect(addr, &opts).await?) }
        },
        |_p| Ok(VerifySink::default()),
    )
}

/// redis: `GET k:<key_of(i)>` per record, checked; fails on a wrong value.
pub fn run_redis(cfg: &BenchConfig, opts: &RedisOptions) -> Result<Measured, BoxError> {
    let target = Target::start(opts)?;
    let report = redis_report(cfg, opts, target.addr)?;
    drop(target);
    let mut v = VerifySink::default();
    for o in report.outputs() {
        v.hits += o.hits;
        v.misses += o.misses;
        v.failed += o.failed;
    }
    if v.hits + v.misses != cfg.records {
        return Err(format!(
            "{} of {} records came out ({} failed)",
            v.hits + v.misses,
            cfg.records,
            v.failed
        )
        .into());
    }
    Ok(Measured {
        result: BenchResult::from_report("redis", cfg.mode, &report),
        latency: report.merged.latency.clone(),
        verified: Some(v),
        extra_lines: Vec::new(),
        extra_series: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        let mut b = [0u8; 24];
        let n = key_name(0, &mut b);
        assert_eq!(&b[..n], b"k:0");
        let n = key_name(999_999, &mut b);
        assert_eq!(&b[..n], b"k:999999");
        let n = key_name(u64::MAX, &mut b);
        assert_eq!(&b[..n], format!("k:{}", u64::MAX).as_bytes());
    }
}
