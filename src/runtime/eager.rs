//! Eager sends: a small message handed to the socket by the ring's next enter, with no
//! completion when it all went out (io_uring with `DEFER_TASKRUN`, multishot receiving).
//!
//! An awaited send costs a round trip of its own: the enter that submits it returns at
//! once with its completion (the send ran inline), the task runs again, and only the next
//! enter sleeps. An eager send is pushed with `IOSQE_CQE_SKIP_SUCCESS` and
//! `MSG_DONTWAIT | MSG_WAITALL`, and the caller goes on: the send rides on the enter that
//! also waits for what comes next (the upstream's answer, the client's next request).
//! On a `DEFER_TASKRUN` ring the kernel issues it inside that enter, on the spot:
//! - all of it taken: no completion at all;
//! - the socket full (`EAGAIN`), a short send (the count taken) or an error: a completion,
//!   posted before the enter returns (a failed request loses `CQE_SKIP_SUCCESS`, and
//!   `MSG_DONTWAIT` keeps the kernel from waiting on the socket in its place).
//!
//! So once the driver has seen the submission queue empty after an enter (and no
//! completion overflowing; [`uring_ext::drains`]), a send with no completion went out
//! whole. A failed one is continued by an ordinary send of the rest (the kernel waits for
//! room), pushed by the completion handler itself, so nothing stalls when no task looks.
//!
//! # Invariants
//! - The bytes live in a buffer the slot holds (copied in, at most [`EAGER_MAX`]),
//!   untouched until the send is settled: the caller's buffers are free at once. A settled
//!   send's buffer goes back to the worker's spares (taken sends are noticed at the next
//!   eager send of any socket), so an idle keep-alive connection holds none: buffers are
//!   as many as sends in flight at once, not as connections.
//! - One send in flight per socket; the writer settles it before any other write,
//!   shutdown or splice, so bytes keep their order.
//! - An SQE not yet taken names the socket by number: a writer dropped before that makes
//!   the kernel take it at once ([`uring_ext::submit_now`]) — its socket's close is pushed
//!   behind it anyway. A slot is reused only when nothing of it is left with the kernel.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::task::{Context, Poll, Waker};

use io_uring::{opcode, squeue, types};
use monoio::io::CancelHandle;
use monoio::uring_ext::{self, EXT_TAG};

/// Marks the user data of eager sends and their continuations.
pub const TAG: u64 = EXT_TAG | (1 << 60);
/// Marks the user data of cancels of continuations (their completions are ignored).
const CANCEL: u64 = TAG | (1 << 59);
/// Generations fit below the tag bits.
const GEN_MASK: u32 = (1 << 27) - 1;
/// The largest message sent eagerly (it is copied into the slot).
pub const EAGER_MAX: usize = 4096;
/// Flags of the eager send: never wait for room, and fail (with a completion) unless all
/// of it was taken.
const EAGER_FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_WAITALL | libc::MSG_NOSIGNAL;
/// Flags of a continuation: the kernel waits for room until all of the rest is taken.
const REST_FLAGS: i32 = libc::MSG_WAITALL | libc::MSG_NOSIGNAL;
/// Most spare buffers a worker keeps (more, after a burst, are freed).
const SPARES_MAX: usize = 256;
/// The smallest buffer made for a message.
const SPARE_MIN: usize = 512;

/// Where a slot's send stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Nothing in flight.
    Idle,
    /// The eager send was pushed while the driver's drain count read `drains`.
    Pushed { drains: u64 },
    /// The eager send took `sent` bytes; a send of the rest is in flight.
    Rest { sent: u32 },
    /// All of it went out.
    Done,
    /// It failed with `errno` after `sent` bytes.
    Failed { sent: u32, errno: i32 },
}

struct Slot {
    gen: u32,
    fd: RawFd,
    /// The message in flight; no capacity once it is settled (back with the spares).
    buf: Vec<u8>,
    /// Its length (kept when the buffer goes back).
    len: u32,
    stage: Stage,
    /// The writer still exists (false: the slot waits for its last completion).
    open: bool,
    /// A cancel of the continuation was pushed.
    cancelling: bool,
    waker: Option<Waker>,
}

impl Slot {
    /// A pushed send the kernel has taken without a completion went out whole: its buffer
    /// goes back to `spares`.
    fn note_taken(&mut self, spares: &mut Vec<Vec<u8>>) {
        self.note_taken_by(uring_ext::drains(), spares);
    }

    /// [`Self::note_taken`], the driver's drain count being `now`.
    fn note_taken_by(&mut self, now: u64, spares: &mut Vec<Vec<u8>>) {
        if let Stage::Pushed { drains } = self.stage {
            if now > drains {
                self.stage = Stage::Done;
                self.release(spares);
            }
        }
    }

    /// Give the buffer back (the send is settled: nothing of it is left with the kernel).
    fn release(&mut self, spares: &mut Vec<Vec<u8>>) {
        if self.buf.capacity() == 0 {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        if spares.len() < SPARES_MAX {
            buf.clear();
            spares.push(buf);
        }
    }

    /// Cancel the continuation in flight, once.
    fn cancel_rest(&mut self, slot: u32) {
        if matches!(self.stage, Stage::Rest { .. }) && !self.cancelling {
            cancel(user_data(slot, self.gen));
            self.cancelling = true;
        }
    }
}

#[derive(Default)]
struct State {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots of dropped writers whose send the kernel had not taken yet (the ring could
    /// not be entered): freed once the driver has drained past it.
    orphans: Vec<u32>,
    books: Books,
}

/// What a slot's send updates besides the slot.
#[derive(Default)]
struct Books {
    /// Sends pushed and not yet seen taken, by slot and generation (an entry whose slot
    /// has moved on since is stale, and dropped).
    pushed: Vec<(u32, u32)>,
    /// Buffers of settled sends, for the next ones.
    spares: Vec<Vec<u8>>,
    /// The drain count at the last sweep.
    swept_at: u64,
    counts: Counts,
}

/// How eager sends went, since the worker started (for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages handed over eagerly.
    pub sent: u64,
    /// Of those, the ones the socket could not take whole at once (continued by an
    /// ordinary send, or failed).
    pub continued: u64,
}

impl State {
    /// Take back the buffers of the sends the kernel has taken since, and free the
    /// orphans among them.
    fn sweep(&mut self) {
        let now = uring_ext::drains();
        let State {
            slots,
            free,
            orphans,
            books:
                Books {
                    pushed,
                    spares,
                    swept_at,
                    ..
                },
        } = self;
        // Nothing is seen taken until the driver drains again.
        if *swept_at == now {
            return;
        }
        *swept_at = now;
        pushed.retain(|&(slot, gen)| {
            let sl = &mut slots[slot as usize];
            sl.gen == gen && {
                sl.note_taken_by(now, spares);
                matches!(sl.stage, Stage::Pushed { .. })
            }
        });
        // An orphan whose send failed was freed by the handler (and may be in use).
        orphans.retain(|&o| {
            let sl = &mut slots[o as usize];
            sl.note_taken_by(now, spares);
            match sl.stage {
                _ if sl.open => false,
                Stage::Done => {
                    sl.stage = Stage::Idle;
                    free.push(o);
                    false
                }
                Stage::Pushed { .. } => true,
                _ => false,
            }
        });
    }
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Turn eager sends on for writers made on this thread from now on. Call on a worker
/// whose ring issues requests inside the submitting enter (`DEFER_TASKRUN`) and whose
/// completion handler passes [`TAG`]ged completions to [`on_completion`].
pub fn init() {
    STATE.with(|s| *s.borrow_mut() = Some(State::default()));
}

/// For the end of a worker: cancel every continuation still in flight, and say whether
/// any send is still with the kernel (a continuation, or a dropped writer's send not yet
/// taken). The ring must not go away before: a send could read a buffer already freed,
/// or name a socket number reused meanwhile.
pub fn stop() -> bool {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let Some(st) = s.as_mut() else {
            return false;
        };
        st.sweep();
        let mut any = !st.orphans.is_empty();
        for (i, sl) in st.slots.iter_mut().enumerate() {
            if let Stage::Rest { .. } = sl.stage {
                sl.cancel_rest(i as u32);
                any = true;
            }
        }
        any
    })
}

/// This worker's counts (zero where eager sends are off).
pub fn counts() -> Counts {
    STATE.with(|s| {
        s.borrow()
            .as_ref()
            .map(|st| st.books.counts)
            .unwrap_or_default()
    })
}

fn user_data(slot: u32, gen: u32) -> u64 {
    TAG | (u64::from(gen) << 32) | u64::from(slot)
}

/// A completion of an eager send (its failure) or of a continuation.
pub fn on_completion(user_data: u64, res: i32) {
    if user_data & CANCEL == CANCEL {
        return;
    }
    let slot = (user_data & u64::from(u32::MAX)) as u32;
    let gen = ((user_data >> 32) as u32) & GEN_MASK;
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let Some(st) = s.as_mut() else {
            return;
        };
        let sl = &mut st.slots[slot as usize];
        if sl.gen != gen {
            debug_assert!(false, "a completion for an earlier send of slot {slot}");
            return;
        }
        let len = sl.len;
        sl.stage = match sl.stage {
            Stage::Pushed { .. } => {
                st.books.counts.continued += 1;
                // `EAGAIN` (nothing taken), the count a short send took, or an error.
                let sent = res.max(0) as u32;
                if (res > 0 || res == -libc::EAGAIN) && sl.open {
                    let rest = &sl.buf[sent as usize..];
                    let sqe = opcode::Send::new(types::Fd(sl.fd), rest.as_ptr(), rest.len() as u32)
                        .flags(REST_FLAGS)
                        .build()
                        .user_data(user_data);
                    match uring_ext::push(sqe) {
                        Ok(()) => Stage::Rest { sent },
                        Err(_) => Stage::Failed {
                            sent,
                            errno: libc::EIO,
                        },
                    }
                } else {
                    Stage::Failed {
                        sent,
                        errno: if res < 0 { -res } else { libc::EAGAIN },
                    }
                }
            }
            Stage::Rest { sent } => {
                let total = sent + res.max(0) as u32;
                match res {
                    _ if total == len => Stage::Done,
                    // Stopped or broken part-way (a cancel reports what was taken).
                    r if r < 0 => Stage::Failed {
                        sent: total,
                        errno: -r,
                    },
                    _ => Stage::Failed {
                        sent: total,
                        errno: libc::ECANCELED,
                    },
                }
            }
            other => {
                debug_assert!(false, "a completion for slot {slot} at {other:?}");
                other
            }
        };
        let settled = matches!(sl.stage, Stage::Done | Stage::Failed { .. });
        if settled {
            sl.release(&mut st.books.spares);
        }
        if !sl.open && settled {
            sl.stage = Stage::Idle;
            st.free.push(slot);
        } else if let Some(w) = sl.waker.take() {
            w.wake();
        }
    });
}

/// How a settled eager send ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    /// Bytes the socket took.
    pub sent: usize,
    /// `Err(errno)` when not all of it went out.
    pub result: Result<(), i32>,
}

/// One socket's eager sender (owned by its writer).
#[derive(Debug)]
pub struct Eager {
    slot: u32,
}

impl Eager {
    /// An eager sender for `fd`, where this worker sends eagerly.
    pub fn new(fd: RawFd) -> Option<Eager> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let st = s.as_mut()?;
            st.sweep();
            let State { slots, free, .. } = st;
            let slot = free.pop().unwrap_or_else(|| {
                slots.push(Slot {
                    gen: 0,
                    fd,
                    buf: Vec::new(),
                    len: 0,
                    stage: Stage::Idle,
                    open: true,
                    cancelling: false,
                    waker: None,
                });
                (slots.len() - 1) as u32
            });
            let sl = &mut slots[slot as usize];
            sl.fd = fd;
            sl.stage = Stage::Idle;
            sl.open = true;
            Some(Eager { slot })
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Slot, &mut Books) -> R) -> R {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let st = s
                .as_mut()
                .expect("an Eager exists only where the state does");
            f(&mut st.slots[self.slot as usize], &mut st.books)
        })
    }

    /// Whether nothing is in flight, and nothing failed.
    pub fn is_idle(&self) -> bool {
        self.with(|sl, books| {
            sl.note_taken(&mut books.spares);
            matches!(sl.stage, Stage::Idle | Stage::Done)
        })
    }

    /// Hand `bytes` over: true when pushed (the caller may reuse its buffer at once);
    /// false when it must send them itself (too long, a send still unsettled, a full
    /// submission queue).
    pub fn send(&self, bytes: &[u8]) -> bool {
        if bytes.is_empty() || bytes.len() > EAGER_MAX {
            return false;
        }
        let slot = self.slot;
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let st = s
                .as_mut()
                .expect("an Eager exists only where the state does");
            // Sends taken since the last look give their buffers back: one is reused here.
            st.sweep();
            let State { slots, books, .. } = st;
            let sl = &mut slots[slot as usize];
            sl.note_taken(&mut books.spares);
            if !matches!(sl.stage, Stage::Idle | Stage::Done) {
                return false;
            }
            if sl.buf.capacity() == 0 {
                // Sized for the message, not for the largest one: most are a few hundred
                // bytes, and a spare grows once if a longer one comes.
                sl.buf = books.spares.pop().unwrap_or_else(|| {
                    Vec::with_capacity(bytes.len().next_power_of_two().max(SPARE_MIN))
                });
            }
            sl.buf.clear();
            sl.buf.extend_from_slice(bytes);
            sl.len = bytes.len() as u32;
            sl.gen = (sl.gen + 1) & GEN_MASK;
            sl.cancelling = false;
            let sqe = opcode::Send::new(types::Fd(sl.fd), sl.buf.as_ptr(), sl.len)
                .flags(EAGER_FLAGS)
                .build()
                .flags(squeue::Flags::SKIP_SUCCESS)
                .user_data(user_data(slot, sl.gen));
            if uring_ext::push(sqe).is_err() {
                sl.release(&mut books.spares);
                return false;
            }
            // Read after the push: a push may flush the queue, which ticks.
            sl.stage = Stage::Pushed {
                drains: uring_ext::drains(),
            };
            books.pushed.push((slot, sl.gen));
            books.counts.sent += 1;
            true
        })
    }

    /// Ready when the send in flight (if any) is settled. `force`: have the kernel take a
    /// pushed send now instead of at the next enter (the caller cannot wait for one). A
    /// fired `stop` cancels a continuation (it then settles as failed, with the count).
    pub fn poll_settle(
        &self,
        cx: &mut Context<'_>,
        force: bool,
        stop: Option<&CancelHandle>,
    ) -> Poll<Settled> {
        let stopped = stop.is_some_and(CancelHandle::canceled);
        let push = force || stopped;
        let pushed = |sl: &mut Slot, books: &mut Books| {
            sl.note_taken(&mut books.spares);
            matches!(sl.stage, Stage::Pushed { .. })
        };
        if push && self.with(pushed) {
            let _ = uring_ext::submit_now();
        }
        let slot = self.slot;
        self.with(|sl, books| {
            sl.note_taken(&mut books.spares);
            let settled = |sent, result| Poll::Ready(Settled { sent, result });
            match sl.stage {
                Stage::Idle => settled(0, Ok(())),
                Stage::Done => {
                    sl.stage = Stage::Idle;
                    settled(sl.len as usize, Ok(()))
                }
                // Stays failed: the stream has a hole, nothing may follow it.
                Stage::Failed { sent, errno } => settled(sent as usize, Err(errno)),
                stage => {
                    match stage {
                        Stage::Rest { .. } if stopped => sl.cancel_rest(slot),
                        // Still not taken after an enter (completions overflowing): look
                        // again after the next one.
                        Stage::Pushed { .. } if push => cx.waker().wake_by_ref(),
                        _ => {}
                    }
                    match &sl.waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => sl.waker = Some(cx.waker().clone()),
                    }
                    Poll::Pending
                }
            }
        })
    }
}

/// Push a cancel of the continuation with user data `target`. A full queue is flushed by
/// push; if even that fails the continuation runs on until the socket takes it or breaks.
fn cancel(target: u64) {
    let sqe = opcode::AsyncCancel::new(target).build().user_data(CANCEL);
    let _ = uring_ext::push(sqe);
}

impl Drop for Eager {
    fn drop(&mut self) {
        let slot = self.slot;
        // (At thread exit the state may be gone already, and the ring with it.)
        let pending = STATE
            .try_with(|s| {
                let mut s = s.borrow_mut();
                let Some(st) = s.as_mut() else {
                    return false;
                };
                let sl = &mut st.slots[slot as usize];
                sl.open = false;
                sl.waker = None;
                sl.note_taken(&mut st.books.spares);
                matches!(sl.stage, Stage::Pushed { .. })
            })
            .unwrap_or(false);
        // The kernel must take the send before the buffer or the socket number can go.
        if pending {
            let _ = uring_ext::submit_now();
        }
        let _ = STATE.try_with(|s| {
            let mut s = s.borrow_mut();
            let Some(st) = s.as_mut() else {
                return;
            };
            let sl = &mut st.slots[slot as usize];
            sl.note_taken(&mut st.books.spares);
            match sl.stage {
                // It failed as it was taken: the handler freed the slot.
                Stage::Idle if pending => {}
                // Not taken even so (no ring to enter, completions overflowing): the
                // buffer stays until the driver drains past it.
                Stage::Pushed { .. } => st.orphans.push(slot),
                // Freed by the handler once its last completion is back.
                Stage::Rest { .. } => sl.cancel_rest(slot),
                _ => {
                    sl.stage = Stage::Idle;
                    st.free.push(slot);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::future::{poll_fn, Future};
    use std::os::fd::AsRawFd;

    use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Canceller};
    use monoio::net::TcpStream;

    use super::*;
    use crate::forward::stream::plain;
    use crate::test_runtime::{deferred, fill, pair};

    /// Run `test` on a ring set up as workers set it up, with eager sends on; skipped
    /// (with a note) where the kernel has no such ring or no multishot.
    fn on_ring<F: Future<Output = ()>>(test: impl FnOnce() -> F) {
        let Some(mut rt) = deferred() else {
            eprintln!("no DEFER_TASKRUN ring here: eager sends are off, nothing to test");
            return;
        };
        rt.block_on(async {
            if crate::runtime::multishot::init(true, true).is_err() {
                eprintln!("no multishot here: eager sends are off, nothing to test");
                return;
            }
            init();
            test().await;
        });
    }

    fn settle<'a>(e: &'a Eager, stop: Option<&CancelHandle>) -> impl Future<Output = Settled> + 'a {
        let stop = stop.cloned();
        poll_fn(move |cx| e.poll_settle(cx, true, stop.as_ref()))
    }

    /// Read from `s` until it ends; everything it sent.
    async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let (res, buf) = s.read(Vec::with_capacity(64 * 1024)).await;
            match res.expect("read") {
                0 => return all,
                _ => all.extend_from_slice(&buf),
            }
        }
    }

    /// Read exactly `n` bytes from `s`.
    async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut all = Vec::with_capacity(n);
        while all.len() < n {
            let (res, buf) = s.read(Vec::with_capacity(n - all.len())).await;
            assert!(
                res.expect("read") > 0,
                "the peer ended after {} bytes",
                all.len()
            );
            all.extend_from_slice(&buf);
        }
        all
    }

    /// A socket whose peer reset the connection (and the reset has arrived).
    async fn reset() -> TcpStream {
        let (mut c, s) = pair().await;
        // SO_LINGER 0: the close resets the connection.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid option value for a socket the test owns.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            )
        };
        assert_eq!(rc, 0);
        drop(s);
        let (res, _) = c.read(Vec::with_capacity(16)).await;
        assert!(res.is_err(), "reset, not {res:?}");
        c
    }

    #[test]
    fn a_message_the_socket_takes_whole_posts_no_completion() {
        on_ring(|| async {
            let (c, mut s) = pair().await;
            let e = Eager::new(c.as_raw_fd()).unwrap();
            assert!(e.send(b"hello"));
            assert!(!e.send(b"again"), "one send in flight per socket");
            // The peer's read enters the ring, which takes the send on its way.
            assert_eq!(read_n(&mut s, 5).await, b"hello");
            assert!(e.is_idle(), "settled without a completion");
            assert!(e.send(b"again"));
            assert_eq!(
                settle(&e, None).await,
                Settled {
                    sent: 5,
                    result: Ok(())
                }
            );
            assert_eq!(read_n(&mut s, 5).await, b"again");
            assert_eq!(
                counts(),
                Counts {
                    sent: 2,
                    continued: 0
                }
            );
            assert!(!e.send(&[7u8; EAGER_MAX + 1]), "too long to copy");
        });
    }

    /// (Buffers held by slots, spare buffers.)
    fn buffers() -> (usize, usize) {
        STATE.with(|s| {
            let s = s.borrow();
            let st = s.as_ref().unwrap();
            let held = st.slots.iter().filter(|sl| sl.buf.capacity() > 0).count();
            (held, st.books.spares.len())
        })
    }

    #[test]
    fn an_idle_connection_holds_no_buffer_once_its_send_is_taken() {
        on_ring(|| async {
            // Eight connections send once and go idle, as keep-alive clients do after an
            // answer: their sends are taken at the next enter, and the next eager send (of
            // any socket) takes their buffers back. Buffers are as many as sends in
            // flight at once, not as connections.
            let mut conns = Vec::new();
            for _ in 0..8 {
                let (c, s) = pair().await;
                let e = Eager::new(c.as_raw_fd()).unwrap();
                conns.push((c, s, e));
            }
            for (_, _, e) in &conns {
                assert!(e.send(b"answer"));
            }
            assert_eq!(buffers(), (8, 0), "all eight in flight");
            for (_, s, _) in &mut conns {
                assert_eq!(read_n(s, 6).await, b"answer");
            }
            let (c, mut s) = pair().await;
            let e = Eager::new(c.as_raw_fd()).unwrap();
            assert_eq!(buffers(), (0, 8), "taken: back with the spares");
            assert!(e.send(b"next"));
            assert_eq!(buffers(), (1, 7), "a spare reused, none allocated");
            assert_eq!(read_n(&mut s, 4).await, b"next");
            assert_eq!(
                settle(&e, None).await,
                Settled {
                    sent: 4,
                    result: Ok(())
                },
                "the length is kept when the buffer goes back"
            );
            assert_eq!(buffers(), (0, 8));
        });
    }

    #[test]
    fn a_full_socket_gets_the_rest_when_it_has_room() {
        on_ring(|| async {
            let (c, mut s) = pair().await;
            let filled = fill(c.as_raw_fd());
            let e = Eager::new(c.as_raw_fd()).unwrap();
            let msg: Vec<u8> = (0..EAGER_MAX).map(|i| (i % 251) as u8).collect();
            assert!(e.send(&msg));
            let (settled, got) =
                monoio::join!(settle(&e, None), read_n(&mut s, filled + msg.len()));
            assert_eq!(
                settled,
                Settled {
                    sent: msg.len(),
                    result: Ok(())
                }
            );
            assert_eq!(&got[filled..], &msg[..], "all of it, after what was queued");
            assert_eq!(counts().continued, 1);
        });
    }

    #[test]
    fn a_reset_socket_fails_the_send() {
        on_ring(|| async {
            let c = reset().await;
            let e = Eager::new(c.as_raw_fd()).unwrap();
            assert!(e.send(b"to nobody"));
            let settled = settle(&e, None).await;
            assert_eq!(settled.sent, 0);
            let errno = settled.result.unwrap_err();
            assert!(
                errno == libc::ECONNRESET || errno == libc::EPIPE,
                "errno {errno}"
            );
        });
    }

    #[test]
    fn a_writer_dropped_as_its_send_fails_frees_its_slot_once() {
        on_ring(|| async {
            // A reset socket: the send fails as it is taken.
            let c = reset().await;
            let e = Eager::new(c.as_raw_fd()).unwrap();
            assert!(e.send(b"to nobody"));
            // Dropped before the ring took it: taken at once, it fails, and the handler
            // frees the slot (the writer's drop must not free it again).
            drop(e);
            let (a, b) = (Eager::new(c.as_raw_fd()), Eager::new(c.as_raw_fd()));
            assert_ne!(a.unwrap().slot, b.unwrap().slot);
            STATE.with(|s| {
                let st = s.borrow();
                let free = &st.as_ref().unwrap().free;
                let mut sorted = free.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), free.len(), "a slot freed twice: {free:?}");
            });
        });
    }

    #[test]
    fn a_stopped_rest_settles_with_what_went() {
        on_ring(|| async {
            let (c, _s) = pair().await;
            fill(c.as_raw_fd());
            let e = Eager::new(c.as_raw_fd()).unwrap();
            assert!(e.send(b"never read"));
            uring_ext::submit_now().unwrap();
            let canceller = Canceller::new();
            let stop = canceller.handle();
            let _ = canceller.cancel();
            let settled = settle(&e, Some(&stop)).await;
            assert_eq!(settled.sent, 0);
            assert_eq!(settled.result, Err(libc::ECANCELED));
            // The stream has a hole: nothing may follow.
            assert!(!e.is_idle());
            assert!(!e.send(b"more"));
            assert_eq!(settle(&e, None).await, settled);
        });
    }

    #[test]
    fn a_writer_keeps_order_and_delivers_before_it_closes() {
        on_ring(|| async {
            let (c, mut s) = pair().await;
            let (rd, mut wr) = plain(c);
            assert!(wr.send_eager(b"one,"));
            // A write settles the eager send first.
            let (res, _) = wr.write_all(&b"two,"[..]).await;
            res.unwrap();
            assert!(wr.send_eager(b"three"));
            // Dropped with the send not yet taken: the kernel takes it before the close.
            drop(wr);
            drop(rd);
            assert_eq!(read_to_end(&mut s).await, b"one,two,three");
        });
    }
}
