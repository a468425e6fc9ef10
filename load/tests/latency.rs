//! Agreement with wrk2-style expectations: against a backend that takes 20 ms per request,
//! the reported latency must be ~20 ms (never less, not much more), in open and closed loop,
//! and the achieved rate must match what was asked (open) or what the backend allows
//! (closed: connections / 20 ms).

mod common;

use std::thread;
use std::time::Duration;

use common::{ok_response, spawn_backend, Reply};
use ringgate_load::config::RunLength;
use ringgate_load::LoadConfig;

const SERVICE: Duration = Duration::from_millis(20);

/// Upper bound of the p99, in ms. The p99 of these few hundred requests is their third or
/// fourth worst: one stall of the host of 20 ms or more (seen on shared 2-core VMs while a
/// test suite runs) moves it past 40 ms with the measurement still right. The bound still
/// catches a measurement that counts the service time twice; the p50 and min checks are
/// the tight ones.
const P99_MAX_MS: f64 = 60.0;

/// Upper bound of the p50, in ms: the service time plus the backend thread's oversleep and
/// the load generator's own delay, which a host running the rest of the suite stretches
/// (a p50 over 30 ms was seen once, with a profiler running too). A measurement that
/// counted the service time twice would report 40 ms.
const P50_MAX_MS: f64 = 35.0;

fn ms(us: f64) -> f64 {
    us / 1000.0
}

#[test]
fn open_loop_reports_the_backend_service_time() {
    let backend = spawn_backend(|_| {
        thread::sleep(SERVICE);
        Reply::Send(ok_response())
    });
    let mut config = LoadConfig::new(backend.addr);
    config.rate_per_s = Some(100.0);
    config.connections = 8; // each connection could carry 50 req/s: far from saturated
    config.threads = 2;
    config.warmup = Duration::from_millis(500);
    config.length = RunLength::Duration(Duration::from_secs(3));
    let outcome = ringgate_load::run(&config).unwrap();
    let report = outcome.report();
    println!("{}", report.render_table());

    let p = &report.latency_us;
    assert!(
        (20.0..P50_MAX_MS).contains(&ms(p.p50)),
        "p50 {} ms",
        ms(p.p50)
    );
    assert!(
        (20.0..P99_MAX_MS).contains(&ms(p.p99)),
        "p99 {} ms",
        ms(p.p99)
    );
    assert!(
        ms(p.min) >= 20.0,
        "min {} ms is below the service time",
        ms(p.min)
    );
    // 100 req/s for 3 s, on a fixed schedule: 300 measured requests, give or take one.
    assert!(
        (299..=301).contains(&report.requests.sent),
        "{:?}",
        report.requests
    );
    assert_eq!(report.requests.completed, report.requests.sent);
    assert_eq!(report.requests.ok_2xx, report.requests.sent);
    assert_eq!(report.requests.errors + report.requests.non_2xx, 0);
    assert_eq!(report.requests.unsent + report.requests.unfinished, 0);
    assert!((95.0..=101.0).contains(&report.rps), "rps {}", report.rps);
    // Both classes were exercised and measured.
    assert!(report.classes["command"].latency_us.count > 40);
    assert!(report.classes["query"].latency_us.count > 150);
    // Nothing stalled, so corrected and uncorrected agree closely.
    let uncorrected = report.uncorrected_latency_us.as_ref().unwrap();
    assert!((ms(uncorrected.p50) - ms(p.p50)).abs() < 2.0);
}

#[test]
fn closed_loop_is_bounded_by_connections_over_service_time() {
    let backend = spawn_backend(|_| {
        thread::sleep(SERVICE);
        Reply::Send(ok_response())
    });
    let mut config = LoadConfig::new(backend.addr);
    config.connections = 4;
    config.warmup = Duration::from_millis(300);
    config.length = RunLength::Duration(Duration::from_secs(2));
    let outcome = ringgate_load::run(&config).unwrap();
    let report = outcome.report();
    println!("{}", report.render_table());

    let p = &report.latency_us;
    assert!(
        (20.0..P50_MAX_MS).contains(&ms(p.p50)),
        "p50 {} ms",
        ms(p.p50)
    );
    assert!(
        (20.0..P99_MAX_MS).contains(&ms(p.p99)),
        "p99 {} ms",
        ms(p.p99)
    );
    // 4 connections × (1 / 20 ms) = 200 req/s at most.
    assert!((130.0..=201.0).contains(&report.rps), "rps {}", report.rps);
    assert!(report.uncorrected_latency_us.is_none());
    assert_eq!(report.requests.errors + report.requests.non_2xx, 0);
    assert_eq!(report.requests.completed, report.requests.sent);
}
