//! Helpers of the black-box `ringwait enrich` tests: the binary, scratch directories, input
//! files, and waiting on files and processes.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringwait"));
    c.stdin(Stdio::null());
    c
}

pub fn ringwait(args: &[&str]) -> Output {
    bin().args(args).output().expect("run ringwait")
}

pub fn spawn(args: &[&str]) -> Child {
    bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringwait")
}

/// Runs `ringwait args`, which must fail with `says` in its error.
pub fn refused(args: &[&str], says: &str) {
    let o = ringwait(args);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} was not refused: {err}");
    assert!(err.contains(says), "{err}");
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

pub struct Dir(pub PathBuf);
impl Dir {
    pub fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("rw-safety-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    pub fn path(&self, f: &str) -> String {
        self.0.join(f).display().to_string()
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file under `dir` with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
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
pub fn write_input(path: &str, n: u64, fail_at: Option<u64>, tag: &str) {
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
pub fn ids(path: &str) -> Vec<u64> {
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

pub const PRECIOUS: &str = "precious 1\nprecious 2\n";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_at_most(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
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
pub fn wait_for_bytes(path: &str, bytes: u64) {
    let started = Instant::now();
    while std::fs::metadata(path).map_or(0, |m| m.len()) < bytes {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{path} never grew"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Waits until a run without checkpoints wrote `bytes` to its partial file beside `name`
/// (`name.ringwait-partial-<pid>`), and returns that file's path.
pub fn wait_for_partial(d: &Dir, name: &str, bytes: u64) -> String {
    let prefix = format!("{name}.ringwait-partial-");
    let started = Instant::now();
    loop {
        let found = std::fs::read_dir(&d.0)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix));
        if let Some(e) = found {
            let path = e.path().display().to_string();
            wait_for_bytes(&path, bytes);
            return path;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no {prefix}* appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SplitMix64: a small seeded generator, so that a failing crash loop can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A crash loop's seed: `RINGWAIT_CRASH_SEED` to replay one, else the clock.
pub fn crash_seed() -> u64 {
    std::env::var("RINGWAIT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// Starts `ringwait` with `args`, its standard error appended to `log`.
pub fn job_logged(args: &[String], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_ringwait"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start ringwait")
}

/// What a log file holds so far ("" if none).
pub fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Runs the job with `args` again and again: each run lives `life(kills so far)` and is
/// SIGKILLed then (`after_kill` runs next), or, when `life` is `None`, runs to its end,
/// which must be a success. Fails past `limit` in all, or if a last run hangs for 600 s.
/// Returns the kills.
pub fn kill_and_restart(
    args: &[String],
    log: &Path,
    context: &str,
    limit: Duration,
    mut life: impl FnMut(u64) -> Option<Duration>,
    mut after_kill: impl FnMut(),
) -> u64 {
    let (mut kills, started) = (0u64, Instant::now());
    loop {
        assert!(
            started.elapsed() < limit,
            "{context}: not done after {limit:?}; log:\n{}",
            log_of(log)
        );
        let mut child = job_logged(args, log);
        let this_life = life(kills);
        let give_up = Instant::now() + this_life.unwrap_or(Duration::from_secs(600));
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() >= give_up {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        match status {
            // It finished (before its kill, if one was planned).
            Some(s) => {
                assert!(s.success(), "{context}: exited {s}; log:\n{}", log_of(log));
                return kills;
            }
            None => {
                assert!(
                    this_life.is_some(),
                    "{context}: the last run hung; log:\n{}",
                    log_of(log)
                );
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                after_kill();
            }
        }
    }
}
