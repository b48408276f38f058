//! The record `enrich` moves through the operator: the input line itself, byte for byte, with
//! what the writer needs to add one field to it (where its object closes, and where the field
//! already is, if it is), and the lookup key.

use std::sync::Arc;

use super::chunk::ChunkBuilder;
use super::scan::{kind_of, scan_object, unescape, ScanError};
use crate::snapshot::{encode_bytes, take_prefixed, SnapshotCodec};

/// One input line, checked: its bytes as read, the lookup key, and where the field `--into`
/// goes.
///
/// The bytes live in a chunk shared by the lines read together (the reader reads 64 KiB at
/// a time and makes one allocation for all the lines in it and their keys), so a line costs
/// no allocation of its own: cloning it counts a reference.
#[derive(Debug, Clone)]
pub struct Line {
    /// The lines and keys this line was read with.
    chunk: Arc<Vec<u8>>,
    /// Byte range of the line's text in `chunk`.
    text: (u32, u32),
    /// Byte range of the lookup key in `chunk` (an invalid record's: the error's text).
    key: (u32, u32),
    /// Byte range in `chunk` of where the record came from, when its source names it (a
    /// stream entry: see [`Line::origin`]); empty for a line of a file.
    origin: (u32, u32),
    /// 1-based line number in the input.
    pub number: u64,
    /// 0-based index among the records (the order `ordered` mode restores).
    pub index: u64,
    /// Byte range, in the text, of the value of the field `--into`, when the object has it
    /// (the value is replaced there); `None`: the field is added before the closing brace.
    pub into: Option<(u32, u32)>,
    /// Index in the text of the object's closing brace.
    pub close: u32,
    /// The object has no field (no comma before an added field).
    pub empty: bool,
    /// A blank line (nothing but spaces and tabs): it keeps its place in the order but is
    /// not looked up and not written; the writer counts it.
    pub blank: bool,
    /// The line ended with `\r\n` (the output line ends the same way; otherwise with `\n`).
    pub crlf: bool,
    /// A stream entry whose payload is not a record (not UTF-8, not a JSON object, no key):
    /// its text is the payload as it came, [`Line::invalid_reason`] says why, and it goes to
    /// the error policy without a lookup.
    pub invalid: bool,
}

impl Line {
    /// The line without its line break: one JSON object, as it was read (checked UTF-8).
    #[inline]
    pub fn text(&self) -> &[u8] {
        &self.chunk[self.text.0 as usize..self.text.1 as usize]
    }

    /// The key to look up: `--key-prefix` followed by the key field.
    #[inline]
    pub fn key(&self) -> &[u8] {
        &self.chunk[self.key.0 as usize..self.key.1 as usize]
    }

    /// Where the record came from, as its source wrote it: for a stream entry, one byte
    /// (the input stream's position in the `--input` URL) and the entry's id; empty for a
    /// line of a file.
    #[inline]
    pub fn origin(&self) -> &[u8] {
        &self.chunk[self.origin.0 as usize..self.origin.1 as usize]
    }

    /// Why an [`invalid`](Line::invalid) record was refused.
    pub fn invalid_reason(&self) -> Option<&str> {
        self.invalid
            .then(|| std::str::from_utf8(self.key()).unwrap_or("invalid record"))
    }

    /// A line whose text, key and origin are the given ranges of `chunk`.
    pub(crate) fn in_chunk(
        chunk: Arc<Vec<u8>>,
        (text, key, origin): ((u32, u32), (u32, u32), (u32, u32)),
        number: u64,
        index: u64,
        shape: Shape,
    ) -> Line {
        Line {
            chunk,
            text,
            key,
            origin,
            number,
            index,
            into: shape.into,
            close: shape.close,
            empty: shape.empty,
            blank: shape.blank,
            crlf: shape.crlf,
            invalid: shape.invalid,
        }
    }
}

impl PartialEq for Line {
    fn eq(&self, other: &Line) -> bool {
        (
            self.number,
            self.index,
            self.into,
            self.close,
            self.empty,
            self.blank,
            self.crlf,
            self.invalid,
        ) == (
            other.number,
            other.index,
            other.into,
            other.close,
            other.empty,
            other.blank,
            other.crlf,
            other.invalid,
        ) && self.text() == other.text()
            && self.key() == other.key()
            && self.origin() == other.origin()
    }
}

impl Eq for Line {}

/// What checking a line found: where the field `--into` goes in its text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub into: Option<(u32, u32)>,
    pub close: u32,
    pub empty: bool,
    pub blank: bool,
    pub crlf: bool,
    /// Not a record: the key range holds the reason (see [`Line::invalid`]).
    pub invalid: bool,
}

impl Shape {
    /// A blank line's.
    const BLANK: Shape = Shape {
        into: None,
        close: 0,
        empty: true,
        blank: true,
        crlf: false,
        invalid: false,
    };

    /// An invalid record's.
    pub const INVALID: Shape = Shape {
        into: None,
        close: 0,
        empty: true,
        blank: false,
        crlf: false,
        invalid: true,
    };
}

/// Where a checked line's lookup key is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyAt {
    /// A byte range of the line's text: a string key without escapes or prefix.
    Text(u32, u32),
    /// A byte range of the keys buffer it was written to (escaped, prefixed, or a number).
    Keys(u32, u32),
}

/// Why an input line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not JSON.
    #[error("line {line}: not valid JSON: {reason}")]
    NotJson {
        /// Line number.
        line: u64,
        /// What is wrong, and where.
        reason: String,
    },
    /// Not UTF-8.
    #[error("line {line}: not valid UTF-8 (at byte {at} of the line)")]
    NotUtf8 {
        /// Line number.
        line: u64,
        /// Offset of the first invalid byte.
        at: usize,
    },
    /// JSON, but not an object.
    #[error("line {line}: expected a JSON object, found {found}")]
    NotAnObject {
        /// Line number.
        line: u64,
        /// What was found.
        found: &'static str,
    },
    /// The key field is missing.
    #[error("line {line}: the key field {field:?} is missing")]
    MissingKey {
        /// Line number.
        line: u64,
        /// The field name.
        field: String,
    },
    /// The key field is neither a string nor an integer.
    #[error("line {line}: the key field {field:?} must be a string or an integer, found {found}")]
    BadKey {
        /// Line number.
        line: u64,
        /// The field name.
        field: String,
        /// What was found.
        found: &'static str,
    },
}

/// The field names a line is read for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineFields {
    /// `--key`: the field holding the lookup key.
    pub key: String,
    /// `--key-prefix`: prepended to the key.
    pub key_prefix: String,
    /// `--into`: the field the writer sets.
    pub into: String,
}

/// Checks one input line and finds its key and where `--into` goes, without building the
/// object: the line stays as it was read.
///
/// ```
/// use ringwait::enrich::{parse_line, LineFields};
/// let f = LineFields { key: "key".into(), key_prefix: "".into(), into: "value".into() };
/// let l = parse_line(r#"{"id":1, "key":"k:7"}"#, 1, 0, &f).unwrap();
/// assert_eq!(l.key(), b"k:7");
/// assert_eq!(l.text(), br#"{"id":1, "key":"k:7"}"#);
/// let p = LineFields { key_prefix: "k:".into(), ..f.clone() };
/// assert_eq!(parse_line(r#"{"key":7}"#, 2, 1, &p).unwrap().key(), b"k:7");
/// assert!(parse_line("nope", 3, 2, &f).unwrap_err().to_string().starts_with("line 3:"));
/// ```
pub fn parse_line(
    text: &str,
    number: u64,
    index: u64,
    fields: &LineFields,
) -> Result<Line, LineError> {
    let mut chunk = ChunkBuilder::with_capacity(text.len());
    chunk.push(text.as_bytes(), number, index, fields)?;
    Ok(chunk.only_line())
}

/// Checks one line (already known to be UTF-8) and finds its lookup key: in the line itself
/// when it is a plain string and there is no prefix, otherwise written to the end of `keys`.
pub(crate) fn scan_line(
    b: &[u8],
    number: u64,
    fields: &LineFields,
    keys: &mut Vec<u8>,
) -> Result<(KeyAt, Shape), LineError> {
    if b.iter().all(|c| matches!(c, b' ' | b'\t')) {
        return Ok((KeyAt::Text(0, 0), Shape::BLANK));
    }
    let scanned = scan_object(b, fields.key.as_bytes(), fields.into.as_bytes())
        .map_err(|e| scan_error(number, e))?;
    let Some((start, end)) = scanned.key else {
        return Err(LineError::MissingKey {
            line: number,
            field: fields.key.clone(),
        });
    };
    let shape = Shape {
        into: scanned.into.map(|(s, e)| (s as u32, e as u32)),
        close: scanned.close as u32,
        empty: scanned.empty,
        blank: false,
        crlf: false,
        invalid: false,
    };
    let raw = &b[start..end];
    if fields.key_prefix.is_empty() && raw[0] == b'"' && !raw.contains(&b'\\') {
        return Ok((KeyAt::Text(start as u32 + 1, end as u32 - 1), shape));
    }
    let before = keys.len();
    keys.extend_from_slice(fields.key_prefix.as_bytes());
    key_bytes(&b[start..end], keys).map_err(|found| {
        keys.truncate(before);
        LineError::BadKey {
            line: number,
            field: fields.key.clone(),
            found,
        }
    })?;
    Ok((KeyAt::Keys(before as u32, keys.len() as u32), shape))
}

/// Checks that `bytes` is UTF-8, naming the line otherwise.
pub(crate) fn utf8(bytes: &[u8], number: u64) -> Result<&str, LineError> {
    std::str::from_utf8(bytes).map_err(|e| LineError::NotUtf8 {
        line: number,
        at: e.valid_up_to(),
    })
}

fn scan_error(number: u64, e: ScanError) -> LineError {
    match e.not_an_object {
        Some(found) => LineError::NotAnObject {
            line: number,
            found,
        },
        None => LineError::NotJson {
            line: number,
            reason: format!("{} at column {}", e.what, e.at + 1),
        },
    }
}

/// Appends the lookup key a key field's raw value stands for: a string's contents, or an
/// integer's decimal digits (as serde_json would print it); anything else is refused with
/// what it is.
fn key_bytes(raw: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    match raw.first() {
        Some(b'"') => {
            let inner = &raw[1..raw.len() - 1];
            if inner.contains(&b'\\') {
                out.extend_from_slice(&unescape(inner).ok_or("a string")?);
            } else {
                out.extend_from_slice(inner);
            }
            Ok(())
        }
        Some(b'-' | b'0'..=b'9') => {
            let digits = std::str::from_utf8(raw).map_err(|_| "a number")?;
            if digits.contains(['.', 'e', 'E']) {
                return Err("a number");
            }
            let n: i128 = digits.parse().map_err(|_| "a number")?;
            if n < i128::from(i64::MIN) || n > i128::from(u64::MAX) {
                return Err("a number");
            }
            use std::io::Write;
            write!(out, "{n}").expect("writing to a Vec");
            Ok(())
        }
        first => Err(kind_of(first.copied())),
    }
}

/// Lines in snapshots (checkpointed `enrich`): number, index, key, the line's bytes, and the
/// positions the writer uses.
impl SnapshotCodec for Line {
    const MIN_ENCODED_LEN: usize = 48;

    fn encode(&self, out: &mut Vec<u8>) {
        self.number.encode(out);
        self.index.encode(out);
        encode_bytes(self.key(), out);
        encode_bytes(self.text(), out);
        let into = self
            .into
            .map_or(u64::MAX, |(s, e)| (u64::from(s) << 32) | u64::from(e));
        into.encode(out);
        (u64::from(self.close)
            | (u64::from(self.empty) << 32)
            | (u64::from(self.blank) << 33)
            | (u64::from(self.crlf) << 34))
            .encode(out);
    }

    fn decode(input: &mut &[u8]) -> Result<Self, crate::snapshot::DecodeError> {
        let invalid = |reason: &str| crate::snapshot::DecodeError::Invalid {
            what: "record",
            reason: reason.to_string(),
        };
        let number = u64::decode(input)?;
        let index = u64::decode(input)?;
        let key = take_prefixed(input)?;
        let text = take_prefixed(input)?;
        if std::str::from_utf8(text).is_err() {
            return Err(invalid("the line is not UTF-8"));
        }
        let into = u64::decode(input)?;
        let close_empty = u64::decode(input)?;
        let close = close_empty as u32;
        let into = (into != u64::MAX).then_some(((into >> 32) as u32, into as u32));
        let blank = close_empty & (1 << 33) != 0;
        if blank && !text.iter().all(|c| matches!(c, b' ' | b'\t')) {
            return Err(invalid("a line marked blank holds text"));
        }
        let in_line = |at: u32| (at as usize) < text.len() || blank;
        if !in_line(close) || into.is_some_and(|(s, e)| s > e || !in_line(e)) {
            return Err(invalid("positions outside the line"));
        }
        let shape = Shape {
            into,
            close,
            empty: close_empty & (1 << 32) != 0,
            blank,
            crlf: close_empty & (1 << 34) != 0,
            invalid: false,
        };
        let mut chunk = ChunkBuilder::with_capacity(text.len() + key.len());
        chunk.stage_checked(text, key, shape, number, index);
        Ok(chunk.only_line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> LineFields {
        LineFields {
            key: "key".into(),
            key_prefix: String::new(),
            into: "value".into(),
        }
    }

    #[test]
    fn keys_read_as_serde_json_would_print_them() {
        let key = |v: &str| {
            parse_line(&format!(r#"{{"key":{v}}}"#), 1, 0, &fields()).map(|l| l.key().to_vec())
        };
        assert_eq!(key(r#""k:1""#).unwrap(), b"k:1");
        assert_eq!(key(r#""\u00e9\"""#).unwrap(), "é\"".as_bytes());
        assert_eq!(key("42").unwrap(), b"42");
        assert_eq!(key("-7").unwrap(), b"-7");
        assert_eq!(
            key("18446744073709551615").unwrap(),
            b"18446744073709551615"
        );
        for (v, found) in [
            ("1.5", "a number"),
            ("1e3", "a number"),
            ("18446744073709551616", "a number"),
            ("null", "null"),
            ("true", "a boolean"),
            ("[1]", "an array"),
            ("{}", "an object"),
        ] {
            let err = key(v).unwrap_err().to_string();
            assert!(err.contains(found), "{v}: {err}");
        }
    }

    #[test]
    fn a_line_survives_a_snapshot() {
        let mut l = parse_line(r#"{"key":"k:1", "value":"old" }"#, 3, 2, &fields()).unwrap();
        for crlf in [false, true] {
            l.crlf = crlf;
            let mut buf = Vec::new();
            l.encode(&mut buf);
            let back = Line::decode(&mut &buf[..]).unwrap();
            assert_eq!(back, l);
            assert_eq!(back.crlf, crlf);
        }
    }
}
