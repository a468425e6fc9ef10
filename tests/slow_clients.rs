//! Slow clients (slowloris): many connections trickling a request head one byte
//! at a time cost a bounded amount of memory each, are cut by the header timeout
//! (measured from their first byte, so trickling does not extend it), and do not delay
//! other clients.
//!
//! The router runs in-process, so the process RSS (from `/proc/self/statm`) before and
//! while the slow connections are open bounds the router's memory per connection (plus
//! this test's own small per-socket state). Kernel socket buffers are not in RSS.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::client::{frame_message, Client};
use common::router::{demo_backend, Router};
use common::wait_until;

/// Slow connections held open at once.
const SLOW_CONNECTIONS: usize = 2000;
/// Header timeout configured for the test.
const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);
/// Bound asserted on resident memory per slow connection (measured: see the printout).
const MAX_RSS_PER_CONNECTION: usize = 48 * 1024;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    pages * page
}

/// Raise the soft open-file limit to the hard one; returns the soft limit now in force.
fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

struct Slow {
    stream: TcpStream,
    first_byte: Instant,
    /// When the router answered or closed it, and whether the answer was a 408.
    ended: Option<(Instant, bool)>,
    received: Vec<u8>,
}

impl Slow {
    /// Poll without blocking: record a 408 or a close. (FIN and RST are not told apart
    /// here: a trickled byte that crosses the router's FIN draws an RST from the kernel,
    /// so the kind of close says nothing about the router.)
    fn poll(&mut self) {
        if self.ended.is_some() {
            return;
        }
        let mut tmp = [0u8; 512];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => break,
                Ok(n) => self.received.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        // Exactly one complete 408 response, nothing after it.
        let is_408 = matches!(
            frame_message(&self.received, false, true),
            Ok(Some((resp, used))) if resp.status == 408 && used == self.received.len()
        );
        self.ended = Some((Instant::now(), is_408));
    }

    fn trickle(&mut self) {
        if self.ended.is_none() && self.stream.write_all(b"a").is_err() {
            self.poll();
        }
    }
}

fn normal_request(addr: SocketAddr) -> (u16, Duration) {
    let started = Instant::now();
    let mut c = Client::connect(addr);
    c.set_timeout(Duration::from_secs(5));
    let resp = c
        .roundtrip(b"GET /normal HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nConnection: close\r\n\r\n");
    c.expect_fin();
    (resp.status, started.elapsed())
}

#[test]
fn slowloris_is_bounded_cut_and_harmless() {
    let test_started = Instant::now();
    let needed = (2 * SLOW_CONNECTIONS + 200) as u64;
    let limit = raise_nofile_limit();
    if limit < needed {
        eprintln!("SKIPPED: RLIMIT_NOFILE is {limit}, this test needs {needed} descriptors");
        return;
    }
    let b = demo_backend("zone_1");
    let router = Router::start(&format!(
        "default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n[timeouts]\nclient_header_ms = {}\n",
        HEADER_TIMEOUT.as_millis()
    ));
    let addr = router.addr;

    // Warm up (first request allocates the worker's lazily built state), then settle:
    // the router is done with the warm-up connection.
    assert_eq!(normal_request(addr).0, 200);
    wait_until(
        "the warm-up connection is gone",
        Duration::from_secs(2),
        || router.metrics().open_connections == 0,
    );
    let rss_before = rss_bytes();

    // Open the slow connections; each sends the start of a head that never ends.
    let mut slow = Vec::with_capacity(SLOW_CONNECTIONS);
    for _ in 0..SLOW_CONNECTIONS {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\nX-User-Id: s\r\nX-Slow: ")
            .unwrap();
        stream.set_nonblocking(true).unwrap();
        slow.push(Slow {
            stream,
            first_byte: Instant::now(),
            ended: None,
            received: Vec::new(),
        });
    }
    let opened = slow[0].first_byte.elapsed();

    // Trickle a byte per connection every 100 ms; measure while all are open.
    let mut rss_during = 0;
    let mut normal = None;
    let deadline = Instant::now() + Duration::from_secs(8);
    while slow.iter().any(|s| s.ended.is_none()) && Instant::now() < deadline {
        for s in slow.iter_mut() {
            s.trickle();
            s.poll();
        }
        if normal.is_none() && slow[0].first_byte.elapsed() >= Duration::from_millis(400) {
            rss_during = rss_bytes();
            let (status, took) = normal_request(addr);
            // Judge "still open" right after the normal request completed.
            for s in slow.iter_mut() {
                s.poll();
            }
            let still_open = slow.iter().filter(|s| s.ended.is_none()).count();
            normal = Some((status, took, still_open));
        }
        std::thread::sleep(Duration::from_millis(100)); // scenario: the trickle rate
    }

    let (status, took, still_open) = normal.expect("the normal request ran");
    let rss_per_conn = rss_during.saturating_sub(rss_before) / SLOW_CONNECTIONS;
    let lifetimes: Vec<Duration> = slow
        .iter()
        .filter_map(|s| s.ended.map(|(t, _)| t - s.first_byte))
        .collect();
    let n408 = slow
        .iter()
        .filter(|s| matches!(s.ended, Some((_, true))))
        .count();
    let min = lifetimes.iter().min().copied().unwrap_or_default();
    let max = lifetimes.iter().max().copied().unwrap_or_default();
    println!(
        "slowloris: {SLOW_CONNECTIONS} connections opened in {opened:?}; RSS {} KiB -> {} KiB \
         = {} bytes per connection; normal request {status} in {took:?} with {still_open} slow \
         connections open; {} cut ({n408} with 408) after {min:?}..{max:?}; test took {:?}",
        rss_before / 1024,
        rss_during / 1024,
        rss_per_conn,
        lifetimes.len(),
        test_started.elapsed()
    );

    assert_eq!(status, 200);
    assert!(
        took < Duration::from_secs(1),
        "normal request took {took:?}"
    );
    assert_eq!(
        still_open, SLOW_CONNECTIONS,
        "the normal request completed while every slow connection was still open"
    );
    assert!(
        rss_per_conn <= MAX_RSS_PER_CONNECTION,
        "{rss_per_conn} bytes of RSS per slow connection"
    );
    assert_eq!(
        lifetimes.len(),
        SLOW_CONNECTIONS,
        "every slow connection was cut"
    );
    assert_eq!(n408, SLOW_CONNECTIONS, "each was answered 408");
    assert!(
        min >= HEADER_TIMEOUT - Duration::from_millis(50),
        "cut too early: {min:?}"
    );
    assert!(
        max <= HEADER_TIMEOUT + Duration::from_millis(1500),
        "trickling extended the header timeout: {max:?}"
    );
    drop(router);
    assert!(test_started.elapsed() < Duration::from_secs(30));
}
