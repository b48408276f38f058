//! `redis-stream://` addresses: a Redis server (as in [`RedisUrl`]) and the streams on it.
//!
//! ```text
//! --input  redis-stream://[USER:PW@]HOST:PORT[/DB]/STREAM[,STREAM...]?group=G[&consumer=NAME][&start=0|$]
//! --output redis-stream://[USER:PW@]HOST:PORT[/DB]/STREAM[?maxlen=N]
//! ```
//! Stream names may be percent-encoded (`%2C` for a comma in a name). The password, as in
//! every store address, is never printed.

use std::fmt;
use std::str::FromStr;

use crate::lookup::{RedisUrl, Scheme};

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupStart {
    /// `start=0` (the default): every entry in the stream.
    #[default]
    Beginning,
    /// `start=$`: only entries added after the group is created.
    New,
}

/// A parsed `redis-stream://` address.
///
/// ```
/// use ringwait::connect::redis_stream::StreamUrl;
/// let url: StreamUrl = "redis-stream://127.0.0.1:6379/2/in,other?group=g&consumer=c".parse()?;
/// assert_eq!(url.streams, ["in", "other"]);
/// assert_eq!((url.server.db, url.group.as_deref()), (2, Some("g")));
/// let out: StreamUrl = "redis-stream://:pw@127.0.0.1:6379/out?maxlen=1000".parse()?;
/// assert_eq!((out.streams.len(), out.maxlen), (1, Some(1000)));
/// assert_eq!(out.to_string(), "redis-stream://:***@127.0.0.1:6379/0/out?maxlen=1000");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamUrl {
    /// The server, its database and credentials.
    pub server: RedisUrl,
    /// The streams (one for an output).
    pub streams: Vec<String>,
    /// `group=`: the consumer group (inputs).
    pub group: Option<String>,
    /// `consumer=`: this process's consumer name in the group (inputs).
    pub consumer: Option<String>,
    /// `start=`: where a group created by the job starts (inputs).
    pub start: GroupStart,
    /// `maxlen=`: the output stream is trimmed to about this many entries (`XADD MAXLEN ~`).
    pub maxlen: Option<u64>,
}

/// Why a `redis-stream://` address was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamUrlError {
    /// Not of the form.
    #[error("{0:?} is not a redis-stream://[USER:PW@]HOST:PORT[/DB]/STREAM[,STREAM...][?PARAMS] address")]
    Syntax(String),
    /// The server part was refused.
    #[error(transparent)]
    Server(#[from] crate::lookup::UrlError),
    /// A parameter is unknown, repeated, or has a bad value.
    #[error("{0}")]
    Param(String),
}

impl StreamUrl {
    /// The address as an input: it must name a group (and no `maxlen`).
    pub fn check_input(&self) -> Result<(), String> {
        if self.group.is_none() {
            return Err(format!(
                "{self}: a stream input needs a consumer group: add ?group=NAME"
            ));
        }
        if self.maxlen.is_some() {
            return Err(format!("{self}: maxlen is for an output stream"));
        }
        if self.streams.len() > 255 {
            return Err(format!("{self}: at most 255 input streams"));
        }
        Ok(())
    }

    /// The address as an output: one stream, no group.
    pub fn check_output(&self) -> Result<(), String> {
        if self.streams.len() != 1 {
            return Err(format!("{self}: an output is one stream"));
        }
        if self.group.is_some() || self.consumer.is_some() {
            return Err(format!(
                "{self}: group and consumer are for an input stream"
            ));
        }
        Ok(())
    }
}

impl fmt::Display for StreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server = self.server.to_string();
        let rest = server.strip_prefix("redis://").unwrap_or(&server);
        write!(f, "redis-stream://{rest}/{}", self.streams.join(","))?;
        let mut params = Vec::new();
        if let Some(g) = &self.group {
            params.push(format!("group={g}"));
        }
        if let Some(c) = &self.consumer {
            params.push(format!("consumer={c}"));
        }
        if self.start == GroupStart::New {
            params.push("start=$".into());
        }
        if let Some(n) = self.maxlen {
            params.push(format!("maxlen={n}"));
        }
        if !params.is_empty() {
            write!(f, "?{}", params.join("&"))?;
        }
        Ok(())
    }
}

impl FromStr for StreamUrl {
    type Err = StreamUrlError;

    fn from_str(s: &str) -> Result<Self, StreamUrlError> {
        let syntax = || StreamUrlError::Syntax(hide_password(s));
        let rest = s.strip_prefix("redis-stream://").ok_or_else(syntax)?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').ok_or_else(syntax)?;
        let (db, streams) = match path.split_once('/') {
            Some((db, streams)) => (Some(db), streams),
            None => (None, path),
        };
        let server_url = match db {
            Some(db) => format!("redis://{authority}/{db}"),
            None => format!("redis://{authority}"),
        };
        let server: RedisUrl = server_url.parse()?;
        debug_assert_eq!(server.scheme, Scheme::Redis);
        let streams = streams
            .split(',')
            .map(|name| crate::lookup::percent_decode(name).filter(|n| !n.is_empty()))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(syntax)?;
        let mut url = StreamUrl {
            server,
            streams,
            group: None,
            consumer: None,
            start: GroupStart::default(),
            maxlen: None,
        };
        for param in query.split('&').filter(|p| !p.is_empty()) {
            url.set(param)?;
        }
        Ok(url)
    }
}

impl StreamUrl {
    fn set(&mut self, param: &str) -> Result<(), StreamUrlError> {
        let bad = |why: &str| StreamUrlError::Param(format!("{param:?}: {why}"));
        let (name, value) = crate::lookup::query_param(param).map_err(bad)?;
        let repeated = match name {
            "group" => self.group.replace(value).is_some(),
            "consumer" => self.consumer.replace(value).is_some(),
            "start" => {
                self.start = match value.as_str() {
                    "0" => GroupStart::Beginning,
                    "$" => GroupStart::New,
                    _ => return Err(bad("start is 0 (every entry) or $ (new entries)")),
                };
                false
            }
            "maxlen" => {
                let n = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("maxlen is a number of entries above 0"))?;
                self.maxlen.replace(n).is_some()
            }
            _ => return Err(bad("known parameters: group, consumer, start, maxlen")),
        };
        if repeated {
            return Err(bad("given twice"));
        }
        Ok(())
    }
}

/// `s` with its password hidden, for error messages.
fn hide_password(s: &str) -> String {
    match (s.find("://"), s.find('@')) {
        (Some(start), Some(at)) if at > start => format!("{}***{}", &s[..start + 3], &s[at..]),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse_and_mistakes_are_named() {
        let u: StreamUrl = "redis-stream://127.0.0.1:6379/in?group=g&start=$"
            .parse()
            .unwrap();
        assert_eq!(
            (u.server.db, u.streams.clone(), u.start),
            (0, vec!["in".to_string()], GroupStart::New)
        );
        assert!(u.check_input().is_ok());
        assert!(u.check_output().unwrap_err().contains("group"));
        let u: StreamUrl = "redis-stream://127.0.0.1/3/a%2Cb,c".parse().unwrap();
        assert_eq!(
            (u.server.db, u.streams),
            (3, vec!["a,b".into(), "c".into()])
        );
        for (bad, says) in [
            ("redis://127.0.0.1/in", "not a redis-stream"),
            ("redis-stream://127.0.0.1", "not a redis-stream"),
            ("redis-stream://127.0.0.1/in?group=", "empty"),
            ("redis-stream://127.0.0.1/in?group=a&group=b", "twice"),
            ("redis-stream://127.0.0.1/in?start=1", "start is 0"),
            ("redis-stream://127.0.0.1/in?maxlen=0", "above 0"),
            ("redis-stream://127.0.0.1/in?nope=1", "known parameters"),
            ("redis-stream://127.0.0.1/x/in", "database"),
            ("redis-stream://127.0.0.1/in,", "not a redis-stream"),
        ] {
            let e = bad.parse::<StreamUrl>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let u: StreamUrl = "redis-stream://127.0.0.1/in".parse().unwrap();
        assert!(u.check_input().unwrap_err().contains("?group=NAME"));
    }

    #[test]
    fn the_password_is_never_shown() {
        let u: StreamUrl = "redis-stream://app:s3cret@127.0.0.1/in?group=g"
            .parse()
            .unwrap();
        assert!(!u.to_string().contains("s3cret"));
        assert!(!format!("{u:?}").contains("s3cret"));
        let e = "redis-stream://app:s3cret@127.0.0.1"
            .parse::<StreamUrl>()
            .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
