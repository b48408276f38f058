//! How `ringwait enrich` stops: at the first failure under `--on-error fail`, on SIGINT and
//! SIGTERM (a summary, a final checkpoint, 130/143), at once on a second signal, on a quiet
//! pipe; and how it treats a dead store under `skip` (a breaker, not a hammer).

mod job_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use job_support::*;

/// `ringwait serve` on a free port, killed on drop.
struct Store(Child, u16);
impl Store {
    fn start(extra: &[&str]) -> Store {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["serve", "--listen", &listen, "--keys", "1000"];
        args.extend_from_slice(extra);
        let child = bin()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(&listen).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "serve did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Store(child, port)
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.1)
    }
}
impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--on-error fail` with retries: the store dies mid-run; the first failed record stops
/// intake and the job exits within the record's timeout plus one second (it took 18-52 s
/// when intake went on).
#[test]
fn the_first_failure_under_fail_stops_the_job_within_the_timeout() {
    let d = Dir::new("fail-fast");
    let mut store = Store::start(&[]);
    let out = d.path("out.jsonl");
    let mut job = spawn(&[
        "enrich",
        "--records",
        "500000000",
        "--builtin-keys",
        "1000",
        "--output",
        &out,
        "--lookup",
        &store.url(),
        "--retries",
        "3",
        "--timeout-ms",
        "1000",
        "--partitions",
        "2",
        "--no-pin",
        "--quiet",
    ]);
    // Let it run a while against the live store, then kill the store.
    let partial = wait_for_partial(&d, "out.jsonl", 100_000);
    std::thread::sleep(Duration::from_millis(200));
    store.0.kill().unwrap();
    let killed = Instant::now();
    let status = wait_at_most(&mut job, Duration::from_secs(30));
    let took = killed.elapsed();
    let err = stderr_of(&mut job);
    assert!(!status.success());
    assert!(err.contains("lookup failed"), "{err}");
    assert!(
        took < Duration::from_millis(1000 + 1000 + 1500),
        "exit {took:?} after the store died (timeout 1 s + 1 s, and 1.5 s for a loaded machine)"
    );
    assert!(err.contains(&partial), "{err}");
    let got = ids(&partial);
    assert_eq!(
        got,
        (0..got.len() as u64).collect::<Vec<_>>(),
        "an in-order prefix"
    );
    assert!(!Path::new(&out).exists());
}

/// SIGTERM: intake stops, everything taken is written, the summary says how far it got,
/// the exit code is 143, and the output's name is untouched (the run is incomplete). With
/// two partitions in ordered mode the output is still a gap-free prefix of the input.
#[test]
fn sigterm_stops_with_a_summary_and_keeps_the_output_name_untouched() {
    for (partitions, mode) in [("1", "ordered"), ("2", "ordered"), ("2", "unordered")] {
        let d = Dir::new(&format!("sigterm-{partitions}-{mode}"));
        let out = d.path("out.jsonl");
        std::fs::write(&out, PRECIOUS).unwrap();
        let side = format!("side-output:{}", d.path("side.jsonl"));
        let mut job = spawn(&[
            "enrich",
            "--records",
            "500000000",
            "--builtin-keys",
            "1000",
            "--output",
            &out,
            "--on-error",
            &side,
            "--mode",
            mode,
            "--partitions",
            partitions,
            "--no-pin",
            "--quiet",
        ]);
        let partial = wait_for_partial(&d, "out.jsonl", 100_000);
        signal(&job, libc::SIGTERM);
        let status = wait_at_most(&mut job, Duration::from_secs(20));
        let err = stderr_of(&mut job);
        let case = format!("{partitions} x {mode}");
        assert_eq!(status.code(), Some(143), "{case}: {err}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), PRECIOUS, "{case}");
        let mut got = ids(&partial);
        if mode != "ordered" {
            got.sort();
        }
        assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>(), "{case}");
        assert!(
            err.contains(&format!("ringwait enrich: {} records", got.len())),
            "{case}: the summary counts what was written: {err}"
        );
        assert!(err.contains("stopped on request"), "{case}: {err}");
        assert!(err.contains(&partial), "{case}: {err}");
        let side_partial = format!("side.jsonl.ringwait-partial-{}", job.id());
        assert!(
            err.contains(&format!(
                "the side output so far is in {}",
                d.path(&side_partial)
            )),
            "{case}: {err}"
        );
    }
}

/// SIGINT on a checkpointed job: a final checkpoint, exit 130; the same command resumes and
/// finishes; the summaries add up, and the output holds every record once, in order.
#[test]
fn sigint_takes_a_final_checkpoint_and_the_rerun_adds_up() {
    for mode in ["ordered", "unordered", "key-ordered"] {
        let d = Dir::new(&format!("sigint-{mode}"));
        let out = d.path("out.jsonl");
        let total = 400_000u64;
        let records = total.to_string();
        let ck = d.path("ck");
        let args = [
            "enrich",
            "--records",
            &records,
            "--builtin-keys",
            "1000",
            "--output",
            &out,
            "--mode",
            mode,
            "--checkpoint-dir",
            &ck,
            "--checkpoint-interval-ms",
            "50",
            "--partitions",
            "2",
            "--no-pin",
            "--quiet",
        ];
        let mut job = spawn(&args);
        wait_for_bytes(&format!("{out}.ringwait-partial"), 200_000);
        signal(&job, libc::SIGINT);
        let status = wait_at_most(&mut job, Duration::from_secs(30));
        let err = stderr_of(&mut job);
        assert_eq!(status.code(), Some(130), "{mode}: {err}");
        assert!(err.contains("the same command resumes"), "{mode}: {err}");
        let first = count_in_summary(&err);
        assert!(first > 0 && first < total, "{mode}: {err}");
        let o = ringwait(&args);
        assert!(o.status.success(), "{mode}: {}", stderr(&o));
        let second = count_in_summary(&stderr(&o));
        let sum = format!("{first} + {second} = {total} records for this job");
        assert!(
            stderr(&o).contains(&sum),
            "{mode}: want {sum:?} in {}",
            stderr(&o)
        );
        let mut got = ids(&out);
        if mode != "ordered" {
            got.sort();
        }
        assert_eq!(got, (0..total).collect::<Vec<_>>(), "{mode}");
        let o = ringwait(&args);
        assert!(o.status.success());
        assert!(stderr(&o).contains("already complete"), "{}", stderr(&o));
    }
}

/// The `N` of "ringwait enrich: N records in".
fn count_in_summary(err: &str) -> u64 {
    let line = err
        .lines()
        .find(|l| l.starts_with("ringwait enrich: ") && l.contains(" records in "))
        .unwrap_or_else(|| panic!("no summary in {err}"));
    line["ringwait enrich: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A second signal exits at once, even while records wait on a store that never answers
/// (the first one waits for them, up to their 20 s timeout).
#[test]
fn a_second_signal_exits_at_once() {
    let d = Dir::new("second-signal");
    let store = FakeStore::start(Behaviour::Silent);
    let mut job = spawn(&[
        "enrich",
        "--records",
        "1000",
        "--output",
        &d.path("out.jsonl"),
        "--lookup",
        &format!("redis://127.0.0.1:{}", store.port),
        "--timeout-ms",
        "20000",
        "--partitions",
        "1",
        "--no-pin",
        "--quiet",
    ]);
    let started = Instant::now();
    while store.accepted.load(Ordering::Relaxed) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the job never connected"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(&job, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        job.try_wait().unwrap().is_none(),
        "the first signal waits for the records in flight"
    );
    signal(&job, libc::SIGTERM);
    let sent = Instant::now();
    let status = wait_at_most(&mut job, Duration::from_secs(20));
    assert_eq!(status.code(), Some(143));
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "{:?}",
        sent.elapsed()
    );
}

/// What a [`FakeStore`] does with the connections after the job's start-up probe.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Accept and close at once.
    Drop,
    /// Accept and never answer.
    Silent,
}

/// A fake store: it answers the job's start-up PING, then treats every later connection as
/// `behaviour` says, counting them.
struct FakeStore {
    port: u16,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl FakeStore {
    fn start(behaviour: Behaviour) -> FakeStore {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, done) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut first = true;
            let mut held = Vec::new();
            let mut since = std::time::Instant::now();
            while !done.load(Ordering::Relaxed) {
                if behaviour == Behaviour::Drop
                    && !held.is_empty()
                    && since.elapsed() > Duration::from_millis(300)
                {
                    held.clear();
                }
                if held.is_empty() {
                    since = std::time::Instant::now();
                }
                match listener.accept() {
                    Ok((mut s, _)) if first => {
                        first = false;
                        s.set_nonblocking(false).unwrap();
                        let mut buf = [0u8; 64];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(b"+PONG\r\n");
                    }
                    Ok((s, _)) => {
                        let n = count.fetch_add(1, Ordering::Relaxed);
                        // The partition's first connection lives a little, so that the job
                        // starts (a store gone before the job connects fails the start).
                        if behaviour == Behaviour::Silent || n == 0 {
                            held.push(s);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        FakeStore {
            port,
            accepted,
            stop,
        }
    }
}

impl Drop for FakeStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// With `--on-error skip` and a store that drops every connection, records fail at once
/// (each one accounted for as skipped), and the store is probed with a backoff that doubles
/// to one attempt a second rather than hammered (it was every 5 ms: a dropped connection
/// counted as a success and reset the backoff).
#[test]
fn a_dead_store_is_probed_with_a_growing_pause_not_hammered() {
    let d = Dir::new("breaker");
    let store = FakeStore::start(Behaviour::Drop);
    let input = d.path("in.jsonl");
    write_input(&input, 3000, None, "a");
    // A stdin-like slow feed: 3000 records over ~3 s keeps the job alive long enough.
    let mut job = bin()
        .args([
            "enrich",
            "--input",
            "-",
            "--output",
            &d.path("out.jsonl"),
            "--lookup",
            &format!("redis://127.0.0.1:{}", store.port),
            "--on-error",
            "skip",
            "--partitions",
            "1",
            "--no-pin",
            "--quiet",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = std::fs::read_to_string(&input).unwrap();
    let mut stdin = job.stdin.take().unwrap();
    let started = Instant::now();
    for chunk in text.lines().collect::<Vec<_>>().chunks(10) {
        if let Err(e) = writeln!(stdin, "{}", chunk.join("\n")) {
            let _ = job.kill();
            panic!("the job stopped reading ({e}): {}", stderr_of(&mut job));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(stdin);
    let status = wait_at_most(&mut job, Duration::from_secs(60));
    let elapsed = started.elapsed().as_secs_f64();
    let err = stderr_of(&mut job);
    assert!(status.success(), "{err}");
    assert!(
        err.contains("skipped 3000"),
        "every record accounted for: {err}"
    );
    let attempts = store.accepted.load(Ordering::Relaxed);
    // 5, 10, 20, ... 640 ms, then 1 s: about 8 + (elapsed - 1.3) attempts.
    assert!(
        (attempts as f64) <= 10.0 + elapsed,
        "{attempts} connection attempts in {elapsed:.1} s"
    );
}

/// A job reading a pipe that stays open and quiet still stops: on SIGTERM (exit 143, the
/// lines read so far written) and on a failed record under `--on-error fail`.
#[test]
fn a_job_waiting_on_a_quiet_pipe_stops_on_a_signal_and_on_a_failure() {
    let d = Dir::new("quiet-pipe");
    for (case, fail) in [("signal", false), ("failure", true)] {
        let out = d.path(&format!("{case}.jsonl"));
        let mut job = bin()
            .args([
                "enrich",
                "--input",
                "-",
                "--output",
                &out,
                "--partitions",
                "1",
                "--no-pin",
                "--quiet",
            ])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = job.stdin.take().unwrap();
        for i in 0..100 {
            let key = if fail && i == 99 { "h:5" } else { "k:1" };
            writeln!(stdin, r#"{{"id":{i},"key":"{key}"}}"#).unwrap();
        }
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        if !fail {
            signal(&job, libc::SIGTERM);
        }
        let status = wait_at_most(&mut job, Duration::from_secs(10));
        let err = stderr_of(&mut job);
        drop(stdin);
        if fail {
            assert_eq!(status.code(), Some(1), "{case}: {err}");
            assert!(err.contains("line 100"), "{case}: {err}");
        } else {
            assert_eq!(status.code(), Some(143), "{case}: {err}");
            assert!(
                err.contains("ringwait enrich: 100 records"),
                "{case}: {err}"
            );
        }
    }
}

/// A FIFO as `--input`: the run does not take its writer's data away before it starts
/// (the check does not open it), reads it to the end, and stops on SIGTERM while the FIFO
/// has no writer yet (opening does not block).
#[test]
fn a_fifo_input_is_read_whole_and_a_stop_does_not_wait_for_its_writer() {
    let d = Dir::new("fifo");
    let fifo = d.path("in.fifo");
    let c = std::ffi::CString::new(fifo.clone()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let input = d.path("in.jsonl");
    write_input(&input, 5000, None, "a");
    let out = d.path("out.jsonl");
    // The writer first: it blocks until the run opens the FIFO.
    let (src, dst) = (input.clone(), fifo.clone());
    let writer = std::thread::spawn(move || std::fs::copy(&src, &dst).map(drop));
    std::thread::sleep(Duration::from_millis(200));
    let o = bin()
        .args([
            "enrich", "--input", &fifo, "--output", &out, "--quiet", "--no-pin",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    writer.join().unwrap().expect("the writer was not cut off");
    assert_eq!(ids(&out), (0..5000).collect::<Vec<_>>());

    // No writer at all: SIGTERM ends the run.
    let mut job = spawn(&[
        "enrich",
        "--input",
        &fifo,
        "--output",
        &d.path("o2.jsonl"),
        "--no-pin",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    signal(&job, libc::SIGTERM);
    let status = wait_at_most(&mut job, Duration::from_secs(10));
    assert_eq!(status.code(), Some(143), "{}", stderr_of(&mut job));
}
