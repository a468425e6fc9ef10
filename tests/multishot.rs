//! Multishot receives (`workers.multishot`): what a worker received ahead of its readers
//! stays bounded, whole and in order — past one socket's allowance (its multishot is
//! stopped and re-armed) and past the worker's whole buffer ring (a starved socket falls
//! back to ordinary reads) — and an upstream that speaks out of turn while pooled is
//! still never reused, while a quiet one is reused on the ring's word, without a syscall;
//! one its server closes while pooled is closed then, not when next taken.
//! Small requests and whole answers go out eagerly, and answers a client leaves unread
//! wait whole and in order. On epoll the key is accepted and changes nothing.

mod common;

use std::time::Duration;

use common::backend::{Ending, Reply, ScriptedBackend};
use common::client::Client;
use common::router::{test_driver, Router};
use common::wait_until;

fn config(backend: std::net::SocketAddr) -> String {
    format!(
        "default_backend = \"{backend}\"\n[partitions.zone_1]\nservers = [\"{backend}\"]\n[health]\nenabled = false\n"
    )
}

/// Whether `r` receives by multishot on a `DEFER_TASKRUN` ring (the default; not on epoll,
/// nor in the suite's one-read-at-a-time pass): its ring then vouches for quiet pooled
/// connections, and small messages go out eagerly.
fn ring_native(r: &Router) -> bool {
    r.multishot() == vec![true] && r.drivers().iter().all(|d| d.contains("DeferTaskrun"))
}

#[test]
fn pipelined_bursts_beyond_the_buffer_ring_arrive_whole_and_in_order() {
    // Each answer waits a little, so the pipelined requests behind it pile up unread.
    let b = ScriptedBackend::start(|req| {
        let len = req.header("content-length").unwrap_or_default();
        Reply::ok(format!("{} {len}", req.path())).delayed(Duration::from_millis(2))
    });
    let r = Router::start_with_workers(&config(b.addr), "multishot = true");
    let expect_multishot = test_driver() != "epoll";
    assert_eq!(r.multishot(), vec![expect_multishot]);
    // 24 connections × 40 requests of ~1.1 kB: ~44 kB each, more than one socket may hold
    // received and unread (16 buffers of 2 KiB), and ~1 MB in all, twice the worker's ring.
    const CONNS: usize = 24;
    const REQUESTS: usize = 40;
    let addr = r.addr;
    let clients: Vec<_> = (0..CONNS)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut burst = Vec::new();
                for j in 0..REQUESTS {
                    let body = vec![b'a' + (j % 26) as u8; 1000 + j];
                    burst.extend_from_slice(
                        format!(
                            "POST /c{i}/r{j} HTTP/1.1\r\nHost: t\r\nX-User-Id: u{i}\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    );
                    burst.extend_from_slice(&body);
                }
                c.send(&burst);
                for j in 0..REQUESTS {
                    let resp = c.read_response();
                    assert_eq!(resp.status, 200);
                    assert_eq!(resp.text(), format!("/c{i}/r{j} {}", 1000 + j));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("every client got its answers, in order");
    }
    // Each socket received ~22 buffers ahead of its reader: its multishot was stopped at
    // least once, and /metrics says so (the ring-empty count depends on timing).
    let m = r.metrics();
    if expect_multishot {
        assert!(
            m.multishot_backpressure > 0,
            "no back-pressure stop counted ({} ring-empty)",
            m.multishot_ring_empty
        );
    } else {
        assert_eq!((m.multishot_backpressure, m.multishot_ring_empty), (0, 0));
    }
    let requests = b.requests();
    assert_eq!(requests.len(), CONNS * REQUESTS);
    for req in requests {
        let j: usize = req.path().rsplit("/r").next().unwrap().parse().unwrap();
        assert!(req.body_complete, "{}", req.path());
        assert!(
            req.body == vec![b'a' + (j % 26) as u8; 1000 + j],
            "{}: the body arrived altered",
            req.path()
        );
    }
}

#[test]
fn bytes_a_pooled_upstream_sends_out_of_turn_retire_it() {
    // The first answer is followed, a moment later, by bytes nobody asked for: received
    // by the idle connection's multishot, they must keep it out of the next exchange.
    let b = ScriptedBackend::start(|req| match req.path() {
        "/first" => Reply::ok("first").late(Duration::from_millis(30), "HTTP/1.1 200 OK\r\n"),
        _ => Reply::ok("second"),
    });
    let r = Router::start_with_workers(&config(b.addr), "multishot = true");
    let mut c = Client::connect(r.addr);
    assert_eq!(
        c.roundtrip(b"GET /first HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n")
            .text(),
        "first"
    );
    // Judge the next exchange once the late bytes are in ringgate's socket.
    let mut conn = None;
    wait_until(
        "the backend answered /first",
        Duration::from_secs(5),
        || {
            conn = b
                .requests()
                .iter()
                .find(|r| r.path() == "/first" && r.answered)
                .map(|r| r.conn);
            conn.is_some()
        },
    );
    b.wait_delivered(conn.unwrap());
    let resp = c.roundtrip(b"GET /second HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n");
    assert_eq!((resp.status, resp.text().as_str()), (200, "second"));
    assert_eq!(
        b.accepted(),
        2,
        "the connection that spoke out of turn was not reused"
    );
}

#[test]
fn a_quiet_pooled_connection_is_reused_on_the_rings_word() {
    // One request at a time: from the wake-up that brings a request to the checkout of its
    // upstream connection nothing arrives, so the ring (multishot armed on the idle
    // connection, no completion or task work pending) vouches for it and the socket is not
    // peeked. Without multishot (epoll, or the suite's one-read-at-a-time pass) every
    // checkout is a peek.
    let b = ScriptedBackend::start(|req| Reply::ok(req.path()));
    let r = Router::start_with_workers(&config(b.addr), "");
    let mut c = Client::connect(r.addr);
    const N: u64 = 20;
    for i in 0..N {
        let path = format!("/q{i}");
        let resp = c.roundtrip(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n").as_bytes(),
        );
        assert_eq!((resp.status, resp.text()), (200, path));
    }
    assert_eq!(b.accepted(), 1, "one upstream connection served them all");
    let m = r.metrics();
    assert_eq!(m.pool_reused, N - 1);
    if ring_native(&r) {
        assert!(
            m.pool_peeked * 2 < m.pool_reused,
            "the ring vouched for most checkouts: {} of {} peeked",
            m.pool_peeked,
            m.pool_reused
        );
    } else {
        assert_eq!(m.pool_peeked, m.pool_reused, "{:?}", r.drivers());
    }
}

#[test]
fn small_requests_and_whole_answers_go_out_eagerly() {
    // A request head with its small body, and an answer that is all there, are handed to
    // their sockets with no completion to wait for: the send rides on the enter that
    // waits for what comes next.
    let b = ScriptedBackend::start(|req| {
        let len = req.header("content-length").unwrap_or_default();
        Reply::ok(format!("{} {len}", req.path()))
    });
    let r = Router::start_with_workers(&config(b.addr), "");
    let mut c = Client::connect(r.addr);
    const N: u64 = 10;
    for i in 0..N {
        let body = format!("{{\"user_id\":\"u{i}\",\"qty\":{i}}}");
        let resp = c.roundtrip(
            format!(
                "POST /o{i} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert_eq!(
            (resp.status, resp.text()),
            (200, format!("/o{i} {}", body.len()))
        );
    }
    let m = r.metrics();
    if ring_native(&r) {
        assert!(m.eager_sent >= 2 * N, "{} eager sends", m.eager_sent);
        assert_eq!(m.eager_continued, 0, "a quiet socket takes them whole");
    } else {
        assert_eq!(
            (m.eager_sent, m.eager_continued),
            (0, 0),
            "{:?}",
            r.drivers()
        );
    }
}

#[test]
fn answers_a_client_does_not_read_wait_whole_and_in_order() {
    // A client pipelines requests and reads nothing while its receive buffer and the
    // router's send buffer fill: the answers the socket cannot take at once are continued
    // as it drains, after the ones before them, none lost or doubled.
    let b = ScriptedBackend::start(|req| Reply::ok(format!("{}:{}", req.path(), "x".repeat(1500))));
    let r = Router::start_with_workers(&config(b.addr), "");
    let mut c = Client::connect(r.addr);
    // A receive buffer well above loopback's segment size (a smaller one stalls TCP in
    // zero-window probes), and answers enough to fill it and the router's send buffer
    // twice over, whatever this host lets that grow to. Each answer fits one of the
    // worker's 2 KiB receive buffers, so it is always all there at once (eager).
    const RCVBUF: usize = 256 * 1024;
    socket2::SockRef::from(c.stream())
        .set_recv_buffer_size(RCVBUF)
        .unwrap();
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().last()?.parse().ok())
        .unwrap_or(4 << 20);
    let n = 2 * (wmem_max + 2 * RCVBUF) / 1500;
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend_from_slice(
            format!("GET /a{i} HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n").as_bytes(),
        );
    }
    c.send(&burst);
    if ring_native(&r) {
        wait_until(
            "an eager send is continued",
            Duration::from_secs(20),
            || r.metrics().eager_continued > 0,
        );
    }
    for i in 0..n {
        let resp = c.read_response();
        assert_eq!(
            (resp.status, resp.text()),
            (200, format!("/a{i}:{}", "x".repeat(1500)))
        );
    }
    // Nothing more, and a clean close once the client is done.
    c.finish_sending();
    assert_eq!(c.closed(), common::client::Closed::Fin { leftover: vec![] });
}

/// Sockets to `peer`'s port in CLOSE_WAIT (the peer closed, this side has not yet), read
/// from `/proc/net/tcp`: the in-process router's upstream sockets among them.
fn close_wait_to(peer: std::net::SocketAddr) -> usize {
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = format!(":{:04X}", peer.port());
    tcp.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2].ends_with(&port) && f[3] == "08"
        })
        .count()
}

/// One exchange with a `body`-byte answer, after which the server closes the pooled
/// connection (its keep-alive timeout, earlier than ringgate's 30 s); then another.
fn server_closes_a_pooled_connection(body: usize) {
    println!("body: {body} bytes");
    let b = ScriptedBackend::start(move |_| {
        Reply::ok("d".repeat(body)).then_after(Duration::from_millis(50), Ending::Drop)
    });
    let r = Router::start_with_workers(&config(b.addr), "");
    let mut c = Client::connect(r.addr);
    for path in ["/first", "/second"] {
        let resp = c.roundtrip(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n").as_bytes(),
        );
        assert_eq!((resp.status, resp.body.len()), (200, body));
        if path == "/second" {
            break;
        }
        wait_until(
            "the backend closed its connection",
            Duration::from_secs(5),
            || b.closed_count() == 1,
        );
        if r.multishot() == vec![true] {
            // The idle connection's multishot receives the end: the connection is closed
            // then and leaves the pool, so the server's side finishes its close too.
            wait_until(
                "the router closed its side and emptied the pool",
                Duration::from_secs(5),
                || close_wait_to(b.addr) == 0 && r.metrics().pool_idle == 0,
            );
        } else {
            // No watch (epoll, or one read at a time): the end waits for the next checkout.
            wait_until(
                "the close reached the router",
                Duration::from_secs(5),
                || close_wait_to(b.addr) == 1,
            );
            assert_eq!(r.metrics().pool_idle, 1);
        }
    }
    assert_eq!(b.accepted(), 2, "the closed connection was not reused");
    wait_until("no socket left half-closed", Duration::from_secs(5), || {
        close_wait_to(b.addr) == 0
    });
}

#[test]
fn a_pooled_connection_its_server_closes_is_closed_at_once_where_the_ring_watches() {
    // A small answer, read by the multishot; a large one, spliced (the multishot stopped).
    server_closes_a_pooled_connection(100);
    server_closes_a_pooled_connection(256 * 1024);
}
