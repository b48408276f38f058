//! Operator snapshots (SPEC S10) and restore (S11): the payload format and the restore queue.
//!
//! A snapshot holds every input the operator has taken and not emitted — records in flight,
//! records done but waiting for their turn, watermarks — plus the inputs a restore has not yet
//! handed back (the "records waiting for capacity"), in input order, each record with its
//! sequence number and timestamp. Taking one reads the operator's tables; it never waits for an
//! in-flight request.
//!
//! Payload layout (little endian):
//! `u64 FORMAT`, `u64 next_sequence`, `u64 source_index`, `u64 count`, then `count` entries:
//! tag `u8` (0: record without timestamp, 1: record with timestamp, 2: watermark), then for a
//! record `u64 sequence`, `[i64 timestamp]`, the input ([`SnapshotCodec`]); for a watermark
//! `i64`.
//!
//! ```
//! use ringwait::operator::{encode_snapshot, Restore};
//! use ringwait::function::{from_fn, ResultFuture};
//! use ringwait::time::Nanos;
//! use ringwait::{AsyncWaitOperator, OperatorConfig, StreamElement};
//!
//! // An operator whose requests never finish: everything stays in flight.
//! let config = OperatorConfig::builder().capacity(4).build().unwrap();
//! let mut op = AsyncWaitOperator::new(config.clone(), from_fn(|_: &u64, _r: ResultFuture<u64>| {}), 0).unwrap();
//! for i in 0..3u64 { op.process(StreamElement::record(i), Nanos(0)).unwrap(); }
//! let mut payload = Vec::new();
//! let count = encode_snapshot(&op, &Restore::empty(), 0, &mut payload);
//! assert_eq!(count, 3);
//!
//! // Restore into a smaller operator: one entry waits for capacity.
//! let small = OperatorConfig::builder().capacity(2).build().unwrap();
//! let mut op2 = AsyncWaitOperator::new(small, from_fn(|_: &u64, _r: ResultFuture<u64>| {}), 0).unwrap();
//! let mut restore = Restore::<u64>::decode(&payload).unwrap();
//! assert!(!restore.feed(&mut op2, Nanos(0)).unwrap());
//! assert_eq!((op2.occupancy(), restore.waiting()), (2, 1));
//! ```

use std::collections::VecDeque;

use super::{AsyncWaitOperator, PendingEntry, ProcessError};
use crate::function::AsyncFunction;
use crate::operator::OperatorError;
use crate::snapshot::{DecodeError, SnapshotCodec};
use crate::time::Nanos;

/// Format tag of an operator payload ("RWOPSNAP", version 1 in the last byte).
pub const SNAPSHOT_FORMAT: u64 = u64::from_be_bytes(*b"RWOPSNP\x01");

const TAG_RECORD: u8 = 0;
const TAG_TIMED: u8 = 1;
const TAG_WATERMARK: u8 = 2;

/// One input of a snapshot, owned: what a restore hands back to the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoredEntry<In> {
    /// A record with its original sequence number (its request id stays stable).
    Record {
        /// Sequence number on the partition.
        sequence: u64,
        /// The input.
        value: In,
        /// Its event time.
        timestamp: Option<i64>,
    },
    /// A watermark.
    Watermark(i64),
}

/// The inputs of a snapshot still to hand back to an operator, in order. The driver feeds them
/// before reading new input; while some wait (restore into a smaller capacity) they are part
/// of every snapshot taken meanwhile.
///
/// ```
/// use ringwait::operator::Restore;
/// let r = Restore::<u64>::empty();
/// assert_eq!((r.waiting(), r.next_sequence(), r.source_index()), (0, 0, 0));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore<In> {
    entries: VecDeque<RestoredEntry<In>>,
    next_sequence: u64,
    source_index: u64,
    resumed: bool,
}

impl<In> Restore<In> {
    /// Nothing to restore.
    pub fn empty() -> Self {
        Restore {
            entries: VecDeque::new(),
            next_sequence: 0,
            source_index: 0,
            resumed: true,
        }
    }

    /// A restore of `entries` (in input order); new records continue at `next_sequence`.
    pub fn new(entries: Vec<RestoredEntry<In>>, next_sequence: u64, source_index: u64) -> Self {
        Restore {
            entries: entries.into(),
            next_sequence,
            source_index,
            resumed: false,
        }
    }

    /// Entries not yet handed to the operator.
    pub fn waiting(&self) -> usize {
        self.entries.len()
    }

    /// Whether every entry has been handed back.
    pub fn is_done(&self) -> bool {
        self.entries.is_empty()
    }

    /// The sequence number new records continue at.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The source's auxiliary position saved with the snapshot (e.g. a line index).
    pub fn source_index(&self) -> u64 {
        self.source_index
    }

    /// The waiting entries, in order.
    pub fn entries(&self) -> impl Iterator<Item = &RestoredEntry<In>> {
        self.entries.iter()
    }

    /// Holds `element`, which `op` refused for lack of capacity ([`ProcessError::Full`]), behind
    /// the entries already waiting: it is the "record waiting for capacity" of a snapshot, and
    /// [`feed`](Self::feed) hands it over once there is room. A record gets the next sequence
    /// number.
    pub fn hold<F: AsyncFunction<In = In>>(
        &mut self,
        element: crate::StreamElement<In>,
        op: &AsyncWaitOperator<F>,
    ) {
        let next = if self.resumed {
            op.next_sequence()
        } else {
            self.next_sequence
        };
        match element {
            crate::StreamElement::Record { value, timestamp } => {
                self.entries.push_back(RestoredEntry::Record {
                    sequence: next,
                    value,
                    timestamp,
                });
                self.next_sequence = next + 1;
            }
            crate::StreamElement::Watermark(wm) => {
                self.entries.push_back(RestoredEntry::Watermark(wm));
                self.next_sequence = next;
            }
        }
        self.resumed = false;
    }

    /// Hands entries to `op` while it has capacity; `Ok(true)` once all are in (and the
    /// operator's sequence continues where the snapshot's did). Call before reading new input,
    /// and again as capacity frees.
    pub fn feed<F: AsyncFunction<In = In>>(
        &mut self,
        op: &mut AsyncWaitOperator<F>,
        now: Nanos,
    ) -> Result<bool, OperatorError> {
        while op.has_capacity() {
            let Some(entry) = self.entries.pop_front() else {
                break;
            };
            match op.restore_entry(entry, now) {
                Ok(()) => {}
                Err(ProcessError::Failed(e)) => return Err(e),
                Err(ProcessError::Full(_)) => unreachable!("capacity checked"),
            }
        }
        if self.entries.is_empty() && !self.resumed {
            op.resume_sequence(self.next_sequence);
            self.resumed = true;
        }
        Ok(self.entries.is_empty())
    }
}

impl<In: SnapshotCodec> Restore<In> {
    /// Decodes an operator payload written by [`encode_snapshot`]; never panics, refuses
    /// anything malformed with a typed error.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut input = payload;
        let format = u64::decode(&mut input)?;
        if format != SNAPSHOT_FORMAT {
            return Err(DecodeError::UnknownFormat {
                found: format,
                expected: SNAPSHOT_FORMAT,
            });
        }
        let next_sequence = u64::decode(&mut input)?;
        let source_index = u64::decode(&mut input)?;
        let count = u64::decode(&mut input)?;
        // Each entry takes at least 9 bytes.
        if count > input.len() as u64 / 9 {
            return Err(DecodeError::CountTooLarge {
                count,
                remaining: input.len(),
            });
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let Some((&tag, rest)) = input.split_first() else {
                return Err(DecodeError::UnexpectedEnd {
                    needed: 1,
                    remaining: 0,
                });
            };
            input = rest;
            entries.push(match tag {
                TAG_RECORD | TAG_TIMED => {
                    let sequence = u64::decode(&mut input)?;
                    let timestamp = if tag == TAG_TIMED {
                        Some(i64::decode(&mut input)?)
                    } else {
                        None
                    };
                    RestoredEntry::Record {
                        sequence,
                        value: In::decode(&mut input)?,
                        timestamp,
                    }
                }
                TAG_WATERMARK => RestoredEntry::Watermark(i64::decode(&mut input)?),
                tag => {
                    return Err(DecodeError::InvalidTag {
                        tag,
                        what: "snapshot entry",
                    })
                }
            });
        }
        if !input.is_empty() {
            return Err(DecodeError::TrailingBytes { count: input.len() });
        }
        Ok(Restore::new(entries, next_sequence, source_index))
    }
}

fn encode_record<In: SnapshotCodec>(
    sequence: u64,
    value: &In,
    timestamp: Option<i64>,
    out: &mut Vec<u8>,
) {
    match timestamp {
        Some(ts) => {
            out.push(TAG_TIMED);
            sequence.encode(out);
            ts.encode(out);
        }
        None => {
            out.push(TAG_RECORD);
            sequence.encode(out);
        }
    }
    value.encode(out);
}

/// Appends the snapshot payload of `op` to `out` (clear it first to reuse its allocation):
/// every unemitted input of `op`, then the entries `restore` still holds, with the sequence
/// new records continue at and the source's auxiliary position `source_index`. Returns the
/// number of entries. Does not wait for anything (SPEC S10).
pub fn encode_snapshot<F>(
    op: &AsyncWaitOperator<F>,
    restore: &Restore<F::In>,
    source_index: u64,
    out: &mut Vec<u8>,
) -> u64
where
    F: AsyncFunction,
    F::In: SnapshotCodec,
{
    SNAPSHOT_FORMAT.encode(out);
    let next_sequence = if restore.resumed {
        op.next_sequence()
    } else {
        restore.next_sequence
    };
    next_sequence.encode(out);
    source_index.encode(out);
    let count_at = out.len();
    0u64.encode(out);
    let mut count = 0u64;
    for entry in op.pending_entries() {
        match entry {
            PendingEntry::Record {
                sequence,
                input,
                timestamp,
            } => encode_record(sequence, input, timestamp, out),
            PendingEntry::Watermark(wm) => {
                out.push(TAG_WATERMARK);
                wm.encode(out);
            }
        }
        count += 1;
    }
    for entry in &restore.entries {
        match entry {
            RestoredEntry::Record {
                sequence,
                value,
                timestamp,
            } => encode_record(*sequence, value, *timestamp, out),
            RestoredEntry::Watermark(wm) => {
                out.push(TAG_WATERMARK);
                wm.encode(out);
            }
        }
        count += 1;
    }
    out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_without_panicking() {
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
            assert!(Restore::<u64>::decode(&bytes).is_err());
        }
        let mut ok = Vec::new();
        SNAPSHOT_FORMAT.encode(&mut ok);
        for v in [0u64, 0, u64::MAX] {
            v.encode(&mut ok);
        }
        assert!(matches!(
            Restore::<u64>::decode(&ok),
            Err(DecodeError::CountTooLarge { .. })
        ));
    }

    #[test]
    fn every_truncation_of_a_payload_is_refused() {
        let r = Restore::new(
            vec![
                RestoredEntry::Record {
                    sequence: 4,
                    value: 40u64,
                    timestamp: Some(-1),
                },
                RestoredEntry::Watermark(3),
                RestoredEntry::Record {
                    sequence: 5,
                    value: 50u64,
                    timestamp: None,
                },
            ],
            6,
            9,
        );
        let mut payload = Vec::new();
        SNAPSHOT_FORMAT.encode(&mut payload);
        6u64.encode(&mut payload);
        9u64.encode(&mut payload);
        3u64.encode(&mut payload);
        for e in &r.entries {
            match e {
                RestoredEntry::Record {
                    sequence,
                    value,
                    timestamp,
                } => encode_record(*sequence, value, *timestamp, &mut payload),
                RestoredEntry::Watermark(w) => {
                    payload.push(TAG_WATERMARK);
                    w.encode(&mut payload);
                }
            }
        }
        assert_eq!(Restore::<u64>::decode(&payload).unwrap(), r);
        for cut in 0..payload.len() {
            assert!(
                Restore::<u64>::decode(&payload[..cut]).is_err(),
                "cut {cut}"
            );
        }
    }
}
