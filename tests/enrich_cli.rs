//! `ringwait enrich` as users run it: the binary, its flags, its files and exit codes.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use ringwait::dataset::value_of;
use ringwait::server::{BuiltinServer, Fault, FaultPlan, Latency, ServerConfig};
use serde_json::Value;

fn ringwait(args: &[&str]) -> Output {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ringwait"))
        .args(args)
        .output()
        .expect("run ringwait");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "ringwait {args:?} took {:?}",
        started.elapsed()
    );
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

struct Dir(PathBuf);
impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("ringwait-enrich-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn path(&self, f: &str) -> String {
        self.0.join(f).display().to_string()
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Input lines `{"id":i,"k":<key index or a miss>}` with a miss every 7th line.
fn write_input(path: &str, n: u64, keys: u64) -> Vec<Option<u64>> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut expected = Vec::new();
    for i in 0..n {
        let key = ringwait::dataset::key_of(i) % keys;
        if i % 7 == 3 {
            writeln!(f, r#"{{"id":{i},"k":"missing-{i}"}}"#).unwrap();
            expected.push(None);
        } else {
            writeln!(f, r#"{{"id":{i},"k":{key}}}"#).unwrap();
            expected.push(Some(key));
        }
    }
    expected
}

fn read_output(path: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each output line is JSON"))
        .collect()
}

/// Every record present once with the right value; in input order when `ordered`.
fn check(out: &[Value], expected: &[Option<u64>], ordered: bool) {
    assert_eq!(out.len(), expected.len(), "one output line per input line");
    let mut seen = vec![false; expected.len()];
    let mut last = None;
    for obj in out {
        let id = obj["id"].as_u64().unwrap() as usize;
        assert!(!seen[id], "record {id} written twice");
        seen[id] = true;
        let want = match expected[id] {
            Some(k) => Value::String(String::from_utf8(value_of(k).to_vec()).unwrap()),
            None => Value::Null,
        };
        assert_eq!(obj["v"], want, "record {id}");
        if ordered {
            assert!(last.is_none_or(|l| l < id), "record {id} out of order");
            last = Some(id);
        }
    }
}

/// `ringwait enrich` on `input` keyed by field `k` (looked up as `k:<k>`), the value written
/// into field `into`.
fn enrich_keyed(
    input: &str,
    output: &str,
    into: &str,
    store: &str,
    mode: &str,
    partitions: &str,
) -> Output {
    ringwait(&[
        "enrich",
        "--input",
        input,
        "--output",
        output,
        "--key",
        "k",
        "--key-prefix",
        "k:",
        "--into",
        into,
        "--lookup",
        store,
        "--mode",
        mode,
        "--partitions",
        partitions,
        "--quiet",
    ])
}

fn enrich_against(store: &str, dir: &Dir, mode: &str, partitions: &str, n: u64, keys: u64) {
    let input = dir.path(&format!("in-{mode}-{partitions}.jsonl"));
    let output = dir.path(&format!("out-{mode}-{partitions}.jsonl"));
    let expected = write_input(&input, n, keys);
    let o = enrich_keyed(&input, &output, "v", store, mode, partitions);
    assert!(o.status.success(), "{mode} x{partitions}: {}", stderr(&o));
    check(&read_output(&output), &expected, mode == "ordered");
    assert!(
        stderr(&o).contains(&format!("{n} records")),
        "summary: {}",
        stderr(&o)
    );
}

#[test]
fn every_mode_on_one_and_two_partitions_against_a_real_redis() {
    let redis = RedisServer::start();
    let keys = 500;
    redis.populate(keys);
    let url = format!("redis://{}", redis.addr());
    let dir = Dir::new("redis");
    for mode in ["ordered", "unordered", "key-ordered"] {
        for p in ["1", "2"] {
            enrich_against(&url, &dir, mode, p, 3_000, keys);
        }
    }
}

#[test]
fn every_mode_against_the_builtin_store() {
    let dir = Dir::new("builtin");
    for mode in ["ordered", "unordered", "key-ordered"] {
        for p in ["1", "2"] {
            enrich_against("builtin", &dir, mode, p, 2_000, 1_000_000);
        }
    }
}

#[test]
fn the_default_job_runs_on_generated_records_with_the_embedded_store() {
    let dir = Dir::new("default");
    let out = dir.path("out.jsonl");
    let o = ringwait(&["enrich", "--records", "5000", "--output", &out, "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = read_output(&out);
    assert_eq!(lines.len(), 5000);
    for (i, obj) in lines.iter().enumerate() {
        assert_eq!(
            obj["id"].as_u64(),
            Some(i as u64),
            "generated records stay in order"
        );
        let key = ringwait::dataset::key_of(i as u64);
        assert_eq!(obj["key"], Value::String(format!("k:{key}")));
        assert_eq!(
            obj["value"].as_str().unwrap().as_bytes(),
            &value_of(key)[..],
            "record {i}"
        );
    }
}

#[test]
fn a_malformed_input_line_fails_naming_the_line_and_keeps_earlier_output() {
    let dir = Dir::new("malformed");
    let input = dir.path("in.jsonl");
    std::fs::write(
        &input,
        "{\"key\":\"k:1\"}\n{\"key\":\"k:2\"}\nnot json\n{\"key\":\"k:3\"}\n",
    )
    .unwrap();
    let out = dir.path("out.jsonl");
    let o = ringwait(&[
        "enrich",
        "--input",
        &input,
        "--output",
        &out,
        "--partitions",
        "1",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("line 3"), "names the line: {err}");
    let partial = err
        .split("the output so far is in ")
        .nth(1)
        .unwrap_or_else(|| panic!("names where the output so far is: {err}"))
        .trim()
        .to_string();
    assert!(
        partial.starts_with(&format!("{out}.ringwait-partial-")),
        "beside the output: {partial}"
    );
    assert!(
        !std::path::Path::new(&out).exists(),
        "an incomplete run does not take the output's name"
    );
    assert_eq!(
        read_output(&partial).len(),
        2,
        "the two good lines were written"
    );
}

#[test]
fn a_missing_key_field_is_a_clear_error() {
    let dir = Dir::new("nokey");
    let input = dir.path("in.jsonl");
    std::fs::write(&input, "{\"key\":\"k:1\"}\n{\"id\":2}\n").unwrap();
    let o = ringwait(&[
        "enrich",
        "--input",
        &input,
        "--output",
        &dir.path("o"),
        "--partitions",
        "1",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("line 2: the key field \"key\" is missing"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_unreachable_store_is_a_clear_error_not_a_hang() {
    let port = common::redis::free_port();
    let o = ringwait(&[
        "enrich",
        "--records",
        "100",
        "--output",
        "/dev/null",
        "--lookup",
        &format!("redis://127.0.0.1:{port}"),
        "--partitions",
        "1",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")),
        "names the store: {err}"
    );
    assert!(err.contains("refused"), "says why: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear error line: {err}");
}

#[test]
fn zero_capacity_is_refused_naming_the_flag() {
    let o = ringwait(&["enrich", "--records", "10", "--capacity", "0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--capacity"), "{}", stderr(&o));
    let o = ringwait(&["enrich", "--records", "10", "--timeout-ms", "0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--timeout-ms"), "{}", stderr(&o));
}

/// A store that accepts connections but never answers is refused before the job writes
/// anything: the probe's PING goes unanswered.
#[test]
fn a_store_that_never_answers_is_refused_before_anything_is_written() {
    let server = BuiltinServer::start(ServerConfig {
        keys: 100,
        faults: FaultPlan::only(Fault::BlackHole),
        ..ServerConfig::default()
    })
    .unwrap();
    let dir = Dir::new("blackhole");
    let out = dir.path("o");
    std::fs::write(&out, "precious\n").unwrap();
    let o = ringwait(&[
        "enrich",
        "--records",
        "50",
        "--output",
        &out,
        "--lookup",
        &format!("redis://{}", server.addr()),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("did not answer PING"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious\n");
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        1,
        "no partial file either"
    );
    server.shutdown().unwrap();
}

/// A store slower than the record timeout: every record times out and goes through the
/// error policy.
#[test]
fn a_store_slower_than_the_timeout_is_resolved_by_timeouts_and_the_error_policy() {
    let server = BuiltinServer::start(ServerConfig {
        keys: 100,
        faults: FaultPlan {
            fault: Fault::None,
            latency: Latency::Fixed(Duration::from_millis(700)),
            flap: None,
        },
        ..ServerConfig::default()
    })
    .unwrap();
    let url = format!("redis://{}", server.addr());
    let dir = Dir::new("slow");

    // fail (the default): non-zero, naming a line and the timeout
    let o = ringwait(&[
        "enrich",
        "--records",
        "50",
        "--output",
        &dir.path("o1"),
        "--lookup",
        &url,
        "--timeout-ms",
        "200",
        "--partitions",
        "1",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("timed out after 200ms"),
        "{}",
        stderr(&o)
    );

    // side output: every record lands there, none in the output
    let side = dir.path("side.jsonl");
    let o = ringwait(&[
        "enrich",
        "--records",
        "50",
        "--output",
        &dir.path("o2"),
        "--lookup",
        &url,
        "--timeout-ms",
        "200",
        "--partitions",
        "2",
        "--on-error",
        &format!("side-output:{side}"),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let failed = read_output(&side);
    assert_eq!(failed.len(), 50);
    assert!(failed
        .iter()
        .all(|f| f["error"].as_str().unwrap().contains("timed out")));
    assert_eq!(read_output(&dir.path("o2")).len(), 0);

    // skip: counted in the summary
    let o = ringwait(&[
        "enrich",
        "--records",
        "20",
        "--output",
        &dir.path("o3"),
        "--lookup",
        &url,
        "--timeout-ms",
        "100",
        "--on-error",
        "skip",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("skipped 20"), "{}", stderr(&o));
    server.shutdown().unwrap();
}

#[test]
fn the_report_is_an_svg_chart_with_the_summary() {
    let dir = Dir::new("report");
    let report = dir.path("r.svg");
    let o = ringwait(&[
        "enrich",
        "--records",
        "2000",
        "--output",
        "/dev/null",
        "--report",
        &report,
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(&report).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    assert!(svg.contains("2000 records"), "the summary is in the chart");
}

#[test]
fn help_documents_every_flag() {
    let o = ringwait(&["enrich", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--input",
        "--output",
        "--key",
        "--into",
        "--key-prefix",
        "--lookup",
        "--mode",
        "--capacity",
        "--timeout-ms",
        "--retries",
        "--retry-backoff-ms",
        "--on-error",
        "--partitions",
        "--report",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn metrics_are_served_in_the_prometheus_format_while_running() {
    let port = common::redis::free_port();
    let server = BuiltinServer::start(ServerConfig {
        keys: 1000,
        faults: FaultPlan {
            latency: ringwait::server::Latency::Fixed(Duration::from_millis(2)),
            ..FaultPlan::healthy()
        },
        ..ServerConfig::default()
    })
    .unwrap();
    let url = format!("redis://{}", server.addr());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ringwait"))
        .args([
            "enrich",
            "--records",
            "20000",
            "--output",
            "/dev/null",
            "--lookup",
            &url,
            "--partitions",
            "2",
            "--capacity",
            "50",
            "--quiet",
            "--metrics",
            &addr.to_string(),
        ])
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut body = None;
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(b) = ringwait::metrics_http::fetch(addr) {
            if b.contains("ringwait_records_in_total{partition=\"1\"}")
                && !b.contains("ringwait_records_in_total{partition=\"0\"} 0\n")
            {
                body = Some(b);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let done = child.wait_with_output().unwrap();
    assert!(done.status.success(), "{:?} {}", done.status, stderr(&done));
    let body = body.expect("metrics were served while the job ran");
    for family in [
        "# TYPE ringwait_records_in counter",
        "ringwait_records_in_total{partition=\"1\"}",
        "# TYPE ringwait_in_flight gauge",
        "ringwait_capacity{partition=\"0\"} 50",
        "# TYPE ringwait_latency_seconds histogram",
        "ringwait_latency_seconds_bucket{le=\"0.001\",partition=\"1\"}",
        "ringwait_latency_seconds_count{partition=\"0\"}",
        "# UNIT ringwait_oldest_age_seconds seconds",
        "ringwait_duplicates_total",
        "ringwait_lookup_misses_total",
        "ringwait_lookup_round_trip_seconds_count{partition=\"0\"}",
        "ringwait_cache_hits_total{partition=\"0\"}",
        "ringwait_cache_misses_total{partition=\"0\"}",
        "ringwait_lookup_coalesced_total{partition=\"1\"}",
        "ringwait_lookup_mgets_total{partition=\"0\"}",
        "ringwait_lookup_mget_keys_total{partition=\"1\"}",
    ] {
        assert!(body.contains(family), "missing {family} in:\n{body}");
    }
    server.shutdown().unwrap();
}

#[test]
fn output_lines_are_the_input_object_with_the_field_set_byte_for_byte() {
    // Each output line is its input line's bytes with the field added before the closing
    // brace (or its value replaced in place): key order, spacing, number spellings, escapes
    // and big integers stay as they were.
    let dir = Dir::new("bytes");
    let input = dir.path("in.jsonl");
    let output = dir.path("out.jsonl");
    let v = |k: u64| format!("\"{}\"", String::from_utf8(value_of(k).to_vec()).unwrap());
    let cases = [
        (
            r#"{"z":1,"k":1,"a":1.50,"qty":123456789012345678901234}"#,
            format!(
                r#"{{"z":1,"k":1,"a":1.50,"qty":123456789012345678901234,"m":{}}}"#,
                v(1)
            ),
        ),
        (
            r#"{ "k" : 2 , "e":1e3, "n":-0, "s":"\u00e9\"q\"" }"#,
            format!(
                r#"{{ "k" : 2 , "e":1e3, "n":-0, "s":"\u00e9\"q\"" ,"m":{}}}"#,
                v(2)
            ),
        ),
        (
            r#"{"k":3,"m":"old","deep":{"m":[1,{"m":2}]}}"#,
            format!(r#"{{"k":3,"m":{},"deep":{{"m":[1,{{"m":2}}]}}}}"#, v(3)),
        ),
        (
            r#"{"k":"missing","b":null}"#,
            r#"{"k":"missing","b":null,"m":null}"#.to_string(),
        ),
    ];
    let text: Vec<&str> = cases.iter().map(|(i, _)| *i).collect();
    std::fs::write(&input, text.join("\n") + "\n").unwrap();
    let o = enrich_keyed(&input, &output, "m", "builtin", "ordered", "1");
    assert!(o.status.success(), "{}", stderr(&o));
    let got = std::fs::read_to_string(&output).unwrap();
    let want: Vec<&str> = cases.iter().map(|(_, o)| o.as_str()).collect();
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
}

#[test]
fn blank_lines_are_skipped_and_counted_in_every_mode() {
    // Blank lines (empty, or spaces and tabs only) keep no place in the output and are
    // counted in the summary; the records around them are written in order as usual, with
    // and without checkpoints.
    let dir = Dir::new("blank");
    let input = dir.path("in.jsonl");
    let mut text = String::new();
    let mut blanks = 0;
    for i in 0..300u64 {
        text.push_str(&format!("{{\"k\":{i}}}\n"));
        if i % 7 == 0 {
            text.push_str(["\n", "   \n", "\t \r\n"][(i % 3) as usize]);
            blanks += 1;
        }
    }
    std::fs::write(&input, &text).unwrap();
    let v = |k: u64| String::from_utf8(value_of(k).to_vec()).unwrap();
    for (mode, partitions, checkpointed) in [
        ("ordered", "2", false),
        ("unordered", "2", false),
        ("ordered", "2", true),
    ] {
        let output = dir.path(&format!("out-{mode}-{checkpointed}.jsonl"));
        let ck = dir.path(&format!("ck-{mode}"));
        let ck = checkpointed.then_some(ck.as_str());
        let o = enrich_k(
            &input,
            &output,
            ck,
            &["--mode", mode, "--partitions", partitions],
        );
        assert!(o.status.success(), "{mode}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("side-output 0, blank {blanks}")),
            "{mode}: {}",
            stderr(&o)
        );
        let mut got: Vec<String> = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        if mode == "unordered" {
            got.sort_by_key(|l| read_k(l));
        }
        let want: Vec<String> = (0..300u64)
            .map(|i| format!("{{\"k\":{i},\"value\":\"{}\"}}", v(i)))
            .collect();
        assert_eq!(got, want, "{mode} checkpointed={checkpointed}");
    }
}

/// `enrich` of `input` (records keyed by the number in `k`, looked up as `k:N`) into
/// `output`, with `extra` flags, checkpointed in `ck` if given.
fn enrich_k(input: &str, output: &str, ck: Option<&str>, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "enrich",
        "--input",
        input,
        "--output",
        output,
        "--key",
        "k",
        "--key-prefix",
        "k:",
    ];
    args.extend_from_slice(extra);
    if let Some(ck) = ck {
        args.extend(["--checkpoint-dir", ck]);
    }
    ringwait(&args)
}

fn read_k(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).unwrap()["k"]
        .as_u64()
        .unwrap()
}

#[test]
fn line_breaks_are_kept_as_they_were() {
    // A CRLF line comes out with CRLF, an LF line with LF (plain and checkpointed runs); a
    // last line without a break gets LF.
    let dir = Dir::new("crlf");
    let input = dir.path("in.jsonl");
    let v = |k: u64| String::from_utf8(value_of(k).to_vec()).unwrap();
    let mut text = String::new();
    let mut want = String::new();
    for i in 0..500u64 {
        let brk = if i % 3 == 0 { "\r\n" } else { "\n" };
        let last = i == 499;
        text.push_str(&format!("{{\"k\":{i}}}{}", if last { "" } else { brk }));
        want.push_str(&format!(
            "{{\"k\":{i},\"value\":\"{}\"}}{}",
            v(i),
            if last { "\n" } else { brk }
        ));
    }
    std::fs::write(&input, &text).unwrap();
    for checkpointed in [false, true] {
        let output = dir.path(&format!("out-{checkpointed}.jsonl"));
        let ck = dir.path("ck");
        let ck = checkpointed.then_some(ck.as_str());
        let o = enrich_k(&input, &output, ck, &["--partitions", "2", "--quiet"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            std::fs::read_to_string(&output).unwrap(),
            want,
            "checkpointed={checkpointed}"
        );
    }
}
