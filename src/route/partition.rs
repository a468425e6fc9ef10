//! Choosing a partition for a user that the explicit `[users]` table does not name.
//!
//! # Algorithm: rendezvous (highest-random-weight) hashing
//! Each partition gets a fixed seed from its *name*; a user goes to the partition whose
//! `mix(hash(user) ^ seed)` is largest. Consequences, all tested below:
//! - adding a partition moves only the users that the new partition now wins: ~1/(N+1)
//!   of them (measured over 100,000 users: 19.91 % from 4 to 5 partitions, 10.03 % from
//!   9 to 10);
//! - removing a partition moves only its own users; the others stay put;
//! - the order partitions are listed in does not matter, only their names;
//! - the hash is fixed (FNV-1a 64 then the murmur3 64-bit finaliser), with no per-process
//!   seed and no CPU-dependent code path, so every ringgate instance with the same config
//!   sends a user to the same partition (what an L4-balanced fleet needs).
//!
//! Cost: one pass over the user id plus one multiply-xorshift per partition; with the
//! handful of partitions an exchange runs, a few nanoseconds.

pub use crate::hash::fnv1a64;

/// murmur3's 64-bit finaliser: full avalanche of all input bits.
#[inline]
pub fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The stable hash of a user id.
#[inline]
pub fn user_hash(user: &[u8]) -> u64 {
    mix64(fnv1a64(user))
}

/// The seed of a partition, derived from its name only.
pub fn partition_seed(name: &str) -> u64 {
    mix64(fnv1a64(name.as_bytes()) ^ 0x9e37_79b9_7f4a_7c15)
}

/// Index (into `seeds`) of the partition that wins `user_hash`; `None` when empty.
#[inline]
pub fn rendezvous_pick(user_hash: u64, seeds: &[u64]) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for (i, &seed) in seeds.iter().enumerate() {
        let score = mix64(user_hash ^ seed);
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, i));
        }
    }
    best.map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("zone_{i}")).collect()
    }

    fn assign(users: usize, parts: &[String]) -> Vec<String> {
        let seeds: Vec<u64> = parts.iter().map(|p| partition_seed(p)).collect();
        (0..users)
            .map(|u| {
                let h = user_hash(format!("user-{u}").as_bytes());
                parts[rendezvous_pick(h, &seeds).unwrap()].clone()
            })
            .collect()
    }

    #[test]
    fn adding_a_partition_moves_about_one_in_n_plus_one() {
        const USERS: usize = 100_000;
        for n in [1usize, 2, 4, 9] {
            let before = assign(USERS, &names(n));
            let after = assign(USERS, &names(n + 1));
            let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
            let share = moved as f64 / USERS as f64;
            let ideal = 1.0 / (n as f64 + 1.0);
            println!(
                "{n} -> {} partitions: {:.2} % of users moved (ideal {:.2} %)",
                n + 1,
                share * 100.0,
                ideal * 100.0
            );
            assert!(
                (share - ideal).abs() < 0.01,
                "{n}->{}: moved {share:.4}, ideal {ideal:.4}",
                n + 1
            );
            // Every moved user went to the new partition.
            let new = format!("zone_{}", n + 1);
            assert!(before.iter().zip(&after).all(|(a, b)| a == b || *b == new));
        }
    }

    #[test]
    fn removing_a_partition_moves_only_its_users() {
        let all = names(5);
        let before = assign(50_000, &all);
        let fewer: Vec<String> = all.iter().filter(|p| *p != "zone_3").cloned().collect();
        let after = assign(50_000, &fewer);
        for (a, b) in before.iter().zip(&after) {
            if a != "zone_3" {
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn spread_is_even_and_order_independent() {
        let parts = names(4);
        let a = assign(80_000, &parts);
        for p in &parts {
            let share = a.iter().filter(|x| *x == p).count() as f64 / 80_000.0;
            assert!((share - 0.25).abs() < 0.01, "{p}: {share}");
        }
        let mut reversed = parts.clone();
        reversed.reverse();
        assert_eq!(a, assign(80_000, &reversed));
    }

    #[test]
    fn hash_is_fixed_across_builds() {
        // Pinned values: a change here silently re-partitions every deployed fleet.
        assert_eq!(fnv1a64(b"alice"), 0x508b_2abb_65a0_3907);
        assert_eq!(user_hash(b""), mix64(0xcbf2_9ce4_8422_2325));
        let seeds: Vec<u64> = names(3).iter().map(|p| partition_seed(p)).collect();
        let picks: Vec<usize> = ["alice", "bob", "carol", "dave"]
            .iter()
            .map(|u| rendezvous_pick(user_hash(u.as_bytes()), &seeds).unwrap())
            .collect();
        assert_eq!(picks, PINNED_PICKS);
    }

    const PINNED_PICKS: [usize; 4] = [2, 1, 1, 1];

    /// The README's formula is what another service would implement to find a user's
    /// partition: it must be the router's.
    #[test]
    fn readme_formula_is_the_routers() {
        let parts = names(4);
        let seeds: Vec<u64> = parts
            .iter()
            .map(|p| mix64(fnv1a64(p.as_bytes()) ^ 0x9e37_79b9_7f4a_7c15))
            .collect();
        for u in 0..1_000 {
            let user = format!("user-{u}");
            let documented = (0..seeds.len())
                .max_by_key(|&i| mix64(mix64(fnv1a64(user.as_bytes())) ^ seeds[i]))
                .unwrap();
            let routed = rendezvous_pick(user_hash(user.as_bytes()), &seeds).unwrap();
            assert_eq!(documented, routed, "{user}");
        }
    }
}
