//! Latency histograms on disk: the HdrHistogram "percentile distribution" text format
//! (`Value Percentile TotalCount 1/(1-Percentile)`, values in microseconds), which
//! HdrHistogram's plotters, `perf/run` and [`read_distribution`] read back.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::metrics::latency_histogram;

/// The percentile distribution of `h` (nanoseconds) in microseconds, 5 ticks per half
/// distance, as HdrHistogram's `outputPercentileDistribution` prints it.
///
/// ```
/// let mut h = ringwait::metrics::latency_histogram();
/// for v in 1..=1000u64 { h.saturating_record(v * 1_000); }
/// let text = ringwait::bench::hist::percentile_distribution(&h);
/// assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
/// let back = ringwait::bench::hist::read_distribution(&text).unwrap();
/// assert_eq!(back.len(), 1000);
/// let p99 = back.value_at_quantile(0.99) as f64;
/// assert!((p99 - 990_000.0).abs() < 10_000.0, "{p99}");
/// ```
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut s = String::new();
    s.push_str("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    if h.is_empty() {
        s.push_str("#[Mean    =        0.000, StdDeviation   =        0.000]\n");
        s.push_str("#[Max     =        0.000, Total count    =            0]\n");
        return s;
    }
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

/// A histogram (nanoseconds) rebuilt from a percentile distribution written by
/// [`percentile_distribution`] (or HdrHistogram with microsecond values): each row's new
/// count is recorded at its value. `None` if no row parses.
pub fn read_distribution(text: &str) -> Option<Histogram<u64>> {
    let mut h = latency_histogram();
    let mut last_total = 0u64;
    let mut rows = 0;
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 3 || line.trim_start().starts_with('#') {
            continue;
        }
        let (Ok(value_us), Ok(total)) = (cols[0].parse::<f64>(), cols[2].parse::<u64>()) else {
            continue;
        };
        rows += 1;
        let n = total.saturating_sub(last_total);
        last_total = last_total.max(total);
        if n > 0 {
            let _ = h.record_n((value_us * 1_000.0).round().max(1.0) as u64, n);
        }
    }
    (rows > 0).then_some(h)
}
