//! When and where `enrich` stops taking input.
//!
//! Two reasons stop intake, with different rules:
//! - a **halt** (a record failed under `--on-error fail`, or the pipeline failed): stop at
//!   once, everywhere — the partitions stop taking even what is queued for them;
//! - a **stop request** (SIGINT, SIGTERM): stop reading at a line boundary, and finish and
//!   write everything already read. Without checkpoints the reader thread is the one point
//!   of intake: it stops dealing, and the partitions drain their queues, so an ordered run
//!   writes a gap-free prefix of the input. With checkpoints each partition reads the input
//!   itself; in ordered mode they must all stop on the same line (see [`Intake::stop_at`]).
//!
//! A blocking input (standard input, a FIFO) is read through [`StopAwareRead`], which checks
//! both every 50 ms while it waits, so a reader blocked on a quiet pipe still stops.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a blocked read of a pipe or terminal checks for a stop.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// The intake state shared by the reader (or the partitions' sources) and the job.
#[derive(Debug)]
pub(crate) struct Intake {
    /// Stop at once (failure).
    pub halt: Arc<AtomicBool>,
    /// Stop at a line boundary (a stop request from outside).
    requested: Option<Arc<AtomicBool>>,
    /// Checkpointed ordered runs: every partition stops on one line.
    ordered: bool,
    /// Per partition: the index of the next input line when it saw the stop, or when it
    /// reached the end of the input (`u64::MAX` until then).
    frozen: Box<[AtomicU64]>,
    /// Checkpointed ordered runs, per partition: the index of the line after the last one
    /// its source handed on (published as it reads).
    read_up_to: Box<[AtomicU64]>,
    /// Readers or sources that reached the end of the input.
    ended: AtomicUsize,
}

/// Where a partition's checkpointed source stops once intake is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopAt {
    /// At once.
    Now,
    /// Not known yet (a partition has not seen the stop or reached the end): read on to
    /// before this line, where another partition already read, but no further. (A
    /// partition blocked handing its outputs to the writer cannot see the stop; the writer,
    /// merging in order, needs this partition's lines before that one's to unblock it. The
    /// final stop line is at least as far.)
    Wait(u64),
    /// Before the line with this index.
    Before(u64),
}

impl Intake {
    /// The intake of a run with `partitions` partitions; `ordered`: ordered mode with
    /// round-robin routing.
    pub fn new(partitions: usize, ordered: bool, requested: Option<Arc<AtomicBool>>) -> Self {
        Intake {
            halt: Arc::new(AtomicBool::new(false)),
            requested,
            ordered,
            frozen: (0..partitions).map(|_| AtomicU64::new(u64::MAX)).collect(),
            read_up_to: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            ended: AtomicUsize::new(0),
        }
    }

    /// A halt: stop everywhere at once.
    #[inline]
    pub fn halted(&self) -> bool {
        self.halt.load(Ordering::Relaxed)
    }

    /// A stop request from outside.
    #[inline]
    pub fn requested(&self) -> bool {
        self.requested
            .as_ref()
            .is_some_and(|r| r.load(Ordering::Relaxed))
    }

    /// Either: intake is stopping.
    #[inline]
    pub fn stopping(&self) -> bool {
        self.halted() || self.requested()
    }

    /// Where `partition`, whose next input line is `next`, stops (call once
    /// [`stopping`](Self::stopping)). A halt, and unordered and key-ordered runs, stop at
    /// once. An ordered run must stop on one line for all partitions, or the writer would
    /// wait for a record below another partition's final barrier that nobody takes: each
    /// partition records where it saw the stop (or where the input ended for it), and every
    /// partition reads on to the furthest of those points.
    pub fn stop_at(&self, partition: usize, next: u64) -> StopAt {
        if self.halted() || !self.ordered {
            return StopAt::Now;
        }
        self.freeze(partition, next);
        let mut furthest = 0;
        let mut waiting = false;
        for f in self.frozen.iter() {
            match f.load(Ordering::Acquire) {
                u64::MAX => waiting = true,
                at => furthest = furthest.max(at),
            }
        }
        if waiting {
            let ahead = self
                .read_up_to
                .iter()
                .map(|r| r.load(Ordering::Acquire))
                .max()
                .unwrap_or(0);
            return StopAt::Wait(ahead);
        }
        StopAt::Before(furthest)
    }

    /// Checkpointed ordered runs: `partition`'s source handed on every line before `next`.
    #[inline]
    pub fn read_up_to(&self, partition: usize, next: u64) {
        if self.ordered {
            self.read_up_to[partition].store(next, Ordering::Release);
        }
    }

    fn freeze(&self, partition: usize, next: u64) {
        let _ = self.frozen[partition].compare_exchange(
            u64::MAX,
            next,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// The reader, or `partition`'s source, reached the end of the input at line `next`.
    pub fn reached_end(&self, partition: Option<usize>, next: u64) {
        if let Some(p) = partition {
            self.freeze(p, next);
        }
        self.ended.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether `readers` readers or sources all reached the end of the input: the run took
    /// all of it.
    pub fn took_everything(&self, readers: usize) -> bool {
        self.ended.load(Ordering::Acquire) >= readers
    }
}

/// The error a [`StopAwareRead`] returns when intake stops while it waits.
#[derive(Debug, thiserror::Error)]
#[error("intake stopped")]
pub(crate) struct Stopped;

/// Whether an I/O error is a [`Stopped`].
pub(crate) fn is_stopped(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Stopped>())
}

/// A reader that waits for data with `poll(2)` in [`STOP_CHECK`] steps and fails with
/// [`Stopped`] once intake stops, so that a read blocked on a pipe or a terminal ends. A
/// regular file never blocks and is read directly.
pub(crate) struct StopAwareRead {
    inner: std::fs::File,
    blocking: bool,
    intake: Arc<Intake>,
}

impl StopAwareRead {
    /// Wraps `inner`.
    pub fn new(inner: std::fs::File, intake: Arc<Intake>) -> Self {
        let blocking = !inner.metadata().is_ok_and(|m| m.is_file());
        StopAwareRead {
            inner,
            blocking,
            intake,
        }
    }

    /// Waits until the descriptor has data (or an end, or an error, which `read` reports).
    fn wait_readable(&self) -> std::io::Result<()> {
        loop {
            if self.intake.stopping() {
                return Err(std::io::Error::other(Stopped));
            }
            let mut pfd = libc::pollfd {
                fd: self.inner.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd that outlives the call.
            let n = unsafe { libc::poll(&mut pfd, 1, STOP_CHECK.as_millis() as i32) };
            match n {
                n if n > 0 => return Ok(()),
                0 => continue,
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }
}

impl Read for StopAwareRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.blocking {
                self.wait_readable()?;
            }
            match self.inner.read(buf) {
                // A descriptor opened non-blocking (a FIFO) woke without data: wait again.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition that reached the end of the input before the stop counts as stopped
    /// there: the others do not wait for it forever (they read on to the furthest point).
    #[test]
    fn a_partition_at_the_end_of_the_input_does_not_hold_the_others() {
        let stop = Arc::new(AtomicBool::new(false));
        let intake = Intake::new(2, true, Some(stop.clone()));
        intake.reached_end(Some(0), 1000);
        stop.store(true, Ordering::Relaxed);
        assert_eq!(intake.stop_at(1, 700), StopAt::Before(1000));
        assert!(!intake.took_everything(2));
        intake.reached_end(Some(1), 1000);
        assert!(intake.took_everything(2));
    }

    #[test]
    fn ordered_partitions_wait_for_each_other_then_stop_on_the_furthest_line() {
        let stop = Arc::new(AtomicBool::new(true));
        let intake = Intake::new(3, true, Some(stop));
        // Partition 1 read up to line 40 and is blocked handing its outputs on (it cannot
        // see the stop): the others may read on to there, no further.
        intake.read_up_to(1, 40);
        assert_eq!(intake.stop_at(0, 10), StopAt::Wait(40));
        assert_eq!(intake.stop_at(2, 17), StopAt::Wait(40));
        assert_eq!(intake.stop_at(1, 41), StopAt::Before(41));
        // Where a partition froze does not move when it asks again further on.
        assert_eq!(intake.stop_at(0, 35), StopAt::Before(41));
    }

    #[test]
    fn a_halt_and_unordered_runs_stop_at_once() {
        let intake = Intake::new(2, false, Some(Arc::new(AtomicBool::new(true))));
        assert_eq!(intake.stop_at(0, 5), StopAt::Now);
        let intake = Intake::new(2, true, None);
        intake.halt.store(true, Ordering::Relaxed);
        assert!(intake.stopping());
        assert_eq!(intake.stop_at(0, 5), StopAt::Now);
    }

    /// A read blocked on a pipe that never sends ends with `Stopped` once intake stops.
    #[test]
    fn a_read_blocked_on_a_quiet_pipe_ends_when_intake_stops() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: pipe(2) just returned these descriptors; each is owned once.
        let (rx, _tx) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        let intake = Arc::new(Intake::new(1, false, None));
        let halt = intake.halt.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            halt.store(true, Ordering::Relaxed);
        });
        let mut r = StopAwareRead::new(rx, intake);
        let err = r.read(&mut [0u8; 16]).unwrap_err();
        assert!(is_stopped(&err), "{err}");
        stopper.join().unwrap();
    }
}
