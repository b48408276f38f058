//! What a run of `enrich` reports: its records, the job's total across resumed runs, and
//! where the output is.

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;

pub use super::checkpoint::Resumed;
use super::output::WriterStats;
use crate::OrderMode;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The whole input was processed; the output is complete (and in place).
    Complete,
    /// A stop was requested (`EnrichConfig::stop`, e.g. SIGINT or SIGTERM): intake stopped,
    /// every record taken was finished and written, and, with checkpoints, a final
    /// checkpoint was committed. The output is incomplete and kept at `partial`.
    Stopped {
        /// Where the output so far is (not renamed over the output: the run is incomplete).
        partial: Option<PathBuf>,
        /// Where the side output so far is, if there is one.
        side_partial: Option<PathBuf>,
        /// Whether the same command resumes from here (checkpointed runs).
        resumable: bool,
    },
    /// A checkpointed job that had finished in an earlier run: nothing was done.
    AlreadyComplete,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct EnrichSummary {
    /// Input lines this run accounted for: written, skipped, side-output or blank (those resumed
    /// from a checkpoint are in [`resumed`](Self::resumed), not here).
    pub records: u64,
    /// What the writer wrote in this run.
    pub written: WriterStats,
    /// The checkpoint this run resumed from, with the records the output already held.
    pub resumed: Option<Resumed>,
    /// How the run ended.
    pub ending: Ending,
    /// Partitions used.
    pub partitions: usize,
    /// Order mode.
    pub mode: OrderMode,
    /// Wall time.
    pub elapsed: Duration,
    /// Records per second over the operators' active time.
    pub records_per_s: f64,
    /// Operator latency, intake to emit (ns).
    pub latency: Histogram<u64>,
    /// Timeouts.
    pub timeouts: u64,
    /// Retries started.
    pub retries: u64,
    /// Records that failed (before the error policy).
    pub errors: u64,
    /// What the lookup client did (Redis stores; `None` for the built-in store).
    pub lookups: Option<super::LookupStats>,
    /// What a stream input and output did (`None` for files).
    pub stream: Option<super::StreamStats>,
    /// What a Kafka input and output did (`None` otherwise).
    #[cfg(feature = "kafka")]
    pub kafka: Option<super::KafkaStats>,
}

impl EnrichSummary {
    /// Records the job's output accounts for across all its runs: the resumed ones plus
    /// this run's.
    pub fn total(&self) -> u64 {
        self.resumed.map_or(0, |r| r.records) + self.records
    }

    /// The summary of a checkpointed job found complete: `records` in its output.
    pub(crate) fn already_complete(records: u64, partitions: usize, mode: OrderMode) -> Self {
        EnrichSummary {
            records: 0,
            written: WriterStats::default(),
            resumed: Some(Resumed { epoch: 0, records }),
            ending: Ending::AlreadyComplete,
            partitions,
            mode,
            elapsed: Duration::ZERO,
            records_per_s: 0.0,
            latency: crate::metrics::latency_histogram(),
            timeouts: 0,
            retries: 0,
            errors: 0,
            lookups: None,
            stream: None,
            #[cfg(feature = "kafka")]
            kafka: None,
        }
    }
}

/// `  lookups: requests N, MGETs M (K keys each on average), coalesced C, cache hits H,
/// misses X; round trip µs: p50 .. p99 .. max ..`
fn lookup_line(f: &mut std::fmt::Formatter<'_>, l: &super::LookupStats) -> std::fmt::Result {
    write!(f, "\n  lookups: requests {}", l.requests)?;
    if l.mgets > 0 {
        write!(
            f,
            ", MGETs {} ({:.1} keys each)",
            l.mgets,
            l.mget_keys as f64 / l.mgets as f64
        )?;
    }
    write!(
        f,
        ", coalesced {}, cache hits {}, cache misses {}",
        l.coalesced, l.cache_hits, l.cache_misses
    )?;
    match &l.round_trips {
        Some(h) => percentiles(f, "round trip", h),
        None => Ok(()),
    }
}

/// `; WHAT µs: p50 ..  p99 ..  max ..` of a histogram of nanoseconds (nothing if empty).
fn percentiles(
    f: &mut std::fmt::Formatter<'_>,
    what: &str,
    h: &Histogram<u64>,
) -> std::fmt::Result {
    if h.is_empty() {
        return Ok(());
    }
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    write!(
        f,
        "; {what} µs: p50 {:.1}  p99 {:.1}  max {:.1}",
        us(0.5),
        us(0.99),
        h.max() as f64 / 1_000.0
    )
}

/// `  stream: consumer C, read N (claimed K), committed M, duplicates D, group lag L[,
/// unverified U …]; commit µs: p50 .. p99 ..`
fn stream_line(f: &mut std::fmt::Formatter<'_>, s: &super::StreamStats) -> std::fmt::Result {
    write!(
        f,
        "\n  stream: consumer {}, read {} (claimed {}), committed {}, duplicates {}, group lag {}",
        s.consumer, s.read, s.claimed, s.committed, s.duplicates, s.lag
    )?;
    if s.unverified > 0 {
        write!(
            f,
            ", unverified {} (no longer pending when committed, by a client outside the claim fence: possible duplicates)",
            s.unverified
        )?;
    }
    percentiles(f, "commit", &s.commit_latency)
}

/// `  kafka: read N, delivered M, landed before L, rebalances R, lag: T/P n, …; produce µs:
/// p50 .. p99 ..`
#[cfg(feature = "kafka")]
fn kafka_line(f: &mut std::fmt::Formatter<'_>, s: &super::KafkaStats) -> std::fmt::Result {
    write!(
        f,
        "\n  kafka: read {}, delivered {}, landed before {}, rebalances {}, lag:",
        s.read, s.delivered, s.landed_before, s.rebalances
    )?;
    if s.lag.is_empty() {
        write!(f, " none owned")?;
    }
    for (p, lag) in &s.lag {
        write!(f, " {p} {lag}")?;
    }
    percentiles(f, "produce", &s.produce_latency)
}

impl std::fmt::Display for EnrichSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ending == Ending::AlreadyComplete {
            return write!(
                f,
                "ringwait enrich: this job is already complete ({} records in its output); \
                 nothing to do. Remove its --checkpoint-dir to run it again.",
                self.total()
            );
        }
        writeln!(
            f,
            "ringwait enrich: {} records in {:.3} s ({:.0} records/s), {} partition(s), {}",
            self.records,
            self.elapsed.as_secs_f64(),
            self.records_per_s,
            self.partitions,
            self.mode
        )?;
        if let Some(r) = self.resumed {
            writeln!(
                f,
                "  resumed from checkpoint {} with {} records: {} + {} = {} records for this job",
                r.epoch,
                r.records,
                r.records,
                self.records,
                self.total()
            )?;
        }
        writeln!(
            f,
            "  latency µs: {}",
            crate::report::percentile_line(&self.latency)
        )?;
        write!(
            f,
            "  written {}, misses {}, timeouts {}, retries {}, errors {}, skipped {}, side-output {}, blank {}",
            self.written.lines,
            self.written.misses,
            self.timeouts,
            self.retries,
            self.errors,
            self.written.skipped,
            self.written.side_output,
            self.written.blank
        )?;
        if let Some(l) = &self.lookups {
            lookup_line(f, l)?;
        }
        if let Some(s) = &self.stream {
            stream_line(f, s)?;
        }
        #[cfg(feature = "kafka")]
        if let Some(s) = &self.kafka {
            kafka_line(f, s)?;
        }
        if let Ending::Stopped {
            partial,
            side_partial,
            resumable,
        } = &self.ending
        {
            write!(f, "\n  stopped on request before the end of the input")?;
            if let Some(p) = partial {
                write!(f, "; the output so far is in {}", p.display())?;
            }
            if let Some(p) = side_partial {
                write!(f, "; the side output so far is in {}", p.display())?;
            }
            if *resumable {
                write!(f, "; the same command resumes from the final checkpoint")?;
            }
        }
        Ok(())
    }
}
