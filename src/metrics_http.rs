//! A minimal HTTP endpoint serving [`LiveMetrics`] in the Prometheus text format
//! (`GET /metrics`), on its own thread, stopped and joined on drop.

use std::io::{BufRead, BufReader, Write};
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

fn serve(listener: TcpListener, live: Arc<LiveMetrics>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = answer(stream, &live);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn answer(stream: TcpStream, live: &LiveMetrics) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Drain the headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut out = &stream;
    let path = request.split_whitespace().nth(1).unwrap_or("");
    if request.starts_with("GET ") && (path == "/metrics" || path == "/") {
        let body = live.render_prometheus();
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    }
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
