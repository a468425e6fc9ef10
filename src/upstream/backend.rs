//! Backends and their cross-core state.
//!
//! A [`Backend`] is one upstream address. Its health lives in atomics that the health
//! checker and the circuit breaker write and every worker reads with a plain load on the
//! request path (cross-core state is read with atomic loads, each on its own
//! cache line). The [`BackendRegistry`] keeps one `Backend` per address across config
//! reloads, so health, drain state and counters survive a reload; an operator's drain
//! survives even a reload that removes the server (see [`BackendRegistry::retain`]).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

/// Active health state of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Passing checks (or unchecked).
    Up = 0,
    /// Failed `fall` consecutive checks.
    Down = 1,
}

/// Circuit breaker state (passive ejection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Circuit {
    /// Normal traffic.
    Closed = 0,
    /// Ejected: no traffic until the cool-down ends.
    Open = 1,
    /// One probe request decides.
    HalfOpen = 2,
}

/// One upstream server, shared by all workers.
#[derive(Debug)]
pub struct Backend {
    /// Its address.
    pub addr: SocketAddr,
    /// [`Health`] in the low bit; above it, the pool epoch (see [`Backend::pool_epoch`]).
    /// One word, so a worker reads both with the one load.
    health: CachePadded<AtomicU32>,
    circuit: CachePadded<AtomicU8>,
    drained: CachePadded<AtomicBool>,
    /// Consecutive failures seen by workers (passive checks).
    pub consecutive_failures: CachePadded<AtomicU32>,
    /// When the circuit opened (ms since the process clock origin).
    pub circuit_opened_ms: CachePadded<AtomicU64>,
    /// A half-open probe is in flight (only one at a time).
    pub probe_in_flight: CachePadded<AtomicBool>,
    /// Transitions into closed, open and half-open.
    transitions: [AtomicU64; 3],
}

impl Backend {
    /// A backend that is up, closed and not drained.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            health: CachePadded::new(AtomicU32::new(Health::Up as u32)),
            circuit: CachePadded::new(AtomicU8::new(Circuit::Closed as u8)),
            drained: CachePadded::new(AtomicBool::new(false)),
            consecutive_failures: CachePadded::new(AtomicU32::new(0)),
            circuit_opened_ms: CachePadded::new(AtomicU64::new(0)),
            probe_in_flight: CachePadded::new(AtomicBool::new(false)),
            transitions: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Active health.
    #[inline]
    pub fn health(&self) -> Health {
        if self.health.load(Ordering::Relaxed) & 1 == Health::Up as u32 {
            Health::Up
        } else {
            Health::Down
        }
    }

    /// Advanced whenever its active health changes and whenever its circuit opens. A
    /// connection pooled in another epoch predates the server's last fall or return, and
    /// is not used after it (see [`crate::upstream::pool::Pools::take`]): a server that
    /// comes back may be another host (a reboot, an address moved to a standby) that
    /// resets the connections it never knew, without a word while they sat idle.
    #[inline]
    pub fn pool_epoch(&self) -> u32 {
        self.health.load(Ordering::Relaxed) >> 1
    }

    /// Set active health (health checker, or the control plane once it has stopped it);
    /// a change advances the pool epoch.
    pub fn set_health(&self, h: Health) {
        let _ = self
            .health
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                (v & 1 != h as u32).then(|| ((v >> 1).wrapping_add(1) << 1) | h as u32)
            });
    }

    /// Circuit state.
    #[inline]
    pub fn circuit(&self) -> Circuit {
        match self.circuit.load(Ordering::Relaxed) {
            0 => Circuit::Closed,
            1 => Circuit::Open,
            _ => Circuit::HalfOpen,
        }
    }

    /// Set circuit state; returns the previous one. A change is counted.
    pub fn swap_circuit(&self, c: Circuit) -> Circuit {
        let prev = match self.circuit.swap(c as u8, Ordering::AcqRel) {
            0 => Circuit::Closed,
            1 => Circuit::Open,
            _ => Circuit::HalfOpen,
        };
        if prev != c {
            self.count_transition(c);
        }
        prev
    }

    /// Move from `from` to `to` only if the circuit is in `from`; true if it moved.
    pub fn transition_circuit(&self, from: Circuit, to: Circuit) -> bool {
        let moved = self
            .circuit
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if moved && from != to {
            self.count_transition(to);
        }
        moved
    }

    /// Count a circuit transition into `to`; an opening also advances the pool epoch.
    fn count_transition(&self, to: Circuit) {
        self.transitions[to as usize].fetch_add(1, Ordering::Relaxed);
        if to == Circuit::Open {
            // Above the health bit, which stays as it is.
            self.health.fetch_add(2, Ordering::Relaxed);
        }
    }

    /// Transition counts by target state label.
    pub fn circuit_transitions(&self) -> [(&'static str, u64); 3] {
        [
            ("closed", self.transitions[0].load(Ordering::Relaxed)),
            ("open", self.transitions[1].load(Ordering::Relaxed)),
            ("half_open", self.transitions[2].load(Ordering::Relaxed)),
        ]
    }

    /// Whether an operator drained this backend.
    #[inline]
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Drain or undrain.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Relaxed);
    }
}

/// One `Backend` per address for the life of the process. Owned by the control plane
/// (which is single-threaded), so it needs no lock.
#[derive(Debug, Default)]
pub struct BackendRegistry {
    by_addr: HashMap<SocketAddr, Arc<Backend>>,
    /// Drained servers that a reload removed: a drain ends by undrain or a restart, never
    /// by an unrelated config change, so one added back comes back drained.
    drained_removed: BTreeSet<SocketAddr>,
}

impl BackendRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The backend for `addr`, created on first use.
    pub fn get_or_create(&mut self, addr: SocketAddr) -> Arc<Backend> {
        let drained_removed = &mut self.drained_removed;
        self.by_addr
            .entry(addr)
            .or_insert_with(|| {
                let b = Backend::new(addr);
                b.set_drained(drained_removed.remove(&addr));
                Arc::new(b)
            })
            .clone()
    }

    /// The backend for `addr`, if known.
    pub fn get(&self, addr: &SocketAddr) -> Option<Arc<Backend>> {
        self.by_addr.get(addr).cloned()
    }

    /// Every known backend.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.by_addr.values()
    }

    /// Drop backends that no current table uses (after a reload), remembering which of
    /// them were drained. The rest of their state goes: health and circuit would be stale
    /// by the time they come back, and their series leave `/metrics` meanwhile.
    pub fn retain(&mut self, keep: impl Fn(&SocketAddr) -> bool) {
        let drained_removed = &mut self.drained_removed;
        self.by_addr.retain(|a, b| {
            let kept = keep(a);
            if !kept && b.is_drained() {
                drained_removed.insert(*a);
            }
            kept
        });
    }

    /// Drained servers that no current table uses, kept drained for when one comes back.
    pub fn drained_removed(&self) -> impl Iterator<Item = &SocketAddr> {
        self.drained_removed.iter()
    }

    /// Undrain a server that no current table uses; false if it was not drained.
    pub fn undrain_removed(&mut self, addr: &SocketAddr) -> bool {
        self.drained_removed.remove(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_changes_and_circuit_openings_advance_the_pool_epoch() {
        let b = Backend::new("127.0.0.1:1".parse().unwrap());
        assert_eq!((b.health(), b.pool_epoch()), (Health::Up, 0));
        b.set_health(Health::Up);
        assert_eq!(b.pool_epoch(), 0, "no change, not counted");
        b.set_health(Health::Down);
        assert_eq!((b.health(), b.pool_epoch()), (Health::Down, 1));
        b.set_health(Health::Down);
        b.set_health(Health::Up);
        assert_eq!((b.health(), b.pool_epoch()), (Health::Up, 2));
        assert!(b.transition_circuit(Circuit::Closed, Circuit::Open));
        assert_eq!((b.health(), b.pool_epoch()), (Health::Up, 3));
        b.set_health(Health::Down);
        assert!(b.transition_circuit(Circuit::Open, Circuit::HalfOpen));
        assert!(b.transition_circuit(Circuit::HalfOpen, Circuit::Open));
        assert_eq!((b.health(), b.pool_epoch()), (Health::Down, 5));
        b.swap_circuit(Circuit::Closed);
        assert_eq!(b.pool_epoch(), 5, "a closing is not counted");
    }

    #[test]
    fn registry_keeps_identity() {
        let mut r = BackendRegistry::new();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let x = r.get_or_create(a);
        x.set_drained(true);
        assert!(r.get_or_create(a).is_drained());
        r.retain(|_| false);
        assert!(r.get(&a).is_none());
        assert_eq!(r.drained_removed().collect::<Vec<_>>(), [&a]);
        assert!(
            r.get_or_create(a).is_drained(),
            "a drain outlasts a removal"
        );
        assert_eq!(r.drained_removed().count(), 0);
        r.retain(|_| false);
        assert!(r.undrain_removed(&a));
        assert!(!r.get_or_create(a).is_drained());
    }
}
