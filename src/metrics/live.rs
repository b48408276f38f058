//! Live metrics: published by each partition's core while the pipeline runs, read from any
//! thread (the Prometheus endpoint of `enrich --metrics`, progress displays).
//!
//! Each gauge is one relaxed atomic written by exactly one core and read by others; there is
//! no invariant across gauges, so readers may see a mix of two publications (documented, and
//! harmless for monitoring). Cores publish every [`PUBLISH_EVERY`], not per record.

use std::time::Duration;

use crate::sync::Ordering;

#[cfg(loom)]
use loom::sync::atomic::AtomicU64;
#[cfg(not(loom))]
use std::sync::atomic::AtomicU64;

/// How often a partition publishes.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// Upper bounds of the time histograms' buckets (intake-to-emit latency, snapshot time), in
/// seconds (a `+Inf` bucket follows): 5 µs to 10 s, about three per decade.
pub const LATENCY_BUCKETS_S: [f64; 19] = [
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
    0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram as published: cumulative counts at [`LATENCY_BUCKETS_S`], the
/// count and the sum.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyBuckets {
    /// Latencies at or below each bound (cumulative).
    pub le: [u64; LATENCY_BUCKETS_S.len()],
    /// All latencies recorded.
    pub count: u64,
    /// Their sum, in nanoseconds.
    pub sum_ns: u64,
}

impl LatencyBuckets {
    /// Adds `other`'s counts (two connections' histograms, for one gauge).
    pub fn merge(&mut self, other: &LatencyBuckets) {
        for (a, b) in self.le.iter_mut().zip(other.le) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
    }

    /// The buckets of an HdrHistogram of nanoseconds.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        let mut b = LatencyBuckets {
            count: h.len(),
            sum_ns: (h.mean() * h.len() as f64) as u64,
            ..LatencyBuckets::default()
        };
        if h.is_empty() {
            return b;
        }
        // One pass over the recorded values (not a count_between, each a scan from 0, per
        // bound): a value counts at every bound at or above its bucket's lowest value, as
        // count_between(0, bound) counts it.
        let bounds = LATENCY_BUCKETS_S.map(|s| (s * 1e9) as u64);
        for v in h.iter_recorded() {
            let lowest = h.lowest_equivalent(v.value_iterated_to());
            if let Some(first) = bounds.iter().position(|&ns| lowest <= ns) {
                b.le[first] += v.count_at_value();
            }
        }
        for i in 1..b.le.len() {
            b.le[i] += b.le[i - 1];
        }
        b
    }
}

/// The published form of one [`LatencyBuckets`]: one relaxed atomic per value.
#[derive(Default, Debug)]
struct HistogramGauges {
    le: [AtomicU64; LATENCY_BUCKETS_S.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl HistogramGauges {
    fn load(&self) -> LatencyBuckets {
        let mut b = LatencyBuckets {
            count: self.count.load(Ordering::Relaxed),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
            ..LatencyBuckets::default()
        };
        for (v, g) in b.le.iter_mut().zip(&self.le) {
            *v = g.load(Ordering::Relaxed);
        }
        b
    }

    fn store(&self, b: &LatencyBuckets) {
        for (g, v) in self.le.iter().zip(b.le) {
            g.store(v, Ordering::Relaxed);
        }
        self.count.store(b.count, Ordering::Relaxed);
        self.sum_ns.store(b.sum_ns, Ordering::Relaxed);
    }
}

macro_rules! gauges {
    ($( $field:ident : $kind:ident, $help:literal; )*) => {
        /// The published gauges of one partition.
        #[derive(Default, Debug)]
        pub struct PartitionGauges {
            $( pub(crate) $field: AtomicU64, )*
            latency: HistogramGauges,
            snapshot: HistogramGauges,
            lookup_round_trip: HistogramGauges,
        }

        /// A plain copy of one partition's gauges.
        #[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
        pub struct PartitionSample {
            $( #[doc = $help] pub $field: u64, )*
            /// Intake-to-emit latency.
            pub latency: LatencyBuckets,
            /// Time a checkpoint's snapshot takes on the partition's core (encode, stage,
            /// pass the barrier; the flush runs on a helper thread).
            pub snapshot: LatencyBuckets,
            /// Round-trip times of the function's lookups, if it publishes them
            /// ([`AsyncFunction::publish`](crate::AsyncFunction::publish)).
            pub lookup_round_trip: LatencyBuckets,
        }

        impl PartitionGauges {
            /// Reads every gauge.
            pub fn sample(&self) -> PartitionSample {
                PartitionSample {
                    $( $field: self.$field.load(Ordering::Relaxed), )*
                    latency: self.latency.load(),
                    snapshot: self.snapshot.load(),
                    lookup_round_trip: self.lookup_round_trip.load(),
                }
            }

            /// Publishes `s` (one relaxed store per value).
            pub fn store(&self, s: &PartitionSample) {
                $( self.$field.store(s.$field, Ordering::Relaxed); )*
                self.latency.store(&s.latency);
                self.snapshot.store(&s.snapshot);
                self.lookup_round_trip.store(&s.lookup_round_trip);
            }
        }

        /// Every scalar family: name, kind, help, and how to read it from a sample.
        const FAMILIES: &[(&str, Kind, &str, fn(&PartitionSample) -> u64)] =
            &[ $( (stringify!($field), Kind::$kind, $help, |s| s.$field), )* ];
    };
}

/// How a scalar is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    /// A gauge kept in nanoseconds, exposed in seconds.
    GaugeNs,
}

gauges! {
    records_in: Counter, "Records taken from the input.";
    outputs: Counter, "Outputs emitted.";
    completions: Counter, "Completions accepted from result handles.";
    duplicates: Counter, "Completions ignored because the attempt was already complete.";
    late: Counter, "Completions ignored because the record had timed out, been retried or emitted.";
    timeouts: Counter, "Records whose timeout expired.";
    retries: Counter, "Retries started.";
    errors: Counter, "Records that finally failed (before the error policy).";
    skipped: Counter, "Failed records dropped by the skip policy.";
    side_outputs: Counter, "Failed records routed to the side output.";
    panics: Counter, "Panics caught in user code.";
    in_flight: Gauge, "Records waiting for a result.";
    occupancy: Gauge, "Entries held: in flight, done but not emitted, watermarks.";
    capacity: Gauge, "Configured capacity.";
    oldest_age: GaugeNs, "Age of the oldest entry held.";
    cache_hits: Counter, "Lookups answered by the partition's cache (values and remembered misses).";
    cache_misses: Counter, "Lookups the partition's cache could not answer.";
    lookup_coalesced: Counter, "GETs that shared the reply of an identical GET in flight.";
    lookup_mgets: Counter, "MGETs sent by batching.";
    lookup_mget_keys: Counter, "Keys carried by those MGETs.";
}

impl PartitionSample {
    /// The sample of an operator's metrics (the function's and the checkpoints' histograms
    /// empty: the runtime adds them).
    pub fn of(m: &super::OperatorMetrics) -> Self {
        PartitionSample {
            records_in: m.records_in,
            outputs: m.outputs,
            completions: m.completions,
            duplicates: m.duplicates,
            late: m.late,
            timeouts: m.timeouts,
            retries: m.retries,
            errors: m.errors,
            skipped: m.skipped,
            side_outputs: m.side_outputs,
            panics: m.panics,
            in_flight: m.in_flight,
            occupancy: m.occupancy,
            capacity: m.capacity,
            oldest_age: m.oldest_age_ns,
            latency: LatencyBuckets::of(&m.latency),
            ..PartitionSample::default()
        }
    }
}

/// The live metrics of every partition of a pipeline, and of the job around it.
///
/// ```
/// use ringwait::runtime::LiveMetrics;
/// let live = LiveMetrics::new(2);
/// assert_eq!(live.partition(1).sample().records_in, 0);
/// let text = live.render_prometheus();
/// assert!(text.contains("ringwait_records_in_total{partition=\"0\"} 0"));
/// assert!(text.contains("ringwait_latency_seconds_bucket{le=\"0.001\",partition=\"1\"} 0"));
/// ```
#[derive(Debug)]
pub struct LiveMetrics {
    partitions: Box<[PartitionGauges]>,
    lookup_misses: AtomicU64,
    /// A stream job's gauges, once it started.
    stream: std::sync::OnceLock<StreamGauges>,
    /// A Kafka job's gauges, once it started.
    kafka: std::sync::OnceLock<KafkaGauges>,
}

/// The gauges of a stream job (one instance: its consumer in the group), published by its
/// writer thread.
#[derive(Debug)]
pub struct StreamGauges {
    consumer: String,
    read: AtomicU64,
    acknowledged: AtomicU64,
    claimed: AtomicU64,
    duplicates: AtomicU64,
    unverified: AtomicU64,
    lag: AtomicU64,
    commit_latency: HistogramGauges,
}

/// A plain copy of a stream job's gauges.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSample {
    /// Entries read (claimed ones included).
    pub read: u64,
    /// Entries committed and acknowledged.
    pub acknowledged: u64,
    /// Entries claimed from other consumers.
    pub claimed: u64,
    /// Entries whose commit found them already committed.
    pub duplicates: u64,
    /// Entries committed although a client outside ringwait had acknowledged or claimed
    /// them (possible duplicates).
    pub unverified: u64,
    /// The group's lag: entries not yet delivered to any consumer.
    pub lag: u64,
    /// Commit round trips.
    pub commit_latency: LatencyBuckets,
}

impl StreamGauges {
    /// Publishes `s`.
    pub fn store(&self, s: &StreamSample) {
        self.read.store(s.read, Ordering::Relaxed);
        self.acknowledged.store(s.acknowledged, Ordering::Relaxed);
        self.claimed.store(s.claimed, Ordering::Relaxed);
        self.duplicates.store(s.duplicates, Ordering::Relaxed);
        self.unverified.store(s.unverified, Ordering::Relaxed);
        self.lag.store(s.lag, Ordering::Relaxed);
        self.commit_latency.store(&s.commit_latency);
    }

    fn sample(&self) -> StreamSample {
        StreamSample {
            read: self.read.load(Ordering::Relaxed),
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            claimed: self.claimed.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            unverified: self.unverified.load(Ordering::Relaxed),
            lag: self.lag.load(Ordering::Relaxed),
            commit_latency: self.commit_latency.load(),
        }
    }
}

/// The gauges of a Kafka job (one instance: its member of the group). The reader publishes
/// the counts and the lag, the writer the produce latency, each every few hundred
/// milliseconds (never per message).
#[derive(Debug)]
pub struct KafkaGauges {
    group: String,
    read: AtomicU64,
    delivered: AtomicU64,
    landed_before: AtomicU64,
    rebalances: AtomicU64,
    failed_commits: AtomicU64,
    /// Per owned input partition: (topic, partition, lag). A scrape and a publication
    /// meet here only, a few times a second.
    lag: std::sync::Mutex<Vec<(String, i32, i64)>>,
    produce_latency: HistogramGauges,
}

/// A plain copy of a Kafka job's counts.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaCounts {
    /// Messages read.
    pub read: u64,
    /// Outputs and side outputs delivered (acknowledged by the brokers).
    pub delivered: u64,
    /// Messages whose output was found already delivered (read back) and not produced again.
    pub landed_before: u64,
    /// Rebalances this instance went through.
    pub rebalances: u64,
    /// Offset commits that failed (a later one covered them).
    pub failed_commits: u64,
}

impl KafkaGauges {
    /// Publishes the counts.
    pub fn store_counts(&self, c: &KafkaCounts) {
        self.read.store(c.read, Ordering::Relaxed);
        self.delivered.store(c.delivered, Ordering::Relaxed);
        self.landed_before.store(c.landed_before, Ordering::Relaxed);
        self.rebalances.store(c.rebalances, Ordering::Relaxed);
        self.failed_commits
            .store(c.failed_commits, Ordering::Relaxed);
    }

    /// Publishes the lag of every partition this instance owns: (topic, partition, lag).
    pub fn store_lag(&self, lag: Vec<(String, i32, i64)>) {
        *self.lag.lock().unwrap_or_else(|e| e.into_inner()) = lag;
    }

    /// Publishes the produce latency (send to delivery report).
    pub fn store_produce_latency(&self, b: &LatencyBuckets) {
        self.produce_latency.store(b);
    }

    fn sample(&self) -> KafkaSample {
        KafkaSample {
            counts: KafkaCounts {
                read: self.read.load(Ordering::Relaxed),
                delivered: self.delivered.load(Ordering::Relaxed),
                landed_before: self.landed_before.load(Ordering::Relaxed),
                rebalances: self.rebalances.load(Ordering::Relaxed),
                failed_commits: self.failed_commits.load(Ordering::Relaxed),
            },
            lag: self.lag.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            produce_latency: self.produce_latency.load(),
        }
    }
}

/// One scrape of a Kafka job's gauges.
#[derive(Debug)]
struct KafkaSample {
    counts: KafkaCounts,
    lag: Vec<(String, i32, i64)>,
    produce_latency: LatencyBuckets,
}

impl LiveMetrics {
    /// Gauges for `partitions` partitions, all zero.
    pub fn new(partitions: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(LiveMetrics {
            partitions: (0..partitions)
                .map(|_| PartitionGauges::default())
                .collect(),
            lookup_misses: AtomicU64::new(0),
            stream: std::sync::OnceLock::new(),
            kafka: std::sync::OnceLock::new(),
        })
    }

    /// A Kafka job's gauges, labelled with its consumer group (the first call sets it).
    pub fn kafka(&self, group: &str) -> &KafkaGauges {
        self.kafka.get_or_init(|| KafkaGauges {
            group: group.to_string(),
            read: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            landed_before: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            lag: std::sync::Mutex::new(Vec::new()),
            produce_latency: HistogramGauges::default(),
        })
    }

    /// A stream job's gauges, labelled with its consumer name (the first call sets it).
    pub fn stream(&self, consumer: &str) -> &StreamGauges {
        self.stream.get_or_init(|| StreamGauges {
            consumer: consumer.to_string(),
            read: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unverified: AtomicU64::new(0),
            lag: AtomicU64::new(0),
            commit_latency: HistogramGauges::default(),
        })
    }

    /// Number of partitions.
    pub fn partitions(&self) -> usize {
        self.partitions.len()
    }

    /// One partition's gauges.
    pub fn partition(&self, index: usize) -> &PartitionGauges {
        &self.partitions[index]
    }

    /// Publishes the job's count of lookups that found nothing.
    pub fn set_lookup_misses(&self, misses: u64) {
        self.lookup_misses.store(misses, Ordering::Relaxed);
    }

    /// Everything in the OpenMetrics text format (which Prometheus scrapes), encoded by
    /// `prometheus-client`: one series per partition, counters ending in `_total`, times in
    /// seconds, the intake-to-emit latency as a histogram.
    pub fn render_prometheus(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Snapshot(self.snapshot())));
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }

    fn snapshot(&self) -> Scrape {
        Scrape {
            partitions: self.partitions.iter().map(|p| p.sample()).collect(),
            misses: self.lookup_misses.load(Ordering::Relaxed),
            stream: self.stream.get().map(|g| (g.consumer.clone(), g.sample())),
            kafka: self.kafka.get().map(|g| (g.group.clone(), g.sample())),
        }
    }
}

/// One scrape's values.
#[derive(Debug)]
struct Scrape {
    partitions: Vec<PartitionSample>,
    misses: u64,
    stream: Option<(String, StreamSample)>,
    kafka: Option<(String, KafkaSample)>,
}

/// Which histogram of a sample a family shows.
type HistogramOf = fn(&PartitionSample) -> &LatencyBuckets;

/// One scrape's values, encoded by prometheus-client.
#[derive(Debug)]
struct Snapshot(Scrape);

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::{EncodeMetric, NoLabelSet};
        use prometheus_client::metrics::MetricType;
        use prometheus_client::registry::Unit;
        let (samples, misses) = (&self.0.partitions, &self.0.misses);
        for (name, kind, help, read) in FAMILIES {
            let (metric_type, unit, name) = match kind {
                Kind::Counter => (MetricType::Counter, None, format!("ringwait_{name}")),
                Kind::Gauge => (MetricType::Gauge, None, format!("ringwait_{name}")),
                Kind::GaugeNs => (
                    MetricType::Gauge,
                    Some(&Unit::Seconds),
                    format!("ringwait_{name}"),
                ),
            };
            let mut family = encoder.encode_descriptor(&name, help, unit, metric_type)?;
            for (p, s) in samples.iter().enumerate() {
                let labels = [("partition", p.to_string())];
                let mut m = family.encode_family(&labels)?;
                let v = read(s);
                match kind {
                    Kind::Counter => m.encode_counter::<NoLabelSet, _, u64>(&v, None)?,
                    Kind::Gauge => m.encode_gauge(&v)?,
                    Kind::GaugeNs => m.encode_gauge(&(v as f64 / 1e9))?,
                }
            }
        }
        let histograms: [(&str, &str, HistogramOf); 3] = [
            ("ringwait_latency", "Latency from intake to emit.", |s| {
                &s.latency
            }),
            (
                "ringwait_snapshot",
                "Time a checkpoint's snapshot takes on the partition's core.",
                |s| &s.snapshot,
            ),
            (
                "ringwait_lookup_round_trip",
                "Round trip of a lookup: from the write of its request to the read of its reply.",
                |s| &s.lookup_round_trip,
            ),
        ];
        for (name, help, read) in histograms {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (p, s) in samples.iter().enumerate() {
                let labels = [("partition", p.to_string())];
                encode_buckets(family.encode_family(&labels)?, read(s))?;
            }
        }
        let counter = prometheus_client::metrics::counter::ConstCounter::new(*misses);
        let family = encoder.encode_descriptor(
            "ringwait_lookup_misses",
            "Lookups that found nothing (the field is null).",
            None,
            counter.metric_type(),
        )?;
        counter.encode(family)?;
        if let Some((consumer, s)) = &self.0.stream {
            encode_stream(&mut encoder, consumer, s)?;
        }
        if let Some((group, s)) = &self.0.kafka {
            encode_kafka(&mut encoder, group, s)?;
        }
        Ok(())
    }
}

/// One histogram of [`LATENCY_BUCKETS_S`] (seconds; sum in ns) into its family member.
fn encode_buckets(
    mut metric: prometheus_client::encoding::MetricEncoder<'_>,
    h: &LatencyBuckets,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::NoLabelSet;
    // The encoder sums the counts it is given, and writes `+Inf` for an infinite bound:
    // give it each bucket's own count, not the running totals `h.le` holds.
    let mut below = 0;
    let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_S
        .iter()
        .zip(h.le)
        .map(|(b, le)| (*b, le))
        .chain(std::iter::once((f64::INFINITY, h.count)))
        .map(|(b, le)| {
            let own = le.saturating_sub(below);
            below = below.max(le);
            (b, own)
        })
        .collect();
    metric.encode_histogram::<NoLabelSet>(h.sum_ns as f64 / 1e9, h.count, &buckets, None)
}

/// Counter families of one series each, all with `labels`: (name, help, value).
fn encode_counters(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder,
    labels: &[(&str, String)],
    counters: &[(&str, &str, u64)],
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::NoLabelSet;
    use prometheus_client::metrics::MetricType;
    for (name, help, v) in counters {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

/// A histogram family (seconds) of one series with `labels`.
fn encode_histogram(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder,
    labels: &[(&str, String)],
    name: &str,
    help: &str,
    h: &LatencyBuckets,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType;
    use prometheus_client::registry::Unit;
    let mut family =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    encode_buckets(family.encode_family(&labels)?, h)
}

/// A stream job's families, labelled with the consumer.
fn encode_stream(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder,
    consumer: &str,
    s: &StreamSample,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType;
    let labels = [("consumer", consumer.to_string())];
    let counters = [
        (
            "ringwait_stream_read",
            "Stream entries read (claimed ones included).",
            s.read,
        ),
        (
            "ringwait_stream_acknowledged",
            "Stream entries committed with their output and acknowledged.",
            s.acknowledged,
        ),
        (
            "ringwait_stream_claimed",
            "Stream entries claimed from other consumers' pending lists.",
            s.claimed,
        ),
        (
            "ringwait_stream_duplicates",
            "Stream entries whose commit found them already committed (nothing added).",
            s.duplicates,
        ),
        (
            "ringwait_stream_unverified",
            "Stream entries committed although no longer pending, acknowledged or claimed by a client outside the claim fence (their outputs were added: possible duplicates).",
            s.unverified,
        ),
    ];
    encode_counters(encoder, &labels, &counters)?;
    let mut family = encoder.encode_descriptor(
        "ringwait_stream_group_lag",
        "Entries in the input streams not yet delivered to any consumer of the group.",
        None,
        MetricType::Gauge,
    )?;
    family.encode_family(&labels)?.encode_gauge(&s.lag)?;
    encode_histogram(
        encoder,
        &labels,
        "ringwait_stream_commit",
        "Round trip of a commit: one script adding a batch's outputs and its progress.",
        &s.commit_latency,
    )?;
    Ok(())
}

/// A Kafka job's families, labelled with the group (and the lag with each partition).
fn encode_kafka(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder,
    group: &str,
    s: &KafkaSample,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType;
    let labels = [("group", group.to_string())];
    let c = &s.counts;
    let counters = [
        ("ringwait_kafka_read", "Kafka messages read.", c.read),
        (
            "ringwait_kafka_delivered",
            "Outputs and side outputs delivered to Kafka (acknowledged by the in-sync replicas).",
            c.delivered,
        ),
        (
            "ringwait_kafka_landed_before",
            "Messages whose output was found already delivered (read back) and not produced again.",
            c.landed_before,
        ),
        (
            "ringwait_kafka_rebalances",
            "Rebalances of the consumer group this instance went through.",
            c.rebalances,
        ),
        (
            "ringwait_kafka_failed_commits",
            "Offset commits that failed (a later commit covered them).",
            c.failed_commits,
        ),
    ];
    encode_counters(encoder, &labels, &counters)?;
    let mut family = encoder.encode_descriptor(
        "ringwait_kafka_lag",
        "Messages of an owned input partition not yet committed: its end, as the last fetch saw it, minus the committed offset.",
        None,
        MetricType::Gauge,
    )?;
    for (topic, partition, lag) in &s.lag {
        let labels = [
            ("group", group.to_string()),
            ("topic", topic.clone()),
            ("partition", partition.to_string()),
        ];
        family.encode_family(&labels)?.encode_gauge(lag)?;
    }
    encode_histogram(
        encoder,
        &labels,
        "ringwait_kafka_produce",
        "Produce latency: from the send of an output to its delivery report (one message in 64).",
        &s.produce_latency,
    )?;
    Ok(())
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    /// One core publishes while another thread samples: every gauge reads as its initial or
    /// its published value (never anything else), and everything published is visible after
    /// the join. The model publishes once.
    #[test]
    fn a_reader_sees_initial_or_published_values_and_the_last_after_join() {
        loom::model(|| {
            let live = loom::sync::Arc::new(LiveMetrics {
                partitions: vec![PartitionGauges::default()].into_boxed_slice(),
                lookup_misses: AtomicU64::new(0),
                stream: std::sync::OnceLock::new(),
                kafka: std::sync::OnceLock::new(),
            });
            let writer = live.clone();
            let published = PartitionSample {
                records_in: 7,
                outputs: 5,
                latency: LatencyBuckets {
                    count: 9,
                    ..LatencyBuckets::default()
                },
                ..PartitionSample::default()
            };
            let t = loom::thread::spawn(move || writer.partition(0).store(&published));
            // Three gauges, read directly: sampling all nineteen would make the model branch
            // 2^19 ways on which store each load sees, for no extra coverage.
            let gauges = live.partition(0);
            let seen = [
                gauges.records_in.load(Ordering::Relaxed),
                gauges.outputs.load(Ordering::Relaxed),
                gauges.latency.count.load(Ordering::Relaxed),
            ];
            assert!(seen[0] == 0 || seen[0] == 7, "{seen:?}");
            assert!(seen[1] == 0 || seen[1] == 5, "{seen:?}");
            assert!(seen[2] == 0 || seen[2] == 9, "{seen:?}");
            t.join().unwrap();
            assert_eq!(live.partition(0).sample(), published);
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_exposed_with_running_totals_ending_at_the_count() {
        let live = LiveMetrics::new(1);
        let mut h = crate::metrics::latency_histogram();
        for ns in [3_000u64, 3_000, 40_000, 2_000_000, 20_000_000_000] {
            h.saturating_record(ns);
        }
        let sample = PartitionSample {
            latency: LatencyBuckets::of(&h),
            ..PartitionSample::default()
        };
        live.partition(0).store(&sample);
        let text = live.render_prometheus();
        let bucket = |le: &str| {
            let key = format!("ringwait_latency_seconds_bucket{{le=\"{le}\",partition=\"0\"}} ");
            let line = text
                .lines()
                .find(|l| l.starts_with(&key))
                .unwrap_or_else(|| panic!("{key} in {text}"));
            line[key.len()..].parse::<u64>().unwrap()
        };
        assert_eq!(bucket("0.000005"), 2);
        assert_eq!(bucket("0.00005"), 3);
        assert_eq!(bucket("0.0025"), 4);
        assert_eq!(bucket("10.0"), 4);
        assert_eq!(bucket("+Inf"), 5, "the +Inf bucket is the count");
        assert!(text.contains("ringwait_latency_seconds_count{partition=\"0\"} 5"));
    }

    #[test]
    fn a_kafka_job_shows_its_counts_its_lag_per_partition_and_its_produce_latency() {
        let live = LiveMetrics::new(1);
        assert!(!live.render_prometheus().contains("ringwait_kafka"));
        let g = live.kafka("enrich");
        g.store_counts(&KafkaCounts {
            read: 10,
            delivered: 9,
            landed_before: 1,
            rebalances: 2,
            failed_commits: 0,
        });
        g.store_lag(vec![("orders".into(), 0, 5), ("orders".into(), 3, 0)]);
        let mut h = crate::metrics::latency_histogram();
        h.saturating_record(300_000);
        g.store_produce_latency(&LatencyBuckets::of(&h));
        let text = live.render_prometheus();
        for line in [
            "ringwait_kafka_read_total{group=\"enrich\"} 10",
            "ringwait_kafka_delivered_total{group=\"enrich\"} 9",
            "ringwait_kafka_landed_before_total{group=\"enrich\"} 1",
            "ringwait_kafka_rebalances_total{group=\"enrich\"} 2",
            "ringwait_kafka_lag{group=\"enrich\",topic=\"orders\",partition=\"0\"} 5",
            "ringwait_kafka_lag{group=\"enrich\",topic=\"orders\",partition=\"3\"} 0",
            "ringwait_kafka_produce_seconds_bucket{le=\"0.00025\",group=\"enrich\"} 0",
            "ringwait_kafka_produce_seconds_bucket{le=\"0.0005\",group=\"enrich\"} 1",
            "ringwait_kafka_produce_seconds_count{group=\"enrich\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        g.store_lag(vec![("orders".into(), 3, 7)]);
        let text = live.render_prometheus();
        assert!(
            !text.contains("partition=\"0\"} 5"),
            "a partition no longer owned goes"
        );
    }

    #[test]
    fn buckets_count_what_count_between_counts_at_every_bound() {
        let mut h = crate::metrics::latency_histogram();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // 1 ns .. ~17 s, spread over the decades the bounds cover.
            let v = 1 + (x % 1_000) * 10u64.pow((x >> 40) as u32 % 8);
            h.saturating_record(v);
        }
        for bound in LATENCY_BUCKETS_S {
            h.saturating_record((bound * 1e9) as u64); // values right at each bound
        }
        let b = LatencyBuckets::of(&h);
        for (le, bound) in b.le.iter().zip(LATENCY_BUCKETS_S) {
            assert_eq!(*le, h.count_between(0, (bound * 1e9) as u64), "le {bound}");
        }
        assert_eq!(b.count, h.len());
        assert_eq!(
            LatencyBuckets::of(&crate::metrics::latency_histogram()).le,
            [0; 19]
        );
    }
}
