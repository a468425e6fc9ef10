//! The two halves of a connection, plain TCP or TLS, behind one type each.
//!
//! Every path — the connection loop, the exchange, the relays, tunnels — reads a
//! [`Reader`] and writes a [`Writer`]; a `match` per operation picks the transport. Both
//! transports support the stoppable operations the exchange relies on (a stopped TLS read
//! or write loses nothing, see `crate::tls`). Only plain TCP on both ends can `splice`:
//! [`Reader::tcp`] / [`Writer::tcp`] say whether a relay may. On an io_uring worker with
//! `workers.multishot`, a plain TCP reader receives by multishot
//! ([`crate::runtime::multishot`]); [`Reader::stop_receiving`] readies it for a splice.

use std::future::poll_fn;
use std::io;
use std::task::Poll;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent, CancelableAsyncWriteRent,
    Splitable,
};
use monoio::net::tcp::{TcpOwnedReadHalf, TcpOwnedWriteHalf};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::{ClientConnection, ServerConnection};

use crate::runtime::eager::{Eager, Settled};
use crate::runtime::multishot::{Multi, ResetWatch};
use crate::tls::{TlsInfo, TlsRead, TlsWrite};

/// The reading half of a connection.
#[derive(Debug)]
pub enum Reader {
    /// Plain TCP.
    Tcp(TcpOwnedReadHalf),
    /// Plain TCP, received by a multishot recv.
    Multi(MultiReader),
    /// TLS, ringgate being the server (a client connection).
    ServerTls(TlsRead<ServerConnection>),
    /// TLS, ringgate being the client (an upstream connection).
    ClientTls(TlsRead<ClientConnection>),
}

/// The writing half of a connection.
#[derive(Debug)]
pub enum Writer {
    /// Plain TCP.
    Tcp(TcpWriter),
    /// Plain TCP that can hand small messages over eagerly ([`Writer::send_eager`]).
    Eager(EagerWriter),
    /// TLS, ringgate being the server.
    ServerTls(TlsWrite<ServerConnection>),
    /// TLS, ringgate being the client.
    ClientTls(TlsWrite<ClientConnection>),
}

/// Split a plain TCP stream (the reader receives by multishot where the worker does).
pub fn plain(stream: TcpStream) -> (Reader, Writer) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let (rd, wr) = stream.into_split();
    let rd = match Multi::new(fd) {
        Some(ms) => Reader::Multi(MultiReader { ms, half: rd }),
        None => Reader::Tcp(rd),
    };
    let wr = match Eager::new(fd) {
        Some(eager) => Writer::Eager(EagerWriter {
            eager,
            half: wr,
            handed: 0,
        }),
        None => Writer::Tcp(TcpWriter {
            half: wr,
            handed: 0,
        }),
    };
    (rd, wr)
}

/// Close a connection with a reset (RST, no FIN before it), so that a stream cut short
/// (a close-delimited answer, a tunnel) cannot pass for a whole one: the plain TCP halves
/// are put back together (the write half's drop would shut the write side, a FIN) and
/// closed with `SO_LINGER` 0. A TLS connection just closes: its peer's library tells a
/// missing `close_notify` from the end.
pub fn reset(rd: Reader, wr: Writer) {
    let read = match rd {
        Reader::Tcp(h) => h,
        // Dropping the multishot state cancels its receive.
        Reader::Multi(MultiReader { half, .. }) => half,
        _ => return,
    };
    let write = match wr {
        Writer::Tcp(w) => w.half,
        // Dropping the eager state has the kernel take a send still pending.
        Writer::Eager(EagerWriter { half, .. }) => half,
        _ => return,
    };
    let Ok(stream) = read.reunite(write) else {
        return;
    };
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on the stream's own open socket reads `linger`, a valid `struct
    // linger`, for its size.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// A plain TCP write half.
#[derive(Debug)]
pub struct TcpWriter {
    half: TcpOwnedWriteHalf,
    /// Bytes handed to the socket by `write`, `writev` and splices (see
    /// [`Writer::handed`]).
    handed: u64,
}

/// A plain TCP write half with an eager sender. (The sender is declared first: dropped
/// first, it has the kernel take a pending send before the socket's close is pushed.)
#[derive(Debug)]
pub struct EagerWriter {
    eager: Eager,
    half: TcpOwnedWriteHalf,
    /// Bytes handed to the socket by `write`, `writev`, eager sends and splices (see
    /// [`Writer::handed`]).
    handed: u64,
}

impl EagerWriter {
    /// Settle the eager send in flight, if any: an error when it did not all go out (the
    /// stream is then broken: a later write must not follow a hole). Ends a stopped
    /// continuation when `stop` fires.
    async fn settled(&mut self, stop: Option<&CancelHandle>) -> io::Result<()> {
        let s = poll_fn(|cx| self.eager.poll_settle(cx, true, stop)).await;
        s.result.map_err(io::Error::from_raw_os_error)
    }
}

/// A plain TCP read half whose bytes come from a multishot recv. (The multishot is
/// declared first: dropped first, its cancel goes out before the socket can close.)
#[derive(Debug)]
pub struct MultiReader {
    ms: Multi,
    half: TcpOwnedReadHalf,
}

impl MultiReader {
    /// A read, stopped (`ECANCELED`) once `stop` fires when there is one.
    async fn read<T: IoBufMut>(
        &mut self,
        mut buf: T,
        stop: Option<CancelHandle>,
    ) -> BufResult<usize, T> {
        let (ptr, len) = (buf.write_ptr(), buf.bytes_total());
        let polled = poll_fn(|cx| {
            if stop.as_ref().is_some_and(CancelHandle::canceled) {
                let stopped = io::Error::from_raw_os_error(libc::ECANCELED);
                return Poll::Ready(Some(Err(stopped)));
            }
            // SAFETY: see `spare`; the buffer is not moved before the read ends.
            self.ms.poll_read(cx, unsafe { spare(ptr, len) })
        })
        .await;
        match (polled, stop) {
            (Some(res), _) => filled(res, buf),
            (None, None) => self.half.read(buf).await,
            (None, Some(c)) => self.half.cancelable_read(buf, c).await,
        }
    }
}

/// The bytes a read may fill, from an `IoBufMut`'s `write_ptr` and `bytes_total`.
///
/// # Safety
/// An `IoBufMut` promises `len` writable bytes at `ptr` while it is not moved; the caller
/// uses the slice only within one poll, while the buffer stays where it is.
unsafe fn spare<'a>(ptr: *mut u8, len: usize) -> &'a mut [std::mem::MaybeUninit<u8>] {
    // SAFETY: as the function's contract says.
    unsafe { std::slice::from_raw_parts_mut(ptr.cast(), len) }
}

/// A buffer the multishot copied `res` bytes into.
fn filled<T: IoBufMut>(res: io::Result<usize>, mut buf: T) -> BufResult<usize, T> {
    if let Ok(n) = res {
        // SAFETY: `n` bytes were copied to the buffer's start.
        unsafe { buf.set_init(n) };
    }
    (res, buf)
}

impl Reader {
    /// Whether this is plain TCP (no TLS).
    pub fn is_plain(&self) -> bool {
        matches!(self, Reader::Tcp(_) | Reader::Multi(_))
    }

    /// The plain TCP half, when there is no TLS and every byte not yet read is still in
    /// the socket (splice needs it; see [`Reader::stop_receiving`]).
    #[inline]
    pub fn tcp(&mut self) -> Option<&mut TcpOwnedReadHalf> {
        match self {
            Reader::Tcp(r) => Some(r),
            Reader::Multi(m) if m.ms.is_quiet() => Some(&mut m.half),
            _ => None,
        }
    }

    /// Stop a multishot reader's receiving, so that the socket's next bytes stay in the
    /// socket for a splice. Bytes it had received are still read first (until then
    /// [`Reader::tcp`] says no). Other readers: nothing to do.
    pub async fn stop_receiving(&mut self) {
        if let Reader::Multi(m) = self {
            poll_fn(|cx| m.ms.poll_disarm(cx)).await;
        }
    }

    /// Whether bytes (or an end) were received that nobody has read: an idle pooled
    /// connection with any is not reusable. A multishot reader receives ahead of its
    /// reads; a TLS reader keeps what one TCP read brought beyond the plaintext taken (a
    /// plain reader leaves everything in the socket, where the pool's peek looks).
    pub fn has_unread(&mut self) -> bool {
        match self {
            Reader::Multi(m) => m.ms.has_unread(),
            Reader::ClientTls(r) => r.has_unread(),
            Reader::ServerTls(r) => r.has_unread(),
            Reader::Tcp(_) => false,
        }
    }

    /// [`Reader::has_unread`], after taking in every completion the ring has posted: a
    /// multishot reader's bytes may have left the socket for a completion not reaped yet
    /// (on a ring that posts completions while tasks run), where a peek cannot see them.
    pub fn has_unread_reaped(&mut self) -> bool {
        if matches!(self, Reader::Multi(_)) {
            crate::runtime::multishot::reap_if_posted_meanwhile();
        }
        self.has_unread()
    }

    /// Mark this connection idle, so that what next arrives on it wakes the worker's idle
    /// watcher (see [`Multi::watch_idle`]): false when something arrived already. Only a
    /// multishot reader can be watched without a syscall; others are not (true).
    pub fn watch_idle(&self) -> bool {
        match self {
            Reader::Multi(m) => m.ms.watch_idle(),
            _ => true,
        }
    }

    /// Whether the connection is known to be broken (reset) without a syscall: a
    /// multishot reader received the error. False where only a read or a write can tell.
    #[inline]
    pub fn has_failed(&self) -> bool {
        match self {
            Reader::Multi(m) => m.ms.has_failed(),
            _ => false,
        }
    }

    /// A watch for this connection's reset that holds no borrow of the reader (see
    /// [`ResetWatch`]): on a multishot reader only (elsewhere only a read or a syscall
    /// could tell).
    pub fn reset_watch(&self) -> Option<ResetWatch> {
        match self {
            Reader::Multi(m) => Some(m.ms.reset_watch()),
            _ => None,
        }
    }

    /// Take an idle pooled connection out of the idle watch, for reuse: `None` when
    /// something arrived that nobody has read (see [`Reader::has_unread`]); otherwise
    /// whether the ring vouches that nothing (no bytes, no end) arrived on this socket
    /// (see [`Multi::check_out`]), false where only the socket can tell.
    pub fn check_out(&mut self) -> Option<bool> {
        let unread = match self {
            Reader::Multi(m) => return m.ms.check_out(),
            Reader::ClientTls(r) => r.has_unread(),
            Reader::ServerTls(r) => r.has_unread(),
            Reader::Tcp(_) => false,
        };
        (!unread).then_some(false)
    }

    /// Read bytes that are only to be discarded (a closing connection): as a read, except
    /// that a TLS reader cut by a dropped read (a timeout), which can decrypt nothing more,
    /// takes the raw ciphertext, so what the peer still sends is read all the same.
    pub async fn read_discarded<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Reader::ServerTls(r) if r.is_cut() => r.read_discarded(buf).await,
            Reader::ClientTls(r) if r.is_cut() => r.read_discarded(buf).await,
            _ => self.read(buf).await,
        }
    }

    /// What the TLS handshake settled (None on plain TCP).
    pub fn tls_info(&self) -> Option<&TlsInfo> {
        match self {
            Reader::Tcp(_) | Reader::Multi(_) => None,
            Reader::ServerTls(r) => Some(r.info()),
            Reader::ClientTls(r) => Some(r.info()),
        }
    }
}

impl Writer {
    /// The plain TCP half, when there is no TLS and no eager send in flight (splice needs
    /// it).
    #[inline]
    pub fn tcp(&mut self) -> Option<&mut TcpOwnedWriteHalf> {
        match self {
            Writer::Tcp(w) => Some(&mut w.half),
            Writer::Eager(w) if w.eager.is_idle() => Some(&mut w.half),
            _ => None,
        }
    }

    /// Hand `bytes` to the socket eagerly (see [`crate::runtime::eager`]): true when done
    /// (the caller's buffer is free at once; a failure shows at the next operation on this
    /// writer, or in [`Writer::settle`]), false when the caller must write them itself.
    pub fn send_eager(&mut self, bytes: &[u8]) -> bool {
        match self {
            Writer::Eager(w) => {
                let handed = w.eager.send(bytes);
                if handed {
                    w.handed += bytes.len() as u64;
                }
                handed
            }
            _ => false,
        }
    }

    /// How many bytes this writer has handed to its socket so far (under TLS: ciphertext,
    /// the handshake's included; `None` while a TLS write is in progress). Bytes spliced
    /// through [`Writer::tcp`] count once their splice is done ([`Writer::note_spliced`]):
    /// those of a splice cut short are not counted, so the count can fall short of the
    /// truth, never exceed it — and it falls short only on a connection that is not kept.
    pub fn handed(&self) -> Option<u64> {
        match self {
            Writer::Tcp(w) => Some(w.handed),
            Writer::Eager(w) => Some(w.handed),
            Writer::ServerTls(w) => w.handed(),
            Writer::ClientTls(w) => w.handed(),
        }
    }

    /// Count `n` bytes that a splice through [`Writer::tcp`] handed to the socket (see
    /// [`Writer::handed`]).
    pub fn note_spliced(&mut self, n: u64) {
        match self {
            Writer::Tcp(w) => w.handed += n,
            Writer::Eager(w) => w.handed += n,
            Writer::ServerTls(_) | Writer::ClientTls(_) => {}
        }
    }

    fn note_written(&mut self, res: &io::Result<usize>) {
        let n = match res {
            Ok(n) => *n as u64,
            Err(_) => return,
        };
        match self {
            Writer::Tcp(w) => w.handed += n,
            Writer::Eager(w) => w.handed += n,
            Writer::ServerTls(_) | Writer::ClientTls(_) => {}
        }
    }

    /// Poll the eager send in flight (ready at once where there is none): `force` has the
    /// kernel take a pushed send now rather than at the next enter; a fired `stop` ends a
    /// continuation (see [`Eager::poll_settle`]).
    pub fn poll_settle(
        &mut self,
        cx: &mut std::task::Context<'_>,
        force: bool,
        stop: Option<&CancelHandle>,
    ) -> Poll<Settled> {
        match self {
            Writer::Eager(w) => w.eager.poll_settle(cx, force, stop),
            _ => Poll::Ready(Settled {
                sent: 0,
                result: Ok(()),
            }),
        }
    }

    /// Wait until every byte handed over eagerly is out, or fail if it cannot be (before a
    /// close, so the last answer is not lost).
    pub async fn settle(&mut self) -> io::Result<()> {
        match self {
            Writer::Eager(w) => w.settled(None).await,
            _ => Ok(()),
        }
    }

    /// Before a clean close: [`Writer::settle`], and a TLS stream ends with `close_notify`
    /// (its TCP write side shut after it), without which its peer cannot tell the end from
    /// a truncation (RFC 8446 §6.1). Not after a failure: a stream cut short must not end
    /// the way a whole one does.
    pub async fn finish(&mut self) -> io::Result<()> {
        match self {
            Writer::ServerTls(_) | Writer::ClientTls(_) => self.shutdown().await,
            _ => self.settle().await,
        }
    }
}

macro_rules! each_read {
    ($self:expr, $h:ident => $e:expr, $multi:ident => $m:expr) => {
        match $self {
            Self::Tcp($h) => $e,
            Self::ServerTls($h) => $e,
            Self::ClientTls($h) => $e,
            Self::Multi($multi) => $m,
        }
    };
}

impl AsyncReadRent for Reader {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        each_read!(self, h => h.read(buf).await, m => m.read(buf, None).await)
    }

    /// Vectored reads are not used on the request path; a multishot reader refuses them.
    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        each_read!(self, h => h.readv(buf).await, _m => (Err(io::ErrorKind::Unsupported.into()), buf))
    }
}

impl CancelableAsyncReadRent for Reader {
    async fn cancelable_read<T: IoBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        each_read!(self, h => h.cancelable_read(buf, c).await, m => m.read(buf, Some(c)).await)
    }

    async fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        each_read!(
            self,
            h => h.cancelable_readv(buf, c).await,
            _m => (Err(io::ErrorKind::Unsupported.into()), buf)
        )
    }
}

/// A writer operation: an eager writer settles its send in flight first (stopped by
/// `$stop`), and fails with `$fail(error)` if that send broke the stream.
macro_rules! each_write {
    ($self:expr, $stop:expr, $h:ident => $e:expr, $err:ident => $fail:expr) => {
        match $self {
            Self::Tcp(w) => {
                let $h = &mut w.half;
                $e
            }
            Self::ServerTls($h) => $e,
            Self::ClientTls($h) => $e,
            Self::Eager(w) => match w.settled($stop).await {
                Ok(()) => {
                    let $h = &mut w.half;
                    $e
                }
                Err($err) => $fail,
            },
        }
    };
}

impl AsyncWriteRent for Writer {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let r = each_write!(self, None, h => h.write(buf).await, e => (Err(e), buf));
        self.note_written(&r.0);
        r
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let r = each_write!(self, None, h => h.writev(buf).await, e => (Err(e), buf));
        self.note_written(&r.0);
        r
    }

    async fn flush(&mut self) -> io::Result<()> {
        each_write!(self, None, h => h.flush().await, e => Err(e))
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        each_write!(self, None, h => h.shutdown().await, e => Err(e))
    }
}

impl CancelableAsyncWriteRent for Writer {
    async fn cancelable_write<T: IoBuf>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
        let r =
            each_write!(self, Some(&c), h => h.cancelable_write(buf, c).await, e => (Err(e), buf));
        self.note_written(&r.0);
        r
    }

    async fn cancelable_writev<T: IoVecBuf>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        let r =
            each_write!(self, Some(&c), h => h.cancelable_writev(buf, c).await, e => (Err(e), buf));
        self.note_written(&r.0);
        r
    }

    async fn cancelable_flush(&mut self, c: CancelHandle) -> io::Result<()> {
        each_write!(self, Some(&c), h => h.cancelable_flush(c).await, e => Err(e))
    }

    async fn cancelable_shutdown(&mut self, c: CancelHandle) -> io::Result<()> {
        each_write!(self, Some(&c), h => h.cancelable_shutdown(c).await, e => Err(e))
    }
}
