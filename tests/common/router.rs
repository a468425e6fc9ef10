//! The router under test and the crate's demo backends — the harness's only contact with
//! the `ringgate` library.
//!
//! The crate surface used here, and nowhere else in `tests/` (bar `tests/soak_smoke.rs`,
//! which checks [`Config`] itself): [`Config::parse`], [`Server::start`] / `drain` /
//! `listen_addr` / `drivers` / `table` (backend state) / `worker_controls` with
//! [`ringgate::runtime::server::collect_snapshots`] (metrics), and
//! [`ringgate::demo::spawn`]. Hashes the tests must predict (the demo backend's body
//! digest, the partition of an unknown user) are computed here from their documented
//! definitions, not imported, so a moved function does not break the suite — and a
//! changed one fails it.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use ringgate::config::Config;
use ringgate::runtime::server::Server;

use super::client::{get, request, Response};
use super::{holds_for, wait_until};

/// The driver every router of the suite runs on: `RINGGATE_TEST_DRIVER` (`auto` or
/// `epoll`; CI does one pass with `epoll`, so the fallback path is tested too).
pub fn test_driver() -> String {
    std::env::var("RINGGATE_TEST_DRIVER").unwrap_or_else(|_| "auto".into())
}

/// `workers.multishot` for every router of the suite: `RINGGATE_TEST_MULTISHOT=0` or `1`
/// (unset: the default, on; CI does one io_uring pass with 0, so the one-read-at-a-time
/// path is tested too). A test that sets `multishot` itself is left alone.
fn test_multishot() -> Option<bool> {
    match std::env::var("RINGGATE_TEST_MULTISHOT").as_deref() {
        Ok("0") => Some(false),
        Ok("1") => Some(true),
        _ => None,
    }
}

/// A router started in-process from config text (top-level keys and partitions, plus any
/// other section); listener, admin and worker sections are appended, so the text must
/// not contain them. Drained when dropped.
pub struct Router {
    server: Option<Server>,
    pub addr: SocketAddr,
    /// The listener, admin and worker sections appended to the test's config text.
    sections: String,
}

/// Counters summed over the workers that answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterMetrics {
    pub workers: usize,
    pub idle_timeouts: u64,
    pub spliced_bytes: u64,
    pub open_connections: usize,
    pub accepted: u64,
    pub refused: u64,
    pub reclaimed: u64,
    pub tls_handshakes_failed: u64,
    /// Upstream connections taken from a pool.
    pub pool_reused: u64,
    /// Of those checked, the ones peeked with a syscall (the ring vouched for the rest).
    pub pool_peeked: u64,
    /// Pooled connections found closed by their server in flight (the request went again on
    /// a new one).
    pub pool_stale: u64,
    /// Idle pooled upstream connections, all backends.
    pub pool_idle: usize,
    /// Open upstream connections (in use, idle or connecting), all backends.
    pub pool_open: usize,
    /// Upstream connections not opened at `pool.max_connections_per_backend`.
    pub connection_limited: u64,
    /// Multishot arrivals that found the buffer ring empty.
    pub multishot_ring_empty: u64,
    /// Multishots stopped at a socket's bound of unread buffers.
    pub multishot_backpressure: u64,
    /// Messages handed to a socket eagerly.
    pub eager_sent: u64,
    /// Eager sends the socket could not take whole at once.
    pub eager_continued: u64,
    /// Queries re-sent after a failure.
    pub retries: u64,
    /// Connect failures answered by trying the next server.
    pub failovers: u64,
    /// Rate limits, migration and mirroring counters, summed over workers.
    pub users: ringgate::metrics::users::UserCounts,
    /// `ringgate_errors_total` by kind (see [`RouterMetrics::errors_of`]).
    pub errors: [u64; ringgate::error::ERROR_KIND_LABELS.len()],
}

impl RouterMetrics {
    /// `ringgate_errors_total{kind}`.
    pub fn errors_of(&self, kind: &str) -> u64 {
        let labels = ringgate::error::ERROR_KIND_LABELS;
        let i = labels
            .iter()
            .position(|&l| l == kind)
            .unwrap_or_else(|| panic!("no error kind {kind} in {labels:?}"));
        self.errors[i]
    }
}

impl Router {
    /// Start with one worker (deterministic round-robin), no pinning.
    pub fn start(config_text: &str) -> Router {
        Self::start_with(config_text, 1)
    }

    pub fn start_with(config_text: &str, workers: usize) -> Router {
        Self::start_on(config_text, workers, &test_driver())
    }

    /// Start on a given driver (`auto`, `io_uring` or `epoll`).
    pub fn start_on(config_text: &str, workers: usize, driver: &str) -> Router {
        Self::start_full(config_text, workers, driver, "", "")
    }

    /// Start with extra `[listener]` keys (lines such as `max_connections_per_worker = 2`).
    pub fn start_with_listener(config_text: &str, listener: &str) -> Router {
        Self::start_full(config_text, 1, &test_driver(), listener, "")
    }

    /// Start with extra `[workers]` keys (lines such as `ring = "plain"`).
    pub fn start_with_workers(config_text: &str, workers_keys: &str) -> Router {
        Self::start_full(config_text, 1, &test_driver(), "", workers_keys)
    }

    fn start_full(
        config_text: &str,
        workers: usize,
        driver: &str,
        listener: &str,
        workers_keys: &str,
    ) -> Router {
        let multishot = match test_multishot() {
            Some(on) if !workers_keys.contains("multishot") => format!("multishot = {on}\n"),
            _ => String::new(),
        };
        let sections = format!(
            "\n[listener]\naddress = \"127.0.0.1:0\"\n{listener}\n[admin]\naddress = \"\"\n[workers]\ncount = {workers}\npin = false\ndriver = \"{driver}\"\n{multishot}{workers_keys}\n"
        );
        let text = format!("{config_text}{sections}");
        let config = Config::parse(&text, Path::new("test.toml")).expect("valid test config");
        let server = Server::start(config).expect("router starts");
        let addr = server.listen_addr;
        Router {
            sections,
            server: Some(server),
            addr,
        }
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("router still running")
    }

    /// Reload from new config text (same listener, admin and worker sections): returns
    /// once every worker has the new table, like a SIGHUP or `POST /reload`.
    pub fn reload(&mut self, config_text: &str) {
        let text = format!("{config_text}{}", self.sections);
        let config = Config::parse(&text, Path::new("test.toml")).expect("valid test config");
        self.server
            .as_mut()
            .expect("router running")
            .install(config);
    }

    /// Drain now (in-flight requests get 200 ms); flushes the access log.
    pub fn drain(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.drain(Duration::from_millis(200));
        }
    }

    /// Drain with `grace` for requests in flight; how long the drain took.
    pub fn drain_within(&mut self, grace: Duration) -> Duration {
        let started = std::time::Instant::now();
        if let Some(mut s) = self.server.take() {
            s.drain(grace);
        }
        started.elapsed()
    }

    /// Whether each worker receives by multishot.
    pub fn multishot(&self) -> Vec<bool> {
        self.server().multishot()
    }

    /// The drivers the workers run on, by name (`Epoll`, `IoUring`).
    pub fn drivers(&self) -> Vec<String> {
        self.server()
            .drivers()
            .iter()
            .map(|d| format!("{d:?}"))
            .collect()
    }

    /// The workers' counters (each answers between requests).
    pub fn metrics(&self) -> RouterMetrics {
        let snaps = ringgate::runtime::server::collect_snapshots(
            &self.server().worker_controls(),
            Duration::from_secs(2),
        );
        RouterMetrics {
            workers: snaps.len(),
            idle_timeouts: snaps.iter().map(|s| s.idle_timeouts).sum(),
            spliced_bytes: snaps.iter().map(|s| s.spliced_bytes).sum(),
            open_connections: snaps.iter().map(|s| s.open_connections).sum(),
            accepted: snaps.iter().map(|s| s.accepted).sum(),
            refused: snaps.iter().map(|s| s.refused).sum(),
            reclaimed: snaps.iter().map(|s| s.reclaimed).sum(),
            tls_handshakes_failed: snaps.iter().map(|s| s.tls_handshakes_failed).sum(),
            pool_reused: snaps.iter().map(|s| s.pool_reused).sum(),
            pool_peeked: snaps.iter().map(|s| s.pool_peeked).sum(),
            pool_stale: snaps.iter().map(|s| s.pool_stale).sum(),
            pool_idle: snaps.iter().flat_map(|s| &s.pools).map(|p| p.idle).sum(),
            pool_open: snaps.iter().flat_map(|s| &s.pools).map(|p| p.open).sum(),
            connection_limited: snaps.iter().flat_map(|s| &s.pools).map(|p| p.limited).sum(),
            multishot_ring_empty: snaps.iter().map(|s| s.multishot_ring_empty).sum(),
            multishot_backpressure: snaps.iter().map(|s| s.multishot_backpressure).sum(),
            eager_sent: snaps.iter().map(|s| s.eager_sent).sum(),
            eager_continued: snaps.iter().map(|s| s.eager_continued).sum(),
            retries: snaps.iter().map(|s| s.retries).sum(),
            failovers: snaps.iter().map(|s| s.failovers).sum(),
            errors: snaps
                .iter()
                .fold([0; ringgate::error::ERROR_KIND_LABELS.len()], |mut a, s| {
                    for (x, y) in a.iter_mut().zip(s.errors) {
                        *x += y;
                    }
                    a
                }),
            users: snaps.iter().fold(Default::default(), |mut a, s| {
                let u = &s.users;
                a.rate_limited[0] += u.rate_limited[0];
                a.rate_limited[1] += u.rate_limited[1];
                a.migration_held += u.migration_held;
                a.migration_held_ns += u.migration_held_ns;
                a.migration_refused += u.migration_refused;
                for (x, y) in a.mirror_status.iter_mut().zip(u.mirror_status) {
                    *x += y;
                }
                a.mirror_dropped += u.mirror_dropped;
                a
            }),
        }
    }

    fn with_backend<T>(
        &self,
        addr: SocketAddr,
        f: impl FnOnce(&ringgate::upstream::backend::Backend) -> T,
    ) -> T {
        let table = self.server().table();
        let b = table
            .backends
            .iter()
            .find(|b| b.addr == addr)
            .unwrap_or_else(|| panic!("{addr} is not a backend of this router"));
        f(b)
    }

    /// Whether the router would send a request to this backend now (up, not drained,
    /// circuit closed or its cool-down over).
    pub fn backend_available(&self, addr: SocketAddr) -> bool {
        let table = self.server().table().clone();
        self.with_backend(addr, |b| {
            ringgate::health::state::would_admit(b, table.settings.circuit.as_ref())
        })
    }

    /// Drain or undrain a backend, as the admin endpoint does.
    pub fn set_drained(&self, addr: SocketAddr, drained: bool) {
        self.with_backend(addr, |b| b.set_drained(drained))
    }

    /// Circuit transitions of a backend so far: (to closed, to open, to half-open).
    pub fn circuit_transitions(&self, addr: SocketAddr) -> (u64, u64, u64) {
        self.with_backend(addr, |b| {
            let t = b.circuit_transitions();
            let get = |name: &str| {
                t.iter()
                    .find(|(n, _)| n.replace('-', "_") == name)
                    .unwrap_or_else(|| panic!("no {name} transition counter in {t:?}"))
                    .1
            };
            (get("closed"), get("open"), get("half_open"))
        })
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.drain();
    }
}

/// The real `ringgate` binary, started from a config file this harness writes (listener,
/// admin and worker sections appended), with its admin listener on an ephemeral port.
/// SIGTERM and a bounded wait when dropped.
pub struct RouterProcess {
    child: Child,
    pub addr: SocketAddr,
    /// `None` when started with `admin = false`.
    pub admin: Option<SocketAddr>,
    path: PathBuf,
    workers: usize,
    with_admin: bool,
}

/// The listen and admin addresses in a started binary's first line on stdout ("ringgate
/// listening on ADDR admin ADDR|off workers N driver D").
pub fn listening_line(child: &mut Child) -> (SocketAddr, Option<SocketAddr>) {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let addr: SocketAddr = words
        .get(3)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line from ringgate: {line:?}"));
    (addr, words.get(5).and_then(|w| w.parse().ok()))
}

impl RouterProcess {
    /// Start with `workers` workers from `routes` (config without listener, admin and
    /// worker sections); `args` are added to the command line.
    pub fn start(
        name: &str,
        routes: &str,
        workers: usize,
        with_admin: bool,
        args: &[&str],
    ) -> RouterProcess {
        let path =
            std::env::temp_dir().join(format!("ringgate-test-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, config_file(routes, workers, with_admin)).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringgate"))
            .arg("--config")
            .arg(&path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ringgate binary starts");
        let (addr, admin) = listening_line(&mut child);
        RouterProcess {
            child,
            addr,
            admin,
            path,
            workers,
            with_admin,
        }
    }

    /// Replace the config file's routes (sections as at start).
    pub fn rewrite(&self, routes: &str) {
        std::fs::write(
            &self.path,
            config_file(routes, self.workers, self.with_admin),
        )
        .unwrap();
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: sending a signal to our own child process, which has not been reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// Wait (up to 10 s) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        wait_until(
            "the ringgate process exits",
            Duration::from_secs(10),
            || {
                status = self.child.try_wait().unwrap();
                status.is_some()
            },
        );
        status.unwrap()
    }

    fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("started with an admin listener")
    }

    pub fn admin_get(&self, path: &str) -> Response {
        get(self.admin_addr(), path, "")
    }

    pub fn admin_post(&self, path: &str) -> Response {
        request(
            self.admin_addr(),
            format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        )
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGTERM);
            let still_running = holds_for(Duration::from_secs(5), || {
                self.child.try_wait().ok().flatten().is_none()
            });
            if still_running {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn config_file(routes: &str, workers: usize, with_admin: bool) -> String {
    let admin = if with_admin { "127.0.0.1:0" } else { "" };
    format!(
        "{routes}\n[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"{admin}\"\n[workers]\ncount = {workers}\npin = false\ndriver = \"{}\"\n",
        test_driver()
    )
}

/// Start a demo backend (the crate's `ringgate-backend`, in-process) on an ephemeral
/// loopback port. It answers JSON naming its zone and port, the path, and the length and
/// FNV-1a digest of the body it received; it lives as long as the test process.
pub fn demo_backend(zone: &str) -> SocketAddr {
    ringgate::demo::spawn("127.0.0.1:0".parse().unwrap(), zone, 1).expect("demo backend")
}

/// Requests served so far by a demo backend.
pub fn served(demo: SocketAddr) -> u64 {
    get(demo, "/__backend/stats", "")
        .json_field("served")
        .unwrap()
        .parse()
        .unwrap()
}

/// An address on which nothing listens (bound, then closed).
pub fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// FNV-1a 64.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// FNV-1a 64 as lowercase hex: the `body_fnv64` a demo backend reports.
pub fn fnv_hex(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a64(bytes))
}

/// The 2 MB upload of [`exchange_large_bodies`] (the whole request, and the body's
/// checksum), built once per test process. Call it before connecting where the connection
/// has a short idle timeout: building it in a debug build on a loaded machine can take
/// longer than the router waits for the next request.
pub fn large_upload() -> &'static (Vec<u8>, String) {
    static UPLOAD: std::sync::OnceLock<(Vec<u8>, String)> = std::sync::OnceLock::new();
    UPLOAD.get_or_init(|| {
        let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut raw = format!(
            "POST /big HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        (raw, fnv_hex(&body))
    })
}

/// Large bodies both ways through a demo backend on `c`: a 2 MB upload (the backend's
/// checksum must match) and a 3 MB download — the splice and copy paths.
pub fn exchange_large_bodies(c: &mut super::client::Client) {
    let (raw, fnv) = large_upload();
    assert_eq!(c.roundtrip(raw).json_field("body_fnv64").unwrap(), *fnv);
    let resp =
        c.roundtrip(b"GET /dl?resp_bytes=3000000 HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n");
    assert_eq!(resp.body.len(), 3_000_000);
}

/// Byte `i` of a demo backend's `resp_bytes=N` body.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// murmur3's 64-bit finaliser.
fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The partition (of `partitions`, by name) the router's documented rendezvous hash
/// gives a user that the `[users]` table does not name: the largest
/// `mix64(mix64(fnv(user)) ^ seed(partition))`, with
/// `seed(name) = mix64(fnv(name) ^ 0x9e3779b97f4a7c15)`.
pub fn expected_partition<'a>(user: &str, partitions: &[&'a str]) -> &'a str {
    let user_hash = mix64(fnv1a64(user.as_bytes()));
    partitions
        .iter()
        .max_by_key(|p| mix64(user_hash ^ mix64(fnv1a64(p.as_bytes()) ^ 0x9e37_79b9_7f4a_7c15)))
        .expect("at least one partition")
}
