//! The life of one request: route it, send it (attempt after attempt, as the retry policy
//! allows), relay the response.
//!
//! - [`request`]: who the request is for, its class and partition, the head to forward and
//!   where its body comes from — an immutable [`request::Request`] every attempt reads.
//! - [`attempt`]: one attempt on one upstream connection, full duplex: the request is sent
//!   while the response head is read, so an early answer is heard at once.
//! - [`retry`]: whether and where a failed attempt goes again — one place, driven by the
//!   error.
//! - [`response`]: the response relay, and what becomes of both connections.
//! - [`answer`]: ringgate's own error answers.
//!
//! # Invariants
//! - Nothing of a request that failed framing checks reaches an upstream.
//! - A Command is sent at most once: after any of its bytes were accepted by an upstream
//!   socket it is never sent again; failures answer 502/504.
//! - Every attempt sends the same bytes: the forwarded head and the buffered body are never
//!   written into by an attempt; interim responses and error answers use their own buffer.
//! - An upstream connection goes back to the pool only after a cleanly framed exchange in
//!   which the whole request was sent, with no stray bytes, and never after a body that
//!   is not a POST's, PUT's, PATCH's or a trusted method's (see
//!   [`request::Request::keeps_upstream`]).

mod answer;
mod attempt;
mod mirror;
mod request;
mod response;
mod retry;
mod users;

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

pub use answer::{reason_phrase, respond_error};

use crate::error::{ErrorKind, ProxyError, Side};
use crate::forward::io::write_static;
use crate::forward::relay::{discard_body, BodyLeft, BodyProgress};
use crate::forward::timer;
use crate::health::state::{release_probe, report, Admission};
use crate::metrics::{bump, Outcome};
use crate::route::router::{Class, Tried, WorkerTable};
use crate::runtime::client::Client;
use crate::runtime::multishot::ResetWatch;
use crate::runtime::worker::Worker;
use crate::upstream::pool::{connect, UpstreamConn};

use attempt::AttemptError;
use request::{Body, Request, CONTINUE_100};
use response::Answered;
use retry::{Attempts, Retry};

/// What happens to the client connection after a request.
pub enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close the client connection after a failure: a TLS client gets no `close_notify`.
    Close,
    /// Close the client connection in stages: part of the request may still be unread.
    CloseLingering,
    /// The response was cut after its head went out (or while it was going out): end the
    /// connection so that the client cannot take the end for the response's. A TLS
    /// client gets no `close_notify` (its TLS library reports a truncation); with `reset`
    /// (a response that ends at the close, where a clean close would complete it, or a
    /// chunked one, which lenient readers take as complete at a clean close after its
    /// last-chunk line) the
    /// connection is reset.
    Cut {
        /// Reset the connection rather than close it.
        reset: bool,
    },
    /// Switch to a byte tunnel with this upstream (after a 101).
    Tunnel(Box<UpstreamConn>),
}

/// A request that ended in an error.
#[derive(Debug)]
pub struct Failure {
    /// What failed.
    pub error: ProxyError,
    /// The client already got bytes of a response: nothing more can be said, the
    /// connection just closes.
    pub response_started: bool,
    /// Client-buffer bytes the request occupied, when all of it was read (the connection
    /// may then be kept after the answer); `None` when part of it may still be unread.
    pub consumed: Option<usize>,
}

impl From<ProxyError> for Failure {
    fn from(error: ProxyError) -> Self {
        Failure {
            error,
            response_started: false,
            consumed: None,
        }
    }
}

fn upstream_failure(kind: ErrorKind, consumed: Option<usize>) -> Failure {
    Failure {
        error: ProxyError::upstream(kind),
        response_started: false,
        consumed,
    }
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a Cell<usize>);

impl<'a> InFlight<'a> {
    fn enter(c: &'a Cell<usize>) -> Self {
        c.set(c.get() + 1);
        Self(c)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Route, forward and relay the request whose head is parsed in `c.head`.
pub async fn run(
    worker: &Rc<Worker>,
    wt: &Rc<WorkerTable>,
    c: &mut Client,
    outcome: &mut Outcome,
) -> Result<Next, Failure> {
    let s = &wt.table.settings;
    let req = request::prepare(worker, wt, c, outcome).await?;

    let mut progress = match req.body {
        Body::Streamed { in_buf, left } => BodyProgress {
            left,
            pending: req.head_len + in_buf,
        },
        _ => BodyProgress::new(BodyLeft::Length(0)),
    };
    // Load shedding (Queries first, then Commands), then the order of a moved user's
    // Commands, then the user's rate limit: refusals that keep the connection. The limit
    // comes last so that a request refused otherwise (shed, or held for a move and then
    // refused) spends none of its user's allowance (the limit is shared by every worker: a
    // spent token cannot soundly be given back).
    let limit = match req.class {
        Class::Query => s.query_shed_in_flight,
        Class::Command => s.max_in_flight,
    };
    if worker.in_flight.get() >= limit {
        let e = ProxyError::internal(ErrorKind::Overloaded);
        return Err(refuse_softly(worker, c, &req, &mut progress, e).await);
    }
    // Counted before a moved user's Command may be held: uncounted, every Command held
    // meanwhile passed the check above, and all went on together beyond the bound.
    let in_flight = InFlight::enter(&worker.in_flight);
    // Held until the exchange ends.
    let order = match users::enter_in_flight(worker, wt, c, &req).await {
        Ok(guard) => guard,
        Err(e) => {
            drop(in_flight);
            return Err(refuse_softly(worker, c, &req, &mut progress, e).await);
        }
    };
    if let Some(e) = users::over_rate_limit(worker, wt, c, &req) {
        // Nothing is sent: the user's Commands in flight are as they were.
        drop((order, in_flight));
        return Err(refuse_softly(worker, c, &req, &mut progress, e).await);
    }
    // A copy for the shadow partition, sent once this exchange has ended; none of a
    // refused request, nor of one whose client went away before its answer.
    let mut mirror = mirror::LaunchOnDrop(mirror::MirrorJob::prepare(worker, wt, c, &req));
    worker.earn_retry_budget(&s.retry);
    let deadline = s.request_deadline.map(|d| c.started + d);
    if req.wants_continue {
        write_static(&mut c.wr, CONTINUE_100, s.client_body_timeout)
            .await
            .map_err(|_| ProxyError::downstream(ErrorKind::ClientGone))?;
    }
    let answered = match send(worker, wt, c, &req, &mut progress, deadline, outcome).await {
        Ok(answered) => answered,
        Err(f) => {
            // A 503 for want of a server is a refusal, and a client gone while its answer
            // was awaited aborted the request: nothing to mirror (a copy sent now would be
            // for nobody, and would take a mirror's place from a Query still served).
            if matches!(
                f.error.kind,
                ErrorKind::NoHealthyServer | ErrorKind::ConnectionLimit | ErrorKind::ClientGone
            ) {
                mirror.cancel();
            }
            return Err(f);
        }
    };
    let next = response::relay(worker, wt, c, &req, &mut progress, answered, outcome).await;
    // The same for a client found gone when its answer was to be written (where its reset
    // is not watched while the answer is awaited): counted with no status, logged 499.
    if outcome.status.is_none() && matches!(outcome.error, Some(ErrorKind::ClientGone)) {
        mirror.cancel();
    }
    next
}

/// A refusal before anything was sent that keeps the connection: the request's body is
/// read and dropped first when it streams (within [`response::DISCARD_BODY_MAX_BYTES`]),
/// unless the client waits for `100 Continue` (it then may never send it: close).
async fn refuse_softly(
    worker: &Worker,
    c: &mut Client,
    req: &Request,
    progress: &mut BodyProgress,
    error: ProxyError,
) -> Failure {
    let consumed = match req.body {
        Body::Streamed { .. } if !req.wants_continue => {
            let s = &worker.table().table.settings;
            c.buf.drain(..progress.pending.min(c.buf.len()));
            progress.pending = 0;
            let opts = worker.relay_options(s.client_body_timeout, s.client_body_timeout, s);
            let max = response::DISCARD_BODY_MAX_BYTES;
            discard_body(&mut c.rd, &mut c.buf, progress, max, &opts)
                .await
                .then_some(0)
        }
        Body::Streamed { .. } => None,
        _ => req.buffered_len(),
    };
    Failure {
        error,
        response_started: false,
        consumed,
    }
}

/// The attempt loop: attempts until one gets a response head, or the retry policy says
/// to answer the error.
async fn send(
    worker: &Worker,
    wt: &WorkerTable,
    c: &mut Client,
    req: &Request,
    progress: &mut BodyProgress,
    deadline: Option<Instant>,
    outcome: &mut Outcome,
) -> Result<Answered, Failure> {
    let table = &*wt.table;
    let s = &table.settings;
    let circuit = s.circuit.as_ref();
    let consumed = req.buffered_len();
    let mut tried: Tried = 0;
    let mut attempts = Attempts::default();
    // The failure that made us retry: reported if no server is left to retry on.
    let mut retried_after: Option<ErrorKind> = None;
    // A half-open probe whose pooled connection went stale: sent again to the same server
    // on a new connection, still the probe (picked again, the server would be refused: its
    // probe is taken, by this request).
    let mut pinned: Option<(u16, u32, Admission)> = None;
    // A Query whose client resets between attempts — in the backoff, or while a new
    // connection opens — ends there, as one that resets while its answer is awaited (see
    // `attempt::run`, which watches the same way): no further attempt goes out for nobody.
    let watch = match req.class {
        Class::Query => c.rd.reset_watch(),
        Class::Command => None,
    };
    loop {
        let (backend, pos, admission, mut up) = checkout(
            worker,
            wt,
            req,
            &mut tried,
            attempts.fresh_only,
            deadline,
            pinned.take(),
            watch,
        )
        .await
        .map_err(|e| {
            let gone = e.side == Side::Downstream;
            Failure {
                error: match retried_after {
                    Some(k) if !gone && e.kind != ErrorKind::DeadlineExceeded => {
                        ProxyError::upstream(k)
                    }
                    _ => e,
                },
                response_started: false,
                consumed: if gone { None } else { consumed },
            }
        })?;
        outcome.backend = Some(backend);
        let b = &*table.backends[backend as usize];
        let e = match attempt::run(worker, s, c, req, &mut up, progress, deadline).await {
            // The breaker hears of it once the whole response is in (or the relay broke
            // off): a server that answers a good head and then breaks off its body has
            // failed (see `response::relay`).
            Ok(sent) => {
                return Ok(Answered {
                    backend,
                    version: table.version,
                    admission,
                    up,
                    sent,
                });
            }
            Err(e) => e,
        };
        if e.cut {
            // Part of the request went out: a FIN after it would let a lenient server
            // take that part for the whole request (a short body read to the end of the
            // stream); a reset cannot pass for an end.
            up.reset();
        }
        let decision = attempts.decide(&e, req.class, req.body.is_replayable());
        tracing::debug!(
            backend = %b.addr,
            error = %e.error,
            reached = e.reached,
            reused = e.reused,
            untouched = e.untouched,
            ?decision,
            "attempt failed"
        );
        let stale_pool = decision
            == Retry::Fresh {
                server_failed: false,
            };
        // A deadline an earlier attempt mostly spent is not this server's failure.
        let deadline_spent_before =
            e.error.kind == ErrorKind::DeadlineExceeded && attempts.counted > 1;
        if stale_pool {
            // Not the server's failure; a half-open probe goes again, still the probe.
        } else if e.error.side == Side::Downstream || deadline_spent_before {
            // No verdict on the server: a half-open probe is given back.
            release_probe(b, circuit, admission);
        } else {
            report(b, circuit, admission, false);
        }
        match decision {
            Retry::No => return Err(attempt_failure(e, consumed)),
            Retry::Fresh { server_failed } => {
                if server_failed {
                    tried |= 1u64 << pos;
                } else {
                    bump(&worker.metrics.pool_stale, 1);
                    if admission.is_probe() {
                        pinned = Some((backend, pos, admission));
                    }
                }
                if e.reached {
                    bump(&worker.metrics.retries, 1);
                    // The reset rule's one re-send (one the server provably never
                    // took is not limited).
                    attempts.stale_resent |= !e.untouched;
                }
                attempts.fresh_only = true;
            }
            Retry::Elsewhere => {
                tried |= 1u64 << pos;
                // No server left to retry on: no retry, no budget spent.
                if !attempts.may_count_another(&s.retry)
                    || !wt.has_server(req.partition, req.class, tried)
                {
                    return Err(attempt_failure(e, consumed));
                }
                let backoff = attempts.backoff(&s.retry);
                if deadline.is_some_and(|d| Instant::now() + backoff >= d) {
                    return Err(upstream_failure(ErrorKind::DeadlineExceeded, consumed));
                }
                if !worker.spend_retry_budget() {
                    return Err(attempt_failure(e, consumed));
                }
                attempts.counted += 1;
                attempts.fresh_only = false;
                retried_after = Some(e.error.kind);
                if !backoff.is_zero() && unless_reset(timer::sleep(backoff), watch).await.is_none()
                {
                    return Err(ProxyError::downstream(ErrorKind::ClientGone).into());
                }
                bump(&worker.metrics.retries, 1);
            }
        }
    }
}

/// `fut`'s output, or `None` once the client's reset comes first (`watch`: see
/// [`ResetWatch`]; without one, only `fut` is awaited).
async fn unless_reset<F: Future>(fut: F, watch: Option<ResetWatch>) -> Option<F::Output> {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if watch.is_some_and(|w| w.poll_reset(cx).is_ready()) {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

fn attempt_failure(e: AttemptError, consumed: Option<usize>) -> Failure {
    Failure {
        error: e.error,
        response_started: false,
        consumed: if e.error.side == Side::Downstream {
            None
        } else {
            consumed
        },
    }
}

/// An upstream connection for the request's partition: pooled if possible, else a new
/// one; on connect failure the next available server of the list is tried, and so is it
/// when the server has `pool.max_connections_per_backend` open on this worker (not the
/// server's failure: its breaker hears nothing). A connect is given up when the client's
/// reset comes first (`watch`: a Query's).
#[allow(clippy::too_many_arguments)]
async fn checkout(
    worker: &Worker,
    wt: &WorkerTable,
    req: &Request,
    tried: &mut Tried,
    fresh_only: bool,
    deadline: Option<Instant>,
    mut pinned: Option<(u16, u32, Admission)>,
    watch: Option<ResetWatch>,
) -> Result<(u16, u32, Admission, Box<UpstreamConn>), ProxyError> {
    let s = &wt.table.settings;
    let mut last_error = ProxyError::internal(ErrorKind::NoHealthyServer);
    // A connect failure of this checkout: the next server picked is a failover (a server
    // skipped after a failed attempt is not: that is a retry).
    let mut connect_failed = false;
    loop {
        let Some((backend, pos, admission)) = pinned
            .take()
            .or_else(|| wt.pick_server(req.partition, req.class, *tried))
        else {
            return Err(last_error);
        };
        if connect_failed {
            bump(&worker.metrics.failovers, 1);
        }
        let b = &*wt.table.backends[backend as usize];
        if !fresh_only {
            let version = wt.table.version;
            if let Some(conn) = worker.take_upstream(backend, version, b.pool_epoch(), s) {
                bump(&worker.metrics.pool_reused, 1);
                return Ok((backend, pos, admission, conn));
            }
        }
        let timeout = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
            Some(left) if left.is_zero() => {
                release_probe(b, s.circuit.as_ref(), admission);
                return Err(ProxyError::upstream(ErrorKind::DeadlineExceeded));
            }
            Some(left) => left.min(s.upstream_connect_timeout),
            None => s.upstream_connect_timeout,
        };
        let Some(open) = worker.reserve_upstream(backend, &wt.table) else {
            release_probe(b, s.circuit.as_ref(), admission);
            *tried |= 1u64 << pos;
            last_error = ProxyError::internal(ErrorKind::ConnectionLimit);
            connect_failed = true;
            continue;
        };
        let tls = wt
            .table
            .backend_tls
            .get(backend as usize)
            .and_then(|t| t.as_deref());
        let Some(connected) = unless_reset(connect(b.addr, timeout, tls, open), watch).await else {
            // The client reset (a Query): no verdict on the server.
            release_probe(b, s.circuit.as_ref(), admission);
            return Err(ProxyError::downstream(ErrorKind::ClientGone));
        };
        match connected {
            Ok(conn) => {
                bump(&worker.metrics.pool_opened, 1);
                return Ok((backend, pos, admission, conn));
            }
            // The request's deadline, not the server, ended the connect.
            Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => {
                release_probe(b, s.circuit.as_ref(), admission);
                return Err(ProxyError::upstream(ErrorKind::DeadlineExceeded));
            }
            Err(e) => {
                report(b, s.circuit.as_ref(), admission, false);
                *tried |= 1u64 << pos;
                last_error = e;
                connect_failed = true;
            }
        }
    }
}
