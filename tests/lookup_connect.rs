//! Connection establishment errors: refused and timed out, each naming the address.

mod common;

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use common::redis::run;
use ringwait::lookup::{Client, ConnectionConfig, LookupError};

/// A loopback listener that never accepts and whose queue is full, so new connection
/// attempts get no answer (the kernel drops their SYNs).
fn full_listener() -> (OwnedFd, SocketAddr, Vec<std::net::TcpStream>) {
    // SAFETY: plain socket calls on a fresh fd owned by `fd`; the sockaddr is a valid,
    // fully initialized sockaddr_in whose size is passed.
    unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(raw >= 0);
        let fd = OwnedFd::from_raw_fd(raw);
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(raw, (&sin as *const libc::sockaddr_in).cast(), len),
            0
        );
        assert_eq!(libc::listen(raw, 0), 0);
        let mut len = len;
        assert_eq!(
            libc::getsockname(raw, (&mut sin as *mut libc::sockaddr_in).cast(), &mut len),
            0
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], u16::from_be(sin.sin_port)));
        // Fill the accept queue (backlog 0 admits one or two).
        let mut held = Vec::new();
        for _ in 0..4 {
            if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                held.push(s);
            }
        }
        (fd, addr, held)
    }
}

#[test]
fn a_connect_that_gets_no_answer_times_out_with_the_address() {
    let (_listener, addr, _held) = full_listener();
    let err = run(move || async move {
        let config = ConnectionConfig {
            connect_timeout: Duration::from_millis(200),
            ..ConnectionConfig::default()
        };
        Client::connect(addr, config).await.map(|_| ())
    })
    .expect_err("the queue is full");
    assert_eq!(
        err,
        LookupError::TimedOut {
            addr,
            after: Duration::from_millis(200)
        }
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[test]
fn a_closed_port_is_refused_with_the_address() {
    let addr = SocketAddr::from(([127, 0, 0, 1], common::redis::free_port()));
    let err = run(move || async move {
        Client::connect(addr, ConnectionConfig::default())
            .await
            .map(|_| ())
    })
    .expect_err("nothing listens");
    assert_eq!(err, LookupError::Refused { addr });
}
