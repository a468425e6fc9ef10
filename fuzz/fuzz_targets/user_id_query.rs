//! Fuzz target: user id extraction from a query string, against a model of how servers
//! read one.
//!
//! # Guarantee
//! For any query bytes, [`user_id_from_query`] never panics and gives exactly the verdict
//! of an independent model of the servers behind ringgate, written here without
//! ringgate's code:
//! - a query is split into parameters on `&`, and, by some servers (older Python, some
//!   frameworks), on `;` too; name and value split at the first `=`;
//! - a name and a value are percent-decoded (`+` is a space); a name with a broken escape
//!   is no configured name (Python keeps the escape as it is, Go drops the pair);
//! - a name is a configured key when, decoded and with leading spaces dropped, it equals
//!   the key in any case (ASP.NET) with PHP's renaming: `.` and ` ` read as `_`, and so
//!   does a `[` that no `]` follows; `key[...]` (a `[` that a `]` follows) is an array of
//!   ids to PHP and Express (`qs`), which is refused;
//! - every parameter with a configured name and a non-empty value names the user; its
//!   value must decode (a broken escape is refused), be UTF-8 (Node and Python read other
//!   bytes as U+FFFD) and fit `max_user_id_bytes`; two different users are refused;
//! - with a `;` in the query, both splits must give the same answer (the same user, or
//!   nobody), else the query is refused.
//!
//! So a query is accepted (naming a user, or nobody) only when every server reading above
//! finds that user: ringgate never routes a user a backend reads differently. And it is
//! refused only when they disagree, except for names holding a `[` (policy: ringgate
//! refuses `key[` whatever follows, stricter than PHP).
//!
//! Input layout: byte 0 picks `max_user_id_bytes` (1–16, or the default), the rest is
//! the query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::route::extract::{user_id_from_query, ExtractRules};

fuzz_target!(|data: &[u8]| {
    let Some((&limit, query)) = data.split_first() else {
        return;
    };
    let mut rules = ExtractRules::default();
    if limit < 0x80 {
        rules.max_user_id_bytes = 1 + usize::from(limit % 16);
    }
    let mut out = b"stale".to_vec();
    let got = user_id_from_query(query, &rules, &mut out)
        .map(|found| found.then(|| out.clone()))
        .map_err(|_| ());
    let want = model(query, &rules);
    if got.is_err() && want.is_ok() && names_hold_a_bracket(query) {
        // Policy: refusing `key[` whatever follows, and a `[` after a `[`, is stricter
        // than the model's PHP reading (and harmless).
        return;
    }
    assert_eq!(
        got,
        want,
        "ringgate and the model disagree on {:?}",
        String::from_utf8_lossy(query)
    );
});

/// Whether some parameter name holds a `[` or an escaped one (even before a broken
/// escape, which servers keep as it is).
fn names_hold_a_bracket(query: &[u8]) -> bool {
    query.split(|&b| b == b'&' || b == b';').any(|pair| {
        let name = pair.split(|&b| b == b'=').next().unwrap_or(pair);
        name.contains(&b'[') || name.windows(3).any(|w| w.eq_ignore_ascii_case(b"%5b"))
    })
}

/// The user every server reading finds (`Ok(None)`: nobody), or `Err` if they disagree or
/// an id cannot be read the same way by all of them.
fn model(query: &[u8], rules: &ExtractRules) -> Result<Option<Vec<u8>>, ()> {
    let amp = reading(query, rules, b"&")?;
    if query.contains(&b';') && reading(query, rules, b"&;") != Ok(amp.clone()) {
        return Err(());
    }
    Ok(amp)
}

fn reading(query: &[u8], rules: &ExtractRules, separators: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    let mut user: Option<Vec<u8>> = None;
    for pair in query.split(|b| separators.contains(b)) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let Some(name) = decode(name) else {
            continue;
        };
        let mut is_id = false;
        for key in &rules.query_keys {
            match php_name(&name) {
                (base, true) if eq_key(&base, key) => return Err(()),
                (base, false) if eq_key(&base, key) => is_id = true,
                _ => {}
            }
        }
        if !is_id {
            continue;
        }
        let id = decode(value).ok_or(())?;
        if id.is_empty() {
            continue;
        }
        if std::str::from_utf8(&id).is_err() || id.len() > rules.max_user_id_bytes {
            return Err(());
        }
        match &user {
            Some(u) if *u != id => return Err(()),
            _ => user = Some(id),
        }
    }
    Ok(user)
}

/// `application/x-www-form-urlencoded` decoding; `None` for a broken `%` escape.
fn decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// PHP's reading of a decoded name: leading spaces dropped, `.` and ` ` as `_` up to the
/// first `[`; a `[` that a `]` follows opens an array (`true`) named by what precedes it,
/// an unclosed one reads as `_`.
fn php_name(name: &[u8]) -> (Vec<u8>, bool) {
    let start = name.iter().take_while(|&&b| b == b' ').count();
    let name = &name[start..];
    let bracket = name.iter().position(|&b| b == b'[');
    let base_end = bracket.unwrap_or(name.len());
    let mut base: Vec<u8> = name[..base_end]
        .iter()
        .map(|&b| if b == b'.' || b == b' ' { b'_' } else { b })
        .collect();
    let Some(open) = bracket else {
        return (base, false);
    };
    if name[open + 1..].contains(&b']') {
        return (base, true);
    }
    base.push(b'_');
    base.extend_from_slice(&name[open + 1..]);
    (base, false)
}

fn eq_key(name: &[u8], key: &[u8]) -> bool {
    name.eq_ignore_ascii_case(key)
}
