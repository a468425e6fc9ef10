//! `ringgate-load`: the project's own HTTP/1.1 load generator.
//!
//! It drives a target with a mix of Commands (`POST` + JSON body carrying `user_id`) and
//! Queries (`GET` with `X-User-Id` or `?user_id=`), either **open-loop** at a fixed rate with
//! coordinated-omission correction (as wrk2 does) or **closed-loop** at maximum throughput,
//! and records every latency in `hdrhistogram`s.
//!
//! # Layout
//!
//! In the order a request flows through the tool:
//!
//! - [`cli`] — the clap surface (`RunArgs`, `PlotArgs`): strings exactly as typed, and the
//!   parsers for durations, mixes, user distributions and CPU lists.
//! - [`config`] — [`LoadConfig`]: the validated, typed run description (units in names).
//! - [`request`] — [`request::RequestFactory`]: builds request bytes from pre-built pieces
//!   (no `format!` per request); [`request::UserSampler`] picks `user_id`s (uniform or Zipf).
//! - [`runner`] — [`run`]: resolves the target, splits connections and rate over threads,
//!   starts the pinned workers on one shared clock, merges their results.
//! - [`worker`] — one thread's event loop: its connections, its share of the schedule, the
//!   coordinated-omission bookkeeping.
//! - [`poller`] — a thin `epoll` wrapper whose waits have nanosecond timeouts
//!   (`epoll_pwait2`), so send times are not rounded to a millisecond.
//! - [`response`] — incremental HTTP/1.1 response framing (Content-Length, chunked,
//!   read-until-close, `Connection: close`, 1xx skipped).
//! - [`stats`] — per-thread histograms and counters, merged after the run.
//! - [`report`] — the percentile table, the `.hgrm` text, the JSON summary.
//! - [`plot`] — SVG latency-by-percentile curves, one run or several overlaid.
//!
//! # Coordinated-omission correction
//!
//! In open-loop mode every request `k` of a worker has an *intended* send time fixed before
//! the run: `start + offset + k / rate`. Latency is `response complete − intended`, never
//! `response complete − actually sent`. If the target stalls, requests whose intended time
//! falls inside the stall cannot be sent (every pipeline slot is busy) and wait in a backlog;
//! when they are finally answered their latency includes the time they spent waiting, exactly
//! as a real client on that schedule would have experienced. The uncorrected latency
//! (`complete − sent`) is kept in a second histogram so the difference can be shown.
//! Closed-loop mode has no schedule: intended time is the actual send time.

pub mod cli;
pub mod config;
pub mod plot;
pub mod poller;
pub mod report;
pub mod request;
pub mod response;
pub mod runner;
pub mod stats;
pub mod worker;

pub use config::LoadConfig;
pub use runner::{run, RunOutcome};
