//! Multishot receives into a provided-buffer ring (`workers.multishot`, io_uring only).
//!
//! A plain TCP reader keeps one multishot recv armed on its socket: for every arrival the
//! kernel takes a buffer from the worker's buffer ring, fills it and posts a completion —
//! no failed first attempt, no poll armed per read. Completions queue per socket until the
//! reader asks; a read copies out as many queued bytes as fit and hands each buffer back
//! to the ring at once. A read therefore never leaves a buffer with the kernel: dropping
//! it (a timeout) or stopping it loses nothing.
//!
//! monoio 0.2.4 models one completion per operation, so the SQEs are pushed and the
//! completions taken through the small escape hatch of the vendored monoio
//! (`monoio::uring_ext`; vendor/monoio/RINGGATE-PATCH.md).
//!
//! # Invariants
//! - A slot (one per multishot socket) is reused only after its last completion (one
//!   without `IORING_CQE_F_MORE`) has come back, so a completion always finds its owner.
//! - Every buffer the kernel hands out comes back to the ring exactly once: when its bytes
//!   are read, or when the reader is dropped (queued and late completions alike).
//! - Bounded: a socket holds at most [`MAX_QUEUED`] unread completions; past that its
//!   multishot is cancelled, so a client that sends faster than it is served waits in its
//!   own socket buffer (TCP back-pressure) instead of taking every buffer of the worker. A
//!   socket that finds the ring empty (`ENOBUFS`) falls back to one ordinary read.
//! - Splicing needs the socket's bytes left in the socket: [`Multi::poll_disarm`] stops the
//!   multishot, and what it had already received is read first.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll, Waker};

use io_uring::types::BufRingEntry;
use io_uring::{cqueue, opcode, types};
use monoio::uring_ext::{self, EXT_TAG};

/// Buffer group id of the worker's ring.
const BGID: u16 = 7;
/// Bytes per provided buffer.
const BUF_BYTES: usize = 2048;
/// Buffers in the ring (a power of two). Small on purpose: the ring hands buffers out in
/// turn, so the bytes the kernel and the reader touch stay in cache (1024 × 4 KiB
/// measured 10 % dearer than 128 × 2 KiB under load).
const ENTRIES: u16 = 256;
/// Unread completions a socket may hold before its multishot is stopped.
const MAX_QUEUED: usize = 16;
/// Marks the user data of cancel requests (their completions are ignored).
const CANCEL: u64 = EXT_TAG | (1 << 61);

/// The worker's provided-buffer ring: entries shared with the kernel, and the buffers.
struct Ring {
    entries: *mut BufRingEntry,
    bufs: Box<[u8]>,
    tail: u16,
}

impl Ring {
    fn new() -> io::Result<Ring> {
        let bytes = usize::from(ENTRIES) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: a fresh anonymous mapping, checked below; it is never unmapped (the ring
        // lives as long as the worker thread).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut ring = Ring {
            entries: base.cast(),
            bufs: vec![0u8; usize::from(ENTRIES) * BUF_BYTES].into_boxed_slice(),
            tail: 0,
        };
        // SAFETY: the mapping is page-aligned, holds ENTRIES entries and outlives the
        // registration (the worker's ring).
        uring_ext::with_submitter(|s| unsafe { s.register_buf_ring(base as u64, ENTRIES, BGID) })?;
        for bid in 0..ENTRIES {
            ring.give(bid);
        }
        Ok(ring)
    }

    /// Hand buffer `bid` (back) to the kernel.
    fn give(&mut self, bid: u16) {
        let i = usize::from(self.tail & (ENTRIES - 1));
        // SAFETY: entry `i` is inside the mapping; the kernel reads only entries below the
        // tail, which is published after the entry is written.
        unsafe {
            let e = &mut *self.entries.add(i);
            e.set_addr(self.bufs.as_ptr().add(usize::from(bid) * BUF_BYTES) as u64);
            e.set_len(BUF_BYTES as u32);
            e.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn buf(&self, bid: u16) -> &[u8] {
        let at = usize::from(bid) * BUF_BYTES;
        &self.bufs[at..at + BUF_BYTES]
    }
}

/// One socket's multishot state.
#[derive(Default)]
struct Slot {
    fd: RawFd,
    /// The reader still exists (false: waiting for the last completion to free the slot).
    open: bool,
    /// A multishot recv is in flight (its last completion has not come back).
    armed: bool,
    /// A cancel was pushed for the one in flight.
    cancelling: bool,
    /// The ring was empty: the next read is an ordinary one.
    starved: bool,
    /// No read waits on it (a pooled upstream connection): an arrival wakes the worker's
    /// idle watcher (see [`Multi::watch_idle`]), until [`Multi::check_out`].
    idle: bool,
    /// Completions not read yet: (result, flags).
    queue: VecDeque<(i32, u32)>,
    /// A buffer partly read: (buffer id, offset, length).
    partial: Option<(u16, u32, u32)>,
    waker: Option<Waker>,
}

impl Slot {
    /// Push this slot's multishot recv.
    fn arm(&mut self, slot: u32) -> io::Result<()> {
        let sqe = opcode::RecvMulti::new(types::Fd(self.fd), BGID)
            .build()
            .user_data(EXT_TAG | u64::from(slot));
        uring_ext::push(sqe)?;
        self.armed = true;
        Ok(())
    }

    fn has_failed(&self) -> bool {
        // An error ends the multishot: it is the last completion queued.
        self.queue.back().is_some_and(|&(res, _)| res < 0)
    }
}

struct State {
    ring: Ring,
    slots: Vec<Slot>,
    free: Vec<u32>,
    counts: Counts,
    /// The ring raises `IORING_SQ_TASKRUN` while it holds undelivered task work.
    flags_task_work: bool,
    /// Completions are posted only inside the worker's own enter (`DEFER_TASKRUN`), and
    /// reaped by it before any task runs.
    posted_in_enter: bool,
    /// The task woken by arrivals on idle sockets (see [`watch_idle_sockets`]).
    idle_watcher: Option<Waker>,
}

/// How often the bounds were met, since the worker started (for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Arrivals that found the buffer ring empty (`ENOBUFS`): the socket's next read
    /// was an ordinary one. Many mean the ring is too small for the load.
    pub ring_empty: u64,
    /// Multishots stopped because their socket held [`MAX_QUEUED`] unread buffers (a
    /// client sending ahead of its answers); each is re-armed once read.
    pub backpressure: u64,
}

/// This worker's counts (zero where multishot is off).
pub fn counts() -> Counts {
    STATE.with(|s| s.borrow().as_ref().map(|st| st.counts).unwrap_or_default())
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Whether the running kernel has multishot recv with buffer rings (Linux 6.0).
fn kernel_supports() -> bool {
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the struct it is given.
    if unsafe { libc::uname(&mut u) } != 0 {
        return false;
    }
    // SAFETY: `release` is NUL-terminated by uname.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    let mut parts = release
        .to_str()
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 0)
}

/// Set up this worker's buffer ring, so plain TCP readers made afterwards receive by
/// multishot. Call from a task of a running io_uring runtime; `flags_task_work` says the
/// ring was set up with `IORING_SETUP_TASKRUN_FLAG` (see [`Multi::check_out`]),
/// `posted_in_enter` with `IORING_SETUP_DEFER_TASKRUN` (see [`reap_if_posted_meanwhile`]).
pub fn init(flags_task_work: bool, posted_in_enter: bool) -> io::Result<()> {
    if !kernel_supports() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "multishot recv needs Linux 6.0",
        ));
    }
    let ring = Ring::new()?;
    uring_ext::set_handler(on_completion);
    STATE.with(|s| {
        *s.borrow_mut() = Some(State {
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            counts: Counts::default(),
            flags_task_work,
            posted_in_enter,
            idle_watcher: None,
        })
    });
    Ok(())
}

/// Have `watcher` woken by what arrives on sockets marked idle ([`Multi::watch_idle`]),
/// instead of the one before (`None`: no task; the old one is returned, to be woken).
/// False where this worker does not receive by multishot (nothing can be watched).
pub fn watch_idle_sockets(watcher: Option<&Waker>) -> (bool, Option<Waker>) {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let Some(st) = s.as_mut() else {
            return (false, None);
        };
        let old = match (&st.idle_watcher, watcher) {
            (Some(w), Some(new)) if w.will_wake(new) => None,
            _ => std::mem::replace(&mut st.idle_watcher, watcher.cloned()),
        };
        (true, old)
    })
}

/// Take in the completions the ring posted while tasks ran (none on a `DEFER_TASKRUN`
/// ring: there the worker's enter posts them and reaps them before any task runs). A
/// multishot may have moved a socket's bytes or end into such a completion, out of reach
/// of a `recv(MSG_PEEK)`.
pub fn reap_if_posted_meanwhile() {
    let posted_in_enter = STATE.with(|s| s.borrow().as_ref().is_none_or(|st| st.posted_in_enter));
    if !posted_in_enter {
        let _ = uring_ext::reap();
    }
}

fn on_completion(user_data: u64, res: i32, flags: u32) {
    if user_data & super::eager::TAG == super::eager::TAG {
        return super::eager::on_completion(user_data, res);
    }
    if user_data & CANCEL == CANCEL {
        return;
    }
    let slot = (user_data & u64::from(u32::MAX)) as usize;
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let Some(State {
            ring,
            slots,
            free,
            counts,
            idle_watcher,
            ..
        }) = s.as_mut()
        else {
            return;
        };
        let sl = &mut slots[slot];
        let more = cqueue::more(flags);
        if !more {
            sl.armed = false;
            sl.cancelling = false;
        }
        if !sl.open {
            if let Some(bid) = cqueue::buffer_select(flags) {
                ring.give(bid);
            }
            if !more {
                free.push(slot as u32);
            }
            return;
        }
        match res {
            // The end of a cancelled multishot is no news for the reader.
            _ if res == -libc::ECANCELED && !more => {}
            _ if res == -libc::ENOBUFS => {
                sl.starved = true;
                counts.ring_empty += 1;
            }
            _ => {
                sl.queue.push_back((res, flags));
                if more && sl.queue.len() >= MAX_QUEUED && !sl.cancelling {
                    cancel(slot as u32);
                    sl.cancelling = true;
                    counts.backpressure += 1;
                }
            }
        }
        if let Some(w) = sl.waker.take() {
            w.wake();
        } else if sl.idle {
            if let Some(w) = idle_watcher {
                w.wake_by_ref();
            }
        }
    });
}

/// Cancel every multishot still in flight and wait, at most `within`, for their last
/// completions (and for eager sends, see [`super::eager::stop`]): a socket is only closed once no request holds it, and a
/// worker's ring must not go away with requests in it (their sockets would stay open, or
/// a send could read a buffer already freed). For the end of a worker, when no connection
/// reads or writes any more.
pub async fn stop_all(within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let in_flight = STATE.with(|s| {
            let mut s = s.borrow_mut();
            let Some(st) = s.as_mut() else {
                return false;
            };
            let mut any = false;
            for (i, sl) in st.slots.iter_mut().enumerate() {
                if sl.armed {
                    any = true;
                    if !sl.cancelling {
                        cancel(i as u32);
                        sl.cancelling = true;
                    }
                }
            }
            super::eager::stop() || any
        });
        if !in_flight || std::time::Instant::now() >= deadline {
            // Have the kernel take every send still queued: once the worker's tasks are
            // dropped without a ring to enter, their sockets close at once.
            let _ = uring_ext::submit_now();
            return;
        }
        monoio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Push a cancel of slot `slot`'s multishot.
fn cancel(slot: u32) {
    let sqe = opcode::AsyncCancel::new(EXT_TAG | u64::from(slot))
        .build()
        .user_data(CANCEL);
    // A full queue is flushed by push; if even that fails the multishot runs on, bounded
    // by the ring.
    let _ = uring_ext::push(sqe);
}

/// One socket's multishot receive.
#[derive(Debug)]
pub struct Multi {
    slot: u32,
}

impl Multi {
    /// A multishot receiver for `fd`, when this worker receives by multishot.
    pub fn new(fd: RawFd) -> Option<Multi> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let st = s.as_mut()?;
            let slot = st.free.pop().unwrap_or_else(|| {
                st.slots.push(Slot::default());
                (st.slots.len() - 1) as u32
            });
            // A reused slot keeps its queue's allocation (empty: drained when freed).
            let queue = std::mem::take(&mut st.slots[slot as usize].queue);
            st.slots[slot as usize] = Slot {
                fd,
                open: true,
                queue,
                ..Slot::default()
            };
            Some(Multi { slot })
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Ring, &mut Slot) -> R) -> R {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let st = s
                .as_mut()
                .expect("a Multi exists only where the state does");
            f(&mut st.ring, &mut st.slots[self.slot as usize])
        })
    }

    /// Copy received bytes to the start of `dst`: `Ready(Some(n))` (0 = the peer closed),
    /// `Ready(None)` when the ring ran dry and this read must be an ordinary one.
    pub fn poll_read(
        &self,
        cx: &mut Context<'_>,
        dst: &mut [MaybeUninit<u8>],
    ) -> Poll<Option<io::Result<usize>>> {
        let slot = self.slot;
        let cap = dst.len();
        self.with(|ring, sl| {
            let mut copied = 0;
            loop {
                if let Some((bid, off, len)) = sl.partial {
                    let n = (cap - copied).min((len - off) as usize);
                    let src = &ring.buf(bid)[off as usize..off as usize + n];
                    // SAFETY: `u8` and `MaybeUninit<u8>` share their layout; the lengths match.
                    let src: &[MaybeUninit<u8>] = unsafe { std::mem::transmute(src) };
                    dst[copied..copied + n].copy_from_slice(src);
                    copied += n;
                    if off as usize + n == len as usize {
                        ring.give(bid);
                        sl.partial = None;
                    } else {
                        sl.partial = Some((bid, off + n as u32, len));
                    }
                }
                if copied == cap {
                    return Poll::Ready(Some(Ok(copied)));
                }
                match sl.queue.front().copied() {
                    Some((res, flags)) if res > 0 => {
                        sl.queue.pop_front();
                        let bid = cqueue::buffer_select(flags).expect("a received buffer");
                        sl.partial = Some((bid, 0, res as u32));
                    }
                    // An end or an error waits for the bytes before it to be read.
                    Some(_) if copied > 0 => return Poll::Ready(Some(Ok(copied))),
                    Some((res, flags)) => {
                        sl.queue.pop_front();
                        // (Kernels recycle the buffer of an end or an error themselves;
                        // one that names a buffer gets it back.)
                        if let Some(bid) = cqueue::buffer_select(flags) {
                            ring.give(bid);
                        }
                        return Poll::Ready(Some(if res == 0 {
                            Ok(0)
                        } else {
                            Err(io::Error::from_raw_os_error(-res))
                        }));
                    }
                    None if copied > 0 => return Poll::Ready(Some(Ok(copied))),
                    None => break,
                }
            }
            if sl.armed {
                // Waiting for the one in flight (or for a cancel to finish).
            } else if sl.starved {
                sl.starved = false;
                return Poll::Ready(None);
            } else if let Err(e) = sl.arm(slot) {
                return Poll::Ready(Some(Err(e)));
            }
            match &sl.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => sl.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
    }

    /// Stop the multishot (ready once its last completion is back): the socket's further
    /// bytes stay in the socket, for a splice. Bytes already received stay queued.
    pub fn poll_disarm(&self, cx: &mut Context<'_>) -> Poll<()> {
        let slot = self.slot;
        self.with(|_, sl| {
            if !sl.armed {
                return Poll::Ready(());
            }
            if !sl.cancelling {
                cancel(slot);
                sl.cancelling = true;
            }
            sl.waker = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    /// Mark the socket idle, no read waiting on it: what next arrives on it (bytes, an
    /// end, an error) wakes the worker's idle watcher ([`watch_idle_sockets`]). False when
    /// something arrived already. A multishot stopped for a splice is armed again (the next
    /// read would arm it anyway); one starved of buffers is left for the next read.
    pub fn watch_idle(&self) -> bool {
        let slot = self.slot;
        self.with(|_, sl| {
            if sl.partial.is_some() || !sl.queue.is_empty() {
                return false;
            }
            // A read that was dropped waiting (none is polled on an idle socket).
            sl.waker = None;
            if !sl.armed && !sl.starved && sl.arm(slot).is_err() {
                return true;
            }
            sl.idle = true;
            true
        })
    }

    /// Whether the socket's bytes are all still in the socket: nothing in flight, nothing
    /// received and unread (a splice may take them).
    pub fn is_quiet(&self) -> bool {
        self.with(|_, sl| !sl.armed && sl.partial.is_none() && sl.queue.is_empty())
    }

    /// Whether bytes (or an end, or an error) arrived that nobody has read.
    pub fn has_unread(&self) -> bool {
        self.with(|_, sl| sl.partial.is_some() || !sl.queue.is_empty())
    }

    /// Whether the socket reported an error (a reset) that nobody has read: the
    /// connection is broken, whatever was received before it.
    pub fn has_failed(&self) -> bool {
        self.with(|_, sl| sl.has_failed())
    }

    /// A watch for this socket's reset that holds no borrow of the reader (see
    /// [`ResetWatch`]).
    pub fn reset_watch(&self) -> ResetWatch {
        ResetWatch { slot: self.slot }
    }

    /// Take an idle socket out of the idle watch ([`Multi::watch_idle`]), for reuse:
    /// `None` when something arrived that nobody has read (bytes, an end, an error: not
    /// reusable); otherwise whether the ring itself vouches that the socket received
    /// nothing up to now: the multishot is armed (not being stopped) and the ring is caught
    /// up (every SQE submitted, no completion in its queue, no task work pending: the
    /// kernel turns a socket's wake-up into task work at once and flags it). `Some(false)`:
    /// that cannot be told (ask the socket).
    pub fn check_out(&self) -> Option<bool> {
        let armed = STATE.with(|s| {
            let mut s = s.borrow_mut();
            let st = s
                .as_mut()
                .expect("a Multi exists only where the state does");
            let sl = &mut st.slots[self.slot as usize];
            if sl.partial.is_some() || !sl.queue.is_empty() {
                return None;
            }
            sl.idle = false;
            Some(st.flags_task_work && sl.armed && !sl.cancelling)
        })?;
        Some(armed && uring_ext::is_caught_up())
    }
}

/// Whether a socket's multishot received an error (a reset), for a task that waits on
/// something else while another part of it may hold the reader: a client's exchange
/// waiting for the upstream's answer. It arms nothing (no SQE, no syscall): it leaves the
/// task's waker in the socket's slot, which every completion of the multishot already in
/// flight wakes. Valid while the [`Multi`] it came from lives (its slot is not reused
/// before).
#[derive(Clone, Copy, Debug)]
pub struct ResetWatch {
    slot: u32,
}

impl ResetWatch {
    /// Ready once the socket reported an error nobody has read (as [`Multi::has_failed`]).
    /// Otherwise the task is woken by the socket's next completion — bytes and an end
    /// too, which are no reset: the caller then looks again. A socket whose multishot is
    /// not in flight (stopped for a splice or at its bound, ended by a FIN, or starved of
    /// buffers) reports nothing more.
    pub fn poll_reset(&self, cx: &mut Context<'_>) -> Poll<()> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let Some(st) = s.as_mut() else {
                return Poll::Pending;
            };
            let sl = &mut st.slots[self.slot as usize];
            if sl.has_failed() {
                return Poll::Ready(());
            }
            match &sl.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => sl.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
    }
}

impl Drop for Multi {
    fn drop(&mut self) {
        let slot = self.slot;
        // (At thread exit the state may be gone already, and the ring with it.)
        let _ = STATE.try_with(|s| {
            let mut s = s.borrow_mut();
            let Some(State {
                ring, slots, free, ..
            }) = s.as_mut()
            else {
                return;
            };
            let sl = &mut slots[slot as usize];
            sl.open = false;
            sl.waker = None;
            if let Some((bid, ..)) = sl.partial.take() {
                ring.give(bid);
            }
            for (_, flags) in sl.queue.drain(..) {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    ring.give(bid);
                }
            }
            if !sl.armed {
                free.push(slot);
            } else if !sl.cancelling {
                cancel(slot);
                sl.cancelling = true;
            }
        });
    }
}
