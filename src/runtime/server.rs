//! Starting, reloading and draining the workers: the control plane's side of the runtime.
//!
//! [`Server`] owns the current [`Config`], the backend registry and the worker handles.
//! A reload builds a new [`RoutingTable`] here, off the data path, and sends each worker an
//! `Arc` of it; an invalid file leaves the running table untouched. The signal handler and
//! the admin listener share one `Server` behind a mutex — a control-plane lock that no
//! request ever waits on.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::listener::bind_reuseport;
use super::worker::{self, ActiveDriver, Control, WorkerHandle, WorkerSpec};
use crate::access_log::{self, AccessLog};
use crate::config::{admin_needs_token, Config, ConfigError};
use crate::health::{HealthChecker, HealthTargets};
use crate::metrics::export::{self, ProcessStats};
use crate::metrics::scrape::Scraper;
use crate::metrics::{MetricsSnapshot, SnapshotRequest};
use crate::route::router::RoutingTable;
use crate::upstream::backend::BackendRegistry;
use crate::users::UserState;

/// How long a reload waits for the workers to install the new table.
const INSTALL_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Changes made to every config read (the command line's settings).
type Overrides = dyn Fn(&mut Config) + Send;

/// A running router.
pub struct Server {
    /// The bound data-plane address (resolved when the config said port 0).
    pub listen_addr: SocketAddr,
    workers: Vec<WorkerHandle>,
    registry: BackendRegistry,
    config: Config,
    table: Arc<RoutingTable>,
    access_log: Option<(Arc<AccessLog>, JoinHandle<()>)>,
    health: Option<HealthChecker>,
    reloads_ok: u64,
    reloads_failed: u64,
    last_reload_error: Option<String>,
    /// Cumulative latency for `/metrics`; shared so a scrape runs without the server lock.
    scraper: Arc<Mutex<Scraper>>,
    /// Where the admin listener actually runs, once it does.
    admin_listener: Option<SocketAddr>,
    /// The per-user tables the workers share (their untracked counts are exported).
    users: Arc<UserState>,
    /// Command-line settings that win over the file: applied to every config read again,
    /// so a reload keeps them and compares like with like.
    overrides: Option<Box<Overrides>>,
}

/// What a `/metrics` scrape needs, taken under the server lock; the scrape itself (asking
/// the workers, merging, rendering) runs without it.
pub struct MetricsScrape {
    table: Arc<RoutingTable>,
    controls: Vec<flume::Sender<Control>>,
    stats: ProcessStats,
    scraper: Arc<Mutex<Scraper>>,
}

impl MetricsScrape {
    /// Ask every worker (those that do not answer within `timeout` are left out of this
    /// scrape's counters) and render the Prometheus text.
    pub fn render(self, timeout: Duration) -> String {
        let mut scraper = self.scraper.lock().unwrap_or_else(|e| e.into_inner());
        let controls = &self.controls;
        let snapshots = scraper.collect(
            controls.len(),
            |i, request| controls[i].send(Control::Snapshot(request)).is_ok(),
            timeout,
        );
        export::render(&snapshots, scraper.totals(), &self.table, &self.stats)
    }
}

/// A worker's core in logs: the number, or `none` when it is not pinned.
struct CoreLabel(Option<usize>);

impl std::fmt::Display for CoreLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(core) => write!(f, "{core}"),
            None => f.write_str("none"),
        }
    }
}

/// What asked for a reload (logged with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// SIGHUP.
    Signal,
    /// `POST /reload` on the admin listener.
    Admin,
    /// `--watch` saw the file change.
    FileChange,
}

impl ReloadTrigger {
    /// Label for logs.
    pub fn label(self) -> &'static str {
        match self {
            ReloadTrigger::Signal => "signal",
            ReloadTrigger::Admin => "admin",
            ReloadTrigger::FileChange => "file_change",
        }
    }
}

/// Result of a successful reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// New table version.
    pub version: u64,
    /// Settings that changed in the file but need a restart to apply.
    pub needs_restart: Vec<&'static str>,
    /// Workers that had not confirmed the new table when the wait for them ran out: they
    /// swap it in at their next turn, but it is not yet in force on their connections.
    pub workers_pending: usize,
}

impl Server {
    /// Bind the listeners and start the workers.
    pub fn start(config: Config) -> io::Result<Server> {
        let count = config.workers.count.max(1);
        let (listen_addr, listeners) = bind_reuseport(config.listen, count, config.backlog)?;
        let access_log = match &config.access_log {
            Some(c) => Some(access_log::start(c)?),
            None => None,
        };
        let mut registry = BackendRegistry::new();
        let table = Arc::new(RoutingTable::build(&config, &mut registry, 1));
        let users = Arc::new(UserState::new(
            config.user_tables.rate_users,
            config.user_tables.migration_users,
        ));
        // The CPUs this process may run on (a cgroup or taskset may allow fewer than all).
        let allowed: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        let mut workers = Vec::with_capacity(count);
        for (id, listener) in listeners.into_iter().enumerate() {
            let core = if !config.workers.pin || allowed.is_empty() {
                None
            } else if config.workers.cpus.is_empty() {
                Some(allowed[id % allowed.len()])
            } else {
                Some(config.workers.cpus[id % config.workers.cpus.len()])
            };
            let handle = worker::spawn(WorkerSpec {
                id,
                core,
                driver: config.workers.driver,
                ring_entries: config.workers.ring_entries,
                ring: config.workers.ring,
                busy_poll: config.workers.busy_poll,
                spin: config.workers.spin,
                multishot: config.workers.multishot,
                listener,
                table: table.clone(),
                max_connections: config.max_connections_per_worker,
                access_log: access_log.as_ref().map(|(log, _)| log.clone()),
                users: users.clone(),
            })
            // Say which step failed: "Resource temporarily unavailable" alone does not.
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start worker {id}: {e}")))?;
            tracing::info!(
                worker = id,
                core = %CoreLabel(core),
                driver = handle.driver.label(),
                ring = handle.driver.ring_label(),
                multishot = handle.multishot,
                "worker started"
            );
            workers.push(handle);
        }
        let health = match &config.health {
            Some(settings) => Some(HealthChecker::spawn(HealthTargets {
                backends: table.backends.to_vec(),
                tls: table.backend_tls.to_vec(),
                settings: settings.clone(),
            })?),
            None => None,
        };
        Ok(Server {
            listen_addr,
            workers,
            registry,
            config,
            table,
            access_log,
            health,
            reloads_ok: 0,
            reloads_failed: 0,
            last_reload_error: None,
            scraper: Arc::new(Mutex::new(Scraper::new())),
            admin_listener: None,
            users,
            overrides: None,
        })
    }

    /// Settings from the command line, to apply to every config a reload reads.
    pub fn set_overrides(&mut self, apply: impl Fn(&mut Config) + Send + 'static) {
        self.overrides = Some(Box::new(apply));
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The routing table in force.
    pub fn table(&self) -> &Arc<RoutingTable> {
        &self.table
    }

    /// Drained servers that a reload removed (they come back drained).
    pub fn drained_removed(&self) -> impl Iterator<Item = &SocketAddr> {
        self.registry.drained_removed()
    }

    /// Undrain a server that a reload removed; false if it was not drained.
    pub fn undrain_removed(&mut self, addr: &SocketAddr) -> bool {
        self.registry.undrain_removed(addr)
    }

    /// Drivers the workers run on, in worker order.
    pub fn drivers(&self) -> Vec<ActiveDriver> {
        self.workers.iter().map(|w| w.driver).collect()
    }

    /// Whether each worker's plain TCP sockets receive by multishot, in worker order.
    pub fn multishot(&self) -> Vec<bool> {
        self.workers.iter().map(|w| w.multishot).collect()
    }

    /// Whether workers are running (not drained).
    pub fn is_running(&self) -> bool {
        !self.workers.is_empty()
    }

    /// Reload counters and the last refusal, for metrics and `/config`.
    pub fn process_stats(&self) -> ProcessStats {
        ProcessStats {
            reloads_ok: self.reloads_ok,
            reloads_failed: self.reloads_failed,
            workers: self.workers.len(),
            rate_limit_untracked: self.users.rate.untracked(),
            migration_untracked: self.users.in_flight.untracked(),
        }
    }

    /// Why the last reload was refused, if it was.
    pub fn last_reload_error(&self) -> Option<&str> {
        self.last_reload_error.as_deref()
    }

    /// The workers' control channels (to ask for metrics without holding the server).
    pub fn worker_controls(&self) -> Vec<flume::Sender<Control>> {
        self.workers.iter().map(|w| w.control.clone()).collect()
    }

    /// Prepare a `/metrics` scrape (cheap; run it after releasing the server lock).
    pub fn metrics_scrape(&self) -> MetricsScrape {
        MetricsScrape {
            table: self.table.clone(),
            controls: self.worker_controls(),
            stats: self.process_stats(),
            scraper: self.scraper.clone(),
        }
    }

    /// Re-read the config file and install it. On error the old table keeps running.
    /// Every reload, whatever its trigger, is logged here and only here.
    pub fn reload(&mut self, trigger: ReloadTrigger) -> Result<Reloaded, ConfigError> {
        let path = self.config.source.path.clone();
        self.reload_from(&path, trigger)
    }

    /// Read a config from `path` and install it (the file the server was started with,
    /// or another one).
    pub fn reload_from(
        &mut self,
        path: &Path,
        trigger: ReloadTrigger,
    ) -> Result<Reloaded, ConfigError> {
        let loaded = Config::load(path).map(|mut c| {
            if let Some(apply) = &self.overrides {
                apply(&mut c);
            }
            c
        });
        match loaded.and_then(|c| self.check_admin_token(c, path)) {
            Ok(config) => {
                let reloaded = self.install(config);
                tracing::info!(
                    trigger = trigger.label(),
                    version = reloaded.version,
                    hash = %format_args!("{:016x}", self.config.source.hash),
                    "config reloaded"
                );
                Ok(reloaded)
            }
            Err(e) => {
                self.reloads_failed += 1;
                self.last_reload_error = Some(e.to_string());
                tracing::error!(
                    trigger = trigger.label(),
                    error = %e,
                    "reload refused; the previous table keeps running"
                );
                Err(e)
            }
        }
    }

    /// Record where the admin listener runs (called by `admin::spawn`).
    pub fn set_admin_listener(&mut self, addr: SocketAddr) {
        self.admin_listener = Some(addr);
    }

    /// The admin listener keeps its address across reloads; if that address is off
    /// loopback (given with `--admin`, say), a new config must still carry a token.
    fn check_admin_token(&self, config: Config, path: &Path) -> Result<Config, ConfigError> {
        match self.admin_listener.or(self.config.admin) {
            Some(addr) if admin_needs_token(addr) && config.admin_token.is_none() => {
                Err(ConfigError {
                    path: path.to_path_buf(),
                    line: None,
                    key: Some("admin.token_file".into()),
                    message: format!(
                        "the admin listener runs on {addr}, off loopback: the config must keep a token file"
                    ),
                })
            }
            _ => Ok(config),
        }
    }

    /// Install a validated config: build the table here, hand it to every worker.
    pub fn install(&mut self, mut config: Config) -> Reloaded {
        let mut needs_restart = Vec::new();
        if config.listen != self.config.listen {
            needs_restart.push("listener.address");
        }
        let (new, old) = (&config.workers, &self.config.workers);
        if new.count != old.count {
            needs_restart.push("workers.count");
        }
        if (new.pin, &new.cpus, new.driver, new.ring_entries, new.ring)
            != (old.pin, &old.cpus, old.driver, old.ring_entries, old.ring)
            || (new.busy_poll, new.spin, new.multishot) != (old.busy_poll, old.spin, old.multishot)
        {
            needs_restart.push("workers");
        }
        if config.backlog != self.config.backlog {
            needs_restart.push("listener.backlog");
        }
        if config.max_connections_per_worker != self.config.max_connections_per_worker {
            needs_restart.push("listener.max_connections_per_worker");
        }
        if config.admin != self.config.admin {
            needs_restart.push("admin.address");
        }
        if config.access_log != self.config.access_log {
            needs_restart.push("log");
        }
        if config.user_tables != self.config.user_tables {
            needs_restart.push("rate_limit.max_users / migration.max_users");
        }
        // Keep what cannot change live, so /config tells the truth.
        config.listen = self.config.listen;
        config.admin = self.config.admin;
        config.workers = self.config.workers.clone();
        config.access_log = self.config.access_log.clone();
        config.user_tables = self.config.user_tables;
        config.max_connections_per_worker = self.config.max_connections_per_worker;
        config.backlog = self.config.backlog;
        // TLS settings that did not change stay the same settings: their servers' pooled
        // connections serve the new table, and their sessions still resume.
        for p in &mut config.routes.partitions {
            let Some(new) = &p.tls else { continue };
            let mut old = self
                .config
                .routes
                .partitions
                .iter()
                .filter_map(|o| o.tls.as_ref());
            if let Some(same) = old.find(|o| o.as_ref() == new.as_ref()).cloned() {
                p.tls = Some(same);
            }
        }
        let version = self.table.version + 1;
        let table = Arc::new(RoutingTable::build(&config, &mut self.registry, version));
        // Wait until every worker has swapped it in, so a reload that returned is in force
        // for the next request on every connection.
        let (ack, acked) = flume::unbounded();
        let mut sent = 0;
        for w in &self.workers {
            if w.control
                .send(Control::Install(table.clone(), Some(ack.clone())))
                .is_ok()
            {
                sent += 1;
            }
        }
        let deadline = Instant::now() + INSTALL_ACK_TIMEOUT;
        let mut workers_pending = sent;
        while workers_pending > 0 && acked.recv_deadline(deadline).is_ok() {
            workers_pending -= 1;
        }
        if workers_pending > 0 {
            tracing::warn!(
                workers_pending,
                "not every worker acknowledged the new table in time"
            );
        }
        let live: Vec<SocketAddr> = table.backends.iter().map(|b| b.addr).collect();
        self.registry.retain(|a| live.contains(a));
        let targets = |settings: &crate::config::HealthSettings| HealthTargets {
            backends: table.backends.to_vec(),
            tls: table.backend_tls.to_vec(),
            settings: settings.clone(),
        };
        match (&mut self.health, &config.health) {
            (Some(checker), Some(settings)) => checker.update(targets(settings)),
            (None, Some(settings)) => match HealthChecker::spawn(targets(settings)) {
                Ok(checker) => self.health = Some(checker),
                Err(_) => needs_restart.push("health.enabled"),
            },
            // No checker decides any more: what it last saw must not keep a server out.
            (Some(_), None) => {
                if let Some(mut checker) = self.health.take() {
                    checker.stop();
                }
                for b in table.backends.iter() {
                    b.set_health(crate::upstream::backend::Health::Up);
                }
            }
            (None, None) => {}
        }
        // With the breaker off nothing decides a circuit any more: one left open would
        // still read as open in `/metrics` and `/config` while traffic flows.
        if table.settings.circuit.is_none() {
            for b in table.backends.iter() {
                b.swap_circuit(crate::upstream::backend::Circuit::Closed);
            }
        }
        self.table = table;
        self.config = config;
        self.reloads_ok += 1;
        self.last_reload_error = None;
        for key in &needs_restart {
            tracing::warn!(
                key,
                "changed in the config file but needs a restart to apply"
            );
        }
        tracing::debug!(
            version,
            hash = %format_args!("{:016x}", self.config.source.hash),
            "routing table installed"
        );
        Reloaded {
            version,
            needs_restart,
            workers_pending,
        }
    }

    /// Stop accepting, let in-flight requests finish within `grace`, then stop the workers
    /// and flush the access log.
    pub fn drain(&mut self, grace: Duration) {
        for t in self.begin_drain(grace) {
            let _ = t.join();
        }
        self.end_drain();
    }

    /// [`Server::drain`] for a shared server, holding its lock only to start and to end:
    /// `/metrics`, `/config` and `/reload` keep answering while connections finish.
    pub fn drain_shared(server: &Mutex<Server>, grace: Duration) {
        let lock = || server.lock().unwrap_or_else(|e| e.into_inner());
        let threads = lock().begin_drain(grace);
        for t in threads {
            let _ = t.join();
        }
        lock().end_drain();
    }

    /// Tell every worker to drain by `grace` from now; their threads, to join.
    fn begin_drain(&mut self, grace: Duration) -> Vec<JoinHandle<()>> {
        let deadline = Instant::now() + grace;
        for w in &self.workers {
            let _ = w.control.send(Control::Drain { deadline });
        }
        self.workers
            .iter_mut()
            .filter_map(|w| w.thread.take())
            .collect()
    }

    /// Once the workers have stopped: forget them, stop health checks, flush the log.
    fn end_drain(&mut self) {
        self.workers.clear();
        if let Some(mut checker) = self.health.take() {
            checker.stop();
        }
        if let Some((log, handle)) = self.access_log.take() {
            access_log::stop(&log, handle);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.drain(Duration::from_millis(100));
        }
    }
}

/// Ask every worker for its counters (each answers between requests); workers that do not
/// answer within `timeout` are left out. The snapshots carry no latency: that stays with
/// the workers for the next `/metrics` scrape ([`Server::metrics_scrape`]).
pub fn collect_snapshots(
    controls: &[flume::Sender<Control>],
    timeout: Duration,
) -> Vec<MetricsSnapshot> {
    let (tx, rx) = flume::unbounded();
    let mut asked = 0;
    for c in controls {
        let request = SnapshotRequest::counters_only(tx.clone());
        if c.send(Control::Snapshot(request)).is_ok() {
            asked += 1;
        }
    }
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(asked);
    while out.len() < asked {
        match rx.recv_deadline(deadline) {
            Ok(s) => out.push(s),
            Err(_) => break,
        }
    }
    out.sort_by_key(|s| s.worker);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drained worker frees everything it held (a task left waiting when its runtime
    /// stopped would keep the worker, and its table, alive for the life of the process).
    #[test]
    fn a_drained_server_frees_its_workers() {
        for driver in ["auto", "epoll"] {
            let text = format!(
                "default_backend = \"127.0.0.1:9\"\n[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"\"\n[health]\nenabled = false\n[workers]\ncount = 2\npin = false\ndriver = \"{driver}\"\n"
            );
            let config = Config::parse(&text, Path::new("test.toml")).unwrap();
            let mut server = Server::start(config).unwrap();
            let table = Arc::downgrade(server.table());
            server.drain(Duration::from_millis(50));
            drop(server);
            assert_eq!(
                table.strong_count(),
                0,
                "{driver}: a drained worker still holds its routing table"
            );
        }
    }
}
