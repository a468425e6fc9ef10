//! Starting a run: split connections, rate and request count over worker threads, start them
//! (named, optionally pinned) on one shared clock, and merge what they measured.
//!
//! Connections and rate are split in proportion: worker `i` gets `connections_i` connections
//! and `rate × connections_i / connections` requests per second, and its schedule starts
//! `i / rate` seconds after the common start, so the workers' schedules interleave into one
//! evenly spaced stream.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::config::{LoadConfig, RunLength};
use crate::report::Report;
use crate::request::RequestFactory;
use crate::stats::RunStats;
use crate::worker::{run_worker, OpenSchedule, RunClock, WorkerPlan};

/// Time allowed for connections to open before the first intended send.
const CONNECT_LEAD: Duration = Duration::from_millis(50);

/// Everything a finished run measured.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub config: LoadConfig,
    pub stats: RunStats,
    /// Length of the measured window, from the end of warm-up to the end of the run (or the
    /// last measured response, if later).
    pub measured_ns: u64,
}

impl RunOutcome {
    pub fn report(&self) -> Report {
        Report::new(self)
    }

    /// Measured responses per second.
    pub fn achieved_rps(&self) -> f64 {
        if self.measured_ns == 0 {
            return 0.0;
        }
        self.stats.completed as f64 * 1e9 / self.measured_ns as f64
    }
}

/// `part` of `total` when it is shared in proportion to `weights` (largest remainder: parts
/// add up to `total` exactly).
fn proportional_share(total: u64, weights: &[usize], part: usize) -> u64 {
    let sum: u128 = weights.iter().map(|&w| w as u128).sum();
    let before: u128 = weights[..part].iter().map(|&w| w as u128).sum();
    let upto = before + weights[part] as u128;
    ((u128::from(total) * upto / sum) - (u128::from(total) * before / sum)) as u64
}

/// Runs the load described by `config` and waits for it to finish.
pub fn run(config: &LoadConfig) -> Result<RunOutcome, String> {
    config.validate()?;
    let threads = config.effective_threads();
    let conns_per_worker: Vec<usize> = (0..threads)
        .map(|i| proportional_share(config.connections as u64, &vec![1; threads], i) as usize)
        .collect();
    let factory = Arc::new(RequestFactory::new(config));

    let origin = Instant::now();
    let start_ns =
        (CONNECT_LEAD + Duration::from_micros(20) * config.connections as u32).as_nanos() as u64;
    let measure_start_ns = start_ns + config.warmup.as_nanos() as u64;
    let end_ns = match config.length {
        RunLength::Duration(d) => Some(measure_start_ns + d.as_nanos() as u64),
        RunLength::Requests(_) => None,
    };
    let clock = RunClock {
        origin,
        start_ns,
        measure_start_ns,
        end_ns,
    };
    let timeout_ns = config.request_timeout.as_nanos() as u64;

    let plans: Vec<WorkerPlan> = (0..threads)
        .map(|i| {
            let measured_share = match config.length {
                RunLength::Requests(n) => Some(proportional_share(n, &conns_per_worker, i)),
                RunLength::Duration(_) => None,
            };
            let open_loop = config.rate_per_s.map(|rate| {
                let worker_rate = rate * conns_per_worker[i] as f64 / config.connections as f64;
                let mut schedule = OpenSchedule {
                    first_ns: start_ns + (i as f64 * 1e9 / rate) as u64,
                    interval_ns: 1e9 / worker_rate,
                    k_end: 0,
                };
                schedule.k_end = match (end_ns, measured_share) {
                    (Some(end), _) => schedule.first_at_or_after(end),
                    (None, Some(n)) => schedule.first_at_or_after(measure_start_ns) + n,
                    (None, None) => unreachable!("a run has a duration or a request count"),
                };
                schedule
            });
            let hard_deadline_ns = match (open_loop, end_ns) {
                (Some(schedule), _) => {
                    let last = schedule.intended_ns(schedule.k_end.saturating_sub(1));
                    Some(last.max(end_ns.unwrap_or(0)) + timeout_ns)
                }
                (None, Some(end)) => Some(end + timeout_ns),
                // Closed loop by count: every request ends by response, error or timeout.
                (None, None) => None,
            };
            WorkerPlan {
                index: i,
                connections: conns_per_worker[i],
                open_loop,
                closed_loop_limit: if open_loop.is_none() {
                    measured_share
                } else {
                    None
                },
                hard_deadline_ns,
                cpu: config.cpus.as_ref().map(|cpus| cpus[i % cpus.len()]),
            }
        })
        .collect();

    let mut handles = Vec::with_capacity(threads);
    for plan in plans {
        let config = config.clone();
        let factory = Arc::clone(&factory);
        let handle = thread::Builder::new()
            .name(format!("load-w{}", plan.index))
            .spawn(move || {
                if let Some(cpu) = plan.cpu {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                        eprintln!(
                            "ringgate-load: could not pin worker {} to CPU {cpu}",
                            plan.index
                        );
                    }
                }
                run_worker(&config, &factory, &plan, clock)
            })
            .map_err(|e| format!("spawning worker: {e}"))?;
        handles.push(handle);
    }

    let mut stats = RunStats::default();
    let mut first_error = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(worker_stats)) => stats.merge(&worker_stats),
            Ok(Err(e)) => first_error = first_error.or(Some(format!("worker failed: {e}"))),
            Err(_) => first_error = first_error.or(Some("worker panicked".to_string())),
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let window_end = end_ns.unwrap_or(0).max(stats.last_response_ns);
    Ok(RunOutcome {
        config: config.clone(),
        measured_ns: window_end.saturating_sub(measure_start_ns),
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        let weights = [3, 3, 2];
        let parts: Vec<u64> = (0..3)
            .map(|i| proportional_share(100, &weights, i))
            .collect();
        assert_eq!(parts.iter().sum::<u64>(), 100);
        assert_eq!(parts, vec![37, 38, 25]);
        let even: Vec<u64> = (0..3)
            .map(|i| proportional_share(8, &[1, 1, 1], i))
            .collect();
        assert_eq!(even, vec![2, 3, 3]);
    }
}
