//! Crash harness (after sled's): a child process writes epochs in a loop, growing and shrinking
//! its payloads; the parent SIGKILLs it at a random moment (sometimes while it is still opening
//! and recovering), then checks that recovery gives an epoch the child committed, byte for byte,
//! no older than the last one it reported, and that the next child continues from it.
//!
//! SIGKILL keeps the page cache, so this checks process-crash consistency (ordering, rollback,
//! the lock being released by the kernel), not power loss.

mod snapshot_util;
mod tier;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringwait::snapshot::{SnapshotError, SnapshotStore};
use snapshot_util::*;

const CHILD_ENV: &str = "RINGWAIT_SNAPSHOT_CRASH_CHILD_DIR";

/// Payload length of `epoch`: mostly small, sometimes large enough to grow the file.
fn len_of(epoch: u64) -> usize {
    match epoch % 17 {
        0 => 150_000 + (epoch as usize % 7) * 10_000,
        n if n % 5 == 0 => 20_000,
        n => 100 + n as usize * 97,
    }
}

/// The child: continue from whatever was recovered, commit epochs until killed (or 20 s).
/// The child process of the test below, which runs it (with `--ignored --exact`); not a
/// test of its own.
#[test]
#[ignore = "the child process of sigkill_at_random_moments_...: its parent runs it"]
fn crash_child_writes_epochs_until_killed() {
    let dir =
        std::env::var_os(CHILD_ENV).expect("run only by its parent test, which sets the directory");
    let started = Instant::now();
    let mut store = loop {
        match SnapshotStore::open(&dir, OP, PART, 4096) {
            Ok(s) => break s,
            // The previous child's lock goes away when the kernel reaps it.
            Err(SnapshotError::Locked { .. }) if started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let mut epoch = store.latest().map_or(0, |m| m.epoch);
    while started.elapsed() < Duration::from_secs(20) {
        epoch += 1;
        store
            .write(meta(epoch), &payload(epoch, len_of(epoch)))
            .unwrap();
        println!("committed {epoch}");
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn sigkill_at_random_moments_never_loses_a_reported_epoch_or_returns_a_torn_one() {
    let cycles = tier::size("kill cycles", 25, 300);
    let dir = TempDir::new("crash");
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut last_reported = 0u64;
    let mut progressed = 0;
    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_writes_epochs_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(xorshift(&mut rng) % 40_000));
        child.kill().unwrap();
        child.wait().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let reported = out
            .lines()
            .filter_map(|l| {
                l.split_once("committed ")
                    .and_then(|(_, e)| e.trim().parse::<u64>().ok())
            })
            .max();
        if let Some(r) = reported {
            assert!(
                r > last_reported,
                "cycle {cycle}: child did not continue from {last_reported}"
            );
            last_reported = r;
            progressed += 1;
        }
        match SnapshotStore::recover(dir.path(), OP, PART).unwrap() {
            None => assert_eq!(last_reported, 0, "cycle {cycle}: lost everything"),
            Some(rec) => {
                let e = rec.meta.epoch;
                assert!(
                    e >= last_reported,
                    "cycle {cycle}: recovered {e} < reported {last_reported}"
                );
                assert!(
                    e <= last_reported + 1,
                    "cycle {cycle}: recovered {e}, never written"
                );
                assert_eq!(rec.meta, meta(e), "cycle {cycle}");
                assert!(
                    rec.payload == payload(e, len_of(e)),
                    "cycle {cycle}: torn payload of epoch {e}"
                );
                last_reported = e;
            }
        }
    }
    eprintln!("crash harness: {cycles} kills, {progressed} children made progress, last epoch {last_reported}");
    assert!(
        progressed > 0,
        "no child ever committed: the harness is not testing anything"
    );
}
