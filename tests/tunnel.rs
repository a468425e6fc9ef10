//! Tunnels after `101 Switching Protocols`: a half-close is passed on, a tunnel ends when
//! either side is done (the other gets a short grace), after the idle timeout, and at a
//! drain's deadline.

mod common;

use std::time::{Duration, Instant};

use common::backend::{Ending, Reply, ScriptedBackend};
use common::client::Client;
use common::router::Router;

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";

/// An upstream that switches and then ends as `after` says.
fn switching(after: Ending) -> ScriptedBackend {
    ScriptedBackend::start(move |_| {
        Reply::bytes(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        )
        .then(after)
    })
}

fn router(b: &ScriptedBackend, idle_ms: u64) -> Router {
    Router::start(&format!(
        "default_backend = \"{0}\"\n[partitions.z]\nservers = [\"{0}\"]\n[health]\nenabled = false\n[timeouts]\ntunnel_idle_ms = {idle_ms}\n",
        b.addr
    ))
}

fn open_tunnel(r: &Router) -> Client {
    let mut c = Client::connect(r.addr);
    c.send(UPGRADE);
    assert_eq!(c.read_response().status, 101);
    c
}

#[test]
fn a_half_close_is_passed_on_and_both_closes_end_the_tunnel() {
    let b = switching(Ending::Echo);
    let r = router(&b, 60_000);
    let mut c = open_tunnel(&r);
    c.send(b"ping");
    assert_eq!(c.read_raw(4), b"ping");
    // The client is done sending: the upstream sees the FIN (and closes), so the client
    // gets a clean close, with the echo of everything it sent.
    c.send(b"last");
    c.finish_sending();
    assert_eq!(c.read_raw(4), b"last");
    c.expect_fin();
}

#[test]
fn when_one_side_is_done_the_other_gets_a_grace_then_the_tunnel_ends() {
    // The upstream never reads again and never closes: after the client's FIN, the
    // tunnel ends within the grace (here the idle timeout, 300 ms, is shorter than 5 s).
    let b = switching(Ending::Hang);
    let r = router(&b, 300);
    let mut c = open_tunnel(&r);
    let started = Instant::now();
    c.finish_sending();
    c.expect_closed();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_idle_tunnel_ends_after_the_idle_timeout() {
    let b = switching(Ending::Echo);
    let r = router(&b, 300);
    let mut c = open_tunnel(&r);
    c.send(b"x");
    assert_eq!(c.read_raw(1), b"x");
    let started = Instant::now();
    c.expect_fin();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[test]
fn a_drain_ends_tunnels_at_its_deadline() {
    let b = switching(Ending::Echo);
    let mut r = router(&b, 60_000);
    let mut c = open_tunnel(&r);
    c.send(b"x");
    assert_eq!(c.read_raw(1), b"x");
    let started = Instant::now();
    r.drain();
    c.expect_closed();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
