//! Where bodies end, and what becomes of the client connection after: early answers to a body still arriving, requests pipelined behind a body or a closing answer, chunked bodies with extensions and trailers.

mod common;

use std::time::Duration;

use common::backend::{BodyRead, Ending, Reply, ScriptedBackend};
use common::client::Client;
use common::router::Router;
use common::{find, wait_until};

fn route_to(b: &ScriptedBackend) -> Router {
    Router::start(&format!(
        "default_backend = \"{}\"\n[health]\nenabled = false\n",
        b.addr
    ))
}

/// Wait until the router has relayed something to the client (without consuming it).
fn wait_for_bytes(c: &Client) {
    wait_until(
        "the client has response bytes",
        Duration::from_secs(5),
        || {
            let mut t = [0u8; 16];
            c.stream().peek(&mut t).map(|n| n > 0).unwrap_or(false)
        },
    );
}

/// Send a POST head and the first `first` bytes of a `len`-byte body; the backend
/// answers early (half its answer at once, the rest after a pause); the client sends the
/// rest of its body meanwhile. The router must close in stages (FIN, read and drop what
/// the client still sends), never with an RST.
fn early_answer_then_rest_of_body(extra_head: &str, reply: Reply) -> common::client::Closed {
    let b = ScriptedBackend::start(move |_| reply.clone());
    let r = route_to(&b);
    let mut c = Client::connect(r.addr);
    let len = 50_000;
    c.send(
        format!(
            "POST /upload HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n{extra_head}Content-Type: text/plain\r\nContent-Length: {len}\r\n\r\n"
        )
        .as_bytes(),
    );
    c.send(&vec![b'a'; 1000]);
    wait_for_bytes(&c);
    // The rest of the body, while the router still relays the answer.
    c.send(&vec![b'a'; len - 1000]);
    c.closed()
}

/// A small early answer, to a `Connection: close` request or ending at the close: all of
/// it reaches the client, then a clean FIN (a close-delimited answer ended by a reset
/// reads as cut).
#[test]
fn an_early_answer_on_a_closing_connection_ends_with_fin() {
    for (head, extra) in [
        ("Content-Length: 10", "Connection: close\r\n"),
        ("Content-Type: text/plain", ""),
    ] {
        let reply = Reply::bytes(format!("HTTP/1.1 401 Unauthorized\r\n{head}\r\n\r\n01234"))
            .late(Duration::from_millis(300), "56789")
            .early(BodyRead::Never)
            .then(Ending::Close);
        let end = early_answer_then_rest_of_body(extra, reply);
        let text = String::from_utf8_lossy(end.leftover()).into_owned();
        assert!(text.starts_with("HTTP/1.1 401"), "{head}: {end}");
        assert!(text.ends_with("0123456789"), "{head}: {end}");
        assert!(end.is_fin(), "{head}: a clean close expected: {end}");
    }
}

/// The router on the drivers that read one buffer at a time (epoll, and io_uring without
/// multishot receives): there a client's unread bytes stay in the socket.
fn on_drivers_that_read_once(test: impl Fn(&dyn Fn(&ScriptedBackend) -> Router)) {
    let cfg = |b: &ScriptedBackend| {
        format!(
            "default_backend = \"{}\"\n[health]\nenabled = false\n",
            b.addr
        )
    };
    test(&|b| Router::start_on(&cfg(b), 1, "epoll"));
    test(&|b| Router::start_with_workers(&cfg(b), "multishot = false"));
}

/// A client with a 4 KiB receive buffer (the router's sends wait on it).
fn small_window_client(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Wait until the first answer bytes are there (not consuming them).
fn wait_for_answer(s: &std::net::TcpStream) {
    wait_until("the answer starts", Duration::from_secs(5), || {
        let mut t = [0u8; 16];
        s.peek(&mut t).map(|n| n > 0).unwrap_or(false)
    });
}

/// Everything until the end, and how it ended ("FIN" or the error).
fn read_until_end(s: &mut std::net::TcpStream) -> (Vec<u8>, String) {
    use std::io::Read;
    let mut got = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut tmp) {
            Ok(0) => return (got, "FIN".into()),
            Ok(n) => got.extend_from_slice(&tmp[..n]),
            Err(e) => return (got, e.to_string()),
        }
    }
}

/// The same, with a large early answer: a client that keeps sending the rest of its body
/// while it reads the answer must get all of it. A close with the client's bytes unread
/// is a reset, which throws away what is still in the router's send queue.
#[test]
fn a_large_early_answer_reaches_a_client_still_sending_its_body() {
    on_drivers_that_read_once(large_early_answer);
}

/// A backend that answers `status` (with `fields`) and a body of `len` bytes `z` at once,
/// never reading the request's body, then closes; with the answer's whole length.
fn early_answer_backend(status: &str, fields: &str, len: usize) -> (ScriptedBackend, usize) {
    let mut answer =
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\n{fields}\r\n").into_bytes();
    let head_len = answer.len();
    answer.resize(head_len + len, b'z');
    let whole = answer.len();
    let reply = Reply::bytes(answer)
        .early(BodyRead::Never)
        .then(Ending::Close);
    (ScriptedBackend::start(move |_| reply.clone()), whole)
}

fn large_early_answer(start: &dyn Fn(&ScriptedBackend) -> Router) {
    use std::io::Write;
    let (b, answer_len) = early_answer_backend("401 Unauthorized", "", 4 * 1024 * 1024);
    let r = start(&b);
    let mut s = small_window_client(r.addr);
    let len = 50_000;
    s.write_all(
        format!(
            "POST /upload HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(&vec![b'a'; 1000]).unwrap();
    wait_for_answer(&s);
    // The rest of the body (the router is no longer reading it).
    s.write_all(&vec![b'a'; len - 1000]).unwrap();
    let (got, end) = read_until_end(&mut s);
    assert_eq!(
        (got.len(), end.as_str()),
        (answer_len + "Connection: close\r\n".len(), "FIN"),
        "the whole answer, then a clean close"
    );
}

/// An early answer to an upload far larger than what a staged close reads and drops (at
/// most 1 MiB): ringgate then stops reading, and its close is a reset (the client's bytes
/// are unread), which throws away whatever of the answer is still in its send queue. The
/// answer must be out first: a client that reads it while it still sends gets all of it.
#[test]
fn an_early_answer_to_an_upload_beyond_the_drain_bound_is_delivered_whole() {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (b, answer_len) =
        early_answer_backend("413 Content Too Large", "Connection: close\r\n", 256 * 1024);
    let r = route_to(&b);
    // The answer waits in ringgate's send queue: the client's window is 4 KiB.
    let mut s = small_window_client(r.addr);
    let len = 64 * 1024 * 1024;
    s.write_all(
        format!(
            "POST /upload HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(&vec![b'a'; 1000]).unwrap();
    wait_for_answer(&s);
    // The rest of the body, until ringgate stops taking it.
    let sent = Arc::new(AtomicUsize::new(1000));
    let mut w = s.try_clone().unwrap();
    let counted = sent.clone();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'a'; 64 * 1024];
        while counted.load(Ordering::SeqCst) < len && w.write_all(&chunk).is_ok() {
            counted.fetch_add(chunk.len(), Ordering::SeqCst);
        }
    });
    // The client reads once its upload is refused or stuck.
    wait_until(
        "the upload is refused or stuck",
        Duration::from_secs(10),
        || {
            let before = sent.load(Ordering::SeqCst);
            common::holds_for(Duration::from_millis(200), || {
                sent.load(Ordering::SeqCst) == before
            })
        },
    );
    // (How it ends is not asked: the writer may have taken the reset.)
    let (got, _) = read_until_end(&mut s);
    assert_eq!(
        got.len(),
        answer_len,
        "the whole answer, after {} bytes of the body",
        sent.load(Ordering::SeqCst)
    );
    writer.join().unwrap();
}

fn echo_backend() -> ScriptedBackend {
    ScriptedBackend::start(|req| {
        if req.path() == "/early" {
            Reply::status("401 Unauthorized", "no")
                .early(BodyRead::Never)
                .then(Ending::Close)
        } else {
            Reply::ok(format!("path={}", req.path()))
        }
    })
}

#[test]
fn a_pipelined_request_behind_a_large_chunked_body_is_served() {
    for threshold in [0u64, 1024, 64 * 1024, u64::MAX] {
        let b = echo_backend();
        let r = Router::start(&format!(
            "default_backend = \"{}\"\n[health]\nenabled = false\n[limits]\nsplice_threshold_bytes = {threshold}\n",
            b.addr
        ));
        let mut c = Client::connect(r.addr);
        let mut raw =
            b"POST /up HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        for size in [200_000usize, 3, 70_000, 1] {
            raw.extend_from_slice(format!("{size:x};e=1\r\n").as_bytes());
            raw.extend(std::iter::repeat_n(b'q', size));
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\nX-T: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\n\r\n");
        c.send(&raw);
        let a = c.read_response();
        assert_eq!(a.text(), "path=/up", "{threshold}");
        let n = c.read_response();
        assert_eq!(n.text(), "path=/next", "{threshold}");
        c.expect_open_for(Duration::from_millis(30));
        let got = &b.requests()[0];
        let start = find(&raw, b"\r\n\r\n").unwrap() + 4;
        let end = raw.len() - "GET /next HTTP/1.1\r\nHost: t\r\n\r\n".len();
        assert!(got.body == raw[start..end], "{threshold}: body as sent");
    }
}

/// A chunked response arriving in parts, relayed whatever the splice threshold (a
/// threshold of 0 once spliced nothing for ever between two chunks, spinning the worker):
/// the client gets it as sent, and the upstream connection is kept.
#[test]
fn a_chunked_response_in_parts_is_relayed_whatever_the_splice_threshold() {
    let mut rest = b"11170;e=1\r\n".to_vec();
    rest.extend(std::iter::repeat_n(b'r', 70_000));
    rest.extend_from_slice(b"\r\n0\r\nX-T: 1\r\n\r\n");
    let first = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
    let mut body = first[first.len() - 8..].to_vec();
    body.extend_from_slice(&rest);
    for threshold in [0u64, 1, 64 * 1024, u64::MAX] {
        let rest = rest.clone();
        let b = ScriptedBackend::start(move |req| {
            if req.path() == "/dl" {
                Reply::bytes(first).late(Duration::from_millis(50), &rest)
            } else {
                Reply::ok(format!("path={}", req.path()))
            }
        });
        let r = Router::start(&format!(
            "default_backend = \"{}\"\n[health]\nenabled = false\n[limits]\nsplice_threshold_bytes = {threshold}\n",
            b.addr
        ));
        let mut c = Client::connect(r.addr);
        let dl = c.roundtrip(b"GET /dl HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n");
        assert_eq!(dl.status, 200, "{threshold}");
        assert!(
            dl.framed_body() == &body[..],
            "{threshold}: relayed as sent"
        );
        let n = c.roundtrip(b"GET /next HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n");
        assert_eq!(n.text(), "path=/next", "{threshold}");
        assert_eq!(
            b.accepted(),
            1,
            "{threshold}: the upstream connection was kept"
        );
    }
}

#[test]
fn a_pipelined_request_behind_an_early_answer_is_served() {
    for chunked in [false, true] {
        let b = echo_backend();
        let r = route_to(&b);
        let mut c = Client::connect(r.addr);
        let framing = if chunked {
            "Transfer-Encoding: chunked"
        } else {
            "Content-Length: 30009"
        };
        c.send(
            format!("POST /early HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n{framing}\r\n\r\n")
                .as_bytes(),
        );
        let first = c.read_response();
        assert_eq!(first.status, 401);
        let mut body = Vec::new();
        if chunked {
            for _ in 0..3 {
                body.extend_from_slice(b"2710\r\n");
                body.extend(std::iter::repeat_n(b'G', 10_000));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
        } else {
            body.extend(std::iter::repeat_n(b'G', 30_009));
        }
        body.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n");
        c.send(&body);
        let n = c.read_response();
        assert_eq!(n.text(), "path=/next", "chunked={chunked}");
        c.expect_open_for(Duration::from_millis(30));
    }
}

/// A client pipelines a second request behind one whose (large) answer ends at the
/// close. The router closes after the first answer; the second request, unread in the
/// socket, must not turn that close into a reset that destroys the end of the answer.
#[test]
fn a_request_pipelined_behind_a_close_delimited_answer_does_not_reset_it() {
    on_drivers_that_read_once(pipelined_behind_close);
}

fn pipelined_behind_close(start: &dyn Fn(&ScriptedBackend) -> Router) {
    use std::io::Write;
    let answer_len = 4 * 1024 * 1024;
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n";
    let mut first = head.as_bytes().to_vec();
    first.extend_from_slice(b"start");
    let rest = vec![b'z'; answer_len];
    let reply = Reply::bytes(first)
        .late(Duration::from_millis(200), rest)
        .then(Ending::Close);
    let b = ScriptedBackend::start(move |_| reply.clone());
    let r = start(&b);
    let mut s = small_window_client(r.addr);
    // A body larger than the router's first read: it streams, read to its exact end.
    let mut post =
        b"POST /big HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Type: text/plain\r\nContent-Length: 20000\r\n\r\n"
            .to_vec();
    post.resize(post.len() + 20_000, b'p');
    s.write_all(&post).unwrap();
    wait_for_answer(&s);
    s.write_all(b"GET /next HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n")
        .unwrap();
    let (got, end) = read_until_end(&mut s);
    let body_start = find(&got, b"\r\n\r\n").map_or(0, |i| i + 4);
    assert_eq!(
        (got.len() - body_start, end.as_str()),
        (5 + answer_len, "FIN"),
        "the whole close-delimited answer, then a clean close"
    );
}

/// A request body cut short — the client closes or stalls part-way, or its chunked framing
/// turns bad after the last-chunk line — reaches the upstream as a reset: after a FIN a
/// lenient server takes what it got for the whole body (Python's `http.server` handler
/// reads a short `Content-Length` body to the end of the stream and runs).
#[test]
fn a_request_body_cut_short_reaches_the_upstream_as_a_reset() {
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::mpsc;
    // The upstream reads each connection to its end: what it got, and how it ended.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, ends) = mpsc::channel::<(usize, String)>();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let (Ok(mut s), tx) = (s, tx.clone()) else {
                continue;
            };
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let (mut got, mut tmp) = (0, [0u8; 65536]);
                let end = loop {
                    match s.read(&mut tmp) {
                        Ok(0) => break "FIN".to_string(),
                        Ok(n) => got += n,
                        Err(e) => break e.to_string(),
                    }
                };
                let _ = tx.send((got, end));
            });
        }
    });
    let r = Router::start(&format!(
        "default_backend = \"{addr}\"\n[health]\nenabled = false\n[timeouts]\nclient_body_ms = 300\n"
    ));
    let head = "POST /order HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n";
    let cases: [(&str, Vec<Vec<u8>>, bool); 5] = [
        (
            "the client closes after half its body",
            vec![
                format!("{head}Content-Length: 100000\r\n\r\n").into_bytes(),
                vec![b'a'; 50_000],
            ],
            true,
        ),
        // The rest of these bodies is beyond the splice threshold: spliced, not copied.
        (
            "the client closes part-way through a spliced body",
            vec![
                format!("{head}Content-Length: 1048576\r\n\r\n").into_bytes(),
                vec![b'a'; 300_000],
            ],
            true,
        ),
        (
            "the client stalls part-way through a spliced chunk",
            vec![
                format!("{head}Transfer-Encoding: chunked\r\n\r\n100000\r\n").into_bytes(),
                vec![b'a'; 300_000],
            ],
            false,
        ),
        (
            "the client stalls after half its body",
            vec![
                format!("{head}Content-Length: 100000\r\n\r\n").into_bytes(),
                vec![b'a'; 50_000],
            ],
            false,
        ),
        (
            "a refused trailer after the last-chunk line",
            vec![
                format!("{head}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n").into_bytes(),
                b"Content-Length: 5\r\n\r\n".to_vec(),
            ],
            false,
        ),
    ];
    for (case, parts, finish) in cases {
        let mut c = Client::connect(r.addr);
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                // The first part is forwarded before the next arrives.
                let before = ends.try_recv();
                assert!(before.is_err(), "{case}: {before:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
            c.send(part);
        }
        if finish {
            c.finish_sending();
        }
        let (got, end) = ends.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(got > 0, "{case}: part of the request was forwarded");
        assert_ne!(
            end, "FIN",
            "{case}: the upstream saw a clean end after {got} bytes"
        );
    }
}

/// An upstream that answers before it has the whole body (a full-duplex server answering
/// as it reads) gets the part ringgate sent, then a reset: never a FIN after a chunked
/// body cut after its last-chunk line, or a short `Content-Length` one, which a lenient
/// server takes for the whole body. The client gets the answer, and its connection stays
/// open while the rest of its body is read and dropped.
#[test]
fn an_upstream_that_answers_early_never_sees_its_cut_body_end_cleanly() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    // The upstream answers once it has a head, then reads the connection to its end.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, ends) = mpsc::channel::<(Vec<u8>, String)>();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let (Ok(mut s), tx) = (s, tx.clone()) else {
                continue;
            };
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let (mut got, mut tmp, mut answered) = (Vec::new(), [0u8; 65536], false);
                let end = loop {
                    if !answered && find(&got, b"\r\n\r\n").is_some() {
                        answered = true;
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    }
                    match s.read(&mut tmp) {
                        Ok(0) => break "FIN".to_string(),
                        Ok(n) => got.extend_from_slice(&tmp[..n]),
                        Err(e) => break e.to_string(),
                    }
                };
                let _ = tx.send((got, end));
            });
        }
    });
    let r = Router::start(&format!(
        "default_backend = \"{addr}\"\n[health]\nenabled = false\n"
    ));
    let head = "POST /order HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n";
    for (case, first, rest) in [
        (
            "chunked, cut after the last-chunk line",
            format!("{head}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"),
            "\r\n".to_string(),
        ),
        (
            "Content-Length, half of it",
            format!("{head}Content-Length: 10\r\n\r\nhello"),
            "world".to_string(),
        ),
    ] {
        let mut c = Client::connect(r.addr);
        c.send(first.as_bytes());
        assert_eq!(c.read_response().text(), "ok", "{case}");
        let (got, end) = ends.recv_timeout(Duration::from_secs(10)).unwrap();
        let sent_body = &first.as_bytes()[find(first.as_bytes(), b"\r\n\r\n").unwrap() + 4..];
        assert!(
            got.ends_with(sent_body),
            "{case}: the part sent was forwarded"
        );
        assert_ne!(
            end,
            "FIN",
            "{case}: the upstream saw a clean end after {:?}",
            String::from_utf8_lossy(&got)
        );
        // The rest of the body is read and dropped.
        c.send(rest.as_bytes());
        c.expect_open_for(Duration::from_millis(30));
    }
}
