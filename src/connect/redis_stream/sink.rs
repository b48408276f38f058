//! [`RedisStreamSink`]: one partition's outputs committed to a stream with their entries'
//! acknowledgements, exactly once, without blocking the partition's executor.

use std::time::Duration;

use super::commit::{CommitBatch, CommitMode, CommitRecord, CommitTarget, EncodedBatch, Kind};
use super::conn::{BlockingConn, StreamConnError};
use super::pipeline::CommitPipeline;
use super::{StreamEntry, StreamUrl};
use crate::element::Emitted;
use crate::sink::Sink;
use crate::source::BoxError;

/// An output a [`RedisStreamSink`] can commit: the entry it was made from, and its bytes
/// (the output entry's `data`). Each input entry must complete with exactly one output
/// (or fail): the first output of an entry commits it, a second is dropped as a duplicate.
pub trait StreamOutput: 'static {
    /// The input entry.
    fn entry(&self) -> &StreamEntry;
    /// What goes into the output entry's `data`.
    fn payload(&self) -> &[u8];
}

impl StreamOutput for (StreamEntry, Vec<u8>) {
    fn entry(&self) -> &StreamEntry {
        &self.0
    }
    fn payload(&self) -> &[u8] {
        &self.1
    }
}

/// What a [`RedisStreamSink`] committed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SinkStats {
    /// Entries committed (output or error entry added, or skipped, and acknowledged).
    pub committed: u64,
    /// Entries whose commit found them committed already (nothing added).
    pub duplicates: u64,
    /// Entries committed although no longer pending when acknowledged, by a client outside
    /// this protocol: their outputs were added and may be duplicates (see
    /// [`CommitCounts::unverified`](super::CommitCounts::unverified)).
    pub unverified: u64,
    /// Batches committed.
    pub batches: u64,
}

/// Batches in flight before [`has_room`](Sink::has_room) says no.
const WINDOW: usize = 4;

/// One partition's output to a Redis stream. Each output becomes an entry `{data, src: the
/// input entry's id}` (and `stream`, with several inputs); a failed record becomes an entry
/// `{error, src, data: its payload}` on the side stream, or is acknowledged without output
/// when there is none. Outputs gather per partition round into one batch, committed in one
/// atomic step that acknowledges each entry and adds its output only if that acknowledged
/// it (input and output on one server: a watched transaction with one `XACK` for the batch
/// when its entries were all read fresh and no claim ran since, see
/// [`CommitRecord::fence`](super::CommitRecord::fence) and
/// [`CommitPipeline`](super::CommitPipeline); else the [`SCRIPT`](super::SCRIPT)), or
/// records it in a progress set beside the output and adds only if it was not there (two
/// servers; then the sink acknowledges on the input's
/// server). So however often an entry is read and committed, it has one output.
///
/// A lost connection fails the partition at [`finish`](Sink::finish) (see
/// [`stop_on_failure`](Self::stop_on_failure)); what it had not committed stays pending in
/// the group and is read again. With input and output on two servers, acknowledging a
/// batch is a blocking round trip to the input's server.
pub struct RedisStreamSink<O> {
    conn: BlockingConn,
    acks_conn: Option<BlockingConn>,
    target: CommitTarget,
    batch: CommitBatch,
    batch_size: usize,
    pipeline: CommitPipeline,
    stats: SinkStats,
    error: Option<StreamConnError>,
    /// The input sequence of the last output taken: a second output of one record is a
    /// duplicate, dropped here.
    last_sequence: Option<u64>,
    /// Set when a commit fails for good (see [`stop_on_failure`](Self::stop_on_failure)).
    failed: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    _out: std::marker::PhantomData<O>,
}

impl<O: StreamOutput> RedisStreamSink<O> {
    /// Commits to `output` (one stream) the outputs of what `consumer` read from `input`;
    /// failed records go to the stream `side` on the output's server, or are skipped.
    pub fn open(
        output: &StreamUrl,
        input: &StreamUrl,
        consumer: &str,
        side: Option<&str>,
    ) -> Result<RedisStreamSink<O>, BoxError> {
        output.check_output()?;
        input.check_input()?;
        let group = input.group.clone().expect("checked");
        let mut conn = BlockingConn::open(&output.server, TIMEOUT)?;
        let mut input_conn = BlockingConn::open(&input.server, TIMEOUT)?;
        let mode = if super::same_server(&mut input_conn, input, &mut conn, output)? {
            CommitMode::Ack
        } else {
            CommitMode::Progress(CommitTarget::progress_key(
                &output.streams[0],
                &input.streams,
                &group,
            ))
        };
        let acks_conn = match mode {
            CommitMode::Ack => None,
            CommitMode::Progress(_) => Some(input_conn),
        };
        let mut keys = vec![output.streams[0].as_str()];
        keys.extend(side);
        for key in keys {
            let reply = conn.call(&[b"TYPE", key.as_bytes()])?;
            if !matches!(super::text(&reply), Some("stream") | Some("none")) {
                return Err(format!("the key {key:?} on {} is not a stream", output.server).into());
            }
        }
        let guard = match mode {
            CommitMode::Ack => Some(super::guard_key(&input.streams, &group, consumer)),
            CommitMode::Progress(_) => None,
        };
        let pipeline = CommitPipeline::open(&mut conn, guard)?;
        Ok(RedisStreamSink {
            conn,
            acks_conn,
            target: CommitTarget {
                output: output.streams[0].clone(),
                side: side.map(str::to_string),
                maxlen: output.maxlen,
                inputs: input.streams.clone(),
                group,
                consumer: consumer.to_string(),
                mode,
            },
            batch: CommitBatch::default(),
            batch_size: 256,
            pipeline,
            stats: SinkStats::default(),
            error: None,
            last_sequence: None,
            failed: None,
            _out: std::marker::PhantomData,
        })
    }

    /// Sets `flag` when a commit fails for good. A [`Sink`] cannot fail before
    /// [`finish`](Sink::finish): give the same flag to the partition's source
    /// ([`SourceOptions::stop`](super::SourceOptions::stop)) so that intake ends, and
    /// `finish` reports the error; what was not committed stays pending in the group.
    pub fn stop_on_failure(mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.failed = Some(flag);
        self
    }

    fn fail(&mut self, error: StreamConnError) {
        if let Some(flag) = &self.failed {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.pipeline.clear();
        self.error.get_or_insert(error);
    }

    /// Sends the batch being built (if any).
    fn send(&mut self) {
        if self.batch.is_empty() || self.error.is_some() {
            return;
        }
        let encoded = self.batch.take(&self.target);
        if let Err(e) = self.pipeline.send(&mut self.conn, encoded) {
            self.fail(e);
        }
    }

    /// Takes the replies that arrived (all of them, waiting, when `wait`).
    fn receive(&mut self, wait: bool) {
        while !self.pipeline.is_empty() && self.error.is_none() {
            let reply = if wait {
                self.pipeline.receive(&mut self.conn).map(Some)
            } else {
                self.pipeline.try_receive(&mut self.conn)
            };
            match reply {
                Ok(Some(done)) => {
                    let (batch, counts) = (done.batch, done.counts);
                    self.stats.committed += counts.committed;
                    self.stats.duplicates += counts.duplicates;
                    self.stats.unverified += counts.unverified;
                    self.stats.batches += 1;
                    if let Err(e) = self.acknowledge(&batch) {
                        self.fail(e);
                    }
                    self.batch.recycle(batch);
                }
                Ok(None) => return,
                Err(e) => self.fail(e),
            }
        }
    }

    /// Two servers: `XACK` the batch's entries on the input's server.
    fn acknowledge(&mut self, batch: &EncodedBatch) -> Result<(), StreamConnError> {
        match self.acks_conn.as_mut() {
            Some(conn) => batch.acknowledge(conn),
            None => Ok(()),
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(2);

impl<O: StreamOutput> Sink<O, StreamEntry> for RedisStreamSink<O> {
    type Output = SinkStats;

    fn accept(&mut self, item: Emitted<O, StreamEntry>) {
        if self.error.is_some() {
            return; // nothing more is committed: the entries stay pending
        }
        let sequence = match &item {
            Emitted::Record { sequence, .. } | Emitted::Failed { sequence, .. } => *sequence,
            Emitted::Watermark(_) => return,
        };
        // The outputs of one record come together: the first commits its entry.
        if self.last_sequence.replace(sequence) == Some(sequence) {
            self.stats.duplicates += 1;
            return;
        }
        let (entry, kind, data, error) = match &item {
            Emitted::Record { value, .. } => (value.entry(), Kind::Data, value.payload(), None),
            Emitted::Failed { input, error, .. } => {
                let kind = if self.target.side.is_some() {
                    Kind::Error
                } else {
                    Kind::Skip
                };
                (
                    input,
                    kind,
                    input.payload().unwrap_or_default(),
                    Some(error.to_string()),
                )
            }
            Emitted::Watermark(_) => return,
        };
        let record = CommitRecord {
            stream: entry.stream(),
            id: entry.id(),
            kind,
            data,
            error: error.as_deref().unwrap_or(""),
            fence: entry.fence(),
        };
        self.batch.add(&self.target, record);
        if self.batch.len() >= self.batch_size {
            self.send();
        }
    }

    fn has_room(&self) -> bool {
        self.pipeline.len() < WINDOW || self.error.is_some()
    }

    fn flush(&mut self) {
        self.receive(false);
        self.send();
    }

    fn wait_for_room(&mut self, timeout: Duration) -> bool {
        self.conn.readable(timeout);
        self.receive(false);
        true
    }

    fn finish(&mut self) -> Result<SinkStats, BoxError> {
        self.send();
        self.receive(true);
        match self.error.take() {
            Some(e) => Err(format!(
                "committing to {}: {e} (what was not committed stays pending in the group)",
                self.target.output
            )
            .into()),
            None => Ok(self.stats),
        }
    }
}
