//! `FileConfig`: exactly what the TOML file says, with a default for every option.
//!
//! Unknown keys are refused (`deny_unknown_fields`), and values that need checking
//! beyond their type carry their position (`Spanned`) so [`super::Config`] can name the
//! line and key of a bad value.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where requests without a user id go: an address or a partition name.
    pub default_backend: Option<Spanned<String>>,
    /// Refuse (400) requests without a user id instead of using `default_backend`.
    #[serde(default)]
    pub reject_without_user: bool,
    /// `[listener]`
    #[serde(default)]
    pub listener: ListenerSection,
    /// `[admin]`
    #[serde(default)]
    pub admin: AdminSection,
    /// `[workers]`
    #[serde(default)]
    pub workers: WorkersSection,
    /// `[limits]`
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[timeouts]`
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    /// `[pool]`
    #[serde(default)]
    pub pool: PoolSection,
    /// `[classify]`
    #[serde(default)]
    pub classify: ClassifySection,
    /// `[extract]`
    #[serde(default)]
    pub extract: ExtractSection,
    /// `[forward]`
    #[serde(default)]
    pub forward: ForwardSection,
    /// `[log]`
    #[serde(default)]
    pub log: LogSection,
    /// `[health]`
    #[serde(default)]
    pub health: HealthSection,
    /// `[circuit]`
    #[serde(default)]
    pub circuit: CircuitSection,
    /// `[retry]`
    #[serde(default)]
    pub retry: RetrySection,
    /// `[overload]`
    #[serde(default)]
    pub overload: OverloadSection,
    /// `[rate_limit]`
    #[serde(default)]
    pub rate_limit: RateLimitSection,
    /// `[migration]`
    #[serde(default)]
    pub migration: MigrationSection,
    /// `[mirror]`
    #[serde(default)]
    pub mirror: MirrorSection,
    /// `[partitions.NAME]`
    #[serde(default)]
    pub partitions: BTreeMap<String, Spanned<PartitionSection>>,
    /// `[users]`: user id → partition name.
    #[serde(default)]
    pub users: BTreeMap<String, Spanned<String>>,
}

/// `[listener]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerSection {
    /// Data-plane listen address.
    pub address: Spanned<String>,
    /// `listen(2)` backlog per worker socket.
    pub backlog: Spanned<i32>,
    /// Open client connections per worker before new ones are refused.
    pub max_connections_per_worker: Spanned<usize>,
    /// `[listener.tls]`: terminate TLS.
    pub tls: Option<ListenerTlsSection>,
}

impl Default for ListenerSection {
    fn default() -> Self {
        Self {
            address: Spanned::new(0..0, "0.0.0.0:8080".into()),
            backlog: Spanned::new(0..0, 4096),
            max_connections_per_worker: Spanned::new(0..0, 16_384),
            tls: None,
        }
    }
}

/// `[listener.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsSection {
    /// Certificate chain, PEM (relative to the config file's directory).
    pub cert: Spanned<String>,
    /// Private key, PEM.
    pub key: Spanned<String>,
    /// ALPN protocols offered, in order (`http/1.1` when absent; only HTTP/1.x may be
    /// offered).
    pub alpn: Option<Spanned<Vec<String>>>,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Admin listen address; empty string disables the admin listener.
    pub address: Spanned<String>,
    /// File holding the bearer token admin requests must carry (relative paths are
    /// relative to the config file's directory). Required off loopback.
    pub token_file: Option<Spanned<String>>,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            address: Spanned::new(0..0, "127.0.0.1:9901".into()),
            token_file: None,
        }
    }
}

/// `[workers]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersSection {
    /// Number of workers; 0 = one per core.
    pub count: Spanned<usize>,
    /// Pin each worker to a core.
    pub pin: bool,
    /// Cores to pin to, in worker order (empty = 0, 1, 2, ...).
    pub cpus: Spanned<Vec<usize>>,
    /// `auto` (io_uring, falling back to epoll), `io_uring` or `epoll`.
    pub driver: Spanned<String>,
    /// io_uring submission queue entries.
    pub ring_entries: Spanned<u32>,
    /// io_uring setup: `defer_taskrun`, `coop_taskrun`, `plain` or `sqpoll`.
    pub ring: Spanned<String>,
    /// Workers never sleep: they spin on their completion queue (dedicated cores).
    pub busy_poll: bool,
    /// After each request's arrival a worker polls instead of sleeping for this long
    /// (microseconds; 0: off). io_uring only; `busy_poll` supersedes it.
    pub spin_us: Spanned<usize>,
    /// Plain TCP sockets receive by multishot recv into a provided-buffer ring (io_uring,
    /// Linux 6.0; elsewhere ignored with a warning).
    pub multishot: bool,
}

impl Default for WorkersSection {
    fn default() -> Self {
        Self {
            count: Spanned::new(0..0, 0),
            pin: true,
            cpus: Spanned::new(0..0, Vec::new()),
            driver: Spanned::new(0..0, "auto".into()),
            ring_entries: Spanned::new(0..0, 1024),
            ring: Spanned::new(0..0, "defer_taskrun".into()),
            busy_poll: false,
            spin_us: Spanned::new(0..0, 0),
            multishot: true,
        }
    }
}

/// `[limits]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest request head accepted (431 beyond).
    pub max_head_bytes: Spanned<usize>,
    /// Most header fields accepted (431 beyond).
    pub max_headers: Spanned<usize>,
    /// Largest body read to find a user id (413 beyond, only when the body is needed).
    pub body_scan_bytes: Spanned<usize>,
    /// Bodies at least this large move with splice(2) instead of a user-space copy.
    pub splice_threshold_bytes: u64,
    /// Longest user id accepted (400 beyond).
    pub max_user_id_bytes: Spanned<usize>,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_head_bytes: Spanned::new(0..0, 16 * 1024),
            max_headers: Spanned::new(0..0, 100),
            body_scan_bytes: Spanned::new(0..0, 64 * 1024),
            splice_threshold_bytes: 64 * 1024,
            max_user_id_bytes: Spanned::new(0..0, super::DEFAULT_MAX_USER_ID_BYTES),
        }
    }
}

/// `[timeouts]` (milliseconds)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsSection {
    /// From the first byte of a request to its complete head (408 beyond).
    pub client_header_ms: Spanned<u64>,
    /// Keep-alive: wait for the next request before closing silently.
    pub client_idle_ms: Spanned<u64>,
    /// Longest pause while reading a request body (408 beyond).
    pub client_body_ms: Spanned<u64>,
    /// TCP connect to an upstream (then the next server is tried).
    pub upstream_connect_ms: Spanned<u64>,
    /// From request sent to response head, and longest pause in a response body (504).
    pub upstream_response_ms: Spanned<u64>,
    /// Whole request, from complete head to response head, all attempts included (504);
    /// 0 = no deadline.
    pub request_deadline_ms: u64,
    /// A tunnel (after a 101) with no byte in either direction for this long ends.
    pub tunnel_idle_ms: Spanned<u64>,
    /// A TLS handshake (client side) that takes longer fails and the connection closes.
    pub tls_handshake_ms: Spanned<u64>,
}

impl Default for TimeoutsSection {
    fn default() -> Self {
        Self {
            client_header_ms: Spanned::new(0..0, 10_000),
            client_idle_ms: Spanned::new(0..0, 60_000),
            client_body_ms: Spanned::new(0..0, 30_000),
            upstream_connect_ms: Spanned::new(0..0, 1_000),
            upstream_response_ms: Spanned::new(0..0, 30_000),
            request_deadline_ms: 0,
            tunnel_idle_ms: Spanned::new(0..0, 3_600_000),
            tls_handshake_ms: Spanned::new(0..0, 10_000),
        }
    }
}

/// `[pool]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSection {
    /// Idle keep-alive connections kept per backend per worker.
    pub max_idle_per_backend: usize,
    /// Idle connections older than this are closed.
    pub idle_timeout_ms: Spanned<u64>,
    /// Open connections (in use and idle) per backend per worker; 0 = no bound.
    pub max_connections_per_backend: Spanned<usize>,
}

impl Default for PoolSection {
    fn default() -> Self {
        Self {
            max_idle_per_backend: 64,
            idle_timeout_ms: Spanned::new(0..0, 30_000),
            max_connections_per_backend: Spanned::new(0..0, 0),
        }
    }
}

/// `[classify]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifySection {
    /// Path prefixes of Commands (writes).
    pub command_prefixes: Vec<Spanned<String>>,
    /// Path prefixes of Queries (reads).
    pub query_prefixes: Vec<Spanned<String>>,
}

impl Default for ClassifySection {
    fn default() -> Self {
        Self {
            command_prefixes: vec![Spanned::new(0..0, "/api/spot/v2/".into())],
            query_prefixes: vec![Spanned::new(0..0, "/api/spot/user/".into())],
        }
    }
}

/// `[extract]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractSection {
    /// Header names, in priority order.
    pub headers: Vec<Spanned<String>>,
    /// Query parameter names, in priority order.
    pub query: Vec<Spanned<String>>,
    /// Top-level JSON keys.
    pub json_keys: Vec<Spanned<String>>,
}

impl Default for ExtractSection {
    fn default() -> Self {
        use super::{DEFAULT_HEADERS, DEFAULT_JSON_KEYS, DEFAULT_QUERY_KEYS};
        let s = |v: &[&str]| {
            v.iter()
                .map(|x| Spanned::new(0..0, x.to_string()))
                .collect()
        };
        Self {
            headers: s(DEFAULT_HEADERS),
            query: s(DEFAULT_QUERY_KEYS),
            json_keys: s(DEFAULT_JSON_KEYS),
        }
    }
}

/// `[forward]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardSection {
    /// Add `X-Forwarded-For: <client ip>` to forwarded requests.
    pub x_forwarded_for: bool,
    /// Add `X-Forwarded-Proto: https` (TLS listener) or `http` to forwarded requests,
    /// unless a trusted proxy sent its own.
    pub x_forwarded_proto: bool,
    /// Protocols an `Upgrade` request may switch to (tunnelled after a 101); others are
    /// forwarded as plain HTTP without the `Upgrade` field.
    pub upgrade_protocols: Spanned<Vec<String>>,
    /// Peers (addresses or CIDR blocks) whose `X-Forwarded-For` / `Forwarded` /
    /// `X-Real-IP` / `X-Forwarded-Proto` / `X-Forwarded-Host` / `X-Forwarded-Port` and other client-address
    /// fields (`True-Client-IP`, `X-Client-IP`, `CF-Connecting-IP`,
    /// `X-Cluster-Client-IP`, `Fastly-Client-IP`, `X-Original-Forwarded-For`) are kept and
    /// extended; from anyone else they are dropped.
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Relay the upstream's interim 1xx answers (`103 Early Hints`) to HTTP/1.1 clients.
    pub relay_interim_responses: bool,
    /// Methods besides POST, PUT and PATCH whose request bodies every upstream reads by
    /// their framing: the upstream connection is pooled after such a request with a body.
    pub trusted_body_methods: Spanned<Vec<String>>,
}

impl Default for ForwardSection {
    fn default() -> Self {
        Self {
            x_forwarded_for: true,
            x_forwarded_proto: true,
            upgrade_protocols: Spanned::new(0..0, vec!["websocket".into()]),
            trusted_proxies: Vec::new(),
            relay_interim_responses: true,
            trusted_body_methods: Spanned::new(0..0, Vec::new()),
        }
    }
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Access log destination: "" (off), "-" (stderr) or a file path.
    pub access_log: String,
    /// `text` or `json`.
    pub access_log_format: Spanned<String>,
    /// Lines queued for the writer before new lines are dropped (and counted).
    pub access_log_queue_lines: Spanned<usize>,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            access_log: String::new(),
            access_log_format: Spanned::new(0..0, "text".into()),
            access_log_queue_lines: Spanned::new(0..0, 65_536),
        }
    }
}

/// `[health]`: active health checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// Run active checks.
    pub enabled: bool,
    /// Time between checks of one backend.
    pub interval_ms: Spanned<u64>,
    /// A check slower than this fails.
    pub timeout_ms: Spanned<u64>,
    /// Consecutive failures that mark a backend down.
    pub fall: Spanned<u32>,
    /// Consecutive successes that mark it up again.
    pub rise: Spanned<u32>,
    /// "" = TCP connect check; a path (e.g. "/health") = HTTP GET expecting 2xx.
    pub http_path: Spanned<String>,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: Spanned::new(0..0, 1_000),
            timeout_ms: Spanned::new(0..0, 500),
            fall: Spanned::new(0..0, 3),
            rise: Spanned::new(0..0, 2),
            http_path: Spanned::new(0..0, String::new()),
        }
    }
}

/// `[circuit]`: passive ejection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitSection {
    /// Open circuits on consecutive failures.
    pub enabled: bool,
    /// Consecutive failures (connect, reset, timeout, and 5xx when counted) that open it.
    pub consecutive_failures: Spanned<u32>,
    /// How long an open circuit rejects traffic before one probe request is let through.
    pub cooldown_ms: Spanned<u64>,
    /// Count 5xx responses as failures.
    pub count_5xx: bool,
}

impl Default for CircuitSection {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: Spanned::new(0..0, 5),
            cooldown_ms: Spanned::new(0..0, 5_000),
            count_5xx: true,
        }
    }
}

/// `[retry]`: re-sending Queries (never Commands).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    /// Attempts per Query, the first included (1 = never retry).
    pub max_attempts: Spanned<u32>,
    /// Backoff before retry n is base × 2^(n-1), capped at `backoff_max_ms`.
    pub backoff_base_ms: u64,
    /// Longest backoff.
    pub backoff_max_ms: Spanned<u64>,
    /// Retries allowed per request served (the budget earns this per request).
    pub budget_ratio: Spanned<f64>,
    /// Retries the budget holds at most (and starts with).
    pub budget_reserve: Spanned<f64>,
}

impl Default for RetrySection {
    fn default() -> Self {
        Self {
            max_attempts: Spanned::new(0..0, 2),
            backoff_base_ms: 2,
            backoff_max_ms: Spanned::new(0..0, 50),
            budget_ratio: Spanned::new(0..0, 0.1),
            budget_reserve: Spanned::new(0..0, 10.0),
        }
    }
}

/// `[overload]`: load shedding.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadSection {
    /// Requests in flight per worker at which Commands are shed too (503).
    pub max_in_flight_per_worker: Spanned<usize>,
    /// Fraction of that bound at which Queries start being shed (503).
    pub query_shed_ratio: Spanned<f64>,
}

impl Default for OverloadSection {
    fn default() -> Self {
        Self {
            max_in_flight_per_worker: Spanned::new(0..0, 4096),
            query_shed_ratio: Spanned::new(0..0, 0.8),
        }
    }
}

/// `[rate_limit]`: per-user request rates (0 = no limit).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    /// Commands per second per user.
    pub per_user_commands: Spanned<f64>,
    /// Queries per second per user.
    pub per_user_queries: Spanned<f64>,
    /// Seconds of the rate a user may send at once (bucket depth).
    pub burst: Spanned<f64>,
    /// Users tracked at once (the table is fixed; idle users make room). Restart to change.
    pub max_users: Spanned<usize>,
    /// Per-user overrides.
    pub users: BTreeMap<String, Spanned<UserRateSection>>,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        Self {
            per_user_commands: Spanned::new(0..0, 0.0),
            per_user_queries: Spanned::new(0..0, 0.0),
            burst: Spanned::new(0..0, 1.0),
            max_users: Spanned::new(0..0, 65_536),
            users: BTreeMap::new(),
        }
    }
}

/// `[rate_limit.users] NAME = { commands = N, queries = N }`: a user's own rates.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRateSection {
    /// Commands per second (default: `per_user_commands`).
    #[serde(default)]
    pub commands: Option<f64>,
    /// Queries per second (default: `per_user_queries`).
    #[serde(default)]
    pub queries: Option<f64>,
}

/// `[migration]`: ordered moves of users between partitions on reload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationSection {
    /// Longest a Command waits for the user's Commands in flight to the old partition.
    pub max_wait_ms: u64,
    /// Users with Commands in flight tracked at once. Restart to change.
    pub max_users: Spanned<usize>,
}

impl Default for MigrationSection {
    fn default() -> Self {
        Self {
            max_wait_ms: 2_000,
            max_users: Spanned::new(0..0, 65_536),
        }
    }
}

/// `[mirror]`: Query mirroring to shadow partitions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorSection {
    /// Mirrored requests in flight per worker; beyond, mirrors are dropped (and counted).
    pub max_in_flight_per_worker: Spanned<usize>,
}

impl Default for MirrorSection {
    fn default() -> Self {
        Self {
            max_in_flight_per_worker: Spanned::new(0..0, 256),
        }
    }
}

/// `[partitions.NAME]`: either `servers` (reads and writes) or `write` + optional `read`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSection {
    /// Servers for both classes (the seed's form).
    #[serde(default)]
    pub servers: Vec<Spanned<String>>,
    /// Servers for Commands.
    #[serde(default)]
    pub write: Vec<Spanned<String>>,
    /// Servers for Queries (falls back to `write`).
    #[serde(default)]
    pub read: Vec<Spanned<String>>,
    /// `round_robin` (default) or `primary_backup`.
    #[serde(default)]
    pub policy: Option<Spanned<String>>,
    /// A partition whose read servers get a copy of every Query routed here.
    #[serde(default)]
    pub mirror: Option<Spanned<String>>,
    /// The servers speak TLS.
    #[serde(default)]
    pub tls: bool,
    /// Name to verify (and send as SNI) with `tls`.
    #[serde(default)]
    pub sni: Option<Spanned<String>>,
    /// CA certificates (PEM) to verify with, instead of the built-in roots.
    #[serde(default)]
    pub ca: Option<Spanned<String>>,
}
