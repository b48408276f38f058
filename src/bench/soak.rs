//! The soak workload: steady redis lookups (or overhead records) for a set time while the
//! process's resident memory (`/proc/self/statm`) and open descriptors (`/proc/self/fd`)
//! are sampled; flat means the last quarter's maximum is not above the first quarter's by
//! more than a small tolerance.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::redis::{RedisGet, RedisOptions, Target, VerifySink};
use super::workloads::pipeline;
use super::BenchConfig;
use crate::function::{from_fn, ResultFuture};
use crate::sink::CountingSink;
use crate::source::{BoxError, GeneratorSource, Source, SourceEvent};

/// One sample of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Milliseconds since the start.
    pub t_ms: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
}

/// Settings of a soak run.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// How long the load runs.
    pub duration: Duration,
    /// Time between samples.
    pub interval: Duration,
    /// Redis lookups (true) or the overhead function (false).
    pub redis: bool,
    /// Allowed RSS growth, last-quarter max over first-quarter max: this many KiB...
    pub rss_slack_kib: u64,
    /// ...or this fraction of the first-quarter max, whichever is larger.
    pub rss_slack_ratio: f64,
    /// Allowed growth of the descriptor count.
    pub fd_slack: u64,
}

impl SoakOptions {
    /// `duration` of redis load, a sample a second, 4 MiB or 5% RSS slack, 2 descriptors.
    pub fn new(duration: Duration) -> Self {
        SoakOptions {
            duration,
            interval: Duration::from_secs(1),
            redis: true,
            rss_slack_kib: 4096,
            rss_slack_ratio: 0.05,
            fd_slack: 2,
        }
    }
}

/// What a soak run saw.
#[derive(Clone, Debug)]
pub struct SoakReport {
    /// Records processed.
    pub records: u64,
    /// Records per second.
    pub records_per_s: f64,
    /// The samples, in order.
    pub samples: Vec<Sample>,
    /// Whether RSS and descriptors stayed flat.
    pub flat: bool,
    /// `(first-quarter max, last-quarter max)` RSS, KiB.
    pub rss: (u64, u64),
    /// `(first-quarter max, last-quarter max)` descriptors.
    pub fds: (u64, u64),
}

impl std::fmt::Display for SoakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "workload=soak records={} records_per_s={:.1} samples={} rss_first_kib={} \
             rss_last_kib={} fds_first={} fds_last={} verdict={} impl=ringwait",
            self.records,
            self.records_per_s,
            self.samples.len(),
            self.rss.0,
            self.rss.1,
            self.fds.0,
            self.fds.1,
            if self.flat { "flat" } else { "growing" }
        )
    }
}

/// The process now.
pub fn sample(t_ms: u64) -> Sample {
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page_kib = (page.max(4096) as u64) / 1024;
    let rss_kib = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_kib);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    Sample { t_ms, rss_kib, fds }
}

/// This partition's share of records `0, 1, ...` (a [`GeneratorSource`] without end) until
/// the deadline, which is checked every 1024 records.
struct UntilSource {
    records: GeneratorSource<fn(u64) -> u64>,
    deadline: Instant,
    taken: u64,
    ended: bool,
}

impl Source for UntilSource {
    type Item = u64;

    #[inline]
    fn next(&mut self) -> Result<SourceEvent<u64>, BoxError> {
        if self.ended {
            return Ok(SourceEvent::End);
        }
        if self.taken % 1024 == 0 && Instant::now() >= self.deadline {
            self.ended = true;
            return Ok(SourceEvent::End);
        }
        self.taken += 1;
        self.records.next()
    }

    fn position(&self) -> u64 {
        self.records.position()
    }
}

/// Runs the soak; the verdict is in the report (an error only if the run itself failed).
pub fn run_soak(
    cfg: &BenchConfig,
    redis: &RedisOptions,
    opts: &SoakOptions,
) -> Result<SoakReport, BoxError> {
    let target = if opts.redis {
        Some(Target::start(redis)?)
    } else {
        None
    };
    let start = Instant::now();
    let deadline = start + opts.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(vec![sample(0)]));
    let sampler = {
        let (stop, samples, interval) = (stop.clone(), samples.clone(), opts.interval);
        std::thread::spawn(move || {
            let mut next = start + interval;
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now >= next {
                    let s = sample(now.duration_since(start).as_millis() as u64);
                    samples.lock().expect("samples").push(s);
                    next += interval;
                } else {
                    std::thread::sleep((next - now).min(Duration::from_millis(50)));
                }
            }
        })
    };
    let source = move |p: &crate::runtime::PartitionContext| {
        Ok(UntilSource {
            records: GeneratorSource::new(p.index, p.partitions, u64::MAX, |i| i),
            deadline,
            taken: 0,
            ended: false,
        })
    };
    let result = match &target {
        Some(t) => {
            let (addr, redis) = (t.addr, redis.clone());
            pipeline(cfg)?
                .run(
                    source,
                    move |_p| {
                        let redis = redis.clone();
                        async move { Ok(RedisGet::connect(addr, &redis).await?) }
                    },
                    |_p| Ok(VerifySink::default()),
                )
                .map(|r| (r.merged.records_in, r.records_per_sec()))
        }
        None => pipeline(cfg)?
            .run(
                source,
                |_p| async {
                    Ok(from_fn(|x: &u64, r: ResultFuture<u64>| {
                        let _ = r.complete_one(*x);
                    }))
                },
                |_p| Ok(CountingSink::default()),
            )
            .map(|r| (r.merged.records_in, r.records_per_sec())),
    };
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    drop(target);
    let (records, records_per_s) = result?;
    let samples = samples.lock().expect("samples").clone();
    Ok(verdict(records, records_per_s, samples, opts))
}

/// Flat: the last quarter's maxima within the slack of the first quarter's (the very first
/// sample, before any load, is left out).
pub fn verdict(
    records: u64,
    records_per_s: f64,
    samples: Vec<Sample>,
    opts: &SoakOptions,
) -> SoakReport {
    let loaded = if samples.len() > 2 {
        &samples[1..]
    } else {
        &samples[..]
    };
    let q = loaded.len().div_ceil(4).max(1);
    let max = |s: &[Sample], f: fn(&Sample) -> u64| s.iter().map(f).max().unwrap_or(0);
    let first = &loaded[..q.min(loaded.len())];
    let last = &loaded[loaded.len().saturating_sub(q)..];
    let rss = (max(first, |s| s.rss_kib), max(last, |s| s.rss_kib));
    let fds = (max(first, |s| s.fds), max(last, |s| s.fds));
    let rss_slack = opts
        .rss_slack_kib
        .max((rss.0 as f64 * opts.rss_slack_ratio) as u64);
    let flat = rss.1 <= rss.0 + rss_slack && fds.1 <= fds.0 + opts.fd_slack;
    SoakReport {
        records,
        records_per_s,
        samples,
        flat,
        rss,
        fds,
    }
}
