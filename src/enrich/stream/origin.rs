//! A stream record's origin, as the reader writes it and the committer reads it: the input
//! stream's number (one byte), the claim fence the entry was read at (eight bytes, little
//! endian; `u64::MAX` when it was not read as new), then the entry's id.

/// The longest origin: an id of up to 41 bytes (`MS-SEQ` of two `u64`s: 20 + 1 + 20).
pub(crate) const MAX: usize = 50;

const NOT_FRESH: u64 = u64::MAX;

/// Writes the origin of entry `id` of stream `k` read at `fence` into `out`; its length, or
/// `None` when the id does not fit.
pub(crate) fn write(out: &mut [u8; MAX], k: usize, fence: Option<u64>, id: &[u8]) -> Option<usize> {
    let len = 9 + id.len();
    if len > MAX || k > usize::from(u8::MAX) {
        return None;
    }
    out[0] = k as u8;
    out[1..9].copy_from_slice(&fence.unwrap_or(NOT_FRESH).to_le_bytes());
    out[9..len].copy_from_slice(id);
    Some(len)
}

/// An origin read back: `(stream, fence, id)`; `None` for one too short (not a stream
/// record's).
pub(crate) fn read(origin: &[u8]) -> Option<(usize, Option<u64>, &[u8])> {
    if origin.len() < 9 {
        return None;
    }
    let fence = u64::from_le_bytes(origin[1..9].try_into().expect("eight bytes"));
    let fence = (fence != NOT_FRESH).then_some(fence);
    Some((usize::from(origin[0]), fence, &origin[9..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_reads_back_as_written() {
        let mut buf = [0u8; MAX];
        let len = write(&mut buf, 3, Some(7), b"1700000000000-12").unwrap();
        assert_eq!(
            read(&buf[..len]),
            Some((3, Some(7), &b"1700000000000-12"[..]))
        );
        let len = write(&mut buf, 0, None, b"1-0").unwrap();
        assert_eq!(read(&buf[..len]), Some((0, None, &b"1-0"[..])));
        let longest = format!("{}-{}", u64::MAX, u64::MAX);
        let len = write(&mut buf, 1, None, longest.as_bytes()).unwrap();
        assert_eq!(read(&buf[..len]).unwrap().2, longest.as_bytes());
        assert_eq!(write(&mut buf, 0, None, &[b'1'; 42]), None);
        assert_eq!(read(b"\0\0"), None);
    }
}
