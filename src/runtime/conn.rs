//! One client connection: read a request, route it, forward it, relay the response, repeat.
//!
//! Requests on a connection are handled one at a time, in order, so pipelined requests get
//! their responses in request order by construction (their bytes simply wait in the
//! buffer). Each request runs on the routing table that was current when it started.
//!
//! # Hot path
//! Per request, once warm: no allocation and no lock. The connection owns its buffers
//! (`buf` for the client's bytes, `out` for rewritten heads) and reuses them; upstream
//! connections come from the worker's pool with their own buffer. A small complete body
//! rides in the same `write` as the head; a small response is written to the client in one
//! `write` straight from the upstream buffer when its head needs no rewriting.
//!
//! # Invariants
//! - Nothing of a request that failed framing checks reaches an upstream.
//! - A Command is sent at most once: after any of its bytes were accepted by an upstream
//!   socket it is never sent again; failures answer 502/504.
//! - A Query whose whole request was buffered may be re-sent once on a fresh connection
//!   when a reused pooled connection turns out dead before any response byte.
//! - An upstream connection goes back to the pool only after a cleanly framed exchange
//!   with no stray bytes; bytes an upstream sent past the end of its response are never
//!   delivered to any client.
//!
//! # Errors
//! Failures before the response started are answered with a short plain-text status
//! ([`ProxyError`]); after that, the client connection is closed.

use std::cell::Cell;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::CancelableAsyncReadRent;
use monoio::net::TcpStream;

use super::worker::Worker;
use crate::access_log::AccessRecord;
use crate::config::Settings;
use crate::error::{ErrorKind, ProxyError};
use crate::forward::io::{read_some, write_all, write_range, write_static, IoFail};
use crate::forward::relay::{relay_chunked, relay_length, relay_until_close, RelayFail};
use crate::forward::tunnel;
use crate::health::state::{report, Admission};
use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{
    response_is_verbatim, write_request_head, write_response_head, ConnectionField,
};
use crate::http::parse::{parse_request, restrict_upgrade, BodyFraming, Method, RequestHead};
use crate::http::response::{parse_response, ResponseFraming, ResponseHead};
use crate::http::scan::{leading_crlf_len, HeadScanner, ScanError};
use crate::metrics::{bump, Outcome};
use crate::route::extract::{user_id_from_headers, user_id_from_query};
use crate::route::router::{Class, WorkerTable};
use crate::upstream::pool::{connect, UpstreamConn};

/// Initial size of a client connection's read buffer.
const CLIENT_BUFFER_BYTES: usize = 16 * 1024;
/// A buffer grown past this (large head or scanned body) is shrunk back when idle.
const CLIENT_BUFFER_SHRINK_BYTES: usize = 64 * 1024;
/// Complete bodies up to this size are sent in the same write as the head.
const INLINE_BODY_BYTES: usize = 16 * 1024;
/// Largest upstream response head accepted.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What happens to the connection after a request.
enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close the client connection.
    Close,
    /// Switch to a byte tunnel with this upstream (after a 101).
    Tunnel(TcpStream),
}

/// A failure while handling one request, and whether the client already got bytes of a
/// response (then nothing more can be said; the connection just closes).
struct Failure {
    error: ProxyError,
    response_started: bool,
    body_consumed: bool,
}

impl From<ProxyError> for Failure {
    fn from(error: ProxyError) -> Self {
        Failure {
            error,
            response_started: false,
            body_consumed: false,
        }
    }
}

/// Per-connection state, reused across the requests of a connection.
struct Client {
    stream: TcpStream,
    peer: IpAddr,
    /// Client bytes: the current request's head (from offset 0), then whatever followed.
    buf: Vec<u8>,
    /// Rewritten heads and error responses.
    out: Vec<u8>,
    head: RequestHead,
    response: ResponseHead,
    /// The current request's user id.
    user: Vec<u8>,
    /// `X-Forwarded-For: <peer>\r\n`, built once per connection.
    forwarded_for: Vec<u8>,
    /// Copy of the request line, kept for the access log (only when it is enabled).
    request_line: Vec<u8>,
    /// Raw length of the current request's body bytes in `buf` (set while handling).
    body_in_buf: usize,
}

/// Serve one accepted client connection until it closes.
pub async fn serve(worker: Rc<Worker>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut forwarded_for = Vec::with_capacity(48);
    let _ = write!(
        ByteWriter(&mut forwarded_for),
        "X-Forwarded-For: {}\r\n",
        peer.ip()
    );
    let mut client = Client {
        stream,
        peer: peer.ip(),
        buf: Vec::with_capacity(CLIENT_BUFFER_BYTES),
        out: Vec::with_capacity(1024),
        head: RequestHead::default(),
        response: ResponseHead::default(),
        user: Vec::with_capacity(64),
        forwarded_for,
        request_line: Vec::new(),
        body_in_buf: 0,
    };
    loop {
        let idle_table = worker.table();
        let len = match read_head(&worker, &mut client, &idle_table.table.settings).await {
            Ok(Some(len)) => len,
            Ok(None) => break,
            Err(e) => {
                client.request_line.clear();
                let outcome = Outcome {
                    status: e.status(),
                    error: Some(e.kind),
                    ..Outcome::default()
                };
                respond_error(&mut client, e, true, &idle_table.table.settings).await;
                finish(&worker, &idle_table, &client, &outcome, Duration::ZERO);
                break;
            }
        };
        drop(idle_table);
        // The table current when the head arrived (a reload while idle applies at once).
        let table = worker.table();
        let settings = &table.table.settings;
        let started = Instant::now();
        let mut outcome = Outcome::default();
        client.body_in_buf = 0;
        if worker.access_log.is_some() {
            let line_end = memchr::memchr(b'\r', &client.buf[..len]).unwrap_or(0);
            client.request_line.clear();
            client
                .request_line
                .extend_from_slice(&client.buf[..line_end]);
        }
        if let Err(e) = parse_request(&client.buf, len, settings.max_headers, &mut client.head) {
            outcome.status = e.status();
            outcome.error = Some(e.kind);
            respond_error(&mut client, e, true, settings).await;
            finish(&worker, &table, &client, &outcome, started.elapsed());
            break;
        }
        let next = match handle(&worker, &table, &mut client, &mut outcome, started).await {
            Ok(next) => next,
            Err(f) => {
                outcome.error = Some(f.error.kind);
                if f.response_started {
                    Next::Close
                } else {
                    let keep = !f.error.closes_connection()
                        && f.body_consumed
                        && client.head.is_keep_alive
                        && !worker.is_draining();
                    outcome.status = f.error.status();
                    respond_error(&mut client, f.error, !keep, settings).await;
                    if keep {
                        // The whole request was consumed: drop it and go on.
                        let consumed = client.head.len + client.body_in_buf;
                        client.buf.drain(..consumed.min(client.buf.len()));
                        Next::KeepAlive
                    } else {
                        Next::Close
                    }
                }
            }
        };
        finish(&worker, &table, &client, &outcome, started.elapsed());
        match next {
            Next::KeepAlive => {}
            Next::Close => break,
            Next::Tunnel(upstream) => {
                tunnel::run(client.stream, upstream).await;
                return;
            }
        }
        if client.buf.is_empty() && client.buf.capacity() > CLIENT_BUFFER_SHRINK_BYTES {
            client.buf.shrink_to(CLIENT_BUFFER_BYTES);
        }
    }
}

/// Count a finished request and write its access log line.
fn finish(worker: &Worker, wt: &WorkerTable, c: &Client, outcome: &Outcome, elapsed: Duration) {
    let table = &*wt.table;
    worker.metrics.record(outcome, table.version, elapsed);
    if let Some(log) = &worker.access_log {
        let (method, target) = match memchr::memchr(b' ', &c.request_line) {
            Some(i) => {
                let rest = &c.request_line[i + 1..];
                let end = memchr::memrchr(b' ', rest).unwrap_or(rest.len());
                (&c.request_line[..i], &rest[..end])
            }
            None => (&b"-"[..], &b"-"[..]),
        };
        let found_user = outcome.partition.is_some() && !c.user.is_empty();
        let record = AccessRecord {
            client: c.peer,
            method,
            target,
            user: found_user.then_some(&c.user[..]),
            class: outcome.class.map_or("", |k| k.label()),
            partition: outcome.partition.map_or("", |p| table.partition_name(p)),
            backend: outcome.backend.map(|b| table.backends[b as usize].addr),
            status: outcome.status.unwrap_or(0),
            duration: elapsed,
        };
        if !log.log(&record) {
            bump(&worker.metrics.access_log_dropped, 1);
        }
    }
}

/// Read until the buffer holds a complete head. `Ok(None)`: the connection ended cleanly
/// (EOF or idle timeout between requests, or the worker is draining).
async fn read_head(
    worker: &Worker,
    c: &mut Client,
    s: &Settings,
) -> Result<Option<usize>, ProxyError> {
    let mut scanner = HeadScanner::new();
    let mut deadline: Option<Instant> = None;
    loop {
        if scanner.is_at_start() {
            let skip = leading_crlf_len(&c.buf);
            if skip > 0 {
                c.buf.drain(..skip);
            }
        }
        if !c.buf.is_empty() {
            match scanner.scan(&c.buf, s.max_head_bytes) {
                Ok(Some(len)) => return Ok(Some(len)),
                Ok(None) => {}
                Err(ScanError::TooLarge) => {
                    return Err(ProxyError::downstream(ErrorKind::HeadTooLarge))
                }
                Err(ScanError::BareLf) => {
                    return Err(ProxyError::bad_request("bare LF in request head"))
                }
                Err(ScanError::BareCr) => {
                    return Err(ProxyError::bad_request("bare CR in request head"))
                }
            }
        }
        if c.buf.capacity() - c.buf.len() < 1024 {
            let grow = c.buf.capacity().max(CLIENT_BUFFER_BYTES);
            c.buf.reserve(grow);
        }
        let room = c.buf.capacity() - c.buf.len();
        let n = if c.buf.is_empty() {
            // Between requests: idle timeout, and wake up for a drain.
            if worker.is_draining() {
                return Ok(None);
            }
            let handle = worker.idle_cancel_handle();
            let len = c.buf.len();
            let owned = std::mem::take(&mut c.buf);
            let read = c
                .stream
                .cancelable_read(owned.slice_mut(len..len + room), handle);
            match monoio::time::timeout(s.client_idle_timeout, read).await {
                Ok((Ok(n), slice)) => {
                    c.buf = slice.into_inner();
                    n
                }
                Ok((Err(_), slice)) => {
                    c.buf = slice.into_inner();
                    return Ok(None);
                }
                Err(_) => {
                    bump(&worker.metrics.idle_timeouts, 1);
                    return Ok(None);
                }
            }
        } else {
            let now = Instant::now();
            let until = *deadline.get_or_insert(now + s.client_header_timeout);
            let left = until.saturating_duration_since(now);
            if left.is_zero() {
                return Err(ProxyError::downstream(ErrorKind::HeaderTimeout));
            }
            match read_some(&mut c.stream, &mut c.buf, room, left).await {
                Ok(n) => n,
                Err(IoFail::Timeout) => {
                    return Err(ProxyError::downstream(ErrorKind::HeaderTimeout))
                }
                Err(_) => return Err(ProxyError::downstream(ErrorKind::ClientGone)),
            }
        };
        if n == 0 {
            return if c.buf.is_empty() {
                Ok(None)
            } else {
                Err(ProxyError::downstream(ErrorKind::ClientGone))
            };
        }
        if deadline.is_none() {
            deadline = Some(Instant::now() + s.client_header_timeout);
        }
    }
}

/// Route, forward and relay one parsed request.
async fn handle(
    worker: &Worker,
    wt: &WorkerTable,
    c: &mut Client,
    outcome: &mut Outcome,
    started: Instant,
) -> Result<Next, Failure> {
    let table = &*wt.table;
    let s = &table.settings;
    restrict_upgrade(&c.buf, &mut c.head, &s.upgrade_protocols);
    let head_len = c.head.len;
    let framing = c.head.framing();

    // 1. Who is it for: headers, then query, then (if needed) the JSON body.
    let mut found = user_id_from_headers(&c.buf, &c.head, &table.extract, &mut c.user)?;
    if !found {
        if let Some(q) = c.head.query {
            found = user_id_from_query(q.get(&c.buf), &table.extract, &mut c.user)?;
        }
    }
    let mut decoder = ChunkedDecoder::new();
    let mut continue_sent = false;
    let body_in_buf: usize;
    let body_complete: bool;
    let wants_body = !found
        && framing != BodyFraming::None
        && c.head.body_may_be_json
        && !table.extract.json_keys.is_empty();
    if wants_body {
        if c.head.expects_continue {
            write_static(&mut c.stream, CONTINUE_100, s.client_body_timeout)
                .await
                .map_err(|_| ProxyError::downstream(ErrorKind::ClientGone))?;
            continue_sent = true;
        }
        body_in_buf = buffer_body(c, s, &mut decoder).await?;
        body_complete = true;
        found = worker.scan_json_body(
            &c.buf[head_len..head_len + body_in_buf],
            framing == BodyFraming::Chunked,
            &table.extract,
            &mut c.user,
        )?;
    } else {
        let available = c.buf.len() - head_len;
        match framing {
            BodyFraming::None => {
                body_in_buf = 0;
                body_complete = true;
            }
            BodyFraming::Length(n) => {
                body_in_buf = available.min(n as usize);
                body_complete = body_in_buf as u64 == n;
            }
            BodyFraming::Chunked => {
                body_in_buf = decoder
                    .feed(&c.buf[head_len..], &mut |_| {})
                    .map_err(|e| ProxyError::bad_request(e.reason()))?;
                body_complete = decoder.is_done();
            }
        }
    }

    // Raw body bytes (chunk framing included) that sit in the buffer after the head:
    // what to drop if the request is refused but the connection kept.
    c.body_in_buf = body_in_buf;

    // 2. Which class, partition and servers.
    let user = if found { Some(&c.user[..]) } else { None };
    let class = table.classify(c.head.method(), c.head.path.get(&c.buf));
    outcome.class = Some(class);
    let partition = table.partition_for(user).map_err(|e| Failure {
        error: e,
        response_started: false,
        body_consumed: body_complete,
    })?;
    outcome.partition = Some(partition);

    // 3. The head to forward, with a small complete body riding along.
    let extra: &[u8] = if s.x_forwarded_for {
        &c.forwarded_for
    } else {
        b""
    };
    write_request_head(&c.buf, &c.head, extra, &mut c.out);
    let is_inline = body_complete && body_in_buf <= INLINE_BODY_BYTES;
    if is_inline {
        c.out
            .extend_from_slice(&c.buf[head_len..head_len + body_in_buf]);
    }
    let is_head_request = c.head.method() == Method::Head;
    // Request bodies: the client is read, the upstream written.
    let relay_opts = worker.relay_options(s.client_body_timeout, s.upstream_response_timeout, s);

    // 4. Shed load before touching an upstream: Queries first, then Commands.
    let in_flight = worker.in_flight.get();
    let limit = match class {
        Class::Query => s.query_shed_in_flight,
        Class::Command => s.max_in_flight,
    };
    if in_flight >= limit {
        return Err(Failure {
            error: ProxyError::internal(ErrorKind::Overloaded),
            response_started: false,
            body_consumed: body_complete,
        });
    }
    let _in_flight = InFlight::enter(&worker.in_flight);
    worker.earn_retry_budget(&s.retry);
    let deadline = s.request_deadline.map(|d| started + d);

    // 5. Send it. Connect failures fail over to the next server (nothing was sent). A
    //    buffered Query may be re-sent: once on a fresh connection when a reused pooled
    //    connection proves dead, and on another server after a reset or a timeout
    //    (bounded attempts, exponential backoff, retry budget). A Command whose bytes may
    //    have reached an upstream is never sent again.
    let mut tried = 0u64;
    let mut fresh_only = false;
    // Attempts that count against `retry.max_attempts` (re-sends after a stale pooled
    // connection do not: the request never reached the application).
    let mut attempts = 1u32;
    let mut consumed_in_buf = head_len + body_in_buf;
    let circuit = s.circuit.as_ref();
    // The failure that made us retry: reported if no server is left to retry on.
    let mut retried_after: Option<ErrorKind> = None;
    let (backend, mut up, version) = 'attempt: loop {
        let (backend, pos, admission, mut up) = checkout(
            worker, wt, partition, class, &mut tried, fresh_only, deadline,
        )
        .await
        .map_err(|e| Failure {
            error: retried_after.map_or(e, ProxyError::upstream),
            response_started: false,
            body_consumed: body_complete,
        })?;
        outcome.backend = Some(backend);
        let b = &*table.backends[backend as usize];
        let out_len = c.out.len();
        let (res, any_sent) = write_range(
            &mut up.stream,
            &mut c.out,
            0,
            out_len,
            s.upstream_response_timeout,
        )
        .await;
        if res.is_err() {
            let resend_query = class == Class::Query && is_inline && up.is_reused && !fresh_only;
            if !any_sent || resend_query {
                // Nothing reached the upstream, or a buffered Query met a dead pooled
                // connection: try again on a new connection.
                if up.is_reused {
                    bump(&worker.metrics.pool_stale, 1);
                } else {
                    report(b, circuit, admission, false);
                    tried |= 1u64 << pos;
                }
                if any_sent {
                    bump(&worker.metrics.retries, 1);
                }
                fresh_only = true;
                continue 'attempt;
            }
            report(b, circuit, admission, false);
            return Err(upstream_failure(ErrorKind::UpstreamReset, body_complete));
        }
        if !is_inline {
            // Body bytes that arrived with the head, then the rest from the socket.
            let (res, _) = write_range(
                &mut up.stream,
                &mut c.buf,
                head_len,
                head_len + body_in_buf,
                s.upstream_response_timeout,
            )
            .await;
            if res.is_err() {
                report(b, circuit, admission, false);
                return Err(upstream_failure(ErrorKind::UpstreamReset, false));
            }
            if !body_complete {
                if c.head.expects_continue && !continue_sent {
                    write_static(&mut c.stream, CONTINUE_100, s.client_body_timeout)
                        .await
                        .map_err(|_| ProxyError::downstream(ErrorKind::ClientGone))?;
                }
                c.buf.clear();
                consumed_in_buf = 0;
                let relayed = match framing {
                    BodyFraming::Length(n) => {
                        relay_length(
                            &mut c.stream,
                            &mut up.stream,
                            &mut c.buf,
                            n - body_in_buf as u64,
                            &relay_opts,
                        )
                        .await
                    }
                    BodyFraming::Chunked => {
                        relay_chunked(
                            &mut c.stream,
                            &mut up.stream,
                            &mut c.buf,
                            &mut decoder,
                            &relay_opts,
                        )
                        .await
                    }
                    BodyFraming::None => Ok(()),
                };
                match relayed {
                    Ok(()) => {}
                    Err(RelayFail::Read(IoFail::Timeout)) => {
                        return Err(ProxyError::downstream(ErrorKind::BodyTimeout).into())
                    }
                    Err(RelayFail::Read(_)) => {
                        return Err(ProxyError::downstream(ErrorKind::ClientGone).into())
                    }
                    Err(RelayFail::Framing(e)) => {
                        return Err(ProxyError::bad_request(e.reason()).into())
                    }
                    Err(RelayFail::Write(_)) => {
                        // The upstream stopped reading: it may have answered early.
                        report(b, circuit, admission, false);
                        return Err(upstream_failure(ErrorKind::UpstreamReset, false));
                    }
                }
            }
        }
        // 6. The response head (interim responses are relayed or absorbed).
        let error = match read_response_head(c, &mut up, is_head_request, s, deadline).await {
            Ok(()) => {
                let is_5xx = c.response.status >= 500;
                report(
                    b,
                    circuit,
                    admission,
                    !(is_5xx && circuit.is_some_and(|k| k.count_5xx)),
                );
                break 'attempt (backend, up, wt.table.version);
            }
            Err(e) => e,
        };
        report(b, circuit, admission, false);
        let retryable = matches!(
            error.kind,
            ErrorKind::UpstreamReset | ErrorKind::UpstreamTimeout
        );
        if !(class == Class::Query && is_inline && retryable) {
            return Err(upstream_failure(error.kind, true));
        }
        if error.kind == ErrorKind::UpstreamReset && up.is_reused && !fresh_only {
            // The pooled connection died in the meantime; the request never reached the
            // application. Re-send on a fresh connection, outside the retry budget.
            bump(&worker.metrics.pool_stale, 1);
            bump(&worker.metrics.retries, 1);
            fresh_only = true;
            continue 'attempt;
        }
        if attempts >= s.retry.max_attempts || !worker.spend_retry_budget() {
            return Err(upstream_failure(error.kind, true));
        }
        // Another server, after a backoff.
        attempts += 1;
        retried_after = Some(error.kind);
        tried |= 1u64 << pos;
        fresh_only = false;
        let backoff = s
            .retry
            .backoff_base
            .saturating_mul(1 << (attempts - 2).min(16))
            .min(s.retry.backoff_max);
        if deadline.is_some_and(|d| Instant::now() + backoff >= d) {
            return Err(upstream_failure(ErrorKind::DeadlineExceeded, true));
        }
        if !backoff.is_zero() {
            monoio::time::sleep(backoff).await;
        }
        bump(&worker.metrics.retries, 1);
    };

    if c.response.status == 101 {
        if !c.head.is_upgrade {
            return Err(upstream_failure(
                ErrorKind::BadResponse("101 without an upgrade request"),
                true,
            ));
        }
        return switch_protocols(c, up, consumed_in_buf, s).await;
    }

    // 6. The response: head, then body, framing-aware.
    let framing_out = c.response.framing();
    let client_keeps =
        c.head.is_keep_alive && framing_out != ResponseFraming::UntilClose && !worker.is_draining();
    let connection = if !client_keeps {
        ConnectionField::Close
    } else if c.head.minor_version == 0 {
        ConnectionField::KeepAlive
    } else {
        ConnectionField::Omit
    };
    let resp_len = c.response.len;
    let after = up.buf.len() - resp_len;
    let mut resp_decoder = ChunkedDecoder::new();
    let (in_buf, complete, stray) = match framing_out {
        ResponseFraming::None => (0, true, after > 0),
        ResponseFraming::Length(n) => {
            let k = after.min(n as usize);
            (k, k as u64 == n, after as u64 > n)
        }
        ResponseFraming::Chunked => {
            let k = resp_decoder
                .feed(&up.buf[resp_len..], &mut |_| {})
                .map_err(|e| upstream_failure(ErrorKind::BadResponse(e.reason()), true))?;
            (k, resp_decoder.is_done(), after > k)
        }
        ResponseFraming::UntilClose => (after, false, false),
    };
    let write_to_client = s.client_body_timeout;
    let sent = if response_is_verbatim(&c.response, connection) {
        write_range(
            &mut c.stream,
            &mut up.buf,
            0,
            resp_len + in_buf,
            write_to_client,
        )
        .await
        .0
    } else {
        write_response_head(&up.buf, &c.response, connection, &mut c.out);
        c.out
            .extend_from_slice(&up.buf[resp_len..resp_len + in_buf]);
        write_all(&mut c.stream, &mut c.out, write_to_client).await
    };
    outcome.status = Some(c.response.status);
    if sent.is_err() {
        outcome.error = Some(ErrorKind::ClientGone);
        return Ok(Next::Close);
    }
    let mut is_reusable = c.response.is_keep_alive && !stray;
    if !complete {
        up.buf.clear();
        let opts = worker.relay_options(s.upstream_response_timeout, s.client_body_timeout, s);
        let relayed = match framing_out {
            ResponseFraming::Length(n) => {
                relay_length(
                    &mut up.stream,
                    &mut c.stream,
                    &mut up.buf,
                    n - in_buf as u64,
                    &opts,
                )
                .await
            }
            ResponseFraming::Chunked => {
                let r = relay_chunked(
                    &mut up.stream,
                    &mut c.stream,
                    &mut up.buf,
                    &mut resp_decoder,
                    &opts,
                )
                .await;
                is_reusable &= up.buf.is_empty();
                r
            }
            ResponseFraming::UntilClose | ResponseFraming::None => {
                relay_until_close(&mut up.stream, &mut c.stream, &mut up.buf, &opts).await
            }
        };
        if let Err(fail) = relayed {
            // Mid-body failure: the client has a partial response; close both sides.
            outcome.error = Some(match fail {
                RelayFail::Read(IoFail::Timeout) => ErrorKind::UpstreamTimeout,
                RelayFail::Read(_) => ErrorKind::UpstreamReset,
                RelayFail::Framing(e) => ErrorKind::BadResponse(e.reason()),
                RelayFail::Write(_) => ErrorKind::ClientGone,
            });
            return Ok(Next::Close);
        }
    }
    if is_reusable {
        worker.return_upstream(backend, version, up);
    }
    c.buf.drain(..consumed_in_buf.min(c.buf.len()));
    Ok(if client_keeps {
        Next::KeepAlive
    } else {
        Next::Close
    })
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

fn upstream_failure(kind: ErrorKind, body_consumed: bool) -> Failure {
    Failure {
        error: ProxyError::upstream(kind),
        response_started: false,
        body_consumed,
    }
}

/// An upstream connection for the partition: pooled if possible, else a new one; on
/// connect failure the next available server of the list is tried.
async fn checkout(
    worker: &Worker,
    wt: &WorkerTable,
    partition: u16,
    class: Class,
    tried: &mut u64,
    fresh_only: bool,
    deadline: Option<Instant>,
) -> Result<(u16, u32, Admission, UpstreamConn), ProxyError> {
    let s = &wt.table.settings;
    let mut last_error = ProxyError::internal(ErrorKind::NoHealthyServer);
    loop {
        let Some((backend, pos, admission)) = wt.pick_server(partition, class, *tried) else {
            return Err(last_error);
        };
        if !fresh_only {
            if let Some(conn) = worker.take_upstream(backend, wt.table.version, s) {
                bump(&worker.metrics.pool_reused, 1);
                return Ok((backend, pos, admission, conn));
            }
        }
        if *tried != 0 {
            bump(&worker.metrics.failovers, 1);
        }
        let b = &*wt.table.backends[backend as usize];
        let timeout = match remaining(deadline) {
            Some(left) if left.is_zero() => {
                return Err(ProxyError::upstream(ErrorKind::DeadlineExceeded))
            }
            Some(left) => left.min(s.upstream_connect_timeout),
            None => s.upstream_connect_timeout,
        };
        match connect(b.addr, timeout).await {
            Ok(conn) => {
                bump(&worker.metrics.pool_opened, 1);
                return Ok((backend, pos, admission, conn));
            }
            Err(e) => {
                report(b, s.circuit.as_ref(), admission, false);
                *tried |= 1u64 << pos;
                last_error = e;
            }
        }
    }
}

/// Time left until `deadline` (None: no deadline).
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Read the upstream response head into `up.buf` and parse it into `c.response`.
/// Interim responses other than 101 are forwarded (100 is absorbed: ringgate answers
/// `Expect` itself).
async fn read_response_head(
    c: &mut Client,
    up: &mut UpstreamConn,
    is_head_request: bool,
    s: &Settings,
    deadline: Option<Instant>,
) -> Result<(), ProxyError> {
    let mut scanner = HeadScanner::new();
    loop {
        let len = loop {
            if !up.buf.is_empty() {
                match scanner.scan(&up.buf, MAX_RESPONSE_HEAD_BYTES) {
                    Ok(Some(len)) => break len,
                    Ok(None) => {}
                    Err(_) => {
                        return Err(ProxyError::upstream(ErrorKind::BadResponse(
                            "malformed response head from upstream",
                        )))
                    }
                }
            }
            if up.buf.capacity() - up.buf.len() < 1024 {
                up.buf.reserve(up.buf.capacity());
            }
            let room = up.buf.capacity() - up.buf.len();
            let (timeout, kind) = match remaining(deadline) {
                Some(left) if left < s.upstream_response_timeout => {
                    (left, ErrorKind::DeadlineExceeded)
                }
                _ => (s.upstream_response_timeout, ErrorKind::UpstreamTimeout),
            };
            match read_some(&mut up.stream, &mut up.buf, room, timeout).await {
                Ok(0) => {
                    return Err(ProxyError::upstream(if up.buf.is_empty() {
                        ErrorKind::UpstreamReset
                    } else {
                        ErrorKind::BadResponse("upstream closed mid-head")
                    }))
                }
                Ok(_) => {}
                Err(IoFail::Timeout) => return Err(ProxyError::upstream(kind)),
                Err(_) => return Err(ProxyError::upstream(ErrorKind::UpstreamReset)),
            }
        };
        parse_response(&up.buf, len, is_head_request, &mut c.response)?;
        if !c.response.is_interim() || c.response.status == 101 {
            return Ok(());
        }
        if c.response.status != 100 {
            write_response_head(&up.buf, &c.response, ConnectionField::Omit, &mut c.out);
            if write_all(&mut c.stream, &mut c.out, s.client_body_timeout)
                .await
                .is_err()
            {
                return Err(ProxyError::downstream(ErrorKind::ClientGone));
            }
        }
        up.buf.drain(..len);
        scanner.reset();
    }
}

/// Relay a 101 and hand both sockets to the tunnel.
async fn switch_protocols(
    c: &mut Client,
    mut up: UpstreamConn,
    consumed: usize,
    s: &Settings,
) -> Result<Next, Failure> {
    let resp_len = c.response.len;
    write_response_head(&up.buf, &c.response, ConnectionField::Upgrade, &mut c.out);
    c.out.extend_from_slice(&up.buf[resp_len..]);
    if write_all(&mut c.stream, &mut c.out, s.client_body_timeout)
        .await
        .is_err()
    {
        return Ok(Next::Close);
    }
    // Client bytes that followed the upgrade request belong to the new protocol.
    let len = c.buf.len();
    if consumed < len {
        let (res, _) = write_range(
            &mut up.stream,
            &mut c.buf,
            consumed,
            len,
            s.upstream_response_timeout,
        )
        .await;
        if res.is_err() {
            return Ok(Next::Close);
        }
    }
    Ok(Next::Tunnel(up.stream))
}

/// Read a body needed for routing entirely into the buffer (after the head). Returns its
/// raw length. 413 beyond `body_scan_bytes`.
async fn buffer_body(
    c: &mut Client,
    s: &Settings,
    decoder: &mut ChunkedDecoder,
) -> Result<usize, ProxyError> {
    let head_len = c.head.len;
    let limit = s.body_scan_bytes;
    let too_large = || ProxyError::downstream(ErrorKind::BodyTooLarge);
    match c.head.framing() {
        BodyFraming::None => Ok(0),
        BodyFraming::Length(n) => {
            if n > limit as u64 {
                return Err(too_large());
            }
            let want = head_len + n as usize;
            if c.buf.capacity() < want {
                c.buf.reserve(want - c.buf.len());
            }
            while c.buf.len() < want {
                let room = c.buf.capacity() - c.buf.len();
                read_body_bytes(c, room, s).await?;
            }
            Ok(n as usize)
        }
        BodyFraming::Chunked => {
            let mut scanned = head_len;
            loop {
                let used = decoder
                    .feed(&c.buf[scanned..], &mut |_| {})
                    .map_err(|e| ProxyError::bad_request(e.reason()))?;
                scanned += used;
                if scanned - head_len > limit {
                    return Err(too_large());
                }
                if decoder.is_done() {
                    return Ok(scanned - head_len);
                }
                if c.buf.capacity() - c.buf.len() < 1024 {
                    c.buf.reserve(c.buf.capacity().min(limit + 1024));
                }
                let room = c.buf.capacity() - c.buf.len();
                read_body_bytes(c, room, s).await?;
            }
        }
    }
}

async fn read_body_bytes(c: &mut Client, room: usize, s: &Settings) -> Result<(), ProxyError> {
    match read_some(&mut c.stream, &mut c.buf, room, s.client_body_timeout).await {
        Ok(0) => Err(ProxyError::downstream(ErrorKind::ClientGone)),
        Ok(_) => Ok(()),
        Err(IoFail::Timeout) => Err(ProxyError::downstream(ErrorKind::BodyTimeout)),
        Err(_) => Err(ProxyError::downstream(ErrorKind::ClientGone)),
    }
}

/// Answer an error with a short plain-text body.
async fn respond_error(c: &mut Client, e: ProxyError, close: bool, s: &Settings) {
    let Some(status) = e.status() else { return };
    let reason = e.reason();
    c.out.clear();
    let mut w = ByteWriter(&mut c.out);
    let _ = write!(
        w,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        reason_phrase(status),
        reason.len() + 1
    );
    if let Some(secs) = e.retry_after_secs() {
        let _ = write!(w, "Retry-After: {secs}\r\n");
    }
    if close {
        let _ = write!(w, "Connection: close\r\n");
    }
    let _ = write!(w, "\r\n{reason}\n");
    let _ = write_all(
        &mut c.stream,
        &mut c.out,
        s.client_body_timeout.min(Duration::from_secs(5)),
    )
    .await;
}

/// Standard reason phrases for the statuses ringgate generates.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// `fmt::Write` into a byte vector (no intermediate `String`).
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}
