//! Operator metrics: counters, gauges and an HdrHistogram of per-record latency.

pub mod live;

use hdrhistogram::Histogram;

/// Highest latency the histogram tracks (larger values are clamped), in nanoseconds.
pub const MAX_TRACKED_LATENCY_NS: u64 = 100_000_000_000;

/// A latency histogram in nanoseconds, 3 significant figures.
///
/// ```
/// let mut h = ringwait::metrics::latency_histogram();
/// h.saturating_record(1_500);
/// assert_eq!(h.len(), 1);
/// ```
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// A snapshot of one operator's metrics (one partition), or of several merged.
///
/// ```
/// use ringwait::metrics::OperatorMetrics;
/// let mut a = OperatorMetrics::default();
/// a.records_in = 3;
/// a.latency.saturating_record(1_000);
/// let mut b = OperatorMetrics::default();
/// b.records_in = 4;
/// a.merge(&b);
/// assert_eq!(a.records_in, 7);
/// assert_eq!(a.latency.len(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct OperatorMetrics {
    /// Records taken from the input.
    pub records_in: u64,
    /// Watermarks taken from the input.
    pub watermarks_in: u64,
    /// Outputs emitted (a record can produce 0..n outputs).
    pub outputs: u64,
    /// Records resolved (result, fallback, skip or side output).
    pub records_done: u64,
    /// Completions accepted from result handles (including those that led to a retry).
    pub completions: u64,
    /// Completions ignored because the attempt was already complete.
    pub duplicates: u64,
    /// Completions ignored because the record had timed out, been retried or been emitted.
    pub late: u64,
    /// Records whose timeout expired.
    pub timeouts: u64,
    /// Retries started.
    pub retries: u64,
    /// Records that finally failed (before the error policy).
    pub errors: u64,
    /// Failed records dropped by `ErrorPolicy::Skip`.
    pub skipped: u64,
    /// Failed records routed to the side output.
    pub side_outputs: u64,
    /// Panics caught in user code.
    pub panics: u64,
    /// Records waiting for a result now (gauge).
    pub in_flight: u64,
    /// Entries held now: in flight, done but not emitted, watermarks (gauge).
    pub occupancy: u64,
    /// Configured capacity (sum over partitions when merged).
    pub capacity: u64,
    /// Age of the oldest entry held, in nanoseconds (max over partitions when merged).
    pub oldest_age_ns: u64,
    /// Latency from intake to emit, in nanoseconds.
    pub latency: Histogram<u64>,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        OperatorMetrics {
            records_in: 0,
            watermarks_in: 0,
            outputs: 0,
            records_done: 0,
            completions: 0,
            duplicates: 0,
            late: 0,
            timeouts: 0,
            retries: 0,
            errors: 0,
            skipped: 0,
            side_outputs: 0,
            panics: 0,
            in_flight: 0,
            occupancy: 0,
            capacity: 0,
            oldest_age_ns: 0,
            latency: latency_histogram(),
        }
    }
}

impl OperatorMetrics {
    /// Adds another partition's metrics into this one.
    pub fn merge(&mut self, other: &OperatorMetrics) {
        self.records_in += other.records_in;
        self.watermarks_in += other.watermarks_in;
        self.outputs += other.outputs;
        self.records_done += other.records_done;
        self.completions += other.completions;
        self.duplicates += other.duplicates;
        self.late += other.late;
        self.timeouts += other.timeouts;
        self.retries += other.retries;
        self.errors += other.errors;
        self.skipped += other.skipped;
        self.side_outputs += other.side_outputs;
        self.panics += other.panics;
        self.in_flight += other.in_flight;
        self.occupancy += other.occupancy;
        self.capacity += other.capacity;
        self.oldest_age_ns = self.oldest_age_ns.max(other.oldest_age_ns);
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
    }

    /// Latency percentile `q` (0..=100) in microseconds.
    pub fn latency_us(&self, q: f64) -> f64 {
        self.latency.value_at_percentile(q) as f64 / 1_000.0
    }
}

/// Records latencies into a histogram, merging runs of equal values into one `record_n`:
/// records taken and emitted in the same batches share their latency, so the histogram costs
/// about one comparison per record instead of a full bucket update. Exact, not sampled.
#[derive(Clone, Debug)]
pub(crate) struct LatencyRecorder {
    hist: Histogram<u64>,
    value: u64,
    run: u64,
}

impl LatencyRecorder {
    pub(crate) fn new() -> Self {
        LatencyRecorder {
            hist: latency_histogram(),
            value: 0,
            run: 0,
        }
    }

    #[inline]
    pub(crate) fn record(&mut self, nanos: u64) {
        if nanos == self.value {
            self.run += 1;
        } else {
            self.flush();
            self.value = nanos;
            self.run = 1;
        }
    }

    /// Records `count` latencies of `nanos` each (a batch that left together).
    #[inline]
    pub(crate) fn record_n(&mut self, nanos: u64, count: u64) {
        if nanos == self.value {
            self.run += count;
        } else {
            self.flush();
            self.value = nanos;
            self.run = count;
        }
    }

    fn flush(&mut self) {
        if self.run > 0 {
            self.hist.saturating_record_n(self.value.max(1), self.run);
            self.run = 0;
        }
    }

    /// The published buckets (see [`live::LatencyBuckets`]), without copying the histogram.
    pub(crate) fn buckets(&mut self) -> live::LatencyBuckets {
        self.flush();
        live::LatencyBuckets::of(&self.hist)
    }

    /// The histogram including the current run and `extra` (`count` latencies of `nanos`
    /// not recorded yet).
    pub(crate) fn histogram_with(&self, (nanos, count): (u64, u64)) -> Histogram<u64> {
        let mut h = self.hist.clone();
        if self.run > 0 {
            h.saturating_record_n(self.value.max(1), self.run);
        }
        if count > 0 {
            h.saturating_record_n(nanos.max(1), count);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_equal_latencies_count_every_record() {
        let mut r = LatencyRecorder::new();
        for v in [5, 5, 5, 9, 9, 5, 0] {
            r.record(v);
        }
        let h = r.histogram_with((0, 0));
        assert_eq!(h.len(), 7);
        assert_eq!(h.count_at(5), 4);
        assert_eq!(h.count_at(9), 2);
        assert_eq!(
            h.count_at(1),
            1,
            "zero is clamped to the lowest trackable value"
        );
    }
}
