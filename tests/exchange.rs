//! The request exchange over real sockets: a retry sends the original request, byte for
//! byte; an upstream that answers before it has the whole request is heard at once, its
//! connection is never reused, and nothing of the unread body is ever taken for a request.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::{BodyRead, Ending, Reply, ScriptedBackend};
use common::client::{get, Client};
use common::find;
use common::router::Router;

/// Config: one partition `z` of servers `a` then `b`, every request routed there, the
/// first available server first (so requests reuse `a`'s pooled connection, and a retry
/// goes to `b`), no health checks (they would open connections of their own).
fn config(a: SocketAddr, b: SocketAddr, extra: &str) -> String {
    format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{a}\", \"{b}\"]\npolicy = \"primary_backup\"\n[health]\nenabled = false\n{extra}"
    )
}

/// What the upstream should receive for `raw` from a client on 127.0.0.1: the same bytes,
/// with `X-Forwarded-For` and `X-Forwarded-Proto` added at the end of the head.
fn forwarded(raw: &[u8]) -> Vec<u8> {
    let end = find(raw, b"\r\n\r\n").unwrap() + 2;
    let mut v = raw[..end].to_vec();
    v.extend_from_slice(b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n");
    v.extend_from_slice(&raw[end + 2..]);
    v
}

fn same(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}:\n got {:?}\nwant {:?}",
        String::from_utf8_lossy(got),
        String::from_utf8_lossy(want)
    );
}

#[test]
fn a_retry_after_an_interim_response_sends_the_original_request() {
    let a = ScriptedBackend::start(|_| {
        Reply::reset().interim(
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
            Duration::from_millis(20),
        )
    });
    let b = ScriptedBackend::start(|_| Reply::ok("second"));
    let router = Router::start(&config(a.addr, b.addr, ""));
    let body = r#"{"q":"positions"}"#;
    let raw = format!(
        "POST /api/spot/user/data HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut c = Client::connect(router.addr);
    let r = c.roundtrip(raw.as_bytes());
    assert_eq!((r.status, r.text().as_str()), (200, "second"));
    assert_eq!(r.interim.len(), 1, "the 103 reaches the client first");
    assert_eq!(r.interim[0].status, 103);
    let want = forwarded(raw.as_bytes());
    same(&a.requests()[0].raw(), &want, "first attempt");
    same(
        &b.requests()[0].raw(),
        &want,
        "the retry sends the original request",
    );
}

/// Run `f` in a network namespace of its own whose TCP send buffers are tiny and fixed
/// (4 KiB), so a writer whose peer stops reading blocks after a few kilobytes (on the
/// host's loopback, buffers autotune to megabytes). Receive buffers stay large enough for
/// ringgate to take a whole 16 kB request in one read. Everything `f` starts (router
/// workers, backends) inherits the namespace. Needs root (CAP_SYS_ADMIN), as CI has.
fn in_small_buffer_netns(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) needs root: {}",
            std::io::Error::last_os_error()
        );
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("iproute2's ip");
        assert!(up.success());
        std::fs::write("/proc/sys/net/ipv4/tcp_wmem", "4096 4096 4096").unwrap();
        std::fs::write("/proc/sys/net/ipv4/tcp_rmem", "4096 131072 131072").unwrap();
        f();
    })
    .join()
    .unwrap();
}

#[test]
fn a_retry_after_a_write_timeout_sends_head_and_body() {
    in_small_buffer_netns(|| {
        // `a` answers its first request, then never reads again; `b` answers.
        let a = ScriptedBackend::builder()
            .recv_buffer(4096)
            .start(|_| Reply::ok("first").then(Ending::Hang));
        let b = ScriptedBackend::start(|_| Reply::ok("retried"));
        let router = Router::start(&config(
            a.addr,
            b.addr,
            "[timeouts]\nupstream_response_ms = 300\n",
        ));
        let mut c = Client::connect(router.addr);
        // The whole request leaves the client at once, so ringgate buffers all of it.
        socket2::SockRef::from(c.stream())
            .set_send_buffer_size(1 << 20)
            .unwrap();
        let r =
            c.roundtrip(b"GET /api/spot/user/a HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n");
        assert_eq!(r.text(), "first");
        // A Query whose whole request is buffered (a 16,000-byte body that rides with the
        // head): its write to the pooled connection stalls and times out.
        let body = "x".repeat(16_000);
        let raw = format!(
            "POST /api/spot/user/b HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = c.roundtrip(raw.as_bytes());
        assert_eq!((r.status, r.text().as_str()), (200, "retried"));
        same(
            &b.requests()[0].raw(),
            &forwarded(raw.as_bytes()),
            "the retry sends head and body",
        );
    });
}

/// A body that hides a complete request: if it were ever read as a message, an upstream
/// would record `/smuggled`.
fn upload_body(total: usize) -> Vec<u8> {
    let mut body = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
    body.resize(total, b'b');
    body
}

/// Send the head of a `total`-byte upload and its first `first` bytes.
fn start_upload(addr: SocketAddr, total: usize, first: usize) -> (Client, Vec<u8>) {
    let body = upload_body(total);
    let mut c = Client::connect(addr);
    c.send(
        format!(
            "POST /api/spot/v2/upload HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\nContent-Length: {total}\r\n\r\n"
        )
        .as_bytes(),
    );
    c.send(&body[..first]);
    (c, body)
}

/// An upstream that answers the upload (`/upload`) with `status` after its head, reading
/// no body byte, then ends as told; other requests get `later`.
fn early_upstream(status: &'static str, ending: Ending) -> ScriptedBackend {
    ScriptedBackend::start(move |r| {
        if r.path().ends_with("/upload") {
            Reply::status(status, "early")
                .early(BodyRead::Never)
                .then(ending)
        } else {
            Reply::ok("later")
        }
    })
}

fn nothing_smuggled(backends: &[&ScriptedBackend]) {
    for b in backends {
        for r in b.requests() {
            assert!(find(&r.raw(), b"/smuggled").is_none(), "smuggled: {r:?}");
        }
    }
}

#[test]
fn an_early_answer_to_a_large_upload_reaches_the_client() {
    for (status, ending) in [
        ("413 Content Too Large", Ending::Close),
        ("401 Unauthorized", Ending::Reset),
    ] {
        let a = early_upstream(status, ending);
        let b = ScriptedBackend::start(|_| Reply::ok("b"));
        let router = Router::start(&config(a.addr, b.addr, ""));
        let (mut c, body) = start_upload(router.addr, 200_000, 50_000);
        let r = c.read_response();
        assert_eq!(r.status, status[..3].parse::<u16>().unwrap(), "{status}");
        assert_eq!(r.text(), "early");
        // Either way the rest of the upload is read and dropped: the connection is kept
        // (the rest was discarded) or closed in stages (a clean FIN). Which one depends on
        // whether the answer came while a splice of the body was in flight.
        c.send(&body[50_000..]);
        if r.header("connection") == Some("close") {
            c.finish_sending();
            c.expect_fin();
        } else {
            let probe = c.roundtrip(
                b"GET /api/spot/user/probe HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n",
            );
            assert_eq!(probe.text(), "later", "{status}");
        }
        // The upstream connection is not reused: the next request opens a new one.
        let next = get(router.addr, "/api/spot/user/x", "X-User-Id: alice\r\n");
        assert_eq!(next.text(), "later", "{status}");
        assert!(a.accepted() >= 2, "{status}: a new upstream connection");
        assert_eq!(a.connection(0).requests.len(), 1, "{status}");
        nothing_smuggled(&[&a, &b]);
    }
}

#[test]
fn an_early_answer_keeps_the_client_connection_when_the_rest_is_discarded() {
    let a = early_upstream("401 Unauthorized", Ending::Hang);
    let b = ScriptedBackend::start(|_| Reply::ok("b"));
    let router = Router::start(&config(a.addr, b.addr, ""));
    let (mut c, body) = start_upload(router.addr, 20_000, 8_000);
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (401, "early"));
    assert_eq!(r.header("connection"), None, "the connection is kept");
    // The rest of the body follows, then the next request on the same connection.
    c.send(&body[8_000..]);
    let probe =
        c.roundtrip(b"GET /api/spot/user/probe HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n");
    assert_eq!((probe.status, probe.text().as_str()), (200, "later"));
    assert_eq!(
        a.accepted(),
        2,
        "the early-answering connection is not reused"
    );
    assert_eq!(a.connection(0).requests.len(), 1);
    assert_eq!(a.connection(1).requests[0].path(), "/api/spot/user/probe");
    nothing_smuggled(&[&a, &b]);
}

#[test]
fn an_attempt_that_ends_while_an_interim_answer_is_half_written_writes_nothing_after_it() {
    in_small_buffer_netns(|| {
        // An upstream that sends four 60 kB `103`s and never a final answer: more than the
        // client's socket takes while it does not read, so ringgate is in the middle of
        // relaying one when the response timeout ends the attempt. The client may then
        // have part of a message: an error answer after it would be read as the rest of
        // the 103, and the connection would be out of step from there on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = listener.local_addr().unwrap();
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen_closed = closed.clone();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while find(&head, b"\r\n\r\n").is_none() && conn.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            let mut writer = conn.try_clone().unwrap();
            std::thread::spawn(move || {
                let hint = format!(
                    "HTTP/1.1 103 Early Hints\r\nLink: <{}>\r\n\r\n",
                    "x".repeat(60_000)
                );
                for _ in 0..4 {
                    if writer.write_all(hint.as_bytes()).is_err() {
                        return;
                    }
                }
            });
            // The router closes the connection when it gives up on the attempt.
            let mut sink = [0u8; 4096];
            while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
            seen_closed.store(true, std::sync::atomic::Ordering::Release);
        });
        let router = Router::start(&format!(
            "default_backend = \"z\"\n[partitions.z]\nservers = [\"{upstream}\"]\n[health]\nenabled = false\n[timeouts]\nupstream_response_ms = 300\n"
        ));
        let mut c = Client::connect(router.addr);
        socket2::SockRef::from(c.stream())
            .set_recv_buffer_size(4096)
            .unwrap();
        c.send(b"GET /api/spot/user/hints HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n");
        common::wait_until("the attempt gave up", Duration::from_secs(10), || {
            closed.load(std::sync::atomic::Ordering::Acquire)
        });
        // Everything the client is sent, up to the router's FIN.
        let end = c.closed();
        assert!(end.is_fin(), "the connection closes after the cut: {end}");
        let got = end.leftover();
        let hints = got.windows(12).filter(|w| w == b"HTTP/1.1 103").count();
        // Fewer than four: the relay was stuck in a write when the attempt ended (with or
        // without part of that 103 sent: a dropped write cannot say).
        assert!(
            (1..4).contains(&hints),
            "the client got {hints} hints in {} bytes",
            got.len()
        );
        assert_eq!(
            got.windows(8).filter(|w| *w == b"HTTP/1.1").count(),
            hints,
            "something was written after the cut 103: {:?}",
            String::from_utf8_lossy(&got[got.len().saturating_sub(300)..])
        );
    });
}
