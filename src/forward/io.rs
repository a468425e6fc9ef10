//! Timed reads and writes on owned buffers (monoio's rent model).
//!
//! monoio operations take a buffer by value and hand it back with the result, so the
//! kernel can own it while io_uring works. These helpers keep a `&mut Vec<u8>` interface
//! for the relay code: they move the buffer out, run the operation under a timeout, and
//! put it back. If the timeout fires, the in-flight buffer is lost with the cancelled
//! operation and the caller's `Vec` is left empty; every caller closes the connection on
//! a timeout, so nothing reads it again.

use std::io;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// How a timed I/O operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoFail {
    /// The timeout elapsed.
    Timeout,
    /// The peer closed (read returned 0 where bytes were required).
    Closed,
    /// Any other I/O error (reset, broken pipe, ...).
    Error,
}

impl From<io::Error> for IoFail {
    fn from(_: io::Error) -> Self {
        IoFail::Error
    }
}

/// Read at most `max` more bytes, appended after `buf.len()`. Returns the count (0 = EOF).
/// The caller guarantees spare capacity.
pub async fn read_some(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    timeout: Duration,
) -> Result<usize, IoFail> {
    let len = buf.len();
    let end = buf.capacity().min(len.saturating_add(max));
    debug_assert!(end > len, "read_some needs spare capacity");
    let owned = std::mem::take(buf);
    match monoio::time::timeout(timeout, stream.read(owned.slice_mut(len..end))).await {
        Ok((res, slice)) => {
            *buf = slice.into_inner();
            Ok(res?)
        }
        Err(_) => Err(IoFail::Timeout),
    }
}

/// Write `buf[range]` entirely. Returns whether *any* byte was accepted by the kernel
/// alongside the result, so callers can tell "nothing sent" from "maybe sent".
pub async fn write_range(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    start: usize,
    end: usize,
    timeout: Duration,
) -> (Result<(), IoFail>, bool) {
    let mut pos = start;
    while pos < end {
        let owned = std::mem::take(buf);
        match monoio::time::timeout(timeout, stream.write(owned.slice(pos..end))).await {
            Ok((res, slice)) => {
                *buf = slice.into_inner();
                match res {
                    Ok(0) => return (Err(IoFail::Closed), pos > start),
                    Ok(n) => pos += n,
                    Err(_) => return (Err(IoFail::Error), pos > start),
                }
            }
            Err(_) => return (Err(IoFail::Timeout), pos > start),
        }
    }
    (Ok(()), true)
}

/// Write all of `buf`.
pub async fn write_all(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(), IoFail> {
    let len = buf.len();
    write_range(stream, buf, 0, len, timeout).await.0
}

/// Write a static byte string (error responses, `100 Continue`).
pub async fn write_static(
    stream: &mut TcpStream,
    bytes: &'static [u8],
    timeout: Duration,
) -> Result<(), IoFail> {
    match monoio::time::timeout(timeout, stream.write_all(bytes)).await {
        Ok((Ok(_), _)) => Ok(()),
        Ok((Err(_), _)) => Err(IoFail::Error),
        Err(_) => Err(IoFail::Timeout),
    }
}
