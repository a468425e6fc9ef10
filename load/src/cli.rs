//! The command line: clap structs holding exactly what was typed, and the small parsers that
//! turn that text into a [`LoadConfig`].
//!
//! `ringgate-load [run] --target HOST:PORT [options]` runs a load; `ringgate-load plot` overlays
//! saved results in one SVG. Syntax accepted by the parsers:
//!
//! - durations: `10s`, `500ms`, `250us`, `2m`, `1.5s`; a bare number is seconds;
//! - mix: `commands=30,queries=70` (also `c=30,q=70`, `cmd`/`query`); weights, not percents;
//! - user distribution: `uniform`, `zipf` (exponent 1.0) or `zipf:1.2`;
//! - CPU list: `0,1`, `2-5`, `0,2-3`.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{LoadConfig, Mix, QueryForm, RunLength, UserDist};

/// Open/closed-loop HTTP/1.1 load generator with coordinated-omission correction.
#[derive(Debug, Parser)]
#[command(
    name = "ringgate-load",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a load against a target (the default when no subcommand is given).
    Run(Box<RunArgs>),
    /// Overlay several results (`NAME=FILE.json` or `NAME=FILE.hgrm`) in one SVG.
    Plot(PlotArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Target `host:port` (HTTP/1.1, keep-alive).
    #[arg(long, required = true)]
    pub target: Option<String>,
    /// Open-loop: total requests per second, on a fixed schedule. Omit for closed-loop.
    #[arg(short = 'R', long)]
    pub rate: Option<f64>,
    /// Connections in total, spread over the threads.
    #[arg(short, long, default_value_t = 16)]
    pub connections: usize,
    /// Worker threads (each runs its own event loop).
    #[arg(short, long, default_value_t = 1)]
    pub threads: usize,
    /// Requests in flight per connection (HTTP/1.1 pipelining; responses match in order).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Measured duration, e.g. `10s` [default: 10s unless --requests].
    #[arg(short, long, conflicts_with = "requests")]
    pub duration: Option<String>,
    /// Measured request count (instead of --duration).
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Warm-up before measuring; its requests are excluded from all results.
    #[arg(long, default_value = "2s")]
    pub warmup: String,
    /// Per-request timeout, counted from the moment the request was sent.
    #[arg(long, default_value = "5s")]
    pub timeout: String,
    /// Request mix as weights: `commands=30,queries=70`.
    #[arg(long, default_value = "commands=30,queries=70")]
    pub mix: String,
    /// Where Queries carry the user id.
    #[arg(long, value_enum, default_value_t = QueryForm::Header)]
    pub query_form: QueryForm,
    /// Number of distinct user ids (`u1..=uK`).
    #[arg(long, default_value_t = 1000)]
    pub users: u64,
    /// User id distribution: `uniform` or `zipf[:exponent]`.
    #[arg(long, default_value = "uniform")]
    pub user_dist: String,
    /// Path of Commands (POST).
    #[arg(long, default_value = "/api/spot/v2/order")]
    pub command_path: String,
    /// Path of Queries (GET).
    #[arg(long, default_value = "/api/spot/user/data")]
    pub query_path: String,
    /// `Host` header value [default: the --target text].
    #[arg(long)]
    pub host_header: Option<String>,
    /// Fraction (0..=1) of requests sent on a brand-new connection.
    #[arg(long, default_value_t = 0.0)]
    pub new_conn_ratio: f64,
    /// Pin worker threads to these CPUs, round-robin (`0,1` or `2-3`).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Seed of the user/mix random streams (runs are reproducible per seed).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Name of this run in the JSON and in plot legends [default: the target].
    #[arg(long)]
    pub label: Option<String>,
    /// Write the HdrHistogram percentile distribution (values in microseconds).
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// Write the JSON summary.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG of the latency-by-percentile curve(s).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Exit non-zero if any error, non-2xx response or unfinished request occurred.
    #[arg(long)]
    pub fail_on_error: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HgrmUnit {
    /// Microseconds (what `ringgate-load --hgrm` writes).
    Us,
    /// Milliseconds (what wrk2 prints).
    Ms,
}

#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// Output SVG file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Chart title.
    #[arg(long, default_value = "Latency by percentile")]
    pub title: String,
    /// Unit of the values in `.hgrm` inputs.
    #[arg(long, value_enum, default_value_t = HgrmUnit::Us)]
    pub hgrm_unit: HgrmUnit,
    /// Logarithmic latency axis (useful when one curve has a stall).
    #[arg(long)]
    pub log_y: bool,
    /// Inputs as `NAME=FILE` (`.json` from --json, anything else read as `.hgrm`).
    #[arg(required = true)]
    pub inputs: Vec<String>,
}

impl RunArgs {
    /// Parses and validates every field.
    pub fn to_config(&self) -> Result<LoadConfig, String> {
        let target_text = self
            .target
            .clone()
            .ok_or_else(|| "--target is required".to_string())?;
        let target = target_text
            .to_socket_addrs()
            .map_err(|e| format!("--target {target_text}: {e}"))?
            .next()
            .ok_or_else(|| format!("--target {target_text}: no address"))?;
        let length = match (self.requests, &self.duration) {
            (Some(n), _) => RunLength::Requests(n),
            (None, Some(d)) => RunLength::Duration(parse_duration(d)?),
            (None, None) => RunLength::Duration(Duration::from_secs(10)),
        };
        let mut config = LoadConfig::new(target);
        config.host_header = self.host_header.clone().unwrap_or(target_text.clone());
        config.label = self.label.clone().unwrap_or(target_text.clone());
        config.target_text = target_text;
        config.rate_per_s = self.rate;
        config.connections = self.connections;
        config.threads = self.threads;
        config.pipeline_depth = self.pipeline;
        config.length = length;
        config.warmup = parse_duration(&self.warmup)?;
        config.request_timeout = parse_duration(&self.timeout)?;
        config.mix = parse_mix(&self.mix)?;
        config.query_form = self.query_form;
        config.users = self.users;
        config.user_dist = parse_user_dist(&self.user_dist)?;
        config.command_path = self.command_path.clone();
        config.query_path = self.query_path.clone();
        config.new_conn_ratio = self.new_conn_ratio;
        config.cpus = self.cpus.as_deref().map(parse_cpu_list).transpose()?;
        config.seed = self.seed;
        config.validate()?;
        Ok(config)
    }
}

/// `10s`, `500ms`, `250us`, `2m`, `1.5s`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?} (try 10s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "ns" => value / 1e9,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("bad duration unit {other:?} in {text:?}")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("bad duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `commands=30,queries=70` (weights; either may be omitted and is then 0).
pub fn parse_mix(text: &str) -> Result<Mix, String> {
    let mut mix = Mix {
        command_weight: 0,
        query_weight: 0,
    };
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("bad mix part {part:?} (want commands=N,queries=M)"))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| format!("bad mix weight in {part:?}"))?;
        match name.trim().to_ascii_lowercase().as_str() {
            "commands" | "command" | "cmd" | "c" => mix.command_weight = weight,
            "queries" | "query" | "q" => mix.query_weight = weight,
            other => return Err(format!("unknown mix class {other:?} (commands, queries)")),
        }
    }
    if mix
        .command_weight
        .checked_add(mix.query_weight)
        .unwrap_or(0)
        == 0
    {
        return Err(format!("mix {text:?} has no positive weight"));
    }
    Ok(mix)
}

/// `uniform`, `zipf` or `zipf:EXPONENT`.
pub fn parse_user_dist(text: &str) -> Result<UserDist, String> {
    let t = text.trim().to_ascii_lowercase();
    if t == "uniform" {
        return Ok(UserDist::Uniform);
    }
    if t == "zipf" {
        return Ok(UserDist::Zipf { exponent: 1.0 });
    }
    if let Some(exp) = t.strip_prefix("zipf:") {
        let exponent: f64 = exp
            .parse()
            .map_err(|_| format!("bad zipf exponent {exp:?}"))?;
        if exponent.is_finite() && exponent > 0.0 {
            return Ok(UserDist::Zipf { exponent });
        }
        return Err(format!("zipf exponent must be > 0, got {exp}"));
    }
    Err(format!("bad --user-dist {text:?} (uniform | zipf[:s])"))
}

/// `0,1`, `2-5`, `0,2-3`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list {text:?} (want 0,1 or 2-5)");
        if let Some((lo, hi)) = part.split_once('-') {
            let lo: usize = lo.trim().parse().map_err(|_| bad())?;
            let hi: usize = hi.trim().parse().map_err(|_| bad())?;
            if lo > hi {
                return Err(bad());
            }
            cpus.extend(lo..=hi);
        } else {
            cpus.push(part.parse().map_err(|_| bad())?);
        }
    }
    if cpus.is_empty() {
        return Err(format!("empty CPU list {text:?}"));
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5parsecs").is_err());
    }

    #[test]
    fn mix_accepts_long_and_short_names() {
        let m = parse_mix("commands=30,queries=70").unwrap();
        assert_eq!((m.command_weight, m.query_weight), (30, 70));
        let m = parse_mix("q=1").unwrap();
        assert_eq!((m.command_weight, m.query_weight), (0, 1));
        assert!(parse_mix("commands=0,queries=0").is_err());
        assert!(parse_mix("writes=3").is_err());
        assert!(parse_mix("commands").is_err());
    }

    #[test]
    fn user_dist_forms() {
        assert_eq!(parse_user_dist("uniform").unwrap(), UserDist::Uniform);
        assert_eq!(
            parse_user_dist("zipf").unwrap(),
            UserDist::Zipf { exponent: 1.0 }
        );
        assert_eq!(
            parse_user_dist("zipf:1.3").unwrap(),
            UserDist::Zipf { exponent: 1.3 }
        );
        assert!(parse_user_dist("zipf:-1").is_err());
        assert!(parse_user_dist("pareto").is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0,1").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpu_list("2-4,7").unwrap(), vec![2, 3, 4, 7]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn run_args_become_a_config() {
        let cli = Cli::try_parse_from([
            "ringgate-load",
            "--target",
            "127.0.0.1:9",
            "-R",
            "1000",
            "-c",
            "4",
            "--duration",
            "3s",
            "--user-dist",
            "zipf:0.9",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        let config = cli.run.to_config().unwrap();
        assert_eq!(config.rate_per_s, Some(1000.0));
        assert_eq!(config.connections, 4);
        assert_eq!(config.length, RunLength::Duration(Duration::from_secs(3)));
        assert_eq!(config.host_header, "127.0.0.1:9");

        let cli = Cli::try_parse_from(["ringgate-load", "plot", "-o", "x.svg", "a=b.json"]);
        assert!(matches!(cli.unwrap().command, Some(Command::Plot(_))));
        assert!(Cli::try_parse_from(["ringgate-load", "-R", "5"]).is_err());
        assert!(Cli::try_parse_from([
            "ringgate-load",
            "--target",
            "127.0.0.1:9",
            "--pipeline",
            "0"
        ])
        .unwrap()
        .run
        .to_config()
        .is_err());
    }
}
