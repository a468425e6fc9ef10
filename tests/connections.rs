//! Client connections end to end: keep-alive and idle timeouts, HTTP/1.0 clients, 100-continue, and tunnels (half-closes, resets passed on as resets).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use common::backend::{Ending, Reply, ScriptedBackend};
use common::client::Client;
use common::router::Router;

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
const SWITCH: &str =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";

fn router_for(addr: std::net::SocketAddr, extra: &str) -> Router {
    Router::start(&format!(
        "default_backend = \"{0}\"\n[partitions.z]\nservers = [\"{0}\"]\n[health]\nenabled = false\n[timeouts]\n{extra}\n",
        addr
    ))
}

/// A one-connection upstream: it accepts, reads the request head, then `serve`s the
/// socket, whose result the handle gives.
fn raw_upstream<T: Send + 'static>(
    serve: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (std::net::SocketAddr, std::thread::JoinHandle<T>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let up = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        read_head(&mut s);
        serve(s)
    });
    (addr, up)
}

fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "upstream: peer closed mid-head");
        got.push(b[0]);
    }
    got
}

/// An upstream that resets a tunnel after some bytes: the client must not see a clean
/// close (FIN), which would pass a cut stream off as a complete one.
#[test]
fn upstream_reset_in_a_tunnel_reaches_the_client_as_a_reset() {
    let b = ScriptedBackend::start(|_| {
        let mut bytes = SWITCH.as_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        Reply::bytes(bytes).then(Ending::Reset)
    });
    let r = router_for(b.addr, "tunnel_idle_ms = 60000");
    let mut c = Client::connect(r.addr);
    c.send(UPGRADE);
    assert_eq!(c.read_response().status, 101);
    assert_eq!(c.read_raw(3), b"abc");
    let closed = c.closed();
    assert!(closed.is_reset(), "upstream RST became: {closed}");
}

/// The reverse: a client that resets its tunnel; the upstream must see a reset, not a
/// clean end of the stream.
#[test]
fn client_reset_in_a_tunnel_reaches_the_upstream_as_a_reset() {
    let (addr, up) = raw_upstream(|mut s| {
        s.write_all(SWITCH.as_bytes()).unwrap();
        let mut got = vec![0u8; 3];
        s.read_exact(&mut got).unwrap();
        s.write_all(b"ok").unwrap();
        let mut b = [0u8; 1024];
        loop {
            match s.read(&mut b) {
                Ok(0) => return (got, "FIN".to_string()),
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) => return (got, format!("{:?}", e.kind())),
            }
        }
    });
    let r = router_for(addr, "tunnel_idle_ms = 60000");
    let mut c = Client::connect(r.addr);
    c.send(UPGRADE);
    assert_eq!(c.read_response().status, 101);
    c.send(b"xyz");
    // Wait until the bytes went through, then reset.
    assert_eq!(c.read_raw(2), b"ok");
    c.reset();
    let (got, how) = up.join().unwrap();
    assert_eq!(got, b"xyz");
    assert_ne!(how, "FIN", "client RST became a FIN at the upstream");
}

/// The idle keep-alive timeout between requests: a clean FIN, no bytes.
#[test]
fn idle_timeout_between_requests_is_a_clean_fin() {
    let b = ScriptedBackend::start(|_| Reply::ok("hi"));
    let r = router_for(b.addr, "client_idle_ms = 200");
    let mut c = Client::connect(r.addr);
    assert_eq!(
        c.roundtrip(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    c.expect_fin();
}

/// A head that started arriving before the idle timeout is not cut by it.
#[test]
fn a_request_started_before_the_idle_timeout_is_answered() {
    let b = ScriptedBackend::start(|_| Reply::ok("hi"));
    let r = router_for(b.addr, "client_idle_ms = 200\nclient_header_ms = 5000");
    let mut c = Client::connect(r.addr);
    assert_eq!(
        c.roundtrip(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    c.send(b"GET / HT");
    c.expect_open_for(Duration::from_millis(600));
    assert_eq!(c.roundtrip(b"TP/1.1\r\nHost: a\r\n\r\n").status, 200);
}

/// Empty lines before a request line are the first bytes of a head: the header timeout,
/// not the idle one, bounds the wait for the rest. (Skipped, they left the buffer empty
/// and the next read waited a whole idle timeout, once per line: eight bytes held a
/// connection for five idle timeouts.)
#[test]
fn empty_lines_before_a_request_line_are_cut_by_the_header_timeout() {
    let b = ScriptedBackend::start(|_| Reply::ok("hi"));
    let r = router_for(b.addr, "client_idle_ms = 5000\nclient_header_ms = 300");
    let mut c = Client::connect(r.addr);
    c.send(b"\r\n");
    match c.closed_within(Duration::from_secs(3)) {
        common::client::Closed::Fin { leftover } if leftover.starts_with(b"HTTP/1.1 408 ") => {}
        other => panic!("expected a 408 and a close by the header timeout, got: {other}"),
    }
    // A request after an empty line, within the header timeout, is served as before.
    let mut c = Client::connect(r.addr);
    c.send(b"\r\n");
    assert_eq!(
        c.roundtrip(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    assert_eq!(b.request_count(), 1);
}

/// A new connection that sends nothing waits for its first byte no longer than a head may
/// take, and is closed quietly (no byte came that a 408 could answer); only a kept-alive
/// connection waits the idle timeout. (It waited the idle timeout too: a client that
/// opened connections and sent nothing held each one six times as long, by default, as
/// one sending part of a head.)
#[test]
fn a_new_connection_that_sends_nothing_is_cut_by_the_header_timeout() {
    let b = ScriptedBackend::start(|_| Reply::ok("hi"));
    let r = router_for(b.addr, "client_idle_ms = 5000\nclient_header_ms = 300");
    let mut c = Client::connect(r.addr);
    match c.closed_within(Duration::from_secs(3)) {
        common::client::Closed::Fin { leftover } if leftover.is_empty() => {}
        other => panic!("expected a quiet close by the header timeout, got: {other}"),
    }
    common::wait_until("the connection is gone", Duration::from_secs(3), || {
        r.metrics().open_connections == 0
    });
    assert_eq!(r.metrics().idle_timeouts, 1);
    // After a request, the wait for the next one is the idle timeout.
    let mut c = Client::connect(r.addr);
    assert_eq!(
        c.roundtrip(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    c.expect_open_for(Duration::from_millis(900));
}

/// HTTP/1.0 keep-alive client, upstream answers chunked anyway: the client must not get
/// chunked framing (RFC 9112 §6.1).
#[test]
fn http10_client_never_gets_chunked() {
    let b = ScriptedBackend::start(|_| {
        Reply::bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
    });
    let r = router_for(b.addr, "");
    let mut c = Client::connect(r.addr);
    c.send(b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
    let resp = c.read_response();
    assert!(
        resp.header("transfer-encoding").is_none(),
        "HTTP/1.0 client got chunked: {:?}",
        resp
    );
}

/// The upstream answers 101, sends a message and closes at once; the client still gets
/// everything and a FIN, and may still send.
#[test]
fn upstream_half_close_in_a_tunnel_lets_the_client_still_send() {
    let (addr, up) = raw_upstream(|mut s| {
        let mut out = SWITCH.as_bytes().to_vec();
        out.extend_from_slice(b"bye");
        s.write_all(&out).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    let r = router_for(addr, "tunnel_idle_ms = 60000");
    let mut c = Client::connect(r.addr);
    c.send(UPGRADE);
    assert_eq!(c.read_response().status, 101);
    assert_eq!(c.read_raw(3), b"bye");
    c.expect_fin();
    c.send(b"late");
    c.finish_sending();
    assert_eq!(up.join().unwrap(), b"late");
}

/// 100-continue with keep-alive: the next request on the connection is served.
#[test]
fn continue_then_keep_alive() {
    let b = ScriptedBackend::start(|_| Reply::ok("hi"));
    let r = router_for(b.addr, "");
    let mut c = Client::connect(r.addr);
    c.send(b"POST /x HTTP/1.1\r\nHost: a\r\nX-User-Id: u\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let m = c.read_message();
    assert_eq!(m.status, 100);
    c.send(b"hello");
    assert_eq!(c.read_response().status, 200);
    assert_eq!(
        c.roundtrip(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    assert!(b.requests()[0].text().ends_with("hello"));
}

/// Client bytes pipelined behind the upgrade request, then a FIN, before the 101: all
/// reach the upstream, the echo comes back, then a clean close.
#[test]
fn pipelined_tunnel_bytes_and_fin_before_the_switch() {
    let b = ScriptedBackend::start(|_| Reply::bytes(SWITCH).then(Ending::Echo));
    let r = router_for(b.addr, "tunnel_idle_ms = 60000");
    let mut c = Client::connect(r.addr);
    let mut raw = UPGRADE.to_vec();
    raw.extend_from_slice(b"early");
    c.send(&raw);
    c.finish_sending();
    assert_eq!(c.read_response().status, 101);
    assert_eq!(c.read_raw(5), b"early");
    c.expect_fin();
}

/// HTTP/1.0 keep-alive, upstream closes the connection after its answer (with length):
/// the client keeps its connection, told so.
#[test]
fn http10_keep_alive_survives_upstream_close() {
    let b = ScriptedBackend::start(|_| {
        Reply::bytes("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi").then(Ending::Close)
    });
    let r = router_for(b.addr, "");
    let mut c = Client::connect(r.addr);
    let req = b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n";
    let resp = c.roundtrip(req);
    assert_eq!(resp.header("connection"), Some("keep-alive"));
    let resp = c.roundtrip(req);
    assert_eq!(resp.status, 200);
    c.send(b"HEAD / HTTP/1.0\r\nHost: a\r\n\r\n");
    let resp = c.read_head_response();
    assert_eq!(resp.header("connection"), Some("close"));
    c.expect_fin();
}
