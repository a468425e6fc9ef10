//! Every io_uring setup, with and without busy-poll, a spin window or multishot receives,
//! serves the same traffic: small requests, pipelining, and multi-megabyte bodies both
//! ways (splice and copy paths); and their timers fire and cross-thread wake-ups arrive
//! (an idle connection is closed, a reload reaches the worker) — what a worker that never
//! sleeps, or sleeps less, or receives ahead, could miss.

mod common;

use common::client::Client;
use common::router::{demo_backend, exchange_large_bodies, large_upload, Router};

fn serves_the_same_traffic(workers_extra: &str, expect_setup: &str) {
    // Shown with a failure: which setup it was.
    println!("setup: {}", workers_extra.replace('\n', ", "));
    let b = demo_backend("zone_1");
    let config = format!(
        "default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n[health]\nenabled = false\n[timeouts]\nclient_idle_ms = 200\n"
    );
    let mut r = Router::start_with_workers(&config, workers_extra);
    if common::router::test_driver() != "epoll" {
        // The kernel took the setup asked for (no silent fallback to a plain ring).
        assert_eq!(r.drivers(), vec![format!("IoUring({expect_setup})")]);
        if workers_extra.contains("multishot = true") {
            assert_eq!(r.multishot(), vec![true], "{workers_extra}");
        }
    }
    // Built before the connection exists: its idle timeout is short.
    large_upload();
    let mut c = Client::connect(r.addr);
    for i in 0..5 {
        let resp = c.roundtrip(
            format!("GET /r/{i} HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n").as_bytes(),
        );
        assert_eq!(
            resp.json_field("path").unwrap(),
            format!("/r/{i}"),
            "{workers_extra}"
        );
    }
    // Pipelined.
    c.send(b"GET /p/1 HTTP/1.1\r\nHost: t\r\n\r\nGET /p/2 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response().json_field("path").unwrap(), "/p/1");
    assert_eq!(c.read_response().json_field("path").unwrap(), "/p/2");
    exchange_large_bodies(&mut c);
    // A timer: the idle keep-alive connection is closed cleanly.
    c.expect_fin();
    // A cross-thread wake-up: the reload returns once the worker has the new table, and a
    // new route (the default partition's servers moved to a second backend) is used.
    let b2 = demo_backend("zone_2");
    r.reload(&config.replace(
        &format!("servers = [\"{b}\"]"),
        &format!("servers = [\"{b2}\"]"),
    ));
    let resp = Client::connect(r.addr)
        .roundtrip(b"GET /after HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n");
    assert_eq!(resp.zone(), "zone_2", "{workers_extra}");
}

#[test]
fn every_ring_setup_busy_poll_spin_window_and_multishot_serve_the_same_traffic() {
    let setups = [
        ("defer_taskrun", "DeferTaskrun"),
        ("coop_taskrun", "CoopTaskrun"),
        ("plain", "Plain"),
        ("sqpoll", "Sqpoll"),
    ];
    for (ring, setup) in setups {
        for mode in [
            "busy_poll = false",
            "busy_poll = true",
            "spin_us = 200",
            "multishot = true",
        ] {
            serves_the_same_traffic(&format!("ring = \"{ring}\"\n{mode}"), setup);
        }
    }
}
