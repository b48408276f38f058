//! On-disk layout of a snapshot file and the header codec.
//!
//! ```text
//! offset 0      header slot A (4096 bytes: a 104-byte header record, the rest zero and ignored)
//! offset 4096   header slot B (4096 bytes)
//! offset 8192   payload area: two halves of `region` bytes each (`region` a multiple of 4096)
//!               lower half [8192, 8192 + region), upper half [8192 + region, 8192 + 2 * region)
//! ```
//!
//! Header record, all integers little-endian, byte offsets:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `RINGWSNP` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | flags: bit 0 = watermark present; other bits must be 0 |
//! | 16 | 8 | operator id |
//! | 24 | 4 | partition |
//! | 28 | 4 | reserved, must be 0 |
//! | 32 | 8 | epoch |
//! | 40 | 8 | operator capacity |
//! | 48 | 8 | record count |
//! | 56 | 8 | source position |
//! | 64 | 8 | sink committed position |
//! | 72 | 8 | watermark (i64; 0 when flag bit 0 is clear) |
//! | 80 | 8 | payload offset in the file |
//! | 88 | 8 | payload length |
//! | 96 | 4 | payload CRC-32 (IEEE) |
//! | 100 | 4 | header CRC-32 over bytes 0..100 |
//!
//! Headers carry their payload's offset, so a header and its payload travel together: the writer
//! always puts a new payload in the half that does *not* hold the latest committed payload, and
//! when a payload outgrows a half, the file grows so that everything already written lies in the
//! new lower half and the new payload goes to the new upper half.
#![deny(unsafe_code)]

use super::error::HeaderProblem;

/// Size of one header slot; each slot is its own 4 KiB page.
pub const HEADER_SLOT_SIZE: u64 = 4096;
/// Bytes before the payload area (two header slots).
pub const HEADER_AREA: u64 = 2 * HEADER_SLOT_SIZE;
/// Length of the header record at the start of each slot.
pub const HEADER_LEN: usize = 104;
/// The first 8 bytes of every header.
pub const MAGIC: [u8; 8] = *b"RINGWSNP";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Payload halves are multiples of this.
pub const REGION_ALIGN: u64 = 4096;
/// Sanity limit on one payload (1 TiB): longer lengths in a header are corruption.
pub const MAX_PAYLOAD_LEN: u64 = 1 << 40;

const FLAG_WATERMARK: u32 = 1;
const CRC_COVERED: usize = 100;

/// What a snapshot header says about the operator's state, besides the payload.
///
/// The storage layer does not interpret these; the operator does (S10/S11).
///
/// ```
/// use ringwait::snapshot::SnapshotMeta;
/// let meta = SnapshotMeta { epoch: 3, capacity: 1000, record_count: 2, watermark: Some(-5), ..Default::default() };
/// assert_eq!(meta.source_position, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct SnapshotMeta {
    /// Checkpoint epoch; strictly increasing per store.
    pub epoch: u64,
    /// Operator capacity C when the snapshot was taken.
    pub capacity: u64,
    /// Number of records in the payload.
    pub record_count: u64,
    /// Source position to resume reading from.
    pub source_position: u64,
    /// Position the sink had committed.
    pub sink_position: u64,
    /// Current watermark, `None` before the first one.
    pub watermark: Option<i64>,
}

/// A header as decoded from, or about to be encoded into, a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub operator_id: u64,
    pub partition: u32,
    pub meta: SnapshotMeta,
    pub payload: Extent,
    pub payload_crc: u32,
}

/// A byte range of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub offset: u64,
    pub len: u64,
}

impl Extent {
    /// One past the last byte (saturating: extents come from untrusted headers).
    pub fn end(self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// File offset of a header slot.
pub(crate) fn slot_offset(slot: super::Slot) -> u64 {
    slot.index() as u64 * HEADER_SLOT_SIZE
}

fn put_u32(buf: &mut [u8; HEADER_LEN], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8; HEADER_LEN], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(buf: &[u8; HEADER_LEN], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn get_u64(buf: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Encodes a header record, computing its CRC.
pub(crate) fn encode_header(h: &Header) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    put_u32(&mut b, 8, FORMAT_VERSION);
    let flags = if h.meta.watermark.is_some() {
        FLAG_WATERMARK
    } else {
        0
    };
    put_u32(&mut b, 12, flags);
    put_u64(&mut b, 16, h.operator_id);
    put_u32(&mut b, 24, h.partition);
    put_u32(&mut b, 28, 0);
    put_u64(&mut b, 32, h.meta.epoch);
    put_u64(&mut b, 40, h.meta.capacity);
    put_u64(&mut b, 48, h.meta.record_count);
    put_u64(&mut b, 56, h.meta.source_position);
    put_u64(&mut b, 64, h.meta.sink_position);
    put_u64(&mut b, 72, h.meta.watermark.unwrap_or(0) as u64);
    put_u64(&mut b, 80, h.payload.offset);
    put_u64(&mut b, 88, h.payload.len);
    put_u32(&mut b, 96, h.payload_crc);
    let crc = crc32fast::hash(&b[..CRC_COVERED]);
    put_u32(&mut b, CRC_COVERED, crc);
    b
}

/// Decodes and checks a header record on its own (no file size, no payload).
///
/// `Ok(None)`: the record is all zero, a never-written slot.
pub(crate) fn decode_header(
    b: &[u8; HEADER_LEN],
    operator_id: u64,
    partition: u32,
) -> Result<Option<Header>, HeaderProblem> {
    if b.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    check_integrity(b)?;
    check_owner(b, operator_id, partition)?;
    let watermark = decode_watermark(b)?;
    let payload = decode_payload_extent(b)?;
    Ok(Some(Header {
        operator_id,
        partition,
        meta: SnapshotMeta {
            epoch: get_u64(b, 32),
            capacity: get_u64(b, 40),
            record_count: get_u64(b, 48),
            source_position: get_u64(b, 56),
            sink_position: get_u64(b, 64),
            watermark,
        },
        payload,
        payload_crc: get_u32(b, 96),
    }))
}

/// Magic, header checksum, format version.
fn check_integrity(b: &[u8; HEADER_LEN]) -> Result<(), HeaderProblem> {
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&b[0..8]);
    if magic != MAGIC {
        return Err(HeaderProblem::BadMagic { found: magic });
    }
    let stored = get_u32(b, CRC_COVERED);
    let computed = crc32fast::hash(&b[..CRC_COVERED]);
    if stored != computed {
        return Err(HeaderProblem::HeaderChecksum { stored, computed });
    }
    let version = get_u32(b, 8);
    if version != FORMAT_VERSION {
        return Err(HeaderProblem::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// The header belongs to this operator and partition.
fn check_owner(
    b: &[u8; HEADER_LEN],
    operator_id: u64,
    partition: u32,
) -> Result<(), HeaderProblem> {
    let found_op = get_u64(b, 16);
    if found_op != operator_id {
        return Err(HeaderProblem::WrongOperator {
            expected: operator_id,
            found: found_op,
        });
    }
    let found_part = get_u32(b, 24);
    if found_part != partition {
        return Err(HeaderProblem::WrongPartition {
            expected: partition,
            found: found_part,
        });
    }
    Ok(())
}

/// The watermark, checking the flags and the reserved field on the way (a set watermark
/// field with its flag clear is corruption, not "no watermark").
fn decode_watermark(b: &[u8; HEADER_LEN]) -> Result<Option<i64>, HeaderProblem> {
    let flags = get_u32(b, 12);
    if flags & !FLAG_WATERMARK != 0 {
        return Err(HeaderProblem::BadField {
            field: "flags",
            value: flags.into(),
        });
    }
    let reserved = get_u32(b, 28);
    if reserved != 0 {
        return Err(HeaderProblem::BadField {
            field: "reserved",
            value: reserved.into(),
        });
    }
    let raw_watermark = get_u64(b, 72);
    if flags & FLAG_WATERMARK != 0 {
        Ok(Some(raw_watermark as i64))
    } else if raw_watermark != 0 {
        Err(HeaderProblem::BadField {
            field: "watermark (flag clear)",
            value: raw_watermark,
        })
    } else {
        Ok(None)
    }
}

/// Where the payload is: after the header area, and no larger than the limit.
fn decode_payload_extent(b: &[u8; HEADER_LEN]) -> Result<Extent, HeaderProblem> {
    let payload = Extent {
        offset: get_u64(b, 80),
        len: get_u64(b, 88),
    };
    if payload.offset < HEADER_AREA {
        return Err(HeaderProblem::PayloadOverlapsHeaders {
            offset: payload.offset,
        });
    }
    if payload.len > MAX_PAYLOAD_LEN {
        return Err(HeaderProblem::PayloadTooLarge {
            len: payload.len,
            limit: MAX_PAYLOAD_LEN,
        });
    }
    Ok(payload)
}

/// Rounds `n` up to [`REGION_ALIGN`], at least one alignment unit.
pub(crate) fn round_region(n: u64) -> u64 {
    let n = n.max(1);
    n.div_ceil(REGION_ALIGN).saturating_mul(REGION_ALIGN)
}

/// Where the next payload goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Size of each half after this write (grows, never shrinks).
    pub region: u64,
    /// File offset of the new payload.
    pub offset: u64,
}

/// Chooses the half for a payload of `len` bytes that must not overwrite `live` (the latest
/// committed payload), growing the halves when needed.
///
/// Guarantees: `offset >= HEADER_AREA`, `offset + len <= HEADER_AREA + 2 * region`, the new range
/// does not overlap `live`, `region` is aligned and never shrinks, and it does not grow when
/// `len <= region` and `live` lies inside one half.
pub(crate) fn place(region: u64, live: Option<Extent>, len: u64) -> Placement {
    let mut region = region;
    if len > region {
        region = round_region(len).max(region.saturating_mul(2));
    }
    let lower = HEADER_AREA;
    let upper = HEADER_AREA.saturating_add(region);
    let offset = match live {
        None => lower,
        Some(l) if l.offset >= lower && l.end() <= upper => upper,
        Some(l) if l.offset >= upper && l.end() <= upper.saturating_add(region) => lower,
        Some(l) => {
            // The live payload straddles the halves (a file laid out by other parameters):
            // grow so that it lies in the lower half.
            region = region.max(round_region(l.end().saturating_sub(HEADER_AREA)));
            HEADER_AREA + region
        }
    };
    Placement { region, offset }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> Header {
        Header {
            operator_id: 7,
            partition: 3,
            meta: SnapshotMeta {
                epoch: 9,
                capacity: 1000,
                record_count: 4,
                source_position: 55,
                sink_position: 44,
                watermark: Some(i64::MIN),
            },
            payload: Extent {
                offset: HEADER_AREA,
                len: 100,
            },
            payload_crc: 0xdead_beef,
        }
    }

    #[test]
    fn header_round_trips_including_min_watermark() {
        let h = header();
        assert_eq!(decode_header(&encode_header(&h), 7, 3), Ok(Some(h)));
        let none = Header {
            meta: SnapshotMeta {
                watermark: None,
                ..h.meta
            },
            ..h
        };
        assert_eq!(decode_header(&encode_header(&none), 7, 3), Ok(Some(none)));
    }

    #[test]
    fn all_zero_header_is_empty_not_corrupt() {
        assert_eq!(decode_header(&[0; HEADER_LEN], 1, 1), Ok(None));
    }

    #[test]
    fn every_single_bit_flip_of_a_header_is_rejected() {
        let b = encode_header(&header());
        for bit in 0..HEADER_LEN * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_header(&c, 7, 3).is_err(), "bit {bit} accepted");
        }
    }

    fn arb_extent() -> impl Strategy<Value = Option<Extent>> {
        proptest::option::of((0u64..1 << 24, 0u64..1 << 22).prop_map(|(o, len)| Extent {
            offset: HEADER_AREA + o,
            len,
        }))
    }

    proptest! {
        #[test]
        fn placement_never_overlaps_the_live_payload(
            region_pages in 1u64..512,
            live in arb_extent(),
            len in 0u64..1 << 23,
        ) {
            let region = region_pages * REGION_ALIGN;
            let p = place(region, live, len);
            prop_assert!(p.region >= region);
            prop_assert_eq!(p.region % REGION_ALIGN, 0);
            prop_assert!(p.offset >= HEADER_AREA);
            prop_assert!(p.offset + len <= HEADER_AREA + 2 * p.region);
            if let Some(l) = live {
                let disjoint = p.offset + len <= l.offset || l.end() <= p.offset || len == 0 || l.len == 0;
                prop_assert!(disjoint, "{:?} overlaps {:?}", p, l);
                let in_lower = l.end() <= HEADER_AREA + region;
                let in_upper = l.offset >= HEADER_AREA + region && l.end() <= HEADER_AREA + 2 * region;
                if len <= region && (in_lower || in_upper) {
                    prop_assert_eq!(p.region, region);
                }
            }
        }
    }
}
