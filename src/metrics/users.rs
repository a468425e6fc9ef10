//! Counters of the per-user features: rate limits, ordered migration, Query mirroring.
//! Plain `Cell`s on the worker, copied out at scrape time like every other counter.

use std::cell::Cell;
use std::fmt::Write;

use super::names::{
    MIGRATION_HELD, MIGRATION_HELD_SECONDS, MIGRATION_REFUSED, MIRROR_DROPPED, MIRROR_REQUESTS,
    RATE_LIMITED,
};
use super::{status_class, MetricsSnapshot, STATUS_CLASSES};
use crate::route::router::Class;

/// The worker's counters.
#[derive(Default)]
pub struct UserCounters {
    rate_limited: [Cell<u64>; 2],
    migration_held: Cell<u64>,
    migration_held_ns: Cell<u64>,
    migration_refused: Cell<u64>,
    mirror_status: [Cell<u64>; STATUS_CLASSES.len()],
    mirror_dropped: Cell<u64>,
}

/// A copy of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserCounts {
    /// Requests refused with 429, by class (command, query).
    pub rate_limited: [u64; 2],
    /// Commands that waited for a moved user's Commands in flight.
    pub migration_held: u64,
    /// Their total wait, ns.
    pub migration_held_ns: u64,
    /// Commands refused (503) when the wait reached its bound.
    pub migration_refused: u64,
    /// Mirrored Queries by the status class of the mirror's answer ("none": no answer).
    pub mirror_status: [u64; STATUS_CLASSES.len()],
    /// Mirrors dropped: beyond the in-flight bound, or a body that was streamed.
    pub mirror_dropped: u64,
}

fn inc(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

impl UserCounters {
    /// A request refused by its user's rate limit.
    pub fn rate_limited(&self, class: Class) {
        inc(&self.rate_limited[class as usize], 1);
    }

    /// A Command that waited `ns` for the user's Commands in flight to another partition.
    pub fn migration_held(&self, ns: u64) {
        inc(&self.migration_held, 1);
        inc(&self.migration_held_ns, ns);
    }

    /// A Command refused at the migration wait bound.
    pub fn migration_refused(&self) {
        inc(&self.migration_refused, 1);
    }

    /// A mirrored Query finished with this status (None: no answer).
    pub fn mirrored(&self, status: Option<u16>) {
        inc(&self.mirror_status[status_class(status)], 1);
    }

    /// A mirror that was not sent.
    pub fn mirror_dropped(&self) {
        inc(&self.mirror_dropped, 1);
    }

    /// Copy out.
    pub fn counts(&self) -> UserCounts {
        UserCounts {
            rate_limited: [self.rate_limited[0].get(), self.rate_limited[1].get()],
            migration_held: self.migration_held.get(),
            migration_held_ns: self.migration_held_ns.get(),
            migration_refused: self.migration_refused.get(),
            mirror_status: std::array::from_fn(|i| self.mirror_status[i].get()),
            mirror_dropped: self.mirror_dropped.get(),
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The Prometheus families of these counters, summed over workers.
pub fn render(out: &mut String, snapshots: &[MetricsSnapshot]) {
    let sum =
        |f: &dyn Fn(&UserCounts) -> u64| -> u64 { snapshots.iter().map(|s| f(&s.users)).sum() };
    header(
        out,
        RATE_LIMITED,
        "counter",
        "Requests refused with 429 by their user's rate limit.",
    );
    for (i, class) in ["command", "query"].iter().enumerate() {
        let _ = writeln!(
            out,
            "{RATE_LIMITED}{{class=\"{class}\"}} {}",
            sum(&|u| u.rate_limited[i])
        );
    }
    header(
        out,
        MIGRATION_HELD,
        "counter",
        "Commands held until the moved user's Commands in flight to its old partition completed.",
    );
    let _ = writeln!(out, "{MIGRATION_HELD} {}", sum(&|u| u.migration_held));
    header(
        out,
        MIGRATION_HELD_SECONDS,
        "counter",
        "Time Commands spent held for a migration.",
    );
    let _ = writeln!(
        out,
        "{MIGRATION_HELD_SECONDS} {}",
        sum(&|u| u.migration_held_ns) as f64 / 1e9
    );
    header(
        out,
        MIGRATION_REFUSED,
        "counter",
        "Commands refused (503) when the migration wait reached migration.max_wait_ms.",
    );
    let _ = writeln!(out, "{MIGRATION_REFUSED} {}", sum(&|u| u.migration_refused));
    header(
        out,
        MIRROR_REQUESTS,
        "counter",
        "Mirrored Queries by the status class of the shadow's answer (none: no answer).",
    );
    for (i, status) in STATUS_CLASSES.iter().enumerate() {
        let _ = writeln!(
            out,
            "{MIRROR_REQUESTS}{{status=\"{status}\"}} {}",
            sum(&|u| u.mirror_status[i])
        );
    }
    header(
        out,
        MIRROR_DROPPED,
        "counter",
        "Mirrors not sent: beyond mirror.max_in_flight_per_worker, or a streamed body.",
    );
    let _ = writeln!(out, "{MIRROR_DROPPED} {}", sum(&|u| u.mirror_dropped));
}
