//! The record `enrich` moves through the operator.

use serde_json::{Map, Value};

/// One input line, parsed: its number, the JSON object, and the lookup key (with the prefix).
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 1-based line number in the input.
    pub number: u64,
    /// 0-based index among the records (the order `ordered` mode restores).
    pub index: u64,
    /// The object.
    pub object: Map<String, Value>,
    /// The key to look up: `--key-prefix` followed by the key field.
    pub key: Vec<u8>,
}

/// Why an input line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not JSON.
    #[error("line {line}: not valid JSON: {reason}")]
    NotJson {
        /// Line number.
        line: u64,
        /// The parser's message.
        reason: String,
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

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses one input line.
///
/// ```
/// use ringwait::enrich::parse_line;
/// let l = parse_line(r#"{"id":1,"key":"k:7"}"#, 1, 0, "key", "").unwrap();
/// assert_eq!(l.key, b"k:7");
/// let n = parse_line(r#"{"key":7}"#, 2, 1, "key", "k:").unwrap();
/// assert_eq!(n.key, b"k:7");
/// assert!(parse_line("nope", 3, 2, "key", "").unwrap_err().to_string().starts_with("line 3:"));
/// ```
pub fn parse_line(
    text: &str,
    number: u64,
    index: u64,
    key_field: &str,
    key_prefix: &str,
) -> Result<Line, LineError> {
    let value: Value = serde_json::from_str(text).map_err(|e| LineError::NotJson {
        line: number,
        reason: e.to_string(),
    })?;
    let Value::Object(object) = value else {
        return Err(LineError::NotAnObject {
            line: number,
            found: kind(&value),
        });
    };
    let mut key = key_prefix.as_bytes().to_vec();
    match object.get(key_field) {
        Some(Value::String(s)) => key.extend_from_slice(s.as_bytes()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
            key.extend_from_slice(n.to_string().as_bytes())
        }
        Some(other) => {
            return Err(LineError::BadKey {
                line: number,
                field: key_field.to_string(),
                found: kind(other),
            })
        }
        None => {
            return Err(LineError::MissingKey {
                line: number,
                field: key_field.to_string(),
            })
        }
    }
    Ok(Line {
        number,
        index,
        object,
        key,
    })
}

/// Lines in snapshots (checkpointed `enrich`): number, index, key, and the object as JSON.
impl crate::snapshot::SnapshotCodec for std::sync::Arc<Line> {
    const MIN_ENCODED_LEN: usize = 32;

    fn encode(&self, out: &mut Vec<u8>) {
        self.number.encode(out);
        self.index.encode(out);
        self.key.encode(out);
        let at = out.len();
        0u64.encode(out);
        serde_json::to_writer(&mut *out, &self.object).expect("a JSON object serialises");
        let len = (out.len() - at - 8) as u64;
        out[at..at + 8].copy_from_slice(&len.to_le_bytes());
    }

    fn decode(input: &mut &[u8]) -> Result<Self, crate::snapshot::DecodeError> {
        let number = u64::decode(input)?;
        let index = u64::decode(input)?;
        let key = Vec::<u8>::decode(input)?;
        let json = Vec::<u8>::decode(input)?;
        let object = serde_json::from_slice::<Map<String, Value>>(&json).map_err(|e| {
            crate::snapshot::DecodeError::Invalid {
                what: "record",
                reason: e.to_string(),
            }
        })?;
        Ok(std::sync::Arc::new(Line {
            number,
            index,
            object,
            key,
        }))
    }
}
