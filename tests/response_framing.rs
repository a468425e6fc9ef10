//! Response-side framing (RFC 9112 §6.3): upstreams that answer with conflicting
//! lengths, duplicate `Content-Length`, bad chunk framing, extra bytes after the body, a
//! response before the request body was read, a 101 to a plain request, or a close in
//! the middle of a body.
//!
//! Every misbehaving exchange leaves its backend connection *poisoned*: from then on the
//! backend answers any request on it with a response whose body is `POISON`. So if
//! ringgate ever reused such a connection, or delivered bytes it read past the end of a
//! response, the next client — a second connection asking for `/good/<case>` — would see
//! `POISON` instead of its own `good:/good/<case>`. Each case checks what the first client
//! got, then that the second client gets exactly its own response.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use common::backend::{BodyRead, Ending, Reply, ScriptedBackend};
use common::client::{Client, Closed, Failure, ReadError, Response};
use common::router::Router;
use common::{find, wait_until};

const POISON_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON";

/// `200` with body `good:<path>`.
fn good(path: &str) -> Reply {
    Reply::ok(format!("good:{path}"))
}

/// A backend: `/good/...` paths get their own response; other paths are looked up with
/// `script`, which says what to send and whether that poisons the connection (every later
/// request on it is answered with `POISON`).
fn backend<F>(script: F) -> ScriptedBackend
where
    F: Fn(&str) -> (Reply, bool) + Send + Sync + 'static,
{
    let poisoned = Mutex::new(HashSet::new());
    ScriptedBackend::start(move |req| {
        let mut poisoned = poisoned.lock().unwrap();
        if poisoned.contains(&req.conn) {
            return Reply::bytes(POISON_RESPONSE);
        }
        if req.path().starts_with("/good/") {
            return good(req.path());
        }
        let (reply, poisons) = script(req.path());
        if poisons {
            poisoned.insert(req.conn);
        }
        reply
    })
}

/// A misbehaving answer: poisons its connection.
fn bad(bytes: impl AsRef<[u8]>) -> (Reply, bool) {
    (Reply::bytes(bytes), true)
}

/// Close cleanly 20 ms after the answer.
fn then_close((reply, poisons): (Reply, bool)) -> (Reply, bool) {
    (
        reply.then_after(Duration::from_millis(20), Ending::Close),
        poisons,
    )
}

/// After the answer, pause and send `late` too.
fn with_late((reply, poisons): (Reply, bool), pause_ms: u64, late: &[u8]) -> (Reply, bool) {
    (reply.late(Duration::from_millis(pause_ms), late), poisons)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

/// What a first client got: the response (or why there was none, with the bytes that
/// came) and how the connection went on.
#[derive(Debug)]
struct Got {
    response: Result<Response, ReadError>,
    after: Closed,
}

impl Got {
    /// Every byte received.
    fn raw(&self) -> Vec<u8> {
        let mut raw = match &self.response {
            Ok(r) => r.raw.clone(),
            Err(e) => e.partial.clone(),
        };
        raw.extend_from_slice(self.after.leftover());
        raw
    }
}

/// Send one request on a fresh connection, read the response by its own framing, then
/// watch the connection briefly: a `Connection: close` answer must be followed by a FIN,
/// any other by silence.
fn exchange(addr: SocketAddr, request: &[u8], is_head: bool) -> Got {
    let mut c = Client::connect(addr);
    c.set_timeout(Duration::from_secs(5));
    c.send(request);
    let response = if is_head {
        c.try_read_head_response()
    } else {
        c.try_read_response()
    };
    let wait = match &response {
        Ok(r) if r.header("connection") != Some("close") => Duration::from_millis(30),
        _ => Duration::from_secs(5),
    };
    let after = c.closed_within(wait);
    Got { response, after }
}

/// The next client gets its own response, twice (the second may reuse a pooled
/// connection, which must be a clean one), and never a byte of POISON.
fn next_client_is_clean(addr: SocketAddr, case: &str) {
    for i in 0..2 {
        let path = format!("/good/{case}-{i}");
        let got = exchange(addr, &get(&path), false);
        let resp = got
            .response
            .as_ref()
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(resp.status, 200, "{case}: {got:?}");
        assert_eq!(
            String::from_utf8_lossy(&resp.body),
            format!("good:{path}"),
            "{case}: the next client got someone else's bytes"
        );
        assert!(
            matches!(&got.after, Closed::StillOpen { leftover } if leftover.is_empty()),
            "{case}: {got:?}"
        );
        assert!(find(&got.raw(), b"POISON").is_none(), "{case}: {got:?}");
    }
}

/// What the first client must get.
enum First {
    /// This status with exactly this body.
    Exactly(u16, &'static [u8]),
    /// The response started (200) but the connection ended before the body was complete:
    /// with a FIN after a cut length (no reader takes it for the end), with a reset after a
    /// cut chunked body (lenient readers take a clean close after a last-chunk line for
    /// its end).
    Truncated { reset: bool },
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    is_head: bool,
    script: fn() -> (Reply, bool),
    first: First,
    why: &'static str,
}

fn cases() -> Vec<Case> {
    fn req(path: &str) -> Vec<u8> {
        get(path)
    }
    vec![
        Case {
            name: "cl_and_te",
            request: req("/cl-and-te"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON"),
            first: First::Exactly(502, b"upstream sent both Content-Length and Transfer-Encoding\n"),
            why: "two framings: the end of the response is ambiguous",
        },
        Case {
            name: "duplicate_cl_equal",
            request: req("/dup-cl"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nokPOISON"),
            first: First::Exactly(502, b"upstream sent duplicate Content-Length\n"),
            why: "duplicates are refused even when equal",
        },
        Case {
            name: "duplicate_cl_differ",
            request: req("/dup-cl-differ"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 8\r\n\r\nokPOISON"),
            first: First::Exactly(502, b"upstream sent duplicate Content-Length\n"),
            why: "first-wins vs last-wins",
        },
        Case {
            name: "cl_list",
            request: req("/cl-list"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\r\nContent-Length: 2, 8\r\n\r\nokPOISON"),
            first: First::Exactly(502, b"invalid Content-Length from upstream\n"),
            why: "a list of lengths",
        },
        Case {
            name: "cl_signed",
            request: req("/cl-signed"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nokPOISON"),
            first: First::Exactly(502, b"invalid Content-Length from upstream\n"),
            why: "a sign is not a digit",
        },
        Case {
            name: "underscore_te",
            request: req("/underscore-te"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer_Encoding: chunked\r\n\r\nokPOISON"),
            first: First::Exactly(502, b"underscore variant of a framing header name from upstream\n"),
            why: "a client that reads `_` as `-` would frame the body as chunked",
        },
        Case {
            name: "bad_chunk_size",
            request: req("/bad-chunk-size"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nPOISON\r\n0\r\n\r\n"),
            first: First::Exactly(502, b"invalid chunk size\n"),
            why: "invalid chunk size found while the whole response is still in ringgate's buffer",
        },
        Case {
            name: "bad_chunk_crlf",
            request: req("/bad-chunk-crlf"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\nPOISON"),
            first: First::Exactly(502, b"chunk data not followed by CRLF\n"),
            why: "chunk data longer than its size",
        },
        Case {
            name: "bad_chunk_after_start",
            request: req("/bad-chunk-late"),
            is_head: false,
            script: || with_late(bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"), 50, b"zz\r\nPOISON\r\n0\r\n\r\n"),
            first: First::Truncated { reset: true },
            why: "bad framing after the response started: the client connection is cut",
        },
        Case {
            name: "extra_after_cl_body",
            request: req("/extra-cl"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON"),
            first: First::Exactly(200, b"ok"),
            why: "a second response stuck to the first: relayed up to the framed end only",
        },
        Case {
            name: "extra_after_cl_body_late",
            request: req("/extra-cl-late"),
            is_head: false,
            script: || with_late(bad("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), 30, POISON_RESPONSE),
            first: First::Exactly(200, b"ok"),
            why: "junk arriving while the connection idles in the pool: discarded at checkout",
        },
        Case {
            name: "extra_after_chunked_body",
            request: req("/extra-chunked"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON"),
            first: First::Exactly(200, b"2\r\nok\r\n0\r\n\r\n"),
            why: "bytes after the last chunk",
        },
        Case {
            name: "no_content_with_body",
            request: req("/204"),
            is_head: false,
            script: || bad("HTTP/1.1 204 No Content\r\nContent-Length: 6\r\n\r\nPOISON"),
            first: First::Exactly(204, b""),
            why: "204 has no body whatever it says (RFC 9112 §6.3)",
        },
        Case {
            name: "not_modified_with_body",
            request: req("/304"),
            is_head: false,
            script: || bad("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nPOISON\r\n0\r\n\r\n"),
            first: First::Exactly(304, b""),
            why: "304 has no body either",
        },
        Case {
            name: "head_with_body",
            request: b"HEAD /head HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            is_head: true,
            script: || bad("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON"),
            first: First::Exactly(200, b""),
            why: "a response to HEAD has no body",
        },
        Case {
            name: "switching_protocols_unasked",
            request: req("/101"),
            is_head: false,
            script: || bad("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nPOISON"),
            first: First::Exactly(502, b"101 without an upgrade request\n"),
            why: "a 101 to a request that asked for no upgrade: never a tunnel",
        },
        Case {
            name: "early_close_cl",
            request: req("/early-close-cl"),
            is_head: false,
            script: || then_close(bad("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")),
            first: First::Truncated { reset: false },
            why: "upstream closed mid-body: the client sees a cut connection, not a short body",
        },
        Case {
            name: "early_close_chunked",
            request: req("/early-close-chunked"),
            is_head: false,
            script: || then_close(bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\npart")),
            first: First::Truncated { reset: true },
            why: "the same inside a chunk",
        },
        Case {
            name: "close_mid_head",
            request: req("/close-mid-head"),
            is_head: false,
            script: || then_close(bad("HTTP/1.1 200 OK\r\nContent-Len")),
            first: First::Exactly(502, b"upstream closed connection before responding\n"),
            why: "no complete head: no answer (a Query with another server goes there)",
        },
        Case {
            name: "bare_lf_head",
            request: req("/bare-lf"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nokPOISON"),
            first: First::Exactly(502, b"malformed response head from upstream\n"),
            why: "bare LF in a response head",
        },
        Case {
            name: "obs_fold_head",
            request: req("/obs-fold"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n 0\r\n\r\nokPOISON"),
            first: First::Exactly(502, b"malformed response head from upstream\n"),
            why: "obs-fold could continue the Content-Length",
        },
        Case {
            name: "http10_chunked_keep_alive",
            request: req("/h10-chunked"),
            is_head: false,
            script: || bad("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
            first: First::Exactly(200, b"2\r\nok\r\n0\r\n\r\n"),
            why: "RFC 9112 §6.1: HTTP/1.0 with TE is faulty framing; relayed, then the connection is not reused",
        },
        Case {
            name: "te_gzip_chunked",
            request: req("/te-gzip-chunked"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
            first: First::Exactly(502, b"Transfer-Encoding other than chunked from upstream\n"),
            why: "Python's http.client reads any TE but `chunked` until the close: it hung on the kept connection",
        },
        Case {
            name: "te_split_over_lines",
            request: req("/te-split"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
            first: First::Exactly(502, b"Transfer-Encoding other than chunked from upstream\n"),
            why: "Python's http.client looks at the first TE line only",
        },
        Case {
            name: "te_chunked_then_gzip",
            request: req("/te-chunked-gzip"),
            is_head: false,
            script: || then_close(bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\nnot chunks")),
            first: First::Exactly(502, b"Transfer-Encoding other than chunked from upstream\n"),
            why: "ends at the close (chunked is not last), but Python's http.client decodes chunks",
        },
        Case {
            name: "te_chunked_trailing_space",
            request: req("/te-space"),
            is_head: false,
            script: || bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked \r\n\r\n2\r\nok\r\n0\r\n\r\n"),
            first: First::Exactly(502, b"Transfer-Encoding other than chunked from upstream\n"),
            why: "Python's http.client compares the value with its trailing whitespace",
        },
        Case {
            name: "te_gzip_head",
            request: b"HEAD /te-head HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            is_head: true,
            script: || bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            first: First::Exactly(502, b""),
            why: "a response to HEAD is refused as the GET's would be",
        },
        Case {
            name: "close_delimited",
            request: req("/until-close"),
            is_head: false,
            script: || then_close(bad("HTTP/1.1 200 OK\r\n\r\nall of it")),
            first: First::Exactly(200, b"all of it"),
            why: "no length: read until close, and that connection is done",
        },
    ]
}

fn route_to(b: &ScriptedBackend) -> Router {
    Router::start(&format!(
        "default_backend = \"{0}\"\n[partitions.z]\nservers = [\"{0}\"]\n[timeouts]\nupstream_response_ms = 2000\n",
        b.addr
    ))
}

/// Wait until the backend has written its whole answer to `path` (late junk included)
/// and ringgate's kernel has acknowledged it: bytes a backend sends *after* ringgate
/// wrote the next request on a reused connection are indistinguishable from its answer
/// (an inherent limit of HTTP/1.1 pooling), so the next exchange is judged only once
/// they are in ringgate's socket.
fn wait_answered(b: &ScriptedBackend, path: &str) {
    let mut conn = None;
    wait_until(
        &format!("the backend answered {path}"),
        Duration::from_secs(5),
        || {
            conn = b
                .requests()
                .iter()
                .find(|r| r.path() == path && r.answered)
                .map(|r| r.conn);
            conn.is_some()
        },
    );
    b.wait_delivered(conn.unwrap());
}

#[test]
fn misbehaving_upstreams_never_leak_into_the_next_exchange() {
    let b = backend(|path| {
        let case = cases()
            .into_iter()
            .find(|c| String::from_utf8_lossy(&c.request).contains(&format!(" {path} ")))
            .unwrap_or_else(|| panic!("no script for {path}"));
        (case.script)()
    });
    let r = route_to(&b);
    // Warm the pool so that every case runs on a reused connection when it can.
    next_client_is_clean(r.addr, "warm");
    for case in cases() {
        let got = exchange(r.addr, &case.request, case.is_head);
        let context = format!("{}: {} ({got:?})", case.name, case.why);
        match (case.first, &got.response) {
            (First::Exactly(status, body), Ok(resp)) => {
                assert_eq!(resp.status, status, "{context}");
                assert_eq!(
                    String::from_utf8_lossy(resp.framed_body()),
                    String::from_utf8_lossy(body),
                    "{context}"
                );
                if resp.header("connection") == Some("close") {
                    assert!(
                        matches!(&got.after, Closed::Fin { leftover } if leftover.is_empty()),
                        "a clean close after `Connection: close`: {context}"
                    );
                } else {
                    assert!(
                        matches!(&got.after, Closed::StillOpen { leftover } if leftover.is_empty()),
                        "kept open and quiet: {context}"
                    );
                }
            }
            (First::Truncated { reset }, Err(e)) => {
                assert!(e.partial.starts_with(b"HTTP/1.1 200 "), "{context}");
                let (end, how) = if reset {
                    (Failure::Reset, "a reset")
                } else {
                    (Failure::Fin, "a clean close")
                };
                assert_eq!(e.failure, end, "the cut is {how}: {context}");
            }
            _ => panic!("{context}"),
        }
        assert!(
            find(&got.raw(), b"POISON").is_none(),
            "bytes past the framed end reached the client: {context}"
        );
        let path = String::from_utf8_lossy(&case.request)
            .split(' ')
            .nth(1)
            .unwrap()
            .to_string();
        wait_answered(&b, &path);
        next_client_is_clean(r.addr, case.name);
    }
}

/// An upstream that answers as soon as it has the head, before the request body was
/// sent, and then (desynchronised) reads the body as a new request — here a complete
/// request, which it answers with POISON.
#[test]
fn response_before_the_request_body_never_reaches_another_client() {
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let b = backend(|path| {
        if path == "/smuggled" {
            return bad(POISON_RESPONSE);
        }
        (good(path).early(BodyRead::Never), false)
    });
    let r = route_to(&b);
    next_client_is_clean(r.addr, "warm");
    // Small body (sent with the head) and a large one (relayed after it, > 16 KiB).
    for (name, pad) in [("small", 0usize), ("large", 40_000)] {
        let path = format!("/early-{name}");
        let body = format!("{smuggled}{}", "x".repeat(pad));
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut c = Client::connect(r.addr);
        c.set_timeout(Duration::from_secs(5));
        // Head first, the body once the backend has answered: the answer comes before
        // the body.
        let split = request.find("\r\n\r\n").unwrap() + 4;
        c.send(&request.as_bytes()[..split]);
        wait_answered(&b, &path);
        let _ = c.try_send(&request.as_bytes()[split..]);
        let first = c.try_read_response();
        let after = c.closed_within(Duration::from_millis(30));
        let got = Got {
            response: first,
            after,
        };
        assert!(find(&got.raw(), b"POISON").is_none(), "{name}: {got:?}");
        // Whatever the first client got (the early answer or a 502), the next one gets
        // its own response once the backend is done with the body: it has read the
        // smuggled request from it, or its connection ended.
        let conn = b.requests().iter().find(|r| r.path() == path).unwrap().conn;
        wait_until(
            &format!("{name}: the backend is done with the early request's body"),
            Duration::from_secs(5),
            || {
                let c = b.connection(conn);
                c.ended || c.requests.iter().any(|r| r.path() == "/smuggled")
            },
        );
        next_client_is_clean(r.addr, name);
    }
}

#[test]
fn a_cut_response_that_ends_at_the_close_reaches_the_client_as_a_reset() {
    // No length, not chunked: the response ends where the connection does. The upstream
    // stalls after some of it (the response timeout ends the relay), and a FIN to the
    // client would complete it; a reset says it was cut.
    let b = ScriptedBackend::start(|req| {
        if req.target() == "/cut" {
            Reply::bytes("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome of it")
                .then(Ending::Hang)
        } else {
            Reply::bytes("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
                .then(Ending::Close)
        }
    });
    let r = Router::start(&format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{}\"]\n[health]\nenabled = false\n[timeouts]\nupstream_response_ms = 300\n",
        b.addr
    ));
    let mut c = Client::connect(r.addr);
    c.send(b"GET /cut HTTP/1.1\r\nHost: t\r\n\r\n");
    let end = c.closed();
    assert!(end.is_reset(), "{end}");
    // The same response completed by the upstream's clean close ends with a FIN.
    let mut c = Client::connect(r.addr);
    c.send(b"GET /whole HTTP/1.1\r\nHost: t\r\n\r\n");
    let end = c.closed();
    assert!(end.is_fin(), "{end}");
    assert!(end.leftover().ends_with(b"all of it"));
}

/// A chunked response cut after its last-chunk line (`0\r\n`): a bad trailer follows, or
/// the upstream closes. Lenient readers end the trailer section at the end of the stream
/// (Python's `http.client`, and urllib3 under `requests`, take `...0\r\n` and a clean
/// close for the whole body), so a FIN would let the cut response pass for a complete
/// one: the client gets a reset.
#[test]
fn a_chunked_response_cut_after_its_last_chunk_line_reaches_the_client_as_a_reset() {
    let b = ScriptedBackend::start(|req| {
        let start = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n";
        match req.target() {
            "/bad-trailer" => Reply::bytes(start)
                .late(Duration::from_millis(100), "Content-Length: 5\r\n\r\n")
                .then(Ending::Close),
            _ => Reply::bytes(start).then_after(Duration::from_millis(100), Ending::Close),
        }
    });
    let r = Router::start(&format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{}\"]\n[health]\nenabled = false\n",
        b.addr
    ));
    for path in ["/bad-trailer", "/closed"] {
        let mut c = Client::connect(r.addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let end = c.closed();
        assert!(end.is_reset(), "{path}: {end}");
    }
}

/// A response whose status rules out a body goes out without the framing fields that say
/// otherwise: `Transfer-Encoding` on a 1xx, 204 or 304, `Content-Length` on a 1xx or 204
/// (RFC 9112 §6.1, RFC 9110 §8.6). A reader that frames by them first reads what follows
/// as the body: Python's `http.client` (under `requests`) waits for chunks after a 204 or
/// 304 with `Transfer-Encoding: chunked`. A 304's `Content-Length` (the representation's)
/// and a response to HEAD keep theirs; the connection stays in step throughout.
#[test]
fn bodiless_responses_go_out_without_framing_fields_that_contradict_them() {
    let b = ScriptedBackend::start(|req| match req.path() {
        "/204-te" => {
            Reply::bytes("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n")
        }
        "/204-cl" => Reply::bytes("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n"),
        "/304-te" => Reply::bytes(
            "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: gzip, chunked\r\nX-A: 1\r\n\r\n",
        ),
        "/304-cl" => {
            Reply::bytes("HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\nX-A: 1\r\n\r\n")
        }
        "/103-cl" => Reply::ok("after hints").interim(
            "HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\nLink: </a>\r\n\r\n",
            Duration::ZERO,
        ),
        "/head-te" => {
            Reply::bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n")
        }
        p => good(p),
    });
    let r = route_to(&b);
    let mut c = Client::connect(r.addr);
    c.set_timeout(Duration::from_secs(5));
    // (request, status, the framing field it must arrive with, if any)
    let cases = [
        (get("/204-te"), 204, None),
        (get("/204-cl"), 204, None),
        (get("/304-te"), 304, None),
        (get("/304-cl"), 304, Some(("content-length", "42"))),
        (get("/103-cl"), 200, Some(("content-length", "11"))),
        (
            b"HEAD /head-te HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            200,
            Some(("transfer-encoding", "chunked")),
        ),
    ];
    for (i, (request, status, kept)) in cases.into_iter().enumerate() {
        c.send(&request);
        let resp = if request.starts_with(b"HEAD") {
            c.read_head_response()
        } else {
            c.read_response()
        };
        let line_end = find(&request, b"\r\n").unwrap();
        let what = String::from_utf8_lossy(&request[..line_end]).into_owned();
        assert_eq!(resp.status, status, "{what}: {resp:?}");
        for msg in resp.interim.iter().chain([&resp]) {
            for name in ["content-length", "transfer-encoding"] {
                let expected = kept.filter(|k| k.0 == name && msg.status == status);
                assert_eq!(
                    msg.header(name),
                    expected.map(|k| k.1),
                    "{what}: a {} went out with {name}: {:?}",
                    msg.status,
                    String::from_utf8_lossy(&msg.raw[..msg.head_len])
                );
            }
        }
        if status != 200 {
            assert_eq!(resp.header("x-a"), Some("1"), "{what}: other fields stay");
        }
        let next = c.roundtrip(&get(&format!("/good/{i}")));
        assert_eq!(
            next.text(),
            format!("good:/good/{i}"),
            "{what}: out of step"
        );
    }
}

/// RFC 9112 §6.1: no `Transfer-Encoding` to an HTTP/1.0 client, which does not know it. A
/// chunked body is refused (502: relayed as received, it would read the chunk framing as
/// its body); the head of one, answering HEAD, goes out without the field.
#[test]
fn an_http10_client_is_never_sent_transfer_encoding() {
    let b = ScriptedBackend::start(|req| match req.path() {
        "/head-te" => {
            Reply::bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n")
        }
        "/chunked" => Reply::bytes(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        "/304-te" => Reply::bytes(
            "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
        ),
        p => good(p),
    });
    let r = route_to(&b);
    let mut c = Client::connect(r.addr);
    c.set_timeout(Duration::from_secs(5));
    let h10 = |method: &str, path: &str| {
        format!("{method} {path} HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
    };
    for (method, path, status) in [
        ("HEAD", "/head-te", 200),
        ("GET", "/chunked", 502),
        ("GET", "/304-te", 304),
        ("HEAD", "/head-te", 200),
    ] {
        c.send(h10(method, path).as_bytes());
        let resp = if method == "HEAD" {
            c.read_head_response()
        } else {
            c.read_response()
        };
        let head = String::from_utf8_lossy(&resp.raw[..resp.head_len]).into_owned();
        assert_eq!(resp.status, status, "{method} {path}: {head}");
        assert_eq!(
            resp.header("transfer-encoding"),
            None,
            "{method} {path}: {head}"
        );
        if resp.header("connection") == Some("close") {
            assert_eq!(status, 502, "{head}");
            assert_eq!(
                c.closed(),
                Closed::Fin { leftover: vec![] },
                "{method} {path}"
            );
            c = Client::connect(r.addr);
            c.set_timeout(Duration::from_secs(5));
            continue;
        }
        assert_eq!(resp.header("x-a"), Some("1"), "{method} {path}: {head}");
        assert_eq!(resp.header("connection"), Some("keep-alive"), "{head}");
        let next = c.roundtrip(h10("GET", "/good/next").as_bytes());
        assert_eq!(
            next.text(),
            "good:/good/next",
            "{method} {path}: out of step"
        );
    }
}

/// Holding back interim answers (`forward.relay_interim_responses = false`) changes
/// nothing else: the answer to an HTTP/1.1 client's HEAD keeps its `Transfer-Encoding`,
/// as the GET's would have it (RFC 9110 §9.3.2). (The switch was read as "an HTTP/1.0
/// client", whose HEAD answers go without the field.)
#[test]
fn holding_back_interim_answers_keeps_a_head_answers_transfer_encoding() {
    let b = ScriptedBackend::start(|req| match req.path() {
        "/head-te" => {
            Reply::bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n").interim(
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                Duration::ZERO,
            )
        }
        p => good(p),
    });
    let r = Router::start(&format!(
        "default_backend = \"{0}\"\n[partitions.z]\nservers = [\"{0}\"]\n[forward]\nrelay_interim_responses = false\n",
        b.addr
    ));
    let mut c = Client::connect(r.addr);
    c.set_timeout(Duration::from_secs(5));
    c.send(b"HEAD /head-te HTTP/1.1\r\nHost: t\r\n\r\nGET /good/next HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = c.read_head_response();
    let head = String::from_utf8_lossy(&resp.raw[..resp.head_len]).into_owned();
    assert!(resp.interim.is_empty(), "held back: {head}");
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"), "{head}");
    assert_eq!(resp.header("x-a"), Some("1"), "{head}");
    assert_eq!(c.read_response().text(), "good:/good/next", "out of step");
}
