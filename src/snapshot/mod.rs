//! Per-partition snapshot storage (SPEC section 2 "Snapshots", S10–S12, section 5).
//!
//! The operator decides what goes in a snapshot payload; this module keeps it safe:
//! - [`SnapshotStore`]: one preallocated, memory-mapped file per operator partition, two header
//!   slots and a double-buffered payload area, so the previous epoch survives a crash at any
//!   point of writing the next. [`stage`](SnapshotStore::stage) copies (hot path),
//!   [`commit`](SnapshotStore::commit) flushes payload then header.
//! - [`SnapshotStore::recover`]: reads with `pread`, validates everything, returns the newest
//!   valid epoch or a typed error naming what is wrong with each header.
//! - an exclusive directory lock (`<dir>/LOCK`, `flock`), held for the store's lifetime.
//! - [`SnapshotCodec`]: a length-prefixed record codec with [`encode_records`] /
//!   [`decode_records`] for payloads.
//!
//! ```
//! use ringwait::snapshot::{decode_records, encode_records, SnapshotMeta, SnapshotStore};
//! # let dir = std::env::temp_dir().join(format!("rw-doc-mod-{}", std::process::id()));
//! // Restore: whatever survived the last run.
//! assert!(SnapshotStore::recover(&dir, 1, 0)?.is_none());
//!
//! // Checkpoint: the records not yet emitted, and where the source stands.
//! let mut store = SnapshotStore::open(&dir, 1, 0, 1 << 16)?;
//! let in_flight: Vec<(u64, String)> = vec![(10, "k:10".into()), (11, "k:11".into())];
//! let mut payload = Vec::new();
//! let count = encode_records(&in_flight, &mut payload);
//! let meta = SnapshotMeta { epoch: 1, capacity: 1000, record_count: count, source_position: 12, sink_position: 9, watermark: None };
//! store.write(meta, &payload)?;
//! drop(store);
//!
//! let rec = SnapshotStore::recover(&dir, 1, 0)?.expect("epoch 1");
//! assert_eq!(rec.meta.source_position, 12);
//! assert_eq!(decode_records::<(u64, String)>(&rec.payload).unwrap(), in_flight);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), ringwait::snapshot::SnapshotError>(())
//! ```

pub mod format;

mod codec;
mod error;
mod lock;
pub mod recover;
mod store;
mod sys;

pub use codec::{decode_records, encode_records, SnapshotCodec};
pub(crate) use codec::{encode_bytes, take_prefixed};
pub use error::{
    DecodeError, FlushStage, HeaderProblem, HeaderStatus, LockHolder, Slot, SnapshotError,
};
pub use format::{SnapshotMeta, MAX_PAYLOAD_LEN};
pub use lock::LOCK_FILE_NAME;
pub use recover::{recover_bytes, Recovered};
pub use store::{snapshot_path, FlushFault, SnapshotStore};
