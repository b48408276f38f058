//! `ringwait enrich` using the whole lookup client against a real redis-server: byte-exact
//! records, `--batch`, `--cache-size`, `--coalesce` proven by the server's own `INFO
//! commandstats`, `--command hget:FIELD|hgetall`, `--value-format json`, and permanent
//! errors that are not retried.

mod common;
mod job_support;

use std::net::SocketAddr;

use common::redis::{call, pipeline, RedisServer};
use job_support::{ringwait, stderr, Dir};
use ringwait::dataset::value_of;
use ringwait::resp::OwnedFrame;

/// `calls` of one command in `INFO commandstats` (0 when never called).
fn calls(addr: SocketAddr, command: &str) -> u64 {
    let OwnedFrame::Bulk(info) = call(addr, &[b"INFO", b"commandstats"]).unwrap() else {
        panic!("INFO answers a bulk string");
    };
    let info = String::from_utf8(info).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

fn reset_stats(addr: SocketAddr) {
    call(addr, &[b"CONFIG", b"RESETSTAT"]).unwrap();
}

fn v(k: u64) -> String {
    String::from_utf8(value_of(k).to_vec()).unwrap()
}

fn enrich(dir: &Dir, url: &str, input: &str, extra: &[&str]) -> (std::process::Output, String) {
    let output = dir.path("out.jsonl");
    let _ = std::fs::remove_file(&output);
    let mut args = vec![
        "enrich",
        "--input",
        input,
        "--output",
        &output,
        "--lookup",
        url,
        "--partitions",
        "1",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let o = ringwait(&args);
    let out = std::fs::read_to_string(&output).unwrap_or_default();
    (o, out)
}

#[test]
fn awkward_lines_pass_through_byte_for_byte_with_a_real_redis() {
    let redis = RedisServer::start();
    redis.populate(10);
    let url = format!("redis://{}", redis.addr());
    let dir = Dir::new("client-bytes");
    let input = dir.path("in.jsonl");
    let cases = [
        (
            r#"{"z":1,"key":"k:1","a":1.50,"qty":123456789012345678901234}"#,
            Some(1),
        ),
        (
            r#"{ "key" : "k:2" , "e":1e3, "n":-0, "s":"\u00e9\"q\"" }"#,
            Some(2),
        ),
        (
            r#"{"key":"k:3","deep":{"value":[1,{"value":2}]},"big":-1.0E-7}"#,
            Some(3),
        ),
        (
            r#"{"value":"old","key":"k:4","arr":[[],{}],"t":true,"f":false,"z":null}"#,
            Some(4),
        ),
        (r#"{"key":"k:\u0035"}"#, Some(5)),
        (r#"{"key":"missing","b":null}"#, None),
    ];
    let text: Vec<&str> = cases.iter().map(|(l, _)| *l).collect();
    std::fs::write(&input, text.join("\n") + "\n").unwrap();
    let want: Vec<String> = cases
        .iter()
        .map(|(line, k)| {
            let value = k.map_or("null".to_string(), |k| format!("\"{}\"", v(k)));
            if line.contains(r#""value":"old""#) {
                line.replacen(r#""value":"old""#, &format!(r#""value":{value}"#), 1)
            } else {
                let close = line.rfind('}').unwrap();
                let sep = if line[..close].trim_end().ends_with('{') {
                    ""
                } else {
                    ","
                };
                format!("{}{sep}\"value\":{value}{}", &line[..close], &line[close..])
            }
        })
        .collect();
    for batch in ["off", "auto"] {
        let (o, out) = enrich(&dir, &url, &input, &["--batch", batch]);
        assert!(o.status.success(), "{batch}: {}", stderr(&o));
        assert_eq!(out.lines().collect::<Vec<_>>(), want, "--batch {batch}");
    }
}

#[test]
fn batching_caching_and_coalescing_show_in_the_servers_command_counts() {
    let redis = RedisServer::start();
    redis.populate(200);
    let addr = redis.addr();
    let url = format!("redis://{addr}");
    let dir = Dir::new("client-counts");

    // 2,000 records over 100 keys, each key once per round of 100.
    let input = dir.path("rounds.jsonl");
    let lines: Vec<String> = (0..2000u64)
        .map(|i| format!("{{\"i\":{i},\"key\":\"k:{}\"}}", i % 100))
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let want: Vec<String> = (0..2000u64)
        .map(|i| {
            format!(
                "{{\"i\":{i},\"key\":\"k:{}\",\"value\":\"{}\"}}",
                i % 100,
                v(i % 100)
            )
        })
        .collect();
    let check = |o: &std::process::Output, out: &str, what: &str| {
        assert!(o.status.success(), "{what}: {}", stderr(o));
        assert_eq!(out.lines().collect::<Vec<_>>(), want, "{what}");
    };

    // Off (and no coalescing): one GET per record.
    reset_stats(addr);
    let (o, out) = enrich(&dir, &url, &input, &["--batch", "off", "--coalesce", "off"]);
    check(&o, &out, "batch off");
    assert_eq!((calls(addr, "get"), calls(addr, "mget")), (2000, 0));

    // Auto: MGETs carry most lookups (the few single ones go as GET).
    reset_stats(addr);
    let (o, out) = enrich(&dir, &url, &input, &["--batch", "auto"]);
    check(&o, &out, "batch auto");
    let (gets, mgets) = (calls(addr, "get"), calls(addr, "mget"));
    assert!(
        mgets > 0 && gets + mgets < 1000,
        "GET {gets}, MGET {mgets} for 2,000 records"
    );
    assert!(stderr(&o).contains("MGETs"), "{}", stderr(&o));

    // A cache: with few records in flight, each key is asked once; the rest are hits.
    reset_stats(addr);
    let (o, out) = enrich(
        &dir,
        &url,
        &input,
        &["--batch", "off", "--capacity", "10", "--cache-size", "1000"],
    );
    check(&o, &out, "cache");
    assert_eq!(calls(addr, "get"), 100, "one GET per distinct key");
    assert!(
        stderr(&o).contains("cache hits 1900, cache misses 100"),
        "{}",
        stderr(&o)
    );

    // Coalescing: many records of one key in flight together share requests.
    let same = dir.path("same.jsonl");
    let one_key: Vec<String> = (0..2000u64)
        .map(|i| format!("{{\"i\":{i},\"key\":\"k:7\"}}"))
        .collect();
    std::fs::write(&same, one_key.join("\n") + "\n").unwrap();
    for (coalesce, fewer) in [("off", false), ("on", true)] {
        reset_stats(addr);
        let (o, out) = enrich(
            &dir,
            &url,
            &same,
            &["--batch", "off", "--coalesce", coalesce],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(out.lines().count(), 2000);
        assert!(out
            .lines()
            .all(|l| l.ends_with(&format!("\"value\":\"{}\"}}", v(7)))));
        let gets = calls(addr, "get");
        assert_eq!(
            gets < 2000,
            fewer,
            "--coalesce {coalesce}: {gets} GETs for 2,000 records"
        );
    }
}

#[test]
fn hashes_json_values_and_permanent_errors() {
    let redis = RedisServer::start();
    redis.populate(10);
    let addr = redis.addr();
    let url = format!("redis://{addr}");
    let dir = Dir::new("client-commands");
    pipeline(
        addr,
        &[
            vec![
                b"SET".to_vec(),
                b"j:1".to_vec(),
                br#"{"px":100.50,"tags":["a"]}"#.to_vec(),
            ],
            vec![b"SET".to_vec(), b"j:2".to_vec(), b"{not json".to_vec()],
            vec![
                b"SET".to_vec(),
                b"j:3".to_vec(),
                b"{\r\n  \"a\": 1\n}".to_vec(),
            ],
        ],
    );
    let input = dir.path("in.jsonl");
    std::fs::write(&input, "{\"key\":\"h:3\"}\n{\"key\":\"h:99\"}\n").unwrap();

    // HGET and HGETALL (the built-in store answers the same).
    for (store, keys) in [(url.as_str(), "1"), ("builtin", "10")] {
        let enrich = |dir: &Dir, store: &str, input: &str, extra: &[&str]| {
            let mut args = vec!["--builtin-keys", keys];
            args.extend_from_slice(extra);
            enrich(dir, store, input, &args)
        };
        let (o, out) = enrich(&dir, store, &input, &["--command", "hget:v"]);
        assert!(o.status.success(), "{store}: {}", stderr(&o));
        assert_eq!(
            out,
            format!(
                "{{\"key\":\"h:3\",\"value\":\"{}\"}}\n{{\"key\":\"h:99\",\"value\":null}}\n",
                v(3)
            ),
            "{store}"
        );
        let (o, out) = enrich(&dir, store, &input, &["--command", "hgetall"]);
        assert!(o.status.success(), "{store}: {}", stderr(&o));
        assert_eq!(
            out,
            format!(
                "{{\"key\":\"h:3\",\"value\":{{\"id\":\"3\",\"v\":\"{}\"}}}}\n{{\"key\":\"h:99\",\"value\":null}}\n",
                v(3)
            ),
            "{store}"
        );
        let (o, out) = enrich(
            &dir,
            store,
            &input,
            &["--command", "hget:id", "--value-format", "json"],
        );
        assert!(o.status.success(), "{store}: {}", stderr(&o));
        assert_eq!(
            out,
            "{\"key\":\"h:3\",\"value\":3}\n{\"key\":\"h:99\",\"value\":null}\n"
        );
    }

    // JSON values go in as they are; one that is not JSON goes to the error policy, and is
    // not retried.
    let json_in = dir.path("json.jsonl");
    std::fs::write(
        &json_in,
        "{\"key\":\"j:1\"}\n{\"key\":\"j:2\"}\n{\"key\":\"j:3\"}\n{\"key\":\"j:4\"}\n",
    )
    .unwrap();
    let side = dir.path("side.jsonl");
    reset_stats(addr);
    let (o, out) = enrich(
        &dir,
        &url,
        &json_in,
        &[
            "--value-format",
            "json",
            "--batch",
            "off",
            "--retries",
            "3",
            "--on-error",
            &format!("side-output:{side}"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        out,
        "{\"key\":\"j:1\",\"value\":{\"px\":100.50,\"tags\":[\"a\"]}}\n\
         {\"key\":\"j:3\",\"value\":{    \"a\": 1 }}\n{\"key\":\"j:4\",\"value\":null}\n",
        "a stored value's line breaks become spaces: one record, one line"
    );
    let side_text = std::fs::read_to_string(&side).unwrap();
    assert!(
        side_text.contains("the value of j:2 is not valid JSON"),
        "{side_text}"
    );
    assert_eq!(calls(addr, "get"), 4, "the bad value was not asked again");

    // WRONGTYPE is permanent: straight to the policy with the reply's text, no retry.
    let wrong_in = dir.path("wrong.jsonl");
    std::fs::write(&wrong_in, "{\"key\":\"h:1\"}\n").unwrap();
    reset_stats(addr);
    let (o, _) = enrich(
        &dir,
        &url,
        &wrong_in,
        &[
            "--batch",
            "off",
            "--retries",
            "3",
            "--retry-backoff-ms",
            "1",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("WRONGTYPE"), "{}", stderr(&o));
    assert_eq!(calls(addr, "get"), 1, "WRONGTYPE is not retried");
}

#[test]
fn client_flags_are_checked_before_anything_runs() {
    for (args, says) in [
        (&["--connections", "0"][..], "--connections"),
        (&["--batch", "0"][..], "--batch"),
        (&["--command", "hget:"][..], "hget:FIELD"),
        (&["--value-format", "yaml"][..], "string or json"),
        (&["--coalesce", "yes"][..], "on or off"),
        (
            &["--cache-size", "10", "--cache-ttl-ms", "0"][..],
            "--cache-ttl-ms",
        ),
    ] {
        let mut all = vec!["enrich", "--records", "10", "--output", "/dev/null"];
        all.extend_from_slice(args);
        let o = ringwait(&all);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn a_three_node_cluster_through_redis_cluster_urls() {
    let cluster = common::redis::RedisCluster::start();
    cluster.populate(500);
    let addrs = cluster.addrs();
    // Two seeds: the client reads the slot map from the first that answers.
    let url = format!("redis+cluster://{},{}", addrs[0], addrs[1]);
    let dir = Dir::new("client-cluster");
    let input = dir.path("in.jsonl");
    let lines: Vec<String> = (0..3000u64)
        .map(|i| format!("{{\"i\":{i},\"key\":\"k:{}\"}}", i % 600))
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    for mode in ["ordered", "unordered"] {
        let (o, out) = enrich(&dir, &url, &input, &["--mode", mode]);
        assert!(o.status.success(), "{mode}: {}", stderr(&o));
        let mut got: Vec<&str> = out.lines().collect();
        got.sort_by_key(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["i"].as_u64());
        let want: Vec<String> = (0..3000u64)
            .map(|i| {
                let k = i % 600;
                let value = if k < 500 {
                    format!("\"{}\"", v(k))
                } else {
                    "null".into()
                };
                format!("{{\"i\":{i},\"key\":\"k:{k}\",\"value\":{value}}}")
            })
            .collect();
        assert_eq!(got, want, "{mode}");
    }
    // Every master answered some of them.
    for addr in &addrs {
        assert!(calls(*addr, "get") > 0, "{addr} served no GET");
    }
}

#[test]
fn bench_takes_the_same_urls_and_a_skewed_workload() {
    let redis = RedisServer::start();
    redis.populate(1_000_000);
    let addr = redis.addr();
    call(addr, &[b"CONFIG", b"SET", b"requirepass", b"bench-pw"]).unwrap();
    let bench = |url: &str, extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--workload",
            "redis",
            "--records",
            "20000",
            "--redis",
            url,
        ];
        args.extend_from_slice(extra);
        ringwait(&args)
    };
    let url = format!("redis://:bench-pw@{addr}");
    for (extra, coalesced) in [
        (&[][..], false),
        (&["--zipf", "0.99", "--coalesce"][..], true),
    ] {
        let authed = |args: &[&[u8]]| {
            let mut all: Vec<&[u8]> = vec![];
            all.extend_from_slice(args);
            pipeline(
                addr,
                &[
                    vec![b"AUTH".to_vec(), b"bench-pw".to_vec()],
                    all.iter().map(|a| a.to_vec()).collect(),
                ],
            )
        };
        authed(&[b"CONFIG", b"RESETSTAT"]);
        let o = bench(&url, extra);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("hits=20000 misses=0"),
            "{extra:?}: {}",
            stderr(&o)
        );
        let OwnedFrame::Bulk(info) = authed(&[b"INFO", b"commandstats"]).pop().unwrap() else {
            panic!("INFO answers a bulk string");
        };
        let info = String::from_utf8(info).unwrap();
        let gets: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
            .map_or(0, |r| r.split(',').next().unwrap().parse().unwrap());
        assert_eq!(gets < 20_000, coalesced, "{extra:?}: {gets} GETs");
    }
    for (extra, says) in [
        (&["--zipf", "1.5"][..], "--zipf"),
        (&["--tls-ca", "/nonexistent"][..], "--tls-ca"),
    ] {
        let o = bench(&url, extra);
        assert!(!o.status.success(), "{extra:?}");
        assert!(stderr(&o).contains(says), "{extra:?}: {}", stderr(&o));
    }
}
