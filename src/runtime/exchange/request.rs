//! The request as every attempt sees it: who it is for, where it goes, the head to
//! forward and where its body comes from.

use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::error::{ErrorKind, ProxyError};
use crate::forward::io::{read_some, write_static, IoFail};
use crate::forward::relay::BodyLeft;
use crate::http::chunked::{ChunkedDecoder, TrailerNames};
use crate::http::head::write_request_head;
use crate::http::parse::{restrict_upgrade, BodyFraming, Method};
use crate::metrics::Outcome;
use crate::route::extract::{user_id_from_headers, user_id_from_query};
use crate::route::router::{Class, WorkerTable};
use crate::runtime::client::Client;
use crate::runtime::worker::Worker;

use super::Failure;

/// Complete bodies up to this size ride in the same write as the head.
const INLINE_BODY_BYTES: usize = 16 * 1024;

pub(crate) const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Where the body of a request comes from.
#[derive(Clone, Copy, Debug)]
pub enum Body {
    /// No body.
    None,
    /// The whole body (`len` raw bytes, chunk framing included) is in the client buffer
    /// right after the head: every attempt can send it again.
    Buffered {
        /// Raw length.
        len: usize,
        /// Whether it rides in `Client::fwd` behind the head.
        inline: bool,
    },
    /// `in_buf` raw bytes are in the client buffer after the head; the rest (`left`)
    /// streams from the client while the attempt that first reaches an upstream sends it.
    /// Such a request is sent at most once.
    Streamed {
        /// Raw body bytes already buffered.
        in_buf: usize,
        /// What remains to be read from the client.
        left: BodyLeft,
    },
}

impl Body {
    /// Whether the whole request can be sent again (nothing streams from the client).
    pub fn is_replayable(&self) -> bool {
        !matches!(self, Body::Streamed { .. })
    }

    /// Raw body bytes sitting in the client buffer after the head.
    pub fn in_buf(&self) -> usize {
        match *self {
            Body::None => 0,
            Body::Buffered { len, .. } => len,
            Body::Streamed { in_buf, .. } => in_buf,
        }
    }
}

/// One routed request: an immutable value that every attempt reads.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// Command or Query.
    pub class: Class,
    /// The partition it goes to.
    pub partition: u16,
    /// Length of the client's head in the client buffer.
    pub head_len: usize,
    /// Its body.
    pub body: Body,
    /// A `HEAD` request (the response has no body).
    pub is_head: bool,
    /// The client asked for a protocol switch.
    pub is_upgrade: bool,
    /// A user id was found (it is in `Client::user`).
    pub has_user: bool,
    /// `Expect: 100-continue` still needs an answer before the client sends the body.
    pub wants_continue: bool,
    /// The upstream connection may be pooled after the exchange: not after a request with
    /// a body other than a POST, PUT or PATCH, or a method `forward.trusted_body_methods`
    /// lists (see [`Settings::pools_after_body`]).
    pub keeps_upstream: bool,
}

impl Request {
    /// Client-buffer bytes that belong to this request when its body is not streamed.
    pub fn buffered_len(&self) -> Option<usize> {
        self.body
            .is_replayable()
            .then(|| self.head_len + self.body.in_buf())
    }
}

/// A failure before anything was sent: the request is consumed (and the connection may be
/// kept) only if its whole body is buffered.
fn refuse(error: ProxyError, consumed: Option<usize>) -> Failure {
    Failure {
        error,
        response_started: false,
        consumed,
    }
}

/// Find the user id, classify, pick the partition and write the head to forward.
pub async fn prepare(
    worker: &Worker,
    wt: &WorkerTable,
    c: &mut Client,
    outcome: &mut Outcome,
) -> Result<Request, Failure> {
    let table = &*wt.table;
    let s = &table.settings;
    restrict_upgrade(&c.buf, &mut c.head, &s.upgrade_protocols);
    let head_len = c.head.len;
    let framing = c.head.framing();

    // Who is it for: headers, then query, then (if needed) the JSON body.
    let mut found = user_id_from_headers(&c.buf, &c.head, &table.extract, &mut c.user)?;
    if !found {
        if let Some(q) = c.head.query {
            found = user_id_from_query(q.get(&c.buf), &table.extract, &mut c.user)?;
        }
    }
    let mut wants_continue = c.head.expects_continue;
    let wants_body = !found
        && framing != BodyFraming::None
        && c.head.body_may_be_json
        && !table.extract.json_keys.is_empty();
    if wants_body && c.head.body_is_encoded {
        // A backend decodes it and reads a user the scan of the raw bytes cannot: the two
        // would disagree about whose request it is.
        let e = ErrorKind::BadRequest(
            "a body read for its user id must not be content-encoded or transfer-coded",
        );
        return Err(refuse(ProxyError::downstream(e), None));
    }
    let body = if wants_body {
        let len = buffer_body(c, s, &table.extract.refused_trailers, wants_continue).await?;
        wants_continue = false;
        found = worker.scan_json_body(
            &c.buf[head_len..head_len + len],
            framing == BodyFraming::Chunked,
            &table.extract,
            &mut c.user,
        )?;
        Body::Buffered { len, inline: false }
    } else {
        body_in_buffer(c, framing, &table.extract.refused_trailers)?
    };
    let consumed = body.is_replayable().then(|| head_len + body.in_buf());

    let user = found.then_some(&c.user[..]);
    let class = table.classify(c.head.method(), c.head.path.get(&c.buf));
    outcome.class = Some(class);
    let partition = table.partition_for(user).map_err(|e| refuse(e, consumed))?;
    outcome.partition = Some(partition);

    // The head to forward, with a small complete body riding along.
    let extra: &[u8] = if s.x_forwarded_for {
        &c.forwarded_for
    } else {
        b""
    };
    let proto: &[u8] = if s.x_forwarded_proto {
        c.forwarded_proto
    } else {
        b""
    };
    let trusted = s.is_trusted_proxy(c.peer);
    write_request_head(&c.buf, &c.head, extra, proto, trusted, &mut c.fwd);
    let body = match body {
        Body::Buffered { len, .. } if len <= INLINE_BODY_BYTES => {
            c.fwd.extend_from_slice(&c.buf[head_len..head_len + len]);
            Body::Buffered { len, inline: true }
        }
        other => other,
    };
    Ok(Request {
        class,
        partition,
        head_len,
        body,
        is_head: c.head.method() == Method::Head,
        keeps_upstream: framing == BodyFraming::None || s.pools_after_body(c.head.method()),
        is_upgrade: c.head.is_upgrade,
        wants_continue: wants_continue && matches!(body, Body::Streamed { .. }),
        has_user: found,
    })
}

/// The body as far as it already sits in the buffer behind the head.
/// `refused`: user-id fields the trailer section may not carry.
fn body_in_buffer(
    c: &Client,
    framing: BodyFraming,
    refused: &TrailerNames,
) -> Result<Body, ProxyError> {
    let head_len = c.head.len;
    let available = c.buf.len() - head_len;
    Ok(match framing {
        BodyFraming::None => Body::None,
        BodyFraming::Length(n) => {
            let in_buf = available.min(n as usize);
            if in_buf as u64 == n {
                Body::Buffered {
                    len: in_buf,
                    inline: false,
                }
            } else {
                Body::Streamed {
                    in_buf,
                    left: BodyLeft::Length(n - in_buf as u64),
                }
            }
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::refusing(*refused);
            let in_buf = decoder
                .feed(&c.buf[head_len..], &mut |_| {})
                .map_err(|e| ProxyError::bad_request(e.reason()))?;
            if decoder.is_done() {
                Body::Buffered {
                    len: in_buf,
                    inline: false,
                }
            } else {
                Body::Streamed {
                    in_buf,
                    left: BodyLeft::Chunked(decoder),
                }
            }
        }
    })
}

/// Read a body needed for routing entirely into the buffer (after the head). Returns its
/// raw length. A declared length over `body_scan_bytes` is refused (413) before anything
/// is read — and before `100 Continue` is sent, so a client that waits for it never sends
/// a body that would be refused. `refused`: as in [`body_in_buffer`].
async fn buffer_body(
    c: &mut Client,
    s: &Settings,
    refused: &TrailerNames,
    expects_continue: bool,
) -> Result<usize, Failure> {
    let head_len = c.head.len;
    let limit = s.body_scan_bytes;
    let too_large = |consumed| refuse(ProxyError::downstream(ErrorKind::BodyTooLarge), consumed);
    if let BodyFraming::Length(n) = c.head.framing() {
        if n > limit as u64 {
            return Err(too_large(None));
        }
    }
    let complete =
        matches!(c.head.framing(), BodyFraming::Length(n) if (c.buf.len() - head_len) as u64 >= n);
    // The request's deadline holds while its body arrives, as it does for a streamed one.
    let deadline = s.request_deadline.map(|d| c.started + d);
    if expects_continue && !complete {
        write_static(&mut c.wr, CONTINUE_100, s.client_body_timeout)
            .await
            .map_err(|_| ProxyError::downstream(ErrorKind::ClientGone))?;
    }
    match c.head.framing() {
        BodyFraming::None => Ok(0),
        BodyFraming::Length(n) => {
            let want = head_len + n as usize;
            if c.buf.capacity() < want {
                c.buf.reserve(want - c.buf.len());
            }
            while c.buf.len() < want {
                let room = want - c.buf.len();
                read_body_bytes(c, room, s.client_body_timeout, deadline).await?;
            }
            Ok(n as usize)
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::refusing(*refused);
            let mut scanned = head_len;
            loop {
                let used = decoder
                    .feed(&c.buf[scanned..], &mut |_| {})
                    .map_err(|e| ProxyError::bad_request(e.reason()))?;
                scanned += used;
                if scanned - head_len > limit {
                    return Err(too_large(None));
                }
                if decoder.is_done() {
                    return Ok(scanned - head_len);
                }
                if c.buf.capacity() - c.buf.len() < 1024 {
                    c.buf.reserve(c.buf.capacity().min(limit + 1024));
                }
                let room = c.buf.capacity() - c.buf.len();
                read_body_bytes(c, room, s.client_body_timeout, deadline).await?;
            }
        }
    }
}

/// Read more body bytes: a pause longer than `timeout` is a 408, and a `deadline` (the
/// request's) that passes first a 504.
async fn read_body_bytes(
    c: &mut Client,
    room: usize,
    timeout: Duration,
    deadline: Option<Instant>,
) -> Result<(), ProxyError> {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    if left.is_some_and(|l| l.is_zero()) {
        return Err(ProxyError::upstream(ErrorKind::DeadlineExceeded));
    }
    let cut_by_deadline = left.is_some_and(|l| l < timeout);
    let wait = left.map_or(timeout, |l| l.min(timeout));
    match read_some(&mut c.rd, &mut c.buf, room, wait).await {
        Ok(0) | Err(IoFail::Closed | IoFail::Error | IoFail::Stopped) => {
            Err(ProxyError::downstream(ErrorKind::ClientGone))
        }
        Ok(_) => Ok(()),
        Err(IoFail::Timeout) if cut_by_deadline => {
            Err(ProxyError::upstream(ErrorKind::DeadlineExceeded))
        }
        Err(IoFail::Timeout) => Err(ProxyError::downstream(ErrorKind::BodyTimeout)),
    }
}
