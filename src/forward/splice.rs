//! Moving large bodies with `splice(2)`: socket → pipe → socket, no user-space copy.
//!
//! Each worker keeps a small stack of pipes (at most [`SPARE_PIPES_MAX`]). A pipe that saw
//! an error may still hold bytes, so it is closed rather than returned. Under io_uring the splices are
//! `IORING_OP_SPLICE` submissions; under the epoll driver, non-blocking `splice` calls.

use std::time::Duration;

use monoio::io::splice::{SpliceDestination, SpliceSource};
use monoio::net::unix::new_pipe;
use monoio::net::Pipe;

use super::io::IoFail;
use super::timer;

/// Bytes moved per splice call (the default pipe capacity).
pub const PIPE_CHUNK: u32 = 64 * 1024;

/// Most spare pipes a worker keeps. A burst of splices at once opens a pipe each; those
/// beyond this are closed when done rather than held for good (two descriptors and a
/// pipe's kernel memory each, counted against the open-file limit that connections need).
pub const SPARE_PIPES_MAX: usize = 32;

/// A pipe's two ends.
pub struct PipePair {
    read: Pipe,
    write: Pipe,
}

impl PipePair {
    /// A fresh pipe.
    pub fn new() -> std::io::Result<Self> {
        let (read, write) = new_pipe()?;
        Ok(Self { read, write })
    }
}

/// Which end of a splice failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpliceFail {
    /// Reading from the source socket.
    Source(IoFail),
    /// Writing to the destination socket.
    Destination(IoFail),
}

/// Move exactly `len` bytes from `src` to `dst` through `pipe`. On error the pipe may
/// hold data and must be dropped.
pub async fn splice_exact(
    src: &mut impl SpliceSource,
    dst: &mut impl SpliceDestination,
    pipe: &mut PipePair,
    mut len: u64,
    read_timeout: Duration,
    write_timeout: Duration,
) -> Result<(), SpliceFail> {
    while len > 0 {
        let want = len.min(u64::from(PIPE_CHUNK)) as u32;
        let got =
            match timer::timeout(read_timeout, src.splice_to_pipe(&mut pipe.write, want)).await {
                Ok(Ok(0)) => return Err(SpliceFail::Source(IoFail::Closed)),
                Ok(Ok(n)) => n,
                Ok(Err(_)) => return Err(SpliceFail::Source(IoFail::Error)),
                Err(_) => return Err(SpliceFail::Source(IoFail::Timeout)),
            };
        let mut left = got;
        while left > 0 {
            match timer::timeout(write_timeout, dst.splice_from_pipe(&mut pipe.read, left)).await {
                Ok(Ok(0)) => return Err(SpliceFail::Destination(IoFail::Closed)),
                Ok(Ok(n)) => left -= n,
                Ok(Err(_)) => return Err(SpliceFail::Destination(IoFail::Error)),
                Err(_) => return Err(SpliceFail::Destination(IoFail::Timeout)),
            }
        }
        len -= u64::from(got);
    }
    Ok(())
}
