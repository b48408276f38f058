//! The writer thread: collects the partitions' outputs (in input order in ordered mode),
//! writes JSON Lines, and applies the error policy.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::runtime::checkpoint::Coordinator;
use crate::snapshot::{SnapshotMeta, SnapshotStore};

use super::lookup::Enriched;
use super::record::Line;
use super::{EnrichError, OnError};
use crate::element::Emitted;
use crate::operator::RecordError;
use crate::queue::Pop;
use crate::OrderMode;

/// What the writer wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Lines written to the output.
    pub lines: u64,
    /// Of those, lookups that found nothing (the field is `null`).
    pub misses: u64,
    /// Failed records dropped (`--on-error skip`).
    pub skipped: u64,
    /// Failed records written to the side output.
    pub side_output: u64,
    /// Blank input lines passed over (not written).
    pub blank: u64,
}

impl WriterStats {
    /// Input lines accounted for: written, skipped, side-output or blank.
    pub fn accounted(&self) -> u64 {
        self.lines + self.skipped + self.side_output + self.blank
    }
}

pub(crate) struct WriterSettings {
    pub mode: OrderMode,
    /// Ordered mode restores the input's global order across partitions (record `i` went
    /// to partition `i % P`); a Kafka input keeps each Kafka partition on one pipeline
    /// partition, whose own order is the order to keep, so its outputs are taken as ready.
    pub global_order: bool,
    /// `"<--into>":`, JSON-escaped: what precedes an added field's value.
    pub into_key: Vec<u8>,
    /// The file the output is written to (for error messages); `None` for stdout.
    pub out_path: Option<std::path::PathBuf>,
    /// The file the side output is written to (for error messages).
    pub side_path: Option<std::path::PathBuf>,
    /// Where `--metrics` reads the job's lookup misses from.
    pub live: Option<Arc<crate::metrics::live::LiveMetrics>>,
    pub on_error: OnError,
    /// Values are JSON text to insert as they are (`--value-format json`, `hgetall`);
    /// otherwise they are quoted as strings.
    pub json_values: bool,
    pub progress: Arc<AtomicU64>,
    pub stop: Arc<AtomicBool>,
    /// A log output: results are committed through it instead of written as lines.
    pub committer: Option<Committer>,
}

/// The writer's side of a log output (Redis Streams, Kafka).
pub(crate) enum Committer {
    /// Redis Streams: batches committed by script.
    Stream(Box<super::stream::StreamCommitter>),
    /// Kafka: produced, and committed by the reader as delivered.
    #[cfg(feature = "kafka")]
    Kafka(Box<super::kafka::KafkaCommitter>),
}

impl Committer {
    fn add(
        &mut self,
        line: &Line,
        kind: super::stream::Kind,
        data: &[u8],
        error: &str,
    ) -> Result<(), EnrichError> {
        match self {
            Committer::Stream(c) => c.add(line, kind, data, error),
            #[cfg(feature = "kafka")]
            Committer::Kafka(c) => c.add(line, kind, data, error),
        }
    }

    fn describe(&self, line: &Line) -> String {
        match self {
            Committer::Stream(c) => c.describe(line),
            #[cfg(feature = "kafka")]
            Committer::Kafka(c) => c.describe(line),
        }
    }

    fn flush(&mut self) -> Result<(), EnrichError> {
        match self {
            Committer::Stream(c) => c.flush(),
            #[cfg(feature = "kafka")]
            Committer::Kafka(c) => c.flush(),
        }
    }

    /// Called while the writer waits: a Kafka producer's deliveries are taken.
    fn idle(&mut self) -> Result<(), EnrichError> {
        match self {
            Committer::Stream(_) => Ok(()),
            #[cfg(feature = "kafka")]
            Committer::Kafka(c) => c.idle(),
        }
    }

    /// The end of the writer: everything delivered (`ok`), or given up on an error.
    fn finish(&mut self, ok: bool) -> Result<(), EnrichError> {
        match self {
            Committer::Stream(c) if ok => c.flush(),
            Committer::Stream(_) => Ok(()),
            #[cfg(feature = "kafka")]
            Committer::Kafka(c) if ok => c.finish(),
            #[cfg(feature = "kafka")]
            Committer::Kafka(c) => {
                c.abandon();
                Ok(())
            }
        }
    }
}

type Item = Emitted<Enriched, Line>;

/// What a partition hands the writer: an output, or a checkpoint barrier it passed, behind
/// every output emitted before it. The partition's snapshot is staged, not yet durable, when
/// the barrier is sent: the writer commits the epoch only once every partition reported its
/// snapshot flushed ([`Coordinator::all_flushed`]), after syncing the outputs.
pub(crate) enum Marked {
    Item(Item),
    Barrier(u64),
}

impl crate::sink::QueueItem<Enriched, Line> for Marked {
    #[inline]
    fn output(item: Item) -> Self {
        Marked::Item(item)
    }

    fn barrier(epoch: u64) -> Option<Self> {
        Some(Marked::Barrier(epoch))
    }
}

/// The partitions' sink: a queue of batches to the writer; barriers travel in it as markers.
pub(crate) type MarkedSink = crate::sink::BatchQueueSink<Enriched, Line, Marked>;

/// Outputs per batch from a partition to the writer.
pub(crate) const OUTPUT_BATCH: usize = 256;

/// One partition's queue to the writer.
pub(crate) type Inbox = crate::queue::BatchReceiver<Marked>;

/// The partition number of the writer's commit record in the checkpoint directory.
pub(crate) const WRITER_PARTITION: u32 = u32::MAX;

/// The writer's part of the checkpoints: it commits an epoch once every partition's barrier
/// reached it and everything before the barriers is durable in the output.
pub(crate) struct WriterCheckpoint {
    pub store: SnapshotStore,
    pub coordinator: std::sync::Arc<Coordinator>,
    pub out_file: std::fs::File,
    pub side_file: Option<std::fs::File>,
    /// Bytes in the output (committed length after a restore).
    pub written: u64,
    pub side_written: u64,
    /// Ordered mode: index of the next record to write (records below it are in the output).
    pub next_index: u64,
    /// Records accounted for in the committed output, before this run.
    pub records: u64,
    pub partitions: u64,
}

/// The writer's commit: where the outputs stood at a completed checkpoint. The record's
/// header carries the epoch, the output length (`sink_position`) and the next record index
/// (`source_position`); its payload the side output length, the partitions and the records
/// accounted for (written, skipped or side-output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Commit {
    pub output_len: u64,
    pub side_len: u64,
    pub next_index: u64,
    pub partitions: u64,
    pub records: u64,
}

impl Commit {
    /// The payload (the header fields travel in the record's [`SnapshotMeta`]).
    pub fn encode_payload(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.side_len.to_le_bytes());
        b[8..16].copy_from_slice(&self.partitions.to_le_bytes());
        b[16..].copy_from_slice(&self.records.to_le_bytes());
        b
    }

    /// The commit from a record's header and payload; `None` for an unknown layout.
    pub fn decode(meta: &SnapshotMeta, payload: &[u8]) -> Option<Commit> {
        if payload.len() != 24 {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
        Some(Commit {
            output_len: meta.sink_position,
            side_len: word(0),
            next_index: meta.source_position,
            partitions: word(8),
            records: word(16),
        })
    }
}

pub(crate) fn spawn_writer(
    queues: Vec<Inbox>,
    out: Box<dyn Write + Send>,
    side: Option<Box<dyn Write + Send>>,
    settings: WriterSettings,
    checkpoint: Option<WriterCheckpoint>,
) -> JoinHandle<Result<WriterStats, EnrichError>> {
    std::thread::Builder::new()
        .name("ringwait-writer".into())
        .spawn(move || {
            let _halt_on_panic = HaltOnPanic(settings.stop.clone());
            let passed = vec![0; queues.len()];
            let next = checkpoint.as_ref().map_or(0, |c| c.next_index);
            let mut w = Writer {
                out,
                side,
                settings,
                stats: WriterStats::default(),
                checkpoint,
                passed,
                next,
                scratch: Vec::with_capacity(1024),
                pending: Vec::with_capacity(SPILL + (4 << 10)),
                ready_to_commit: None,
            };
            let mut queues = queues;
            let result = if w.settings.mode == OrderMode::Ordered && w.settings.global_order {
                w.merge_in_order(&mut queues)
            } else {
                w.merge_as_ready(&mut queues)
            };
            let mut flushed = w.flush();
            if let Some(c) = w.settings.committer.as_mut() {
                let ok = result.is_ok() && flushed.is_ok();
                flushed = flushed.and(c.finish(ok));
            }
            if result.is_err() {
                w.settings.stop.store(true, Ordering::Relaxed);
                if let Some(ck) = &w.checkpoint {
                    ck.coordinator.cancel();
                }
            }
            result.and(flushed).map(|()| w.stats)
        })
        .expect("spawning the writer thread")
}

/// Sets the job's halt flag when the writer thread unwinds from a panic, so that the reader
/// and the partitions stop instead of waiting for a writer that is gone (the job then
/// reports the panic; see `join_thread` in the module above).
struct HaltOnPanic(Arc<AtomicBool>);

impl Drop for HaltOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

struct Writer {
    out: Box<dyn Write + Send>,
    side: Option<Box<dyn Write + Send>>,
    settings: WriterSettings,
    stats: WriterStats,
    checkpoint: Option<WriterCheckpoint>,
    /// Per partition: the newest barrier taken from its queue.
    passed: Vec<u64>,
    /// Ordered mode: index of the next record to write.
    next: u64,
    /// A side-output line being built.
    scratch: Vec<u8>,
    /// Output lines not yet handed to the output.
    pending: Vec<u8>,
    /// Every partition's barrier of this epoch arrived; it commits once every partition's
    /// snapshot is durable (the partitions flush on helper threads).
    ready_to_commit: Option<u64>,
}

/// An idle writer yields this many times before it flushes and sleeps.
const YIELDS_BEFORE_SLEEP: u32 = 2;

/// Longest sleep of an idle writer: the queues wake it with their next batch; this bounds a
/// wait for a partition's snapshot flush (which comes with no batch).
const IDLE_SLEEP: Duration = Duration::from_millis(1);

/// Same, while an epoch waits to be committed.
const COMMIT_POLL: Duration = Duration::from_micros(50);

impl Writer {
    /// Record `i` went to partition `i % P`, and each partition emits in its input order, so
    /// taking from the partitions in turn restores the global order.
    ///
    /// Checkpoints: the output always holds records `0..next`. A barrier marker is taken from a
    /// queue when the writer needs that queue's next record, or, while it waits, from the front
    /// of any other queue (holding at most one record per queue aside); once every partition's
    /// marker for epoch N is taken, everything emitted before the barriers is written, and the
    /// commit record says: output length L, next record `next`. After a restore the partitions
    /// re-emit some records below `next`; they are dropped here.
    fn merge_in_order(&mut self, queues: &mut [Inbox]) -> Result<(), EnrichError> {
        let p = queues.len() as u64;
        let mut aside: Vec<Option<Item>> = (0..p).map(|_| None).collect();
        let mut idle = 0u32;
        loop {
            self.commit_when_flushed()?;
            let q = (self.next % p) as usize;
            let item = match aside[q].take() {
                Some(item) => item,
                None => match queues[q].pop() {
                    Pop::Item(Marked::Item(item)) => item,
                    Pop::Item(Marked::Barrier(epoch)) => {
                        self.on_barrier(q, epoch)?;
                        continue;
                    }
                    Pop::Empty => {
                        if self.checkpoint.is_some() {
                            for (r, slot) in aside.iter_mut().enumerate() {
                                // Take markers (and records written before the last restore)
                                // off the front of the other queues, keeping at most one
                                // record aside each.
                                while r != q && slot.is_none() {
                                    match queues[r].pop() {
                                        Pop::Item(Marked::Item(item)) => {
                                            if record_index(&item).is_some_and(|i| i < self.next) {
                                                continue;
                                            }
                                            *slot = Some(item);
                                        }
                                        Pop::Item(Marked::Barrier(epoch)) => {
                                            self.on_barrier(r, epoch)?
                                        }
                                        _ => break,
                                    }
                                }
                            }
                        }
                        self.wait(&mut idle, &[&queues[q]])?;
                        continue;
                    }
                    // That partition ended: at the end of input, or it failed.
                    Pop::Closed => return Ok(()),
                },
            };
            idle = 0;
            if let Some(index) = record_index(&item) {
                if index < self.next {
                    continue; // written before the last restore
                }
                if index != self.next {
                    return Err(EnrichError::Internal(format!(
                        "ordered merge expected record {}, got {index}",
                        self.next
                    )));
                }
            }
            self.write_item(item)?;
            self.next += 1;
        }
    }

    /// Unordered and key-ordered: write whatever arrives. Checkpoints are aligned: after a
    /// partition's barrier the writer takes nothing more from it until every partition's
    /// barrier arrived, so the output at the commit holds exactly what was emitted before the
    /// barriers.
    fn merge_as_ready(&mut self, queues: &mut [Inbox]) -> Result<(), EnrichError> {
        let mut open: Vec<bool> = vec![true; queues.len()];
        let mut blocked: Vec<bool> = vec![false; queues.len()];
        let mut idle = 0u32;
        while open.iter().any(|o| *o) {
            if self.ready_to_commit.is_some() && self.commit_when_flushed()? {
                blocked.iter_mut().for_each(|b| *b = false);
            }
            let mut got = false;
            for r in 0..queues.len() {
                if !open[r] || blocked[r] {
                    continue;
                }
                loop {
                    match queues[r].pop() {
                        Pop::Item(Marked::Item(item)) => {
                            self.write_item(item)?;
                            got = true;
                        }
                        Pop::Item(Marked::Barrier(epoch)) => {
                            got = true;
                            self.passed[r] = epoch;
                            blocked[r] = true;
                            if (0..queues.len()).all(|i| !open[i] || self.passed[i] >= epoch) {
                                self.ready_to_commit = Some(epoch);
                            }
                            break;
                        }
                        Pop::Empty => break,
                        Pop::Closed => {
                            open[r] = false;
                            break;
                        }
                    }
                }
            }
            if got {
                idle = 0;
            } else {
                let waited: Vec<&Inbox> = (0..queues.len())
                    .filter(|&r| open[r] && !blocked[r])
                    .map(|r| &queues[r])
                    .collect();
                self.wait(&mut idle, &waited)?;
            }
        }
        Ok(())
    }

    /// Nothing to write: waits a little. When the partitions have gone quiet, what is
    /// gathered goes out, so a slow input's lines do not wait for the next 64 KiB.
    fn wait(&mut self, idle: &mut u32, queues: &[&Inbox]) -> Result<(), EnrichError> {
        *idle += 1;
        if *idle <= YIELDS_BEFORE_SLEEP {
            std::thread::yield_now();
            return Ok(());
        }
        if *idle == YIELDS_BEFORE_SLEEP + 1 {
            self.flush()?;
        } else if let Some(c) = self.settings.committer.as_mut() {
            c.idle()?;
        }
        let timeout = if self.ready_to_commit.is_some() {
            COMMIT_POLL
        } else {
            IDLE_SLEEP
        };
        crate::queue::wait_any(queues, timeout);
        Ok(())
    }

    fn on_barrier(&mut self, partition: usize, epoch: u64) -> Result<(), EnrichError> {
        self.passed[partition] = epoch;
        if self.passed.iter().all(|p| *p >= epoch) {
            self.ready_to_commit = Some(epoch);
            self.commit_when_flushed()?;
        }
        Ok(())
    }

    /// Commits the epoch whose barriers all arrived once every partition flushed it; true
    /// when it committed.
    fn commit_when_flushed(&mut self) -> Result<bool, EnrichError> {
        let Some(epoch) = self.ready_to_commit else {
            return Ok(false);
        };
        let flushed = self
            .checkpoint
            .as_ref()
            .is_none_or(|c| c.coordinator.all_flushed(epoch));
        if !flushed {
            return Ok(false);
        }
        self.ready_to_commit = None;
        self.commit(epoch)?;
        Ok(true)
    }

    /// Makes the output durable up to here and records the commit; then the epoch is complete.
    fn commit(&mut self, epoch: u64) -> Result<(), EnrichError> {
        if self.checkpoint.is_none() {
            return Ok(());
        }
        self.flush()?;
        let next = self.next;
        let ck = self.checkpoint.as_mut().expect("checked");
        ck.out_file
            .sync_data()
            .map_err(|cause| io_error("sync the output", &self.settings.out_path, cause))?;
        if let Some(f) = &ck.side_file {
            f.sync_data().map_err(|cause| {
                io_error("sync the side output", &self.settings.side_path, cause)
            })?;
        }
        let meta = SnapshotMeta {
            epoch,
            capacity: ck.partitions,
            record_count: 0,
            source_position: next,
            sink_position: ck.written,
            watermark: None,
        };
        let stats = &self.stats;
        let commit = Commit {
            output_len: ck.written,
            side_len: ck.side_written,
            next_index: next,
            partitions: ck.partitions,
            records: ck.records + stats.accounted(),
        };
        ck.store
            .write(meta, &commit.encode_payload())
            .map_err(EnrichError::Checkpoint)?;
        ck.coordinator.complete(epoch);
        Ok(())
    }

    fn write_item(&mut self, item: Item) -> Result<(), EnrichError> {
        match item {
            Emitted::Record {
                value: (line, found),
                ..
            } => {
                if line.blank {
                    self.stats.blank += 1;
                    self.settings.progress.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                if found.is_none() {
                    self.stats.misses += 1;
                    if let Some(live) = &self.settings.live {
                        live.set_lookup_misses(self.stats.misses);
                    }
                }
                if self.settings.committer.is_some() {
                    self.commit_enriched(&line, found.as_deref())?;
                } else {
                    self.write_enriched(&line, found.as_deref())?;
                }
                self.stats.lines += 1;
                self.settings.progress.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Emitted::Failed { input, error, .. } => self.failed(input, error),
            Emitted::Watermark(_) => Ok(()),
        }
    }

    fn failed(&mut self, line: Line, error: RecordError) -> Result<(), EnrichError> {
        self.settings.progress.fetch_add(1, Ordering::Relaxed);
        if self.settings.committer.is_some() {
            return self.commit_failed(&line, &error);
        }
        match &self.settings.on_error {
            OnError::Fail => Err(EnrichError::RecordFailed {
                line: line.number,
                error: error.to_string(),
            }),
            OnError::Skip => {
                self.stats.skipped += 1;
                Ok(())
            }
            OnError::SideOutput(path) => {
                let number = line.number;
                // {"line":N,"error":"...","record":<the input line as it was>}
                let side = self.side.as_mut().expect("side output opened");
                self.scratch.clear();
                self.scratch
                    .extend_from_slice(format!("{{\"line\":{number},\"error\":").as_bytes());
                serde_json::to_writer(&mut self.scratch, &error.to_string())
                    .map_err(std::io::Error::from)
                    .and_then(|()| {
                        self.scratch.extend_from_slice(b",\"record\":");
                        self.scratch.extend_from_slice(line.text());
                        self.scratch.extend_from_slice(b"}\n");
                        side.write_all(&self.scratch)
                    })
                    .map_err(|cause| EnrichError::Io {
                        what: "write the side output",
                        path: self
                            .settings
                            .side_path
                            .as_ref()
                            .unwrap_or(path)
                            .display()
                            .to_string(),
                        cause,
                    })?;
                if let Some(ck) = self.checkpoint.as_mut() {
                    ck.side_written += self.scratch.len() as u64;
                }
                self.stats.side_output += 1;
                Ok(())
            }
        }
    }

    /// Writes the input line with the field `--into` set to `found` (see [`enriched`]).
    /// Lines gather in `pending` and reach the output [`SPILL`] bytes at a time.
    fn write_enriched(&mut self, line: &Line, found: Option<&[u8]>) -> Result<(), EnrichError> {
        let before = self.pending.len();
        enriched(line, found, &self.settings, &mut self.pending);
        let out = &mut self.pending;
        out.extend_from_slice(if line.crlf { b"\r\n" } else { b"\n" });
        if let Some(ck) = self.checkpoint.as_mut() {
            // Count the bytes: the commit record holds the output's length.
            ck.written += (out.len() - before) as u64;
        }
        if self.pending.len() >= SPILL {
            self.spill()?;
        }
        Ok(())
    }

    /// A stream output: the enriched record goes to the commit batch.
    fn commit_enriched(&mut self, line: &Line, found: Option<&[u8]>) -> Result<(), EnrichError> {
        self.scratch.clear();
        enriched(line, found, &self.settings, &mut self.scratch);
        let committer = self.settings.committer.as_mut().expect("a stream output");
        committer.add(line, super::stream::Kind::Data, &self.scratch, "")
    }

    /// A stream output: a failed record (or an entry that is not a record) under the error
    /// policy. `fail` stops the job before the entry is committed, so it stays pending.
    fn commit_failed(&mut self, line: &Line, error: &RecordError) -> Result<(), EnrichError> {
        let committer = self.settings.committer.as_mut().expect("a stream output");
        let kind = match &self.settings.on_error {
            #[cfg(feature = "kafka")]
            OnError::Fail if matches!(committer, Committer::Kafka(_)) => {
                return Err(EnrichError::Kafka(format!(
                    "message {}: {error} (it is not committed; use --on-error skip or side-output:TOPIC to go on)",
                    committer.describe(line)
                )))
            }
            OnError::Fail => {
                return Err(EnrichError::EntryFailed {
                    entry: committer.describe(line),
                    error: error.to_string(),
                })
            }
            OnError::Skip => {
                self.stats.skipped += 1;
                super::stream::Kind::Skip
            }
            OnError::SideOutput(_) => {
                self.stats.side_output += 1;
                super::stream::Kind::Error
            }
        };
        committer.add(line, kind, line.text(), &error.to_string())
    }

    /// Hands the gathered lines to the output.
    fn spill(&mut self) -> Result<(), EnrichError> {
        let result = self.out.write_all(&self.pending);
        self.pending.clear();
        result.map_err(|cause| io_error("write the output", &self.settings.out_path, cause))
    }

    fn flush(&mut self) -> Result<(), EnrichError> {
        if let Some(c) = self.settings.committer.as_mut() {
            c.flush()?;
        }
        self.spill()?;
        self.out
            .flush()
            .map_err(|cause| io_error("write the output", &self.settings.out_path, cause))?;
        if let Some(side) = self.side.as_mut() {
            side.flush().map_err(|cause| {
                io_error("write the side output", &self.settings.side_path, cause)
            })?;
        }
        Ok(())
    }
}

/// Appends the input line with the field `--into` set to `found` (a JSON string, or
/// `null` on a miss): the line's own bytes, with the field's value replaced where the object
/// has it, or the field added before the closing brace; nothing else changes.
fn enriched(line: &Line, found: Option<&[u8]>, settings: &WriterSettings, out: &mut Vec<u8>) {
    let text = line.text();
    let (head, tail) = match line.into {
        Some((start, end)) => (&text[..start as usize], &text[end as usize..]),
        None => {
            let close = line.close as usize;
            out.extend_from_slice(&text[..close]);
            if !line.empty {
                out.push(b',');
            }
            out.extend_from_slice(&settings.into_key);
            (&[][..], &text[close..])
        }
    };
    out.extend_from_slice(head);
    match found {
        Some(bytes) if settings.json_values => out.extend_from_slice(bytes),
        Some(bytes) => super::value::json_string(bytes, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(tail);
}

/// Bytes of output gathered before they are written.
const SPILL: usize = 64 << 10;

fn io_error(
    what: &'static str,
    path: &Option<std::path::PathBuf>,
    cause: std::io::Error,
) -> EnrichError {
    EnrichError::Io {
        what,
        path: path.as_ref().map_or_else(
            || "standard output".to_string(),
            |p| p.display().to_string(),
        ),
        cause,
    }
}

fn record_index(item: &Item) -> Option<u64> {
    match item {
        Emitted::Record { value, .. } => Some(value.0.index),
        Emitted::Failed { input, .. } => Some(input.index),
        Emitted::Watermark(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_that_panics_halts_the_job() {
        let halt = Arc::new(AtomicBool::new(false));
        let flag = halt.clone();
        let joined = std::thread::spawn(move || {
            let _guard = HaltOnPanic(flag);
            panic!("a bug in the writer");
        })
        .join();
        assert!(joined.is_err());
        assert!(halt.load(Ordering::Relaxed), "a panic sets the halt flag");

        let flag = halt.clone();
        halt.store(false, Ordering::Relaxed);
        std::thread::spawn(move || drop(HaltOnPanic(flag)))
            .join()
            .unwrap();
        assert!(!halt.load(Ordering::Relaxed), "an ordinary end does not");
    }
}
