//! One small error type for the whole proxy.
//!
//! A [`ProxyError`] says *which side* failed (the client, an upstream, or ringgate itself),
//! *what* failed, and from that: the status to answer, the plain-text reason, whether the
//! client connection must be closed. Whether a failed attempt is sent again is decided
//! from the side and kind in one place, `runtime::exchange::retry`.
//! It is `Copy` so the hot path never allocates to report a failure.

use std::fmt;

/// Which side of the proxy an error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client (downstream) sent something wrong or went away.
    Downstream,
    /// An upstream server failed, misbehaved or timed out.
    Upstream,
    /// Ringgate itself: configuration or capacity.
    Internal,
}

/// What went wrong; every variant maps to one status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed request: framing, syntax, or an ambiguous user id (400).
    BadRequest(&'static str),
    /// Request head larger than `max_head_bytes` or more than `max_headers` fields (431).
    HeadTooLarge,
    /// Request line longer than `max_head_bytes`: its request-target is longer than
    /// ringgate parses (414, RFC 9112 §3).
    UriTooLong,
    /// A well-formed `HTTP-version` of another major version than 1 (505,
    /// RFC 9110 §15.6.6).
    VersionNotSupported,
    /// Body needed for routing is larger than `body_scan_bytes` (413).
    BodyTooLarge,
    /// `Expect` with something other than `100-continue` (417).
    ExpectationFailed,
    /// A method or transfer coding ringgate does not implement (501).
    NotImplemented(&'static str),
    /// The client did not send a complete head in time (408).
    HeaderTimeout,
    /// The client stopped sending the body (408, connection closed).
    BodyTimeout,
    /// The client closed or reset the connection.
    ClientGone,
    /// Request has no user id and `reject_without_user` is set (400).
    NoUserId,
    /// No server of the chosen partition is healthy or reachable (503).
    NoHealthyServer,
    /// Every available server of the chosen partition is at
    /// `pool.max_connections_per_backend` on this worker (503).
    ConnectionLimit,
    /// Every connect attempt failed (502).
    ConnectFailed,
    /// Every connect attempt failed, the last one by `timeouts.upstream_connect_ms` (its
    /// TCP connect or TLS handshake did not finish in time) (504).
    ConnectTimeout,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
    /// The whole-request deadline passed, all attempts included (504).
    DeadlineExceeded,
    /// The upstream closed or reset before a complete response (502).
    UpstreamReset,
    /// The upstream sent a response ringgate cannot frame safely (502).
    BadResponse(&'static str),
    /// The worker is at its connection or pool bound (503).
    Overloaded,
    /// The user is over its rate limit; the next request is allowed in this many whole
    /// seconds (429).
    RateLimited(u32),
    /// A moved user's Commands to its old partition did not complete within
    /// `migration.max_wait_ms` (503).
    MigrationWait,
}

/// A failure on the request path: side + kind. Small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyError {
    /// Which side failed.
    pub side: Side,
    /// What failed.
    pub kind: ErrorKind,
}

impl ProxyError {
    /// A client-side error.
    pub const fn downstream(kind: ErrorKind) -> Self {
        Self {
            side: Side::Downstream,
            kind,
        }
    }

    /// An upstream-side error.
    pub const fn upstream(kind: ErrorKind) -> Self {
        Self {
            side: Side::Upstream,
            kind,
        }
    }

    /// A ringgate-side error.
    pub const fn internal(kind: ErrorKind) -> Self {
        Self {
            side: Side::Internal,
            kind,
        }
    }

    /// Shorthand for a 400 with a reason.
    pub const fn bad_request(reason: &'static str) -> Self {
        Self::downstream(ErrorKind::BadRequest(reason))
    }

    /// The status code to answer with, or `None` when nothing can be answered
    /// (the client is gone).
    pub fn status(&self) -> Option<u16> {
        Some(match self.kind {
            ErrorKind::BadRequest(_) | ErrorKind::NoUserId => 400,
            ErrorKind::HeadTooLarge => 431,
            ErrorKind::UriTooLong => 414,
            ErrorKind::VersionNotSupported => 505,
            ErrorKind::BodyTooLarge => 413,
            ErrorKind::ExpectationFailed => 417,
            ErrorKind::NotImplemented(_) => 501,
            ErrorKind::HeaderTimeout | ErrorKind::BodyTimeout => 408,
            ErrorKind::ClientGone => return None,
            ErrorKind::NoHealthyServer
            | ErrorKind::ConnectionLimit
            | ErrorKind::Overloaded
            | ErrorKind::MigrationWait => 503,
            ErrorKind::RateLimited(_) => 429,
            ErrorKind::ConnectFailed | ErrorKind::UpstreamReset | ErrorKind::BadResponse(_) => 502,
            ErrorKind::UpstreamTimeout
            | ErrorKind::ConnectTimeout
            | ErrorKind::DeadlineExceeded => 504,
        })
    }

    /// Short plain-text reason sent as the response body.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            ErrorKind::BadRequest(r) => r,
            ErrorKind::HeadTooLarge => "request head too large",
            ErrorKind::UriTooLong => "request line too long",
            ErrorKind::VersionNotSupported => "HTTP version not supported",
            ErrorKind::BodyTooLarge => "request body too large to scan for user id",
            ErrorKind::ExpectationFailed => "unsupported Expect value",
            ErrorKind::NotImplemented(r) => r,
            ErrorKind::HeaderTimeout => "timed out reading request head",
            ErrorKind::BodyTimeout => "timed out reading request body",
            ErrorKind::ClientGone => "client closed connection",
            ErrorKind::NoUserId => "request names no user id",
            ErrorKind::NoHealthyServer => "no healthy server for this partition",
            ErrorKind::ConnectionLimit => "upstream connection limit reached",
            ErrorKind::ConnectFailed => "could not connect to any upstream server",
            ErrorKind::ConnectTimeout => "timed out connecting to upstream",
            ErrorKind::UpstreamTimeout => "upstream timed out",
            ErrorKind::DeadlineExceeded => "request deadline exceeded",
            ErrorKind::UpstreamReset => "upstream closed connection before responding",
            ErrorKind::BadResponse(r) => r,
            ErrorKind::Overloaded => "router overloaded",
            ErrorKind::RateLimited(_) => "rate limit exceeded for this user",
            ErrorKind::MigrationWait => "user is moving between partitions; retry shortly",
        }
    }

    /// Whether the client connection must be closed after answering. True whenever the
    /// request framing is in doubt or part of the request may still be unread.
    pub fn closes_connection(&self) -> bool {
        !matches!(
            self.kind,
            ErrorKind::NoUserId
                | ErrorKind::NoHealthyServer
                | ErrorKind::ConnectionLimit
                | ErrorKind::Overloaded
                | ErrorKind::RateLimited(_)
                | ErrorKind::MigrationWait
        )
    }

    /// Whether a `Retry-After` header belongs in the answer.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self.kind {
            ErrorKind::NoHealthyServer
            | ErrorKind::ConnectionLimit
            | ErrorKind::Overloaded
            | ErrorKind::MigrationWait => Some(1),
            ErrorKind::RateLimited(secs) => Some(secs.max(1)),
            _ => None,
        }
    }
}

/// Metric label of each error kind, in [`ErrorKind::metric_index`] order.
pub const ERROR_KIND_LABELS: [&str; 20] = [
    "bad_request",
    "head_too_large",
    "body_too_large",
    "expectation_failed",
    "not_implemented",
    "client_header_timeout",
    "client_body_timeout",
    "client_gone",
    "no_user_id",
    "no_healthy_server",
    "connect",
    "upstream_timeout",
    "upstream_reset",
    "bad_response",
    "overloaded",
    "deadline",
    "rate_limited",
    "migration_wait",
    "connect_timeout",
    "connection_limit",
];

impl ErrorKind {
    /// Index into [`ERROR_KIND_LABELS`] (and per-kind counters).
    pub fn metric_index(&self) -> usize {
        match self {
            ErrorKind::BadRequest(_) => 0,
            // Counted with the kinds they refine.
            ErrorKind::HeadTooLarge | ErrorKind::UriTooLong => 1,
            ErrorKind::BodyTooLarge => 2,
            ErrorKind::ExpectationFailed => 3,
            ErrorKind::NotImplemented(_) | ErrorKind::VersionNotSupported => 4,
            ErrorKind::HeaderTimeout => 5,
            ErrorKind::BodyTimeout => 6,
            ErrorKind::ClientGone => 7,
            ErrorKind::NoUserId => 8,
            ErrorKind::NoHealthyServer => 9,
            ErrorKind::ConnectFailed => 10,
            ErrorKind::UpstreamTimeout => 11,
            ErrorKind::UpstreamReset => 12,
            ErrorKind::BadResponse(_) => 13,
            ErrorKind::Overloaded => 14,
            ErrorKind::DeadlineExceeded => 15,
            ErrorKind::RateLimited(_) => 16,
            ErrorKind::MigrationWait => 17,
            ErrorKind::ConnectTimeout => 18,
            ErrorKind::ConnectionLimit => 19,
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.side, self.reason())
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_spec() {
        assert_eq!(ProxyError::bad_request("x").status(), Some(400));
        assert_eq!(
            ProxyError::downstream(ErrorKind::HeadTooLarge).status(),
            Some(431)
        );
        assert_eq!(
            ProxyError::downstream(ErrorKind::UriTooLong).status(),
            Some(414)
        );
        assert_eq!(
            ProxyError::downstream(ErrorKind::VersionNotSupported).status(),
            Some(505)
        );
        assert_eq!(
            ProxyError::downstream(ErrorKind::BodyTooLarge).status(),
            Some(413)
        );
        assert_eq!(
            ProxyError::upstream(ErrorKind::UpstreamTimeout).status(),
            Some(504)
        );
        assert_eq!(
            ProxyError::upstream(ErrorKind::ConnectFailed).status(),
            Some(502)
        );
        assert_eq!(
            ProxyError::upstream(ErrorKind::ConnectTimeout).status(),
            Some(504)
        );
        assert_eq!(
            ProxyError::internal(ErrorKind::NoHealthyServer).status(),
            Some(503)
        );
        assert_eq!(ProxyError::downstream(ErrorKind::ClientGone).status(), None);
    }
}
