//! Timed reads and writes on owned buffers (monoio's rent model).
//!
//! monoio operations take a buffer by value and hand it back with the result, so the
//! kernel can own it while io_uring works. These helpers keep a `&mut Vec<u8>` interface:
//! they move the buffer out, run the operation under a timeout, and put it back.
//!
//! Two kinds of helpers:
//! - plain ([`read_some`], [`write_range`]): if the timeout fires, the operation is dropped
//!   (monoio cancels it) and the buffer goes with it: the caller's `Vec` is left empty.
//!   Used where a timeout closes the connection anyway.
//! - stoppable ([`read_some_stoppable`], [`send_range`]): the operation is tied to a
//!   [`Stopper`]; on a timeout, or when someone else fires the stopper, the operation is
//!   cancelled and *awaited*, so the buffer always comes back with exactly what was
//!   transferred. Used for request bytes that a retry may send again and for client reads
//!   whose position in the stream must stay known.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent, CancelableAsyncWriteRent,
    Canceller,
};
use monoio::BufResult;

use super::stream::Writer;
use super::timer::{self, Timer};

/// How a timed I/O operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoFail {
    /// The timeout elapsed.
    Timeout,
    /// The peer closed (read returned 0 where bytes were required, or a write took none).
    Closed,
    /// The operation was stopped through its [`Stopper`].
    Stopped,
    /// Any other I/O error (reset, broken pipe, ...).
    Error,
}

impl From<std::io::Error> for IoFail {
    fn from(e: std::io::Error) -> Self {
        if e.raw_os_error() == Some(libc::ECANCELED) {
            IoFail::Stopped
        } else {
            IoFail::Error
        }
    }
}

/// Stops the operations tied to it. One per actor (e.g. the request sender of a client
/// connection), so firing it never touches another actor's operations.
///
/// Once fired, every operation tied to it — those in flight and those started later —
/// ends with [`IoFail::Stopped`] until [`Stopper::reset`], so an actor that was between two
/// operations when it was stopped cannot start another one.
#[derive(Default)]
pub struct Stopper {
    live: RefCell<Canceller>,
    fired: RefCell<Option<CancelHandle>>,
}

impl Stopper {
    /// A stopper with nothing tied to it.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle to tie an operation to this stopper.
    pub fn handle(&self) -> CancelHandle {
        match &*self.fired.borrow() {
            Some(fired) => fired.clone(),
            None => self.live.borrow().handle(),
        }
    }

    /// Cancel every operation tied so far, and every one started before the next reset.
    pub fn fire(&self) {
        if self.fired.borrow().is_some() {
            return;
        }
        let fired = self.live.borrow().handle();
        let old = self.live.take();
        *self.live.borrow_mut() = old.cancel();
        *self.fired.borrow_mut() = Some(fired);
    }

    /// Whether it has fired since the last reset.
    pub fn is_fired(&self) -> bool {
        self.fired.borrow().is_some()
    }

    /// Let operations run again.
    pub fn reset(&self) {
        self.fired.borrow_mut().take();
    }
}

/// Await `op` for at most `timeout`; past it, fire `stop` and await the cancelled
/// operation so its buffer comes back. The flag says whether it timed out. (The caller
/// pins the operation: taken by value, it would be held twice in this future.)
async fn stoppable<T, F: Future<Output = BufResult<usize, T>>>(
    mut op: Pin<&mut F>,
    timeout: Duration,
    stop: &Stopper,
) -> (BufResult<usize, T>, bool) {
    let mut timer = Timer::after(timeout);
    let first = poll_fn(|cx| {
        if let Poll::Ready(r) = op.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        if timer.poll_elapsed(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    match first {
        Some(r) => (r, false),
        None => {
            stop.fire();
            (op.await, true)
        }
    }
}

/// Read at most `max` more bytes, appended after `buf.len()`. Returns the count (0 = EOF).
/// The caller guarantees spare capacity. On a timeout the buffer is lost (left empty).
pub async fn read_some<R: AsyncReadRent>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
    timeout: Duration,
) -> Result<usize, IoFail> {
    let len = buf.len();
    let end = buf.capacity().min(len.saturating_add(max));
    debug_assert!(end > len, "read_some needs spare capacity");
    let owned = std::mem::take(buf);
    match timer::timeout(timeout, r.read(owned.slice_mut(len..end))).await {
        Ok((res, slice)) => {
            *buf = slice.into_inner();
            Ok(res?)
        }
        Err(_) => Err(IoFail::Timeout),
    }
}

/// [`read_some`] tied to `stop`: the buffer always comes back, with whatever was read.
pub async fn read_some_stoppable<R: CancelableAsyncReadRent>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
    timeout: Duration,
    stop: &Stopper,
) -> Result<usize, IoFail> {
    let len = buf.len();
    let end = buf.capacity().min(len.saturating_add(max));
    debug_assert!(end > len, "read_some needs spare capacity");
    let owned = std::mem::take(buf);
    let op = pin!(r.cancelable_read(owned.slice_mut(len..end), stop.handle()));
    let ((res, slice), timed_out) = stoppable(op, timeout, stop).await;
    *buf = slice.into_inner();
    match res {
        Ok(n) => Ok(n),
        Err(_) if timed_out => Err(IoFail::Timeout),
        Err(e) => Err(e.into()),
    }
}

/// Write `buf[start..end]` entirely. Returns the result and how many bytes the kernel
/// accepted. On a timeout the buffer is lost (left empty).
pub async fn write_range<W: AsyncWriteRent>(
    w: &mut W,
    buf: &mut Vec<u8>,
    start: usize,
    end: usize,
    timeout: Duration,
) -> (Result<(), IoFail>, usize) {
    let mut pos = start;
    while pos < end {
        let owned = std::mem::take(buf);
        match timer::timeout(timeout, w.write(owned.slice(pos..end))).await {
            Ok((res, slice)) => {
                *buf = slice.into_inner();
                match res {
                    Ok(0) => return (Err(IoFail::Closed), pos - start),
                    Ok(n) => pos += n,
                    Err(e) => return (Err(e.into()), pos - start),
                }
            }
            Err(_) => return (Err(IoFail::Timeout), pos - start),
        }
    }
    (Ok(()), end - start)
}

/// [`write_range`] tied to `stop`: the buffer always comes back, and the count is exact.
pub async fn send_range<W: CancelableAsyncWriteRent>(
    w: &mut W,
    buf: &mut Vec<u8>,
    start: usize,
    end: usize,
    timeout: Duration,
    stop: &Stopper,
) -> (Result<(), IoFail>, usize) {
    let mut pos = start;
    while pos < end {
        let owned = std::mem::take(buf);
        let op = pin!(w.cancelable_write(owned.slice(pos..end), stop.handle()));
        let ((res, slice), timed_out) = stoppable(op, timeout, stop).await;
        *buf = slice.into_inner();
        match res {
            Ok(0) => return (Err(IoFail::Closed), pos - start),
            Ok(n) => pos += n,
            Err(_) if timed_out => return (Err(IoFail::Timeout), pos - start),
            Err(e) => return (Err(e.into()), pos - start),
        }
    }
    (Ok(()), end - start)
}

/// Wait for the message handed to `w` eagerly to settle (see [`crate::runtime::eager`]),
/// tied to `stop` and for at most `timeout`, like [`send_range`]: the result and how many
/// bytes the kernel took. Does not force the send out: the caller waits for something
/// else that the same enter brings (an answer), or for its own timer.
pub async fn settle_eager(
    w: &mut Writer,
    timeout: Duration,
    stop: &Stopper,
) -> (Result<(), IoFail>, usize) {
    let handle = stop.handle();
    // As an operation whose "buffer" is the count the kernel took.
    let op = pin!(poll_fn(|cx| {
        w.poll_settle(cx, false, Some(&handle)).map(|s| {
            let res = s.result.map(|()| s.sent);
            (res.map_err(std::io::Error::from_raw_os_error), s.sent)
        })
    }));
    let ((res, sent), timed_out) = stoppable(op, timeout, stop).await;
    let result = match res {
        Ok(_) => Ok(()),
        Err(_) if timed_out => Err(IoFail::Timeout),
        Err(e) => Err(e.into()),
    };
    (result, sent)
}

/// Write all of `buf` (plain timeout).
pub async fn write_all<W: AsyncWriteRent>(
    w: &mut W,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(), IoFail> {
    let len = buf.len();
    write_range(w, buf, 0, len, timeout).await.0
}

/// Write a static byte string (`100 Continue`, fixed answers).
pub async fn write_static<W: AsyncWriteRent>(
    w: &mut W,
    bytes: &'static [u8],
    timeout: Duration,
) -> Result<(), IoFail> {
    let mut pos = 0;
    while pos < bytes.len() {
        match timer::timeout(timeout, w.write(&bytes[pos..])).await {
            Ok((Ok(0), _)) => return Err(IoFail::Closed),
            Ok((Ok(n), _)) => pos += n,
            Ok((Err(e), _)) => return Err(e.into()),
            Err(_) => return Err(IoFail::Timeout),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use monoio::io::Splitable;

    use super::*;
    use crate::test_runtime::{epoll as runtime, fill, pair, uring as uring_runtime};

    async fn write_timeout_keeps_the_buffer() {
        let (c, _peer) = pair().await;
        fill(c.as_raw_fd());
        let (_rd, mut wr) = c.into_split();
        let stop = Stopper::new();
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody".to_vec();
        let len = buf.len();
        let (res, n) =
            send_range(&mut wr, &mut buf, 0, len, Duration::from_millis(50), &stop).await;
        assert_eq!(res, Err(IoFail::Timeout));
        assert_eq!(n, 0, "nothing fits in a full send buffer");
        assert_eq!(
            buf, b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody",
            "the request survives"
        );
        // The plain write loses it: the reason `send_range` exists.
        let (res, _) = write_range(&mut wr, &mut buf, 0, len, Duration::from_millis(50)).await;
        assert_eq!(res, Err(IoFail::Timeout));
        assert!(buf.is_empty());
    }

    async fn a_stopped_read_hands_back_what_it_holds() {
        let (c, _peer) = pair().await;
        let (mut rd, _wr) = c.into_split();
        let stop = Stopper::new();
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"kept");
        let read = read_some_stoppable(&mut rd, &mut buf, 60, Duration::from_secs(10), &stop);
        let fire = async {
            monoio::time::sleep(Duration::from_millis(20)).await;
            stop.fire();
        };
        let (res, ()) = monoio::join!(read, fire);
        assert_eq!(res, Err(IoFail::Stopped));
        assert_eq!(buf, b"kept");
        // Fired stays fired until reset: a later operation stops at once.
        let res = read_some_stoppable(&mut rd, &mut buf, 60, Duration::from_secs(10), &stop).await;
        assert_eq!(res, Err(IoFail::Stopped));
        stop.reset();
        let res =
            read_some_stoppable(&mut rd, &mut buf, 60, Duration::from_millis(20), &stop).await;
        assert_eq!(res, Err(IoFail::Timeout));
        assert_eq!(buf, b"kept");
    }

    #[test]
    fn stoppable_io_on_epoll() {
        runtime().block_on(async {
            write_timeout_keeps_the_buffer().await;
            a_stopped_read_hands_back_what_it_holds().await;
        });
    }

    #[test]
    fn stoppable_io_on_io_uring() {
        let Some(mut rt) = uring_runtime() else {
            eprintln!("io_uring unavailable: covered by the epoll test only");
            return;
        };
        rt.block_on(async {
            write_timeout_keeps_the_buffer().await;
            a_stopped_read_hands_back_what_it_holds().await;
        });
    }
}

/// What a socket holds, as a one-byte `recv(MSG_PEEK | MSG_DONTWAIT)` sees it: nothing is
/// taken, nothing waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peeked {
    /// Nothing to read yet (`EAGAIN`): open and quiet.
    Nothing,
    /// Bytes wait.
    Bytes,
    /// The peer closed (FIN), with nothing unread.
    End,
    /// An error (a reset, or anything else).
    Error,
}

/// Peek at `fd` (see [`Peeked`]).
pub fn peek(fd: std::os::fd::RawFd) -> Peeked {
    let mut byte = 0u8;
    // SAFETY: `recv` writes at most 1 byte into `byte`, which lives for the call; the
    // caller keeps `fd` open for it.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Peeked::End,
        n if n > 0 => Peeked::Bytes,
        _ => match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Peeked::Nothing,
            _ => Peeked::Error,
        },
    }
}

/// Whether the peer of `fd` closed (FIN) or reset it, whatever it sent before that it is
/// still unread (a TLS client's `close_notify`, a pipelined request): a zero-timeout
/// `poll` for `POLLRDHUP`, nothing taken, nothing waits.
pub fn peer_closed(fd: std::os::fd::RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `poll` reads and writes the one `pollfd` it is given, which lives for the
    // call; the caller keeps `fd` open for it.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// Bytes written to `fd` that its peer has not acknowledged yet (`SIOCOUTQ`, a FIN
/// included); 0 when that cannot be told.
pub fn unacknowledged(fd: std::os::fd::RawFd) -> usize {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int into `queued`, which lives for the call;
    // the caller keeps `fd` open for it.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
    if rc == 0 {
        queued.max(0) as usize
    } else {
        0
    }
}
