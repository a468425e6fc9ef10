//! Configuration: load the TOML file, validate it, produce a typed [`Config`].
//!
//! Two layers (STYLE habit 3): [`file::FileConfig`] mirrors the TOML exactly; [`Config`] is
//! validated and typed, with units in names, so nothing downstream parses a string.
//! An invalid file is refused with a [`ConfigError`] naming the file, the line and the key.
//! Loading never touches the data path: the control plane builds a new routing table from
//! a `Config` and hands it to the workers.

pub mod file;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use toml::Spanned;

use crate::access_log::{AccessLogConfig, AccessLogFormat};
use crate::route::extract::ExtractRules;
use crate::route::partition::fnv1a64;
use file::FileConfig;

/// A refused configuration: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Which io driver workers run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring, falling back to epoll if it cannot be set up.
    Auto,
    /// io_uring only (fail if unavailable).
    IoUring,
    /// epoll only.
    Epoll,
}

impl DriverChoice {
    /// Parse `auto`, `io_uring`/`uring`, `epoll`/`legacy`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "io_uring" | "uring" | "iouring" => Some(Self::IoUring),
            "epoll" | "legacy" => Some(Self::Epoll),
            _ => None,
        }
    }
}

/// Worker threads.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Number of workers (resolved: never 0).
    pub count: usize,
    /// Pin each worker to a core.
    pub pin: bool,
    /// Cores in worker order (empty: worker i on core i mod cores).
    pub cpus: Vec<usize>,
    /// Driver choice.
    pub driver: DriverChoice,
    /// io_uring entries.
    pub ring_entries: u32,
}

/// Settings a worker reads per request; swapped with the routing table on reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// 431 beyond.
    pub max_head_bytes: usize,
    /// 431 beyond.
    pub max_headers: usize,
    /// 413 beyond (only when the body is needed for routing).
    pub body_scan_bytes: usize,
    /// Bodies at least this large are spliced.
    pub splice_threshold_bytes: u64,
    /// Head read deadline.
    pub client_header_timeout: Duration,
    /// Keep-alive idle limit.
    pub client_idle_timeout: Duration,
    /// Longest pause in a request body.
    pub client_body_timeout: Duration,
    /// Upstream connect limit.
    pub upstream_connect_timeout: Duration,
    /// Upstream response limit.
    pub upstream_response_timeout: Duration,
    /// Idle pooled connections per backend per worker.
    pub pool_max_idle_per_backend: usize,
    /// Pooled connection idle limit.
    pub pool_idle_timeout: Duration,
    /// Add `X-Forwarded-For`.
    pub x_forwarded_for: bool,
    /// Protocols an upgrade may switch to.
    pub upgrade_protocols: Vec<Box<[u8]>>,
    /// Whole-request deadline (None: none).
    pub request_deadline: Option<Duration>,
    /// Circuit breaker (None: off).
    pub circuit: Option<CircuitSettings>,
    /// Query retries.
    pub retry: RetrySettings,
    /// In-flight requests per worker at which Commands are shed.
    pub max_in_flight: usize,
    /// In-flight requests per worker at which Queries are shed.
    pub query_shed_in_flight: usize,
}

/// Passive ejection settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitSettings {
    /// Consecutive failures that open the circuit.
    pub consecutive_failures: u32,
    /// Open → half-open after this long.
    pub cooldown: Duration,
    /// 5xx responses count as failures.
    pub count_5xx: bool,
}

/// Query retry settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrySettings {
    /// Attempts per Query including the first.
    pub max_attempts: u32,
    /// First backoff.
    pub backoff_base: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Budget earned per request.
    pub budget_ratio: f64,
    /// Budget cap (and initial value).
    pub budget_reserve: f64,
}

impl Eq for RetrySettings {}

/// Active health check settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    /// Between checks.
    pub interval: Duration,
    /// Per check.
    pub timeout: Duration,
    /// Failures to mark down.
    pub fall: u32,
    /// Successes to mark up.
    pub rise: u32,
    /// HTTP path, or None for a TCP connect check.
    pub http_path: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        let text = "";
        let file: FileConfig = toml::from_str(text).expect("empty config parses");
        let mut errors = Errors::new(Path::new("<defaults>"), text);
        settings_from(&file, &mut errors)
    }
}

/// Load-balancing policy inside a server list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Round-robin over available servers (per worker).
    RoundRobin,
    /// First available server always.
    PrimaryBackup,
}

/// A validated partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSpec {
    /// Name (`zone_1`).
    pub name: String,
    /// Servers for Commands.
    pub write: Vec<SocketAddr>,
    /// Servers for Queries (empty: use `write`).
    pub read: Vec<SocketAddr>,
    /// Policy.
    pub policy: Policy,
    /// Whether unknown users may hash here (false for the implicit default partition).
    pub is_hashed: bool,
}

/// Where requests without a user id go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultRoute {
    /// To this partition (index into `partitions`).
    Partition(usize),
    /// Refused with 400.
    Reject,
}

/// Everything the router needs to build a routing table.
#[derive(Clone, Debug)]
pub struct RouteSpec {
    /// Partitions; the implicit default partition (if any) is last.
    pub partitions: Vec<PartitionSpec>,
    /// Explicit user → partition index.
    pub users: Vec<(Box<[u8]>, usize)>,
    /// Requests without a user id.
    pub default: DefaultRoute,
    /// Command path prefixes.
    pub command_prefixes: Vec<Box<[u8]>>,
    /// Query path prefixes.
    pub query_prefixes: Vec<Box<[u8]>>,
    /// Extraction lists.
    pub extract: ExtractRules,
}

/// Where a config came from.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    /// File path.
    pub path: PathBuf,
    /// FNV-1a 64 of the file bytes (identical files, identical hash, on every host).
    pub hash: u64,
    /// When it was loaded.
    pub loaded_at: SystemTime,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Provenance.
    pub source: ConfigSource,
    /// Data-plane listen address.
    pub listen: SocketAddr,
    /// listen(2) backlog.
    pub backlog: i32,
    /// Connection bound per worker.
    pub max_connections_per_worker: usize,
    /// Admin listener (None: disabled).
    pub admin: Option<SocketAddr>,
    /// Workers.
    pub workers: WorkerSettings,
    /// Per-request settings.
    pub settings: Settings,
    /// Routing.
    pub routes: RouteSpec,
    /// Access log (None: off).
    pub access_log: Option<AccessLogConfig>,
    /// Active health checks (None: off).
    pub health: Option<HealthSettings>,
}

impl Config {
    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Validate config text (`path` is used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            ConfigError {
                path: path.to_path_buf(),
                line,
                key: None,
                message: e.message().to_string(),
            }
        })?;
        let mut errors = Errors::new(path, text);
        let config = build(&file, &mut errors);
        match errors.first {
            Some(e) => Err(e),
            None => Ok(Config {
                source: ConfigSource {
                    path: path.to_path_buf(),
                    hash: fnv1a64(text.as_bytes()),
                    loaded_at: SystemTime::now(),
                },
                ..config
            }),
        }
    }

    /// Number of distinct backend addresses.
    pub fn backend_addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .routes
            .partitions
            .iter()
            .flat_map(|p| p.write.iter().chain(p.read.iter()).copied())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// A human summary (for `--check` and logs).
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "config {} (hash {:016x})",
            self.source.path.display(),
            self.source.hash
        );
        let _ = writeln!(
            s,
            "listen {}  admin {}",
            self.listen,
            self.admin.map_or("off".into(), |a| a.to_string())
        );
        let _ = writeln!(
            s,
            "workers {} (pin {}, driver {:?})",
            self.workers.count, self.workers.pin, self.workers.driver
        );
        for p in &self.routes.partitions {
            let read = if p.read.is_empty() {
                "= write".to_string()
            } else {
                list(&p.read)
            };
            let _ = writeln!(
                s,
                "partition {}{}: write [{}] read [{}] {:?}",
                p.name,
                if p.is_hashed { "" } else { " (default only)" },
                list(&p.write),
                read,
                p.policy
            );
        }
        let default = match &self.routes.default {
            DefaultRoute::Partition(i) => self.routes.partitions[*i].name.clone(),
            DefaultRoute::Reject => "reject (400)".into(),
        };
        let _ = writeln!(
            s,
            "users {} explicit; no user id -> {default}",
            self.routes.users.len()
        );
        s
    }
}

fn list(v: &[SocketAddr]) -> String {
    v.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Collects the first validation error (with line and key).
struct Errors<'a> {
    path: &'a Path,
    text: &'a str,
    first: Option<ConfigError>,
}

impl<'a> Errors<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        Self {
            path,
            text,
            first: None,
        }
    }

    fn add(&mut self, span: Range<usize>, key: &str, message: String) {
        if self.first.is_none() {
            let line = (span.end > 0).then(|| line_of(self.text, span.start));
            self.first = Some(ConfigError {
                path: self.path.to_path_buf(),
                line,
                key: Some(key.to_string()),
                message,
            });
        }
    }

    fn addr(&mut self, v: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match resolve(v.get_ref()) {
            Ok(a) => Some(a),
            Err(m) => {
                self.add(v.span(), key, m);
                None
            }
        }
    }

    fn range(&mut self, v: &Spanned<usize>, key: &str, lo: usize, hi: usize) -> usize {
        let n = *v.get_ref();
        if n < lo || n > hi {
            self.add(v.span(), key, format!("{n} is out of range {lo}..={hi}"));
        }
        n.clamp(lo, hi)
    }
}

/// `host:port` → the first address it resolves to.
fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    match s.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("\"{s}\" resolves to no address")),
        Err(e) => Err(format!("\"{s}\" is not a valid host:port ({e})")),
    }
}

fn settings_from(f: &FileConfig, errors: &mut Errors<'_>) -> Settings {
    let ms = Duration::from_millis;
    let t = &f.timeouts;
    Settings {
        max_head_bytes: errors.range(
            &f.limits.max_head_bytes,
            "limits.max_head_bytes",
            1024,
            1 << 20,
        ),
        max_headers: errors.range(
            &f.limits.max_headers,
            "limits.max_headers",
            8,
            crate::http::parse::MAX_HEADERS_LIMIT,
        ),
        body_scan_bytes: errors.range(
            &f.limits.body_scan_bytes,
            "limits.body_scan_bytes",
            0,
            16 << 20,
        ),
        splice_threshold_bytes: f.limits.splice_threshold_bytes,
        client_header_timeout: ms(t.client_header_ms.max(1)),
        client_idle_timeout: ms(t.client_idle_ms.max(1)),
        client_body_timeout: ms(t.client_body_ms.max(1)),
        upstream_connect_timeout: ms(t.upstream_connect_ms.max(1)),
        upstream_response_timeout: ms(t.upstream_response_ms.max(1)),
        pool_max_idle_per_backend: f.pool.max_idle_per_backend,
        pool_idle_timeout: ms(f.pool.idle_timeout_ms.max(1)),
        x_forwarded_for: f.forward.x_forwarded_for,
        upgrade_protocols: f
            .forward
            .upgrade_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec().into_boxed_slice())
            .collect(),
        request_deadline: (t.request_deadline_ms > 0).then(|| ms(t.request_deadline_ms)),
        circuit: f.circuit.enabled.then(|| CircuitSettings {
            consecutive_failures: f.circuit.consecutive_failures.max(1),
            cooldown: ms(f.circuit.cooldown_ms.max(1)),
            count_5xx: f.circuit.count_5xx,
        }),
        retry: RetrySettings {
            max_attempts: f.retry.max_attempts.clamp(1, 16),
            backoff_base: ms(f.retry.backoff_base_ms),
            backoff_max: ms(f.retry.backoff_max_ms),
            budget_ratio: f.retry.budget_ratio.clamp(0.0, 1.0),
            budget_reserve: f.retry.budget_reserve.max(0.0),
        },
        max_in_flight: f.overload.max_in_flight_per_worker.max(1),
        query_shed_in_flight: ((f.overload.max_in_flight_per_worker.max(1) as f64
            * f.overload.query_shed_ratio.clamp(0.0, 1.0))
        .ceil() as usize)
            .max(1),
    }
}

fn build(f: &FileConfig, errors: &mut Errors<'_>) -> Config {
    let listen = errors
        .addr(&f.listener.address, "listener.address")
        .unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
    let admin = if f.admin.address.get_ref().is_empty() {
        None
    } else {
        errors.addr(&f.admin.address, "admin.address")
    };
    let driver = DriverChoice::parse(f.workers.driver.get_ref()).unwrap_or_else(|| {
        errors.add(
            f.workers.driver.span(),
            "workers.driver",
            format!(
                "\"{}\" is not one of auto, io_uring, epoll",
                f.workers.driver.get_ref()
            ),
        );
        DriverChoice::Auto
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = WorkerSettings {
        count: if f.workers.count == 0 {
            cores
        } else {
            f.workers.count
        },
        pin: f.workers.pin,
        cpus: f.workers.cpus.clone(),
        driver,
        ring_entries: f.workers.ring_entries.clamp(64, 32768),
    };
    let settings = settings_from(f, errors);
    let routes = routes_from(f, errors);
    let access_log = if f.log.access_log.is_empty() {
        None
    } else {
        let format = match f.log.access_log_format.get_ref().as_str() {
            "text" => AccessLogFormat::Text,
            "json" => AccessLogFormat::Json,
            other => {
                errors.add(
                    f.log.access_log_format.span(),
                    "log.access_log_format",
                    format!("\"{other}\" is not text or json"),
                );
                AccessLogFormat::Text
            }
        };
        Some(AccessLogConfig {
            path: PathBuf::from(&f.log.access_log),
            format,
            queue_lines: f.log.access_log_queue_lines,
        })
    };
    Config {
        source: ConfigSource {
            path: PathBuf::new(),
            hash: 0,
            loaded_at: SystemTime::UNIX_EPOCH,
        },
        listen,
        backlog: f.listener.backlog.max(1),
        max_connections_per_worker: f.listener.max_connections_per_worker.max(1),
        admin,
        workers,
        settings,
        routes,
        access_log,
        health: f.health.enabled.then(|| HealthSettings {
            interval: Duration::from_millis(f.health.interval_ms.max(10)),
            timeout: Duration::from_millis(f.health.timeout_ms.max(1)),
            fall: f.health.fall.max(1),
            rise: f.health.rise.max(1),
            http_path: (!f.health.http_path.is_empty()).then(|| f.health.http_path.clone()),
        }),
    }
}

fn routes_from(f: &FileConfig, errors: &mut Errors<'_>) -> RouteSpec {
    let mut partitions = Vec::new();
    for (name, section) in &f.partitions {
        let key = format!("partitions.{name}");
        let span = section.span();
        let p = section.get_ref();
        let addrs =
            |errors: &mut Errors<'_>, list: &[Spanned<String>], field: &str| -> Vec<SocketAddr> {
                let mut out: Vec<SocketAddr> = Vec::new();
                for v in list {
                    if let Some(a) = errors.addr(v, &format!("{key}.{field}")) {
                        if out.contains(&a) {
                            errors.add(
                                v.span(),
                                &format!("{key}.{field}"),
                                format!("{a} is listed twice"),
                            );
                        }
                        out.push(a);
                    }
                }
                out
            };
        let servers = addrs(errors, &p.servers, "servers");
        let mut write = addrs(errors, &p.write, "write");
        let mut read = addrs(errors, &p.read, "read");
        if !servers.is_empty() {
            if !write.is_empty() || !read.is_empty() {
                errors.add(
                    span.clone(),
                    &key,
                    "use either `servers` or `write`/`read`, not both".into(),
                );
            }
            write = servers;
            read = Vec::new();
        }
        if write.is_empty() {
            errors.add(
                span.clone(),
                &key,
                "a partition needs at least one server (`servers` or `write`)".into(),
            );
        }
        let policy = match p.policy.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("round_robin", _)) => Policy::RoundRobin,
            Some(("primary_backup", _)) => Policy::PrimaryBackup,
            Some((other, s)) => {
                errors.add(
                    s,
                    &format!("{key}.policy"),
                    format!("\"{other}\" is not round_robin or primary_backup"),
                );
                Policy::RoundRobin
            }
        };
        partitions.push(PartitionSpec {
            name: name.clone(),
            write,
            read,
            policy,
            is_hashed: true,
        });
    }

    let default = match &f.default_backend {
        None => DefaultRoute::Reject,
        Some(_) if f.reject_without_user => DefaultRoute::Reject,
        Some(v) => match partitions.iter().position(|p| p.name == *v.get_ref()) {
            Some(i) => DefaultRoute::Partition(i),
            None => match errors.addr(v, "default_backend") {
                Some(a) => {
                    partitions.push(PartitionSpec {
                        name: "default".into(),
                        write: vec![a],
                        read: Vec::new(),
                        policy: Policy::RoundRobin,
                        is_hashed: false,
                    });
                    DefaultRoute::Partition(partitions.len() - 1)
                }
                None => DefaultRoute::Reject,
            },
        },
    };
    if partitions.is_empty() {
        errors.add(
            0..0,
            "partitions",
            "no partitions and no default_backend: nothing to route to".into(),
        );
    }

    let mut users = Vec::with_capacity(f.users.len());
    for (user, part) in &f.users {
        match partitions
            .iter()
            .position(|p| p.is_hashed && p.name == *part.get_ref())
        {
            Some(i) => users.push((user.as_bytes().to_vec().into_boxed_slice(), i)),
            None => errors.add(
                part.span(),
                &format!("users.{user}"),
                format!("unknown partition \"{}\"", part.get_ref()),
            ),
        }
    }

    let prefixes =
        |errors: &mut Errors<'_>, list: &[Spanned<String>], key: &str| -> Vec<Box<[u8]>> {
            list.iter()
                .map(|p| {
                    if !p.get_ref().starts_with('/') {
                        errors.add(
                            p.span(),
                            key,
                            format!("\"{}\" must start with /", p.get_ref()),
                        );
                    }
                    p.get_ref().as_bytes().to_vec().into_boxed_slice()
                })
                .collect()
        };
    let command_prefixes = prefixes(
        errors,
        &f.classify.command_prefixes,
        "classify.command_prefixes",
    );
    let query_prefixes = prefixes(
        errors,
        &f.classify.query_prefixes,
        "classify.query_prefixes",
    );

    let names = |errors: &mut Errors<'_>,
                 list: &[Spanned<String>],
                 key: &str,
                 header: bool|
     -> Vec<Box<[u8]>> {
        list.iter()
            .map(|n| {
                let s = n.get_ref();
                let valid = !s.is_empty()
                    && s.len() <= 64
                    && (!header || s.bytes().all(crate::http::field::is_tchar));
                if !valid {
                    errors.add(
                        n.span(),
                        key,
                        format!(
                            "\"{s}\" is not a valid name (1-64 bytes{})",
                            if header { ", token characters" } else { "" }
                        ),
                    );
                }
                s.as_bytes().to_vec().into_boxed_slice()
            })
            .collect()
    };
    let extract = ExtractRules {
        headers: names(errors, &f.extract.headers, "extract.headers", true),
        query_keys: names(errors, &f.extract.query, "extract.query", false),
        json_keys: names(errors, &f.extract.json_keys, "extract.json_keys", false),
        max_user_id_bytes: errors.range(
            &f.limits.max_user_id_bytes,
            "limits.max_user_id_bytes",
            1,
            4096,
        ),
    };

    RouteSpec {
        partitions,
        users,
        default,
        command_prefixes,
        query_prefixes,
        extract,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn seed_format_loads_unchanged() {
        let c = parse(
            r#"
default_backend = "127.0.0.1:3001"
[partitions.zone_1]
servers = ["127.0.0.1:3001", "127.0.0.1:3002"]   # used for both reads and writes
[partitions.zone_2]
write = ["127.0.0.1:3003"]                        # the CQRS form
read  = ["127.0.0.1:3013", "127.0.0.1:3014"]
[users]
alice = "zone_1"
bob = "zone_2"
"#,
        )
        .unwrap();
        assert_eq!(c.routes.partitions.len(), 3);
        assert_eq!(c.routes.partitions[0].write.len(), 2);
        assert!(c.routes.partitions[0].read.is_empty());
        assert_eq!(c.routes.partitions[1].read.len(), 2);
        assert_eq!(c.routes.default, DefaultRoute::Partition(2));
        assert!(!c.routes.partitions[2].is_hashed);
        assert_eq!(c.routes.users.len(), 2);
        assert_eq!(c.settings, Settings::default());
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert!(c.summary().contains("zone_2"));
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = parse("[partitions.z]\nservers = [\"127.0.0.1:1\"]\n[users]\nalice = \"nope\"\n")
            .unwrap_err();
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("users.alice"));
        assert!(
            e.to_string()
                .starts_with("test.toml:4: key `users.alice`: unknown partition"),
            "{e}"
        );

        let e = parse("[partitions.z]\nservers = [\"not an address\"]\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("partitions.z.servers"))
        );

        let e = parse("[listener]\naddress = \"0.0.0.0:1\"\nbogus = 1\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("bogus"), "{e}");

        let e = parse("[limits]\nmax_head_bytes = 10\n[partitions.z]\nservers=[\"127.0.0.1:1\"]")
            .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("limits.max_head_bytes"))
        );

        let e = parse("[partitions.z]\nservers = [\"127.0.0.1:1\"]\nwrite = [\"127.0.0.1:2\"]\n")
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("partitions.z"));

        let e =
            parse("[partitions.z]\npolicy = \"random\"\nservers=[\"127.0.0.1:1\"]\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("partitions.z.policy"))
        );

        let e = parse("x = [\n").unwrap_err();
        assert!(e.line.is_some());
        assert!(parse("").is_err());
    }

    #[test]
    fn default_backend_may_name_a_partition_or_be_absent() {
        let c = parse("default_backend = \"z\"\n[partitions.z]\nservers = [\"127.0.0.1:1\"]\n")
            .unwrap();
        assert_eq!(c.routes.default, DefaultRoute::Partition(0));
        assert_eq!(c.routes.partitions.len(), 1);
        let c = parse("[partitions.z]\nservers = [\"127.0.0.1:1\"]\n").unwrap();
        assert_eq!(c.routes.default, DefaultRoute::Reject);
    }
}
