//! Workers: one pinned thread per core, each running its own monoio runtime.
//!
//! A worker owns everything its connections touch: its `SO_REUSEPORT` listener, its copy
//! of the routing table ([`WorkerTable`]), its upstream pools, its JSON scanner, its splice
//! pipes. Nothing here is shared with another worker, so nothing needs a lock. The control
//! plane talks to a worker only through its [`Control`] channel: a new table is installed
//! between requests by swapping an `Rc` (requests in flight keep the one they started
//! with); a drain stops the accept loop and wakes idle keep-alive connections.
//!
//! # Driver
//! io_uring by default. If the ring cannot be created (old kernel, `io_uring_disabled`,
//! seccomp, memlock), the worker starts on monoio's epoll driver and says so once, loudly.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::io::{CancelHandle, Canceller};
use monoio::net::TcpListener;

use super::multishot;
pub use super::ring::ActiveDriver;
use super::ring::{self, RuntimeSpec};
use crate::access_log::AccessLog;
use crate::config::{DriverChoice, RetrySettings, RingSetup, Settings};
use crate::error::ProxyError;
use crate::forward::relay::RelayOptions;
use crate::forward::splice::PipePair;
use crate::forward::timer;
use crate::metrics::{bump, SnapshotRequest, WorkerMetrics};
use crate::route::extract::{ExtractRules, JsonScanner};
use crate::route::router::{RoutingTable, WorkerTable};
use crate::upstream::pool::{OpenSlot, PoolKey, Pools, UpstreamConn};
use crate::users::UserState;

/// Messages from the control plane to a worker.
pub enum Control {
    /// Install a new routing table (between requests); acknowledge on the sender once
    /// installed.
    Install(Arc<RoutingTable>, Option<flume::Sender<()>>),
    /// Stop accepting, finish in-flight requests, close idle connections, exit by the
    /// deadline.
    Drain {
        /// When to give up on requests still in flight.
        deadline: Instant,
    },
    /// Answer a metrics scrape (counters copied, latency histograms swapped, never copied).
    Snapshot(SnapshotRequest),
}

/// What a worker needs to start.
pub struct WorkerSpec {
    /// Worker index.
    pub id: usize,
    /// Core to pin to, if pinning.
    pub core: Option<usize>,
    /// Driver choice.
    pub driver: DriverChoice,
    /// io_uring entries.
    pub ring_entries: u32,
    /// io_uring setup.
    pub ring: RingSetup,
    /// Never sleep.
    pub busy_poll: bool,
    /// Poll instead of sleeping this long after each request's arrival.
    pub spin: Duration,
    /// Receive plain TCP by multishot recv.
    pub multishot: bool,
    /// Its own listener (already bound with `SO_REUSEPORT`, non-blocking).
    pub listener: std::net::TcpListener,
    /// The first routing table.
    pub table: Arc<RoutingTable>,
    /// Open connections beyond which new ones are refused.
    pub max_connections: usize,
    /// The shared access log, when enabled.
    pub access_log: Option<Arc<AccessLog>>,
    /// Per-user tables shared by all workers.
    pub users: Arc<UserState>,
}

/// A running worker as seen by the control plane.
pub struct WorkerHandle {
    /// Worker index.
    pub id: usize,
    /// Its control channel.
    pub control: flume::Sender<Control>,
    /// Its thread (taken by a drain that joins it).
    pub thread: Option<JoinHandle<()>>,
    /// The driver it runs on.
    pub driver: ActiveDriver,
    /// Whether its plain TCP sockets receive by multishot.
    pub multishot: bool,
}

/// Start a worker thread; returns once its runtime is up (or failed to start).
pub fn spawn(spec: WorkerSpec) -> std::io::Result<WorkerHandle> {
    let (control, inbox) = flume::unbounded();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let id = spec.id;
    let thread = std::thread::Builder::new()
        .name(format!("ringgate-w{id}"))
        .spawn(move || {
            if let Some(core) = spec.core {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                    tracing::warn!(worker = id, core, "could not pin worker to core");
                }
            }
            let runtime = RuntimeSpec {
                driver: spec.driver,
                entries: spec.ring_entries,
                ring: spec.ring,
                busy_poll: spec.busy_poll,
                spin: spec.spin,
                multishot: spec.multishot,
                core: spec.core,
            };
            ring::run(runtime, ready_tx, move || worker_main(spec, inbox));
        })?;
    let started: ring::Started = ready_rx
        .recv()
        .map_err(|_| std::io::Error::other("worker thread exited during startup"))??;
    Ok(WorkerHandle {
        id,
        control,
        thread: Some(thread),
        driver: started.driver,
        multishot: started.multishot,
    })
}

/// Per-worker state shared by its connection tasks (single-threaded: `Cell`/`RefCell`).
pub struct Worker {
    /// Index.
    pub id: usize,
    table: RefCell<Rc<WorkerTable>>,
    pools: RefCell<Pools>,
    scanner: RefCell<JsonScanner>,
    /// Spare splice pipes.
    pub pipes: RefCell<Vec<PipePair>>,
    open_connections: Cell<usize>,
    max_connections: usize,
    /// Connections being refused at the bound (answered 503, closing).
    refusing: Cell<usize>,
    is_draining: Cell<bool>,
    /// Set when the worker's main task ends: its background tasks end with it.
    has_ended: Cell<bool>,
    /// Background tasks waiting for the worker's end ([`Worker::until_end`]).
    end_wakers: RefCell<Vec<std::task::Waker>>,
    /// Connections waiting for their next request, woken by a drain.
    pub idle_reads: IdleReads,
    /// Fired at the drain deadline: ends tunnels.
    tunnel_canceller: RefCell<Canceller>,
    /// This worker's counters and histograms.
    pub metrics: WorkerMetrics,
    /// The shared access log, when enabled.
    pub access_log: Option<Arc<AccessLog>>,
    /// Per-user tables shared by all workers (rate limits, Commands in flight).
    pub users: Arc<UserState>,
    /// Requests between routing and the end of their response.
    pub in_flight: Cell<usize>,
    /// Mirrored Queries in flight.
    pub mirrors_in_flight: Cell<usize>,
    /// Recycled buffers of mirrored requests.
    pub mirror_buffers: RefCell<Vec<Vec<u8>>>,
    /// Retries this worker may still spend (earned per request, capped).
    retry_budget: Cell<f64>,
}

/// The pools' keys for a table: each backend's address and TLS settings, in table order.
fn pool_keys(table: &RoutingTable) -> impl Iterator<Item = PoolKey> + '_ {
    table.backends.iter().enumerate().map(|(i, b)| {
        let tls = table.backend_tls.get(i).and_then(Clone::clone);
        (b.addr, tls)
    })
}

impl Worker {
    fn new(
        id: usize,
        table: Arc<RoutingTable>,
        max_connections: usize,
        access_log: Option<Arc<AccessLog>>,
        users: Arc<UserState>,
    ) -> Self {
        Self {
            id,
            metrics: WorkerMetrics::new(&table),
            access_log,
            users,
            in_flight: Cell::new(0),
            mirrors_in_flight: Cell::new(0),
            mirror_buffers: RefCell::new(Vec::new()),
            retry_budget: Cell::new(table.settings.retry.budget_reserve),
            pools: RefCell::new(Pools::new(pool_keys(&table), table.version)),
            table: RefCell::new(Rc::new(WorkerTable::new(table))),
            scanner: RefCell::new(JsonScanner::new()),
            pipes: RefCell::new(Vec::new()),
            open_connections: Cell::new(0),
            max_connections,
            refusing: Cell::new(0),
            is_draining: Cell::new(false),
            has_ended: Cell::new(false),
            end_wakers: RefCell::new(Vec::new()),
            idle_reads: IdleReads::default(),
            tunnel_canceller: RefCell::new(Canceller::new()),
        }
    }

    /// The current table (a cheap `Rc` clone; the request keeps it to the end).
    #[inline]
    pub fn table(&self) -> Rc<WorkerTable> {
        self.table.borrow().clone()
    }

    /// Whether `table` is still the current one (no reload installed since).
    #[inline]
    pub fn is_current(&self, table: &Arc<RoutingTable>) -> bool {
        Arc::ptr_eq(&self.table.borrow().table, table)
    }

    /// Install a new table between requests; re-key the pools (and trim them to its bound).
    fn install(&self, table: Arc<RoutingTable>) {
        self.pools.borrow_mut().install(
            pool_keys(&table),
            table.version,
            table.settings.pool_max_idle_per_backend,
        );
        let next = WorkerTable::following(table.clone(), &self.table.borrow());
        let old = self.table.replace(Rc::new(next));
        self.metrics.relayout(Some(&old.table), &table);
    }

    fn answer_snapshot(&self, request: SnapshotRequest) {
        let ms = multishot::counts();
        self.metrics.multishot_ring_empty.set(ms.ring_empty);
        self.metrics.multishot_backpressure.set(ms.backpressure);
        let eager = super::eager::counts();
        self.metrics.eager_sent.set(eager.sent);
        self.metrics.eager_continued.set(eager.continued);
        let table = self.table();
        let pools = self.pools.borrow().counts();
        let open = self.open_connections.get();
        self.metrics
            .answer(request, self.id, &table.table, open, pools);
    }

    /// Carry out a control message (a drain is the caller's: it ends the accepting).
    fn obey(&self, control: Control) {
        match control {
            Control::Install(t, ack) => {
                tracing::debug!(
                    worker = self.id,
                    version = t.version,
                    "installed routing table"
                );
                self.install(t);
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            }
            Control::Snapshot(request) => self.answer_snapshot(request),
            Control::Drain { .. } => {}
        }
    }

    /// Whether a drain started.
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.is_draining.get()
    }

    /// Run a background task until it finishes or the worker ends. monoio frees only the
    /// tasks in its run queue when it stops: a task still waiting (on a timer, on the
    /// control channel) would keep this worker, its table and its buffers alive for the
    /// life of the process.
    async fn until_end(&self, task: impl std::future::Future<Output = ()>) {
        let mut task = std::pin::pin!(task);
        std::future::poll_fn(|cx| {
            if self.has_ended.get() || task.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
            let mut wakers = self.end_wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// End the background tasks; wait (briefly) until they have let go of the worker.
    async fn end(self: &Rc<Self>) {
        self.has_ended.set(true);
        for w in self.end_wakers.take() {
            w.wake();
        }
        // A connection still open past the deadline keeps its reference: not waited for.
        let until = Instant::now() + Duration::from_millis(100);
        while Rc::strong_count(self) > 1 + self.open_connections.get() && Instant::now() < until {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A handle that ends tunnels at the drain deadline.
    pub fn tunnel_stop_handle(&self) -> CancelHandle {
        self.tunnel_canceller.borrow().handle()
    }

    /// Scan a buffered body (raw, chunked when `is_chunked`) for the user id.
    pub fn scan_json_body(
        &self,
        raw: &[u8],
        is_chunked: bool,
        rules: &ExtractRules,
        out: &mut Vec<u8>,
    ) -> Result<bool, ProxyError> {
        let mut scanner = self.scanner.borrow_mut();
        if is_chunked {
            let input = scanner.input();
            let mut d = crate::http::chunked::ChunkedDecoder::new();
            d.feed(raw, &mut |data| input.extend_from_slice(data))
                .map_err(|e| ProxyError::bad_request(e.reason()))?;
            scanner.scan_input(rules, out)
        } else {
            scanner.scan(raw, rules, out)
        }
    }

    /// A pooled connection to backend `b` of table `version`, if one is idle and alive and
    /// was pooled in the server's epoch `pool_epoch` (its epoch now: see
    /// [`crate::upstream::backend::Backend::pool_epoch`]). Idle times are seconds: the
    /// coarse clock (no TSC read) measures them.
    pub fn take_upstream(
        &self,
        b: u16,
        version: u64,
        pool_epoch: u32,
        s: &Settings,
    ) -> Option<Box<UpstreamConn>> {
        self.pools.borrow_mut().take(
            b,
            version,
            pool_epoch,
            timer::coarse_now(),
            s.pool_idle_timeout,
            &self.metrics.pool_peeked,
        )
    }

    /// A place for one more connection to backend `b` of `table`, held by the connection
    /// until it closes; `None` (counted) when `pool.max_connections_per_backend` of them
    /// are open on this worker.
    pub fn reserve_upstream(&self, b: u16, table: &RoutingTable) -> Option<OpenSlot> {
        let addr = table.backends[b as usize].addr;
        let max = table.settings.pool_max_connections_per_backend;
        self.pools.borrow_mut().reserve(b, table.version, addr, max)
    }

    /// Return a connection to the pool after a clean exchange, in its server's epoch
    /// `pool_epoch`. `server_timeout` is the answer's `Keep-Alive: timeout`, counted from
    /// `asked_at`, an instant before the server can have answered (see [`Pools::put`]).
    pub fn return_upstream(
        &self,
        b: u16,
        version: u64,
        pool_epoch: u32,
        conn: Box<UpstreamConn>,
        server_timeout: Option<Duration>,
        asked_at: Instant,
    ) {
        let max = self.table.borrow().table.settings.pool_max_idle_per_backend;
        let now = timer::coarse_now();
        let left =
            server_timeout.map(|t| t.saturating_sub(now.saturating_duration_since(asked_at)));
        self.pools
            .borrow_mut()
            .put(b, version, pool_epoch, conn, now, max, left);
    }

    /// Relay options for one direction: this worker's pipes and splice counter.
    pub fn relay_options(
        &self,
        read_timeout: Duration,
        write_timeout: Duration,
        s: &Settings,
    ) -> RelayOptions<'_> {
        RelayOptions {
            read_timeout,
            write_timeout,
            splice_threshold: s.splice_threshold_bytes,
            pipes: &self.pipes,
            spliced: &self.metrics.spliced_bytes,
            stop: None,
            splicing: None,
        }
    }

    /// Earn retry budget for one request.
    #[inline]
    pub fn earn_retry_budget(&self, r: &RetrySettings) {
        let b = self.retry_budget.get() + r.budget_ratio;
        self.retry_budget.set(b.min(r.budget_reserve.max(1.0)));
    }

    /// Spend one retry if the budget allows.
    pub fn spend_retry_budget(&self) -> bool {
        let b = self.retry_budget.get();
        if b >= 1.0 {
            self.retry_budget.set(b - 1.0);
            true
        } else {
            false
        }
    }

    /// Open client connections.
    pub fn open_connections(&self) -> usize {
        self.open_connections.get()
    }
}

async fn worker_main(spec: WorkerSpec, inbox: flume::Receiver<Control>) {
    let id = spec.id;
    let worker = Rc::new(Worker::new(
        id,
        spec.table,
        spec.max_connections,
        spec.access_log,
        spec.users,
    ));
    let listener = match TcpListener::from_std(spec.listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(worker = id, error = %e, "cannot adopt listener");
            return;
        }
    };
    let w = worker.clone();
    monoio::spawn(async move { w.until_end(sweep_pools(&w)).await });
    let w = worker.clone();
    monoio::spawn(async move { w.until_end(watch_pools(&w)).await });
    // Accepting runs in its own task and stops through a cancel handle, never by dropping
    // an accept in flight: a dropped io_uring accept may already hold a connection that
    // would then be lost.
    let accept_stop = Canceller::new();
    let accepting = monoio::spawn(accept_loop(worker.clone(), listener, accept_stop.handle()));
    let deadline = loop {
        match inbox.recv_async().await {
            Ok(Control::Drain { deadline }) => break deadline,
            Ok(control) => worker.obey(control),
            Err(_) => break Instant::now(),
        }
    };
    worker.is_draining.set(true);
    // Scrapes and reloads are still answered while connections finish (the task ends with
    // the worker).
    let w = worker.clone();
    monoio::spawn(async move {
        let obey = async {
            while let Ok(control) = inbox.recv_async().await {
                w.obey(control);
            }
        };
        w.until_end(obey).await
    });
    accept_stop.cancel();
    accepting.await;
    // Wake connections waiting for their next request; they see the drain and close.
    worker.idle_reads.wake_all();
    while worker.open_connections.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    // Tunnels have no request to finish: they end at the deadline.
    let t = worker.tunnel_canceller.replace(Canceller::new());
    t.cancel();
    let grace = Instant::now() + Duration::from_millis(100);
    while worker.open_connections.get() > 0 && Instant::now() < grace {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.pools.borrow_mut().clear();
    if let (_, Some(watcher)) = multishot::watch_idle_sockets(None) {
        watcher.wake();
    }
    multishot::stop_all(Duration::from_millis(100)).await;
    worker.end().await;
    tracing::debug!(
        worker = id,
        left = worker.open_connections.get(),
        "worker drained"
    );
}

async fn accept_loop(worker: Rc<Worker>, listener: TcpListener, stop: CancelHandle) {
    // Failures since the last warning, and when it was logged: at most one a second, so
    // a worker at its fd limit does not flood the log (and journald's rate limit).
    let (mut failed, mut warned_at): (u64, Option<Instant>) = (0, None);
    loop {
        match listener.cancelable_accept(stop.clone()).await {
            Ok((stream, peer)) => admit(&worker, stream, peer),
            Err(_) if worker.is_draining() => return,
            Err(e) => {
                failed += 1;
                if warned_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(worker = worker.id, error = %e, failures = failed, "accept failed");
                    (failed, warned_at) = (0, Some(Instant::now()));
                }
                // EMFILE and friends: back off instead of spinning.
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Connections refused at the bound that may be answered at once (each is told `503`
/// and closed in stages); beyond, they are closed without an answer.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

fn admit(worker: &Rc<Worker>, stream: monoio::net::TcpStream, peer: SocketAddr) {
    if worker.open_connections.get() >= worker.max_connections {
        // The connection idle the longest makes room: it closes at its next turn (until
        // then the count is over the bound, by the connections still closing).
        if worker.idle_reads.reclaim_oldest() {
            bump(&worker.metrics.reclaimed, 1);
        } else {
            refuse_at_bound(worker, stream);
            return;
        }
    }
    bump(&worker.metrics.accepted, 1);
    worker
        .open_connections
        .set(worker.open_connections.get() + 1);
    let w = worker.clone();
    // The connection's timed I/O reuses the timers of its own pool.
    monoio::spawn(timer::with_pool(async move {
        super::conn::serve(&w, stream, peer).await;
        w.open_connections.set(w.open_connections.get() - 1);
    }));
}

/// A connection beyond the bound, with none idle to make room: answered `503` and closed
/// in stages, or closed at once.
fn refuse_at_bound(worker: &Rc<Worker>, stream: monoio::net::TcpStream) {
    bump(&worker.metrics.refused, 1);
    let refusing = worker.refusing.get();
    // A TLS client cannot read a cleartext answer (and a handshake is the work the bound
    // is there to refuse): closed without one.
    if refusing >= MAX_REFUSALS_IN_FLIGHT || worker.table().table.listener_tls.is_some() {
        drop(stream);
        return;
    }
    worker.refusing.set(refusing + 1);
    let w = worker.clone();
    monoio::spawn(async move {
        super::conn::refuse(stream).await;
        w.refusing.set(w.refusing.get() - 1);
    });
}

/// Close pooled connections that have been idle too long, once a second.
async fn sweep_pools(worker: &Worker) {
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        if worker.is_draining() {
            return;
        }
        let idle = worker.table.borrow().table.settings.pool_idle_timeout;
        worker.pools.borrow_mut().sweep(timer::coarse_now(), idle);
    }
}

/// Close pooled connections on which something arrived while idle (their server's close,
/// mostly) as the ring reports it, so the server's side finishes its close. Woken only by
/// such arrivals (see [`multishot::watch_idle_sockets`]); ends at the drain, or at once
/// where the worker does not receive by multishot.
async fn watch_pools(worker: &Worker) {
    std::future::poll_fn(|cx| {
        let watcher = (!worker.is_draining()).then_some(cx.waker());
        if !multishot::watch_idle_sockets(watcher).0 || watcher.is_none() {
            return std::task::Poll::Ready(());
        }
        worker.pools.borrow_mut().retire_heard();
        std::task::Poll::Pending
    })
    .await
}

/// The sockets of connections waiting for their next request (a slot each, reused).
///
/// A drain wakes them by shutting each socket's reading side: the pending read ends with
/// EOF and the connection closes quietly. Cheaper on every request than a cancellable
/// read, whose registration hashes into a set (monoio's cancel bookkeeping).
///
/// At the worker's connection bound the one idle the longest is closed the same way to
/// make room for a new connection ([`IdleReads::reclaim_oldest`]), as nginx reuses its
/// keep-alive connections: an idle connection has no request to lose, and a client must
/// be ready for the close of one anyway (its keep-alive timeout). A TLS handshake under
/// way is registered too (a drain ends it) but is not idle: it is never reclaimed.
#[derive(Default)]
pub struct IdleReads {
    /// Socket (-1: free, or already shut) and when it went idle, in registrations.
    slots: RefCell<Vec<(RawFd, u64)>>,
    free: RefCell<Vec<usize>>,
    /// Registrations so far: the age order of the idle ones.
    entered: Cell<u64>,
}

/// The registration order of a socket that is never reclaimed.
const NOT_IDLE: u64 = u64::MAX;

impl IdleReads {
    /// Register an idle connection's socket `fd` until the guard is dropped.
    pub fn enter(&self, fd: RawFd) -> IdleRead<'_> {
        let n = self.entered.get();
        self.entered.set(n + 1);
        self.register(fd, n)
    }

    /// Register the socket `fd` of a TLS handshake under way, for a drain to wake only.
    pub fn enter_handshake(&self, fd: RawFd) -> IdleRead<'_> {
        self.register(fd, NOT_IDLE)
    }

    fn register(&self, fd: RawFd, since: u64) -> IdleRead<'_> {
        let slot = match self.free.borrow_mut().pop() {
            Some(slot) => {
                self.slots.borrow_mut()[slot] = (fd, since);
                slot
            }
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push((fd, since));
                slots.len() - 1
            }
        };
        IdleRead { reads: self, slot }
    }

    /// Shut the reading side of every registered socket.
    pub fn wake_all(&self) {
        for &(fd, _) in self.slots.borrow().iter().filter(|s| s.0 >= 0) {
            // SAFETY: a registered fd belongs to a connection whose read is pending on this
            // thread (the guard unregisters it before the connection can close it).
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        }
    }

    /// Shut the reading side of the connection idle the longest (it closes quietly at its
    /// next turn, as at its idle timeout); false when none is idle. A scan of the slots:
    /// only at the connection bound.
    pub fn reclaim_oldest(&self) -> bool {
        let mut slots = self.slots.borrow_mut();
        let oldest = slots
            .iter_mut()
            .filter(|s| s.0 >= 0 && s.1 != NOT_IDLE)
            .min_by_key(|s| s.1);
        let Some(s) = oldest else {
            return false;
        };
        // SAFETY: as in `wake_all`.
        unsafe { libc::shutdown(s.0, libc::SHUT_RD) };
        // Not picked again; its guard still frees the slot.
        s.0 = -1;
        true
    }
}

/// A registration in [`IdleReads`].
pub struct IdleRead<'a> {
    reads: &'a IdleReads,
    slot: usize,
}

impl Drop for IdleRead<'_> {
    fn drop(&mut self) {
        self.reads.slots.borrow_mut()[self.slot].0 = -1;
        self.reads.free.borrow_mut().push(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::IdleReads;

    /// Whether `s`'s reading side was shut: a read ends at once, with nothing.
    fn is_shut(mut s: &UnixStream) -> bool {
        s.set_nonblocking(true).unwrap();
        match s.read(&mut [0u8; 8]) {
            Ok(0) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            other => panic!("unexpected read: {other:?}"),
        }
    }

    #[test]
    fn the_connection_idle_the_longest_is_reclaimed_first_and_a_handshake_never() {
        let pairs: Vec<_> = (0..4).map(|_| UnixStream::pair().unwrap()).collect();
        let [handshake, older, newer, later] = [0, 1, 2, 3].map(|i| &pairs[i].0);
        let reads = IdleReads::default();
        let _h = reads.enter_handshake(handshake.as_raw_fd());
        let _o = reads.enter(older.as_raw_fd());
        let n = reads.enter(newer.as_raw_fd());
        assert!(reads.reclaim_oldest());
        assert!(is_shut(older));
        assert!(!is_shut(newer));
        // The newer one is served and goes idle again after a later one (its slot
        // reused): now it is the youngest.
        drop(n);
        let _l = reads.enter(later.as_raw_fd());
        let _n = reads.enter(newer.as_raw_fd());
        assert!(reads.reclaim_oldest());
        assert!(is_shut(later) && !is_shut(newer));
        assert!(reads.reclaim_oldest());
        assert!(is_shut(newer));
        // Only the handshake is left.
        assert!(!reads.reclaim_oldest());
        assert!(!is_shut(handshake));
    }
}
