//! Upstream behaviour over real sockets: failover, pooled connections that died while
//! idle, the never-resend-a-Command rule, timeouts, no healthy server.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

fn route_to(servers: &[std::net::SocketAddr], extra: &str) -> Router {
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
    let alive = backend("alive");
    let r = route_to(&[dead_addr(), alive], "");
    let mut c = Conn::open(r.addr);
    for i in 0..6 {
        let resp = c.roundtrip(&command(&format!(r#"{{"user_id":"u","n":{i}}}"#)));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.zone(), "alive");
    }
}

#[test]
fn pooled_connection_closed_while_idle_is_never_used() {
    // Answers with a keep-alive response, then closes 50 ms later without saying so.
    let (b, count) = scripted_backend(|_, _| {
        Action::RespondThenClose(ok_response("done"), Duration::from_millis(50))
    });
    let r = route_to(&[b], "");
    let mut c = Conn::open(r.addr);
    for i in 0..5 {
        let resp = c.roundtrip(&command(&format!(r#"{{"user_id":"u","n":{i}}}"#)));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        5,
        "every Command reached the backend exactly once"
    );
}

#[test]
fn a_command_that_reached_the_upstream_is_never_resent() {
    // The second request on every backend connection is read, then the connection closes
    // without an answer.
    let (b, count) = scripted_backend(|i, _| {
        if i == 0 {
            Action::Respond(ok_response("first"))
        } else {
            Action::Close
        }
    });
    let r = route_to(&[b], "");
    let mut c = Conn::open(r.addr);
    assert_eq!(
        c.roundtrip(&command(r#"{"user_id":"u","n":1}"#)).status,
        200
    );
    let before = count.load(Ordering::SeqCst);
    let resp = c.roundtrip(&command(r#"{"user_id":"u","n":2}"#));
    assert_eq!(resp.status, 502, "{}", resp.text());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        count.load(Ordering::SeqCst),
        before + 1,
        "the Command was not sent twice"
    );
}

#[test]
fn a_buffered_query_is_resent_once_on_a_fresh_connection() {
    let (b, count) = scripted_backend(|i, _| {
        if i == 0 {
            Action::Respond(ok_response("answer"))
        } else {
            Action::Close
        }
    });
    let r = route_to(&[b], "");
    let mut c = Conn::open(r.addr);
    assert_eq!(
        c.roundtrip(b"GET /api/spot/user/data?user_id=u HTTP/1.1\r\nHost: t\r\n\r\n")
            .status,
        200
    );
    let resp = c.roundtrip(b"GET /api/spot/user/data?user_id=u HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, b"answer");
    assert_eq!(count.load(Ordering::SeqCst), 3, "first, dropped, re-sent");
}

#[test]
fn slow_upstream_gets_504_and_a_fresh_connection_next_time() {
    let (b, _) = scripted_backend(|_, req| {
        if req.contains("/slow") {
            Action::Hang
        } else {
            Action::Respond(ok_response("fast"))
        }
    });
    let r = route_to(&[b], "[timeouts]\nupstream_response_ms = 300\n");
    let resp = get(r.addr, "/slow", "X-User-Id: u\r\n");
    assert_eq!(resp.status, 504);
    assert_eq!(get(r.addr, "/fast", "X-User-Id: u\r\n").body, b"fast");
}

#[test]
fn no_available_server_gives_503_with_retry_after() {
    let b = backend("z");
    let mut r = route_to(&[b], "");
    for backend in r.server().table().backends.iter() {
        backend.set_drained(true);
    }
    let resp = get(r.addr, "/x", "X-User-Id: u\r\n");
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("retry-after"), Some("1"));
    for backend in r.server().table().backends.iter() {
        backend.set_drained(false);
    }
    assert_eq!(get(r.addr, "/x", "X-User-Id: u\r\n").status, 200);
}

#[test]
fn upstream_response_framing_errors_are_not_delivered() {
    let (b, _) = scripted_backend(|_, req| {
        if req.contains("/conflict") {
            Action::Respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec())
        } else if req.contains("/extra") {
            // Extra bytes after the body: the client must not see them on a later request.
            Action::Respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled".to_vec())
        } else {
            Action::Respond(ok_response("clean"))
        }
    });
    let r = route_to(&[b], "");
    let mut c = Conn::open(r.addr);
    assert_eq!(
        c.roundtrip(b"GET /conflict HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n")
            .status,
        502
    );
    let mut c = Conn::open(r.addr);
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
}
