//! Relaying a message body from one socket to another, framing-aware.
//!
//! Three framings: a known length, chunked (decoded only to find the end; bytes are
//! forwarded as sent), and until-close. Bodies (or chunk data) of at least the splice
//! threshold move with `splice`; smaller ones are copied through the connection's
//! buffer. Reads never run past the end of the message on a length-delimited body; on a
//! chunked body the bytes after the end (a pipelined request, or junk from an upstream)
//! stay in the buffer for the caller to judge.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use monoio::net::TcpStream;

use super::io::{read_some, write_range, IoFail};
use super::splice::{splice_exact, PipePair, SpliceFail};
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

/// Timeouts and splice policy of one relay.
pub struct RelayOptions<'a> {
    /// Longest pause reading the source.
    pub read_timeout: Duration,
    /// Longest pause writing the destination.
    pub write_timeout: Duration,
    /// Splice runs of at least this many bytes.
    pub splice_threshold: u64,
    /// The worker's spare pipes.
    pub pipes: &'a RefCell<Vec<PipePair>>,
    /// Counter of bytes moved by splice.
    pub spliced: &'a Cell<u64>,
}

impl RelayOptions<'_> {
    async fn splice(
        &self,
        src: &mut TcpStream,
        dst: &mut TcpStream,
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
        self.pipes.borrow_mut().push(pipe);
        Ok(())
    }
}

/// Move exactly `len` more bytes from `src` to `dst`. `buf` must be empty on entry
/// (everything before has been relayed) and is empty on return.
pub async fn relay_length(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut len: u64,
    opts: &RelayOptions<'_>,
) -> Result<(), RelayFail> {
    debug_assert!(buf.is_empty());
    if len >= opts.splice_threshold {
        return opts.splice(src, dst, len).await;
    }
    while len > 0 {
        let max = len.min(buf.capacity() as u64) as usize;
        let n = read_some(src, buf, max, opts.read_timeout)
            .await
            .map_err(RelayFail::Read)?;
        if n == 0 {
            return Err(RelayFail::Read(IoFail::Closed));
        }
        let (res, _) = write_range(dst, buf, 0, n, opts.write_timeout).await;
        res.map_err(RelayFail::Write)?;
        buf.clear();
        len -= n as u64;
    }
    Ok(())
}

/// Continue a chunked body whose decoder has consumed everything before. `buf` must be
/// empty on entry; on return it holds the bytes read past the end of the body.
pub async fn relay_chunked(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    buf: &mut Vec<u8>,
    decoder: &mut ChunkedDecoder,
    opts: &RelayOptions<'_>,
) -> Result<(), RelayFail> {
    debug_assert!(buf.is_empty());
    while !decoder.is_done() {
        let data = decoder.data_remaining();
        if data >= opts.splice_threshold {
            opts.splice(src, dst, data).await?;
            decoder.skip_data(data);
            continue;
        }
        let cap = buf.capacity();
        let n = read_some(src, buf, cap, opts.read_timeout)
            .await
            .map_err(RelayFail::Read)?;
        if n == 0 {
            return Err(RelayFail::Read(IoFail::Closed));
        }
        let used = decoder.feed(buf, &mut |_| {}).map_err(RelayFail::Framing)?;
        let (res, _) = write_range(dst, buf, 0, used, opts.write_timeout).await;
        res.map_err(RelayFail::Write)?;
        buf.drain(..used);
        if !decoder.is_done() {
            debug_assert!(buf.is_empty());
        }
    }
    Ok(())
}

/// Copy until `src` closes. `buf` must be empty on entry.
pub async fn relay_until_close(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    buf: &mut Vec<u8>,
    opts: &RelayOptions<'_>,
) -> Result<(), RelayFail> {
    loop {
        let cap = buf.capacity();
        let n = read_some(src, buf, cap, opts.read_timeout)
            .await
            .map_err(RelayFail::Read)?;
        if n == 0 {
            return Ok(());
        }
        let (res, _) = write_range(dst, buf, 0, n, opts.write_timeout).await;
        res.map_err(RelayFail::Write)?;
        buf.clear();
    }
}
