//! What an operator tells about itself: its metrics, and the plain gauges the runtime
//! publishes for readers on other threads.

use super::*;

impl<F: AsyncFunction> AsyncWaitOperator<F> {
    /// The current metrics of this partition.
    pub fn metrics(&self, now: Nanos) -> OperatorMetrics {
        let ignored = self.board.ignored();
        let c = &self.counters;
        OperatorMetrics {
            records_in: c.records_in,
            watermarks_in: c.watermarks_in,
            outputs: c.outputs,
            records_done: c.records_done,
            completions: c.completions,
            duplicates: ignored.duplicates,
            late: ignored.late,
            timeouts: c.timeouts,
            retries: c.retries,
            errors: c.errors,
            skipped: c.skipped,
            side_outputs: c.side_outputs,
            panics: c.panics,
            in_flight: self.in_flight() as u64,
            occupancy: self.occupancy() as u64,
            capacity: self.config.capacity() as u64,
            oldest_age_ns: self.oldest_age(now),
            latency: self
                .latency
                .histogram_with((now.nanos_since(self.express.intake), self.express.count)),
        }
    }

    /// The current metrics of this partition as plain gauges, for readers on other threads
    /// (see [`crate::metrics::live`]): [`metrics`](Self::metrics), with the latency as
    /// published buckets. Called every [`crate::runtime::PUBLISH_EVERY`], not per record.
    pub fn sample(&mut self, now: Nanos) -> PartitionSample {
        self.settle(now);
        PartitionSample::of(&self.metrics(now))
    }

    /// Age of the oldest entry held (0 when empty).
    pub(super) fn oldest_age(&self, now: Nanos) -> u64 {
        self.slots
            .head(ListId::Order)
            .map(|h| now.nanos_since(self.slots.get(h).intake))
            .unwrap_or(0)
    }
}
