//! Results for people and for scripts: the stdout percentile table, the JSON summary and the
//! HdrHistogram `.hgrm` percentile distribution.
//!
//! All latencies in reports are **microseconds** (recorded in ns, 3 significant digits).
//! The `.hgrm` text is the format of HdrHistogram's `outputPercentileDistribution` (and of
//! wrk2's `--latency` output) with an output scaling ratio of 1000 (ns → µs), so it loads in
//! the HdrHistogram plotter and in `ringgate-load plot`. Errors, non-2xx statuses, unsent and
//! unfinished requests always appear — as zeros when there were none.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::RunLength;
use crate::request::Class;
use crate::runner::RunOutcome;
use crate::stats::ErrorKind;

/// Percentile ticks per half distance in `.hgrm` output and JSON curves (HdrHistogram's
/// customary 5).
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Key statistics of one histogram, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            min: us(h.min()),
            mean: h.mean() / 1000.0,
            stdev: h.stdev() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            p99_99: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestCounts {
    /// Measured requests handed to a connection.
    pub sent: u64,
    /// Responses received (any status).
    pub completed: u64,
    pub ok_2xx: u64,
    pub non_2xx: u64,
    /// Requests that got no response: connect, reset, timeout, parse.
    pub errors: u64,
    /// Open-loop requests whose time came but that were never sent.
    pub unsent: u64,
    /// Sent, unanswered when the run gave up waiting.
    pub unfinished: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassSummary {
    pub sent: u64,
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    pub target: String,
    /// `open-loop` or `closed-loop`.
    pub mode: &'static str,
    pub rate_requested: Option<f64>,
    /// Responses per second over the measured window.
    pub rps: f64,
    pub threads: usize,
    pub connections: usize,
    pub pipeline: usize,
    pub warmup_s: f64,
    /// The measured window.
    pub duration_s: f64,
    pub requests_limit: Option<u64>,
    pub mix: BTreeMap<&'static str, u32>,
    pub users: u64,
    pub user_dist: String,
    pub query_form: crate::config::QueryForm,
    pub latency_unit: &'static str,
    pub requests: RequestCounts,
    /// Coordinated-omission-corrected latency (from intended send time).
    pub latency_us: Percentiles,
    /// From actual send time; open-loop only (identical to `latency_us` in closed loop).
    pub uncorrected_latency_us: Option<Percentiles>,
    /// Open-loop only: actual − intended send time (generator jitter, or backlog when every
    /// connection was busy).
    pub send_lag_us: Option<Percentiles>,
    pub errors: BTreeMap<&'static str, u64>,
    /// Count per non-2xx status code.
    pub non_2xx: BTreeMap<String, u64>,
    pub classes: BTreeMap<&'static str, ClassSummary>,
    pub connections_opened: u64,
    pub connect_failures: u64,
    pub new_conn_skipped: u64,
    /// `[percentile 0..=100, latency µs]` points of the corrected histogram, for plots.
    pub curve: Vec<[f64; 2]>,
}

impl Report {
    pub fn new(outcome: &RunOutcome) -> Self {
        let config = &outcome.config;
        let stats = &outcome.stats;
        let is_open_loop = config.is_open_loop();
        Report {
            label: config.label.clone(),
            target: config.target_text.clone(),
            mode: if is_open_loop {
                "open-loop"
            } else {
                "closed-loop"
            },
            rate_requested: config.rate_per_s,
            rps: outcome.achieved_rps(),
            threads: config.effective_threads(),
            connections: config.connections,
            pipeline: config.pipeline_depth,
            warmup_s: config.warmup.as_secs_f64(),
            duration_s: outcome.measured_ns as f64 / 1e9,
            requests_limit: match config.length {
                RunLength::Requests(n) => Some(n),
                RunLength::Duration(_) => None,
            },
            mix: BTreeMap::from([
                ("commands", config.mix.command_weight),
                ("queries", config.mix.query_weight),
            ]),
            users: config.users,
            user_dist: config.user_dist.to_string(),
            query_form: config.query_form,
            latency_unit: "us",
            requests: RequestCounts {
                sent: stats.sent,
                completed: stats.completed,
                ok_2xx: stats.ok_2xx,
                non_2xx: stats.non_2xx_total(),
                errors: stats.errors_total(),
                unsent: stats.unsent,
                unfinished: stats.unfinished,
            },
            latency_us: Percentiles::of(&stats.corrected),
            uncorrected_latency_us: is_open_loop.then(|| Percentiles::of(&stats.uncorrected)),
            send_lag_us: is_open_loop.then(|| Percentiles::of(&stats.send_lag)),
            errors: ErrorKind::ALL
                .iter()
                .map(|&k| (k.name(), stats.errors[k as usize]))
                .collect(),
            non_2xx: stats
                .non_2xx()
                .map(|(status, n)| (status.to_string(), n))
                .collect(),
            classes: Class::ALL
                .iter()
                .map(|&c| {
                    (
                        c.name(),
                        ClassSummary {
                            sent: stats.sent_by_class[c as usize],
                            latency_us: Percentiles::of(&stats.by_class[c as usize]),
                        },
                    )
                })
                .collect(),
            connections_opened: stats.connects,
            connect_failures: stats.connect_failures,
            new_conn_skipped: stats.new_conn_skipped,
            curve: percentile_curve(&stats.corrected),
        }
    }

    /// True if anything went wrong that `--fail-on-error` should turn into a failing exit.
    pub fn has_failures(&self) -> bool {
        self.requests.errors > 0 || self.requests.non_2xx > 0 || self.requests.unfinished > 0
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    /// The human-readable summary printed to stdout.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "ringgate-load: {} ({})", self.target, self.label);
        let rate = match self.rate_requested {
            Some(r) => format!("{}, {} req/s requested", self.mode, trim_float(r)),
            None => format!("{}, max throughput", self.mode),
        };
        let _ = writeln!(
            w,
            "  mode         {rate}; {} thread(s), {} connection(s), pipeline {}",
            self.threads, self.connections, self.pipeline
        );
        let _ = writeln!(
            w,
            "  mix          commands {} : queries {}; {} users ({}); user id in queries: {}",
            self.mix["commands"],
            self.mix["queries"],
            self.users,
            self.user_dist,
            format!("{:?}", self.query_form).to_lowercase()
        );
        let _ = writeln!(
            w,
            "  measured     {:.2} s after {:.2} s warm-up",
            self.duration_s, self.warmup_s
        );
        let _ = writeln!(w);
        let corrected_note = if self.mode == "open-loop" {
            " (corrected for coordinated omission: from intended send time)"
        } else {
            ""
        };
        let _ = writeln!(w, "  latency{corrected_note}");
        let _ = writeln!(
            w,
            "  {:<12}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean", "stdev", "count"
        );
        let mut row = |name: &str, p: &Percentiles| {
            let _ = writeln!(
                w,
                "  {:<12}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
                name,
                fmt_us(p.p50),
                fmt_us(p.p90),
                fmt_us(p.p99),
                fmt_us(p.p99_9),
                fmt_us(p.p99_99),
                fmt_us(p.max),
                fmt_us(p.mean),
                fmt_us(p.stdev),
                p.count
            );
        };
        row("all", &self.latency_us);
        for (name, class) in &self.classes {
            row(name, &class.latency_us);
        }
        if let Some(uncorrected) = &self.uncorrected_latency_us {
            row("uncorrected", uncorrected);
        }
        if let Some(lag) = &self.send_lag_us {
            row("send lag", lag);
        }
        let _ = writeln!(w);
        let requested = self
            .rate_requested
            .map(|r| format!(" ({} requested)", trim_float(r)))
            .unwrap_or_default();
        let _ = writeln!(
            w,
            "  throughput   {:.1} req/s achieved{requested}",
            self.rps
        );
        let r = &self.requests;
        let _ = writeln!(
            w,
            "  requests     sent {}, completed {}: 2xx {}, non-2xx {}",
            r.sent, r.completed, r.ok_2xx, r.non_2xx
        );
        let kinds: Vec<String> = self
            .errors
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            w,
            "  errors       {} ({}); unsent {}, unfinished {}",
            r.errors,
            kinds.join(", "),
            r.unsent,
            r.unfinished
        );
        if !self.non_2xx.is_empty() {
            let statuses: Vec<String> = self
                .non_2xx
                .iter()
                .map(|(s, n)| format!("{s}: {n}"))
                .collect();
            let _ = writeln!(w, "  non-2xx      {}", statuses.join(", "));
        }
        let _ = writeln!(
            w,
            "  connections  opened {}, connect failures {}, new-conn skipped {}",
            self.connections_opened, self.connect_failures, self.new_conn_skipped
        );
        if r.unsent > 0 {
            let _ = writeln!(
                w,
                "  WARNING: {} requests were never sent: the target (or this generator) could \
                 not keep up with the requested rate",
                r.unsent
            );
        }
        out
    }
}

/// `[percentile, µs]` points at HdrHistogram's usual ticks.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|v| {
            [
                v.quantile_iterated_to() * 100.0,
                v.value_iterated_to() as f64 / 1000.0,
            ]
        })
        .collect()
}

/// Writes `h` (recorded in ns) as an HdrHistogram percentile distribution in microseconds.
pub fn write_hgrm(h: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    const SCALE: f64 = 1000.0; // ns → µs
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let digits = usize::from(h.sigfig());
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / SCALE;
            let quantile = v.quantile_iterated_to();
            if quantile < 1.0 {
                writeln!(
                    out,
                    "{value:12.digits$} {quantile:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - quantile)
                )?;
            } else {
                writeln!(out, "{value:12.digits$} {quantile:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / SCALE, h.stdev() / SCALE, h.max() as f64 / SCALE)
    };
    let sub_buckets = (2.0 * 10f64.powi(i32::from(h.sigfig())))
        .log2()
        .ceil()
        .exp2() as u64;
    writeln!(
        out,
        "#[Mean    = {mean:12.digits$}, StdDeviation   = {stdev:12.digits$}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:12.digits$}, Total count    = {:12}]",
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {sub_buckets:12}]",
        h.buckets()
    )?;
    Ok(())
}

/// Reads the `(percentile 0..=100, value)` points of an `.hgrm` text (values in its own unit).
pub fn parse_hgrm(text: &str) -> Result<Vec<[f64; 2]>, String> {
    let mut points = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(value), Some(quantile)) = (fields.next(), fields.next()) else {
            continue;
        };
        let (Ok(value), Ok(quantile)) = (value.parse::<f64>(), quantile.parse::<f64>()) else {
            continue; // header, footer, blank
        };
        if (0.0..=1.0).contains(&quantile) {
            points.push([quantile * 100.0, value]);
        }
    }
    if points.is_empty() {
        return Err("no percentile lines found (is this an .hgrm file?)".into());
    }
    Ok(points)
}

fn trim_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// `23.4us`, `1.52ms`, `1.003s`.
pub fn fmt_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.1}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1_000.0)
    } else {
        format!("{:.3}s", us / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn hgrm_matches_the_hdrhistogram_layout_and_reads_back() {
        let mut h = new_histogram();
        for i in 1..=10_000u64 {
            h.record(i * 1_000).unwrap(); // 1 µs .. 10 ms
        }
        let mut out = Vec::new();
        write_hgrm(&h, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        // First data line: the minimum, percentile 0 (well: the first tick).
        assert!(lines[2].starts_with("       1.000 0.000"), "{}", lines[2]);
        let last_data = lines[lines.len() - 4];
        assert!(
            last_data.contains(" 1.000000000000      10000"),
            "{last_data}"
        );
        assert_eq!(last_data.split_whitespace().count(), 3);
        assert!(lines[lines.len() - 3].starts_with("#[Mean    =     5000.5"));
        assert!(lines[lines.len() - 2].starts_with("#[Max     =    10002.431"));
        assert!(lines[lines.len() - 2].ends_with("Total count    =        10000]"));
        assert!(lines[lines.len() - 1].contains("SubBuckets     =         2048]"));

        let points = parse_hgrm(&text).unwrap();
        let median = points.iter().find(|p| p[0] >= 50.0).unwrap();
        assert!((median[1] - 5000.0).abs() < 10.0, "{median:?}");
        assert_eq!(points.last().unwrap()[0], 100.0);
        assert!(parse_hgrm("nothing here").is_err());
    }

    #[test]
    fn percentiles_are_in_microseconds() {
        let mut h = new_histogram();
        for _ in 0..99 {
            h.record(20_000_000).unwrap();
        }
        h.record(1_000_000_000).unwrap();
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 100);
        assert!((p.p50 / 20_000.0 - 1.0).abs() < 1e-3);
        assert!((p.max / 1_000_000.0 - 1.0).abs() < 1e-3);
        assert_eq!(fmt_us(p.p50), "20.00ms");
        assert_eq!(fmt_us(12.34), "12.3us");
        assert_eq!(fmt_us(1_500_000.0), "1.500s");
        let curve = percentile_curve(&h);
        assert_eq!(curve.last().unwrap()[0], 100.0);
    }
}
