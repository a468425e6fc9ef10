//! Per-user rate limits and ordered user migration over real sockets, across connections
//! and workers.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::backend::{Reply, ScriptedBackend};
use common::client::Client;
use common::router::Router;
use common::wait_until;

fn command_for(user: &str) -> Vec<u8> {
    format!("POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nX-User-Id: {user}\r\nContent-Length: 2\r\n\r\n{{}}")
        .into_bytes()
}

/// A Command for `user` on a connection of its own, answered in the background: the
/// answer's body.
fn command_in_background(addr: SocketAddr, user: &str) -> std::thread::JoinHandle<String> {
    let raw = command_for(user);
    std::thread::spawn(move || Client::connect(addr).roundtrip(&raw).text())
}

fn query_for(user: &str) -> Vec<u8> {
    format!("GET /api/spot/user/positions HTTP/1.1\r\nHost: t\r\nX-User-Id: {user}\r\n\r\n")
        .into_bytes()
}

/// Send `count` requests from `conns` connections in parallel, paced so that together they
/// send `rate` per second; the statuses.
fn paced(addr: SocketAddr, raw: Vec<u8>, conns: usize, count: usize, rate: f64) -> Vec<u16> {
    let raw = Arc::new(raw);
    let started = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            let raw = raw.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut out = Vec::new();
                for k in (i..count).step_by(conns) {
                    let due = started + Duration::from_secs_f64(k as f64 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let r = c.roundtrip(&raw);
                    if r.status == 429 {
                        let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
                        assert!(secs >= 1, "Retry-After is whole seconds, at least 1");
                    }
                    out.push(r.status);
                }
                out
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

#[test]
fn a_user_at_twice_its_limit_gets_its_limit_across_connections_and_workers() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = Router::start_with(
        &format!(
            "default_backend = \"{}\"\n[health]\nenabled = false\n[rate_limit]\nper_user_commands = 50\nburst = 1.0\n",
            b.addr
        ),
        2,
    );
    // alice: 100/s (twice her limit) for 2 s over 4 connections; bob at his limit meanwhile.
    let bob = {
        let addr = r.addr;
        std::thread::spawn(move || paced(addr, command_for("bob"), 1, 60, 30.0))
    };
    let alice = paced(r.addr, command_for("alice"), 4, 200, 100.0);
    let admitted = alice.iter().filter(|&&s| s == 200).count() as f64;
    let refused = alice.iter().filter(|&&s| s == 429).count();
    // limit × 2 s + burst (50 × 1 s), within 10 %.
    let expected = 50.0 * 2.0 + 50.0;
    assert!(
        (0.9 * expected..=1.1 * expected).contains(&admitted),
        "admitted {admitted} of 200, expected {expected} ± 10 %"
    );
    assert_eq!(admitted as usize + refused, 200, "only 200 and 429");
    assert!(
        bob.join().unwrap().iter().all(|&s| s == 200),
        "bob is untouched"
    );
    assert_eq!(r.metrics().users.rate_limited, [refused as u64, 0]);
}

#[test]
fn a_429_keeps_the_connection_and_requests_without_a_user_are_not_limited() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = Router::start(&format!(
        "default_backend = \"{}\"\n[health]\nenabled = false\n[rate_limit]\nper_user_queries = 1\nburst = 0\n[rate_limit.users]\nvip = {{ queries = 1000000 }}\n",
        b.addr
    ));
    let mut c = Client::connect(r.addr);
    assert_eq!(c.roundtrip(&query_for("alice")).status, 200);
    let refused = c.roundtrip(&query_for("alice"));
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        refused.header("connection"),
        None,
        "the connection stays open"
    );
    // The same connection goes on: another user, a user with her own limit, no user.
    assert_eq!(c.roundtrip(&query_for("carol")).status, 200);
    for _ in 0..20 {
        assert_eq!(c.roundtrip(&query_for("vip")).status, 200);
        assert_eq!(
            c.roundtrip(b"GET /anon HTTP/1.1\r\nHost: t\r\n\r\n").status,
            200
        );
    }
    // A refused Command with a streamed body: the body is read and dropped, the
    // connection kept.
    let body = vec![b'x'; 100_000];
    let mut head = format!("POST /api/spot/user/upload HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    head.extend_from_slice(&body);
    assert_eq!(c.roundtrip(&head).status, 429);
    assert_eq!(c.roundtrip(&query_for("dave")).status, 200);
}

#[test]
fn a_429_to_an_http10_keep_alive_client_says_keep_alive() {
    // Without `Connection: keep-alive` an HTTP/1.0 client reads the answer as the
    // connection's last, while ringgate keeps it open for the next request.
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = Router::start(&format!(
        "default_backend = \"{}\"\n[health]\nenabled = false\n[rate_limit]\nper_user_queries = 1\nburst = 0\n",
        b.addr
    ));
    let mut c = Client::connect(r.addr);
    let query = b"GET /api/spot/user/positions HTTP/1.0\r\nConnection: keep-alive\r\nX-User-Id: alice\r\n\r\n";
    let ok = c.roundtrip(query);
    assert_eq!(
        (ok.status, ok.header("connection")),
        (200, Some("keep-alive"))
    );
    let refused = c.roundtrip(query);
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("connection"), Some("keep-alive"));
    let next = c.roundtrip(b"GET /anon HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!((next.status, next.text()), (200, "ok".to_string()));
}

#[test]
fn an_error_answer_to_head_has_no_body_and_the_connection_stays_in_step() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = Router::start(&format!(
        "default_backend = \"{}\"\n[health]\nenabled = false\n[rate_limit]\nper_user_queries = 1\nburst = 0\n",
        b.addr
    ));
    let mut c = Client::connect(r.addr);
    let head = b"HEAD /x HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n";
    c.send(head);
    assert_eq!(c.read_head_response().status, 200);
    // Refused, keep-alive: the head of a 429 and nothing after it (its Content-Length
    // is the body a GET would have had).
    c.send(head);
    let refused = c.read_head_response();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("connection"), None);
    assert!(refused.header("content-length").is_some());
    // The next response on the connection is the next request's, read from its first
    // byte.
    let next = c.roundtrip(b"GET /anon HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((next.status, next.text()), (200, "ok".to_string()));
}

/// A Query shed for overload (503) spends none of its user's rate limit: once the
/// overload is gone she still has her whole burst. (Limited before shedding, every shed
/// Query spent a token, and a user retrying through an overload got 429s for requests
/// that were never served.)
#[test]
fn a_shed_request_spends_none_of_its_users_rate_limit() {
    let released = Arc::new(AtomicBool::new(false));
    let gate = released.clone();
    let b = ScriptedBackend::start(move |req| {
        if req.path() == "/api/spot/v2/slow" {
            wait_until(
                "the slow Command is released",
                Duration::from_secs(10),
                || gate.load(Ordering::SeqCst),
            );
        }
        Reply::ok("ok")
    });
    // 3 Queries a second, bursts of 1 s: 4 at once. One request in flight sheds Queries.
    let r = Router::start(&format!(
        "default_backend = \"{}\"\n[health]\nenabled = false\n[rate_limit]\nper_user_queries = 3\nburst = 1.0\n[overload]\nmax_in_flight_per_worker = 2\nquery_shed_ratio = 0.5\n",
        b.addr
    ));
    let addr = r.addr;
    let slow = std::thread::spawn(move || {
        let raw = b"POST /api/spot/v2/slow HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n";
        Client::connect(addr).roundtrip(raw).status
    });
    b.wait_for_requests(1);
    let mut c = Client::connect(addr);
    let shed: Vec<u16> = (0..8)
        .map(|_| c.roundtrip(&query_for("alice")).status)
        .collect();
    assert_eq!(
        shed, [503; 8],
        "every Query shed while the Command is in flight"
    );
    released.store(true, Ordering::SeqCst);
    assert_eq!(slow.join().unwrap(), 200);
    let anon = b"GET /anon HTTP/1.1\r\nHost: t\r\n\r\n";
    wait_until("Queries are admitted again", Duration::from_secs(5), || {
        c.roundtrip(anon).status == 200
    });
    let after: Vec<u16> = (0..4)
        .map(|_| c.roundtrip(&query_for("alice")).status)
        .collect();
    assert_eq!(after, [200; 4], "her whole burst, within the same second");
    assert_eq!(r.metrics().users.rate_limited, [0, 0]);
}

/// Partitions a and b; alice in `alice_in`, bob in b.
fn zones(a: SocketAddr, b: SocketAddr, alice_in: &str, extra: &str) -> String {
    format!(
        "[partitions.a]\nservers = [\"{a}\"]\n[partitions.b]\nservers = [\"{b}\"]\n[users]\nalice = \"{alice_in}\"\nbob = \"b\"\n[health]\nenabled = false\n{extra}"
    )
}

#[test]
fn a_moved_users_commands_wait_for_those_in_flight_to_the_old_partition() {
    // The old partition is slow to answer alice's first Command: 600 ms after it arrives.
    const SLOW: Duration = Duration::from_millis(600);
    let a_got = Arc::new(Mutex::new(None::<Instant>));
    let a_seen = a_got.clone();
    let a = ScriptedBackend::start(move |_| {
        a_seen.lock().unwrap().get_or_insert_with(Instant::now);
        Reply::ok("a").delayed(SLOW)
    });
    // When b receives Commands (the backends' clocks, not the clients': a client thread
    // woken late would say nothing of the order the router kept).
    let b_commands = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let b_seen = b_commands.clone();
    let b = ScriptedBackend::start(move |req| {
        if req.head.starts_with(b"POST") {
            b_seen.lock().unwrap().push(Instant::now());
        }
        Reply::ok("b")
    });
    let mut r = Router::start_with(&zones(a.addr, b.addr, "a", ""), 2);
    let addr = r.addr;
    let slow = std::thread::spawn(move || {
        let resp = Client::connect(addr).roundtrip(&command_for("alice"));
        (resp.text(), Instant::now())
    });
    a.wait_for_requests(1);
    r.reload(&zones(a.addr, b.addr, "b", ""));
    // A Query is not held: it goes to b at once.
    let q = Client::connect(addr).roundtrip(&query_for("alice"));
    let query_done = Instant::now();
    assert_eq!(q.text(), "b");
    // A Command is held until the one in flight to a has completed, then goes to b.
    let held = Client::connect(addr).roundtrip(&command_for("alice"));
    let (first, first_done) = slow.join().unwrap();
    assert_eq!((first.as_str(), held.text().as_str()), ("a", "b"));
    assert!(query_done < first_done, "the Query did not wait");
    let a_at = a_got.lock().unwrap().expect("a got alice's first Command");
    let b_at = b_commands.lock().unwrap()[0];
    assert!(
        b_at >= a_at + SLOW,
        "the Command reached b only after a answered: {:?} after a got the first",
        b_at - a_at
    );
    let m = r.metrics().users;
    assert_eq!((m.migration_held, m.migration_refused), (1, 0));
    // Another user's Commands never wait.
    assert_eq!(
        Client::connect(addr).roundtrip(&command_for("bob")).status,
        200
    );
}

#[test]
fn a_held_command_gets_503_at_the_bound() {
    let a = ScriptedBackend::start(|_| Reply::ok("a").delayed(Duration::from_secs(1)));
    let b = ScriptedBackend::start(|_| Reply::ok("b"));
    let extra = "[migration]\nmax_wait_ms = 200\n";
    let mut r = Router::start(&zones(a.addr, b.addr, "a", extra));
    let addr = r.addr;
    let slow = command_in_background(addr, "alice");
    a.wait_for_requests(1);
    r.reload(&zones(a.addr, b.addr, "b", extra));
    let mut c = Client::connect(addr);
    let refused = c.roundtrip(&command_for("alice"));
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        b.request_count(),
        0,
        "nothing reached the new partition early"
    );
    assert_eq!(slow.join().unwrap(), "a");
    // Once the old Command completed, the next one goes to b.
    assert_eq!(c.roundtrip(&command_for("alice")).text(), "b");
    assert_eq!(r.metrics().users.migration_refused, 1);
}

/// A Command held for a moving user and then refused (503 at `migration.max_wait_ms`) was
/// never sent, and spends none of its user's rate limit. (Limited before the wait, it
/// spent a token: the user's next Command got a 429 for a refusal it already had.)
#[test]
fn a_held_command_refused_spends_none_of_its_users_rate_limit() {
    let released = Arc::new(AtomicBool::new(false));
    let gate = released.clone();
    let a = ScriptedBackend::start(move |_| {
        wait_until(
            "the first Command is released",
            Duration::from_secs(10),
            || gate.load(Ordering::SeqCst),
        );
        Reply::ok("a")
    });
    let b = ScriptedBackend::start(|_| Reply::ok("b"));
    // One Command every 10 s, bursts of 10 s: two at once, a third only 10 s later.
    let extra =
        "[migration]\nmax_wait_ms = 200\n[rate_limit]\nper_user_commands = 0.1\nburst = 10\n";
    let mut r = Router::start(&zones(a.addr, b.addr, "a", extra));
    let addr = r.addr;
    let slow = command_in_background(addr, "alice");
    a.wait_for_requests(1);
    r.reload(&zones(a.addr, b.addr, "b", extra));
    let mut c = Client::connect(addr);
    assert_eq!(
        c.roundtrip(&command_for("alice")).status,
        503,
        "held, then refused"
    );
    released.store(true, Ordering::SeqCst);
    assert_eq!(slow.join().unwrap(), "a");
    let next = c.roundtrip(&command_for("alice"));
    assert_eq!(
        (next.status, next.text()),
        (200, "b".to_string()),
        "her second Command of the burst (Retry-After: {:?})",
        next.header("retry-after")
    );
    let m = r.metrics().users;
    assert_eq!((m.migration_refused, m.rate_limited), (1, [0, 0]));
}

/// Commands held for a moving user are requests in flight: they count against
/// `overload.max_in_flight_per_worker` while they wait. (Counted only once released, every
/// held Command passed the bound's check while the count was low, and all of them went to
/// the new partition at once, beyond the bound.)
#[test]
fn held_commands_count_against_the_in_flight_bound() {
    const B_DELAY: Duration = Duration::from_millis(1000);
    let a = ScriptedBackend::start(|_| Reply::ok("a").delayed(Duration::from_millis(2000)));
    let b_arrivals = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let b_seen = b_arrivals.clone();
    let b = ScriptedBackend::start(move |_| {
        b_seen.lock().unwrap().push(Instant::now());
        Reply::ok("b").delayed(B_DELAY)
    });
    let extra = "[migration]\nmax_wait_ms = 5000\n[overload]\nmax_in_flight_per_worker = 2\nquery_shed_ratio = 1.0\n";
    let mut r = Router::start(&zones(a.addr, b.addr, "a", extra));
    let addr = r.addr;
    let slow = std::thread::spawn(move || {
        let text = Client::connect(addr)
            .roundtrip(&command_for("alice"))
            .text();
        (text, Instant::now())
    });
    a.wait_for_requests(1);
    r.reload(&zones(a.addr, b.addr, "b", extra));
    // Three more of alice's Commands, each on its own connection, while the first is in
    // flight to a: (when sent, status, Retry-After).
    let held: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.send(&command_for("alice"));
                let sent = Instant::now();
                let resp = c.read_response();
                let retry_after = resp.header("retry-after").map(str::to_string);
                (sent, resp.status, retry_after)
            })
        })
        .collect();
    let held: Vec<_> = held.into_iter().map(|t| t.join().unwrap()).collect();
    let (first, first_done) = slow.join().unwrap();
    assert_eq!(first, "a");
    assert!(
        held.iter().all(|(sent, ..)| *sent < first_done),
        "scenario: the three were sent while the first was in flight to a"
    );
    // At most two in flight: the first Command, and one held; the others are shed.
    let statuses: Vec<_> = held.iter().map(|(_, s, r)| (*s, r.clone())).collect();
    let arrivals = b_arrivals.lock().unwrap().clone();
    let at_once = arrivals
        .iter()
        .map(|t| {
            arrivals
                .iter()
                .filter(|u| **u >= *t && **u - *t < B_DELAY)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        at_once <= 1,
        "{at_once} held Commands reached b at once, beyond the bound of 2 in flight: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == (200, None)).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == (503, Some("1".to_string())))
            .count(),
        2,
        "{statuses:?}"
    );
}

/// A Command whose head arrived before a reload (routed on the old table, its user in the
/// JSON body) finds the user's Commands in flight to the new partition: it waits for them,
/// then must not go to the old partition after the new one already got the user's
/// Commands.
#[test]
fn a_command_routed_on_the_old_table_does_not_reach_the_old_partition_after_the_move() {
    let a = ScriptedBackend::start(|_| Reply::ok("a"));
    let b = ScriptedBackend::start(|_| Reply::ok("b").delayed(Duration::from_millis(500)));
    let mut r = Router::start(&zones(a.addr, b.addr, "a", ""));
    let body = r#"{"user_id":"alice"}"#;
    // X1: head only; the 100 Continue says the router is reading its body (old table).
    let mut c1 = command_head_awaiting_its_body(r.addr, body);
    // Move alice to b; X2 goes to b and is in flight there.
    r.reload(&zones(a.addr, b.addr, "b", ""));
    let addr = r.addr;
    let x2 = command_in_background(addr, "alice");
    b.wait_for_requests(1);
    // Now X1's body: it waits for X2, then goes...
    c1.send(body.as_bytes());
    let x1 = c1.read_response();
    assert_eq!(x2.join().unwrap(), "b");
    assert!(
        x1.status == 503 || x1.text() == "b",
        "x1: {} {:?}",
        x1.status,
        x1.text()
    );
    assert_eq!(
        a.request_count(),
        0,
        "alice's Command reached the old partition a after the new partition b got hers (x1 answered {:?})",
        x1.text()
    );
}

/// The same Command when the user's Commands to the new partition have already completed
/// by the time its body is in: nothing is in flight, so it is not held, but sent on it
/// would still reach the old partition after the new one got (and executed) the user's
/// Commands.
#[test]
fn a_command_routed_on_the_old_table_is_not_sent_to_the_old_partition_once_the_new_one_served_the_user(
) {
    let a = ScriptedBackend::start(|_| Reply::ok("a"));
    let b = ScriptedBackend::start(|_| Reply::ok("b"));
    let mut r = Router::start(&zones(a.addr, b.addr, "a", ""));
    let body = r#"{"user_id":"alice"}"#;
    // X1: head only; the 100 Continue says the router is reading its body (old table).
    let mut c1 = command_head_awaiting_its_body(r.addr, body);
    // Move alice to b; X2 goes to b and is answered.
    r.reload(&zones(a.addr, b.addr, "b", ""));
    assert_eq!(
        Client::connect(r.addr)
            .roundtrip(&command_for("alice"))
            .text(),
        "b"
    );
    c1.send(body.as_bytes());
    let x1 = c1.read_response();
    assert_eq!(
        a.request_count(),
        0,
        "alice's Command reached the old partition a after the new partition b served her (x1: {} {:?})",
        x1.status,
        x1.text()
    );
    assert_eq!(x1.status, 503);
    assert_eq!(x1.header("retry-after"), Some("1"));
    assert_eq!(r.metrics().users.migration_refused, 1);
    // Her retry is routed on the new table.
    assert_eq!(c1.roundtrip(&command_for("alice")).text(), "b");
}

/// A Command held for a migration must not be sent once its request deadline has passed:
/// the client would get a 504 for an order the backend executes.
#[test]
fn a_held_command_is_not_sent_after_its_deadline() {
    // a relays alice's response head at once and its last body byte 1 s later: her
    // Command counts as in flight for that second, without reaching the deadline itself.
    let a = ScriptedBackend::start(|_| {
        Reply::bytes("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\na")
            .late(Duration::from_millis(1000), "a")
    });
    let b = ScriptedBackend::start(|_| Reply::ok("b"));
    let extra = "[timeouts]\nrequest_deadline_ms = 300\n";
    let mut r = Router::start(&zones(a.addr, b.addr, "a", extra));
    let addr = r.addr;
    // A pooled connection to b on the (single) worker.
    assert_eq!(
        Client::connect(addr).roundtrip(&command_for("bob")).text(),
        "b"
    );
    let slow = command_in_background(addr, "alice");
    a.wait_for_requests(1);
    r.reload(&zones(a.addr, b.addr, "b", extra));
    let resp = Client::connect(addr).roundtrip(&command_for("alice"));
    assert_eq!(slow.join().unwrap(), "aa");
    assert_eq!(
        b.request_count(),
        1,
        "the held Command was sent to b after its deadline (client got {})",
        resp.status
    );
}

/// Raising a user's limit by a reload takes effect at once: the state the old, tighter
/// limit left (its TAT far ahead) must not keep refusing a user the new limit admits.
#[test]
fn a_raised_limit_applies_at_once_after_a_reload() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let conf = |rate: &str, burst: &str| {
        format!(
            "default_backend = \"{}\"\n[health]\nenabled = false\n[rate_limit]\nper_user_queries = {rate}\nburst = {burst}\n",
            b.addr
        )
    };
    // 1 Query a second, bursts of 20 s: alice spends her burst.
    let mut r = Router::start(&conf("1", "20"));
    let q = b"GET /api/spot/user/positions HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n";
    let mut c = Client::connect(r.addr);
    for _ in 0..21 {
        assert_eq!(c.roundtrip(q).status, 200);
    }
    assert_eq!(c.roundtrip(q).status, 429);
    // Now 1000 a second, bursts of 1 s: 1001 at once for a fresh user.
    r.reload(&conf("1000", "1"));
    let resp = c.roundtrip(q);
    assert_eq!(
        resp.status,
        200,
        "alice, far below her new limit, is still refused (Retry-After: {:?})",
        resp.header("retry-after")
    );
}

/// A client that goes away (FIN or RST) while its Command is held for a migration: the
/// Command must not be sent afterwards, executed with nobody to hear the answer.
fn held_then_gone(reset: bool) {
    let a = ScriptedBackend::start(|_| Reply::ok("a").delayed(Duration::from_millis(600)));
    let b = ScriptedBackend::start(|_| Reply::ok("b"));
    let mut r = Router::start(&zones(a.addr, b.addr, "a", ""));
    let addr = r.addr;
    let slow = command_in_background(addr, "alice");
    a.wait_for_requests(1);
    r.reload(&zones(a.addr, b.addr, "b", ""));
    // A Query (not held, answered by b) with the Command pipelined behind it: once the
    // Query's answer is back, the router has read the Command, which is now held. Then
    // its client gives up.
    let mut c = Client::connect(addr);
    let mut raw =
        b"GET /api/spot/user/positions HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n".to_vec();
    raw.extend_from_slice(&command_for("alice"));
    c.send(&raw);
    assert_eq!(c.read_response().text(), "b");
    if reset {
        c.reset();
    } else {
        c.finish_sending();
        drop(c);
    }
    assert_eq!(slow.join().unwrap(), "a");
    // A later Command of alice's goes to b: the held one, if sent, went before it.
    let next = Client::connect(addr).roundtrip(&command_for("alice"));
    assert_eq!(next.text(), "b");
    let commands = b.requests().iter().filter(|r| r.method() == "POST").count();
    assert_eq!(
        commands, 1,
        "the held Command of a client that went away was sent to b"
    );
}

#[test]
fn a_held_command_is_not_sent_after_its_client_closed() {
    held_then_gone(false);
}

#[test]
fn a_held_command_is_not_sent_after_its_client_reset() {
    held_then_gone(true);
}

/// The same over TLS, where a client ends its connection with a `close_notify` alert
/// before its FIN: the alert's bytes sit unread on the socket, and the client is gone all
/// the same.
#[test]
fn a_held_command_is_not_sent_after_its_tls_client_closed() {
    use common::tls::{TestCert, TlsClient};
    use std::io::Write;
    let cert = TestCert::new("localhost");
    let listener = format!(
        "[listener.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.cert.display(),
        cert.key.display()
    );
    let a = ScriptedBackend::start(|_| Reply::ok("a").delayed(Duration::from_millis(600)));
    let b = ScriptedBackend::start(|_| Reply::ok("b"));
    let mut r = Router::start_with_listener(&zones(a.addr, b.addr, "a", ""), &listener);
    let addr = r.addr;
    let config = cert.client_config(&[&rustls::version::TLS13]);
    let slow = {
        let config = config.clone();
        std::thread::spawn(move || {
            TlsClient::connect(addr, config)
                .roundtrip(&command_for("alice"))
                .text()
        })
    };
    a.wait_for_requests(1);
    r.reload(&zones(a.addr, b.addr, "b", ""));
    // As in `held_then_gone`: once the Query's answer is back, the Command is held.
    let mut c = TlsClient::connect(addr, config.clone());
    let mut raw =
        b"GET /api/spot/user/positions HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n".to_vec();
    raw.extend_from_slice(&command_for("alice"));
    c.send(&raw);
    assert_eq!(c.read_response().text(), "b");
    c.stream.conn.send_close_notify();
    c.stream.flush().unwrap();
    c.stream.sock.shutdown(std::net::Shutdown::Both).unwrap();
    drop(c);
    assert_eq!(slow.join().unwrap(), "a");
    let next = TlsClient::connect(addr, config).roundtrip(&command_for("alice"));
    assert_eq!(next.text(), "b");
    let commands = b.requests().iter().filter(|r| r.method() == "POST").count();
    assert_eq!(
        commands, 1,
        "the held Command of a TLS client that closed was sent to b"
    );
}

/// A Command's head with `Expect: 100-continue`, once the router has answered the 100:
/// it is reading the body (`body`, not sent yet) on the table in force now.
fn command_head_awaiting_its_body(addr: std::net::SocketAddr, body: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send(
        format!(
            "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let cont = c.read_raw(b"HTTP/1.1 100 Continue\r\n\r\n".len());
    assert!(cont.starts_with(b"HTTP/1.1 100"));
    c
}
