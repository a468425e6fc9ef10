//! Backend health: active checks on a dedicated thread, and the passive circuit breaker
//! the workers drive ([`state`]).
//!
//! The checker thread owns its own small monoio runtime and the rise/fall counters; it
//! publishes health through each backend's atomics, which workers read with plain loads.
//! The set of backends to check and the settings follow config reloads: each reload sends
//! new [`HealthTargets`] down a channel that also wakes the checker, so a new interval is in
//! force at once rather than after the one being slept, and a stop never waits for a probe.

pub mod check;
pub mod state;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::thread::JoinHandle;

use monoio::time::Instant;

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
    /// New targets for the checker thread; dropping it (the channel disconnects) stops it.
    updates: Option<flume::Sender<HealthTargets>>,
    thread: Option<JoinHandle<()>>,
}

impl HealthChecker {
    /// Start checking `targets` on a background thread.
    pub fn spawn(targets: HealthTargets) -> std::io::Result<Self> {
        let (updates, inbox) = flume::unbounded();
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
                rt.block_on(run(targets, inbox));
            })?;
        Ok(Self {
            updates: Some(updates),
            thread: Some(thread),
        })
    }

    /// Replace what is checked (after a reload); never waits for the checker.
    pub fn update(&self, targets: HealthTargets) {
        if let Some(updates) = &self.updates {
            let _ = updates.send(targets);
        }
    }

    /// Stop the thread: it ends at once, dropping any probe in flight, so this returns
    /// without waiting out a probe's timeout.
    pub fn stop(&mut self) {
        self.updates = None;
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

async fn run(mut targets: HealthTargets, updates: flume::Receiver<HealthTargets>) {
    let mut streaks: HashMap<SocketAddr, Hysteresis> = HashMap::new();
    loop {
        streaks.retain(|a, _| targets.backends.iter().any(|b| b.addr == *a));
        // New targets that arrive during a round are taken when it ends (its probes are
        // bounded by their timeout); a stop ends it at once.
        let mut next = None;
        let results = {
            let mut round = std::pin::pin!(probe_all(&targets));
            loop {
                monoio::select! {
                    results = &mut round => break results,
                    update = updates.recv_async() => match update {
                        Ok(t) => next = Some(t),
                        Err(_) => return,
                    },
                }
            }
        };
        apply(&targets, &results, &mut streaks);
        if let Some(t) = next {
            targets = t;
        }
        // Rest for the interval, counted from the end of the round with the latest
        // settings: a reload that shortens it takes effect at once, and reloads coming
        // often do not put the next round off.
        let rested = Instant::now();
        loop {
            monoio::select! {
                _ = monoio::time::sleep_until(rested + targets.settings.interval) => break,
                update = updates.recv_async() => match update {
                    Ok(t) => targets = t,
                    Err(_) => return,
                },
            }
        }
    }
}

/// Probe every backend of `targets` concurrently; one result each, in order. The probes
/// run on the calling task, so dropping the round drops them, sockets and all.
async fn probe_all(targets: &HealthTargets) -> Vec<bool> {
    let s = &targets.settings;
    let mut probes: Vec<_> = targets
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let tls = targets.tls.get(i).and_then(|t| t.as_deref());
            Box::pin(check::probe(b.addr, s.http_path.as_deref(), tls, s.timeout))
        })
        .collect();
    let mut results = vec![None; probes.len()];
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (probe, result) in probes.iter_mut().zip(&mut results) {
            if result.is_none() {
                match probe.as_mut().poll(cx) {
                    Poll::Ready(ok) => *result = Some(ok),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(|ok| ok == Some(true)).collect()
}

/// Feed one round's results through each backend's rise/fall counters.
fn apply(targets: &HealthTargets, results: &[bool], streaks: &mut HashMap<SocketAddr, Hysteresis>) {
    let s = &targets.settings;
    for (b, &ok) in targets.backends.iter().zip(results) {
        let h = streaks.entry(b.addr).or_default();
        if let Some(next) = h.observe(b.health(), ok, s.rise, s.fall) {
            b.set_health(next);
            match next {
                Health::Up => {
                    tracing::info!(backend = %b.addr, "backend up (passed {} checks)", s.rise)
                }
                Health::Down => {
                    tracing::warn!(backend = %b.addr, "backend down (failed {} checks)", s.fall)
                }
            }
        }
    }
}
