//! How the router closes a client connection it refuses: in stages (answer, FIN, read and
//! discard what the client still sends, close), so unread bytes never turn the close into
//! an RST that could destroy the answer in flight.

mod common;

use std::time::Duration;

use common::backend::{Reply, ScriptedBackend};
use common::client::Client;
use common::router::Router;

fn router() -> (ScriptedBackend, Router) {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = Router::start(&format!(
        "default_backend = \"{}\"\n[health]\nenabled = false\n",
        b.addr
    ));
    (b, r)
}

/// Send `head` and `body` (written while the router may already be answering), read the
/// answer, and require a clean FIN with nothing after it.
fn refused_cleanly(head: &str, body: &[u8], status: u16) {
    let (b, r) = router();
    let mut c = Client::connect(r.addr);
    c.send(head.as_bytes());
    c.send(body);
    let resp = c.read_response();
    assert_eq!(resp.status, status, "{head}");
    assert_eq!(resp.header("connection"), Some("close"));
    c.finish_sending();
    c.expect_fin();
    // Nothing complete reaches the upstream (the head of a streamed body may have been
    // forwarded before its framing failed; the upstream never gets a whole request).
    assert!(
        b.requests().iter().all(|r| !r.body_complete),
        "{:?}",
        b.requests()
    );
    assert_eq!(b.answered_count(), 0);
}

#[test]
fn a_body_too_large_to_scan_is_refused_with_a_clean_close() {
    let body = vec![b' '; 300_000];
    refused_cleanly(
        &format!(
            "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
        &body,
        413,
    );
}

#[test]
fn a_bad_chunk_size_with_a_large_body_behind_it_is_refused_with_a_clean_close() {
    let mut body = b"zz\r\n".to_vec();
    body.resize(300_000, b'x');
    refused_cleanly(
        "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\nTransfer-Encoding: chunked\r\n\r\n",
        &body,
        400,
    );
}

#[test]
fn an_oversized_head_is_refused_with_a_clean_close() {
    let head = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(200_000)
    );
    refused_cleanly(&head, b"", 431);
}

fn bounded_to_two() -> (ScriptedBackend, Router) {
    // `/held` is answered late: its connection is busy meanwhile.
    let b = ScriptedBackend::start(|req| match req.target() {
        "/held" => Reply::ok("/held").delayed(Duration::from_millis(1500)),
        t => Reply::ok(t),
    });
    let r = Router::start_with_listener(
        &format!(
            "default_backend = \"{}\"\n[health]\nenabled = false\n",
            b.addr
        ),
        "max_connections_per_worker = 2",
    );
    (b, r)
}

#[test]
fn connections_beyond_the_bound_get_503_and_a_clean_close() {
    let (b, r) = bounded_to_two();
    // Two connections take the worker's two places, each served once and then busy (its
    // next request in flight): none is idle, none can make room.
    let mut held: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = Client::connect(r.addr);
            assert_eq!(
                c.roundtrip(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").status,
                200
            );
            c.send(b"GET /held HTTP/1.1\r\nHost: t\r\n\r\n");
            c
        })
        .collect();
    b.wait_for_requests(4);
    let mut third = Client::connect(r.addr);
    third.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = third.read_response();
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(resp.header("connection"), Some("close"));
    third.finish_sending();
    third.expect_fin();
    assert_eq!(r.metrics().refused, 1);
    assert_eq!(r.metrics().reclaimed, 0);
    // The held ones still work.
    for c in &mut held {
        assert_eq!(c.read_response().body, b"/held");
    }
}

/// At the bound, the connection idle the longest makes room for a new one, as nginx
/// reuses its keep-alive connections: it gets a clean close (FIN, nothing after its last
/// answer), as at its idle timeout, and the newcomer is served. (Idle keep-alive clients
/// held every place until their idle timeout, a minute by default, while every new client
/// was refused 503: a few thousand idle connections shut a worker to everyone else.)
#[test]
fn an_idle_connection_makes_room_for_a_new_one_at_the_bound() {
    let (b, r) = bounded_to_two();
    let mut oldest = Client::connect(r.addr);
    assert_eq!(
        oldest.roundtrip(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n").body,
        b"/a"
    );
    let mut newer = Client::connect(r.addr);
    assert_eq!(
        newer.roundtrip(b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n").body,
        b"/b"
    );
    let mut third = Client::connect(r.addr);
    let resp = third.roundtrip(b"GET /c HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, b"/c");
    oldest.expect_fin();
    // The others stay.
    assert_eq!(
        newer.roundtrip(b"GET /b2 HTTP/1.1\r\nHost: t\r\n\r\n").body,
        b"/b2"
    );
    assert_eq!(
        third.roundtrip(b"GET /c2 HTTP/1.1\r\nHost: t\r\n\r\n").body,
        b"/c2"
    );
    common::wait_until(
        "the count is back at the bound",
        Duration::from_secs(5),
        || r.metrics().open_connections == 2,
    );
    let m = r.metrics();
    assert_eq!((m.reclaimed, m.refused), (1, 0));
    assert_eq!(b.request_count(), 5);
}

#[test]
fn a_body_that_will_be_refused_is_not_invited_with_100_continue() {
    let (b, r) = router();
    let mut c = Client::connect(r.addr);
    c.send(b"POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n");
    let first = c.read_message();
    assert_eq!(first.status, 413, "refused before any 100 Continue");
    c.finish_sending();
    c.expect_fin();
    // A body that will be read is invited.
    let mut c = Client::connect(r.addr);
    let body = br#"{"user_id":"alice"}"#;
    c.send(
        format!(
            "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.read_message().status, 100);
    c.send(body);
    assert_eq!(c.read_response().status, 200);
    assert_eq!(b.request_count(), 1);
}
