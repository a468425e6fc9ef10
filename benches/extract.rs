//! Stage 2 of the data path: finding the `user_id` (header → query → top-level JSON key).
//!
//! What is measured (ns per request, warm, output buffer reused):
//!
//! - `header/*`: [`user_id_from_headers`] over an already parsed head: the 3-field Query
//!   head `ringgate-load` sends, and an 11-field SDK head with `X-User-Id` 10th.
//! - `query/*`: [`user_id_from_query`] on `user_id=u123` and on a 4-parameter query string
//!   with `user_id` last (percent-decoding path included).
//! - `json_200B_id_first/*`, `json_200B_id_last/*`, `json_2KiB_id_first/*` and
//!   `json_2KiB_id_last/*`: the body scan, five ways, on a 200-byte order with `user_id`
//!   first or last, and on a 2-KiB batch order whose top-level `user_id` is first or last,
//!   the last after twelve nested objects that carry `user_id` keys of their own:
//!   - `scanner`: ringgate's [`JsonScanner`] (one validating pass over the body in place,
//!     nested values skipped, top-level keys compared in place, all seven configured
//!     names, agreement check);
//!   - `simd_json_tape`: what ringgate did before (`fixtures::tape`): the body copied into
//!     a padded buffer, a full `simd-json` tape into reused buffers, then a walk over the
//!     top-level entries, same names, same agreement check;
//!   - `serde_json_value`: the obvious alternative, `serde_json::from_slice::<Value>` and
//!     a top-level lookup of the seven names (allocates a tree per body);
//!   - `serde_json_visitor`: the best serde_json can do: a streaming visitor that compares
//!     top-level keys without allocating and skips every other value with `IgnoredAny`
//!     (which checks less than the scanner: skipped strings are not checked for UTF-8,
//!     skipped numbers not for the `f64` range);
//!   - `memchr_prescan`: `memmem` for `"user_id"` then read the string after it. **Not
//!     correct** (it matches nested keys and keys inside strings, knows one name only, and
//!     returns `sub0` instead of `u123` on the 2-KiB body — asserted below); it is here as
//!     the lower bound: what correctness costs.

use std::fmt;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringgate::http::parse::{parse_request, RequestHead};
use ringgate::http::scan::HeadScanner;
use ringgate::route::extract::{
    user_id_from_headers, user_id_from_query, ExtractRules, JsonScanner,
};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

mod fixtures;

fn parsed(bytes: &[u8]) -> RequestHead {
    let mut head = RequestHead::default();
    let len = HeadScanner::new().scan(bytes, 16_384).unwrap().unwrap();
    parse_request(bytes, len, 100, &mut head).unwrap();
    head
}

/// serde_json::Value, then the configured names looked up at the top level.
fn serde_value_id(body: &[u8], rules: &ExtractRules, out: &mut Vec<u8>) -> bool {
    out.clear();
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return false;
    };
    let mut found = false;
    for key in &rules.json_keys {
        let key = std::str::from_utf8(key).expect("utf-8 key");
        let candidate = match map.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => continue,
        };
        if found {
            assert_eq!(out, candidate.as_bytes(), "conflicting ids");
        } else {
            out.extend_from_slice(candidate.as_bytes());
            found = true;
        }
    }
    found
}

/// A streaming serde_json visitor: top-level keys compared in place, other values skipped.
struct TopLevelId<'a> {
    rules: &'a ExtractRules,
    out: &'a mut Vec<u8>,
}

/// Whether a key is one of the configured names (borrowed or unescaped, no allocation).
struct KeyIsId<'a>(&'a ExtractRules);

impl<'de> DeserializeSeed<'de> for KeyIsId<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIsId<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(self.0.json_keys.iter().any(|k| **k == *key.as_bytes()))
    }
}

/// Appends a string or integer id to `out`.
struct IdValue<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for IdValue<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for IdValue<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or integer user id")
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.extend_from_slice(v.as_bytes());
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.extend_from_slice(v.to_string().as_bytes());
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.extend_from_slice(v.to_string().as_bytes());
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for TopLevelId<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevelId<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        self.out.clear();
        let mut found = false;
        while let Some(is_id) = map.next_key_seed(KeyIsId(self.rules))? {
            if !is_id {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let start = self.out.len();
            map.next_value_seed(IdValue(self.out))?;
            if self.out.len() == start {
                continue;
            }
            if found {
                let same = self.out[..start] == self.out[start..];
                self.out.truncate(start);
                if !same {
                    return Err(serde::de::Error::custom("conflicting user ids"));
                }
            } else {
                found = true;
            }
        }
        Ok(found)
    }
}

fn serde_visitor_id(body: &[u8], rules: &ExtractRules, out: &mut Vec<u8>) -> bool {
    let mut de = serde_json::Deserializer::from_slice(body);
    TopLevelId { rules, out }
        .deserialize(&mut de)
        .unwrap_or(false)
}

/// Unsound lower bound: first `"user_id"` anywhere, then the string after it.
fn memchr_prescan_id<'a>(finder: &memchr::memmem::Finder<'_>, body: &'a [u8]) -> Option<&'a [u8]> {
    let at = finder.find(body)? + finder.needle().len();
    let rest = &body[at..];
    let colon = memchr::memchr(b':', rest)?;
    let rest = &rest[colon + 1..];
    let open = memchr::memchr(b'"', rest)?;
    let rest = &rest[open + 1..];
    let close = memchr::memchr(b'"', rest)?;
    Some(&rest[..close])
}

fn bench_header_and_query(c: &mut Criterion) {
    let rules = ExtractRules::default();
    let mut out = Vec::with_capacity(64);
    let mut g = c.benchmark_group("header");
    for (name, bytes) in [
        ("load_query_3_fields", fixtures::QUERY_HEADER_HEAD),
        ("sdk_query_11_fields", fixtures::SDK_QUERY_HEAD),
    ] {
        let head = parsed(bytes);
        assert!(user_id_from_headers(bytes, &head, &rules, &mut out).unwrap());
        assert_eq!(out, b"u123");
        g.bench_function(name, |b| {
            b.iter(|| user_id_from_headers(black_box(bytes), &head, &rules, &mut out))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("query");
    for (name, q) in [
        ("user_id_only", &b"user_id=u123"[..]),
        ("4_params_user_id_last", fixtures::LONG_QUERY),
    ] {
        assert!(user_id_from_query(q, &rules, &mut out).unwrap());
        assert_eq!(out, b"u123");
        g.bench_function(name, |b| {
            b.iter(|| user_id_from_query(black_box(q), &rules, &mut out))
        });
    }
    g.finish();
}

fn bench_json(c: &mut Criterion) {
    let rules = ExtractRules::default();
    let mut out = Vec::with_capacity(64);
    let mut scanner = JsonScanner::new();
    let mut tape = fixtures::tape::TapeScanner::new();
    let finder = memchr::memmem::Finder::new(b"\"user_id\"");
    for (group, body, prescan_answer) in [
        (
            "json_200B_id_first",
            fixtures::command_body_200(),
            &b"u123"[..],
        ),
        (
            "json_200B_id_last",
            fixtures::command_body_200_id_last(),
            &b"u123"[..],
        ),
        (
            "json_2KiB_id_first",
            fixtures::command_body_2k_id_first(),
            &b"u123"[..],
        ),
        (
            "json_2KiB_id_last",
            fixtures::command_body_2k(),
            &b"sub0"[..],
        ),
    ] {
        // Every correct method finds the top-level id; the pre-scan is fooled by nesting.
        assert!(scanner.scan(&body, &rules, &mut out).unwrap());
        assert_eq!(out, b"u123");
        assert!(tape.scan(&body, &rules, &mut out).unwrap());
        assert_eq!(out, b"u123");
        assert!(serde_value_id(&body, &rules, &mut out));
        assert_eq!(out, b"u123");
        assert!(serde_visitor_id(&body, &rules, &mut out));
        assert_eq!(out, b"u123");
        assert_eq!(memchr_prescan_id(&finder, &body), Some(prescan_answer));

        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("scanner", |b| {
            b.iter(|| scanner.scan(black_box(&body), &rules, &mut out))
        });
        g.bench_function("simd_json_tape", |b| {
            b.iter(|| tape.scan(black_box(&body), &rules, &mut out))
        });
        g.bench_function("serde_json_value", |b| {
            b.iter(|| serde_value_id(black_box(&body), &rules, &mut out))
        });
        g.bench_function("serde_json_visitor", |b| {
            b.iter(|| serde_visitor_id(black_box(&body), &rules, &mut out))
        });
        g.bench_function("memchr_prescan", |b| {
            b.iter(|| memchr_prescan_id(&finder, black_box(&body)).map(<[u8]>::len))
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_header_and_query, bench_json
}
criterion_main!(benches);
