//! Tunnelling after `101 Switching Protocols` (WebSocket and other upgrades).
//!
//! Only a 101 from the upstream switches a connection to raw bytes; an `Upgrade` request
//! that gets any other answer stays HTTP (an early switch is how CVE-2026-2833 desynced
//! Pingora). Once switched, bytes flow both ways through one buffer per direction.
//!
//! # How a tunnel ends
//! - One side closes its sending direction (FIN): the close is passed on (the other side
//!   gets a FIN after the last byte), and the other direction gets [`HALF_CLOSE_GRACE`]
//!   (or the idle timeout, if shorter) to finish too; then the tunnel ends, and the
//!   receiver of the direction still open is reset: its stream was cut, and a FIN would
//!   pass for its end.
//! - A reset or error on either side ends it at once.
//! - No byte in either direction for `idle`: it ends (`timeouts.tunnel_idle_ms`), cleanly:
//!   a TLS side gets `close_notify` (within [`FINISH_TIME`]). Bytes read or written count,
//!   and so do bytes a slow receiver takes while a write waits (its TCP acknowledged them).
//! - The worker's drain deadline passes: it ends (the stop handle fires), as a cut: the
//!   receiver of each direction still open is reset.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::os::fd::RawFd;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncWriteRent, CancelHandle, CancelableAsyncReadRent};

use super::stream::{Reader, Writer};
use super::timer::Timer;
use crate::upstream::pool::acked_bytes;

/// Both halves of one side of a tunnel, and its socket (whose count of acknowledged bytes
/// tells a slow receiver from a stalled one).
pub type Halves = (Reader, Writer, RawFd);

/// How long the second direction may go on once the first has closed.
pub const HALF_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Longest wait for a TLS side to take its `close_notify` at an idle end.
pub const FINISH_TIME: Duration = Duration::from_secs(1);

/// Buffer per direction. Chosen by measurement (README, "Tunnels"): 64 KiB moves a bulk
/// stream with a sixteenth of the reads and writes of a 4 KiB copy.
pub const TUNNEL_BUFFER_BYTES: usize = 64 * 1024;

/// Limits of one tunnel.
pub struct TunnelOptions {
    /// End after this long without a byte in either direction.
    pub idle: Duration,
    /// Fires when the worker's drain deadline passes.
    pub stop: CancelHandle,
}

/// Why a tunnel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Both directions closed cleanly.
    Closed,
    /// One side closed and the other did not follow within the grace period.
    HalfClosed {
        /// The direction still open (cut) was the one towards the client.
        toward_client: bool,
    },
    /// A read or write failed (reset).
    Error,
    /// No traffic for the idle timeout.
    Idle,
    /// The worker's drain deadline.
    Stopped {
        /// The direction towards the client was still open (cut).
        toward_client: bool,
        /// The direction towards the upstream was still open (cut).
        toward_upstream: bool,
    },
}

/// How one direction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// Its source closed; the close was passed on.
    Eof,
    /// A read or write failed.
    Error,
    /// Stopped through the stop handle.
    Stopped,
}

/// Copy `src` to `dst` until `src` closes (then half-close `dst`), noting activity and
/// whether a write is under way.
async fn flow(
    src: &mut Reader,
    dst: &mut Writer,
    active: &Cell<Instant>,
    writing: &Cell<bool>,
    stop: &CancelHandle,
) -> Flow {
    let mut buf = Vec::with_capacity(TUNNEL_BUFFER_BYTES);
    loop {
        let (res, slice) = src
            .cancelable_read(buf.slice_mut(0..TUNNEL_BUFFER_BYTES), stop.clone())
            .await;
        buf = slice.into_inner();
        let n = match res {
            Ok(0) => {
                let _ = dst.shutdown().await;
                return Flow::Eof;
            }
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => return Flow::Stopped,
            Err(_) => return Flow::Error,
        };
        active.set(Instant::now());
        // A write that takes some bytes is activity too. One that waits for the whole idle
        // time while its receiver takes nothing ends the tunnel through the idle check,
        // which drops this future.
        writing.set(true);
        let mut pos = 0;
        while pos < n {
            let (res, slice) = dst.write(buf.slice(pos..n)).await;
            buf = slice.into_inner();
            match res {
                Ok(0) | Err(_) => return Flow::Error,
                Ok(k) => pos += k,
            }
            active.set(Instant::now());
        }
        writing.set(false);
        buf.clear();
    }
}

/// Relay both ways until the tunnel ends (see the module docs).
pub async fn run(client: Halves, upstream: Halves, opts: TunnelOptions) -> TunnelEnd {
    let (mut client_read, mut client_write, client_fd) = client;
    let (mut upstream_read, mut upstream_write, upstream_fd) = upstream;
    let end = relay(
        (&mut client_read, &mut client_write, client_fd),
        (&mut upstream_read, &mut upstream_write, upstream_fd),
        &opts,
    )
    .await;
    // A reset on one side is passed on as a reset (RST, no FIN first), and a direction
    // cut at the end of the grace or at the drain deadline ends the same way for its
    // receiver: a clean close would let a cut stream pass for a whole one. (The side whose
    // stream ended whole has its FIN and closes as usual.)
    match end {
        TunnelEnd::Error => {
            super::stream::reset(client_read, client_write);
            super::stream::reset(upstream_read, upstream_write);
        }
        TunnelEnd::HalfClosed {
            toward_client: true,
        } => super::stream::reset(client_read, client_write),
        TunnelEnd::HalfClosed {
            toward_client: false,
        } => super::stream::reset(upstream_read, upstream_write),
        TunnelEnd::Stopped {
            toward_client,
            toward_upstream,
        } => {
            if toward_client {
                super::stream::reset(client_read, client_write);
            }
            if toward_upstream {
                super::stream::reset(upstream_read, upstream_write);
            }
        }
        // Nothing was in flight: both sides are told of a clean end, as the close's FIN
        // tells a plain TCP side (a write that stalled left its TLS side unable to).
        TunnelEnd::Idle => {
            let both = async { monoio::join!(client_write.finish(), upstream_write.finish()) };
            let _ = super::timer::timeout(FINISH_TIME, both).await;
        }
        _ => {}
    }
    end
}

async fn relay(
    (client_read, client_write, client_fd): (&mut Reader, &mut Writer, RawFd),
    (upstream_read, upstream_write, upstream_fd): (&mut Reader, &mut Writer, RawFd),
    opts: &TunnelOptions,
) -> TunnelEnd {
    let active = Cell::new(Instant::now());
    let (up_writing, down_writing) = (Cell::new(false), Cell::new(false));
    let mut up = pin!(flow(
        client_read,
        upstream_write,
        &active,
        &up_writing,
        &opts.stop
    ));
    let mut down = pin!(flow(
        upstream_read,
        client_write,
        &active,
        &down_writing,
        &opts.stop
    ));
    // Each direction's count of bytes its receiver acknowledged, when last looked at.
    let (mut up_acked, mut down_acked) = (None, None);
    let mut up_done: Option<Flow> = None;
    let mut down_done: Option<Flow> = None;
    let mut grace_until: Option<Instant> = None;
    let mut timer = Timer::after(opts.idle);
    loop {
        let woke_by_timer = poll_fn(|cx| {
            let mut progressed = false;
            if up_done.is_none() {
                if let Poll::Ready(f) = up.as_mut().poll(cx) {
                    up_done = Some(f);
                    progressed = true;
                }
            }
            if down_done.is_none() {
                if let Poll::Ready(f) = down.as_mut().poll(cx) {
                    down_done = Some(f);
                    progressed = true;
                }
            }
            if progressed {
                return Poll::Ready(false);
            }
            if timer.poll_elapsed(cx).is_ready() {
                return Poll::Ready(true);
            }
            Poll::Pending
        })
        .await;
        match (up_done, down_done) {
            (Some(Flow::Stopped), _) | (_, Some(Flow::Stopped)) => {
                return TunnelEnd::Stopped {
                    toward_client: down_done != Some(Flow::Eof),
                    toward_upstream: up_done != Some(Flow::Eof),
                }
            }
            (Some(Flow::Error), _) | (_, Some(Flow::Error)) => return TunnelEnd::Error,
            (Some(Flow::Eof), Some(Flow::Eof)) => return TunnelEnd::Closed,
            (Some(_), None) | (None, Some(_)) if grace_until.is_none() => {
                grace_until = Some(Instant::now() + HALF_CLOSE_GRACE.min(opts.idle));
            }
            _ => {}
        }
        let now = Instant::now();
        if woke_by_timer {
            if grace_until.is_some_and(|g| now >= g) {
                return TunnelEnd::HalfClosed {
                    toward_client: down_done.is_none(),
                };
            }
            if now.saturating_duration_since(active.get()) >= opts.idle {
                // A write to a receiver that reads slowly waits until the socket has room
                // again, which can take longer than the idle time while bytes do move: the
                // kernel's count of acknowledged bytes tells (looked at only here, so a
                // write that waits from before the first look gets one more idle time).
                let up_moved =
                    up_done.is_none() && up_writing.get() && moved(upstream_fd, &mut up_acked);
                let down_moved =
                    down_done.is_none() && down_writing.get() && moved(client_fd, &mut down_acked);
                if !(up_moved || down_moved) {
                    return TunnelEnd::Idle;
                }
                active.set(now);
            }
        }
        let idle_at = active.get() + opts.idle;
        let due = grace_until.map_or(idle_at, |g| g.min(idle_at));
        timer.reset(due.max(now));
    }
}

/// Whether the peer of `fd` acknowledged bytes since `seen` (a first look counts as a yes);
/// `seen` is updated.
fn moved(fd: RawFd, seen: &mut Option<u64>) -> bool {
    let acked = acked_bytes(fd);
    let moved = acked.is_some() && acked != *seen;
    *seen = acked;
    moved
}
