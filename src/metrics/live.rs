//! Live metrics: published by each partition's core while the pipeline runs, read from any
//! thread (the Prometheus endpoint of `enrich --metrics`, progress displays).
//!
//! Each gauge is one relaxed atomic written by exactly one core and read by others; there is
//! no invariant across gauges, so readers may see a mix of two publications (documented, and
//! harmless for monitoring). Cores publish every [`PUBLISH_EVERY`], not per record.

use std::fmt::Write as _;
use std::time::Duration;

use crate::sync::Ordering;

#[cfg(loom)]
use loom::sync::atomic::AtomicU64;
#[cfg(not(loom))]
use std::sync::atomic::AtomicU64;

/// How often a partition publishes.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);

macro_rules! gauges {
    ($( $field:ident : $kind:literal, $help:literal; )*) => {
        /// The published gauges of one partition.
        #[derive(Default, Debug)]
        pub struct PartitionGauges {
            $( pub(crate) $field: AtomicU64, )*
        }

        /// A plain copy of one partition's gauges.
        #[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
        pub struct PartitionSample {
            $( #[doc = $help] pub $field: u64, )*
        }

        impl PartitionGauges {
            /// Reads every gauge.
            pub fn sample(&self) -> PartitionSample {
                PartitionSample { $( $field: self.$field.load(Ordering::Relaxed), )* }
            }

            /// Publishes `s` (one relaxed store per gauge).
            pub fn store(&self, s: &PartitionSample) {
                $( self.$field.store(s.$field, Ordering::Relaxed); )*
            }
        }

        const FAMILIES: &[(&str, &str, &str)] = &[ $( (stringify!($field), $kind, $help), )* ];

        fn gauge_value(s: &PartitionSample, name: &str) -> u64 {
            match name {
                $( stringify!($field) => s.$field, )*
                _ => 0,
            }
        }
    };
}

gauges! {
    records_in: "counter", "Records taken from the input.";
    outputs: "counter", "Outputs emitted.";
    completions: "counter", "Completions accepted from result handles.";
    duplicates: "counter", "Completions ignored because the attempt was already complete.";
    late: "counter", "Completions ignored because the record had timed out, been retried or emitted.";
    timeouts: "counter", "Records whose timeout expired.";
    retries: "counter", "Retries started.";
    errors: "counter", "Records that finally failed (before the error policy).";
    skipped: "counter", "Failed records dropped by the skip policy.";
    side_outputs: "counter", "Failed records routed to the side output.";
    panics: "counter", "Panics caught in user code.";
    in_flight: "gauge", "Records waiting for a result.";
    occupancy: "gauge", "Entries held: in flight, done but not emitted, watermarks.";
    capacity: "gauge", "Configured capacity.";
    oldest_age_ns: "gauge", "Age of the oldest entry held, in nanoseconds.";
    latency_p50_ns: "gauge", "Median latency from intake to emit, in nanoseconds.";
    latency_p99_ns: "gauge", "99th percentile latency from intake to emit, in nanoseconds.";
    latency_p999_ns: "gauge", "99.9th percentile latency from intake to emit, in nanoseconds.";
    latency_max_ns: "gauge", "Largest latency from intake to emit, in nanoseconds.";
}

/// The live metrics of every partition of a pipeline.
///
/// ```
/// use ringwait::runtime::LiveMetrics;
/// let live = LiveMetrics::new(2);
/// assert_eq!(live.partition(1).sample().records_in, 0);
/// assert!(live.render_prometheus().contains("ringwait_records_in_total{partition=\"0\"} 0"));
/// ```
#[derive(Debug)]
pub struct LiveMetrics {
    partitions: Box<[PartitionGauges]>,
}

impl LiveMetrics {
    /// Gauges for `partitions` partitions, all zero.
    pub fn new(partitions: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(LiveMetrics {
            partitions: (0..partitions)
                .map(|_| PartitionGauges::default())
                .collect(),
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

    /// Everything in the Prometheus text exposition format (version 0.0.4), one series per
    /// partition: counters end in `_total`.
    pub fn render_prometheus(&self) -> String {
        let samples: Vec<PartitionSample> = self.partitions.iter().map(|p| p.sample()).collect();
        let mut out = String::with_capacity(4096);
        for (name, kind, help) in FAMILIES {
            let metric = if *kind == "counter" {
                format!("ringwait_{name}_total")
            } else {
                format!("ringwait_{name}")
            };
            let _ = writeln!(out, "# HELP {metric} {help}");
            let _ = writeln!(out, "# TYPE {metric} {kind}");
            for (p, s) in samples.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{metric}{{partition=\"{p}\"}} {}",
                    gauge_value(s, name)
                );
            }
        }
        out
    }
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
            });
            let writer = live.clone();
            let published = PartitionSample {
                records_in: 7,
                outputs: 5,
                latency_max_ns: 9,
                ..PartitionSample::default()
            };
            let t = loom::thread::spawn(move || writer.partition(0).store(&published));
            // Three gauges, read directly: sampling all nineteen would make the model branch
            // 2^19 ways on which store each load sees, for no extra coverage.
            let gauges = live.partition(0);
            let seen = [
                gauges.records_in.load(Ordering::Relaxed),
                gauges.outputs.load(Ordering::Relaxed),
                gauges.latency_max_ns.load(Ordering::Relaxed),
            ];
            assert!(seen[0] == 0 || seen[0] == 7, "{seen:?}");
            assert!(seen[1] == 0 || seen[1] == 5, "{seen:?}");
            assert!(seen[2] == 0 || seen[2] == 9, "{seen:?}");
            t.join().unwrap();
            assert_eq!(live.partition(0).sample(), published);
        });
    }
}
