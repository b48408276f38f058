//! Kafka: the address syntax, the clients' settings, what a message carries through the
//! pipeline, which input offsets may be committed, and the read-back of an output
//! partition's tail that keeps a restart from producing an output twice.
//!
//! The clients are librdkafka's (the `rdkafka` crate, built from its bundled sources). Its
//! threads are its own, never the partitions' pinned cores: the job's Kafka reader and
//! producer sit where the file reader and writer sit.
//!
//! **No loss, no duplicates, without transactions.** Each output message carries its
//! source in the header [`SRC_HEADER`] (`TOPIC/PARTITION/OFFSET`); one in every 64 (and
//! the first of each assignment) also carries its source partition's progress in
//! [`PROGRESS_HEADER`] (a [`ProgressMark`]). An input offset is
//! committed only once every message before it is done, its output delivered (acknowledged
//! by all in-sync replicas). A new owner of the input partition (a restart, another
//! instance after a crash, a rebalance) looks back along the output partitions for a mark
//! at or below the committed offset, reads the tails from where it points (`read_range`),
//! and skips every message whose output already landed.

#[cfg(feature = "kafka")]
mod client;
pub mod origin;
pub mod tracker;
mod url;

#[cfg(feature = "kafka")]
pub use client::*;
pub use tracker::{OffsetTracker, OUTPUTS};
pub use url::{KafkaStart, KafkaUrl, KafkaUrlError};

/// The header naming an output message's source: `TOPIC/PARTITION/OFFSET`.
pub const SRC_HEADER: &str = "ringwait-src";

/// The header of a side-output message saying why its record failed.
pub const ERROR_HEADER: &str = "ringwait-error";

/// `TOPIC/PARTITION/OFFSET`, the value of [`SRC_HEADER`].
pub fn src_value(out: &mut Vec<u8>, topic: &str, partition: i32, offset: i64) {
    out.clear();
    out.extend_from_slice(topic.as_bytes());
    out.push(b'/');
    push_decimal(out, i64::from(partition));
    out.push(b'/');
    push_decimal(out, offset);
}

/// Appends `v` in decimal (the RESP encoder's formatter): the headers are written once per
/// output message, and `core::fmt` took a tenth of the writer's time there.
fn push_decimal(out: &mut Vec<u8>, v: i64) {
    let mut digits = [0u8; 20];
    let start = crate::resp::encode::format_i64(v, &mut digits);
    out.extend_from_slice(&digits[start..]);
}

/// Reads a [`SRC_HEADER`] value.
pub fn parse_src(v: &[u8]) -> Option<(&str, i32, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (rest, offset) = s.rsplit_once('/')?;
    let (topic, partition) = rest.rsplit_once('/')?;
    Some((topic, partition.parse().ok()?, offset.parse().ok()?))
}

/// The header giving the source partition's progress when an output was produced:
/// `COMMITTABLE/FROM0/FROM1` (see [`ProgressMark`]). The first output of each assignment of
/// a source partition carries it, and one in every 64 after.
pub const PROGRESS_HEADER: &str = "ringwait-progress";

/// What an output message says of its source partition's progress when it was produced:
/// every output of a message at or after `committable` is at or after `from[0]` on the
/// output partition and `from[1]` on the side output's (see [`tracker`]). A later owner
/// that finds a mark with `committable` at or below the group's committed offset knows where
/// the tail it must read back starts. (The marks ride on the outputs rather than in the
/// offset commits' metadata because tansu 0.6 does not return that metadata.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressMark {
    /// The partition's committable offset.
    pub committable: i64,
    /// Where the outputs of messages at or after it are, per output.
    pub from: [i64; OUTPUTS],
}

impl ProgressMark {
    /// The header value.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        push_decimal(out, self.committable);
        for f in self.from {
            out.push(b'/');
            push_decimal(out, f);
        }
    }

    /// Reads a header value; `None` for anything else.
    pub fn decode(v: &[u8]) -> Option<ProgressMark> {
        let s = std::str::from_utf8(v).ok()?;
        let mut it = s.split('/').map(|x| x.parse::<i64>().ok());
        let mark = ProgressMark {
            committable: it.next()??,
            from: [it.next()??, it.next()??],
        };
        it.next().is_none().then_some(mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn src_and_metadata_read_back() {
        let mut v = vec![];
        src_value(&mut v, "in.x", 3, 1 << 40);
        assert_eq!(parse_src(&v), Some(("in.x", 3, 1 << 40)));
        assert_eq!(parse_src(b"a/b/c"), None);
        let m = ProgressMark {
            committable: 17,
            from: [1234, i64::MAX],
        };
        m.encode(&mut v);
        assert_eq!(ProgressMark::decode(&v), Some(m));
        assert_eq!(ProgressMark::decode(b"1/2"), None);
        assert_eq!(ProgressMark::decode(b"1/2/3/4"), None);
    }

    #[test]
    fn decimals_are_written_as_format_writes_them() {
        let mut v = vec![];
        for x in [0, 1, 9, 10, 99, 100, -1, -10, 1 << 40, i64::MAX, i64::MIN] {
            v.clear();
            push_decimal(&mut v, x);
            assert_eq!(v, x.to_string().into_bytes());
        }
        src_value(&mut v, "t", -1, 0);
        assert_eq!(v, b"t/-1/0");
    }
}
