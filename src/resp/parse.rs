//! The incremental RESP2 parser. Stateless: every call starts at the front of the buffer.

use super::ProtocolError;

/// Bounds the parser enforces on what a peer may announce.
///
/// Every length is checked against its limit before the parser does any work proportional to
/// it, so hostile input costs at most the bytes actually received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted bulk string, in bytes (default 512 MiB, Redis' `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Largest accepted number of elements in one array (default 1,048,576).
    pub max_array_len: usize,
    /// Deepest accepted nesting of arrays; a top-level array has depth 1 (default 16).
    pub max_depth: usize,
    /// Longest accepted simple string, error or number line, without its CRLF (default 64 KiB).
    pub max_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 << 20,
            max_array_len: 1 << 20,
            max_depth: 16,
            max_line_len: 64 << 10,
        }
    }
}

/// A complete RESP2 frame borrowed from the parsed buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `+OK\r\n`: a simple string (without the CRLF).
    Simple(&'a [u8]),
    /// `-ERR message\r\n`: an error reply (without the `-` and the CRLF).
    Error(&'a [u8]),
    /// `:42\r\n`: an integer.
    Integer(i64),
    /// `$3\r\nfoo\r\n`: a bulk string.
    Bulk(&'a [u8]),
    /// `$-1\r\n`: the nil bulk string (a missing key).
    Nil,
    /// `*-1\r\n`: the nil array.
    NilArray,
    /// `*N\r\n...`: an array whose elements were validated and can be walked lazily.
    Array(ArrayView<'a>),
}

impl<'a> Frame<'a> {
    /// The payload of a bulk or simple string, `None` for every other kind.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Frame::Bulk(b) | Frame::Simple(b) => Some(b),
            _ => None,
        }
    }

    /// Whether this is a nil bulk string or a nil array.
    pub fn is_nil(&self) -> bool {
        matches!(self, Frame::Nil | Frame::NilArray)
    }
}

/// The elements of a validated array, walked lazily (nothing is allocated).
#[derive(Debug, Clone, Copy)]
pub struct ArrayView<'a> {
    /// The encoded elements, back to back.
    bytes: &'a [u8],
    /// How many elements `bytes` holds.
    len: usize,
    limits: Limits,
}

impl PartialEq for ArrayView<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for ArrayView<'_> {}

impl<'a> ArrayView<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Iterates over the elements in order.
    pub fn iter(&self) -> ArrayIter<'a> {
        ArrayIter {
            bytes: self.bytes,
            pos: 0,
            remaining: self.len,
            parser: Parser::new(self.limits),
        }
    }

    /// The encoded bytes of all elements (what followed the `*N\r\n` header).
    pub fn raw(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Iterator over the elements of an [`ArrayView`].
#[derive(Debug, Clone)]
pub struct ArrayIter<'a> {
    bytes: &'a [u8],
    pos: usize,
    remaining: usize,
    parser: Parser,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let rest = self.bytes.get(self.pos..)?;
        match self.parser.parse(rest) {
            Ok(Some((frame, used))) => {
                self.pos += used;
                self.remaining -= 1;
                Some(frame)
            }
            // The array was validated when it was parsed, so this cannot happen; stop cleanly.
            _ => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for ArrayIter<'_> {}

/// The RESP2 parser: holds only its [`Limits`]; cheap to copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parser {
    limits: Limits,
}

type Parsed<'a> = Result<Option<(Frame<'a>, usize)>, ProtocolError>;

impl Parser {
    /// A parser enforcing `limits`.
    pub const fn new(limits: Limits) -> Self {
        Parser { limits }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Parses one frame at the front of `buf`.
    ///
    /// Returns the frame and the number of bytes it occupies, `Ok(None)` if `buf` holds only
    /// a prefix of a valid frame, or the reason the bytes are not valid RESP2.
    ///
    /// ```
    /// use ringwait::resp::{Frame, Parser, ProtocolError};
    /// let p = Parser::default();
    /// assert_eq!(p.parse(b"$3\r\nfoo\r\n+OK"), Ok(Some((Frame::Bulk(b"foo"), 9))));
    /// assert_eq!(p.parse(b"$3\r\nfo"), Ok(None));
    /// assert!(matches!(p.parse(b"!x\r\n"), Err(ProtocolError::BadTypeByte { byte: b'!', .. })));
    /// ```
    pub fn parse<'a>(&self, buf: &'a [u8]) -> Parsed<'a> {
        self.parse_at(buf, 0, 0)
    }

    /// Parses the frame starting at `start`; returns it with the offset just past it.
    fn parse_at<'a>(&self, buf: &'a [u8], start: usize, depth: usize) -> Parsed<'a> {
        let Some(&kind) = buf.get(start) else {
            return Ok(None);
        };
        let Some(cr) = self.find_crlf(buf, start + 1)? else {
            return Ok(None);
        };
        let line = &buf[start + 1..cr];
        let after = cr + 2;
        match kind {
            b'+' => Ok(Some((Frame::Simple(line), after))),
            b'-' => Ok(Some((Frame::Error(line), after))),
            b':' => match parse_i64(line) {
                Some(n) => Ok(Some((Frame::Integer(n), after))),
                None => Err(ProtocolError::BadInteger { offset: start + 1 }),
            },
            b'$' => self.parse_bulk(buf, start, line, after),
            b'*' => self.parse_array(buf, start, line, after, depth),
            byte => Err(ProtocolError::BadTypeByte {
                byte,
                offset: start,
            }),
        }
    }

    fn parse_bulk<'a>(&self, buf: &'a [u8], start: usize, line: &[u8], data: usize) -> Parsed<'a> {
        let Some(len) = parse_length(line, start)? else {
            return Ok(Some((Frame::Nil, data)));
        };
        if len > self.limits.max_bulk_len as u64 {
            return Err(ProtocolError::BulkTooLong {
                len,
                max: self.limits.max_bulk_len,
            });
        }
        // `len` fits in usize: it is at most `max_bulk_len`.
        let end = data.saturating_add(len as usize);
        let Some(terminator) = buf.get(end..end.saturating_add(2)) else {
            // Only part of the payload or of its CRLF is here; reject a wrong byte early.
            return match buf.get(end) {
                Some(&b) if b != b'\r' => Err(ProtocolError::MissingCrlf { offset: end }),
                _ => Ok(None),
            };
        };
        if terminator != b"\r\n" {
            return Err(ProtocolError::MissingCrlf { offset: end });
        }
        Ok(Some((Frame::Bulk(&buf[data..end]), end + 2)))
    }

    fn parse_array<'a>(
        &self,
        buf: &'a [u8],
        start: usize,
        line: &[u8],
        first: usize,
        depth: usize,
    ) -> Parsed<'a> {
        let Some(len) = parse_length(line, start)? else {
            return Ok(Some((Frame::NilArray, first)));
        };
        if len > self.limits.max_array_len as u64 {
            return Err(ProtocolError::TooManyElements {
                len,
                max: self.limits.max_array_len,
            });
        }
        if depth >= self.limits.max_depth {
            return Err(ProtocolError::TooDeep {
                max: self.limits.max_depth,
            });
        }
        let mut pos = first;
        for _ in 0..len {
            match self.parse_at(buf, pos, depth + 1)? {
                Some((_, end)) => pos = end,
                None => return Ok(None),
            }
        }
        let view = ArrayView {
            bytes: &buf[first..pos],
            len: len as usize,
            limits: self.limits,
        };
        Ok(Some((Frame::Array(view), pos)))
    }

    /// Finds the `\r` of the CRLF ending the line that starts at `from`.
    fn find_crlf(&self, buf: &[u8], from: usize) -> Result<Option<usize>, ProtocolError> {
        let max = self.limits.max_line_len;
        let window_end = buf.len().min(from.saturating_add(max).saturating_add(1));
        let window = buf.get(from..window_end).unwrap_or(&[]);
        for (i, &b) in window.iter().enumerate() {
            let at = from + i;
            match b {
                b'\r' => {
                    return match buf.get(at + 1) {
                        Some(b'\n') => Ok(Some(at)),
                        Some(_) => Err(ProtocolError::MissingCrlf { offset: at }),
                        None => Ok(None),
                    };
                }
                b'\n' => return Err(ProtocolError::MissingCrlf { offset: at }),
                _ => {}
            }
        }
        if buf.len().saturating_sub(from) > max {
            Err(ProtocolError::LineTooLong { max })
        } else {
            Ok(None)
        }
    }
}

/// Parses a bulk/array length: `Ok(None)` for `-1` (nil), the length otherwise.
fn parse_length(line: &[u8], start: usize) -> Result<Option<u64>, ProtocolError> {
    match parse_i64(line) {
        Some(-1) => Ok(None),
        Some(n) if n >= 0 => Ok(Some(n as u64)),
        _ => Err(ProtocolError::BadLength { offset: start + 1 }),
    }
}

/// Parses an optionally negative decimal `i64`; `None` on anything else or on overflow.
pub(crate) fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(d - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Parsed<'_> {
        Parser::default().parse(bytes)
    }

    #[test]
    fn every_scalar_kind_parses_to_a_borrowed_view() {
        assert_eq!(parse(b"+OK\r\n"), Ok(Some((Frame::Simple(b"OK"), 5))));
        assert_eq!(parse(b"-ERR x\r\n"), Ok(Some((Frame::Error(b"ERR x"), 8))));
        assert_eq!(parse(b":-42\r\n"), Ok(Some((Frame::Integer(-42), 6))));
        assert_eq!(parse(b"$0\r\n\r\n"), Ok(Some((Frame::Bulk(b""), 6))));
        assert_eq!(parse(b"$-1\r\n"), Ok(Some((Frame::Nil, 5))));
        assert_eq!(parse(b"*-1\r\n"), Ok(Some((Frame::NilArray, 5))));
    }

    #[test]
    fn nested_array_walks_lazily() {
        let bytes = b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n+x\r\ntrailing";
        let (frame, used) = parse(bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len() - b"trailing".len());
        let Frame::Array(items) = frame else {
            panic!("not an array")
        };
        let items: Vec<Frame> = items.iter().collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0], Frame::Integer(1));
        let Frame::Array(inner) = items[1] else {
            panic!("not an array")
        };
        assert_eq!(
            inner.iter().collect::<Vec<_>>(),
            [Frame::Bulk(b"a"), Frame::Nil]
        );
        assert_eq!(items[2], Frame::Simple(b"x"));
    }

    #[test]
    fn incomplete_input_asks_for_more() {
        for bytes in [
            &b""[..],
            b"+OK",
            b"+OK\r",
            b"$3\r\nfo",
            b"$3\r\nfoo",
            b"$3\r\nfoo\r",
            b"*2\r\n:1\r\n",
            b":12",
        ] {
            assert_eq!(parse(bytes), Ok(None), "{bytes:?}");
        }
    }

    #[test]
    fn malformed_input_is_a_typed_error() {
        use ProtocolError::*;
        assert!(matches!(
            parse(b"?\r\n"),
            Err(BadTypeByte {
                byte: b'?',
                offset: 0
            })
        ));
        assert!(matches!(parse(b"$x\r\n"), Err(BadLength { .. })));
        assert!(matches!(parse(b"$-2\r\n"), Err(BadLength { .. })));
        assert!(matches!(parse(b"*-5\r\n"), Err(BadLength { .. })));
        assert!(matches!(parse(b":1x\r\n"), Err(BadInteger { .. })));
        assert!(matches!(
            parse(b":99999999999999999999\r\n"),
            Err(BadInteger { .. })
        ));
        assert!(matches!(
            parse(b"$1\r\nab\r\n"),
            Err(MissingCrlf { offset: 5 })
        ));
        assert!(matches!(parse(b"+a\rb\r\n"), Err(MissingCrlf { .. })));
        assert!(matches!(parse(b"+a\nb\r\n"), Err(MissingCrlf { .. })));
        assert!(matches!(
            parse(b"*1\r\n!\r\n"),
            Err(BadTypeByte { offset: 4, .. })
        ));
    }

    #[test]
    fn limits_are_enforced_before_waiting_for_data() {
        let p = Parser::new(Limits {
            max_bulk_len: 10,
            max_array_len: 3,
            max_depth: 2,
            max_line_len: 8,
        });
        assert_eq!(
            p.parse(b"$11\r\n"),
            Err(ProtocolError::BulkTooLong { len: 11, max: 10 })
        );
        assert_eq!(
            p.parse(b"*4\r\n"),
            Err(ProtocolError::TooManyElements { len: 4, max: 3 })
        );
        assert_eq!(
            p.parse(b"*1\r\n*1\r\n*1\r\n:1\r\n"),
            Err(ProtocolError::TooDeep { max: 2 })
        );
        assert_eq!(
            p.parse(b"*1\r\n*1\r\n:1\r\n").map(|r| r.map(|(_, n)| n)),
            Ok(Some(12))
        );
        assert_eq!(
            p.parse(b"+123456789"),
            Err(ProtocolError::LineTooLong { max: 8 })
        );
        assert_eq!(p.parse(b"+12345678"), Ok(None));
        assert!(matches!(
            Parser::default().parse(b"$18446744073709551615\r\n"),
            Err(ProtocolError::BadLength { .. })
        ));
    }

    #[test]
    fn integer_edges() {
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b""), None);
    }
}
