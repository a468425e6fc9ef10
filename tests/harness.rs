//! Tests of the harness itself (`tests/common`): the strict client tells FIN from RST and
//! reports leftover bytes, against a plain std `TcpListener` peer (RST via `SO_LINGER` 0);
//! its framing follows RFC 9112 §6.3; the scripted backend records byte for byte and ends
//! connections the way it was told.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::backend::{BodyRead, Ending, Reply, ScriptedBackend};
use common::client::{frame_message, Client, Closed, Failure};

/// A peer that accepts one connection and runs `script` on it.
fn peer(script: impl FnOnce(TcpStream) + Send + 'static) -> (Client, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // The script starts once `connect` has returned: a peer that resets at once could
    // otherwise make `connect` itself fail with ECONNRESET (the handshake completes in
    // the kernel before the connecting thread runs again).
    let (connected, go) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        go.recv().unwrap();
        script(s);
    });
    let c = Client::connect(addr);
    connected.send(()).unwrap();
    (c, t)
}

fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[test]
fn fin_after_a_complete_response() {
    let (mut c, t) = peer(|mut s| s.write_all(OK).unwrap());
    assert_eq!(c.read_response().body, b"ok");
    t.join().unwrap();
    assert_eq!(c.closed(), Closed::Fin { leftover: vec![] });
    c.expect_fin();
}

#[test]
fn rst_after_a_complete_response() {
    let (mut c, t) = peer(|mut s| {
        s.write_all(OK).unwrap();
        reset(s);
    });
    t.join().unwrap();
    assert_eq!(c.read_response().body, b"ok");
    assert_eq!(c.closed(), Closed::Reset { leftover: vec![] });
    c.expect_closed();
}

#[test]
#[should_panic(expected = "reset (RST)")]
fn expect_fin_refuses_a_reset() {
    let (mut c, t) = peer(|mut s| {
        s.write_all(OK).unwrap();
        reset(s);
    });
    t.join().unwrap();
    c.read_response();
    c.expect_fin();
}

#[test]
fn leftover_bytes_after_the_last_response_are_reported() {
    let (mut c, t) = peer(|mut s| {
        s.write_all(OK).unwrap();
        s.write_all(b"junk").unwrap();
    });
    t.join().unwrap();
    assert_eq!(c.read_response().body, b"ok");
    assert_eq!(
        c.closed(),
        Closed::Fin {
            leftover: b"junk".to_vec()
        }
    );
}

#[test]
#[should_panic(expected = "4 leftover bytes")]
fn expect_fin_refuses_leftover_bytes() {
    let (mut c, t) = peer(|mut s| {
        s.write_all(OK).unwrap();
        s.write_all(b"junk").unwrap();
    });
    t.join().unwrap();
    c.read_response();
    c.expect_fin();
}

#[test]
#[should_panic(expected = "leftover bytes")]
fn expect_closed_refuses_leftover_bytes_too() {
    let (mut c, t) = peer(|mut s| {
        s.write_all(OK).unwrap();
        s.write_all(b"junk").unwrap();
        reset(s);
    });
    t.join().unwrap();
    c.read_response();
    c.expect_closed();
}

#[test]
fn reset_mid_body_is_a_reset_with_the_partial_response() {
    let (mut c, t) = peer(|mut s| {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart")
            .unwrap();
        reset(s);
    });
    t.join().unwrap();
    let e = c.try_read_response().unwrap_err();
    assert_eq!(e.failure, Failure::Reset);
    assert!(e.partial.ends_with(b"part"), "{e}");
}

/// The way an error answer gets destroyed: the server answers and closes while bytes the
/// client sent sit unread in its receive buffer, so the kernel sends RST instead of FIN.
#[test]
fn closing_with_unread_client_bytes_is_a_reset() {
    let (mut c, t) = peer(|mut s| {
        let mut first = [0u8; 4];
        s.read_exact(&mut first).unwrap();
        s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
    });
    c.send(b"GET / HTTP/1.1\r\n\r\nmore bytes the server never reads");
    t.join().unwrap();
    // The answer may or may not survive the reset; the close is a reset either way.
    let _ = c.try_read_response();
    let closed = c.closed();
    assert!(closed.is_reset(), "{closed}");
}

#[test]
fn still_open_until_the_peer_closes() {
    let (tx, rx) = mpsc::channel::<()>();
    let (mut c, t) = peer(move |mut s| {
        s.write_all(OK).unwrap();
        let _ = rx.recv();
    });
    c.read_response();
    assert!(matches!(
        c.closed_within(Duration::from_millis(50)),
        Closed::StillOpen { .. }
    ));
    c.expect_open_for(Duration::from_millis(20));
    drop(tx);
    t.join().unwrap();
    c.expect_fin();
}

#[test]
fn timeout_is_a_failure_not_a_hang() {
    let (tx, rx) = mpsc::channel::<()>();
    let (mut c, t) = peer(move |mut s| {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
            .unwrap();
        let _ = rx.recv();
    });
    c.set_timeout(Duration::from_millis(100));
    let e = c.try_read_response().unwrap_err();
    assert_eq!(e.failure, Failure::Timeout);
    assert!(e.partial.ends_with(b"ab"));
    drop(tx);
    t.join().unwrap();
}

#[test]
fn framing_rules() {
    let (mut c, t) = peer(|mut s| {
        s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
            .unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=1\r\nab\r\n1\r\nc\r\n0\r\nT: 1\r\n\r\n").unwrap();
        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        s.write_all(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n")
            .unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
        s.write_all(b"HTTP/1.0 200 OK\r\n\r\nuntil close").unwrap();
    });
    let r = c.read_response();
    assert_eq!(r.interim.len(), 1);
    assert_eq!(r.interim[0].status, 103);
    assert_eq!(r.interim[0].header("link"), Some("</a>"));
    assert_eq!(r.body, b"abc");
    assert_eq!(r.trailers, vec![("T".to_string(), "1".to_string())]);
    assert_eq!(
        r.framed_body(),
        b"2;x=1\r\nab\r\n1\r\nc\r\n0\r\nT: 1\r\n\r\n"
    );
    assert_eq!(c.read_response().status, 204);
    assert_eq!(c.read_response().status, 304);
    let head = c.read_head_response();
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(c.read_message().status, 100, "1xx returned when asked");
    t.join().unwrap();
    let r = c.read_response();
    assert_eq!(
        (r.version.as_str(), r.body.as_slice()),
        ("HTTP/1.0", &b"until close"[..])
    );
    c.expect_fin();
}

#[test]
fn malformed_heads_are_reported() {
    for bad in [
        &b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
    ] {
        assert!(
            frame_message(bad, false, false).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn backend_records_requests_byte_for_byte_and_ends_as_told() {
    let b = ScriptedBackend::start(|req| match req.path() {
        "/fin" => Reply::ok("bye").then(Ending::Close),
        "/rst" => {
            Reply::bytes("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart").then(Ending::Reset)
        }
        "/hints" => Reply::ok("final").interim(
            "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n",
            Duration::from_millis(10),
        ),
        _ => Reply::ok(req.target()),
    });
    let chunked = b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: x\r\n\r\n";
    let sized = b"POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nwxyz";
    let mut c = Client::connect(b.addr);
    let mut both = chunked.to_vec();
    both.extend_from_slice(sized);
    c.send(&both);
    assert_eq!(c.read_response().body, b"/c");
    assert_eq!(c.read_response().body, b"/s");
    let r = c.roundtrip(b"GET /hints HTTP/1.1\r\n\r\n");
    assert_eq!((r.interim.len(), r.body.as_slice()), (1, &b"final"[..]));
    assert_eq!(c.roundtrip(b"GET /fin HTTP/1.1\r\n\r\n").body, b"bye");
    c.expect_fin();
    let reqs = b.requests();
    assert_eq!(reqs.len(), 4);
    assert_eq!(reqs[0].raw(), chunked);
    assert_eq!(reqs[1].raw(), sized);
    assert!(reqs.iter().all(|r| r.conn == 0 && r.body_complete));
    let mut all = both.clone();
    all.extend_from_slice(b"GET /hints HTTP/1.1\r\n\r\nGET /fin HTTP/1.1\r\n\r\n");
    assert_eq!(b.connection(0).received, all);
    let mut c = Client::connect(b.addr);
    c.send(b"GET /rst HTTP/1.1\r\n\r\n");
    let e = c.try_read_response().unwrap_err();
    assert_eq!(e.failure, Failure::Reset, "{e}");
    assert_eq!(b.accepted(), 2);
    assert_eq!(b.requests()[4].index, 0);
}

#[test]
fn backend_hangs_until_dropped_and_early_answers_leave_the_body_unread() {
    let b = ScriptedBackend::start(|req| match req.path() {
        "/hang" => Reply::hang(),
        "/early" => Reply::ok("early").early(BodyRead::Never),
        _ => Reply::ok(req.target()),
    });
    let mut c = Client::connect(b.addr);
    c.send(b"POST /early HTTP/1.1\r\nContent-Length: 23\r\n\r\n");
    assert_eq!(c.read_response().body, b"early");
    c.send(b"GET /inside HTTP/1.1\r\n\r\n");
    assert_eq!(
        c.read_response().body,
        b"/inside",
        "the body was read as a request"
    );
    let mut h = Client::connect(b.addr);
    h.send(b"GET /hang HTTP/1.1\r\n\r\n");
    b.wait_for_requests(3);
    h.expect_open_for(Duration::from_millis(50));
    drop(b);
    h.expect_fin();
}

#[test]
fn backend_can_leave_a_connection_unread_behind_a_small_receive_buffer() {
    let b = ScriptedBackend::builder()
        .recv_buffer(4096)
        .never_read(|conn| conn == 0)
        .start(|_| Reply::ok("served"));
    let mut stuck = TcpStream::connect(b.addr).unwrap();
    stuck.set_nonblocking(true).unwrap();
    let chunk = [b'x'; 16 * 1024];
    let mut written = 0;
    loop {
        match stuck.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(written < 16 << 20, "the buffers never filled");
    }
    // The other connections are served as usual.
    let mut c = Client::connect(b.addr);
    assert_eq!(c.roundtrip(b"GET / HTTP/1.1\r\n\r\n").body, b"served");
    assert_eq!(b.accepted(), 2);
    assert!(b.connection(0).received.is_empty());
    assert!(b.connection(0).requests.is_empty());
    assert!(written > 0);
}
