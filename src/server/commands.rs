//! The command set of the built-in server, executed against the generated data.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::dataset::{key_index, value_of, VALUE_LEN};
use crate::resp::{self, ArrayView, Frame};

/// Generated data plus the overrides written by `SET`.
#[derive(Debug)]
pub(crate) struct Store {
    data: GeneratedData,
    overrides: RefCell<HashMap<Vec<u8>, Vec<u8>>>,
}

/// What the connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    Continue,
    Close,
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// The generated data set the built-in server holds (without `SET`'s overrides): `k:i` for
/// `i < keys` holds [`value_of(i)`](crate::dataset::value_of), and `h:i` is a hash when
/// `hashes` is set. Also what `enrich` answers lookups from in-process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratedData {
    /// Keys `k:0 .. k:{keys-1}` (and `h:*` likewise).
    pub keys: u64,
    /// Whether the hashes `h:*` exist.
    pub hashes: bool,
}

/// A `GET` on a key that holds a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", WRONGTYPE)]
pub struct WrongType;

impl GeneratedData {
    /// What `GET key` finds: the value, nothing, or [`WrongType`] for a hash.
    ///
    /// ```
    /// use ringwait::server::{GeneratedData, WrongType};
    /// let data = GeneratedData { keys: 10, hashes: true };
    /// assert_eq!(data.get(b"k:3").unwrap().unwrap(), ringwait::dataset::value_of(3));
    /// assert_eq!(data.get(b"k:10"), Ok(None));
    /// assert_eq!(data.get(b"h:3"), Err(WrongType));
    /// ```
    #[inline]
    pub fn get(&self, key: &[u8]) -> Result<Option<[u8; VALUE_LEN]>, WrongType> {
        if let Some(i) = self.value_index(key) {
            Ok(Some(value_of(i)))
        } else if self.hash_index(key).is_some() {
            Err(WrongType)
        } else {
            Ok(None)
        }
    }

    /// What `HGET`/`HGETALL key` finds: the number `i` of the hash `h:i` (its fields are `id`,
    /// holding `i`, and `v`, holding [`value_of(i)`](crate::dataset::value_of)), nothing,
    /// or [`WrongType`] for a string key.
    ///
    /// ```
    /// use ringwait::server::{GeneratedData, WrongType};
    /// let data = GeneratedData { keys: 10, hashes: true };
    /// assert_eq!(data.hash(b"h:3"), Ok(Some(3)));
    /// assert_eq!(data.hash(b"h:10"), Ok(None));
    /// assert_eq!(data.hash(b"k:3"), Err(WrongType));
    /// ```
    pub fn hash(&self, key: &[u8]) -> Result<Option<u64>, WrongType> {
        match (self.hash_index(key), self.value_index(key)) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(_)) => Err(WrongType),
            (None, None) => Ok(None),
        }
    }

    /// `i` of a key `k:i` the data holds.
    fn value_index(&self, key: &[u8]) -> Option<u64> {
        key_index(key, b"k:", self.keys)
    }

    /// `i` of a hash `h:i` the data holds.
    fn hash_index(&self, key: &[u8]) -> Option<u64> {
        self.hashes
            .then(|| key_index(key, b"h:", self.keys))
            .flatten()
    }
}

impl Store {
    pub fn new(keys: u64, hashes: bool) -> Self {
        Store {
            data: GeneratedData { keys, hashes },
            overrides: RefCell::new(HashMap::new()),
        }
    }

    fn hash_index(&self, key: &[u8]) -> Option<u64> {
        self.data.hash_index(key)
    }

    /// Appends the reply to `GET key` (or one `MGET` element when `in_mget`).
    fn get(&self, key: &[u8], in_mget: bool, out: &mut Vec<u8>) {
        if let Some(v) = self.overrides.borrow().get(key) {
            return resp::write_bulk(out, v);
        }
        match self.data.get(key) {
            Ok(Some(value)) => resp::write_bulk(out, &value),
            Err(WrongType) if !in_mget => resp::write_error(out, WRONGTYPE.as_bytes()),
            Ok(None) | Err(WrongType) => resp::write_nil(out),
        }
    }

    fn exists(&self, key: &[u8]) -> bool {
        self.overrides.borrow().contains_key(key)
            || self.data.value_index(key).is_some()
            || self.hash_index(key).is_some()
    }

    fn hget(&self, key: &[u8], field: &[u8], out: &mut Vec<u8>) {
        let Some(i) = self
            .hash_index(key)
            .filter(|_| !self.overrides.borrow().contains_key(key))
        else {
            return if self.exists(key) {
                resp::write_error(out, WRONGTYPE.as_bytes())
            } else {
                resp::write_nil(out)
            };
        };
        match field {
            b"id" => resp::write_bulk_integer(out, i as i64),
            b"v" => resp::write_bulk(out, &value_of(i)),
            _ => resp::write_nil(out),
        }
    }

    fn hgetall(&self, key: &[u8], out: &mut Vec<u8>) {
        let Some(i) = self
            .hash_index(key)
            .filter(|_| !self.overrides.borrow().contains_key(key))
        else {
            return if self.exists(key) {
                resp::write_error(out, WRONGTYPE.as_bytes())
            } else {
                resp::write_array_header(out, 0)
            };
        };
        resp::write_array_header(out, 4);
        resp::write_bulk(out, b"id");
        resp::write_bulk_integer(out, i as i64);
        resp::write_bulk(out, b"v");
        resp::write_bulk(out, &value_of(i));
    }

    fn dbsize(&self) -> i64 {
        let GeneratedData { keys, hashes } = self.data;
        let generated = if hashes { 2 * keys } else { keys };
        let extra = self
            .overrides
            .borrow()
            .keys()
            .filter(|k| self.data.value_index(k).is_none() && self.hash_index(k).is_none())
            .count() as u64;
        generated.saturating_add(extra).min(i64::MAX as u64) as i64
    }

    /// Executes one command (an array of bulk strings) and appends its reply to `out`.
    pub fn execute(&self, command: ArrayView<'_>, out: &mut Vec<u8>) -> After {
        let mut args = command.iter();
        let Some(name) = args.next().and_then(|f| f.as_bytes()) else {
            resp::write_error(out, b"ERR Protocol error: expected a command name");
            return After::Close;
        };
        let argc = command.len() - 1;
        // Arguments that are not strings are a protocol error, as in Redis.
        if command.iter().skip(1).any(|f| f.as_bytes().is_none()) {
            resp::write_error(out, b"ERR Protocol error: expected bulk string arguments");
            return After::Close;
        }
        let mut arg = || {
            args.next()
                .and_then(|f: Frame<'_>| f.as_bytes())
                .unwrap_or(b"")
        };
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        match () {
            _ if is("GET") && argc == 1 => self.get(arg(), false, out),
            _ if is("MGET") && argc >= 1 => {
                resp::write_array_header(out, argc);
                for _ in 0..argc {
                    self.get(arg(), true, out);
                }
            }
            _ if is("HGET") && argc == 2 => {
                let key = arg();
                self.hget(key, arg(), out)
            }
            _ if is("HGETALL") && argc == 1 => self.hgetall(arg(), out),
            _ if is("EXISTS") && argc >= 1 => {
                let n = (0..argc).filter(|_| self.exists(arg())).count();
                resp::write_integer(out, n as i64);
            }
            _ if is("SET") && argc >= 2 => {
                let key = arg().to_vec();
                let value = arg().to_vec();
                self.overrides.borrow_mut().insert(key, value);
                resp::write_simple(out, b"OK");
            }
            _ if is("PING") && argc == 0 => resp::write_simple(out, b"PONG"),
            _ if is("PING") && argc == 1 => resp::write_bulk(out, arg()),
            _ if is("DBSIZE") && argc == 0 => resp::write_integer(out, self.dbsize()),
            _ if is("SELECT") && argc == 1 => match arg() {
                b"0" => resp::write_simple(out, b"OK"),
                _ => resp::write_error(out, b"ERR DB index is out of range"),
            },
            _ if is("CLUSTER") => {
                resp::write_error(out, b"ERR This instance has cluster support disabled")
            }
            // redis-benchmark and redis-cli ask for these; answer harmlessly.
            _ if is("CONFIG") => resp::write_array_header(out, 0),
            _ if is("CLIENT") || is("ASKING") => resp::write_simple(out, b"OK"),
            _ if is("QUIT") => {
                resp::write_simple(out, b"OK");
                return After::Close;
            }
            _ => {
                let known = [
                    "GET", "MGET", "HGET", "HGETALL", "EXISTS", "SET", "PING", "DBSIZE",
                ];
                if known.iter().any(|k| is(k)) {
                    resp::write_error(out, b"ERR wrong number of arguments");
                } else {
                    out.extend_from_slice(b"-ERR unknown command '");
                    let shown = &name[..name.len().min(64)];
                    out.extend(
                        shown
                            .iter()
                            .map(|&b| if b.is_ascii_graphic() { b } else { b'?' }),
                    );
                    out.extend_from_slice(b"'\r\n");
                }
            }
        }
        After::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{OwnedFrame, Parser};

    fn run(store: &Store, args: &[&[u8]]) -> OwnedFrame {
        let mut cmd = Vec::new();
        resp::encode_command(&mut cmd, args);
        let Ok(Some((Frame::Array(view), _))) = Parser::default().parse(&cmd) else {
            panic!("bad command encoding");
        };
        let mut out = Vec::new();
        store.execute(view, &mut out);
        let (reply, used) = Parser::default().parse(&out).unwrap().unwrap();
        assert_eq!(used, out.len());
        OwnedFrame::from(reply)
    }

    fn bulk(b: &[u8]) -> OwnedFrame {
        OwnedFrame::Bulk(b.to_vec())
    }

    #[test]
    fn commands_answer_like_redis() {
        let s = Store::new(10, true);
        assert_eq!(run(&s, &[b"get", b"k:3"]), bulk(&value_of(3)));
        assert_eq!(run(&s, &[b"GET", b"k:10"]), OwnedFrame::Nil);
        assert_eq!(
            run(&s, &[b"MGET", b"k:1", b"nope", b"h:1"]),
            OwnedFrame::Array(vec![bulk(&value_of(1)), OwnedFrame::Nil, OwnedFrame::Nil])
        );
        assert_eq!(run(&s, &[b"HGET", b"h:4", b"id"]), bulk(b"4"));
        assert_eq!(run(&s, &[b"HGET", b"h:4", b"v"]), bulk(&value_of(4)));
        assert_eq!(run(&s, &[b"HGET", b"h:4", b"x"]), OwnedFrame::Nil);
        assert_eq!(run(&s, &[b"HGET", b"h:99", b"id"]), OwnedFrame::Nil);
        assert_eq!(
            run(&s, &[b"HGETALL", b"h:2"]),
            OwnedFrame::Array(vec![
                bulk(b"id"),
                bulk(b"2"),
                bulk(b"v"),
                bulk(&value_of(2))
            ])
        );
        assert_eq!(run(&s, &[b"HGETALL", b"h:20"]), OwnedFrame::Array(vec![]));
        assert!(matches!(run(&s, &[b"GET", b"h:1"]), OwnedFrame::Error(_)));
        assert!(matches!(
            run(&s, &[b"HGET", b"k:1", b"id"]),
            OwnedFrame::Error(_)
        ));
        assert_eq!(
            run(&s, &[b"EXISTS", b"k:1", b"h:1", b"z"]),
            OwnedFrame::Integer(2)
        );
        assert_eq!(run(&s, &[b"DBSIZE"]), OwnedFrame::Integer(20));
        assert_eq!(run(&s, &[b"PING"]), OwnedFrame::Simple(b"PONG".to_vec()));
        assert!(matches!(
            run(&s, &[b"CLUSTER", b"SLOTS"]),
            OwnedFrame::Error(_)
        ));
        assert!(matches!(run(&s, &[b"FLUSHALL"]), OwnedFrame::Error(_)));
        assert!(matches!(run(&s, &[b"GET"]), OwnedFrame::Error(_)));
    }

    #[test]
    fn set_overrides_generated_values() {
        let s = Store::new(10, true);
        assert_eq!(
            run(&s, &[b"SET", b"k:1", b"new"]),
            OwnedFrame::Simple(b"OK".to_vec())
        );
        assert_eq!(
            run(&s, &[b"SET", b"other", b"x"]),
            OwnedFrame::Simple(b"OK".to_vec())
        );
        assert_eq!(run(&s, &[b"GET", b"k:1"]), bulk(b"new"));
        assert_eq!(run(&s, &[b"GET", b"other"]), bulk(b"x"));
        assert_eq!(run(&s, &[b"DBSIZE"]), OwnedFrame::Integer(21));
    }
}
