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

/// An error answer in the middle of a pipeline: the requests before it are answered, and
/// the ones behind it either all get their answers in order (a refusal that keeps the
/// connection: 400 for want of a user id, 429, 503) or none is forwarded and the error
/// says `Connection: close`, then a clean FIN with nothing after it (400 for bad framing,
/// 413, 431, 502, 504): never lost silently on a connection that stays, never answered
/// out of order.
#[test]
fn an_error_answer_in_a_pipeline_keeps_or_closes_the_connection_as_it_says() {
    let b = ScriptedBackend::start(|req| match req.path() {
        "/reset" => Reply::reset(),
        "/hang" => Reply::hang(),
        p => Reply::ok(p),
    });
    let drained = ScriptedBackend::start(|_| Reply::ok("drained"));
    let r = Router::start(&format!(
        "[partitions.z]\nservers = [\"{}\"]\n[partitions.d]\nservers = [\"{}\"]\n[users]\nalice = \"z\"\ndora = \"d\"\n[health]\nenabled = false\n[timeouts]\nupstream_response_ms = 300\n[rate_limit.users.rita]\nqueries = 1\n",
        b.addr, drained.addr
    ));
    r.set_drained(drained.addr, true);
    let get =
        |path: &str, user: &str| format!("GET {path}?user_id={user} HTTP/1.1\r\nHost: t\r\n\r\n");
    let rita = get("/rita", "rita");
    let cases: [(&str, String, u16, bool); 8] = [
        ("no user id", "GET /nobody HTTP/1.1\r\nHost: t\r\n\r\n".into(), 400, true),
        ("rate limit", format!("{rita}{rita}{rita}"), 429, true),
        ("no server", get("/d", "dora"), 503, true),
        ("bad framing", "POST /x?user_id=alice HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx".into(), 400, false),
        ("body too large", format!("POST /x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 70000\r\n\r\n{}", " ".repeat(70000)), 413, false),
        ("head too large", format!("GET /x?user_id=alice HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n", "p".repeat(20000)), 431, false),
        ("upstream reset", "POST /reset HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\nContent-Length: 2\r\n\r\nhi".into(), 502, false),
        ("upstream timeout", get("/hang", "alice"), 504, false),
    ];
    for (n, (what, bad, status, keeps)) in cases.into_iter().enumerate() {
        let before = format!("/before/{n}");
        let after = format!("/after/{n}");
        let mut c = Client::connect(r.addr);
        c.send(format!("{}{bad}{}", get(&before, "alice"), get(&after, "alice")).as_bytes());
        assert_eq!(c.read_response().body, before.as_bytes(), "{what}");
        let mut resp = c.read_response();
        if what == "rate limit" {
            // Her burst first (its size is the limiter's business), then her refusals.
            let mut statuses = vec![resp.status];
            while statuses.len() < 3 {
                resp = c.read_response();
                statuses.push(resp.status);
            }
            assert!(statuses.is_sorted() && statuses[0] == 200, "{statuses:?}");
        }
        assert_eq!(resp.status, status, "{what}: {}", resp.text());
        if keeps {
            assert_eq!(resp.header("connection"), None, "{what}");
            assert_eq!(c.read_response().body, after.as_bytes(), "{what}");
            c.expect_open_for(Duration::from_millis(50));
        } else {
            assert_eq!(resp.header("connection"), Some("close"), "{what}");
            c.expect_fin();
            assert!(
                b.requests().iter().all(|r| r.path() != after),
                "{what}: a request behind a closing answer was forwarded"
            );
        }
    }
    assert_eq!(drained.request_count(), 0);
}
