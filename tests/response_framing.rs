//! Response-side framing (SPEC §4, RFC 9112 §6.3): upstreams that answer with conflicting
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

use common::{find, Router};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the backend does with a request.
struct Script {
    /// Written once the head is read (before the body) when `early`, else after the body.
    bytes: Vec<u8>,
    /// Answer before reading the body, and then read the body as the next request
    /// (a desynchronised server).
    early: bool,
    /// After `bytes`: pause, then write these too (late junk), if any.
    late: Option<(Duration, Vec<u8>)>,
    /// Close the connection after writing (after the pause).
    close: bool,
    /// Answer every later request on this connection with `POISON`.
    poison: bool,
}

fn good(path: &str) -> Script {
    let body = format!("good:{path}");
    Script {
        bytes: format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
        early: false,
        late: None,
        close: false,
        poison: false,
    }
}

fn bad(bytes: impl AsRef<[u8]>) -> Script {
    Script {
        bytes: bytes.as_ref().to_vec(),
        early: false,
        late: None,
        close: false,
        poison: true,
    }
}

const POISON_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON";

/// A thread-per-connection backend: `/good/...` paths get their own response; other paths
/// are looked up with `script`. Returns its address and the number of connections
/// accepted.
fn backend<F>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(&str) -> Script + Send + Sync + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let conns2 = conns.clone();
    let script = Arc::new(script);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            conns2.fetch_add(1, Ordering::SeqCst);
            let script = script.clone();
            std::thread::spawn(move || serve(s, &*script));
        }
    });
    (addr, conns)
}

fn serve(mut s: TcpStream, script: &dyn Fn(&str) -> Script) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
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
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0);
        let plan = if poisoned {
            bad(POISON_RESPONSE)
        } else if path.starts_with("/good/") {
            good(&path)
        } else {
            script(&path)
        };
        buf.drain(..end);
        if !plan.early {
            while buf.len() < len {
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
            buf.drain(..len);
        }
        poisoned |= plan.poison;
        if s.write_all(&plan.bytes).is_err() {
            return;
        }
        if let Some((pause, more)) = plan.late {
            std::thread::sleep(pause);
            if s.write_all(&more).is_err() {
                return;
            }
        }
        if plan.close {
            std::thread::sleep(Duration::from_millis(20));
            return;
        }
    }
}

/// What a client got: status (if a head came), body bytes, whether the connection ended.
#[derive(Debug)]
struct Got {
    status: Option<u16>,
    body: Vec<u8>,
    /// Everything received, raw.
    raw: Vec<u8>,
}

/// Send one request on a fresh connection and read until the response is complete
/// (by its own framing) or the connection ends.
fn exchange(addr: SocketAddr, request: &[u8], is_head: bool) -> Got {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    let mut tmp = [0u8; 65536];
    let mut read = |s: &mut TcpStream, raw: &mut Vec<u8>| match s.read(&mut tmp) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            raw.extend_from_slice(&tmp[..n]);
            true
        }
    };
    let mut start = 0;
    loop {
        let end = loop {
            if let Some(i) = find(&raw[start..], b"\r\n\r\n") {
                break start + i + 4;
            }
            if !read(&mut s, &mut raw) {
                return Got {
                    status: None,
                    body: Vec::new(),
                    raw,
                };
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        r.parse(&raw[start..end]).expect("router sent a valid head");
        let status = r.code.unwrap();
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        if (100..200).contains(&status) && status != 101 {
            start = end;
            continue;
        }
        let cl: Option<usize> = header("content-length").map(|v| v.parse().unwrap());
        let chunked = header("transfer-encoding").is_some_and(|v| v.ends_with("chunked"));
        let no_body = is_head || status == 204 || status == 304;
        loop {
            let have = &raw[end..];
            let complete = if no_body {
                Some(0)
            } else if chunked {
                chunked_end(have)
            } else if let Some(n) = cl {
                (have.len() >= n).then_some(n)
            } else {
                None
            };
            if let Some(n) = complete {
                return Got {
                    status: Some(status),
                    body: raw[end..end + n].to_vec(),
                    raw,
                };
            }
            if !read(&mut s, &mut raw) {
                return Got {
                    status: Some(status),
                    body: raw[end..].to_vec(),
                    raw,
                };
            }
        }
    }
}

fn chunked_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        let line = find(&b[i..], b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[i..i + line])
                .ok()?
                .split(';')
                .next()?,
            16,
        )
        .ok()?;
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

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

/// The next client gets its own response, twice (the second may reuse a pooled
/// connection, which must be a clean one), and never a byte of POISON.
fn next_client_is_clean(addr: SocketAddr, case: &str) {
    for i in 0..2 {
        let path = format!("/good/{case}-{i}");
        let got = exchange(addr, &get(&path), false);
        assert_eq!(got.status, Some(200), "{case}: {got:?}");
        assert_eq!(
            String::from_utf8_lossy(&got.body),
            format!("good:{path}"),
            "{case}: the next client got someone else's bytes"
        );
        assert!(find(&got.raw, b"POISON").is_none(), "{case}: {got:?}");
    }
}

/// What the first client must get.
enum First {
    /// This status with exactly this body.
    Exactly(u16, &'static [u8]),
    /// The response started (200) but the connection ended before the body was complete.
    Truncated,
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    is_head: bool,
    script: fn() -> Script,
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
            script: || Script {
                late: Some((Duration::from_millis(50), b"zz\r\nPOISON\r\n0\r\n\r\n".to_vec())),
                ..bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
            },
            first: First::Truncated,
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
            script: || Script {
                late: Some((Duration::from_millis(30), POISON_RESPONSE.to_vec())),
                ..bad("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            },
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
            script: || Script {
                close: true,
                ..bad("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            },
            first: First::Truncated,
            why: "upstream closed mid-body: the client sees a cut connection, not a short body",
        },
        Case {
            name: "early_close_chunked",
            request: req("/early-close-chunked"),
            is_head: false,
            script: || Script {
                close: true,
                ..bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\npart")
            },
            first: First::Truncated,
            why: "the same inside a chunk",
        },
        Case {
            name: "close_mid_head",
            request: req("/close-mid-head"),
            is_head: false,
            script: || Script {
                close: true,
                ..bad("HTTP/1.1 200 OK\r\nContent-Len")
            },
            first: First::Exactly(502, b"upstream closed mid-head\n"),
            why: "no complete head",
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
            name: "close_delimited",
            request: req("/until-close"),
            is_head: false,
            script: || Script {
                close: true,
                ..bad("HTTP/1.1 200 OK\r\n\r\nall of it")
            },
            first: First::Exactly(200, b"all of it"),
            why: "no length: read until close, and that connection is done",
        },
    ]
}

#[test]
fn misbehaving_upstreams_never_leak_into_the_next_exchange() {
    let (b, _conns) = backend(|path| {
        let case = cases()
            .into_iter()
            .find(|c| String::from_utf8_lossy(&c.request).contains(&format!(" {path} ")))
            .unwrap_or_else(|| panic!("no script for {path}"));
        (case.script)()
    });
    let r = Router::start(&format!(
        "default_backend = \"{b}\"\n[partitions.z]\nservers = [\"{b}\"]\n[timeouts]\nupstream_response_ms = 2000\n"
    ));
    // Warm the pool so that every case runs on a reused connection when it can.
    next_client_is_clean(r.addr, "warm");
    for case in cases() {
        let got = exchange(r.addr, &case.request, case.is_head);
        match case.first {
            First::Exactly(status, body) => {
                assert_eq!(
                    got.status,
                    Some(status),
                    "{}: {} ({got:?})",
                    case.name,
                    case.why
                );
                assert_eq!(
                    String::from_utf8_lossy(&got.body),
                    String::from_utf8_lossy(body),
                    "{}: {}",
                    case.name,
                    case.why
                );
            }
            First::Truncated => {
                assert_eq!(got.status, Some(200), "{}: {got:?}", case.name);
            }
        }
        assert!(
            find(&got.raw, b"POISON").is_none(),
            "{}: bytes past the framed end reached the client: {got:?}",
            case.name
        );
        // Late junk must have arrived before the next request can be judged: bytes a
        // backend sends *after* ringgate wrote the next request on a reused connection
        // are indistinguishable from its answer (an inherent limit of HTTP/1.1 pooling).
        std::thread::sleep(Duration::from_millis(100));
        next_client_is_clean(r.addr, case.name);
    }
}

/// An upstream that answers as soon as it has the head, before the request body was
/// sent, and then (desynchronised) reads the body as a new request — here a complete
/// request, which it answers with POISON.
#[test]
fn response_before_the_request_body_never_reaches_another_client() {
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let (b, _) = backend(|path| {
        if path == "/smuggled" {
            return bad(POISON_RESPONSE);
        }
        Script {
            early: true,
            ..good(path)
        }
    });
    let r = Router::start(&format!(
        "default_backend = \"{b}\"\n[partitions.z]\nservers = [\"{b}\"]\n[timeouts]\nupstream_response_ms = 2000\n"
    ));
    next_client_is_clean(r.addr, "warm");
    // Small body (sent with the head) and a large one (relayed after it, > 16 KiB).
    for (name, pad) in [("small", 0usize), ("large", 40_000)] {
        let body = format!("{smuggled}{}", "x".repeat(pad));
        let request = format!(
            "POST /early-{name} HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut s = TcpStream::connect(r.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Head first, the body a little later: the answer comes before the body.
        let split = request.find("\r\n\r\n").unwrap() + 4;
        s.write_all(&request.as_bytes()[..split]).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let _ = s.write_all(&request.as_bytes()[split..]);
        let mut raw = Vec::new();
        let mut tmp = [0u8; 4096];
        while find(&raw, b"\r\n\r\n").is_none_or(|i| raw.len() < i + 4 + 5) {
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&tmp[..n]),
            }
        }
        assert!(find(&raw, b"POISON").is_none(), "{name}: {raw:?}");
        // Whatever the first client got (the early answer or a 502), the next one gets
        // its own response.
        std::thread::sleep(Duration::from_millis(50));
        next_client_is_clean(r.addr, name);
    }
}
