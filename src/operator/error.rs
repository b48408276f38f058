//! Errors of one record and of the operator.

use crate::element::RequestId;
use crate::function::RecordError;

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
