//! Fault injection: what the server does wrong, changeable at run time from any thread.
//!
//! A [`FaultPlan`] is plain data. The server keeps the current plan in a [`FaultCell`], a
//! seqlock over atomics: [`ServerHandle::set_faults`](super::ServerHandle::set_faults) writes
//! it from any thread, connections read it without taking a lock.

use crate::sync::{fence, spin, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

/// What goes wrong while the fault is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Healthy.
    #[default]
    None,
    /// Stop listening (new connections get `ECONNREFUSED`) and close open connections.
    Refuse,
    /// Write the first half of a batch of replies, then reset the connection (`SO_LINGER` 0).
    Reset,
    /// Accept connections but answer nothing while the fault lasts (requests wait, unread);
    /// when it clears, pending requests are answered in order.
    BlackHole,
    /// Answer every request with bytes that are not RESP2 (bad type bytes, bad lengths).
    Malformed,
}

/// Added latency before replies are written (per batch of pipelined commands read together;
/// batches are delayed independently but replies keep their order, as RESP requires).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Latency {
    /// Answer as soon as possible.
    #[default]
    None,
    /// The same delay for every batch.
    Fixed(Duration),
    /// A delay drawn uniformly from `min..=max`.
    Uniform {
        /// Shortest delay.
        min: Duration,
        /// Longest delay.
        max: Duration,
    },
    /// `base` usually, `slow` for a fraction `slow_per_million / 1,000,000` of the batches
    /// (a tail-latency mix such as "p99 is 10 ms").
    Mix {
        /// The usual delay.
        base: Duration,
        /// The delay of the slow fraction.
        slow: Duration,
        /// How many batches in a million take `slow`.
        slow_per_million: u32,
    },
}

/// Alternating healthy and faulty periods, starting with a healthy one when the plan is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flap {
    /// Length of each healthy period.
    pub healthy: Duration,
    /// Length of each faulty period.
    pub faulty: Duration,
}

/// The full fault configuration of the built-in server.
///
/// ```
/// use ringwait::server::{Fault, FaultPlan, Flap, Latency};
/// use std::time::Duration;
/// let plan = FaultPlan {
///     fault: Fault::Reset,
///     latency: Latency::Fixed(Duration::from_micros(200)),
///     flap: Some(Flap { healthy: Duration::from_millis(50), faulty: Duration::from_millis(10) }),
/// };
/// assert_ne!(plan, FaultPlan::healthy());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultPlan {
    /// The fault applied while faulty.
    pub fault: Fault,
    /// The latency added while faulty.
    pub latency: Latency,
    /// `None`: always faulty (the plan applies all the time); `Some`: only during the faulty
    /// periods of the flapping cycle.
    pub flap: Option<Flap>,
}

impl FaultPlan {
    /// No fault, no added latency.
    pub const fn healthy() -> Self {
        FaultPlan {
            fault: Fault::None,
            latency: Latency::None,
            flap: None,
        }
    }

    /// Only `fault`, all the time.
    pub const fn only(fault: Fault) -> Self {
        FaultPlan {
            fault,
            latency: Latency::None,
            flap: None,
        }
    }
}

/// The part of a plan in force at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Active {
    pub fault: Fault,
    pub latency: Latency,
}

/// Lock-free holder of the current [`FaultPlan`] (a seqlock: one writer at a time, readers
/// retry if they raced with a write).
#[derive(Debug, Default)]
pub(crate) struct FaultCell {
    seq: AtomicU64,
    fault: AtomicU8,
    latency_kind: AtomicU8,
    latency_a: AtomicU64,
    latency_b: AtomicU64,
    latency_p: AtomicU32,
    flap_healthy: AtomicU64,
    flap_faulty: AtomicU64,
    /// When the plan was set, in nanoseconds since the server started.
    epoch: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl FaultCell {
    /// Installs `plan`; `now` is the time since the server started.
    pub fn set(&self, plan: FaultPlan, now: Duration) {
        // Become the only writer: move `seq` from even to odd.
        let mut seq = self.seq.load(Ordering::Relaxed);
        loop {
            if seq % 2 == 1 {
                spin();
                seq = self.seq.load(Ordering::Relaxed);
                continue;
            }
            match self
                .seq
                .compare_exchange_weak(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(current) => seq = current,
            }
        }
        fence(Ordering::Release);
        let (kind, a, b, p) = match plan.latency {
            Latency::None => (0, 0, 0, 0),
            Latency::Fixed(d) => (1, nanos(d), 0, 0),
            Latency::Uniform { min, max } => (2, nanos(min), nanos(max), 0),
            Latency::Mix {
                base,
                slow,
                slow_per_million,
            } => (3, nanos(base), nanos(slow), slow_per_million),
        };
        let fault = match plan.fault {
            Fault::None => 0,
            Fault::Refuse => 1,
            Fault::Reset => 2,
            Fault::BlackHole => 3,
            Fault::Malformed => 4,
        };
        let (healthy, faulty) = plan
            .flap
            .map_or((0, 0), |f| (nanos(f.healthy), nanos(f.faulty)));
        self.fault.store(fault, Ordering::Relaxed);
        self.latency_kind.store(kind, Ordering::Relaxed);
        self.latency_a.store(a, Ordering::Relaxed);
        self.latency_b.store(b, Ordering::Relaxed);
        self.latency_p.store(p, Ordering::Relaxed);
        self.flap_healthy.store(healthy, Ordering::Relaxed);
        self.flap_faulty.store(faulty, Ordering::Relaxed);
        self.epoch.store(nanos(now), Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }

    /// Reads a consistent copy of the plan: `(plan, epoch in nanoseconds)`.
    fn get(&self) -> (FaultPlan, u64) {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                spin();
                continue;
            }
            let fault = match self.fault.load(Ordering::Relaxed) {
                1 => Fault::Refuse,
                2 => Fault::Reset,
                3 => Fault::BlackHole,
                4 => Fault::Malformed,
                _ => Fault::None,
            };
            let a = Duration::from_nanos(self.latency_a.load(Ordering::Relaxed));
            let b = Duration::from_nanos(self.latency_b.load(Ordering::Relaxed));
            let latency = match self.latency_kind.load(Ordering::Relaxed) {
                1 => Latency::Fixed(a),
                2 => Latency::Uniform { min: a, max: b },
                3 => Latency::Mix {
                    base: a,
                    slow: b,
                    slow_per_million: self.latency_p.load(Ordering::Relaxed),
                },
                _ => Latency::None,
            };
            let healthy = self.flap_healthy.load(Ordering::Relaxed);
            let faulty = self.flap_faulty.load(Ordering::Relaxed);
            let flap = (healthy > 0 || faulty > 0).then(|| Flap {
                healthy: Duration::from_nanos(healthy),
                faulty: Duration::from_nanos(faulty),
            });
            let epoch = self.epoch.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return (
                    FaultPlan {
                        fault,
                        latency,
                        flap,
                    },
                    epoch,
                );
            }
        }
    }

    /// The plan as set, for reporting.
    pub fn plan(&self) -> FaultPlan {
        self.get().0
    }

    /// What applies at `now` (time since the server started).
    pub fn active(&self, now: Duration) -> Active {
        let (plan, epoch) = self.get();
        let faulty = match plan.flap {
            None => true,
            Some(flap) => {
                let cycle = nanos(flap.healthy)
                    .saturating_add(nanos(flap.faulty))
                    .max(1);
                let phase = nanos(now).saturating_sub(epoch) % cycle;
                phase >= nanos(flap.healthy)
            }
        };
        if faulty {
            Active {
                fault: plan.fault,
                latency: plan.latency,
            }
        } else {
            Active {
                fault: Fault::None,
                latency: Latency::None,
            }
        }
    }
}

/// A small xorshift generator for latency sampling (one per connection, no shared state).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

impl Latency {
    /// Draws one delay.
    pub(crate) fn sample(&self, rng: &mut Rng) -> Duration {
        match *self {
            Latency::None => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                let span = nanos(max.saturating_sub(min));
                min + Duration::from_nanos(rng.next_u64() % span.saturating_add(1).max(1))
            }
            Latency::Mix {
                base,
                slow,
                slow_per_million,
            } => {
                if rng.next_u64() % 1_000_000 < u64::from(slow_per_million) {
                    slow
                } else {
                    base
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_reads_back_as_set() {
        let cell = FaultCell::default();
        assert_eq!(cell.plan(), FaultPlan::healthy());
        let plan = FaultPlan {
            fault: Fault::Malformed,
            latency: Latency::Mix {
                base: Duration::from_micros(5),
                slow: Duration::from_millis(3),
                slow_per_million: 10_000,
            },
            flap: Some(Flap {
                healthy: Duration::from_millis(2),
                faulty: Duration::from_millis(1),
            }),
        };
        cell.set(plan, Duration::ZERO);
        assert_eq!(cell.plan(), plan);
    }

    #[test]
    fn flapping_alternates_from_a_healthy_period() {
        let cell = FaultCell::default();
        let plan = FaultPlan {
            fault: Fault::Reset,
            latency: Latency::None,
            flap: Some(Flap {
                healthy: Duration::from_millis(10),
                faulty: Duration::from_millis(5),
            }),
        };
        let set_at = Duration::from_secs(3);
        cell.set(plan, set_at);
        let at = |ms| cell.active(set_at + Duration::from_millis(ms)).fault;
        assert_eq!(at(0), Fault::None);
        assert_eq!(at(9), Fault::None);
        assert_eq!(at(10), Fault::Reset);
        assert_eq!(at(14), Fault::Reset);
        assert_eq!(at(15), Fault::None);
        assert_eq!(at(26), Fault::Reset);
    }

    #[test]
    fn latency_samples_stay_in_range() {
        let mut rng = Rng::new(1);
        let (min, max) = (Duration::from_micros(10), Duration::from_micros(20));
        for _ in 0..1000 {
            let d = Latency::Uniform { min, max }.sample(&mut rng);
            assert!(d >= min && d <= max);
        }
        let mix = Latency::Mix {
            base: Duration::ZERO,
            slow: Duration::from_millis(1),
            slow_per_million: 500_000,
        };
        let slow = (0..10_000)
            .filter(|_| mix.sample(&mut rng) > Duration::ZERO)
            .count();
        assert!((3_000..7_000).contains(&slow), "{slow}");
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    fn plan(fault: Fault, ms: u64) -> FaultPlan {
        FaultPlan {
            fault,
            latency: Latency::Uniform {
                min: Duration::from_millis(ms),
                max: Duration::from_millis(ms + 1),
            },
            flap: None,
        }
    }

    /// The writer publishes one plan while a reader reads: the reader sees the old plan or
    /// the new one, never a mix. The state space of a seqlock over eleven atomics is large,
    /// so preemptions are bounded to three (enough to catch a reader that skips the sequence
    /// check: that mutation fails this model).
    #[test]
    fn a_reader_never_sees_half_of_one_plan_and_half_of_another() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let cell = loom::sync::Arc::new(FaultCell::default());
            let writer = cell.clone();
            let t = loom::thread::spawn(move || {
                writer.set(plan(Fault::BlackHole, 5), Duration::from_millis(2));
            });
            let seen = cell.plan();
            let consistent = seen == FaultPlan::healthy() || seen == plan(Fault::BlackHole, 5);
            assert!(consistent, "torn read: {seen:?}");
            t.join().unwrap();
            assert_eq!(cell.plan(), plan(Fault::BlackHole, 5));
        });
    }
}
