//! Per-worker, per-backend keep-alive pools of upstream connections.
//!
//! Each worker owns its pools (no sharing, no lock). A pool is a LIFO stack: the most
//! recently used connection is reused first (warm), the oldest ones age out.
//!
//! # Invariants
//! - A connection the upstream closed (or wrote to) while idle is never handed out:
//!   anything a multishot reader received while it was idle (bytes, EOF, an error)
//!   discards it. When the ring vouches that nothing more is on its way (the multishot
//!   armed, every SQE submitted, no completion or task work pending:
//!   `Reader::check_out`) that is the whole check, with no syscall; otherwise
//!   [`Pools::take`] peeks the socket with a non-blocking `recv(MSG_PEEK)`, and EOF, an
//!   error or unexpected bytes discard it. A close that is still on its way then is told
//!   after the fact: [`Untouched`] says whether the server took any of the request.
//! - Idle connections older than `pool_idle_timeout` are closed, on take and by a sweep;
//!   so are those older than their server's own `Keep-Alive: timeout=N` less a margin.
//! - A connection pooled before its server's active health last changed, or before its
//!   circuit last opened (another pool epoch), is closed on take, never used: a server
//!   back from down may be another host that resets it.
//! - Where the ring reports it without a syscall (a multishot reader), a connection on
//!   which anything arrives while idle is closed then ([`Pools::retire_heard`]): a
//!   server's close is answered at once instead of holding the socket half-closed until
//!   the connection is taken or times out.
//! - A pool never holds more than `pool_max_idle_per_backend` connections.
//! - Every open connection to a backend (in use, idle, or still connecting) holds an
//!   [`OpenSlot`] of its backend's [`BackendConns`]: whatever closes it (a trim, a timeout,
//!   the idle watch, an error, a reset, a reload) drops the slot with it, so the count is
//!   exact without each close path having to remember it. With
//!   `pool_max_connections_per_backend` set, no slot is given beyond it ([`Pools::reserve`]).
//! - On a config reload, pools are re-keyed to the new table by address; pools of backends
//!   that left the config are closed, and the others are trimmed to the new bound (the
//!   oldest connections closed).

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::config::UpstreamTls;
use crate::error::{ErrorKind, ProxyError};
use crate::forward::stream::{plain, Reader, Writer};
use crate::forward::timer;

/// How long before its server's advertised keep-alive timeout a pooled connection stops
/// being taken: the server's clock starts when it has written its response; ringgate
/// counts from when it had the request (earlier still), and keeps this margin for the
/// close to travel.
pub const SERVER_TIMEOUT_MARGIN: Duration = Duration::from_secs(1);

/// Bytes reserved for an upstream connection's read buffer.
pub const UPSTREAM_BUFFER_BYTES: usize = 16 * 1024;

/// An upstream connection with its own read buffer. The socket is split once, when it
/// opens, so a response can be read while the request is still being written.
///
/// Handed around boxed (one allocation per connection opened, not per request): it goes
/// from the pool to an exchange and back, through results and futures, and by value each
/// of those moves copied its ~200 bytes (~650 of ~15,700 user instructions per request).
pub struct UpstreamConn {
    /// Reading side.
    pub rd: Reader,
    /// Writing side (dropping it sends FIN).
    pub wr: Writer,
    fd: RawFd,
    /// Response bytes read but not yet relayed (empty when pooled).
    pub buf: Vec<u8>,
    /// Whether this connection came from the pool (it may have gone stale in flight).
    pub is_reused: bool,
    /// The socket's count of bytes the server acknowledged, as it opened (the SYN counts
    /// on Linux; before a TLS handshake, whose bytes the writer counts as handed); `None`
    /// where the count is not known (a kernel without it).
    acked_at_open: Option<u64>,
    /// Counted open until dropped with the connection.
    _open: OpenSlot,
}

/// One worker's connections to one backend (carried across reloads by address).
#[derive(Debug, Default)]
pub struct BackendConns {
    /// Open now: in use, idle or still connecting.
    open: Cell<usize>,
    /// Connections not opened because `open` was at the bound.
    limited: Cell<u64>,
}

/// One open connection's place in its backend's count, given back when dropped (with the
/// connection, whichever way it closes).
#[derive(Debug)]
pub struct OpenSlot(Rc<BackendConns>);

impl OpenSlot {
    fn take(conns: &Rc<BackendConns>) -> Self {
        conns.open.set(conns.open.get() + 1);
        Self(conns.clone())
    }

    /// A slot counted nowhere else (tests that open connections outside any pool).
    #[cfg(test)]
    pub fn detached() -> Self {
        Self::take(&Rc::default())
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
    }
}

/// One backend's pool, as the metrics show it.
#[derive(Clone, Debug)]
pub struct PoolCounts {
    /// The backend's address.
    pub addr: SocketAddr,
    /// Idle pooled connections.
    pub idle: usize,
    /// Open connections (in use, idle or connecting).
    pub open: usize,
    /// Connections not opened at `pool.max_connections_per_backend`.
    pub limited: u64,
}

impl UpstreamConn {
    /// Close with a reset (RST, no FIN before it; see [`crate::forward::stream::reset`]).
    pub fn reset(self: Box<Self>) {
        let conn = *self;
        crate::forward::stream::reset(conn.rd, conn.wr);
    }

    /// The socket alone, for a tunnel: the response buffer (16 KiB) is freed rather than
    /// held for the tunnel's life.
    pub fn into_halves(self: Box<Self>) -> crate::forward::tunnel::Halves {
        let conn = *self;
        (conn.rd, conn.wr, conn.fd)
    }

    /// What it takes to tell, after an attempt on this connection failed, whether the
    /// server took any byte of it ([`Untouched::holds`]): captured before the attempt
    /// writes anything. `None` where that cannot be told.
    pub fn untouched_probe(&self) -> Option<Untouched> {
        Some(Untouched {
            fd: self.fd,
            acked_at_open: self.acked_at_open?,
            handed_before: self.wr.handed()?,
        })
    }
}

/// Whether the server's TCP took none of the bytes written since a point in a
/// connection's life, read from the socket's `tcpi_bytes_acked` when needed (one
/// `getsockopt`, only after a failure).
///
/// Used when a pooled connection ends with a clean close (FIN) before any response byte.
/// Every segment a server sends after its TCP took our bytes acknowledges them, its FIN
/// included; so a FIN that acknowledges none of them was sent before they arrived — the
/// server had closed the connection, and its application cannot have read the request
/// (bytes that reach a closed socket are answered with a reset). Such a request can be
/// sent again on a new connection, even a Command: the race of a server closing an idle
/// keep-alive connection just as ringgate reuses it then costs nothing. A reset (RST) does
/// not carry its acknowledgement to the sender's count, so the caller asks only after a
/// clean close. Over TLS the same holds for the server's `close_notify` (its segment
/// acknowledges what the server's TCP had taken, as a FIN does) or a FIN without it; the
/// bytes counted are the ciphertext the writer handed over, the handshake's included.
#[derive(Clone, Copy, Debug)]
pub struct Untouched {
    fd: RawFd,
    acked_at_open: u64,
    /// Bytes handed to the socket before the attempt (every one of them acknowledged by
    /// the time the server closed: each earlier exchange got its whole response).
    handed_before: u64,
}

impl Untouched {
    /// Whether the server acknowledged nothing beyond what was handed before the attempt.
    /// False when the count cannot be read. The socket must still be open.
    pub fn holds(&self) -> bool {
        acked_bytes(self.fd)
            .is_some_and(|acked| acked.saturating_sub(self.acked_at_open) <= self.handed_before)
    }
}

/// The socket's `tcpi_bytes_acked` (Linux 4.1 and later).
pub fn acked_bytes(fd: RawFd) -> Option<u64> {
    // SAFETY: `tcp_info` is plain data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info` and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + 8;
    (rc == 0 && len as usize >= needed).then_some(info.tcpi_bytes_acked)
}

struct Idle {
    conn: Box<UpstreamConn>,
    since: Instant,
    /// Its server's [`Backend::pool_epoch`](crate::upstream::backend::Backend::pool_epoch)
    /// when it was pooled.
    pool_epoch: u32,
    /// How long this one may stay idle, when its server said it closes sooner than
    /// `idle_timeout` (see [`Pools::put`]).
    limit: Option<Duration>,
}

/// What a pool's connections were made for: a server's address, and the TLS settings
/// they were opened and verified under (`None`: plain TCP).
pub type PoolKey = (SocketAddr, Option<Arc<UpstreamTls>>);

/// Whether connections made for `a` may serve `b`: the same address, and the very same
/// TLS settings (a reload keeps the settings it finds unchanged, and builds new ones for
/// the others: their TLS connections start afresh).
fn same_key(a: &PoolKey, b: &PoolKey) -> bool {
    a.0 == b.0
        && match (&a.1, &b.1) {
            (None, None) => true,
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        }
}

/// All pools of one worker, indexed like the backend list of one table version (backend
/// `i` of that table is key `i` given to [`Pools::install`]).
#[derive(Default)]
pub struct Pools {
    version: u64,
    keys: Vec<PoolKey>,
    idle: Vec<Vec<Idle>>,
    /// Open connections per backend, in `keys` order.
    conns: Vec<Rc<BackendConns>>,
    /// The counts of servers that left the config while connections to them were still
    /// open (in flight): a server that comes back finds them counted.
    departed: Vec<(SocketAddr, Rc<BackendConns>)>,
}

impl Pools {
    /// Pools keyed by `keys` (the backends of table `version`, in table order).
    pub fn new(keys: impl IntoIterator<Item = PoolKey>, version: u64) -> Self {
        let mut p = Self::default();
        // Nothing pooled yet: nothing to trim.
        p.install(keys, version, usize::MAX);
        p
    }

    /// Re-key to a new table: keep the pools of servers still present with the same TLS
    /// settings, close the others (a connection opened in plain TCP, or verified against
    /// another CA or name, never serves a table that wants otherwise). Each pool kept is
    /// trimmed to `max_idle`, the new table's bound: a lowered bound closes the surplus now,
    /// not when it would have timed out.
    pub fn install(
        &mut self,
        keys: impl IntoIterator<Item = PoolKey>,
        version: u64,
        max_idle: usize,
    ) {
        let mut old_keys = std::mem::take(&mut self.keys);
        let mut old_idle = std::mem::take(&mut self.idle);
        // Counted by address, whatever the TLS settings: the bound protects the server.
        let mut counts: Vec<(SocketAddr, Rc<BackendConns>)> = old_keys
            .iter()
            .map(|k| k.0)
            .zip(std::mem::take(&mut self.conns))
            .collect();
        counts.append(&mut self.departed);
        for key in keys {
            let conns = match counts.iter().position(|(a, _)| *a == key.0) {
                Some(i) => counts.swap_remove(i).1,
                None => Rc::default(),
            };
            self.conns.push(conns);
            let idle = match old_keys.iter().position(|k| same_key(k, &key)) {
                Some(i) => {
                    old_keys.swap_remove(i);
                    let mut idle = old_idle.swap_remove(i);
                    // The oldest are at the bottom of the stack.
                    idle.drain(..idle.len().saturating_sub(max_idle));
                    idle
                }
                None => Vec::new(),
            };
            self.keys.push(key);
            self.idle.push(idle);
        }
        self.version = version;
        // Whatever is left belongs to backends that left the config: closed, before their
        // counts are looked at.
        drop(old_idle);
        counts.retain(|(_, c)| c.open.get() > 0);
        self.departed = counts;
    }

    /// A slot for a new connection to backend `b` (at `addr`) of table `version`, or `None`
    /// (counted) when `max_open` (0: no bound) of them are open already.
    pub fn reserve(
        &mut self,
        b: u16,
        version: u64,
        addr: SocketAddr,
        max_open: usize,
    ) -> Option<OpenSlot> {
        let conns = if version == self.version && (b as usize) < self.conns.len() {
            &self.conns[b as usize]
        } else {
            self.conns_of(addr)
        };
        if max_open != 0 && conns.open.get() >= max_open {
            conns.limited.set(conns.limited.get() + 1);
            return None;
        }
        Some(OpenSlot::take(conns))
    }

    /// The count for `addr`, for a request on an older table (its backend indices mean
    /// other servers now).
    #[cold]
    fn conns_of(&mut self, addr: SocketAddr) -> &Rc<BackendConns> {
        if let Some(i) = self.keys.iter().position(|k| k.0 == addr) {
            return &self.conns[i];
        }
        let i = match self.departed.iter().position(|(a, _)| *a == addr) {
            Some(i) => i,
            None => {
                self.departed.push((addr, Rc::default()));
                self.departed.len() - 1
            }
        };
        &self.departed[i].1
    }

    /// An idle, live connection to backend `b` of table `version`, if any. A request that
    /// started on an older table gets none (its backend indices mean other servers now),
    /// and neither do connections pooled in an earlier epoch of the server (`pool_epoch`:
    /// its epoch now). `peeked` counts the candidates that needed a syscall to tell.
    pub fn take(
        &mut self,
        b: u16,
        version: u64,
        pool_epoch: u32,
        now: Instant,
        idle_timeout: Duration,
        peeked: &Cell<u64>,
    ) -> Option<Box<UpstreamConn>> {
        if version != self.version {
            return None;
        }
        let stack = self.idle.get_mut(b as usize)?;
        while let Some(mut idle) = stack.pop() {
            let age = now.saturating_duration_since(idle.since);
            if age >= idle_timeout {
                // The rest are older still.
                stack.clear();
                return None;
            }
            if idle.limit.is_some_and(|l| age >= l) || idle.pool_epoch != pool_epoch {
                continue;
            }
            let Some(known_idle) = idle.conn.rd.check_out() else {
                continue;
            };
            // The peek sees only what is still in the socket: an armed multishot may have
            // taken bytes (or the end) into a completion not reaped yet, so completions
            // are reaped after it (an arrival before the peek is then in one or the other).
            let live = known_idle || {
                peeked.set(peeked.get() + 1);
                is_idle_conn_live(idle.conn.fd) && !idle.conn.rd.has_unread_reaped()
            };
            if live {
                let mut conn = idle.conn;
                conn.is_reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Return a connection after a cleanly framed exchange, in its server's epoch
    /// `pool_epoch`. Dropped (closed) when the pool is full or the table changed since it
    /// was taken.
    ///
    /// `server_left` is how much longer its server keeps the connection idle: its last
    /// response's `Keep-Alive: timeout=N` less the time since the request was sent (the
    /// server's clock starts once it has written the whole response, which a large body or
    /// a slow client can put long before ringgate pools the connection).
    /// The connection is taken no later than [`SERVER_TIMEOUT_MARGIN`] before that, so a
    /// request does not race the server's close (a close that crosses a request on the way
    /// is a 502 for a Command); with less than the margin left it is not kept at all.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &mut self,
        b: u16,
        version: u64,
        pool_epoch: u32,
        mut conn: Box<UpstreamConn>,
        now: Instant,
        max_idle: usize,
        server_left: Option<Duration>,
    ) {
        if version != self.version {
            return;
        }
        let limit = server_left.map(|t| t.saturating_sub(SERVER_TIMEOUT_MARGIN));
        if limit == Some(Duration::ZERO) {
            return;
        }
        if let Some(stack) = self.idle.get_mut(b as usize) {
            if stack.len() < max_idle {
                // Something already arrived (the server's close): not reusable.
                if !conn.rd.watch_idle() {
                    return;
                }
                conn.buf.clear();
                stack.push(Idle {
                    conn,
                    since: now,
                    pool_epoch,
                    limit,
                });
            }
        }
    }

    /// Close connections idle for longer than `idle_timeout` or than their server's limit.
    pub fn sweep(&mut self, now: Instant, idle_timeout: Duration) {
        for stack in &mut self.idle {
            stack.retain(|i| {
                let age = now.saturating_duration_since(i.since);
                age < idle_timeout && i.limit.is_none_or(|l| age < l)
            });
        }
    }

    /// Close the connections on which something arrived while idle (bytes, an end, an
    /// error: none is reusable). For the worker's idle watcher, which only such arrivals
    /// wake (see [`crate::runtime::multishot::watch_idle_sockets`]).
    pub fn retire_heard(&mut self) {
        for stack in &mut self.idle {
            stack.retain(|i| i.conn.rd.watch_idle());
        }
    }

    /// Close every idle connection (shutdown).
    pub fn clear(&mut self) {
        for stack in &mut self.idle {
            stack.clear();
        }
    }

    /// Idle and open connections per backend of the current table.
    pub fn counts(&self) -> Vec<PoolCounts> {
        self.keys
            .iter()
            .zip(&self.idle)
            .zip(&self.conns)
            .map(|((k, idle), c)| PoolCounts {
                addr: k.0,
                idle: idle.len(),
                open: c.open.get(),
                limited: c.limited.get(),
            })
            .collect()
    }
}

/// Whether an idle socket is still usable: no EOF, no error, no unexpected bytes.
fn is_idle_conn_live(fd: RawFd) -> bool {
    crate::forward::io::peek(fd) == crate::forward::io::Peeked::Nothing
}

/// A failed connect (or TLS handshake): a timeout answers 504, as every timeout does.
fn connect_error(e: &std::io::Error) -> ProxyError {
    ProxyError::upstream(match e.kind() {
        std::io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
        _ => ErrorKind::ConnectFailed,
    })
}

/// Open a new connection to `addr` within `timeout`, with a TLS handshake (within the
/// same time) when `tls` says so; it holds `open` for as long as it lives (dropped at once
/// when the connect fails).
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
    open: OpenSlot,
) -> Result<Box<UpstreamConn>, ProxyError> {
    let started = std::time::Instant::now();
    let stream = match timer::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(connect_error(&e)),
        Err(_) => return Err(ProxyError::upstream(ErrorKind::ConnectTimeout)),
    };
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let acked_at_open = acked_bytes(fd);
    let (rd, wr) = match tls {
        None => plain(stream),
        Some(t) => {
            let left = timeout.saturating_sub(started.elapsed());
            // Boxed: the handshake's ~4 KB, 128-byte-aligned future would otherwise sit in
            // every request's exchange future.
            let handshake =
                crate::tls::connect(stream, t.client.clone(), t.server_name.clone(), left);
            match Box::pin(handshake).await {
                Ok((rd, wr)) => (Reader::ClientTls(rd), Writer::ClientTls(wr)),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "upstream TLS handshake failed");
                    return Err(connect_error(&e));
                }
            }
        }
    };
    Ok(Box::new(UpstreamConn {
        rd,
        wr,
        fd,
        buf: Vec::with_capacity(UPSTREAM_BUFFER_BYTES),
        is_reused: false,
        acked_at_open,
        _open: open,
    }))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    use super::{acked_bytes, Untouched};

    /// A connected pair: (client, server). The client has sent one 18-byte request and
    /// read its answer, as a pooled connection has.
    fn after_one_exchange() -> (TcpStream, TcpStream, u64) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let at_open = acked_bytes(client.as_raw_fd()).expect("this kernel counts acked bytes");
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut req = [0u8; 18];
        server.read_exact(&mut req).unwrap();
        let answer = b"HTTP/1.1 204 No Content\r\n\r\n";
        server.write_all(answer).unwrap();
        let mut resp = [0u8; 27];
        client.read_exact(&mut resp).unwrap();
        assert_eq!(&resp, answer);
        (client, server, at_open)
    }

    /// Read until the end of the stream (within a few seconds).
    fn read_to_end(client: &mut TcpStream) -> std::io::Result<usize> {
        client.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 64];
        client.read(&mut buf)
    }

    fn wait_for_reset(client: &mut TcpStream) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            if client.read(&mut buf).is_err() || client.write_all(b"x").is_err() {
                return;
            }
        }
        panic!("no reset came");
    }

    #[test]
    fn a_request_written_after_the_server_closed_was_never_taken() {
        let (mut client, server, at_open) = after_one_exchange();
        let probe = Untouched {
            fd: client.as_raw_fd(),
            acked_at_open: at_open,
            handed_before: 18,
        };
        assert!(probe.holds(), "nothing written since: nothing taken");
        // The server's keep-alive timeout: a plain close, a FIN.
        drop(server);
        assert_eq!(read_to_end(&mut client).unwrap(), 0, "the FIN");
        // The next request races the close and loses: the closed socket answers it with
        // an RST, never with an acknowledgement.
        client.write_all(b"POST /order HTTP/1.1\r\n\r\n").unwrap();
        wait_for_reset(&mut client);
        assert!(probe.holds());
    }

    #[test]
    fn a_request_the_server_read_before_closing_was_taken() {
        let (mut client, mut server, at_open) = after_one_exchange();
        let probe = Untouched {
            fd: client.as_raw_fd(),
            acked_at_open: at_open,
            handed_before: 18,
        };
        client.write_all(b"POST /order HTTP/1.1\r\n\r\n").unwrap();
        let mut req = [0u8; 24];
        server.read_exact(&mut req).unwrap();
        // Read, then closed without an answer: its FIN acknowledges the request.
        drop(server);
        assert_eq!(read_to_end(&mut client).unwrap(), 0, "the FIN");
        assert!(!probe.holds(), "the server took the request");
    }

    #[test]
    fn without_a_count_nothing_is_vouched_for() {
        let probe = Untouched {
            fd: -1,
            acked_at_open: 0,
            handed_before: u64::MAX,
        };
        assert!(!probe.holds());
    }
}

#[cfg(test)]
mod ring_tests {
    use std::cell::Cell;
    use std::future::{poll_fn, Future};
    use std::os::fd::AsRawFd;
    use std::pin::pin;
    use std::task::Poll;
    use std::time::{Duration, Instant};

    use monoio::io::AsyncReadRent;

    use super::{connect, OpenSlot, Pools};

    /// Bytes waiting in `fd`'s receive queue (FIONREAD).
    fn in_socket(fd: i32) -> i32 {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
        assert_eq!(rc, 0);
        n
    }

    /// On a ring whose completions are posted while the worker runs tasks (`plain`, or
    /// `coop_taskrun`: task work runs at any return to user mode), an armed multishot can
    /// have taken a pooled connection's stray bytes out of the socket into a completion
    /// not reaped yet. A `recv(MSG_PEEK)` then finds the socket empty: the connection must
    /// still not be handed out (its next "response" would be those bytes).
    fn stray_bytes_taken_by_the_multishot_retire_a_pooled_connection(
        rt: Option<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>>,
        flags_task_work: bool,
    ) {
        let Some(mut rt) = rt else {
            eprintln!("no such io_uring ring here: nothing to test");
            return;
        };
        rt.block_on(async {
            if crate::runtime::multishot::init(flags_task_work, false).is_err() {
                eprintln!("no multishot here: nothing to test");
                return;
            }
            let l = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let (conn, srv) = monoio::join!(connect(addr, Duration::from_secs(5), None, OpenSlot::detached()), l.accept());
            let mut conn = conn.unwrap_or_else(|_| panic!("connect"));
            let (srv, _) = srv.unwrap();
            // A read polled once arms the multishot (as every exchange's reads do).
            {
                let mut read = pin!(conn.rd.read(Vec::with_capacity(64)));
                poll_fn(|cx| {
                    assert!(read.as_mut().poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
            }
            monoio::uring_ext::submit_now().unwrap();
            let mut pools = Pools::new([(addr, None)], 1);
            let now = Instant::now();
            pools.put(0, 1, 0, conn, now, 8, None);
            // The server speaks out of turn while the connection is pooled.
            let stray = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray";
            // SAFETY: a send from a live buffer on the test's own socket.
            let n = unsafe { libc::send(srv.as_raw_fd(), stray.as_ptr().cast(), stray.len(), 0) };
            assert_eq!(n, stray.len() as isize);
            // Wait (without letting the runtime reap completions) until the multishot has
            // taken them out of the socket: the kernel runs its task work at this thread's
            // next return to user mode, a syscall's (FIONREAD's) included.
            let fd = pools.idle[0][0].conn.fd;
            let deadline = Instant::now() + Duration::from_secs(5);
            while in_socket(fd) > 0 {
                assert!(Instant::now() < deadline, "the multishot never took the bytes");
                std::thread::yield_now();
            }
            let peeked = Cell::new(0);
            let taken = pools.take(0, 1, 0, now, Duration::from_secs(30), &peeked);
            if let Some(mut conn) = taken {
                let (res, buf) = conn.rd.read(Vec::with_capacity(256)).await;
                panic!(
                    "a connection holding stray bytes was handed out; its next read gives {:?}: {:?}",
                    res,
                    String::from_utf8_lossy(&buf)
                );
            }
            drop(srv);
        });
    }

    #[test]
    fn stray_bytes_taken_by_the_multishot_retire_a_pooled_connection_on_a_plain_ring() {
        stray_bytes_taken_by_the_multishot_retire_a_pooled_connection(
            crate::test_runtime::uring(),
            false,
        );
    }

    #[test]
    fn stray_bytes_taken_by_the_multishot_retire_a_pooled_connection_on_a_coop_ring() {
        let mut b = io_uring::IoUring::builder();
        b.setup_coop_taskrun().setup_taskrun_flag();
        let rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .uring_builder(b)
            .enable_timer()
            .build()
            .ok();
        stray_bytes_taken_by_the_multishot_retire_a_pooled_connection(rt, true);
    }
}

#[cfg(test)]
mod tls_tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

    use super::{connect, OpenSlot};
    use crate::config::UpstreamTls;

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
    const ANSWER: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
    const NEXT: &[u8] = b"POST /order HTTP/1.1\r\n\r\n";

    /// A pooled TLS connection after one exchange; the server then ends its session
    /// (close_notify and FIN), having read the next request first when `reads_next`. The
    /// next request is written after the end was read (or, when the server reads it,
    /// before); the probe taken before it must say whether the server took any of it,
    /// handshake and earlier records counted.
    fn after_the_server_closed(reads_next: bool) -> bool {
        let dir = std::env::temp_dir().join(format!(
            "ringgate-pool-tls-{}-{reads_next}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        crate::tls::write_self_signed(&cert, &key).unwrap();
        let server = crate::tls::server_config(&cert, &key, &[]).unwrap();
        let tls = UpstreamTls {
            server_name: rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            ca: Some(cert.clone()),
            ca_pem: std::fs::read(&cert).ok(),
            client: crate::tls::client_config(Some(&cert)).unwrap(),
        };
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let srv = std::thread::spawn(move || {
            let (tcp, _) = l.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = rustls::ServerConnection::new(server).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let mut req = [0u8; REQUEST.len()];
            s.read_exact(&mut req).unwrap();
            s.write_all(ANSWER).unwrap();
            s.flush().unwrap();
            if reads_next {
                let mut next = [0u8; NEXT.len()];
                s.read_exact(&mut next).unwrap();
            }
            // The keep-alive timeout: close_notify, then the socket closes (a FIN).
            s.conn.send_close_notify();
            s.flush().unwrap();
        });
        let holds = crate::test_runtime::epoll().block_on(async move {
            let mut conn = connect(
                addr,
                Duration::from_secs(5),
                Some(&tls),
                OpenSlot::detached(),
            )
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
            let (res, _) = conn.wr.write_all(REQUEST.to_vec()).await;
            res.unwrap();
            let mut got = Vec::new();
            while got.len() < ANSWER.len() {
                let (res, buf) = conn.rd.read(Vec::with_capacity(64)).await;
                assert!(res.unwrap() > 0, "the answer");
                got.extend_from_slice(&buf);
            }
            assert_eq!(got, ANSWER);
            let probe = conn
                .untouched_probe()
                .expect("TLS connections are counted too");
            assert!(probe.holds(), "nothing written since: nothing taken");
            if reads_next {
                let (res, _) = conn.wr.write_all(NEXT.to_vec()).await;
                res.unwrap();
            }
            let (res, _) = conn.rd.read(Vec::with_capacity(64)).await;
            assert_eq!(res.unwrap(), 0, "close_notify");
            if !reads_next {
                // The request races the close and loses: the closed socket answers it with
                // a reset, never with an acknowledgement.
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    assert!(Instant::now() < deadline, "no reset came");
                    let (res, _) = conn.wr.write_all(NEXT.to_vec()).await;
                    if res.is_err() {
                        break;
                    }
                    monoio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            probe.holds()
        });
        srv.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
        holds
    }

    #[test]
    fn a_request_written_after_a_tls_server_closed_was_never_taken() {
        assert!(after_the_server_closed(false));
    }

    #[test]
    fn a_request_a_tls_server_read_before_closing_was_taken() {
        assert!(!after_the_server_closed(true));
    }
}

#[cfg(test)]
mod count_tests {
    use std::net::{SocketAddr, TcpListener};
    use std::time::{Duration, Instant};

    use super::{connect, PoolKey, Pools};

    fn open(p: &Pools, addr: SocketAddr) -> (usize, u64) {
        let c = p.counts().into_iter().find(|c| c.addr == addr).unwrap();
        (c.open, c.limited)
    }

    /// The count follows every connection across reloads: one pooled and closed with its
    /// departed server, one in flight kept counted while its server is out of the config
    /// and counted again when the server comes back; a request on an older table counts
    /// under its server's address.
    #[test]
    fn open_connections_are_counted_across_reloads() {
        let (la, lb) = (
            TcpListener::bind("127.0.0.1:0").unwrap(),
            TcpListener::bind("127.0.0.1:0").unwrap(),
        );
        let (a, b) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
        let key = |addr| -> PoolKey { (addr, None) };
        crate::test_runtime::epoll().block_on(async move {
            let mut p = Pools::new([key(a), key(b)], 1);
            let slot = p.reserve(0, 1, a, 2).unwrap();
            let conn = connect(a, Duration::from_secs(5), None, slot)
                .await
                .unwrap_or_else(|e| panic!("connect: {e}"));
            p.put(0, 1, 0, conn, Instant::now(), 8, None);
            let in_flight = p.reserve(0, 1, a, 2).unwrap();
            assert_eq!(open(&p, a), (2, 0));
            assert!(p.reserve(0, 1, a, 2).is_none(), "at the bound");
            assert_eq!(open(&p, a), (2, 1));
            assert!(p.reserve(0, 1, a, 0).is_some(), "0: no bound");
            // `a` leaves: its pooled connection closes, the one in flight stays counted.
            p.install([key(b)], 2, 8);
            assert_eq!(p.departed.len(), 1);
            // A request on table 1 opens to `b` (index 1 there, 0 now).
            let old = p.reserve(1, 1, b, 1).unwrap();
            assert_eq!(open(&p, b), (1, 0));
            assert!(p.reserve(0, 2, b, 1).is_none());
            drop(old);
            // `a` comes back, at another index.
            p.install([key(b), key(a)], 3, 8);
            assert_eq!(open(&p, a), (1, 1));
            assert!(p.reserve(1, 3, a, 1).is_none());
            drop(in_flight);
            assert_eq!(open(&p, a), (0, 2));
            p.install([key(b)], 4, 8);
            assert!(p.departed.is_empty(), "nothing open: nothing kept");
        });
        drop((la, lb));
    }
}
