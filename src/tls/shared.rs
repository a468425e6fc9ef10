//! What the two halves of a TLS stream share: the session, the socket's send side and the
//! ciphertext queued for it, and small helpers for the buffers monoio hands over.

use std::cell::RefCell;
use std::io::{self, BufRead, Write};
use std::ops::DerefMut;
use std::os::fd::RawFd;

use monoio::buf::{IoBuf, IoVecBuf};
use monoio::io::{AsyncWriteRent, CancelHandle, CancelableAsyncWriteRent};
use monoio::net::tcp::TcpOwnedWriteHalf;
use rustls::{CipherSuite, ConnectionCommon, ProtocolVersion, SideData};

/// `ECANCELED`, the error monoio gives a cancelled operation.
pub(super) const OS_ECANCELED: i32 = libc::ECANCELED;

/// What the handshake settled. The same for both halves; fixed for the life of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// The negotiated protocol version (`TLSv1_2` or `TLSv1_3`).
    pub protocol_version: ProtocolVersion,
    /// The negotiated cipher suite.
    pub cipher_suite: CipherSuite,
    /// The ALPN protocol both sides agreed on (`b"http/1.1"`), if any was negotiated.
    pub alpn_protocol: Option<Vec<u8>>,
    /// The SNI server name: as the client sent it (server side; `None` if it sent none), or
    /// as we sent it (client side; `None` for an IP address, which is not sent).
    pub server_name: Option<String>,
    /// Whether the session was resumed (ticket or session id) rather than fully negotiated.
    pub is_resumed: bool,
}

/// The socket's send side and the ciphertext queued for it.
pub(super) struct Sender {
    pub(super) tcp: TcpOwnedWriteHalf,
    /// Ciphertext; `out[..sent]` has been handed to the kernel.
    pub(super) out: Vec<u8>,
    pub(super) sent: usize,
    /// Bytes handed to the kernel over the connection's life, the handshake's included.
    pub(super) handed: u64,
}

impl Sender {
    /// The send side of a stream whose handshake handed `handed` bytes to the kernel.
    pub(super) fn new(tcp: TcpOwnedWriteHalf, handed: u64) -> Self {
        Self {
            tcp,
            out: Vec::new(),
            sent: 0,
            handed,
        }
    }

    /// Note `n` more bytes taken by the kernel.
    fn took(&mut self, n: usize) {
        self.sent += n;
        self.handed += n as u64;
    }

    pub(super) fn queued(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Move the records rustls holds to the back of the queue.
    pub(super) fn take_records<SD: SideData>(
        &mut self,
        conn: &mut ConnectionCommon<SD>,
    ) -> io::Result<()> {
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        while conn.wants_write() {
            conn.write_tls(&mut self.out)?;
        }
        Ok(())
    }

    /// Send the queue, including records the read side adds while this waits, until both
    /// are empty. Progress is recorded as it happens, so a stop or an error leaves the
    /// queue exact.
    pub(super) async fn send_all<C, SD>(
        &mut self,
        shared: &RefCell<Shared<C>>,
        cancel: Option<&CancelHandle>,
    ) -> io::Result<()>
    where
        C: DerefMut<Target = ConnectionCommon<SD>>,
        SD: SideData,
    {
        loop {
            if self.queued() == 0 {
                let mut s = shared.borrow_mut();
                if !s.is_closing {
                    release_key_update(&mut s.conn);
                }
                self.take_records(&mut s.conn)?;
                if self.queued() == 0 {
                    return Ok(());
                }
            }
            let out = std::mem::take(&mut self.out).slice(self.sent..);
            let (res, out) = match cancel {
                Some(c) => self.tcp.cancelable_write(out, c.clone()).await,
                None => self.tcp.write(out).await,
            };
            self.out = out.into_inner();
            match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.took(n),
                Err(e) => return Err(e),
            }
        }
    }
}

/// What both halves share.
pub(super) struct Shared<C> {
    pub(super) conn: C,
    /// `None` while the write half is sending (the flag), or forever after a dropped write.
    pub(super) sender: Option<Sender>,
    /// The socket, for the read half's non-blocking sends. Open as long as either half's TCP
    /// half lives; only the read half uses it, while it holds its own.
    pub(super) fd: RawFd,
    /// The error a read half's send met: the write direction is broken.
    pub(super) send_error: Option<i32>,
    /// `close_notify` is queued: no more application data may be written.
    pub(super) is_closing: bool,
}

impl<C, SD> Shared<C>
where
    C: DerefMut<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    /// Send queued records without waiting, if no write is in progress (one that is will
    /// send them before it ends). What the socket does not take stays queued.
    pub(super) fn push_nonblocking(&mut self) {
        let Shared {
            conn,
            sender,
            fd,
            send_error,
            is_closing,
        } = self;
        if !*is_closing {
            release_key_update(conn);
        }
        let Some(sender) = sender.as_mut() else {
            return;
        };
        if send_error.is_some() || sender.take_records(conn).is_err() {
            return;
        }
        while sender.queued() > 0 {
            match send_nonblocking(*fd, &sender.out[sender.sent..]) {
                Ok(n) => sender.took(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    *send_error = Some(e.raw_os_error().unwrap_or(libc::EPIPE));
                    return;
                }
            }
        }
    }
}

/// rustls holds a TLS 1.3 KeyUpdate answer back until the next plaintext write; an empty
/// write releases it into the outgoing records (in order: it was encrypted when queued).
pub(super) fn release_key_update<SD: SideData>(conn: &mut ConnectionCommon<SD>) {
    if !conn.is_handshaking() {
        // An error here is the session's own fatal error, which reads and writes report.
        let _ = conn.writer().write(&[]);
    }
}

/// `send(2)` that never waits and never raises SIGPIPE.
pub(super) fn send_nonblocking(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is a live slice for the length given; `fd` is the stream's socket,
    // open while the calling read half holds its TCP half (see `Shared::fd`).
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

pub(super) fn is_cancelled(e: &io::Error) -> bool {
    e.raw_os_error() == Some(OS_ECANCELED)
}

pub(super) fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Copy up to `len` bytes of plaintext to `dst`: `Ok(0)` at a clean end, the reader's error
/// (`WouldBlock` when nothing is ready, `UnexpectedEof` on truncation) if nothing was copied.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes.
pub(super) unsafe fn copy_plaintext<SD: SideData>(
    conn: &mut ConnectionCommon<SD>,
    dst: *mut u8,
    len: usize,
) -> io::Result<usize> {
    let mut reader = conn.reader();
    let mut n = 0;
    while n < len {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(_) if n > 0 => break,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        let take = chunk.len().min(len - n);
        // SAFETY: `dst + n .. dst + n + take` is within the caller's `len` bytes; `chunk` is
        // rustls' buffer, which cannot overlap a buffer the caller owns.
        unsafe { dst.add(n).copy_from_nonoverlapping(chunk.as_ptr(), take) };
        reader.consume(take);
        n += take;
    }
    Ok(n)
}

/// The initialized bytes of a rented buffer.
pub(super) fn init_bytes<T: IoBuf>(buf: &T) -> &[u8] {
    let len = buf.bytes_init();
    if len == 0 {
        return &[];
    }
    // SAFETY: `IoBuf` promises `read_ptr()` points at `bytes_init()` initialized bytes
    // that stay put while the buffer is neither moved nor changed, which the borrow of
    // `buf` guarantees for the life of the slice.
    unsafe { std::slice::from_raw_parts(buf.read_ptr(), len) }
}

/// The parts of a rented vectored buffer, in order.
pub(super) fn iovec_parts<T: IoVecBuf>(buf: &T) -> impl Iterator<Item = &[u8]> {
    let iovecs = buf.read_iovec_ptr();
    (0..buf.read_iovec_len()).map(move |i| {
        // SAFETY: `IoVecBuf` promises `read_iovec_len()` valid iovecs at `read_iovec_ptr()`,
        // each describing readable memory that stays put while `buf` is borrowed.
        let iov = unsafe { *iovecs.add(i) };
        if iov.iov_len == 0 {
            &[][..]
        } else {
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len) }
        }
    })
}

/// Where the ciphertext handed to rustls so far ends within the TLS record layer: at a
/// record boundary, or inside a record (its 5-byte header, or its body). rustls takes
/// what it is given, whole records or not, and does not say whether it holds part of one;
/// an idle connection whose rustls does holds bytes of a record that answers nothing yet,
/// so it must not be reused.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Records {
    /// Header bytes of the current record seen so far (0 at a boundary or in a body).
    header: [u8; 5],
    have: u8,
    /// Body bytes of the current record still to come.
    left: usize,
}

impl Records {
    /// Account for `bytes`, the next ones handed to rustls.
    pub(super) fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = self.left.min(bytes.len());
                self.left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (5 - usize::from(self.have)).min(bytes.len());
            let at = usize::from(self.have);
            self.header[at..at + n].copy_from_slice(&bytes[..n]);
            self.have += n as u8;
            bytes = &bytes[n..];
            if self.have == 5 {
                self.have = 0;
                self.left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            }
        }
    }

    /// Whether the bytes so far end inside a record.
    pub(super) fn is_mid_record(&self) -> bool {
        self.have > 0 || self.left > 0
    }
}

/// Hand rustls the ciphertext `bytes[*consumed..]` (it takes what it will), noting how far
/// it got and where that ends in the record layer. `Ok(0)`: rustls takes no more (it had
/// close_notify).
pub(super) fn hand_to_rustls<SD: SideData>(
    conn: &mut ConnectionCommon<SD>,
    bytes: &[u8],
    consumed: &mut usize,
    records: &mut Records,
) -> io::Result<usize> {
    let n = conn.read_tls(&mut &bytes[*consumed..])?;
    records.advance(&bytes[*consumed..*consumed + n]);
    *consumed += n;
    Ok(n)
}

#[cfg(test)]
mod records_tests {
    use super::Records;

    #[test]
    fn record_boundaries_are_found_however_the_bytes_are_cut() {
        // Two records: 3 and 2 body bytes.
        let stream = [23, 3, 3, 0, 3, b'a', b'b', b'c', 23, 3, 3, 0, 2, b'd', b'e'];
        let boundaries = [0, 8, 15];
        for cut in 0..=stream.len() {
            let mut r = Records::default();
            r.advance(&stream[..cut]);
            assert_eq!(
                r.is_mid_record(),
                !boundaries.contains(&cut),
                "cut at {cut}"
            );
            r.advance(&stream[cut..]);
            assert!(!r.is_mid_record());
        }
        // Byte by byte.
        let mut r = Records::default();
        for (i, b) in stream.iter().enumerate() {
            r.advance(std::slice::from_ref(b));
            assert_eq!(
                r.is_mid_record(),
                !boundaries.contains(&(i + 1)),
                "after {i}"
            );
        }
    }
}
