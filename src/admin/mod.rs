//! The admin listener (loopback by default): liveness, readiness, config, reload, backend
//! drain/undrain and Prometheus metrics.
//!
//! It runs on its own thread with blocking sockets, one short-lived thread per admin
//! connection (bounded), and never on a worker. Endpoints:
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/health` | 200 while the process runs |
//! | GET | `/ready` | 200 once workers run and every partition has an available server for both classes; 503 with the reasons otherwise |
//! | GET | `/config` | JSON: version, hash, load time, partitions and servers with their state |
//! | POST | `/reload` | re-read the config file; 200 with the new version, or 400 with the reason (the old table keeps running) |
//! | POST | `/backends/{addr}/drain` | stop sending new requests to that server |
//! | POST | `/backends/{addr}/undrain` | resume |
//! | GET | `/metrics` | Prometheus text format |
//!
//! `HEAD` is answered wherever `GET` is; another method on a known path gets `405` with
//! `Allow`. One request per connection: after the answer the connection is closed in
//! stages, on a thread of its own (see [`close_in_stages`]).
//!
//! # Slots
//! At most [`MAX_CONCURRENT`] connections are served at once, [`MAX_CONCURRENT_PER_PEER`]
//! per peer address, each for a bounded time (head, answer); beyond, `503` at once, never
//! on the accept thread. A connection gives its slot back once its answer is written: the
//! staged close after it holds none, so a client that makes one request after another
//! never finds its own closing connections in the way.
//!
//! # Access
//! Off loopback, every endpoint but `GET /health` and `GET /ready` needs
//! `Authorization: Bearer <token>` (the token from `admin.token_file`); a config with a
//! non-loopback admin address and no token is refused, and [`spawn`] refuses to serve one.
//! With a token configured, loopback requires it too. The token is read from the config in
//! force at each request, so a reload rotates it. See [`auth`].

pub mod auth;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::{admin_needs_token, CircuitSettings};
use crate::health::state::would_admit;
use crate::route::router::{Class, RoutingTable};
use crate::runtime::server::{ReloadTrigger, Server};
use crate::upstream::backend::{Backend, Circuit, Health};

/// The server as shared by the admin thread and the signal handler.
pub type SharedServer = Arc<Mutex<Server>>;

/// Admin connections served at once; more are refused with 503.
const MAX_CONCURRENT: usize = 32;
/// Admin connections served at once for one peer address; more from it are refused with
/// 503, so that one client cannot take every slot (each may be held for seconds: see
/// [`HEAD_TIMEOUT`]) and lock the others out, `/health` and `/ready` included.
const MAX_CONCURRENT_PER_PEER: usize = 4;
/// Largest admin request head.
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Longest time a request head may take to arrive, whole.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time an answer may take to be written, whole: the socket's write timeout bounds
/// each write only, and a client that takes a large answer (`/metrics`) a few bytes at a
/// time would otherwise hold its slot for as long as the answer lasts.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a closing connection is read from (and discarded) after its answer, as on the
/// data path.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes read and discarded from a closing connection.
const LINGER_BYTES: usize = 1024 * 1024;
/// Most connections being closed in stages at the same time (see [`close_in_stages`]);
/// beyond, the oldest are closed without waiting further.
const MAX_CLOSING: usize = 256;

fn lock(server: &SharedServer) -> MutexGuard<'_, Server> {
    server.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bind the admin listener and serve it on a background thread. Off loopback, the config
/// in force must have an admin token (`InvalidInput` otherwise).
pub fn spawn(
    addr: SocketAddr,
    server: SharedServer,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    spawn_on(TcpListener::bind(addr)?, server)
}

/// Serve an admin listener bound beforehand (the binary binds it before the data listener
/// starts accepting: a port already taken then stops the start-up before any client
/// connection is taken, rather than resetting the ones taken meanwhile).
pub fn spawn_on(
    listener: TcpListener,
    server: SharedServer,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let bound = listener.local_addr()?;
    let must_authenticate = admin_needs_token(bound);
    {
        let mut s = lock(&server);
        if must_authenticate && s.config().admin_token.is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("admin listener {bound} is not on loopback: set admin.token_file"),
            ));
        }
        s.set_admin_listener(bound);
    }
    let slots = Arc::new(Mutex::new(Slots::default()));
    let (closer, to_close) = std::sync::mpsc::sync_channel(MAX_CLOSING);
    std::thread::Builder::new()
        .name("ringgate-admin-close".into())
        .spawn(move || close_in_stages(to_close))?;
    let handle = std::thread::Builder::new()
        .name("ringgate-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else {
                    // Out of descriptors, say: wait a little rather than spin.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                // (No peer address: the connection is gone already.)
                let Ok(peer) = stream.peer_addr() else {
                    continue;
                };
                let Some(slot) = Slot::take(&slots, peer.ip()) else {
                    refuse(stream, &closer);
                    continue;
                };
                let (server, closer) = (server.clone(), closer.clone());
                // (Should the thread not start, the closure and the slot in it are dropped.)
                let _ = std::thread::Builder::new()
                    .name("ringgate-admin-conn".into())
                    .spawn(move || {
                        if serve(&mut stream, &server, must_authenticate) {
                            drop(slot);
                            hand_to_closer(stream, &closer);
                        }
                    });
            }
        })?;
    Ok((bound, handle))
}

/// Answer `503 admin busy` and hand the connection to [`close_in_stages`]. Never waits on
/// the client: the socket is non-blocking, and a new connection's send buffer takes the
/// short answer whole.
fn refuse(mut stream: TcpStream, closer: &SyncSender<(TcpStream, Instant)>) {
    if stream.set_nonblocking(true).is_err()
        || respond(
            &mut stream,
            503,
            "text/plain",
            "Retry-After: 1\r\n",
            "admin busy\n",
            false,
        )
        .is_err()
    {
        return;
    }
    hand_to_closer(stream, closer);
}

/// FIN after the answer, then [`close_in_stages`] takes the connection.
fn hand_to_closer(stream: TcpStream, closer: &SyncSender<(TcpStream, Instant)>) {
    if stream.set_nonblocking(true).is_err() || stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    // (Full: a flood; this one is closed at once.)
    let _ = closer.try_send((stream, Instant::now() + LINGER_TIME));
}

/// Close answered connections in stages, all on one thread, so that neither the accept
/// thread nor a slot waits on a client: after the FIN, read and discard from each
/// (non-blocking, a round every few milliseconds) until it closes, at most
/// [`LINGER_BYTES`] until its deadline ([`LINGER_TIME`], as on the data path). Closed with
/// received bytes unread (a body, the rest of an oversized head), a connection would be
/// reset, and a client still sending could lose the answer to that reset.
fn close_in_stages(to_close: Receiver<(TcpStream, Instant)>) {
    let mut closing: Vec<(TcpStream, Instant, usize)> = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let next = if closing.is_empty() {
            to_close.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            to_close.recv_timeout(Duration::from_millis(5))
        };
        match next {
            Ok((stream, until)) => closing.push((stream, until, 0)),
            Err(RecvTimeoutError::Disconnected) if closing.is_empty() => return,
            // (No accept thread any more: the rest still get their time.)
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(5)),
            Err(RecvTimeoutError::Timeout) => {}
        }
        closing.extend(
            to_close
                .try_iter()
                .map(|(stream, until)| (stream, until, 0)),
        );
        let now = Instant::now();
        closing.retain_mut(|(stream, until, drained)| loop {
            match stream.read(&mut tmp) {
                Ok(n) if n > 0 && *drained + n < LINGER_BYTES => *drained += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return now < *until,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                _ => return false,
            }
        });
        let surplus = closing.len().saturating_sub(MAX_CLOSING);
        closing.drain(..surplus);
    }
}

/// The admin connections being served, in all and per peer address.
#[derive(Default)]
struct Slots {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// One connection's place in [`Slots`], given back when dropped (a panic included).
struct Slot {
    slots: Arc<Mutex<Slots>>,
    peer: IpAddr,
}

impl Slot {
    /// A slot for a connection from `peer`, unless [`MAX_CONCURRENT`] are taken, or
    /// [`MAX_CONCURRENT_PER_PEER`] by `peer`.
    fn take(slots: &Arc<Mutex<Slots>>, peer: IpAddr) -> Option<Slot> {
        // An IPv4 client of a dual-stack listener is the same peer as over IPv4.
        let peer = peer.to_canonical();
        let mut s = slots.lock().unwrap_or_else(|e| e.into_inner());
        if s.total >= MAX_CONCURRENT {
            return None;
        }
        let mine = s.per_peer.entry(peer).or_insert(0);
        if *mine >= MAX_CONCURRENT_PER_PEER {
            return None;
        }
        *mine += 1;
        s.total += 1;
        Some(Slot {
            slots: slots.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        s.total -= 1;
        if let Some(mine) = s.per_peer.get_mut(&self.peer) {
            *mine -= 1;
            if *mine == 0 {
                s.per_peer.remove(&self.peer);
            }
        }
    }
}

/// Set once the process starts draining (SIGTERM): `/ready` answers 503 from then on.
static DRAINING: AtomicBool = AtomicBool::new(false);

/// Note that the process is draining (see [`DRAINING`]).
pub fn set_draining() {
    DRAINING.store(true, Ordering::Release);
}

/// The parts of an admin request head that matter.
struct AdminRequest {
    method: String,
    /// Without the query.
    path: String,
    /// Every `Authorization` field value.
    authorization: Vec<Vec<u8>>,
}

/// Read one request head (bounded in size, and in time as a whole: a client that sends a
/// byte now and then must not hold one of the [`MAX_CONCURRENT`] slots for longer, or a
/// few of them would lock everyone out, `/health` included).
fn read_request(stream: &mut TcpStream) -> Result<AdminRequest, ()> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut tmp = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let path = req.path.unwrap_or("");
                return Ok(AdminRequest {
                    method: req.method.unwrap_or("").to_string(),
                    path: path.split('?').next().unwrap_or("").to_string(),
                    authorization: req
                        .headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case("authorization"))
                        .map(|h| h.value.to_vec())
                        .collect(),
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_BYTES => {}
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                let _ = respond(
                    stream,
                    431,
                    "text/plain",
                    "",
                    "request head too large\n",
                    false,
                );
                return Err(());
            }
            Err(_) => {
                let _ = respond(stream, 400, "text/plain", "", "bad request\n", false);
                return Err(());
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = respond(
                stream,
                408,
                "text/plain",
                "",
                "request head too slow\n",
                false,
            );
            return Err(());
        }
        let _ = stream.set_read_timeout(Some(left));
        // Never past the bound, so a head that fits is taken and one that does not is not.
        let room = (MAX_REQUEST_BYTES - buf.len()).min(tmp.len());
        match stream.read(&mut tmp[..room]) {
            Ok(n) if n > 0 => buf.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            _ => return Err(()),
        }
    }
}

/// Serve one request; whether the connection is to be closed in stages (its answer, or a
/// refusal of its head, is written).
fn serve(stream: &mut TcpStream, server: &SharedServer, must_authenticate: bool) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if let Ok(req) = read_request(stream) {
        if answer(stream, &req, server, must_authenticate).is_err() {
            // Not taken in time (or gone): reset, so that the rest of the answer does not
            // go on waiting for the client in the kernel's send queue.
            let _ = socket2::SockRef::from(&*stream).set_linger(Some(Duration::ZERO));
            return false;
        }
    }
    true
}

/// Answer `req`; an error: the answer was not written whole (see [`ANSWER_TIMEOUT`]).
fn answer(
    stream: &mut TcpStream,
    req: &AdminRequest,
    server: &SharedServer,
    must_authenticate: bool,
) -> std::io::Result<()> {
    // The same head as GET would get, without the body (refusals included).
    let head_only = req.method == "HEAD";
    if let Err(refusal) = authorize(req, server, must_authenticate) {
        tracing::warn!(
            peer = %stream.peer_addr().map_or("unknown".to_string(), |a| a.to_string()),
            method = %req.method,
            path = %req.path,
            reason = ?refusal,
            "admin request refused: bearer token missing or wrong"
        );
        let challenge = format!("WWW-Authenticate: {}\r\n", refusal.challenge());
        return respond(
            stream,
            401,
            "text/plain",
            &challenge,
            "unauthorized\n",
            head_only,
        );
    }
    let (status, content_type, body) = route(&req.method, &req.path, server);
    let allow = match status {
        405 => format!("Allow: {}\r\n", allowed_methods(&req.path)),
        _ => String::new(),
    };
    respond(stream, status, content_type, &allow, &body, head_only)
}

/// Whether the request may proceed: open endpoints always; others need the token when one
/// is configured, and always off loopback (with no token configured there, nothing passes).
fn authorize(
    req: &AdminRequest,
    server: &SharedServer,
    must_authenticate: bool,
) -> Result<(), auth::Refusal> {
    if auth::is_open_endpoint(&req.method, &req.path) {
        return Ok(());
    }
    let token = lock(server).config().admin_token.clone();
    if token.is_none() && !must_authenticate {
        return Ok(());
    }
    let fields: Vec<&[u8]> = req.authorization.iter().map(|v| v.as_slice()).collect();
    auth::check(&fields, token.as_ref().map(|t| t.as_bytes()))
}

fn route(method: &str, path: &str, server: &SharedServer) -> (u16, &'static str, String) {
    const JSON: &str = "application/json";
    match (method, path) {
        ("GET" | "HEAD", "/health") => (200, "text/plain", "ok\n".into()),
        // A drain holds the server for its whole grace period: answer without it, so that
        // balancers take the instance out at once.
        ("GET" | "HEAD", "/ready") if DRAINING.load(Ordering::Acquire) => {
            (503, "text/plain", "not ready: draining\n".into())
        }
        ("GET" | "HEAD", "/ready") => {
            let s = lock(server);
            let problems = readiness_problems(&s);
            if problems.is_empty() {
                (200, "text/plain", "ready\n".into())
            } else {
                (
                    503,
                    "text/plain",
                    format!("not ready: {}\n", problems.join("; ")),
                )
            }
        }
        ("GET" | "HEAD", "/config") => (200, JSON, pretty(&config_json(&lock(server)))),
        ("POST", "/reload") => {
            let mut s = lock(server);
            match s.reload(ReloadTrigger::Admin) {
                Ok(r) => (
                    200,
                    JSON,
                    pretty(&json!({
                        "reloaded": true,
                        "version": r.version,
                        "config_hash": format!("{:016x}", s.config().source.hash),
                        "needs_restart": r.needs_restart,
                        "workers_pending": r.workers_pending,
                    })),
                ),
                Err(e) => (
                    400,
                    JSON,
                    pretty(&json!({
                        "reloaded": false,
                        "error": e.to_string(),
                        "version": s.table().version,
                    })),
                ),
            }
        }
        ("GET" | "HEAD", "/metrics") => {
            let scrape = lock(server).metrics_scrape();
            (
                200,
                "text/plain; version=0.0.4",
                scrape.render(Duration::from_secs(2)),
            )
        }
        ("POST", p) if p.starts_with("/backends/") => {
            let rest = &p["/backends/".len()..];
            let (addr, action) = match rest.rsplit_once('/') {
                Some((a, "drain")) => (a, true),
                Some((a, "undrain")) => (a, false),
                _ => return (404, "text/plain", "unknown endpoint\n".into()),
            };
            let Ok(addr) = addr.parse::<SocketAddr>() else {
                return (400, "text/plain", format!("\"{addr}\" is not an address\n"));
            };
            let mut s = lock(server);
            match s.table().backends.iter().find(|b| b.addr == addr) {
                Some(b) => {
                    b.set_drained(action);
                    tracing::info!(backend = %addr, drained = action, "backend drain state changed");
                    (
                        200,
                        JSON,
                        pretty(&backend_json(b, s.table().settings.circuit.as_ref())),
                    )
                }
                // Removed by a reload while drained: it stays drained (it would come
                // back so) until undrained here.
                None if s.drained_removed().any(|a| *a == addr) => {
                    if !action {
                        s.undrain_removed(&addr);
                        tracing::info!(backend = %addr, drained = action, "backend drain state changed");
                    }
                    (
                        200,
                        JSON,
                        pretty(
                            &json!({ "address": addr.to_string(), "drained": action, "in_table": false }),
                        ),
                    )
                }
                None => (
                    404,
                    "text/plain",
                    format!("no backend {addr} in the routing table\n"),
                ),
            }
        }
        (_, p) if !allowed_methods(p).is_empty() => {
            (405, "text/plain", "method not allowed\n".into())
        }
        _ => (404, "text/plain", "unknown endpoint\n".into()),
    }
}

/// The methods a known path answers ("" for an unknown path), for `Allow`.
fn allowed_methods(path: &str) -> &'static str {
    match path {
        "/health" | "/ready" | "/config" | "/metrics" => "GET, HEAD",
        "/reload" => "POST",
        p if p.starts_with("/backends/") && (p.ends_with("/drain") || p.ends_with("/undrain")) => {
            "POST"
        }
        _ => "",
    }
}

/// Why the router is not ready (empty: ready).
fn readiness_problems(s: &Server) -> Vec<String> {
    if !s.is_running() {
        return vec!["workers stopped".into()];
    }
    let table = s.table();
    let mut problems = Vec::new();
    for (i, p) in table.partitions.iter().enumerate() {
        // A shadow gets mirrored copies only: nothing it does reaches a client.
        if !table.takes_requests(i as u16) {
            continue;
        }
        for class in [Class::Command, Class::Query] {
            let circuit = table.settings.circuit.as_ref();
            let any = p
                .servers(class)
                .iter()
                .any(|&b| would_admit(&table.backends[b as usize], circuit));
            if !any {
                problems.push(format!(
                    "partition {} has no available {} server",
                    p.name,
                    class.label()
                ));
            }
        }
    }
    problems
}

/// A server's state; `available`: the next request may go there (as `/ready` counts it:
/// an open circuit whose cool-down is over is, since that request probes it).
fn backend_json(b: &Backend, circuit: Option<&CircuitSettings>) -> Value {
    json!({
        "address": b.addr.to_string(),
        "up": b.health() == Health::Up,
        "circuit": match b.circuit() {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        },
        "drained": b.is_drained(),
        "available": would_admit(b, circuit),
    })
}

fn config_json(s: &Server) -> Value {
    let table: &RoutingTable = s.table();
    let config = s.config();
    let servers = |list: &[u16]| -> Vec<Value> {
        list.iter()
            .map(|&b| backend_json(&table.backends[b as usize], table.settings.circuit.as_ref()))
            .collect()
    };
    let partitions: Vec<Value> = table
        .partitions
        .iter()
        .map(|p| {
            json!({
                "name": p.name.as_ref(),
                "policy": format!("{:?}", p.policy),
                "write": servers(&p.write),
                "read": servers(&p.read),
            })
        })
        .collect();
    json!({
        "version": table.version,
        "config_hash": format!("{:016x}", table.config_hash),
        "loaded_at": humantime::format_rfc3339_millis(table.loaded_at).to_string(),
        "path": config.source.path.display().to_string(),
        "listen": s.listen_addr.to_string(),
        "workers": s.drivers().iter().map(|d| d.label()).collect::<Vec<_>>(),
        "partitions": partitions,
        "drained_removed": s.drained_removed().map(|a| a.to_string()).collect::<Vec<_>>(),
        "explicit_users": config.routes.users.len(),
        "default": match &config.routes.default {
            crate::config::DefaultRoute::Partition(i) => Value::from(config.routes.partitions[*i].name.clone()),
            crate::config::DefaultRoute::Reject => Value::Null,
        },
        "reloads": { "ok": s.process_stats().reloads_ok, "failed": s.process_stats().reloads_failed },
        "last_reload_error": s.last_reload_error(),
    })
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// Write a whole response in one write (a head and a body written apart can wait on each
/// other under Nagle), within [`ANSWER_TIMEOUT`]; `extra_headers` is zero or more
/// `Name: value\r\n` lines. With `head_only` (an answer to HEAD), the head says the body's
/// length but the body is left out.
fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    extra_headers: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    let until = Instant::now() + ANSWER_TIMEOUT;
    let mut out = out.as_bytes();
    while !out.is_empty() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(out) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => out = &out[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
