//! A read buffer with a consumed prefix, growing up to a bound: what a RESP reader (the
//! client's reply reader and the server's command reader) reads into and parses from.

/// Bytes `buf[start..end]` are read and not yet parsed.
#[derive(Debug)]
pub(crate) struct ReadBuf {
    /// The storage.
    pub buf: Vec<u8>,
    /// Start of the unparsed bytes.
    pub start: usize,
    /// End of the bytes read.
    pub end: usize,
    /// Largest size the buffer may grow to.
    max_len: usize,
}

impl ReadBuf {
    /// A buffer of `len` bytes that may grow (doubling) up to `max_len`.
    pub fn new(len: usize, max_len: usize) -> Self {
        ReadBuf {
            buf: vec![0; len],
            start: 0,
            end: 0,
            max_len: max_len.max(len),
        }
    }

    /// Where the next read goes.
    #[inline]
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    /// Forgets everything read.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Makes room at the end to read into: by moving the unparsed bytes to the front, or by
    /// growing the buffer; `false` if the unparsed bytes (one message) already fill the
    /// largest buffer allowed.
    pub fn make_room(&mut self) -> bool {
        if self.start == self.end {
            self.clear();
        }
        if self.end < self.buf.len() {
            return true;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return true;
        }
        if self.buf.len() >= self.max_len {
            return false;
        }
        let len = (self.buf.len() * 2).min(self.max_len);
        self.buf.resize(len, 0);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_comes_from_the_consumed_prefix_first_then_growth_up_to_the_bound() {
        let mut b = ReadBuf::new(4, 8);
        b.spare()[..4].copy_from_slice(b"abcd");
        b.end = 4;
        b.start = 2;
        assert!(b.make_room());
        assert_eq!((&b.buf[b.start..b.end], b.buf.len()), (&b"cd"[..], 4));
        b.spare()[..2].copy_from_slice(b"ef");
        b.end = 4;
        assert!(b.make_room());
        assert_eq!(b.buf.len(), 8);
        b.spare()[..4].copy_from_slice(b"ghij");
        b.end = 8;
        assert!(!b.make_room(), "one message fills the largest buffer");
    }
}
