//! One partition of the baseline: `stream::iter(records)` → stamp intake → user's async fn →
//! `buffered(C)` / `buffer_unordered(C)` → consumer that records latency into an HdrHistogram.

use std::future::Future;
use std::time::Instant;

use futures::stream::{self, Stream, StreamExt};
use hdrhistogram::Histogram;

/// Output order of the operator under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `futures::StreamExt::buffered(C)`: outputs in input order.
    Ordered,
    /// `futures::StreamExt::buffer_unordered(C)`: outputs as they finish.
    Unordered,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Ordered => "ordered",
            Mode::Unordered => "unordered",
        }
    }
}

/// What one partition measured.
pub struct PartitionStats {
    /// Latency per record, intake → consumer, in nanoseconds.
    pub hist: Histogram<u64>,
    /// Outputs received by the consumer.
    pub records: u64,
    /// Earliest intake instant of the partition (None when it had no records).
    pub first_intake: Option<Instant>,
    /// Instant the consumer received the last output.
    pub last_emit: Option<Instant>,
    /// Outputs the check closure rejected (Redis errors or misses).
    pub bad: u64,
}

/// Latency histogram: 1 ns .. 1 h, 3 significant figures.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Runs one partition over `records`. `f` is the user's async function; it is called when the
/// stream pulls the record, right after the intake instant is taken. `ok` inspects each output
/// in the consumer and says whether it is a valid result.
pub async fn run_partition<I, F, Fut, T, C>(
    records: I,
    mode: Mode,
    capacity: usize,
    mut f: F,
    ok: C,
) -> PartitionStats
where
    I: Iterator<Item = u64>,
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = T>,
    C: FnMut(&T) -> bool,
{
    let source = stream::iter(records).map(move |i| {
        let intake = Instant::now();
        let fut = f(i);
        async move { (fut.await, intake) }
    });
    match mode {
        Mode::Ordered => consume(source.buffered(capacity), ok).await,
        Mode::Unordered => consume(source.buffer_unordered(capacity), ok).await,
    }
}

async fn consume<S, T, C>(mut outputs: S, mut ok: C) -> PartitionStats
where
    S: Stream<Item = (T, Instant)> + Unpin,
    C: FnMut(&T) -> bool,
{
    let mut stats = PartitionStats {
        hist: new_histogram(),
        records: 0,
        first_intake: None,
        last_emit: None,
        bad: 0,
    };
    while let Some((out, intake)) = outputs.next().await {
        let now = Instant::now();
        let ns = now.saturating_duration_since(intake).as_nanos();
        stats
            .hist
            .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
        if !ok(&out) {
            stats.bad += 1;
        }
        stats.records += 1;
        stats.first_intake = Some(stats.first_intake.map_or(intake, |f| f.min(intake)));
        stats.last_emit = Some(now);
    }
    stats
}

/// The merged result of all partitions.
pub struct Summary {
    pub hist: Histogram<u64>,
    pub records: u64,
    pub bad: u64,
    pub records_per_s: f64,
}

/// Merges partitions: histograms added, throughput = records / (last emit − first intake) over
/// all partitions.
pub fn merge(parts: Vec<PartitionStats>) -> Summary {
    let mut hist = new_histogram();
    let (mut records, mut bad) = (0, 0);
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    for p in parts {
        hist.add(&p.hist).expect("same histogram bounds");
        records += p.records;
        bad += p.bad;
        first = min_opt(first, p.first_intake);
        last = max_opt(last, p.last_emit);
    }
    let secs = match (first, last) {
        (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    let records_per_s = if secs > 0.0 {
        records as f64 / secs
    } else {
        0.0
    };
    Summary {
        hist,
        records,
        bad,
        records_per_s,
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Records of partition `p` out of `partitions`: every `i < total` with `i % partitions == p`.
pub fn partition_records(total: u64, partitions: u64, p: u64) -> impl Iterator<Item = u64> {
    (p..total).step_by(partitions as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_split_the_total_without_overlap() {
        let mut all: Vec<u64> = (0..3).flat_map(|p| partition_records(10, 3, p)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(partition_records(10, 3, 1).collect::<Vec<_>>(), [1, 4, 7]);
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn ordered_partition_emits_every_record_in_order() {
        let mut seen = Vec::new();
        let stats = block_on(run_partition(
            0..5000u64,
            Mode::Ordered,
            100,
            |x| async move { x },
            |x: &u64| {
                seen.push(*x);
                true
            },
        ));
        assert_eq!(stats.records, 5000);
        assert_eq!(stats.hist.len(), 5000);
        assert_eq!(seen, (0..5000).collect::<Vec<_>>());
        assert!(stats.first_intake.unwrap() <= stats.last_emit.unwrap());
    }

    #[test]
    fn unordered_delay_partition_emits_every_record_and_counts_bad_ones() {
        let stats = block_on(run_partition(
            0..300u64,
            Mode::Unordered,
            50,
            |x| async move {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                x
            },
            |x: &u64| !x.is_multiple_of(3),
        ));
        assert_eq!(stats.records, 300);
        assert_eq!(stats.bad, 100);
        // Every record slept at least 1 ms between intake and emit.
        assert!(stats.hist.min() >= 1_000_000);
        let s = merge(vec![stats]);
        assert_eq!(s.records, 300);
        assert!(s.records_per_s > 0.0);
    }
}
