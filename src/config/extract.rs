//! What the user id extractor looks for: [`ExtractRules`], plain validated data.
//!
//! The extractor itself lives in `route::extract`; the rules and their defaults live here so
//! that `config` depends on nothing in `route` (the data path reads config, never the other
//! way round).

use crate::http::chunked::TrailerNames;

/// Default user id header fields, in priority order.
pub const DEFAULT_HEADERS: &[&str] = &["X-User-Id", "X-Trader-Id"];
/// Default user id query parameters, in priority order.
pub const DEFAULT_QUERY_KEYS: &[&str] = &["user_id", "userId"];
/// Default top-level JSON keys naming the user.
pub const DEFAULT_JSON_KEYS: &[&str] = &[
    "user_id",
    "userId",
    "trader_id",
    "traderId",
    "uid",
    "accountId",
    "account_id",
];
/// Default longest user id, in bytes (`limits.max_user_id_bytes`).
pub const DEFAULT_MAX_USER_ID_BYTES: usize = 256;

/// Which names to look for, in priority order, and how long an id may be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractRules {
    /// Header names (matched case-insensitively).
    pub headers: Vec<Box<[u8]>>,
    /// The header names again, as a chunked request body's trailer section refuses them
    /// (at most [`crate::http::chunked::MAX_REFUSED_TRAILER_NAMES`]).
    pub refused_trailers: TrailerNames,
    /// Query parameter names (matched after percent-decoding, in any case and with PHP's
    /// renaming of `.`, ` ` and `[` to `_`).
    pub query_keys: Vec<Box<[u8]>>,
    /// Top-level JSON keys, ASCII (matched after JSON unescaping in any case, with `ſ` and
    /// `K` as `s` and `k`, as Go's `encoding/json` matches them).
    pub json_keys: JsonKeys,
    /// Longest accepted user id, in bytes.
    pub max_user_id_bytes: usize,
}

impl Default for ExtractRules {
    fn default() -> Self {
        let b = |v: &[&str]| -> Vec<Box<[u8]>> { v.iter().map(|s| s.as_bytes().into()).collect() };
        Self {
            headers: b(DEFAULT_HEADERS),
            refused_trailers: TrailerNames::new(DEFAULT_HEADERS),
            query_keys: b(DEFAULT_QUERY_KEYS),
            json_keys: JsonKeys::new(b(DEFAULT_JSON_KEYS)),
            max_user_id_bytes: DEFAULT_MAX_USER_ID_BYTES,
        }
    }
}

/// The top-level JSON keys that name the user (ASCII), with a filter built once that turns
/// most other keys away before any comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonKeys {
    keys: Vec<Box<[u8]>>,
    /// For each key length (the last entry: that length and longer), one bit per
    /// configured key of that length, from its first and last bytes (ASCII letters in
    /// either case alike).
    filter: [u64; 64],
    longest: usize,
}

impl JsonKeys {
    /// The keys, in priority order.
    pub fn new(keys: Vec<Box<[u8]>>) -> Self {
        let mut filter = [0; 64];
        for k in &keys {
            filter[k.len().min(63)] |= Self::filter_bit(k);
        }
        let longest = keys.iter().map(|k| k.len()).max().unwrap_or(0);
        Self {
            keys,
            filter,
            longest,
        }
    }

    /// Whether `key` may be a configured key in some case: `false` for most keys that are
    /// not (an order's `type`, `side`, `price` …), at a load and a multiplication.
    #[inline(always)]
    pub fn may_match(&self, key: &[u8]) -> bool {
        self.filter[key.len().min(63)] & Self::filter_bit(key) != 0
    }

    /// The length of the longest key.
    pub fn longest(&self) -> usize {
        self.longest
    }

    #[inline(always)]
    fn filter_bit(key: &[u8]) -> u64 {
        let (first, last) = (key.first().copied(), key.last().copied());
        let x = u32::from(first.unwrap_or(0)) << 8 | u32::from(last.unwrap_or(0)) | 0x2020;
        1 << (x.wrapping_mul(0x9E37_79B1) >> 26)
    }
}

impl std::ops::Deref for JsonKeys {
    type Target = [Box<[u8]>];

    fn deref(&self) -> &[Box<[u8]>] {
        &self.keys
    }
}

impl<'a> IntoIterator for &'a JsonKeys {
    type Item = &'a Box<[u8]>;
    type IntoIter = std::slice::Iter<'a, Box<[u8]>>;

    fn into_iter(self) -> Self::IntoIter {
        self.keys.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter lets every configured key through in any case, and turns away the keys
    /// of an order (`type` once passed the 64-bit filter of all seven defaults as
    /// `traderId` would, and cost a comparison with each in both cases).
    #[test]
    fn json_key_filter() {
        let keys = ExtractRules::default().json_keys;
        for k in DEFAULT_JSON_KEYS {
            for k in [k.to_string(), k.to_uppercase(), k.to_lowercase()] {
                assert!(keys.may_match(k.as_bytes()), "{k}");
            }
        }
        for k in [
            "type",
            "side",
            "price",
            "symbol",
            "quantity",
            "post_only",
            "",
        ] {
            assert!(!keys.may_match(k.as_bytes()), "{k}");
        }
        assert_eq!(keys.longest(), "account_id".len());
        let long = JsonKeys::new(vec![vec![b'k'; 100].into_boxed_slice()]);
        assert!(long.may_match(&[b'K'; 100]) && long.may_match(&[b'k'; 70]));
    }
}
