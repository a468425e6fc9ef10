//! A differential test of the scanner against `serde_json`, over generated and mutated
//! bodies from a fixed seed (the `user_id_json` fuzz target does the same, coverage-guided,
//! outside `cargo test`).
//!
//! The reference reads a body with `serde_json` and applies the routing rules on what it
//! read: only top-level keys, matched in any case with `ſ` and `K` as `s` and `k` (Go's
//! `encoding/json`); strings, and integers within ±(2^53 − 1), name users; `null` and `""`
//! name nobody; other values are refused, as are ids too long and ids that disagree, the
//! first refusal in document order answering; an object `serde_json` refuses (or a byte
//! order mark in front) is refused as invalid; anything else names nobody.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use super::*;

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Nobody,
    User(Vec<u8>),
    Conflict,
    BadType,
    TooLong,
    Invalid,
}

fn scanner_verdict(scanner: &mut JsonScanner, body: &[u8], rules: &ExtractRules) -> Verdict {
    let mut out = Vec::new();
    match scanner.scan(body, rules, &mut out) {
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

/// The top-level entries of an object, in order, duplicates kept, values as sent.
struct Entries(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// The reference verdict, or `None` where `serde_json` cannot judge (a number in the last
/// half-ulp below the `f64` limit, which its fast path calls out of range).
fn reference_verdict(body: &[u8], rules: &ExtractRules) -> Option<Verdict> {
    let opens_object = body.starts_with(b"\xEF\xBB\xBF")
        || body
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .is_some_and(|&b| b == b'{');
    if let Err(e) = serde_json::from_slice::<Value>(body) {
        if e.to_string().starts_with("number out of range") && !is_beyond_f64_anywhere(body) {
            return None;
        }
        return Some(if opens_object {
            Verdict::Invalid
        } else {
            Verdict::Nobody
        });
    }
    if !opens_object {
        return Some(Verdict::Nobody);
    }
    let Entries(entries) = serde_json::from_slice(body).expect("a valid object");
    let wanted: Vec<String> = rules
        .json_keys
        .iter()
        .map(|k| String::from_utf8(k.to_vec()).unwrap().to_ascii_lowercase())
        .collect();
    let fold = |key: &str| -> String {
        key.chars()
            .map(|c| match c {
                '\u{17f}' => 's',
                '\u{212a}' => 'k',
                c => c.to_ascii_lowercase(),
            })
            .collect()
    };
    let mut found: Option<Vec<u8>> = None;
    for (key, value) in entries {
        if !wanted.contains(&fold(&key)) {
            continue;
        }
        let raw = value.get();
        let id = match raw.as_bytes()[0] {
            b'n' => continue,
            b'"' => serde_json::from_str::<String>(raw).unwrap().into_bytes(),
            b'-' | b'0'..=b'9' if !raw.contains(['.', 'e', 'E']) => {
                match raw.parse::<i128>() {
                    // `-0` is 0, as to JavaScript, Go and Python.
                    Ok(n) if n.unsigned_abs() < 1 << 53 => n.to_string().into_bytes(),
                    _ => return Some(Verdict::BadType),
                }
            }
            _ => return Some(Verdict::BadType),
        };
        if id.is_empty() {
            continue;
        }
        if id.len() > rules.max_user_id_bytes {
            return Some(Verdict::TooLong);
        }
        match &found {
            None => found = Some(id),
            Some(first) if *first == id => {}
            Some(_) => return Some(Verdict::Conflict),
        }
    }
    Some(found.map_or(Verdict::Nobody, Verdict::User))
}

/// Whether some number-looking run of `body` rounds to infinity as an `f64`.
fn is_beyond_f64_anywhere(body: &[u8]) -> bool {
    let is_number_byte = |b: &u8| matches!(b, b'0'..=b'9' | b'+' | b'-' | b'.' | b'e' | b'E');
    body.split(|b| !is_number_byte(b))
        .filter_map(|run| std::str::from_utf8(run).ok()?.parse::<f64>().ok())
        .any(f64::is_infinite)
}

/// xorshift64*: a fixed sequence, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const KEYS: &[&str] = &[
    r#""user_id""#,
    r#""userId""#,
    r#""uid""#,
    r#""accountId""#,
    r#""account_id""#,
    r#""USER_ID""#,
    r#""User_Id""#,
    r#""UID""#,
    r#""userid""#,
    r#""user\u005fid""#,
    r#""\u0055ID""#,
    r#""u\u017fer_id""#,
    "\"u\u{17f}er_id\"",
    "\"user_\u{131}d\"",
    r#""user_idx""#,
    r#""user-id""#,
    r#""symbol""#,
    r#""px""#,
    r#""""#,
    r#""\ud800""#,
];

const SCALARS: &[&str] = &[
    r#""alice""#,
    r#""bob""#,
    r#""""#,
    r#""caf\u00e9""#,
    "\"caf\u{e9}\"",
    r#""a\"b""#,
    r#""\ud83d\ude00""#,
    "\"\u{17f}\"",
    "null",
    "true",
    "false",
    "0",
    "-0",
    "7",
    "-7",
    "42",
    "1.5",
    "1e2",
    "-0.0",
    "9007199254740991",
    "9007199254740992",
    "-9007199254740991",
    "-9007199254740992",
    "18446744073709551615",
    "18446744073709551616",
];

/// Values that make a document invalid, picked less often.
const FAULTS: &[&str] = &[r#""\ud800""#, "1e309", "01", "NaN", "'a'", "[1,]"];

const WHITESPACE: &[&str] = &["", "", "", " ", "\n", "\t ", "\r\n"];

fn value(rng: &mut Rng, depth: usize, out: &mut String) {
    match if depth > 4 { 0 } else { rng.below(6) } {
        0..=3 if rng.below(16) == 0 => out.push_str(rng.pick(FAULTS)),
        0..=3 => out.push_str(rng.pick(SCALARS)),
        4 => {
            out.push('[');
            for i in 0..rng.below(4) {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(rng.pick(WHITESPACE));
                value(rng, depth + 1, out);
            }
            out.push(']');
        }
        _ => object(rng, depth + 1, out),
    }
}

fn object(rng: &mut Rng, depth: usize, out: &mut String) {
    out.push('{');
    for i in 0..rng.below(5) {
        if i > 0 {
            out.push(',');
        }
        out.push_str(rng.pick(WHITESPACE));
        out.push_str(rng.pick(KEYS));
        out.push_str(rng.pick(WHITESPACE));
        out.push(':');
        out.push_str(rng.pick(WHITESPACE));
        value(rng, depth, out);
    }
    out.push('}');
}

/// Byte strings a mutation inserts or puts in place of others.
const SPLICES: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b" ",
    b"\x00",
    b"\x0c",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\\u",
    b"\\ud800",
    b"e",
    b"-",
    b".",
    b"0",
    b"U",
    b"\"uid\":\"z\",",
];

fn mutate(rng: &mut Rng, body: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(body.len() + 1);
        match rng.below(5) {
            0 => {
                body.truncate(at);
            }
            1 if at < body.len() => {
                body.remove(at);
            }
            2 if at < body.len() => {
                body[at] ^= 1 << rng.below(8);
            }
            3 if at < body.len() => {
                // Flip the case of an ASCII letter.
                if body[at].is_ascii_alphabetic() {
                    body[at] ^= 0x20;
                }
            }
            _ => {
                let splice = rng.pick(SPLICES);
                body.splice(at..at, splice.iter().copied());
            }
        }
    }
}

#[test]
fn scanner_agrees_with_serde_json_on_generated_and_mutated_bodies() {
    let rules = ExtractRules::default();
    let short = ExtractRules {
        max_user_id_bytes: 4,
        ..ExtractRules::default()
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut warm = JsonScanner::new();
    let (mut compared, mut kinds) = (0, std::collections::HashMap::new());
    for round in 0..40_000 {
        let mut text = String::new();
        text.push_str(rng.pick(WHITESPACE));
        object(&mut rng, 0, &mut text);
        text.push_str(rng.pick(WHITESPACE));
        let mut body = text.into_bytes();
        if round % 2 == 1 {
            mutate(&mut rng, &mut body);
        }
        let rules = if round % 7 == 0 { &short } else { &rules };
        let fresh = scanner_verdict(&mut JsonScanner::new(), &body, rules);
        let reused = scanner_verdict(&mut warm, &body, rules);
        let shown = String::from_utf8_lossy(&body);
        assert_eq!(fresh, reused, "a reused scanner differs on {shown:?}");
        let Some(reference) = reference_verdict(&body, rules) else {
            continue;
        };
        assert_eq!(fresh, reference, "scanner vs serde_json on {shown:?}");
        compared += 1;
        *kinds.entry(std::mem::discriminant(&reference)).or_insert(0) += 1;
    }
    // Every verdict came up often enough to mean something.
    assert!(compared > 39_000, "{compared}");
    assert_eq!(kinds.len(), 6, "{kinds:?}");
    assert!(kinds.values().all(|&n| n > 200), "{kinds:?}");
}

/// The string scan's sixteen-byte blocks: each special byte or sequence (quotes, escapes,
/// control characters, bytes beyond ASCII, well-formed or not, cut short) at every
/// position of a block, in strings that cross block edges and the end of the body, as an
/// id, a key and a skipped value, and in bodies shorter than one block or cut inside one.
#[test]
fn string_blocks_agree_with_serde_json_at_every_offset() {
    let rules = ExtractRules::default();
    let specials: &[&[u8]] = &[
        b"",
        b"\\\"",
        b"\\\\",
        b"\\/",
        b"\\n",
        b"\\u00e9",
        b"\\ud83d\\ude00",
        b"\\ud800",
        b"\\u00",
        b"\\x",
        b"\\",
        b"\"",
        b"\x00",
        b"\x01",
        b"\t",
        b"\x1f",
        b" ",
        b"\x7f",
        "\u{e9}".as_bytes(),
        "\u{20ac}".as_bytes(),
        "\u{1f600}".as_bytes(),
        b"\xc3",
        b"\xe2\x82",
        b"\xf0\x9f\x98",
        b"\x80",
        b"\xbf",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xff",
    ];
    let mut warm = JsonScanner::new();
    let mut compared = 0;
    for pad in 0..17 {
        for before in 0..17 {
            for special in specials {
                for after in [0, 1, 15, 16] {
                    let mut s = vec![b'a'; before];
                    s.extend_from_slice(special);
                    s.resize(s.len() + after, b'b');
                    let s = &s[..];
                    let p = vec![b'x'; pad];
                    let p = &p[..];
                    let id = [&b"{\"p\":\""[..], p, b"\",\"uid\":\"", s, b"\"}"].concat();
                    let key = [&b"{\"p\":\""[..], p, b"\",\"", s, b"\":1,\"uid\":\"u\"}"].concat();
                    let skipped = [
                        &b"{\"p\":\""[..],
                        p,
                        b"\",\"x\":\"",
                        s,
                        b"\",\"uid\":\"u\"}",
                    ]
                    .concat();
                    let nested =
                        [&b"{\"p\":\""[..], p, b"\",\"x\":[\"", s, b"\"],\"uid\":7}"].concat();
                    let short = [&b"{\"uid\":\""[..], &p[..pad % 4], s, b"\"}"].concat();
                    let mut bodies = vec![id, key, skipped, nested];
                    // Cut inside the string, at its end and just after its closing quote.
                    for body in bodies.clone() {
                        let end = body.windows(s.len().max(1)).rposition(|w| w == s);
                        if let Some(end) = end.filter(|_| !s.is_empty()) {
                            bodies.push(body[..end + s.len() / 2].to_vec());
                            bodies.push(body[..end + s.len()].to_vec());
                            bodies.push(body[..end + s.len() + 1].to_vec());
                        }
                    }
                    if pad < 4 {
                        // Shorter than a block, or about one; and each of its prefixes.
                        bodies.extend((1..=short.len()).map(|n| short[..n].to_vec()));
                    }
                    for body in &bodies {
                        let shown = String::from_utf8_lossy(body);
                        let fresh = scanner_verdict(&mut JsonScanner::new(), body, &rules);
                        let reused = scanner_verdict(&mut warm, body, &rules);
                        assert_eq!(fresh, reused, "a reused scanner differs on {shown:?}");
                        let reference = reference_verdict(body, &rules).unwrap();
                        assert_eq!(fresh, reference, "scanner vs serde_json on {shown:?}");
                        compared += 1;
                    }
                }
            }
        }
    }
    assert!(compared > 100_000, "{compared}");
}
