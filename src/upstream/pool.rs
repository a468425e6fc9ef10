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
//!   `Reader::is_known_idle`) that is the whole check, with no syscall; otherwise
//!   [`Pools::take`] peeks the socket with a non-blocking `recv(MSG_PEEK)`, and EOF, an
//!   error or unexpected bytes discard it.
//! - Idle connections older than `pool_idle_timeout` are closed, on take and by a sweep.
//! - A pool never holds more than `pool_max_idle_per_backend` connections.
//! - On a config reload, pools are re-keyed to the new table by address; pools of backends
//!   that left the config are closed.

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::config::UpstreamTls;
use crate::error::{ErrorKind, ProxyError};
use crate::forward::stream::{plain, Reader, Writer};
use crate::forward::timer;

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
}

struct Idle {
    conn: Box<UpstreamConn>,
    since: Instant,
}

/// All pools of one worker, indexed like the backend list of one table version (backend
/// `i` of that table is address `i` given to [`Pools::install`]).
#[derive(Default)]
pub struct Pools {
    version: u64,
    addrs: Vec<SocketAddr>,
    idle: Vec<Vec<Idle>>,
}

impl Pools {
    /// Pools keyed by `addrs` (the backends of table `version`, in table order).
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>, version: u64) -> Self {
        let mut p = Self::default();
        p.install(addrs, version);
        p
    }

    /// Re-key to a new table: keep pools of addresses still present, close the others.
    pub fn install(&mut self, addrs: impl IntoIterator<Item = SocketAddr>, version: u64) {
        let mut old_addrs = std::mem::take(&mut self.addrs);
        let mut old_idle = std::mem::take(&mut self.idle);
        for addr in addrs {
            let idle = match old_addrs.iter().position(|a| *a == addr) {
                Some(i) => {
                    old_addrs.swap_remove(i);
                    old_idle.swap_remove(i)
                }
                None => Vec::new(),
            };
            self.addrs.push(addr);
            self.idle.push(idle);
        }
        self.version = version;
        // Whatever is left belongs to backends that left the config: dropped (closed).
    }

    /// An idle, live connection to backend `b` of table `version`, if any. A request that
    /// started on an older table gets none (its backend indices mean other servers now).
    /// `peeked` counts the candidates that needed a syscall to tell.
    pub fn take(
        &mut self,
        b: u16,
        version: u64,
        now: Instant,
        idle_timeout: Duration,
        peeked: &Cell<u64>,
    ) -> Option<Box<UpstreamConn>> {
        if version != self.version {
            return None;
        }
        let stack = self.idle.get_mut(b as usize)?;
        while let Some(idle) = stack.pop() {
            if now.saturating_duration_since(idle.since) >= idle_timeout {
                // The rest are older still.
                stack.clear();
                return None;
            }
            let rd = &idle.conn.rd;
            if rd.has_unread() {
                continue;
            }
            let live = rd.is_known_idle() || {
                peeked.set(peeked.get() + 1);
                is_idle_conn_live(idle.conn.fd)
            };
            if live {
                let mut conn = idle.conn;
                conn.is_reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Return a connection after a cleanly framed exchange. Dropped (closed) when the pool
    /// is full or the table changed since it was taken.
    pub fn put(
        &mut self,
        b: u16,
        version: u64,
        mut conn: Box<UpstreamConn>,
        now: Instant,
        max_idle: usize,
    ) {
        if version != self.version {
            return;
        }
        if let Some(stack) = self.idle.get_mut(b as usize) {
            if stack.len() < max_idle {
                conn.buf.clear();
                stack.push(Idle { conn, since: now });
            }
        }
    }

    /// Close connections idle for longer than `idle_timeout`.
    pub fn sweep(&mut self, now: Instant, idle_timeout: Duration) {
        for stack in &mut self.idle {
            stack.retain(|i| now.saturating_duration_since(i.since) < idle_timeout);
        }
    }

    /// Close every idle connection (shutdown).
    pub fn clear(&mut self) {
        for stack in &mut self.idle {
            stack.clear();
        }
    }

    /// Idle connections per backend address.
    pub fn idle_counts(&self) -> impl Iterator<Item = (SocketAddr, usize)> + '_ {
        self.addrs
            .iter()
            .copied()
            .zip(self.idle.iter().map(Vec::len))
    }
}

/// Whether an idle socket is still usable: no EOF, no error, no unexpected bytes.
fn is_idle_conn_live(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: `recv` writes at most 1 byte into `byte`, which lives for the call; the fd
    // is owned by the connection's halves, which outlive the call.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && {
        let err = std::io::Error::last_os_error().raw_os_error();
        err == Some(libc::EAGAIN) || err == Some(libc::EWOULDBLOCK)
    }
}

/// Open a new connection to `addr` within `timeout`, with a TLS handshake (within the
/// same time) when `tls` says so.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
) -> Result<Box<UpstreamConn>, ProxyError> {
    let started = std::time::Instant::now();
    let stream = match timer::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) | Err(_) => return Err(ProxyError::upstream(ErrorKind::ConnectFailed)),
    };
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
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
                    return Err(ProxyError::upstream(ErrorKind::ConnectFailed));
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
    }))
}
