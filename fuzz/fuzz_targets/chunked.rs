//! Fuzz target: the strict incremental chunked decoder.
//!
//! # Guarantee
//! For any bytes:
//! - [`ChunkedDecoder::feed`] never panics and never claims more bytes than it was given;
//! - **split invariance**: feeding the bytes in arbitrary pieces gives the same outcome
//!   (same error, or the same number of message bytes, completion and decoded data) as
//!   feeding them whole — also when the relay moves chunk data past the decoder with
//!   [`ChunkedDecoder::skip_data`] (the splice path), and, for short bodies, as two reads
//!   cut at every position;
//! - **reference agreement**: a separate, line-oriented reading of RFC 9112 §7.1 with the
//!   same limits and the same policy accepts, refuses or waits for more on exactly the
//!   same inputs, with the same message length and chunk data. The policy: chunk
//!   extensions are `*( ";" token [ "=" ( token / quoted-string ) ] )` without BWS and
//!   without a quoted-pair escaping `"`; trailer lines are `token ":" field-content` and
//!   never name a field [`is_forbidden_trailer`] refuses (the deny-list itself is data,
//!   unit-tested in `http::field`; this reference checks the decoder applies it to the
//!   whole name, whatever its length, case or split).
//!
//! Input layout: byte 0 seeds the split points (its low bit selects the skip_data path),
//! the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::http::chunked::{ChunkError, ChunkedDecoder, MAX_CHUNK_LINE, MAX_TRAILER_BYTES};
use ringgate::http::field::is_forbidden_trailer;

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Message complete after this many bytes, with this chunk data.
    Complete(usize, Vec<u8>),
    /// Valid so far, needs more.
    Incomplete(Vec<u8>),
    /// Refused.
    Invalid,
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };

    // Whole.
    let mut d = ChunkedDecoder::new();
    let mut decoded = Vec::new();
    let whole = d.feed(body, &mut |s| decoded.extend_from_slice(s));
    let whole_outcome = match whole {
        Ok(n) => {
            assert!(n <= body.len());
            if d.is_done() {
                Outcome::Complete(n, decoded.clone())
            } else {
                assert_eq!(n, body.len(), "stopped early without finishing");
                Outcome::Incomplete(decoded.clone())
            }
        }
        Err(_) => Outcome::Invalid,
    };

    // Pieces, optionally skipping chunk data like the splice path does.
    let use_skip = seed & 1 == 1;
    let (pieces, skipped) = feed_in_pieces(body, seed, use_skip);
    match (&whole, &pieces) {
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Ok(n), Ok((m, data, done))) => {
            assert_eq!(n, m, "consumed differs between whole and pieces");
            assert_eq!(d.is_done(), *done);
            if !skipped {
                assert_eq!(&decoded, data, "decoded data differs");
            }
        }
        _ => panic!("whole {whole:?} vs pieces {pieces:?}"),
    }

    // Every cut in two, for short bodies: one read ending anywhere (inside a size, an
    // extension, a CRLF, a trailer name) and the next carrying the rest.
    if body.len() <= 128 {
        for cut in 1..body.len() {
            let mut d = ChunkedDecoder::new();
            let mut data = Vec::new();
            let first = d.feed(&body[..cut], &mut |s| data.extend_from_slice(s));
            let two = match first {
                Ok(n) if d.is_done() => Ok(n),
                Ok(n) => {
                    assert_eq!(n, cut, "stopped early without finishing");
                    d.feed(&body[cut..], &mut |s| data.extend_from_slice(s))
                        .map(|m| n + m)
                }
                Err(e) => Err(e),
            };
            match (&whole, two) {
                (Err(a), Err(b)) => assert_eq!(*a, b, "cut at {cut}"),
                (Ok(n), Ok(m)) => {
                    assert_eq!(*n, m, "consumed differs with a cut at {cut}");
                    assert_eq!(decoded, data, "data differs with a cut at {cut}");
                }
                (a, b) => panic!("whole {a:?} vs cut at {cut} {b:?}"),
            }
        }
    }

    // Independent reading of the grammar.
    let reference = reference(body);
    assert_eq!(
        whole_outcome, reference,
        "decoder disagrees with the reference"
    );
});

/// (consumed, decoded data, done) or the error.
type PiecesOutcome = Result<(usize, Vec<u8>, bool), ChunkError>;

/// Feed `body` in pseudo-random pieces; returns (consumed, data, done) or the error, and
/// whether any data was skipped.
fn feed_in_pieces(body: &[u8], seed: u8, use_skip: bool) -> (PiecesOutcome, bool) {
    let mut d = ChunkedDecoder::new();
    let mut data = Vec::new();
    let mut pos = 0;
    let mut x = u32::from(seed) | 0x100;
    let mut skipped = false;
    while pos < body.len() && !d.is_done() {
        if use_skip && d.data_remaining() > 0 {
            let k = d.data_remaining().min((body.len() - pos) as u64);
            d.skip_data(k);
            pos += k as usize;
            skipped = true;
            continue;
        }
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let step = 1 + (x >> 16) as usize % 17;
        let end = (pos + step).min(body.len());
        match d.feed(&body[pos..end], &mut |s| data.extend_from_slice(s)) {
            Ok(n) => {
                assert!(n <= end - pos);
                if !d.is_done() {
                    assert_eq!(n, end - pos, "stopped early without finishing");
                }
                pos += n;
            }
            Err(e) => return (Err(e), skipped),
        }
    }
    (Ok((pos, data, d.is_done())), skipped)
}

/// RFC 9110 §5.6.2 tchar, written out again.
fn tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// VCHAR / obs-text.
fn vchar_or_obs(c: u8) -> bool {
    (0x21..=0x7e).contains(&c) || c >= 0x80
}

/// Read `e` (the bytes of a size line from its first `;` up to, not including, CR or the
/// end of the input) as `*( ";" token [ "=" ( token / quoted-string ) ] )`:
/// `Some(true)` if it is a complete chunk-ext, `Some(false)` if it is only the beginning
/// of one, `None` if no continuation can make it one.
fn chunk_ext(e: &[u8]) -> Option<bool> {
    let mut i = 0;
    let run = |i: usize| e[i..].iter().take_while(|&&c| tchar(c)).count();
    while i < e.len() {
        if e[i] != b';' {
            return None;
        }
        i += 1;
        let name = run(i);
        if name == 0 {
            return if i == e.len() { Some(false) } else { None };
        }
        i += name;
        if i == e.len() {
            return Some(true);
        }
        if e[i] == b';' {
            continue;
        }
        if e[i] != b'=' {
            return None;
        }
        i += 1;
        if i == e.len() {
            return Some(false);
        }
        if e[i] == b'"' {
            i += 1;
            loop {
                let Some(&c) = e.get(i) else {
                    return Some(false);
                };
                if c == b'"' {
                    i += 1;
                    break;
                } else if c == b'\\' {
                    let Some(&q) = e.get(i + 1) else {
                        return Some(false);
                    };
                    // quoted-pair, minus the escaped DQUOTE (policy).
                    if q == b'"' || !(q == b'\t' || q == b' ' || vchar_or_obs(q)) {
                        return None;
                    }
                    i += 2;
                } else if c == b'\t' || c == b' ' || vchar_or_obs(c) {
                    i += 1;
                } else {
                    return None;
                }
            }
        } else {
            let value = run(i);
            if value == 0 {
                return None;
            }
            i += value;
        }
    }
    Some(true)
}

/// A line-oriented reading of RFC 9112 §7.1 with ringgate's limits:
/// `chunk-size [ chunk-ext ] CRLF data CRLF`, then `last-chunk`, trailer field lines,
/// CRLF. chunk-size: 1–16 HEXDIG with a value below 2^63; chunk-ext as [`chunk_ext`]; the size
/// line holds at most MAX_CHUNK_LINE bytes before its CRLF; trailer lines are
/// `token ":" *( HTAB / SP / VCHAR / obs-text )` with a name not on the deny-list, at most
/// MAX_TRAILER_BYTES in total (CRLFs not counted).
fn reference(b: &[u8]) -> Outcome {
    let mut data = Vec::new();
    let mut i = 0;
    macro_rules! need {
        ($n:expr) => {
            if i + $n > b.len() {
                return Outcome::Incomplete(data);
            }
        };
    }
    loop {
        // chunk-size line
        let start = i;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
        let digits = i - start;
        // At most 16 digits, leading zeros counted, and a value that fits an i64.
        if digits > 16 || (digits == 16 && b[start].to_ascii_lowercase() > b'7') {
            return Outcome::Invalid;
        }
        let significant = &b[start..i][b[start..i].iter().take_while(|&&c| c == b'0').count()..];
        need!(1);
        if digits == 0 {
            return Outcome::Invalid;
        }
        let size = if significant.is_empty() {
            0
        } else {
            u64::from_str_radix(std::str::from_utf8(significant).unwrap(), 16).unwrap()
        };
        if b[i] == b';' {
            let ext_start = i;
            while i < b.len() && b[i] != b'\r' {
                i += 1;
            }
            if i - start > MAX_CHUNK_LINE as usize {
                return Outcome::Invalid;
            }
            match chunk_ext(&b[ext_start..i]) {
                None => return Outcome::Invalid,
                Some(false) if i < b.len() => return Outcome::Invalid,
                _ => {}
            }
            need!(1);
        }
        if b[i] != b'\r' {
            return Outcome::Invalid;
        }
        i += 1;
        need!(1);
        if b[i] != b'\n' {
            return Outcome::Invalid;
        }
        i += 1;
        if size == 0 {
            break;
        }
        // data CRLF
        let avail = (b.len() - i) as u64;
        if avail < size {
            data.extend_from_slice(&b[i..]);
            return Outcome::Incomplete(data);
        }
        let size = size as usize;
        data.extend_from_slice(&b[i..i + size]);
        i += size;
        need!(1);
        if b[i] != b'\r' {
            return Outcome::Invalid;
        }
        i += 1;
        need!(1);
        if b[i] != b'\n' {
            return Outcome::Invalid;
        }
        i += 1;
    }
    // trailer section
    let mut trailer_bytes = 0usize;
    loop {
        need!(1);
        if b[i] == b'\r' {
            i += 1;
            need!(1);
            return if b[i] == b'\n' {
                Outcome::Complete(i + 1, data)
            } else {
                Outcome::Invalid
            };
        }
        // field name
        let name_start = i;
        let mut saw_colon = false;
        loop {
            need!(1);
            let c = b[i];
            if !saw_colon {
                if c == b':' && i > name_start {
                    if is_forbidden_trailer(&b[name_start..i]) {
                        return Outcome::Invalid;
                    }
                    saw_colon = true;
                } else if !tchar(c) {
                    return Outcome::Invalid;
                }
            } else if c == b'\r' {
                break;
            } else if !(c == b'\t' || c == b' ' || vchar_or_obs(c)) {
                return Outcome::Invalid;
            }
            trailer_bytes += 1;
            i += 1;
            if trailer_bytes > MAX_TRAILER_BYTES as usize {
                return Outcome::Invalid;
            }
        }
        i += 1;
        need!(1);
        if b[i] != b'\n' {
            return Outcome::Invalid;
        }
        i += 1;
    }
}
