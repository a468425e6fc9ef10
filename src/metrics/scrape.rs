//! The exporter's side of a scrape: ask every worker, keep the cumulative latency.
//!
//! Workers hand over the latency they recorded since the previous scrape (see the module
//! docs of [`crate::metrics`]); a [`Scraper`] adds those intervals into its cumulative
//! totals, resets the histograms it received and keeps them as spares for the next round,
//! so after the first scrape no histogram is allocated on either side.
//!
//! # Invariants
//! - every latency sample recorded by a worker reaches the totals exactly once: an answer
//!   that arrives after its round's deadline is picked up by the next round (its counters
//!   are stale by then and dropped, its latency is not); an answer that cannot be
//!   delivered at all is added back on the worker;
//! - there is one `Scraper` per server, and a scrape holds it for its whole round, so two
//!   concurrent scrapes take turns instead of splitting the intervals between them.

use std::time::{Duration, Instant};

use super::{new_latency_histograms, LatencyHistograms, MetricsSnapshot, SnapshotRequest};

/// Cumulative latency and the channel workers answer on.
pub struct Scraper {
    /// Every interval received so far, merged per class.
    totals: LatencyHistograms,
    /// Empty histograms to hand out with the next requests.
    spares: Vec<LatencyHistograms>,
    reply: flume::Sender<MetricsSnapshot>,
    replies: flume::Receiver<MetricsSnapshot>,
    /// The current round (starts at 1; 0 marks counters-only requests).
    round: u64,
    /// Each worker's last snapshot (counters only), standing in for one that misses a
    /// round's deadline: leaving it out would make its counters seem to go backwards,
    /// which Prometheus reads as a reset.
    last: Vec<Option<MetricsSnapshot>>,
}

impl Default for Scraper {
    fn default() -> Self {
        Self::new()
    }
}

impl Scraper {
    /// No latency recorded yet.
    pub fn new() -> Self {
        let (reply, replies) = flume::unbounded();
        Self {
            totals: new_latency_histograms(),
            spares: Vec::new(),
            reply,
            replies,
            round: 0,
            last: Vec::new(),
        }
    }

    /// Latency recorded by all workers up to the last round, per class.
    pub fn totals(&self) -> &LatencyHistograms {
        &self.totals
    }

    /// One round: `ask(i, request)` sends `request` to worker `i` (false: that worker is
    /// gone); returns the snapshots that arrived within `timeout` (adding their latency
    /// into [`Self::totals`]), and for a worker asked that did not answer in time its
    /// previous snapshot, in worker order.
    pub fn collect(
        &mut self,
        workers: usize,
        mut ask: impl FnMut(usize, SnapshotRequest) -> bool,
        timeout: Duration,
    ) -> Vec<MetricsSnapshot> {
        // Answers that missed an earlier round's deadline: keep their latency only.
        while let Ok(mut late) = self.replies.try_recv() {
            self.absorb(&mut late);
        }
        self.round += 1;
        let mut asked = 0;
        for i in 0..workers {
            let request = SnapshotRequest {
                reply: self.reply.clone(),
                spare: Some(self.take_spare()),
                round: self.round,
            };
            if ask(i, request) {
                asked += 1;
            }
        }
        if self.last.len() < workers {
            self.last.resize(workers, None);
        }
        let deadline = Instant::now() + timeout;
        let mut answered = 0;
        while answered < asked {
            let Ok(mut s) = self.replies.recv_deadline(deadline) else {
                break;
            };
            self.absorb(&mut s);
            if s.round == self.round {
                answered += 1;
                if let Some(slot) = self.last.get_mut(s.worker) {
                    *slot = Some(s);
                }
            }
        }
        self.last[..workers].iter().flatten().cloned().collect()
    }

    fn take_spare(&mut self) -> LatencyHistograms {
        self.spares.pop().unwrap_or_else(new_latency_histograms)
    }

    /// Add a snapshot's interval latency into the totals; keep its histograms as spares.
    fn absorb(&mut self, s: &mut MetricsSnapshot) {
        if let Some(mut interval) = s.latency.take() {
            for (total, h) in self.totals.iter_mut().zip(interval.iter_mut()) {
                // Same bounds on both sides, so adding cannot fail.
                let _ = total.add(&*h);
                h.reset();
            }
            self.spares.push(interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::{Outcome, WorkerMetrics};
    use crate::route::router::{Class, RoutingTable};
    use crate::upstream::backend::BackendRegistry;
    use std::path::Path;

    fn table() -> RoutingTable {
        let config = Config::parse(
            "[partitions.a]\nservers=[\"127.0.0.1:1\"]\n",
            Path::new("t"),
        )
        .unwrap();
        RoutingTable::build(&config, &mut BackendRegistry::new(), 1)
    }

    fn record(m: &WorkerMetrics, class: Class, micros: &[u64]) {
        let o = Outcome {
            class: Some(class),
            partition: Some(0),
            backend: Some(0),
            status: Some(200),
            error: None,
        };
        for &us in micros {
            m.record(&o, &table(), Duration::from_micros(us));
        }
    }

    /// Run one round against in-process workers, answering synchronously.
    fn round(scraper: &mut Scraper, workers: &[WorkerMetrics], t: &RoutingTable) -> usize {
        let snaps = scraper.collect(
            workers.len(),
            |i, req| {
                workers[i].answer(req, i, t, 0, Vec::new());
                true
            },
            Duration::from_secs(1),
        );
        snaps.len()
    }

    #[test]
    fn totals_are_cumulative_across_scrapes_and_workers() {
        let t = table();
        let workers = [WorkerMetrics::new(&t), WorkerMetrics::new(&t)];
        let mut scraper = Scraper::new();
        record(&workers[0], Class::Query, &[10, 20, 30]);
        record(&workers[1], Class::Query, &[40]);
        record(&workers[1], Class::Command, &[1000]);
        assert_eq!(round(&mut scraper, &workers, &t), 2);
        assert_eq!(scraper.totals()[1].len(), 4);
        assert_eq!(scraper.totals()[0].len(), 1);

        // Nothing new: totals unchanged (the workers' intervals were empty).
        round(&mut scraper, &workers, &t);
        assert_eq!(scraper.totals()[1].len(), 4);

        record(&workers[0], Class::Query, &[50; 96]);
        round(&mut scraper, &workers, &t);
        let q = &scraper.totals()[1];
        assert_eq!(q.len(), 100);
        let p50 = q.value_at_quantile(0.5);
        assert!((49_000..=51_000).contains(&p50), "p50 {p50} ns");
        assert!(q.max() >= 50_000 && q.min() <= 10_010);
        // Spares are recycled: two workers, two pairs in the pool after each round.
        assert_eq!(scraper.spares.len(), 2);
    }

    #[test]
    fn a_late_answer_counts_in_the_next_round_and_an_undelivered_one_stays_on_the_worker() {
        let t = table();
        let worker = WorkerMetrics::new(&t);
        let mut scraper = Scraper::new();
        record(&worker, Class::Command, &[5, 6]);
        // The worker does not answer within the round: the request is held back.
        let mut held = None;
        let snaps = scraper.collect(
            1,
            |_, req| {
                held = Some(req);
                true
            },
            Duration::from_millis(1),
        );
        assert!(snaps.is_empty());
        worker.answer(held.take().unwrap(), 0, &t, 0, Vec::new());
        record(&worker, Class::Command, &[7]);
        let snaps = scraper.collect(
            1,
            |_, req| {
                worker.answer(req, 0, &t, 0, Vec::new());
                true
            },
            Duration::from_secs(1),
        );
        assert_eq!(snaps.len(), 1);
        assert_eq!(scraper.totals()[0].len(), 3, "late interval counted once");

        // An answer nobody can receive: the latency goes back to the worker.
        record(&worker, Class::Command, &[8]);
        let (tx, rx) = flume::unbounded();
        drop(rx);
        let request = SnapshotRequest {
            reply: tx,
            spare: Some(new_latency_histograms()),
            round: 9,
        };
        worker.answer(request, 0, &t, 0, Vec::new());
        round(&mut scraper, std::slice::from_ref(&worker), &t);
        assert_eq!(scraper.totals()[0].len(), 4);
    }

    #[test]
    fn a_worker_that_misses_a_round_is_counted_as_last_seen_not_dropped() {
        let t = table();
        let workers = [WorkerMetrics::new(&t), WorkerMetrics::new(&t)];
        let mut scraper = Scraper::new();
        record(&workers[0], Class::Query, &[10]);
        record(&workers[1], Class::Query, &[20, 30]);
        assert_eq!(round(&mut scraper, &workers, &t), 2);
        // Worker 1 does not answer in time: its counters as last seen stand in for it, so
        // the sum of a counter never goes down between two scrapes.
        record(&workers[1], Class::Query, &[40]);
        let mut held = None;
        let snaps = scraper.collect(
            2,
            |i, req| {
                if i == 0 {
                    workers[0].answer(req, 0, &t, 0, Vec::new());
                } else {
                    held = Some(req);
                }
                true
            },
            Duration::from_millis(1),
        );
        let counts: Vec<(usize, u64)> = snaps
            .iter()
            .map(|s| (s.worker, s.requests.values().sum()))
            .collect();
        assert_eq!(counts, [(0, 1), (1, 2)]);
        assert!(snaps.iter().all(|s| s.latency.is_none()));
        // It answers the next round with everything.
        drop(held);
        let snaps = scraper.collect(
            2,
            |i, req| {
                workers[i].answer(req, i, &t, 0, Vec::new());
                true
            },
            Duration::from_secs(1),
        );
        let counts: Vec<u64> = snaps.iter().map(|s| s.requests.values().sum()).collect();
        assert_eq!(counts, [1, 3]);
    }

    #[test]
    fn counters_only_requests_leave_the_latency_with_the_worker() {
        let t = table();
        let worker = WorkerMetrics::new(&t);
        record(&worker, Class::Query, &[5, 6]);
        let (tx, rx) = flume::unbounded();
        worker.answer(SnapshotRequest::counters_only(tx), 0, &t, 0, Vec::new());
        let s = rx.recv().unwrap();
        assert!(s.latency.is_none());
        assert_eq!(s.requests.values().sum::<u64>(), 2);
        let mut scraper = Scraper::new();
        round(&mut scraper, std::slice::from_ref(&worker), &t);
        assert_eq!(scraper.totals()[1].len(), 2);
    }
}
