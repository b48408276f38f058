//! Errors of one record: the function's ([`AsyncError`], [`PanicError`]) and the final one
//! the operator emits ([`RecordError`]). The bottom layer: element, function, operator and
//! everything above use it; it uses nothing of the crate.

use std::time::Duration;

/// An error a function reports for one record.
///
/// ```
/// use ringwait::AsyncError;
/// let e = AsyncError::msg("connection reset");
/// assert_eq!(e.to_string(), "connection reset");
/// let io = AsyncError::new(std::io::Error::other("boom"));
/// assert!(io.downcast_ref::<std::io::Error>().is_some());
/// ```
#[derive(Debug)]
pub struct AsyncError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl AsyncError {
    /// Wraps a typed error.
    pub fn new<E: std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        AsyncError(Box::new(error))
    }

    /// An error with just a message.
    pub fn msg(message: impl Into<String>) -> Self {
        AsyncError(message.into().into())
    }

    /// The wrapped error, if it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }
}

impl std::fmt::Display for AsyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for AsyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A panic caught in a function's asynchronous work (for example a task spawned by
/// [`crate::runtime::async_fn`]); the operator turns it into [`crate::RecordError::Panicked`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("panicked: {message}")]
pub struct PanicError {
    /// The panic message.
    pub message: String,
}

impl PanicError {
    /// From a payload caught by `catch_unwind`.
    pub fn from_payload(payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_string()
        };
        PanicError { message }
    }
}

/// Why one record failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The function completed the record with an error (after any retries).
    #[error("{0}")]
    Function(AsyncError),
    /// No result within the timeout, and the timeout hook chose to fail.
    #[error("timed out after {after:?}")]
    TimedOut {
        /// The configured timeout.
        after: Duration,
    },
    /// The user's function (or one of its hooks) panicked for this record (SPEC S13).
    #[error("the function panicked: {message}")]
    Panicked {
        /// The panic payload, if it was a string.
        message: String,
    },
}

impl RecordError {
    /// Whether this is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecordError::TimedOut { .. })
    }

    pub(crate) fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = PanicError::from_payload(payload).message;
        RecordError::Panicked { message }
    }

    /// A function error, unless it carries a panic caught in the function's async work.
    pub(crate) fn from_function(error: AsyncError) -> Self {
        match error.downcast_ref::<PanicError>() {
            Some(p) => RecordError::Panicked {
                message: p.message.clone(),
            },
            None => RecordError::Function(error),
        }
    }
}
