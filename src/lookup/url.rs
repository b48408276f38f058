//! Store addresses, one syntax everywhere (`enrich --lookup`, `bench --redis`):
//!
//! - `redis://[USER:PASSWORD@]HOST[:PORT][/DB]`: one server; with a password the connection
//!   sends `AUTH` (`AUTH USER PASSWORD` for an ACL user, `AUTH PASSWORD` without a user)
//!   before anything else;
//! - `rediss://…`: the same over TLS;
//! - `redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]`: a Redis Cluster, reached
//!   through these seed nodes (`MOVED`/`ASK` followed; database 0 only).
//!
//! User and password may be percent-encoded (`%40` for `@`). A URL that names a user but no
//! password, or no credentials at all, takes the password from `REDIS_PASSWORD` when the
//! caller asks for it ([`RedisUrl::with_env_password`]), so that it need not appear on a
//! command line. A URL prints with its password hidden.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// Credentials sent with `AUTH` on every new connection.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    /// ACL user; `None` authenticates the default user with the password alone.
    pub user: Option<String>,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// How a store is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `redis://`: one server, plain TCP.
    Redis,
    /// `rediss://`: one server, TLS.
    Rediss,
    /// `redis+cluster://`: a Redis Cluster, plain TCP.
    Cluster,
}

/// A parsed store address.
///
/// ```
/// use ringwait::lookup::{RedisUrl, Scheme};
/// let url: RedisUrl = "redis://127.0.0.1:6380/2".parse()?;
/// assert_eq!(url.addr, "127.0.0.1:6380".parse()?);
/// assert_eq!(url.db, 2);
/// let url: RedisUrl = "redis://[::1]".parse()?;
/// assert_eq!(url.addr.port(), 6379);
/// let url: RedisUrl = "redis://app:s%40cret@127.0.0.1:6379".parse()?;
/// let auth = url.auth.clone().unwrap();
/// assert_eq!((auth.user.as_deref(), auth.password.as_str()), (Some("app"), "s@cret"));
/// assert_eq!(url.to_string(), "redis://app:***@127.0.0.1:6379/0");
/// let url: RedisUrl = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001".parse()?;
/// assert_eq!((url.scheme, url.seeds.len()), (Scheme::Cluster, 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// How the store is reached.
    pub scheme: Scheme,
    /// The (first) server address (a host name is resolved when parsing; the first address
    /// wins).
    pub addr: SocketAddr,
    /// Every address given: the cluster's seed nodes (one for a single server).
    pub seeds: Vec<SocketAddr>,
    /// The first host as written (the name a TLS certificate is checked against).
    pub host: String,
    /// The database to `SELECT` (0 by default); see [`ConnectionConfig::db`](super::ConnectionConfig::db).
    pub db: u32,
    /// Credentials, if any.
    pub auth: Option<Auth>,
}

/// Why a store address was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not of one of the accepted forms.
    #[error("{0:?} is not a redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss://… or redis+cluster://HOST:PORT[,HOST:PORT…] address")]
    Syntax(String),
    /// The port is not a number from 1 to 65535.
    #[error("bad port in {0:?}")]
    Port(String),
    /// The database is not a non-negative number, or is not 0 for a cluster.
    #[error("bad database number in {0:?}: write redis://HOST:PORT/0 .. /15 (a cluster has only database 0)")]
    Db(String),
    /// A user or password is not valid percent-encoded UTF-8.
    #[error("bad percent-encoding in the credentials of {0}")]
    Credentials(String),
    /// The host name did not resolve.
    #[error("cannot resolve host {host:?}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's message.
        reason: String,
    },
}

impl RedisUrl {
    /// The address with the password from `REDIS_PASSWORD` (when set and not empty) if it
    /// names none itself.
    pub fn with_env_password(self) -> Self {
        self.with_password_from(std::env::var("REDIS_PASSWORD").ok())
    }

    fn with_password_from(mut self, password: Option<String>) -> Self {
        let Some(password) = password.filter(|p| !p.is_empty()) else {
            return self;
        };
        match &mut self.auth {
            Some(auth) if auth.password.is_empty() => auth.password = password,
            Some(_) => {}
            None => {
                self.auth = Some(Auth {
                    user: None,
                    password,
                })
            }
        }
        self
    }

    /// `base` with this address's database and credentials (and `tls` for its connections).
    pub fn connection_config(
        &self,
        base: super::ConnectionConfig,
        tls: Option<super::TlsSettings>,
    ) -> super::ConnectionConfig {
        super::ConnectionConfig {
            db: self.db,
            auth: self.auth.clone(),
            tls,
            ..base
        }
    }

    /// What a `rediss://` address's connections check the server with: its host against
    /// the CAs of `ca_file` (PEM), or Mozilla's roots. `None` for the other schemes.
    pub fn tls_settings(
        &self,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Option<super::TlsSettings>, super::TlsSetupError> {
        (self.scheme == Scheme::Rediss)
            .then(|| super::TlsSettings::new(&self.host, ca_file))
            .transpose()
    }

    /// The address without its credentials, as a job's checkpoint records it.
    pub fn without_credentials(&self) -> String {
        let mut shown = self.clone();
        shown.auth = None;
        shown.to_string()
    }
}

impl fmt::Display for RedisUrl {
    /// `scheme://[user:***@]addr[,addr…]/db`: the password is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Redis => "redis",
            Scheme::Rediss => "rediss",
            Scheme::Cluster => "redis+cluster",
        };
        write!(f, "{scheme}://")?;
        if let Some(auth) = &self.auth {
            write!(f, "{}:***@", auth.user.as_deref().unwrap_or(""))?;
        }
        let addrs: Vec<String> = self.seeds.iter().map(|a| a.to_string()).collect();
        write!(f, "{}/{}", addrs.join(","), self.db)
    }
}

impl FromStr for RedisUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        let syntax = || UrlError::Syntax(redacted(s));
        let (scheme, rest) = [
            ("redis://", Scheme::Redis),
            ("rediss://", Scheme::Rediss),
            ("redis+cluster://", Scheme::Cluster),
        ]
        .into_iter()
        .find_map(|(prefix, scheme)| s.strip_prefix(prefix).map(|r| (scheme, r)))
        .ok_or_else(syntax)?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((creds, rest)) => (Some(credentials(creds, s)?), rest),
            None => (None, rest),
        };
        let (hosts, db) = match rest.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, db)) => (hp, db.parse().map_err(|_| UrlError::Db(redacted(s)))?),
            None => (rest, 0),
        };
        if scheme == Scheme::Cluster && db != 0 {
            return Err(UrlError::Db(redacted(s)));
        }
        let hosts: Vec<&str> = hosts.split(',').collect();
        if hosts.len() > 1 && scheme != Scheme::Cluster {
            return Err(syntax());
        }
        let mut seeds = Vec::with_capacity(hosts.len());
        let mut first_host = String::new();
        for hostport in hosts {
            let (host, addr) = resolve(hostport, s)?;
            if first_host.is_empty() {
                first_host = host;
            }
            seeds.push(addr);
        }
        Ok(RedisUrl {
            scheme,
            addr: seeds[0],
            seeds,
            host: first_host,
            db,
            auth,
        })
    }
}

/// `s` with anything between `://` and the last `@` hidden, for error messages.
fn redacted(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(start), Some(at)) if at > start => format!("{}***{}", &s[..start + 3], &s[at..]),
        _ => s.to_string(),
    }
}

/// `USER:PASSWORD`, `:PASSWORD` or `USER` (percent-encoded).
fn credentials(creds: &str, s: &str) -> Result<Auth, UrlError> {
    let bad = || UrlError::Credentials(redacted(s));
    let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
    let user = percent_decode(user).ok_or_else(bad)?;
    let password = percent_decode(password).ok_or_else(bad)?;
    Ok(Auth {
        user: (!user.is_empty()).then_some(user),
        password,
    })
}

/// One `NAME=VALUE` parameter of an address's query: the name, and the value
/// percent-decoded; `Err(why)` when it is not of that form or the value is empty.
pub(crate) fn query_param(param: &str) -> Result<(&str, String), &'static str> {
    let (name, value) = param.split_once('=').ok_or("write NAME=VALUE")?;
    let value = percent_decode(value)
        .filter(|v| !v.is_empty())
        .ok_or("the value is empty or not percent-encoded UTF-8")?;
    Ok((name, value))
}

pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `HOST[:PORT]` (IPv6 in brackets), resolved: the host as written and its first address.
fn resolve(hostport: &str, s: &str) -> Result<(String, SocketAddr), UrlError> {
    // An IPv6 address goes in brackets: `[::1]:6379`. Without them, or with a bracket left
    // open, which part is the port cannot be told.
    let bracketed = hostport.starts_with('[');
    let closed = hostport.find(']').is_some_and(|at| {
        let rest = &hostport[at + 1..];
        rest.is_empty() || rest.starts_with(':')
    });
    if (bracketed && !closed) || (!bracketed && hostport.matches(':').count() > 1) {
        return Err(UrlError::Syntax(redacted(s)));
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && (h.starts_with('[') || !h.contains(':')) => {
            let port: u16 = p.parse().map_err(|_| UrlError::Port(redacted(s)))?;
            (h, port)
        }
        _ => (hostport, 6379),
    };
    if port == 0 {
        return Err(UrlError::Port(redacted(s)));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(UrlError::Syntax(redacted(s)));
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
    Ok((host.to_string(), addr))
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
        assert_eq!(u.host, "localhost");
        for (bad, what) in [
            ("http://x", "Syntax"),
            ("redis://x:0", "Port"),
            ("redis://x:http", "Port"),
            ("redis://127.0.0.1/x", "Db"),
            ("redis://", "Syntax"),
            ("redis://127.0.0.1:1,127.0.0.1:2", "Syntax"),
            ("redis+cluster://127.0.0.1:7000/1", "Db"),
            ("redis://u:p%zz@127.0.0.1", "Credentials"),
            ("redis://[::1", "Syntax"),
            ("redis://[::1]x", "Syntax"),
            ("redis://::1:6379", "Syntax"),
        ] {
            let e = bad.parse::<RedisUrl>().unwrap_err();
            assert!(format!("{e:?}").starts_with(what), "{bad}: {e:?}");
        }
    }

    #[test]
    fn credentials_are_read_and_never_shown() {
        let u: RedisUrl = "rediss://:pw@127.0.0.1:6380/1".parse().unwrap();
        assert_eq!(u.scheme, Scheme::Rediss);
        assert_eq!(
            u.auth,
            Some(Auth {
                user: None,
                password: "pw".into()
            })
        );
        assert_eq!(u.to_string(), "rediss://:***@127.0.0.1:6380/1");
        assert!(!format!("{u:?}").contains("pw\""), "{u:?}");
        assert_eq!(u.without_credentials(), "rediss://127.0.0.1:6380/1");
        let e = "redis://u:topsecret@127.0.0.1:http"
            .parse::<RedisUrl>()
            .unwrap_err();
        assert!(!e.to_string().contains("topsecret"), "{e}");
    }

    #[test]
    fn the_environment_fills_a_missing_password_only() {
        let env = Some("fromenv".to_string());
        let u: RedisUrl = "redis://127.0.0.1".parse().unwrap();
        let a = u.with_password_from(env.clone()).auth.unwrap();
        assert_eq!((a.user, a.password.as_str()), (None, "fromenv"));
        let u: RedisUrl = "redis://app@127.0.0.1".parse().unwrap();
        let a = u.with_password_from(env.clone()).auth.unwrap();
        assert_eq!(
            (a.user.as_deref(), a.password.as_str()),
            (Some("app"), "fromenv")
        );
        let u: RedisUrl = "redis://app:given@127.0.0.1".parse().unwrap();
        let a = u.with_password_from(env).auth.unwrap();
        assert_eq!(a.password, "given");
        let u: RedisUrl = "redis://127.0.0.1".parse().unwrap();
        assert!(u.with_password_from(Some(String::new())).auth.is_none());
    }
}
