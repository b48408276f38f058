//! `kafka://` addresses: bootstrap brokers and topics.
//!
//! ```text
//! --input  kafka://HOST:PORT[,HOST:PORT...]/TOPIC[,TOPIC...]?group=G[&start=earliest|latest]
//! --output kafka://HOST:PORT[,HOST:PORT...]/TOPIC
//! ```

use std::fmt;
use std::str::FromStr;

/// Where a partition with no committed offset in the group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaStart {
    /// `start=earliest` (the default): every message the partition holds.
    #[default]
    Earliest,
    /// `start=latest`: only messages produced after the partition is first assigned.
    Latest,
}

/// A parsed `kafka://` address.
///
/// ```
/// use ringwait::connect::kafka::{KafkaStart, KafkaUrl};
/// let url: KafkaUrl = "kafka://b1:9092,b2:9092/orders,fills?group=enrich&start=latest".parse()?;
/// assert_eq!(url.brokers, ["b1:9092", "b2:9092"]);
/// assert_eq!(url.topics, ["orders", "fills"]);
/// assert_eq!((url.group.as_deref(), url.start), (Some("enrich"), KafkaStart::Latest));
/// assert_eq!(url.to_string(), "kafka://b1:9092,b2:9092/orders,fills?group=enrich&start=latest");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaUrl {
    /// Bootstrap brokers, `HOST:PORT` each.
    pub brokers: Vec<String>,
    /// The topics (one for an output).
    pub topics: Vec<String>,
    /// `group=`: the consumer group (inputs).
    pub group: Option<String>,
    /// `start=`: where a partition without a committed offset starts (inputs).
    pub start: KafkaStart,
}

/// Why a `kafka://` address was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaUrlError {
    /// Not of the form.
    #[error("{0:?} is not a kafka://HOST:PORT[,HOST:PORT...]/TOPIC[,TOPIC...][?PARAMS] address")]
    Syntax(String),
    /// A broker or topic name is not valid.
    #[error("{0}")]
    Name(String),
    /// A parameter is unknown, repeated, or has a bad value.
    #[error("{0}")]
    Param(String),
}

/// The longest topic name Kafka accepts.
const MAX_TOPIC: usize = 249;

impl KafkaUrl {
    /// The bootstrap list as librdkafka takes it (`bootstrap.servers`).
    pub fn bootstrap(&self) -> String {
        self.brokers.join(",")
    }

    /// The address as an input: it must name a group; at most 255 topics.
    pub fn check_input(&self) -> Result<(), String> {
        if self.group.is_none() {
            return Err(format!(
                "{self}: a Kafka input needs a consumer group: add ?group=NAME"
            ));
        }
        if self.topics.len() > 255 {
            return Err(format!("{self}: at most 255 input topics"));
        }
        Ok(())
    }

    /// The address as an output: one topic, no group, no start.
    pub fn check_output(&self) -> Result<(), String> {
        if self.topics.len() != 1 {
            return Err(format!("{self}: an output is one topic"));
        }
        if self.group.is_some() || self.start != KafkaStart::Earliest {
            return Err(format!("{self}: group and start are for an input"));
        }
        Ok(())
    }
}

impl fmt::Display for KafkaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kafka://{}/{}", self.bootstrap(), self.topics.join(","))?;
        let mut params = Vec::new();
        if let Some(g) = &self.group {
            params.push(format!("group={g}"));
        }
        if self.start == KafkaStart::Latest {
            params.push("start=latest".into());
        }
        if !params.is_empty() {
            write!(f, "?{}", params.join("&"))?;
        }
        Ok(())
    }
}

impl FromStr for KafkaUrl {
    type Err = KafkaUrlError;

    fn from_str(s: &str) -> Result<Self, KafkaUrlError> {
        let syntax = || KafkaUrlError::Syntax(s.to_string());
        let rest = s.strip_prefix("kafka://").ok_or_else(syntax)?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (brokers, topics) = rest.split_once('/').ok_or_else(syntax)?;
        let brokers = brokers
            .split(',')
            .map(check_broker)
            .collect::<Result<Vec<_>, _>>()?;
        let topics = topics
            .split(',')
            .map(check_topic)
            .collect::<Result<Vec<_>, _>>()?;
        let mut url = KafkaUrl {
            brokers,
            topics,
            group: None,
            start: KafkaStart::default(),
        };
        let mut start_given = false;
        for param in query.split('&').filter(|p| !p.is_empty()) {
            url.set(param, &mut start_given)?;
        }
        Ok(url)
    }
}

impl KafkaUrl {
    fn set(&mut self, param: &str, start_given: &mut bool) -> Result<(), KafkaUrlError> {
        let bad = |why: &str| KafkaUrlError::Param(format!("{param:?}: {why}"));
        let (name, value) = crate::lookup::query_param(param).map_err(bad)?;
        let repeated = match name {
            "group" => self.group.replace(value).is_some(),
            "start" => {
                self.start = match value.as_str() {
                    "earliest" => KafkaStart::Earliest,
                    "latest" => KafkaStart::Latest,
                    _ => return Err(bad("start is earliest or latest")),
                };
                std::mem::replace(start_given, true)
            }
            _ => return Err(bad("known parameters: group, start")),
        };
        if repeated {
            return Err(bad("given twice"));
        }
        Ok(())
    }
}

/// `HOST:PORT`, the port a number.
fn check_broker(b: &str) -> Result<String, KafkaUrlError> {
    let port_ok = b
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && !host.contains('/'))
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .is_some_and(|p| p > 0);
    if port_ok {
        Ok(b.to_string())
    } else {
        Err(KafkaUrlError::Name(format!(
            "broker {b:?}: write HOST:PORT (the port is needed)"
        )))
    }
}

/// A topic name as Kafka takes it: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic(t: &str) -> Result<String, KafkaUrlError> {
    let legal = t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if t.is_empty() || t.len() > MAX_TOPIC || !legal || t == "." || t == ".." {
        return Err(KafkaUrlError::Name(format!(
            "topic {t:?}: a topic name is 1 to {MAX_TOPIC} of a-z A-Z 0-9 . _ -"
        )));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse_and_mistakes_are_named() {
        let u: KafkaUrl = "kafka://127.0.0.1:9092/in?group=g".parse().unwrap();
        assert_eq!((u.brokers.len(), u.start), (1, KafkaStart::Earliest));
        assert!(u.check_input().is_ok());
        assert!(u.check_output().unwrap_err().contains("group"));
        let out: KafkaUrl = "kafka://127.0.0.1:9092/out".parse().unwrap();
        assert!(out.check_output().is_ok());
        assert!(out.check_input().unwrap_err().contains("?group=NAME"));
        for (bad, says) in [
            ("redis://127.0.0.1:1/in", "not a kafka"),
            ("kafka://127.0.0.1:9092", "not a kafka"),
            ("kafka://127.0.0.1/in", "the port is needed"),
            ("kafka://127.0.0.1:0/in", "the port is needed"),
            ("kafka://127.0.0.1:9092/in,", "topic \"\""),
            ("kafka://127.0.0.1:9092/a b", "topic \"a b\""),
            ("kafka://127.0.0.1:9092/..", "topic"),
            ("kafka://127.0.0.1:9092/in?group=", "empty"),
            ("kafka://127.0.0.1:9092/in?group=a&group=b", "twice"),
            ("kafka://127.0.0.1:9092/in?start=0", "earliest or latest"),
            (
                "kafka://127.0.0.1:9092/in?start=latest&start=latest",
                "twice",
            ),
            ("kafka://127.0.0.1:9092/in?nope=1", "known parameters"),
        ] {
            let e = bad.parse::<KafkaUrl>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let long = format!("kafka://h:1/{}", "t".repeat(250));
        assert!(long.parse::<KafkaUrl>().is_err());
    }
}
