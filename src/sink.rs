//! Partition sinks: where each core's operator puts its outputs.

use crate::element::Emitted;
use crate::source::BoxError;

/// One partition's output.
///
/// ```
/// use ringwait::sink::{Sink, CollectSink};
/// use ringwait::Emitted;
/// let mut s: CollectSink<u32, u32> = CollectSink::default();
/// s.accept(Emitted::Watermark(3));
/// assert_eq!(s.finish().unwrap().len(), 1);
/// ```
pub trait Sink<Out, In>: 'static {
    /// What the sink hands back when its partition finishes.
    type Output: Send + 'static;

    /// Takes one output. Only called while [`has_room`](Self::has_room) is true.
    fn accept(&mut self, item: Emitted<Out, In>);

    /// Whether the sink can take another item now; while false the operator keeps its outputs
    /// and, once full, stops reading input (backpressure).
    fn has_room(&self) -> bool {
        true
    }

    /// End of input: flush and return the result.
    fn finish(&mut self) -> Result<Self::Output, BoxError>;

    /// The partition finished a round of intake and emission: a sink that gathers outputs
    /// may pass them on now. Called once per round of the partition's loop, not per record.
    fn flush(&mut self) {}

    /// While [`has_room`](Self::has_room) is false: blocks the calling thread until room
    /// may have been made, at most `timeout` (it may return early). Returns false, at once,
    /// when the sink cannot be waited on this way; the partition then sleeps on its
    /// executor's timer. Only called when nothing else on the partition's executor needs to
    /// run (see [`crate::function::AsyncFunction::completes_inline`]).
    fn wait_for_room(&mut self, timeout: std::time::Duration) -> bool {
        let _ = timeout;
        false
    }

    /// Committing sinks: the position after everything accepted so far (e.g. bytes written);
    /// saved with every snapshot and handed back to [`restore`](Self::restore).
    fn position(&self) -> u64 {
        0
    }

    /// Checkpoint barrier `epoch` passed this partition: everything accepted so far came
    /// before it, nothing after. The partition's snapshot for `epoch` (which holds
    /// [`position`](Self::position) as of now) is *staged* at this point, not yet durable:
    /// its flush runs after this call, and the epoch completes only when every partition's
    /// snapshot is durable (then [`commit`](Self::commit) is called). So: make what was
    /// accepted durable, or pass the barrier downstream behind it, but do not treat it as
    /// committed before `commit(epoch)`; if the epoch never completes, a restart restores
    /// an earlier one and [`restore`](Self::restore) cuts everything after that one's
    /// position away. An error fails the checkpoint and the pipeline. Called only while
    /// [`has_room`](Self::has_room) is true.
    fn barrier(&mut self, epoch: u64) -> Result<(), BoxError> {
        let _ = epoch;
        Ok(())
    }

    /// Checkpoint `epoch` completed: every partition has its snapshot; outputs up to the
    /// barrier may become visible.
    fn commit(&mut self, epoch: u64) -> Result<(), BoxError> {
        let _ = epoch;
        Ok(())
    }

    /// Before a checkpointed run starts: drop everything after `position` (the position saved
    /// with the snapshot being restored; 0 on a fresh start).
    fn restore(&mut self, position: u64) -> Result<(), BoxError> {
        let _ = position;
        Ok(())
    }
}

/// A committing sink that writes each output as one line to a file of its own: its position is
/// the file length; a barrier flushes and `fdatasync`s; a restore truncates the file back to
/// the snapshot's length, so after any crash the file holds each output exactly once.
///
/// A write error is never retried nor dropped: the first one poisons the sink (a partial
/// write left an unknown prefix of the buffer in the file, so writing the buffer again would
/// duplicate it), and every later [`barrier`](Sink::barrier) and [`finish`](Sink::finish)
/// fails with it, naming the file and the OS error. The failed barrier fails the checkpoint,
/// so the last committed state stays what a restore goes back to.
///
/// ```
/// use ringwait::sink::{FileSink, Sink};
/// use ringwait::Emitted;
/// # let path = std::env::temp_dir().join(format!("rw-doc-filesink-{}", std::process::id()));
/// let mut sink = FileSink::create(&path, |v: &u64, out: &mut Vec<u8>| out.extend_from_slice(v.to_string().as_bytes()))?;
/// let sink: &mut dyn Sink<u64, u64, Output = u64> = &mut sink;
/// sink.restore(0)?; // a fresh start
/// sink.accept(Emitted::Record { value: 1, timestamp: None, sequence: 0 });
/// sink.barrier(1)?; // durable: "1\n"
/// let committed = sink.position();
/// sink.accept(Emitted::Record { value: 2, timestamp: None, sequence: 1 });
/// sink.restore(committed)?; // a crash and a restore drop what came after the barrier
/// sink.finish()?;
/// assert_eq!(std::fs::read_to_string(&path)?, "1\n");
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
pub struct FileSink<W> {
    file: std::fs::File,
    path: std::path::PathBuf,
    buf: Vec<u8>,
    written: u64,
    format: W,
    /// The first write error (see the type's docs); the sink writes nothing after it.
    failed: Option<std::io::Error>,
}

impl<W> FileSink<W> {
    /// Opens (creating, not truncating) `path`; `format` appends one output's text (without
    /// the newline). Call [`Sink::restore`] before writing to set the start.
    pub fn create(path: impl AsRef<std::path::Path>, format: W) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let written = file.metadata()?.len();
        Ok(FileSink {
            file,
            path,
            buf: Vec::with_capacity(1 << 16),
            written,
            format,
            failed: None,
        })
    }

    /// Writes the buffer once; on an error the sink is poisoned and the buffer dropped (its
    /// prefix may be in the file already).
    fn flush_buf(&mut self) {
        use std::io::Write;
        if self.failed.is_none() {
            if let Err(e) = self.file.write_all(&self.buf) {
                self.failed = Some(e);
            }
        }
        self.buf.clear();
    }

    /// Writes what is buffered and waits until it is on disk; fails with the first write
    /// error, if there was one.
    fn make_durable(&mut self) -> Result<(), BoxError> {
        self.flush_buf();
        if let Some(e) = &self.failed {
            let copy = std::io::Error::new(e.kind(), e.to_string());
            return Err(self.io_error("write", copy));
        }
        self.file.sync_data().map_err(|e| self.io_error("sync", e))
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> BoxError {
        format!("could not {what} {}: {e}", self.path.display()).into()
    }
}

impl<Out: 'static, In: 'static, W: FnMut(&Out, &mut Vec<u8>) + 'static> Sink<Out, In>
    for FileSink<W>
{
    type Output = u64;

    fn accept(&mut self, item: Emitted<Out, In>) {
        if let Emitted::Record { value, .. } = item {
            let before = self.buf.len();
            (self.format)(&value, &mut self.buf);
            self.buf.push(b'\n');
            self.written += (self.buf.len() - before) as u64;
            if self.buf.len() >= 1 << 16 {
                // An error poisons the sink: the next barrier or finish reports it.
                self.flush_buf();
            }
        }
    }

    fn finish(&mut self) -> Result<u64, BoxError> {
        self.make_durable()?;
        Ok(self.written)
    }

    fn position(&self) -> u64 {
        self.written
    }

    fn barrier(&mut self, _epoch: u64) -> Result<(), BoxError> {
        self.make_durable()
    }

    fn restore(&mut self, position: u64) -> Result<(), BoxError> {
        use std::io::{Seek, SeekFrom};
        self.buf.clear();
        let len = self
            .file
            .metadata()
            .map_err(|e| self.io_error("stat", e))?
            .len();
        if len < position {
            return Err(format!(
                "{} is {len} bytes long, shorter than its committed length {position}",
                self.path.display()
            )
            .into());
        }
        self.file
            .set_len(position)
            .and_then(|()| self.file.seek(SeekFrom::Start(position)).map(|_| ()))
            .map_err(|e| self.io_error("truncate", e))?;
        self.written = position;
        self.failed = None;
        Ok(())
    }
}

/// Counts what it receives and drops it; for benchmarks.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountingSink {
    /// Record outputs.
    pub records: u64,
    /// Watermarks.
    pub watermarks: u64,
    /// Side-output failures.
    pub failed: u64,
}

impl<Out: 'static, In: 'static> Sink<Out, In> for CountingSink {
    type Output = CountingSink;

    #[inline]
    fn accept(&mut self, item: Emitted<Out, In>) {
        match item {
            Emitted::Record { value, .. } => {
                std::hint::black_box(value);
                self.records += 1
            }
            Emitted::Watermark(_) => self.watermarks += 1,
            Emitted::Failed { .. } => self.failed += 1,
        }
    }

    fn finish(&mut self) -> Result<CountingSink, BoxError> {
        Ok(*self)
    }
}

/// Collects every output; for tests and small jobs.
pub struct CollectSink<Out, In> {
    items: Vec<Emitted<Out, In>>,
}

impl<Out, In> Default for CollectSink<Out, In> {
    fn default() -> Self {
        CollectSink { items: Vec::new() }
    }
}

impl<Out: Send + 'static, In: Send + 'static> Sink<Out, In> for CollectSink<Out, In> {
    type Output = Vec<Emitted<Out, In>>;

    fn accept(&mut self, item: Emitted<Out, In>) {
        self.items.push(item);
    }

    fn finish(&mut self) -> Result<Self::Output, BoxError> {
        Ok(std::mem::take(&mut self.items))
    }
}

/// A sink that moves its outputs to another thread a batch at a time, through a
/// [`batched`](crate::queue::batched) queue: one queue operation (and one cache-line hand-off)
/// per batch instead of per record, and batches recycled. A batch leaves when it holds the
/// queue's batch length, and at every [`flush`](Sink::flush) (each round of the partition's
/// loop), so an output waits at most one round. Barriers travel in the batch behind the
/// outputs before them.
///
/// ```
/// use ringwait::sink::{BatchQueueSink, Sink};
/// use ringwait::{Emitted, queue};
/// let (tx, mut rx) = queue::batched::<Emitted<u32, u32>>(4, 2);
/// let mut sink: BatchQueueSink<u32, u32, Emitted<u32, u32>> = BatchQueueSink::new(tx);
/// sink.accept(Emitted::Watermark(1));
/// assert!(matches!(rx.pop(), queue::Pop::Empty));
/// sink.flush();
/// assert!(matches!(rx.pop(), queue::Pop::Item(Emitted::Watermark(1))));
/// ```
pub struct BatchQueueSink<Out, In, M = Emitted<Out, In>> {
    queue: crate::queue::BatchSender<M>,
    batch: Vec<M>,
    /// Items accepted after the consumer had gone.
    lost: u64,
    _types: std::marker::PhantomData<fn(Out, In)>,
}

impl<Out, In, M> BatchQueueSink<Out, In, M> {
    /// Sends to `queue`, in batches of its batch length.
    pub fn new(queue: crate::queue::BatchSender<M>) -> Self {
        BatchQueueSink {
            batch: queue.empty_batch(),
            queue,
            lost: 0,
            _types: std::marker::PhantomData,
        }
    }

    /// Sends the batch if the queue has room (else it waits for the next round; it is
    /// counted lost if the consumer is gone).
    fn send(&mut self) {
        if self.batch.is_empty() || (self.queue.is_full() && !self.queue.is_disconnected()) {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, self.queue.empty_batch());
        match self.queue.try_send(batch) {
            Ok(()) => {}
            Err(crate::queue::PushError::Full(batch)) => self.batch = batch,
            Err(crate::queue::PushError::Disconnected(batch)) => {
                self.lost += batch.len() as u64;
            }
        }
    }
}

impl<Out: 'static, In: 'static, M: QueueItem<Out, In>> Sink<Out, In>
    for BatchQueueSink<Out, In, M>
{
    type Output = ();

    #[inline]
    fn accept(&mut self, item: Emitted<Out, In>) {
        self.batch.push(M::output(item));
        if self.batch.len() >= self.queue.batch_len() {
            self.send();
        }
    }

    fn has_room(&self) -> bool {
        self.batch.len() + 1 < self.queue.batch_len()
            || !self.queue.is_full()
            || self.queue.is_disconnected()
    }

    fn flush(&mut self) {
        self.send();
    }

    fn wait_for_room(&mut self, timeout: std::time::Duration) -> bool {
        self.queue.wait_for_room(timeout);
        true
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            if let Err(crate::queue::PushError::Disconnected(batch)) =
                self.queue.send_blocking(batch)
            {
                self.lost += batch.len() as u64;
            }
        }
        self.queue.close();
        undelivered(self.lost)
    }

    fn barrier(&mut self, epoch: u64) -> Result<(), BoxError> {
        if let Some(marker) = M::barrier(epoch) {
            self.batch.push(marker);
            self.send();
        }
        if self.lost > 0 {
            return Err(CONSUMER_GONE.into());
        }
        Ok(())
    }
}

/// A queue sink's consumer went away.
const CONSUMER_GONE: &str = "the consumer of the output queue went away";

/// At the end: a consumer that took everything and then left is fine; one that left early
/// lost `lost` outputs.
fn undelivered(lost: u64) -> Result<(), BoxError> {
    if lost > 0 {
        return Err(format!("{CONSUMER_GONE}; {lost} output(s) were not delivered").into());
    }
    Ok(())
}

/// What a [`QueueSink`] puts into its queue: its outputs and, for item types that carry them,
/// checkpoint barriers (in order behind the outputs emitted before them).
pub trait QueueItem<Out, In>: Sized + 'static {
    /// The queue item for one output.
    fn output(item: Emitted<Out, In>) -> Self;

    /// The queue item marking checkpoint barrier `epoch`, or `None` if this item type does
    /// not carry barriers (the default: the barrier then needs no action from the sink).
    fn barrier(epoch: u64) -> Option<Self> {
        let _ = epoch;
        None
    }
}

impl<Out: 'static, In: 'static> QueueItem<Out, In> for Emitted<Out, In> {
    #[inline]
    fn output(item: Emitted<Out, In>) -> Self {
        item
    }
}

/// A sink that hands outputs to another thread through a [`crate::queue`] (for example a
/// writer that merges the partitions into one file). A full queue is backpressure. With an
/// item type `M` that carries barriers ([`QueueItem::barrier`]), checkpoint barriers travel
/// in the queue too, so the consumer knows what precedes each one.
///
/// ```
/// use ringwait::queue::{bounded, Pop};
/// use ringwait::sink::{QueueSink, Sink};
/// use ringwait::Emitted;
///
/// let (tx, rx) = bounded(4);
/// let mut sink: QueueSink<u32, u32> = QueueSink::new(tx);
/// sink.accept(Emitted::Watermark(7));
/// assert!(matches!(rx.pop(), Pop::Item(Emitted::Watermark(7))));
/// ```
pub struct QueueSink<Out, In, M = Emitted<Out, In>> {
    queue: crate::queue::Producer<M>,
    /// Items accepted after the consumer had gone.
    lost: u64,
    _types: std::marker::PhantomData<fn(Out, In)>,
}

impl<Out, In, M> QueueSink<Out, In, M> {
    /// Wraps the producer end of a queue.
    pub fn new(queue: crate::queue::Producer<M>) -> Self {
        QueueSink {
            queue,
            lost: 0,
            _types: std::marker::PhantomData,
        }
    }
}

impl<Out: 'static, In: 'static, M: QueueItem<Out, In>> Sink<Out, In> for QueueSink<Out, In, M> {
    type Output = ();

    #[inline]
    fn accept(&mut self, item: Emitted<Out, In>) {
        // has_room() was true and this core is the only producer, so the push fits; if the
        // consumer is gone the item has nowhere to go and finish() reports it.
        if self.queue.try_push(M::output(item)).is_err() {
            self.lost += 1;
        }
    }

    fn has_room(&self) -> bool {
        !self.queue.is_full() || self.queue.is_disconnected()
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        self.queue.close();
        undelivered(self.lost)
    }

    fn barrier(&mut self, epoch: u64) -> Result<(), BoxError> {
        match M::barrier(epoch) {
            Some(marker) => self
                .queue
                .try_push(marker)
                .map_err(|_| CONSUMER_GONE.into()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{bounded, Pop};

    /// `/dev/full` fails every write with ENOSPC: the error reaches the barrier and finish
    /// (with the path and the OS error), and nothing is written twice.
    #[test]
    fn a_write_error_fails_every_later_barrier_and_finish() {
        let Ok(mut sink) = FileSink::create("/dev/full", |v: &u64, out: &mut Vec<u8>| {
            out.extend_from_slice(&[b'x'; 1000]);
            let _ = v;
        }) else {
            panic!("/dev/full must exist on Linux");
        };
        let sink: &mut dyn Sink<u64, u64, Output = u64> = &mut sink;
        for i in 0..100u64 {
            sink.accept(Emitted::Record {
                value: i,
                timestamp: None,
                sequence: i,
            });
        }
        let first = sink.barrier(1).unwrap_err().to_string();
        assert!(first.contains("/dev/full"), "{first}");
        assert!(first.contains("No space left on device"), "{first}");
        let again = sink.barrier(2).unwrap_err().to_string();
        assert_eq!(again, first, "poisoned: the same error, not a retry");
        assert!(sink.finish().is_err());
    }

    #[test]
    fn a_consumer_that_took_everything_and_left_is_not_an_error() {
        let (tx, rx) = bounded(4);
        let mut sink: QueueSink<u32, u32> = QueueSink::new(tx);
        sink.accept(Emitted::Watermark(1));
        assert!(matches!(rx.pop(), Pop::Item(Emitted::Watermark(1))));
        drop(rx);
        assert!(sink.finish().is_ok());
    }

    #[test]
    fn outputs_accepted_after_the_consumer_left_are_reported_as_lost() {
        let (tx, rx) = bounded(4);
        let mut sink: QueueSink<u32, u32> = QueueSink::new(tx);
        drop(rx);
        sink.accept(Emitted::Watermark(1));
        let err = sink.finish().unwrap_err().to_string();
        assert!(err.contains("1 output(s) were not delivered"), "{err}");
    }
}
