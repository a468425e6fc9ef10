//! Whether a failed attempt may be sent again, and where: decided in one place, from the
//! error (side and kind), what the upstream may have seen, and whether the request can be
//! replayed.
//!
//! The rules:
//! - A client-side failure is never retried.
//! - Nothing of the request reached the upstream socket: send it again on a new
//!   connection (Commands too — no byte left ringgate). Not an attempt.
//! - A reused pooled connection the server had closed before its TCP took any byte of the
//!   request (a FIN, or over TLS a close_notify, that acknowledges none of it, see
//!   [`crate::upstream::pool::Untouched`]), the whole request buffered: the same — the
//!   server cannot have seen it. Not an attempt.
//! - A reused pooled connection that closed or reset before any response byte, after a
//!   *replayable Query* was sent on it: the connection had died while idle; send again on
//!   a new connection to the same list. Not an attempt, once per request.
//! - A *replayable Query* whose upstream reset or timed out: another server, after a
//!   backoff, within `retry.max_attempts` and the worker's retry budget.
//! - Anything else — and every Command whose bytes may have reached an upstream — is
//!   answered with the error.

use std::time::Duration;

use super::attempt::AttemptError;
use crate::config::RetrySettings;
use crate::error::{ErrorKind, Side};
use crate::route::router::Class;

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Answer the error.
    No,
    /// Send again on a new connection; not counted as an attempt. `server_failed`: the
    /// failing connection was new, so its server is skipped from now on.
    Fresh {
        /// Whether the server itself failed (rather than an idle pooled connection).
        server_failed: bool,
    },
    /// Send again on another server after a backoff; counts as an attempt and spends
    /// retry budget.
    Elsewhere,
}

/// The retry state of one request.
#[derive(Clone, Copy, Debug)]
pub struct Attempts {
    /// Attempts that counted against `max_attempts`, the first included.
    pub counted: u32,
    /// The next connection must be new (a stale pooled one was just found).
    pub fresh_only: bool,
    /// The request was sent again for a pooled connection that died before answering:
    /// that happens once per request (every later reset is a counted attempt, even
    /// on a pooled connection after a retry elsewhere).
    pub stale_resent: bool,
}

impl Default for Attempts {
    fn default() -> Self {
        Self {
            counted: 1,
            fresh_only: false,
            stale_resent: false,
        }
    }
}

impl Attempts {
    /// Decide about `e` for a request of `class` (replayable or not).
    pub fn decide(&self, e: &AttemptError, class: Class, replayable: bool) -> Retry {
        if e.error.side == Side::Downstream {
            return Retry::No;
        }
        if !e.reached || (e.untouched && replayable) {
            return Retry::Fresh {
                server_failed: !e.reused,
            };
        }
        if class != Class::Query || !replayable {
            return Retry::No;
        }
        match e.error.kind {
            ErrorKind::UpstreamReset if e.reused && !self.stale_resent => Retry::Fresh {
                server_failed: false,
            },
            ErrorKind::UpstreamReset | ErrorKind::UpstreamTimeout => Retry::Elsewhere,
            _ => Retry::No,
        }
    }

    /// Whether another counted attempt is allowed by `max_attempts`.
    pub fn may_count_another(&self, r: &RetrySettings) -> bool {
        self.counted < r.max_attempts
    }

    /// The backoff before counted attempt number `self.counted + 1`.
    pub fn backoff(&self, r: &RetrySettings) -> Duration {
        r.backoff_base
            .saturating_mul(1 << (self.counted - 1).min(16))
            .min(r.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProxyError;

    fn err(kind: ErrorKind, reached: bool, reused: bool) -> AttemptError {
        AttemptError {
            untouched: false,
            error: ProxyError::upstream(kind),
            reached,
            reused,
            cut: false,
        }
    }

    #[test]
    fn nothing_sent_goes_again_for_both_classes() {
        let a = Attempts::default();
        for class in [Class::Command, Class::Query] {
            for replayable in [true, false] {
                assert_eq!(
                    a.decide(
                        &err(ErrorKind::UpstreamTimeout, false, true),
                        class,
                        replayable
                    ),
                    Retry::Fresh {
                        server_failed: false
                    }
                );
                assert_eq!(
                    a.decide(
                        &err(ErrorKind::UpstreamReset, false, false),
                        class,
                        replayable
                    ),
                    Retry::Fresh {
                        server_failed: true
                    }
                );
            }
        }
    }

    #[test]
    fn a_command_that_reached_an_upstream_is_never_sent_again() {
        let a = Attempts::default();
        for kind in [ErrorKind::UpstreamReset, ErrorKind::UpstreamTimeout] {
            for reused in [true, false] {
                assert_eq!(
                    a.decide(&err(kind, true, reused), Class::Command, true),
                    Retry::No
                );
            }
        }
    }

    #[test]
    fn a_buffered_request_the_closed_server_never_took_goes_again_on_a_new_connection() {
        let untouched = AttemptError {
            untouched: true,
            ..err(ErrorKind::UpstreamReset, true, true)
        };
        for class in [Class::Command, Class::Query] {
            assert_eq!(
                Attempts::default().decide(&untouched, class, true),
                Retry::Fresh {
                    server_failed: false
                }
            );
        }
        // A streamed body's bytes are gone: a Command is answered with the error.
        assert_eq!(
            Attempts::default().decide(&untouched, Class::Command, false),
            Retry::No
        );
    }

    #[test]
    fn a_query_goes_again_only_when_replayable() {
        let a = Attempts::default();
        let stale = err(ErrorKind::UpstreamReset, true, true);
        assert_eq!(
            a.decide(&stale, Class::Query, true),
            Retry::Fresh {
                server_failed: false
            }
        );
        assert_eq!(a.decide(&stale, Class::Query, false), Retry::No);
        let resent = Attempts {
            stale_resent: true,
            ..a
        };
        assert_eq!(
            resent.decide(&stale, Class::Query, true),
            Retry::Elsewhere,
            "once per request"
        );
        assert_eq!(
            a.decide(
                &err(ErrorKind::UpstreamTimeout, true, false),
                Class::Query,
                true
            ),
            Retry::Elsewhere
        );
        assert_eq!(
            a.decide(
                &err(ErrorKind::BadResponse("x"), true, false),
                Class::Query,
                true
            ),
            Retry::No
        );
        assert_eq!(
            a.decide(
                &err(ErrorKind::DeadlineExceeded, true, false),
                Class::Query,
                true
            ),
            Retry::No
        );
    }

    #[test]
    fn client_failures_are_never_retried() {
        let e = AttemptError {
            error: ProxyError::downstream(ErrorKind::ClientGone),
            reached: false,
            reused: true,
            untouched: false,
            cut: false,
        };
        assert_eq!(
            Attempts::default().decide(&e, Class::Query, true),
            Retry::No
        );
    }
}
