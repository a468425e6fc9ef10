//! The two halves of a TLS session over a split monoio TCP stream.
//!
//! # Invariants
//! - The session, the socket's send side and the outgoing queue live in one [`Shared`],
//!   behind `Rc<RefCell<..>>`; every borrow ends before the next `.await`.
//! - The send side ([`Sender`]) is in its slot unless the write half is sending: an empty
//!   slot is the "write in progress" flag. The write half takes it for a whole operation
//!   and puts it back before returning; if its future is dropped instead, the slot stays
//!   empty and the write direction is poisoned.
//! - Outgoing ciphertext order: `Sender::out[sent..]`, then what rustls holds. Records
//!   move from rustls to the back of the queue only.
//! - The read half's ciphertext buffer holds `inbound[consumed..]`, bytes read from TCP
//!   and not yet handed to rustls; rustls is fed only when it has no plaintext pending.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::ops::DerefMut;
use std::os::fd::RawFd;
use std::rc::Rc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent, CancelableAsyncWriteRent,
};
use monoio::net::tcp::TcpOwnedReadHalf;
use monoio::BufResult;
use rustls::{ConnectionCommon, SideData};

pub(super) use super::shared::Sender;
pub use super::shared::TlsInfo;
use super::shared::*;

/// Size of the read half's ciphertext buffer: one TLS record at its largest (16 KiB of
/// payload plus header and AEAD overhead) with room to spare, so a full record never needs
/// two TCP reads on its own account.
pub const CIPHERTEXT_READ_BYTES: usize = 18 * 1024;

/// The read half of a TLS stream: plaintext out, ciphertext in from its TCP read half.
/// See the module docs for the stop and end-of-stream rules.
pub struct TlsRead<C> {
    shared: Rc<RefCell<Shared<C>>>,
    tcp: TcpOwnedReadHalf,
    /// Ciphertext read from TCP; `inbound[consumed..]` is not yet handed to rustls.
    inbound: Vec<u8>,
    consumed: usize,
    /// Where what rustls was given ends in the record layer.
    records: Records,
    /// A TCP read is in flight. Still set at the next call: its future was dropped and the
    /// ciphertext went with its buffer.
    is_reading: bool,
    /// The session failed (bad record, fatal alert): every later read reports it.
    failure: Option<rustls::Error>,
    info: Rc<TlsInfo>,
}

/// The write half of a TLS stream: plaintext in, ciphertext out on the TCP write half the
/// halves share. See the module docs for the flush and stop rules.
pub struct TlsWrite<C> {
    shared: Rc<RefCell<Shared<C>>>,
    info: Rc<TlsInfo>,
}

impl<C> fmt::Debug for TlsRead<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsRead").field("info", &self.info).finish()
    }
}

impl<C> fmt::Debug for TlsWrite<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsWrite")
            .field("info", &self.info)
            .finish()
    }
}

/// Ciphertext read during a handshake: `bytes[consumed..]` not yet handed to rustls, and
/// where what it was handed ends in the record layer.
pub(super) struct Inbound {
    pub(super) bytes: Vec<u8>,
    pub(super) consumed: usize,
    pub(super) records: Records,
}

/// Build the two halves of a session whose handshake is done, with what the handshake
/// read past its end.
pub(super) fn split<C>(
    conn: C,
    tcp_read: TcpOwnedReadHalf,
    sender: Sender,
    fd: RawFd,
    past: Inbound,
    info: TlsInfo,
) -> (TlsRead<C>, TlsWrite<C>) {
    let Inbound {
        bytes: inbound,
        consumed,
        records,
    } = past;
    let shared = Rc::new(RefCell::new(Shared {
        conn,
        sender: Some(sender),
        fd,
        send_error: None,
        is_closing: false,
    }));
    let info = Rc::new(info);
    let read = TlsRead {
        shared: shared.clone(),
        tcp: tcp_read,
        inbound,
        consumed,
        records,
        is_reading: false,
        failure: None,
        info: info.clone(),
    };
    (read, TlsWrite { shared, info })
}

impl<C> TlsRead<C> {
    /// What the handshake settled.
    pub fn info(&self) -> &TlsInfo {
        &self.info
    }

    /// Whether an earlier read was dropped while it waited for TCP (a timeout): the
    /// ciphertext it took is gone, so nothing more can be decrypted.
    pub fn is_cut(&self) -> bool {
        self.is_reading
    }

    /// Read raw ciphertext from the socket, past the session: for a closing connection
    /// whose bytes are only discarded, which must read what the peer still sends even
    /// after [`TlsRead::is_cut`]. The session gets nothing more to read afterwards.
    pub async fn read_discarded<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        self.tcp.read(buf).await
    }
}

impl<C, SD> TlsRead<C>
where
    C: DerefMut<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    /// Wait until rustls has something for a reader: plaintext, a clean end, or an error.
    async fn ready(&mut self, cancel: Option<&CancelHandle>) -> io::Result<()> {
        loop {
            if self.is_reading {
                return Err(io::Error::other(
                    "an earlier TLS read was dropped while in flight: ciphertext was lost",
                ));
            }
            if let Some(e) = &self.failure {
                return Err(tls_error(e.clone()));
            }
            if self.has_reader_news() {
                return Ok(());
            }
            if self.consumed < self.inbound.len() {
                self.feed()?;
                continue;
            }
            let mut buf = std::mem::take(&mut self.inbound);
            buf.clear();
            self.consumed = 0;
            self.is_reading = true;
            let (res, buf) = match cancel {
                Some(c) => self.tcp.cancelable_read(buf, c.clone()).await,
                None => self.tcp.read(buf).await,
            };
            self.is_reading = false;
            self.inbound = buf;
            if res? == 0 {
                // TCP EOF: rustls now answers a clean end if close_notify came first, and
                // `UnexpectedEof` otherwise.
                self.shared.borrow_mut().conn.read_tls(&mut io::empty())?;
            }
        }
    }

    /// Whether anything arrived that no reader has taken: plaintext, an end, a failure,
    /// ciphertext not yet handed to rustls — handed to it now, so that records with no
    /// plaintext for a reader (session tickets, key updates) do not count — or part of a
    /// record rustls holds. An idle pooled connection with any is not reusable: none of it
    /// answers the next request.
    pub fn has_unread(&mut self) -> bool {
        if self.is_reading || self.failure.is_some() {
            return true;
        }
        if self.consumed < self.inbound.len() && self.feed().is_err() {
            return true;
        }
        self.consumed < self.inbound.len() || self.records.is_mid_record() || self.has_reader_news()
    }

    /// Whether a reader would get anything but `WouldBlock`.
    fn has_reader_news(&self) -> bool {
        let mut s = self.shared.borrow_mut();
        !matches!(s.conn.reader().fill_buf(), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Hand buffered ciphertext to rustls until it yields plaintext or the buffer is empty,
    /// then send what processing produced for the peer (alerts, KeyUpdate answers).
    fn feed(&mut self) -> io::Result<()> {
        let mut s = self.shared.borrow_mut();
        let res = loop {
            if self.consumed == self.inbound.len() {
                break Ok(());
            }
            match hand_to_rustls(
                &mut s.conn,
                &self.inbound,
                &mut self.consumed,
                &mut self.records,
            ) {
                // Only after close_notify: rustls takes nothing more, and nothing more counts.
                Ok(0) => {
                    self.consumed = self.inbound.len();
                    break Ok(());
                }
                Ok(_) => {}
                Err(e) => break Err(e),
            }
            match s.conn.process_new_packets() {
                Ok(state) if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() => {
                    break Ok(())
                }
                Ok(_) => {}
                Err(e) => {
                    self.failure = Some(e.clone());
                    break Err(tls_error(e));
                }
            }
        };
        s.push_nonblocking();
        res
    }

    async fn read_inner<T: IoBufMut>(
        &mut self,
        mut buf: T,
        cancel: Option<&CancelHandle>,
    ) -> BufResult<usize, T> {
        let len = buf.bytes_total();
        if len == 0 {
            return (Ok(0), buf);
        }
        if let Err(e) = self.ready(cancel).await {
            return (Err(e), buf);
        }
        let dst = buf.write_ptr();
        // SAFETY: `IoBufMut` promises `write_ptr()` is valid for `bytes_total()` bytes.
        let res = unsafe { copy_plaintext(&mut self.shared.borrow_mut().conn, dst, len) };
        if let Ok(n) = res {
            // SAFETY: `copy_plaintext` initialized the first `n` bytes.
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }

    async fn readv_inner<T: IoVecBufMut>(
        &mut self,
        mut buf: T,
        cancel: Option<&CancelHandle>,
    ) -> BufResult<usize, T> {
        let iovecs = buf.write_iovec_ptr();
        let count = buf.write_iovec_len();
        // SAFETY (both): `IoVecBufMut` promises `count` valid iovecs at `iovecs`, each
        // describing writable memory that stays put while the runtime (here: this future)
        // owns `buf`.
        let iovec = |i: usize| unsafe { *iovecs.add(i) };
        if (0..count).all(|i| iovec(i).iov_len == 0) {
            return (Ok(0), buf);
        }
        if let Err(e) = self.ready(cancel).await {
            return (Err(e), buf);
        }
        let mut total = 0;
        let mut res = Ok(());
        {
            let mut s = self.shared.borrow_mut();
            for iov in (0..count).map(iovec).filter(|iov| iov.iov_len > 0) {
                // SAFETY: see above.
                match unsafe { copy_plaintext(&mut s.conn, iov.iov_base.cast(), iov.iov_len) } {
                    Ok(n) => {
                        total += n;
                        if n < iov.iov_len {
                            break;
                        }
                    }
                    // Nothing at all: the reader's answer (an end or an error). Later
                    // parts: what the earlier parts got is the answer.
                    Err(e) => {
                        if total == 0 {
                            res = Err(e);
                        }
                        break;
                    }
                }
            }
        }
        if let Err(e) = res {
            return (Err(e), buf);
        }
        // SAFETY: the first `total` bytes across the iovecs, in order, were written.
        unsafe { buf.set_init(total) };
        (Ok(total), buf)
    }
}

impl<C, SD> AsyncReadRent for TlsRead<C>
where
    C: DerefMut<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        self.read_inner(buf, None).await
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        self.readv_inner(buf, None).await
    }
}

impl<C, SD> CancelableAsyncReadRent for TlsRead<C>
where
    C: DerefMut<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    async fn cancelable_read<T: IoBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        self.read_inner(buf, Some(&c)).await
    }

    async fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        self.readv_inner(buf, Some(&c)).await
    }
}

impl<C> TlsWrite<C> {
    /// What the handshake settled.
    pub fn info(&self) -> &TlsInfo {
        &self.info
    }

    /// Ciphertext committed by earlier writes (or produced by the read side) that the
    /// kernel has not taken yet: non-zero after a write or flush was stopped mid-send. It
    /// goes out first on the next write, flush or shutdown (or a read's opportunistic send).
    pub fn queued_bytes(&self) -> usize {
        self.shared
            .borrow()
            .sender
            .as_ref()
            .map_or(0, Sender::queued)
    }

    /// Bytes handed to the kernel over the connection's life, the handshake's and those
    /// the read half sent included: never more than the truth. `None` while a write is in
    /// progress, or after one was dropped.
    pub fn handed(&self) -> Option<u64> {
        self.shared.borrow().sender.as_ref().map(|s| s.handed)
    }
}

impl<C, SD> TlsWrite<C>
where
    C: DerefMut<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    /// Take the send side for one operation.
    fn take_sender(&self) -> io::Result<Sender> {
        let mut s = self.shared.borrow_mut();
        if let Some(errno) = s.send_error {
            return Err(io::Error::from_raw_os_error(errno));
        }
        s.sender.take().ok_or_else(|| {
            io::Error::other(
                "an earlier TLS write was dropped while in flight: the stream is unusable",
            )
        })
    }

    fn put_sender(&self, sender: Sender) {
        self.shared.borrow_mut().sender = Some(sender);
    }

    /// Send what is queued, let `encrypt` commit plaintext, send its records. `Ok(n)` once
    /// the `n` bytes `encrypt` took are committed (see the module docs for stops) and
    /// sent, or once any of their records left before the socket failed: the peer may
    /// have part of them, so they are not reported as never written (a caller deciding
    /// whether a request may be resent relies on that); the failure is kept for the next
    /// operation.
    async fn write_with(
        &mut self,
        cancel: Option<&CancelHandle>,
        encrypt: impl FnOnce(&mut ConnectionCommon<SD>) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut sender = self.take_sender()?;
        let res = async {
            sender.send_all(&self.shared, cancel).await?;
            let (n, sent_before) = {
                let mut s = self.shared.borrow_mut();
                if s.is_closing {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "TLS write after shutdown",
                    ));
                }
                let n = encrypt(&mut s.conn)?;
                sender.take_records(&mut s.conn)?;
                (n, sender.sent)
            };
            match sender.send_all(&self.shared, cancel).await {
                Err(e) if !is_cancelled(&e) => {
                    // The records stay queued: a later write must not send them ahead of
                    // (or as well as) a retry of the same bytes. The stream is done.
                    self.shared.borrow_mut().send_error =
                        Some(e.raw_os_error().unwrap_or(libc::EPIPE));
                    if sender.sent == sent_before {
                        Err(e)
                    } else {
                        Ok(n)
                    }
                }
                _ => Ok(n),
            }
        }
        .await;
        self.put_sender(sender);
        res
    }

    async fn flush_inner(&mut self, cancel: Option<&CancelHandle>) -> io::Result<()> {
        let mut sender = self.take_sender()?;
        let res = sender.send_all(&self.shared, cancel).await;
        self.put_sender(sender);
        res
    }

    async fn shutdown_inner(&mut self, cancel: Option<&CancelHandle>) -> io::Result<()> {
        let mut sender = self.take_sender()?;
        let res = async {
            {
                let mut s = self.shared.borrow_mut();
                if !s.is_closing {
                    s.is_closing = true;
                    s.conn.send_close_notify();
                }
            }
            sender.send_all(&self.shared, cancel).await?;
            sender.tcp.shutdown().await
        }
        .await;
        self.put_sender(sender);
        res
    }

    async fn write_inner<T: IoBuf>(
        &mut self,
        buf: T,
        cancel: Option<&CancelHandle>,
    ) -> BufResult<usize, T> {
        let bytes = init_bytes(&buf);
        let res = if bytes.is_empty() {
            Ok(0)
        } else {
            self.write_with(cancel, |conn| conn.writer().write(bytes))
                .await
        };
        (res, buf)
    }

    async fn writev_inner<T: IoVecBuf>(
        &mut self,
        buf: T,
        cancel: Option<&CancelHandle>,
    ) -> BufResult<usize, T> {
        if iovec_parts(&buf).all(<[u8]>::is_empty) {
            return (Ok(0), buf);
        }
        let res = self
            .write_with(cancel, |conn| {
                let mut total = 0;
                for part in iovec_parts(&buf) {
                    match conn.writer().write(part) {
                        Ok(n) => {
                            total += n;
                            if n < part.len() {
                                break;
                            }
                        }
                        // What earlier parts committed is the answer; the error comes back
                        // on the next call.
                        Err(_) if total > 0 => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(total)
            })
            .await;
        (res, buf)
    }
}

impl<C, SD> AsyncWriteRent for TlsWrite<C>
where
    C: DerefMut<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    /// Encrypt and send up to 64 KiB of `buf`; `Ok(n)` once its records are in the kernel.
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        self.write_inner(buf, None).await
    }

    async fn writev<T: IoVecBuf>(&mut self, buf_vec: T) -> BufResult<usize, T> {
        self.writev_inner(buf_vec, None).await
    }

    /// Send every queued record.
    async fn flush(&mut self) -> io::Result<()> {
        self.flush_inner(None).await
    }

    /// Send `close_notify` (after every queued record), then shut the TCP write side.
    async fn shutdown(&mut self) -> io::Result<()> {
        self.shutdown_inner(None).await
    }
}

impl<C, SD> CancelableAsyncWriteRent for TlsWrite<C>
where
    C: DerefMut<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    async fn cancelable_write<T: IoBuf>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
        self.write_inner(buf, Some(&c)).await
    }

    async fn cancelable_writev<T: IoVecBuf>(
        &mut self,
        buf_vec: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        self.writev_inner(buf_vec, Some(&c)).await
    }

    async fn cancelable_flush(&mut self, c: CancelHandle) -> io::Result<()> {
        self.flush_inner(Some(&c)).await
    }

    async fn cancelable_shutdown(&mut self, c: CancelHandle) -> io::Result<()> {
        self.shutdown_inner(Some(&c)).await
    }
}
