//! Every documented timeout (README, Configuration) over real sockets: that it fires, not
//! early and not much late, with its status and its `ringgate_errors_total` kind; that a
//! pause-based one is not a bound on a body that keeps moving; and how the retry policy
//! and the request deadline bound a request's attempts. (The tunnel's idle timeout is in
//! `tunnel.rs`, the TLS handshake's in `tls.rs`, the pool's in `resilience.rs` and
//! `upstream.rs`, slowloris at scale in `slow_clients.rs`, a body cut by the request
//! deadline in `resilience.rs`.)

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::backend::{blackhole, Reply, ScriptedBackend};
use common::client::{get, Client};
use common::router::Router;
use common::wait_until;

fn partition_of(servers: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [{}]\n[health]\nenabled = false\n{extra}",
        list.join(", ")
    )
}

/// Send `rest` a byte per `every` until the router answers (or closes); when its first
/// bytes came (from the first byte of `rest`), and the answer's head. The trickle's pace
/// is the scenario; the answer is polled for.
fn trickle_until_answer(s: &mut TcpStream, rest: &[u8], every: Duration) -> (Duration, Vec<u8>) {
    let t0 = Instant::now();
    s.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut i = 0;
    let mut next = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "no answer");
        let mut b = [0u8; 4096];
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&b[..n]);
                break;
            }
            Err(_) => {}
        }
        if i < rest.len() && Instant::now() >= next {
            let _ = s.write(&rest[i..i + 1]);
            i += 1;
            next += every;
        }
        std::thread::sleep(Duration::from_millis(5)); // bounded polling
    }
    let at = t0.elapsed();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 4096];
    while let Ok(n @ 1..) = s.read(&mut b) {
        got.extend_from_slice(&b[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    (at, got)
}

/// A head trickled a byte per interval is cut by client_header_ms from its first byte.
#[test]
fn a_head_trickled_a_byte_at_a_time_is_cut_by_the_header_timeout_from_its_first_byte() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = Router::start(&partition_of(
        &[b.addr],
        "[timeouts]\nclient_header_ms = 600\nclient_idle_ms = 5000\n",
    ));
    let mut s = TcpStream::connect(r.addr).unwrap();
    // The scenario: the client waits 300 ms before its first byte (within the header
    // timeout, which a new connection's wait for its first byte is bounded by).
    std::thread::sleep(Duration::from_millis(300));
    let head = b"GET /x HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let (at, got) = trickle_until_answer(&mut s, head, Duration::from_millis(50));
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_took(at, 595, 1500);
    wait_until("counted", Duration::from_secs(2), || {
        r.metrics().errors_of("client_header_timeout") == 1
    });
}

/// The response timeout restarts at each interim `1xx` (README, `forward.relay_interim_responses`):
/// 250 ms gaps within a 400 ms timeout get the answer after a second; a 2 s gap after the
/// last interim gets 504 400 ms after it.
#[test]
fn each_interim_response_restarts_the_response_timeout() {
    let hint = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n";
    let b = ScriptedBackend::start(move |req| match req.path() {
        "/ok" => Reply::ok("done")
            .delayed(Duration::from_millis(250))
            .interim(hint, Duration::from_millis(250))
            .interim(hint, Duration::from_millis(250))
            .interim(hint, Duration::from_millis(250)),
        _ => Reply::ok("late")
            .delayed(Duration::from_millis(250))
            .interim(hint, Duration::from_millis(250))
            .interim(hint, Duration::from_millis(2000)),
    });
    let r = Router::start(&partition_of(
        &[b.addr],
        "[timeouts]\nupstream_response_ms = 400\n[retry]\nmax_attempts = 1\n",
    ));
    let resp = get(r.addr, "/ok", "X-User-Id: u\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.interim.len(), 3);
    let t0 = Instant::now();
    let resp = get(r.addr, "/late", "X-User-Id: u\r\n");
    let at = t0.elapsed();
    assert_eq!(resp.status, 504);
    assert_took(at, 890, 1900);
    assert_eq!(r.metrics().errors_of("upstream_timeout"), 1);
}

/// A backend that answers a 20-byte body one byte per 100 ms.
fn trickling_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let mut s = s.unwrap();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut b = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n");
                for i in 0..20u8 {
                    std::thread::sleep(Duration::from_millis(100)); // scenario: the trickle
                    if s.write_all(&[b'a' + i]).is_err() {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            });
        }
    });
    addr
}

/// A response body that keeps moving (a byte per 100 ms for 2 s) is not cut by the
/// response timeout, a bound on each pause in it; spliced or copied.
#[test]
fn a_slow_but_moving_response_body_is_not_cut() {
    let b = trickling_backend();
    for splice in [1, 65536] {
        let r = Router::start(&partition_of(
            &[b],
            &format!(
                "[timeouts]\nupstream_response_ms = 400\n[limits]\nsplice_threshold_bytes = {splice}\n"
            ),
        ));
        let resp = get(r.addr, "/x", "X-User-Id: u\r\n");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"abcdefghijklmnopqrst");
        assert_eq!(r.metrics().errors_of("upstream_timeout"), 0);
    }
}

/// An upload that keeps moving is not cut by client_body_ms (nor by the response timeout,
/// which starts once it is sent).
#[test]
fn a_slow_but_moving_upload_is_not_cut() {
    for splice in [1, 65536] {
        let b = ScriptedBackend::start(|req| Reply::ok(format!("{}", req.text().len())));
        let r = Router::start(&partition_of(
            &[b.addr],
            &format!("[timeouts]\nclient_body_ms = 400\nupstream_response_ms = 300\n[limits]\nsplice_threshold_bytes = {splice}\n"),
        ));
        let head = "POST /api/x HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Length: 20\r\n\r\n";
        let mut s = TcpStream::connect(r.addr).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let (at, got) = trickle_until_answer(&mut s, &[b'y'; 20], Duration::from_millis(100));
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(at >= Duration::from_millis(1900), "answered after {at:?}");
        assert_eq!(b.requests()[0].text().matches('y').count(), 20);
    }
}

/// A Command that times out upstream is answered 504 and never sent again.
#[test]
fn a_command_that_times_out_upstream_gets_504_and_is_never_sent_again() {
    let h1 = ScriptedBackend::start(|_| Reply::hang());
    let h2 = ScriptedBackend::start(|_| Reply::hang());
    let r = Router::start(&partition_of(
        &[h1.addr, h2.addr],
        "[timeouts]\nupstream_response_ms = 300\n[retry]\nmax_attempts = 3\n",
    ));
    let t0 = Instant::now();
    let mut c = Client::connect(r.addr);
    let resp = c.roundtrip(b"POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Length: 2\r\n\r\n{}");
    let at = t0.elapsed();
    assert_eq!(resp.status, 504);
    assert_took(at, 295, 1500);
    common::assert_holds_for("sent once", Duration::from_millis(500), || {
        h1.request_count() + h2.request_count() == 1
    });
    let m = r.metrics();
    assert_eq!(m.errors_of("upstream_timeout"), 1);
    assert_eq!(m.retries, 0);
}

/// `at` is within `[from_ms, to_ms)`: a timeout fired, not early, not much late (the
/// upper bound is generous: this VM's scheduling).
fn assert_took(at: Duration, from_ms: u64, to_ms: u64) {
    assert!(
        at >= Duration::from_millis(from_ms) && at < Duration::from_millis(to_ms),
        "took {at:?}, not within {from_ms}..{to_ms} ms"
    );
}

/// Three servers that never answer, a router with `extra` in front of them, and a Query
/// sent through it: the servers, the router, the answer and how long it took.
fn a_query_to_three_hanging_servers(
    extra: &str,
) -> (
    Vec<ScriptedBackend>,
    Router,
    common::client::Response,
    Duration,
) {
    let hs: Vec<ScriptedBackend> = (0..3)
        .map(|_| ScriptedBackend::start(|_| Reply::hang()))
        .collect();
    let addrs: Vec<SocketAddr> = hs.iter().map(|h| h.addr).collect();
    let r = Router::start(&partition_of(&addrs, extra));
    let t0 = Instant::now();
    let resp = get(r.addr, "/q", "X-User-Id: u\r\n");
    (hs, r, resp, t0.elapsed())
}

/// A Query that times out goes elsewhere within max_attempts, after the backoff.
#[test]
fn a_query_that_times_out_is_retried_elsewhere_within_max_attempts() {
    let (hs, r, resp, at) = a_query_to_three_hanging_servers("[timeouts]\nupstream_response_ms = 300\n[retry]\nmax_attempts = 2\nbackoff_base_ms = 200\nbackoff_max_ms = 200\n");
    assert_eq!(resp.status, 504);
    assert_took(at, 790, 2500);
    common::assert_holds_for("two attempts", Duration::from_millis(500), || {
        hs.iter().map(|h| h.request_count()).sum::<usize>() == 2
    });
    let m = r.metrics();
    assert_eq!(m.errors_of("upstream_timeout"), 1);
    assert_eq!(m.retries, 1);
}

/// The deadline bounds attempts, backoffs and connects together.
#[test]
fn the_request_deadline_bounds_attempts_and_backoffs_together() {
    let (hs, r, resp, at) = a_query_to_three_hanging_servers("[timeouts]\nupstream_response_ms = 300\nrequest_deadline_ms = 700\n[retry]\nmax_attempts = 3\nbackoff_base_ms = 200\nbackoff_max_ms = 200\n");
    assert_eq!(resp.status, 504);
    assert!(resp.text().contains("deadline"));
    assert_took(at, 690, 1800);
    common::assert_holds_for("two attempts", Duration::from_millis(500), || {
        hs.iter().map(|h| h.request_count()).sum::<usize>() == 2
    });
    assert_eq!(r.metrics().errors_of("deadline"), 1);
}

/// Connect timeouts: each server gets upstream_connect_ms, the deadline bounds the whole.
#[test]
fn each_server_gets_the_connect_timeout_and_the_deadline_bounds_them_all() {
    let (_l1, _f1, a1) = blackhole();
    let (_l2, _f2, a2) = blackhole();
    let r = Router::start(&partition_of(
        &[a1, a2],
        "[timeouts]\nupstream_connect_ms = 300\n",
    ));
    let t0 = Instant::now();
    let resp = get(r.addr, "/q", "X-User-Id: u\r\n");
    let at = t0.elapsed();
    assert_eq!(resp.status, 504);
    assert_took(at, 590, 2000);
    assert_eq!(r.metrics().errors_of("connect_timeout"), 1);
    drop(r);
    let r = Router::start(&partition_of(
        &[a1, a2],
        "[timeouts]\nupstream_connect_ms = 300\nrequest_deadline_ms = 450\n",
    ));
    let t0 = Instant::now();
    let resp = get(r.addr, "/q", "X-User-Id: u\r\n");
    let at = t0.elapsed();
    assert_eq!(resp.status, 504);
    assert_took(at, 440, 1500);
    assert_eq!(r.metrics().errors_of("deadline"), 1);
}

/// A pause in a streamed request body longer than client_body_ms: 408, counted.
#[test]
fn a_pause_in_a_request_body_gets_408() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = Router::start(&partition_of(
        &[b.addr],
        "[timeouts]\nclient_body_ms = 400\n",
    ));
    let mut c = Client::connect(r.addr);
    let t0 = Instant::now();
    c.send(b"POST /api/x HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Length: 10\r\n\r\nab");
    let resp = c.read_response();
    let at = t0.elapsed();
    assert_eq!(resp.status, 408);
    assert_took(at, 395, 1500);
    assert_eq!(r.metrics().errors_of("client_body_timeout"), 1);
    // The same for a body read to find the user id.
    let mut c = Client::connect(r.addr);
    let t0 = Instant::now();
    c.send(b"POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{\"user_id\":");
    let resp = c.read_response();
    let at = t0.elapsed();
    assert_eq!(resp.status, 408);
    assert_took(at, 395, 1500);
    assert_eq!(r.metrics().errors_of("client_body_timeout"), 2);
}

/// Keep-alive idle: closed quietly after client_idle_ms.
#[test]
fn a_kept_alive_connection_is_closed_quietly_at_the_idle_timeout() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = Router::start(&partition_of(
        &[b.addr],
        "[timeouts]\nclient_idle_ms = 400\nclient_header_ms = 5000\n",
    ));
    let mut c = Client::connect(r.addr);
    let resp = c.roundtrip(b"GET /x HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n");
    assert_eq!(resp.status, 200);
    let t0 = Instant::now();
    c.expect_fin();
    let at = t0.elapsed();
    assert_took(at, 390, 1500);
}
