//! Relaying the upstream's response to the client, and what happens to both connections
//! afterwards.
//!
//! An upstream connection goes back to the pool only after a cleanly framed exchange in
//! which the whole request was sent, with no stray bytes; bytes an upstream sent past the
//! end of its response are never delivered to any client. After an early response (the
//! upstream answered before it had the whole request) the upstream connection is closed,
//! and the client connection is kept only if the rest of its body can be read and
//! discarded within bounds.

use crate::config::{CircuitSettings, Settings};
use crate::error::ErrorKind;
use crate::forward::io::{write_all, write_range, IoFail};
use crate::forward::relay::{
    discard_body, relay_body, relay_until_close, BodyLeft, BodyProgress, RelayFail,
};
use crate::health::state::{answer_is_success, release_probe, report, Admission};
use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{response_is_verbatim, write_response_head, ConnectionField};
use crate::http::response::ResponseFraming;
use crate::metrics::Outcome;
use crate::route::router::WorkerTable;
use crate::runtime::client::Client;
use crate::runtime::worker::Worker;
use crate::upstream::backend::Backend;
use crate::upstream::pool::UpstreamConn;

use super::attempt::Sent;
use super::request::{Body, Request};
use super::{Failure, Next};

/// The most of a client body discarded after an early response to keep the connection.
pub const DISCARD_BODY_MAX_BYTES: u64 = 1024 * 1024;

/// Where the exchange ended up when the response head arrived.
pub struct Answered {
    /// Backend index (in the request's table).
    pub backend: u16,
    /// Table version the backend index belongs to.
    pub version: u64,
    /// How the request was let through to the backend: the breaker hears how the
    /// exchange went once the whole response is in (or the relay broke off).
    pub admission: Admission,
    /// The upstream connection, its buffer holding the response head.
    pub up: Box<UpstreamConn>,
    /// How much of the request went out.
    pub sent: Sent,
}

/// Whether the client connection can outlive this exchange, as far as the request side
/// goes: its bytes are all accounted for, or can be read and discarded within bounds.
fn request_side_keeps(req: &Request, sent: Sent, progress: &BodyProgress) -> bool {
    match (sent, req.body) {
        (Sent::Whole, _) | (_, Body::None | Body::Buffered { .. }) => true,
        (Sent::Early { exact: false }, Body::Streamed { .. }) => false,
        (Sent::Early { exact: true }, Body::Streamed { .. }) => match progress.left {
            BodyLeft::Length(n) => n <= DISCARD_BODY_MAX_BYTES,
            BodyLeft::Chunked(_) => true,
        },
    }
}

/// The breaker's verdict on the server, given once: when the whole response is in (its
/// status decides), or when the relay broke off — before the upstream connection goes back
/// to the pool, and for a response already all in, before it is written (so that whoever
/// has read it sees the verdict given).
struct Verdict<'a> {
    b: &'a Backend,
    circuit: Option<&'a CircuitSettings>,
    admission: Admission,
    /// The head's status counts as a success.
    answered: bool,
}

impl Verdict<'_> {
    /// The whole response is in.
    fn whole(self) {
        report(self.b, self.circuit, self.admission, self.answered);
    }

    /// The relay broke off: the server failed, unless the client went away first (a 5xx
    /// head then decides, a good one is no verdict: a half-open probe is given back).
    fn broke_off(self, kind: ErrorKind) {
        if matches!(kind, ErrorKind::ClientGone) && self.answered {
            release_probe(self.b, self.circuit, self.admission);
        } else {
            report(self.b, self.circuit, self.admission, false);
        }
    }
}

/// Relay the response whose head is in `a.up.buf`, then settle both connections.
pub async fn relay(
    worker: &Worker,
    wt: &WorkerTable,
    c: &mut Client,
    req: &Request,
    progress: &mut BodyProgress,
    a: Answered,
    outcome: &mut Outcome,
) -> Result<Next, Failure> {
    let Answered {
        backend,
        version,
        admission,
        mut up,
        sent,
    } = a;
    let s = &wt.table.settings;
    let b = &*wt.table.backends[backend as usize];
    let circuit = s.circuit.as_ref();
    let answered = answer_is_success(c.response.status, circuit);
    if c.response.status == 101 {
        report(b, circuit, admission, answered);
        outcome.status = Some(101);
        return switch_protocols(c, req, up, s, outcome).await;
    }
    let framing = c.response.framing();
    if framing == ResponseFraming::Chunked && c.head.minor_version == 0 {
        // RFC 9112 §6.1: no Transfer-Encoding to an HTTP/1.0 client, which would read the
        // chunk framing as the body. Chunked bodies are relayed as received, never
        // rewritten: refused, as other responses that cannot be relayed faithfully.
        report(b, circuit, admission, answered);
        end_upstream(up, sent);
        return Err(super::upstream_failure(
            ErrorKind::BadResponse("chunked response to an HTTP/1.0 request"),
            None,
        ));
    }
    let client_keeps = c.head.is_keep_alive
        && framing != ResponseFraming::UntilClose
        && !worker.is_draining()
        && request_side_keeps(req, sent, progress);
    let connection = if !client_keeps {
        ConnectionField::Close
    } else if c.head.minor_version == 0 {
        ConnectionField::KeepAlive
    } else {
        ConnectionField::Omit
    };
    let mut verdict = Some(Verdict {
        b,
        circuit,
        admission,
        answered,
    });
    let relayed = relay_response(worker, s, c, &mut up, connection, &mut verdict).await;
    // Done with the upstream's answer: a connection that carried part of the request
    // ends here.
    let up = match sent {
        Sent::Whole => Some(up),
        Sent::Early { .. } => {
            end_upstream(up, sent);
            None
        }
    };
    if let Some(v) = verdict {
        match relayed {
            Relayed::Whole { .. } => v.whole(),
            Relayed::Gone => v.broke_off(ErrorKind::ClientGone),
            Relayed::Refused(kind) | Relayed::Cut(kind) => v.broke_off(kind),
        }
    }
    let reusable = match relayed {
        Relayed::Whole { reusable } => reusable,
        Relayed::Refused(kind) => return Err(super::upstream_failure(kind, None)),
        Relayed::Gone => {
            // Counted as the client's going, not under the status it never got; the
            // connection ends as a cut one (part of the head may have gone out).
            outcome.error = Some(ErrorKind::ClientGone);
            return Ok(Next::Cut {
                reset: !matches!(framing, ResponseFraming::Length(_)),
            });
        }
        Relayed::Cut(kind) => {
            // The client has the head and part of the body: close both sides.
            outcome.status = Some(c.response.status);
            outcome.error = Some(kind);
            // A cut length is plain to every reader; a cut chunked body is not to all
            // (see `Next::Cut`), nor one that ends at the close.
            return Ok(Next::Cut {
                reset: !matches!(framing, ResponseFraming::Length(_)),
            });
        }
    };
    outcome.status = Some(c.response.status);
    match up {
        Some(up) if reusable && req.keeps_upstream => {
            // The server's keep-alive clock started after it answered: after the request.
            let keep_alive = c.response.keep_alive_timeout;
            let epoch = b.pool_epoch();
            worker.return_upstream(backend, version, epoch, up, keep_alive, c.started);
        }
        _ => drop(up),
    }
    if !client_keeps {
        // Close in stages whatever the request side: bytes may still be on their way (the
        // rest of a body an early answer cut short, a request pipelined behind this one),
        // and a close with any of them unread is a reset that destroys the answer's end.
        return Ok(Next::CloseLingering);
    }
    // The request's bytes leave the client buffer; what follows is the next request.
    match (sent, req.buffered_len()) {
        (_, Some(consumed)) => {
            c.buf.drain(..consumed.min(c.buf.len()));
        }
        (Sent::Whole, None) => {}
        (Sent::Early { .. }, None) => {
            c.buf.drain(..progress.pending.min(c.buf.len()));
            let opts = worker.relay_options(s.client_body_timeout, s.client_body_timeout, s);
            let max = DISCARD_BODY_MAX_BYTES;
            if !discard_body(&mut c.rd, &mut c.buf, progress, max, &opts).await {
                return Ok(Next::CloseLingering);
            }
        }
    }
    Ok(Next::KeepAlive)
}

/// Close an upstream connection that is not pooled. One that took part of the request
/// (it answered before the rest of the body, which was never sent) is reset: after a FIN
/// a lenient server takes the part for the whole body — a chunked one cut after its
/// last-chunk line `0\r\n`, a short `Content-Length` one read to the end of the stream —
/// as it would after a client's cut (see `Next::Cut` and `AttemptError::cut`).
fn end_upstream(up: Box<UpstreamConn>, sent: Sent) {
    match sent {
        Sent::Whole => drop(up),
        Sent::Early { .. } => up.reset(),
    }
}

/// How a response relay ended.
enum Relayed {
    /// All of it reached the client; `reusable`: the upstream connection is cleanly at
    /// the end of it.
    Whole {
        /// Whether the upstream connection may be pooled.
        reusable: bool,
    },
    /// Nothing was sent: the response cannot be framed (answer 502).
    Refused(ErrorKind),
    /// The client went away (reset, or the head's write failed) before the head went out.
    Gone,
    /// The relay broke off after the head went out.
    Cut(ErrorKind),
}

/// Write the response (head as received or rewritten, then the body, framing-aware) to
/// the client.
async fn relay_response(
    worker: &Worker,
    s: &Settings,
    c: &mut Client,
    up: &mut UpstreamConn,
    connection: ConnectionField,
    verdict: &mut Option<Verdict<'_>>,
) -> Relayed {
    let framing = c.response.framing();
    let resp_len = c.response.len;
    let after = up.buf.len() - resp_len;
    let mut decoder = ChunkedDecoder::new();
    let (in_buf, stray) = match framing {
        ResponseFraming::None => (0, after > 0),
        ResponseFraming::Length(n) => (after.min(n as usize), after as u64 > n),
        ResponseFraming::Chunked => match decoder.feed(&up.buf[resp_len..], &mut |_| {}) {
            Ok(k) => (k, after > k),
            Err(e) => return Relayed::Refused(ErrorKind::BadResponse(e.reason())),
        },
        ResponseFraming::UntilClose => (after, false),
    };
    let t = s.client_body_timeout;
    // A response that is all here goes out eagerly: the exchange need not wait for the
    // send (a failure shows at the connection's next write, or before it closes).
    let whole = match framing {
        ResponseFraming::None => true,
        ResponseFraming::Length(n) => in_buf as u64 == n,
        ResponseFraming::Chunked => decoder.is_done(),
        ResponseFraming::UntilClose => false,
    };
    if whole {
        if let Some(v) = verdict.take() {
            v.whole();
        }
    }
    // A client whose reset the ring already reported gets nothing: an eager send would
    // fail only after the request was counted as answered.
    if c.rd.has_failed() {
        return Relayed::Gone;
    }
    let head_sent = if response_is_verbatim(&c.response, connection) {
        let end = resp_len + in_buf;
        if whole && c.wr.send_eager(&up.buf[..end]) {
            Ok(())
        } else {
            write_range(&mut c.wr, &mut up.buf, 0, end, t).await.0
        }
    } else {
        write_response_head(&up.buf, &c.response, connection, &mut c.out);
        c.out
            .extend_from_slice(&up.buf[resp_len..resp_len + in_buf]);
        if whole && c.wr.send_eager(&c.out) {
            Ok(())
        } else {
            write_all(&mut c.wr, &mut c.out, t).await
        }
    };
    if head_sent.is_err() {
        return Relayed::Gone;
    }
    let left = match framing {
        ResponseFraming::None => None,
        ResponseFraming::Length(n) => Some(BodyLeft::Length(n - in_buf as u64)),
        ResponseFraming::Chunked => Some(BodyLeft::Chunked(decoder)),
        ResponseFraming::UntilClose => {
            up.buf.clear();
            let opts = worker.relay_options(s.upstream_response_timeout, t, s);
            return match relay_until_close(&mut up.rd, &mut c.wr, &mut up.buf, &opts).await {
                Ok(()) => Relayed::Whole { reusable: false },
                Err(f) => Relayed::Cut(fail_kind(f)),
            };
        }
    };
    let reusable = c.response.is_keep_alive && !stray;
    let Some(left) = left else {
        return Relayed::Whole { reusable };
    };
    let mut progress = BodyProgress::new(left);
    if progress.is_read() {
        return Relayed::Whole { reusable };
    }
    up.buf.clear();
    let opts = worker.relay_options(s.upstream_response_timeout, t, s);
    match relay_body(&mut up.rd, &mut c.wr, &mut up.buf, &mut progress, &opts).await {
        Ok(()) => Relayed::Whole {
            reusable: c.response.is_keep_alive && up.buf.is_empty(),
        },
        Err(f) => Relayed::Cut(fail_kind(f)),
    }
}

fn fail_kind(f: RelayFail) -> ErrorKind {
    match f {
        RelayFail::Read(IoFail::Timeout) => ErrorKind::UpstreamTimeout,
        RelayFail::Read(_) => ErrorKind::UpstreamReset,
        RelayFail::Framing(e) => ErrorKind::BadResponse(e.reason()),
        RelayFail::Write(_) => ErrorKind::ClientGone,
    }
}

/// Relay a 101 and hand both connections to the tunnel.
async fn switch_protocols(
    c: &mut Client,
    req: &Request,
    mut up: Box<UpstreamConn>,
    s: &Settings,
    outcome: &mut Outcome,
) -> Result<Next, Failure> {
    if !req.is_upgrade {
        return Err(super::upstream_failure(
            ErrorKind::BadResponse("101 without an upgrade request"),
            None,
        ));
    }
    let resp_len = c.response.len;
    write_response_head(&up.buf, &c.response, ConnectionField::Upgrade, &mut c.out);
    c.out.extend_from_slice(&up.buf[resp_len..]);
    if write_all(&mut c.wr, &mut c.out, s.client_body_timeout)
        .await
        .is_err()
    {
        // No switch: the client went away before the 101 reached it.
        outcome.status = None;
        outcome.error = Some(ErrorKind::ClientGone);
        return Ok(Next::Close);
    }
    // Client bytes that followed the upgrade request belong to the new protocol.
    let consumed = req.buffered_len().unwrap_or(0);
    let len = c.buf.len();
    if consumed < len {
        let (res, _) = write_range(
            &mut up.wr,
            &mut c.buf,
            consumed,
            len,
            s.upstream_response_timeout,
        )
        .await;
        if let Err(e) = res {
            // The client has its 101: the tunnel it opened is cut, as a failure in the
            // tunnel would cut it, and a clean close would pass for the upstream's end.
            outcome.error = Some(match e {
                IoFail::Timeout => ErrorKind::UpstreamTimeout,
                _ => ErrorKind::UpstreamReset,
            });
            up.reset();
            return Ok(Next::Cut { reset: true });
        }
    }
    c.buf.clear();
    Ok(Next::Tunnel(up))
}
