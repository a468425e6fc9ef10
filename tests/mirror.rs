//! Query mirroring to a shadow partition over real sockets: Queries reach the shadow with
//! the same method, path, body and user, Commands never; the client never waits for the
//! shadow, whatever it does; beyond the in-flight bound, mirrors are dropped and counted.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::backend::{BodyRead, Ending, Reply, ScriptedBackend};
use common::client::Client;
use common::router::{dead_addr, Router};
use common::wait_until;

/// Partition `z` (the primary) mirrors to `z_shadow`; every request is for alice, in `z`.
fn config(primary: std::net::SocketAddr, shadow: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[partitions.z]\nservers = [\"{primary}\"]\nmirror = \"z_shadow\"\n[partitions.z_shadow]\nservers = [\"{shadow}\"]\n[users]\nalice = \"z\"\n[health]\nenabled = false\n{extra}"
    )
}

const QUERY_GET: &[u8] =
    b"GET /api/spot/user/positions?x=1 HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n";

fn query_post(body: &str) -> Vec<u8> {
    format!(
        "POST /api/spot/user/search HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn command(body: &str) -> Vec<u8> {
    format!(
        "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn queries_are_mirrored_byte_for_byte_and_commands_never() {
    let primary = ScriptedBackend::start(|_| Reply::ok("primary"));
    let shadow = ScriptedBackend::start(|_| Reply::ok("shadow"));
    let r = Router::start(&config(primary.addr, shadow.addr, ""));
    let mut c = Client::connect(r.addr);
    let body = r#"{"user_id":"alice","q":"open orders"}"#;
    assert_eq!(c.roundtrip(QUERY_GET).text(), "primary");
    assert_eq!(c.roundtrip(&query_post(body)).text(), "primary");
    assert_eq!(c.roundtrip(&command(body)).text(), "primary");
    wait_until("two mirrors arrive", Duration::from_secs(5), || {
        shadow.request_count() == 2
    });
    // Exactly what the primary got for the same Queries (mirrors run side by side, so
    // they may arrive in either order).
    let p = primary.requests();
    let m = shadow.requests();
    let mirrored = |raw: &[u8]| m.iter().any(|r| r.raw() == raw);
    assert!(mirrored(&p[0].raw()), "GET mirrored as forwarded: {m:?}");
    assert!(
        mirrored(&p[1].raw()),
        "POST Query mirrored with its body: {m:?}"
    );
    assert!(m.iter().any(|r| r.body == body.as_bytes()));
    assert!(m
        .iter()
        .all(|r| r.header("x-user-id").as_deref() == Some("alice") || r.body == body.as_bytes()));
    // The Command went to the primary only.
    assert_eq!(p[2].path(), "/api/spot/v2/order");
    assert!(m
        .iter()
        .all(|r| r.method() != "POST" || r.path() != "/api/spot/v2/order"));
    wait_until("counted", Duration::from_secs(5), || {
        r.metrics().users.mirror_status[1] == 2
    });
}

#[test]
fn a_mirrored_head_is_read_as_an_answer_to_head() {
    // Both answer HEAD as servers must: the head alone, its Content-Length that of a GET.
    let head_only = |r: &common::backend::Request| {
        assert_eq!(r.method(), "HEAD");
        Reply::bytes("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
    };
    let primary = ScriptedBackend::start(head_only);
    let shadow = ScriptedBackend::start(head_only);
    let r = Router::start(&config(primary.addr, shadow.addr, ""));
    let mut c = Client::connect(r.addr);
    for n in 1..=2 {
        c.send(b"HEAD /api/spot/user/positions HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n");
        assert_eq!(c.read_head_response().status, 200);
        // The mirror's answer is complete at its head: counted as 2xx at once (not after
        // waiting for a body until the response timeout), its connection pooled by then.
        wait_until("the mirror counted as 2xx", Duration::from_secs(5), || {
            r.metrics().users.mirror_status[1] == n
        });
    }
    // The second mirror went out on the first one's pooled connection.
    assert_eq!(shadow.request_count(), 2);
    assert_eq!(shadow.accepted(), 1);
}

/// A mirrored Query with a body that only POST, PUT or PATCH would have given meaning
/// (here an OPTIONS): a shadow that ignores the body reads it as a next request, and
/// answers it later on the mirror's connection. That connection is closed, not pooled: the
/// next mirror, given that late answer for its own, would be counted under its status.
#[test]
fn a_mirror_with_a_body_its_shadow_may_ignore_does_not_pool_its_connection() {
    const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let primary = ScriptedBackend::start(|_| Reply::ok("primary"));
    let shadow = ScriptedBackend::start(|req| match req.path() {
        "/smuggled" => Reply::ok("smuggled").delayed(Duration::from_millis(500)),
        "/api/spot/user/with-body" => Reply::ok("first").early(BodyRead::Never),
        _ => Reply::ok("own"),
    });
    let r = Router::start(&config(primary.addr, shadow.addr, ""));
    let mut c = Client::connect(r.addr);
    let options = format!(
        "OPTIONS /api/spot/user/with-body HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    assert_eq!(c.roundtrip(options.as_bytes()).text(), "primary");
    wait_until("the first mirror counted", Duration::from_secs(5), || {
        r.metrics().users.mirror_status[1] == 1
    });
    assert_eq!(c.roundtrip(QUERY_GET).text(), "primary");
    let conn_of = |path: &str| {
        shadow
            .requests()
            .iter()
            .find(|q| q.path() == path)
            .map(|q| q.conn)
    };
    wait_until("the second mirror arrives", Duration::from_secs(5), || {
        conn_of("/api/spot/user/positions").is_some()
    });
    assert_ne!(
        conn_of("/api/spot/user/positions"),
        conn_of("/api/spot/user/with-body"),
        "the second mirror went on the first one's connection"
    );
}

/// A Query whose client went away before its answer reached it (a reset while the answer
/// was awaited: counted `status="none"`, logged 499) is not mirrored: the copy would be
/// sent after the client left, for nobody, taking a mirror slot from the Queries still
/// served. On io_uring with multishot the wait ends at the reset; elsewhere when the
/// answer is written: not mirrored either way.
#[test]
fn a_query_whose_client_went_away_before_its_answer_is_not_mirrored() {
    let released = Arc::new(AtomicBool::new(false));
    let gate = released.clone();
    let primary = ScriptedBackend::start(move |req| {
        if req.path() == "/api/spot/user/slow" {
            wait_until(
                "the slow Query is released",
                Duration::from_secs(10),
                || gate.load(Ordering::SeqCst),
            );
        }
        Reply::ok("primary")
    });
    let shadow = ScriptedBackend::start(|_| Reply::ok("shadow"));
    let r = Router::start(&config(primary.addr, shadow.addr, ""));
    let mut c = Client::connect(r.addr);
    c.send(b"GET /api/spot/user/slow HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n");
    primary.wait_for_requests(1);
    c.reset();
    released.store(true, Ordering::SeqCst);
    // Its exchange is over once the router has closed its connection.
    wait_until(
        "the client connection closed",
        Duration::from_secs(5),
        || r.metrics().open_connections == 0,
    );
    assert_eq!(
        Client::connect(r.addr).roundtrip(QUERY_GET).text(),
        "primary"
    );
    wait_until("the served Query mirrored", Duration::from_secs(5), || {
        r.metrics().users.mirror_status[1] >= 1
    });
    common::assert_holds_for(
        "the Query whose client went away is not mirrored",
        Duration::from_millis(300),
        || {
            shadow
                .requests()
                .iter()
                .all(|q| q.path() != "/api/spot/user/slow")
        },
    );
    assert_eq!(r.metrics().users.mirror_status.iter().sum::<u64>(), 1);
}

#[test]
fn a_dead_or_hanging_shadow_changes_nothing_for_the_client() {
    // Dead: nothing listens.
    let primary = ScriptedBackend::start(|_| Reply::ok("primary"));
    let r = Router::start(&config(primary.addr, dead_addr(), ""));
    let mut c = Client::connect(r.addr);
    for _ in 0..5 {
        let resp = c.roundtrip(QUERY_GET);
        assert_eq!((resp.status, resp.text().as_str()), (200, "primary"));
    }
    wait_until("failed mirrors counted", Duration::from_secs(5), || {
        r.metrics().users.mirror_status[5] == 5
    });

    // Hanging: it reads every mirror and never answers. The client's requests complete
    // one after the other while all their mirrors are still open at the shadow.
    let primary = ScriptedBackend::start(|_| Reply::ok("primary"));
    let shadow = ScriptedBackend::start(|_| Reply::hang());
    let r = Router::start(&config(primary.addr, shadow.addr, ""));
    let mut c = Client::connect(r.addr);
    for _ in 0..10 {
        assert_eq!(c.roundtrip(QUERY_GET).text(), "primary");
    }
    wait_until("ten mirrors held open", Duration::from_secs(5), || {
        shadow.request_count() == 10
    });
}

#[test]
fn mirrors_beyond_the_in_flight_bound_are_dropped_and_counted() {
    let primary = ScriptedBackend::start(|_| Reply::ok("primary"));
    let shadow = ScriptedBackend::start(|_| Reply::hang());
    let r = Router::start(&config(
        primary.addr,
        shadow.addr,
        "[mirror]\nmax_in_flight_per_worker = 3\n",
    ));
    let mut c = Client::connect(r.addr);
    for _ in 0..8 {
        assert_eq!(c.roundtrip(QUERY_GET).text(), "primary");
    }
    wait_until(
        "three mirrors at the shadow",
        Duration::from_secs(5),
        || shadow.request_count() == 3,
    );
    assert_eq!(r.metrics().users.mirror_dropped, 5);
}

#[test]
fn upgrade_requests_are_not_mirrored() {
    // A mirrored upgrade that the shadow switched (101) held its mirror slot, waiting for
    // a final answer that never comes, until the response timeout: the mirrors behind it
    // were dropped.
    let primary = ScriptedBackend::start(|_| Reply::ok("primary"));
    let shadow = ScriptedBackend::start(|r| match r.header("upgrade") {
        Some(_) => Reply::bytes(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        ),
        None => Reply::ok("shadow"),
    });
    let r = Router::start(&config(
        primary.addr,
        shadow.addr,
        "[mirror]\nmax_in_flight_per_worker = 1\n",
    ));
    let mut c = Client::connect(r.addr);
    let upgrade = b"GET /api/spot/user/stream HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    // The primary declines the switch; the connection goes on as HTTP.
    assert_eq!(c.roundtrip(upgrade).text(), "primary");
    assert_eq!(c.roundtrip(QUERY_GET).text(), "primary");
    wait_until(
        "the Query's mirror is answered",
        Duration::from_secs(5),
        || r.metrics().users.mirror_status[1] == 1,
    );
    let m = shadow.requests();
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(m[0].header("upgrade").is_none(), "{m:?}");
    assert_eq!(r.metrics().users.mirror_dropped, 0);
}

/// A shadow that answers a plain Query with a 101 (no switch was asked for) has given its
/// last answer on that connection, as the data path takes it (a 502 there): the mirror
/// ends at once, counted under 1xx, and the connection is closed. It was read on for a
/// final answer that never comes, holding the slot until the response timeout: with the
/// bound reached, the mirrors behind it were dropped.
#[test]
fn a_shadow_that_switches_protocols_unasked_ends_its_mirror_at_once() {
    let primary = ScriptedBackend::start(|_| Reply::ok("primary"));
    let shadow = ScriptedBackend::start(|_| {
        Reply::bytes(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
        )
        .then(Ending::Hang)
    });
    let extra =
        "[timeouts]\nupstream_response_ms = 20000\n[mirror]\nmax_in_flight_per_worker = 1\n";
    let r = Router::start(&config(primary.addr, shadow.addr, extra));
    let mut c = Client::connect(r.addr);
    for n in 1..=2 {
        assert_eq!(c.roundtrip(QUERY_GET).text(), "primary");
        wait_until(
            &format!("mirror {n} ends, counted under 1xx"),
            Duration::from_secs(5),
            || r.metrics().users.mirror_status[0] == n,
        );
    }
    assert_eq!(r.metrics().users.mirror_dropped, 0);
    assert_eq!(shadow.accepted(), 2, "a switched connection was pooled");
}

#[test]
fn a_refused_query_is_not_mirrored() {
    // alice and carol may each make one Query a second: alice's second is refused (429)
    // and reaches neither the primary nor the shadow. carol's Query after it is mirrored
    // on a new connection, while a mirror of the refused one, launched first, would have
    // taken the first mirror's pooled connection: it would be at the shadow by then.
    let primary = ScriptedBackend::start(|_| Reply::ok("primary"));
    let shadow = ScriptedBackend::start(|_| Reply::ok("shadow"));
    let (p, sh) = (primary.addr, shadow.addr);
    let r = Router::start(&format!(
        "[partitions.z]\nservers = [\"{p}\"]\nmirror = \"z_shadow\"\n[partitions.z_shadow]\nservers = [\"{sh}\"]\n[users]\nalice = \"z\"\ncarol = \"z\"\n[health]\nenabled = false\n[rate_limit]\nper_user_queries = 1\nburst = 0\n"
    ));
    let mut c = Client::connect(r.addr);
    let query = |user: &str| {
        format!("GET /api/spot/user/positions HTTP/1.1\r\nHost: t\r\nX-User-Id: {user}\r\n\r\n")
            .into_bytes()
    };
    assert_eq!(c.roundtrip(&query("alice")).status, 200);
    wait_until("the first mirror counted", Duration::from_secs(5), || {
        r.metrics().users.mirror_status[1] == 1
    });
    assert_eq!(c.roundtrip(&query("alice")).status, 429);
    assert_eq!(c.roundtrip(&query("carol")).status, 200);
    wait_until("carol's mirror counted", Duration::from_secs(5), || {
        r.metrics().users.mirror_status[1] == 2
    });
    let users: Vec<_> = shadow
        .requests()
        .iter()
        .map(|q| q.header("x-user-id"))
        .collect();
    assert_eq!(users, [Some("alice".into()), Some("carol".into())]);
    assert_eq!(primary.request_count(), 2);
}

#[test]
fn a_mirrors_5xx_counts_against_the_breaker_only_as_the_primarys_would() {
    // The shadow's server also serves partition `other`, so the two share its breaker.
    // With `count_5xx = false` its 500s to mirrors are answers, not failures: the
    // breaker stays closed for `other`, and every mirror is sent.
    let primary = ScriptedBackend::start(|_| Reply::ok("primary"));
    let shared = ScriptedBackend::start(|req| {
        if req.header("x-user-id").as_deref() == Some("bob") {
            Reply::ok("other")
        } else {
            Reply::status("500 Internal Server Error", "shadow down")
        }
    });
    let (p, sh) = (primary.addr, shared.addr);
    let r = Router::start(&format!(
        "[partitions.z]\nservers = [\"{p}\"]\nmirror = \"z_shadow\"\n[partitions.z_shadow]\nservers = [\"{sh}\"]\n[partitions.other]\nservers = [\"{sh}\"]\n[users]\nalice = \"z\"\nbob = \"other\"\n[health]\nenabled = false\n[circuit]\nconsecutive_failures = 3\ncount_5xx = false\n"
    ));
    let mut c = Client::connect(r.addr);
    for n in 1..=5 {
        assert_eq!(c.roundtrip(QUERY_GET).text(), "primary");
        // One at a time: each mirror answered before the next is sent.
        wait_until("the mirror counted as 5xx", Duration::from_secs(5), || {
            r.metrics().users.mirror_status[4] == n
        });
    }
    let resp =
        c.roundtrip(b"GET /api/spot/user/positions HTTP/1.1\r\nHost: t\r\nX-User-Id: bob\r\n\r\n");
    assert_eq!((resp.status, resp.text().as_str()), (200, "other"));
}

/// A shadow server that also serves a partition shares its breaker, half-open probe
/// included: a mirror that takes the probe reports how it went, as a request would. A
/// probe never reported kept the server half-open, every request of its own partition
/// refused (503), until the probe expired a whole cool-down later.
#[test]
fn a_mirror_that_takes_a_shared_servers_half_open_probe_reports_it() {
    // 0: every request fails (500). Then bob (partition `other`) is served, and the
    // mirrors of alice's Queries get 1: a close before any answer, 2: a 200 whose body
    // is cut short (a failure, as for a request), 3: a whole 200.
    let mode = Arc::new(AtomicU8::new(0));
    let m = mode.clone();
    let primary = ScriptedBackend::start(|_| Reply::ok("primary"));
    let shared = ScriptedBackend::start(move |req| match m.load(Ordering::SeqCst) {
        0 => Reply::status("500 Internal Server Error", "fail"),
        _ if req.header("x-user-id").as_deref() == Some("bob") => Reply::ok("other"),
        1 => Reply::close(),
        2 => Reply::bytes("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").then(Ending::Close),
        _ => Reply::ok("shadow"),
    });
    let (p, sh) = (primary.addr, shared.addr);
    let r = Router::start(&format!(
        "[partitions.z]\nservers = [\"{p}\"]\nmirror = \"z_shadow\"\n[partitions.z_shadow]\nservers = [\"{sh}\"]\n[partitions.other]\nservers = [\"{sh}\"]\n[users]\nalice = \"z\"\nbob = \"other\"\n[health]\nenabled = false\n[circuit]\nconsecutive_failures = 2\ncooldown_ms = 1000\n"
    ));
    let mut c = Client::connect(r.addr);
    let bob = b"GET /api/spot/user/positions HTTP/1.1\r\nHost: t\r\nX-User-Id: bob\r\n\r\n";
    for _ in 0..2 {
        assert_eq!(c.roundtrip(bob).status, 500);
    }
    assert_eq!(r.circuit_transitions(sh), (0, 1, 0), "opened");
    let mirror_probe = |mode_now: u8, mirrors: u64| {
        mode.store(mode_now, Ordering::SeqCst);
        wait_until("the cool-down over", Duration::from_secs(5), || {
            r.backend_available(sh)
        });
        // The next request to the shared server is alice's mirror: it takes the probe.
        assert_eq!(
            Client::connect(r.addr).roundtrip(QUERY_GET).text(),
            "primary"
        );
        wait_until("the mirror counted", Duration::from_secs(5), || {
            r.metrics().users.mirror_status.iter().sum::<u64>() == mirrors
        });
    };
    // Its failure re-opens the circuit, as a failed probe request's does.
    mirror_probe(1, 1);
    assert_eq!(
        r.circuit_transitions(sh),
        (0, 2, 1),
        "the mirror's failed probe re-opened the circuit"
    );
    // So does an answer whose body breaks off.
    mirror_probe(2, 2);
    assert_eq!(
        r.circuit_transitions(sh),
        (0, 3, 2),
        "the mirror's probe whose body broke off re-opened the circuit"
    );
    // A whole answer closes it, and bob is served at once.
    mirror_probe(3, 3);
    assert_eq!(
        r.circuit_transitions(sh),
        (1, 3, 3),
        "the mirror's answered probe closed the circuit"
    );
    let resp = c.roundtrip(bob);
    assert_eq!((resp.status, resp.text().as_str()), (200, "other"));
}

/// README: "Commands are never mirrored, nor a Query ringgate refuses (429, 503)".
#[test]
fn a_query_refused_with_503_for_no_available_server_is_not_mirrored() {
    let primary = ScriptedBackend::start(|_| Reply::ok("primary"));
    let shadow = ScriptedBackend::start(|_| Reply::ok("shadow"));
    let (p, sh) = (primary.addr, shadow.addr);
    let r = Router::start(&format!(
        "[partitions.z]\nservers = [\"{p}\"]\nmirror = \"z_shadow\"\n[partitions.z_shadow]\nservers = [\"{sh}\"]\n[users]\nalice = \"z\"\n[health]\nenabled = false\n"
    ));
    r.set_drained(p, true);
    let mut c = Client::connect(r.addr);
    let q = b"GET /api/spot/user/positions HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n";
    assert_eq!(c.roundtrip(q).status, 503);
    common::assert_holds_for(
        "the refused Query is not mirrored",
        Duration::from_millis(300),
        || shadow.request_count() == 0,
    );
    // The same Query, served, is.
    r.set_drained(p, false);
    assert_eq!(c.roundtrip(q).status, 200);
    wait_until("the served Query mirrored", Duration::from_secs(5), || {
        shadow.request_count() == 1
    });
}

/// A server that reads a request, then sends `head` (at once with `head_at_once`, else
/// byte by byte) and then `unit` over and over, one byte every 50 ms, until `stop`.
fn trickling_server(
    stop: Arc<AtomicBool>,
    head: &'static [u8],
    unit: &'static [u8],
    head_at_once: bool,
) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let mut i = 0usize;
                if head_at_once {
                    let _ = s.write_all(head);
                    i = head.len();
                }
                while !stop.load(Ordering::Relaxed) {
                    let b = if i < head.len() {
                        head[i]
                    } else {
                        unit[(i - head.len()) % unit.len()]
                    };
                    if s.write_all(&[b]).is_err() {
                        return;
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
    });
    addr
}

/// One Query mirrored to a shadow that trickles `head` then `unit` for ever (see
/// [`trickling_server`]): its mirror must end — counted under some status — within
/// 3 s, its response timeout being 300 ms and the bound one mirror in flight.
fn mirror_slot_is_freed(head: &'static [u8], unit: &'static [u8], head_at_once: bool) {
    let stop = Arc::new(AtomicBool::new(false));
    let shadow = trickling_server(stop.clone(), head, unit, head_at_once);
    let primary = ScriptedBackend::start(|_| Reply::ok("primary"));
    let extra = "[timeouts]\nupstream_response_ms = 300\n[mirror]\nmax_in_flight_per_worker = 1\n";
    let r = Router::start(&config(primary.addr, shadow, extra));
    let mut c = Client::connect(r.addr);
    assert_eq!(c.roundtrip(QUERY_GET).text(), "primary");
    let held = common::holds_for(Duration::from_secs(3), || {
        r.metrics().users.mirror_status.iter().sum::<u64>() == 0
    });
    stop.store(true, Ordering::Relaxed);
    assert!(
        !held,
        "the mirror slot was still held after 3 s (response timeout 300 ms)"
    );
}

/// `upstream_response_ms` is "request sent → response head": a shadow server that
/// trickles its response head must not hold a mirror slot past it.
#[test]
fn a_mirror_to_a_trickling_shadow_ends_at_the_response_timeout() {
    mirror_slot_is_freed(b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n", false);
}

/// A shadow that answers at once and then trickles an endless chunked body held its
/// mirror slot for ever: with the bound reached, every later mirror was dropped.
#[test]
fn a_mirror_to_a_shadow_with_an_endless_body_frees_its_slot() {
    mirror_slot_is_freed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"1\r\na\r\n",
        true,
    );
}

/// Mirrors open their connections under the shadow's `pool.max_connections_per_backend`
/// like requests: at the bound, a mirror is not sent (the client sees nothing of it), and
/// its connection counts until it closes.
#[test]
fn mirrors_stop_at_the_shadows_connection_bound() {
    let release = Arc::new(AtomicBool::new(false));
    let open = release.clone();
    let primary = ScriptedBackend::start(|_| Reply::ok("primary"));
    let shadow = ScriptedBackend::start(move |_| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !open.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Reply::ok("shadow")
    });
    let r = Router::start(&config(
        primary.addr,
        shadow.addr,
        "[pool]\nmax_connections_per_backend = 1\nidle_timeout_ms = 300\n",
    ));
    let mut c = Client::connect(r.addr);
    assert_eq!(c.roundtrip(QUERY_GET).text(), "primary");
    wait_until("the first mirror is held", Duration::from_secs(5), || {
        shadow.request_count() == 1
    });
    for _ in 0..2 {
        assert_eq!(c.roundtrip(QUERY_GET).text(), "primary");
    }
    wait_until("two mirrors at the bound", Duration::from_secs(5), || {
        r.metrics().connection_limited == 2
    });
    release.store(true, Ordering::SeqCst);
    wait_until("the held one answered", Duration::from_secs(5), || {
        r.metrics().users.mirror_status[1] == 1
    });
    assert_eq!(shadow.request_count(), 1);
    wait_until(
        "every connection closed at the idle timeout",
        Duration::from_secs(5),
        || r.metrics().pool_open == 0,
    );
}
