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
//!   a TLS side gets `close_notify` (within [`FINISH_TIME`]).
//! - The worker's drain deadline passes: it ends (the stop handle fires), as a cut: the
//!   receiver of each direction still open is reset.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncWriteRent, CancelHandle, CancelableAsyncReadRent};

use super::io::write_range;
use super::stream::{Reader, Writer};
use super::timer::Timer;

/// Both halves of one side of a tunnel.
pub type Halves = (Reader, Writer);

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

/// Copy `src` to `dst` until `src` closes (then half-close `dst`), noting activity.
async fn flow(
    src: &mut Reader,
    dst: &mut Writer,
    active: &Cell<Instant>,
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
        // A write that stalls for the whole idle time ends the tunnel through the idle
        // check, which drops this future.
        let (res, _) = write_range(dst, &mut buf, 0, n, Duration::from_secs(86_400)).await;
        if res.is_err() {
            return Flow::Error;
        }
        buf.clear();
    }
}

/// Relay both ways until the tunnel ends (see the module docs).
pub async fn run(client: Halves, upstream: Halves, opts: TunnelOptions) -> TunnelEnd {
    let (mut client_read, mut client_write) = client;
    let (mut upstream_read, mut upstream_write) = upstream;
    let end = relay(
        (&mut client_read, &mut client_write),
        (&mut upstream_read, &mut upstream_write),
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
    (client_read, client_write): (&mut Reader, &mut Writer),
    (upstream_read, upstream_write): (&mut Reader, &mut Writer),
    opts: &TunnelOptions,
) -> TunnelEnd {
    let active = Cell::new(Instant::now());
    let mut up = pin!(flow(client_read, upstream_write, &active, &opts.stop));
    let mut down = pin!(flow(upstream_read, client_write, &active, &opts.stop));
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
                return TunnelEnd::Idle;
            }
        }
        let idle_at = active.get() + opts.idle;
        let due = grace_until.map_or(idle_at, |g| g.min(idle_at));
        timer.reset(due.max(now));
    }
}
