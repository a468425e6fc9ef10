//! Starting, reloading and draining the workers: the control plane's side of the runtime.
//!
//! [`Server`] owns the current [`Config`], the backend registry and the worker handles.
//! A reload builds a new [`RoutingTable`] here, off the data path, and sends each worker an
//! `Arc` of it; an invalid file leaves the running table untouched.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::listener::bind_reuseport;
use super::worker::{self, ActiveDriver, Control, WorkerHandle, WorkerSpec};
use crate::config::{Config, ConfigError};
use crate::route::router::RoutingTable;
use crate::upstream::backend::BackendRegistry;

/// A running router.
pub struct Server {
    /// The bound data-plane address (resolved when the config said port 0).
    pub listen_addr: SocketAddr,
    workers: Vec<WorkerHandle>,
    registry: BackendRegistry,
    config: Config,
    table: Arc<RoutingTable>,
}

/// Result of a successful reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// New table version.
    pub version: u64,
    /// Settings that changed in the file but need a restart to apply.
    pub needs_restart: Vec<&'static str>,
}

impl Server {
    /// Bind the listeners and start the workers.
    pub fn start(config: Config) -> io::Result<Server> {
        let count = config.workers.count.max(1);
        let (listen_addr, listeners) = bind_reuseport(config.listen, count, config.backlog)?;
        let mut registry = BackendRegistry::new();
        let table = Arc::new(RoutingTable::build(&config, &mut registry, 1));
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
                listener,
                table: table.clone(),
                max_connections: config.max_connections_per_worker,
            })?;
            tracing::info!(
                worker = id,
                ?core,
                driver = handle.driver.label(),
                "worker started"
            );
            workers.push(handle);
        }
        Ok(Server {
            listen_addr,
            workers,
            registry,
            config,
            table,
        })
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The routing table in force.
    pub fn table(&self) -> &Arc<RoutingTable> {
        &self.table
    }

    /// Drivers the workers run on, in worker order.
    pub fn drivers(&self) -> Vec<ActiveDriver> {
        self.workers.iter().map(|w| w.driver).collect()
    }

    /// Re-read the config file and install it. On error the old table keeps running.
    pub fn reload(&mut self) -> Result<Reloaded, ConfigError> {
        let path = self.config.source.path.clone();
        let config = Config::load(&path)?;
        Ok(self.install(config))
    }

    /// Re-read the config from another path (tests, admin).
    pub fn reload_from(&mut self, path: &Path) -> Result<Reloaded, ConfigError> {
        let config = Config::load(path)?;
        Ok(self.install(config))
    }

    /// Install a validated config: build the table here, hand it to every worker.
    pub fn install(&mut self, mut config: Config) -> Reloaded {
        let mut needs_restart = Vec::new();
        if config.listen != self.config.listen {
            needs_restart.push("listener.address");
        }
        if config.workers.count != self.config.workers.count {
            needs_restart.push("workers.count");
        }
        if config.admin != self.config.admin {
            needs_restart.push("admin.address");
        }
        // Keep what cannot change live, so /config tells the truth.
        config.listen = self.config.listen;
        config.admin = self.config.admin;
        config.workers = self.config.workers.clone();
        let version = self.table.version + 1;
        let table = Arc::new(RoutingTable::build(&config, &mut self.registry, version));
        for w in &self.workers {
            let _ = w.control.send(Control::Install(table.clone()));
        }
        let live: Vec<SocketAddr> = table.backends.iter().map(|b| b.addr).collect();
        self.registry.retain(|a| live.contains(a));
        self.table = table;
        self.config = config;
        for key in &needs_restart {
            tracing::warn!(
                key,
                "changed in the config file but needs a restart to apply"
            );
        }
        Reloaded {
            version,
            needs_restart,
        }
    }

    /// Stop accepting, let in-flight requests finish within `grace`, then stop.
    pub fn drain(self, grace: Duration) {
        let deadline = Instant::now() + grace;
        for w in &self.workers {
            let _ = w.control.send(Control::Drain { deadline });
        }
        for w in self.workers {
            let _ = w.thread.join();
        }
    }
}
