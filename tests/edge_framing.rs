//! Edge framing over real sockets: chunk extensions (RFC 9112 §7.1.1), trailer fields
//! (RFC 9110 §6.5.1), `Host` and absolute-form authorities (RFC 9110 §7.2, RFC 9112
//! §3.2), in both directions.
//!
//! Requests go through a router to the harness's *recording* backend (independent of
//! ringgate's parsers; its chunked reader is the lenient kind that skips extensions to
//! the CRLF and takes trailers as they come, so a prefix a strict parser refuses may look
//! complete to it). Each refused request carries an attack and a pipelined probe
//! (`GET /probe`): the client gets the stated status and a clean close (FIN, nothing
//! after the answer: the probe is never answered), and the backend gets nothing complete
//! — not a byte when the defect is in the head; when it is in a chunked body, at most a
//! head and a body prefix forwarded before the defect was found, on a connection that
//! then ends unanswered. Across each test nothing named `/smuggled` reaches the backend.
//! Accepted requests reach the backend with their chunked body byte for byte, and the
//! probe is served after them as its own request.
//!
//! Responses come from a scripted backend whose connection is *poisoned* after a
//! misbehaving answer: a reused connection would answer `POISON`. A bad chunk extension
//! or a framing trailer from an upstream gives the client a 502 (when it arrives with the
//! head) or a truncated response cut by a clean close (when the head was already
//! relayed); never the bytes behind it, and the next client gets its own answer.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use common::backend::{Reply, Request, ScriptedBackend};
use common::client::{Client, Failure};
use common::router::Router;
use common::{find, holds_for, wait_until};

/// Read timeout of every client here.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn client(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr);
    c.set_timeout(READ_TIMEOUT);
    c
}

fn route_to(b: &ScriptedBackend) -> Router {
    Router::start(&format!(
        "default_backend = \"{0}\"\n[partitions.zone_1]\nservers = [\"{0}\"]\n",
        b.addr
    ))
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// A request the backend would serve if another parser ever framed it out of a body.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
/// The benign request pipelined behind every case.
const PROBE: &[u8] = b"GET /probe HTTP/1.1\r\nHost: t\r\n\r\n";

/// A request the backend read completely.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Served {
    target: String,
    /// Body bytes as they arrived (chunked framing included).
    body: Vec<u8>,
}

fn chunked_post(body: impl AsRef<[u8]>) -> Vec<u8> {
    let mut v = b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    v.extend_from_slice(body.as_ref());
    v
}

fn get(host: &str) -> Vec<u8> {
    format!("GET /g HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// The recording backend (answers `200` with body `served:<target>`) and a router to it.
fn start() -> (ScriptedBackend, Router) {
    let b = ScriptedBackend::start(|req| Reply::ok(format!("served:{}", req.target())));
    let r = route_to(&b);
    (b, r)
}

/// Requests the backend has seen (head received), from the `from`-th on.
fn requests_since(b: &ScriptedBackend, from: usize) -> Vec<Request> {
    b.requests().into_iter().skip(from).collect()
}

/// Where a refused request's defect is, which bounds what may reach the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Defect {
    /// In the head: found before any upstream is contacted; not a byte may reach it.
    Head,
    /// In a chunked body: the head and a body prefix may have been forwarded before the
    /// defect arrived, never the whole request.
    Body,
}

/// Requests as text with their state, for failure messages.
fn describe(reqs: &[Request]) -> Vec<String> {
    reqs.iter()
        .map(|r| {
            format!(
                "conn {} #{} (body complete: {}, answered: {}): {:?}",
                r.conn,
                r.index,
                r.body_complete,
                r.answered,
                r.text()
            )
        })
        .collect()
}

/// Nothing of a refused message reached the backend complete: no request whose body the
/// backend read to its end, none answered, never the probe; a head forwarded ahead of a
/// body defect stays incomplete until its upstream connection ends. With
/// [`Defect::Head`], the backend received no byte at all since `bytes_before`.
fn assert_nothing_complete(
    b: &ScriptedBackend,
    name: &str,
    from: usize,
    bytes_before: usize,
    defect: Defect,
) {
    let incomplete = |reqs: &[Request]| {
        reqs.iter()
            .all(|r| !r.body_complete && !r.answered && r.path() != "/probe")
    };
    // The refusal came first; give a stray forward the time to show up anyway.
    let quiet = holds_for(Duration::from_millis(20), || {
        incomplete(&requests_since(b, from))
            && (defect == Defect::Body || b.bytes_received() == bytes_before)
    });
    assert!(
        quiet,
        "{name}: a {defect:?} defect, and the backend got {} bytes of the refused request: {:#?}",
        b.bytes_received() - bytes_before,
        describe(&requests_since(b, from))
    );
    // A forwarded prefix: its connection must end without the rest.
    for req in requests_since(b, from) {
        wait_until(
            &format!("{name}: backend connection {} ends", req.conn),
            Duration::from_secs(5),
            || b.connection(req.conn).ended,
        );
    }
    let got = requests_since(b, from);
    assert!(
        incomplete(&got),
        "{name}: the backend got a complete request from a refused message: {:#?}",
        describe(&got)
    );
}

/// `raw` + the probe in one write: `status` with `Connection: close`, a clean close with
/// nothing after the answer, nothing complete to the backend.
fn expect_refused(
    r: &Router,
    b: &ScriptedBackend,
    name: &str,
    raw: &[u8],
    status: u16,
    defect: Defect,
) {
    let (from, bytes_before) = (b.request_count(), b.bytes_received());
    let mut c = client(r.addr);
    // The router may close before reading everything: that is what a refusal does.
    let _ = c.try_send(&[raw, PROBE].concat());
    let reply = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("{name}: no response: {e}"));
    assert_eq!(reply.status, status, "{name}: {:?}", reply.text());
    assert_eq!(reply.header("connection"), Some("close"), "{name}");
    c.expect_fin();
    assert_nothing_complete(b, name, from, bytes_before, defect);
}

/// `head_and_body` + the probe in one write: the backend serves `target` with exactly
/// `body`, then the probe; the client gets both answers in order and nothing else.
fn expect_forwarded(
    r: &Router,
    b: &ScriptedBackend,
    name: &str,
    head_and_body: &[u8],
    target: &str,
    body: &[u8],
) {
    let from = b.request_count();
    let mut c = client(r.addr);
    c.send(&[head_and_body, PROBE].concat());
    for want in [target, "/probe"] {
        let reply = c
            .try_read_response()
            .unwrap_or_else(|e| panic!("{name}: no response for {want}: {e}"));
        assert_eq!(
            (reply.status, reply.text()),
            (200, format!("served:{want}")),
            "{name}"
        );
    }
    c.expect_open_for(Duration::from_millis(20));
    let got = requests_since(b, from);
    assert!(
        got.iter().all(|r| r.body_complete),
        "{name}: {:#?}",
        describe(&got)
    );
    let served: Vec<Served> = got
        .into_iter()
        .map(|r| Served {
            target: r.target().to_string(),
            body: r.body,
        })
        .collect();
    assert_eq!(
        served,
        [
            Served {
                target: target.into(),
                body: body.to_vec(),
            },
            Served {
                target: "/probe".into(),
                body: Vec::new(),
            },
        ],
        "{name}"
    );
}

/// No request for `/smuggled` ever reached the backend, not even its head.
fn assert_nothing_smuggled(b: &ScriptedBackend) {
    let smuggled: Vec<_> = b
        .requests()
        .into_iter()
        .filter(|r| r.target().contains("smuggled"))
        .collect();
    assert!(
        smuggled.is_empty(),
        "smuggled requests reached the backend: {:#?}",
        describe(&smuggled)
    );
}

#[test]
fn bad_chunk_extensions_are_refused() {
    let (b, r) = start();
    let s = SMUGGLED;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // The reported vector: a reader that looks for the closing quote reads the CRLF,
        // the last chunk and the smuggled request as part of the extension, then
        // frames `"` + the probe's bytes differently again.
        (
            "quoted_crlf",
            chunked_post(format!("2;a=\"\r\nxx\r\n0\r\n\r\n{s}\"\r\nxx\r\n0\r\n\r\n")),
        ),
        ("quoted_lf", chunked_post("2;a=\"\nx\"\r\nxx\r\n0\r\n\r\n")),
        ("quoted_cr", chunked_post("2;a=\"\rx\"\r\nxx\r\n0\r\n\r\n")),
        ("quoted_nul", chunked_post("2;a=\"\0\"\r\nxx\r\n0\r\n\r\n")),
        (
            "quoted_del",
            chunked_post("2;a=\"\x7f\"\r\nxx\r\n0\r\n\r\n"),
        ),
        (
            "unterminated_quote",
            chunked_post("2;a=\"x\r\nxx\r\n0\r\n\r\n"),
        ),
        (
            "escaped_quote",
            chunked_post("5;a=\"x\\\"y\"\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "escaped_quote_at_end",
            chunked_post("5;a=\"x\\\"\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "quoted_pair_of_cr",
            chunked_post("5;a=\"\\\r\"\r\nhello\r\n0\r\n\r\n"),
        ),
        ("bare_semicolon", chunked_post("5;\r\nhello\r\n0\r\n\r\n")),
        (
            "double_semicolon",
            chunked_post("5;;a\r\nhello\r\n0\r\n\r\n"),
        ),
        ("empty_name", chunked_post("5;=v\r\nhello\r\n0\r\n\r\n")),
        ("empty_value", chunked_post("5;a=\r\nhello\r\n0\r\n\r\n")),
        (
            "bws_after_semicolon",
            chunked_post("5; a=b\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "bws_before_equals",
            chunked_post("5;a =b\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "bws_after_equals",
            chunked_post("5;a= b\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "bws_before_semicolon",
            chunked_post("5 ;a\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "trailing_space",
            chunked_post("5;a=b \r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "junk_after_quote",
            chunked_post("5;a=\"x\"y\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "non_token_name",
            chunked_post("5;a/b\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "obs_text_token",
            chunked_post("5;a=\u{e9}\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "last_chunk_quoted_crlf",
            chunked_post(format!("0;a=\"\r\n\r\n{s}\"\r\n\r\n")),
        ),
    ];
    for (name, raw) in &cases {
        expect_refused(&r, &b, name, raw, 400, Defect::Body);
    }
    assert_nothing_smuggled(&b);
}

#[test]
fn chunk_sizes_longer_than_sixteen_digits_are_refused_even_as_leading_zeros() {
    // A parser that caps the digits (Go's stops at 16) would refuse or misread what a
    // lenient one passed on; 16 digits hold every size ringgate accepts.
    let (b, r) = start();
    let body = b"0000000000000005\r\nhello\r\n0\r\n\r\n";
    expect_forwarded(&r, &b, "sixteen_digits", &chunked_post(body), "/p", body);
    let raw = chunked_post(format!("00000000000000005\r\nhello\r\n0\r\n\r\n{SMUGGLED}"));
    expect_refused(&r, &b, "seventeen_digits", &raw, 400, Defect::Body);
    assert_nothing_smuggled(&b);
}

#[test]
fn empty_lines_before_a_request_are_skipped_up_to_four_and_never_forwarded() {
    // httparse reads past any number of empty lines before the request line; the head is
    // forwarded from its first byte, so one left in it would reach the backend in front
    // of the request line.
    let (b, r) = start();
    let four = format!("{}GET /four HTTP/1.1\r\nHost: t\r\n\r\n", "\r\n".repeat(4));
    expect_forwarded(&r, &b, "four_empty_lines", four.as_bytes(), "/four", b"");
    let seen = b.requests();
    assert!(
        seen.iter().all(|q| q.head.starts_with(b"GET ")),
        "{:?}",
        describe(&seen)
    );
    for n in [5, 6] {
        let raw = format!("{}GET /more HTTP/1.1\r\nHost: t\r\n\r\n", "\r\n".repeat(n));
        expect_refused(
            &r,
            &b,
            &format!("{n}_empty_lines"),
            raw.as_bytes(),
            400,
            Defect::Head,
        );
    }
    // After a pipelined request the count starts again, and the limit holds there too.
    let mut c = client(r.addr);
    let raw = format!(
        "GET /first HTTP/1.1\r\nHost: t\r\n\r\n{}GET /second HTTP/1.1\r\nHost: t\r\n\r\n",
        "\r\n".repeat(5)
    );
    c.send(raw.as_bytes());
    assert_eq!(c.read_response().text(), "served:/first");
    assert_eq!(c.read_response().status, 400);
    c.expect_fin();
    assert!(b.requests().iter().all(|q| q.target() != "/second"));
}

#[test]
fn valid_chunk_extensions_travel_byte_for_byte() {
    let (b, r) = start();
    for (name, body) in [
        ("token", &b"5;a=b;c\r\nhello\r\n0\r\n\r\n"[..]),
        (
            "quoted",
            b"5;name=\"quoted;value=x\"\r\nhello\r\n0;last=\"\"\r\n\r\n",
        ),
        (
            "quoted_pairs",
            b"5;a=\"back\\\\slash \\x tab\\\t\"\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "obs_text_in_quotes",
            b"5;a=\"\xc3\xa9\"\r\nhello\r\n0\r\n\r\n",
        ),
    ] {
        expect_forwarded(&r, &b, name, &chunked_post(body), "/p", body);
    }
    assert_nothing_smuggled(&b);
}

#[test]
fn framing_trailers_are_refused() {
    let (b, r) = start();
    let s = SMUGGLED;
    let n = s.len();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "content_length",
            chunked_post(format!("5\r\nhello\r\n0\r\nContent-Length: {n}\r\n\r\n{s}")),
        ),
        (
            "content_length_lowercase",
            chunked_post(format!("5\r\nhello\r\n0\r\ncontent-length: {n}\r\n\r\n{s}")),
        ),
        (
            "content_length_uppercase",
            chunked_post("5\r\nhello\r\n0\r\nCONTENT-LENGTH: 0\r\n\r\n"),
        ),
        (
            "content_length_underscore",
            chunked_post("5\r\nhello\r\n0\r\nContent_Length: 0\r\n\r\n"),
        ),
        (
            "transfer_encoding",
            chunked_post("5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ),
        (
            "transfer_encoding_lowercase",
            chunked_post("5\r\nhello\r\n0\r\ntransfer-encoding: gzip\r\n\r\n"),
        ),
        (
            "host",
            chunked_post("5\r\nhello\r\n0\r\nHost: evil.example\r\n\r\n"),
        ),
        (
            "host_mixed_case",
            chunked_post("5\r\nhello\r\n0\r\nhOsT: evil.example\r\n\r\n"),
        ),
        (
            "after_an_allowed_one",
            chunked_post("5\r\nhello\r\n0\r\nX-Checksum: 1\r\nHost: evil\r\n\r\n"),
        ),
        (
            "authorization",
            chunked_post("5\r\nhello\r\n0\r\nAuthorization: Bearer x\r\n\r\n"),
        ),
        (
            "cookie",
            chunked_post("5\r\nhello\r\n0\r\nCookie: session=x\r\n\r\n"),
        ),
        (
            "expect",
            chunked_post("5\r\nhello\r\n0\r\nExpect: 100-continue\r\n\r\n"),
        ),
        (
            "connection",
            chunked_post("5\r\nhello\r\n0\r\nConnection: close\r\n\r\n"),
        ),
        (
            "x_forwarded_for",
            chunked_post("5\r\nhello\r\n0\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n"),
        ),
        (
            "true_client_ip",
            chunked_post("5\r\nhello\r\n0\r\nTrue_Client_IP: 127.0.0.1\r\n\r\n"),
        ),
        (
            "user_id",
            chunked_post("5\r\nhello\r\n0\r\nX-User-Id: bob\r\n\r\n"),
        ),
        // Field-line rules of the head apply to trailer lines too.
        (
            "obs_fold",
            chunked_post("5\r\nhello\r\n0\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n"),
        ),
        (
            "space_before_colon",
            chunked_post("5\r\nhello\r\n0\r\nContent-Length : 0\r\n\r\n"),
        ),
        (
            "bare_cr",
            chunked_post("5\r\nhello\r\n0\r\nX-A: 1\rContent-Length: 0\r\n\r\n"),
        ),
        (
            "bare_lf",
            chunked_post("5\r\nhello\r\n0\r\nX-A: 1\nContent-Length: 0\r\n\r\n"),
        ),
        (
            "nul_in_value",
            chunked_post("5\r\nhello\r\n0\r\nX-A: 1\0\r\n\r\n"),
        ),
        (
            "non_token_name",
            chunked_post("5\r\nhello\r\n0\r\nX\u{e9}: 1\r\n\r\n"),
        ),
    ];
    for (name, raw) in &cases {
        expect_refused(&r, &b, name, raw, 400, Defect::Body);
    }
    assert_nothing_smuggled(&b);
}

#[test]
fn configured_user_id_fields_are_refused_in_trailers() {
    let b = ScriptedBackend::start(|req| Reply::ok(format!("served:{}", req.target())));
    let r = Router::start(&format!(
        "default_backend = \"{0}\"\n[partitions.zone_1]\nservers = [\"{0}\"]\n[extract]\nheaders = [\"X-Account\"]\n",
        b.addr
    ));
    // Routed by its header, the request must not name another user in its trailers:
    // a backend merging trailers into the head would act for that one.
    let routed_as_alice = |trailer: &str| {
        format!(
            "POST /p HTTP/1.1\r\nHost: t\r\nX-Account: alice\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n{trailer}\r\n\r\n"
        )
        .into_bytes()
    };
    for (name, trailer) in [
        ("configured", "X-Account: bob"),
        ("configured_any_case", "x_account: bob"),
    ] {
        expect_refused(&r, &b, name, &routed_as_alice(trailer), 400, Defect::Body);
    }
    // Another trailer still travels.
    let resp = client(r.addr).roundtrip(&routed_as_alice("X-Checksum: 1"));
    assert_eq!(resp.status, 200);
    assert_nothing_smuggled(&b);
}

#[test]
fn allowed_trailers_travel_byte_for_byte() {
    let (b, r) = start();
    let body = b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nServer-Timing: db;dur=5\r\nTrailer: X-Checksum\r\n\r\n";
    let mut raw =
        b"POST /p HTTP/1.1\r\nHost: t\r\nTrailer: X-Checksum\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    raw.extend_from_slice(body);
    expect_forwarded(&r, &b, "allowed_trailers", &raw, "/p", body);
}

/// The attack arrives after ringgate has already forwarded the head and the first
/// chunk (the user id is in a header, so nothing waits for the body): the backend gets
/// that prefix and then a closed connection, never a complete request; the client gets
/// a 400 and a clean close; nothing after the bad bytes is served.
#[test]
fn attack_split_from_the_head_is_never_served() {
    let (b, r) = start();
    let head = "POST /split HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    for (name, rest) in [
        (
            "trailer",
            format!("0\r\nContent-Length: 0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "extension",
            format!("2;a=\"\r\n\r\nxx\r\n0\r\n\r\n{SMUGGLED}\"\r\nxx\r\n0\r\n\r\n"),
        ),
    ] {
        let (from, bytes_before) = (b.request_count(), b.bytes_received());
        let mut c = client(r.addr);
        c.send(head.as_bytes());
        wait_until(
            &format!("{name}: the backend has the head and the first chunk"),
            Duration::from_secs(5),
            || {
                b.requests().get(from).is_some_and(|req| {
                    req.path() == "/split"
                        && b.connection(req.conn).received.ends_with(b"5\r\nhello\r\n")
                })
            },
        );
        let _ = c.try_send(&[rest.as_bytes(), PROBE].concat());
        let reply = c
            .try_read_response()
            .unwrap_or_else(|e| panic!("{name}: no response: {e}"));
        assert_eq!(reply.status, 400, "{name}: {:?}", reply.text());
        assert_eq!(reply.header("connection"), Some("close"), "{name}");
        c.expect_fin();
        assert_nothing_complete(&b, name, from, bytes_before, Defect::Body);
        let got = requests_since(&b, from);
        assert_eq!(
            got.len(),
            1,
            "{name}: only the split head: {:#?}",
            describe(&got)
        );
    }
    assert_nothing_smuggled(&b);
}

#[test]
fn host_values_are_validated() {
    let (b, r) = start();
    for (name, host) in [
        ("non_numeric_port", "ex:abc"),
        ("empty_port", "ex:"),
        ("port_too_large", "ex:65536"),
        ("six_digit_port", "ex:000080"),
        ("two_ports", "ex:80:80"),
        ("comma_list", "a,b"),
        ("userinfo", "u@ex"),
        ("ipv6_unbracketed", "::1"),
        ("ipv6_zone", "[fe80::1%25eth0]"),
        ("ipvfuture", "[v1.x]"),
        ("short_ipv4", "127.1"),
        ("octal_ipv4", "010.0.0.1"),
        ("hex_ipv4", "0x7f.0.0.1"),
        ("bad_pct", "ex%zz"),
        // A number once decoded, as the WHATWG URL parser decodes it first.
        ("pct_ipv4", "127.0.0.%31"),
        ("pct_fullwidth_digit", "127.0.0.%EF%BC%91"),
        ("only_port", ":80"),
    ] {
        expect_refused(&r, &b, name, &get(host), 400, Defect::Head);
    }
    for (name, host) in [
        ("name_port", "ex.example:8080"),
        ("ipv4", "127.0.0.1:80"),
        ("ipv6", "[::1]:8080"),
        ("empty", ""),
        ("pct_encoded", "my_host%41"),
    ] {
        expect_forwarded(&r, &b, name, &get(host), "/g", b"");
    }
    assert_nothing_smuggled(&b);
}

#[test]
fn absolute_form_authority_must_agree_with_host() {
    let (b, r) = start();
    for (name, raw) in [
        (
            "other_host",
            "GET http://other.example/a HTTP/1.1\r\nHost: t\r\n\r\n",
        ),
        (
            "other_port",
            "GET http://t:8080/a HTTP/1.1\r\nHost: t\r\n\r\n",
        ),
        (
            "https_default_port",
            "GET https://t/a HTTP/1.1\r\nHost: t:80\r\n\r\n",
        ),
        (
            "userinfo",
            "GET http://evil@t/a HTTP/1.1\r\nHost: t\r\n\r\n",
        ),
        ("bad_port", "GET http://t:abc/a HTTP/1.1\r\nHost: t\r\n\r\n"),
        ("empty_host", "GET http://:80/a HTTP/1.1\r\nHost: t\r\n\r\n"),
    ] {
        expect_refused(&r, &b, name, raw.as_bytes(), 400, Defect::Head);
    }
    for (name, raw, target) in [
        (
            "same",
            "GET http://t/a HTTP/1.1\r\nHost: t\r\n\r\n",
            "http://t/a",
        ),
        (
            "case_and_default_port",
            "GET HTTP://T:80/a HTTP/1.1\r\nHost: t\r\n\r\n",
            "HTTP://T:80/a",
        ),
        (
            "https_port",
            "GET https://t/a HTTP/1.1\r\nHost: t:443\r\n\r\n",
            "https://t/a",
        ),
    ] {
        expect_forwarded(&r, &b, name, raw.as_bytes(), target, b"");
    }
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

const POISON_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON";
/// A response stuck behind bad framing: must never reach a client.
const LEAK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nLEAK";
/// Pause between the head (with the first chunk) and the bad bytes of a `/split_*`
/// answer, so the router has relayed the head before the bad bytes arrive.
const SPLIT_PAUSE: Duration = Duration::from_millis(100);

/// What the backend answers to `path`.
fn response_script(path: &str) -> Reply {
    let chunked = |body: &str| {
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{body}").into_bytes()
    };
    match path {
        "/ext_quoted_crlf" => Reply::bytes(chunked(&format!(
            "2;a=\"\r\nxx\r\n0\r\n\r\n{LEAK}\"\r\nxx\r\n0\r\n\r\n"
        ))),
        "/ext_bare_semicolon" => Reply::bytes(chunked("5;\r\nhello\r\n0\r\n\r\n")),
        "/ext_escaped_quote" => Reply::bytes(chunked("5;a=\"\\\"\"\r\nhello\r\n0\r\n\r\n")),
        "/ext_bws" => Reply::bytes(chunked("5; a=b\r\nhello\r\n0\r\n\r\n")),
        "/trailer_content_length" => Reply::bytes(chunked(&format!(
            "5\r\nhello\r\n0\r\nContent-Length: 4\r\n\r\n{LEAK}"
        ))),
        "/trailer_transfer_encoding" => Reply::bytes(chunked(
            "5\r\nhello\r\n0\r\ntransfer-encoding: chunked\r\n\r\n",
        )),
        "/trailer_set_cookie" => {
            Reply::bytes(chunked("5\r\nhello\r\n0\r\nSet-Cookie: a=b\r\n\r\n"))
        }
        "/trailer_obs_fold" => Reply::bytes(chunked("5\r\nhello\r\n0\r\nX-A: 1\r\n b\r\n\r\n")),
        // The head and first chunk go out before the bad bytes arrive.
        "/split_trailer" => Reply::bytes(chunked("5\r\nhello\r\n"))
            .late(SPLIT_PAUSE, format!("0\r\nContent-Length: 4\r\n\r\n{LEAK}")),
        "/split_ext" => Reply::bytes(chunked("5\r\nhello\r\n")).late(
            SPLIT_PAUSE,
            format!("2;a=\"\r\nxx\r\n0\r\n\r\n{LEAK}\"\r\nxx\r\n0\r\n\r\n"),
        ),
        "/ok" => Reply::bytes(chunked(
            "5;a=\"q;x\"\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n",
        )),
        _ => Reply::ok(format!("good:{path}")),
    }
}

/// The scripted backend: answers with [`response_script`]; after any path other than
/// `/good...` and `/ok` its connection is poisoned (every later request on it gets
/// `POISON`).
fn scripted_backend() -> ScriptedBackend {
    let poisoned = Mutex::new(HashSet::new());
    ScriptedBackend::start(move |req| {
        let mut poisoned = poisoned.lock().unwrap();
        if poisoned.contains(&req.conn) {
            return Reply::bytes(POISON_RESPONSE);
        }
        let path = req.path();
        if !(path.starts_with("/good") || path == "/ok") {
            poisoned.insert(req.conn);
        }
        response_script(path)
    })
}

/// The next client gets its own answer, twice (the second may reuse a pooled upstream
/// connection, which must be a clean one): no poisoned connection, no bytes left over
/// from the bad response.
fn next_client_is_clean(addr: SocketAddr, case: &str) {
    for i in 0..2 {
        let path = format!("/good/{case}-{i}");
        let mut c = client(addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let reply = c
            .try_read_response()
            .unwrap_or_else(|e| panic!("after {case}: no answer for the next client: {e}"));
        assert_eq!(
            (reply.status, reply.text()),
            (200, format!("good:{path}")),
            "after {case}"
        );
        c.expect_open_for(Duration::from_millis(20));
    }
}

#[test]
fn bad_response_extensions_and_trailers_are_502() {
    let b = scripted_backend();
    let r = route_to(&b);
    for case in [
        "ext_quoted_crlf",
        "ext_bare_semicolon",
        "ext_escaped_quote",
        "ext_bws",
        "trailer_content_length",
        "trailer_transfer_encoding",
        "trailer_set_cookie",
        "trailer_obs_fold",
    ] {
        let mut c = client(r.addr);
        c.send(format!("GET /{case} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let reply = c
            .try_read_response()
            .unwrap_or_else(|e| panic!("{case}: no response: {e}"));
        assert_eq!(reply.status, 502, "{case}: {:?}", reply.text());
        assert!(
            find(&reply.raw, b"LEAK").is_none(),
            "{case}: bytes behind the bad framing reached the client"
        );
        // Whether the 502 keeps the connection or not, nothing may follow it.
        if reply.header("connection") == Some("close") {
            c.expect_fin();
        } else {
            c.expect_open_for(Duration::from_millis(20));
        }
        next_client_is_clean(r.addr, case);
    }
}

#[test]
fn bad_framing_after_the_head_truncates_and_closes() {
    let b = scripted_backend();
    let r = route_to(&b);
    for case in ["split_trailer", "split_ext"] {
        let mut c = client(r.addr);
        c.send(format!("GET /{case} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let cut = match c.try_read_response() {
            Ok(resp) => panic!(
                "{case}: a complete response relayed from bad framing: {:?}",
                String::from_utf8_lossy(&resp.raw)
            ),
            Err(e) => e,
        };
        let text = String::from_utf8_lossy(&cut.partial);
        // A reset: lenient readers take a clean close after a last-chunk line for the end
        // of a chunked body.
        assert_eq!(
            cut.failure,
            Failure::Reset,
            "{case}: the cut is a reset: {cut}"
        );
        assert!(text.starts_with("HTTP/1.1 200"), "{case}: {text:?}");
        assert!(
            !text.contains("LEAK") && !text.contains("\r\n0\r\n\r\n"),
            "{case}: the response must end without its bad part and without a last chunk: {text:?}"
        );
        next_client_is_clean(r.addr, case);
    }
}

#[test]
fn valid_response_extensions_and_trailers_are_relayed_as_sent() {
    let b = scripted_backend();
    let r = route_to(&b);
    let mut c = client(r.addr);
    c.send(b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let resp = c.read_response();
    assert_eq!(resp.status, 200);
    assert_eq!(
        String::from_utf8_lossy(resp.framed_body()),
        "5;a=\"q;x\"\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n"
    );
    assert_eq!(resp.text(), "hello");
    assert_eq!(resp.trailers, [("X-Checksum".into(), "abc".into())]);
    c.expect_fin();
}
