//! Timers for timed I/O, reused within a connection.
//!
//! Every read and write on the request path runs under a timeout. A fresh
//! `monoio::time::Sleep` per operation costs a timer-wheel insert and remove, and its
//! 512-byte, cache-aligned timer entry sits inline in every future that awaits one, so
//! each nested call moves kilobytes. Here a connection task keeps a few boxed `Sleep`s in
//! a [`TimerPool`] and each timed operation borrows one: the future holds a pointer.
//!
//! A borrowed timer is not re-armed when it is already armed no later than the new
//! deadline, which is the rule when operations follow each other with the same timeout:
//! it fires early, then, and [`Timer::poll_elapsed`] arms it again for the real deadline
//! instead of reporting it. So a busy connection re-arms a timer about once per timeout,
//! not once per operation.
//!
//! A `Sleep` remembers the first waker that polled it until it fires, so a timer must
//! only ever be polled by one task: the pool belongs to one task ([`with_pool`] wraps the
//! task's future and makes the pool current while it is polled). Outside such a task
//! (a mirror, a health check) [`Timer`] falls back to a `Sleep` of its own.
//!
//! Deadlines are taken from the coarse monotonic clock ([`coarse_now`]): reading it costs
//! a few nanoseconds where the precise clock costs ~35 here, and a request arms several
//! timeouts. A timeout then fires up to two clock ticks late, never early.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use monoio::time::Sleep;

/// Most timers a pool keeps (more are dropped when returned).
const POOL_MAX: usize = 8;

/// A deadline far enough away to mean "not armed".
const FAR: Duration = Duration::from_secs(86_400);

/// The idle timers of one task.
#[derive(Default)]
pub struct TimerPool {
    free: RefCell<Vec<Armed>>,
}

/// A boxed `Sleep` and the deadline it is armed for.
struct Armed {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
}

impl Armed {
    fn arm(&mut self, at: Instant) {
        self.sleep
            .as_mut()
            .reset(monoio::time::Instant::from_std(at));
        self.at = at;
    }
}

thread_local! {
    /// The pool of the task being polled on this thread, if it has one.
    static CURRENT: Cell<Option<Rc<TimerPool>>> = const { Cell::new(None) };
}

/// Run `fut` with a timer pool of its own: timed operations inside it reuse its timers.
pub fn with_pool<F: Future>(fut: F) -> WithPool<F> {
    WithPool {
        fut,
        pool: Rc::new(TimerPool::default()),
    }
}

pin_project_lite::pin_project! {
    /// The future returned by [`with_pool`].
    pub struct WithPool<F> {
        #[pin]
        fut: F,
        pool: Rc<TimerPool>,
    }
}

impl<F: Future> Future for WithPool<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let prev = CURRENT.replace(Some(this.pool.clone()));
        let out = this.fut.poll(cx);
        CURRENT.set(prev);
        out
    }
}

/// A timer borrowed from the current task's pool (or owned, outside a pooled task),
/// given back when dropped.
pub struct Timer {
    armed: Option<Armed>,
    deadline: Instant,
    pool: Option<Rc<TimerPool>>,
}

impl Timer {
    /// A timer that fires at `deadline`.
    pub fn at(deadline: Instant) -> Self {
        let pool = CURRENT.take();
        CURRENT.set(pool.clone());
        let reused = pool.as_ref().and_then(|p| p.free.borrow_mut().pop());
        let armed = match reused {
            Some(mut armed) => {
                if armed.at > deadline {
                    armed.arm(deadline);
                }
                armed
            }
            None => {
                let mut armed = Armed {
                    sleep: Box::pin(monoio::time::sleep(FAR)),
                    at: deadline,
                };
                armed.arm(deadline);
                armed
            }
        };
        Timer {
            armed: Some(armed),
            deadline,
            pool,
        }
    }

    /// A timer that fires `timeout` from now, or up to two clock ticks later (a timeout
    /// too large to add never fires).
    pub fn after(timeout: Duration) -> Self {
        Self::at(deadline_after(timeout))
    }

    /// Fire at `deadline` instead.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if let Some(armed) = self.armed.as_mut().filter(|a| a.at > deadline) {
            armed.arm(deadline);
        }
    }

    /// Whether the deadline has passed (registers the task to be woken when it does).
    pub fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(armed) = self.armed.as_mut() else {
            return Poll::Ready(());
        };
        loop {
            if armed.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if armed.at >= self.deadline {
                return Poll::Ready(());
            }
            // Armed earlier than the deadline (see the module docs): arm it for the
            // deadline and look again.
            armed.arm(self.deadline);
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let (Some(armed), Some(pool)) = (self.armed.take(), self.pool.as_ref()) {
            let mut free = pool.free.borrow_mut();
            if free.len() < POOL_MAX {
                free.push(armed);
            }
        }
    }
}

/// The coarse clock as an [`Instant`]: within one tick of `Instant::now()` either way.
struct Coarse {
    /// `Instant::now()` and the coarse clock, read together.
    base: (Instant, Duration),
    /// The coarse clock's resolution (one tick).
    tick: Duration,
    /// The last reading of the coarse clock and the instant it gave: the clock moves once
    /// a tick, and a request reads it several times, so most readings repeat the last one
    /// and skip the arithmetic.
    last: Cell<((libc::time_t, libc::c_long), Instant)>,
}

thread_local! {
    static COARSE: Coarse = Coarse::new();
}

/// `CLOCK_MONOTONIC_COARSE` read by `clock_gettime` (the time) or `clock_getres` (its
/// resolution), as seconds and nanoseconds.
fn coarse_clock(
    read: unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int,
) -> (libc::time_t, libc::c_long) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both functions only write into the live timespec; the clock always exists
    // on Linux.
    unsafe { read(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec, ts.tv_nsec)
}

fn duration((sec, nsec): (libc::time_t, libc::c_long)) -> Duration {
    Duration::new(sec as u64, nsec as u32)
}

impl Coarse {
    fn new() -> Self {
        let base = (Instant::now(), coarse_clock(libc::clock_gettime));
        Coarse {
            base: (base.0, duration(base.1)),
            tick: duration(coarse_clock(libc::clock_getres)),
            last: Cell::new((base.1, base.0)),
        }
    }

    fn now(&self) -> Instant {
        let reading = coarse_clock(libc::clock_gettime);
        let (last, at) = self.last.get();
        if reading == last {
            return at;
        }
        let at = self.base.0 + duration(reading).saturating_sub(self.base.1);
        self.last.set((reading, at));
        at
    }
}

/// Now, from the coarse monotonic clock: within one tick of `Instant::now()`. The coarse
/// clock is the precise one as of the last tick, so both run on the same time base.
pub fn coarse_now() -> Instant {
    COARSE.with(Coarse::now)
}

/// Now for deadlines: [`coarse_now`] plus one tick, so never earlier than
/// `Instant::now()` (and at most two ticks later).
pub fn deadline_now() -> Instant {
    COARSE.with(|c| c.now() + c.tick)
}

/// A deadline `timeout` from now that is never early (see [`deadline_now`]).
pub fn deadline_after(timeout: Duration) -> Instant {
    let now = deadline_now();
    now.checked_add(timeout).unwrap_or(now + FAR)
}

/// Wait for `duration` on a timer from the task's pool: a pointer in the awaiting future
/// where `monoio::time::sleep` puts a 640-byte, 128-byte-aligned `Sleep`, which makes every
/// future around it that large and that aligned (connection tasks included).
pub async fn sleep(duration: Duration) {
    let mut timer = Timer::after(duration);
    std::future::poll_fn(|cx| timer.poll_elapsed(cx)).await
}

/// The deadline passed before the operation completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed;

/// Await `fut` for at most `timeout` (the timer is taken when first polled).
pub fn timeout<F: Future>(timeout: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        timeout,
        timer: None,
    }
}

pin_project_lite::pin_project! {
    /// The future returned by [`timeout`]: the operation and a pointer-sized timer (an
    /// `async fn` would hold the operation twice, as argument and as pinned local).
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        timeout: Duration,
        timer: Option<Timer>,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let timeout = *this.timeout;
        let timer = this.timer.get_or_insert_with(|| Timer::after(timeout));
        match timer.poll_elapsed(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_runtime::epoll as runtime;

    fn pooled(pool: &Rc<TimerPool>) -> usize {
        pool.free.borrow().len()
    }

    /// Ready on the second poll (it wakes itself on the first): an operation in flight.
    async fn in_flight<T>(value: T) -> T {
        let mut pending = true;
        std::future::poll_fn(|cx| {
            if std::mem::take(&mut pending) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(())
        })
        .await;
        value
    }

    #[test]
    fn a_pooled_task_reuses_its_timers() {
        runtime().block_on(async {
            let task = with_pool(async {
                let pool = CURRENT.take().unwrap();
                CURRENT.set(Some(pool.clone()));
                assert_eq!(timeout(Duration::from_secs(5), async { 6 }).await, Ok(6));
                assert_eq!(
                    pooled(&pool),
                    0,
                    "an operation ready at once needs no timer"
                );
                assert_eq!(timeout(Duration::from_secs(5), in_flight(7)).await, Ok(7));
                assert_eq!(pooled(&pool), 1, "the timer went back");
                let first = pool.free.borrow()[0].sleep.as_ref().get_ref() as *const Sleep;
                assert_eq!(timeout(Duration::from_secs(5), in_flight(8)).await, Ok(8));
                let again = pool.free.borrow()[0].sleep.as_ref().get_ref() as *const Sleep;
                assert_eq!(first, again, "the same timer served both");
                pool
            });
            let pool = task.await;
            assert!(
                CURRENT.take().is_none(),
                "the pool is current only while polled"
            );
            assert_eq!(pooled(&pool), 1);
        });
    }

    #[test]
    fn a_reused_timer_fires_at_its_new_deadline() {
        runtime().block_on(with_pool(async {
            // Armed far away, returned, then reused for a short deadline: it must fire.
            let _ = timeout(Duration::from_secs(60), in_flight(())).await;
            let started = Instant::now();
            let never = std::future::pending::<()>();
            assert_eq!(
                timeout(Duration::from_millis(30), never).await,
                Err(Elapsed)
            );
            assert!(started.elapsed() >= Duration::from_millis(29));
            // And one that fired is armed again when reused.
            let started = Instant::now();
            let never = std::future::pending::<()>();
            assert_eq!(
                timeout(Duration::from_millis(20), never).await,
                Err(Elapsed)
            );
            assert!(started.elapsed() >= Duration::from_millis(19));
        }));
    }

    /// The `Sleep` the pool would lend next.
    fn next_lent() -> *const Sleep {
        let pool = CURRENT.take().unwrap();
        CURRENT.set(Some(pool.clone()));
        let free = pool.free.borrow();
        free.last().unwrap().sleep.as_ref().get_ref() as *const Sleep
    }

    #[test]
    fn a_timer_armed_before_its_deadline_does_not_fire_early() {
        runtime().block_on(with_pool(async {
            // Returned armed for ~20 ms from now; reused (not re-armed) for 80 ms.
            let _ = timeout(Duration::from_millis(20), in_flight(())).await;
            let lent = next_lent();
            let started = Instant::now();
            let never = std::future::pending::<()>();
            assert_eq!(
                timeout(Duration::from_millis(80), never).await,
                Err(Elapsed)
            );
            assert!(
                started.elapsed() >= Duration::from_millis(79),
                "fired after {:?}",
                started.elapsed()
            );
            assert_eq!(
                next_lent(),
                lent,
                "the early-armed timer was the one reused"
            );
        }));
    }

    #[test]
    fn a_reset_timer_fires_at_its_new_deadline() {
        runtime().block_on(with_pool(async {
            async fn wait(timer: &mut Timer) {
                std::future::poll_fn(|cx| timer.poll_elapsed(cx)).await
            }
            // Fired, then moved later (an interim answer restarting the response timeout).
            let started = Instant::now();
            let mut timer = Timer::after(Duration::from_millis(10));
            wait(&mut timer).await;
            timer.reset(deadline_after(Duration::from_millis(40)));
            wait(&mut timer).await;
            assert!(started.elapsed() >= Duration::from_millis(49));
            // Armed far away, then moved earlier.
            let started = Instant::now();
            let mut timer = Timer::after(Duration::from_secs(60));
            timer.reset(deadline_after(Duration::from_millis(20)));
            wait(&mut timer).await;
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(19) && took < Duration::from_secs(5),
                "{took:?}"
            );
        }));
    }

    #[test]
    fn the_coarse_clock_stays_within_a_tick() {
        let tick = COARSE.with(|c| c.tick);
        assert!(
            tick > Duration::ZERO && tick <= Duration::from_millis(10),
            "{tick:?}"
        );
        for _ in 0..1000 {
            let before = Instant::now();
            let coarse = coarse_now();
            let after = Instant::now();
            assert!(coarse + tick >= before, "more than a tick behind");
            assert!(coarse <= after + tick, "more than a tick ahead");
            assert!(
                deadline_after(Duration::ZERO) >= before,
                "a deadline is never early"
            );
        }
    }

    #[test]
    fn without_a_pool_a_timer_is_its_own() {
        runtime().block_on(async {
            let never = std::future::pending::<()>();
            assert_eq!(
                timeout(Duration::from_millis(10), never).await,
                Err(Elapsed)
            );
            assert_eq!(timeout(Duration::from_secs(1), async { 1 }).await, Ok(1));
        });
    }
}
