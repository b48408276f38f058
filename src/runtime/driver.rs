//! The per-partition loop: pull input while there is capacity, collect completions, fire
//! timers, emit — and sleep only when none of that has work.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use glommio::timer::Timer;

use super::checkpoint::PartitionCheckpoint;
use super::PipelineError;
use crate::function::AsyncFunction;
use crate::operator::{AsyncWaitOperator, ProcessError};
use crate::sink::Sink;
use crate::source::{Source, SourceEvent};
use crate::sync::{Arc, AtomicBool, Ordering};
use crate::time::{MonotonicClock, Nanos};

/// First pause after a source reported `Idle` (or a sink had no room for waiting outputs);
/// doubles up to [`MAX_IDLE_POLL`] while that lasts.
const MIN_IDLE_POLL: Duration = Duration::from_micros(20);
const MAX_IDLE_POLL: Duration = Duration::from_millis(1);
/// Longest sleep, so an abort (another partition failed) is noticed promptly.
const MAX_WAIT: Duration = Duration::from_millis(10);

pub(crate) struct DriverSettings {
    pub partition: usize,
    pub intake_batch: usize,
    pub abort: Arc<AtomicBool>,
    pub live: Option<std::sync::Arc<super::LiveMetrics>>,
}

/// When the partition took its first input and emitted its last output.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct DriveTimes {
    pub first_intake: Option<Nanos>,
    pub last_emit: Option<Nanos>,
}

/// Runs one partition to the end of its input (or the first error).
pub(crate) async fn drive<S, F, K>(
    op: &mut AsyncWaitOperator<F>,
    source: &mut S,
    sink: &mut K,
    clock: MonotonicClock,
    settings: &DriverSettings,
    mut ckpt: Option<&mut PartitionCheckpoint<F>>,
) -> Result<DriveTimes, PipelineError>
where
    S: Source<Item = F::In>,
    F: AsyncFunction,
    K: Sink<F::Out, F::In>,
{
    let partition = settings.partition;
    let mut times = DriveTimes::default();
    let mut source_done = false;
    let mut source_idle_until: Option<Nanos> = None;
    let mut idle_poll = MIN_IDLE_POLL;
    // Same back-off while outputs wait for a full sink.
    let mut full_poll = MIN_IDLE_POLL;
    let mut next_publish = Nanos::ZERO;
    loop {
        if settings.abort.load(Ordering::Relaxed) {
            return Err(PipelineError::Aborted { partition });
        }
        let now = clock.now();
        if let Some(live) = &settings.live {
            if now >= next_publish {
                live.partition(partition).store(&op.sample(now));
                next_publish = now + super::PUBLISH_EVERY;
            }
        }
        let mut progressed = false;

        // Checkpoints: a few atomic loads per iteration (never per record).
        let mut restoring = false;
        if let Some(ck) = ckpt.as_deref_mut() {
            if ck.coordinator.is_cancelled() {
                return Err(PipelineError::Aborted { partition });
            }
            if ck.is_flushing() {
                ck.poll_flush()?;
            }
            if !ck.restore.is_done() {
                let before = op.occupancy();
                ck.restore
                    .feed(op, now)
                    .map_err(|error| PipelineError::Operator { partition, error })?;
                restoring = !ck.restore.is_done();
                if op.occupancy() != before {
                    progressed = true;
                    times.first_intake.get_or_insert(now);
                }
            }
            if ck.barrier_pending() && sink.has_room() {
                ck.snapshot(op, source, sink)?;
            }
            let completed = ck.coordinator.completed();
            if completed > ck.committed {
                sink.commit(completed)
                    .map_err(|cause| PipelineError::Sink { partition, cause })?;
                ck.committed = completed;
            }
        }

        let mut express = false;
        if !restoring && !source_done && source_idle_until.is_none_or(|t| now >= t) {
            let mut taken = 0;
            while taken < settings.intake_batch && op.has_capacity() {
                let event = source
                    .next()
                    .map_err(|cause| PipelineError::Source { partition, cause })?;
                match event {
                    SourceEvent::Element(e) => {
                        // Express lane: a record completed inside its call goes straight
                        // to the sink when nothing may leave before it.
                        if sink.has_room() {
                            let out = op
                                .process_express(e, now)
                                .map_err(|e| process_error(partition, e))?;
                            if let Some(out) = out {
                                sink.accept(out);
                                express = true;
                            }
                        } else {
                            op.process(e, now)
                                .map_err(|e| process_error(partition, e))?;
                        }
                        taken += 1;
                    }
                    SourceEvent::Idle => {
                        source_idle_until = Some(now + idle_poll);
                        idle_poll = (idle_poll * 2).min(MAX_IDLE_POLL);
                        break;
                    }
                    SourceEvent::End => {
                        source_done = true;
                        break;
                    }
                }
            }
            if taken > 0 {
                progressed = true;
                source_idle_until = None;
                idle_poll = MIN_IDLE_POLL;
                times.first_intake.get_or_insert(now);
            }
        }

        if op.has_completions() || op.next_deadline().is_some_and(|d| d <= now) {
            op.advance(now)
                .map_err(|error| PipelineError::Operator { partition, error })?;
        }

        if express || op.has_output() {
            let t = clock.now();
            op.settle(t);
            let mut emitted = express;
            while sink.has_room() {
                match op.pop_output(t) {
                    Some(out) => {
                        sink.accept(out);
                        emitted = true;
                    }
                    None => break,
                }
            }
            if emitted {
                times.last_emit = Some(t);
                progressed = true;
                full_poll = MIN_IDLE_POLL;
            }
        }

        if source_done && op.is_empty() {
            let may_stop = match ckpt.as_deref_mut() {
                None => true,
                Some(ck) => {
                    // Stay to answer barriers until the final checkpoint completed.
                    if !ck.finished {
                        ck.finished = true;
                        ck.coordinator.partition_finished();
                    }
                    ck.coordinator.is_done()
                }
            };
            if may_stop {
                if let Some(live) = &settings.live {
                    live.partition(partition).store(&op.sample(clock.now()));
                }
                return Ok(times);
            }
        }
        if progressed {
            if op.in_flight() > 0 {
                // Let the function's I/O tasks (writers, readers, timers) run now: they
                // flush this batch's requests in one go.
                futures_lite::future::yield_now().await;
            } else {
                glommio::yield_if_needed().await;
            }
            continue;
        }

        let mut wake_at = op.next_deadline();
        if !source_done && op.has_capacity() {
            if let Some(t) = source_idle_until {
                wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
            }
        }
        if ckpt
            .as_ref()
            .is_some_and(|c| c.finished || c.barrier_pending())
        {
            let t = now + Duration::from_millis(1);
            wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
        }
        if op.has_output() {
            if sink.has_room() {
                continue; // the sink made room meanwhile: emit now rather than sleep
            }
            let t = now + full_poll;
            full_poll = (full_poll * 2).min(MAX_IDLE_POLL);
            wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
        }
        let wait = wake_at
            .map(|t| t.saturating_since(now))
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT);
        WaitForWork {
            op,
            timer: Timer::new(wait),
        }
        .await;
    }
}

fn process_error<In>(partition: usize, e: ProcessError<In>) -> PipelineError {
    match e {
        ProcessError::Failed(error) => PipelineError::Operator { partition, error },
        ProcessError::Full(_) => unreachable!("capacity is checked before every process call"),
    }
}

/// Resolves when a completion lands on the operator or the timer fires.
struct WaitForWork<'a, F: AsyncFunction> {
    op: &'a AsyncWaitOperator<F>,
    timer: Timer,
}

impl<F: AsyncFunction> Future for WaitForWork<'_, F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.op.has_completions() {
            return Poll::Ready(());
        }
        self.op.register_waker(cx.waker());
        match Pin::new(&mut self.timer).poll(cx) {
            Poll::Ready(_) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    }
}
