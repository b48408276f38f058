//! `redis://HOST[:PORT][/DB]` addresses, as given to `ringwait enrich --lookup`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// A parsed `redis://` address.
///
/// ```
/// use ringwait::lookup::RedisUrl;
/// let url: RedisUrl = "redis://127.0.0.1:6380/2".parse()?;
/// assert_eq!(url.addr, "127.0.0.1:6380".parse()?);
/// assert_eq!(url.db, 2);
/// let url: RedisUrl = "redis://[::1]".parse()?;
/// assert_eq!(url.addr.port(), 6379);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisUrl {
    /// The server address (a host name is resolved when parsing; the first address wins).
    pub addr: SocketAddr,
    /// The database to `SELECT` (0 by default); see [`ConnectionConfig::db`](super::ConnectionConfig::db).
    pub db: u32,
}

/// Why a `redis://` address was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not of the form `redis://HOST[:PORT][/DB]`.
    #[error("{0:?} is not a redis://HOST[:PORT][/DB] address")]
    Syntax(String),
    /// The port is not a number from 1 to 65535.
    #[error("bad port in {0:?}")]
    Port(String),
    /// The database is not a non-negative number.
    #[error("bad database number in {0:?}: write redis://HOST:PORT/0 .. /15")]
    Db(String),
    /// The host name did not resolve.
    #[error("cannot resolve host {host:?}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's message.
        reason: String,
    },
}

impl FromStr for RedisUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        let rest = s
            .strip_prefix("redis://")
            .ok_or_else(|| UrlError::Syntax(s.into()))?;
        let (hostport, db) = match rest.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, db)) => (hp, db.parse().map_err(|_| UrlError::Db(s.into()))?),
            None => (rest, 0),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && (h.starts_with('[') || !h.contains(':')) => {
                let port: u16 = p.parse().map_err(|_| UrlError::Port(s.into()))?;
                (h, port)
            }
            _ => (hostport, 6379),
        };
        if port == 0 {
            return Err(UrlError::Port(s.into()));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('@') {
            return Err(UrlError::Syntax(s.into()));
        }
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| UrlError::Resolve {
                host: host.into(),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| UrlError::Resolve {
                host: host.into(),
                reason: "no address".into(),
            })?;
        Ok(RedisUrl { addr, db })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse_and_mistakes_are_named() {
        let u: RedisUrl = "redis://127.0.0.1:7000".parse().unwrap();
        assert_eq!((u.addr, u.db), ("127.0.0.1:7000".parse().unwrap(), 0));
        let u: RedisUrl = "redis://[::1]:7000/3".parse().unwrap();
        assert_eq!((u.addr, u.db), ("[::1]:7000".parse().unwrap(), 3));
        let u: RedisUrl = "redis://localhost/".parse().unwrap();
        assert_eq!(u.addr.port(), 6379);
        assert!(matches!(
            "http://x".parse::<RedisUrl>(),
            Err(UrlError::Syntax(_))
        ));
        assert!(matches!(
            "redis://x:0".parse::<RedisUrl>(),
            Err(UrlError::Port(_))
        ));
        assert!(matches!(
            "redis://x:http".parse::<RedisUrl>(),
            Err(UrlError::Port(_))
        ));
        assert!(matches!(
            "redis://127.0.0.1/x".parse::<RedisUrl>(),
            Err(UrlError::Db(_))
        ));
        assert!(matches!(
            "redis://".parse::<RedisUrl>(),
            Err(UrlError::Syntax(_))
        ));
    }
}
