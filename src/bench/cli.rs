//! `ringwait bench` options of the workloads added by the perf harness (redis, latency,
//! soak) and of the outputs shared by every workload; flattened into the `bench` command.

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::hist::{percentile_distribution, read_distribution};
use super::latency::{run_latency, LatencyOptions};
use super::redis::{run_redis, Measured, RedisOptions};
use super::soak::{run_soak, SoakOptions};
use super::workloads::{delay_report, overhead_report};
use super::{BenchConfig, BenchResult, Workload};
use crate::report::{percentile_chart, Series};
use crate::source::BoxError;

/// `--redis`: a store URL, or a bare `HOST:PORT` (as `redis://HOST:PORT`).
fn parse_store(s: &str) -> Result<crate::lookup::RedisUrl, String> {
    let url = if s.contains("://") {
        s.to_string()
    } else {
        format!("redis://{s}")
    };
    let url: crate::lookup::RedisUrl = url.parse().map_err(|e| format!("--redis: {e}"))?;
    if url.scheme == crate::lookup::Scheme::Cluster {
        return Err(format!(
            "{url}: bench reaches a single server (redis:// or rediss://)"
        ));
    }
    Ok(url.with_env_password())
}

/// Options of `ringwait bench` beyond the operator's.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PerfArgs {
    /// redis/latency/soak: a Redis loaded with k:0..k:999999 (`perf/baseline load`) instead
    /// of the embedded built-in server: a URL as `enrich --lookup` takes it,
    /// redis://USER:PASSWORD@HOST:PORT/DB (all but the host optional; REDIS_PASSWORD fills a
    /// missing password), or HOST:PORT.
    /// (Parsed by [`PerfArgs::redis_options`], not by clap, whose error would echo the
    /// argument, password included.)
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// kafka: the brokers, HOST:PORT[,HOST:PORT...]; the workload creates its topics (4
    /// partitions each) and deletes them after.
    #[arg(long, value_name = "BROKERS")]
    pub kafka: Option<String>,
    /// redis: connections per partition (requests go round-robin over them).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// redis: send the GETs of one tick as one MGET.
    #[arg(long)]
    pub mget: bool,
    /// redis: keys drawn Zipf(S) over the 1M keys (seeded, the same stream every run)
    /// instead of uniformly; S in (0, 1), e.g. 0.99.
    #[arg(long, value_name = "S")]
    pub zipf: Option<f64>,
    /// redis: coalesce GETs of a key already in flight.
    #[arg(long)]
    pub coalesce: bool,
    /// redis: the CA file (PEM) of a rediss:// --redis.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// redis: most keys in one batched MGET.
    #[arg(long, default_value_t = 128)]
    pub max_batch: usize,
    /// redis: pin the embedded server's thread to this CPU.
    #[arg(long, value_name = "CPU")]
    pub server_cpu: Option<usize>,
    /// Write the latency distribution (HdrHistogram percentile distribution text, values
    /// in µs; all repeats merged) to FILE.
    #[arg(long, value_name = "FILE")]
    pub hist_out: Option<PathBuf>,
    /// Write an SVG latency-percentile chart (all repeats merged) to FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,
    /// latency: arrivals per second over all partitions (default: 10% of the maximum
    /// measured first with 300k unordered lookups).
    #[arg(long)]
    pub rate: Option<f64>,
    /// latency: how long arrivals go on when --records is not given; soak: how long the
    /// load runs.
    #[arg(long, default_value_t = 5.0)]
    pub duration_s: f64,
    /// soak: load with the overhead function instead of redis lookups.
    #[arg(long)]
    pub soak_overhead: bool,
    /// Add NAME=FILE (a percentile distribution, e.g. another --hist-out) to the chart.
    #[arg(long, value_name = "NAME=FILE")]
    pub chart_with: Vec<String>,
}

impl PerfArgs {
    /// The redis options.
    pub fn redis_options(&self) -> Result<RedisOptions, BoxError> {
        let redis = self.redis.as_deref().map(parse_store).transpose()?;
        let rediss = redis
            .as_ref()
            .filter(|u| u.scheme == crate::lookup::Scheme::Rediss);
        if self.tls_ca.is_some() && rediss.is_none() {
            return Err("--tls-ca is for a TLS store: give --redis rediss://HOST:PORT".into());
        }
        if self.zipf.is_some_and(|s| !(s > 0.0 && s < 1.0)) {
            return Err("--zipf: S must be between 0 and 1 (exclusive), e.g. 0.99".into());
        }
        let tls = rediss
            .map(|u| u.tls_settings(self.tls_ca.as_deref()))
            .transpose()
            .map_err(|e| format!("--tls-ca: {e}"))?
            .flatten();
        Ok(RedisOptions {
            redis,
            connections: self.connections.max(1),
            mget_batching: self.mget,
            max_batch: self.max_batch.max(1),
            server_cpu: self.server_cpu,
            zipf: self.zipf,
            coalescing: self.coalesce,
            tls,
        })
    }

    /// Whether [`run`] handles `workload` with these options (else the plain loop does).
    pub fn handles(&self, workload: Workload) -> bool {
        match workload {
            Workload::Redis
            | Workload::Latency
            | Workload::Soak
            | Workload::Stream
            | Workload::Kafka => true,
            Workload::Checkpoint => false,
            Workload::Overhead | Workload::Delay => self.hist_out.is_some() || self.chart.is_some(),
        }
    }
}

/// Runs `repeat` times, printing one line each.
pub fn run(cfg: &BenchConfig, args: &PerfArgs, repeat: usize) -> Result<(), BoxError> {
    if cfg.workload == Workload::Soak {
        return soak(cfg, args);
    }
    let mut runs = Runs::default();
    for _ in 0..repeat.max(1) {
        let m = measure(cfg, args)?;
        print_run(&m);
        runs.add(m)?;
    }
    let all = runs.all.expect("at least one run");
    if let Some(path) = &args.hist_out {
        write(path, &percentile_distribution(&all))?;
    }
    if let Some(path) = &args.chart {
        write_chart(cfg, args, path, &all, runs.extra, &runs.lines)?;
    }
    Ok(())
}

fn soak(cfg: &BenchConfig, args: &PerfArgs) -> Result<(), BoxError> {
    let mut opts = SoakOptions::new(Duration::from_secs_f64(args.duration_s.max(0.001)));
    opts.redis = !args.soak_overhead;
    let report = run_soak(cfg, &args.redis_options()?, &opts)?;
    for s in &report.samples {
        println!(
            "soak t_s={:.1} rss_kib={} fds={}",
            s.t_ms as f64 / 1000.0,
            s.rss_kib,
            s.fds
        );
    }
    println!("{report}");
    if report.flat {
        Ok(())
    } else {
        Err("RSS or descriptors grew during the soak".into())
    }
}

/// One run's result lines (and the redis client's counters, on stderr).
fn print_run(m: &Measured) {
    println!("{}", m.result);
    if let Some(v) = &m.verified {
        use std::sync::atomic::Ordering::Relaxed;
        let [r, w] = &super::redis::REQUESTS_WRITES;
        let (r, w) = (r.swap(0, Relaxed), w.swap(0, Relaxed));
        eprintln!(
            "redis: hits={} misses={} requests={r} writes={w} requests_per_write={:.1}",
            v.hits,
            v.misses,
            r as f64 / w.max(1) as f64
        );
    }
    for l in &m.extra_lines {
        println!("{l}");
    }
}

/// The repeated runs merged: one latency histogram, extra series by name, every line.
#[derive(Default)]
struct Runs {
    all: Option<Histogram<u64>>,
    extra: Vec<(String, Histogram<u64>)>,
    lines: Vec<String>,
}

impl Runs {
    fn add(&mut self, m: Measured) -> Result<(), BoxError> {
        let merge = |into: &mut Histogram<u64>, h: &Histogram<u64>| {
            into.add(h).map_err(|e| format!("merging histograms: {e}"))
        };
        self.lines.push(m.result.to_string());
        self.lines.extend(m.extra_lines.iter().cloned());
        for (name, h) in m.extra_series {
            match self.extra.iter_mut().find(|(n, _)| *n == name) {
                Some((_, all)) => merge(all, &h)?,
                None => self.extra.push((name, h)),
            }
        }
        match &mut self.all {
            Some(all) => merge(all, &m.latency)?,
            None => self.all = Some(m.latency),
        }
        Ok(())
    }
}

/// The percentile chart: ringwait's latency, the runs' extra series, and `--chart-with`.
fn write_chart(
    cfg: &BenchConfig,
    args: &PerfArgs,
    path: &std::path::PathBuf,
    all: &Histogram<u64>,
    mut others: Vec<(String, Histogram<u64>)>,
    lines: &[String],
) -> Result<(), BoxError> {
    for spec in &args.chart_with {
        let (name, file) = spec
            .split_once('=')
            .ok_or_else(|| format!("--chart-with {spec:?}: use NAME=FILE"))?;
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("--chart-with: cannot read {file}: {e}"))?;
        let h = read_distribution(&text)
            .ok_or_else(|| format!("--chart-with: {file} holds no percentile distribution"))?;
        others.push((name.to_string(), h));
    }
    let mut series = vec![Series {
        name: "ringwait",
        histogram: all,
    }];
    series.extend(others.iter().map(|(name, h)| Series { name, histogram: h }));
    let title = format!(
        "{} {} P={} latency (µs) by percentile",
        cfg.workload, cfg.mode, cfg.partitions
    );
    write(path, &percentile_chart(&title, &series, lines))
}

fn write(path: &PathBuf, text: &str) -> Result<(), BoxError> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

fn measure(cfg: &BenchConfig, args: &PerfArgs) -> Result<Measured, BoxError> {
    match cfg.workload {
        Workload::Soak => Err("soak is run by run".into()),
        Workload::Checkpoint => Err("checkpoint prints its own lines; it has no histogram".into()),
        Workload::Redis => run_redis(cfg, &args.redis_options()?),
        Workload::Stream => {
            let redis = args.redis_options()?.redis.ok_or(
                "stream: give --redis redis://HOST:PORT, a Redis server with streams (the built-in store has none)",
            )?;
            Ok(super::stream::run_stream(cfg, &redis)?.into())
        }
        #[cfg(feature = "kafka")]
        Workload::Kafka => {
            let brokers = args
                .kafka
                .as_deref()
                .ok_or("kafka: give --kafka HOST:PORT, a Kafka broker")?;
            Ok(super::kafka::run_kafka(cfg, brokers)?.into())
        }
        #[cfg(not(feature = "kafka"))]
        Workload::Kafka => {
            Err("kafka: this build has no Kafka support (the `kafka` feature)".into())
        }
        Workload::Latency => {
            let opts = LatencyOptions {
                rate: args.rate,
                duration: Duration::from_secs_f64(args.duration_s.max(0.001)),
            };
            let redis = args.redis_options()?;
            if redis.tls.is_some() || redis.redis.as_ref().is_some_and(|u| u.auth.is_some()) {
                return Err(
                    "latency: its raw round-trip client speaks plain TCP without AUTH; \
                     give --redis redis://HOST:PORT"
                        .into(),
                );
            }
            let run = run_latency(cfg, &redis, &opts)?;
            Ok(Measured {
                result: run.result,
                latency: run.ringwait,
                verified: None,
                extra_lines: vec![run.raw_line, run.added_line],
                extra_series: vec![("raw loopback client".into(), run.raw)],
            })
        }
        Workload::Overhead => {
            let report = overhead_report(cfg)?;
            Ok(Measured {
                result: BenchResult::from_report("overhead", cfg.mode, &report),
                latency: report.merged.latency.clone(),
                verified: None,
                extra_lines: Vec::new(),
                extra_series: Vec::new(),
            })
        }
        Workload::Delay => {
            let report = delay_report(cfg)?;
            Ok(Measured {
                result: BenchResult::from_report("delay", cfg.mode, &report),
                latency: report.merged.latency.clone(),
                verified: None,
                extra_lines: Vec::new(),
                extra_series: Vec::new(),
            })
        }
    }
}
