//! What a lookup asks the store (`--command`) and how its answer becomes the field's value
//! (`--value-format`): a JSON string of the stored bytes, or the stored bytes as JSON
//! (checked), or, for `HGETALL`, an object of the hash's fields.

use super::scan;
use super::Value;

/// The command each record's key is looked up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `GET key` (batched into `MGET`s with `--batch`).
    Get,
    /// `HGET key FIELD`.
    Hget(String),
    /// `HGETALL key`: the field's value is an object of the hash's fields (`null` when the
    /// key does not exist).
    Hgetall,
}

impl std::str::FromStr for Command {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "get" => Ok(Command::Get),
            "hgetall" => Ok(Command::Hgetall),
            _ => match s.strip_prefix("hget:") {
                Some(field) if !field.is_empty() => Ok(Command::Hget(field.to_string())),
                _ => Err(format!(
                    "{s:?}: expected get, hget:FIELD (a field name after the colon) or hgetall"
                )),
            },
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Get => write!(f, "get"),
            Command::Hget(field) => write!(f, "hget:{field}"),
            Command::Hgetall => write!(f, "hgetall"),
        }
    }
}

/// How stored bytes become the field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueFormat {
    /// A JSON string holding the stored bytes (escaped as needed; invalid UTF-8 is
    /// replaced).
    #[default]
    String,
    /// The stored bytes are JSON and are inserted as they are, after a check: a value that
    /// is not valid JSON fails its record (through `--on-error`).
    Json,
}

impl std::str::FromStr for ValueFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "string" => Ok(ValueFormat::String),
            "json" => Ok(ValueFormat::Json),
            _ => Err(format!("{s:?}: expected string or json")),
        }
    }
}

/// The command and the format, together: what a lookup sends and how its answer is shaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSpec {
    /// What is asked.
    pub command: Command,
    /// How the answer's bytes are written.
    pub format: ValueFormat,
}

impl Default for ValueSpec {
    fn default() -> Self {
        ValueSpec {
            command: Command::Get,
            format: ValueFormat::String,
        }
    }
}

/// A stored value that `--value-format json` cannot insert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the value of {key} is not valid JSON ({what} at byte {at}); --value-format json inserts only JSON")]
pub struct NotJson {
    /// The key looked up (lossy UTF-8).
    pub key: String,
    /// What is wrong.
    pub what: &'static str,
    /// Where, in the value.
    pub at: usize,
}

impl ValueSpec {
    /// Whether the values made by [`single`](Self::single) and [`fields`](Self::fields)
    /// are JSON text to insert as is (otherwise they are bytes the writer quotes).
    pub fn is_json(&self) -> bool {
        self.format == ValueFormat::Json || self.command == Command::Hgetall
    }

    /// The value of a `GET` or `HGET` answer.
    pub fn single(&self, key: &[u8], stored: &[u8]) -> Result<Value, NotJson> {
        let mut value = Value::from_slice(stored);
        if self.format == ValueFormat::Json {
            check_json(key, stored)?;
            one_line(&mut value);
        }
        Ok(value)
    }

    /// The value of an `HGETALL` answer: `{"field":value,...}` in the store's order, each
    /// value a string or (with `--value-format json`) checked JSON.
    pub fn fields<'a>(
        &self,
        key: &[u8],
        pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<Value, NotJson> {
        let mut out = Vec::with_capacity(128);
        out.push(b'{');
        for (n, (field, value)) in pairs.into_iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            json_string(field, &mut out);
            out.push(b':');
            match self.format {
                ValueFormat::String => json_string(value, &mut out),
                ValueFormat::Json => {
                    check_json(key, value)?;
                    let at = out.len();
                    out.extend_from_slice(value);
                    one_line(&mut out[at..]);
                }
            }
        }
        out.push(b'}');
        Ok(Value::from_vec(out))
    }
}

/// Line breaks in checked JSON are whitespace between tokens (a string cannot hold a raw
/// one), so they become spaces: an inserted value must not split its record across lines.
fn one_line(json: &mut [u8]) {
    for b in json.iter_mut().filter(|b| matches!(b, b'\n' | b'\r')) {
        *b = b' ';
    }
}

fn check_json(key: &[u8], stored: &[u8]) -> Result<(), NotJson> {
    scan::validate(stored).map_err(|e| NotJson {
        key: String::from_utf8_lossy(key).into_owned(),
        what: e.what,
        at: e.at,
    })
}

/// Appends `bytes` as a JSON string: as they are between quotes when nothing needs escaping
/// (the usual value), escaped by serde_json otherwise, and lossily when not UTF-8.
pub(crate) fn json_string(bytes: &[u8], out: &mut Vec<u8>) {
    let plain = bytes
        .iter()
        .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\');
    if plain {
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let written = match std::str::from_utf8(bytes) {
        Ok(s) => serde_json::to_writer(&mut *out, s),
        Err(_) => serde_json::to_writer(&mut *out, &String::from_utf8_lossy(bytes)),
    };
    written.expect("serialising a string into a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_mistakes_are_named() {
        assert_eq!("get".parse::<Command>(), Ok(Command::Get));
        assert_eq!("hget:px".parse::<Command>(), Ok(Command::Hget("px".into())));
        assert_eq!("hgetall".parse::<Command>(), Ok(Command::Hgetall));
        assert!("hget:"
            .parse::<Command>()
            .unwrap_err()
            .contains("hget:FIELD"));
        assert!("set".parse::<Command>().is_err());
        assert_eq!("json".parse::<ValueFormat>(), Ok(ValueFormat::Json));
        assert!("yaml".parse::<ValueFormat>().is_err());
    }

    #[test]
    fn json_values_are_checked_and_hashes_become_objects() {
        let json = ValueSpec {
            command: Command::Get,
            format: ValueFormat::Json,
        };
        assert_eq!(
            &json.single(b"k", br#" {"a":[1,2.5]} "#).unwrap()[..],
            br#" {"a":[1,2.5]} "#
        );
        assert_eq!(&json.single(b"k", b"42").unwrap()[..], b"42");
        assert_eq!(
            &json.single(b"k", b"{\r\n \"a\": \"x\\ny\"\n}").unwrap()[..],
            b"{   \"a\": \"x\\ny\" }",
            "line breaks between tokens become spaces; escapes stay"
        );
        let e = json.single(b"k:1", b"{bad").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the value of k:1 is not valid JSON"),
            "{e}"
        );
        assert!(json.single(b"k", b"").is_err());
        assert!(json.single(b"k", b"1 2").is_err());

        let all = ValueSpec {
            command: Command::Hgetall,
            format: ValueFormat::String,
        };
        let v = all
            .fields(b"h", [(&b"id"[..], &b"7"[..]), (b"na\"me", b"x\ny")])
            .unwrap();
        assert_eq!(&v[..], br#"{"id":"7","na\"me":"x\ny"}"#);
        let all_json = ValueSpec {
            format: ValueFormat::Json,
            ..all.clone()
        };
        let v = all_json.fields(b"h", [(&b"id"[..], &b"7"[..])]).unwrap();
        assert_eq!(&v[..], br#"{"id":7}"#);
        assert!(all_json.fields(b"h", [(&b"id"[..], &b"x"[..])]).is_err());
        assert!(all.is_json() && all_json.is_json() && json.is_json());
        assert!(!ValueSpec::default().is_json());
    }
}
