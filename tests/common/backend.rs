//! [`ScriptedBackend`]: the one upstream the tests script, and the witness of what the
//! router sent.
//!
//! A thread per connection reads requests with its own framing code (`Content-Length`, or
//! a final `chunked` coding, trailers included) and asks the test's script what to do
//! with each one, given the connection's index (in accept order), the request's index on
//! that connection and its head. The answer is a [`Reply`]: bytes to send and when, 1xx
//! responses first, an early answer before the body, and how the exchange ends — keep the
//! connection, FIN, RST, hang, or echo as a tunnel.
//!
//! Everything is recorded: each connection's raw received bytes and each request (head
//! and body bytes exactly as read, chunked framing included), so a test can assert what
//! the upstream saw byte for byte.
//!
//! # Invariants
//! Pauses, hangs and unread connections wait on the backend's stop signal, bounded by
//! [`HOLD_LIMIT`]; dropping the backend (or [`ScriptedBackend::kill`]) shuts every
//! connection down and joins every thread it started.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{find, wait_until};

/// The longest a connection is held without being served (a hang, an unread connection)
/// if the test forgets to drop its backend.
pub const HOLD_LIMIT: Duration = Duration::from_secs(30);
/// How long a clean close waits for the peer to close its side (reading and discarding)
/// before closing anyway.
const LINGER_LIMIT: Duration = Duration::from_secs(2);
/// Largest request head the backend reads.
const MAX_HEAD_BYTES: usize = 256 * 1024;

/// When the request body is read, relative to the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyRead {
    /// Read the whole body, then answer (a well-behaved server).
    Before,
    /// Answer after the head, then read and discard the body (an early answer that stays
    /// in sync).
    After,
    /// Answer after the head and never read the body as a body: its bytes are parsed as
    /// the next request (a desynchronised server). With [`Ending::Close`], the body is
    /// discarded by the lingering close instead.
    Never,
}

/// How the exchange ends once the answer is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Keep the connection and read the next request.
    Keep,
    /// Close cleanly: FIN, then read and discard until the peer closes (a lingering
    /// close, so unread bytes never turn it into an RST), at most [`LINGER_LIMIT`].
    Close,
    /// Close with `SO_LINGER` 0: the peer gets an RST.
    Reset,
    /// Close at once, as a server's keep-alive timeout does: a FIN, and bytes that arrive
    /// later (or unread ones) get an RST.
    Drop,
    /// Hold the connection without reading or writing until the backend is dropped (at
    /// most [`HOLD_LIMIT`]).
    Hang,
    /// Switch protocols: echo every byte back until the peer closes.
    Echo,
}

/// What the backend does with one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub body_read: BodyRead,
    /// Pause before the first byte of the answer (after the body, if read first).
    pub delay: Duration,
    /// 1xx responses written before `bytes`, each followed by its pause.
    pub interim: Vec<(Vec<u8>, Duration)>,
    /// The answer (may be empty, or deliberately partial or malformed).
    pub bytes: Vec<u8>,
    /// After `bytes`: a pause, then these bytes too (late junk).
    pub late: Option<(Duration, Vec<u8>)>,
    /// Pause between the answer and the ending.
    pub linger: Duration,
    pub ending: Ending,
}

impl Reply {
    /// Answer with `bytes` and keep the connection.
    pub fn bytes(bytes: impl AsRef<[u8]>) -> Reply {
        Reply {
            body_read: BodyRead::Before,
            delay: Duration::ZERO,
            interim: Vec::new(),
            bytes: bytes.as_ref().to_vec(),
            late: None,
            linger: Duration::ZERO,
            ending: Ending::Keep,
        }
    }

    /// `200 OK` with `body` and a `Content-Length`.
    pub fn ok(body: impl AsRef<[u8]>) -> Reply {
        Reply::bytes(ok_response(body))
    }

    /// A response with this status line remainder (e.g. `"500 Internal Server Error"`)
    /// and body.
    pub fn status(status: &str, body: impl AsRef<[u8]>) -> Reply {
        let body = body.as_ref();
        let mut bytes = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        Reply::bytes(bytes)
    }

    /// Close cleanly (FIN) without answering.
    pub fn close() -> Reply {
        Reply::bytes(b"").then(Ending::Close)
    }

    /// Reset (RST) without answering.
    pub fn reset() -> Reply {
        Reply::bytes(b"").then(Ending::Reset)
    }

    /// Never answer.
    pub fn hang() -> Reply {
        Reply::bytes(b"").then(Ending::Hang)
    }

    /// Wait `delay` before answering.
    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Send this 1xx response (e.g. `103 Early Hints`) before the final one, then pause.
    pub fn interim(mut self, bytes: impl AsRef<[u8]>, pause: Duration) -> Reply {
        self.interim.push((bytes.as_ref().to_vec(), pause));
        self
    }

    /// Answer after the head; see [`BodyRead`].
    pub fn early(mut self, body_read: BodyRead) -> Reply {
        self.body_read = body_read;
        self
    }

    /// After the answer, pause and send `bytes` as well.
    pub fn late(mut self, pause: Duration, bytes: impl AsRef<[u8]>) -> Reply {
        self.late = Some((pause, bytes.as_ref().to_vec()));
        self
    }

    /// End this way after the answer.
    pub fn then(mut self, ending: Ending) -> Reply {
        self.ending = ending;
        self
    }

    /// End this way, `pause` after the answer.
    pub fn then_after(mut self, pause: Duration, ending: Ending) -> Reply {
        self.linger = pause;
        self.ending = ending;
        self
    }
}

/// A minimal `200 OK` response with a body.
pub fn ok_response(body: impl AsRef<[u8]>) -> Vec<u8> {
    let body = body.as_ref();
    let mut v = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    v.extend_from_slice(body);
    v
}

/// One request as the backend read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Index of its connection, in accept order (from 0).
    pub conn: usize,
    /// Index on its connection (from 0).
    pub index: usize,
    /// The head exactly as received, up to and including the empty line.
    pub head: Vec<u8>,
    /// The body exactly as received (chunked framing included). Empty when the script
    /// runs: the body is read according to the [`Reply`].
    pub body: Vec<u8>,
    /// The whole body was read (false while the script runs, and when it never was).
    pub body_complete: bool,
    /// The whole answer was written (set when the last write returned, so a client may
    /// read the answer a moment before; before any lingering pause and the ending).
    pub answered: bool,
}

impl Request {
    fn request_line(&self) -> &str {
        let end = find(&self.head, b"\r\n").unwrap_or(self.head.len());
        std::str::from_utf8(&self.head[..end]).unwrap_or("")
    }

    pub fn method(&self) -> &str {
        self.request_line().split(' ').next().unwrap_or("")
    }

    /// The request target as sent (path and query).
    pub fn target(&self) -> &str {
        self.request_line().split(' ').nth(1).unwrap_or("")
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        let t = self.target();
        t.split('?').next().unwrap_or(t)
    }

    /// The first field with this name (trimmed value).
    pub fn header(&self, name: &str) -> Option<String> {
        head_fields(&self.head)
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// Head and body exactly as received.
    pub fn raw(&self) -> Vec<u8> {
        let mut v = self.head.clone();
        v.extend_from_slice(&self.body);
        v
    }

    /// Head and body as text (lossy), for `contains` checks.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw()).into_owned()
    }
}

/// One accepted connection as the backend saw it.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// Every byte read from it, in order.
    pub received: Vec<u8>,
    pub requests: Vec<Request>,
    /// The backend closed it (sent FIN or RST), whether or not it lingers on reading.
    pub closed: bool,
    /// The backend is done with it (closed, reset, or the peer closed).
    pub ended: bool,
}

type Script = dyn Fn(&Request) -> Reply + Send + Sync;
type ConnFilter = dyn Fn(usize) -> bool + Send + Sync;

#[derive(Default)]
struct Log {
    connections: Vec<Connection>,
    /// (connection, request index) in the order requests arrived.
    order: Vec<(usize, usize)>,
}

struct Shared {
    script: Box<Script>,
    never_read: Option<Box<ConnFilter>>,
    log: Mutex<Log>,
    stopped: Mutex<bool>,
    stop_signal: Condvar,
    /// Clones of the live sockets, to shut them down on stop (removed before a
    /// connection closes, so its close really is the last one).
    live: Mutex<HashMap<usize, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait `d` (or until stopped); false when stopped.
    fn pause(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            stopped = self
                .stop_signal
                .wait_timeout(stopped, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        false
    }
}

/// Options for [`ScriptedBackend`]; start with [`ScriptedBackend::builder`].
#[derive(Default)]
pub struct Builder {
    addr: Option<SocketAddr>,
    recv_buffer: Option<usize>,
    never_read: Option<Box<ConnFilter>>,
}

impl Builder {
    /// Listen on this address (to restart a killed backend in place).
    pub fn addr(mut self, addr: SocketAddr) -> Builder {
        self.addr = Some(addr);
        self
    }

    /// A small `SO_RCVBUF` on the listening socket (accepted sockets inherit it).
    pub fn recv_buffer(mut self, bytes: usize) -> Builder {
        self.recv_buffer = Some(bytes);
        self
    }

    /// Never read from the connections `which` selects (by index): their socket buffers
    /// fill up. They are held until the backend is dropped.
    pub fn never_read(mut self, which: impl Fn(usize) -> bool + Send + Sync + 'static) -> Builder {
        self.never_read = Some(Box::new(which));
        self
    }

    pub fn start(
        self,
        script: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> ScriptedBackend {
        let addr = self.addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        socket.set_reuse_address(true).unwrap();
        if let Some(n) = self.recv_buffer {
            socket.set_recv_buffer_size(n).unwrap();
        }
        socket
            .bind(&addr.into())
            .unwrap_or_else(|e| panic!("scripted backend cannot bind {addr}: {e}"));
        socket.listen(128).unwrap();
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            script: Box::new(script),
            never_read: self.never_read,
            log: Mutex::new(Log::default()),
            stopped: Mutex::new(false),
            stop_signal: Condvar::new(),
            live: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("scripted-{}", addr.port()))
            .spawn(move || accept_loop(listener, s))
            .unwrap();
        ScriptedBackend {
            addr,
            shared,
            acceptor: Mutex::new(Some(acceptor)),
        }
    }
}

/// A scripted, recording upstream on a loopback port.
pub struct ScriptedBackend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl ScriptedBackend {
    /// Start with default options; `script` decides what to do with each request.
    pub fn start(script: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> ScriptedBackend {
        Builder::default().start(script)
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Connections accepted so far (health probes included).
    pub fn accepted(&self) -> usize {
        self.shared.log().connections.len()
    }

    /// Every connection so far, in accept order.
    pub fn connections(&self) -> Vec<Connection> {
        self.shared.log().connections.clone()
    }

    /// One connection by index.
    pub fn connection(&self, conn: usize) -> Connection {
        self.shared.log().connections[conn].clone()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        let log = self.shared.log();
        log.order
            .iter()
            .map(|&(c, i)| log.connections[c].requests[i].clone())
            .collect()
    }

    /// Requests received so far (counted when their head arrived).
    pub fn request_count(&self) -> usize {
        self.shared.log().order.len()
    }

    /// Requests whose answer has been written.
    pub fn answered_count(&self) -> usize {
        let log = self.shared.log();
        log.connections
            .iter()
            .flat_map(|c| &c.requests)
            .filter(|r| r.answered)
            .count()
    }

    /// Connections the backend closed (FIN or RST).
    pub fn closed_count(&self) -> usize {
        self.shared
            .log()
            .connections
            .iter()
            .filter(|c| c.closed)
            .count()
    }

    /// Connections the backend is done with.
    pub fn ended_count(&self) -> usize {
        self.shared
            .log()
            .connections
            .iter()
            .filter(|c| c.ended)
            .count()
    }

    /// Bytes received on all connections.
    pub fn bytes_received(&self) -> usize {
        self.shared
            .log()
            .connections
            .iter()
            .map(|c| c.received.len())
            .sum()
    }

    /// Bytes written on connection `conn` that its peer has not acknowledged yet
    /// (`SIOCOUTQ`); `None` once the connection is closed.
    pub fn unacknowledged(&self, conn: usize) -> Option<usize> {
        use std::os::fd::AsRawFd;
        let live = self.shared.live.lock().unwrap();
        let stream = live.get(&conn)?;
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int into `queued`, which outlives the
        // call; the fd belongs to `stream`, kept open by the lock held here.
        let r = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        assert_eq!(r, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
        Some(queued as usize)
    }

    /// Wait (up to 5 s) until the peer has acknowledged every byte written on connection
    /// `conn`: they sit in the router's socket, where it can see them (a write returns
    /// before loopback delivery, which a busy machine can defer).
    pub fn wait_delivered(&self, conn: usize) {
        wait_until(
            &format!("the router acknowledged every byte on backend connection {conn}"),
            Duration::from_secs(5),
            || self.unacknowledged(conn).is_none_or(|n| n == 0),
        );
    }

    /// Wait (up to 5 s) until `n` requests have arrived.
    pub fn wait_for_requests(&self, n: usize) {
        wait_until(
            &format!("the backend on {} received {n} requests", self.addr),
            Duration::from_secs(5),
            || self.request_count() >= n,
        );
    }

    /// Stop: close the listener (new connections are refused) and shut every live
    /// connection down; returns when every thread has ended. The address can then be
    /// bound again with [`Builder::addr`].
    pub fn kill(&self) {
        {
            let mut stopped = self
                .shared
                .stopped
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *stopped = true;
            self.shared.stop_signal.notify_all();
        }
        if let Some(t) = self.acceptor.lock().unwrap().take() {
            // Wake the acceptor, which then drops the listener. (Only while it runs: after
            // a kill, a restarted backend may own the address.)
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = t.join();
        }
        for (_, s) in self.shared.live.lock().unwrap().drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = self.shared.threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.is_stopped() {
            return;
        }
        let Ok(stream) = stream else { continue };
        let conn = {
            let mut log = shared.log();
            log.connections.push(Connection::default());
            log.connections.len() - 1
        };
        if let Ok(clone) = stream.try_clone() {
            shared.live.lock().unwrap().insert(conn, clone);
        }
        let s = shared.clone();
        let t = std::thread::Builder::new()
            .name(format!("scripted-conn-{conn}"))
            .spawn(move || {
                serve_connection(&s, stream, conn);
                s.log().connections[conn].ended = true;
            })
            .unwrap();
        shared.threads.lock().unwrap().push(t);
    }
}

/// Why a connection's loop stops.
enum Stop {
    /// The peer closed, or the socket failed.
    Gone,
}

struct ConnIo<'a> {
    shared: &'a Shared,
    stream: TcpStream,
    conn: usize,
    buf: Vec<u8>,
}

impl ConnIo<'_> {
    /// Read more bytes into the buffer, recording them.
    fn read_more(&mut self) -> Result<(), Stop> {
        let mut tmp = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return Err(Stop::Gone),
                Ok(n) => {
                    self.shared.log().connections[self.conn]
                        .received
                        .extend_from_slice(&tmp[..n]);
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Err(Stop::Gone),
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.stream.write_all(bytes).map_err(|_| Stop::Gone)
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut Request)) {
        f(&mut self.shared.log().connections[self.conn].requests[index]);
    }

    /// Read the body the head announces and record it.
    fn read_body(&mut self, index: usize, framing: Framing) -> Result<(), Stop> {
        let len = loop {
            let need = match framing {
                Framing::Length(n) => (self.buf.len() >= n).then_some(n),
                Framing::Chunked => chunked_len(&self.buf),
            };
            if let Some(n) = need {
                break n;
            }
            self.read_more()?;
        };
        let body: Vec<u8> = self.buf.drain(..len).collect();
        self.update(index, |r| {
            r.body = body;
            r.body_complete = true;
        });
        Ok(())
    }

    /// Remove this socket from the shutdown list, so closing it here is the last close.
    fn forget(&self) {
        self.shared.live.lock().unwrap().remove(&self.conn);
    }

    /// FIN, then read and discard until the peer closes, at most [`LINGER_LIMIT`].
    fn close_cleanly(mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        self.shared.log().connections[self.conn].closed = true;
        let _ = self
            .stream
            .set_read_timeout(Some(Duration::from_millis(50)));
        let deadline = Instant::now() + LINGER_LIMIT;
        let mut tmp = [0u8; 64 * 1024];
        while Instant::now() < deadline && !self.shared.is_stopped() {
            match self.stream.read(&mut tmp) {
                Ok(0) => break,
                Ok(n) => self.shared.log().connections[self.conn]
                    .received
                    .extend_from_slice(&tmp[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        self.forget();
    }

    fn reset(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        self.drop_now();
    }

    fn drop_now(self) {
        self.forget();
        drop(self.stream);
        self.shared.log().connections[self.conn].closed = true;
    }

    fn echo(mut self) {
        let pending = std::mem::take(&mut self.buf);
        if self.write(&pending).is_err() {
            return self.forget();
        }
        while self.read_more().is_ok() {
            let got = std::mem::take(&mut self.buf);
            if self.write(&got).is_err() {
                break;
            }
        }
        self.forget();
    }

    fn hold(self) {
        self.shared.pause(HOLD_LIMIT);
        self.forget();
    }
}

fn serve_connection(shared: &Shared, stream: TcpStream, conn: usize) {
    let mut io = ConnIo {
        shared,
        stream,
        conn,
        buf: Vec::new(),
    };
    if shared.never_read.as_ref().is_some_and(|f| f(conn)) {
        return io.hold();
    }
    for index in 0.. {
        let head_len = loop {
            if let Some(i) = find(&io.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if io.buf.len() > MAX_HEAD_BYTES || io.read_more().is_err() {
                return io.forget();
            }
        };
        let head: Vec<u8> = io.buf.drain(..head_len).collect();
        let framing = body_framing(&head);
        let request = Request {
            conn,
            index,
            head,
            body: Vec::new(),
            body_complete: false,
            answered: false,
        };
        {
            let mut log = shared.log();
            log.connections[conn].requests.push(request.clone());
            log.order.push((conn, index));
        }
        let Ok(framing) = framing else {
            let _ = io.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return io.close_cleanly();
        };
        let reply = (shared.script)(&request);
        if reply.body_read == BodyRead::Before && io.read_body(index, framing).is_err() {
            return io.forget();
        }
        if !shared.pause(reply.delay) {
            return io.forget();
        }
        let mut written = Ok(());
        for (bytes, pause) in &reply.interim {
            written = written.and_then(|_| io.write(bytes));
            if written.is_ok() && !shared.pause(*pause) {
                return io.forget();
            }
        }
        written = written.and_then(|_| io.write(&reply.bytes));
        if let Some((pause, bytes)) = &reply.late {
            if written.is_ok() && !shared.pause(*pause) {
                return io.forget();
            }
            written = written.and_then(|_| io.write(bytes));
        }
        if written.is_err() {
            return io.forget();
        }
        io.update(index, |r| r.answered = true);
        if reply.body_read == BodyRead::After && io.read_body(index, framing).is_err() {
            return io.forget();
        }
        if !shared.pause(reply.linger) {
            return io.forget();
        }
        match reply.ending {
            Ending::Keep => {}
            Ending::Close => return io.close_cleanly(),
            Ending::Reset => return io.reset(),
            Ending::Drop => return io.drop_now(),
            Ending::Hang => return io.hold(),
            Ending::Echo => return io.echo(),
        }
    }
}

/// How a request's body is framed.
#[derive(Clone, Copy, Debug)]
enum Framing {
    Length(usize),
    Chunked,
}

/// The fields of a head (lossy, trimmed values); lines without a colon are skipped.
fn head_fields(head: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// The body framing of a request head: a final `chunked` coding wins, else the (last)
/// `Content-Length`, else none. A field line without a colon or an unparsable length is
/// an error (answered 400).
fn body_framing(head: &[u8]) -> Result<Framing, ()> {
    let text = String::from_utf8_lossy(head);
    let mut length = 0;
    let mut chunked = false;
    for line in text.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(())?;
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().map_err(|_| ())?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    Ok(if chunked {
        Framing::Chunked
    } else {
        Framing::Length(length)
    })
}

/// Length of a complete chunked body at the start of `b` (sizes read up to the first
/// non-hex byte, extensions and trailers skipped), or `None` when more is needed.
fn chunked_len(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        let line = find(&b[i..], b"\r\n")?;
        let digits: String = b[i..i + line]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .map(|&c| c as char)
            .collect();
        let size = usize::from_str_radix(&digits, 16).ok()?;
        i += line + 2;
        if size == 0 {
            loop {
                let e = find(&b[i..], b"\r\n")?;
                i += e + 2;
                if e == 0 {
                    return Some(i);
                }
            }
        }
        if b.len() < i + size + 2 {
            return None;
        }
        i += size + 2;
    }
}

/// An upstream that never answers a connect: a listener whose accept queue is full (a
/// backlog of 0 and one connection queued), so a connect to it hangs (SYNs are dropped).
/// Keep the listener and the filler alive as long as the address is used.
pub fn blackhole() -> (
    std::net::TcpListener,
    std::net::TcpStream,
    std::net::SocketAddr,
) {
    use std::os::fd::AsRawFd;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: re-listen the bound socket with a backlog of 0.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
    let addr = l.local_addr().unwrap();
    let filler = std::net::TcpStream::connect(addr).unwrap();
    (l, filler, addr)
}
