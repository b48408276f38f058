//! Batches over a [`bounded`](super::bounded) queue: records cross threads a `Vec` at a time
//! (one queue operation and one cache-line hand-off per batch, not per record), and the
//! emptied `Vec`s travel back on a second queue to be filled again, so that in steady state
//! no batch is allocated.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::wake::{sleep_on, Sleeper};
use super::{bounded, Consumer, Pop, Producer, PushError};

/// Longest a blocked sender sleeps before it looks at the queue again on its own.
const SEND_SLEEP: Duration = Duration::from_millis(1);

/// Where each end of a batched queue sleeps.
#[derive(Default)]
struct Wakers {
    /// The receiver, waiting for a batch.
    data: Sleeper,
    /// The sender, waiting for room.
    room: Sleeper,
}

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
    let wakers = Arc::new(Wakers::default());
    (
        BatchSender {
            queue: tx,
            returns: returned,
            batch_len: batch_len.max(1),
            wakers: wakers.clone(),
        },
        BatchReceiver {
            queue: rx,
            current: VecDeque::new(),
            returns: back,
            wakers,
        },
    )
}

/// The sending end: sends whole batches, and hands out emptied ones to fill.
pub struct BatchSender<T> {
    queue: Producer<Vec<T>>,
    returns: Consumer<Vec<T>>,
    batch_len: usize,
    wakers: Arc<Wakers>,
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

    /// Sends without waiting (see [`Producer::try_push`]), and wakes the receiver if it
    /// sleeps.
    #[inline]
    pub fn try_send(&self, batch: Vec<T>) -> Result<(), PushError<Vec<T>>> {
        self.queue.try_push(batch)?;
        self.wakers.data.wake();
        Ok(())
    }

    /// Sends, sleeping while the queue is full until the receiver takes a batch.
    pub fn send_blocking(&self, mut batch: Vec<T>) -> Result<(), PushError<Vec<T>>> {
        loop {
            match self.try_send(batch) {
                Err(PushError::Full(b)) => batch = b,
                done => return done,
            }
            self.wait_for_room(SEND_SLEEP);
        }
    }

    /// Sleeps until the queue has room for a batch (or the receiver is gone), at most
    /// `timeout`; it may return early.
    pub fn wait_for_room(&self, timeout: Duration) {
        sleep_on(&[&self.wakers.room], timeout, || {
            !self.is_full() || self.is_disconnected()
        });
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
        self.wakers.data.wake();
    }
}

impl<T> Drop for BatchSender<T> {
    fn drop(&mut self) {
        self.close();
    }
}

/// The receiving end: takes the elements one at a time, and hands each emptied batch back.
pub struct BatchReceiver<T> {
    queue: Consumer<Vec<T>>,
    current: VecDeque<T>,
    returns: Producer<Vec<T>>,
    wakers: Arc<Wakers>,
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
                    self.wakers.room.wake();
                    let done = std::mem::replace(&mut self.current, batch.into());
                    // A full way back drops the batch: the sender then makes a new one.
                    let _ = self.returns.try_push(Vec::from(done));
                }
                Pop::Empty => return Pop::Empty,
                Pop::Closed => return Pop::Closed,
            }
        }
    }

    /// Whether [`pop`](Self::pop) would return at once with an element or the end.
    pub fn is_ready(&self) -> bool {
        !self.current.is_empty() || !self.queue.is_empty() || self.queue.is_closed()
    }

    /// Sleeps until a batch arrives or the sender closes, at most `timeout`; it may return
    /// early.
    pub fn wait(&self, timeout: Duration) {
        wait_any(&[self], timeout);
    }
}

/// Sleeps until any of `receivers` has a batch or is closed, at most `timeout`; it may
/// return early.
pub fn wait_any<T>(receivers: &[&BatchReceiver<T>], timeout: Duration) {
    let sleepers: smallvec::SmallVec<[&Sleeper; 8]> =
        receivers.iter().map(|r| &r.wakers.data).collect();
    sleep_on(&sleepers, timeout, || {
        receivers.iter().any(|r| r.is_ready())
    });
}

impl<T> Drop for BatchReceiver<T> {
    fn drop(&mut self) {
        self.queue.disconnect();
        self.wakers.room.wake();
    }
}
