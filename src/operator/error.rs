//! Errors of one record and of the operator.

use std::time::Duration;

use crate::element::RequestId;
use crate::function::AsyncError;

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
        let message = crate::function::PanicError::from_payload(payload).message;
        RecordError::Panicked { message }
    }

    /// A function error, unless it carries a panic caught in the function's async work.
    pub(crate) fn from_function(error: AsyncError) -> Self {
        match error.downcast_ref::<crate::function::PanicError>() {
            Some(p) => RecordError::Panicked {
                message: p.message.clone(),
            },
            None => RecordError::Function(error),
        }
    }
}

/// An error that stops the operator.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A record failed and the error policy is `Fail` (SPEC S9).
    #[error("record {id} failed: {error}")]
    RecordFailed {
        /// The failed record.
        id: RequestId,
        /// Why.
        error: RecordError,
    },
    /// A watermark lower than the previous one.
    #[error("watermark regression: {got} after {previous}; watermarks must not decrease")]
    WatermarkRegression {
        /// The previous watermark.
        previous: i64,
        /// The offending one.
        got: i64,
    },
}

impl OperatorError {
    /// The request id of the failed record, if the error is about one record.
    pub fn record(&self) -> Option<RequestId> {
        match self {
            OperatorError::RecordFailed { id, .. } => Some(*id),
            _ => None,
        }
    }
}
