//! Bad input over real sockets: each case gets its status, the connection is
//! closed when framing is in doubt, and not one byte reaches the backend.

mod common;

use std::time::Duration;

use common::assert_holds_for;
use common::backend::{Reply, ScriptedBackend};
use common::client::{get, request, Client};
use common::router::{dead_addr, Router};

/// A router in front of a recording backend that answers `200 ok` to anything.
fn setup(extra: &str) -> (Router, ScriptedBackend) {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = Router::start(&format!(
        "default_backend = \"{0}\"\n[partitions.zone_1]\nservers = [\"{0}\"]\n{extra}",
        b.addr
    ));
    (r, b)
}

/// Send `raw`, expect `status`, a clean close, and no byte received by the backend.
fn refused(r: &Router, b: &ScriptedBackend, raw: &[u8], status: u16) {
    let before = b.bytes_received();
    // (Long heads are shown by their start.)
    let shown = String::from_utf8_lossy(&raw[..raw.len().min(200)]);
    let mut c = Client::connect(r.addr);
    let _ = c.try_send(raw);
    let resp = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("no response to {shown:?}: {e}"));
    assert_eq!(resp.status, status, "{shown:?} -> {}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(!resp.text().trim().is_empty(), "a reason is given");
    c.expect_fin();
    // The refusal is decided before any upstream is contacted; give a stray write the
    // time to show up anyway.
    assert_holds_for(
        &format!("nothing reached the backend for {shown:?}"),
        Duration::from_millis(10),
        || b.bytes_received() == before,
    );
}

#[test]
fn framing_attacks_get_400_and_close() {
    let (r, b) = setup("");
    let cases: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Fold: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Nul: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Cr: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / FOO/1.1\r\nHost: t\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET nopath HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: content-length\r\nContent-Length: 1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n",
    ];
    for raw in cases {
        refused(&r, &b, raw, 400);
    }
}

#[test]
fn oversized_head_gets_431() {
    let (r, b) = setup("[limits]\nmax_head_bytes = 2048\nmax_headers = 20\n");
    let mut raw = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 4096));
    raw.extend_from_slice(b"\r\n\r\n");
    refused(&r, &b, &raw, 431);
    let mut raw = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 0..30 {
        raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    refused(&r, &b, &raw, 431);
}

/// A request line that does not end within `max_head_bytes` is a request-target longer
/// than ringgate parses: RFC 9112 §3 requires 414 for it (431 is for the header fields).
#[test]
fn request_line_over_the_head_limit_gets_414() {
    let (r, b) = setup("[limits]\nmax_head_bytes = 2048\n");
    let with_target_of = |n: usize| {
        let mut raw = b"GET /".to_vec();
        raw.extend(std::iter::repeat_n(b'a', n));
        raw.extend_from_slice(b" HTTP/1.1\r\nHost: t\r\n\r\n");
        raw
    };
    // At the limit: served.
    let fits = 2048 - with_target_of(0).len();
    assert_eq!(request(r.addr, &with_target_of(fits)).status, 200);
    // Past it, the request line complete within the limit: the fields are too large.
    refused(&r, &b, &with_target_of(fits + 1), 431);
    // The request line longer than the limit, or ending (its CR) on the limit's last byte.
    let line_end = b"GET / HTTP/1.1".len();
    for n in [2048 - line_end - 1, 2048 - line_end, 4000, 200_000] {
        refused(&r, &b, &with_target_of(n), 414);
    }
}

/// An `HTTP-version` of another major version (RFC 9110 §15.6.6): 505, not a 400 for a
/// malformed line. `PRI * HTTP/2.0` starts the HTTP/2 connection preface.
#[test]
fn other_major_versions_get_505() {
    let (r, b) = setup("");
    for raw in [
        &b"GET / HTTP/2.0\r\nHost: t\r\n\r\n"[..],
        b"GET / HTTP/3.0\r\nHost: t\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
        b"GET / HTTP/0.9\r\nHost: t\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        refused(&r, &b, raw, 505);
    }
    // Not a version at all: a bad request line.
    for raw in [
        &b"GET / HTTP/2\r\nHost: t\r\n\r\n"[..],
        b"GET / HTTP/20.0\r\nHost: t\r\n\r\n",
        b"GET / http/2.0\r\nHost: t\r\n\r\n",
        b"GET /a HTTP/2.0 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        refused(&r, &b, raw, 400);
    }
}

#[test]
fn body_over_scan_limit_gets_413_only_when_needed() {
    let (r, b) = setup("[limits]\nbody_scan_bytes = 1024\n");
    let body = format!(r#"{{"pad":"{}","user_id":"u"}}"#, "x".repeat(2000));
    let raw = format!("POST /o HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    refused(&r, &b, raw.as_bytes(), 413);
    let chunked = format!("POST /o HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    refused(&r, &b, chunked.as_bytes(), 413);
    // Same body with the user id in a header: not needed for routing, so forwarded.
    let raw = format!(
        "POST /o HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(request(r.addr, raw.as_bytes()).status, 200);
    // Non-JSON content types are not scanned either.
    let raw = format!("POST /o HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    assert_eq!(request(r.addr, raw.as_bytes()).status, 200);
}

#[test]
fn other_refusals() {
    let (r, b) = setup("");
    refused(
        &r,
        &b,
        b"GET / HTTP/1.1\r\nHost: t\r\nExpect: something-else\r\n\r\n",
        417,
    );
    refused(
        &r,
        &b,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
        501,
    );
}

#[test]
fn bad_request_after_good_ones_on_a_keep_alive_connection() {
    let (r, b) = setup("");
    let mut c = Client::connect(r.addr);
    assert_eq!(
        c.roundtrip(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n").status,
        200
    );
    let before = b.bytes_received();
    // A valid request pipelined behind an invalid one must not be served.
    c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabcGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response().status, 400);
    c.expect_fin();
    assert_holds_for(
        "nothing more reached the backend",
        Duration::from_millis(10),
        || b.bytes_received() == before,
    );
    assert_eq!(b.request_count(), 1);
}

#[test]
fn backend_down_gives_clear_status() {
    let dead = dead_addr();
    let r = Router::start(&format!(
        "default_backend = \"{dead}\"\n[partitions.z]\nservers = [\"{dead}\"]\n"
    ));
    let resp = get(r.addr, "/x", "X-User-Id: u\r\n");
    assert_eq!(resp.status, 502);
    assert!(resp.text().contains("could not connect"), "{}", resp.text());
}
