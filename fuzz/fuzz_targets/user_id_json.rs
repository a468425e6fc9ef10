//! Fuzz target: user id extraction from a JSON body, differential against `serde_json`.
//!
//! # Guarantee
//! For any body bytes, ringgate's single-pass scanner ([`JsonScanner::scan`]) and an
//! independent reading with `serde_json` agree on which user the body names:
//! - only top-level keys of a top-level object count, matched after JSON unescaping
//!   against the configured keys in any case, with `ſ` and `K` (Kelvin) as `s` and `k`
//!   (as Go's `encoding/json` matches them); nested keys and keys inside strings never
//!   count;
//! - a string value names that string; an integer value (no fraction, no exponent, within
//!   ±(2^53 − 1)) names its decimal form; `null` and `""` name nobody;
//! - any other value type for a configured key is refused, an id longer than
//!   `max_user_id_bytes` is refused, and two configured keys (or one key twice) naming
//!   different users are refused as a *conflict* — both sides say "conflict";
//! - a body that opens an object (or starts with a byte order mark) but is not one valid
//!   JSON document is refused as invalid, any other invalid body names nobody (at any
//!   nesting depth: both sides have no limit).
//!
//! Two input classes are left out of the comparison (ringgate still runs on them, fresh
//! and warm), where the reference cannot judge:
//! - a number in the last half-ulp below the `f64` overflow threshold
//!   (`1.7976931348623158e308`) rounds to `f64::MAX`, as ringgate (and `simd-json` before
//!   it) reads it, but `serde_json`'s fast float parsing (without its `float_roundtrip`
//!   feature) calls it out of range;
//! - more than [`MAX_REFERENCE_OPENINGS`] `[`/`{` bytes: `serde_json` recurses per level and
//!   overflows the stack (with AddressSanitizer's frames) around 5,000 levels, where
//!   ringgate's scanner keeps a bit per level.
//!
//! It also checks that a reused scanner (buffers and tape kept from the previous input,
//! as on a worker) answers exactly like a fresh one, also when the body is scanned from
//! its own input buffer (the de-chunked path).
#![no_main]

use std::cell::RefCell;
use std::fmt;

use libfuzzer_sys::fuzz_target;
use ringgate::error::ProxyError;
use ringgate::route::extract::ExtractRules;
use ringgate::route::json::JsonScanner;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Nobody,
    User(Vec<u8>),
    Conflict,
    BadType,
    TooLong,
    Invalid,
}

thread_local! {
    static WARM: RefCell<JsonScanner> = RefCell::new(JsonScanner::new());
}

fuzz_target!(|body: &[u8]| {
    let rules = ExtractRules::default();
    let fresh = ringgate_verdict(&mut JsonScanner::new(), body, &rules);
    let warm = WARM.with(|s| ringgate_verdict(&mut s.borrow_mut(), body, &rules));
    assert_eq!(fresh, warm, "a reused scanner answered differently");
    // The de-chunked path: the body copied into the scanner's own input buffer.
    let input = WARM.with(|s| {
        let mut s = s.borrow_mut();
        s.input().extend_from_slice(body);
        let mut out = Vec::new();
        let r = s.scan_input(&rules, &mut out);
        verdict(r, out)
    });
    assert_eq!(fresh, input, "scan_input answered differently");
    let Some(reference) = reference_verdict(body, &rules) else {
        return;
    };
    assert_eq!(
        fresh,
        reference,
        "ringgate and serde_json disagree on {:?}",
        String::from_utf8_lossy(body)
    );
});

fn ringgate_verdict(scanner: &mut JsonScanner, body: &[u8], rules: &ExtractRules) -> Verdict {
    let mut out = Vec::new();
    let r = scanner.scan(body, rules, &mut out);
    verdict(r, out)
}

fn verdict(r: Result<bool, ProxyError>, out: Vec<u8>) -> Verdict {
    match r {
        Ok(true) => Verdict::User(out),
        Ok(false) => Verdict::Nobody,
        Err(e) => match e.reason() {
            "conflicting user ids in body" => Verdict::Conflict,
            "user id must be a string or an integer" => Verdict::BadType,
            "user id too long" => Verdict::TooLong,
            "invalid JSON body" => Verdict::Invalid,
            other => panic!("unexpected refusal: {other}"),
        },
    }
}

/// The top-level entries of an object, in order, duplicates kept, values unparsed.
struct Entries(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = map.next_entry::<String, Box<RawValue>>()? {
                    v.push((k, val));
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// Any JSON value, read in full and thrown away.
struct Valid;

impl<'de> serde::Deserialize<'de> for Valid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Valid;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_unit<E>(self) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Valid, A::Error> {
                while seq.next_element::<Valid>()?.is_some() {}
                Ok(Valid)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
                while map.next_entry::<Valid, Valid>()?.is_some() {}
                Ok(Valid)
            }
        }
        d.deserialize_any(V)
    }
}

/// Bodies with more opening brackets than this are not given to the reference (see the
/// guarantee above); 2,048 still nests past every boundary of ringgate's bit stack (64,
/// 128) and past the 1,024 levels `simd-json` stopped at.
const MAX_REFERENCE_OPENINGS: usize = 2_048;

/// The user `serde_json` reads from `body`, or `None` where it cannot be the judge.
fn reference_verdict(body: &[u8], rules: &ExtractRules) -> Option<Verdict> {
    if body.iter().filter(|&&b| b == b'[' || b == b'{').count() > MAX_REFERENCE_OPENINGS {
        return None;
    }
    // A JSON document serde_json reads in full (every string decoded, every number
    // parsed; any depth: the recursion limit is off, as ringgate's scanner has none)?
    let mut de = serde_json::Deserializer::from_slice(body);
    de.disable_recursion_limit();
    let valid: Result<Valid, _> = serde::Deserialize::deserialize(&mut de);
    if let Err(e) = &valid {
        if is_float_overflow_artefact(body, e) {
            return None;
        }
    }
    if valid.is_err() || de.end().is_err() {
        let opens_object = body.starts_with(b"\xEF\xBB\xBF")
            || body
                .iter()
                .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                .is_some_and(|&b| b == b'{');
        return Some(if opens_object {
            Verdict::Invalid
        } else {
            Verdict::Nobody
        });
    }
    Some(entries_verdict(body, rules))
}

/// Whether `serde_json` refused a number as out of range that rounds, correctly, to a
/// finite `f64` (see the guarantee above).
fn is_float_overflow_artefact(body: &[u8], e: &serde_json::Error) -> bool {
    if !e.to_string().starts_with("number out of range") {
        return false;
    }
    // serde_json's line is 1-based, its column the byte offset within the line.
    let line_start: usize = body
        .split(|&b| b == b'\n')
        .take(e.line().saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    let at = (line_start + e.column()).min(body.len());
    let is_number_byte = |b: &u8| matches!(b, b'0'..=b'9' | b'+' | b'-' | b'.' | b'e' | b'E');
    let start = body[..at]
        .iter()
        .rposition(|b| !is_number_byte(b))
        .map_or(0, |i| i + 1);
    let end = at + body[at..].iter().take_while(|b| is_number_byte(b)).count();
    std::str::from_utf8(&body[start..end])
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// The verdict on a body `serde_json` read in full.
fn entries_verdict(body: &[u8], rules: &ExtractRules) -> Verdict {
    let Ok(text) = std::str::from_utf8(body) else {
        return Verdict::Nobody;
    };
    if !text
        .trim_start_matches([' ', '\t', '\r', '\n'])
        .starts_with('{')
    {
        return Verdict::Nobody;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    // Keys are decoded now; a key serde_json cannot decode (a lone surrogate escape)
    // makes the body unreadable for it: nobody.
    let entries: Entries = match serde::Deserialize::deserialize(&mut de) {
        Ok(e) => e,
        Err(_) => return Verdict::Nobody,
    };

    let mut found: Option<Vec<u8>> = None;
    for (key, value) in entries.0 {
        let key: String = key
            .chars()
            .map(|c| match c {
                '\u{17f}' => 's',
                '\u{212a}' => 'k',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        if !rules
            .json_keys
            .iter()
            .any(|k| k.to_ascii_lowercase() == key.as_bytes())
        {
            continue;
        }
        let id: Vec<u8> = match classify(value.get()) {
            Value::Null => continue,
            Value::Other => return Verdict::BadType,
            Value::Unreadable => return Verdict::Nobody,
            Value::Id(id) => id,
        };
        if id.is_empty() {
            continue;
        }
        if id.len() > rules.max_user_id_bytes {
            return Verdict::TooLong;
        }
        match &found {
            None => found = Some(id),
            Some(first) if *first == id => {}
            Some(_) => return Verdict::Conflict,
        }
    }
    found.map_or(Verdict::Nobody, Verdict::User)
}

enum Value {
    Null,
    Id(Vec<u8>),
    Other,
    /// A string serde_json cannot decode.
    Unreadable,
}

fn classify(raw: &str) -> Value {
    match raw.as_bytes()[0] {
        b'"' => match serde_json::from_str::<String>(raw) {
            Ok(s) => Value::Id(s.into_bytes()),
            Err(_) => Value::Unreadable,
        },
        b'n' => Value::Null,
        b'-' | b'0'..=b'9' => {
            if raw.contains(['.', 'e', 'E']) {
                return Value::Other;
            }
            match raw.parse::<i128>() {
                Ok(n) if n.unsigned_abs() < 1 << 53 => Value::Id(n.to_string().into_bytes()),
                _ => Value::Other,
            }
        }
        _ => Value::Other,
    }
}
