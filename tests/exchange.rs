//! The request exchange over real sockets: retries send the original request, and an
//! upstream that answers before it has the whole request is heard at once.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{find, Conn, Router};

/// Raw requests an upstream received, per connection in accept order.
#[derive(Default)]
struct Seen(Mutex<Vec<Vec<u8>>>);

impl Seen {
    fn push(&self, conn: usize, bytes: &[u8]) {
        let mut v = self.0.lock().unwrap();
        while v.len() <= conn {
            v.push(Vec::new());
        }
        v[conn].extend_from_slice(bytes);
    }

    fn conn(&self, i: usize) -> Vec<u8> {
        self.0.lock().unwrap().get(i).cloned().unwrap_or_default()
    }

    fn conns(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// An upstream on two addresses (a partition of two servers, so a retry "elsewhere" can
/// reach it again) whose connection number `i` (in accept order, over both) is handled by
/// `script(i, stream, seen)` on its own thread.
fn upstream<F>(script: F) -> ([SocketAddr; 2], Arc<Seen>)
where
    F: Fn(usize, TcpStream, &Seen) + Send + Sync + 'static,
{
    upstream_with_rcvbuf(None, script)
}

/// [`upstream`] whose sockets have a fixed receive buffer of `rcvbuf` bytes.
fn upstream_with_rcvbuf<F>(rcvbuf: Option<usize>, script: F) -> ([SocketAddr; 2], Arc<Seen>)
where
    F: Fn(usize, TcpStream, &Seen) + Send + Sync + 'static,
{
    let seen = Arc::new(Seen::default());
    let script = Arc::new(script);
    let next = Arc::new(AtomicUsize::new(0));
    let addrs = [0, 1].map(|_| {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if let Some(size) = rcvbuf {
            sock.set_recv_buffer_size(size).unwrap();
        }
        sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        sock.listen(64).unwrap();
        let l: TcpListener = sock.into();
        let addr = l.local_addr().unwrap();
        let (script, seen, next) = (script.clone(), seen.clone(), next.clone());
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let Ok(stream) = stream else { return };
                let i = next.fetch_add(1, Ordering::SeqCst);
                seen.push(i, b"");
                let (script, seen) = (script.clone(), seen.clone());
                std::thread::spawn(move || script(i, stream, &seen));
            }
        });
        addr
    });
    (addrs, seen)
}

/// Read one request (head and `Content-Length` body) and record it.
fn take_request(s: &mut TcpStream, conn: usize, seen: &Seen) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let req = common::read_request(s, &mut buf)?;
    seen.push(conn, req.as_bytes());
    Some(req.into_bytes())
}

/// Read up to the end of a head only (byte by byte, so no body byte is consumed).
fn take_head(s: &mut TcpStream, conn: usize, seen: &Seen) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap_or(0) == 0 {
            break;
        }
        head.push(b[0]);
    }
    seen.push(conn, &head);
    head
}

fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

/// Read until `needle` has arrived (10 s at most).
fn read_until(s: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    while find(&got, needle).is_none() {
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => panic!(
                "closed before {:?}: {}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&tmp[..n]),
        }
    }
    got
}

/// The peer closed cleanly (FIN), with nothing left to read; an RST fails.
fn expect_fin(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tmp = [0u8; 4096];
    match s.read(&mut tmp) {
        Ok(0) => {}
        Ok(n) => panic!(
            "leftover bytes before the close: {:?}",
            String::from_utf8_lossy(&tmp[..n])
        ),
        Err(e) => panic!("not a clean close: {e}"),
    }
}

fn ok(body: &str) -> Vec<u8> {
    common::ok_response(body)
}

/// Config: one partition `z` of the upstream's two addresses, every request routed
/// there, the first server first (so a request reuses the pooled connection), no health
/// checks (they would open connections of their own).
fn config([a, b]: [SocketAddr; 2], extra: &str) -> String {
    format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{a}\", \"{b}\"]\npolicy = \"primary_backup\"\n[health]\nenabled = false\n{extra}"
    )
}

/// What the upstream should receive for `raw` from the client (127.0.0.1): the same
/// bytes, with `X-Forwarded-For` added at the end of the head.
fn forwarded(raw: &[u8]) -> Vec<u8> {
    let end = find(raw, b"\r\n\r\n").unwrap() + 2;
    let mut v = raw[..end].to_vec();
    v.extend_from_slice(b"X-Forwarded-For: 127.0.0.1\r\n\r\n");
    v.extend_from_slice(&raw[end + 2..]);
    v
}

#[test]
fn a_retry_after_an_interim_response_sends_the_original_request() {
    // Connection 0 answers `103 Early Hints`, then resets; connection 1 answers 200.
    let (b, seen) = upstream(|i, mut s, seen| {
        if take_request(&mut s, i, seen).is_none() {
            return;
        }
        if i == 0 {
            let _ = s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n");
            std::thread::sleep(Duration::from_millis(20));
            reset(s);
        } else {
            let _ = s.write_all(&ok("second"));
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let router = Router::start(&config(b, ""));
    let body = r#"{"q":"positions"}"#;
    let raw = format!(
        "POST /api/spot/user/data HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut c = Conn::open(router.addr);
    c.send(raw.as_bytes());
    let got = read_until(&mut c.stream, b"second");
    let interim = find(&got, b"HTTP/1.1 103 Early Hints\r\n").expect("the 103 reaches the client");
    let fin = find(&got, b"HTTP/1.1 200 OK\r\n").expect("a final 200");
    assert!(interim < fin, "{}", String::from_utf8_lossy(&got));
    let expected = forwarded(raw.as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&seen.conn(0)),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(
        String::from_utf8_lossy(&seen.conn(1)),
        String::from_utf8_lossy(&expected),
        "the retry must send the original request, byte for byte"
    );
}

/// Run `f` in a network namespace of its own whose TCP send buffers are tiny and fixed
/// (4 KiB), so a writer whose peer stops reading blocks after a few kilobytes (on the
/// host's loopback, buffers autotune to megabytes). Receive buffers stay large enough for
/// ringgate to take a whole 16 kB request in one read. Everything `f` starts (router
/// workers included) inherits the namespace. Needs root (CAP_SYS_ADMIN), as CI has.
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
        // Connection 0 answers one request, then never reads again; connection 1 reads
        // and answers.
        let (b, seen) = upstream_with_rcvbuf(Some(4096), |i, mut s, seen| {
            if take_request(&mut s, i, seen).is_none() {
                return;
            }
            if i == 0 {
                let _ = s.write_all(&ok("first"));
                std::thread::sleep(Duration::from_secs(5));
            } else {
                let _ = s.write_all(&ok("retried"));
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let router = Router::start(&config(b, "[timeouts]\nupstream_response_ms = 300\n"));
        let mut c = Conn::open(router.addr);
        let r =
            c.roundtrip(b"GET /api/spot/user/a HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n");
        assert_eq!(r.text(), "first");
        // A Query whose whole request is buffered (16,000-byte body, rides with the
        // head): its write to the pooled connection stalls and times out.
        let body = "x".repeat(16_000);
        let raw = format!(
            "POST /api/spot/user/b HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = c.roundtrip(raw.as_bytes());
        assert_eq!((r.status, r.text().as_str()), (200, "retried"));
        let got = seen.conn(1);
        assert!(
            got == forwarded(raw.as_bytes()),
            "the retry must send head and body: got {} bytes starting {:?}",
            got.len(),
            String::from_utf8_lossy(&got[..got.len().min(80)])
        );
    });
}

/// A client that uploads `total` body bytes: sends the head and `first` of them, then
/// waits for the response before sending the rest (with `after` behind it).
fn upload(addr: SocketAddr, total: usize, first: usize) -> (Conn, String, Vec<u8>) {
    // The body hides a complete request: if it were ever read as a message, the upstream
    // would record `/smuggled`.
    let mut body = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
    body.resize(total, b'b');
    let head = format!(
        "POST /api/spot/v2/upload HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\nContent-Length: {total}\r\n\r\n"
    );
    let mut c = Conn::open(addr);
    c.send(head.as_bytes());
    c.send(&body[..first]);
    (c, head, body)
}

/// An upstream that answers `status` right after the head (reading no body byte), and
/// then closes (`close`) or keeps the connection without reading.
fn early_upstream(status: &'static str, close: bool) -> ([SocketAddr; 2], Arc<Seen>) {
    upstream(move |i, mut s, seen| {
        if i > 0 {
            // Later connections: ordinary requests.
            while take_request(&mut s, i, seen).is_some() {
                if s.write_all(&ok("later")).is_err() {
                    return;
                }
            }
            return;
        }
        take_head(&mut s, i, seen);
        let conn = if close { "Connection: close\r\n" } else { "" };
        let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n{conn}\r\nearly");
        let _ = s.write_all(reply.as_bytes());
        if !close {
            std::thread::sleep(Duration::from_secs(3));
        }
        // Closing with unread body bytes: the kernel sends RST, as real servers do.
    })
}

#[test]
fn an_early_answer_to_a_large_upload_reaches_the_client() {
    for status in ["413 Content Too Large", "401 Unauthorized"] {
        let (b, seen) = early_upstream(status, true);
        let router = Router::start(&config(b, ""));
        let (mut c, _, body) = upload(router.addr, 200_000, 50_000);
        let r = c
            .read_response(false)
            .unwrap_or_else(|| panic!("{status}: the early answer must reach the client"));
        assert_eq!(r.status, status[..3].parse::<u16>().unwrap());
        assert_eq!(r.text(), "early");
        assert_eq!(r.header("connection"), Some("close"));
        // The rest of the upload is read and dropped before the close: a clean FIN.
        c.send(&body[50_000..]);
        c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        expect_fin(&mut c.stream);
        // Nothing smuggled, and the upstream connection is not reused.
        let next = common::get(router.addr, "/api/spot/user/x", "X-User-Id: alice\r\n");
        assert_eq!(next.text(), "later");
        assert_eq!(seen.conns(), 2, "{status}: a new upstream connection");
        let all: Vec<u8> = (0..seen.conns()).flat_map(|i| seen.conn(i)).collect();
        assert!(find(&all, b"/smuggled").is_none());
    }
}

#[test]
fn an_early_answer_keeps_the_client_connection_when_the_rest_is_discarded() {
    let (b, seen) = early_upstream("401 Unauthorized", false);
    let router = Router::start(&config(b, ""));
    let (mut c, _, body) = upload(router.addr, 20_000, 8_000);
    let r = c.read_response(false).expect("the early answer");
    assert_eq!((r.status, r.text().as_str()), (401, "early"));
    assert_eq!(r.header("connection"), None, "the connection is kept");
    // The rest of the body follows, then the next request on the same connection.
    c.send(&body[8_000..]);
    let probe =
        c.roundtrip(b"GET /api/spot/user/probe HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n");
    assert_eq!((probe.status, probe.text().as_str()), (200, "later"));
    assert_eq!(
        seen.conns(),
        2,
        "the early-answering connection is not reused"
    );
    assert!(find(&seen.conn(1), b"GET /api/spot/user/probe ").is_some());
    let all: Vec<u8> = (0..seen.conns()).flat_map(|i| seen.conn(i)).collect();
    assert!(find(&all, b"/smuggled").is_none());
}
