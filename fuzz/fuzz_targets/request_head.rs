//! Fuzz target: request head scanner + parser + framing decision + forwarded head.
//!
//! # Guarantee
//! For any bytes:
//! - [`HeadScanner::scan`], [`parse_request`] and [`write_request_head`] never panic;
//! - **split invariance**: feeding the bytes to one `HeadScanner` as a growing buffer cut
//!   at arbitrary points gives exactly the answer of scanning them whole (so the result
//!   never depends on how TCP segmented the head);
//! - the scanner and `httparse` agree on where a head can end (a head the scanner
//!   delimits is never "partial" for `httparse`, and bytes the scanner wants more of are
//!   never a complete request for it);
//! - an accepted head is internally consistent (offsets in bounds, a framing that matches
//!   the `Content-Length` / `Transfer-Encoding` fields present), and the head ringgate
//!   forwards re-parses with the *same* method, target, version and body framing, with no
//!   hop-by-hop field left in it — the backend reads the message boundaries ringgate read;
//!   it starts with the request line (no empty line that `httparse` would read past);
//! - an accepted `Host` is empty or valid for an independent reading of RFC 9110 §7.2
//!   with ringgate's policy (written here with the standard library's IP parsers), and an
//!   absolute-form target names the same host and port as `Host` — a backend reading
//!   either finds the same server name.
//!
//! - **strict reading**: an accepted head is also one an independent, strict reading of
//!   RFC 9112 §2–§6 written here accepts (`method SP target SP HTTP/1.x CRLF`, field lines
//!   `token ":" OWS value OWS CRLF` with no control byte but HTAB in the value, no
//!   obs-fold), with the same method, target, version and (name, value) pairs, in order;
//!   its framing follows from those fields alone by RFC 9112 §6 and ringgate's policy
//!   (one plain decimal `Content-Length`; a `Transfer-Encoding` list of known codings that
//!   names `chunked` once, last, only in HTTP/1.1, never with `Content-Length`; a
//!   `Connection` that names no framing field);
//! - the user id ringgate reads from the header fields is the one every field a server
//!   reads as a user id field names (any case, `_` as `-`), ASCII and within the limit;
//!   a head where they disagree, or where `Connection` names one of them, is refused.
//!
//! Input layout: byte 0 picks `max_head_bytes`, byte 1 seeds the split points, the rest
//! is the head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, Ipv6Addr};

use ringgate::http::field::Span;
use ringgate::http::head::{write_request_head, FORWARDED_PROTO_HTTP};
use ringgate::http::parse::{parse_request, BodyFraming, Method, RequestHead, MAX_HEADERS_LIMIT};
use ringgate::http::scan::{leading_crlf_len, HeadScanner, ScanError, MAX_LEADING_CRLF_BYTES};
use ringgate::route::extract::{user_id_from_headers, ExtractRules};

/// `max_headers` as configured by default.
const MAX_HEADERS: usize = 100;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max_len = 32 + usize::from(data[0]) * 32;
    let seed = data[1];
    let raw = &data[2..];
    // conn.rs drops a few leading empty lines before a head starts.
    let raw = &raw[leading_crlf_len(raw, MAX_LEADING_CRLF_BYTES)..];

    let whole = HeadScanner::new().scan(raw, max_len);
    for cuts in split_plans(raw.len(), seed) {
        let pieces = scan_in_pieces(raw, &cuts, max_len);
        assert_eq!(pieces, whole, "split at {cuts:?} changed the answer");
    }
    check_against_httparse(raw, whole);

    if let Ok(Some(len)) = whole {
        assert!(len <= max_len && len <= raw.len() && raw[..len].ends_with(b"\r\n\r\n"));
        let mut head = RequestHead::default();
        if parse_request(raw, len, MAX_HEADERS, &mut head).is_ok() {
            check_accepted(raw, len, &head);
        }
    }
});

/// Feed `raw[..cut]` for each cut, the way successive reads grow the buffer.
fn scan_in_pieces(raw: &[u8], cuts: &[usize], max_len: usize) -> Result<Option<usize>, ScanError> {
    let mut s = HeadScanner::new();
    for &cut in cuts {
        match s.scan(&raw[..cut], max_len) {
            Ok(None) => {}
            other => return other,
        }
    }
    s.scan(raw, max_len)
}

/// Every cut for short inputs (byte by byte), else a few pseudo-random ones.
fn split_plans(len: usize, seed: u8) -> Vec<Vec<usize>> {
    let mut plans = Vec::new();
    if len <= 256 {
        plans.push((1..len).collect());
    }
    let mut x = u32::from(seed) | 0x100;
    let mut cuts = Vec::new();
    let mut pos = 0usize;
    if len > 1 {
        loop {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            pos += 1 + (x >> 16) as usize % (len / 4 + 1);
            if pos >= len {
                break;
            }
            cuts.push(pos);
        }
    }
    plans.push(cuts);
    plans
}

fn check_against_httparse(raw: &[u8], scanned: Result<Option<usize>, ScanError>) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_LIMIT];
    match scanned {
        Ok(Some(len)) => {
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(status) = req.parse(&raw[..len]) {
                // httparse skips leading empty lines; the scanner sees them as a blank line.
                assert!(
                    status.is_complete() || raw.starts_with(b"\r\n"),
                    "scanner found an end httparse did not"
                );
            }
        }
        Ok(None) => {
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(raw) {
                // httparse may skip leading empty lines differently; a complete request
                // needs a blank line, which the scanner would have found.
                panic!("httparse found a complete head of {n} bytes the scanner missed");
            }
        }
        Err(_) => {}
    }
}

fn check_accepted(raw: &[u8], len: usize, head: &RequestHead) {
    let bytes = &raw[..len];
    // The head is forwarded from its first byte: an empty line httparse read past would
    // travel with it.
    assert!(
        !matches!(bytes[0], b'\r' | b'\n'),
        "accepted a head that starts with an empty line"
    );
    // Offsets are in bounds and ordered.
    assert_eq!(head.len, len);
    let in_head = |s: Span| {
        assert!(
            s.start <= s.end && (s.end as usize) <= len,
            "{s:?} out of {len}"
        );
    };
    in_head(head.target);
    in_head(head.path);
    if let Some(q) = head.query {
        in_head(q);
        assert!(q.start >= head.path.end);
    }
    assert!(head.path.start >= head.target.start && head.path.end <= head.target.end);
    // The request line ends where the first field line starts.
    let mut last = head
        .headers
        .first()
        .map_or(len - 2, |f| f.name.start as usize);
    assert!(last <= len);
    for (i, f) in head.headers.iter().enumerate() {
        in_head(f.name);
        in_head(f.value);
        let (start, end) = head.header_line(i);
        assert!(start >= last && start <= end && end <= len - 2);
        last = end;
    }

    // The framing decision matches the fields present.
    let count = |name: &[u8]| {
        head.headers
            .iter()
            .filter(|f| f.name.get(bytes).eq_ignore_ascii_case(name))
            .count()
    };
    let (cl, te) = (count(b"content-length"), count(b"transfer-encoding"));
    match head.framing() {
        BodyFraming::Chunked => {
            assert!(te > 0 && cl == 0 && head.minor_version == 1);
        }
        BodyFraming::Length(n) => {
            assert!(n > 0 && cl == 1 && te == 0);
        }
        BodyFraming::None => assert!(cl <= 1 && te == 0),
    }
    assert!(count(b"host") <= 1);
    check_host(bytes, head);
    check_strict_reading(bytes, head);
    check_user_id_headers(bytes, head);

    // The forwarded head reads the same.
    let mut out = Vec::new();
    write_request_head(
        raw,
        head,
        b"X-Forwarded-For: 192.0.2.1\r\n",
        FORWARDED_PROTO_HTTP,
        false,
        &mut out,
    );
    let end = HeadScanner::new().scan(&out, usize::MAX);
    assert_eq!(
        end,
        Ok(Some(out.len())),
        "forwarded head is not one clean head"
    );
    let mut again = RequestHead::default();
    if let Err(e) = parse_request(&out, out.len(), MAX_HEADERS_LIMIT, &mut again) {
        panic!(
            "forwarded head refused ({}): {:?}",
            e.reason(),
            String::from_utf8_lossy(&out)
        );
    }
    assert_eq!(again.method(), head.method());
    assert_eq!(again.target.get(&out), head.target.get(bytes));
    assert_eq!(again.minor_version, head.minor_version);
    assert_eq!(
        again.framing(),
        head.framing(),
        "framing changed on forwarding"
    );
    assert_eq!(
        again.is_upgrade, head.is_upgrade,
        "upgrade changed on forwarding"
    );
    for f in &again.headers {
        let name = f.name.get(&out);
        for hop in [&b"te"[..], b"keep-alive", b"proxy-connection", b"expect"] {
            assert!(
                !name.eq_ignore_ascii_case(hop),
                "hop-by-hop {hop:?} forwarded"
            );
        }
        if name.eq_ignore_ascii_case(b"upgrade") {
            assert!(head.is_upgrade, "Upgrade forwarded without an upgrade");
        }
    }
    let connection_fields = again
        .headers
        .iter()
        .filter(|f| f.name.get(&out).eq_ignore_ascii_case(b"connection"))
        .count();
    assert!(connection_fields <= 1, "client Connection field forwarded");
}

/// `Host` and an absolute-form authority, read again without ringgate's code.
fn check_host(bytes: &[u8], head: &RequestHead) {
    let host = head
        .headers
        .iter()
        .find(|f| f.name.get(bytes).eq_ignore_ascii_case(b"host"))
        .map(|f| f.value.get(bytes));
    let parsed_host = host.and_then(|v| {
        if v.is_empty() {
            return None;
        }
        let parsed = host_port(v);
        assert!(
            parsed.is_some(),
            "accepted Host {:?}",
            String::from_utf8_lossy(v)
        );
        parsed
    });
    let target = head.target.get(bytes);
    let lower = target.to_ascii_lowercase();
    let (rest, default_port) = if lower.starts_with(b"http://") {
        (&target[7..], 80)
    } else if lower.starts_with(b"https://") {
        (&target[8..], 443)
    } else {
        return;
    };
    let end = rest
        .iter()
        .position(|&c| c == b'/' || c == b'?')
        .unwrap_or(rest.len());
    let authority = host_port(&rest[..end]).unwrap_or_else(|| {
        panic!(
            "accepted authority {:?}",
            String::from_utf8_lossy(&rest[..end])
        )
    });
    if let Some(host) = host {
        let h = parsed_host.unwrap_or_else(|| {
            panic!(
                "absolute-form accepted with Host {:?}",
                String::from_utf8_lossy(host)
            )
        });
        assert!(
            h.0.eq_ignore_ascii_case(authority.0)
                && h.1.unwrap_or(default_port) == authority.1.unwrap_or(default_port),
            "Host {:?} differs from the target {:?}",
            String::from_utf8_lossy(host),
            String::from_utf8_lossy(target)
        );
    }
}

/// `uri-host [ ":" port ]` with ringgate's policy: an IPv6 literal, a dotted-quad IPv4
/// address, or a reg-name without `,` that does not end in a number unless it is a dotted
/// quad; a port of 1–5 digits up to 65535.
fn host_port(v: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let s = std::str::from_utf8(v).ok()?;
    let (host, port) = if s.starts_with('[') {
        let close = s.find(']')?;
        s.split_at(close + 1)
    } else {
        s.split_at(s.find(':').unwrap_or(s.len()))
    };
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => None,
        None => return None,
        Some(d) => {
            if d.is_empty() || d.len() > 5 || !d.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            Some(u16::try_from(d.parse::<u32>().ok()?).ok()?)
        }
    };
    if let Some(inner) = host.strip_prefix('[') {
        inner.strip_suffix(']')?.parse::<Ipv6Addr>().ok()?;
    } else {
        if host.is_empty() {
            return None;
        }
        let b = host.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = b.get(i + 1..i + 3)?;
                if !hex.iter().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                i += 3;
                continue;
            }
            if !(b[i].is_ascii_alphanumeric() || b"-._~!$&'()*+;=".contains(&b[i])) {
                return None;
            }
            i += 1;
        }
        let last = host
            .strip_suffix('.')
            .unwrap_or(host)
            .rsplit('.')
            .next()
            .unwrap_or("");
        let is_number = !last.is_empty()
            && (last.bytes().all(|c| c.is_ascii_digit())
                || (last.len() >= 2
                    && last[..2].eq_ignore_ascii_case("0x")
                    && last[2..].bytes().all(|c| c.is_ascii_hexdigit())));
        if is_number && host.parse::<Ipv4Addr>().is_err() {
            return None;
        }
    }
    Some((host.as_bytes(), port))
}

/// RFC 9110 §5.6.2 tchar, written out again.
fn tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// The head read again, strictly and without ringgate's or httparse's code: the request
/// line's parts and the (name, value) of every field line, or a panic naming what a
/// strict reader refuses.
fn check_strict_reading(bytes: &[u8], head: &RequestHead) {
    let show = || String::from_utf8_lossy(bytes).into_owned();
    let body = bytes
        .strip_suffix(b"\r\n")
        .expect("a head ends with an empty line");
    let mut lines = body.split_inclusive(|&b| b == b'\n').map(|line| {
        line.strip_suffix(b"\r\n")
            .unwrap_or_else(|| panic!("bare LF: {:?}", show()))
    });
    let line = lines.next().unwrap();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("accepted request line {:?}", String::from_utf8_lossy(line));
    };
    assert!(
        !method.is_empty() && method.iter().all(|&c| tchar(c)),
        "method in {:?}",
        show()
    );
    assert!(
        !target.is_empty() && target.iter().all(|&c| c > b' ' && c != 0x7f),
        "target in {:?}",
        show()
    );
    let minor = match version {
        b"HTTP/1.0" => 0,
        b"HTTP/1.1" => 1,
        _ => panic!("accepted version {:?}", String::from_utf8_lossy(version)),
    };
    assert_eq!(head.minor_version, minor);
    assert_eq!(head.target.get(bytes), target);
    let is_method = |m: &[u8]| method == m;
    let method_matches = match head.method() {
        Method::Get => is_method(b"GET"),
        Method::Head => is_method(b"HEAD"),
        Method::Post => is_method(b"POST"),
        Method::Put => is_method(b"PUT"),
        Method::Patch => is_method(b"PATCH"),
        Method::Delete => is_method(b"DELETE"),
        Method::Options => is_method(b"OPTIONS"),
        Method::Trace => is_method(b"TRACE"),
        Method::Connect => false,
        Method::Other => ![
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
        ]
        .iter()
        .any(|m| is_method(m.as_bytes())),
    };
    assert!(
        method_matches,
        "method {:?} read as {:?}",
        String::from_utf8_lossy(method),
        head.method()
    );

    let mut fields: Vec<(&[u8], &[u8])> = Vec::new();
    for line in lines {
        let colon = line
            .iter()
            .position(|&c| c == b':')
            .unwrap_or_else(|| panic!("field line without a colon: {:?}", show()));
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        assert!(
            !name.is_empty() && name.iter().all(|&c| tchar(c)),
            "field name (obs-fold?) in {:?}",
            show()
        );
        assert!(
            value
                .iter()
                .all(|&c| c == b'\t' || (c >= b' ' && c != 0x7f)),
            "control byte in a field value: {:?}",
            show()
        );
        let value = value.trim_ascii_start();
        let trail = value
            .iter()
            .rev()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count();
        fields.push((name, &value[..value.len() - trail]));
    }
    let ringgate: Vec<(&[u8], &[u8])> = head
        .headers
        .iter()
        .map(|f| (f.name.get(bytes), f.value.get(bytes)))
        .collect();
    assert_eq!(ringgate, fields, "fields read differently: {:?}", show());

    // Framing from the fields alone.
    let named = |n: &str| -> Vec<&[u8]> {
        fields
            .iter()
            .filter(|(f, _)| f.eq_ignore_ascii_case(n.as_bytes()))
            .map(|(_, v)| *v)
            .collect()
    };
    let elements = |n: &str| -> Vec<Vec<u8>> {
        named(n)
            .iter()
            .flat_map(|v| v.split(|&c| c == b','))
            .map(|e| e.trim_ascii().to_ascii_lowercase())
            .collect()
    };
    for e in elements("connection") {
        assert!(!e.is_empty(), "empty Connection element in {:?}", show());
        assert!(
            !matches!(
                &e[..],
                b"content-length" | b"transfer-encoding" | b"host" | b"content-type"
            ),
            "Connection names a framing field in {:?}",
            show()
        );
    }
    let dashed = |n: &[u8]| -> Vec<u8> {
        n.iter()
            .map(|&c| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    };
    assert!(
        !fields.iter().any(|(n, _)| n.contains(&b'_')
            && matches!(&dashed(n)[..], b"content-length" | b"transfer-encoding")),
        "underscore framing name in {:?}",
        show()
    );
    assert!(named("host").len() <= 1, "two Host fields in {:?}", show());
    if minor == 1 {
        assert_eq!(
            named("host").len(),
            1,
            "HTTP/1.1 without one Host: {:?}",
            show()
        );
    }
    let cl = named("content-length");
    let te = elements("transfer-encoding");
    let expected = if !te.is_empty() {
        assert!(
            cl.is_empty() && minor == 1,
            "Transfer-Encoding accepted in {:?}",
            show()
        );
        let known = [
            &b"gzip"[..],
            b"x-gzip",
            b"deflate",
            b"compress",
            b"x-compress",
        ];
        let (last, rest) = te.split_last().unwrap();
        assert!(
            last == b"chunked" && rest.iter().all(|c| known.contains(&&c[..])),
            "Transfer-Encoding {te:?} accepted"
        );
        BodyFraming::Chunked
    } else if let Some(v) = cl.first() {
        assert_eq!(cl.len(), 1, "two Content-Length accepted: {:?}", show());
        assert!(
            !v.is_empty() && v.iter().all(u8::is_ascii_digit) && (v.len() == 1 || v[0] != b'0'),
            "Content-Length {:?} accepted",
            String::from_utf8_lossy(v)
        );
        let n: u64 = std::str::from_utf8(v)
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("Content-Length {:?} accepted", String::from_utf8_lossy(v)));
        if n == 0 {
            BodyFraming::None
        } else {
            BodyFraming::Length(n)
        }
    } else {
        BodyFraming::None
    };
    assert_eq!(head.framing(), expected, "framing of {:?}", show());
}

/// The user id in the header fields, against every field a server reads as one.
fn check_user_id_headers(bytes: &[u8], head: &RequestHead) {
    let rules = ExtractRules::default();
    let mut out = b"stale".to_vec();
    let got = user_id_from_headers(bytes, head, &rules, &mut out);
    let fields: Vec<(&[u8], &[u8])> = head
        .headers
        .iter()
        .map(|f| (f.name.get(bytes), f.value.get(bytes)))
        .collect();
    let dash = |n: &[u8]| -> Vec<u8> {
        n.iter()
            .map(|&c| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    };
    let is_id_name = |n: &[u8]| rules.headers.iter().any(|h| dash(h) == dash(n));
    let ids: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| is_id_name(n))
        .map(|(_, v)| *v)
        .collect();
    let show = || String::from_utf8_lossy(bytes).into_owned();
    match got {
        Ok(found) => {
            let named: Vec<&[u8]> = ids.iter().copied().filter(|v| !v.is_empty()).collect();
            assert_eq!(found, !named.is_empty(), "user id headers in {:?}", show());
            if found {
                assert!(out.is_ascii() && out.len() <= rules.max_user_id_bytes);
                assert!(
                    named.iter().all(|v| *v == &out[..]),
                    "two users in {:?}",
                    show()
                );
                assert!(
                    fields
                        .iter()
                        .all(|(n, _)| !is_id_name(n) || !n.contains(&b'_')),
                    "underscore user id field accepted in {:?}",
                    show()
                );
                let connection_names_id = fields
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
                    .flat_map(|(_, v)| v.split(|&c| c == b','))
                    .any(|t| {
                        let t = t.trim_ascii();
                        fields
                            .iter()
                            .any(|(n, _)| is_id_name(n) && n.eq_ignore_ascii_case(t))
                    });
                assert!(
                    !connection_names_id,
                    "Connection names the user id field: {:?}",
                    show()
                );
            } else {
                assert!(out.is_empty());
            }
        }
        Err(_) => {
            assert!(
                !ids.is_empty(),
                "refused without a user id field: {:?}",
                show()
            );
        }
    }
}
