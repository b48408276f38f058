//! The built-in server over real sockets, driven by a plain blocking client.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringwait::dataset::value_of;
use ringwait::resp::{encode_command, OwnedFrame, Parser};
use ringwait::server::{BuiltinServer, Fault, FaultPlan, Flap, Latency, ServerConfig};

fn start(keys: u64) -> ringwait::server::ServerHandle {
    BuiltinServer::start(ServerConfig {
        keys,
        ..ServerConfig::default()
    })
    .expect("server starts")
}

fn connect(server: &ringwait::server::ServerHandle) -> TcpStream {
    let s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads exactly `n` replies (failing the test on timeout or close).
fn read_replies(s: &mut TcpStream, n: usize) -> std::io::Result<Vec<OwnedFrame>> {
    let parser = Parser::default();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let mut at = 0;
        while let Some((f, used)) = parser.parse(&buf[at..]).expect("valid RESP") {
            out.push(OwnedFrame::from(f));
            at += used;
        }
        buf.drain(..at);
        if out.len() >= n {
            return Ok(out);
        }
        let got = s.read(&mut chunk)?;
        if got == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..got]);
    }
}

fn send(s: &mut TcpStream, commands: &[&[&[u8]]]) {
    let mut bytes = Vec::new();
    for c in commands {
        encode_command(&mut bytes, c);
    }
    s.write_all(&bytes).unwrap();
}

#[test]
fn pipelined_commands_are_all_answered_in_order() {
    let server = start(1000);
    let mut s = connect(&server);
    let keys: Vec<String> = (0..2000).map(|i| format!("k:{i}")).collect();
    let commands: Vec<Vec<&[u8]>> = keys
        .iter()
        .map(|k| vec![&b"GET"[..], k.as_bytes()])
        .collect();
    let refs: Vec<&[&[u8]]> = commands.iter().map(|c| c.as_slice()).collect();
    send(&mut s, &refs);
    let replies = read_replies(&mut s, keys.len()).unwrap();
    for (i, r) in replies.iter().enumerate() {
        let expected = if i < 1000 {
            OwnedFrame::Bulk(value_of(i as u64).to_vec())
        } else {
            OwnedFrame::Nil
        };
        assert_eq!(r, &expected, "reply {i}");
    }
    assert_eq!(server.stats().commands, 2000);
    assert_eq!(server.stats().connections, 1);
    server.shutdown().unwrap();
}

#[test]
fn refuse_stops_listening_and_recovers() {
    let server = start(10);
    let mut open = connect(&server);
    server.set_faults(FaultPlan::only(Fault::Refuse));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(server.addr()) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
            _ if Instant::now() > deadline => panic!("server kept accepting while refusing"),
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    // The connection opened before the fault was closed.
    let _ = open.write_all(b"*1\r\n$4\r\nPING\r\n");
    assert!(read_replies(&mut open, 1).is_err());
    server.set_faults(FaultPlan::healthy());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match TcpStream::connect(server.addr()) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("server did not listen again: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    send(&mut s, &[&[b"PING"], &[b"GET", b"k:3"]]);
    // Once listening again the server answers new connections normally.
    assert_eq!(
        read_replies(&mut s, 2).unwrap(),
        [
            OwnedFrame::Simple(b"PONG".to_vec()),
            OwnedFrame::Bulk(value_of(3).to_vec())
        ]
    );
    server.shutdown().unwrap();
}

#[test]
fn reset_sends_half_a_reply_then_rst() {
    let server = start(10);
    server.set_faults(FaultPlan::only(Fault::Reset));
    let mut s = connect(&server);
    send(&mut s, &[&[b"GET", b"k:1"]]);
    let mut got = Vec::new();
    let err = loop {
        let mut chunk = [0u8; 256];
        match s.read(&mut chunk) {
            Ok(0) => break ErrorKind::UnexpectedEof,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => break e.kind(),
        }
    };
    assert_eq!(err, ErrorKind::ConnectionReset);
    assert!(got.len() < 71, "a whole reply came through: {got:?}");
}

#[test]
fn black_hole_answers_nothing_until_cleared_then_everything_in_order() {
    let server = start(10);
    server.set_faults(FaultPlan::only(Fault::BlackHole));
    let mut s = connect(&server);
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    send(&mut s, &[&[b"PING"]]);
    let mut chunk = [0u8; 16];
    let e = s.read(&mut chunk).expect_err("black hole answered");
    assert!(matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    server.set_faults(FaultPlan::healthy());
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    send(&mut s, &[&[b"GET", b"k:3"]]);
    // The request made during the black hole is answered first: replies never shift onto
    // the wrong request.
    assert_eq!(
        read_replies(&mut s, 2).unwrap(),
        [
            OwnedFrame::Simple(b"PONG".to_vec()),
            OwnedFrame::Bulk(value_of(3).to_vec())
        ]
    );
}

#[test]
fn malformed_replies_are_not_resp() {
    let server = start(10);
    server.set_faults(FaultPlan::only(Fault::Malformed));
    let mut s = connect(&server);
    send(&mut s, &[&[b"GET", b"k:1"]]);
    let mut buf = Vec::new();
    let parser = Parser::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut chunk = [0u8; 256];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
        match parser.parse(&buf) {
            Err(_) => break,
            Ok(Some(f)) => panic!("a malformed reply parsed: {f:?}"),
            Ok(None) => assert!(Instant::now() < deadline),
        }
    }
}

#[test]
fn slow_replies_arrive_in_order_and_fast_after_clearing() {
    let server = start(100);
    server.set_faults(FaultPlan {
        fault: Fault::None,
        latency: Latency::Uniform {
            min: Duration::from_millis(1),
            max: Duration::from_millis(30),
        },
        flap: None,
    });
    let mut s = connect(&server);
    for i in 0..20u64 {
        let key = format!("k:{i}");
        send(&mut s, &[&[b"GET", key.as_bytes()]]);
    }
    let replies = read_replies(&mut s, 20).unwrap();
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r, &OwnedFrame::Bulk(value_of(i as u64).to_vec()));
    }
}

#[test]
fn flapping_alternates_between_answers_and_faults() {
    let server = start(10);
    server.set_faults(FaultPlan {
        fault: Fault::Malformed,
        latency: Latency::None,
        flap: Some(Flap {
            healthy: Duration::from_millis(20),
            faulty: Duration::from_millis(20),
        }),
    });
    let (mut good, mut bad) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while (good == 0 || bad == 0) && Instant::now() < deadline {
        let mut s = connect(&server);
        send(&mut s, &[&[b"PING"]]);
        let mut chunk = [0u8; 64];
        let n = s.read(&mut chunk).unwrap_or(0);
        match Parser::default().parse(&chunk[..n]) {
            Ok(Some(_)) => good += 1,
            _ => bad += 1,
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    assert!(good > 0 && bad > 0, "good {good}, bad {bad}");
}

#[test]
fn shutdown_closes_connections_and_joins() {
    let server = start(10);
    let mut s = connect(&server);
    send(&mut s, &[&[b"PING"]]);
    read_replies(&mut s, 1).unwrap();
    server.shutdown().unwrap();
    let mut chunk = [0u8; 8];
    assert!(matches!(s.read(&mut chunk), Ok(0) | Err(_)));
    assert!(TcpStream::connect_timeout(
        &"127.0.0.1:1".parse().unwrap(),
        Duration::from_millis(100)
    )
    .is_err());
}

#[test]
fn a_taken_port_is_a_bind_error() {
    let server = start(10);
    // glommio sets SO_REUSEPORT, so bind a plain std listener without it to hold a port.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = BuiltinServer::start(ServerConfig {
        listen: holder.local_addr().unwrap(),
        ..ServerConfig::default()
    })
    .expect_err("port is taken");
    assert!(err.to_string().contains("cannot listen on"), "{err}");
    drop(server);
}
