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

/// A sink that hands outputs to another thread through a [`crate::queue`] (for example a
/// writer that merges the partitions into one file). A full queue is backpressure.
pub struct QueueSink<Out, In> {
    queue: crate::queue::Producer<Emitted<Out, In>>,
    /// Items accepted after the consumer had gone.
    lost: u64,
}

impl<Out, In> QueueSink<Out, In> {
    /// Wraps the producer end of a queue.
    pub fn new(queue: crate::queue::Producer<Emitted<Out, In>>) -> Self {
        QueueSink { queue, lost: 0 }
    }
}

impl<Out: 'static, In: 'static> Sink<Out, In> for QueueSink<Out, In> {
    type Output = ();

    #[inline]
    fn accept(&mut self, item: Emitted<Out, In>) {
        // has_room() was true and this core is the only producer, so the push fits; if the
        // consumer is gone the item has nowhere to go and finish() reports it.
        if self.queue.try_push(item).is_err() {
            self.lost += 1;
        }
    }

    fn has_room(&self) -> bool {
        !self.queue.is_full() || self.queue.is_disconnected()
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        self.queue.close();
        // A consumer that took everything and then left is fine; one that left early lost
        // outputs.
        if self.lost > 0 {
            return Err(format!(
                "the consumer of the output queue went away; {} output(s) were not delivered",
                self.lost
            )
            .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{bounded, Pop};

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
