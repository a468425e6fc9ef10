//! The two halves of a connection, plain TCP or TLS, behind one type each.
//!
//! Every path — the connection loop, the exchange, the relays, tunnels — reads a
//! [`Reader`] and writes a [`Writer`]; a `match` per operation picks the transport. Both
//! transports support the stoppable operations the exchange relies on (a stopped TLS read
//! or write loses nothing, see `crate::tls`). Only plain TCP on both ends can `splice`:
//! [`Reader::tcp`] / [`Writer::tcp`] say whether a relay may.

use std::io;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent, CancelableAsyncWriteRent,
    Splitable,
};
use monoio::net::tcp::{TcpOwnedReadHalf, TcpOwnedWriteHalf};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::{ClientConnection, ServerConnection};

use crate::tls::{TlsInfo, TlsRead, TlsWrite};

/// The reading half of a connection.
#[derive(Debug)]
pub enum Reader {
    /// Plain TCP.
    Tcp(TcpOwnedReadHalf),
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

/// Split a plain TCP stream.
pub fn plain(stream: TcpStream) -> (Reader, Writer) {
    let (rd, wr) = stream.into_split();
    (Reader::Tcp(rd), Writer::Tcp(wr))
}

impl Reader {
    /// The plain TCP half, when there is no TLS (splice needs it).
    #[inline]
    pub fn tcp(&mut self) -> Option<&mut TcpOwnedReadHalf> {
        match self {
            Reader::Tcp(r) => Some(r),
            _ => None,
        }
    }

    /// What the TLS handshake settled (None on plain TCP).
    pub fn tls_info(&self) -> Option<&TlsInfo> {
        match self {
            Reader::Tcp(_) => None,
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

impl AsyncReadRent for Reader {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        each!(self, h => h.read(buf).await)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        each!(self, h => h.readv(buf).await)
    }
}

impl CancelableAsyncReadRent for Reader {
    async fn cancelable_read<T: IoBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        each!(self, h => h.cancelable_read(buf, c).await)
    }

    async fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        each!(self, h => h.cancelable_readv(buf, c).await)
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
