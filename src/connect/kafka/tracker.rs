//! What of an input partition may be committed: the offset below which every message read
//! is done (its output delivered, or nothing to deliver), whatever order they finished in.
//! A message still in flight holds the committed offset at itself (the hole), however many
//! after it are done.
//!
//! Beside that, [`OffsetTracker::readback_from`] keeps where on the output partitions (the
//! output and the side output) the outputs of messages at or after the committed offset can
//! be found: the start of the tail a later owner reads back to find what already landed.

use std::collections::VecDeque;

/// One input partition's done offsets past its committed offset.
#[derive(Debug, Clone)]
pub struct OffsetTracker {
    /// Every offset below is done: the offset to commit.
    base: i64,
    /// Done offsets at or after `base + 1`, as sorted, disjoint, non-adjacent ranges
    /// `[start, end)`, each with the lowest output offset delivered for it on each output
    /// (`i64::MAX`: none, e.g. a gap or a skipped message).
    ranges: VecDeque<Range>,
    /// Each output partition's end as far as deliveries showed it: every output not yet
    /// delivered lands at or after it.
    delivered_end: [i64; OUTPUTS],
}

/// The outputs a message's result can go to: the output (0) and the side output (1).
pub const OUTPUTS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: i64,
    end: i64,
    min_out: [i64; OUTPUTS],
}

impl OffsetTracker {
    /// A partition whose next message is at `start`, its output partitions ending at
    /// `output_ends`.
    pub fn new(start: i64, output_ends: [i64; OUTPUTS]) -> OffsetTracker {
        OffsetTracker {
            base: start,
            ranges: VecDeque::new(),
            delivered_end: output_ends,
        }
    }

    /// The offset to commit: every message before it is done.
    pub fn committable(&self) -> i64 {
        self.base
    }

    /// Where on the output partition a tail read finds every output of a message at or after
    /// [`committable`](Self::committable).
    pub fn readback_from(&self) -> [i64; OUTPUTS] {
        let mut from = self.delivered_end;
        for r in &self.ranges {
            for (f, m) in from.iter_mut().zip(r.min_out) {
                *f = (*f).min(m);
            }
        }
        from
    }

    /// Messages `[from, to)` are done with nothing delivered (a gap in the partition's
    /// offsets, or messages skipped).
    pub fn done_range(&mut self, from: i64, to: i64) {
        self.insert(from.max(self.base), to, [i64::MAX; OUTPUTS]);
    }

    /// The message at `offset` is done; its output (if any) was delivered on output `which`
    /// (0: the output, 1: the side output) at offset `at`.
    pub fn done(&mut self, offset: i64, output: Option<(usize, i64)>) {
        let mut min_out = [i64::MAX; OUTPUTS];
        if let Some((which, at)) = output {
            min_out[which] = at;
            self.delivered_end[which] = self.delivered_end[which].max(at + 1);
        }
        self.insert(offset, offset + 1, min_out);
    }

    fn insert(&mut self, start: i64, end: i64, min_out: [i64; OUTPUTS]) {
        if end <= start || end <= self.base {
            return;
        }
        let start = start.max(self.base);
        // The first range that ends at or after `start` (it may touch or overlap).
        let i = self.ranges.partition_point(|r| r.end < start);
        let mut new = Range {
            start,
            end,
            min_out,
        };
        while i < self.ranges.len() && self.ranges[i].start <= new.end {
            let r = self.ranges.remove(i).expect("in range");
            new.start = new.start.min(r.start);
            new.end = new.end.max(r.end);
            for (m, o) in new.min_out.iter_mut().zip(r.min_out) {
                *m = (*m).min(o);
            }
        }
        self.ranges.insert(i, new);
        if let Some(first) = self.ranges.front() {
            if first.start == self.base {
                self.base = first.end;
                self.ranges.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_hole_holds_the_committed_offset() {
        let mut t = OffsetTracker::new(10, [500, 70]);
        t.done(11, Some((0, 500)));
        t.done(12, Some((1, 70)));
        assert_eq!((t.committable(), t.readback_from()), (10, [500, 70]));
        t.done(10, Some((0, 502)));
        assert_eq!((t.committable(), t.readback_from()), (13, [503, 71]));
        // A gap in the offsets (compaction, transaction markers) is done with nothing.
        t.done_range(13, 20);
        t.done(21, None);
        assert_eq!(t.committable(), 20);
        t.done(20, Some((0, 503)));
        assert_eq!((t.committable(), t.readback_from()), (22, [504, 71]));
        // Old news changes nothing.
        t.done(5, Some((0, 1)));
        assert_eq!((t.committable(), t.readback_from()), (22, [504, 71]));
    }

    proptest! {
        /// Whatever order messages finish in, the committed offset is the first not done,
        /// and the readback start is at or below every delivered output past it.
        #[test]
        fn committable_is_the_first_hole(order in Just((0..60i64).collect::<Vec<_>>()).prop_shuffle(), cut in 0usize..60) {
            let mut t = OffsetTracker::new(0, [1000, 0]);
            let mut done = std::collections::BTreeMap::new();
            for (n, &o) in order.iter().take(cut).enumerate() {
                let out = 1000 + n as i64;
                t.done(o, Some((0, out)));
                done.insert(o, out);
                let first_hole = (0..).find(|x| !done.contains_key(x)).unwrap();
                prop_assert_eq!(t.committable(), first_hole);
                let past: Vec<i64> = done.range(first_hole..).map(|(_, v)| *v).collect();
                let bound = past.iter().copied().min().unwrap_or(1001 + n as i64);
                prop_assert!(t.readback_from()[0] <= bound);
            }
        }
    }
}
