//! Relaying a message body from one socket to another, framing-aware.
//!
//! Two framings end by themselves — a known length, and chunked (decoded only to find the
//! end; bytes are forwarded as sent) — and one ends with the connection (until-close).
//! Bodies (or chunk data) of at least the splice threshold move with `splice`; smaller
//! ones are copied through the connection's buffer.
//!
//! A [`BodyProgress`] says how much of the body is still to be *read* from the source, so
//! a relay that is stopped part-way (an upstream answered early) leaves behind exactly
//! what the caller needs to discard the rest of the body and keep the connection. Reads
//! never run past the end of a length-delimited body; on a chunked body the bytes read
//! after its end (a pipelined request, or junk from an upstream) stay in the buffer for the
//! caller to judge.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use monoio::io::splice::{SpliceDestination, SpliceSource};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, CancelableAsyncReadRent, CancelableAsyncWriteRent,
};

use super::io::{read_some, read_some_stoppable, send_range, write_range, IoFail, Stopper};
use super::splice::{splice_exact, PipePair, SpliceFail, SPARE_PIPES_MAX};
use super::stream::{Reader, Writer};
use crate::http::chunked::{ChunkError, ChunkedDecoder};

/// Where a relay failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayFail {
    /// Reading the source.
    Read(IoFail),
    /// Writing the destination.
    Write(IoFail),
    /// The chunked framing was invalid.
    Framing(ChunkError),
}

impl From<SpliceFail> for RelayFail {
    fn from(f: SpliceFail) -> Self {
        match f {
            SpliceFail::Source(e) => RelayFail::Read(e),
            SpliceFail::Destination(e) => RelayFail::Write(e),
        }
    }
}

/// What is left of a self-delimited body.
#[derive(Clone, Copy, Debug)]
pub enum BodyLeft {
    /// This many bytes.
    Length(u64),
    /// A chunked body, at this decoder state.
    Chunked(ChunkedDecoder),
}

/// How far a body relay got, in terms of the source stream.
#[derive(Clone, Copy, Debug)]
pub struct BodyProgress {
    /// What remains to be read from the source.
    pub left: BodyLeft,
    /// Bytes at the start of the relay buffer that belong to this message but have not
    /// been written yet (body bytes read from the source).
    pub pending: usize,
}

impl BodyProgress {
    /// Progress at the start of (the rest of) a body.
    pub fn new(left: BodyLeft) -> Self {
        Self { left, pending: 0 }
    }

    /// Whether the whole body has been read from the source.
    pub fn is_read(&self) -> bool {
        match &self.left {
            BodyLeft::Length(n) => *n == 0,
            BodyLeft::Chunked(d) => d.is_done(),
        }
    }

    /// Account for `buf`, freshly read from the source: returns how many of its bytes
    /// belong to the body (the rest follows the body).
    fn take(&mut self, buf: &[u8]) -> Result<usize, ChunkError> {
        match &mut self.left {
            BodyLeft::Length(n) => {
                let k = (*n).min(buf.len() as u64);
                *n -= k;
                Ok(k as usize)
            }
            BodyLeft::Chunked(d) => d.feed(buf, &mut |_| {}),
        }
    }

    /// A run of body bytes that can move without being looked at (all of a length, or the
    /// rest of the current chunk's data).
    fn opaque_run(&self) -> u64 {
        match &self.left {
            BodyLeft::Length(n) => *n,
            BodyLeft::Chunked(d) => d.data_remaining(),
        }
    }

    fn skip(&mut self, n: u64) {
        match &mut self.left {
            BodyLeft::Length(left) => *left -= n,
            BodyLeft::Chunked(d) => d.skip_data(n),
        }
    }
}

/// Timeouts, splice policy and (optionally) a stopper of one relay.
pub struct RelayOptions<'a> {
    /// Longest pause reading the source.
    pub read_timeout: Duration,
    /// Longest pause writing the destination.
    pub write_timeout: Duration,
    /// Splice runs of at least this many bytes (at least 1).
    pub splice_threshold: u64,
    /// The worker's spare pipes.
    pub pipes: &'a RefCell<Vec<PipePair>>,
    /// Counter of bytes moved by splice.
    pub spliced: &'a Cell<u64>,
    /// When set, reads and writes are tied to it (and hand their buffer back when
    /// stopped or timed out).
    pub stop: Option<&'a Stopper>,
    /// When set, true while a splice is in flight: a relay dropped then leaves the source
    /// at an unknown position (bytes may sit in a pipe), so its connection cannot be kept.
    pub splicing: Option<&'a Cell<bool>>,
}

impl RelayOptions<'_> {
    async fn splice(
        &self,
        src: &mut impl SpliceSource,
        dst: &mut impl SpliceDestination,
        len: u64,
    ) -> Result<(), RelayFail> {
        let pipe = self.pipes.borrow_mut().pop();
        let mut pipe = match pipe {
            Some(p) => p,
            None => PipePair::new().map_err(|_| RelayFail::Write(IoFail::Error))?,
        };
        splice_exact(
            src,
            dst,
            &mut pipe,
            len,
            self.read_timeout,
            self.write_timeout,
        )
        .await?;
        self.spliced.set(self.spliced.get() + len);
        let mut spare = self.pipes.borrow_mut();
        if spare.len() < SPARE_PIPES_MAX {
            spare.push(pipe);
        }
        Ok(())
    }

    async fn read<S: AsyncReadRent + CancelableAsyncReadRent>(
        &self,
        src: &mut S,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, RelayFail> {
        let n = match self.stop {
            Some(stop) => read_some_stoppable(src, buf, max, self.read_timeout, stop).await,
            None => read_some(src, buf, max, self.read_timeout).await,
        };
        match n.map_err(RelayFail::Read)? {
            0 => Err(RelayFail::Read(IoFail::Closed)),
            n => Ok(n),
        }
    }

    async fn write<D: AsyncWriteRent + CancelableAsyncWriteRent>(
        &self,
        dst: &mut D,
        buf: &mut Vec<u8>,
        len: usize,
    ) -> Result<(), RelayFail> {
        let (res, _) = match self.stop {
            Some(stop) => send_range(dst, buf, 0, len, self.write_timeout, stop).await,
            None => write_range(dst, buf, 0, len, self.write_timeout).await,
        };
        res.map_err(RelayFail::Write)
    }
}

/// Move the rest of a self-delimited body from `src` to `dst`. `buf` must be empty on
/// entry; on return it holds the bytes read past the end of a chunked body. Runs of at
/// least the splice threshold are spliced when both ends are plain TCP (TLS bytes must
/// pass through user space).
pub async fn relay_body(
    src: &mut Reader,
    dst: &mut Writer,
    buf: &mut Vec<u8>,
    progress: &mut BodyProgress,
    opts: &RelayOptions<'_>,
) -> Result<(), RelayFail> {
    debug_assert!(buf.is_empty());
    // An empty run (chunk framing to read) must not pass for one to splice.
    debug_assert!(opts.splice_threshold > 0);
    while !progress.is_read() {
        let run = progress.opaque_run();
        // A chunked body outside chunk data has no run: with `splice_threshold_bytes = 0`
        // it would splice nothing, over and over, never reading the chunk line.
        if run > 0 && run >= opts.splice_threshold {
            src.stop_receiving().await;
            // Stopping the receiver cannot itself be stopped, and a splice cannot be
            // stopped cleanly: a stop that came meanwhile (the upstream answered early)
            // ends the relay here rather than after the whole run.
            if opts.stop.is_some_and(Stopper::is_fired) {
                return Err(RelayFail::Read(IoFail::Stopped));
            }
            if let (Some(s), Some(d)) = (src.tcp(), dst.tcp()) {
                if let Some(flag) = opts.splicing {
                    flag.set(true);
                }
                opts.splice(s, d, run).await?;
                // Counted as written bytes are: a pooled upstream connection's
                // `Untouched` check compares this count with its server's acknowledgements.
                dst.note_spliced(run);
                progress.skip(run);
                if let Some(flag) = opts.splicing {
                    flag.set(false);
                }
                continue;
            }
        }
        let max = match progress.left {
            BodyLeft::Length(n) => n.min(buf.capacity() as u64) as usize,
            BodyLeft::Chunked(_) => buf.capacity(),
        };
        opts.read(src, buf, max).await?;
        let used = progress.take(buf).map_err(RelayFail::Framing)?;
        progress.pending = used;
        opts.write(dst, buf, used).await?;
        buf.drain(..used);
        progress.pending = 0;
        debug_assert!(progress.is_read() || buf.is_empty());
    }
    Ok(())
}

/// Read and drop the rest of a body from `src`, at most `max_bytes` of it and with no
/// pause longer than `opts.read_timeout`. On entry `buf` holds only bytes that `progress`
/// has not accounted for yet (normally none); on success it holds the bytes that followed
/// the body. False when the body could not
/// be read to its end within the bounds.
pub async fn discard_body<S: AsyncReadRent + CancelableAsyncReadRent>(
    src: &mut S,
    buf: &mut Vec<u8>,
    progress: &mut BodyProgress,
    max_bytes: u64,
    opts: &RelayOptions<'_>,
) -> bool {
    let mut budget = max_bytes;
    if buf.capacity() == 0 {
        buf.reserve(16 * 1024);
    }
    loop {
        if !buf.is_empty() {
            let Ok(used) = progress.take(buf) else {
                return false;
            };
            buf.drain(..used);
            budget = budget.saturating_sub(used as u64);
        }
        if progress.is_read() {
            return true;
        }
        if budget == 0 {
            return false;
        }
        let max = match progress.left {
            BodyLeft::Length(n) => n.min(budget).min(buf.capacity() as u64) as usize,
            BodyLeft::Chunked(_) => buf.capacity(),
        };
        if opts.read(src, buf, max).await.is_err() {
            return false;
        }
    }
}

/// Copy until `src` closes. `buf` must be empty on entry.
pub async fn relay_until_close<S, D>(
    src: &mut S,
    dst: &mut D,
    buf: &mut Vec<u8>,
    opts: &RelayOptions<'_>,
) -> Result<(), RelayFail>
where
    S: AsyncReadRent + CancelableAsyncReadRent,
    D: AsyncWriteRent + CancelableAsyncWriteRent,
{
    loop {
        let cap = buf.capacity();
        match opts.read(src, buf, cap).await {
            Ok(n) => opts.write(dst, buf, n).await?,
            Err(RelayFail::Read(IoFail::Closed)) => return Ok(()),
            Err(e) => return Err(e),
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::future::{poll_fn, Future};
    use std::os::fd::AsRawFd;
    use std::pin::Pin;
    use std::task::Poll;

    use super::*;
    use crate::test_runtime::{epoll, pair, uring};

    /// Splices running at once take a pipe each; once they are done the worker keeps at
    /// most [`SPARE_PIPES_MAX`] of them (the rest are closed, not held for good).
    async fn a_burst_of_splices_leaves_a_bounded_stack_of_pipes() {
        let pipes = RefCell::new(Vec::new());
        let spliced = Cell::new(0);
        let opts = RelayOptions {
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            splice_threshold: 1,
            pipes: &pipes,
            spliced: &spliced,
            stop: None,
            splicing: None,
        };
        let burst = SPARE_PIPES_MAX * 2;
        let (mut ends, mut peers) = (Vec::new(), Vec::new());
        for _ in 0..burst {
            let (src, src_peer) = pair().await;
            let (dst, dst_peer) = pair().await;
            ends.push((src, dst));
            peers.push((src_peer, dst_peer));
        }
        type Splice<'a> = Pin<Box<dyn Future<Output = Result<(), RelayFail>> + 'a>>;
        let mut splices: Vec<Option<Splice<'_>>> = ends
            .iter_mut()
            .map(|(src, dst)| Some(Box::pin(opts.splice(src, dst, 4)) as Splice<'_>))
            .collect();
        // Every splice starts and waits for its source: each holds a pipe.
        poll_fn(|cx| {
            for s in splices.iter_mut().flatten() {
                assert!(s.as_mut().poll(cx).is_pending(), "no bytes yet");
            }
            Poll::Ready(())
        })
        .await;
        for (src_peer, _) in &peers {
            // SAFETY: a send from a live buffer on the test's own open socket.
            let n = unsafe { libc::send(src_peer.as_raw_fd(), b"body".as_ptr().cast(), 4, 0) };
            assert_eq!(n, 4);
        }
        poll_fn(|cx| {
            for slot in &mut splices {
                if let Some(s) = slot {
                    if let Poll::Ready(r) = s.as_mut().poll(cx) {
                        assert_eq!(r, Ok(()));
                        *slot = None;
                    }
                }
            }
            if splices.iter().all(Option::is_none) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        drop(splices);
        assert_eq!(spliced.get(), 4 * burst as u64);
        assert!(
            pipes.borrow().len() <= SPARE_PIPES_MAX,
            "{} spare pipes kept after {burst} splices at once",
            pipes.borrow().len()
        );
    }

    /// Bytes a relay splices count as handed to the destination, as written ones do: a
    /// pooled upstream connection's [`Untouched`](crate::upstream::pool::Untouched) check
    /// compares its server's acknowledgements with that count, and a count short of a
    /// spliced body says the server took bytes of the next request that it never saw.
    async fn spliced_bytes_count_as_handed() {
        let pipes = RefCell::new(Vec::new());
        let spliced = Cell::new(0);
        let opts = RelayOptions {
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            splice_threshold: 1,
            pipes: &pipes,
            spliced: &spliced,
            stop: None,
            splicing: None,
        };
        let (src, src_peer) = pair().await;
        let (dst, _dst_peer) = pair().await;
        let (mut rd, _src_wr) = crate::forward::stream::plain(src);
        let (_dst_rd, mut wr) = crate::forward::stream::plain(dst);
        let body = [b'b'; 20_000];
        // SAFETY: a send from a live buffer on the test's own open socket.
        let n = unsafe { libc::send(src_peer.as_raw_fd(), body.as_ptr().cast(), body.len(), 0) };
        assert_eq!(n, body.len() as isize);
        let mut buf = Vec::with_capacity(1024);
        let mut progress = BodyProgress::new(BodyLeft::Length(body.len() as u64));
        let relayed = relay_body(&mut rd, &mut wr, &mut buf, &mut progress, &opts).await;
        assert_eq!(relayed, Ok(()));
        assert_eq!(spliced.get(), body.len() as u64, "spliced, not copied");
        assert_eq!(wr.handed(), Some(body.len() as u64));
    }

    #[test]
    fn spliced_bytes_count_as_handed_on_epoll() {
        epoll().block_on(spliced_bytes_count_as_handed());
    }

    #[test]
    fn spliced_bytes_count_as_handed_on_io_uring() {
        let Some(mut rt) = uring() else {
            eprintln!("io_uring unavailable: covered by the epoll test only");
            return;
        };
        rt.block_on(spliced_bytes_count_as_handed());
    }

    #[test]
    fn spare_pipes_are_bounded_on_epoll() {
        epoll().block_on(a_burst_of_splices_leaves_a_bounded_stack_of_pipes());
    }

    #[test]
    fn spare_pipes_are_bounded_on_io_uring() {
        let Some(mut rt) = uring() else {
            eprintln!("io_uring unavailable: covered by the epoll test only");
            return;
        };
        rt.block_on(a_burst_of_splices_leaves_a_bounded_stack_of_pipes());
    }
}
