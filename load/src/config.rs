//! The validated description of one load run.
//!
//! [`LoadConfig`] is what [`crate::cli::RunArgs`] becomes after every string has been parsed
//! and checked; nothing downstream parses text. Units are in the field names.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Most distinct user ids: ids are pre-formatted (~9 bytes each) and a Zipf table costs 8
/// bytes per user, so this bounds start-up memory to well under a gigabyte.
pub const MAX_USERS: u64 = 10_000_000;

/// How long the measured part of a run lasts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunLength {
    /// Issue requests for this long after the warm-up.
    Duration(Duration),
    /// Issue exactly this many measured requests (after the warm-up), then stop.
    Requests(u64),
}

/// Share of Commands and Queries, as integer weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub command_weight: u32,
    pub query_weight: u32,
}

impl Mix {
    /// Probability that a request is a Command.
    pub fn command_fraction(&self) -> f64 {
        f64::from(self.command_weight) / f64::from(self.command_weight + self.query_weight)
    }
}

/// Where a Query carries its `user_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryForm {
    /// `X-User-Id: u123` header.
    Header,
    /// `?user_id=u123` query parameter.
    Query,
    /// Each Query picks one of the two at random (50/50).
    Mixed,
}

/// How `user_id`s are drawn from `u1..=uK`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UserDist {
    Uniform,
    /// Zipf-like: user `k` has weight `1 / k^exponent`.
    Zipf {
        exponent: f64,
    },
}

impl fmt::Display for UserDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserDist::Uniform => write!(f, "uniform"),
            UserDist::Zipf { exponent } => write!(f, "zipf:{exponent}"),
        }
    }
}

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub target: SocketAddr,
    /// The `host:port` text the user gave, for reports.
    pub target_text: String,
    pub host_header: String,
    /// `None` = closed-loop (max throughput).
    pub rate_per_s: Option<f64>,
    pub connections: usize,
    pub threads: usize,
    pub pipeline_depth: usize,
    pub length: RunLength,
    pub warmup: Duration,
    pub request_timeout: Duration,
    pub mix: Mix,
    pub query_form: QueryForm,
    pub users: u64,
    pub user_dist: UserDist,
    pub command_path: String,
    pub query_path: String,
    /// Fraction of requests sent on a freshly opened connection (0 = always keep-alive).
    pub new_conn_ratio: f64,
    /// CPU ids to pin worker threads to, round-robin; `None` = not pinned.
    pub cpus: Option<Vec<usize>>,
    pub seed: u64,
    /// Name of the run in reports and plot legends.
    pub label: String,
}

impl LoadConfig {
    /// A config with the documented defaults, aimed at `target`.
    pub fn new(target: SocketAddr) -> Self {
        LoadConfig {
            target,
            target_text: target.to_string(),
            host_header: target.to_string(),
            rate_per_s: None,
            connections: 16,
            threads: 1,
            pipeline_depth: 1,
            length: RunLength::Duration(Duration::from_secs(10)),
            warmup: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            mix: Mix {
                command_weight: 30,
                query_weight: 70,
            },
            query_form: QueryForm::Header,
            users: 1000,
            user_dist: UserDist::Uniform,
            command_path: "/api/spot/v2/order".to_string(),
            query_path: "/api/spot/user/data".to_string(),
            new_conn_ratio: 0.0,
            cpus: None,
            seed: 1,
            label: target.to_string(),
        }
    }

    /// Checks the cross-field rules; the CLI calls this, and so does [`crate::run`].
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if self.pipeline_depth == 0 {
            return Err("--pipeline must be at least 1".into());
        }
        if let Some(rate) = self.rate_per_s {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(format!("--rate must be a positive number, got {rate}"));
            }
        }
        if self.mix.command_weight + self.mix.query_weight == 0 {
            return Err("--mix needs a positive weight for commands or queries".into());
        }
        if !(1..=MAX_USERS).contains(&self.users) {
            return Err(format!("--users must be within 1..={MAX_USERS}"));
        }
        if !(0.0..=1.0).contains(&self.new_conn_ratio) {
            return Err("--new-conn-ratio must be within 0..=1".into());
        }
        if self.request_timeout.is_zero() {
            return Err("--timeout must be positive".into());
        }
        match self.length {
            RunLength::Duration(d) if d.is_zero() => {
                return Err("--duration must be positive".into())
            }
            RunLength::Requests(0) => return Err("--requests must be at least 1".into()),
            _ => {}
        }
        if let UserDist::Zipf { exponent } = self.user_dist {
            if !(exponent.is_finite() && exponent > 0.0) {
                return Err("zipf exponent must be a positive number".into());
            }
        }
        for (name, path) in [
            ("--command-path", &self.command_path),
            ("--query-path", &self.query_path),
        ] {
            if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(format!(
                    "{name} must start with '/' and contain no spaces or controls"
                ));
            }
        }
        if self.host_header.bytes().any(|b| b < b' ' || b == 0x7f) {
            return Err("--host-header must not contain control characters".into());
        }
        Ok(())
    }

    /// Threads actually used: never more than connections.
    pub fn effective_threads(&self) -> usize {
        self.threads.min(self.connections)
    }

    pub fn is_open_loop(&self) -> bool {
        self.rate_per_s.is_some()
    }
}
