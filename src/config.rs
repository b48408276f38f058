//! Operator configuration, validated when the pipeline is built (SPEC S14).

use std::time::Duration;

/// The largest capacity accepted. Each slot costs memory up front; beyond this the
/// configuration is almost certainly a mistake (a unit confusion, a missing bound).
pub const MAX_CAPACITY: usize = 1 << 22;

/// The largest number of retries accepted.
pub const MAX_RETRIES: u32 = 1_000;

/// In which order outputs leave the operator.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum OrderMode {
    /// Outputs leave in input order (Flink's `orderedWait`). A finished record waits for every
    /// earlier one.
    #[default]
    Ordered,
    /// Outputs leave as they finish; watermarks are order boundaries (Flink's `unorderedWait`).
    Unordered,
    /// Records with the same key stay in input order; different keys do not wait for each
    /// other. Watermarks are order boundaries as in unordered mode.
    KeyOrdered,
}

impl std::str::FromStr for OrderMode {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "ordered" => Ok(OrderMode::Ordered),
            "unordered" => Ok(OrderMode::Unordered),
            "key-ordered" => Ok(OrderMode::KeyOrdered),
            other => Err(ConfigError::UnknownMode(other.to_string())),
        }
    }
}

impl std::fmt::Display for OrderMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OrderMode::Ordered => "ordered",
            OrderMode::Unordered => "unordered",
            OrderMode::KeyOrdered => "key-ordered",
        })
    }
}

/// What happens to a record whose request finally fails (after retries, or on timeout with the
/// default timeout hook).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Fail the pipeline, naming the record (Flink's behaviour; the default).
    #[default]
    Fail,
    /// Drop the record, count it, go on.
    Skip,
    /// Emit the failed input and its error as [`crate::Emitted::Failed`], in the record's place.
    SideOutput,
}

/// How long to wait before each retry.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed(Duration),
    /// `initial`, then multiplied by `multiplier` for every further retry, capped at `max`.
    Exponential {
        /// Delay before the first retry.
        initial: Duration,
        /// Growth factor, at least 1.
        multiplier: f64,
        /// Upper bound of one delay.
        max: Duration,
    },
}

/// Retry schedule (FLIP-232). Which results and errors are retried is decided by the function's
/// [`crate::AsyncFunction::retry_on_result`] and [`crate::AsyncFunction::retry_on_error`]
/// predicates.
///
/// ```
/// use ringwait::RetryStrategy;
/// use std::time::Duration;
/// let fixed = RetryStrategy::fixed_delay(3, Duration::from_millis(5));
/// let exp = RetryStrategy::exponential(5, Duration::from_millis(1), 2.0, Duration::from_millis(50));
/// assert_eq!(fixed.delay_before_retry(2), Some(Duration::from_millis(5)));
/// assert_eq!(exp.delay_before_retry(3), Some(Duration::from_millis(4)));
/// assert_eq!(exp.delay_before_retry(6), None); // only 5 retries
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Default)]
pub struct RetryStrategy {
    max_retries: u32,
    backoff: Option<Backoff>,
}

impl RetryStrategy {
    /// No retries (the default).
    pub const fn none() -> Self {
        RetryStrategy {
            max_retries: 0,
            backoff: None,
        }
    }

    /// Up to `max_retries` retries, each after `delay`.
    pub const fn fixed_delay(max_retries: u32, delay: Duration) -> Self {
        RetryStrategy {
            max_retries,
            backoff: Some(Backoff::Fixed(delay)),
        }
    }

    /// Up to `max_retries` retries with exponentially growing delays.
    pub const fn exponential(
        max_retries: u32,
        initial: Duration,
        multiplier: f64,
        max: Duration,
    ) -> Self {
        RetryStrategy {
            max_retries,
            backoff: Some(Backoff::Exponential {
                initial,
                multiplier,
                max,
            }),
        }
    }

    /// Whether any retry is configured.
    pub fn is_enabled(&self) -> bool {
        self.backoff.is_some() && self.max_retries > 0
    }

    /// The number of retries after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The delay before retry number `retry` (1-based), or `None` if that retry is not allowed.
    pub fn delay_before_retry(&self, retry: u32) -> Option<Duration> {
        if retry == 0 || retry > self.max_retries {
            return None;
        }
        match self.backoff? {
            Backoff::Fixed(d) => Some(d),
            Backoff::Exponential {
                initial,
                multiplier,
                max,
            } => {
                let factor = multiplier.powi(retry as i32 - 1);
                let nanos = (initial.as_nanos() as f64 * factor).min(max.as_nanos() as f64);
                Some(Duration::from_nanos(nanos as u64).min(max))
            }
        }
    }

    fn validate(&self, timeout: Option<Duration>) -> Result<(), ConfigError> {
        let Some(backoff) = self.backoff else {
            return Ok(());
        };
        if self.max_retries == 0 {
            return Err(ConfigError::ZeroRetries);
        }
        if self.max_retries > MAX_RETRIES {
            return Err(ConfigError::TooManyRetries(self.max_retries));
        }
        let Some(timeout) = timeout else {
            return Err(ConfigError::RetriesWithoutTimeout);
        };
        let first = match backoff {
            Backoff::Fixed(d) => d,
            Backoff::Exponential {
                initial,
                multiplier,
                max,
            } => {
                if !(multiplier.is_finite() && multiplier >= 1.0) {
                    return Err(ConfigError::BadMultiplier(multiplier));
                }
                if max < initial {
                    return Err(ConfigError::MaxDelayBelowInitial { initial, max });
                }
                initial
            }
        };
        if first >= timeout {
            return Err(ConfigError::RetryDelayNotBelowTimeout {
                delay: first,
                timeout,
            });
        }
        Ok(())
    }
}

/// A configuration the operator refuses, with what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// Capacity 0.
    #[error("capacity must be at least 1 (got 0): set capacity to the number of requests allowed in flight, e.g. 1000")]
    ZeroCapacity,
    /// Capacity over [`MAX_CAPACITY`].
    #[error("capacity {0} is absurdly large (limit {MAX_CAPACITY}): every slot is allocated up front; use a value near throughput x latency, e.g. 1000")]
    CapacityTooLarge(usize),
    /// A timeout of zero.
    #[error("timeout must be greater than zero: set a timeout such as 1000 ms, or none to wait forever (not allowed with retries)")]
    ZeroTimeout,
    /// Retries configured without a timeout.
    #[error("retries need a timeout: set a timeout that bounds all attempts of a record, or disable retries")]
    RetriesWithoutTimeout,
    /// A retry strategy with zero retries.
    #[error("a retry strategy with 0 retries: use RetryStrategy::none() instead, or allow at least 1 retry")]
    ZeroRetries,
    /// Too many retries.
    #[error(
        "{0} retries is absurd (limit {MAX_RETRIES}): use fewer retries with a longer backoff"
    )]
    TooManyRetries(u32),
    /// An exponential multiplier below 1 or not finite.
    #[error("exponential backoff multiplier must be a finite number >= 1 (got {0})")]
    BadMultiplier(f64),
    /// Exponential backoff whose cap is below its first delay.
    #[error("exponential backoff max delay {max:?} is below its initial delay {initial:?}: raise max or lower initial")]
    MaxDelayBelowInitial {
        /// Initial delay.
        initial: Duration,
        /// Cap.
        max: Duration,
    },
    /// A first retry delay that can never fit inside the timeout.
    #[error("retry delay {delay:?} is not below the timeout {timeout:?}: no retry could ever start; shorten the delay or lengthen the timeout")]
    RetryDelayNotBelowTimeout {
        /// First retry delay.
        delay: Duration,
        /// Timeout.
        timeout: Duration,
    },
    /// Key-ordered mode needs a key function.
    #[error("key-ordered mode needs a key: give the operator a key function (key_by), or use ordered mode")]
    MissingKeyFunction,
    /// An unknown mode name.
    #[error("unknown mode {0:?}: use ordered, unordered or key-ordered")]
    UnknownMode(String),
    /// An invalid partition count.
    #[error("partitions must be between 1 and {max} (got {got})")]
    BadPartitions {
        /// Requested.
        got: usize,
        /// Upper bound.
        max: usize,
    },
    /// Any other invalid runtime setting.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// What is wrong and what to change.
        reason: String,
    },
}

/// A validated operator configuration.
///
/// ```
/// use ringwait::{OperatorConfig, OrderMode, ErrorPolicy, RetryStrategy};
/// use std::time::Duration;
/// let config = OperatorConfig::builder()
///     .mode(OrderMode::Unordered)
///     .capacity(1000)
///     .timeout(Duration::from_millis(500))
///     .retry(RetryStrategy::fixed_delay(2, Duration::from_millis(10)))
///     .on_error(ErrorPolicy::Skip)
///     .build()
///     .unwrap();
/// assert_eq!(config.capacity(), 1000);
///
/// let err = OperatorConfig::builder().capacity(0).build().unwrap_err();
/// assert!(err.to_string().contains("capacity must be at least 1"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorConfig {
    mode: OrderMode,
    capacity: usize,
    timeout: Option<Duration>,
    retry: RetryStrategy,
    error_policy: ErrorPolicy,
    operator_id: u64,
}

impl OperatorConfig {
    /// A builder with the defaults: ordered, capacity 100, no timeout, no retries, fail on error.
    pub fn builder() -> OperatorConfigBuilder {
        OperatorConfigBuilder {
            config: OperatorConfig {
                mode: OrderMode::Ordered,
                capacity: 100,
                timeout: None,
                retry: RetryStrategy::none(),
                error_policy: ErrorPolicy::Fail,
                operator_id: 0,
            },
        }
    }

    /// Output order.
    pub fn mode(&self) -> OrderMode {
        self.mode
    }
    /// Maximum number of entries held (in flight + done but not emitted + watermarks).
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Per-record timeout, measured from the first invocation across all retries.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    /// The retry schedule.
    pub fn retry(&self) -> RetryStrategy {
        self.retry
    }
    /// What happens to failed records.
    pub fn error_policy(&self) -> ErrorPolicy {
        self.error_policy
    }
    /// The operator id used in request ids and snapshots.
    pub fn operator_id(&self) -> u64 {
        self.operator_id
    }
}

/// Builds an [`OperatorConfig`]; see there for an example.
#[derive(Clone, Debug)]
pub struct OperatorConfigBuilder {
    config: OperatorConfig,
}

impl OperatorConfigBuilder {
    /// Output order.
    pub fn mode(mut self, mode: OrderMode) -> Self {
        self.config.mode = mode;
        self
    }
    /// Maximum number of entries held (in flight + done but not emitted + watermarks).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.config.capacity = capacity;
        self
    }
    /// Per-record timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }
    /// Wait forever for each record (only without retries).
    pub fn no_timeout(mut self) -> Self {
        self.config.timeout = None;
        self
    }
    /// Retry schedule.
    pub fn retry(mut self, retry: RetryStrategy) -> Self {
        self.config.retry = retry;
        self
    }
    /// Error policy.
    pub fn on_error(mut self, policy: ErrorPolicy) -> Self {
        self.config.error_policy = policy;
        self
    }
    /// Operator id for request ids and snapshots.
    pub fn operator_id(mut self, id: u64) -> Self {
        self.config.operator_id = id;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<OperatorConfig, ConfigError> {
        let c = &self.config;
        if c.capacity == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        if c.capacity > MAX_CAPACITY {
            return Err(ConfigError::CapacityTooLarge(c.capacity));
        }
        if c.timeout == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroTimeout);
        }
        c.retry.validate(c.timeout)?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn invalid_configurations_are_refused_with_what_to_change() {
        let b = OperatorConfig::builder;
        assert_eq!(b().capacity(0).build(), Err(ConfigError::ZeroCapacity));
        assert!(matches!(
            b().capacity(MAX_CAPACITY + 1).build(),
            Err(ConfigError::CapacityTooLarge(_))
        ));
        assert_eq!(b().timeout(ms(0)).build(), Err(ConfigError::ZeroTimeout));
        assert_eq!(
            b().retry(RetryStrategy::fixed_delay(3, ms(1))).build(),
            Err(ConfigError::RetriesWithoutTimeout)
        );
        assert_eq!(
            b().timeout(ms(10))
                .retry(RetryStrategy::fixed_delay(0, ms(1)))
                .build(),
            Err(ConfigError::ZeroRetries)
        );
        assert!(matches!(
            b().timeout(ms(10))
                .retry(RetryStrategy::fixed_delay(1, ms(10)))
                .build(),
            Err(ConfigError::RetryDelayNotBelowTimeout { .. })
        ));
        assert!(matches!(
            b().timeout(ms(10))
                .retry(RetryStrategy::exponential(2, ms(1), 0.5, ms(5)))
                .build(),
            Err(ConfigError::BadMultiplier(_))
        ));
        assert!(matches!(
            b().timeout(ms(10))
                .retry(RetryStrategy::exponential(2, ms(4), 2.0, ms(1)))
                .build(),
            Err(ConfigError::MaxDelayBelowInitial { .. })
        ));
        assert!(b()
            .timeout(ms(10))
            .retry(RetryStrategy::exponential(2, ms(1), 2.0, ms(5)))
            .build()
            .is_ok());
    }

    #[test]
    fn exponential_backoff_grows_and_is_capped() {
        let s = RetryStrategy::exponential(10, ms(1), 3.0, ms(20));
        let delays: Vec<_> = (1..=5).map(|r| s.delay_before_retry(r).unwrap()).collect();
        assert_eq!(delays, vec![ms(1), ms(3), ms(9), ms(20), ms(20)]);
        assert_eq!(s.delay_before_retry(0), None);
        assert_eq!(s.delay_before_retry(11), None);
    }

    #[test]
    fn mode_names_round_trip() {
        for m in [
            OrderMode::Ordered,
            OrderMode::Unordered,
            OrderMode::KeyOrdered,
        ] {
            assert_eq!(m.to_string().parse::<OrderMode>().unwrap(), m);
        }
        assert!("sorted".parse::<OrderMode>().is_err());
    }
}
