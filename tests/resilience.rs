//! Resilience over real sockets: a backend killed under load, backends that never
//! answer or reset mid-response, recovery after `rise` probes, half-open probing, shedding
//! order, bounded retries, and a graceful drain of the real binary on SIGTERM.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::backend::{blackhole, Ending, Reply, Request, ScriptedBackend};
use common::client::{get, post_json, request, Client, Failure};
use common::router::{demo_backend, exchange_large_bodies, Router, RouterProcess};
use common::wait_until;

/// What the backends of the kill test answer: their name as a zone, after 1 ms of work
/// (so requests are in flight when the backend dies).
fn named(name: &'static str) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    move |_| Reply::ok(format!("{{\"zone\":\"{name}\"}}")).delayed(Duration::from_millis(1))
}

/// The `"id"` of each Command a backend received, with how often it arrived.
fn command_ids(backends: &[&ScriptedBackend], ids: &mut HashMap<String, usize>) {
    for b in backends {
        for r in b.requests() {
            let text = r.text();
            if let Some(i) = text.find("\"id\":\"") {
                let rest = &text[i + 6..];
                let id = rest[..rest.find('"').unwrap()].to_string();
                *ids.entry(id).or_insert(0) += 1;
            }
        }
    }
}

fn partition_of(servers: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [{}]\n{extra}",
        list.join(", ")
    )
}

#[test]
fn killing_a_backend_under_load_loses_no_query_and_duplicates_no_command() {
    let a = ScriptedBackend::start(named("a"));
    let b = ScriptedBackend::start(named("b"));
    let r = Router::start(&partition_of(
        &[a.addr, b.addr],
        "[health]\ninterval_ms = 100\ntimeout_ms = 100\nfall = 2\n",
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<(bool, String, u16)>>> = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (stop, results, addr) = (stop.clone(), results.clone(), r.addr);
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let id = format!("t{t}-{n}");
                    let is_command = n % 2 == 0;
                    let raw = if is_command {
                        let body = format!(r#"{{"user_id":"u{t}","id":"{id}"}}"#);
                        format!("POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                    } else {
                        format!("GET /api/spot/user/data?user_id=u{t}&q={id} HTTP/1.1\r\nHost: t\r\n\r\n")
                    };
                    let status = match c.try_send(raw.as_bytes()) {
                        Ok(()) => c.try_read_response().map_or(0, |resp| resp.status),
                        Err(_) => 0,
                    };
                    if status != 200 {
                        c = Client::connect(addr);
                    }
                    results.lock().unwrap().push((is_command, id, status));
                }
            })
        })
        .collect();
    let count = || results.lock().unwrap().len();
    wait_until(
        "both backends serve the load",
        Duration::from_secs(10),
        || a.request_count() >= 25 && b.request_count() >= 25,
    );
    a.kill();
    let at_kill = count();
    wait_until(
        "the router marks the killed backend down",
        Duration::from_secs(5),
        || !r.backend_available(a.addr),
    );
    let at_down = count();
    wait_until(
        "the load goes on after the kill",
        Duration::from_secs(10),
        || count() >= (at_kill + 200).max(at_down + 100),
    );
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let results = results.lock().unwrap();
    let queries: Vec<_> = results.iter().filter(|r| !r.0).collect();
    let commands: Vec<_> = results.iter().filter(|r| r.0).collect();
    let failed_queries: Vec<_> = queries.iter().filter(|r| r.2 != 200).collect();
    assert!(
        failed_queries.is_empty(),
        "queries failed: {failed_queries:?}"
    );
    for (_, id, status) in &commands {
        assert!(
            matches!(*status, 200 | 502 | 503 | 504),
            "command {id} got {status}"
        );
    }
    let mut ids = HashMap::new();
    command_ids(&[&a, &b], &mut ids);
    let dup: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "commands delivered twice: {dup:?}");
    let ok_commands = commands.iter().filter(|r| r.2 == 200).count();
    assert!(
        ok_commands * 10 > commands.len() * 9,
        "{ok_commands} of {} commands succeeded",
        commands.len()
    );
    assert!(
        queries.len() > 50 && commands.len() > 50,
        "load ran: {} queries, {} commands",
        queries.len(),
        commands.len()
    );
    // Every successful Command arrived exactly once.
    for (_, id, status) in &commands {
        if *status == 200 {
            assert_eq!(ids.get(id), Some(&1), "command {id}");
        }
    }
}

#[test]
fn silent_backend_times_out_and_queries_retry_elsewhere() {
    let hang = ScriptedBackend::start(|_| Reply::hang());
    let good = demo_backend("good");
    let r = Router::start(&partition_of(
        &[hang.addr, good],
        "policy = \"primary_backup\"\n[timeouts]\nupstream_response_ms = 300\n[health]\nenabled = false\n",
    ));
    // A Command waits for the silent server, then gets 504; it is not re-sent.
    let started = Instant::now();
    let body = r#"{"user_id":"u"}"#;
    let resp = request(
        r.addr,
        format!(
            "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(resp.status, 504);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(hang.request_count(), 1);
    // A Query times out on the silent server and is retried on the next one.
    let resp = get(r.addr, "/api/spot/user/data", "X-User-Id: u\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.zone(), "good");
    assert_eq!(hang.request_count(), 2);
}

#[test]
fn request_deadline_bounds_all_attempts() {
    let hang = ScriptedBackend::start(|_| Reply::hang());
    let r = Router::start(&partition_of(
        &[hang.addr],
        "[timeouts]\nupstream_response_ms = 5000\nrequest_deadline_ms = 250\n[health]\nenabled = false\n",
    ));
    let started = Instant::now();
    let resp = get(r.addr, "/x", "X-User-Id: u\r\n");
    assert_eq!(resp.status, 504);
    assert!(resp.text().contains("deadline"), "{}", resp.text());
    assert!(started.elapsed() < Duration::from_millis(2000));
}

/// Send `rest` a byte per `every` until the router answers; when its first bytes came
/// (from the first byte of `rest`), and the answer's head.
fn trickle_until_answered(s: &mut TcpStream, rest: &[u8], every: Duration) -> (Duration, String) {
    use std::io::{Read, Write};
    let started = Instant::now();
    s.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut sent = 0;
    let mut buf = [0u8; 4096];
    loop {
        assert!(started.elapsed() < Duration::from_secs(20), "no answer");
        match s.read(&mut buf) {
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                break;
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
        }
        // Bounded polling; the trickle's pace is the scenario.
        if sent < rest.len() && started.elapsed() >= every * sent as u32 {
            s.write_all(&rest[sent..sent + 1]).unwrap();
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let at = started.elapsed();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(n @ 1..) => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    (at, String::from_utf8_lossy(&got).into_owned())
}

/// `request_deadline_ms` cuts a request body still arriving (504), the one read to find
/// the user id (a JSON body, no header naming the user) as well as one streamed to the
/// backend, though it trickles within `client_body_ms`: the deadline bounds the whole
/// request. (The scanned body used to be read to its end first: a body trickled for
/// seconds got its 504 only then.)
#[test]
fn request_deadline_cuts_a_body_still_arriving() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = Router::start(&partition_of(
        &[b.addr],
        "[timeouts]\nclient_body_ms = 3000\nrequest_deadline_ms = 500\n[health]\nenabled = false\n",
    ));
    let body = format!("{{\"user_id\":\"u\",\"pad\":\"{}\"}}", "x".repeat(60));
    let scanned = format!(
        "POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let streamed = format!(
        "POST /api/x HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    for (n, head) in [scanned, streamed].iter().enumerate() {
        let mut s = TcpStream::connect(r.addr).unwrap();
        std::io::Write::write_all(&mut s, head.as_bytes()).unwrap();
        // A byte every 100 ms: 7 s for the whole body.
        let (at, answer) =
            trickle_until_answered(&mut s, body.as_bytes(), Duration::from_millis(100));
        assert!(answer.starts_with("HTTP/1.1 504 "), "{answer}");
        assert!(answer.contains("deadline"), "{answer}");
        assert!(
            at >= Duration::from_millis(490) && at < Duration::from_millis(2500),
            "answered after {at:?}"
        );
        // Closed cleanly (FIN): the rest of the body is not waited for.
        let mut rest = Vec::new();
        let end = std::io::Read::read_to_end(&mut s, &mut rest);
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(r.metrics().errors_of("deadline"), n as u64 + 1);
    }
    assert_eq!(
        b.request_count(),
        1,
        "only the streamed body reached the backend"
    );
}

#[test]
fn reset_mid_response_closes_the_client_and_later_requests_are_clean() {
    // The upstream cuts a response short, with a FIN or with an RST.
    let b = ScriptedBackend::start(|req| {
        let partial = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part";
        match req.path() {
            "/partial-fin" => Reply::bytes(partial).then(Ending::Close),
            "/partial-rst" => Reply::bytes(partial).then(Ending::Reset),
            _ => Reply::ok("whole"),
        }
    });
    let r = Router::start(&partition_of(&[b.addr], "[health]\nenabled = false\n"));
    for path in ["/partial-fin", "/partial-rst"] {
        let mut c = Client::connect(r.addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n").as_bytes());
        let e = c
            .try_read_response()
            .expect_err("a truncated response is not completed");
        assert!(e.partial.starts_with(b"HTTP/1.1 200 "), "{path}: {e}");
        assert_eq!(
            e.failure,
            Failure::Fin,
            "{path}: the client is cut cleanly: {e}"
        );
        for _ in 0..3 {
            assert_eq!(get(r.addr, "/ok", "X-User-Id: u\r\n").body, b"whole");
        }
    }
}

/// A server that answers a good head and then breaks off its body (a short
/// `Content-Length` body ended by a FIN or an RST, a cut chunked body, a stall past the
/// response timeout) has failed: the breaker counts it, so a server that always does so is
/// ejected, and a half-open probe that ends so re-opens the circuit. A client that goes
/// away mid-body is no verdict on the server.
#[test]
fn a_body_that_breaks_off_counts_against_the_circuit() {
    let b = ScriptedBackend::start(|req| {
        let short = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part";
        match req.path() {
            "/short-fin" => Reply::bytes(short).then(Ending::Close),
            "/short-rst" => Reply::bytes(short).then(Ending::Reset),
            "/chunked-cut" => {
                Reply::bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                    .then(Ending::Close)
            }
            "/stall" => Reply::bytes(short).then(Ending::Hang),
            // The rest comes after the client is gone.
            "/client-leaves" => Reply::bytes(short).late(Duration::from_millis(300), [b'x'; 91]),
            _ => Reply::ok("whole"),
        }
    });
    let r = Router::start(&partition_of(
        &[b.addr],
        "[timeouts]\nupstream_response_ms = 300\n[health]\nenabled = false\n\
         [circuit]\nconsecutive_failures = 3\ncooldown_ms = 300\n[retry]\nmax_attempts = 1\n",
    ));
    let cut = |path: &str| {
        let mut c = Client::connect(r.addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n").as_bytes());
        let e = c
            .try_read_response()
            .expect_err("a truncated response is not completed");
        assert!(e.partial.starts_with(b"HTTP/1.1 200 "), "{path}: {e}");
    };
    cut("/short-fin");
    cut("/short-rst");
    // The client takes the head and resets: the rest of the body finds it gone.
    let mut c = Client::connect(r.addr);
    c.send(b"GET /client-leaves HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n");
    assert_eq!(c.read_raw(5), b"HTTP/");
    c.reset();
    wait_until("the client's going counted", Duration::from_secs(3), || {
        r.metrics().errors_of("client_gone") == 1
    });
    assert!(
        r.backend_available(b.addr),
        "a client gone mid-body is no failure of the server"
    );
    assert_eq!(r.circuit_transitions(b.addr), (0, 0, 0));
    cut("/chunked-cut");
    wait_until("circuit open", Duration::from_secs(3), || {
        !r.backend_available(b.addr)
    });
    assert_eq!(r.circuit_transitions(b.addr), (0, 1, 0));
    // The half-open probe stalls mid-body: the circuit opens again.
    wait_until("cool-down over", Duration::from_secs(3), || {
        r.backend_available(b.addr)
    });
    cut("/stall");
    assert_eq!(
        r.circuit_transitions(b.addr),
        (0, 2, 1),
        "a probe whose body stalls re-opens the circuit"
    );
    assert!(!r.backend_available(b.addr));
    // A whole answer to the next probe closes it.
    wait_until("cool-down over", Duration::from_secs(3), || {
        r.backend_available(b.addr)
    });
    assert_eq!(get(r.addr, "/ok", "X-User-Id: u\r\n").body, b"whole");
    assert_eq!(r.circuit_transitions(b.addr), (1, 2, 2));
}

/// A Query whose client resets while the Query waits in the retry backoff ends there, as
/// one whose client resets while its answer is awaited does (README): it is not sent to
/// the next server for nobody. Watched where the ring reports the reset (io_uring with
/// multishot receives); elsewhere the retry goes out and the reset is noticed when its
/// answer is written.
#[test]
fn a_query_whose_client_resets_in_the_retry_backoff_is_not_sent_again() {
    let first = ScriptedBackend::start(|_| Reply::reset());
    let second = ScriptedBackend::start(|_| Reply::ok("second"));
    let r = Router::start(&partition_of(
        &[first.addr, second.addr],
        "policy = \"primary_backup\"\n[health]\nenabled = false\n\
         [circuit]\nconsecutive_failures = 1\ncooldown_ms = 60000\n\
         [retry]\nbackoff_base_ms = 1000\nbackoff_max_ms = 1000\n",
    ));
    let watched = r.multishot() == vec![true];
    let mut c = Client::connect(r.addr);
    c.send(b"GET /api/spot/user/data HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n");
    // The first server's reset opened its circuit: the Query is past its first attempt,
    // in the backoff before the second.
    wait_until("the first attempt failed", Duration::from_secs(5), || {
        !r.backend_available(first.addr)
    });
    let reset_at = Instant::now();
    c.reset();
    wait_until("the client's going counted", Duration::from_secs(5), || {
        r.metrics().errors_of("client_gone") == 1
    });
    if watched {
        assert_eq!(
            r.metrics().retries,
            0,
            "the Query was sent again for nobody"
        );
        assert!(
            reset_at.elapsed() < Duration::from_millis(900),
            "the backoff was not cut short: {:?}",
            reset_at.elapsed()
        );
        assert_eq!(second.accepted(), 0);
    } else {
        second.wait_for_requests(1);
    }
    assert!(
        r.backend_available(second.addr),
        "no verdict on the second server"
    );
}

#[test]
fn a_dead_backend_is_marked_down_and_returns_after_rise_checks() {
    let a = ScriptedBackend::start(named("a"));
    let b = demo_backend("b");
    let r = Router::start(&partition_of(
        &[a.addr, b],
        "[health]\ninterval_ms = 100\ntimeout_ms = 100\nfall = 2\nrise = 3\n",
    ));
    a.kill();
    wait_until("a marked down", Duration::from_secs(3), || {
        !r.backend_available(a.addr)
    });
    // While down, no request is even tried on it.
    for _ in 0..6 {
        assert_eq!(get(r.addr, "/x", "X-User-Id: u\r\n").zone(), "b");
    }
    let restarted = ScriptedBackend::builder().addr(a.addr).start(named("a"));
    let back_at = Instant::now();
    wait_until("a marked up", Duration::from_secs(3), || {
        r.backend_available(a.addr)
    });
    assert!(
        back_at.elapsed() >= Duration::from_millis(150),
        "needs `rise` good checks, not one"
    );
    let zones: Vec<String> = (0..6)
        .map(|_| get(r.addr, "/x", "X-User-Id: u\r\n").zone())
        .collect();
    assert!(zones.iter().any(|z| z == "a"), "{zones:?}");
    assert!(restarted.request_count() > 0);
}

#[test]
fn circuit_opens_on_5xx_then_one_probe_closes_it() {
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    let b = ScriptedBackend::start(move |_| {
        if f.load(Ordering::SeqCst) {
            Reply::status("500 Internal Server Error", "fail")
        } else {
            Reply::ok("fine")
        }
    });
    let cooldown = Duration::from_millis(300);
    let r = Router::start(&partition_of(
        &[b.addr],
        &format!("[health]\nenabled = false\n[circuit]\nconsecutive_failures = 3\ncooldown_ms = {}\n[retry]\nmax_attempts = 1\n", cooldown.as_millis()),
    ));
    let mut c = Client::connect(r.addr);
    let cmd = |c: &mut Client| {
        let body = r#"{"user_id":"u"}"#;
        c.roundtrip(
            format!(
                "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    for _ in 0..3 {
        assert_eq!(cmd(&mut c).status, 500, "upstream 5xx is relayed");
    }
    // Open: rejected without reaching the backend.
    let before = b.request_count();
    for _ in 0..3 {
        let resp = cmd(&mut c);
        assert_eq!(resp.status, 503);
        assert_eq!(resp.header("retry-after"), Some("1"));
    }
    assert_eq!(b.request_count(), before);
    // Still failing after the cool-down: one probe goes through and re-opens it.
    std::thread::sleep(cooldown + Duration::from_millis(50)); // scenario: the cool-down passes
    assert_eq!(cmd(&mut c).status, 500);
    assert_eq!(b.request_count(), before + 1);
    assert_eq!(cmd(&mut c).status, 503);
    // Healthy again: the next probe closes the circuit and traffic flows.
    failing.store(false, Ordering::SeqCst);
    std::thread::sleep(cooldown + Duration::from_millis(50)); // scenario: the cool-down passes
    for _ in 0..3 {
        assert_eq!(cmd(&mut c).status, 200);
    }
    assert_eq!(
        r.circuit_transitions(b.addr),
        (1, 2, 2),
        "closed, open and half-open transitions"
    );
}

/// A router whose bound is 4 in flight, Queries shed from `ratio` of it, with `n` slow
/// Commands (answered after `slow`) in flight: the backend, the router, their threads.
fn slow_commands_in_flight(
    ratio: f64,
    n: usize,
    slow: Duration,
) -> (ScriptedBackend, Router, Vec<std::thread::JoinHandle<u16>>) {
    let b = ScriptedBackend::start(move |req| {
        if req.path() == "/api/spot/v2/slow" {
            Reply::ok("slow").delayed(slow)
        } else {
            Reply::ok("fast")
        }
    });
    let r = Router::start(&partition_of(
        &[b.addr],
        &format!("[overload]\nmax_in_flight_per_worker = 4\nquery_shed_ratio = {ratio}\n"),
    ));
    let threads = (0..n)
        .map(|i| {
            let addr = r.addr;
            std::thread::spawn(move || {
                let body = format!(r#"{{"user_id":"u{i}"}}"#);
                request(addr, format!("POST /api/spot/v2/slow HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).status
            })
        })
        .collect();
    b.wait_for_requests(n);
    (b, r, threads)
}

/// Whether every slow Command the backend got is still unanswered.
fn slow_ones_unanswered(b: &ScriptedBackend) -> bool {
    b.requests()
        .iter()
        .filter(|q| q.path() == "/api/spot/v2/slow")
        .all(|q| !q.answered)
}

#[test]
fn saturation_sheds_queries_before_commands() {
    // Two slow Commands (800 ms) keep two requests in flight.
    let (b, r, slow) = slow_commands_in_flight(0.5, 2, Duration::from_millis(800));
    let q = get(r.addr, "/api/spot/user/data", "X-User-Id: q\r\n");
    assert_eq!(q.status, 503, "Queries are shed at half the bound");
    assert_eq!(q.header("retry-after"), Some("1"));
    let body = r#"{"user_id":"c"}"#;
    let c = request(
        r.addr,
        format!(
            "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.status, 200, "Commands still pass below the full bound");
    assert!(
        slow_ones_unanswered(&b),
        "while both slow Commands were in flight"
    );
    for t in slow {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(
        get(r.addr, "/api/spot/user/data", "X-User-Id: q\r\n").status,
        200,
        "recovers"
    );
}

/// Where the fraction of the bound is not a whole number of requests (0.8 × 4 = 3.2), the
/// Query bound rounds down: three in flight already exceed what Queries may fill, and the
/// last place stays a Command's. (Rounded up, it was the full bound: no load at which
/// Queries were shed and Commands admitted.)
#[test]
fn queries_are_shed_before_commands_when_the_fraction_is_not_whole() {
    let (b, r, slow) = slow_commands_in_flight(0.8, 3, Duration::from_millis(1500));
    let q = get(r.addr, "/api/spot/user/data", "X-User-Id: q\r\n");
    let c = request(
        r.addr,
        b"POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nX-User-Id: c\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(
        slow_ones_unanswered(&b),
        "the three slow Commands were in flight throughout"
    );
    assert_eq!(
        (q.status, q.header("retry-after")),
        (503, Some("1")),
        "a Query is shed with 3 of 4 places taken (beyond 0.8 of the bound)"
    );
    assert_eq!(c.status, 200, "a Command still takes the last place");
    for t in slow {
        assert_eq!(t.join().unwrap(), 200);
    }
}

#[test]
fn retries_are_bounded_by_attempts_and_budget() {
    let b1 = ScriptedBackend::start(|_| Reply::close());
    let b2 = ScriptedBackend::start(|_| Reply::close());
    let r = Router::start(&partition_of(
        &[b1.addr, b2.addr],
        "[health]\nenabled = false\n[circuit]\nenabled = false\n",
    ));
    assert_eq!(get(r.addr, "/q", "X-User-Id: u\r\n").status, 502);
    assert_eq!(
        b1.request_count() + b2.request_count(),
        2,
        "first attempt + one retry"
    );

    let b3 = ScriptedBackend::start(|_| Reply::close());
    let b4 = ScriptedBackend::start(|_| Reply::close());
    let r = Router::start(&partition_of(
        &[b3.addr, b4.addr],
        "[health]\nenabled = false\n[circuit]\nenabled = false\n[retry]\nbudget_ratio = 0.0\nbudget_reserve = 0.0\n",
    ));
    assert_eq!(get(r.addr, "/q", "X-User-Id: u\r\n").status, 502);
    assert_eq!(
        b3.request_count() + b4.request_count(),
        1,
        "an empty budget allows no retry"
    );
}

/// The real binary drains on SIGTERM: the request in flight completes, idle keep-alive
/// connections are closed, new connections are refused, `/ready` answers 503 at once (and
/// the other admin endpoints answer too), and it exits 0.
#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let b = ScriptedBackend::start(|req| {
        let reply = Reply::ok(req.target());
        if req.path() == "/slow" {
            reply.delayed(Duration::from_millis(1500))
        } else {
            reply
        }
    });
    let mut p = RouterProcess::start(
        "drain",
        &format!(
            "default_backend = \"{0}\"\n[partitions.zone_1]\nservers = [\"{0}\"]\n",
            b.addr
        ),
        1,
        true,
        &["--drain-seconds", "5"],
    );
    let addr = p.addr;
    let mut idle = Client::connect(addr);
    assert_eq!(
        idle.roundtrip(b"GET /warm HTTP/1.1\r\nHost: t\r\n\r\n")
            .status,
        200
    );
    let in_flight = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        let resp = c.roundtrip(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
        c.expect_fin();
        resp
    });
    b.wait_for_requests(2);
    p.signal(libc::SIGTERM);
    idle.expect_fin(); // the drain closes the idle keep-alive connection
    let ready = p.admin_get("/ready");
    assert_eq!(
        (ready.status, ready.text().as_str()),
        (503, "not ready: draining\n")
    );
    // The drain does not hold the server: scrapes, /config and reloads answer meanwhile
    // (they used to wait for the whole drain).
    let metrics = p.admin_get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("ringgate_requests_total"));
    assert_eq!(p.admin_get("/config").status, 200);
    let reload = p.admin_post("/reload");
    assert_eq!(reload.status, 200, "{}", reload.text());
    assert!(
        !in_flight.is_finished(),
        "the idle connection was closed and /ready, /metrics, /config and /reload answered at \
         once, not after the in-flight request"
    );
    wait_until(
        "new connections are refused while draining",
        Duration::from_secs(2),
        || TcpStream::connect(addr).is_err(),
    );
    let resp = in_flight.join().unwrap();
    assert_eq!(resp.status, 200, "in-flight request completed");
    assert_eq!(resp.body, b"/slow");
    assert_eq!(resp.header("connection"), Some("close"));
    let status = p.wait_exit();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn the_epoll_driver_serves_the_same_traffic() {
    let b = demo_backend("zone_1");
    let r = Router::start_on(
        &format!("default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n[limits]\nsplice_threshold_bytes = 65536\n"),
        1,
        "epoll",
    );
    assert_eq!(r.drivers(), vec!["Epoll".to_string()]);
    let mut c = Client::connect(r.addr);
    for i in 0..5 {
        let resp = c.roundtrip(
            format!("GET /e/{i} HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n").as_bytes(),
        );
        assert_eq!(resp.json_field("path").unwrap(), format!("/e/{i}"));
    }
    exchange_large_bodies(&mut c);
}

#[test]
fn http_health_checks_mark_a_failing_backend_down() {
    let sick = ScriptedBackend::start(|req| {
        if req.method() == "GET" && req.path() == "/healthz" {
            Reply::status("503 Service Unavailable", "")
        } else {
            Reply::ok("sick-but-answering")
        }
    });
    let good = demo_backend("good");
    let r = Router::start(&partition_of(
        &[sick.addr, good],
        "[health]\ninterval_ms = 100\ntimeout_ms = 200\nfall = 2\nrise = 2\nhttp_path = \"/healthz\"\n",
    ));
    wait_until("sick marked down", Duration::from_secs(3), || {
        !r.backend_available(sick.addr)
    });
    let probes = sick.request_count();
    assert!(probes >= 2, "fall = 2 probes at least: {probes}");
    for _ in 0..6 {
        assert_eq!(get(r.addr, "/x", "X-User-Id: u\r\n").zone(), "good");
    }
    assert!(
        sick.requests().iter().all(|q| q.path() == "/healthz"),
        "only probes reached the sick backend"
    );
}

#[test]
fn idle_keep_alive_connections_are_closed_and_counted() {
    let b = demo_backend("zone_1");
    let r = Router::start(&format!(
        "default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n[timeouts]\nclient_idle_ms = 200\n"
    ));
    let mut c = Client::connect(r.addr);
    assert_eq!(
        c.roundtrip(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").status,
        200
    );
    let started = Instant::now();
    c.expect_fin();
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(r.metrics().idle_timeouts, 1);
}

/// A Query whose only server failed has nowhere to be retried: `ringgate_retries_total`
/// must not count a retry that never went out.
#[test]
fn a_retry_with_no_server_left_is_not_counted() {
    let solo = ScriptedBackend::start(|_| Reply::close());
    let r = Router::start(&format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{}\"]\n\
         [health]\nenabled = false\n[circuit]\nenabled = false\n",
        solo.addr
    ));
    assert_eq!(get(r.addr, "/q", "X-User-Id: u\r\n").status, 502);
    assert_eq!(solo.request_count(), 1);
    assert_eq!(r.metrics().retries, 0, "nothing was sent again");
}

/// ... and must spend no retry budget: another partition's real retry is still allowed.
#[test]
fn a_retry_with_no_server_left_spends_no_budget() {
    let solo = ScriptedBackend::start(|_| Reply::close());
    let first = ScriptedBackend::start(|_| Reply::close());
    let second = ScriptedBackend::start(|_| Reply::ok("second"));
    let r = Router::start(&format!(
        "default_backend = \"solo\"\n\
         [partitions.solo]\nservers = [\"{}\"]\n\
         [partitions.pair]\nservers = [\"{}\", \"{}\"]\npolicy = \"primary_backup\"\n\
         [users]\nu1 = \"solo\"\nu2 = \"pair\"\n\
         [health]\nenabled = false\n[circuit]\nenabled = false\n\
         [retry]\nbudget_ratio = 0.0\nbudget_reserve = 1.0\n",
        solo.addr, first.addr, second.addr
    ));
    assert_eq!(get(r.addr, "/q", "X-User-Id: u1\r\n").status, 502);
    assert_eq!(solo.request_count(), 1);
    // The budget (one retry) is still whole: this Query fails over to the second server.
    let resp = get(r.addr, "/q", "X-User-Id: u2\r\n");
    assert_eq!(first.request_count(), 1);
    assert_eq!(resp.status, 200, "{}", resp.text());
}

/// The half-open probe meets a pooled connection that dies before answering: README says
/// such a Query is sent again once on a new connection; the probe must not be lost.
#[test]
fn a_half_open_probe_on_a_stale_pooled_connection_is_sent_again_on_a_new_one() {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let b = ScriptedBackend::start(move |_| match seen.fetch_add(1, Ordering::SeqCst) {
        0..=2 => Reply::status("500 Internal Server Error", "fail"),
        3 => Reply::reset(),
        _ => Reply::ok("fine"),
    });
    let cooldown = Duration::from_millis(200);
    let r = Router::start(&format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{}\"]\n\
         [health]\nenabled = false\n\
         [circuit]\nconsecutive_failures = 3\ncooldown_ms = {}\n",
        b.addr,
        cooldown.as_millis()
    ));
    let mut c = Client::connect(r.addr);
    let q = b"GET /api/spot/user/data HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n";
    for _ in 0..3 {
        assert_eq!(c.roundtrip(q).status, 500);
    }
    assert!(!r.backend_available(b.addr), "circuit open");
    assert_eq!(b.accepted(), 1, "one connection, kept in the pool");
    std::thread::sleep(cooldown + Duration::from_millis(50)); // scenario: the cool-down passes
    let resp = c.roundtrip(q);
    assert_eq!(
        resp.status,
        200,
        "the probe goes again on a new connection: {}",
        resp.text()
    );
    assert_eq!(r.circuit_transitions(b.addr), (1, 1, 1), "probe closed it");
}

/// Whether a connect to `addr` from this host is waiting for its SYN's answer.
fn syn_sent_to(addr: SocketAddr) -> bool {
    let remote = format!(" 0100007F:{:04X} 02 ", addr.port());
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .any(|l| l.contains(&remote))
}

/// A Query whose client resets while a connection to its server opens ends there (where
/// the reset is watched, as in the retry backoff): its place is not held, nor its server
/// judged, until `upstream_connect_ms` ends the connect.
#[test]
fn a_query_whose_client_resets_while_its_connection_opens_ends_at_once() {
    let (_l, _filler, addr) = blackhole();
    let r = Router::start(&format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{addr}\"]\n\
         [timeouts]\nupstream_connect_ms = 1500\n\
         [health]\nenabled = false\n[circuit]\nconsecutive_failures = 1\n"
    ));
    let watched = r.multishot() == vec![true];
    let mut c = Client::connect(r.addr);
    c.send(b"GET /api/spot/user/data HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n");
    wait_until("the connect is under way", Duration::from_secs(5), || {
        syn_sent_to(addr)
    });
    c.reset();
    if !watched {
        // Noticed only when the answer to the connect's timeout is written.
        wait_until("the connect timed out", Duration::from_secs(5), || {
            r.metrics().errors_of("connect_timeout") == 1
        });
        return;
    }
    wait_until(
        "the client's going counted",
        Duration::from_millis(1000),
        || r.metrics().errors_of("client_gone") == 1,
    );
    let m = r.metrics();
    assert_eq!(m.errors_of("connect_timeout"), 0);
    assert!(r.backend_available(addr), "no verdict on the server");
}

/// The request deadline ends a connect that is still waiting: README says 504.
#[test]
fn a_deadline_that_ends_a_connect_answers_504() {
    let (_l, _filler, addr) = blackhole();
    let r = Router::start(&format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{addr}\"]\n\
         [timeouts]\nupstream_connect_ms = 5000\nrequest_deadline_ms = 300\n\
         [health]\nenabled = false\n"
    ));
    let resp = get(r.addr, "/q", "X-User-Id: u\r\n");
    assert_eq!(resp.status, 504, "{}", resp.text());
}

/// A connect that `upstream_connect_ms` ends is a timeout: SPEC §3 answers every timeout
/// with 504 (as the request deadline ending the same connect does) and counts it, apart
/// from a refused connect (502, `connect`).
#[test]
fn a_connect_timeout_answers_504_and_is_counted() {
    let (_l, _filler, addr) = blackhole();
    let r = Router::start(&format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{addr}\"]\n\
         [timeouts]\nupstream_connect_ms = 200\n\
         [health]\nenabled = false\n"
    ));
    let resp = get(r.addr, "/q", "X-User-Id: u\r\n");
    assert_eq!(resp.status, 504, "{}", resp.text());
    let m = r.metrics();
    assert_eq!(m.errors_of("connect_timeout"), 1);
    assert_eq!(m.errors_of("connect"), 0);
}

/// A deadline mostly spent on an earlier attempt does not count against the server that got
/// the rest of it: with tight deadlines a partial outage would open healthy servers'
/// circuits.
#[test]
fn a_deadline_spent_by_an_earlier_attempt_does_not_open_the_next_servers_circuit() {
    let bad = ScriptedBackend::start(|_| Reply::reset().delayed(Duration::from_millis(250)));
    let good = ScriptedBackend::start(|_| Reply::ok("good").delayed(Duration::from_millis(100)));
    let r = Router::start(&format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{}\", \"{}\"]\n\
         [health]\nenabled = false\n[circuit]\nconsecutive_failures = 1\ncooldown_ms = 60000\n\
         [timeouts]\nrequest_deadline_ms = 300\n",
        bad.addr, good.addr
    ));
    // Round-robin sends one of two Queries to `bad` first: reset after 250 ms, it is sent to
    // `good` with 50 ms left, and its deadline answers 504.
    let statuses: Vec<u16> = (0..2)
        .map(|_| get(r.addr, "/q", "X-User-Id: u\r\n").status)
        .collect();
    assert!(statuses.contains(&504), "{statuses:?}");
    assert!(good.request_count() >= 1, "the retry went to good");
    assert!(
        r.backend_available(good.addr),
        "good's circuit was opened by a deadline the bad server spent"
    );
    assert_eq!(get(r.addr, "/q", "X-User-Id: u\r\n").status, 200);
}

/// A second SIGTERM during a drain ends the process at once (exit 1) instead of waiting
/// out the drain: what an operator pressing Ctrl-C twice expects.
#[test]
fn a_second_sigterm_during_a_drain_exits_at_once() {
    let b = ScriptedBackend::start(|req| Reply::ok(req.target()).delayed(Duration::from_secs(5)));
    let mut p = RouterProcess::start(
        "drain-twice",
        &format!(
            "default_backend = \"{0}\"\n[partitions.zone_1]\nservers = [\"{0}\"]\n",
            b.addr
        ),
        1,
        true,
        &["--drain-seconds", "30"],
    );
    let addr = p.addr;
    let in_flight = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.set_timeout(Duration::from_secs(10));
        c.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
        c.closed()
    });
    b.wait_for_requests(1);
    p.signal(libc::SIGTERM);
    wait_until("the drain starts", Duration::from_secs(5), || {
        p.admin_get("/ready").status == 503
    });
    let second = Instant::now();
    p.signal(libc::SIGTERM);
    let status = p.wait_exit();
    assert_eq!(status.code(), Some(1), "exit status {status}");
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "it waited for the 5 s answer: {:?}",
        second.elapsed()
    );
    let _ = in_flight.join();
}

/// A server answering every HTTP probe with `reply` (beside a demo server) must stay up:
/// probes every 30 ms, `fall = 2`.
fn probes_answered_with_stay_up(reply: Reply) {
    let healthy = ScriptedBackend::start(move |_| reply.clone());
    let other = demo_backend("other");
    let r = Router::start(&partition_of(
        &[healthy.addr, other],
        "[health]\ninterval_ms = 30\ntimeout_ms = 300\nfall = 2\nrise = 1\nhttp_path = \"/healthz\"\n",
    ));
    wait_until("a few probes answered", Duration::from_secs(3), || {
        healthy.request_count() >= 4
    });
    assert!(
        r.backend_available(healthy.addr),
        "a server answering every probe with a 2xx was marked down"
    );
}

/// A 2xx answer is healthy, however many header fields it carries (the probe parsed at
/// most 32).
#[test]
fn a_2xx_probe_answer_with_many_headers_is_healthy() {
    let mut head = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
    for i in 0..40 {
        head.push_str(&format!("X-Meta-{i}: v\r\n"));
    }
    head.push_str("\r\nok");
    probes_answered_with_stay_up(Reply::bytes(head));
}

/// An interim 1xx before the 2xx is still a 2xx answer (the probe took the 103 as final).
#[test]
fn a_2xx_probe_answer_after_early_hints_is_healthy() {
    probes_answered_with_stay_up(Reply::ok("ok").interim(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
        Duration::ZERO,
    ));
}

/// A reload that shortens `health.interval_ms` is in force at once: the checker does not
/// sit out the interval it was sleeping when the reload came, so a server that dies is
/// marked down after `fall` checks at the new interval.
#[test]
fn a_reload_that_shortens_the_health_interval_applies_at_once() {
    let a = ScriptedBackend::start(named("a"));
    let b = demo_backend("b");
    let config = |interval_ms: u64| {
        partition_of(
            &[a.addr, b],
            &format!("[health]\ninterval_ms = {interval_ms}\ntimeout_ms = 100\nfall = 2\n"),
        )
    };
    let mut r = Router::start(&config(60_000));
    // The first round has run (so the checker sleeps the 60 s); with `fall = 2` it cannot
    // mark `a` down on its own, whichever way its probe went.
    wait_until("a probed once", Duration::from_secs(3), || {
        a.accepted() >= 1
    });
    a.kill();
    r.reload(&config(100));
    wait_until(
        "a marked down at the new interval",
        Duration::from_secs(3),
        || !r.backend_available(a.addr),
    );
}

/// A reload that turns health checks off returns at once while a probe waits on a server
/// that never answers: the control plane (which holds the server lock through a reload)
/// does not wait out the probe's timeout.
#[test]
fn a_reload_that_turns_health_checks_off_does_not_wait_for_a_probe() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    silent.set_nonblocking(true).unwrap();
    let b = demo_backend("b");
    let servers = [silent.local_addr().unwrap(), b];
    let mut r = Router::start(&partition_of(
        &servers,
        "[health]\ninterval_ms = 100\ntimeout_ms = 10000\nhttp_path = \"/healthz\"\n",
    ));
    let mut probes = Vec::new();
    wait_until("a probe connected", Duration::from_secs(3), || {
        silent.accept().map(|(s, _)| probes.push(s)).is_ok()
    });
    let started = Instant::now();
    r.reload(&partition_of(&servers, "[health]\nenabled = false\n"));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the reload waited {took:?} for a probe round"
    );
    assert!(r.backend_available(servers[0]));
}

/// The half-open probe whose request ends without a verdict — its client stops sending
/// the body — is given back: the next request probes at once. Kept, the server stayed
/// half-open and refused every request (503) for another whole cool-down.
#[test]
fn a_half_open_probe_whose_client_gives_up_is_given_back() {
    let b = ScriptedBackend::start(|req| {
        if req.path() == "/fail" {
            Reply::status("500 Internal Server Error", "fail")
        } else {
            Reply::ok("fine")
        }
    });
    let r = Router::start(&format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{}\"]\n\
         [health]\nenabled = false\n\
         [circuit]\nconsecutive_failures = 1\ncooldown_ms = 1500\n\
         [timeouts]\nclient_body_ms = 200\n",
        b.addr
    ));
    assert_eq!(get(r.addr, "/fail", "X-User-Id: u\r\n").status, 500);
    assert!(!r.backend_available(b.addr), "circuit open");
    wait_until("the cool-down passes", Duration::from_secs(5), || {
        r.backend_available(b.addr)
    });
    // The probe: a Query whose body stops coming part-way (408).
    let mut c = Client::connect(r.addr);
    c.send(
        b"POST /api/spot/user/data HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\
          Content-Length: 100000\r\n\r\n{\"a\":",
    );
    assert_eq!(c.read_response().status, 408);
    // Well within the cool-down the probe's claim started.
    let resp = get(r.addr, "/q", "X-User-Id: u\r\n");
    assert_eq!(
        resp.status,
        200,
        "the next request is refused: the abandoned probe was kept: {}",
        resp.text()
    );
    assert_eq!(
        r.circuit_transitions(b.addr),
        (1, 1, 1),
        "its probe closed it"
    );
}

#[test]
fn a_reload_that_turns_the_breaker_off_closes_the_open_circuits() {
    // Nothing decides a circuit once the breaker is off: one left open read as open in
    // `/metrics` and `/config` for good, while traffic flowed to the server.
    let b = ScriptedBackend::start(|_| Reply::status("500 Internal Server Error", "fail"));
    let routes = format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{}\"]\n[health]\nenabled = false\n",
        b.addr
    );
    let mut r = Router::start(&format!(
        "{routes}[circuit]\nconsecutive_failures = 2\ncooldown_ms = 60000\n"
    ));
    for _ in 0..2 {
        assert_eq!(get(r.addr, "/q", "X-User-Id: u\r\n").status, 500);
    }
    assert!(!r.backend_available(b.addr), "circuit open");
    r.reload(&format!("{routes}[circuit]\nenabled = false\n"));
    assert_eq!(
        r.circuit_transitions(b.addr),
        (1, 1, 0),
        "closed again by the reload (closed, open, half-open transitions)"
    );
    assert_eq!(
        get(r.addr, "/q", "X-User-Id: u\r\n").status,
        500,
        "traffic flows"
    );
}

/// A server marked down that comes back is a new server as far as its old connections go:
/// the host that held them rebooted, or its address moved to a standby (a VIP failover),
/// and the kernel now answering there resets any connection it does not know. None of
/// them told the router (no FIN, no RST while idle), so the connection pooled before the
/// outage looks alive; a Command sent on it meets a reset before any answer and cannot be
/// sent again (502). A server's return must not be greeted with such failures: connections
/// pooled before it was marked down are not used once it is back.
#[test]
fn a_server_back_after_being_marked_down_gets_no_request_on_a_connection_pooled_before() {
    // 0: up; 1: gone (its probes hang until they time out); 2: back as a new host, which
    // resets the connections accepted before (`restart_at`: the first one it accepted).
    let phase = Arc::new(AtomicUsize::new(0));
    let restart_at = Arc::new(AtomicUsize::new(usize::MAX));
    let (p, first_new) = (phase.clone(), restart_at.clone());
    let b = ScriptedBackend::start(move |req| {
        let is_probe = req.path() == "/healthz";
        match p.load(Ordering::SeqCst) {
            1 if is_probe => Reply::hang(),
            2 if req.conn < first_new.load(Ordering::SeqCst) => Reply::reset(),
            _ if is_probe => Reply::ok(""),
            _ => Reply::ok("{\"done\":true}"),
        }
    });
    let r = Router::start(&format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{}\"]\n\
         [health]\ninterval_ms = 50\ntimeout_ms = 100\nfall = 2\nrise = 2\nhttp_path = \"/healthz\"\n",
        b.addr
    ));
    let order = "{\"user_id\":\"u\",\"id\":\"o1\"}";
    assert_eq!(post_json(r.addr, "/api/spot/v2/order", order).status, 200);
    wait_until("its connection pooled", Duration::from_secs(5), || {
        r.metrics().pool_idle == 1
    });
    phase.store(1, Ordering::SeqCst);
    wait_until("the server marked down", Duration::from_secs(5), || {
        !r.backend_available(b.addr)
    });
    restart_at.store(b.accepted(), Ordering::SeqCst);
    phase.store(2, Ordering::SeqCst);
    wait_until("the server marked up again", Duration::from_secs(5), || {
        r.backend_available(b.addr)
    });
    let order = "{\"user_id\":\"u\",\"id\":\"o2\"}";
    let resp = post_json(r.addr, "/api/spot/v2/order", order);
    assert_eq!(
        resp.status,
        200,
        "the Command went out on a connection pooled before the outage: {}",
        resp.text()
    );
}

/// The same for a server the circuit breaker ejected (active checks off): once its
/// cool-down is over, the half-open probe — a Command here — must not go out on a
/// connection pooled before the circuit opened. On one the new host resets, the probe got
/// a 502 and the circuit opened again for another cool-down, once per such connection.
#[test]
fn a_half_open_probe_does_not_use_a_connection_pooled_before_the_circuit_opened() {
    // 0: up (answers once three Commands are in, so they open three connections);
    // 1: gone (answers nothing); 2: back as a new host, which resets the connections it
    // accepted before (`restart_at`: the first one it accepted).
    let phase = Arc::new(AtomicUsize::new(0));
    let restart_at = Arc::new(AtomicUsize::new(usize::MAX));
    let arrived = Arc::new(AtomicUsize::new(0));
    let (p, first_new) = (phase.clone(), restart_at.clone());
    let b = ScriptedBackend::start(move |req| match p.load(Ordering::SeqCst) {
        0 => {
            arrived.fetch_add(1, Ordering::SeqCst);
            wait_until("three Commands in", Duration::from_secs(5), || {
                arrived.load(Ordering::SeqCst) >= 3
            });
            Reply::ok("{\"done\":true}")
        }
        1 => Reply::hang(),
        _ if req.conn < first_new.load(Ordering::SeqCst) => Reply::reset(),
        _ => Reply::ok("{\"done\":true}"),
    });
    let cooldown = Duration::from_millis(300);
    let r = Router::start(&format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{}\"]\n\
         [timeouts]\nupstream_response_ms = 300\n[health]\nenabled = false\n\
         [circuit]\nconsecutive_failures = 2\ncooldown_ms = {}\n",
        b.addr,
        cooldown.as_millis()
    ));
    let order = |id: usize| {
        let addr = r.addr;
        let body = format!("{{\"user_id\":\"u\",\"id\":\"o{id}\"}}");
        std::thread::spawn(move || post_json(addr, "/api/spot/v2/order", &body).status)
    };
    let first: Vec<_> = (0..3).map(order).collect();
    for t in first {
        assert_eq!(t.join().unwrap(), 200);
    }
    wait_until("three connections pooled", Duration::from_secs(5), || {
        r.metrics().pool_idle == 3
    });
    // The server goes: two Queries time out on two of them, and its circuit opens.
    phase.store(1, Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(get(r.addr, "/q", "X-User-Id: u\r\n").status, 504);
    }
    assert!(!r.backend_available(b.addr), "circuit open");
    restart_at.store(b.accepted(), Ordering::SeqCst);
    phase.store(2, Ordering::SeqCst);
    wait_until("the cool-down passes", Duration::from_secs(5), || {
        r.backend_available(b.addr)
    });
    let status = order(3).join().unwrap();
    assert_eq!(
        status, 200,
        "the half-open probe went out on a connection pooled before the circuit opened"
    );
    assert_eq!(
        r.circuit_transitions(b.addr),
        (1, 1, 1),
        "its probe closed it"
    );
}
