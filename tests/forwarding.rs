//! Forwarding over real sockets: pipelining, chunked both ways, large bodies through the
//! splice and copy paths, hop-by-hop removal, the edge's own forwarding fields (plain and
//! TLS listeners, trusted and untrusted peers), Expect, HTTP/1.0, HEAD, upgrades.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::backend::{Ending, Reply, ScriptedBackend};
use common::client::{get, request, Client, Response};
use common::router::{demo_backend, fnv_hex, pattern_byte, Router};
use common::tls::{TestCert, TlsClient};

fn one_backend(extra: &str) -> (Router, SocketAddr) {
    let b = demo_backend("zone_1");
    let r = Router::start(&format!(
        "default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n{extra}"
    ));
    (r, b)
}

#[test]
fn pipelined_requests_answer_in_order() {
    let (r, _) = one_backend("");
    let mut c = Client::connect(r.addr);
    let mut batch = Vec::new();
    for i in 0..20 {
        if i % 3 == 0 {
            let body = format!(r#"{{"user_id":"u{i}","n":{i}}}"#);
            batch.extend_from_slice(
                format!("POST /p/{i} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
            );
        } else if i % 3 == 1 {
            batch.extend_from_slice(
                format!(
                    "GET /p/{i}?user_id=u{i}&delay_ms={} HTTP/1.1\r\nHost: t\r\n\r\n",
                    20 - i
                )
                .as_bytes(),
            );
        } else {
            batch.extend_from_slice(
                format!("POST /p/{i} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").as_bytes(),
            );
        }
    }
    c.send(&batch);
    for i in 0..20 {
        let resp = c.read_response();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json_field("path").unwrap(), format!("/p/{i}"));
    }
}

/// A backend that answers each request with its method, target and body framing (`HEAD`
/// with a `Content-Length` and no body); paths with `slow` wait a little first, paths with
/// `hints` get a `103` before the answer.
fn describing_backend() -> ScriptedBackend {
    ScriptedBackend::start(|req| {
        if req.method() == "HEAD" {
            return Reply::bytes("HTTP/1.1 200 OK\r\nContent-Length: 123\r\n\r\n");
        }
        let framing = req
            .header("content-length")
            .or(req.header("transfer-encoding"))
            .unwrap_or_default();
        let reply = Reply::ok(format!("{} {} {framing}", req.method(), req.target()));
        if req.target().contains("slow") {
            reply.delayed(Duration::from_millis(5))
        } else if req.target().contains("hints") {
            reply.interim(
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                Duration::ZERO,
            )
        } else {
            reply
        }
    })
}

/// One hundred requests in one write — Commands and Queries, with and without bodies
/// (length and chunked), HEAD, answers preceded by a `103`, for users of two partitions —
/// then a half-close: every answer comes once, in order, then a clean FIN; each partition's
/// server saw its own requests, each once, in order.
#[test]
fn a_hundred_pipelined_requests_to_two_partitions_are_answered_in_order_once() {
    let (a, b) = (describing_backend(), describing_backend());
    let r = Router::start(&format!(
        "[partitions.za]\nservers = [\"{}\"]\n[partitions.zb]\nservers = [\"{}\"]\n[users]\nalice = \"za\"\nbob = \"zb\"\n[health]\nenabled = false\n",
        a.addr, b.addr
    ));
    let mut c = Client::connect(r.addr);
    let (mut batch, mut want, mut sent_to) = (Vec::new(), Vec::new(), [Vec::new(), Vec::new()]);
    for i in 0..100 {
        let (user, side) = if i % 2 == 0 { ("alice", 0) } else { ("bob", 1) };
        let (raw, answer) = match i % 6 {
            0 => {
                let body = format!(r#"{{"user_id":"{user}","n":{i}}}"#);
                let target = format!("/api/spot/v2/order/{i}");
                (
                    format!("POST {target} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
                    format!("POST {target} {}", body.len()),
                )
            }
            1 => {
                let target = format!("/api/spot/user/q/{i}?user_id={user}");
                (
                    format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n"),
                    format!("GET {target} "),
                )
            }
            2 => {
                let target = format!("/api/spot/user/slow/{i}");
                (
                    format!("GET {target} HTTP/1.1\r\nHost: t\r\nX-User-Id: {user}\r\n\r\n"),
                    format!("GET {target} "),
                )
            }
            3 => (
                format!(
                    "HEAD /api/spot/user/h/{i} HTTP/1.1\r\nHost: t\r\nX-User-Id: {user}\r\n\r\n"
                ),
                String::new(),
            ),
            4 => {
                let target = format!("/api/spot/v2/c/{i}");
                (
                    format!("POST {target} HTTP/1.1\r\nHost: t\r\nX-User-Id: {user}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
                    format!("POST {target} chunked"),
                )
            }
            _ => {
                let target = format!("/api/spot/user/hints/{i}");
                (
                    format!("GET {target} HTTP/1.1\r\nHost: t\r\nX-User-Id: {user}\r\n\r\n"),
                    format!("GET {target} "),
                )
            }
        };
        let target = raw.split(' ').nth(1).unwrap().to_string();
        batch.extend_from_slice(raw.as_bytes());
        want.push(answer);
        sent_to[side].push(target);
    }
    c.send(&batch);
    c.finish_sending();
    for (i, answer) in want.iter().enumerate() {
        if answer.is_empty() {
            let resp = c.read_head_response();
            assert_eq!(resp.status, 200, "request {i}");
            assert_eq!(resp.header("content-length"), Some("123"), "request {i}");
        } else {
            let resp = c.read_response();
            assert_eq!(resp.text(), *answer, "request {i}");
            assert_eq!(resp.interim.len(), usize::from(answer.contains("hints")));
        }
    }
    c.expect_fin();
    for (backend, targets) in [(&a, &sent_to[0]), (&b, &sent_to[1])] {
        let seen: Vec<String> = backend
            .requests()
            .iter()
            .map(|r| r.target().to_string())
            .collect();
        assert_eq!(&seen, targets);
    }
}

#[test]
fn chunked_request_with_user_in_body_and_chunked_response() {
    let (r, _) = one_backend("");
    let body = r#"{"symbol":"X","user_id":"carol"}"#;
    let (a, b) = body.split_at(10);
    let raw = format!(
        "POST /api/spot/v2/order?chunked=1 HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\nX-Trailer: yes\r\n\r\n",
        a.len(),
        b.len()
    );
    let mut c = Client::connect(r.addr);
    let resp = c.roundtrip(raw.as_bytes());
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        resp.json_field("body_fnv64").unwrap(),
        fnv_hex(body.as_bytes())
    );
    assert_eq!(resp.json_field("body_len").unwrap(), body.len().to_string());
    // The connection is still usable afterwards.
    assert_eq!(
        c.roundtrip(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
            .status,
        200
    );
}

fn big_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
}

fn large_bodies_both_ways(threshold: u64) {
    let (r, _) = one_backend(&format!("[limits]\nsplice_threshold_bytes = {threshold}\n"));
    let body = big_body(6 * 1024 * 1024 + 123);
    let mut c = Client::connect(r.addr);
    // Request direction (Content-Length), user id in a header so the body is not scanned.
    let mut raw = format!(
        "POST /upload HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let resp = c.roundtrip(&raw);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json_field("body_len").unwrap(), body.len().to_string());
    assert_eq!(resp.json_field("body_fnv64").unwrap(), fnv_hex(&body));
    // Request direction, chunked with large chunks.
    let mut raw =
        b"POST /upload HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for part in body.chunks(1024 * 1024 + 7) {
        raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        raw.extend_from_slice(part);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let resp = c.roundtrip(&raw);
    assert_eq!(resp.json_field("body_fnv64").unwrap(), fnv_hex(&body));
    // Response direction: Content-Length and chunked.
    for chunked in [0, 1] {
        let n = 5 * 1024 * 1024 + 17;
        let resp = c.roundtrip(format!("GET /dl?resp_bytes={n}&chunked={chunked} HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n").as_bytes());
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body.len(), n);
        assert!(
            resp.body
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern_byte(i as u64)),
            "byte-identical"
        );
    }
    // Still in sync for a small request.
    assert_eq!(
        c.roundtrip(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n")
            .json_field("path")
            .unwrap(),
        "/small"
    );
    let metrics = r.metrics();
    assert_eq!(metrics.workers, 1, "one worker answered");
    let spliced = metrics.spliced_bytes;
    if threshold == u64::MAX {
        assert_eq!(spliced, 0, "copy path only");
    } else {
        // Both request bodies and the Content-Length response, minus what arrived with
        // the heads (the demo backend's 64 KiB response chunks are copied: each chunk is
        // partly in the buffer already, leaving less than the threshold to splice).
        assert!(
            spliced > 15 * 1024 * 1024,
            "splice path used: {spliced} bytes"
        );
    }
}

#[test]
fn multi_megabyte_bodies_through_splice() {
    large_bodies_both_ways(64 * 1024);
}

/// 0: every run of body bytes is spliced, however small — but an empty one (between
/// chunks, where the chunk framing is read) is not a run to splice.
#[test]
fn multi_megabyte_bodies_through_splice_from_the_first_byte() {
    large_bodies_both_ways(0);
}

#[test]
fn multi_megabyte_bodies_through_copy() {
    large_bodies_both_ways(u64::MAX);
}

/// A chunked body of `body` in chunks of `chunk` bytes (the last one shorter).
fn chunked_body(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut raw = Vec::new();
    for part in body.chunks(chunk) {
        raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        raw.extend_from_slice(part);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw
}

/// Bodies of every size around the relay's thresholds — the inline body (16 KiB), the
/// client buffer (16 KiB, less the head), the splice threshold and a pipe's capacity
/// (64 KiB) — arrive byte for byte both ways, Content-Length and chunked (chunks around
/// the threshold too), with the head and body in one write or two.
#[test]
fn bodies_around_every_threshold_arrive_byte_exact() {
    let (r, _) = one_backend("");
    let mut c = Client::connect(r.addr);
    let k = 1024usize;
    let mut sizes = vec![0, 1, 16 * k - 200, 16 * k - 100];
    for base in [16 * k, 64 * k, 128 * k, k * k] {
        sizes.extend([base - 1, base, base + 1]);
    }
    let head = "POST /up HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Type: application/octet-stream\r\n";
    for n in sizes {
        let body = big_body(n);
        let digest = fnv_hex(&body);
        let cl_head = format!("{head}Content-Length: {n}\r\n\r\n");
        let mut raw = cl_head.clone().into_bytes();
        raw.extend_from_slice(&body);
        let resp = c.roundtrip(&raw);
        assert_eq!(resp.json_field("body_fnv64").unwrap(), digest, "{n} bytes");
        c.send(cl_head.as_bytes());
        let resp = c.roundtrip(&body);
        assert_eq!(
            resp.json_field("body_fnv64").unwrap(),
            digest,
            "{n} bytes after the head"
        );
        for chunk in [n.max(1), 64 * k - 1, 64 * k, 64 * k + 1] {
            let mut raw = format!("{head}Transfer-Encoding: chunked\r\n\r\n").into_bytes();
            raw.extend_from_slice(&chunked_body(&body, chunk));
            let resp = c.roundtrip(&raw);
            assert_eq!(
                resp.json_field("body_fnv64").unwrap(),
                digest,
                "{n} bytes in {chunk}-byte chunks"
            );
        }
        for chunked in [0, 1] {
            let resp = c.roundtrip(format!("GET /dl?resp_bytes={n}&chunked={chunked} HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n").as_bytes());
            assert_eq!(
                resp.body.len(),
                n,
                "a {n}-byte response (chunked={chunked})"
            );
            assert!(
                resp.body
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == pattern_byte(i as u64)),
                "a {n}-byte response (chunked={chunked}) byte for byte"
            );
        }
    }
}

#[test]
fn hop_by_hop_fields_are_removed_and_xff_added() {
    let (r, _) = one_backend("");
    let raw = b"GET /h?echo=head HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\nX-Private: secret\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Keep:  spaced  value\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n";
    let resp = request(r.addr, raw);
    let head = resp.json_field("head").unwrap();
    for gone in [
        "Connection:",
        "Keep-Alive:",
        "X-Private",
        "TE:",
        "Proxy-Connection",
        "Upgrade:",
    ] {
        assert!(!head.contains(gone), "{gone} leaked: {head}");
    }
    assert!(
        head.starts_with("GET /h?echo=head HTTP/1.1\r\nHost: t\r\n"),
        "{head}"
    );
    assert!(
        head.contains("X-Keep:  spaced  value\r\n"),
        "bytes as received: {head}"
    );
    // A client's own X-Forwarded-For is dropped (anyone can write one); ringgate's says
    // who the peer is.
    assert!(!head.contains("10.9.9.9"), "{head}");
    assert!(head.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{head}");
}

#[test]
fn client_forwarding_fields_are_kept_only_from_trusted_proxies() {
    let raw = b"GET /h?echo=head HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.9.9.9, 10.8.8.8\r\nforwarded: for=10.9.9.9\r\nX-Real-IP: 10.9.9.9\r\nX_Forwarded_For: 10.7.7.7\r\n\r\n";
    // Untrusted peer (the default): every spelling of every forwarding field is dropped.
    let (r, _) = one_backend("");
    let head = request(r.addr, raw).json_field("head").unwrap();
    for spoof in ["10.9.9.9", "10.8.8.8", "10.7.7.7", "orwarded:", "X-Real-IP"] {
        assert!(!head.contains(spoof), "{spoof} forwarded: {head}");
    }
    assert!(
        head.ends_with("X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"),
        "{head}"
    );
    // Trusted peer (loopback is listed as a CIDR block): the chain is kept, in place, and
    // extended with the peer.
    let (r, _) = one_backend("[forward]\ntrusted_proxies = [\"10.0.0.1\", \"127.0.0.0/8\"]\n");
    let head = request(r.addr, raw).json_field("head").unwrap();
    assert!(
        head.contains("X-Forwarded-For: 10.9.9.9, 10.8.8.8\r\nforwarded: for=10.9.9.9\r\nX-Real-IP: 10.9.9.9\r\n"),
        "{head}"
    );
    assert!(
        head.ends_with("X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"),
        "{head}"
    );
}

#[test]
fn xff_can_be_disabled() {
    let (r, _) = one_backend("[forward]\nx_forwarded_for = false\n");
    let head = get(r.addr, "/h?echo=head", "").json_field("head").unwrap();
    assert!(!head.contains("X-Forwarded-For"), "{head}");
}

#[test]
fn expect_100_continue_both_when_body_is_scanned_and_not() {
    let (r, _) = one_backend("");
    for (hdr, body) in [
        ("", r#"{"user_id":"a"}"#),
        ("X-User-Id: a\r\n", "plain body"),
    ] {
        let mut c = Client::connect(r.addr);
        c.send(format!("POST /e HTTP/1.1\r\nHost: t\r\n{hdr}Expect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
        let interim = c.read_message();
        assert_eq!(interim.raw, b"HTTP/1.1 100 Continue\r\n\r\n");
        c.send(body.as_bytes());
        let resp = c.read_response();
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.json_field("body_fnv64").unwrap(),
            fnv_hex(body.as_bytes())
        );
    }
}

#[test]
fn http10_requests_and_head_responses() {
    let (r, _) = one_backend("");
    let mut c = Client::connect(r.addr);
    let resp = c.roundtrip(b"GET /old HTTP/1.0\r\nX-User-Id: u\r\n\r\n");
    assert_eq!(resp.status, 200);
    c.expect_fin(); // HTTP/1.0 without keep-alive closes
    let mut c = Client::connect(r.addr);
    for _ in 0..3 {
        let resp = c.roundtrip(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(resp.header("connection"), Some("keep-alive"));
    }
    let mut c = Client::connect(r.addr);
    c.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = c.read_head_response();
    assert_eq!(resp.status, 200);
    assert!(resp.header("content-length").is_some());
    assert_eq!(
        c.roundtrip(b"GET /after-head HTTP/1.1\r\nHost: t\r\n\r\n")
            .json_field("path")
            .unwrap(),
        "/after-head"
    );
}

/// RFC 9110 §2.5: a message of a later minor version of HTTP/1 is processed as HTTP/1.1;
/// and an intermediary forwards with its own version (§6.2), so the backend, which may not
/// know `HTTP/1.2`, reads `HTTP/1.1`.
#[test]
fn a_later_http1_minor_version_is_served_as_http11() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = Router::start(&format!(
        "default_backend = \"{0}\"\n[partitions.zone_1]\nservers = [\"{0}\"]\n",
        b.addr
    ));
    let mut c = Client::connect(r.addr);
    for (raw, target) in [
        (&b"GET /v12 HTTP/1.2\r\nHost: t\r\n\r\n"[..], "/v12"),
        (
            b"GET /v19?user_id=u HTTP/1.9\r\nHost: t\r\n\r\n",
            "/v19?user_id=u",
        ),
    ] {
        let resp = c.roundtrip(raw);
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("connection"), None, "kept alive, as HTTP/1.1");
        let seen = b.requests().last().unwrap().head_text();
        assert!(
            seen.starts_with(&format!("GET {target} HTTP/1.1\r\nHost: t\r\n")),
            "{seen:?}"
        );
    }
    // As HTTP/1.1, it needs its Host.
    let mut c = Client::connect(r.addr);
    assert_eq!(c.roundtrip(b"GET /v12 HTTP/1.2\r\n\r\n").status, 400);
    c.expect_fin();
    assert_eq!(b.request_count(), 2);
}

#[test]
fn connection_close_is_honoured() {
    let (r, _) = one_backend("");
    let mut c = Client::connect(r.addr);
    let resp = c.roundtrip(b"GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(resp.header("connection"), Some("close"));
    c.expect_fin();
}

/// A backend that upgrades `/ws` with 101 and then echoes bytes, and answers anything else
/// with a plain 200.
fn upgrade_backend() -> ScriptedBackend {
    ScriptedBackend::start(|req| {
        if req.method() == "GET" && req.target() == "/ws" && req.header("upgrade").is_some() {
            Reply::bytes(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n",
            )
            .then(Ending::Echo)
        } else {
            Reply::bytes("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")
        }
    })
}

#[test]
fn upgrade_tunnels_only_after_101() {
    let b = upgrade_backend();
    let r = Router::start(&format!(
        "default_backend = \"{0}\"\n[partitions.z]\nservers = [\"{0}\"]\n[forward]\nupgrade_protocols = [\"echo\"]\n",
        b.addr
    ));
    // Declined upgrade: the connection stays HTTP.
    let mut c = Client::connect(r.addr);
    let resp =
        c.roundtrip(b"GET /no HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"no");
    assert_eq!(
        c.roundtrip(b"GET /still-http HTTP/1.1\r\nHost: t\r\n\r\n")
            .body,
        b"no"
    );
    // Accepted upgrade: 101, then raw bytes both ways (including bytes sent early).
    let mut c = Client::connect(r.addr);
    c.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly");
    let resp = c.read_response();
    let head = String::from_utf8_lossy(&resp.raw).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("Upgrade: echo") && head.contains("Connection: upgrade"),
        "{head}"
    );
    assert_eq!(c.read_raw(5), b"early");
    c.send(b"ping-pong");
    assert_eq!(c.read_raw(9), b"ping-pong");
    // The tunnel carried the bytes as sent: the backend read them after the head.
    let ws = b
        .requests()
        .into_iter()
        .find(|r| r.target() == "/ws")
        .unwrap();
    assert!(b
        .connection(ws.conn)
        .received
        .ends_with(b"\r\n\r\nearlyping-pong"));
    // Closing the client's side ends the tunnel cleanly.
    c.finish_sending();
    c.expect_fin();
}

#[test]
fn upgrades_to_unlisted_protocols_stay_http() {
    let b = upgrade_backend();
    // Default allow-list: websocket only. An `echo` upgrade is forwarded without its
    // Upgrade field, so even a backend that would switch answers as plain HTTP.
    let r = Router::start(&format!(
        "default_backend = \"{0}\"\n[partitions.z]\nservers = [\"{0}\"]\n",
        b.addr
    ));
    let mut c = Client::connect(r.addr);
    let resp =
        c.roundtrip(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"no");
    assert_eq!(
        b.requests()[0].header("upgrade"),
        None,
        "Upgrade was not forwarded"
    );
}

#[test]
fn interim_responses_are_relayed_before_the_final_one() {
    let b = ScriptedBackend::start(|req| {
        Reply::ok(req.target())
            .interim(
                "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
                Duration::from_millis(20),
            )
            .interim(
                "HTTP/1.1 103 Early Hints\r\nLink: </app.js>\r\n\r\n",
                Duration::ZERO,
            )
    });
    let r = Router::start(&format!(
        "default_backend = \"{0}\"\n[partitions.z]\nservers = [\"{0}\"]\n",
        b.addr
    ));
    let mut c = Client::connect(r.addr);
    for path in ["/hinted", "/again"] {
        let resp = c.roundtrip(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert_eq!((resp.status, resp.body.as_slice()), (200, path.as_bytes()));
        let links: Vec<_> = resp
            .interim
            .iter()
            .map(|i| (i.status, i.header("link")))
            .collect();
        assert_eq!(
            links,
            vec![
                (103, Some("</style.css>; rel=preload")),
                (103, Some("</app.js>"))
            ]
        );
    }
    c.expect_open_for(Duration::from_millis(20));
}

#[test]
fn an_http10_client_is_sent_no_interim_response() {
    // RFC 9110 15.2: a server must not send a 1xx response to an HTTP/1.0 client, which
    // would read the 103 as its answer and the final response as garbage.
    let b = ScriptedBackend::start(|req| {
        Reply::ok(req.target()).interim(
            "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
            Duration::ZERO,
        )
    });
    let r = Router::start(&format!(
        "default_backend = \"{0}\"\n[partitions.z]\nservers = [\"{0}\"]\n",
        b.addr
    ));
    let mut c = Client::connect(r.addr);
    let resp = c.roundtrip(b"GET /old HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (200, b"/old".as_slice())
    );
    assert!(resp.interim.is_empty(), "{:?}", resp.interim);
    // The same backend's hints still reach an HTTP/1.1 client on the same connection.
    let resp = c.roundtrip(b"GET /new HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (200, b"/new".as_slice())
    );
    assert_eq!(resp.interim.len(), 1);
    assert_eq!(resp.interim[0].status, 103);
    c.expect_open_for(Duration::from_millis(20));
}

#[test]
fn an_http10_upstreams_answer_carries_ringgates_version() {
    // RFC 9110 §6.2: an intermediary sends its own version. `HTTP/1.0` relayed to an
    // HTTP/1.1 client would tell it the connection closes after this answer (without
    // `Connection: keep-alive`, which is hop-by-hop and dropped) while ringgate keeps it.
    let b = ScriptedBackend::start(|req| {
        let connection = if req.target() == "/ka" {
            "Connection: keep-alive\r\n"
        } else {
            ""
        };
        Reply::bytes(format!(
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n{connection}\r\nok"
        ))
    });
    let r = Router::start(&format!(
        "default_backend = \"{0}\"\n[partitions.z]\nservers = [\"{0}\"]\n",
        b.addr
    ));
    let mut c = Client::connect(r.addr);
    for path in ["/ka", "/plain", "/ka"] {
        let resp = c.roundtrip(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert_eq!(
            (resp.status, resp.body.as_slice()),
            (200, b"ok".as_slice()),
            "{path}"
        );
        assert!(
            resp.raw.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{path}: {:?}",
            resp.text()
        );
        assert_eq!(resp.header("connection"), None, "{path}");
    }
    c.expect_open_for(Duration::from_millis(20));
}

#[test]
fn the_demo_backend_answers_the_same_request_with_the_same_length() {
    // `ab` counts a change of length as a failed request: the `served` counter must not
    // change the body's length as it grows from 9 to 10 and beyond.
    let demo = demo_backend("zone_1");
    let lengths: Vec<usize> = (0..12).map(|_| get(demo, "/same", "").body.len()).collect();
    assert!(lengths.windows(2).all(|w| w[0] == w[1]), "{lengths:?}");
}

/// An untrusted client's `X-Forwarded-Proto` / `X-Forwarded-Host` (and `_` spellings)
/// reach the backend, while `Forwarded: proto=https;host=...` — the same facts in the
/// RFC 7239 spelling — is dropped: a plain-HTTP client can tell the backend it came over
/// TLS (or from another host).
#[test]
fn untrusted_x_forwarded_proto_and_host_are_dropped() {
    let (r, _) = one_backend("");
    let raw = b"GET /h?echo=head HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: bank.example\r\nX_Forwarded_Proto: https\r\nForwarded: proto=https;host=bank.example\r\n\r\n";
    let head = request(r.addr, raw).json_field("head").unwrap();
    assert!(!head.contains("orwarded: "), "Forwarded dropped: {head}");
    for forged in ["X-Forwarded-Host", "X_Forwarded_Proto"] {
        assert!(
            !head.contains(forged),
            "{forged} forwarded from an untrusted client: {head}"
        );
    }
    // Only ringgate's own: the client came in cleartext.
    assert_eq!(field_values(&head, "x-forwarded-proto"), ["http"], "{head}");
}

/// `Connection: Content-Type` drops the field ringgate decided the body scan by: ringgate
/// sees `text/plain` (no scan, so no user: default backend) while the backend gets a
/// JSON body naming bob and *no* content type — which ringgate's own rule reads as JSON.
#[test]
fn connection_cannot_remove_the_content_type_routing_depended_on() {
    let z1 = demo_backend("zone_1");
    let z2 = demo_backend("zone_2");
    let r = Router::start(&format!(
        "default_backend = \"zone_1\"\n[partitions.zone_1]\nservers = [\"{z1}\"]\n[partitions.zone_2]\nservers = [\"{z2}\"]\n[users]\nbob = \"zone_2\"\n"
    ));
    let body = r#"{"user_id":"bob","qty":1}"#;
    let raw = format!(
        "POST /api/spot/v2/order?echo=head HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nConnection: Content-Type\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let resp = request(r.addr, raw.as_bytes());
    if resp.status == 200 {
        let head = resp.json_field("head").unwrap();
        let ct_forwarded = head.to_ascii_lowercase().contains("content-type:");
        assert!(
            ct_forwarded || resp.zone() == "zone_2",
            "bob's order went to {} with no Content-Type: {head}",
            resp.zone()
        );
    } else {
        assert_eq!(resp.status, 400);
    }
}

/// On a dual-stack listener an IPv4 client is `::ffff:a.b.c.d` to the socket. The trust
/// check reads it as IPv4 (`to_canonical`), but `X-Forwarded-For` carries the mapped
/// IPv6 form, so a backend's IPv4 allow-lists / rate limits keyed by the IP miss it.
#[test]
fn xff_of_an_ipv4_client_on_a_dual_stack_listener_is_ipv4() {
    let b = demo_backend("zone_1");
    let text = format!(
        "default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n[listener]\naddress = \"[::]:0\"\n[admin]\naddress = \"\"\n[workers]\ncount = 1\npin = false\n"
    );
    let config = ringgate::config::Config::parse(&text, Path::new("t.toml")).unwrap();
    let server = match ringgate::runtime::server::Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("no IPv6 listener here: {e}");
            return;
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], server.listen_addr.port()));
    let mut c = Client::connect(addr);
    let resp = c.roundtrip(b"GET /h?echo=head HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = resp.json_field("head").unwrap();
    assert!(head.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{head}");
    drop(server);
}

/// A trusted proxy written in the IPv4-mapped form (as a dual-stack listener reports an
/// IPv4 peer, e.g. in logs) never matches: peers are compared in canonical IPv4 form.
#[test]
fn trusted_proxy_in_ipv4_mapped_form_is_trusted() {
    let (r, _) = one_backend("[forward]\ntrusted_proxies = [\"::ffff:127.0.0.0/104\"]\n");
    let raw = b"GET /h?echo=head HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n";
    let head = request(r.addr, raw).json_field("head").unwrap();
    assert!(head.contains("X-Forwarded-For: 10.9.9.9\r\n"), "{head}");
}

/// A router whose every request goes to `b`, TLS on the listener when `cert` is given.
fn router_to(b: SocketAddr, cert: Option<&TestCert>, extra: &str) -> Router {
    let config = format!(
        "default_backend = \"{b}\"\n[partitions.z]\nservers = [\"{b}\"]\n[health]\nenabled = false\n{extra}"
    );
    match cert {
        None => Router::start(&config),
        Some(cert) => Router::start_with_listener(
            &config,
            &format!(
                "[listener.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                cert.cert.display(),
                cert.key.display()
            ),
        ),
    }
}

/// A client connection to the router, in cleartext or over TLS.
enum Conn {
    Plain(Client),
    Tls(Box<TlsClient>),
}

impl Conn {
    fn open(r: &Router, cert: Option<&TestCert>) -> Conn {
        match cert {
            None => Conn::Plain(Client::connect(r.addr)),
            Some(cert) => Conn::Tls(Box::new(TlsClient::connect(
                r.addr,
                cert.client_config(&[&rustls::version::TLS13]),
            ))),
        }
    }

    fn roundtrip(&mut self, raw: &[u8]) -> Response {
        match self {
            Conn::Plain(c) => c.roundtrip(raw),
            Conn::Tls(c) => c.roundtrip(raw),
        }
    }
}

/// Send `raw` and return the head the backend received for it.
fn forwarded_head(b: &ScriptedBackend, c: &mut Conn, raw: &[u8]) -> String {
    let before = b.request_count();
    assert_eq!(c.roundtrip(raw).status, 200);
    let requests = b.requests();
    assert_eq!(requests.len(), before + 1);
    requests[before].head_text()
}

/// The values of every field of `head` named `name` (any case, `_` read as `-`).
fn field_values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.replace('_', "-").eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// A backend behind a TLS listener learns from `X-Forwarded-Proto` that its client came
/// over TLS, and one behind a cleartext listener that it did not: ringgate drops an
/// untrusted client's claim and states the listener's scheme. A trusted proxy knows how
/// *its* client came: its field is kept and not contradicted by a second one.
#[test]
fn x_forwarded_proto_names_the_listeners_scheme() {
    let cert = TestCert::new("xfp");
    for tls in [false, true] {
        let (scheme, other) = if tls {
            ("https", "http")
        } else {
            ("http", "https")
        };
        for trusted in [false, true] {
            let b = ScriptedBackend::start(|_| Reply::ok("ok"));
            let forward = if trusted {
                "[forward]\ntrusted_proxies = [\"127.0.0.0/8\"]\n"
            } else {
                ""
            };
            let cert = tls.then_some(&cert);
            let r = router_to(b.addr, cert, forward);
            let mut c = Conn::open(&r, cert);
            let case = format!("tls={tls} trusted={trusted}");

            let head = forwarded_head(&b, &mut c, b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n");
            assert_eq!(
                field_values(&head, "x-forwarded-proto"),
                [scheme],
                "{case}: {head}"
            );
            assert!(
                head.ends_with(&format!(
                    "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: {scheme}\r\n\r\n"
                )),
                "{case}: {head}"
            );

            let raw = format!(
                "GET /b HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: {other}\r\nX_Forwarded_Proto: {other}\r\n\r\n"
            );
            let head = forwarded_head(&b, &mut c, raw.as_bytes());
            let want: &[&str] = if trusted { &[other, other] } else { &[scheme] };
            assert_eq!(
                field_values(&head, "x-forwarded-proto"),
                want,
                "{case}: {head}"
            );
        }
    }
}

#[test]
fn x_forwarded_proto_can_be_disabled() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = router_to(b.addr, None, "[forward]\nx_forwarded_proto = false\n");
    let mut c = Conn::open(&r, None);
    let head = forwarded_head(&b, &mut c, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(!head.contains("X-Forwarded-Proto"), "{head}");
    assert!(head.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{head}");
}

/// Fields besides `X-Forwarded-For` / `X-Real-IP` that backends and frameworks read the
/// client's address from (CDNs and load balancers set them): from an untrusted client
/// they are a forged address, in any case and with `_` for `-`. Names of the same
/// lengths that carry no address pass.
#[test]
fn other_client_address_fields_are_kept_only_from_trusted_proxies() {
    let spoofed = "True-Client-IP: 10.6.6.1\r\nx-client-ip: 10.6.6.2\r\nCF-Connecting-IP: 10.6.6.3\r\nX_Cluster_Client_IP: 10.6.6.4\r\nFASTLY-CLIENT-IP: 10.6.6.5\r\nX-Original-Forwarded-For: 10.6.6.6\r\nX-Original_Forwarded_For: 10.6.6.7\r\nX-Forwarded-Port: 10.6.6.8\r\n";
    let innocent = "X-Client-Id: c1\r\nContent-Length: 0\r\nCF-Connecting-IX: c2\r\nX-Cluster-Client-Id: c3\r\n";
    let raw = format!("POST /c HTTP/1.1\r\nHost: t\r\n{spoofed}{innocent}\r\n");
    let cert = TestCert::new("client-ip");
    for tls in [false, true] {
        let b = ScriptedBackend::start(|_| Reply::ok("ok"));
        let cert = tls.then_some(&cert);
        let r = router_to(b.addr, cert, "");
        let head = forwarded_head(&b, &mut Conn::open(&r, cert), raw.as_bytes());
        assert!(
            !head.contains("10.6.6."),
            "tls={tls}: forged address forwarded: {head}"
        );
        assert!(head.contains(innocent), "tls={tls}: {head}");
    }
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = router_to(
        b.addr,
        None,
        "[forward]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let head = forwarded_head(&b, &mut Conn::open(&r, None), raw.as_bytes());
    assert!(head.contains(&format!("{spoofed}{innocent}")), "{head}");
}

/// `forward.relay_interim_responses = false`: a 103 is not relayed, so a client that takes
/// the first status line it reads for the final answer (Python's `http.client` skips only
/// `100`) reads the real one, and the next answer on the connection is its own.
#[test]
fn interim_responses_can_be_held_back() {
    let b = ScriptedBackend::start(|req| {
        Reply::ok(req.target()).interim(
            "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
            Duration::ZERO,
        )
    });
    let r = router_to(b.addr, None, "[forward]\nrelay_interim_responses = false\n");
    let mut c = Client::connect(r.addr);
    for path in ["/hinted", "/again"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        // The first message on the wire, interim or not.
        let first = c.read_message();
        assert_eq!(
            (first.status, first.body.as_slice()),
            (200, path.as_bytes())
        );
    }
    c.expect_open_for(Duration::from_millis(20));
}
