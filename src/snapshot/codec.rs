//! A small record codec for snapshot payloads: fixed-width little-endian integers, `u64`
//! length prefixes, and a record sequence framed as `count` + items.
//!
//! Decoding never trusts a length: a prefix or count larger than what the remaining input could
//! hold fails with a typed error before anything is allocated.
#![deny(unsafe_code)]

use super::error::DecodeError;

/// A value that can be written to, and read back from, a snapshot payload.
///
/// ```
/// use ringwait::snapshot::SnapshotCodec;
/// let mut buf = Vec::new();
/// (7u64, String::from("key")).encode(&mut buf);
/// let mut input = buf.as_slice();
/// assert_eq!(<(u64, String)>::decode(&mut input)?, (7, "key".to_string()));
/// assert!(input.is_empty());
/// # Ok::<(), ringwait::snapshot::DecodeError>(())
/// ```
pub trait SnapshotCodec: Sized {
    /// The fewest bytes any encoded value takes; at least 1 (it bounds record counts).
    const MIN_ENCODED_LEN: usize;

    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Reads one value from the front of `input`, advancing it past the value.
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError>;
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if input.len() < n {
        return Err(DecodeError::UnexpectedEnd {
            needed: n,
            remaining: input.len(),
        });
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

fn take_array<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    let mut a = [0u8; N];
    a.copy_from_slice(take(input, N)?);
    Ok(a)
}

/// Encodes `bytes` as a [`Vec<u8>`] would be, without making one.
pub(crate) fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    (bytes.len() as u64).encode(out);
    out.extend_from_slice(bytes);
}

/// Reads a `u64` length prefix and the bytes it announces (what [`encode_bytes`] wrote),
/// borrowed from the input, refusing lengths past the input.
pub(crate) fn take_prefixed<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = u64::decode(input)?;
    match usize::try_from(len) {
        Ok(n) if n <= input.len() => take(input, n),
        _ => Err(DecodeError::LengthTooLarge {
            len,
            remaining: input.len(),
        }),
    }
}

impl SnapshotCodec for u64 {
    const MIN_ENCODED_LEN: usize = 8;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }

    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        take_array(input).map(u64::from_le_bytes)
    }
}

impl SnapshotCodec for i64 {
    const MIN_ENCODED_LEN: usize = 8;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }

    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        take_array(input).map(i64::from_le_bytes)
    }
}

impl SnapshotCodec for Vec<u8> {
    const MIN_ENCODED_LEN: usize = 8;

    fn encode(&self, out: &mut Vec<u8>) {
        encode_bytes(self, out);
    }

    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        take_prefixed(input).map(<[u8]>::to_vec)
    }
}

impl SnapshotCodec for String {
    const MIN_ENCODED_LEN: usize = 8;

    fn encode(&self, out: &mut Vec<u8>) {
        encode_bytes(self.as_bytes(), out);
    }

    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let bytes = take_prefixed(input)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| DecodeError::InvalidUtf8 {
                valid_up_to: e.valid_up_to(),
            })
    }
}

impl<A: SnapshotCodec, B: SnapshotCodec> SnapshotCodec for (A, B) {
    const MIN_ENCODED_LEN: usize = A::MIN_ENCODED_LEN + B::MIN_ENCODED_LEN;

    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
        self.1.encode(out);
    }

    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let a = A::decode(input)?;
        let b = B::decode(input)?;
        Ok((a, b))
    }
}

/// Appends `count` (a `u64`) and then every record to `out`. `out` can be reused across
/// snapshots to avoid allocating on the hot path.
///
/// ```
/// use ringwait::snapshot::{decode_records, encode_records};
/// let mut payload = Vec::new();
/// encode_records(&[(1u64, -1i64), (2, -2)], &mut payload);
/// assert_eq!(payload.len(), 8 + 2 * 16);
/// assert_eq!(decode_records::<(u64, i64)>(&payload)?, vec![(1, -1), (2, -2)]);
/// # Ok::<(), ringwait::snapshot::DecodeError>(())
/// ```
pub fn encode_records<'a, T, I>(records: I, out: &mut Vec<u8>) -> u64
where
    T: SnapshotCodec + 'a,
    I: IntoIterator<Item = &'a T>,
{
    let count_at = out.len();
    0u64.encode(out);
    let mut count = 0u64;
    for r in records {
        r.encode(out);
        count += 1;
    }
    out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    count
}

/// Decodes a payload written by [`encode_records`]: the whole input must be consumed.
///
/// A count that the input cannot hold (`count * T::MIN_ENCODED_LEN > remaining`) fails with
/// [`DecodeError::CountTooLarge`] before allocating.
///
/// ```
/// use ringwait::snapshot::{decode_records, DecodeError};
/// let absurd = u64::MAX.to_le_bytes();
/// assert!(matches!(decode_records::<u64>(&absurd), Err(DecodeError::CountTooLarge { .. })));
/// ```
pub fn decode_records<T: SnapshotCodec>(payload: &[u8]) -> Result<Vec<T>, DecodeError> {
    let mut input = payload;
    let count = u64::decode(&mut input)?;
    let min = T::MIN_ENCODED_LEN.max(1) as u64;
    if count > input.len() as u64 / min {
        return Err(DecodeError::CountTooLarge {
            count,
            remaining: input.len(),
        });
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        out.push(T::decode(&mut input)?);
    }
    if !input.is_empty() {
        return Err(DecodeError::TrailingBytes { count: input.len() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn absurd_vec_length_fails_without_allocating() {
        let mut buf = Vec::new();
        u64::MAX.encode(&mut buf);
        buf.extend_from_slice(b"abc");
        let mut input = buf.as_slice();
        assert_eq!(
            Vec::<u8>::decode(&mut input),
            Err(DecodeError::LengthTooLarge {
                len: u64::MAX,
                remaining: 3
            })
        );
    }

    #[test]
    fn invalid_utf8_string_is_refused() {
        let mut buf = Vec::new();
        vec![b'o', b'k', 0xff].encode(&mut buf);
        assert_eq!(
            String::decode(&mut buf.as_slice()),
            Err(DecodeError::InvalidUtf8 { valid_up_to: 2 })
        );
    }

    #[test]
    fn trailing_bytes_after_records_are_refused() {
        let mut buf = Vec::new();
        encode_records(&[1u64], &mut buf);
        buf.push(0);
        assert_eq!(
            decode_records::<u64>(&buf),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
    }

    proptest! {
        #[test]
        fn records_round_trip(records in proptest::collection::vec(
            (any::<u64>(), (any::<i64>(), (proptest::collection::vec(any::<u8>(), 0..20), ".{0,8}"))),
            0..50,
        )) {
            let mut buf = Vec::new();
            prop_assert_eq!(encode_records(&records, &mut buf), records.len() as u64);
            prop_assert_eq!(decode_records::<(u64, (i64, (Vec<u8>, String)))>(&buf).unwrap(), records);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_records::<(u64, (Vec<u8>, String))>(&bytes);
            let _ = decode_records::<(i64, u64)>(&bytes);
        }
    }
}
