//! Prometheus text exposition (format 0.0.4): counters summed over the per-worker
//! snapshots of one scrape, latency from the cumulative histograms of the
//! [`Scraper`](super::scrape::Scraper). Runs on the admin thread, never on a worker.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;

use super::names::*;
use super::{LatencyHistograms, MetricsSnapshot};
use crate::error::ERROR_KIND_LABELS;
use crate::route::router::RoutingTable;
use crate::upstream::backend::{Circuit, Health};

/// Histogram bucket upper bounds, in seconds.
const BUCKETS_S: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Quantiles exported from the merged HDR histograms.
const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 0.9999];

/// A plain counter: name, help text, and how to read it from a snapshot.
type CounterSpec = (&'static str, &'static str, fn(&MetricsSnapshot) -> u64);

/// Process-level figures the exporter adds to the workers' own.
#[derive(Clone, Debug, Default)]
pub struct ProcessStats {
    /// Successful reloads.
    pub reloads_ok: u64,
    /// Refused reloads.
    pub reloads_failed: u64,
    /// Workers running.
    pub workers: usize,
    /// Requests admitted without a rate-limit slot (not limited).
    pub rate_limit_untracked: u64,
    /// Commands let through without an in-flight slot (not ordered).
    pub migration_untracked: u64,
}

/// Escape a label value.
fn label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Render everything: counters from `snapshots`, request latency from `latency` (the
/// cumulative totals, per class).
pub fn render(
    snapshots: &[MetricsSnapshot],
    latency: &LatencyHistograms,
    table: &RoutingTable,
    process: &ProcessStats,
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    render_requests(&mut out, snapshots);
    render_errors(&mut out, snapshots);
    render_counters(&mut out, snapshots);
    super::users::render(&mut out, snapshots);
    render_connections(&mut out, snapshots);
    render_backends(&mut out, table);
    render_process(&mut out, table, process);
    render_latency(&mut out, latency);
    out
}

/// Requests by class, partition, backend and status class, summed over workers.
fn render_requests(out: &mut String, snapshots: &[MetricsSnapshot]) {
    header(
        out,
        REQUESTS,
        "counter",
        "Requests finished, by class, partition, backend and status class.",
    );
    let mut requests: BTreeMap<_, u64> = BTreeMap::new();
    for s in snapshots {
        for (k, n) in &s.requests {
            *requests.entry(k).or_insert(0) += n;
        }
    }
    for (k, n) in &requests {
        let _ = writeln!(
            out,
            "{REQUESTS}{{class=\"{}\",partition=\"{}\",backend=\"{}\",status=\"{}\"}} {n}",
            k.class,
            label(&k.partition),
            label(&k.backend),
            k.status
        );
    }
}

fn render_errors(out: &mut String, snapshots: &[MetricsSnapshot]) {
    header(out, ERRORS, "counter", "Failures by kind.");
    for (i, kind) in ERROR_KIND_LABELS.iter().enumerate() {
        let n: u64 = snapshots.iter().map(|s| s.errors[i]).sum();
        let _ = writeln!(out, "{ERRORS}{{kind=\"{kind}\"}} {n}");
    }
}

/// The plain (unlabelled) counters, summed over workers.
const COUNTERS: [CounterSpec; 17] = [
    (
        RETRIES,
        "Queries re-sent to an upstream after a failure.",
        |s| s.retries,
    ),
    (
        FAILOVERS,
        "Connect failures (or servers at pool.max_connections_per_backend) answered by trying the next server.",
        |s| s.failovers,
    ),
    (
        POOL_REUSED,
        "Upstream connections taken from a keep-alive pool.",
        |s| s.pool_reused,
    ),
    (POOL_OPENED, "Upstream connections opened.", |s| {
        s.pool_opened
    }),
    (
        POOL_STALE,
        "Requests sent again on a new connection because the pooled one they took turned out closed by its server (the keep-alive race); connections found closed before use are not counted.",
        |s| s.pool_stale,
    ),
    (
        POOL_PEEKED,
        "Pooled upstream connections checked with a recv(MSG_PEEK) syscall at reuse; the ring vouched for the others.",
        |s| s.pool_peeked,
    ),
    (CONNECTIONS_ACCEPTED, "Client connections accepted.", |s| {
        s.accepted
    }),
    (
        CONNECTIONS_REFUSED,
        "Client connections refused at the per-worker bound.",
        |s| s.refused,
    ),
    (
        CONNECTIONS_RECLAIMED,
        "Idle client connections closed at the per-worker bound to make room for a new one.",
        |s| s.reclaimed,
    ),
    (
        IDLE_TIMEOUTS,
        "Keep-alive client connections closed by the idle timeout.",
        |s| s.idle_timeouts,
    ),
    (
        TLS_HANDSHAKES_FAILED,
        "Client TLS handshakes that failed or timed out (plain HTTP to the TLS port included).",
        |s| s.tls_handshakes_failed,
    ),
    (SPLICED_BYTES, "Body bytes moved with splice(2).", |s| {
        s.spliced_bytes
    }),
    (
        MULTISHOT_RING_EMPTY,
        "Multishot receives that found the worker's provided-buffer ring empty; the socket read once the ordinary way (many: the ring is small for the load).",
        |s| s.multishot_ring_empty,
    ),
    (
        MULTISHOT_BACKPRESSURE,
        "Multishot receives stopped because their socket held 16 received, unread buffers (a client sending ahead of its answers); re-armed once read.",
        |s| s.multishot_backpressure,
    ),
    (
        EAGER_SENT,
        "Small messages handed to a socket eagerly: sent by the enter that also waits for what comes next, with no completion unless the socket could not take them whole.",
        |s| s.eager_sent,
    ),
    (
        EAGER_CONTINUED,
        "Eager sends the socket could not take whole at once (full, or broken); the rest went out with an ordinary send, or the connection failed.",
        |s| s.eager_continued,
    ),
    (
        ACCESS_LOG_DROPPED,
        "Access log lines dropped because the writer fell behind.",
        |s| s.access_log_dropped,
    ),
];

fn render_counters(out: &mut String, snapshots: &[MetricsSnapshot]) {
    for (name, help, get) in COUNTERS {
        header(out, name, "counter", help);
        let n: u64 = snapshots.iter().map(get).sum();
        let _ = writeln!(out, "{name} {n}");
    }
}

/// Open client connections and idle pooled upstream connections.
fn render_connections(out: &mut String, snapshots: &[MetricsSnapshot]) {
    header(out, CONNECTIONS_OPEN, "gauge", "Open client connections.");
    let open: usize = snapshots.iter().map(|s| s.open_connections).sum();
    let _ = writeln!(out, "{CONNECTIONS_OPEN} {open}");

    header(
        out,
        POOL_IDLE,
        "gauge",
        "Idle pooled upstream connections, by backend.",
    );
    // (idle, open, limited) per backend, summed over workers.
    let mut pools: BTreeMap<String, (usize, usize, u64)> = BTreeMap::new();
    for s in snapshots {
        for p in &s.pools {
            let e = pools.entry(p.addr.to_string()).or_default();
            e.0 += p.idle;
            e.1 += p.open;
            e.2 += p.limited;
        }
    }
    for (addr, (n, _, _)) in &pools {
        let _ = writeln!(out, "{POOL_IDLE}{{backend=\"{addr}\"}} {n}");
    }
    header(
        out,
        POOL_OPEN,
        "gauge",
        "Open upstream connections (in use, idle or connecting), by backend.",
    );
    for (addr, (_, n, _)) in &pools {
        let _ = writeln!(out, "{POOL_OPEN}{{backend=\"{addr}\"}} {n}");
    }
    header(
        out,
        POOL_LIMITED,
        "counter",
        "Upstream connections not opened because the backend had pool.max_connections_per_backend open on the worker (the request went to the next server, or was answered 503).",
    );
    for (addr, (_, _, n)) in &pools {
        let _ = writeln!(out, "{POOL_LIMITED}{{backend=\"{addr}\"}} {n}");
    }
}

/// Health, circuit and drain state of every backend of the table in force.
fn render_backends(out: &mut String, table: &RoutingTable) {
    header(
        out,
        BACKEND_UP,
        "gauge",
        "1 when the backend passes active health checks.",
    );
    for b in table.backends.iter() {
        let up = u8::from(b.health() == Health::Up);
        let _ = writeln!(out, "{BACKEND_UP}{{backend=\"{}\"}} {up}", b.addr);
    }
    header(
        out,
        BACKEND_CIRCUIT,
        "gauge",
        "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
    );
    for b in table.backends.iter() {
        let state = match b.circuit() {
            Circuit::Closed => 0,
            Circuit::Open => 1,
            Circuit::HalfOpen => 2,
        };
        let _ = writeln!(out, "{BACKEND_CIRCUIT}{{backend=\"{}\"}} {state}", b.addr);
    }
    header(
        out,
        CIRCUIT_TRANSITIONS,
        "counter",
        "Circuit breaker transitions, by backend and new state.",
    );
    for b in table.backends.iter() {
        for (state, n) in b.circuit_transitions() {
            let _ = writeln!(
                out,
                "{CIRCUIT_TRANSITIONS}{{backend=\"{}\",state=\"{state}\"}} {n}",
                b.addr
            );
        }
    }
    header(
        out,
        BACKEND_DRAINED,
        "gauge",
        "1 when an operator drained the backend.",
    );
    for b in table.backends.iter() {
        let drained = u8::from(b.is_drained());
        let _ = writeln!(out, "{BACKEND_DRAINED}{{backend=\"{}\"}} {drained}", b.addr);
    }
}

/// Reloads, the table version in force, workers running.
fn render_process(out: &mut String, table: &RoutingTable, process: &ProcessStats) {
    header(out, RELOADS, "counter", "Configuration reloads, by result.");
    let _ = writeln!(out, "{RELOADS}{{result=\"ok\"}} {}", process.reloads_ok);
    let _ = writeln!(
        out,
        "{RELOADS}{{result=\"failed\"}} {}",
        process.reloads_failed
    );
    header(
        out,
        CONFIG_VERSION,
        "gauge",
        "Routing table version in force.",
    );
    let _ = writeln!(out, "{CONFIG_VERSION} {}", table.version);
    header(out, WORKERS, "gauge", "Workers running.");
    let _ = writeln!(out, "{WORKERS} {}", process.workers);
    header(
        out,
        RATE_LIMIT_UNTRACKED,
        "counter",
        "Requests admitted without being rate limited: every slot of their user's bucket in the rate table was held by an active user (raise rate_limit.max_users).",
    );
    let _ = writeln!(
        out,
        "{RATE_LIMIT_UNTRACKED} {}",
        process.rate_limit_untracked
    );
    header(
        out,
        MIGRATION_UNTRACKED,
        "counter",
        "Commands let through without migration ordering: their user's bucket in the in-flight table was full (raise migration.max_users).",
    );
    let _ = writeln!(out, "{MIGRATION_UNTRACKED} {}", process.migration_untracked);
}

/// Request duration: Prometheus buckets and HDR quantiles, by class.
fn render_latency(out: &mut String, merged: &LatencyHistograms) {
    header(
        out,
        DURATION,
        "histogram",
        "Request duration from complete head to response sent, by class.",
    );
    for (class, h) in ["command", "query"].iter().zip(merged) {
        for le in BUCKETS_S {
            let n = if h.is_empty() {
                0
            } else {
                h.count_between(0, (le * 1e9) as u64)
            };
            let _ = writeln!(
                out,
                "{DURATION}_bucket{{class=\"{class}\",le=\"{le}\"}} {n}"
            );
        }
        let count = h.len();
        let _ = writeln!(
            out,
            "{DURATION}_bucket{{class=\"{class}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "{DURATION}_sum{{class=\"{class}\"}} {}",
            sum_seconds(h)
        );
        let _ = writeln!(out, "{DURATION}_count{{class=\"{class}\"}} {count}");
    }
    header(
        out,
        DURATION_QUANTILES,
        "summary",
        "Request duration quantiles from per-worker HDR histograms merged at scrape time, by class.",
    );
    for (class, h) in ["command", "query"].iter().zip(merged) {
        for q in QUANTILES {
            let v = if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1e9
            };
            let _ = writeln!(
                out,
                "{DURATION_QUANTILES}{{class=\"{class}\",quantile=\"{q}\"}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "{DURATION_QUANTILES}_sum{{class=\"{class}\"}} {}",
            sum_seconds(h)
        );
        let _ = writeln!(
            out,
            "{DURATION_QUANTILES}_count{{class=\"{class}\"}} {}",
            h.len()
        );
    }
}

fn sum_seconds(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.mean() * h.len() as f64 / 1e9
    }
}
