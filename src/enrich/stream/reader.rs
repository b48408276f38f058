//! The stream reader: the job's reader thread for a `redis-stream://` input. It reads its
//! consumer's entries with `XREADGROUP` (first its own pending ones, left by an earlier run
//! under the same consumer name, then new ones), claims entries idle in a dead consumer's
//! pending list with `XAUTOCLAIM`, and deals them to the partitions as records whose origin
//! is the entry's stream and id.
//!
//! Reads are bounded: `COUNT` entries at a time, and none while the partitions' queues are
//! full (dealing blocks), so a slow store never lets read work pile up. An entry stays in the
//! group's pending list until the committer acknowledges it together with its output, so
//! whatever the reader read when the process dies is read again (by this consumer on
//! restart, or claimed by another).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{StreamCounters, StreamPlan};
use crate::connect::redis_stream::{
    claim_reply, fence_reply, for_each_entry, BlockingConn, EntryId, Payload, ReadFrom,
    StreamConnError, READ_BLOCK,
};
use crate::element::StreamElement;
use crate::enrich::chunk::ChunkBuilder;
use crate::enrich::input::{Dealer, ReaderSettings};
use crate::enrich::record::Line;
use crate::enrich::EnrichError;
use crate::queue::BatchSender;

/// Longest wait of one read: how soon a stop request or a claim round is seen.
const BLOCK: Duration = READ_BLOCK;

/// Starts the reader thread.
pub(crate) fn spawn(
    plan: Arc<StreamPlan>,
    settings: Arc<ReaderSettings>,
    queues: Vec<BatchSender<StreamElement<Line>>>,
    counters: Arc<StreamCounters>,
) -> std::thread::JoinHandle<Result<(), EnrichError>> {
    std::thread::Builder::new()
        .name("ringwait-stream-reader".into())
        .spawn(move || {
            let mut r = StreamReader::new(&plan, &settings, &queues, counters)?;
            r.run()
        })
        .expect("spawning the stream reader thread")
}

/// What the reader is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading this consumer's own pending entries (left by an earlier run).
    Own,
    /// Reading new entries.
    New,
    /// `--until caught-up`: every entry present at the start was delivered; waiting until
    /// none of them is pending any more.
    Draining,
}

struct StreamReader<'a> {
    plan: &'a StreamPlan,
    settings: &'a ReaderSettings,
    conn: BlockingConn,
    dealer: Dealer<'a>,
    chunk: ChunkBuilder,
    counters: Arc<StreamCounters>,
    /// Records dealt so far (the next one's index).
    next_index: u64,
    phase: Phase,
    /// Own pending entries: the id after which each stream's next read starts.
    own_cursor: Vec<String>,
    /// Per stream, the newest entry read by `XREADGROUP` (own or new) and dealt: after a
    /// lost connection the reader reads its own pending entries after it (those whose
    /// delivery reply was lost) before new ones.
    last_read: Vec<Option<EntryId>>,
    /// The XAUTOCLAIM cursor per stream, and when the next claim round is due.
    claim_cursor: Vec<String>,
    next_claim: Instant,
    next_lag: Instant,
}

impl<'a> StreamReader<'a> {
    fn new(
        plan: &'a StreamPlan,
        settings: &'a ReaderSettings,
        queues: &'a [BatchSender<StreamElement<Line>>],
        counters: Arc<StreamCounters>,
    ) -> Result<Self, EnrichError> {
        let conn = plan.connect_input(&settings.intake)?;
        let n = plan.input.streams.len();
        Ok(StreamReader {
            plan,
            settings,
            conn,
            dealer: Dealer::new(settings, queues),
            chunk: ChunkBuilder::default(),
            counters,
            next_index: 0,
            phase: Phase::Own,
            own_cursor: vec!["0".into(); n],
            last_read: vec![None; n],
            claim_cursor: vec!["0-0".into(); n],
            next_claim: Instant::now() + plan.claim_idle,
            next_lag: Instant::now(),
        })
    }

    fn run(&mut self) -> Result<(), EnrichError> {
        loop {
            if self.settings.intake.stopping() {
                self.last_lag();
                return Ok(());
            }
            let step = self.step();
            match step {
                Ok(true) => {}
                Ok(false) => {
                    // Caught up (`--until caught-up`): everything present at the start is
                    // committed by someone.
                    self.last_lag();
                    self.settings.intake.reached_end(None, self.next_index);
                    return Ok(());
                }
                Err(e) if e.is_connection() => {
                    self.conn = match self.plan.reconnect_input(&e, &self.settings.intake) {
                        Ok(conn) => conn,
                        // A stop while the server is away: what was read stays pending.
                        Err(_) if self.settings.intake.requested() => return Ok(()),
                        Err(e) => return Err(e),
                    };
                    // Entries delivered in a reply that was lost are pending for this
                    // consumer: read them (in order) before new ones.
                    for (cursor, last) in self.own_cursor.iter_mut().zip(&self.last_read) {
                        *cursor = last.map_or_else(|| "0".into(), |id| id.to_string());
                    }
                    self.phase = Phase::Own;
                }
                Err(e) => return Err(self.plan.input_error(e)),
            }
        }
    }

    /// The group's lag as the reader stops (for the summary; a failure leaves the last one).
    fn last_lag(&mut self) {
        if let Ok(lag) = self.plan.group_lag(&mut self.conn) {
            self.counters.lag.store(lag, Ordering::Relaxed);
        }
    }

    /// One read (or claim) and its entries dealt. False once caught up.
    fn step(&mut self) -> Result<bool, StreamConnError> {
        if Instant::now() >= self.next_lag {
            self.next_lag = Instant::now() + Duration::from_millis(500);
            let lag = self.plan.group_lag(&mut self.conn)?;
            self.counters.lag.store(lag, Ordering::Relaxed);
        }
        if Instant::now() >= self.next_claim {
            let claimed = self.claim()?;
            if claimed == 0 {
                self.next_claim = Instant::now() + (self.plan.claim_idle / 2).max(BLOCK);
            }
        }
        match self.phase {
            Phase::Own => {
                let got = self.read(false)?;
                if got == 0 {
                    self.phase = Phase::New;
                }
            }
            Phase::New => {
                if self.plan.until.is_some() && self.plan.all_delivered(&mut self.conn)? {
                    self.phase = Phase::Draining;
                    return Ok(true);
                }
                let got = self.read(true)?;
                // Nothing new to deliver (the last entry at the start may have been deleted
                // before it was delivered): every entry there was is delivered.
                if got == 0 && self.plan.until.is_some() {
                    self.phase = Phase::Draining;
                }
            }
            Phase::Draining => {
                if self.plan.none_pending_up_to_targets(&mut self.conn)? {
                    return Ok(false);
                }
                // The last commits are a few milliseconds away: look again soon (a 20 ms
                // nap was 2% of a 200k-entry run).
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(true)
    }

    /// `XREADGROUP`: new entries (`fresh`), or this consumer's own pending ones after the
    /// cursors. Returns how many entries were read.
    fn read(&mut self, fresh: bool) -> Result<usize, StreamConnError> {
        let plan = self.plan;
        let consumer = plan.group_consumer();
        let from = if fresh {
            ReadFrom::New
        } else {
            ReadFrom::Own(&self.own_cursor)
        };
        consumer.send_read(&mut self.conn, from)?;
        let mut lasts: Vec<Option<EntryId>> = vec![None; plan.input.streams.len()];
        let addr = self.conn.addr();
        // The fence's reply: the value new entries are read at; an own read only moved it.
        let fence = self.conn.reply(|frame| fence_reply(frame, addr))?;
        let fence = fresh.then_some(fence);
        let got = self.conn.reply(|frame| {
            let mut got = 0;
            consumer.for_each_stream(frame, addr, |k, entries| {
                got += stage_entries(
                    &mut self.chunk,
                    (k, fence),
                    entries,
                    &mut self.next_index,
                    self.settings,
                    &plan.field,
                    &mut lasts[k],
                    addr,
                )?;
                Ok(())
            })?;
            Ok(got)
        })?;
        for (k, last) in lasts.into_iter().enumerate() {
            let Some(id) = last else { continue };
            if !fresh {
                self.own_cursor[k] = id.to_string();
            }
            if self.last_read[k].is_none_or(|l| l < id) {
                self.last_read[k] = Some(id);
            }
        }
        self.counters.read.fetch_add(got as u64, Ordering::Relaxed);
        self.deal();
        Ok(got)
    }

    /// `XAUTOCLAIM` on each stream: entries idle for `--claim-idle-ms` in any consumer's
    /// pending list (a dead instance's, or this one's own from a lost reply) become this
    /// consumer's and are dealt. Returns how many were claimed.
    fn claim(&mut self) -> Result<usize, StreamConnError> {
        let plan = self.plan;
        let consumer = plan.group_consumer();
        let mut claimed = 0;
        for k in 0..plan.input.streams.len() {
            consumer.send_claim(&mut self.conn, k, plan.claim_idle, &self.claim_cursor[k])?;
            let mut last = None;
            let addr = self.conn.addr();
            let (next, got) = self.conn.reply(|frame| {
                let (next, entries) = claim_reply(frame, addr)?;
                let got = stage_entries(
                    &mut self.chunk,
                    (k, None),
                    entries,
                    &mut self.next_index,
                    self.settings,
                    &plan.field,
                    &mut last,
                    addr,
                )?;
                Ok((next, got))
            })?;
            self.claim_cursor[k] = next;
            claimed += got;
        }
        self.counters
            .claimed
            .fetch_add(claimed as u64, Ordering::Relaxed);
        self.counters
            .read
            .fetch_add(claimed as u64, Ordering::Relaxed);
        self.deal();
        Ok(claimed)
    }

    /// Deals what was staged (unless intake is stopping: then the entries stay pending and
    /// are read again by the next run).
    fn deal(&mut self) {
        let all = self.chunk.bytes().len();
        self.dealer.deal_chunk(&mut self.chunk, all);
    }
}

/// Stages the entries `[id, [field, value, ...] | nil]` of stream `k`, read at claim fence
/// `fence` (see [`origin`](super::origin)), as records; returns how many. An entry whose
/// fields are gone (deleted from the stream while pending) or lack `field` becomes an
/// invalid record, for the error policy.
#[allow(clippy::too_many_arguments)]
fn stage_entries(
    chunk: &mut ChunkBuilder,
    (k, fence): (usize, Option<u64>),
    entries: crate::resp::ArrayView<'_>,
    next_index: &mut u64,
    settings: &ReaderSettings,
    field: &str,
    last: &mut Option<EntryId>,
    addr: std::net::SocketAddr,
) -> Result<usize, StreamConnError> {
    let mut origin = [0u8; super::origin::MAX];
    let mut got = 0;
    for_each_entry(entries, field.as_bytes(), addr, |raw, id, payload| {
        *last = Some(id);
        let Some(len) = super::origin::write(&mut origin, k, fence, raw) else {
            return Err(StreamConnError::protocol(addr, "an entry id too long"));
        };
        let missing;
        let payload = match payload {
            Payload::Found(p) => Ok(p),
            Payload::Deleted => {
                Err("the entry was deleted from the stream before it was processed")
            }
            Payload::Missing => {
                missing = format!("the entry has no field {field:?}");
                Err(missing.as_str())
            }
        };
        let index = *next_index;
        chunk.push_entry(payload, &origin[..len], index + 1, index, &settings.fields);
        *next_index += 1;
        got += 1;
        Ok(())
    })?;
    Ok(got)
}
