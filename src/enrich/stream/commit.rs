//! The committer: the writer's side of a stream output. Results gather in a batch; a full
//! batch (or the writer going idle) leaves as one commit, which adds each entry's output and
//! commits its progress atomically (see the [module docs](super)): a watched transaction
//! for a batch read fresh, else the [commit script](crate::connect::redis_stream::SCRIPT)
//! (see [`CommitPipeline`]). Up to [`WINDOW`] batches are in flight at once; their replies
//! are read in order. A lost connection is reopened and every batch whose reply did not
//! arrive is sent again as the script, which adds nothing for an entry already committed,
//! so resending is safe.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{StreamCounters, StreamPlan};
use crate::connect::redis_stream::{
    guard_key, BlockingConn, CommitBatch, CommitMode, CommitPipeline, CommitRecord, EncodedBatch,
    Kind, StreamConnError,
};
use crate::enrich::intake::Intake;
use crate::enrich::record::Line;
use crate::enrich::EnrichError;

/// Batches in flight before the writer waits for the oldest one's reply.
pub(crate) const WINDOW: usize = 4;

/// The writer's committer for a stream output.
pub(crate) struct StreamCommitter {
    plan: Arc<StreamPlan>,
    intake: Arc<Intake>,
    conn: BlockingConn,
    /// Two-server commits: the input's server, for `XACK`.
    acks_conn: Option<BlockingConn>,
    /// The batch being built.
    batch: CommitBatch,
    /// A commit failed for good: nothing more is sent or acknowledged.
    poisoned: bool,
    /// Since when the output's server has been unreachable (or answering LOADING, BUSY…).
    down_since: Option<Instant>,
    /// The batches sent and not yet answered.
    pipeline: CommitPipeline,
    counters: Arc<StreamCounters>,
    /// Commit round trips since the last [`publish`](Self::publish) (for the summary).
    latency: hdrhistogram::Histogram<u64>,
    /// `--metrics`: the gauges, every commit round trip of the run, and when they were last
    /// published.
    live: Option<(
        Arc<crate::metrics::live::LiveMetrics>,
        hdrhistogram::Histogram<u64>,
        Instant,
    )>,
}

impl StreamCommitter {
    /// Connects to the output's server (and the input's, for two-server commits).
    pub fn open(
        plan: Arc<StreamPlan>,
        intake: Arc<Intake>,
        counters: Arc<StreamCounters>,
        live: Option<Arc<crate::metrics::live::LiveMetrics>>,
    ) -> Result<StreamCommitter, EnrichError> {
        let mut conn = plan.connect_output(&intake)?;
        let t = &plan.target;
        let (acks_conn, guard) = match t.mode {
            CommitMode::Ack => (None, Some(guard_key(&t.inputs, &t.group, &t.consumer))),
            CommitMode::Progress(_) => (Some(plan.connect_input(&intake)?), None),
        };
        let watch = guard.is_some();
        let pipeline = CommitPipeline::open(&mut conn, guard).map_err(|e| {
            EnrichError::Stream(format!("committing to --output {}: {e}", plan.output))
        })?;
        if watch && !pipeline.watching() {
            eprintln!("ringwait enrich: warning: the output's server refuses WATCH, MULTI, EXEC or SET on the commit guard (an ACL?): every batch is committed by the commit script, which costs the server more per entry");
        }
        Ok(StreamCommitter {
            plan,
            intake,
            conn,
            acks_conn,
            batch: CommitBatch::default(),
            poisoned: false,
            down_since: None,
            pipeline,
            counters,
            latency: crate::metrics::latency_histogram(),
            live: live.map(|l| (l, crate::metrics::latency_histogram(), Instant::now())),
        })
    }

    /// Adds a record's result to the batch: its output `data`, an error entry (`data` is
    /// then the payload as it came, `error` why), or only its progress. A full batch leaves.
    pub fn add(
        &mut self,
        line: &Line,
        kind: Kind,
        data: &[u8],
        error: &str,
    ) -> Result<(), EnrichError> {
        let (stream, fence, id) = super::origin::read(line.origin()).ok_or_else(|| {
            EnrichError::Stream(format!("record {} has no stream origin", line.number))
        })?;
        let record = CommitRecord {
            stream,
            id,
            kind,
            data,
            error,
            fence,
        };
        self.batch.add(&self.plan.target, record);
        if self.batch.len() >= self.plan.commit_batch {
            self.send_batch()?;
        }
        Ok(())
    }

    /// `STREAM/ID`: the entry a record came from, for messages.
    pub fn describe(&self, line: &Line) -> String {
        match super::origin::read(line.origin()) {
            Some((k, _, id)) => format!(
                "{}/{}",
                self.plan.input.streams[k],
                String::from_utf8_lossy(id)
            ),
            None => format!("record {}", line.number),
        }
    }

    /// Sends the batch being built and waits for every batch in flight.
    pub fn flush(&mut self) -> Result<(), EnrichError> {
        if self.poisoned {
            return Ok(());
        }
        self.send_batch()?;
        while !self.pipeline.is_empty() {
            self.receive_one()?;
        }
        self.publish();
        self.publish_live();
        Ok(())
    }

    /// Sends the batch being built (if any); waits for the oldest reply past [`WINDOW`].
    fn send_batch(&mut self) -> Result<(), EnrichError> {
        if self.batch.is_empty() || self.poisoned {
            return Ok(());
        }
        let batch = self.batch.take(&self.plan.target);
        match self.pipeline.send(&mut self.conn, batch) {
            Ok(()) => {}
            Err(e) if e.is_connection() => return self.recover(e),
            Err(e) => {
                self.poisoned = true;
                self.pipeline.clear();
                return Err(self.fatal(e));
            }
        }
        while self.pipeline.len() > WINDOW {
            self.receive_one()?;
        }
        Ok(())
    }

    /// Reads the oldest batch's reply (and, on two servers, acknowledges its entries).
    fn receive_one(&mut self) -> Result<(), EnrichError> {
        let sent = match self.pipeline.receive(&mut self.conn) {
            Ok(sent) => sent,
            Err(e) if e.is_connection() => return self.recover(e),
            Err(e) => {
                // Nothing more is committed or acknowledged: the batches in flight (whose
                // replies would now be read against the wrong batch) are dropped, and their
                // entries stay pending for the next run.
                self.poisoned = true;
                self.pipeline.clear();
                return Err(self.fatal(e));
            }
        };
        let counts = sent.counts;
        self.down_since = None;
        let ns = sent.sent_at.elapsed().as_nanos() as u64;
        self.latency.saturating_record(ns.max(1));
        if let Some((_, all, _)) = self.live.as_mut() {
            all.saturating_record(ns.max(1));
        }
        if sent.batch.ack_count > 0 {
            self.acknowledge(&sent.batch)?;
        }
        self.batch.recycle(sent.batch);
        self.counters
            .committed
            .fetch_add(counts.committed, Ordering::Relaxed);
        self.counters
            .duplicates
            .fetch_add(counts.duplicates, Ordering::Relaxed);
        if counts.unverified > 0 {
            self.counters
                .unverified
                .fetch_add(counts.unverified, Ordering::Relaxed);
            eprintln!(
                "ringwait enrich: warning: {} entries of a batch were no longer pending in group {:?} when committed, though no ringwait claim ran since they were read: a client other than this ringwait (another tool, an older ringwait) acknowledged or claimed them, the group was reset, or the claim fence key was evicted. Their outputs were added; they may be duplicates",
                counts.unverified, self.plan.group
            );
        }
        if self
            .live
            .as_ref()
            .is_some_and(|(_, _, at)| at.elapsed() >= crate::metrics::live::PUBLISH_EVERY)
        {
            self.publish_live();
        }
        Ok(())
    }

    /// `--metrics`: publishes the stream gauges.
    fn publish_live(&mut self) {
        let Some((live, all, at)) = self.live.as_mut() else {
            return;
        };
        let c = &self.counters;
        live.stream(&self.plan.consumer)
            .store(&crate::metrics::live::StreamSample {
                read: c.read.load(Ordering::Relaxed),
                acknowledged: c.committed.load(Ordering::Relaxed),
                claimed: c.claimed.load(Ordering::Relaxed),
                duplicates: c.duplicates.load(Ordering::Relaxed),
                unverified: c.unverified.load(Ordering::Relaxed),
                lag: c.lag.load(Ordering::Relaxed),
                commit_latency: crate::metrics::live::LatencyBuckets::of(all),
            });
        *at = Instant::now();
    }

    /// Two-server commits: `XACK` on the input's server, retried through reconnects (the
    /// entries are committed; until acknowledged they stay pending and would be read again
    /// and found committed).
    fn acknowledge(&mut self, sent: &EncodedBatch) -> Result<(), EnrichError> {
        loop {
            let conn = self.acks_conn.as_mut().expect("two-server commits");
            match sent.acknowledge(conn) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_connection() => {
                    eprintln!("ringwait enrich: lost the input's server while acknowledging ({e}); reconnecting");
                    self.acks_conn = Some(self.plan.connect_input(&self.intake)?);
                }
                Err(e) => return Err(EnrichError::Stream(format!("XACK on the input: {e}"))),
            }
        }
    }

    /// After a lost connection (or a server answering LOADING, BUSY…): wait a little,
    /// reconnect, and send every batch in flight again; give up once the server has been
    /// away for [`SERVER_DOWN_LIMIT`](super::SERVER_DOWN_LIMIT) in all.
    fn recover(&mut self, error: StreamConnError) -> Result<(), EnrichError> {
        let since = *self.down_since.get_or_insert_with(Instant::now);
        eprintln!(
            "ringwait enrich: lost the output's server ({error}); reconnecting and committing the {} batch(es) in flight again",
            self.pipeline.len()
        );
        let mut wait = std::time::Duration::from_millis(20);
        loop {
            if since.elapsed() > super::SERVER_DOWN_LIMIT {
                self.poisoned = true;
                self.pipeline.clear();
                return Err(self.fatal(error));
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(std::time::Duration::from_secs(1));
            self.conn = self.plan.connect_output(&self.intake)?;
            match self.pipeline.resend(&mut self.conn) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_connection() => continue,
                Err(e) => {
                    self.poisoned = true;
                    self.pipeline.clear();
                    return Err(self.fatal(e));
                }
            }
        }
    }

    fn fatal(&self, error: StreamConnError) -> EnrichError {
        EnrichError::Stream(format!(
            "committing to --output {}: {error}",
            self.plan.output
        ))
    }

    /// Publishes the commit latencies for the summary.
    fn publish(&mut self) {
        let mut shared = self.counters.commit_latency.lock().expect("commit latency");
        match shared.as_mut() {
            Some(h) => {
                let _ = h.add(&self.latency);
            }
            None => *shared = Some(self.latency.clone()),
        }
        self.latency.reset();
    }
}
