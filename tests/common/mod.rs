//! The integration-test harness: everything a test in `tests/` needs to put a real router
//! between a real client and a real backend on loopback, and to judge what crossed each
//! socket.
//!
//! # Layout
//! - [`router`]: the router under test, started in-process ([`router::Router`]) or as the
//!   real binary ([`router::RouterProcess`]), and the crate's demo backends. This is the
//!   only module that touches the `ringgate` library, so a refactor of the library moves
//!   one file here.
//! - [`backend`]: [`backend::ScriptedBackend`], a thread-per-connection upstream told per
//!   request what to do (answer, delay, 1xx, early answer, FIN, RST, hang, echo) that
//!   records every byte it received.
//! - [`client`]: [`client::Client`], a strict HTTP/1.1 client with its own framing code
//!   that tells a FIN from an RST and reports bytes left over after the last response.
//! - this file: [`wait_until`], [`holds_for`] and [`assert_holds_for`], the ways a test
//!   waits for something; a fixed sleep is for scenario delays only (a backend that
//!   answers late, a cool-down that must pass).
//!
//! # Invariants
//! Every read has a timeout, so a broken router fails a test instead of hanging it; every
//! thread the harness starts ends when the object that started it is dropped.

#![allow(dead_code)]

pub mod backend;
pub mod client;
pub mod router;
pub mod tls;

use std::time::{Duration, Instant};

/// How often [`wait_until`] and [`holds_for`] look at their condition.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Poll `condition` until it is true; panic naming `what` if `timeout` passes first.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Whether `condition` stays true for `duration` (false as soon as it turns false): for
/// "nothing else happens" checks, which no event can signal.
pub fn holds_for(duration: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if !condition() {
            return false;
        }
        if started.elapsed() >= duration {
            return true;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// [`holds_for`], panicking with `what` when the condition turns false.
pub fn assert_holds_for(what: &str, duration: Duration, condition: impl FnMut() -> bool) {
    assert!(holds_for(duration, condition), "no longer true: {what}");
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// For the stale-connection races: every Command answered 200 was taken by the server
/// exactly once, and none answered 502 was taken (`taken`: times each number arrived).
pub fn assert_commands_taken_once(
    taken: &std::collections::HashMap<u64, usize>,
    answered: &[u64],
    refused: &[u64],
) {
    for n in answered {
        assert_eq!(
            taken.get(n),
            Some(&1),
            "Command {n} answered 200: taken once"
        );
    }
    for n in refused {
        assert_eq!(taken.get(n), None, "Command {n} answered 502: never taken");
    }
}
