//! What flows into and out of an operator.

use crate::error::RecordError;

/// One element of an input stream: a record (with an optional event-time timestamp) or a
/// watermark.
///
/// ```
/// use ringwait::StreamElement;
/// let r: StreamElement<u64> = StreamElement::record(7);
/// let e: StreamElement<u64> = StreamElement::timed(7, 1_000);
/// let w: StreamElement<u64> = StreamElement::Watermark(1_000);
/// assert!(matches!(r, StreamElement::Record { timestamp: None, .. }));
/// assert!(matches!(e, StreamElement::Record { timestamp: Some(1_000), .. }));
/// assert!(matches!(w, StreamElement::Watermark(1_000)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamElement<T> {
    /// A data record.
    Record {
        /// The record itself.
        value: T,
        /// Event time, if the stream uses event time.
        timestamp: Option<i64>,
    },
    /// An event-time watermark: no record with a smaller timestamp follows.
    Watermark(i64),
}

impl<T> StreamElement<T> {
    /// A record without a timestamp (processing time).
    pub fn record(value: T) -> Self {
        StreamElement::Record {
            value,
            timestamp: None,
        }
    }

    /// A record with an event-time timestamp.
    pub fn timed(value: T, timestamp: i64) -> Self {
        StreamElement::Record {
            value,
            timestamp: Some(timestamp),
        }
    }
}

/// What an operator emits towards its sink.
#[derive(Debug)]
pub enum Emitted<Out, In> {
    /// One output of a record; a record may produce zero, one or several.
    Record {
        /// The output value.
        value: Out,
        /// The timestamp inherited from the input record.
        timestamp: Option<i64>,
        /// Sequence number of the input record on its partition.
        sequence: u64,
    },
    /// A watermark, passed through in order (ordered mode) or as a boundary.
    Watermark(i64),
    /// A record that failed, routed to the side output (`ErrorPolicy::SideOutput`).
    Failed {
        /// The input record that failed.
        input: In,
        /// Its sequence number on the partition.
        sequence: u64,
        /// Why it failed.
        error: RecordError,
    },
}

/// The stable identity of a request: `(operator, partition, sequence)`.
///
/// The same input keeps the same id across retries and across a restore, so a server can
/// deduplicate side effects (SPEC S12).
///
/// ```
/// use ringwait::RequestId;
/// let id = RequestId { operator: 1, partition: 0, sequence: 42 };
/// assert_eq!(id.to_string(), "1/0/42");
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId {
    /// Operator id from the configuration.
    pub operator: u64,
    /// Partition index.
    pub partition: u32,
    /// Sequence number of the input on its partition.
    pub sequence: u64,
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.operator, self.partition, self.sequence)
    }
}
