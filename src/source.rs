//! Partition sources: where each core's operator pulls its input from.
//!
//! A source belongs to one partition and runs on that partition's core, so it needs no
//! synchronisation; sources fed from another thread use a [`crate::queue`].
//! The operator pulls only while it has capacity, so a full operator leaves the source alone —
//! that is the backpressure (SPEC S3).

use crate::element::StreamElement;

/// A boxed error from a source or sink, with its context in the message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a source has for the operator now.
#[derive(Debug, PartialEq, Eq)]
pub enum SourceEvent<T> {
    /// The next element.
    Element(StreamElement<T>),
    /// Nothing right now; ask again a little later.
    Idle,
    /// End of input: the operator drains what it holds and the partition finishes.
    End,
}

/// One partition's input.
///
/// ```
/// use ringwait::source::{Source, SourceEvent, IterSource};
/// use ringwait::StreamElement;
/// let mut s = IterSource::new((0..2u64).map(StreamElement::record));
/// assert_eq!(s.next().unwrap(), SourceEvent::Element(StreamElement::record(0)));
/// assert_eq!(s.next().unwrap(), SourceEvent::Element(StreamElement::record(1)));
/// assert_eq!(s.next().unwrap(), SourceEvent::End);
/// assert_eq!(s.position(), 2);
/// ```
pub trait Source: 'static {
    /// Record type.
    type Item: 'static;

    /// The next event. An error stops the pipeline and names the partition.
    fn next(&mut self) -> Result<SourceEvent<Self::Item>, BoxError>;

    /// Replay position after the elements returned so far (e.g. an index or a byte offset).
    fn position(&self) -> u64;

    /// A second number a replay needs besides [`position`](Self::position) (e.g. the index of
    /// the next line when the position is a byte offset); saved with every snapshot.
    fn replay_index(&self) -> u64 {
        0
    }

    /// Replayable sources: resume after the elements a snapshot covered, at `position` and
    /// `index` as returned by [`position`](Self::position) and
    /// [`replay_index`](Self::replay_index) then. Checkpointed pipelines
    /// ([`crate::runtime::Pipeline::run_checkpointed`]) call it before reading. The default
    /// refuses: the source cannot replay.
    fn seek(&mut self, position: u64, index: u64) -> Result<(), BoxError> {
        let _ = index;
        Err(format!("this source cannot replay from position {position}").into())
    }

    /// After [`SourceEvent::Idle`]: blocks the calling thread until input may have arrived,
    /// at most `timeout` (it may return early). Returns false, at once, when the source
    /// cannot be waited on this way; the partition then sleeps on its executor's timer and
    /// asks again. Only called when nothing else on the partition's executor needs to run
    /// (see [`crate::function::AsyncFunction::completes_inline`]).
    fn wait_for_input(&mut self, timeout: std::time::Duration) -> bool {
        let _ = timeout;
        false
    }
}

/// A source over an iterator of elements.
pub struct IterSource<I> {
    iter: I,
    taken: u64,
}

impl<I> IterSource<I> {
    /// Wraps `iter`.
    pub fn new(iter: I) -> Self {
        IterSource { iter, taken: 0 }
    }
}

impl<T: 'static, I: Iterator<Item = StreamElement<T>> + 'static> Source for IterSource<I> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Result<SourceEvent<T>, BoxError> {
        Ok(match self.iter.next() {
            Some(e) => {
                self.taken += 1;
                SourceEvent::Element(e)
            }
            None => SourceEvent::End,
        })
    }

    fn position(&self) -> u64 {
        self.taken
    }
}

/// The records `i` in `0..total` with `i % partitions == partition`, mapped by `make`: the
/// generated input of the benchmark workloads. Its position is the next global index.
///
/// ```
/// use ringwait::source::{Source, SourceEvent, GeneratorSource};
/// let mut s = GeneratorSource::new(1, 2, 5, |i| i * 10);
/// let mut got = vec![];
/// while let SourceEvent::Element(e) = s.next().unwrap() { got.push(e); }
/// assert_eq!(got, vec![ringwait::StreamElement::record(10), ringwait::StreamElement::record(30)]);
/// ```
pub struct GeneratorSource<F> {
    next: u64,
    step: u64,
    total: u64,
    make: F,
}

impl<F> GeneratorSource<F> {
    /// Partition `partition` of `partitions` over `0..total`.
    pub fn new(partition: usize, partitions: usize, total: u64, make: F) -> Self {
        GeneratorSource {
            next: partition as u64,
            step: partitions.max(1) as u64,
            total,
            make,
        }
    }

    /// Resumes at global index `position` (as returned by [`Source::position`]).
    pub fn resume_at(mut self, position: u64) -> Self {
        self.next = position;
        self
    }
}

impl<T: 'static, F: FnMut(u64) -> T + 'static> Source for GeneratorSource<F> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Result<SourceEvent<T>, BoxError> {
        if self.next >= self.total {
            return Ok(SourceEvent::End);
        }
        let i = self.next;
        self.next += self.step;
        Ok(SourceEvent::Element(StreamElement::record((self.make)(i))))
    }

    fn position(&self) -> u64 {
        self.next
    }

    /// Resumes at global index `position`.
    fn seek(&mut self, position: u64, _index: u64) -> Result<(), BoxError> {
        self.next = position;
        Ok(())
    }
}

/// A queue's answer as a source event, counting the elements taken.
#[inline]
fn event_of<T>(pop: crate::queue::Pop<StreamElement<T>>, taken: &mut u64) -> SourceEvent<T> {
    match pop {
        crate::queue::Pop::Item(e) => {
            *taken += 1;
            SourceEvent::Element(e)
        }
        crate::queue::Pop::Empty => SourceEvent::Idle,
        crate::queue::Pop::Closed => SourceEvent::End,
    }
}

/// A source fed from another thread through a [`crate::queue`] (for example a reader thread
/// that parses a file and deals records to the partitions).
pub struct QueueSource<T> {
    queue: crate::queue::Consumer<StreamElement<T>>,
    taken: u64,
}

impl<T> QueueSource<T> {
    /// Wraps the consumer end of a queue.
    pub fn new(queue: crate::queue::Consumer<StreamElement<T>>) -> Self {
        QueueSource { queue, taken: 0 }
    }
}

impl<T: 'static> Source for QueueSource<T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Result<SourceEvent<T>, BoxError> {
        Ok(event_of(self.queue.pop(), &mut self.taken))
    }

    fn position(&self) -> u64 {
        self.taken
    }
}

/// A source fed from another thread a batch at a time, through a
/// [`batched`](crate::queue::batched) queue: one queue operation per batch instead of per
/// record, and the emptied batches go back to be reused.
///
/// ```
/// use ringwait::source::{BatchQueueSource, Source, SourceEvent};
/// use ringwait::{queue, StreamElement};
/// let (tx, rx) = queue::batched(2, 8);
/// tx.try_send(vec![StreamElement::record(1u32), StreamElement::record(2)]).unwrap();
/// tx.close();
/// let mut s = BatchQueueSource::new(rx);
/// assert!(matches!(s.next().unwrap(), SourceEvent::Element(_)));
/// assert!(matches!(s.next().unwrap(), SourceEvent::Element(_)));
/// assert_eq!(s.next().unwrap(), SourceEvent::End);
/// ```
pub struct BatchQueueSource<T> {
    queue: crate::queue::BatchReceiver<StreamElement<T>>,
    taken: u64,
}

impl<T> BatchQueueSource<T> {
    /// Takes from the receiving end of a batched queue.
    pub fn new(queue: crate::queue::BatchReceiver<StreamElement<T>>) -> Self {
        BatchQueueSource { queue, taken: 0 }
    }
}

impl<T: 'static> Source for BatchQueueSource<T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Result<SourceEvent<T>, BoxError> {
        Ok(event_of(self.queue.pop(), &mut self.taken))
    }

    fn position(&self) -> u64 {
        self.taken
    }

    fn wait_for_input(&mut self, timeout: std::time::Duration) -> bool {
        self.queue.wait(timeout);
        true
    }
}

/// A source that ends as soon as a shared flag is set: how a job stops intake at once (a
/// failed record under a fail-fast policy, or a signal) while every record already taken is
/// still completed, emitted and checkpointed as usual. The flag costs one relaxed load per
/// call.
///
/// ```
/// use std::sync::{atomic::{AtomicBool, Ordering}, Arc};
/// use ringwait::source::{IterSource, Source, SourceEvent, StopSource};
/// use ringwait::StreamElement;
/// let stop = Arc::new(AtomicBool::new(false));
/// let mut s = StopSource::new(IterSource::new((0..10u32).map(StreamElement::record)), stop.clone());
/// assert!(matches!(s.next().unwrap(), SourceEvent::Element(_)));
/// stop.store(true, Ordering::Relaxed);
/// assert_eq!(s.next().unwrap(), SourceEvent::End);
/// assert_eq!(s.position(), 1);
/// ```
pub struct StopSource<S> {
    inner: S,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<S> StopSource<S> {
    /// Wraps `inner`; it ends once `stop` is set.
    pub fn new(inner: S, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        StopSource { inner, stop }
    }
}

impl<S: Source> Source for StopSource<S> {
    type Item = S::Item;

    #[inline]
    fn next(&mut self) -> Result<SourceEvent<S::Item>, BoxError> {
        if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(SourceEvent::End);
        }
        self.inner.next()
    }

    fn position(&self) -> u64 {
        self.inner.position()
    }

    fn replay_index(&self) -> u64 {
        self.inner.replay_index()
    }

    fn seek(&mut self, position: u64, index: u64) -> Result<(), BoxError> {
        self.inner.seek(position, index)
    }

    fn wait_for_input(&mut self, timeout: std::time::Duration) -> bool {
        self.inner.wait_for_input(timeout)
    }
}
