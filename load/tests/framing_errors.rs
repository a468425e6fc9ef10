//! Errors and non-2xx responses are counted separately, by kind and by status, against a
//! backend that rotates through eight behaviours; plus pipelining and `--new-conn-ratio`.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{ok_response, spawn_backend, status_response, Reply};
use ringgate_load::config::RunLength;
use ringgate_load::LoadConfig;

#[test]
fn errors_and_statuses_are_counted_apart() {
    let backend = spawn_backend(|index| match index % 8 {
        0 => Reply::Send(ok_response()),
        1 => Reply::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec(),
        ),
        2 => Reply::Send(status_response(404)),
        3 => Reply::Send(status_response(503)),
        4 => Reply::Send(b"HTTP/1.1 abc garbage\r\n\r\n".to_vec()), // parse error
        5 => Reply::SendAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec()), // reset
        6 => Reply::SendAndClose(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ),
        _ => Reply::HangThenClose(Duration::from_secs(1)), // timeout
    });
    let mut config = LoadConfig::new(backend.addr);
    config.connections = 1;
    config.warmup = Duration::ZERO;
    config.request_timeout = Duration::from_millis(300);
    config.length = RunLength::Requests(64);
    let outcome = ringgate_load::run(&config).unwrap();
    let report = outcome.report();
    println!("{}", report.render_table());

    let r = &report.requests;
    assert_eq!(r.sent, 64);
    assert_eq!(r.completed, 40);
    assert_eq!(r.ok_2xx, 24);
    assert_eq!(r.non_2xx, 16);
    assert_eq!(report.non_2xx.get("404"), Some(&8));
    assert_eq!(report.non_2xx.get("503"), Some(&8));
    assert_eq!(report.errors["parse"], 8);
    assert_eq!(report.errors["reset"], 8);
    assert_eq!(report.errors["timeout"], 8);
    assert_eq!(report.errors["connect"], 0);
    assert_eq!(r.errors, 24);
    assert!(report.has_failures());
    // Only answered requests are in the histogram, and none of them waited for a timeout.
    assert_eq!(report.latency_us.count, 40);
    assert!(report.latency_us.max < 250_000.0);
    // Every close (parse, reset, Connection: close, timeout) was followed by a reconnect;
    // the one after the last timeout may still be connecting when the run ends.
    assert!(
        (32..=33).contains(&report.connections_opened),
        "{}",
        report.connections_opened
    );
    assert!(backend.connections.load(Ordering::SeqCst) >= report.connections_opened);
}

#[test]
fn connect_failures_are_errors_not_silence() {
    // Bind then drop: nothing listens on this port.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = LoadConfig::new(addr);
    config.connections = 2;
    config.warmup = Duration::ZERO;
    config.length = RunLength::Requests(10);
    let outcome = ringgate_load::run(&config).unwrap();
    let report = outcome.report();
    assert_eq!(report.requests.sent, 10);
    assert_eq!(report.errors["connect"], 10);
    assert_eq!(report.requests.completed, 0);
    assert!(report.connect_failures >= 5);
}

#[test]
fn pipelined_responses_match_requests_in_order() {
    let backend = spawn_backend(|index| {
        // Alternate framings so a mismatch in pipelined order would show up as a status count.
        if index % 2 == 0 {
            Reply::Send(ok_response())
        } else {
            Reply::Send(
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                    .to_vec(),
            )
        }
    });
    let mut config = LoadConfig::new(backend.addr);
    config.connections = 2;
    config.pipeline_depth = 8;
    config.warmup = Duration::ZERO;
    config.length = RunLength::Requests(4000);
    let outcome = ringgate_load::run(&config).unwrap();
    let report = outcome.report();
    assert_eq!(report.requests.sent, 4000);
    assert_eq!(report.requests.completed, 4000);
    assert_eq!(report.requests.ok_2xx, 4000);
    assert_eq!(report.requests.errors, 0);
    assert_eq!(backend.requests.load(Ordering::SeqCst), 4000);
    assert_eq!(report.connections_opened, 2);
}

#[test]
fn new_conn_ratio_opens_fresh_connections() {
    let backend = spawn_backend(|_| Reply::Send(ok_response()));
    let mut config = LoadConfig::new(backend.addr);
    config.connections = 2;
    config.new_conn_ratio = 0.5;
    config.warmup = Duration::ZERO;
    config.length = RunLength::Requests(400);
    let outcome = ringgate_load::run(&config).unwrap();
    let report = outcome.report();
    assert_eq!(report.requests.completed, 400);
    assert_eq!(report.requests.errors, 0);
    // Half of 400, give or take; every one is a real new TCP connection at the backend.
    assert!(
        (150..=250).contains(&report.connections_opened),
        "{}",
        report.connections_opened
    );
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        report.connections_opened
    );
}
