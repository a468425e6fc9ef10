//! Query mirroring: a copy of every Query routed to a partition with `mirror = "SHADOW"`
//! is sent, fire and forget, to a read server of the shadow partition.
//!
//! # Independence from the client
//! The copy is taken when the request has been routed and is sent by a task of its own,
//! started only once the client's exchange has ended (response relayed, or failed; not
//! when the request was refused, nor when its client went away before its answer): the
//! client's response never waits for the mirror, and the mirror's answer — read and
//! discarded, counted by status class — can change nothing the client sees, but through
//! the circuit breaker of a shadow server that serves a partition too (see [`send`]). The
//! mirror uses the shadow servers' own pooled connections (each backend has its own pool).
//!
//! # Bounds
//! At most `mirror.max_in_flight_per_worker` mirrors per worker; beyond, a mirror is
//! dropped and counted. A Query whose body streams from the client (not fully buffered)
//! is not mirrored either (counted as dropped): its bytes are forwarded once, as they come.
//! Copies live in buffers recycled per worker.

use std::rc::Rc;

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;

use super::request::{Body, Request};
use crate::config::Settings;
use crate::forward::io::write_all;
use crate::forward::relay::{discard_body, BodyLeft, BodyProgress};
use crate::forward::timer;
use crate::health::state::{answer_is_success, release_probe, report, Admission};
use crate::http::chunked::ChunkedDecoder;
use crate::http::response::{parse_response, ResponseFraming, ResponseHead};
use crate::http::scan::HeadScanner;
use crate::route::router::{Class, WorkerTable};
use crate::runtime::client::Client;
use crate::runtime::worker::Worker;
use crate::upstream::pool::{connect, UpstreamConn};

/// Largest response head a mirror reads.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A mirror to send once the client's exchange has ended.
pub struct MirrorJob {
    worker: Rc<Worker>,
    table: Rc<WorkerTable>,
    partition: u16,
    bytes: Vec<u8>,
    /// The copy is a HEAD request: its answer has no body, whatever its framing says.
    is_head: bool,
    /// Its upstream connection may be pooled after it ([`Request::keeps_upstream`]).
    keeps_upstream: bool,
}

impl MirrorJob {
    /// A copy of `req` for the mirror of its partition, if it has one and the request is a
    /// Query that can be copied; `None` otherwise (drops are counted).
    pub fn prepare(
        worker: &Rc<Worker>,
        table: &Rc<WorkerTable>,
        c: &Client,
        req: &Request,
    ) -> Option<MirrorJob> {
        // An upgrade is not mirrored: a shadow that switched protocols would leave the
        // mirror waiting for a final answer that never comes, holding its slot.
        if req.class != Class::Query || req.is_upgrade {
            return None;
        }
        let partition = table.table.partitions[req.partition as usize].mirror?;
        let s = &table.table.settings;
        let body = match req.body {
            Body::None | Body::Buffered { inline: true, .. } => None,
            Body::Buffered { len, inline: false } => Some(req.head_len..req.head_len + len),
            Body::Streamed { .. } => {
                worker.metrics.users.mirror_dropped();
                return None;
            }
        };
        if worker.mirrors_in_flight.get() >= s.mirror_max_in_flight {
            worker.metrics.users.mirror_dropped();
            return None;
        }
        worker
            .mirrors_in_flight
            .set(worker.mirrors_in_flight.get() + 1);
        let mut bytes = worker.mirror_buffers.borrow_mut().pop().unwrap_or_default();
        bytes.clear();
        bytes.extend_from_slice(&c.fwd);
        if let Some(r) = body {
            bytes.extend_from_slice(&c.buf[r]);
        }
        Some(MirrorJob {
            worker: worker.clone(),
            table: table.clone(),
            partition,
            bytes,
            is_head: req.is_head,
            keeps_upstream: req.keeps_upstream,
        })
    }

    /// Send it in a task of its own.
    fn launch(self) {
        monoio::spawn(timer::with_pool(async move {
            let MirrorJob {
                worker,
                table,
                partition,
                mut bytes,
                is_head,
                keeps_upstream,
            } = self;
            let status = send(
                &worker,
                &table,
                partition,
                &mut bytes,
                is_head,
                keeps_upstream,
            )
            .await;
            worker.metrics.users.mirrored(status);
            release(&worker, bytes);
        }));
    }
}

/// A mirror is over (sent, or not to be): its buffer back to the spares, its slot free.
fn release(worker: &Worker, mut bytes: Vec<u8>) {
    bytes.clear();
    worker.mirror_buffers.borrow_mut().push(bytes);
    worker
        .mirrors_in_flight
        .set(worker.mirrors_in_flight.get() - 1);
}

/// Send `bytes` to a read server of `partition` and read the answer through (`is_head`: to
/// a HEAD request); its status. The connection is pooled after only if `keeps_upstream`.
///
/// A shadow server may serve a partition too and shares its breaker, so the mirror reports
/// to it as a request would: the answer's status once all of it is in (a body that breaks
/// off or stalls is a failure), a failure before its head on a connection of its own. A pooled connection's failure is not counted: it may
/// have died while idle (a request would go again on a new connection). The half-open
/// probe, when the mirror takes it, always goes on a new connection, so its outcome is
/// always reported: a probe never reported leaves the server half-open, refused to every
/// request, until the probe expires a cool-down later.
async fn send(
    worker: &Worker,
    wt: &WorkerTable,
    partition: u16,
    bytes: &mut Vec<u8>,
    is_head: bool,
    keeps_upstream: bool,
) -> Option<u16> {
    let s = &wt.table.settings;
    let circuit = s.circuit.as_ref();
    let (backend, _, admission) = wt.pick_server(partition, Class::Query, 0)?;
    let b = &*wt.table.backends[backend as usize];
    let version = wt.table.version;
    let pooled = match admission {
        Admission::Normal => worker.take_upstream(backend, version, b.pool_epoch(), s),
        Admission::Probe { .. } => None,
    };
    let is_reused = pooled.is_some();
    let mut up = match pooled {
        Some(up) => up,
        None => {
            let Some(open) = worker.reserve_upstream(backend, &wt.table) else {
                // The shadow is at its bound: not its failure, and no copy goes.
                release_probe(b, circuit, admission);
                return None;
            };
            let tls = wt
                .table
                .backend_tls
                .get(backend as usize)
                .and_then(|t| t.as_deref());
            match connect(b.addr, s.upstream_connect_timeout, tls, open).await {
                Ok(up) => up,
                Err(_) => {
                    report(b, circuit, admission, false);
                    return None;
                }
            }
        }
    };
    // Before the server can have answered: its keep-alive clock starts later.
    let sent_at = timer::coarse_now();
    let mut head = ResponseHead::default();
    let answered = match write_all(&mut up.wr, bytes, s.upstream_response_timeout).await {
        Ok(()) => read_final_head(s, &mut up, &mut head, is_head).await,
        Err(_) => None,
    };
    let Some(status) = answered else {
        if !is_reused {
            report(b, circuit, admission, false);
        }
        return None;
    };
    let whole = read_body(worker, s, &mut up, &mut head).await;
    report(
        b,
        circuit,
        admission,
        whole && answer_is_success(status, circuit),
    );
    if !whole {
        return None;
    }
    if head.is_keep_alive && up.buf.is_empty() && keeps_upstream {
        let epoch = b.pool_epoch();
        worker.return_upstream(
            backend,
            version,
            epoch,
            up,
            head.keep_alive_timeout,
            sent_at,
        );
    }
    Some(status)
}

/// Read a final response head (skipping interim ones) into `head` and drop it from
/// `up.buf`; its status. `None` when no well-formed one came in time. A 101 ends it too:
/// no switch was asked for (upgrades are not mirrored), but after it the shadow speaks
/// something else, and no final answer would come (its connection is not kept).
async fn read_final_head(
    s: &Settings,
    up: &mut UpstreamConn,
    head: &mut ResponseHead,
    is_head: bool,
) -> Option<u16> {
    loop {
        let len = read_head(s, up).await?;
        parse_response(&up.buf, len, is_head, false, head).ok()?;
        up.buf.drain(..len);
        if !head.is_interim() || head.status == 101 {
            return Some(head.status);
        }
    }
}

/// Read the body `head` announces and drop it; whether it came whole and well framed.
/// `up.buf` is empty afterwards when the connection is at the end of the answer (for a
/// body read until the close, `head.is_keep_alive` is cleared).
async fn read_body(
    worker: &Worker,
    s: &Settings,
    up: &mut UpstreamConn,
    head: &mut ResponseHead,
) -> bool {
    let left = match head.framing() {
        ResponseFraming::None => return up.buf.is_empty(),
        ResponseFraming::Length(n) => BodyLeft::Length(n),
        ResponseFraming::Chunked => BodyLeft::Chunked(ChunkedDecoder::new()),
        ResponseFraming::UntilClose => BodyLeft::Length(u64::MAX),
    };
    let mut progress = BodyProgress::new(left);
    let opts = worker.relay_options(s.upstream_response_timeout, s.upstream_response_timeout, s);
    // No client waits on a mirror's body: it must end within the response timeout, or a
    // shadow trickling an endless body would hold the mirror's slot for ever.
    let discard = discard_body(&mut up.rd, &mut up.buf, &mut progress, u64::MAX, &opts);
    let whole = timer::timeout(s.upstream_response_timeout, discard)
        .await
        .unwrap_or(false);
    if head.framing() == ResponseFraming::UntilClose {
        head.is_keep_alive = false;
        return true;
    }
    whole
}

/// Read until `up.buf` holds a whole response head; its length.
async fn read_head(s: &Settings, up: &mut UpstreamConn) -> Option<usize> {
    let mut scanner = HeadScanner::new();
    // The response timeout runs from the request (or the last interim answer) to the
    // whole head, not per read: a shadow that trickles its head would hold the slot.
    let until = std::time::Instant::now() + s.upstream_response_timeout;
    loop {
        if !up.buf.is_empty() {
            if let Some(len) = scanner.scan(&up.buf, MAX_HEAD_BYTES).ok()? {
                return Some(len);
            }
        }
        if up.buf.capacity() - up.buf.len() < 1024 {
            up.buf.reserve(up.buf.capacity().max(1024));
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let had = up.buf.len();
        let end = up.buf.capacity();
        let owned = std::mem::take(&mut up.buf);
        let read = up.rd.read(owned.slice_mut(had..end));
        match timer::timeout(left, read).await {
            Ok((Ok(n), slice)) if n > 0 => up.buf = slice.into_inner(),
            Ok((_, slice)) => {
                up.buf = slice.into_inner();
                return None;
            }
            Err(_) => return None,
        }
    }
}

/// Launches its mirror when dropped: when the client's exchange has ended, however it
/// ended.
pub struct LaunchOnDrop(pub Option<MirrorJob>);

impl LaunchOnDrop {
    /// The request was refused after all (no server of its partition available), or its
    /// client went away before its answer: send no mirror.
    pub fn cancel(&mut self) {
        if let Some(job) = self.0.take() {
            release(&job.worker, job.bytes);
        }
    }
}

impl Drop for LaunchOnDrop {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            job.launch();
        }
    }
}
