//! `workers.spin_us`: after a request arrives the worker polls instead of sleeping for
//! the window, so a connection sending requests back to back (each well inside the
//! window) never finds the worker asleep; without a window it sleeps between them. The
//! worker thread's voluntary context switches (`/proc/self/task/TID/status`) count its
//! sleeps. Its own test binary, so the only `ringgate-w*` threads are this test's.

mod common;

use std::collections::BTreeSet;

use common::client::Client;
use common::router::{demo_backend, test_driver, Router};

const REQUESTS: u64 = 100;

/// Thread ids of this process's worker threads.
fn worker_tids() -> BTreeSet<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| {
            let tid = e.ok()?.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
            comm.starts_with("ringgate-w").then_some(tid)
        })
        .collect()
}

fn voluntary_switches(tid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .expect("voluntary_ctxt_switches")
        .trim()
        .parse()
        .unwrap()
}

/// Start a router with `workers_extra`, send REQUESTS requests one after another on one
/// connection, and return how often its worker slept meanwhile.
fn sleeps_over_back_to_back_requests(workers_extra: &str) -> u64 {
    let b = demo_backend("zone_1");
    let config = format!(
        "default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n[health]\nenabled = false\n"
    );
    let before = worker_tids();
    let r = Router::start_with_workers(&config, workers_extra);
    let ours: Vec<String> = worker_tids().difference(&before).cloned().collect();
    assert_eq!(ours.len(), 1, "one new worker thread: {ours:?}");
    let mut c = Client::connect(r.addr);
    // The connection and its pooled upstream are set up before counting.
    c.roundtrip(b"GET /warm HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n");
    let start = voluntary_switches(&ours[0]);
    for i in 0..REQUESTS {
        let resp = c.roundtrip(
            format!("GET /r/{i} HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n").as_bytes(),
        );
        assert_eq!(resp.json_field("path").unwrap(), format!("/r/{i}"));
    }
    voluntary_switches(&ours[0]) - start
}

#[test]
fn a_spin_window_keeps_the_worker_awake_between_requests() {
    let without = sleeps_over_back_to_back_requests("");
    let with = sleeps_over_back_to_back_requests("spin_us = 10000");
    eprintln!("worker sleeps over {REQUESTS} requests: {without} without a window, {with} with");
    // Without a window the worker waits for the next request (and often for the
    // backend's answer) asleep: usually once or twice per request, but a slow host that
    // preempts the worker lets work pile up while it runs (15 of 100 seen in CI). More
    // than the window's allowance is what makes the comparison below mean something.
    assert!(without > REQUESTS / 10, "{without} sleeps without a window");
    if test_driver() == "epoll" {
        // The key is accepted and ignored there (the worker logs so): it still sleeps.
        assert!(with > REQUESTS / 10, "{with} sleeps on epoll");
        return;
    }
    // Each request arrives well inside the 10 ms window the previous one opened; a few
    // sleeps are left for host stalls longer than that.
    assert!(with <= REQUESTS / 10, "{with} sleeps with a 10 ms window");
}
