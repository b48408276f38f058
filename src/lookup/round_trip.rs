//! Round-trip times of a connection's requests, measured per write and per read rather than
//! per request: every request of one write shares its send time, every reply of one read its
//! arrival time, so the clock is read twice per batch, not per record.

use std::collections::VecDeque;
use std::time::Instant;

use crate::metrics::live::LatencyBuckets;
use crate::metrics::LatencyRecorder;

/// The sent batches not yet answered, and the histogram of round trips.
pub(crate) struct RoundTrips {
    /// (sequence number after the batch's last request, when the batch was written).
    sent: VecDeque<(u64, Instant)>,
    recorder: LatencyRecorder,
}

impl RoundTrips {
    pub fn new() -> Self {
        RoundTrips {
            sent: VecDeque::with_capacity(64),
            recorder: LatencyRecorder::new(),
        }
    }

    /// The requests before sequence number `end` were written at `at`.
    pub fn sent(&mut self, end: u64, at: Instant) {
        match self.sent.back_mut() {
            Some(last) if last.0 == end => last.1 = at,
            _ => self.sent.push_back((end, at)),
        }
    }

    /// The reply of request `seq` arrived at `at`.
    #[inline]
    pub fn answered(&mut self, seq: u64, at: Instant) {
        while self.sent.front().is_some_and(|(end, _)| *end <= seq) {
            self.sent.pop_front();
        }
        if let Some((_, sent_at)) = self.sent.front() {
            let nanos = at.saturating_duration_since(*sent_at).as_nanos() as u64;
            self.recorder.record(nanos);
        }
    }

    /// Forgets the unanswered batches (the connection was lost).
    pub fn reset(&mut self) {
        self.sent.clear();
    }

    /// The histogram as published.
    pub fn buckets(&mut self) -> LatencyBuckets {
        self.recorder.buckets()
    }

    /// A copy of the histogram (ns).
    pub fn histogram(&self) -> hdrhistogram::Histogram<u64> {
        self.recorder.histogram_with((0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_reply_is_timed_from_the_write_of_its_batch() {
        let mut r = RoundTrips::new();
        let t0 = Instant::now();
        r.sent(3, t0); // requests 0, 1, 2
        r.sent(5, t0 + Duration::from_micros(100)); // 3, 4
        let at = t0 + Duration::from_micros(300);
        for seq in 0..5 {
            r.answered(seq, at);
        }
        let b = r.buckets();
        assert_eq!(b.count, 5);
        // 3 x 300 µs + 2 x 200 µs
        let sum_us = b.sum_ns / 1000;
        assert!((1290..=1310).contains(&sum_us), "{sum_us}");
    }
}
