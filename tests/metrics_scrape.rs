//! What a `/metrics` scrape costs the worker that answers it.
//!
//! A worker answers a scrape between requests, so whatever it does then stalls its
//! connections. It used to clone both of its HDR histograms (~440 kB) per scrape; now it
//! swaps them with the empty spares the request brings (O(1)) and copies only counters.
//! A counting allocator checks that no histogram-sized allocation happens on the worker's
//! side; `scrape_stall_report` (ignored; run with `--release -- --ignored --nocapture`)
//! prints the time per answer with hot and with evicted caches.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringgate::config::Config;
use ringgate::metrics::scrape::Scraper;
use ringgate::metrics::{Outcome, WorkerMetrics};
use ringgate::route::router::{Class, RoutingTable};
use ringgate::upstream::backend::BackendRegistry;

struct Counting;

static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates to the system allocator; only adds a relaxed counter increment.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A worker's metrics for a two-partition table, with `n` requests recorded.
fn busy_worker(n: u64) -> (RoutingTable, WorkerMetrics) {
    let config = Config::parse(
        "[partitions.a]\nservers=[\"127.0.0.1:1\",\"127.0.0.1:2\"]\n[partitions.b]\nservers=[\"127.0.0.1:3\"]\n",
        Path::new("t"),
    )
    .unwrap();
    let table = RoutingTable::build(&config, &mut BackendRegistry::new(), 1);
    let m = WorkerMetrics::new(&table);
    record(&m, &table, n);
    (table, m)
}

/// Record `n` requests with latencies spread from 0.5 µs to 50 ms.
fn record(m: &WorkerMetrics, table: &RoutingTable, n: u64) {
    let mut ns = 1_000u64;
    for i in 0..n {
        ns = (ns * 7 + 13) % 50_000_000 + 500;
        let o = Outcome {
            class: Some(if i % 2 == 0 {
                Class::Query
            } else {
                Class::Command
            }),
            partition: Some((i % 2) as u16),
            backend: Some((i % 3) as u16),
            status: Some(200),
            error: None,
        };
        m.record(&o, table, Duration::from_nanos(ns));
    }
}

/// One scrape round against `m`; returns (time spent answering on the "worker", bytes it
/// allocated).
fn scrape_once(scraper: &mut Scraper, table: &RoutingTable, m: &WorkerMetrics) -> (Duration, u64) {
    let mut cost = (Duration::ZERO, 0);
    let snaps = scraper.collect(
        1,
        |_, request| {
            let bytes = BYTES.load(Ordering::Relaxed);
            let started = Instant::now();
            m.answer(request, 0, table, 0, Vec::new());
            cost = (started.elapsed(), BYTES.load(Ordering::Relaxed) - bytes);
            true
        },
        Duration::from_secs(1),
    );
    assert_eq!(snaps.len(), 1);
    cost
}

#[test]
fn answering_a_scrape_allocates_no_histogram() {
    let (table, m) = busy_worker(10_000);
    let mut scraper = Scraper::new();
    for round in 0..3 {
        record(&m, &table, 100);
        let (_, bytes) = scrape_once(&mut scraper, &table, &m);
        // Counters and labels only: a few hundred bytes; one histogram alone is ~220 kB.
        assert!(bytes < 16 * 1024, "round {round}: {bytes} bytes allocated");
    }
    // And nothing recorded was lost or counted twice.
    let recorded = 10_000 + 3 * 100;
    let totals = scraper.totals();
    assert_eq!(totals[0].len() + totals[1].len(), recorded);
}

#[test]
#[ignore = "timing report; run with --release -- --ignored --nocapture"]
fn scrape_stall_report() {
    let (table, m) = busy_worker(200_000);
    let mut scraper = Scraper::new();
    for cold in [false, true] {
        let runs = 200;
        let mut times = Vec::with_capacity(runs);
        let mut bytes = 0;
        let mut evict = vec![0u8; 64 << 20];
        for r in 0..runs {
            record(&m, &table, 1_000);
            if cold {
                // Evict the caches, as seconds of traffic between two scrapes would.
                for (i, b) in evict.iter_mut().enumerate().step_by(64) {
                    *b = b.wrapping_add((i + r) as u8);
                }
            }
            let (t, b) = scrape_once(&mut scraper, &table, &m);
            times.push(t);
            bytes = b;
        }
        std::hint::black_box(&evict);
        times.sort();
        println!(
            "worker answer ({}): p50 {:?} p90 {:?} p99 {:?} max {:?}, {bytes} bytes allocated per scrape",
            if cold { "cold caches" } else { "hot loop" },
            times[runs / 2],
            times[runs * 9 / 10],
            times[runs * 99 / 100],
            times[runs - 1]
        );
    }
}
