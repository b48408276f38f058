//! The lookup-server fault matrix at the pipeline level (SPEC section 5): for each fault of the
//! built-in server — refused, slow, reset, black-hole, malformed, flapping — every record of an
//! `enrich` run is resolved exactly once (a value, or a failure routed to the side output after
//! retries or a timeout), nothing is lost or duplicated, and lookups recover once the fault
//! clears.

use std::collections::HashMap;
use std::time::Duration;

use ringwait::dataset::value_of;
use ringwait::enrich::{self, EnrichConfig, Input, Lookup, OnError, Output};
use ringwait::server::{
    BuiltinServer, Fault, FaultPlan, Flap, Latency, ServerConfig, ServerHandle,
};
use ringwait::OrderMode;
use serde_json::Value;

const RECORDS: u64 = 3_000;
/// Records of the runs a fault interrupts midway.
const LONG: u64 = 8_000;

struct Run {
    outputs: Vec<Value>,
    failed: Vec<Value>,
}

fn server(plan: FaultPlan) -> ServerHandle {
    BuiltinServer::start(ServerConfig {
        keys: 1_000_000,
        faults: plan,
        ..ServerConfig::default()
    })
    .unwrap()
}

fn run(server: &ServerHandle, name: &str, mode: OrderMode, timeout_ms: u64) -> Run {
    run_n(server, name, mode, timeout_ms, RECORDS, 64)
}

fn run_n(
    server: &ServerHandle,
    name: &str,
    mode: OrderMode,
    timeout_ms: u64,
    records: u64,
    capacity: usize,
) -> Run {
    let dir = std::env::temp_dir().join(format!("ringwait-faults-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.jsonl");
    let side = dir.join("side.jsonl");
    let config = EnrichConfig {
        input: Input::Generated(records),
        output: Output::File(out.clone()),
        lookup: Lookup::Redis(format!("redis://{}", server.addr()).parse().unwrap()),
        mode,
        capacity,
        timeout: Duration::from_millis(timeout_ms),
        retries: 3,
        retry_backoff: Duration::from_millis(2),
        on_error: OnError::SideOutput(side.clone()),
        partitions: Some(2),
        progress: false,
        // One GET per record: the fault switch below counts the server's commands.
        client: enrich::ClientOptions {
            batch: enrich::Batch::Off,
            ..enrich::ClientOptions::default()
        },
        ..EnrichConfig::default()
    };
    let summary = enrich::run(config).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(summary.records, records, "{name}: every record read");
    let read = |p: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let r = Run {
        outputs: read(&out),
        failed: read(&side),
    };
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// Every record exactly once: either an output with the right value or a failure.
fn check_exactly_once(name: &str, r: &Run) {
    check_n(name, r, RECORDS)
}

fn check_n(name: &str, r: &Run, records: u64) {
    let mut seen: HashMap<u64, &str> = HashMap::new();
    for o in &r.outputs {
        let id = o["id"].as_u64().unwrap();
        assert!(
            seen.insert(id, "output").is_none(),
            "{name}: record {id} twice"
        );
        let key = ringwait::dataset::key_of(id);
        assert_eq!(
            o["value"].as_str().unwrap().as_bytes(),
            &value_of(key)[..],
            "{name}: record {id} has the wrong value"
        );
    }
    for f in &r.failed {
        let id = f["record"]["id"].as_u64().unwrap();
        assert!(
            seen.insert(id, "failed").is_none(),
            "{name}: record {id} twice"
        );
        assert!(f["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(seen.len() as u64, records, "{name}: records lost");
}

#[test]
fn healthy_and_slow_servers_answer_every_record() {
    let s = server(FaultPlan {
        latency: Latency::Uniform {
            min: Duration::from_micros(100),
            max: Duration::from_millis(3),
        },
        ..FaultPlan::healthy()
    });
    for mode in [OrderMode::Ordered, OrderMode::Unordered] {
        let r = run(&s, "slow", mode, 2_000);
        check_exactly_once("slow", &r);
        assert!(
            r.failed.is_empty(),
            "a slow server within the timeout fails nothing"
        );
    }
    s.shutdown().unwrap();
}

#[test]
fn every_failing_fault_resolves_every_record_exactly_once() {
    for (name, fault) in [
        ("refused", Fault::Refuse),
        ("reset", Fault::Reset),
        ("black-hole", Fault::BlackHole),
        ("malformed", Fault::Malformed),
    ] {
        // 1 ms per reply and 16 in flight per partition: the run lasts a few hundred ms,
        // and the fault strikes established connections in the middle of it.
        let healthy_but_slow = FaultPlan {
            latency: Latency::Fixed(Duration::from_millis(1)),
            ..FaultPlan::healthy()
        };
        let s = std::sync::Arc::new(server(healthy_but_slow));
        // The fault strikes once the job has got a quarter of its answers (so lookups are in
        // flight when it starts, whatever the machine's load), and lasts 300 ms: more than
        // the record timeout, so a black hole is noticed too.
        let switch = {
            let s = s.clone();
            std::thread::spawn(move || {
                let before = s.stats().commands;
                let started = std::time::Instant::now();
                while s.stats().commands < before + LONG / 4 {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "the job never got going"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                s.set_faults(FaultPlan {
                    fault,
                    ..healthy_but_slow
                });
                std::thread::sleep(Duration::from_millis(300));
                s.set_faults(healthy_but_slow);
            })
        };
        let started = std::time::Instant::now();
        let r = run_n(&s, name, OrderMode::Unordered, 100, LONG, 16);
        eprintln!(
            "{name}: {} ok, {} failed in {:?}",
            r.outputs.len(),
            r.failed.len(),
            started.elapsed()
        );
        switch.join().unwrap();
        check_n(name, &r, LONG);
        assert!(
            !r.failed.is_empty(),
            "{name}: the fault must fail some lookups"
        );
        assert!(
            !r.outputs.is_empty(),
            "{name}: lookups before and after the fault succeed"
        );
        // Recovery once the fault clears: a fresh run is clean. The timeout is generous: this
        // checks that the fault is gone, not latency, on a machine that may be overloaded.
        let healed = run(&s, &format!("{name}-healed"), OrderMode::Ordered, 10_000);
        check_exactly_once(name, &healed);
        assert!(
            healed.failed.is_empty(),
            "{name}: lookups recover after the fault, yet {} failed, e.g. {:?}",
            healed.failed.len(),
            healed.failed.iter().take(3).collect::<Vec<_>>()
        );
        match std::sync::Arc::try_unwrap(s) {
            Ok(s) => s.shutdown().unwrap(),
            Err(_) => panic!("server still shared"),
        }
    }
}

#[test]
fn a_flapping_server_loses_nothing_and_retries_recover_most_records() {
    let s = server(FaultPlan {
        fault: Fault::Reset,
        latency: Latency::None,
        flap: Some(Flap {
            healthy: Duration::from_millis(40),
            faulty: Duration::from_millis(10),
        }),
    });
    for mode in [OrderMode::Ordered, OrderMode::Unordered] {
        let r = run(&s, "flapping", mode, 1_000);
        check_exactly_once("flapping", &r);
        assert!(
            r.outputs.len() as u64 > RECORDS / 2,
            "retries bring most records through: {} of {RECORDS}",
            r.outputs.len()
        );
    }
    s.shutdown().unwrap();
}
