//! Test support: glommio executors, and real `redis-server` processes (standalone and a
//! 3-node cluster) on free loopback ports, killed on drop.
//!
//! If `redis-server` cannot be found or started the test FAILS, telling to run
//! `scripts/ensure-redis`: these tests are never skipped silently.
#![allow(dead_code)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringwait::resp::{encode_command, Frame, OwnedFrame, Parser};
use ringwait::server::DEFAULT_IO_MEMORY;

/// Generous bound that only prevents hangs.
pub const HANG: Duration = Duration::from_secs(60);

/// Runs `f` on a fresh glommio executor thread and returns its output.
pub fn run<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(DEFAULT_IO_MEMORY)
        .spawn(f)
        .expect("spawn a glommio executor")
        .join()
        .expect("executor ran")
}

/// Waits (yielding to the executor, sleeping 1 ms) until `done()`; panics after [`HANG`].
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not on PATH: run scripts/ensure-redis (installs the Debian package redis-server)")
        })
}

/// Sends one command over a blocking socket and reads its reply.
pub fn call(addr: SocketAddr, args: &[&[u8]]) -> std::io::Result<OwnedFrame> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut cmd = Vec::new();
    encode_command(&mut cmd, args);
    s.write_all(&cmd)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Ok(Some((f, _))) = Parser::default().parse(&buf) {
            return Ok(OwnedFrame::from(f));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends many commands pipelined on one socket; returns the replies.
pub fn pipeline(addr: SocketAddr, commands: &[Vec<Vec<u8>>]) -> Vec<OwnedFrame> {
    let mut s = TcpStream::connect(addr).expect("connect to redis");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut replies = Vec::with_capacity(commands.len());
    for chunk in commands.chunks(10_000) {
        let mut bytes = Vec::new();
        for c in chunk {
            let args: Vec<&[u8]> = c.iter().map(|a| a.as_slice()).collect();
            encode_command(&mut bytes, &args);
        }
        s.write_all(&bytes).unwrap();
        let mut buf = Vec::new();
        let mut got = 0;
        let mut read = [0u8; 65536];
        while got < chunk.len() {
            let n = s.read(&mut read).expect("redis replies");
            assert!(n > 0, "redis closed the connection");
            buf.extend_from_slice(&read[..n]);
            let mut at = 0;
            while let Some((f, used)) = Parser::default().parse(&buf[at..]).expect("valid RESP") {
                replies.push(OwnedFrame::from(f));
                at += used;
                got += 1;
            }
            buf.drain(..at);
        }
    }
    replies
}

/// One `redis-server` process.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    cluster: bool,
    /// Every write is in the append-only file, fsynced, before it is answered; a restart
    /// (even after SIGKILL) keeps the data.
    persistent: bool,
}

impl RedisServer {
    /// Starts a standalone server on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port(), false)
    }

    /// Starts a standalone server that keeps its data through a restart (AOF, fsync always).
    pub fn start_persistent() -> Self {
        Self::spawn(free_port(), false, true)
    }

    /// Starts a server on `port` (cluster-enabled if `cluster`) and waits until it answers.
    pub fn start_on(port: u16, cluster: bool) -> Self {
        Self::spawn(port, cluster, false)
    }

    fn spawn(port: u16, cluster: bool, persistent: bool) -> Self {
        let exe = binary("redis-server");
        let dir =
            std::env::temp_dir().join(format!("ringwait-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a redis work dir");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            if persistent { "yes" } else { "no" },
            "--appendfsync",
            "always",
        ])
        .args([
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", "5000"]);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}): run scripts/ensure-redis")
        });
        let server = RedisServer {
            child: Some(child),
            port,
            dir,
            cluster,
            persistent,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(OwnedFrame::Simple(s)) = call(server.addr(), &[b"PING"]) {
                if s == b"PONG" {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer PING: is it installed? run scripts/ensure-redis"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server and starts a new one on the same port (with the same directory, so
    /// a persistent server comes back with its data).
    pub fn restart(&mut self) {
        self.kill();
        let mut fresh = RedisServer::spawn(self.port, self.cluster, self.persistent);
        self.child = fresh.child.take();
        // `fresh` shares this server's directory: dropping it would delete it.
        std::mem::forget(fresh);
    }

    /// `SET k:i value_of(i)` for `i` in `0..n`, and hashes `h:i` with fields `id` and `v`.
    pub fn populate(&self, n: u64) {
        populate(self.addr(), n, |_| true);
    }
}

/// Writes the built-in server's data set (`k:i`, `h:i`) for the keys `keep` accepts.
pub fn populate(addr: SocketAddr, n: u64, keep: impl Fn(&[u8]) -> bool) {
    let mut commands = Vec::new();
    for i in 0..n {
        let value = ringwait::dataset::value_of(i).to_vec();
        let k = format!("k:{i}").into_bytes();
        if keep(&k) {
            commands.push(vec![b"SET".to_vec(), k, value.clone()]);
        }
        let h = format!("h:{i}").into_bytes();
        if keep(&h) {
            commands.push(vec![
                b"HSET".to_vec(),
                h,
                b"id".to_vec(),
                i.to_string().into_bytes(),
                b"v".to_vec(),
                value,
            ]);
        }
    }
    for r in pipeline(addr, &commands) {
        assert!(
            !matches!(r, OwnedFrame::Error(_)),
            "populating failed: {r:?}"
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 3-master Redis Cluster on loopback.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_on(free_port(), true))
            .collect();
        let mut cli = Command::new(binary("redis-cli"));
        cli.arg("--cluster").arg("create");
        for n in &nodes {
            cli.arg(n.addr().to_string());
        }
        let out = cli
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create (run scripts/ensure-redis)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &cluster.nodes {
            loop {
                let ok = matches!(call(n.addr(), &[b"CLUSTER", b"INFO"]),
                    Ok(OwnedFrame::Bulk(info)) if String::from_utf8_lossy(&info).contains("cluster_state:ok"));
                if ok {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster did not become ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr()).collect()
    }

    /// The node id of a node (`CLUSTER MYID`).
    pub fn node_id(&self, addr: SocketAddr) -> Vec<u8> {
        match call(addr, &[b"CLUSTER", b"MYID"]) {
            Ok(OwnedFrame::Bulk(id)) => id,
            other => panic!("CLUSTER MYID: {other:?}"),
        }
    }

    /// The master of every slot, from `CLUSTER SLOTS` of the first node.
    pub fn slot_owners(&self) -> Vec<SocketAddr> {
        let mut owners = vec![SocketAddr::from(([0, 0, 0, 0], 0)); 16384];
        for (lo, hi, addr) in self.ranges() {
            for slot in lo..=hi {
                owners[slot as usize] = addr;
            }
        }
        owners
    }

    /// Writes the built-in data set (`k:i`, `h:i` for `i < n`), each key on its master.
    pub fn populate(&self, n: u64) {
        let owners = self.slot_owners();
        for node in &self.nodes {
            let addr = node.addr();
            populate(addr, n, |k| {
                owners[usize::from(ringwait::lookup::key_slot(k))] == addr
            });
        }
    }

    /// The address of the master serving `slot`.
    pub fn owner(&self, slot: u16) -> SocketAddr {
        self.slot_owners()[usize::from(slot)]
    }

    /// `(first slot, last slot, master)` from `CLUSTER SLOTS` of the first node.
    pub fn ranges(&self) -> Vec<(i64, i64, SocketAddr)> {
        let Ok(OwnedFrame::Array(ranges)) = call(self.nodes[0].addr(), &[b"CLUSTER", b"SLOTS"])
        else {
            panic!("CLUSTER SLOTS failed");
        };
        let mut out = Vec::new();
        for r in ranges {
            let OwnedFrame::Array(r) = r else { continue };
            let (OwnedFrame::Integer(lo), OwnedFrame::Integer(hi), OwnedFrame::Array(master)) =
                (&r[0], &r[1], &r[2])
            else {
                continue;
            };
            let (OwnedFrame::Bulk(ip), OwnedFrame::Integer(port)) = (&master[0], &master[1]) else {
                continue;
            };
            let addr = format!("{}:{port}", String::from_utf8_lossy(ip))
                .parse()
                .unwrap();
            out.push((*lo, *hi, addr));
        }
        out
    }
}

/// Whether a frame parsed from bytes is an error (helper for assertions).
pub fn is_error(f: &Frame<'_>) -> bool {
    matches!(f, Frame::Error(_))
}
