//! Nothing lost, whatever the command line, the disk or the signal: each way a user could
//! lose or mix data with `ringwait enrich`, run as a user would, with the bytes of every
//! file involved checked afterwards.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringwait"));
    c.stdin(Stdio::null());
    c
}

fn ringwait(args: &[&str]) -> Output {
    bin().args(args).output().expect("run ringwait")
}

fn spawn(args: &[&str]) -> Child {
    bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringwait")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

struct Dir(PathBuf);
impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("rw-safety-{name}-{}", std::process::id()));
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

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            all.extend(snapshot(&p));
        } else {
            all.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    all
}

/// `n` lines `{"id":i,"key":"k:<i % 1000>"}`; line `fail_at` (0-based), if any, has a key
/// whose lookup fails (the built-in store holds a hash there: WRONGTYPE).
fn write_input(path: &str, n: u64, fail_at: Option<u64>, tag: &str) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        let key = if Some(i) == fail_at {
            "h:5".to_string()
        } else {
            format!("k:{}", i % 1000)
        };
        writeln!(f, r#"{{"id":{i},"key":"{key}","t":"{tag}"}}"#).unwrap();
    }
}

/// The `id`s of a JSON Lines file; every line must be a whole JSON object.
fn ids(path: &str) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}"));
            v["id"].as_u64().unwrap()
        })
        .collect()
}

const PRECIOUS: &str = "precious 1\nprecious 2\n";

#[test]
fn output_equal_to_input_is_refused_under_any_name() {
    let d = Dir::new("same");
    let input = d.path("a.jsonl");
    write_input(&input, 1000, None, "a");
    std::os::unix::fs::symlink(&input, d.path("link.jsonl")).unwrap();
    std::fs::hard_link(&input, d.path("hard.jsonl")).unwrap();
    let before = snapshot(&d.0);
    for output in ["a.jsonl", "link.jsonl", "hard.jsonl"] {
        let o = ringwait(&["enrich", "--input", &input, "--output", &d.path(output)]);
        assert!(!o.status.success(), "{output}");
        assert!(
            stderr(&o).contains("is the same file as --input"),
            "{output}: {}",
            stderr(&o)
        );
        assert_eq!(snapshot(&d.0), before, "{output}: no file changed");
    }
}

#[test]
fn a_failed_start_leaves_the_existing_output_untouched() {
    let d = Dir::new("failed-start");
    let input = d.path("in.jsonl");
    write_input(&input, 100, None, "a");
    let out = d.path("precious.jsonl");
    std::fs::write(&out, PRECIOUS).unwrap();
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let before = snapshot(&d.0);
    let cases: [(&[&str], &str); 5] = [
        (&["--input", &d.path("missing.jsonl")], "--input"),
        (
            &["--input", &input, "--lookup", &dead],
            "could not be reached",
        ),
        (&["--input", &input, "--capacity", "0"], "--capacity"),
        (
            &["--input", &input, "--report", &d.path("no/such/dir/r.svg")],
            "--report",
        ),
        (
            &[
                "--input",
                &input,
                "--on-error",
                &format!("side-output:{}", d.path("nodir/s")),
            ],
            "side-output",
        ),
    ];
    for (extra, says) in cases {
        let mut args = vec!["enrich", "--output", &out];
        args.extend_from_slice(extra);
        let o = ringwait(&args);
        assert!(!o.status.success(), "{extra:?}");
        assert!(stderr(&o).contains(says), "{extra:?}: {}", stderr(&o));
        assert_eq!(
            snapshot(&d.0),
            before,
            "{extra:?}: no file changed or appeared"
        );
    }
}

#[test]
fn side_output_on_the_output_and_files_inside_the_checkpoint_dir_are_refused() {
    let d = Dir::new("side");
    let input = d.path("in.jsonl");
    write_input(&input, 1000, None, "a");
    let out = d.path("x.jsonl");
    std::fs::write(&out, PRECIOUS).unwrap();
    std::fs::create_dir(d.path("ck")).unwrap();
    let before = snapshot(&d.0);
    let o = ringwait(&[
        "enrich",
        "--input",
        &input,
        "--output",
        &out,
        "--on-error",
        &format!("side-output:{out}"),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("same file as --output"),
        "{}",
        stderr(&o)
    );
    let o = ringwait(&[
        "enrich",
        "--input",
        &input,
        "--output",
        &d.path("ck/out.jsonl"),
        "--checkpoint-dir",
        &d.path("ck"),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("inside --checkpoint-dir"),
        "{}",
        stderr(&o)
    );
    let o = ringwait(&[
        "enrich",
        "--input",
        &input,
        "--output",
        &d.path("o2.jsonl"),
        "--checkpoint-dir",
        &out,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--checkpoint-dir"), "{}", stderr(&o));
    assert_eq!(snapshot(&d.0), before);
}

/// Runs a checkpointed job over `input` that fails at line 30,001 (so a checkpoint exists).
fn failed_checkpointed_run(d: &Dir, input: &str) -> Output {
    ringwait(&[
        "enrich",
        "--input",
        input,
        "--output",
        &d.path("out.jsonl"),
        "--checkpoint-dir",
        &d.path("ck"),
        "--checkpoint-interval-ms",
        "5",
        "--partitions",
        "1",
        "--no-pin",
        "--quiet",
    ])
}

#[test]
fn a_checkpoint_refuses_another_input_and_a_missing_commit_file() {
    let d = Dir::new("other-input");
    let (a, b, c) = (d.path("a.jsonl"), d.path("b.jsonl"), d.path("c.jsonl"));
    write_input(&a, 60_000, Some(30_000), "a");
    write_input(&b, 60_000, Some(30_000), "b"); // same length, other bytes
    write_input(&c, 70_000, Some(30_000), "c");
    let o = failed_checkpointed_run(&d, &a);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("line 30001"), "{}", stderr(&o));
    let before = snapshot(&d.0);
    // The same path with other contents of the same length.
    std::fs::rename(&a, d.path("a.saved")).unwrap();
    std::fs::copy(&b, &a).unwrap();
    let o = failed_checkpointed_run(&d, &a);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("holds the checkpoint of another job"), "{err}");
    assert!(
        err.contains("the hash of the input's first 64 KiB"),
        "{err}"
    );
    assert!(err.contains("rm -r"), "says how to start over: {err}");
    // Another path, another length.
    let o = failed_checkpointed_run(&d, &c);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("--input"), "{err}");
    assert!(err.contains("the input's size in bytes 2"), "{err}");
    std::fs::remove_file(&a).unwrap();
    std::fs::rename(d.path("a.saved"), &a).unwrap();
    let mut after = snapshot(&d.0);
    after.remove(&d.0.join("b.jsonl"));
    after.remove(&d.0.join("c.jsonl"));
    let mut want = before.clone();
    want.remove(&d.0.join("b.jsonl"));
    want.remove(&d.0.join("c.jsonl"));
    assert_eq!(after, want, "the refused runs changed nothing");

    // The commit file deleted next to the job record and the partition's snapshot.
    let commit = d.0.join("ck/op-0-p4294967295.snap");
    assert!(commit.exists());
    std::fs::remove_file(&commit).unwrap();
    let o = failed_checkpointed_run(&d, &a);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("commit file"), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing"), "{}", stderr(&o));
}

#[test]
fn a_write_error_names_the_path_and_the_os_error() {
    let d = Dir::new("enospc");
    let input = d.path("in.jsonl");
    write_input(&input, 5000, None, "a");
    let o = ringwait(&[
        "enrich",
        "--input",
        &input,
        "--output",
        "/dev/full",
        "--quiet",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("/dev/full"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
}

/// A checkpointed job whose output disk fills: the job fails naming the file and ENOSPC, the
/// last commit stays, and once there is room the same command finishes exactly once. Needs a
/// small tmpfs (root); where one cannot be mounted the test says so and checks the rest with
/// `/dev/full` above.
#[test]
fn a_full_disk_fails_the_checkpoint_and_keeps_the_last_commit() {
    let d = Dir::new("tmpfs");
    let mnt = d.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", &mnt])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED a_full_disk_fails_the_checkpoint_and_keeps_the_last_commit: cannot mount a tmpfs here (not root?)");
        return;
    }
    let unmount = Unmount(mnt.clone());
    let input = d.path("in.jsonl");
    write_input(&input, 40_000, None, "a"); // ~4 MB of output into 1 MB
    let out = format!("{mnt}/out.jsonl");
    let args = [
        "enrich",
        "--input",
        &input,
        "--output",
        &out,
        "--checkpoint-dir",
        &d.path("ck"),
        "--checkpoint-interval-ms",
        "5",
        "--partitions",
        "1",
        "--no-pin",
        "--quiet",
    ];
    let o = ringwait(&args);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains(&format!("{out}.ringwait-partial")), "{err}");
    let status = Command::new("mount")
        .args(["-o", "remount,size=64m", &mnt])
        .status()
        .unwrap();
    assert!(status.success());
    let o = ringwait(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resumed from checkpoint"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        ids(&out),
        (0..40_000).collect::<Vec<_>>(),
        "exactly once, in order"
    );
    drop(unmount);
}

struct Unmount(String);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    std::thread::sleep(Duration::from_millis(1200));
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
    let partial = format!("{out}.ringwait-partial");
    assert!(err.contains(&partial), "{err}");
    let got = ids(&partial);
    assert_eq!(
        got,
        (0..got.len() as u64).collect::<Vec<_>>(),
        "an in-order prefix"
    );
    assert!(!Path::new(&out).exists());
}

fn wait_at_most(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("ringwait did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `path` holds at least `bytes`.
fn wait_for_bytes(path: &str, bytes: u64) {
    let started = Instant::now();
    while std::fs::metadata(path).map_or(0, |m| m.len()) < bytes {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{path} never grew"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// SIGTERM: intake stops, what was taken is written, the summary says how far it got, the
/// exit code is 143, and the output's name is untouched (the run is incomplete).
#[test]
fn sigterm_stops_with_a_summary_and_keeps_the_output_name_untouched() {
    let d = Dir::new("sigterm");
    let out = d.path("out.jsonl");
    std::fs::write(&out, PRECIOUS).unwrap();
    let partial = format!("{out}.ringwait-partial");
    let mut job = spawn(&[
        "enrich",
        "--records",
        "500000000",
        "--builtin-keys",
        "1000",
        "--output",
        &out,
        "--partitions",
        "1",
        "--no-pin",
        "--quiet",
    ]);
    wait_for_bytes(&partial, 100_000);
    signal(&job, libc::SIGTERM);
    let status = wait_at_most(&mut job, Duration::from_secs(20));
    let err = stderr_of(&mut job);
    assert_eq!(status.code(), Some(143), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), PRECIOUS);
    let got = ids(&partial);
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
    assert!(
        err.contains(&format!("ringwait enrich: {} records", got.len())),
        "the summary counts what was written: {err}"
    );
    assert!(err.contains("stopped on request"), "{err}");
    assert!(err.contains(&partial), "{err}");
}

/// SIGINT on a checkpointed job: a final checkpoint, exit 130; the same command resumes and
/// finishes; the summaries add up, and the output holds every record once, in order.
#[test]
fn sigint_takes_a_final_checkpoint_and_the_rerun_adds_up() {
    for mode in ["ordered", "unordered"] {
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
            while !done.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) if first => {
                        first = false;
                        s.set_nonblocking(false).unwrap();
                        let mut buf = [0u8; 64];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(b"+PONG\r\n");
                    }
                    Ok((s, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        if behaviour == Behaviour::Silent {
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
        writeln!(stdin, "{}", chunk.join("\n")).unwrap();
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
