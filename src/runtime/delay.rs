//! A delay line: completes result handles a fixed time after they were pushed, from a single
//! timer task — how to model a store with constant latency without one timer per record.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::timer::Timer;

use crate::function::ResultFuture;

struct Inner<Out> {
    queue: RefCell<VecDeque<(Instant, ResultFuture<Out>, Out)>>,
    waker: RefCell<Option<Waker>>,
}

/// Completes each pushed handle with its value `delay` after the push, in push order.
///
/// Must be created on a glommio executor (it spawns its task there). The task ends when the
/// line is dropped. `spin` makes the task yield instead of sleeping for the last stretch
/// before a deadline, trading CPU for punctuality on a dedicated core.
///
/// ```
/// use ringwait::runtime::{DelayLine, Pipeline};
/// use ringwait::source::GeneratorSource;
/// use ringwait::sink::CountingSink;
/// use ringwait::{AsyncFunction, ResultFuture, OperatorConfig};
/// use std::time::Duration;
///
/// struct Slow(DelayLine<u64>);
/// impl AsyncFunction for Slow {
///     type In = u64;
///     type Out = u64;
///     fn invoke(&self, x: &u64, r: ResultFuture<u64>) { self.0.push(r, *x); }
/// }
/// let report = Pipeline::builder().partitions(1)
///     .operator(OperatorConfig::builder().capacity(100).build().unwrap())
///     .build().unwrap()
///     .run(
///         |p| Ok(GeneratorSource::new(p.index, p.partitions, 1_000, |i| i)),
///         |_p| async { Ok(Slow(DelayLine::start(Duration::from_micros(200), Duration::ZERO, 100))) },
///         |_p| Ok(CountingSink::default()),
///     ).unwrap();
/// assert_eq!(report.merged.outputs, 1_000);
/// assert!(report.merged.latency.min() >= 200_000);
/// ```
pub struct DelayLine<Out: 'static> {
    inner: Rc<Inner<Out>>,
    delay: Duration,
}

impl<Out: 'static> DelayLine<Out> {
    /// Starts the line's task on the current executor; `capacity` presizes its queue.
    pub fn start(delay: Duration, spin: Duration, capacity: usize) -> Self {
        let inner = Rc::new(Inner {
            queue: RefCell::new(VecDeque::with_capacity(capacity)),
            waker: RefCell::new(None),
        });
        glommio::spawn_local(run(Rc::downgrade(&inner), spin)).detach();
        DelayLine { inner, delay }
    }

    /// Completes `result` with `value` after the delay.
    #[inline]
    pub fn push(&self, result: ResultFuture<Out>, value: Out) {
        let due = Instant::now() + self.delay;
        let mut q = self.inner.queue.borrow_mut();
        let was_empty = q.is_empty();
        q.push_back((due, result, value));
        drop(q);
        if was_empty {
            if let Some(w) = self.inner.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Handles waiting.
    pub fn len(&self) -> usize {
        self.inner.queue.borrow().len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<Out: 'static> Drop for DelayLine<Out> {
    fn drop(&mut self) {
        if let Some(w) = self.inner.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

async fn run<Out: 'static>(line: Weak<Inner<Out>>, spin: Duration) {
    loop {
        let next_due = {
            let Some(inner) = line.upgrade() else { return };
            let due = inner.queue.borrow().front().map(|e| e.0);
            due
        };
        let Some(due) = next_due else {
            wait_for_push(&line).await;
            continue;
        };
        let now = Instant::now();
        if due > now {
            let left = due - now;
            if left > spin {
                Timer::new(left - spin).await;
            } else {
                futures_lite::future::yield_now().await;
            }
            continue;
        }
        let Some(inner) = line.upgrade() else { return };
        loop {
            let entry = {
                let mut q = inner.queue.borrow_mut();
                match q.front() {
                    Some(e) if e.0 <= now => q.pop_front(),
                    _ => None,
                }
            };
            let Some((_, result, value)) = entry else {
                break;
            };
            let _ = result.complete_one(value);
        }
    }
}

/// Resolves when the queue is non-empty or the line was dropped.
async fn wait_for_push<Out: 'static>(line: &Weak<Inner<Out>>) {
    poll_fn(|cx| {
        let Some(inner) = line.upgrade() else {
            return Poll::Ready(());
        };
        if !inner.queue.borrow().is_empty() {
            return Poll::Ready(());
        }
        *inner.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    })
    .await
}
