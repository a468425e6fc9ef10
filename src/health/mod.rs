//! Backend health: active checks on a dedicated thread, and the passive circuit breaker
//! the workers drive ([`state`]).
//!
//! The checker thread owns its own small monoio runtime and the rise/fall counters; it
//! publishes health through each backend's atomics, which workers read with plain loads.
//! The set of backends to check follows config reloads through [`HealthTargets`].

pub mod check;
pub mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{HealthSettings, UpstreamTls};
use crate::upstream::backend::{Backend, Health};
use state::Hysteresis;

/// What to check (control plane; updated on reload).
pub struct HealthTargets {
    /// Backends of the current table.
    pub backends: Vec<Arc<Backend>>,
    /// TLS to each backend (parallel to `backends`; None: plain TCP).
    pub tls: Vec<Option<Arc<UpstreamTls>>>,
    /// Check settings of the current config.
    pub settings: HealthSettings,
}

/// A running checker.
pub struct HealthChecker {
    targets: Arc<Mutex<HealthTargets>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HealthChecker {
    /// Start checking `targets` on a background thread.
    pub fn spawn(targets: HealthTargets) -> std::io::Result<Self> {
        let targets = Arc::new(Mutex::new(targets));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (targets.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("ringgate-health".into())
            .spawn(move || {
                let mut rt = match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .enable_timer()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "health checker cannot start; backends stay as they are");
                        return;
                    }
                };
                rt.block_on(run(t, s));
            })?;
        Ok(Self {
            targets,
            stop,
            thread: Some(thread),
        })
    }

    /// Replace what is checked (after a reload).
    pub fn update(&self, targets: HealthTargets) {
        *self.targets.lock().unwrap_or_else(|e| e.into_inner()) = targets;
    }

    /// Stop the thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run(targets: Arc<Mutex<HealthTargets>>, stop: Arc<AtomicBool>) {
    let mut streaks: HashMap<SocketAddr, Hysteresis> = HashMap::new();
    while !stop.load(Ordering::Acquire) {
        let (backends, tls, settings) = {
            let t = targets.lock().unwrap_or_else(|e| e.into_inner());
            (t.backends.clone(), t.tls.clone(), t.settings.clone())
        };
        streaks.retain(|a, _| backends.iter().any(|b| b.addr == *a));
        // Probe every backend concurrently, then apply the results.
        let probes: Vec<_> = backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let addr = b.addr;
                let path = settings.http_path.clone();
                let timeout = settings.timeout;
                let tls = tls.get(i).cloned().flatten();
                monoio::spawn(async move {
                    check::probe(addr, path.as_deref(), tls.as_deref(), timeout).await
                })
            })
            .collect();
        for (b, probe) in backends.iter().zip(probes) {
            let ok = probe.await;
            let h = streaks.entry(b.addr).or_default();
            if let Some(next) = h.observe(b.health(), ok, settings.rise, settings.fall) {
                b.set_health(next);
                match next {
                    Health::Up => {
                        tracing::info!(backend = %b.addr, "backend up (passed {} checks)", settings.rise)
                    }
                    Health::Down => {
                        tracing::warn!(backend = %b.addr, "backend down (failed {} checks)", settings.fall)
                    }
                }
            }
        }
        // Sleep in short steps so a stop is noticed quickly.
        let mut left = settings.interval;
        while !left.is_zero() && !stop.load(Ordering::Acquire) {
            let step = left.min(Duration::from_millis(50));
            monoio::time::sleep(step).await;
            left -= step;
        }
    }
}
