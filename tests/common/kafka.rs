//! Test support: `tansu` Kafka-protocol brokers (memory storage) on free loopback ports,
//! killed on drop; topics; a producer of JSON records; an independent reader of a topic.
//!
//! If `tansu` cannot be found the test FAILS, telling to run `scripts/ensure-kafka`: these
//! tests are never skipped silently.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::redis::free_port;

fn tansu() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        });
    let installed = home.join("bin/tansu");
    if installed.is_file() {
        return installed;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("tansu"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`tansu` is not installed: run scripts/ensure-kafka"))
}

/// A message to produce: partition, key, value, headers.
pub type Message = (i32, Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

/// A tansu broker with memory storage.
pub struct Broker {
    child: Child,
    pub port: u16,
}

impl Broker {
    pub fn start() -> Broker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let b = Broker { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends `sig` to the broker (`SIGSTOP`/`SIGCONT` stall and resume it).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Kills the broker for good (memory storage: its topics go with it).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(tansu())
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
            ])
            .args(["--partitions", &partitions.to_string(), topic])
            .output()
            .expect("run tansu topic create");
        assert!(out.status.success(), "tansu topic create {topic}: {out:?}");
    }

    pub fn producer(&self, extra: &[(&str, &str)]) -> BaseProducer {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.addr())
            .set("log_level", "3");
        for (k, v) in extra {
            c.set(*k, *v);
        }
        c.create().expect("a producer")
    }

    /// Produces `(partition, key, value, headers)` messages, `per_batch` per record batch
    /// (tansu 0.6's mid-batch fetch bug needs batches of many to show).
    pub fn produce(&self, topic: &str, messages: &[Message]) {
        let p = self.producer(&[
            ("linger.ms", "20"),
            ("batch.num.messages", "500"),
            ("enable.idempotence", "true"),
        ]);
        for (part, key, value, headers) in messages {
            let mut h = OwnedHeaders::new();
            for (k, v) in headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
                .partition(*part)
                .payload(value.as_slice())
                .headers(h)
                .timestamp(1_700_000_000_000 + i64::from(*part));
            if let Some(k) = key {
                r = r.key(k.as_slice());
            }
            loop {
                match p.send(r) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        r = back;
                        p.poll(Duration::from_millis(10));
                    }
                }
            }
        }
        p.flush(Duration::from_secs(60)).expect("produced");
    }

    /// A consumer that reads by assignment (it joins no group).
    pub fn plain_consumer(&self) -> BaseConsumer {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.addr())
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "50")
            .set("log_level", "3");
        c.create().expect("a consumer")
    }

    /// Every message of `topic` (its `partitions`), read independently from the start:
    /// (partition, offset, key, value, headers).
    pub fn read_all(&self, topic: &str, partitions: i32) -> Vec<Read> {
        let consumer = self.plain_consumer();
        let mut out = Vec::new();
        for p in 0..partitions {
            // Partition ends from a fetch (ListOffsets latest is wrong on tansu 0.6).
            let end = ringwait::connect::kafka::true_end(&consumer, topic, p).expect("end");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
            consumer.assign(&tpl).unwrap();
            let mut next = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while next < end {
                assert!(
                    Instant::now() < deadline,
                    "reading {topic}/{p} stalled at {next} of {end}"
                );
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) if m.offset() >= next => {
                        next = m.offset() + 1;
                        let headers = m
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|x| {
                                        (x.key.to_string(), x.value.unwrap_or_default().to_vec())
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        out.push(Read {
                            partition: p,
                            offset: m.offset(),
                            key: m.key().map(<[u8]>::to_vec),
                            value: m.payload().unwrap_or_default().to_vec(),
                            headers,
                            timestamp: m.timestamp().to_millis(),
                        });
                    }
                    _ => {}
                }
            }
        }
        out
    }
}

/// A message as the independent reader saw it.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp: Option<i64>,
}

impl Read {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.0 == name)
            .map(|h| h.1.as_slice())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
