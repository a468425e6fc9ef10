//! The warm request path does not allocate: a counting global allocator watches the whole
//! test process (router worker + this client) while thousands of Commands (JSON body
//! scanned for the user id) and Queries (header) go through one worker. The backend runs
//! in its own process so its allocations do not count.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates to the system allocator; only adds a relaxed counter increment.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn external_backend() -> (KillOnDrop, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringgate-backend"))
        .args(["--port", "0", "--zone", "zone_1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ringgate-backend");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
    (KillOnDrop(child), addr)
}

/// Send `req` and read exactly one response of a known length into `buf`.
fn exchange(c: &mut TcpStream, req: &[u8], buf: &mut [u8]) {
    c.write_all(req).unwrap();
    c.read_exact(buf).unwrap();
}

#[test]
fn warm_request_path_does_not_allocate() {
    let (_guard, b) = external_backend();
    let router = common::router::Router::start(&format!(
        // Health checks run on their own thread and allocate per probe round; they are
        // switched off so the count covers only the request path.
        "default_backend = \"{b}\"\n[health]\nenabled = false\n[partitions.zone_1]\nservers = [\"{b}\"]\n[users]\nalice = \"zone_1\"\n"
    ));
    let body = r#"{"user_id":"alice","symbol":"BTCUSDT","side":"buy","price":50000.5,"quantity":1.25,"client_order_id":"c-000001","time_in_force":"GTC"}"#;
    let command = format!(
        "POST /api/spot/v2/order?resp_bytes=64 HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    let query =
        b"GET /api/spot/user/data?resp_bytes=64 HTTP/1.1\r\nHost: t\r\nX-User-Id: bob\r\n\r\n"
            .to_vec();

    // Learn each response's exact length once (through the same router).
    let mut c = TcpStream::connect(router.addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut sizes = Vec::new();
    for req in [&command, &query] {
        let r = common::client::request(router.addr, req);
        assert_eq!(r.status, 200);
        sizes.push(r.raw.len());
    }
    let mut cbuf = vec![0u8; sizes[0]];
    let mut qbuf = vec![0u8; sizes[1]];
    for _ in 0..2_000 {
        exchange(&mut c, &command, &mut cbuf);
        exchange(&mut c, &query, &mut qbuf);
    }
    assert!(cbuf.starts_with(b"HTTP/1.1 200"));
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    const ROUNDS: u64 = 5_000;
    for _ in 0..ROUNDS {
        exchange(&mut c, &command, &mut cbuf);
        exchange(&mut c, &query, &mut qbuf);
    }
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert!(qbuf.starts_with(b"HTTP/1.1 200"));
    println!(
        "{allocations} allocations over {} warm requests",
        ROUNDS * 2
    );
    // A stray timer-wheel or runtime allocation is tolerated; one per request is not.
    assert!(
        allocations < 20,
        "{allocations} allocations over {} warm requests",
        ROUNDS * 2
    );
}
