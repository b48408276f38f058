//! Bounded lock-free queues between threads (a reader thread and a core, a core and a writer).
//!
//! A thin close protocol over `crossbeam::queue::ArrayQueue`: the producer pushes, then marks
//! the queue closed (release); a consumer that finds the queue empty checks the flag (acquire)
//! and, if closed, pops once more before reporting [`Pop::Closed`] — so no element pushed before
//! `close` is ever lost. A dropped consumer is noticed by the producer, so a writer that died
//! cannot leave its producer spinning forever. Under `--cfg loom` the array queue is replaced
//! by a model-checked stand-in and the protocol is checked exhaustively (`loom_tests` below).

use std::time::Duration;

use crate::sync::{Arc, AtomicBool, Ordering};

mod batch;
mod wake;

pub use batch::{batched, wait_any, BatchReceiver, BatchSender};
pub use wake::{sleep_on, Sleeper};

#[cfg(not(loom))]
type Inner<T> = crossbeam::queue::ArrayQueue<T>;

#[cfg(loom)]
struct Inner<T> {
    q: loom::sync::Mutex<std::collections::VecDeque<T>>,
    cap: usize,
}

#[cfg(loom)]
impl<T> Inner<T> {
    fn new(cap: usize) -> Self {
        Inner {
            q: loom::sync::Mutex::new(std::collections::VecDeque::new()),
            cap,
        }
    }
    fn push(&self, v: T) -> Result<(), T> {
        let mut q = self.q.lock().unwrap();
        if q.len() == self.cap {
            return Err(v);
        }
        q.push_back(v);
        Ok(())
    }
    fn pop(&self) -> Option<T> {
        self.q.lock().unwrap().pop_front()
    }
    fn len(&self) -> usize {
        self.q.lock().unwrap().len()
    }
    fn capacity(&self) -> usize {
        self.cap
    }
}

struct Shared<T> {
    queue: Inner<T>,
    closed: AtomicBool,
    consumer_gone: AtomicBool,
}

/// The sending end. Dropping it closes the queue.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving end.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
}

/// Result of [`Consumer::pop`].
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<T> {
    /// An element.
    Item(T),
    /// Nothing now; the producer is still there.
    Empty,
    /// The producer closed the queue and every element has been taken.
    Closed,
}

/// Why a push failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError<T> {
    /// The queue is full (only from [`Producer::try_push`]).
    #[error("queue is full")]
    Full(T),
    /// The consumer is gone; the element is handed back.
    #[error("the consumer of the queue is gone")]
    Disconnected(T),
}

/// A bounded queue of `capacity` elements.
///
/// ```
/// use ringwait::queue::{bounded, Pop};
/// let (tx, rx) = bounded(4);
/// tx.try_push(1).unwrap();
/// drop(tx); // closes
/// assert_eq!(rx.pop(), Pop::Item(1));
/// assert_eq!(rx.pop(), Pop::Closed);
/// ```
pub fn bounded<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    #[cfg(not(loom))]
    let queue = Inner::new(capacity.max(1));
    #[cfg(loom)]
    let queue = Inner::new(capacity.max(1));
    let shared = Arc::new(Shared {
        queue,
        closed: AtomicBool::new(false),
        consumer_gone: AtomicBool::new(false),
    });
    (
        Producer {
            shared: shared.clone(),
        },
        Consumer { shared },
    )
}

impl<T> Producer<T> {
    /// Pushes without waiting.
    #[inline]
    pub fn try_push(&self, value: T) -> Result<(), PushError<T>> {
        if self.shared.consumer_gone.load(Ordering::Acquire) {
            return Err(PushError::Disconnected(value));
        }
        self.shared.queue.push(value).map_err(PushError::Full)
    }

    /// Pushes, waiting while the queue is full (spinning briefly, then sleeping in short
    /// steps). Fails only if the consumer is gone. For threads that are not executors.
    pub fn push_blocking(&self, mut value: T) -> Result<(), PushError<T>> {
        let mut spins = 0u32;
        loop {
            match self.try_push(value) {
                Ok(()) => return Ok(()),
                Err(PushError::Full(v)) => value = v,
                Err(e) => return Err(e),
            }
            backoff(&mut spins);
        }
    }

    /// Whether the queue is full now.
    pub fn is_full(&self) -> bool {
        self.shared.queue.len() >= self.capacity()
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.shared.queue.capacity()
    }

    /// Whether the consumer has gone away.
    pub fn is_disconnected(&self) -> bool {
        self.shared.consumer_gone.load(Ordering::Acquire)
    }

    /// Marks the end of input. Elements pushed before are still delivered.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        self.close();
    }
}

impl<T> Consumer<T> {
    /// Takes the next element without waiting.
    #[inline]
    pub fn pop(&self) -> Pop<T> {
        if let Some(v) = self.shared.queue.pop() {
            return Pop::Item(v);
        }
        if !self.shared.closed.load(Ordering::Acquire) {
            return Pop::Empty;
        }
        // Closed: everything pushed before close() is visible now; take any last element.
        match self.shared.queue.pop() {
            Some(v) => Pop::Item(v),
            None => Pop::Closed,
        }
    }

    /// Takes the next element, waiting (spin, then short sleeps) while the queue is empty.
    /// `None` once closed and drained. For threads that are not executors.
    pub fn pop_blocking(&self) -> Option<T> {
        let mut spins = 0u32;
        loop {
            match self.pop() {
                Pop::Item(v) => return Some(v),
                Pop::Closed => return None,
                Pop::Empty => backoff(&mut spins),
            }
        }
    }

    /// Elements queued now.
    pub fn len(&self) -> usize {
        self.shared.queue.len()
    }

    /// Whether no element is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the producer closed the queue (elements may still be queued).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Tells the producer no element will be taken any more (as dropping does).
    pub fn disconnect(&self) {
        self.shared.consumer_gone.store(true, Ordering::Release);
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// Spin a little, then yield, then sleep up to 200 µs: cheap when the other side is quick,
/// gentle on a shared core when it is not.
fn backoff(spins: &mut u32) {
    *spins = spins.saturating_add(1);
    #[cfg(loom)]
    {
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    match *spins {
        0..=63 => std::hint::spin_loop(),
        64..=127 => std::thread::yield_now(),
        n => std::thread::sleep(Duration::from_micros(u64::from((n - 127).min(200)))),
    }
    #[cfg(loom)]
    let _ = Duration::ZERO;
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_element_pushed_before_close_is_delivered_across_threads() {
        const N: u64 = if cfg!(debug_assertions) {
            100_000
        } else {
            2_000_000
        };
        let (tx, rx) = bounded(64);
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                tx.push_blocking(i).unwrap();
            }
        });
        let mut expected = 0;
        while let Some(v) = rx.pop_blocking() {
            assert_eq!(v, expected, "in order, none lost");
            expected += 1;
        }
        assert_eq!(expected, N);
        producer.join().unwrap();
    }

    #[test]
    fn a_full_queue_hands_the_element_back() {
        let (tx, _rx) = bounded(1);
        tx.try_push(1).unwrap();
        assert_eq!(tx.try_push(2), Err(PushError::Full(2)));
    }

    #[test]
    fn a_dropped_consumer_releases_a_blocked_producer() {
        let (tx, rx) = bounded(1);
        tx.try_push(1).unwrap();
        let t = std::thread::spawn(move || tx.push_blocking(2));
        std::thread::sleep(Duration::from_millis(20));
        drop(rx);
        assert_eq!(t.join().unwrap(), Err(PushError::Disconnected(2)));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    #[test]
    fn close_never_loses_an_element() {
        loom::model(|| {
            let (tx, rx) = bounded(2);
            let t = loom::thread::spawn(move || {
                tx.try_push(1).unwrap();
                tx.try_push(2).unwrap();
                // dropping tx closes
            });
            let mut got = vec![];
            loop {
                match rx.pop() {
                    Pop::Item(v) => got.push(v),
                    Pop::Empty => loom::thread::yield_now(),
                    Pop::Closed => break,
                }
            }
            t.join().unwrap();
            assert_eq!(got, vec![1, 2]);
        });
    }

    #[test]
    fn producer_racing_a_dropped_consumer_never_blocks_or_loses_track() {
        loom::model(|| {
            let (tx, rx) = bounded::<u8>(1);
            let t = loom::thread::spawn(move || drop(rx));
            let first = tx.try_push(7);
            assert!(matches!(first, Ok(()) | Err(PushError::Disconnected(7))));
            t.join().unwrap();
            assert_eq!(tx.try_push(8), Err(PushError::Disconnected(8)));
        });
    }
}
