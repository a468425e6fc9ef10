//! Per-worker metrics: plain counters and HDR histograms owned by one worker, merged by the
//! exporter at scrape time.
//!
//! # Hot path
//! Recording a request is a handful of non-atomic increments and one histogram record on
//! memory only this worker touches: no lock, no atomic read-modify-write, no allocation.
//!
//! # Scrapes
//! The admin thread asks each worker for a [`MetricsSnapshot`] through its control
//! channel ([`SnapshotRequest`]); the worker answers between requests. It copies its
//! counters out (a few hundred bytes) but never copies a histogram: the request brings a
//! pair of empty *spare* histograms, the worker swaps them with the ones it has been
//! recording into (`std::mem::swap`, O(1)) and sends those away. The worker's histograms
//! therefore hold only the latency recorded *since the last scrape*; the exporter
//! ([`scrape::Scraper`]) adds each interval into its cumulative totals, resets the
//! histograms it received and keeps them as the next spares. Merging and resetting
//! (~220 kB per histogram) happen on the admin thread.

pub mod export;
pub mod names;
pub mod scrape;
pub mod users;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::error::{ErrorKind, ERROR_KIND_LABELS};
use crate::route::router::{Class, RoutingTable};
use crate::upstream::pool::PoolCounts;

/// Status classes: 1xx..5xx, and "none": the client went away before the response's head
/// went out (the access log's 499), never the status of an answer it did not get.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];
/// Class labels of the request counters: Commands, Queries, and requests refused before
/// they were classified (bad input), which are neither.
const CLASS_LABELS: [&str; 3] = ["command", "query", ""];
/// Highest latency the histograms track (60 s, in ns); longer ones saturate.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

fn status_class(status: Option<u16>) -> usize {
    match status {
        Some(s @ 100..=599) => (s / 100 - 1) as usize,
        _ => 5,
    }
}

/// The labels of one request counter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestKey {
    /// "command" or "query" ("" when the request was refused before it was classified).
    pub class: &'static str,
    /// Partition name ("" when routing failed before a partition was chosen).
    pub partition: String,
    /// Backend address ("" when no backend was chosen).
    pub backend: String,
    /// "2xx", "5xx", ... or "none".
    pub status: &'static str,
}

/// How one request ended, as far as metrics and the access log care.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// Class, once classified.
    pub class: Option<Class>,
    /// Partition index in the request's table, once chosen.
    pub partition: Option<u16>,
    /// Backend index in the request's table, once chosen.
    pub backend: Option<u16>,
    /// Status sent to the client (None: the client went away before a response head
    /// went out to it).
    pub status: Option<u16>,
    /// The failure, if the request failed.
    pub error: Option<ErrorKind>,
}

/// Counters and histograms of one worker.
pub struct WorkerMetrics {
    /// Layout of `requests`: (partitions, backends) of the table it is indexed by.
    layout: Cell<(usize, usize, u64)>,
    requests: RefCell<Vec<u64>>,
    /// Counts from earlier tables, keyed by names so they survive reloads.
    retired: RefCell<BTreeMap<RequestKey, u64>>,
    errors: [Cell<u64>; ERROR_KIND_LABELS.len()],
    /// Re-sent Queries.
    pub retries: Cell<u64>,
    /// Connect failures answered by the next server.
    pub failovers: Cell<u64>,
    /// Pooled connections reused.
    pub pool_reused: Cell<u64>,
    /// Upstream connections opened.
    pub pool_opened: Cell<u64>,
    /// Pooled connections found dead.
    pub pool_stale: Cell<u64>,
    /// Pooled connections checked with a syscall at reuse.
    pub pool_peeked: Cell<u64>,
    /// Client connections accepted.
    pub accepted: Cell<u64>,
    /// Client connections refused at the bound.
    pub refused: Cell<u64>,
    /// Idle client connections closed at the bound to make room for a new one.
    pub reclaimed: Cell<u64>,
    /// Keep-alive connections closed by the idle timeout.
    pub idle_timeouts: Cell<u64>,
    /// TLS handshakes that failed or timed out.
    pub tls_handshakes_failed: Cell<u64>,
    /// Bytes spliced.
    pub spliced_bytes: Cell<u64>,
    /// Access log lines dropped.
    pub access_log_dropped: Cell<u64>,
    /// Multishot receives: arrivals that found the buffer ring empty.
    pub multishot_ring_empty: Cell<u64>,
    /// Multishot receives stopped at a socket's bound of unread buffers.
    pub multishot_backpressure: Cell<u64>,
    /// Messages handed to a socket eagerly.
    pub eager_sent: Cell<u64>,
    /// Eager sends the socket could not take whole at once.
    pub eager_continued: Cell<u64>,
    /// Rate limits, migration, mirroring.
    pub users: users::UserCounters,
    latency: [RefCell<Histogram<u64>>; 2],
}

/// Request latency in ns: `[command, query]`.
pub type LatencyHistograms = [Histogram<u64>; 2];

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// An empty pair of latency histograms, laid out like the workers'.
pub fn new_latency_histograms() -> LatencyHistograms {
    [new_histogram(), new_histogram()]
}

/// A scrape's question to one worker.
pub struct SnapshotRequest {
    /// Where the answer goes.
    reply: flume::Sender<MetricsSnapshot>,
    /// Empty histograms to swap in (None: counters only, the latency stays with the worker).
    spare: Option<LatencyHistograms>,
    /// The scrape round this request belongs to.
    round: u64,
}

impl SnapshotRequest {
    /// Ask for counters only: the worker keeps its latency histograms (for tests and tools
    /// that read counters; `/metrics` goes through [`scrape::Scraper`]).
    pub fn counters_only(reply: flume::Sender<MetricsSnapshot>) -> Self {
        Self {
            reply,
            spare: None,
            round: 0,
        }
    }
}

impl WorkerMetrics {
    /// Metrics laid out for `table`.
    pub fn new(table: &RoutingTable) -> Self {
        let m = Self {
            layout: Cell::new((0, 0, 0)),
            requests: RefCell::new(Vec::new()),
            retired: RefCell::new(BTreeMap::new()),
            errors: std::array::from_fn(|_| Cell::new(0)),
            retries: Cell::new(0),
            failovers: Cell::new(0),
            pool_reused: Cell::new(0),
            pool_opened: Cell::new(0),
            pool_stale: Cell::new(0),
            pool_peeked: Cell::new(0),
            accepted: Cell::new(0),
            refused: Cell::new(0),
            reclaimed: Cell::new(0),
            idle_timeouts: Cell::new(0),
            tls_handshakes_failed: Cell::new(0),
            spliced_bytes: Cell::new(0),
            multishot_ring_empty: Cell::new(0),
            multishot_backpressure: Cell::new(0),
            eager_sent: Cell::new(0),
            eager_continued: Cell::new(0),
            access_log_dropped: Cell::new(0),
            users: users::UserCounters::default(),
            latency: [RefCell::new(new_histogram()), RefCell::new(new_histogram())],
        };
        m.relayout(None, table);
        m
    }

    /// Re-index the request counters for a new table; counts so far are kept by name.
    pub fn relayout(&self, old: Option<&RoutingTable>, table: &RoutingTable) {
        if let Some(old) = old {
            let mut retired = self.retired.borrow_mut();
            for (key, n) in self.named_requests(old) {
                *retired.entry(key).or_insert(0) += n;
            }
        }
        let (p, b) = (table.partitions.len() + 1, table.backends.len() + 1);
        self.layout.set((p, b, table.version));
        let mut v = self.requests.borrow_mut();
        v.clear();
        v.resize(CLASS_LABELS.len() * p * b * STATUS_CLASSES.len(), 0);
    }

    /// Count one finished request and its latency. `table` is the one it ran on: a request
    /// that outlived its table (a reload while it ran) is counted under that table's names.
    #[inline]
    pub fn record(&self, outcome: &Outcome, table: &RoutingTable, elapsed: Duration) {
        let (p, b, current) = self.layout.get();
        if let Some(kind) = outcome.error {
            let c = &self.errors[kind.metric_index()];
            c.set(c.get() + 1);
        }
        let ci = outcome.class.map_or(CLASS_LABELS.len() - 1, |c| c as usize);
        if table.version == current {
            let pi = outcome.partition.map_or(p - 1, |x| (x as usize).min(p - 1));
            let bi = outcome.backend.map_or(b - 1, |x| (x as usize).min(b - 1));
            let idx =
                ((ci * p + pi) * b + bi) * STATUS_CLASSES.len() + status_class(outcome.status);
            if let Some(slot) = self.requests.borrow_mut().get_mut(idx) {
                *slot += 1;
            }
        } else {
            self.record_retired(outcome, CLASS_LABELS[ci], table);
        }
        if let Some(class) = outcome.class {
            // Requests refused before classification (bad input) have no class latency.
            let ns = elapsed.as_nanos().min(u128::from(MAX_LATENCY_NS)) as u64;
            self.latency[class as usize]
                .borrow_mut()
                .saturating_record(ns.max(1));
        }
    }

    /// The count of a request that ran on an older table, under that table's names.
    #[cold]
    fn record_retired(&self, outcome: &Outcome, class: &'static str, table: &RoutingTable) {
        let key = RequestKey {
            class,
            partition: outcome
                .partition
                .and_then(|x| table.partitions.get(x as usize))
                .map_or(String::new(), |x| x.name.to_string()),
            backend: outcome
                .backend
                .and_then(|x| table.backends.get(x as usize))
                .map_or(String::new(), |x| x.addr.to_string()),
            status: STATUS_CLASSES[status_class(outcome.status)],
        };
        *self.retired.borrow_mut().entry(key).or_insert(0) += 1;
    }

    fn named_requests(&self, table: &RoutingTable) -> Vec<(RequestKey, u64)> {
        let (p, b, _) = self.layout.get();
        let v = self.requests.borrow();
        let mut out = Vec::new();
        for (idx, &n) in v.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let status = idx % STATUS_CLASSES.len();
            let rest = idx / STATUS_CLASSES.len();
            let bi = rest % b;
            let rest = rest / b;
            let pi = rest % p;
            let class = CLASS_LABELS[(rest / p).min(CLASS_LABELS.len() - 1)];
            out.push((
                RequestKey {
                    class,
                    partition: table
                        .partitions
                        .get(pi)
                        .map_or(String::new(), |x| x.name.to_string()),
                    backend: table
                        .backends
                        .get(bi)
                        .map_or(String::new(), |x| x.addr.to_string()),
                    status: STATUS_CLASSES[status],
                },
                n,
            ));
        }
        out
    }

    /// Answer a scrape (between requests, on the worker thread): counters are copied, the
    /// latency histograms are swapped with the request's spares. If the answer cannot be
    /// delivered (the exporter is gone), the interval's latency is added back.
    pub fn answer(
        &self,
        request: SnapshotRequest,
        worker: usize,
        table: &RoutingTable,
        open_connections: usize,
        pools: Vec<PoolCounts>,
    ) {
        let snapshot = self.snapshot(worker, table, open_connections, pools, request.spare);
        let snapshot = MetricsSnapshot {
            round: request.round,
            ..snapshot
        };
        if let Err(flume::SendError(undelivered)) = request.reply.send(snapshot) {
            if let Some(latency) = undelivered.latency {
                self.add_latency(&latency);
            }
        }
    }

    /// Copy the counters out; with `spare`, hand over the latency recorded since the last
    /// such call and continue recording into `spare` (which must be empty).
    pub fn snapshot(
        &self,
        worker: usize,
        table: &RoutingTable,
        open_connections: usize,
        pools: Vec<PoolCounts>,
        spare: Option<LatencyHistograms>,
    ) -> MetricsSnapshot {
        let mut requests = self.retired.borrow().clone();
        for (k, n) in self.named_requests(table) {
            *requests.entry(k).or_insert(0) += n;
        }
        let latency = spare.map(|mut spare| {
            for (mine, theirs) in self.latency.iter().zip(spare.iter_mut()) {
                debug_assert!(theirs.is_empty(), "spare histograms must be empty");
                std::mem::swap(&mut *mine.borrow_mut(), theirs);
            }
            spare
        });
        MetricsSnapshot {
            worker,
            round: 0,
            requests,
            errors: std::array::from_fn(|i| self.errors[i].get()),
            retries: self.retries.get(),
            failovers: self.failovers.get(),
            pool_reused: self.pool_reused.get(),
            pool_opened: self.pool_opened.get(),
            pool_stale: self.pool_stale.get(),
            pool_peeked: self.pool_peeked.get(),
            accepted: self.accepted.get(),
            refused: self.refused.get(),
            reclaimed: self.reclaimed.get(),
            idle_timeouts: self.idle_timeouts.get(),
            tls_handshakes_failed: self.tls_handshakes_failed.get(),
            spliced_bytes: self.spliced_bytes.get(),
            access_log_dropped: self.access_log_dropped.get(),
            multishot_ring_empty: self.multishot_ring_empty.get(),
            multishot_backpressure: self.multishot_backpressure.get(),
            eager_sent: self.eager_sent.get(),
            eager_continued: self.eager_continued.get(),
            users: self.users.counts(),
            open_connections,
            pools,
            latency,
        }
    }

    /// Add latency back (an interval whose snapshot could not be delivered).
    fn add_latency(&self, latency: &LatencyHistograms) {
        for (mine, h) in self.latency.iter().zip(latency) {
            // Same bounds on both sides, so adding cannot fail.
            let _ = mine.borrow_mut().add(h);
        }
    }
}

/// Increment a `Cell` counter.
#[inline]
pub fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

/// One worker's metrics at one instant (sent to the exporter): counters since start,
/// latency since the previous scrape.
#[derive(Clone, Debug)]
pub struct MetricsSnapshot {
    /// Worker index.
    pub worker: usize,
    /// The scrape round that asked for it (0: a counters-only request).
    pub round: u64,
    /// Requests by labels.
    pub requests: BTreeMap<RequestKey, u64>,
    /// Errors by kind (see [`ERROR_KIND_LABELS`]).
    pub errors: [u64; ERROR_KIND_LABELS.len()],
    /// Re-sent Queries.
    pub retries: u64,
    /// Failovers after connect failures.
    pub failovers: u64,
    /// Pooled connections reused.
    pub pool_reused: u64,
    /// Upstream connections opened.
    pub pool_opened: u64,
    /// Pooled connections found dead.
    pub pool_stale: u64,
    /// Pooled connections checked with a syscall at reuse.
    pub pool_peeked: u64,
    /// Client connections accepted.
    pub accepted: u64,
    /// Client connections refused.
    pub refused: u64,
    /// Idle client connections closed at the bound to make room for a new one.
    pub reclaimed: u64,
    /// Keep-alive connections closed by the idle timeout.
    pub idle_timeouts: u64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshakes_failed: u64,
    /// Bytes spliced.
    pub spliced_bytes: u64,
    /// Access log lines dropped.
    pub access_log_dropped: u64,
    /// Multishot arrivals that found the buffer ring empty.
    pub multishot_ring_empty: u64,
    /// Multishots stopped at a socket's bound of unread buffers.
    pub multishot_backpressure: u64,
    /// Messages handed to a socket eagerly.
    pub eager_sent: u64,
    /// Eager sends the socket could not take whole at once.
    pub eager_continued: u64,
    /// Rate limits, migration, mirroring.
    pub users: users::UserCounts,
    /// Open client connections.
    pub open_connections: usize,
    /// Idle and open upstream connections per backend.
    pub pools: Vec<PoolCounts>,
    /// Latency recorded since the previous scrape, when asked for (moving a histogram
    /// moves its header; the counts stay where they are on the heap).
    pub latency: Option<LatencyHistograms>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::upstream::backend::BackendRegistry;
    use std::path::Path;

    fn table(text: &str, version: u64, reg: &mut BackendRegistry) -> RoutingTable {
        RoutingTable::build(&Config::parse(text, Path::new("t")).unwrap(), reg, version)
    }

    #[test]
    fn counts_survive_a_reload_by_name() {
        let mut reg = BackendRegistry::new();
        let t1 = table("[partitions.a]\nservers=[\"127.0.0.1:1\"]\n", 1, &mut reg);
        let m = WorkerMetrics::new(&t1);
        let ok = Outcome {
            class: Some(Class::Query),
            partition: Some(0),
            backend: Some(0),
            status: Some(200),
            error: None,
        };
        m.record(&ok, &t1, Duration::from_micros(50));
        m.record(&ok, &t1, Duration::from_micros(70));
        let t2 = table("[partitions.b]\nservers=[\"127.0.0.1:2\"]\n[partitions.a]\nservers=[\"127.0.0.1:1\"]\n", 2, &mut reg);
        m.relayout(Some(&t1), &t2);
        // Partitions are ordered by name, so "a" is still index 0 in the new table.
        m.record(&ok, &t2, Duration::from_micros(60));
        // Finished on the old table: counted under its names.
        m.record(&ok, &t1, Duration::from_micros(60));
        let s = m.snapshot(0, &t2, 0, Vec::new(), Some(new_latency_histograms()));
        let key = RequestKey {
            class: "query",
            partition: "a".into(),
            backend: "127.0.0.1:1".into(),
            status: "2xx",
        };
        assert_eq!(s.requests.get(&key), Some(&4));
        let latency = s.latency.unwrap();
        assert_eq!(latency[1].len(), 4);
        let p50 = latency[1].value_at_quantile(0.5);
        assert!((59_000..=61_000).contains(&p50), "{p50}");
    }

    #[test]
    fn errors_and_missing_labels() {
        let mut reg = BackendRegistry::new();
        let t = table("[partitions.a]\nservers=[\"127.0.0.1:1\"]\n", 1, &mut reg);
        let m = WorkerMetrics::new(&t);
        m.record(
            &Outcome {
                error: Some(ErrorKind::BadRequest("x")),
                status: Some(400),
                ..Default::default()
            },
            &t,
            Duration::from_micros(5),
        );
        let s = m.snapshot(0, &t, 0, Vec::new(), None);
        assert!(s.latency.is_none());
        assert_eq!(s.errors[0], 1);
        let (k, n) = s.requests.iter().next().unwrap();
        assert_eq!(
            (
                k.class,
                k.partition.as_str(),
                k.backend.as_str(),
                k.status,
                *n
            ),
            ("", "", "", "4xx", 1)
        );
    }
}
