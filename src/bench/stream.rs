//! The stream workload: stream → `enrich` (built-in lookup) → stream, exactly once, against
//! the server's own ceiling for the same traffic, in the same run:
//!
//! - **ceiling**: one client reads the input with `XREADGROUP` (`COUNT` 1024) and writes each
//!   entry back with `XADD`, the writes and the next read pipelined in one round trip; no
//!   lookup, no acknowledgement, no exactly-once. It runs before and after the job, and the
//!   ratio is taken against the mean of the two, so that the machine's drift during a
//!   repetition (a shared 2-core machine) falls on both sides;
//! - **job**: `ringwait enrich --input redis-stream://… --output redis-stream://… --until
//!   caught-up` over the same entries (its own group);
//! - **latency**: the job running while a producer adds entries at 10% of the job's measured
//!   rate, each stamped with the time of its `XADD`; a reader of the output stream takes the
//!   time each becomes visible there. The figures are that difference (end to end).
//!
//! Each input entry is a ~100-byte record whose key the built-in store holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::connect::redis_stream::{BlockingConn, GroupStart, StreamUrl};
use crate::enrich::{EnrichConfig, Input, Output, StreamOptions};
use crate::lookup::RedisUrl;
use crate::resp::{encode_command, Frame, OwnedFrame};
use crate::source::BoxError;

use super::{BenchConfig, BenchResult, JobRun};

/// Keys of the stream workload (deleted before and after).
const IN: &str = "ringwait-bench:in";
const CEILING_OUT: &str = "ringwait-bench:ceiling-out";
const JOB_OUT: &str = "ringwait-bench:job-out";
const LAT_IN: &str = "ringwait-bench:latency-in";
const LAT_OUT: &str = "ringwait-bench:latency-out";

/// Entries per read (and per commit, for the job).
const BATCH: usize = 1024;

/// Runs the three parts against `redis` with `cfg.records` entries.
pub fn run_stream(cfg: &BenchConfig, redis: &RedisUrl) -> Result<JobRun, BoxError> {
    let records = cfg.records.max(1);
    let mut conn = BlockingConn::open(redis, Duration::from_secs(2))?;
    clear(&mut conn)?;
    load(&mut conn, IN, records)?;
    let before = ceiling(&mut conn, records, "ceiling")?;
    let started = Instant::now();
    let summary = crate::enrich::run(job_config(cfg, redis, IN, JOB_OUT, "job", true))?;
    let job_s = started.elapsed().as_secs_f64();
    let after = ceiling(&mut conn, records, "ceiling-after")?;
    let ceiling = (before + after) / 2.0;
    let job_rate = summary.records as f64 / job_s;
    if summary.records != records {
        return Err(format!("the job committed {} of {records} entries", summary.records).into());
    }
    let rate = (job_rate / 10.0).max(100.0);
    let latency = latency_run(cfg, redis, rate, records.min((rate * 3.0) as u64))?;
    clear(&mut conn)?;
    let result = BenchResult::from_histogram("stream", cfg, records, job_rate, &latency);
    let lines = vec![
        format!(
            "workload=stream part=ceiling records={records} records_per_s={ceiling:.1} \
             before={before:.1} after={after:.1} \
             what=XREADGROUP+XADD pipelined, no lookup, no exactly-once (mean of before and after the job)"
        ),
        format!(
            "workload=stream part=job records={records} records_per_s={job_rate:.1} \
             of_ceiling={:.2} (target >= 0.80)",
            job_rate / ceiling
        ),
        format!(
            "workload=stream part=latency rate={rate:.0} entries={} p50_us={:.1} p99_us={:.1} \
             p999_us={:.1} max_us={:.1} (XADD of the input to visible in the output)",
            latency.len(),
            result.p50_us,
            result.p99_us,
            result.p999_us,
            result.max_us
        ),
    ];
    Ok(JobRun {
        result,
        latency,
        lines,
    })
}

fn job_config(
    cfg: &BenchConfig,
    redis: &RedisUrl,
    input: &str,
    output: &str,
    group: &str,
    until: bool,
) -> EnrichConfig {
    let url = |stream: &str, group: Option<&str>| StreamUrl {
        server: redis.clone(),
        streams: vec![stream.to_string()],
        group: group.map(str::to_string),
        consumer: group.map(|_| "bench".to_string()),
        start: GroupStart::Beginning,
        maxlen: None,
    };
    super::enrich_job(
        cfg,
        Input::RedisStream(Box::new(url(input, Some(group)))),
        Output::RedisStream(Box::new(url(output, None))),
        StreamOptions {
            until_caught_up: until,
            batch: BATCH,
            ..StreamOptions::default()
        },
    )
}

/// Deletes the workload's keys.
fn clear(conn: &mut BlockingConn) -> Result<(), BoxError> {
    conn.call(&[
        b"DEL",
        IN.as_bytes(),
        CEILING_OUT.as_bytes(),
        JOB_OUT.as_bytes(),
        LAT_IN.as_bytes(),
        LAT_OUT.as_bytes(),
    ])?;
    Ok(())
}

/// A ~100-byte record like the enrich workload's, stamped with `t` (ns on the run's clock).
pub(super) fn record(i: u64, t: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    let key = crate::dataset::key_of(i) % 1_000_000;
    write!(
        out,
        "{{\"id\":{i},\"ts\":{t},\"sym\":\"SYM{:04}\",\"px\":100.00,\"qty\":1,\"side\":\"B\",\"key\":\"k:{key}\"}}",
        i % 10_000
    )
    .expect("writing to a Vec");
}

/// `XADD stream * data <record>` for `n` records, pipelined 10,000 at a time.
fn load(conn: &mut BlockingConn, stream: &str, n: u64) -> Result<(), BoxError> {
    let mut payload = Vec::with_capacity(128);
    let mut commands = Vec::with_capacity(1 << 20);
    let mut i = 0;
    while i < n {
        let end = (i + 10_000).min(n);
        commands.clear();
        for j in i..end {
            record(j, 0, &mut payload);
            encode_command(
                &mut commands,
                &[b"XADD", stream.as_bytes(), b"*", b"data", &payload],
            );
        }
        conn.send(&commands)?;
        for _ in i..end {
            conn.reply(|_| Ok(()))?;
        }
        i = end;
    }
    Ok(())
}

/// The server's ceiling for the traffic: entries per second moved from `IN` to
/// `CEILING_OUT` by one pipelined client reading through its own `group`.
fn ceiling(conn: &mut BlockingConn, records: u64, group: &str) -> Result<f64, BoxError> {
    conn.call(&[b"DEL", CEILING_OUT.as_bytes()])?;
    conn.call(&[b"XGROUP", b"CREATE", IN.as_bytes(), group.as_bytes(), b"0"])?;
    let count = BATCH.to_string();
    let read = |out: &mut Vec<u8>| {
        encode_command(
            out,
            &[
                b"XREADGROUP",
                b"GROUP",
                group.as_bytes(),
                b"c",
                b"COUNT",
                count.as_bytes(),
                b"STREAMS",
                IN.as_bytes(),
                b">",
            ],
        )
    };
    let started = Instant::now();
    let mut moved = 0u64;
    let mut writes = 0usize;
    let mut out = Vec::with_capacity(256 << 10);
    read(&mut out);
    conn.send(&out)?;
    loop {
        // The replies of the last round's XADDs, then the read that followed them.
        for _ in 0..writes {
            conn.reply(|_| Ok(()))?;
        }
        out.clear();
        let got = conn.reply(|frame| Ok(encode_writes(frame, &mut out)))?;
        if got == 0 {
            break;
        }
        moved += got as u64;
        writes = got;
        read(&mut out);
        conn.send(&out)?;
    }
    let rate = moved as f64 / started.elapsed().as_secs_f64();
    if moved != records {
        return Err(format!("the ceiling moved {moved} of {records} entries").into());
    }
    Ok(rate)
}

/// The `XADD`s that copy an `XREADGROUP` reply's entries to `CEILING_OUT`; how many.
fn encode_writes(frame: Frame<'_>, out: &mut Vec<u8>) -> usize {
    let Frame::Array(streams) = frame else {
        return 0;
    };
    let mut n = 0;
    for s in streams.iter() {
        let Frame::Array(pair) = s else { continue };
        let Some(Frame::Array(entries)) = pair.iter().nth(1) else {
            continue;
        };
        for e in entries.iter() {
            let Frame::Array(parts) = e else { continue };
            let mut parts = parts.iter();
            let (Some(id), Some(Frame::Array(fields))) = (parts.next(), parts.next()) else {
                continue;
            };
            let data = fields
                .iter()
                .nth(1)
                .and_then(|f| f.as_bytes())
                .unwrap_or(b"");
            encode_command(
                out,
                &[
                    b"XADD",
                    CEILING_OUT.as_bytes(),
                    b"*",
                    b"data",
                    data,
                    b"src",
                    id.as_bytes().unwrap_or(b""),
                ],
            );
            n += 1;
        }
    }
    n
}

/// The job running while `n` entries arrive at `rate` per second: each entry's time from
/// its `XADD` to its output's visibility.
fn latency_run(
    cfg: &BenchConfig,
    redis: &RedisUrl,
    rate: f64,
    n: u64,
) -> Result<Histogram<u64>, BoxError> {
    let clock = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut config = job_config(cfg, redis, LAT_IN, LAT_OUT, "latency", false);
    config.stream.batch = 64;
    config.stop = Some(stop.clone());
    // The group exists before the first entry, so the job reads every entry as it comes.
    let mut conn = BlockingConn::open(redis, Duration::from_secs(2))?;
    conn.call(&[
        b"XGROUP",
        b"CREATE",
        LAT_IN.as_bytes(),
        b"latency",
        b"$",
        b"MKSTREAM",
    ])?;
    let job = std::thread::spawn(move || crate::enrich::run(config));
    let reader_url = redis.clone();
    let reader = std::thread::spawn(move || watch_output(&reader_url, n, clock));
    std::thread::sleep(Duration::from_millis(200)); // the job connects
    let produced = produce(&mut conn, n, rate, clock);
    let seen = reader.join().expect("the output reader");
    stop.store(true, Ordering::Relaxed);
    let ran = job.join().expect("the job thread");
    produced?;
    ran?;
    seen
}

/// Adds `n` entries at `rate` per second, each stamped with the time it is sent.
fn produce(conn: &mut BlockingConn, n: u64, rate: f64, clock: Instant) -> Result<(), BoxError> {
    let mut payload = Vec::with_capacity(128);
    let mut out = Vec::new();
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let due = ((started.elapsed().as_secs_f64() * rate) as u64 + 1).min(n);
        out.clear();
        let batch = due.saturating_sub(sent);
        let t = clock.elapsed().as_nanos() as u64;
        for i in sent..due {
            record(i, t, &mut payload);
            encode_command(
                &mut out,
                &[b"XADD", LAT_IN.as_bytes(), b"*", b"data", &payload],
            );
        }
        if batch > 0 {
            conn.send(&out)?;
            for _ in 0..batch {
                conn.reply(|_| Ok(()))?;
            }
            sent = due;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Reads the output stream as entries appear (`XREAD BLOCK`) until `n` arrived; each
/// entry's latency is now minus its record's `ts`.
fn watch_output(redis: &RedisUrl, n: u64, clock: Instant) -> Result<Histogram<u64>, BoxError> {
    let mut conn = BlockingConn::open(redis, Duration::from_secs(2))?;
    let mut h = crate::metrics::latency_histogram();
    let mut last = "0-0".to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while h.len() < n {
        if Instant::now() > deadline {
            return Err(format!("only {} of {n} entries reached the output", h.len()).into());
        }
        let reply = conn.call(&[
            b"XREAD",
            b"COUNT",
            b"1000",
            b"BLOCK",
            b"100",
            b"STREAMS",
            LAT_OUT.as_bytes(),
            last.as_bytes(),
        ])?;
        let now = clock.elapsed().as_nanos() as u64;
        let OwnedFrame::Array(streams) = reply else {
            continue;
        };
        for s in streams {
            let OwnedFrame::Array(pair) = s else { continue };
            let Some(OwnedFrame::Array(entries)) = pair.get(1) else {
                continue;
            };
            for e in entries {
                let OwnedFrame::Array(parts) = e else {
                    continue;
                };
                if let Some(OwnedFrame::Bulk(id)) = parts.first() {
                    last = String::from_utf8_lossy(id).into_owned();
                }
                let Some(OwnedFrame::Array(fields)) = parts.get(1) else {
                    continue;
                };
                let Some(OwnedFrame::Bulk(data)) = fields.get(1) else {
                    continue;
                };
                if let Some(t) = stamp(data) {
                    h.saturating_record(now.saturating_sub(t).max(1));
                }
            }
        }
    }
    Ok(h)
}

/// The `"ts":N` of a record.
pub(super) fn stamp(data: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(data, b"\"ts\":")? + 5;
    let digits = data[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&data[at..at + digits])
        .ok()?
        .parse()
        .ok()
}
