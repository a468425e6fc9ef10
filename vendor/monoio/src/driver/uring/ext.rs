//! ringgate patch: a narrow escape hatch for operations monoio does not model (multishot
//! receives from a provided-buffer ring). Completions whose user data has [`EXT_TAG`] set
//! bypass the op table and go to the thread's handler; SQEs are pushed raw.

use std::cell::{Cell, UnsafeCell};
use std::io;

use super::{UringInner, CURRENT};
use crate::driver::Inner;

/// The bit that marks a completion for the handler.
pub const EXT_TAG: u64 = 1 << 62;

thread_local! {
    static HANDLER: Cell<Option<fn(u64, i32, u32)>> = const { Cell::new(None) };
    static DRAINS: Cell<u64> = const { Cell::new(0) };
}

/// Called at the end of every `tick`: count the ticks that found every pushed SQE taken
/// by the kernel and no completion overflowing (see [`drains`]).
pub(super) fn note_tick(inner: &mut UringInner) {
    let sq = inner.uring.submission();
    if sq.is_empty() && !sq.cq_overflow() {
        DRAINS.with(|d| d.set(d.get() + 1));
    }
}

/// How many times the driver, after entering the kernel and reaping the completion
/// queue, found the submission queue empty and no completion overflowing. An SQE pushed
/// while this read `n` has been taken by the kernel once it reads more than `n`; on a
/// ring where the submitting thread issues requests itself (`IORING_SETUP_DEFER_TASKRUN`)
/// a request that completed inline has then posted its completion, if it posts one, and
/// the handler has seen it.
pub fn drains() -> u64 {
    DRAINS.with(|d| d.get())
}

/// Enter the kernel now to submit every pushed SQE (no waiting), then reap completions
/// and hand tagged ones to the handler, as a park would. For the rare caller that needs a
/// pushed request taken before it can go on (it is about to free what the SQE points
/// at). Must not be called from the handler.
pub fn submit_now() -> io::Result<()> {
    if !CURRENT.is_set() {
        return Err(io::ErrorKind::Unsupported.into());
    }
    CURRENT.with(|inner| match inner {
        Inner::Uring(this) => {
            {
                // SAFETY: a borrow that ends before the handler runs; no other is live.
                let inner = unsafe { &mut *this.get() };
                inner.submit()?;
                inner.tick()?;
            }
            run_queued(this);
            Ok(())
        }
        #[allow(unreachable_patterns)]
        _ => Err(io::ErrorKind::Unsupported.into()),
    })
}

/// Reap the completion queue without entering the kernel (unless completions overflow:
/// then an enter flushes them in), handing tagged completions to the handler. For a
/// caller that must see every completion the kernel has posted so far (on a ring that
/// posts them while tasks run). Must not be called from the handler.
pub fn reap() -> io::Result<()> {
    if !CURRENT.is_set() {
        return Err(io::ErrorKind::Unsupported.into());
    }
    CURRENT.with(|inner| match inner {
        Inner::Uring(this) => {
            {
                // SAFETY: a borrow that ends before the handler runs; no other is live.
                let inner = unsafe { &mut *this.get() };
                if inner.uring.submission().cq_overflow() {
                    inner.submit()?;
                }
                inner.tick()?;
            }
            run_queued(this);
            Ok(())
        }
        #[allow(unreachable_patterns)]
        _ => Err(io::ErrorKind::Unsupported.into()),
    })
}

/// Route this thread's tagged completions to `handler(user_data, result, flags)`.
pub fn set_handler(handler: fn(u64, i32, u32)) {
    HANDLER.with(|h| h.set(Some(handler)));
}

/// Hand the tagged completions `tick` queued to the handler, in arrival order. Called by
/// the driver after `tick`, once its borrow of the ring has ended: the handler may push
/// SQEs (through [`push`], which borrows the ring again).
pub(super) fn run_queued(cell: &UnsafeCell<UringInner>) {
    let Some(handler) = HANDLER.with(|h| h.get()) else {
        // SAFETY: a short borrow; no other reference to the ring is live.
        unsafe { (*cell.get()).ext_queue.clear() };
        return;
    };
    loop {
        // SAFETY: each borrow below ends before the handler runs.
        if unsafe { (*cell.get()).ext_queue.is_empty() } {
            return;
        }
        // SAFETY: as above.
        let mut batch = std::mem::take(unsafe { &mut (*cell.get()).ext_queue });
        for &(user_data, result, flags) in &batch {
            handler(user_data, result, flags);
        }
        batch.clear();
        // Whatever the handler's pushes reaped meanwhile (a full submission queue: rare)
        // goes behind, in order; the allocation sized to the completion queue is kept.
        // SAFETY: as above.
        let queue = unsafe { &mut (*cell.get()).ext_queue };
        batch.append(queue);
        *queue = batch;
    }
}

fn with_inner<R>(f: impl FnOnce(&mut UringInner) -> io::Result<R>) -> io::Result<R> {
    if !CURRENT.is_set() {
        return Err(io::ErrorKind::Unsupported.into());
    }
    CURRENT.with(|inner| match inner {
        Inner::Uring(this) => f(unsafe { &mut *this.get() }),
        #[allow(unreachable_patterns)]
        _ => Err(io::ErrorKind::Unsupported.into()),
    })
}

/// Push one SQE on the current thread's ring (submitted with the next enter).
pub fn push(entry: io_uring::squeue::Entry) -> io::Result<()> {
    with_inner(|inner| {
        if inner.uring.submission().is_full() {
            inner.submit()?;
        }
        // Safety: the caller keeps whatever the entry points at alive until completion.
        unsafe { inner.uring.submission().push(&entry) }
            .map_err(|_| io::Error::from(io::ErrorKind::WouldBlock))
    })
}

/// Run `f` with the current ring's submitter (buffer-ring registration).
pub fn with_submitter<R>(f: impl FnOnce(&io_uring::Submitter<'_>) -> io::Result<R>) -> io::Result<R> {
    with_inner(|inner| f(&inner.uring.submitter()))
}

/// Whether the current ring is caught up with the kernel: every pushed SQE submitted, no
/// completion waiting in the completion queue, and `IORING_SQ_TASKRUN` clear. The flag
/// means something only on a ring set up with `IORING_SETUP_TASKRUN_FLAG`: the kernel then
/// raises it whenever it queues task work (a socket's wake-up, say) that the next enter
/// turns into completions, and clears it when that work runs. False where there is no ring.
pub fn is_caught_up() -> bool {
    with_inner(|inner| {
        // All submitted, and no task work waiting to become completions.
        let sq_quiet = {
            let sq = inner.uring.submission();
            sq.is_empty() && !sq.taskrun() && !sq.cq_overflow()
        };
        Ok(sq_quiet && inner.uring.completion().is_empty())
    })
    .unwrap_or(false)
}
