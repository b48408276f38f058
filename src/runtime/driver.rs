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
    ckpt: Option<&mut PartitionCheckpoint<F>>,
) -> Result<DriveTimes, PipelineError>
where
    S: Source<Item = F::In>,
    F: AsyncFunction,
    K: Sink<F::Out, F::In>,
{
    let mut d = Driver {
        op,
        source,
        sink,
        clock,
        settings,
        ckpt,
        times: DriveTimes::default(),
        source_done: false,
        source_idle_until: None,
        idle_poll: MIN_IDLE_POLL,
        full_poll: MIN_IDLE_POLL,
        next_publish: Nanos::ZERO,
    };
    loop {
        let partition = d.settings.partition;
        if d.settings.abort.load(Ordering::Relaxed) {
            return Err(PipelineError::Aborted { partition });
        }
        let now = d.clock.now();
        d.publish_if_due(now);
        let (mut progressed, restoring) = d.step_checkpoint(now)?;
        let mut express = false;
        if !restoring && d.source_open(now) {
            let (taken, any_express) = d.take_input(now)?;
            progressed |= taken;
            express = any_express;
        }
        if d.op.has_completions() || d.op.next_deadline().is_some_and(|t| t <= now) {
            d.op.advance(now)
                .map_err(|error| PipelineError::Operator { partition, error })?;
        }
        if (express || d.op.has_output()) && d.emit(express) {
            progressed = true;
        }
        d.sink.flush();
        if d.source_done && d.op.is_empty() && d.may_stop() {
            d.publish(d.clock.now());
            return Ok(d.times);
        }
        if progressed {
            if d.op.in_flight() > 0 {
                // Let the function's I/O tasks (writers, readers, timers) run now: they
                // flush this batch's requests in one go.
                futures_lite::future::yield_now().await;
            } else {
                glommio::yield_if_needed().await;
            }
            continue;
        }
        if d.block_on_queues(now) {
            // Other tasks (timers) run now, without parking the executor.
            futures_lite::future::yield_now().await;
            continue;
        }
        let Some(wait) = d.wait_time(now) else {
            continue; // the sink made room meanwhile: emit now rather than sleep
        };
        WaitForWork {
            op: &*d.op,
            timer: Timer::new(wait),
        }
        .await;
    }
}

/// One partition's loop state (see [`drive`]).
struct Driver<'a, S, F: AsyncFunction, K> {
    op: &'a mut AsyncWaitOperator<F>,
    source: &'a mut S,
    sink: &'a mut K,
    clock: MonotonicClock,
    settings: &'a DriverSettings,
    ckpt: Option<&'a mut PartitionCheckpoint<F>>,
    times: DriveTimes,
    source_done: bool,
    source_idle_until: Option<Nanos>,
    idle_poll: Duration,
    /// Same back-off while outputs wait for a full sink.
    full_poll: Duration,
    next_publish: Nanos,
}

impl<S, F, K> Driver<'_, S, F, K>
where
    S: Source<Item = F::In>,
    F: AsyncFunction,
    K: Sink<F::Out, F::In>,
{
    fn publish_if_due(&mut self, now: Nanos) {
        if self.settings.live.is_some() && now >= self.next_publish {
            self.publish(now);
            self.next_publish = now + super::PUBLISH_EVERY;
        }
    }

    /// Publishes the operator's sample, with the snapshot times when checkpointing.
    fn publish(&mut self, now: Nanos) {
        if let Some(live) = &self.settings.live {
            let mut sample = self.op.sample(now);
            self.op.function().publish(&mut sample);
            if let Some(ck) = self.ckpt.as_deref_mut() {
                sample.snapshot = ck.snapshot_times.buckets();
            }
            live.partition(self.settings.partition).store(&sample);
        }
    }

    /// The checkpoint's part of an iteration: a few atomic loads (never per record), a
    /// restore step, a snapshot when a barrier waits, a commit. Returns (progressed,
    /// still restoring).
    fn step_checkpoint(&mut self, now: Nanos) -> Result<(bool, bool), PipelineError> {
        let partition = self.settings.partition;
        let Some(ck) = self.ckpt.as_deref_mut() else {
            return Ok((false, false));
        };
        if ck.coordinator.is_cancelled() {
            return Err(PipelineError::Aborted { partition });
        }
        if ck.is_flushing() {
            ck.poll_flush()?;
        }
        let (mut progressed, mut restoring) = (false, false);
        if !ck.restore.is_done() {
            let before = self.op.occupancy();
            ck.restore
                .feed(self.op, now)
                .map_err(|error| PipelineError::Operator { partition, error })?;
            restoring = !ck.restore.is_done();
            if self.op.occupancy() != before {
                progressed = true;
                self.times.first_intake.get_or_insert(now);
            }
        }
        if ck.barrier_pending() && self.sink.has_room() {
            ck.snapshot(self.op, self.source, self.sink)?;
        }
        let completed = ck.coordinator.completed();
        if completed > ck.committed {
            self.sink
                .commit(completed)
                .map_err(|cause| PipelineError::Sink { partition, cause })?;
            ck.committed = completed;
        }
        Ok((progressed, restoring))
    }

    /// Whether to ask the source now: it has not ended, and is not in an idle pause.
    #[inline]
    fn source_open(&self, now: Nanos) -> bool {
        !self.source_done && self.source_idle_until.is_none_or(|t| now >= t)
    }

    /// Takes up to one intake batch while the operator has capacity. Returns (took any,
    /// any went through the express lane).
    #[inline(always)]
    fn take_input(&mut self, now: Nanos) -> Result<(bool, bool), PipelineError> {
        let partition = self.settings.partition;
        let (mut taken, mut express) = (0, false);
        while taken < self.settings.intake_batch && self.op.has_capacity() {
            let event = self
                .source
                .next()
                .map_err(|cause| PipelineError::Source { partition, cause })?;
            match event {
                SourceEvent::Element(e) => {
                    // Express lane: a record completed inside its call goes straight to the
                    // sink when nothing may leave before it.
                    if self.sink.has_room() {
                        let out = self
                            .op
                            .process_express(e, now)
                            .map_err(|e| process_error(partition, e))?;
                        if let Some(out) = out {
                            self.sink.accept(out);
                            express = true;
                        }
                    } else {
                        self.op
                            .process(e, now)
                            .map_err(|e| process_error(partition, e))?;
                    }
                    taken += 1;
                }
                SourceEvent::Idle => {
                    self.source_idle_until = Some(now + self.idle_poll);
                    self.idle_poll = (self.idle_poll * 2).min(MAX_IDLE_POLL);
                    break;
                }
                SourceEvent::End => {
                    self.source_done = true;
                    break;
                }
            }
        }
        if taken > 0 {
            self.source_idle_until = None;
            self.idle_poll = MIN_IDLE_POLL;
            self.times.first_intake.get_or_insert(now);
        }
        Ok((taken > 0, express))
    }

    /// Hands waiting outputs to the sink while it has room; true if anything was emitted
    /// (`express`: the intake already emitted some).
    #[inline(always)]
    fn emit(&mut self, express: bool) -> bool {
        let t = self.clock.now();
        self.op.settle(t);
        let mut emitted = express;
        while self.sink.has_room() {
            match self.op.pop_output(t) {
                Some(out) => {
                    self.sink.accept(out);
                    emitted = true;
                }
                None => break,
            }
        }
        if emitted {
            self.times.last_emit = Some(t);
            self.full_poll = MIN_IDLE_POLL;
        }
        emitted
    }

    /// At the end of the input with nothing held: whether the partition may stop (with
    /// checkpoints, only once the final checkpoint completed; it answers barriers until
    /// then).
    fn may_stop(&mut self) -> bool {
        let Some(ck) = self.ckpt.as_deref_mut() else {
            return true;
        };
        if !ck.finished {
            ck.finished = true;
            ck.coordinator.partition_finished();
        }
        ck.coordinator.is_done()
    }

    /// Nothing progressed, nothing is in flight, and the function completes records inside
    /// their call: sleeps on the queue the partition waits for (a full sink's, else the
    /// source's) until the other end's next batch, at most until the next deadline. True
    /// when it slept that way; false when the source or sink cannot, and the executor's
    /// timer is to be used.
    fn block_on_queues(&mut self, now: Nanos) -> bool {
        if self.op.in_flight() > 0 || !self.op.function().completes_inline() {
            return false;
        }
        let sink_full = self.op.has_output() && !self.sink.has_room();
        let wants_input = !self.source_done && self.op.has_capacity();
        if !sink_full && !wants_input {
            return false;
        }
        // A notification ends the wait, so no idle pause is needed on top of it.
        let pause = self.source_idle_until.take();
        let Some(timeout) = self.wait_time(now) else {
            return true; // room appeared meanwhile
        };
        // A checkpoint request or an abort comes with no batch: look at least this often.
        let timeout = timeout.min(MAX_IDLE_POLL);
        let waited = if sink_full {
            self.sink.wait_for_room(timeout)
        } else {
            self.source.wait_for_input(timeout)
        };
        if !waited {
            self.source_idle_until = pause;
        }
        waited
    }

    /// How long to sleep when nothing progressed: until the next deadline, the end of an
    /// idle pause, a checkpoint's next look, or a full sink's next poll, at most
    /// [`MAX_WAIT`]. `None`: do not sleep (the sink made room for waiting outputs).
    fn wait_time(&mut self, now: Nanos) -> Option<Duration> {
        let mut wake_at = self.op.next_deadline();
        let mut wake_by = |t: Nanos| wake_at = Some(wake_at.map_or(t, |w: Nanos| w.min(t)));
        if !self.source_done && self.op.has_capacity() {
            if let Some(t) = self.source_idle_until {
                wake_by(t);
            }
        }
        if self
            .ckpt
            .as_ref()
            .is_some_and(|c| c.finished || c.barrier_pending())
        {
            wake_by(now + Duration::from_millis(1));
        }
        if self.op.has_output() {
            if self.sink.has_room() {
                return None;
            }
            wake_by(now + self.full_poll);
            self.full_poll = (self.full_poll * 2).min(MAX_IDLE_POLL);
        }
        Some(
            wake_at
                .map(|t| t.saturating_since(now))
                .unwrap_or(MAX_WAIT)
                .min(MAX_WAIT),
        )
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
