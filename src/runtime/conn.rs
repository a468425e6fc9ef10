//! One client connection: read a head, hand it to an exchange, keep the connection or
//! close it, repeat.
//!
//! Requests on a connection are handled one at a time, in order, so pipelined requests get
//! their responses in request order by construction (their bytes simply wait in the
//! buffer). Each request runs on the routing table that was current when its head
//! arrived.
//!
//! # Closing
//! A connection closed while the client may still be sending (an error answer, a refused
//! body, a pipelined request behind a close) is closed in stages, as RFC 9112 §9.6
//! describes: the answer is sent, the write side is shut (FIN), and what the client still
//! sends is read and discarded — for a bounded time and size — until it closes too. Only
//! then is the socket closed, so the kernel never answers unread bytes with an RST that
//! could destroy the answer in flight.

use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use super::client::{Client, CLIENT_BUFFER_BYTES};
use super::exchange::{self, respond_error, Next};
use super::worker::Worker;
use crate::access_log::{AccessRecord, CLIENT_CLOSED_REQUEST};
use crate::config::Settings;
use crate::error::{ErrorKind, ProxyError};
use crate::forward::io::{read_some, unacknowledged, write_static, IoFail};
use crate::forward::stream::{self, plain, Reader, Writer};
use crate::forward::timer;
use crate::forward::tunnel;
use crate::http::parse::{downgrade_later_http1_minor, parse_request, Method};
use crate::http::scan::{
    first_line_ends_within, leading_crlf_len, HeadScanner, ScanError, MAX_LEADING_CRLF_BYTES,
};
use crate::metrics::{bump, Outcome};
use crate::route::router::WorkerTable;

/// A buffer grown past this (large head or scanned body) is shrunk back when idle.
const CLIENT_BUFFER_SHRINK_BYTES: usize = 64 * 1024;
/// Longest a closing connection is read from (and discarded) before it is closed.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes read and discarded from a closing connection.
const LINGER_BYTES: usize = 1024 * 1024;
/// Pipelined requests a connection answers in a row before it lets the worker's other
/// tasks run (see [`yield_behind`]).
const PIPELINED_BURST: u32 = 32;

/// Serve one accepted client connection until it closes: after a TLS handshake when the
/// listener terminates TLS (the configuration current when the connection arrived).
pub async fn serve(worker: &Rc<Worker>, stream: TcpStream, peer: std::net::SocketAddr) {
    let tls = worker.table().table.listener_tls.clone();
    let mut c = match tls {
        None => Client::new(stream, peer),
        Some(config) => match handshake(worker, stream, peer, config).await {
            Some(c) => c,
            None => return,
        },
    };
    // Requests answered from the buffer since this task last let others run.
    let mut burst = 0u32;
    let mut first = true;
    let end = loop {
        let idle_table = worker.table();
        let mut head_deadline = None;
        let head = read_head(
            worker,
            &mut c,
            &idle_table.table.settings,
            first,
            &mut head_deadline,
        );
        let len = match head.await {
            Ok(Some(len)) => {
                super::ring::activity();
                first = false;
                len
            }
            Ok(None) => break End::Quiet,
            Err(e) => {
                c.request_line.clear();
                let outcome = Outcome {
                    status: e.status(),
                    error: Some(e.kind),
                    ..Outcome::default()
                };
                let s = &idle_table.table.settings;
                // Since the head's first byte (nginx's `$request_time`): a 408 took the
                // whole header timeout, not no time at all.
                let elapsed = head_deadline.map_or(Duration::ZERO, |d: Instant| {
                    let left = d.saturating_duration_since(Instant::now());
                    s.client_header_timeout.saturating_sub(left)
                });
                // The head did not parse: its method is not known.
                respond_error(&mut c, e, true, false, s.client_body_timeout).await;
                finish(worker, &idle_table, &c, &outcome, elapsed);
                break End::Lingering;
            }
        };
        drop(idle_table);
        // The table current when the head arrived (a reload while idle applies at once).
        let table = worker.table();
        match serve_request(worker, &table, &mut c, len).await {
            Next::KeepAlive => {}
            Next::Close => break End::Abrupt,
            Next::CloseLingering => break End::Lingering,
            Next::Cut { reset } => return cut(c, reset).await,
            Next::Tunnel(up) => {
                let opts = tunnel::TunnelOptions {
                    idle: table.table.settings.tunnel_idle_timeout,
                    stop: worker.tunnel_stop_handle(),
                };
                // Neither the request-stage buffers nor the routing table of the request
                // (a reload would leave it pinned) are held for the tunnel's life.
                drop(table);
                let end = tunnel::run(c.into_halves(), up.into_halves(), opts).await;
                tracing::debug!(?end, "tunnel ended");
                return;
            }
        }
        if c.buf.is_empty() {
            if c.buf.capacity() > CLIENT_BUFFER_SHRINK_BYTES {
                c.buf.shrink_to(CLIENT_BUFFER_BYTES);
            }
        } else {
            // The next request is already here. On epoll, reads and writes complete without
            // returning `Pending` while the socket has bytes (room): a client that keeps
            // the buffer full, with requests answered locally (429s), would otherwise
            // keep this task running, and the worker's other connections (and its
            // accepting) waiting, for seconds.
            burst += 1;
            if burst >= PIPELINED_BURST {
                burst = 0;
                yield_behind().await;
            }
        }
    };
    // Unread request bytes (a pipelined request behind a close) count as unread too.
    let written = if end == End::Lingering || !c.buf.is_empty() {
        linger(&mut c).await
    } else {
        // The last answer may still be on its way (an eager send): out before the close,
        // and a TLS client told of a clean end.
        let t = worker.table().table.settings.client_body_timeout;
        let closing = async {
            match end {
                End::Quiet => c.wr.finish().await,
                _ => c.wr.settle().await,
            }
        };
        matches!(timer::timeout(t, closing).await, Ok(Ok(())))
    };
    if !written {
        stream::reset(c.rd, c.wr);
    }
}

/// How a connection's request loop ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Between requests: the client closed, the idle timeout, a drain. A clean end (a TLS
    /// client gets `close_notify`).
    Quiet,
    /// Part of a request may be unread: close in stages ([`linger`]).
    Lingering,
    /// After a failure ([`Next::Close`]): just closed.
    Abrupt,
}

/// Let every task already queued on this worker run first, and the reactor be polled.
///
/// Not a self-wake: monoio queues a task woken while it runs at the *front* of the run
/// queue (`vendor/monoio/src/task/harness.rs`, `yield_now`), so it would run again at
/// once. The wake comes from a task spawned for it, queued at the back.
async fn yield_behind() {
    let mut parked = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut parked, true) {
            return std::task::Poll::Ready(());
        }
        let waker = cx.waker().clone();
        drop(monoio::spawn(async move { waker.wake() }));
        std::task::Poll::Pending
    })
    .await
}

/// The server side of a TLS handshake, within `timeouts.tls_handshake_ms` and cut by a
/// drain. A failure (a timeout, plain HTTP to the TLS port, no common protocol, a drain)
/// is counted and the connection closed; rustls has sent the alert it could.
async fn handshake(
    worker: &Worker,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ServerConfig>,
) -> Option<Client> {
    let _ = stream.set_nodelay(true);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let timeout = worker.table().table.settings.tls_handshake_timeout;
    // No request is in flight yet: a drain ends the handshake as it ends an idle
    // connection (its reads see EOF), rather than waiting for the timeout.
    if worker.is_draining() {
        return None;
    }
    let handshake = {
        // (On a failure the socket closes as `accept` returns, just before the guard
        // unregisters it: no other task runs in between, so no drain can shut it.)
        let _idle = worker.idle_reads.enter_handshake(fd);
        // Boxed: the handshake's ~4 KB, 128-byte-aligned future would otherwise sit in
        // every connection task, TLS or not.
        Box::pin(crate::tls::accept(stream, config, timeout)).await
    };
    match handshake {
        Ok((rd, wr)) => {
            let info = rd.info();
            tracing::debug!(
                %peer,
                sni = info.server_name.as_deref().unwrap_or("-"),
                version = ?info.protocol_version,
                resumed = info.is_resumed,
                "TLS handshake"
            );
            Some(Client::with_halves(
                Reader::ServerTls(rd),
                Writer::ServerTls(wr),
                fd,
                peer,
            ))
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            bump(&worker.metrics.tls_handshakes_failed, 1);
            None
        }
    }
}

/// Parse, exchange and account for one request whose head is `c.buf[..len]`.
async fn serve_request(
    worker: &Rc<Worker>,
    table: &Rc<WorkerTable>,
    c: &mut Client,
    len: usize,
) -> Next {
    let s = &table.table.settings;
    let started = Instant::now();
    c.started = started;
    let mut outcome = Outcome::default();
    if worker.access_log.is_some() {
        let line_end = memchr::memchr(b'\r', &c.buf[..len]).unwrap_or(0);
        c.request_line.clear();
        c.request_line.extend_from_slice(&c.buf[..line_end]);
    }
    let mut parsed = parse_request(&c.buf, len, s.max_headers, &mut c.head);
    if parsed.is_err() && downgrade_later_http1_minor(&mut c.buf[..len]) {
        parsed = parse_request(&c.buf, len, s.max_headers, &mut c.head);
    }
    if let Err(e) = parsed {
        outcome.status = e.status();
        outcome.error = Some(e.kind);
        respond_error(c, e, true, false, s.client_body_timeout).await;
        finish(worker, table, c, &outcome, started.elapsed());
        return Next::CloseLingering;
    }
    let next = match exchange::run(worker, table, c, &mut outcome).await {
        Ok(next) => next,
        Err(f) => {
            outcome.error = Some(f.error.kind);
            if f.response_started {
                Next::Close
            } else {
                let keep =
                    !f.error.closes_connection() && c.head.is_keep_alive && !worker.is_draining();
                let is_head = c.head.method() == Method::Head;
                outcome.status = f.error.status();
                match f.consumed {
                    Some(consumed) if keep => {
                        respond_error(c, f.error, false, is_head, s.client_body_timeout).await;
                        // The whole request was consumed: drop it and go on.
                        c.buf.drain(..consumed.min(c.buf.len()));
                        Next::KeepAlive
                    }
                    _ => {
                        respond_error(c, f.error, true, is_head, s.client_body_timeout).await;
                        Next::CloseLingering
                    }
                }
            }
        }
    };
    finish(worker, table, c, &outcome, started.elapsed());
    next
}

/// Close in stages: FIN, then read and discard until the client closes (or the bounds).
/// Whether everything written went out before the FIN.
async fn linger(c: &mut Client) -> bool {
    linger_close(&mut c.rd, &mut c.wr, &mut c.buf, c.fd).await
}

/// End a connection whose response was cut (see [`Next::Cut`]): with `reset`, a plain
/// TCP connection is reset at once (RST, no FIN before it); otherwise what was written
/// goes out, the TCP write side is shut without `close_notify`, and the client is read
/// from as in [`linger`].
async fn cut(mut c: Client, reset: bool) {
    let until = Instant::now() + LINGER_TIME;
    if reset && c.rd.is_plain() {
        stream::reset(c.rd, c.wr);
        return;
    }
    // TLS records still queued, or an eager send, go out first (bounded).
    let _ = timer::timeout(LINGER_TIME, async {
        let _ = c.wr.flush().await;
        c.wr.settle().await
    })
    .await;
    // SAFETY: shutdown(2) on the connection's own socket, which `c` keeps open.
    unsafe { libc::shutdown(c.fd, libc::SHUT_WR) };
    drain_until_closed(&mut c.rd, &mut c.buf, c.fd, until).await;
}

/// Shut the write side (FIN after everything written), then read and discard until the
/// peer closes, at most [`LINGER_BYTES`] within [`LINGER_TIME`]. `buf` is scratch; `fd` is
/// the connection's socket. Whether the shutdown went through: everything written went
/// out first.
async fn linger_close(rd: &mut Reader, wr: &mut Writer, buf: &mut Vec<u8>, fd: RawFd) -> bool {
    let until = Instant::now() + LINGER_TIME;
    // (The shutdown waits for an answer still going out eagerly: bounded too.)
    if !matches!(timer::timeout(LINGER_TIME, wr.shutdown()).await, Ok(Ok(()))) {
        return false;
    }
    drain_until_closed(rd, buf, fd, until).await;
    true
}

/// Read and discard until the peer closes, at most [`LINGER_BYTES`], until `until`.
///
/// A peer still sending past [`LINGER_BYTES`] is read no further, so the close that
/// follows is a reset (bytes unread), which throws away what is still in the send queue —
/// the answer, to a client that reads it while it sends. So that case first waits (until
/// `until`) for the peer to have acknowledged everything written.
async fn drain_until_closed(rd: &mut Reader, buf: &mut Vec<u8>, fd: RawFd, until: Instant) {
    let mut drained = 0;
    buf.clear();
    if buf.capacity() == 0 {
        buf.reserve(CLIENT_BUFFER_BYTES);
    }
    while drained < LINGER_BYTES {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        // (Not `read_some`: a TLS client whose read timed out is read raw here, see
        // `Reader::read_discarded`, or its bytes would stay unread and the close reset.)
        match timer::timeout(left, rd.read_discarded(std::mem::take(buf))).await {
            Ok((Ok(n @ 1..), back)) => {
                drained += n;
                *buf = back;
            }
            _ => return,
        }
        buf.clear();
    }
    // No event tells it: polled, backing off (a rare path: a client that goes on sending
    // its body after an answer refused it).
    let mut pause = Duration::from_millis(1);
    while unacknowledged(fd) > 0 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        timer::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The answer to a connection beyond `listener.max_connections_per_worker`.
const REFUSED_AT_BOUND: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 25\r\nRetry-After: 1\r\nConnection: close\r\n\r\nconnection limit reached\n";

/// Refuse a connection at the worker's connection bound: `503` with `Retry-After`, then a
/// staged close, so the client reads the answer rather than a reset.
pub async fn refuse(stream: TcpStream) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let (mut rd, mut wr) = plain(stream);
    if write_static(&mut wr, REFUSED_AT_BOUND, Duration::from_secs(1))
        .await
        .is_ok()
    {
        let mut buf = Vec::with_capacity(4096);
        linger_close(&mut rd, &mut wr, &mut buf, fd).await;
    }
}

/// Count a finished request and write its access log line.
fn finish(worker: &Worker, wt: &WorkerTable, c: &Client, outcome: &Outcome, elapsed: Duration) {
    let table = &*wt.table;
    worker.metrics.record(outcome, table, elapsed);
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
            status: outcome.status.unwrap_or(CLIENT_CLOSED_REQUEST),
            duration: elapsed,
        };
        if !log.log(&record) {
            bump(&worker.metrics.access_log_dropped, 1);
        }
    }
}

/// Read until the buffer holds a complete head. `Ok(None)`: the connection ended cleanly
/// (EOF or idle timeout between requests, or the worker is draining). `first`: the
/// connection's first request (see [`read_idle`]). `deadline`: set to the head's
/// deadline once its first byte is in (`client_header_timeout` after it).
async fn read_head(
    worker: &Worker,
    c: &mut Client,
    s: &Settings,
    first: bool,
    deadline: &mut Option<Instant>,
) -> Result<Option<usize>, ProxyError> {
    let mut scanner = HeadScanner::new();
    // Empty lines before this request, at most [`MAX_LEADING_CRLF_BYTES`] in all; one more
    // is left in the head, which the parser refuses.
    let mut skipped = 0;
    loop {
        if scanner.is_at_start() {
            let skip = leading_crlf_len(&c.buf, MAX_LEADING_CRLF_BYTES - skipped);
            if skip > 0 {
                c.buf.drain(..skip);
                skipped += skip;
            }
        }
        // A lone CR at the start may be half of an empty line: read the rest first.
        let half_crlf = scanner.is_at_start() && c.buf[..] == *b"\r";
        if !c.buf.is_empty() && !half_crlf {
            match scanner.scan(&c.buf, s.max_head_bytes) {
                Ok(Some(len)) => return Ok(Some(len)),
                Ok(None) => {}
                Err(ScanError::TooLarge) => {
                    let kind = if first_line_ends_within(&c.buf, s.max_head_bytes) {
                        ErrorKind::HeadTooLarge
                    } else {
                        ErrorKind::UriTooLong
                    };
                    return Err(ProxyError::downstream(kind));
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
        // Skipped empty lines leave the buffer empty, but the head has begun: its deadline
        // holds (waiting an idle timeout per line, a few bytes held a connection for long).
        let n = if c.buf.is_empty() && deadline.is_none() {
            match read_idle(worker, c, room, s, first).await {
                Some(n) => n,
                None => return Ok(None),
            }
        } else {
            let now = Instant::now();
            let until = *deadline.get_or_insert(now + s.client_header_timeout);
            let left = until.saturating_duration_since(now);
            if left.is_zero() {
                return Err(ProxyError::downstream(ErrorKind::HeaderTimeout));
            }
            match read_some(&mut c.rd, &mut c.buf, room, left).await {
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
            *deadline = Some(timer::deadline_after(s.client_header_timeout));
        }
    }
}

/// Wait for the first bytes of the next request: bounded by the idle timeout, and woken
/// by a drain (which shuts the socket's reading side: the read ends with EOF). `None`:
/// the connection should end quietly.
///
/// A new connection (`first`) is not a kept-alive one: the header timeout bounds its wait
/// too, as nginx's `client_header_timeout` does, else a client that opens connections
/// and sends nothing held each one for the idle timeout (6× as long as one that sends
/// part of a head, by default). It is closed quietly, as between requests: no byte came
/// that a 408 could answer (a client's speculative preconnect, say).
async fn read_idle(
    worker: &Worker,
    c: &mut Client,
    room: usize,
    s: &Settings,
    first: bool,
) -> Option<usize> {
    if worker.is_draining() {
        return None;
    }
    let wait = if first {
        s.client_idle_timeout.min(s.client_header_timeout)
    } else {
        s.client_idle_timeout
    };
    let _idle = worker.idle_reads.enter(c.fd);
    let len = c.buf.len();
    let owned = std::mem::take(&mut c.buf);
    let read = c.rd.read(owned.slice_mut(len..len + room));
    match timer::timeout(wait, read).await {
        Ok((Ok(n), slice)) => {
            c.buf = slice.into_inner();
            Some(n)
        }
        Ok((Err(_), slice)) => {
            c.buf = slice.into_inner();
            None
        }
        Err(_) => {
            bump(&worker.metrics.idle_timeouts, 1);
            None
        }
    }
}
