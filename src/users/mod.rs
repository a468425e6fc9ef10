//! Per-user state shared by all workers: two fixed-size, lock-free tables of atomics.
//!
//! - [`rate`]: [`RateTable`], per-user rate limits (GCRA) per class, counted across every
//!   worker and connection of the user.
//! - [`inflight`]: [`InFlightTable`], the user's Commands in flight and the partition they
//!   went to, so that a user moved by a reload sends nothing to its new partition until
//!   its Commands to the old one have completed.
//!
//! These are the only per-user structures that cross cores. Everything else a worker needs
//! about a user arrives in its own routing table; these two cannot, because they count
//! requests that several workers serve at the same time.
//!
//! # Shape shared by both tables
//! A power-of-two array of slots, grouped in buckets of [`BUCKET_SLOTS`] 64-bit words that
//! fill exactly one cache line. A user id is hashed once (`ahash`, seeded per table, so a
//! client cannot aim ids at another user's bucket); the low bits pick the bucket and the
//! user's entry is one of the bucket's slots. A slot whose state says "nothing to remember"
//! (an idle rate entry, an in-flight entry with count 0) can be taken over by another user
//! at any time: the memory is fixed at construction and a flood of distinct ids only
//! recycles slots. When every slot of a bucket is busy, the request goes through
//! *untracked* (admitted / not ordered) and a counter says so; each table's docs say what
//! that means and how to size the table so that it does not happen in practice.
//!
//! # Hot path
//! One hash of the user id, one cache line of keys, one compare-and-swap (plus, in the
//! rate table, the slot's own TAT line; in the in-flight table, a second read of the same
//! bucket line): no lock, no allocation, and no waiting for another core. A failed compare-and-swap is retried with the value that beat it, so
//! every operation completes in a bounded number of steps unless other cores keep
//! succeeding on the same word.

use std::sync::atomic::AtomicU64;

pub mod inflight;
pub mod rate;

pub use inflight::{partition_id, Busy, InFlightGuard, InFlightTable};
pub use rate::{retry_after_secs, Limit, RateTable};

/// Both tables, created once per process and shared by every worker (they outlive
/// reloads: a reload must not forget who is over its limit or whose Commands are in
/// flight).
pub struct UserState {
    /// Rate limits.
    pub rate: RateTable,
    /// Commands in flight, for ordered migration.
    pub in_flight: InFlightTable,
    /// The monotonic origin of the rate table's clock.
    origin: std::time::Instant,
}

impl UserState {
    /// Tables for `rate_users` and `in_flight_users` users at once.
    pub fn new(rate_users: usize, in_flight_users: usize) -> Self {
        Self {
            rate: RateTable::new(rate_users),
            in_flight: InFlightTable::new(in_flight_users),
            origin: std::time::Instant::now(),
        }
    }

    /// Nanoseconds since the tables were created (the rate table's clock).
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// Slots per bucket: 8 words of 8 bytes, one 64-byte cache line.
pub const BUCKET_SLOTS: usize = 8;

/// One bucket of 64-bit words, aligned to (and exactly filling) a cache line.
#[repr(align(64))]
#[derive(Default)]
struct Bucket([AtomicU64; BUCKET_SLOTS]);

/// Number of buckets for `users` users at `slots_per_user` slots each: a power of two, at
/// least one. Saturates instead of overflowing for absurd sizes.
fn bucket_count(users: usize, slots_per_user: usize) -> usize {
    let slots = users.max(1).saturating_mul(slots_per_user);
    slots
        .div_ceil(BUCKET_SLOTS)
        .checked_next_power_of_two()
        .unwrap_or(usize::MAX / 2 + 1)
}

/// `n` default-initialised values in one boxed slice (only at construction).
fn boxed<T: Default>(n: usize) -> Box<[T]> {
    (0..n).map(|_| T::default()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_fills_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }

    #[test]
    fn bucket_count_is_a_power_of_two_covering_the_slots() {
        assert_eq!(bucket_count(0, 2), 1);
        assert_eq!(bucket_count(1, 2), 1);
        assert_eq!(bucket_count(4, 2), 1);
        assert_eq!(bucket_count(5, 2), 2);
        assert_eq!(bucket_count(65_536, 2), 16_384);
        assert_eq!(bucket_count(65_537, 2), 32_768);
        for users in [1, 7, 100, 1000, 12_345] {
            let b = bucket_count(users, 8);
            assert!(b.is_power_of_two());
            assert!(b * BUCKET_SLOTS >= users * 8);
        }
    }
}
