//! `ringwait enrich` from Kafka to Kafka against a real Kafka-protocol broker (`tansu`, from
//! `scripts/ensure-kafka`): records pass through byte for byte with the looked-up field
//! added, keys, timestamps and headers pass through, each output names its source, and each
//! Kafka partition keeps its order.
//!
//! Every check reads the output topic independently and matches it against the input.

mod common;
mod job_support;

use common::kafka::{Broker, Message};
use job_support::{ringwait, stderr};

const KEYS: u64 = 500;

fn record(i: u64) -> Vec<u8> {
    format!(
        "{{\"id\":{i},\"key\":\"k:{}\",\"px\":1.50e2,\"pad\":\"{}\"}}",
        (i * 7919) % KEYS,
        "x".repeat((i % 7) as usize)
    )
    .into_bytes()
}

fn value(key: u64) -> String {
    String::from_utf8(ringwait::dataset::value_of(key).to_vec()).unwrap()
}

/// The record with its value added, as the job writes it.
fn enriched(i: u64) -> Vec<u8> {
    let r = String::from_utf8(record(i)).unwrap();
    let key = (i * 7919) % KEYS;
    format!("{},\"value\":\"{}\"}}", &r[..r.len() - 1], value(key)).into_bytes()
}

fn messages(n: u64, partitions: i32) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let key = (i % 3 != 0).then(|| format!("key-{i}").into_bytes());
            let headers = if i % 2 == 0 {
                vec![("trace".to_string(), format!("t{i}").into_bytes())]
            } else {
                vec![]
            };
            ((i % partitions as u64) as i32, key, record(i), headers)
        })
        .collect()
}

#[test]
fn records_keys_headers_and_order_pass_through() {
    let broker = Broker::start();
    broker.create_topic("in", 4);
    broker.create_topic("out", 4);
    let n = 4_000u64;
    broker.produce("in", &messages(n, 4));
    let input = format!("kafka://{}/in?group=g", broker.addr());
    let output = format!("kafka://{}/out", broker.addr());
    let o = ringwait(&[
        "enrich",
        "--input",
        &input,
        "--output",
        &output,
        "--until",
        "caught-up",
        "--mode",
        "ordered",
        "--partitions",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = broker.read_all("out", 4);
    assert_eq!(out.len() as u64, n, "{}", stderr(&o));
    let mut last = [-1i64; 4];
    for m in &out {
        let src = std::str::from_utf8(m.header("ringwait-src").expect("src header")).unwrap();
        let (t, rest) = src.split_once('/').unwrap();
        let (p, off) = rest.split_once('/').unwrap();
        let (p, off): (i32, i64) = (p.parse().unwrap(), off.parse().unwrap());
        assert_eq!(
            (t, p),
            ("in", m.partition),
            "output on the input's partition"
        );
        assert!(
            off > last[p as usize],
            "partition {p}: {off} after {}",
            last[p as usize]
        );
        last[p as usize] = off;
        // Offsets of partition p hold records p, p+4, p+8, … in order.
        let i = off as u64 * 4 + p as u64;
        assert_eq!(m.value, enriched(i), "record {i}");
        let key = (i % 3 != 0).then(|| format!("key-{i}").into_bytes());
        assert_eq!(m.key, key, "record {i}'s key");
        assert_eq!(
            m.header("trace").map(<[u8]>::to_vec),
            (i % 2 == 0).then(|| format!("t{i}").into_bytes()),
            "record {i}'s headers"
        );
        assert_eq!(m.timestamp, Some(1_700_000_000_000 + i64::from(p)));
    }
    let e = stderr(&o);
    assert!(
        e.contains(&format!("kafka: read {n}, delivered {n}, landed before 0")),
        "{e}"
    );
}
