//! What one worker thread measured: latency histograms and counters. Each worker owns its
//! own [`RunStats`] (no sharing while the run lasts); the runner merges them afterwards.
//!
//! Latencies are recorded in **nanoseconds**, 3 significant digits, up to one hour (values
//! above saturate at the top). Reports convert to microseconds.
//!
//! Only *measured* requests count — those whose intended send time is at or after the end of
//! the warm-up. Every response, whatever its status, is recorded in the latency histograms
//! (as wrk/wrk2 do); non-2xx responses are *also* counted by status. Requests that got no
//! response (errors, unsent, unfinished) are not in the histograms, only in the counters.

use hdrhistogram::Histogram;

use crate::request::Class;

/// Highest latency the histograms track exactly: one hour, in ns.
pub const MAX_TRACKED_NS: u64 = 3_600 * 1_000_000_000;
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// Why a request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The connection it was queued on failed to connect (refused, unreachable, timed out).
    Connect,
    /// The connection broke (reset, EOF, write error) before its response completed,
    /// including requests pipelined behind a `Connection: close` response.
    Reset,
    /// No complete response within `--timeout` of sending.
    Timeout,
    /// The response could not be framed (malformed head, bad length or chunking).
    Parse,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Connect,
        ErrorKind::Reset,
        ErrorKind::Timeout,
        ErrorKind::Parse,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Parse => "parse",
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, SIGNIFICANT_DIGITS)
        .expect("static histogram bounds are valid")
}

#[derive(Debug, Clone)]
pub struct RunStats {
    /// Response complete − intended send time (coordinated-omission corrected).
    pub corrected: Histogram<u64>,
    /// Response complete − actual send time.
    pub uncorrected: Histogram<u64>,
    /// Corrected latency per [`Class`].
    pub by_class: [Histogram<u64>; 2],
    /// Open-loop: actual send − intended send time. Small values are the generator's own
    /// wake-up jitter; large ones mean every connection was busy (the server fell behind).
    pub send_lag: Histogram<u64>,
    /// Measured requests handed to a connection.
    pub sent: u64,
    pub sent_by_class: [u64; 2],
    /// Measured requests with a complete response (any status).
    pub completed: u64,
    pub ok_2xx: u64,
    /// Count of responses per status code, for every status outside 200..=299.
    pub status_counts: Vec<u64>,
    pub errors: [u64; 4],
    /// Open-loop: measured requests whose intended time passed but that were never sent
    /// (every pipeline slot stayed busy until the run's hard deadline).
    pub unsent: u64,
    /// Sent but still unanswered at the hard deadline (and not yet timed out).
    pub unfinished: u64,
    /// TCP connections successfully established / attempts that failed.
    pub connects: u64,
    pub connect_failures: u64,
    /// `--new-conn-ratio` picks that could not reconnect because the connection was busy.
    pub new_conn_skipped: u64,
    /// Time (ns since the run's origin) of the last measured response.
    pub last_response_ns: u64,
}

impl Default for RunStats {
    fn default() -> Self {
        RunStats {
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            by_class: [new_histogram(), new_histogram()],
            send_lag: new_histogram(),
            sent: 0,
            sent_by_class: [0; 2],
            completed: 0,
            ok_2xx: 0,
            status_counts: vec![0; 1000],
            errors: [0; 4],
            unsent: 0,
            unfinished: 0,
            connects: 0,
            connect_failures: 0,
            new_conn_skipped: 0,
            last_response_ns: 0,
        }
    }
}

impl RunStats {
    pub fn record_response(
        &mut self,
        class: Class,
        status: u16,
        corrected_ns: u64,
        uncorrected_ns: u64,
        now_ns: u64,
    ) {
        self.corrected.saturating_record(corrected_ns);
        self.uncorrected.saturating_record(uncorrected_ns);
        self.by_class[class as usize].saturating_record(corrected_ns);
        self.completed += 1;
        if (200..300).contains(&status) {
            self.ok_2xx += 1;
        } else {
            self.status_counts[usize::from(status).min(999)] += 1;
        }
        self.last_response_ns = self.last_response_ns.max(now_ns);
    }

    pub fn record_error(&mut self, kind: ErrorKind) {
        self.errors[kind as usize] += 1;
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub fn non_2xx_total(&self) -> u64 {
        self.status_counts.iter().sum()
    }

    /// Non-2xx statuses that occurred, ascending.
    pub fn non_2xx(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.status_counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(status, &n)| (status as u16, n))
    }

    pub fn merge(&mut self, other: &RunStats) {
        let add = |into: &mut Histogram<u64>, from: &Histogram<u64>| {
            into.add(from).expect("histograms share bounds");
        };
        add(&mut self.corrected, &other.corrected);
        add(&mut self.uncorrected, &other.uncorrected);
        for (into, from) in self.by_class.iter_mut().zip(&other.by_class) {
            add(into, from);
        }
        add(&mut self.send_lag, &other.send_lag);
        self.sent += other.sent;
        for i in 0..2 {
            self.sent_by_class[i] += other.sent_by_class[i];
        }
        self.completed += other.completed;
        self.ok_2xx += other.ok_2xx;
        for (into, from) in self.status_counts.iter_mut().zip(&other.status_counts) {
            *into += from;
        }
        for (into, from) in self.errors.iter_mut().zip(&other.errors) {
            *into += from;
        }
        self.unsent += other.unsent;
        self.unfinished += other.unfinished;
        self.connects += other.connects;
        self.connect_failures += other.connect_failures;
        self.new_conn_skipped += other.new_conn_skipped;
        self.last_response_ns = self.last_response_ns.max(other.last_response_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_and_errors_are_counted_apart() {
        let mut a = RunStats::default();
        a.record_response(Class::Command, 200, 1_000, 900, 10);
        a.record_response(Class::Query, 404, 2_000, 1_000, 20);
        a.record_error(ErrorKind::Timeout);
        let mut b = RunStats::default();
        b.record_response(Class::Query, 503, 60_000_000_000, 1_000, 5);
        b.record_error(ErrorKind::Parse);
        a.merge(&b);
        assert_eq!(a.completed, 3);
        assert_eq!(a.ok_2xx, 1);
        assert_eq!(a.non_2xx().collect::<Vec<_>>(), vec![(404, 1), (503, 1)]);
        assert_eq!(a.errors_total(), 2);
        assert_eq!(a.errors[ErrorKind::Parse as usize], 1);
        assert_eq!(a.corrected.len(), 3);
        assert_eq!(a.by_class[Class::Query as usize].len(), 2);
        // 60 s is tracked at 3 significant digits.
        let max = a.corrected.max() as f64;
        assert!((max / 60e9 - 1.0).abs() < 1e-3, "{max}");
        assert_eq!(a.last_response_ns, 20);
    }
}
