//! Backend state machines: active-check hysteresis (rise/fall) and the passive circuit
//! breaker (closed → open → half-open → closed/open).
//!
//! # Hot path
//! Workers call [`admit`] while picking a server and [`report`] after each upstream
//! attempt. Both are relaxed atomic loads in the common case (circuit closed, no failure
//! streak): a success stores only when a failure streak must be reset, so a healthy
//! backend's cache lines stay shared, not bounced between cores.
//!
//! # Invariants
//! - One probe at a time: the open → half-open transition is a compare-and-swap; only the
//!   worker that wins it sends the probe request. A probe whose request ends without a
//!   verdict (its client went away, its deadline was spent elsewhere) is given back
//!   ([`release_probe`]); one that never reports back at all expires after another
//!   cool-down.
//! - A backend flaps only after `fall` consecutive failed checks and returns only after
//!   `rise` consecutive good ones.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Instant;

use crate::config::CircuitSettings;
use crate::upstream::backend::{Backend, Circuit, Health};

/// Milliseconds since the first call in this process (a monotonic clock for atomics).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// How a request may use a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Normal traffic.
    Normal,
    /// This request is the half-open probe: its result closes or re-opens the circuit.
    /// `claimed_ms`: when it was claimed ([`now_ms`]), to give it back by.
    Probe {
        /// The breaker clock's reading the claim stored.
        claimed_ms: u64,
    },
}

impl Admission {
    /// Whether this is the half-open probe.
    #[inline]
    pub fn is_probe(self) -> bool {
        matches!(self, Admission::Probe { .. })
    }
}

/// Whether a request may be sent to `b` now (None: skip it).
#[inline]
pub fn admit(b: &Backend, circuit: Option<&CircuitSettings>) -> Option<Admission> {
    if b.health() != Health::Up || b.is_drained() {
        return None;
    }
    match b.circuit() {
        Circuit::Closed => Some(Admission::Normal),
        state => {
            // A circuit left open when a reload disabled the breaker does not block.
            let Some(settings) = circuit else {
                return Some(Admission::Normal);
            };
            let now = now_ms();
            let since = cooled_down(b, settings, now)?;
            // Cool-down over (or a half-open probe went missing): one worker wins the
            // right to probe by moving the timestamp.
            if b.circuit_opened_ms
                .compare_exchange(since, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return None;
            }
            if state == Circuit::Open {
                b.transition_circuit(Circuit::Open, Circuit::HalfOpen);
                tracing::info!(backend = %b.addr, "circuit half-open: sending one probe request");
            }
            Some(Admission::Probe { claimed_ms: now })
        }
    }
}

/// Whether a request would be let through to `b` now: what [`admit`] decides, without
/// claiming the half-open probe. An open circuit whose cool-down is over counts (the next
/// request probes it), and so does any circuit once the breaker is disabled.
pub fn would_admit(b: &Backend, circuit: Option<&CircuitSettings>) -> bool {
    if b.health() != Health::Up || b.is_drained() {
        return false;
    }
    match (b.circuit(), circuit) {
        (Circuit::Closed, _) | (_, None) => true,
        (_, Some(settings)) => cooled_down(b, settings, now_ms()).is_some(),
    }
}

/// When `b`'s circuit was last opened (or probed), if its cool-down is over at `now`.
#[inline]
fn cooled_down(b: &Backend, settings: &CircuitSettings, now: u64) -> Option<u64> {
    let since = b.circuit_opened_ms.load(Ordering::Acquire);
    (now.saturating_sub(since) >= settings.cooldown.as_millis() as u64).then_some(since)
}

/// Whether an answer with `status` counts as a success for the breaker: a 5xx is a
/// failure only with `circuit.count_5xx`.
#[inline]
pub fn answer_is_success(status: u16, circuit: Option<&CircuitSettings>) -> bool {
    status < 500 || !circuit.is_some_and(|k| k.count_5xx)
}

/// Record the result of one upstream attempt.
#[inline]
pub fn report(
    b: &Backend,
    circuit: Option<&CircuitSettings>,
    admission: Admission,
    is_success: bool,
) {
    let Some(settings) = circuit else { return };
    if is_success {
        if b.consecutive_failures.load(Ordering::Relaxed) != 0 {
            b.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if admission.is_probe() && b.transition_circuit(Circuit::HalfOpen, Circuit::Closed) {
            tracing::info!(backend = %b.addr, "circuit closed: probe succeeded");
        }
        return;
    }
    if admission.is_probe() {
        b.circuit_opened_ms.store(now_ms(), Ordering::Release);
        if b.transition_circuit(Circuit::HalfOpen, Circuit::Open) {
            tracing::warn!(backend = %b.addr, "circuit re-opened: probe failed");
        }
        return;
    }
    let streak = b.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
    if streak >= settings.consecutive_failures && b.circuit() == Circuit::Closed {
        b.circuit_opened_ms.store(now_ms(), Ordering::Release);
        if b.transition_circuit(Circuit::Closed, Circuit::Open) {
            tracing::warn!(backend = %b.addr, failures = streak, "circuit opened");
        }
    }
}

/// Give back the half-open probe `admission` holds when its request ends without a verdict
/// (its client went away first, or the request's deadline, spent by an earlier attempt,
/// ended it): the next request probes at once. Kept, the probe would leave the server
/// refused to every request until it expired a whole cool-down later. A probe that has
/// expired meanwhile, its successor claimed, is left alone.
pub fn release_probe(b: &Backend, circuit: Option<&CircuitSettings>, admission: Admission) {
    let (Admission::Probe { claimed_ms }, Some(settings)) = (admission, circuit) else {
        return;
    };
    // Claimed when the cool-down had passed: as it stood then.
    let cooled = claimed_ms.saturating_sub(settings.cooldown.as_millis() as u64);
    let _ = b.circuit_opened_ms.compare_exchange(
        claimed_ms,
        cooled,
        Ordering::AcqRel,
        Ordering::Relaxed,
    );
}

/// Rise/fall hysteresis for active checks (owned by the health checker thread).
#[derive(Clone, Copy, Debug, Default)]
pub struct Hysteresis {
    successes: u32,
    failures: u32,
}

impl Hysteresis {
    /// Feed one check result; returns the new health if it changes.
    pub fn observe(&mut self, current: Health, ok: bool, rise: u32, fall: u32) -> Option<Health> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            (current == Health::Down && self.successes >= rise).then_some(Health::Up)
        } else {
            self.failures += 1;
            self.successes = 0;
            (current == Health::Up && self.failures >= fall).then_some(Health::Down)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A probe's admission (its claim time matters only to `release_probe`).
    const PROBE: Admission = Admission::Probe { claimed_ms: 0 };

    fn is_probe(a: Option<Admission>) -> bool {
        a.is_some_and(Admission::is_probe)
    }

    fn settings(cooldown_ms: u64) -> CircuitSettings {
        CircuitSettings {
            consecutive_failures: 3,
            cooldown: Duration::from_millis(cooldown_ms),
            count_5xx: true,
        }
    }

    #[test]
    fn hysteresis_needs_streaks() {
        let mut h = Hysteresis::default();
        let mut state = Health::Up;
        let mut apply = |ok| {
            if let Some(s) = h.observe(state, ok, 2, 3) {
                state = s;
            }
            state
        };
        assert_eq!(apply(false), Health::Up);
        assert_eq!(apply(false), Health::Up);
        assert_eq!(
            apply(true),
            Health::Up,
            "a success resets the failure streak"
        );
        assert_eq!(apply(false), Health::Up);
        assert_eq!(apply(false), Health::Up);
        assert_eq!(apply(false), Health::Down);
        assert_eq!(apply(true), Health::Down);
        assert_eq!(apply(false), Health::Down);
        assert_eq!(apply(true), Health::Down);
        assert_eq!(apply(true), Health::Up);
    }

    #[test]
    fn circuit_opens_probes_once_and_closes() {
        let b = Backend::new("127.0.0.1:1".parse().unwrap());
        let s = settings(50);
        for _ in 0..2 {
            report(&b, Some(&s), Admission::Normal, false);
        }
        assert_eq!(b.circuit(), Circuit::Closed);
        report(&b, Some(&s), Admission::Normal, true);
        for _ in 0..3 {
            report(&b, Some(&s), Admission::Normal, false);
        }
        assert_eq!(b.circuit(), Circuit::Open);
        assert_eq!(admit(&b, Some(&s)), None, "open during cool-down");
        std::thread::sleep(Duration::from_millis(60));
        assert!(is_probe(admit(&b, Some(&s))));
        assert_eq!(b.circuit(), Circuit::HalfOpen);
        assert_eq!(admit(&b, Some(&s)), None, "only one probe");
        report(&b, Some(&s), PROBE, false);
        assert_eq!(b.circuit(), Circuit::Open);
        std::thread::sleep(Duration::from_millis(60));
        assert!(is_probe(admit(&b, Some(&s))));
        report(&b, Some(&s), PROBE, true);
        assert_eq!(b.circuit(), Circuit::Closed);
        assert_eq!(admit(&b, Some(&s)), Some(Admission::Normal));
        let t = b.circuit_transitions();
        assert_eq!((t[0].1, t[1].1, t[2].1), (1, 2, 2));
    }

    #[test]
    fn lost_probe_expires() {
        let b = Backend::new("127.0.0.1:1".parse().unwrap());
        let s = settings(30);
        for _ in 0..3 {
            report(&b, Some(&s), Admission::Normal, false);
        }
        std::thread::sleep(Duration::from_millis(40));
        assert!(is_probe(admit(&b, Some(&s))));
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            is_probe(admit(&b, Some(&s))),
            "the first probe never reported"
        );
    }

    #[test]
    fn a_probe_given_back_lets_the_next_request_probe_at_once() {
        let b = Backend::new("127.0.0.1:1".parse().unwrap());
        let s = settings(300);
        for _ in 0..3 {
            report(&b, Some(&s), Admission::Normal, false);
        }
        std::thread::sleep(Duration::from_millis(310));
        let first = admit(&b, Some(&s)).unwrap();
        assert!(first.is_probe());
        assert_eq!(admit(&b, Some(&s)), None, "one probe at a time");
        release_probe(&b, Some(&s), first);
        let second = admit(&b, Some(&s)).unwrap();
        assert!(second.is_probe(), "given back: the next request probes");
        assert_eq!(admit(&b, Some(&s)), None, "one probe at a time again");
        report(&b, Some(&s), second, true);
        assert_eq!(b.circuit(), Circuit::Closed);
    }

    #[test]
    fn would_admit_combines_health_circuit_cool_down_and_drain() {
        let b = Backend::new("127.0.0.1:1".parse().unwrap());
        let s = settings(30);
        assert!(would_admit(&b, Some(&s)));
        b.set_health(Health::Down);
        assert!(!would_admit(&b, Some(&s)));
        b.set_health(Health::Up);
        for _ in 0..3 {
            report(&b, Some(&s), Admission::Normal, false);
        }
        assert!(!would_admit(&b, Some(&s)), "open, cooling down");
        assert!(
            would_admit(&b, None),
            "no breaker: the circuit does not count"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            would_admit(&b, Some(&s)),
            "cooled down: the next request probes"
        );
        assert!(is_probe(admit(&b, Some(&s))));
        assert!(!would_admit(&b, Some(&s)), "the probe is out");
        report(&b, Some(&s), PROBE, true);
        assert!(would_admit(&b, Some(&s)));
        b.set_drained(true);
        assert!(!would_admit(&b, Some(&s)));
    }

    #[test]
    fn disabled_circuit_admits_everything_up() {
        let b = Backend::new("127.0.0.1:1".parse().unwrap());
        for _ in 0..100 {
            report(&b, None, Admission::Normal, false);
        }
        assert_eq!(admit(&b, None), Some(Admission::Normal));
        b.set_health(Health::Down);
        assert_eq!(admit(&b, None), None);
    }
}
