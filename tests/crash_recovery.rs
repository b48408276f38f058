//! Exactly-once through crashes (SPEC S12, section 5): a supervisor runs the real `ringwait
//! enrich` against a real Redis with `--checkpoint-dir`, SIGKILLs it at random moments — often
//! within a few milliseconds of a restart, i.e. during recovery — and restarts it until it
//! finishes. An independent checker then reads the finished output against the input: lost 0,
//! duplicated 0, out of order 0 (ordered mode: input order; key-ordered mode: input order among
//! the records of each key, every key repeating 40 times), every value right.
//!
//! CI tier: at least 50 kills per mode (ordered, unordered, key-ordered), 2 partitions. `RINGWAIT_LONG_TESTS=1`
//! runs 300 per mode. `RINGWAIT_CRASH_SEED=N` replays a run; the seed is printed on failure.

mod common;
mod job_support;
mod tier;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use job_support::{crash_seed, Rng};
use ringwait::snapshot::SnapshotStore;
use serde_json::Value;

const KEYS: u64 = 500;

struct Job {
    dir: PathBuf,
    input: PathBuf,
    output: PathBuf,
    log: PathBuf,
    lines: u64,
}

impl Job {
    fn new(root: &Path, name: &str, lines: u64) -> Job {
        let dir = root.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.jsonl");
        let mut text = String::with_capacity(lines as usize * 40);
        for i in 0..lines {
            text.push_str(&format!(
                "{{\"id\":{i},\"key\":\"k:{}\",\"pad\":\"{}\"}}\n",
                (i * 7919) % KEYS,
                "x".repeat((i % 13) as usize)
            ));
        }
        std::fs::write(&input, text).unwrap();
        Job {
            output: dir.join("out.jsonl"),
            log: dir.join("stderr.log"),
            dir,
            input,
            lines,
        }
    }

    fn spawn(&self, redis: &str, mode: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_ringwait"))
            .args([
                "enrich",
                "--input",
                self.input.to_str().unwrap(),
                "--output",
                self.output.to_str().unwrap(),
                "--lookup",
                redis,
                "--mode",
                mode,
                "--partitions",
                "2",
                "--capacity",
                "200",
                "--checkpoint-dir",
                self.dir.join("ckpt").to_str().unwrap(),
                "--checkpoint-interval-ms",
                "20",
                "--no-pin",
                "--quiet",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ringwait")
    }

    /// The epoch of the job's latest commit (the writer's snapshot file: operator 0, the
    /// writer's partition `u32::MAX`), 0 before the first.
    fn committed_epoch(&self) -> u64 {
        SnapshotStore::recover(self.dir.join("ckpt"), 0, u32::MAX)
            .ok()
            .flatten()
            .map_or(0, |found| found.meta.epoch)
    }

    /// The independent checker: the output against the input, with the order `mode` promises.
    fn check(&self, mode: &str, context: &str) {
        let text = std::fs::read_to_string(&self.output).unwrap();
        let mut seen = vec![0u32; self.lines as usize];
        let (mut out_of_order, mut last): (u64, Option<u64>) = (0, None);
        let (mut key_out_of_order, mut last_of_key) = (0u64, vec![None::<u64>; KEYS as usize]);
        for (n, line) in text.lines().enumerate() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "{context}: output line {} is not JSON ({e}): {line:?}",
                    n + 1
                )
            });
            let id = v["id"].as_u64().expect("id");
            assert!(id < self.lines, "{context}: unknown id {id}");
            seen[id as usize] += 1;
            if last.is_some_and(|l| id <= l) {
                out_of_order += 1;
            }
            last = Some(id);
            let key = (id * 7919) % KEYS;
            if last_of_key[key as usize].is_some_and(|l| id <= l) {
                key_out_of_order += 1;
            }
            last_of_key[key as usize] = Some(id);
            assert_eq!(
                v["key"],
                Value::String(format!("k:{key}")),
                "{context}: record {id}"
            );
            let want = String::from_utf8_lossy(&ringwait::dataset::value_of(key)).into_owned();
            assert_eq!(
                v["value"],
                Value::String(want),
                "{context}: value of record {id}"
            );
        }
        let lost = seen.iter().filter(|c| **c == 0).count();
        let duplicated: u32 = seen.iter().map(|c| c.saturating_sub(1)).sum();
        let out_of_order = match mode {
            "ordered" => out_of_order,
            "key-ordered" => key_out_of_order,
            _ => 0,
        };
        assert!(
            lost == 0 && duplicated == 0 && out_of_order == 0,
            "{context}: lost {lost}, duplicated {duplicated}, out of order {out_of_order}; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

/// Polls `child` every 2 ms until `done()` holds (`None`), it exits (`Some(status)`), or
/// `limit` passes (`None`).
fn wait_for(
    child: &mut Child,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Option<std::process::ExitStatus> {
    let give_up = Instant::now() + limit;
    while !done() && Instant::now() < give_up {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn crash_loop(mode: &str, kills_wanted: u64) {
    let seed = crash_seed();
    let mut rng = Rng(seed);
    let redis = RedisServer::start();
    redis.populate(KEYS);
    let url = format!("redis://{}", redis.addr());
    let root = std::env::temp_dir().join(format!("rw-crash-{}-{mode}", std::process::id()));
    let started = Instant::now();
    let (mut kills, mut jobs, mut during_recovery, mut resumed) = (0u64, 0u64, 0u64, 0u64);
    let mut after_commit = 0u64; // kills of a run that had committed: each must be resumed
    while kills < kills_wanted {
        jobs += 1;
        let job = Job::new(&root, &format!("job{jobs}"), 20_000);
        let mut runs = 0u64;
        loop {
            runs += 1;
            let context = format!(
                "seed {seed} (RINGWAIT_CRASH_SEED={seed}), mode {mode}, job {jobs}, run {runs}"
            );
            let epoch_at_start = job.committed_epoch();
            let mut child = job.spawn(&url, mode);
            // A third of the kills come within 40 ms of the start: during recovery. The rest
            // come up to 300 ms after this run's first commit, so that the next run resumes
            // from a checkpoint however slowly this machine starts a (debug) binary.
            let short = rng.below(3) == 0;
            let mut exited = None;
            if !short {
                exited = wait_for(&mut child, Duration::from_secs(30), || {
                    job.committed_epoch() > epoch_at_start
                });
            }
            let delay = if short { rng.below(40) } else { rng.below(300) };
            if exited.is_none() {
                exited = wait_for(&mut child, Duration::from_millis(delay), || false);
            }
            if kills >= kills_wanted && exited.is_none() {
                // Enough kills: let this run finish (20000 lines take a few seconds).
                exited = wait_for(&mut child, Duration::from_secs(60), || false);
                if exited.is_none() {
                    let _ = child.kill();
                    panic!(
                        "{context}: the run did not finish within 60 s; log:\n{}",
                        std::fs::read_to_string(&job.log).unwrap_or_default()
                    );
                }
            }
            match exited {
                Some(status) => {
                    assert!(
                        status.success(),
                        "{context}: ringwait failed ({status}); log:\n{}",
                        std::fs::read_to_string(&job.log).unwrap_or_default()
                    );
                    job.check(mode, &context);
                    break;
                }
                None => {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                    if job.committed_epoch() > epoch_at_start {
                        after_commit += 1;
                    }
                    if short {
                        during_recovery += 1;
                    }
                }
            }
            assert!(
                runs < 400,
                "{context}: no progress after {runs} runs; log:\n{}",
                std::fs::read_to_string(&job.log).unwrap_or_default()
            );
        }
        let log = std::fs::read_to_string(&job.log).unwrap_or_default();
        // A run killed after its job's last commit (complete, not yet exited) is followed by
        // one that finds the job complete: that restart resumed too.
        resumed += (log.matches("resuming from checkpoint").count()
            + log.matches("this job is already complete").count()) as u64;
        let _ = std::fs::remove_dir_all(&job.dir);
    }
    assert!(
        after_commit > 0 && resumed >= after_commit,
        "seed {seed}: {after_commit} of {kills} kills came after a commit, yet only {resumed} \
         restarts resumed from a checkpoint"
    );
    eprintln!(
        "crash_recovery {mode}: seed {seed}, {kills} SIGKILLs ({during_recovery} within 40 ms of a start), {after_commit} after a commit, {resumed} restarts resumed from a checkpoint, {jobs} job(s) of 20000 lines, lost 0, duplicated 0, out of order 0, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&root);
}

fn kills_wanted() -> u64 {
    tier::size("kills per mode", 50, 300)
}

#[test]
fn ordered_enrich_survives_random_sigkills_exactly_once_in_order() {
    crash_loop("ordered", kills_wanted());
}

#[test]
fn unordered_enrich_survives_random_sigkills_exactly_once() {
    crash_loop("unordered", kills_wanted());
}

#[test]
fn key_ordered_enrich_survives_random_sigkills_exactly_once_in_key_order() {
    crash_loop("key-ordered", kills_wanted());
}
