//! Every metric name, once (Prometheus conventions: `ringgate_` prefix, base units,
//! `_total` for counters).

/// Counter: requests finished, by class, partition, backend and status class.
pub const REQUESTS: &str = "ringgate_requests_total";
/// Counter: failures by kind.
pub const ERRORS: &str = "ringgate_errors_total";
/// Counter: Queries re-sent to an upstream after a failure.
pub const RETRIES: &str = "ringgate_retries_total";
/// Counter: connect failures (or servers at their connection bound) answered by trying the
/// next server.
pub const FAILOVERS: &str = "ringgate_failovers_total";
/// Counter: upstream connections taken from a pool.
pub const POOL_REUSED: &str = "ringgate_upstream_connections_reused_total";
/// Counter: upstream connections opened.
pub const POOL_OPENED: &str = "ringgate_upstream_connections_opened_total";
/// Counter: pooled connections found dead at use.
pub const POOL_STALE: &str = "ringgate_upstream_connections_stale_total";
/// Counter: pooled connections checked with a `recv(MSG_PEEK)` syscall at reuse (the ring
/// vouched for the others).
pub const POOL_PEEKED: &str = "ringgate_upstream_connections_peeked_total";
/// Gauge: idle pooled connections per backend.
pub const POOL_IDLE: &str = "ringgate_upstream_pool_idle_connections";
/// Gauge: open upstream connections (in use, idle or connecting) per backend.
pub const POOL_OPEN: &str = "ringgate_upstream_connections_open";
/// Counter: upstream connections not opened at `pool.max_connections_per_backend`, per
/// backend.
pub const POOL_LIMITED: &str = "ringgate_upstream_connection_limit_total";
/// Gauge: open client connections.
pub const CONNECTIONS_OPEN: &str = "ringgate_client_connections_open";
/// Counter: client connections accepted.
pub const CONNECTIONS_ACCEPTED: &str = "ringgate_client_connections_accepted_total";
/// Counter: client connections refused at the per-worker bound.
pub const CONNECTIONS_REFUSED: &str = "ringgate_client_connections_refused_total";
/// Counter: idle client connections closed at the per-worker bound to make room for a new
/// one.
pub const CONNECTIONS_RECLAIMED: &str = "ringgate_client_connections_reclaimed_total";
/// Counter: keep-alive connections closed by the client idle timeout.
pub const IDLE_TIMEOUTS: &str = "ringgate_client_idle_timeouts_total";
/// Counter: client TLS handshakes that failed or timed out.
pub const TLS_HANDSHAKES_FAILED: &str = "ringgate_tls_handshakes_failed_total";
/// Counter: body bytes moved with splice(2).
pub const SPLICED_BYTES: &str = "ringgate_spliced_bytes_total";
/// Counter: multishot receives that found the worker's buffer ring empty.
pub const MULTISHOT_RING_EMPTY: &str = "ringgate_multishot_ring_empty_total";
/// Counter: multishot receives stopped at a socket's bound of unread buffers.
pub const MULTISHOT_BACKPRESSURE: &str = "ringgate_multishot_backpressure_total";
/// Counter: messages handed to a socket eagerly (no completion unless it fails).
pub const EAGER_SENT: &str = "ringgate_eager_sends_total";
/// Counter: eager sends the socket could not take whole at once.
pub const EAGER_CONTINUED: &str = "ringgate_eager_sends_continued_total";
/// Histogram: request duration (head received → response sent), by class.
pub const DURATION: &str = "ringgate_request_duration_seconds";
/// Summary: request duration quantiles from the merged per-worker HDR histograms.
pub const DURATION_QUANTILES: &str = "ringgate_request_duration_quantiles_seconds";
/// Gauge: 1 when a backend passes active health checks.
pub const BACKEND_UP: &str = "ringgate_backend_up";
/// Gauge: circuit state per backend (0 closed, 1 open, 2 half-open).
pub const BACKEND_CIRCUIT: &str = "ringgate_backend_circuit_state";
/// Gauge: 1 when an operator drained a backend.
pub const BACKEND_DRAINED: &str = "ringgate_backend_drained";
/// Counter: circuit transitions per backend and target state.
pub const CIRCUIT_TRANSITIONS: &str = "ringgate_circuit_transitions_total";
/// Counter: config reloads by result.
pub const RELOADS: &str = "ringgate_config_reloads_total";
/// Gauge: routing table version in force.
pub const CONFIG_VERSION: &str = "ringgate_config_version";
/// Counter: access log lines dropped because the writer fell behind.
pub const ACCESS_LOG_DROPPED: &str = "ringgate_access_log_dropped_total";
/// Gauge: workers running.
pub const WORKERS: &str = "ringgate_workers";
/// Counter: requests refused by their user's rate limit, by class.
pub const RATE_LIMITED: &str = "ringgate_rate_limited_total";
/// Counter: Commands held for a moved user's Commands in flight.
pub const MIGRATION_HELD: &str = "ringgate_migration_held_total";
/// Counter: time Commands spent held for a migration.
pub const MIGRATION_HELD_SECONDS: &str = "ringgate_migration_held_seconds_total";
/// Counter: requests admitted without a rate-limit slot (the table was full).
pub const RATE_LIMIT_UNTRACKED: &str = "ringgate_rate_limit_untracked_total";
/// Counter: Commands let through without an in-flight slot (the table was full).
pub const MIGRATION_UNTRACKED: &str = "ringgate_migration_untracked_total";
/// Counter: Commands refused at the migration wait bound.
pub const MIGRATION_REFUSED: &str = "ringgate_migration_refused_total";
/// Counter: mirrored Queries by the shadow's status class.
pub const MIRROR_REQUESTS: &str = "ringgate_mirror_requests_total";
/// Counter: mirrors not sent.
pub const MIRROR_DROPPED: &str = "ringgate_mirror_dropped_total";
