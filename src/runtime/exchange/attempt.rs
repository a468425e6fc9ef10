//! One attempt: send the request on one upstream connection while reading its answer.
//!
//! Two actors run side by side on the same task:
//! - the **sender** writes the forwarded head (with an inline body), then the buffered
//!   body, then streams the rest of the body from the client;
//! - the **reader** reads the upstream's response head, relaying interim responses
//!   (`1xx` but `100` and `101`) to the client from the connection's own scratch buffer.
//!
//! Full duplex: an upstream that answers before it has read the whole request (401, 413,
//! 417 with `Connection: close`) is heard at once. The sender is then stopped through the
//! connection's [`Stopper`](crate::forward::io::Stopper); its operations hand their buffers
//! back, so the caller knows exactly where the client body stands and can discard the rest
//! of it to keep the connection.
//!
//! A Query whose client resets while the answer is awaited ends the attempt at once (its
//! upstream connection closes with it); a Command waits for its answer. Only a multishot
//! client is watched: the ring reports its reset without a syscall.
//!
//! The request is never modified by an attempt: the head to forward lives in
//! `Client::fwd`, the body in `Client::buf`, and a timed-out write hands its buffer back,
//! so a retry sends the original bytes.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;

use super::request::{Body, Request};
use crate::config::Settings;
use crate::error::{ErrorKind, ProxyError};
use crate::forward::io::{send_range, settle_eager, write_all, IoFail, Stopper};
use crate::forward::relay::{relay_body, BodyProgress, RelayFail, RelayOptions};
use crate::forward::stream::{Reader, Writer};
use crate::forward::timer::{self, Timer};
use crate::http::chunked::ChunkError;
use crate::http::head::{write_response_head, ConnectionField};
use crate::http::response::{parse_response, ResponseHead};
use crate::http::scan::HeadScanner;
use crate::route::router::Class;
use crate::runtime::client::Client;
use crate::runtime::worker::Worker;
use crate::upstream::pool::UpstreamConn;

/// Largest upstream response head accepted.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// How the request went out when the response head arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// All of it.
    Whole,
    /// The upstream answered before the whole request was sent. `exact`: the client body
    /// position is known (the body progress is accurate); false when the sender was cut
    /// off in a splice.
    Early {
        /// Whether the body progress can be trusted.
        exact: bool,
    },
}

/// A failed attempt: the error and what the upstream may have seen.
#[derive(Clone, Copy, Debug)]
pub struct AttemptError {
    /// What failed, and on which side.
    pub error: ProxyError,
    /// Whether any byte of the request was accepted by the upstream socket.
    pub reached: bool,
    /// Whether the connection came from the pool.
    pub reused: bool,
    /// The upstream closed the pooled connection (a FIN or, over TLS, close_notify, before
    /// any response byte) without its TCP taking any byte of the request: it cannot have
    /// seen the request (see [`crate::upstream::pool::Untouched`]).
    pub untouched: bool,
    /// Part of the request reached the upstream socket, not all of it: the connection
    /// must end so that the part cannot pass for the whole (a reset).
    pub cut: bool,
}

/// Where the sender failed.
#[derive(Clone, Copy, Debug)]
enum SendFail {
    /// Reading the client's body.
    Client(IoFail),
    /// Writing the upstream.
    Upstream(IoFail),
    /// The client's chunked framing was invalid.
    Framing(ChunkError),
}

impl SendFail {
    /// The error of a failed send (an upstream that merely stopped reading is not one: its
    /// answer may be on the way).
    fn into_error(self) -> ProxyError {
        match self {
            SendFail::Upstream(IoFail::Timeout) => ProxyError::upstream(ErrorKind::UpstreamTimeout),
            SendFail::Upstream(_) => ProxyError::upstream(ErrorKind::UpstreamReset),
            SendFail::Client(IoFail::Timeout) => ProxyError::downstream(ErrorKind::BodyTimeout),
            SendFail::Client(_) => ProxyError::downstream(ErrorKind::ClientGone),
            SendFail::Framing(e) => ProxyError::bad_request(e.reason()),
        }
    }
}

impl From<RelayFail> for SendFail {
    fn from(f: RelayFail) -> Self {
        match f {
            RelayFail::Read(e) => SendFail::Client(e),
            RelayFail::Write(e) => SendFail::Upstream(e),
            RelayFail::Framing(e) => SendFail::Framing(e),
        }
    }
}

/// What woke the attempt up.
enum Event {
    Head(Result<u16, ProxyError>),
    Sent(Result<(), SendFail>),
    /// The whole request was handed over eagerly at this time (it settles later).
    Handed(Instant),
    Timer,
    /// The client reset its connection while the answer was awaited.
    ClientReset,
}

/// `timer` set to `due`, armed if it was not.
fn reset_or_arm(timer: Option<Timer>, due: Instant) -> Option<Timer> {
    match timer {
        Some(mut t) => {
            t.reset(due);
            Some(t)
        }
        None => Some(Timer::at(due)),
    }
}

/// What the sender tells the rest of the attempt as it goes.
#[derive(Clone, Copy)]
struct Marks<'a> {
    /// Some byte of the request may have reached the upstream.
    reached: &'a Cell<bool>,
    /// The head is out (an answer can come from now on).
    head_out: &'a Cell<bool>,
    /// When the whole request was handed over eagerly.
    handed: &'a Cell<Option<Instant>>,
}

/// The sender's view of the client.
struct SenderIo<'a> {
    rd: &'a mut Reader,
    buf: &'a mut Vec<u8>,
    fwd: &'a mut Vec<u8>,
    stop: &'a Stopper,
}

/// The reader's view of the client.
struct ReaderIo<'a> {
    wr: &'a mut Writer,
    out: &'a mut Vec<u8>,
    response: &'a mut ResponseHead,
    /// The client speaks HTTP/1.1 (an HTTP/1.0 client is sent no `1xx`, RFC 9110 15.2) and
    /// `forward.relay_interim_responses` is on.
    takes_interim: bool,
    /// The client speaks HTTP/1.0 (it is never sent `Transfer-Encoding`, RFC 9112 §6.1).
    is_http10: bool,
    /// Set while an interim response is being written to the client.
    relaying: &'a Cell<bool>,
}

/// Send `req` on `up` and read the response head into `c.response` (the head stays in
/// `up.buf`). `progress` is the client body's progress for a streamed body.
pub async fn run(
    worker: &Worker,
    s: &Settings,
    c: &mut Client,
    req: &Request,
    up: &mut UpstreamConn,
    progress: &mut BodyProgress,
    deadline: Option<Instant>,
) -> Result<Sent, AttemptError> {
    let reached = Cell::new(false);
    // The sender finished: the whole request went out.
    let went_whole = Cell::new(false);
    let head_out = Cell::new(false);
    let handed: Cell<Option<Instant>> = Cell::new(None);
    let splicing = Cell::new(false);
    let interim_at: Cell<Option<Instant>> = Cell::new(None);
    c.stop.reset();
    let opts = RelayOptions {
        stop: Some(&c.stop),
        splicing: Some(&splicing),
        ..worker.relay_options(s.client_body_timeout, s.upstream_response_timeout, s)
    };
    let reused = up.is_reused;
    // Before anything of this request is written.
    let probe = up.untouched_probe().filter(|_| reused);
    let closed_first = Cell::new(false);
    // An interim response is going to the client: an attempt that ends now leaves it
    // with part of a message, after which nothing may be written to it.
    let relaying_interim = Cell::new(false);
    let fail = |error: ProxyError| AttemptError {
        error: if relaying_interim.get() {
            ProxyError::downstream(ErrorKind::ClientGone)
        } else {
            error
        },
        reached: reached.get(),
        reused,
        untouched: reached.get()
            && closed_first.get()
            && error.kind == ErrorKind::UpstreamReset
            && probe.is_some_and(|p| p.holds()),
        cut: reached.get() && !went_whole.get(),
    };
    // A Query whose client resets while its answer is awaited ends at once: its in-flight
    // place and its upstream connection are not held for nobody until the response
    // timeout (nginx's default, `proxy_ignore_client_abort off`). A Command waits for its
    // answer: its server may execute it whatever the client does, so the breaker hears how
    // it went, and a moved user's next Commands wait until the server is done with it
    // (ordered migration), not merely its client. Watched only where the ring already
    // reports the reset (a multishot reader): elsewhere it would cost a syscall per
    // request.
    let watch = match req.class {
        Class::Query => c.rd.reset_watch(),
        Class::Command => None,
    };
    let sender_io = SenderIo {
        rd: &mut c.rd,
        buf: &mut c.buf,
        fwd: &mut c.fwd,
        stop: &c.stop,
    };
    let reader_io = ReaderIo {
        wr: &mut c.wr,
        out: &mut c.out,
        response: &mut c.response,
        takes_interim: c.head.minor_version != 0 && s.relay_interim_responses,
        is_http10: c.head.minor_version == 0,
        relaying: &relaying_interim,
    };
    let marks = Marks {
        reached: &reached,
        head_out: &head_out,
        handed: &handed,
    };
    let mut sender = pin!(send_request(
        sender_io, &mut up.wr, req, progress, &opts, marks
    ));
    let mut reader = pin!(read_response_head(
        &mut up.rd,
        &mut up.buf,
        reader_io,
        req.is_head,
        s.client_body_timeout,
        &interim_at,
        &closed_first,
    ));
    let mut clock = Clock {
        deadline,
        timeout: s.upstream_response_timeout,
        sent_at: None,
    };
    // Armed once there is something to wait for: the request's deadline, or the response
    // timeout once the request is out.
    let mut timer = deadline.map(|_| Timer::at(clock.due(None).0));
    let mut sent: Option<Result<(), SendFail>> = None;
    loop {
        // The sender first: a request that went out whole in the same wake-up as the
        // response head arrived is not an early response. The reader starts once the head
        // is out (no answer can come before): its read is then submitted after the send's
        // completion, not with it, and under load often finds the answer already there
        // instead of arming a poll.
        let event = poll_fn(|cx| {
            if sent.is_none() {
                if let Poll::Ready(r) = sender.as_mut().poll(cx) {
                    return Poll::Ready(Event::Sent(r));
                }
            }
            // A request handed over eagerly is as good as sent for the response clock.
            if let (None, Some(at)) = (clock.sent_at, handed.get()) {
                return Poll::Ready(Event::Handed(at));
            }
            if head_out.get() || sent.is_some() {
                if let Poll::Ready(r) = reader.as_mut().poll(cx) {
                    return Poll::Ready(Event::Head(r));
                }
                if watch.is_some_and(|w| w.poll_reset(cx).is_ready()) {
                    return Poll::Ready(Event::ClientReset);
                }
            }
            if timer
                .as_mut()
                .is_some_and(|t| t.poll_elapsed(cx).is_ready())
            {
                return Poll::Ready(Event::Timer);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Sent(r) => {
                match r {
                    Ok(()) => went_whole.set(true),
                    // The upstream stopped reading after taking part of the request: it
                    // may have answered. Keep reading the head, within the response
                    // timeout.
                    Err(SendFail::Upstream(IoFail::Closed | IoFail::Error)) if reached.get() => {}
                    Err(f) => return Err(fail(f.into_error())),
                }
                sent = Some(r);
                // (An eager send's clock started when it was handed over.)
                if clock.sent_at.is_none() {
                    clock.sent_at = Some(timer::deadline_now());
                    let due = clock.due(interim_at.get()).0;
                    timer = reset_or_arm(timer, due);
                }
            }
            Event::Handed(at) => {
                clock.sent_at = Some(at);
                let due = clock.due(interim_at.get()).0;
                timer = reset_or_arm(timer, due);
            }
            Event::Head(result) => {
                let mut whole = matches!(sent, Some(Ok(())));
                if sent.is_none() && !splicing.get() {
                    // The sender is still at work: stop it where it stands (if it finished
                    // meanwhile, the request went out whole). A splice in flight cannot be
                    // stopped cleanly; it is dropped with the attempt.
                    c.stop.fire();
                    whole = sender.as_mut().await.is_ok();
                    went_whole.set(whole);
                }
                let status = result.map_err(fail)?;
                return match (whole, status) {
                    (true, _) => Ok(Sent::Whole),
                    (false, 101) => Err(fail(ProxyError::upstream(ErrorKind::BadResponse(
                        "101 before the request was sent",
                    )))),
                    (false, _) => Ok(Sent::Early {
                        exact: !splicing.get(),
                    }),
                };
            }
            // Nothing is written to the client; the upstream connection, its answer still
            // to come, is closed with the attempt (a downstream failure is never retried).
            Event::ClientReset => {
                return Err(fail(ProxyError::downstream(ErrorKind::ClientGone)));
            }
            // The due time may have moved (an interim response came): look again.
            Event::Timer => {
                let (due, kind) = clock.due(interim_at.get());
                if Instant::now() >= due {
                    return Err(fail(ProxyError::upstream(kind)));
                }
                if let Some(t) = timer.as_mut() {
                    t.reset(due);
                }
            }
        }
    }
}

/// When an attempt gives up waiting for the response head: `timeout` after the request
/// was sent (or after the last interim response), and at the request's deadline.
struct Clock {
    deadline: Option<Instant>,
    timeout: Duration,
    sent_at: Option<Instant>,
}

impl Clock {
    /// The next time to give up, and the error then.
    fn due(&self, interim_at: Option<Instant>) -> (Instant, ErrorKind) {
        let since = match (self.sent_at, interim_at) {
            (Some(sent), Some(interim)) => Some(sent.max(interim)),
            (sent, _) => sent,
        };
        let response = since.and_then(|t| t.checked_add(self.timeout));
        let (at, kind) = match (self.deadline, response) {
            (Some(d), Some(r)) if d <= r => (d, ErrorKind::DeadlineExceeded),
            (_, Some(r)) => (r, ErrorKind::UpstreamTimeout),
            (Some(d), None) => (d, ErrorKind::DeadlineExceeded),
            // Neither yet: wake up in a day to look again.
            (None, None) => (
                timer::deadline_after(Duration::from_secs(86_400)),
                ErrorKind::UpstreamTimeout,
            ),
        };
        (at, kind)
    }
}

/// The sender: head (with an inline body), the buffered body, then the streamed rest.
async fn send_request(
    io: SenderIo<'_>,
    up: &mut Writer,
    req: &Request,
    progress: &mut BodyProgress,
    opts: &RelayOptions<'_>,
    marks: Marks<'_>,
) -> Result<(), SendFail> {
    let SenderIo { rd, buf, fwd, stop } = io;
    let Marks {
        reached, head_out, ..
    } = marks;
    let t = opts.write_timeout;
    let len = fwd.len();
    let whole = matches!(req.body, Body::None | Body::Buffered { inline: true, .. });
    if whole && up.send_eager(fwd) {
        // Handed over: it goes out with the enter that waits for the answer, and settles
        // there. Until then some of it may have reached the upstream.
        reached.set(true);
        head_out.set(true);
        marks.handed.set(Some(timer::deadline_now()));
        let (res, n) = settle_eager(up, t, stop).await;
        reached.set(n > 0);
        return res.map_err(SendFail::Upstream);
    }
    send_part(up, fwd, 0..len, t, stop, reached).await?;
    head_out.set(true);
    let start = req.head_len;
    match req.body {
        Body::None | Body::Buffered { inline: true, .. } => Ok(()),
        Body::Buffered { len, inline: false } => {
            send_part(up, buf, start..start + len, t, stop, reached).await
        }
        Body::Streamed { in_buf, .. } => {
            send_part(up, buf, start..start + in_buf, t, stop, reached).await?;
            buf.clear();
            progress.pending = 0;
            relay_body(rd, up, buf, progress, opts).await?;
            Ok(())
        }
    }
}

/// Write `buf[range]` to the upstream, noting in `reached` whether any byte got there.
async fn send_part(
    up: &mut Writer,
    buf: &mut Vec<u8>,
    range: std::ops::Range<usize>,
    timeout: Duration,
    stop: &Stopper,
    reached: &Cell<bool>,
) -> Result<(), SendFail> {
    let (res, n) = send_range(up, buf, range.start, range.end, timeout, stop).await;
    if n > 0 {
        reached.set(true);
    }
    res.map_err(SendFail::Upstream)
}

/// The reader: the response head into `up_buf` / `io.response`. Interim responses other
/// than 101 are relayed to an HTTP/1.1 client (100 is absorbed: ringgate answers `Expect`
/// itself; an HTTP/1.0 client gets none, nor any client with
/// `forward.relay_interim_responses` off), each one noted in `interim_at` so the response
/// timeout restarts.
/// `closed_first` notes a clean close before any response byte: the end of the stream (a
/// TLS upstream's close_notify), or a TLS upstream's TCP end without close_notify.
async fn read_response_head(
    up_rd: &mut Reader,
    up_buf: &mut Vec<u8>,
    io: ReaderIo<'_>,
    is_head_request: bool,
    client_timeout: Duration,
    interim_at: &Cell<Option<Instant>>,
    closed_first: &Cell<bool>,
) -> Result<u16, ProxyError> {
    let ReaderIo {
        wr,
        out,
        response,
        takes_interim,
        is_http10,
        relaying,
    } = io;
    let mut scanner = HeadScanner::new();
    loop {
        let len = loop {
            if !up_buf.is_empty() {
                match scanner.scan(up_buf, MAX_RESPONSE_HEAD_BYTES) {
                    Ok(Some(len)) => break len,
                    Ok(None) => {}
                    Err(_) => {
                        return Err(ProxyError::upstream(ErrorKind::BadResponse(
                            "malformed response head from upstream",
                        )))
                    }
                }
            }
            if up_buf.capacity() - up_buf.len() < 1024 {
                up_buf.reserve(up_buf.capacity().max(1024));
            }
            let had = up_buf.len();
            let end = up_buf.capacity();
            let owned = std::mem::take(up_buf);
            let (res, slice) = up_rd.read(owned.slice_mut(had..end)).await;
            *up_buf = slice.into_inner();
            match res {
                // Part of a head is no answer: a close there is a reset before answering,
                // as an RST at the same point is (a Query may go to another server).
                Ok(0) => {
                    closed_first.set(up_buf.is_empty() && interim_at.get().is_none());
                    return Err(ProxyError::upstream(ErrorKind::UpstreamReset));
                }
                Ok(_) => {}
                // A TLS upstream's TCP end (FIN) without close_notify: a clean close too,
                // as far as the TCP acknowledgements go (see `Untouched`).
                Err(e) => {
                    let fin = e.kind() == std::io::ErrorKind::UnexpectedEof;
                    closed_first.set(fin && up_buf.is_empty() && interim_at.get().is_none());
                    return Err(ProxyError::upstream(ErrorKind::UpstreamReset));
                }
            }
        };
        parse_response(up_buf, len, is_head_request, is_http10, response)?;
        if !response.is_interim() || response.status == 101 {
            return Ok(response.status);
        }
        if response.status != 100 && takes_interim {
            write_response_head(up_buf, response, ConnectionField::Omit, out);
            relaying.set(true);
            if write_all(wr, out, client_timeout).await.is_err() {
                return Err(ProxyError::downstream(ErrorKind::ClientGone));
            }
            relaying.set(false);
        }
        up_buf.drain(..len);
        scanner.reset();
        interim_at.set(Some(timer::deadline_now()));
    }
}
