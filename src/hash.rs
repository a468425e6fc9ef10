//! FNV-1a 64: the one fixed, unseeded hash used where the same bytes must give the same
//! number on every host and in every process — the config file's hash, the seeds and user
//! hashes of rendezvous partitioning, and the body digest the demo backend reports.
//!
//! A leaf module: it imports nothing from the crate, so `config`, `route` and `demo` can all
//! use it without depending on each other. Not for hash tables fed by clients (no seed, so
//! no flooding resistance): those use `ahash`.

/// FNV-1a 64 offset basis.
const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `bytes`.
#[inline]
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv64::default();
    h.update(bytes);
    h.finish()
}

/// Incremental FNV-1a 64: feeding the bytes in pieces gives the same digest as
/// [`fnv1a64`] over all of them.
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(OFFSET_BASIS)
    }
}

impl Fnv64 {
    /// Absorb bytes.
    #[inline]
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
    }

    /// The digest.
    #[inline]
    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(fnv1a64(b""), OFFSET_BASIS);
        assert_eq!(fnv1a64(b"alice"), 0x508b_2abb_65a0_3907);
    }

    #[test]
    fn pieces_give_the_whole_digest() {
        let whole = b"hello world";
        for split in 0..=whole.len() {
            let mut f = Fnv64::default();
            f.update(&whole[..split]);
            f.update(&whole[split..]);
            assert_eq!(f.finish(), fnv1a64(whole), "split at {split}");
        }
    }
}
