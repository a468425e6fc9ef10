//! Finding the `user_id` of a request, cheapest source first:
//!
//! 1. header fields (`X-User-Id`, then `X-Trader-Id`, configurable), ASCII only;
//! 2. query parameters (`user_id`, then `userId`), percent-decoded to valid UTF-8;
//! 3. top-level keys of a JSON body (`user_id, userId, trader_id, traderId, uid,
//!    accountId, account_id`), string or integer values, read by [`JsonScanner`]: one
//!    validating pass over the body that builds nothing.
//!
//! Within one source, every field that names the user must name the *same* user: a
//! request saying `user_id=alice&userId=bob`, or a body with `"user_id":"alice"` and
//! `"uid":"bob"` (or the same key twice), is refused with 400, because a backend could
//! read the other one and act for a different user than the one ringgate routed for.
//! Only top-level JSON keys count: a key inside a nested object or inside a string value
//! never matches (the scanner skips nested values whole, and strings end at their
//! closing quote only); they match in any case (`USER_ID`), as Go reads them. A body that
//! opens an object but is not one valid JSON document is refused: lenient backends
//! still read a user from it. Integer ids must be within ±(2^53 − 1), where every reader
//! reads the same integer.
//!
//! # Hot path
//! The id is written into a caller-owned buffer that is reused; the JSON scanner (in
//! [`crate::route::json`]) keeps its buffers between requests, so a warm extraction
//! allocates nothing.

pub use crate::config::{
    ExtractRules, JsonKeys, DEFAULT_HEADERS, DEFAULT_JSON_KEYS, DEFAULT_QUERY_KEYS,
};
use crate::error::ProxyError;
use crate::http::field::eq_dash_underscore;
use crate::http::parse::RequestHead;
pub use crate::route::json::JsonScanner;

pub(crate) fn bad(reason: &'static str) -> ProxyError {
    ProxyError::bad_request(reason)
}

/// Records the first id found and checks that later ones agree.
pub(crate) struct Agreement<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) found: bool,
    pub(crate) max: usize,
    conflict: &'static str,
}

impl<'a> Agreement<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>, max: usize, conflict: &'static str) -> Self {
        out.clear();
        Self {
            out,
            found: false,
            max,
            conflict,
        }
    }

    /// Offer one candidate written by `write` into a scratch area at the end of `out`.
    pub(crate) fn offer(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), ProxyError>,
    ) -> Result<(), ProxyError> {
        let start = self.out.len();
        write(self.out)?;
        let len = self.out.len() - start;
        if len == 0 {
            // An empty value names nobody.
            self.out.truncate(start);
            return Ok(());
        }
        if len > self.max {
            return Err(bad("user id too long"));
        }
        if !self.found {
            self.found = true;
            return Ok(());
        }
        let same = self.out[..start] == self.out[start..];
        self.out.truncate(start);
        if same {
            Ok(())
        } else {
            Err(bad(self.conflict))
        }
    }
}

/// Look for the user id in the configured header fields. `buf` holds the head.
pub fn user_id_from_headers(
    buf: &[u8],
    head: &RequestHead,
    rules: &ExtractRules,
    out: &mut Vec<u8>,
) -> Result<bool, ProxyError> {
    let mut agree = Agreement::new(out, rules.max_user_id_bytes, "conflicting user id headers");
    for f in &head.headers {
        let name = f.name.get(buf);
        let mut is_id_field = false;
        for n in rules.headers.iter().filter(|n| n.len() == name.len()) {
            if n.eq_ignore_ascii_case(name) {
                is_id_field = true;
            } else if name.contains(&b'_') && eq_dash_underscore(n, name) {
                // `X_User_Id` reads as `X-User-Id` to servers that map `_` to `-`: it
                // could name a different user than the one ringgate routes for.
                return Err(bad("ambiguous user id header name"));
            }
        }
        if is_id_field {
            if f.is_hop_by_hop {
                return Err(bad("Connection names the user id header"));
            }
            let value = f.value.get(buf);
            if !value.is_ascii() {
                // Latin-1 to some servers (Node, Java, WSGI), UTF-8 to others: no one
                // reading for ringgate to route by.
                return Err(bad("user id header is not ASCII"));
            }
            agree.offer(|o| {
                o.extend_from_slice(value);
                Ok(())
            })?;
        }
    }
    Ok(agree.found)
}

/// Look for the user id in the query string (`a=1&user_id=x`), percent-decoding names
/// and values (`+` is a space, as in form encoding).
///
/// Some servers also split a query on `;` (older Python `parse_qs`, some frameworks):
/// `x=1;user_id=bob&user_id=alice` names alice for ringgate but bob (or both) for them
/// ("parameter cloaking"). A query holding a `;` is therefore read both ways, and
/// refused unless both readings name the same user (or nobody).
///
/// Names count as servers read them, not only as configured: in any case (ASP.NET), and
/// with PHP's renaming (`user.id`, `user id` and `user[id` are its `user_id`), so that
/// `user_id=alice&user.id=bob` is a conflict; `user_id[]=x` (an array to PHP and Express)
/// is refused.
pub fn user_id_from_query(
    query: &[u8],
    rules: &ExtractRules,
    out: &mut Vec<u8>,
) -> Result<bool, ProxyError> {
    let found = query_user_id(query, rules, out, |b| b == b'&')?;
    if memchr::memchr(b';', query).is_none() {
        return Ok(found);
    }
    let ambiguous = || bad("ambiguous user id in query (`;` separator)");
    let mut other = Vec::new();
    let other_found = query_user_id(query, rules, &mut other, |b| b == b'&' || b == b';')
        .map_err(|_| ambiguous())?;
    if other_found != found || (found && other != *out) {
        return Err(ambiguous());
    }
    Ok(found)
}

fn query_user_id(
    query: &[u8],
    rules: &ExtractRules,
    out: &mut Vec<u8>,
    is_separator: impl Fn(u8) -> bool,
) -> Result<bool, ProxyError> {
    let mut agree = Agreement::new(
        out,
        rules.max_user_id_bytes,
        "conflicting user id parameters",
    );
    for pair in query.split(|&b| is_separator(b)) {
        let (key, value) = match memchr::memchr(b'=', pair) {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        // Names are mostly sent as configured: an exact match needs no other reading.
        let mut is_id = rules.query_keys.iter().any(|k| **k == *key);
        if !is_id {
            for wanted in &rules.query_keys {
                match key_reads_as(key, wanted) {
                    KeyReading::Other => {}
                    KeyReading::Name => is_id = true,
                    KeyReading::Array => return Err(bad("ambiguous user id parameter name")),
                }
            }
        }
        if is_id {
            agree.offer(|o| {
                let start = o.len();
                percent_decode_into(value, o)?;
                // Node and Python read bytes that are not UTF-8 as U+FFFD: `%FF` and
                // `%FE` would be two users here and one to them.
                match std::str::from_utf8(&o[start..]) {
                    Ok(_) => Ok(()),
                    Err(_) => Err(bad("user id is not valid UTF-8")),
                }
            })?;
        }
    }
    Ok(agree.found)
}

/// How servers may read an encoded query key, compared with the configured `wanted`.
#[derive(Debug, PartialEq, Eq)]
enum KeyReading {
    /// As another name.
    Other,
    /// As `wanted`.
    Name,
    /// As `wanted` followed by `[`: an array (or map) of values to PHP and Express (`qs`).
    Array,
}

/// How an encoded query key reads to servers, next to `wanted`, without allocating: it
/// is `wanted` once percent-decoded, in any case (ASP.NET), and with PHP's renaming
/// (leading spaces dropped; `.`, ` ` and an unclosed `[` read as `_`).
fn key_reads_as(encoded: &[u8], wanted: &[u8]) -> KeyReading {
    let mut i = 0;
    let mut w = wanted.iter();
    let mut is_leading = true;
    while i < encoded.len() {
        let (b, used) = match encoded[i] {
            b'%' => match (
                encoded.get(i + 1).and_then(|&c| hex(c)),
                encoded.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(h), Some(l)) => ((h << 4) | l, 3),
                _ => return KeyReading::Other,
            },
            b'+' => (b' ', 1),
            b => (b, 1),
        };
        i += used;
        if is_leading && b == b' ' {
            continue;
        }
        is_leading = false;
        let Some(&c) = w.next() else {
            return if b == b'[' {
                KeyReading::Array
            } else {
                KeyReading::Other
            };
        };
        let is_same = b.eq_ignore_ascii_case(&c) || (c == b'_' && matches!(b, b'.' | b' ' | b'['));
        if !is_same {
            return KeyReading::Other;
        }
    }
    if w.next().is_none() {
        KeyReading::Name
    } else {
        KeyReading::Other
    }
}

/// Append the percent-decoded form of `value` to `out`.
pub fn percent_decode_into(value: &[u8], out: &mut Vec<u8>) -> Result<(), ProxyError> {
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'%' => {
                let h = value.get(i + 1).copied().and_then(hex);
                let l = value.get(i + 2).copied().and_then(hex);
                match (h, l) {
                    (Some(h), Some(l)) => out.push((h << 4) | l),
                    _ => return Err(bad("invalid percent-encoding in user id")),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(())
}

pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::parse_request;

    #[test]
    fn query_extraction() {
        let rules = ExtractRules::default();
        let q = |s: &str| {
            let mut out = Vec::new();
            user_id_from_query(s.as_bytes(), &rules, &mut out)
                .map(|f| f.then(|| String::from_utf8_lossy(&out).into_owned()))
        };
        assert_eq!(q("user_id=alice").unwrap().as_deref(), Some("alice"));
        assert_eq!(q("a=1&userId=bob&b=2").unwrap().as_deref(), Some("bob"));
        assert_eq!(q("user_id=a%20b+c").unwrap().as_deref(), Some("a b c"));
        assert_eq!(q("user%5Fid=enc").unwrap().as_deref(), Some("enc"));
        assert_eq!(q("user_idx=no&xuser_id=no").unwrap(), None);
        assert_eq!(q("user_id=").unwrap(), None);
        assert_eq!(q("user_id").unwrap(), None);
        assert_eq!(q("user_id=a&user_id=a").unwrap().as_deref(), Some("a"));
        assert!(q("user_id=a&userId=b").is_err());
        assert!(q("user_id=%zz").is_err());
        assert!(q("user_id=%4").is_err());
        assert_eq!(q("user%zzid=x").unwrap(), None);
        // Hardening (parameter cloaking): `;` readings must agree with `&` readings.
        assert!(q("x=1;user_id=bob&user_id=alice").is_err());
        assert!(q("user_id=alice;user_id=bob").is_err());
        assert!(q("user_id=a;b").is_err());
        assert!(q("user_id=alice;user_id=alice").is_err());
        assert_eq!(
            q("a=1;b=2&user_id=alice").unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(
            q("user_id=alice&a=1;b=2").unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(q("a=1;b=2").unwrap(), None);
    }

    /// The user id the default rules find in a query string, or the refusal's reason.
    fn query_id(s: &str) -> Result<Option<String>, &'static str> {
        let mut out = Vec::new();
        user_id_from_query(s.as_bytes(), &ExtractRules::default(), &mut out)
            .map(|f| f.then(|| String::from_utf8_lossy(&out).into_owned()))
            .map_err(|e| e.reason())
    }

    /// Servers read other spellings of a parameter name as the configured one: PHP drops
    /// leading spaces and turns `.`, ` ` and an unclosed `[` into `_` (`user.id` is its
    /// `user_id`), ASP.NET matches names in any case; PHP and Express (`qs`) read
    /// `user_id[]` and `user_id[0]` as an array of ids.
    #[test]
    fn query_names_other_servers_read_as_the_user_id() {
        let q = query_id;
        for query in [
            "user_id=alice&user.id=bob",
            "user_id=alice&user+id=bob",
            "user_id=alice&user%20id=bob",
            "user_id=alice&user%2Eid=bob",
            "user_id=alice&user[id=bob",
            "user_id=alice&+user_id=bob",
            "USER_ID=bob&user_id=alice",
            "user_id=alice&UserId=bob",
        ] {
            assert_eq!(q(query), Err("conflicting user id parameters"), "{query}");
        }
        for query in [
            "user_id[]=bob",
            "user_id[0]=bob",
            "user_id%5B%5D=bob",
            "user_id=alice&user_id[]=alice",
            "USERID[x]=bob",
        ] {
            assert_eq!(q(query), Err("ambiguous user id parameter name"), "{query}");
        }
        for (query, want) in [
            ("user.id=bob", Some("bob")),
            ("USERID=bob", Some("bob")),
            ("user_id=alice&user.id=alice", Some("alice")),
            ("user[id]=x", None),
            ("user_idx=x&xuser_id=y&user__id=z&user_id_=w", None),
        ] {
            assert_eq!(q(query).unwrap().as_deref(), want, "{query}");
        }
    }

    /// Node and Python read a query's bytes that are not UTF-8 as U+FFFD (`%FF` and
    /// `%FE` are one user to them); a header's bytes beyond ASCII are Latin-1 to some
    /// servers and UTF-8 to others. Either would route one user apart from another the
    /// backend reads as the same.
    #[test]
    fn ids_servers_read_differently_are_refused() {
        let q = query_id;
        for query in [
            "user_id=%FF",
            "user_id=a%FE",
            "user_id=%C3",
            "user_id=%ED%A0%80",
        ] {
            assert_eq!(q(query), Err("user id is not valid UTF-8"), "{query}");
        }
        assert_eq!(
            q("user_id=caf%C3%A9").unwrap().as_deref(),
            Some("caf\u{e9}")
        );
        let h = |value: &[u8]| {
            let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-User-Id: ".to_vec();
            raw.extend_from_slice(value);
            raw.extend_from_slice(b"\r\n\r\n");
            let mut head = RequestHead::default();
            parse_request(&raw, raw.len(), 100, &mut head).unwrap();
            user_id_from_headers(&raw, &head, &ExtractRules::default(), &mut Vec::new())
                .map_err(|e| e.reason())
        };
        for value in [&b"\xff"[..], b"a\xfe", "caf\u{e9}".as_bytes()] {
            assert_eq!(h(value), Err("user id header is not ASCII"));
        }
        assert_eq!(h(b"alice"), Ok(true));
    }

    #[test]
    fn header_extraction() {
        let rules = ExtractRules::default();
        let get = |raw: &[u8]| {
            let mut head = RequestHead::default();
            parse_request(raw, raw.len(), 100, &mut head).unwrap();
            let mut out = Vec::new();
            user_id_from_headers(raw, &head, &rules, &mut out)
                .map(|f| f.then(|| String::from_utf8_lossy(&out).into_owned()))
        };
        assert_eq!(
            get(b"GET / HTTP/1.1\r\nHost: a\r\nx-user-id:  alice \r\n\r\n")
                .unwrap()
                .as_deref(),
            Some("alice")
        );
        assert_eq!(
            get(b"GET / HTTP/1.1\r\nHost: a\r\nX-Trader-Id: t1\r\n\r\n")
                .unwrap()
                .as_deref(),
            Some("t1")
        );
        assert!(get(b"GET / HTTP/1.1\r\nHost: a\r\nX-User-Id: a\r\nX-User-Id: b\r\n\r\n").is_err());
        assert!(
            get(b"GET / HTTP/1.1\r\nHost: a\r\nX-User-Id: a\r\nX-Trader-Id: b\r\n\r\n").is_err()
        );
        assert!(
            get(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-User-Id\r\nX-User-Id: a\r\n\r\n")
                .is_err()
        );
        assert_eq!(get(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap(), None);
        // Hardening: an underscore spelling of a user id header is ambiguous (a server
        // mapping `_` to `-` reads it as the real one), alone or next to the real one.
        assert!(get(b"GET / HTTP/1.1\r\nHost: a\r\nX_User_Id: bob\r\n\r\n").is_err());
        assert!(
            get(b"GET / HTTP/1.1\r\nHost: a\r\nX-User-Id: alice\r\nx_user-id: bob\r\n\r\n")
                .is_err()
        );
        assert_eq!(
            get(b"GET / HTTP/1.1\r\nHost: a\r\nX-User-Id: alice\r\nX_Other: 1\r\n\r\n")
                .unwrap()
                .as_deref(),
            Some("alice")
        );
    }
}
