//! Typed errors of the snapshot store and of the record codec.
#![deny(unsafe_code)]

use std::fmt;
use std::io;
use std::path::PathBuf;

/// One of the two header slots of a snapshot file.
///
/// Slot A is the first 4 KiB page of the file, slot B the second.
///
/// ```
/// use ringwait::snapshot::Slot;
/// assert_eq!(Slot::A.other(), Slot::B);
/// assert_eq!(Slot::for_epoch(7), Slot::B);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The header at offset 0.
    A,
    /// The header at offset 4096.
    B,
}

impl Slot {
    /// Both slots, in file order.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// The slot that epoch `epoch` lands in when epochs are consecutive (`epoch % 2`).
    pub fn for_epoch(epoch: u64) -> Slot {
        if epoch % 2 == 0 {
            Slot::A
        } else {
            Slot::B
        }
    }

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// 0 for A, 1 for B.
    pub fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

/// Why one header of a snapshot file was rejected by recovery.
///
/// ```
/// use ringwait::snapshot::HeaderProblem;
/// let p = HeaderProblem::PayloadOutOfBounds { offset: 8192, len: 1 << 60, file_size: 12288 };
/// assert_eq!(
///     p.to_string(),
///     "payload of 1152921504606846976 bytes at offset 8192 exceeds file size 12288"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderProblem {
    /// The file ends before the header's last byte.
    Truncated {
        /// Length of the file.
        file_size: u64,
        /// Length the file needs to hold this header.
        needed: u64,
    },
    /// The first 8 bytes are not the snapshot magic.
    BadMagic {
        /// The 8 bytes found.
        found: [u8; 8],
    },
    /// The header's own CRC does not match its bytes (torn write, bit flip).
    HeaderChecksum {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the header bytes.
        computed: u32,
    },
    /// The header was written by a format version this build does not read.
    UnsupportedVersion {
        /// Version found in the header.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The header belongs to another operator.
    WrongOperator {
        /// Operator id that was asked for.
        expected: u64,
        /// Operator id in the header.
        found: u64,
    },
    /// The header belongs to another partition.
    WrongPartition {
        /// Partition that was asked for.
        expected: u32,
        /// Partition in the header.
        found: u32,
    },
    /// A flags or reserved field holds bits this version does not define.
    BadField {
        /// Name of the field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The payload starts inside the header area.
    PayloadOverlapsHeaders {
        /// Payload offset in the header.
        offset: u64,
    },
    /// The payload is larger than the format's sanity limit.
    PayloadTooLarge {
        /// Payload length in the header.
        len: u64,
        /// The limit ([`MAX_PAYLOAD_LEN`](crate::snapshot::MAX_PAYLOAD_LEN)).
        limit: u64,
    },
    /// The payload does not fit in the file.
    PayloadOutOfBounds {
        /// Payload offset in the header.
        offset: u64,
        /// Payload length in the header.
        len: u64,
        /// Length of the file.
        file_size: u64,
    },
    /// The payload bytes do not match the CRC in the header (payload not flushed, overwritten, bit flip).
    PayloadChecksum {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the payload.
        computed: u32,
    },
}

impl fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderProblem::Truncated { file_size, needed } => {
                write!(
                    f,
                    "truncated: file size {file_size} is below the {needed} bytes the header needs"
                )
            }
            HeaderProblem::BadMagic { found } => write!(f, "bad magic {found:02x?}"),
            HeaderProblem::HeaderChecksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            HeaderProblem::UnsupportedVersion { found, supported } => {
                write!(
                    f,
                    "format version {found} is not supported (this build reads {supported})"
                )
            }
            HeaderProblem::WrongOperator { expected, found } => {
                write!(
                    f,
                    "belongs to operator {found}, expected operator {expected}"
                )
            }
            HeaderProblem::WrongPartition { expected, found } => {
                write!(
                    f,
                    "belongs to partition {found}, expected partition {expected}"
                )
            }
            HeaderProblem::BadField { field, value } => {
                write!(f, "field {field} holds undefined value {value:#x}")
            }
            HeaderProblem::PayloadOverlapsHeaders { offset } => {
                write!(f, "payload offset {offset} lies inside the header area")
            }
            HeaderProblem::PayloadTooLarge { len, limit } => {
                write!(f, "payload length {len} exceeds the limit {limit}")
            }
            HeaderProblem::PayloadOutOfBounds {
                offset,
                len,
                file_size,
            } => write!(
                f,
                "payload of {len} bytes at offset {offset} exceeds file size {file_size}"
            ),
            HeaderProblem::PayloadChecksum { stored, computed } => write!(
                f,
                "payload checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

/// What recovery found in one header slot.
///
/// ```
/// use ringwait::snapshot::HeaderStatus;
/// assert_eq!(HeaderStatus::Empty.to_string(), "empty (never written)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderStatus {
    /// All header bytes are zero: never written. Not corruption.
    Empty,
    /// A valid header with a valid payload.
    Valid {
        /// Its epoch.
        epoch: u64,
    },
    /// Rejected, and why.
    Invalid(HeaderProblem),
}

impl fmt::Display for HeaderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderStatus::Empty => f.write_str("empty (never written)"),
            HeaderStatus::Valid { epoch } => write!(f, "valid, epoch {epoch}"),
            HeaderStatus::Invalid(p) => p.fmt(f),
        }
    }
}

/// Who holds the lock that refused an opener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockHolder {
    /// Another process holds `flock` on `<dir>/LOCK`.
    OtherProcess,
    /// A live [`SnapshotStore`](crate::snapshot::SnapshotStore) of this process already owns this
    /// operator's partition in this directory.
    ThisProcess {
        /// Operator id of the live store.
        operator_id: u64,
        /// Partition of the live store.
        partition: u32,
    },
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockHolder::OtherProcess => f.write_str("another process (flock on LOCK)"),
            LockHolder::ThisProcess {
                operator_id,
                partition,
            } => write!(
                f,
                "a live store of this process for operator {operator_id} partition {partition}"
            ),
        }
    }
}

/// Which write of a commit a flush belonged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushStage {
    /// Flushing the payload region (first).
    Payload,
    /// Flushing the header page (second, only after the payload is durable).
    Header,
}

impl fmt::Display for FlushStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlushStage::Payload => "payload",
            FlushStage::Header => "header",
        })
    }
}

/// Errors of [`SnapshotStore`](crate::snapshot::SnapshotStore).
///
/// ```
/// use ringwait::snapshot::{HeaderProblem, HeaderStatus, SnapshotError};
/// let e = SnapshotError::Corrupt {
///     path: "/ckpt/op-1-p0.snap".into(),
///     a: HeaderStatus::Invalid(HeaderProblem::HeaderChecksum { stored: 1, computed: 2 }),
///     b: HeaderStatus::Empty,
/// };
/// assert!(e.to_string().contains("header A: checksum mismatch"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The directory is owned by another store.
    #[error("snapshot directory {} is locked by {holder}; stop the other pipeline or use another --checkpoint-dir", dir.display())]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// Who holds it.
        holder: LockHolder,
    },
    /// The file exists but neither header is valid.
    #[error("snapshot file {} holds no valid snapshot: header A: {a}; header B: {b}", path.display())]
    Corrupt {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with header A.
        a: HeaderStatus,
        /// What is wrong with header B.
        b: HeaderStatus,
    },
    /// The epoch a restore asked for is in neither header.
    #[error("snapshot file {} does not hold epoch {epoch} (header A: {a}; header B: {b})", path.display())]
    EpochMissing {
        /// The snapshot file.
        path: PathBuf,
        /// The epoch asked for.
        epoch: u64,
        /// What header A holds.
        a: HeaderStatus,
        /// What header B holds.
        b: HeaderStatus,
    },
    /// Both headers are valid, carry the same epoch, but describe different snapshots.
    #[error("snapshot file {} has two different snapshots for epoch {epoch}", path.display())]
    Ambiguous {
        /// The snapshot file.
        path: PathBuf,
        /// The epoch both headers claim.
        epoch: u64,
    },
    /// An I/O call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "read", "map", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A flush failed; the epoch is abandoned and the previous one stays the latest.
    #[error("flushing the {stage} of epoch {epoch} to {} failed, epoch abandoned (latest stays {kept:?}): {source}", path.display())]
    Flush {
        /// The snapshot file.
        path: PathBuf,
        /// Which flush failed.
        stage: FlushStage,
        /// The abandoned epoch.
        epoch: u64,
        /// The epoch that remains the latest committed one, if any.
        kept: Option<u64>,
        /// The operating system's (or the injected) error.
        source: io::Error,
    },
    /// Epochs must grow strictly.
    #[error("epoch {given} is not newer than the latest committed epoch {latest}")]
    EpochNotIncreasing {
        /// Latest committed epoch.
        latest: u64,
        /// Epoch passed to `stage`.
        given: u64,
    },
    /// `stage` was called while another epoch is staged and not committed.
    #[error("epoch {epoch} is staged but not committed: call commit() or abandon() first")]
    StagePending {
        /// The staged epoch.
        epoch: u64,
    },
    /// `commit` was called with nothing staged.
    #[error("nothing is staged: call stage() before commit()")]
    NothingStaged,
    /// The payload (or requested capacity) exceeds [`MAX_PAYLOAD_LEN`](crate::snapshot::MAX_PAYLOAD_LEN).
    #[error("payload of {len} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The length asked for.
        len: u64,
        /// The limit.
        limit: u64,
    },
}

impl SnapshotError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SnapshotError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Errors of [`SnapshotCodec::decode`](crate::snapshot::SnapshotCodec::decode).
///
/// ```
/// use ringwait::snapshot::{DecodeError, SnapshotCodec};
/// let mut input: &[u8] = &[1, 2, 3];
/// assert_eq!(u64::decode(&mut input), Err(DecodeError::UnexpectedEnd { needed: 8, remaining: 3 }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends inside a value.
    #[error("input ends early: {needed} bytes needed, {remaining} left")]
    UnexpectedEnd {
        /// Bytes the value needs.
        needed: usize,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A length prefix is larger than the rest of the input (nothing was allocated for it).
    #[error("length prefix {len} exceeds the {remaining} bytes left")]
    LengthTooLarge {
        /// The length read.
        len: u64,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A record count cannot fit in the rest of the input (nothing was allocated for it).
    #[error("record count {count} cannot fit in the {remaining} bytes left")]
    CountTooLarge {
        /// The count read.
        count: u64,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A string is not UTF-8.
    #[error("string is not UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// Bytes remain after the last record.
    #[error("{count} bytes remain after the last record")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The payload does not start with the expected format tag (another format or version).
    #[error("unknown payload format {found:#018x} (expected {expected:#018x})")]
    UnknownFormat {
        /// Tag read.
        found: u64,
        /// Tag this version writes.
        expected: u64,
    },
    /// A value has a tag this version does not know.
    #[error("invalid tag {tag} for {what}")]
    InvalidTag {
        /// The tag byte.
        tag: u8,
        /// What was being decoded.
        what: &'static str,
    },
    /// A value other than bytes failed to decode (e.g. a record's JSON).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
}
