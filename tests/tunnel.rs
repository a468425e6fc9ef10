//! Tunnels after `101 Switching Protocols`: a half-close is passed on, a tunnel ends when
//! either side is done (the other gets a short grace), after the idle timeout, and at a
//! drain's deadline.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::backend::{Ending, Reply, ScriptedBackend};
use common::client::Client;
use common::router::Router;

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";

/// An upstream that switches and then ends as `after` says.
fn switching(after: Ending) -> ScriptedBackend {
    ScriptedBackend::start(move |_| {
        Reply::bytes(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        )
        .then(after)
    })
}

fn router(b: &ScriptedBackend, idle_ms: u64) -> Router {
    Router::start(&format!(
        "default_backend = \"{0}\"\n[partitions.z]\nservers = [\"{0}\"]\n[health]\nenabled = false\n[timeouts]\ntunnel_idle_ms = {idle_ms}\n",
        b.addr
    ))
}

fn open_tunnel(r: &Router) -> Client {
    let mut c = Client::connect(r.addr);
    c.send(UPGRADE);
    assert_eq!(c.read_response().status, 101);
    c
}

#[test]
fn a_half_close_is_passed_on_and_both_closes_end_the_tunnel() {
    let b = switching(Ending::Echo);
    let r = router(&b, 60_000);
    let mut c = open_tunnel(&r);
    c.send(b"ping");
    assert_eq!(c.read_raw(4), b"ping");
    // The client is done sending: the upstream sees the FIN (and closes), so the client
    // gets a clean close, with the echo of everything it sent.
    c.send(b"last");
    c.finish_sending();
    assert_eq!(c.read_raw(4), b"last");
    c.expect_fin();
}

#[test]
fn when_one_side_is_done_the_other_gets_a_grace_then_the_tunnel_ends() {
    // The upstream never reads again and never closes: after the client's FIN, the
    // tunnel ends within the grace (here the idle timeout, 300 ms, is shorter than 5 s).
    let b = switching(Ending::Hang);
    let r = router(&b, 300);
    let mut c = open_tunnel(&r);
    let started = Instant::now();
    c.finish_sending();
    c.expect_closed();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_idle_tunnel_ends_after_the_idle_timeout() {
    let b = switching(Ending::Echo);
    let r = router(&b, 300);
    let mut c = open_tunnel(&r);
    c.send(b"x");
    assert_eq!(c.read_raw(1), b"x");
    let started = Instant::now();
    c.expect_fin();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[test]
fn a_drain_ends_tunnels_at_its_deadline() {
    let b = switching(Ending::Echo);
    let mut r = router(&b, 60_000);
    let mut c = open_tunnel(&r);
    c.send(b"x");
    assert_eq!(c.read_raw(1), b"x");
    let started = Instant::now();
    r.drain();
    c.expect_closed();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// An upstream that switches, then hands the raw socket to `after`.
fn raw_switching(after: impl Fn(TcpStream) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "the upgrade request");
            head.push(byte[0]);
        }
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        )
        .unwrap();
        after(s);
    });
    (addr, t)
}

/// Send a little every 20 ms for up to 3 s, until a write fails.
fn keep_sending(s: &mut TcpStream) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) && s.write_all(&[b's'; 100]).is_ok() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Read until the stream ends: "FIN" for a clean end, else the error.
fn read_to_end(s: &mut TcpStream) -> String {
    let mut tmp = [0u8; 4096];
    loop {
        match s.read(&mut tmp) {
            Ok(0) => return "FIN".into(),
            Ok(_) => {}
            Err(e) => return e.to_string(),
        }
    }
}

fn router_to(addr: SocketAddr, idle_ms: u64) -> Router {
    Router::start(&format!(
        "default_backend = \"{addr}\"\n[health]\nenabled = false\n[timeouts]\ntunnel_idle_ms = {idle_ms}\n"
    ))
}

/// When the grace after one side's close runs out while the other side is still sending,
/// that stream was cut: its receiver gets a reset, never a FIN that would pass for the end
/// of it (an upload cut after 300 ms is not the whole upload).
#[test]
fn an_upload_cut_when_the_grace_runs_out_reaches_the_upstream_as_a_reset() {
    // The upstream is done sending; the client goes on uploading.
    let (tx, rx) = std::sync::mpsc::channel();
    let (addr, upstream) = raw_switching(move |mut s| {
        s.shutdown(Shutdown::Write).unwrap();
        tx.send(read_to_end(&mut s)).unwrap();
    });
    let r = router_to(addr, 300);
    let mut c = open_tunnel(&r);
    c.expect_fin();
    let mut s = c.stream().try_clone().unwrap();
    keep_sending(&mut s);
    let end = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_ne!(end, "FIN", "the upstream took a cut upload for a whole one");
    upstream.join().unwrap();
}

/// The same the other way: the client is done sending, the upstream goes on streaming.
#[test]
fn a_download_cut_when_the_grace_runs_out_reaches_the_client_as_a_reset() {
    let (addr, upstream) = raw_switching(|mut s| keep_sending(&mut s));
    let r = router_to(addr, 300);
    let c = open_tunnel(&r);
    c.stream().shutdown(Shutdown::Write).unwrap();
    let mut s = c.stream().try_clone().unwrap();
    let end = read_to_end(&mut s);
    assert_ne!(end, "FIN", "the client took a cut download for a whole one");
    upstream.join().unwrap();
}

/// A drain's deadline cuts a tunnel both of whose directions are still open: each side
/// gets a reset, never a FIN that would pass for the other side's end of the stream (it
/// went out as a clean close to both).
#[test]
fn a_drain_deadline_cuts_a_tunnel_with_resets() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (addr, upstream) = raw_switching(move |mut s| {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        s.write_all(&b).unwrap();
        tx.send(read_to_end(&mut s)).unwrap();
    });
    let mut r = router_to(addr, 60_000);
    let mut c = open_tunnel(&r);
    c.send(b"x");
    assert_eq!(c.read_raw(1), b"x");
    r.drain();
    let closed = c.closed();
    assert!(
        closed.is_reset(),
        "the client's end of a cut tunnel: {closed}"
    );
    let end = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_ne!(end, "FIN", "the upstream's end of a cut tunnel");
    upstream.join().unwrap();
}

/// Client bytes pipelined behind the upgrade request go to the upstream once it has
/// answered 101; when that fails (the upstream reset right after its 101), the client,
/// which has the 101, gets a reset as it would in the tunnel, not a FIN that passes for
/// the upstream's clean end of the stream. (Should the reset come only after the bytes
/// went out, the tunnel passes it on: a reset all the same.)
#[test]
fn an_upstream_reset_before_the_pipelined_tunnel_bytes_went_out_reaches_the_client_as_a_reset() {
    let (addr, upstream) = raw_switching(|s| {
        // The reset right behind the 101: it is there before the router has relayed the
        // 101 and turns to the pipelined bytes.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let r = router_to(addr, 60_000);
    let mut c = Client::connect(r.addr);
    let mut raw = UPGRADE.to_vec();
    raw.extend_from_slice(b"early");
    c.send(&raw);
    assert_eq!(c.read_response().status, 101);
    let closed = c.closed();
    assert!(closed.is_reset(), "upstream RST became: {closed}");
    upstream.join().unwrap();
}

/// An upstream that switches, then streams to the client until the tunnel ends; it sends
/// how long after the switch its writes failed.
fn streaming_upstream() -> (
    SocketAddr,
    JoinHandle<()>,
    std::sync::mpsc::Receiver<Duration>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (addr, upstream) = raw_switching(move |mut s| {
        let started = Instant::now();
        let chunk = [b'd'; 16 * 1024];
        while s.write_all(&chunk).is_ok() {}
        let _ = tx.send(started.elapsed());
    });
    (addr, upstream, rx)
}

/// Bytes moving towards a slow reader are traffic too: a download the client reads
/// slowly but steadily, with nothing flowing the other way, is not cut as idle while each
/// 64 KiB write takes longer than the idle timeout.
#[test]
fn a_slow_but_steady_download_keeps_the_tunnel_open() {
    let (addr, upstream, ended) = streaming_upstream();
    let r = router_to(addr, 300);
    let c = open_tunnel(&r);
    let mut s = c.stream().try_clone().unwrap();
    // ~400 KB/s for 2.4 s, eight times the idle timeout.
    let started = Instant::now();
    let mut tmp = [0u8; 8192];
    let mut got = 0;
    while started.elapsed() < Duration::from_millis(2400) {
        match s.read(&mut tmp) {
            Ok(0) => panic!("FIN after {got} bytes, {:?}", started.elapsed()),
            Ok(n) => got += n,
            Err(e) => panic!("{e} after {got} bytes, {:?}", started.elapsed()),
        }
        if let Ok(after) = ended.try_recv() {
            panic!("the tunnel ended {after:?} after the switch, the client read {got} bytes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(got > 100_000, "{got}");
    // The end of the download: the upstream's writes fail.
    s.shutdown(Shutdown::Both).unwrap();
    drop((s, c));
    ended.recv_timeout(Duration::from_secs(10)).unwrap();
    upstream.join().unwrap();
}

/// A write that makes no progress at all is idle: a client that stops reading is cut
/// after the idle timeout.
#[test]
fn a_download_nobody_reads_ends_after_the_idle_timeout() {
    let (addr, upstream, ended) = streaming_upstream();
    let r = router_to(addr, 300);
    let _c = open_tunnel(&r);
    let after = ended.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(after < Duration::from_secs(5), "{after:?}");
    upstream.join().unwrap();
}
