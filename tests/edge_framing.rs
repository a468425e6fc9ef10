//! Edge framing over real sockets: chunk extensions (RFC 9112 §7.1.1), trailer fields
//! (RFC 9110 §6.5.1), `Host` and absolute-form authorities (RFC 9110 §7.2, RFC 9112
//! §3.2), in both directions.
//!
//! Requests go through a router to a *recording* backend written here (independent of
//! ringgate's parsers; its chunked reader is the lenient kind that skips extensions to
//! the CRLF and takes trailers as they come). Each refused request carries an attack and
//! a pipelined probe (`GET /probe`): the client gets the stated status, the connection
//! closes (the probe is never answered), the backend received no byte, and across the
//! whole file nothing named `/smuggled` is ever served. Accepted requests reach the
//! backend with their chunked body byte for byte, and the probe is served after them as
//! its own request.
//!
//! Responses come from a scripted backend (also here) whose connection is *poisoned*
//! after a misbehaving answer: a reused connection would answer `POISON`. A bad chunk
//! extension or a framing trailer from an upstream gives the client a 502 (when it
//! arrives with the head) or a truncated, closed response (when the head was already
//! relayed); never the bytes behind it, and the next client gets its own answer.

mod common;

use common::find;
use common::router::Router;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Recording backend (requests)
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
struct Served {
    target: String,
    /// Body bytes as they arrived (chunked framing included).
    body: Vec<u8>,
}

#[derive(Default)]
struct Log {
    served: Vec<Served>,
    bytes_received: usize,
}

fn recording_backend() -> (SocketAddr, Arc<Mutex<Log>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let log = log2.clone();
            std::thread::spawn(move || record(s, &log));
        }
    });
    (addr, log)
}

fn record(mut s: TcpStream, log: &Mutex<Log>) {
    let mut buf = Vec::new();
    let more = |s: &mut TcpStream, buf: &mut Vec<u8>| -> bool {
        let mut tmp = [0u8; 16384];
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                log.lock().unwrap().bytes_received += n;
                buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    };
    loop {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !more(&mut s, &mut buf) {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let target = head.split(' ').nth(1).unwrap_or("").to_string();
        let lower = head.to_ascii_lowercase();
        let chunked = lower.contains("\r\ntransfer-encoding: chunked\r\n");
        let length: usize = lower
            .split("\r\n")
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        buf.drain(..end);
        let body_len = loop {
            let known = if chunked {
                lenient_chunked_len(&buf)
            } else {
                (buf.len() >= length).then_some(length)
            };
            if let Some(n) = known {
                break n;
            }
            if !more(&mut s, &mut buf) {
                return;
            }
        };
        let body: Vec<u8> = buf.drain(..body_len).collect();
        log.lock().unwrap().served.push(Served {
            target: target.clone(),
            body,
        });
        let text = format!("served:{target}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if s.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// Length of a complete chunked body at the start of `b`: sizes up to the first non-hex
/// byte, the rest of a size line skipped to its CRLF, trailer lines until an empty one.
fn lenient_chunked_len(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        let line = find(&b[i..], b"\r\n")?;
        let hex: String = b[i..i + line]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .map(|&c| c as char)
            .collect();
        let size = usize::from_str_radix(&hex, 16).ok()?;
        i += line + 2;
        if size == 0 {
            loop {
                let e = find(&b[i..], b"\r\n")?;
                i += e + 2;
                if e == 0 {
                    return Some(i);
                }
            }
        }
        if b.len() < i + size + 2 {
            return None;
        }
        i += size + 2;
    }
}

// ---------------------------------------------------------------------------------------
// Client (reads Content-Length responses with its own framing)
// ---------------------------------------------------------------------------------------

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Client {
    fn open(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, raw: &[u8]) {
        // The router may close before reading everything: that is what a refusal does.
        let _ = self.stream.write_all(raw);
    }

    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 16384];
        match self.stream.read(&mut tmp) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    /// The next final response (Content-Length framed), or `None` if the connection
    /// ended first.
    fn reply(&mut self) -> Option<Reply> {
        loop {
            let end = loop {
                if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                    break i + 4;
                }
                if !self.fill() {
                    return None;
                }
            };
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            r.parse(&self.buf[..end]).expect("valid response head");
            let status = r.code.unwrap();
            let len: usize = r
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap_or(0);
            self.buf.drain(..end);
            if (100..200).contains(&status) {
                continue;
            }
            while self.buf.len() < len {
                if !self.fill() {
                    return None;
                }
            }
            let body = self.buf.drain(..len).collect();
            return Some(Reply { status, body });
        }
    }

    /// Everything until the peer closes.
    fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.buf)
    }

    /// Whether the router closed the connection with nothing more to say.
    fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut tmp = [0u8; 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => true,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                false
            }
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// A request the backend would serve if another parser ever framed it out of a body.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
/// The benign request pipelined behind every case.
const PROBE: &[u8] = b"GET /probe HTTP/1.1\r\nHost: t\r\n\r\n";

fn chunked_post(body: impl AsRef<[u8]>) -> Vec<u8> {
    let mut v = b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    v.extend_from_slice(body.as_ref());
    v
}

fn get(host: &str) -> Vec<u8> {
    format!("GET /g HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

fn start() -> (Router, Arc<Mutex<Log>>) {
    let (b, log) = recording_backend();
    let r = Router::start(&format!(
        "default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n"
    ));
    (r, log)
}

/// `raw` + the probe in one write: `status`, closed, no byte to the backend.
fn expect_refused(r: &Router, log: &Mutex<Log>, name: &str, raw: &[u8], status: u16) {
    let before = log.lock().unwrap().bytes_received;
    let mut c = Client::open(r.addr);
    let mut bytes = raw.to_vec();
    bytes.extend_from_slice(PROBE);
    c.send(&bytes);
    let reply = c.reply().unwrap_or_else(|| panic!("{name}: no response"));
    assert_eq!(
        reply.status,
        status,
        "{name}: {:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(
        c.is_closed(),
        "{name}: connection left open after a refusal"
    );
    std::thread::sleep(Duration::from_millis(5));
    let l = log.lock().unwrap();
    assert_eq!(
        l.bytes_received, before,
        "{name}: the backend received bytes of a refused request"
    );
}

/// `head_and_body` + the probe in one write: the backend serves `target` with exactly
/// `body`, then the probe; the client gets both answers in order.
fn expect_forwarded(
    r: &Router,
    log: &Mutex<Log>,
    name: &str,
    head_and_body: &[u8],
    target: &str,
    body: &[u8],
) {
    let before = log.lock().unwrap().served.len();
    let mut c = Client::open(r.addr);
    let mut bytes = head_and_body.to_vec();
    bytes.extend_from_slice(PROBE);
    c.send(&bytes);
    for want in [target, "/probe"] {
        let reply = c
            .reply()
            .unwrap_or_else(|| panic!("{name}: no response for {want}"));
        assert_eq!(
            (
                reply.status,
                String::from_utf8_lossy(&reply.body).into_owned()
            ),
            (200, format!("served:{want}")),
            "{name}"
        );
    }
    let l = log.lock().unwrap();
    assert_eq!(
        &l.served[before..],
        &[
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

fn assert_nothing_smuggled(log: &Mutex<Log>) {
    let l = log.lock().unwrap();
    let smuggled: Vec<_> = l
        .served
        .iter()
        .filter(|s| s.target.contains("smuggled"))
        .collect();
    assert!(
        smuggled.is_empty(),
        "smuggled requests served: {smuggled:?}"
    );
}

#[test]
fn bad_chunk_extensions_are_refused() {
    let (r, log) = start();
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
        expect_refused(&r, &log, name, raw, 400);
    }
    assert_nothing_smuggled(&log);
}

#[test]
fn valid_chunk_extensions_travel_byte_for_byte() {
    let (r, log) = start();
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
        expect_forwarded(&r, &log, name, &chunked_post(body), "/p", body);
    }
    assert_nothing_smuggled(&log);
}

#[test]
fn framing_trailers_are_refused() {
    let (r, log) = start();
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
        expect_refused(&r, &log, name, raw, 400);
    }
    assert_nothing_smuggled(&log);
}

#[test]
fn allowed_trailers_travel_byte_for_byte() {
    let (r, log) = start();
    let body = b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nServer-Timing: db;dur=5\r\nTrailer: X-Checksum\r\n\r\n";
    let mut raw =
        b"POST /p HTTP/1.1\r\nHost: t\r\nTrailer: X-Checksum\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    raw.extend_from_slice(body);
    expect_forwarded(&r, &log, "allowed_trailers", &raw, "/p", body);
}

/// The attack arrives after ringgate has already forwarded the head and the first
/// chunk (the user id is in a header, so nothing waits for the body): the backend gets
/// that prefix and then a closed connection, never a complete request; the client gets
/// a 400; nothing after the bad bytes is served.
#[test]
fn attack_split_from_the_head_is_never_served() {
    let (r, log) = start();
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
        let served_before = log.lock().unwrap().served.len();
        let mut c = Client::open(r.addr);
        c.send(head.as_bytes());
        std::thread::sleep(Duration::from_millis(100));
        let mut bytes = rest.into_bytes();
        bytes.extend_from_slice(PROBE);
        c.send(&bytes);
        let reply = c.reply().unwrap_or_else(|| panic!("{name}: no response"));
        assert_eq!(reply.status, 400, "{name}");
        assert!(c.is_closed(), "{name}: connection left open");
        std::thread::sleep(Duration::from_millis(50));
        let l = log.lock().unwrap();
        assert_eq!(
            &l.served[served_before..],
            &[],
            "{name}: the backend served part of a refused request"
        );
    }
    assert_nothing_smuggled(&log);
}

#[test]
fn host_values_are_validated() {
    let (r, log) = start();
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
        ("only_port", ":80"),
    ] {
        expect_refused(&r, &log, name, &get(host), 400);
    }
    for (name, host) in [
        ("name_port", "ex.example:8080"),
        ("ipv4", "127.0.0.1:80"),
        ("ipv6", "[::1]:8080"),
        ("empty", ""),
        ("pct_encoded", "my_host%41"),
    ] {
        expect_forwarded(&r, &log, name, &get(host), "/g", b"");
    }
    assert_nothing_smuggled(&log);
}

#[test]
fn absolute_form_authority_must_agree_with_host() {
    let (r, log) = start();
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
        expect_refused(&r, &log, name, raw.as_bytes(), 400);
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
        expect_forwarded(&r, &log, name, raw.as_bytes(), target, b"");
    }
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

const POISON: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON";

/// What the scripted backend sends for a path: parts written with a pause between them.
fn response_script(path: &str) -> Vec<Vec<u8>> {
    let chunked = |body: &str| {
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{body}").into_bytes()
    };
    let leak = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nLEAK";
    match path {
        "/ext_quoted_crlf" => vec![chunked(&format!(
            "2;a=\"\r\nxx\r\n0\r\n\r\n{leak}\"\r\nxx\r\n0\r\n\r\n"
        ))],
        "/ext_bare_semicolon" => vec![chunked("5;\r\nhello\r\n0\r\n\r\n")],
        "/ext_escaped_quote" => vec![chunked("5;a=\"\\\"\"\r\nhello\r\n0\r\n\r\n")],
        "/ext_bws" => vec![chunked("5; a=b\r\nhello\r\n0\r\n\r\n")],
        "/trailer_content_length" => {
            vec![chunked(&format!(
                "5\r\nhello\r\n0\r\nContent-Length: 4\r\n\r\n{leak}"
            ))]
        }
        "/trailer_transfer_encoding" => {
            vec![chunked(
                "5\r\nhello\r\n0\r\ntransfer-encoding: chunked\r\n\r\n",
            )]
        }
        "/trailer_set_cookie" => vec![chunked("5\r\nhello\r\n0\r\nSet-Cookie: a=b\r\n\r\n")],
        "/trailer_obs_fold" => vec![chunked("5\r\nhello\r\n0\r\nX-A: 1\r\n b\r\n\r\n")],
        // The head and first chunk go out before the bad bytes arrive.
        "/split_trailer" => vec![
            chunked("5\r\nhello\r\n"),
            format!("0\r\nContent-Length: 4\r\n\r\n{leak}").into_bytes(),
        ],
        "/split_ext" => vec![
            chunked("5\r\nhello\r\n"),
            format!("2;a=\"\r\nxx\r\n0\r\n\r\n{leak}\"\r\nxx\r\n0\r\n\r\n").into_bytes(),
        ],
        "/ok" => vec![chunked(
            "5;a=\"q;x\"\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n",
        )],
        _ => {
            let body = format!("good:{path}");
            vec![format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()]
        }
    }
}

/// Thread-per-connection backend: reads request heads (no bodies), answers with
/// [`response_script`]; after any path other than `/good...` and `/ok` the connection is
/// poisoned.
fn scripted_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 16384];
                let mut poisoned = false;
                loop {
                    let end = loop {
                        if let Some(i) = find(&buf, b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut tmp) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let parts = if poisoned {
                        vec![POISON.to_vec()]
                    } else {
                        response_script(&path)
                    };
                    poisoned |= !(path.starts_with("/good") || path == "/ok");
                    for (i, part) in parts.iter().enumerate() {
                        if i > 0 {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        if s.write_all(part).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A second client must get its own answer: no reused poisoned connection, no bytes
/// left over from the bad response.
fn next_client_is_clean(addr: SocketAddr, case: &str) {
    let mut c = Client::open(addr);
    let path = format!("/good/{case}");
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let reply = c.reply().expect("an answer for the next client");
    assert_eq!(
        (
            reply.status,
            String::from_utf8_lossy(&reply.body).into_owned()
        ),
        (200, format!("good:{path}")),
        "after {case}"
    );
}

#[test]
fn bad_response_extensions_and_trailers_are_502() {
    let b = scripted_backend();
    let r = Router::start(&format!(
        "default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n"
    ));
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
        let mut c = Client::open(r.addr);
        c.send(format!("GET /{case} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let reply = c.reply().unwrap_or_else(|| panic!("{case}: no response"));
        assert_eq!(
            reply.status,
            502,
            "{case}: {:?}",
            String::from_utf8_lossy(&reply.body)
        );
        let rest = c.read_to_close();
        assert!(
            find(&rest, b"LEAK").is_none() && find(&reply.body, b"LEAK").is_none(),
            "{case}: bytes behind the bad framing reached the client"
        );
        next_client_is_clean(r.addr, case);
    }
}

#[test]
fn bad_framing_after_the_head_truncates_and_closes() {
    let b = scripted_backend();
    let r = Router::start(&format!(
        "default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n"
    ));
    for case in ["split_trailer", "split_ext"] {
        let mut c = Client::open(r.addr);
        c.send(format!("GET /{case} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let got = c.read_to_close();
        let text = String::from_utf8_lossy(&got);
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
    let r = Router::start(&format!(
        "default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n"
    ));
    let mut c = Client::open(r.addr);
    c.send(b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let got = c.read_to_close();
    let end = find(&got, b"\r\n\r\n").expect("a head") + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert_eq!(
        String::from_utf8_lossy(&got[end..]),
        "5;a=\"q;x\"\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n"
    );
}
