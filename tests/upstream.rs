//! Upstream behaviour over real sockets: failover, pooled connections that died while
//! idle, the never-resend-a-Command rule, timeouts, no healthy server.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::{BodyRead, Ending, Reply, ScriptedBackend};
use common::client::{get, Client};
use common::router::{dead_addr, demo_backend, Router};
use common::wait_until;

fn route_to(servers: &[SocketAddr], extra: &str) -> Router {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    Router::start(&format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [{}]\n{extra}",
        list.join(", ")
    ))
}

fn command(body: &str) -> Vec<u8> {
    format!("POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

#[test]
fn connect_failure_fails_over_to_the_next_server() {
    let alive = demo_backend("alive");
    let r = route_to(&[dead_addr(), alive], "");
    let mut c = Client::connect(r.addr);
    for i in 0..6 {
        let resp = c.roundtrip(&command(&format!(r#"{{"user_id":"u","n":{i}}}"#)));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.zone(), "alive");
    }
}

#[test]
fn pooled_connection_closed_while_idle_is_never_used() {
    // Answers with a keep-alive response, then closes 50 ms later without saying so.
    let b = ScriptedBackend::start(|_| {
        Reply::ok("done").then_after(Duration::from_millis(50), Ending::Close)
    });
    let r = route_to(&[b.addr], "");
    let mut c = Client::connect(r.addr);
    for i in 0..5 {
        let resp = c.roundtrip(&command(&format!(r#"{{"user_id":"u","n":{i}}}"#)));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        let conn = b.requests()[i].conn;
        wait_until(
            &format!("the backend closed connection {conn}"),
            Duration::from_secs(5),
            || b.connection(conn).closed,
        );
    }
    let requests = b.requests();
    assert_eq!(
        requests.len(),
        5,
        "every Command reached the backend exactly once"
    );
    for (i, req) in requests.iter().enumerate() {
        assert_eq!(req.index, 0, "request {i} went on a fresh connection");
        assert!(
            req.text().contains(&format!("\"n\":{i}}}")),
            "{}",
            req.text()
        );
    }
}

#[test]
fn a_command_that_reached_the_upstream_is_never_resent() {
    // The second request on every backend connection is read, then the connection closes
    // without an answer.
    let b = ScriptedBackend::start(|req| {
        if req.index == 0 {
            Reply::ok("first")
        } else {
            Reply::close()
        }
    });
    let r = route_to(&[b.addr], "");
    let mut c = Client::connect(r.addr);
    assert_eq!(
        c.roundtrip(&command(r#"{"user_id":"u","n":1}"#)).status,
        200
    );
    let resp = c.roundtrip(&command(r#"{"user_id":"u","n":2}"#));
    assert_eq!(resp.status, 502, "{}", resp.text());
    // A re-send would have been read (and recorded) before the router could answer 502.
    let sent: Vec<_> = b
        .requests()
        .into_iter()
        .filter(|r| r.text().contains(r#""n":2"#))
        .collect();
    assert_eq!(sent.len(), 1, "the Command was sent once: {sent:?}");
    assert!(sent[0].body_complete);
}

/// The `"n":<number>` of a Command's body.
fn command_number(text: &str) -> Option<u64> {
    let at = text.find("\"n\":")? + 4;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn commands_racing_a_backend_that_drops_idle_connections_are_processed_at_most_once() {
    // After each answer the backend waits a few hundred microseconds, then closes the
    // connection with a plain close, as a server's keep-alive timeout does. The client's
    // next Command comes after a pause of about the same length, so some race the close.
    // A race the router learns of before it writes costs nothing (a new connection); one
    // where the close reaches it first while the Command is on its way (a FIN that
    // acknowledges none of it) is sent again on a new connection; one where the Command
    // reached the server before it closed (an RST) is answered 502 — the server never read
    // it, but the router cannot know that, and a Command is never sent twice.
    let b = ScriptedBackend::start(|req| {
        let pause = 150 + (req.conn * 37 + req.index * 11) % 500;
        Reply::ok("done").then_after(Duration::from_micros(pause as u64), Ending::Drop)
    });
    let r = route_to(&[b.addr], "");
    let mut c = Client::connect(r.addr);
    let (mut answered, mut refused) = (Vec::new(), Vec::new());
    for n in 0..1500u64 {
        let resp = c.roundtrip(&command(&format!(r#"{{"user_id":"u","n":{n}}}"#)));
        match resp.status {
            200 => answered.push(n),
            502 => refused.push(n),
            other => panic!("Command {n}: {other} {}", resp.text()),
        }
        if resp.header("connection") == Some("close") {
            c = Client::connect(r.addr);
        }
        std::thread::sleep(Duration::from_micros(150 + (n * 53) % 500));
    }
    let mut taken = std::collections::HashMap::new();
    for req in b.requests() {
        let n = command_number(&req.text()).expect("a numbered Command");
        *taken.entry(n).or_insert(0) += 1;
    }
    common::assert_commands_taken_once(&taken, &answered, &refused);
    assert!(taken.values().all(|&k| k == 1), "no Command taken twice");
    let m = r.metrics();
    eprintln!(
        "{} answered, {} refused (502), {} sent again after the server closed first",
        answered.len(),
        refused.len(),
        m.pool_stale
    );
}

#[test]
fn a_command_racing_a_close_after_a_spliced_upload_is_sent_again() {
    // The same race, on connections whose previous request was an upload large enough to
    // be spliced: a Command that meets the server's close before its TCP took any of it is
    // sent again on a new connection, as after a copied body (the check compares the
    // server's acknowledgements with the bytes handed to the socket, spliced ones
    // included). Commands are answered `Connection: close`, so each races a connection
    // that carried a spliced upload and nothing else.
    let b = ScriptedBackend::start(|req| {
        if req.path() == "/upload" {
            let pause = 150 + (req.conn * 37 + req.index * 11) % 500;
            Reply::ok("stored").then_after(Duration::from_micros(pause as u64), Ending::Drop)
        } else {
            Reply::bytes("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\ndone")
                .then(Ending::Close)
        }
    });
    // Read one buffer at a time, so that every upload's body beyond its first read is
    // spliced (a multishot receive may take some of it first, to be copied).
    let r = Router::start_with_workers(
        &format!(
            "default_backend = \"{}\"\n[health]\nenabled = false\n[circuit]\nenabled = false\n",
            b.addr
        ),
        "multishot = false",
    );
    let mut upload = b"POST /upload HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Type: application/octet-stream\r\nContent-Length: 200000\r\n\r\n".to_vec();
    upload.extend_from_slice(&[b'u'; 200_000]);
    let (mut answered, mut refused) = (Vec::new(), Vec::new());
    let mut c = Client::connect(r.addr);
    let mut n = 0u64;
    // Until one Command was sent again (`retries`: the only re-send a Command can get),
    // or long past the point where, measured, one always had been.
    while n < 4000 && (n < 300 || r.metrics().retries == 0) {
        let resp = c.roundtrip(&upload);
        assert!(matches!(resp.status, 200 | 502), "upload: {}", resp.status);
        if resp.header("connection") == Some("close") {
            c = Client::connect(r.addr);
        }
        std::thread::sleep(Duration::from_micros(150 + (n * 53) % 500));
        let resp = c.roundtrip(&command(&format!(r#"{{"user_id":"u","n":{n}}}"#)));
        match resp.status {
            200 => answered.push(n),
            502 => refused.push(n),
            other => panic!("Command {n}: {other} {}", resp.text()),
        }
        c = Client::connect(r.addr);
        n += 1;
    }
    let mut taken = std::collections::HashMap::new();
    for req in b.requests().iter().filter(|q| q.path() != "/upload") {
        let k = command_number(&req.text()).expect("a numbered Command");
        *taken.entry(k).or_insert(0) += 1;
    }
    common::assert_commands_taken_once(&taken, &answered, &refused);
    let m = r.metrics();
    assert!(m.spliced_bytes > 0, "the uploads were spliced");
    assert!(
        m.retries > 0,
        "no Command sent again in {n} races ({} refused)",
        refused.len()
    );
}

/// A backend whose answers carry `Keep-Alive: timeout=<secs>`.
fn backend_with_keep_alive_timeout(secs: u32) -> ScriptedBackend {
    ScriptedBackend::start(move |_| {
        Reply::bytes(
            format!("HTTP/1.1 200 OK\r\nKeep-Alive: timeout={secs}, max=100\r\nContent-Length: 2\r\n\r\nok")
                .as_bytes(),
        )
    })
}

/// Three Commands on one client connection, each answered 200 (`Keep-Alive` not relayed).
fn three_commands(r: &Router) {
    let mut c = Client::connect(r.addr);
    for n in 0..3 {
        let resp = c.roundtrip(&command(&format!(r#"{{"user_id":"u","n":{n}}}"#)));
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("keep-alive"), None, "hop-by-hop, not relayed");
    }
}

#[test]
fn a_connection_is_pooled_only_while_its_server_keeps_it() {
    // timeout=1: the server may close it within the margin of one second, so it is closed
    // at once, never raced.
    let short = backend_with_keep_alive_timeout(1);
    let r = route_to(&[short.addr], "");
    three_commands(&r);
    let reqs = short.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter().all(|q| q.index == 0),
        "each on a new connection: {:?}",
        reqs.iter().map(|q| (q.conn, q.index)).collect::<Vec<_>>()
    );
    // timeout=30: kept, and reused.
    let long = backend_with_keep_alive_timeout(30);
    let r = route_to(&[long.addr], "");
    three_commands(&r);
    let reqs = long.requests();
    let conn = reqs[0].conn;
    assert_eq!(
        reqs.iter().map(|q| (q.conn, q.index)).collect::<Vec<_>>(),
        [(conn, 0), (conn, 1), (conn, 2)],
        "one connection, reused"
    );
}

#[test]
fn a_servers_keep_alive_timeout_is_counted_from_its_answer_not_from_pooling() {
    // The server writes a 32 MiB answer with `Keep-Alive: timeout=2` into the socket
    // buffers and starts its clock; the client reads nothing for 1.3 s, so ringgate pools
    // the connection only then, with under a second of the server's two left: less than
    // the margin, so it is closed, not raced by the next Command.
    const BODY: usize = 32 << 20;
    let b = ScriptedBackend::start(|_| {
        let mut bytes =
            format!("HTTP/1.1 200 OK\r\nKeep-Alive: timeout=2\r\nContent-Length: {BODY}\r\n\r\n")
                .into_bytes();
        bytes.resize(bytes.len() + BODY, b'x');
        Reply::bytes(bytes)
    });
    let r = route_to(&[b.addr], "");
    let mut c = Client::connect(r.addr);
    c.send(&command(r#"{"user_id":"u","n":0}"#));
    // A slow client: the stimulus, not a wait for a condition.
    std::thread::sleep(Duration::from_millis(1300));
    let resp = c.read_response();
    assert_eq!((resp.status, resp.body.len()), (200, BODY));
    let resp = c.roundtrip(&command(r#"{"user_id":"u","n":1}"#));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let reqs = b.requests();
    assert_eq!(
        reqs.iter().map(|q| q.index).collect::<Vec<_>>(),
        [0, 0],
        "the second Command on a new connection"
    );
}

#[test]
fn a_buffered_query_is_resent_once_on_a_fresh_connection() {
    let b = ScriptedBackend::start(|req| {
        if req.index == 0 {
            Reply::ok("answer")
        } else {
            Reply::close()
        }
    });
    let r = route_to(&[b.addr], "");
    let mut c = Client::connect(r.addr);
    let query = b"GET /api/spot/user/data?user_id=u HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_eq!(c.roundtrip(query).status, 200);
    let resp = c.roundtrip(query);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, b"answer");
    let reqs = b.requests();
    assert_eq!(reqs.len(), 3, "first, dropped, re-sent");
    assert_eq!(
        (reqs[1].conn, reqs[1].index),
        (reqs[0].conn, 1),
        "dropped on the pooled connection"
    );
    assert_eq!(reqs[2].index, 0, "re-sent on a fresh connection");
    assert_ne!(reqs[2].conn, reqs[1].conn);
    assert_eq!(
        reqs[2].raw(),
        reqs[1].raw(),
        "the retry is the same request byte for byte"
    );
}

/// The stale pooled connection rule re-sends a Query outside the budget once per request
/// (README, Retries): a Query whose every attempt meets a reset is sent at most
/// `max_attempts` times plus that one. It went again for free after each counted retry
/// too, whenever the retry took a pooled connection.
#[test]
fn a_query_is_resent_for_a_stale_pooled_connection_once_per_request() {
    let backends: Vec<ScriptedBackend> = (0..3)
        .map(|_| {
            ScriptedBackend::start(|req| {
                if req.path() == "/warm" {
                    Reply::ok("warm")
                } else {
                    Reply::reset()
                }
            })
        })
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let r = route_to(
        &addrs,
        "[health]\nenabled = false\n[circuit]\nenabled = false\n\
         [retry]\nmax_attempts = 3\nbackoff_base_ms = 0\nbackoff_max_ms = 0\n",
    );
    // One pooled connection to each server.
    for _ in 0..3 {
        assert_eq!(get(r.addr, "/warm", "X-User-Id: u\r\n").status, 200);
    }
    assert!(backends.iter().all(|b| b.accepted() == 1));
    let resp = get(r.addr, "/q", "X-User-Id: u\r\n");
    assert_eq!(resp.status, 502, "{}", resp.text());
    let sent: usize = backends
        .iter()
        .map(|b| b.requests().iter().filter(|q| q.path() == "/q").count())
        .sum();
    assert_eq!(
        sent,
        4,
        "3 attempts and one free re-send for a stale connection (pool_stale {})",
        r.metrics().pool_stale
    );
}

/// A server that closes (FIN) part-way through its response head has not answered: as
/// after a reset at the same point, the Query goes to another server (README: upstream
/// closed/reset before answering). It was answered 502, never retried.
#[test]
fn a_query_whose_server_closes_mid_head_is_retried_elsewhere() {
    let cut = ScriptedBackend::start(|_| {
        Reply::bytes("HTTP/1.1 200 OK\r\nContent-Le").then(Ending::Close)
    });
    let good = ScriptedBackend::start(|_| Reply::ok("good"));
    let r = route_to(&[cut.addr, good.addr], "[health]\nenabled = false\n");
    let resp = get(r.addr, "/q", "X-User-Id: u\r\n");
    assert_eq!(
        cut.request_count(),
        1,
        "the first attempt went to the cut server"
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, b"good");
    assert_eq!(good.request_count(), 1);
}

#[test]
fn slow_upstream_gets_504_and_a_fresh_connection_next_time() {
    let b = ScriptedBackend::start(|req| {
        if req.path() == "/slow" {
            Reply::hang()
        } else {
            Reply::ok("fast")
        }
    });
    let r = route_to(&[b.addr], "[timeouts]\nupstream_response_ms = 300\n");
    let resp = get(r.addr, "/slow", "X-User-Id: u\r\n");
    assert_eq!(resp.status, 504);
    assert_eq!(get(r.addr, "/fast", "X-User-Id: u\r\n").body, b"fast");
    let reqs = b.requests();
    assert_eq!(reqs.len(), 2);
    assert_ne!(
        reqs[1].conn, reqs[0].conn,
        "the timed-out connection is not reused"
    );
}

#[test]
fn no_available_server_gives_503_with_retry_after() {
    let b = demo_backend("z");
    let r = route_to(&[b], "");
    r.set_drained(b, true);
    let resp = get(r.addr, "/x", "X-User-Id: u\r\n");
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("retry-after"), Some("1"));
    r.set_drained(b, false);
    assert_eq!(get(r.addr, "/x", "X-User-Id: u\r\n").status, 200);
}

#[test]
fn upstream_response_framing_errors_are_not_delivered() {
    let b = ScriptedBackend::start(|req| {
        match req.path() {
        "/conflict" => Reply::bytes(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        // Extra bytes after the body: the client must not see them on a later request.
        "/extra" => Reply::bytes(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
        ),
        _ => Reply::ok("clean"),
    }
    });
    let r = route_to(&[b.addr], "");
    let mut c = Client::connect(r.addr);
    assert_eq!(
        c.roundtrip(b"GET /conflict HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n")
            .status,
        502
    );
    let mut c = Client::connect(r.addr);
    assert_eq!(
        c.roundtrip(b"GET /extra HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n")
            .body,
        b"ok"
    );
    for _ in 0..3 {
        assert_eq!(
            c.roundtrip(b"GET /next HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n")
                .body,
            b"clean"
        );
    }
    c.expect_open_for(Duration::from_millis(20));
}

#[test]
fn a_reload_that_lowers_the_pool_bound_closes_the_surplus_at_once() {
    const N: usize = 4;
    // Each request is held until all N are in: N upstream connections, all pooled after.
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = arrived.clone();
    let b = ScriptedBackend::start(move |_| {
        use std::sync::atomic::Ordering;
        seen.fetch_add(1, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while seen.load(Ordering::SeqCst) < N && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Reply::ok("held")
    });
    let config = |max: usize| {
        let s = b.addr;
        format!("default_backend = \"z\"\n[partitions.z]\nservers = [\"{s}\"]\n[pool]\nmax_idle_per_backend = {max}\n")
    };
    let mut r = Router::start(&config(64));
    let addr = r.addr;
    let clients: Vec<_> = (0..N)
        .map(|_| std::thread::spawn(move || get(addr, "/held", "X-User-Id: u\r\n").status))
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    let ours = |b: &ScriptedBackend| {
        b.connections()
            .into_iter()
            .filter(|c| !c.requests.is_empty())
            .collect::<Vec<_>>()
    };
    assert_eq!(ours(&b).len(), N, "one upstream connection per request");
    wait_until("all are pooled", Duration::from_secs(5), || {
        r.metrics().pool_idle == N
    });
    r.reload(&config(1));
    // Well before `pool.idle_timeout_ms` (30 s).
    wait_until(
        "the backend sees the surplus closed",
        Duration::from_secs(5),
        || ours(&b).iter().filter(|c| c.ended).count() == N - 1,
    );
    assert_eq!(r.metrics().pool_idle, 1);
    assert_eq!(
        r.metrics().pool_open,
        1,
        "the closed ones are counted closed"
    );
    assert_eq!(get(r.addr, "/next", "X-User-Id: u\r\n").status, 200);
    assert_eq!(ours(&b).len(), N, "the one kept is reused");
}

#[test]
fn a_get_with_a_body_does_not_leave_its_upstream_connection_to_the_next_client() {
    a_body_the_backend_ignores_stays_off_the_next_clients_connection("GET");
}

/// The same for the other methods whose body a server may ignore (RFC 9110 gives a body
/// no meaning for any of them): only POST, PUT and PATCH are trusted to be read.
#[test]
fn a_delete_options_or_trace_with_a_body_does_not_leave_its_upstream_connection_to_the_next_client()
{
    for method in ["DELETE", "OPTIONS", "TRACE", "PROPFIND"] {
        a_body_the_backend_ignores_stays_off_the_next_clients_connection(method);
    }
}

/// An operator whose upstreams read DELETE bodies (an API that cancels with a JSON body)
/// lists the method in `forward.trusted_body_methods`: the connection is then pooled after
/// such a request, and the next one reuses it instead of paying a new connection.
#[test]
fn a_trusted_body_method_keeps_its_upstream_connection() {
    let b = ScriptedBackend::start(|_| Reply::ok("own"));
    let r = route_to(
        &[b.addr],
        "[forward]\ntrusted_body_methods = [\"DELETE\"]\n",
    );
    let mut c = Client::connect(r.addr);
    for (method, body) in [
        ("DELETE", r#"{"order_id":1}"#),
        ("DELETE", "x"),
        ("GET", ""),
    ] {
        let resp = c.roundtrip(
            format!(
                "{method} /orders HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert_eq!(
            (resp.status, resp.text()),
            (200, "own".to_string()),
            "{method}"
        );
    }
    assert_eq!(
        request_connections(&b),
        1,
        "one upstream connection carried all three"
    );
    // An OPTIONS with a body is still not trusted: its connection is not pooled.
    let resp = c.roundtrip(
        b"OPTIONS /orders HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Length: 1\r\n\r\nx",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(get(r.addr, "/next", "X-User-Id: u\r\n").status, 200);
    assert_eq!(
        request_connections(&b),
        2,
        "the OPTIONS's connection was not reused"
    );
}

fn a_body_the_backend_ignores_stays_off_the_next_clients_connection(method: &str) {
    // A backend that ignores the request's body reads it as the next request, and answers
    // that a moment later, on the connection the request came on.
    const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let b = ScriptedBackend::start(|req| match req.path() {
        "/smuggled" => Reply::ok("smuggled").delayed(Duration::from_millis(500)),
        "/with-body" => Reply::ok("first")
            .early(BodyRead::Never)
            .delayed(Duration::from_millis(20)),
        _ => Reply::ok("own"),
    });
    let r = route_to(&[b.addr], "");
    let mut c = Client::connect(r.addr);
    let resp = c.roundtrip(
        format!(
            "{method} /with-body HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
            SMUGGLED.len()
        )
        .as_bytes(),
    );
    assert_eq!(
        (resp.status, resp.text()),
        (200, "first".to_string()),
        "{method}"
    );
    let resp = get(r.addr, "/next", "X-User-Id: v\r\n");
    assert_eq!(
        (resp.status, resp.text()),
        (200, "own".to_string()),
        "the next client gets its own answer, after a {method} with a body"
    );
}

/// A backend whose answers wait until `release` is set: (backend, requests arrived,
/// release). Each answer says which server gave it.
fn held_backend(
    name: &'static str,
) -> (
    ScriptedBackend,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let arrived = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    let (seen, open) = (arrived.clone(), release.clone());
    let b = ScriptedBackend::start(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !open.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Reply::ok(name)
    });
    (b, arrived, release)
}

/// `n` GETs sent at once from threads of their own.
fn concurrent_gets(
    addr: SocketAddr,
    n: usize,
) -> Vec<std::thread::JoinHandle<common::client::Response>> {
    (0..n)
        .map(|_| std::thread::spawn(move || get(addr, "/held", "X-User-Id: u\r\n")))
        .collect()
}

/// Connections that carried a request (health checks connect too).
fn request_connections(b: &ScriptedBackend) -> usize {
    b.connections()
        .iter()
        .filter(|c| !c.requests.is_empty())
        .count()
}

fn is_limit_answer(r: &common::client::Response) -> bool {
    r.status == 503
        && r.header("Retry-After") == Some("1")
        && String::from_utf8_lossy(&r.body).contains("upstream connection limit reached")
}

/// `pool.max_connections_per_backend` bounds a worker's connections to a backend: a burst
/// beyond it is answered 503 at once instead of opening a connection per request; the
/// places come back as the connections close (the pool's idle timeout here), not only as
/// requests end.
#[test]
fn a_burst_opens_no_more_connections_than_the_per_backend_bound() {
    use std::sync::atomic::Ordering;
    let (b, arrived, release) = held_backend("a");
    let r = route_to(
        &[b.addr],
        "[pool]\nmax_connections_per_backend = 2\nidle_timeout_ms = 300\n",
    );
    let clients = concurrent_gets(r.addr, 5);
    wait_until("three refused", Duration::from_secs(5), || {
        r.metrics().connection_limited == 3
    });
    wait_until("two in", Duration::from_secs(5), || {
        arrived.load(Ordering::SeqCst) == 2
    });
    assert_eq!(r.metrics().pool_open, 2);
    release.store(true, Ordering::SeqCst);
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(
        answers.iter().filter(|a| a.status == 200).count(),
        2,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|a| is_limit_answer(a)).count(),
        3,
        "{answers:?}"
    );
    assert_eq!(request_connections(&b), 2, "no connection beyond the bound");
    assert_eq!(r.metrics().errors_of("connection_limit"), 3);
    assert_eq!(
        r.circuit_transitions(b.addr),
        (0, 0, 0),
        "not the server's failure"
    );
    // Both pooled, then closed by the idle timeout: the count follows.
    wait_until("the pooled ones time out", Duration::from_secs(5), || {
        let m = r.metrics();
        m.pool_open == 0 && m.pool_idle == 0
    });
    // The places are free again: two new connections, and no more.
    release.store(false, Ordering::SeqCst);
    arrived.store(0, Ordering::SeqCst);
    let clients = concurrent_gets(r.addr, 3);
    wait_until("one refused", Duration::from_secs(5), || {
        r.metrics().connection_limited == 4
    });
    wait_until("two in", Duration::from_secs(5), || {
        arrived.load(Ordering::SeqCst) == 2
    });
    release.store(true, Ordering::SeqCst);
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(
        answers.iter().filter(|a| a.status == 200).count(),
        2,
        "{answers:?}"
    );
    assert_eq!(request_connections(&b), 4);
}

/// A server at its bound is skipped like one that refused the connect, but its breaker
/// hears nothing: the request goes to the next server of its list.
#[test]
fn a_server_at_its_connection_bound_fails_over_to_the_next() {
    use std::sync::atomic::Ordering;
    let (a, a_arrived, a_release) = held_backend("a");
    let (b, b_arrived, b_release) = held_backend("b");
    let r = route_to(
        &[a.addr, b.addr],
        "[pool]\nmax_connections_per_backend = 2\n[circuit]\nconsecutive_failures = 1\n",
    );
    let clients = concurrent_gets(r.addr, 5);
    wait_until("four in, one refused", Duration::from_secs(5), || {
        a_arrived.load(Ordering::SeqCst) == 2
            && b_arrived.load(Ordering::SeqCst) == 2
            && r.metrics().errors_of("connection_limit") == 1
    });
    a_release.store(true, Ordering::SeqCst);
    b_release.store(true, Ordering::SeqCst);
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let from = |zone: &str| {
        answers
            .iter()
            .filter(|x| x.status == 200 && x.body == zone.as_bytes())
            .count()
    };
    assert_eq!((from("a"), from("b")), (2, 2), "{answers:?}");
    assert_eq!(answers.iter().filter(|x| is_limit_answer(x)).count(), 1);
    assert_eq!((request_connections(&a), request_connections(&b)), (2, 2));
    assert!(r.metrics().failovers >= 1);
    assert_eq!(r.circuit_transitions(a.addr), (0, 0, 0));
    assert_eq!(r.circuit_transitions(b.addr), (0, 0, 0));
    assert!(r.backend_available(a.addr) && r.backend_available(b.addr));
}

/// Connections that close on an error or at the server's word give their place back:
/// with a bound of 1, request after request still gets through.
#[test]
fn connections_closed_by_errors_give_their_place_back() {
    let b = ScriptedBackend::start(|req| match req.path() {
        "/reset" => Reply::reset(),
        "/close" => Reply::bytes(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".as_slice(),
        )
        .then(Ending::Close),
        "/early-close" => Reply::close(),
        _ => Reply::ok("ok"),
    });
    let r = route_to(
        &[b.addr],
        "[pool]\nmax_connections_per_backend = 1\n[retry]\nmax_attempts = 1\n",
    );
    for path in ["/close", "/reset", "/early-close", "/close", "/reset"] {
        let mut c = Client::connect(r.addr);
        let body = r#"{"user_id":"u"}"#;
        let resp = c.roundtrip(format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
        assert!(!is_limit_answer(&resp), "{path}: {resp:?}");
        wait_until("its connection closed", Duration::from_secs(5), || {
            r.metrics().pool_open == 0
        });
    }
    assert_eq!(get(r.addr, "/ok", "X-User-Id: u\r\n").status, 200);
    assert_eq!(r.metrics().pool_open, 1, "pooled");
    assert_eq!(r.metrics().connection_limited, 0);
}
