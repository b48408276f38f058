//! The HTTP endpoint serving [`LiveMetrics`] (`GET /metrics`, OpenMetrics text encoded by
//! `prometheus-client`), on its own thread, stopped and joined on drop. Requests are parsed
//! by `httparse`; each is answered on a thread of its own, up to [`MAX_SCRAPES`] at once
//! (more get `503`), and what is read is bounded: a request head of at most
//! [`MAX_REQUEST_HEAD`] bytes, sent within [`READ_TIMEOUT`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::live::LiveMetrics;

/// A running metrics endpoint.
///
/// ```
/// use ringwait::metrics_http::MetricsServer;
/// use ringwait::runtime::LiveMetrics;
/// let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), LiveMetrics::new(1)).unwrap();
/// let body = ringwait::metrics_http::fetch(server.addr()).unwrap();
/// assert!(body.contains("ringwait_in_flight{partition=\"0\"} 0"));
/// ```
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `live` until dropped.
    pub fn start(addr: SocketAddr, live: Arc<LiveMetrics>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringwait-metrics".into())
            .spawn(move || serve(listener, live, flag))?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Most requests answered at once; more wait in the listen backlog.
pub const MAX_SCRAPES: usize = 8;
/// Largest request head read (request line and headers); a longer one is refused.
pub const MAX_REQUEST_HEAD: usize = 8 << 10;
/// How long a scraper may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

fn serve(listener: TcpListener, live: Arc<LiveMetrics>, stop: Arc<AtomicBool>) {
    let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) if busy.load(Ordering::Acquire) < MAX_SCRAPES => {
                busy.fetch_add(1, Ordering::AcqRel);
                let (live, done) = (live.clone(), busy.clone());
                let spawned = std::thread::Builder::new()
                    .name("ringwait-scrape".into())
                    .spawn(move || {
                        // A scraper that goes away mid-answer is its own business.
                        let _ = answer(stream, &live);
                        done.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    busy.fetch_sub(1, Ordering::AcqRel);
                }
            }
            Ok((stream, _)) => {
                let _ = respond(&stream, "503 Service Unavailable", "text/plain", "busy\n");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Reads one request (its head at most [`MAX_REQUEST_HEAD`] bytes, within
/// [`READ_TIMEOUT`]), parsed by `httparse`, and answers it.
fn answer(stream: TcpStream, live: &LiveMetrics) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut head = vec![0u8; MAX_REQUEST_HEAD];
    let mut len = 0;
    loop {
        let n = (&stream).read(&mut head[len..])?;
        if n == 0 {
            return Ok(()); // closed before a whole request
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                return match (request.method, request.path) {
                    (Some("GET"), Some("/metrics" | "/")) => respond(
                        &stream,
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        &live.render_prometheus(),
                    ),
                    _ => respond(&stream, "404 Not Found", "text/plain", "GET /metrics\n"),
                };
            }
            Ok(httparse::Status::Partial) if len < head.len() => continue,
            Ok(httparse::Status::Partial) | Err(_) => {
                return respond(&stream, "400 Bad Request", "text/plain", "bad request\n");
            }
        }
    }
}

fn respond(
    mut stream: &TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Fetches `/metrics` from `addr` (for tests and scripts).
pub fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut body = String::new();
    std::io::Read::read_to_string(&mut s, &mut body)?;
    match body.split_once("\r\n\r\n") {
        Some((head, rest)) if head.starts_with("HTTP/1.1 200") => Ok(rest.to_string()),
        _ => Err(std::io::Error::other(format!("bad response: {body}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several scrapers at once are all answered; a request head over the bound is refused
    /// (400) without the server reading on; a slow scraper that sends nothing is dropped
    /// after the read timeout and does not hold the others up.
    #[test]
    fn scrapers_are_served_at_once_and_what_is_read_is_bounded() {
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), LiveMetrics::new(2)).unwrap();
        let addr = server.addr();
        let _silent = TcpStream::connect(addr).unwrap(); // holds one slot, sends nothing
        let scrapers: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(move || fetch(addr)))
            .collect();
        for s in scrapers {
            let body = s.join().unwrap().unwrap();
            assert!(body.contains("ringwait_latency_seconds_bucket"), "{body}");
            assert!(body.ends_with("# EOF\n"), "{body}");
        }
        let mut big = TcpStream::connect(addr).unwrap();
        big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(64 << 10)
        );
        let _ = big.write_all(head.as_bytes()); // the server may close before it all went
        let mut answer = String::new();
        let _ = big.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
        assert!(fetch(addr).is_ok(), "still serving");
    }
}
