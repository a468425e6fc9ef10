//! One worker thread: its connections, its share of the request schedule, and the
//! coordinated-omission bookkeeping. Nothing here is shared with other workers; the thread
//! returns its [`RunStats`] when the run ends.
//!
//! # The loop
//!
//! Each turn: (1) issue every request that is due, (2) write each connection that got new
//! bytes once, (3) wait in `epoll` until the next intended send time, I/O, or a housekeeping
//! tick, (4) read and frame responses, (5) every tick, time out stuck requests and retry
//! failed connects.
//!
//! A connection takes up to `--pipeline` requests; those with a free slot sit in a FIFO
//! ("ready queue"), so requests rotate over connections and a busy connection is never
//! scanned for.
//!
//! # Coordinated-omission correction
//!
//! Open-loop: request `k` of this worker has the intended time `first + k · interval`, fixed
//! before the run (workers are offset so that together they follow one evenly spaced
//! schedule). When request `k` is due but no connection has a free slot, it is *not* dropped
//! or re-timed: the loop waits for a slot and then sends it with its original intended time.
//! Its recorded latency is `response complete − intended`, so time spent waiting behind a
//! stalled server is counted — a 1 s stall at 1000 req/s yields ~1000 samples spread from
//! 0 to 1 s, not one slow sample. `response complete − actual send` goes to a second,
//! uncorrected histogram for comparison. Closed-loop: intended = actual send time.
//!
//! # Hot path
//!
//! Per request: one `write` (often shared with other requests on the same connection), a
//! share of one `epoll_pwait2` and one `read`, one clock read per read, three histogram
//! increments. No allocation once buffers have grown.
//!
//! # Errors
//!
//! A connection failure fails every request queued on it with one [`ErrorKind`] (see there),
//! then reconnects (at once, or after [`RECONNECT_BACKOFF_NS`] if the connect itself failed).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::LoadConfig;
use crate::poller::{Event, Poller};
use crate::request::{Class, RequestFactory, Rng};
use crate::response::{ResponseHead, ResponseParser, MAX_HEAD_BYTES};
use crate::stats::{ErrorKind, RunStats};

/// Read buffer per connection. Bodies are skipped, never stored, so this only has to hold a
/// response head (plus whatever else arrived in the same read).
const READ_BUFFER_BYTES: usize = 2 * MAX_HEAD_BYTES;
/// Wait this long before reconnecting after a failed connect.
pub const RECONNECT_BACKOFF_NS: u64 = 20_000_000;
const MAX_EVENTS: usize = 256;

/// The run's shared timeline, in nanoseconds since `origin`; identical in every worker.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    pub origin: Instant,
    /// When requests start (connections are opened before this).
    pub start_ns: u64,
    /// End of warm-up: requests intended before this are not measured.
    pub measure_start_ns: u64,
    /// End of the measured period (`--duration` runs).
    pub end_ns: Option<u64>,
}

impl RunClock {
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// This worker's part of an open-loop schedule.
#[derive(Debug, Clone, Copy)]
pub struct OpenSchedule {
    pub first_ns: u64,
    pub interval_ns: f64,
    /// Requests `0..k_end` are issued (warm-up ones included).
    pub k_end: u64,
}

impl OpenSchedule {
    pub fn intended_ns(&self, k: u64) -> u64 {
        self.first_ns + (k as f64 * self.interval_ns) as u64
    }

    /// First `k` whose intended time is at or after `ns`.
    pub fn first_at_or_after(&self, ns: u64) -> u64 {
        if ns <= self.first_ns {
            return 0;
        }
        let mut k = ((ns - self.first_ns) as f64 / self.interval_ns).floor() as u64;
        while self.intended_ns(k) < ns {
            k += 1;
        }
        while k > 0 && self.intended_ns(k - 1) >= ns {
            k -= 1;
        }
        k
    }
}

/// What one worker must do.
#[derive(Debug, Clone)]
pub struct WorkerPlan {
    pub index: usize,
    pub connections: usize,
    /// `None` = closed-loop.
    pub open_loop: Option<OpenSchedule>,
    /// Closed-loop `--requests` share: stop after this many measured requests.
    pub closed_loop_limit: Option<u64>,
    /// Give up waiting for responses at this time (ns); what is left is reported.
    pub hard_deadline_ns: Option<u64>,
    pub cpu: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    intended_ns: u64,
    sent_ns: u64,
    class: Class,
    is_measured: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not connected; reconnect at `retry_at_ns`. Requests may still queue here.
    Down {
        retry_at_ns: u64,
    },
    Connecting {
        since_ns: u64,
    },
    Open,
}

struct Conn {
    stream: Option<TcpStream>,
    phase: Phase,
    generation: u32,
    write_buf: Vec<u8>,
    write_pos: usize,
    read_buf: Box<[u8]>,
    read_pos: usize,
    read_len: usize,
    parser: ResponseParser,
    inflight: VecDeque<Pending>,
    is_write_armed: bool,
    is_ready_queued: bool,
    is_dirty: bool,
}

impl Conn {
    fn new(depth: usize) -> Self {
        Conn {
            stream: None,
            phase: Phase::Down { retry_at_ns: 0 },
            generation: 0,
            write_buf: Vec::with_capacity(512 * depth),
            write_pos: 0,
            read_buf: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
            read_pos: 0,
            read_len: 0,
            parser: ResponseParser::new(),
            inflight: VecDeque::with_capacity(depth),
            is_write_armed: false,
            is_ready_queued: false,
            is_dirty: false,
        }
    }
}

struct Worker<'a> {
    factory: &'a RequestFactory,
    target: SocketAddr,
    clock: RunClock,
    depth: usize,
    timeout_ns: u64,
    new_conn_ratio: f64,
    is_open_loop: bool,
    poller: Poller,
    conns: Vec<Conn>,
    ready: VecDeque<usize>,
    dirty: Vec<usize>,
    rng: Rng,
    order_seq: u64,
    inflight_total: usize,
    stats: RunStats,
}

/// Runs one worker to completion on the calling thread.
pub fn run_worker(
    config: &LoadConfig,
    factory: &RequestFactory,
    plan: &WorkerPlan,
    clock: RunClock,
) -> io::Result<RunStats> {
    crate::poller::set_fine_timer_slack();
    let depth = config.pipeline_depth;
    let mut worker = Worker {
        factory,
        target: config.target,
        clock,
        depth,
        timeout_ns: config.request_timeout.as_nanos().min(u128::from(u64::MAX)) as u64,
        new_conn_ratio: config.new_conn_ratio,
        is_open_loop: plan.open_loop.is_some(),
        poller: Poller::new(MAX_EVENTS)?,
        conns: (0..plan.connections).map(|_| Conn::new(depth)).collect(),
        ready: VecDeque::with_capacity(plan.connections),
        dirty: Vec::with_capacity(plan.connections),
        rng: Rng::new(config.seed.wrapping_mul(0x100_0000_01b3) ^ plan.index as u64),
        order_seq: (plan.index as u64) << 40,
        inflight_total: 0,
        stats: RunStats::default(),
    };
    worker.run(plan)?;
    Ok(worker.stats)
}

impl Worker<'_> {
    fn run(&mut self, plan: &WorkerPlan) -> io::Result<()> {
        let now = self.clock.now_ns();
        for ci in 0..self.conns.len() {
            self.open(ci, now);
        }
        // Let connects complete before the first intended send time.
        loop {
            let now = self.clock.now_ns();
            if now >= self.clock.start_ns {
                break;
            }
            self.poll(self.clock.start_ns - now)?;
        }

        let scan_interval_ns = (self.timeout_ns / 20).clamp(1_000_000, 50_000_000);
        let mut next_scan_ns = self.clock.start_ns + scan_interval_ns;
        let mut next_k = 0u64;
        let mut closed_loop_measured = 0u64;
        loop {
            let now = self.clock.now_ns();
            let is_issuing_done = match plan.open_loop {
                Some(schedule) => {
                    while next_k < schedule.k_end {
                        let intended_ns = schedule.intended_ns(next_k);
                        if intended_ns > now {
                            break;
                        }
                        let Some(ci) = self.take_ready() else { break };
                        self.enqueue(ci, intended_ns, now);
                        self.mark_ready(ci);
                        next_k += 1;
                    }
                    next_k >= schedule.k_end
                }
                None => {
                    let is_past_end = self.clock.end_ns.is_some_and(|end| now >= end);
                    let is_measuring = now >= self.clock.measure_start_ns;
                    let limit = plan.closed_loop_limit.unwrap_or(u64::MAX);
                    if !is_past_end && closed_loop_measured < limit {
                        'fill: while let Some(ci) = self.take_ready() {
                            while self.conns[ci].inflight.len() < self.depth {
                                self.enqueue(ci, now, now);
                                if is_measuring {
                                    closed_loop_measured += 1;
                                    if closed_loop_measured >= limit {
                                        break 'fill;
                                    }
                                }
                            }
                        }
                    }
                    is_past_end || closed_loop_measured >= limit
                }
            };

            self.flush_dirty();

            if is_issuing_done && self.inflight_total == 0 {
                break;
            }
            if plan
                .hard_deadline_ns
                .is_some_and(|deadline| now >= deadline)
            {
                self.abandon(plan, next_k);
                break;
            }

            let mut wake_ns = next_scan_ns;
            if let Some(schedule) = plan.open_loop {
                if !is_issuing_done && !self.ready.is_empty() {
                    wake_ns = wake_ns.min(schedule.intended_ns(next_k));
                }
            } else if let Some(end) = self.clock.end_ns {
                if !is_issuing_done {
                    wake_ns = wake_ns.min(end);
                }
            }
            if let Some(deadline) = plan.hard_deadline_ns {
                wake_ns = wake_ns.min(deadline);
            }
            self.poll(wake_ns.saturating_sub(now))?;

            let now = self.clock.now_ns();
            if now >= next_scan_ns {
                self.scan(now);
                next_scan_ns = now + scan_interval_ns;
            }
        }
        self.close_all();
        Ok(())
    }

    /// Waits up to `timeout_ns` and handles what arrived.
    fn poll(&mut self, timeout_ns: u64) -> io::Result<()> {
        let ready = self.poller.wait(Some(Duration::from_nanos(timeout_ns)))?;
        for i in 0..ready {
            let event = self.poller.event(i);
            self.on_event(event);
        }
        Ok(())
    }

    fn token(&self, ci: usize) -> u64 {
        (u64::from(self.conns[ci].generation) << 32) | ci as u64
    }

    fn on_event(&mut self, event: Event) {
        let ci = (event.token & 0xffff_ffff) as usize;
        let generation = (event.token >> 32) as u32;
        let Some(conn) = self.conns.get(ci) else {
            return;
        };
        if conn.generation != generation || conn.stream.is_none() {
            return; // an event for a socket closed earlier in this batch
        }
        match conn.phase {
            Phase::Connecting { .. } => {
                if event.is_writable || event.is_readable {
                    self.finish_connect(ci);
                }
            }
            Phase::Open => {
                if event.is_writable && conn.is_write_armed {
                    self.flush(ci);
                }
                let conn = &self.conns[ci];
                if event.is_readable && conn.generation == generation && conn.phase == Phase::Open {
                    self.read(ci);
                }
            }
            Phase::Down { .. } => {}
        }
    }

    /// Starts a non-blocking connect on slot `ci`.
    fn open(&mut self, ci: usize, now: u64) {
        let conn = &mut self.conns[ci];
        conn.generation = conn.generation.wrapping_add(1);
        let result = connect_nonblocking(self.target).and_then(|(stream, is_connected)| {
            let token = (u64::from(conn.generation) << 32) | ci as u64;
            self.poller
                .add(stream.as_raw_fd(), token, !is_connected)
                .map(|()| (stream, is_connected))
        });
        match result {
            Ok((stream, is_connected)) => {
                conn.stream = Some(stream);
                conn.is_write_armed = !is_connected;
                if is_connected {
                    conn.phase = Phase::Open;
                    self.stats.connects += 1;
                    self.mark_dirty(ci);
                } else {
                    conn.phase = Phase::Connecting { since_ns: now };
                }
                self.mark_ready(ci);
            }
            Err(_) => self.fail(ci, ErrorKind::Connect, now),
        }
    }

    fn finish_connect(&mut self, ci: usize) {
        let now = self.clock.now_ns();
        let token = self.token(ci);
        let conn = &mut self.conns[ci];
        let stream = conn.stream.as_ref().expect("connecting slot has a socket");
        let is_connected = matches!(stream.take_error(), Ok(None)) && stream.peer_addr().is_ok();
        if !is_connected
            || self
                .poller
                .modify(stream.as_raw_fd(), token, false)
                .is_err()
        {
            self.fail(ci, ErrorKind::Connect, now);
            return;
        }
        conn.phase = Phase::Open;
        conn.is_write_armed = false;
        self.stats.connects += 1;
        self.flush(ci);
    }

    /// Drops the socket (no error) and reconnects: `Connection: close`, idle EOF,
    /// `--new-conn-ratio`.
    fn recycle(&mut self, ci: usize, now: u64) {
        self.close(ci);
        self.open(ci, now);
    }

    /// Fails every request queued on `ci` with `kind`, closes it, reconnects.
    fn fail(&mut self, ci: usize, kind: ErrorKind, now: u64) {
        let conn = &mut self.conns[ci];
        for pending in conn.inflight.drain(..) {
            if pending.is_measured {
                self.stats.record_error(kind);
            }
            self.inflight_total -= 1;
        }
        self.close(ci);
        if kind == ErrorKind::Connect {
            self.stats.connect_failures += 1;
            self.conns[ci].phase = Phase::Down {
                retry_at_ns: now + RECONNECT_BACKOFF_NS,
            };
            self.mark_ready(ci);
        } else {
            self.open(ci, now);
        }
    }

    fn close(&mut self, ci: usize) {
        let conn = &mut self.conns[ci];
        if let Some(stream) = conn.stream.take() {
            let _ = self.poller.remove(stream.as_raw_fd());
        }
        conn.phase = Phase::Down { retry_at_ns: 0 };
        conn.write_buf.clear();
        conn.write_pos = 0;
        conn.read_pos = 0;
        conn.read_len = 0;
        conn.parser = ResponseParser::new();
        conn.is_write_armed = false;
    }

    fn close_all(&mut self) {
        for ci in 0..self.conns.len() {
            self.close(ci);
        }
    }

    fn mark_ready(&mut self, ci: usize) {
        let conn = &mut self.conns[ci];
        if !conn.is_ready_queued && conn.inflight.len() < self.depth {
            conn.is_ready_queued = true;
            self.ready.push_back(ci);
        }
    }

    fn take_ready(&mut self) -> Option<usize> {
        while let Some(ci) = self.ready.pop_front() {
            let conn = &mut self.conns[ci];
            conn.is_ready_queued = false;
            if conn.inflight.len() < self.depth {
                return Some(ci);
            }
        }
        None
    }

    fn mark_dirty(&mut self, ci: usize) {
        let conn = &mut self.conns[ci];
        if !conn.is_dirty {
            conn.is_dirty = true;
            self.dirty.push(ci);
        }
    }

    /// Appends one request to `ci`'s write buffer.
    fn enqueue(&mut self, ci: usize, intended_ns: u64, now: u64) {
        if self.new_conn_ratio > 0.0 && self.rng.unit_f64() < self.new_conn_ratio {
            let conn = &self.conns[ci];
            if conn.inflight.is_empty() && conn.phase == Phase::Open {
                self.recycle(ci, now);
            } else {
                self.stats.new_conn_skipped += 1;
            }
        }
        let is_measured = intended_ns >= self.clock.measure_start_ns;
        let conn = &mut self.conns[ci];
        let class = self
            .factory
            .write_next(&mut self.rng, self.order_seq, &mut conn.write_buf);
        self.order_seq += 1;
        conn.inflight.push_back(Pending {
            intended_ns,
            sent_ns: now,
            class,
            is_measured,
        });
        self.inflight_total += 1;
        if is_measured {
            self.stats.sent += 1;
            self.stats.sent_by_class[class as usize] += 1;
            if self.is_open_loop {
                self.stats
                    .send_lag
                    .saturating_record(now.saturating_sub(intended_ns));
            }
        }
        self.mark_dirty(ci);
    }

    /// Writes every connection that got bytes since the last flush (a flush that fails and
    /// reconnects may add entries; they are written in the same call).
    fn flush_dirty(&mut self) {
        while let Some(ci) = self.dirty.pop() {
            self.conns[ci].is_dirty = false;
            self.flush(ci);
        }
    }

    fn flush(&mut self, ci: usize) {
        let token = self.token(ci);
        let conn = &mut self.conns[ci];
        if conn.phase != Phase::Open {
            return; // sent once the connect completes
        }
        let stream = conn.stream.as_mut().expect("open slot has a socket");
        while conn.write_pos < conn.write_buf.len() {
            match stream.write(&conn.write_buf[conn.write_pos..]) {
                Ok(0) => return self.fail(ci, ErrorKind::Reset, self.clock.now_ns()),
                Ok(n) => conn.write_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !conn.is_write_armed {
                        conn.is_write_armed = true;
                        if self.poller.modify(stream.as_raw_fd(), token, true).is_err() {
                            return self.fail(ci, ErrorKind::Reset, self.clock.now_ns());
                        }
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(ci, ErrorKind::Reset, self.clock.now_ns()),
            }
        }
        conn.write_buf.clear();
        conn.write_pos = 0;
        if conn.is_write_armed {
            conn.is_write_armed = false;
            if self
                .poller
                .modify(stream.as_raw_fd(), token, false)
                .is_err()
            {
                self.fail(ci, ErrorKind::Reset, self.clock.now_ns());
            }
        }
    }

    fn read(&mut self, ci: usize) {
        let generation = self.conns[ci].generation;
        loop {
            let conn = &mut self.conns[ci];
            if conn.read_len == conn.read_buf.len() {
                if conn.read_pos == 0 {
                    // A head larger than the buffer; the parser limit is below this size, so
                    // this is unreachable unless the limits are changed inconsistently.
                    return self.fail(ci, ErrorKind::Parse, self.clock.now_ns());
                }
                conn.read_buf.copy_within(conn.read_pos..conn.read_len, 0);
                conn.read_len -= conn.read_pos;
                conn.read_pos = 0;
            }
            let space = conn.read_buf.len() - conn.read_len;
            let stream = conn.stream.as_mut().expect("open slot has a socket");
            let result = stream.read(&mut conn.read_buf[conn.read_len..]);
            let now = self.clock.now_ns();
            match result {
                Ok(0) => return self.on_eof(ci, now),
                Ok(n) => {
                    conn.read_len += n;
                    self.parse_responses(ci, now);
                    let conn = &self.conns[ci];
                    if n < space || conn.generation != generation || conn.phase != Phase::Open {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(ci, ErrorKind::Reset, now),
            }
        }
    }

    /// Frames every complete response in the read buffer.
    fn parse_responses(&mut self, ci: usize, now: u64) {
        loop {
            let conn = &mut self.conns[ci];
            if conn.read_pos == conn.read_len {
                conn.read_pos = 0;
                conn.read_len = 0;
                return;
            }
            match conn
                .parser
                .feed(&conn.read_buf[conn.read_pos..conn.read_len])
            {
                Ok(progress) => {
                    conn.read_pos += progress.consumed;
                    match progress.done {
                        Some(head) => {
                            if !self.complete(ci, head, now) {
                                return;
                            }
                        }
                        None => {
                            if conn.read_pos == conn.read_len {
                                conn.read_pos = 0;
                                conn.read_len = 0;
                            }
                            return;
                        }
                    }
                }
                Err(_) => return self.fail(ci, ErrorKind::Parse, now),
            }
        }
    }

    /// Matches a response to the oldest in-flight request. Returns false if the connection
    /// was closed as a result.
    fn complete(&mut self, ci: usize, head: ResponseHead, now: u64) -> bool {
        let conn = &mut self.conns[ci];
        let Some(pending) = conn.inflight.pop_front() else {
            // A response nobody asked for: the stream is out of step.
            self.fail(ci, ErrorKind::Parse, now);
            return false;
        };
        self.inflight_total -= 1;
        if pending.is_measured {
            self.stats.record_response(
                pending.class,
                head.status,
                now.saturating_sub(pending.intended_ns),
                now.saturating_sub(pending.sent_ns),
                now,
            );
        }
        if head.is_close {
            if conn.inflight.is_empty() {
                self.recycle(ci, now);
            } else {
                self.fail(ci, ErrorKind::Reset, now);
            }
            return false;
        }
        self.mark_ready(ci);
        true
    }

    fn on_eof(&mut self, ci: usize, now: u64) {
        let conn = &mut self.conns[ci];
        let unconsumed = conn.read_len - conn.read_pos;
        match conn.parser.finish_at_eof(unconsumed) {
            Ok(Some(head)) => {
                let head = ResponseHead {
                    is_close: true,
                    ..head
                };
                self.complete(ci, head, now);
            }
            Ok(None) if conn.inflight.is_empty() => self.recycle(ci, now),
            Ok(None) | Err(_) => self.fail(ci, ErrorKind::Reset, now),
        }
    }

    /// Housekeeping tick: per-request timeouts, connect timeouts, reconnect retries.
    fn scan(&mut self, now: u64) {
        for ci in 0..self.conns.len() {
            let conn = &self.conns[ci];
            match conn.phase {
                Phase::Connecting { since_ns } => {
                    if now.saturating_sub(since_ns) >= self.timeout_ns {
                        self.fail(ci, ErrorKind::Connect, now);
                    }
                }
                Phase::Open => {
                    if conn
                        .inflight
                        .front()
                        .is_some_and(|p| now.saturating_sub(p.sent_ns) >= self.timeout_ns)
                    {
                        self.fail(ci, ErrorKind::Timeout, now);
                    }
                }
                Phase::Down { retry_at_ns } => {
                    if now >= retry_at_ns {
                        self.open(ci, now);
                    }
                }
            }
        }
    }

    /// The hard deadline passed: count what is left instead of waiting for it.
    fn abandon(&mut self, plan: &WorkerPlan, next_k: u64) {
        for conn in &mut self.conns {
            for pending in conn.inflight.drain(..) {
                if pending.is_measured {
                    self.stats.unfinished += 1;
                }
            }
        }
        self.inflight_total = 0;
        if let Some(schedule) = plan.open_loop {
            let first_measured = schedule.first_at_or_after(self.clock.measure_start_ns);
            self.stats.unsent += schedule.k_end.saturating_sub(next_k.max(first_measured));
        }
    }
}

/// Opens a non-blocking TCP socket to `target` with `TCP_NODELAY`. Returns the stream and
/// whether it connected immediately.
fn connect_nonblocking(target: SocketAddr) -> io::Result<(TcpStream, bool)> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    let is_connected = match socket.connect(&target.into()) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => false,
        Err(e) => return Err(e),
    };
    Ok((socket.into(), is_connected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_positions() {
        let s = OpenSchedule {
            first_ns: 1_000,
            interval_ns: 333.3,
            k_end: 10,
        };
        assert_eq!(s.intended_ns(0), 1_000);
        assert_eq!(s.intended_ns(3), 1_999);
        assert_eq!(s.first_at_or_after(0), 0);
        assert_eq!(s.first_at_or_after(1_000), 0);
        assert_eq!(s.first_at_or_after(1_001), 1);
        assert_eq!(s.first_at_or_after(1_999), 3);
        assert_eq!(s.first_at_or_after(2_000), 4);
    }
}
