//! Batches over a [`bounded`](super::bounded) queue: records cross threads a `Vec` at a time
//! (one queue operation and one cache-line hand-off per batch, not per record), and the
//! emptied `Vec`s travel back on a second queue to be filled again, so that in steady state
//! no batch is allocated.

use std::collections::VecDeque;

use super::{bounded, Consumer, Pop, Producer, PushError};

/// A queue of up to `batches` batches of (usually) up to `batch_len` elements, with the way
/// back for emptied batches.
///
/// ```
/// use ringwait::queue::{batched, Pop};
/// let (tx, mut rx) = batched(2, 8);
/// let mut batch = tx.empty_batch();
/// batch.extend([1, 2]);
/// tx.try_send(batch).unwrap();
/// drop(tx); // closes
/// assert_eq!(rx.pop(), Pop::Item(1));
/// assert_eq!(rx.pop(), Pop::Item(2));
/// assert_eq!(rx.pop(), Pop::Closed);
/// ```
pub fn batched<T>(batches: usize, batch_len: usize) -> (BatchSender<T>, BatchReceiver<T>) {
    let (tx, rx) = bounded(batches);
    // Room for every batch that can be in flight, plus the two at the ends.
    let (back, returned) = bounded(batches + 2);
    (
        BatchSender {
            queue: tx,
            returns: returned,
            batch_len: batch_len.max(1),
        },
        BatchReceiver {
            queue: rx,
            current: VecDeque::new(),
            returns: back,
        },
    )
}

/// The sending end: sends whole batches, and hands out emptied ones to fill.
pub struct BatchSender<T> {
    queue: Producer<Vec<T>>,
    returns: Consumer<Vec<T>>,
    batch_len: usize,
}

impl<T> BatchSender<T> {
    /// How many elements a batch is meant to hold.
    pub fn batch_len(&self) -> usize {
        self.batch_len
    }

    /// An empty batch to fill: one the receiver handed back, or a new one.
    pub fn empty_batch(&self) -> Vec<T> {
        match self.returns.pop() {
            Pop::Item(batch) => batch,
            _ => Vec::with_capacity(self.batch_len),
        }
    }

    /// Sends without waiting (see [`Producer::try_push`]).
    #[inline]
    pub fn try_send(&self, batch: Vec<T>) -> Result<(), PushError<Vec<T>>> {
        self.queue.try_push(batch)
    }

    /// Sends, waiting while the queue is full (see [`Producer::push_blocking`]).
    pub fn send_blocking(&self, batch: Vec<T>) -> Result<(), PushError<Vec<T>>> {
        self.queue.push_blocking(batch)
    }

    /// Whether the queue holds as many batches as it can.
    pub fn is_full(&self) -> bool {
        self.queue.is_full()
    }

    /// Whether the receiver has gone away.
    pub fn is_disconnected(&self) -> bool {
        self.queue.is_disconnected()
    }

    /// Marks the end of input; batches sent before are still delivered.
    pub fn close(&self) {
        self.queue.close();
    }
}

/// The receiving end: takes the elements one at a time, and hands each emptied batch back.
pub struct BatchReceiver<T> {
    queue: Consumer<Vec<T>>,
    current: VecDeque<T>,
    returns: Producer<Vec<T>>,
}

impl<T> BatchReceiver<T> {
    /// The next element: from the batch at hand, else from the next batch in the queue.
    #[inline]
    pub fn pop(&mut self) -> Pop<T> {
        loop {
            if let Some(item) = self.current.pop_front() {
                return Pop::Item(item);
            }
            match self.queue.pop() {
                Pop::Item(batch) => {
                    let done = std::mem::replace(&mut self.current, batch.into());
                    // A full way back drops the batch: the sender then makes a new one.
                    let _ = self.returns.try_push(Vec::from(done));
                }
                Pop::Empty => return Pop::Empty,
                Pop::Closed => return Pop::Closed,
            }
        }
    }
}
