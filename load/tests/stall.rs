//! Coordinated omission: the backend freezes once for 1 s in the middle of an open-loop run at
//! 200 req/s. A wrk2-style (corrected) measurement must charge the stall to every request
//! that *should* have been sent during it — about rate × stall / 2 = 100 of them wait more than
//! 500 ms — while the uncorrected view (from actual send time) sees only the few requests that
//! were in flight on the 4 connections when it began.

mod common;

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::{ok_response, spawn_backend, Reply};
use ringgate_load::config::RunLength;
use ringgate_load::LoadConfig;

const RATE: f64 = 200.0;
const STALL: Duration = Duration::from_secs(1);
const CONNECTIONS: usize = 4;

#[test]
fn a_stall_shows_in_corrected_latency_and_not_in_uncorrected() {
    // Request #300 arrives ~1.5 s into the run (1 s into the measured part) and freezes every
    // response until 1 s later.
    let stall_until: Mutex<Option<Instant>> = Mutex::new(None);
    let backend = spawn_backend(move |index| {
        let until = {
            let mut slot = stall_until.lock().unwrap();
            if index == 300 {
                *slot = Some(Instant::now() + STALL);
            }
            *slot
        };
        if let Some(until) = until {
            let now = Instant::now();
            if now < until {
                thread::sleep(until - now);
            }
        }
        Reply::Send(ok_response())
    });
    let mut config = LoadConfig::new(backend.addr);
    config.rate_per_s = Some(RATE);
    config.connections = CONNECTIONS;
    config.warmup = Duration::from_millis(500);
    config.length = RunLength::Duration(Duration::from_secs(3));
    let outcome = ringgate_load::run(&config).unwrap();
    let report = outcome.report();
    println!("{}", report.render_table());

    let half_second_ns = 500_000_000;
    let slow_corrected = outcome
        .stats
        .corrected
        .count_between(half_second_ns, u64::MAX);
    let slow_uncorrected = outcome
        .stats
        .uncorrected
        .count_between(half_second_ns, u64::MAX);
    println!("> 500 ms: corrected {slow_corrected}, uncorrected {slow_uncorrected}");

    // ~100 expected (requests intended in the first half of the stall).
    assert!(
        (60..=160).contains(&slow_corrected),
        "corrected count above 500 ms: {slow_corrected}"
    );
    // At most one in-flight request per connection saw the stall from its send time.
    assert!(
        (1..=CONNECTIONS as u64).contains(&slow_uncorrected),
        "uncorrected count above 500 ms: {slow_uncorrected}"
    );
    let p = &report.latency_us;
    assert!(p.max >= 950_000.0, "corrected max {} us", p.max);
    assert!(p.p99 >= 800_000.0, "corrected p99 {} us", p.p99);
    let u = report.uncorrected_latency_us.as_ref().unwrap();
    assert!(u.p99 < 100_000.0, "uncorrected p99 {} us", u.p99);
    // Every scheduled request was still sent and answered: the backlog drained after the stall.
    assert!((599..=601).contains(&report.requests.sent));
    assert_eq!(report.requests.completed, report.requests.sent);
    assert_eq!(report.requests.errors + report.requests.unsent, 0);
}
