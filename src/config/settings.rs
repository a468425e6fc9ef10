//! Process and per-request settings: workers, limits, timeouts, pools, retries, circuit
//! breaker, health checks, access log. Everything here is typed, with units in names
//! (`Duration`s, `_bytes`), and clamped or refused when out of range.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::error::Errors;
use super::file::FileConfig;
use super::users::RateLimitSettings;
use crate::access_log::{AccessLogConfig, AccessLogFormat};
use crate::http::parse::Method;

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

/// io_uring setup flags of a worker's ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingSetup {
    /// No flags.
    Plain,
    /// `COOP_TASKRUN | TASKRUN_FLAG`.
    CoopTaskrun,
    /// `SINGLE_ISSUER | DEFER_TASKRUN`.
    DeferTaskrun,
    /// `SQPOLL` (pinned to the worker's core when pinned).
    Sqpoll,
}

impl RingSetup {
    /// Parse a config value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "plain" => Self::Plain,
            "coop_taskrun" => Self::CoopTaskrun,
            "defer_taskrun" => Self::DeferTaskrun,
            "sqpoll" => Self::Sqpoll,
            _ => return None,
        })
    }

    /// Config/log label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::CoopTaskrun => "coop_taskrun",
            Self::DeferTaskrun => "defer_taskrun",
            Self::Sqpoll => "sqpoll",
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
    /// io_uring setup flags.
    pub ring: RingSetup,
    /// Workers never sleep (spin on their completion queue).
    pub busy_poll: bool,
    /// How long a worker polls instead of sleeping after each request's arrival (zero:
    /// it sleeps whenever it is idle).
    pub spin: Duration,
    /// Plain TCP sockets receive by multishot recv (io_uring only).
    pub multishot: bool,
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
    /// Bodies at least this large are spliced (at least 1).
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
    /// Open upstream connections per backend per worker (0: no bound).
    pub pool_max_connections_per_backend: usize,
    /// Add `X-Forwarded-For`.
    pub x_forwarded_for: bool,
    /// Add `X-Forwarded-Proto`.
    pub x_forwarded_proto: bool,
    /// Peers whose forwarding fields are kept (empty: nobody's).
    pub trusted_proxies: Vec<IpNet>,
    /// Relay interim 1xx answers (other than 100 and 101) to HTTP/1.1 clients.
    pub relay_interim_responses: bool,
    /// The methods after whose request body the upstream connection is pooled, one bit
    /// per [`Method`] (see [`Settings::pools_after_body`]).
    pub trusted_body_methods: u16,
    /// Protocols an upgrade may switch to.
    pub upgrade_protocols: Vec<Box<[u8]>>,
    /// Whole-request deadline (None: none).
    pub request_deadline: Option<Duration>,
    /// A tunnel with no byte either way for this long ends.
    pub tunnel_idle_timeout: Duration,
    /// Longest TLS handshake of a client connection.
    pub tls_handshake_timeout: Duration,
    /// Circuit breaker (None: off).
    pub circuit: Option<CircuitSettings>,
    /// Query retries.
    pub retry: RetrySettings,
    /// In-flight requests per worker at which Commands are shed.
    pub max_in_flight: usize,
    /// In-flight requests per worker at which Queries are shed.
    pub query_shed_in_flight: usize,
    /// Per-user rate limits (None: none).
    pub rate_limit: Option<RateLimitSettings>,
    /// Longest a moved user's Command waits for its Commands in flight to the old
    /// partition (then 503).
    pub migration_max_wait: Duration,
    /// Mirrored Queries in flight per worker.
    pub mirror_max_in_flight: usize,
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

/// The longest `workers.spin_us`: 10 ms, beyond which the worker is busy-polling in all
/// but name.
pub const MAX_SPIN_US: usize = 10_000;

pub(crate) fn settings_from(f: &FileConfig, errors: &mut Errors<'_>) -> Settings {
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
        // 0 (splice everything) is 1: an empty run, between two chunks while their framing
        // is read, would be spliced for ever.
        splice_threshold_bytes: f.limits.splice_threshold_bytes.max(1),
        client_header_timeout: errors.timeout_ms(&t.client_header_ms, "timeouts.client_header_ms"),
        client_idle_timeout: errors.timeout_ms(&t.client_idle_ms, "timeouts.client_idle_ms"),
        client_body_timeout: errors.timeout_ms(&t.client_body_ms, "timeouts.client_body_ms"),
        upstream_connect_timeout: errors
            .timeout_ms(&t.upstream_connect_ms, "timeouts.upstream_connect_ms"),
        upstream_response_timeout: errors
            .timeout_ms(&t.upstream_response_ms, "timeouts.upstream_response_ms"),
        pool_max_idle_per_backend: f.pool.max_idle_per_backend,
        pool_idle_timeout: errors.timeout_ms(&f.pool.idle_timeout_ms, "pool.idle_timeout_ms"),
        pool_max_connections_per_backend: errors.range(
            &f.pool.max_connections_per_backend,
            "pool.max_connections_per_backend",
            0,
            1 << 20,
        ),
        x_forwarded_for: f.forward.x_forwarded_for,
        x_forwarded_proto: f.forward.x_forwarded_proto,
        trusted_proxies: trusted_proxies(&f.forward.trusted_proxies, errors),
        relay_interim_responses: f.forward.relay_interim_responses,
        trusted_body_methods: trusted_body_methods(f, errors),
        upgrade_protocols: upgrade_protocols(f, errors),
        request_deadline: (t.request_deadline_ms > 0).then(|| ms(t.request_deadline_ms)),
        tunnel_idle_timeout: errors.timeout_ms(&t.tunnel_idle_ms, "timeouts.tunnel_idle_ms"),
        tls_handshake_timeout: errors.timeout_ms(&t.tls_handshake_ms, "timeouts.tls_handshake_ms"),
        circuit: circuit_from(f, errors),
        retry: RetrySettings {
            max_attempts: errors.range(&f.retry.max_attempts, "retry.max_attempts", 1, 16),
            backoff_base: ms(f.retry.backoff_base_ms),
            backoff_max: backoff_max(f, errors),
            budget_ratio: errors.real(&f.retry.budget_ratio, "retry.budget_ratio", 0.0, 1.0),
            budget_reserve: errors.real(&f.retry.budget_reserve, "retry.budget_reserve", 0.0, 1e9),
        },
        max_in_flight: max_in_flight(f, errors),
        query_shed_in_flight: query_shed_in_flight(f, errors),
        rate_limit: super::users::rate_limit_from(
            f,
            (*f.limits.max_user_id_bytes.get_ref()).clamp(1, 4096),
            errors,
        ),
        migration_max_wait: super::users::migration_wait_from(f),
        mirror_max_in_flight: errors.range(
            &f.mirror.max_in_flight_per_worker,
            "mirror.max_in_flight_per_worker",
            1,
            1 << 20,
        ),
    }
}

/// The methods whose request bodies upstreams are always trusted to read: the only ones
/// RFC 9110 gives a body a meaning.
const BODY_METHODS: [Method; 3] = [Method::Post, Method::Put, Method::Patch];

fn method_bit(m: Method) -> u16 {
    1 << m as u16
}

/// `forward.trusted_body_methods`: added to POST, PUT and PATCH. Only methods a body may
/// sensibly ride on: not HEAD, TRACE (RFC 9110 §9.3.8: no content), CONNECT (a tunnel),
/// nor extension methods (ringgate tells them apart only as "other").
fn trusted_body_methods(f: &FileConfig, errors: &mut Errors<'_>) -> u16 {
    let list = &f.forward.trusted_body_methods;
    let mut bits = BODY_METHODS.iter().fold(0, |b, &m| b | method_bit(m));
    for name in list.get_ref() {
        let m = Method::from_token(name);
        if matches!(
            m,
            Method::Get
                | Method::Delete
                | Method::Options
                | Method::Post
                | Method::Put
                | Method::Patch
        ) {
            bits |= method_bit(m);
        } else {
            errors.add(
                list.span(),
                "forward.trusted_body_methods",
                format!("{name:?} is not one of \"GET\", \"DELETE\", \"OPTIONS\" (method names are case-sensitive)"),
            );
        }
    }
    bits
}

/// `forward.upgrade_protocols`: each a protocol name as an `Upgrade` field carries it (an
/// RFC 9110 token, optionally `/version`); an empty or spaced name could never match.
fn upgrade_protocols(f: &FileConfig, errors: &mut Errors<'_>) -> Vec<Box<[u8]>> {
    let list = &f.forward.upgrade_protocols;
    for p in list.get_ref() {
        let token = |t: &str| !t.is_empty() && t.bytes().all(crate::http::field::is_tchar);
        let ok = match p.split_once('/') {
            Some((name, version)) => token(name) && token(version),
            None => token(p),
        };
        if !ok {
            errors.add(
                list.span(),
                "forward.upgrade_protocols",
                format!("{p:?} is not a protocol name (a token such as \"websocket\")"),
            );
        }
    }
    list.get_ref()
        .iter()
        .map(|p| p.as_bytes().to_vec().into_boxed_slice())
        .collect()
}

/// `workers.cpus`: every id must be a CPU this process may run on (its affinity mask, so a
/// cgroup or `taskset` counts), or pinning would fail at start-up.
fn cpus_from(cpus: &Spanned<Vec<usize>>, errors: &mut Errors<'_>) -> Vec<usize> {
    let allowed: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let bad: Vec<String> = cpus
        .get_ref()
        .iter()
        .filter(|id| !allowed.is_empty() && !allowed.contains(id))
        .map(ToString::to_string)
        .collect();
    let ids = cpus.get_ref();
    if let Some(twice) = ids
        .iter()
        .enumerate()
        .find_map(|(i, id)| ids[..i].contains(id).then_some(id))
    {
        errors.add(
            cpus.span(),
            "workers.cpus",
            format!("CPU {twice} is listed twice (two workers on one core take turns)"),
        );
    }
    if !bad.is_empty() {
        let allowed: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        errors.add(
            cpus.span(),
            "workers.cpus",
            format!(
                "CPU {} is not one this process may run on (it may use {})",
                bad.join(", "),
                allowed.join(", ")
            ),
        );
    }
    cpus.get_ref().clone()
}

/// The most workers a config may ask for (each is a thread with its own ring and buffers).
pub const MAX_WORKERS: usize = 1024;

pub(crate) fn workers_from(f: &FileConfig, errors: &mut Errors<'_>) -> WorkerSettings {
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
    let ring = RingSetup::parse(f.workers.ring.get_ref()).unwrap_or_else(|| {
        errors.add(
            f.workers.ring.span(),
            "workers.ring",
            format!(
                "\"{}\" is not one of defer_taskrun, coop_taskrun, plain, sqpoll",
                f.workers.ring.get_ref()
            ),
        );
        RingSetup::DeferTaskrun
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    WorkerSettings {
        count: match errors.range(&f.workers.count, "workers.count", 0, MAX_WORKERS) {
            0 => cores,
            n => n,
        },
        pin: f.workers.pin,
        cpus: cpus_from(&f.workers.cpus, errors),
        driver,
        ring_entries: errors.range(&f.workers.ring_entries, "workers.ring_entries", 256, 32768),
        ring,
        busy_poll: f.workers.busy_poll,
        spin: Duration::from_micros(errors.range(
            &f.workers.spin_us,
            "workers.spin_us",
            0,
            MAX_SPIN_US,
        ) as u64),
        multishot: f.workers.multishot,
    }
}

/// `[log]`: checked whether or not the access log is on, so that turning it on later
/// cannot meet a format error.
/// A relative file path is relative to the config file's directory (`config_path`), as the
/// certificate and token paths are, not to wherever the process was started.
pub(crate) fn access_log_from(
    f: &FileConfig,
    config_path: &Path,
    errors: &mut Errors<'_>,
) -> Option<AccessLogConfig> {
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
    // The queue is allocated whole at start: an out-of-range length would pass `--check`
    // and then fail the start (or take the memory of a billion slots).
    let queue_lines = errors.range(
        &f.log.access_log_queue_lines,
        "log.access_log_queue_lines",
        16,
        1 << 20,
    );
    if f.log.access_log.is_empty() {
        return None;
    }
    let path = match f.log.access_log.as_str() {
        "-" => PathBuf::from("-"),
        file => super::admin::resolve_beside(config_path, file),
    };
    Some(AccessLogConfig {
        path,
        format,
        queue_lines,
    })
}

/// `[health]`: checked whether or not the checks are on (a reload may turn them on).
pub(crate) fn health_from(f: &FileConfig, errors: &mut Errors<'_>) -> Option<HealthSettings> {
    let settings = HealthSettings {
        interval: Duration::from_millis(errors.range(
            &f.health.interval_ms,
            "health.interval_ms",
            10,
            86_400_000,
        )),
        timeout: errors.timeout_ms(&f.health.timeout_ms, "health.timeout_ms"),
        fall: errors.range(&f.health.fall, "health.fall", 1, 1000),
        rise: errors.range(&f.health.rise, "health.rise", 1, 1000),
        http_path: health_path(&f.health.http_path, errors),
    };
    f.health.enabled.then_some(settings)
}

/// `[circuit]`: checked whether or not the breaker is on (a reload may turn it on).
fn circuit_from(f: &FileConfig, errors: &mut Errors<'_>) -> Option<CircuitSettings> {
    let settings = CircuitSettings {
        consecutive_failures: errors.range(
            &f.circuit.consecutive_failures,
            "circuit.consecutive_failures",
            1,
            1_000_000,
        ),
        cooldown: errors.timeout_ms(&f.circuit.cooldown_ms, "circuit.cooldown_ms"),
        count_5xx: f.circuit.count_5xx,
    };
    f.circuit.enabled.then_some(settings)
}

/// `forward.trusted_proxies`: addresses (a /32 or /128) or CIDR blocks.
fn trusted_proxies(list: &[Spanned<String>], errors: &mut Errors<'_>) -> Vec<IpNet> {
    let mut out = Vec::with_capacity(list.len());
    for v in list {
        let text = v.get_ref().trim();
        let net = text
            .parse::<IpNet>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from));
        match net {
            Some(n) => out.push(canonical_net(n.trunc())),
            None => errors.add(
                v.span(),
                "forward.trusted_proxies",
                format!("\"{text}\" is not an IP address or a CIDR block (e.g. 10.0.0.0/8)"),
            ),
        }
    }
    out
}

/// An IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) as the IPv4 block it stands for:
/// peers are compared in canonical form, so the mapped spelling would never match.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, n.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

impl Settings {
    /// Whether an upstream connection may be pooled after a request of `method` that had
    /// a body: POST, PUT and PATCH always, others if `forward.trusted_body_methods` lists
    /// them. RFC 9110 gives a body no meaning for the others (GET, HEAD, DELETE, OPTIONS,
    /// TRACE, extensions), and a server that ignores one reads it as a next request, whose
    /// answer, late on the connection, would reach whichever request came next.
    pub fn pools_after_body(&self, method: Method) -> bool {
        self.trusted_body_methods & method_bit(method) != 0
    }

    /// Whether `peer` is a trusted proxy (its forwarding fields are kept).
    #[inline]
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        if self.trusted_proxies.is_empty() {
            return false;
        }
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }
}

/// `health.http_path`: empty (a TCP connect check) or an origin-form path that goes into
/// the probe's request line as written.
fn health_path(v: &Spanned<String>, errors: &mut Errors<'_>) -> Option<String> {
    let path = v.get_ref();
    if path.is_empty() {
        return None;
    }
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        errors.add(
            v.span(),
            "health.http_path",
            format!(
                "{path:?} is not a path: it must start with / and hold only visible ASCII \
                 (percent-encode the rest)"
            ),
        );
        return None;
    }
    Some(path.clone())
}

/// `overload.max_in_flight_per_worker`: at least 1 (0 would shed every request).
fn max_in_flight(f: &FileConfig, errors: &mut Errors<'_>) -> usize {
    errors.range(
        &f.overload.max_in_flight_per_worker,
        "overload.max_in_flight_per_worker",
        1,
        1 << 24,
    )
}

/// In-flight requests at which Queries are shed: `overload.query_shed_ratio` of the bound,
/// rounded down, as the bound itself caps Commands: Queries never hold more places than
/// the fraction, and below 1 it leaves Commands at least one of their own (rounded up,
/// 0.8 × 4 gave Queries all four). The slack absorbs the product's rounding (0.29 × 100
/// is 28.999… in binary). At least 1. A ratio of 0 is refused: it cannot mean what it
/// says (it would shed every Query, and the floor of one place admitted them anyway).
fn query_shed_in_flight(f: &FileConfig, errors: &mut Errors<'_>) -> usize {
    let max = (*f.overload.max_in_flight_per_worker.get_ref()).clamp(1, 1 << 24);
    let (v, key) = (&f.overload.query_shed_ratio, "overload.query_shed_ratio");
    if *v.get_ref() == 0.0 {
        errors.add(
            v.span(),
            key,
            "0 would shed every Query: it must be above 0 (at most 1)".to_string(),
        );
    }
    let ratio = errors.real(v, key, 0.0, 1.0);
    let places = (max as f64 * ratio + 1e-6).floor() as usize;
    let places = if ratio < 1.0 {
        places.min(max - 1)
    } else {
        places
    };
    places.max(1)
}

/// `retry.backoff_max_ms`: the cap of the backoff, no lower than its base.
/// The longest backoff a config may ask for, in ms.
const MAX_BACKOFF_MS: u64 = 60_000;

fn backoff_max(f: &FileConfig, errors: &mut Errors<'_>) -> Duration {
    let (base, max) = (f.retry.backoff_base_ms, *f.retry.backoff_max_ms.get_ref());
    // A retry is for a request whose client is waiting: a minute is already far beyond
    // any response timeout worth having.
    if max > MAX_BACKOFF_MS {
        errors.add(
            f.retry.backoff_max_ms.span(),
            "retry.backoff_max_ms",
            format!("{max} is out of range 0..={MAX_BACKOFF_MS}"),
        );
        return Duration::from_millis(MAX_BACKOFF_MS);
    }
    if max < base {
        errors.add(
            f.retry.backoff_max_ms.span(),
            "retry.backoff_max_ms",
            format!("{max} is below retry.backoff_base_ms ({base})"),
        );
    }
    Duration::from_millis(max.max(base))
}
