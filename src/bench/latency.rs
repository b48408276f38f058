//! The latency workload: open-loop arrivals at a fixed rate against the lookup target,
//! latency measured from each record's *intended* arrival time (coordinated omission
//! corrected: a record held back because the pipeline was busy counts the wait), and in the
//! same run the raw loopback round trip of a minimal client doing the same `GET`s at the same
//! rate, measured the same way. The difference is ringwait's added latency.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::redis::{connect_all, key_name, round_robin, run_redis, RedisOptions, Target};
use super::workloads::pipeline;
use super::{BenchConfig, BenchResult};
use crate::dataset::key_of;
use crate::dataset::value_of;
use crate::function::{AsyncError, AsyncFunction, ResultFuture};
use crate::lookup::{Connection, LookupError, ReplyHandler, ReplyView};
use crate::metrics::latency_histogram;
use crate::sink::Sink;
use crate::source::{BoxError, Source, SourceEvent};
use crate::{Emitted, StreamElement};

/// Settings of the latency workload.
#[derive(Clone, Debug)]
pub struct LatencyOptions {
    /// Arrivals per second over all partitions; `None`: 10% of a measured maximum.
    pub rate: Option<f64>,
    /// How long arrivals go on when `records` is 0.
    pub duration: Duration,
}

/// Both measurements of one latency run.
pub struct LatencyRun {
    /// Arrivals per second asked for.
    pub rate: f64,
    /// ringwait: from intended arrival to the sink.
    pub ringwait: Histogram<u64>,
    /// The raw client: from intended send to its reply.
    pub raw: Histogram<u64>,
    /// ringwait's line.
    pub result: BenchResult,
    /// The raw client's line (same keys, `impl=raw-loopback`).
    pub raw_line: String,
    /// `added_*` percentiles.
    pub added_line: String,
}

/// Arrivals at fixed intervals: the k-th record of this partition is due `k × period` after
/// the partition's first poll; before that the source is idle. Items are
/// `(i, intended ns since origin)`.
struct PacedSource {
    next: u64,
    step: u64,
    total: u64,
    period_ns: f64,
    origin: Instant,
    start_ns: Option<u64>,
    k: u64,
}

impl Source for PacedSource {
    type Item = (u64, u64);

    #[inline]
    fn next(&mut self) -> Result<SourceEvent<(u64, u64)>, BoxError> {
        if self.next >= self.total {
            return Ok(SourceEvent::End);
        }
        let now = self.origin.elapsed().as_nanos() as u64;
        let start = *self.start_ns.get_or_insert(now);
        let due = start + (self.k as f64 * self.period_ns) as u64;
        if now < due {
            return Ok(SourceEvent::Idle);
        }
        let i = self.next;
        self.next += self.step;
        self.k += 1;
        Ok(SourceEvent::Element(StreamElement::record((i, due))))
    }

    fn position(&self) -> u64 {
        self.next
    }
}

/// Completes a paced record with its intended time once its value is checked.
struct Timed {
    result: ResultFuture<u64>,
    key: u64,
    due: u64,
}

impl ReplyHandler for Timed {
    #[inline]
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
        let _ = match reply {
            Ok(view) => match view.value() {
                Some(v) if v != value_of(self.key) => self
                    .result
                    .fail(AsyncError::new(super::redis::Mismatch { key: self.key })),
                _ => self.result.complete_one(self.due),
            },
            Err(e) => self.result.fail(AsyncError::new(e)),
        };
    }
}

struct PacedGet {
    conns: Vec<Connection<Timed>>,
    next: Cell<usize>,
}

impl AsyncFunction for PacedGet {
    type In = (u64, u64);
    type Out = u64;

    #[inline]
    fn invoke(&self, &(i, due): &(u64, u64), result: ResultFuture<u64>) {
        let key = key_of(i);
        let mut buf = [0u8; 24];
        let len = key_name(key, &mut buf);
        let conn = round_robin(&self.conns, &self.next);
        if let Err(rejected) = conn.get(&buf[..len], Timed { result, key, due }) {
            rejected.fail();
        }
    }
}

/// Records, at the sink, the time since each record's intended arrival.
struct LatencySink {
    origin: Instant,
    hist: Histogram<u64>,
}

impl<In: 'static> Sink<u64, In> for LatencySink {
    type Output = Histogram<u64>;

    #[inline]
    fn accept(&mut self, item: Emitted<u64, In>) {
        if let Emitted::Record { value: due, .. } = item {
            let now = self.origin.elapsed().as_nanos() as u64;
            self.hist.saturating_record(now.saturating_sub(due).max(1));
        }
    }

    fn finish(&mut self) -> Result<Histogram<u64>, BoxError> {
        Ok(self.hist.clone())
    }
}

/// The ringwait side: the operator with the lookup function, fed by paced sources.
fn run_ringwait(
    cfg: &BenchConfig,
    opts: &RedisOptions,
    addr: SocketAddr,
    rate: f64,
    records: u64,
) -> Result<(Histogram<u64>, f64), BoxError> {
    let origin = Instant::now();
    let partitions = cfg.partitions.max(1) as u64;
    let period_ns = 1e9 / rate * partitions as f64;
    let opts = opts.clone();
    let report = pipeline(cfg)?.run(
        move |p| {
            Ok(PacedSource {
                next: p.index as u64,
                step: partitions,
                total: records,
                period_ns,
                origin,
                start_ns: None,
                k: 0,
            })
        },
        move |_p| {
            let opts = opts.clone();
            async move {
                Ok(PacedGet {
                    conns: connect_all(addr, &opts).await?,
                    next: Cell::new(0),
                })
            }
        },
        move |_p| {
            Ok(LatencySink {
                origin,
                hist: latency_histogram(),
            })
        },
    )?;
    let mut hist = latency_histogram();
    for h in report.outputs() {
        hist.add(h)
            .map_err(|e| format!("merging histograms: {e}"))?;
    }
    if hist.len() != records {
        return Err(format!("{} of {records} records came out", hist.len()).into());
    }
    Ok((hist, report.records_per_sec()))
}

/// The minimal client: one blocking connection, a writer thread sending each `GET` at its
/// intended time (those due together in one `write`) and a reader thread timing the replies
/// from those times.
fn run_raw(addr: SocketAddr, rate: f64, records: u64) -> Result<(Histogram<u64>, f64), BoxError> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let reader = stream.try_clone()?;
    let period_ns = 1e9 / rate;
    let start = Instant::now() + Duration::from_millis(5);
    let due = move |k: u64| start + Duration::from_nanos((k as f64 * period_ns) as u64);
    let sender = std::thread::spawn(move || send_paced(stream, records, due));
    let hist = read_replies(reader, records, due)?;
    sender
        .join()
        .map_err(|_| "raw client: the writer panicked")??;
    let secs = start.elapsed().as_secs_f64();
    Ok((hist, records as f64 / secs))
}

/// The raw client's writer: `GET k:<key_of(k)>` for record `k` at `due(k)`. Every request
/// due by the time the writer wakes goes in one write, as a careful client would send them:
/// at 10% of ringwait's maximum (140-250 k/s here) one `write` per request on a shared
/// 2-core machine fell behind the schedule, and the raw figures then measured the client's
/// own queue (p50 in the hundreds of milliseconds), not round trips.
fn send_paced(
    mut writer: TcpStream,
    records: u64,
    due: impl Fn(u64) -> Instant,
) -> std::io::Result<()> {
    let mut cmd = Vec::with_capacity(64 << 10);
    let mut key = [0u8; 24];
    let mut k = 0;
    while k < records {
        let at = due(k);
        loop {
            let now = Instant::now();
            if now >= at {
                break;
            }
            if at - now > Duration::from_micros(200) {
                std::thread::sleep(at - now - Duration::from_micros(100));
            } else {
                // Yield rather than spin: on a shared machine the server needs the core.
                std::thread::yield_now();
            }
        }
        let now = Instant::now();
        cmd.clear();
        while k < records && due(k) <= now && cmd.len() < 60 << 10 {
            let len = key_name(key_of(k), &mut key);
            let mut enc = crate::resp::CommandEncoder::begin(&mut cmd, 2);
            enc.arg(b"GET").arg(&key[..len]);
            enc.finish();
            k += 1;
        }
        writer.write_all(&cmd)?;
    }
    Ok(())
}

/// The raw client's reader: each reply checked against the expected value, its latency from
/// the request's due time recorded (coordinated-omission corrected).
fn read_replies(
    mut reader: TcpStream,
    records: u64,
    due: impl Fn(u64) -> Instant,
) -> Result<Histogram<u64>, BoxError> {
    let parser = crate::resp::Parser::new(crate::resp::Limits::default());
    let mut hist = latency_histogram();
    let mut rb = crate::net::read_buf::ReadBuf::new(1 << 16, 64 << 20);
    let mut k = 0u64;
    while k < records {
        while let Some((frame, used)) = parser.parse(&rb.buf[rb.start..rb.end])? {
            match frame {
                crate::resp::Frame::Bulk(v) if v == value_of(key_of(k)) => {}
                crate::resp::Frame::Nil => {}
                crate::resp::Frame::Bulk(_) => {
                    return Err(format!("raw client: wrong value for record {k}").into())
                }
                other => return Err(format!("raw client: unexpected reply {other:?}").into()),
            }
            rb.start += used;
            let now = Instant::now();
            hist.saturating_record(now.saturating_duration_since(due(k)).as_nanos() as u64);
            k += 1;
            if k == records {
                return Ok(hist);
            }
        }
        if !rb.make_room() {
            return Err("raw client: a reply larger than 64 MiB".into());
        }
        let n = reader
            .read(rb.spare())
            .map_err(|e| format!("raw client: read after {k} replies: {e}"))?;
        if n == 0 {
            return Err("raw client: the server closed the connection".into());
        }
        rb.end += n;
    }
    Ok(hist)
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1_000.0
}

/// Runs both sides against one target (started here unless `redis.redis` names one).
pub fn run_latency(
    cfg: &BenchConfig,
    redis: &RedisOptions,
    opts: &LatencyOptions,
) -> Result<LatencyRun, BoxError> {
    let rate = match opts.rate {
        Some(r) if r > 0.0 => r,
        Some(r) => return Err(format!("--rate {r}: must be above 0").into()),
        None => {
            let mut probe = cfg.clone();
            probe.mode = crate::OrderMode::Unordered;
            probe.records = 300_000;
            let max = run_redis(&probe, redis)?.result.records_per_s;
            0.1 * max
        }
    };
    let records = if cfg.records > 0 {
        cfg.records
    } else {
        ((rate * opts.duration.as_secs_f64()) as u64).max(1)
    };
    let target = Target::start(redis)?;
    let (ringwait, achieved) = run_ringwait(cfg, redis, target.addr, rate, records)?;
    let (raw, raw_rate) = run_raw(target.addr, rate, records)?;
    drop(target);
    let result = BenchResult::from_histogram("latency", cfg, records, achieved, &ringwait);
    let raw_line = format!(
        "workload=latency mode=- partitions=1 records={records} records_per_s={raw_rate:.1} \
         p50_us={:.3} p99_us={:.3} p999_us={:.3} max_us={:.3} impl=raw-loopback",
        us(&raw, 0.50),
        us(&raw, 0.99),
        us(&raw, 0.999),
        raw.max() as f64 / 1_000.0
    );
    // A raw client that could not keep the rate measured its own queue, not round trips:
    // then there is no difference to report (seen with an empty store, whose nil replies
    // let ringwait's probe reach 2.3 M lookups/s, 10% of which the raw client could not).
    let kept = raw_rate >= 0.9 * rate;
    if !kept {
        eprintln!(
            "ringwait bench: the raw loopback client reached {raw_rate:.0} of the {rate:.0} arrivals/s asked; added latency is not reported (give a lower --rate)"
        );
    }
    let added = |ringwait: f64, raw: f64| if kept { ringwait - raw } else { f64::NAN };
    let added_line = format!(
        "workload=latency mode={} partitions={} rate={rate:.0} added_p50_us={:.3} \
         added_p99_us={:.3} added_p999_us={:.3} added_max_us={:.3} raw_kept_rate={} impl=added",
        cfg.mode,
        cfg.partitions,
        added(result.p50_us, us(&raw, 0.50)),
        added(result.p99_us, us(&raw, 0.99)),
        added(result.p999_us, us(&raw, 0.999)),
        added(result.max_us, raw.max() as f64 / 1_000.0),
        if kept { "yes" } else { "no" },
    );
    Ok(LatencyRun {
        rate,
        ringwait,
        raw,
        result,
        raw_line,
        added_line,
    })
}
