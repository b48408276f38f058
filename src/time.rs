//! Time as plain numbers.
//!
//! The operator core never reads a clock: every method that needs the time takes a [`Nanos`]
//! argument. The runtime reads a [`MonotonicClock`] once per batch and passes the reading in,
//! which keeps the state machine deterministic under test.

use std::time::{Duration, Instant};

/// A point in time, in nanoseconds since an arbitrary origin shared by one operator.
///
/// ```
/// use ringwait::time::Nanos;
/// use std::time::Duration;
/// let t = Nanos::from_millis(2);
/// assert_eq!(t + Duration::from_millis(1), Nanos::from_millis(3));
/// assert_eq!(Nanos::from_millis(3).saturating_since(t), Duration::from_millis(1));
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

impl Nanos {
    /// The origin.
    pub const ZERO: Nanos = Nanos(0);
    /// A time later than any reachable time; used for "never".
    pub const NEVER: Nanos = Nanos(u64::MAX);

    /// `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Nanos {
        Nanos(ms * 1_000_000)
    }

    /// `us` microseconds after the origin.
    pub const fn from_micros(us: u64) -> Nanos {
        Nanos(us * 1_000)
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Nanos) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Nanoseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn nanos_since(self, earlier: Nanos) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::ops::Add<Duration> for Nanos {
    type Output = Nanos;
    fn add(self, rhs: Duration) -> Nanos {
        let add = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Nanos(self.0.saturating_add(add))
    }
}

/// A monotonic clock whose readings are [`Nanos`] since the clock was created.
///
/// ```
/// use ringwait::time::MonotonicClock;
/// let clock = MonotonicClock::new();
/// let a = clock.now();
/// assert!(clock.now() >= a);
/// ```
#[derive(Copy, Clone, Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }

    /// A clock with the given origin (several clocks can share one origin).
    pub fn with_origin(origin: Instant) -> Self {
        MonotonicClock { origin }
    }

    /// The current reading.
    #[inline]
    pub fn now(&self) -> Nanos {
        Nanos(self.origin.elapsed().as_nanos() as u64)
    }

    /// The [`Instant`] of a reading, for handing deadlines to timers.
    pub fn instant_of(&self, t: Nanos) -> Instant {
        self.origin + Duration::from_nanos(t.0)
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}
