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

use crate::runtime::multishot::Multi;
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
    Tcp(TcpOwnedWriteHalf),
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
    (rd, Writer::Tcp(wr))
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
    /// connection with any is not reusable. (Only a multishot reader receives ahead.)
    pub fn has_unread(&self) -> bool {
        match self {
            Reader::Multi(m) => m.ms.has_unread(),
            _ => false,
        }
    }

    /// Whether the ring vouches that nothing (no bytes, no end) arrived on this socket
    /// (see [`Multi::is_known_idle`]); false where only the socket can tell.
    pub fn is_known_idle(&self) -> bool {
        match self {
            Reader::Multi(m) => m.ms.is_known_idle(),
            _ => false,
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
    /// The plain TCP half, when there is no TLS (splice needs it).
    #[inline]
    pub fn tcp(&mut self) -> Option<&mut TcpOwnedWriteHalf> {
        match self {
            Writer::Tcp(w) => Some(w),
            _ => None,
        }
    }
}

macro_rules! each {
    ($self:expr, $h:ident => $e:expr) => {
        match $self {
            Self::Tcp($h) => $e,
            Self::ServerTls($h) => $e,
            Self::ClientTls($h) => $e,
        }
    };
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

impl AsyncWriteRent for Writer {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        each!(self, h => h.write(buf).await)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        each!(self, h => h.writev(buf).await)
    }

    async fn flush(&mut self) -> io::Result<()> {
        each!(self, h => h.flush().await)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        each!(self, h => h.shutdown().await)
    }
}

impl CancelableAsyncWriteRent for Writer {
    async fn cancelable_write<T: IoBuf>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
        each!(self, h => h.cancelable_write(buf, c).await)
    }

    async fn cancelable_writev<T: IoVecBuf>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        each!(self, h => h.cancelable_writev(buf, c).await)
    }

    async fn cancelable_flush(&mut self, c: CancelHandle) -> io::Result<()> {
        each!(self, h => h.cancelable_flush(c).await)
    }

    async fn cancelable_shutdown(&mut self, c: CancelHandle) -> io::Result<()> {
        each!(self, h => h.cancelable_shutdown(c).await)
    }
}
