//! The record `enrich` moves through the operator: the input line itself, byte for byte, with
//! what the writer needs to add one field to it (where its object closes, and where the field
//! already is, if it is), and the lookup key.

use super::scan::{scan_object, unescape, ScanError};

/// One input line, checked: its bytes as read, the lookup key, and where the field `--into`
/// goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number in the input.
    pub number: u64,
    /// 0-based index among the records (the order `ordered` mode restores).
    pub index: u64,
    /// The line without its line break: one JSON object, as it was read.
    pub text: Box<str>,
    /// The key to look up: `--key-prefix` followed by the key field.
    pub key: Vec<u8>,
    /// Byte range of the value of the field `--into`, when the object has it (the value is
    /// replaced there); `None`: the field is added before the closing brace.
    pub into: Option<(u32, u32)>,
    /// Index of the object's closing brace.
    pub close: u32,
    /// The object has no field (no comma before an added field).
    pub empty: bool,
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
/// assert_eq!(l.key, b"k:7");
/// assert_eq!(&*l.text, r#"{"id":1, "key":"k:7"}"#);
/// let p = LineFields { key_prefix: "k:".into(), ..f.clone() };
/// assert_eq!(parse_line(r#"{"key":7}"#, 2, 1, &p).unwrap().key, b"k:7");
/// assert!(parse_line("nope", 3, 2, &f).unwrap_err().to_string().starts_with("line 3:"));
/// ```
pub fn parse_line(
    text: &str,
    number: u64,
    index: u64,
    fields: &LineFields,
) -> Result<Line, LineError> {
    let b = text.as_bytes();
    let scanned = scan_object(b, fields.key.as_bytes(), fields.into.as_bytes())
        .map_err(|e| scan_error(number, e))?;
    let Some((start, end)) = scanned.key else {
        return Err(LineError::MissingKey {
            line: number,
            field: fields.key.clone(),
        });
    };
    let mut key = fields.key_prefix.as_bytes().to_vec();
    key_bytes(&b[start..end], &mut key).map_err(|found| LineError::BadKey {
        line: number,
        field: fields.key.clone(),
        found,
    })?;
    Ok(Line {
        number,
        index,
        text: text.into(),
        key,
        into: scanned.into.map(|(s, e)| (s as u32, e as u32)),
        close: scanned.close as u32,
        empty: scanned.empty,
    })
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
            out.extend_from_slice(n.to_string().as_bytes());
            Ok(())
        }
        Some(b'n') => Err("null"),
        Some(b't' | b'f') => Err("a boolean"),
        Some(b'[') => Err("an array"),
        _ => Err("an object"),
    }
}

/// Lines in snapshots (checkpointed `enrich`): number, index, key, the line's bytes, and the
/// positions the writer uses.
impl crate::snapshot::SnapshotCodec for std::sync::Arc<Line> {
    const MIN_ENCODED_LEN: usize = 48;

    fn encode(&self, out: &mut Vec<u8>) {
        self.number.encode(out);
        self.index.encode(out);
        self.key.encode(out);
        self.text.as_bytes().to_vec().encode(out);
        let into = self
            .into
            .map_or(u64::MAX, |(s, e)| (u64::from(s) << 32) | u64::from(e));
        into.encode(out);
        (u64::from(self.close) | (u64::from(self.empty) << 32)).encode(out);
    }

    fn decode(input: &mut &[u8]) -> Result<Self, crate::snapshot::DecodeError> {
        let invalid = |reason: &str| crate::snapshot::DecodeError::Invalid {
            what: "record",
            reason: reason.to_string(),
        };
        let number = u64::decode(input)?;
        let index = u64::decode(input)?;
        let key = Vec::<u8>::decode(input)?;
        let text = String::from_utf8(Vec::<u8>::decode(input)?)
            .map_err(|_| invalid("the line is not UTF-8"))?;
        let into = u64::decode(input)?;
        let close_empty = u64::decode(input)?;
        let close = close_empty as u32;
        let into = (into != u64::MAX).then_some(((into >> 32) as u32, into as u32));
        let in_line = |at: u32| (at as usize) < text.len();
        if !in_line(close) || into.is_some_and(|(s, e)| s > e || !in_line(e)) {
            return Err(invalid("positions outside the line"));
        }
        Ok(std::sync::Arc::new(Line {
            number,
            index,
            text: text.into_boxed_str(),
            key,
            into,
            close,
            empty: close_empty >> 32 != 0,
        }))
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
        let key =
            |v: &str| parse_line(&format!(r#"{{"key":{v}}}"#), 1, 0, &fields()).map(|l| l.key);
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
        use crate::snapshot::SnapshotCodec;
        let l = std::sync::Arc::new(
            parse_line(r#"{"key":"k:1", "value":"old" }"#, 3, 2, &fields()).unwrap(),
        );
        let mut buf = Vec::new();
        l.encode(&mut buf);
        let back = std::sync::Arc::<Line>::decode(&mut &buf[..]).unwrap();
        assert_eq!(back, l);
    }
}
