//! One connection flooding pipelined requests that ringgate answers itself (429s) must not
//! hold up another connection on the same worker: on either driver.
//!
//! On the epoll driver, reads and writes complete at once while the socket has bytes (or
//! room), so a connection task fed fast enough never returns `Pending`, and the worker's
//! other tasks (the accept loop, the second connection) wait until it does.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backend::{Reply, ScriptedBackend};
use common::client::Client;
use common::router::Router;

const QUERY: &[u8] = b"GET /api/spot/user/p HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n";

/// A flooding client: one thread writes 1000 pipelined Queries per write, another reads
/// and discards the answers. Stops (and joins) when dropped.
struct Flood {
    stop: Arc<AtomicBool>,
    read: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stream: TcpStream,
}

impl Flood {
    fn start(addr: SocketAddr) -> Flood {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let read = Arc::new(AtomicU64::new(0));
        let batch = QUERY.repeat(1000);
        let mut w = stream.try_clone().unwrap();
        w.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let s = stop.clone();
        let writer = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match w.write(&batch) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
        });
        let mut r = stream.try_clone().unwrap();
        r.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (s, n) = (stop.clone(), read.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while !s.load(Ordering::Relaxed) {
                match r.read(&mut buf) {
                    Ok(0) => return,
                    Ok(k) => {
                        n.fetch_add(k as u64, Ordering::Relaxed);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
        Flood {
            stop,
            read,
            threads: vec![writer, reader],
            stream,
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connect and have one request answered on a new connection: how long it took.
fn probe(addr: SocketAddr) -> Duration {
    let t = Instant::now();
    let mut c = Client::connect(addr);
    c.set_timeout(Duration::from_secs(20));
    let r = c.roundtrip(QUERY);
    assert!(matches!(r.status, 200 | 429), "status {}", r.status);
    t.elapsed()
}

/// Median of five probes' latencies under a flood on `driver`, and the flood's answered
/// bytes while probing.
fn latency_under_flood(driver: &str) -> (Duration, u64) {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = Router::start_on(
        &format!(
            "default_backend = \"{}\"\n[health]\nenabled = false\n[rate_limit]\nper_user_queries = 1\nburst = 0\n",
            b.addr
        ),
        1,
        driver,
    );
    // Alice's one Query a second, spent.
    probe(r.addr);
    let flood = Flood::start(r.addr);
    // The flood is being answered before the probing starts.
    let began = Instant::now();
    while flood.read.load(Ordering::Relaxed) < 1_000_000 {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the flood is not answered"
        );
        std::thread::yield_now();
    }
    let before = flood.read.load(Ordering::Relaxed);
    let mut took: Vec<Duration> = (0..5).map(|_| probe(r.addr)).collect();
    // The probes may all be served within a millisecond, before the flood's reader thread
    // is scheduled again on a busy machine: the flood stalled only if nothing more of it
    // is answered for seconds.
    let probed = Instant::now();
    while flood.read.load(Ordering::Relaxed) == before && probed.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let answered = flood.read.load(Ordering::Relaxed) - before;
    drop(flood);
    took.sort();
    eprintln!("{driver}: probes took {took:?}; flood answered {answered} bytes since they began");
    (took[2], answered)
}

#[test]
fn a_flood_of_locally_answered_requests_does_not_hold_up_another_connection() {
    for driver in ["auto", "epoll"] {
        let (median, answered) = latency_under_flood(driver);
        assert!(answered > 0, "{driver}: the flood stalled while probing");
        // Starvation is seconds (1–5 s before the fix); a served request is milliseconds.
        // The bound only tells the two apart, it measures nothing.
        assert!(
            median < Duration::from_millis(500),
            "{driver}: a request on a second connection took {median:?} (median of 5) behind a flood"
        );
    }
}
