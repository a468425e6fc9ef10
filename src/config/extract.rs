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
    pub json_keys: Vec<Box<[u8]>>,
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
            json_keys: b(DEFAULT_JSON_KEYS),
            max_user_id_bytes: DEFAULT_MAX_USER_ID_BYTES,
        }
    }
}
