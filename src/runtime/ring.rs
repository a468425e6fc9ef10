//! How a worker's runtime is built: io_uring with the ring flags chosen by measurement,
//! or monoio's epoll driver; and the optional busy-poll mode.
//!
//! # Ring setup
//! - `defer_taskrun` (default): `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`.
//!   Completions are produced only when the worker asks for them (`io_uring_enter` with
//!   `GETEVENTS`), on the worker's own CPU and in batches, instead of as task work that
//!   interrupts the worker — or runs at the exit of any syscall it makes. Measured the
//!   cheapest per request on this project's bench (see README, Performance). With
//!   `IORING_SETUP_TASKRUN_FLAG` too, so the worker can see that nothing arrived since
//!   its last enter (a pooled upstream connection is then reused without a syscall; see
//!   `upstream::pool`).
//! - `coop_taskrun`: `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG`: no
//!   interrupting IPIs; task work runs at the worker's next kernel entry.
//! - `plain`: no flags (what monoio does by default).
//! - `sqpoll`: a kernel thread polls the submission queue (`IORING_SETUP_SQPOLL`), pinned
//!   to the worker's core when it is pinned. Costs that thread's CPU.
//!
//! A setup the kernel refuses (older than 6.1 for `defer_taskrun`) falls back to `plain`,
//! then to epoll (with `driver = "auto"`), and says so once.
//!
//! # Busy poll
//! A busy-polling worker never sleeps: every turn of its loop asks the kernel for
//! completions without waiting (see [`spin`]), on any ring setup — each such entry asks
//! for completions, so `defer_taskrun` produces them too. The worker's core runs at 100 %
//! whatever the load; in exchange no request waits for a vCPU wake-up. For dedicated
//! cores only.
//!
//! # Spin window
//! The middle way (`workers.spin_us`, io_uring only): after each request's arrival the
//! worker polls the same way for that long, and again from each later arrival, then
//! sleeps until the next (see [`spin_window`]). With a window a little longer than the
//! upstream's answer takes, the answer (and a request arriving meanwhile) is taken without
//! a vCPU wake-up; an idle worker still sleeps. Measured in README (Performance): at one
//! connection a 50 µs window took 23–41 % off the added median for 0–8 % more CPU per
//! request; under load it costs 4–28 % more CPU, as any polling does.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::config::{DriverChoice, RingSetup};

/// The io_uring flags of each setup.
fn builder(setup: RingSetup, core: Option<usize>) -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    match setup {
        RingSetup::Plain => {}
        RingSetup::CoopTaskrun => {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }
        RingSetup::DeferTaskrun => {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag();
        }
        RingSetup::Sqpoll => {
            b.setup_sqpoll(1000);
            if let Some(cpu) = core {
                b.setup_sqpoll_cpu(cpu as u32);
            }
        }
    }
    b
}

/// The io driver a worker actually runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActiveDriver {
    /// io_uring, with this setup.
    IoUring(RingSetup),
    /// epoll (monoio's legacy driver).
    Epoll,
}

impl ActiveDriver {
    /// Label for logs.
    pub fn label(self) -> &'static str {
        match self {
            ActiveDriver::IoUring(_) => "io_uring",
            ActiveDriver::Epoll => "epoll",
        }
    }

    /// The ring setup in use, for logs (`-` on epoll).
    pub fn ring_label(self) -> &'static str {
        match self {
            ActiveDriver::IoUring(setup) => setup.label(),
            ActiveDriver::Epoll => "-",
        }
    }
}

/// What a worker's runtime is built from.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeSpec {
    /// Driver choice.
    pub driver: DriverChoice,
    /// Submission queue entries.
    pub entries: u32,
    /// Ring flags.
    pub ring: RingSetup,
    /// Never sleep (see the module docs).
    pub busy_poll: bool,
    /// Poll instead of sleeping this long after each request's arrival (see the module
    /// docs; zero: off).
    pub spin: std::time::Duration,
    /// Plain TCP sockets receive by multishot recv (io_uring only; see
    /// [`super::multishot`]).
    pub multishot: bool,
    /// The core the worker is pinned to.
    pub core: Option<usize>,
}

/// What a worker's runtime came up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Started {
    /// The driver in use.
    pub driver: ActiveDriver,
    /// Whether its plain TCP sockets receive by multishot.
    pub multishot: bool,
}

/// Where a worker reports how its runtime started (or why it could not).
pub type Ready = std::sync::mpsc::Sender<std::io::Result<Started>>;

/// Build the runtime `spec` asks for and run `main` on it. `ready` gets what started (or
/// why nothing could) before `main` starts.
pub fn run<F, Fut>(spec: RuntimeSpec, ready: Ready, main: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let (busy_poll, window, multishot) = (spec.busy_poll, spec.spin, spec.multishot);
    // `ready` is answered from inside the runtime, once the multishot ring is set up.
    let main = move |driver: ActiveDriver, ready: Ready| async move {
        let uring = matches!(driver, ActiveDriver::IoUring(_));
        let multishot = multishot && start_multishot(driver);
        let _ = ready.send(Ok(Started { driver, multishot }));
        if busy_poll {
            monoio::spawn(spin(uring));
        } else if !window.is_zero() {
            if uring {
                monoio::spawn(spin_window(window));
            } else {
                tracing::warn!("workers.spin_us needs io_uring; this worker sleeps when idle");
            }
        }
        main().await
    };
    if spec.driver != DriverChoice::Epoll {
        match build_uring(&spec) {
            Ok((mut rt, setup)) => {
                rt.block_on(main(ActiveDriver::IoUring(setup), ready));
                return;
            }
            Err(e) if spec.driver == DriverChoice::IoUring => {
                let _ = ready.send(Err(std::io::Error::other(format!(
                    "io_uring requested but unavailable: {e}"
                ))));
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable; this worker runs on the epoll driver (slower)");
            }
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(main(ActiveDriver::Epoll, ready)),
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
}

/// Set up this worker's multishot receiving (see [`super::multishot`]); false, with a
/// warning, where it cannot be.
fn start_multishot(driver: ActiveDriver) -> bool {
    let ActiveDriver::IoUring(setup) = driver else {
        tracing::warn!("workers.multishot needs io_uring; this worker receives one read at a time");
        return false;
    };
    let flags_task_work = matches!(setup, RingSetup::DeferTaskrun | RingSetup::CoopTaskrun);
    match super::multishot::init(flags_task_work, setup == RingSetup::DeferTaskrun) {
        Ok(()) => {
            // Eager sends need requests issued inside the submitting enter.
            if setup == RingSetup::DeferTaskrun {
                super::eager::init();
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "no multishot recv; this worker receives one read at a time");
            false
        }
    }
}

type UringRuntime = monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>;

/// An io_uring runtime with the requested setup, or `plain` if the kernel refuses it.
fn build_uring(spec: &RuntimeSpec) -> std::io::Result<(UringRuntime, RingSetup)> {
    if !monoio::utils::detect_uring() {
        return Err(std::io::Error::other(
            "io_uring not supported by this kernel",
        ));
    }
    let want = spec.ring;
    let build = |setup: RingSetup| {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(spec.entries)
            .uring_builder(builder(setup, spec.core))
            .enable_timer()
            .build()
    };
    match build(want) {
        Ok(rt) => Ok((rt, want)),
        Err(e) if want != RingSetup::Plain => {
            tracing::warn!(setup = want.label(), error = %e, "ring setup refused by the kernel; using a plain ring");
            build(RingSetup::Plain).map(|rt| (rt, RingSetup::Plain))
        }
        Err(e) => Err(e),
    }
}

/// The busy-poll task: keeps the runtime from sleeping.
///
/// monoio reaps completions, advances its timer wheel and takes cross-thread wake-ups
/// when it parks, and it parks only when its run queue is empty. So on io_uring the task
/// keeps one read of `/dev/zero` in flight instead of yielding: the run queue empties,
/// the runtime parks, and the park's `io_uring_enter` (GETEVENTS, wait for one) submits
/// the read, which completes at once — so the park returns at once, having reaped every
/// completion the kernel posted, and the task issues the next read. One kernel entry per
/// turn of the loop and no sleep. (Yielding does not do it there: with a non-empty run
/// queue monoio only submits, and the completion queue is read at the next park. And a
/// task that wakes itself while it is polled goes back to the *front* of monoio's run
/// queue, so a spinner that yields that way starves every other task until it parks.
/// Spinning in user space — looking at the ring's memory, entering only when it has
/// something — was measured and not kept: README, Busy-poll.)
///
/// On epoll a turn with a non-empty run queue polls with a zero timeout, so the task
/// yields; but the timer wheel advances only in a park, so once per timer tick it waits
/// on a timer a tick past due: the run queue empties and the runtime parks with a zero
/// timeout, firing due timers. (A timer due *now* would not do: deadlines round up to the
/// next tick, and the park would sleep until it.)
async fn spin(uring: bool) {
    if uring {
        return spin_uring().await;
    }
    let tick = std::time::Duration::from_millis(1);
    loop {
        let now = monoio::time::Instant::now();
        monoio::time::sleep_until(now.checked_sub(tick).unwrap_or(now)).await;
        YieldNow(false).await;
    }
}

/// The io_uring spinner: a read of `/dev/zero` always in flight. If it cannot be kept,
/// the worker goes back to sleeping when idle (yielding would not reap completions).
async fn spin_uring() {
    let Some(mut poll) = ZeroPoll::open("busy-poll") else {
        return;
    };
    while poll.turn().await {}
}

/// A read of `/dev/zero` to keep in flight: it completes as soon as it is submitted, so
/// the park that submits it returns without sleeping, having reaped every completion.
struct ZeroPoll {
    zero: monoio::fs::File,
    buf: Vec<u8>,
    what: &'static str,
}

impl ZeroPoll {
    /// `what` names the mode in the warnings.
    fn open(what: &'static str) -> Option<ZeroPoll> {
        match std::fs::File::open("/dev/zero").and_then(monoio::fs::File::from_std) {
            Ok(zero) => Some(ZeroPoll {
                zero,
                buf: vec![0u8; 1],
                what,
            }),
            Err(e) => {
                tracing::warn!(error = %e, mode = what, "cannot open /dev/zero; this worker sleeps when idle");
                None
            }
        }
    }

    /// One turn of the worker's loop without sleeping; false if the read failed.
    async fn turn(&mut self) -> bool {
        let (res, buf) = self.zero.read_at(std::mem::take(&mut self.buf), 0).await;
        self.buf = buf;
        if let Err(e) = res {
            tracing::warn!(error = %e, mode = self.what, "read of /dev/zero failed; this worker sleeps when idle");
            return false;
        }
        true
    }
}

/// What the request path tells a spin window: a request arrived (`recent`), and the
/// sleeping spinner's waker.
struct SpinSignal {
    waker: std::cell::Cell<Option<std::task::Waker>>,
    recent: std::cell::Cell<bool>,
}

thread_local! {
    static SPIN: SpinSignal = const {
        SpinSignal {
            waker: std::cell::Cell::new(None),
            recent: std::cell::Cell::new(false),
        }
    };
}

/// A request arrived: the worker's spin window (if any) starts again. One thread-local
/// flag store per request when there is no window.
#[inline]
pub fn activity() {
    SPIN.with(|s| {
        s.recent.set(true);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    });
}

/// Ready at the next request arrival (at once if one came since the last look).
struct Activity;

impl Future for Activity {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        SPIN.with(|s| {
            if s.recent.replace(false) {
                Poll::Ready(())
            } else {
                s.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
    }
}

/// The spin window: poll like [`spin_uring`] for `window` after each request's arrival
/// (extended by every later arrival), then wait for the next arrival; meanwhile the
/// worker sleeps as usual.
async fn spin_window(window: std::time::Duration) {
    let Some(mut poll) = ZeroPoll::open("spin window") else {
        return;
    };
    loop {
        Activity.await;
        let mut end = std::time::Instant::now() + window;
        loop {
            if !poll.turn().await {
                return;
            }
            let now = std::time::Instant::now();
            if SPIN.with(|s| s.recent.replace(false)) {
                end = now + window;
            }
            if now >= end {
                break;
            }
        }
    }
}

/// Yield to the scheduler once.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
